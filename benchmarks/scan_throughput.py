"""Cost of the top-k scan against a plain inference pass over the same loader, in one and in N processes.

    python benchmarks/scan_throughput.py                  # about 3 minutes on 2 cores
    python benchmarks/scan_throughput.py --images 1024 --full-images 64 --repeats 2

Three measurements, each the median of ``--repeats`` alternating passes:

1. **Loader** (``zfnet-cpu``, 112 px): ``--images`` JPEG files (400 x 300, decoded and resized to 128 px by
   DataLoader workers, uint8 until the crop) read through one ``ImageStream``; the plain pass runs the
   model on every batch; the scan is :func:`zfnet.visualize.topk.search_top_activations` over every
   layer, conv1 ... fc8 (k = 9; over conv1 ... conv5 alone it stops after conv5 and costs less than the
   plain pass), i.e. the traced graph, the running top-k of every map and the bookkeeping of
   :mod:`zfnet.scan`.
2. **Pre-decoded** (full-size ZFNet, 224 px, ``--full-images`` images decoded once into memory): the same
   two passes, so that the model is the only bound.
3. **Processes**: the ``zfnet-cpu`` scan with 1 process (all cores) and with ``--ranks`` processes on
   gloo (cores divided between them), timed from a barrier to the end of the combined result on every
   rank, and the plain pass with the same ranks, for the ratio under N ranks: once through the JPEG
   loader (each process decoding its own share) and once pre-decoded.

The reference pass is what one writes by hand: batches from the same loader, the same normalisation
and crop, ``model(x)`` under ``torch.no_grad`` with the model in its fast inference form
(``prepare_for_speed``), which the scan runs too.
"""

from __future__ import annotations

import argparse
import os
import platform
import socket
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from PIL import Image

from zfnet.data import ImageStream, open_dataset
from zfnet.data.transforms import Normalization, base_size, center_crop
from zfnet.distributed import DistContext
from zfnet.models import build
from zfnet.models.speed import prepare_for_speed
from zfnet.scan import plan_chunks, rank_chunks
from zfnet.visualize.topk import search_top_activations

LAYERS = ["conv1", "conv2", "conv3", "conv4", "conv5", "fc6", "fc7", "fc8"]  # every layer: the model's whole pass


def write_jpegs(root: Path, n: int, classes: int = 10) -> None:
    rng = np.random.default_rng(0)
    for i in range(n):
        folder = root / "val" / f"c{i % classes}"
        folder.mkdir(parents=True, exist_ok=True)
        # Smooth random colour fields: JPEG-sized like photographs, not like noise.
        small = rng.integers(0, 256, (12, 16, 3), dtype=np.uint8)
        Image.fromarray(small).resize((400, 300), Image.BILINEAR).save(folder / f"{i:06d}.jpg", quality=90)


def model_and_inputs(name: str, size: int):
    torch.manual_seed(0)
    model = prepare_for_speed(build(name, num_classes=10).eval(), train=False)
    norm = Normalization(torch.full((3, base_size(size), base_size(size)), 110.0), None)

    def inputs(pixels: torch.Tensor) -> torch.Tensor:
        return center_crop(norm(pixels), size).contiguous(memory_format=torch.channels_last)

    return model, inputs


def plain_pass(model, inputs, stream: ImageStream, chunks: list[list[int]]) -> int:
    n = 0
    with torch.no_grad():
        for batch in stream.chunks(chunks):
            model(inputs(batch.images))
            n += len(batch.indices)
    return n


def scan_pass(model, inputs, stream: ImageStream, indices: list[int], batch: int, ctx=None) -> None:
    search_top_activations(model, stream, indices, inputs, LAYERS, 9, batch_size=batch, ctx=ctx,
                           state_dir=None, show_progress=False)


def alternate(plain, scan, repeats: int) -> tuple[float, float]:
    plain()  # warm-up: kernels, allocator, tracing
    scan()
    p, s = [], []
    for _ in range(repeats):
        t = time.perf_counter()
        plain()
        p.append(time.perf_counter() - t)
        t = time.perf_counter()
        scan()
        s.append(time.perf_counter() - t)
    return statistics.median(p), statistics.median(s)


