"""``zfnet experiment transfer``: a new classifier on a trained network's frozen layers 1-7 (Tables 4-6).

Zeiler & Fergus (2014, §5.2) keep layers 1-7 of the ImageNet-trained network fixed and train a new
softmax on fc7 for another data set: Caltech-101 (Table 4: 83.8 ± 0.5 / 86.5 ± 0.5 % mean per-class
accuracy with 15 / 30 training images per class, against 22.8 ± 1.5 / 46.5 ± 1.7 % for the same
network trained from scratch on those images), Caltech-256 (Table 5: 65.7 / 70.6 / 72.7 / 74.2 % at
15 / 30 / 45 / 60 per class; from scratch 9.0 / 22.5 / 31.2 / 38.8 %) and PASCAL VOC 2012 (Table 6:
79.0 % mean average precision).

:func:`run` runs the whole experiment: the Caltech protocol over random splits (a softmax on the
frozen features, :mod:`zfnet.analysis.linear`; the same architecture trained from scratch on each
split, :mod:`zfnet.train.scratch`; a softmax on the untrained architecture's features), or VOC's
train / val sets, and writes ``OUT/transfer.json``, ``.md``, ``.csv`` and ``transfer.png``.
:func:`transfer_study` runs it together with the layer probes (:mod:`zfnet.experiments.probes`) on one
feature cache: the demo's stage 8 and the miniature study's transfer.

Under ``torchrun`` the feature extractions, the passes over the data set, are shared by the processes
(each its share of the images, every process ending with all the features, equal to one process's);
rank 0 then fits the classifiers, trains the baselines and writes, and the other processes stop.

Example:
    >>> from zfnet.experiments import transfer
    >>> config = transfer.Config(run="runs/zfnet", data="data/secondary", per_class=(15, 30))  # doctest: +SKIP
    >>> transfer.run(config, "out/transfer")["pretrained"]["15"]["mean"]  # doctest: +SKIP
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .. import cores
from ..analysis.features import FeatureSet, extract_features
from ..analysis.linear import fit_and_score, fit_linear, resolve_l2
from ..data.caltech import TEST_CAPS, per_class_accuracy, sample_splits
from ..data.labelled import LAYOUTS, open_labelled_images
from ..data.loader import ImageStream
from ..data.voc import mean_average_precision, open_voc
from ..distributed import DistContext
from ..paper import PAPER_TRANSFER, PAPER_VOC_MAP, PAPER_VOC_PUBLISHED_BEST
from ..progress import progress
from ..results import Figure, Report, Table, mean_std, new_figure, save_figure, write_results
from ..train.run import LoadedRun
from ..train.scratch import SCRATCH_STEPS, ScratchRecipe, predict_labels, train_from_scratch
from . import probes
from .base import MAX_COUNT, MAX_SEED, option, write_config
from .base import Result as _Result
from .ledger import Ledger

__all__ = ["Config", "Result", "run", "Study", "transfer_study", "scratch_accuracy", "NAME", "HELP", "DESCRIPTION"]

log = logging.getLogger("zfnet")

NAME = "transfer"
HELP = "a new softmax on a run's frozen layers 1-7 vs training from scratch (Tables 4-6)"
DESCRIPTION = ("Caltech protocol (caltech101, caltech256, folders): for each --per-class N and each of --splits "
               "random splits, N training images per class and the rest (capped) for testing; a softmax on the frozen "
               "fc7 features, and the same architecture trained from scratch on the same images. voc2012: "
               "one-vs-all classifiers trained on VOC train, average precision on val. Writes OUT/transfer.json, "
               ".md, .csv and .png beside the paper's Tables 4-6. Run the same command again to resume an "
               "interrupted experiment.")

_RECIPE = ScratchRecipe()
_RECIPE_LIMITS = {f.name: f.metadata for f in fields(ScratchRecipe)}


@dataclass(frozen=True, kw_only=True)
class Config(probes.FrozenFeatures):
    """The transfer experiment's options (``zfnet experiment transfer --help`` shows the same)."""

    what = "transfer option"

    data: str = option(help="the target data set's folder")
    layout: str = option("folders", choices=LAYOUTS, help="data layout (folders: train/ and val/ class folders, "
                         "pooled)")
    per_class: tuple[int, ...] = option((15, 30), low=1, high=MAX_COUNT, max_items=1000,
                                        help="training images per class, comma-separated")
    splits: int = option(5, low=1, high=1000, help="random train/test splits per --per-class")
    seed: int = option(0, low=0, high=MAX_SEED, help="seed of the splits and the from-scratch training")
    test_cap: int | None = option(None, low=1, high=MAX_COUNT,
                                  help="test images per class at most; None: 50 for caltech101, 25 for caltech256, "
                                  "else no cap")
    baseline: bool = option(True, help="also train the architecture from scratch on each split (zfnet runs only)")
    baseline_splits: int | None = option(None, low=1, high=1000, metavar="N",
                                         help="train from scratch on the first N splits only (each is a training of "
                                         "--scratch-steps; default: every split)")
    untrained: bool = option(True, help="also fit a softmax on the untrained (random-weight) architecture's frozen "
                             "features")
    scratch_steps: int = option(SCRATCH_STEPS, checked=_RECIPE_LIMITS["steps"],
                                help="SGD steps of each from-scratch training (about 1000 to leave chance level "
                                "from the paper's initialisation; see docs/transfer.md)")
    scratch_batch_size: int = option(_RECIPE.batch_size, checked=_RECIPE_LIMITS["batch_size"],
                                     help="images per from-scratch step")
    scratch_lr: float = option(_RECIPE.lr, checked=_RECIPE_LIMITS["lr"],
                               help="from-scratch learning rate (/10 after 3/4)")
    side_by_side: bool = option(True, help="on the CPU, train the from-scratch baselines side by side, each in a "
                                "process of its own with its share of the free cores (small networks use one core "
                                "each better than two)")
    layer: str = option("fc7", help="the frozen layer the softmax reads")

    @property
    def recipe(self) -> ScratchRecipe:
        """The from-scratch baseline's training: the paper's recipe with these steps, batch and rate."""
        return ScratchRecipe(steps=self.scratch_steps, batch_size=self.scratch_batch_size, lr=self.scratch_lr)


