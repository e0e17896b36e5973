"""Image data sets on disk: image-folder trees and the ImageNet 2012 layout.

- ``folders``: ``ROOT/train/<class>/*`` and ``ROOT/val/<class>/*`` (what ``zfnet data synth`` writes).
- ``imagenet``: ``ROOT/train/<wnid>/*.JPEG``; ``ROOT/val/`` either in class folders, or flat with a
  labels file: lines ``<file name> <wnid>`` (``ROOT/val_labels.txt`` by default) or Kaggle's
  ``LOC_val_solution.csv`` (``ImageId,PredictionString``). ``LOC_synset_mapping.txt``, if present,
  gives the classes' readable names.

Files are read lazily, by the rules of :mod:`zfnet.data.images`. A file that cannot be read (empty,
truncated, not an image, a decompression bomb) never stops a run: it is skipped with a warning naming
it, and counted (:attr:`ImageFolder.bad_files`); so is an entry named like an image that is not a
regular file (a folder ``x.jpg``, a dangling link, a link loop, a FIFO), found when the folder is listed.

An empty class folder is refused when the classes come from the folders (a training split): it would
become an output class the model never sees. In a split whose classes are given (``val``, with the
training set's), a class may have no images; that is a warning.
"""

from __future__ import annotations

import csv
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch.utils.data import Dataset

from ..errors import DataError, ImageError
from .images import IMAGE_EXTENSIONS, scan_images
from .transforms import load_image

__all__ = [
    "IMAGE_EXTENSIONS", "ImageFolder", "Batch", "collate", "open_dataset", "LAYOUTS", "find_classes",
]

log = logging.getLogger("zfnet")

LAYOUTS = ("auto", "folders", "imagenet")


def _visible(path: Path) -> bool:
    return not path.name.startswith(".")


def find_classes(split_dir: Path) -> list[str]:
    """Sorted names of the class folders in ``split_dir``."""
    return sorted(p.name for p in split_dir.iterdir() if p.is_dir() and _visible(p))


@dataclass
class Batch:
    """A collated batch: uint8 images (B, 3, S, S), int64 labels (B,), and indices into the data set.

    ``bad`` lists ``(path, reason)`` of the files of this batch that could not be read (they are not
    in ``images``).
    """

    images: torch.Tensor
    labels: torch.Tensor
    indices: torch.Tensor
    bad: list[tuple[str, str]] = field(default_factory=list)

    def pin_memory(self) -> Batch:
        """The same batch with its images and labels in page-locked memory (a DataLoader with
        ``pin_memory=True`` calls it), so that copies to a GPU can be asynchronous."""
        return Batch(self.images.pin_memory(), self.labels.pin_memory(), self.indices, self.bad)


class ImageFolder(Dataset):
    """A list of (image file, label) with the paper's preprocessing to ``size`` x ``size`` uint8.

    Args:
        samples: (path, label) pairs.
        classes: class names; ``labels`` index into it.
        size: base size the images are resized and centre-cropped to.
        root: folder the paths are shown relative to in messages.

        skipped: ``(path, reason)`` of entries the listing found named like images but unusable (a
            folder ``x.jpg``, a dangling link, a FIFO): warned about here and counted in ``bad_files``.

    ``dataset[i]`` is ``(image (3, size, size) uint8 or None, label, index, problem)``; when the file
    cannot be read, ``image`` is ``None`` and ``problem`` is ``(path, reason)``, else ``problem`` is
    ``None``. Use :func:`collate` in a DataLoader.

    Attributes:
        bad_files: display path -> reason of every file skipped so far (the skipped-files report).
    """

    def __init__(self, samples: Sequence[tuple[Path, int]], classes: Sequence[str], size: int,
                 root: Path | None = None, class_names: Sequence[str] | None = None,
                 skipped: Sequence[tuple[Path | str, str]] = ()) -> None:
        self.samples = [(Path(p), int(y)) for p, y in samples]
        self.classes = list(classes)
        self.class_names = list(class_names) if class_names is not None else list(classes)
        self.size = int(size)
        self.root = root
        self.bad_files: dict[str, str] = {}
        self.skipped = [(self.display_path(Path(p)), reason) for p, reason in skipped]
        self.note_bad(self.skipped)

    def __len__(self) -> int:
        return len(self.samples)

    @property
    def targets(self) -> list[int]:
        return [y for _, y in self.samples]

    def display_path(self, path: Path) -> str:
        if self.root is not None:
            try:
                return str(path.relative_to(self.root))
            except ValueError:
                pass
        return str(path)

    def __getitem__(self, index: int):
        path, label = self.samples[index]
        try:
            return load_image(path, self.size), label, index, None
        except ImageError as err:
            return None, label, index, (self.display_path(path), err.reason)

    def note_bad(self, bad: Sequence[tuple[str, str]]) -> None:
        """Record and warn, once per file, about files that could not be read."""
        for path, reason in bad:
            if path not in self.bad_files:
                self.bad_files[path] = reason
                log.warning("skipped %s: it %s", path, reason)

    def with_size(self, size: int) -> ImageFolder:
        """The same samples preprocessed to another base size (the listing's skipped entries kept)."""
        out = ImageFolder(self.samples, self.classes, size, self.root, self.class_names)
        out.skipped = list(self.skipped)
        out.bad_files = dict(self.skipped)
        return out


