"""Transfer of frozen features: a new linear classifier on a trained network's layers (Tables 4-6).

Zeiler & Fergus (2014, §5.2) keep layers 1-7 of the ImageNet-trained network fixed and train a new
softmax on fc7 for another data set: Caltech-101 (Table 4: 83.8 ± 0.5 / 86.5 ± 0.5 % mean per-class
accuracy with 15 / 30 training images per class, against 22.8 ± 1.5 / 46.5 ± 1.7 % for the same
network trained from scratch on those images), Caltech-256 (Table 5: 65.7 / 70.6 / 72.7 / 74.2 % at
15 / 30 / 45 / 60 per class; from scratch 9.0 / 22.5 / 31.2 / 38.8 %) and PASCAL VOC 2012 (Table 6:
79.0 % mean average precision).

Here:

- :func:`fit_linear` trains a linear classifier on fixed features by full-batch L-BFGS: a softmax
  (multinomial logistic regression), a one-vs-rest linear SVM (squared hinge, the L2-SVM of
  LIBLINEAR and scikit-learn's ``LinearSVC``), or one-vs-all logistic regressions for multi-label
  targets (VOC). Features are standardised with the training images' statistics. The L2 penalty is
  ``1 / N`` for N training images by default, which is LIBLINEAR's and scikit-learn's default
  ``C = 1`` (their objective ``C * sum of losses + |w|^2 / 2`` divided by ``C * N``), or chosen by
  3-fold cross-validation on the training images alone (``l2="cv"``, :func:`select_l2`): the test
  images never influence training.
- :func:`train_from_scratch` trains the same architecture from its initialisation on a split's
  training images with the paper's recipe for a fixed number of SGD steps: the baseline rows.
- :func:`run_transfer` runs the whole experiment (Caltech protocol over random splits, or VOC's
  train / val sets) and writes ``OUT/transfer.json``, ``.md``, ``.csv`` and a figure;
  :func:`transfer_study` runs it together with the layer probes (``probes``) for the miniature
  study on the synthetic data set.
"""

from __future__ import annotations

import csv
import io
import json
import logging
import time
from collections.abc import Callable, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .._io import atomic_write, atomic_write_json, atomic_write_text
from .._validate import check_fields, limits
from ..data.caltech import TEST_CAPS, open_caltech101, open_caltech256, per_class_accuracy, sample_splits
from ..data.folders import ImageFolder, open_dataset
from ..data.loader import ImageStream
from ..data.transforms import center_crop, random_crops
from ..data.voc import mean_average_precision, open_voc
from ..errors import DataError, ZFNetError
from ..models import build, renormalize_filters_
from ..models._fast import prepare_for_speed
from ..progress import progress
from ..train.config import TrainConfig
from .features import FeatureSet, extract_features

__all__ = [
    "LAYOUTS", "CLASSIFIERS", "L2_GRID", "LinearClassifier", "fit_linear", "select_l2", "default_l2", "resolve_l2",
    "fit_and_score", "ScratchRecipe",
    "train_from_scratch", "open_labelled_images", "TransferResult", "run_transfer", "transfer_study",
    "PAPER_TRANSFER",
]

log = logging.getLogger("zfnet")

LAYOUTS = ("caltech101", "caltech256", "voc2012", "folders")
CLASSIFIERS = ("softmax", "svm", "logistic")
L2_GRID: tuple[float, ...] = (1e-4, 1e-3, 1e-2, 1e-1, 1.0)
SMALL_PROBLEM_FLOPS = 2e8  # a loss evaluation below this many FLOPs runs on one thread

# The paper's Tables 4-6: mean per-class accuracy % (mean, std) by training images per class.
PAPER_TRANSFER: dict[str, dict[str, dict[int, tuple[float, float | None]]]] = {
    "caltech101": {
        "pretrained": {15: (83.8, 0.5), 30: (86.5, 0.5)},
        "scratch": {15: (22.8, 1.5), 30: (46.5, 1.7)},
        "Bo et al.": {30: (81.4, 0.33)},
    },
    "caltech256": {
        "pretrained": {15: (65.7, 0.2), 30: (70.6, 0.2), 45: (72.7, 0.4), 60: (74.2, 0.3)},
        "scratch": {15: (9.0, None), 30: (22.5, None), 45: (31.2, None), 60: (38.8, None)},
        "Bo et al.": {15: (40.5, None), 30: (48.0, None), 45: (51.9, None), 60: (55.2, None)},
    },
}
PAPER_VOC_MAP = 79.0  # Table 6; the two best published methods then: 74.3 and 82.2


# --------------------------------------------------------------------------------- linear classifiers
@dataclass
class LinearClassifier:
    """A linear classifier on standardised features: ``scores = ((x - shift) / scale) @ weight.T + bias``.

    Attributes:
        kind: ``"softmax"``, ``"svm"`` or ``"logistic"``.
        weight: (C, D).
        bias: (C,).
        shift: (D,) the training features' mean.
        scale: (D,) the training features' standard deviation (1 where it is 0).
        l2: the L2 penalty it was trained with.
    """

    kind: str
    weight: torch.Tensor
    bias: torch.Tensor
    shift: torch.Tensor
    scale: torch.Tensor
    l2: float

    def scores(self, x: torch.Tensor) -> torch.Tensor:
        """Class scores (N, C) of features (N, D)."""
        x = x.to(self.weight.device, torch.float32)
        return torch.addmm(self.bias, (x - self.shift) / self.scale, self.weight.t())

    def predict(self, x: torch.Tensor) -> torch.Tensor:
        """The highest-scoring class of each row, (N,) int64."""
        return self.scores(x).argmax(1)


