"""``zfnet experiment ensemble``: runs alone and their averaged softmax, the paper's Table 2.

Zeiler & Fergus (2014, Table 2) average the softmax outputs of several networks: five ZFNets (a) lower
the validation top-1 error from 38.4% to 36.7%, and adding one net with wider conv3-5 (b) to them,
"(a) & (b) combined", to 36.0%. :func:`run` reports each run alone, the ensemble of each architecture
when the runs mix several (the paper's (a)), and the ensemble of all runs. Each run's softmax outputs
are computed once (:func:`zfnet.train.evaluate.predict_runs`) and every group is averaged from them.
Runs may differ in architecture and input size; they must share the class list.

Whether the ensemble of all runs errs less than the best run alone is tested image by image
(:func:`compare_errors`, a paired permutation test), and the summary says what that test allows.

Example:
    >>> from zfnet.experiments import ensemble
    >>> config = ensemble.Config(runs=("runs/zfnet", "runs/alexnet"), data="data/synth")  # doctest: +SKIP
    >>> print(ensemble.run(config, "out/ensemble").summary())  # doctest: +SKIP
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from ..analysis.stats import Comparison, paired_difference
from ..distributed import resolve_device
from ..errors import ZFNetError
from ..paper import PAPER_TABLE2
from ..results import Report, Table, write_results
from ..train.checkpoint import RunFiles, read_weights_metadata
from ..train.evaluate import Predictions, average, predict_runs
from ..train.run import LoadedRun, architecture_name
from .base import DEVICE, MAX_BATCH, MAX_WORKERS, Options, option, write_config
from .base import Result as _Result

__all__ = ["Config", "Result", "EnsembleRow", "run", "run_architecture", "compare_errors",
           "NAME", "HELP", "DESCRIPTION", "DEFAULT_OUT"]

NAME = "ensemble"
HELP = "error of each run and of their averaged softmax (Table 2)"
DESCRIPTION = ("Each run alone, each architecture's ensemble when the runs mix several, and all runs combined; "
               "writes OUT/ensemble.json, .md and .csv beside the paper's Table 2. Each run is evaluated once; "
               "whether the ensemble errs less than the best run alone is tested image by image.")
DEFAULT_OUT = "zfnet-ensemble"
"""The folder the command line writes when ``--out`` is not given."""

_WEIGHTS = dict(choices=("best", "last", "epoch-N"), pattern=r"best|last|epoch-[0-9]{1,9}")
_FINDING = "the paper's finding (an ensemble errs less than its best member)"


@dataclass(frozen=True, kw_only=True)
class Config(Options):
    """The ensemble experiment's options (``zfnet experiment ensemble --help`` shows the same)."""

    what = "ensemble option"

    runs: tuple[str, ...] = option(positional=True, nargs="+", metavar="RUN", max_items=1000,
                                   help="run directories, or .safetensors files in them (two or more to ensemble)")
    data: str = option(help="data folder")
    split: str = option("val", help="split folder to evaluate on")
    ten_crop: bool = option(False, help="average the softmax of the paper's 10 crops")
    weights: str = option("best", help="weights of each run: best, last or epoch-N", **_WEIGHTS)
    layout: str = option("auto", choices=("auto", "folders", "imagenet"), help="data layout")
    batch_size: int = option(64, low=1, high=MAX_BATCH, help="images per forward pass")
    workers: int | None = option(None, low=0, high=MAX_WORKERS, help="data loading processes (default: cores - 1)")
    device: str = option("auto", checked=DEVICE, help="where to compute: auto, cpu, cuda or cuda:N")

    def __post_init__(self) -> None:
        super().__post_init__()
        if not self.runs:
            raise ZFNetError("no run to evaluate")


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
class Result(_Result):
    """The ensemble experiment's numbers (``numbers``, as in ``ensemble.json``) and its rows."""

    kind = NAME

    rows: list[EnsembleRow] = field(default_factory=list)

    @property
    def ensemble(self) -> EnsembleRow | None:
        """The ensemble of all the runs (None for a single run)."""
        last = self.rows[-1]
        singles = sum(len(r.members) == 1 for r in self.rows)
        return last if len(last.members) > 1 and len(last.members) == singles else None

    def lines(self) -> list[str]:
        width = max(len(r.name) for r in self.rows)
        lines = [f"{'model':<{width}}  top-1 err  top-5 err"]
        lines += [f"{r.name:<{width}}  {100 * r.top1_error:8.2f}%  {100 * r.top5_error:8.2f}%" for r in self.rows]
        return [*lines, self.numbers["report"]["summary"]]


