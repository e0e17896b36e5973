"""``zfnet evaluate`` under torchrun (2 gloo processes) gives the single-process errors and outputs."""

from __future__ import annotations

import json
import os
import subprocess

import pytest
import torch
from helpers.runs import synthetic_run
from helpers.torchrun import torchrun

from zfnet.cli import main
from zfnet.train.evaluate import predict_runs

pytestmark = pytest.mark.slow


# Each rank's softmax outputs, saved for the comparison (rank 1's included: every rank gets them all).
OUTPUTS = """
import sys, torch, os
from zfnet.train.evaluate import predict_runs
preds, _ = predict_runs([sys.argv[1]], sys.argv[2], ten_crop=True, batch_size=3, workers=0, show_progress=False)
torch.save({"probs": preds[0].probs, "centre": preds[0].centre, "indices": preds[0].indices},
           os.path.join(sys.argv[3], f"rank{os.environ['RANK']}.pt"))
"""


def test_two_processes_give_the_single_process_errors_and_outputs(tmp_path):
    data, run = synthetic_run(tmp_path, classes=4, val_per_class=5)  # 20 images, batches of 3: 7 chunks
    single = tmp_path / "single.json"
    assert main(["evaluate", str(run), "--data", str(data), "--ten-crop", "--batch-size", "3", "--workers", "0",
                 "--device", "cpu", "--json", str(single)]) == 0
    env = {**os.environ, "OMP_NUM_THREADS": "1", "ZFNET_PROGRESS": "0", "ZFNET_DIST_TIMEOUT": "120"}
    two = tmp_path / "two.json"
    proc = subprocess.run([*torchrun(), "-m", "zfnet", "evaluate", str(run), "--data",
                           str(data), "--ten-crop", "--batch-size", "3", "--workers", "0", "--device", "cpu",
                           "--json", str(two)], env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert json.loads(two.read_text()) == json.loads(single.read_text())
    assert proc.stdout.count("top-1 err") == 1  # rank 0 alone prints

    script = tmp_path / "outputs.py"
    script.write_text(OUTPUTS)
    proc = subprocess.run([*torchrun(), str(script), str(run), str(data),
                           str(tmp_path)], env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as each of the two processes (OMP_NUM_THREADS=1)
    try:
        want, _ = predict_runs([run], data, ten_crop=True, batch_size=3, workers=0, show_progress=False)
    finally:
        torch.set_num_threads(threads)
    for rank in (0, 1):
        got = torch.load(tmp_path / f"rank{rank}.pt")
        assert torch.equal(got["indices"], want[0].indices)
        # The same images in the same batches of 3 on either side: equal to the bit.
        assert torch.equal(got["probs"], want[0].probs) and torch.equal(got["centre"], want[0].centre)
