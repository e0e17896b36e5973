"""The built-in synthetic data set: shapes on cluttered, textured backgrounds, made from a seed.

Each image holds one object of a known class at a random position, scale (radius 25-42% of the
image side), aspect (0.85-1.18), rotation and colour, with a random fill texture (solid, stripes,
dots, checks, noise, gradient) and sometimes an outline, on a textured background with 3-8
distractors (irregular blobs and strokes in the same colours and textures, never a class shape).
The class is carried by the shape alone: colours, textures, size and place are drawn independently
of it, so a linear classifier on raw pixels does poorly while a small convnet learns it well
(numbers in ``docs/synthetic.md``).

Ground truth comes with every image: the object's box and mask, and for the ``face`` class the boxes
of its named parts (``left_eye``, ``right_eye``, ``nose``, ``mouth``), which the correspondence
analysis of Zeiler & Fergus (2014, Sec. 5.1, Fig. 8) occludes in every image.

Two disjoint class sets exist, ``primary`` (with ``face``) and ``secondary`` (for transfer
experiments, as the paper's Caltech and PASCAL sets are for ImageNet). Both are sorted by name, so
a set's first ``K`` names are also the order in which an image-folder loader (sorted class folders)
numbers them.

Everything is a function of ``(seed, split, class, index)``: :func:`write_synthetic` draws image
``j`` of class ``c`` in split ``s`` from ``sample_rng(seed, f"{s}/{c}", j)``, so any image can be
made again alone, and a set with more classes or images contains the smaller one.
"""

from __future__ import annotations

import json
import math
import multiprocessing
import os
import shutil
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

from .._io import atomic_write_json, folder_lock, is_zfnet_internal, remove_temp_files, temp_path
from ..errors import ZFNetError
from ..progress import progress as _progress_bar

__all__ = [
    "PRIMARY_CLASSES", "SECONDARY_CLASSES", "CLASS_SETS", "PART_NAMES", "class_names",
    "SyntheticSample", "render_sample", "sample_rng", "SynthSummary", "write_synthetic", "written_files",
]

PRIMARY_CLASSES: tuple[str, ...] = (
    "arrow", "crescent", "cross", "face", "heart", "lshape", "ring", "square", "star", "triangle",
)
SECONDARY_CLASSES: tuple[str, ...] = (
    "bolt", "chevron", "frame", "hexagon", "hexagram", "hourglass", "keyhole", "semicircle",
    "target", "trefoil", "tshape", "ushape",
)
CLASS_SETS: dict[str, tuple[str, ...]] = {"primary": PRIMARY_CLASSES, "secondary": SECONDARY_CLASSES}

# Left and right as seen by the viewer: ``left_eye`` is the eye nearer the image's left edge.
PART_NAMES: tuple[str, ...] = ("left_eye", "right_eye", "nose", "mouth")

FORMAT = "zfnet-synthetic"
VERSION = 1
# While a set replaces another, the files of both: a folder killed then is still known as zfnet's.
PENDING = "zfnet-synthetic-pending.json"
MIN_SIZE = 32
MAX_SIZE = 1024  # the largest image side it draws: a bigger request is refused before anything is drawn

# Faces stay near upright so that "left eye" always names the same part; every other shape may
# take any rotation, since no class of a set is a rotation of another (no mirror images are drawn).
_MAX_ROTATION_DEG: dict[str, float] = {"face": 25.0}
_RADIUS = (0.25, 0.42)  # object radius as a fraction of the image side
_ASPECT = (0.85, 1.18)  # mild stretch: a square stays a square-ish quadrilateral
_SUPERSAMPLE = 4  # objects are drawn at 4x and box-filtered down: smooth edges, eyes visible at 64 px
_CLUTTER_SUPERSAMPLE = 2  # distractors are anti-aliased too, so edge quality does not mark the object
_MIN_CONTRAST = 0.35  # RGB distance (0-1 scale) between the object's mean colour and what is behind it
_POOL_MIN_IMAGES = 400  # fewer images than this are written in-process


# ----------------------------------------------------------------------------------------- shapes
# A shape is a list of (polygon, fill) layers drawn in order in canonical units (about the unit
# disc, y pointing down): fill 255 adds to the object, 0 cuts a hole. Parts are extra polygons
# drawn in a second colour on top of the object; only the face has them.

_Layers = list[tuple[np.ndarray, int]]
_Parts = dict[str, np.ndarray]


def _ellipse(cx: float, cy: float, rx: float, ry: float, n: int = 40,
             a0: float = 0.0, a1: float = 2 * math.pi) -> np.ndarray:
    t = np.linspace(a0, a1, n, endpoint=not math.isclose(a1 - a0, 2 * math.pi))
    return np.stack([cx + rx * np.cos(t), cy + ry * np.sin(t)], axis=1)


