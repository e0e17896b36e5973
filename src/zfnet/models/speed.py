"""Speed machinery: a fast contrast normalisation and :func:`prepare_for_speed`.

PyTorch's ``local_response_norm`` squares its input, pads it, runs ``avg_pool3d`` over a
``(size, 1, 1)`` window and lets autograd differentiate the chain: about a dozen passes over
memory forward and twice that backward, which on a CPU cost ZFNet more than its largest
convolution. :func:`contrast_norm` computes the same function as one matrix product with a
banded ``(C, C)`` matrix (the sum over a window of neighbouring maps) plus three element-wise
passes, with a hand-written backward of the same shape.

:func:`prepare_for_speed` puts a model into the fastest numerically equivalent form found for
training or inference (``benchmarks/throughput.py`` measures the choices; ``docs/benchmarks.md``
has the figures). It changes the memory layout, keeps freed host memory for reuse
(:func:`retain_freed_host_memory`) and, optionally, compiles; it never changes the module tree,
the parameter names or the function the model computes.
"""

from __future__ import annotations

import ctypes
import itertools
import sys
import types

import torch
import torch.nn.functional as F
from torch import nn
from torch.autograd.function import once_differentiable

__all__ = ["contrast_norm", "prepare_for_speed", "retain_freed_host_memory"]


