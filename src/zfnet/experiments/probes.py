"""``zfnet experiment probes``: a linear classifier on each layer's frozen features (the paper's Table 7).

Zeiler & Fergus (2014, §5.2, Table 7) train a linear SVM or a softmax on one layer of their
ImageNet-trained network at a time: on Caltech-101 (30 images per class) accuracy rises from 44.8 %
(SVM, layer 1) to 86.2 % (layer 5), on Caltech-256 (60 per class) from 24.6 % to 71.7 % (layer 7).

:func:`run` extracts the features of conv1 ... conv5 (average-pooled to a grid), fc6 and fc7 once per
image (:func:`~zfnet.analysis.features.extract_features`, cached in ``OUT/features``), draws
``splits`` random splits of ``per_class`` training images per class, fits both classifiers on every
layer (:func:`~zfnet.analysis.probes.probe_layers`) and writes ``OUT/probes.json`` (with ``.md`` and
``.csv`` tables beside the paper's) and ``probes.png`` (accuracy against depth). Finished fits are kept
in ``OUT/probes.partial.json``: a run interrupted and started again redoes only what was not finished.

Under ``torchrun`` the feature extraction, the one pass over the data set, is shared by the processes
(each its share of the images, every process ending with all the features, equal to one process's);
rank 0 then fits the classifiers and writes, and the other processes stop.

Example:
    >>> from zfnet.experiments import probes
    >>> result = probes.run(probes.Config(run="runs/zfnet", data="data/secondary"), "out/probes")  # doctest: +SKIP
    >>> result["results"]["svm"]["fc7"]["mean"]  # doctest: +SKIP
"""

from __future__ import annotations

import re
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .._validate import describe_value, limits
from ..analysis.features import FEATURE_LAYERS, POOLS, extract_features
from ..analysis.probes import LAYER_NUMBER, PROBE_CLASSIFIERS, depth_trend, probe_layers
from ..data.caltech import TEST_CAPS, sample_splits
from ..data.labelled import SINGLE_LABEL_LAYOUTS, open_labelled_images
from ..data.loader import ImageStream
from ..errors import ZFNetError
from ..paper import PAPER_PROBES
from ..results import Figure, Report, Table, mean_std, new_figure, save_figure, write_results
from ..train.run import LoadedRun
from .base import MAX_BATCH, MAX_COUNT, MAX_SEED, MAX_WORKERS, ModelSource, option, write_config
from .base import Result as _Result
from .ledger import Ledger

__all__ = ["Config", "FrozenFeatures", "Result", "run", "NAME", "HELP", "DESCRIPTION", "L2", "l2_option", "l2_value",
           "l2_json",
           "over_splits"]

NAME = "probes"
HELP = "a linear SVM and a softmax on each layer's frozen features (Table 7)"
DESCRIPTION = ("Features of conv1 ... conv5 (average-pooled to --grid x --grid), fc6 and fc7 are extracted once per "
               "image and cached; a linear SVM and a softmax per layer are trained on --per-class images per class "
               "and tested on the rest, over --splits random splits. Writes OUT/probes.json, .md, .csv and a plot "
               "of accuracy against depth (probes.png) beside the paper's Table 7.")

_NUMBER = r"[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?"
L2 = limits(0, 1e6, low_open=True, pattern=f"cv|{_NUMBER}")
"""The limits of an L2 penalty option: a positive number, or ``cv`` (a number may come as text, from a flag)."""


def l2_option(help: str) -> Any:
    """The config field of a classifiers' L2 penalty: None (``1 / N``), ``"cv"`` or a positive number.

    Annotate it ``str | float | None``: the command line reads the first type of a union, and text
    keeps ``cv`` (:func:`l2_value` turns a number written as text into the number).
    """
    return option(None, checked=L2, metavar="L2", help=help)


def l2_value(value: Any, what: str) -> Any:
    """An L2 option checked: a number written as text (a flag) becomes the number.

    Raises:
        ZFNetError: anything but None, ``"cv"`` or a number in (0, 1e6].
    """
    if isinstance(value, str) and re.fullmatch(_NUMBER, value):
        value = float(value)
    if value is None or value == "cv" or (isinstance(value, (int, float)) and not isinstance(value, bool)
                                          and 0 < value <= 1e6):
        return value
    raise ZFNetError(f"{what} l2 must be a number in (0, 1000000], cv or null (1/N), got {describe_value(value)}")


def l2_json(l2: float | str | None) -> float | str:
    """How the results record an L2 option: ``"1/N"`` for the default."""
    return "1/N" if l2 is None else l2 if isinstance(l2, str) else float(l2)


