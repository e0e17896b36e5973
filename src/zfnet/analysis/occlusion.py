"""Occlusion sensitivity (Zeiler & Fergus 2014, §4.2, Fig. 7), computed exactly and incrementally.

A grey square (the mean pixel, 0 after mean subtraction) slides over the image; at each position the
network's output is recorded. The paper shows four panels beside the input: (b) the total activation
of the feature map of a chosen layer (conv5) that responds most strongly to the clean image, (c) that
map's deconvnet projection, (d) the probability of the true class and (e) the most probable class,
each as a function of the occluder's position.

One full forward pass per position wastes most of its work: the occluder changes only the part of
each layer that it can reach (its *projective field*, given by every stage's kernel, stride and
padding), and that part is small in the early, expensive layers. Following the idea of Krypton
(Nakandala et al., SIGMOD 2019), :func:`occlusion` keeps every layer's activations of the clean image
and, for a batch of occluder positions at once, recomputes only the changed rectangle of each layer
from the clean activations around it. The first fully connected layer is updated incrementally when
the changed part of its input is small (``W x' = W x + W[:, changed] (x' - x)[changed]``); from the
first stage it cannot reason about (an adaptive pooling, say) it falls back to full computation.
The result equals one full forward pass per position up to floating-point rounding.

Two optional approximate modes measure their own error, the SSIM of their probability map against the
exact one (:func:`ssim`): ``"approximate"`` caps the projective field at a fraction of each map, as
Krypton's approximate inference does; ``"coarse"`` computes every other grid position exactly,
interpolates the rest, and drills down (computes exactly) wherever the interpolation's corners disagree
by more than a tolerance or predict different top classes.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ..graph import POINTWISE, Geometry, Graph, eval_mode, window_slice
from ..graph.ops import Opaque
from ..visualize.deconvnet import Deconvnet

__all__ = ["occlusion", "OcclusionResult", "occlusion_grid", "ssim", "MODES"]

#: The ways :func:`occlusion` can compute the maps.
MODES = ("exact", "approximate", "coarse", "brute")



@dataclass(frozen=True)
class OcclusionResult:
    """The paper's occlusion panels for one image.

    Attributes:
        prob_true: (GH, GW) softmax probability of ``target`` with the occluder at each position (panel d).
        top_class: (GH, GW) the most probable class at each position (panel e).
        top_prob: (GH, GW) that class's probability.
        activity: (GH, GW) total activation of feature map ``channel`` of ``layer`` (panel b).
        projection: (C, H, W) the deconvnet projection of that map's strongest activation on the
            unoccluded image (panel c).
        channel: the feature map of ``layer`` whose strongest activation on the clean image is largest.
        target: the class whose probability ``prob_true`` holds.
        clean_prob: ``target``'s probability on the unoccluded image.
        clean_activity: the map's total activation on the unoccluded image.
        layer, window, stride, fill, mode: how the maps were made.
        ssim: approximate and coarse modes with ``check=True``: SSIM of ``prob_true`` against the exact map;
            else None.
        stats: how the incremental engine ran: ``incremental_ops`` (ops computed on changed rectangles
            only), ``incremental_linear`` (the fully connected layer updated by ``W (x' - x)`` on the
            changed rectangle, if any), ``whole_map_from`` (the first op whose changed rectangle covers its
            whole map, from where the work equals brute force) and ``full_from`` (the first op computed in
            full because it mixes the whole map, and why, e.g. a global pool feeding a gate; None when none
            was).

    Position ``(i, j)`` of a grid is the occluder with its top-left corner at pixel
    ``(i * stride, j * stride)``.
    """

    prob_true: torch.Tensor
    top_class: torch.Tensor
    top_prob: torch.Tensor
    activity: torch.Tensor
    projection: torch.Tensor
    channel: int
    target: int
    clean_prob: float
    clean_activity: float
    layer: str
    window: int
    stride: int
    fill: float
    mode: str
    ssim: float | None = None
    stats: dict[str, Any] = field(default_factory=dict)

    @property
    def grid(self) -> tuple[int, int]:
        """(GH, GW): occluder positions per column and per row."""
        return tuple(self.prob_true.shape)  # type: ignore[return-value]

    def most_sensitive(self) -> tuple[int, int]:
        """Pixel (row, column) of the centre of the occluder that lowers ``prob_true`` most."""
        flat = int(torch.argmin(self.prob_true))
        i, j = divmod(flat, self.prob_true.shape[1])
        half = (self.window - 1) / 2
        return int(round(i * self.stride + half)), int(round(j * self.stride + half))


def occlusion_grid(height: int, width: int, window: int, stride: int) -> tuple[int, int]:
    """Number of occluder positions (rows, columns) that keep a ``window`` square inside the image.

    Example:
        >>> occlusion_grid(224, 224, 32, 8)
        (25, 25)
    """
    if window < 1 or stride < 1:
        raise ValueError(f"window and stride must be at least 1, got window={window}, stride={stride}")
    if window > min(height, width):
        raise ValueError(f"the occluder ({window} px) is larger than the image ({height}x{width})")
    return (height - window) // stride + 1, (width - window) // stride + 1


# -- the incremental engine ---------------------------------------------------------------------------


@dataclass
class _Region:
    """Activations of a batch of occluded images, stored as their difference from the clean image.

    For item ``n`` the activation equals the clean one except inside the rectangle with top-left
    corner ``(rows[n], cols[n])`` and size ``patch``'s spatial size, where it is ``patch[n]`` (which may
    also hold unchanged values). ``patch`` keeps the node's layout: spatial axes ``axes``.
    """

    patch: Any  # (P, C, h, w), or a tuple of such parts after a chunk / split
    rows: torch.Tensor  # (P,)
    cols: torch.Tensor  # (P,)
    axes: tuple[int, int] = (2, 3)

    @property
    def size(self) -> tuple[int, int]:
        first = self.patch[0] if isinstance(self.patch, (tuple, list)) else self.patch
        return int(first.shape[self.axes[0]]), int(first.shape[self.axes[1]])


@dataclass
class _Flat:
    """A region of a map that a global reshape (the classifier's flatten) flattened, not yet materialised."""

    region: _Region
    source: int  # the node whose map was flattened


def _out_span(start: torch.Tensor, size: int, g: Geometry, axis: int, out_len: int,
              cap: float | None) -> tuple[torch.Tensor, int]:
    """Output rows a window op must recompute when input rows [start, start + size) changed.

    Returns per-item offsets and one common size (so the batch stays one tensor): the exact span of
    every item fits inside its rectangle; near the border the rectangle is shifted inwards.
    """
    k, s, p = g.extent(axis), g.stride[axis], g.padding[axis]
    # Output o reads padded input rows [o*s, o*s + k); padded row = real row + p.
    lo = torch.div(start + p - k + s, s, rounding_mode="floor")  # ceil((start + p - k + 1) / s)
    hi = torch.div(start + size - 1 + p, s, rounding_mode="floor") + 1
    lo, hi = lo.clamp(0, out_len), hi.clamp(0, out_len)
    span = int((hi - lo).max()) if len(lo) else 1
    span = max(1, min(span, out_len))
    if cap is not None:
        limit = max(1, math.ceil(cap * out_len))
        if span > limit:
            centre = (lo + hi) / 2
            lo = torch.floor(centre - limit / 2).long()
            span = limit
    return lo.clamp(0, out_len - span), span


def _overlay(clean: torch.Tensor, region: _Region, rows: torch.Tensor, cols: torch.Tensor,
             height: int, width: int) -> torch.Tensor:
    """The windows of ``clean`` (one image, no batch) at ``rows``/``cols``, with the region's patch on them.

    ``clean`` and the offsets are in the same (possibly padded) coordinates; ``region`` offsets too.
    Parts of the patch outside a window are dropped, parts of a window outside the patch are clean.
    """
    # Plain slicing per item: far cheaper than one advanced-indexing gather over (P, C, h, w).
    axes = region.axes
    ph, pw = region.size
    ca = (axes[0] - 1, axes[1] - 1)
    shape = [len(rows), *clean.shape]
    shape[axes[0]], shape[axes[1]] = height, width
    out = torch.empty(shape, dtype=clean.dtype, device=clean.device)
    geometry = torch.stack([rows, cols, region.rows, region.cols]).tolist()
    nd = out.dim()
    for n, (r, c, pr, pc) in enumerate(zip(*geometry)):
        out[n] = clean[window_slice(clean.dim() + 1, axes, (r, r + height), (c, c + width))[1:]]
        top, left = max(r, pr), max(c, pc)
        bottom, right = min(r + height, pr + ph), min(c + width, pc + pw)
        if top < bottom and left < right:
            out[window_slice(nd, axes, (top - r, bottom - r), (left - c, right - c), n)] = region.patch[
                window_slice(nd, axes, (top - pr, bottom - pr), (left - pc, right - pc), n)]
    del ca
    return out


def _pad_for(g: Geometry, pad_value: float, clean: torch.Tensor, out_hw: tuple[int, int]) -> torch.Tensor:
    """``clean`` (C, H, W) padded as the op pads it, plus enough at the end for ceil-mode windows."""
    pads = []
    for axis in (1, 0):  # F.pad wants (left, right, top, bottom)
        need = (out_hw[axis] - 1) * g.stride[axis] + g.extent(axis)  # padded length the last window reaches
        pads += [g.padding[axis], max(0, need - g.padding[axis] - clean.shape[axis + 1])]
    return F.pad(clean, pads, value=pad_value)


def _materialise(state: Any, clean: Any) -> Any:
    """The full (P, ...) activations of a region (a tuple's parts each)."""
    if isinstance(state, _Flat):
        full = _materialise(state.region, clean[1])
        return full.reshape(len(full), *clean[0].shape)
    if not isinstance(state, _Region):
        return state
    if isinstance(state.patch, (tuple, list)):
        return [_materialise(_Region(p, state.rows, state.cols, state.axes), c) for p, c in zip(state.patch, clean)]
    zero = torch.zeros_like(state.rows)
    ax = state.axes
    return _overlay(clean, state, zero, zero, clean.shape[ax[0] - 1], clean.shape[ax[1] - 1])


class _Engine:
    """Clean activations of one image and the machinery to run batches of occluded copies of it.

    Every node's state for a batch of occluder positions is a :class:`_Region` (the changed rectangle
    of its map), a :class:`_Flat` region (a flattened map feeding a fully connected layer) or full
    activations. Point-wise ops run on the rectangle; kernel ops (convolutions, pools) recompute the
    output rectangle the changed input can reach, from the clean input around it; a sum or a
    concatenation works on the union of its inputs' rectangles; the first fully connected layer after
    a flatten adds ``W[:, changed] (x' - x)`` to its clean output while the change is small; any op
    that mixes the whole map (a global pool feeding a gate, a GroupNorm) computes in full from there
    on. :attr:`stats` says where that happened.
    """

    def __init__(self, graph: Graph, image: torch.Tensor, layer_index: int, channel: int | None,
                 cap: float | None) -> None:
        self.graph = graph
        self.layout = graph.layout(tuple(image.shape))
        self.layer_index = layer_index
        self.cap = cap
        self.nodes = sorted(graph.ancestors(graph.output) | graph.ancestors(layer_index))
        values = graph.run(image[None], keep=self.nodes)
        self.clean: dict[int, Any] = {i: _unbatch(v) if graph.carries(i) else v for i, v in values.items()}
        target = self.clean[layer_index]
        if not isinstance(target, torch.Tensor) or target.dim() not in (1, 3):
            raise ValueError(f"{graph.name_of(layer_index)!r} outputs {_shape_of(target)} per image; occlusion "
                             "needs a layer of (C, H, W) maps or a vector")
        spatial = target.flatten(1).amax(1) if target.dim() == 3 else target
        if channel is not None and not 0 <= channel < len(spatial):
            raise ValueError(f"channel {channel} is out of range for {graph.name_of(layer_index)!r} "
                             f"({len(spatial)} maps)")
        self.channel = int(spatial.argmax()) if channel is None else channel
        self.clean_activity = float(self._total(target[None])[0])
        self.logits = self.clean[graph.output]
        self.padded: dict[int, torch.Tensor] = {}
        for i in self.nodes:
            node, g = graph.nodes[i], self.layout.geometry[i]
            if node.kind == "op" and self._windowed(i):
                src = node.inputs[0]
                self.padded[i] = _pad_for(g, node.op.pad_value, self.clean[src], _hw(self.layout.shapes[i]))
        self.stats: dict[str, Any] = {}
        self._derived: set[int] = set()
        self._whole_from: int | None = None

    def _windowed(self, i: int) -> bool:
        """Whether node ``i`` is a kernel op (conv, pool) that can recompute a rectangle of its output."""
        g, layout = self.layout.geometry[i], self.layout
        node = self.graph.nodes[i]
        return (g is not None and g != POINTWISE and layout.local[i] and len(node.inputs) == 1
                and layout.axes[i] == (2, 3) and layout.axes[node.inputs[0]] == (2, 3))

    def _total(self, act: torch.Tensor) -> torch.Tensor:
        """The map's total activation (a unit's value for a 1-D layer), per item."""
        picked = act[:, self.channel]
        return picked.flatten(1).sum(1) if picked.dim() > 1 else picked

    def run(self, rows: torch.Tensor, cols: torch.Tensor, window: int, fill: float
            ) -> tuple[torch.Tensor, torch.Tensor]:
        """Logits (P, K) and activity (P,) for occluders with top-left corners ``rows``/``cols``."""
        graph = self.graph
        image = self.clean[0]
        patch = torch.full((len(rows), image.shape[0], window, window), fill, dtype=image.dtype, device=image.device)
        states: dict[int, Any] = {0: _Region(patch, rows, cols)}
        full_from: tuple[int, str] | None = None
        incremental = 0
        remaining = {i: sum(1 for c in graph.nodes[i].consumers if c in self._members) for i in self.nodes}
        for i in self.nodes[1:]:
            node = graph.nodes[i]
            if not graph.carries(i):  # parameters, constants
                states[i] = graph.call(i, lambda r: _view(states[r]))[0]
            elif node.kind != "op":
                states[i], _ = graph.call(i, lambda r: _view(states[r]))
                if any(isinstance(states.get(r), (_Region, _Flat)) or r in self._derived for r in graph.references(i)):
                    self._derived.add(i)  # a size read from a rectangle: recomputed where maps are full
            else:
                states[i], reason = self._step(i, states)
                states[i] = self._collapse(i, states[i])
                if reason is None:
                    incremental += 1
                elif full_from is None and reason != "full input":
                    full_from = (i, reason)
            for r in graph.references(i):
                remaining[r] -= 1
                if remaining[r] == 0 and r not in (self.layer_index, graph.output):
                    states.pop(r, None)
        if not self.stats:
            self.stats = {"incremental_ops": incremental, "incremental_linear": getattr(self, "_linear_used", None),
                          "full_from": None if full_from is None else
                          f"{graph.nodes[full_from[0]].describe()}: {full_from[1]}",
                          "whole_map_from": None if self._whole_from is None
                          else graph.nodes[self._whole_from].describe()}
        out = _materialise(states[graph.output], self._clean_pair(graph.output, states[graph.output]))
        layer_state = states[self.layer_index]
        if isinstance(layer_state, _Region):
            activity = self._region_activity(layer_state)
        else:
            activity = self._total(_materialise(layer_state, self._clean_pair(self.layer_index, layer_state)))
        return out, activity

    @property
    def _members(self) -> set[int]:
        if not hasattr(self, "_member_set"):
            self._member_set = set(self.nodes)
        return self._member_set

    def _clean_pair(self, i: int, state: Any) -> Any:
        if isinstance(state, _Flat):
            return self.clean[i], self.clean[state.source]
        return self.clean[i]

    def _full(self, r: int, state: Any) -> Any:
        return _materialise(state, self._clean_pair(r, state))

    def _step(self, i: int, states: dict[int, Any]) -> tuple[Any, str | None]:
        """Node ``i``'s state from its inputs' states, and why it is full (None: it is not)."""
        graph, layout = self.graph, self.layout
        node = graph.nodes[i]
        op = node.op
        ins = {r: states[r] for r in node.inputs}
        region_ins = {r: s for r, s in ins.items() if isinstance(s, (_Region, _Flat))}
        factors_full = [r for r in graph.references(i) if r not in ins and graph.carries(r)
                        and not isinstance(states.get(r), (_Region, _Flat))]
        if not region_ins:
            return graph.call(i, lambda r: _view(states[r]))[0], "full input"
        # the first fully connected layer after a flatten: clean output plus W (x' - x) on the rectangle
        if op.kind == "linear" and not layout.local[i] and len(ins) == 1:
            (r, state), = ins.items()
            if isinstance(state, _Flat):
                ph, pw = state.region.size
                src = self.clean[state.source]
                if ph * pw * 2 <= src.shape[1] * src.shape[2] and layout.axes[state.source] == (2, 3):
                    weight = graph.arguments(i, lambda k: _view(states.get(k)))[0]
                    w = op.module.weight if op.module is not None else weight[1]
                    self._linear_used = graph.name_of(i)
                    return self.clean[i][None] + _linear_delta(w, state.region, src), None
        # a 1x1, stride-1 convolution is point-wise too: it runs on the patch itself
        pointwise = layout.local[i] and layout.geometry[i] == POINTWISE and not factors_full
        if pointwise and len(region_ins) == len(ins):
            regions = list(region_ins.values())
            if any(isinstance(s, _Flat) for s in regions):
                pass
            elif len(regions) == 1:
                reg = regions[0]
                value, _ = graph.call(i, lambda r: reg.patch if r in ins else _view(states[r]))
                if op.kind == "getitem":
                    return _Region(value, reg.rows, reg.cols, layout.axes[i] or reg.axes), None
                return _Region(value, reg.rows, reg.cols, layout.axes[i] or reg.axes), None
            else:
                rows, cols, h, w = self._union(regions, _hw_axes(layout.shapes[node.inputs[0]],
                                                                  layout.axes[node.inputs[0]]))
                cut = {r: _overlay(self.clean[r], s, rows, cols, h, w) for r, s in region_ins.items()}
                value, _ = graph.call(i, lambda r: cut[r] if r in cut else _view(states[r]))
                return _Region(value, rows, cols, layout.axes[i] or regions[0].axes), None
        if self._windowed(i) and len(region_ins) == 1 and not factors_full:
            (r, state), = region_ins.items()
            if isinstance(state, _Region):
                return self._kernel(i, r, state, states), None
        # a global reshape of a changed map: kept as a flattened region for a fully connected layer
        if op.kind == "reshape" and len(ins) == 1 and not layout.local[i]:
            (r, state), = ins.items()
            if isinstance(state, _Region) and not isinstance(state.patch, (tuple, list)) \
                    and self._feeds_linear(i) and layout.axes[r] == (2, 3):
                return _Flat(state, r), None
        full = {r: self._full(r, s) for r, s in ins.items()}
        value, _ = graph.call(i, lambda r: self._full_value(r, states, full))
        reason = "mixes the whole map" if not factors_full else "a gate computed from the whole map"
        if isinstance(op, Opaque) or not op.has_rule():
            reason = "an op without a window rule"
        elif len(region_ins) < len(ins) and pointwise is not False and layout.geometry[i] is not None:
            reason = "full input"  # another input already changed everywhere
        return value, reason

    def _collapse(self, i: int, state: Any) -> Any:
        """A region that covers its whole map, as plain activations (no more cutting and pasting)."""
        if isinstance(state, _Region) and not isinstance(state.patch, (tuple, list)) \
                and self.layout.axes[i] is not None and state.size == _hw_axes(self.layout.shapes[i], state.axes):
            if self._whole_from is None:
                self._whole_from = i
            return state.patch
        return state

    def _full_value(self, r: int, states: dict[int, Any], full: dict[int, Any]) -> Any:
        """Node ``r``'s value for an op that runs on full maps (sizes read from rectangles recomputed)."""
        if r in full:
            return full[r]
        state = states.get(r)
        if isinstance(state, (_Region, _Flat)):
            full[r] = self._full(r, state)
        elif r in self._derived:
            full[r] = self.graph.call(r, lambda k: self._full_value(k, states, full))[0]
        else:
            return _view(state)
        return full[r]

    def _feeds_linear(self, i: int) -> bool:
        consumers = [c for c in self.graph.nodes[i].consumers if c in self._members]
        return len(consumers) == 1 and self.graph.nodes[consumers[0]].op is not None \
            and self.graph.nodes[consumers[0]].op.kind == "linear"

    def _union(self, regions: list[_Region], real: tuple[int, int]) -> tuple[torch.Tensor, torch.Tensor, int, int]:
        """Per item the smallest rectangle holding every region's, with one common size, kept on the map."""
        sizes = [r.size for r in regions]
        lo_r = torch.stack([r.rows for r in regions]).amin(0)
        lo_c = torch.stack([r.cols for r in regions]).amin(0)
        hi_r = torch.stack([r.rows + s[0] for r, s in zip(regions, sizes)]).amax(0)
        hi_c = torch.stack([r.cols + s[1] for r, s in zip(regions, sizes)]).amax(0)
        h = min(int((hi_r - lo_r).max()), real[0])
        w = min(int((hi_c - lo_c).max()), real[1])
        return lo_r.clamp(0, real[0] - h), lo_c.clamp(0, real[1] - w), h, w

    def _kernel(self, i: int, r: int, region: _Region, states: dict[int, Any]) -> _Region:
        """Recompute the changed rectangle of a convolution or pooling."""
        g = self.layout.geometry[i]
        out_hw = _hw(self.layout.shapes[i])
        spans = [_out_span(start, region.size[axis], g, axis, out_hw[axis], self.cap)
                 for axis, start in enumerate((region.rows, region.cols))]
        (orow, oh), (ocol, ow) = spans
        ih, iw = (oh - 1) * g.stride[0] + g.extent(0), (ow - 1) * g.stride[1] + g.extent(1)
        shifted = _Region(region.patch, region.rows + g.padding[0], region.cols + g.padding[1])
        window = _overlay(self.padded[i], shifted, orow * g.stride[0], ocol * g.stride[1], ih, iw)
        value, _ = self.graph.call(i, lambda k: window if k == r else _view(states.get(k)), window=True)
        return _Region(value, orow, ocol)

    def _region_activity(self, state: _Region) -> torch.Tensor:
        clean = self.clean[self.layer_index]
        ph, pw = state.size
        rr = state.rows[:, None] + torch.arange(ph, device=clean.device)
        cc = state.cols[:, None] + torch.arange(pw, device=clean.device)
        before = clean[self.channel][rr[:, :, None], cc[:, None, :]].flatten(1).sum(1)  # (P,)
        after = state.patch[:, self.channel].flatten(1).sum(1)
        return self.clean_activity + (after - before)

    def brute(self, rows: torch.Tensor, cols: torch.Tensor, window: int, fill: float
              ) -> tuple[torch.Tensor, torch.Tensor]:
        """One full forward pass per occluder position (the reference the exact mode must equal)."""
        images = self.clean[0].expand(len(rows), -1, -1, -1).clone()
        for n, (r, c) in enumerate(zip(rows.tolist(), cols.tolist())):
            images[n, :, r:r + window, c:c + window] = fill
        values = self.graph.run(images, keep=[self.layer_index, self.graph.output])
        return values[self.graph.output], self._total(values[self.layer_index])


def _view(state: Any) -> Any:
    """What a plain op sees of a state (a region's patch: sizes of a window, for a channel shuffle's view)."""
    if isinstance(state, _Region):
        return state.patch
    if isinstance(state, _Flat):
        return state.region.patch
    return state


def _unbatch(v: Any) -> Any:
    if isinstance(v, torch.Tensor):
        return v[0] if v.dim() else v
    if isinstance(v, (tuple, list)) and v and all(isinstance(t, torch.Tensor) for t in v):
        return [t[0] for t in v]
    return v


def _shape_of(v: Any) -> Any:
    return tuple(v.shape) if isinstance(v, torch.Tensor) else type(v).__name__


def _hw(shape: Any) -> tuple[int, int]:
    return int(shape[-2]), int(shape[-1])


def _hw_axes(shape: Any, axes: tuple[int, int] | None) -> tuple[int, int]:
    if isinstance(shape, list):
        shape = shape[0]
    if axes is None:
        return _hw(shape)
    return int(shape[axes[0] - 1]), int(shape[axes[1] - 1])


def _linear_delta(weight: torch.Tensor, region: _Region, clean_in: torch.Tensor) -> torch.Tensor:
    """``W (x' - x)`` of a Linear fed by a flattened (C, H, W) map, from the changed rectangle only."""
    c, h, w = clean_in.shape
    ph, pw = region.size
    weight = weight.view(-1, c, h, w)
    delta = torch.empty(len(region.rows), weight.shape[0], dtype=region.patch.dtype, device=region.patch.device)
    offsets = torch.stack([region.rows, region.cols], 1)
    for r0, c0 in torch.unique(offsets, dim=0).tolist():  # items that share a rectangle share its weights
        pick = (offsets[:, 0] == r0) & (offsets[:, 1] == c0)
        change = region.patch[pick] - clean_in[:, r0:r0 + ph, c0:c0 + pw]
        delta[pick] = change.flatten(1) @ weight[:, :, r0:r0 + ph, c0:c0 + pw].reshape(weight.shape[0], -1).T
    return delta


# -- public API ---------------------------------------------------------------------------------------


def ssim(a: torch.Tensor, b: torch.Tensor, *, data_range: float | None = None, window: int = 7,
         sigma: float = 1.5) -> float:
    """Structural similarity (Wang et al. 2004) of two 2-D maps, averaged over Gaussian windows.

    Args:
        a, b: maps of the same shape (H, W).
        data_range: the value range L in the SSIM constants (default: the range of ``b``, or 1).
        window: side of the Gaussian window, shrunk to the map if the map is smaller.
        sigma: its standard deviation.

    Returns:
        1.0 for identical maps, less the more they differ.

    Example:
        >>> m = torch.rand(25, 25)
        >>> ssim(m, m)
        1.0
    """
    if a.shape != b.shape or a.dim() != 2:
        raise ValueError(f"ssim needs two 2-D maps of the same shape, got {tuple(a.shape)} and {tuple(b.shape)}")
    a, b = a.double(), b.double()
    if data_range is None:
        data_range = float(b.max() - b.min()) or 1.0
    size = max(1, min(window, *a.shape))
    x = torch.arange(size, dtype=torch.float64) - (size - 1) / 2
    g = torch.exp(-(x**2) / (2 * sigma**2))
    g = (g[:, None] * g[None, :] / g.sum() ** 2)[None, None]

    def blur(t: torch.Tensor) -> torch.Tensor:
        return F.conv2d(t[None, None], g)[0, 0]

    c1, c2 = (0.01 * data_range) ** 2, (0.03 * data_range) ** 2
    mu_a, mu_b = blur(a), blur(b)
    var_a = blur(a * a) - mu_a**2
    var_b = blur(b * b) - mu_b**2
    cov = blur(a * b) - mu_a * mu_b
    value = ((2 * mu_a * mu_b + c1) * (2 * cov + c2)) / ((mu_a**2 + mu_b**2 + c1) * (var_a + var_b + c2))
    return round(float(value.mean()), 12)


def occlusion(model: nn.Module | Deconvnet, image: torch.Tensor, target: int, window: int, stride: int,
              fill: float = 0.0, layer: str = "conv5", batch_size: int = 64, *, mode: str = "exact",
              cap: float = 0.5, tol: float = 0.05, check: bool = True, channel: int | None = None,
              progress: object | None = None) -> OcclusionResult:
    """Slide a grey square over ``image`` and record the paper's four occlusion panels (Fig. 7).

    Args:
        model: any feed-forward CNN the deconvnet accepts (see :class:`zfnet.visualize.deconvnet.Deconvnet`),
            or a Deconvnet of it; run in eval mode, its training flags restored afterwards.
        image: one image (C, H, W) in the model's input space (mean-subtracted), on its device.
        target: the class whose probability is mapped (panel d), usually the true label.
        window: side of the square occluder in pixels.
        stride: step between occluder positions; the top-left corner visits (i*stride, j*stride)
            for every i, j that keep the square inside the image.
        fill: the occluder's value; 0 is the paper's grey square (the mean pixel after mean subtraction).
        layer: the layer whose strongest feature map gives panels (b) and (c).
        batch_size: occluder positions computed together.
        mode: ``"exact"`` (incremental, equal to brute force up to rounding), ``"approximate"``
            (projective fields capped at ``cap`` of each map), ``"coarse"`` (every other position
            exact, the rest interpolated unless the neighbours disagree by more than ``tol``) or
            ``"brute"`` (one full forward pass per position, the reference).
        cap: approximate mode: the largest share of a map's side that a changed rectangle may span.
        tol: coarse mode: a position between computed ones is computed too when the target
            probabilities of its interpolation corners span more than ``tol``, or their top classes
            differ; otherwise its logits and activity are interpolated bilinearly. 0 computes all.
        check: approximate and coarse modes: also compute the exact map and store the SSIM against it.
        channel: the feature map for panels (b) and (c); default: the strongest on the clean image.
        progress: optional object with ``update(n)`` called after each batch (a progress bar).

    Returns:
        An :class:`OcclusionResult`.

    Raises:
        ValueError: an image that is not (C, H, W), a target out of range, an occluder larger than the
            image, an unknown layer or mode, a cap outside (0, 1], a negative tol.

    Example:
        >>> import torch
        >>> from zfnet.models import build
        >>> net = build("zfnet-tiny", num_classes=5)
        >>> result = occlusion(net, torch.randn(3, 64, 64), target=2, window=16, stride=8)
        >>> result.prob_true.shape, result.projection.shape
        (torch.Size([7, 7]), torch.Size([3, 64, 64]))
    """
    deconv = model if isinstance(model, Deconvnet) else Deconvnet(model)
    if not isinstance(image, torch.Tensor) or image.dim() != 3:
        shape = tuple(image.shape) if isinstance(image, torch.Tensor) else type(image).__name__
        raise ValueError(f"image must be one (C, H, W) tensor, got {shape}")
    if mode not in MODES:
        raise ValueError(f"unknown mode {mode!r}; valid modes: {', '.join(MODES)}")
    if not 0 < cap <= 1:
        raise ValueError(f"cap must be in (0, 1], got {cap}")
    if batch_size < 1:
        raise ValueError(f"batch_size must be at least 1, got {batch_size}")
    if not tol >= 0:
        raise ValueError(f"tol must be at least 0, got {tol}")
    gh, gw = occlusion_grid(image.shape[1], image.shape[2], int(window), int(stride))
    layer_index = deconv.graph.index_of(layer)
    with eval_mode(deconv.model), torch.no_grad():
        if mode != "brute":
            deconv.graph.require_rules(layer_index, "occlusion")
        engine = _Engine(deconv.graph, image, layer_index, channel, cap if mode == "approximate" else None)
        classes = engine.logits.shape[-1]
        if not 0 <= int(target) < classes:
            raise ValueError(f"target {target} is out of range for a model with {classes} classes")
        ii, jj = torch.meshgrid(torch.arange(gh), torch.arange(gw), indexing="ij")
        rows, cols = (ii.flatten() * stride).to(image.device), (jj.flatten() * stride).to(image.device)

        def compute(index: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            """Logits and activity at the grid positions ``index`` (flat), in batches."""
            out_l, out_a = [], []
            for start in range(0, len(index), batch_size):
                chunk = index[start:start + batch_size].to(rows.device)
                r, c = rows[chunk], cols[chunk]
                out, act = engine.brute(r, c, window, fill) if mode == "brute" else engine.run(r, c, window, fill)
                out_l.append(out)
                out_a.append(act)
                if progress is not None:
                    progress.update(len(r))  # type: ignore[attr-defined]
            return torch.cat(out_l), torch.cat(out_a)

        if mode == "coarse":
            logits, activity, computed = _coarse_to_fine(compute, gh, gw, int(target), tol)
            if progress is not None:
                progress.update(gh * gw - computed)  # type: ignore[attr-defined]  # interpolated
        else:
            logits, activity = compute(torch.arange(gh * gw))
        probs = torch.softmax(logits.float(), dim=1)
        top_prob, top_class = probs.max(1)
        clean_prob = float(torch.softmax(engine.logits.float(), 0)[target])
        projection = deconv.project(image[None], layer, engine.channel, keep="max")[0]
    result = OcclusionResult(
        prob_true=probs[:, target].reshape(gh, gw).cpu(), top_class=top_class.reshape(gh, gw).cpu(),
        top_prob=top_prob.reshape(gh, gw).cpu(), activity=activity.float().reshape(gh, gw).cpu(),
        projection=projection.cpu(), channel=engine.channel, target=int(target), clean_prob=clean_prob,
        clean_activity=engine.clean_activity, layer=layer, window=int(window), stride=int(stride),
        fill=float(fill), mode=mode, stats=dict(engine.stats))
    if mode in ("approximate", "coarse") and check:
        exact = occlusion(deconv, image, target, window, stride, fill, layer, batch_size, mode="exact",
                          channel=engine.channel)
        result = _replace(result, ssim=ssim(result.prob_true, exact.prob_true))
    return result


def _coarse_axis(n: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Every other index of ``0 .. n-1`` and the last: the coarse lines, and for each index its two
    neighbouring coarse lines and its weight on the second (0 on a coarse line)."""
    coarse = sorted(set(range(0, n, 2)) | {n - 1})
    lo = torch.tensor([max(c for c in coarse if c <= i) for i in range(n)])
    hi = torch.tensor([min(c for c in coarse if c >= i) for i in range(n)])
    weight = torch.where(hi > lo, (torch.arange(n) - lo).float() / (hi - lo).clamp(min=1).float(), 0.0)
    return torch.tensor(coarse), lo, hi, weight


def _coarse_to_fine(compute, gh: int, gw: int, target: int, tol: float) -> tuple[torch.Tensor, torch.Tensor, int]:
    """The coarse mode: exact at every other row and column, interpolated or drilled down in between.

    Returns the logits and activities of every position and how many positions were computed."""
    rows_c, r_lo, r_hi, r_w = _coarse_axis(gh)
    cols_c, c_lo, c_hi, c_w = _coarse_axis(gw)
    done = torch.zeros(gh, gw, dtype=torch.bool)
    done[rows_c[:, None], cols_c[None, :]] = True
    first = done.flatten().nonzero().flatten()
    logits_c, act_c = compute(first)
    dev = logits_c.device
    logits = torch.zeros(gh * gw, logits_c.shape[1], dtype=logits_c.dtype, device=dev)
    activity = torch.zeros(gh * gw, dtype=act_c.dtype, device=dev)
    logits[first.to(dev)], activity[first.to(dev)] = logits_c, act_c
    # The four corners of every position's interpolation cell (flat indices, all computed) and their weights.
    corners = [(r[:, None] * gw + c[None, :]).flatten().to(dev) for r in (r_lo, r_hi) for c in (c_lo, c_hi)]
    wr, wc = r_w[:, None].expand(gh, gw).flatten(), c_w[None, :].expand(gh, gw).flatten()
    weights = [w.to(dev) for w in ((1 - wr) * (1 - wc), (1 - wr) * wc, wr * (1 - wc), wr * wc)]
    probs = torch.softmax(logits.float(), dim=1)
    corner_p = torch.stack([probs[k, target] for k in corners])
    corner_top = torch.stack([probs[k].argmax(1) for k in corners])
    disagree = (corner_p.max(0).values - corner_p.min(0).values > tol) | (corner_top != corner_top[0]).any(0)
    done = done.flatten().to(dev)
    refine = ~done & disagree
    index = refine.nonzero().flatten()
    if len(index):
        logits[index], activity[index] = compute(index.cpu())
    rest = ~(done | refine)
    if rest.any():
        mix = sum(w[:, None] * logits[k].float() for w, k in zip(weights, corners))
        mix_a = sum(w * activity[k].float() for w, k in zip(weights, corners))
        logits[rest] = mix[rest].to(logits.dtype)
        activity[rest] = mix_a[rest].to(activity.dtype)
    return logits, activity, len(first) + len(index)


def _replace(result: OcclusionResult, **changes: object) -> OcclusionResult:
    from dataclasses import replace

    return replace(result, **changes)
