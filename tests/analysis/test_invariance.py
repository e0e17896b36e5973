"""Invariance: transforms against brute-force references, the identity gives distance 0, known distances."""

from __future__ import annotations

import math
from collections import OrderedDict

import numpy as np
import pytest
import torch
from helpers.nets import VGGStyle
from torch import nn

from zfnet.analysis.invariance import (
    TRANSFORMS,
    default_steps,
    feature_distance,
    invariance,
    rotate_images,
    scale_images,
    transform_images,
    translate_vertical,
)
from zfnet.data.transforms import center_crop
from zfnet.models import build

pytestmark = pytest.mark.usefixtures("one_thread")



def _bilinear_reference(image: np.ndarray, matrix: np.ndarray) -> np.ndarray:
    """``out(p) = in(c + matrix (p − c))`` pixel by pixel: bilinear, zeros outside. image (C, H, W)."""
    c_in, h, w = image.shape
    cy, cx = (h - 1) / 2, (w - 1) / 2
    out = np.zeros_like(image, dtype=np.float64)
    for y in range(h):
        for x in range(w):
            sx, sy = matrix @ np.array([x - cx, y - cy]) + np.array([cx, cy])
            x0, y0 = math.floor(sx), math.floor(sy)
            for yy, wy in ((y0, 1 - (sy - y0)), (y0 + 1, sy - y0)):
                for xx, wx in ((x0, 1 - (sx - x0)), (x0 + 1, sx - x0)):
                    if 0 <= yy < h and 0 <= xx < w:
                        out[:, y, x] += wy * wx * image[:, yy, xx]
    return out


# ---------------------------------------------------------------------------------------- transforms

def test_translate_vertical_matches_slicing():
    x = torch.randn(2, 3, 9, 7)
    for dy in (-9, -4, -1, 0, 2, 8, 12):
        got = translate_vertical(x, dy)
        want = torch.zeros_like(x)
        for y in range(9):
            if 0 <= y - dy < 9:
                want[:, :, y] = x[:, :, y - dy]
        assert torch.equal(got, want), dy
    assert torch.equal(translate_vertical(x, 2.4), translate_vertical(x, 2))


def test_scale_matches_a_pixel_by_pixel_bilinear_reference():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(1, 2, 9, 11, generator=g)
    for factor in (1.3, 1.8, 0.7):
        got = scale_images(x, factor)[0].numpy()
        want = _bilinear_reference(x[0].double().numpy(), np.eye(2) / factor)
        np.testing.assert_allclose(got, want, atol=1e-5)  # float32 grid coordinates against float64 loops


def test_rotation_matches_rot90_and_a_bilinear_reference():
    g = torch.Generator().manual_seed(1)
    x = torch.randn(2, 3, 10, 10, generator=g)
    # Counter-clockwise as displayed, like torch.rot90 from the row axis towards the column axis.
    for k in (1, 2, 3):
        torch.testing.assert_close(rotate_images(x, 90 * k), torch.rot90(x, k, dims=(-2, -1)), atol=1e-5, rtol=0)
    t = math.radians(37.0)
    matrix = np.array([[math.cos(t), -math.sin(t)], [math.sin(t), math.cos(t)]])
    want = _bilinear_reference(x[0].double().numpy(), matrix)
    np.testing.assert_allclose(rotate_images(x, 37.0)[0].numpy(), want, atol=1e-5)
    torch.testing.assert_close(rotate_images(x, -90), rotate_images(x, 270))


@pytest.mark.parametrize("transform,amounts", [("translation", [0, 0.2]), ("scale", [1, 1.0]),
                                               ("rotation", [0, 360, -720])])
def test_identity_transforms_return_the_image_exactly(transform, amounts):
    x = torch.randn(2, 3, 12, 12)
    for amount in amounts:
        assert torch.equal(transform_images(x, transform, amount), x)


def test_transform_errors():
    x = torch.randn(1, 3, 8, 8)
    with pytest.raises(ValueError, match="unknown transform 'shear'; valid: translation, scale, rotation"):
        transform_images(x, "shear", 1)
    with pytest.raises(ValueError, match="factor must be a positive number, got 0.0"):
        scale_images(x, 0)
    with pytest.raises(ValueError, match="degrees must be finite"):
        rotate_images(x, float("nan"))
    with pytest.raises(ValueError, match="non-empty"):
        translate_vertical(torch.randn(3, 8, 8), 1)


def test_default_steps_cover_the_papers_ranges():
    shifts = default_steps("translation", 112)
    assert shifts[0] == -28 and shifts[-1] == 28 and 0 in shifts and shifts == sorted(shifts)
    assert shifts == [-s for s in reversed(shifts)]
    assert default_steps("scale", 112) == [1.0, 1.1, 1.2, 1.3, 1.4, 1.5, 1.6, 1.7, 1.8]
    angles = default_steps("rotation", 224)
    assert angles[0] == 0 and angles[-1] == 360 and len(angles) == 37
    with pytest.raises(ValueError, match="unknown transform"):
        default_steps("shear", 112)


