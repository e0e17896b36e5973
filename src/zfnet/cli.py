"""The ``zfnet`` command line: argument parsing only; each command calls one library function.

Errors in what the user gave (a missing path, an unknown model, an impossible size, a crafted
checkpoint, an output folder another process is writing) print one line and exit with status 2; a
diverged training run exits with status 1.

Every command that writes a folder holds that folder's lock (:func:`zfnet._io.folder_lock`) while it
runs: ``train``, ``demo``, ``data synth`` and ``report`` take it in their library function, the others
in :func:`main`.
"""

from __future__ import annotations

import argparse
import dataclasses
import io
import logging
import math
import sys
import typing
from pathlib import Path
from typing import Any

from . import __version__
from ._io import atomic_write_json, folder_lock
from ._validate import Limits, check_value, field_limits
from .data.synthetic import write_synthetic
from .distributed import is_main_process, left_process_group, resolve_device
from .errors import TrainingDiverged, ZFNetError
from .experiments import COMMANDS, STUDIES, experiment
from .experiments.base import CLI, HELP, ModelSource, hints, read_config_file
from .models import list_models, model_info, parameter_count
from .models.convnet import ConvNetConfig
from .report import build_report
from .train import TrainConfig, evaluate_runs, train
from .train.external import DEFAULT_INPUT_SIZE, NORMALIZATIONS, load_run_or_model
from .train.run import training_config

__all__ = ["main", "build_parser"]

log = logging.getLogger("zfnet")


