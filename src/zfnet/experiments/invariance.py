"""``zfnet invariance``: the paper's Fig. 5 for a model: translate, scale and rotate images.

:func:`run` takes images of different classes from a split, runs
:func:`zfnet.analysis.invariance.invariance` for each transformation, and writes ``OUT/invariance.png``
(the paper's panel layout) and ``OUT/invariance.json`` (with ``.md`` and ``.csv`` tables): the feature
distance at two layers and P(true class) at every step, one curve per image.

Example:
    >>> from zfnet.experiments import invariance
    >>> config = invariance.Config(run="runs/zfnet", data="data/synth", scales=(1.0, 1.5))  # doctest: +SKIP
    >>> print(invariance.run(config, "out/invariance").summary())  # doctest: +SKIP
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from ..analysis.invariance import (
    DEFAULT_LAYERS,
    TRANSFORMS,
    UNITS,
    InvarianceCurves,
    default_steps,
    invariance,
    transform_images,
)
from ..data.folders import open_dataset
from ..data.transforms import center_crop
from ..errors import ZFNetError
from ..results import Figure, Report, Table, write_results
from ..train.run import LoadedRun
from ..visualize.analysis_figures import draw_invariance
from .base import MAX_SEED, MAX_SIDE, ModelSource, option, write_config
from .base import Result as _Result
from .correspondence import default_layer_pair, model_input_size

__all__ = ["Config", "Result", "run", "NAME", "HELP", "DESCRIPTION", "DISTANCE"]

NAME = "invariance"
HELP = "feature invariance to translation, scale and rotation (Fig. 5)"
DESCRIPTION = ("Translate vertically, scale and rotate images; plot the normalised distance of the features at two "
               "layers to the original's, and P(true class), one line per image (the paper's Fig. 5). Writes "
               "invariance.png, .json, .md and .csv.")

DISTANCE = "‖f(x) − f(T x)‖ / ‖f(x)‖: Euclidean distance between the features of the transformed and the " \
           "original image, divided by the length of the original's features"


@dataclass(frozen=True, kw_only=True)
class Config(ModelSource):
    """The invariance experiment's options (``zfnet invariance --help`` shows the same)."""

    what = "invariance option"

    data: str = option(metavar="DIR", help="data folder (required)")
    layers: tuple[str, ...] | None = option(None, max_items=100,
                                            help="layers compared, comma-separated (default: the paper's conv1,fc7; "
                                            "for a model without them, its first convolutional stage and the "
                                            "last layer before its classifier, e.g. conv1,avgpool)")
    images: int = option(5, low=1, high=10_000, help="images, of different classes where possible")
    split: str = option("val", help="split folder the images come from")
    transforms: tuple[str, ...] = option(TRANSFORMS, choices=TRANSFORMS, max_items=len(TRANSFORMS),
                                         help="transformations, comma-separated")
    shifts: tuple[float, ...] | None = option(None, low=-MAX_SIDE, high=MAX_SIDE, max_items=1000,
                                              help="vertical shifts in pixels, e.g. --shifts=-20,0,20 (default: 13 "
                                              "steps up to a quarter of the input)")
    scales: tuple[float, ...] | None = option(None, low=0, high=100, low_open=True, max_items=1000,
                                              help="scale factors (default: 1.0,1.1,...,1.8)")
    angles: tuple[float, ...] | None = option(None, low=-3600, high=3600, max_items=1000,
                                              help="rotations in degrees (default: 0,10,...,360)")
    seed: int = option(0, low=0, high=MAX_SEED, help="seed of the choice of images")

    def __post_init__(self) -> None:
        super().__post_init__()
        if not self.transforms:
            raise ZFNetError(f"transforms is empty; name at least one of {', '.join(TRANSFORMS)}")
        if self.layers is not None and not self.layers:
            raise ZFNetError("layers is empty; name at least one layer, or leave it out for the default")
        for name, values in (("shifts", self.shifts), ("scales", self.scales), ("angles", self.angles)):
            if values is not None and not values:
                raise ZFNetError(f"{name} is empty; give at least one step, or leave it out for the default")

    def steps(self) -> dict[str, tuple[float, ...]]:
        """``{transform: amounts}`` given (the others take :func:`~zfnet.analysis.invariance.default_steps`)."""
        given = {"translation": self.shifts, "scale": self.scales, "rotation": self.angles}
        return {t: v for t, v in given.items() if v is not None}


