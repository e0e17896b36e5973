"""Passes over a data set that run on several processes and survive a ``kill -9``.

A scan reads a list of data set indices in fixed chunks (:func:`plan_chunks`): chunk ``c`` is always
the same images, computed together, whichever process reads it and whether or not the pass was
interrupted, so every result below is the same as one uninterrupted single-process pass's.

- **Sharding.** Under ``torchrun`` rank ``r`` of ``W`` takes chunks ``r, r + W, r + 2W, ...``
  (:func:`rank_chunks`): disjoint, deterministic, balanced within one chunk.
- **Accumulators.** What a pass computes lives in objects with ``state() -> {name: tensor}`` and
  ``load_state(state)``; the ranks' states are gathered with ``torch.distributed`` collectives
  (:func:`gather_states`, NCCL on GPUs, gloo on CPUs) and combined by the accumulator's own pure
  ``combine`` (a running top-k is re-ranked, rows are put back in the pass's order, sums added).
  :class:`Rows` and :class:`Sums` are the two generic ones.
- **Resuming.** :meth:`Scan.run` saves each rank's accumulator states and how many of its chunks are
  done, atomically, every ``save_every`` seconds (``ZFNET_SCAN_SAVE_SECONDS``, default 120), in
  ``.zfnet-state-<name>.rank<r>.safetensors`` inside the output folder. Running the same command
  into the same folder continues from there; a file saved by another command, another data set,
  model, option or number of processes is ignored (with a warning) and the scan starts over. The
  state files are tensors and JSON only (safetensors): nothing in them is executed.
- **A rank that dies** makes the others' collectives fail after at most the process group's timeout
  (``ZFNET_DIST_TIMEOUT`` seconds, see :mod:`zfnet.distributed`) with a one-line error.

Example:
    >>> from zfnet.scan import Scan, Sums, plan_chunks
    >>> chunks = plan_chunks(range(10), 4)
    >>> chunks
    [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9]]
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any, Protocol

import torch
import torch.distributed as dist
from safetensors import SafetensorError, safe_open
from safetensors.torch import save as safetensors_bytes

from ._io import STATE_PREFIX, atomic_write
from ._validate import env_seconds
from .data.folders import Batch
from .data.loader import ImageStream
from .distributed import DistContext
from .errors import ZFNetError
from .progress import progress

__all__ = ["plan_chunks", "rank_chunks", "Accumulator", "Rows", "Sums", "Scan", "gather_states",
           "gather_tensor", "save_every_default", "CollectiveError", "model_fingerprint"]

log = logging.getLogger("zfnet")

STATE_FORMAT = "zfnet-scan-state-1"


class CollectiveError(ZFNetError):
    """Another process of a ``torchrun`` job stopped, or did not answer within the timeout."""


def save_every_default() -> float:
    """Seconds between two saves of a scan's state: ``ZFNET_SCAN_SAVE_SECONDS``, else 120."""
    return env_seconds("ZFNET_SCAN_SAVE_SECONDS", 120, zero=True)


def model_fingerprint(model: torch.nn.Module | torch.Tensor) -> str:
    """A digest of a model's parameters and buffers (names, shapes, dtypes, values), or of one tensor.

    Part of a scan's fingerprint, so that a state saved with other weights is never continued.
    """
    digest = hashlib.blake2b(digest_size=16)
    items = [("", model)] if isinstance(model, torch.Tensor) else list(model.state_dict().items())
    for name, t in items:
        t = t.detach()
        digest.update(f"{name}:{tuple(t.shape)}:{t.dtype};".encode())
        data = t.cpu().contiguous().reshape(-1)
        digest.update(data.view(torch.uint8).numpy().tobytes() if data.numel() else b"")
    return digest.hexdigest()


def _json_digest(value: Any) -> str:
    """A fingerprint's part that JSON cannot hold: a tensor by the digest of its values, else its text."""
    if isinstance(value, torch.Tensor):
        return model_fingerprint(value)
    return repr(value)


def plan_chunks(indices: Iterable[int], batch_size: int) -> list[list[int]]:
    """``indices`` cut into consecutive chunks of ``batch_size`` (the last may be shorter)."""
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive int, got {batch_size!r}")
    indices = [int(i) for i in indices]
    return [indices[i:i + batch_size] for i in range(0, len(indices), batch_size)]


def rank_chunks(n_chunks: int, rank: int, world_size: int) -> list[int]:
    """The chunk numbers rank ``rank`` of ``world_size`` reads: ``rank, rank + world_size, ...``."""
    if not 0 <= rank < world_size:
        raise ValueError(f"rank {rank} is not in [0, {world_size})")
    return list(range(rank, n_chunks, world_size))


