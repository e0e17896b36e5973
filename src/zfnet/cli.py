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
import logging
import sys
from pathlib import Path
from typing import Any

__all__ = ["main", "build_parser"]

log = logging.getLogger("zfnet")


class _Parser(argparse.ArgumentParser):
    """An ArgumentParser whose errors are one line: ``zfnet train: error: ... (see --help)``."""

    def error(self, message: str) -> None:  # type: ignore[override]
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


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
        from ._validate import Limits, field_limits

        if self.field is None:
            return self.kind, self.csv, Limits(*self.bounds)
        import typing
        from dataclasses import fields

        from .models.convnet import ConvNetConfig
        from .train.config import TrainConfig

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
        from ._validate import check_value
        from .errors import ZFNetError

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
    import math

    try:
        values = tuple(float(v) for v in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected three comma-separated numbers (R,G,B), got {text!r}") from None
    if len(values) != 3 or not all(math.isfinite(v) for v in values):
        raise argparse.ArgumentTypeError(f"expected three finite numbers (R,G,B), got {text!r}")
    return values  # type: ignore[return-value]


def _model_flags(p: argparse.ArgumentParser, run_help: str) -> None:
    """The positional run and, instead of it, a model zfnet did not train (--model and its options)."""
    from .train.external import DEFAULT_INPUT_SIZE, NORMALIZATIONS

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
    from .train.external import load_run_or_model

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
    ("--workers", "workers", _Checked.of("TrainConfig", "workers"), "data loading processes (default: cores - 1)"),
    ("--cache", "cache", _Checked.of("TrainConfig", "cache"), "keep decoded images in memory: auto, memory or none"),
    ("--device", "device", _Checked.of("TrainConfig", "device"), "auto, cpu, cuda or cuda:N"),
    ("--layout", "layout", _Checked.of("TrainConfig", "layout"), "data layout: auto, folders or imagenet"),
    ("--train-crops", "train_crops", _Checked.of("TrainConfig", "train_crops"),
     "training crops: ten (one of the paper's 10 crops at random) or random (any offset, flipped half the "
     "time) (default: ten for a new run; with --resume, the run's own)"),
]


_GENERATED_COMMANDS = ("occlusion",)
"""Top-level commands whose flags come from their experiment's ``Config`` (see zfnet.experiments.base)."""
_GENERATED_STUDIES: tuple[str, ...] = ()
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
    import dataclasses
    import typing

    from ._validate import Limits, field_limits
    from .experiments.base import CLI, HELP

    meta = f.metadata.get(CLI, {})
    if not meta.get("show", True):
        return
    limit = field_limits(f) or Limits()
    args = [a for a in typing.get_args(hint) if a is not type(None)]
    if typing.get_origin(hint) is not tuple and args and len(args) == 1:
        hint = args[0]
    default = f.default if f.default is not dataclasses.MISSING else (
        f.default_factory() if f.default_factory is not dataclasses.MISSING else None)
    text = f.metadata.get(HELP, "")
    if default not in (None, (), "") and "(default:" not in text:
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
        group.add_argument(f.name, nargs="?", **kwargs)
    else:
        group.add_argument(name, **kwargs)


def _experiment_parser(sub: Any, name: str) -> argparse.ArgumentParser:
    """The parser of experiment ``name``: one flag per field of its Config, plus --out, --config, --quiet."""
    from dataclasses import fields

    from .experiments import experiment
    from .experiments.base import ModelSource, hints

    module = experiment(name)
    p = sub.add_parser(name, help=module.HELP, description=module.DESCRIPTION, formatter_class=_Formatter,
                       allow_abbrev=False)
    p.set_defaults(experiment_module=name)
    types = hints(module.Config)
    own = [f for f in fields(module.Config) if f.name not in ModelSource.__dataclass_fields__]
    source = [f for f in fields(module.Config) if f.name in ModelSource.__dataclass_fields__]
    for f in source:
        if f.name == "run":
            _field_flag(p, f, types[f.name])
    if source:
        g = p.add_argument_group("a model zfnet did not train (instead of a run; see docs/own-model.md)")
        for f in source:
            if f.name not in ("run", "device"):
                _field_flag(g if f.name != "weights" else p, f, types[f.name])
    p.add_argument("--out", type=Path, required=True, help="output folder")
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


