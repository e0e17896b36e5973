"""The training loop: the paper's recipe, resumable exactly, on one or many processes.

Each training image is seen through one of its ten crops drawn at random (the paper's §3) or through a
crop at any offset (``train_crops``). Each epoch's data order, crops, flips and dropout masks are drawn
from generators seeded by ``(seed, epoch, rank)``, so a run resumed from the checkpoint of epoch E
repeats epoch E+1 exactly as an uninterrupted run would. State is written atomically at the end of
every epoch: a ``kill -9`` loses at most the epoch in progress.

A run folder has one writer: the process of rank 0 holds its :func:`~zfnet._io.folder_lock` from the
first check to the last write. The weights and the optimiser's state are checked finite at the end of
every epoch, before the epoch is validated, judged best or saved: a blow-up, even on an epoch's last
step, stops the run with :class:`~zfnet.errors.TrainingDiverged` and leaves every checkpoint as it was.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import time
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DistributedSampler

from .. import cores, distributed
from .._io import atomic_write_json, atomic_write_text, folder_entries, folder_lock, remove_temp_files
from ..data.folders import open_dataset
from ..data.images import image_size
from ..data.loader import ImageStream, keeps_in_memory, mean_image
from ..data.transforms import Normalization, base_size, training_crops
from ..errors import ImageError, TrainingDiverged, ZFNetError
from ..models import build, list_models, model_config, model_info
from ..models.speed import prepare_for_speed
from ..progress import progress
from .checkpoint import (
    RunFiles,
    check_resumable,
    first_nonfinite,
    is_run_dir,
    load_mean,
    load_state,
    save_mean,
    save_state,
    save_weights,
    write_run_marker,
)
from .config import TrainConfig
from .evaluate import predict, topk_errors
from .step import NonFiniteLoss, sgd, sgd_step

__all__ = ["train", "TrainResult", "epoch_seed", "left_chance", "run_train_crops"]

NEW_RUN_CROPS = "ten"
"""The crops of a new run whose config leaves ``train_crops`` unset: the paper's."""
OLD_RUN_CROPS = "random"
"""The crops of a run saved before ``train_crops`` existed: what zfnet took then."""


def left_chance(val_top1_error: float, classes: int, images: int) -> bool:
    """Whether a validation top-1 error is clearly below chance level (1 - 1/classes).

    Clearly: by at least 5 points and by 3 standard errors of the error measured on ``images``
    images, so that noise around chance does not count as learning.
    """
    chance = 1.0 - 1.0 / classes
    stderr = math.sqrt(chance * (1.0 - chance) / max(images, 1))
    return val_top1_error < chance - max(0.05, 3.0 * stderr)

log = logging.getLogger("zfnet")


@dataclass
class TrainResult:
    """What a training run produced."""

    run: Path
    epochs: int
    best_epoch: int
    best_val_top1_error: float
    metrics: list[dict]
    bad_files: int
    model: str = ""

    def summary(self) -> str:
        """What ``zfnet train`` prints at the end."""
        last = self.metrics[-1] if self.metrics else None
        if last is None:
            text = f"nothing to do: {self.run} already finished its epochs"
        else:
            text = (f"trained {self.model or 'the model'} for {last['epoch']} epochs: "
                    f"val top-1 error {100 * last['val_top1_error']:.2f}%, "
                    f"top-5 {100 * last['val_top5_error']:.2f}% (best top-1 {100 * self.best_val_top1_error:.2f}% "
                    f"at epoch {self.best_epoch})")
        return f"{text}\nrun directory: {self.run}"


def epoch_seed(seed: int, epoch: int, rank: int = 0) -> int:
    """The seed of one epoch's randomness on one process (order, crops, flips, dropout)."""
    return (seed * 1_000_003 + epoch * 7919 + rank * 104_729) % (2**63 - 1)


def _input_size(config: TrainConfig) -> int:
    return int(config.model_options.get("input_size", model_info(config.model).input_size))


