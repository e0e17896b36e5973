"""Feature extraction for ``zfnet experiment probes`` and ``transfer`` under torchrun (2 gloo processes): the
single-process cache files and results, to the bit; and an interrupted extraction that continues."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest
import torch
from helpers.runs import synthetic_run
from helpers.torchrun import free_port, torchrun, write_wrapper
from safetensors import safe_open

import zfnet.data.loader as loader
from zfnet.analysis.features import extract_features
from zfnet.cli import main
from zfnet.data import ImageStream, open_dataset
from zfnet.data.transforms import Normalization
from zfnet.models import build

pytestmark = pytest.mark.usefixtures("one_thread")

# 3 classes of 8 images (train/ and val/ pooled): 24 images in chunks of 5, the last one short, so that
# the two processes read 3 and 2 chunks.
COMMON = ["--workers", "0", "--device", "cpu", "--batch-size", "5", "--quiet"]
PROBES = ["--per-class", "4", "--splits", "2", "--layers", "conv1,conv5,fc7", "--classifiers", "softmax"]
TRANSFER = ["--per-class", "3", "--splits", "2", "--no-baseline"]


@pytest.fixture(scope="module")
def synth(tmp_path_factory, one_thread):
    root = tmp_path_factory.mktemp("features-scale")
    data, run = synthetic_run(root, classes=3, val_per_class=6)
    return root, data, run


def _torchrun(root: Path, args: list[str], passes: int) -> None:
    """``zfnet ARGS`` on 2 gloo processes, which share each of its ``passes`` passes over the 24 images."""
    script, log = write_wrapper(root), root / f"chunks-{free_port()}"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "ZFNET_PROGRESS": "0", "ZFNET_DIST_TIMEOUT": "120",
           "CHUNK_LOG": str(log)}
    cmd = [*torchrun(), str(script), *args]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.count("results in") == 1  # rank 0 alone prints its summary
    # Chunks 0, 2, 4 on rank 0 and 1, 3 on rank 1, in every pass: each image computed once, by one process.
    chunks = [Path(f"{log}.{rank}").read_text().splitlines() for rank in (0, 1)]
    assert [len(c.split()) for c in chunks[0]] == [5, 5, 4] * passes
    assert [len(c.split()) for c in chunks[1]] == [5, 5] * passes
    assert sorted(int(i) for c in chunks[0][:3] + chunks[1][:2] for i in c.split()) == list(range(24))


def _same_cache_file(got: Path, want: Path) -> None:
    with safe_open(str(got), framework="pt") as a, safe_open(str(want), framework="pt") as b:
        assert a.metadata() == b.metadata()  # the same fingerprint: the one-process cache is valid for both
        assert sorted(a.keys()) == sorted(b.keys()) == ["features", "indices", "labels"]
        for key in a.keys():
            # Each chunk of 5 images is one forward pass whichever process computes it: equal to the bit.
            assert torch.equal(a.get_tensor(key), b.get_tensor(key)), (got, key)


def _results(path: Path) -> dict:
    numbers = json.loads(path.read_text())
    numbers.pop("seconds")  # how long it took: the one number that may differ
    return numbers


@pytest.mark.slow
def test_probes_on_two_processes_give_the_single_process_features_and_fits(synth):
    root, data, run = synth
    one, two = root / "probes-one", root / "probes-two"
    assert main(["experiment", "probes", str(run), "--data", str(data), "--out", str(one), *PROBES, *COMMON]) == 0
    _torchrun(root, ["experiment", "probes", str(run), "--data", str(data), "--out", str(two), *PROBES, *COMMON],
              passes=1)
    for layer in ("conv1", "conv5", "fc7"):
        _same_cache_file(two / "features" / f"{layer}.safetensors", one / "features" / f"{layer}.safetensors")
    assert _results(two / "probes.json") == _results(one / "probes.json")
    assert not list((two / "features").glob(".zfnet-state-*")), "the saved passes are removed once the cache is written"


@pytest.mark.slow
def test_transfer_on_two_processes_gives_the_single_process_features_and_fits(synth):
    root, data, run = synth
    one, two = root / "transfer-one", root / "transfer-two"
    assert main(["experiment", "transfer", str(run), "--data", str(data), "--out", str(one), *TRANSFER,
                 *COMMON]) == 0
    _torchrun(root, ["experiment", "transfer", str(run), "--data", str(data), "--out", str(two), *TRANSFER,
                     *COMMON], passes=2)  # the pretrained network's pass and the untrained one's
    # The pretrained network's fc7 and, in a pass of its own, the untrained network's.
    for rel in ("fc7.safetensors", "untrained/fc7.safetensors"):
        _same_cache_file(two / "features" / rel, one / "features" / rel)
    assert _results(two / "transfer.json") == _results(one / "transfer.json")
    assert not list((two / "features").rglob(".zfnet-state-*"))


class _Stop(Exception):
    """Stands for the process being killed part-way through the pass."""


def test_an_interrupted_extraction_continues_where_it_was(synth, tmp_path, monkeypatch):
    _, data, _ = synth
    stream = ImageStream(open_dataset(data, "val", 73), workers=0, show_progress=False)  # 18 images
    model = build("zfnet-tiny", num_classes=3)
    norm = Normalization(torch.full((3, 73, 73), 100.0))
    kwargs = dict(input_size=64, layers=("conv2", "fc6"), batch_size=4, show_progress=False)
    whole = extract_features(model, stream, norm, **kwargs)  # no cache: nothing saved

    monkeypatch.setenv("ZFNET_SCAN_SAVE_SECONDS", "0")  # saved after every chunk
    real_chunks = loader.ImageStream.chunks
    read: list[int] = []

    def chunks(self, parts, stop_at=None):
        for n, batch in enumerate(real_chunks(self, parts)):
            if n == stop_at:
                raise _Stop
            read.append(len(batch.indices))
            yield batch

    cache = tmp_path / "cache"
    monkeypatch.setattr(loader.ImageStream, "chunks", lambda self, parts: chunks(self, parts, stop_at=3))
    with pytest.raises(_Stop):
        extract_features(model, stream, norm, cache_dir=cache, **kwargs)
    assert read == [4, 4, 4] and [p.name for p in cache.iterdir()] == [".zfnet-state-features.rank0.safetensors"]
    read.clear()
    monkeypatch.setattr(loader.ImageStream, "chunks", lambda self, parts: chunks(self, parts))
    resumed = extract_features(model, stream, norm, cache_dir=cache, **kwargs)
    assert read == [4, 2]  # the two chunks left of 18 images in chunks of 4
    assert resumed.indices.tolist() == list(range(18)) and torch.equal(resumed.labels, whole.labels)
    for layer in ("conv2", "fc6"):
        assert torch.equal(resumed.layers[layer], whole.layers[layer]), layer
    assert sorted(p.name for p in cache.iterdir()) == ["conv2.safetensors", "fc6.safetensors"]