class Accumulator(Protocol):
    """What a scan computes, as tensors that can be saved, gathered and combined."""

    def state(self) -> dict[str, torch.Tensor]:
        """The running state, as CPU tensors (saved, and gathered from every rank)."""

    def load_state(self, state: dict[str, torch.Tensor]) -> None:
        """Continue from a saved state; raise ``ValueError`` for one that does not fit."""

    def combine(self, states: Sequence[dict[str, torch.Tensor]]) -> None:
        """Become the combination of every rank's state (this rank's among them)."""


class Rows:
    """Per-image rows (model outputs, features, hits), put back in the pass's order when combined.

    :meth:`add` takes each image's position in the scan's index list and any number of named columns
    (first dimension: the images). After :meth:`combine` (or :meth:`result` in one process) the rows
    are sorted by position, so they are in the order one process reading the list front to back
    would have produced.
    """

    def __init__(self) -> None:
        self._parts: dict[str, list[torch.Tensor]] = {}

    def add(self, positions: torch.Tensor, **columns: torch.Tensor) -> None:
        n = len(positions)
        for name, column in columns.items():
            if len(column) != n:
                raise ValueError(f"column {name} has {len(column)} rows for {n} positions")
        self._parts.setdefault("position", []).append(positions.detach().to("cpu", torch.long))
        for name, column in columns.items():
            self._parts.setdefault(name, []).append(column.detach().cpu())

    def state(self) -> dict[str, torch.Tensor]:
        return {name: torch.cat(parts) for name, parts in self._parts.items()}

    def load_state(self, state: dict[str, torch.Tensor]) -> None:
        if state and "position" not in state:
            raise ValueError("rows without positions")
        if any(t.dim() == 0 for t in state.values()):
            raise ValueError("a column without rows")
        n = len(state.get("position", ()))
        if any(len(t) != n for t in state.values()):
            raise ValueError("columns of different lengths")
        self._parts = {name: [t] for name, t in state.items()}

    def combine(self, states: Sequence[dict[str, torch.Tensor]]) -> None:
        states = [s for s in states if s]
        if not states:
            self._parts = {}
            return
        merged = {name: torch.cat([s[name] for s in states]) for name in states[0]}
        order = torch.argsort(merged["position"], stable=True)
        self._parts = {name: [t[order]] for name, t in merged.items()}

    def result(self) -> dict[str, torch.Tensor]:
        """``{"position": (N,), column: (N, ...)}``, sorted by position (empty dict: no rows)."""
        state = self.state()
        if not state:
            return {}
        order = torch.argsort(state["position"], stable=True)
        return {name: t[order] for name, t in state.items()}


class Sums:
    """Named float64 totals (hits, counts, losses), added over the ranks."""

    def __init__(self, **totals: torch.Tensor | float) -> None:
        self.totals = {k: torch.as_tensor(v, dtype=torch.float64).clone() for k, v in totals.items()}

    def add(self, **values: torch.Tensor | float) -> None:
        for k, v in values.items():
            self.totals[k] = self.totals[k] + torch.as_tensor(v, dtype=torch.float64).cpu()

    def state(self) -> dict[str, torch.Tensor]:
        return dict(self.totals)

    def load_state(self, state: dict[str, torch.Tensor]) -> None:
        if set(state) != set(self.totals):
            raise ValueError(f"totals {sorted(state)} where {sorted(self.totals)} were expected")
        for k, v in state.items():
            if v.shape != self.totals[k].shape:
                raise ValueError(f"total {k} has shape {tuple(v.shape)}, not {tuple(self.totals[k].shape)}")
        self.totals = {k: v.to(torch.float64) for k, v in state.items()}

    def combine(self, states: Sequence[dict[str, torch.Tensor]]) -> None:
        self.totals = {k: sum((s[k].to(torch.float64) for s in states), torch.zeros_like(self.totals[k]))
                       for k in self.totals}


def _collective(what: str, call: Callable[[], Any]) -> Any:
    try:
        return call()
    except (RuntimeError, dist.DistError) as err:  # gloo: "Connection closed by peer", a timeout ...
        first = (str(err).strip().splitlines() or ["no message"])[0][:200]
        raise CollectiveError(f"{what} failed: another process of this torchrun job stopped or did not answer "
                              f"in time ({first})") from None


