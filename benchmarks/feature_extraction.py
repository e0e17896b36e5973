"""Feature extraction for the probes against the same model's plain inference, in one run.

Both paths read the same uint8 batches from memory, subtract the mean image, take the centre crop and
run the model in its fast inference form (``prepare_for_speed(model, train=False)``, channels-last):

``inference``  :func:`zfnet.train.evaluate.predict`: the whole network to the softmax (what
               ``zfnet evaluate`` runs);
``features``   :func:`zfnet.analysis.features.extract_features`: the network up to fc7, keeping
               conv1 ... conv5 (average-pooled to a 4 x 4 grid), fc6 and fc7 of every image.

The two are timed in alternation, ``--reps`` times each after a warm-up, and each path's best time is
kept (a burst of load from other processes on a shared machine then decides neither). The figure of
merit is the ratio of the throughputs, features / inference; the target is at least 0.9.

Usage:
    python benchmarks/feature_extraction.py                    # zfnet-cpu, 512 images, batch 64
    python benchmarks/feature_extraction.py --model zfnet --images 128 --reps 3
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time
from collections.abc import Iterator, Sequence

import torch

from zfnet.analysis.features import FEATURE_LAYERS, extract_features
from zfnet.data.folders import Batch
from zfnet.data.transforms import Normalization, base_size
from zfnet.models import build, list_models, model_info
from zfnet.models.speed import prepare_for_speed
from zfnet.train.evaluate import predict


class MemoryStream:
    """Batches of fixed uint8 images held in memory: the interface of an ``ImageStream`` that both paths use."""

    class _Data:
        def __init__(self, size: int) -> None:
            self.size = size
            self.samples: list = []

    def __init__(self, images: torch.Tensor) -> None:
        self.images = images
        self.labels = torch.zeros(len(images), dtype=torch.long)
        self.dataset = self._Data(images.shape[-1])

    def __len__(self) -> int:
        return len(self.images)

    def batches(self, indices: Sequence[int], batch_size: int) -> Iterator[Batch]:
        idx = torch.as_tensor(list(indices), dtype=torch.long)
        for i in range(0, len(idx), batch_size):
            part = idx[i:i + batch_size]
            yield Batch(self.images[part], self.labels[part], part)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="zfnet-cpu", choices=list_models(), help="model (default: zfnet-cpu)")
    parser.add_argument("--images", type=int, default=512, help="images per timed pass (default: 512)")
    parser.add_argument("--batch-size", type=int, default=64, help="images per forward pass (default: 64)")
    parser.add_argument("--reps", type=int, default=5, help="timed passes of each path (default: 5)")
    parser.add_argument("--grid", type=int, default=4, help="grid the conv maps are pooled to (default: 4)")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    input_size = model_info(args.model).input_size
    size = base_size(input_size)
    model = build(args.model, num_classes=10).eval()
    prepare_for_speed(model, train=False)
    images = torch.randint(0, 256, (args.images, 3, size, size), dtype=torch.uint8)
    mean = Normalization(images.float().mean(0))
    stream = MemoryStream(images)

    def inference() -> None:
        predict(model, stream, mean, input_size=input_size, batch_size=args.batch_size, channels_last=True,
                show_progress=False)

    def features() -> None:
        extract_features(model, stream, mean, input_size=input_size, layers=FEATURE_LAYERS, grid=args.grid,
                         batch_size=args.batch_size, show_progress=False)

    paths = {"inference": inference, "features": features}
    for fn in paths.values():  # warm-up: allocator, oneDNN primitives
        fn()
    times: dict[str, list[float]] = {name: [] for name in paths}
    for _ in range(args.reps):
        for name, fn in paths.items():
            start = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - start)
    rate = {name: args.images / min(t) for name, t in times.items()}
    median = {name: args.images / statistics.median(t) for name, t in times.items()}
    ratio = rate["features"] / rate["inference"]
    print(f"{args.model} at {input_size} px, batch {args.batch_size}, {args.images} images, "
          f"{torch.get_num_threads()} threads, {platform.processor() or platform.machine()}, "
          f"load average {os.getloadavg()[0]:.1f}")
    print(f"{'path':<10}{'best img/s':>12}{'median img/s':>14}")
    for name in paths:
        print(f"{name:<10}{rate[name]:>12.1f}{median[name]:>14.1f}")
    print(f"ratio features / inference: {ratio:.3f} (best), {median['features'] / median['inference']:.3f} (median)")
    print(json.dumps({"model": args.model, "images": args.images, "batch_size": args.batch_size,
                      "best_img_per_s": rate, "median_img_per_s": median, "ratio": ratio}))


if __name__ == "__main__":
    main()
