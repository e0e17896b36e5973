"""Deconvnet projections of many distinct images: zfnet's ``Deconvnet.project`` against a batched autograd peer.

    python benchmarks/projection_speed.py                # ZFNet conv5 and ResNet-50 layer4, 288 images
    python benchmarks/projection_speed.py --models zfnet --repeats 5
    python benchmarks/projection_speed.py --models resnet50 --chunks 8,16,32 --layouts nchw
    python benchmarks/projection_speed.py --models zfnet --quiet-below 0.3 --retain-memory   # see docs/benchmarks.md

For each of ``--images`` random images (seeded) one item: the image's strongest map of the layer (largest
maximum) at the position of its maximum. Channels and positions are found first, outside the timing, by a
plain ``torch.no_grad`` forward pass that stops at the layer; both ways then get the same (channel, position)
per image, as in the top-k case.

- ``zfnet``: ``Deconvnet(model).project(x, layer, channels, positions=positions)``, all images in one call,
  the default strategy (it chooses between forward passes inside each activation's receptive field and one
  full pass per image, and its own chunking).
- ``peer``: the strongest plain-PyTorch batched deconvnet we could write: a chunk of images with
  ``requires_grad``, one forward pass that stops at the layer (a forward hook raises), every ``nn.ReLU``'s
  backward replaced by a ReLU of the incoming gradient (a ``torch.autograd.Function``, also for ResNet's
  reused in-place ReLU modules), every ``LocalResponseNorm`` (ZFNet's contrast normalisation) passing the
  gradient unchanged as the paper's deconvnet does, parameters frozen (no weight gradients), and one
  ``torch.autograd.grad`` per chunk with a seed holding each image's activation value at its (channel,
  position), so the result is the projection itself (gradient times activation). Its chunk size and layout
  (NCHW or channels-last, on its own copy of the model) are tuned first on ``--tune-images`` images; the
  fastest setting is used.

Both are checked to give the same projections (largest |difference| over the largest |projection|, per image),
then they alternate over ``--repeats`` rounds (the order swapped every round); the fastest round of each
counts, the median is printed beside it, with the cores other processes kept busy meanwhile
(``--quiet-below`` waits for a quiet machine before each timed call). ``--retain-memory`` keeps freed host
memory in the process for both ways (it helps the peer more). ``--zfnet-extra MIB`` adds a diagnostic way:
zfnet on a channels-last copy of the model with ``chunk_bytes`` of MIB MiB. ResNet-50 and VGG-16 are the
torchvision re-implementations of ``tests/helpers/zoo.py`` (torchvision's initialisation, eval mode).
"""

from __future__ import annotations

import argparse
import copy
import os
import platform
import statistics
import sys
import time
from contextlib import contextmanager
from pathlib import Path

import torch
from throughput import source_fingerprint, wait_for_quiet  # benchmarks/throughput.py
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from zfnet import Deconvnet  # noqa: E402
from zfnet.models import build  # noqa: E402

LAYERS = {"zfnet": "conv5", "resnet50": "layer4", "vgg16": "features.29"}


def make_model(name: str) -> nn.Module:
    torch.manual_seed(0)
    if name == "zfnet":
        return build("zfnet", num_classes=1000).eval()
    from helpers.zoo import resnet50, vgg16

    return {"resnet50": resnet50, "vgg16": vgg16}[name](num_classes=1000).eval()


# -- the peer --------------------------------------------------------------------------------------------------


class _DeconvReLU(torch.autograd.Function):
    """ReLU forward; backward: a ReLU of the incoming gradient (the deconvnet's rectification)."""

    @staticmethod
    def forward(ctx, x):
        return torch.relu(x)

    @staticmethod
    def backward(ctx, grad):
        return torch.relu(grad)


class _PassThrough(torch.autograd.Function):
    """``fn(x)`` forward; the gradient passes unchanged (the paper's rule for contrast normalisation)."""

    @staticmethod
    def forward(ctx, x, fn):
        return fn(x)

    @staticmethod
    def backward(ctx, grad):
        return grad, None


class _Stop(Exception):
    def __init__(self, value: torch.Tensor) -> None:
        self.value = value


def _pass_through(fn):
    return lambda x: _PassThrough.apply(x, fn)


@contextmanager
def deconvnet_rules(model: nn.Module):
    """Swap every ReLU's backward for the deconvnet rule, let normalisation pass the signal, freeze weights."""
    patched = []
    for m in model.modules():
        if type(m) is nn.ReLU:  # in place or not, reused or not: each call goes through the Function
            m.forward = _DeconvReLU.apply
            patched.append(m)
        elif isinstance(m, nn.LocalResponseNorm):
            m.forward = _pass_through(type(m).forward.__get__(m))
            patched.append(m)
        elif isinstance(m, (nn.ReLU6, nn.LeakyReLU, nn.GELU, nn.SiLU)):
            raise TypeError(f"the peer handles nn.ReLU only, found {type(m).__name__}")
    flags = [(p, p.requires_grad) for p in model.parameters()]
    for p, _ in flags:
        p.requires_grad_(False)
    try:
        yield
    finally:
        for m in patched:
            del m.forward
        for p, flag in flags:
            p.requires_grad_(flag)