def gather_tensor(ctx: DistContext, t: torch.Tensor) -> list[torch.Tensor]:
    """Every rank's ``t`` (first dimensions may differ, the rest must agree), on the CPU, in rank order."""
    if not ctx.distributed:
        return [t.cpu()]
    dev = ctx.collective_device
    t = t.to(dev).contiguous()
    sizes = [torch.zeros(1, dtype=torch.long, device=dev) for _ in range(ctx.world_size)]
    _collective("gathering results", lambda: dist.all_gather(sizes, torch.tensor([len(t)], device=dev)))
    longest = max(int(s) for s in sizes)
    padded = torch.zeros((longest, *t.shape[1:]), dtype=t.dtype, device=dev)
    padded[:len(t)] = t
    out = [torch.empty_like(padded) for _ in range(ctx.world_size)]
    _collective("gathering results", lambda: dist.all_gather(out, padded))
    return [o[:int(n)].cpu() for o, n in zip(out, sizes)]


def gather_states(ctx: DistContext, state: dict[str, torch.Tensor]) -> list[dict[str, torch.Tensor]]:
    """Every rank's accumulator state, in rank order (one process: ``[state]``).

    Every rank must hold the same names, dtypes and trailing dimensions; an empty state (a rank
    that read no chunk) is allowed.
    """
    if not ctx.distributed:
        return [state]
    # The names, dtypes and shapes first (ranks that read nothing have none): a small JSON string.
    spec = {k: [str(v.dtype).removeprefix("torch."), list(v.shape[1:]) if v.dim() else None]
            for k, v in sorted(state.items())}
    specs: list[Any] = [None] * ctx.world_size
    _collective("gathering results", lambda: dist.all_gather_object(specs, json.dumps(spec)))
    known = next((json.loads(s) for s in specs if json.loads(s)), {})
    if any(json.loads(s) not in ({}, known) for s in specs):
        raise ZFNetError("the processes of this torchrun job computed different kinds of results; "
                         "were they started with the same command?")
    gathered: list[dict[str, torch.Tensor]] = [{} for _ in range(ctx.world_size)]
    for name, (dtype, tail) in known.items():
        mine = state.get(name)
        if mine is None:
            mine = torch.empty((0, *(tail or ())), dtype=getattr(torch, dtype))
        elif tail is None:  # a scalar travels as one row
            mine = mine.reshape(1)
        for rank, part in enumerate(gather_tensor(ctx, mine)):
            gathered[rank][name] = part.reshape(()) if tail is None and len(part) else part
    return [{} if specs[rank] == "{}" else g for rank, g in enumerate(gathered)]


