"""Speed of the top-k pass and of deconvnet projections on full-size ZFNet (224 px), in one run.

    python benchmarks/deconvnet_speed.py                      # 256 images, both measurements
    python benchmarks/deconvnet_speed.py --images 64 --baseline-images 32

1. ``top_activations`` over every layer (conv1 ... fc8) against a plain ``torch.no_grad`` inference
   pass of the same model over the same batches; the passes alternate, ``--repeats`` times, and the
   ratio of the medians is reported (target: at most 1.15).
2. conv5 projections of ``--images`` distinct images (one map each, the image's strongest, at its
   maximum) by ``Deconvnet.project`` against a loop of per-neuron gradient deconvolutions:
   Captum's ``NeuronDeconvolution`` if it is installed (``pip install --no-deps captum``),
   otherwise the same autograd loop written here (ReLU backward replaced by a ReLU of the
   gradient). The baseline is timed on the first ``--baseline-images`` of them; per-projection
   times are compared (target: at least 3x). Both run the model's own forward pass per image.
   The three ways alternate over ``--repeats`` blocks of images.

Random images (seeded): the cost of these passes does not depend on the pixel values.
"""

from __future__ import annotations

import argparse
import platform
import statistics
import time
import warnings
from collections.abc import Callable
from importlib.metadata import version

import torch
from torch import nn

from zfnet import Deconvnet, top_activations
from zfnet.models import build

LAYERS = ["conv1", "conv2", "conv3", "conv4", "conv5", "fc6", "fc7", "fc8"]


def plain_pass(model: nn.Module, batches: list[torch.Tensor]) -> None:
    with torch.no_grad():
        for batch in batches:
            model(batch)


def topk_ratio(model: nn.Module, batches: list[torch.Tensor], repeats: int) -> tuple[list[float], list[float]]:
    plain_pass(model, batches[:1])  # warm-up: one-off kernel and memory set-up
    top_activations(model, batches[:1], LAYERS)
    plain, topk = [], []
    for _ in range(repeats):
        t = time.perf_counter()
        plain_pass(model, batches)
        plain.append(time.perf_counter() - t)
        t = time.perf_counter()
        top_activations(model, batches, LAYERS, k=9)
        topk.append(time.perf_counter() - t)
    return plain, topk


class _RuleReLU(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x):
        return x.clamp(min=0)

    @staticmethod
    def backward(ctx, grad):
        return grad.clamp(min=0)


def per_neuron_baseline(model: nn.Module) -> tuple[str, Callable[[torch.Tensor, torch.Tensor, torch.Tensor], None]]:
    """A loop of one gradient deconvolution per neuron: ``run(images, channels, positions)``."""
    try:
        from captum.attr import NeuronDeconvolution
    except ImportError:
        NeuronDeconvolution = None
    if NeuronDeconvolution is not None:
        method = NeuronDeconvolution(model, model.conv5)

        def one(x: torch.Tensor, c: int, r: int, col: int) -> torch.Tensor:
            return method.attribute(x, neuron_selector=(c, r, col))

        name = f"Captum {version('captum')} NeuronDeconvolution"
    else:
        def one(x: torch.Tensor, c: int, r: int, col: int) -> torch.Tensor:
            seen = {}
            hooks = [m.register_forward_hook(lambda mod, inp, out: _RuleReLU.apply(inp[0]))
                     for m in model.modules() if isinstance(m, nn.ReLU)]
            hooks.append(model.conv5.register_forward_hook(lambda mod, inp, out: seen.__setitem__("a", out)))
            try:
                x = x.clone().requires_grad_()
                model(x)
                return torch.autograd.grad(seen["a"][0, c, r, col], x)[0]
            finally:
                for h in hooks:
                    h.remove()

        name = "per-neuron autograd loop (deconvnet ReLU rule)"

    def run(images: torch.Tensor, channels: torch.Tensor, positions: torch.Tensor) -> None:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # Captum warns on every call that it sets requires_grad and hooks
            for i in range(len(images)):
                one(images[i:i + 1], int(channels[i]), int(positions[i, 0]), int(positions[i, 1]))

    return name, run


