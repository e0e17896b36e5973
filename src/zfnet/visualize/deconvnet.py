"""The deconvolutional network of Zeiler & Fergus (2014, §2.1): feature activations projected to pixels.

To see what excites one feature map, every other activation of the layer is set to zero and the
signal is run back down the network, layer by layer, to the input pixels:

- **unpooling**: a max-pool's forward pass records the location of each window's maximum (the
  *switches*); the deconvnet puts each signal value back at its switch. Where overlapping windows
  (ZFNet's 3x3 stride-2 pools) share a switch their values add, which makes unpooling the exact
  adjoint (transpose) of max-pooling at the recorded switches;
- **rectification**: the signal goes through a ReLU, as in the forward pass;
- **filtering**: convolution with the transposed filters (``conv_transpose2d`` with the layer's own
  weights, no bias).

Contrast normalisation and dropout pass the signal unchanged, as in the paper. Layers the paper
does not have get their adjoints: BatchNorm (eval mode) scales the signal by its per-channel factor
``weight / sqrt(running_var + eps)``; Linear, Flatten and AdaptiveAvgPool2d are transposed, so fully
connected layers can be projected too. For a network without normalisation layers the projection is
therefore the gradient of the activation with respect to the input when every ReLU's backward pass
is replaced by a ReLU of the incoming gradient (the "deconvnet rule"), scaled by the activation.

:class:`Deconvnet` works on any feed-forward CNN built from the supported modules: it lists the
model's leaf modules in execution order and checks, once per input size, that running them in that
order reproduces ``model(x)``. It computes the projection directly (no autograd, no hooks), batched,
and, for a single activation, only inside that activation's receptive field at every layer.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cached_property

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["Deconvnet", "SUPPORTED_MODULES", "KEEP_MODES"]

_DROPOUTS = (nn.Dropout, nn.Dropout1d, nn.Dropout2d, nn.Dropout3d, nn.AlphaDropout, nn.FeatureAlphaDropout)

#: The module types a :class:`Deconvnet` can run backwards.
SUPPORTED_MODULES: tuple[type[nn.Module], ...] = (
    nn.Conv2d, nn.ReLU, nn.MaxPool2d, nn.LocalResponseNorm, nn.BatchNorm2d, *_DROPOUTS,
    nn.Flatten, nn.AdaptiveAvgPool2d, nn.Linear, nn.Identity,
)

#: What :meth:`Deconvnet.project` keeps of the chosen feature map.
KEEP_MODES = ("max", "map")

# Stage kinds. "Local" stages compute each output position from a fixed window of input positions,
# so a single activation can be projected inside its receptive field only.
_LOCAL = frozenset({"conv", "pool", "relu", "lrn", "bn", "pass"})

# Bit-for-bit the same operations run in model(x) and in the stage chain on CPU; the tolerance of
# the chain check only absorbs kernels that are not deterministic (some GPU algorithms). A missing,
# extra or reordered stage changes the output by far more.
_CHAIN_RTOL, _CHAIN_ATOL = 1e-4, 1e-5


def _pair(v: int | Sequence[int]) -> tuple[int, int]:
    return (int(v), int(v)) if isinstance(v, int) else (int(v[0]), int(v[1]))


@dataclass(frozen=True)
class _Stage:
    """One leaf module of the chain and its window geometry (per spatial dimension)."""

    name: str
    module: nn.Module
    kind: str
    kernel: tuple[int, int] = (1, 1)
    stride: tuple[int, int] = (1, 1)
    padding: tuple[int, int] = (0, 0)  # before the first row / column
    dilation: tuple[int, int] = (1, 1)

    @property
    def local(self) -> bool:
        return self.kind in _LOCAL

    def input_window(self, offset: torch.Tensor, size: tuple[int, int]) -> tuple[torch.Tensor, tuple[int, int]]:
        """The input window (offsets (N, 2), size) a local stage reads to compute an output window."""
        k, s, p, d = self.kernel, self.stride, self.padding, self.dilation
        step = torch.tensor(s, device=offset.device)
        pad = torch.tensor(p, device=offset.device)
        in_size = tuple((size[i] - 1) * s[i] + d[i] * (k[i] - 1) + 1 for i in range(2))
        return offset * step - pad, in_size  # type: ignore[return-value]


def _make_stage(name: str, module: nn.Module) -> _Stage:
    label = name or "<model>"
    if isinstance(module, nn.Conv2d):
        if module.padding_mode != "zeros":
            raise ValueError(f"{label} is a Conv2d with padding_mode={module.padding_mode!r}; "
                             "the deconvnet supports padding_mode='zeros' only")
        k, d = _pair(module.kernel_size), _pair(module.dilation)
        if isinstance(module.padding, str):  # "valid" or "same" (stride 1): PyTorch pads total // 2 before
            pad = (0, 0) if module.padding == "valid" else tuple(d[i] * (k[i] - 1) // 2 for i in range(2))
        else:
            pad = _pair(module.padding)
        return _Stage(name, module, "conv", k, _pair(module.stride), pad, d)  # type: ignore[arg-type]
    if isinstance(module, nn.MaxPool2d):
        k = _pair(module.kernel_size)
        stride = _pair(module.stride if module.stride is not None else module.kernel_size)
        return _Stage(name, module, "pool", k, stride, _pair(module.padding), _pair(module.dilation))
    if isinstance(module, nn.BatchNorm2d):
        if module.running_var is None:
            raise ValueError(f"{label} is a BatchNorm2d without running statistics (track_running_stats=False); "
                             "its eval-mode output depends on the batch, so the deconvnet cannot transpose it")
        return _Stage(name, module, "bn")
    kinds = ((nn.ReLU, "relu"), (nn.LocalResponseNorm, "lrn"), (_DROPOUTS + (nn.Identity,), "pass"),
             (nn.Flatten, "flatten"), (nn.AdaptiveAvgPool2d, "avgpool"), (nn.Linear, "linear"))
    for types, kind in kinds:
        if isinstance(module, types):
            return _Stage(name, module, kind)
    supported = ", ".join(t.__name__ for t in SUPPORTED_MODULES)
    raise TypeError(f"{label} is a {type(module).__name__}, which the deconvnet does not support; "
                    f"supported modules: {supported}")


def _collect(module: nn.Module, prefix: str, stages: list[_Stage], ends: dict[str, int]) -> None:
    """Append ``module``'s leaves to ``stages`` in registration order; ``ends[name]``: its last stage."""
    children = list(module.named_children())
    if isinstance(module, SUPPORTED_MODULES) or not children:
        stages.append(_make_stage(prefix, module))
    else:
        for child_name, child in children:
            _collect(child, f"{prefix}.{child_name}" if prefix else child_name, stages, ends)
    if prefix:
        ends[prefix] = len(stages) - 1


