"""The run folder as one object: what it reads without loading weights, and its model loaded once."""

from __future__ import annotations

import json

import pytest

from zfnet.errors import CheckpointError
from zfnet.train import TrainConfig, train
from zfnet.train.run import LoadedRun, Run, load_run


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    from helpers.trees import make_tree

    root = tmp_path_factory.mktemp("run")
    data = make_tree(root / "data", classes=3, per_class=4, val_per_class=2)
    config = TrainConfig(data=str(data), out=str(root / "run"), model="zfnet-tiny", epochs=2, batch_size=4,
                         workers=0, snapshots=(1,))
    train(config, show_progress=False)
    return root / "run", config


def test_it_reads_config_metrics_epochs_and_snapshots(run_dir):
    root, config = run_dir
    run = Run.open(root)
    assert run.config == TrainConfig.from_json(json.loads((root / "config.json").read_text()))
    assert run.config.epochs == config.epochs
    assert [m["epoch"] for m in run.metrics] == [1, 2] and run.finished_epochs == 2
    assert run.snapshots == [1, 2]  # the asked-for epoch 1, and the last epoch, which is always kept
    assert run.classes == json.loads((root / "classes.json").read_text())["classes"] and len(run.classes) == 3


def test_model_metadata_without_loading_weights(run_dir, monkeypatch):
    root, _ = run_dir
    import zfnet.train.checkpoint as checkpoint

    monkeypatch.setattr(checkpoint, "load_model", lambda *a, **k: pytest.fail("weights were loaded"))
    run = Run.open(root)
    assert run.model_info()["model"] == "zfnet-tiny" and run.architecture == "zfnet-tiny"


def test_the_model_is_loaded_once_per_weights(run_dir, monkeypatch):
    root, _ = run_dir
    import zfnet.train.run as run_module

    calls = []
    real = run_module.load_run
    monkeypatch.setattr(run_module, "load_run", lambda r, w: calls.append(w) or real(r, w))
    run = Run.open(root)
    assert run.model() is run.model() and run.model("last") is run.model("last")
    assert calls == ["best", "last"]
    assert run.model().input_size == 64 and run.model().classes == run.classes


def test_a_loaded_model_knows_its_run_folder_and_an_outside_model_has_none(run_dir):
    root, _ = run_dir
    run = Run.open(root)
    assert run.model().run is run  # the folder already read comes with the model
    loaded = load_run(root, "last")
    assert loaded.run is not None and loaded.run.root == root and loaded.run.snapshots == [1, 2]
    assert loaded.run is loaded.run  # read once
    import torch

    outside = LoadedRun(root, torch.nn.Identity(), loaded.mean, loaded.classes, loaded.class_names, {},
                        factory=torch.nn.Identity)
    assert not outside.is_run and outside.run is None


def test_not_a_run_is_a_clear_error(tmp_path):
    with pytest.raises(CheckpointError, match="does not exist"):
        Run.open(tmp_path / "missing")
    with pytest.raises(CheckpointError, match="not a zfnet run directory"):
        Run.open(tmp_path)


def test_a_corrupt_metrics_line_is_named(run_dir, tmp_path):
    import shutil

    root, _ = run_dir
    copy = tmp_path / "run"
    shutil.copytree(root, copy)
    (copy / "metrics.jsonl").write_text('{"epoch": 1}\n[1, 2]\n')
    with pytest.raises(CheckpointError, match="line 2: not an object"):
        _ = Run.open(copy).metrics
