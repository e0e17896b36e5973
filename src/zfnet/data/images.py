"""Opening image files: the one path every command takes, with the same rules everywhere.

Training, evaluation, the feature searches, occlusion, correspondence, invariance and transfer all
read an image through :func:`open_image` (or :func:`~zfnet.data.transforms.load_image`, which calls
it), and list a folder's images with :func:`scan_images`. The rules:

- Only a regular file, or a symbolic link to one, is opened. A path that does not exist, a dangling
  link, a link loop, a directory (named ``x.jpg`` or not), a FIFO, a socket or a device is refused
  from the file system alone, before a byte is read (a FIFO would block a reader forever).
- An empty file, a file Pillow cannot identify, and a truncated or corrupt one (never padded with
  grey) are refused.
- A decompression bomb is refused from its header, before it is decoded: an image of more than
  :data:`MAX_IMAGE_PIXELS` pixels (Pillow's own default limit, about 9500 x 9500; the largest
  ImageNet photograph is far smaller).
- The EXIF orientation is applied (``PIL.ImageOps.exif_transpose``), so a photograph taken on its
  side is seen upright; :func:`image_size` is the size after it, which annotation boxes refer to.
- The result is 8-bit RGB (:func:`to_rgb`: transparency on white, 16-bit scaled, not clipped).

Each refusal is an :class:`~zfnet.errors.ImageError` with the path and a reason. A command given
one image (``--image``) stops with it as a one-line error (``image cat.jpg is a directory, not an
image file``); a data set skips the file, warns with its name and reason, and counts it in its
skipped-files report (:attr:`~zfnet.data.ImageFolder.bad_files`). Entries of a data set's folders
that are named like images but are not regular files (a folder ``x.jpg``, a dangling link, a FIFO)
are skipped and reported the same way, when the folder is listed.
"""

from __future__ import annotations

import errno
import os
import re
import stat
import warnings
from pathlib import Path

import numpy as np
from PIL import Image, ImageFile, ImageOps, UnidentifiedImageError

from ..errors import ImageError

__all__ = ["MAX_IMAGE_PIXELS", "IMAGE_EXTENSIONS", "image_problem", "open_image", "image_size", "scan_images",
           "to_rgb"]

MAX_IMAGE_PIXELS = 89_478_485
"""The most pixels (width x height) an image may have: Pillow's default decompression-bomb limit."""

IMAGE_EXTENSIONS = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm"})

# A truncated file must fail, not be padded with grey: it is reported and skipped.
ImageFile.LOAD_TRUNCATED_IMAGES = False

_ORIENTATION = 0x0112  # the EXIF tag; values 5-8 turn the image by a quarter
_DECODE_ERRORS = (OSError, ValueError, SyntaxError, EOFError, Image.DecompressionBombError)


def image_problem(path: str | Path) -> str | None:
    """Why ``path`` cannot be an image file, judged from the file system alone; None when it can.

    The reason reads after the path: ``"does not exist"``, ``"is a dangling symbolic link"``,
    ``"is a symbolic link loop"``, ``"is a directory, not an image file"``, ``"is a FIFO (named pipe),
    not a regular file"``, ``"is an empty file"``. Nothing is opened, so a FIFO does not block.
    """
    path = Path(path)
    try:
        st = os.stat(path)  # follows links
    except OSError as err:
        if err.errno == errno.ELOOP:
            return "is a symbolic link loop"
        if err.errno in (errno.ENOENT, errno.ENOTDIR):
            return "is a dangling symbolic link" if os.path.islink(path) else "does not exist"
        return f"cannot be read ({err.strerror or type(err).__name__})"
    mode = st.st_mode
    if stat.S_ISDIR(mode):
        return "is a directory, not an image file"
    if stat.S_ISFIFO(mode):
        return "is a FIFO (named pipe), not a regular file"
    if stat.S_ISSOCK(mode):
        return "is a socket, not a regular file"
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        return "is a device, not a regular file"
    if not stat.S_ISREG(mode):
        return "is not a regular file"
    if st.st_size == 0:
        return "is an empty file"
    return None


def _first_line(err: BaseException) -> str:
    text = str(err).strip()
    return text.splitlines()[0][:200] if text else type(err).__name__