@dataclass
class Result(_Result):
    """The invariance experiment's numbers: ``numbers["transforms"][t]`` (steps, distances per layer,
    P(true) and the predictions, one row per image) and ``numbers["images"]``."""

    kind = NAME

    def lines(self) -> list[str]:
        table = self.numbers["report"]["tables"][0]
        return ["  ".join(f"{c:>14}" for c in row) for row in [table["columns"], *table["rows"]]]


def _name(loaded: LoadedRun) -> str:
    return str(loaded.metadata.get("model", type(loaded.model).__name__))


def _distinct_class_images(labels: list[int], n: int, seed: int) -> list[int]:
    """Indices of ``n`` images, of different classes where there are enough, a seeded choice."""
    g = torch.Generator().manual_seed(seed)
    order = torch.randperm(len(labels), generator=g).tolist()
    chosen, seen = [], set()
    for i in order:
        if labels[i] not in seen:
            chosen.append(i)
            seen.add(labels[i])
        if len(chosen) == n:
            return chosen
    chosen += [i for i in order if i not in chosen][:n - len(chosen)]
    return chosen


def run(config: Config, out: str | Path, *, loaded: LoadedRun | None = None, show_progress: bool = True) -> Result:
    """Fig. 5 for a model: feature distances and P(true) as images are transformed; PNG, JSON, MD, CSV.

    Writes ``OUT/invariance.png``, ``invariance.json``, ``.md``, ``.csv`` and ``invariance.config.json``.

    Args:
        config: the options (``config.data``/``config.split`` hold the images; ``shifts``, ``scales``,
            ``angles`` override :func:`~zfnet.analysis.invariance.default_steps`).
        out: output folder.
        loaded: the model, when the caller has loaded it already (any ``nn.Module``; give
            ``config.input_size`` when it knows none); else ``config`` names it.
        show_progress: progress bars on a terminal.

    Returns:
        A :class:`Result`; ``result["transforms"]["scale"]["steps"]`` are the scale factors, for example.

    Raises:
        ZFNetError: a bad data set, an unreadable image, an unknown layer.
    """
    loaded = loaded if loaded is not None else config.load(data=config.data, split=config.split)
    size = model_input_size(loaded, config)
    model = loaded.model.eval()
    layers = (list(dict.fromkeys(config.layers)) if config.layers is not None
              else default_layer_pair(model, size, paper=DEFAULT_LAYERS, stage="first"))
    transforms = list(dict.fromkeys(config.transforms))
    steps = config.steps()
    ds = open_dataset(config.data, config.split, loaded.base_size, classes=loaded.classes)
    chosen = _distinct_class_images(ds.targets, config.images, config.seed)
    pixels, labels, names, paths = [], [], [], []
    for i in chosen:
        image, label, _, problem = ds[i]
        if image is None:
            raise ZFNetError(f"cannot read {problem[0]}: {problem[1]}")
        pixels.append(image)
        labels.append(label)
        names.append(f"{loaded.class_names[label] if label < len(loaded.class_names) else label} "
                     f"{ds.samples[i][0].stem}")
        paths.append(ds.display_path(ds.samples[i][0]))
    x = loaded.normalize(torch.stack(pixels))  # (N, 3, S, S), zero = the mean
    y = torch.tensor(labels)

    all_curves: list[InvarianceCurves] = []
    strips, strip_steps = [], []
    norm = loaded.normalization.center_crop(size)
    for t in transforms:
        amounts = [float(a) for a in steps.get(t, default_steps(t, size))]
        try:
            curves = invariance(model, x, y, t, amounts, layers=layers, crop=size, show_progress=show_progress)
        except ValueError as err:  # an unknown layer: the message lists the valid names
            raise ZFNetError(str(err)) from None
        all_curves.append(curves)
        k = min(5, len(amounts))
        shown = sorted({round(j * (len(amounts) - 1) / max(k - 1, 1)) for j in range(k)})
        strip_steps.append([amounts[j] for j in shown])
        strips.append(torch.stack([(norm.invert(center_crop(transform_images(x, t, amounts[j]), size)) / 255.0)
                                   .clamp(0, 1) for j in shown], dim=1))

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    png = draw_invariance(all_curves, strips, strip_steps, out / "invariance.png", image_names=names, units=UNITS,
                          title=f"Invariance of {_name(loaded)}: vertical translation, scale, rotation (Fig. 5)")
    numbers: dict[str, Any] = {
        "kind": NAME,
        "run": str(loaded.root), "model": _name(loaded), "weights": loaded.weights, "data": str(config.data),
        "split": config.split,
        "input_size": size, "seed": config.seed, "layers": list(all_curves[0].distances), "distance": DISTANCE,
        "images": [{"path": p, "label": int(lab), "class": loaded.class_names[lab]
                    if lab < len(loaded.class_names) else str(lab)} for p, lab in zip(paths, labels)],
        "transforms": {c.transform: {
            "unit": UNITS[c.transform], "steps": c.steps.tolist(),
            "distance": {layer: d.tolist() for layer, d in c.distances.items()},
            "prob_true": c.prob_true.tolist(), "predicted": c.predicted.tolist(),
        } for c in all_curves},
    }
    report = _report(all_curves, png.name, len(chosen))
    files = write_results(out, NAME, numbers, report)
    files["figure"] = png
    files["config"] = write_config(out, NAME, config, layers=numbers["layers"], input_size=size,
                                   steps={c.transform: c.steps.tolist() for c in all_curves})
    numbers["report"] = report.to_json()
    return Result(out, numbers, files)


