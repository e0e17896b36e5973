"""Checkpoints are read without running code; broken ones give a clear error."""

from __future__ import annotations

import os
import pickle

import pytest
import torch

from zfnet.errors import CheckpointError
from zfnet.models import build
from zfnet.train.checkpoint import load_model, load_state, save_state, save_weights


class _Exploit:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_crafted_pickle_is_refused_and_runs_nothing(tmp_path):
    marker = tmp_path / "pwned"
    path = tmp_path / "last.pt"
    torch.save({"format": "zfnet-train-state-v1", "epoch": 1, "model": _Exploit(marker), "optimizer": {}}, path)
    with pytest.raises(CheckpointError, match="refusing to load"):
        load_state(path)
    assert not marker.exists()
    # a raw pickle, not even torch's zip format
    raw = tmp_path / "raw.pt"
    raw.write_bytes(pickle.dumps(_Exploit(marker)))
    with pytest.raises(CheckpointError):
        load_state(raw)
    assert not marker.exists()


def test_state_round_trip_and_wrong_files(tmp_path):
    state = {"epoch": 3, "model": {"w": torch.ones(2)}, "optimizer": {"state": {}, "param_groups": []},
             "metrics": [{"epoch": 1, "lr": 0.01}]}
    save_state(tmp_path / "s.pt", state)
    back = load_state(tmp_path / "s.pt")
    assert back["epoch"] == 3 and torch.equal(back["model"]["w"], torch.ones(2))
    torch.save({"epoch": 1}, tmp_path / "other.pt")
    with pytest.raises(CheckpointError, match="not a zfnet training checkpoint"):
        load_state(tmp_path / "other.pt")
    (tmp_path / "garbage.pt").write_bytes(b"\x00" * 100)
    with pytest.raises(CheckpointError, match="not a readable checkpoint|refusing"):
        load_state(tmp_path / "garbage.pt")
    with pytest.raises(CheckpointError, match="does not exist"):
        load_state(tmp_path / "missing.pt")


def test_weights_round_trip_rebuilds_the_model(tmp_path):
    model = build("zfnet-tiny", num_classes=4, removed=("fc7",))
    meta = {"model": "zfnet-tiny", "num_classes": 4, "model_options": {"removed": ["fc7"]}, "epoch": 2}
    save_weights(tmp_path / "w.safetensors", model, meta)
    back, got = load_model(tmp_path / "w.safetensors")
    assert got["epoch"] == 2 and back.layer_names == model.layer_names
    for (k, a), (_, b) in zip(model.state_dict().items(), back.state_dict().items()):
        assert torch.equal(a, b), k


def test_weights_that_do_not_fit_or_are_corrupt(tmp_path):
    model = build("zfnet-tiny", num_classes=4)
    save_weights(tmp_path / "w.safetensors", model, {"model": "zfnet-tiny", "num_classes": 5})
    with pytest.raises(CheckpointError, match="do not fit"):
        load_model(tmp_path / "w.safetensors")
    save_weights(tmp_path / "x.safetensors", model, {"model": "resnet", "num_classes": 4})
    with pytest.raises(CheckpointError, match="cannot rebuild.*unknown model"):
        load_model(tmp_path / "x.safetensors")
    (tmp_path / "bad.safetensors").write_bytes(b"{not safetensors")
    with pytest.raises(CheckpointError, match="not a readable safetensors"):
        load_model(tmp_path / "bad.safetensors")
