"""Receptive fields: which input pixels an activation can see.

Two views of the same arithmetic, for any model :class:`~zfnet.visualize.Deconvnet` supports:

- :func:`receptive_fields`: per layer, the classic ``(jump, size, start)`` recurrence, layer by layer
  (``jump *= stride``, ``size += dilation * (kernel - 1) * jump``, ``start -= padding * jump``): the
  field of activation ``(r, c)`` is rows ``start + r * jump`` up to ``start + r * jump + size``,
  unclipped, which may reach into the padding. Uniform for every position, so it gives equal-sized
  patches (the deconvnet's own window when it projects one activation).
- :func:`receptive_field`: the exact bounding box ``(y0, x0, y1, x1)`` of the input pixels one
  activation depends on, clipped to the image. It follows the sets of rows and columns each stage
  reads, so ceil-mode pools, padding, dilation, unused trailing rows and adaptive pools are exact.

Boxes are half-open, like Python slices: ``image[:, y0:y1, x0:x1]``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import nn

from .deconvnet import Deconvnet, _Layout, _Stage

__all__ = ["ReceptiveField", "receptive_fields", "receptive_field"]


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


def _deconvnet(model: nn.Module | Deconvnet) -> Deconvnet:
    return model if isinstance(model, Deconvnet) else Deconvnet(model)


def _image_size(image_size: int | Sequence[int]) -> tuple[int, int]:
    if isinstance(image_size, bool) or not isinstance(image_size, (int, Sequence)):
        raise TypeError(f"image_size must be an int or (height, width), got {image_size!r}")
    size = (image_size, image_size) if isinstance(image_size, int) else tuple(image_size)
    if len(size) != 2 or not all(isinstance(s, int) and s > 0 for s in size):
        raise ValueError(f"image_size must be a positive int or (height, width), got {image_size!r}")
    return size  # type: ignore[return-value]


def _in_channels(deconv: Deconvnet, in_channels: int | None) -> int:
    if in_channels is not None:
        return int(in_channels)
    for stage in deconv._stages:
        if isinstance(stage.module, nn.Conv2d):
            return stage.module.in_channels
        if isinstance(stage.module, nn.BatchNorm2d):
            return stage.module.num_features
    return 3


def _layout(deconv: Deconvnet, image_size: tuple[int, int], in_channels: int | None) -> _Layout:
    return deconv._layout((_in_channels(deconv, in_channels), *image_size))


def _adaptive_windows(out_size: int, in_size: int) -> list[tuple[int, int]]:
    return [((i * in_size) // out_size, -((-(i + 1) * in_size) // out_size)) for i in range(out_size)]


def receptive_fields(model: nn.Module | Deconvnet, image_size: int | Sequence[int],
                     in_channels: int | None = None) -> dict[str, ReceptiveField]:
    """Receptive-field geometry ``(jump, size, start)`` of every layer of ``model``.

    Args:
        model: a model :class:`~zfnet.visualize.Deconvnet` supports, or a Deconvnet.
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
    layout = _layout(deconv, size, in_channels)
    whole = ReceptiveField((0, 0), size, (0, 0))
    jump, extent, start = [1, 1], [1, 1], [0, 0]
    per_stage: list[ReceptiveField] = []
    is_global = False
    for i, stage in enumerate(deconv._stages):
        geometry = _uniform_geometry(stage, layout, i)
        if geometry is None:
            is_global = True
        if not is_global:
            kernel, stride, padding, dilation = geometry
            for d in range(2):
                start[d] -= padding[d] * jump[d]
                extent[d] += dilation[d] * (kernel[d] - 1) * jump[d]
                jump[d] *= stride[d]
        per_stage.append(whole if is_global else ReceptiveField(tuple(jump), tuple(extent), tuple(start)))
    return {name: per_stage[index] for name, index in deconv._ends.items()}


_Geometry = tuple[tuple[int, int], tuple[int, int], tuple[int, int], tuple[int, int]]


def _uniform_geometry(stage: _Stage, layout: _Layout, i: int) -> _Geometry | None:
    """(kernel, stride, padding, dilation) of a stage with a uniform field; None where it sees everything."""
    if stage.local:
        return stage.kernel, stage.stride, stage.padding, stage.dilation
    if stage.kind == "avgpool":
        (_, h, w), (_, ho, wo) = layout.inputs[i], layout.outputs[i]
        if h % ho == 0 and w % wo == 0:
            k = (h // ho, w // wo)
            return k, k, (0, 0), (1, 1)
    return None


def receptive_field(model: nn.Module | Deconvnet, layer: str, position: Sequence[int],
                    image_size: int | Sequence[int], in_channels: int | None = None) -> tuple[int, int, int, int]:
    """Bounding box of the input pixels the activation of ``layer`` at ``position`` depends on.

    Follows, stage by stage down from ``layer``, the set of rows and the set of columns each stage
    reads (a kernel's taps at their stride and dilation, clipped to the map, so taps in the padding
    drop out; an adaptive pool's windows; everything, for a fully connected layer). The result is
    the exact bounding box: a pixel outside it never influences the activation, and for a network
    whose weights are all non-zero the pixels on its edges do.

    Args:
        model: a model :class:`~zfnet.visualize.Deconvnet` supports, or a Deconvnet.
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
    layout = _layout(deconv, size, in_channels)
    target = deconv._stage_index(layer)
    out_shape = layout.outputs[target]
    limits = out_shape[1:] if len(out_shape) == 3 else (1, 1)
    if len(position) != 2 or not all(0 <= int(p) < lim for p, lim in zip(position, limits)):
        raise ValueError(f"position must be (row, column) inside {layer}'s {limits[0]}x{limits[1]} map, "
                         f"got {tuple(position)}")
    # The rows and columns of the current stage's output the activation depends on; None: all of it.
    sets: list[torch.Tensor] | None = None
    if len(out_shape) == 3:
        sets = [torch.tensor([int(position[0])]), torch.tensor([int(position[1])])]
    for i in range(target, -1, -1):
        stage, in_shape = deconv._stages[i], layout.inputs[i]
        if len(in_shape) != 3:  # a vector: no rows and columns yet
            sets = None
        elif sets is None or not (stage.local or stage.kind == "avgpool"):  # whole maps in, whole maps read
            sets = [torch.arange(in_shape[1]), torch.arange(in_shape[2])]
        elif stage.kind == "avgpool":
            out_size = layout.outputs[i][1:]
            sets = [torch.tensor(sorted({q for r in sets[d].tolist()
                                         for q in range(*_adaptive_windows(out_size[d], in_shape[1 + d])[r])}))
                    for d in range(2)]
        else:
            new = []
            for d in range(2):
                taps = torch.arange(stage.kernel[d]) * stage.dilation[d]
                rows = (sets[d][:, None] * stage.stride[d] - stage.padding[d] + taps).flatten()
                new.append(torch.unique(rows[(rows >= 0) & (rows < in_shape[1 + d])]))
            sets = new
    if sets is None or not len(sets[0]) or not len(sets[1]):
        return 0, 0, 0, 0
    return int(sets[0].min()), int(sets[1].min()), int(sets[0].max()) + 1, int(sets[1].max()) + 1