class _Parser(argparse.ArgumentParser):
    """An ArgumentParser whose errors are one line: ``zfnet train: error: ... (see --help)``.

    Flags are never abbreviated (``--epoch`` is not ``--epochs``), and a command's unknown flag is reported
    by that command's parser, whose help lists the valid ones.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs["allow_abbrev"] = False
        super().__init__(*args, **kwargs)

    def parse_known_args(self, args: Any = None, namespace: Any = None) -> Any:  # type: ignore[override]
        namespace, extras = super().parse_known_args(args, namespace)
        if extras and self._subparsers is None:  # a command's own parser: the unknown flag is its error
            self.error(f"unrecognized arguments: {' '.join(extras)}")
        return namespace, extras

    file_tokens: tuple[Path, list[str]] | None = None  # while a --config file's options are parsed

    def error(self, message: str) -> None:  # type: ignore[override]
        where = ""
        if _Parser.file_tokens is not None:  # a flag the file gave: name the file
            path, tokens = _Parser.file_tokens
            if any(t.split("=", 1)[0] in message for t in tokens if t.startswith("--")):
                where = f" in {path}"
        self.exit(2, f"{self.prog}: error: {message}{where} (see {self.prog} --help)\n")


class _Formatter(argparse.ArgumentDefaultsHelpFormatter, argparse.RawDescriptionHelpFormatter):
    def _get_help_string(self, action: argparse.Action) -> str | None:
        # A None default means "not given": the help text says what happens then. A help text that
        # states its default already gets no second one.
        if action.default is None or action.default is False or "(default:" in (action.help or ""):
            return action.help
        return super()._get_help_string(action)


class _Checked:
    """An argparse type: the text read as an int, a float, a string or a comma-separated list of them,
    then checked by zfnet's one validator (:func:`zfnet._validate.check_value`: finite, in range).

    ``_Checked(int, 1, 100)`` gives its own limits; ``_Checked.of("TrainConfig", "epochs")`` takes a
    config field's type and limits, so a flag and a config file refuse the same values alike.
    """

    def __init__(self, kind: type, low: float | None = None, high: float | None = None, *, low_open: bool = False,
                 high_open: bool = False, csv: bool = False) -> None:
        self.kind, self.csv, self.field, self.each = kind, csv, None, False
        self.bounds = (low, high, low_open, high_open)
        self.__name__ = getattr(kind, "__name__", "value")

    @classmethod
    def of(cls, config: str, name: str, *, each: bool = False) -> _Checked:
        """The flag of field ``name`` of ``config``; ``each``: one item of a list field (``--fc-width``)."""
        flag = cls(str)
        flag.field = (config, name)
        flag.each = each
        return flag

    def _resolve(self) -> tuple[type, bool, Any]:

        if self.field is None:
            return self.kind, self.csv, Limits(*self.bounds)
        from dataclasses import fields


        cls = {"TrainConfig": TrainConfig, "ConvNetConfig": ConvNetConfig}[self.field[0]]
        hint = typing.get_type_hints(cls)[self.field[1]]
        limit = field_limits(next(f for f in fields(cls) if f.name == self.field[1])) or Limits()
        args = [a for a in typing.get_args(hint) if a is not type(None) and a is not Ellipsis]
        if typing.get_origin(hint) is tuple:
            return args[0], not self.each, limit
        return (args[0] if args else hint), False, limit

    @property
    def limits(self) -> Any:
        return self._resolve()[2]

    @property
    def value_type(self) -> type:
        """The type of the value (of each value of a list)."""
        return self._resolve()[0]

    def __call__(self, text: str) -> Any:

        kind, csv, limit = self._resolve()
        word = {int: "whole number", float: "number"}.get(kind, "value")
        parts = [v.strip() for v in text.split(",") if v.strip()] if csv else [text.strip()]
        if not parts:
            raise argparse.ArgumentTypeError(f"expected at least one {word}")
        try:
            values = [kind(v) for v in parts]
        except ValueError:
            many = "comma-separated " if csv else "a "
            raise argparse.ArgumentTypeError(f"expected {many}{word}{'s' if csv else ''}, got {text!r}") from None
        try:
            return check_value(tuple(values) if csv else values[0], tuple[kind, ...] if csv else kind, "",
                               what="", limit=limit)
        except ZFNetError as err:
            raise argparse.ArgumentTypeError(str(err).strip()) from None


# Upper bounds of the flags that are not config fields. Counts of images, splits and the like allocate
# nothing in proportion; sizes that do (batches, occluders, grids, top-k) have bounds of their own.
_MAX_COUNT = 1_000_000_000
_MAX_SEED = 2**63 - 1
_MAX_BATCH = 65_536
_MAX_WORKERS = 256
_MAX_SIDE = 2048


def _csv_names(text: str) -> tuple[str, ...]:
    return tuple(v.strip() for v in text.split(",") if v.strip())


_positive_int = _Checked(int, 1, _MAX_COUNT)
_seed = _Checked(int, 0, _MAX_SEED)
_workers = _Checked(int, 0, _MAX_WORKERS)
_batch = _Checked(int, 1, _MAX_BATCH)


_input_size = _Checked(int, 16, _MAX_SIDE)  # zfnet.train.external.INPUT_SIZES, which checks it again


def _rgb(text: str) -> tuple[float, float, float]:

    try:
        values = tuple(float(v) for v in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected three comma-separated numbers (R,G,B), got {text!r}") from None
    if len(values) != 3 or not all(math.isfinite(v) for v in values):
        raise argparse.ArgumentTypeError(f"expected three finite numbers (R,G,B), got {text!r}")
    return values  # type: ignore[return-value]


def _model_flags(p: argparse.ArgumentParser, run_help: str) -> None:
    """The positional run and, instead of it, a model zfnet did not train (--model and its options)."""

    p.add_argument("run", type=Path, nargs="?", default=None, help=f"{run_help}; or give --model instead")
    p.add_argument("--weights", default=None,
                   help="a run's weights: best, last or epoch-N (default: best); with --model, a .safetensors "
                   "file or a torch.save state dict (read with weights_only=True; default: the factory's own)")
    g = p.add_argument_group("a model zfnet did not train (instead of a run; see docs/own-model.md)")
    g.add_argument("--model", default=None, metavar="SPEC",
                   help="FILE.py:FACTORY or package.module:FACTORY; the factory is called with no arguments "
                   "and returns the nn.Module")
    g.add_argument("--input-size", type=_input_size, default=None, metavar="N",
                   help=f"the model's input side in pixels; images are resized to N*256/224 and centre-cropped "
                   f"to N (default: {DEFAULT_INPUT_SIZE})")
    g.add_argument("--normalize", default=None, choices=tuple(NORMALIZATIONS),
                   help="the model's input normalisation, a preset: imagenet (mean 0.485,0.456,0.406, std "
                   "0.229,0.224,0.225) or unit (pixels / 255) (default: imagenet)")
    g.add_argument("--mean", type=_rgb, default=None, metavar="R,G,B",
                   help="per-channel input mean on the 0-1 scale, with --std (instead of --normalize)")
    g.add_argument("--std", type=_rgb, default=None, metavar="R,G,B",
                   help="per-channel input standard deviation on the 0-1 scale, with --mean")
    g.add_argument("--classes", type=Path, default=None, metavar="FILE",
                   help="the model's class names, one a line in output order (default: the data set's class "
                   "folders where the command reads one, else class_0, class_1, ...)")


def _loaded(args: argparse.Namespace, data: Path | None = None, split: str = "val"):
    """The run or model that the command's arguments name (see zfnet.train.external.load_run_or_model)."""

    return load_run_or_model(args.run, weights=args.weights, model=args.model, input_size=args.input_size,
                             mean=args.mean, std=args.std, normalize=args.normalize, classes=args.classes,
                             data=data, split=split)


