"""Training epochs on an idle and on a busy machine: threads and workers from the free cores against the old way.

Trains ``zfnet-cpu`` (batch 32, the demo's) for ``--epochs`` epochs on a synthetic data set, each run in a
fresh process, in every combination of:

- **load**: ``idle``, or ``busy``: beside ``--busy`` processes spinning ``while True: pass`` (started
  before the run, killed after it, also on an error or Ctrl-C);
- **data**: ``memory`` (decoded once, the default for a set this small) or ``streamed`` (``cache="none"``:
  decoded by DataLoader workers during every pass, as ImageNet is);
- **behaviour**: ``new``, the plan of :mod:`zfnet.cores` (threads and workers from the cores free when
  training starts; workers kept between passes), or ``old``, as before it: torch's default threads
  (every physical core), ``cores - 1`` workers (at most 8), started again for every pass; and, idle
  only, ``1-thread``: ``new`` with ``OMP_NUM_THREADS=1``, the bound of a busy run that gets one thread.

The ``old`` runs reproduce the former behaviour by replacing ``zfnet.cores.plan_threads`` and
``ImageStream._pass`` in their own process; nothing else differs. Each run prints its epochs' times (an
epoch: its training pass and its validation), and the parent measures the CPU time of the run (with its
workers) and of the other processes meanwhile ("others": the background load plus anyone else's work).
Figures: the mean epoch of a setting (every epoch of every run, the first included: a slow epoch is
what a user waits for) with the fastest and slowest, and the ratios old / new and busy / idle.

Usage:
    python benchmarks/busy_machine.py                          # 2 busy processes, 2 epochs, both data modes
    python benchmarks/busy_machine.py --busy 4 --data streamed --reps 2
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from throughput import cpu_name, source_fingerprint  # benchmarks/throughput.py

from zfnet.cores import busy_seconds

LOADS = ("idle", "busy")
DATA = ("memory", "streamed")
BEHAVIOURS = ("old", "new")
ONE_THREAD = "1-thread"
"""``new`` with ``OMP_NUM_THREADS=1``, idle only: what one thread does with a core to itself."""


# --------------------------------------------------------------------------- one run, in its own process
def child(args: argparse.Namespace) -> None:
    """Train once with the given behaviour and print one JSON line of what it took."""
    import torch
    from torch.utils.data import DataLoader

    from zfnet import cores
    from zfnet.data import loader
    from zfnet.data.folders import collate
    from zfnet.train import TrainConfig, train

    default_threads = torch.get_num_threads()  # torch's own choice in a fresh process: the old behaviour's
    used: dict[str, int] = {}
    plan_threads = cores.plan_threads
    if args.behaviour == "old":
        try:
            allowed = len(os.sched_getaffinity(0))
        except AttributeError:
            allowed = os.cpu_count() or 1

        def old_plan(workers_wanted=None, **_ignored):
            workers = max(0, min(8, allowed - 1)) if workers_wanted is None else workers_wanted
            return cores.ThreadPlan(default_threads, workers, None, "argument")

        def old_pass(self, batch_indices):
            # A DataLoader, and its workers, for every pass, as ImageStream._loader made them before.
            yield from DataLoader(self.dataset, batch_sampler=batch_indices, num_workers=self.workers,
                                  collate_fn=collate, persistent_workers=False)

        plan_threads = old_plan
        loader.ImageStream._pass = old_pass

    def recorded(*a, **k):
        plan = plan_threads(*a, **k)
        used.update(threads=plan.threads, workers=plan.workers, free=plan.free or 0)
        return plan

    cores.plan_threads = recorded
    with tempfile.TemporaryDirectory(prefix="zfnet-busy-") as out:
        start = time.perf_counter()
        result = train(TrainConfig(data=args.child_data, out=str(Path(out) / "run"), model=args.model,
                                   epochs=args.epochs, batch_size=args.batch_size, seed=0,
                                   cache="none" if args.data == "streamed" else "auto"), show_progress=False)
        wall = time.perf_counter() - start
    print(json.dumps({"epochs": [m["seconds"] for m in result.metrics], "wall": wall, **used}))


# --------------------------------------------------------------------------- the parent
def children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


@dataclass
class Run:
    load: str
    data: str
    behaviour: str
    epochs: list[float]
    wall: float
    threads: int
    workers: int
    free: int
    cpu: float  # CPU-seconds of the run and its workers
    others: float  # cores other processes kept busy meanwhile



def run_child(args: argparse.Namespace, data: Path, load: str, mode: str, behaviour: str) -> Run:
    cmd = [sys.executable, __file__, "--child", "--child-data", str(data), "--data", mode,
           "--behaviour", "new" if behaviour == ONE_THREAD else behaviour,
           "--model", args.model, "--epochs", str(args.epochs), "--batch-size", str(args.batch_size)]
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_NUM_THREADS", "MKL_NUM_THREADS")}
    if behaviour == ONE_THREAD:
        env["OMP_NUM_THREADS"] = "1"
    busy, cpu, start = busy_seconds(), children_cpu(), time.perf_counter()
    done = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=args.timeout)
    wall = time.perf_counter() - start
    used_cpu = children_cpu() - cpu
    if done.returncode != 0:
        raise SystemExit(f"{load}/{mode}/{behaviour} failed:\n{done.stderr[-3000:]}")
    got = json.loads(done.stdout.strip().splitlines()[-1])
    others = max(0.0, (busy_seconds() - busy - used_cpu) / wall)
    return Run(load, mode, behaviour, got["epochs"], got["wall"], got["threads"], got["workers"], got["free"],
               used_cpu, others)


class BackgroundLoad:
    """``n`` processes each spinning one core for the duration of a ``with`` block; always killed after."""

    def __init__(self, n: int) -> None:
        self.n = n
        self.procs: list[subprocess.Popen] = []

    def __enter__(self) -> BackgroundLoad:
        try:
            for _ in range(self.n):
                self.procs.append(subprocess.Popen([sys.executable, "-c", "while True: pass"]))
            time.sleep(1.0)  # let them reach full speed
        except BaseException:
            self.__exit__()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        for proc in self.procs:
            proc.kill()
        for proc in self.procs:
            proc.wait()
        self.procs.clear()


def make_data(args: argparse.Namespace, folder: Path) -> Path:
    from zfnet.data.synthetic import write_synthetic

    write_synthetic(folder, classes=args.classes, per_class=args.per_class, val_per_class=args.val_per_class,
                    size=args.size, seed=0, progress=False)
    return folder


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--busy", type=int, default=2, help="background processes spinning a core each, for 'busy'")
    p.add_argument("--data", default="both", choices=(*DATA, "both"), help="images in memory, streamed, or both")
    p.add_argument("--epochs", type=int, default=2, help="epochs per run")
    p.add_argument("--reps", type=int, default=1, help="runs of each setting (their epochs are averaged)")
    p.add_argument("--model", default="zfnet-cpu", help="registered model")
    p.add_argument("--batch-size", type=int, default=32, help="images per SGD step")
    p.add_argument("--classes", type=int, default=10, help="synthetic classes")
    p.add_argument("--per-class", type=int, default=50, help="synthetic training images per class")
    p.add_argument("--val-per-class", type=int, default=10, help="synthetic validation images per class")
    p.add_argument("--size", type=int, default=128, help="synthetic image side (zfnet-cpu's base size)")
    p.add_argument("--data-dir", type=Path, default=None, help="an existing data folder (default: a new one)")
    p.add_argument("--timeout", type=float, default=240, help="seconds a single run may take")
    p.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--child-data", default=None, help=argparse.SUPPRESS)
    p.add_argument("--behaviour", choices=BEHAVIOURS, default="new", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.child:
        child(args)
        return
    if args.busy < 1 or args.epochs < 1 or args.reps < 1:
        p.error("--busy, --epochs and --reps must be at least 1")
    modes = DATA if args.data == "both" else (args.data,)

    print(source_fingerprint())
    print(f"CPU: {cpu_name()}, {os.cpu_count()} logical CPUs; {args.model}, batch {args.batch_size}, "
          f"{args.classes} classes x {args.per_class} training + {args.val_per_class} validation images of "
          f"{args.size} px, {args.epochs} epochs per run; busy: {args.busy} spinning processes", flush=True)
    runs: list[Run] = []
    with tempfile.TemporaryDirectory(prefix="zfnet-busy-data-") as tmp:
        data = args.data_dir or make_data(args, Path(tmp) / "data")
        for load in LOADS:
            kinds = (*BEHAVIOURS, ONE_THREAD) if load == "idle" else BEHAVIOURS
            with BackgroundLoad(args.busy if load == "busy" else 0):
                for mode, rep, behaviour in itertools.product(modes, range(args.reps), kinds):
                    if behaviour == ONE_THREAD and rep:
                        continue  # one reference run is enough
                    run = run_child(args, data, load, mode, behaviour)
                    runs.append(run)
                    print(f"  {load:4} {mode:8} {behaviour}: epochs {', '.join(f'{s:.1f}' for s in run.epochs)} s, "
                          f"{run.threads} threads, {run.workers} workers, others {run.others:.2f} cores",
                          flush=True)

    def of(load: str, mode: str, behaviour: str) -> list[Run]:
        return [r for r in runs if (r.load, r.data, r.behaviour) == (load, mode, behaviour)]

    def epoch(load: str, mode: str, behaviour: str) -> float:
        """The mean epoch of a setting: every epoch of every run (a slow one is what a user waits for)."""
        return statistics.fmean(s for r in of(load, mode, behaviour) for s in r.epochs)

    print()
    print(f"'epoch s': the mean epoch (training pass + validation) over the {args.epochs} epochs of each of "
          f"{args.reps} run(s), the first (workers started) included, and the fastest and slowest of them; "
          f"per run (mean of the runs): 'run s' the whole train() call, 'cpu s' CPU-seconds of the run with its "
          f"workers, 'others' cores other processes kept busy meanwhile")
    head = (f"{'load':5} {'data':9} {'behaviour':9} {'threads':>7} {'workers':>7} {'epoch s':>8} {'min-max':>12} "
            f"{'run s':>7} {'cpu s':>7} {'others':>7}")
    print(head)
    print("-" * len(head))
    for load, mode, behaviour in itertools.product(LOADS, modes, (*BEHAVIOURS, ONE_THREAD)):
        if not of(load, mode, behaviour):
            continue
        chosen = of(load, mode, behaviour)
        every = [s for r in chosen for s in r.epochs]
        threads = "/".join(sorted({str(r.threads) for r in chosen}))  # the plan may differ between runs
        workers = "/".join(sorted({str(r.workers) for r in chosen}))
        print(f"{load:5} {mode:9} {behaviour:9} {threads:>7} {workers:>7} {statistics.fmean(every):8.2f} "
              f"{f'{min(every):.2f}-{max(every):.2f}':>12} {statistics.fmean(r.wall for r in chosen):7.1f} "
              f"{statistics.fmean(r.cpu for r in chosen):7.1f} {statistics.fmean(r.others for r in chosen):7.2f}")
    print()
    for mode in modes:
        for load in LOADS:
            old, new = epoch(load, mode, "old"), epoch(load, mode, "new")
            print(f"{mode:9} {load:5}: old / new {old / new:.2f}x  ({old:.2f} s -> {new:.2f} s)")
        for behaviour in BEHAVIOURS:
            idle, busy = epoch("idle", mode, behaviour), epoch("busy", mode, behaviour)
            print(f"{mode:9} {behaviour}: busy / idle {busy / idle:.2f}x  ({idle:.2f} s -> {busy:.2f} s)")
        one, busy = epoch("idle", mode, ONE_THREAD), epoch("busy", mode, "new")
        print(f"{mode:9} new busy / one thread idle {busy / one:.2f}x  ({one:.2f} s -> {busy:.2f} s; 1.00x: the "
              f"busy run had a core to itself)")
    spread = [r.others for r in runs if r.load == "idle"]
    if spread and statistics.fmean(spread) > 0.3:
        print(f"note: other processes kept {statistics.fmean(spread):.2f} cores busy on average during the idle "
              f"runs: the machine was not idle")


if __name__ == "__main__":
    main()