def _targets(y: torch.Tensor, kind: str, num_classes: int | None) -> tuple[torch.Tensor, torch.Tensor, int]:
    """``(labels or +-1 matrix, mask of the entries that count, C)`` for the loss of ``kind``."""
    if kind == "logistic":
        if y.dim() != 2:
            raise ValueError(f"logistic classifiers take (N, C) targets of 1, -1 and 0, got shape {tuple(y.shape)}")
        return y.float(), (y != 0).float(), y.shape[1]
    if y.dim() != 1:
        raise ValueError(f"{kind} classifiers take (N,) integer labels, got shape {tuple(y.shape)}")
    c = int(num_classes) if num_classes is not None else int(y.max()) + 1
    if kind == "svm":
        signs = torch.full((len(y), c), -1.0, device=y.device)
        signs[torch.arange(len(y), device=y.device), y] = 1.0
        return signs, torch.ones_like(signs), c
    return y.long(), torch.ones(0), c


def _loss(kind: str, scores: torch.Tensor, t: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    n = scores.shape[0]
    if kind == "softmax":
        return F.cross_entropy(scores, t)
    if kind == "svm":  # squared hinge, one-vs-rest
        return (F.relu(1.0 - t * scores).square() * mask).sum() / n
    return (F.softplus(-t * scores) * mask).sum() / n  # one-vs-all logistic


@contextmanager
def _threads_for(flops: float):
    """One thread for small problems: their matrix products are too small to share, and on a busy
    machine every parallel region waits for the slowest core."""
    saved = torch.get_num_threads()
    if flops < SMALL_PROBLEM_FLOPS and saved > 1:
        torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(saved)


def default_l2(n: int) -> float:
    """The default penalty for ``n`` training images: ``1 / n``, LIBLINEAR's and scikit-learn's ``C = 1``.

    Example:
        >>> default_l2(300)
        0.0033333333333333335
    """
    return 1.0 / max(int(n), 1)


def fit_linear(x: torch.Tensor, y: torch.Tensor, *, kind: str = "softmax", l2: float | None = None,
               num_classes: int | None = None, max_iter: int = 100,
               init: LinearClassifier | None = None) -> LinearClassifier:
    """Train a linear classifier on fixed features by full-batch L-BFGS (a convex problem).

    Minimises ``loss + l2 / 2 * ||weight||^2`` with the loss averaged over the images: the
    cross-entropy of a softmax (``"softmax"``), the one-vs-rest squared hinge
    ``sum_c max(0, 1 - t_c s_c)^2`` with ``t_c = +-1`` (``"svm"``), or one-vs-all logistic losses
    ``sum_c log(1 + exp(-t_c s_c))`` over the targets that are not 0 (``"logistic"``, multi-label).
    The bias is not penalised. Features are standardised first with their own mean and deviation.

    Args:
        x: (N, D) features.
        y: (N,) int labels for ``softmax`` and ``svm``; (N, C) targets 1 / -1 / 0 (ignored) for ``logistic``.
        kind: ``"softmax"``, ``"svm"`` or ``"logistic"``.
        l2: the penalty, > 0 (default: :func:`default_l2`, ``1 / N``).
        num_classes: C for single-label kinds (default: largest label + 1).
        max_iter: L-BFGS iterations at most (test accuracy no longer changes after a few dozen).
        init: a classifier of the same shape to start from (warm start).

    Returns:
        A :class:`LinearClassifier` on ``x``'s device.

    Example:
        >>> x = torch.tensor([[0.0], [1.0], [4.0], [5.0]])
        >>> clf = fit_linear(x, torch.tensor([0, 0, 1, 1]), kind="svm", l2=1e-3)
        >>> clf.predict(torch.tensor([[0.5], [4.5]])).tolist()
        [0, 1]
    """
    if kind not in CLASSIFIERS:
        raise ValueError(f"unknown classifier {kind!r}; valid: {', '.join(CLASSIFIERS)}")
    if l2 is None:
        l2 = default_l2(len(x))
    if not l2 > 0:
        raise ValueError(f"l2 must be positive, got {l2}")
    if x.dim() != 2 or len(x) != len(y) or len(x) == 0:
        raise ValueError(f"expected (N, D) features and N targets, got {tuple(x.shape)} and {tuple(y.shape)}")
    x = x.float()
    t, mask, c = _targets(y.to(x.device), kind, num_classes)
    mask = mask.to(x.device)
    shift = x.mean(0)
    scale = x.std(0, unbiased=False)
    scale = torch.where(scale > 1e-6 * scale.max().clamp(min=1e-30), scale, torch.ones_like(scale))
    z = (x - shift) / scale
    if init is not None and init.weight.shape == (c, x.shape[1]):
        weight = init.weight.detach().clone().to(x.device).requires_grad_(True)
        bias = init.bias.detach().clone().to(x.device).requires_grad_(True)
    else:
        weight = torch.zeros(c, x.shape[1], device=x.device, requires_grad=True)
        bias = torch.zeros(c, device=x.device, requires_grad=True)
    opt = torch.optim.LBFGS([weight, bias], lr=1.0, max_iter=max_iter, history_size=10,
                            tolerance_grad=1e-6, tolerance_change=1e-10, line_search_fn="strong_wolfe")

    def closure() -> torch.Tensor:
        opt.zero_grad()
        loss = _loss(kind, torch.addmm(bias, z, weight.t()), t, mask) + 0.5 * l2 * weight.square().sum()
        loss.backward()
        return loss

    with torch.enable_grad(), _threads_for(2.0 * z.numel() * c):
        opt.step(closure)
    return LinearClassifier(kind, weight.detach(), bias.detach(), shift, scale, float(l2))


def _score_fit(clf: LinearClassifier, x: torch.Tensor, y: torch.Tensor) -> float:
    """Validation score: mean per-class accuracy, or mean average precision for multi-label targets."""
    if clf.kind == "logistic":
        scores = clf.scores(x).cpu().numpy()
        targets = y.cpu().numpy()
        usable = [j for j in range(targets.shape[1]) if (targets[:, j] > 0).any()]
        if not usable:
            return 0.0
        return mean_average_precision(scores[:, usable], targets[:, usable])[1]
    return per_class_accuracy(clf.predict(x).cpu().numpy(), y.cpu().numpy())


def _folds(y: torch.Tensor, folds: int, seed: int) -> list[np.ndarray]:
    """Fold index of every image; stratified by class for single-label targets."""
    rng = np.random.default_rng([int(seed), 7])
    n = len(y)
    fold = np.empty(n, dtype=np.int64)
    if y.dim() == 1:
        labels = y.cpu().numpy()
        for c in np.unique(labels):
            members = rng.permutation(np.flatnonzero(labels == c))
            fold[members] = (np.arange(len(members)) + rng.integers(folds)) % folds
    else:
        fold[rng.permutation(n)] = np.arange(n) % folds
    return [np.flatnonzero(fold == k) for k in range(folds)]


def select_l2(x: torch.Tensor, y: torch.Tensor, *, kind: str = "softmax", grid: Sequence[float] = L2_GRID,
              folds: int = 3, num_classes: int | None = None, seed: int = 0) -> float:
    """The L2 penalty of ``grid`` with the best ``folds``-fold cross-validated score on ``(x, y)``.

    The score is the mean per-class accuracy (mean average precision for ``logistic``); a tie goes to
    the larger penalty. Each fold's fits run from the largest penalty down, each warm-started from the
    previous one.

    Example:
        >>> x = torch.randn(60, 5); y = (x[:, 0] > 0).long()
        >>> select_l2(x, y, kind="softmax", grid=(1e-3, 1.0)) in (1e-3, 1.0)
        True
    """
    grid = sorted({float(v) for v in grid}, reverse=True)
    if not grid:
        raise ValueError("the L2 grid is empty")
    if len(grid) == 1:
        return grid[0]
    scores = np.zeros(len(grid))
    c = num_classes if num_classes is not None else (int(y.max()) + 1 if y.dim() == 1 else None)
    for held in _folds(y, folds, seed):
        if len(held) == 0:
            continue
        keep = np.setdiff1d(np.arange(len(y)), held)
        keep_t, held_t = torch.as_tensor(keep, device=x.device), torch.as_tensor(held, device=x.device)
        previous = None
        for i, l2 in enumerate(grid):
            previous = fit_linear(x[keep_t], y[keep_t], kind=kind, l2=l2, num_classes=c, init=previous)
            scores[i] += _score_fit(previous, x[held_t], y[held_t])
    return grid[int(np.argmax(scores))]  # argmax takes the first best: the largest penalty


def resolve_l2(l2: float | str | None, x: torch.Tensor, y: torch.Tensor, *, kind: str,
               num_classes: int | None = None, seed: int = 0) -> float:
    """The penalty to train with: ``None`` gives :func:`default_l2`, ``"cv"`` :func:`select_l2`, a number itself.

    Example:
        >>> resolve_l2(None, torch.zeros(200, 3), torch.zeros(200, dtype=torch.long), kind="softmax")
        0.005
    """
    if l2 is None:
        return default_l2(len(x))
    if l2 == "cv":
        return select_l2(x, y, kind=kind, num_classes=num_classes, seed=seed)
    if isinstance(l2, str):
        raise ValueError(f"l2 must be a positive number, 'cv' or None, got {l2!r}")
    return float(l2)


def fit_and_score(x_train: torch.Tensor, y_train: torch.Tensor, x_test: torch.Tensor, y_test: torch.Tensor, *,
                  kind: str, l2: float | str | None = None, num_classes: int | None = None,
                  seed: int = 0) -> tuple[float, float]:
    """Train ``kind`` on the training images and score it on the test ones.

    Args:
        l2: the penalty: None for ``1 / N``, ``"cv"`` for cross-validation on the training images, or a number.

    Returns:
        ``(score, l2)``: mean per-class accuracy (mean AP for ``logistic``) on the test images, and the penalty.

    Example:
        >>> x = torch.tensor([[0.0], [1.0], [4.0], [5.0]]); y = torch.tensor([0, 0, 1, 1])
        >>> fit_and_score(x, y, torch.tensor([[0.5], [4.5]]), torch.tensor([0, 1]), kind="softmax", l2=0.1)
        (1.0, 0.1)
    """
    penalty = resolve_l2(l2, x_train, y_train, kind=kind, num_classes=num_classes, seed=seed)
    clf = fit_linear(x_train, y_train, kind=kind, l2=penalty, num_classes=num_classes)
    return _score_fit(clf, x_test, y_test), penalty


# ------------------------------------------------------------------------------- from-scratch baseline
_TRAIN_LIMITS = {f.name: dict(f.metadata) for f in fields(TrainConfig)}


@dataclass(frozen=True)
class ScratchRecipe:
    """How the from-scratch baseline is trained: the paper's recipe for a fixed number of SGD steps.

    SGD with momentum, weight decay on weights, dropout (the model's), random crops with horizontal
    flips, filters renormalised to RMS ``max_filter_rms``; the learning rate drops by 10 after
    ``drop_at`` of the steps. Nothing is chosen on test images.

    Attributes:
        steps: SGD steps in total, whatever the number of training images.
        batch_size: images per step.
        lr, momentum, weight_decay, max_filter_rms: as in :class:`~zfnet.train.TrainConfig`.
        drop_at: fraction of the steps after which the learning rate is divided by 10.
    """

    steps: int = field(default=300, metadata=limits(1, 10_000_000))
    batch_size: int = field(default=32, metadata=_TRAIN_LIMITS["batch_size"])
    lr: float = field(default=1e-2, metadata=_TRAIN_LIMITS["lr"])
    momentum: float = field(default=0.9, metadata=_TRAIN_LIMITS["momentum"])
    weight_decay: float = field(default=5e-4, metadata=_TRAIN_LIMITS["weight_decay"])
    max_filter_rms: float = field(default=0.1, metadata=_TRAIN_LIMITS["max_filter_rms"])
    drop_at: float = field(default=0.75, metadata=limits(0, 1, low_open=True))

    def __post_init__(self) -> None:
        check_fields(self, "from-scratch recipe option")  # types and ranges, TrainConfig's where they are its


def train_from_scratch(model_name: str, images: torch.Tensor, labels: torch.Tensor, *, num_classes: int,
                       model_options: dict[str, Any] | None = None, recipe: ScratchRecipe = ScratchRecipe(),
                       seed: int = 0, device: str | torch.device = "cpu",
                       show_progress: bool = True) -> tuple[nn.Module, torch.Tensor]:
    """Train ``model_name`` from its initialisation on a few images: the baseline of Tables 4 and 5.

    Args:
        model_name: a registered model (the pretrained run's, for the paper's comparison).
        images: (N, 3, S, S) uint8 training images at base size.
        labels: (N,) int64.
        num_classes: width of the new softmax.
        model_options: the model's overrides (the pretrained run's).
        recipe: steps and SGD settings.
        seed: seeds the initialisation, the batches, crops, flips and dropout.
        device: where to train.
        show_progress: a progress bar.

    Returns:
        ``(model in eval mode, mean image (3, S, S) of the training images)``.

    Example:
        >>> imgs = torch.randint(0, 255, (8, 3, 73, 73), dtype=torch.uint8)
        >>> net, mean = train_from_scratch("zfnet-tiny", imgs, torch.arange(8) % 2, num_classes=2,
        ...                                recipe=ScratchRecipe(steps=2, batch_size=4), show_progress=False)
        >>> mean.shape
        torch.Size([3, 73, 73])
    """
    device = torch.device(device)
    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed)
    model = build(model_name, num_classes=num_classes, **(model_options or {})).to(device)
    input_size = int(model.config.input_size)
    channels_last = device.type in ("cpu", "cuda")
    prepare_for_speed(model, train=True, channels_last=channels_last)
    decay = [p for n, p in model.named_parameters() if not n.endswith("bias")]
    plain = [p for n, p in model.named_parameters() if n.endswith("bias")]
    opt = torch.optim.SGD([{"params": decay, "weight_decay": recipe.weight_decay},
                           {"params": plain, "weight_decay": 0.0}], lr=recipe.lr, momentum=recipe.momentum)
    mean = images.double().mean(0).float()
    mean_dev = mean.to(device)
    drop_step = int(recipe.drop_at * recipe.steps)
    order = torch.empty(0, dtype=torch.long)
    bar = progress(total=recipe.steps, desc="training from scratch", unit="step", enabled=show_progress)
    with bar:
        for step in range(recipe.steps):
            if step == drop_step:
                for group in opt.param_groups:
                    group["lr"] = recipe.lr / 10
            if len(order) < recipe.batch_size:
                order = torch.cat([order, torch.randperm(len(images), generator=gen)])
            pick, order = order[:recipe.batch_size], order[recipe.batch_size:]
            x = random_crops(images[pick].to(device), input_size, generator=gen, mean=mean_dev)
            if channels_last:
                x = x.contiguous(memory_format=torch.channels_last)
            loss = F.cross_entropy(model(x), labels[pick].to(device))
            if not torch.isfinite(loss):
                raise ZFNetError(f"the from-scratch baseline diverged at step {step + 1} (loss {loss.item()}); "
                                 "try a lower learning rate")
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            if recipe.max_filter_rms > 0:
                renormalize_filters_(model, recipe.max_filter_rms)
            bar.update(1)
    return model.eval(), mean


