"""Atomic writes (all or nothing, the umask's permissions, the user's path in errors), zfnet's own
temporary names, and one writer per folder (two real processes)."""

from __future__ import annotations

import errno
import os
import stat
import subprocess
import sys

import pytest
import torch
from PIL import Image
from safetensors.torch import save_file

from zfnet._io import (
    LOCK_NAME,
    TEMP_PREFIX,
    atomic_write,
    atomic_write_text,
    folder_entries,
    folder_lock,
    remove_temp_files,
)
from zfnet.errors import FolderInUse, ZFNetError


@pytest.fixture
def umask_027():
    # Not the usual 022, so that a file made owner-only (0600) or world-readable (0644) both show.
    old = os.umask(0o027)
    yield 0o640
    os.umask(old)


def _mode(path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_every_writer_gets_the_umask_permissions(tmp_path, umask_027):
    writers = {
        "f.txt": lambda tmp: tmp.write_text("two"),
        "state.pt": lambda tmp: torch.save({"w": torch.ones(2)}, tmp),
        # safetensors' save_file replaces the file by an owner-only one of its own
        "w.safetensors": lambda tmp: save_file({"w": torch.ones(2)}, str(tmp)),
        "figure.png": lambda tmp: Image.new("RGB", (4, 4)).save(tmp, format="PNG"),
    }
    for name, write in writers.items():
        atomic_write(tmp_path / name, write)
        atomic_write(tmp_path / name, write)  # and when replacing a file
        assert _mode(tmp_path / name) == umask_027, name
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(writers)


def test_failed_write_leaves_the_old_file(tmp_path):
    path = tmp_path / "f.txt"
    atomic_write_text(path, "old")

    def boom(tmp):
        tmp.write_text("half")
        raise RuntimeError("disk full")

    with pytest.raises(OSError, match="disk full"):
        atomic_write(path, boom)
    assert path.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["f.txt"]


def test_file_system_errors_name_the_users_path(tmp_path):
    path = tmp_path / "results.json"

    def full(tmp):
        raise OSError(errno.ENOSPC, "No space left on device", str(tmp))

    with pytest.raises(OSError) as err:
        atomic_write(path, full)
    assert err.value.errno == errno.ENOSPC and err.value.filename == str(path)
    assert TEMP_PREFIX not in str(err.value)

    def torch_like(tmp):  # torch.save reports a failed write as a bare RuntimeError naming the file
        raise RuntimeError(f"File {tmp} cannot be opened.")

    with pytest.raises(OSError) as err:
        atomic_write(path, torch_like)
    assert err.value.filename == str(path) and TEMP_PREFIX not in str(err.value)
    assert not path.exists() and list(tmp_path.iterdir()) == []


def test_only_zfnets_own_temporary_files_are_cleaned(tmp_path):
    mine = [tmp_path / ".notes.tmp", tmp_path / "draft.tmp", tmp_path / ".last.pt.abc123.tmp"]
    for p in mine:
        p.write_text("the user's")
    ours = tmp_path / f"{TEMP_PREFIX}0123abcd-last.pt"
    ours.write_text("half a checkpoint")
    (tmp_path / f"{TEMP_PREFIX}synth").mkdir()
    removed = remove_temp_files(tmp_path)
    assert sorted(p.name for p in removed) == sorted([ours.name, f"{TEMP_PREFIX}synth"])
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(p.name for p in mine)


def test_folder_lock_nests_in_one_process_and_leaves_nothing(tmp_path):
    out = tmp_path / "new" / "out"
    with folder_lock(out) as held:
        assert (out / LOCK_NAME).read_text().strip() == str(os.getpid())
        assert folder_entries(out) == []  # the lock file is zfnet's, not the folder's content
        with folder_lock(held):  # a library call inside a command that holds the folder
            atomic_write_text(out / "a.txt", "x")
        assert (out / LOCK_NAME).is_file()  # still held by the outer block
    assert [p.name for p in out.iterdir()] == ["a.txt"]
    with folder_lock(tmp_path / "unused"):
        pass
    assert not (tmp_path / "unused").exists()  # made for the command, which wrote nothing
    (tmp_path / "file").write_text("x")
    with pytest.raises(ZFNetError, match="is a file"):
        with folder_lock(tmp_path / "file"):
            pass
    with pytest.raises(ZFNetError, match="does not exist"):
        with folder_lock(tmp_path / "absent", create=False):
            pass


def test_a_second_process_is_refused_until_the_holder_is_killed(tmp_path):
    from helpers.locks import held_by_another_process

    out = tmp_path / "out"
    with held_by_another_process(out) as pid:
        with pytest.raises(FolderInUse, match=rf"{out}.*in use.*PID {pid}"):
            with folder_lock(out):
                pass
        # A real zfnet command as the second process: one line naming the folder and the holder, status 2.
        env = {**os.environ, "ZFNET_PROGRESS": "0"}
        second = subprocess.run([sys.executable, "-m", "zfnet", "data", "synth", str(out), "--classes", "1",
                                 "--per-class", "1", "--size", "32"], capture_output=True, text=True, env=env,
                                timeout=120)
        assert second.returncode == 2, second.stderr
        lines = second.stderr.strip().splitlines()
        assert len(lines) == 1 and str(out) in lines[0] and f"PID {pid}" in lines[0], second.stderr
        assert folder_entries(out) == []  # the second process wrote nothing
    with folder_lock(out):  # the holder was killed (-9): its stale lock file does not block
        assert (out / LOCK_NAME).read_text().strip() == str(os.getpid())