def forward_to(model: nn.Module, layer: str, x: torch.Tensor) -> torch.Tensor:
    """``layer``'s output; the rest of the model does not run."""
    def stop(module, inputs, output):
        raise _Stop(output)

    handle = model.get_submodule(layer).register_forward_hook(stop)
    try:
        model(x)
    except _Stop as s:
        return s.value
    finally:
        handle.remove()
    raise RuntimeError(f"{layer} did not run")


def peer_project(model: nn.Module, layer: str, images: torch.Tensor, channels: torch.Tensor, positions: torch.Tensor,
                 chunk: int, channels_last: bool) -> torch.Tensor:
    out = []
    with deconvnet_rules(model):
        for lo in range(0, len(images), chunk):
            x = images[lo:lo + chunk]
            if channels_last:
                x = x.contiguous(memory_format=torch.channels_last)
            x = x.detach().requires_grad_()
            act = forward_to(model, layer, x)
            n = torch.arange(len(x))
            c, r, col = channels[lo:lo + chunk], positions[lo:lo + chunk, 0], positions[lo:lo + chunk, 1]
            seed = torch.zeros_like(act)
            seed[n, c, r, col] = act.detach()[n, c, r, col]
            (grad,) = torch.autograd.grad(act, x, seed)
            out.append(grad)
    return torch.cat(out)


# -- the benchmark ---------------------------------------------------------------------------------------------


