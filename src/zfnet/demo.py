"""``zfnet demo``: from an empty folder and no network to the whole study and its HTML report.

Stages, each skipped when a previous (interrupted) demo in the same folder finished it:

1. ``data/``: the built-in synthetic data set (primary classes);
2. ``runs/zfnet`` and ``runs/alexnet``: ZFNet and AlexNet at CPU size with the paper's recipe,
   with weight snapshots for the feature-evolution figure (training itself resumes mid-run);
3. ``evaluation.json``: centre-crop and ten-crop errors of each model and of their ensemble;
4. ``visualize/``: the deconvnet figures of ZFNet (top-9 per map, filters, evolution) and the
   AlexNet-vs-ZFNet comparison (Fig. 2, 4, 6);
5. ``occlusion/``: occlusion panels for one image per class and the pointing game (Fig. 7);
6. ``correspondence/``: the correspondence analysis of the faces' parts (Table 1);
7. ``invariance/``: translation, scale and rotation curves (Fig. 5);
8. ``secondary/`` and ``transfer/``: ZFNet's frozen features on the disjoint secondary classes, against
   training from scratch (Tables 4-5), and a linear probe per layer (Table 7);
9. ``report/index.html``: the offline report of everything above.

``DIR/demo.json`` marks the folder as a demo's, so a re-run resumes it and a foreign non-empty
folder is refused rather than written into. The demo holds ``DIR``'s lock
(:func:`zfnet._io.folder_lock`) while it runs: a second demo into the same folder is refused.
"""

from __future__ import annotations

import json
import logging
import os
import time
from dataclasses import dataclass, field
from pathlib import Path

from ._io import atomic_write_json, folder_entries, folder_lock
from .errors import ZFNetError

__all__ = ["run_demo", "DemoResult", "DemoPlan", "PLANS"]

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
                      secondary_per_class=12, transfer_per_class=(5,), transfer_splits=2, scratch_steps=10),
}


@dataclass
class DemoResult:
    """Where a demo put its results, and the headline numbers."""

    out: Path
    runs: dict[str, Path]
    evaluation: dict
    seconds: float
    stages: list[str] = field(default_factory=list)

    report: Path | None = None

    def summary(self) -> str:
        lines = [f"zfnet demo finished in {self.seconds:.0f} s ({', '.join(self.stages)})"]
        for row in self.evaluation.get("results", []):
            lines.append(f"  {row['name']:<22} val top-1 error {100 * row['top1_error']:5.1f}%  "
                         f"(10 crops {100 * row['ten_crop_top1_error']:5.1f}%)")
        lines.append(f"results in {self.out}")
        if self.report is not None:
            lines.append(f"report: {self.report}")
        return "\n".join(lines)

    __str__ = summary


def _prepare_out(out: Path, plan_name: str) -> None:
    """Check the demo folder (locked, so it exists) and mark it as a demo's."""
    marker = out / MARKER
    if marker.is_file():
        try:
            saved = json.loads(marker.read_text())
        except (OSError, ValueError):
            saved = {}
        plan = saved.get("plan") if isinstance(saved, dict) else None
        if plan not in (None, plan_name):
            raise ZFNetError(f"{out} holds a demo made with plan {plan!r}; use another --out for plan {plan_name!r}")
    elif folder_entries(out):
        raise ZFNetError(f"--out {out} is not empty and is not a zfnet demo folder; choose an empty or new folder")
    if not os.access(out, os.W_OK):
        raise ZFNetError(f"--out {out} is not writable")
    atomic_write_json(marker, {"format": "zfnet-demo", "plan": plan_name})


def run_demo(out: str | Path, *, quick: bool = False, show_progress: bool = True, seed: int = 0) -> DemoResult:
    """Run the demo into ``out`` (resuming an interrupted one there) and return its results.

    Args:
        out: the demo folder; created if missing; must be empty, new, or an earlier demo's.
        quick: the small plan (about a minute on 2 cores) instead of the full one.
        show_progress: progress bars on a terminal.
        seed: seed of the data set and the training runs.

    Raises:
        ZFNetError: ``out`` is a foreign non-empty folder, a file, or not writable.
        FolderInUse: another process is writing ``out``.
    """
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise ZFNetError(f"--out {out} is a file, not a folder")
    with folder_lock(out):
        return _run_demo(out, quick, show_progress, seed)