def _cmd_generated(args: argparse.Namespace) -> int:
    """Run a generated experiment command: its Config from --config and the flags, then its run()."""
    from dataclasses import fields

    from .experiments import experiment
    from .experiments.base import read_config_file

    module = experiment(args.experiment_module)
    values = read_config_file(args.config) if args.config is not None else {}
    given = vars(args)
    values.update({f.name: given[f.name] for f in fields(module.Config) if f.name in given})
    config = module.Config.from_mapping(values, source=str(args.config) if args.config else None)
    result = module.run(config, args.out, show_progress=not args.quiet)
    print(result.summary())
    return 0


def build_parser() -> argparse.ArgumentParser:
    from . import __version__
    from .models import list_models
    from .train import TrainConfig

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
    p_eval.add_argument("--workers", type=_workers, default=None, help="data loading processes (default: cores - 1)")
    p_eval.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    p_eval.add_argument("--json", type=Path, default=None, help="also write the results to this JSON file")

    # visualize
    p_vis = sub.add_parser("visualize", help="deconvnet figures of a run: top-k projections, filters, evolution",
                           formatter_class=_Formatter,
                           description="The paper's Fig. 2 (top-k projections beside their image patches, per "
                           "layer), the layer-1 filters, Fig. 4 (feature evolution over the run's snapshots) and "
                           "an index.json of every map's top images, positions and values. With --compare, also "
                           "Fig. 6: this run's and another run's layer-1/2 features with dead-filter and "
                           "aliasing figures.")
    _model_flags(p_vis, "run directory")
    p_vis.add_argument("--data", type=Path, required=True, help="data folder")
    p_vis.add_argument("--out", type=Path, required=True, help="output folder for the PNGs and index.json")
    p_vis.add_argument("--layers", type=_csv_names, default=None,
                       help="layers to visualise, comma-separated (default: conv1,...,conv5; for another "
                       "--model, its top-level stages that hold convolutions, e.g. conv1,layer1,...,layer4)")
    p_vis.add_argument("--k", type=_Checked(int, 1, 1000), default=9, help="top activations per feature map")
    p_vis.add_argument("--maps", type=_Checked(int, 1, 4096), default=16,
                       help="feature maps shown per layer, a seeded random subset (default: 16)")
    p_vis.add_argument("--split", default="val", help="split folder whose images are searched")
    p_vis.add_argument("--max-images", type=_positive_int, default=None, help="search only the first N images")
    p_vis.add_argument("--seed", type=_seed, default=0, help="seed of the choice of shown maps")
    p_vis.add_argument("--compare", type=Path, default=None, metavar="RUN_B",
                       help="another run (e.g. AlexNet) for the Fig. 6 comparison")

    # experiments whose flags are generated from their config dataclasses
    for name in _GENERATED_COMMANDS:
        _experiment_parser(sub, name)
    p_corr = sub.add_parser("correspondence", help="correspondence of object parts: Δ per occluded part (Table 1)",
                            formatter_class=_Formatter,
                            description="Occlude the same part (eye, nose) in every annotated image, and random "
                            "regions of the same size, and measure how consistently the features change: "
                            "Δ = mean normalised Hamming distance between the signs of the feature differences "
                            "of pairs of images (the paper's Table 1). Writes correspondence.png and .json.")
    _model_flags(p_corr, "run directory")
    p_corr.add_argument("--data", type=Path, required=True, help="data folder the annotated image paths are in")
    p_corr.add_argument("--out", type=Path, required=True, help="output folder")
    p_corr.add_argument("--annotations", type=Path, default=None,
                        help="part-annotation JSON (default: DATA/annotations.json)")
    p_corr.add_argument("--parts", type=_csv_names, default=("right_eye", "left_eye", "nose"),
                        help="parts to occlude, comma-separated (default: right_eye,left_eye,nose)")
    p_corr.add_argument("--layers", type=_csv_names, default=("conv5", "fc7"),
                        help="layers compared, comma-separated (default: conv5,fc7)")
    p_corr.add_argument("--images", type=_Checked(int, 2, 10_000), default=5,
                        help="annotated images used, a seeded choice")
    p_corr.add_argument("--trials", type=_Checked(int, 1, 10_000), default=10,
                        help="draws of random regions per part (the control)")
    p_corr.add_argument("--split", default="val", help="use images under DATA/SPLIT/ only; 'all' for every one")
    p_corr.add_argument("--seed", type=_seed, default=0, help="seed of the choice of images and random regions")
    p_corr.add_argument("--quiet", action="store_true", help="no progress bars")

    p_inv = sub.add_parser("invariance", help="feature invariance to translation, scale and rotation (Fig. 5)",
                           formatter_class=_Formatter,
                           description="Translate vertically, scale and rotate images; plot the normalised "
                           "distance of the features at two layers to the original's, and P(true class), one "
                           "line per image (the paper's Fig. 5). Writes invariance.png and invariance.json.")
    _model_flags(p_inv, "run directory")
    p_inv.add_argument("--data", type=Path, required=True, help="data folder")
    p_inv.add_argument("--out", type=Path, required=True, help="output folder")
    p_inv.add_argument("--layers", type=_csv_names, default=("conv1", "fc7"),
                       help="layers compared, comma-separated (default: conv1,fc7)")
    p_inv.add_argument("--images", type=_Checked(int, 1, 10_000), default=5,
                       help="images, of different classes where possible")
    p_inv.add_argument("--split", default="val", help="split folder the images come from")
    p_inv.add_argument("--transforms", type=_csv_names, default=("translation", "scale", "rotation"),
                       help="transformations (default: translation,scale,rotation)")
    p_inv.add_argument("--shifts", type=_Checked(float, -_MAX_SIDE, _MAX_SIDE, csv=True), default=None,
                       help="vertical shifts in pixels, e.g. --shifts=-20,0,20 (default: 13 steps up to a "
                       "quarter of the input)")
    p_inv.add_argument("--scales", type=_Checked(float, 0, 100, low_open=True, csv=True), default=None,
                       help="scale factors (default: 1.0,1.1,...,1.8)")
    p_inv.add_argument("--angles", type=_Checked(float, -3600, 3600, csv=True), default=None,
                       help="rotations in degrees (default: 0,10,...,360)")
    p_inv.add_argument("--seed", type=_seed, default=0, help="seed of the choice of images")
    p_inv.add_argument("--quiet", action="store_true", help="no progress bars")

    # experiment: the paper's Tables 2-7, one action each
    p_exp = sub.add_parser("experiment", help="the paper's experiments: ablations, ensembles, transfer, probes",
                           formatter_class=_Formatter)
    exp_sub = p_exp.add_subparsers(dest="experiment_command", metavar="EXPERIMENT", parser_class=_Parser)
    exp_sub.required = True
    # each experiment adds its parser to exp_sub here, and its function to _EXPERIMENTS; generated ones:
    for name in _GENERATED_STUDIES:
        _experiment_parser(exp_sub, name)
    p_tr = exp_sub.add_parser(
        "transfer", help="a new softmax on a run's frozen layers 1-7 vs training from scratch (Tables 4-6)",
        formatter_class=_Formatter,
        description="Caltech protocol (caltech101, caltech256, folders): for each --per-class N and each of "
        "--splits random splits, N training images per class and the rest (capped) for testing; a softmax on "
        "the frozen fc7 features, and the same architecture trained from scratch on the same images. "
        "voc2012: one-vs-all classifiers trained on VOC train, average precision on val. Writes "
        "OUT/transfer.json, .md, .csv and .png beside the paper's Tables 4-6. Run the same command again to "
        "resume an interrupted experiment.")
    _model_flags(p_tr, "the pretrained run directory")
    p_tr.add_argument("--data", type=Path, required=True, help="the target data set's folder")
    p_tr.add_argument("--layout", default="folders", choices=("caltech101", "caltech256", "voc2012", "folders"),
                      help="data layout (folders: train/ and val/ class folders, pooled)")
    p_tr.add_argument("--out", type=Path, required=True, help="output folder")
    p_tr.add_argument("--per-class", type=_Checked(int, 1, 1_000_000, csv=True), default="15,30",
                      help="training images per class, comma-separated")
    p_tr.add_argument("--splits", type=_Checked(int, 1, 1000), default=5,
                      help="random train/test splits per --per-class")
    p_tr.add_argument("--seed", type=_seed, default=0, help="seed of the splits and the from-scratch training")
    p_tr.add_argument("--test-cap", type=_positive_int, default=None,
                      help="test images per class at most; None: 50 for caltech101, 25 for caltech256, else no cap")
    p_tr.add_argument("--no-baseline", action="store_true", help="skip training the architecture from scratch")
    p_tr.add_argument("--no-untrained", action="store_true",
                      help="skip the softmax on the untrained (random-weight) architecture's frozen features")
    p_tr.add_argument("--scratch-steps", type=_Checked(int, 1, 10_000_000), default=300,
                      help="SGD steps of each from-scratch training")
    p_tr.add_argument("--scratch-batch-size", type=_batch, default=32, help="images per from-scratch step")
    p_tr.add_argument("--scratch-lr", type=_Checked.of("TrainConfig", "lr"), default=1e-2,
                      help="from-scratch learning rate (/10 after 3/4)")
    p_tr.add_argument("--l2", type=_l2_arg, default=None,
                      help="softmax L2 penalty: a number, cv (3-fold cross-validation on the training images), "
                      "or None: 1/N for N training images")
    p_tr.add_argument("--layer", default="fc7", help="the frozen layer the softmax reads")
    p_tr.add_argument("--include-background", action="store_true",
                      help="keep Caltech-101's BACKGROUND_Google / Caltech-256's 257.clutter as a class")
    _feature_flags(p_tr)

    p_pr = exp_sub.add_parser(
        "probes", help="a linear SVM and a softmax on each layer's frozen features (Table 7)",
        formatter_class=_Formatter,
        description="Features of conv1 ... conv5 (average-pooled to --grid x --grid), fc6 and fc7 are extracted "
        "once per image and cached; a linear SVM and a softmax per layer are trained on --per-class images per "
        "class and tested on the rest, over --splits random splits. Writes OUT/probes.json, .md, .csv and a "
        "plot of accuracy against depth (probes.png) beside the paper's Table 7.")
    _model_flags(p_pr, "the pretrained run directory")
    p_pr.add_argument("--data", type=Path, required=True, help="the target data set's folder")
    p_pr.add_argument("--layout", default="folders", choices=("caltech101", "caltech256", "folders"),
                      help="data layout (folders: train/ and val/ class folders, pooled)")
    p_pr.add_argument("--out", type=Path, required=True, help="output folder")
    p_pr.add_argument("--per-class", type=_Checked(int, 1, 1_000_000), default=30,
                      help="training images per class (the paper: 30 Caltech-101, 60 Caltech-256)")
    p_pr.add_argument("--splits", type=_Checked(int, 1, 1000), default=5, help="random train/test splits")
    p_pr.add_argument("--seed", type=_seed, default=0, help="seed of the splits")
    p_pr.add_argument("--test-cap", type=_positive_int, default=None,
                      help="test images per class at most; None: 50 for caltech101, 25 for caltech256, else no cap")
    p_pr.add_argument("--layers", type=_csv_names, default="conv1,conv2,conv3,conv4,conv5,fc6,fc7",
                      help="layers to probe, comma-separated, in order of depth")
    p_pr.add_argument("--classifiers", type=_csv_names, default="svm,softmax", help="svm and/or softmax")
    p_pr.add_argument("--grid", type=_Checked(int, 1, 64), default=4, help="conv maps are pooled to GRID x GRID")
    p_pr.add_argument("--pool", default="avg", choices=("avg", "max"), help="pooling of the conv maps")
    p_pr.add_argument("--l2", type=_l2_arg, default=None,
                      help="classifiers' L2 penalty: a number, cv (3-fold cross-validation on the training "
                      "images), or None: 1/N for N training images")
    p_pr.add_argument("--include-background", action="store_true",
                      help="keep Caltech-101's BACKGROUND_Google / Caltech-256's 257.clutter as a class")
    _feature_flags(p_pr)
    p_abl = exp_sub.add_parser(
        "ablation", help="train layer and width variants of a model and tabulate their errors (Table 3)",
        formatter_class=_Formatter,
        description="Train each variant with the same recipe in OUT/runs/VARIANT and write OUT/ablation.json, "
        ".md and .csv: train top-1, val top-1 and val top-5 error beside the paper's Table 3. Variants: base, "
        "no-conv3-4, no-fc7, no-fc6-7, fc-half, fc-double, conv-wide, or several joined by '+' "
        "(no-conv3-4+no-fc6-7). Widths are the paper's on zfnet/alexnet and scale in proportion on the "
        "CPU-size models. Run the same command again to resume an interrupted study.")
    p_abl.add_argument("--data", type=Path, required=True, help="data folder with train/ and val/")
    p_abl.add_argument("--out", type=Path, required=True, help="the study's folder")
    p_abl.add_argument("--base", default="zfnet", choices=list_models(), metavar="NAME",
                       help=f"model the variants change: {', '.join(list_models())}")
    p_abl.add_argument("--variants", type=_csv_names, default=None,
                       help="comma-separated variants; the paper's nine rows when not given")
    p_abl.add_argument("--epochs", type=_Checked.of("TrainConfig", "epochs"), default=defaults.epochs,
                       help="epochs per variant")
    p_abl.add_argument("--batch-size", type=_Checked.of("TrainConfig", "batch_size"), default=defaults.batch_size,
                       help="images per SGD step")
    p_abl.add_argument("--lr", type=_Checked.of("TrainConfig", "lr"), default=defaults.lr, help="initial learning rate")
    p_abl.add_argument("--lr-patience", type=_Checked.of("TrainConfig", "lr_patience"), default=defaults.lr_patience,
                       help="epochs without improvement before the lr drops")
    p_abl.add_argument("--seed", type=_seed, default=0, help="seed of every variant's run")
    p_abl.add_argument("--weights", default="last", choices=("last", "best"),
                       help="weights evaluated: last epoch's, or lowest validation error's")
    p_abl.add_argument("--ten-crop", action="store_true", help="validation error over the paper's 10 crops")
    p_abl.add_argument("--workers", type=_workers, default=None, help="data loading processes (default: cores - 1)")
    p_abl.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    p_abl.add_argument("--quiet", action="store_true", help="no per-epoch lines, no progress bars")

    p_ens = exp_sub.add_parser(
        "ensemble", help="error of each run and of their averaged softmax (Table 2)", formatter_class=_Formatter,
        description="Each run alone, each architecture's ensemble when the runs mix several, and all runs "
        "combined; writes OUT/ensemble.json, .md and .csv beside the paper's Table 2.")
    p_ens.add_argument("runs", type=Path, nargs="+", metavar="RUN", help="run directories (two or more to ensemble)")
    p_ens.add_argument("--data", type=Path, required=True, help="data folder")
    p_ens.add_argument("--out", type=Path, default=Path("zfnet-ensemble"), help="folder for the tables")
    p_ens.add_argument("--split", default="val", help="split folder to evaluate on")
    p_ens.add_argument("--ten-crop", action="store_true", help="average the softmax of the paper's 10 crops")
    p_ens.add_argument("--weights", default="best", help="best, last or epoch-N")
    p_ens.add_argument("--layout", default="auto", choices=("auto", "folders", "imagenet"), help="data layout")
    p_ens.add_argument("--batch-size", type=_batch, default=64, help="images per forward pass")
    p_ens.add_argument("--workers", type=_workers, default=None, help="data loading processes (default: cores - 1)")
    p_ens.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    p_ens.add_argument("--quiet", action="store_true", help="no progress bars")

    p_min = exp_sub.add_parser(
        "miniature", help="the paper's §5 findings in miniature on the synthetic data (Tables 3-5, 7)",
        formatter_class=_Formatter,
        description="From nothing: the synthetic primary classes, the nine Table 3 variants of zfnet-tiny trained "
        "on them, the disjoint secondary classes, and the base network's frozen features transferred to them "
        "(15 and 30 images per class, 5 splits, against training from scratch) with a linear probe per layer. "
        "Writes OUT/miniature.json and .md: whether each of the paper's three findings holds. Run the same "
        "command again to resume.")
    p_min.add_argument("--out", type=Path, required=True, help="the study's folder")
    p_min.add_argument("--seed", type=_seed, default=0, help="seed of the data, the trainings and the splits")
    p_min.add_argument("--workers", type=_workers, default=0, help="data loading processes of the trainings")
    p_min.add_argument("--quiet", action="store_true", help="no progress bars")

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
    p_report.add_argument("--title", default="ZFNet report", help="the report's title")

    # demo
    p_demo = sub.add_parser("demo", help="from nothing to a trained ZFNet on the synthetic data",
                            formatter_class=_Formatter)
    p_demo.add_argument("--out", type=Path, default=Path("zfnet-demo"), help="output folder")
    p_demo.add_argument("--quick", action="store_true", help="a smaller, faster run (for tests)")
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
    from .data.synthetic import write_synthetic

    summary = write_synthetic(args.out, classes=args.classes, per_class=args.per_class,
                              val_per_class=args.val_per_class, seed=args.seed, size=args.size,
                              class_set=args.class_set, overwrite=args.overwrite)
    counts = ", ".join(f"{n} {split}" for split, n in summary.counts.items())
    print(f"wrote {counts} images of {len(summary.classes)} classes to {summary.root}")
    return 0


