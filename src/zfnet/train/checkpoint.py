"""Checkpoints and run directories, written atomically and read without unpickling code.

A run directory ``RUN/`` holds:

- ``config.json``: the resolved :class:`~zfnet.train.TrainConfig`;
- ``classes.json``: the class folder names (and readable names) in label order;
- ``mean.safetensors``: the training set's per-pixel mean image (3, S, S), 0-255;
- ``metrics.jsonl``: one JSON object per finished epoch;
- ``last.pt``: the full training state after the last finished epoch (model, optimiser, schedule,
  epoch, metrics), for ``--resume``;
- ``best.safetensors``: the weights with the lowest validation top-1 error so far;
- ``snapshots/epoch-NNN.safetensors``: weights at the chosen epochs;
- ``zfnet-run.json``: the mark of a zfnet run, written first when the run is created, so that
  ``--resume`` accepts only zfnet's own folders, even one killed in its first seconds.

No weights file and no training state holds a NaN or an infinite value: :func:`save_weights` and
:func:`save_state` refuse them (:func:`first_nonfinite`), so every checkpoint on disk is a good one.

Weights are safetensors files (a format that cannot hold code) carrying the model's name and
options in their metadata, so each rebuilds its model alone. ``last.pt`` is read with
``torch.load(weights_only=True)``, which refuses anything but tensors and plain containers: a
crafted file gives a :class:`~zfnet.errors.CheckpointError`, and runs nothing.
"""

from __future__ import annotations

import json
import math
import os
import pickle
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file
from safetensors.torch import save as safetensors_bytes
from torch import nn

from .._io import atomic_write, atomic_write_json, folder_entries
from .._validate import Limits, check_fields, check_value, limits
from ..data.transforms import base_size
from ..errors import CheckpointError, TrainingDiverged, ZFNetError
from ..models import build, model_config
from ..models.convnet import MAX_CLASSES, MAX_INPUT_SIZE
from .config import MAX_EPOCHS, TrainConfig

__all__ = [
    "save_state", "load_state", "save_weights", "load_weights", "load_model", "RunFiles",
    "save_mean", "load_mean", "STATE_FORMAT", "RunModel", "read_run", "read_torch_file",
    "WeightsMetadata", "read_weights_metadata", "read_classes", "load_run_config", "shape_problems",
    "first_nonfinite", "RUN_MARKER", "RUN_FORMAT", "write_run_marker", "is_run_dir", "check_resumable",
]

STATE_FORMAT = "zfnet-train-state-v1"
RUN_MARKER = "zfnet-run.json"
RUN_FORMAT = "zfnet-run"


def first_nonfinite(obj: Any, name: str = "") -> str | None:
    """The name of the first floating-point tensor (or float) in ``obj`` holding NaN or inf; None: all finite.

    ``obj`` is a tensor, a number, or dicts, lists and tuples of them (a state dict, an optimiser's state).

    Example:
        >>> first_nonfinite({"conv1.weight": torch.ones(2), "fc8.bias": torch.tensor([float("nan")])})
        'fc8.bias'
    """
    if isinstance(obj, torch.Tensor):
        if (obj.is_floating_point() or obj.is_complex()) and not bool(torch.isfinite(obj).all()):
            return name or "a tensor"
        return None
    if isinstance(obj, float):
        return None if math.isfinite(obj) else (name or "a number")
    if isinstance(obj, dict):
        items = obj.items()
    elif isinstance(obj, (list, tuple)):
        items = enumerate(obj)
    else:
        return None
    for key, value in items:
        found = first_nonfinite(value, f"{name}.{key}" if name else str(key))
        if found is not None:
            return found
    return None


def _refuse_nonfinite(path: Path, obj: Any, what: str) -> None:
    bad = first_nonfinite(obj)
    if bad is not None:
        raise TrainingDiverged(f"refusing to write {path}: {what} {bad} holds NaN or infinite values")


def save_state(path: str | Path, state: dict[str, Any]) -> Path:
    """Atomically write a training state (tensors, numbers, strings, lists and dicts only).

    Raises:
        TrainingDiverged: the model's or the optimiser's state holds NaN or inf; nothing is written.
    """
    path = Path(path)
    _refuse_nonfinite(path, state.get("model", {}), "the weight")
    _refuse_nonfinite(path, state.get("optimizer", {}), "the optimiser state")
    payload = {"format": STATE_FORMAT, **state}
    return atomic_write(path, lambda tmp: torch.save(payload, tmp))


