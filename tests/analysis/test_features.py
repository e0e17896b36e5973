"""Per-layer features: exactness against hooks and explicit pooling, the cache, unreadable images, other models."""

from __future__ import annotations

import math

import pytest
import torch
from helpers.trees import make_tree
from torch import nn

from zfnet.analysis import features as features_module
from zfnet.analysis.features import FEATURE_LAYERS, extract_features
from zfnet.data import ImageStream, open_dataset
from zfnet.data.transforms import Normalization
from zfnet.models import build


@pytest.fixture
def stream(tmp_path):
    root = make_tree(tmp_path / "data", classes=3, per_class=5, val_per_class=0, size=80)
    return ImageStream(open_dataset(root, "train", 73), workers=0, show_progress=False)


def _explicit_adaptive_avg(x: torch.Tensor, g: int) -> torch.Tensor:
    """Adaptive average pooling written out: cell i spans floor(i H / g) to ceil((i + 1) H / g)."""
    b, c, h, w = x.shape
    out = torch.empty(b, c, g, g, dtype=torch.float64)
    for i in range(g):
        for j in range(g):
            y0, y1 = (i * h) // g, math.ceil((i + 1) * h / g)
            x0, x1 = (j * w) // g, math.ceil((j + 1) * w / g)
            out[:, :, i, j] = x[:, :, y0:y1, x0:x1].double().mean(dim=(-2, -1))
    return out.flatten(1)


def test_features_match_hooked_outputs_pooled_explicitly(stream):
    model = build("zfnet-tiny", num_classes=3).eval()
    reference = build("zfnet-tiny", num_classes=3).eval()
    reference.load_state_dict(model.state_dict())
    mean = torch.full((3, 73, 73), 100.0)
    feats = extract_features(model, stream, Normalization(mean), input_size=64, grid=4, show_progress=False)

    # Independent path: the plain NCHW model, its outputs caught by forward hooks, pooled by hand.
    caught: dict[str, torch.Tensor] = {}
    handles = [reference.get_submodule(n).register_forward_hook(
        lambda m, i, o, n=n: caught.__setitem__(n, o.detach())) for n in FEATURE_LAYERS]
    try:
        images = torch.stack([stream.dataset[i][0] for i in range(len(stream))]).float() - mean
        with torch.no_grad():
            reference(images[:, :, 4:68, 4:68])  # the centre 64 x 64 crop of 73
    finally:
        for h in handles:
            h.remove()
    assert feats.indices.tolist() == list(range(15)) and feats.labels.tolist() == stream.dataset.targets
    for layer in FEATURE_LAYERS:
        out = caught[layer]
        expected = _explicit_adaptive_avg(out, min(4, out.shape[-1])) if out.dim() == 4 else out.double()
        got = feats.layers[layer].double()
        assert got.shape == expected.shape, layer
        # float32 through at most 7 layers, different kernels (channels-last vs NCHW): rounding ~1e-6 of scale.
        scale = expected.abs().max().item()
        assert scale > 0 and (got - expected).abs().max().item() <= 1e-4 * scale, layer
    # zfnet-tiny's conv1 maps are 30 x 30, pooled to 4 x 4; conv3-5 maps are 3 x 3, smaller than the grid.
    assert feats.layers["conv1"].shape[1] == 16 * 16 and feats.layers["conv5"].shape[1] == 32 * 9
    assert feats.layers["fc7"].shape[1] == 128


def test_max_pooling_and_small_maps(stream):
    model = build("zfnet-tiny", num_classes=3)
    mean = Normalization(torch.zeros(3, 73, 73))
    avg = extract_features(model, stream, mean, input_size=64, layers=("conv2",), grid=8, show_progress=False)
    assert avg.layers["conv2"].shape[1] == 32 * 36  # a 6 x 6 map is smaller than the 8 x 8 grid: kept as it is
    mx = extract_features(model, stream, mean, input_size=64, layers=("conv2",), grid=1, pool="max",
                          show_progress=False)
    avg1 = extract_features(model, stream, mean, input_size=64, layers=("conv2",), grid=1, show_progress=False)
    assert torch.all(mx.layers["conv2"] >= avg1.layers["conv2"] - 1e-6)
    assert (mx.layers["conv2"] > avg1.layers["conv2"] + 1e-6).any()


