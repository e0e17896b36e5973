"""ContrastNorm's fast forward (a banded matmul over channels) against torch's local_response_norm."""

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from zfnet.models import ContrastNorm
from zfnet.models.speed import contrast_norm

# float64 reference comparisons: both sides round differently only in the order of a 5-term sum
# and a pow, so they agree to ~1e-15; 1e-12 leaves room without hiding a wrong window (which
# changes results at 1e-4 and above for these inputs).
TOL64 = dict(rtol=1e-12, atol=1e-12)
# float32: the same argument at single precision (eps 1.2e-7).
TOL32 = dict(rtol=1e-5, atol=1e-6)

LAYOUTS = [torch.contiguous_format, torch.channels_last]


def _input(shape, dtype=torch.float64, memory_format=torch.contiguous_format, scale=3.0):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(shape, generator=g, dtype=dtype) * scale
    return x.contiguous(memory_format=memory_format).requires_grad_()


@pytest.mark.parametrize("size", [1, 2, 3, 4, 5, 7])
@pytest.mark.parametrize("memory_format", LAYOUTS)
def test_forward_and_gradient_match_torch(size, memory_format):
    # Large alpha so that the window sum matters at float64 precision; odd and even windows
    # (torch pads size // 2 before and (size - 1) // 2 after).
    args = (size, 0.3, 0.75, 1.5)
    x = _input((3, 9, 4, 5), memory_format=memory_format)
    g = torch.randn(3, 9, 4, 5, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    ours = contrast_norm(x, *args)
    ref = F.local_response_norm(x, *args)
    torch.testing.assert_close(ours, ref, **TOL64)
    (gx,) = torch.autograd.grad(ours, x, g)
    (gr,) = torch.autograd.grad(ref, x, g)
    torch.testing.assert_close(gx, gr, **TOL64)


@pytest.mark.parametrize("memory_format", LAYOUTS)
def test_gradcheck(memory_format):
    x = _input((2, 6, 3, 3), memory_format=memory_format)
    assert torch.autograd.gradcheck(lambda t: contrast_norm(t, 5, 0.5, 0.75, 2.0), (x,))


@pytest.mark.parametrize("memory_format", LAYOUTS)
def test_module_matches_torch_module_at_paper_constants_float32(memory_format):
    ours, ref = ContrastNorm(5, 1e-4, 0.75, 2.0), nn.LocalResponseNorm(5, 1e-4, 0.75, 2.0)
    # Post-ReLU-like magnitudes (the paper's norm1 input), where alpha * sum(x^2) is not negligible.
    x = _input((4, 96, 7, 7), dtype=torch.float32, memory_format=memory_format, scale=30.0).relu()
    x = x.detach().contiguous(memory_format=memory_format).requires_grad_()
    y, yr = ours(x), ref(x)
    torch.testing.assert_close(y, yr, **TOL32)
    assert y.is_contiguous(memory_format=memory_format)
    g = torch.randn_like(y)
    torch.testing.assert_close(torch.autograd.grad(y, x, g)[0], torch.autograd.grad(yr, x, g)[0], **TOL32)


def test_other_ranks_fall_back_to_torch():
    m = ContrastNorm(3, 0.2, 0.75, 1.0)
    for shape in [(2, 6, 5), (2, 6, 3, 4, 5)]:
        x = _input(shape)
        torch.testing.assert_close(m(x), F.local_response_norm(x, 3, 0.2, 0.75, 1.0), **TOL64)


def test_torch_func_grad_matches_autograd():
    x = _input((2, 6, 3, 3)).detach()
    fn = lambda t: contrast_norm(t, 5, 0.5, 0.75, 2.0).square().sum()  # noqa: E731
    torch.testing.assert_close(torch.func.grad(fn)(x),
                               torch.func.grad(lambda t: F.local_response_norm(t, 5, 0.5, 0.75, 2.0)
                                               .square().sum())(x), **TOL64)


def test_inference_mode_and_no_grad():
    m = ContrastNorm()
    x = _input((2, 8, 3, 3), dtype=torch.float32).detach()
    with torch.inference_mode():
        torch.testing.assert_close(m(x), F.local_response_norm(x, 5, 1e-4, 0.75, 2.0), **TOL32)


def test_autocast_keeps_input_precision_like_torch():
    x = _input((2, 8, 3, 3), dtype=torch.float32, scale=30.0).detach()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        y = contrast_norm(x, 5, 0.5, 0.75, 2.0)
    assert y.dtype == torch.float32
    torch.testing.assert_close(y, F.local_response_norm(x, 5, 0.5, 0.75, 2.0), **TOL32)


def test_still_a_local_response_norm_without_state():
    m = ContrastNorm(5, 1e-4, 0.75, 2.0)
    assert isinstance(m, nn.LocalResponseNorm)
    assert (m.size, m.alpha, m.beta, m.k) == (5, 1e-4, 0.75, 2.0)
    assert dict(m.state_dict()) == {}