class Scan:
    """One pass over a list of data set indices: sharded over ``torchrun`` ranks, saved as it goes.

    Args:
        indices: the images, in the pass's order (data set indices).
        batch_size: images per chunk (the model's batch).
        ctx: this process's place in the job (:func:`zfnet.distributed.setup`); default one process.
        state_dir: the folder the running state is saved in (the command's output folder); None: not saved.
        name: what is scanned, naming the state file (``top-activations``, ``evaluate`` ...).
        fingerprint: everything the result depends on besides the indices and the batch size (the model
            and its weights, the options): a saved state is used only when it matches exactly.
        save_every: seconds between saves (default :func:`save_every_default`).

    Example:
        >>> sums = Sums(images=0.0)  # doctest: +SKIP
        >>> Scan(range(len(stream)), 64).run(stream, lambda b, pos: sums.add(images=len(pos)), [sums])  # doctest: +SKIP
    """

    def __init__(self, indices: Iterable[int], batch_size: int, *, ctx: DistContext | None = None,
                 state_dir: str | Path | None = None, name: str = "scan", fingerprint: Any = None,
                 save_every: float | None = None) -> None:
        self.indices = [int(i) for i in indices]
        self.chunks = plan_chunks(self.indices, batch_size)
        self.ctx = ctx or DistContext()
        self.mine = rank_chunks(len(self.chunks), self.ctx.rank, self.ctx.world_size)
        self.save_every = save_every_default() if save_every is None else float(save_every)
        self.path = None if state_dir is None else \
            Path(state_dir) / f"{STATE_PREFIX}{name}.rank{self.ctx.rank}.safetensors"
        self.fingerprint = None  # only a pass that saves its state needs one (not every validation pass)
        if self.path is not None:
            digest = hashlib.sha256(json.dumps([STATE_FORMAT, name, batch_size, self.ctx.world_size, self.ctx.rank,
                                                fingerprint], sort_keys=True, default=_json_digest).encode())
            digest.update(torch.tensor(self.indices, dtype=torch.long).numpy().tobytes())
            self.fingerprint = digest.hexdigest()
        self.batch_size = batch_size
        self.resumed_chunks = 0

    def positions(self, chunk: int, batch: Batch) -> torch.Tensor:
        """Each image of ``batch`` (chunk number ``chunk``, less its unreadable files) by its position in the
        pass's index list (for :class:`Rows` and tie-breaking); an index listed twice has two positions."""
        start = chunk * self.batch_size
        listed = self.chunks[chunk]
        kept = batch.indices.tolist()
        out, j = [], 0
        for i, index in enumerate(listed):  # the batch is the chunk in order, with some left out
            if j < len(kept) and kept[j] == index:
                out.append(start + i)
                j += 1
        if j != len(kept):
            raise ValueError(f"chunk {chunk}'s batch holds images the chunk does not list, or in another order")
        return torch.tensor(out, dtype=torch.long)

    def _load(self, accumulators: Sequence[Accumulator]) -> int:
        """How many of this rank's chunks a saved state has done (0: none), its states loaded."""
        if self.path is None or not self.path.is_file():
            return 0
        try:
            with safe_open(str(self.path), framework="pt") as f:
                meta = f.metadata() or {}
                tensors = {key: f.get_tensor(key) for key in f.keys()}
        except (SafetensorError, OSError, ValueError, RuntimeError) as err:
            log.warning("ignoring %s, which is not a readable scan state (%s); starting over", self.path,
                        str(err)[:120])
            return 0
        if meta.get("fingerprint") != self.fingerprint:
            log.warning("ignoring %s: it was saved by another scan (another command, model, data, option or "
                        "number of processes); starting over", self.path)
            return 0
        try:
            done = int(meta.get("done", "x"))
            if not 0 <= done <= len(self.mine):
                raise ValueError(f"{done} chunks done of {len(self.mine)}")
            for i, acc in enumerate(accumulators):
                prefix = f"{i}."
                acc.load_state({k[len(prefix):]: v for k, v in tensors.items() if k.startswith(prefix)})
        except (ValueError, TypeError, IndexError, RuntimeError) as err:
            log.warning("ignoring %s, which does not fit this scan (%s); starting over", self.path, err)
            return 0
        return done

    def _save(self, accumulators: Sequence[Accumulator], done: int) -> None:
        if self.path is None:
            return
        tensors = {f"{i}.{k}": v.detach().cpu().contiguous() for i, acc in enumerate(accumulators)
                   for k, v in acc.state().items()}
        data = safetensors_bytes(tensors, metadata={"format": STATE_FORMAT, "fingerprint": self.fingerprint,
                                                    "done": str(done)})

        def write(tmp: Path) -> None:
            with open(tmp, "wb") as f:
                f.write(data)

        atomic_write(self.path, write)

    def run(self, stream: ImageStream, consume: Callable[[Batch, torch.Tensor], None],
            accumulators: Sequence[Accumulator], *, show_progress: bool = True, desc: str = "scanning") -> None:
        """Feed this rank's chunks to ``consume(batch, positions)``, then combine every rank's accumulators.

        Starts from a matching saved state if there is one; saves every ``save_every`` seconds and after
        the last chunk. After it returns every rank holds the combined result in ``accumulators``.
        """
        done = self._load(accumulators)
        self.resumed_chunks = done
        if done:
            log.info("resuming a scan saved in %s: %d of this process's %d batches were done", self.path, done,
                     len(self.mine))
        todo = [self.chunks[c] for c in self.mine[done:]]
        total = sum(len(c) for c in todo)
        saved_at = time.monotonic()
        bar = progress(total=total, desc=desc, unit="img", enabled=show_progress)
        with bar:
            # The stream first: zip ends it by its own end, so it finishes its pass (and keeps its workers).
            for batch, chunk in zip(stream.chunks(todo), self.mine[done:], strict=True):
                if len(batch.indices):
                    consume(batch, self.positions(chunk, batch))
                done += 1
                bar.update(len(batch.indices) + len(batch.bad))
                if self.path is not None and done < len(self.mine) and \
                        time.monotonic() - saved_at >= self.save_every:
                    self._save(accumulators, done)
                    saved_at = time.monotonic()
        if todo or not self.resumed_chunks:
            self._save(accumulators, done)  # finished: a kill while combining or writing repeats nothing
        if self.ctx.distributed:
            for acc in accumulators:
                acc.combine(gather_states(self.ctx, acc.state()))

    def clear(self) -> None:
        """Remove this rank's saved state (call it once the results are written); rank 0 also removes those
        of ranks this job does not have (left by an earlier run with more processes)."""
        if self.path is None:
            return
        self.path.unlink(missing_ok=True)
        if self.ctx.is_main:
            stem = self.path.name.rsplit(".rank", 1)[0]
            for other in self.path.parent.glob(f"{stem}.rank*.safetensors"):
                rank = other.name[len(stem) + len(".rank"):-len(".safetensors")]
                if rank.isdigit() and int(rank) >= self.ctx.world_size:
                    other.unlink(missing_ok=True)
