"""torchrun with two CPU processes on the gloo backend trains one model, and only rank 0 writes."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys

import pytest
import torch

from zfnet.train.checkpoint import load_state


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_torchrun_two_processes(tiny_tree, tmp_path):
    run = tmp_path / "run"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", "--master_addr=127.0.0.1",
           f"--master_port={_free_port()}", "-m", "zfnet", "train", "--data", str(tiny_tree), "--model",
           "zfnet-tiny", "--epochs", "2", "--out", str(run), "--batch-size", "8", "--workers", "0",
           "--device", "cpu", "--quiet"]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "ZFNET_PROGRESS": "0"}
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in rows] == [1, 2]
    # 24 training images split over 2 ranks, each rank's count summed: every image once per epoch
    assert all(r["images"] == 24 for r in rows)
    assert proc.stdout.count("run directory:") == 2  # both ranks finish; only rank 0 wrote files
    assert not list(run.glob(".*.tmp"))
    state = load_state(run / "last.pt")
    assert state["epoch"] == 2 and all(torch.isfinite(v).all() for v in state["model"].values())
