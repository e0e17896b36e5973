"""Full-size ZFNet on one GPU: training, inference, top-k scan, occlusion and projection speed.

    python benchmarks/gpu.py                         # on a CUDA machine: about 4 minutes
    python benchmarks/gpu.py --compile               # also torch.compile (adds its compile time)
    python benchmarks/gpu.py --device cpu --smoke    # a seconds-long check of the script itself

Every figure is measured on pre-decoded synthetic tensors already on the GPU (uint8 images at 256 px,
cropped to 224 inside the pass as zfnet does), so the model is the only bound; the JPEG pipeline is
measured separately (``--loader-images``: DataLoader workers decoding and resizing JPEG files on the
host's cores) and the two are compared, so that one can say which bounds a real run.

1. training images/s: zfnet's own SGD step (:func:`zfnet.train.step.sgd_step`: forward, cross-entropy,
   finite-loss check, backward, momentum step, filter renormalisation) at batch ``--batch``, fp32 and
   bf16 autocast, channels-last; with ``--compile`` also the compiled model (its first-step time apart).
2. inference images/s (``torch.no_grad``), fp32 and bf16.
3. top-k scan images/s: :func:`zfnet.visualize.topk.search_top_activations` over conv1 ... conv5, k = 9
   (the traced graph, every map's running top-k), fp32, from an in-memory stream.
4. occlusion: seconds per image of :func:`zfnet.analysis.occlusion.occlusion` (32-px occluder, stride 8,
   625 positions, the exact and the approximate incremental modes).
5. projections per second: conv5 deconvnet projections of 256 images at given positions (the top-k case).

Then the model of zfnet's targets: an ImageNet epoch (1.28 M images) from (1), a 50 k-image top-9
scan of conv1 ... conv5 from (3), and a 1.28 M-image scan on 8 GPUs from (3) (data-parallel shards, no
communication until the end: linear, unless the loader bounds it).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time
from contextlib import nullcontext
from pathlib import Path

import torch

from zfnet.analysis.occlusion import occlusion
from zfnet.data.folders import Batch
from zfnet.data.transforms import Normalization, center_crop
from zfnet.models import build
from zfnet.models.speed import prepare_for_speed
from zfnet.train.step import sgd, sgd_step
from zfnet.visualize.deconvnet import Deconvnet
from zfnet.visualize.topk import search_top_activations

LAYERS = ["conv1", "conv2", "conv3", "conv4", "conv5"]


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def rate(step, images_per_call: int, device: torch.device, seconds: float, warmup: int = 3) -> float:
    """Images per second of ``step()``, called for about ``seconds`` after ``warmup`` calls."""
    for _ in range(warmup):
        step()
    sync(device)
    calls, start = 0, time.perf_counter()
    while True:
        step()
        calls += 1
        if calls % 5 == 0:
            sync(device)
            if time.perf_counter() - start >= seconds:
                break
    sync(device)
    return calls * images_per_call / (time.perf_counter() - start)


class MemoryStream:
    """An ImageStream over uint8 images already in (GPU) memory: only the model bounds a scan from it."""

    def __init__(self, images: torch.Tensor) -> None:
        self.images = images
        self.labels = torch.zeros(len(images), dtype=torch.long)

    def __len__(self) -> int:
        return len(self.images)

    def chunks(self, chunks):
        for chunk in chunks:
            idx = torch.as_tensor(chunk, dtype=torch.long)
            yield Batch(self.images[idx.to(self.images.device)], self.labels[idx], idx, [])


def loader_rate(n: int, workers: int) -> float:
    """JPEG decode + resize to 256 px through DataLoader workers, images/s (400 x 300 JPEG files)."""
    import numpy as np
    from PIL import Image

    from zfnet.data import ImageStream, open_dataset

    with tempfile.TemporaryDirectory() as tmp:
        rng = np.random.default_rng(0)
        for i in range(n):
            folder = Path(tmp) / "val" / f"c{i % 10}"
            folder.mkdir(parents=True, exist_ok=True)
            small = rng.integers(0, 256, (24, 32, 3), dtype=np.uint8)
            Image.fromarray(small).resize((500, 375), Image.BILINEAR).save(folder / f"{i:06d}.jpg", quality=90)
        stream = ImageStream(open_dataset(tmp, "val", 256), workers=workers, cache="none", show_progress=False)
        order = list(range(len(stream)))
        for _ in stream.batches(order[:256], 128):  # workers started
            pass
        start = time.perf_counter()
        count = sum(len(b.indices) for b in stream.batches(order, 128))
        return count / (time.perf_counter() - start)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--batch", type=int, default=256)
    ap.add_argument("--seconds", type=float, default=15.0, help="time per measurement")
    ap.add_argument("--compile", action="store_true")
    ap.add_argument("--loader-images", type=int, default=4096)
    ap.add_argument("--workers", type=int, default=max(1, (os.cpu_count() or 2) - 2))
    ap.add_argument("--smoke", action="store_true", help="zfnet-tiny, tiny sizes: check the script runs")
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args()
    device = torch.device(args.device)
    name, size, classes = ("zfnet-tiny", 64, 10) if args.smoke else ("zfnet", 224, 1000)
    if args.smoke:
        args.batch, args.seconds, args.loader_images = 8, 0.5, 64
    base = size * 256 // 224
    torch.manual_seed(0)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
        print(f"{torch.cuda.get_device_name(device)}, torch {torch.__version__}, cuDNN "
              f"{torch.backends.cudnn.version()}")
    results: dict[str, float] = {}
    pixels = torch.randint(0, 256, (args.batch, 3, base, base), dtype=torch.uint8, device=device)
    labels = torch.randint(0, classes, (args.batch,), device=device)
    norm = Normalization(torch.full((3, base, base), 110.0), None).to(device)

    def inputs(p: torch.Tensor) -> torch.Tensor:
        return center_crop(norm(p), size).contiguous(memory_format=torch.channels_last)

    # 1. training
    for precision in ("fp32", "bf16"):
        model = build(name, num_classes=classes).to(device)
        prepare_for_speed(model, train=True, channels_last=True)
        opt = sgd(model, lr=0.01, momentum=0.9, weight_decay=5e-4)
        cast = torch.autocast(device.type, dtype=torch.bfloat16) if precision == "bf16" else nullcontext()

        def train_step(model=model, opt=opt, cast=cast):
            with cast:
                sgd_step(model, opt, inputs(pixels), labels)

        results[f"train_{precision}_img_s"] = rate(train_step, args.batch, device, args.seconds)
        print(f"training {precision}: {results[f'train_{precision}_img_s']:.0f} img/s", flush=True)
    if args.compile:
        model = build(name, num_classes=classes).to(device)
        start = time.perf_counter()
        prepare_for_speed(model, train=True, channels_last=True, compile=True)
        opt = sgd(model, lr=0.01, momentum=0.9, weight_decay=5e-4)

        def compiled_step():
            with torch.autocast(device.type, dtype=torch.bfloat16):
                sgd_step(model, opt, inputs(pixels), labels)

        compiled_step()
        sync(device)
        results["compile_first_step_s"] = time.perf_counter() - start
        results["train_bf16_compiled_img_s"] = rate(compiled_step, args.batch, device, args.seconds)
        print(f"training bf16 compiled: {results['train_bf16_compiled_img_s']:.0f} img/s (first step "
              f"{results['compile_first_step_s']:.0f} s)", flush=True)

    # 2. inference
    model = prepare_for_speed(build(name, num_classes=classes).to(device).eval(), train=False, channels_last=True)
    for precision in ("fp32", "bf16"):
        cast = torch.autocast(device.type, dtype=torch.bfloat16) if precision == "bf16" else nullcontext()

        def infer(cast=cast):
            with torch.no_grad(), cast:
                model(inputs(pixels))

        results[f"inference_{precision}_img_s"] = rate(infer, args.batch, device, args.seconds)
        print(f"inference {precision}: {results[f'inference_{precision}_img_s']:.0f} img/s", flush=True)

    # 3. the top-k scan, from images in GPU memory
    n_scan = args.batch * (4 if args.smoke else 40)
    stream = MemoryStream(torch.randint(0, 256, (n_scan, 3, base, base), dtype=torch.uint8, device=device))
    indices = list(range(n_scan))
    search_top_activations(model, stream, indices[:args.batch], inputs, LAYERS, 9, batch_size=args.batch,
                           show_progress=False)  # warm-up: tracing, kernels
    times = []
    for _ in range(3):
        sync(device)
        start = time.perf_counter()
        search_top_activations(model, stream, indices, inputs, LAYERS, 9, batch_size=args.batch, show_progress=False)
        sync(device)
        times.append(time.perf_counter() - start)
    results["topk_scan_img_s"] = n_scan / statistics.median(times)
    plain = rate(lambda: model(inputs(pixels)), args.batch, device, args.seconds) if not args.smoke else \
        results["inference_fp32_img_s"]
    print(f"top-k scan conv1-conv5: {results['topk_scan_img_s']:.0f} img/s "
          f"({plain / results['topk_scan_img_s']:.2f}x a plain fp32 pass)", flush=True)

    # 4. occlusion, 5. projections
    image = inputs(pixels[:1])[0]
    deconv = Deconvnet(model)
    for mode in ("exact", "approximate"):
        occlusion(deconv, image, 0, 32 if not args.smoke else 8, 8, mode=mode, check=False)  # warm-up
        sync(device)
        start = time.perf_counter()
        reps = 1 if args.smoke else 5
        for _ in range(reps):
            occlusion(deconv, image, 0, 32 if not args.smoke else 8, 8, mode=mode, check=False)
        sync(device)
        results[f"occlusion_{mode}_s_per_image"] = (time.perf_counter() - start) / reps
        print(f"occlusion ({mode}): {results[f'occlusion_{mode}_s_per_image']:.3f} s per image", flush=True)
    x = inputs(pixels)
    channels = torch.arange(len(x)) % 256 if not args.smoke else torch.zeros(len(x), dtype=torch.long)
    positions = torch.full((len(x), 2), 3 if not args.smoke else 1, device=device)

    def project():
        deconv.project(x, "conv5", channels, positions=positions)

    results["projections_per_s"] = rate(project, len(x), device, args.seconds)
    print(f"conv5 projections: {results['projections_per_s']:.0f} per s", flush=True)

    # the pipeline, and the model of the targets
    results["loader_img_s"] = loader_rate(args.loader_images, args.workers)
    print(f"JPEG loader ({args.workers} workers): {results['loader_img_s']:.0f} img/s", flush=True)
    train_best = max(v for k, v in results.items() if k.startswith("train_"))
    scan = results["topk_scan_img_s"]
    results["imagenet_epoch_min"] = 1.28e6 / min(train_best, results["loader_img_s"]) / 60
    results["val_scan_50k_min"] = 50_000 / min(scan, results["loader_img_s"]) / 60
    results["train_scan_8gpu_min"] = 1.28e6 / (8 * min(scan, results["loader_img_s"])) / 60
    print(f"model: ImageNet epoch {results['imagenet_epoch_min']:.1f} min (goal < 15), 50k top-9 scan "
          f"{results['val_scan_50k_min']:.2f} min (goal < 2), 1.28 M scan on 8 GPUs "
          f"{results['train_scan_8gpu_min']:.1f} min (each bounded by the slower of model and loader)")
    if args.json is not None:
        args.json.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