# Training flags: (flag, config field, type, help). Their defaults come from TrainConfig, so the
# parser leaves them unset (None) and a --config file or the saved run can fill them in.
_TRAIN_FLAGS: list[tuple[str, str, Any, str]] = [
    ("--epochs", "epochs", _Checked.of("TrainConfig", "epochs"), "epochs to train in total"),
    ("--batch-size", "batch_size", _Checked.of("TrainConfig", "batch_size"), "images per SGD step, over all processes"),
    ("--lr", "lr", _Checked.of("TrainConfig", "lr"), "initial learning rate"),
    ("--momentum", "momentum", _Checked.of("TrainConfig", "momentum"), "SGD momentum"),
    ("--weight-decay", "weight_decay", _Checked.of("TrainConfig", "weight_decay"),
     "L2 weight decay on weights (not biases)"),
    ("--max-filter-rms", "max_filter_rms", _Checked.of("TrainConfig", "max_filter_rms"),
     "renormalise conv filters whose RMS exceeds this (0: off)"),
    ("--lr-factor", "lr_factor", _Checked.of("TrainConfig", "lr_factor"),
     "multiply the learning rate by this on a plateau"),
    ("--lr-patience", "lr_patience", _Checked.of("TrainConfig", "lr_patience"),
     "epochs without improvement of val top-1 error before the lr drops"),
    ("--snapshots", "snapshots", _Checked.of("TrainConfig", "snapshots"),
     "epochs whose weights are kept (feature evolution)"),
    ("--seed", "seed", _Checked.of("TrainConfig", "seed"), "seed of initialisation, data order, crops and dropout"),
    ("--workers", "workers", _Checked.of("TrainConfig", "workers"),
     "data loading processes (default: from the cores free when training starts)"),
    ("--threads", "threads", _Checked.of("TrainConfig", "threads"),
     "torch's threads (default: OMP_NUM_THREADS, else from the cores free; a resumed run keeps its own)"),
    ("--cache", "cache", _Checked.of("TrainConfig", "cache"), "keep decoded images in memory: auto, memory or none"),
    ("--device", "device", _Checked.of("TrainConfig", "device"), "auto, cpu, cuda or cuda:N"),
    ("--layout", "layout", _Checked.of("TrainConfig", "layout"), "data layout: auto, folders or imagenet"),
    ("--train-crops", "train_crops", _Checked.of("TrainConfig", "train_crops"),
     "training crops: ten (one of the paper's 10 crops at random) or random (any offset, flipped half the "
     "time) (default: ten for a new run; with --resume, the run's own)"),
]


_GENERATED_COMMANDS = (*COMMANDS, "demo")
"""Top-level commands whose flags come from their experiment's ``Config`` (see zfnet.experiments.base)."""
_GENERATED_STUDIES: tuple[str, ...] = STUDIES
"""``zfnet experiment`` actions whose flags come from their experiment's ``Config``."""


