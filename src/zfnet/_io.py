"""Writing files safely: atomic writes, zfnet's own temporary names, one writer per folder.

- :func:`atomic_write`: a file is either its old or its new content, never half of one, with the
  permissions the umask gives (whatever library wrote it), and errors that name the user's path.
- Temporary files and folders are named ``.zfnet-tmp-*`` (:data:`TEMP_PREFIX`); a clean-up after a
  ``kill -9`` (:func:`remove_temp_files`) deletes those names only, never a user's ``*.tmp``.
- :func:`folder_lock`: an exclusive advisory lock (``flock``) on a folder for a command's lifetime,
  held through the file ``.zfnet.lock`` inside it; the kernel releases it when the process ends,
  even by ``kill -9``. A second process gets a :class:`~zfnet.errors.FolderInUse` naming the holder's PID.
"""

from __future__ import annotations

import errno
import fcntl
import json
import os
import secrets
import shutil
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from .errors import FolderInUse, ZFNetError

__all__ = [
    "atomic_write", "atomic_write_text", "atomic_write_json", "TEMP_PREFIX", "LOCK_NAME", "STATE_PREFIX",
    "is_zfnet_internal", "folder_entries", "remove_temp_files", "temp_path", "folder_lock",
]

TEMP_PREFIX = ".zfnet-tmp-"
LOCK_NAME = ".zfnet.lock"
STATE_PREFIX = ".zfnet-state-"
"""The running state of a long pass (:mod:`zfnet.scan`), kept across a kill: never a temporary file."""


def temp_path(path: str | Path) -> Path:
    """A fresh temporary name beside ``path``, recognisable as zfnet's: ``.zfnet-tmp-<random>-<name>``."""
    path = Path(path)
    return path.parent / f"{TEMP_PREFIX}{secrets.token_hex(6)}-{path.name[:150]}"


def is_zfnet_internal(name: str) -> bool:
    """Whether a folder entry's name is zfnet's machinery (its lock file or a temporary file)."""
    return name == LOCK_NAME or name.startswith((TEMP_PREFIX, STATE_PREFIX))


def folder_entries(folder: str | Path) -> list[Path]:
    """The entries of ``folder`` without zfnet's lock and temporary files (``[]`` for a missing folder).

    Use it to ask whether a folder is empty or holds anything that is not zfnet's.
    """
    folder = Path(folder)
    if not folder.is_dir():
        return []
    return sorted(p for p in folder.iterdir() if not is_zfnet_internal(p.name))


def remove_temp_files(folder: str | Path) -> list[Path]:
    """Delete the temporary files and folders zfnet left in ``folder`` (not below it) when it was killed.

    Only names zfnet gives (``.zfnet-tmp-*``) are touched. Call it while holding :func:`folder_lock`, so
    that no live writer's temporary file is taken.

    Returns:
        The paths removed.
    """
    folder = Path(folder)
    if not folder.is_dir():
        return []
    removed = []
    for p in folder.iterdir():
        if p.name.startswith(TEMP_PREFIX):
            if p.is_dir() and not p.is_symlink():
                shutil.rmtree(p, ignore_errors=True)
            else:
                p.unlink(missing_ok=True)
            removed.append(p)
    return removed


def atomic_write(path: str | Path, write: Callable[[Path], None]) -> Path:
    """Call ``write(tmp)`` on a temporary file beside ``path``, fsync it, then rename it over ``path``.

    A crash (even ``kill -9``) at any moment leaves either the previous file or the new one, plus at
    worst a ``.zfnet-tmp-*`` file that :func:`remove_temp_files` recognises. The file gets the
    permissions the umask gives a new file, even when ``write`` replaced the temporary file with one of
    its own (safetensors writes owner-only files). A file-system error names ``path``, not the
    temporary file.
    """
    path = Path(path)
    tmp = temp_path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        # Created by the kernel with 0666 & ~umask: the mode every output of zfnet has.
        os.close(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))
        mode = tmp.stat().st_mode & 0o7777
        try:
            write(tmp)
            if tmp.stat().st_mode & 0o7777 != mode:
                os.chmod(tmp, mode)
            with open(tmp, "rb+") as f:
                os.fsync(f.fileno())
            os.replace(tmp, path)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
    except OSError as err:
        raise _naming(err, path) from None
    except RuntimeError as err:
        if type(err) is not RuntimeError:
            raise
        # torch.save reports a failed write (a full disk) as a bare RuntimeError.
        first = str(err).strip().splitlines()[-1][:200] if str(err).strip() else "write failed"
        raise OSError(errno.EIO, f"cannot write the file ({first.replace(str(tmp), str(path))})", str(path)) from None
    _fsync_dir(path.parent)
    return path


def _naming(err: OSError, path: Path) -> OSError:
    """The same error, naming ``path`` (the user's) instead of zfnet's temporary file."""
    if err.errno is None:
        return OSError(errno.EIO, str(err) or "cannot write the file", str(path))
    if err.filename is not None and TEMP_PREFIX not in str(err.filename):
        return err
    return OSError(err.errno, err.strerror or os.strerror(err.errno), str(path))