def _regular(k: int, r: float = 1.0) -> np.ndarray:
    t = -math.pi / 2 + 2 * math.pi * np.arange(k) / k
    return np.stack([r * np.cos(t), r * np.sin(t)], axis=1)


def _star(k: int, inner: float) -> np.ndarray:
    t = -math.pi / 2 + math.pi * np.arange(2 * k) / k
    r = np.where(np.arange(2 * k) % 2 == 0, 1.0, inner)
    return np.stack([r * np.cos(t), r * np.sin(t)], axis=1)


def _poly(*points: tuple[float, float]) -> np.ndarray:
    return np.asarray(points, dtype=np.float64)


def _arrow(rng: np.random.Generator) -> tuple[_Layers, _Parts]:
    w = rng.uniform(0.18, 0.26)
    return [(_poly((-1, -w), (0.1, -w), (0.1, -0.6), (1, 0), (0.1, 0.6), (0.1, w), (-1, w)), 255)], {}


def _crescent(rng: np.random.Generator) -> tuple[_Layers, _Parts]:
    off = rng.uniform(0.4, 0.55)
    return [(_ellipse(0, 0, 1, 1, 48), 255), (_ellipse(off, -0.1, 0.85, 0.85, 48), 0)], {}


def _cross(rng: np.random.Generator) -> tuple[_Layers, _Parts]:
    w = rng.uniform(0.24, 0.32)
    return [(_poly((-w, -1), (w, -1), (w, -w), (1, -w), (1, w), (w, w), (w, 1), (-w, 1), (-w, w),
                   (-1, w), (-1, -w), (-w, -w)), 255)], {}


def _face(rng: np.random.Generator) -> tuple[_Layers, _Parts]:
    def j(v: float) -> float:  # +-10% jitter of every feature's place and size
        return v * rng.uniform(0.9, 1.1)

    ex, ey, erx, ery = j(0.34), j(-0.24), j(0.15), j(0.10)
    nose_top, nose_bottom, nose_w = j(-0.04), j(0.24), j(0.12)
    mw, my, depth = j(0.34), j(0.50), j(0.15)
    t = np.linspace(math.pi, 0, 16)
    lower = np.stack([mw * np.cos(t), my + depth * np.sin(t)], axis=1)  # left to right, sagging
    upper = np.stack([0.9 * mw * np.cos(t[::-1]), my + 0.35 * depth * np.sin(t[::-1])], axis=1)
    parts = {
        "left_eye": _ellipse(-ex, ey, erx, ery, 20),
        "right_eye": _ellipse(ex, ey, erx, ery, 20),
        "nose": _poly((0, nose_top), (-nose_w, nose_bottom), (nose_w, nose_bottom)),
        "mouth": np.concatenate([lower, upper]),
    }
    return [(_ellipse(0, 0, 0.8, 1.0, 48), 255)], parts


def _heart(rng: np.random.Generator) -> tuple[_Layers, _Parts]:
    t = np.linspace(0, 2 * math.pi, 60, endpoint=False)
    x = 16 * np.sin(t) ** 3
    y = -(13 * np.cos(t) - 5 * np.cos(2 * t) - 2 * np.cos(3 * t) - np.cos(4 * t))
    return [(np.stack([x, y - 2.5], axis=1) / 16.5, 255)], {}


def _lshape(rng: np.random.Generator) -> tuple[_Layers, _Parts]:
    w = rng.uniform(0.45, 0.6)
    x = -0.7 + w
    return [(_poly((-0.7, -1), (x, -1), (x, 1 - w), (0.75, 1 - w), (0.75, 1), (-0.7, 1)), 255)], {}


def _ring(rng: np.random.Generator) -> tuple[_Layers, _Parts]:
    return [(_ellipse(0, 0, 1, 1, 48), 255), (_ellipse(0, 0, *[rng.uniform(0.45, 0.62)] * 2, 48), 0)], {}


def _square(rng: np.random.Generator) -> tuple[_Layers, _Parts]:
    return [(_poly((-0.72, -0.72), (0.72, -0.72), (0.72, 0.72), (-0.72, 0.72)), 255)], {}


def _star5(rng: np.random.Generator) -> tuple[_Layers, _Parts]:
    return [(_star(5, rng.uniform(0.38, 0.48)), 255)], {}


def _triangle(rng: np.random.Generator) -> tuple[_Layers, _Parts]:
    return [(_regular(3), 255)], {}


def _bolt(rng: np.random.Generator) -> tuple[_Layers, _Parts]:
    return [(_poly((0.25, -1), (-0.6, 0.15), (-0.05, 0.15), (-0.3, 1), (0.6, -0.2), (0.05, -0.2)), 255)], {}


def _chevron(rng: np.random.Generator) -> tuple[_Layers, _Parts]:
    x = rng.uniform(0.4, 0.55) - 0.75  # arm thickness
    return [(_poly((-0.75, -1), (x, -1), (0.75, 0), (x, 1), (-0.75, 1), (-x, 0)), 255)], {}


