"""The one shape of every experiment: a frozen config of checked options, ``run(config, out) -> Result``.

An experiment module (``zfnet.experiments.occlusion``, say) has:

- ``Config``: a frozen dataclass of :func:`option` fields. Each field carries its default, its help
  text and its limits in one place: the library checks them when the config is made (a wrong type
  or range is a :class:`~zfnet.errors.ZFNetError` before anything is read or written), and the
  command line generates its flags from them. A config round-trips through JSON and TOML
  (:meth:`Options.to_json`, :meth:`Options.from_mapping`).
- ``run(config, out, *, loaded=None, show_progress=True) -> Result``: it writes its outputs and the
  resolved config (``OUT/<kind>.config.json``, :func:`write_config`) into ``out``. ``loaded`` is a
  model its caller already loaded (:class:`~zfnet.train.LoadedRun`): an experiment never reloads
  what its caller loaded.
- ``Result``: what it measured and where its files went; :meth:`Result.summary` is the text the
  command line prints.

Configs that read a trained model inherit :class:`ModelSource`: a run directory, or a model zfnet did
not train (``--model FILE.py:FACTORY`` with its input size and normalisation).

Example:
    >>> from dataclasses import dataclass
    >>> @dataclass(frozen=True, kw_only=True)
    ... class Config(Options):
    ...     k: int = option(9, help="top activations per map", low=1, high=1000)
    >>> Config(k=4).to_json()
    {'k': 4}
    >>> Config(k=0)
    Traceback (most recent call last):
    ...
    zfnet.errors.ZFNetError: option k must be a whole number from 1 to 1000, got 0
"""

from __future__ import annotations

import json
import typing
from dataclasses import MISSING, asdict, dataclass, field, fields, replace
from pathlib import Path, PurePath
from typing import Any, ClassVar

from .. import __version__
from .._io import atomic_write_json
from .._validate import MAX_ITEMS, Limits, check_fields, from_mapping, limits
from ..distributed import DistContext, resolve_device, setup
from ..train.config import load_config_file
from ..train.external import load_run_or_model

__all__ = ["option", "Options", "ModelSource", "Result", "write_config", "read_config_file", "hints", "HELP", "CLI",
           "MAX_SEED", "MAX_COUNT", "MAX_BATCH", "MAX_WORKERS", "MAX_SIDE", "DEVICE"]

HELP = "help"
"""Field metadata key of an option's help text."""
CLI = "cli"
"""Field metadata key of how the command line shows an option (``positional``, ``metavar``, ``flag``)."""

MAX_SEED = 2**63 - 1
MAX_COUNT = 1_000_000_000
MAX_BATCH = 65_536
MAX_WORKERS = 256
MAX_SIDE = 2048
DEVICE = limits(choices=("auto", "cpu", "cuda", "cuda:N"), pattern=r"auto|cpu|cuda(:[0-9]{1,3})?")


def option(default: Any = MISSING, *, help: str, default_factory: Any = MISSING, low: float | None = None,
           high: float | None = None, low_open: bool = False, high_open: bool = False,
           choices: tuple[str, ...] | None = None, pattern: str | None = None, max_items: int = MAX_ITEMS,
           positional: bool = False, metavar: str | None = None, flag: str | None = None, nargs: str | None = None,
           cli: bool = True, checked: dict[str, Limits] | None = None) -> Any:
    """A config field with its default, help text and limits (see :mod:`zfnet._validate`).

    Args:
        default, default_factory: as :func:`dataclasses.field`.
        help: one sentence for ``--help``; say what None means where None is the default.
        low, high, low_open, high_open, choices, pattern, max_items: the value's limits.
        positional: the command line takes it as a positional argument.
        metavar, flag: how ``--help`` shows it; ``flag`` replaces the flag's name (``--image``).
        nargs: a list option given as several arguments (``"+"``) instead of one comma-separated one.
        cli: False: not a flag (set by the library, or by another flag).
        checked: limits metadata made elsewhere (``limits(...)``), instead of the keyword limits.
    """
    meta = dict(checked) if checked is not None else limits(low, high, low_open=low_open, high_open=high_open,
                                                            choices=choices, pattern=pattern, max_items=max_items)
    meta[HELP] = help
    meta[CLI] = {"positional": positional, "metavar": metavar, "flag": flag, "nargs": nargs, "show": cli}
    return field(default=default, default_factory=default_factory, metadata=meta)


@dataclass(frozen=True, kw_only=True)
class Options:
    """A frozen, checked set of options: every field is checked by type and limits when it is made.

    A path may be given as a :class:`~pathlib.Path`; it is kept as a string, as JSON and TOML hold it.
    """

    what: ClassVar[str] = "option"

    def __post_init__(self) -> None:
        for f in fields(self):
            value = getattr(self, f.name)
            if isinstance(value, PurePath):
                object.__setattr__(self, f.name, str(value))
            elif isinstance(value, (list, tuple)) and any(isinstance(v, PurePath) for v in value):
                object.__setattr__(self, f.name, tuple(str(v) if isinstance(v, PurePath) else v for v in value))
        check_fields(self, self.what)

    def to_json(self) -> dict[str, Any]:
        """The options as JSON values (tuples become lists)."""
        return json.loads(json.dumps(asdict(self)))

    @classmethod
    def from_mapping(cls, data: Any, *, source: str | None = None):
        """Options from parsed JSON or TOML (names with dashes or underscores), every value checked."""
        if isinstance(data, dict):
            data = {str(k).replace("-", "_"): v for k, v in data.items()}
        return from_mapping(cls, data, cls.what, source=source)

    def replace(self, **changes: Any):
        """A copy with ``changes``, checked again."""
        return replace(self, **changes)

    @classmethod
    def field_help(cls) -> dict[str, str]:
        return {f.name: f.metadata.get(HELP, "") for f in fields(cls)}


