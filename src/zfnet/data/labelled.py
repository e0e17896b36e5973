"""Every labelled image of a data set, pooled: what the Caltech protocol draws its splits from.

The transfer and probe experiments (Zeiler & Fergus 2014, §5.2) draw N training images per class and
test on the rest (:func:`zfnet.data.caltech.sample_splits`), so they read a data set as one pool of
labelled images rather than as fixed train and validation splits. :func:`open_labelled_images` opens
that pool for each single-label layout of :data:`LAYOUTS` (``voc2012`` keeps its own train and val sets,
:func:`zfnet.data.voc.open_voc`).

Example:
    >>> pool = open_labelled_images("data/synth-secondary", "folders", 73)  # doctest: +SKIP
    >>> len(pool.classes), len(pool)  # doctest: +SKIP
    (10, 960)
"""

from __future__ import annotations

from pathlib import Path

from ..errors import DataError
from .caltech import open_caltech101, open_caltech256
from .folders import ImageFolder, open_dataset

__all__ = ["LAYOUTS", "SINGLE_LABEL_LAYOUTS", "open_labelled_images"]

LAYOUTS = ("caltech101", "caltech256", "voc2012", "folders")
"""The layouts of a transfer experiment's target data set (see docs/transfer.md)."""
SINGLE_LABEL_LAYOUTS = ("caltech101", "caltech256", "folders")
"""The layouts :func:`open_labelled_images` pools: one class per image."""


def open_labelled_images(data: str | Path, layout: str, size: int, *, include_background: bool = False) -> ImageFolder:
    """Every labelled image of a single-label data set, for the Caltech protocol.

    ``caltech101`` and ``caltech256`` are the sets' own layouts (see :mod:`zfnet.data.caltech`);
    ``folders`` pools the ``train/`` and ``val/`` class folders of an image-folder tree (such as the
    synthetic data set), or reads ``DATA/<class>/*`` when there is no ``train/``.

    Args:
        data: the data set's folder.
        layout: one of :data:`SINGLE_LABEL_LAYOUTS`.
        size: the base size images are resized to.
        include_background: keep Caltech-101's ``BACKGROUND_Google`` / Caltech-256's clutter class.

    Raises:
        DataError: an unknown layout, a missing folder, a data set the layout cannot read.
    """
    data = Path(data)
    if layout == "caltech101":
        return open_caltech101(data, size, include_background=include_background)
    if layout == "caltech256":
        return open_caltech256(data, size, include_clutter=include_background)
    if layout != "folders":
        raise DataError(f"layout {layout!r} has no single-label image pool; valid: {', '.join(SINGLE_LABEL_LAYOUTS)}")
    if not data.is_dir():
        raise DataError(f"data folder {data} does not exist")
    if not (data / "train").is_dir():
        return open_dataset(data.parent, data.name, size, layout="folders")
    train = open_dataset(data, "train", size, layout="folders")
    samples = list(train.samples)
    if (data / "val").is_dir():
        samples += open_dataset(data, "val", size, layout="folders", classes=train.classes).samples
    return ImageFolder(samples, train.classes, size, root=data, class_names=train.class_names)
