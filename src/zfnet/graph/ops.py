"""Every operation a traced CNN may contain, each with its four rules in one place.

For each op this module says:

- **forward**: how it runs, always out of place (an in-place ReLU or ``x += y`` would overwrite a value
  the deconvnet or the occlusion engine keeps);
- **deconvnet rule** (:meth:`Op.adjoint`): how a signal at its output goes back to its inputs.
  Convolution and linear layers are transposed (no bias), max-pooling unpools at the recorded
  switches, every linear op (average pools, BatchNorm in eval mode, layer scale, reshapes, sums,
  concatenations) uses its adjoint, every point-wise activation is treated as a rectifier (the
  signal goes through a ReLU, the paper's rule), a gate ``x * g(x)`` multiplies the signal by the
  gate's forward value and sends nothing into the gate branch, LayerNorm and GroupNorm scale the
  signal by ``weight / std`` with the forward pass's statistics held, and local response
  normalisation passes it unchanged (the paper's rule);
- **geometry** (:meth:`Op.geometry`): which input rows and columns each output position reads: a
  kernel (size, stride, padding, dilation), point-wise, or everything;
- **windowed forward and rule** (:meth:`Op.run_window`, :meth:`Op.adjoint_window`): the same op on a
  rectangle cut out of its input (no padding; positions off the map hold :attr:`Op.pad_value`),
  which is how a single activation is projected inside its receptive field and how the occlusion
  engine recomputes only the rectangle an occluder changed.

:func:`resolve` maps a traced ``torch.fx`` node to its :class:`Op`; anything else becomes an
:class:`Opaque` op, which runs but has no rules (an algorithm that needs one raises ``TypeError``
naming the node).
"""

from __future__ import annotations

import copy
import math
import operator
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["Op", "Geometry", "POINTWISE", "resolve_function", "resolve_module", "unpool", "RECTIFIER_MODULES",
           "DROPOUT_MODULES"]


@dataclass(frozen=True)
class Geometry:
    """The window an output position reads, per spatial dimension: output ``o`` reads input rows
    ``o * stride - padding + dilation * t`` for ``t`` in ``0 .. kernel - 1``."""

    kernel: tuple[int, int]
    stride: tuple[int, int]
    padding: tuple[int, int]
    dilation: tuple[int, int] = (1, 1)

    def extent(self, axis: int) -> int:
        return self.dilation[axis] * (self.kernel[axis] - 1) + 1

    def input_window(self, offset: torch.Tensor, size: tuple[int, int]) -> tuple[torch.Tensor, tuple[int, int]]:
        """The input window (offsets (N, 2), size) that an output window reads."""
        step = torch.tensor(self.stride, device=offset.device)
        pad = torch.tensor(self.padding, device=offset.device)
        in_size = tuple((size[i] - 1) * self.stride[i] + self.extent(i) for i in range(2))
        return offset * step - pad, in_size  # type: ignore[return-value]


#: Transposed convolutions with at most this many output channels (image channels) and a stride run as
#: sub-pixel convolutions (:meth:`Conv._transpose`); measured faster up to 8, slower from 16 on.
SUBPIXEL_MAX_CHANNELS = 8

#: Geometry of an op whose output at a position reads its input at that position only.
POINTWISE = Geometry((1, 1), (1, 1), (0, 0))

DROPOUT_MODULES = (nn.Dropout, nn.Dropout1d, nn.Dropout2d, nn.Dropout3d, nn.AlphaDropout, nn.FeatureAlphaDropout)
RECTIFIER_MODULES = (nn.ReLU, nn.ReLU6, nn.LeakyReLU, nn.ELU, nn.CELU, nn.SELU, nn.GELU, nn.SiLU, nn.Mish,
                     nn.Hardswish, nn.Hardsigmoid, nn.Sigmoid, nn.Tanh, nn.Hardtanh, nn.Softplus, nn.PReLU)
_RECTIFIER_FUNCTIONS = {F.relu, torch.relu, F.relu6, F.leaky_relu, F.elu, F.celu, F.selu, F.gelu, F.silu, F.mish,
                        F.hardswish, F.hardsigmoid, torch.sigmoid, F.sigmoid, torch.tanh, F.tanh, F.hardtanh,
                        F.softplus, torch.clamp, torch.clamp_min, F.relu_, torch.relu_, F.leaky_relu_, F.elu_,
                        F.hardtanh_, torch.sigmoid_, torch.tanh_, torch.clamp_, torch.clamp_min_}
_RECTIFIER_METHODS = {"relu", "relu_", "sigmoid", "sigmoid_", "tanh", "tanh_", "clamp", "clamp_", "clamp_min",
                      "clamp_min_", "clip", "clip_"}
_GATES = (nn.Sigmoid, nn.Hardsigmoid)
# activations with f(0) = 0 (module class names lower-cased, function names)
_ZERO_AT_ZERO = {"relu", "relu6", "leaky_relu", "leakyrelu", "elu", "celu", "selu", "gelu", "silu", "mish",
                 "hardswish", "tanh", "prelu"}
_GATE_FUNCTIONS = {torch.sigmoid, F.sigmoid, F.hardsigmoid, torch.sigmoid_}
_GATE_METHODS = {"sigmoid", "sigmoid_"}
_PASS_METHODS = {"contiguous", "clone", "detach", "float", "type_as", "to"}
_RESHAPE_METHODS = {"view", "reshape", "flatten", "permute", "transpose", "squeeze", "unsqueeze"}
_RESHAPE_FUNCTIONS = {torch.flatten, torch.reshape, torch.permute, torch.transpose, torch.squeeze, torch.unsqueeze}


def _pair(v: int | Sequence[int]) -> tuple[int, int]:
    return (int(v), int(v)) if isinstance(v, int) else (int(v[0]), int(v[-1]))