def _write_safetensors(path: Path, tensors: dict[str, torch.Tensor], metadata: dict[str, str] | None) -> Path:
    # Serialised here and written by atomic_write: safetensors' own save_file writes an owner-only
    # temporary file of its own naming, which a kill -9 would leave behind.
    data = safetensors_bytes(tensors, metadata=metadata)

    def write(tmp: Path) -> None:
        with open(tmp, "wb") as f:
            f.write(data)

    return atomic_write(path, write)


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
    for key, (hint, limit) in _STATE_KEYS.items():
        if key in state:
            try:
                check_value(state[key], hint, key, what="training state entry", limit=limit)
            except ZFNetError as err:
                raise CheckpointError(f"{path}: {err}") from None
    model = state.get("model", {})
    if not all(isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in model.items()):
        raise CheckpointError(f"{path}: its model entry is not a state dict of parameter names to tensors")
    if not all(isinstance(m, dict) for m in state.get("metrics", [])):
        raise CheckpointError(f"{path}: its metrics entry is not a list of objects")
    return state


# The entries of a training state and what each must be (see zfnet.train.loop's _save_epoch).
_STATE_KEYS: dict[str, tuple[Any, Limits | None]] = {
    "epoch": (int, Limits(0, MAX_EPOCHS)),
    "model": (dict, None),
    "optimizer": (dict, None),
    "scheduler": (dict, None),
    "metrics": (tuple[Any, ...], Limits(max_items=MAX_EPOCHS)),
    "best": (dict, None),
    "config": (dict, None),
    "schedule_started": (bool, None),
}


def save_weights(path: str | Path, model: nn.Module, metadata: dict[str, Any]) -> Path:
    """Atomically write ``model``'s weights as safetensors, with JSON-encoded ``metadata``.

    Raises:
        TrainingDiverged: a weight holds NaN or inf; nothing is written.
    """
    path = Path(path)
    tensors = {k: v.detach().to("cpu").contiguous() for k, v in model.state_dict().items()}
    _refuse_nonfinite(path, tensors, "the weight")
    meta = {k: json.dumps(v) for k, v in metadata.items()}
    return _write_safetensors(path, tensors, meta)


def _header(path: Path) -> tuple[dict[str, tuple[tuple[int, ...], str]], dict[str, Any]]:
    """A safetensors file's tensor names, shapes and dtypes, and its metadata: nothing loaded yet."""
    if path.is_dir():
        raise CheckpointError(f"weights file {path} is a directory")
    if not path.is_file():
        raise CheckpointError(f"weights file {path} does not exist")
    try:
        with safe_open(str(path), framework="pt") as f:
            raw = f.metadata() or {}
            shapes = {}
            for key in f.keys():
                part = f.get_slice(key)
                shapes[key] = (tuple(int(n) for n in part.get_shape()), str(part.get_dtype()))
    except (SafetensorError, OSError, ValueError, RuntimeError) as err:
        raise CheckpointError(f"{path} is not a readable safetensors file ({str(err)[:200]})") from None
    return shapes, {k: _json_or_text(v) for k, v in raw.items()}


def _read_safetensors(path: Path) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    _, meta = _header(path)
    try:
        tensors = load_file(str(path))
    except (SafetensorError, OSError, ValueError, RuntimeError) as err:
        raise CheckpointError(f"{path} is not a readable safetensors file ({str(err)[:200]})") from None
    return tensors, meta


def _json_or_text(value: str) -> Any:
    """zfnet writes its metadata as JSON; other writers' (``{"format": "pt"}``) stay text."""
    try:
        return json.loads(value)
    except (ValueError, RecursionError):
        return value


