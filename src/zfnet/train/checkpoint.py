"""Checkpoints and run directories, written atomically and read without unpickling code.

A run directory ``RUN/`` holds:

- ``config.json``: the resolved :class:`~zfnet.train.TrainConfig`;
- ``classes.json``: the class folder names (and readable names) in label order;
- ``mean.safetensors``: the training set's per-pixel mean image (3, S, S), 0-255;
- ``metrics.jsonl``: one JSON object per finished epoch;
- ``last.pt``: the full training state after the last finished epoch (model, optimiser, schedule,
  epoch, metrics), for ``--resume``;
- ``best.safetensors``: the weights with the lowest validation top-1 error so far;
- ``snapshots/epoch-NNN.safetensors``: weights at the chosen epochs.

Weights are safetensors files (a format that cannot hold code) carrying the model's name and
options in their metadata, so each rebuilds its model alone. ``last.pt`` is read with
``torch.load(weights_only=True)``, which refuses anything but tensors and plain containers: a
crafted file gives a :class:`~zfnet.errors.CheckpointError`, and runs nothing.
"""

from __future__ import annotations

import json
import pickle
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, save_file
from torch import nn

from .._io import atomic_write
from ..data.transforms import Normalization
from ..errors import CheckpointError
from ..models import build

__all__ = [
    "save_state", "load_state", "save_weights", "load_weights", "load_model", "RunFiles",
    "save_mean", "load_mean", "STATE_FORMAT", "LoadedRun", "load_run", "read_torch_file",
]

STATE_FORMAT = "zfnet-train-state-v1"


def save_state(path: str | Path, state: dict[str, Any]) -> Path:
    """Atomically write a training state (tensors, numbers, strings, lists and dicts only)."""
    payload = {"format": STATE_FORMAT, **state}
    return atomic_write(path, lambda tmp: torch.save(payload, tmp))


def read_torch_file(path: str | Path) -> Any:
    """Read a ``torch.save`` file with ``weights_only=True``: tensors and plain containers, no code.

    Raises:
        CheckpointError: missing, unreadable, or crafted (holds objects other than tensors and plain
            containers; nothing in it runs).
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} does not exist")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # torch's note about pickle protocols of foreign files
            return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise CheckpointError(
            f"refusing to load {path}: it holds objects other than tensors and plain data ({first[:200]})"
        ) from None
    except (RuntimeError, EOFError, OSError, ValueError) as err:
        raise CheckpointError(f"{path} is not a readable checkpoint ({type(err).__name__}: "
                              f"{str(err).splitlines()[0][:200] if str(err) else 'corrupt'})") from None


def load_state(path: str | Path, required: tuple[str, ...] = ("epoch", "model", "optimizer")) -> dict[str, Any]:
    """Read a training state written by :func:`save_state`, safely.

    Raises:
        CheckpointError: missing, unreadable, crafted (holds objects other than tensors and plain
            containers) or not a zfnet training state.
    """
    path = Path(path)
    state = read_torch_file(path)
    if not isinstance(state, dict) or state.get("format") != STATE_FORMAT:
        raise CheckpointError(f"{path} is not a zfnet training checkpoint")
    missing = [k for k in required if k not in state]
    if missing:
        raise CheckpointError(f"{path} lacks {', '.join(missing)}")
    return state


def save_weights(path: str | Path, model: nn.Module, metadata: dict[str, Any]) -> Path:
    """Atomically write ``model``'s weights as safetensors, with JSON-encoded ``metadata``."""
    tensors = {k: v.detach().to("cpu").contiguous() for k, v in model.state_dict().items()}
    meta = {k: json.dumps(v) for k, v in metadata.items()}
    return atomic_write(path, lambda tmp: save_file(tensors, str(tmp), metadata=meta))


