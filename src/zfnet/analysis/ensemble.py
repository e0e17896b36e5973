"""Ensembles of trained runs: the paper's Table 2.

Zeiler & Fergus (2014, Table 2) average the softmax outputs of several networks: five ZFNets (a) lower
the validation top-1 error from 38.4% to 36.7%, and adding one net with wider conv3-5 (b) to them,
"(a) & (b) combined", to 36.0%. :func:`ensemble_study` reports each run alone, the ensemble of each
architecture when the runs mix several (the paper's (a)), and the ensemble of all runs, reusing
:func:`zfnet.train.evaluate_runs` (runs may differ in architecture and input size; they must share
the class list).
"""

from __future__ import annotations

import csv
import io
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch

from .._io import atomic_write_json, atomic_write_text
from ..errors import ZFNetError

__all__ = ["PAPER_TABLE2", "EnsembleRow", "EnsembleResult", "ensemble_study", "run_architecture"]

# Table 2, ImageNet 2012 error % (val top-1, val top-5, test top-5; None where the paper gives none).
PAPER_TABLE2: list[tuple[str, float, float, float | None]] = [
    ("Krizhevsky et al., 1 convnet", 40.7, 18.2, None),
    ("Krizhevsky et al., 5 convnets", 38.1, 16.4, 16.4),
    ("replication of Krizhevsky et al., 1 convnet", 40.5, 18.1, None),
    ("1 ZFNet (Fig. 3)", 38.4, 16.5, None),
    ("5 ZFNets (a)", 36.7, 15.3, 15.3),
    ("1 ZFNet with conv3,4,5 = 512,1024,512 maps (b)", 37.5, 16.0, 16.1),
    ("6 convnets, (a) & (b) combined", 36.0, 14.7, 14.8),
]


@dataclass
class EnsembleRow:
    """Errors (fractions, 0-1) of one run alone or of an ensemble (``members`` > 1)."""

    name: str
    architecture: str
    members: list[str]
    top1_error: float
    top5_error: float
    images: int


