"""Caltech-101 and Caltech-256 layouts on small fake trees, and the Caltech train/test protocol."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from helpers.trees import draw

from zfnet.data.caltech import open_caltech101, open_caltech256, per_class_accuracy, sample_splits
from zfnet.errors import DataError


def _write(folder, n, seed=0, ext=".jpg"):
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    for i in range(n):
        draw("disc", rng, 40).save(folder / f"image_{i + 1:04d}{ext}")


@pytest.fixture
def caltech101(tmp_path):
    cats = tmp_path / "caltech101" / "101_ObjectCategories"
    for name, n in (("accordion", 3), ("BACKGROUND_Google", 2), ("Faces", 4), ("Faces_easy", 2), ("yin_yang", 1)):
        _write(cats / name, n)
    (cats / "accordion" / "notes.txt").write_text("not an image")
    (cats / "accordion" / ".hidden.jpg").write_bytes(b"")
    _write(cats / "accordion" / "nested", 2)  # only a class folder's own files count
    return tmp_path / "caltech101"


@pytest.fixture
def caltech256(tmp_path):
    cats = tmp_path / "256_ObjectCategories"
    for name, n in (("002.american-flag", 2), ("001.ak47", 3), ("100.x-files", 1), ("257.clutter", 2)):
        _write(cats / name, n)
    return tmp_path


def test_caltech101_classes_and_labels(caltech101):
    ds = open_caltech101(caltech101, size=32)
    assert ds.classes == ["Faces", "Faces_easy", "accordion", "yin_yang"]  # sorted, background left out
    assert len(ds) == 4 + 2 + 3 + 1
    for path, label in ds.samples:
        assert path.parent.name == ds.classes[label] and path.suffix == ".jpg"
    image, label, _, problem = ds[0]
    assert image.shape == (3, 32, 32) and problem is None


def test_caltech101_background_flag_and_root_forms(caltech101):
    with_bg = open_caltech101(caltech101, size=32, include_background=True)
    assert "BACKGROUND_Google" in with_bg.classes and len(with_bg) == 12
    direct = open_caltech101(caltech101 / "101_ObjectCategories", size=32)
    assert direct.classes == open_caltech101(caltech101, size=32).classes


def test_caltech256_numbered_classes(caltech256):
    ds = open_caltech256(caltech256, size=32)
    assert ds.classes == ["001.ak47", "002.american-flag", "100.x-files"]
    assert ds.class_names == ["ak47", "american-flag", "x-files"]
    assert sorted(ds.targets) == [0, 0, 0, 1, 1, 2]
    clutter = open_caltech256(caltech256 / "256_ObjectCategories", size=32, include_clutter=True)
    assert clutter.classes[-1] == "257.clutter" and clutter.class_names[-1] == "clutter" and len(clutter) == 8


def test_caltech_errors(tmp_path, caltech256):
    with pytest.raises(DataError, match="101_ObjectCategories"):
        open_caltech101(tmp_path, size=32)
    with pytest.raises(DataError, match="does not exist"):
        open_caltech256(tmp_path / "nope", size=32)
    (caltech256 / "256_ObjectCategories" / "misc").mkdir()
    with pytest.raises(DataError, match="misc"):
        open_caltech256(caltech256, size=32)


def test_sample_splits_protocol():
    labels = np.repeat(np.arange(4), [20, 31, 40, 16])
    splits = sample_splits(labels, per_class=15, splits=5, seed=3, test_cap=10)
    assert len(splits) == 5
    for s in splits:
        assert len(np.intersect1d(s.train, s.test)) == 0
        assert np.bincount(labels[s.train]).tolist() == [15, 15, 15, 15]
        assert np.bincount(labels[s.test]).tolist() == [5, 10, 10, 1]  # the rest, capped at 10
    assert len({tuple(s.train) for s in splits}) == 5  # different draws
    again = sample_splits(labels, per_class=15, splits=5, seed=3, test_cap=10)
    assert all(np.array_equal(a.train, b.train) and np.array_equal(a.test, b.test) for a, b in zip(splits, again))
    other = sample_splits(labels, per_class=15, splits=1, seed=4, test_cap=10)[0]
    assert not np.array_equal(other.train, splits[0].train)


def test_sample_splits_nested_uncapped_and_candidates():
    labels = np.repeat(np.arange(3), 40)
    small = sample_splits(labels, 15, 2, seed=0)
    large = sample_splits(labels, 30, 2, seed=0)
    for a, b in zip(small, large):
        assert set(a.train) <= set(b.train)  # the same shuffle: 15 per class is a subset of 30
        assert len(b.test) == 3 * 10  # no cap: every other image
    readable = np.setdiff1d(np.arange(120), [0, 1, 2, 50])
    for s in sample_splits(labels, 15, 3, candidates=readable):
        assert not {0, 1, 2, 50} & (set(s.train) | set(s.test))
        assert len(s.train) + len(s.test) == 116


def test_sample_splits_refuses_small_classes_and_bad_values():
    labels = np.repeat(np.arange(2), [31, 30])
    with pytest.raises(DataError, match="class 1 has 30 images"):
        sample_splits(labels, 30, 1)
    for kwargs in ({"per_class": 0, "splits": 1}, {"per_class": 2, "splits": 0},
                   {"per_class": 2, "splits": 1, "test_cap": 0}):
        with pytest.raises(DataError):
            sample_splits(labels, **kwargs)


def test_per_class_accuracy_weights_classes_equally():
    # Class 0: 9 of 9 right; class 1: 0 of 1. Plain accuracy 0.9, per-class 0.5.
    labels = np.array([0] * 9 + [1])
    predicted = np.zeros(10, dtype=int)
    assert per_class_accuracy(predicted, labels) == 0.5
    assert per_class_accuracy(torch.tensor([2, 2]).numpy(), np.array([2, 2])) == 1.0
    with pytest.raises(ValueError):
        per_class_accuracy(np.zeros(3), np.zeros(2))