class _FieldType(_Checked):
    """The argparse type of one config field: parsed, then checked by the field's own limits."""

    def __init__(self, kind: type, limit: Any, csv: bool) -> None:
        super().__init__(kind, csv=csv)
        self._limit = limit

    def _resolve(self) -> tuple[type, bool, Any]:
        return self.kind, self.csv, self._limit


def _field_flag(group: Any, f: Any, hint: Any) -> None:
    """Add the flag of config field ``f`` (type hint ``hint``) to ``group``; its default is the field's."""


    meta = f.metadata.get(CLI, {})
    if not meta.get("show", True):
        return
    limit = field_limits(f) or Limits()
    args = [a for a in typing.get_args(hint) if a is not type(None)]
    if typing.get_origin(hint) is not tuple and args:
        hint = args[0]  # X | None, or the first of a union (--maps N for maps: int | tuple[int, ...] | None)
    default = f.default if f.default is not dataclasses.MISSING else (
        f.default_factory() if f.default_factory is not dataclasses.MISSING else None)
    text = f.metadata.get(HELP, "")
    if default is not False and default not in (None, (), "") and "(default:" not in text:
        shown = ",".join(map(str, default)) if isinstance(default, tuple) else default
        text = f"{text} (default: {shown})"
    name = meta.get("flag") or "--" + f.name.replace("_", "-")
    kwargs: dict[str, Any] = {"dest": f.name, "default": argparse.SUPPRESS, "help": text}
    if meta.get("metavar"):
        kwargs["metavar"] = meta["metavar"]
    if hint is bool:
        kwargs["action"] = "store_true" if default is False else argparse.BooleanOptionalAction
        group.add_argument(name, **kwargs)
        return
    if typing.get_origin(hint) is tuple:
        kind = typing.get_args(hint)[0]
        if meta.get("nargs"):
            kwargs["nargs"] = meta["nargs"]
            item = Limits(limit.low, limit.high, limit.low_open, limit.high_open, choices=limit.choices)
            kwargs["type"] = _FieldType(kind, item, csv=False)
        else:
            kwargs["type"] = _FieldType(kind, limit, csv=True)
    else:
        kwargs["type"] = _FieldType(hint if hint in (int, float, str) else str, limit, csv=False)
        if limit.choices is not None and limit.pattern is None:
            kwargs["choices"] = limit.choices
    if meta.get("positional"):
        kwargs.pop("dest")
        kwargs.setdefault("nargs", "?")  # a list field keeps its own ("+")
        group.add_argument(f.name, **kwargs)
    else:
        group.add_argument(name, **kwargs)


def _experiment_parser(sub: Any, name: str) -> argparse.ArgumentParser:
    """The parser of experiment ``name``: one flag per field of its Config, plus --out, --config, --quiet."""
    from dataclasses import fields


    module = experiment(name)
    p = sub.add_parser(name, help=module.HELP, description=module.DESCRIPTION, formatter_class=_Formatter,
                       allow_abbrev=False)
    p.set_defaults(experiment_module=name)
    types = hints(module.Config)
    # A config that does not read a trained model may still have fields named as ModelSource's (weights, device).
    shared = ModelSource.__dataclass_fields__ if issubclass(module.Config, ModelSource) else {}
    own = [f for f in fields(module.Config) if f.name not in shared]
    source = [f for f in fields(module.Config) if f.name in shared]
    for f in source:
        if f.name == "run":
            _field_flag(p, f, types[f.name])
    if source:
        g = p.add_argument_group("a model zfnet did not train (instead of a run; see docs/own-model.md)")
        for f in source:
            if f.name not in ("run", "device"):
                _field_flag(g if f.name != "weights" else p, f, types[f.name])
    default_out = getattr(module, "DEFAULT_OUT", None)  # an experiment may name a default folder
    p.add_argument("--out", type=Path, required=default_out is None,
                   default=Path(default_out) if default_out else None, help="output folder")
    for f in own:
        _field_flag(p, f, types[f.name])
    for f in source:
        if f.name == "device":
            _field_flag(p, f, types[f.name])
    p.add_argument("--config", type=Path, default=None, metavar="FILE",
                   help="TOML or JSON file of these options (names as the flags', dashes or underscores); flags "
                   "override it")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    return p



