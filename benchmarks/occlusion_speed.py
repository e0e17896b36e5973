"""Speed of occlusion sensitivity on full-size ZFNet (224 px, window 32, stride 8: 625 positions), in one run.

    python benchmarks/occlusion_speed.py                         # the issue's setting
    python benchmarks/occlusion_speed.py --ppe 16,32,64 --repeats 3
    python benchmarks/occlusion_speed.py --run RUN --data DIR    # also: approximate-mode SSIM on a trained run

Ways compared, alternating over ``--repeats`` rounds (the fastest round of each counts, so a busy
machine hurts every way alike):

- ``zfnet exact``: :func:`zfnet.analysis.occlusion.occlusion` (incremental, all four panels: target
  probability, top class, conv5 activity and the conv5 projection);
- ``zfnet approximate``: the same with projective fields capped at ``--cap`` of each map;
- ``zfnet brute``: one full forward pass per position, batched (the reference the exact mode equals);
- Captum's ``Occlusion`` (if installed: ``pip install --no-deps captum``) on the softmax of the same
  model, at each ``perturbations_per_eval`` of ``--ppe``: the probability map only.

The exact map is checked against brute force (max difference of probabilities, top classes). Random
weights (the paper's initialisation) and a random image: the cost does not depend on the values. With
``--run`` the approximate mode's SSIM against the exact map is measured on real images of a trained
run, where the maps have structure (on random weights they are flat).
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


def ssim_on_run(run: str, data: str, images: int, window: int, stride: int, cap: float) -> list[float]:
    from zfnet.data import open_dataset
    from zfnet.data.transforms import center_crop
    from zfnet.train import load_run

    loaded = load_run(run)
    dataset = open_dataset(data, "val", loaded.base_size)
    scores = []
    step = max(1, len(dataset) // images)
    for index in range(0, len(dataset), step)[:images]:
        img, label = dataset[index][:2]
        x = center_crop(img[None].float() - loaded.mean, loaded.input_size)[0]
        approx = occlusion(loaded.model, x, label, window, stride, mode="approximate", cap=cap)
        scores.append(approx.ssim)
    return scores


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
    parser.add_argument("--run", default=None, help="a trained run: measure the approximate mode's SSIM on it")
    parser.add_argument("--data", default=None, help="the run's data folder (with --run)")
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
        scores = ssim_on_run(args.run, args.data, args.ssim_images, window, stride, args.cap)
        print(f"\napproximate mode (cap {args.cap}) on {args.run}, {len(scores)} val images at {size} px, window "
              f"{window}, stride {stride}: SSIM vs exact mean {statistics.mean(scores):.3f}, min {min(scores):.3f}")


if __name__ == "__main__":
    main()
