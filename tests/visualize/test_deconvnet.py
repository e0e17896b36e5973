"""The deconvnet: known answers, exactness against autograd with the deconvnet rule, API and hooks."""

from __future__ import annotations

import copy
from collections import OrderedDict

import pytest
import torch
import torch.nn.functional as F
from helpers.nets import NotAChain, Shuffled, VGGStyle, hand_net, plain_sequential, randomize_batch_norm_
from torch import nn

from zfnet import Deconvnet, receptive_field
from zfnet.models import build

# ---------------------------------------------------------------------------------------------
# The independent reference: PyTorch autograd, with every ReLU's backward replaced by a ReLU of
# the incoming gradient (the deconvnet rule) and contrast normalisation's backward by the identity
# (the paper passes the signal through it unchanged). The backward pass starts from the kept
# activations themselves, i.e. the gradient scaled by the activation's value.


class _RuleReLU(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x):
        return x.clamp(min=0)

    @staticmethod
    def backward(ctx, grad):
        return grad.clamp(min=0)


class _PassLRN(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, lrn):
        return F.local_response_norm(x, lrn.size, lrn.alpha, lrn.beta, lrn.k)

    @staticmethod
    def backward(ctx, grad):
        return grad, None


class _RuleReLUModule(nn.Module):
    def forward(self, x):
        return _RuleReLU.apply(x)


class _PassLRNModule(nn.Module):
    def __init__(self, lrn: nn.LocalResponseNorm) -> None:
        super().__init__()
        self.lrn = lrn

    def forward(self, x):
        return _PassLRN.apply(x, self.lrn)