def _arg(args: Sequence[Any], kwargs: dict[str, Any], index: int, name: str, default: Any) -> Any:
    if len(args) > index:
        return args[index]
    return kwargs.get(name, default)


def _out_of_place(fn: Callable) -> Callable:
    """The out-of-place twin of an in-place torch function (``F.relu_`` -> ``F.relu``)."""
    name = getattr(fn, "__name__", "")
    if name.endswith("_") and not name.endswith("__"):
        for space in (F, torch):
            twin = getattr(space, name[:-1], None)
            if twin is not None:
                return twin
    return fn


class Op:
    """One operation of a traced graph and its rules (see the module docstring).

    Attributes:
        kind: a short name of the rule family (``"conv"``, ``"maxpool"``, ``"rectifier"`` …).
        label: the op as a person reads it (``"nn.Conv2d"``, ``"F.relu"``, ``"Tensor.view"``).
        pad_value: what a windowed input holds off the map (``-inf`` before a max-pool).
        local: whether each output position reads a fixed window of input positions (so the op can
            run on a rectangle of its input); False for ops that mix the whole map.
        needs_inputs: whether :meth:`adjoint` needs the forward values of its inputs.
    """

    kind = "opaque"
    pad_value = 0.0
    local = False
    needs_inputs = False
    gate = False  # a sigmoid-type activation: a gate when it multiplies a feature map
    keeps_zero = False  # zero inputs give a zero output (so padding stays padding through it)

    def __init__(self, fn: Callable, label: str, module: nn.Module | None = None) -> None:
        self.fn = fn
        self.label = label
        self.module = module

    def run(self, args: Sequence[Any], kwargs: dict[str, Any]) -> Any:
        """The forward pass, out of place."""
        return self.fn(*args, **kwargs)

    def run_recording(self, args: Sequence[Any], kwargs: dict[str, Any]) -> tuple[Any, Any]:
        """The forward pass and what :meth:`adjoint` needs of it (max-pooling's switches …)."""
        return self.run(args, kwargs), None

    def geometry(self, in_shapes: list[tuple[int, ...]], out_shape: tuple[int, ...]) -> Geometry | None:
        """The window each output position reads (:data:`POINTWISE` for point-wise ops); None: all."""
        return None

    def has_rule(self) -> bool:
        return True

    def adjoint(self, signal: torch.Tensor, ctx: Any, inputs: list[Any], in_shapes: list[tuple[int, ...]],
                args: Sequence[Any], kwargs: dict[str, Any]) -> list[torch.Tensor | None]:
        """The deconvnet rule: the signal at each signal-carrying input (batch included)."""
        raise NotImplementedError

    def run_window(self, args: Sequence[Any], kwargs: dict[str, Any], record: bool) -> tuple[Any, Any]:
        """The forward pass on windows cut from the inputs (no padding), and its switches if ``record``."""
        return (self.run_recording(args, kwargs) if record else (self.run(args, kwargs), None))

    def adjoint_window(self, signal: torch.Tensor, ctx: Any, inputs: list[Any], in_sizes: list[tuple[int, ...]],
                       args: Sequence[Any], kwargs: dict[str, Any]) -> list[torch.Tensor | None]:
        """The deconvnet rule on windows: ``in_sizes`` are the input windows' full shapes (batch included)."""
        return self.adjoint(signal, ctx, inputs, [s[1:] for s in in_sizes], args, kwargs)

    def macs(self, out_numel: int) -> float:
        """Rough multiply-adds per output element."""
        return 1.0

    def bind(self, args: Sequence[Any], kwargs: dict[str, Any], in_shapes: list[tuple[int, ...]],
             out_shape: tuple[int, ...]) -> None:
        """Record what the rules need of the traced call (its kernel geometry …), once."""


class PointwiseOp(Op):
    """An op whose output at a position reads its inputs at that position only."""

    local = True

    def geometry(self, in_shapes, out_shape):
        return POINTWISE


class Opaque(Op):
    """An op zfnet has no rule for: it runs, but the deconvnet, receptive fields and occlusion refuse it."""

    def has_rule(self) -> bool:
        return False


class Passthrough(PointwiseOp):
    """Identity, dropout and stochastic depth in eval mode, ``contiguous``/``clone``: the signal passes."""

    kind = "pass"
    keeps_zero = True

    def run(self, args, kwargs):
        return self.fn(*args, **kwargs) if self.module is None else args[0]

    def adjoint(self, signal, ctx, inputs, in_shapes, args, kwargs):
        return [signal]


class Rectifier(PointwiseOp):
    """Every point-wise activation: the signal goes back through a ReLU (the paper's rule for ReLU)."""

    kind = "rectifier"
    relu = False  # a plain ReLU, which an engine may run in place on a value nothing else reads

    def run_in_place(self, x: torch.Tensor) -> torch.Tensor:
        """The forward pass of a plain ReLU, overwriting ``x``."""
        return x.relu_()

    def adjoint(self, signal, ctx, inputs, in_shapes, args, kwargs):
        return [signal.clamp_(min=0)]  # the engines hand every op a signal of its own


class LRN(PointwiseOp):
    """Local response normalisation across maps: the signal passes unchanged (the paper's rule)."""

    kind = "lrn"
    keeps_zero = True

    def adjoint(self, signal, ctx, inputs, in_shapes, args, kwargs):
        return [signal]


class BatchNorm(PointwiseOp):
    """BatchNorm2d in eval mode: the per-channel affine map; its adjoint scales by ``weight / sqrt(var + eps)``."""

    kind = "bn"

    def adjoint(self, signal, ctx, inputs, in_shapes, args, kwargs):
        m = self.module
        weight = m.weight if m.affine else torch.ones_like(m.running_var)
        scale = weight / torch.sqrt(m.running_var + m.eps)
        return [signal * scale.to(signal.dtype).view(1, -1, *([1] * (signal.dim() - 2)))]


