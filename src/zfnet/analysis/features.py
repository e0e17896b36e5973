"""Per-layer features of a trained network, extracted once per image and layer and cached on disk.

The transfer and probe experiments (Zeiler & Fergus 2014, §5.2, Tables 4-7) read a trained network's
layers as fixed features: fc7 for the new softmax of Tables 4-6, each of conv1 ... conv5, fc6, fc7 for
the layer-wise classifiers of Table 7. Each layer's feature of an image is the rectified output of
that layer (the ``conv1`` ... ``fc7`` children of a :class:`~zfnet.models.ConvNet`, or any submodule
of another model, by its module path) on the image's centre crop, normalised as the model expects
(:class:`~zfnet.data.transforms.Normalization`: minus the training mean image for a zfnet run). A
convolutional layer's maps are average-pooled to a fixed ``grid x grid`` (4 x 4 by default; a map
smaller than the grid keeps its own size), so conv1 of ZFNet gives 96 x 16 = 1536 numbers per image,
conv5 256 x 16 = 4096, and fc6, fc7 4096 each.

One forward pass computes every requested layer (for an ``nn.Sequential``, stopping after the deepest
one; for another model, through forward hooks removed after the pass), in the model's fast
inference form (:func:`~zfnet.models.speed.prepare_for_speed`); pooling and copying the features
costs a few percent of the pass (``benchmarks/feature_extraction.py``). Each layer's features are
written to ``CACHE/<layer>.safetensors`` with a fingerprint of the weights, the normalisation, the image
files and the pooling, and read back instead of recomputed while the fingerprint matches.

The pass is a :class:`~zfnet.scan.Scan`: under ``torchrun`` each process computes its share of the
images (chunks of ``batch_size``, each computed together whichever process reads it) and every
process ends with all the rows, in the data set's order, the same as one process's; rank 0
alone writes the cache files. The running state is saved in the cache folder as it goes, so a pass
killed part-way continues where it was when the same call is made again.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file
from torch import nn

from .._io import atomic_write
from ..data.loader import ImageStream
from ..data.transforms import Normalization, center_crop
from ..distributed import DistContext
from ..models.speed import prepare_for_speed
from ..scan import Rows, Scan

__all__ = ["FEATURE_LAYERS", "FeatureSet", "extract_features", "feature_fingerprint", "POOLS"]

log = logging.getLogger("zfnet")

FEATURE_LAYERS: tuple[str, ...] = ("conv1", "conv2", "conv3", "conv4", "conv5", "fc6", "fc7")
POOLS = ("avg", "max")
_CACHE_FORMAT = "zfnet-features-v1"


@dataclass
class FeatureSet:
    """Features of the readable images of a data set, one (M, D_layer) float32 matrix per layer.

    Attributes:
        layers: layer name -> (M, D) features; row ``r`` belongs to image ``indices[r]``.
        indices: (M,) int64, the data set indices of the rows, ascending.
        labels: (M,) int64, the images' labels.
        grid: side of the grid conv maps were pooled to.
        pool: ``"avg"`` or ``"max"``.
        fingerprint: :func:`feature_fingerprint` of the weights, normalisation, images and pooling ("" when
            extracted without a cache).
    """

    layers: dict[str, torch.Tensor]
    indices: torch.Tensor
    labels: torch.Tensor
    grid: int
    pool: str
    fingerprint: str = ""

    def rows(self, dataset_indices: Sequence[int] | np.ndarray | torch.Tensor) -> torch.Tensor:
        """Row positions of the given data set indices (each must be a readable image)."""
        wanted = torch.as_tensor(np.asarray(dataset_indices), dtype=torch.long)
        pos = torch.searchsorted(self.indices, wanted)
        ok = (pos < len(self.indices)) & (self.indices[pos.clamp(max=len(self.indices) - 1)] == wanted)
        if not bool(ok.all()):
            raise ValueError(f"image {int(wanted[~ok][0])} has no features (unreadable or not extracted)")
        return pos

    def take(self, layer: str, dataset_indices: Sequence[int] | np.ndarray | torch.Tensor) -> torch.Tensor:
        """The features of ``layer`` for the given data set indices, (len, D)."""
        if layer not in self.layers:
            raise ValueError(f"no features of layer {layer!r}; extracted: {', '.join(self.layers)}")
        return self.layers[layer][self.rows(dataset_indices)]


def feature_fingerprint(model: nn.Module, stream: ImageStream, normalization: Normalization, *, input_size: int,
                        grid: int, pool: str) -> str:
    """A hex digest naming what a layer's cached features depend on.

    The weights, the normalisation, the image files (paths, sizes, modification times, labels), the base
    and crop sizes and the pooling: change any and cached features are recomputed.
    """
    h = hashlib.sha256()
    h.update(json.dumps({"format": _CACHE_FORMAT, "input": int(input_size), "grid": int(grid), "pool": pool,
                         "base": stream.dataset.size, "model": type(model).__name__}).encode())
    for name, tensor in sorted(model.state_dict().items()):
        h.update(name.encode())
        h.update(tensor.detach().to("cpu").contiguous().numpy().tobytes())
    h.update(normalization.mean.detach().to("cpu", torch.float32).contiguous().numpy().tobytes())
    if normalization.std is not None:  # a zfnet run's fingerprint is what it was before there was a std
        h.update(b"std" + normalization.std.detach().to("cpu", torch.float32).contiguous().numpy().tobytes())
    for path, label in stream.dataset.samples:
        try:
            st = path.stat()
            stamp = f"{st.st_size}:{st.st_mtime_ns}"
        except OSError:
            stamp = "missing"
        h.update(f"{path}|{label}|{stamp}\n".encode())
    return h.hexdigest()


def _layer_names(model: nn.Module) -> list[str]:
    """The names features can be read at: an ``nn.Sequential``'s children, else every submodule's path."""
    if isinstance(model, nn.Sequential):
        return [n for n, _ in model.named_children()]
    return [n for n, _ in model.named_modules() if n]


def _check_layers(model: nn.Module, layers: Sequence[str]) -> list[str]:
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be an nn.Module, got {type(model).__name__}")
    names = _layer_names(model)
    layers = list(dict.fromkeys(layers))
    bad = [n for n in layers if n not in names]
    if bad:
        shown = ", ".join(names[:40]) + (f", ... ({len(names)} in all)" if len(names) > 40 else "")
        raise ValueError(f"the model has no layer {bad[0]!r}; its layers: {shown}")
    if not layers:
        raise ValueError("no layers to extract")
    return sorted(layers, key=names.index)


def _pooled(x: torch.Tensor, grid: int, pool: str) -> torch.Tensor:
    """A (B, C, H, W) map pooled to (B, C, g, g) with g = min(grid, H, W) (unchanged when g is its size);
    flat input unchanged."""
    if x.dim() == 2 or (x.shape[-2] <= grid and x.shape[-1] <= grid):
        return x
    g = (min(grid, x.shape[-2]), min(grid, x.shape[-1]))
    return F.adaptive_avg_pool2d(x, g) if pool == "avg" else F.adaptive_max_pool2d(x, g)


def _cache_path(cache_dir: Path, layer: str) -> Path:
    return cache_dir / f"{layer}.safetensors"


def _load_cached(path: Path, fingerprint: str) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None:
    if not path.is_file():
        return None
    try:
        with safe_open(str(path), framework="pt") as f:
            if (f.metadata() or {}).get("fingerprint") != fingerprint:
                return None
            return f.get_tensor("features"), f.get_tensor("indices"), f.get_tensor("labels")
    except (SafetensorError, OSError, KeyError, ValueError):
        log.warning("ignored unreadable feature cache %s", path)
        return None


@torch.no_grad()
def extract_features(model: nn.Module, stream: ImageStream, normalization: Normalization, *, input_size: int,
                     layers: Sequence[str] = FEATURE_LAYERS, grid: int = 4, pool: str = "avg",
                     batch_size: int = 64, cache_dir: str | Path | None = None, ctx: DistContext | None = None,
                     show_progress: bool = True) -> FeatureSet:
    """The features of ``layers`` for every readable image of ``stream``, from the cache where it holds them.

    Args:
        model: a ZFNet-family network (an ``nn.Sequential`` with ``conv1`` ... ``fc7`` children) or any
            other (layers named by module path, e.g. ``layer4``); it is put in evaluation mode and its
            fast inference form, in place. Its device is used.
        stream: the images (uint8 at the base size of the normalisation's mean image).
        normalization: how pixels become the model's input (a run's
            :attr:`~zfnet.train.run.LoadedRun.normalization`).
        input_size: the model's crop side.
        layers: which layers: an ``nn.Sequential``'s children, another model's submodules (default:
            conv1 ... conv5, fc6, fc7).
        grid: conv maps are pooled to ``grid x grid`` (a smaller map keeps its size).
        pool: ``"avg"`` or ``"max"`` pooling of the conv maps.
        batch_size: images per forward pass.
        cache_dir: folder of the per-layer cache files, and of the pass's saved state while it runs
            (None: no cache, nothing saved).
        ctx: this process's place in a ``torchrun`` job (default one process): each process computes
            its share of the images and gets every row; rank 0 alone writes the cache. A layer is read
            from the cache only where every process finds it (so processes that do not share the cache
            folder, on machines without a shared file system, compute it again).
        show_progress: a progress bar with throughput.

    Returns:
        A :class:`FeatureSet` with float32 features on the CPU (on every process of a ``torchrun`` job).

    Example:
        >>> from zfnet.models import build
        >>> from zfnet.data import ImageStream, open_dataset
        >>> stream = ImageStream(open_dataset("data/synth", "val", 73), workers=0)  # doctest: +SKIP
        >>> fs = extract_features(build("zfnet-tiny", num_classes=10), stream,
        ...                       Normalization(torch.zeros(3, 73, 73)), input_size=64,
        ...                       layers=("conv5", "fc7"))  # doctest: +SKIP
        >>> fs.layers["conv5"].shape[1]  # doctest: +SKIP
        512
    """
    if pool not in POOLS:
        raise ValueError(f"unknown pooling {pool!r}; valid: {', '.join(POOLS)}")
    if int(grid) != grid or grid < 1:
        raise ValueError(f"grid must be a positive integer, got {grid!r}")
    layers = _check_layers(model, layers)
    ctx = ctx or DistContext()
    cache = Path(cache_dir) if cache_dir is not None else None
    # The fingerprint hashes every weight: computed only for a cache (the experiments always have one).
    fingerprint = feature_fingerprint(model, stream, normalization, input_size=input_size, grid=grid, pool=pool) \
        if cache is not None else ""
    found: dict[str, torch.Tensor] = {}
    indices = labels = None
    if cache is not None:
        for layer in layers:
            hit = _load_cached(_cache_path(cache, layer), fingerprint)
            if hit is not None and (indices is None or torch.equal(hit[1], indices)):
                found[layer], indices, labels = hit
    # Every process computes the same layers (the scan's collectives pair them up): a layer is read from
    # the cache only where every process found it there.
    missing = ctx.all_reduce_sum(torch.tensor([float(n not in found) for n in layers]))
    todo = [n for n, m in zip(layers, missing.tolist()) if m > 0]
    if todo:
        pass_args = (grid, pool, batch_size, show_progress and ctx.is_main, ctx, fingerprint if cache else None,
                     cache)
        computed, new_indices, new_labels, scan = _extract(model, stream, normalization, input_size, todo,
                                                           *pass_args)
        if ctx.any(indices is not None and not torch.equal(indices, new_indices)):
            # Readability changed since the cache was written: recompute every layer alike.
            scan.clear()  # a pass of other layers: its state would not fit the next one
            computed, new_indices, new_labels, scan = _extract(model, stream, normalization, input_size, layers,
                                                               *pass_args)
            found = {}
        indices, labels = new_indices, new_labels
        for layer, feats in computed.items():
            found[layer] = feats
            if cache is not None and ctx.is_main:  # rank 0 alone writes
                tensors = {"features": feats.contiguous(), "indices": indices, "labels": labels}
                meta = {"fingerprint": fingerprint, "layer": layer, "grid": str(grid), "pool": pool}
                atomic_write(_cache_path(cache, layer),
                             lambda tmp, t=tensors, m=meta: save_file(t, str(tmp), metadata=m))
        ctx.barrier()  # the cache is written: every process's saved pass has served
        scan.clear()
    elif show_progress and ctx.is_main:
        log.info("features of %s read from %s", ", ".join(layers), cache)
    assert indices is not None and labels is not None
    return FeatureSet({n: found[n] for n in layers}, indices, labels, int(grid), pool, fingerprint)


def _extract(model: nn.Module, stream: ImageStream, normalization: Normalization, input_size: int,
             layers: list[str], grid: int, pool: str, batch_size: int, show_progress: bool, ctx: DistContext,
             fingerprint: str | None, state_dir: Path | None):
    """One pass over every image of ``stream``: ``({layer: (M, D)}, indices (M,), labels (M,), its Scan)``.

    The images are read in chunks of ``batch_size`` (:class:`~zfnet.scan.Scan`), this process's share of
    them under ``torchrun``; the rows of every process come back in the data set's order.
    """
    params = next(model.parameters(), None)
    device = params.device if params is not None else torch.device("cpu")
    prepare_for_speed(model, train=False)
    channels_last = device.type in ("cpu", "cuda")
    normalize = normalization.to(device)
    wanted = set(layers)
    last = layers[-1]
    # One accumulator per layer: gathered and put in order one layer at a time, so that a job holds at
    # most one layer's extra copies at once.
    rows = {name: Rows() for name in layers}
    labels = Rows()
    caught: dict[str, torch.Tensor] = {}  # the hooks' outputs of the current batch

    def hook_for(name: str):
        def hook(_module: nn.Module, _inputs, output) -> None:
            if not isinstance(output, torch.Tensor) or output.dim() not in (2, 4):
                got = f"shape {tuple(output.shape)}" if isinstance(output, torch.Tensor) else type(output).__name__
                raise ValueError(f"layer {name} outputs {got}; features need (B, D) or (B, C, H, W)")
            caught[name] = _flat(_pooled(output, grid, pool))
        return hook

    def consume(batch, positions: torch.Tensor) -> None:
        x = center_crop(normalize(batch.images.to(device, non_blocking=True)), input_size).contiguous(
            memory_format=torch.channels_last if channels_last else torch.contiguous_format)
        caught.clear()
        with torch.inference_mode():
            if sequential:
                for name, module in model.named_children():
                    x = module(x)
                    if name in wanted:
                        caught[name] = _flat(_pooled(x, grid, pool))
                    if name == last:
                        break
            else:
                model(x)
        for name in layers:
            rows[name].add(positions, features=caught[name])
        labels.add(positions, label=batch.labels)

    sequential = isinstance(model, nn.Sequential)
    modules = dict(model.named_modules())
    scan = Scan(range(len(stream)), batch_size, ctx=ctx, state_dir=state_dir, name="features",
                fingerprint=[fingerprint, layers])
    handles = [] if sequential else [modules[name].register_forward_hook(hook_for(name)) for name in layers]
    try:
        scan.run(stream, consume, [labels, *rows.values()], show_progress=show_progress,
                 desc=f"features ({', '.join(layers)})")
    finally:
        for handle in handles:
            handle.remove()
    read = labels.result()
    if not read:
        raise ValueError("no readable images to extract features from")
    # Each layer's rows in order, its accumulator released before the next (a copy of one layer at a time).
    features = {name: rows.pop(name).result()["features"] for name in layers}
    # The scan's indices are the data set's, in order: an image's position is its data set index.
    return features, read["position"], read["label"], scan


def _flat(feats: torch.Tensor) -> torch.Tensor:
    """A batch's features (B, ...) as float32 rows (B, D) on the CPU, in (C, H, W) order whatever the layout.

    Always a copy: a later module may change its input in place (an in-place ReLU after a hooked layer).
    """
    return feats.reshape(feats.shape[0], -1).to("cpu", torch.float32, copy=True)
