"""Top activations: against brute force, padding, ties, hooks; their projections and patches."""

from __future__ import annotations

import pytest
import torch
from helpers.nets import VGGStyle
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from zfnet import Deconvnet, project_top_activations, receptive_fields, top_activations
from zfnet.graph import trace
from zfnet.models import build
from zfnet.visualize.topk import MERGE_IMAGES, TopK, covering_pool


def _activations(model: nn.Module, images: torch.Tensor, layer: str) -> torch.Tensor:
    seen = {}
    handle = model.get_submodule(layer).register_forward_hook(lambda m, i, o: seen.__setitem__("a", o.clone()))
    try:
        with torch.no_grad():
            model.eval()(images)
    finally:
        handle.remove()
    return seen["a"]


def brute_force_topk(model: nn.Module, images: torch.Tensor, layer: str, k: int, batch_size: int) -> TopK:
    """All activations kept; per map, images ordered by their maximum (earlier first on ties).

    Computed over the same batches as the pass under test: a convolution's rounding can depend on
    the batch, and near-equal maxima of different images must compare the same way.
    """
    act = torch.cat([_activations(model, batch, layer) for batch in images.split(batch_size)])
    if act.dim() == 2:
        best, where = act, torch.zeros(*act.shape, 2, dtype=torch.long)
    else:
        n, c, h, w = act.shape
        best, arg = act.reshape(n, c, -1).max(2)
        where = torch.stack((arg // w, arg % w), -1)
    order = torch.sort(best.t(), dim=1, descending=True, stable=True).indices[:, :k]  # (C, k)
    values = best.t().gather(1, order)
    position = where.transpose(0, 1).gather(1, order[..., None].expand(-1, -1, 2))
    return TopK(layer, values, order, position)


def _model_and_images(n: int = 22):
    model = build("zfnet-tiny", num_classes=5)
    return model, torch.randn(n, 3, 64, 64)


def test_matches_brute_force_for_conv_and_fc_layers():
    model, images = _model_and_images()
    layers = ["conv1", "conv3", "pool5", "fc6", "fc8"]
    got = top_activations(model, images.split(5), layers, k=4)  # uneven batches: 5, 5, 5, 5, 2
    assert list(got) == layers
    for layer in layers:
        want = brute_force_topk(model, images, layer, 4, batch_size=5)
        assert torch.equal(got[layer].values, want.values)
        assert torch.equal(got[layer].image_index, want.image_index)
        assert torch.equal(got[layer].position, want.position)
        assert got[layer].layer == layer
    assert torch.equal(got["fc6"].position, torch.zeros(128, 4, 2, dtype=torch.long))


def test_accepts_a_dataloader_of_image_label_pairs_and_dotted_names():
    model = VGGStyle()
    images = torch.randn(10, 3, 40, 40)
    loader = DataLoader(TensorDataset(images, torch.zeros(10, dtype=torch.long)), batch_size=4)
    got = top_activations(model, loader, ["features.3", "classifier.1"], k=3)
    want = brute_force_topk(model, images, "features.3", 3, batch_size=4)
    assert torch.equal(got["features.3"].image_index, want.image_index)
    assert got["classifier.1"].values.shape == (24, 3)


def test_fewer_images_than_k_are_padded():
    model, images = _model_and_images(3)
    top = top_activations(model, [images], "conv2", k=5)["conv2"]
    assert top.values.shape == (32, 5)
    assert torch.isinf(top.values[:, 3:]).all() and (top.values[:, 3:] < 0).all()
    assert (top.image_index[:, 3:] == -1).all() and (top.position[:, 3:] == -1).all()
    assert torch.equal(top.image_index[:, :3].sort(1).values, torch.arange(3).expand(32, 3))


def test_ties_keep_the_earlier_image_and_values_descend():
    # A max-pool copies values exactly, so equal images give exactly equal maxima in any batch
    # (a convolution's rounding may depend on the batch it is in).
    model = nn.Sequential(nn.MaxPool2d(2))
    images = torch.randn(12, 3, 8, 8)
    images[4:8] = images[0]  # images 0, 4, 5, 6, 7 are equal
    top = top_activations(model, images.split(3), "0", k=12)["0"]
    assert (top.values[:, :-1] >= top.values[:, 1:]).all()
    for c in range(top.values.shape[0]):
        twins = [int(i) for i in top.image_index[c] if int(i) in (0, 4, 5, 6, 7)]
        assert twins == [0, 4, 5, 6, 7]


class _Integers(nn.Module):
    """Integer weights on integer images: every value exact in float32, so maxima tie often and
    compare the same in any batch. conv -> relu -> pool (covering, padded, ceil mode) -> conv -> relu
    -> pool (2 x 2 stride 3: gaps) -> fc."""

    def __init__(self) -> None:
        super().__init__()
        g = torch.Generator().manual_seed(0)
        self.conv1 = nn.Conv2d(3, 6, 3, padding=1, bias=False)
        self.relu1 = nn.ReLU(inplace=True)
        self.pool1 = nn.MaxPool2d(3, 2, padding=1, ceil_mode=True)
        self.conv2 = nn.Conv2d(6, 5, 3, bias=False)
        self.pool2 = nn.MaxPool2d(2, 3)
        self.fc = nn.Linear(5 * 2 * 2, 7, bias=False)
        for m in (self.conv1, self.conv2, self.fc):
            m.weight.data = torch.randint(-1, 2, m.weight.shape, generator=g).float()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.pool1(self.relu1(self.conv1(x)))
        x = torch.relu(self.conv2(x))
        return self.fc(torch.flatten(self.pool2(x), 1))


def test_covering_pool_is_found_only_where_it_reads_every_position():
    graph = trace(_Integers())
    conv1, pool1, conv2 = (graph.index_of(n) for n in ("relu1", "pool1", "conv2"))
    assert covering_pool(graph, conv1, graph.output, (3, 13, 13)) == pool1  # padding and ceil mode cover
    assert covering_pool(graph, conv1, conv1, (3, 13, 13)) is None  # the pooling is not computed
    assert covering_pool(graph, conv2, graph.output, (3, 13, 13)) is None  # conv2's output goes to relu first
    relu2 = next(i for i in graph.nodes[conv2].consumers)
    assert covering_pool(graph, relu2, graph.output, (3, 13, 13)) is None  # stride 3 over 2 x 2 windows: gaps


def test_many_batches_with_ties_match_brute_force_positions_from_the_pooling():
    # 60 batches of 4 integer images: maxima tie within and across batches (ReLU zeros, repeated
    # integers), the top-k is merged many times, and conv1's positions come from pool1's switches.
    model = _Integers()
    g = torch.Generator().manual_seed(1)
    images = torch.randint(0, 3, (240, 3, 13, 13), generator=g).float()
    # Every third image repeats a brighter 4 x 4 patch: its maps' maxima recur at several positions,
    # in several pooling windows, and the first (row-major) one must be found.
    patches = torch.randint(0, 5, (80, 3, 4, 4), generator=g).float()
    images[::3] = patches.repeat(1, 1, 4, 4)[:, :, :13, :13]
    images[100:110] = images[6]  # equal images: equal maxima at equal positions
    got = top_activations(model, images.split(4), ["relu1", "pool1", "conv2", "fc"], k=5)
    for layer in ("relu1", "pool1", "conv2", "fc"):
        want = brute_force_topk(model, images, layer, 5, batch_size=4)
        assert torch.equal(got[layer].values, want.values), layer
        assert torch.equal(got[layer].image_index, want.image_index), layer
        assert torch.equal(got[layer].position, want.position), layer
    act = torch.relu(model.conv1(images)).flatten(2)
    top = got["relu1"]
    maxima_at = act[top.image_index, torch.arange(6)[:, None]] == top.values[..., None]  # (maps, k, positions)
    assert (maxima_at.sum(-1) > 1).sum() >= 6  # entries whose maximum recurs: the first had to be chosen
    assert bool((top.values[:, :-1] == top.values[:, 1:]).any())  # equal values: the earlier image first


def test_a_fully_connected_layer_is_merged_in_windows_and_matches_brute_force():
    model, images = _model_and_images(MERGE_IMAGES // 8 + 40)
    got = top_activations(model, images.split(16), ["fc6", "fc8"], k=9)
    for layer in ("fc6", "fc8"):
        want = brute_force_topk(model, images, layer, 9, batch_size=16)
        assert torch.equal(got[layer].values, want.values) and torch.equal(got[layer].image_index, want.image_index)


def _all_hooks_empty(model: nn.Module) -> bool:
    return all(not m._forward_hooks and not m._forward_pre_hooks for m in model.modules())


def test_hooks_removed_and_mode_restored_after_success_and_error():
    model, images = _model_and_images(6)
    model.train()
    top_activations(model, images.split(3), ["conv1", "fc7"])
    assert _all_hooks_empty(model) and model.training and model.drop6.training

    def bad_data():
        yield images[:3]
        yield "not a batch"

    with pytest.raises(TypeError, match="data must yield image tensors"):
        top_activations(model, bad_data(), ["conv1", "fc7"])
    assert _all_hooks_empty(model) and model.training


def test_runs_in_eval_mode():
    # Dropout would change fc7's values between runs in training mode.
    model, images = _model_and_images(6)
    model.train()
    first = top_activations(model, [images], "fc7", k=2)["fc7"].values
    second = top_activations(model, [images], "fc7", k=2)["fc7"].values
    assert torch.equal(first, second)


def test_bad_arguments():
    model, images = _model_and_images(2)
    with pytest.raises(ValueError, match=r"unknown layer 'conv7'; valid names: conv1.conv, conv1.relu, conv1, "):
        top_activations(model, [images], ["conv1", "conv7"])
    with pytest.raises(ValueError, match="k must be a positive int, got 0"):
        top_activations(model, [images], "conv1", k=0)
    with pytest.raises(ValueError, match="data yielded no images"):
        top_activations(model, [], "conv1")


def test_projections_match_the_deconvnet_and_patches_the_image():
    model, images = _model_and_images(10)
    top = top_activations(model, images.split(4), ["conv2", "fc6"], k=3)
    channels = [0, 7, 31]
    out = project_top_activations(model, top["conv2"], images, channels=channels)
    size = receptive_fields(model, 64)["conv2"].size
    assert out.projections.shape == (3, 3, 3, 64, 64) and out.patches.shape == (3, 3, 3, *size)
    deconv = Deconvnet(model)
    for i, c in enumerate(channels):
        for j in range(3):
            n = int(top["conv2"].image_index[c, j])
            r, col = top["conv2"].position[c, j].tolist()
            want = deconv.project(images[n:n + 1], "conv2", c, positions=torch.tensor([[r, col]]))
            torch.testing.assert_close(out.projections[i, j:j + 1], want, rtol=1e-4, atol=1e-9)
            # The patch is the field window (jump 8, start -1 at conv2), zero outside the image.
            y0, x0 = -1 + 8 * r, -1 + 8 * col
            padded = torch.nn.functional.pad(images[n], (1, 64, 1, 64))
            torch.testing.assert_close(out.patches[i, j], padded[:, y0 + 1:y0 + 1 + size[0], x0 + 1:x0 + 1 + size[1]])
            assert out.boxes[i, j].tolist() == [max(y0, 0), max(x0, 0), min(y0 + size[0], 64), min(x0 + size[1], 64)]
    # A callable gives the same; fully connected layers project too.
    same = project_top_activations(model, top["conv2"], lambda i: images[i], channels=channels)
    assert torch.equal(same.projections, out.projections)
    fc = project_top_activations(model, top["fc6"], images, channels=[5])
    want = deconv.project(images[top["fc6"].image_index[5]], "fc6", 5)
    torch.testing.assert_close(fc.projections[0], want, rtol=1e-4, atol=1e-9)
    assert fc.patches.shape == (1, 3, 3, 64, 64) and fc.boxes[0, 0].tolist() == [0, 0, 64, 64]


def test_projections_of_padding_entries_are_zero():
    model, images = _model_and_images(2)
    top = top_activations(model, [images], "conv1", k=4)["conv1"]
    out = project_top_activations(model, top, images, channels=[3], keep="map")
    assert out.projections[0, :2].abs().sum() > 0
    assert out.projections[0, 2:].abs().sum() == 0 and out.patches[0, 2:].abs().sum() == 0
    assert (out.boxes[0, 2:] == -1).all()
    with pytest.raises(ValueError, match=r"channels must lie in \[0, 16\)"):
        project_top_activations(model, top, images, channels=[16])
    with pytest.raises(ValueError, match="keep must be one of max, map"):
        project_top_activations(model, top, images, keep="all")