def _open(path: Path) -> Image.Image:
    """The image's header, opened lazily, after the file-system and size checks."""
    problem = image_problem(path)
    if problem is not None:
        raise ImageError(path, problem)
    try:
        with warnings.catch_warnings():
            # The limit is MAX_IMAGE_PIXELS, checked below whatever Pillow's global setting.
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            img = Image.open(path)
    except Image.DecompressionBombError as err:  # Pillow's own check, at twice its limit
        found = re.search(r"\((\d+) pixels\)", str(err))
        count = f"{int(found.group(1)):,} pixels" if found else "more pixels"
        raise ImageError(path, _too_large(count)) from None
    except UnidentifiedImageError:
        raise ImageError(path, "is not an image zfnet can read (unknown or corrupt format)") from None
    except _DECODE_ERRORS as err:
        raise ImageError(path, f"cannot be read ({_first_line(err)})") from None
    w, h = img.size
    if w < 1 or h < 1:
        img.close()
        raise ImageError(path, "has no pixels")
    if w * h > MAX_IMAGE_PIXELS:
        img.close()
        raise ImageError(path, _too_large(f"{w}x{h} = {w * h:,} pixels"))
    return img


def _too_large(count: str) -> str:
    return f"has {count}, more than the {MAX_IMAGE_PIXELS:,} zfnet decodes (a decompression bomb?)"


def _orientation(img: Image.Image) -> int:
    try:
        return int(img.getexif().get(_ORIENTATION, 1))
    except Exception:  # a malformed EXIF block (Pillow raises many kinds): the image as stored
        return 1


def open_image(path: str | Path, *, draft: int | None = None) -> Image.Image:
    """Open an image file by zfnet's rules (see the module docstring): decoded, upright, 8-bit RGB.

    Args:
        path: the file.
        draft: the smallest side the caller needs; a large JPEG is decoded at a reduced scale no
            smaller than that (much faster).

    Returns:
        The decoded RGB image, detached from the file.

    Raises:
        ImageError: the path is not a regular non-empty file, not an image, truncated or corrupt, or
            larger than :data:`MAX_IMAGE_PIXELS`.

    Example:
        >>> img = open_image("photo.jpg")  # doctest: +SKIP
        >>> img.mode
        'RGB'
    """
    path = Path(path)
    with _open(path) as img:
        try:
            if draft is not None and img.format == "JPEG" and min(img.size) >= 2 * draft:
                img.draft("RGB", (draft, draft))
            img.load()
            upright = img
            if _orientation(img) != 1:
                try:
                    upright = ImageOps.exif_transpose(img)
                except Exception:  # a malformed EXIF block (Pillow raises many kinds): the image as stored
                    upright = img
            rgb = to_rgb(upright)
        except _DECODE_ERRORS as err:
            raise ImageError(path, f"is truncated or corrupt ({_first_line(err)})") from None
        return rgb.copy() if rgb is img else rgb  # detached from the file, which closes here


def image_size(path: str | Path) -> tuple[int, int]:
    """``(width, height)`` of an image file as :func:`open_image` returns it (EXIF orientation applied),
    read from its header, by the same rules.

    Raises:
        ImageError: as :func:`open_image`, for what its header shows.
    """
    with _open(Path(path)) as img:
        w, h = img.size
        return (h, w) if _orientation(img) in (5, 6, 7, 8) else (w, h)


def scan_images(folder: str | Path, *, recursive: bool = True) -> tuple[list[Path], list[tuple[Path, str]], list[Path]]:
    """The image files of a folder, by the rules of :func:`image_problem`.

    Hidden entries (``.name``) are left out; sub-folders are searched when ``recursive``, but links to
    folders are not followed (no link loop can trap the search).

    Returns:
        ``(images, skipped, ignored)``, each sorted: regular non-empty files named like images; entries
        named like images that are not (``(path, reason)``: a folder ``x.jpg``, a dangling link, a link
        loop, a FIFO, an empty file, an unlistable sub-folder); and regular files with other extensions.
    """
    folder = Path(folder)
    images: list[Path] = []
    skipped: list[tuple[Path, str]] = []
    ignored: list[Path] = []

    def unlistable(err: OSError) -> None:
        skipped.append((Path(err.filename or folder), f"cannot be listed ({err.strerror or type(err).__name__})"))

    walk = os.walk(folder, onerror=unlistable, followlinks=False)
    for top, dirs, files in walk:
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        for name in [*dirs, *files]:
            if name.startswith("."):
                continue
            path = Path(top) / name
            if path.suffix.lower() in IMAGE_EXTENSIONS:
                problem = image_problem(path)
                if problem is None:
                    images.append(path)
                else:
                    skipped.append((path, problem))
            elif name in files and os.path.isfile(path):
                ignored.append(path)
        if not recursive:
            break
    return sorted(images), sorted(skipped), sorted(ignored)


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
