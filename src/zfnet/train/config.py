"""Training configuration: the paper's recipe (§3) as defaults.

SGD with mini-batches of 128, learning rate 1e-2, momentum 0.9, dropout 0.5 in fc6 and fc7,
weights N(0, 1e-2), biases 0, conv filters renormalised to RMS 0.1 after each step, each training
image seen as one of its ten crops (4 corners and the centre, each mirrored or not), the learning
rate divided by 10 when the validation error stops improving (the paper did this by hand; here a
plateau of ``lr_patience`` epochs triggers it, once the error has left chance level, and every change
is logged). The paper states no
weight decay; 5e-4 is Krizhevsky et al.'s, which ZFNet's recipe follows.
"""

from __future__ import annotations

import json
import tomllib
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from .._validate import check_fields, check_value, from_mapping, limits
from ..data.folders import LAYOUTS
from ..data.transforms import TRAIN_CROPS
from ..errors import ZFNetError
from ..models import model_config

__all__ = ["TrainConfig", "load_config_file", "PAPER_SNAPSHOTS", "MAX_EPOCHS", "MAX_BATCH_SIZE", "MAX_WORKERS",
           "MAX_THREADS"]

PAPER_SNAPSHOTS = (1, 2, 5, 10, 20, 30, 40, 64)  # the epochs of the paper's Fig. 4

# Upper bounds of the recipe's numbers (the paper trains 70 epochs of batch 128).
MAX_EPOCHS = 10_000
MAX_BATCH_SIZE = 65_536
MAX_WORKERS = 256
MAX_THREADS = 1024
_MAX_SEED = 2**63 - 1
_DEVICES = ("auto", "cpu", "cuda", "cuda:N")


