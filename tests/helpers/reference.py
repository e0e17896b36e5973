"""Independent references for zfnet's algorithms: autograd with rewritten rules, and brute force.

Nothing here uses zfnet. zfnet traces a model's graph (torch.fx) and runs its own backward pass; these
references run the model's ordinary ``forward`` eagerly and change the rules of individual calls at run
time with a :class:`torch.overrides.TorchFunctionMode`, which sees every ``torch`` function, tensor method
and ``torch.nn.functional`` call, whether a module (``nn.ReLU``) or ``forward`` code (``F.relu``,
``x.relu_()``, ``scale * x``) makes it. A layer's output is taken with a forward hook on the named submodule.

- :func:`deconvnet_reference`: the deconvnet (Zeiler & Fergus 2014, §2.1) as a modified gradient.
- :func:`occlusion_brute_force`: one forward pass per occluder position (§4.2, Fig. 7).
- :func:`topk_brute_force`: every activation of a layer kept, the per-image maxima sorted in Python.
- :func:`gradient_support_box`: the receptive field of one activation as the support of a gradient
  through a positive, linearised copy of the model.

The rules, shared by the autograd references, are listed with each function. Two of them depend on how a
multiplication is written, so they are spelled out here. A product ``a * b`` of two tensors (``torch.mul``,
``Tensor.mul``/``mul_``, the ``*`` and ``*=`` operators) *holds* (detaches) one operand, the gate, when

1. exactly one operand is a gate value: the output of ``sigmoid`` / ``hardsigmoid`` (any spelling:
   ``torch.sigmoid``, ``Tensor.sigmoid(_)``, ``F.sigmoid``, ``F.hardsigmoid``, ``nn.Sigmoid``,
   ``nn.Hardsigmoid``), also after a view of it (``view``, ``reshape``, ``expand(_as)``, ``flatten``,
   ``(un)squeeze``, ``permute``, ``transpose``, ``contiguous``); or else
2. the operands differ in shape and one, with fewer elements, broadcasts to the other's shape: the
   smaller one is held (an SE scale (B, C, 1, 1), a layer scale (C, 1, 1), a stochastic-depth mask).

Holding changes nothing for the signal that reaches the other operand (it is multiplied by the held
value's forward value, as plain autograd does) but stops any signal from flowing into the gate's branch.
A held nn.Parameter (ConvNeXt's layer scale) therefore gives exactly plain autograd's adjoint.
Same-shape products of two non-gate tensors are plain autograd.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.overrides import TorchFunctionMode

__all__ = [
    "deconvnet_reference", "occlusion_brute_force", "OcclusionReference", "topk_brute_force", "TopKReference",
    "gradient_support_box", "RECTIFIERS", "GATES",
]


def _existing(*names: str) -> tuple[Callable, ...]:
    """The callables named ``module.attr`` that this torch version has (``F``, ``torch``, ``Tensor``)."""
    spaces = {"F": F, "torch": torch, "Tensor": torch.Tensor}
    found = []
    for name in names:
        space, _, attr = name.partition(".")
        fn = getattr(spaces[space], attr, None)
        if fn is not None:
            found.append(fn)
    return tuple(found)


#: Point-wise activations whose backward the deconvnet rule replaces by a ReLU of the incoming signal
#: (modules call these too: nn.ReLU -> F.relu, nn.ReLU6 -> F.hardtanh, nn.SiLU -> F.silu, ...).
RECTIFIERS: tuple[Callable, ...] = _existing(
    "F.relu", "F.relu_", "torch.relu", "torch.relu_", "Tensor.relu", "Tensor.relu_",
    "F.relu6", "F.hardtanh", "F.hardtanh_",
    "F.leaky_relu", "F.leaky_relu_", "F.elu", "F.elu_", "F.selu", "torch.selu", "torch.selu_", "F.celu",
    "F.gelu", "F.silu", "F.mish", "F.hardswish",
    "F.hardsigmoid", "F.sigmoid", "torch.sigmoid", "torch.sigmoid_", "Tensor.sigmoid", "Tensor.sigmoid_",
    "torch.clamp", "Tensor.clamp", "torch.clamp_min", "Tensor.clamp_min", "torch.tanh", "Tensor.tanh", "F.softplus",
)

#: Activations whose outputs are gate values (see the module docstring).
GATES: tuple[Callable, ...] = _existing(
    "F.hardsigmoid", "F.sigmoid", "torch.sigmoid", "torch.sigmoid_", "Tensor.sigmoid", "Tensor.sigmoid_",
)

_MULS = _existing("torch.mul", "Tensor.mul", "Tensor.mul_", "torch.multiply", "Tensor.multiply")
_VIEWS = _existing(
    "Tensor.view", "Tensor.reshape", "torch.reshape", "Tensor.expand", "Tensor.expand_as", "Tensor.flatten",
    "torch.flatten", "Tensor.unsqueeze", "torch.unsqueeze", "Tensor.squeeze", "torch.squeeze",
    "Tensor.permute", "torch.permute", "Tensor.transpose", "torch.transpose", "Tensor.contiguous",
)
_LAYER_NORMS = _existing("F.layer_norm", "torch.layer_norm")
_GROUP_NORMS = _existing("F.group_norm", "torch.group_norm")
_LRNS = _existing("F.local_response_norm")
_MAX_POOLS = _existing("F.max_pool2d", "torch.max_pool2d")
_ADAPTIVE_MAX_POOLS = _existing("F.adaptive_max_pool2d")

_GATE_TAG = "_zfnet_reference_gate"


class _Rectified(torch.autograd.Function):
    """Forward: the activation itself (in place if it was). Backward: ReLU of the signal, or the signal."""

    @staticmethod
    def forward(ctx, x: Tensor, fn: Callable[[Tensor], Tensor], relu: bool) -> Tensor:
        ctx.relu = relu
        out = fn(x)
        if out is x:
            ctx.mark_dirty(x)
        return out

    @staticmethod
    def backward(ctx, grad: Tensor) -> tuple[Tensor, None, None]:
        return (grad.clamp(min=0) if ctx.relu else grad), None, None


def _is_gate(t: object) -> bool:
    return isinstance(t, Tensor) and getattr(t, _GATE_TAG, False)


def _held_stats_norm(x: Tensor, dims: tuple[int, ...], eps: float) -> Tensor:
    """``(x - mean) / sqrt(var + eps)`` over ``dims`` with the statistics detached (held)."""
    mean = x.mean(dims, keepdim=True).detach()
    var = x.var(dims, unbiased=False, keepdim=True).detach()
    return (x - mean) / torch.sqrt(var + eps)


def _layer_norm_held(input: Tensor, normalized_shape: int | Sequence[int], weight: Tensor | None = None,
                     bias: Tensor | None = None, eps: float = 1e-5, *_: object) -> Tensor:
    count = 1 if isinstance(normalized_shape, int) else len(normalized_shape)
    dims = tuple(range(input.dim() - count, input.dim()))
    y = _held_stats_norm(input, dims, eps)
    if weight is not None:
        y = y * weight
    if bias is not None:
        y = y + bias
    return y


def _group_norm_held(input: Tensor, num_groups: int, weight: Tensor | None = None, bias: Tensor | None = None,
                     eps: float = 1e-5, *_: object) -> Tensor:
    n, c = input.shape[:2]
    grouped = input.reshape(n, num_groups, -1)
    y = _held_stats_norm(grouped, (2,), eps).reshape(input.shape)
    shape = (1, c) + (1,) * (input.dim() - 2)
    if weight is not None:
        y = y * weight.reshape(shape)
    if bias is not None:
        y = y + bias.reshape(shape)
    return y


def _pair(v: int | Sequence[int]) -> tuple[int, int]:
    return (int(v), int(v)) if isinstance(v, int) else (int(v[0]), int(v[1]))


def _box_pool(input: Tensor, kernel_size: int | Sequence[int], stride: int | Sequence[int] | None = None,
              padding: int | Sequence[int] = 0, dilation: int | Sequence[int] = 1, ceil_mode: bool = False,
              return_indices: bool = False) -> Tensor:
    """An average pool with a max-pool's exact geometry (dilation and ceil mode included).

    Every window position, padding included, weighs ``1 / (kh * kw)`` (count_include_pad); the output
    size is the max-pool's own, so a ceil-mode window hanging over the edge reads zeros there.
    """
    if return_indices:
        raise NotImplementedError("gradient_support_box: max-pools with return_indices=True")
    if input.dim() != 4:
        raise NotImplementedError(f"gradient_support_box: max-pool of a {input.dim()}-D tensor")
    kh, kw = _pair(kernel_size)
    sh, sw = _pair(kernel_size if stride is None or (not isinstance(stride, int) and len(stride) == 0)
                   else stride)
    ph, pw = _pair(padding)
    dh, dw = _pair(dilation)
    ho, wo = F.max_pool2d(input.detach(), (kh, kw), (sh, sw), (ph, pw), (dh, dw), ceil_mode).shape[-2:]
    h, w = input.shape[-2:]
    extra_h = max(0, (ho - 1) * sh + dh * (kh - 1) + 1 - (h + 2 * ph))
    extra_w = max(0, (wo - 1) * sw + dw * (kw - 1) + 1 - (w + 2 * pw))
    padded = F.pad(input, (pw, pw + extra_w, ph, ph + extra_h))
    c = input.shape[1]
    weight = input.new_full((c, 1, kh, kw), 1.0 / (kh * kw))
    return F.conv2d(padded, weight, stride=(sh, sw), dilation=(dh, dw), groups=c)[..., :ho, :wo]


class _Rules(TorchFunctionMode):
    """Rewrites calls during a forward pass so that autograd computes the reference's backward.

    ``relu_backward``: True for the deconvnet rule (activations' backward = ReLU of the signal), False
    for the straight-through rule of the receptive-field reference (backward = the signal).
    ``average_max_pools``: replace max-pools by average pools of the same geometry.
    ``hold_norms``: Layer/GroupNorm statistics held (else plain autograd through them).
    """

    def __init__(self, *, relu_backward: bool, average_max_pools: bool, hold_norms: bool = True) -> None:
        super().__init__()
        self.relu_backward = relu_backward
        self.average_max_pools = average_max_pools
        self.hold_norms = hold_norms

    def __torch_function__(self, func: Callable, types: tuple, args: tuple = (), kwargs: dict | None = None) -> Any:
        kwargs = kwargs or {}
        if func in RECTIFIERS:
            x, redo = self._split(func, args, kwargs)
            out = _Rectified.apply(x, redo, self.relu_backward)
            if func in GATES:
                setattr(out, _GATE_TAG, True)
            return out
        if func in _LRNS:
            x, redo = self._split(func, args, kwargs)
            return _Rectified.apply(x, redo, False)
        if func in _MULS:
            return func(*self._hold_gate(args, kwargs, in_place=func is torch.Tensor.mul_), **kwargs)
        if self.hold_norms and func in _LAYER_NORMS:
            return self._exact_forward(func(*args, **kwargs), _layer_norm_held(*args, **kwargs))
        if self.hold_norms and func in _GROUP_NORMS:
            return self._exact_forward(func(*args, **kwargs), _group_norm_held(*args, **kwargs))
        if self.average_max_pools and func in _MAX_POOLS:
            return _box_pool(*args, **kwargs)
        if self.average_max_pools and func in _ADAPTIVE_MAX_POOLS:
            if kwargs.get("return_indices") or (len(args) > 2 and args[2]):
                raise NotImplementedError("gradient_support_box: adaptive max-pools with return_indices=True")
            return F.adaptive_avg_pool2d(args[0] if args else kwargs["input"],
                                         args[1] if len(args) > 1 else kwargs["output_size"])
        out = func(*args, **kwargs)
        if func in _VIEWS and _is_gate(args[0] if args else kwargs.get("input")) and isinstance(out, Tensor):
            setattr(out, _GATE_TAG, True)
        return out

    @staticmethod
    def _split(func: Callable, args: tuple, kwargs: dict) -> tuple[Tensor, Callable[[Tensor], Tensor]]:
        if args:
            rest = args[1:]
            return args[0], lambda t: func(t, *rest, **kwargs)
        kw = dict(kwargs)
        x = kw.pop("input", None)
        if x is None:
            x = kw.pop("self")
            return x, lambda t: func(t, **kw)
        return x, lambda t: func(input=t, **kw)

    @staticmethod
    def _hold_gate(args: tuple, kwargs: dict, in_place: bool) -> tuple:
        if len(args) < 2:
            return args
        a, b = args[0], args[1]
        if not (isinstance(a, Tensor) and isinstance(b, Tensor)):
            return args
        ga, gb = _is_gate(a), _is_gate(b)
        if ga != gb:
            hold_a, hold_b = ga, gb
        elif a.shape != b.shape and a.numel() != b.numel():
            big = a if a.numel() > b.numel() else b
            broadcasts = tuple(torch.broadcast_shapes(a.shape, b.shape)) == tuple(big.shape)
            hold_a, hold_b = broadcasts and big is b, broadcasts and big is a
        else:
            return args
        if hold_a and not in_place:  # an in-place product keeps its own operand
            a = a.detach()
        if hold_b:
            b = b.detach()
        return (a, b, *args[2:])

    @staticmethod
    def _exact_forward(exact: Tensor, surrogate: Tensor) -> Tensor:
        """The exact forward value with the surrogate's gradient (``surrogate - surrogate.detach()`` is 0)."""
        return exact.detach() + (surrogate - surrogate.detach())


class _Capture:
    """Forward hook on one module: keeps each call's output, passes a clone on.

    The clone keeps the captured tensor (and its autograd history) safe from in-place operations that
    follow the module (``self.relu(out)`` with ``inplace=True``, ``out += identity``).
    """

    def __init__(self, model: nn.Module, module_name: str) -> None:
        modules = dict(model.named_modules())
        if not isinstance(module_name, str) or module_name not in modules or module_name == "":
            names = ", ".join(n for n in modules if n)
            raise ValueError(f"unknown module {module_name!r}; the model's modules: {names}")
        self.module_name = module_name
        self.module = modules[module_name]
        self.outputs: list[Tensor] = []

    def hook(self, module: nn.Module, inputs: object, output: object) -> Tensor:
        if not isinstance(output, Tensor):
            raise TypeError(f"{self.module_name} returns a {type(output).__name__}, not a tensor")
        self.outputs.append(output)
        return output.clone()

    def run(self, model: nn.Module, x: Tensor, mode: TorchFunctionMode | None = None) -> Tensor:
        """Runs ``model(x)`` in eval mode (flags restored afterwards); returns the logits."""
        flags = {m: m.training for m in model.modules()}
        handle = self.module.register_forward_hook(self.hook)
        model.eval()
        try:
            if mode is None:
                return model(x)
            with mode:
                return model(x)
        finally:
            handle.remove()
            for m, flag in flags.items():
                m.training = flag

    def output(self, call: int | None) -> Tensor:
        if call is None:
            if len(self.outputs) != 1:
                raise ValueError(f"{self.module_name} ran {len(self.outputs)} times in one forward pass; "
                                 "pass call= to choose one")
            return self.outputs[0]
        return self.outputs[call]


def deconvnet_reference(model: nn.Module, x: Tensor, module_name: str, channels: int | Sequence[int] | Tensor,
                        keep: str = "max", positions: Tensor | None = None, *, call: int | None = None) -> Tensor:
    """The deconvnet projection of one feature map per image, computed by autograd with rewritten rules.

    The layer is the output of submodule ``module_name`` (a forward hook; the module must run once per
    forward pass, or ``call`` picks one of its calls, 0-based). For image ``n`` the *seed* is zero
    everywhere except in feature map ``channels[n]`` of that output, where it equals the activation itself:

    - ``keep="max"``: at the map's largest activation (the first in row-major order among equal ones),
      or at ``positions[n]`` (row, column) when given;
    - ``keep="map"``: over the whole map.

    A 2-D output (B, C) (a linear layer) has one unit per channel: the seed is that unit's value. The
    result is the gradient of ``<seed, layer output>`` with respect to ``x`` when autograd runs the
    model's own ``forward`` (eval mode; training flags restored) under these rules:

    - every point-wise activation in :data:`RECTIFIERS` (relu, relu6/hardtanh, leaky_relu, elu, selu, celu,
      gelu, silu, mish, hardswish, hardsigmoid, sigmoid; functional, in-place, tensor-method and ``nn``
      module forms) passes ``relu(signal)`` down: the deconvnet's rectification;
    - max-pools (module or functional, any geometry): autograd's own backward, i.e. the signal goes to
      each window's argmax (the switch); windows sharing a switch add up;
    - a gate product ``x * g`` (module docstring): g is held, the signal to x is multiplied by g's
      forward value, nothing flows into g's branch (SE blocks, SiLU written as ``x * sigmoid(x)``);
    - LayerNorm and GroupNorm (``F.layer_norm``, ``F.group_norm``, so ``nn.LayerNorm``, ``LayerNorm2d``,
      ``nn.GroupNorm``): mean and variance held, so the signal is multiplied by ``weight / std``
      element-wise, with std = sqrt(var + eps) of the forward pass;
    - LocalResponseNorm: the signal passes unchanged (the paper's rule);
    - everything else is plain autograd, i.e. the adjoint of the forward operation: conv/linear
      (transposed filtering), average and adaptive average pools, BatchNorm in eval mode
      (``weight / sqrt(running_var + eps)``), add (``+``, ``+=``), cat, split, chunk, view, reshape,
      permute, transpose, flatten, mean, layer-scale products, dropout and identity (both identities in
      eval mode).

    So for a net of convs, ReLUs and max-pools the result is the paper's deconvnet projection:
    unpooling at the forward pass's switches, rectification, transposed filtering.

    Args:
        model: any ``nn.Module``; it runs eagerly, so any Python ``forward`` works.
        x: images (N, C, H, W).
        module_name: a name from ``model.named_modules()`` (e.g. ``"layer3.1"``, ``"features.denseblock2"``).
        channels: the feature map per image: one int for all, or N ints.
        keep: ``"max"`` or ``"map"``.
        positions: (N, 2) integer (row, column) per image, ``keep="max"`` only.
        call: which call of a module that runs several times (the shared ``relu`` of a ResNet block).

    Returns:
        (N, C, H, W), dtype and device of ``x``.
    """
    if keep not in ("max", "map"):
        raise ValueError(f"keep must be 'max' or 'map', got {keep!r}")
    if positions is not None and keep != "max":
        raise ValueError("positions go with keep='max'")
    capture = _Capture(model, module_name)
    x = x.detach().clone().requires_grad_(True)
    with torch.enable_grad():
        capture.run(model, x, _Rules(relu_backward=True, average_max_pools=False))
    out = capture.output(call)
    n = out.shape[0]
    chan = torch.as_tensor(channels, dtype=torch.long).reshape(-1).expand(n) if not isinstance(channels, int) \
        else torch.full((n,), channels, dtype=torch.long)
    items = torch.arange(n)
    values = out.detach()
    seed = torch.zeros_like(values)
    if values.dim() == 2:
        seed[items, chan] = values[items, chan]
    elif values.dim() == 4:
        maps = values[items, chan]  # (N, H, W)
        if keep == "map":
            seed[items, chan] = maps
        else:
            if positions is None:
                flat = maps.flatten(1).argmax(1)
                rows, cols = flat // maps.shape[2], flat % maps.shape[2]
            else:
                rows, cols = positions[:, 0].long(), positions[:, 1].long()
            seed[items, chan, rows, cols] = maps[items, rows, cols]
    else:
        raise ValueError(f"{module_name} outputs shape {tuple(values.shape)}; expected (N, C) or (N, C, H, W)")
    (grad,) = torch.autograd.grad(out, x, grad_outputs=seed, allow_unused=True)
    return torch.zeros_like(x) if grad is None else grad.detach()


class OcclusionReference(NamedTuple):
    """:func:`occlusion_brute_force`'s maps, each (GH, GW)."""

    prob_true: Tensor   # float64 softmax probability of the target class
    top_class: Tensor   # int64 argmax of the logits (the first among equal ones)
    activity: Tensor    # float64 total activation of the chosen feature map


def occlusion_brute_force(model: nn.Module, image: Tensor, window: int, stride: int, fill: float,
                          module_name: str, channel: int, target: int, *, batch_size: int = 64
                          ) -> OcclusionReference:
    """One full forward pass per occluder position (batched): the paper's occlusion maps (Fig. 7 b, d, e).

    Position ``(i, j)`` covers ``image[:, i*stride : i*stride + window, j*stride : j*stride + window]``
    with ``fill`` (every channel), for every ``i, j`` that keep the square inside the image:
    ``GH = (H - window) // stride + 1``, ``GW`` likewise. The model runs in eval mode (flags restored).

    Returns:
        ``prob_true``: softmax (computed in float64) of the logits at ``target``; ``top_class``: argmax of
        the logits; ``activity``: the sum over the map ``channel`` of submodule ``module_name``'s output
        (its value for a 2-D (B, C) output), summed in float64.
    """
    c, h, w = image.shape
    if window > min(h, w):
        raise ValueError(f"the occluder ({window} px) is larger than the image ({h}x{w})")
    gh, gw = (h - window) // stride + 1, (w - window) // stride + 1
    corners = [(i * stride, j * stride) for i in range(gh) for j in range(gw)]
    capture = _Capture(model, module_name)
    logits, activity = [], []
    with torch.no_grad():
        for start in range(0, len(corners), batch_size):
            batch = image.detach().repeat(len(corners[start:start + batch_size]), 1, 1, 1)
            for k, (r, s) in enumerate(corners[start:start + batch_size]):
                batch[k, :, r:r + window, s:s + window] = fill
            capture.outputs.clear()
            logits.append(capture.run(model, batch).double())
            out = capture.output(None).double()
            activity.append(out[:, channel].flatten(1).sum(1) if out.dim() > 2 else out[:, channel])
    all_logits = torch.cat(logits)
    prob = torch.softmax(all_logits, dim=1)[:, target]
    return OcclusionReference(prob.reshape(gh, gw), all_logits.argmax(1).reshape(gh, gw),
                              torch.cat(activity).reshape(gh, gw))


class TopKReference(NamedTuple):
    """:func:`topk_brute_force`'s result, laid out as ``zfnet``'s ``TopK``."""

    values: Tensor        # (C, k) descending; -inf where fewer than k images
    image_index: Tensor   # (C, k) int64; -1 where fewer than k images
    position: Tensor      # (C, k, 2) int64 (row, column); (0, 0) for a 2-D output; (-1, -1) padding


def topk_brute_force(model: nn.Module, images: Tensor, module_name: str, k: int, *, batch_size: int = 64
                     ) -> TopKReference:
    """The ``k`` largest per-image maxima of every feature map of submodule ``module_name``'s output.

    Every activation of the layer is stored (eval mode, flags restored). Per image and map the maximum
    and its position (the first in row-major order among equal ones) are taken; per map the images are
    then sorted in Python by (value descending, image index ascending), so ties go to the earlier image.
    """
    capture = _Capture(model, module_name)
    outs = []
    with torch.no_grad():
        for start in range(0, len(images), batch_size):
            capture.outputs.clear()
            capture.run(model, images[start:start + batch_size])
            outs.append(capture.output(None).detach().cpu())
    acts = torch.cat(outs)
    n, c = acts.shape[:2]
    if acts.dim() == 4:
        flat = acts.flatten(2)
        best = flat.amax(2)           # (N, C)
        arg = flat.argmax(2)          # documented: the first maximal index
        pos = torch.stack((arg // acts.shape[3], arg % acts.shape[3]), dim=-1)
    else:
        best, pos = acts, torch.zeros(n, c, 2, dtype=torch.long)
    values = torch.full((c, k), float("-inf"), dtype=acts.dtype)
    index = torch.full((c, k), -1, dtype=torch.long)
    position = torch.full((c, k, 2), -1, dtype=torch.long)
    for ch in range(c):
        order = sorted(range(n), key=lambda i: (-float(best[i, ch]), i))[:k]
        for slot, i in enumerate(order):
            values[ch, slot] = best[i, ch]
            index[ch, slot] = i
            position[ch, slot] = pos[i, ch]
    return TopKReference(values, index, position)


def gradient_support_box(model: nn.Module, module_name: str, position: Sequence[int] | None,
                         image_size: int | Sequence[int], in_channels: int = 3, *, channel: int | None = None,
                         call: int | None = None, hold_norm_statistics: bool = True) -> tuple[int, int, int, int]:
    """The exact receptive field of one activation: the bounding box of an input gradient's support.

    A float64 CPU copy of ``model`` is made positive and (nearly) linear, so that no two paths from a
    pixel to the activation can cancel:

    - every parameter becomes ``|p| + 0.05`` (weights, biases, norm scales and shifts, layer scales);
      BatchNorm running means become 0 (running variances are positive already), so BN's scale is
      positive and, with positive inputs, so is every forward value up to the first Layer/GroupNorm;
    - every activation in :data:`RECTIFIERS` keeps its forward value but passes the signal unchanged
      backwards (rectifiers off);
    - every max-pool (``F.max_pool2d``, so ``nn.MaxPool2d`` too) becomes an average pool of the same
      geometry: kernel, stride, padding, dilation, ceil mode, each window position weighing
      1 / (kernel area) (count_include_pad); adaptive max-pools become adaptive average pools;
    - gates are held and LRN passes the signal, as in :func:`deconvnet_reference`; so the SE blocks'
      global pooling does not widen the field;
    - ``hold_norm_statistics=True`` (default): Layer/GroupNorm statistics held as in
      :func:`deconvnet_reference`, so the field is the support of the deconvnet's projection (LayerNorm
      over channels is per pixel either way; GroupNorm's statistics span the whole map); False: plain
      autograd through the statistics, the field of every pixel an activation depends on, which for
      GroupNorm is the whole image (a cancellation to exactly zero is possible in principle, not with
      generic weights).

    The input is all ones, (1, ``in_channels``, H, W). The activation is the sum over channels (or
    ``channel``) at ``position`` (row, column) of submodule ``module_name``'s output (for a 2-D output
    the units; ``position`` is ignored). The box is that of the pixels where the gradient, summed over
    the input channels, is nonzero.

    Returns:
        ``(y0, x0, y1, x1)``, half-open: ``image[:, y0:y1, x0:x1]``.

    Raises:
        ValueError: the gradient is zero everywhere (the activation does not depend on the input).
    """
    h, w = _pair(image_size)
    net = copy.deepcopy(model).to(device="cpu", dtype=torch.float64)
    with torch.no_grad():
        for p in net.parameters():
            p.copy_(p.abs() + 0.05)
        for m in net.modules():
            if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.running_mean is not None:
                m.running_mean.zero_()
                m.running_var.abs_()
    capture = _Capture(net, module_name)
    x = torch.ones(1, in_channels, h, w, dtype=torch.float64, requires_grad=True)
    with torch.enable_grad():
        capture.run(net, x, _Rules(relu_backward=False, average_max_pools=True, hold_norms=hold_norm_statistics))
    out = capture.output(call)[0]
    picked = out if channel is None else out[channel:channel + 1]
    if out.dim() == 3:
        if position is None:
            raise ValueError(f"{module_name} outputs maps; pass a (row, column) position")
        picked = picked[:, int(position[0]), int(position[1])]
    (grad,) = torch.autograd.grad(picked.sum(), x, allow_unused=True)
    if grad is None or not bool((grad != 0).any()):
        raise ValueError(f"the activation of {module_name} at {position} does not depend on the input")
    support = grad[0].abs().sum(0) > 0
    rows = torch.nonzero(support.any(1)).flatten()
    cols = torch.nonzero(support.any(0)).flatten()
    return int(rows[0]), int(cols[0]), int(rows[-1]) + 1, int(cols[-1]) + 1
