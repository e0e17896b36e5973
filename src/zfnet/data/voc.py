"""PASCAL VOC 2012 classification: the layout on disk, multi-label targets and average precision.

Layout (``ROOT`` may be ``VOC2012/``, ``VOCdevkit/`` or the folder holding ``VOCdevkit/``)::

    JPEGImages/<id>.jpg
    Annotations/<id>.xml
    ImageSets/Main/<set>.txt              one image id per line
    ImageSets/Main/<class>_<set>.txt      "<id>  1" (present), "-1" (absent), "0" (only difficult objects)

Targets come from the ``<class>_<set>.txt`` files, the official classification ground truth; where
they are missing they are read from the annotation XML files (an object marked ``difficult`` makes
a 0 unless a non-difficult object of the class is also in the image). Each image has one target
per class: 1, -1, or 0, which the evaluation ignores, as VOC's own (``VOCevalcls``) does.

Average precision is VOC's from 2010 on: the area under the precision-recall curve after precision
is made monotone (each point takes the best precision at any higher recall). The paper reports it
per class and its mean (Zeiler & Fergus 2014, Table 6).
"""

from __future__ import annotations

import logging
import xml.etree.ElementTree as ET
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ..errors import DataError
from .folders import ImageFolder

__all__ = ["VOC_CLASSES", "VOCImages", "open_voc", "read_annotation", "average_precision",
           "mean_average_precision"]

log = logging.getLogger("zfnet")

VOC_CLASSES: tuple[str, ...] = (
    "aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair", "cow", "diningtable",
    "dog", "horse", "motorbike", "person", "pottedplant", "sheep", "sofa", "train", "tvmonitor",
)


@dataclass
class VOCImages:
    """One image set of VOC: the images, and a target per image and class.

    Attributes:
        images: the image files; their single-label ``labels`` are all -1 (unused).
        targets: (N, C) int8: 1 present, -1 absent, 0 difficult (ignored by the evaluation).
        classes: the C class names.
        ids: the N image ids.
    """

    images: ImageFolder
    targets: torch.Tensor
    classes: list[str]
    ids: list[str]


def _voc_root(root: str | Path) -> Path:
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"data folder {root} does not exist")
    for candidate in (root, root / "VOC2012", root / "VOCdevkit" / "VOC2012"):
        if (candidate / "JPEGImages").is_dir():
            return candidate
    raise DataError(f"{root} is not a PASCAL VOC folder (no JPEGImages/ in it, in VOC2012/ or in VOCdevkit/VOC2012/)")


def read_annotation(path: str | Path) -> list[tuple[str, bool]]:
    """The ``(class name, difficult)`` of every object of a VOC annotation XML file.

    Example:
        >>> read_annotation("VOC2012/Annotations/2008_000008.xml")  # doctest: +SKIP
        [('horse', False), ('person', False)]
    """
    path = Path(path)
    try:
        tree = ET.parse(path)
    except (ET.ParseError, OSError) as err:
        raise DataError(f"{path} is not a readable annotation file ({err})") from None
    objects = []
    for obj in tree.getroot().iter("object"):
        name = (obj.findtext("name") or "").strip()
        if not name:
            raise DataError(f"{path}: an object has no <name>")
        objects.append((name, (obj.findtext("difficult") or "0").strip() == "1"))
    return objects


def _read_ids(path: Path) -> list[str]:
    return [line.split()[0] for line in path.read_text().splitlines() if line.strip()]


def _read_class_file(path: Path) -> dict[str, int]:
    flags: dict[str, int] = {}
    for n, line in enumerate(path.read_text().splitlines(), 1):
        parts = line.split()
        if not parts:
            continue
        if len(parts) != 2 or parts[1] not in ("1", "-1", "0"):
            raise DataError(f"{path}:{n}: expected '<image id> 1|-1|0', got {line!r}")
        flags[parts[0]] = int(parts[1])
    return flags


