"""The one gate between the report and the files a results folder names: what it may read, copy and link.

A results folder is data, and data may be hostile: its JSON decides which files the report opens. Every
file the report reads (JSON, ``metrics.jsonl``) passes :func:`read_input`, and every figure it copies into
the site passes :func:`read_raster`, which reads through :func:`read_input` and then checks the bytes it
read (never the path again), so what is checked is what is copied. The rules:

- the file lies inside the results folder it was found in (the folder named on the command line), after
  resolving ``..``, absolute paths and symbolic links, and not inside the report's own output folder;
- it is a regular file (no device, FIFO or folder), of at most ``limit`` bytes (:data:`MAX_JSON_BYTES`,
  :data:`MAX_IMAGE_BYTES`), read with a bound, never whole without one;
- a figure has a raster image's name (``.png``, ``.jpg``, ``.jpeg``) and content: PNG or JPEG by its magic
  bytes, opened by Pillow as that format and verified, at most :data:`MAX_PIXELS` pixels. Nothing that can
  hold a script (SVG, HTML) is ever copied, so nothing the report links can run one;
- JSON is parsed with a nesting limit, and numbers that are not finite (``NaN``, ``Infinity``, ``1e999``)
  or integers beyond ±2**53 become ``null``, each named in one warning, so no later step meets them.

A file that breaks a rule raises :class:`Refused`, a :class:`~zfnet.errors.ZFNetError` whose message names
the file and the rule: one line at the command line, or, where the report can go on without the file, a
warning and the item left out.
"""

from __future__ import annotations

import io
import json
import logging
import math
import os
import stat
import struct
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from PIL import Image, UnidentifiedImageError

from ..errors import ZFNetError

__all__ = ["Refused", "Raster", "Notes", "read_input", "read_json", "parse_json", "read_raster", "inside",
           "printable", "MAX_JSON_BYTES", "MAX_IMAGE_BYTES", "MAX_PIXELS", "MAX_JSON_DEPTH", "RASTER_SUFFIXES"]

log = logging.getLogger("zfnet")

MAX_JSON_BYTES = 64 * 2**20
"""The largest JSON or ``metrics.jsonl`` file read (64 MiB); zfnet's own are at most a few MiB."""

MAX_IMAGE_BYTES = 32 * 2**20
"""The largest figure copied (32 MiB)."""

MAX_PIXELS = 8192 * 8192
"""The most pixels a copied figure may have (8192×8192, 64 megapixels): a browser decodes every one."""

MAX_JSON_DEPTH = 64
"""The deepest nesting of arrays and objects read; zfnet's files nest at most six deep."""

RASTER_SUFFIXES = {".png": "PNG", ".jpg": "JPEG", ".jpeg": "JPEG"}
_MAGIC = {"PNG": b"\x89PNG\r\n\x1a\n", "JPEG": b"\xff\xd8\xff"}
_EXTENSION = {"PNG": ".png", "JPEG": ".jpg"}
_MAX_EXACT_INT = 2**53  # the largest integer a float (and JavaScript) holds exactly


class Refused(ZFNetError):
    """A file the report will not read or copy; the message names it and the rule it breaks."""

    def __init__(self, message: str, rule: str) -> None:
        super().__init__(printable(message))
        self.rule = rule  # a few words for the page, without paths: "outside the results folder"


def printable(text: str, limit: int = 2000) -> str:
    """``text`` safe to print on a terminal: control characters (escape sequences) shown escaped, shortened."""
    text = "".join(c if c.isprintable() else repr(c)[1:-1] for c in str(text))
    return text if len(text) <= limit else f"{text[:limit]}…"


@dataclass(frozen=True)
class Raster:
    """A figure that passed every rule: its bytes (exactly those checked), format and size."""

    data: bytes
    extension: str  # ".png" or ".jpg", from the content
    width: int
    height: int


def inside(path: Path, folder: Path) -> bool:
    """Whether ``path`` is ``folder`` or lies below it (both already resolved)."""
    return path == folder or folder in path.parents