def over_splits(values: Sequence[float]) -> dict[str, Any]:
    """``{"mean", "std" (over splits, n - 1; 0 for one), "per_split"}`` of one number per split.

    Example:
        >>> over_splits([0.25, 0.75])
        {'mean': 0.5, 'std': 0.3535533905932738, 'per_split': [0.25, 0.75]}
    """
    arr = np.asarray(values, dtype=np.float64)
    std = float(arr.std(ddof=1)) if len(arr) > 1 else 0.0
    return {"mean": float(arr.mean()), "std": std, "per_split": [float(v) for v in arr]}


@dataclass(frozen=True, kw_only=True)
class FrozenFeatures(ModelSource):
    """Options of the experiments that fit classifiers on a model's frozen features (transfer, probes)."""

    l2: str | float | None = l2_option("the classifiers' L2 penalty: a number, cv (3-fold cross-validation on the "
                                       "training images), or None: 1/N for N training images")
    include_background: bool = option(False, help="keep Caltech-101's BACKGROUND_Google / Caltech-256's "
                                      "257.clutter as a class")
    features: str | None = option(None, help="feature cache folder, which transfer and probes can share; None: "
                                  "OUT/features")
    batch_size: int = option(64, low=1, high=MAX_BATCH, help="images per forward pass")
    workers: int | None = option(None, low=0, high=MAX_WORKERS, help="data loading processes; None: cores - 1")

    def __post_init__(self) -> None:
        object.__setattr__(self, "l2", l2_value(self.l2, self.what))
        super().__post_init__()


@dataclass(frozen=True, kw_only=True)
class Config(FrozenFeatures):
    """The probes' options (``zfnet experiment probes --help`` shows the same)."""

    what = "probes option"

    data: str = option(help="the target data set's folder")
    layout: str = option("folders", choices=SINGLE_LABEL_LAYOUTS,
                         help="data layout (folders: train/ and val/ class folders, pooled)")
    per_class: int = option(30, low=1, high=MAX_COUNT,
                            help="training images per class (the paper: 30 Caltech-101, 60 Caltech-256)")
    splits: int = option(5, low=1, high=1000, help="random train/test splits")
    seed: int = option(0, low=0, high=MAX_SEED, help="seed of the splits")
    test_cap: int | None = option(None, low=1, high=MAX_COUNT,
                                  help="test images per class at most; None: 50 for caltech101, 25 for caltech256, "
                                  "else no cap")
    layers: tuple[str, ...] = option(FEATURE_LAYERS, max_items=1000,
                                     help="layers to probe, comma-separated, in order of depth")
    classifiers: tuple[str, ...] = option(PROBE_CLASSIFIERS, choices=PROBE_CLASSIFIERS, help="svm and/or softmax")
    grid: int = option(4, low=1, high=64, help="conv maps are pooled to GRID x GRID")
    pool: str = option("avg", choices=POOLS, help="pooling of the conv maps")


@dataclass
class Result(_Result):
    """The probes' numbers: ``numbers["results"][classifier][layer]`` (mean, std, per split),
    ``numbers["depth_trend"]``, the paper's Table 7 under ``numbers["paper"]``."""

    kind = NAME


