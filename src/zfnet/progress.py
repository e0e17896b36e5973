"""Progress bars for long work (tqdm), shown on a terminal and hidden in logs and tests.

``ZFNET_PROGRESS=1`` forces them on, ``ZFNET_PROGRESS=0`` off. Under ``torchrun`` only rank 0 shows
them (each bar shows that rank's own share of the work).
"""

from __future__ import annotations

import os
import sys

from tqdm.auto import tqdm

__all__ = ["progress"]


def progress(iterable=None, *, total: int | None = None, desc: str = "", unit: str = "it",
             enabled: bool = True, leave: bool = False) -> tqdm:
    """A tqdm bar with throughput (``unit``/s), or a silent stand-in when not on a terminal."""
    forced = os.environ.get("ZFNET_PROGRESS")
    if os.environ.get("RANK", "0").strip() not in ("", "0"):
        show = False
    elif forced is not None:
        show = enabled and forced not in ("0", "false", "no")
    else:
        show = enabled and sys.stderr.isatty()
    return tqdm(iterable, total=total, desc=desc, unit=unit, disable=not show, leave=leave,
                dynamic_ncols=True, unit_scale=unit != "it", file=sys.stderr)
