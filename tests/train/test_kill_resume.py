"""End to end: train, kill -9 mid-run, resume, evaluate; no epoch lost or repeated."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest
import torch

from zfnet.train.checkpoint import load_weights


def _zfnet(*args, **kw):
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "ZFNET_PROGRESS": "0"}
    return subprocess.Popen([sys.executable, "-m", "zfnet", *args], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, **kw)


def _epochs(run):
    path = run / "metrics.jsonl"
    if not path.is_file():
        return []
    return [json.loads(line)["epoch"] for line in path.read_text().splitlines() if line.strip()]


@pytest.mark.slow
def test_kill_9_then_resume_loses_and_repeats_nothing(tiny_tree, tmp_path):
    run = tmp_path / "run"
    args = ["train", "--data", str(tiny_tree), "--model", "zfnet-tiny", "--epochs", "4", "--out", str(run),
            "--batch-size", "4", "--workers", "0", "--snapshots", "1,3"]
    proc = _zfnet(*args)
    deadline = time.time() + 120
    while time.time() < deadline and len(_epochs(run)) < 2 and proc.poll() is None:
        time.sleep(0.02)
    assert proc.poll() is None, proc.communicate()
    os.kill(proc.pid, signal.SIGKILL)  # somewhere inside epoch 3 (or while writing epoch 2's files)
    proc.wait()
    done = _epochs(run)
    assert done[:2] == [1, 2] and done == list(range(1, len(done) + 1))

    resumed = _zfnet(*args, "--resume")
    out, err = resumed.communicate(timeout=300)
    assert resumed.returncode == 0, err
    assert _epochs(run) == [1, 2, 3, 4]
    assert "resuming" in err

    # The interrupted run ends exactly where an uninterrupted one does.
    ref = tmp_path / "ref"
    straight = _zfnet(*[a if a != str(run) else str(ref) for a in args])
    _, err2 = straight.communicate(timeout=300)
    assert straight.returncode == 0, err2
    a, b = load_weights(run / "last.safetensors")[0], load_weights(ref / "last.safetensors")[0]
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert sorted(p.name for p in (run / "snapshots").iterdir()) == [
        "epoch-001.safetensors", "epoch-003.safetensors", "epoch-004.safetensors"]
    assert not list(run.glob(".*.tmp"))  # a temp file of a killed atomic write is cleared on resume
    ev = _zfnet("evaluate", str(run), "--data", str(tiny_tree), "--ten-crop", "--workers", "0")
    out, err = ev.communicate(timeout=120)
    assert ev.returncode == 0, err
    assert "top-1 err" in out and "10 crops" in out
