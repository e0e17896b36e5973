"""The layer-wise probes' algorithm (Table 7): known answers on planted features, the depth trend."""

from __future__ import annotations

import pytest
import torch

from zfnet.analysis.features import FeatureSet
from zfnet.analysis.probes import depth_trend, probe_layers
from zfnet.data.caltech import sample_splits


def test_depth_trend():
    assert depth_trend([0.1, 0.2, 0.3]) == pytest.approx(1.0)
    assert depth_trend([0.3, 0.2, 0.1]) == pytest.approx(-1.0)
    assert depth_trend([0.2, 0.4, 0.3, 0.6]) == pytest.approx(0.8)  # 1 - 6 * 2 / (4 * 15)
    assert depth_trend([0.5, 0.5, 0.5]) == 0.0


def test_probe_layers_on_planted_features():
    # Layer "a" marks class c by +6 on coordinate c (6 std of the noise); layer "b" is noise alone.
    # Known answers: both classifiers near 1 on "a", near chance on "b".
    gen = torch.Generator().manual_seed(0)
    labels = torch.arange(4).repeat_interleave(30)
    signal = torch.randn(120, 8, generator=gen)
    signal[torch.arange(120), labels] += 6.0
    noise = torch.randn(120, 8, generator=gen)
    fs = FeatureSet({"a": signal, "b": noise}, torch.arange(120), labels, grid=4, pool="avg")
    splits = sample_splits(labels.numpy(), 10, 3, seed=0)
    acc = probe_layers(fs, splits, show_progress=False)
    for kind in ("svm", "softmax"):
        assert min(acc[kind]["a"]) >= 0.95
        # 80 test images of 4 classes: chance 0.25, std of an accuracy ~0.05; 0.45 is 4 std above.
        assert max(acc[kind]["b"]) <= 0.45
    with pytest.raises(ValueError, match="unknown probe classifier"):
        probe_layers(fs, splits, classifiers=("knn",), show_progress=False)


class _Fits(dict):
    """Finished fits kept in memory (the experiment keeps them on disk, zfnet.experiments.ledger)."""

    def put(self, name, value):
        self[name] = value


def test_finished_fits_are_read_not_refitted(monkeypatch):
    labels = torch.arange(2).repeat_interleave(10)
    fs = FeatureSet({"a": torch.randn(20, 3)}, torch.arange(20), labels, grid=4, pool="avg")
    splits = sample_splits(labels.numpy(), 5, 2, seed=0)
    fits = _Fits()
    first = probe_layers(fs, splits, classifiers=("softmax",), ledger=fits, show_progress=False)
    assert sorted(fits) == ["softmax a 0", "softmax a 1"]
    monkeypatch.setattr("zfnet.analysis.probes.fit_and_score", lambda *a, **k: pytest.fail("refitted"))
    assert probe_layers(fs, splits, classifiers=("softmax",), ledger=fits, show_progress=False) == first