def _frame(rng: np.random.Generator) -> tuple[_Layers, _Parts]:
    h = rng.uniform(0.38, 0.48)
    outer = _poly((-0.8, -0.8), (0.8, -0.8), (0.8, 0.8), (-0.8, 0.8))
    return [(outer, 255), (outer * (h / 0.8), 0)], {}


def _hexagon(rng: np.random.Generator) -> tuple[_Layers, _Parts]:
    return [(_regular(6), 255)], {}


def _hexagram(rng: np.random.Generator) -> tuple[_Layers, _Parts]:
    return [(_star(6, rng.uniform(0.5, 0.58)), 255)], {}


def _hourglass(rng: np.random.Generator) -> tuple[_Layers, _Parts]:
    w = rng.uniform(0.1, 0.2)
    return [(_poly((-0.75, -1), (0.75, -1), (w, 0), (0.75, 1), (-0.75, 1), (-w, 0)), 255)], {}


def _keyhole(rng: np.random.Generator) -> tuple[_Layers, _Parts]:
    head = _ellipse(0, -0.45, 0.55, 0.55, 40)
    return [(head, 255), (_poly((-0.2, -0.3), (0.2, -0.3), (0.45, 1), (-0.45, 1)), 255)], {}


def _semicircle(rng: np.random.Generator) -> tuple[_Layers, _Parts]:
    return [(_ellipse(0, -0.4, 1, 1, 32, 0, math.pi), 255)], {}


def _target(rng: np.random.Generator) -> tuple[_Layers, _Parts]:
    return [(_ellipse(0, 0, 1, 1, 48), 255), (_ellipse(0, 0, 0.72, 0.72, 48), 0),
            (_ellipse(0, 0, 0.42, 0.42, 40), 255)], {}


def _trefoil(rng: np.random.Generator) -> tuple[_Layers, _Parts]:
    layers = [(_ellipse(0, 0, 0.35, 0.35, 24), 255)]
    for a in (-math.pi / 2, math.pi / 6, 5 * math.pi / 6):
        layers.append((_ellipse(0.5 * math.cos(a), 0.5 * math.sin(a), 0.48, 0.48, 36), 255))
    return layers, {}


def _tshape(rng: np.random.Generator) -> tuple[_Layers, _Parts]:
    w = rng.uniform(0.22, 0.3)
    bar, stem = [(-1, -0.95), (1, -0.95), (1, -0.45)], [(w, -0.45), (w, 1), (-w, 1), (-w, -0.45)]
    return [(_poly(*bar, *stem, (-1, -0.45)), 255)], {}


def _ushape(rng: np.random.Generator) -> tuple[_Layers, _Parts]:
    inner = rng.uniform(0.4, 0.5)
    outer_arc = _ellipse(0, 0.1, 0.9, 0.9, 24, math.pi, 0)  # left to right through the bottom (y down)
    inner_arc = _ellipse(0, 0.1, inner, inner, 16, 0, math.pi)
    outline = np.concatenate([[(-0.9, -0.9)], outer_arc, [(0.9, -0.9), (inner, -0.9)],
                              inner_arc, [(-inner, -0.9)]])
    return [(outline, 255)], {}


_SHAPES: dict[str, Callable[[np.random.Generator], tuple[_Layers, _Parts]]] = {
    "arrow": _arrow, "crescent": _crescent, "cross": _cross, "face": _face, "heart": _heart,
    "lshape": _lshape, "ring": _ring, "square": _square, "star": _star5, "triangle": _triangle,
    "bolt": _bolt, "chevron": _chevron, "frame": _frame, "hexagon": _hexagon, "hexagram": _hexagram,
    "hourglass": _hourglass, "keyhole": _keyhole, "semicircle": _semicircle, "target": _target,
    "trefoil": _trefoil, "tshape": _tshape, "ushape": _ushape,
}


# --------------------------------------------------------------------------------------- textures

@lru_cache(maxsize=8)
def _grid(size: int) -> tuple[np.ndarray, np.ndarray]:
    y, x = np.mgrid[0:size, 0:size].astype(np.float32)
    return x, y


def _colour(rng: np.random.Generator) -> np.ndarray:
    return rng.uniform(0.0, 1.0, 3).astype(np.float32)


_Window = tuple[slice, slice]
_WHOLE: _Window = (slice(None), slice(None))


