"""``zfnet demo``: from an empty folder and no network to a trained ZFNet and its evaluation.

Stages, each skipped when a previous (interrupted) demo in the same folder finished it:

1. ``data/``: the built-in synthetic data set (primary classes);
2. ``runs/zfnet`` and ``runs/alexnet``: ZFNet and AlexNet at CPU size with the paper's recipe,
   with weight snapshots for the feature-evolution figure (training itself resumes mid-run);
3. ``evaluation.json``: centre-crop and ten-crop errors of each model and of their ensemble.

``DIR/demo.json`` marks the folder as a demo's, so a re-run resumes it and a foreign non-empty
folder is refused rather than written into.
"""

from __future__ import annotations

import json
import logging
import os
import time
from dataclasses import dataclass, field
from pathlib import Path

from ._io import atomic_write_json
from .errors import ZFNetError

__all__ = ["run_demo", "DemoResult", "DemoPlan", "PLANS"]

log = logging.getLogger("zfnet")

MARKER = "demo.json"


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


PLANS = {
    # From the paper's initialisation the CPU networks leave the chance plateau after ~1000 SGD steps
    # on this data; 30 epochs of 125 steps leave room to learn after that.
    "full": DemoPlan(classes=10, per_class=400, val_per_class=50, image_size=128,
                     models=(("zfnet", "zfnet-cpu"), ("alexnet", "alexnet-cpu")), epochs=30, batch_size=32,
                     lr_patience=2, snapshots=(1, 2, 5, 10, 20, 30)),
    "quick": DemoPlan(classes=4, per_class=24, val_per_class=8, image_size=72,
                      models=(("zfnet", "zfnet-tiny"), ("alexnet", "alexnet-tiny")), epochs=3, batch_size=16,
                      lr_patience=2, snapshots=(1, 2, 3)),
}


@dataclass
class DemoResult:
    """Where a demo put its results, and the headline numbers."""

    out: Path
    runs: dict[str, Path]
    evaluation: dict
    seconds: float
    stages: list[str] = field(default_factory=list)

    def summary(self) -> str:
        lines = [f"zfnet demo finished in {self.seconds:.0f} s ({', '.join(self.stages)})"]
        for row in self.evaluation.get("results", []):
            lines.append(f"  {row['name']:<22} val top-1 error {100 * row['top1_error']:5.1f}%  "
                         f"(10 crops {100 * row['ten_crop_top1_error']:5.1f}%)")
        lines.append(f"results in {self.out}")
        return "\n".join(lines)

    __str__ = summary


def _prepare_out(out: Path, plan_name: str) -> None:
    marker = out / MARKER
    if out.exists():
        if not out.is_dir():
            raise ZFNetError(f"--out {out} is a file, not a folder")
        if marker.is_file():
            try:
                saved = json.loads(marker.read_text())
            except ValueError:
                saved = {}
            if saved.get("plan") not in (None, plan_name):
                raise ZFNetError(f"{out} holds a demo made with plan {saved.get('plan')!r}; "
                                 f"use another --out for plan {plan_name!r}")
        elif any(out.iterdir()):
            raise ZFNetError(f"--out {out} is not empty and is not a zfnet demo folder; choose an empty or new folder")
        if not os.access(out, os.W_OK):
            raise ZFNetError(f"--out {out} is not writable")
    else:
        try:
            out.mkdir(parents=True)
        except OSError as err:
            raise ZFNetError(f"cannot create --out {out}: {err.strerror}") from None
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
    """
    from .data.synthetic import write_synthetic
    from .train import TrainConfig, evaluate_runs, train
    from .train.checkpoint import RunFiles

    t0 = time.perf_counter()
    plan_name = "quick" if quick else "full"
    plan = PLANS[plan_name]
    out = Path(out)
    _prepare_out(out, plan_name)
    stages: list[str] = []

    data = out / "data"
    if not (data / "annotations.json").is_file():
        log.info("[1/3] writing the synthetic data set to %s", data)
        write_synthetic(data, classes=plan.classes, per_class=plan.per_class, val_per_class=plan.val_per_class,
                        seed=seed, size=plan.image_size, progress=show_progress)
        stages.append("data")
    else:
        log.info("[1/3] synthetic data set already in %s", data)

    runs: dict[str, Path] = {}
    for run_name, model in plan.models:
        run = out / "runs" / run_name
        runs[run_name] = run
        files = RunFiles(run)
        done = 0
        if files.metrics.is_file():
            done = len([line for line in files.metrics.read_text().splitlines() if line.strip()])
        if done >= plan.epochs:
            log.info("[2/3] %s already trained (%d epochs)", run_name, done)
            continue
        log.info("[2/3] training %s (%s) for %d epochs%s", run_name, model, plan.epochs,
                 f", resuming after epoch {done}" if done else "")
        config = TrainConfig(data=str(data), out=str(run), model=model, epochs=plan.epochs,
                             batch_size=plan.batch_size, lr_patience=plan.lr_patience,
                             snapshots=plan.snapshots, seed=seed, workers=0)
        train(config, resume=run.exists(), show_progress=show_progress)
        stages.append(f"train {run_name}")

    evaluation_path = out / "evaluation.json"
    if evaluation_path.is_file():
        evaluation = json.loads(evaluation_path.read_text())
    else:
        log.info("[3/3] evaluating on the validation set (centre crop and 10 crops)")
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
    return DemoResult(out, runs, evaluation, time.perf_counter() - t0, stages or ["nothing left to do"])