def _window_matrix(channels: int, size: int, scale: float, like: torch.Tensor) -> torch.Tensor:
    """``(C, C)`` matrix ``M`` with ``(t @ M)[c] = scale * sum of t[c']`` over the window of ``c``.

    The window matches ``F.local_response_norm``: ``size // 2`` maps before ``c`` and
    ``(size - 1) // 2`` after.
    """
    i = torch.arange(channels, device=like.device)
    offset = i[None, :] - i[:, None]  # column c minus row c'
    inside = (offset <= size // 2) & (offset >= -((size - 1) // 2))
    return inside.to(like.dtype) * scale


def _channel_window_sum(t: torch.Tensor, matrix: torch.Tensor) -> torch.Tensor:
    """``out[:, c] = sum_c' matrix[c', c] * t[:, c']`` for a (B, C, H, W) tensor, in its own layout."""
    if t.device.type in ("cpu", "cuda") and torch.is_autocast_enabled(t.device.type):
        # torch's LRN has no autocast rule and keeps its input's precision; so does this.
        with torch.autocast(t.device.type, enabled=False):
            return _channel_window_sum(t, matrix)
    b, c, h, w = t.shape
    if t.is_contiguous(memory_format=torch.channels_last):
        # (B*H*W, C) rows are contiguous: one GEMM, the result comes back channels-last.
        rows = t.permute(0, 2, 3, 1).reshape(b * h * w, c)
        return torch.mm(rows, matrix).view(b, h, w, c).permute(0, 3, 1, 2)
    # NCHW: (C, C) @ (C, H*W) for every image.
    return torch.matmul(matrix.t(), t.contiguous().view(b, c, h * w)).view(b, c, h, w)


class _ContrastNormFunction(torch.autograd.Function):
    """``y = x * d ** -beta`` with ``d = k + alpha / size * window_sum(x ** 2)``.

    Backward: ``dx = g * d ** -beta - 2 beta alpha / size * x * window_sum^T(g * x * d ** (-beta - 1))``.
    ``d`` and ``d ** -beta`` come out of ``forward`` as non-differentiable extra outputs so that
    ``setup_context`` can save them (the form ``torch.func`` transforms require).
    """

    @staticmethod
    def forward(x: torch.Tensor, size: int, alpha: float, beta: float, k: float):
        matrix = _window_matrix(x.shape[1], size, alpha / size, x)
        d = _channel_window_sum(x * x, matrix).add_(k)  # (B, C, H, W)
        r = d.pow(-beta)
        return x * r, d, r

    @staticmethod
    def setup_context(ctx, inputs, output) -> None:
        x, size, alpha, beta, _ = inputs
        _, d, r = output
        ctx.mark_non_differentiable(d, r)
        ctx.set_materialize_grads(False)  # d's and r's gradients are never used: no zero tensors made for them
        ctx.save_for_backward(x, d, r)
        ctx.size, ctx.alpha, ctx.beta = size, alpha, beta

    @staticmethod
    @once_differentiable
    def backward(ctx, grad: torch.Tensor, _grad_d: torch.Tensor, _grad_r: torch.Tensor):
        if grad is None:  # the output was not used (grads are not materialised)
            return None, None, None, None, None
        x, d, r = ctx.saved_tensors
        t = (grad * x).mul_(r).div_(d)
        # The window relation transposed; the scale folds in the 2 * beta * alpha / size factor.
        matrix = _window_matrix(x.shape[1], ctx.size, 2.0 * ctx.beta * ctx.alpha / ctx.size, x).t()
        u = _channel_window_sum(t, matrix)
        return torch.addcmul(grad * r, x, u, value=-1.0), None, None, None, None


def contrast_norm(x: torch.Tensor, size: int, alpha: float = 1e-4, beta: float = 0.75,
                  k: float = 1.0) -> torch.Tensor:
    """Local response normalisation across channels, equal to ``F.local_response_norm``.

    Computed as a banded matrix product over channels for 4-D floating-point input, in the
    input's memory format (NCHW or channels-last); any other input goes to
    ``F.local_response_norm``. Differentiable once (no double backward).

    Args:
        x: input, (B, C, H, W).
        size: number of neighbouring channels summed over.
        alpha: multiplicative factor.
        beta: exponent.
        k: additive factor.

    Returns:
        ``x / (k + alpha / size * sum_window x ** 2) ** beta``, same shape and memory format.

    Example:
        >>> x = torch.randn(2, 8, 5, 5)
        >>> torch.allclose(contrast_norm(x, 5, 1e-4, 0.75, 2.0),
        ...                F.local_response_norm(x, 5, 1e-4, 0.75, 2.0), atol=1e-6)
        True
    """
    if x.dim() != 4 or not x.is_floating_point() or x.shape[1] == 0:
        return F.local_response_norm(x, size, alpha, beta, k)
    return _ContrastNormFunction.apply(x, size, alpha, beta, k)[0]


# glibc mallopt parameters (malloc.h).
_M_TRIM_THRESHOLD = -1
_M_MMAP_MAX = -4
_retaining = False


def retain_freed_host_memory() -> bool:
    """Make glibc's ``malloc`` keep freed memory in the process for reuse; process-wide.

    By default glibc gives every allocation above 32 MiB its own ``mmap`` and unmaps it on free,
    so each large CPU tensor (ZFNet's conv1 output at batch 64 is 297 MiB) is paid for again in
    page faults and zero-filling on every step: a fifth of an eager channels-last training step
    of ZFNet on CPU. With ``mmap`` off and trimming raised to 2 GiB, freed blocks go back to the
    heap and the next step reuses them, as the CUDA caching allocator does on a GPU. The
    process's resident memory stays near its peak instead of shrinking between steps.

    Returns:
        True if the setting is in force (Linux with glibc), False where it could not be applied.

    Example:
        >>> retain_freed_host_memory() in (True, False)
        True
    """
    global _retaining
    if _retaining:
        return True
    if not sys.platform.startswith("linux"):
        return False
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    mallopt.restype = ctypes.c_int
    # mallopt returns 1 on success; musl's stub returns 0 and changes nothing.
    _retaining = mallopt(_M_MMAP_MAX, 0) == 1 and mallopt(_M_TRIM_THRESHOLD, 2**31 - 1) == 1
    return _retaining


def _device_of(model: nn.Module) -> torch.device:
    for tensor in itertools.chain(model.parameters(), model.buffers()):
        return tensor.device
    return torch.device("cpu")


def prepare_for_speed(model: nn.Module, *, train: bool, channels_last: bool | None = None,
                      retain_memory: bool | None = None, compile: bool = False) -> nn.Module:
    """Put ``model`` in its fastest numerically equivalent form for training or inference, in place.

    The module tree, parameter names and the computed function are unchanged: hooks see every
    stage, ``state_dict()`` keys stay the same, and outputs and gradients match the unprepared
    model to float32 rounding. The contrast normalisation is fast whether or not this is called
    (``ContrastNorm.forward`` uses :func:`contrast_norm`).

    Measured on ZFNet at 224 px, batch 64, fp32, 2 CPU cores (``docs/benchmarks.md``): a training
    step goes from 36-41% to 65-70% of the machine's matmul peak and inference from 28-33% to
    66-71%. ``torch.compile`` is off by default: on that CPU it makes training about 30% slower
    and inference 4-14% faster, after compiles of 5-15 s per mode and batch shape.

    Args:
        model: a ZFNet-family network (any ``nn.Module`` works).
        train: True to set training mode, False for evaluation mode (``model.train(train)``).
        channels_last: store 4-D weights channels-last (NHWC), so that oneDNN / cuDNN run the
            convolutions, pools and the normalisation in that layout. None: on for CPU models
            (measured) and CUDA ones (cuDNN's tensor-core kernels are NHWC; not measured here),
            off elsewhere. False leaves the layout as it is.
        retain_memory: call :func:`retain_freed_host_memory` (process-wide). None: on for CPU models.
        compile: compile the model's forward in place with ``torch.compile`` (inductor): the
            model stays the same object with the same ``state_dict`` keys, and ``del
            model.forward`` undoes it. The first call in each mode (train, eval, no-grad) and
            batch shape compiles, 5-20 s each for ZFNet on 2 CPU cores. Hooks registered later
            still run, at the price of a recompilation each time the set of hooks changes (this
            sets dynamo's ``skip_nnmodule_hook_guards = False``, process-wide), so analyses that
            hook the model are better served by an uncompiled one. Idempotent.

    Returns:
        ``model`` itself, prepared.

    Example:
        >>> from zfnet.models import build
        >>> net = prepare_for_speed(build("zfnet-tiny"), train=False)
        >>> x = torch.randn(2, 3, 64, 64).contiguous(memory_format=torch.channels_last)
        >>> with torch.inference_mode():
        ...     net(x).shape
        torch.Size([2, 1000])

    Feed the input channels-last as well (``x.contiguous(memory_format=torch.channels_last)``);
    NCHW input works too and costs one layout conversion inside conv1.
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be an nn.Module, got {type(model).__name__}")
    device = _device_of(model)
    model.train(train)
    if channels_last is None:
        channels_last = device.type in ("cpu", "cuda")
    if channels_last:
        model.to(memory_format=torch.channels_last)  # only 4-D tensors (conv weights) change
    if retain_memory is None:
        retain_memory = device.type == "cpu"
    if retain_memory:
        retain_freed_host_memory()
    if compile and not _is_compiled(model):
        # Dynamo by default does not guard on module hooks, so a hook registered after the first
        # call would silently never run; with the guard it recompiles instead (process-wide).
        torch._dynamo.config.skip_nnmodule_hook_guards = False
        # model.compile() would compile nn.Module._call_impl, which torch 2.13's dynamo skips
        # (torch/nn is on its skip list; pytorch#150915), compiling only ContrastNorm.forward.
        # A forward in this file is traced whole, and a method bound to the instance is rebound
        # to the copy by copy.deepcopy.
        model.forward = types.MethodType(torch.compile(_class_forward), model)
    return model


def _class_forward(self: nn.Module, *args, **kwargs):
    return type(self).forward(self, *args, **kwargs)


def _is_compiled(model: nn.Module) -> bool:
    forward = vars(model).get("forward")
    return isinstance(forward, types.MethodType) and hasattr(forward.__func__, "_torchdynamo_orig_callable")
