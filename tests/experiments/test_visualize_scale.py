"""``zfnet visualize`` under torchrun (2 gloo processes) and after a kill -9: the single-process result."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
from helpers.runs import synthetic_run
from helpers.torchrun import torchrun, write_wrapper

from zfnet.cli import main

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("scale")
    data, run = synthetic_run(root, classes=4, val_per_class=5)  # 20 images: 5 batches of 4
    ref = root / "single"
    args = ["--data", str(data), "--batch-size", "4", "--maps", "6", "--k", "3", "--layers", "conv1,conv3,fc6",
            "--device", "cpu", "--quiet"]
    assert main(["visualize", str(run), "--out", str(ref), *args]) == 0
    return root, run, args, json.loads((ref / "index.json").read_text())


def _same_index(got: dict, want: dict) -> None:
    assert got["images"] == want["images"] == 20
    assert got["layers"].keys() == want["layers"].keys()
    for layer, maps in want["layers"].items():
        assert got["layers"][layer].keys() == maps.keys()
        for c, entry in maps.items():
            mine = got["layers"][layer][c]
            assert mine["image_ids"] == entry["image_ids"], (layer, c)
            assert mine["positions"] == entry["positions"], (layer, c)
            # Each image is computed in the same batch of 4 either way: the same values to the bit.
            assert mine["values"] == entry["values"], (layer, c)


def test_two_processes_on_gloo_give_the_single_process_top_k_and_figures(setup):
    root, run, args, want = setup
    out = root / "two"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "ZFNET_PROGRESS": "0", "ZFNET_DIST_TIMEOUT": "120"}
    cmd = [*torchrun(), "-m", "zfnet", "visualize", str(run), "--out", str(out), *args]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    _same_index(json.loads((out / "index.json").read_text()), want)
    assert proc.stdout.count("visualised") == 1  # rank 0 alone prints its summary
    ref = root / "single"
    for name in ("top3-conv1.png", "top3-conv3.png", "top3-fc6.png", "filters-conv1.png"):
        assert (out / name).read_bytes() == (ref / name).read_bytes(), name
    assert not list(out.glob(".zfnet-state-*")), "the saved search states are removed once index.json is written"


def test_a_search_killed_mid_pass_resumes_to_the_uninterrupted_result(setup):
    root, run, args, want = setup
    out = root / "killed"
    script = write_wrapper(root)
    env = {**os.environ, "ZFNET_PROGRESS": "0", "ZFNET_SCAN_SAVE_SECONDS": "0", "KILL_AT": "3"}
    cmd = [sys.executable, str(script), "visualize", str(run), "--out", str(out), *args]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == -9, proc.stderr[-2000:]
    assert not (out / "index.json").exists()
    assert (out / ".zfnet-state-top-activations.rank0.safetensors").is_file()
    env["KILL_AT"] = "2"  # the resumed pass reads only the 2 batches left: it is not killed again
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    _same_index(json.loads((out / "index.json").read_text()), want)
    assert not list(out.glob(".zfnet-state-*"))


def test_more_processes_than_shown_maps(setup):
    root, run, args, want = setup
    out = root / "one-map"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "ZFNET_PROGRESS": "0", "ZFNET_DIST_TIMEOUT": "120"}
    one = [a if a != "6" else "1" for a in args]  # --maps 1: the second process projects no map
    cmd = [*torchrun(), "-m", "zfnet", "visualize", str(run), "--out", str(out), *one]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    index = json.loads((out / "index.json").read_text())
    assert all(len(maps) == 1 for maps in index["layers"].values())
