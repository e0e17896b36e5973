"""The exceptions zfnet raises for bad input; the CLI turns them into a one-line message.

All subclass ``ValueError`` so library callers can catch them as such.
"""

from __future__ import annotations

__all__ = ["ZFNetError", "DataError", "CheckpointError", "TrainingDiverged"]


class ZFNetError(ValueError):
    """Bad input from the user: a wrong path, an unknown name, an impossible size."""


class DataError(ZFNetError):
    """A data set that cannot be used: missing folder, no images, unknown layout."""


class CheckpointError(ZFNetError):
    """A checkpoint or run directory that cannot be loaded safely."""


class TrainingDiverged(RuntimeError):
    """The loss became NaN or infinite; the last good checkpoint is kept."""
