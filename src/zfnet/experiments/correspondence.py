"""``zfnet correspondence``: the paper's Table 1 (and Fig. 8) for a model, with a test of its finding.

:func:`run` reads images whose parts are annotated, the synthetic data set's ``annotations.json`` or a
file of the same form for other images::

    {"images": {"val/face/00000.png": {"box": [x0, y0, x1, y1],
                                       "parts": {"left_eye": [x0, y0, x1, y1], "nose": [...], ...}},
                ...}}

(paths relative to the data folder; boxes in the file's pixels, exclusive ends; ``box``, the object,
is where the random control regions are drawn, the whole image when absent). It runs
:func:`zfnet.analysis.correspondence.correspondence` and writes ``OUT/correspondence.png`` and
``OUT/correspondence.json`` (with ``.md`` and ``.csv`` tables).

The paper's finding is that occluding the same part changes the features more consistently (a lower
Δ) than occluding random regions. A lower mean is not yet that finding: a network at chance level
gives parts a Δ a hair below random about half the time. So each part at each layer is tested
against random regions of its size (:meth:`~zfnet.analysis.correspondence.CorrespondenceResult.compare`,
a permutation test over the images), the p-values adjusted with Holm's method over every part at every
layer (the family of claims the summary makes), and the verdict (``numbers["finding"]``) is one of
:data:`VERDICTS`: the finding *holds* only where every part is significantly below random.

Example:
    >>> from zfnet.experiments import correspondence
    >>> config = correspondence.Config(run="runs/zfnet", data="data/synth")  # doctest: +SKIP
    >>> print(correspondence.run(config, "out/correspondence").summary())  # doctest: +SKIP
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..analysis.correspondence import (
    DEFAULT_LAYERS,
    DEFAULT_PARTS,
    RANDOM,
    CorrespondenceResult,
    correspondence,
    occlude,
)
from ..analysis.stats import Comparison, holm
from ..data.annotations import map_box, read_part_annotations
from ..data.images import image_size
from ..data.transforms import Normalization, center_crop, load_image
from ..errors import ZFNetError
from ..graph import trace
from ..paper import PAPER_TABLE1
from ..results import Figure, Report, Table, write_results
from ..train.run import LoadedRun
from ..visualize.analysis_figures import draw_correspondence
from ..visualize.layers import default_layers
from .base import MAX_SEED, ModelSource, option, write_config
from .base import Result as _Result

__all__ = ["Config", "Result", "run", "default_layer_pair", "model_input_size", "VERDICTS", "ALPHA",
           "PERMUTATIONS", "NAME", "HELP", "DESCRIPTION"]

NAME = "correspondence"
HELP = "correspondence of object parts: Δ per occluded part (Table 1)"
DESCRIPTION = ("Occlude the same part (eye, nose) in every annotated image, and random regions of the same size, "
               "and measure how consistently the features change: Δ = mean normalised Hamming distance between "
               "the signs of the feature differences of pairs of images (the paper's Table 1). Each part is "
               "tested against random regions of its size (a permutation test over the images, Holm-adjusted): "
               "the paper's finding holds only where every part is significantly below random. Writes "
               "correspondence.png, .json, .md and .csv.")

ALPHA = 0.05
"""The level of every test (after Holm's adjustment)."""
PERMUTATIONS = 10_000
"""Random shuffles of the occluders per test."""
CONFIDENCE = 0.95
"""Coverage of each difference's interval."""

HOLDS, OPPOSITE, NO_EVIDENCE, MIXED = "holds", "the opposite", "no evidence either way", "mixed"
VERDICTS = (HOLDS, OPPOSITE, NO_EVIDENCE, MIXED)
"""A part's verdict: its Δ significantly below random regions' (the paper's finding *holds*),
significantly above (*the opposite*), or neither (*no evidence either way*). A layer's: *holds* or *the
opposite* when every part's verdict is that, *no evidence either way* when no part's difference is
significant, *mixed* otherwise."""

NORMALISATION = ("Δ = Σ_{i≠j} H(sign ε_i, sign ε_j) / (n (n − 1) D): the mean over the ordered pairs of images of "
                 "the fraction of the D feature units whose sign of change (−, 0, +) differs; ± is the standard "
                 "deviation over the pairs (for random: over the pairs of every part-sized draw)")

_SKIPPED = (nn.Dropout, nn.Dropout1d, nn.Dropout2d, nn.Dropout3d, nn.AlphaDropout, nn.Identity, nn.Flatten)
"""Layers that repeat their input in eval mode (or only reshape it): never a default layer of their own."""


@dataclass(frozen=True, kw_only=True)
class Config(ModelSource):
    """The correspondence experiment's options (``zfnet correspondence --help`` shows the same)."""

    what = "correspondence option"

    data: str = option(metavar="DIR", help="data folder the annotated image paths are in (required)")
    annotations: str | None = option(None, metavar="FILE",
                                     help="part-annotation JSON (default: DATA/annotations.json)")
    parts: tuple[str, ...] = option(DEFAULT_PARTS, max_items=1000, help="parts to occlude, comma-separated")
    layers: tuple[str, ...] | None = option(None, max_items=100,
                                            help="layers compared, comma-separated (default: the paper's conv5,fc7; "
                                            "for a model without them, its deepest convolutional stage and the "
                                            "last layer before its classifier, e.g. layer4,avgpool)")
    images: int = option(5, low=2, high=10_000, help="annotated images used, a seeded choice")
    trials: int = option(10, low=1, high=10_000, help="draws of random regions per part (the control)")
    split: str = option("val", help="use images under DATA/SPLIT/ only; 'all' for every one")
    seed: int = option(0, low=0, high=MAX_SEED,
                       help="seed of the choice of images, the random regions and the permutation tests")

    def __post_init__(self) -> None:
        super().__post_init__()
        if not self.parts:
            raise ZFNetError("parts is empty; name at least one part")
        if self.layers is not None and not self.layers:
            raise ZFNetError("layers is empty; name at least one layer, or leave it out for the default")


@dataclass
class Result(_Result):
    """The correspondence experiment's numbers: ``numbers["delta"]`` (Δ per row and layer) and
    ``numbers["finding"]`` (per layer: the verdict, and each part's test against random regions)."""

    kind = NAME

    def lines(self) -> list[str]:
        table = self.numbers["report"]["tables"][0]
        out = ["  ".join(f"{c:>16}" if i else f"{c:<12}" for i, c in enumerate(row))
               for row in [table["columns"], *table["rows"]]]
        for layer, f in self.numbers["finding"].items():
            out.append(f"{layer}: {_layer_sentence(f)}")
            out += [f"  {p['text']}" for p in f["parts"].values()]
        return out


def model_input_size(loaded: LoadedRun, config: ModelSource) -> int:
    """The model's input side: the loaded run's, else ``config.input_size`` (for a model that knows none).

    Raises:
        ZFNetError: neither knows it, or it is larger than the run's base (mean image) size.
    """
    size = loaded.input_size if loaded.input_size is not None else config.input_size
    if size is None:
        raise ZFNetError(f"{type(loaded.model).__name__} has no config.input_size; give input_size")
    if not 1 <= size <= loaded.base_size:
        raise ZFNetError(f"input_size must be from 1 to the mean image's side {loaded.base_size}, got {size}")
    return size


def default_layer_pair(model: nn.Module, input_size: int, *, paper: Sequence[str], stage: str) -> list[str]:
    """The two layers an analysis compares when none are given: the paper's where the model has them.

    Otherwise a low or high convolutional stage (:func:`zfnet.visualize.layers.default_layers`) and the
    last layer before the classifier: the layer that feeds the model's last ``nn.Linear`` or ``nn.Conv2d``,
    passing over dropout, identity and flatten (a ResNet's ``avgpool``, VGG's ``classifier.4``). The
    convolutional stage is taken before that layer; when the two coincide, the stage before it is taken,
    or the one layer alone.

    Args:
        model: the network.
        input_size: the side of its input.
        paper: the paper's pair (``("conv5", "fc7")``).
        stage: ``"deepest"`` (the paper's layer 5) or ``"first"`` (its layer 1) convolutional stage.

    Raises:
        ZFNetError: the model cannot be traced or has no convolutional stage (give the layers then).

    Example:
        >>> from zfnet.models import build
        >>> default_layer_pair(build("zfnet-tiny"), 64, paper=("conv5", "fc7"), stage="deepest")
        ['conv5', 'fc7']
    """
    if stage not in ("deepest", "first"):
        raise ValueError(f"stage must be 'deepest' or 'first', got {stage!r}")
    try:
        graph = trace(model)
        if all(name in graph.layers for name in paper):
            return list(paper)
        stages = default_layers(model, input_size)
    except ZFNetError as err:
        raise ZFNetError(f"{err}; give the layers to compare (--layers)") from None
    except Exception as err:  # a user's model: whatever the tracer raises is the user's to fix
        text = str(err).strip().splitlines()[0][:300] if str(err).strip() else type(err).__name__
        raise ZFNetError(f"cannot choose default layers of {type(model).__name__} ({text}); give the layers to "
                         "compare (--layers)") from None
    modules = dict(model.named_modules())
    classifier = graph.output
    for node in reversed(graph.nodes[:graph.output + 1]):
        if node.call == "call_module" and isinstance(modules.get(node.target), (nn.Linear, nn.Conv2d)):
            classifier = node.index
            break
    before = [name for name, i in graph.layers.items()
              if i < classifier and not isinstance(modules.get(name.split("#")[0]), _SKIPPED)]
    last = before[-1] if before else None
    if last is None:
        return [stages[-1] if stage == "deepest" else stages[0]]
    stages = [s for s in stages if graph.layers[s] <= graph.layers[last]] or stages[:1]
    conv = stages[-1] if stage == "deepest" else stages[0]
    if conv == last:
        conv = stages[-2] if stage == "deepest" and len(stages) > 1 else None
    return [conv, last] if conv is not None else [last]


def _name(loaded: LoadedRun) -> str:
    return str(loaded.metadata.get("model", type(loaded.model).__name__))


def _choose(candidates: list[str], n: int, seed: int) -> list[str]:
    if len(candidates) <= n:
        return sorted(candidates)
    g = torch.Generator().manual_seed(seed)
    return sorted(candidates[i] for i in torch.randperm(len(candidates), generator=g)[:n].tolist())


def _fmt(mean: float, std: float) -> str:
    return f"{mean:.3f} ± {std:.3f}"


def run(config: Config, out: str | Path, *, loaded: LoadedRun | None = None, show_progress: bool = True) -> Result:
    """Table 1 for a model: occlude the same part in every image and random regions; test, draw and write.

    Writes ``OUT/correspondence.png``, ``correspondence.json``, ``.md``, ``.csv`` and
    ``correspondence.config.json``.

    Args:
        config: the options (``config.data`` holds the images; ``config.annotations`` their parts).
        out: output folder.
        loaded: the model, when the caller has loaded it already (any ``nn.Module``; give
            ``config.input_size`` when it knows none); else ``config`` names it.
        show_progress: a progress bar on a terminal.

    Returns:
        A :class:`Result`; ``result["finding"][layer]["verdict"]`` is one of :data:`VERDICTS`.

    Raises:
        ZFNetError: no or too few images with all the parts, an unreadable file, an unknown layer.
    """
    loaded = loaded if loaded is not None else config.load()
    size = model_input_size(loaded, config)
    model = loaded.model.eval()
    parts = list(dict.fromkeys(config.parts))
    layers = (list(dict.fromkeys(config.layers)) if config.layers is not None
              else default_layer_pair(model, size, paper=DEFAULT_LAYERS, stage="deepest"))
    split = None if config.split == "all" else config.split
    data = Path(config.data)
    ann_path = Path(config.annotations) if config.annotations is not None else data / "annotations.json"
    entries = read_part_annotations(ann_path)
    candidates = [rel for rel, e in entries.items() if all(p in e["parts"] for p in parts)
                  and (split is None or rel.startswith(f"{split}/"))]
    where = f" under {split}/" if split is not None else ""
    if len(candidates) < 2:
        known = sorted({p for e in entries.values() for p in e["parts"]})
        raise ZFNetError(f"{ann_path} has {len(candidates)} image(s){where} with all of the parts "
                         f"{', '.join(parts)}; need at least 2 (parts annotated: {', '.join(known) or 'none'})")
    chosen = _choose(candidates, config.images, config.seed)

    base = loaded.base_size
    pixels, part_boxes, object_boxes = [], {p: [] for p in parts}, []
    for rel in chosen:
        path = data / rel
        file_size = image_size(path)  # ImageError (one line) when it cannot be read by zfnet's rules
        pixels.append(load_image(path, base))
        for p in parts:
            part_boxes[p].append(map_box(entries[rel]["parts"][p], file_size, base, size))
        box = entries[rel]["box"]
        object_boxes.append(map_box(box, file_size, base, size) if box is not None else [0, 0, size, size])
    norm = loaded.normalization.center_crop(size)
    x = norm(center_crop(torch.stack(pixels), size))  # (N, 3, s, s), zero = the mean
    boxes = {p: torch.tensor(b) for p, b in part_boxes.items()}
    fill = 0.0  # the mean image: the paper's grey occluder
    try:
        result = correspondence(model, x, boxes, object_boxes=torch.tensor(object_boxes), layers=layers,
                                random_trials=config.trials, fill=fill,
                                generator=torch.Generator().manual_seed(config.seed), show_progress=show_progress)
    except ValueError as err:  # an unknown layer: the message lists the valid names
        raise ZFNetError(str(err)) from None
    finding = _finding(result, config.seed)

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    png = _figure(result, x, norm, out / "correspondence.png", fill, _name(loaded))
    numbers: dict[str, Any] = {
        "kind": NAME,
        "run": str(loaded.root), "model": _name(loaded), "weights": loaded.weights, "data": str(data),
        "annotations": str(ann_path), "split": split, "images": chosen, "input_size": size, "seed": config.seed,
        "fill": fill, "random_trials": config.trials, "layers": list(result.layers), "parts": list(result.parts),
        "feature_sizes": result.feature_sizes, "normalisation": NORMALISATION, "changed": result.changed,
        "delta": {row: {layer: {"mean": s.mean, "std": s.std, "pairs": s.pairs} for layer, s in per.items()}
                  for row, per in result.scores.items()},
        "part_boxes": {p: b.tolist() for p, b in result.part_boxes.items()},
        "paper": {row: {layer: {"mean": m, "std": s} for layer, (m, s) in v.items()}
                  for row, v in PAPER_TABLE1.items()},
        "finding": finding,
    }
    report = _report(result, finding, chosen, png.name)
    files = write_results(out, NAME, numbers, report)
    files["figure"] = png
    files["config"] = write_config(out, NAME, config, layers=list(result.layers), input_size=size)
    numbers["report"] = report.to_json()
    return Result(out, numbers, files)


def _outcome(c: Comparison) -> str:
    """A part's verdict from its (Holm-adjusted) one-sided p-values."""
    if c.p_less <= ALPHA:
        return HOLDS
    if c.p_greater <= ALPHA:
        return OPPOSITE
    return NO_EVIDENCE


def _finding(result: CorrespondenceResult, seed: int) -> dict[str, Any]:
    """Per layer: each part's test against random regions of its size, and the layer's verdict."""
    tested = {(layer, p): result.compare(p, layer, permutations=PERMUTATIONS, seed=seed, confidence=CONFIDENCE)
              for layer in result.layers for p in result.parts}
    adjusted = dict(zip(tested, holm(list(tested.values()))))
    method = next(iter(adjusted.values())).method
    finding = {}
    for layer in result.layers:
        below = result.below_random(layer)
        control = result.scores[RANDOM][layer].mean
        parts = {}
        for p in result.parts:
            c = adjusted[layer, p]
            parts[p] = {
                "difference": c.difference, "interval": [_finite(c.low), _finite(c.high)], "confidence": c.confidence,
                "p_value": c.p_value, "p_less": c.p_less, "p_greater": c.p_greater, "verdict": _outcome(c),
                "text": f"{p.replace('_', ' ')}: " + c.verdict(compared="Δ part", baseline="Δ random", alpha=ALPHA),
            }
        verdicts = [v["verdict"] for v in parts.values()]
        verdict = (HOLDS if all(v == HOLDS for v in verdicts) else OPPOSITE if all(v == OPPOSITE for v in verdicts)
                   else NO_EVIDENCE if all(v == NO_EVIDENCE for v in verdicts) else MIXED)
        finding[layer] = {
            "verdict": verdict,
            "parts_significantly_below_random": [p for p, v in parts.items() if v["verdict"] == HOLDS],
            "parts_significantly_above_random": [p for p, v in parts.items() if v["verdict"] == OPPOSITE],
            "parts": parts,
            # Comparisons of means, kept beside the test: not a finding on their own.
            "parts_below_random": below,
            "all_parts_below_random": len(below) == len(result.parts),
            "random_minus_mean_part": control - sum(result.scores[p][layer].mean for p in result.parts)
            / len(result.parts),
            "test": f"Δ of the part − mean Δ of {result.random_boxes[result.parts[0]].shape[0]} random regions of its "
                    f"size; {method}, {PERMUTATIONS} shuffles; one-sided p-values Holm-adjusted over the "
                    f"{len(adjusted)} tests (every part at every layer); {100 * CONFIDENCE:g}% intervals",
            "alpha": ALPHA,
        }
    return finding


def _finite(x: float) -> float | None:
    """An interval's end for JSON: None where too few images bound it (JSON has no infinity)."""
    return x if math.isfinite(x) else None


def _layer_sentence(f: dict[str, Any]) -> str:
    """A layer's verdict in words, e.g. "no evidence either way (0 of 3 parts significantly below ...)"."""
    n = len(f["parts"])
    below, above = len(f["parts_significantly_below_random"]), len(f["parts_significantly_above_random"])
    counts = (f"{below} of {n} parts significantly below random regions of their size, {above} above; "
              f"permutation test over the images, Holm-adjusted, level {f['alpha']:g}")
    if f["verdict"] == HOLDS:
        return f"the paper's finding holds ({counts})"
    if f["verdict"] == OPPOSITE:
        return f"the opposite of the paper's finding ({counts})"
    if f["verdict"] == MIXED:
        return f"mixed, not every part the same way ({counts})"
    return f"no evidence either way ({counts})"


def _paper_beside(result: CorrespondenceResult) -> dict[str, dict[str, tuple[float, float]]]:
    """The paper's layers 5 and 7 keyed by the measured layers they stand beside (by position)."""
    beside = dict(zip(result.layers, ("layer 5", "layer 7")))
    return {row: {layer: PAPER_TABLE1[row][p] for layer, p in beside.items()}
            for row in PAPER_TABLE1 if row in result.scores}


def _figure(result: CorrespondenceResult, x: torch.Tensor, norm: Normalization, path: Path, fill: float,
            model: str) -> Path:
    def shown(images: torch.Tensor) -> torch.Tensor:
        return (norm.invert(images) / 255.0).clamp(0, 1)

    rows, panels = ["original"], [shown(x)]
    for p in result.parts:
        rows.append(p)
        panels.append(shown(occlude(x, result.part_boxes[p], fill)))
    if len(result.random_boxes[result.parts[0]]):
        rows.append(f"{RANDOM} (1 draw)")
        panels.append(shown(occlude(x, result.random_boxes[result.parts[0]][0], fill)))
    scores = {row: {layer: (s.mean, s.std) for layer, s in per.items()} for row, per in result.scores.items()}
    return draw_correspondence(torch.stack(panels), rows, scores, result.layers, path,
                               paper=_paper_beside(result),
                               title=f"Correspondence analysis of {model}: Δ per occluded part (paper: ×)")


def _signed(x: float | None) -> str:
    return "unbounded" if x is None else f"{round(x, 3) + 0.0:+.3f}"


def _report(result: CorrespondenceResult, finding: dict[str, Any], images: list[str], png: str) -> Report:
    layers = list(result.layers)
    paper = _paper_beside(result)
    columns = ["occluded"] + [f"Δ {layer}" for layer in layers] + [f"paper, layer {p[-1]}" for p in
                                                                    ("layer 5", "layer 7")[:len(layers)]]
    rows = []
    for row, per in result.scores.items():
        cells = [row.replace("_", " ")] + [_fmt(per[layer].mean, per[layer].std) for layer in layers]
        cells += [_fmt(*paper[row][layer]) if row in paper else "—" for layer in layers[:2]]
        rows.append(cells)
    tests = []
    for layer, f in finding.items():
        for p, t in f["parts"].items():
            low, high = t["interval"]
            tests.append([layer, p.replace("_", " "), _signed(t["difference"]), f"{_signed(low)} to {_signed(high)}",
                          f"{t['p_less']:.2g}", f"{t['p_greater']:.2g}", t["verdict"]])
    sentences = []
    for layer in layers:
        span = [result.scores[p][layer].mean for p in result.parts]
        control = result.scores[RANDOM][layer]
        sentences.append(f"{layer}: Δ {min(span):.3f}–{max(span):.3f} for parts vs {control.mean:.3f} "
                         f"(std over pairs {control.std:.3f}) for random: {_layer_sentence(finding[layer])}")
    summary = (f"Occluding the same part in {len(images)} images changes the features more consistently (lower Δ) "
               f"than occluding random regions when the network ties the parts together (Table 1). "
               "A lower mean is not enough: each part is tested against random regions of its size, and only "
               "where every part is significantly below random does the paper's finding hold. "
               + "; ".join(sentences) + ".")
    return Report(
        "Correspondence analysis (Table 1)", summary,
        tables=[Table("Δ ± std (mean fraction of units whose sign of change differs, over pairs of images; lower = "
                      "more consistent) beside the paper's Table 1", columns, rows),
                Table(f"Each part against random regions of its size: Δ part − Δ random with its "
                      f"{100 * CONFIDENCE:g}% interval, one-sided p-values (part below random, part above) "
                      f"Holm-adjusted over all {len(tests)} tests, and the verdict at level {ALPHA:g}",
                      ["layer", "part", "difference", f"{100 * CONFIDENCE:g}% CI", "p (below)", "p (above)",
                       "verdict"], tests)],
        figures=[Figure(png, "Left: the images with each part occluded (and one draw of random regions of a part's "
                        "size). Right: Δ ± std per occluded part and for random regions at each layer; black "
                        "crosses: the paper's Table 1.")])
