"""Batches of preprocessed images for training and evaluation.

An :class:`ImageStream` serves uint8 (B, 3, S, S) batches of an :class:`~zfnet.data.ImageFolder`
in any order it is given. Small data sets (the synthetic one, Caltech) are decoded once into memory;
large ones (ImageNet) are decoded on the fly by DataLoader workers. Either way the order of the
batches is exactly the order of the indices, so a resumed run sees the same batches.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator, Sequence

import torch
from torch.utils.data import DataLoader

from ..progress import progress
from .folders import Batch, ImageFolder, collate

__all__ = ["ImageStream", "default_workers", "mean_image"]

log = logging.getLogger("zfnet")

CACHE_LIMIT_BYTES = 3 * 2**30


def default_workers() -> int:
    """DataLoader workers by default: the cores this process may use, minus one, at most 8."""
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:
        cores = os.cpu_count() or 1
    return max(0, min(8, cores - 1))


class ImageStream:
    """Serve batches of a data set, from memory or decoded on the fly.

    Args:
        dataset: the images.
        workers: DataLoader worker processes for decoding (0: in this process).
        cache: ``"memory"`` decodes every image once and keeps it; ``"none"`` decodes on every
            pass; ``"auto"`` keeps them in memory when they take at most 3 GiB.
        show_progress: show a progress bar while filling the cache.
    """

    def __init__(self, dataset: ImageFolder, *, workers: int | None = None, cache: str = "auto",
                 show_progress: bool = True) -> None:
        if cache not in ("auto", "memory", "none"):
            raise ValueError(f"unknown cache mode {cache!r}; valid: auto, memory, none")
        self.dataset = dataset
        self.workers = default_workers() if workers is None else int(workers)
        nbytes = len(dataset) * 3 * dataset.size**2
        self.cached = cache == "memory" or (cache == "auto" and nbytes <= CACHE_LIMIT_BYTES)
        self.images: torch.Tensor | None = None
        self.valid: torch.Tensor | None = None
        if self.cached:
            self._fill_cache(show_progress)

    def __len__(self) -> int:
        return len(self.dataset)

    def _loader(self, batch_indices: Sequence[Sequence[int]]) -> DataLoader:
        return DataLoader(self.dataset, batch_sampler=batch_indices, num_workers=self.workers,
                          collate_fn=collate, persistent_workers=False)

    def _fill_cache(self, show_progress: bool) -> None:
        n, s = len(self.dataset), self.dataset.size
        self.images = torch.empty(n, 3, s, s, dtype=torch.uint8)
        self.valid = torch.zeros(n, dtype=torch.bool)
        chunks = [list(range(i, min(i + 64, n))) for i in range(0, n, 64)]
        bar = progress(total=n, desc="decoding images", unit="img", enabled=show_progress)
        with bar:
            for batch in self._loader(chunks):
                self.dataset.note_bad(batch.bad)
                if len(batch.indices):
                    self.images[batch.indices] = batch.images
                    self.valid[batch.indices] = True
                bar.update(len(batch.indices) + len(batch.bad))

    @property
    def bad_files(self) -> dict[str, str]:
        return self.dataset.bad_files

    def chunks(self, chunks: Sequence[Sequence[int]]) -> Iterator[Batch]:
        """One batch per chunk of data set indices, in that order, each without its unreadable files.

        Unlike :meth:`batches`, an unreadable image never moves another into a different batch: a
        chunk's images are always computed together, whichever process or resumed session reads it
        (so a sharded or resumed pass gives exactly the batches of an uninterrupted one). A chunk
        whose every file is unreadable yields an empty batch, so that each chunk yields one.
        """
        chunks = [list(c) for c in chunks]
        if self.cached:
            assert self.images is not None and self.valid is not None
            labels = torch.as_tensor(self.dataset.targets, dtype=torch.long)
            for chunk in chunks:
                part = torch.as_tensor(chunk, dtype=torch.long)
                part = part[self.valid[part]] if len(part) else part
                bad = [(path, self.dataset.bad_files.get(path, "could not be read"))
                       for path in (self.dataset.display_path(self.dataset.samples[i][0])
                                    for i in chunk if not bool(self.valid[i]))]
                yield Batch(self.images[part], labels[part], part, bad)
            return
        for batch in self._loader(chunks):
            self.dataset.note_bad(batch.bad)
            yield batch

    def batches(self, indices: Sequence[int], batch_size: int) -> Iterator[Batch]:
        """Batches of the images at ``indices``, in that order; unreadable files are left out."""
        indices = list(indices)
        if self.cached:
            assert self.images is not None and self.valid is not None
            idx = torch.as_tensor(indices, dtype=torch.long)
            idx = idx[self.valid[idx]] if len(idx) else idx
            labels = torch.as_tensor(self.dataset.targets, dtype=torch.long)
            for i in range(0, len(idx), batch_size):
                part = idx[i:i + batch_size]
                yield Batch(self.images[part], labels[part], part)
            return
        chunks = [indices[i:i + batch_size] for i in range(0, len(indices), batch_size)]
        for batch in self._loader(chunks):
            self.dataset.note_bad(batch.bad)
            if len(batch.indices):
                yield batch


def mean_image(stream: ImageStream, *, show_progress: bool = True) -> torch.Tensor:
    """The per-pixel mean (3, S, S) of all readable images of ``stream``, float32 in 0-255."""
    total = torch.zeros(3, stream.dataset.size, stream.dataset.size, dtype=torch.float64)
    count = 0
    bar = progress(total=len(stream), desc="mean image", unit="img", enabled=show_progress and not stream.cached)
    with bar:
        for batch in stream.batches(range(len(stream)), 256):
            total += batch.images.to(torch.float64).sum(0)
            count += len(batch.images)
            bar.update(len(batch.indices) + len(batch.bad))
    if count == 0:
        raise ValueError("no readable images to compute the mean image from")
    return (total / count).to(torch.float32)
