"""Training configuration: the paper's recipe (§3) as defaults.

SGD with mini-batches of 128, learning rate 1e-2, momentum 0.9, dropout 0.5 in fc6 and fc7,
weights N(0, 1e-2), biases 0, conv filters renormalised to RMS 0.1 after each step, the learning
rate divided by 10 when the validation error stops improving (the paper did this by hand; here a
plateau of ``lr_patience`` epochs triggers it, once the error has left chance level, and every change
is logged). The paper states no
weight decay; 5e-4 is Krizhevsky et al.'s, which ZFNet's recipe follows.
"""

from __future__ import annotations

import json
import tomllib
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from ..errors import ZFNetError

__all__ = ["TrainConfig", "load_config_file", "PAPER_SNAPSHOTS"]

PAPER_SNAPSHOTS = (1, 2, 5, 10, 20, 30, 40, 64)  # the epochs of the paper's Fig. 4


@dataclass
class TrainConfig:
    """Everything a training run depends on; written to ``RUN/config.json``.

    Attributes:
        data: the data set's folder (``train/`` and ``val/`` inside).
        out: the run directory.
        model: a name from :func:`zfnet.models.list_models`.
        model_options: overrides of the model's config (``removed``, ``fc``, ``conv345``, ...).
        layout: data layout: ``auto``, ``folders`` or ``imagenet``.
        epochs: epochs to train in total.
        batch_size: images per SGD step, over all processes.
        lr, momentum, weight_decay: SGD's.
        max_filter_rms: radius of the filter renormalisation (0 turns it off).
        lr_factor, lr_patience, min_lr: the plateau schedule on validation top-1 error.
        snapshots: epochs at which the weights are kept (for the feature-evolution figure).
        seed: seeds initialisation, data order, crops and dropout.
        workers: DataLoader worker processes (None: cores - 1).
        cache: keep decoded images in memory: ``auto``, ``memory`` or ``none``.
        device: ``auto``, ``cpu`` or ``cuda``.
        channels_last: channels-last memory format (None: on CPU and CUDA, where it is faster).
    """

    data: str
    out: str
    model: str = "zfnet"
    model_options: dict[str, Any] = field(default_factory=dict)
    layout: str = "auto"
    epochs: int = 70
    batch_size: int = 128
    lr: float = 1e-2
    momentum: float = 0.9
    weight_decay: float = 5e-4
    max_filter_rms: float = 0.1
    lr_factor: float = 0.1
    lr_patience: int = 3
    min_lr: float = 1e-6
    snapshots: tuple[int, ...] = PAPER_SNAPSHOTS
    seed: int = 0
    workers: int | None = None
    cache: str = "auto"
    device: str = "auto"
    channels_last: bool | None = None

    def __post_init__(self) -> None:
        self.snapshots = tuple(int(e) for e in self.snapshots)
        checks = [
            (self.epochs >= 1, f"epochs must be at least 1, got {self.epochs}"),
            (self.batch_size >= 1, f"batch size must be at least 1, got {self.batch_size}"),
            (self.lr > 0, f"learning rate must be positive, got {self.lr}"),
            (0 <= self.momentum < 1, f"momentum must be in [0, 1), got {self.momentum}"),
            (self.weight_decay >= 0, f"weight decay must be >= 0, got {self.weight_decay}"),
            (self.max_filter_rms >= 0, f"max filter RMS must be >= 0, got {self.max_filter_rms}"),
            (0 < self.lr_factor < 1, f"lr factor must be in (0, 1), got {self.lr_factor}"),
            (self.lr_patience >= 0, f"lr patience must be >= 0, got {self.lr_patience}"),
            (self.cache in ("auto", "memory", "none"), f"cache must be auto, memory or none, got {self.cache!r}"),
            (self.workers is None or self.workers >= 0, f"workers must be >= 0, got {self.workers}"),
        ]
        for ok, message in checks:
            if not ok:
                raise ZFNetError(message)

    def to_json(self) -> dict[str, Any]:
        d = asdict(self)
        d["snapshots"] = list(self.snapshots)
        return d

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> TrainConfig:
        valid = {f.name for f in fields(cls)}
        unknown = sorted(set(d) - valid)
        if unknown:
            raise ZFNetError(f"unknown training option(s) {unknown}; valid: {', '.join(sorted(valid))}")
        return cls(**d)


def load_config_file(path: str | Path) -> dict[str, Any]:
    """Read a TOML or JSON config file into a dict of option name -> value.

    Keys may use dashes or underscores (``batch-size`` or ``batch_size``).
    """
    path = Path(path)
    if not path.is_file():
        raise ZFNetError(f"config file {path} does not exist")
    text = path.read_text(encoding="utf-8")
    try:
        if path.suffix.lower() == ".json":
            raw = json.loads(text)
        else:
            raw = tomllib.loads(text)
    except (json.JSONDecodeError, tomllib.TOMLDecodeError) as err:
        raise ZFNetError(f"config file {path} is not valid {path.suffix.lstrip('.').upper()}: {err}") from err
    if not isinstance(raw, dict):
        raise ZFNetError(f"config file {path} must hold a table of options")
    return {k.replace("-", "_"): v for k, v in raw.items()}