_NORMALIZE = ("imagenet", "unit")


@dataclass(frozen=True, kw_only=True)
class ModelSource(Options):
    """Which trained model an experiment reads: a zfnet run directory, or a model zfnet did not train.

    Exactly one of ``run`` and ``model`` is given (checked when the model is loaded, since an
    experiment called with a model its caller loaded needs neither).
    """

    run: str | None = option(None, help="the run directory; or give --model instead", positional=True)
    weights: str | None = option(None, help="a run's weights: best, last or epoch-N (default: best); with --model, "
                                 "a .safetensors file or a torch.save state dict (read with weights_only=True; "
                                 "default: the factory's own)")
    model: str | None = option(None, metavar="SPEC", help="a model zfnet did not train, instead of a run: "
                               "FILE.py:FACTORY or package.module:FACTORY (called with no arguments, it returns "
                               "the nn.Module; see docs/own-model.md)")
    input_size: int | None = option(None, low=16, high=MAX_SIDE, metavar="N",
                                    help="with --model: its input side in pixels; images are resized to N*256/224 "
                                    "and centre-cropped to N (default: 224)")
    normalize: str | None = option(None, choices=_NORMALIZE,
                                   help="with --model: its input normalisation, a preset: imagenet (mean "
                                   "0.485,0.456,0.406, std 0.229,0.224,0.225) or unit (pixels / 255) "
                                   "(default: imagenet)")
    mean: tuple[float, float, float] | None = option(None, metavar="R,G,B", low=-1e6, high=1e6,
                                                     help="with --model: per-channel input mean on the 0-1 "
                                                     "scale, with --std (instead of --normalize)")
    std: tuple[float, float, float] | None = option(None, metavar="R,G,B", low=0, high=1e6, low_open=True,
                                                    help="with --model: per-channel input standard deviation on "
                                                    "the 0-1 scale, with --mean")
    classes: str | None = option(None, metavar="FILE", help="with --model: its class names, one a line in output "
                                 "order (default: the data set's class folders where the experiment reads one, "
                                 "else class_0, class_1, ...)")
    device: str = option("auto", checked=DEVICE, help="where to compute: auto, cpu, cuda or cuda:N")

    def load(self, *, data: str | Path | None = None, split: str = "val"):
        """The run or model these options name, loaded (see :func:`zfnet.train.load_run_or_model`)."""
        loaded = load_run_or_model(self.run, weights=self.weights, model=self.model, input_size=self.input_size,
                                   mean=self.mean, std=self.std, normalize=self.normalize, classes=self.classes,
                                   data=data, split=split)
        loaded.model.to(self.resolved_device())
        return loaded

    def resolved_device(self):
        """``device`` as a :class:`torch.device` (``auto``: CUDA where there is one; under ``torchrun``,
        this process's GPU)."""
        return resolve_device(self.device)

    def context(self) -> DistContext:
        """This process's place in a ``torchrun`` job (joining its process group), or a one-process context."""
        return setup(self.device)


@dataclass
class Result:
    """What an experiment measured and wrote.

    Attributes:
        out: the folder it wrote (None: it wrote nothing).
        numbers: everything it measured, as written to ``OUT/<kind>.json``.
        files: what it wrote, by role (``json``, ``markdown``, ``csv``, ``config``, figures ...).
    """

    kind: ClassVar[str] = "result"

    out: Path | None
    numbers: dict[str, Any] = field(default_factory=dict)
    files: dict[str, Path] = field(default_factory=dict)

    def lines(self) -> list[str]:
        """The result in a few lines of text (an experiment overrides this)."""
        report = self.numbers.get("report") or {}
        return [report["summary"]] if report.get("summary") else []

    def summary(self) -> str:
        """What the command line prints: the result in a few lines, then where its files went."""
        lines = self.lines()
        if self.out is not None:
            lines.append(f"results in {self.out}")
        return "\n".join(lines)

    def __getitem__(self, key: str) -> Any:
        return self.numbers[key]


def write_config(out: str | Path, kind: str, config: Options, **resolved: Any) -> Path:
    """Write ``OUT/<kind>.config.json``: the experiment's options as run, with what it resolved itself
    (a default layer, occluder size ...) under ``resolved``."""
    payload = {"experiment": kind, "zfnet": __version__, "config": config.to_json()}
    if resolved:
        payload["resolved"] = json.loads(json.dumps(resolved, default=str))
    return atomic_write_json(Path(out) / f"{kind}.config.json", payload)


def read_config_file(path: str | Path) -> dict[str, Any]:
    """A TOML or JSON file of options (``--config FILE``), as a dict of names (underscored) to values.

    A file written by :func:`write_config` is accepted too: its ``config`` table is read.

    Raises:
        ZFNetError: a missing, unreadable or malformed file, or one that is not a table of options.
    """
    raw = load_config_file(path)  # the one reader of option files, the training's too
    if isinstance(raw.get("config"), dict) and "experiment" in raw:
        raw = {str(k).replace("-", "_"): v for k, v in raw["config"].items()}
    return raw


def hints(cls: type) -> dict[str, Any]:
    """The resolved type hints of a config class's fields."""
    return typing.get_type_hints(cls)
