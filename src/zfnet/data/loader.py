"""Batches of preprocessed images for training and evaluation.

An :class:`ImageStream` serves uint8 (B, 3, S, S) batches of an :class:`~zfnet.data.ImageFolder`
in any order it is given. Small data sets (the synthetic one, Caltech) are decoded once into memory;
large ones (ImageNet) are decoded on the fly by DataLoader workers. Either way the order of the
batches is exactly the order of the indices, so a resumed run sees the same batches.

A stream that decodes on the fly keeps its workers between passes (one DataLoader whose batch
sampler is given each pass's batches; the sampler runs in this process), so an epoch does not pay for
starting them. Its loaders draw nothing from torch's global generator, so the training's random
numbers do not depend on how the images are loaded. The default worker count comes from the cores
free when the stream is made (:mod:`zfnet.cores`).
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence

import torch
from torch.utils.data import DataLoader, Sampler

from .. import cores
from ..progress import progress
from .folders import Batch, ImageFolder, collate

__all__ = ["ImageStream", "default_workers", "keeps_in_memory", "mean_image"]

log = logging.getLogger("zfnet")

CACHE_LIMIT_BYTES = 3 * 2**30


def default_workers(*, streaming: bool = True) -> int:
    """DataLoader workers by default, from the cores free now (:func:`zfnet.cores.plan_threads`).

    Args:
        streaming: the images are decoded while a model computes (half the free cores, at most 8),
            rather than once into memory before it does (every free core; none when only one is free).
    """
    return cores.plan_threads(streaming=streaming).workers


def keeps_in_memory(dataset: ImageFolder, cache: str) -> bool:
    """Whether an :class:`ImageStream` of ``dataset`` with this ``cache`` mode decodes it once into memory."""
    if cache not in ("auto", "memory", "none"):
        raise ValueError(f"unknown cache mode {cache!r}; valid: auto, memory, none")
    nbytes = len(dataset) * 3 * dataset.size**2
    return cache == "memory" or (cache == "auto" and nbytes <= CACHE_LIMIT_BYTES)


class _BatchList(Sampler[list[int]]):
    """A batch sampler whose batches are replaced before each pass of a DataLoader that keeps its workers.

    The sampler runs in the main process (the workers are sent indices), so a new list takes effect at
    the loader's next ``iter()``.
    """

    def __init__(self) -> None:
        self.batches: list[list[int]] = []

    def __iter__(self) -> Iterator[list[int]]:
        return iter(self.batches)

    def __len__(self) -> int:
        return len(self.batches)


class ImageStream:
    """Serve batches of a data set, from memory or decoded on the fly.

    Args:
        dataset: the images.
        workers: DataLoader worker processes for decoding (0: in this process).
        cache: ``"memory"`` decodes every image once and keeps it; ``"none"`` decodes on every
            pass; ``"auto"`` keeps them in memory when they take at most 3 GiB.
        show_progress: show a progress bar while filling the cache.
        pin_memory: batches decoded on the fly come in page-locked memory (with a CUDA GPU only), so
            that ``.to(device, non_blocking=True)`` overlaps the copy with computation.
    """

    def __init__(self, dataset: ImageFolder, *, workers: int | None = None, cache: str = "auto",
                 show_progress: bool = True, pin_memory: bool = False) -> None:
        self.cached = keeps_in_memory(dataset, cache)
        # Decoded batches in page-locked memory, for asynchronous copies to a GPU (where there is one).
        self.pin_memory = bool(pin_memory) and torch.cuda.is_available()
        self.dataset = dataset
        self.workers = default_workers(streaming=not self.cached) if workers is None else int(workers)
        # The loader kept between passes, its sampler, and whether a pass is using it now.
        self._kept: DataLoader | None = None
        self._batch_list = _BatchList()
        self._in_pass = False
        self.images: torch.Tensor | None = None
        self.valid: torch.Tensor | None = None
        self._filling = self.cached  # the cache's own fill is never pinned
        if self.cached:
            self._fill_cache(show_progress)
        self._filling = False

    def __len__(self) -> int:
        return len(self.dataset)

    def _loader(self, batch_sampler, *, persistent: bool = False) -> DataLoader:
        # Its own generator: a DataLoader seeds its workers from torch's global generator otherwise,
        # and a kept loader draws once where fresh ones draw every pass (dropout masks would then
        # depend on the epoch a run resumed at).
        return DataLoader(self.dataset, batch_sampler=batch_sampler, num_workers=self.workers,
                          collate_fn=collate, persistent_workers=persistent and self.workers > 0,
                          generator=torch.Generator(), pin_memory=self.pin_memory and not self._filling)

    def _pass(self, batch_indices: list[list[int]]) -> Iterator[Batch]:
        """Collated batches of ``batch_indices``, in order, through the loader kept between passes.

        A pass started while another is unfinished (two generators in turn) gets a loader of its own.
        A kept loader is reused only after a pass that ran to its end; one left early or by an error is
        dropped (and its workers with it).
        """
        if self._in_pass:
            yield from self._loader(batch_indices)
            return
        if self._kept is None:
            self._kept = self._loader(self._batch_list, persistent=True)
        self._batch_list.batches = batch_indices
        self._in_pass = True
        finished = False
        try:
            yield from self._kept
            finished = True
        finally:
            self._in_pass = False
            if not finished:
                self._kept = None

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
        for batch in self._pass(chunks):
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
        for batch in self._pass(chunks):
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
