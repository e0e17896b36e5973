"""Receptive fields: which input pixels an activation can see.

Two views of the same arithmetic, for any model :func:`zfnet.graph.trace` can trace:

- :func:`receptive_fields`: per layer, the classic ``(jump, size, start)`` recurrence, layer by layer
  (``jump *= stride``, ``size += dilation * (kernel - 1) * jump``, ``start -= padding * jump``): the
  field of activation ``(r, c)`` is rows ``start + r * jump`` up to ``start + r * jump + size``,
  unclipped, which may reach into the padding. Uniform for every position, so it gives equal-sized
  patches (the deconvnet's own window when it projects one activation).
- :func:`receptive_field`: the exact bounding box ``(y0, x0, y1, x1)`` of the input pixels one
  activation depends on, clipped to the image. It follows the sets of rows and columns each stage
  reads, so ceil-mode pools, padding, dilation, unused trailing rows and adaptive pools are exact.

Where paths join (a residual sum, a concatenation) the field is the union of the paths' fields; the
branch of a gate (squeeze-excitation) is held, as in the deconvnet, so its global summary does not
make every field the whole image; an op that mixes the whole map (a fully connected layer, a
GroupNorm) sees the whole image.

Boxes are half-open, like Python slices: ``image[:, y0:y1, x0:x1]``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import nn

from ..graph import Graph, eval_mode
from .deconvnet import Deconvnet


@dataclass(frozen=True)
class ReceptiveField:
    """Receptive-field geometry of one layer, per dimension (rows, columns), in input pixels.

    Attributes:
        jump: input pixels between neighbouring activations (the product of the strides below).
        size: extent of one activation's field (its kernel seen from the input).
        start: first input row / column of activation ``(0, 0)``'s field; negative where it begins
            in the padding.

    A fully connected layer (or anything after one) sees the whole image: ``jump = (0, 0)``,
    ``size = (H, W)``, ``start = (0, 0)``.
    """

    jump: tuple[int, int]
    size: tuple[int, int]
    start: tuple[int, int]

    def window(self, position: Sequence[int]) -> tuple[int, int, int, int]:
        """Unclipped field ``(y0, x0, y1, x1)`` of the activation at ``position`` (row, column)."""
        y0 = self.start[0] + int(position[0]) * self.jump[0]
        x0 = self.start[1] + int(position[1]) * self.jump[1]
        return y0, x0, y0 + self.size[0], x0 + self.size[1]

    def windows(self, positions: torch.Tensor) -> torch.Tensor:
        """Unclipped fields of many activations: (N, 2) positions -> (N, 4) ``(y0, x0, y1, x1)``."""
        start = torch.tensor(self.start, device=positions.device)
        jump = torch.tensor(self.jump, device=positions.device)
        size = torch.tensor(self.size, device=positions.device)
        top_left = start + positions.long() * jump
        return torch.cat((top_left, top_left + size), dim=1)


def crop_windows(images: torch.Tensor, windows: torch.Tensor) -> torch.Tensor:
    """Per item, the window ``(y0, x0, y1, x1)`` of ``images[n]`` (as :meth:`ReceptiveField.windows` gives
    them, all of one size), zero where it leaves the image.

    Shape:
        images (N, C, H, W), windows (N, 4) -> (N, C, h, w).

    Example:
        >>> crop_windows(torch.ones(1, 1, 4, 4), torch.tensor([[-1, -1, 2, 2]]))[0, 0]
        tensor([[0., 0., 0.],
                [0., 1., 1.],
                [0., 1., 1.]])
    """
    n, c, height, width = images.shape
    h, w = (int(windows[0, 2] - windows[0, 0]), int(windows[0, 3] - windows[0, 1])) if n else (0, 0)
    out = images.new_zeros((n, c, h, w))
    for i, (y0, x0, y1, x1) in enumerate(windows.tolist()):
        sy0, sx0, sy1, sx1 = max(y0, 0), max(x0, 0), min(y1, height), min(x1, width)
        if sy1 > sy0 and sx1 > sx0:
            out[i, :, sy0 - y0:sy1 - y0, sx0 - x0:sx1 - x0] = images[i, :, sy0:sy1, sx0:sx1]
    return out


def _deconvnet(model: nn.Module | Deconvnet) -> Deconvnet:
    return model if isinstance(model, Deconvnet) else Deconvnet(model)


def _image_size(image_size: int | Sequence[int]) -> tuple[int, int]:
    if isinstance(image_size, bool) or not isinstance(image_size, (int, Sequence)):
        raise TypeError(f"image_size must be an int or (height, width), got {image_size!r}")
    size = (image_size, image_size) if isinstance(image_size, int) else tuple(image_size)
    if len(size) != 2 or not all(isinstance(s, int) and s > 0 for s in size):
        raise ValueError(f"image_size must be a positive int or (height, width), got {image_size!r}")
    return size  # type: ignore[return-value]


def _in_channels(model: nn.Module, in_channels: int | None) -> int:
    if in_channels is not None:
        return int(in_channels)
    for module in model.modules():
        if isinstance(module, nn.Conv2d):
            return module.in_channels
        if isinstance(module, nn.BatchNorm2d):
            return module.num_features
    return 3


def _graph_layout(deconv: Deconvnet, image_size: tuple[int, int], in_channels: int | None):
    with eval_mode(deconv.model), torch.no_grad():
        return deconv.graph.layout((_in_channels(deconv.model, in_channels), *image_size))


def _hw(shape: tuple[int, ...], axes: tuple[int, int] | None) -> tuple[int, int] | None:
    if isinstance(shape, list) and shape:  # the parts of a chunk / split share rows and columns
        shape = shape[0]
    if axes is None or not isinstance(shape, tuple):
        return None
    return shape[axes[0] - 1], shape[axes[1] - 1]


def _adaptive_windows(out_size: int, in_size: int) -> list[tuple[int, int]]:
    return [((i * in_size) // out_size, -((-(i + 1) * in_size) // out_size)) for i in range(out_size)]


def receptive_fields(model: nn.Module | Deconvnet, image_size: int | Sequence[int],
                     in_channels: int | None = None) -> dict[str, ReceptiveField]:
    """Receptive-field geometry ``(jump, size, start)`` of every layer of ``model``.

    Args:
        model: a model :class:`~zfnet.visualize.deconvnet.Deconvnet` supports, or a Deconvnet.
        image_size: input height and width (one int for square images).
        in_channels: input channels; default: those of the first convolution.

    Returns:
        ``{layer name: ReceptiveField}`` for every name :attr:`Deconvnet.layer_names` lists
        (a container has the geometry of its output). An adaptive average pool whose windows are
        not uniform (input size not a multiple of its output size) and every fully connected layer
        see the whole image.

    Example:
        >>> from zfnet.models import build
        >>> rf = receptive_fields(build("zfnet"), 224)
        >>> rf["conv1"], rf["conv5"].size
        (ReceptiveField(jump=(2, 2), size=(7, 7), start=(-1, -1)), (139, 139))
    """
    deconv = _deconvnet(model)
    size = _image_size(image_size)
    layout = _graph_layout(deconv, size, in_channels)
    graph: Graph = deconv.graph
    whole = ReceptiveField((0, 0), size, (0, 0))
    # per node and dimension: (jump, start, end) of position 0's field; None: the whole image
    fields: dict[int, tuple[tuple[int, int, int], tuple[int, int, int]] | None] = {0: ((1, 0, 1), (1, 0, 1))}
    for node in graph.nodes[1:]:
        i = node.index
        if node.kind != "op" or not node.inputs:
            continue
        g = layout.geometry[i]
        ins = [fields.get(r) for r in node.inputs]
        if g is None or any(f is None for f in ins):
            fields[i] = None
            continue
        per_dim = []
        for d in range(2):
            jumps = {f[d][0] for f in ins}  # type: ignore[index]
            if len(jumps) != 1:  # paths of different strides meet: no uniform field
                per_dim = None
                break
            jump = jumps.pop()
            lo = min(f[d][1] for f in ins)  # type: ignore[index]
            hi = max(f[d][2] for f in ins)  # type: ignore[index]
            k, s, p = g.extent(d), g.stride[d], g.padding[d]
            per_dim.append((jump * s, lo - p * jump, hi + (k - 1 - p) * jump))
        fields[i] = tuple(per_dim) if per_dim is not None else None  # type: ignore[assignment]
    result = {}
    for name, i in graph.layers.items():
        f = fields.get(i)
        if f is None or _hw(layout.shapes[i], layout.axes[i]) is None:
            result[name] = whole
        else:
            result[name] = ReceptiveField((f[0][0], f[1][0]), (f[0][2] - f[0][1], f[1][2] - f[1][1]),
                                          (f[0][1], f[1][1]))
    return result


def receptive_field(model: nn.Module | Deconvnet, layer: str, position: Sequence[int],
                    image_size: int | Sequence[int], in_channels: int | None = None) -> tuple[int, int, int, int]:
    """Bounding box of the input pixels the activation of ``layer`` at ``position`` depends on.

    Follows, stage by stage down from ``layer``, the set of rows and the set of columns each stage
    reads (a kernel's taps at their stride and dilation, clipped to the map, so taps in the padding
    drop out; an adaptive pool's windows; everything, for a fully connected layer). The result is
    the exact bounding box: a pixel outside it never influences the activation, and for a network
    whose weights are all non-zero the pixels on its edges do.

    Args:
        model: a model :class:`~zfnet.visualize.deconvnet.Deconvnet` supports, or a Deconvnet.
        layer: a layer name (see :attr:`Deconvnet.layer_names`).
        position: (row, column) of the activation in the layer's map; (0, 0) for a fully
            connected layer.
        image_size: input height and width (one int for square images).
        in_channels: input channels; default: those of the first convolution.

    Returns:
        ``(y0, x0, y1, x1)``, half-open (``image[:, y0:y1, x0:x1]``), within the image.

    Example:
        >>> from zfnet.models import build
        >>> receptive_field(build("zfnet"), "conv1", (0, 0), 224)
        (0, 0, 6, 6)
    """
    deconv = _deconvnet(model)
    size = _image_size(image_size)
    layout = _graph_layout(deconv, size, in_channels)
    graph: Graph = deconv.graph
    target = graph.index_of(layer)
    hw = _hw(layout.shapes[target], layout.axes[target])
    limits = hw if hw is not None else (1, 1)
    if len(position) != 2 or not all(0 <= int(p) < lim for p, lim in zip(position, limits)):
        raise ValueError(f"position must be (row, column) inside {layer}'s {limits[0]}x{limits[1]} map, "
                         f"got {tuple(position)}")
    graph.require_rules(target, "the receptive field")
    # per node, the rows and columns of its output the activation depends on; None: all of it
    sets: dict[int, list[torch.Tensor] | None] = {
        target: [torch.tensor([int(position[0])]), torch.tensor([int(position[1])])] if hw is not None else None}
    for i in range(target, 0, -1):
        if i not in sets:
            continue
        node, mine = graph.nodes[i], sets.pop(i)
        g = layout.geometry[i]
        for r in node.inputs:
            in_hw = _hw(layout.shapes[r], layout.axes[r])
            if in_hw is None:
                new = None
            elif mine is None or (g is None and node.op.kind != "adaptive_avgpool"):
                new = [torch.arange(in_hw[0]), torch.arange(in_hw[1])]
            elif g is None:  # adaptive average pool with uneven windows
                out_hw = _hw(layout.shapes[i], layout.axes[i])
                new = [torch.tensor(sorted({q for o in mine[d].tolist()
                                            for q in range(*_adaptive_windows(out_hw[d], in_hw[d])[o])}))
                       for d in range(2)]
            else:
                new = []
                for d in range(2):
                    taps = torch.arange(g.kernel[d]) * g.dilation[d]
                    rows = (mine[d][:, None] * g.stride[d] - g.padding[d] + taps).flatten()
                    new.append(torch.unique(rows[(rows >= 0) & (rows < in_hw[d])]))
            if r in sets:
                old = sets[r]
                sets[r] = None if old is None or new is None else [torch.unique(torch.cat((old[d], new[d])))
                                                                   for d in range(2)]
            else:
                sets[r] = new
    found = sets.get(0, [torch.arange(size[0]), torch.arange(size[1])]) if 0 in sets else None
    if 0 in sets and found is None:
        found = [torch.arange(size[0]), torch.arange(size[1])]
    if found is None or not len(found[0]) or not len(found[1]):
        return 0, 0, 0, 0
    return int(found[0].min()), int(found[1].min()), int(found[0].max()) + 1, int(found[1].max()) + 1