@torch.no_grad()
def _predict_labels(model: nn.Module, images: torch.Tensor, mean: torch.Tensor, batch_size: int = 128) -> torch.Tensor:
    device = next(model.parameters()).device
    input_size = int(model.config.input_size)
    mean = mean.to(device)
    out = []
    for i in range(0, len(images), batch_size):
        x = center_crop(images[i:i + batch_size].to(device).float().sub_(mean), input_size)
        out.append(model(x.contiguous(memory_format=torch.channels_last)).argmax(1).cpu())
    return torch.cat(out) if out else torch.empty(0, dtype=torch.long)


# ----------------------------------------------------------------------------------------------- data
def open_labelled_images(data: str | Path, layout: str, size: int, *, include_background: bool = False) -> ImageFolder:
    """Every labelled image of a single-label data set, for the Caltech protocol.

    ``caltech101`` and ``caltech256`` are the sets' own layouts (see :mod:`zfnet.data.caltech`);
    ``folders`` pools the ``train/`` and ``val/`` class folders of an image-folder tree (such as the
    synthetic data set), or reads ``DATA/<class>/*`` when there is no ``train/``.

    Example:
        >>> ds = open_labelled_images("data/synth-secondary", "folders", 128)  # doctest: +SKIP
    """
    data = Path(data)
    if layout == "caltech101":
        return open_caltech101(data, size, include_background=include_background)
    if layout == "caltech256":
        return open_caltech256(data, size, include_clutter=include_background)
    if layout != "folders":
        raise DataError(f"layout {layout!r} has no single-label image pool; valid: caltech101, caltech256, folders")
    if not data.is_dir():
        raise DataError(f"data folder {data} does not exist")
    if not (data / "train").is_dir():
        return open_dataset(data.parent, data.name, size, layout="folders")
    train = open_dataset(data, "train", size, layout="folders")
    samples = list(train.samples)
    if (data / "val").is_dir():
        samples += open_dataset(data, "val", size, layout="folders", classes=train.classes).samples
    return ImageFolder(samples, train.classes, size, root=data, class_names=train.class_names)


