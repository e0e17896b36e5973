"""The deconvolutional network of Zeiler & Fergus (2014, §2.1): feature activations projected to pixels.

To see what excites one feature map, every other activation of the layer is set to zero and the
signal is run back down the network, op by op, to the input pixels:

- **unpooling**: a max-pool's forward pass records the location of each window's maximum (the
  *switches*); the deconvnet puts each signal value back at its switch. Where overlapping windows
  (ZFNet's 3x3 stride-2 pools) share a switch their values add, which makes unpooling the exact
  adjoint (transpose) of max-pooling at the recorded switches;
- **rectification**: the signal goes through a ReLU, as in the forward pass;
- **filtering**: convolution with the transposed filters (``conv_transpose2d`` with the layer's own
  weights, no bias).

Contrast normalisation and dropout pass the signal unchanged, as in the paper. The model is traced
into a graph (:mod:`zfnet.graph`), so any CNN works: residual sums send the signal to every input,
concatenations split it, every point-wise activation (ReLU6, GELU, SiLU, Hardswish …) is a rectifier,
squeeze-excitation gates multiply it by their forward value, linear ops (BatchNorm in eval mode,
average pools, layer scale, reshapes, fully connected layers) use their adjoints; the table of ops
and rules is in ``docs/deconvnet.md``. For a network of convolutions, ReLUs and max-pools the
projection is the gradient of the activation with respect to the input when every ReLU's backward
pass is replaced by a ReLU of the incoming gradient (the "deconvnet rule"), scaled by the activation.

:class:`Deconvnet` computes the projection directly (no autograd, no hooks), batched, and, for a
single activation of a network whose ops below it all read fixed windows, only inside that
activation's receptive field at every op.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from ..graph import POINTWISE, Graph, Layout, Window, crop, eval_mode, trace, uncrop, window_slice
from ..graph.ops import DROPOUT_MODULES, RECTIFIER_MODULES

__all__ = ["Deconvnet", "SUPPORTED_MODULES", "KEEP_MODES"]

#: The module types the deconvnet has a rule for (functional calls and tensor methods: docs/deconvnet.md).
SUPPORTED_MODULES: tuple[type[nn.Module], ...] = (
    nn.Conv2d, *RECTIFIER_MODULES, nn.MaxPool2d, nn.AvgPool2d, nn.AdaptiveAvgPool2d, nn.LocalResponseNorm,
    nn.BatchNorm2d, nn.LayerNorm, nn.GroupNorm, *DROPOUT_MODULES, nn.Flatten, nn.Linear, nn.Identity,
)

#: What :meth:`Deconvnet.project` keeps of the chosen feature map.
KEEP_MODES = ("max", "map")


class Deconvnet:
    """Project feature activations of a CNN back to pixel space (Zeiler & Fergus 2014, §2.1).

    Args:
        model: any CNN ``torch.fx`` can trace (ResNet, Inception, DenseNet, MobileNet, ConvNeXt …):
            standard layers as modules, functional calls and tensor methods in ``forward``, residual
            sums, concatenations, gates. Ops without a rule are refused when a projection has to pass
            through them, with a ``TypeError`` naming the node and the model's code line.
        chunk_bytes: approximate working memory of one chunk of projections, in bytes.
        leaves: submodule paths to run as single nodes (see :func:`zfnet.graph.trace`).

    Raises:
        TypeError: ``model`` is not a module, or ``torch.fx`` cannot trace it
            (:class:`zfnet.graph.TraceError`, which says how to mark a leaf).

    Example:
        >>> import torch
        >>> from zfnet.models import build
        >>> net = build("zfnet-tiny", num_classes=5)
        >>> deconv = Deconvnet(net)
        >>> deconv.project(torch.randn(2, 3, 64, 64), "conv5", channels=torch.tensor([3, 7])).shape
        torch.Size([2, 3, 64, 64])
    """

    def __init__(self, model: nn.Module, *, chunk_bytes: int = 256 * 2**20, leaves: Sequence[str] = ()) -> None:
        if not isinstance(model, nn.Module):
            raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
        if chunk_bytes < 1:
            raise ValueError(f"chunk_bytes must be positive, got {chunk_bytes}")
        self.model = model
        self.chunk_bytes = int(chunk_bytes)
        self.graph: Graph = trace(model, leaves=leaves)
        self._strategy = "auto"  # "cone" or "shared" to force one way of computing known positions

    @property
    def layer_names(self) -> list[str]:
        """Every name :meth:`project` accepts, in execution order (see :mod:`zfnet.graph`)."""
        return self.graph.layer_names

    def output_shape(self, layer: str, input_shape: Sequence[int]) -> tuple[int, ...]:
        """Shape of ``layer``'s output for one image of shape ``input_shape`` (C, H, W), batch left out.

        Example:
            >>> from zfnet.models import build
            >>> Deconvnet(build("zfnet-tiny")).output_shape("conv5", (3, 64, 64))
            (32, 3, 3)
        """
        target = self.graph.index_of(layer)
        with eval_mode(self.model):
            return self.graph.layout(input_shape).shapes[target]

    # -- public API --------------------------------------------------------------------------------

    def project(self, x: torch.Tensor, layer: str, channels: int | Sequence[int] | torch.Tensor,
                keep: str = "max", *, positions: torch.Tensor | None = None,
                image_index: torch.Tensor | None = None) -> torch.Tensor:
        """Project one feature map of ``layer`` per item down to pixel space.

        For each item, every activation of ``layer`` except those of its feature map ``channels[n]``
        is set to zero; of that map only the strongest activation is kept (``keep="max"``), the one
        at ``positions[n]``, or the whole map (``keep="map"``). The signal then runs down to the
        input: unpooling with the switches of this image's forward pass, rectification, transposed
        filtering (see the module docstring for every rule). The model runs in eval mode (its
        training flags are restored afterwards); nothing is registered on it.

        Args:
            x: images, (B, C, H, W), on the model's device and in its dtype.
            layer: a name from :attr:`layer_names`, e.g. ``"conv5"`` for the zfnet models,
                ``"features.12"``, ``"layer3.1"`` or ``"layer1.0.relu#2"`` (a module's second call).
            channels: the feature map (channel, or unit of a fully connected layer) to project: one
                int for every item, or one per item (1-D, length N).
            keep: ``"max"``: the single strongest activation of the map, with its value; ``"map"``:
                the whole map. One of :data:`KEEP_MODES`.
            positions: optional (N, 2) integer (row, column) of the activation to keep instead of
                the maximum (``keep="max"`` only); known positions (e.g. from
                :func:`zfnet.visualize.topk.top_activations`) let the forward pass run only inside
                each activation's receptive field.
            image_index: optional (N,) integers: item ``n`` projects image ``x[image_index[n]]``,
                so several maps of one image share its forward pass. Default: one item per image.

        Returns:
            The projections, (N, C, H, W) with N = B, or ``len(image_index)``; dtype and device of ``x``.

        Raises:
            ValueError: an unknown layer (the message lists the valid names), a channel, position or
                image index out of range, a ``keep`` other than ``"max"``/``"map"``, ``positions``
                with ``keep="map"``.
            TypeError: an argument of the wrong type, or an op below ``layer`` without a rule (named
                with the model's code line).

        Shape:
            x: (B, C, H, W); channels: () or (N,); positions: (N, 2); returns (N, C, H, W).

        Example:
            >>> import torch
            >>> from zfnet.models import build
            >>> deconv = Deconvnet(build("zfnet-tiny", num_classes=5))
            >>> x = torch.randn(1, 3, 64, 64)
            >>> maps = deconv.project(x, "conv2", torch.arange(4), image_index=torch.zeros(4, dtype=torch.long))
            >>> maps.shape
            torch.Size([4, 3, 64, 64])
        """
        proj, _, _ = self.project_with_values(x, layer, channels, keep, positions=positions, image_index=image_index)
        return proj

    def project_with_values(self, x: torch.Tensor, layer: str, channels: int | Sequence[int] | torch.Tensor,
                            keep: str = "max", *, positions: torch.Tensor | None = None,
                            image_index: torch.Tensor | None = None
                            ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """:meth:`project`, also returning the kept activation values (N,) and positions (N, 2)."""
        target = self.graph.index_of(layer)
        if not isinstance(x, torch.Tensor):
            raise TypeError(f"x must be a torch.Tensor, got {type(x).__name__}")
        if x.dim() != 4 or not x.is_floating_point():
            raise ValueError(f"x must be a floating-point (B, C, H, W) tensor, got {x.dtype} of shape {tuple(x.shape)}")
        if keep not in KEEP_MODES:
            raise ValueError(f"keep must be one of {', '.join(KEEP_MODES)}, got {keep!r}")
        rows = _check_index(image_index, len(x), x.device)
        n = len(rows)
        with eval_mode(self.model), torch.no_grad():
            layout = self.graph.layout(x.shape[1:])
        out_shape = layout.shapes[target]
        if not isinstance(out_shape, tuple) or len(out_shape) not in (1, 3):
            raise ValueError(f"{layer} outputs shape {out_shape} per image; projecting needs (C,) or (C, H, W)")
        spatial = len(out_shape) == 3
        if spatial and layout.axes[target] not in ((2, 3), None):
            raise ValueError(f"{layer} holds channels-last maps {out_shape}; project a layer with (C, H, W) maps")
        chans = _check_channels(channels, n, out_shape[0], layer, x.device)
        if positions is not None:
            if keep != "max":
                raise ValueError(f"positions select the activation to keep with keep='max'; got keep={keep!r}")
            positions = _check_positions(positions, n, out_shape, layer, x.device)
        self.graph.require_rules(target, "the deconvnet")
        result = x.new_zeros((n, *x.shape[1:]))
        values = x.new_zeros(n)
        where = torch.zeros(n, 2, dtype=torch.long, device=x.device)
        if n == 0:
            return result, values, where
        engine = _Engine(self.graph, layout, target, self.chunk_bytes, x)
        with eval_mode(self.model), torch.no_grad():
            if spatial and positions is not None and engine.cone_possible and self._prefer_cone(
                    engine, n, len(torch.unique(rows))):
                step = engine.chunk(single=True, n=n)
                for lo in range(0, n, step):
                    sl = slice(lo, lo + step)
                    val = engine.cone(rows[sl], chans[sl], positions[sl], dest=result[sl])
                    values[sl], where[sl] = val, positions[sl]
            else:
                engine.shared(rows, chans, positions, keep, result, values, where)
        return result, values, where

    def _prefer_cone(self, engine: _Engine, items: int, images: int) -> bool:
        """Whether forward passes inside each activation's field cost less than one per whole image."""
        if self._strategy != "auto":  # the tests force one way or the other
            return self._strategy == "cone"
        return items * engine.cost(single=True) < images * engine.cost(single=False)


# -- argument checks -------------------------------------------------------------------------------


def _check_index(image_index: torch.Tensor | None, b: int, device: torch.device) -> torch.Tensor:
    if image_index is None:
        return torch.arange(b, device=device)
    if not isinstance(image_index, torch.Tensor) or image_index.dim() != 1 or image_index.is_floating_point():
        raise TypeError("image_index must be a 1-D integer tensor")
    if len(image_index) and (int(image_index.min()) < 0 or int(image_index.max()) >= b):
        raise ValueError(f"image_index must lie in [0, {b}) for {b} images, got values in "
                         f"[{int(image_index.min())}, {int(image_index.max())}]")
    return image_index.to(device=device, dtype=torch.long)


def _check_channels(channels: int | Sequence[int] | torch.Tensor, n: int, c: int, layer: str,
                    device: torch.device) -> torch.Tensor:
    if isinstance(channels, bool) or isinstance(channels, float):
        raise TypeError(f"channels must be an int or a 1-D integer tensor, got {channels!r}")
    if isinstance(channels, int):
        chans = torch.full((n,), channels, dtype=torch.long, device=device)
    else:
        chans = torch.as_tensor(channels, device=device)
        if chans.is_floating_point() or chans.dtype == torch.bool:
            raise TypeError(f"channels must be integers, got dtype {chans.dtype}")
        if chans.dim() == 0:
            chans = chans.expand(n)
        if chans.dim() != 1 or len(chans) != n:
            raise ValueError(f"channels must be one int or one per item ({n}), got shape {tuple(chans.shape)}")
        chans = chans.long()
    if n and (int(chans.min()) < 0 or int(chans.max()) >= c):
        bad = int(chans.min()) if int(chans.min()) < 0 else int(chans.max())
        raise ValueError(f"channel {bad} out of range: {layer} has {c} channels (0 .. {c - 1})")
    return chans


def _check_positions(positions: torch.Tensor, n: int, out_shape: tuple[int, ...], layer: str,
                     device: torch.device) -> torch.Tensor:
    if not isinstance(positions, torch.Tensor) or positions.is_floating_point():
        raise TypeError("positions must be an integer tensor of shape (N, 2)")
    if tuple(positions.shape) != (n, 2):
        raise ValueError(f"positions must have shape ({n}, 2), got {tuple(positions.shape)}")
    positions = positions.to(device=device, dtype=torch.long)
    limit = (out_shape[1], out_shape[2]) if len(out_shape) == 3 else (1, 1)
    for dim, name in enumerate(("row", "column")):
        col = positions[:, dim]
        if n and (int(col.min()) < 0 or int(col.max()) >= limit[dim]):
            raise ValueError(f"{name} positions must lie in [0, {limit[dim]}) for {layer}, got "
                             f"[{int(col.min())}, {int(col.max())}]")
    return positions


# -- the engine ------------------------------------------------------------------------------------


class _Engine:
    """Forward and backward passes of one target node, over whole maps or inside receptive fields."""

    def __init__(self, graph: Graph, layout: Layout, target: int, chunk_bytes: int, x: torch.Tensor) -> None:
        self.graph, self.layout, self.target, self.chunk_bytes, self.x = graph, layout, target, chunk_bytes, x
        self.forward_nodes = sorted(graph.ancestors(target))
        self.signal_nodes = graph.signal_ancestors(target)
        self.signal_set = set(self.signal_nodes)
        self.forward_set = set(self.forward_nodes)
        self.kept = self._backward_needs()[0]
        carrying = [i for i in self.forward_nodes if graph.nodes[i].kind in ("op", "input")]
        self.cone_possible = all(layout.local[i] for i in carrying) and layout.axes[target] == (2, 3)
        self.deferred = {i for i in self.forward_nodes if self._may_defer(i)}

    def _may_defer(self, i: int) -> bool:
        """Whether node ``i``'s windowed value may keep garbage off the map, its clearing left to its reader:
        its one reader pads what it reads itself (a max-pool), or is a point-wise op that keeps zeros and
        passes the garbage on (a ReLU), and nothing else, the backward included, reads the value."""
        graph = self.graph
        if graph.nodes[i].kind != "op" or i in self.kept or i == self.target:
            return False
        readers = {c for c in graph.nodes[i].consumers if c in self.forward_set}
        if len(readers) != 1:
            return False
        c = readers.pop()
        op = graph.nodes[c].op
        if graph.nodes[c].kind != "op" or op is None:
            return False
        return op.pad_value != 0.0 or (op.keeps_zero and not op.needs_inputs and self.layout.geometry[c] == POINTWISE)

    # -- windows ---------------------------------------------------------------------------------

    def windows(self, positions: torch.Tensor) -> tuple[dict[int, Window], dict[tuple[int, int], Window]]:
        """Per node, the window it must compute; per (consumer, input), the window the consumer reads."""
        graph, layout = self.graph, self.layout
        shapes = layout.shapes
        wins: dict[int, Window] = {}
        reads: dict[tuple[int, int], Window] = {}
        wanted: dict[int, list[Window]] = {self.target: [Window(positions, (1, 1), _hw(shapes[self.target]))]}
        members = set(self.forward_nodes)
        for i in reversed(self.forward_nodes):
            node = graph.nodes[i]
            if i not in wanted or node.kind not in ("op", "input"):
                continue
            win = _union(wanted[i], _hw_axes(shapes[i] if not isinstance(shapes[i], list) else shapes[i][0],
                                             layout.axes[i]))
            wins[i] = win
            if node.kind == "input":
                continue
            g = layout.geometry[i]
            for r in node.inputs:
                if r not in members:
                    continue
                if g is None:
                    raise AssertionError("cone over a non-local op")
                offset, size = g.input_window(win.offset, win.size)
                src = shapes[r] if not isinstance(shapes[r], list) else shapes[r][0]
                need = Window(offset, size, _hw_axes(src, layout.axes[r]))
                reads[(i, r)] = need
                wanted.setdefault(r, []).append(need)
        return wins, reads

    def cost(self, single: bool) -> float:
        """Rough multiply-adds of one item's forward pass (inside its windows when ``single``)."""
        wins = self.windows(torch.zeros(1, 2, dtype=torch.long))[0] if single else None
        total = 0.0
        for i in self.forward_nodes:
            node, shape = self.graph.nodes[i], self.layout.shapes[i]
            if node.op is None or not isinstance(shape, tuple):
                continue
            numel = math.prod(shape)
            if wins is not None and i in wins:
                numel = numel // max(1, math.prod(_hw_axes(shape, self.layout.axes[i]))) * math.prod(wins[i].size)
            total += numel * node.op.macs(numel)
        return total

    def chunk(self, single: bool, n: int) -> int:
        """Items per chunk so that one chunk's forward and backward fit in ``chunk_bytes``."""
        wins = self.windows(torch.zeros(1, 2, dtype=torch.long))[0] if single else None
        numels, switches = [math.prod(self.x.shape[1:])], 0
        for i in self.forward_nodes:
            shape = self.layout.shapes[i]
            if not isinstance(shape, tuple):
                continue
            numel = math.prod(shape)
            if wins is not None and i in wins:
                numel = numel // max(1, math.prod(_hw_axes(shape, self.layout.axes[i]))) * math.prod(wins[i].size)
            numels.append(numel)
            if self.graph.nodes[i].op is not None and self.graph.nodes[i].op.kind == "maxpool":
                switches += numel
        per_item = 8 * switches + 3 * self.x.element_size() * max(numels) + self.x.element_size() * sum(numels) // 2
        return max(1, min(n, self.chunk_bytes // max(1, per_item)))

    # -- cone: one activation inside its receptive field ------------------------------------------

    def cone(self, rows: torch.Tensor, chans: torch.Tensor, positions: torch.Tensor, dest: torch.Tensor
             ) -> torch.Tensor:
        """Forward and backward of single activations, each inside its receptive field only: the
        projections are written into ``dest`` (zeros, (N, C, H, W)); returns the activations' values."""
        graph, layout = self.graph, self.layout
        wins, reads = self.windows(positions)
        # Channels-last maps run faster on CPUs (max-pooling with indices about 4x, transposed
        # convolutions about 1.3x); every op keeps the layout.
        values: dict[int, Any] = {0: _channels_last(crop(self.x, rows, wins[0], 0.0))}
        ctxs: dict[int, Any] = {}
        inputs: dict[int, list[Any]] = {}
        dirty: set[int] = set()  # nodes whose values hold garbage off the map (see _may_defer)
        for i in self.forward_nodes[1:]:
            node = graph.nodes[i]
            if node.kind != "op":
                values[i], _ = graph.call(i, values.__getitem__)
                continue
            cut = {r: self._read(values[r], wins[r], reads.get((i, r), wins[r]), node.op.pad_value, layout.axes[r],
                                 sole=self._sole_reader(i, r))
                   for r in node.inputs}
            if self._in_place(i, cut, values):
                values[i], ctxs[i] = node.op.run_in_place(cut[node.inputs[0]]), None
            else:
                values[i], ctxs[i] = graph.call(i, lambda r, cut=cut: cut.get(r, values.get(r)), window=True,
                                                record=True)
            if node.op.needs_inputs:
                inputs[i] = [cut[r] for r in node.inputs]
            win = wins[i]
            if node.op.keeps_zero and not any(r in dirty for r in node.inputs):
                continue  # its inputs hold zeros off the map, and so does its output
            if win.inside:
                continue
            if isinstance(values[i], torch.Tensor) and i in self.deferred:
                dirty.add(i)  # its reader pads it, or passes the garbage on to a reader that does
                continue
            if isinstance(values[i], torch.Tensor):
                win.fill_outside_(values[i], 0.0, layout.axes[i])
            else:
                for part in values[i]:
                    win.fill_outside_(part, 0.0, layout.axes[i])
        act = values[self.target]  # (N, C, 1, 1)
        items = torch.arange(len(rows), device=self.x.device)
        vals = act[items, chans, 0, 0]
        signal = torch.zeros_like(act)
        signal[items, chans, 0, 0] = vals
        signals: dict[int, Any] = {self.target: signal}
        spilled: set[int] = set()  # nodes whose signal a kernel op's adjoint spread past the map
        for i in reversed(self.signal_nodes):
            if i == 0 or i not in signals:
                continue
            node, s = graph.nodes[i], signals.pop(i)
            s = self._complete(i, s, values)
            if isinstance(s, torch.Tensor) and i in spilled:
                wins[i].fill_outside_(s, 0.0, layout.axes[i])
            in_sizes = [tuple(self._read_shape(values[r], reads.get((i, r), wins[r]), layout.axes[r]))
                        for r in node.inputs]
            args, kwargs = _args(graph, i, values)
            outs = _own(node.op.adjoint_window(s, ctxs.get(i), inputs.get(i, []), in_sizes, args, kwargs))
            for r, out in zip(node.inputs, outs):
                need = reads.get((i, r), wins[r])
                self._accumulate(signals, r, out, wins[r], need, values[r], layout.axes[r])
                if layout.geometry[i] != POINTWISE:
                    spilled.add(r)
        image = signals.get(0)
        if image is not None:
            uncrop(image, wins[0], out=dest)  # only the part on the image is copied
        return vals

    def _sole_reader(self, i: int, r: int) -> bool:
        """Whether node ``i`` is the only reader of node ``r``'s value (forward and backward alike)."""
        readers = [c for c in self.graph.nodes[r].consumers if c in self.forward_set]
        return readers == [i] and r not in self.kept and r != self.target and r != 0

    def _in_place(self, i: int, cut: dict[int, Any], values: dict[int, Any]) -> bool:
        """Whether node ``i`` is a plain ReLU whose input value nothing else reads (so it may overwrite it)."""
        op = self.graph.nodes[i].op
        if not getattr(op, "relu", False) or len(cut) != 1:
            return False
        (r, value), = cut.items()
        if value is not values.get(r) or r == self.target or not isinstance(value, torch.Tensor):
            return False
        readers = [c for c in self.graph.nodes[r].consumers if c in self.forward_set]
        return readers == [i] and r not in self.kept

    @staticmethod
    def _rel(have: Window, need: Window) -> tuple[torch.Tensor, bool]:
        rel = need.offset - have.offset
        return rel, bool((rel == rel[:1]).all()) if len(rel) else True

    def _read(self, value: Any, have: Window, need: Window, pad: float, axes: tuple[int, int] | None,
              sole: bool = False) -> Any:
        """The part ``need`` of a node's window value ``have``, with ``pad`` off the map (in place when the
        reader is the value's ``sole`` reader, else on a copy)."""
        if isinstance(value, (list, tuple)):
            return type(value)(self._read(v, have, need, pad, axes) for v in value)
        if axes is None:
            return value
        rel, same = self._rel(have, need)
        if same and need.size == have.size and (not len(rel) or int(rel[0].abs().sum()) == 0):
            out = value
        elif same:
            r0, c0 = rel[0].tolist() if len(rel) else (0, 0)
            out = value[window_slice(value.dim(), axes, (r0, r0 + need.size[0]), (c0, c0 + need.size[1]))]
        else:
            out = crop(value, torch.arange(len(value), device=value.device),
                       Window(rel, need.size, have.size), 0.0, axes)
        if pad != 0.0 and not need.inside:
            if not (sole and out is value):
                out = out.clone()
            need.fill_outside_(out, pad, axes)
        return out

    @staticmethod
    def _read_shape(value: Any, need: Window, axes: tuple[int, int] | None) -> list[int]:
        if isinstance(value, (list, tuple)):
            value = value[0]
        shape = list(value.shape)
        if axes is not None:
            shape[axes[0]], shape[axes[1]] = need.size
        return shape

    def _complete(self, i: int, s: Any, values: dict[int, Any]) -> Any:
        """A tuple node's signal with zeros where a part got none."""
        if isinstance(s, list):
            return [torch.zeros_like(v) if part is None else part for part, v in zip(s, values[i])]
        return s

    def _accumulate(self, signals: dict[int, Any], r: int, out: Any, have: Window, need: Window, value: Any,
                    axes: tuple[int, int] | None) -> None:
        """Add a consumer's signal for window ``need`` into node ``r``'s signal over its window ``have``."""
        if isinstance(out, tuple) and out and out[0] == "slot":
            _, slot, part = out
            parts = signals.setdefault(r, [None] * len(value))
            placed = self._place(part, have, need, value[slot], axes)
            parts[slot] = placed if parts[slot] is None else parts[slot] + placed
            return
        like = value[0] if isinstance(value, (list, tuple)) else value
        placed = self._place(out, have, need, like, axes)
        signals[r] = placed if r not in signals else signals[r] + placed

    def _place(self, s: torch.Tensor, have: Window, need: Window, like: torch.Tensor,
               axes: tuple[int, int] | None) -> torch.Tensor:
        if axes is None:
            return s
        rel, same = self._rel(have, need)
        if need.size == have.size and same and (not len(rel) or int(rel[0].abs().sum()) == 0):
            return s
        out = like.new_zeros(like.shape) if s.shape[0] == like.shape[0] else s.new_zeros(
            (len(s), *like.shape[1:]))
        if same:
            r0, c0 = rel[0].tolist()
            out[window_slice(out.dim(), axes, (r0, r0 + need.size[0]), (c0, c0 + need.size[1]))] += s
            return out
        for k, (r0, c0) in enumerate(rel.tolist()):
            out[window_slice(out.dim(), axes, (r0, r0 + need.size[0]), (c0, c0 + need.size[1]), k)] += s[k]
        return out

    # -- shared: whole maps, one forward pass per distinct image ----------------------------------

    def forward_full(self, images: torch.Tensor) -> tuple[dict[int, Any], dict[int, Any], dict[int, list[Any]]]:
        """Whole-map forward pass recording switches; values kept where the backward needs them."""
        graph = self.graph
        values: dict[int, Any] = {0: images}
        ctxs: dict[int, Any] = {}
        inputs: dict[int, list[Any]] = {}
        keep, remaining = self._backward_needs()
        for i in self.forward_nodes[1:]:
            node = graph.nodes[i]
            if node.kind == "op" and self._in_place(i, {r: values[r] for r in node.inputs}, values):
                values[i], ctx = node.op.run_in_place(values[node.inputs[0]]), None
            else:
                values[i], ctx = graph.call(i, values.__getitem__, record=node.kind == "op" and i in self.signal_set)
            if ctx is not None:
                ctxs[i] = ctx
            if node.op is not None and node.op.needs_inputs and i in self.signal_set:
                inputs[i] = [values[r] for r in node.inputs]
            for r in graph.references(i):
                remaining[r] -= 1
                if remaining[r] == 0 and r not in keep and isinstance(values.get(r), torch.Tensor):
                    del values[r]
        return values, ctxs, inputs

    def _backward_needs(self) -> tuple[set[int], dict[int, int]]:
        """Nodes whose values the backward reads (the target, a gate's factor), and each node's consumer count."""
        graph = self.graph
        keep = {self.target}
        for i in self.signal_nodes:
            node = graph.nodes[i]
            if node.op is not None and node.op.needs_inputs:
                keep.update(graph.references(i))
        members = set(self.forward_nodes)
        remaining = {i: sum(1 for c in graph.nodes[i].consumers if c in members) for i in self.forward_nodes}
        return keep, remaining

    def backward_full(self, signal: torch.Tensor, values: dict[int, Any], ctxs: dict[int, Any],
                      inputs: dict[int, list[Any]], local: torch.Tensor) -> torch.Tensor:
        """Run ``signal`` (one item per row, item ``k`` of image ``local[k]``) down to the pixels."""
        graph, shapes = self.graph, self.layout.shapes
        signals: dict[int, Any] = {self.target: signal}
        for i in reversed(self.signal_nodes):
            if i == 0 or i not in signals:
                continue
            node, s = graph.nodes[i], signals.pop(i)
            if isinstance(s, list):
                s = [torch.zeros((len(local), *shapes[i][k]), dtype=signal.dtype, device=signal.device)
                     if part is None else part for k, part in enumerate(s)]
            ctx = ctxs.get(i)
            if isinstance(ctx, torch.Tensor):
                ctx = ctx[local]
            ins = [v[local] if isinstance(v, torch.Tensor) else v for v in inputs.get(i, [])]
            args, kwargs = _args(graph, i, values, local)
            outs = _own(node.op.adjoint(s, ctx, ins, [shapes[r] for r in node.inputs], args, kwargs))
            for r, out in zip(node.inputs, outs):
                if isinstance(out, tuple) and out and out[0] == "slot":
                    parts = signals.setdefault(r, [None] * len(shapes[r]))
                    parts[out[1]] = out[2] if parts[out[1]] is None else parts[out[1]] + out[2]
                else:
                    signals[r] = out if r not in signals else signals[r] + out
        image = signals.get(0)
        return torch.zeros((len(local), *self.x.shape[1:]), dtype=self.x.dtype, device=self.x.device) \
            if image is None else image

    def shared(self, rows: torch.Tensor, chans: torch.Tensor, positions: torch.Tensor | None, keep: str,
               result: torch.Tensor, values_out: torch.Tensor, where: torch.Tensor) -> None:
        """One full forward pass per distinct image; its switches serve all of that image's items."""
        out_shape = self.layout.shapes[self.target]
        spatial = len(out_shape) == 3
        unique, inverse = torch.unique(rows, return_inverse=True)
        step_images = self.chunk(single=False, n=len(unique))
        step_items = self.chunk(single=False, n=len(rows))
        dev = self.x.device
        for lo in range(0, len(unique), step_images):
            images = unique[lo:lo + step_images]
            values, ctxs, inputs = self.forward_full(_channels_last(self.x[images]))
            act = values[self.target]
            members = torch.nonzero((inverse >= lo) & (inverse < lo + len(images))).flatten()
            for start in range(0, len(members), step_items):
                items = members[start:start + step_items]
                local, ch = inverse[items] - lo, chans[items]
                k = torch.arange(len(items), device=dev)
                signal = act.new_zeros((len(items), *act.shape[1:]))
                if spatial and keep == "max":
                    if positions is None:
                        val, arg = act[local, ch].flatten(1).max(1)
                        pos = torch.stack((arg // out_shape[2], arg % out_shape[2]), 1)
                    else:
                        pos = positions[items]
                        val = act[local, ch, pos[:, 0], pos[:, 1]]
                    where[items] = pos
                    signal[k, ch, pos[:, 0], pos[:, 1]] = val
                else:  # the whole map, or one unit of a fully connected layer
                    signal[k, ch] = act[local, ch]
                    val = signal[k, ch].reshape(len(items), -1).amax(1)
                values_out[items] = val
                result[items] = self.backward_full(signal, values, ctxs, inputs, local)


def _own(outs: list[Any]) -> list[Any]:
    """Signals for an op's inputs, each its own tensor (a sum hands one signal to all its inputs)."""
    seen: set[int] = set()
    result = []
    for out in outs:
        if isinstance(out, torch.Tensor):
            if id(out) in seen:
                out = out.clone()
            seen.add(id(out))
        result.append(out)
    return result


def _channels_last(t: torch.Tensor) -> torch.Tensor:
    return t.contiguous(memory_format=torch.channels_last) if t.dim() == 4 else t


def _hw(shape: Any) -> tuple[int, int]:
    return (int(shape[-2]), int(shape[-1])) if isinstance(shape, tuple) and len(shape) >= 2 else (1, 1)


def _hw_axes(shape: tuple[int, ...], axes: tuple[int, int] | None) -> tuple[int, int]:
    if axes is None:
        return _hw(shape)
    return int(shape[axes[0] - 1]), int(shape[axes[1] - 1])


def _union(windows: list[Window], real: tuple[int, int]) -> Window:
    """The smallest common-size window per item that holds every window of the list."""
    if len(windows) == 1:
        return Window(windows[0].offset, windows[0].size, real)
    lo = torch.stack([w.offset for w in windows]).amin(0)
    size = torch.tensor([list(w.size) for w in windows], device=lo.device)
    hi = torch.stack([w.offset + size[k] for k, w in enumerate(windows)]).amax(0)
    extent = (hi - lo).amax(0).tolist() if len(lo) else [max(s[0] for s in size.tolist()),
                                                          max(s[1] for s in size.tolist())]
    return Window(lo, (int(extent[0]), int(extent[1])), real)


def _args(graph: Graph, i: int, values: dict[int, Any], local: torch.Tensor | None = None) -> tuple[Any, Any]:
    """Node ``i``'s arguments from the values at hand (None for freed ones); per-image values (a gate)
    picked per item with ``local``."""

    def look(r: int) -> Any:
        if r in values:
            v = values[r]
            if local is not None and graph.carries(r) and isinstance(v, torch.Tensor):
                return v[local]
            return v
        if graph.nodes[r].kind == "const":
            return graph.call(r, lambda _: None)[0]
        return None

    return graph.arguments(i, look)
