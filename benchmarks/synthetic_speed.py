"""How long ``write_synthetic`` takes: 10 classes x 100 images (+ 20 validation) at 128 px, 1200 images.

    python benchmarks/synthetic_speed.py                            # this checkout, 2 cores and one process
    PYTHONPATH=OLD/src python benchmarks/synthetic_speed.py         # an older checkout (git worktree), to alternate

Prints the seconds with the process pool (the default above 400 images) and in one process, and the size
on disk. Run this checkout and an older one alternately: the machine's speed drifts between runs.
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import time
from pathlib import Path


def timed(out: Path, in_process: bool) -> float:
    from zfnet.data import synthetic

    saved = synthetic._POOL_MIN_IMAGES
    if in_process:
        synthetic._POOL_MIN_IMAGES = 10**9
    try:
        start = time.perf_counter()
        synthetic.write_synthetic(out, classes=10, per_class=100, val_per_class=20, seed=0, size=128,
                                  progress=False)
        return time.perf_counter() - start
    finally:
        synthetic._POOL_MIN_IMAGES = saved


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0], allow_abbrev=False)
    parser.add_argument("--repeats", type=int, default=1)
    args = parser.parse_args()
    import zfnet

    print(f"zfnet from {Path(zfnet.__file__).parent}")
    for _ in range(args.repeats):
        with tempfile.TemporaryDirectory() as tmp:
            pooled = timed(Path(tmp) / "pool", in_process=False)
            size = sum(f.stat().st_size for f in (Path(tmp) / "pool").rglob("*") if f.is_file()) / 2**20
            shutil.rmtree(Path(tmp) / "pool")
            single = timed(Path(tmp) / "one", in_process=True)
        print(f"process pool {pooled:.2f} s, one process {single:.2f} s, {size:.0f} MB (file sizes)")


if __name__ == "__main__":
    main()
