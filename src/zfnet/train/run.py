"""A training run's folder as one object: what it trained, how far it got, and its model on demand.

:class:`Run` reads a run directory lazily and checks what it reads: its configuration, its per-epoch
metrics, the epochs it finished, its weight snapshots, and its model's metadata from a weights file's
header (no tensor is read). :meth:`Run.model` loads the weights once per choice (``best``, ``last``,
``epoch-N``) and returns the :class:`LoadedRun` every experiment takes: the
model with its preprocessing (mean image, input size, classes). So a caller that runs several
experiments on one run (the demo) loads it once.

Example:
    >>> run = Run.open("runs/zfnet")  # doctest: +SKIP
    >>> run.finished_epochs, run.snapshots, run.architecture  # doctest: +SKIP
    (20, [1, 2, 5, 10, 20], 'zfnet-cpu')
    >>> Run.open("runs/no-fc").architecture  # doctest: +SKIP
    'zfnet-cpu (removed=fc6/fc7)'
    >>> loaded = run.model()  # doctest: +SKIP
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .._validate import check_value
from ..data.transforms import Normalization
from ..errors import CheckpointError, ZFNetError
from ..models import build
from .checkpoint import (
    RunFiles,
    check_resumable,
    load_run_config,
    read_classes,
    read_run,
    read_weights_metadata,
)
from .config import TrainConfig, load_config_file

__all__ = ["Run", "LoadedRun", "load_run", "MAX_METRIC_LINES", "training_config", "architecture_name",
           "FIXED_ON_RESUME"]

FIXED_ON_RESUME = ("model", "model_options", "data", "seed", "layout")
"""What a resumed run cannot change."""

MAX_METRIC_LINES = 100_000
"""The most lines of a ``metrics.jsonl`` read (one per epoch)."""


class Run:
    """A run directory of ``zfnet train``, read on demand; see the module's docstring."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)
        self.files = RunFiles(self.root)
        self._loaded: dict[str, LoadedRun] = {}

    @classmethod
    def open(cls, root: str | Path) -> Run:
        """The run in ``root``.

        Raises:
            CheckpointError: ``root`` is missing, or is not a run directory (no ``classes.json``).
        """
        run = cls(root)
        if not run.root.is_dir():
            raise CheckpointError(f"run directory {run.root} does not exist")
        if not run.files.classes.is_file():
            raise CheckpointError(f"{run.root} is not a zfnet run directory (no classes.json)")
        return run

    def __repr__(self) -> str:
        return f"Run({str(self.root)!r})"

    @cached_property
    def config(self) -> TrainConfig | None:
        """The configuration it was trained with (None: a run without ``config.json``), every option checked."""
        return load_run_config(self.files.config) if self.files.config.is_file() else None

    @cached_property
    def classes(self) -> list[str]:
        """Its class folder names, in output order."""
        return read_classes(self.files.classes)[0]

    @property
    def metrics(self) -> list[dict[str, Any]]:
        """One record per finished epoch (``epoch``, ``val_top1_error`` ...), as ``metrics.jsonl`` holds them.

        Raises:
            CheckpointError: a line that is not a JSON object, or more than :data:`MAX_METRIC_LINES`.
        """
        path = self.files.metrics
        if not path.is_file():
            return []
        rows = []
        with path.open(encoding="utf-8", errors="replace") as f:
            for number, line in enumerate(f, 1):
                if number > MAX_METRIC_LINES:
                    raise CheckpointError(f"{path} has more than {MAX_METRIC_LINES} lines")
                if not line.strip():
                    continue
                try:
                    row = json.loads(line)
                except ValueError:
                    raise CheckpointError(f"{path}, line {number}: not JSON") from None
                if not isinstance(row, dict):
                    raise CheckpointError(f"{path}, line {number}: not an object")
                rows.append(row)
        return rows

    @property
    def finished_epochs(self) -> int:
        """How many epochs it finished (its metrics' lines)."""
        return len(self.metrics)

    @property
    def snapshots(self) -> list[int]:
        """The epochs whose weights it kept (feature evolution)."""
        return self.files.list_snapshots()

    def model_info(self, weights: str = "best") -> dict[str, Any]:
        """The metadata of its ``weights`` (``model``, ``num_classes``, ``model_options`` ...), every key
        checked; the tensors are not read."""
        return read_weights_metadata(self.files.weights(weights))

    @property
    def architecture(self) -> str:
        """Its model's name with any options: ``zfnet-cpu`` or ``zfnet (removed=fc6/fc7)``."""
        return architecture_name(self.model_info("best" if self.files.best.is_file() else "last"))

    def model(self, weights: str = "best") -> LoadedRun:
        """Its model with ``weights`` (``best``, ``last`` or ``epoch-N``) and its preprocessing, loaded once."""
        if weights not in self._loaded:
            loaded = load_run(self.root, weights)
            loaded._folder = self  # the folder read so far comes with the model
            self._loaded[weights] = loaded
        return self._loaded[weights]


