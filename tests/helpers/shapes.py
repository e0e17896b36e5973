"""Plain shapes a small network learns in a few epochs: the pretraining and transfer sets of the tests.

The miniature of the paper's §5.2 needs a network that has learned something. On the built-in
synthetic data set (shapes on cluttered, textured backgrounds) the CPU-size networks sit at chance for
about a thousand SGD steps before they learn (docs/results.md), and zfnet-tiny stays at chance for the
few hundred steps a test can afford, with the paper's initialisation, He's, or Adam. The tests
therefore pretrain on plain shapes: one filled or hollow polygon of a random colour, size, place and
rotation on dark noise, which zfnet-tiny learns within a few epochs with the paper's recipe. The same
experiment on the synthetic data set, with the demo's network, is measured in docs/transfer.md.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

IMAGE_SIZE = 73  # the base size of zfnet-tiny's 64 px crops


def _square(r: float) -> np.ndarray:
    return np.array([[-r, -r], [r, -r], [r, r], [-r, r]])


def _circle(r: float, n: int = 24) -> np.ndarray:
    t = np.linspace(0, 2 * np.pi, n, endpoint=False)
    return np.stack([r * np.cos(t), r * np.sin(t)], 1)


def _star() -> np.ndarray:
    k = np.arange(10)
    r, a = np.where(k % 2 == 0, 1.0, 0.4), -np.pi / 2 + np.pi * k / 5
    return np.stack([r * np.cos(a), r * np.sin(a)], 1)


def _semicircle() -> np.ndarray:
    t = np.linspace(0, np.pi, 16)
    return np.stack([np.cos(t), 0.4 - np.sin(t)], 1)


_W = 0.3
# name -> (outer polygons, holes), about the unit disc.
SHAPES: dict[str, tuple[list[np.ndarray], list[np.ndarray]]] = {
    "disc": ([_circle(1.0)], []),
    "ring": ([_circle(1.0)], [_circle(0.55)]),
    "triangle": ([np.array([[0, -1], [0.87, 0.5], [-0.87, 0.5]])], []),
    "square": ([_square(0.8)], []),
    "frame": ([_square(0.8)], [_square(0.45)]),
    "cross": ([np.array([[-_W, -1], [_W, -1], [_W, -_W], [1, -_W], [1, _W], [_W, _W], [_W, 1], [-_W, 1],
                         [-_W, _W], [-1, _W], [-1, -_W], [-_W, -_W]])], []),
    "bar": ([np.array([[-1, -0.3], [1, -0.3], [1, 0.3], [-1, 0.3]])], []),
    "star": ([_star()], []),
    "lshape": ([np.array([[-0.8, -1], [-0.3, -1], [-0.3, 0.5], [0.8, 0.5], [0.8, 1], [-0.8, 1]])], []),
    "tshape": ([np.array([[-1, -1], [1, -1], [1, -0.5], [0.25, -0.5], [0.25, 1], [-0.25, 1], [-0.25, -0.5],
                          [-1, -0.5]])], []),
    "semicircle": ([_semicircle()], []),
    "hourglass": ([np.array([[-0.8, -1], [0.8, -1], [0, 0], [0.8, 1], [-0.8, 1], [0, 0]])], []),
}
# Each set mixes compact, hollow, elongated and angular shapes, so that the parts and shapes learnt on one
# are met again, in other combinations, in the other (as ImageNet's are in Caltech's).
PRETRAIN_SHAPES = ("disc", "frame", "triangle", "cross", "bar", "lshape")
TRANSFER_SHAPES = ("ring", "square", "star", "tshape", "semicircle", "hourglass")


def draw_shape(name: str, rng: np.random.Generator, size: int = IMAGE_SIZE) -> Image.Image:
    """``name`` in a random colour, radius 22-35% of the side, place and rotation, on dark noise."""
    img = Image.fromarray(rng.integers(0, 100, (size, size, 3), dtype=np.uint8))
    d = ImageDraw.Draw(img)
    outer, holes = SHAPES[name]
    r = rng.uniform(0.22, 0.35) * size
    theta = rng.uniform(0, 2 * np.pi)
    rot = np.array([[np.cos(theta), np.sin(theta)], [-np.sin(theta), np.cos(theta)]])
    centre = rng.uniform(r + 2, size - r - 2, 2)

    def place(p: np.ndarray) -> list[tuple[float, float]]:
        return [(float(x), float(y)) for x, y in p @ rot * r + centre]

    for p in outer:
        d.polygon(place(p), fill=tuple(int(v) for v in rng.integers(140, 256, 3)))
    for p in holes:
        d.polygon(place(p), fill=tuple(int(v) for v in rng.integers(0, 100, 3)))
    return img


def write_shapes(root: Path, shapes: tuple[str, ...], per_class: int, val_per_class: int, seed: int) -> Path:
    """An image-folder tree ``root/{train,val}/<shape>/NNN.png``."""
    rng = np.random.default_rng(seed)
    for split, n in (("train", per_class), ("val", val_per_class)):
        for name in shapes:
            folder = root / split / name
            folder.mkdir(parents=True, exist_ok=True)
            for i in range(n):
                draw_shape(name, rng).save(folder / f"{i:03d}.png")
    return root
