"""The full demo's time, stage by stage, on this code or on an older checkout of it.

    python benchmarks/demo_time.py OUT                         # the demo as it is (about 10 minutes on 2 cores)
    python benchmarks/demo_time.py OUT --workload 5009aaa      # this code doing the work the demo did at 5009aaa
    PYTHONPATH=OLD/src python benchmarks/demo_time.py OUT      # an older checkout (``git worktree add OLD 5009aaa``)

Prints each stage's log line with the seconds since the start, the demo's summary and the total.
``OUT`` must not exist. The machine's speed drifts by 10-20 % between runs of ten minutes, so compare runs
alternated back to back (``docs/results.md`` gives the figures and the order they were run in).

``--workload 5009aaa`` runs this code on the work of the demo at commit 5009aaa, as it
was then: AlexNet in the pool-then-normalise order (``alexnet-cpu`` with ``norm_before_pool=False``),
random training crops, and the from-scratch baselines' old budget (300 SGD steps on each of the five
splits of each size: ten trainings). It tells what the restructuring itself saved, apart from the work
the demo took on since.
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import sys
import time
from pathlib import Path


def _like_5009aaa(demo) -> None:
    """Make this code's full demo plan do the work of commit 5009aaa's."""
    demo.PLANS["full"] = dataclasses.replace(demo.PLANS["full"], scratch_steps=300, scratch_splits=None)
    train_config = demo.TrainConfig

    def old_work(**kwargs):
        kwargs["train_crops"] = "random"
        if kwargs.get("model") == "alexnet-cpu":
            kwargs["model_options"] = {"norm_before_pool": False}
        return train_config(**kwargs)

    demo.TrainConfig = old_work


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0], allow_abbrev=False)
    parser.add_argument("out", type=Path, help="a new folder for the demo")
    parser.add_argument("--workload", choices=("now", "5009aaa"), default="now",
                        help="the demo's work as it is, or as it was at commit 5009aaa (this code only)")
    args = parser.parse_args()
    if args.out.exists():
        parser.error(f"{args.out} exists; give a new folder")

    t0 = time.perf_counter()
    handler = logging.StreamHandler(sys.stdout)

    class Stamped(logging.Formatter):
        def format(self, record):
            return f"{time.perf_counter() - t0:7.1f}s {record.getMessage()}"

    handler.setFormatter(Stamped())
    log = logging.getLogger("zfnet")
    log.handlers[:] = [handler]
    log.setLevel(logging.INFO)
    log.propagate = False
    try:
        from zfnet.experiments import demo
    except ImportError:  # a checkout from before the experiments layer
        if args.workload != "now":
            parser.error("--workload applies to this code only")
        from zfnet import demo as old_demo
        print(old_demo.run_demo(args.out, show_progress=False))
    else:
        if args.workload == "5009aaa":
            _like_5009aaa(demo)
        print(demo.run(demo.Config(), args.out, show_progress=False).summary())
    print(f"total {time.perf_counter() - t0:.1f} s", flush=True)


if __name__ == "__main__":
    main()