def _read_safetensors(path: Path) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    if not path.is_file():
        raise CheckpointError(f"weights file {path} does not exist")
    try:
        tensors = load_file(str(path))
        with safe_open(str(path), framework="pt") as f:
            raw = f.metadata() or {}
    except (SafetensorError, OSError, ValueError) as err:
        raise CheckpointError(f"{path} is not a readable safetensors file ({str(err)[:200]})") from None
    return tensors, {k: _json_or_text(v) for k, v in raw.items()}


def _json_or_text(value: str) -> Any:
    """zfnet writes its metadata as JSON; other writers' (``{"format": "pt"}``) stay text."""
    try:
        return json.loads(value)
    except ValueError:
        return value


def load_weights(path: str | Path) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Read a safetensors weights file: its tensors and its metadata (values JSON-decoded where they are JSON).

    Raises:
        CheckpointError: a missing or unreadable file.
    """
    return _read_safetensors(Path(path))


def load_model(path: str | Path) -> tuple[nn.Module, dict[str, Any]]:
    """Rebuild a model from a weights file written by :func:`save_weights` and load its weights.

    Returns:
        ``(model in eval mode, metadata)``.

    Raises:
        CheckpointError: unreadable file, unknown model, or weights that do not fit the model.
    """
    path = Path(path)
    tensors, meta = _read_safetensors(path)
    try:
        model = build(meta["model"], num_classes=int(meta["num_classes"]), **meta.get("model_options", {}))
    except KeyError as err:
        raise CheckpointError(f"{path} has no {err} in its metadata: not a zfnet weights file") from None
    except (TypeError, ValueError) as err:
        raise CheckpointError(f"{path}: cannot rebuild its model: {err}") from None
    try:
        model.load_state_dict(tensors, strict=True)
    except RuntimeError as err:
        raise CheckpointError(f"{path}: its weights do not fit model {meta['model']!r}: "
                              f"{str(err).splitlines()[0][:300]}") from None
    return model.eval(), meta


def save_mean(path: str | Path, mean: torch.Tensor) -> Path:
    return atomic_write(path, lambda tmp: save_file({"mean": mean.contiguous()}, str(tmp)))


def load_mean(path: str | Path) -> torch.Tensor:
    tensors, _ = _read_safetensors(Path(path))
    mean = tensors.get("mean")
    if mean is None or mean.dim() != 3 or mean.shape[0] != 3:
        raise CheckpointError(f"{path} does not hold a mean image (3, S, S)")
    return mean.float()


@dataclass(frozen=True)
class RunFiles:
    """The paths of a run directory's files."""

    root: Path

    @property
    def config(self) -> Path:
        return self.root / "config.json"

    @property
    def classes(self) -> Path:
        return self.root / "classes.json"

    @property
    def mean(self) -> Path:
        return self.root / "mean.safetensors"

    @property
    def metrics(self) -> Path:
        return self.root / "metrics.jsonl"

    @property
    def last(self) -> Path:
        return self.root / "last.pt"

    @property
    def best(self) -> Path:
        return self.root / "best.safetensors"

    @property
    def snapshots(self) -> Path:
        return self.root / "snapshots"

    def snapshot(self, epoch: int) -> Path:
        return self.snapshots / f"epoch-{epoch:03d}.safetensors"

    def weights(self, which: str = "best") -> Path:
        """``best``, ``last`` (the last epoch's weights) or ``epoch-N`` (a snapshot)."""
        if which == "best":
            return self.best
        if which == "last":
            return self.root / "last.safetensors"
        if which.startswith("epoch-") and which[6:].isdigit():
            return self.snapshot(int(which[6:]))
        raise CheckpointError(f"unknown weights {which!r}; valid: best, last, epoch-N")

    def list_snapshots(self) -> list[int]:
        if not self.snapshots.is_dir():
            return []
        out = []
        for p in self.snapshots.glob("epoch-*.safetensors"):
            digits = p.stem[6:]
            if digits.isdigit():
                out.append(int(digits))
        return sorted(out)


