"""The correspondence and invariance analyses of a trained run: read images, compute, write PNG + JSON.

:func:`correspondence_job` (Table 1, Fig. 8) reads images whose parts are annotated, the synthetic data
set's ``annotations.json`` or a file of the same form for other images::

    {"images": {"val/face/00000.png": {"box": [x0, y0, x1, y1],
                                       "parts": {"left_eye": [x0, y0, x1, y1], "nose": [...], ...}},
                ...}}

(paths relative to the data folder; boxes in the file's pixels, exclusive ends; ``box``, the object,
is where the random control regions are drawn, the whole image when absent). It writes
``OUT/correspondence.png`` and ``OUT/correspondence.json``.

:func:`invariance_job` (Fig. 5) takes images of different classes from a split and writes
``OUT/invariance.png`` and ``OUT/invariance.json``.

Each JSON holds every number, ``"kind"``, and a ``"report"`` block (title, summary, figures, tables)
for the HTML report. ``run`` may be a run directory or a :class:`~zfnet.train.checkpoint.LoadedRun`
holding any ``nn.Module`` (give ``input_size`` when the loaded run knows none). Images are normalised
by the run's own :meth:`~zfnet.train.checkpoint.LoadedRun.normalize`.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch

from .._io import atomic_write_json
from ..data.annotations import map_box, read_part_annotations
from ..data.folders import open_dataset
from ..data.images import image_size
from ..data.transforms import Normalization, center_crop, load_image
from ..errors import ZFNetError
from ..train.checkpoint import LoadedRun, load_run
from ..visualize.analysis_figures import draw_correspondence, draw_invariance
from .correspondence import DEFAULT_LAYERS as CORRESPONDENCE_LAYERS
from .correspondence import DEFAULT_PARTS, RANDOM, CorrespondenceResult, correspondence, occlude
from .invariance import DEFAULT_LAYERS as INVARIANCE_LAYERS
from .invariance import TRANSFORMS, UNITS, InvarianceCurves, default_steps, invariance, transform_images

__all__ = ["correspondence_job", "invariance_job", "PAPER_TABLE1"]

PAPER_TABLE1: dict[str, dict[str, tuple[float, float]]] = {
    "right_eye": {"layer 5": (0.067, 0.007), "layer 7": (0.069, 0.015)},
    "left_eye": {"layer 5": (0.069, 0.007), "layer 7": (0.068, 0.013)},
    "nose": {"layer 5": (0.079, 0.017), "layer 7": (0.069, 0.011)},
    RANDOM: {"layer 5": (0.107, 0.017), "layer 7": (0.073, 0.014)},
}
"""Zeiler & Fergus (2014) Table 1: Δ ± std at layers 5 and 7 (5 dog images)."""

NORMALISATION = ("Δ = Σ_{i≠j} H(sign ε_i, sign ε_j) / (n (n − 1) D): the mean over the ordered pairs of images of "
                 "the fraction of the D feature units whose sign of change (−, 0, +) differs; ± is the standard "
                 "deviation over the pairs (for random: over the pairs of every part-sized draw)")

DISTANCE = "‖f(x) − f(T x)‖ / ‖f(x)‖: Euclidean distance between the features of the transformed and the " \
           "original image, divided by the length of the original's features"


def _resolve(run: str | Path | LoadedRun, weights: str, input_size: int | None) -> tuple[LoadedRun, int]:
    loaded = run if isinstance(run, LoadedRun) else load_run(run, weights)
    if input_size is None:
        if loaded.input_size is None:
            raise ZFNetError(f"{type(loaded.model).__name__} has no config.input_size; give input_size")
        input_size = loaded.input_size
    if isinstance(input_size, bool) or not isinstance(input_size, int) or not 1 <= input_size <= loaded.base_size:
        raise ZFNetError(f"input_size must be an int from 1 to the mean image's side {loaded.base_size}, "
                         f"got {input_size!r}")
    loaded.model.eval()
    return loaded, input_size


def _name(loaded: LoadedRun) -> str:
    return str(loaded.metadata.get("model", type(loaded.model).__name__))


def _choose(candidates: list[str], n: int, seed: int) -> list[str]:
    if len(candidates) <= n:
        return sorted(candidates)
    g = torch.Generator().manual_seed(seed)
    return sorted(candidates[i] for i in torch.randperm(len(candidates), generator=g)[:n].tolist())


def _fmt(mean: float, std: float) -> str:
    return f"{mean:.3f} ± {std:.3f}"


def correspondence_job(run: str | Path | LoadedRun, data: str | Path, out: str | Path, *,
                       parts: Sequence[str] = DEFAULT_PARTS, layers: Sequence[str] = CORRESPONDENCE_LAYERS,
                       images: int = 5, random_trials: int = 10, split: str | None = "val",
                       annotations: str | Path | None = None, weights: str = "best", seed: int = 0,
                       fill: float = 0.0, input_size: int | None = None, batch_size: int = 32,
                       show_progress: bool = True) -> dict[str, Any]:
    """Table 1 for a run: occlude the same part in every image and random regions; write PNG + JSON.

    Args:
        run: a run directory, or a :class:`LoadedRun` (any ``nn.Module``).
        data: the folder the annotated image paths are relative to.
        out: the folder to write ``correspondence.png`` and ``correspondence.json`` into.
        parts: the parts to occlude (the paper's right eye, left eye, nose by default).
        layers: the layers compared (the paper's 5 and 7: ``conv5``, ``fc7``).
        images: how many annotated images to use, a seeded random choice (the paper used 5).
        random_trials: draws of random regions per part for the control row.
        split: use only images under this folder of ``data`` (``val``); None for every annotated image.
        annotations: the part-annotation file (default ``DATA/annotations.json``).
        weights: ``best``, ``last`` or ``epoch-N``.
        seed: seeds the choice of images and the random regions.
        fill: the occluder's value after normalisation (0: the mean image, grey).
        input_size: the model's input side, for models without ``config.input_size``.
        batch_size: images per forward pass.
        show_progress: a progress bar on a terminal.

    Returns:
        The contents of ``correspondence.json``.

    Raises:
        ZFNetError: no or too few images with all the parts, an unreadable file, a bad argument.

    Example:
        >>> correspondence_job("runs/zfnet", "data/synth", "analyses")["finding"]["conv5"]  # doctest: +SKIP
    """
    parts = list(dict.fromkeys(parts))
    if not parts:
        raise ZFNetError("parts is empty; name at least one part")
    if isinstance(images, bool) or not isinstance(images, int) or images < 2:
        raise ZFNetError(f"images must be an int of at least 2 (pairs are compared), got {images!r}")
    loaded, size = _resolve(run, weights, input_size)
    data = Path(data)
    ann_path = Path(annotations) if annotations is not None else data / "annotations.json"
    entries = read_part_annotations(ann_path)
    candidates = [rel for rel, e in entries.items() if all(p in e["parts"] for p in parts)
                  and (split is None or rel.startswith(f"{split}/"))]
    where = f" under {split}/" if split is not None else ""
    if len(candidates) < 2:
        known = sorted({p for e in entries.values() for p in e["parts"]})
        raise ZFNetError(f"{ann_path} has {len(candidates)} image(s){where} with all of the parts "
                         f"{', '.join(parts)}; need at least 2 (parts annotated: {', '.join(known) or 'none'})")
    chosen = _choose(candidates, images, seed)

    base = loaded.base_size
    pixels, part_boxes, object_boxes = [], {p: [] for p in parts}, []
    for rel in chosen:
        path = data / rel
        file_size = image_size(path)  # ImageError (one line) when it cannot be read by zfnet's rules
        pixels.append(load_image(path, base))
        for p in parts:
            part_boxes[p].append(map_box(entries[rel]["parts"][p], file_size, base, size))
        box = entries[rel]["box"]
        object_boxes.append(map_box(box, file_size, base, size) if box is not None else [0, 0, size, size])
    norm = loaded.normalization.center_crop(size)
    x = norm(center_crop(torch.stack(pixels), size))  # (N, 3, s, s), zero = the mean
    boxes = {p: torch.tensor(b) for p, b in part_boxes.items()}
    result = correspondence(loaded.model, x, boxes, object_boxes=torch.tensor(object_boxes), layers=layers,
                            random_trials=random_trials, fill=fill,
                            generator=torch.Generator().manual_seed(seed), batch_size=batch_size,
                            show_progress=show_progress)

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    png = _correspondence_figure(result, x, norm, out / "correspondence.png", fill, _name(loaded))
    report = _correspondence_report(result, chosen, png.name)
    record: dict[str, Any] = {
        "kind": "correspondence",
        "run": str(loaded.root), "model": _name(loaded), "weights": loaded.weights, "data": str(data),
        "annotations": str(ann_path), "split": split, "images": chosen, "input_size": size, "seed": seed,
        "fill": fill, "random_trials": random_trials, "layers": list(result.layers), "parts": list(result.parts),
        "feature_sizes": result.feature_sizes, "normalisation": NORMALISATION, "changed": result.changed,
        "delta": {row: {layer: {"mean": s.mean, "std": s.std, "pairs": s.pairs} for layer, s in per.items()}
                  for row, per in result.scores.items()},
        "part_boxes": {p: b.tolist() for p, b in result.part_boxes.items()},
        "paper": {row: {layer: {"mean": m, "std": s} for layer, (m, s) in v.items()}
                  for row, v in PAPER_TABLE1.items()},
        "finding": _finding(result),
        "report": report,
    }
    atomic_write_json(out / "correspondence.json", record)
    return record


def _finding(result: CorrespondenceResult) -> dict[str, Any]:
    """Per layer: which parts have a lower Δ than random regions (the paper's finding)."""
    if RANDOM not in result.scores:
        return {}
    finding = {}
    for layer in result.layers:
        below = result.below_random(layer)
        control = result.scores[RANDOM][layer].mean
        finding[layer] = {
            "parts_below_random": below,
            "all_parts_below_random": len(below) == len(result.parts),
            "random_minus_mean_part": control - sum(result.scores[p][layer].mean for p in result.parts)
            / len(result.parts),
        }
    return finding


def _paper_beside(result: CorrespondenceResult) -> dict[str, dict[str, tuple[float, float]]]:
    """The paper's layers 5 and 7 keyed by the measured layers they stand beside (by position)."""
    paper_layers = ("layer 5", "layer 7")
    beside = dict(zip(result.layers, paper_layers))
    return {row: {layer: PAPER_TABLE1[row][p] for layer, p in beside.items()}
            for row in PAPER_TABLE1 if row in result.scores}


def _correspondence_figure(result: CorrespondenceResult, x: torch.Tensor, norm: Normalization, path: Path,
                           fill: float, model: str) -> Path:
    def shown(images: torch.Tensor) -> torch.Tensor:
        return (norm.invert(images) / 255.0).clamp(0, 1)

    rows, panels = ["original"], [shown(x)]
    for p in result.parts:
        rows.append(p)
        panels.append(shown(occlude(x, result.part_boxes[p], fill)))
    if len(result.random_boxes[result.parts[0]]):
        rows.append(f"{RANDOM} (1 draw)")
        panels.append(shown(occlude(x, result.random_boxes[result.parts[0]][0], fill)))
    scores = {row: {layer: (s.mean, s.std) for layer, s in per.items()} for row, per in result.scores.items()}
    return draw_correspondence(torch.stack(panels), rows, scores, result.layers, path,
                               paper=_paper_beside(result),
                               title=f"Correspondence analysis of {model}: Δ per occluded part (paper: ×)")


def _correspondence_report(result: CorrespondenceResult, images: list[str], png: str) -> dict[str, Any]:
    layers = list(result.layers)
    paper = _paper_beside(result)
    columns = ["occluded"] + [f"Δ {layer}" for layer in layers] + [f"paper, layer {p[-1]}" for p in
                                                                    ("layer 5", "layer 7")[:len(layers)]]
    table_rows = []
    for row, per in result.scores.items():
        cells = [row.replace("_", " ")] + [_fmt(per[layer].mean, per[layer].std) for layer in layers]
        cells += [_fmt(*paper[row][layer]) if row in paper else "—" for layer in layers[:2]]
        table_rows.append(cells)
    sentences = []
    if RANDOM in result.scores:
        for layer in layers:
            below = result.below_random(layer)
            verdict = ("all parts are below random regions, as in the paper" if len(below) == len(result.parts)
                       else f"{len(below)} of {len(result.parts)} parts are below random regions")
            span = [result.scores[p][layer].mean for p in result.parts]
            control = result.scores[RANDOM][layer]
            sentences.append(f"{layer}: Δ {min(span):.3f}–{max(span):.3f} for parts vs {control.mean:.3f} "
                             f"(std over pairs {control.std:.3f}) for random ({verdict})")
    summary = (f"Occluding the same part in {len(images)} images changes the features more consistently (lower Δ) "
               f"than occluding random regions when the network ties the parts together (Table 1). "
               + ("; ".join(sentences) + "." if sentences else "No random control was drawn."))
    return {
        "title": "Correspondence analysis (Table 1)",
        "summary": summary,
        "figures": [{"path": png, "caption": "Left: the images with each part occluded (and one draw of random "
                     "regions of a part's size). Right: Δ ± std per occluded part and for random regions at "
                     "each layer; black crosses: the paper's Table 1."}],
        "tables": [{"caption": "Δ ± std (mean fraction of units whose sign of change differs, over pairs of images; "
                               "lower = more consistent) beside the paper's Table 1",
                    "columns": columns, "rows": table_rows}],
    }


def _distinct_class_images(labels: list[int], n: int, seed: int) -> list[int]:
    """Indices of ``n`` images, of different classes where there are enough, a seeded choice."""
    g = torch.Generator().manual_seed(seed)
    order = torch.randperm(len(labels), generator=g).tolist()
    chosen, seen = [], set()
    for i in order:
        if labels[i] not in seen:
            chosen.append(i)
            seen.add(labels[i])
        if len(chosen) == n:
            return chosen
    chosen += [i for i in order if i not in chosen][:n - len(chosen)]
    return chosen


def invariance_job(run: str | Path | LoadedRun, data: str | Path, out: str | Path, *,
                   layers: Sequence[str] = INVARIANCE_LAYERS, images: int = 5, split: str = "val",
                   transforms: Sequence[str] = TRANSFORMS, steps: Mapping[str, Sequence[float]] | None = None,
                   weights: str = "best", seed: int = 0, input_size: int | None = None, batch_size: int = 32,
                   show_progress: bool = True) -> dict[str, Any]:
    """Fig. 5 for a run: translate, scale and rotate images; feature distances and P(true); PNG + JSON.

    Args:
        run: a run directory, or a :class:`LoadedRun` (any ``nn.Module``).
        data: the data folder (``val/<class>/...``).
        out: the folder to write ``invariance.png`` and ``invariance.json`` into.
        layers: the layers whose distances are plotted (the paper's 1 and 7: ``conv1``, ``fc7``).
        images: how many images, of different classes where possible (the paper used 5).
        split: the split to take them from.
        transforms: which of ``translation``, ``scale``, ``rotation``.
        steps: ``{transform: amounts}`` overriding :func:`~zfnet.analysis.invariance.default_steps`.
        weights: ``best``, ``last`` or ``epoch-N``.
        seed: seeds the choice of images.
        input_size: the model's input side, for models without ``config.input_size``.
        batch_size: images per forward pass.
        show_progress: progress bars on a terminal.

    Returns:
        The contents of ``invariance.json``.

    Raises:
        ZFNetError: a bad argument or data set.

    Example:
        >>> invariance_job("runs/zfnet", "data/synth", "analyses")["transforms"]["scale"]["steps"]  # doctest: +SKIP
        [1.0, 1.1, 1.2, 1.3, 1.4, 1.5, 1.6, 1.7, 1.8]
    """
    if isinstance(images, bool) or not isinstance(images, int) or images < 1:
        raise ZFNetError(f"images must be a positive int, got {images!r}")
    transforms = list(dict.fromkeys(transforms))
    bad = [t for t in transforms if t not in TRANSFORMS]
    if bad or not transforms:
        raise ZFNetError(f"unknown transforms {bad or 'none'}; valid: {', '.join(TRANSFORMS)}")
    steps = dict(steps or {})
    unknown = [t for t in steps if t not in TRANSFORMS]
    if unknown:
        raise ZFNetError(f"steps given for unknown transforms {unknown}; valid: {', '.join(TRANSFORMS)}")
    loaded, size = _resolve(run, weights, input_size)
    ds = open_dataset(data, split, loaded.base_size, classes=loaded.classes)
    chosen = _distinct_class_images(ds.targets, images, seed)
    pixels, labels, names, paths = [], [], [], []
    for i in chosen:
        image, label, _, problem = ds[i]
        if image is None:
            raise ZFNetError(f"cannot read {problem[0]}: {problem[1]}")
        pixels.append(image)
        labels.append(label)
        names.append(f"{loaded.class_names[label] if label < len(loaded.class_names) else label} "
                     f"{ds.samples[i][0].stem}")
        paths.append(ds.display_path(ds.samples[i][0]))
    x = loaded.normalize(torch.stack(pixels))  # (N, 3, S, S), zero = the mean
    y = torch.tensor(labels)

    all_curves: list[InvarianceCurves] = []
    strips, strip_steps = [], []
    norm = loaded.normalization.center_crop(size)
    for t in transforms:
        amounts = [float(a) for a in steps.get(t, default_steps(t, size))]
        curves = invariance(loaded.model, x, y, t, amounts, layers=layers, crop=size, batch_size=batch_size,
                            show_progress=show_progress)
        all_curves.append(curves)
        k = min(5, len(amounts))
        shown = sorted({round(j * (len(amounts) - 1) / max(k - 1, 1)) for j in range(k)})
        strip_steps.append([amounts[j] for j in shown])
        strips.append(torch.stack([(norm.invert(center_crop(transform_images(x, t, amounts[j]), size)) / 255.0)
                                   .clamp(0, 1) for j in shown], dim=1))

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    png = draw_invariance(all_curves, strips, strip_steps, out / "invariance.png", image_names=names, units=UNITS,
                          title=f"Invariance of {_name(loaded)}: vertical translation, scale, rotation (Fig. 5)")
    record: dict[str, Any] = {
        "kind": "invariance",
        "run": str(loaded.root), "model": _name(loaded), "weights": loaded.weights, "data": str(data),
        "split": split,
        "input_size": size, "seed": seed, "layers": list(all_curves[0].distances), "distance": DISTANCE,
        "images": [{"path": p, "label": int(lab), "class": loaded.class_names[lab]
                    if lab < len(loaded.class_names) else str(lab)} for p, lab in zip(paths, labels)],
        "transforms": {c.transform: {
            "unit": UNITS[c.transform], "steps": c.steps.tolist(),
            "distance": {layer: d.tolist() for layer, d in c.distances.items()},
            "prob_true": c.prob_true.tolist(), "predicted": c.predicted.tolist(),
        } for c in all_curves},
        "report": _invariance_report(all_curves, png.name, len(chosen)),
    }
    atomic_write_json(out / "invariance.json", record)
    return record


def _nanmean(t: torch.Tensor) -> float:
    return float(t.nanmean())


def _offset(transform: str, step: float) -> float:
    """How far a step is from the identity: |pixels|, |log factor|, or the angle to the nearest whole turn."""
    if transform == "translation":
        return abs(step)
    if transform == "scale":
        return abs(math.log(step)) if step > 0 else math.inf
    turn = step % 360.0
    return min(turn, 360.0 - turn)


def _invariance_report(all_curves: list[InvarianceCurves], png: str, n: int) -> dict[str, Any]:
    layers = list(all_curves[0].distances)
    columns = ["transform", "step"] + [f"distance {layer}" for layer in layers] + ["P(true) mean", "P(true) min"]
    rows, small = [], []
    for c in all_curves:
        steps = c.steps.tolist()
        moved = [j for j, s in enumerate(steps) if _offset(c.transform, s) > 0]
        if not moved:
            continue
        nearest = min(moved, key=lambda j: (_offset(c.transform, steps[j]), j))
        farthest = max(moved, key=lambda j: (_offset(c.transform, steps[j]), -j))
        for j in dict.fromkeys((nearest, farthest)):
            rows.append([c.transform, f"{steps[j]:g} {UNITS[c.transform]}"]
                        + [round(_nanmean(c.distances[layer][:, j]), 4) for layer in layers]
                        + [round(float(c.prob_true[:, j].mean()), 4), round(float(c.prob_true[:, j].min()), 4)])
        if len(layers) >= 2:
            small.append(f"{c.transform} by {steps[nearest]:g} {UNITS[c.transform]} moves {layers[0]} by "
                         f"{_nanmean(c.distances[layers[0]][:, nearest]):.2f} and {layers[-1]} by "
                         f"{_nanmean(c.distances[layers[-1]][:, nearest]):.2f}")
    summary = (f"How far the features of {n} images move (distance relative to the original's feature length) "
               f"and how P(true class) changes as the images are translated, scaled and rotated (Fig. 5). "
               + ("Mean over images: " + "; ".join(small) + "." if small else ""))
    return {
        "title": "Invariance to translation, scale and rotation (Fig. 5)",
        "summary": summary,
        "figures": [{"path": png, "caption": "Rows: vertical translation, scale, rotation. Columns: the images "
                     f"as transformed; the feature distance at {' and '.join(layers[:2])} "
                     "(‖f(x) − f(Tx)‖ / ‖f(x)‖); the probability of the true class. One line per image."}],
        "tables": [{"caption": "Mean over images at the smallest and the largest step of each transformation",
                    "columns": columns, "rows": rows}],
    }