def _config_flag(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", type=Path, default=None, metavar="FILE",
                        help="TOML or JSON file of this command's options, named as its flags (ten_crop = true, "
                        "batch_size = 32); flags given on the command line override it")
    parser.set_defaults(_takes_config_file=True)


def _command_parser(parser: argparse.ArgumentParser, argv: list[str]) -> argparse.ArgumentParser | None:
    """The (sub-)parser of the command ``argv`` names (``evaluate``, ``data synth`` ...), or None."""
    current, words = parser, [w for w in argv if not w.startswith("-")]
    for word in words:
        subs = [a for a in current._actions if isinstance(a, argparse._SubParsersAction)]
        if not subs or word not in subs[0].choices:
            break
        current = subs[0].choices[word]
    return current if current is not parser else None


def _config_path(argv: list[str]) -> str | None:
    """The value of ``--config`` in ``argv`` (``--config F`` or ``--config=F``), or None."""
    for i, token in enumerate(argv):
        if token == "--config" and i + 1 < len(argv):
            return argv[i + 1]
        if token.startswith("--config="):
            return token.split("=", 1)[1]
    return None


def _file_options(command: argparse.ArgumentParser, path: str, argv: list[str]) -> list[str]:
    """The options of the config file ``path`` as command-line tokens, for every option not given in ``argv``.

    Keys are the flags' names (``ten_crop`` or ``ten-crop`` for ``--ten-crop``). Each value goes through
    the flag's own parsing and checks, so a file is held to what a flag is; the file is read before the
    command line is checked, so it may give a required option too.
    """
    values = read_config_file(path)
    actions = [a for a in command._actions if a.option_strings and a.dest not in ("help", "config")]
    by_name = {}
    for action in actions:
        by_name[action.dest] = action
        for flag in action.option_strings:
            by_name[flag.lstrip("-").replace("-", "_")] = action
    positional = {a.dest for a in command._actions if not a.option_strings}
    tokens: list[str] = []
    for key, value in values.items():
        name = str(key).replace("-", "_")
        if name in positional:
            raise ZFNetError(f"{path}: {name} is given on the command line, not in a config file")
        action = by_name.get(name)
        if action is None:
            valid = sorted({max(a.option_strings, key=len).lstrip("-").replace("-", "_") for a in actions})
            raise ZFNetError(f"{path}: unknown option {key!r} for {command.prog}; valid: {', '.join(valid)}")
        flags = action.option_strings
        if any(t == f or t.startswith(f + "=") for t in argv for f in flags):
            continue  # given on the command line: the flag wins
        flag = max(flags, key=len)
        if isinstance(action, argparse._StoreTrueAction):
            if not isinstance(value, bool):
                raise ZFNetError(f"{path}: {name} must be true or false, got {value!r}")
            tokens += [flag] if value else []
        elif isinstance(value, (list, tuple)):
            items = [str(v) for v in value]
            tokens += [flag, *items] if action.nargs in ("+", "*") else [f"{flag}={','.join(items)}"]
        elif isinstance(value, (dict, bool)) or value is None:
            raise ZFNetError(f"{path}: {name} must be a number, a string or a list, got {value!r}")
        else:
            tokens.append(f"{flag}={value}")  # one token: a value starting with '-' stays a value
    return tokens


def _cmd_generated(args: argparse.Namespace) -> int:
    """Run a generated experiment command: its Config from --config and the flags, then its run()."""
    from dataclasses import fields


    module = experiment(args.experiment_module)
    values = read_config_file(args.config) if args.config is not None else {}
    given = vars(args)
    values.update({f.name: given[f.name] for f in fields(module.Config) if f.name in given})
    config = module.Config.from_mapping(values, source=str(args.config) if args.config else None)
    result = module.run(config, args.out, show_progress=not args.quiet)
    print(result.summary())
    return 0