@dataclass
class LoadedRun:
    """A trained model with what it needs to preprocess images: normalisation, classes, input size.

    A zfnet run (:func:`load_run`) subtracts its training mean image; a model zfnet did not train
    (:func:`zfnet.train.external.load_external`) carries a per-channel mean and ``std``. Jobs turn
    0-255 pixels into the model's input with :meth:`normalize` only.

    Attributes:
        root: the run directory (for another model: its ``--model`` spec, as a path).
        model: the network, in eval mode.
        mean: (3, S, S) mean image at the base size S, 0-255.
        classes: class folder names in output order; class_names: their readable names.
        metadata: the weights file's metadata (``model``, ``model_options`` ...).
        std: (3, 1, 1) per-channel divisor on the 0-255 scale; None (a zfnet run): no division.
        input_size: the side of the model's input crop; None: the model's ``config.input_size``.
        weights: which weights were loaded (``best``, ``last``, ``epoch-N`` or a file).
        factory: for a model zfnet did not train, the function that builds it afresh.
    """

    root: Path
    model: nn.Module
    mean: torch.Tensor
    classes: list[str]
    class_names: list[str]
    metadata: dict[str, Any]
    std: torch.Tensor | None = None
    input_size: int | None = None
    weights: str = "best"
    factory: Callable[[], nn.Module] | None = None

    def __post_init__(self) -> None:
        if self.input_size is None:
            config = getattr(self.model, "config", None)
            if config is not None and hasattr(config, "input_size"):
                self.input_size = int(config.input_size)

    @property
    def is_run(self) -> bool:
        """True for a zfnet run (with its directory's snapshots and config), False for another model."""
        return self.factory is None

    @property
    def base_size(self) -> int:
        return int(self.mean.shape[-1])

    @property
    def normalization(self) -> Normalization:
        """The model's input normalisation at the base size."""
        return Normalization(self.mean, self.std)

    def normalize(self, pixels: torch.Tensor) -> torch.Tensor:
        """0-255 pixels at the base size (..., 3, S, S) -> the model's input, float32 (crop it after)."""
        return self.normalization(pixels)

    def untrained(self) -> nn.Module:
        """The same architecture at its initialisation (random weights), in eval mode."""
        if self.factory is not None:
            return self.factory().eval()
        meta = self.metadata
        return build(meta["model"], num_classes=len(self.classes), **meta.get("model_options", {})).eval()


def load_run(run: str | Path, weights: str = "best") -> LoadedRun:
    """Load a run directory's model (``best``, ``last`` or ``epoch-N`` weights) for inference.

    A path to a ``.safetensors`` file inside a run is accepted too.

    Raises:
        CheckpointError: not a run directory, or its files are missing or unreadable.
    """
    root = Path(run)
    if root.is_file() and root.suffix == ".safetensors":
        weights_path = root
        root = root.parent.parent if root.parent.name == "snapshots" else root.parent
    else:
        if not root.is_dir():
            raise CheckpointError(f"run directory {root} does not exist")
        weights_path = RunFiles(root).weights(weights)
    files = RunFiles(root)
    if not files.classes.is_file():
        raise CheckpointError(f"{root} is not a zfnet run directory (no classes.json)")
    if not weights_path.is_file():
        have = ", ".join(p.name for p in sorted(root.glob("*.safetensors"))) or "none"
        raise CheckpointError(f"{weights_path} does not exist (weights in {root}: {have}); "
                              "has the run finished an epoch?")
    model, meta = load_model(weights_path)
    try:
        info = json.loads(files.classes.read_text())
        classes = [str(c) for c in info["classes"]]
        names = [str(c) for c in info.get("names", classes)]
    except (OSError, ValueError, KeyError, TypeError) as err:
        raise CheckpointError(f"{files.classes} is unreadable: {err}") from None
    mean = load_mean(files.mean)
    which = weights_path.name if Path(run).is_file() else weights
    return LoadedRun(root, model, mean, classes, names, meta, weights=which)