def _cmd_models(args: argparse.Namespace) -> int:
    from .models import build, list_models, model_info

    print(f"{'name':<14}{'input':>7}{'parameters':>14}  description")
    for name in list_models():
        info = model_info(name)
        params = sum(p.numel() for p in build(name).parameters())
        print(f"{name:<14}{info.input_size:>7}{params:>14,}  {info.description}")
    return 0


def _train_config(args: argparse.Namespace):
    from ._validate import check_value
    from .errors import ZFNetError
    from .train import TrainConfig, load_config_file
    from .train.checkpoint import RunFiles, check_resumable, load_run_config

    values: dict[str, Any] = {}
    saved: dict[str, Any] | None = None
    files = RunFiles(args.out)
    if args.resume:
        check_resumable(args.out)  # a missing folder or one that is not a run: say so, not "--data is required"
    if args.resume and files.config.is_file():
        saved = load_run_config(files.config).to_json()  # every saved option checked by type and range
        values.update(saved)
    if args.config is not None:
        values.update(load_config_file(args.config))
    for _, field, _, _ in _TRAIN_FLAGS:
        if getattr(args, field) is not None:
            values[field] = getattr(args, field)
    if args.model is not None:
        values["model"] = args.model
    if args.data is not None:
        values["data"] = args.data
    if isinstance(values.get("data"), (str, Path)):
        # Stored resolved: the run resumes from any working directory, and --data may be given either way.
        values["data"] = str(Path(values["data"]).expanduser().resolve())
    options = dict(check_value(values.get("model_options", {}), dict[str, Any], "model_options",
                               what="training option"))
    if args.remove is not None:
        options["removed"] = list(args.remove)
    if args.fc_width is not None:
        options["fc"] = [args.fc_width, args.fc_width]
    if args.conv_widths is not None:
        if len(args.conv_widths) != 3:
            raise ZFNetError(f"--conv-widths takes 3 widths (conv3,conv4,conv5), got {len(args.conv_widths)}")
        options["conv345"] = list(args.conv_widths)
    if args.dropout is not None:
        options["dropout"] = args.dropout
    values["model_options"] = options
    values["out"] = str(args.out.expanduser().resolve())
    if "data" not in values:
        raise ZFNetError("--data is required (the folder with train/ and val/)")
    if saved is not None:
        if isinstance(saved.get("data"), str):
            saved = {**saved, "data": str(Path(saved["data"]).expanduser().resolve())}
        for key in ("model", "model_options", "data", "seed", "layout"):
            if key in saved and values.get(key) != saved[key]:
                raise ZFNetError(f"{args.out} was trained with {key}={saved[key]!r}; --resume cannot change it "
                                 f"to {values.get(key)!r}")
    return TrainConfig.from_json(values)  # every option checked, the model's too (not built), before any work


