"""``zfnet demo``: from an empty folder and no network to the whole study and its HTML report.

Stages, each skipped when a previous (interrupted) demo in the same folder finished it:

1. ``data/``: the built-in synthetic data set (primary classes);
2. ``runs/zfnet`` and ``runs/alexnet``: ZFNet and AlexNet at CPU size with the paper's recipe,
   with weight snapshots for the feature-evolution figure (training itself resumes mid-run);
3. ``evaluation.json``: centre-crop and ten-crop errors of each model and of their ensemble (one pass
   over the validation images per model), and ``comparison/comparison.json``: ZFNet against AlexNet,
   aligned on when each left the chance plateau, with a test over the validation images;
4. ``visualize/``: the deconvnet figures of ZFNet (top-9 per map, filters, evolution) and the
   AlexNet-vs-ZFNet comparison (Fig. 2, 4, 6);
5. ``occlusion/``: occlusion panels for one image per class and the pointing game (Fig. 7);
6. ``correspondence/``: the correspondence analysis of the faces' parts (Table 1);
7. ``invariance/``: translation, scale and rotation curves (Fig. 5);
8. ``secondary/`` and ``transfer/``: ZFNet's frozen features on the disjoint secondary classes, against
   training from scratch (Tables 4-5), and a linear probe per layer (Table 7);
9. ``report/index.html``: the offline report of everything above.

``DIR/demo.json`` marks the folder as a demo's, so a re-run resumes it and a foreign non-empty
folder is refused rather than written into; it also adds up the time spent over every session, so a
resumed demo reports its whole time. The demo holds ``DIR``'s lock (:func:`zfnet._io.folder_lock`)
while it runs: a second demo into the same folder is refused. Each run is loaded once
(:class:`~zfnet.train.run.Run`) and handed to every stage.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch

from .. import cores
from .. import train as training
from .._io import atomic_write_json, folder_entries, folder_lock
from ..data.synthetic import write_synthetic
from ..errors import ZFNetError
from ..progress import progress
from ..report import build_report
from ..results import Report, Table, percent, write_results
from ..train import TrainConfig
from ..train.checkpoint import is_run_dir
from ..train.evaluate import Predictions, average, predict_runs
from ..train.loop import left_chance
from ..train.run import Run
from . import correspondence, invariance, occlusion, transfer, visualize
from .base import MAX_SEED, Options, option
from .base import Result as _Result
from .ensemble import compare_errors

__all__ = ["Config", "Result", "run", "DemoPlan", "PLANS", "NAME", "HELP", "DESCRIPTION", "DEFAULT_OUT", "train_runs",
           "train_in_process"]

NAME = "demo"
HELP = "from nothing to a trained ZFNet on the synthetic data, every analysis and the HTML report"
DESCRIPTION = ("Write the synthetic data set, train ZFNet and AlexNet at CPU size with the paper's recipe, evaluate "
               "them, and run every figure and analysis of the paper on them; then build the offline report "
               "(OUT/report/index.html). Re-running the command resumes an interrupted demo.")
DEFAULT_OUT = "zfnet-demo"

log = logging.getLogger("zfnet")

MARKER = "demo.json"
STAGES = 9


@dataclass(frozen=True)
class DemoPlan:
    """Sizes of a demo: the data set and the training of each model."""

    classes: int
    per_class: int
    val_per_class: int
    image_size: int
    models: tuple[tuple[str, str], ...]  # (run name, model name)
    epochs: int
    batch_size: int
    lr_patience: int
    snapshots: tuple[int, ...]
    vis_maps: int = 16  # feature maps shown per layer
    vis_images: int = 500  # validation images searched for top activations
    occlusion_images: int = 10
    pointing_images: int = 100
    correspondence_images: int = 5
    correspondence_trials: int = 10
    invariance_images: int = 5
    secondary_per_class: int = 80  # images per secondary class (train/ and val/ pooled by the transfer)
    transfer_per_class: tuple[int, ...] = (15, 30)
    transfer_splits: int = 5
    scratch_steps: int = 1000  # SGD steps of the from-scratch baseline: those ZFNet needed to leave chance
    scratch_splits: int | None = 2  # the baseline trains on the first splits only: 4 trainings, not 10
    side_by_side: bool = True  # the from-scratch baselines in processes of their own, where the cores allow


PLANS = {
    # From the paper's initialisation the CPU networks leave the chance plateau after ~1000 SGD steps
    # on this data; 30 epochs of 125 steps leave room to learn after that.
    "full": DemoPlan(classes=10, per_class=400, val_per_class=50, image_size=128,
                     models=(("zfnet", "zfnet-cpu"), ("alexnet", "alexnet-cpu")), epochs=30, batch_size=32,
                     lr_patience=2, snapshots=(1, 2, 5, 10, 20, 30)),
    "quick": DemoPlan(classes=4, per_class=24, val_per_class=8, image_size=72,
                      models=(("zfnet", "zfnet-tiny"), ("alexnet", "alexnet-tiny")), epochs=3, batch_size=16,
                      lr_patience=2, snapshots=(1, 2, 3), vis_maps=4, vis_images=32, occlusion_images=2,
                      pointing_images=8, correspondence_images=3, correspondence_trials=2, invariance_images=2,
                      secondary_per_class=12, transfer_per_class=(5,), transfer_splits=2, scratch_steps=10,
                      scratch_splits=None, side_by_side=False),
}


@dataclass(frozen=True, kw_only=True)
class Config(Options):
    """The demo's options (``zfnet demo --help`` shows the same)."""

    what = "demo option"

    quick: bool = option(False, help="a smaller, faster run (a minute on 2 cores; for tests)")
    seed: int = option(0, low=0, high=MAX_SEED, help="seed of the data set, the trainings and the analyses")
    side_by_side: bool = option(False, help="train the two networks side by side on the CPU, each in a process of "
                                "its own with its share of the free cores: sooner on a few cores, but each on fewer "
                                "threads, which rounds differently, so the numbers differ from the documented ones")


