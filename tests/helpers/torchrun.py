"""zfnet's command line in subprocesses: under ``torchrun`` on gloo, and through a wrapper that watches the
batches a pass reads (to log them, or to kill the process at one)."""

from __future__ import annotations

import socket
import sys
import textwrap
from pathlib import Path

# `zfnet ARGS` with every batch of a data-set pass (ImageStream.chunks) watched, counted per pass from 0:
# with KILL_AT=N the process kills itself with SIGKILL (no clean-up of any kind) when a pass reads its batch
# N; with CHUNK_LOG=F each process appends the images of every batch it reads, a line each, to F.<RANK>.
CLI_WRAPPER = textwrap.dedent("""
    import os, signal, sys
    import zfnet.data.loader as loader

    real_chunks = loader.ImageStream.chunks

    def chunks(self, parts):
        for n, batch in enumerate(real_chunks(self, parts)):
            if n == int(os.environ.get("KILL_AT", "-1")):
                os.kill(os.getpid(), signal.SIGKILL)
            if "CHUNK_LOG" in os.environ:
                with open(os.environ["CHUNK_LOG"] + "." + os.environ.get("RANK", "0"), "a") as f:
                    f.write(" ".join(map(str, batch.indices.tolist())) + "\\n")
            yield batch

    loader.ImageStream.chunks = chunks
    from zfnet.cli import main
    sys.exit(main(sys.argv[1:]))
""")


def free_port() -> int:
    """A TCP port free on this machine now, for a process group's rendezvous."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def torchrun(processes: int = 2) -> list[str]:
    """The start of a command that runs a script or ``-m module`` on ``processes`` local processes."""
    return [sys.executable, "-m", "torch.distributed.run", f"--nproc_per_node={processes}",
            "--master_addr=127.0.0.1", f"--master_port={free_port()}"]


def write_wrapper(folder: Path) -> Path:
    """:data:`CLI_WRAPPER` written into ``folder``; run it as ``python WRAPPER ARGS``."""
    path = Path(folder) / "zfnet_wrapper.py"
    path.write_text(CLI_WRAPPER)
    return path