def _cmd_train(args: argparse.Namespace) -> int:
    from .train import train

    config = _train_config(args)
    result = train(config, resume=args.resume, show_progress=not args.quiet)
    last = result.metrics[-1] if result.metrics else None
    if last is None:
        print(f"nothing to do: {result.run} already finished {config.epochs} epochs")
    else:
        print(f"trained {config.model} for {last['epoch']} epochs: val top-1 error "
              f"{100 * last['val_top1_error']:.2f}%, top-5 {100 * last['val_top5_error']:.2f}% "
              f"(best top-1 {100 * result.best_val_top1_error:.2f}% at epoch {result.best_epoch})")
    print(f"run directory: {result.run}")
    return 0


def _print_eval(report) -> None:
    crops = "10 crops" if report.ten_crop else "centre crop"
    rows = list(report.members) + ([report.ensemble] if report.ensemble else [])
    width = max(len(r.name) for r in rows)
    print(f"{'model':<{width}}  top-1 err  top-5 err  images   ({crops})")
    for r in rows:
        print(f"{r.name:<{width}}  {100 * r.top1_error:8.2f}%  {100 * r.top5_error:8.2f}%  {r.images:6d}")
    if report.bad_files:
        print(f"{report.bad_files} unreadable image file(s) were skipped")