def load_weights(path: str | Path) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Read a safetensors weights file: its tensors and its metadata (values JSON-decoded where they are JSON).

    The metadata is not checked here (any writer's file is read); :func:`read_weights_metadata` checks
    zfnet's.

    Raises:
        CheckpointError: a missing or unreadable file.
    """
    return _read_safetensors(Path(path))


@dataclass(frozen=True)
class WeightsMetadata:
    """The metadata a zfnet weights file carries, each key checked by type and range on reading.

    Attributes:
        model: the registered model's name.
        num_classes: the width of its last layer.
        model_options: its configuration's overrides (checked as the model's configuration).
        epoch: the epoch after which the weights were saved (None: not from a training run).
    """

    model: str
    num_classes: int = field(metadata=limits(1, MAX_CLASSES))
    model_options: dict[str, Any] = field(default_factory=dict)
    epoch: int | None = field(default=None, metadata=limits(0, MAX_EPOCHS))

    def __post_init__(self) -> None:
        check_fields(self, "metadata key")

    def config(self) -> Any:
        """The model's configuration, checked (types, ranges, parameter count); nothing allocated."""
        return model_config(self.model, num_classes=self.num_classes, options=self.model_options)


def _weights_metadata(path: Path, meta: dict[str, Any]) -> tuple[WeightsMetadata, Any]:
    missing = [k for k in ("model", "num_classes") if k not in meta]
    if missing:
        raise CheckpointError(f"{path} has no {missing[0]!r} in its metadata: not a zfnet weights file")
    known = {k: meta[k] for k in ("model", "num_classes", "model_options", "epoch") if k in meta}
    try:
        info = WeightsMetadata(**known)
        return info, info.config()
    except ZFNetError as err:
        raise CheckpointError(f"{path}: cannot rebuild its model: {err}") from None


def read_weights_metadata(path: str | Path) -> dict[str, Any]:
    """A zfnet weights file's metadata, every key checked (the tensors are not read).

    Raises:
        CheckpointError: an unreadable file, or metadata naming no model, an unknown one, or keys of the
            wrong type or range (a class count of 10**11, say).
    """
    path = Path(path)
    _, meta = _header(path)
    _weights_metadata(path, meta)
    return meta


def shape_problems(expected: dict[str, tuple[int, ...]], got: dict[str, tuple[int, ...]],
                   optional: Callable[[str], bool] = lambda key: False) -> list[str]:
    """What keeps a state dict of shapes ``got`` from fitting a model's ``expected``: missing keys,
    unexpected keys and shape mismatches, the first few of each kind named; [] when it fits."""
    missing = [k for k in expected if k not in got and not optional(k)]
    unexpected = [k for k in got if k not in expected]
    shapes = [k for k in expected if k in got and tuple(got[k]) != tuple(expected[k])]
    problems = []
    if missing:
        problems.append(f"{len(missing)} missing key{'s' * (len(missing) > 1)} ({_some(missing)})")
    if unexpected:
        problems.append(f"{len(unexpected)} unexpected key{'s' * (len(unexpected) > 1)} ({_some(unexpected)})")
    if shapes:
        detail = ", ".join(f"{k}: file {tuple(got[k])}, model {tuple(expected[k])}" for k in shapes[:_SHOWN])
        problems.append(f"{len(shapes)} shape mismatch{'es' * (len(shapes) > 1)} ({detail}"
                        f"{', ...' if len(shapes) > _SHOWN else ''})")
    return problems


_SHOWN = 3  # keys named per kind of mismatch


def _some(names: list[str]) -> str:
    shown = ", ".join(names[:_SHOWN])
    return shown + (", ..." if len(names) > _SHOWN else "")


def load_model(path: str | Path) -> tuple[nn.Module, dict[str, Any]]:
    """Rebuild a model from a weights file written by :func:`save_weights` and load its weights.

    In order, before anything of the model's size is allocated: the metadata's keys are checked
    (:class:`WeightsMetadata`), the model's configuration is checked (its parameter count included),
    and the file's tensor names and shapes are compared with a model built on the ``meta`` device
    (no memory). Only then are the tensors read, checked to be finite, and the model built.

    Returns:
        ``(model in eval mode, metadata)``.

    Raises:
        CheckpointError: unreadable file, metadata of the wrong type or range, an unknown model, weights
            that do not fit the model, or weights holding NaN or infinite values.
    """
    path = Path(path)
    shapes, meta = _header(path)
    info, _ = _weights_metadata(path, meta)
    with torch.device("meta"):
        skeleton = build(info.model, num_classes=info.num_classes, **info.model_options)
    expected = {k: tuple(v.shape) for k, v in skeleton.state_dict().items()}
    problems = shape_problems(expected, {k: shape for k, (shape, _) in shapes.items()})
    not_float = [k for k, (_, dtype) in shapes.items() if k in expected and dtype not in ("F16", "BF16", "F32", "F64")]
    if not_float:
        problems.append(f"{len(not_float)} tensor(s) not floating-point ({_some(not_float)})")
    if problems:
        raise CheckpointError(f"{path}: its weights do not fit model {info.model!r} with {info.num_classes} "
                              f"classes: {'; '.join(problems)}")
    tensors, _ = _read_safetensors(path)
    bad = first_nonfinite(tensors)
    if bad is not None:
        raise CheckpointError(f"{path}: weight {bad} holds NaN or infinite values")
    model = build(info.model, num_classes=info.num_classes, **info.model_options)
    try:
        model.load_state_dict(tensors, strict=True)
    except RuntimeError as err:
        raise CheckpointError(f"{path}: its weights do not fit model {info.model!r}: "
                              f"{str(err).splitlines()[0][:300]}") from None
    return model.eval(), meta