# --------------------------------------------------------------------------------- resumable progress
class _Ledger:
    """Finished pieces of an experiment in ``OUT/<kind>.partial.json``, valid while its key matches."""

    def __init__(self, path: Path, key: dict[str, Any]) -> None:
        self.path = path
        self.key = json.loads(json.dumps(key))
        self.done: dict[str, Any] = {}
        if path.is_file():
            try:
                saved = json.loads(path.read_text())
            except ValueError:
                saved = {}
            if saved.get("key") == self.key:
                self.done = dict(saved.get("done", {}))
                if self.done:
                    log.info("resuming: %d finished piece(s) read from %s", len(self.done), path)

    def get(self, name: str) -> Any:
        return self.done.get(name)

    def put(self, name: str, value: Any) -> None:
        self.done[name] = value
        atomic_write_json(self.path, {"key": self.key, "done": self.done})


def _l2_json(l2: float | str | None) -> float | str:
    return "1/N" if l2 is None else l2 if isinstance(l2, str) else float(l2)


def _mean_std(values: Sequence[float]) -> dict[str, Any]:
    arr = np.asarray(values, dtype=np.float64)
    std = float(arr.std(ddof=1)) if len(arr) > 1 else 0.0
    return {"mean": float(arr.mean()), "std": std, "per_split": [float(v) for v in arr]}