def run_architecture(run: str | Path | LoadedRun, weights: str = "best") -> str:
    """A run's architecture: its model name and any model options, read from the weights' metadata.

    Example:
        >>> run_architecture("runs/zfnet")  # doctest: +SKIP
        'zfnet-cpu'
    """
    if isinstance(run, LoadedRun):
        meta = run.metadata
    else:
        path = Path(run)
        if not (path.is_file() and path.suffix == ".safetensors"):
            path = RunFiles(path).weights(weights)
        meta = read_weights_metadata(path)  # every key checked by type and range
    return architecture_name(meta)


def compare_errors(first: Predictions, second: Predictions, *, alternative: str = "less",
                   seed: int = 0) -> Comparison | None:
    """Paired permutation test of two models' top-1 errors on the images both read, in percentage points.

    An image both get right, or both wrong, adds nothing to a sign-flip test of the paired
    differences, so the test runs on the images where exactly one of the two errs (as McNemar's
    test does); the difference and its interval are then scaled by the share of such images, which
    makes them differences of error rates over all the images, conditional on which images differ.

    Args:
        first, second: the two models' outputs over one split.
        alternative: ``"less"``: the first errs less; ``"greater"`` or ``"two-sided"``.
        seed: seeds the random sign patterns (when they are too many to list).

    Returns:
        A :class:`~zfnet.analysis.stats.Comparison` of ``first − second`` in points of top-1 error,
        whose unit counts the images answered differently; None when no image is.
    """
    at_first = {int(i): n for n, i in enumerate(first.indices.tolist())}
    at_second = {int(i): n for n, i in enumerate(second.indices.tolist())}
    common = sorted(set(at_first) & set(at_second))
    a = first.wrong()[[at_first[i] for i in common]].double()
    b = second.wrong()[[at_second[i] for i in common]].double()
    differ = (a - b) != 0
    k, n = int(differ.sum()), len(common)
    if k == 0:
        return None
    # Draws x images booleans become a float matrix in the test: bounded to ~20M cells, at least 200 draws.
    permutations = max(200, min(10_000, 20_000_000 // k))
    c = paired_difference(100 * a[differ], 100 * b[differ], alternative=alternative, permutations=permutations,
                          seed=seed, unit=f"of {n} images answered differently")
    share = k / n
    return dataclasses.replace(c, difference=c.difference * share, low=c.low * share, high=c.high * share)


def run(config: Config, out: str | Path | None = DEFAULT_OUT, *, loaded: Sequence[LoadedRun] | None = None,
        show_progress: bool = True) -> Result:
    """Error of each run alone, of each architecture's ensemble and of all runs' averaged softmax.

    With runs of one architecture the rows are each run and their ensemble (the paper's "5 ZFNets (a)");
    with several architectures, each architecture with two or more runs gets its own ensemble row, then
    all runs together (the paper's "(a) & (b) combined"). Each run is evaluated once.

    Args:
        config: the options.
        out: folder for ``ensemble.json``, ``.md``, ``.csv`` and ``ensemble.config.json`` (None: write nothing).
        loaded: the runs of ``config.runs``, already loaded by the caller, in the same order.
        show_progress: progress bars.

    Returns:
        A :class:`Result`.

    Raises:
        ZFNetError: a run named twice, unreadable runs, runs trained on different classes.
    """
    t0 = time.perf_counter()
    paths = [Path(r) for r in config.runs]
    resolved = [p.resolve() for p in paths]
    if len(set(resolved)) != len(resolved):
        dup = next(p for p, r in zip(paths, resolved) if resolved.count(r) > 1)
        raise ZFNetError(f"run {dup} is named twice; an ensemble averages different runs")
    if loaded is not None and len(loaded) != len(paths):
        raise ZFNetError(f"{len(loaded)} loaded runs for the {len(paths)} runs of the config")
    members, bad = predict_runs(list(loaded) if loaded is not None else paths, config.data, split=config.split,
                                ten_crop=config.ten_crop, weights=config.weights, layout=config.layout,
                                workers=config.workers, batch_size=config.batch_size,
                                device=resolve_device(config.device), show_progress=show_progress)
    archs = [run_architecture(r, config.weights) for r in (loaded if loaded is not None else paths)]
    names = _names(paths)
    rows = [_row(n, a, [str(p)], m.errors()) for n, a, p, m in zip(names, archs, paths, members)]
    groups: dict[str, list[int]] = {}
    for i, a in enumerate(archs):
        groups.setdefault(a, []).append(i)
    if len(groups) > 1:  # each architecture's own ensemble (the paper's (a)), from the outputs already computed
        for arch, idx in groups.items():
            if len(idx) > 1:
                group = average([members[i] for i in idx])
                rows.append(_row(f"{len(idx)} × {arch}", arch, [str(paths[i]) for i in idx], group.errors()))
    comparison, best = None, min(range(len(paths)), key=lambda i: rows[i].top1_error)
    if len(paths) > 1:
        everything = average(members)
        arch = " & ".join(groups) if len(groups) > 1 else archs[0]
        label = f"{len(paths)} runs combined ({arch})" if len(groups) > 1 else f"{len(paths)} × {arch}"
        rows.append(_row(label, arch, [str(p) for p in paths], everything.errors()))
        comparison = compare_errors(everything, members[best])
    numbers = {"kind": NAME, "data": config.data, "split": config.split, "ten_crop": config.ten_crop,
               "weights": config.weights, "seconds": time.perf_counter() - t0, "bad_files": bad,
               "results": [asdict(r) for r in rows],
               "paper": [dict(zip(("model", "top1_error", "top5_error", "test_top5_error"), r)) for r in PAPER_TABLE2],
               "finding": _finding(comparison, rows[best].name) if len(paths) > 1 else None}
    report = _report(numbers, rows)
    files: dict[str, Path] = {}
    if out is not None:
        files = write_results(out, NAME, numbers, report)
        files["config"] = write_config(out, NAME, config, device=str(resolve_device(config.device)))
    numbers["report"] = report.to_json()
    return Result(Path(out) if out is not None else None, numbers, files, rows=rows)


def _row(name: str, arch: str, members: list[str], errors) -> EnsembleRow:
    return EnsembleRow(name, arch, members, errors.top1_error, errors.top5_error, errors.images)


def _finding(comparison: Comparison | None, best: str) -> dict[str, Any]:
    """The test of "the ensemble errs less than the best run alone", as saved and as the summary says it."""
    if comparison is None:
        return {"verdict": f"the ensemble and {best} answer every image alike: no evidence either way",
                "difference": 0.0, "low": None, "high": None, "p_value": None}
    verdict = comparison.verdict(compared="the ensemble's top-1 error", baseline=f"{best}'s", finding=_FINDING,
                                 digits=1)
    return {"verdict": verdict, "difference": comparison.difference, "low": comparison.low,
            "high": comparison.high, "p_value": comparison.p_value, "images_differing": comparison.sizes[0]}


def _summary(numbers: dict[str, Any], rows: list[EnsembleRow]) -> str:
    singles = [r for r in rows if len(r.members) == 1]
    best = min(singles, key=lambda r: r.top1_error)
    crops = "10 crops" if numbers["ten_crop"] else "centre crop"
    first = (f"{len(singles)} run(s) evaluated on {numbers['split']} ({crops}): the best alone, {best.name}, has "
             f"{100 * best.top1_error:.1f}% top-1 error.")
    if len(singles) < 2:
        return first + " An ensemble needs at least two runs."
    ens = rows[-1]
    change = 100 * (ens.top1_error - best.top1_error)
    return first + (f" Averaging the softmax outputs of the {len(ens.members)} runs gives {100 * ens.top1_error:.1f}% "
                    f"({change:+.1f} points; the paper: 38.4% for one ZFNet, 36.0% for six convnets). Image by "
                    f"image: {numbers['finding']['verdict']}.")


def _report(numbers: dict[str, Any], rows: list[EnsembleRow]) -> Report:
    crops = "10 crops" if numbers["ten_crop"] else "centre crop"
    measured = Table(f"Error % of each run and of averaged softmax outputs ({numbers['split']}, {crops})",
                     ["model", "architecture", "runs", "top-1 err %", "top-5 err %", "images"],
                     [[r.name, r.architecture, len(r.members), round(100 * r.top1_error, 2),
                       round(100 * r.top5_error, 2), r.images] for r in rows])
    paper = Table("The paper's Table 2 (ImageNet 2012, error %)", ["model", "val top-1", "val top-5", "test top-5"],
                  [[n, t1, t5, "—" if test is None else test] for n, t1, t5, test in PAPER_TABLE2])
    return Report("Ensembles (Table 2)", _summary(numbers, rows), tables=[measured, paper])


def _names(paths: list[Path]) -> list[str]:
    """Short distinct names: the last parts of each path (two at least for a weights file), as few as differ."""
    for depth in range(1, 1 + max(len(p.parts) for p in paths)):
        names = ["/".join(p.parts[-max(depth, 2 if p.suffix == ".safetensors" else 1):]) for p in paths]
        if len(set(names)) == len(names):
            return names
    return [str(p) for p in paths]
