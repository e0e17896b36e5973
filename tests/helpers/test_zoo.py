"""Sanity of the test helpers: the zoo builds and runs, and the references agree with hand-written ones."""

from __future__ import annotations

import copy
from collections import OrderedDict

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from helpers import zoo
from helpers.reference import deconvnet_reference, gradient_support_box, occlusion_brute_force, topk_brute_force


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    # Tiny tensors: one intra-op thread is faster than two, and 100x faster on a busy 2-core machine.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


# Layer names (module paths) each family must have: the ones the algorithm tests use.
LAYERS = {
    "resnet": ["layer1.0.relu", "layer2.0.downsample", "layer3.1", "layer4"],
    "resnet_bottleneck": ["layer2.1.conv3", "layer3.0.downsample.0"],
    "resnext": ["layer3.0.conv2"],
    "resnet_gn": ["layer2.0.bn1"],
    "googlenet": ["inception3a", "inception4c", "maxpool4", "aux1"],
    "inception_v3": ["Mixed_5b", "Mixed_6b.branch7x7_2", "Mixed_7b"],
    "densenet": ["features.denseblock2", "features.denseblock2.denselayer2", "features.transition1.pool"],
    "squeezenet": ["features.7", "features.7.expand3x3_activation", "classifier.1"],
    "shufflenet_v2": ["stage2.1", "stage3.0.branch1", "conv5"],
    "regnet": ["trunk_output.block2.block2-1", "trunk_output.block2.block2-1.f.se"],
    "mobilenet_v2": ["features.3", "features.3.conv.1"],
    "mobilenet_v3": ["features.5", "features.5.block.2"],
    "efficientnet": ["features.3.1", "features.3.1.block.2", "features.3.1.stochastic_depth"],
    "convnext": ["features.5.1", "features.5.1.block.2", "features.6.0"],
    "alexnet": ["features.10"],
    "vgg": ["features.12"],
}


def test_every_family_is_listed():
    assert set(LAYERS) == set(zoo.FAMILIES)


@pytest.mark.parametrize("family", sorted(zoo.FAMILIES))
def test_family_builds_and_runs(family):
    model = zoo.FAMILIES[family](num_classes=7).eval()
    names = dict(model.named_modules())
    missing = [name for name in LAYERS[family] if name not in names]
    assert not missing, f"{family} lacks {missing}"
    with torch.no_grad():
        out = model(torch.randn(2, 3, zoo.INPUT_SIZE, zoo.INPUT_SIZE))
    assert out.shape == (2, 7)
    assert torch.isfinite(out).all()


def test_resnet_calls_one_relu_module_twice_per_block():
    model = zoo.resnet().eval()
    calls = {"block": 0, "stem": 0}
    model.layer1[0].relu.register_forward_hook(lambda *_: calls.__setitem__("block", calls["block"] + 1))
    model.relu.register_forward_hook(lambda *_: calls.__setitem__("stem", calls["stem"] + 1))
    with torch.no_grad():
        model(torch.randn(1, 3, 64, 64))
    assert calls == {"block": 2, "stem": 1}


def test_full_size_models_have_torchvisions_parameter_counts():
    with torch.device("meta"):  # structure only: no memory, no initialisation cost
        assert sum(p.numel() for p in zoo.resnet50().parameters()) == 25_557_032
        assert sum(p.numel() for p in zoo.vgg16().parameters()) == 138_357_544


def test_randomize_spreads_the_logits():
    model = zoo.randomize_(zoo.mobilenet_v3(), torch.Generator().manual_seed(0)).eval()
    with torch.no_grad():
        logits = model(torch.randn(4, 3, 64, 64))
    assert logits.std(dim=1).mean() > 0.5  # torchvision's own init: about 1e-6


def test_reordered_chain_registers_relu_before_the_pool_it_follows():
    model = zoo.ReorderedChain()
    order = [name for name, _ in model.named_children()]
    assert order.index("relu") < order.index("pool")
    x = torch.randn(2, 3, 32, 32)
    pooled_first = model.relu(model.pool(model.conv1(x)))
    expected = model.fc(torch.flatten(model.avgpool(model.relu2(model.conv2(pooled_first))), 1))
    torch.testing.assert_close(model(x), expected)


