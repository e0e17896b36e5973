"""``zfnet experiment ablation``: layer and width variants of a network, the paper's Table 3.

Zeiler & Fergus (2014, §5.1 and Table 3) remove layers from the network, or change their width, train
each variant the same way, and compare training top-1 error with validation top-1 and top-5 error:
removing fc6 and fc7 costs little, removing conv3 and conv4 a little more, but removing both
(conv3, conv4, fc6, fc7) raises the error drastically, so the depth of the model matters; wider fc
layers mostly fit the training set better, wider middle conv layers (512, 1024, 512 maps) help.

A variant is named by one or more of the ``ATOMS`` joined by ``+`` (``no-conv3-4+no-fc6-7``), or
``base`` for the unchanged network. Widths are the paper's on the full-size networks (``zfnet``,
``alexnet``: fc6-7 at 2048 or 8192 units, conv3-5 at 512, 1024, 512 maps) and scale in proportion
on the narrower CPU-size ones: ``fc-half`` halves fc6 and fc7, ``fc-double`` doubles them, and
``conv-wide`` multiplies conv3, conv4, conv5 by 512/384, 1024/384 and 512/256.

Each variant is an ordinary training run in ``OUT/runs/<variant>``: an interrupted study is run
again with the same options and resumes the unfinished run, skipping finished ones. The training
top-1 error is the one training measured over the evaluated epoch's batches (the training crops,
dropout on); each run's weights are then evaluated once, on the validation set. Where the study has
``no-fc6-7`` and ``no-conv3-4+no-fc6-7``, the paper's depth finding is tested image by image
(:func:`zfnet.experiments.ensemble.compare_errors`).

Example:
    >>> from zfnet.experiments import ablation
    >>> config = ablation.Config(data="data/synth", base="zfnet-tiny", variants=("base", "no-fc6-7"),
    ...                          epochs=30, batch_size=32)  # doctest: +SKIP
    >>> ablation.run(config, "out/ablation").row("no-fc6-7").val_top1_error  # doctest: +SKIP
    0.578
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import asdict, dataclass, field, fields, replace
from functools import lru_cache
from pathlib import Path
from typing import Any

from .._io import folder_entries
from ..analysis.stats import Comparison
from ..data.folders import open_dataset
from ..distributed import resolve_device
from ..errors import ZFNetError
from ..models import list_models, model_config
from ..paper import PAPER_TABLE3
from ..results import Report, Table, write_results
from ..train import TrainConfig, train
from ..train.checkpoint import RunFiles, is_run_dir, load_run_config
from ..train.evaluate import Predictions, predict_runs
from .base import DEVICE, MAX_SEED, MAX_WORKERS, Options, option, write_config
from .base import Result as _Result
from .ensemble import compare_errors

__all__ = [
    "ATOMS", "PAPER_VARIANTS", "MINIATURE", "MINIATURE_DATA", "Variant", "parse_variant",
    "Config", "AblationRow", "Result", "run", "run_variant", "NAME", "HELP", "DESCRIPTION",
]

NAME = "ablation"
HELP = "train layer and width variants of a model and tabulate their errors (Table 3)"
DESCRIPTION = ("Train each variant with the same recipe in OUT/runs/VARIANT and write OUT/ablation.json, .md and "
               ".csv: train top-1, val top-1 and val top-5 error beside the paper's Table 3. Variants: base, "
               "no-conv3-4, no-fc7, no-fc6-7, fc-half, fc-double, conv-wide, or several joined by '+' "
               "(no-conv3-4+no-fc6-7). Widths are the paper's on zfnet/alexnet and scale in proportion on the "
               "CPU-size models. Run the same command again to resume an interrupted study.")

log = logging.getLogger("zfnet")

# The full-size widths the paper's numbers refer to (Fig. 3; AlexNet has the same conv3-5 and fc6-7).
_FULL_FC = 4096
_FULL_CONV345 = (384, 384, 256)


@dataclass(frozen=True)
class _Atom:
    description: str
    removed: tuple[str, ...] = ()
    fc: int | None = None                           # the paper's fc6/fc7 width at full size
    conv345: tuple[int, int, int] | None = None     # the paper's conv3-5 maps at full size


ATOMS: dict[str, _Atom] = {
    "no-conv3-4": _Atom("removed layers 3, 4", removed=("conv3", "conv4")),
    "no-fc7": _Atom("removed layer 7", removed=("fc7",)),
    "no-fc6-7": _Atom("removed layers 6, 7", removed=("fc6", "fc7")),
    "fc-half": _Atom("adjust layers 6, 7", fc=2048),
    "fc-double": _Atom("adjust layers 6, 7", fc=8192),
    "conv-wide": _Atom("adjust layers 3, 4, 5", conv345=(512, 1024, 512)),
}

# The rows of Table 3, in the paper's order (removals are on Krizhevsky's net, widths on both).
PAPER_VARIANTS: tuple[str, ...] = (
    "base", "no-conv3-4", "no-fc7", "no-fc6-7", "no-conv3-4+no-fc6-7", "fc-half", "fc-double", "conv-wide",
    "fc-double+conv-wide",
)

_PAPER_NAMES = {"alexnet": "Krizhevsky et al. (replication)", "zfnet": "ZFNet"}

# The miniature study of docs/experiments.md, the paper's nine rows on zfnet-tiny (about 3 minutes on 2 free
# cores): ``run(Config(data=data, **MINIATURE), out)`` on ``write_synthetic(data, **MINIATURE_DATA)``.
MINIATURE: dict[str, Any] = {
    "base": "zfnet-tiny", "variants": PAPER_VARIANTS, "epochs": 30, "batch_size": 32, "lr": 1e-2, "lr_patience": 2,
}
MINIATURE_DATA: dict[str, Any] = {"classes": 10, "per_class": 200, "val_per_class": 50, "size": 73}


@dataclass(frozen=True)
class Variant:
    """One ablation of a base network.

    Attributes:
        name: canonical name, its atoms in ``ATOMS`` order joined by ``+`` (``base``: no change).
        label: what it changes, in the paper's words with its own widths (the paper's beside them when
            they differ, on a CPU-size base).
        options: model options passed to :func:`zfnet.models.build` (``removed``, ``fc``, ``conv345``).
        architecture: the resulting widths, e.g. ``conv 16 32 48 48 32 · fc 128 128`` (``-``: removed).
        parameters: number of parameters at the study's number of classes.
    """

    name: str
    label: str
    options: dict[str, Any]
    architecture: str
    parameters: int


def _family(base: str) -> str:
    return "alexnet" if base.startswith("alexnet") else "zfnet"


@lru_cache(maxsize=16)
def _base_config(base: str):
    """The layer configuration of a registered model (with a one-class softmax; nothing allocated)."""
    try:
        config = model_config(base, num_classes=1)
    except ValueError as err:
        raise ZFNetError(str(err)) from None
    if not hasattr(config, "with_overrides"):
        raise ZFNetError(f"model {base!r} has no layer configuration to ablate")
    return config


def _variant_config(base: str, num_classes: int, options: dict[str, Any]):
    # A scalar init_std: the per-layer one of the CPU-size models has one value per layer of the base.
    return replace(_base_config(base), init_std=1e-2).with_overrides(num_classes=num_classes, **options)


def _parameters(config) -> int:
    """Weights and biases of the network a config describes: (fan-in + 1) x width, summed over its layers."""
    widths = dict(zip(("conv1", "conv2", "conv3", "conv4", "conv5", "fc6", "fc7", "fc8"),
                      (config.conv1[0], config.conv2[0], *config.conv345, *config.fc, config.num_classes)))
    return sum((fan_in + 1) * widths[name] for name, fan_in in config.fan_ins().items())


def _architecture(config) -> str:
    conv = [config.conv1[0], config.conv2[0], *config.conv345]
    names = ["conv1", "conv2", "conv3", "conv4", "conv5"]
    conv_text = " ".join("-" if n in config.removed else str(w) for n, w in zip(names, conv))
    fc_text = " ".join("-" if n in config.removed else str(w) for n, w in zip(("fc6", "fc7"), config.fc))
    return f"conv {conv_text} · fc {fc_text}"


def parse_variant(spec: str, base: str = "zfnet", num_classes: int = 1000) -> Variant:
    """The :class:`Variant` a name stands for, with widths scaled to ``base``.

    Args:
        spec: ``base``, or atoms of :data:`ATOMS` joined by ``+`` in any order (``fc-double+conv-wide``).
        base: the registered model the variant changes.
        num_classes: classes of the softmax (for the parameter count).

    Returns:
        The variant; its ``name`` lists the atoms in canonical order.

    Raises:
        ZFNetError: unknown atom, an atom twice, two fc widths, removals that overlap, or widths given to
            layers that are removed.

    Example:
        >>> v = parse_variant("fc-double+no-conv3-4", base="zfnet-tiny", num_classes=10)
        >>> v.name, v.options
        ('no-conv3-4+fc-double', {'removed': ['conv3', 'conv4'], 'fc': [256, 256]})
        >>> parse_variant("conv-wide", base="zfnet").options
        {'conv345': [512, 1024, 512]}
    """
    valid = ", ".join(["base", *ATOMS])
    parts = [p.strip() for p in str(spec).split("+")]
    if spec == "base":
        parts = []
    elif "base" in parts:
        raise ZFNetError(f"ablation variant {spec!r}: 'base' is the unchanged network and combines with nothing")
    elif any(p not in ATOMS for p in parts):
        bad = next(p for p in parts if p not in ATOMS)
        where = f" in {spec!r}" if bad != spec else ""
        raise ZFNetError(f"unknown ablation variant {bad!r}{where}; valid: {valid}, or several joined by '+'")
    if len(set(parts)) != len(parts):
        raise ZFNetError(f"ablation variant {spec!r} names an atom twice")
    atoms = [a for a in ATOMS if a in parts]
    removed: list[str] = []
    for a in atoms:
        overlap = set(removed) & set(ATOMS[a].removed)
        if overlap:
            raise ZFNetError(f"ablation variant {spec!r} removes {', '.join(sorted(overlap))} twice")
        removed += ATOMS[a].removed
    fcs = [ATOMS[a].fc for a in atoms if ATOMS[a].fc is not None]
    if len(fcs) > 1:
        raise ZFNetError(f"ablation variant {spec!r} sets the width of fc6 and fc7 twice")
    if fcs and {"fc6", "fc7"} <= set(removed):
        raise ZFNetError(f"ablation variant {spec!r} changes the width of fc6 and fc7, which it removes")
    base_config = _base_config(base)
    options: dict[str, Any] = {}
    if removed:
        options["removed"] = [n for n in ("conv3", "conv4", "fc6", "fc7") if n in removed]
    if fcs:
        # fc6 and fc7 scale by the paper's ratio to its 4096 units (exactly the paper's width at full size).
        options["fc"] = [max(1, round(w * fcs[0] / _FULL_FC)) for w in base_config.fc]
    conv = next((ATOMS[a].conv345 for a in atoms if ATOMS[a].conv345 is not None), None)
    if conv is not None:
        options["conv345"] = [max(1, round(w * c / f)) for w, c, f in zip(base_config.conv345, conv, _FULL_CONV345)]
    try:
        config = _variant_config(base, num_classes, options)
    except ValueError as err:
        raise ZFNetError(f"ablation variant {spec!r} of {base}: {err}") from None
    label = _label(atoms, removed, options) or f"{base} as it is"
    return Variant(name="+".join(atoms) or "base", label=label, options=options,
                   architecture=_architecture(config), parameters=_parameters(config))


def _label(atoms: list[str], removed: list[str], options: dict[str, Any]) -> str:
    """The paper's wording with the variant's own widths: ``removed layers 3, 4, 6, 7``, ``adjust layers 6, 7:
    64 units (the paper's 2048 at full size)``, joined by ``; ``."""
    parts = []
    if removed:
        numbers = [n[-1] for n in ("conv3", "conv4", "fc6", "fc7") if n in removed]
        parts.append(f"removed layer{'s' if len(numbers) > 1 else ''} {', '.join(numbers)}")
    for a in atoms:
        atom = ATOMS[a]
        if atom.fc is not None:
            width, paper = options["fc"][0], atom.fc
            parts.append(f"{atom.description}: {width} units" + ("" if width == paper else
                                                                   f" (the paper's {paper} at full size)"))
        elif atom.conv345 is not None:
            maps, paper = ", ".join(map(str, options["conv345"])), ", ".join(map(str, atom.conv345))
            parts.append(f"{atom.description}: {maps} maps" + ("" if maps == paper else
                                                                f" (the paper's {paper} at full size)"))
    return "; ".join(parts)


_RECIPE = {f.name: f for f in fields(TrainConfig)}


def _recipe(name: str, help: str) -> Any:
    """An option with the training recipe's own default and limits (``TrainConfig.<name>``)."""
    f = _RECIPE[name]
    return option(f.default, checked=dict(f.metadata), help=help)


@dataclass(frozen=True, kw_only=True)
class Config(Options):
    """The ablation study's options (``zfnet experiment ablation --help`` shows the same)."""

    what = "ablation option"

    data: str = option(help="data folder with train/ and val/")
    base: str = option("zfnet", choices=tuple(list_models()), metavar="NAME",
                       help=f"model the variants change: {', '.join(list_models())}")
    variants: tuple[str, ...] = option(PAPER_VARIANTS, max_items=100,
                                       help="comma-separated variants (default: the paper's nine rows: "
                                       f"{','.join(PAPER_VARIANTS)})")
    epochs: int = _recipe("epochs", "epochs per variant")
    batch_size: int = _recipe("batch_size", "images per SGD step")
    lr: float = _recipe("lr", "initial learning rate")
    lr_patience: int = _recipe("lr_patience", "epochs without improvement before the lr drops")
    seed: int = option(0, low=0, high=MAX_SEED, help="seed of every variant's run")
    weights: str = option("last", choices=("last", "best"),
                          help="weights evaluated: last epoch's, or lowest validation error's")
    ten_crop: bool = option(False, help="validation error over the paper's 10 crops")
    workers: int | None = option(None, low=0, high=MAX_WORKERS, help="data loading processes (default: cores - 1)")
    device: str = option("auto", checked=DEVICE, help="where to compute: auto, cpu, cuda or cuda:N")

    def __post_init__(self) -> None:
        super().__post_init__()
        if not self.variants:
            raise ZFNetError("no ablation variant to train")
        for spec in self.variants:  # names and combinations, before any data is read or folder written
            parse_variant(spec, self.base)


@dataclass
class AblationRow:
    """The measured errors of one variant (fractions, 0-1), with the paper's (percent) where it has them.

    ``train_top1_error`` is the error training measured over the evaluated epoch's batches (training
    crops, dropout on); the validation errors are of the evaluated weights.
    """

    variant: str
    label: str
    architecture: str
    parameters: int
    options: dict[str, Any]
    epochs: int
    train_top1_error: float
    val_top1_error: float
    val_top5_error: float
    train_seconds: float
    run: str
    paper_model: str | None = None
    paper: tuple[float, float, float] | None = None


@dataclass
class Result(_Result):
    """The ablation study's numbers (``numbers``, as in ``ablation.json``) and one row per variant."""

    kind = NAME

    rows: list[AblationRow] = field(default_factory=list)

    def row(self, variant: str) -> AblationRow:
        """The row of a variant, by its (canonical) name."""
        for r in self.rows:
            if r.variant == variant:
                return r
        raise KeyError(variant)

    def lines(self) -> list[str]:
        width = max(len(r.variant) for r in self.rows)
        lines = [f"{'variant':<{width}}  train top-1  val top-1  val top-5"]
        lines += [f"{r.variant:<{width}}  {_pct(r.train_top1_error):10.1f}%  {_pct(r.val_top1_error):8.1f}%  "
                  f"{_pct(r.val_top5_error):8.1f}%" for r in self.rows]
        lines.append(self.numbers["report"]["summary"])
        if self.out is not None:
            lines.append(f"runs in {self.out / 'runs'}")
        return lines


def _pct(x: float) -> float:
    return round(100.0 * x, 2)


# The rows of the paper's depth finding, tested image by image where the study has both.
NO_FC = "no-fc6-7"
SHALLOW = "no-conv3-4+no-fc6-7"
_DEPTH = "the paper's finding (removing conv3, conv4, fc6 and fc7 hurts more than removing fc6 and fc7)"


# Fields that make two runs different experiments; the rest (epochs, workers, device, cache) do not.
_IDENTITY = ("data", "model", "model_options", "layout", "batch_size", "lr", "momentum", "weight_decay",
             "max_filter_rms", "lr_factor", "lr_patience", "min_lr", "seed")


def _saved_metrics(run: Path) -> list[dict[str, Any]]:
    """The per-epoch metrics a run saved (none for a new run)."""
    files = RunFiles(run)
    if not files.metrics.is_file():
        return []
    return [json.loads(line) for line in files.metrics.read_text().splitlines() if line.strip()]


def run_variant(config: TrainConfig, *, show_progress: bool = True) -> list[dict[str, Any]]:
    """Train one variant's run, resuming it if it was interrupted, and return its per-epoch metrics.

    Args:
        config: the run's :class:`~zfnet.train.TrainConfig`.
        show_progress: progress bars.

    Returns:
        The metrics of every epoch: what :func:`zfnet.train.train` returned, or for a run that had
        already finished, what it saved.

    Raises:
        ZFNetError: the folder holds a run made with other settings, or with more epochs than asked.
    """
    run = Path(config.out)
    files = RunFiles(run)
    if files.config.is_file():
        saved = load_run_config(files.config).to_json()  # every option checked by type and range
        wanted = config.to_json()
        if isinstance(saved.get("data"), str):  # a run stores its data folder resolved
            saved["data"] = str(Path(saved["data"]).expanduser().resolve())
            wanted["data"] = str(Path(wanted["data"]).expanduser().resolve())
        for key in _IDENTITY:
            if key in saved and saved[key] != wanted[key]:
                raise ZFNetError(f"{run} was trained with {key}={saved[key]!r}, not {wanted[key]!r}; "
                                 "use another --out or the same settings")
    metrics = _saved_metrics(run)
    if len(metrics) > config.epochs:
        raise ZFNetError(f"{run} has trained {len(metrics)} epochs, more than the {config.epochs} asked for; "
                         f"use --epochs {len(metrics)} or another --out")
    if len(metrics) == config.epochs:
        return metrics
    return train(config, resume=is_run_dir(run), show_progress=show_progress).metrics


def _prepare_out(out: Path) -> None:
    if out.exists():
        if not out.is_dir():
            raise ZFNetError(f"--out {out} is a file, not a folder")
        ours = (out / "runs").is_dir() or (out / "ablation.json").is_file()
        if not ours and folder_entries(out):
            raise ZFNetError(f"--out {out} is not empty and holds no ablation study; choose an empty or new folder")
    out.mkdir(parents=True, exist_ok=True)


def _evaluated_epoch(metrics: list[dict[str, Any]], weights: str) -> dict[str, Any]:
    """The metrics of the epoch whose weights are evaluated: the last, or the first with the lowest val error
    (the epoch training kept as ``best``)."""
    if weights == "last":
        return metrics[-1]
    return min(metrics, key=lambda m: m["val_top1_error"])


def run(config: Config, out: str | Path, *, loaded: None = None, show_progress: bool = True) -> Result:
    """Train every variant of ``config.base`` the same way and tabulate their errors (the paper's Table 3).

    Each variant is trained in ``out/runs/<variant>`` with the paper's recipe; finished runs are skipped
    and an interrupted one resumes, so the same call after an interruption carries on. Each run's
    ``weights`` are then evaluated once, on the validation set (top-1 and top-5 error); its training
    top-1 error is the one training measured. Writes ``out/ablation.{json,md,csv}`` and
    ``out/ablation.config.json``.

    Args:
        config: the options.
        out: the study's folder (new, empty, or an earlier study's).
        loaded: not used: the study trains its own models (an experiment's common signature).
        show_progress: progress bars.

    Returns:
        A :class:`Result`; ``row(variant)`` gives a variant's errors.

    Raises:
        ZFNetError: a foreign ``out``, a run made with other settings, unreadable data.
    """
    t0 = time.perf_counter()
    out = Path(out)
    # Everything is checked before any training: the data and the folder (the variants by the Config).
    classes = len(open_dataset(config.data, "train", 8).classes)
    parsed: list[Variant] = []
    for spec in config.variants:
        v = parse_variant(spec, config.base, classes)
        if v.name not in {p.name for p in parsed}:
            parsed.append(v)
    configs = [TrainConfig(data=str(config.data), out=str(out / "runs" / v.name), model=config.base,
                           model_options=v.options, epochs=config.epochs, batch_size=config.batch_size, lr=config.lr,
                           lr_patience=config.lr_patience, seed=config.seed, workers=config.workers,
                           device=config.device) for v in parsed]
    _prepare_out(out)

    metrics: list[list[dict[str, Any]]] = []
    for i, (v, train_config) in enumerate(zip(parsed, configs), 1):
        done = len(_saved_metrics(Path(train_config.out)))
        if done >= config.epochs:
            log.info("[%d/%d] %s: already trained (%d epochs)", i, len(parsed), v.name, done)
        else:
            log.info("[%d/%d] %s (%s): training for %d epochs%s", i, len(parsed), v.name, v.label, config.epochs,
                     f", resuming after epoch {done}" if done else "")
        metrics.append(run_variant(train_config, show_progress=show_progress))

    device = resolve_device(config.device)
    family = _family(config.base)
    rows, outputs = [], {}
    for v, train_config, epochs in zip(parsed, configs, metrics):
        (val,), _ = predict_runs([Path(train_config.out)], config.data, split="val", ten_crop=config.ten_crop,
                                 weights=config.weights, layout=train_config.layout, workers=config.workers,
                                 device=device, show_progress=show_progress)
        outputs[v.name] = val
        errors = val.errors()
        paper_model, paper = None, None
        for net in (family, *[n for n in PAPER_TABLE3 if n != family]):
            if v.name in PAPER_TABLE3[net]:
                paper_model, paper = _PAPER_NAMES[net], PAPER_TABLE3[net][v.name]
                break
        rows.append(AblationRow(
            variant=v.name, label=v.label, architecture=v.architecture, parameters=v.parameters,
            options=v.options, epochs=len(epochs),
            train_top1_error=float(_evaluated_epoch(epochs, config.weights)["train_top1_error"]),
            val_top1_error=errors.top1_error, val_top5_error=errors.top5_error,
            train_seconds=float(sum(m.get("seconds", 0.0) for m in epochs)), run=train_config.out,
            paper_model=paper_model, paper=paper))
    comparison = _depth_comparison(outputs)  # None: not both rows, or no image answered differently
    numbers = {"kind": NAME, "base": config.base, "data": str(config.data), "epochs": config.epochs,
               "ten_crop": config.ten_crop, "seconds": time.perf_counter() - t0,
               "variants": [asdict(r) for r in rows],
               "paper": {net: {v: list(e) for v, e in rows_.items()} for net, rows_ in PAPER_TABLE3.items()},
               "finding": _finding(comparison) if {NO_FC, SHALLOW} <= set(outputs) else None}
    report = _report(numbers, rows)
    files = write_results(out, NAME, numbers, report)
    files["config"] = write_config(out, NAME, config, device=str(device), classes=classes)
    numbers["report"] = report.to_json()
    return Result(out, numbers, files, rows=rows)


def _depth_comparison(outputs: dict[str, Predictions]) -> Comparison | None:
    """Does the net without conv3, conv4, fc6 and fc7 err more than the one without fc6 and fc7, image by image?"""
    if not {NO_FC, SHALLOW} <= set(outputs):
        return None
    return compare_errors(outputs[SHALLOW], outputs[NO_FC], alternative="greater")


def _finding(comparison: Comparison | None) -> dict[str, Any]:
    if comparison is None:
        return {"verdict": f"{SHALLOW} and {NO_FC} answer every validation image alike: no evidence either way",
                "difference": 0.0, "low": None, "high": None, "p_value": None}
    verdict = comparison.verdict(compared=f"{SHALLOW}'s validation top-1 error", baseline=f"{NO_FC}'s",
                                 finding=_DEPTH, digits=1)
    return {"verdict": verdict, "difference": comparison.difference, "low": comparison.low,
            "high": comparison.high, "p_value": comparison.p_value, "images_differing": comparison.sizes[0]}


def _spread(rows: list[AblationRow], base: str, epochs: int) -> str:
    """The first sentence: the range of validation top-1 error, naming the variants at each end."""
    many = f"{len(rows)} variant{'s' if len(rows) > 1 else ''} of {base} trained for {epochs} epochs each"
    errors = [_pct(r.val_top1_error) for r in rows]
    low, high = min(errors), max(errors)
    if len(rows) == 1:
        return f"{many}: {rows[0].variant} has {low:.1f}% validation top-1 error."
    if low == high:
        return f"{many}: all have {low:.1f}% validation top-1 error."

    def named(value: float) -> str:
        return ", ".join(r.variant for r, e in zip(rows, errors) if e == value)

    return f"{many}: validation top-1 error from {low:.1f}% ({named(low)}) to {high:.1f}% ({named(high)})."


def _summary(numbers: dict[str, Any], rows: list[AblationRow]) -> str:
    """The spread of validation error, the depth rows beside the paper's, and what the test of them allows."""
    text = _spread(rows, numbers["base"], numbers["epochs"])
    names = {r.variant for r in rows}
    if {"base", NO_FC, SHALLOW} <= names:
        base = next(r for r in rows if r.variant == "base").val_top1_error
        fc = next(r for r in rows if r.variant == NO_FC).val_top1_error - base
        deep = next(r for r in rows if r.variant == SHALLOW).val_top1_error - base
        text += (f" Removing fc6 and fc7 changes it by {100 * fc:+.1f} points, removing conv3, conv4, fc6 and "
                 f"fc7 by {100 * deep:+.1f} (the paper: +4.3 and +30.8 on Krizhevsky et al.'s net).")
    else:
        text += " The paper's numbers are beside the measured ones where it has the same variant."
    if numbers.get("finding"):
        text += f" Image by image: {numbers['finding']['verdict']}."
    return text


def _report(numbers: dict[str, Any], rows: list[AblationRow]) -> Report:
    columns = ["variant", "what it changes", "widths", "parameters", "train top-1 err %", "val top-1 err %",
               "val top-5 err %", "paper's network", "paper train top-1 %", "paper val top-1 %", "paper val top-5 %"]
    cells = [[r.variant, r.label, r.architecture, r.parameters, _pct(r.train_top1_error), _pct(r.val_top1_error),
              _pct(r.val_top5_error), r.paper_model or "—", *(r.paper or ("—", "—", "—"))] for r in rows]
    crops = "10 crops" if numbers["ten_crop"] else "centre crop"
    table = Table(f"Error % of each variant of {numbers['base']} ({numbers['epochs']} epochs, {crops}; train top-1 "
                  "as training measured it, dropout on), beside the paper's Table 3 (ImageNet 2012)", columns, cells)
    return Report("Ablations (Table 3)", _summary(numbers, rows), tables=[table])