def collate(items) -> Batch:
    """Collate ``ImageFolder`` items, leaving out the unreadable ones (listed in ``Batch.bad``)."""
    good = [it for it in items if it[0] is not None]
    bad = [problem for image, _, _, problem in items if image is None]
    if good:
        images = torch.stack([it[0] for it in good])
    else:
        images = torch.empty(0, 3, 0, 0, dtype=torch.uint8)
    labels = torch.tensor([it[1] for it in good], dtype=torch.long)
    indices = torch.tensor([it[2] for it in good], dtype=torch.long)
    return Batch(images, labels, indices, bad)


def _scan_class_folders(split_dir: Path, classes: Sequence[str], *, derived: bool
                        ) -> tuple[list[tuple[Path, int]], list[tuple[Path, str]]]:
    """The (image, label) samples of a split's class folders, and the entries skipped by the listing.

    ``derived``: the classes are the split's own folders, so an empty one is refused.
    """
    index = {c: i for i, c in enumerate(classes)}
    samples: list[tuple[Path, int]] = []
    skipped: list[tuple[Path, str]] = []
    present = find_classes(split_dir)
    extra = [c for c in present if c not in index]
    if extra:
        raise DataError(f"{split_dir} has class folders that the training set lacks: {', '.join(extra[:5])}")
    empty = []
    for name in classes:
        folder = split_dir / name
        if not folder.is_dir():
            log.warning("class %r has no folder in %s", name, split_dir)
            continue
        images, bad, ignored = scan_images(folder, recursive=True)
        for p in ignored:
            log.warning("ignored %s: not an image file extension", p.relative_to(split_dir.parent))
        skipped += bad
        if not images:
            shown = folder.relative_to(split_dir.parent)
            if derived:
                empty.append((shown, bad))
            else:
                log.warning("class folder %s holds no images", shown)
        samples.extend((p, index[name]) for p in images)
    if empty:
        shown, bad = empty[0]
        more = f" (and {len(empty) - 1} more)" if len(empty) > 1 else ""
        why = f" ({bad[0][0].name} {bad[0][1]})" if bad else ""
        raise DataError(f"class folder {shown} holds no images{why}{more}; it would be a class the model never "
                        "sees: add images or remove the folder")
    return samples, skipped