def open_voc(root: str | Path, image_set: str, size: int, *,
             classes: Sequence[str] = VOC_CLASSES) -> VOCImages:
    """Open one image set of PASCAL VOC (``train``, ``val``, ``trainval``) for classification.

    Args:
        root: the VOC folder (see the module docstring for the accepted forms).
        image_set: the set's name in ``ImageSets/Main``.
        size: base size the images are resized and centre-cropped to.
        classes: the class names (default: VOC's 20).

    Returns:
        A :class:`VOCImages`.

    Raises:
        DataError: a missing folder or set, a malformed list or annotation, or an image listed but absent.

    Example:
        >>> voc = open_voc("VOCdevkit", "val", size=256)  # doctest: +SKIP
        >>> voc.targets.shape  # doctest: +SKIP
        torch.Size([5823, 20])
    """
    base = _voc_root(root)
    main = base / "ImageSets" / "Main"
    if not main.is_dir():
        raise DataError(f"{base} has no ImageSets/Main folder")
    classes = list(classes)
    class_files = [main / f"{c}_{image_set}.txt" for c in classes]
    have_class_files = all(p.is_file() for p in class_files)
    set_file = main / f"{image_set}.txt"
    if set_file.is_file():
        ids = _read_ids(set_file)
    elif have_class_files:
        ids = list(_read_class_file(class_files[0]))
    else:
        sets = sorted(p.stem for p in main.glob("*.txt") if "_" not in p.stem)
        raise DataError(f"no image set {image_set!r} in {main} (sets there: {', '.join(sets) or 'none'})")
    if not ids:
        raise DataError(f"image set {image_set!r} in {main} lists no images")
    index = {c: i for i, c in enumerate(classes)}
    targets = torch.full((len(ids), len(classes)), -1, dtype=torch.int8)
    row = {image_id: i for i, image_id in enumerate(ids)}
    if have_class_files:
        for j, path in enumerate(class_files):
            flags = _read_class_file(path)
            missing = [i for i in ids if i not in flags]
            if missing:
                raise DataError(f"{path} lacks image {missing[0]} of set {image_set!r}")
            for image_id, flag in flags.items():
                if image_id in row:
                    targets[row[image_id], j] = flag
    else:
        log.info("no %s_%s.txt class lists in %s: reading targets from Annotations/", classes[0], image_set, main)
        for image_id, i in row.items():
            for name, difficult in read_annotation(base / "Annotations" / f"{image_id}.xml"):
                if name not in index:
                    raise DataError(f"annotation {image_id}.xml names class {name!r}, not one of {', '.join(classes)}")
                j = index[name]
                if not difficult:
                    targets[i, j] = 1
                elif targets[i, j] == -1:
                    targets[i, j] = 0
    paths = [base / "JPEGImages" / f"{image_id}.jpg" for image_id in ids]
    absent = [p for p in paths if not p.is_file()]
    if absent:
        raise DataError(f"image {absent[0]} of set {image_set!r} does not exist ({len(absent)} missing)")
    images = ImageFolder([(p, -1) for p in paths], classes, size, root=base)
    return VOCImages(images, targets, classes, ids)


def average_precision(scores: np.ndarray | torch.Tensor, targets: np.ndarray | torch.Tensor) -> float:
    """VOC's average precision (2010 on) of one class: area under the monotone precision-recall curve.

    Args:
        scores: (N,) the classifier's score of each image (higher: more likely present).
        targets: (N,) 1 present, -1 absent, 0 ignored (difficult).

    Returns:
        The average precision in [0, 1].

    Raises:
        ValueError: shapes differ, or no image is a positive.

    Example:
        >>> average_precision(np.array([0.9, 0.8, 0.7]), np.array([1, -1, 1]))  # precision 1, then 2/3
        0.8333333333333333
    """
    scores = np.asarray(scores, dtype=np.float64).reshape(-1)
    targets = np.asarray(targets).reshape(-1)
    if scores.shape != targets.shape:
        raise ValueError(f"scores {scores.shape} and targets {targets.shape} differ in shape")
    keep = targets != 0
    scores, positive = scores[keep], targets[keep] > 0
    total = int(positive.sum())
    if total == 0:
        raise ValueError("average precision needs at least one positive image")
    order = np.argsort(-scores, kind="stable")
    hits = positive[order]
    tp = np.cumsum(hits)
    precision = tp / np.arange(1, len(hits) + 1)
    recall = tp / total
    # Monotone envelope: the best precision at this recall or any higher one.
    envelope = np.maximum.accumulate(precision[::-1])[::-1]
    steps = np.diff(np.concatenate([[0.0], recall]))
    return float(np.sum(steps * envelope))


def mean_average_precision(scores: np.ndarray | torch.Tensor,
                           targets: np.ndarray | torch.Tensor) -> tuple[list[float], float]:
    """Per-class average precision of (N, C) scores against (N, C) targets, and their mean.

    Example:
        >>> s = np.array([[0.9, 0.1], [0.2, 0.8]])
        >>> mean_average_precision(s, np.array([[1, -1], [-1, 1]]))
        ([1.0, 1.0], 1.0)
    """
    scores, targets = np.asarray(scores), np.asarray(targets)
    if scores.ndim != 2 or scores.shape != targets.shape:
        raise ValueError(f"expected (N, C) scores and targets of one shape, got {scores.shape} and {targets.shape}")
    per_class = [average_precision(scores[:, j], targets[:, j]) for j in range(scores.shape[1])]
    return per_class, float(np.mean(per_class))