# ------------------------------------------------------------------------------------------ distance

def test_feature_distance_known_answers():
    ref = torch.tensor([[3.0, 4.0], [1.0, 0.0], [0.0, 0.0], [0.0, 0.0]])
    feat = torch.tensor([[3.0, 4.0], [3.0, 0.0], [0.0, 0.0], [1.0, 0.0]])
    got = feature_distance(ref, feat)
    assert got[:3].tolist() == [0.0, 2.0, 0.0] and math.isnan(got[3])
    # Normalised: scaling both vectors leaves it unchanged.
    a, b = torch.randn(3, 20), torch.randn(3, 20)
    torch.testing.assert_close(feature_distance(a, b), feature_distance(7 * a, 7 * b))
    with pytest.raises(ValueError, match="one shape"):
        feature_distance(a, b[:, :5])


# ----------------------------------------------------------------------------------------- the curves

def _pixel_net(size: int = 16, classes: int = 3) -> nn.Sequential:
    """Its ``pixels`` layer is the input itself: the distance there can be written out."""
    net = nn.Sequential(OrderedDict(pixels=nn.Identity(), flat=nn.Flatten(), fc=nn.Linear(3 * size * size, classes)))
    return net


def test_invariance_known_distances_and_probabilities():
    g = torch.Generator().manual_seed(2)
    x = torch.randn(3, 3, 20, 20, generator=g)
    labels = torch.tensor([2, 0, 1])
    net = _pixel_net()
    steps = [-4, 0, 3]
    curves = invariance(net, x, labels, "translation", steps, layers=["pixels"], crop=16)
    ref = center_crop(x, 16).flatten(1)
    for t, dy in enumerate(steps):
        moved = center_crop(translate_vertical(x, dy), 16)
        want = (ref - moved.flatten(1)).norm(dim=1) / ref.norm(dim=1)
        torch.testing.assert_close(curves.distances["pixels"][:, t], want.double(), rtol=1e-6, atol=1e-7)
        with torch.no_grad():
            probs = torch.softmax(net(moved).double(), dim=1)
        torch.testing.assert_close(curves.prob_true[:, t], probs[torch.arange(3), labels], rtol=1e-6, atol=1e-7)
        assert curves.predicted[:, t].tolist() == probs.argmax(1).tolist()
    assert curves.steps.tolist() == [-4.0, 0.0, 3.0] and curves.transform == "translation"
    assert bool((curves.distances["pixels"][:, [0, 2]] > 0).all())


@pytest.mark.parametrize("transform", TRANSFORMS)
def test_identity_step_gives_distance_zero_on_zfnet_and_elsewhere(transform):
    identity = {"translation": 0.0, "scale": 1.0, "rotation": 0.0}[transform]
    moved = {"translation": 6.0, "scale": 1.3, "rotation": 30.0}[transform]
    x = torch.randn(2, 3, 73, 73)
    labels = torch.tensor([1, 3])
    for net, layers in ((build("zfnet-tiny", num_classes=4), ("conv1", "fc7")),
                        (VGGStyle(num_classes=4), ("features.0", "classifier.4"))):
        for m in net.modules():  # PyTorch's default init: no layer is all zero
            if isinstance(m, (nn.Conv2d, nn.Linear)):
                m.reset_parameters()
        curves = invariance(net, x, labels, transform, [identity, moved], layers=layers, crop=64)
        with torch.no_grad():
            untouched = torch.softmax(net.eval()(center_crop(x, 64)).double(), dim=1)[torch.arange(2), labels]
        for layer in layers:
            assert curves.distances[layer][:, 0].tolist() == [0.0, 0.0]
            assert bool((curves.distances[layer][:, 1] > 0).all())
        torch.testing.assert_close(curves.prob_true[:, 0], untouched, rtol=1e-5, atol=1e-6)


def test_invariance_rejects_bad_input():
    net, x = _pixel_net(), torch.randn(2, 3, 16, 16)
    with pytest.raises(ValueError, match="unknown transform"):
        invariance(net, x, torch.tensor([0, 1]), "shear", [0], layers="pixels")
    with pytest.raises(ValueError, match="got 1 labels for 2 images"):
        invariance(net, x, torch.tensor([0]), "scale", [1.0], layers="pixels")
    with pytest.raises(ValueError, match="steps is empty"):
        invariance(net, x, torch.tensor([0, 1]), "scale", [], layers="pixels")
    with pytest.raises(ValueError, match="crop must be an int from 1 to 16, got 20"):
        invariance(net, x, torch.tensor([0, 1]), "scale", [1.0], layers="pixels", crop=20)
    with pytest.raises(ValueError, match="every label below the number of classes"):
        invariance(net, x, torch.tensor([0, 5]), "scale", [1.0], layers="pixels")