def _cmd_evaluate(args: argparse.Namespace) -> int:
    from ._io import atomic_write_json
    from .train import evaluate_runs
    from .train.distributed import resolve_device

    # --weights names a file with --model; the --ensemble runs then use their best weights.
    report = evaluate_runs([_loaded(args, args.data, args.split), *args.ensemble], args.data, split=args.split,
                           ten_crop=args.ten_crop, weights="best" if args.model else args.weights or "best",
                           layout=args.layout, workers=args.workers,
                           batch_size=args.batch_size, device=resolve_device(args.device))
    _print_eval(report)
    if args.json is not None:
        rows = [r.__dict__ for r in report.members] + ([report.ensemble.__dict__] if report.ensemble else [])
        atomic_write_json(args.json, {"ten_crop": report.ten_crop, "results": rows})
        print(f"results written to {args.json}")
    return 0


def _cmd_visualize(args: argparse.Namespace) -> int:
    from .visualize.job import compare_architectures, visualize_run

    loaded = _loaded(args, args.data, args.split)
    index = visualize_run(loaded, args.data, layers=args.layers, k=args.k, maps=args.maps, split=args.split,
                          out=args.out, seed=args.seed, max_images=args.max_images)
    shown = sum(len(maps) for maps in index["layers"].values())
    print(f"visualised {shown} feature maps of {', '.join(index['layers'])} over {index['images']} images")
    if args.compare is not None:
        compare_architectures(loaded, args.compare, args.out, data=args.data, split=args.split,
                              weights="best" if args.model else args.weights or "best", seed=args.seed)
        print(f"architecture comparison with {args.compare}: {args.out / 'architectures.png'}")
    print(f"figures and index.json in {args.out}")
    return 0