@dataclass
class Result(_Result):
    """The transfer experiment's numbers: ``numbers["pretrained"]``, ``["scratch"]`` and ``["untrained"]``
    by training images per class (mean, std, per split); for VOC, ``numbers["ap"]`` and ``["map"]``."""

    kind = NAME


def run(config: Config, out: str | Path, *, loaded: LoadedRun | None = None, show_progress: bool = True) -> Result:
    """Tables 4-6: a new softmax on a trained network's frozen layers 1-7, against training from scratch.

    Caltech-style layouts (``caltech101``, ``caltech256``, ``folders``): for each number of training
    images per class and each of ``splits`` random splits (:func:`~zfnet.data.caltech.sample_splits`),
    a softmax on the ``layer`` features of the training images, scored by mean per-class accuracy on
    the split's test images; with ``baseline``, the same architecture trained from scratch on the same
    images (:func:`~zfnet.train.scratch.train_from_scratch`) and scored on the same test images; with
    ``untrained``, a softmax on the ``layer`` features of the same architecture at its initialisation
    (random weights, frozen), which shows how much of the transfer comes from pretraining rather than
    from a linear read-out of many features. A model zfnet did not train has no recipe here: its
    baseline is skipped with a warning. ``voc2012``: one-vs-all logistic classifiers trained on VOC's
    ``train`` set and scored by average precision per class on ``val`` (VOC's test labels are not
    public); no baselines.

    Features are cached in ``config.features`` (default ``OUT/features``) and finished splits in
    ``OUT/transfer.partial.json``, so a re-run after an interruption skips the work already done.

    Args:
        config: the options.
        out: the output folder: ``transfer.{json,md,csv,png}``, ``transfer.config.json``.
        loaded: the run or model, already loaded by the caller (default: ``config.load()``).
        show_progress: progress bars.

    Returns:
        A :class:`Result`; under ``torchrun``, on the processes other than rank 0, an empty one (``out``
        None), returned once their share of the features is extracted.

    Raises:
        DataError: bad data, a class too small for ``per_class``.
    """
    t0 = time.perf_counter()
    ctx = config.context()
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    loaded = loaded if loaded is not None else config.load()
    baseline = config.baseline
    if baseline and not loaded.is_run:
        log.warning("%s was not trained by zfnet: no from-scratch baseline (its recipe is unknown)", loaded.root)
        baseline = False
    device = config.resolved_device()
    model = loaded.model.to(device)
    cache = Path(config.features) if config.features is not None else out / "features"
    if config.layout == "voc2012":
        return _run_voc(config, loaded, model, out, cache=cache, device=device, ctx=ctx, show_progress=show_progress,
                        t0=t0)

    per_class = sorted(set(config.per_class))
    layer, seed = config.layer, config.seed
    recipe = config.recipe
    dataset = open_labelled_images(config.data, config.layout, loaded.base_size,
                                   include_background=config.include_background)
    cap = config.test_cap if config.test_cap is not None else TEST_CAPS.get(config.layout)
    stream = ImageStream(dataset, workers=config.workers, cache="auto", show_progress=show_progress and ctx.is_main)
    feats = extract_features(model, stream, loaded.normalization, input_size=loaded.input_size, layers=(layer,),
                             batch_size=config.batch_size, cache_dir=cache, ctx=ctx, show_progress=show_progress)
    t_features = time.perf_counter() - t0
    random_feats = None
    if config.untrained:
        torch.manual_seed(seed)  # the same random weights on every process of a torchrun job
        random_model = loaded.untrained()
        # Its own cache folder: the per-layer files of the pretrained network stay valid beside it.
        random_feats = extract_features(random_model.to(device), stream, loaded.normalization,
                                        input_size=loaded.input_size, layers=(layer,), batch_size=config.batch_size,
                                        cache_dir=cache / "untrained", ctx=ctx, show_progress=show_progress)
    if not ctx.is_main:
        # The data-set passes are done. The fits and baselines are rank 0's alone: the others stop rather than
        # wait for them at a collective, which would time out (ZFNET_DIST_TIMEOUT) on a long training.
        return Result(None)
    num_classes = len(dataset.classes)
    meta = loaded.metadata
    key = {"features": feats.fingerprint, "layout": config.layout, "seed": seed,
           "test_cap": cap, "layer": layer, "l2": config.l2, "recipe": asdict(recipe), "images": len(dataset),
           "readable": len(feats.indices), "include_background": config.include_background}
    ledger = Ledger(out / "transfer.partial.json", key)
    pretrained: dict[str, list[float]] = {}
    scratch: dict[str, list[float]] = {}
    random_init: dict[str, list[float]] = {}
    penalties: dict[str, list[float]] = {}
    labels = np.asarray(dataset.targets, dtype=np.int64)
    splits_of = {n: sample_splits(labels, n, config.splits, seed=seed, test_cap=cap, candidates=feats.indices.numpy())
                 for n in per_class}
    jobs = [(n, s) for n in per_class for s in range(config.splits)]
    trained = {(n, s) for n, s in jobs if baseline and s < (config.baseline_splits or config.splits)}  # from scratch
    todo = [(n, s) for n, s in jobs if (n, s) in trained and ledger.get(f"scratch {n}/{s}") is None]
    t1 = time.perf_counter()
    _train_baselines(todo, splits_of, meta, stream, num_classes, recipe, seed, device, ledger,
                     side_by_side=config.side_by_side, show_progress=show_progress)
    t_scratch = time.perf_counter() - t1
    bar = progress(total=len(jobs), desc="transfer splits", unit="split", enabled=show_progress)
    with bar:
        for n, s in jobs:
            split = splits_of[n][s]
            name = f"{n}/{s}"
            done = ledger.get(f"pretrained {name}")
            if done is None:
                done = _softmax_split(feats, layer, split, config.l2, num_classes, seed + s, device)
                ledger.put(f"pretrained {name}", done)
            pretrained.setdefault(str(n), []).append(done["accuracy"])
            penalties.setdefault(str(n), []).append(done["l2"])
            if random_feats is not None:
                done = ledger.get(f"untrained {name}")
                if done is None:
                    done = _softmax_split(random_feats, layer, split, config.l2, num_classes, seed + s, device)
                    ledger.put(f"untrained {name}", done)
                random_init.setdefault(str(n), []).append(done["accuracy"])
            if (n, s) in trained:
                scratch.setdefault(str(n), []).append(ledger.get(f"scratch {name}")["accuracy"])
            bar.update(1)
    numbers = {
        "kind": NAME,
        "run": str(loaded.root), "model": meta.get("model"), "data": str(config.data), "layout": config.layout,
        "classes": num_classes, "images": len(dataset), "readable_images": len(feats.indices),
        "per_class": per_class, "splits": config.splits, "seed": seed, "test_cap": cap, "layer": layer,
        "feature_dim": int(feats.layers[layer].shape[1]), "classifier": "softmax",
        "l2": probes.l2_json(config.l2), "l2_chosen": penalties,
        "pretrained": {k: probes.over_splits(v) for k, v in pretrained.items()},
        "scratch": {k: probes.over_splits(v) for k, v in scratch.items()} if baseline else None,
        "scratch_recipe": asdict(recipe) if baseline else None,
        "untrained": {k: probes.over_splits(v) for k, v in random_init.items()} if config.untrained else None,
        "chance": 1.0 / num_classes,
        "paper": {k: {m: {str(n): list(v) for n, v in d.items()} for m, d in rows.items()}
                  for k, rows in PAPER_TRANSFER.items()},
        "seconds": {"features": t_features, "scratch_training_this_call": t_scratch,
                    "total_this_call": time.perf_counter() - t0},
    }
    report = _report(numbers, loaded.root.name, Path(config.data).name)
    figure = save_figure(_figure(numbers), out / "transfer.png")
    files = write_results(out, NAME, numbers, report)
    files["figure"] = figure
    files["config"] = write_config(out, NAME, config, per_class=per_class, test_cap=cap, baseline=baseline,
                                   scratch_recipe=asdict(recipe))
    numbers["report"] = report.to_json()
    return Result(out, numbers, files)