def test_data_dependent_branch_cannot_be_traced():
    with pytest.raises(torch.fx.proxy.TraceError):
        torch.fx.symbolic_trace(zoo.DataDependentBranch())


# -- the references ----------------------------------------------------------------------------------------


def _chain() -> nn.Sequential:
    """conv -> relu -> overlapping max-pool -> stride-2 conv -> relu; 17x17 inputs: 17 -> 8 -> 3."""
    net = nn.Sequential(OrderedDict(
        conv1=nn.Conv2d(3, 4, 3, padding=1), relu1=nn.ReLU(), pool1=nn.MaxPool2d(3, stride=2),
        conv2=nn.Conv2d(4, 5, 3, stride=2), relu2=nn.ReLU(),
    ))
    with torch.no_grad():
        net.conv2.bias.fill_(0.3)  # no map of relu2 is all zero (a zero projection proves nothing)
    return net


def _hand_deconvnet(net: nn.Sequential, x: torch.Tensor, seed_from: str, channels: list[int], keep: str,
                   positions: torch.Tensor | None = None) -> torch.Tensor:
    """The paper's deconvnet written out: rectify, transposed filtering, unpooling at the switches."""
    a1 = net.conv1(x)
    r1 = F.relu(a1)
    p1, switches = F.max_pool2d(r1, 3, stride=2, return_indices=True)
    a2 = net.conv2(p1)
    top = F.relu(a2) if seed_from == "relu2" else a2
    seed = torch.zeros_like(top)
    for n, c in enumerate(channels):
        if keep == "map":
            seed[n, c] = top[n, c]
        else:
            r, col = divmod(int(top[n, c].argmax()), top.shape[3]) if positions is None else positions[n].tolist()
            seed[n, c, r, col] = top[n, c, r, col]
    s = F.relu(seed) if seed_from == "relu2" else seed
    output_padding = p1.shape[-1] - ((a2.shape[-1] - 1) * 2 + 3)  # the rows the stride-2 conv never read
    s = F.conv_transpose2d(s, net.conv2.weight, stride=2, output_padding=output_padding)
    # The 3x3 stride-2 windows overlap, so two outputs can share a switch: their signals add
    # (scatter_add at the indices), which max_unpool2d (a plain scatter) would not do.
    unpooled = torch.zeros_like(r1).flatten(2).scatter_add_(2, switches.flatten(2), s.flatten(2))
    s = F.relu(unpooled.view_as(r1))
    return F.conv_transpose2d(s, net.conv1.weight, padding=1)


@pytest.mark.parametrize(("layer", "keep"), [("relu2", "max"), ("relu2", "map"), ("conv2", "map")])
def test_deconvnet_reference_equals_the_hand_written_deconvnet(layer, keep):
    net = _chain()
    x = torch.randn(3, 3, 17, 17)
    with torch.no_grad():
        expected = _hand_deconvnet(net, x, layer, [2, 2, 2], keep)
    got = deconvnet_reference(net, x, layer, 2, keep)
    assert expected.abs().sum() > 0
    # Float32 sums of a few hundred terms in another order: a few ulps of values of order 1.
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)


def test_deconvnet_reference_at_given_positions_with_a_channel_per_item():
    net = _chain()
    x = torch.randn(2, 3, 17, 17)
    positions = torch.tensor([[0, 2], [1, 1]])
    with torch.no_grad():
        expected = _hand_deconvnet(net, x, "conv2", [1, 4], "max", positions)
    got = deconvnet_reference(net, x, "conv2", torch.tensor([1, 4]), positions=positions)
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)


