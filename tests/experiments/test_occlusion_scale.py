"""``zfnet occlusion --pointing-game`` under torchrun (2 gloo processes) and after a kill -9: the single-process
result, to the bit."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
from helpers.runs import synthetic_run
from helpers.torchrun import torchrun, write_wrapper

from zfnet.cli import main

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("one_thread")]


@pytest.fixture(scope="module")
def setup(tmp_path_factory, one_thread):
    root = tmp_path_factory.mktemp("occlusion-scale")
    # 16 images; with this seed and an 8-pixel occluder 5 are classified correctly and scored, at distances
    # 0, 0, 0, 21 and 19 pixels from their boxes: hits and misses both.
    data, run = synthetic_run(root, classes=4, val_per_class=4)
    ref = root / "single"
    args = ["--data", str(data), "--images", "2", "--others", "2", "--search-images", "6", "--window", "8",
            "--stride", "4", "--pointing-game", "16", "--device", "cpu", "--quiet"]
    assert main(["occlusion", str(run), "--out", str(ref), *args]) == 0
    want = json.loads((ref / "occlusion.json").read_text())
    game = want["pointing_game"]
    assert game["images"] >= 3 and 0 < game["hits"] < game["images"]  # the fixture tells hits from misses
    return root, run, args, want


def test_two_processes_on_gloo_give_the_single_process_game_and_panels(setup):
    root, run, args, want = setup
    out = root / "two"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "ZFNET_PROGRESS": "0", "ZFNET_DIST_TIMEOUT": "120"}
    env["CHUNK_LOG"] = str(root / "chunks")
    cmd = [*torchrun(), str(write_wrapper(root)), "occlusion", str(run), "--out", str(out), *args]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    # The game's 16 images, one a chunk, dealt out in turn: each process played 8 of them, none twice.
    shares = [(root / f"chunks.{rank}").read_text().split() for rank in (0, 1)]
    assert len(shares[0]) == len(shares[1]) == 8 and len(set(shares[0]) | set(shares[1])) == 16
    # Each image is played alone, by the same code, whichever process reads it: the game's distances, rates
    # and counts, and every panel record, equal to the bit (the JSON as a whole).
    assert json.loads((out / "occlusion.json").read_text()) == want
    assert proc.stdout.count("results in") == 1  # rank 0 alone prints its summary
    ref = root / "single"
    for name in ("occlusion-000.png", "occlusion-001.png", "occlusion.csv", "occlusion.md"):
        assert (out / name).read_bytes() == (ref / name).read_bytes(), name
    assert not list(out.glob(".zfnet-state-*")), "the saved game states are removed once occlusion.json is written"


def test_a_game_killed_mid_pass_resumes_to_the_uninterrupted_result(setup):
    root, run, args, want = setup
    out = root / "killed"
    script = write_wrapper(root)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "ZFNET_PROGRESS": "0", "ZFNET_SCAN_SAVE_SECONDS": "0",
           "KILL_AT": "6"}
    cmd = [sys.executable, str(script), "occlusion", str(run), "--out", str(out), *args]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == -9, proc.stderr[-2000:]
    assert not (out / "occlusion.json").exists()
    assert (out / ".zfnet-state-pointing-game.rank0.safetensors").is_file()
    env["KILL_AT"] = "10"  # the resumed game reads only the 10 images left: it is not killed again
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert json.loads((out / "occlusion.json").read_text()) == want
    assert not list(out.glob(".zfnet-state-*"))