@dataclass(frozen=True)
class _Layout:
    """Per-stage input and output shapes (without the batch dimension) for one input shape."""

    inputs: list[tuple[int, ...]]
    outputs: list[tuple[int, ...]]


@dataclass(frozen=True)
class _Window:
    """A rectangle of a feature map per item: top-left ``offset`` (N, 2) in map coordinates and ``size``.

    A *native* window is the whole map, run with the stages' own padding. Any other window may
    reach past the map; its positions there hold the value of the next stage's padding.
    """

    offset: torch.Tensor
    size: tuple[int, int]
    real: tuple[int, int]  # the map's height and width
    native: bool = False

    @cached_property
    def inside(self) -> bool:
        """Whether every item's window lies on the map (no masking needed)."""
        if self.native:
            return True
        lo = bool((self.offset >= 0).all())
        hi = bool((self.offset[:, 0] + self.size[0] <= self.real[0]).all()
                  and (self.offset[:, 1] + self.size[1] <= self.real[1]).all())
        return lo and hi

    @cached_property
    def outside(self) -> torch.Tensor:
        """(N, 1, h, w) bool: which window positions lie off the map."""
        ys = self.offset[:, :1] + torch.arange(self.size[0], device=self.offset.device)
        xs = self.offset[:, 1:] + torch.arange(self.size[1], device=self.offset.device)
        ok_y = (ys >= 0) & (ys < self.real[0])
        ok_x = (xs >= 0) & (xs < self.real[1])
        return ~(ok_y[:, :, None] & ok_x[:, None, :])[:, None]

    def fill_outside_(self, t: torch.Tensor, value: float) -> torch.Tensor:
        """Set the positions of ``t`` (N, C, h, w) that lie off the map to ``value``, in place."""
        # One masked pass: filling the off-map strips slice by slice is ~15x slower on a CPU.
        return t if self.inside else t.masked_fill_(self.outside, value)

    def pick(self, index: torch.Tensor) -> _Window:
        """The windows of the items ``index`` selects."""
        return _Window(self.offset[index], self.size, self.real, self.native)


def _native_window(n: int, shape: tuple[int, ...], device: torch.device) -> _Window | None:
    """The whole map of a (C, H, W) stage input or output for ``n`` items; None for vectors."""
    if len(shape) != 3:
        return None
    zero = torch.zeros(n, 2, dtype=torch.long, device=device)
    return _Window(zero, (shape[1], shape[2]), (shape[1], shape[2]), native=True)