def run(config: Config, out: str | Path, *, loaded: LoadedRun | None = None, show_progress: bool = True) -> Result:
    """Table 7: a linear SVM and a softmax on each layer's frozen features, accuracy against depth.

    Args:
        config: the options.
        out: the output folder: ``probes.{json,md,csv,png}``, ``probes.config.json``,
            ``probes.partial.json``, ``features/`` (unless ``config.features`` names another cache).
        loaded: the run or model, already loaded by the caller (default: ``config.load()``).
        show_progress: progress bars.

    Returns:
        A :class:`Result`; under ``torchrun``, on the processes other than rank 0, an empty one (``out``
        None), returned once their share of the features is extracted.

    Raises:
        DataError: bad data, a class too small for ``per_class``.
        ValueError: a layer the model does not have.
    """
    t0 = time.perf_counter()
    ctx = config.context()
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    loaded = loaded if loaded is not None else config.load()
    device = config.resolved_device()
    model = loaded.model.to(device)
    dataset = open_labelled_images(config.data, config.layout, loaded.base_size,
                                   include_background=config.include_background)
    stream = ImageStream(dataset, workers=config.workers, cache="auto", show_progress=show_progress and ctx.is_main)
    cache = Path(config.features) if config.features is not None else out / "features"
    feats = extract_features(model, stream, loaded.normalization, input_size=loaded.input_size,
                             layers=config.layers, grid=config.grid, pool=config.pool, batch_size=config.batch_size,
                             cache_dir=cache, ctx=ctx, show_progress=show_progress)
    if not ctx.is_main:
        # The data-set pass is done. The fits are rank 0's alone: the others stop rather than wait for them
        # at a collective, which would time out (ZFNET_DIST_TIMEOUT) on a long fit.
        return Result(None)
    t_features = time.perf_counter() - t0
    cap = config.test_cap if config.test_cap is not None else TEST_CAPS.get(config.layout)
    labels = np.asarray(dataset.targets, dtype=np.int64)
    chosen = sample_splits(labels, config.per_class, config.splits, seed=config.seed, test_cap=cap,
                           candidates=feats.indices.numpy())
    key = {"features": feats.fingerprint, "layout": config.layout, "seed": config.seed,
           "per_class": config.per_class, "test_cap": cap, "grid": config.grid, "pool": config.pool, "l2": config.l2,
           "readable": len(feats.indices), "include_background": config.include_background}
    ledger = Ledger(out / "probes.partial.json", key)
    accuracy = probe_layers(feats, chosen, classifiers=config.classifiers, l2=config.l2,
                            num_classes=len(dataset.classes), device=device, ledger=ledger,
                            show_progress=show_progress)
    names = list(feats.layers)
    results = {kind: {layer: over_splits(v) for layer, v in by_layer.items()} for kind, by_layer in accuracy.items()}
    trend = {kind: depth_trend([results[kind][n]["mean"] for n in names]) for kind in results}
    numbers = {
        "kind": NAME, "run": str(loaded.root), "model": loaded.metadata.get("model"), "data": str(config.data),
        "layout": config.layout, "classes": len(dataset.classes), "images": len(dataset),
        "readable_images": len(feats.indices), "per_class": config.per_class, "splits": config.splits,
        "seed": config.seed, "test_cap": cap, "layers": names, "classifiers": list(config.classifiers),
        "grid": config.grid, "pool": config.pool, "l2": l2_json(config.l2),
        "feature_dims": {n: int(feats.layers[n].shape[1]) for n in names},
        "results": results, "depth_trend": trend, "chance": 1.0 / len(dataset.classes),
        "paper": {kind: {str(n): {"caltech101": list(v[0]), "caltech256": list(v[1])} for n, v in rows.items()}
                  for kind, rows in PAPER_PROBES.items()},
        "seconds": {"features": t_features, "total_this_call": time.perf_counter() - t0},
    }
    report = _report(numbers, loaded.root.name, Path(config.data).name)
    figure = save_figure(_figure(numbers), out / "probes.png")
    files = write_results(out, NAME, numbers, report)
    files["figure"] = figure
    files["config"] = write_config(out, NAME, config, test_cap=cap)
    numbers["report"] = report.to_json()
    return Result(out, numbers, files)


def _report(result: dict[str, Any], run_name: str, data_name: str) -> Report:
    rows = []
    label = {"svm": "SVM", "softmax": "Softmax"}  # the paper's row names
    for kind in result["classifiers"]:
        for layer in result["layers"]:
            number = LAYER_NUMBER.get(layer)
            paper = PAPER_PROBES.get(kind, {}).get(number) if number else None
            rows.append([f"{label[kind]} ({number if number else layer})", layer, result["feature_dims"][layer],
                         _pct(result["results"][kind][layer]),
                         f"{paper[0][0]} ± {paper[0][1]}" if paper else "—",
                         f"{paper[1][0]} ± {paper[1][1]}" if paper else "—"])
    table = Table(f"Mean per-class accuracy % of a classifier on one layer's features ({result['per_class']} "
                  f"training images per class, mean ± std over {result['splits']} splits), beside the paper's Table 7",
                  ["classifier (layer)", "layer", "features", f"{data_name} (ours)", "paper Caltech-101 (30/class)",
                   "paper Caltech-256 (60/class)"], rows)
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
    return Report(f"Layer-wise probes on {data_name} (Table 7)", summary, tables=[table],
                  figures=[Figure("probes.png", "Mean per-class accuracy of a linear classifier on each layer's "
                                  "frozen features (error bars: std over splits).")])


def _pct(entry: dict[str, Any] | None) -> str:
    """A mean ± std over splits of a fraction, in percent."""
    return "—" if entry is None else mean_std(entry["mean"], entry["std"], scale=100)


def _figure(result: dict[str, Any]):
    fig = new_figure(5.2, 3.4)
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
    return fig
