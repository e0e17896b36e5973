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
on each split's training images (:func:`~zfnet.analysis.transfer.select_l2`).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..data.caltech import TEST_CAPS, Split, sample_splits
from ..data.loader import ImageStream
from ..errors import DataError
from ..progress import progress
from .features import FEATURE_LAYERS, FeatureSet, extract_features
from .transfer import (
    _l2_json,
    _Ledger,
    _loaded_run,
    _mean_std,
    _pct,
    _save_figure,
    _write_outputs,
    fit_and_score,
    open_labelled_images,
)

__all__ = ["PROBE_CLASSIFIERS", "PAPER_PROBES", "probe_layers", "ProbeResult", "run_probes", "depth_trend"]

PROBE_CLASSIFIERS = ("svm", "softmax")

# Table 7: classifier -> paper layer number -> (Caltech-101 at 30/class, Caltech-256 at 60/class), (mean, std) %.
PAPER_PROBES: dict[str, dict[int, tuple[tuple[float, float], tuple[float, float]]]] = {
    "svm": {1: ((44.8, 0.7), (24.6, 0.4)), 2: ((66.2, 0.5), (39.6, 0.3)), 3: ((72.3, 0.4), (46.0, 0.3)),
            4: ((76.6, 0.4), (51.3, 0.1)), 5: ((86.2, 0.8), (65.6, 0.3)), 7: ((85.5, 0.4), (71.7, 0.2))},
    "softmax": {5: ((82.9, 0.4), (65.7, 0.5)), 7: ((85.4, 0.4), (72.6, 0.1))},
}
_LAYER_NUMBER = {"conv1": 1, "conv2": 2, "conv3": 3, "conv4": 4, "conv5": 5, "fc6": 6, "fc7": 7}


def probe_layers(features: FeatureSet, splits: Sequence[Split], *,
                 classifiers: Sequence[str] = PROBE_CLASSIFIERS, l2: float | str | None = None,
                 num_classes: int | None = None, device: str | torch.device = "cpu",
                 ledger: _Ledger | None = None, show_progress: bool = True) -> dict[str, dict[str, list[float]]]:
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


@dataclass
class ProbeResult:
    """What :func:`run_probes` measured; ``json`` is what it wrote to ``OUT/probes.json``."""

    out: Path
    json: dict[str, Any]
    files: list[Path] = field(default_factory=list)

    def summary(self) -> str:
        return "\n".join([self.json["report"]["summary"]] + [f"  {p}" for p in self.files])


def run_probes(run, data: str | Path, out: str | Path, *, layout: str = "folders", per_class: int = 30,
               splits: int = 5, seed: int = 0, layers: Sequence[str] = FEATURE_LAYERS,
               classifiers: Sequence[str] = PROBE_CLASSIFIERS, grid: int = 4, pool: str = "avg",
               l2: float | str | None = None, test_cap: int | None = None, include_background: bool = False,
               features_dir: str | Path | None = None, batch_size: int = 64, workers: int | None = 0,
               device: str | torch.device = "cpu", show_progress: bool = True) -> ProbeResult:
    """Table 7: a linear SVM and a softmax on each layer's frozen features, accuracy against depth.

    Writes ``OUT/probes.json`` (every number, the paper's, a ``report`` block), ``probes.md``,
    ``probes.csv`` and ``probes.png`` (accuracy against depth). Features are cached in
    ``features_dir`` (default ``OUT/features``, shared with :func:`~zfnet.analysis.transfer.run_transfer`)
    and finished fits in ``OUT/probes.partial.json``, so an interrupted run resumes.

    Args:
        run: a run directory (or a :class:`~zfnet.train.LoadedRun`, such as a model zfnet did not train).
        data: the target data set (``caltech101``, ``caltech256`` or ``folders`` layout).
        out: output folder.
        layout: the data set's layout.
        per_class: training images per class (the paper: 30 for Caltech-101, 60 for Caltech-256).
        splits: random splits.
        seed: seed of the splits.
        layers: the layers to probe, in order of depth.
        classifiers: ``svm`` and / or ``softmax``.
        grid, pool: how conv maps are pooled (see :func:`~zfnet.analysis.features.extract_features`).
        l2: the classifiers' L2 penalty: None for ``1 / N`` (N training images), ``"cv"`` for 3-fold
            cross-validation on the training images, or a number.
        test_cap: test images per class at most (default: 50 Caltech-101, 25 Caltech-256, else all the rest).
        include_background: keep Caltech-101's ``BACKGROUND_Google`` / Caltech-256's clutter class.
        features_dir, batch_size, workers, device, show_progress: as in
            :func:`~zfnet.analysis.transfer.run_transfer`.

    Returns:
        A :class:`ProbeResult`.

    Example:
        >>> r = run_probes("runs/zfnet", "data/secondary", "out/probes", per_class=30)  # doctest: +SKIP
        >>> r.json["results"]["svm"]["fc7"]["mean"]  # doctest: +SKIP
    """
    t0 = time.perf_counter()
    if layout not in ("caltech101", "caltech256", "folders"):
        raise DataError(f"probes need a single-label layout (caltech101, caltech256, folders), got {layout!r}")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    loaded = _loaded_run(run)
    device = torch.device(device)
    model = loaded.model.to(device)
    dataset = open_labelled_images(data, layout, loaded.base_size, include_background=include_background)
    stream = ImageStream(dataset, workers=workers, cache="auto", show_progress=show_progress)
    cache = Path(features_dir) if features_dir is not None else out / "features"
    feats = extract_features(model, stream, loaded.normalization, input_size=loaded.input_size, layers=layers,
                             grid=grid, pool=pool, batch_size=batch_size, cache_dir=cache, show_progress=show_progress)
    t_features = time.perf_counter() - t0
    cap = test_cap if test_cap is not None else TEST_CAPS.get(layout)
    labels = np.asarray(dataset.targets, dtype=np.int64)
    chosen = sample_splits(labels, per_class, splits, seed=seed, test_cap=cap, candidates=feats.indices.numpy())
    key = {"features": feats.fingerprint, "layout": layout, "seed": seed,
           "per_class": per_class, "test_cap": cap, "grid": grid, "pool": pool, "l2": l2,
           "readable": len(feats.indices), "include_background": include_background}
    ledger = _Ledger(out / "probes.partial.json", key)
    accuracy = probe_layers(feats, chosen, classifiers=classifiers, l2=l2, num_classes=len(dataset.classes),
                            device=device, ledger=ledger, show_progress=show_progress)
    names = list(feats.layers)
    results = {kind: {layer: _mean_std(v) for layer, v in by_layer.items()} for kind, by_layer in accuracy.items()}
    trend = {kind: depth_trend([results[kind][n]["mean"] for n in names]) for kind in results}
    result = {
        "kind": "probes", "run": str(loaded.root), "model": loaded.metadata.get("model"), "data": str(data),
        "layout": layout, "classes": len(dataset.classes), "images": len(dataset),
        "readable_images": len(feats.indices), "per_class": per_class, "splits": splits, "seed": seed,
        "test_cap": cap, "layers": names, "classifiers": list(classifiers), "grid": grid, "pool": pool,
        "l2": _l2_json(l2),
        "feature_dims": {n: int(feats.layers[n].shape[1]) for n in names},
        "results": results, "depth_trend": trend, "chance": 1.0 / len(dataset.classes),
        "paper": {kind: {str(n): {"caltech101": list(v[0]), "caltech256": list(v[1])} for n, v in rows.items()}
                  for kind, rows in PAPER_PROBES.items()},
        "seconds": {"features": t_features, "total_this_call": time.perf_counter() - t0},
    }
    result["report"] = _report(result, loaded.root.name, Path(data).name)
    files = _write_outputs(out, "probes", result)
    files.append(_figure(result, out / "probes.png"))
    return ProbeResult(out, result, files)


