"""``zfnet visualize``: every deconvnet figure of a trained model, written as PNGs with an ``index.json``.

:func:`run` makes, for one run directory (or a model zfnet did not train),

- ``top9-<layer>.png`` per layer (Fig. 2): for each shown feature map the top-k projections beside the
  image patches under them;
- ``filters-conv1.png``: the layer-1 filters drawn directly;
- ``evolution-<layer>.png`` per layer (Fig. 4): the strongest projection of the first shown maps at each
  weight snapshot of the run;
- ``index.json``: per layer and map the top-k images (data set indices), positions and values, and the
  paths of every figure, so that a report can be rebuilt without recomputing anything.

With ``compare`` (another run), or called on its own, :func:`compare_architectures` makes Fig. 6 for two
runs (e.g. AlexNet and ZFNet): their layer-1 filters and
layer-2 features, with the fraction of dead layer-1 filters and their aliasing (see
:mod:`zfnet.visualize.figures`), as ``architectures.png`` and ``architectures.json``.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .._io import atomic_write_json
from ..data.folders import open_dataset
from ..data.loader import ImageStream, keeps_in_memory
from ..data.transforms import center_crop
from ..distributed import DistContext
from ..errors import ZFNetError
from ..progress import progress
from ..scan import gather_tensor, model_fingerprint
from ..train.checkpoint import load_model
from ..train.run import LoadedRun, load_run
from ..visualize.deconvnet import Deconvnet
from ..visualize.figures import (
    aliasing,
    dead_filter_fraction,
    draw_architecture_comparison,
    draw_evolution,
    draw_filters,
    draw_top_projections,
    map_tiles,
    normalize_projection,
    save_image,
    tile,
)
from ..visualize.layers import PAPER_LAYERS, default_layers, traced_deconvnet
from ..visualize.receptive_field import crop_windows, receptive_fields
from ..visualize.topk import (
    TopK,
    clear_search_state,
    project_top_activations,
    search_top_activations,
    top_activations,
)
from .base import MAX_BATCH, MAX_COUNT, MAX_SEED, MAX_WORKERS, ModelSource, option, write_config
from .base import Result as _Result

__all__ = ["Config", "Result", "run", "compare_architectures", "DEFAULT_LAYERS", "NAME", "HELP", "DESCRIPTION"]

DEFAULT_LAYERS = PAPER_LAYERS

NAME = "visualize"
HELP = "deconvnet figures of a model: top-k projections, filters, evolution"
DESCRIPTION = ("The paper's Fig. 2 (top-k projections beside their image patches, per layer), the layer-1 filters, "
               "Fig. 4 (feature evolution over the run's snapshots) and an index.json of every map's top images, "
               "positions and values. With --compare, also Fig. 6: this run's and another run's layer-1/2 features "
               "with dead-filter and aliasing figures.")


@dataclass(frozen=True, kw_only=True)
class Config(ModelSource):
    """The visualize experiment's options (``zfnet visualize --help`` shows the same)."""

    what = "visualize option"

    data: str = option(help="data folder (train/ and val/ inside)")
    layers: tuple[str, ...] | None = option(None, max_items=1000,
                                            help="layers to visualise, comma-separated (default: conv1,...,conv5; "
                                            "for another --model, its top-level stages that hold convolutions, "
                                            "e.g. conv1,layer1,...,layer4)")
    k: int = option(9, low=1, high=1000, help="top activations per feature map")
    maps: int | tuple[int, ...] | None = option(16, low=0, high=1_000_000,
                                                help="feature maps shown per layer: a seeded random subset of this "
                                                "many (from Python also a list of map indices, or None: all)")
    split: str = option("val", help="split folder whose images are searched")
    max_images: int | None = option(None, low=1, high=MAX_COUNT, metavar="N",
                                    help="search a seeded random subset of N images of the split (default: all)")
    seed: int = option(0, low=0, high=MAX_SEED, help="seed of the choice of shown maps and of --max-images")
    compare: str | None = option(None, metavar="RUN_B", help="another run (e.g. AlexNet) for the Fig. 6 comparison")
    evolution_maps: int = option(8, low=1, high=1000, help="Fig. 4 shows the first this many shown maps per layer")
    evolution_images: int = option(256, low=1, high=MAX_COUNT,
                                   help="Fig. 4 searches a seeded subset of this many images, per snapshot")
    batch_size: int = option(32, low=1, high=MAX_BATCH, help="images per forward pass")
    workers: int | None = option(None, low=0, high=MAX_WORKERS,
                                 help="processes decoding the images while the model runs (default: from the "
                                 "cores free; a split that fits in memory is decoded once, in this process)")