def _weights(rng: np.random.Generator, size: int, kind: str, window: _Window = _WHOLE) -> np.ndarray:
    """A (size, size) float32 map in [0, 1] mixing a texture's two colours; only its ``window`` (rows, columns)
    is computed and returned, with the same values, and the same draws from ``rng``, as the whole map's."""
    xs, ys = _grid(size)
    x, y = xs[window], ys[window]
    a = rng.uniform(0, math.pi)
    u = x * math.cos(a) + y * math.sin(a)
    period = max(2.0, rng.uniform(3.0, 12.0) * size / 128)
    if kind == "stripes":
        return ((u / period + rng.uniform()) % 1.0 < rng.uniform(0.3, 0.7)).astype(np.float32)
    v = -x * math.sin(a) + y * math.cos(a)
    if kind == "dots":
        du = (u / period + rng.uniform()) % 1.0 - 0.5
        dv = (v / period + rng.uniform()) % 1.0 - 0.5
        return (du * du + dv * dv < rng.uniform(0.15, 0.4) ** 2).astype(np.float32)
    if kind == "checks":
        return ((np.floor(u / period) + np.floor(v / period)) % 2).astype(np.float32)
    if kind == "gradient":
        # The range is the whole map's: u is monotone in x and in y (rounding too), so its extremes lie at corners.
        whole = xs[[0, 0, -1, -1], [0, -1, 0, -1]] * math.cos(a) + ys[[0, 0, -1, -1], [0, -1, 0, -1]] * math.sin(a)
        return (u - whole.min()) / max(float(whole.max() - whole.min()), 1e-6)
    # "noise": smooth random field, a few cells across, upsampled bilinearly
    cells = int(rng.integers(3, 11))
    small = Image.fromarray((rng.uniform(0, 255, (cells, cells))).astype(np.uint8), "L")
    return np.asarray(small.resize((size, size), Image.BILINEAR), dtype=np.float32)[window] / 255.0


_KINDS = ("solid", "stripes", "dots", "checks", "noise", "gradient")


def _texture(rng: np.random.Generator, size: int, spread: float = 0.35, window: _Window = _WHOLE) -> np.ndarray:
    """A (size, size, 3) float32 texture of two colours ``spread`` apart (per channel, s.d.); only its ``window``
    (as in :func:`_weights`)."""
    c1 = _colour(rng)
    c2 = np.clip(c1 + rng.normal(0.0, spread, 3), 0.0, 1.0).astype(np.float32)
    kind = _KINDS[int(rng.integers(len(_KINDS)))]
    if kind == "solid":
        return np.broadcast_to(c1, (size, size, 3))[window].copy()
    w = _weights(rng, size, kind, window)[..., None]
    return c1 * (1.0 - w) + c2 * w


def _over(img: np.ndarray, paint: np.ndarray | float, alpha: np.ndarray) -> None:
    """Composite ``paint`` over ``img`` in place with a (size, size) alpha in [0, 1]."""
    a = alpha[..., None]
    img *= 1.0 - a
    img += a * paint


def _over_clutter(img: np.ndarray, rng: np.random.Generator, layer: Image.Image, factor: int) -> None:
    """Composite a random texture (:func:`_texture`) over ``img`` in place through ``layer`` box-filtered by ``factor``.

    Only the box where that alpha is not 0 is computed: elsewhere compositing leaves ``img`` as it is
    (``img * 1 + 0 * paint``, ``paint`` finite), so the result and the draws from ``rng`` are those of
    compositing the whole texture.
    """
    small = layer.reduce(factor)
    box = small.getbbox()
    window = (slice(box[1], box[3]), slice(box[0], box[2])) if box else (slice(0, 0), slice(0, 0))
    paint = _texture(rng, img.shape[0], window=window)
    if box:
        alpha = np.asarray(small.crop(box), dtype=np.float32) / 255.0
        _over(img[window], paint, alpha)


def _mean_under(img: np.ndarray, alpha: np.ndarray) -> np.ndarray:
    """The alpha-weighted mean colour of ``img``."""
    return (img * alpha[..., None]).sum(axis=(0, 1)) / max(float(alpha.sum()), 1e-6)


def _soft(layer: Image.Image, factor: int) -> np.ndarray:
    return np.asarray(layer.reduce(factor), dtype=np.float32) / 255.0


# ----------------------------------------------------------------------------------- backgrounds