def _report(result: dict[str, Any], run_name: str, data_name: str) -> dict[str, Any]:
    rows = []
    label = {"svm": "SVM", "softmax": "Softmax"}  # the paper's row names
    for kind in result["classifiers"]:
        for layer in result["layers"]:
            number = _LAYER_NUMBER.get(layer)
            paper = PAPER_PROBES.get(kind, {}).get(number) if number else None
            rows.append([f"{label[kind]} ({number if number else layer})", layer, result["feature_dims"][layer],
                         _pct(result["results"][kind][layer]),
                         f"{paper[0][0]} ± {paper[0][1]}" if paper else "—",
                         f"{paper[1][0]} ± {paper[1][1]}" if paper else "—"])
    table = {"caption": f"Mean per-class accuracy % of a classifier on one layer's features ({result['per_class']} "
                        f"training images per class, mean ± std over {result['splits']} splits), beside the "
                        "paper's Table 7",
             "columns": ["classifier (layer)", "layer", "features", f"{data_name} (ours)",
                         "paper Caltech-101 (30/class)", "paper Caltech-256 (60/class)"],
             "rows": rows}
    first = result["classifiers"][0]
    by_layer = result["results"][first]
    best = max(result["layers"], key=lambda n: by_layer[n]["mean"])
    name = "linear SVM" if first == "svm" else "softmax"
    summary = (f"A {name} on {run_name}'s {result['layers'][0]} features scores "
               f"{_pct(by_layer[result['layers'][0]])}% on {data_name} and on {result['layers'][-1]} "
               f"{_pct(by_layer[result['layers'][-1]])}% (best: {best}, {_pct(by_layer[best])}%; chance "
               f"{100 * result['chance']:.1f}%). The rank correlation of accuracy with depth is "
               f"{result['depth_trend'][first]:+.2f}; in the paper's Table 7 accuracy rises with depth on "
               f"both Caltech sets.")
    return {"title": f"Layer-wise probes on {data_name} (Table 7)", "summary": summary,
            "figures": [{"path": "probes.png", "caption": "Mean per-class accuracy of a linear classifier on each "
                         "layer's frozen features (error bars: std over splits)."}],
            "tables": [table]}


def _figure(result: dict[str, Any], path: Path) -> Path:
    from matplotlib.figure import Figure

    fig = Figure(figsize=(5.2, 3.4))
    ax = fig.add_subplot()
    names = result["layers"]
    xs = np.arange(len(names))
    styles = {"svm": "o-", "softmax": "s--"}
    for kind in result["classifiers"]:
        data = result["results"][kind]
        ax.errorbar(xs, [100 * data[n]["mean"] for n in names], yerr=[100 * data[n]["std"] for n in names],
                    fmt=styles.get(kind, "o-"), capsize=3, label={"svm": "linear SVM", "softmax": "softmax"}[kind])
    ax.axhline(100 * result["chance"], color="grey", lw=0.8, ls=":", label="chance")
    ax.set_xticks(xs, names)
    ax.set_xlabel("layer")
    ax.set_ylabel("mean per-class accuracy %")
    ax.set_ylim(0, 100)
    ax.legend(fontsize=8)
    fig.tight_layout()
    return _save_figure(fig, path)
