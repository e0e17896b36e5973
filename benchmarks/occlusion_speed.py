"""Speed of occlusion sensitivity on full-size ZFNet, ResNet-50 or VGG-16 (224 px), in one run.

    python benchmarks/occlusion_speed.py                         # ZFNet, window 32, stride 8: 625 positions
    python benchmarks/occlusion_speed.py --ppe 16,32,64 --repeats 3
    python benchmarks/occlusion_speed.py --run RUN --data DIR    # also: approximate-mode SSIM on a trained run
    python benchmarks/occlusion_speed.py --model resnet50 --ppe 16,32,64   # window 32, stride 16: 169 positions
    python benchmarks/occlusion_speed.py --model vgg16 --ppe 16,32,64 --stages

``--model resnet50`` and ``--model vgg16`` are the torchvision re-implementations of ``tests/helpers/zoo.py``,
re-initialised by its ``randomize_`` (He weights, random BatchNorm statistics, logits spread 2 across classes:
with torchvision's initialisation ResNet-50's softmax saturates and every probability is ~1e-39, which
would make the exactness check empty), in eval mode; their default stride is 16 and their panel-(b)/(c)
layer ``layer4`` and ``features.29`` (conv5_3's ReLU). ``--stages`` times, after the rounds, two exact
runs stage by stage from outside (``zfnet.analysis.occlusion``'s engine methods wrapped with timers; the
fastest time of each stage is printed).
Every timed call is printed with the cores other processes kept busy meanwhile; ``--quiet-below CORES`` waits
before each one until they use fewer (the machine is shared).

Ways compared, alternating over ``--repeats`` rounds (the fastest round of each counts, so a busy
machine hurts every way alike):

- ``zfnet exact``: :func:`zfnet.analysis.occlusion.occlusion` (incremental, all four panels: target
  probability, top class, the layer's activity and its deconvnet projection, which is part of the time);
- ``zfnet approximate``: the same with projective fields capped at ``--cap`` of each map;
- ``zfnet coarse``: every other position exact, the rest interpolated or drilled down (on random weights the
  map is flat and nothing is drilled down: this is the mode's best case; ``--run`` measures it on real maps);
- ``zfnet brute``: one full forward pass per position, batched (the reference the exact mode equals);
- Captum's ``Occlusion`` (if installed: ``pip install --no-deps captum``) on the softmax of the same
  model, at each ``perturbations_per_eval`` of ``--ppe``: the probability map only.

The exact map is checked against brute force (max difference of probabilities, top classes). Random
weights (the paper's initialisation) and a random image: the cost of the exact, approximate and brute
ways does not depend on the values. With ``--run`` both approximate modes are measured on real images of
a trained run, where the maps have structure (on random weights they are flat): their speed-up over the
exact mode on the same images and the SSIM of their maps against the exact ones.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import time
from collections import defaultdict
from importlib.metadata import version
from pathlib import Path

import torch
from throughput import source_fingerprint, wait_for_quiet  # benchmarks/throughput.py
from torch import nn

from zfnet.analysis.occlusion import occlusion
from zfnet.models import build

LAYERS = {"zfnet": "conv5", "resnet50": "layer4", "vgg16": "features.29"}
WAYS = ("exact", "approximate", "coarse", "brute")


def make_model(name: str, size: int) -> nn.Module:
    """Full-size ``name`` with seeded random weights, in eval mode (see the module docstring)."""
    torch.manual_seed(0)
    if name == "zfnet":
        return build("zfnet", num_classes=1000).eval()
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
    from helpers.zoo import randomize_, resnet50, vgg16

    model = {"resnet50": resnet50, "vgg16": vgg16}[name](num_classes=1000)
    return randomize_(model, torch.Generator().manual_seed(0), input_size=size).eval()


def stages(model: nn.Module, image: torch.Tensor, target: int, window: int, stride: int, layer: str,
           batch_size: int, runs: int = 2, quiet: tuple[float, float] = (0.0, 0.0)) -> None:
    """Exact runs with the engine's stages timed from outside (set-up, every op's step, the projection);
    the fastest run's total and each stage's fastest time are printed."""
    from zfnet.analysis import occlusion as occ
    from zfnet.visualize.deconvnet import Deconvnet

    originals = {"init": occ._Engine.__init__, "run": occ._Engine.run, "step": occ._Engine._step,
                 "project": Deconvnet.project}
    clocks: list[dict[str, float]] = []
    nodes: list[dict[str, list]] = []

    def init(self, *a, **k):
        t = time.perf_counter()
        originals["init"](self, *a, **k)
        clocks[-1]["set-up: clean forward pass, padded inputs"] += time.perf_counter() - t

    def run(self, *a, **k):
        t = time.perf_counter()
        out = originals["run"](self, *a, **k)
        clocks[-1]["run, all batches"] += time.perf_counter() - t
        return out

    def step(self, i, states):
        t = time.perf_counter()
        value, reason = originals["step"](self, i, states)
        dt = time.perf_counter() - t
        entry = nodes[-1].setdefault(self.graph.name_of(i), [0.0, "incremental" if reason is None else reason])
        entry[0] += dt
        clocks[-1]["  op steps on changed rectangles" if reason is None else "  op steps on full maps"] += dt
        return value, reason

    def project(self, *a, **k):
        t = time.perf_counter()
        out = originals["project"](self, *a, **k)
        clocks[-1]["deconvnet projection (panel c)"] += time.perf_counter() - t
        return out

    occ._Engine.__init__, occ._Engine.run, occ._Engine._step, Deconvnet.project = init, run, step, project
    totals, stats = [], None
    try:
        for _ in range(runs):
            wait_for_quiet(*quiet)
            clocks.append(defaultdict(float))
            nodes.append({})
            t = time.perf_counter()
            stats = occlusion(model, image, target, window, stride, layer=layer, batch_size=batch_size).stats
            totals.append(time.perf_counter() - t)
    finally:
        occ._Engine.__init__, occ._Engine.run = originals["init"], originals["run"]
        occ._Engine._step, Deconvnet.project = originals["step"], originals["project"]
    for c in clocks:
        c["  the rest of run (outputs, activity)"] = (c["run, all batches"] - c["  op steps on changed rectangles"]
                                                     - c["  op steps on full maps"])
    total = min(totals)
    print(f"\nstages of an exact run, fastest of {runs} (totals {', '.join(f'{t:.2f}' for t in totals)} s; "
          f"stats {stats}):")
    order = ["set-up: clean forward pass, padded inputs", "run, all batches", "  op steps on changed rectangles",
             "  op steps on full maps", "  the rest of run (outputs, activity)", "deconvnet projection (panel c)"]
    for name in order:
        sec = min(c.get(name, 0.0) for c in clocks)
        print(f"  {name:<44}{sec:8.2f} s {100 * sec / total:5.1f}%")
    best = {n: [min(run[n][0] for run in nodes if n in run), v[1]] for n, v in nodes[0].items()}
    top = sorted(best.items(), key=lambda kv: -kv[1][0])[:12]
    print("  slowest op steps: " + "; ".join(f"{n} {v[0]:.2f} s ({v[1]})" for n, v in top))


def captum_occlusion(model: torch.nn.Module, image: torch.Tensor, target: int, window: int, stride: int,
                     ppe: int) -> torch.Tensor:
    from captum.attr import Occlusion

    def probabilities(x: torch.Tensor) -> torch.Tensor:
        return torch.softmax(model(x), dim=1)

    with torch.no_grad():
        return Occlusion(probabilities).attribute(image[None], sliding_window_shapes=(image.shape[0], window, window),
                                                  strides=(image.shape[0], stride, stride), baselines=0.0,
                                                  target=target, perturbations_per_eval=ppe)


def modes_on_run(run: str, data: str, images: int, window: int, stride: int, cap: float, tol: float,
                 batch_size: int) -> dict[str, dict[str, list[float]]]:
    """Per approximate mode, on real validation images of a trained run: seconds of the exact mode and of
    the approximate one (alternating, image by image), and the approximate map's SSIM against the exact."""
    from zfnet import Deconvnet
    from zfnet.analysis.occlusion import ssim
    from zfnet.data import open_dataset
    from zfnet.data.transforms import center_crop
    from zfnet.train import load_run

    loaded = load_run(run)
    deconv = Deconvnet(loaded.model)
    dataset = open_dataset(data, "val", loaded.base_size)
    modes = {"approximate": {"cap": cap}, "coarse": {"tol": tol}}
    out = {m: {"exact_s": [], "mode_s": [], "ssim": []} for m in modes}
    step = max(1, len(dataset) // images)
    for index in range(0, len(dataset), step)[:images]:
        img, label = dataset[index][:2]
        x = center_crop(img[None].float() - loaded.mean, loaded.input_size)[0]
        for mode, kw in modes.items():
            t = time.perf_counter()
            exact = occlusion(deconv, x, label, window, stride, batch_size=batch_size)
            out[mode]["exact_s"].append(time.perf_counter() - t)
            t = time.perf_counter()
            approx = occlusion(deconv, x, label, window, stride, batch_size=batch_size, mode=mode, check=False, **kw)
            out[mode]["mode_s"].append(time.perf_counter() - t)
            out[mode]["ssim"].append(ssim(approx.prob_true, exact.prob_true))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", choices=sorted(LAYERS), default="zfnet", help="the network (default zfnet)")
    parser.add_argument("--layer", default=None,
                        help="layer of panels (b), (c) (default: conv5 / layer4 / features.29)")
    parser.add_argument("--ways", default=None,
                        help=f"zfnet's ways to time, of {','.join(WAYS)} (default: all for zfnet, else exact,brute)")
    parser.add_argument("--stages", action="store_true", help="also time one exact run stage by stage")
    parser.add_argument("--size", type=int, default=224, help="image side")
    parser.add_argument("--window", type=int, default=32, help="occluder side")
    parser.add_argument("--stride", type=int, default=None, help="occluder step (default: 8 for zfnet, else 16)")
    parser.add_argument("--batch-size", type=int, default=64, help="positions per batch for zfnet's ways")
    parser.add_argument("--cap", type=float, default=0.5, help="approximate mode's projective-field cap")
    parser.add_argument("--ppe", default="16,32,64,128", help="Captum perturbations_per_eval values to try")
    parser.add_argument("--repeats", type=int, default=2, help="rounds; the fastest of each way counts")
    parser.add_argument("--quiet-below", type=float, default=0.0, metavar="CORES",
                        help="before each timed call wait until other processes use fewer cores than this (0: never)")
    parser.add_argument("--quiet-wait", type=float, default=300.0, help="longest such wait, seconds")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    parser.add_argument("--run", default=None,
                        help="a trained run: measure the approximate modes' speed-up and SSIM on it")
    parser.add_argument("--data", default=None, help="the run's data folder (with --run)")
    parser.add_argument("--tol", type=float, default=0.05, help="coarse mode's drill-down tolerance")
    parser.add_argument("--ssim-images", type=int, default=20, help="validation images for the SSIM")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.stride is None:
        args.stride = 8 if args.model == "zfnet" else 16
    layer = args.layer or LAYERS[args.model]
    selected = (args.ways or (",".join(WAYS) if args.model == "zfnet" else "exact,brute")).split(",")
    if not {"exact", "brute"} <= set(selected) or not set(selected) <= set(WAYS):
        parser.error(f"--ways must include exact and brute, from {','.join(WAYS)}")
    model = make_model(args.model, args.size)
    torch.manual_seed(0)
    image = torch.randn(3, args.size, args.size)
    target = 0
    print(f"full-size {args.model}, {args.size} px, window {args.window}, stride {args.stride}, layer {layer}; "
          f"torch {torch.__version__}, {torch.get_num_threads()} threads, {os.cpu_count()} CPUs, "
          f"{platform.processor() or platform.machine()}, load average {os.getloadavg()[0]:.2f} at the start")
    print(source_fingerprint())

    try:
        captum_version = version("captum")
    except Exception:  # noqa: BLE001 - any failure means: not installed
        captum_version = None
    common = dict(layer=layer, batch_size=args.batch_size)
    ways = {
        "zfnet exact": lambda: occlusion(model, image, target, args.window, args.stride, **common),
        "zfnet approximate": lambda: occlusion(model, image, target, args.window, args.stride, **common,
                                               mode="approximate", cap=args.cap, check=False),
        "zfnet coarse": lambda: occlusion(model, image, target, args.window, args.stride, **common,
                                          mode="coarse", tol=args.tol, check=False),
        "zfnet brute": lambda: occlusion(model, image, target, args.window, args.stride, **common, mode="brute"),
    }
    ways = {name: way for name, way in ways.items() if name.split()[1] in selected}
    if captum_version and args.ppe:
        for ppe in (int(v) for v in args.ppe.split(",")):
            ways[f"captum Occlusion ppe={ppe}"] = (
                lambda ppe=ppe: captum_occlusion(model, image, target, args.window, args.stride, ppe))
    else:
        print("captum is not installed: comparing with zfnet's brute force only")

    exact = ways["zfnet exact"]()  # warm-up, and the correctness check
    brute = ways["zfnet brute"]()
    diff = float((exact.prob_true - brute.prob_true).abs().max())
    same = bool((exact.top_class == brute.top_class).all())
    act = float((exact.activity - brute.activity).abs().max() / brute.activity.abs().max())
    print(f"exact vs brute force: max |prob difference| {diff:.2e} (target probabilities "
          f"{float(brute.prob_true.min()):.2e} to {float(brute.prob_true.max()):.2e}), same top class everywhere: "
          f"{same}, activity max relative difference {act:.2e}; engine stats {exact.stats}")

    from throughput import OtherLoad  # benchmarks/throughput.py: the CPU load of other processes

    times: dict[str, list[float]] = {name: [] for name in ways}
    loads: dict[str, list[float]] = {name: [] for name in ways}
    for r in range(args.repeats):
        for name, way in ways.items() if r % 2 == 0 else reversed(ways.items()):  # order swapped every round
            wait_for_quiet(args.quiet_below, args.quiet_wait)
            with OtherLoad() as other:
                t = time.perf_counter()
                way()
                times[name].append(time.perf_counter() - t)
            loads[name].append(other.cores)
        print(f"round {r + 1}: " + ", ".join(f"{name} {ts[-1]:.2f} s ({loads[name][-1]:.2f})"
                                             for name, ts in times.items()) + "  (other processes' load, cores)",
              flush=True)
    best = {name: min(ts) for name, ts in times.items()}
    captum_best = min((t for n, t in best.items() if n.startswith("captum")), default=None)
    reference = captum_best if captum_best is not None else best["zfnet brute"]
    ref_name = "Captum at its best ppe" if captum_best is not None else "zfnet brute"
    print(f"\n{'way':<28}{'best s':>9}{'median s':>10}{'vs ' + ref_name:>28}{'other load':>12}")
    for name, ts in times.items():
        load = loads[name][ts.index(best[name])]
        print(f"{name:<28}{best[name]:9.2f}{statistics.median(ts):10.2f}{reference / best[name]:27.2f}x{load:12.2f}")
    print(f"load average {os.getloadavg()[0]:.2f} at the end")
    if args.stages:
        stages(model, image, target, args.window, args.stride, layer, args.batch_size,
               quiet=(args.quiet_below, args.quiet_wait))

    if args.run:
        if args.model != "zfnet":
            parser.error("--run measures zfnet-family runs only")
        if not args.data:
            parser.error("--run needs --data")
        from zfnet.train import load_run

        size = load_run(args.run).input_size
        scale = size / args.size
        window, stride = max(1, round(args.window * scale)), max(1, round(args.stride * scale))
        measured = modes_on_run(args.run, args.data, args.ssim_images, window, stride, args.cap, args.tol,
                                args.batch_size)
        print(f"\non {args.run}, {args.ssim_images} val images at {size} px, window {window}, stride {stride} "
              f"(exact and each mode alternating, image by image):")
        print(f"{'mode':<28}{'exact s':>9}{'mode s':>9}{'speed-up':>10}{'SSIM mean':>11}{'SSIM min':>10}")
        for mode, m in measured.items():
            setting = f"cap {args.cap}" if mode == "approximate" else f"tol {args.tol}"
            total_exact, total_mode = sum(m["exact_s"]), sum(m["mode_s"])
            print(f"{mode + ' (' + setting + ')':<28}{total_exact:9.2f}{total_mode:9.2f}"
                  f"{total_exact / total_mode:9.2f}x{statistics.mean(m['ssim']):11.3f}{min(m['ssim']):10.3f}")


if __name__ == "__main__":
    main()