def run_train_crops(config: TrainConfig, saved: dict | None) -> str:
    """The training crops a run uses: fixed when it starts, kept when it resumes.

    Args:
        config: the configuration asked for.
        saved: the configuration saved with the run's last finished epoch, None for a new run.

    Returns:
        ``config.train_crops`` or, unset, :data:`NEW_RUN_CROPS` for a new run and the saved run's own
        for a resumed one (:data:`OLD_RUN_CROPS` when it saved none: it was trained before the option).

    Raises:
        ZFNetError: a resumed run asked for crops other than its own.
    """
    if saved is None:
        return config.train_crops or NEW_RUN_CROPS
    own = saved.get("train_crops") or OLD_RUN_CROPS
    if config.train_crops not in (None, own):
        raise ZFNetError(f"{config.out} was trained with train_crops={own!r}; --resume cannot change it "
                         f"to {config.train_crops!r}")
    return own


def _check_run_dir(files: RunFiles, resume: bool) -> dict | None:
    """Refuse to overwrite a run or a foreign folder; on resume return its last state (None: no epoch finished).

    Called with the folder locked, so the temporary files it clears are no live writer's.
    """
    if resume:
        check_resumable(files.root)
    elif files.last.is_file() or files.metrics.is_file():
        raise ZFNetError(f"{files.root} already holds a training run; pass --resume to continue it "
                         "or choose another --out")
    elif folder_entries(files.root) and not is_run_dir(files.root):
        raise ZFNetError(f"{files.root} is not empty and is not a zfnet run; choose another --out")
    # Left by a kill in the middle of an atomic write; zfnet's names only, never a user's file.
    remove_temp_files(files.root)
    remove_temp_files(files.snapshots)
    if resume and files.last.is_file():
        return load_state(files.last, required=("epoch", "model", "optimizer", "scheduler", "metrics"))
    if folder_entries(files.root):
        log.info("no finished epoch in %s: starting from the beginning", files.root)
    return None


def _diverged(what: str, epoch: int, files: RunFiles, saved_epoch: int) -> TrainingDiverged:
    kept = (f"the last good checkpoint ({files.last}, epoch {saved_epoch}) is kept" if saved_epoch
            else "no epoch had finished, so no checkpoint was written")
    return TrainingDiverged(f"training diverged: {what} at epoch {epoch}; {kept}; try a lower --lr")


def train(config: TrainConfig, *, resume: bool = False, show_progress: bool = True) -> TrainResult:
    """Train a model with the paper's recipe and write the run directory ``config.out``.

    Args:
        config: the resolved configuration.
        resume: continue the run in ``config.out`` from its last finished epoch.
        show_progress: progress bars (on a terminal).

    Returns:
        A :class:`TrainResult`.

    Raises:
        ZFNetError: bad data, an existing run without ``resume``, a folder that is not a run with
            ``resume``, an unknown model.
        FolderInUse: another process is writing ``config.out``.
        TrainingDiverged: the loss or the weights became NaN or infinite (every checkpoint on disk
            stays as the last finished epoch left it).
    """
    # Stored and compared resolved, so that the run resumes from any working directory.
    config = dataclasses.replace(config, data=str(Path(config.data).expanduser().resolve()),
                                 out=str(Path(config.out).expanduser().resolve()))
    ctx = distributed.setup(config.device)
    threads = torch.get_num_threads()  # _train sets its own (zfnet.cores); the caller's is restored after
    try:
        files = RunFiles(Path(config.out))
        if resume:
            check_resumable(files.root)
        # Rank 0 writes the run and holds its folder's lock; the other ranks write nothing.
        with folder_lock(files.root) if ctx.is_main else nullcontext():
            return _train(config, ctx, resume, show_progress and ctx.is_main, files)
    finally:
        torch.set_num_threads(threads)
        distributed.teardown(ctx)


