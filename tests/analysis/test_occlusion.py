"""Occlusion sensitivity: a hand-computed case, exactness of the incremental engine against brute force."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from zfnet import Deconvnet
from zfnet.analysis.occlusion import occlusion, occlusion_grid, ssim
from zfnet.models import build

pytestmark = pytest.mark.usefixtures("one_thread")


def _kaiming_(model: nn.Module) -> nn.Module:
    """Weights with a spread that makes the outputs depend strongly on the input (the paper's
    N(0, 1e-2) initialisation gives nearly constant outputs in an untrained network)."""
    gen = torch.Generator().manual_seed(0)
    for m in model.modules():
        if isinstance(m, (nn.Conv2d, nn.Linear)):
            fan_in = m.weight[0].numel()
            with torch.no_grad():
                m.weight.copy_(torch.randn(m.weight.shape, generator=gen) * (2.0 / fan_in) ** 0.5)
                m.bias.copy_(torch.randn(m.bias.shape, generator=gen) * 0.1)
    return model.eval()


def _vgg_like() -> nn.Module:
    """A torchvision-style network: features / avgpool / classifier, BatchNorm, padded and ceil-mode pools."""

    class Net(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.features = nn.Sequential(
                nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(),
                nn.MaxPool2d(3, 2, padding=1),
                nn.Conv2d(8, 12, 3, padding=2, dilation=2), nn.ReLU(),
                nn.MaxPool2d(2, 2, ceil_mode=True),
                nn.Conv2d(12, 16, 3, stride=2), nn.ReLU(),
            )
            self.avgpool = nn.AdaptiveAvgPool2d((3, 3))
            self.classifier = nn.Sequential(nn.Dropout(), nn.Linear(16 * 9, 32), nn.ReLU(), nn.Linear(32, 6))

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.classifier(torch.flatten(self.avgpool(self.features(x)), 1))

    net = Net()
    bn = net.features[1]
    with torch.no_grad():
        bn.running_mean.uniform_(-0.2, 0.2)
        bn.running_var.uniform_(0.5, 2.0)
        bn.weight.uniform_(0.5, 1.5)
    return _kaiming_(net)


def _small_fc() -> nn.Module:
    """Few layers before the fully connected ones: the changed part of fc1's input stays small, so
    the incremental update of the fully connected layer is used."""
    return _kaiming_(nn.Sequential(nn.Conv2d(3, 6, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(),
                                   nn.Linear(6 * 16 * 16, 20), nn.ReLU(), nn.Linear(20, 5)))


MODELS = {
    "zfnet-tiny": (lambda: _kaiming_(build("zfnet-tiny", num_classes=7)), 64, "conv5"),
    "alexnet-tiny": (lambda: _kaiming_(build("alexnet-tiny", num_classes=7)), 64, "conv2"),
    "vgg-like": (_vgg_like, 40, "features.7"),
    "small-fc": (_small_fc, 32, "0"),
}


def test_grid_counts_positions_that_keep_the_square_inside() -> None:
    assert occlusion_grid(224, 224, 32, 8) == (25, 25)
    assert occlusion_grid(10, 12, 4, 3) == (3, 3)
    with pytest.raises(ValueError, match="larger than the image"):
        occlusion_grid(10, 10, 11, 1)


def test_known_answer_on_a_hand_set_network() -> None:
    # logit 0 = 0.5 * (sum of the object's pixels), logit 1 = 0. The image is 1 on a 2x2 object at
    # rows/cols 2-3 of an 8x8 image, 0 elsewhere; a 3x3 occluder of 0 removes the object pixels it covers.
    net = nn.Sequential(nn.Conv2d(1, 1, 1), nn.ReLU(), nn.Flatten(), nn.Linear(64, 2))
    with torch.no_grad():
        net[0].weight.fill_(1.0)
        net[0].bias.zero_()
        net[3].weight.zero_()
        net[3].weight[0] = 0.5
        net[3].bias.zero_()
    image = torch.zeros(1, 8, 8)
    image[0, 2:4, 2:4] = 1.0
    result = occlusion(net, image, target=0, window=3, stride=1, layer="0")
    assert result.grid == (6, 6)
    covered = torch.zeros(6, 6)
    for i in range(6):
        for j in range(6):
            covered[i, j] = image[0, i:i + 3, j:j + 3].sum()
    remaining = 4 - covered
    expected = torch.sigmoid(0.5 * remaining)  # softmax of (0.5 * remaining, 0), class 0
    torch.testing.assert_close(result.prob_true, expected)
    torch.testing.assert_close(result.activity, remaining)  # layer "0" sums the unoccluded image
    assert result.clean_activity == 4.0
    assert result.clean_prob == pytest.approx(float(torch.sigmoid(torch.tensor(2.0))))
    assert torch.equal(result.top_class, torch.zeros(6, 6, dtype=torch.long))  # logit 0 >= 0 everywhere
    # The occluder that hides the whole object: top-left (1..2, 1..2); its centre is inside the object.
    assert result.prob_true[1:3, 1:3].eq(0.5).all()
    assert result.most_sensitive() == (2, 2)


@pytest.mark.parametrize("name", sorted(MODELS))
@pytest.mark.parametrize("window,stride", [(12, 10), (15, 7)])
def test_exact_mode_equals_one_forward_pass_per_position(name: str, window: int, stride: int) -> None:
    make, size, layer = MODELS[name]
    net = make()
    image = torch.randn(3, size, size, generator=torch.Generator().manual_seed(1))
    exact = occlusion(net, image, target=1, window=window, stride=stride, layer=layer, batch_size=5)
    brute = occlusion(net, image, target=1, window=window, stride=stride, layer=layer, mode="brute")
    # The tolerance on probabilities; the two ways sum the same products in another order,
    # so they agree to float32 rounding (~1e-6), far inside it.
    assert (exact.prob_true - brute.prob_true).abs().max() < 1e-4
    assert exact.prob_true.std() > 1e-3, "the test network's output must depend on the occluder"
    assert torch.equal(exact.top_class, brute.top_class)
    torch.testing.assert_close(exact.activity, brute.activity, rtol=1e-4, atol=1e-4 * brute.activity.abs().max())
    assert exact.channel == brute.channel


def test_brute_force_is_an_independent_full_forward() -> None:
    # The reference itself: model(occluded image) per position, written out here.
    net = MODELS["zfnet-tiny"][0]()
    image = torch.randn(3, 64, 64, generator=torch.Generator().manual_seed(2))
    result = occlusion(net, image, target=3, window=16, stride=12)
    with torch.no_grad():
        for i in range(result.grid[0]):
            for j in range(result.grid[1]):
                x = image.clone()
                x[:, i * 12:i * 12 + 16, j * 12:j * 12 + 16] = 0.0
                p = torch.softmax(net(x[None]), 1)[0]
                assert abs(float(p[3]) - float(result.prob_true[i, j])) < 1e-4
                assert int(p.argmax()) == int(result.top_class[i, j])


def test_channel_and_projection_panels() -> None:
    net = MODELS["zfnet-tiny"][0]()
    image = torch.randn(3, 64, 64, generator=torch.Generator().manual_seed(3))
    result = occlusion(net, image, target=0, window=16, stride=16, layer="conv5")
    deconv = Deconvnet(net)
    with torch.no_grad():
        conv5 = net.conv5(net.conv4(net.conv3(net.norm2(net.pool2(net.conv2(net.norm1(net.pool1(net.conv1(
            image[None])))))))))[0]
    assert result.channel == int(conv5.flatten(1).amax(1).argmax())
    assert result.clean_activity == pytest.approx(float(conv5[result.channel].sum()), rel=1e-5)
    torch.testing.assert_close(result.projection, deconv.project(image[None], "conv5", result.channel)[0])
    forced = occlusion(net, image, target=0, window=16, stride=16, channel=2)
    assert forced.channel == 2


def test_fully_connected_layer_is_updated_incrementally_and_exactly() -> None:
    net = MODELS["small-fc"][0]()
    image = torch.randn(3, 32, 32, generator=torch.Generator().manual_seed(4))
    exact = occlusion(net, image, target=2, window=4, stride=4, layer="0")
    assert exact.stats["incremental_linear"] == "4"  # conv, relu, pool, flatten, then the Linear
    assert exact.stats["full_from"] is None
    brute = occlusion(net, image, target=2, window=4, stride=4, layer="0", mode="brute")
    assert (exact.prob_true - brute.prob_true).abs().max() < 1e-4
    assert torch.equal(exact.top_class, brute.top_class)


def test_approximate_mode_reports_its_error() -> None:
    net = MODELS["zfnet-tiny"][0]()
    image = torch.randn(3, 64, 64, generator=torch.Generator().manual_seed(5))
    exact = occlusion(net, image, target=1, window=16, stride=8)
    full_cap = occlusion(net, image, target=1, window=16, stride=8, mode="approximate", cap=1.0)
    assert full_cap.ssim == pytest.approx(1.0)  # a cap of the whole map is no approximation
    torch.testing.assert_close(full_cap.prob_true, exact.prob_true)
    small = occlusion(net, image, target=1, window=16, stride=8, mode="approximate", cap=0.2)
    assert small.ssim is not None and small.ssim < 1.0
    assert small.ssim == pytest.approx(ssim(small.prob_true, exact.prob_true))
    assert exact.ssim is None


class _Counter:
    def __init__(self) -> None:
        self.calls: list[int] = []

    def update(self, n: int) -> None:
        self.calls.append(n)


def _bilinear(grid: torch.Tensor, i: int, j: int) -> float:
    """``grid`` at (i, j) interpolated from the coarse lines (even indices and the last), by hand."""
    def around(k: int, n: int) -> tuple[int, int, float]:
        lines = sorted(set(range(0, n, 2)) | {n - 1})
        lo, hi = max(x for x in lines if x <= k), min(x for x in lines if x >= k)
        return lo, hi, 0.0 if hi == lo else (k - lo) / (hi - lo)

    (r0, r1, u), (c0, c1, v) = around(i, grid.shape[0]), around(j, grid.shape[1])
    return float((1 - u) * (1 - v) * grid[r0, c0] + (1 - u) * v * grid[r0, c1] + u * (1 - v) * grid[r1, c0]
                 + u * v * grid[r1, c1])


def test_coarse_mode_computes_coarse_lines_and_drills_down_where_neighbours_disagree() -> None:
    net = MODELS["zfnet-tiny"][0]()
    image = torch.randn(3, 64, 64, generator=torch.Generator().manual_seed(7))
    exact = occlusion(net, image, target=1, window=12, stride=4)  # a 14 x 14 grid
    gh, gw = exact.prob_true.shape
    assert (gh, gw) == (14, 14)
    # tol 0: every position whose corners differ at all is computed, which is all of them here.
    full = occlusion(net, image, target=1, window=12, stride=4, mode="coarse", tol=0.0)
    torch.testing.assert_close(full.prob_true, exact.prob_true, atol=1e-5, rtol=0)
    assert full.ssim == pytest.approx(1.0)
    counter = _Counter()
    tol = float(exact.prob_true.max() - exact.prob_true.min()) / 4
    coarse = occlusion(net, image, target=1, window=12, stride=4, mode="coarse", tol=tol, progress=counter)
    assert sum(counter.calls) == gh * gw  # interpolated positions count as done for the progress bar
    lines = sorted(set(range(0, gh, 2)) | {gh - 1})
    interpolated = drilled = 0
    for i in range(gh):
        for j in range(gw):
            if i in lines and j in lines:  # computed exactly
                assert abs(coarse.prob_true[i, j] - exact.prob_true[i, j]) < 1e-5
            elif abs(coarse.prob_true[i, j] - exact.prob_true[i, j]) < 1e-6 and \
                    abs(coarse.activity[i, j] - exact.activity[i, j]) <= 1e-4 * abs(exact.activity[i, j]):
                drilled += 1
            else:  # interpolated: the activity is the bilinear mix of the exact corners'
                interpolated += 1
                assert coarse.activity[i, j].item() == pytest.approx(_bilinear(exact.activity, i, j), rel=1e-4)
    assert interpolated > 0 and drilled > 0
    assert 0 < coarse.ssim < 1 and coarse.ssim == pytest.approx(ssim(coarse.prob_true, exact.prob_true))
    with pytest.raises(ValueError, match="tol must be at least 0"):
        occlusion(net, image, target=1, window=12, stride=4, mode="coarse", tol=-1.0)


def test_ssim_properties() -> None:
    gen = torch.Generator().manual_seed(6)
    a = torch.rand(20, 20, generator=gen)
    assert ssim(a, a) == 1.0
    noisy = a + 0.3 * torch.randn(20, 20, generator=gen)
    assert ssim(noisy, a) < ssim(a + 0.05 * torch.randn(20, 20, generator=gen), a) < 1.0
    assert ssim(a, a) == pytest.approx(ssim(2 * a, 2 * a))
    with pytest.raises(ValueError, match="2-D maps of the same shape"):
        ssim(a, a[:5])


def test_model_flags_are_restored_and_nothing_is_left_on_it() -> None:
    net = MODELS["zfnet-tiny"][0]().train()
    image = torch.randn(3, 64, 64)
    occlusion(net, image, target=0, window=16, stride=16)
    assert all(m.training for m in net.modules())
    assert all(not m._forward_hooks and not m._forward_pre_hooks for m in net.modules())


@pytest.mark.parametrize("kwargs,match", [
    ({"window": 80}, "larger than the image"),
    ({"target": 9}, "target 9 is out of range"),
    ({"mode": "fast"}, "unknown mode 'fast'"),
    ({"layer": "conv9"}, "unknown layer 'conv9'"),
    ({"cap": 0.0}, "cap must be in"),
    ({"stride": 0}, "at least 1"),
    ({"channel": 999}, "channel 999 is out of range"),
])
def test_bad_arguments_are_named(kwargs: dict, match: str) -> None:
    net = build("zfnet-tiny", num_classes=7)
    args = {"target": 0, "window": 16, "stride": 8, **kwargs}
    with pytest.raises(ValueError, match=match):
        occlusion(net, torch.zeros(3, 64, 64), **args)


def test_image_must_be_one_chw_tensor() -> None:
    with pytest.raises(ValueError, match=r"one \(C, H, W\) tensor"):
        occlusion(build("zfnet-tiny"), torch.zeros(1, 3, 64, 64), target=0, window=8, stride=8)
