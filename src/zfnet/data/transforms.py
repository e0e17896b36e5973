"""Image preprocessing of the paper (§3), with Pillow and torch only.

Every image is converted to 8-bit RGB, its smaller side resized to the *base size* and centre-cropped
to base x base (256 for a 224 crop; sizes scale with the model's input: ``base_size(112) == 128``).
The per-pixel mean image of the training set (computed once at base size, values 0-255) is subtracted;
training takes random input-size crops with horizontal flips, evaluation the centre crop or the ten
crops (4 corners + centre, and their mirror images), averaging the softmax outputs.

Batches stay uint8 (B, 3, base, base) until the crop, so loaders move a quarter of the bytes.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageFile

__all__ = [
    "base_size", "to_rgb", "load_image", "resize_center_crop", "pil_to_tensor",
    "random_crops", "center_crop", "ten_crops", "normalize",
]

# A truncated file must fail, not be padded with grey: it is reported and skipped.
ImageFile.LOAD_TRUNCATED_IMAGES = False


def base_size(input_size: int) -> int:
    """The side images are resized and centre-cropped to before cropping: 256/224 of the input.

    Example:
        >>> base_size(224), base_size(112), base_size(64)
        (256, 128, 73)
    """
    if input_size < 1:
        raise ValueError(f"input size must be positive, got {input_size}")
    return round(input_size * 256 / 224)


def to_rgb(img: Image.Image) -> Image.Image:
    """Convert any Pillow image to 8-bit RGB.

    Grayscale, CMYK and palette images are converted; transparency (RGBA, LA, palette with
    transparency) is composited onto white; 16-bit and 32-bit integer images (``I;16``, ``I``) are
    scaled from their full range to 0-255 rather than clipped; float images (``F``) are scaled by
    their maximum.
    """
    mode = img.mode
    if mode == "RGB":
        return img
    if mode.startswith("I;16") or mode in ("I", "F"):
        arr = np.asarray(img, dtype=np.float64)
        if mode.startswith("I;16"):
            top = 65535.0
        elif mode == "I":
            top = 65535.0 if arr.max(initial=0) > 255 else 255.0
        else:
            top = max(float(arr.max(initial=0)), 1e-12) if arr.max(initial=0) > 1 else 1.0
        arr = np.clip(arr / top * 255.0 + 0.5, 0, 255).astype(np.uint8)
        return Image.fromarray(arr, mode="L").convert("RGB")
    if mode == "P":
        img = img.convert("RGBA") if "transparency" in img.info else img.convert("RGB")
        mode = img.mode
    if mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        rgba = img.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    return img.convert("RGB")


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
    """Read an image file, convert it to RGB and return it resized and centre-cropped.

    Args:
        path: the file.
        size: the base size (see :func:`base_size`).

    Returns:
        uint8 tensor (3, size, size).

    Raises:
        OSError or ValueError: the file is empty, truncated or not an image.
    """
    with Image.open(path) as img:
        if img.format == "JPEG" and min(img.size) >= 2 * size:
            img.draft("RGB", (size, size))  # decode at reduced scale: much faster on large JPEGs
        img.load()
        return pil_to_tensor(resize_center_crop(to_rgb(img), size))


def normalize(batch: torch.Tensor, mean: torch.Tensor) -> torch.Tensor:
    """uint8 (B, 3, S, S) minus the mean image (3, S, S) -> float32 on the mean's device."""
    return batch.to(device=mean.device, dtype=torch.float32, non_blocking=True).sub_(mean)


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
