"""Layer-wise probes: how well each layer's features alone classify a new data set (Table 7).

Zeiler & Fergus (2014, §5.2, Table 7) train a linear SVM or a softmax on the features of one layer of
the ImageNet-trained network at a time and report Caltech-101 (30 images per class) and Caltech-256
(60 per class) accuracy: it rises with depth, from 44.8 % (SVM on layer 1) to 86.2 % (layer 5) on
Caltech-101 and from 24.6 % to 71.7 % (layer 7) on Caltech-256.

Here every layer from conv1 to fc7 is probed with both classifiers (:func:`probe_layers`). A conv
layer's maps are average-pooled to a 4 x 4 grid first (see :mod:`zfnet.analysis.features`: the paper
does not say how it fed the large conv maps to its classifiers, and pooling keeps every layer's
dimension within a few thousand). Each layer's features are extracted once per image and cached;
the splits and both classifiers reuse them. The classifiers' L2 penalty is ``1 / N`` for N training
images (LIBLINEAR's ``C = 1``) unless another is given, or ``"cv"`` to choose it by cross-validation
on each split's training images (:func:`~zfnet.analysis.linear.select_l2`).

:func:`depth_trend` says how steadily accuracy rises with depth. The experiment that extracts the
features, draws the splits and writes the table beside the paper's is :mod:`zfnet.experiments.probes`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol

import numpy as np
import torch

from ..data.caltech import Split
from ..progress import progress
from .features import FeatureSet
from .linear import fit_and_score

__all__ = ["PROBE_CLASSIFIERS", "LAYER_NUMBER", "FinishedFits", "probe_layers", "depth_trend"]

PROBE_CLASSIFIERS = ("svm", "softmax")
LAYER_NUMBER = {"conv1": 1, "conv2": 2, "conv3": 3, "conv4": 4, "conv5": 5, "fc6": 6, "fc7": 7}
"""The paper's layer numbers (Table 7's rows) of ZFNet's layers."""


class FinishedFits(Protocol):
    """Where :func:`probe_layers` keeps finished fits, to resume (a
    :class:`~zfnet.experiments.ledger.Ledger`): ``get`` gives None for a fit not done yet."""

    def get(self, name: str) -> Any: ...

    def put(self, name: str, value: Any) -> None: ...


def probe_layers(features: FeatureSet, splits: Sequence[Split], *,
                 classifiers: Sequence[str] = PROBE_CLASSIFIERS, l2: float | str | None = None,
                 num_classes: int | None = None, device: str | torch.device = "cpu",
                 ledger: FinishedFits | None = None, show_progress: bool = True) -> dict[str, dict[str, list[float]]]:
    """Mean per-class test accuracy of a linear classifier on each layer's features, for every split.

    Args:
        features: the cached features (every layer to probe).
        splits: the train / test splits (data set indices).
        classifiers: any of ``"svm"`` (one-vs-rest linear SVM) and ``"softmax"``.
        l2: the L2 penalty: None for ``1 / N``, ``"cv"`` to cross-validate it on each split's training
            images, or a number.
        num_classes: the number of classes (default: largest label + 1).
        device: where the classifiers are trained.
        ledger: where finished fits are kept (to resume).
        show_progress: a progress bar.

    Returns:
        ``{classifier: {layer: [accuracy of each split]}}``.

    Example:
        >>> acc = probe_layers(feats, sample_splits(labels, 30, 5))  # doctest: +SKIP
        >>> acc["svm"]["fc7"]  # doctest: +SKIP
    """
    bad = [c for c in classifiers if c not in PROBE_CLASSIFIERS]
    if bad:
        raise ValueError(f"unknown probe classifier {bad[0]!r}; valid: {', '.join(PROBE_CLASSIFIERS)}")
    device = torch.device(device)
    c = num_classes if num_classes is not None else int(features.labels.max()) + 1
    out: dict[str, dict[str, list[float]]] = {k: {layer: [] for layer in features.layers} for k in classifiers}
    jobs = [(s, layer) for s in range(len(splits)) for layer in features.layers]
    bar = progress(total=len(jobs) * len(classifiers), desc="probes", unit="fit", enabled=show_progress)
    with bar:
        for s, layer in jobs:
            split = splits[s]
            x_tr = x_te = None
            for kind in classifiers:
                name = f"{kind} {layer} {s}"
                done = ledger.get(name) if ledger is not None else None
                if done is None:
                    if x_tr is None:
                        x_tr = features.take(layer, split.train).to(device)
                        x_te = features.take(layer, split.test).to(device)
                        y_tr = features.labels[features.rows(split.train)].to(device)
                        y_te = features.labels[features.rows(split.test)].to(device)
                    score, penalty = fit_and_score(x_tr, y_tr, x_te, y_te, kind=kind, l2=l2, num_classes=c,
                                                   seed=split.seed + s)
                    done = {"accuracy": score, "l2": penalty}
                    if ledger is not None:
                        ledger.put(name, done)
                out[kind][layer].append(done["accuracy"])
                bar.update(1)
    return out


def depth_trend(accuracy_by_layer: Sequence[float]) -> float:
    """Spearman rank correlation between depth (layer order) and accuracy: +1 when accuracy rises at every layer.

    Example:
        >>> round(depth_trend([0.2, 0.4, 0.3, 0.6]), 6)
        0.8
    """
    values = np.asarray(accuracy_by_layer, dtype=np.float64)
    if len(values) < 2:
        raise ValueError("a trend needs at least two layers")
    ranks = np.argsort(np.argsort(values, kind="stable"), kind="stable").astype(np.float64)
    # Average the ranks of ties.
    for v in np.unique(values):
        tie = values == v
        ranks[tie] = ranks[tie].mean()
    depth = np.arange(len(values), dtype=np.float64)
    return float(np.corrcoef(depth, ranks)[0, 1]) if ranks.std() > 0 else 0.0