@dataclass
class Result(_Result):
    """Where a demo put its results, and the headline numbers (``numbers`` is ``evaluation.json``)."""

    kind = NAME

    runs: dict[str, Path] = field(default_factory=dict)
    seconds: float = 0.0
    session_seconds: float = 0.0
    stages: list[str] = field(default_factory=list)
    report: Path | None = None
    comparison: str = ""

    @property
    def evaluation(self) -> dict:
        return self.numbers

    def lines(self) -> list[str]:
        resumed = "" if self.session_seconds >= self.seconds - 0.5 else f", {self.session_seconds:.0f} s of it now"
        lines = [f"zfnet demo finished in {self.seconds:.0f} s{resumed} ({', '.join(self.stages)})"]
        for row in self.numbers.get("results", []):
            lines.append(f"  {row['name']:<22} val top-1 error {100 * row['top1_error']:5.1f}%  "
                         f"(10 crops {100 * row['ten_crop_top1_error']:5.1f}%)")
        if self.comparison:
            lines.append(self.comparison)
        return lines

    def summary(self) -> str:
        text = super().summary()
        return text + (f"\nreport: {self.report}" if self.report is not None else "")

    __str__ = summary


def _prepare_out(out: Path, plan_name: str) -> float:
    """Check the demo folder (locked, so it exists), mark it as a demo's; return the seconds earlier sessions
    spent on it."""
    marker = out / MARKER
    seconds = 0.0
    if marker.is_file():
        try:
            saved = json.loads(marker.read_text())
        except (OSError, ValueError):
            saved = {}
        saved = saved if isinstance(saved, dict) else {}
        plan = saved.get("plan")
        if plan not in (None, plan_name):
            raise ZFNetError(f"{out} holds a demo made with plan {plan!r}; use another --out for plan {plan_name!r}")
        spent = saved.get("seconds")
        if isinstance(spent, (int, float)) and not isinstance(spent, bool) and 0 <= spent < 1e9:
            seconds = float(spent)
    elif folder_entries(out):
        raise ZFNetError(f"--out {out} is not empty and is not a zfnet demo folder; choose an empty or new folder")
    if not os.access(out, os.W_OK):
        raise ZFNetError(f"--out {out} is not writable")
    atomic_write_json(marker, {"format": "zfnet-demo", "plan": plan_name, "seconds": seconds})
    return seconds