@dataclass
class Result(_Result):
    """``numbers`` is ``index.json``'s content; ``numbers["architectures"]``, with ``compare``, is
    ``architectures.json``'s."""

    kind = NAME

    def lines(self) -> list[str]:
        index = self.numbers
        shown = sum(len(maps) for maps in index["layers"].values())
        out = [f"visualised {shown} feature maps of {', '.join(index['layers'])} over {index['images']} images"]
        arch = index.get("architectures")
        if arch:
            out.append("architecture comparison: " + "; ".join(
                f"{r['model']}: {100 * r['dead_fraction']:.0f}% dead layer-1 filters, aliasing {r['aliasing']:.3f}"
                for r in arch["runs"]))
        return out


def run(config: Config, out: str | Path, *, loaded: LoadedRun | None = None, show_progress: bool = True) -> Result:
    """Write Fig. 2 per layer, the layer-1 filters, Fig. 4 per layer and ``index.json`` (with ``compare``,
    Fig. 6 too) into ``out``, and ``visualize.config.json``.

    Args:
        config: the options.
        out: the folder to write into (created).
        loaded: the model, when the caller has loaded it already (else ``config`` names it).
        show_progress: progress bars.

    Raises:
        ZFNetError: an unknown layer (listing the valid ones), bad ``maps``, an unreadable run, or a
            model the deconvnet cannot trace.

    Example:
        >>> run(Config(run="runs/zfnet", data="data/synth", maps=16), "runs/zfnet/figures")  # doctest: +SKIP
    """
    ctx = config.context()
    loaded = loaded if loaded is not None else config.load(data=config.data, split=config.split)
    out = Path(out)
    architectures = None
    try:
        if config.compare is not None and ctx.is_main:
            other = config.compare if isinstance(config.compare, LoadedRun) else load_run(
                config.compare, "best" if config.model else config.weights or "best")
            other.model.to(next(loaded.model.parameters()).device)
            architectures = compare_architectures(
                loaded, other, out, data=config.data, split=config.split, seed=config.seed,
                max_images=config.max_images if config.max_images is not None else 512, batch_size=config.batch_size,
                show_progress=show_progress)
        maps = config.maps if config.maps != 0 else None
        index = _visualize(loaded, config.data, layers=config.layers, k=config.k, maps=maps, split=config.split,
                              out=out, seed=config.seed, max_images=config.max_images,
                              evolution_maps=config.evolution_maps, evolution_images=config.evolution_images,
                              batch_size=config.batch_size, show_progress=show_progress, ctx=ctx,
                              workers=config.workers)
    except ValueError as err:  # an unknown layer, a map out of range: the user's to fix
        raise ZFNetError(str(err)) from None
    files = {"index": out / "index.json", "config": out / f"{NAME}.config.json"}
    if ctx.is_main:
        write_config(out, NAME, config, layers=list(index["layers"]))
    if architectures is not None:
        index = {**index, "architectures": architectures}
        files["architectures"] = out / "architectures.json"
    return Result(out, index, files)