def _pct(entry: dict[str, Any] | None) -> str:
    if entry is None:
        return "—"
    return f"{100 * entry['mean']:.1f} ± {100 * entry['std']:.1f}"


def _paper_pct(value: tuple[float, float | None] | None) -> str:
    if value is None:
        return "—"
    mean, std = value
    return f"{mean:.1f}" + (f" ± {std:g}" if std is not None else "")


def _markdown(table: dict[str, Any]) -> str:
    cols = table["columns"]
    lines = [f"**{table['caption']}**", "", "| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    lines += ["| " + " | ".join(str(v) for v in row) + " |" for row in table["rows"]]
    return "\n".join(lines) + "\n"


def _csv(tables: Sequence[dict[str, Any]]) -> str:
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    for i, table in enumerate(tables):
        if i:
            writer.writerow([])
        writer.writerow([table["caption"]])
        writer.writerow(table["columns"])
        writer.writerows(table["rows"])
    return buf.getvalue()


def _write_outputs(out: Path, kind: str, result: dict[str, Any]) -> list[Path]:
    """Write ``OUT/<kind>.json`` (numbers and report block), ``<kind>.md`` and ``<kind>.csv`` atomically."""
    tables = result["report"]["tables"]
    md = f"# {result['report']['title']}\n\n{result['report']['summary']}\n\n" + "\n".join(_markdown(t) for t in tables)
    return [atomic_write_json(out / f"{kind}.json", result), atomic_write_text(out / f"{kind}.md", md),
            atomic_write_text(out / f"{kind}.csv", _csv(tables))]


def _save_figure(fig, path: Path) -> Path:
    """Write a matplotlib figure as PNG atomically (Agg canvas, no pyplot state)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    FigureCanvasAgg(fig)
    return atomic_write(path, lambda tmp: fig.savefig(tmp, format="png", dpi=110, facecolor="white"))


# ------------------------------------------------------------------------------------------ experiment
@dataclass
class TransferResult:
    """What :func:`run_transfer` measured; ``json`` is what it wrote to ``OUT/transfer.json``."""

    out: Path
    json: dict[str, Any]
    files: list[Path] = field(default_factory=list)

    def summary(self) -> str:
        lines = [self.json["report"]["summary"]]
        lines += [f"  {p}" for p in self.files]
        return "\n".join(lines)


def _loaded_run(run):
    from ..train.checkpoint import LoadedRun, load_run

    return run if isinstance(run, LoadedRun) else load_run(run)


def run_transfer(run, data: str | Path, out: str | Path, *, layout: str = "folders",
                 per_class: Sequence[int] = (15, 30), splits: int = 5, seed: int = 0,
                 test_cap: int | None = None, baseline: bool = True, untrained: bool = True,
                 recipe: ScratchRecipe = ScratchRecipe(), l2: float | str | None = None, layer: str = "fc7",
                 include_background: bool = False, features_dir: str | Path | None = None, batch_size: int = 64,
                 workers: int | None = 0, device: str | torch.device = "cpu",
                 show_progress: bool = True) -> TransferResult:
    """Tables 4-6: a new softmax on a trained network's frozen layers 1-7, against training from scratch.

    Caltech-style layouts (``caltech101``, ``caltech256``, ``folders``): for each number of training
    images per class and each of ``splits`` random splits (:func:`~zfnet.data.caltech.sample_splits`),
    a softmax on the ``layer`` features of the training images, scored by mean per-class accuracy on
    the split's test images; with ``baseline``, the same architecture trained from scratch on the same
    images and scored on the same test images; with ``untrained``, a softmax on the ``layer`` features of
    the same architecture at its initialisation (random weights, frozen), which shows how much of the
    transfer comes from pretraining rather than from a linear read-out of many features.
    ``voc2012``: one-vs-all logistic classifiers trained on VOC's ``train`` set and scored by average
    precision per class on ``val`` (VOC's test labels are not public); no baselines.

    Writes ``OUT/transfer.json`` (every number, the paper's, and a ``report`` block), ``transfer.md``,
    ``transfer.csv`` and ``transfer.png``. Features are cached in ``features_dir`` (default
    ``OUT/features``) and finished splits in ``OUT/transfer.partial.json``, so a re-run after an
    interruption skips the work already done.

    Args:
        run: a run directory (or a :class:`~zfnet.train.LoadedRun`, such as a model zfnet did not train).
        data: the target data set's folder.
        out: output folder.
        layout: ``caltech101``, ``caltech256``, ``voc2012`` or ``folders``.
        per_class: training images per class, one experiment each.
        splits: random splits per experiment.
        seed: seed of the splits and of the baselines' training.
        test_cap: test images per class at most (default: 50 for Caltech-101, 25 for Caltech-256, all
            the rest otherwise).
        baseline: also train the architecture from scratch on each split (zfnet runs only: a model
            zfnet did not train has no recipe here, and skips it with a warning).
        untrained: also score a softmax on the features of the untrained architecture (cheap).
        recipe: the baseline's training.
        l2: the softmax's L2 penalty: None for ``1 / N`` (N training images), ``"cv"`` for 3-fold
            cross-validation on the training images, or a number.
        layer: the layer whose output feeds the new softmax (the paper's: fc7).
        include_background: keep Caltech-101's ``BACKGROUND_Google`` / Caltech-256's clutter class.
        features_dir: the feature cache (default ``OUT/features``).
        batch_size: images per forward pass.
        workers: DataLoader processes decoding images (0: this process; None: cores - 1).
        device: where the network and classifiers run.
        show_progress: progress bars.

    Returns:
        A :class:`TransferResult`.

    Raises:
        DataError: bad data, a class too small for ``per_class``, an unknown layout.

    Example:
        >>> r = run_transfer("runs/zfnet", "data/secondary", "out/transfer", per_class=(15, 30))  # doctest: +SKIP
        >>> r.json["pretrained"]["15"]["mean"]  # doctest: +SKIP
    """
    t0 = time.perf_counter()
    if layout not in LAYOUTS:
        raise DataError(f"unknown layout {layout!r}; valid: {', '.join(LAYOUTS)}")
    per_class = sorted({int(n) for n in per_class})
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    loaded = _loaded_run(run)
    if baseline and not loaded.is_run:
        log.warning("%s was not trained by zfnet: no from-scratch baseline (its recipe is unknown)", loaded.root)
        baseline = False
    device = torch.device(device)
    model = loaded.model.to(device)
    cache = Path(features_dir) if features_dir is not None else out / "features"
    if layout == "voc2012":
        return _run_voc(loaded, model, data, out, layer=layer, l2=l2, cache=cache, batch_size=batch_size,
                        workers=workers, device=device, show_progress=show_progress, t0=t0)

    dataset = open_labelled_images(data, layout, loaded.base_size, include_background=include_background)
    cap = test_cap if test_cap is not None else TEST_CAPS.get(layout)
    stream = ImageStream(dataset, workers=workers, cache="auto", show_progress=show_progress)
    feats = extract_features(model, stream, loaded.normalization, input_size=loaded.input_size, layers=(layer,),
                             batch_size=batch_size, cache_dir=cache, show_progress=show_progress)
    t_features = time.perf_counter() - t0
    num_classes = len(dataset.classes)
    meta = loaded.metadata
    key = {"features": feats.fingerprint, "layout": layout, "seed": seed,
           "test_cap": cap, "layer": layer, "l2": l2, "recipe": asdict(recipe), "images": len(dataset),
           "readable": len(feats.indices), "include_background": include_background}
    ledger = _Ledger(out / "transfer.partial.json", key)
    random_feats = None
    if untrained:
        torch.manual_seed(seed)
        random_model = loaded.untrained()
        # Its own cache folder: the per-layer files of the pretrained network stay valid beside it.
        random_feats = extract_features(random_model.to(device), stream, loaded.normalization,
                                        input_size=loaded.input_size, layers=(layer,), batch_size=batch_size,
                                        cache_dir=cache / "untrained", show_progress=show_progress)
    pretrained: dict[str, list[float]] = {}
    scratch: dict[str, list[float]] = {}
    random_init: dict[str, list[float]] = {}
    penalties: dict[str, list[float]] = {}
    t_scratch = 0.0
    labels = np.asarray(dataset.targets, dtype=np.int64)
    splits_of = {n: sample_splits(labels, n, splits, seed=seed, test_cap=cap, candidates=feats.indices.numpy())
                 for n in per_class}
    jobs = [(n, s) for n in per_class for s in range(splits)]
    bar = progress(total=len(jobs), desc="transfer splits", unit="split", enabled=show_progress)
    with bar:
        for n, s in jobs:
            split = splits_of[n][s]
            name = f"{n}/{s}"
            done = ledger.get(f"pretrained {name}")
            if done is None:
                done = _softmax_split(feats, layer, split, l2, num_classes, seed + s, device)
                ledger.put(f"pretrained {name}", done)
            pretrained.setdefault(str(n), []).append(done["accuracy"])
            penalties.setdefault(str(n), []).append(done["l2"])
            if random_feats is not None:
                done = ledger.get(f"untrained {name}")
                if done is None:
                    done = _softmax_split(random_feats, layer, split, l2, num_classes, seed + s, device)
                    ledger.put(f"untrained {name}", done)
                random_init.setdefault(str(n), []).append(done["accuracy"])
            if baseline:
                done = ledger.get(f"scratch {name}")
                if done is None:
                    t1 = time.perf_counter()
                    done = {"accuracy": _scratch_split(meta, stream, split, num_classes, recipe, seed + s, device,
                                                       show_progress)}
                    t_scratch += time.perf_counter() - t1
                    ledger.put(f"scratch {name}", done)
                scratch.setdefault(str(n), []).append(done["accuracy"])
            bar.update(1)
    result = {
        "kind": "transfer",
        "run": str(loaded.root), "model": meta.get("model"), "data": str(data), "layout": layout,
        "classes": num_classes, "images": len(dataset), "readable_images": len(feats.indices),
        "per_class": per_class, "splits": splits, "seed": seed, "test_cap": cap, "layer": layer,
        "feature_dim": int(feats.layers[layer].shape[1]), "classifier": "softmax",
        "l2": _l2_json(l2), "l2_chosen": penalties,
        "pretrained": {k: _mean_std(v) for k, v in pretrained.items()},
        "scratch": {k: _mean_std(v) for k, v in scratch.items()} if baseline else None,
        "scratch_recipe": asdict(recipe) if baseline else None,
        "untrained": {k: _mean_std(v) for k, v in random_init.items()} if untrained else None,
        "chance": 1.0 / num_classes,
        "paper": {k: {m: {str(n): list(v) for n, v in d.items()} for m, d in rows.items()}
                  for k, rows in PAPER_TRANSFER.items()},
        "seconds": {"features": t_features, "scratch_training_this_call": t_scratch,
                    "total_this_call": time.perf_counter() - t0},
    }
    result["report"] = _transfer_report(result, loaded.root.name, Path(data).name)
    files = _write_outputs(out, "transfer", result)
    files.append(_transfer_figure(result, out / "transfer.png"))
    return TransferResult(out, result, files)


def _softmax_split(feats: FeatureSet, layer: str, split, l2, num_classes: int, seed: int,
                   device: torch.device) -> dict[str, float]:
    x_tr, x_te = feats.take(layer, split.train).to(device), feats.take(layer, split.test).to(device)
    y_tr = feats.labels[feats.rows(split.train)].to(device)
    y_te = feats.labels[feats.rows(split.test)].to(device)
    score, penalty = fit_and_score(x_tr, y_tr, x_te, y_te, kind="softmax", l2=l2, num_classes=num_classes, seed=seed)
    return {"accuracy": score, "l2": penalty}


def _scratch_split(meta: dict[str, Any], stream: ImageStream, split, num_classes: int, recipe: ScratchRecipe,
                   seed: int, device: torch.device, show_progress: bool) -> float:
    train_images, train_labels = _gather(stream, split.train)
    model, mean = train_from_scratch(meta["model"], train_images, train_labels, num_classes=num_classes,
                                     model_options=meta.get("model_options", {}), recipe=recipe, seed=seed,
                                     device=device, show_progress=show_progress)
    test_images, test_labels = _gather(stream, split.test)
    predicted = _predict_labels(model, test_images, mean)
    return per_class_accuracy(predicted.numpy(), test_labels.numpy())


def _gather(stream: ImageStream, indices: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
    images, labels = [], []
    for batch in stream.batches(indices.tolist(), 256):
        images.append(batch.images)
        labels.append(batch.labels)
    return torch.cat(images), torch.cat(labels)


def _transfer_report(result: dict[str, Any], run_name: str, data_name: str) -> dict[str, Any]:
    layout = result["layout"]
    ns = result["per_class"]
    paper_key = layout if layout in PAPER_TRANSFER else "caltech101"
    paper = PAPER_TRANSFER[paper_key]
    paper_name = {"caltech101": "Caltech-101", "caltech256": "Caltech-256"}[paper_key]
    columns = ["model"] + [f"{n}/class" for n in ns]
    rows = [[f"{run_name}: frozen layers 1-7 ({result['layer']}), new softmax"]
            + [_pct(result["pretrained"].get(str(n))) for n in ns]]
    if result["scratch"] is not None:
        rows.append([f"{result['model']} from scratch"] + [_pct(result["scratch"].get(str(n))) for n in ns])
    if result.get("untrained") is not None:
        rows.append([f"{result['model']} untrained (random weights), frozen, new softmax"]
                    + [_pct(result["untrained"].get(str(n))) for n in ns])
    rows.append(["chance"] + [f"{100 * result['chance']:.1f}" for _ in ns])
    for label, key in (("pretrained", "pretrained"), ("from scratch", "scratch"), ("Bo et al.", "Bo et al.")):
        rows.append([f"paper, {paper_name}: {label}"] + [_paper_pct(paper[key].get(n)) for n in ns])
    table = {"caption": f"Mean per-class accuracy % (mean ± std over {result['splits']} splits) on {data_name}, "
                        f"beside the paper's Table {4 if paper_key == 'caltech101' else 5}",
             "columns": columns, "rows": rows}
    first = str(ns[0])
    pre = result["pretrained"][first]
    text = (f"With {ns[0]} training images per class, a new softmax on {run_name}'s frozen {result['layer']} "
            f"features reaches {100 * pre['mean']:.1f} ± {100 * pre['std']:.1f}% mean per-class accuracy on "
            f"{data_name} ({result['classes']} classes, chance {100 * result['chance']:.1f}%)")
    if result["scratch"] is not None:
        sc = result["scratch"][first]
        text += f", against {100 * sc['mean']:.1f} ± {100 * sc['std']:.1f}% for the same network trained from scratch."
    else:
        text += "."
    shared = [n for n in ns if paper["pretrained"].get(n) is not None]
    if shared:
        text += (f" The paper's {paper_name} figures at {shared[0]} per class are "
                 f"{_paper_pct(paper['pretrained'].get(shared[0]))}% (pretrained) and "
                 f"{_paper_pct(paper['scratch'].get(shared[0]))}% (from scratch).")
    else:
        known = ", ".join(str(n) for n in sorted(paper["pretrained"]))
        text += f" The paper reports {paper_name} at {known} training images per class."
    return {"title": f"Transfer of frozen features to {data_name} (Tables 4-5)", "summary": text,
            "figures": [{"path": "transfer.png", "caption": "Mean per-class accuracy against training images per "
                         "class: frozen pretrained features with a new softmax, training from scratch, and frozen "
                         "features of the untrained network (error bars: std over splits)."}],
            "tables": [table]}


def _transfer_figure(result: dict[str, Any], path: Path) -> Path:
    from matplotlib.figure import Figure

    fig = Figure(figsize=(4.8, 3.4))
    ax = fig.add_subplot()
    ns = result["per_class"]
    series = [("frozen features + softmax", result["pretrained"], "o-")]
    if result["scratch"] is not None:
        series.append(("from scratch", result["scratch"], "s--"))
    if result.get("untrained") is not None:
        series.append(("untrained, frozen + softmax", result["untrained"], "^:"))
    for label, data, style in series:
        ax.errorbar(ns, [100 * data[str(n)]["mean"] for n in ns], yerr=[100 * data[str(n)]["std"] for n in ns],
                    fmt=style, capsize=3, label=label)
    ax.axhline(100 * result["chance"], color="grey", lw=0.8, ls=":", label="chance")
    ax.set_xlabel("training images per class")
    ax.set_ylabel("mean per-class accuracy %")
    ax.set_xticks(ns)
    ax.set_ylim(0, 100)
    ax.legend(fontsize=8)
    fig.tight_layout()
    return _save_figure(fig, path)


def _run_voc(loaded, model: nn.Module, data, out: Path, *, layer: str, l2, cache: Path, batch_size: int,
             workers, device: torch.device, show_progress: bool, t0: float) -> TransferResult:
    sets = {}
    for name in ("train", "val"):
        voc = open_voc(data, name, loaded.base_size)
        stream = ImageStream(voc.images, workers=workers, cache="auto", show_progress=show_progress)
        feats = extract_features(model, stream, loaded.normalization, input_size=loaded.input_size,
                                 layers=(layer,), batch_size=batch_size, cache_dir=cache / name,
                                 show_progress=show_progress)
        sets[name] = (voc, feats)
    (voc_tr, f_tr), (voc_va, f_va) = sets["train"], sets["val"]
    x_tr, y_tr = f_tr.layers[layer].to(device), voc_tr.targets[f_tr.indices].to(device)
    penalty = resolve_l2(l2, x_tr, y_tr, kind="logistic")
    clf = fit_linear(x_tr, y_tr, kind="logistic", l2=penalty)
    scores = clf.scores(f_va.layers[layer].to(device)).cpu().numpy()
    targets = voc_va.targets[f_va.indices].numpy()
    usable = [j for j in range(targets.shape[1]) if (targets[:, j] > 0).any()]
    aps, mean_ap = mean_average_precision(scores[:, usable], targets[:, usable])
    ap = {voc_va.classes[j]: a for j, a in zip(usable, aps)}
    result = {
        "kind": "transfer", "run": str(loaded.root), "model": loaded.metadata.get("model"), "data": str(data),
        "layout": "voc2012", "train_set": "train", "test_set": "val", "layer": layer, "classifier": "logistic",
        "train_images": len(f_tr.indices), "test_images": len(f_va.indices), "l2": _l2_json(l2),
        "l2_chosen": penalty, "ap": ap, "map": mean_ap, "paper": {"map": PAPER_VOC_MAP, "published_best": [74.3, 82.2]},
        "seconds": {"total_this_call": time.perf_counter() - t0},
    }
    rows = [[c, f"{100 * a:.1f}"] for c, a in ap.items()]
    rows.append(["mean", f"{100 * mean_ap:.1f}"])
    rows.append(["paper (test set), mean", f"{PAPER_VOC_MAP:.1f}"])
    result["report"] = {
        "title": "Transfer of frozen features to PASCAL VOC 2012 (Table 6)",
        "summary": (f"One-vs-all logistic classifiers on {loaded.root.name}'s frozen {layer} features, trained on "
                    f"VOC 2012 train, reach {100 * mean_ap:.1f}% mean average precision on val. The paper "
                    f"reports {PAPER_VOC_MAP:.1f}% on the test set with an ImageNet-trained ZFNet."),
        "figures": [],
        "tables": [{"caption": "Average precision % per class on VOC 2012 val, beside the paper's Table 6 mean",
                    "columns": ["class", "AP %"], "rows": rows}],
    }
    files = _write_outputs(out, "transfer", result)
    return TransferResult(out, result, files)


def transfer_study(run, data: str | Path, out: str | Path, *, per_class: Sequence[int] = (15, 30), splits: int = 5,
                   probe_per_class: int = 30, seed: int = 0, baseline: bool = True,
                   recipe: ScratchRecipe = ScratchRecipe(), layout: str = "folders", workers: int | None = 0,
                   device: str | torch.device = "cpu", show_progress: bool = True,
                   progress_fn: Callable[[str], None] | None = None) -> dict[str, Any]:
    """The miniature of §5.2: transfer with and without pretraining (Tables 4-5) and layer probes (Table 7).

    Runs :func:`run_transfer` and :func:`~zfnet.analysis.probes.run_probes` into ``OUT`` on one shared
    feature cache (``OUT/features``), so each image's features are computed once.

    Args:
        run: the pretrained run directory (e.g. trained on the synthetic primary classes).
        data: the target data set (e.g. the synthetic secondary classes).
        out: output folder: ``transfer.*``, ``probes.*``, ``features/``.
        per_class: training images per class of the transfer experiment.
        splits: random splits of both experiments.
        probe_per_class: training images per class of the probes.
        seed, baseline, recipe, layout, workers, device, show_progress: as in :func:`run_transfer`.
        progress_fn: called with a line of text as each stage starts (for a caller's log).

    Returns:
        ``{"transfer": transfer.json's content, "probes": probes.json's content, "seconds": {...}}``.

    Example:
        >>> study = transfer_study("demo/runs/zfnet", "demo/secondary", "demo/transfer")  # doctest: +SKIP
        >>> study["transfer"]["pretrained"]["15"]["mean"] > study["transfer"]["scratch"]["15"]["mean"]  # doctest: +SKIP
        True
    """
    from .probes import run_probes

    say = progress_fn or (lambda text: log.info("%s", text))
    out = Path(out)
    loaded = _loaded_run(run)
    t0 = time.perf_counter()
    say("probes: features of conv1 ... fc7 and a linear classifier per layer")
    probes = run_probes(loaded, data, out, layout=layout, per_class=probe_per_class, splits=splits, seed=seed,
                        workers=workers, device=device, show_progress=show_progress)
    t1 = time.perf_counter()
    say("transfer: a new softmax on frozen fc7 features" + (", and training from scratch" if baseline else ""))
    transfer = run_transfer(loaded, data, out, layout=layout, per_class=per_class, splits=splits, seed=seed,
                            baseline=baseline, recipe=recipe, workers=workers, device=device,
                            show_progress=show_progress)
    t2 = time.perf_counter()
    return {"transfer": transfer.json, "probes": probes.json,
            "seconds": {"probes": t1 - t0, "transfer": t2 - t1, "total": t2 - t0}}