def _background(rng: np.random.Generator, size: int) -> np.ndarray:
    img = _texture(rng, size, spread=0.2)
    shade = _weights(rng, size, "noise")[..., None]  # uneven lighting
    img *= 1.0 - rng.uniform(0.0, 0.4) * shade
    ss = _CLUTTER_SUPERSAMPLE
    for _ in range(int(rng.integers(3, 9))):
        layer = Image.new("L", (size * ss, size * ss))
        draw = ImageDraw.Draw(layer)
        cx, cy = rng.uniform(-0.1, 1.1, 2) * size * ss
        if rng.uniform() < 0.55:  # irregular blob: a smooth random radius around a centre
            r = rng.uniform(0.04, 0.16) * size * ss
            t = np.linspace(0, 2 * math.pi, 36, endpoint=False)
            wobble = sum(rng.uniform(0, 0.3) / k * np.cos(k * t + rng.uniform(0, 2 * math.pi))
                         for k in (2, 3, 5))
            stretch = rng.uniform(0.5, 1.0)
            rr = r * (1 + wobble)
            draw.polygon(list(zip(cx + rr * np.cos(t), cy + stretch * rr * np.sin(t), strict=True)), fill=255)
        else:  # stroke: a wandering thick line
            heading = rng.uniform(0, 2 * math.pi)
            pts = [(cx, cy)]
            for _ in range(int(rng.integers(3, 8))):
                heading += rng.normal(0, 0.8)
                step = rng.uniform(0.06, 0.18) * size * ss
                pts.append((pts[-1][0] + step * math.cos(heading), pts[-1][1] + step * math.sin(heading)))
            width = max(1, round(rng.uniform(0.012, 0.045) * size * ss))
            draw.line(pts, fill=255, width=width, joint="curve")
        _over_clutter(img, rng, layer, ss)
    return img


# ------------------------------------------------------------------------------------ rendering

@dataclass
class SyntheticSample:
    """One rendered image and its ground truth.

    Attributes:
        image: the RGB image, ``size`` x ``size``.
        label: the class index given to :func:`render_sample`.
        class_name: the class's name.
        box: ``(x0, y0, x1, y1)`` of the object in pixels, ``x1`` and ``y1`` exclusive: the tight box
            of ``mask``.
        mask: mode ``"L"`` image, 255 on the object (parts and outline included), 0 elsewhere.
        parts: part name -> ``(x0, y0, x1, y1)`` box (exclusive ends); empty unless the class has
            parts (only ``face``: :data:`PART_NAMES`, left and right as seen by the viewer).
    """

    image: Image.Image
    label: int
    class_name: str
    box: tuple[int, int, int, int]
    mask: Image.Image
    parts: dict[str, tuple[int, int, int, int]] = field(default_factory=dict)


def _check_size(size: int) -> None:
    if isinstance(size, bool) or not isinstance(size, (int, float)) or int(size) != size \
            or not MIN_SIZE <= size <= MAX_SIZE:
        raise ZFNetError(f"size must be an integer from {MIN_SIZE} to {MAX_SIZE} pixels, got {size!r}")


