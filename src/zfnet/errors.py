"""The exceptions zfnet raises for bad input; the CLI turns them into a one-line message.

All subclass ``ValueError`` so library callers can catch them as such.
"""

from __future__ import annotations

__all__ = ["ZFNetError", "DataError", "ImageError", "CheckpointError", "FolderInUse", "TrainingDiverged"]


class ZFNetError(ValueError):
    """Bad input from the user: a wrong path, an unknown name, an impossible size."""


class DataError(ZFNetError):
    """A data set that cannot be used: missing folder, no images, unknown layout."""


class ImageError(DataError):
    """An image file that cannot be used (see :mod:`zfnet.data.images`): ``image PATH REASON``.

    Attributes:
        path: the file.
        reason: why, as it reads after the path (``"is a directory, not an image file"``).
    """

    def __init__(self, path: object, reason: str) -> None:
        shown = str(path)
        if not shown.isprintable():  # a file name holding a newline or an escape stays on one line
            shown = repr(shown)
        super().__init__(f"image {shown} {reason}")
        self.path = path
        self.reason = reason

    def __reduce__(self):  # DataLoader workers pickle it
        return (type(self), (self.path, self.reason))


class CheckpointError(ZFNetError):
    """A checkpoint or run directory that cannot be loaded safely."""


class FolderInUse(ZFNetError):
    """Another process holds the output folder's lock (see :func:`zfnet._io.folder_lock`)."""


class TrainingDiverged(RuntimeError):
    """The loss or the weights became NaN or infinite; no checkpoint holds them, the last good one is kept."""