@dataclass
class EnsembleResult:
    """Each run alone, each architecture's ensemble, and the ensemble of all runs."""

    rows: list[EnsembleRow]
    data: str
    split: str
    ten_crop: bool
    weights: str
    seconds: float
    bad_files: int = 0
    files: dict[str, Path] = field(default_factory=dict)

    @property
    def ensemble(self) -> EnsembleRow | None:
        """The ensemble of all the runs (None for a single run)."""
        last = self.rows[-1]
        return last if len(last.members) > 1 and len(last.members) == sum(
            len(r.members) == 1 for r in self.rows) else None

    def table(self) -> tuple[list[str], list[list[Any]]]:
        """Columns and rows: top-1 and top-5 error in percent."""
        columns = ["model", "architecture", "runs", "top-1 err %", "top-5 err %", "images"]
        rows = [[r.name, r.architecture, len(r.members), round(100 * r.top1_error, 2), round(100 * r.top5_error, 2),
                 r.images] for r in self.rows]
        return columns, rows

    def markdown(self) -> str:
        """The measured table and the paper's Table 2, as Markdown."""
        columns, rows = self.table()
        lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
        for row in rows:
            lines.append("| " + " | ".join(f"{v:.1f}" if isinstance(v, float) else str(v) for v in row) + " |")
        lines += ["", "The paper's Table 2 (ImageNet 2012 validation, error %):", "",
                  "| model | top-1 | top-5 | test top-5 |", "|---|---|---|---|"]
        for name, t1, t5, test in PAPER_TABLE2:
            lines.append(f"| {name} | {t1:.1f} | {t5:.1f} | {'—' if test is None else f'{test:.1f}'} |")
        return "\n".join(lines) + "\n"

    def csv(self) -> str:
        """The measured table as CSV."""
        columns, rows = self.table()
        buf = io.StringIO()
        writer = csv.writer(buf, lineterminator="\n")
        writer.writerow(columns)
        writer.writerows(rows)
        return buf.getvalue()

    def summary(self) -> str:
        """Two sentences: the best single run against the ensemble of all."""
        singles = [r for r in self.rows if len(r.members) == 1]
        best = min(singles, key=lambda r: r.top1_error)
        crops = "10 crops" if self.ten_crop else "centre crop"
        first = (f"{len(singles)} run(s) evaluated on {self.split} ({crops}): the best alone, {best.name}, has "
                 f"{100 * best.top1_error:.1f}% top-1 error.")
        ens = self.ensemble
        if ens is None:
            return first + " An ensemble needs at least two runs."
        change = 100 * (ens.top1_error - best.top1_error)
        return first + (f" Averaging the softmax outputs of the {len(ens.members)} runs gives "
                        f"{100 * ens.top1_error:.1f}% ({change:+.1f} points; the paper: 38.4% for one ZFNet, "
                        "36.0% for six convnets).")

    def to_json(self) -> dict[str, Any]:
        """Everything measured, the paper's Table 2 and a ``report`` block for the HTML report."""
        columns, rows = self.table()
        paper_rows = [[n, t1, t5, test] for n, t1, t5, test in PAPER_TABLE2]
        return {
            "kind": "ensemble",
            "data": self.data,
            "split": self.split,
            "ten_crop": self.ten_crop,
            "weights": self.weights,
            "seconds": self.seconds,
            "bad_files": self.bad_files,
            "results": [asdict(r) for r in self.rows],
            "paper": [dict(zip(("model", "top1_error", "top5_error", "test_top5_error"), r)) for r in paper_rows],
            "report": {
                "title": "Ensembles (Table 2)",
                "summary": self.summary(),
                "figures": [],
                "tables": [
                    {"caption": f"Error % of each run and of averaged softmax outputs ({self.split}, "
                                f"{'10 crops' if self.ten_crop else 'centre crop'})", "columns": columns,
                     "rows": rows},
                    {"caption": "The paper's Table 2 (ImageNet 2012, error %)",
                     "columns": ["model", "val top-1", "val top-5", "test top-5"], "rows": paper_rows},
                ],
            },
        }

    def __str__(self) -> str:
        width = max(len(r.name) for r in self.rows)
        lines = [f"{'model':<{width}}  top-1 err  top-5 err"]
        for r in self.rows:
            lines.append(f"{r.name:<{width}}  {100 * r.top1_error:8.2f}%  {100 * r.top5_error:8.2f}%")
        return "\n".join(lines)


def run_architecture(run: str | Path, weights: str = "best") -> str:
    """A run's architecture: its model name and any model options, read from the weights' metadata.

    Example:
        >>> run_architecture("runs/zfnet")  # doctest: +SKIP
        'zfnet-cpu'
    """
    from ..train.checkpoint import RunFiles, read_weights_metadata

    path = Path(run)
    if not (path.is_file() and path.suffix == ".safetensors"):
        path = RunFiles(path).weights(weights)
    meta = read_weights_metadata(path)  # every key checked by type and range
    name = str(meta.get("model", "unknown"))
    options = meta.get("model_options") or {}
    if options:
        name += " (" + ", ".join(f"{k}={_short(v)}" for k, v in sorted(options.items())) + ")"
    return name


def _short(value: Any) -> str:
    if isinstance(value, (list, tuple)):
        return "/".join(str(v) for v in value)
    return str(value)


