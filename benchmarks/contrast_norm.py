"""The contrast normalisation's forward and backward against ``F.local_response_norm``'s, in one run.

    python benchmarks/contrast_norm.py                          # this checkout, about 20 s on 2 cores
    PYTHONPATH=OLD/src python benchmarks/contrast_norm.py       # an older checkout (git worktree), to alternate

At batch 32, channels-last, on the maps the demo's networks normalise (AlexNet's conv1 at 27 x 27 and
ZFNet's norm1 input at 54 x 54 before pooling, 32 maps; the paper's constants, k = 2): the median of
``--repeats`` forward-and-backward passes of :func:`zfnet.models.speed.contrast_norm` and of PyTorch's
``F.local_response_norm`` (autograd through its pad and ``avg_pool3d``) on the same input, interleaved.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
import torch.nn.functional as F

from zfnet.models.speed import contrast_norm, retain_freed_host_memory

SHAPES = ((32, 32, 27, 27), (32, 32, 54, 54))


def timed(fn, x: torch.Tensor, g: torch.Tensor) -> float:
    start = time.perf_counter()
    fn(x, 5, 1e-4, 0.75, 2.0).backward(g)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0], allow_abbrev=False)
    parser.add_argument("--repeats", type=int, default=60)
    args = parser.parse_args()
    retain_freed_host_memory()  # as a prepared model has it
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads")
    for shape in SHAPES:
        gen = torch.Generator().manual_seed(0)
        x = torch.randn(*shape, generator=gen).relu().contiguous(memory_format=torch.channels_last).requires_grad_()
        g = torch.randn(*shape, generator=gen).contiguous(memory_format=torch.channels_last)
        ours, torchs = [], []
        for i in range(args.repeats + 5):
            a, b = timed(contrast_norm, x, g), timed(F.local_response_norm, x, g)
            if i >= 5:  # warm-up
                ours.append(a)
                torchs.append(b)
        o, t = statistics.median(ours), statistics.median(torchs)
        print(f"{'x'.join(map(str, shape))}: contrast_norm {1000 * o:.2f} ms, F.local_response_norm {1000 * t:.2f} ms "
              f"({t / o:.2f}x)")


if __name__ == "__main__":
    main()
