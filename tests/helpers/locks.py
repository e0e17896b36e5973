"""Another process that holds a folder's lock, for the one-writer-per-folder tests."""

from __future__ import annotations

import signal
import subprocess
import sys
import textwrap
from contextlib import contextmanager

_HOLDER = textwrap.dedent("""
    import sys, time
    from zfnet._io import folder_lock
    with folder_lock(sys.argv[1]):
        print("locked", flush=True)
        time.sleep(300)
""")


@contextmanager
def held_by_another_process(folder):
    """Yield the PID of a process that holds ``folder``'s lock; it is killed with SIGKILL after."""
    proc = subprocess.Popen([sys.executable, "-c", _HOLDER, str(folder)], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().strip() == "locked"
        yield proc.pid
    finally:
        proc.send_signal(signal.SIGKILL)  # kill -9: the kernel releases the lock
        proc.wait()
        proc.stdout.close()