def one_process(name: str, size: int, stream: ImageStream, batch: int, repeats: int) -> tuple[float, float]:
    model, inputs = model_and_inputs(name, size)
    indices = list(range(len(stream)))
    chunks = plan_chunks(indices, batch)
    return alternate(lambda: plain_pass(model, inputs, stream, chunks),
                     lambda: scan_pass(model, inputs, stream, indices, batch), repeats)


def _rank(rank: int, world: int, port: int, root: str, n: int, batch: int, repeats: int, threads: int,
          cache: str, out: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(threads)
    dist.init_process_group("gloo", rank=rank, world_size=world)
    ctx = DistContext(rank=rank, world_size=world)
    stream = ImageStream(open_dataset(root, "val", base_size(112)), workers=0, cache=cache, show_progress=False)
    model, inputs = model_and_inputs("zfnet-cpu", 112)
    indices = list(range(len(stream)))
    chunks = plan_chunks(indices, batch)
    mine = [chunks[c] for c in rank_chunks(len(chunks), rank, world)]

    def timed(fn):
        def run():
            dist.barrier()
            fn()
            dist.barrier()
        return run

    p, s = alternate(timed(lambda: plain_pass(model, inputs, stream, mine)),
                     timed(lambda: scan_pass(model, inputs, stream, indices, batch, ctx)), repeats)
    if rank == 0:
        Path(out).write_text(f"{p} {s}")
    dist.destroy_process_group()


def processes(world: int, root: Path, n: int, batch: int, repeats: int, threads: int,
              cache: str = "memory") -> tuple[float, float]:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    with tempfile.NamedTemporaryFile(suffix=".txt") as f:
        mp.spawn(_rank, args=(world, port, str(root), n, batch, repeats, threads, cache, f.name), nprocs=world,
                 join=True)
        p, s = Path(f.name).read_text().split()
    return float(p), float(s)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--images", type=int, default=2048, help="JPEG images of the loader and process measurements")
    ap.add_argument("--full-images", type=int, default=512, help="images of the full-size ZFNet measurement")
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--ranks", type=int, default=2)
    ap.add_argument("--workers", type=int, default=max(1, (os.cpu_count() or 2) - 1))
    args = ap.parse_args()
    cores = len(os.sched_getaffinity(0))
    print(f"torch {torch.__version__}, {platform.processor() or platform.machine()}, {cores} cores, "
          f"{torch.get_num_threads()} threads")
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        write_jpegs(root, args.images)
        ds = open_dataset(root, "val", base_size(112))
        stream = ImageStream(ds, workers=args.workers, cache="none", show_progress=False)
        p, s = one_process("zfnet-cpu", 112, stream, args.batch_size, args.repeats)
        n = len(stream)
        print(f"loader   zfnet-cpu  {n} JPEGs, {args.workers} workers: plain {p:.2f} s ({n / p:.0f} img/s), "
              f"scan {s:.2f} s ({n / s:.0f} img/s): scan/plain = {s / p:.3f}")

        full = ImageStream(_first(open_dataset(root, "val", base_size(224)), args.full_images),
                           workers=0, cache="memory", show_progress=False)
        p, s = one_process("zfnet", 224, full, 32, args.repeats)
        n = len(full)
        print(f"decoded  zfnet      {n} images in memory: plain {p:.2f} s ({n / p:.1f} img/s), "
              f"scan {s:.2f} s ({n / s:.1f} img/s): scan/plain = {s / p:.3f}")

        n, each = args.images, max(1, cores // args.ranks)
        for cache, what in (("none", "JPEGs decoded in each process"), ("memory", "images in memory")):
            p1, s1 = processes(1, root, n, args.batch_size, args.repeats, cores, cache)
            pn, sn = processes(args.ranks, root, n, args.batch_size, args.repeats, each, cache)
            print(f"ranks    zfnet-cpu  {n} {what}: 1 process ({cores} threads) scan {s1:.2f} s "
                  f"({n / s1:.0f} img/s), plain {p1:.2f} s: scan/plain = {s1 / p1:.3f}")
            print(f"         {args.ranks} processes ({each} threads each) scan {sn:.2f} s "
                  f"({n / sn:.0f} img/s), plain {pn:.2f} s: scan/plain = {sn / pn:.3f}; "
                  f"speed-up of the scan over 1 process: {s1 / sn:.2f}x")


def _first(ds, n: int):
    """The data set's first ``n`` images."""
    ds.samples = ds.samples[:n]
    return ds


if __name__ == "__main__":
    main()