class Conv(Op):
    """2-D convolution (any stride, padding, dilation, groups): transposed filters, no bias."""

    kind = "conv"
    local = True

    def __init__(self, fn, label, module=None, params: dict[str, Any] | None = None) -> None:
        super().__init__(fn, label, module)
        self.params = params or {}  # functional form: the fx args other than the input
        self._cl_key: tuple | None = None
        self._cl_weight: torch.Tensor | None = None
        self._sub_key: tuple | None = None
        self._sub_weight: torch.Tensor | None = None

    def _weight_like(self, weight: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """The filters in ``x``'s memory order: channels-last maps with channels-last filters run without
        reordering the filters at every call (a copy kept while the weights stay the same)."""
        if x.dim() != 4 or weight.dtype != x.dtype or not x.is_contiguous(memory_format=torch.channels_last) \
                or x.is_contiguous() or weight.is_contiguous(memory_format=torch.channels_last):
            return weight.to(x.dtype)
        key = (weight.data_ptr(), weight._version, weight.dtype, weight.device)
        if self._cl_key != key:
            self._cl_weight = weight.detach().contiguous(memory_format=torch.channels_last)
            self._cl_key = key
        return self._cl_weight  # type: ignore[return-value]

    def _conv(self, args, kwargs) -> tuple[torch.Tensor, torch.Tensor | None, tuple, Any, tuple, int]:
        if self.module is not None:
            m = self.module
            if m.padding_mode != "zeros":
                raise TypeError(f"{self.label} uses padding_mode={m.padding_mode!r}; only 'zeros' has a rule")
            return m.weight, m.bias, _pair(m.stride), m.padding, _pair(m.dilation), m.groups
        weight = _arg(args, kwargs, 1, "weight", None)
        bias = _arg(args, kwargs, 2, "bias", None)
        return (weight, bias, _pair(_arg(args, kwargs, 3, "stride", 1)), _arg(args, kwargs, 4, "padding", 0),
                _pair(_arg(args, kwargs, 5, "dilation", 1)), int(_arg(args, kwargs, 6, "groups", 1)))

    def _padding(self, weight: torch.Tensor, padding: Any, dilation: tuple[int, int]) -> tuple[int, int]:
        k = tuple(weight.shape[2:])
        if isinstance(padding, str):  # "valid", or "same" (stride 1): PyTorch pads total // 2 first
            return (0, 0) if padding == "valid" else tuple(dilation[i] * (k[i] - 1) // 2 for i in range(2))
        return _pair(padding)

    def run(self, args, kwargs):
        if self.module is not None:
            return self.module(args[0])
        return F.conv2d(*args, **kwargs)

    def geometry_of(self, args, kwargs) -> Geometry:
        weight, _, stride, padding, dilation, _ = self._conv(args, kwargs)
        return Geometry(tuple(weight.shape[2:]), stride, self._padding(weight, padding, dilation), dilation)

    def geometry(self, in_shapes, out_shape):
        return self._static_geometry

    def bind(self, args, kwargs, in_shapes, out_shape) -> None:
        weight, _, _, _, _, groups = self._conv(args, kwargs)
        self._static_geometry = self.geometry_of(args, kwargs)
        self._macs = float(weight.shape[1] * math.prod(weight.shape[2:]))

    def run_window(self, args, kwargs, record):
        weight, bias, stride, _, dilation, groups = self._conv(args, kwargs)
        return F.conv2d(args[0], self._weight_like(weight, args[0]), bias, stride, 0, dilation, groups), None

    def adjoint(self, signal, ctx, inputs, in_shapes, args, kwargs):
        weight, _, stride, padding, dilation, groups = self._conv(args, kwargs)
        g = self._static_geometry
        h, w = signal.shape[2:]
        span = tuple((o - 1) * s + g.extent(i) for i, (o, s) in enumerate(zip((h, w), stride)))
        rest = tuple(in_shapes[0][1 + j] + 2 * g.padding[j] - span[j] for j in range(2))
        symmetric = not isinstance(padding, str) or all(dilation[j] * (weight.shape[2 + j] - 1) % 2 == 0
                                                         for j in range(2))
        if symmetric and all(0 <= rest[j] < max(stride[j], dilation[j]) for j in range(2)):
            return [self._transpose(signal, weight, stride, g.padding, rest, groups, dilation)]
        # General case ("same" padding with an even kernel, unused trailing rows): transpose without
        # padding, then cut the input's rows and columns out of the padded extent.
        full = self._transpose(signal, weight, stride, (0, 0), (0, 0), groups, dilation)
        out = full.new_zeros((len(full), full.shape[1], *in_shapes[0][1:]))
        hi = [min(in_shapes[0][1 + j], full.shape[2 + j] - g.padding[j]) for j in range(2)]
        out[:, :, :hi[0], :hi[1]] = full[:, :, g.padding[0]:g.padding[0] + hi[0], g.padding[1]:g.padding[1] + hi[1]]
        return [out]

    def adjoint_window(self, signal, ctx, inputs, in_sizes, args, kwargs):
        weight, _, stride, _, dilation, groups = self._conv(args, kwargs)
        return [self._transpose(signal, weight, stride, (0, 0), (0, 0), groups, dilation)]

    def _transpose(self, signal: torch.Tensor, weight: torch.Tensor, stride: tuple[int, int],
                   padding: tuple[int, int], output_padding: tuple[int, int], groups: int,
                   dilation: tuple[int, int]) -> torch.Tensor:
        """``F.conv_transpose2d(signal, weight, None, stride, padding, output_padding, groups, dilation)``.

        A strided filter bank with few input channels (an image layer: ZFNet's conv1, 3 <- 96 maps, 7x7,
        stride 2) runs as a *sub-pixel* convolution instead: one stride-1 ``conv2d`` computes all
        ``stride[0] * stride[1]`` output phases as channels, which are then interleaved. oneDNN's
        transposed convolution with 3 output channels is 2.5x slower than that on a CPU."""
        kh, kw = int(weight.shape[2]), int(weight.shape[3])
        h, w = int(signal.shape[2]), int(signal.shape[3])
        sy, sx = stride
        ky, kx = -(-kh // sy), -(-kw // sx)
        rows = (h - 1) * sy - 2 * padding[0] + kh + output_padding[0]
        cols = (w - 1) * sx - 2 * padding[1] + kw + output_padding[1]
        if (signal.dim() != 4 or groups != 1 or dilation != (1, 1) or stride == (1, 1)
                or weight.shape[1] > SUBPIXEL_MAX_CHANNELS
                or padding[0] + rows > (h + ky - 1) * sy or padding[1] + cols > (w + kx - 1) * sx):
            return F.conv_transpose2d(signal, self._weight_like(weight, signal), None, stride, padding,
                                      output_padding, groups, dilation)
        phases = F.conv2d(signal, self._subpixel_weight(weight, signal, stride), None, 1, (ky - 1, kx - 1))
        n, c = len(signal), int(weight.shape[1])
        if sy == sx:
            full = F.pixel_shuffle(phases, sy)
        else:
            hp, wp = phases.shape[2:]
            full = phases.view(n, c, sy, sx, hp, wp).permute(0, 1, 4, 2, 5, 3).reshape(n, c, hp * sy, wp * sx)
        return full[:, :, padding[0]:padding[0] + rows, padding[1]:padding[1] + cols]

    def _subpixel_weight(self, weight: torch.Tensor, like: torch.Tensor, stride: tuple[int, int]) -> torch.Tensor:
        """The filters of :meth:`_transpose`'s sub-pixel convolution, (C_in * sy * sx, C_out, ky, kx), kept
        while the weights stay the same.

        Output row ``r = a * sy + p`` of the unpadded transposed convolution adds ``signal[a - j] * W[j * sy + p]``
        over ``j``; a stride-1 correlation padded by ``ky - 1`` reads ``signal[a - j]`` at tap ``ky - 1 - j``."""
        key = (weight.data_ptr(), weight._version, like.dtype, like.device, stride,
               like.is_contiguous(memory_format=torch.channels_last) and not like.is_contiguous())
        if self._sub_key != key:
            cout, cin, kh, kw = weight.shape  # the forward filters: the signal has cout channels
            sy, sx = stride
            ky, kx = -(-kh // sy), -(-kw // sx)
            w = F.pad(weight.detach().to(like.dtype), (0, kx * sx - kw, 0, ky * sy - kh))
            w = w.reshape(cout, cin, ky, sy, kx, sx).flip(2, 4).permute(1, 3, 5, 0, 2, 4)
            w = w.reshape(cin * sy * sx, cout, ky, kx)
            self._sub_weight = w.contiguous(memory_format=torch.channels_last if key[-1] else torch.contiguous_format)
            self._sub_key = key
        return self._sub_weight  # type: ignore[return-value]

    def macs(self, out_numel):
        return self._macs


class MaxPool(Op):
    """2-D max-pooling: unpooling puts each value back at its switch (values sharing one add)."""

    kind = "maxpool"
    local = True
    pad_value = -math.inf

    def __init__(self, fn, label, module=None) -> None:
        super().__init__(fn, label, module)

    def _params(self, args, kwargs) -> tuple:
        if self.module is not None:
            m = self.module
            return (_pair(m.kernel_size), _pair(m.stride if m.stride is not None else m.kernel_size),
                    _pair(m.padding), _pair(m.dilation), bool(m.ceil_mode))
        k = _pair(_arg(args, kwargs, 1, "kernel_size", None))
        s = _arg(args, kwargs, 2, "stride", None)
        s = k if s is None or (isinstance(s, (list, tuple)) and not s) else _pair(s)
        return (k, s, _pair(_arg(args, kwargs, 3, "padding", 0)), _pair(_arg(args, kwargs, 4, "dilation", 1)),
                bool(_arg(args, kwargs, 5, "ceil_mode", False)))

    def run(self, args, kwargs):
        k, s, p, d, ceil = self._params(args, kwargs)
        return F.max_pool2d(args[0], k, s, p, d, ceil_mode=ceil)

    def run_recording(self, args, kwargs):
        k, s, p, d, ceil = self._params(args, kwargs)
        out, switches = F.max_pool2d(args[0], k, s, p, d, ceil_mode=ceil, return_indices=True)
        return out, switches

    def bind(self, args, kwargs, in_shapes, out_shape) -> None:
        self._static = self._params(args, kwargs)

    def run_window(self, args, kwargs, record):
        k, s, _, d, _ = self._params(args, kwargs)
        if record:
            return F.max_pool2d(args[0], k, s, 0, d, return_indices=True)
        return F.max_pool2d(args[0], k, s, 0, d), None

    def geometry(self, in_shapes, out_shape):
        k, s, p, d, _ = self._static
        return Geometry(k, s, p, d)

    def adjoint(self, signal, ctx, inputs, in_shapes, args, kwargs):
        return [unpool(signal, ctx, tuple(in_shapes[0][1:]))]

    def adjoint_window(self, signal, ctx, inputs, in_sizes, args, kwargs):
        return [unpool(signal, ctx, tuple(in_sizes[0][2:]))]

    def macs(self, out_numel):
        return float(math.prod(self._static[0]))


def unpool(signal: torch.Tensor, switches: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Each value of ``signal`` (N, C, h, w) added at its switch, a flat index into a ``size`` map."""
    n, c = signal.shape[:2]
    # In channels-last order, (N, h * w, C) rows: no copy of a channels-last signal.
    rows = signal.permute(0, 2, 3, 1).reshape(n, -1, c)
    index = switches.permute(0, 2, 3, 1).reshape(n, -1, c)
    out = signal.new_zeros((n, size[0] * size[1], c)).scatter_add_(1, index, rows)
    return out.view(n, size[0], size[1], c).permute(0, 3, 1, 2)


class AvgPool(Op):
    """2-D average pooling: a linear map, its adjoint spreads each value over its window."""

    kind = "avgpool"

    def _params(self, args, kwargs) -> tuple:
        if self.module is not None:
            m = self.module
            return (_pair(m.kernel_size), _pair(m.stride if m.stride is not None else m.kernel_size),
                    _pair(m.padding), bool(m.ceil_mode), bool(m.count_include_pad), m.divisor_override)
        k = _pair(_arg(args, kwargs, 1, "kernel_size", None))
        s = _arg(args, kwargs, 2, "stride", None)
        s = k if s is None or (isinstance(s, (list, tuple)) and not s) else _pair(s)
        return (k, s, _pair(_arg(args, kwargs, 3, "padding", 0)), bool(_arg(args, kwargs, 4, "ceil_mode", False)),
                bool(_arg(args, kwargs, 5, "count_include_pad", True)), _arg(args, kwargs, 6, "divisor_override", None))

    def run(self, args, kwargs):
        k, s, p, ceil, cip, div = self._params(args, kwargs)
        return F.avg_pool2d(args[0], k, s, p, ceil, cip, div)

    def bind(self, args, kwargs, in_shapes, out_shape) -> None:
        self._static = self._params(args, kwargs)
        # zeros pad exactly when padding counts; a ceil-mode window past the padding divides by less
        self.local = (self._static[4] or self._static[2] == (0, 0)) and not self._static[3]

    def run_window(self, args, kwargs, record):
        k, s, _, _, _, div = self._params(args, kwargs)
        return F.avg_pool2d(args[0], k, s, 0, False, True, div), None

    def geometry(self, in_shapes, out_shape):
        k, s, p, _, _, _ = self._static
        return Geometry(k, s, p)

    def adjoint(self, signal, ctx, inputs, in_shapes, args, kwargs):
        return [_linear_adjoint(lambda t: self.run([t, *args[1:]], kwargs), signal, in_shapes[0])]

    def adjoint_window(self, signal, ctx, inputs, in_sizes, args, kwargs):
        k, s, _, _, _, div = self._static
        return [_linear_adjoint(lambda t: F.avg_pool2d(t, k, s, 0, False, True, div), signal, in_sizes[0][1:])]

    def macs(self, out_numel):
        return float(math.prod(self._static[0]))


def _linear_adjoint(fn: Callable[[torch.Tensor], torch.Tensor], signal: torch.Tensor,
                    in_shape: Sequence[int]) -> torch.Tensor:
    """The adjoint of a linear map ``fn`` applied to ``signal``, by automatic differentiation."""
    with torch.enable_grad():
        probe = signal.new_zeros((len(signal), *in_shape), requires_grad=True)
        (grad,) = torch.autograd.grad(fn(probe), probe, signal)
    return grad


class AdaptiveAvgPool(Op):
    """Adaptive average pooling: linear; uniform windows when the input divides evenly, else exact sets."""

    kind = "adaptive_avgpool"

    def run(self, args, kwargs):
        if self.module is not None:
            return self.module(args[0])
        return F.adaptive_avg_pool2d(*args, **kwargs)

    def geometry(self, in_shapes, out_shape):
        (_, h, w), (_, ho, wo) = in_shapes[0][-3:], out_shape[-3:]
        if h % ho == 0 and w % wo == 0:
            k = (h // ho, w // wo)
            return Geometry(k, k, (0, 0))
        return None

    def adjoint(self, signal, ctx, inputs, in_shapes, args, kwargs):
        return [_linear_adjoint(lambda t: self.run([t, *args[1:]], kwargs), signal, in_shapes[0])]


class Mean(Op):
    """``x.mean(dims)``: linear, its adjoint spreads the signal evenly."""

    kind = "mean"

    def adjoint(self, signal, ctx, inputs, in_shapes, args, kwargs):
        return [_linear_adjoint(lambda t: self.fn(t, *args[1:], **kwargs), signal, in_shapes[0])]


class Linear(Op):
    """A fully connected layer over the last dimension: the transposed weights, no bias.

    On a (N, F) vector it mixes everything; on channels-last maps (ConvNeXt's point-wise layers) it
    acts at each position."""

    kind = "linear"

    def _weight(self, args, kwargs) -> tuple[torch.Tensor, torch.Tensor | None]:
        if self.module is not None:
            return self.module.weight, self.module.bias
        return _arg(args, kwargs, 1, "weight", None), _arg(args, kwargs, 2, "bias", None)

    def run(self, args, kwargs):
        if self.module is not None:
            return self.module(args[0])
        return F.linear(*args, **kwargs)

    def bind(self, args, kwargs, in_shapes, out_shape) -> None:
        weight, _ = self._weight(args, kwargs)
        self._in_features = int(weight.shape[1])

    def geometry(self, in_shapes, out_shape):
        return POINTWISE if self.pointwise else None

    def adjoint(self, signal, ctx, inputs, in_shapes, args, kwargs):
        weight, _ = self._weight(args, kwargs)
        out = signal @ weight.to(signal.dtype)
        return [out.reshape(len(signal), *in_shapes[0])]

    def adjoint_window(self, signal, ctx, inputs, in_sizes, args, kwargs):
        weight, _ = self._weight(args, kwargs)
        return [signal @ weight.to(signal.dtype)]

    def macs(self, out_numel):
        return float(self._in_features)


class Norm(Op):
    """LayerNorm (over channels) and GroupNorm: the signal is scaled by ``weight / std``, the forward
    pass's statistics held, as BatchNorm in eval mode scales by its running statistics."""

    kind = "norm"
    needs_inputs = True

    def __init__(self, fn, label, module=None, group: bool = False) -> None:
        super().__init__(fn, label, module)
        self.group = group

    def _params(self, args, kwargs) -> tuple:
        m = self.module
        if self.group:
            if m is not None:
                return m.num_groups, m.weight, m.eps
            return int(_arg(args, kwargs, 1, "num_groups", 1)), _arg(args, kwargs, 2, "weight", None), \
                float(_arg(args, kwargs, 4, "eps", 1e-5))
        if m is not None:
            return tuple(m.normalized_shape), m.weight, m.eps
        return tuple(_pair(s) if False else s for s in (_arg(args, kwargs, 1, "normalized_shape", ()),))[0], \
            _arg(args, kwargs, 2, "weight", None), float(_arg(args, kwargs, 4, "eps", 1e-5))

    def run(self, args, kwargs):
        return self.module(args[0]) if self.module is not None else self.fn(*args, **kwargs)

    def geometry(self, in_shapes, out_shape):
        return None if self.group else POINTWISE

    @property
    def local(self) -> bool:  # type: ignore[override]
        return not self.group

    def _scale(self, x: torch.Tensor, args, kwargs) -> torch.Tensor:
        if self.group:
            groups, weight, eps = self._params(args, kwargs)
            n, c = x.shape[:2]
            var = x.reshape(n, groups, -1).var(2, unbiased=False)  # (N, G)
            inv = torch.rsqrt(var + eps).repeat_interleave(c // groups, 1)  # (N, C)
            scale = inv.view(n, c, *([1] * (x.dim() - 2)))
            if weight is not None:
                scale = scale * weight.view(1, c, *([1] * (x.dim() - 2)))
            return scale
        shape, weight, eps = self._params(args, kwargs)
        dims = tuple(range(x.dim() - len(shape), x.dim()))
        scale = torch.rsqrt(x.var(dims, unbiased=False, keepdim=True) + eps)
        return scale * weight if weight is not None else scale

    def adjoint(self, signal, ctx, inputs, in_shapes, args, kwargs):
        return [signal * self._scale(inputs[0], args, kwargs).to(signal.dtype)]

    def adjoint_window(self, signal, ctx, inputs, in_sizes, args, kwargs):
        return self.adjoint(signal, ctx, inputs, [], args, kwargs)


class Add(PointwiseOp):
    """``a + b`` (a residual sum): the whole signal goes to every tensor input; a constant is a bias."""

    kind = "add"

    def run(self, args, kwargs):
        return self.fn(*args, **kwargs)

    def bind(self, args, kwargs, in_shapes, out_shape) -> None:
        self.keeps_zero = len(in_shapes) >= 2  # a sum of maps; plus a constant is a bias

    def adjoint(self, signal, ctx, inputs, in_shapes, args, kwargs):
        alpha = kwargs.get("alpha", 1)
        out = []
        for k, shape in enumerate(in_shapes):
            s = signal if k == 0 else signal * alpha
            out.append(s.sum_to_size((len(signal), *shape)) if tuple(s.shape[1:]) != tuple(shape) else s)
        return out


class Scale(PointwiseOp):
    """``x * g``, ``x / c``: multiplication by a gate, a layer scale or a constant. The signal is multiplied
    by the factor's forward value (the adjoint, for a constant); nothing goes into a gate's branch."""

    kind = "scale"
    keeps_zero = True  # 0 * g = 0, 0 / c = 0
    needs_inputs = True

    def __init__(self, fn, label, module=None, signal_arg: int = 0, divide: bool = False) -> None:
        super().__init__(fn, label, module)
        self.signal_arg = signal_arg  # which of the two operands carries the signal
        self.divide = divide

    def run(self, args, kwargs):
        return self.fn(*args, **kwargs)

    def adjoint(self, signal, ctx, inputs, in_shapes, args, kwargs):
        factor = args[1 - self.signal_arg]
        if isinstance(factor, torch.Tensor):
            factor = factor.to(signal.dtype)
        out = signal / factor if self.divide else signal * factor
        shape = (len(signal), *in_shapes[0])
        return [out.sum_to_size(shape) if tuple(out.shape) != shape else out]


class Cat(PointwiseOp):
    """Concatenation: the signal is split among the inputs."""

    kind = "cat"
    keeps_zero = True

    def run(self, args, kwargs):
        return torch.cat(*args, **kwargs)

    def _dim(self, args, kwargs) -> int:
        return int(_arg(args, kwargs, 1, "dim", 0))

    def adjoint(self, signal, ctx, inputs, in_shapes, args, kwargs):
        dim = self._dim(args, kwargs)
        dim = dim if dim >= 0 else signal.dim() + dim
        return list(signal.split([s[dim - 1] for s in in_shapes], dim))

    def adjoint_window(self, signal, ctx, inputs, in_sizes, args, kwargs):
        dim = self._dim(args, kwargs)
        dim = dim if dim >= 0 else signal.dim() + dim
        return list(signal.split([s[dim] for s in in_sizes], dim))


class Split(PointwiseOp):
    """``chunk`` / ``split``: a tuple of parts; the parts' signals are concatenated back (zeros where none)."""

    kind = "split"
    keeps_zero = True

    def __init__(self, fn, label, module=None, dim: int = 0) -> None:
        super().__init__(fn, label, module)
        self.dim = dim

    def adjoint(self, signal, ctx, inputs, in_shapes, args, kwargs):
        return [torch.cat(signal, self.dim if self.dim >= 0 else signal[0].dim() + self.dim)]


class GetItem(PointwiseOp):
    """One part of a tuple (after ``chunk``/``split``): its signal goes to that slot of the tuple."""

    kind = "getitem"
    keeps_zero = True

    def adjoint(self, signal, ctx, inputs, in_shapes, args, kwargs):
        return [("slot", int(args[1]), signal)]  # type: ignore[list-item]


def _basic_index(index: Any) -> bool:
    """An index of slices, None and Ellipsis only (a view of the tensor), with at least one of them."""
    parts = index if isinstance(index, tuple) else (index,)
    return any(p is None or p is Ellipsis or isinstance(p, slice) for p in parts) and all(
        p is None or p is Ellipsis or isinstance(p, (slice, int)) for p in parts)


class Index(Op):
    """Basic indexing of a tensor (``x[:, :, None, None]``, ``x[:, :k]``): a view; its adjoint scatters back."""

    kind = "index"

    def adjoint(self, signal, ctx, inputs, in_shapes, args, kwargs):
        return [_linear_adjoint(lambda t: t[args[1]], signal, in_shapes[0])]


class Reshape(Op):
    """``view``/``reshape``/``flatten``/``permute``/``transpose``/``squeeze``: the signal is reshaped back.

    Point-wise where the spatial axes survive unchanged (a channel shuffle; ConvNeXt's permutes), global
    where they are merged (the classifier's flatten)."""

    kind = "reshape"
    keeps_zero = True

    def __init__(self, fn, label, module=None, name: str = "") -> None:
        super().__init__(fn, label, module)
        self.name = name

    def run(self, args, kwargs):
        if self.module is not None:
            return self.module(args[0])
        return self.fn(*args, **kwargs)

    def geometry(self, in_shapes, out_shape):
        return POINTWISE if self.pointwise else None

    def adjoint(self, signal, ctx, inputs, in_shapes, args, kwargs):
        n = len(signal)
        return [_linear_adjoint(lambda t: self.run([t, *args[1:]], kwargs), signal, in_shapes[0])
                if self.name in ("permute", "transpose") else signal.reshape(n, *in_shapes[0])]

    def adjoint_window(self, signal, ctx, inputs, in_sizes, args, kwargs):
        if self.name == "permute":
            dims = args[1:] if len(args) > 1 and isinstance(args[1], int) else (args[1] if len(args) > 1
                                                                                 else kwargs["dims"])
            inverse = [0] * len(dims)
            for i, d in enumerate(dims):
                inverse[d] = i
            return [signal.permute(*inverse)]
        if self.name == "transpose":
            return [signal.transpose(int(_arg(args, kwargs, 1, "dim0", 0)), int(_arg(args, kwargs, 2, "dim1", 1)))]
        return [signal.reshape(in_sizes[0])]



_MODULE_OPS: list[tuple[tuple[type, ...], Callable[[nn.Module, str], Op]]] = []


def _module_op(module: nn.Module, label: str) -> Op:
    """The :class:`Op` of a leaf module (None: no rule)."""
    from ..models.layers import ContrastNorm  # same function as nn.LocalResponseNorm, a faster kernel

    call = module.__call__
    if isinstance(module, nn.Conv2d) and type(module).forward is nn.Conv2d.forward:
        return Conv(call, label, module)
    if isinstance(module, nn.Linear) and type(module).forward is nn.Linear.forward:
        return Linear(call, label, module)
    if isinstance(module, nn.MaxPool2d) and type(module).forward is nn.MaxPool2d.forward:
        return MaxPool(call, label, module)
    if isinstance(module, nn.AvgPool2d) and type(module).forward is nn.AvgPool2d.forward:
        return AvgPool(call, label, module)
    if isinstance(module, nn.AdaptiveAvgPool2d) and type(module).forward is nn.AdaptiveAvgPool2d.forward:
        return AdaptiveAvgPool(call, label, module)
    if isinstance(module, nn.BatchNorm2d) and type(module).forward is nn.BatchNorm2d.forward:
        if module.running_var is None:
            return Opaque(call, label + " without running statistics (track_running_stats=False: its output "
                          "depends on the batch)", module)
        return BatchNorm(call, label, module)
    if isinstance(module, nn.LayerNorm) and type(module).forward is nn.LayerNorm.forward:
        return Norm(call, label, module)
    if isinstance(module, nn.GroupNorm) and type(module).forward is nn.GroupNorm.forward:
        return Norm(call, label, module, group=True)
    if type(module) is ContrastNorm or (isinstance(module, nn.LocalResponseNorm)
                                        and type(module).forward is nn.LocalResponseNorm.forward):
        return LRN(call, label, module)
    if isinstance(module, RECTIFIER_MODULES) and type(module).forward is type(module).__mro__[
            next(i for i, c in enumerate(type(module).__mro__) if c.__module__.startswith("torch.nn"))].forward:
        twin = module
        if getattr(module, "inplace", False):
            twin = copy.copy(module)
            twin.inplace = False
        op = Rectifier(twin.__call__, label, module)
        op.gate = isinstance(module, _GATES)
        op.relu = type(module) is nn.ReLU
        op.keeps_zero = type(module).__name__.lower() in _ZERO_AT_ZERO
        return op
    if isinstance(module, DROPOUT_MODULES + (nn.Identity,)):
        return Passthrough(call, label, module)
    if isinstance(module, nn.Flatten) and type(module).forward is nn.Flatten.forward:
        return Reshape(call, label, module, "flatten")
    return Opaque(call, label, module)


def label_of(target: Any) -> str:
    """A readable name of an fx node's target."""
    if isinstance(target, str):
        return f"Tensor.{target}"
    module = getattr(target, "__module__", None) or ""
    name = getattr(target, "__name__", repr(target))
    if module.startswith("torch.nn.functional"):
        return f"F.{name}"
    if module in ("_operator", "operator"):
        return f"operator.{name}"
    return f"torch.{name}" if module.startswith("torch") else f"{module}.{name}".lstrip(".")


def resolve_function(target: Any, args: Sequence[Any], kwargs: dict[str, Any],
                     is_signal: Callable[[Any], bool], is_gate: Callable[[Any], bool]) -> Op:
    """The :class:`Op` of a ``call_function`` or ``call_method`` fx node.

    ``is_signal(arg)``: whether an argument is a traced tensor that can carry a signal (not a
    parameter, a constant or a size); ``is_gate(arg)``: whether it is the output of a sigmoid-type
    activation (the gate of a squeeze-excitation block, or SiLU written out as ``x * sigmoid(x)``).
    """
    label = label_of(target)
    method = target if isinstance(target, str) else None
    if method is not None:
        base = method[:-1] if method.endswith("_") and not method.endswith("__") else method

        def fn(*a: Any, **k: Any) -> Any:
            return getattr(a[0], base)(*a[1:], **k)
    else:
        fn = _out_of_place(target)
        if fn is operator.iadd:
            fn = operator.add
        elif fn is operator.imul:
            fn = operator.mul
        elif fn is operator.itruediv:
            fn = operator.truediv
        if "inplace" in kwargs:
            inner = fn

            def fn(*a: Any, **k: Any) -> Any:  # noqa: F811
                return inner(*a, **{**k, "inplace": False})
    name = method if method is not None else getattr(target, "__name__", "")
    base = name[:-1] if name.endswith("_") and not name.endswith("__") else name
    if (method is not None and method in _RECTIFIER_METHODS) or (method is None and target in _RECTIFIER_FUNCTIONS):
        op = Rectifier(fn, label)
        op.gate = (method in _GATE_METHODS) if method is not None else target in _GATE_FUNCTIONS
        op.relu = base == "relu" and not args[1:] and not {k for k in kwargs if k != "inplace"}
        op.keeps_zero = base in _ZERO_AT_ZERO and not (base == "hardtanh" and (args[1:] or kwargs))
        return op
    if method is None and target is F.conv2d:
        return Conv(fn, label)
    if method is None and target is F.linear:
        return Linear(fn, label)
    if method is None and target in (F.max_pool2d, torch.max_pool2d):
        return MaxPool(fn, label)
    if method is None and target is F.avg_pool2d:
        return AvgPool(fn, label)
    if method is None and target is F.adaptive_avg_pool2d:
        return AdaptiveAvgPool(fn, label)
    if method is None and target in (F.layer_norm, F.group_norm):
        return Norm(fn, label, group=target is F.group_norm)
    if method is None and target in (F.dropout, F.dropout2d, F.alpha_dropout, F.feature_alpha_dropout):
        return Passthrough(lambda *a, **k: a[0], label)
    if (method is not None and method in _PASS_METHODS) or (method is None and target in (torch.clone,)):
        return Passthrough(fn, label)
    if method is None and target is F.local_response_norm:
        return LRN(fn, label)
    if base in ("add", "iadd") and (method is not None or target in (operator.add, operator.iadd, torch.add)):
        return Add(fn, label)
    if base in ("sub", "isub") and (method is not None or target in (operator.sub, operator.isub, torch.sub)):
        if len(args) >= 2 and not is_signal(args[1]):
            return Add(fn, label)  # minus a constant: a bias
        return Opaque(fn, label)
    if base in ("mul", "imul", "truediv", "itruediv", "div") and (
            method is not None or target in (operator.mul, operator.imul, torch.mul, operator.truediv,
                                             operator.itruediv, torch.div)):
        divide = base in ("truediv", "itruediv", "div")
        a, b = (args[0], args[1]) if len(args) >= 2 else (args[0], kwargs.get("other"))
        sig_a, sig_b = is_signal(a), is_signal(b)
        if divide:
            return Scale(fn, label, signal_arg=0, divide=True) if sig_a and not sig_b else Opaque(fn, label)
        if sig_a and not sig_b:
            return Scale(fn, label, signal_arg=0)
        if sig_b and not sig_a:
            return Scale(fn, label, signal_arg=1)
        if sig_a and sig_b:
            if is_gate(b) and not is_gate(a):
                return Scale(fn, label, signal_arg=0)
            if is_gate(a) and not is_gate(b):
                return Scale(fn, label, signal_arg=1)
            op = Scale(fn, label, signal_arg=-1)  # decided from the shapes: the broadcast operand is the gate
            return op
        return Opaque(fn, label)
    if method is None and target is torch.cat or (method is None and getattr(target, "__name__", "") == "cat"
                                                  and getattr(target, "__module__", "") == "torch"):
        return Cat(fn, label)
    if base in ("chunk", "split") and (method is not None or target in (torch.chunk, torch.split)):
        dim = _arg(args, kwargs, 2, "dim", 0)
        return Split(fn, label, dim=int(dim))
    if method is None and target is operator.getitem:
        if len(args) > 1 and _basic_index(args[1]):
            return Index(fn, label)  # on a tensor: x[:, :, None, None]; on a tuple: GetItem (decided at layout)
        return GetItem(fn, label)
    if (method is not None and base in _RESHAPE_METHODS) or (method is None and target in _RESHAPE_FUNCTIONS):
        return Reshape(fn, label, name=base)
    if base == "mean" and (method is not None or target is torch.mean):
        return Mean(fn, label)
    return Opaque(fn, label)


def resolve_module(module: nn.Module, path: str) -> Op:
    """The :class:`Op` of a leaf module at ``path``."""
    return _module_op(module, f"{path} ({type(module).__name__})")


def is_known_leaf(module: nn.Module) -> bool:
    """Whether a module runs as one op (it has a rule, or it is a torch.nn module without one)."""
    if isinstance(module, nn.Sequential | nn.ModuleList | nn.ModuleDict):
        return False
    if not isinstance(_module_op(module, ""), Opaque):
        return True
    return type(module).__module__.startswith("torch.nn") and not list(module.children())