def deconv_rule_reference(model: nn.Module, x: torch.Tensor, layer: str, channels: torch.Tensor, keep: str,
                          positions: torch.Tensor | None = None) -> torch.Tensor:
    """Deconvnet-rule gradient of the kept activations of ``layer`` w.r.t. ``x``, times their values."""
    ref = copy.deepcopy(model).eval()
    for name, module in list(ref.named_modules()):
        if isinstance(module, (nn.ReLU, nn.LocalResponseNorm)):
            parent, _, leaf = name.rpartition(".")
            owner = ref.get_submodule(parent) if parent else ref
            setattr(owner, leaf, _RuleReLUModule() if isinstance(module, nn.ReLU) else _PassLRNModule(module))
    seen = {}
    handle = ref.get_submodule(layer).register_forward_hook(lambda m, i, o: seen.__setitem__("act", o))
    x = x.clone().requires_grad_()
    try:
        ref(x)
    finally:
        handle.remove()
    act = seen["act"]
    n = torch.arange(len(x))
    signal = torch.zeros_like(act)
    if act.dim() == 2 or keep == "map":
        signal[n, channels] = act[n, channels]
    else:
        if positions is None:
            arg = act[n, channels].flatten(1).argmax(1)
            positions = torch.stack((arg // act.shape[3], arg % act.shape[3]), 1)
        r, c = positions[:, 0], positions[:, 1]
        signal[n, channels, r, c] = act[n, channels, r, c]
    (grad,) = torch.autograd.grad(act, x, signal)
    return grad


def assert_close_relative(got: torch.Tensor, want: torch.Tensor, rtol: float) -> None:
    scale = float(want.abs().max())
    assert scale > 0, "degenerate test: the reference projection is zero"
    err = float((got - want).abs().max())
    assert err <= rtol * scale, f"max error {err:.3g} vs scale {scale:.3g}"


def _zfnet_tiny() -> nn.Module:
    return build("zfnet-tiny", num_classes=5)


def _vgg_bn() -> nn.Module:
    return randomize_batch_norm_(VGGStyle(batch_norm=True, avgpool=3), torch.Generator().manual_seed(1))


# (model factory, input size, layers): zfnet's own names and containers, dotted names inside a
# torchvision-style model, pre- and post-ReLU, pools, FC layers, BatchNorm, odd geometry.
CASES = [
    ("zfnet-tiny", _zfnet_tiny, 64, ["conv1", "conv2.conv", "pool2", "conv3", "conv5", "pool5", "fc6", "fc8"]),
    ("vgg-style", VGGStyle, 40, ["features.0", "features.3", "features", "avgpool", "classifier.1", "classifier"]),
    ("vgg-bn", _vgg_bn, 40, ["features.1", "features.4", "features.10", "classifier.2"]),
    ("sequential", plain_sequential, 37, ["c1", "r2", "p2", "c3", "fc"]),
]


@pytest.mark.parametrize("keep", ["max", "map"])
@pytest.mark.parametrize("name,factory,size,layers", CASES, ids=[c[0] for c in CASES])
def test_projection_equals_deconv_rule_gradient(name, factory, size, layers, keep):
    # float64 on both sides: the two compute the same sums in different orders, so they agree to
    # a few ulps (observed <= 1e-15 relative); 1e-10 leaves room and still catches any wrong rule.
    model = factory().double()
    x = torch.randn(3, 3, size, size, dtype=torch.float64)
    deconv = Deconvnet(model)
    for layer in layers:
        width = deconv.output_shape(layer, x.shape[1:])[0]
        channels = torch.randint(0, width, (3,))
        want = deconv_rule_reference(model, x, layer, channels, keep)
        assert_close_relative(deconv.project(x, layer, channels, keep), want, 1e-10)


@pytest.mark.parametrize("strategy", ["cone", "shared"])
@pytest.mark.parametrize("name,factory,size,layers", CASES, ids=[c[0] for c in CASES])
def test_given_positions_match_the_reference_both_ways(name, factory, size, layers, strategy):
    # Known positions are computed inside each activation's receptive field ("cone") or from one
    # full forward pass per image ("shared"); both must give the reference, also at the borders.
    model = factory().double()
    x = torch.randn(2, 3, size, size, dtype=torch.float64)
    deconv = Deconvnet(model)
    deconv._strategy = strategy
    for layer in layers:
        shape = deconv.output_shape(layer, x.shape[1:])
        image_index = torch.tensor([0, 1, 1, 0, 1])
        channels = torch.randint(0, shape[0], (5,))
        if len(shape) == 3:  # corners and random interior positions
            positions = torch.stack((torch.randint(0, shape[1], (5,)), torch.randint(0, shape[2], (5,))), 1)
            positions[0] = torch.tensor([0, 0])
            positions[1] = torch.tensor([shape[1] - 1, shape[2] - 1])
        else:
            positions = torch.zeros(5, 2, dtype=torch.long)
        got = deconv.project(x, layer, channels, "max", positions=positions, image_index=image_index)
        want = deconv_rule_reference(model, x[image_index], layer, channels, "max", positions)
        assert_close_relative(got, want, 1e-10)


def test_float32_zfnet_tiny_matches_reference():
    # float32: summation order differs (windowed vs whole-map convolutions, scatter vs autograd's
    # max-pool backward), so agreement is to float32 rounding accumulated over ~10 layers.
    model = _zfnet_tiny()
    x = torch.randn(4, 3, 64, 64)
    deconv = Deconvnet(model)
    for layer in ("conv2", "conv5", "fc7"):
        channels = torch.tensor([1, 5, 7, 11])
        want = deconv_rule_reference(model, x, layer, channels, "max")
        assert_close_relative(deconv.project(x, layer, channels), want, 1e-4)


def test_known_answer_unpooling_adds_where_switches_are_shared():
    # hand_net: y[i, j] = x[i, j] - x[i+1, j+1] (filter [[1, 0], [0, -1]]), ReLU, 2x2 max-pool with
    # stride 1. With a single 5 at (1, 1) and a 2 at (3, 3):
    #   y = [[-5, 0, 0], [0, 5, 0], [0, 0, -2]], relu(y) = 5 at (1, 1) only,
    #   pool = [[5, 5], [5, 5]]: all four overlapping windows have their switch at (1, 1).
    net = hand_net()
    x = torch.zeros(1, 1, 4, 4)
    x[0, 0, 1, 1], x[0, 0, 3, 3] = 5.0, 2.0
    deconv = Deconvnet(net)

    def image(entries):
        out = torch.zeros(1, 1, 4, 4)
        for (i, j), v in entries.items():
            out[0, 0, i, j] = v
        return out

    # keep="map" at the pool: 4 x 5 = 20 lands on the shared switch (values add), is rectified
    # (stays 20) and filtered by the transposed filter: +20 at (1, 1), -20 at (2, 2).
    assert torch.equal(deconv.project(x, "pool", 0, "map"), image({(1, 1): 20.0, (2, 2): -20.0}))
    # keep="max": the first maximal activation (0, 0), value 5, alone.
    assert torch.equal(deconv.project(x, "pool", 0, "max"), image({(1, 1): 5.0, (2, 2): -5.0}))
    # From the convolution itself (pre-ReLU) the whole map y goes through the transposed filter,
    # negative values included: sum of y[i, j] * w placed at (i, j).
    want = image({(0, 0): -5.0, (1, 1): -5.0 * -1 + 5.0, (2, 2): 5.0 * -1 - 2.0, (3, 3): -2.0 * -1})
    assert torch.equal(deconv.project(x, "conv", 0, "map"), want)


def test_known_answer_rectification_acts_on_the_signal():
    # conv_a (1x1, weight 1), ReLU, conv_b (1x1, weight -1, bias 10). At x = 1 the conv_b unit is
    # 9 (active). Going down, conv_b's transposed filter turns 9 into -9, and the ReLU rectifies the
    # signal itself, whatever the forward pass did: the projection is 0, where the plain gradient
    # times the activation would be -9.
    conv_a, conv_b = nn.Conv2d(1, 1, 1, bias=False), nn.Conv2d(1, 1, 1)
    with torch.no_grad():
        conv_a.weight.fill_(1.0)
        conv_b.weight.fill_(-1.0)
        conv_b.bias.fill_(10.0)
    net = nn.Sequential(OrderedDict(a=conv_a, relu=nn.ReLU(), b=conv_b))
    x = torch.ones(1, 1, 2, 2)
    deconv = Deconvnet(net)
    assert torch.equal(deconv.project(x, "b", 0), torch.zeros_like(x))
    # Without the rectification in between (from the ReLU's output) the signal passes: 1 at the max.
    assert torch.equal(deconv.project(x, "relu", 0), torch.tensor([[[[1.0, 0.0], [0.0, 0.0]]]]))


def test_projection_stays_inside_the_receptive_field():
    model = _zfnet_tiny()
    x = torch.randn(2, 3, 64, 64)
    deconv = Deconvnet(model)
    seen = {}
    for layer in ("conv1", "conv2", "conv3"):
        handle = model.get_submodule(layer).register_forward_hook(lambda m, i, o: seen.__setitem__("a", o))
        with torch.no_grad():
            model.eval()(x)
        handle.remove()
        channels = seen["a"].amax(dim=(2, 3)).argmax(1)  # each image's strongest map: not a dead one
        _, _, positions = deconv.project_with_values(x, layer, channels)
        proj = deconv.project(x, layer, channels)
        for n in range(2):
            y0, x0, y1, x1 = receptive_field(deconv, layer, positions[n].tolist(), 64)
            inside = torch.zeros(64, 64, dtype=torch.bool)
            inside[y0:y1, x0:x1] = True
            assert proj[n].abs().sum() > 0
            assert proj[n][:, ~inside].abs().sum() == 0


def test_channels_int_or_per_image_and_image_index_sharing():
    model = _zfnet_tiny()
    x = torch.randn(3, 3, 64, 64)
    deconv = Deconvnet(model)
    one = deconv.project(x, "conv4", 6)
    per = deconv.project(x, "conv4", torch.tensor([6, 6, 6]))
    assert torch.equal(one, per)
    # Several maps of one image through image_index equal one call per image.
    both = deconv.project(x, "conv3", torch.tensor([1, 2, 1, 2]), image_index=torch.tensor([0, 0, 2, 2]))
    for k, (i, c) in enumerate([(0, 1), (0, 2), (2, 1), (2, 2)]):
        single = deconv.project(x[i:i + 1], "conv3", c)
        torch.testing.assert_close(both[k:k + 1], single, rtol=1e-5, atol=1e-7)  # float32 batching noise


def test_chunking_does_not_change_the_result():
    model = _zfnet_tiny().double()
    x = torch.randn(5, 3, 64, 64, dtype=torch.float64)
    channels = torch.tensor([0, 3, 5, 7, 9])
    big = Deconvnet(model).project(x, "conv2", channels, "map")
    small = Deconvnet(model, chunk_bytes=1).project(x, "conv2", channels, "map")  # one item per chunk
    torch.testing.assert_close(small, big, rtol=1e-12, atol=0)
    small, big = Deconvnet(model, chunk_bytes=1), Deconvnet(model)
    small._strategy = big._strategy = "cone"
    positions = torch.tensor([[0, 0], [1, 2], [2, 2], [0, 1], [2, 0]])
    want = big.project(x, "conv5", channels, positions=positions)
    torch.testing.assert_close(small.project(x, "conv5", channels, positions=positions), want, rtol=1e-12, atol=0)


def test_dtype_device_from_input_and_shape():
    model = _zfnet_tiny().double()
    out = Deconvnet(model).project(torch.randn(2, 3, 64, 64, dtype=torch.float64), "fc6", 4)
    assert out.dtype == torch.float64 and out.shape == (2, 3, 64, 64)


def _all_hooks_empty(model: nn.Module) -> bool:
    return all(not m._forward_hooks and not m._forward_pre_hooks and not m._backward_hooks
               and not getattr(m, "_backward_pre_hooks", None) for m in model.modules())


def test_no_hook_left_and_training_flags_restored_after_success_and_error():
    model = _zfnet_tiny().train()
    model.fc6.eval()  # a mixed state must come back as it was
    deconv = Deconvnet(model)
    x = torch.randn(2, 3, 64, 64)
    deconv.project(x, "conv3", 1)
    assert _all_hooks_empty(model)
    assert model.training and model.conv1.training and not model.fc6.training
    with pytest.raises(ValueError):
        deconv.project(x, "conv3", torch.tensor([1, 999]))
    with pytest.raises(ValueError, match="fails on a"):  # inside the model's forward pass (wrong input channels)
        deconv.project(torch.randn(2, 4, 64, 64), "conv3", 1)
    assert _all_hooks_empty(model)
    assert model.training and model.conv1.training and not model.fc6.training


def test_unknown_layer_lists_valid_names():
    deconv = Deconvnet(_zfnet_tiny())
    with pytest.raises(ValueError, match=r"unknown layer 'conv9'; valid names: conv1.conv, conv1.relu, conv1, "
                                         r"pool1, .*fc8"):
        deconv.project(torch.randn(1, 3, 64, 64), "conv9", 0)
    with pytest.raises(TypeError, match="layer must be a str"):
        deconv.project(torch.randn(1, 3, 64, 64), 3, 0)


@pytest.mark.parametrize("kwargs,error,message", [
    (dict(layer="conv2", channels=32), ValueError, r"channel 32 out of range: conv2 has 32 channels \(0 .. 31\)"),
    (dict(layer="conv2", channels=torch.tensor([1, 2, 3])), ValueError, r"one per item \(2\)"),
    (dict(layer="conv2", channels=1.5), TypeError, "channels must be an int"),
    (dict(layer="conv2", channels=1, keep="mean"), ValueError, "keep must be one of max, map, got 'mean'"),
    (dict(layer="conv2", channels=1, keep="map", positions=torch.zeros(2, 2, dtype=torch.long)), ValueError,
     "positions select"),
    (dict(layer="conv2", channels=1, positions=torch.tensor([[0, 6], [0, 0]])), ValueError,
     r"column positions must lie in \[0, 6\)"),
    (dict(layer="conv2", channels=1, positions=torch.zeros(3, 2, dtype=torch.long)), ValueError, r"\(2, 2\)"),
    (dict(layer="conv2", channels=1, image_index=torch.tensor([0, 2])), ValueError, r"image_index must lie in"),
])
def test_bad_arguments_name_the_value_and_the_choices(kwargs, error, message):
    deconv = Deconvnet(_zfnet_tiny())
    x = torch.randn(2, 3, 64, 64)
    layer, channels = kwargs.pop("layer"), kwargs.pop("channels")
    with pytest.raises(error, match=message):
        deconv.project(x, layer, channels, **kwargs)


def test_bad_input_tensor():
    deconv = Deconvnet(_zfnet_tiny())
    with pytest.raises(ValueError, match=r"\(B, C, H, W\)"):
        deconv.project(torch.randn(3, 64, 64), "conv1", 0)
    with pytest.raises(TypeError, match="x must be a torch.Tensor"):
        deconv.project([1.0], "conv1", 0)


class _Upsampling(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3)
        self.relu = nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.relu(F.interpolate(self.conv(x), scale_factor=2.0))


def test_an_op_without_a_rule_is_named_with_its_node_and_code_line():
    deconv = Deconvnet(_Upsampling())
    x = torch.randn(1, 3, 12, 12)
    with pytest.raises(TypeError, match=r"no rule for graph node 'interpolate' \(F.interpolate\) at File .*"
                                        r"test_deconvnet.py.*line \d+.*F.interpolate"):
        deconv.project(x, "relu", 0)
    assert torch.isfinite(deconv.project(x, "conv", 0)).all()  # below the op, projections still work
    model = nn.Sequential(OrderedDict(c=nn.Conv2d(3, 4, 3, padding=1, padding_mode="reflect"), r=nn.ReLU()))
    with pytest.raises(TypeError, match="padding_mode='reflect'"):
        Deconvnet(model).project(x, "r", 0)
    model = nn.Sequential(OrderedDict(c=nn.Conv2d(3, 4, 3), b=nn.BatchNorm2d(4, track_running_stats=False)))
    with pytest.raises(TypeError, match="without running statistics"):
        Deconvnet(model).project(x, "b", 0)


@pytest.mark.parametrize("model", [NotAChain(), Shuffled()], ids=["residual", "shuffled"])
def test_models_that_are_not_a_chain_project_exactly(model):
    # A residual sum, and children registered in another order than forward runs them: the graph
    # follows forward, so the projection equals the autograd reference.
    x = torch.randn(2, 3, 12, 12, dtype=torch.float64)
    model = model.double()
    deconv = Deconvnet(model)
    for keep in ("max", "map"):
        want = deconv_rule_reference(model, x, "relu", torch.tensor([0, 2]), keep)
        assert_close_relative(deconv.project(x, "relu", torch.tensor([0, 2]), keep), want, 1e-10)


def test_registration_order_cannot_fool_the_structure():
    # ReLU registered before the max-pool, run after it: the projection follows forward's order.
    class Reordered(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv = nn.Conv2d(3, 4, 3, padding=1)
            self.relu = nn.ReLU()
            self.pool = nn.MaxPool2d(2)
            self.conv2 = nn.Conv2d(4, 4, 3, padding=1)

        def forward(self, x):
            return self.conv2(self.relu(self.pool(self.conv(x))))

    model = Reordered().double()
    assert Deconvnet(model).layer_names == ["conv", "pool", "relu", "conv2"]
    x = torch.randn(2, 3, 12, 12, dtype=torch.float64)
    want = deconv_rule_reference(model, x, "conv2", torch.tensor([1, 3]), "max")
    assert_close_relative(Deconvnet(model).project(x, "conv2", torch.tensor([1, 3])), want, 1e-10)


@pytest.mark.filterwarnings("ignore:Using padding='same' with even kernel")
def test_same_padding_with_an_even_kernel_and_unused_trailing_rows():
    # "same" with a 4x4 kernel pads 1 before and 2 after; the stride-3 conv leaves trailing rows unused.
    model = nn.Sequential(OrderedDict(
        a=nn.Conv2d(3, 4, 4, padding="same"), r=nn.ReLU(), b=nn.Conv2d(4, 5, 3, stride=3), s=nn.ReLU(),
    )).double()
    x = torch.randn(2, 3, 14, 14, dtype=torch.float64)
    deconv = Deconvnet(model)
    for layer in ("r", "s"):
        for keep in ("max", "map"):
            want = deconv_rule_reference(model, x, layer, torch.tensor([1, 3]), keep)
            assert_close_relative(deconv.project(x, layer, torch.tensor([1, 3]), keep), want, 1e-10)


def test_off_the_map_garbage_is_cleared_where_it_is_read():
    # Inside a receptive field a windowed op's output holds garbage off the map (a bias, its ReLU). The cone
    # leaves it there when the only reader pads what it reads (a max-pool) or passes it on to such a reader
    # (a ReLU or contrast normalisation before a pool), and clears it before any other reader.
    model = nn.Sequential(OrderedDict(
        c1=nn.Conv2d(3, 4, 5, stride=2, padding=2), p1=nn.MaxPool2d(3, 2, padding=1),
        c2=nn.Conv2d(4, 6, 3, padding=2), r2=nn.ReLU(), c3=nn.Conv2d(6, 6, 3, padding=1), r3=nn.ReLU(),
        n3=nn.LocalResponseNorm(3), p3=nn.MaxPool2d(3, 2, ceil_mode=True), c4=nn.Conv2d(6, 5, 3, padding=1),
        r4=nn.ReLU(),
    )).double()
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.Conv2d):
                m.bias.uniform_(-1.0, 1.0)
    deconv = Deconvnet(model)
    deconv._strategy = "cone"
    x = torch.randn(2, 3, 29, 29, dtype=torch.float64)
    for layer in ("c4", "r4", "c2", "r2"):
        shape = deconv.output_shape(layer, x.shape[1:])
        image_index = torch.tensor([0, 1, 0, 1])
        positions = torch.tensor([[0, 0], [shape[1] - 1, shape[2] - 1], [0, shape[2] - 1], [shape[1] // 2, 1]])
        channels = torch.tensor([0, 1, 2, 3])
        got = deconv.project(x, layer, channels, "max", positions=positions, image_index=image_index)
        want = deconv_rule_reference(model, x[image_index], layer, channels, "max", positions)
        assert_close_relative(got, want, 1e-10)
    from zfnet.visualize.deconvnet import _Engine

    graph = deconv.graph
    engine = _Engine(graph, graph.layout(x.shape[1:]), graph.index_of("r4"), 2**20, x)
    deferred = {graph.nodes[i].name for i in engine.deferred}
    # c1, c3 -> r3 -> n3 end at a pool; c2 and c4 leave the clearing to their ReLU, which r2 does before c3
    # reads it and r4, the target, does too; the pools' outputs feed convolutions
    assert deferred == {"c1", "c2", "c3", "r3", "n3", "c4"}