def _run_demo(out: Path, quick: bool, show_progress: bool, seed: int) -> DemoResult:
    from .data.synthetic import write_synthetic
    from .train import TrainConfig, evaluate_runs, train
    from .train.checkpoint import RunFiles, is_run_dir

    t0 = time.perf_counter()
    plan_name = "quick" if quick else "full"
    plan = PLANS[plan_name]
    _prepare_out(out, plan_name)
    stages: list[str] = []

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
    for run_name, model in plan.models:
        run = out / "runs" / run_name
        runs[run_name] = run
        files = RunFiles(run)
        done = 0
        if files.metrics.is_file():
            done = len([line for line in files.metrics.read_text().splitlines() if line.strip()])
        if done >= plan.epochs:
            log.info("[2/%d] %s already trained (%d epochs)", STAGES, run_name, done)
            continue
        log.info("[2/%d] training %s (%s) for %d epochs%s", STAGES, run_name, model, plan.epochs,
                 f", resuming after epoch {done}" if done else "")
        config = TrainConfig(data=str(data), out=str(run), model=model, epochs=plan.epochs,
                             batch_size=plan.batch_size, lr_patience=plan.lr_patience,
                             snapshots=plan.snapshots, seed=seed, workers=0)
        train(config, resume=is_run_dir(run), show_progress=show_progress)
        stages.append(f"train {run_name}")

    evaluation_path = out / "evaluation.json"
    if evaluation_path.is_file():
        evaluation = json.loads(evaluation_path.read_text())
    else:
        log.info("[3/%d] evaluating on the validation set (centre crop and 10 crops)", STAGES)
        names = list(runs)
        paths = [runs[n] for n in names]
        centre = evaluate_runs(paths, data, workers=0, show_progress=show_progress)
        ten = evaluate_runs(paths, data, ten_crop=True, workers=0, show_progress=show_progress)
        rows = []
        for name, c, t in zip([*names, "ensemble"], [*centre.members, centre.ensemble],
                              [*ten.members, ten.ensemble]):
            rows.append({"name": name, "top1_error": c.top1_error, "top5_error": c.top5_error,
                         "ten_crop_top1_error": t.top1_error, "ten_crop_top5_error": t.top5_error,
                         "images": c.images})
        evaluation = {"results": rows}
        atomic_write_json(evaluation_path, evaluation)
        stages.append("evaluate")

    stages += _analyses(out, data, runs, plan, seed, show_progress)

    from .report import build_report

    log.info("[%d/%d] writing the report", STAGES, STAGES)
    report = build_report([out], out / "report", title="zfnet demo")
    return DemoResult(out, runs, evaluation, time.perf_counter() - t0, stages or ["nothing left to do"], report)


def _analyses(out: Path, data: Path, runs: dict[str, Path], plan: DemoPlan, seed: int,
              show_progress: bool) -> list[str]:
    """Stages 4-7: each writes its JSON last, so a finished stage is recognised by that file."""
    from .data.synthetic import write_synthetic
    from .experiments import correspondence, invariance, occlusion, transfer, visualize
    from .train.checkpoint import load_run

    zfnet, alexnet = runs["zfnet"], runs["alexnet"]
    loaded = load_run(zfnet)  # once, for every stage
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
                                                 seed=seed, compare=str(alexnet)), vis, loaded=loaded,
                                show_progress=show_progress))
    # The paper's occluder (32 px at 224, in proportion) at half its side per step: 13 x 13 positions at 112 px.
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
                                                scratch_steps=plan.scratch_steps, workers=0),
                                out / "transfer", probe_per_class=max(plan.transfer_per_class), loaded=loaded,
                                show_progress=show_progress)

    stage(8, "transfer and probes", out / "transfer" / "transfer.json", transfer_and_probes)
    return done
