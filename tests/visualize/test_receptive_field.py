"""Receptive fields: the paper's network by hand, and brute force with gradients."""

from __future__ import annotations

import pytest
import torch
from helpers.nets import VGGStyle, plain_sequential, positive_conv_net

from zfnet import receptive_field, receptive_fields
from zfnet.models import build
from zfnet.visualize.receptive_field import ReceptiveField


def _zfnet_narrow():
    """ZFNet's geometry at 224 px (Fig. 3) with 8 maps per layer: the field arithmetic only sees the geometry."""
    return build("zfnet", num_classes=2, conv1=(8, 7, 2, 1), conv2=(8, 5, 2, 0), conv345=(8, 8, 8), fc=(8, 8))


def test_zfnet_geometry_by_hand():
    # conv1 7x7/2 pad 1: jump 2, size 7, start -1. pool1 3x3/2: size 7 + 2*2 = 11, jump 4.
    # conv2 5x5/2: 11 + 4*4 = 27, jump 8. pool2: 27 + 2*8 = 43, jump 16. conv3-5 3x3 pad 1 each
    # add 2*16 = 32 and move the start by -16: 75, 107, 139; start -17, -33, -49.
    model = _zfnet_narrow()
    rf = receptive_fields(model, 224)
    assert rf["conv1"] == ReceptiveField((2, 2), (7, 7), (-1, -1))
    assert rf["pool1"] == ReceptiveField((4, 4), (11, 11), (-1, -1))
    assert rf["conv2"] == ReceptiveField((8, 8), (27, 27), (-1, -1))
    assert rf["conv3"] == ReceptiveField((16, 16), (75, 75), (-17, -17))
    assert rf["conv5"] == ReceptiveField((16, 16), (139, 139), (-49, -49))
    assert rf["conv5.conv"] == rf["conv5"]
    assert rf["fc6"] == ReceptiveField((0, 0), (224, 224), (0, 0))  # fully connected: the whole image
    # Clipped boxes: conv1 (0, 0) starts in the padding; conv5 (6, 6) sits in the middle.
    assert receptive_field(model, "conv1", (0, 0), 224) == (0, 0, 6, 6)
    assert receptive_field(model, "conv5", (6, 6), 224) == (47, 47, 186, 186)
    assert receptive_field(model, "fc7", (0, 0), 224) == (0, 0, 224, 224)


def _spike_support(model, layer, channel, position, shape):
    """Input pixels the activation depends on, by brute force.

    All weights and biases are positive and inputs are positive, so every unit is active and no
    sum cancels. For each pixel p, one image has a huge value at p: every unit that depends on p
    becomes huge and wins every max-pool window it is in, so the activation's gradient at p is
    non-zero exactly when some path leads from p to the activation.
    """
    c, h, w = shape
    base = torch.rand(1, c, h, w) + 0.5
    x = base.repeat(h * w, 1, 1, 1)
    pixels = torch.arange(h * w)
    x[pixels, :, pixels // w, pixels % w] += 1e3
    x.requires_grad_()
    seen = {}
    handle = model.get_submodule(layer).register_forward_hook(lambda m, i, o: seen.__setitem__("a", o))
    try:
        model(x)
    finally:
        handle.remove()
    act = seen["a"][:, channel, position[0], position[1]]
    (grad,) = torch.autograd.grad(act.sum(), x)  # the images are independent
    return (grad[pixels, :, pixels // w, pixels % w].abs().sum(1) > 0).view(h, w)


@pytest.mark.parametrize("layer", ["conv1", "relu1", "pool1", "conv2", "pool2", "conv3"])
def test_box_is_the_bounding_box_of_the_brute_force_support(layer):
    model = positive_conv_net().eval()
    geometry = receptive_fields(model, 33)[layer]
    with torch.no_grad():
        out = model[: list(dict(model.named_children())).index(layer) + 1](torch.zeros(1, 2, 33, 33))
    rows, cols = out.shape[2:]
    for position in [(0, 0), (rows - 1, cols - 1), (rows // 2, cols // 3), (1, cols - 1)]:
        support = _spike_support(model, layer, 1, position, (2, 33, 33))
        ys, xs = torch.nonzero(support, as_tuple=True)
        tight = (int(ys.min()), int(xs.min()), int(ys.max()) + 1, int(xs.max()) + 1)
        assert receptive_field(model, layer, position, 33) == tight
        # The uniform (jump, size, start) window, clipped, contains it.
        y0, x0, y1, x1 = geometry.window(position)
        assert max(y0, 0) <= tight[0] and max(x0, 0) <= tight[1]
        assert min(y1, 33) >= tight[2] and min(x1, 33) >= tight[3]


def test_gradient_support_inside_box_for_random_weights():
    # Any weights, any input: the gradient (max-pool switches, ReLU gating and all) never leaves the box.
    model = plain_sequential().eval()
    x = torch.randn(1, 3, 37, 37, requires_grad=True)  # zeros outside the box are structural: exact
    seen = {}
    for layer in ("c1", "p1", "c2", "p2", "c3"):
        handle = model.get_submodule(layer).register_forward_hook(lambda m, i, o: seen.__setitem__("a", o))
        model(x)
        handle.remove()
        act = seen["a"]
        for position in [(0, 0), (act.shape[2] - 1, act.shape[3] - 1), (act.shape[2] // 2, 1)]:
            (grad,) = torch.autograd.grad(act[0, :, position[0], position[1]].sum(), x, retain_graph=True)
            y0, x0, y1, x1 = receptive_field(model, layer, position, 37)
            outside = torch.ones(37, 37, dtype=torch.bool)
            outside[y0:y1, x0:x1] = False
            assert grad[0][:, outside].abs().sum() == 0
            assert grad[0].abs().sum() > 0


def test_adaptive_pool_and_fully_connected_layers():
    model = VGGStyle(avgpool=2)
    # features end in 2x2 maps at 40 px (40 -> 20 -> 9 -> 4); AdaptiveAvgPool2d(2) averages 2x2
    # blocks: uniform, stride 2. A 3x3 output of 4x4 maps would not be uniform: whole image.
    rf = receptive_fields(model, 40)
    assert rf["avgpool"].jump == (2 * rf["features"].jump[0],) * 2
    assert rf["classifier.1"] == ReceptiveField((0, 0), (40, 40), (0, 0))
    assert receptive_fields(VGGStyle(avgpool=3), 40)["avgpool"].size == (40, 40)
    # avgpool (0, 0) averages features (0..1, 0..1): the union of their boxes.
    first = receptive_field(model, "features", (0, 0), 40)
    last = receptive_field(model, "features", (1, 1), 40)
    assert receptive_field(model, "avgpool", (0, 0), 40) == first[:2] + last[2:]


def test_bad_arguments():
    model = build("zfnet-tiny", num_classes=5)
    with pytest.raises(ValueError, match=r"inside conv5's 3x3 map, got \(3, 0\)"):
        receptive_field(model, "conv5", (3, 0), 64)
    with pytest.raises(ValueError, match="unknown layer 'conv6'"):
        receptive_field(model, "conv6", (0, 0), 64)
    with pytest.raises(ValueError, match="image_size must be a positive int"):
        receptive_fields(model, (64, 0))
    with pytest.raises(TypeError, match="image_size must be an int"):
        receptive_fields(model, 64.0)