def projection_times(model: nn.Module, images: torch.Tensor, baseline_count: int, blocks: int
                     ) -> tuple[str, float, float, float]:
    """Seconds per conv5 projection: Deconvnet with positions, Deconvnet finding the maximum, baseline.

    The images are cut into ``blocks`` blocks and the three methods alternate block by block, so a
    change in the machine's load during the run affects them alike.
    """
    with torch.no_grad():  # each image's strongest conv5 map and the position of its maximum
        act = nn.Sequential(*list(model.children())[: list(model._modules).index("conv5") + 1])(images)
    channels = act.amax(dim=(2, 3)).argmax(1)
    arg = act[torch.arange(len(act)), channels].flatten(1).argmax(1)
    positions = torch.stack((arg // act.shape[3], arg % act.shape[3]), 1)
    deconv = Deconvnet(model)
    name, baseline = per_neuron_baseline(model)
    deconv.project(images[:2], "conv5", channels[:2], positions=positions[:2])  # warm-up and chain check
    deconv.project(images[:2], "conv5", channels[:2])
    baseline(images[:1], channels[:1], positions[:1])
    totals = [0.0, 0.0, 0.0]
    for block in torch.arange(len(images)).tensor_split(blocks):
        x, c, p = images[block], channels[block], positions[block]
        t = time.perf_counter()
        deconv.project(x, "conv5", c, positions=p)
        totals[0] += time.perf_counter() - t
        t = time.perf_counter()
        deconv.project(x, "conv5", c)
        totals[1] += time.perf_counter() - t
        sub = block[block < baseline_count]
        t = time.perf_counter()
        baseline(images[sub], channels[sub], positions[sub])
        totals[2] += time.perf_counter() - t
    return name, totals[0] / len(images), totals[1] / len(images), totals[2] / min(baseline_count, len(images))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--images", type=int, default=256, help="images per pass and projections (default 256)")
    p.add_argument("--baseline-images", type=int, default=None,
                   help="projections timed for the per-neuron baseline (default: all of --images)")
    p.add_argument("--batch-size", type=int, default=32, help="images per batch of the passes (default 32)")
    p.add_argument("--repeats", type=int, default=3, help="alternating repeats of the two passes (default 3)")
    p.add_argument("--skip-topk", action="store_true", help="only measure the projections")
    args = p.parse_args()

    torch.manual_seed(0)
    model = build("zfnet").eval()
    images = torch.randn(args.images, 3, 224, 224)
    print(f"ZFNet 224 px, {args.images} images, torch {torch.__version__}, {torch.get_num_threads()} threads, "
          f"{platform.processor() or platform.machine()}")

    if not args.skip_topk:
        batches = list(images.split(args.batch_size))
        plain, topk = topk_ratio(model, batches, args.repeats)
        ratio = statistics.median(topk) / statistics.median(plain)
        print(f"top-k pass ({len(LAYERS)} layers, k=9) vs plain inference, batch {args.batch_size}: "
              f"plain {statistics.median(plain):.2f} s, top-k {statistics.median(topk):.2f} s "
              f"(medians of {args.repeats}); ratio {ratio:.3f}  (per repeat: "
              + ", ".join(f"{t / q:.3f}" for t, q in zip(topk, plain)) + ")")

    count = args.baseline_images or args.images
    name, ours, ours_max, base = projection_times(model, images, count, args.repeats)
    print(f"conv5 projections of {args.images} distinct images: Deconvnet.project {ours * 1e3:.1f} ms each "
          f"with the positions given (top-k use), {ours_max * 1e3:.1f} ms each finding the maximum; "
          f"{name} {base * 1e3:.1f} ms each (over {min(count, args.images)}); speed-up {base / ours:.1f}x "
          f"(finding the maximum: {base / ours_max:.1f}x)")


if __name__ == "__main__":
    main()