def test_cache_is_read_back_and_invalidated(stream, tmp_path, monkeypatch):
    model = build("zfnet-tiny", num_classes=3)
    mean = Normalization(torch.zeros(3, 73, 73))
    cache = tmp_path / "cache"
    first = extract_features(model, stream, mean, input_size=64, cache_dir=cache, show_progress=False)
    assert sorted(p.name for p in cache.iterdir()) == sorted(f"{n}.safetensors" for n in FEATURE_LAYERS)

    calls = []
    real = features_module._extract
    monkeypatch.setattr(features_module, "_extract", lambda *a, **k: calls.append(a[4]) or real(*a, **k))
    again = extract_features(model, stream, mean, input_size=64, layers=("conv3", "fc7"), cache_dir=cache,
                             show_progress=False)
    assert calls == []  # nothing recomputed: a subset of the cached layers
    assert torch.equal(again.layers["fc7"], first.layers["fc7"])
    extract_features(model, stream, mean, input_size=64, layers=("fc7",), grid=2, cache_dir=cache,
                     show_progress=False)
    assert calls == [["fc7"]]  # other pooling: another fingerprint
    with torch.no_grad():
        model.fc7[0].weight.mul_(2)
    changed = extract_features(model, stream, mean, input_size=64, layers=("conv1", "fc7"), cache_dir=cache,
                               show_progress=False)
    assert calls[-1] == ["conv1", "fc7"]  # new weights: recomputed
    assert torch.equal(changed.layers["conv1"], first.layers["conv1"])  # conv1 does not depend on fc7
    assert not torch.equal(changed.layers["fc7"], first.layers["fc7"])


def test_unreadable_images_are_left_out(tmp_path):
    root = make_tree(tmp_path / "data", classes=2, per_class=4, val_per_class=0, size=80)
    bad = root / "train" / "bar" / "001.png"
    bad.write_bytes(b"not a png")
    ds = open_dataset(root, "train", 73)
    feats = extract_features(build("zfnet-tiny", num_classes=2), ImageStream(ds, workers=0, show_progress=False),
                             Normalization(torch.zeros(3, 73, 73)), input_size=64, layers=("fc6",),
                             show_progress=False)
    bad_index = [p for p, _ in ds.samples].index(bad)
    assert bad_index not in feats.indices.tolist() and len(feats.indices) == 7
    with pytest.raises(ValueError, match=f"image {bad_index} has no features"):
        feats.take("fc6", [bad_index])


def test_feature_errors(stream):
    model = build("zfnet-tiny", num_classes=3)
    mean = Normalization(torch.zeros(3, 73, 73))
    with pytest.raises(ValueError, match="no layer 'conv9'"):
        extract_features(model, stream, mean, input_size=64, layers=("conv9",), show_progress=False)
    with pytest.raises(ValueError, match="pooling"):
        extract_features(model, stream, mean, input_size=64, pool="median", show_progress=False)
    with pytest.raises(ValueError, match="no layer 'conv1'; its layers: $"):
        extract_features(nn.Linear(3, 3), stream, mean, input_size=64, show_progress=False)
    with pytest.raises(TypeError, match="nn.Module"):
        extract_features(lambda x: x, stream, mean, input_size=64, show_progress=False)


class _Wrapped(nn.Module):
    """ZFNet inside another module, as models from elsewhere nest theirs: layers by module path."""

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net = net

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


def test_features_of_a_model_that_is_not_sequential_come_from_hooks(stream):
    model = build("zfnet-tiny", num_classes=3).eval()
    wrapped = _Wrapped(build("zfnet-tiny", num_classes=3)).eval()
    wrapped.net.load_state_dict(model.state_dict())
    norm = Normalization.per_channel((0.4, 0.5, 0.6), (0.2, 0.25, 0.3), size=73)
    direct = extract_features(model, stream, norm, input_size=64, layers=("conv2", "fc6"), show_progress=False)
    hooked = extract_features(wrapped, stream, norm, input_size=64, layers=("net.fc6", "net.conv2"),
                              show_progress=False)
    assert list(hooked.layers) == ["net.conv2", "net.fc6"]  # in the model's order
    # Same weights, same kernels: the two paths agree to float32 rounding of a whole forward pass.
    for a, b in (("conv2", "net.conv2"), ("fc6", "net.fc6")):
        assert torch.allclose(direct.layers[a], hooked.layers[b], rtol=1e-5, atol=1e-5)
    assert all(m._forward_hooks == {} for m in wrapped.modules())  # hooks removed after the pass
