"""Every algorithm on the graph, on a faithful small copy of each model-zoo family, against independent
references (autograd with the deconvnet rule, brute force, the support of a gradient).

Measured bounds (float64): projections within 1e-9 of the reference relative to its largest value,
occlusion maps within float32 rounding (1e-6; occlusion reports float32 maps) of one forward pass per
position, top-k equal.
"""

from __future__ import annotations

import pytest
import torch
from helpers.reference import deconvnet_reference, gradient_support_box, occlusion_brute_force, topk_brute_force
from helpers.zoo import FAMILIES, INPUT_SIZE, randomize_

from zfnet import Deconvnet, receptive_field, top_activations
from zfnet.analysis.occlusion import occlusion

# family -> layers to check: blocks, a module's repeated call, residual and concatenating outputs
LAYERS = {
    "resnet": ["layer1.0.relu#2", "layer2.0.downsample", "layer3.1", "layer4"],
    "resnet_bottleneck": ["layer2.1", "layer2.1.conv3", "layer3.0.downsample.0"],
    "resnext": ["layer3", "layer3.0.conv2"],
    "resnet_gn": ["layer2.0", "layer2.0.bn1"],
    "googlenet": ["inception3a", "maxpool3", "inception4c"],
    "inception_v3": ["Mixed_5b", "Mixed_6a", "Mixed_6b.branch7x7_2", "Mixed_7b"],
    "densenet": ["features.denseblock2.denselayer2", "features.transition1", "features.denseblock2"],
    "squeezenet": ["features.7.expand3x3_activation", "features.7", "classifier.1"],
    "shufflenet_v2": ["stage2.1", "stage3.0.branch1", "stage3.1", "conv5"],
    "regnet": ["trunk_output.block2.block2-1.f.se", "trunk_output.block2"],
    "mobilenet_v2": ["features.3.conv.1", "features.3", "features.5"],
    "mobilenet_v3": ["features.5.block.2", "features.5"],
    "efficientnet": ["features.3.1.block.2", "features.3.1", "features.3"],
    "convnext": ["features.6.0", "features.5.1", "features.3"],
    "alexnet": ["features.10"],
    "vgg": ["features.12"],
}
OCCLUSION_LAYER = {name: layers[-1] for name, layers in LAYERS.items()}
SIZE = INPUT_SIZE


@pytest.fixture(autouse=True)
def _one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _model(name: str) -> torch.nn.Module:
    torch.manual_seed(0)
    model = FAMILIES[name](num_classes=6)
    randomize_(model, torch.Generator().manual_seed(1), input_size=SIZE)
    return model.double().eval()


def _images(n: int, seed: int = 2) -> torch.Tensor:
    return torch.randn(n, 3, SIZE, SIZE, dtype=torch.float64, generator=torch.Generator().manual_seed(seed))


def _close(got: torch.Tensor, want: torch.Tensor, rtol: float = 1e-9) -> None:
    scale = float(want.abs().max())
    assert scale > 0, "degenerate test: the reference is zero"
    err = float((got - want).abs().max())
    assert err <= rtol * scale, f"max error {err:.3g} vs scale {scale:.3g}"


def _reference_name(layer: str) -> tuple[str, int | None]:
    module, _, call = layer.partition("#")
    return module, (int(call) - 1 if call else None)  # the reference counts calls from 0


@pytest.mark.parametrize("name", sorted(LAYERS))
def test_projections_equal_the_autograd_deconvnet_rule(name):
    model, x = _model(name), _images(2)
    deconv = Deconvnet(model)
    for layer in LAYERS[name]:
        module, call = _reference_name(layer)
        channels = torch.tensor([1, 3])
        for keep in ("max", "map"):
            want = deconvnet_reference(model, x, module, channels, keep, call=call)
            _close(deconv.project(x, layer, channels, keep), want)


@pytest.mark.parametrize("name", sorted(LAYERS))
def test_given_positions_cone_and_shared_agree_with_the_reference(name):
    model, x = _model(name), _images(3, seed=5)
    layer = LAYERS[name][-1]
    module, call = _reference_name(layer)
    deconv = Deconvnet(model)
    c, h, w = deconv.output_shape(layer, (3, SIZE, SIZE))
    positions = torch.tensor([[0, 0], [h - 1, w // 2], [h // 2, w - 1]])
    channels = torch.tensor([0, 2, 1])
    want = deconvnet_reference(model, x, module, channels, "max", positions=positions, call=call)
    for strategy in ("cone", "shared"):
        deconv._strategy = strategy
        _close(deconv.project(x, layer, channels, positions=positions), want)


@pytest.mark.parametrize("name", sorted(LAYERS))
def test_occlusion_equals_one_forward_pass_per_position(name):
    model, image = _model(name), _images(1, seed=3)[0]
    layer = OCCLUSION_LAYER[name]
    module, call = _reference_name(layer)
    result = occlusion(model, image, target=2, window=16, stride=12, layer=layer, batch_size=7)
    want = occlusion_brute_force(model, image, 16, 12, 0.0, module, result.channel, 2)
    # occlusion reports float32 maps (its softmax runs in float32): equal up to float32 rounding
    torch.testing.assert_close(result.prob_true.double(), want.prob_true, rtol=0, atol=1e-6)
    assert torch.equal(result.top_class, want.top_class)
    torch.testing.assert_close(result.activity.double(), want.activity.double(), rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("name", sorted(LAYERS))
def test_top_k_equals_brute_force(name):
    model, x = _model(name), _images(7, seed=4)
    layer = next(name for name in LAYERS[name] if "#" not in name)  # the reference hooks modules run once
    module, _ = _reference_name(layer)
    top = top_activations(model, x.split(3), layer, k=4)[layer]
    want = topk_brute_force(model, x, module, 4)
    torch.testing.assert_close(top.values.double(), want.values.double(), rtol=1e-12, atol=0)
    assert torch.equal(top.image_index, want.image_index)
    assert torch.equal(top.position, want.position)


@pytest.mark.parametrize("name", sorted(LAYERS))
def test_receptive_field_is_the_support_of_the_input_gradient(name):
    model = _model(name)
    deconv = Deconvnet(model)
    for layer in LAYERS[name]:
        module, call = _reference_name(layer)
        shape = deconv.output_shape(layer, (3, SIZE, SIZE))
        corners = [(0, 0), (shape[1] - 1, shape[2] - 1), (shape[1] // 2, 0)] if len(shape) == 3 else [(0, 0)]
        for pos in corners:
            want = gradient_support_box(model, module, pos if len(shape) == 3 else None, SIZE, call=call,
                                        hold_norm_statistics=name != "resnet_gn")
            assert receptive_field(deconv, layer, pos, SIZE) == tuple(want), (layer, pos)
