"""Speed machinery: a fast contrast normalisation and :func:`prepare_for_speed`.

PyTorch's ``local_response_norm`` squares its input, pads it, runs ``avg_pool3d`` over a
``(size, 1, 1)`` window and lets autograd differentiate the chain: about a dozen passes over
memory forward and twice that backward, which on a CPU cost ZFNet more than its largest
convolution. :func:`contrast_norm` computes the same function as one matrix product with a
banded ``(C, C)`` matrix (the sum over a window of neighbouring maps) plus three element-wise
passes, with a hand-written backward of the same shape.

:func:`prepare_for_speed` puts a model into the fastest numerically equivalent form found for
training or inference (``benchmarks/throughput.py`` measures the choices; ``docs/benchmarks.md``
has the figures). It changes memory layout and, optionally, compiles; it never changes the
module tree, the parameter names or the function the model computes.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torch.autograd.function import once_differentiable

__all__ = ["contrast_norm", "prepare_for_speed"]


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
    b, c, h, w = t.shape
    if t.is_contiguous(memory_format=torch.channels_last):
        # (B*H*W, C) rows are contiguous: one GEMM, the result comes back channels-last.
        rows = t.permute(0, 2, 3, 1).reshape(b * h * w, c)
        return torch.mm(rows, matrix).view(b, h, w, c).permute(0, 3, 1, 2)
    # NCHW: (C, C) @ (C, H*W) for every image.
    return torch.matmul(matrix.t(), t.contiguous().view(b, c, h * w)).view(b, c, h, w)


class _ContrastNormFunction(torch.autograd.Function):
    """``y = x * d ** -beta`` with ``d = k + alpha / size * window_sum(x ** 2)``.

    Backward: ``dx = g * d ** -beta - 2 * beta * alpha / size * x * window_sum^T(g * x * d ** (-beta - 1))``.
    """

    @staticmethod
    def forward(ctx, x: torch.Tensor, size: int, alpha: float, beta: float, k: float) -> torch.Tensor:
        matrix = _window_matrix(x.shape[1], size, alpha / size, x)
        d = _channel_window_sum(x * x, matrix).add_(k)  # (B, C, H, W)
        r = d.pow(-beta)
        ctx.save_for_backward(x, d, r)
        ctx.size, ctx.alpha, ctx.beta = size, alpha, beta
        return x * r

    @staticmethod
    @once_differentiable
    def backward(ctx, grad: torch.Tensor):
        x, d, r = ctx.saved_tensors
        t = (grad * x).mul_(r).div_(d)
        # The window relation transposed; scale folds in the 2 * beta * alpha / size factor.
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
    return _ContrastNormFunction.apply(x, size, alpha, beta, k)


def prepare_for_speed(model: nn.Module, **_: object) -> nn.Module:  # placeholder, filled in below
    return model