def _spans(offset: int, size: int, real: int) -> tuple[int, int, int, int] | None:
    """(window start, window end, map start, map end) of the part of a window that lies on the map."""
    lo, hi = max(offset, 0), min(offset + size, real)
    if hi <= lo:
        return None
    return lo - offset, hi - offset, lo, hi


def _crop(t: torch.Tensor, rows: torch.Tensor, window: _Window, fill: float) -> torch.Tensor:
    """Per item ``n``: the window of ``t[rows[n]]``, ``fill`` where it leaves the map. (N, C, h, w)."""
    n, (h, w) = len(rows), window.size
    layout = torch.channels_last if t.is_contiguous(memory_format=torch.channels_last) else torch.contiguous_format
    out = torch.empty((n, t.shape[1], h, w), dtype=t.dtype, device=t.device, memory_format=layout).fill_(fill)
    offsets, rows_l = window.offset.tolist(), rows.tolist()
    for i in range(n):
        sy, sx = _spans(offsets[i][0], h, t.shape[2]), _spans(offsets[i][1], w, t.shape[3])
        if sy is not None and sx is not None:
            out[i, :, sy[0]:sy[1], sx[0]:sx[1]] = t[rows_l[i], :, sy[2]:sy[3], sx[2]:sx[3]]
    return out


def _uncrop(t: torch.Tensor, window: _Window) -> torch.Tensor:
    """Adjoint of :func:`_crop` with one item per row: windows placed on zero maps. (N, C, H, W)."""
    (h, w), (height, width) = window.size, window.real
    out = t.new_zeros((t.shape[0], t.shape[1], height, width))
    for i, (oy, ox) in enumerate(window.offset.tolist()):
        sy, sx = _spans(oy, h, height), _spans(ox, w, width)
        if sy is not None and sx is not None:
            out[i, :, sy[2]:sy[3], sx[2]:sx[3]] = t[i, :, sy[0]:sy[1], sx[0]:sx[1]]
    return out


def _adaptive_pool_matrix(out_size: int, in_size: int, like: torch.Tensor) -> torch.Tensor:
    """(out, in) matrix of AdaptiveAvgPool along one dimension: row i averages [floor(i*in/out), ceil(...))."""
    m = like.new_zeros((out_size, in_size))
    for i in range(out_size):
        lo, hi = (i * in_size) // out_size, -((-(i + 1) * in_size) // out_size)
        m[i, lo:hi] = 1.0 / (hi - lo)
    return m