def ensemble_study(runs: list[str | Path], data: str | Path, out: str | Path | None = None, *, split: str = "val",
                   ten_crop: bool = False, weights: str = "best", layout: str = "auto", workers: int | None = None,
                   batch_size: int = 64, device: str | torch.device = "cpu",
                   show_progress: bool = True) -> EnsembleResult:
    """Error of each run alone, of each architecture's ensemble and of all runs' averaged softmax.

    With runs of one architecture the rows are each run and their ensemble (the paper's "5 ZFNets (a)");
    with several architectures, each architecture with two or more runs gets its own ensemble row, then
    all runs together (the paper's "(a) & (b) combined").

    Args:
        runs: run directories (or ``.safetensors`` files in them), at least one.
        data: data folder.
        out: folder for ``ensemble.json``, ``ensemble.md`` and ``ensemble.csv`` (None: write nothing).
        split: split folder to evaluate on.
        ten_crop: average the softmax of the paper's ten crops for each model.
        weights: ``best``, ``last`` or ``epoch-N``.
        layout, workers, batch_size, device: as for :func:`zfnet.train.evaluate_runs`.
        show_progress: progress bars.

    Returns:
        An :class:`EnsembleResult`.

    Raises:
        ZFNetError: no run, a run named twice, unreadable runs, runs trained on different classes.

    Example:
        >>> result = ensemble_study(["runs/zfnet", "runs/alexnet"], "data", "ensemble")  # doctest: +SKIP
        >>> print(result)  # doctest: +SKIP
    """
    from ..train import evaluate_runs

    t0 = time.perf_counter()
    if not runs:
        raise ZFNetError("no run to evaluate")
    paths = [Path(r) for r in runs]
    resolved = [p.resolve() for p in paths]
    if len(set(resolved)) != len(resolved):
        dup = next(p for p, r in zip(paths, resolved) if resolved.count(r) > 1)
        raise ZFNetError(f"run {dup} is named twice; an ensemble averages different runs")
    common = dict(split=split, ten_crop=ten_crop, weights=weights, layout=layout, workers=workers,
                  batch_size=batch_size, device=device, show_progress=show_progress)
    report = evaluate_runs(paths, data, **common)  # checks the runs and the data first
    archs = [run_architecture(p, weights) for p in paths]
    names = _names(paths)
    rows = [EnsembleRow(n, a, [str(p)], m.top1_error, m.top5_error, m.images)
            for n, a, p, m in zip(names, archs, paths, report.members)]
    groups: dict[str, list[int]] = {}
    for i, a in enumerate(archs):
        groups.setdefault(a, []).append(i)
    if len(groups) > 1:
        # Each architecture's own ensemble, evaluated again on its members alone (the paper's (a)).
        for arch, idx in groups.items():
            if len(idx) < 2:
                continue
            sub = evaluate_runs([paths[i] for i in idx], data, **common).ensemble
            rows.append(EnsembleRow(f"{len(idx)} × {arch}", arch, [str(paths[i]) for i in idx], sub.top1_error,
                                    sub.top5_error, sub.images))
    if report.ensemble is not None:
        arch = " & ".join(groups) if len(groups) > 1 else archs[0]
        label = (f"{len(paths)} runs combined ({arch})" if len(groups) > 1 else f"{len(paths)} × {arch}")
        rows.append(EnsembleRow(label, arch, [str(p) for p in paths], report.ensemble.top1_error,
                                report.ensemble.top5_error, report.ensemble.images))
    result = EnsembleResult(rows, str(data), split, ten_crop, weights, time.perf_counter() - t0, report.bad_files)
    if out is not None:
        out = Path(out)
        result.files = {"json": out / "ensemble.json", "markdown": out / "ensemble.md", "csv": out / "ensemble.csv"}
        atomic_write_json(result.files["json"], result.to_json())
        atomic_write_text(result.files["markdown"], f"# Ensembles (Table 2)\n\n{result.summary()}\n\n"
                          f"{result.markdown()}")
        atomic_write_text(result.files["csv"], result.csv())
    return result


def _names(paths: list[Path]) -> list[str]:
    """Short distinct names: the last parts of each path (two at least for a weights file), as few as differ."""
    for depth in range(1, 1 + max(len(p.parts) for p in paths)):
        names = ["/".join(p.parts[-max(depth, 2 if p.suffix == ".safetensors" else 1):]) for p in paths]
        if len(set(names)) == len(names):
            return names
    return [str(p) for p in paths]
