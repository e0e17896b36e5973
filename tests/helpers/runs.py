"""Run directories written directly (no training), whole or with one file crafted: for load and refusal tests."""

from __future__ import annotations

import json
import struct
import zlib
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import save_file

from zfnet._io import atomic_write_json
from zfnet.data.synthetic import write_synthetic
from zfnet.data.transforms import base_size, load_image
from zfnet.models import build
from zfnet.train.checkpoint import RunFiles, load_state, save_mean, save_state, save_weights

CLASSES = ["bar", "cross", "disc"]  # make_tree's first three shapes, sorted as open_dataset sorts them
_WEIGHTS: dict[tuple[str, int], dict[str, torch.Tensor]] = {}


def weights(model: str = "zfnet-tiny", num_classes: int = 3) -> dict[str, torch.Tensor]:
    """A model's state dict at its initialisation (cached: the same tensors for every run)."""
    if (model, num_classes) not in _WEIGHTS:
        torch.manual_seed(0)
        net = build(model, num_classes=num_classes)
        _WEIGHTS[model, num_classes] = {k: v.detach().contiguous() for k, v in net.state_dict().items()}
    return _WEIGHTS[model, num_classes]


def write_run(root: Path, *, classes: Any = tuple(CLASSES), metadata: dict[str, Any] | None = None,
              raw_metadata: dict[str, str] | None = None, tensors: dict[str, torch.Tensor] | None = None,
              config: Any = None, mean: dict[str, torch.Tensor] | None = None) -> Path:
    """A zfnet-tiny run directory with 3 classes, each of its files replaceable by a crafted one.

    Args:
        classes: what ``classes.json`` holds under ``classes`` (a dict: the whole file).
        metadata: the weights' metadata, JSON-encoded per key (default: zfnet's own for 3 classes).
        raw_metadata: metadata strings written as they are (not JSON-encoded).
        tensors: the weights' tensors (default: a zfnet-tiny at 3 classes).
        config: ``config.json``'s content (None: no config.json).
        mean: the mean file's tensors (default: a 73x73 mean image of 100s).
    """
    root.mkdir(parents=True, exist_ok=True)
    meta = {"model": "zfnet-tiny", "num_classes": 3, "model_options": {}, "epoch": 1} if metadata is None else metadata
    encoded = {k: json.dumps(v) for k, v in meta.items()}
    encoded.update(raw_metadata or {})
    save_file(weights() if tensors is None else tensors, str(root / "best.safetensors"), metadata=encoded)
    info = classes if isinstance(classes, dict) else {"classes": list(classes), "names": list(classes)}
    (root / "classes.json").write_text(json.dumps(info))
    save_file(mean if mean is not None else {"mean": torch.full((3, 73, 73), 100.0)}, str(root / "mean.safetensors"))
    if config is not None:
        (root / "config.json").write_text(json.dumps(config))
    return root


def png_header_claiming(path: Path, width: int, height: int) -> Path:
    """A PNG whose header claims ``width`` x ``height`` pixels (a decompression bomb's), with one tiny IDAT."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    idat = chunk(b"IDAT", zlib.compress(b"\x00" * 64))
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + idat + chunk(b"IEND", b""))
    return path


def default_init_(model: torch.nn.Module) -> torch.nn.Module:
    """PyTorch's default initialisation in place: activations far from zero at every layer (the paper's
    N(0, 0.01) leaves a random network's outputs nearly independent of its input)."""
    for m in model.modules():
        if isinstance(m, (torch.nn.Conv2d, torch.nn.Linear)):
            m.reset_parameters()
    return model


def synthetic_run(root: Path, *, classes: int, val_per_class: int, size: int = 64, seed: int = 0) -> tuple[Path, Path]:
    """The synthetic data set (``classes`` classes, 2 training and ``val_per_class`` validation images each,
    with boxes and parts) and a zfnet-tiny run directory on it, written directly with default-initialised
    weights and the training images' mean. Returns ``(data folder, run directory)``."""
    summary = write_synthetic(root / "data", classes=classes, per_class=2, val_per_class=val_per_class, size=size,
                              progress=False)
    torch.manual_seed(seed)
    model = default_init_(build("zfnet-tiny", num_classes=classes))
    run = root / "run"
    run.mkdir()
    files = RunFiles(run)
    save_weights(files.best, model, {"model": "zfnet-tiny", "num_classes": classes, "model_options": {}})
    train = sorted((root / "data" / "train").rglob("*.png"))
    save_mean(files.mean, torch.stack([load_image(p, base_size(size)) for p in train]).float().mean(0))
    atomic_write_json(files.classes, {"classes": summary.classes, "names": summary.classes})
    return root / "data", run


def forget_option(run: Path, key: str) -> None:
    """Make ``run`` look like one saved before the training option ``key`` existed: no such key in its
    ``config.json`` nor in the configuration inside ``last.pt``."""
    config = json.loads((run / "config.json").read_text())
    del config[key]
    (run / "config.json").write_text(json.dumps(config))
    state = load_state(run / "last.pt")
    del state["config"][key]
    save_state(run / "last.pt", state)