class _SiLUByHand(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * torch.sigmoid(x)


def test_gates_and_layer_norm_statistics_are_held():
    conv = nn.Conv2d(3, 4, 3, padding=1)
    x = torch.randn(2, 3, 6, 6)
    cases = {
        "se": zoo.SqueezeExcitation(4, 2),           # (B, C, 1, 1) sigmoid scale: the smaller operand
        "act": _SiLUByHand(),                        # same shape, the sigmoid's output is the gate
        "norm": zoo.LayerNorm2d(4, eps=1e-6),        # statistics held: signal * weight / std
    }
    for name, block in cases.items():
        if name == "norm":
            with torch.no_grad():
                block.weight.uniform_(0.5, 1.5)
        net = nn.Sequential(OrderedDict(conv=conv, **{name: block}))
        with torch.no_grad():
            a = conv(x)
            out = block(a)
            if name == "se":
                factor = block._scale(a).expand_as(a)
            elif name == "act":
                factor = torch.sigmoid(a)
            else:
                std = torch.sqrt(a.var(1, unbiased=False, keepdim=True) + 1e-6)
                factor = block.weight[None, :, None, None] / std
            seed = torch.zeros_like(out)
            seed[:, 1] = out[:, 1]
            expected = F.conv_transpose2d(seed * factor, conv.weight, padding=1)
        torch.testing.assert_close(deconvnet_reference(net, x, name, 1, "map"), expected, rtol=1e-5, atol=1e-6,
                                   msg=name)


def test_deconvnet_reference_equals_backward_hooks_on_a_resnet():
    # The classic implementation, another mechanism: ReLU modules (made out-of-place) whose backward
    # hooks rectify the signal. The ResNet calls each block's ReLU twice and the reference sees the
    # original in-place ReLUs and ``out += identity``.
    model = zoo.randomize_(zoo.resnet(), torch.Generator().manual_seed(1)).eval()
    x = torch.randn(2, 3, 64, 64)
    got = deconvnet_reference(model, x, "layer3.1", torch.tensor([3, 5]))

    hooked = copy.deepcopy(model)
    for m in hooked.modules():
        if isinstance(m, nn.ReLU):
            m.inplace = False
            m.register_full_backward_hook(lambda module, grad_in, grad_out: (grad_out[0].clamp(min=0),))
    captured = []
    hooked.layer3[1].register_forward_hook(lambda module, inputs, output: captured.append(output))
    xg = x.clone().requires_grad_(True)
    hooked(xg)
    out = captured[0]
    seed = torch.zeros_like(out)
    for n, c in enumerate((3, 5)):
        r, col = divmod(int(out[n, c].argmax()), out.shape[3])
        seed[n, c, r, col] = out[n, c, r, col]
    (expected,) = torch.autograd.grad(out, xg, seed)
    assert expected.abs().sum() > 0
    # Same float32 operations in the same order, apart from the rectification's implementation.
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-6 * float(expected.abs().max()))


def test_deconvnet_reference_leaves_no_hook_and_restores_training():
    model = zoo.resnet().train()
    deconvnet_reference(model, torch.randn(1, 3, 64, 64), "layer2.0", 0)
    assert model.training and all(m.training for m in model.modules())
    assert not any(m._forward_hooks for m in model.modules())
    with pytest.raises(ValueError, match="ran 2 times"):
        deconvnet_reference(model, torch.randn(1, 3, 64, 64), "layer1.0.relu", 0)
    assert not any(m._forward_hooks for m in model.modules())
    with pytest.raises(ValueError, match="unknown module"):
        deconvnet_reference(model, torch.randn(1, 3, 64, 64), "layer9", 0)


