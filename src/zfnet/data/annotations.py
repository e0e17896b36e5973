"""Object and part boxes of annotated images, and where they fall in a model's input.

An annotation file is the synthetic data set's ``annotations.json``, or a file of the same form for
other images::

    {"images": {"val/face/00000.png": {"box": [x0, y0, x1, y1],
                                       "parts": {"left_eye": [x0, y0, x1, y1], "nose": [...], ...}},
                ...}}

(paths relative to the data folder; boxes in the file's pixels, exclusive ends; ``box`` is the
object's). The correspondence analysis occludes the parts; the occlusion experiment's pointing game
scores against the object's box.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ..errors import ZFNetError

__all__ = ["map_box", "read_part_annotations"]


def map_box(box: Sequence[float], image_size: tuple[int, int], base: int, crop: int) -> list[int]:
    """Map a box from an image file's pixels to the model input's (after resize, centre crops).

    The file is resized so its smaller side is ``base`` and centre-cropped to ``base`` x ``base``
    (:func:`zfnet.data.transforms.resize_center_crop`), then centre-cropped to ``crop``; the box is
    rounded outwards and clipped to the input.

    Args:
        box: ``(x0, y0, x1, y1)``, exclusive ends.
        image_size: the file's ``(width, height)``.
        base: the base size.
        crop: the model's input size.

    Returns:
        ``[x0, y0, x1, y1]`` in input pixels.

    Example:
        >>> map_box([10, 20, 30, 40], (128, 128), 128, 112)
        [2, 12, 22, 32]
        >>> map_box([10, 20, 30, 40], (64, 64), 128, 112)
        [12, 32, 52, 72]
    """
    w, h = image_size
    scale = base / min(w, h)
    nw, nh = max(base, round(w * scale)), max(base, round(h * scale))
    left, top = (nw - base) // 2 + (base - crop) // 2, (nh - base) // 2 + (base - crop) // 2
    x0, y0, x1, y1 = (float(v) for v in box)
    out = [math.floor(x0 * scale - left + 1e-9), math.floor(y0 * scale - top + 1e-9),
           math.ceil(x1 * scale - left - 1e-9), math.ceil(y1 * scale - top - 1e-9)]
    return [min(max(v, 0), crop) for v in out]


def read_part_annotations(path: str | Path) -> dict[str, dict[str, Any]]:
    """Read a part-annotation file: ``{image path: {"parts": {name: box}, "box": box or None, "label": ...}}``.

    Raises:
        ZFNetError: a missing or unreadable file, or one without an ``images`` mapping of that form.

    Example:
        >>> read_part_annotations("data/synth/annotations.json")["val/face/00000.png"]["parts"]  # doctest: +SKIP
        {'left_eye': [22, 47, 35, 54], ...}
    """
    path = Path(path)
    if not path.is_file():
        raise ZFNetError(f"annotation file {path} does not exist")
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as err:
        raise ZFNetError(f"{path} is not readable JSON: {err}") from None
    images = raw.get("images") if isinstance(raw, dict) else None
    if not isinstance(images, dict):
        raise ZFNetError(f"{path} has no \"images\" mapping of image paths to their part boxes")
    out = {}
    for rel, entry in images.items():
        if not isinstance(entry, dict):
            raise ZFNetError(f"{path}: the entry of {rel!r} is not an object")
        parts = entry.get("parts") or {}
        boxes = {}
        for name, box in dict(parts).items():
            if not (isinstance(box, (list, tuple)) and len(box) == 4
                    and all(isinstance(v, (int, float)) for v in box)):
                raise ZFNetError(f"{path}: part {name!r} of {rel!r} is {box!r}, not [x0, y0, x1, y1]")
            boxes[str(name)] = [float(v) for v in box]
        box = entry.get("box")
        if box is not None and not (isinstance(box, (list, tuple)) and len(box) == 4):
            raise ZFNetError(f"{path}: the box of {rel!r} is {box!r}, not [x0, y0, x1, y1]")
        out[str(rel)] = {"parts": boxes, "box": [float(v) for v in box] if box is not None else None,
                         "label": entry.get("label")}
    return out
