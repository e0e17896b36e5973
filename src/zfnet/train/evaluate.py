"""Evaluation: top-1 / top-5 error on the centre crop or the paper's ten crops, and ensembles.

The ten-crop prediction averages the softmax outputs of the ten crops; an ensemble averages the
(ten-crop or centre-crop) softmax outputs of several models, as the paper's Table 2 does. Each model's
outputs are computed once (:func:`predict_runs`) and any group of them averaged (:func:`average`).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from ..data.folders import open_dataset
from ..data.loader import ImageStream
from ..data.transforms import Normalization, center_crop, ten_crops
from ..distributed import DistContext, setup
from ..errors import ZFNetError
from ..models.speed import prepare_for_speed
from ..scan import Rows, Scan
from .run import LoadedRun, load_run

__all__ = ["predict", "topk_errors", "EvalResult", "EvalReport", "Predictions", "average", "predict_runs",
           "evaluate_runs"]


@torch.no_grad()
def predict(model: nn.Module, stream: ImageStream, normalization: Normalization, *, input_size: int,
            ten_crop: bool = False, batch_size: int = 64, indices=None, channels_last: bool = False,
            show_progress: bool = True, desc: str = "evaluating") -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Softmax outputs of ``model`` over (part of) a data set.

    Args:
        model: the network (its device is used).
        stream: the images (uint8 at base size).
        normalization: how pixels become the model's input (for a zfnet run: minus the training mean
            image (3, S, S)).
        input_size: crop side.
        ten_crop: average the softmax of the ten crops instead of using the centre crop.
        batch_size: images per forward pass (ten crops make it 10x larger).
        indices: which images (default: all), in this order.

    Returns:
        ``(probs (N, C) float32 on CPU, labels (N,), indices (N,))`` for the readable images.
    """
    return _predict(model, stream, normalization, input_size=input_size, ten_crop=ten_crop, batch_size=batch_size,
                    indices=indices, channels_last=channels_last, show_progress=show_progress, desc=desc)[:3]