def _cmd_demo(args: argparse.Namespace) -> int:
    from .demo import run_demo

    result = run_demo(args.out, quick=args.quick)
    print(result)
    return 0


def _cmd_correspondence(args: argparse.Namespace) -> int:
    from .analysis.jobs import correspondence_job

    record = correspondence_job(_loaded(args), args.data, args.out, parts=args.parts, layers=args.layers,
                                images=args.images, random_trials=args.trials,
                                split=None if args.split == "all" else args.split, annotations=args.annotations,
                                seed=args.seed, show_progress=not args.quiet)
    table = record["report"]["tables"][0]
    print("  ".join(f"{c:>16}" if i else f"{c:<12}" for i, c in enumerate(table["columns"])))
    for row in table["rows"]:
        print("  ".join(f"{c:>16}" if i else f"{c:<12}" for i, c in enumerate(row)))
    for layer, f in record["finding"].items():
        shown = "shows" if f["all_parts_below_random"] else "does not show"
        spread = record["delta"]["random"][layer]["std"]
        print(f"{layer}: {len(f['parts_below_random'])}/{len(record['parts'])} parts below random (random minus "
              f"mean part {f['random_minus_mean_part']:+.3f}, std over pairs {spread:.3f}): the model {shown} "
              "the paper's finding there")
    print(f"correspondence.png and correspondence.json in {args.out} ({len(record['images'])} images)")
    return 0


