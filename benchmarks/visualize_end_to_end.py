"""End to end: ``zfnet visualize`` of all 256 conv5 maps of full-size ZFNet against a per-neuron Captum loop.

    python benchmarks/visualize_end_to_end.py                    # 500 images, 256 maps, 256 Captum neurons
    python benchmarks/visualize_end_to_end.py --images 60 --maps 8 --baseline-neurons 16   # a quick check

A run directory is built the way training leaves one (``RunFiles``: ``best.safetensors`` with the model's
metadata, ``mean.safetensors``, ``classes.json``, ``config.json``) around a ZFNet with the paper's random
initialisation (seeded), with ``--images`` synthetic validation images written at 256 px; the job centre-crops
them to 224. The cost of every step depends on the image size and the number of maps, not on what the weights
have learnt.

1. **The job**: the visualize experiment (:func:`zfnet.experiments.visualize.run`) with ``layers=["conv5"]``,
   ``k=9`` and every map
   (the work of ``zfnet visualize RUN --data DATA --layers conv5``): the top-9 pass over all images, the
   deconvnet projections and image patches of the 256 x 9 activations, the Fig. 2 grid, the layer-1 filters
   and ``index.json``. Timed whole.
2. **Its projection step alone**: ``project_top_activations`` for the same top-9 (rebuilt from
   ``index.json``), 16 maps at a time as the job does it.
3. **The baseline**: the same projections by a loop over neurons, one ``NeuronDeconvolution.attribute`` call
   each (Captum's per-neuron deconvolution: a forward pass of the whole model on the image and a backward
   pass to the input), on the same model inputs. Without Captum, the equivalent autograd loop of
   ``benchmarks/deconvnet_speed.py`` is used. All 2304 neurons would take about half an hour on 2 cores, so
   a seeded random subset of ``--baseline-neurons`` is timed and the time per neuron is extrapolated
   linearly to all of them (each call is independent of the others, so the cost is linear in their count).

The baseline job is the measured job with its projection step replaced by the loop:
``job - projection step + neurons x (baseline time per neuron)``; the other steps (top-9 pass, decoding,
patches, drawing) are the same code either way. Steps 2 and 3 alternate in blocks so that a change of the
machine's load affects both alike. Every time is reported twice: wall-clock seconds, and CPU seconds of this
process (all its threads), which other jobs on a shared machine inflate much less.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from zfnet import Deconvnet, project_top_activations
from zfnet.data.folders import open_dataset
from zfnet.data.synthetic import write_synthetic
from zfnet.data.transforms import center_crop
from zfnet.experiments import visualize
from zfnet.models import build
from zfnet.train.checkpoint import RunFiles, save_mean, save_weights
from zfnet.train.run import load_run
from zfnet.visualize.topk import TopK

sys.path.insert(0, str(Path(__file__).resolve().parent))
from deconvnet_speed import per_neuron_baseline  # noqa: E402  (the sibling benchmark's Captum-or-autograd loop)

MODEL = "zfnet"
LAYER = "conv5"
BASE_SIZE = 256
CHUNK = 16  # maps per projection call, as visualize_run projects them


@dataclass
class Clock:
    """Wall-clock and CPU seconds (this process, all threads) of a ``with`` block, added up over uses."""

    wall: float = 0.0
    cpu: float = 0.0

    def __enter__(self) -> Clock:
        self._start = (time.perf_counter(), time.process_time())
        return self

    def __exit__(self, *exc: object) -> None:
        self.wall += time.perf_counter() - self._start[0]
        self.cpu += time.process_time() - self._start[1]

    def __str__(self) -> str:
        return f"{self.wall:.1f} s wall / {self.cpu:.1f} s CPU"


def make_run(root: Path, images: int, seed: int) -> tuple[Path, Path]:
    """A synthetic data set (``images`` validation images at 256 px) and a run directory of a random ZFNet."""
    classes = 10
    data = root / "data"
    per_class = -(-images // classes)
    write_synthetic(data, classes=classes, per_class=1, val_per_class=per_class, size=BASE_SIZE, seed=seed,
                    progress=False)
    files = RunFiles(root / "run")
    files.root.mkdir(parents=True)
    torch.manual_seed(seed)
    model = build(MODEL, num_classes=classes)
    save_weights(files.best, model, {"model": MODEL, "num_classes": classes, "model_options": {}, "epoch": 0})
    save_mean(files.mean, torch.full((3, BASE_SIZE, BASE_SIZE), 127.5))
    names = sorted(p.name for p in (data / "val").iterdir())
    files.classes.write_text(json.dumps({"classes": names, "names": names}))
    files.config.write_text(json.dumps({"data": str(data), "model": MODEL}))
    return data, files.root


def top_from_index(index: dict, n_maps: int) -> TopK:
    """The job's top-9 of ``LAYER`` as a :class:`TopK`, from ``index.json``.

    With every image searched, iteration order is data set order, so data set ids are iteration indices.
    """
    maps = index["layers"][LAYER]
    k = index["k"]
    values = torch.full((n_maps, k), float("-inf"))
    image_index = torch.full((n_maps, k), -1, dtype=torch.long)
    position = torch.full((n_maps, k, 2), -1, dtype=torch.long)
    for c, entry in maps.items():
        n = len(entry["values"])
        values[int(c), :n] = torch.tensor(entry["values"])
        image_index[int(c), :n] = torch.tensor(entry["image_ids"])
        position[int(c), :n] = torch.tensor(entry["positions"])
    return TopK(LAYER, values, image_index, position)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--images", type=int, default=500, help="validation images searched (default 500)")
    p.add_argument("--maps", type=int, default=None, help="conv5 maps shown (default all 256)")
    p.add_argument("--baseline-neurons", type=int, default=256,
                   help="neurons timed for the per-neuron baseline, a seeded random subset (default 256)")
    p.add_argument("--blocks", type=int, default=3,
                   help="alternating blocks of the projection step and the baseline (default 3)")
    p.add_argument("--seed", type=int, default=0, help="seeds the weights, the images and the subset (default 0)")
    args = p.parse_args()

    with tempfile.TemporaryDirectory(prefix="zfnet-vis-bench-") as tmp:
        root = Path(tmp)
        t = time.perf_counter()
        data, run = make_run(root, args.images, args.seed)
        print(f"{MODEL} (random init, seed {args.seed}), {args.images} synthetic images at {BASE_SIZE} px cropped "
              f"to 224; torch {torch.__version__}, {torch.get_num_threads()} threads, "
              f"{platform.processor() or platform.machine()}; set-up {time.perf_counter() - t:.1f} s")

        # 1. The job.
        maps = None if args.maps is None else list(range(args.maps))
        with Clock() as job:
            index = visualize.run(visualize.Config(run=str(run), data=str(data), layers=(LAYER,), k=9,
                                                   maps=None if maps is None else tuple(maps)),
                                  root / "figures", show_progress=False).numbers
        loaded = load_run(run)
        n_maps = loaded.model.conv5.conv.out_channels
        top = top_from_index(index, n_maps)
        shown = [int(c) for c in index["layers"][LAYER]]
        neurons = [(c, j) for c in shown for j in range(top.values.shape[1]) if top.image_index[c, j] >= 0]
        png = root / "figures" / index["figures"][f"top9-{LAYER}"]
        print(f"job: the visualize experiment over {index['images']} images, {len(shown)} {LAYER} maps, top-9 "
              f"({len(neurons)} projections and patches): {job} (figure {png.stat().st_size / 1e6:.1f} MB)")

        # Model inputs of the images the top-9 use, prepared as the job prepares them.
        ds = open_dataset(data, "val", loaded.base_size, classes=loaded.classes)
        needed = sorted({int(top.image_index[c, j]) for c, j in neurons})
        inputs = {i: center_crop(ds[i][0].float() - loaded.mean, loaded.input_size) for i in needed}

        # 2 and 3, alternating.
        model = loaded.model.eval()
        deconv = Deconvnet(model)
        name, baseline = per_neuron_baseline(model)
        g = torch.Generator().manual_seed(args.seed)
        subset = [neurons[i] for i in torch.randperm(len(neurons), generator=g)[:args.baseline_neurons].tolist()]
        project_top_activations(deconv, top, inputs.__getitem__, channels=shown[:1])  # warm-up, chain check
        c0, j0 = subset[0]
        baseline(inputs[int(top.image_index[c0, j0])][None], torch.tensor([c0]), top.position[c0, j0][None])
        ours, base = [], Clock()
        for block in torch.arange(len(subset)).tensor_split(args.blocks):
            with Clock() as step:
                for start in range(0, len(shown), CHUNK):
                    project_top_activations(deconv, top, inputs.__getitem__, channels=shown[start:start + CHUNK])
            ours.append(step)
            part = [subset[i] for i in block.tolist()]
            x = torch.stack([inputs[int(top.image_index[c, j])] for c, j in part])
            channels = torch.tensor([c for c, _ in part])
            positions = torch.stack([top.position[c, j] for c, j in part])
            with base:
                baseline(x, channels, positions)
        step = Clock(statistics.median(s.wall for s in ours), statistics.median(s.cpu for s in ours))
        scale = len(neurons) / len(subset)
        loop = Clock(base.wall * scale, base.cpu * scale)
        rest = Clock(job.wall - step.wall, job.cpu - step.cpu)
        total = Clock(rest.wall + loop.wall, rest.cpu + loop.cpu)
        print(f"projection step of the job ({len(neurons)} projections, {CHUNK} maps per call): {step}, medians "
              f"of {len(ours)} (" + ", ".join(str(s) for s in ours) + ")")
        print(f"{name}: {base.wall / len(subset) * 1e3:.0f} ms wall / {base.cpu / len(subset) * 1e3:.0f} ms CPU per "
              f"neuron, timed on a seeded random {len(subset)} of the {len(neurons)} neurons; extrapolated "
              f"linearly to all {len(neurons)}: {loop} ({loop.wall / 60:.1f} min wall)")
        print(f"projections alone: {loop} vs {step}: {loop.wall / step.wall:.1f}x wall, "
              f"{loop.cpu / step.cpu:.1f}x CPU")
        print(f"end to end: baseline job (job - projection step + loop: {rest} + {loop}) = {total} vs job {job}: "
              f"{total.wall / job.wall:.1f}x wall, {total.cpu / job.cpu:.1f}x CPU")


if __name__ == "__main__":
    main()
