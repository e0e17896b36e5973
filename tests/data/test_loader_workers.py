"""ImageStream's DataLoader workers: kept alive between passes, and every pass still exactly its own batches."""

from __future__ import annotations

import gc
import multiprocessing
import time

import pytest
import torch
from helpers.trees import make_tree

from zfnet import cores
from zfnet.data import ImageStream, open_dataset
from zfnet.data.folders import collate
from zfnet.data.loader import default_workers


@pytest.fixture
def folder(tmp_path):
    """20 images of 2 classes and one unreadable file (sorted third in bar/)."""
    root = make_tree(tmp_path / "d", classes=2, per_class=10, val_per_class=1, size=32)
    (root / "train" / "bar" / "001x.png").write_text("this is not an image")
    return root


def reference(folder, orders, batch_size):
    """The batches of each order read in this process without a DataLoader: a batch of ``batch_size`` indices
    at a time, its unreadable files left out, and a batch with none readable left out too."""
    ds = open_dataset(folder, "train", 32)
    out = []
    for order in orders:
        batches = [collate([ds[i] for i in order[k:k + batch_size]]) for k in range(0, len(order), batch_size)]
        out.append([batch for batch in batches if len(batch.indices)])
    return out


def same(got, expected):
    assert len(got) == len(expected)
    for a, b in zip(got, expected):
        assert torch.equal(a.indices, b.indices) and torch.equal(a.labels, b.labels)
        assert torch.equal(a.images, b.images)


def workers_alive() -> set[int]:
    return {p.pid for p in multiprocessing.active_children()}


def test_kept_workers_give_each_pass_its_own_batches(folder):
    ds = open_dataset(folder, "train", 32)
    stream = ImageStream(ds, workers=2, cache="none", show_progress=False)
    orders = [list(range(len(ds))), torch.randperm(len(ds), generator=torch.Generator().manual_seed(1)).tolist(),
              list(reversed(range(len(ds))))[:13]]
    expected = reference(folder, orders, 4)
    before = workers_alive()
    first = list(stream.batches(orders[0], 4))
    kept = workers_alive() - before
    assert len(kept) == 2  # the two workers outlive the pass
    second = list(stream.batches(orders[1], 4))
    third = list(stream.batches(orders[2], 4))
    assert workers_alive() - before == kept  # the same two served the later passes
    for got, want in zip((first, second, third), expected):
        same(got, want)
    assert [p for p in ds.bad_files] == ["train/bar/001x.png"]
    del stream, first, second, third
    gc.collect()
    deadline = time.monotonic() + 10
    while kept & workers_alive() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not kept & workers_alive()  # a stream that is gone takes its workers with it


def test_a_pass_may_change_the_batch_size_and_the_chunks(folder):
    ds = open_dataset(folder, "train", 32)
    stream = ImageStream(ds, workers=2, cache="none", show_progress=False)
    order = list(range(len(ds)))[::-1]
    same(list(stream.batches(order, 3)), reference(folder, [order], 3)[0])
    bad = [i for i, (path, _) in enumerate(ds.samples) if path.name == "001x.png"][0]
    chunks = [[0, 1, bad], [5 if bad != 5 else 6], [bad, 19, 7, 4, 3], [bad]]
    got = list(stream.chunks(chunks))
    same(got, [collate([ds[i] for i in chunk]) for chunk in chunks])  # one batch per chunk, even an empty one
    shown = "train/bar/001x.png"
    assert [[path for path, _ in b.bad] for b in got] == [[shown], [], [shown], [shown]]
    assert len(got[3].indices) == 0
    same(list(stream.batches(order, 7)), reference(folder, [order], 7)[0])


def test_two_passes_in_turn_and_a_pass_left_early(folder):
    ds = open_dataset(folder, "train", 32)
    stream = ImageStream(ds, workers=2, cache="none", show_progress=False)
    a, b = list(range(len(ds))), list(range(len(ds)))[::-1]
    expected_a, expected_b = reference(folder, [a, b], 5)
    # zip takes one batch of each pass in turn: the second pass gets a loader of its own
    pairs = list(zip(stream.batches(a, 5), stream.batches(b, 5)))
    same([p[0] for p in pairs], expected_a)
    same([p[1] for p in pairs], expected_b)
    # a pass abandoned after one batch leaves the next one whole
    for _ in stream.batches(b, 5):
        break
    same(list(stream.batches(a, 5)), expected_a)
    same(list(stream.batches(b, 5)), expected_b)


def test_loading_draws_nothing_from_torchs_global_generator(folder):
    # so dropout masks do not depend on how, or from which epoch, the images were loaded
    ds = open_dataset(folder, "train", 32)
    for workers in (0, 2):
        stream = ImageStream(ds, workers=workers, cache="none", show_progress=False)
        torch.manual_seed(3)
        for _ in range(2):
            list(stream.batches(range(len(ds)), 4))
        drawn = torch.rand(3)
        torch.manual_seed(3)
        assert torch.equal(drawn, torch.rand(3))


@pytest.fixture
def free_cores(monkeypatch):
    """Set the free cores a process measures: ``free_cores(n)``; the real measurement is back after the test."""

    def set_free(n: int) -> None:
        monkeypatch.setattr(cores, "free_cores", lambda window=cores.WINDOW: n)
        cores.process_free_cores.cache_clear()

    yield set_free
    cores.process_free_cores.cache_clear()


def test_default_workers_come_from_the_free_cores(folder, free_cores):
    free_cores(4)
    assert default_workers(streaming=True) == 2  # half: the rest compute
    assert default_workers(streaming=False) == 4  # the cache is filled before anything computes
    ds = open_dataset(folder, "train", 32)
    assert ImageStream(ds, cache="none", show_progress=False).workers == 2
    free_cores(1)
    assert ImageStream(ds, cache="memory", show_progress=False).workers == 0  # one core: decoded in this process
    assert ImageStream(ds, workers=3, cache="none", show_progress=False).workers == 3
