"""kill -9 at chosen moments of a run, then resume: each time the run ends bit-identical to one never killed.

The killed process is a real ``zfnet train`` that sends itself SIGKILL at one moment named by the test: in
the middle of an epoch's steps, after a checkpoint's temporary file is written but before its rename,
between the weights and the training state, between the state and the metrics, and in the run's first
seconds. The resumes and the uninterrupted reference run in the test's process, on one thread, as the
killed process does, so that their arithmetic is the same.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap

import pytest
import torch

from zfnet._io import LOCK_NAME, TEMP_PREFIX
from zfnet.cli import main
from zfnet.train.checkpoint import load_weights

# Sends SIGKILL to its own process at the moment ZFNET_TEST_KILL names, then runs `zfnet ARGS`:
# "step@N" after the N-th SGD step; "before:NAME@N" when the N-th atomic write of a file NAME begins;
# "renamed:NAME@N" once that write's temporary file is complete, before it is renamed into place.
KILLER = textwrap.dedent("""
    import os, signal, sys
    from pathlib import Path

    import zfnet._io as io

    where, nth = os.environ["ZFNET_TEST_KILL"].rsplit("@", 1)
    nth, seen = int(nth), []

    def die():
        os.kill(os.getpid(), signal.SIGKILL)

    if where == "step":
        import zfnet.train.step as step  # the one SGD step, which renormalises the filters last
        real_renorm = step.renormalize_filters_

        def renorm(*args, **kw):
            real_renorm(*args, **kw)
            seen.append(1)
            if len(seen) == nth:
                die()

        step.renormalize_filters_ = renorm
    else:
        phase, name = where.split(":")
        real_write = io.atomic_write  # replaced before zfnet.train imports it

        def atomic_write(path, write):
            if Path(path).name == name:
                seen.append(1)
                if len(seen) == nth:
                    if phase == "before":
                        die()

                    def write_then_die(tmp):
                        write(tmp)
                        die()

                    return real_write(path, write_then_die)
            return real_write(path, write)

        io.atomic_write = atomic_write
    from zfnet.cli import main
    sys.exit(main(sys.argv[1:]))
""")

# 3 classes x 8 training images in batches of 8: 3 steps an epoch.
MOMENTS = {
    "mid-epoch-2": "step@5",
    "weights-of-epoch-2-not-renamed": "renamed:last.safetensors@2",
    "between-weights-and-state": "before:last.pt@2",
    "between-state-and-metrics": "before:metrics.jsonl@2",
    "first-seconds": "before:config.json@1",
}


def _args(data, run):
    return ["train", "--data", str(data), "--model", "zfnet-tiny", "--epochs", "3", "--out", str(run),
            "--batch-size", "8", "--workers", "0", "--snapshots", "1,3", "--lr-patience", "5", "--quiet"]


def _one_thread(fn):
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return fn()
    finally:
        torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    from helpers.trees import make_tree

    root = tmp_path_factory.mktemp("kill")
    data = make_tree(root / "data", classes=3, per_class=8, val_per_class=4)
    assert _one_thread(lambda: main(_args(data, root / "ref"))) == 0
    return data, root / "ref"


def _files(run):
    return {p.relative_to(run).as_posix(): p for p in sorted(run.rglob("*")) if p.is_file()}


@pytest.mark.slow
@pytest.mark.parametrize("moment", list(MOMENTS))
def test_kill_9_at_a_chosen_moment_then_resume_is_exact(reference, tmp_path, moment):
    data, ref = reference
    run = tmp_path / "run"
    env = {**os.environ, "ZFNET_TEST_KILL": MOMENTS[moment], "OMP_NUM_THREADS": "1", "ZFNET_PROGRESS": "0"}
    killed = subprocess.run([sys.executable, "-c", KILLER, *_args(data, run)], env=env, capture_output=True,
                            text=True, timeout=300)
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-2000:]
    if moment == "weights-of-epoch-2-not-renamed":
        assert [p.name for p in run.glob(f"{TEMP_PREFIX}*")], "the kill should leave a temporary file"

    assert _one_thread(lambda: main([*_args(data, run), "--resume"])) == 0
    got, want = _files(run), _files(ref)
    assert sorted(got) == sorted(want)  # no temporary file, no lock file left
    assert not any(TEMP_PREFIX in name or name.endswith(LOCK_NAME) for name in got)
    for name in got:
        if name.endswith(".safetensors"):
            a, b = load_weights(got[name])[0], load_weights(want[name])[0]
            assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a), name
    rows = [json.loads(line) for line in got["metrics.jsonl"].read_text().splitlines()]
    ref_rows = [json.loads(line) for line in want["metrics.jsonl"].read_text().splitlines()]
    assert [r["epoch"] for r in rows] == [1, 2, 3]
    assert [r["train_loss"] for r in rows] == [r["train_loss"] for r in ref_rows]