def render_sample(class_name: str, rng: np.random.Generator, size: int = 128,
                  label: int = 0) -> SyntheticSample:
    """Draw one object of ``class_name`` on a cluttered background.

    Args:
        class_name: a name from :data:`PRIMARY_CLASSES` or :data:`SECONDARY_CLASSES`.
        rng: the generator every random choice is drawn from; the same state gives the same sample.
        size: side of the square image in pixels, at least 32.
        label: the class index to store in the sample.

    Returns:
        A :class:`SyntheticSample` with the image, its box, mask and (for ``face``) part boxes.

    Example:
        >>> s = render_sample("face", sample_rng(0, "train/face", 0), size=64, label=3)
        >>> s.image.size, s.mask.mode, sorted(s.parts)
        ((64, 64), 'L', ['left_eye', 'mouth', 'nose', 'right_eye'])
    """
    if class_name not in _SHAPES:
        raise ZFNetError(f"unknown class {class_name!r}; known classes: {', '.join(sorted(_SHAPES))}")
    _check_size(size)
    size = int(size)
    img = _background(rng, size)

    layers, part_polys = _SHAPES[class_name](rng)
    radius = rng.uniform(*_RADIUS) * size
    aspect = math.exp(rng.uniform(math.log(_ASPECT[0]), math.log(_ASPECT[1])))
    max_rot = math.radians(_MAX_ROTATION_DEG.get(class_name, 180.0))
    theta = rng.uniform(-max_rot, max_rot)
    c, s = math.cos(theta), math.sin(theta)
    sx, sy = radius * math.sqrt(aspect), radius / math.sqrt(aspect)
    transform = np.array([[c * sx, -s * sy], [s * sx, c * sy]])  # rotate after stretching

    def place(p: np.ndarray) -> np.ndarray:
        return p @ transform.T

    outer = np.concatenate([place(p) for p, fill in layers if fill])
    lo, hi = outer.min(axis=0), outer.max(axis=0)
    margin = 1.0  # keep the whole object inside the image
    centre = np.array([rng.uniform(margin - lo[i], max(margin - lo[i], size - margin - hi[i]))
                       for i in (0, 1)])

    ss = _SUPERSAMPLE
    layer = Image.new("L", (size * ss, size * ss))
    draw = ImageDraw.Draw(layer)
    for poly, fill in layers:
        draw.polygon([tuple(q) for q in (place(poly) + centre) * ss], fill=fill)
    alpha = _soft(layer, ss)

    # Redraw the fill (at most 10 times) until it stands out from what lies behind the object; the
    # object may be lighter or darker than its surround, so brightness says nothing of the class.
    behind = _mean_under(img, alpha)
    fill_tex = _texture(rng, size, spread=0.2)
    fill_mean = _mean_under(fill_tex, alpha)
    for _ in range(10):
        if np.linalg.norm(fill_mean - behind) >= _MIN_CONTRAST:
            break
        fill_tex = _texture(rng, size, spread=0.2)
        fill_mean = _mean_under(fill_tex, alpha)
    _over(img, fill_tex, alpha)

    if rng.uniform() < 0.35:  # an outline, in any colour, on any class
        width = 3 if size < 96 else 5
        solid = Image.fromarray((alpha * 255).astype(np.uint8))
        eroded = np.asarray(solid.filter(ImageFilter.MinFilter(width)), dtype=np.float32) / 255.0
        _over(img, _colour(rng), np.clip(alpha - eroded, 0.0, 1.0))

    parts: dict[str, tuple[int, int, int, int]] = {}
    if part_polys:
        colour = _colour(rng)
        for _ in range(10):
            if np.linalg.norm(colour - fill_mean) >= _MIN_CONTRAST:
                break
            colour = _colour(rng)
        layer = Image.new("L", (size * ss, size * ss))
        draw = ImageDraw.Draw(layer)
        for name in PART_NAMES:
            pts = place(part_polys[name]) + centre
            draw.polygon([tuple(q) for q in pts * ss], fill=255)
            x0, y0 = np.floor(pts.min(axis=0)).astype(int)
            x1, y1 = np.ceil(pts.max(axis=0)).astype(int)
            parts[name] = (max(0, int(x0)), max(0, int(y0)), min(size, int(x1)), min(size, int(y1)))
        _over(img, colour, _soft(layer, ss))

    img += rng.normal(0.0, rng.uniform(0.0, 0.04), img.shape).astype(np.float32)
    image = Image.fromarray((np.clip(img, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8), "RGB")
    mask = Image.fromarray(np.where(alpha >= 0.5, 255, 0).astype(np.uint8), "L")
    bbox = mask.getbbox()
    box = tuple(int(v) for v in bbox) if bbox else (0, 0, 0, 0)
    return SyntheticSample(image=image, label=int(label), class_name=class_name, box=box, mask=mask,
                           parts=parts)


def sample_rng(seed: int, split: str, index: int) -> np.random.Generator:
    """The generator of one image, a pure function of ``(seed, split, index)``.

    :func:`write_synthetic` passes ``split=f"{split}/{class_name}"`` and the image's number within its
    class, so ``OUT/train/face/00007.png`` is ``render_sample("face", sample_rng(seed, "train/face", 7),
    size, label)``.

    Args:
        seed: the data set's seed, a non-negative integer.
        split: any string naming the stream (``"train/face"``, ``"val/ring"``).
        index: the image's number in that stream, non-negative.

    Returns:
        A fresh ``numpy.random.Generator``; different keys give independent streams.

    Example:
        >>> float(sample_rng(0, "train/face", 7).uniform()) == float(sample_rng(0, "train/face", 7).uniform())
        True
    """
    if int(seed) != seed or seed < 0:
        raise ZFNetError(f"seed must be a non-negative integer, got {seed!r}")
    if int(index) != index or index < 0:
        raise ZFNetError(f"index must be a non-negative integer, got {index!r}")
    key = [int(seed), int(index), *split.encode("utf-8")]
    return np.random.default_rng(np.random.SeedSequence(key))


# --------------------------------------------------------------------------------------- writing

def class_names(class_set: str = "primary", classes: int | None = None) -> list[str]:
    """The first ``classes`` names of a class set (all of them by default).

    Args:
        class_set: ``"primary"`` (with ``face``) or ``"secondary"`` (disjoint, for transfer).
        classes: how many names to take, from 1 to the size of the set.

    Returns:
        The names, in sorted order (which is the order of the labels).

    Example:
        >>> class_names("primary", 4)
        ['arrow', 'crescent', 'cross', 'face']
    """
    if class_set not in CLASS_SETS:
        raise ZFNetError(f"unknown class set {class_set!r}; valid sets: {', '.join(CLASS_SETS)}")
    names = CLASS_SETS[class_set]
    if classes is None:
        return list(names)
    if int(classes) != classes or not 1 <= classes <= len(names):
        raise ZFNetError(f"classes must be from 1 to {len(names)} for the {class_set} set, got {classes!r}")
    return list(names[: int(classes)])


@dataclass
class SynthSummary:
    """What :func:`write_synthetic` wrote.

    Attributes:
        root: the data set folder.
        classes: class names; label ``i`` is ``classes[i]``.
        counts: number of images per split (``{"train": ..., "val": ...}``).
    """

    root: Path
    classes: list[str]
    counts: dict[str, int]


def _render_job(job: tuple[str, str, str, int, int, int, int]) -> tuple[str, dict]:
    root, split, name, label, j, seed, size = job
    sample = render_sample(name, sample_rng(seed, f"{split}/{name}", j), size=size, label=label)
    rel = f"{split}/{name}/{j:05d}.png"
    mask_rel = f"masks/{rel}"
    # zlib's fastest level: a third less time than Pillow's default (6) for files about 8 % larger.
    sample.image.save(os.path.join(root, rel), format="PNG", compress_level=1)
    sample.mask.save(os.path.join(root, mask_rel), format="PNG", compress_level=1)
    entry = {"label": label, "class": name, "box": list(sample.box), "mask": mask_rel,
             "parts": {k: list(v) for k, v in sample.parts.items()}}
    return rel, entry


def _safe_rel(rel: object) -> str | None:
    """A manifest entry as a path inside the set (``train/a/00000.png``); None for anything else."""
    if not isinstance(rel, str) or not rel or "\\" in rel:
        return None
    parts = rel.split("/")
    if rel.startswith("/") or any(part in ("", ".", "..") for part in parts):
        return None
    return rel


def written_files(root: str | Path) -> set[str] | None:
    """The files zfnet's synthetic set wrote in ``root`` (paths relative to it); None: no synthetic set there.

    Read from ``annotations.json`` (its images and masks) and, for a set killed while replacing
    another, ``zfnet-synthetic-pending.json``. Entries that would leave ``root`` are ignored.
    """
    root = Path(root)
    files: set[str] = set()
    found = False
    for name in ("annotations.json", PENDING):
        try:
            data = json.loads((root / name).read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue
        if not isinstance(data, dict) or data.get("format") != FORMAT:
            continue
        found = True
        files.add(name)
        if name == PENDING:
            listed = data.get("files", [])
            listed = listed if isinstance(listed, list) else []
        else:
            images = data.get("images", {})
            images = images if isinstance(images, dict) else {}
            listed = [*images, *(e.get("mask") for e in images.values() if isinstance(e, dict))]
        files.update(rel for rel in map(_safe_rel, listed) if rel is not None)
    return files if found else None


def _files_in(root: Path) -> list[str]:
    """Every file below ``root`` (relative, '/'-separated), without zfnet's lock and temporary files."""
    found = []
    for folder, dirs, names in os.walk(root):
        here = Path(folder)
        if here == root:
            dirs[:] = [d for d in dirs if not is_zfnet_internal(d)]
            names = [n for n in names if not is_zfnet_internal(n)]
        found += [(here / n).relative_to(root).as_posix() for n in names]
    return sorted(found)


def _workers(n_images: int) -> int:
    if n_images < _POOL_MIN_IMAGES:
        return 1
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:
        cores = os.cpu_count() or 1
    return max(1, min(8, cores, n_images // 100))


def _check_out(out: Path, overwrite: bool) -> set[str]:
    """Refuse a folder that is not new, empty or (with ``overwrite``) a synthetic set; return what zfnet wrote there."""
    present = _files_in(out)
    if not present:
        return set()
    old = written_files(out)
    if old is None:
        raise ZFNetError(f"{out} is not empty and is not a zfnet synthetic data set (no {FORMAT} "
                         f"annotations.json); give a new or empty folder")
    if not overwrite:
        foreign = [rel for rel in present if rel not in old]
        added = f" and files zfnet did not write (e.g. {foreign[0]}), which it would keep" if foreign else ""
        raise ZFNetError(f"{out} already holds a synthetic data set{added}; pass --overwrite to replace the "
                         "set, or give a new folder")
    return old


def _render_all(staging: Path, jobs: list[tuple[str, str, str, int, int, int, int]], desc: str,
                progress: bool) -> dict[str, dict]:
    images: dict[str, dict] = {}
    workers = _workers(len(jobs))
    bar = _progress_bar(total=len(jobs), desc=desc, unit="img", enabled=progress)
    with bar:
        if workers > 1:
            # spawn: workers import only numpy and PIL, whatever threads the caller has started
            with multiprocessing.get_context("spawn").Pool(workers) as pool:
                for rel, entry in pool.imap(_render_job, jobs, chunksize=16):
                    images[rel] = entry
                    bar.update(1)
        else:
            for job in jobs:
                rel, entry = _render_job(job)
                images[rel] = entry
                bar.update(1)
    return images


def _move_into_place(staging: Path, out: Path, old: set[str], new: set[str], annotations: dict) -> None:
    """Replace the files of the old set (``old``) by the rendered ones; every other file stays.

    At every moment each file zfnet wrote is listed in ``annotations.json`` or in the pending list,
    so a kill leaves a folder still recognised as a synthetic set (without ``annotations.json`` until
    the end: a half-replaced set is never taken for a finished one).
    """
    atomic_write_json(out / PENDING, {"format": FORMAT, "files": sorted(old | new | {"annotations.json"})})
    (out / "annotations.json").unlink(missing_ok=True)
    for rel in sorted(new):
        target = out / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        os.replace(staging / rel, target)
    gone = old - new - {"annotations.json", PENDING}
    for rel in sorted(gone):
        target = out / rel
        if target.is_file() or target.is_symlink():
            target.unlink()
    # The folders that held only removed files (a class no longer in the set); never one with a user's file.
    for folder in sorted({p for rel in gone for p in (out / rel).parents if p != out and out in p.parents},
                         key=lambda p: len(p.parts), reverse=True):
        try:
            folder.rmdir()
        except OSError:
            pass
    atomic_write_json(out / "annotations.json", annotations)
    (out / PENDING).unlink()


def write_synthetic(out: str | Path, *, classes: int = 10, per_class: int = 100,
                    val_per_class: int | None = None, seed: int = 0, size: int = 128,
                    class_set: str = "primary", progress: bool = True, overwrite: bool = False) -> SynthSummary:
    """Write the synthetic data set as an image-folder tree with masks and ``annotations.json``.

    Layout: ``OUT/{train,val}/<class>/<00000>.png``, masks at ``OUT/masks/<split>/<class>/<name>.png``
    and ``OUT/annotations.json`` (format in ``docs/synthetic.md``), which also lists every file the set
    wrote. The images are rendered in a hidden folder inside ``OUT`` and moved into place at the end,
    so an interrupted run leaves the old set. The same arguments give byte-identical files. ``OUT`` is
    locked (:func:`zfnet._io.folder_lock`) while it is written.

    Args:
        out: the folder to write: new or empty, or with ``overwrite`` an earlier synthetic set.
        overwrite: replace the synthetic set in ``out``: the files it wrote are replaced or removed,
            files a user added stay (one whose name the new set would take is refused).
        classes: how many classes of the set to use (its first ``classes`` names).
        per_class: training images per class, at least 1.
        val_per_class: validation images per class (0 for none); ``max(1, per_class // 5)`` by default.
        seed: non-negative seed; every image is a function of it (see :func:`sample_rng`).
        size: image side in pixels, at least 32.
        class_set: ``"primary"`` or ``"secondary"``.
        progress: show a progress bar on a terminal.

    Returns:
        A :class:`SynthSummary` with the folder, the class names and the image count per split.

    Raises:
        ZFNetError: a bad argument; ``out`` holds files and is not a synthetic set, or is one and
            ``overwrite`` is not given; a file a user added has a name the new set needs.
        FolderInUse: another process is writing ``out``.

    Example:
        >>> s = write_synthetic("/tmp/synth", classes=3, per_class=4, size=64, progress=False)
        >>> s.counts
        {'train': 12, 'val': 3}
    """
    names = class_names(class_set, classes)
    if int(per_class) != per_class or per_class < 1:
        raise ZFNetError(f"per_class must be a positive integer, got {per_class!r}")
    if val_per_class is None:
        val_per_class = max(1, int(per_class) // 5)
    if int(val_per_class) != val_per_class or val_per_class < 0:
        raise ZFNetError(f"val_per_class must be a non-negative integer, got {val_per_class!r}")
    if int(seed) != seed or seed < 0:
        raise ZFNetError(f"seed must be a non-negative integer, got {seed!r}")
    _check_size(size)
    per_class, val_per_class, seed, size = int(per_class), int(val_per_class), int(seed), int(size)

    out = Path(out).absolute()
    splits = {"train": per_class, "val": val_per_class}
    with folder_lock(out):
        old = _check_out(out, overwrite)
        jobs = [(split, name, label, j) for split, n in splits.items() for label, name in enumerate(names)
                for j in range(n)]
        new = {rel for split, name, _, j in jobs for rel in (f"{split}/{name}/{j:05d}.png",
                                                             f"masks/{split}/{name}/{j:05d}.png")}
        taken = sorted(rel for rel in new if rel not in old and os.path.lexists(out / rel))
        if taken:
            raise ZFNetError(f"{out / taken[0]} was not written by zfnet but the new set needs its name; "
                             "move it away first")
        remove_temp_files(out)  # a staging folder of a run that was killed
        staging = temp_path(out / "synth")
        try:
            for split, n in splits.items():
                for name in names if n else ():
                    (staging / split / name).mkdir(parents=True)
                    (staging / "masks" / split / name).mkdir(parents=True)
            images = _render_all(staging, [(str(staging), sp, nm, lb, j, seed, size) for sp, nm, lb, j in jobs],
                                 f"synth {out.name}", progress)
            annotations = {"format": FORMAT, "version": VERSION, "seed": seed, "size": size,
                           "class_set": class_set, "classes": names, "images": images}
            _move_into_place(staging, out, old, new, annotations)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
    return SynthSummary(root=out, classes=names, counts={k: v * len(names) for k, v in splits.items()})

