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
from ..models.speed import prepare_for_speed
from ..progress import progress

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


def _store(store: dict[str, torch.Tensor], name: str, feats: torch.Tensor, indices: torch.Tensor, n: int) -> None:
    """Copy a batch's features (B, ...) into rows ``indices`` of the (n, D) matrix of ``name``, in (C, H, W) order."""
    b = feats.shape[0]
    if name not in store:
        store[name] = torch.empty(n, feats[0].numel(), dtype=torch.float32)
    first = int(indices[0]) if b else 0
    if b and int(indices[-1]) - first + 1 == b:
        # Consecutive rows (the usual case): one copy from the model's layout into the rows, no temporary.
        store[name][first:first + b].view(feats.shape).copy_(feats)
    else:
        store[name][indices] = feats.reshape(b, -1).to("cpu", torch.float32)


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
                     batch_size: int = 64, cache_dir: str | Path | None = None,
                     show_progress: bool = True) -> FeatureSet:
    """The features of ``layers`` for every readable image of ``stream``, from the cache where it holds them.

    Args:
        model: a ZFNet-family network (an ``nn.Sequential`` with ``conv1`` ... ``fc7`` children) or any
            other (layers named by module path, e.g. ``layer4``); it is put in evaluation mode and its
            fast inference form, in place. Its device is used.
        stream: the images (uint8 at the base size of the normalisation's mean image).
        normalization: how pixels become the model's input (a run's
            :attr:`~zfnet.train.checkpoint.LoadedRun.normalization`).
        input_size: the model's crop side.
        layers: which layers: an ``nn.Sequential``'s children, another model's submodules (default:
            conv1 ... conv5, fc6, fc7).
        grid: conv maps are pooled to ``grid x grid`` (a smaller map keeps its size).
        pool: ``"avg"`` or ``"max"`` pooling of the conv maps.
        batch_size: images per forward pass.
        cache_dir: folder of the per-layer cache files (None: no cache).
        show_progress: a progress bar with throughput.

    Returns:
        A :class:`FeatureSet` with float32 features on the CPU.

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
    todo = [n for n in layers if n not in found]
    if todo:
        computed, new_indices, new_labels = _extract(model, stream, normalization, input_size, todo, grid, pool,
                                                      batch_size, show_progress)
        if indices is not None and not torch.equal(indices, new_indices):
            # Readability changed since the cache was written: recompute every layer alike.
            computed, new_indices, new_labels = _extract(model, stream, normalization, input_size, layers, grid,
                                                          pool, batch_size, show_progress)
            found = {}
        indices, labels = new_indices, new_labels
        for layer, feats in computed.items():
            found[layer] = feats
            if cache is not None:
                tensors = {"features": feats.contiguous(), "indices": indices, "labels": labels}
                meta = {"fingerprint": fingerprint, "layer": layer, "grid": str(grid), "pool": pool}
                atomic_write(_cache_path(cache, layer),
                             lambda tmp, t=tensors, m=meta: save_file(t, str(tmp), metadata=m))
    elif show_progress:
        log.info("features of %s read from %s", ", ".join(layers), cache)
    assert indices is not None and labels is not None
    return FeatureSet({n: found[n] for n in layers}, indices, labels, int(grid), pool, fingerprint)


def _extract(model: nn.Module, stream: ImageStream, normalization: Normalization, input_size: int,
             layers: list[str], grid: int, pool: str, batch_size: int, show_progress: bool):
    params = next(model.parameters(), None)
    device = params.device if params is not None else torch.device("cpu")
    prepare_for_speed(model, train=False)
    channels_last = device.type in ("cpu", "cuda")
    normalize = normalization.to(device)
    n = len(stream)
    wanted = set(layers)
    last = layers[-1]
    store: dict[str, torch.Tensor] = {}
    seen = torch.zeros(n, dtype=torch.bool)
    all_labels = torch.zeros(n, dtype=torch.long)
    bar = progress(total=n, desc=f"features ({', '.join(layers)})", unit="img", enabled=show_progress)
    current: list[torch.Tensor] = []  # the batch's indices, for the hooks

    def hook_for(name: str):
        def hook(_module: nn.Module, _inputs, output) -> None:
            if not isinstance(output, torch.Tensor) or output.dim() not in (2, 4):
                got = f"shape {tuple(output.shape)}" if isinstance(output, torch.Tensor) else type(output).__name__
                raise ValueError(f"layer {name} outputs {got}; features need (B, D) or (B, C, H, W)")
            _store(store, name, _pooled(output, grid, pool), current[0], n)
        return hook

    sequential = isinstance(model, nn.Sequential)
    modules = dict(model.named_modules())
    handles = [] if sequential else [modules[name].register_forward_hook(hook_for(name)) for name in layers]
    try:
        with bar, torch.inference_mode():
            for batch in stream.batches(range(n), batch_size):
                x = center_crop(normalize(batch.images.to(device, non_blocking=True)), input_size).contiguous(
                    memory_format=torch.channels_last if channels_last else torch.contiguous_format)
                if sequential:
                    for name, module in model.named_children():
                        x = module(x)
                        if name in wanted:
                            _store(store, name, _pooled(x, grid, pool), batch.indices, n)
                        if name == last:
                            break
                else:
                    current[:] = [batch.indices]
                    model(x)
                seen[batch.indices] = True
                all_labels[batch.indices] = batch.labels
                bar.update(len(batch.indices) + len(batch.bad))
    finally:
        for handle in handles:
            handle.remove()
    indices = seen.nonzero().flatten()
    if len(indices) == 0:
        raise ValueError("no readable images to extract features from")
    return {name: store[name][indices] for name in layers}, indices, all_labels[indices]
