"""Image preprocessing of the paper (§3), with Pillow and torch only.

Every image is opened by :func:`~zfnet.data.images.open_image` (one set of rules for every command:
regular files only, no decompression bombs, EXIF orientation applied) as 8-bit RGB, its smaller side
resized to the *base size* and centre-cropped to base x base (256 for a 224 crop; sizes scale with the
model's input: ``base_size(112) == 128``). The per-pixel mean image of the training set (computed once
at base size, values 0-255) is subtracted. Evaluation takes the centre crop or the ten crops (4 corners
+ centre, and their mirror images), averaging the softmax outputs; training takes one of those ten
crops per image, drawn at random (the paper's §3, :func:`random_ten_crops`), or, as Krizhevsky et al.
did, a crop at any offset, mirrored half the time (:func:`random_crops`).

A :class:`Normalization` is how 0-255 pixels become a model's input, ``(pixels - mean) / std``: for
a zfnet run the mean image and no division, for a model trained elsewhere a per-channel mean and
standard deviation (ImageNet's, say). Every job preprocesses through one.

Batches stay uint8 (B, 3, base, base) until the crop, so loaders move a quarter of the bytes.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from .images import open_image, to_rgb

__all__ = [
    "base_size", "to_rgb", "load_image", "resize_center_crop", "pil_to_tensor",
    "TRAIN_CROPS", "training_crops", "random_crops", "random_ten_crops", "center_crop", "ten_crops",
    "normalize", "Normalization",
]


def base_size(input_size: int) -> int:
    """The side images are resized and centre-cropped to before cropping: 256/224 of the input.

    Example:
        >>> base_size(224), base_size(112), base_size(64)
        (256, 128, 73)
    """
    if input_size < 1:
        raise ValueError(f"input size must be positive, got {input_size}")
    return round(input_size * 256 / 224)


def resize_center_crop(img: Image.Image, size: int) -> Image.Image:
    """Resize the smaller side to ``size`` (bilinear, antialiased) and centre-crop ``size`` x ``size``."""
    w, h = img.size
    if w < 1 or h < 1:
        raise ValueError("image has no pixels")
    scale = size / min(w, h)
    nw, nh = max(size, round(w * scale)), max(size, round(h * scale))
    if (nw, nh) != (w, h):
        img = img.resize((nw, nh), Image.Resampling.BILINEAR)
    left, top = (nw - size) // 2, (nh - size) // 2
    return img.crop((left, top, left + size, top + size))


def pil_to_tensor(img: Image.Image) -> torch.Tensor:
    """An RGB Pillow image as a uint8 tensor (3, H, W)."""
    arr = np.asarray(img, dtype=np.uint8)
    return torch.from_numpy(arr.copy()).permute(2, 0, 1).contiguous()


def load_image(path: str | Path, size: int) -> torch.Tensor:
    """Read an image file by zfnet's rules (:func:`~zfnet.data.images.open_image`: regular files only,
    no decompression bombs, EXIF orientation applied, 8-bit RGB) and return it resized and centre-cropped.

    Args:
        path: the file.
        size: the base size (see :func:`base_size`).

    Returns:
        uint8 tensor (3, size, size).

    Raises:
        ImageError: the file is missing, not a regular file, empty, truncated, too large or not an image.
    """
    return pil_to_tensor(resize_center_crop(open_image(path, draft=size), size))


def normalize(batch: torch.Tensor, mean: torch.Tensor) -> torch.Tensor:
    """uint8 (B, 3, S, S) minus the mean image (3, S, S) -> float32 on the mean's device."""
    return batch.to(device=mean.device, dtype=torch.float32, non_blocking=True).sub_(mean)