def _softmax_split(feats: FeatureSet, layer: str, split, l2, num_classes: int, seed: int,
                   device: torch.device) -> dict[str, float]:
    x_tr, x_te = feats.take(layer, split.train).to(device), feats.take(layer, split.test).to(device)
    y_tr = feats.labels[feats.rows(split.train)].to(device)
    y_te = feats.labels[feats.rows(split.test)].to(device)
    score, penalty = fit_and_score(x_tr, y_tr, x_te, y_te, kind="softmax", l2=l2, num_classes=num_classes, seed=seed)
    return {"accuracy": score, "l2": penalty}


def scratch_accuracy(meta: dict[str, Any], train_images: torch.Tensor, train_labels: torch.Tensor,
                     test_images: torch.Tensor, test_labels: torch.Tensor, num_classes: int, recipe: ScratchRecipe,
                     seed: int, device: torch.device | str = "cpu", show_progress: bool = False) -> float:
    """The from-scratch baseline of one split: the run's architecture trained on the split's training
    images (uint8 at base size), its mean per-class accuracy on the test images."""
    model, mean = train_from_scratch(meta["model"], train_images, train_labels, num_classes=num_classes,
                                     model_options=meta.get("model_options", {}), recipe=recipe, seed=seed,
                                     device=device, show_progress=show_progress)
    predicted = predict_labels(model, test_images, mean)
    return per_class_accuracy(predicted.numpy(), test_labels.numpy())