def run(config: Config, out: str | Path = DEFAULT_OUT, *, loaded: None = None, show_progress: bool = True) -> Result:
    """Run the demo into ``out`` (resuming an interrupted one there) and return its results.

    Args:
        config: the options: the quick plan or the full one, and the seed.
        out: the demo folder; created if missing; must be empty, new, or an earlier demo's.
        loaded: unused (the demo trains its own models); for the one experiment signature.
        show_progress: progress bars on a terminal.

    Raises:
        ZFNetError: ``out`` is a foreign non-empty folder, a file, or not writable.
        FolderInUse: another process is writing ``out``.
    """
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise ZFNetError(f"--out {out} is a file, not a folder")
    with folder_lock(out):
        return _run(out, config, show_progress)


def _run(out: Path, config: Config, show_progress: bool) -> Result:
    t0 = time.perf_counter()
    plan_name = "quick" if config.quick else "full"
    plan, seed = PLANS[plan_name], config.seed
    earlier = _prepare_out(out, plan_name)
    stages: list[str] = []

    def spent() -> float:
        return earlier + time.perf_counter() - t0

    try:
        data = out / "data"
        if not (data / "annotations.json").is_file():
            log.info("[1/%d] writing the synthetic data set to %s", STAGES, data)
            # overwrite: the set of a demo killed while writing it
            write_synthetic(data, classes=plan.classes, per_class=plan.per_class, val_per_class=plan.val_per_class,
                            seed=seed, size=plan.image_size, progress=show_progress, overwrite=True)
            stages.append("data")
        else:
            log.info("[1/%d] synthetic data set already in %s", STAGES, data)

        runs: dict[str, Path] = {}
        todo: list[tuple[str, TrainConfig]] = []
        for run_name, model in plan.models:
            folder = out / "runs" / run_name
            runs[run_name] = folder
            done = Run(folder).finished_epochs  # 0 for a run not started
            if done >= plan.epochs:
                log.info("[2/%d] %s already trained (%d epochs)", STAGES, run_name, done)
                continue
            log.info("[2/%d] training %s (%s) for %d epochs%s", STAGES, run_name, model, plan.epochs,
                     f", resuming after epoch {done}" if done else "")
            todo.append((run_name, TrainConfig(data=str(data), out=str(folder), model=model, epochs=plan.epochs,
                                               batch_size=plan.batch_size, lr_patience=plan.lr_patience,
                                               snapshots=plan.snapshots, seed=seed, workers=0)))
        train_runs([run_config for _, run_config in todo], side_by_side=config.side_by_side,
                   show_progress=show_progress)
        stages += [f"train {run_name}" for run_name, _ in todo]
        opened = {name: Run.open(folder) for name, folder in runs.items()}  # each loaded once, for every stage

        evaluation_path = out / "evaluation.json"
        if evaluation_path.is_file() and (out / "comparison" / "comparison.json").is_file():
            evaluation = json.loads(evaluation_path.read_text())
            comparison = json.loads((out / "comparison" / "comparison.json").read_text())
        else:
            log.info("[3/%d] evaluating on the validation set (centre crop and 10 crops, one pass)", STAGES)
            evaluation, comparison = _evaluate(out, data, opened, show_progress, seed)
            stages.append("evaluate")

        stages += _analyses(out, data, opened, plan, seed, show_progress)

        log.info("[%d/%d] writing the report", STAGES, STAGES)
        report = build_report([out], out / "report", title="zfnet demo")
    finally:
        atomic_write_json(out / MARKER, {"format": "zfnet-demo", "plan": plan_name, "seconds": round(spent(), 1)})
    return Result(out, evaluation, {"evaluation": evaluation_path}, runs=runs, seconds=spent(),
                  session_seconds=time.perf_counter() - t0, stages=stages or ["nothing left to do"], report=report,
                  comparison=comparison.get("verdict", ""))