@dataclass(frozen=True, eq=False)  # tensors: compared by identity
class Normalization:
    """How 0-255 pixels become a model's input: ``(pixels - mean) / std``.

    A zfnet run subtracts its training set's per-pixel mean image and divides by nothing (``std`` is
    None), so its inputs are exactly the paper's; a model trained elsewhere usually takes a
    per-channel mean and standard deviation on the 0-1 scale, as torchvision writes them
    (:meth:`per_channel`). Zero input is the mean: what occluders and padding fill with.

    Attributes:
        mean: (3, S, S) mean image at the base size, or (3, 1, 1) per channel; 0-255 scale.
        std: (3, 1, 1) per-channel divisor on the 0-255 scale, or None for no division.

    Example:
        >>> norm = Normalization.per_channel((0.485, 0.456, 0.406), (0.229, 0.224, 0.225), size=4)
        >>> x = norm(torch.full((1, 3, 4, 4), 255, dtype=torch.uint8))  # (1, 3, 4, 4) float32
        >>> round(float(x[0, 0, 0, 0]), 4), round(float(norm.invert(x)[0, 0, 0, 0]), 2)
        (2.2489, 255.0)
    """

    mean: torch.Tensor
    std: torch.Tensor | None = None

    @classmethod
    def per_channel(cls, mean: Sequence[float], std: Sequence[float], *, size: int) -> Normalization:
        """From per-channel ``mean`` and ``std`` on the 0-1 scale, with a (3, size, size) mean image.

        Raises:
            ValueError: not three finite numbers each, a mean outside [0, 1] or a std outside (0, 1].
        """
        m, s = _three(mean, "mean"), _three(std, "std")
        if any(not 0.0 <= v <= 1.0 for v in m):
            raise ValueError(f"the mean is on the 0-1 scale (as torchvision's), got {_show(m)}; "
                             "divide 0-255 values by 255")
        if any(not 0.0 < v <= 1.0 for v in s):
            raise ValueError(f"the std is on the 0-1 scale and positive, got {_show(s)}; "
                             "divide 0-255 values by 255")
        if isinstance(size, bool) or not isinstance(size, int) or size < 1:
            raise ValueError(f"size must be a positive int, got {size!r}")
        mean_image = (torch.tensor(m, dtype=torch.float32) * 255).view(3, 1, 1).expand(3, size, size).clone()
        return cls(mean_image, torch.tensor(s, dtype=torch.float32).mul(255).view(3, 1, 1))

    @property
    def size(self) -> int:
        """The side of the mean image (the base size for a per-pixel mean)."""
        return int(self.mean.shape[-1])

    def __call__(self, pixels: torch.Tensor) -> torch.Tensor:
        """Pixels (..., 3, S, S), 0-255, any dtype -> float32 model input on the pixels' device."""
        mean = self.mean.to(pixels.device, non_blocking=True)
        x = pixels.float().sub_(mean) if pixels.dtype != torch.float32 else pixels - mean
        if self.std is not None:
            x = x.div_(self.std.to(pixels.device, non_blocking=True))
        return x

    def invert(self, x: torch.Tensor) -> torch.Tensor:
        """Model input back to 0-255 pixels (float, unclipped): the inverse of calling it."""
        if self.std is not None:
            x = x * self.std.to(x.device)
        return x + self.mean.to(x.device)

    def center_crop(self, size: int) -> Normalization:
        """The same normalisation for centre crops of side ``size`` (the mean image cropped alike)."""
        return Normalization(center_crop(self.mean, size), self.std)

    def to(self, device: torch.device | str) -> Normalization:
        """The same normalisation with its tensors on ``device``."""
        return Normalization(self.mean.to(device), None if self.std is None else self.std.to(device))

    def describe(self) -> dict[str, object]:
        """A JSON-able description: ``{"mean": "image"}`` or per-channel ``mean`` and ``std`` on the 0-1 scale."""
        if self.std is None:
            return {"mean": "image", "std": None}
        channel = self.mean.reshape(3, -1)[:, 0] / 255
        return {"mean": [round(float(v), 6) for v in channel],
                "std": [round(float(v), 6) for v in self.std.flatten() / 255]}


def _three(values: Sequence[float], name: str) -> tuple[float, float, float]:
    try:
        out = tuple(float(v) for v in values)
    except (TypeError, ValueError):
        raise ValueError(f"the {name} takes three numbers (R, G, B), got {values!r}") from None
    if len(out) != 3 or not all(math.isfinite(v) for v in out):
        raise ValueError(f"the {name} takes three finite numbers (R, G, B), got {_show(out)}")
    return out  # type: ignore[return-value]


def _show(values: Sequence[float]) -> str:
    return ",".join(f"{v:g}" for v in values)


TRAIN_CROPS = ("ten", "random")
"""The training crops: the paper's ten (:func:`random_ten_crops`) or any offset (:func:`random_crops`)."""


def training_crops(batch: torch.Tensor, size: int, crops: str, *, generator: torch.Generator | None = None,
                   mean: torch.Tensor | None = None) -> torch.Tensor:
    """The training crop of each image: ``crops`` is ``"ten"`` (:func:`random_ten_crops`, the paper's)
    or ``"random"`` (:func:`random_crops`, with flips).

    Shape:
        (B, C, S, S) -> (B, C, size, size)
    """
    if crops == "ten":
        return random_ten_crops(batch, size, generator=generator, mean=mean)
    if crops == "random":
        return random_crops(batch, size, generator=generator, mean=mean)
    raise ValueError(f"unknown training crops {crops!r}; valid: {', '.join(TRAIN_CROPS)}")