class _Images:
    """The images of one search: the requested data set indices, uint8 pixels, model inputs."""

    def __init__(self, run: LoadedRun, data: str | Path, split: str, *, max_images: int | None, seed: int,
                 batch_size: int, show_progress: bool, workers: int | None = None, shared: bool = False) -> None:
        ds = open_dataset(data, split, run.base_size, classes=run.classes)
        if len(ds) == 0:
            raise ValueError(f"{data}/{split} holds no images")
        # A split that fits in memory is decoded once, in this process; a larger one, or one shared by
        # the processes of a torchrun job (each decodes its own share only), by workers while the model runs.
        cache = "none" if shared else "auto"
        on_the_fly = not keeps_in_memory(ds, cache)
        self.stream = ImageStream(ds, workers=(workers if on_the_fly else 0), cache=cache,
                                  show_progress=show_progress, pin_memory=run.model_device.type == "cuda")
        indices = list(range(len(ds)))
        if max_images is not None:
            if max_images < 1:
                raise ValueError(f"max_images must be at least 1, got {max_images}")
            if max_images < len(ds):
                g = torch.Generator().manual_seed(seed)
                indices = sorted(torch.randperm(len(ds), generator=g)[:max_images].tolist())
        self.requested = indices
        self.read = 0  # readable images among them, once searched
        self.normalize, self.size, self.batch_size = run.normalization, run.input_size, batch_size
        self.dataset_size = len(ds)
        self.dataset = ds

    def label_name(self, dataset_index: int) -> str:
        """The class name of an image, by data set index."""
        return self.dataset.class_names[self.dataset.samples[dataset_index][1]]

    def inputs(self, pixels: torch.Tensor) -> torch.Tensor:
        """uint8 (B, 3, S, S) -> model input: normalised, centre crop."""
        return center_crop(self.normalize(pixels), self.size)

    def search(self, model: nn.Module, layers: Sequence[str], k: int, *, ctx: DistContext | None = None,
               state_dir: Path | None = None, fingerprint: Any = None,
               show_progress: bool = True) -> dict[str, TopK]:
        """The top-k of every map of ``layers`` over the requested images, image ids being data set indices
        (:func:`~zfnet.visualize.topk.search_top_activations`: sharded over ``torchrun`` ranks, saved as it
        goes into ``state_dir``)."""
        fingerprint = [fingerprint, self.size, [str(p) for p, _ in self.dataset.samples]]
        top, self.read = search_top_activations(model, self.stream, self.requested, self.inputs, layers, k,
                                                batch_size=self.batch_size, ctx=ctx, state_dir=state_dir,
                                                fingerprint=fingerprint, show_progress=show_progress)
        return top

    def pixels(self, ids: Sequence[int], *, readable_only: bool = False) -> torch.Tensor:
        """The uint8 pixels (base size, uncropped) of images by data set index. (N, 3, S, S).

        ``readable_only``: leave out the images that cannot be read (else they are an error)."""
        want = [int(i) for i in ids]
        got: dict[int, torch.Tensor] = {}
        for batch in self.stream.batches(sorted(set(want)), self.batch_size):
            for i, img in zip(batch.indices.tolist(), batch.images):
                got[i] = img
        if readable_only:
            want = [i for i in want if i in got]
        return torch.stack([got[i] for i in want])


def _shown_maps(n_maps: int, maps: int | Sequence[int] | None, seed: int, layer: str) -> list[int]:
    if maps is None:
        return list(range(n_maps))
    if isinstance(maps, bool):
        raise TypeError(f"maps must be None, an int or a sequence of ints, got {maps!r}")
    if isinstance(maps, int):
        if maps < 1:
            raise ValueError(f"maps must be at least 1, got {maps}")
        if maps >= n_maps:
            return list(range(n_maps))
        g = torch.Generator().manual_seed(seed)
        return sorted(torch.randperm(n_maps, generator=g)[:maps].tolist())
    chosen = sorted({int(m) for m in maps})
    bad = [m for m in chosen if not 0 <= m < n_maps]
    if bad or not chosen:
        raise ValueError(f"maps {bad or 'empty'} out of range for {layer}, which has {n_maps} maps")
    return chosen


def _check_layers(deconv: Deconvnet, layers: Sequence[str]) -> list[str]:
    if isinstance(layers, str):
        layers = [layers]
    layers = list(dict.fromkeys(layers))
    valid = deconv.layer_names
    if not layers:
        raise ValueError(f"layers is empty; valid layers: {', '.join(valid)}")
    for name in layers:
        if name not in valid:
            raise ValueError(f"unknown layer {name!r}; valid layers: {', '.join(valid)}")
    return layers