def train_runs(configs: list[TrainConfig], *, side_by_side: bool = True, show_progress: bool = True) -> None:
    """Train (or resume) runs: side by side, each in a process of its own with its share of the free cores,
    where there are several, on the CPU, with a core for each; else one after the other.

    Side by side on one core each, the demo's two networks train 1.10x sooner than one after the other on
    two cores (two equal trainings 1.28x; ``benchmarks/side_by_side.py``), but each run then rounds as a
    single-thread run does. A run started side by side records its thread count and keeps it when resumed,
    like any run.
    """
    on_cpu = not torch.cuda.is_available() and all(c.device in ("auto", "cpu") for c in configs)
    # The free cores are measured (0.2 s, once per process) only when they decide something.
    width, threads = cores.side_by_side_width(len(configs)) if side_by_side and on_cpu else (1, 1)
    if width < max(2, len(configs)):  # all at once or one after the other
        for config in configs:
            training.train(config, resume=is_run_dir(Path(config.out)), show_progress=show_progress)
        return
    calls = []
    for config in configs:
        resume = is_run_dir(Path(config.out))  # a resumed run keeps its own thread count
        calls.append((config if resume else dataclasses.replace(config, threads=threads), resume))
    log.info("training %d runs side by side, %d thread%s each", len(configs), threads, "s" * (threads > 1))
    runs = [Run(Path(config.out)) for config in configs]
    start = sum(run.finished_epochs for run in runs)
    bar = progress(total=sum(config.epochs for config in configs) - start, desc="training side by side",
                   unit="epoch", enabled=show_progress)

    def poll() -> None:
        try:
            bar.update(sum(run.finished_epochs for run in runs) - start - bar.n)
        except (OSError, ValueError, ZFNetError):  # a metrics file being written: the next poll reads it
            pass

    with bar:
        cores.side_by_side(train_in_process, calls, threads=threads, poll=poll)
        poll()


def train_in_process(config: TrainConfig, resume: bool) -> None:
    """One run of :func:`train_runs` side by side, in its own process (no progress bar: the caller's shows)."""
    training.train(config, resume=resume, show_progress=False)


def _evaluate(out: Path, data: Path, runs: dict[str, Run], show_progress: bool,
              seed: int) -> tuple[dict, dict]:
    """``evaluation.json`` (centre and ten-crop errors of each model and of their ensemble, from one pass per
    model) and ``comparison/comparison.json`` (ZFNet against AlexNet, see :func:`_comparison`)."""
    names = list(runs)
    ten, _ = predict_runs([runs[n].model() for n in names], data, ten_crop=True, workers=0,
                          show_progress=show_progress)
    centre = [t.centre_crop() for t in ten]
    members_ten, members_centre = [*ten, average(ten)], [*centre, average(centre)]
    rows = []
    for name, c, t in zip([*names, "ensemble"], members_centre, members_ten):
        ce, te = c.errors(), t.errors()
        rows.append({"name": name, "top1_error": ce.top1_error, "top5_error": ce.top5_error,
                     "ten_crop_top1_error": te.top1_error, "ten_crop_top5_error": te.top5_error,
                     "images": ce.images})
    evaluation = {"results": rows}
    comparison = _comparison(out / "comparison", runs, dict(zip(names, ten)), seed)
    atomic_write_json(out / "evaluation.json", evaluation)  # last: it marks the stage done
    return evaluation, comparison


def _comparison(out: Path, runs: dict[str, Run], predictions: dict[str, Predictions], seed: int) -> dict:
    """ZFNet against AlexNet, made fair: both trained with the same recipe and steps, but they leave the chance
    plateau at different epochs (the lr schedule starts only then), so their errors are also compared the same
    number of epochs after each left chance; and the final difference is tested over the validation images.

    What it shows: on these validation images, whether one trained model errs less than the other, and how the
    two compare at equal training after the plateau. What it does not: one seed each, so nothing about the spread
    over initialisations; the test's interval covers the choice of validation images only.
    """
    first, second = "zfnet", "alexnet"
    a, b = runs[first], runs[second]
    classes = len(a.classes)
    images = len(predictions[first].labels)
    left = {}
    for name, r in ((first, a), (second, b)):
        metrics = r.metrics
        left[name] = next((m["epoch"] for m in metrics if left_chance(m["val_top1_error"], classes, images)), None)
    rows, aligned = [], None
    if all(v is not None for v in left.values()):
        after = min(len(runs[n].metrics) - left[n] for n in (first, second))
        aligned = {n: runs[n].metrics[left[n] - 1 + after]["val_top1_error"] for n in (first, second)}
        rows.append([f"{after} epochs after leaving chance (epoch {left[first]} and {left[second]})",
                     percent(aligned[first]), percent(aligned[second])])
    final = {n: predictions[n].errors().top1_error for n in (first, second)}
    rows.append(["at the end (10 crops)", percent(final[first]), percent(final[second])])
    test = compare_errors(predictions[first], predictions[second], alternative="two-sided", seed=seed)
    if test is None:
        verdict = "ZFNet and AlexNet answer every validation image alike: no difference to test"
    else:
        verdict = "ZFNet vs AlexNet, top-1 error (10 crops): " + test.verdict(
            compared="ZFNet's error", baseline="AlexNet's", finding="a real difference", digits=1)
    chance = ", ".join(f"{n} left chance at epoch {left[n]}" if left[n] else f"{n} never left chance"
                       for n in (first, second))
    aligned_text = ("the learning-rate schedule starts only then, so the errors are also compared the same number of "
                    "epochs after each left chance" if aligned is not None else
                    "so there is no point from which to compare them at equal training")
    summary = (f"Both networks were trained with the same recipe for the same number of steps, from one seed each. "
               f"{chance}; {aligned_text}. " + verdict + ". What this does not show: the spread over "
               "initialisations (one run each), nor the paper's ImageNet-scale difference (Table 2).")
    numbers = {"left_chance": left, "aligned": aligned, "final": final, "verdict": verdict,
               "test": None if test is None else {"difference": test.difference, "low": test.low,
                                                  "high": test.high, "p_value": test.p_value}}
    report = Report("ZFNet against AlexNet", summary,
                    tables=[Table("Validation top-1 error % of ZFNet and AlexNet", ["when", "ZFNet", "AlexNet"],
                                  rows)])
    write_results(out, "comparison", numbers, report)
    return numbers


