"""Ablations of the network's layers and widths: the paper's Table 3.

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
again with the same arguments and resumes the unfinished run, skipping finished ones.
"""

from __future__ import annotations

import csv
import io
import json
import logging
import time
from dataclasses import asdict, dataclass, field, fields, replace
from functools import lru_cache
from pathlib import Path
from typing import Any

from .._io import atomic_write_json, atomic_write_text, folder_entries
from ..errors import ZFNetError

__all__ = [
    "ATOMS", "PAPER_VARIANTS", "PAPER_TABLE3", "MINIATURE", "MINIATURE_DATA", "Variant", "parse_variant",
    "AblationRow", "AblationResult", "ablation_study", "run_variant",
]

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
    "fc-half": _Atom("adjust layers 6, 7: 2048 units", fc=2048),
    "fc-double": _Atom("adjust layers 6, 7: 8192 units", fc=8192),
    "conv-wide": _Atom("adjust layers 3, 4, 5: 512, 1024, 512 maps", conv345=(512, 1024, 512)),
}

# The rows of Table 3, in the paper's order (removals are on Krizhevsky's net, widths on both).
PAPER_VARIANTS: tuple[str, ...] = (
    "base", "no-conv3-4", "no-fc7", "no-fc6-7", "no-conv3-4+no-fc6-7", "fc-half", "fc-double", "conv-wide",
    "fc-double+conv-wide",
)

# Table 3, error % (train top-1, val top-1, val top-5), by the paper's network and variant.
PAPER_TABLE3: dict[str, dict[str, tuple[float, float, float]]] = {
    "alexnet": {
        "base": (35.1, 40.5, 18.1),
        "no-conv3-4": (41.8, 45.4, 22.1),
        "no-fc7": (27.4, 40.0, 18.4),
        "no-fc6-7": (27.4, 44.8, 22.4),
        "no-conv3-4+no-fc6-7": (71.1, 71.3, 50.1),
        "fc-half": (40.3, 41.7, 18.8),
        "fc-double": (26.8, 40.0, 18.1),
    },
    "zfnet": {
        "base": (33.1, 38.4, 16.5),
        "fc-half": (38.2, 40.2, 17.6),
        "fc-double": (22.0, 38.8, 17.0),
        "conv-wide": (18.8, 37.5, 16.0),
        "fc-double+conv-wide": (10.0, 38.3, 16.9),
    },
}
_PAPER_NAMES = {"alexnet": "Krizhevsky et al. (replication)", "zfnet": "ZFNet"}

# The miniature study of docs/experiments.md, the paper's nine rows on zfnet-tiny (about 3 minutes on 2 free
# cores): ``ablation_study(data, out, **MINIATURE)`` on ``write_synthetic(data, **MINIATURE_DATA)``.
MINIATURE: dict[str, Any] = {
    "base": "zfnet-tiny", "variants": PAPER_VARIANTS, "epochs": 30, "batch_size": 32, "lr": 1e-2,
    "train_options": {"lr_patience": 2},
}
MINIATURE_DATA: dict[str, Any] = {"classes": 10, "per_class": 200, "val_per_class": 50, "size": 73}


@dataclass(frozen=True)
class Variant:
    """One ablation of a base network.

    Attributes:
        name: canonical name, its atoms in ``ATOMS`` order joined by ``+`` (``base``: no change).
        label: what it changes, in the paper's words.
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
    """The layer configuration of a registered model (built once, with a one-class softmax)."""
    from ..models import build

    try:
        model = build(base, num_classes=1)
    except ValueError as err:
        raise ZFNetError(str(err)) from None
    if not hasattr(model, "config"):
        raise ZFNetError(f"model {base!r} has no layer configuration to ablate")
    return model.config


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
    label = _label(atoms, removed) or f"{base} as it is"
    return Variant(name="+".join(atoms) or "base", label=label, options=options,
                   architecture=_architecture(config), parameters=_parameters(config))


def _label(atoms: list[str], removed: list[str]) -> str:
    """The paper's wording: ``removed layers 3, 4, 6, 7``, ``adjust layers 6, 7: 8192 units``, joined by ``; ``."""
    parts = []
    if removed:
        numbers = [n[-1] for n in ("conv3", "conv4", "fc6", "fc7") if n in removed]
        parts.append(f"removed layer{'s' if len(numbers) > 1 else ''} {', '.join(numbers)}")
    parts += [ATOMS[a].description for a in atoms if not ATOMS[a].removed]
    return "; ".join(parts)