def _first_conv(model: nn.Module) -> nn.Conv2d:
    for module in model.modules():
        if isinstance(module, nn.Conv2d):
            return module
    raise ValueError(f"{type(model).__name__} has no Conv2d layer")


def _inputs_of(images: _Images, tops: Sequence[TopK], maps: Sequence[Sequence[int]]) -> dict[int, torch.Tensor]:
    """Model inputs of every image (by data set index) in the top-k of the given maps, fetched once."""
    needed = sorted({i for t, m in zip(tops, maps) for i in t.image_index[list(m)].flatten().tolist() if i >= 0})
    if not needed:
        return {}
    return dict(zip(needed, images.inputs(images.pixels(needed))))


def _projections_in_window(deconv: Deconvnet, top: TopK, images: _Images, inputs: dict[int, torch.Tensor],
                           maps: list[int], chunk: int = 16) -> tuple[torch.Tensor, torch.Tensor]:
    """Projections (cut to the receptive field) and uint8 patches of the top-k of ``maps``.

    ``inputs`` maps data set indices to model inputs (C, H, W). Maps are projected ``chunk`` at a
    time, so only that many whole-image projections are held at once.
    Shape: (M, k, 3, h, w) each.
    """
    rf = receptive_fields(deconv, (images.size, images.size), in_channels=3)[top.layer]
    if not maps:  # a process of a torchrun job with more processes than shown maps
        k = top.values.shape[1]
        return torch.zeros((0, k, 3, *rf.size)), torch.zeros((0, k, 3, *rf.size), dtype=torch.uint8)
    all_proj, all_patches = [], []
    for start in range(0, len(maps), chunk):
        part = maps[start:start + chunk]
        out = project_top_activations(deconv, top, inputs.__getitem__, channels=part)
        m, k = out.projections.shape[:2]
        index = top.image_index[part]  # (M, k)
        windows = rf.windows(top.position[part].reshape(-1, 2).clamp(min=0)).reshape(m, k, 4)
        projections = torch.zeros_like(out.patches)
        patches = torch.zeros(out.patches.shape, dtype=torch.uint8)
        valid = index >= 0
        if bool(valid.any()):
            projections[valid] = crop_windows(out.projections[valid], windows[valid])
            pixels = center_crop(images.pixels(index[valid].tolist()), images.size)
            patches[valid] = crop_windows(pixels, windows[valid])
        all_proj.append(projections)
        all_patches.append(patches)
    return torch.cat(all_proj), torch.cat(all_patches)