def _predict(model: nn.Module, stream: ImageStream, normalization: Normalization, *, input_size: int,
             ten_crop: bool, batch_size: int, indices, channels_last: bool, show_progress: bool,
             desc: str, ctx: DistContext | None = None
             ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """:func:`predict`, and with ten crops also the centre crop's outputs (the fifth crop), at no extra cost.

    Under ``torchrun`` (``ctx``) each rank computes its share of the batches (:class:`zfnet.scan.Scan`)
    and every rank returns all the outputs, in the order one process gives.
    """
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    normalize = normalization.to(device)
    order = range(len(stream)) if indices is None else indices
    rows = Rows()

    def consume(batch, positions: torch.Tensor) -> None:
        x = normalize(batch.images.to(device, non_blocking=True))
        if ten_crop:
            crops = ten_crops(x, input_size)                      # (B, 10, 3, s, s)
            b = crops.shape[0]
            flat = crops.reshape(b * 10, *crops.shape[2:])
            if channels_last:
                flat = flat.contiguous(memory_format=torch.channels_last)
            each = model(flat).float().softmax(-1).reshape(b, 10, -1)
            # ten_crops' fifth crop is the centre crop
            rows.add(positions, probs=each.mean(1), centre=each[:, 4], labels=batch.labels, indices=batch.indices)
        else:
            crop = center_crop(x, input_size).contiguous(
                memory_format=torch.channels_last if channels_last else torch.contiguous_format)
            rows.add(positions, probs=model(crop).float().softmax(-1), labels=batch.labels, indices=batch.indices)

    try:
        with torch.no_grad():
            Scan(order, batch_size, ctx=ctx).run(stream, consume, [rows], show_progress=show_progress, desc=desc)
    finally:
        model.train(was_training)
    got = rows.result()
    if not got:
        return torch.empty(0, 0), torch.empty(0, dtype=torch.long), torch.empty(0, dtype=torch.long), None
    return got["probs"], got["labels"], got["indices"], got.get("centre")


def topk_errors(probs: torch.Tensor, labels: torch.Tensor, ks: tuple[int, ...] = (1, 5)) -> dict[int, float]:
    """Fraction of images whose label is not among the ``k`` most probable classes, for each k.

    ``k`` larger than the number of classes counts as the number of classes.

    Example:
        >>> p = torch.tensor([[0.7, 0.2, 0.1], [0.1, 0.3, 0.6]])
        >>> topk_errors(p, torch.tensor([1, 2]), ks=(1, 2))
        {1: 0.5, 2: 0.0}
    """
    if len(labels) == 0:
        raise ValueError("no images to evaluate")
    out = {}
    for k in ks:
        kk = min(k, probs.shape[1])
        top = probs.topk(kk, dim=1).indices
        hit = (top == labels[:, None]).any(dim=1)
        out[k] = 1.0 - hit.float().mean().item()
    return out


@dataclass
class EvalResult:
    """Errors of one model (or an ensemble) on a split."""

    name: str
    top1_error: float
    top5_error: float
    images: int


@dataclass
class EvalReport:
    """Each model's errors and, with several models, their ensemble's."""

    members: list[EvalResult]
    ensemble: EvalResult | None
    ten_crop: bool
    bad_files: int

    def summary(self) -> str:
        """The errors as a table of text, as ``zfnet evaluate`` prints them."""
        crops = "10 crops" if self.ten_crop else "centre crop"
        rows = list(self.members) + ([self.ensemble] if self.ensemble else [])
        width = max(len(r.name) for r in rows)
        lines = [f"{'model':<{width}}  top-1 err  top-5 err  images   ({crops})"]
        lines += [f"{r.name:<{width}}  {100 * r.top1_error:8.2f}%  {100 * r.top5_error:8.2f}%  {r.images:6d}"
                  for r in rows]
        if self.bad_files:
            lines.append(f"{self.bad_files} unreadable image file(s) were skipped")
        return "\n".join(lines)

    def to_json(self) -> dict:
        """``{"ten_crop", "results": [each member's and the ensemble's errors]}``."""
        rows = [dict(r.__dict__) for r in self.members] + ([dict(self.ensemble.__dict__)] if self.ensemble else [])
        return {"ten_crop": self.ten_crop, "results": rows}


@dataclass
class Predictions:
    """One model's softmax outputs over a split, kept so that ensembles combine them without a second pass.

    Attributes:
        name: the run (its directory, or the model's spec).
        probs: (N, C) softmax outputs, float32 on the CPU (ten-crop: averaged over the crops).
        labels: (N,) the images' labels.
        indices: (N,) the images' positions in the split (unreadable ones are absent).
        centre: with ten crops, (N, C) the centre crop's outputs alone (computed in the same pass).
    """

    name: str
    probs: torch.Tensor
    labels: torch.Tensor
    indices: torch.Tensor
    centre: torch.Tensor | None = None

    def centre_crop(self) -> Predictions:
        """The centre crop's outputs of ten-crop predictions, as predictions of their own."""
        if self.centre is None:
            raise ValueError(f"{self.name}: these outputs were not computed from ten crops")
        return Predictions(self.name, self.centre, self.labels, self.indices)

    def errors(self) -> EvalResult:
        """Top-1 and top-5 error of these outputs."""
        errs = topk_errors(self.probs, self.labels)
        return EvalResult(self.name, errs[1], errs[5], len(self.labels))

    def wrong(self) -> torch.Tensor:
        """(N,) bool: the images whose top-1 class is not their label."""
        return self.probs.argmax(1) != self.labels


def average(members: list[Predictions], name: str | None = None) -> Predictions:
    """The ensemble of several models' outputs: their softmax averaged on the images every one of them read.

    Example:
        >>> a = Predictions("a", torch.tensor([[0.9, 0.1], [0.2, 0.8]]), torch.tensor([0, 1]), torch.tensor([0, 1]))
        >>> b = Predictions("b", torch.tensor([[0.3, 0.7]]), torch.tensor([1]), torch.tensor([1]))
        >>> average([a, b]).probs
        tensor([[0.2500, 0.7500]])
    """
    if not members:
        raise ValueError("no model outputs to average")
    positions = [{int(i): n for n, i in enumerate(m.indices.tolist())} for m in members]
    keep = sorted(set(positions[0]).intersection(*positions[1:]))
    stacked = torch.stack([m.probs[[pos[i] for i in keep]] for m, pos in zip(members, positions)])
    labels = members[0].labels[[positions[0][i] for i in keep]]
    return Predictions(name or f"ensemble of {len(members)}", stacked.mean(0), labels,
                       torch.tensor(keep, dtype=torch.long))


def predict_runs(runs: list[str | Path | LoadedRun], data: str | Path, *, split: str = "val",
                 ten_crop: bool = False, weights: str = "best", layout: str = "auto", workers: int | None = None,
                 batch_size: int = 64, device: str | torch.device = "cpu",
                 show_progress: bool = True) -> tuple[list[Predictions], int]:
    """Each run's softmax outputs over a split, one pass per run (with ``ten_crop``, the centre crop's outputs
    come with them: :meth:`Predictions.centre_crop`).

    Runs may differ in architecture and input size; they must share the class list. A run is a run
    directory (its ``weights`` loaded) or a loaded run. Under ``torchrun`` each process computes a
    disjoint share of the images (on its own GPU with ``device="cuda"``) and every process gets all
    the outputs, exactly as one process computes them.

    Returns:
        ``(one Predictions per run, in order; files of the split skipped as unreadable)``.

    Raises:
        ZFNetError: unknown runs, mismatched class lists, no readable images.
    """
    if not runs:
        raise ZFNetError("no run to evaluate")
    ctx = setup(str(device))
    device = ctx.device
    loaded = [r if isinstance(r, LoadedRun) else load_run(r, weights) for r in runs]
    classes = loaded[0].classes
    for run in loaded[1:]:
        if run.classes != classes:
            raise ZFNetError(f"{run.root} was trained on other classes than {loaded[0].root}; "
                             "an ensemble needs the same class list")
    out: list[Predictions] = []
    bad = 0
    streams: dict[int, ImageStream] = {}
    for run in loaded:
        stream = streams.get(run.base_size)
        if stream is None:
            ds = open_dataset(data, split, run.base_size, layout=layout, classes=classes)
            # Decoded once into memory where it fits, for every run of this base size; under torchrun on
            # the fly, so that each process decodes its own share only.
            stream = ImageStream(ds, workers=workers, cache="none" if ctx.distributed else "auto",
                                 show_progress=show_progress, pin_memory=device.type == "cuda")
            streams[run.base_size] = stream
        model = prepare_for_speed(run.model.to(device), train=False)
        probs, labels, idx, centre = _predict(model, stream, run.normalization, input_size=run.input_size,
                                              ten_crop=ten_crop, batch_size=batch_size, indices=None,
                                              show_progress=show_progress, channels_last=True,
                                              desc=f"evaluating {run.root.name}", ctx=ctx)
        if len(labels) == 0:
            raise ZFNetError(f"no readable images in {Path(data) / split}")
        out.append(Predictions(str(run.root), probs, labels, idx, centre))
        bad = max(bad, len(stream.bad_files))
    return out, bad


def evaluate_runs(runs: list[str | Path | LoadedRun], data: str | Path, *, split: str = "val", ten_crop: bool = False,
                  weights: str = "best", layout: str = "auto", workers: int | None = None,
                  batch_size: int = 64, device: str | torch.device = "cpu",
                  show_progress: bool = True) -> EvalReport:
    """Top-1 and top-5 error of each run, and of the average of their softmax outputs.

    Runs may differ in architecture and input size (the paper's "(a) & (b) combined"); they must
    share the class list. A run is a run directory (its ``weights`` loaded) or a loaded run, such as
    a model zfnet did not train (:func:`zfnet.train.external.load_external`).

    Raises:
        ZFNetError: unknown runs, mismatched class lists, no readable images.
    """
    members, bad = predict_runs(runs, data, split=split, ten_crop=ten_crop, weights=weights, layout=layout,
                                workers=workers, batch_size=batch_size, device=device, show_progress=show_progress)
    ensemble = average(members).errors() if len(members) > 1 else None
    return EvalReport([m.errors() for m in members], ensemble, ten_crop, bad)
