"""Linear classifiers on fixed features: a softmax, a linear SVM, one-vs-all logistic regressions.

The read-out of Zeiler & Fergus (2014, §5.2): a new softmax on a trained network's frozen fc7 for
another data set (Tables 4-6), and a linear SVM or a softmax on one layer's features at a time
(Table 7). :func:`fit_linear` trains one by full-batch L-BFGS on standardised features: a softmax
(multinomial logistic regression), a one-vs-rest linear SVM (squared hinge, the L2-SVM of LIBLINEAR
and scikit-learn's ``LinearSVC``), or one-vs-all logistic regressions for multi-label targets (VOC).
The L2 penalty is ``1 / N`` for N training images by default, which is LIBLINEAR's and scikit-learn's
default ``C = 1`` (their objective ``C * sum of losses + |w|^2 / 2`` divided by ``C * N``), or chosen by
3-fold cross-validation on the training images alone (``l2="cv"``, :func:`select_l2`): the test images
never influence training.

Example:
    >>> x = torch.tensor([[0.0], [1.0], [4.0], [5.0]]); y = torch.tensor([0, 0, 1, 1])
    >>> fit_and_score(x, y, torch.tensor([[0.5], [4.5]]), torch.tensor([0, 1]), kind="svm", l2=0.1)
    (1.0, 0.1)
"""

from __future__ import annotations

from collections.abc import Sequence
from contextlib import contextmanager
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from ..data.caltech import per_class_accuracy
from ..data.voc import mean_average_precision

__all__ = ["CLASSIFIERS", "L2_GRID", "LinearClassifier", "fit_linear", "select_l2", "default_l2", "resolve_l2",
           "fit_and_score", "score"]

CLASSIFIERS = ("softmax", "svm", "logistic")
L2_GRID: tuple[float, ...] = (1e-4, 1e-3, 1e-2, 1e-1, 1.0)
SMALL_PROBLEM_FLOPS = 2e8  # a loss evaluation below this many FLOPs runs on one thread


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


def score(clf: LinearClassifier, x: torch.Tensor, y: torch.Tensor) -> float:
    """A classifier's score on ``(x, y)``: mean per-class accuracy, or mean average precision (over the classes
    with a positive image) for multi-label targets."""
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
            scores[i] += score(previous, x[held_t], y[held_t])
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
    return score(clf, x_test, y_test), penalty