def size_warnings(model: str, input_size: int, dataset, device: torch.device, *, sample: int = 8) -> list[str]:
    """What a user should hear before a long run of a model that does not suit the data or the machine:
    images smaller than the model's base size (upsampled: the model sees no more detail than the files
    have, at several times the cost), and a full-size model on a CPU. Reads the headers of a few images.
    """
    out = []
    paths = [p for p, _ in dataset.samples[:: max(1, len(dataset.samples) // sample)][:sample]]
    sides = []
    for path in paths:
        try:
            sides.append(min(image_size(path)))
        except ImageError:
            continue
    base = base_size(input_size)
    family = model.split("-")[0]  # zfnet-cpu's family is zfnet's
    fitting = [name for name in list_models() if name.split("-")[0] == family and name != model
               and base_size(model_info(name).input_size) <= (max(sides) if sides else base)]
    fitting.sort(key=lambda name: base_size(model_info(name).input_size))
    hint = f"; consider --model {fitting[-1]}" if fitting else ""
    if sides and max(sides) < base:
        out.append(f"the images are {max(sides)} px at most but {model} takes {input_size} px crops of {base} px "
                   f"images: they are upsampled, which costs time and adds no detail{hint}")
    if device.type == "cpu" and input_size >= 224:
        out.append(f"{model} is a full-size {input_size}-px network: an epoch on a CPU takes a long time"
                   f"{hint or '; the *-cpu models are its structure at CPU size'}")
    return out


def _train(config: TrainConfig, ctx: distributed.DistContext, resume: bool, show: bool,
           files: RunFiles) -> TrainResult:
    # Rank 0 alone judges the folder (the others would see the files it is about to write).
    state = _check_run_dir(files, resume) if ctx.is_main else None
    ctx.barrier()
    if not ctx.is_main and resume and files.last.is_file():
        state = load_state(files.last)
    # Resolved before anything is written, so that config.json says which crops the run takes.
    saved = None if state is None else state.get("config") or {}
    config = dataclasses.replace(config, train_crops=run_train_crops(config, saved))
    input_size = _input_size(config)
    size = base_size(input_size)
    train_ds = open_dataset(config.data, "train", size, layout=config.layout)
    val_ds = open_dataset(config.data, "val", size, layout=config.layout, classes=train_ds.classes)
    # the model for this data set's class count, checked before anything is written
    model_config(config.model, num_classes=len(train_ds.classes), options=config.model_options)
    if ctx.is_main:
        for warning in size_warnings(config.model, input_size, train_ds, ctx.device):
            log.warning("%s", warning)
    # Threads and workers from the cores free (zfnet.cores; OMP_NUM_THREADS and --workers win), planned
    # before config.json keeps the thread count: a resumed run takes its own again (torch's present count
    # for one saved before the option), since the count changes how torch rounds its sums.
    threads = config.threads
    if threads is None and saved is not None:
        threads = saved.get("threads") or torch.get_num_threads()
    plan = cores.plan_threads(config.workers, threads=threads,
                              streaming=not keeps_in_memory(train_ds, config.cache))
    config = dataclasses.replace(config, threads=plan.threads)
    cores.apply(plan)
    log.info("cores: %s", plan)
    if ctx.is_main:
        if not files.marker.is_file():
            write_run_marker(files.root)  # first: a run killed from here on is recognised as zfnet's
        atomic_write_json(files.config, config.to_json())
        atomic_write_json(files.classes, {"classes": train_ds.classes, "names": train_ds.class_names})
    pin = ctx.device.type == "cuda"  # page-locked batches: asynchronous copies to the GPU
    train_stream = ImageStream(train_ds, workers=plan.workers, cache=config.cache, show_progress=show, pin_memory=pin)
    val_stream = ImageStream(val_ds, workers=plan.workers, cache=config.cache, show_progress=show, pin_memory=pin)

    if state is not None and files.mean.is_file():
        mean = load_mean(files.mean)
    else:
        if ctx.is_main:
            save_mean(files.mean, mean_image(train_stream, show_progress=show))
        ctx.barrier()
        mean = load_mean(files.mean)
    if mean.shape[-1] != size:
        raise ZFNetError(f"{files.mean} is {mean.shape[-1]} px but the model needs {size} px")

    torch.manual_seed(config.seed)
    model = build(config.model, num_classes=len(train_ds.classes), **config.model_options)
    model.to(ctx.device)
    # Channels-last weights and inputs, and reused host memory: the measured fast path (docs/benchmarks.md).
    channels_last = config.channels_last if config.channels_last is not None else ctx.device.type in ("cpu", "cuda")
    prepare_for_speed(model, train=True, channels_last=channels_last)
    optimizer = sgd(model, lr=config.lr, momentum=config.momentum, weight_decay=config.weight_decay)
    scheduler = torch.optim.lr_scheduler.ReduceLROnPlateau(
        optimizer, mode="min", factor=config.lr_factor, patience=config.lr_patience,
        threshold=1e-4, threshold_mode="abs", min_lr=config.min_lr)
    metrics: list[dict] = []
    best = {"epoch": 0, "val_top1_error": math.inf}
    # From the paper's small initialisation a network first sits on a plateau at chance level for a
    # while; a person annealing by hand waits for learning to start, and so does the schedule.
    started = False
    start = 1
    saved_epoch = 0  # the epoch whose checkpoint is on disk
    if state is not None:
        try:
            model.load_state_dict(state["model"])
            optimizer.load_state_dict(state["optimizer"])
            scheduler.load_state_dict(state["scheduler"])
        except (RuntimeError, ValueError, KeyError) as err:
            raise ZFNetError(f"{files.last} does not match this configuration: {str(err).splitlines()[0]}") from None
        saved_lr = state.get("config", {}).get("lr", config.lr)
        if saved_lr != config.lr:
            # The user asked for another learning rate on resume (the paper annealed by hand).
            for group in optimizer.param_groups:
                group["lr"] = config.lr
            log.info("learning rate set to %.3g on resume (the run's configuration had %.3g)", config.lr, saved_lr)
        metrics = list(state["metrics"])
        best = dict(state.get("best", best))
        started = bool(state.get("schedule_started", True))
        start = int(state["epoch"]) + 1
        saved_epoch = start - 1
        if ctx.is_main:
            atomic_write_text(files.metrics, "".join(json.dumps(m) + "\n" for m in metrics))
        log.info("resuming %s after epoch %d", files.root, start - 1)
    net: nn.Module = DistributedDataParallel(model) if ctx.distributed else model
    meta = {"model": config.model, "num_classes": len(train_ds.classes), "model_options": config.model_options}
    mean_dev = mean.to(ctx.device)
    per_rank_batch = max(1, math.ceil(config.batch_size / ctx.world_size))
    sampler = DistributedSampler(train_ds, num_replicas=ctx.world_size, rank=ctx.rank, shuffle=True,
                                 seed=config.seed, drop_last=False)

    for epoch in range(start, config.epochs + 1):
        t0 = time.perf_counter()
        sampler.set_epoch(epoch)
        seed = epoch_seed(config.seed, epoch, ctx.rank)
        gen = torch.Generator().manual_seed(seed)
        torch.manual_seed(seed)  # dropout masks
        net.train()
        sums = torch.zeros(3, dtype=torch.float64)  # loss * n, correct, n
        indices = list(sampler)
        bar = progress(total=len(indices), desc=f"epoch {epoch}/{config.epochs}", unit="img", enabled=show)
        with bar:
            for step, batch in enumerate(train_stream.batches(indices, per_rank_batch)):
                images = batch.images.to(ctx.device, non_blocking=True)
                x = training_crops(images, input_size, config.train_crops, generator=gen, mean=mean_dev)  # (B, 3, s, s)
                if channels_last:
                    x = x.contiguous(memory_format=torch.channels_last)
                y = batch.labels.to(ctx.device, non_blocking=True)
                try:  # every rank stops at the same step
                    loss, logits = sgd_step(model, optimizer, x, y, max_filter_rms=config.max_filter_rms,
                                            forward=net, any_rank=ctx.any)
                except NonFiniteLoss as err:
                    raise _diverged(f"the loss is {err.loss} (batch {step + 1})", epoch, files, saved_epoch) from None
                n = len(y)
                sums += torch.tensor([loss.item() * n, (logits.argmax(1) == y).sum().item(), n], dtype=torch.float64)
                bar.update(n + len(batch.bad))
                bar.set_postfix(loss=f"{loss.item():.3f}", refresh=False)
        ctx.all_reduce_sum(sums)
        # The last step's update has no loss of its own to show a blow-up: the weights are checked.
        bad = first_nonfinite(model.state_dict()) or first_nonfinite(optimizer.state_dict(), "optimizer")
        if ctx.any(bad is not None):
            raise _diverged(f"{bad or 'a weight'} holds NaN or infinite values after the last step", epoch,
                            files, saved_epoch)
        val_top1, val_top5 = _validate(model, val_stream, mean, input_size, ctx, channels_last, show)
        lr_before = optimizer.param_groups[0]["lr"]
        if not started and left_chance(val_top1, len(train_ds.classes), len(val_ds)):
            started = True
            log.info("epoch %d: validation error has left chance level (%.1f%%); plateau schedule on",
                     epoch, 100 * (1 - 1 / len(train_ds.classes)))
        if started:
            scheduler.step(val_top1)
        lr_after = optimizer.param_groups[0]["lr"]
        if lr_after < lr_before:
            log.info("epoch %d: validation top-1 error has not improved for %d epochs: lr %.3g -> %.3g",
                     epoch, config.lr_patience + 1, lr_before, lr_after)
        row = {
            "epoch": epoch,
            "train_loss": sums[0].item() / max(sums[2].item(), 1),
            "train_top1_error": 1.0 - sums[1].item() / max(sums[2].item(), 1),
            "val_top1_error": val_top1,
            "val_top5_error": val_top5,
            "lr": lr_before,
            "seconds": time.perf_counter() - t0,
            "images": int(sums[2].item()),
        }
        metrics.append(row)
        improved = val_top1 < best["val_top1_error"]
        if improved:
            best = {"epoch": epoch, "val_top1_error": val_top1}
        if ctx.is_main:
            _save_epoch(files, model, optimizer, scheduler, epoch, metrics, best, meta, improved,
                        epoch in config.snapshots or epoch == config.epochs, config, started)
        saved_epoch = epoch
        ctx.barrier()
        log.info("epoch %d/%d  loss %.4f  train top-1 err %.2f%%  val top-1 err %.2f%%  top-5 err %.2f%%  "
                 "lr %.3g  %.0fs (%.0f img/s)", epoch, config.epochs, row["train_loss"],
                 100 * row["train_top1_error"], 100 * val_top1, 100 * val_top5, lr_before, row["seconds"],
                 row["images"] / max(row["seconds"], 1e-9))
    bad = len(train_ds.bad_files) + len(val_ds.bad_files)
    if bad:
        log.warning("%d unreadable image file(s) were skipped (named above)", bad)
    return TrainResult(files.root, len(metrics), int(best["epoch"]), float(best["val_top1_error"]), metrics, bad,
                       config.model)


def _validate(model: nn.Module, stream: ImageStream, mean: torch.Tensor, input_size: int,
              ctx: distributed.DistContext, channels_last: bool, show: bool) -> tuple[float, float]:
    """Centre-crop top-1 and top-5 error over the validation set, sharded over the processes."""
    shard = list(range(ctx.rank, len(stream), ctx.world_size))
    probs, labels, _ = predict(model, stream, Normalization(mean), input_size=input_size, indices=shard,
                               channels_last=channels_last, show_progress=show, desc="validating")
    counts = torch.zeros(3, dtype=torch.float64)
    if len(labels):
        errs = topk_errors(probs, labels)
        counts += torch.tensor([errs[1] * len(labels), errs[5] * len(labels), len(labels)], dtype=torch.float64)
    ctx.all_reduce_sum(counts)
    if counts[2] == 0:
        raise ZFNetError("no readable validation images")
    return counts[0].item() / counts[2].item(), counts[1].item() / counts[2].item()


def _save_epoch(files: RunFiles, model: nn.Module, optimizer, scheduler, epoch: int, metrics: list[dict],
                best: dict, meta: dict, improved: bool, snapshot: bool, config: TrainConfig,
                schedule_started: bool) -> None:
    weights_meta = {**meta, "epoch": epoch}
    # Order matters for kill -9 at any point: weights first, then the state that names the epoch
    # finished, then the metrics (rewritten from that state on resume).
    save_weights(files.weights("last"), model, weights_meta)
    if improved:
        save_weights(files.best, model, weights_meta)
    if snapshot:
        save_weights(files.snapshot(epoch), model, weights_meta)
    save_state(files.last, {
        "epoch": epoch,
        "model": {k: v.detach().cpu() for k, v in model.state_dict().items()},
        "optimizer": optimizer.state_dict(),
        "scheduler": scheduler.state_dict(),
        "metrics": metrics,
        "best": best,
        "config": config.to_json(),
        "schedule_started": schedule_started,
    })
    atomic_write_text(files.metrics, "".join(json.dumps(m) + "\n" for m in metrics))