@dataclass
class AblationRow:
    """The measured errors of one variant (fractions, 0-1), with the paper's (percent) where it has them."""

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
class AblationResult:
    """An ablation study: one row per variant, and where its files went."""

    out: Path
    base: str
    data: str
    epochs: int
    rows: list[AblationRow]
    seconds: float
    ten_crop: bool = False
    files: dict[str, Path] = field(default_factory=dict)

    def row(self, variant: str) -> AblationRow:
        """The row of a variant, by its (canonical) name."""
        for r in self.rows:
            if r.variant == variant:
                return r
        raise KeyError(variant)

    def table(self) -> tuple[list[str], list[list[Any]]]:
        """Columns and rows of the table: measured errors in percent beside the paper's."""
        columns = ["variant", "what it changes", "widths", "parameters", "train top-1 err %",
                   "val top-1 err %", "val top-5 err %", "paper's network", "paper train top-1 %",
                   "paper val top-1 %", "paper val top-5 %"]
        rows = []
        for r in self.rows:
            paper = list(r.paper) if r.paper else [None, None, None]
            rows.append([r.variant, r.label, r.architecture, r.parameters, _pct(r.train_top1_error),
                         _pct(r.val_top1_error), _pct(r.val_top5_error), r.paper_model, *paper])
        return columns, rows

    def markdown(self) -> str:
        """The table as Markdown (paper's numbers beside, ``—`` where the paper has none)."""
        columns, rows = self.table()
        lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
        for row in rows:
            cells = ["—" if v is None else (f"{v:.1f}" if isinstance(v, float) else
                                             (f"{v:,}" if isinstance(v, int) else str(v))) for v in row]
            lines.append("| " + " | ".join(cells) + " |")
        return "\n".join(lines) + "\n"

    def csv(self) -> str:
        """The table as CSV (errors in percent; empty cells where the paper has none)."""
        columns, rows = self.table()
        buf = io.StringIO()
        writer = csv.writer(buf, lineterminator="\n")
        writer.writerow(columns)
        for row in rows:
            writer.writerow(["" if v is None else (f"{v:.2f}" if isinstance(v, float) else v) for v in row])
        return buf.getvalue()

    def summary(self) -> str:
        """Two sentences: the spread of validation error, and the depth finding where both rows exist."""
        best = min(self.rows, key=lambda r: r.val_top1_error)
        worst = max(self.rows, key=lambda r: r.val_top1_error)
        text = (f"{len(self.rows)} variants of {self.base} trained for {self.epochs} epochs each: validation "
                f"top-1 error from {_pct(best.val_top1_error):.1f}% ({best.variant}) to "
                f"{_pct(worst.val_top1_error):.1f}% ({worst.variant}).")
        names = {r.variant for r in self.rows}
        if {"base", "no-fc6-7", "no-conv3-4+no-fc6-7"} <= names:
            base = self.row("base").val_top1_error
            fc = self.row("no-fc6-7").val_top1_error - base
            deep = self.row("no-conv3-4+no-fc6-7").val_top1_error - base
            text += (f" Removing fc6 and fc7 changes it by {100 * fc:+.1f} points, removing conv3, conv4, fc6 and "
                     f"fc7 by {100 * deep:+.1f} (the paper: +4.3 and +30.8 on Krizhevsky et al.'s net).")
        else:
            text += " The paper's numbers are beside the measured ones where it has the same variant."
        return text

    def to_json(self) -> dict[str, Any]:
        """Everything measured, the paper's numbers and a ``report`` block for the HTML report."""
        columns, rows = self.table()
        return {
            "kind": "ablation",
            "base": self.base,
            "data": self.data,
            "epochs": self.epochs,
            "ten_crop": self.ten_crop,
            "seconds": self.seconds,
            "variants": [asdict(r) for r in self.rows],
            "paper": {net: {v: list(e) for v, e in rows_.items()} for net, rows_ in PAPER_TABLE3.items()},
            "report": {
                "title": "Ablations (Table 3)",
                "summary": self.summary(),
                "figures": [],
                "tables": [{"caption": f"Error % of each variant of {self.base} ({self.epochs} epochs, "
                                       f"{'10 crops' if self.ten_crop else 'centre crop'}), beside the paper's "
                                       "Table 3 (ImageNet 2012)", "columns": columns, "rows": rows}],
            },
        }

    def __str__(self) -> str:
        width = max(len(r.variant) for r in self.rows)
        lines = [f"{'variant':<{width}}  train top-1  val top-1  val top-5"]
        for r in self.rows:
            lines.append(f"{r.variant:<{width}}  {_pct(r.train_top1_error):10.1f}%  {_pct(r.val_top1_error):8.1f}%  "
                         f"{_pct(r.val_top5_error):8.1f}%")
        return "\n".join(lines)