class Deconvnet:
    """Project feature activations of a feed-forward CNN back to pixel space (Zeiler & Fergus 2014, §2.1).

    Args:
        model: a feed-forward network made of the modules in :data:`SUPPORTED_MODULES`, nested in
            ``nn.Sequential`` containers or in modules whose ``forward`` runs their children in
            registration order; a ``torch.flatten`` between a 4-D tensor and a ``Linear`` (the
            torchvision VGG/AlexNet pattern ``features -> avgpool -> flatten -> classifier``) is
            recognised. The first projection for each input size checks that this chain of stages
            reproduces ``model(x)`` and raises ``ValueError`` if it does not.
        chunk_bytes: approximate working memory of one chunk of projections, in bytes.

    Raises:
        TypeError: a leaf module of an unsupported type (the message names its path and type).
        ValueError: a Conv2d with non-zero padding mode, or a BatchNorm2d without running statistics.

    Example:
        >>> import torch
        >>> from zfnet.models import build
        >>> net = build("zfnet-tiny", num_classes=5)
        >>> deconv = Deconvnet(net)
        >>> deconv.project(torch.randn(2, 3, 64, 64), "conv5", channels=torch.tensor([3, 7])).shape
        torch.Size([2, 3, 64, 64])
    """

    def __init__(self, model: nn.Module, *, chunk_bytes: int = 256 * 2**20) -> None:
        if not isinstance(model, nn.Module):
            raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
        if chunk_bytes < 1:
            raise ValueError(f"chunk_bytes must be positive, got {chunk_bytes}")
        self.model = model
        self.chunk_bytes = int(chunk_bytes)
        stages: list[_Stage] = []
        ends: dict[str, int] = {}
        _collect(model, "", stages, ends)
        self._stages = stages
        self._ends = {name: ends[name] for name, _ in model.named_modules() if name in ends}  # pre-order
        self._layouts: dict[tuple[int, ...], _Layout] = {}
        self._strategy = "auto"  # "cone" or "shared" to force one way of computing known positions

    # -- the chain ---------------------------------------------------------------------------------

    @property
    def layer_names(self) -> list[str]:
        """Every name :meth:`project` accepts: the model's submodule names, containers included."""
        return list(self._ends)

    def output_shape(self, layer: str, input_shape: Sequence[int]) -> tuple[int, ...]:
        """Shape of ``layer``'s output for one image of shape ``input_shape`` (C, H, W), batch left out.

        Example:
            >>> from zfnet.models import build
            >>> Deconvnet(build("zfnet-tiny")).output_shape("conv5", (3, 64, 64))
            (32, 3, 3)
        """
        return self._layout(input_shape).outputs[self._stage_index(layer)]

    def _stage_index(self, layer: str) -> int:
        """Index in the stage chain of the stage whose output is ``layer``'s output."""
        if not isinstance(layer, str):
            raise TypeError(f"layer must be a str (a submodule name), got {type(layer).__name__}")
        if layer not in self._ends:
            raise ValueError(f"unknown layer {layer!r}; valid names: {', '.join(self._ends)}")
        return self._ends[layer]

    def _param_like(self) -> torch.Tensor | None:
        for t in self.model.parameters():
            return t
        for t in self.model.buffers():
            if t.is_floating_point():
                return t
        return None

    def _run_stage(self, stage: _Stage, t: torch.Tensor) -> torch.Tensor:
        if stage.kind == "linear" and t.dim() > 2:
            if t[0].numel() != stage.module.in_features:
                raise ValueError(f"{stage.name} (Linear with {stage.module.in_features} inputs) receives a tensor "
                                 f"of shape {tuple(t.shape)}")
            t = t.flatten(1)  # the functional torch.flatten of torchvision-style models
        out = stage.module(t)
        if not isinstance(out, torch.Tensor):
            raise ValueError(f"{stage.name} returned a {type(out).__name__}, not a tensor")
        return out

    def _layout(self, input_shape: Sequence[int]) -> _Layout:
        """Shapes of every stage for inputs of shape ``(C, H, W)``, after checking the chain (cached).

        The check runs the model and the stage chain on one seeded random image and compares their
        outputs.
        """
        key = tuple(int(s) for s in input_shape)
        if key in self._layouts:
            return self._layouts[key]
        like = self._param_like()
        gen = torch.Generator().manual_seed(0)
        probe = torch.randn((1, *key), generator=gen)
        if like is not None:
            probe = probe.to(device=like.device, dtype=like.dtype)
        inputs, outputs = [], []
        with _eval_mode(self.model), torch.no_grad():
            expected = self.model(probe)
            t = probe
            for stage in self._stages:
                inputs.append(tuple(t.shape[1:]))
                try:
                    t = self._run_stage(stage, t)
                except RuntimeError as err:
                    raise ValueError(self._chain_error(f"running {stage.name} on a {tuple(t.shape)} tensor "
                                                       f"fails: {err}")) from err
                outputs.append(tuple(t.shape[1:]))
        if not isinstance(expected, torch.Tensor) or expected.shape != t.shape:
            got = tuple(expected.shape) if isinstance(expected, torch.Tensor) else type(expected).__name__
            raise ValueError(self._chain_error(f"the model returns {got}, the chain {tuple(t.shape)}"))
        scale = float(expected.abs().max()) if expected.numel() else 0.0
        if not torch.allclose(t, expected, rtol=_CHAIN_RTOL, atol=_CHAIN_ATOL * max(1.0, scale)):
            diff = float((t - expected).abs().max())
            raise ValueError(self._chain_error(f"outputs differ by up to {diff:.3g}"))
        for stage, shape in zip(self._stages, outputs):
            if stage.kind in ("conv", "pool", "bn", "lrn") and len(shape) != 3:
                raise ValueError(f"{stage.name} ({type(stage.module).__name__}) outputs shape {shape} per image; "
                                 "the deconvnet needs (C, H, W) maps there")
        self._layouts[key] = _Layout(inputs, outputs)
        return self._layouts[key]

    def _chain_error(self, detail: str) -> str:
        order = " -> ".join(s.name or "<model>" for s in self._stages)
        return ("the model's leaf modules, run in registration order, do not reproduce model(x) "
                f"({detail}); the deconvnet needs a feed-forward model whose forward runs them in that "
                f"order. Chain: {order}")

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
            layer: a submodule name from :attr:`layer_names`, e.g. ``"conv5"`` for the zfnet models
                or ``"features.12"``; a container is projected from its output.
            channels: the feature map (channel, or unit of a fully connected layer) to project: one
                int for every item, or one per item (1-D, length N).
            keep: ``"max"``: the single strongest activation of the map, with its value; ``"map"``:
                the whole map. One of :data:`KEEP_MODES`.
            positions: optional (N, 2) integer (row, column) of the activation to keep instead of
                the maximum (``keep="max"`` only); known positions (e.g. from
                :func:`zfnet.visualize.top_activations`) let the forward pass run only inside
                each activation's receptive field.
            image_index: optional (N,) integers: item ``n`` projects image ``x[image_index[n]]``,
                so several maps of one image share its forward pass. Default: one item per image.

        Returns:
            The projections, (N, C, H, W) with N = B, or ``len(image_index)``; dtype and device of ``x``.

        Raises:
            ValueError: an unknown layer (the message lists the valid names), a channel, position or
                image index out of range, a ``keep`` other than ``"max"``/``"map"``, ``positions``
                with ``keep="map"``, or a model whose chain of stages does not reproduce ``model(x)``.
            TypeError: ``x``, ``layer``, ``channels``, ``positions`` or ``image_index`` of the wrong type.

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
        proj, _, _ = self._project(x, layer, channels, keep, positions, image_index)
        return proj

    # -- the engine --------------------------------------------------------------------------------

    def _project(self, x: torch.Tensor, layer: str, channels: int | Sequence[int] | torch.Tensor, keep: str,
                 positions: torch.Tensor | None, image_index: torch.Tensor | None
                 ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """:meth:`project`, also returning the kept activation values (N,) and positions (N, 2)."""
        target = self._stage_index(layer)
        if not isinstance(x, torch.Tensor):
            raise TypeError(f"x must be a torch.Tensor, got {type(x).__name__}")
        if x.dim() != 4 or not x.is_floating_point():
            raise ValueError(f"x must be a floating-point (B, C, H, W) tensor, got {x.dtype} of shape {tuple(x.shape)}")
        if keep not in KEEP_MODES:
            raise ValueError(f"keep must be one of {', '.join(KEEP_MODES)}, got {keep!r}")
        rows = self._check_index(image_index, len(x), x.device)
        n = len(rows)
        layout = self._layout(x.shape[1:])
        out_shape = layout.outputs[target]
        if len(out_shape) not in (1, 3):
            raise ValueError(f"{layer} outputs shape {out_shape} per image; projecting needs (C,) or (C, H, W)")
        chans = self._check_channels(channels, n, out_shape[0], layer, x.device)
        spatial = len(out_shape) == 3
        if positions is not None:
            if keep != "max":
                raise ValueError("positions select the activation to keep with keep='max'; "
                                 f"got keep={keep!r}")
            positions = self._check_positions(positions, n, out_shape, layer, x.device)
        result = x.new_zeros((n, *x.shape[1:]))
        values = x.new_zeros(n)
        where = torch.zeros(n, 2, dtype=torch.long, device=x.device)
        if n == 0:
            return result, values, where
        with _eval_mode(self.model), torch.no_grad():
            if spatial and positions is not None and self._prefer_cone(target, layout, n, len(torch.unique(rows))):
                step = self._chunk(target, layout, single=True, n=n, x=x)
                for lo in range(0, n, step):
                    sl = slice(lo, lo + step)
                    proj, val = self._cone(x, rows[sl], chans[sl], positions[sl], target, layout)
                    result[sl], values[sl], where[sl] = proj, val, positions[sl]
            else:
                self._shared(x, rows, chans, positions, keep, target, layout, result, values, where)
        return result, values, where

    def _prefer_cone(self, target: int, layout: _Layout, items: int, images: int) -> bool:
        """Whether forward passes inside each activation's field cost less than one per whole image."""
        if self._strategy != "auto":  # the tests force one way or the other
            return self._strategy == "cone"
        return items * self._cost(target, layout, single=True) < images * self._cost(target, layout, single=False)

    def _check_index(self, image_index: torch.Tensor | None, b: int, device: torch.device) -> torch.Tensor:
        if image_index is None:
            return torch.arange(b, device=device)
        if not isinstance(image_index, torch.Tensor) or image_index.dim() != 1 or image_index.is_floating_point():
            raise TypeError("image_index must be a 1-D integer tensor")
        if len(image_index) and (int(image_index.min()) < 0 or int(image_index.max()) >= b):
            raise ValueError(f"image_index must lie in [0, {b}) for {b} images, got values in "
                             f"[{int(image_index.min())}, {int(image_index.max())}]")
        return image_index.to(device=device, dtype=torch.long)

    @staticmethod
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

    @staticmethod
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

    def _windows(self, target: int, layout: _Layout, top: _Window | None, n: int,
                 device: torch.device) -> list[tuple[_Window | None, _Window | None]]:
        """(input window, output window) of every stage up to ``target``, from the target's window down.

        A local stage reads the input window its output window needs (its receptive field); any
        other stage, and every stage below it, reads whole maps (native windows; None for vectors).
        """
        out: list[tuple[_Window | None, _Window | None]] = [(None, None)] * (target + 1)
        win = top
        for i in range(target, -1, -1):
            stage, in_shape = self._stages[i], layout.inputs[i]
            if stage.local and win is not None and not win.native:
                offset, size = stage.input_window(win.offset, win.size)
                in_win: _Window | None = _Window(offset, size, (in_shape[1], in_shape[2]))
            else:
                in_win = _native_window(n, in_shape, device)
            out[i] = (in_win, win)
            win = in_win
        return out

    def _item_windows(self, target: int, layout: _Layout, positions: torch.Tensor | None, n: int,
                      device: torch.device) -> list[tuple[_Window | None, _Window | None]]:
        """Windows of ``n`` items: single activations at ``positions``, or whole maps when None."""
        shape = layout.outputs[target]
        if len(shape) != 3:
            top = None
        elif positions is None:
            top = _native_window(n, shape, device)
        else:
            top = _Window(positions, (1, 1), (shape[1], shape[2]))
        return self._windows(target, layout, top, n, device)

    def _cost(self, target: int, layout: _Layout, single: bool) -> float:
        """Rough multiply-adds of one item's forward pass over its windows."""
        zero = torch.zeros(1, 2, dtype=torch.long)
        windows = self._item_windows(target, layout, zero if single else None, 1, zero.device)
        total = 0.0
        for i in range(target + 1):
            stage, (_, out_win) = self._stages[i], windows[i]
            numel = layout.outputs[i][0] * (math.prod(out_win.size) if out_win is not None else 1)
            if stage.kind == "conv":
                total += numel * stage.module.in_channels // stage.module.groups * math.prod(stage.kernel)
            elif stage.kind == "linear":
                total += stage.module.in_features * stage.module.out_features
            else:
                total += numel * math.prod(stage.kernel)
        return total

    def _chunk(self, target: int, layout: _Layout, single: bool, n: int, x: torch.Tensor) -> int:
        """Items per chunk so that one chunk's forward and backward fit in ``chunk_bytes``."""
        zero = torch.zeros(1, 2, dtype=torch.long)
        windows = self._item_windows(target, layout, zero if single else None, 1, zero.device)
        numels, switches = [math.prod(x.shape[1:])], 0
        for i in range(target + 1):
            in_win, out_win = windows[i]
            if in_win is not None:
                numels.append(layout.inputs[i][0] * math.prod(in_win.size))
            numel = layout.outputs[i][0] * (math.prod(out_win.size) if out_win is not None else 1)
            numels.append(numel)
            if self._stages[i].kind == "pool":
                switches += numel
        per_item = 8 * switches + 3 * x.element_size() * max(numels)
        return max(1, min(n, self.chunk_bytes // max(1, per_item)))

    def _forward(self, x: torch.Tensor, rows: torch.Tensor, target: int,
                 windows: list[tuple[_Window | None, _Window | None]]
                 ) -> tuple[torch.Tensor, dict[int, torch.Tensor]]:
        """Run stages 0..target over each item's windows; return the target's output and the switches.

        Positions of a window off the map hold the value the next stage pads with: zero (conv
        padding) or -inf before a max-pool, so every position on the map gets exactly the value the
        full forward pass gives it. Switches are flat indices into each pool's input window.
        """
        first = windows[0][0]
        # A copy either way: the stages below work in place. Channels-last maps run faster on CPUs
        # (max-pooling with indices about 4x, transposed convolutions about 1.3x); every stage keeps it.
        t = x[rows] if first is None or first.native else _crop(x, rows, first, 0.0)
        if t.dim() == 4:
            t = t.contiguous(memory_format=torch.channels_last)
        switches: dict[int, torch.Tensor] = {}
        for i in range(target + 1):
            stage, (in_win, out_win) = self._stages[i], windows[i]
            native, m = in_win is None or in_win.native, stage.module
            if stage.kind == "conv":
                t = F.conv2d(t, m.weight, m.bias, m.stride, m.padding if native else 0, m.dilation, m.groups)
            elif stage.kind == "pool":
                if native:
                    t, switches[i] = F.max_pool2d(t, stage.kernel, stage.stride, stage.padding, stage.dilation,
                                                  ceil_mode=m.ceil_mode, return_indices=True)
                else:
                    in_win.fill_outside_(t, float("-inf"))
                    t, switches[i] = F.max_pool2d(t, stage.kernel, stage.stride, 0, stage.dilation,
                                                  return_indices=True)
            elif stage.kind == "relu":
                t = t.relu_()
            elif stage.kind in ("lrn", "bn"):  # position-wise; BatchNorm in eval mode
                t = m(t)
            elif not stage.local:
                t = self._run_stage(stage, t)
                if out_win is not None and not out_win.native:
                    t = _crop(t, torch.arange(len(t), device=t.device), out_win, 0.0)
            if stage.local and out_win is not None:
                out_win.fill_outside_(t, 0.0)
        return t, switches

    def _backward(self, signal: torch.Tensor, target: int, layout: _Layout,
                  windows: list[tuple[_Window | None, _Window | None]], switches: dict[int, torch.Tensor]
                  ) -> torch.Tensor:
        """Run ``signal`` at the target's output window down to the input image: (N, C, H, W)."""
        for i in range(target, -1, -1):
            stage, (in_win, out_win) = self._stages[i], windows[i]
            native, m = out_win is None or out_win.native, stage.module
            if stage.local and not native:
                out_win.fill_outside_(signal, 0.0)
            if stage.kind == "conv":  # filtering with the transposed filters, no bias
                if native:
                    signal = _conv_adjoint(signal, stage, layout.inputs[i])
                else:
                    signal = F.conv_transpose2d(signal, m.weight, None, m.stride, 0, 0, m.groups, m.dilation)
            elif stage.kind == "pool":  # unpooling at the switches; values sharing a switch add
                signal = _unpool(signal, switches[i], in_win.size)
            elif stage.kind == "relu":  # rectification
                signal = signal.clamp_(min=0)
            elif stage.kind == "bn":
                weight = m.weight if m.affine else torch.ones_like(m.running_var)
                scale = weight / torch.sqrt(m.running_var + m.eps)
                signal = signal * scale.to(signal.dtype).view(1, -1, 1, 1)
            elif not stage.local:
                if not native:
                    signal = _uncrop(signal, out_win)
                signal = self._backward_global(stage, signal, layout.inputs[i])
            # lrn, dropout, identity: the signal passes unchanged
        first = windows[0][0]
        if first is None or first.native:
            return signal
        return _uncrop(first.fill_outside_(signal, 0.0), first)

    @staticmethod
    def _backward_global(stage: _Stage, signal: torch.Tensor, in_shape: tuple[int, ...]) -> torch.Tensor:
        n = signal.shape[0]
        if stage.kind == "linear":  # the transposed weight matrix, no bias; an implicit flatten undone
            return (signal @ stage.module.weight.to(signal.dtype)).reshape(n, *in_shape)
        if stage.kind == "flatten":
            return signal.reshape(n, *in_shape)
        # AdaptiveAvgPool2d: out = P_h x P_w^T per map, so its adjoint is P_h^T g P_w
        ph = _adaptive_pool_matrix(signal.shape[2], in_shape[1], signal)
        pw = _adaptive_pool_matrix(signal.shape[3], in_shape[2], signal)
        return torch.einsum("ncij,ih,jw->nchw", signal, ph, pw)

    def _cone(self, x: torch.Tensor, rows: torch.Tensor, chans: torch.Tensor, positions: torch.Tensor,
              target: int, layout: _Layout) -> tuple[torch.Tensor, torch.Tensor]:
        """Forward and backward of single activations, each inside its receptive field only."""
        n = len(rows)
        windows = self._item_windows(target, layout, positions, n, x.device)
        act, switches = self._forward(x, rows, target, windows)  # (N, C, 1, 1)
        items = torch.arange(n, device=x.device)
        values = act[items, chans, 0, 0]
        signal = torch.zeros_like(act)
        signal[items, chans, 0, 0] = values
        return self._backward(signal, target, layout, windows, switches), values

    def _shared(self, x: torch.Tensor, rows: torch.Tensor, chans: torch.Tensor, positions: torch.Tensor | None,
                keep: str, target: int, layout: _Layout, result: torch.Tensor, values: torch.Tensor,
                where: torch.Tensor) -> None:
        """One full forward pass per distinct image; its switches serve all of that image's items."""
        out_shape = layout.outputs[target]
        single = len(out_shape) == 3 and keep == "max"
        unique, inverse = torch.unique(rows, return_inverse=True)
        step_images = self._chunk(target, layout, single=False, n=len(unique), x=x)
        step_items = self._chunk(target, layout, single=single, n=len(rows), x=x)
        for lo in range(0, len(unique), step_images):
            images = unique[lo:lo + step_images]
            full = self._item_windows(target, layout, None, len(images), x.device)
            act, full_switches = self._forward(x, images, target, full)
            members = torch.nonzero((inverse >= lo) & (inverse < lo + len(images))).flatten()
            for start in range(0, len(members), step_items):
                items = members[start:start + step_items]
                local, ch = inverse[items] - lo, chans[items]
                k = torch.arange(len(items), device=x.device)
                if single:  # backward inside each activation's receptive field, with cut-out switches
                    if positions is None:
                        val, arg = act[local, ch].flatten(1).max(1)
                        pos = torch.stack((arg // out_shape[2], arg % out_shape[2]), 1)
                    else:
                        pos = positions[items]
                        val = act[local, ch, pos[:, 0], pos[:, 1]]
                    where[items] = pos
                    windows = self._item_windows(target, layout, pos, len(items), x.device)
                    switches = {i: _crop_switches(s, local, full[i], windows[i]) for i, s in full_switches.items()}
                    signal = act.new_zeros((len(items), out_shape[0], 1, 1))
                    signal[k, ch, 0, 0] = val
                else:  # the whole map, or one unit of a fully connected layer
                    windows = [(_pick(a, local), _pick(b, local)) for a, b in full]
                    switches = {i: s[local] for i, s in full_switches.items()}
                    signal = torch.zeros_like(act[local])
                    signal[k, ch] = act[local, ch]
                    val = signal[k, ch].reshape(len(items), -1).amax(1)
                values[items] = val
                result[items] = self._backward(signal, target, layout, windows, switches)


def _unpool(signal: torch.Tensor, switches: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Each value of ``signal`` (N, C, h, w) added at its switch, a flat index into a (size) map."""
    n, c = signal.shape[:2]
    # In channels-last order, (N, h * w, C) rows: no copy of a channels-last signal.
    rows = signal.permute(0, 2, 3, 1).reshape(n, -1, c)
    index = switches.permute(0, 2, 3, 1).reshape(n, -1, c)
    out = signal.new_zeros((n, size[0] * size[1], c)).scatter_add_(1, index, rows)
    return out.view(n, size[0], size[1], c).permute(0, 3, 1, 2)


def _pick(window: _Window | None, index: torch.Tensor) -> _Window | None:
    return None if window is None else window.pick(index)


def _conv_adjoint(signal: torch.Tensor, stage: _Stage, in_shape: tuple[int, ...]) -> torch.Tensor:
    """Transposed convolution of whole maps back to the conv's input size, its padding cut off."""
    m = stage.module
    h, w = signal.shape[2:]
    span = tuple((o - 1) * s + d * (k - 1) + 1 for o, s, d, k in zip((h, w), stage.stride, stage.dilation,
                                                                  stage.kernel))
    rest = tuple(in_shape[1 + j] + 2 * stage.padding[j] - span[j] for j in range(2))
    symmetric = not isinstance(m.padding, str) or all(stage.dilation[j] * (stage.kernel[j] - 1) % 2 == 0
                                                       for j in range(2))
    if symmetric and all(0 <= rest[j] < max(stage.stride[j], stage.dilation[j]) for j in range(2)):
        return F.conv_transpose2d(signal, m.weight, None, m.stride, stage.padding, rest, m.groups, m.dilation)
    # General case ("same" padding with an even kernel, unused trailing rows): transpose without
    # padding, then cut the input's rows and columns out of the padded extent.
    full = F.conv_transpose2d(signal, m.weight, None, m.stride, 0, 0, m.groups, m.dilation)
    window = _Window(torch.tensor([list(stage.padding)], device=signal.device).expand(len(signal), 2),
                     (in_shape[1], in_shape[2]), (full.shape[2], full.shape[3]))
    return _crop(full, torch.arange(len(full), device=full.device), window, 0.0)


def _crop_switches(switches: torch.Tensor, local: torch.Tensor, full: tuple[_Window | None, _Window | None],
                   item: tuple[_Window | None, _Window | None]) -> torch.Tensor:
    """Switches of the full forward pass, cut to each item's pool windows and re-indexed into them.

    ``switches`` (U, C, h, w) index the full input window of the pool; the result (N, C, h', w')
    indexes each item's input window. On the map, a switch lies in the window of its pooling
    region, which the item's input window contains; off the map the signal is zero and any index
    will do, so indices are only clamped into range.
    """
    (full_in, full_out), (item_in, item_out) = full, item
    shift = item_out.offset - full_out.offset[local]
    cut = _crop(switches, local, _Window(shift, item_out.size, full_out.size), 0)
    rows = cut.div(full_in.size[1], rounding_mode="floor")
    cols = cut.sub_(rows * full_in.size[1])
    delta = full_in.offset[local] - item_in.offset  # full-window coordinates -> item-window ones
    start = (delta[:, 0] * item_in.size[1] + delta[:, 1]).view(-1, 1, 1, 1)
    index = rows.mul_(item_in.size[1]).add_(cols).add_(start)
    return index.clamp_(0, item_in.size[0] * item_in.size[1] - 1)


class _eval_mode:
    """Context manager: every module of ``model`` in eval mode, each training flag restored on exit."""

    def __init__(self, model: nn.Module) -> None:
        self.model = model
        self.flags: list[tuple[nn.Module, bool]] = []

    def __enter__(self) -> nn.Module:
        self.flags = [(m, m.training) for m in self.model.modules()]
        self.model.eval()
        return self.model

    def __exit__(self, *exc: object) -> None:
        for m, flag in self.flags:
            m.training = flag