def strongest(model: nn.Module, layer: str, images: torch.Tensor, batch: int = 32) -> tuple[torch.Tensor, torch.Tensor]:
    """Each image's strongest map of ``layer`` (largest maximum) and the (row, column) of its maximum."""
    chans, pos = [], []
    with torch.no_grad():
        for lo in range(0, len(images), batch):
            act = forward_to(model, layer, images[lo:lo + batch])
            c = act.amax(dim=(2, 3)).argmax(1)
            arg = act[torch.arange(len(act)), c].flatten(1).argmax(1)
            chans.append(c)
            pos.append(torch.stack((arg // act.shape[3], arg % act.shape[3]), 1))
    return torch.cat(chans), torch.cat(pos)


def relative_difference(a: torch.Tensor, b: torch.Tensor) -> float:
    """Largest over images of max |a - b| / max |b|."""
    return float(((a - b).flatten(1).abs().amax(1) / b.flatten(1).abs().amax(1).clamp_min(1e-30)).max())


QUIET = {"limit": 0.0, "timeout": 0.0}  # set from --quiet-below, --quiet-wait


def timed(fn, loads: list[float] | None = None) -> float:
    """Seconds of ``fn()``; the cores other processes kept busy meanwhile are appended to ``loads``."""
    from throughput import OtherLoad  # benchmarks/throughput.py

    wait_for_quiet(QUIET["limit"], QUIET["timeout"])
    with OtherLoad() as other:
        t = time.perf_counter()
        fn()
        t = time.perf_counter() - t
    if loads is not None:
        loads.append(other.cores)
    return t


def bench(name: str, args: argparse.Namespace) -> dict:
    layer = args.layer or LAYERS[name]
    model = make_model(name)
    gen = torch.Generator().manual_seed(1)
    images = torch.randn(args.images, 3, 224, 224, generator=gen)
    channels, positions = strongest(model, layer, images)
    deconv = Deconvnet(model)
    print(f"\n== {name}, layer {layer} {deconv.output_shape(layer, (3, 224, 224))}, {args.images} images, "
          f"{len(torch.unique(channels))} distinct maps")

    layouts = {"nchw": False, "cl": True}
    peers = {"nchw": model, "cl": copy.deepcopy(model).to(memory_format=torch.channels_last)}
    settings = [(c, lay) for lay in args.layouts.split(",") for c in (int(v) for v in args.chunks.split(","))]

    # correctness, on the first images, and warm-up
    k = min(args.check_images, args.images)
    ours = deconv.project(images[:k], layer, channels[:k], positions=positions[:k])
    for chunk, lay in settings[:1] + [s for s in settings if s[1] != settings[0][1]][:1]:
        theirs = peer_project(peers[lay], layer, images[:k], channels[:k], positions[:k], chunk, layouts[lay])
        print(f"projections of the first {k} images, zfnet vs peer ({lay}): "
              f"max relative difference {relative_difference(ours, theirs):.2e}")
    check = relative_difference(ours, theirs)

    # the peer's best setting
    tn = min(args.tune_images, args.images)
    tune = {s: [] for s in settings}
    for _ in range(args.tune_rounds):
        for chunk, lay in settings:
            tune[(chunk, lay)].append(timed(lambda c=chunk, lo=lay: peer_project(
                peers[lo], layer, images[:tn], channels[:tn], positions[:tn], c, layouts[lo])))
    print(f"peer settings on {tn} images (best of {args.tune_rounds}): "
          + ", ".join(f"chunk {c} {lay} {min(ts):.2f} s" for (c, lay), ts in tune.items()))
    chunk, lay = min(tune, key=lambda s: min(tune[s]))

    ways = {
        "zfnet": lambda: deconv.project(images, layer, channels, positions=positions),
        "peer": lambda: peer_project(peers[lay], layer, images, channels, positions, chunk, layouts[lay]),
    }
    if args.zfnet_extra:  # a diagnostic: the same call on a channels-last copy with a larger working memory
        extra = Deconvnet(peers["cl"], chunk_bytes=args.zfnet_extra * 2**20)
        images_cl = images.contiguous(memory_format=torch.channels_last)
        got = extra.project(images_cl[:k], layer, channels[:k], positions=positions[:k])
        print(f"zfnet-extra (channels-last copy, chunk_bytes {args.zfnet_extra} MiB) vs zfnet: max relative difference "
              f"{relative_difference(got, ours):.2e}")
        ways["zfnet-extra"] = lambda: extra.project(images_cl, layer, channels, positions=positions)
    times = {w: [] for w in ways}
    loads = {w: [] for w in ways}
    for r in range(args.repeats):
        order = list(ways) if r % 2 == 0 else list(ways)[::-1]
        for w in order:
            times[w].append(timed(ways[w], loads[w]))
        print(f"round {r + 1}: " + ", ".join(f"{w} {times[w][-1]:.2f} s (other load {loads[w][-1]:.2f} cores)"
                                             for w in ways), flush=True)
    best = {w: min(ts) for w, ts in times.items()}
    med = {w: statistics.median(ts) for w, ts in times.items()}
    load = {w: loads[w][times[w].index(best[w])] for w in ways}
    print(f"{'way':<40}{'best s':>9}{'median s':>10}{'ms/image':>10}{'other load':>12}")
    labels = {"zfnet": "zfnet Deconvnet.project", "peer": f"peer (chunk {chunk}, {lay})",
              "zfnet-extra": f"zfnet, channels-last, {args.zfnet_extra} MiB chunks"}
    for w in ways:
        label = labels[w]
        print(f"{label:<40}{best[w]:9.2f}{med[w]:10.2f}{1000 * best[w] / args.images:10.1f}{load[w]:12.2f}")
    for w in ways:
        if w != "peer":
            print(f"ratio peer / {w}: {best['peer'] / best[w]:.2f}x best, {med['peer'] / med[w]:.2f}x median")
    return {"model": name, "layer": layer, "best": best, "median": med, "peer": (chunk, lay), "check": check,
            "load": load}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--models", default="zfnet,resnet50", help="comma-separated: zfnet, resnet50, vgg16")
    p.add_argument("--layer", default=None, help="layer to project (default: conv5 / layer4 / features.29)")
    p.add_argument("--images", type=int, default=288, help="distinct images, one projection each")
    p.add_argument("--repeats", type=int, default=3, help="alternating rounds; the fastest of each counts")
    p.add_argument("--chunks", default="16,32,64", help="the peer's chunk sizes to try")
    p.add_argument("--layouts", default="nchw,cl", help="the peer's layouts to try: nchw, cl (channels-last)")
    p.add_argument("--tune-images", type=int, default=64, help="images for choosing the peer's setting")
    p.add_argument("--tune-rounds", type=int, default=2, help="rounds of the peer's tuning")
    p.add_argument("--check-images", type=int, default=16, help="images whose projections are compared")
    p.add_argument("--retain-memory", action="store_true",
                   help="call zfnet.models.retain_freed_host_memory() first (process-wide: both ways)")
    p.add_argument("--zfnet-extra", type=int, default=0, metavar="MIB",
                   help="also time zfnet on a channels-last copy of the model with chunk_bytes MIB MiB (diagnostic)")
    p.add_argument("--quiet-below", type=float, default=0.0, metavar="CORES",
                   help="before each timed call wait until other processes use fewer cores than this (0: never)")
    p.add_argument("--quiet-wait", type=float, default=300.0, help="longest such wait, seconds")
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    args = p.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    QUIET.update(limit=args.quiet_below, timeout=args.quiet_wait)
    if args.retain_memory:
        from zfnet.models.speed import retain_freed_host_memory

        print(f"retain_freed_host_memory: {retain_freed_host_memory()}")
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, {os.cpu_count()} CPUs, "
          f"{platform.processor() or platform.machine()}, load average {os.getloadavg()[0]:.2f} at the start")
    print(source_fingerprint())
    results = [bench(m, args) for m in args.models.split(",")]
    print(f"\nload average {os.getloadavg()[0]:.2f} at the end")
    print(f"{'model, layer':<22}{'zfnet s':>9}{'peer s':>9}{'peer setting':>16}{'ratio best':>12}{'median':>8}"
          f"{'max rel diff':>14}{'other load':>12}")
    for r in results:
        b, m = r["best"], r["median"]
        setting = f"chunk {r['peer'][0]} {r['peer'][1]}"
        print(f"{r['model'] + ', ' + r['layer']:<22}{b['zfnet']:9.2f}{b['peer']:9.2f}{setting:>16}"
              f"{b['peer'] / b['zfnet']:11.2f}x{m['peer'] / m['zfnet']:7.2f}x{r['check']:14.2e}"
              f"{max(r['load'].values()):12.2f}")


if __name__ == "__main__":
    main()