def build_parser() -> argparse.ArgumentParser:

    defaults = TrainConfig(data="", out="")
    parser = _Parser(prog="zfnet", description="Zeiler & Fergus (2014) reproduced: train ZFNet and see "
                     "what it has learned.", formatter_class=_Formatter)
    parser.add_argument("--version", action="version", version=f"zfnet {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    sub.required = True

    # data
    p_data = sub.add_parser("data", help="make or inspect data sets", formatter_class=_Formatter)
    data_sub = p_data.add_subparsers(dest="data_command", metavar="ACTION", parser_class=_Parser)
    data_sub.required = True
    p_synth = data_sub.add_parser("synth", help="write the built-in synthetic data set as an image-folder tree",
                                  formatter_class=_Formatter)
    p_synth.add_argument("out", type=Path, help="output folder (train/, val/, masks/, annotations.json)")
    p_synth.add_argument("--classes", type=_Checked(int, 1, 1000), default=10, help="number of classes K")
    p_synth.add_argument("--per-class", type=_Checked(int, 1, 1_000_000), default=100, help="training images per class")
    p_synth.add_argument("--val-per-class", type=_Checked(int, 1, 1_000_000), default=None,
                         help="validation images per class (default: per-class / 5)")
    p_synth.add_argument("--seed", type=_seed, default=0, help="random seed; the same seed gives the same files")
    p_synth.add_argument("--size", type=_Checked(int, 32, 1024), default=128, help="image side in pixels")
    p_synth.add_argument("--set", dest="class_set", default="primary", choices=("primary", "secondary"),
                         help="class set: the secondary set is disjoint from the primary (for transfer)")
    p_synth.add_argument("--overwrite", action="store_true",
                         help="replace the synthetic set already in OUT (only the files zfnet wrote there; "
                         "files you added stay)")
    _config_flag(p_synth)

    # models
    sub.add_parser("models", help="list the available models with their input sizes", formatter_class=_Formatter)

    # train
    p_train = sub.add_parser("train", help="train a model with the paper's recipe", formatter_class=_Formatter,
                             description="Train with the paper's recipe (SGD, batch 128, lr 1e-2, momentum "
                             "0.9, dropout 0.5, filter renormalisation, lr / 10 on plateau). Flags override "
                             "--config, which overrides the defaults. With --resume, the run's saved "
                             "configuration is the base.")
    g = p_train.add_argument_group("run")
    g.add_argument("--data", type=Path, default=None, help="data folder with train/ and val/ (required)")
    g.add_argument("--out", type=Path, required=True, help="run directory")
    g.add_argument("--model", default=None, choices=list_models(), metavar="NAME",
                   help=f"model: {', '.join(list_models())} (default: {defaults.model})")
    g.add_argument("--resume", action="store_true", help="continue the run in --out from its last finished epoch")
    g.add_argument("--config", type=Path, default=None, help="TOML or JSON file of options (flags override it)")
    g.add_argument("--quiet", action="store_true", help="no per-epoch lines, no progress bars")
    g = p_train.add_argument_group("model options (the paper's Table 3 variants)")
    g.add_argument("--remove", type=_csv_names, default=None, help="layers to remove, from conv3,conv4,fc6,fc7")
    g.add_argument("--fc-width", type=_Checked.of("ConvNetConfig", "fc", each=True), default=None,
                   help="width of fc6 and fc7")
    g.add_argument("--conv-widths", type=_Checked.of("ConvNetConfig", "conv345"), default=None,
                   help="maps of conv3,conv4,conv5, e.g. 512,1024,512")
    g.add_argument("--dropout", type=_Checked.of("ConvNetConfig", "dropout"), default=None,
                   help="dropout after fc6 and fc7 (default: 0.5)")
    g = p_train.add_argument_group("recipe")
    for flag, field, typ, text in _TRAIN_FLAGS:
        shown = getattr(defaults, field)
        if isinstance(shown, tuple):
            shown = ",".join(map(str, shown))
        shown = "" if "(default:" in text else f" (default: {shown})"
        g.add_argument(flag, dest=field, type=typ, default=None, help=f"{text}{shown}")

    # evaluate
    p_eval = sub.add_parser("evaluate", help="top-1 / top-5 error of a run, or of an ensemble of runs",
                            formatter_class=_Formatter)
    _model_flags(p_eval, "run directory (or a .safetensors file in one)")
    p_eval.add_argument("--data", type=Path, required=True, help="data folder")
    p_eval.add_argument("--split", default="val", help="split folder to evaluate on")
    p_eval.add_argument("--ten-crop", action="store_true", help="average the softmax of the paper's 10 crops")
    p_eval.add_argument("--ensemble", type=Path, nargs="+", default=[], metavar="RUN",
                        help="more runs: their softmax outputs are averaged with RUN's (Table 2)")
    p_eval.add_argument("--layout", default="auto", choices=("auto", "folders", "imagenet"), help="data layout")
    p_eval.add_argument("--batch-size", type=_batch, default=64, help="images per forward pass")
    p_eval.add_argument("--workers", type=_workers, default=None,
                        help="data loading processes (default: from the cores free)")
    p_eval.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    p_eval.add_argument("--json", type=Path, default=None, help="also write the results to this JSON file")
    _config_flag(p_eval)

    # experiments whose flags are generated from their config dataclasses
    for name in _GENERATED_COMMANDS:
        _experiment_parser(sub, name)

    # experiment: the paper's Tables 2-7, one action each
    p_exp = sub.add_parser("experiment", help="the paper's experiments: ablations, ensembles, transfer, probes",
                           formatter_class=_Formatter)
    exp_sub = p_exp.add_subparsers(dest="experiment_command", metavar="EXPERIMENT", parser_class=_Parser)
    exp_sub.required = True
    # each experiment's flags are generated from its Config
    for name in _GENERATED_STUDIES:
        _experiment_parser(exp_sub, name)

    # report
    p_report = sub.add_parser("report", help="the static HTML report of saved results (recomputes nothing)",
                              formatter_class=_Formatter,
                              description="Build a self-contained static site (open OUT/index.html from the file "
                              "system, no network) from what zfnet's commands saved: run directories, visualize "
                              "output, evaluations and analysis JSON. Folders are searched a few levels down, so "
                              "a demo folder is enough. Re-running updates the report in place.")
    p_report.add_argument("sources", type=Path, nargs="+", metavar="RESULTS",
                          help="demo folders, run directories, visualize or analysis output, or JSON files")
    p_report.add_argument("--out", type=Path, required=True,
                          help="report folder: new, empty, or an earlier report's (required)")
    p_report.add_argument("--title", default=None,
                          help="the report's title (default: the earlier report's in --out, else 'ZFNet report')")
    _config_flag(p_report)

    return parser


def _setup_logging(quiet: bool = False) -> None:
    class _Fmt(logging.Formatter):
        def format(self, record: logging.LogRecord) -> str:
            msg = record.getMessage()
            return f"warning: {msg}" if record.levelno >= logging.WARNING else msg

    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(_Fmt())
    log.handlers[:] = [handler]
    log.setLevel(logging.WARNING if quiet else logging.INFO)
    log.propagate = False


def _cmd_data(args: argparse.Namespace) -> int:

    summary = write_synthetic(args.out, classes=args.classes, per_class=args.per_class,
                              val_per_class=args.val_per_class, seed=args.seed, size=args.size,
                              class_set=args.class_set, overwrite=args.overwrite)
    counts = ", ".join(f"{n} {split}" for split, n in summary.counts.items())
    print(f"wrote {counts} images of {len(summary.classes)} classes to {summary.root}")
    return 0


def _cmd_models(args: argparse.Namespace) -> int:
    print(f"{'name':<14}{'input':>7}{'parameters':>14}  description")
    for name in list_models():
        info = model_info(name)
        print(f"{name:<14}{info.input_size:>7}{parameter_count(name):>14,}  {info.description}")
    return 0


def _cmd_train(args: argparse.Namespace) -> int:
    fc = [args.fc_width, args.fc_width] if args.fc_width is not None else None
    config = training_config(args.out, resume=args.resume, config_file=args.config,
                             options={field: getattr(args, field) for _, field, _, _ in _TRAIN_FLAGS}
                             | {"model": args.model, "data": args.data},
                             model_options={"removed": list(args.remove) if args.remove is not None else None,
                                            "fc": fc, "conv345": args.conv_widths, "dropout": args.dropout})
    print(train(config, resume=args.resume, show_progress=not args.quiet).summary())
    return 0


def _cmd_evaluate(args: argparse.Namespace) -> int:
    # --weights names a file with --model; the --ensemble runs then use their best weights.
    report = evaluate_runs([_loaded(args, args.data, args.split), *args.ensemble], args.data, split=args.split,
                           ten_crop=args.ten_crop, weights="best" if args.model else args.weights or "best",
                           layout=args.layout, workers=args.workers,
                           batch_size=args.batch_size, device=resolve_device(args.device))
    print(report.summary())
    if args.json is not None and is_main_process():  # under torchrun, rank 0 writes
        atomic_write_json(args.json, report.to_json())
        print(f"results written to {args.json}")
    return 0


def _cmd_report(args: argparse.Namespace) -> int:

    index = build_report(args.sources, args.out, title=args.title)
    print(f"report written to {index}")
    return 0


def _cmd_experiment(args: argparse.Namespace) -> int:
    return _cmd_generated(args)  # every study's flags come from its Config (_GENERATED_STUDIES)


_COMMANDS = {"data": _cmd_data, "models": _cmd_models, "train": _cmd_train, "evaluate": _cmd_evaluate,
             "visualize": _cmd_generated, "experiment": _cmd_experiment,
             "occlusion": _cmd_generated, "correspondence": _cmd_generated, "invariance": _cmd_generated,
             "report": _cmd_report, "demo": _cmd_generated}


# Commands whose library function locks its output folder itself (it must first check the folder, as
# train --resume does, or it is also called as a library, as the demo calls write_synthetic).
_LOCK_THEMSELVES = ("train", "demo", "data", "report")


def _output_folder(args: argparse.Namespace) -> Path | None:
    """The folder the command writes, which main holds locked while it runs; None: no folder, or locked inside."""
    if args.command in _LOCK_THEMSELVES or args.command in ("models", "evaluate"):
        return None  # evaluate writes one file (--json), atomically
    out = getattr(args, "out", None)
    return out if isinstance(out, Path) else None


def main(argv: list[str] | None = None) -> int:
    """Run the ``zfnet`` command line; returns the exit status."""
    from contextlib import nullcontext, redirect_stdout


    parser = build_parser()
    argv = list(sys.argv[1:] if argv is None else argv)
    command = _command_parser(parser, argv)
    path = _config_path(argv)
    if command is not None and path is not None and command.get_default("_takes_config_file"):
        try:  # the file's options as the flags the command line lacks, each checked as its flag is
            tokens = _file_options(command, path, argv)
        except ZFNetError as err:
            print(f"{command.prog}: error: {err}", file=sys.stderr)
            return 2
        _Parser.file_tokens = (Path(path), tokens)  # an error in what the file gave names the file
        try:
            args = parser.parse_args(argv + tokens)
        finally:
            _Parser.file_tokens = None
    else:
        args = parser.parse_args(argv)
    # Under torchrun, rank 0 alone speaks: the other ranks log warnings only and print nothing to stdout.
    follower = not is_main_process()
    _setup_logging(getattr(args, "quiet", False) or follower)
    try:
        folder = None if follower else _output_folder(args)  # rank 0 holds the folder for the whole job
        with (folder_lock(folder) if folder is not None else nullcontext()), \
                (redirect_stdout(io.StringIO()) if follower else nullcontext()), left_process_group():
            return _COMMANDS[args.command](args)
    except (ZFNetError, ValueError, OSError) as err:
        # Bad input (ZFNetError and the ValueErrors of argument checks) and file-system refusals
        # (a missing or unwritable path) are the user's to fix: one line, no traceback.
        message = f"{err.strerror}: {err.filename}" if isinstance(err, OSError) and err.filename else err
        print(f"zfnet {args.command}: error: {message}", file=sys.stderr)
        return 2
    except TrainingDiverged as err:
        print(f"zfnet {args.command}: error: {err}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"zfnet {args.command}: interrupted", file=sys.stderr)
        return 130
