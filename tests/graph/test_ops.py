"""Ops written as functional calls and tensor methods, each against the independent references."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from helpers.reference import deconvnet_reference, gradient_support_box, occlusion_brute_force
from torch import nn

from zfnet import Deconvnet, receptive_field
from zfnet.analysis.occlusion import occlusion
from zfnet.graph import trace


class _Functional(nn.Module):
    """Every op of the rule table in its functional or tensor-method spelling."""

    def __init__(self) -> None:
        super().__init__()
        g = torch.Generator().manual_seed(0)
        self.w1 = nn.Parameter(torch.randn(8, 3, 3, 3, generator=g) * 0.3)
        self.b1 = nn.Parameter(torch.randn(8, generator=g) * 0.1)
        self.w2 = nn.Parameter(torch.randn(8, 4, 3, 3, generator=g) * 0.3)  # groups=2
        self.dw = nn.Parameter(torch.randn(8, 1, 3, 3, generator=g) * 0.3)  # depthwise, dilation 2
        self.scale = nn.Parameter(torch.rand(8, 1, 1, generator=g) + 0.5)  # a layer scale
        self.ln_w = nn.Parameter(torch.rand(8, generator=g) + 0.5)
        self.ln_b = nn.Parameter(torch.randn(8, generator=g) * 0.1)
        self.fc_w = nn.Parameter(torch.randn(8, 8, generator=g) * 0.3)  # a point-wise Linear on NHWC
        self.se_w = nn.Parameter(torch.randn(8, 8, generator=g) * 0.3)
        self.head = nn.Linear(8 * 4 * 4, 5)
        self.block = nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = (x - 0.1) / 2.0                                            # a constant bias and scale
        x = F.conv2d(x, self.w1, self.b1, 1, 1)
        x = F.relu(x, inplace=True)
        x = F.max_pool2d(x, 3, 2, 1, 1, True)                          # positional, ceil mode
        y = F.conv2d(x, self.w2, None, 1, 1, 1, 2)
        y = F.leaky_relu(y, 0.1)
        z = F.conv2d(x, self.dw, None, 1, 2, 2, 8)
        z = torch.clamp(z, min=0.0)
        x = torch.add(y, z) * self.scale                               # a sum, a layer scale
        a, b = torch.split(x, [3, 5], dim=1)
        x = torch.cat([F.hardtanh(a), F.gelu(b)], 1)
        t = x.permute(0, 2, 3, 1)                                      # channels-last
        t = F.layer_norm(t, (8,), self.ln_w, self.ln_b, 1e-6)
        t = F.silu(F.linear(t, self.fc_w))
        x = t.permute(0, 3, 1, 2).contiguous()
        gate = torch.sigmoid(F.linear(x.mean((2, 3)), self.se_w))     # squeeze-excitation
        x = x * gate[:, :, None, None]
        x = self.block(F.avg_pool2d(x, 2, 2))
        x = F.adaptive_avg_pool2d(x, (4, 4)).relu()
        return self.head(torch.flatten(x, 1))


@pytest.fixture
def model() -> nn.Module:
    return _Functional().double().eval()


def test_every_functional_op_has_its_rule(model):
    graph = trace(model)
    graph.layout((3, 24, 24))
    kinds = {graph.nodes[i].op.kind for i in range(len(graph.nodes)) if graph.nodes[i].op is not None}
    assert {"conv", "rectifier", "maxpool", "add", "scale", "split", "getitem", "cat", "reshape", "norm", "linear",
            "mean", "avgpool", "adaptive_avgpool", "pass"} <= kinds
    assert not [graph.nodes[i].describe() for i in range(len(graph.nodes))
                if graph.nodes[i].op is not None and not graph.nodes[i].op.has_rule()]


def test_projections_through_functional_ops_equal_the_reference(model):
    x = torch.randn(2, 3, 24, 24, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    deconv = Deconvnet(model)
    for layer in ("block", "head"):
        for keep in ("max", "map"):
            want = deconvnet_reference(model, x, layer, torch.tensor([1, 3]), keep)
            got = deconv.project(x, layer, torch.tensor([1, 3]), keep)
            scale = float(want.abs().max())
            assert scale > 0 and float((got - want).abs().max()) <= 1e-9 * scale


def test_occlusion_and_receptive_field_through_functional_ops(model):
    image = torch.randn(3, 24, 24, dtype=torch.float64, generator=torch.Generator().manual_seed(2))
    result = occlusion(model, image, target=1, window=6, stride=5, layer="block")
    want = occlusion_brute_force(model, image, 6, 5, 0.0, "block", result.channel, 1)
    torch.testing.assert_close(result.prob_true.double(), want.prob_true, rtol=0, atol=1e-6)
    assert torch.equal(result.top_class, want.top_class)
    assert receptive_field(model, "block", (1, 2), 24) == tuple(gradient_support_box(model, "block", (1, 2), 24))


@pytest.mark.parametrize("channels_last", [False, True])
@pytest.mark.parametrize("out_channels", [1, 3, 8])
def test_subpixel_transposed_convolution_equals_conv_transpose2d(out_channels, channels_last):
    # Conv._transpose runs a strided transposed convolution with few output channels (an image layer) as one
    # stride-1 conv2d over all output phases plus an interleave. Same sums in another order: measured at most
    # 7e-16 relative in float64 over these cases; 1e-12 catches any misplaced tap or phase.
    from zfnet.graph.ops import Conv

    g = torch.Generator().manual_seed(3)
    cases = [((7, 7), (2, 2), (0, 0), (0, 0)), ((7, 7), (2, 2), (1, 1), (1, 1)), ((11, 11), (4, 4), (2, 2), (3, 0)),
             ((3, 5), (2, 3), (1, 2), (0, 2)), ((2, 2), (2, 2), (0, 0), (1, 1)), ((1, 1), (3, 1), (0, 0), (2, 0)),
             ((4, 3), (3, 2), (3, 0), (0, 1))]
    taken = 0
    for kernel, stride, padding, output_padding in cases:
        conv = nn.Conv2d(out_channels, 6, kernel, stride).double().requires_grad_(False)
        op = Conv(conv.__call__, "conv", conv)
        for size in ((1, 1), (5, 7), (9, 4)):
            signal = torch.randn(2, 6, *size, dtype=torch.float64, generator=g)
            if channels_last:
                signal = signal.contiguous(memory_format=torch.channels_last)
            try:
                want = F.conv_transpose2d(signal, conv.weight, None, stride, padding, output_padding)
            except RuntimeError:  # a padding larger than the output
                continue
            op._sub_key = None
            got = op._transpose(signal, conv.weight, stride, padding, output_padding, 1, (1, 1))
            taken += op._sub_key is not None
            assert got.shape == want.shape
            scale = float(want.abs().max())
            assert float((got - want).abs().max()) <= 1e-12 * max(scale, 1e-300)
    assert taken >= 15  # the sub-pixel path ran (the rest fell back to conv_transpose2d)
