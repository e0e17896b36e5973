"""The run folder: zfnet's mark on it, what a resume may clean, what a half-made run is, permissions."""

from __future__ import annotations

import os
import stat

import pytest

from zfnet._io import TEMP_PREFIX
from zfnet.errors import ZFNetError
from zfnet.train import TrainConfig, train
from zfnet.train.checkpoint import RUN_MARKER, is_run_dir


def _config(data, out, **kw) -> TrainConfig:
    base = dict(data=str(data), out=str(out), model="zfnet-tiny", epochs=1, batch_size=8, workers=0,
                snapshots=(1,), lr_patience=5)
    base.update(kw)
    return TrainConfig(**base)


def test_resume_cleans_only_the_temporary_files_zfnet_names(tiny_tree, tmp_path):
    run = tmp_path / "run"
    train(_config(tiny_tree, run), show_progress=False)
    assert is_run_dir(run) and (run / RUN_MARKER).is_file()
    ours = [run / f"{TEMP_PREFIX}1a2b3c4d5e6f-last.pt", run / "snapshots" / f"{TEMP_PREFIX}0f0f0f0f0f0f-epoch-002"]
    users = [run / ".notes.tmp", run / "snapshots" / ".epoch-001.safetensors.x1y2.tmp", run / "draft.tmp"]
    for p in ours + users:
        p.write_text("x")
    train(_config(tiny_tree, run, epochs=2), resume=True, show_progress=False)
    assert not any(p.exists() for p in ours)
    assert all(p.read_text() == "x" for p in users)


def test_resume_refuses_a_folder_that_is_not_a_run(tiny_tree, tmp_path):
    folder = tmp_path / "mine"
    folder.mkdir()
    (folder / ".cache.tmp").write_text("the user's")
    (folder / "metrics.jsonl").write_text("the user's own metrics\n")
    with pytest.raises(ZFNetError, match="not a zfnet run"):
        train(_config(tiny_tree, folder), resume=True, show_progress=False)
    assert sorted(p.name for p in folder.iterdir()) == [".cache.tmp", "metrics.jsonl"]
    with pytest.raises(ZFNetError, match="nothing to resume.*does not exist"):
        train(_config(tiny_tree, tmp_path / "absent"), resume=True, show_progress=False)
    assert not (tmp_path / "absent").exists()


def test_a_run_killed_in_its_first_seconds_is_still_zfnets(tiny_tree, tmp_path, monkeypatch):
    from zfnet.train import loop

    def killed(*args, **kw):
        raise KeyboardInterrupt  # while the mean image is computed, before any epoch

    monkeypatch.setattr(loop, "mean_image", killed)
    for run in (tmp_path / "a", tmp_path / "b"):
        with pytest.raises(KeyboardInterrupt):
            train(_config(tiny_tree, run), show_progress=False)
        assert is_run_dir(run) and not (run / "last.pt").exists()
    monkeypatch.undo()
    # Both ways on: resumed (from the beginning), or trained again without --resume.
    assert train(_config(tiny_tree, tmp_path / "a"), resume=True, show_progress=False).epochs == 1
    assert train(_config(tiny_tree, tmp_path / "b"), show_progress=False).epochs == 1


def test_every_file_of_a_run_follows_the_umask(tiny_tree, tmp_path):
    old = os.umask(0o027)
    try:
        train(_config(tiny_tree, tmp_path / "run", snapshots=(1,)), show_progress=False)
    finally:
        os.umask(old)
    files = [p for p in (tmp_path / "run").rglob("*") if p.is_file()]
    assert {p.suffix for p in files} >= {".safetensors", ".pt", ".json", ".jsonl"}
    for p in files:
        assert stat.S_IMODE(p.stat().st_mode) == 0o640, p  # weights too: not owner-only
