"""The model zoo: the paper's sizes and parameter counts, variants, initialisation, renormalisation."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from zfnet.models import (
    LAYER_NAMES,
    ConvNetConfig,
    build,
    filter_rms,
    init_paper_,
    list_models,
    model_info,
    renormalize_filters_,
)

SMALL = [n for n in list_models() if model_info(n).input_size <= 112]


def n_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def test_zfnet_parameter_count_and_map_sizes_are_the_papers():
    # Fig. 3 / §3: 62,357,608 parameters at 1000 classes; 110 -> 55 -> 26 -> 13 -> 6 maps.
    model = build("zfnet")
    assert n_params(model) == 62_357_608
    sizes = model.config.map_sizes()
    assert [sizes[k] for k in ("conv1", "pool1", "conv2", "pool2", "conv5", "pool5")] == [110, 55, 26, 13, 13, 6]


def test_zfnet_b_and_alexnet_parameter_counts():
    assert n_params(build("zfnet-b")) == 107_627_624
    # AlexNet as one tower differs from ZFNet only in conv1 (11x11x3 instead of 7x7x3 weights).
    assert n_params(build("alexnet")) == 62_357_608 + 96 * 3 * (121 - 49)
    assert build("alexnet").config.map_sizes()["conv1"] == 55


@pytest.mark.slow
def test_full_size_forward_shapes():
    model = build("zfnet").eval()
    x = torch.zeros(1, 3, 224, 224)
    shapes = {}
    hooks = [model.get_submodule(n).register_forward_hook(
        lambda m, i, o, n=n: shapes.__setitem__(n, tuple(o.shape))) for n in LAYER_NAMES]
    try:
        with torch.no_grad():
            model(x)
    finally:
        for h in hooks:
            h.remove()
    assert shapes == {"conv1": (1, 96, 110, 110), "conv2": (1, 256, 26, 26), "conv3": (1, 384, 13, 13),
                      "conv4": (1, 384, 13, 13), "conv5": (1, 256, 13, 13), "fc6": (1, 4096),
                      "fc7": (1, 4096), "fc8": (1, 1000)}


@pytest.mark.parametrize("name", list_models())
def test_layer_names_and_modules(name):
    model = build(name, num_classes=7)
    for layer in LAYER_NAMES:
        model.get_submodule(layer)
    # every stage is a module: no functional ReLU or pooling hides from hooks
    kinds = {type(m) for m in model.modules()}
    assert nn.ReLU in kinds and nn.MaxPool2d in kinds
    assert any(issubclass(k, nn.LocalResponseNorm) for k in kinds)
    assert isinstance(model.conv1[-1], nn.ReLU) and isinstance(model.fc6[-1], nn.ReLU)


@pytest.mark.parametrize("name", SMALL)
def test_small_models_forward_backward(name):
    model = build(name, num_classes=5)
    s = model_info(name).input_size
    out = model(torch.randn(2, 3, s, s) * 50)
    assert out.shape == (2, 5) and torch.isfinite(out).all()
    out.sum().backward()
    for pname, p in model.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, f"no gradient reaches {pname}"


def test_paper_initialisation():
    model = build("zfnet")
    w = model.conv2.conv.weight
    assert abs(w.std().item() - 1e-2) < 2e-4  # 614k samples: the std estimate is within ~0.1%
    layers = [m for m in model.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    assert all(float(m.bias.detach().abs().max()) == 0 for m in layers)
    with pytest.raises(ValueError, match="positive"):
        init_paper_(model, std=0)


def test_cpu_variants_keep_the_full_networks_gains():
    # A narrow copy initialised with N(0, 1e-2) shrinks the signal at every layer; the variants'
    # per-layer std makes the logits' scale at init comparable to the full-size network's.
    torch.manual_seed(0)
    x = torch.randn(8, 3, 112, 112) * 60
    with torch.no_grad():
        small = build("zfnet-cpu", num_classes=10).eval()(x).std()
        naive = build("zfnet-cpu", num_classes=10, init_std=1e-2).eval()(x).std()
    assert small > 20 * naive
    assert 1e-3 < small < 1.0


@pytest.mark.parametrize("removed,present", [
    (("conv3", "conv4"), ["conv1", "conv2", "conv5", "fc6", "fc7", "fc8"]),
    (("fc7",), ["conv1", "conv2", "conv3", "conv4", "conv5", "fc6", "fc8"]),
    (("fc6", "fc7"), ["conv1", "conv2", "conv3", "conv4", "conv5", "fc8"]),
    (("conv3", "conv4", "fc6", "fc7"), ["conv1", "conv2", "conv5", "fc8"]),
])
def test_ablations_remove_layers(removed, present):
    model = build("zfnet-tiny", num_classes=4, removed=removed)
    assert model.layer_names == present
    assert model(torch.randn(1, 3, 64, 64)).shape == (1, 4)


def test_ablation_widths_full_size_counts():
    # fc6/fc7 at 2048: fewer parameters by exactly the difference of the two FC layers.
    base, narrow = build("zfnet"), build("zfnet", fc=(2048, 2048))
    diff = (9216 * 4096 + 4096 * 4096 + 4096 * 1000 + 4096 * 2) - (9216 * 2048 + 2048 * 2048 + 2048 * 1000 + 2048 * 2)
    assert n_params(base) - n_params(narrow) == diff
    assert n_params(build("zfnet", conv345=(512, 1024, 512))) == n_params(build("zfnet-b"))


def test_bad_options_raise_clear_errors():
    with pytest.raises(ValueError, match="unknown model 'vgg'.*zfnet"):
        build("vgg")
    with pytest.raises(ValueError, match="unknown model option.*valid options"):
        build("zfnet", widht=3)
    with pytest.raises(ValueError, match="cannot remove.*conv5"):
        build("zfnet", removed=("conv5",))
    with pytest.raises(ValueError, match="too small"):
        build("zfnet", input_size=40)


def test_duplicate_registration_raises():
    from zfnet.models import register

    with pytest.raises(ValueError, match="already registered"):
        register("zfnet", input_size=224, description="x")(lambda **kw: None)


def test_renormalize_filters_known_answer():
    conv = nn.Conv2d(2, 3, 2, bias=True)
    with torch.no_grad():
        conv.weight.copy_(torch.stack([torch.full((2, 2, 2), v) for v in (0.5, 0.1, -0.02)]))
        conv.bias.fill_(7.0)
    n = renormalize_filters_(nn.Sequential(conv), max_rms=0.1)
    assert n == 1  # only the first filter's RMS (0.5) exceeds 0.1; the second is exactly at it
    assert torch.allclose(filter_rms(conv), torch.tensor([0.1, 0.1, 0.02]))
    assert torch.allclose(conv.weight[0], torch.full((2, 2, 2), 0.1))  # direction kept
    assert torch.all(conv.bias == 7.0)


def test_renormalize_preserves_direction_random():
    conv = nn.Conv2d(3, 8, 3)
    with torch.no_grad():
        conv.weight.normal_(0, 1.0)
    before = conv.weight.detach().clone()
    renormalize_filters_(conv, max_rms=0.1)
    assert torch.allclose(filter_rms(conv), torch.full((8,), 0.1), atol=1e-6)
    cos = torch.nn.functional.cosine_similarity(before.flatten(1), conv.weight.flatten(1))
    assert torch.allclose(cos, torch.ones(8), atol=1e-6)


def test_config_validation():
    with pytest.raises(ValueError, match="dropout"):
        ConvNetConfig(dropout=1.0)
    with pytest.raises(ValueError, match="one value per layer"):
        ConvNetConfig(init_std=(0.1, 0.2))


# -- AlexNet as Krizhevsky et al. (2012) built it, and ZFNet's layout of it -------------------------------------

KRIZHEVSKY_ORDER = ["conv1", "norm1", "pool1", "conv2", "norm2", "pool2", "conv3", "conv4", "conv5", "pool5",
                    "flatten", "fc6", "drop6", "fc7", "drop7", "fc8"]
ZFNET_ORDER = ["conv1", "pool1", "norm1", "conv2", "pool2", "norm2", "conv3", "conv4", "conv5", "pool5",
               "flatten", "fc6", "drop6", "fc7", "drop7", "fc8"]


def _biases(model: nn.Module) -> dict[str, set[float]]:
    """The distinct initial bias values of each paper layer."""
    return {name: {float(v) for m in model.get_submodule(name).modules()
                   if isinstance(m, (nn.Conv2d, nn.Linear)) for v in m.bias.detach().unique()}
            for name in model.layer_names}


@pytest.mark.parametrize("name", ["alexnet", "alexnet-cpu", "alexnet-tiny"])
def test_alexnet_normalises_before_pooling(name):
    assert [n for n, _ in build(name, num_classes=3).named_children()] == KRIZHEVSKY_ORDER


@pytest.mark.parametrize("name", ["zfnet", "zfnet-b", "zfnet-cpu", "zfnet-tiny", "alexnet-zf"])
def test_zfnet_layout_pools_before_normalising(name):
    assert [n for n, _ in build(name, num_classes=3).named_children()] == ZFNET_ORDER


@pytest.mark.parametrize("name", ["alexnet", "alexnet-tiny"])
def test_alexnet_biases_start_at_krizhevskys_values(name):
    # Krizhevsky et al. §5: conv2, conv4, conv5 and the fully connected hidden layers at 1, the rest at 0.
    assert _biases(build(name, num_classes=3)) == {
        "conv1": {0.0}, "conv2": {1.0}, "conv3": {0.0}, "conv4": {1.0}, "conv5": {1.0},
        "fc6": {1.0}, "fc7": {1.0}, "fc8": {0.0}}


@pytest.mark.parametrize("name", ["alexnet-zf", "alexnet-cpu"])
def test_biases_start_at_zero(name):
    # alexnet-cpu: Krizhevsky's biases of 1 kept it at chance on the demo's data (docs/model.md)
    assert set().union(*_biases(build(name, num_classes=3)).values()) == {0.0}


def test_alexnet_and_alexnet_zf_have_the_same_parameters_and_map_sizes():
    a, b = build("alexnet"), build("alexnet-zf")
    assert {k: v.shape for k, v in a.state_dict().items()} == {k: v.shape for k, v in b.state_dict().items()}
    assert a.config.map_sizes() == b.config.map_sizes()
    assert n_params(b) == 62_378_344


def test_stage_order_changes_the_function():
    # The same weights in the two orders: the max of normalised maps is not the normalised max.
    torch.manual_seed(0)
    krizhevsky = build("alexnet-tiny", num_classes=3).eval()
    zf_order = build("alexnet-tiny", num_classes=3, norm_before_pool=False).eval()
    zf_order.load_state_dict(krizhevsky.state_dict())
    x = torch.randn(2, 3, 64, 64) * 50
    with torch.no_grad():
        assert not torch.allclose(krizhevsky(x), zf_order(x))


def test_unit_biases_skip_removed_layers():
    model = build("alexnet-tiny", num_classes=3, removed=("conv4", "fc6", "fc7"))
    assert _biases(model) == {"conv1": {0.0}, "conv2": {1.0}, "conv3": {0.0}, "conv5": {1.0}, "fc8": {0.0}}


def test_init_bias_one_refuses_an_unknown_layer():
    with pytest.raises(ValueError, match="init_bias_one"):
        ConvNetConfig(init_bias_one=("conv9",))


def test_fc_widths_with_fc6_and_fc7_removed_are_refused():
    with pytest.raises(ValueError, match=r"fc=\(2048, 2048\) sets the widths of fc6 and fc7, which removed="):
        build("zfnet", removed=("fc6", "fc7"), fc=(2048, 2048))


def test_fc_widths_with_one_fc_layer_removed_are_used():
    assert build("zfnet-tiny", num_classes=3, removed=("fc7",), fc=(64, 64)).fc6.linear.out_features == 64


@pytest.mark.parametrize("name", list_models())
def test_parameter_count_equals_the_built_models_without_allocating_it(name, monkeypatch):
    from zfnet.models import parameter_count

    expected = sum(p.numel() for p in build(name, num_classes=7).parameters())
    # torch.device("meta") caches the set of factory functions it redirects on first use: use it once
    # before torch.empty is wrapped, so that the wrapped call still reaches the original, redirected.
    parameter_count(name, num_classes=7)
    real_empty = torch.empty
    sizes = []

    def counting_empty(*args, **kwargs):  # no real memory for the parameters: meta tensors only
        t = real_empty(*args, **kwargs)
        if t.device.type != "meta":
            sizes.append(t.numel())
        return t

    monkeypatch.setattr(torch, "empty", counting_empty)
    assert parameter_count(name, num_classes=7) == expected
    assert sum(sizes) < expected / 100