def _pct(x: float) -> float:
    return round(100.0 * x, 2)


# Fields that make two runs different experiments; the rest (epochs, workers, device, cache) do not.
_IDENTITY = ("data", "model", "model_options", "layout", "batch_size", "lr", "momentum", "weight_decay",
             "max_filter_rms", "lr_factor", "lr_patience", "min_lr", "seed")


def _finished_epochs(run: Path) -> int:
    from ..train.checkpoint import RunFiles

    files = RunFiles(run)
    if not files.metrics.is_file():
        return 0
    return sum(1 for line in files.metrics.read_text().splitlines() if line.strip())


def run_variant(config, *, show_progress: bool = True) -> bool:
    """Train one variant's run, resuming it if it was interrupted; ``False`` if it had already finished.

    Args:
        config: the run's :class:`~zfnet.train.TrainConfig`.
        show_progress: progress bars.

    Raises:
        ZFNetError: the folder holds a run made with other settings, or with more epochs than asked.
    """
    from ..train import train
    from ..train.checkpoint import RunFiles, is_run_dir, load_run_config

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
    done = _finished_epochs(run)
    if done > config.epochs:
        raise ZFNetError(f"{run} has trained {done} epochs, more than the {config.epochs} asked for; "
                         f"use --epochs {done} or another --out")
    if done == config.epochs:
        return False
    train(config, resume=is_run_dir(run), show_progress=show_progress)
    return True


def _prepare_out(out: Path) -> None:
    if out.exists():
        if not out.is_dir():
            raise ZFNetError(f"--out {out} is a file, not a folder")
        ours = (out / "runs").is_dir() or (out / "ablation.json").is_file()
        if not ours and folder_entries(out):
            raise ZFNetError(f"--out {out} is not empty and holds no ablation study; choose an empty or new folder")
    out.mkdir(parents=True, exist_ok=True)