def _cmd_invariance(args: argparse.Namespace) -> int:
    from .analysis.jobs import invariance_job

    steps = {t: v for t, v in (("translation", args.shifts), ("scale", args.scales), ("rotation", args.angles))
             if v is not None}
    record = invariance_job(_loaded(args, args.data, args.split), args.data, args.out, layers=args.layers,
                            images=args.images, split=args.split, transforms=args.transforms, steps=steps,
                            seed=args.seed, show_progress=not args.quiet)
    table = record["report"]["tables"][0]
    print("  ".join(f"{c:>14}" for c in table["columns"]))
    for row in table["rows"]:
        print("  ".join(f"{c:>14}" for c in row))
    print(f"invariance.png and invariance.json in {args.out} ({len(record['images'])} images)")
    return 0


def _cmd_report(args: argparse.Namespace) -> int:
    from .report import build_report

    index = build_report(args.sources, args.out, title=args.title)
    print(f"report written to {index}")
    return 0


def _exp_ablation(args: argparse.Namespace) -> int:
    from .analysis.ablation import PAPER_VARIANTS, ablation_study

    result = ablation_study(args.data, args.out, base=args.base, variants=args.variants or PAPER_VARIANTS,
                            epochs=args.epochs, batch_size=args.batch_size, lr=args.lr, seed=args.seed,
                            train_options={"lr_patience": args.lr_patience}, weights=args.weights,
                            ten_crop=args.ten_crop, workers=args.workers, device=args.device,
                            show_progress=not args.quiet)
    print(result)
    print(result.summary())
    print(f"tables in {', '.join(str(p) for p in result.files.values())}; runs in {args.out / 'runs'}")
    return 0


