"""Small image-folder trees made on the fly, so no test needs a downloaded data set."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

SHAPES = ("disc", "bar", "cross", "ring", "wedge")


def draw(shape: str, rng: np.random.Generator, size: int = 48) -> Image.Image:
    """A bright ``shape`` on a dim noisy background, at a random position."""
    img = Image.fromarray(rng.integers(0, 90, (size, size, 3), dtype=np.uint8))
    d = ImageDraw.Draw(img)
    s = size // 2
    x, y = (int(v) for v in rng.integers(2, size - s - 2, 2))
    colour = tuple(int(v) for v in rng.integers(150, 256, 3))
    if shape == "disc":
        d.ellipse([x, y, x + s, y + s], fill=colour)
    elif shape == "bar":
        d.rectangle([x, y + s // 3, x + s, y + 2 * s // 3], fill=colour)
    elif shape == "cross":
        d.rectangle([x + s // 3, y, x + 2 * s // 3, y + s], fill=colour)
        d.rectangle([x, y + s // 3, x + s, y + 2 * s // 3], fill=colour)
    elif shape == "ring":
        d.ellipse([x, y, x + s, y + s], outline=colour, width=max(2, s // 6))
    else:
        d.polygon([(x, y + s), (x + s, y + s), (x + s // 2, y)], fill=colour)
    return img


def make_tree(root: Path, classes: int = 3, per_class: int = 8, val_per_class: int = 4, size: int = 48,
              seed: int = 0, ext: str = ".png") -> Path:
    """Write ``root/{train,val}/<shape>/NNN.png`` and return ``root``."""
    rng = np.random.default_rng(seed)
    for split, n in (("train", per_class), ("val", val_per_class)):
        for shape in SHAPES[:classes]:
            folder = root / split / shape
            folder.mkdir(parents=True, exist_ok=True)
            for i in range(n):
                draw(shape, rng, size).save(folder / f"{i:03d}{ext}")
    return root
