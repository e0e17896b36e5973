"""The strongest activations of every feature map over a data set, and their deconvnet projections.

Zeiler & Fergus's Fig. 2 shows, for feature maps of each layer, the nine validation images whose
strongest activation in that map is largest, each projected to pixel space by the deconvnet beside
the image patch under its receptive field. :func:`top_activations` finds them in one streaming
pass over the model's traced graph (a running top-k per map, no activation stored, nothing
registered on the model; any layer the graph names) and
:func:`project_top_activations` computes the projections and patches, batched.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..data.loader import ImageStream
from ..distributed import DistContext
from ..graph import Graph, Window, crop, eval_mode, model_like, trace
from ..scan import Scan, Sums, model_fingerprint
from .deconvnet import KEEP_MODES, Deconvnet
from .receptive_field import receptive_fields

__all__ = ["TopK", "TopKProjections", "RunningTopK", "covering_pool", "top_activations", "search_top_activations",
           "clear_search_state", "project_top_activations", "resolve_layers",
           "layer_outputs"]


@dataclass(frozen=True)
class TopK:
    """The ``k`` strongest activations of every feature map of one layer.

    Attributes:
        layer: the layer's name.
        values: (C, k), per map the ``k`` largest per-image maxima, in descending order.
        image_index: (C, k) int64, the image each came from: its position in the iteration order
            over the data (0 for the first image of the first batch, counting on across batches).
        position: (C, k, 2) int64, (row, column) of that activation in the map; (0, 0) for a fully
            connected layer.

    With fewer than ``k`` images the missing entries have value ``-inf``, index ``-1`` and
    position ``(-1, -1)``. Among equal values the earlier image comes first.
    """

    layer: str
    values: torch.Tensor
    image_index: torch.Tensor
    position: torch.Tensor


@dataclass(frozen=True)
class TopKProjections:
    """Deconvnet projections of a layer's top activations and the image patches under them.

    Attributes:
        channels: (C',) the feature maps projected.
        projections: (C', k, C_in, H, W), each activation projected to pixel space.
        patches: (C', k, C_in, h, w), the image under each activation's receptive field: the
            whole field window (``h, w`` = the layer's field size, capped by nothing), cut from the
            image as if it were surrounded by zeros, so the activation sits at the same place in
            every patch; where the field reaches past the border the patch is zero.
        boxes: (C', k, 4) int64, the part of each field inside the image, ``(y0, x0, y1, x1)``
            half-open.

    Entries of :class:`TopK` padding (index -1) have zero projections and patches and boxes -1.
    """

    channels: torch.Tensor
    projections: torch.Tensor
    patches: torch.Tensor
    boxes: torch.Tensor


def covering_pool(graph: Graph, layer: int, upto: int, input_shape: Sequence[int]) -> int | None:
    """A max-pooling node, at most node ``upto``, that reads every position of node ``layer``'s maps.

    It must take the layer's output directly and its windows must cover every position (no gap between
    strides, none past the last row or column, no dilation), so that each map's maximum over the pooled
    output is exactly its maximum over the layer's. None where there is no such pooling.
    """
    layout = graph.layout(input_shape)
    shape = layout.shapes[layer]
    if layout.axes[layer] != (2, 3) or not isinstance(shape, (tuple, list)) or len(shape) != 3:
        return None
    for p in graph.nodes[layer].consumers:
        node = graph.nodes[p]
        if p > upto or node.op is None or node.op.kind != "maxpool" or node.inputs != (layer,):
            continue
        g, out = layout.geometry[p], layout.shapes[p]
        if g is None or g.dilation != (1, 1) or not isinstance(out, (tuple, list)) or len(out) != 3:
            continue
        # No gap between windows, and the last one reaches the last row (column).
        if all(g.kernel[a] >= g.stride[a] and (out[1 + a] - 1) * g.stride[a] - g.padding[a] + g.kernel[a]
               >= shape[1 + a] for a in (0, 1)):
            return p
    return None


#: A layer with (B, C) outputs is searched when this many of its images, at most, are set aside.
MERGE_IMAGES = 1024


class RunningTopK:
    """A layer's running top-k: per map, the k largest per-image maxima seen so far.

    Each entry carries one int64 key, ``image id * H * W + flat position``. A batch's maxima above
    a map's k-th value are set aside as candidates (with the position of each, read from the batch's
    output while it is at hand); once there are as many candidates as kept entries, they are merged
    in one sort of a (maps, k + candidates) table, so a batch costs a few whole-tensor operations
    whatever the number of maps. A (B, C) layer's outputs are set aside whole and searched at the
    merge, every time as many images as were merged before, at most :data:`MERGE_IMAGES`. Memory:
    about two entries per kept one, and that many (B, C) outputs. It is an accumulator of
    :class:`zfnet.scan.Scan`: its :meth:`state` is saved and gathered, and :meth:`combine` re-ranks
    the states of several disjoint passes into exactly the top-k of one pass over all their images
    (at equal values the smaller image id first, as in one pass in id order).

    Example:
        >>> top = RunningTopK("conv1", k=2)
        >>> top.update(torch.tensor([[[[1.0, 3.0]]], [[[2.0, 0.0]]]]), ids=torch.tensor([10, 11]))
        >>> top.result().image_index.tolist(), top.result().position.tolist()
        ([[10, 11]], [[[0, 1], [0, 0]]])
    """

    def __init__(self, name: str, k: int) -> None:
        self.name, self.k = name, k
        self._values: torch.Tensor | None = None  # (C, k), descending
        self._keys: torch.Tensor | None = None  # (C, k) int64, -1 for padding
        self.width = 1  # map width and area, to decode keys
        self.area = 1
        self._sized = False  # width and area are a batch's (not the defaults)
        # Set aside until the next merge, per batch: ((rows, maps, values) of the candidates, the batch's
        # first image id or its ids, their positions); a (B, C) layer's whole output and None instead.
        self._pending: list[tuple] = []
        self._pending_count = 0  # candidates, or images of a (B, C) layer
        self._merged = 0  # images merged so far

    @property
    def values(self) -> torch.Tensor | None:
        """(C, k) the kept maxima per map, descending; None before any image."""
        self._flush()
        return self._values

    @property
    def keys(self) -> torch.Tensor | None:
        """(C, k) int64 the kept entries' keys (-1 for padding); None before any image."""
        self._flush()
        return self._keys

    def update(self, out: torch.Tensor, first: int = 0, *, ids: torch.Tensor | None = None,
               pooled: torch.Tensor | None = None, switches: torch.Tensor | None = None) -> None:
        """Take one batch of the layer's outputs (B, C, H, W) or (B, C), its images numbered ``first``,
        ``first + 1`` ... (or ``ids``: (B,) int64, increasing along the pass).

        ``pooled``, ``switches``: the output and indices of a max-pooling of ``out`` whose windows cover
        every position (:func:`covering_pool`), where the model computes it anyway: the maps' maxima and
        their positions are then read from it, without a pass over ``out``.
        """
        if not isinstance(out, torch.Tensor):
            raise TypeError(f"{self.name} returns a {type(out).__name__}; top_activations needs a tensor")
        out = out.detach()
        if out.dim() not in (2, 4):
            raise ValueError(f"{self.name} outputs shape {tuple(out.shape)}; top_activations needs "
                             "(B, C, H, W) or (B, C)")
        if pooled is not None:
            pooled = pooled.detach()
            if switches is None or out.dim() != 4 or pooled.shape[:2] != out.shape[:2] or \
                    switches.shape != pooled.shape:
                raise ValueError(f"{self.name}: pooled maxima that do not belong to its output")
            best = pooled.amax(dim=(2, 3))
        else:
            best = out.amax(dim=(2, 3)) if out.dim() == 4 else out  # (B, C)
        b, c = best.shape
        if self._values is not None and len(self._values) != c:
            raise ValueError(f"{self.name} has {c} maps, but its running top-k (a saved state?) has "
                             f"{len(self._values)}")
        if self._values is None:
            self._values = best.new_full((c, self.k), float("-inf"))
            self._keys = torch.full((c, self.k), -1, dtype=torch.long, device=best.device)
        if out.dim() == 4:
            h, w = out.shape[2:]
            if self._sized and (w, h * w) != (self.width, self.area):
                raise ValueError(f"{self.name}'s maps changed size during the pass (now {h}x{w}); "
                                 "top_activations needs images of one size")
            self.width, self.area, self._sized = w, h * w, True
        image = first if ids is None else ids.to(device=best.device, dtype=torch.long)
        if out.dim() == 2:  # searched at the merge: nothing here has to wait for the next layers
            self._pending.append((best, image, None))
            self._pending_count += b
            if self._pending_count >= min(max(b, self._merged), MERGE_IMAGES):
                self._flush()
            return
        # Only maxima above a map's k-th value can enter its top k (at equal values the kept, earlier
        # entry wins). The k-th values are those of the last merge, a lower bound of the current
        # ones: the candidates include every entry that enters, and a few that the merge drops. Their
        # positions are read now, while the output is at hand; the rest waits for the merge, which runs
        # its operations one after another instead of between the model's layers.
        rows, cols = torch.nonzero(best > self._values[:, -1], as_tuple=True)  # by image: near in memory
        if not len(rows):
            return
        dense = 4 * len(rows) > b * c  # many candidates (the first batches): search every map at once
        if pooled is not None:
            # A window's switch is the first (row-major) position of its maximum; the first of the
            # map's maximum is the smallest switch among the windows that hold it.
            if dense:
                arg = torch.where(pooled == best[:, :, None, None], switches, self.area).amin((2, 3))[rows, cols]
            else:
                arg = torch.where(pooled[rows, cols].flatten(1) == best[rows, cols][:, None],
                                  switches[rows, cols].flatten(1), self.area).amin(1)
        elif dense:
            arg = out.reshape(b, c, self.area).max(2).indices if out.is_contiguous() else \
                out.permute(0, 2, 3, 1).reshape(b, self.area, c).max(1).indices
            arg = arg[rows, cols]
        else:
            arg = out[rows, cols].reshape(len(rows), -1).max(1).indices  # the first maximum
        self._pending.append(((rows, cols, best[rows, cols]), image, arg))
        self._pending_count += len(rows)
        if self._pending_count >= c * self.k:
            self._flush()

    def _flush(self) -> None:
        """Merge the candidates set aside into the kept entries: per map, the k largest values, at equal
        values the smaller key (the earlier image) first."""
        if not self._pending:
            return
        c, k = self._values.shape
        device = self._values.device
        if self._pending[0][2] is None:  # (B, C) outputs: searched now, all at once
            window = torch.cat([best for best, _, _ in self._pending])
            ids = torch.cat([torch.arange(image, image + len(best), device=device) if isinstance(image, int)
                             else image for best, image, _ in self._pending])
            self._merged += len(window)
            maps, rows = torch.nonzero(window.t() > self._values[:, -1:], as_tuple=True)  # by map, then image
            values, keys = window[rows, maps], ids[rows]
        else:  # candidates found by image, then map
            maps = torch.cat([cols for (_, cols, _), _, _ in self._pending])
            values = torch.cat([v for (_, _, v), _, _ in self._pending])
            keys = torch.cat([((rows + image) if isinstance(image, int) else image[rows]) * self.area + arg
                              for (rows, _, _), image, arg in self._pending])
            order = torch.sort(maps, stable=True).indices  # by map, then image
            maps, values, keys = maps[order], values[order], keys[order]
        self._pending, self._pending_count = [], 0
        if not len(maps):
            return
        # Per map one row: the kept entries, then its candidates in the order of their images (all later
        # than the kept ones'); a stable sort of each row by value ranks them as one pass would.
        counts = torch.bincount(maps, minlength=c)
        rank = torch.arange(len(maps), device=device) - (torch.cumsum(counts, 0) - counts)[maps] + k
        width = k + int(counts.max())
        table = torch.full((c, width), float("-inf"), dtype=values.dtype, device=device)
        table_keys = torch.full((c, width), -1, dtype=torch.long, device=device)
        table[:, :k], table_keys[:, :k] = self._values, self._keys
        table[maps, rank], table_keys[maps, rank] = values, keys
        order = torch.sort(table, dim=1, descending=True, stable=True).indices[:, :k]
        self._values, self._keys = table.gather(1, order), table_keys.gather(1, order)

    def state(self) -> dict[str, torch.Tensor]:
        """``values`` (C, k), ``keys`` (C, k) and ``geometry`` (width, area); ``{}`` before any image."""
        if self.values is None:
            return {}
        return {"values": self._values.cpu(), "keys": self._keys.cpu(),
                "geometry": torch.tensor([self.width, self.area], dtype=torch.long)}

    def load_state(self, state: dict[str, torch.Tensor]) -> None:
        """Continue from :meth:`state`'s output (checked: shapes, dtypes, key range)."""
        self._pending, self._pending_count, self._merged = [], 0, 0
        if not state:
            self._values = self._keys = None
            self._sized = False
            return
        values, keys, geometry = _checked_state(self.name, self.k, state)
        self._values, self._keys = values, keys
        self.width, self.area = int(geometry[0]), int(geometry[1])
        self._sized = bool((keys >= 0).any())

    def combine(self, states) -> None:
        """Become the top-k of the union of several disjoint passes' states (this one's among them)."""
        self._pending, self._pending_count, self._merged = [], 0, 0
        states = [_checked_state(self.name, self.k, s) for s in states if s]
        if not states:
            self._values = self._keys = None
            self._sized = False
            return
        geometry = {tuple(int(g) for g in s[2]) for s in states if bool((s[1] >= 0).any())}
        if len(geometry) > 1:
            raise ValueError(f"{self.name}'s maps had different sizes in different passes")
        shapes = {tuple(s[0].shape) for s in states}
        if len(shapes) > 1:
            raise ValueError(f"{self.name} has a different number of maps in different passes")
        values = torch.cat([s[0] for s in states], dim=1)
        keys = torch.cat([s[1] for s in states], dim=1)
        # The order of one pass in id order: by value, descending; at equal values, by image id.
        by_key = torch.sort(keys, dim=1, stable=True).indices
        values, keys = values.gather(1, by_key), keys.gather(1, by_key)
        order = torch.sort(values, dim=1, descending=True, stable=True).indices[:, :self.k]
        self._values, self._keys = values.gather(1, order), keys.gather(1, order)
        self.width, self.area = next(iter(geometry)) if geometry else (1, 1)
        self._sized = bool(geometry)

    def result(self) -> TopK:
        keys = self.keys
        valid = keys >= 0
        index = torch.where(valid, keys // self.area, -1)
        flat = keys % self.area
        position = torch.stack((flat // self.width, flat % self.width), dim=-1)
        position = position.masked_fill(~valid[..., None], -1)
        return TopK(self.name, self.values, index, position)


def _checked_state(name: str, k: int, state: dict[str, torch.Tensor]
                   ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    if set(state) != {"values", "keys", "geometry"}:
        raise ValueError(f"{name}: a top-k state holds values, keys and geometry, not {sorted(state)}")
    values, keys, geometry = state["values"], state["keys"], state["geometry"]
    if values.dim() != 2 or values.shape[1] != k or not values.is_floating_point():
        raise ValueError(f"{name}: top-k values of shape {tuple(values.shape)}, not (C, {k}) floats")
    if keys.shape != values.shape or keys.dtype != torch.long or bool((keys < -1).any()):
        raise ValueError(f"{name}: top-k keys that do not match the values")
    if geometry.shape != (2,) or geometry.dtype != torch.long or int(geometry[0]) < 1 or \
            int(geometry[1]) < int(geometry[0]):
        raise ValueError(f"{name}: a top-k geometry that is not (width, area)")
    return values, keys, geometry


def _images_of(batch: object) -> torch.Tensor:
    if isinstance(batch, torch.Tensor):
        return batch
    if isinstance(batch, (tuple, list)) and batch and isinstance(batch[0], torch.Tensor):
        return batch[0]
    raise TypeError("data must yield image tensors (B, C, H, W) or (images, labels) pairs, "
                    f"got a {type(batch).__name__}")


def resolve_layers(graph: Graph, layers: str | Sequence[str]) -> list[str]:
    """``layers`` as a list of distinct layer names of ``graph`` (order kept).

    Raises:
        ValueError: no layer, or a name the graph does not know (the message lists the valid names).
        TypeError: a name that is not a str.
    """
    names = [layers] if isinstance(layers, str) else list(dict.fromkeys(layers))
    if not names:
        raise ValueError("layers is empty; name at least one layer")
    for name in names:
        graph.index_of(name)
    return names


def layer_outputs(graph: Graph, images: torch.Tensor, names: Sequence[str]) -> dict[str, torch.Tensor]:
    """The outputs of the named layers for one batch, running the graph only as far as the deepest one."""
    index = {name: graph.index_of(name) for name in names}
    values = graph.run(images, upto=max(index.values()), keep=index.values())
    return {name: values[i] for name, i in index.items()}


class _Search:
    """One forward pass per batch through the traced graph, as far as the deepest layer, feeding each
    layer's running top-k (with the output of a max-pooling that reads the layer whole, where there is one)."""

    def __init__(self, graph: Graph, running: Sequence[RunningTopK]) -> None:
        self.graph = graph
        self.index = [graph.index_of(top.name) for top in running]
        self.upto = max(self.index)
        self.running = dict(zip(self.index, running, strict=True))
        self.pools: dict[tuple[int, ...], dict[int, int]] = {}  # per input shape: pooling node -> layer

    def __call__(self, images: torch.Tensor, first: int = 0, ids: torch.Tensor | None = None) -> None:
        shape = tuple(images.shape[1:])
        if shape not in self.pools:
            found = {i: covering_pool(self.graph, i, self.upto, shape) for i in self.index}
            self.pools[shape] = {p: i for i, p in found.items() if p is not None}
        pools = self.pools[shape]
        pooled = set(pools.values())
        waiting: dict[int, torch.Tensor] = {}  # layers whose pooling is still to come

        # Each layer is read as soon as the graph computes it (or its pooling), while it is in the cache,
        # and freed with the rest of the pass's values instead of being kept to the end.
        def visit(i: int, value: Any, switches: Any) -> None:
            if i in self.running:
                if i in pooled:
                    waiting[i] = value
                else:
                    self.running[i].update(value, first, ids=ids)
            if i in pools:
                layer = pools[i]
                self.running[layer].update(waiting.pop(layer), first, ids=ids, pooled=value, switches=switches)

        self.graph.run(images, upto=self.upto, visit=visit, record=pools)


def top_activations(model: nn.Module, data: Iterable[torch.Tensor] | Iterable[Sequence[torch.Tensor]],
                    layers: str | Sequence[str], k: int = 9) -> dict[str, TopK]:
    """The ``k`` images with the strongest activation in each feature map of each layer.

    One pass over ``data`` in eval mode under ``torch.no_grad`` (each module's training flag is
    restored afterwards), through the model's traced graph (:func:`zfnet.graph.trace`) up to the
    deepest layer asked for; per feature map a running top-k of the per-image maxima (one entry per
    image, with the position of its maximum). Nothing is registered on the model. Memory:
    O(layers x channels x k).

    Args:
        model: any CNN :func:`zfnet.graph.trace` can trace; images are moved to the device and dtype
            of its parameters.
        data: an iterable of image batches (B, C, H, W) or of ``(images, labels)`` batches, such as
            a ``DataLoader``.
        layers: one layer name (``"conv5"``, ``"features.12"``, ``"layer3.1"``) or several (see
            :attr:`zfnet.graph.Graph.layer_names`).
        k: how many images to keep per feature map.

    Returns:
        ``{layer: TopK}``; see :class:`TopK` for the shapes and the padding when there are
        fewer than ``k`` images.

    Raises:
        ValueError: an unknown layer name (the message lists the valid ones), ``k < 1``, or
            ``data`` without any image.

    Shape:
        values (C, k), image_index (C, k), position (C, k, 2) per layer.

    Example:
        >>> import torch
        >>> from zfnet.models import build
        >>> net = build("zfnet-tiny", num_classes=5)
        >>> batches = [torch.randn(4, 3, 64, 64) for _ in range(3)]
        >>> top = top_activations(net, batches, ["conv1", "fc6"], k=9)
        >>> top["conv1"].values.shape, top["fc6"].position.shape
        (torch.Size([16, 9]), torch.Size([128, 9, 2]))
    """
    if not isinstance(model, (nn.Module, Graph)):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    if isinstance(k, bool) or not isinstance(k, int) or k < 1:
        raise ValueError(f"k must be a positive int, got {k!r}")
    graph = model if isinstance(model, Graph) else trace(model)
    names = resolve_layers(graph, layers)
    running = {name: RunningTopK(name, k) for name in names}
    search = _Search(graph, list(running.values()))
    like = model_like(graph.model)
    seen = 0
    with eval_mode(graph.model), torch.no_grad():
        for batch in data:
            images = _images_of(batch)
            if like is not None:
                images = images.to(device=like.device, dtype=like.dtype)
            search(images, seen)
            seen += len(images)
    result = {}
    for name, top in running.items():
        if top.values is None:  # no image at all: the width is unknown
            raise ValueError("data yielded no images")
        result[name] = top.result()
    return result


def search_top_activations(model: nn.Module, stream: ImageStream, indices: Sequence[int],
                           inputs: Callable[[torch.Tensor], torch.Tensor], layers: str | Sequence[str], k: int = 9, *,
                           batch_size: int = 32, ctx: DistContext | None = None, state_dir: str | Path | None = None,
                           fingerprint: Any = None, show_progress: bool = True) -> tuple[dict[str, TopK], int]:
    """:func:`top_activations` over a data set's images, sharded over ``torchrun`` ranks and resumable.

    The pass is a :class:`zfnet.scan.Scan`: under ``torchrun`` each rank reads its share of the
    batches and the running top-k of every rank are combined, so that every rank gets exactly the
    result of one process; with ``state_dir`` the running state is saved there every few minutes
    and a re-run with the same arguments continues from it.

    Args:
        model: any CNN :func:`zfnet.graph.trace` can trace (its device and dtype are used).
        stream: the data set's images (uint8 at the base size).
        indices: the data set indices searched, in this order.
        inputs: uint8 pixels (B, 3, S, S), already on the model's device -> the model's input (normalised,
            cropped).
        layers: one layer name or several.
        k: images kept per feature map.
        batch_size: images per forward pass (and per chunk of the shards).
        ctx: this process's place in a ``torchrun`` job (default: one process).
        state_dir: where the running state is saved (None: not saved).
        fingerprint: anything else the result depends on (say, the normalisation): a saved state is
            continued only when it matches, and the model's weights are always part of it.
        show_progress: a progress bar with images/s and the time left.

    Returns:
        ``({layer: TopK}, the number of images read)``: image indices are data set indices, and ties
        go to the image earlier in ``indices``.

    Raises:
        ValueError: an unknown layer, ``k < 1``, or no readable image.
    """
    if isinstance(k, bool) or not isinstance(k, int) or k < 1:
        raise ValueError(f"k must be a positive int, got {k!r}")
    graph = trace(model)
    names = resolve_layers(graph, layers)
    like = model_like(model)
    running = [RunningTopK(name, k) for name in names]
    search = _Search(graph, running)
    count = Sums(images=0.0)
    # The weights' digest (a pass over every parameter) only where a saved state is to be matched.
    scan = Scan(indices, batch_size, ctx=ctx, state_dir=state_dir, name="top-activations",
                fingerprint=None if state_dir is None else [model_fingerprint(model), fingerprint, names, k])

    def consume(batch, positions: torch.Tensor) -> None:
        pixels = batch.images
        if like is not None and pixels.device != like.device:
            pixels = pixels.to(like.device, non_blocking=True)  # uint8 until the crop: 4x fewer bytes to copy
        x = inputs(pixels)
        if like is not None:
            x = x.to(device=like.device, dtype=like.dtype, non_blocking=True)
        search(x, ids=positions)
        count.add(images=len(positions))

    with eval_mode(model), torch.no_grad():
        scan.run(stream, consume, [*running, count], show_progress=show_progress, desc="top activations")
    read = int(count.totals["images"])
    if read == 0:
        raise ValueError("none of the images could be read")
    order = torch.tensor(scan.indices, dtype=torch.long)
    result = {}
    for top in running:
        found = top.result()  # image ids: positions in the list of indices
        if bool((found.image_index >= len(order)).any()):
            raise ValueError(f"the saved search state in {state_dir} holds images outside this pass: it is "
                             "damaged or was not written by zfnet; remove it and run again")
        ids = torch.where(found.image_index >= 0, order[found.image_index.clamp(min=0)], -1)
        result[top.name] = TopK(found.layer, found.values, ids, found.position)
    return result, read


def clear_search_state(state_dir: str | Path, ctx: DistContext | None = None) -> None:
    """Remove this rank's saved state of :func:`search_top_activations` (once its results are written)."""
    Scan([], 1, ctx=ctx, state_dir=state_dir, name="top-activations").clear()


def project_top_activations(model: nn.Module | Deconvnet, top: TopK,
                            images: torch.Tensor | Callable[[int], torch.Tensor], *, keep: str = "max",
                            channels: Sequence[int] | torch.Tensor | None = None) -> TopKProjections:
    """Deconvnet projections of a layer's top activations, with the image patches under them.

    Each distinct image is fetched once. With ``keep="max"`` each projection is that of the
    activation :func:`top_activations` found (its position is given, so the deconvnet works inside
    its receptive field only); ``keep="map"`` projects the whole feature map of that image.

    Args:
        model: the model :func:`top_activations` ran (or a :class:`~zfnet.visualize.deconvnet.Deconvnet` of it).
        top: one layer's :class:`TopK`.
        images: the images in the iteration order of that pass: a tensor (N, C, H, W), or a
            callable taking an image index and returning a (C, H, W) tensor (e.g. a data set's
            ``lambda i: dataset[i][0]``).
        keep: ``"max"`` or ``"map"`` (see :meth:`Deconvnet.project`).
        channels: the feature maps to project; default all (mind the memory: C x k images).

    Returns:
        A :class:`TopKProjections`.

    Shape:
        projections (C', k, C_in, H, W); patches (C', k, C_in, h, w); boxes (C', k, 4).

    Example:
        >>> import torch
        >>> from zfnet.models import build
        >>> net = build("zfnet-tiny", num_classes=5)
        >>> data = torch.randn(12, 3, 64, 64)
        >>> top = top_activations(net, data.split(4), "conv2", k=4)["conv2"]
        >>> out = project_top_activations(net, top, data, channels=[0, 5])
        >>> out.projections.shape, out.patches.shape
        (torch.Size([2, 4, 3, 64, 64]), torch.Size([2, 4, 3, 27, 27]))
    """
    deconv = model if isinstance(model, Deconvnet) else Deconvnet(model)
    if not isinstance(top, TopK):
        raise TypeError(f"top must be a TopK (from top_activations), got {type(top).__name__}")
    if keep not in KEEP_MODES:
        raise ValueError(f"keep must be one of {', '.join(KEEP_MODES)}, got {keep!r}")
    deconv.graph.index_of(top.layer)
    c_all, k = top.values.shape
    chans = torch.arange(c_all) if channels is None else torch.as_tensor(channels).long().flatten()
    if len(chans) and (int(chans.min()) < 0 or int(chans.max()) >= c_all):
        raise ValueError(f"channels must lie in [0, {c_all}) for {top.layer}, got {chans.tolist()}")
    index = top.image_index[chans.to(top.image_index.device)].cpu()  # (C', k)
    position = top.position[chans.to(top.position.device)].cpu()
    valid = index >= 0
    unique, rows = torch.unique(index[valid], return_inverse=True)
    x = _fetch(images, unique.tolist(), model_like(deconv.model))
    n_chan = len(chans)
    entry_chan = chans[:, None].expand(n_chan, k)[valid]
    entry_pos = position[valid]
    c_in, h, w = (x.shape[1:] if len(x) else _shape_of(images))
    rf = receptive_fields(deconv, (h, w), in_channels=c_in)[top.layer]
    projections = torch.zeros((n_chan, k, c_in, h, w), dtype=x.dtype, device=x.device)
    patches = torch.zeros((n_chan, k, c_in, *rf.size), dtype=x.dtype, device=x.device)
    boxes = torch.full((n_chan, k, 4), -1, dtype=torch.long)
    if len(rows):
        rows, entry_chan, entry_pos = rows.to(x.device), entry_chan.to(x.device), entry_pos.to(x.device)
        projections[valid.to(x.device)] = deconv.project(
            x, top.layer, entry_chan, keep, positions=entry_pos if keep == "max" else None, image_index=rows)
        windows = rf.windows(entry_pos)  # (N, 4) unclipped
        field = Window(windows[:, :2], rf.size, (h, w))
        patches[valid.to(x.device)] = crop(x, rows, field, 0.0)
        limit = torch.tensor([h, w, h, w], device=windows.device)
        boxes[valid] = torch.minimum(windows.clamp(min=0), limit).cpu()
    return TopKProjections(chans, projections, patches, boxes)


def _shape_of(images: torch.Tensor | Callable[[int], torch.Tensor]) -> tuple[int, int, int]:
    if isinstance(images, torch.Tensor):
        return tuple(images.shape[1:])  # type: ignore[return-value]
    raise ValueError("top has no images to project (every index is -1) and images is a callable: "
                     "the image size is unknown")


def _fetch(images: torch.Tensor | Callable[[int], torch.Tensor], index: list[int],
           like: torch.Tensor | None) -> torch.Tensor:
    """The images at ``index`` as one (U, C, H, W) tensor on the model's device."""
    if isinstance(images, torch.Tensor):
        if images.dim() != 4:
            raise ValueError(f"images must be (N, C, H, W), got shape {tuple(images.shape)}")
        if index and max(index) >= len(images):
            raise ValueError(f"image index {max(index)} out of range for {len(images)} images")
        x = images[torch.tensor(index, dtype=torch.long, device=images.device)]
    elif callable(images):
        fetched = [images(i) for i in index]
        for i, t in zip(index, fetched):
            if not isinstance(t, torch.Tensor) or t.dim() != 3:
                raise TypeError(f"images({i}) must return a (C, H, W) tensor, got "
                                f"{tuple(t.shape) if isinstance(t, torch.Tensor) else type(t).__name__}")
        x = torch.stack(fetched) if fetched else torch.zeros(0)
    else:
        raise TypeError(f"images must be a tensor or a callable, got {type(images).__name__}")
    if like is not None and len(x):
        x = x.to(device=like.device, dtype=like.dtype)
    return x