@dataclass
class LoadedRun:
    """A trained model with what it needs to preprocess images: normalisation, classes, input size.

    A zfnet run (:func:`load_run`, :meth:`Run.model`) subtracts its training mean image; a model zfnet
    did not train (:func:`zfnet.train.external.load_external`) carries a per-channel mean and ``std``.
    Experiments take this one kind of object whichever it is, and turn 0-255 pixels into the model's
    input with :meth:`normalize` only; a zfnet run's folder (its configuration, metrics, snapshots) is
    :attr:`run`.

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
    _folder: Run | None = field(default=None, repr=False, compare=False)

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
    def run(self) -> Run | None:
        """The run folder this model was loaded from (its configuration, metrics, snapshots); None for a
        model zfnet did not train."""
        if not self.is_run:
            return None
        if self._folder is None:
            self._folder = Run(self.root)
        return self._folder

    @property
    def model_device(self) -> torch.device:
        """Where the model's parameters are (the CPU for a model without any)."""
        first = next(self.model.parameters(), None)
        return first.device if first is not None else torch.device("cpu")

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
    """Load a run directory's model (``best``, ``last`` or ``epoch-N`` weights) for inference, with its
    preprocessing; every file checked against the others (:func:`~zfnet.train.checkpoint.read_run`).

    A path to a ``.safetensors`` file inside a run is accepted too.

    Raises:
        CheckpointError: not a run directory, its files are missing or unreadable, or they disagree.

    Example:
        >>> loaded = load_run("runs/zfnet")  # doctest: +SKIP
        >>> loaded.run.snapshots, loaded.input_size  # doctest: +SKIP
        ([1, 2, 5, 10, 20], 112)
    """
    parts = read_run(run, weights)
    return LoadedRun(parts.root, parts.model, parts.mean, parts.classes, parts.class_names, parts.metadata,
                     weights=parts.weights)


def architecture_name(metadata: dict[str, Any]) -> str:
    """A model's name with any options, from a weights file's metadata: ``zfnet (removed=fc6/fc7)``."""
    name = str(metadata.get("model", "unknown"))
    options = metadata.get("model_options") or {}
    if options:
        name += " (" + ", ".join(f"{k}={_short(v)}" for k, v in sorted(options.items())) + ")"
    return name


def _short(value: Any) -> str:
    if isinstance(value, (list, tuple)):
        return "/".join(str(v) for v in value)
    return str(value)


def training_config(out: str | Path, *, resume: bool = False, config_file: str | Path | None = None,
                    options: dict[str, Any] | None = None,
                    model_options: dict[str, Any] | None = None) -> TrainConfig:
    """The configuration ``zfnet train`` runs with: the defaults, then (with ``resume``) the run's saved
    configuration, then a TOML/JSON file, then ``options`` (given flags); every value checked, the model's
    configuration too (not built), before anything is read or written.

    Args:
        out: the run directory.
        resume: continue the run in ``out``: its saved options are the base, and its model, model options,
            data, seed and layout cannot change.
        config_file: a file of training options.
        options: training options (``epochs``, ``lr``, ``data`` ...; None values are ignored).
        model_options: changes to the model's options (``removed``, ``fc``, ``conv345``, ``dropout``).

    Raises:
        ZFNetError: not resumable, no data folder, a change that resume forbids, or a bad value.
    """
    out = Path(out)
    values: dict[str, Any] = {}
    saved: dict[str, Any] | None = None
    files = RunFiles(out)
    if resume:
        check_resumable(out)  # a missing folder or one that is not a run: say so, not "--data is required"
        if files.config.is_file():
            saved = load_run_config(files.config).to_json()  # every saved option checked by type and range
            values.update(saved)
    if config_file is not None:
        values.update(load_config_file(config_file))
    values.update({k: v for k, v in (options or {}).items() if v is not None})
    if isinstance(values.get("data"), (str, Path)):
        # Stored resolved: the run resumes from any working directory, and --data may be given either way.
        values["data"] = str(Path(values["data"]).expanduser().resolve())
    merged = dict(check_value(values.get("model_options", {}), dict[str, Any], "model_options",
                              what="training option"))
    given = {k: v for k, v in (model_options or {}).items() if v is not None}
    if isinstance(given.get("conv345"), (list, tuple)) and len(given["conv345"]) != 3:
        raise ZFNetError(f"--conv-widths takes 3 widths (conv3,conv4,conv5), got {len(given['conv345'])}")
    merged.update(given)
    values["model_options"] = merged
    values["out"] = str(out.expanduser().resolve())
    if "data" not in values:
        raise ZFNetError("--data is required (the folder with train/ and val/)")
    if saved is not None:
        if isinstance(saved.get("data"), str):
            saved = {**saved, "data": str(Path(saved["data"]).expanduser().resolve())}
        for key in FIXED_ON_RESUME:
            if key in saved and values.get(key) != saved[key]:
                raise ZFNetError(f"{out} was trained with {key}={saved[key]!r}; --resume cannot change it "
                                 f"to {values.get(key)!r}")
    return TrainConfig.from_json(values)