def save_mean(path: str | Path, mean: torch.Tensor) -> Path:
    return _write_safetensors(Path(path), {"mean": mean.contiguous()}, None)


def load_mean(path: str | Path, size: int | None = None) -> torch.Tensor:
    """A run's mean image: (3, S, S) float32, finite, on the 0-255 scale; S == ``size`` when given.

    The shape is checked in the file's header before the tensor is read.

    Raises:
        CheckpointError: missing or unreadable, not one (3, S, S) floating-point ``mean`` tensor, another
            size than ``size``, or values that are not finite or outside 0-255.
    """
    path = Path(path)
    shapes, _ = _header(path)
    shape, dtype = shapes.get("mean", ((), ""))
    if len(shape) != 3 or shape[0] != 3 or shape[1] != shape[2] or dtype not in ("F16", "BF16", "F32", "F64"):
        raise CheckpointError(f"{path} does not hold a mean image (3, S, S) of floats "
                              f"(it holds {', '.join(f'{k} {list(v)}' for k, (v, _) in shapes.items()) or 'nothing'})")
    if size is not None and shape[1] != size:
        raise CheckpointError(f"{path} is a {shape[1]}x{shape[2]} mean image, but the model's images are "
                              f"{size}x{size}: it is not this run's")
    if shape[1] > 2 * MAX_INPUT_SIZE:
        raise CheckpointError(f"{path} is a {shape[1]}x{shape[2]} mean image, larger than any model's input")
    mean = _read_safetensors(path)[0]["mean"].float()
    if not bool(torch.isfinite(mean).all()) or float(mean.min()) < 0 or float(mean.max()) > 255:
        raise CheckpointError(f"{path}: the mean image holds values that are not finite or outside 0-255")
    return mean


def write_run_marker(root: str | Path) -> Path:
    """Mark ``root`` as a zfnet run (``zfnet-run.json``); the first file a new run writes."""
    return atomic_write_json(Path(root) / RUN_MARKER, {"format": RUN_FORMAT, "version": 1, "pid": os.getpid()})


def is_run_dir(root: str | Path) -> bool:
    """Whether ``root`` is a zfnet run: it holds zfnet's run mark, or (a run of an older zfnet) a last.pt.

    A run killed in its first seconds has its mark; a user's folder does not.
    """
    root = Path(root)
    marker = root / RUN_MARKER
    if marker.is_file():
        try:
            return json.loads(marker.read_text(encoding="utf-8")).get("format") == RUN_FORMAT
        except (OSError, ValueError, AttributeError):
            return False
    return (root / "last.pt").is_file()


def check_resumable(root: str | Path) -> None:
    """Refuse to resume ``root`` unless it is a zfnet run (:func:`is_run_dir`).

    Raises:
        ZFNetError: ``root`` is missing, a file, empty, or a folder zfnet did not make a run of.
    """
    root = Path(root)
    if not root.exists():
        raise ZFNetError(f"nothing to resume: {root} does not exist")
    if not root.is_dir():
        raise ZFNetError(f"nothing to resume: {root} is a file, not a run directory")
    if not folder_entries(root):
        raise ZFNetError(f"nothing to resume: {root} is empty; train without --resume to start a run there")
    if not is_run_dir(root):
        raise ZFNetError(f"{root} is not a zfnet run (it has no {RUN_MARKER}); --resume continues only a run "
                         "that zfnet started")