def _visualize(run: str | Path | LoadedRun, data: str | Path, *, layers: Sequence[str] | None = None, k: int = 9,
                  maps: int | Sequence[int] | None = None, split: str = "val", out: str | Path,
                  weights: str = "best", seed: int = 0, max_images: int | None = None,
                  evolution_maps: int = 8, evolution_images: int = 256, batch_size: int = 32,
                  show_progress: bool = True, ctx: DistContext | None = None,
                  workers: int | None = None) -> dict[str, Any]:
    """Write Fig. 2 per layer, the layer-1 filters, Fig. 4 per layer and ``index.json`` for a run.

    Args:
        run: the run directory, or a loaded run (a model zfnet did not train, say).
        data: the data set's folder (``train/``, ``val/`` inside).
        layers: the layers to visualise (names of :attr:`Deconvnet.layer_names`); None: ``conv1`` ...
            ``conv5``, or for another model its convolutional stages
            (:func:`~zfnet.visualize.layers.default_layers`).
        k: top activations per feature map.
        maps: the feature maps shown per layer: all (None), a seeded random subset of this many (int), or
            these (a sequence of ints).
        split: the data split to search.
        out: the folder to write into (created).
        weights: ``best``, ``last`` or ``epoch-N`` (a run directory's).
        seed: seeds the choice of maps and images.
        max_images: search a seeded random subset of this many images (default all).
        evolution_maps: Fig. 4 shows the first this many shown maps of each layer.
        evolution_images: Fig. 4 searches a seeded subset of this many of the images, per snapshot.
        batch_size: images per forward pass.
        show_progress: progress bars (on a terminal).

    Returns:
        The contents of ``index.json``: ``{"run", "weights", "split", "images", "layers": {layer:
        {map: {"image_ids", "positions", "values", "png"}}}, "figures": {...}}``; image ids are
        indices into the split's data set; paths are relative to ``out``.

    Raises:
        ValueError: an unknown layer (listing the valid ones), bad ``k``, ``maps`` or ``max_images``.
        CheckpointError: an unreadable run.
        ZFNetError: a model the deconvnet cannot trace.

    """
    if isinstance(k, bool) or not isinstance(k, int) or k < 1:
        raise ValueError(f"k must be a positive int, got {k!r}")
    loaded = run if isinstance(run, LoadedRun) else load_run(run, weights)
    model = loaded.model.eval()
    deconv = traced_deconvnet(model, loaded.input_size, name=_model_name(loaded))
    layers = _check_layers(deconv, default_layers(model, loaded.input_size, deconv) if layers is None else layers)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    ctx = ctx or DistContext()
    images = _Images(loaded, data, split, max_images=max_images, seed=seed, batch_size=batch_size,
                     show_progress=show_progress and ctx.is_main, workers=workers, shared=ctx.distributed)
    top = images.search(model, layers, k, ctx=ctx, state_dir=out, show_progress=show_progress,
                        fingerprint=[model_fingerprint(loaded.mean),
                                     None if loaded.std is None else model_fingerprint(loaded.std)])

    shown = {layer: _shown_maps(top[layer].values.shape[0], maps, seed, layer) for layer in layers}
    # Each rank projects its share of every layer's maps; rank 0 gathers them and writes.
    mine = {layer: shown[layer][ctx.rank::ctx.world_size] for layer in layers}
    inputs = _inputs_of(images, [top[layer] for layer in layers], [mine[layer] for layer in layers])

    index: dict[str, Any] = {"run": str(loaded.root), "weights": loaded.weights, "split": split,
                             "images": images.read, "k": k, "layers": {}, "figures": {}}
    for layer in progress(layers, desc="projections", unit="it", enabled=show_progress and ctx.is_main):
        t, chosen = top[layer], shown[layer]
        projections, patches = _projections_in_window(deconv, t, images, inputs, mine[layer])
        if ctx.distributed:
            projections, patches = (_by_map(gather_tensor(ctx, part), len(chosen), ctx.world_size)
                                    for part in (projections, patches))
        if not ctx.is_main:
            continue
        png = draw_top_projections(projections, patches, chosen, out / f"top{k}-{_stem(layer)}.png", layer=layer)
        index["figures"][f"top{k}-{layer}"] = png.name
        entries = {}
        for i, c in enumerate(chosen):
            valid = t.image_index[c] >= 0
            ids = t.image_index[c][valid].tolist()
            # Per map, the two grids of the layer figure as images of their own (the report's map pages).
            proj_tile, patch_tile = map_tiles(projections[i], patches[i])
            tile = out / "maps" / f"{_stem(layer)}-{c}"
            entries[str(c)] = {
                "image_ids": ids,
                "positions": t.position[c][valid].tolist(),
                "values": t.values[c][valid].tolist(),
                "labels": [images.label_name(j) for j in ids],
                "png": png.name,
                "projections_png": _rel(save_image(proj_tile, tile.with_name(tile.name + "-projections.png")), out),
                "patches_png": _rel(save_image(patch_tile, tile.with_name(tile.name + "-patches.png")), out),
            }
        index["layers"][layer] = entries
    if ctx.is_main:  # rank 0 alone writes
        _write_rest(index, loaded, model, images, layers, shown, out, evolution_maps=evolution_maps,
                    evolution_images=evolution_images, seed=seed, show_progress=show_progress)
    ctx.barrier()  # index.json is written: every rank's saved search has served
    clear_search_state(out, ctx)
    return index