def read_input(path: Path, root: Path, *, limit: int, exclude: Path | None = None) -> bytes:
    """The bytes of a file a results folder names, if it may be read.

    Args:
        path: the file, as the results name it (relative parts, symbolic links and all).
        root: the results folder it was found in; the file must resolve inside it.
        limit: the most bytes read; a larger file is refused, and never read whole.
        exclude: a folder whose files are refused (the report's output).

    Returns:
        The file's content.

    Raises:
        Refused: missing, outside ``root`` (also through a symbolic link), inside ``exclude``, not a
            regular file, or larger than ``limit``.
    """
    try:
        resolved = Path(path).resolve(strict=True)
    except (OSError, RuntimeError, ValueError) as err:  # missing, a symlink loop, a NUL in the name
        raise Refused(f"{path} cannot be read ({_reason(err)})",
                      "missing" if isinstance(err, FileNotFoundError) else "unreadable") from None
    base = Path(root).resolve()
    if not inside(resolved, base):
        raise Refused(f"{path} lies outside the results folder {root}; only files inside it are read",
                      "outside the results folder")
    if exclude is not None and inside(resolved, Path(exclude).resolve()):
        raise Refused(f"{path} lies inside the report's output folder; it is not a result",
                      "inside the report's own folder")
    try:
        info = os.stat(resolved, follow_symlinks=False)
    except OSError as err:
        raise Refused(f"{path} cannot be read ({_reason(err)})", "unreadable") from None
    if not stat.S_ISREG(info.st_mode):
        raise Refused(f"{path} is not a regular file", "not a regular file")
    if info.st_size > limit:
        raise Refused(f"{path} is {info.st_size / 2**20:.0f} MiB, more than the {limit / 2**20:.0f} MiB the "
                      "report reads", "too large")
    # O_NOFOLLOW and O_NONBLOCK: a file swapped for a symlink or a FIFO since the checks above fails, not hangs
    flags = os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_BINARY", 0)
    try:
        fd = os.open(resolved, flags)
    except OSError as err:
        raise Refused(f"{path} cannot be read ({_reason(err)})", "unreadable") from None
    with os.fdopen(fd, "rb") as f:
        if not stat.S_ISREG(os.fstat(f.fileno()).st_mode):
            raise Refused(f"{path} is not a regular file", "not a regular file")
        data = f.read(limit + 1)
    if len(data) > limit:  # it grew since it was measured
        raise Refused(f"{path} is larger than the {limit / 2**20:.0f} MiB the report reads", "too large")
    return data


def _reason(err: BaseException) -> str:
    return err.strerror if isinstance(err, OSError) and err.strerror else str(err) or type(err).__name__


class Notes:
    """The values of one file left out (not finite, of the wrong type), reported in one warning."""

    def __init__(self, where: Path | str) -> None:
        self.where = str(where)
        self.items: list[str] = []

    def add(self, text: str) -> None:
        self.items.append(printable(text, 300))

    def warn(self) -> None:
        """Log what was left out, in one line, and forget it."""
        if self.items:
            shown = "; ".join(self.items[:3]) + (f"; and {len(self.items) - 3} more" if len(self.items) > 3 else "")
            log.warning("report: %s: left out %s", printable(self.where), shown)
            self.items.clear()


def parse_json(text: str | bytes, where: str, notes: Notes | None = None, *, at: str = "") -> Any:
    """JSON with bounded nesting, its non-finite numbers and unsafe integers replaced by ``None``.

    Args:
        text: the JSON.
        where: the file it came from, for the messages.
        notes: where to note the replaced numbers; by default they are logged at once, in one warning.
        at: a prefix for the notes (``"line 3 "`` of a JSON-lines file).

    Raises:
        Refused: not JSON, or nested deeper than :data:`MAX_JSON_DEPTH`.
    """
    try:
        data = json.loads(text)
    except RecursionError:  # nested deeper than the parser's stack
        raise Refused(f"{where} is nested more than {MAX_JSON_DEPTH} levels deep", "nested too deep") from None
    except (UnicodeDecodeError, ValueError) as err:
        raise Refused(f"{where} is not valid JSON ({err})", "not JSON") from None
    own = notes is None
    notes = Notes(where) if notes is None else notes
    # Walk without recursion: every container with its key path and depth.
    stack: list[tuple[Any, str, int]] = [(data, "", 0)]
    while stack:
        value, key, depth = stack.pop()
        if depth > MAX_JSON_DEPTH:
            raise Refused(f"{where} is nested more than {MAX_JSON_DEPTH} levels deep", "nested too deep")
        items = value.items() if isinstance(value, dict) else enumerate(value) if isinstance(value, list) else ()
        for k, v in items:
            path = f"{key}.{k}" if isinstance(k, str) else f"{key}[{k}]"
            if isinstance(v, (dict, list)):
                stack.append((v, path, depth + 1))
            elif _unsafe_number(v):
                notes.add(f"{at}{path.lstrip('.')} = {_short(v)} (not finite, or beyond ±2**53)")
                value[k] = None
    if own:
        notes.warn()
    return data


