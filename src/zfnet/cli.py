"""The ``zfnet`` command line: argument parsing only; each command calls one library function.

Errors in what the user gave (a missing path, an unknown model, an impossible size, a crafted
checkpoint) print one line and exit with status 2; a diverged training run exits with status 1.
"""

from __future__ import annotations

import argparse
import json
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
    pass


def _csv_ints(text: str) -> tuple[int, ...]:
    try:
        values = tuple(int(v) for v in text.split(",") if v.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}") from None
    if not values:
        raise argparse.ArgumentTypeError("expected at least one integer")
    return values


def _csv_names(text: str) -> tuple[str, ...]:
    return tuple(v.strip() for v in text.split(",") if v.strip())


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


# Training flags: (flag, config field, type, help). Their defaults come from TrainConfig, so the
# parser leaves them unset (None) and a --config file or the saved run can fill them in.
_TRAIN_FLAGS: list[tuple[str, str, Any, str]] = [
    ("--epochs", "epochs", _positive_int, "epochs to train in total"),
    ("--batch-size", "batch_size", _positive_int, "images per SGD step, over all processes"),
    ("--lr", "lr", float, "initial learning rate"),
    ("--momentum", "momentum", float, "SGD momentum"),
    ("--weight-decay", "weight_decay", float, "L2 weight decay on weights (not biases)"),
    ("--max-filter-rms", "max_filter_rms", float, "renormalise conv filters whose RMS exceeds this (0: off)"),
    ("--lr-factor", "lr_factor", float, "multiply the learning rate by this on a plateau"),
    ("--lr-patience", "lr_patience", int, "epochs without improvement of val top-1 error before the lr drops"),
    ("--snapshots", "snapshots", _csv_ints, "epochs whose weights are kept (feature evolution)"),
    ("--seed", "seed", int, "seed of initialisation, data order, crops and dropout"),
    ("--workers", "workers", int, "data loading processes (default: cores - 1)"),
    ("--cache", "cache", str, "keep decoded images in memory: auto, memory or none"),
    ("--device", "device", str, "auto, cpu, cuda or cuda:N"),
    ("--layout", "layout", str, "data layout: auto, folders or imagenet"),
]


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
    p_synth.add_argument("--classes", type=_positive_int, default=10, help="number of classes K")
    p_synth.add_argument("--per-class", type=_positive_int, default=100, help="training images per class")
    p_synth.add_argument("--val-per-class", type=_positive_int, default=None,
                         help="validation images per class (default: per-class / 5)")
    p_synth.add_argument("--seed", type=int, default=0, help="random seed; the same seed gives the same files")
    p_synth.add_argument("--size", type=int, default=128, help="image side in pixels")
    p_synth.add_argument("--set", dest="class_set", default="primary", choices=("primary", "secondary"),
                         help="class set: the secondary set is disjoint from the primary (for transfer)")

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
    g.add_argument("--fc-width", type=_positive_int, default=None, help="width of fc6 and fc7")
    g.add_argument("--conv-widths", type=_csv_ints, default=None, help="maps of conv3,conv4,conv5, e.g. 512,1024,512")
    g.add_argument("--dropout", type=float, default=None, help="dropout after fc6 and fc7 (default: 0.5)")
    g = p_train.add_argument_group("recipe")
    for flag, field, typ, text in _TRAIN_FLAGS:
        shown = getattr(defaults, field)
        if isinstance(shown, tuple):
            shown = ",".join(map(str, shown))
        g.add_argument(flag, dest=field, type=typ, default=None, help=f"{text} (default: {shown})")

    # evaluate
    p_eval = sub.add_parser("evaluate", help="top-1 / top-5 error of a run, or of an ensemble of runs",
                            formatter_class=_Formatter)
    p_eval.add_argument("run", type=Path, help="run directory (or a .safetensors file in one)")
    p_eval.add_argument("--data", type=Path, required=True, help="data folder")
    p_eval.add_argument("--split", default="val", help="split folder to evaluate on")
    p_eval.add_argument("--ten-crop", action="store_true", help="average the softmax of the paper's 10 crops")
    p_eval.add_argument("--ensemble", type=Path, nargs="+", default=[], metavar="RUN",
                        help="more runs: their softmax outputs are averaged with RUN's (Table 2)")
    p_eval.add_argument("--weights", default="best", help="best, last or epoch-N")
    p_eval.add_argument("--layout", default="auto", choices=("auto", "folders", "imagenet"), help="data layout")
    p_eval.add_argument("--batch-size", type=_positive_int, default=64, help="images per forward pass")
    p_eval.add_argument("--workers", type=int, default=None, help="data loading processes (default: cores - 1)")
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
    p_vis.add_argument("run", type=Path, help="run directory")
    p_vis.add_argument("--data", type=Path, required=True, help="data folder")
    p_vis.add_argument("--out", type=Path, required=True, help="output folder for the PNGs and index.json")
    p_vis.add_argument("--layers", type=_csv_names, default=("conv1", "conv2", "conv3", "conv4", "conv5"),
                       help="layers to visualise, comma-separated (default: conv1,...,conv5)")
    p_vis.add_argument("--k", type=_positive_int, default=9, help="top activations per feature map")
    p_vis.add_argument("--maps", type=_positive_int, default=16,
                       help="feature maps shown per layer, a seeded random subset (default: 16)")
    p_vis.add_argument("--split", default="val", help="split folder whose images are searched")
    p_vis.add_argument("--weights", default="best", help="best, last or epoch-N")
    p_vis.add_argument("--max-images", type=_positive_int, default=None, help="search only the first N images")
    p_vis.add_argument("--seed", type=int, default=0, help="seed of the choice of shown maps")
    p_vis.add_argument("--compare", type=Path, default=None, metavar="RUN_B",
                       help="another run (e.g. AlexNet) for the Fig. 6 comparison")

    # analyses (occlusion, correspondence, invariance): each adds its parser here

    # experiment: the paper's Tables 2-7, one action each
    p_exp = sub.add_parser("experiment", help="the paper's experiments: ablations, ensembles, transfer, probes",
                           formatter_class=_Formatter)
    exp_sub = p_exp.add_subparsers(dest="experiment_command", metavar="EXPERIMENT", parser_class=_Parser)
    exp_sub.required = True
    # each experiment adds its parser to exp_sub here, and its function to _EXPERIMENTS

    # report

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
                              class_set=args.class_set)
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
    from .errors import ZFNetError
    from .train import TrainConfig, load_config_file
    from .train.checkpoint import RunFiles

    values: dict[str, Any] = {}
    saved: dict[str, Any] | None = None
    files = RunFiles(args.out)
    if args.resume and files.config.is_file():
        try:
            saved = json.loads(files.config.read_text())
        except ValueError as err:
            raise ZFNetError(f"{files.config} is not valid JSON: {err}") from None
        values.update(saved)
    if args.config is not None:
        values.update(load_config_file(args.config))
    for _, field, _, _ in _TRAIN_FLAGS:
        if getattr(args, field) is not None:
            values[field] = getattr(args, field)
    if args.model is not None:
        values["model"] = args.model
    if args.data is not None:
        values["data"] = str(args.data)
    options = dict(values.get("model_options", {}))
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
    values["out"] = str(args.out)
    if "data" not in values:
        raise ZFNetError("--data is required (the folder with train/ and val/)")
    if saved is not None:
        for key in ("model", "model_options", "data", "seed", "layout"):
            if key in saved and values.get(key) != saved[key]:
                raise ZFNetError(f"{args.out} was trained with {key}={saved[key]!r}; --resume cannot change it "
                                 f"to {values.get(key)!r}")
    config = TrainConfig.from_json(values)
    from .models import build

    build(config.model, num_classes=2, **config.model_options)  # validate options before any work
    return config


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

    report = evaluate_runs([args.run, *args.ensemble], args.data, split=args.split, ten_crop=args.ten_crop,
                           weights=args.weights, layout=args.layout, workers=args.workers,
                           batch_size=args.batch_size, device=resolve_device(args.device))
    _print_eval(report)
    if args.json is not None:
        rows = [r.__dict__ for r in report.members] + ([report.ensemble.__dict__] if report.ensemble else [])
        atomic_write_json(args.json, {"ten_crop": report.ten_crop, "results": rows})
        print(f"results written to {args.json}")
    return 0


