"""Fake saved results for the report's tests, written in milliseconds (no training, no deconvnet).

The files follow the schemas the commands write: a run directory (config.json, classes.json, metrics.jsonl),
a ``zfnet visualize`` folder (index.json with one layer listing per-map PNGs and one with only the layer
grid), ``architectures.json``, an ``evaluation.json``, analyses with a ``report`` block, and a data set
folder that the report must not enter. A class name, an occlusion label and a file name carry HTML.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from PIL import Image

EVIL = "<img src=x onerror=alert(1)>"
EVIL_FILE = "<svg onload=alert(2)>.png"  # a file name may hold anything but "/"


def png(path: Path, width: int = 64, height: int = 64, seed: int = 0) -> str:
    """A small noisy gradient PNG at ``path``; returns its name."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width]
    base = np.stack([x * 255 // max(width - 1, 1), y * 255 // max(height - 1, 1),
                     np.full_like(x, (seed * 53) % 256)], axis=-1)
    pixels = np.clip(base + rng.integers(-20, 20, base.shape), 0, 255).astype(np.uint8)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(pixels).save(path)
    return path.name


def _json(path: Path, obj) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(obj, indent=1))


def write_sources(root: Path) -> Path:
    """Write the fake results under ``root/results`` and return that folder."""
    src = root / "results"
    run = src / "runs" / "zf&net"
    classes = ["disc", "bar", "cross", "ring"]
    _json(run / "config.json", {"data": str(src / "data"), "out": str(run), "model": "zfnet-tiny",
                                "model_options": {}, "epochs": 4, "batch_size": 8, "snapshots": [1, 2]})
    _json(run / "classes.json", {"classes": classes, "names": ["disc", EVIL, "cross", "ring"]})
    errors = [(0.74, 0.7, 0.3), (0.55, 0.5, 0.2), (0.4, 0.35, 0.1), (0.31, 0.33, 0.05)]
    (run / "metrics.jsonl").write_text("".join(
        json.dumps({"epoch": e + 1, "train_loss": 1.0 / (e + 1), "train_top1_error": t, "val_top1_error": v,
                    "val_top5_error": v5, "lr": 0.01 if e < 3 else 0.001, "seconds": 1.5, "images": 96}) + "\n"
        for e, (t, v, v5) in enumerate(errors)))

    vis = src / "figures"
    k = 4

    def entry(layer: str, m: int, own: bool) -> dict:
        out = {"image_ids": [m, m + 1, m + 2, m + 3], "positions": [[1, 2], [3, 4], [0, 0], [5, 1]],
               "values": [9.5, 7.25, 3.0, 1.125], "png": f"top{k}-{layer}.png"}
        if own:
            for kind, size in (("projections", (50, 50)), ("patches", (50, 50)), ("evolution", (120, 30))):
                out[f"{kind}_png"] = f"maps/{layer}-{m}-{kind}.png"
                png(vis / out[f"{kind}_png"], *size, seed=m + len(kind))
        return out

    layers = {"conv1": {str(m): entry("conv1", m, True) for m in (3, 7, 11)},
              "conv2": {str(m): entry("conv2", m, False) for m in (0, 5, 12)}}
    figures = {}
    for layer in layers:
        figures[f"top{k}-{layer}"] = png(vis / f"top{k}-{layer}.png", 400, 120, seed=1)
        figures[f"evolution-{layer}"] = png(vis / f"evolution-{layer}.png", 300, 100, seed=2)
    figures["filters-conv1"] = png(vis / "filters-conv1.png", 160, 160, seed=3)
    _json(vis / "index.json", {"run": str(run), "weights": "best", "split": "val", "images": 24, "k": k,
                               "layers": layers, "figures": figures, "snapshots": [1, 2]})
    png(vis / "architectures.png", 500, 250, seed=4)
    _json(vis / "architectures.json", {
        "runs": [{"run": "runs/alexnet", "model": "alexnet-tiny", "dead_fraction": 0.25, "aliasing": 0.31,
                  "maps": [1, 2], "image_ids": [0, 1]},
                 {"run": str(run), "model": "zfnet-tiny", "dead_fraction": 0.0, "aliasing": 0.12, "maps": [1, 2],
                  "image_ids": [2, 3]}],
        "png": "architectures.png", "layer2": "conv2",
        "definitions": {"dead_fraction": "fraction of dead filters", "aliasing": "high-frequency energy"}})

    _json(src / "evaluation.json", {"results": [
        {"name": "zfnet", "top1_error": 0.31, "top5_error": 0.05, "ten_crop_top1_error": 0.28,
         "ten_crop_top5_error": 0.04, "images": 16},
        {"name": "ensemble", "top1_error": 0.3, "top5_error": 0.04, "ten_crop_top1_error": 0.27,
         "ten_crop_top5_error": 0.03, "images": 16}]})

    occ = src / "analysis" / "occlusion"
    _json(occ / "occlusion.json", {"kind": "occlusion", "report": {
        "title": "Occlusion sensitivity",
        "summary": "A grey square slides over each image. Where it hides the object, the true class's "
                   "probability drops.",
        "figures": [{"image": f"/data/val/{EVIL_FILE}", "label": EVIL, "figure": png(occ / "occ-0.png", 200, 80)},
                    {"image": "/data/val/disc/001.png", "label": "disc",
                     "figure": png(occ / "occ-1.png", 200, 80, seed=5)}],
        "tables": [{"caption": "Images", "columns": ["image", "class", "p(true) drop"],
                    "rows": [["0", EVIL, 0.5], ["1", "disc", 0.25]]}]}})
    _json(src / "analysis" / "transfer" / "transfer.json", {"kind": "transfer", "report": {
        "title": "Transfer to new classes", "summary": "Features of the trained net, a new softmax on top. "
        "Compared with the paper's Table 4.",
        "figures": [],
        "tables": [{"caption": "Accuracy", "columns": ["train images per class", "ours (%)", "paper (%)"],
                    "rows": [[15, 61.2, 83.8], [30, 70.5, 86.5], [60, None, 88.4]]}]}})
    _json(src / "analysis" / "saliency.json", {"kind": "saliency", "report": {
        "title": "A kind the report does not know", "summary": "It renders anyway. Nothing to change.",
        "figures": [{"path": "no-such-figure.png", "caption": "lost"}], "tables": []}})
    _json(src / "analysis" / "invariance" / "invariance.json", {"kind": "invariance", "report": {
        "title": "Invariance", "summary": "Feature distances under translation, scale and rotation. Fig. 5.",
        "figures": [{"path": png(src / "analysis" / "invariance" / "curves.png", 300, 150, seed=6),
                     "caption": "Layer-1 and layer-7 distances."}],
        "tables": []}})

    data = src / "data"
    png(data / "train" / "disc" / "000.png", 20, 20)
    png(data / "val" / "disc" / "000.png", 20, 20)
    _json(data / "val" / "decoy.json", {"kind": "decoy", "report": {"title": "decoy", "summary": ""}})
    return src