def _train_baselines(todo: list[tuple[int, int]], splits_of: dict, meta: dict[str, Any], stream: ImageStream,
                     num_classes: int, recipe: ScratchRecipe, seed: int, device: torch.device, ledger: Ledger, *,
                     side_by_side: bool, show_progress: bool) -> None:
    """The from-scratch trainings still to do, each accuracy kept in the ledger as it ends: on the CPU with
    ``side_by_side``, as many at once as there are free cores (:func:`zfnet.cores.side_by_side`), else one
    after the other in this process."""
    if not todo:
        return
    width, threads = cores.side_by_side_width(len(todo)) if side_by_side and device.type == "cpu" else (1, 1)
    if width > 1:
        log.info("training %d from-scratch baselines, %d side by side with %d thread%s each", len(todo), width,
                 threads, "s" * (threads > 1))
    bar = progress(total=len(todo), desc="from-scratch baselines", unit="training", enabled=show_progress)
    with bar:
        for i in range(0, len(todo), width):
            group = todo[i:i + width]
            calls = [(meta, *_gather(stream, splits_of[n][s].train), *_gather(stream, splits_of[n][s].test),
                      num_classes, recipe, seed + s) for n, s in group]
            if width > 1:
                accuracies = cores.side_by_side(scratch_accuracy, calls, threads=threads)
            else:  # in this process, with its progress bar of steps
                accuracies = [scratch_accuracy(*call, device, show_progress) for call in calls]
            for (n, s), accuracy in zip(group, accuracies, strict=True):
                ledger.put(f"scratch {n}/{s}", {"accuracy": accuracy})
            bar.update(len(group))