@dataclass
class TrainConfig:
    """Everything a training run depends on; written to ``RUN/config.json``.

    Every field is checked by type and range when the config is made (see :mod:`zfnet._validate`),
    and ``model_options`` by building the model's configuration (not the model): a wrong type, a
    non-finite or out-of-range number, or a model over the parameter limit is a
    :class:`~zfnet.errors.ZFNetError` before anything is read or written.

    Attributes:
        data: the data set's folder (``train/`` and ``val/`` inside).
        out: the run directory.
        model: a name from :func:`zfnet.models.list_models`.
        model_options: overrides of the model's config (``removed``, ``fc``, ``conv345``, ...).
        layout: data layout: ``auto``, ``folders`` or ``imagenet``.
        epochs: epochs to train in total, 1 to 10000.
        batch_size: images per SGD step, over all processes, 1 to 65536.
        lr, momentum, weight_decay: SGD's: lr in (0, 10], momentum in [0, 1), weight decay in [0, 1].
        max_filter_rms: radius of the filter renormalisation (0 turns it off), at most 1000.
        lr_factor, lr_patience, min_lr: the plateau schedule on validation top-1 error.
        snapshots: epochs at which the weights are kept (for the feature-evolution figure).
        seed: seeds initialisation, data order, crops and dropout; 0 to 2**63 - 1.
        workers: DataLoader worker processes (None: from the cores free when the run starts, see
            :mod:`zfnet.cores`), at most 256.
        cache: keep decoded images in memory: ``auto``, ``memory`` or ``none``.
        device: ``auto``, ``cpu``, ``cuda`` or ``cuda:N``.
        channels_last: channels-last memory format (None: on CPU and CUDA, where it is faster).
        train_crops: the crop each training image is seen through: ``ten``, one of the paper's ten
            crops at random (§3), or ``random``, a crop at any offset, mirrored half the time
            (Krizhevsky et al.'s). None: ``ten`` for a new run; on resume, the run's own, and
            ``random`` for a run saved before this option existed (it took those). The run's
            ``config.json`` holds the value used.
        threads: torch's intra-op threads, at most 1024. None: for a new run, a count set with
            ``torch.set_num_threads``, else ``OMP_NUM_THREADS``, else one from the cores free when it
            starts (:mod:`zfnet.cores`); on resume, the run's own (the count torch has for a run saved
            before this option), since the count changes how torch rounds its sums. ``config.json``
            holds the value used.
    """

    data: str
    out: str
    model: str = "zfnet"
    model_options: dict[str, Any] = field(default_factory=dict)
    layout: str = field(default="auto", metadata=limits(choices=LAYOUTS))
    epochs: int = field(default=70, metadata=limits(1, MAX_EPOCHS))
    batch_size: int = field(default=128, metadata=limits(1, MAX_BATCH_SIZE))
    lr: float = field(default=1e-2, metadata=limits(0, 10, low_open=True))
    momentum: float = field(default=0.9, metadata=limits(0, 1, high_open=True))
    weight_decay: float = field(default=5e-4, metadata=limits(0, 1))
    max_filter_rms: float = field(default=0.1, metadata=limits(0, 1000))
    lr_factor: float = field(default=0.1, metadata=limits(0, 1, low_open=True, high_open=True))
    lr_patience: int = field(default=3, metadata=limits(0, MAX_EPOCHS))
    min_lr: float = field(default=1e-6, metadata=limits(0, 10))
    snapshots: tuple[int, ...] = field(default=PAPER_SNAPSHOTS, metadata=limits(1, MAX_EPOCHS, max_items=MAX_EPOCHS))
    seed: int = field(default=0, metadata=limits(0, _MAX_SEED))
    workers: int | None = field(default=None, metadata=limits(0, MAX_WORKERS))
    cache: str = field(default="auto", metadata=limits(choices=("auto", "memory", "none")))
    device: str = field(default="auto", metadata=limits(choices=_DEVICES, pattern=r"auto|cpu|cuda(:[0-9]{1,3})?"))
    channels_last: bool | None = None
    train_crops: str | None = field(default=None, metadata=limits(choices=TRAIN_CROPS))
    threads: int | None = field(default=None, metadata=limits(1, MAX_THREADS))

    def __post_init__(self) -> None:
        check_fields(self, "training option")
        # The model's configuration, checked without building the model (the class count comes
        # from the data; one class here, the data's when the run builds it).
        model_config(self.model, num_classes=1, options=self.model_options)

    def to_json(self) -> dict[str, Any]:
        d = asdict(self)
        d["snapshots"] = list(self.snapshots)
        return d

    @classmethod
    def from_json(cls, d: Any, *, source: str | None = None) -> TrainConfig:
        """A config from parsed JSON or TOML (a dict of option name -> value), every value checked.

        Raises:
            ZFNetError: not an object, unknown or missing options, or a value of the wrong type or range.
        """
        return from_mapping(cls, d, "training option", source=source)


def load_config_file(path: str | Path) -> dict[str, Any]:
    """Read a TOML or JSON config file into a dict of option name -> value.

    Keys may use dashes or underscores (``batch-size`` or ``batch_size``). The values are checked
    when the :class:`TrainConfig` is made from them.

    Raises:
        ZFNetError: a missing, unreadable or malformed file, or one that is not a table of options.
    """
    path = Path(path)
    if path.is_dir():
        raise ZFNetError(f"config file {path} is a directory")
    if not path.is_file():
        raise ZFNetError(f"config file {path} does not exist")
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise ZFNetError(f"config file {path} is not UTF-8 text") from None
    try:
        if path.suffix.lower() == ".json":
            raw = json.loads(text)
        else:
            raw = tomllib.loads(text)
    except (json.JSONDecodeError, tomllib.TOMLDecodeError, RecursionError) as err:
        raise ZFNetError(f"config file {path} is not valid {path.suffix.lstrip('.').upper() or 'TOML'}: "
                         f"{str(err).splitlines()[0] if str(err) else type(err).__name__}") from None
    raw = check_value(raw, dict[str, Any], str(path), what="config file")
    out: dict[str, Any] = {}
    for key, value in raw.items():
        name = key.replace("-", "_")
        if name in out:
            raise ZFNetError(f"config file {path} gives {name} twice (as {name} and with dashes)")
        out[name] = value
    return out
