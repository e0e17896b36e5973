"""Training and inference throughput of a ZFNet-family model, against this machine's matmul peak.

Measures, in one run and on the CPU:

1. the fp32 matrix-multiply peak: ``torch.mm`` on two n x n matrices, best of several reps,
   taken at the start and at the end of the run (the higher one is the peak used);
2. for each path, a training step (forward, cross-entropy, backward, SGD momentum step) and an
   inference pass (``eval()``, ``torch.inference_mode``) on a fixed synthetic batch:
   ``eager``     plain eager PyTorch, NCHW, torch's own ``LocalResponseNorm`` (the reference);
   ``cl``        channels-last weights and input, the fast ``ContrastNorm`` (banded matmul),
                 the default allocator;
   ``fast``      ``prepare_for_speed(model, train=...)`` with its CPU defaults: ``cl`` plus
                 retained host memory (glibc malloc keeps freed blocks; process-wide, so the
                 paths without it run first);
   ``compiled``  ``fast`` plus ``torch.compile`` (inductor); its first call per mode (compilation,
                 cold: inductor's on-disk cache is disabled) is reported separately and excluded
                 from the throughput.
   Before timing, each path's logits and parameter gradients (eval mode, so no dropout) are
   compared with the reference's on the same batch.

FLOPs are counted analytically: 2 x the multiply-adds of every convolution and linear layer
(biases, pools, normalisation and activations not counted), per image, from the model's own
layer shapes. A training step counts as 3 x the forward FLOPs (forward, gradient with respect
to activations, gradient with respect to weights), the usual convention; the first layer's
input gradient is not actually computed, so for ZFNet the exact figure is 2.85 x forward.
Throughput is the best of ``--iters`` timed calls after ``--warmup`` untimed ones (the median is
printed beside it), so that a burst of load from other processes on a shared machine does not
decide the result; the load other processes put on the CPU during each measurement is printed.

Usage:
    python benchmarks/throughput.py                      # zfnet, batch 64, every path
    python benchmarks/throughput.py --paths eager,fast --iters 10
"""

from __future__ import annotations

import argparse
import copy
import functools
import gc
import os
import platform
import statistics
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from zfnet.cores import busy_seconds
from zfnet.models import build, list_models, model_info
from zfnet.models.speed import prepare_for_speed

PATHS = ("eager", "cl", "fast", "compiled")
# Tolerances of the equivalence check (eval mode, same weights, same batch). Different kernels and
# layouts sum in different orders, so float32 results differ by rounding, ~1e-6 of each tensor's
# scale through ZFNet's eight layers. Logits: max |path - eager| / max |eager| <= 1e-4.
LOGITS_RTOL = 1e-4
# Gradients: a ReLU whose input lies within rounding of zero (about one unit in a million at
# initialisation) can be open in one path and shut in the other, which sends that element's
# gradient down a different route; a float64 run shows either float32 answer is as right as the
# other. At batch 64 the few such units give the lower layers' weight gradients relative L2
# errors of 1e-3 to 1e-2 (seeds 0-3), so gradients are compared as ||path - eager|| / ||eager||
# per parameter with 5e-2: loose for rounding, tight for a layout or indexing error (order 1).
# The exact equivalence is tested at small scale in tests/models/test_speed.py and
# tests/models/test_layers_speed.py.
GRAD_RTOL = 5e-2