def _analyses(out: Path, data: Path, runs: dict[str, Run], plan: DemoPlan, seed: int,
              show_progress: bool) -> list[str]:
    """Stages 4-8: each writes its JSON last, so a finished stage is recognised by that file."""
    loaded, alexnet = runs["zfnet"].model(), runs["alexnet"].model()
    done: list[str] = []

    def stage(number: int, name: str, marker: Path, work) -> None:
        if marker.is_file():
            log.info("[%d/%d] %s already done", number, STAGES, name)
            return
        log.info("[%d/%d] %s", number, STAGES, name)
        work()
        done.append(name)

    vis = out / "visualize"

    # The comparison comes first in the experiment: index.json, its last file, marks the whole stage done.
    stage(4, "deconvnet figures", vis / "index.json",
          lambda: visualize.run(visualize.Config(data=str(data), maps=plan.vis_maps, max_images=plan.vis_images,
                                                 seed=seed, compare=str(alexnet.root)), vis, loaded=loaded,
                                show_progress=show_progress))
    # zfnet's occluder (32 px at 224, in proportion; the paper gives no size) at half its side per step:
    # 13 x 13 positions at 112 px.
    window, _ = occlusion.default_window(loaded.input_size)
    stage(5, "occlusion", out / "occlusion" / "occlusion.json",
          lambda: occlusion.run(occlusion.Config(data=str(data), images=plan.occlusion_images, window=window,
                                                 stride=max(1, window // 2), pointing_game=plan.pointing_images,
                                                 seed=seed), out / "occlusion", loaded=loaded,
                                show_progress=show_progress))
    stage(6, "correspondence", out / "correspondence" / "correspondence.json",
          lambda: correspondence.run(correspondence.Config(data=str(data), images=plan.correspondence_images,
                                                           trials=plan.correspondence_trials, seed=seed),
                                     out / "correspondence", loaded=loaded, show_progress=show_progress))
    stage(7, "invariance", out / "invariance" / "invariance.json",
          lambda: invariance.run(invariance.Config(data=str(data), images=plan.invariance_images, seed=seed),
                                 out / "invariance", loaded=loaded, show_progress=show_progress))

    def transfer_and_probes() -> None:
        secondary = out / "secondary"
        if not (secondary / "annotations.json").is_file():
            write_synthetic(secondary, classes=plan.classes, per_class=plan.secondary_per_class, val_per_class=1,
                            seed=seed, size=plan.image_size, class_set="secondary", progress=show_progress,
                            overwrite=True)
        # The probes run before the transfer, which writes transfer.json (the stage's mark) last.
        transfer.transfer_study(transfer.Config(data=str(secondary), per_class=plan.transfer_per_class,
                                                splits=plan.transfer_splits, seed=seed,
                                                scratch_steps=plan.scratch_steps,
                                                baseline_splits=plan.scratch_splits, workers=0,
                                                side_by_side=plan.side_by_side),
                                out / "transfer", probe_per_class=max(plan.transfer_per_class), loaded=loaded,
                                show_progress=show_progress)

    stage(8, "transfer and probes", out / "transfer" / "transfer.json", transfer_and_probes)
    return done