def _fsync_dir(folder: Path) -> None:
    try:
        dir_fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(dir_fd)
    except OSError:
        pass
    finally:
        os.close(dir_fd)


def atomic_write_text(path: str | Path, text: str) -> Path:
    """Write ``text`` to ``path`` atomically (UTF-8)."""
    return atomic_write(path, lambda tmp: tmp.write_text(text, encoding="utf-8"))


def atomic_write_json(path: str | Path, obj) -> Path:
    """Write ``obj`` as indented JSON to ``path`` atomically."""
    return atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=False) + "\n")


# ------------------------------------------------------------------------------------ folder locks

# Folders this process holds: (device, inode) -> [lock file descriptor, depth]. flock() conflicts
# between two descriptors of one process too, so a nested folder_lock of a held folder only counts.
_held: dict[tuple[int, int], list[int]] = {}
_held_guard = threading.Lock()
# Errors of a file system that has no flock (some network mounts): the command runs unlocked.
_NO_LOCKS = (errno.ENOLCK, errno.ENOSYS, errno.EOPNOTSUPP, errno.EINVAL)


@contextmanager
def folder_lock(folder: str | Path, *, create: bool = True) -> Iterator[Path]:
    """Hold an exclusive lock on ``folder`` for the ``with`` block: one zfnet writer per folder.

    The lock is an advisory ``flock`` on ``folder/.zfnet.lock``, which holds the PID of its holder; the
    kernel releases it when the process ends, even by ``kill -9``. The lock file is removed on release.
    A process may take the lock of a folder it already holds (nested commands): only the outermost
    ``with`` releases it. A folder that the lock created and that is still empty at the end is
    removed again, so a command that failed early leaves nothing behind.

    Args:
        folder: the output folder.
        create: create ``folder`` (and its parents) when it is missing; otherwise that is an error.

    Raises:
        FolderInUse: another process holds the lock (the message names the folder and its PID).
        ZFNetError: ``folder`` is a file, is missing (``create=False``) or cannot be written.

    Example:
        >>> with folder_lock("/tmp/zfnet-doc-out") as out:
        ...     _ = atomic_write_text(out / "notes.txt", "mine alone")
    """
    folder = Path(folder)
    created = False
    if not folder.is_dir():
        if folder.exists() or folder.is_symlink():
            raise ZFNetError(f"{folder} is a file, not a folder")
        if not create:
            raise ZFNetError(f"{folder} does not exist")
        try:
            folder.mkdir(parents=True)
            created = True
        except FileExistsError:
            pass
        except OSError as err:
            raise ZFNetError(f"cannot create {folder}: {err.strerror}") from None
    st = folder.stat()
    key = (st.st_dev, st.st_ino)
    with _held_guard:
        entry = _held.get(key)
        if entry is not None:
            entry[1] += 1
    if entry is not None:
        try:
            yield folder
        finally:
            with _held_guard:
                entry[1] -= 1
        return
    fd = _acquire(folder)
    with _held_guard:
        _held[key] = [fd, 1]
    try:
        yield folder
    finally:
        with _held_guard:
            _held.pop(key, None)
        _release(folder, fd)
        if created:
            try:
                folder.rmdir()  # only if the command wrote nothing
            except OSError:
                pass


def _acquire(folder: Path) -> int:
    """Take the flock of ``folder``'s lock file; -1 on a file system that has no locks."""
    lock = folder / LOCK_NAME
    for _ in range(20):
        try:
            fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o666)
        except PermissionError:
            raise ZFNetError(f"{folder} is not writable") from None
        except OSError as err:
            raise ZFNetError(f"cannot lock {folder}: {err.strerror}") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _read_pid(fd)
            os.close(fd)
            pid = f"PID {holder}" if holder else "PID unknown"
            raise FolderInUse(f"{folder} is in use by another zfnet process ({pid}); wait for it to end "
                              "or choose another folder") from None
        except OSError as err:
            os.close(fd)
            if err.errno in _NO_LOCKS:
                return -1
            raise
        # A holder that just released removed the file: the lock taken may be on a file no longer there.
        try:
            same = os.path.samestat(os.fstat(fd), os.stat(lock))
        except FileNotFoundError:
            same = False
        if same:
            os.ftruncate(fd, 0)
            os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
            return fd
        os.close(fd)
    raise FolderInUse(f"{folder} is being locked and released by other processes; try again")


def _release(folder: Path, fd: int) -> None:
    if fd < 0:
        return
    lock = folder / LOCK_NAME
    try:
        if os.path.samestat(os.fstat(fd), os.stat(lock)):
            lock.unlink()  # still ours: nobody else can hold it while we do
    except OSError:
        pass
    os.close(fd)


def _read_pid(fd: int) -> int | None:
    try:
        text = os.pread(fd, 32, 0).decode("ascii", "replace").strip()
    except OSError:
        return None
    return int(text) if text.isdigit() else None
