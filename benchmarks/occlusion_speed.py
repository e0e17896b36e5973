"""Speed of occlusion sensitivity on full-size ZFNet (224 px, window 32, stride 8: 625 positions), in one run.

    python benchmarks/occlusion_speed.py                         # the issue's setting
    python benchmarks/occlusion_speed.py --ppe 16,32,64 --repeats 3
    python benchmarks/occlusion_speed.py --run RUN --data DIR    # also: approximate-mode SSIM on a trained run

Ways compared, alternating over ``--repeats`` rounds (the fastest round of each counts, so a busy
machine hurts every way alike):

- ``zfnet exact``: :func:`zfnet.analysis.occlusion.occlusion` (incremental, all four panels: target
  probability, top class, conv5 activity and the conv5 projection);
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
import platform
import statistics
import time
from importlib.metadata import version

import torch

from zfnet.analysis.occlusion import occlusion
from zfnet.models import build


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
    from zfnet.analysis.occlusion import ssim
    from zfnet.data import open_dataset
    from zfnet.data.transforms import center_crop
    from zfnet.deconvnet import Deconvnet
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
    parser.add_argument("--size", type=int, default=224, help="image side")
    parser.add_argument("--window", type=int, default=32, help="occluder side")
    parser.add_argument("--stride", type=int, default=8, help="occluder step")
    parser.add_argument("--batch-size", type=int, default=64, help="positions per batch for zfnet's ways")
    parser.add_argument("--cap", type=float, default=0.5, help="approximate mode's projective-field cap")
    parser.add_argument("--ppe", default="16,32,64,128", help="Captum perturbations_per_eval values to try")
    parser.add_argument("--repeats", type=int, default=2, help="rounds; the fastest of each way counts")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    parser.add_argument("--run", default=None,
                        help="a trained run: measure the approximate modes' speed-up and SSIM on it")
    parser.add_argument("--data", default=None, help="the run's data folder (with --run)")
    parser.add_argument("--tol", type=float, default=0.05, help="coarse mode's drill-down tolerance")
    parser.add_argument("--ssim-images", type=int, default=20, help="validation images for the SSIM")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    model = build("zfnet", num_classes=1000).eval()
    image = torch.randn(3, args.size, args.size)
    target = 0
    print(f"full-size ZFNet, {args.size} px, window {args.window}, stride {args.stride}; torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads, {platform.processor() or platform.machine()}")

    try:
        captum_version = version("captum")
    except Exception:  # noqa: BLE001 - any failure means: not installed
        captum_version = None
    ways = {
        "zfnet exact": lambda: occlusion(model, image, target, args.window, args.stride, batch_size=args.batch_size),
        "zfnet approximate": lambda: occlusion(model, image, target, args.window, args.stride,
                                               batch_size=args.batch_size, mode="approximate", cap=args.cap,
                                               check=False),
        "zfnet coarse": lambda: occlusion(model, image, target, args.window, args.stride, batch_size=args.batch_size,
                                          mode="coarse", tol=args.tol, check=False),
        "zfnet brute": lambda: occlusion(model, image, target, args.window, args.stride, batch_size=args.batch_size,
                                         mode="brute"),
    }
    if captum_version:
        for ppe in (int(v) for v in args.ppe.split(",")):
            ways[f"captum Occlusion ppe={ppe}"] = (
                lambda ppe=ppe: captum_occlusion(model, image, target, args.window, args.stride, ppe))
    else:
        print("captum is not installed: comparing with zfnet's brute force only")

    exact = ways["zfnet exact"]()  # warm-up, and the correctness check
    brute = ways["zfnet brute"]()
    diff = float((exact.prob_true - brute.prob_true).abs().max())
    same = bool((exact.top_class == brute.top_class).all())
    print(f"exact vs brute force: max |prob difference| {diff:.2e}, same top class everywhere: {same}")

    times: dict[str, list[float]] = {name: [] for name in ways}
    for _ in range(args.repeats):
        for name, way in ways.items():
            t = time.perf_counter()
            way()
            times[name].append(time.perf_counter() - t)
    best = {name: min(ts) for name, ts in times.items()}
    captum_best = min((t for n, t in best.items() if n.startswith("captum")), default=None)
    reference = captum_best if captum_best is not None else best["zfnet brute"]
    ref_name = "Captum at its best ppe" if captum_best is not None else "zfnet brute"
    print(f"\n{'way':<28}{'best s':>9}{'median s':>10}{'vs ' + ref_name:>28}")
    for name, ts in times.items():
        print(f"{name:<28}{best[name]:9.2f}{statistics.median(ts):10.2f}{reference / best[name]:27.2f}x")

    if args.run:
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
