"""torchrun with two CPU processes on the gloo backend trains one model, and only rank 0 writes files."""

from __future__ import annotations

import json
import os
import subprocess
import textwrap

import pytest
import torch
from helpers.torchrun import torchrun

from zfnet.train.checkpoint import load_state

# Runs `zfnet ARGS` with every file write of zfnet (all go through zfnet._io.atomic_write) recorded in
# LOG_DIR/rank<RANK>.txt, one path a line.
SPY = textwrap.dedent("""
    import os, sys
    import zfnet._io as io

    log = open(os.path.join(os.environ["LOG_DIR"], f"rank{os.environ['RANK']}.txt"), "a")
    real_write = io.atomic_write  # replaced before zfnet.train imports it

    def atomic_write(path, write):
        log.write(f"{os.path.abspath(path)}\\n")
        log.flush()
        return real_write(path, write)

    io.atomic_write = atomic_write
    from zfnet.cli import main
    sys.exit(main(sys.argv[1:]))
""")


@pytest.mark.slow
def test_torchrun_two_processes(tiny_tree, tmp_path):
    run = tmp_path / "run"
    logs = tmp_path / "logs"
    logs.mkdir()
    spy = tmp_path / "spy.py"
    spy.write_text(SPY)
    cmd = [*torchrun(), str(spy), "train", "--data", str(tiny_tree), "--model",
           "zfnet-tiny", "--epochs", "2", "--out", str(run), "--batch-size", "8", "--workers", "0",
           "--device", "cpu", "--quiet"]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "ZFNET_PROGRESS": "0", "LOG_DIR": str(logs)}
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in rows] == [1, 2]
    # 24 training images split over 2 ranks, each rank's count summed: every image once per epoch
    assert all(r["images"] == 24 for r in rows)
    assert proc.stdout.count("run directory:") == 1  # rank 0 alone prints (both finished: exit status 0)

    # Only rank 0 wrote files: rank 1 wrote none, and every file in the run is one rank 0 wrote.
    written = {0: set(), 1: set()}
    for rank in written:
        log = logs / f"rank{rank}.txt"
        written[rank] = set(log.read_text().splitlines()) if log.is_file() else set()
    assert written[1] == set()
    on_disk = {str(p) for p in run.rglob("*") if p.is_file()}
    assert on_disk and on_disk == written[0], on_disk ^ written[0]

    state = load_state(run / "last.pt")
    assert state["epoch"] == 2 and all(torch.isfinite(v).all() for v in state["model"].values())


def test_one_named_gpu_for_several_local_processes_is_refused(monkeypatch):
    from zfnet.distributed import setup

    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "1")
    monkeypatch.setenv("LOCAL_RANK", "1")
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "2")
    with pytest.raises(ValueError, match="--device cuda:0 would put every process .* on one GPU"):
        setup("cuda:0")