def _gather(stream: ImageStream, indices: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
    images, labels = [], []
    for batch in stream.batches(indices.tolist(), 256):
        images.append(batch.images)
        labels.append(batch.labels)
    return torch.cat(images), torch.cat(labels)


def _pct(entry: dict[str, Any] | None) -> str:
    """A mean ± std over splits of a fraction, in percent."""
    return "—" if entry is None else mean_std(entry["mean"], entry["std"], scale=100)


def _paper_pct(value: tuple[float, float | None] | None) -> str:
    if value is None:
        return "—"
    mean, std = value
    return f"{mean:.1f}" + (f" ± {std:g}" if std is not None else "")


def _report(result: dict[str, Any], run_name: str, data_name: str) -> Report:
    layout = result["layout"]
    ns = result["per_class"]
    paper_key = layout if layout in PAPER_TRANSFER else "caltech101"
    paper = PAPER_TRANSFER[paper_key]
    paper_name = {"caltech101": "Caltech-101", "caltech256": "Caltech-256"}[paper_key]
    columns = ["model"] + [f"{n}/class" for n in ns]
    rows = [[f"{run_name}: frozen layers 1-7 ({result['layer']}), new softmax"]
            + [_pct(result["pretrained"].get(str(n))) for n in ns]]
    if result["scratch"] is not None:
        fewer = len(next(iter(result["scratch"].values()))["per_split"]) if result["scratch"] else result["splits"]
        over = f", {fewer} of the splits" if fewer < result["splits"] else ""
        rows.append([f"{result['model']} from scratch ({result['scratch_recipe']['steps']} SGD steps{over})"]
                    + [_pct(result["scratch"].get(str(n))) for n in ns])
    if result.get("untrained") is not None:
        rows.append([f"{result['model']} untrained (random weights), frozen, new softmax"]
                    + [_pct(result["untrained"].get(str(n))) for n in ns])
    rows.append(["chance"] + [f"{100 * result['chance']:.1f}" for _ in ns])
    for label, key in (("pretrained", "pretrained"), ("from scratch", "scratch"), ("Bo et al.", "Bo et al.")):
        rows.append([f"paper, {paper_name}: {label}"] + [_paper_pct(paper[key].get(n)) for n in ns])
    table = Table(f"Mean per-class accuracy % (mean ± std over {result['splits']} splits) on {data_name}, "
                  f"beside the paper's Table {4 if paper_key == 'caltech101' else 5}", columns, rows)
    first = str(ns[0])
    pre = result["pretrained"][first]
    text = (f"With {ns[0]} training images per class, a new softmax on {run_name}'s frozen {result['layer']} "
            f"features reaches {_pct(pre)}% mean per-class accuracy on {data_name} ({result['classes']} classes, "
            f"chance {100 * result['chance']:.1f}%)")
    if result["scratch"] is not None:
        text += (f", against {_pct(result['scratch'][first])}% for the same network trained from scratch "
                 f"({result['scratch_recipe']['steps']} SGD steps).")
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
    return Report(f"Transfer of frozen features to {data_name} (Tables 4-5)", text, tables=[table],
                  figures=[Figure("transfer.png", "Mean per-class accuracy against training images per class: "
                                  "frozen pretrained features with a new softmax, training from scratch, and frozen "
                                  "features of the untrained network (error bars: std over splits).")])


def _figure(result: dict[str, Any]):
    fig = new_figure(4.8, 3.4)
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
    return fig


def _run_voc(config: Config, loaded: LoadedRun, model, out: Path, *, cache: Path, device: torch.device,
             ctx: DistContext, show_progress: bool, t0: float) -> Result:
    layer = config.layer
    sets = {}
    for name in ("train", "val"):
        voc = open_voc(config.data, name, loaded.base_size)
        stream = ImageStream(voc.images, workers=config.workers, cache="auto",
                             show_progress=show_progress and ctx.is_main)
        feats = extract_features(model, stream, loaded.normalization, input_size=loaded.input_size,
                                 layers=(layer,), batch_size=config.batch_size, cache_dir=cache / name, ctx=ctx,
                                 show_progress=show_progress)
        sets[name] = (voc, feats)
    if not ctx.is_main:
        return Result(None)  # the data-set passes are done; rank 0 alone fits and writes
    (voc_tr, f_tr), (voc_va, f_va) = sets["train"], sets["val"]
    x_tr, y_tr = f_tr.layers[layer].to(device), voc_tr.targets[f_tr.indices].to(device)
    penalty = resolve_l2(config.l2, x_tr, y_tr, kind="logistic")
    clf = fit_linear(x_tr, y_tr, kind="logistic", l2=penalty)
    scores = clf.scores(f_va.layers[layer].to(device)).cpu().numpy()
    targets = voc_va.targets[f_va.indices].numpy()
    usable = [j for j in range(targets.shape[1]) if (targets[:, j] > 0).any()]
    aps, mean_ap = mean_average_precision(scores[:, usable], targets[:, usable])
    ap = {voc_va.classes[j]: a for j, a in zip(usable, aps)}
    numbers = {
        "kind": NAME, "run": str(loaded.root), "model": loaded.metadata.get("model"), "data": str(config.data),
        "layout": "voc2012", "train_set": "train", "test_set": "val", "layer": layer, "classifier": "logistic",
        "train_images": len(f_tr.indices), "test_images": len(f_va.indices), "l2": probes.l2_json(config.l2),
        "l2_chosen": penalty, "ap": ap, "map": mean_ap,
        "paper": {"map": PAPER_VOC_MAP, "published_best": list(PAPER_VOC_PUBLISHED_BEST)},
        "seconds": {"total_this_call": time.perf_counter() - t0},
    }
    rows = [[c, f"{100 * a:.1f}"] for c, a in ap.items()]
    rows.append(["mean", f"{100 * mean_ap:.1f}"])
    rows.append(["paper (test set), mean", f"{PAPER_VOC_MAP:.1f}"])
    report = Report("Transfer of frozen features to PASCAL VOC 2012 (Table 6)",
                    f"One-vs-all logistic classifiers on {loaded.root.name}'s frozen {layer} features, trained on "
                    f"VOC 2012 train, reach {100 * mean_ap:.1f}% mean average precision on val. The paper reports "
                    f"{PAPER_VOC_MAP:.1f}% on the test set with an ImageNet-trained ZFNet.",
                    tables=[Table("Average precision % per class on VOC 2012 val, beside the paper's Table 6 mean",
                                  ["class", "AP %"], rows)])
    files = write_results(out, NAME, numbers, report)
    files["config"] = write_config(out, NAME, config, l2_chosen=penalty)
    numbers["report"] = report.to_json()
    return Result(out, numbers, files)


@dataclass
class Study:
    """What :func:`transfer_study` measured: both experiments' results and the seconds each took."""

    transfer: Result
    probes: probes.Result
    seconds: dict[str, float] = field(default_factory=dict)


def transfer_study(config: Config, out: str | Path, *, probe_per_class: int = 30, loaded: LoadedRun | None = None,
                   show_progress: bool = True, progress_fn: Callable[[str], None] | None = None) -> Study:
    """The miniature of §5.2: transfer with and without pretraining (Tables 4-5) and layer probes (Table 7).

    Runs the probes (:func:`zfnet.experiments.probes.run`, on every layer, with ``probe_per_class``
    training images per class and the transfer's splits, seed, data and penalty) and then :func:`run`
    into ``out``, on one shared feature cache (``OUT/features``), so each image's features are computed
    once. The transfer writes ``transfer.json`` last: its presence marks the study finished.

    Args:
        config: the transfer's options (the probes take theirs from it).
        out: output folder: ``transfer.*``, ``probes.*``, ``features/``.
        probe_per_class: training images per class of the probes.
        loaded: the pretrained run, already loaded by the caller (default: ``config.load()``).
        show_progress: progress bars.
        progress_fn: called with a line of text as each stage starts (for a caller's log).

    Returns:
        A :class:`Study`.

    Example:
        >>> config = Config(run="demo/runs/zfnet", data="demo/secondary")  # doctest: +SKIP
        >>> study = transfer_study(config, "demo/transfer")  # doctest: +SKIP
        >>> study.transfer["pretrained"]["15"]["mean"] > study.transfer["scratch"]["15"]["mean"]  # doctest: +SKIP
        True
    """
    say = progress_fn or (lambda text: log.info("%s", text))
    loaded = loaded if loaded is not None else config.load()
    probe_config = probes.Config(run=config.run, weights=config.weights, model=config.model,
                                 input_size=config.input_size, normalize=config.normalize, mean=config.mean,
                                 std=config.std, classes=config.classes, device=config.device, data=config.data,
                                 layout=config.layout, per_class=probe_per_class, splits=config.splits,
                                 seed=config.seed, test_cap=config.test_cap, l2=config.l2,
                                 include_background=config.include_background, features=config.features,
                                 batch_size=config.batch_size, workers=config.workers)
    t0 = time.perf_counter()
    say("probes: features of conv1 ... fc7 and a linear classifier per layer")
    probe_result = probes.run(probe_config, out, loaded=loaded, show_progress=show_progress)
    t1 = time.perf_counter()
    say("transfer: a new softmax on frozen fc7 features" + (", and training from scratch" if config.baseline else ""))
    transfer_result = run(config, out, loaded=loaded, show_progress=show_progress)
    t2 = time.perf_counter()
    return Study(transfer_result, probe_result, {"probes": t1 - t0, "transfer": t2 - t1, "total": t2 - t0})