def ablation_study(data: str | Path, out: str | Path, *, base: str = "zfnet", variants=PAPER_VARIANTS,
                   epochs: int = 70, batch_size: int = 128, lr: float = 1e-2, seed: int = 0,
                   train_options: dict[str, Any] | None = None, weights: str = "last", ten_crop: bool = False,
                   workers: int | None = None, device: str = "auto", show_progress: bool = True) -> AblationResult:
    """Train every variant of ``base`` the same way and tabulate their errors (the paper's Table 3).

    Each variant is trained in ``out/runs/<variant>`` with the paper's recipe; finished runs are skipped
    and an interrupted one resumes, so the same call after an interruption carries on. Then each run's
    ``weights`` are evaluated on the training set (centre crop: train top-1 error) and the validation set
    (top-1 and top-5 error), and ``out/ablation.{json,md,csv}`` are written.

    Args:
        data: data folder with ``train/`` and ``val/``.
        out: the study's folder (new, empty, or an earlier study's).
        base: the registered model the variants change (``zfnet``, ``alexnet``, ``zfnet-tiny``, ...).
        variants: variant names (see :func:`parse_variant`); by default the paper's nine rows.
        epochs, batch_size, lr, seed: the recipe's, the same for every variant.
        train_options: other :class:`~zfnet.train.TrainConfig` fields (``lr_patience``, ``weight_decay``, ...).
        weights: which weights of each run are evaluated: ``last`` (no choice made on the validation set)
            or ``best``.
        ten_crop: evaluate the validation set with the paper's ten crops instead of the centre crop.
        workers: data loading processes (``None``: cores - 1).
        device: ``auto``, ``cpu`` or ``cuda``.
        show_progress: progress bars.

    Returns:
        An :class:`AblationResult`; ``files`` names the written json, md and csv.

    Raises:
        ZFNetError: an unknown or contradictory variant, a foreign ``out``, a run made with other settings.

    Example:
        >>> result = ablation_study("data", "ablation", base="zfnet-tiny",  # doctest: +SKIP
        ...                         variants=["base", "no-fc6-7", "no-conv3-4+no-fc6-7"], epochs=30, batch_size=32)
        >>> result.row("no-fc6-7").val_top1_error  # doctest: +SKIP
        0.578
    """
    from ..data.folders import open_dataset
    from ..train import TrainConfig, evaluate_runs
    from ..train.distributed import resolve_device

    t0 = time.perf_counter()
    out = Path(out)
    if isinstance(variants, str):
        variants = [variants]
    if not variants:
        raise ZFNetError("no ablation variant to train")
    # Everything is checked before any training: names, options, the data and the folder.
    classes = len(open_dataset(data, "train", 8, layout=(train_options or {}).get("layout", "auto")).classes)
    parsed: list[Variant] = []
    for spec in variants:
        v = parse_variant(spec, base, classes)
        if v.name not in {p.name for p in parsed}:
            parsed.append(v)
    extra = dict(train_options or {})
    own = ("data", "out", "model", "model_options", "epochs", "batch_size", "lr", "seed", "workers", "device")
    valid = sorted({f.name for f in fields(TrainConfig)} - set(own))
    for key in extra:
        if key in own:
            raise ZFNetError(f"train_options cannot set {key!r}; it is an argument of the study")
        if key not in valid:
            raise ZFNetError(f"unknown training option {key!r} in train_options; valid: {', '.join(valid)}")
    if weights not in ("last", "best"):
        raise ZFNetError(f"weights must be last or best, got {weights!r}")
    configs = [TrainConfig(data=str(data), out=str(out / "runs" / v.name), model=base, model_options=v.options,
                           epochs=epochs, batch_size=batch_size, lr=lr, seed=seed, workers=workers,
                           device=device, **extra) for v in parsed]
    _prepare_out(out)

    for i, (v, config) in enumerate(zip(parsed, configs), 1):
        done = _finished_epochs(Path(config.out))
        if done >= epochs:
            log.info("[%d/%d] %s: already trained (%d epochs)", i, len(parsed), v.name, done)
        else:
            log.info("[%d/%d] %s (%s): training for %d epochs%s", i, len(parsed), v.name, v.label, epochs,
                     f", resuming after epoch {done}" if done else "")
        run_variant(config, show_progress=show_progress)

    eval_device = resolve_device(device)
    family = _family(base)
    rows = []
    for v, config in zip(parsed, configs):
        run = Path(config.out)
        common = dict(weights=weights, layout=config.layout, workers=workers, device=eval_device,
                      show_progress=show_progress)
        train_eval = evaluate_runs([run], data, split="train", **common).members[0]
        val_eval = evaluate_runs([run], data, split="val", ten_crop=ten_crop, **common).members[0]
        metrics = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines() if line.strip()]
        paper_model, paper = None, None
        for net in (family, *[n for n in PAPER_TABLE3 if n != family]):
            if v.name in PAPER_TABLE3[net]:
                paper_model, paper = _PAPER_NAMES[net], PAPER_TABLE3[net][v.name]
                break
        rows.append(AblationRow(
            variant=v.name, label=v.label, architecture=v.architecture, parameters=v.parameters,
            options=v.options, epochs=len(metrics), train_top1_error=train_eval.top1_error,
            val_top1_error=val_eval.top1_error, val_top5_error=val_eval.top5_error,
            train_seconds=float(sum(m.get("seconds", 0.0) for m in metrics)), run=str(run),
            paper_model=paper_model, paper=paper))
    result = AblationResult(out, base, str(data), epochs, rows, time.perf_counter() - t0, ten_crop)
    result.files = {"json": out / "ablation.json", "markdown": out / "ablation.md", "csv": out / "ablation.csv"}
    atomic_write_json(result.files["json"], result.to_json())
    atomic_write_text(result.files["markdown"], f"# {result.to_json()['report']['title']}\n\n"
                      f"{result.summary()}\n\n{result.markdown()}")
    atomic_write_text(result.files["csv"], result.csv())
    return result