def _nanmean(t: torch.Tensor) -> float:
    return float(t.nanmean())


def _offset(transform: str, step: float) -> float:
    """How far a step is from the identity: |pixels|, |log factor|, or the angle to the nearest whole turn."""
    if transform == "translation":
        return abs(step)
    if transform == "scale":
        return abs(math.log(step)) if step > 0 else math.inf
    turn = step % 360.0
    return min(turn, 360.0 - turn)


def _report(all_curves: list[InvarianceCurves], png: str, n: int) -> Report:
    layers = list(all_curves[0].distances)
    columns = ["transform", "step"] + [f"distance {layer}" for layer in layers] + ["P(true) mean", "P(true) min"]
    rows, small = [], []
    for c in all_curves:
        steps = c.steps.tolist()
        moved = [j for j, s in enumerate(steps) if _offset(c.transform, s) > 0]
        if not moved:
            continue
        nearest = min(moved, key=lambda j: (_offset(c.transform, steps[j]), j))
        farthest = max(moved, key=lambda j: (_offset(c.transform, steps[j]), -j))
        for j in dict.fromkeys((nearest, farthest)):
            rows.append([c.transform, f"{steps[j]:g} {UNITS[c.transform]}"]
                        + [round(_nanmean(c.distances[layer][:, j]), 4) for layer in layers]
                        + [round(float(c.prob_true[:, j].mean()), 4), round(float(c.prob_true[:, j].min()), 4)])
        if len(layers) >= 2:
            small.append(f"{c.transform} by {steps[nearest]:g} {UNITS[c.transform]} moves {layers[0]} by "
                         f"{_nanmean(c.distances[layers[0]][:, nearest]):.2f} and {layers[-1]} by "
                         f"{_nanmean(c.distances[layers[-1]][:, nearest]):.2f}")
    summary = (f"How far the features of {n} images move (distance relative to the original's feature length) "
               f"and how P(true class) changes as the images are translated, scaled and rotated (Fig. 5). "
               + ("Mean over images: " + "; ".join(small) + "." if small else ""))
    return Report(
        "Invariance to translation, scale and rotation (Fig. 5)", summary,
        tables=[Table("Mean over images at the smallest and the largest step of each transformation", columns, rows)],
        figures=[Figure(png, "Rows: vertical translation, scale, rotation. Columns: the images as transformed; the "
                        f"feature distance at {' and '.join(layers[:2])} (‖f(x) − f(Tx)‖ / ‖f(x)‖); the probability "
                        "of the true class. One line per image.")])