def random_crops(batch: torch.Tensor, size: int, *, generator: torch.Generator | None = None,
                 flip: bool = True, mean: torch.Tensor | None = None) -> torch.Tensor:
    """A random ``size`` x ``size`` crop of each image, mirrored with probability 1/2.

    Args:
        batch: (B, C, S, S), any dtype, on any device.
        size: crop side, at most S.
        generator: CPU generator for the offsets and flips (for exact resumption).
        flip: mirror half of the crops horizontally.
        mean: optional mean image (C, S, S); when given, the result is float32 and the same
            crop of the mean is subtracted from each crop (cropping uint8 first moves 4x fewer bytes).

    Shape:
        (B, C, S, S) -> (B, C, size, size)
    """
    b, _, h, w = batch.shape
    if size > min(h, w):
        raise ValueError(f"crop {size} is larger than the images ({h}x{w})")
    ys = torch.randint(0, h - size + 1, (b,), generator=generator).tolist()
    xs = torch.randint(0, w - size + 1, (b,), generator=generator).tolist()
    flips = (torch.rand(b, generator=generator) < 0.5).tolist() if flip else [False] * b
    return _crops_at(batch, size, ys, xs, flips, mean)


def random_ten_crops(batch: torch.Tensor, size: int, *, generator: torch.Generator | None = None,
                     mean: torch.Tensor | None = None) -> torch.Tensor:
    """One of the paper's ten crops of each image, drawn uniformly: its training augmentation (§3).

    The ten are those of :func:`ten_crops`: the four corners and the centre, each as it is or
    mirrored; each image's crop is drawn independently, with probability 1/10 each.

    Args:
        batch: (B, C, S, S), any dtype, on any device.
        size: crop side, at most S.
        generator: CPU generator for the choice of crop (for exact resumption).
        mean: optional mean image (C, S, S), subtracted as in :func:`random_crops`.

    Shape:
        (B, C, S, S) -> (B, C, size, size)

    Example:
        >>> images = torch.arange(9.0).view(1, 1, 3, 3).expand(20, 1, 3, 3)
        >>> crops = random_ten_crops(images, 2, generator=torch.Generator().manual_seed(0))
        >>> all(any(torch.equal(c, t) for t in ten_crops(images[:1], 2)[0]) for c in crops)
        True
    """
    b, _, h, w = batch.shape
    if size > min(h, w):
        raise ValueError(f"crop {size} is larger than the images ({h}x{w})")
    # ten_crops' order: top-left, top-right, bottom-left, bottom-right, centre; then the five mirrored.
    offsets = [(0, 0), (0, w - size), (h - size, 0), (h - size, w - size), ((h - size) // 2, (w - size) // 2)]
    picks = torch.randint(0, 10, (b,), generator=generator).tolist()
    ys = [offsets[k % 5][0] for k in picks]
    xs = [offsets[k % 5][1] for k in picks]
    return _crops_at(batch, size, ys, xs, [k >= 5 for k in picks], mean)


def _crops_at(batch: torch.Tensor, size: int, ys: list[int], xs: list[int], flips: list[bool],
              mean: torch.Tensor | None) -> torch.Tensor:
    """Image i's crop at (ys[i], xs[i]), minus the same crop of ``mean`` if given, mirrored where flips[i]."""
    out = torch.stack([batch[i, :, y:y + size, x:x + size] for i, (y, x) in enumerate(zip(ys, xs))])
    if mean is not None:
        means = torch.stack([mean[:, y:y + size, x:x + size] for y, x in zip(ys, xs)])
        out = out.to(dtype=torch.float32).sub_(means)
    if any(flips):
        idx = torch.tensor([i for i, f in enumerate(flips) if f], device=batch.device)
        out[idx] = out[idx].flip(-1)
    return out


def center_crop(batch: torch.Tensor, size: int) -> torch.Tensor:
    """The centre ``size`` x ``size`` crop. Shape: (..., S, S) -> (..., size, size)."""
    h, w = batch.shape[-2:]
    if size > min(h, w):
        raise ValueError(f"crop {size} is larger than the images ({h}x{w})")
    top, left = (h - size) // 2, (w - size) // 2
    return batch[..., top:top + size, left:left + size]


def ten_crops(batch: torch.Tensor, size: int) -> torch.Tensor:
    """The paper's ten test crops: 4 corners and the centre, and their mirror images.

    Shape:
        (B, C, S, S) -> (B, 10, C, size, size), ordered top-left, top-right, bottom-left,
        bottom-right, centre, then the same five mirrored.
    """
    h, w = batch.shape[-2:]
    if size > min(h, w):
        raise ValueError(f"crop {size} is larger than the images ({h}x{w})")
    corners = [(0, 0), (0, w - size), (h - size, 0), (h - size, w - size)]
    crops = [batch[..., y:y + size, x:x + size] for y, x in corners] + [center_crop(batch, size)]
    crops += [c.flip(-1) for c in crops]
    return torch.stack(crops, dim=1)