def _write_rest(index: dict[str, Any], loaded: LoadedRun, model: nn.Module, images: _Images, layers: list[str],
                shown: dict[str, list[int]], out: Path, *, evolution_maps: int, evolution_images: int, seed: int,
                show_progress: bool) -> None:
    """The layer-1 filters, Fig. 4 over the run's snapshots, and ``index.json``."""
    conv1 = _first_conv(model)
    index["figures"]["filters-conv1"] = draw_filters(conv1.weight, out / "filters-conv1.png",
                                                     title=f"{_model_name(loaded)} layer-1 filters").name

    epochs = loaded.run.snapshots if loaded.run is not None else []
    if epochs:
        figures, strips = _evolution(loaded, images, layers, shown, epochs, out, evolution_maps=evolution_maps,
                                     evolution_images=evolution_images, seed=seed, show_progress=show_progress)
        index["figures"].update(figures)
        for layer, per_map in strips.items():
            for c, name in per_map.items():
                index["layers"][layer][str(c)]["evolution_png"] = name
    index["snapshots"] = epochs
    atomic_write_json(out / "index.json", index)


def _by_map(parts: list[torch.Tensor], n_maps: int, world: int) -> torch.Tensor:
    """Rank ``r`` computed maps ``r, r + world, ...``: put every rank's rows back in the maps' order."""
    out = torch.empty((n_maps, *parts[0].shape[1:]), dtype=parts[0].dtype)
    for rank, part in enumerate(parts):
        out[rank::world] = part
    return out


def _model_name(run: LoadedRun) -> str:
    return str(run.metadata.get("model", type(run.model).__name__))


