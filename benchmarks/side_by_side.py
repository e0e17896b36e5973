"""Two trainings one after the other on every core against side by side on a core each.

    python benchmarks/side_by_side.py                 # about 4 minutes on 2 cores
    python benchmarks/side_by_side.py --steps 500 --repeats 3

The demo trains ``zfnet-cpu`` and ``alexnet-cpu`` (and its from-scratch baselines) with batches of 32.
Two pairs of trainings are measured, each training ``--steps`` SGD steps from the same initialisation on
pre-made batches (random 112 px tensors: the model is the only bound):

- **equal pair**, two ``zfnet-cpu`` trainings (the from-scratch baselines);
- **the demo's pair**, ``zfnet-cpu`` and ``alexnet-cpu``.

Each pair is trained **one after the other** in this process, torch's threads on every core (the count
:mod:`zfnet.cores` plans on an idle machine), and **side by side** with :func:`zfnet.cores.side_by_side`,
each training in a process of its own with the cores divided between them. Side by side is timed twice:
the steps alone (from the start of the first to the end of the last, as each process reports them), and
the whole call, with the processes' start (a fresh interpreter importing torch, about 2 s), which a
short training pays and a long one does not notice. Alternated ``--repeats`` times; medians.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

import torch

from zfnet import cores
from zfnet.models import build
from zfnet.models.speed import prepare_for_speed
from zfnet.train.step import sgd, sgd_step

MODELS = ("zfnet-cpu", "alexnet-cpu")


def train_steps(name: str, steps: int, batch: int = 32) -> tuple[float, float]:
    """``steps`` SGD steps of ``name`` (the paper's recipe): the steps' start and end (``time.time()``)."""
    torch.manual_seed(0)
    model = build(name, num_classes=10)
    prepare_for_speed(model, train=True, channels_last=True)
    opt = sgd(model, lr=1e-2, momentum=0.9, weight_decay=5e-4)
    size = model.config.input_size
    gen = torch.Generator().manual_seed(0)
    xs = [torch.randn(batch, 3, size, size, generator=gen).contiguous(memory_format=torch.channels_last)
          for _ in range(8)]
    y = torch.randint(0, 10, (batch,), generator=gen)
    sgd_step(model, opt, xs[0], y, max_filter_rms=0.1)  # warm-up: kernels chosen, memory allocated
    start = time.time()
    for i in range(steps):
        sgd_step(model, opt, xs[i % len(xs)], y, max_filter_rms=0.1)
    return start, time.time()


def measure(models: tuple[str, ...], steps: int, repeats: int, cores_n: int) -> tuple[float, float, float]:
    each = max(1, cores_n // len(models))
    seq, steps_only, whole = [], [], []
    for _ in range(repeats):
        torch.set_num_threads(cores_n)
        spans = [train_steps(name, steps) for name in models]
        seq.append(sum(end - start for start, end in spans))
        t = time.perf_counter()
        spans = cores.side_by_side(train_steps, [(name, steps) for name in models], threads=each)
        whole.append(time.perf_counter() - t)
        steps_only.append(max(end for _, end in spans) - min(start for start, _ in spans))
    return statistics.median(seq), statistics.median(steps_only), statistics.median(whole)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--steps", type=int, default=300)
    ap.add_argument("--repeats", type=int, default=2)
    args = ap.parse_args()
    n = len(os.sched_getaffinity(0))
    print(f"torch {torch.__version__}, {n} cores; {args.steps} steps of batch 32 per training")
    train_steps("zfnet-cpu", 3)  # warm-up of this process
    for label, models in (("equal pair (zfnet-cpu twice)", ("zfnet-cpu", "zfnet-cpu")),
                          ("the demo's pair (zfnet-cpu, alexnet-cpu)", ("zfnet-cpu", "alexnet-cpu"))):
        s, p, w = measure(models, args.steps, args.repeats, n)
        images = len(models) * args.steps * 32
        print(f"{label}: one after the other ({n} threads) {s:.1f} s ({images / s:.0f} img/s); side by side "
              f"({len(models)} x {max(1, n // len(models))} thread) steps {p:.1f} s ({images / p:.0f} img/s, "
              f"{s / p:.2f}x), with the processes' start {w:.1f} s ({s / w:.2f}x)")


if __name__ == "__main__":
    main()