def _imagenet_val_labels(root: Path, labels_file: Path | None) -> dict[str, str]:
    candidates = [labels_file] if labels_file else [root / "val_labels.txt", root / "LOC_val_solution.csv"]
    for path in candidates:
        if path is None or not path.is_file():
            continue
        mapping: dict[str, str] = {}
        if path.suffix.lower() == ".csv":
            with path.open(newline="") as f:
                for row in csv.DictReader(f):
                    try:
                        mapping[row["ImageId"]] = row["PredictionString"].split()[0]
                    except (KeyError, IndexError) as err:
                        raise DataError(f"{path}: expected columns ImageId,PredictionString") from err
        else:
            for n, line in enumerate(path.read_text().splitlines(), 1):
                if not line.strip():
                    continue
                parts = line.split()
                if len(parts) < 2:
                    raise DataError(f"{path}:{n}: expected '<file name> <wnid>', got {line!r}")
                mapping[Path(parts[0]).stem] = parts[1]
        return mapping
    if labels_file:
        raise DataError(f"labels file {labels_file} does not exist")
    raise DataError(f"{root / 'val'} holds images but no class folders, and no labels file was found "
                    f"(looked for val_labels.txt and LOC_val_solution.csv in {root})")


def _detect_layout(root: Path) -> str:
    train = root / "train"
    if train.is_dir():
        classes = find_classes(train)
        if classes and all(c.startswith("n") and c[1:].isdigit() and len(c) == 9 for c in classes):
            return "imagenet"
    return "folders"


def open_dataset(root: str | Path, split: str, size: int, *, layout: str = "auto",
                 classes: Sequence[str] | None = None, labels_file: str | Path | None = None) -> ImageFolder:
    """Open one split of a data set on disk.

    Args:
        root: the data set's folder (holding ``train/`` and ``val/``).
        split: ``"train"`` or ``"val"`` (any folder name under ``root``).
        size: base size images are resized and centre-cropped to.
        layout: ``"folders"``, ``"imagenet"`` or ``"auto"`` (ImageNet when the train folders are wnids).
        classes: the class list to index labels by (the training set's, when opening ``val``);
            defaults to the class folders of ``split``, or of ``train`` for a flat ImageNet ``val``.
        labels_file: for a flat ImageNet ``val/``, the labels file (default: looked up in ``root``).

    Returns:
        An :class:`ImageFolder`.

    Raises:
        DataError: missing folders, no images, an unknown layout or a bad labels file.

    Example:
        >>> ds = open_dataset("data/synth", "train", size=128)  # doctest: +SKIP
        >>> image, label, index, problem = ds[0]
    """
    root = Path(root)
    if layout not in LAYOUTS:
        raise DataError(f"unknown layout {layout!r}; valid layouts: {', '.join(LAYOUTS)}")
    if not root.is_dir():
        raise DataError(f"data folder {root} does not exist")
    split_dir = root / split
    if not split_dir.is_dir():
        have = ", ".join(sorted(p.name for p in root.iterdir() if p.is_dir())) or "nothing"
        raise DataError(f"{root} has no {split!r} folder (it holds: {have})")
    if layout == "auto":
        layout = _detect_layout(root)

    derived = classes is None
    if classes is None:
        classes = find_classes(split_dir)
        if not classes and layout == "imagenet" and (root / "train").is_dir():
            classes = find_classes(root / "train")
    classes = list(classes)
    if not classes:
        raise DataError(f"{split_dir} has no class folders")

    if layout == "imagenet" and not find_classes(split_dir):
        mapping = _imagenet_val_labels(root, Path(labels_file) if labels_file else None)
        index = {c: i for i, c in enumerate(classes)}
        samples = []
        images, skipped, _ = scan_images(split_dir, recursive=False)
        for p in images:
            wnid = mapping.get(p.stem)
            if wnid is None:
                log.warning("no label for %s in the labels file; skipped", p.name)
                continue
            if wnid not in index:
                raise DataError(f"{p.name} is labelled {wnid!r}, which is not a training class")
            samples.append((p, index[wnid]))
    else:
        samples, skipped = _scan_class_folders(split_dir, classes, derived=derived)
    if not samples:
        raise DataError(f"no images found in {split_dir}")

    names = None
    mapping_file = root / "LOC_synset_mapping.txt"
    if layout == "imagenet" and mapping_file.is_file():
        readable = {}
        for line in mapping_file.read_text().splitlines():
            wnid, _, name = line.partition(" ")
            readable[wnid] = name.split(",")[0].strip() or wnid
        names = [readable.get(c, c) for c in classes]
    return ImageFolder(samples, classes, size, root=root, class_names=names, skipped=skipped)