def test_occlusion_brute_force_equals_a_direct_loop():
    model = zoo.randomize_(zoo.ReorderedChain(num_classes=4), input_size=20).eval()
    image = torch.randn(3, 20, 20)
    window, stride, fill, channel, target = 6, 5, 0.3, 2, 1
    got = occlusion_brute_force(model, image, window, stride, fill, "conv2", channel, target, batch_size=4)
    grid = (20 - window) // stride + 1
    prob = torch.zeros(grid, grid, dtype=torch.float64)
    top = torch.zeros(grid, grid, dtype=torch.long)
    act = torch.zeros(grid, grid, dtype=torch.float64)
    with torch.no_grad():
        for i in range(grid):
            for j in range(grid):
                occluded = image.clone()
                occluded[:, i * stride:i * stride + window, j * stride:j * stride + window] = fill
                logits = model(occluded[None])[0].double()
                prob[i, j] = torch.softmax(logits, 0)[target]
                top[i, j] = logits.argmax()
                act[i, j] = model.conv2(model.relu(model.pool(model.conv1(occluded[None]))))[0, channel].double().sum()
    assert prob.std() > 0
    # Batched and single-image float32 convolutions may differ in the last bits.
    torch.testing.assert_close(got.prob_true, prob, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(got.top_class, top)
    torch.testing.assert_close(got.activity, act, rtol=1e-5, atol=1e-5)


def test_topk_brute_force_breaks_ties_towards_the_earlier_image():
    net = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU())
    images = torch.randn(5, 3, 8, 8)
    images[3] = images[1]
    # One image per batch: the twins give bit-identical maps (a batch's kernels may round differently).
    top = topk_brute_force(net, images, "0", k=7, batch_size=1)
    assert top.values.shape == (4, 7) and top.position.shape == (4, 7, 2)
    with torch.no_grad():
        maps = torch.cat([net[0](image[None]) for image in images])
    for c in range(4):
        maxima = maps[:, c].flatten(1).amax(1)
        assert top.values[c, :5].tolist() == sorted(maxima.tolist(), reverse=True)
        assert top.image_index[c].tolist().index(1) < top.image_index[c].tolist().index(3)
        for slot in range(5):
            n = int(top.image_index[c, slot])
            r, col = top.position[c, slot].tolist()
            assert maps[n, c, r, col] == maxima[n]
        assert top.values[c, 5:].tolist() == [float("-inf")] * 2
        assert top.image_index[c, 5:].tolist() == [-1, -1]


def _field(layers: list[tuple[int, int, int, int, int]], index: int) -> tuple[int, int]:
    """Rows [lo, hi) one output row reads through ``layers`` (kernel, stride, padding, dilation, input size).

    Each layer maps the rows ``lo .. hi`` of its output to the input rows its windows read, clipped to the
    input: a dilated window's first and last real rows, not the padding between.
    """
    lo = hi = index
    for k, s, p, d, n in reversed(layers):
        lo = min(r for r in (lo * s - p + d * t for t in range(k)) if 0 <= r < n)
        hi = max(r for r in (hi * s - p + d * t for t in range(k)) if 0 <= r < n)
    return lo, hi + 1


def test_gradient_support_box_is_the_analytic_receptive_field():
    net = nn.Sequential(OrderedDict(
        c1=nn.Conv2d(3, 4, 3), r1=nn.ReLU(),
        c2=nn.Conv2d(4, 4, 3, stride=2, padding=1), r2=nn.ReLU(),
        pool=nn.MaxPool2d(3, stride=2, padding=1, dilation=2, ceil_mode=True),
        c3=nn.Conv2d(4, 5, (3, 1), padding=(1, 0)), r3=nn.ReLU(),
    ))
    # (kernel, stride, padding, dilation) per axis; input sizes 29x31 -> 27x29 -> 14x15 -> 7x7 -> 7x7.
    rows = [(3, 1, 0, 1, 29), (3, 2, 1, 1, 27), (3, 2, 1, 2, 14), (3, 1, 1, 1, 7)]
    cols = [(3, 1, 0, 1, 31), (3, 2, 1, 1, 29), (3, 2, 1, 2, 15), (1, 1, 0, 1, 7)]
    assert net(torch.zeros(1, 3, 29, 31)).shape[-2:] == (7, 7)
    for position in [(0, 0), (6, 6), (2, 3), (6, 0)]:
        (y0, y1), (x0, x1) = _field(rows, position[0]), _field(cols, position[1])
        assert gradient_support_box(net, "r3", position, (29, 31)) == (y0, x0, y1, x1), position
        assert gradient_support_box(net, "c3", position, (29, 31), channel=4) == (y0, x0, y1, x1), position


def test_gradient_support_box_holds_or_follows_group_norm_statistics():
    net = nn.Sequential(OrderedDict(conv=nn.Conv2d(3, 4, 3, padding=1), norm=nn.GroupNorm(2, 4)))
    assert gradient_support_box(net, "norm", (5, 5), 16) == (4, 4, 7, 7)
    assert gradient_support_box(net, "norm", (5, 5), 16, hold_norm_statistics=False) == (0, 0, 16, 16)