# --------------------------------------------------------------------------- measurement tools
def forward_macs(model: nn.Module, input_size: int, in_channels: int = 3) -> int:
    """Multiply-adds of every Conv2d and Linear in one image's forward pass."""
    total = 0

    def count(module: nn.Module, inputs: tuple, output: torch.Tensor) -> None:
        nonlocal total
        if isinstance(module, nn.Conv2d):
            kh, kw = module.kernel_size
            total += output.numel() * (module.in_channels // module.groups) * kh * kw
        else:
            total += output.numel() * module.in_features

    handles = [m.register_forward_hook(count) for m in model.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    try:
        with torch.inference_mode():
            model(torch.zeros(1, in_channels, input_size, input_size))
    finally:
        for h in handles:
            h.remove()
    return total


def matmul_peak(n: int, reps: int) -> float:
    """fp32 ``torch.mm`` throughput on n x n matrices in GFLOP/s, best of ``reps``."""
    a, b, c = torch.randn(n, n), torch.randn(n, n), torch.empty(n, n)
    torch.mm(a, b, out=c)
    best = min(_timed(lambda: torch.mm(a, b, out=c)) for _ in range(reps))
    return 2 * n**3 / best / 1e9


def _timed(fn: Callable[[], object]) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


class OtherLoad:
    """CPU cores kept busy by other processes during a ``with`` block (Linux; NaN elsewhere)."""

    def __enter__(self) -> OtherLoad:
        self._start = (busy_seconds(), _own_seconds(), time.perf_counter())
        self.cores = float("nan")
        return self

    def __exit__(self, *exc: object) -> None:
        busy, own, wall = busy_seconds(), _own_seconds(), time.perf_counter()
        self.cores = max(0.0, ((busy - self._start[0]) - (own - self._start[1])) / (wall - self._start[2]))


def _own_seconds() -> float:
    t = os.times()
    return t.user + t.system


def cpu_name() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


# --------------------------------------------------------------------------- the paths
@dataclass
class Result:
    path: str
    mode: str
    times: list[float]
    first: float
    other_load: float
    batch: int

    @property
    def best(self) -> float:
        return self.batch / min(self.times)

    @property
    def median(self) -> float:
        return self.batch / statistics.median(self.times)


def use_torch_lrn(model: nn.Module) -> nn.Module:
    """Make every LocalResponseNorm run torch's own forward (the reference implementation)."""
    for m in model.modules():
        if isinstance(m, nn.LocalResponseNorm):
            m.forward = functools.partial(nn.LocalResponseNorm.forward, m)
    return model


def prepare(path: str, model: nn.Module, train: bool) -> nn.Module:
    """``model`` set up, in place, as ``path`` runs it, in training or evaluation mode."""
    if path == "eager":
        return use_torch_lrn(model).train(train)
    if path == "cl":
        return prepare_for_speed(model, train=train, channels_last=True, retain_memory=False)
    return prepare_for_speed(model, train=train, compile=path == "compiled")


def input_for(path: str, x: torch.Tensor) -> torch.Tensor:
    return x if path == "eager" else x.contiguous(memory_format=torch.channels_last)


def logits_and_grads(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> dict[str, torch.Tensor]:
    """Eval-mode logits and the gradient of the loss for every parameter."""
    was_training = model.training
    model.eval()
    model.zero_grad(set_to_none=True)
    logits = model(x)
    F.cross_entropy(logits, y).backward()
    out = {"logits": logits.detach()}
    out.update({n: p.grad.detach().clone() for n, p in model.named_parameters()})
    model.zero_grad(set_to_none=True)
    model.train(was_training)
    return out


@dataclass
class Check:
    logits: float  # max |path - eager| / max |eager|
    grads: float  # worst ||path - eager|| / ||eager|| over the parameters
    worst_param: str

    @property
    def ok(self) -> bool:
        return self.logits <= LOGITS_RTOL and self.grads <= GRAD_RTOL


def compare(got: dict[str, torch.Tensor], ref: dict[str, torch.Tensor]) -> Check:
    logits = float((got["logits"] - ref["logits"]).abs().max() / ref["logits"].abs().max())
    grads, worst = max((float((got[n] - r).norm() / r.norm().clamp_min(1e-30)), n)
                       for n, r in ref.items() if n != "logits")
    return Check(logits, grads, worst)


def measure(path: str, model: nn.Module, x: torch.Tensor, y: torch.Tensor, train: bool,
            warmup: int, iters: int) -> Result:
    if train:
        opt = torch.optim.SGD(model.parameters(), lr=1e-2, momentum=0.9)

        def call() -> None:
            opt.zero_grad(set_to_none=True)
            F.cross_entropy(model(x), y).backward()
            opt.step()
    else:
        def call() -> None:
            with torch.inference_mode():
                model(x)

    first = _timed(call)
    for _ in range(max(0, warmup - 1)):
        call()
    with OtherLoad() as load:
        times = [_timed(call) for _ in range(iters)]
    return Result(path, "train" if train else "inference", times, first, load.cores, len(x))


# --------------------------------------------------------------------------- main
def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--model", default="zfnet", choices=list_models(), help="registered model")
    p.add_argument("--batch-size", type=int, default=64, help="images per step")
    p.add_argument("--warmup", type=int, default=2, help="untimed calls per path and mode (>= 1)")
    p.add_argument("--iters", type=int, default=5, help="timed calls per path and mode")
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    p.add_argument("--paths", default=",".join(PATHS), help=f"comma-separated subset of {', '.join(PATHS)}")
    p.add_argument("--matmul-size", type=int, default=4096, help="side of the square matrices of the peak")
    p.add_argument("--matmul-reps", type=int, default=5, help="reps of the peak matmul")
    p.add_argument("--no-check", action="store_true", help="skip the equivalence check")
    p.add_argument("--warm-compile-cache", action="store_true",
                   help="let inductor reuse its on-disk cache (default: cold compiles, timed as 'first')")
    args = p.parse_args(argv)
    paths = [s.strip() for s in args.paths.split(",") if s.strip()]
    bad = [s for s in paths if s not in PATHS]
    if bad or not paths:
        p.error(f"unknown path(s) {bad}; valid: {', '.join(PATHS)}")
    paths = [s for s in PATHS if s in paths]  # retained memory is process-wide: eager and cl first
    if args.warmup < 1 or args.iters < 1 or args.batch_size < 1:
        p.error("--warmup, --iters and --batch-size must be at least 1")
    if args.threads:
        torch.set_num_threads(args.threads)
    if "compiled" in paths and not args.warm_compile_cache:
        # Report the compilation a fresh process pays, not a hit in inductor's on-disk cache.
        import torch._inductor.config as inductor_config

        inductor_config.force_disable_caches = True
        warnings.filterwarnings("ignore", message="dynamo_pgo force disabled")

    torch.manual_seed(0)
    size = model_info(args.model).input_size
    master = build(args.model)
    macs = forward_macs(master, size)
    fwd_flops = 2 * macs
    x = torch.randn(args.batch_size, 3, size, size)
    y = torch.randint(0, master.config.num_classes, (args.batch_size,))

    print(f"{args.model}: batch {args.batch_size}, {size}x{size}, float32, {torch.get_num_threads()} threads, "
          f"torch {torch.__version__}")
    print(f"CPU: {cpu_name()}, {os.cpu_count()} logical CPUs")
    peak_start = matmul_peak(args.matmul_size, args.matmul_reps)
    print(f"forward: {macs / 1e9:.3f} G multiply-adds = {fwd_flops / 1e9:.3f} GFLOP per image; "
          f"training step counted as 3 x forward = {3 * fwd_flops / 1e9:.3f} GFLOP per image")

    ref = None
    results: list[Result] = []
    checks: dict[str, Check] = {}
    for path in paths:
        model = prepare(path, copy.deepcopy(master), train=True)
        xp = input_for(path, x)
        if not args.no_check:
            got = logits_and_grads(model, xp, y)
            if path == "eager":
                ref = got
            elif ref is None:
                ref = logits_and_grads(use_torch_lrn(copy.deepcopy(master)), x, y)
            if path != "eager":
                checks[path] = compare(got, ref)
            del got
        print(f"  {path}: training ...", flush=True)
        results.append(measure(path, model, xp, y, True, args.warmup, args.iters))
        model = prepare(path, model, train=False)
        print(f"  {path}: inference ...", flush=True)
        results.append(measure(path, model, xp, y, False, args.warmup, args.iters))
        del model
        gc.collect()
    peak_end = matmul_peak(args.matmul_size, args.matmul_reps)
    peak = max(peak_start, peak_end)

    print()
    print(f"fp32 matmul peak (torch.mm {args.matmul_size}^2, best of {args.matmul_reps}): {peak:.1f} GFLOP/s "
          f"(start {peak_start:.1f}, end {peak_end:.1f})")
    print(f"throughput: best of {args.iters} after {args.warmup} warm-up calls (median in brackets); "
          f"'first' is the first call, which for 'compiled' includes compiling that mode's graph; "
          f"'other load' is the CPU cores other processes kept busy meanwhile (near 0 in a clean run)")
    head = (f"{'path':9} {'mode':9} {'images/s':>17} {'GFLOP/s':>8} {'of peak':>8} {'vs eager':>8} "
            f"{'first':>7} {'other load':>10} {'check':>9}")
    print(head)
    print("-" * len(head))
    base = {r.mode: r.best for r in results if r.path == "eager"}
    for r in results:
        flops = fwd_flops * (3 if r.mode == "train" else 1)
        gflops = r.best * flops / 1e9
        ratio = f"{r.best / base[r.mode]:.2f}x" if r.mode in base else "-"
        check = "reference" if r.path == "eager" else "-"
        if r.path in checks:
            check = "ok" if checks[r.path].ok else "FAIL"
        print(f"{r.path:9} {r.mode:9} {r.best:7.1f} ({r.median:6.1f}) {gflops:8.1f} {gflops / peak:8.1%} "
              f"{ratio:>8} {r.first:6.1f}s {r.other_load:6.2f} cores {check:>9}")
    for mode, goal in (("train", 0.50), ("inference", 0.60)):
        opt = [r for r in results if r.mode == mode and r.path != "eager"]
        if opt:
            best = max(opt, key=lambda r: r.best)
            frac = best.best * fwd_flops * (3 if mode == "train" else 1) / 1e9 / peak
            print(f"goal {mode} >= {goal:.0%} of peak: {frac:.1%} ({best.path}) {'met' if frac >= goal else 'NOT met'}")
    for path, c in checks.items():
        print(f"check {path}: logits max|d|/max|eager| {c.logits:.1e} (<= {LOGITS_RTOL:g}), gradients "
              f"worst ||d||/||eager|| {c.grads:.1e} ({c.worst_param}; <= {GRAD_RTOL:g}): "
              f"{'ok' if c.ok else 'FAIL'}")
    failed = [p for p, c in checks.items() if not c.ok]
    if failed:
        raise SystemExit(f"equivalence check failed for {', '.join(failed)}")


def source_fingerprint() -> str:
    """Which zfnet source was measured: HEAD, whether the tree differs from it, a hash of src/zfnet's files."""
    import hashlib
    import subprocess

    import zfnet

    root = Path(zfnet.__file__).resolve().parent
    files = sorted(root.rglob("*.py"))
    digest = hashlib.sha1(b"".join(f.read_bytes() for f in files)).hexdigest()[:10]
    newest = time.strftime("%H:%M:%S", time.gmtime(max(f.stat().st_mtime for f in files)))
    try:
        head = subprocess.run(["git", "-C", str(root), "describe", "--always", "--dirty"], capture_output=True,
                              text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        head = "?"
    return f"zfnet source {head}, src/zfnet hash {digest} (newest file {newest} UTC)"


def wait_for_quiet(limit: float, timeout: float) -> float:
    """Wait until other processes keep fewer than ``limit`` cores busy over 2 s (at most ``timeout`` s).

    Returns the seconds waited. The machine is shared: a call that starts while another job holds a core
    runs at half speed or less, and its time says little.
    """
    start = time.perf_counter()
    while limit > 0 and time.perf_counter() - start < timeout:
        with OtherLoad() as other:
            time.sleep(2.0)
        if other.cores < limit:
            break
    return time.perf_counter() - start


if __name__ == "__main__":
    main()