def _unsafe_number(value: Any) -> bool:
    if isinstance(value, float):
        return not math.isfinite(value)
    return isinstance(value, int) and not isinstance(value, bool) and abs(value) > _MAX_EXACT_INT


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 24 else f"{text[:12]}…({len(text)} digits)"


def read_json(path: Path, root: Path, *, exclude: Path | None = None, limit: int = MAX_JSON_BYTES) -> Any:
    """A JSON file of a results folder, read by :func:`read_input`'s rules and parsed by :func:`parse_json`.

    Raises:
        Refused: the file breaks a rule of :func:`read_input`, or is not JSON.
    """
    return parse_json(read_input(path, root, limit=limit, exclude=exclude), str(path))


def read_raster(path: Path, root: Path, *, exclude: Path | None = None) -> Raster:
    """A figure a results folder names, if it is a PNG or JPEG image that may be copied into the report.

    Args:
        path: the figure, as the results name it.
        root: the results folder it was found in.
        exclude: the report's output folder.

    Returns:
        The bytes read and checked, the extension its content calls for, and its size in pixels.

    Raises:
        Refused: any rule of :func:`read_input` (with :data:`MAX_IMAGE_BYTES`), a name that is not a raster
            image's, content that is not PNG or JPEG, an image Pillow cannot verify, or more than
            :data:`MAX_PIXELS` pixels.
    """
    suffix = Path(path).suffix.lower()
    if suffix not in RASTER_SUFFIXES:
        raise Refused(f"{path} is not a PNG or JPEG image (the report copies only {', '.join(RASTER_SUFFIXES)})",
                      "not a PNG or JPEG image")
    data = read_input(path, root, limit=MAX_IMAGE_BYTES, exclude=exclude)
    kind = next((k for k, magic in _MAGIC.items() if data.startswith(magic)), None)
    if kind is None:
        raise Refused(f"{path} is named like an image but its content is not PNG or JPEG", "not a PNG or JPEG image")
    if kind == "PNG" and len(data) >= 24 and data[12:16] == b"IHDR":  # the size, before Pillow allocates
        _check_pixels(path, *struct.unpack(">II", data[16:24]))
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)  # the limit is MAX_PIXELS, below
            with Image.open(io.BytesIO(data), formats=[kind]) as img:
                width, height = img.size
                _check_pixels(path, width, height)
                img.verify()  # every chunk's checksum (PNG), without decoding the pixels
    except Refused:
        raise
    except UnidentifiedImageError:
        raise Refused(f"{path} starts like a {kind} image but Pillow cannot read it", "a damaged image") from None
    except Image.DecompressionBombError:
        raise Refused(f"{path} declares more than {MAX_PIXELS:,} pixels (a decompression bomb)",
                      "too many pixels") from None
    except Exception as err:  # noqa: BLE001 - Pillow parsing untrusted bytes raises many kinds; all mean damaged
        raise Refused(f"{path} is not a readable {kind} image ({err or type(err).__name__})",
                      "a damaged image") from None
    return Raster(data, _EXTENSION[kind], width, height)


def _check_pixels(path: Path, width: int, height: int) -> None:
    if width <= 0 or height <= 0 or width * height > MAX_PIXELS:
        raise Refused(f"{path} is {width}×{height} pixels; the report copies images of at most {MAX_PIXELS:,} "
                      "pixels", "too many pixels")