def _exp_ensemble(args: argparse.Namespace) -> int:
    from .analysis.ensemble import ensemble_study
    from .train.distributed import resolve_device

    result = ensemble_study(args.runs, args.data, args.out, split=args.split, ten_crop=args.ten_crop,
                            weights=args.weights, layout=args.layout, workers=args.workers,
                            batch_size=args.batch_size, device=resolve_device(args.device),
                            show_progress=not args.quiet)
    print(result)
    print(result.summary())
    print(f"tables in {', '.join(str(p) for p in result.files.values())}")
    return 0


def _exp_miniature(args: argparse.Namespace) -> int:
    from .analysis.miniature import miniature_study

    result = miniature_study(args.out, seed=args.seed, workers=args.workers, show_progress=not args.quiet)
    print(result["report"]["summary"])
    for finding in result["findings"].values():
        print(f"  {'holds' if finding['holds'] else 'does not hold'}: {finding['finding']}")
    print(f"details in {args.out / 'miniature.md'}; tables in {args.out / 'ablation'} and {args.out / 'transfer'}")
    return 0


def _l2_arg(text: str) -> float | str:
    if text == "cv":
        return text
    try:
        float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive number or cv, got {text!r}") from None
    return _Checked(float, 0, 1e6, low_open=True)(text)


_l2_arg.limits = _Checked(float, 0, 1e6, low_open=True).limits  # type: ignore[attr-defined]
_l2_arg.value_type = float  # type: ignore[attr-defined]


def _feature_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("--features", type=Path, default=None,
                   help="feature cache folder, which transfer and probes can share; None: OUT/features")
    p.add_argument("--batch-size", type=_batch, default=64, help="images per forward pass")
    p.add_argument("--workers", type=_workers, default=None, help="data loading processes; None: cores - 1")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    p.add_argument("--quiet", action="store_true", help="no progress bars")


def _exp_transfer(args: argparse.Namespace) -> int:
    from .analysis.transfer import ScratchRecipe, run_transfer
    from .train.distributed import resolve_device

    recipe = ScratchRecipe(steps=args.scratch_steps, batch_size=args.scratch_batch_size, lr=args.scratch_lr)
    result = run_transfer(_loaded(args), args.data, args.out, layout=args.layout,
                          per_class=args.per_class, splits=args.splits, seed=args.seed, test_cap=args.test_cap,
                          baseline=not args.no_baseline, untrained=not args.no_untrained, recipe=recipe,
                          l2=args.l2, layer=args.layer,
                          include_background=args.include_background, features_dir=args.features,
                          batch_size=args.batch_size, workers=args.workers, device=resolve_device(args.device),
                          show_progress=not args.quiet)
    print(result.summary())
    return 0


def _exp_probes(args: argparse.Namespace) -> int:
    from .analysis.probes import run_probes
    from .train.distributed import resolve_device

    result = run_probes(_loaded(args), args.data, args.out, layout=args.layout,
                        per_class=args.per_class, splits=args.splits, seed=args.seed, test_cap=args.test_cap,
                        layers=args.layers, classifiers=args.classifiers, grid=args.grid, pool=args.pool,
                        l2=args.l2, include_background=args.include_background, features_dir=args.features,
                        batch_size=args.batch_size, workers=args.workers, device=resolve_device(args.device),
                        show_progress=not args.quiet)
    print(result.summary())
    return 0


# experiment name -> function(args) -> exit status
_EXPERIMENTS: dict[str, Any] = {}
_EXPERIMENTS["transfer"] = _exp_transfer
_EXPERIMENTS["probes"] = _exp_probes
_EXPERIMENTS["ablation"] = _exp_ablation
_EXPERIMENTS["ensemble"] = _exp_ensemble
_EXPERIMENTS["miniature"] = _exp_miniature


def _cmd_experiment(args: argparse.Namespace) -> int:
    if args.experiment_command in _GENERATED_STUDIES:
        return _cmd_generated(args)
    return _EXPERIMENTS[args.experiment_command](args)


_COMMANDS = {"data": _cmd_data, "models": _cmd_models, "train": _cmd_train, "evaluate": _cmd_evaluate,
             "visualize": _cmd_visualize, "experiment": _cmd_experiment,
             "occlusion": _cmd_generated, "correspondence": _cmd_correspondence, "invariance": _cmd_invariance,
             "report": _cmd_report, "demo": _cmd_demo}


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
    from contextlib import nullcontext

    from ._io import folder_lock
    from .errors import TrainingDiverged, ZFNetError

    parser = build_parser()
    args = parser.parse_args(argv)
    _setup_logging(getattr(args, "quiet", False))
    try:
        folder = _output_folder(args)
        with folder_lock(folder) if folder is not None else nullcontext():
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