def _cmd_visualize(args: argparse.Namespace) -> int:
    from .visualize.job import compare_architectures, visualize_run

    index = visualize_run(args.run, args.data, layers=args.layers, k=args.k, maps=args.maps, split=args.split,
                          out=args.out, weights=args.weights, seed=args.seed, max_images=args.max_images)
    shown = sum(len(maps) for maps in index["layers"].values())
    print(f"visualised {shown} feature maps of {', '.join(index['layers'])} over {index['images']} images")
    if args.compare is not None:
        compare_architectures(args.run, args.compare, args.out, data=args.data, split=args.split,
                              weights=args.weights, seed=args.seed)
        print(f"architecture comparison with {args.compare}: {args.out / 'architectures.png'}")
    print(f"figures and index.json in {args.out}")
    return 0


def _cmd_demo(args: argparse.Namespace) -> int:
    from .demo import run_demo

    result = run_demo(args.out, quick=args.quick)
    print(result)
    return 0


# experiment name -> function(args) -> exit status
_EXPERIMENTS: dict[str, Any] = {}


def _cmd_experiment(args: argparse.Namespace) -> int:
    return _EXPERIMENTS[args.experiment_command](args)


_COMMANDS = {"data": _cmd_data, "models": _cmd_models, "train": _cmd_train, "evaluate": _cmd_evaluate,
             "visualize": _cmd_visualize, "experiment": _cmd_experiment,
             "demo": _cmd_demo}


def main(argv: list[str] | None = None) -> int:
    """Run the ``zfnet`` command line; returns the exit status."""
    from .errors import TrainingDiverged, ZFNetError

    parser = build_parser()
    args = parser.parse_args(argv)
    _setup_logging(getattr(args, "quiet", False))
    try:
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