@dataclass(frozen=True)
class RunFiles:
    """The paths of a run directory's files."""

    root: Path

    @property
    def marker(self) -> Path:
        return self.root / RUN_MARKER

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


def _read_json(path: Path, what: str) -> Any:
    if path.is_dir():
        raise CheckpointError(f"{path} is a directory, not the run's {what}")
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError, RecursionError) as err:
        raise CheckpointError(f"{path} is not readable JSON ({str(err).splitlines()[0][:200] if str(err) else err!r})"
                              ) from None


def read_classes(path: str | Path) -> tuple[list[str], list[str]]:
    """A run's ``classes.json``: its class folder names and readable names, in label order, checked.

    Raises:
        CheckpointError: not an object with ``classes``, a list of 1 to 1,000,000 distinct non-empty
            strings, and optionally ``names``, a list of as many strings.
    """
    path = Path(path)
    info = _read_json(path, "classes.json")
    try:
        info = check_value(info, dict[str, Any], "classes.json", what="the run's")
        if "classes" not in info:
            raise ZFNetError("it has no 'classes' list")
        limit = Limits(max_items=MAX_CLASSES)
        classes = list(check_value(info["classes"], tuple[str, ...], "classes", what="entry", limit=limit))
        names = list(check_value(info.get("names", classes), tuple[str, ...], "names", what="entry", limit=limit))
    except ZFNetError as err:
        raise CheckpointError(f"{path}: {err}") from None
    if not classes or any(not c for c in classes):
        raise CheckpointError(f"{path}: its classes must be a non-empty list of non-empty names")
    if len(set(classes)) != len(classes):
        twice = sorted({c for c in classes if classes.count(c) > 1})
        raise CheckpointError(f"{path}: class {twice[0]!r} is listed twice")
    if len(names) != len(classes):
        raise CheckpointError(f"{path}: {len(names)} names for {len(classes)} classes")
    return classes, names


def load_run_config(path: str | Path) -> TrainConfig:
    """A run's ``config.json`` as the :class:`~zfnet.train.TrainConfig` it was written from, every option checked.

    Raises:
        CheckpointError: unreadable, not an object, unknown options, or values of the wrong type or range.
    """
    path = Path(path)
    raw = _read_json(path, "config.json")
    try:
        return TrainConfig.from_json(raw, source=str(path))
    except ZFNetError as err:
        raise CheckpointError(str(err)) from None


@dataclass(frozen=True)
class RunModel:
    """A run directory's model read and checked against the run's other files (see :func:`read_run`)."""

    root: Path
    model: nn.Module
    mean: torch.Tensor
    classes: list[str]
    class_names: list[str]
    metadata: dict[str, Any]
    weights: str


def read_run(run: str | Path, weights: str = "best") -> RunModel:
    """Read a run directory's model (``best``, ``last`` or ``epoch-N`` weights) and its preprocessing.

    A path to a ``.safetensors`` file inside a run is accepted too. Everything is checked against
    everything else before the model is built: the weights' metadata by type and range, its class
    count against ``classes.json``, its model and options against ``config.json`` (when the run has
    one), the mean image's size against the model's input, and the file's tensor shapes against the
    model (see :func:`load_model`). :func:`zfnet.train.run.load_run` gives it as a ``LoadedRun``.

    Raises:
        CheckpointError: not a run directory, its files are missing or unreadable, or they disagree
            (weights of another class count or model than the run's, say).
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
    classes, names = read_classes(files.classes)
    info, config = _weights_metadata(weights_path, _header(weights_path)[1])
    if info.num_classes != len(classes):
        raise CheckpointError(f"{weights_path} has {info.num_classes} outputs but {files.classes} lists "
                              f"{len(classes)} classes: the weights are not this run's")
    if files.config.is_file():
        trained = load_run_config(files.config)
        if trained.model != info.model or model_config(trained.model, len(classes), trained.model_options) != config:
            raise CheckpointError(f"{weights_path} holds model {info.model!r} with options {info.model_options} but "
                                  f"{files.config} trains {trained.model!r} with {trained.model_options}: the "
                                  "weights are not this run's")
    mean = load_mean(files.mean, size=base_size(config.input_size))
    model, meta = load_model(weights_path)
    which = weights_path.name if Path(run).is_file() else weights
    return RunModel(root, model, mean, classes, names, meta, which)