def _evolution(loaded: LoadedRun, images: _Images, layers: list[str], shown: dict[str, list[int]],
               epochs: list[int], out: Path, *, evolution_maps: int, evolution_images: int, seed: int,
               show_progress: bool) -> tuple[dict[str, str], dict[str, dict[int, str]]]:
    """Fig. 4: per snapshot, re-run top-1 over a subset of the images and project each map's strongest.

    Each projection is cut to the receptive field of its activation. Returns the layer figures and,
    per layer and map, a one-row strip of its projections across the snapshots.
    """
    g = torch.Generator().manual_seed(seed)
    n = len(images.requested)
    subset = sorted(torch.randperm(n, generator=g)[:max(1, evolution_images)].tolist())
    x = images.inputs(images.pixels([images.requested[i] for i in subset], readable_only=True))
    maps = {layer: shown[layer][:max(1, evolution_maps)] for layer in layers}
    per_layer: dict[str, list[torch.Tensor]] = {layer: [] for layer in layers}
    files = loaded.run.files
    for epoch in progress(epochs, desc="snapshots", unit="it", enabled=show_progress):
        model, _ = load_model(files.snapshot(epoch))
        top = top_activations(model, x.split(images.batch_size), layers, k=1)
        deconv = Deconvnet(model)
        for layer in layers:
            proj = project_top_activations(deconv, top[layer], x, channels=maps[layer]).projections  # (M, 1, 3, H, W)
            # Cut to the receptive field of the strongest activation, as the paper's Fig. 4 shows it.
            rf = receptive_fields(deconv, tuple(x.shape[-2:]), in_channels=x.shape[1])[layer]
            windows = rf.windows(top[layer].position[maps[layer], 0].clamp(min=0))
            per_layer[layer].append(crop_windows(proj[:, 0], windows))  # (M, 3, h, w)
    figures: dict[str, str] = {}
    strips: dict[str, dict[int, str]] = {}
    for layer in layers:
        stacked = torch.stack(per_layer[layer], dim=1)  # (M, E, 3, H, W)
        png = draw_evolution(stacked, epochs, maps[layer], out / f"evolution-{_stem(layer)}.png", layer=layer)
        figures[f"evolution-{layer}"] = png.name
        strips[layer] = {}
        for i, c in enumerate(maps[layer]):
            strip = tile(normalize_projection(stacked[i]), len(epochs), max(1, stacked.shape[-1] // 16))
            strips[layer][c] = _rel(save_image(strip, out / "maps" / f"{_stem(layer)}-{c}-evolution.png"), out)
    return figures, strips


def _stem(layer: str) -> str:
    """A layer name as part of a file name that is also a plain URL: ``layer1.0.relu#2`` -> ``layer1.0.relu-call2``."""
    return re.sub(r"[^A-Za-z0-9._-]", "_", layer.replace("#", "-call"))


def _rel(path: Path, out: Path) -> str:
    return path.relative_to(out).as_posix()


def _run_data(run: LoadedRun) -> str:
    config = run.run.config if run.run is not None else None
    if config is None:
        raise ValueError(f"no data given and {run.root} has no config.json naming its data")
    return config.data


def compare_architectures(run_a: str | Path | LoadedRun, run_b: str | Path | LoadedRun, out: str | Path, *,
                          data: str | Path | None = None,
                          split: str = "val", weights: str = "best", layer2: str = "conv2", maps: int = 16,
                          max_images: int | None = 512, seed: int = 0, batch_size: int = 32,
                          show_progress: bool = True) -> dict[str, Any]:
    """Fig. 6: layer-1 filters and layer-2 features of two runs, with dead-filter fraction and aliasing.

    Args:
        run_a, run_b: run directories or loaded runs (e.g. an AlexNet and a ZFNet run).
        out: the folder to write ``architectures.png`` and ``architectures.json`` into.
        data: the data set's folder; default the one each run was trained on (its ``config.json``).
        split: the split searched for the layer-2 features.
        weights: ``best``, ``last`` or ``epoch-N`` of both runs.
        layer2: the layer whose features are shown beside the filters.
        maps: layer-2 maps shown (a seeded random subset; each its strongest projection, cut to the
            receptive field of that activation).
        max_images: search a seeded random subset of this many images (None: all).

    Returns:
        The contents of ``architectures.json``: ``{"runs": [{"run", "model", "dead_fraction", "aliasing",
        "conv1_stride", "maps", "image_ids"}, ...], "png": "architectures.png", "layer2",
        "definitions": {...}}``. Aliasing is measured at each model's own conv1 stride.
    """
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    panels, rows = [], []
    for run in (run_a, run_b):
        loaded = run if isinstance(run, LoadedRun) else load_run(run, weights)
        model = loaded.model.eval()
        deconv = traced_deconvnet(model, loaded.input_size, name=_model_name(loaded))
        _check_layers(deconv, [layer2])
        images = _Images(loaded, data if data is not None else _run_data(loaded), split, max_images=max_images,
                         seed=seed, batch_size=batch_size, show_progress=show_progress)
        top = images.search(model, [layer2], 1, show_progress=show_progress)[layer2]
        chosen = _shown_maps(top.values.shape[0], maps, seed, layer2)
        inputs = _inputs_of(images, [top], [chosen])
        proj = project_top_activations(deconv, top, inputs.__getitem__, channels=chosen).projections[:, 0]
        # Cut each projection to its activation's receptive field, as Fig. 2 and Fig. 6 show them.
        rf = receptive_fields(deconv, (images.size, images.size), in_channels=3)[layer2]
        proj = crop_windows(proj, rf.windows(top.position[chosen, 0].clamp(min=0)))  # (M, 3, h, w)
        conv1 = _first_conv(model)
        w, stride = conv1.weight, tuple(conv1.stride)
        dead, alias = dead_filter_fraction(w), aliasing(w, stride)
        name = _model_name(loaded)
        panels.append({"name": name, "filters": w, "projections": proj, "dead_fraction": dead, "aliasing": alias,
                       "stride": stride})
        ids = top.image_index[chosen, 0].tolist()
        rows.append({"run": str(loaded.root), "model": name, "dead_fraction": dead, "aliasing": alias,
                     "conv1_stride": list(stride), "maps": chosen,
                     "image_ids": ids})
    png = draw_architecture_comparison(panels, out / "architectures.png")
    result = {
        "runs": rows, "png": png.name, "layer2": layer2,
        "definitions": {
            "dead_fraction": "fraction of layer-1 filters whose RMS is at most 10% of the layer's median filter RMS",
            "aliasing": "mean over the live (not dead) layer-1 filters of the share of their spectral energy "
                        "(|DTFT|^2 summed over input channels, integrated exactly) outside |fy|, |fx| <= "
                        "1/(2 stride) cycles/pixel, the Nyquist band of conv1's output grid",
        },
    }
    atomic_write_json(out / "architectures.json", result)
    return result
