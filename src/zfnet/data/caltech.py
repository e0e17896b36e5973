"""Caltech-101 and Caltech-256 on disk, and the Caltech train/test protocol.

- Caltech-101: ``ROOT/101_ObjectCategories/<class>/*.jpg`` (``ROOT`` may be that folder itself).
  ``BACKGROUND_Google`` is not an object class and is left out unless asked for.
- Caltech-256: ``ROOT/256_ObjectCategories/NNN.name/*.jpg``; classes are numbered by ``NNN``.
  ``257.clutter`` is left out unless asked for.

Neither set has fixed splits. The usual protocol, the paper's in Tables 4, 5 and 7 (Zeiler & Fergus
2014, §5.2): draw ``N`` training images per class at random, test on the rest of each class up to a
cap (50 per class for Caltech-101, Fei-Fei et al.; 25 for Caltech-256, Griffin et al.), and report the
mean of the per-class accuracies over several such splits. :func:`sample_splits` draws them from a
seed, so every split can be made again.

Only the files directly inside a class folder count (a few Caltech-256 folders hold a sub-folder of
duplicates). Files are listed and read by the rules of :mod:`zfnet.data.images`; a class folder with
no image is refused (it would be a class never trained on nor tested).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import DataError
from .folders import ImageFolder
from .images import scan_images

__all__ = [
    "CALTECH101_FOLDER", "CALTECH256_FOLDER", "CALTECH101_BACKGROUND", "CALTECH256_CLUTTER", "TEST_CAPS",
    "open_caltech101", "open_caltech256", "Split", "sample_splits", "per_class_accuracy",
]

log = logging.getLogger("zfnet")

CALTECH101_FOLDER = "101_ObjectCategories"
CALTECH256_FOLDER = "256_ObjectCategories"
CALTECH101_BACKGROUND = "BACKGROUND_Google"
CALTECH256_CLUTTER = "257.clutter"
# Test images per class in the usual protocols: "up to 50" for Caltech-101 (the paper's wording), 25 for
# Caltech-256 (Griffin et al. 2007).
TEST_CAPS = {"caltech101": 50, "caltech256": 25}


def _category_root(root: str | Path, folder: str) -> Path:
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"data folder {root} does not exist")
    if (root / folder).is_dir():
        return root / folder
    if root.name == folder:
        return root
    raise DataError(f"{root} holds no {folder}/ folder")


def _class_folders(category_root: Path) -> list[Path]:
    return sorted(p for p in category_root.iterdir() if p.is_dir() and not p.name.startswith("."))


def _build(category_root: Path, folders: Sequence[Path], names: Sequence[str], size: int) -> ImageFolder:
    samples: list[tuple[Path, int]] = []
    skipped: list[tuple[Path, str]] = []
    empty = []
    for label, folder in enumerate(folders):
        images, bad, _ = scan_images(folder, recursive=False)
        skipped += bad
        if not images:
            empty.append(folder.name)
        samples.extend((p, label) for p in images)
    if len(empty) == len(folders):
        raise DataError(f"no images found in {category_root}")
    if empty:
        # A class with no image would be an output class never trained on nor tested.
        raise DataError(f"class folder {category_root / empty[0]} holds no images"
                        f"{f' (and {len(empty) - 1} more)' if len(empty) > 1 else ''}; remove it or add images")
    return ImageFolder(samples, [f.name for f in folders], size, root=category_root, class_names=names,
                       skipped=skipped)


def open_caltech101(root: str | Path, size: int, *, include_background: bool = False) -> ImageFolder:
    """Open Caltech-101: one class per folder of ``101_ObjectCategories``, in sorted order.

    Args:
        root: the folder holding ``101_ObjectCategories/``, or that folder itself.
        size: base size the images are resized and centre-cropped to.
        include_background: keep ``BACKGROUND_Google`` as a class (default: left out, as usual).

    Returns:
        An :class:`~zfnet.data.ImageFolder` of every image (the set has no fixed splits).

    Raises:
        DataError: no ``101_ObjectCategories`` folder, no class folders or no images.

    Example:
        >>> ds = open_caltech101("caltech101", size=256)  # doctest: +SKIP
        >>> len(ds.classes)  # doctest: +SKIP
        101
    """
    category_root = _category_root(root, CALTECH101_FOLDER)
    folders = [f for f in _class_folders(category_root) if include_background or f.name != CALTECH101_BACKGROUND]
    if not folders:
        raise DataError(f"{category_root} has no class folders")
    return _build(category_root, folders, [f.name for f in folders], size)


def open_caltech256(root: str | Path, size: int, *, include_clutter: bool = False) -> ImageFolder:
    """Open Caltech-256: folders ``NNN.name``, numbered by ``NNN``; class names are the ``name`` parts.

    Args:
        root: the folder holding ``256_ObjectCategories/``, or that folder itself.
        size: base size the images are resized and centre-cropped to.
        include_clutter: keep ``257.clutter`` as a class (default: left out, as usual).

    Returns:
        An :class:`~zfnet.data.ImageFolder` whose ``classes`` are the folder names and
        ``class_names`` the readable names.

    Raises:
        DataError: no ``256_ObjectCategories`` folder, a folder not named ``NNN.name``, or no images.

    Example:
        >>> ds = open_caltech256("caltech256", size=256)  # doctest: +SKIP
        >>> ds.classes[0], ds.class_names[0]  # doctest: +SKIP
        ('001.ak47', 'ak47')
    """
    category_root = _category_root(root, CALTECH256_FOLDER)
    numbered = []
    for folder in _class_folders(category_root):
        number, dot, name = folder.name.partition(".")
        if not (dot and number.isdigit() and name):
            raise DataError(f"{folder} is not a Caltech-256 class folder (expected NNN.name)")
        if folder.name == CALTECH256_CLUTTER and not include_clutter:
            continue
        numbered.append((int(number), folder, name))
    if not numbered:
        raise DataError(f"{category_root} has no class folders")
    numbered.sort(key=lambda t: t[0])
    return _build(category_root, [f for _, f, _ in numbered], [n for _, _, n in numbered], size)


@dataclass(frozen=True)
class Split:
    """One random train/test split: indices into the data set, sorted."""

    seed: int
    per_class: int
    train: np.ndarray
    test: np.ndarray


def sample_splits(labels: Sequence[int] | np.ndarray, per_class: int, splits: int, *, seed: int = 0,
                  test_cap: int | None = None, candidates: Sequence[int] | np.ndarray | None = None) -> list[Split]:
    """Draw the Caltech protocol's random splits: ``per_class`` training images per class, the rest for testing.

    Split ``s`` shuffles each class with a generator seeded by ``(seed, s)`` and takes the first
    ``per_class`` images for training and the next ``test_cap`` (all the rest when None) for testing.
    The shuffle does not depend on ``per_class``, so split ``s`` at 15 images per class trains on a
    subset of split ``s`` at 30.

    Args:
        labels: the label of every image of the data set.
        per_class: training images per class, at least 1.
        splits: how many splits, at least 1.
        seed: seed of the draws.
        test_cap: at most this many test images per class (None: no cap).
        candidates: the images that may be drawn (e.g. the readable ones; default: all).

    Returns:
        ``splits`` :class:`Split` objects.

    Raises:
        DataError: a class with no more than ``per_class`` images (none would be left to test on).

    Example:
        >>> s = sample_splits([0] * 5 + [1] * 6, per_class=2, splits=3, test_cap=3)
        >>> len(s), len(s[0].train), len(s[0].test)
        (3, 4, 6)
    """
    if int(per_class) != per_class or per_class < 1:
        raise DataError(f"images per class must be a positive integer, got {per_class!r}")
    if int(splits) != splits or splits < 1:
        raise DataError(f"the number of splits must be a positive integer, got {splits!r}")
    if test_cap is not None and test_cap < 1:
        raise DataError(f"the test cap must be at least 1, got {test_cap}")
    labels = np.asarray(labels, dtype=np.int64)
    pool = np.arange(len(labels)) if candidates is None else np.unique(np.asarray(candidates, dtype=np.int64))
    by_class = {int(c): pool[labels[pool] == c] for c in np.unique(labels[pool])}
    for c, members in by_class.items():
        if len(members) <= per_class:
            raise DataError(f"class {c} has {len(members)} images; {per_class} per class for training "
                            f"needs at least {per_class + 1}")
    out = []
    for s in range(int(splits)):
        rng = np.random.default_rng([int(seed), s])
        train, test = [], []
        for c in sorted(by_class):
            order = rng.permutation(by_class[c])
            train.append(order[:per_class])
            rest = order[per_class:]
            test.append(rest if test_cap is None else rest[:test_cap])
        out.append(Split(int(seed), int(per_class), np.sort(np.concatenate(train)), np.sort(np.concatenate(test))))
    return out


def per_class_accuracy(predicted: Sequence[int] | np.ndarray, labels: Sequence[int] | np.ndarray) -> float:
    """The mean over classes of each class's accuracy (every class present in ``labels`` counts once).

    Example:
        >>> per_class_accuracy([0, 0, 0, 1], [0, 0, 0, 0])
        0.75
        >>> per_class_accuracy([0, 1, 1, 1], [0, 1, 1, 0])  # class 0: 1/2, class 1: 2/2
        0.75
    """
    predicted, labels = np.asarray(predicted), np.asarray(labels)
    if predicted.shape != labels.shape:
        raise ValueError(f"predicted {predicted.shape} and labels {labels.shape} differ in shape")
    if len(labels) == 0:
        raise ValueError("no test images")
    return float(np.mean([np.mean(predicted[labels == c] == c) for c in np.unique(labels)]))
