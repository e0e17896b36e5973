"""Figures of the correspondence (Table 1, Fig. 8) and invariance (Fig. 5) analyses.

Drawing functions only: they take results already computed by :mod:`zfnet.analysis.correspondence` and
:mod:`zfnet.analysis.invariance` and write one PNG each (:func:`zfnet.results.new_figure` and
:func:`~zfnet.results.save_figure`: an Agg canvas of its own, no pyplot state, written atomically).

- :func:`draw_correspondence`: the occluded images, one row per part (Fig. 8), beside Δ ± std per part
  and for random regions at each layer (Table 1 as bars, the paper's values marked);
- :func:`draw_invariance`: the paper's Fig. 5 panel layout, one row per transformation: the images as
  they are transformed, the feature distance at two layers, and P(true label), one curve per image.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch

from ..results import new_figure, save_figure
from .figures import tile

if TYPE_CHECKING:
    from ..analysis.invariance import InvarianceCurves

__all__ = ["draw_correspondence", "draw_invariance"]


def _rgb(image: torch.Tensor) -> np.ndarray:
    image = image.detach().float().clamp(0, 1)
    if image.shape[0] == 1:
        image = image.expand(3, -1, -1)
    return image[:3].permute(1, 2, 0).cpu().numpy()


def _show(ax, image: torch.Tensor) -> None:
    ax.imshow(_rgb(image), interpolation="nearest")
    ax.set_xticks([])
    ax.set_yticks([])
    for spine in ax.spines.values():
        spine.set_visible(False)


def _label(name: str) -> str:
    return name.replace("_", " ")


_Table = Mapping[str, Mapping[str, tuple[float, float]]]


def draw_correspondence(panels: torch.Tensor, rows: Sequence[str], scores: _Table, layers: Sequence[str],
                        path: str | Path, *, paper: _Table | None = None,
                        title: str = "Correspondence analysis", dpi: int = 100) -> Path:
    """Occluded images (one row per condition) beside Δ ± std per condition and layer.

    Args:
        panels: (R, N, 3, h, w) in [0, 1]: row r shows the N images under condition ``rows[r]`` (e.g.
            ``original``, each part, one draw of random regions).
        rows: the R row labels.
        scores: ``{condition: {layer: (mean, std)}}`` for the bars; the conditions are drawn in this
            mapping's order (the parts, then ``random``).
        layers: the layers, one bar chart each.
        path: the PNG to write.
        paper: reference values in the same form as ``scores`` (e.g. the paper's Table 1, its layers 5
            and 7 keyed by the measured layers they stand beside), drawn as black markers; or None.
        title: the figure's title.

    Returns:
        ``path``.

    Example:
        >>> p = draw_correspondence(torch.rand(2, 3, 3, 16, 16), ["original", "nose"],
        ...                         {"nose": {"fc7": (0.1, 0.01)}, "random": {"fc7": (0.2, 0.02)}}, ["fc7"],
        ...                         "/tmp/corr.png")  # doctest: +SKIP
    """
    if panels.dim() != 5 or len(panels) != len(rows) or panels.shape[1] == 0:
        raise ValueError(f"panels must be (R, N, C, h, w) with R = {len(rows)} rows, got {tuple(panels.shape)}")
    if not layers or not scores:
        raise ValueError("nothing to draw: give at least one layer and one condition")
    n_rows, n_img = panels.shape[:2]
    cell = 0.95
    grid_w = n_img * cell + 1.4
    chart_w = 3.2
    height = max(n_rows * cell + 0.9, 3.6)
    fig = new_figure(grid_w + chart_w * len(layers) + 0.3, height)
    fw, fh = fig.get_figwidth(), fig.get_figheight()
    fig.suptitle(title, fontsize=11, y=1 - 0.08 / fh, va="top")
    for r, name in enumerate(rows):
        for i in range(n_img):
            ax = fig.add_axes(((1.3 + i * cell) / fw, 1 - (0.55 + (r + 1) * cell) / fh, cell * 0.94 / fw,
                               cell * 0.94 / fh))
            _show(ax, panels[r, i])
            if i == 0:
                ax.set_ylabel(_label(name), fontsize=8, rotation=0, ha="right", va="center")
    conditions = list(scores)
    x = np.arange(len(conditions))
    for k, layer in enumerate(layers):
        ax = fig.add_axes(((grid_w + 0.55 + k * chart_w) / fw, 0.75 / fh, (chart_w - 0.75) / fw, (fh - 1.45) / fh))
        means = [scores[c][layer][0] for c in conditions]
        stds = [scores[c][layer][1] for c in conditions]
        colours = ["#4c72b0" if c != "random" else "#999999" for c in conditions]
        ax.bar(x, means, yerr=stds, color=colours, capsize=3, width=0.7, label="measured")
        px = [i for i, c in enumerate(conditions) if paper is not None and layer in paper.get(c, {})]
        if px:
            ax.errorbar(px, [paper[conditions[i]][layer][0] for i in px],
                        yerr=[paper[conditions[i]][layer][1] for i in px], fmt="kx", capsize=2,
                        markersize=6, label="paper")
            ax.legend(fontsize=7, loc="lower right")
        ax.set_xticks(x)
        ax.set_xticklabels([_label(c) for c in conditions], fontsize=8, rotation=20)
        ax.set_title(f"Δ at {layer} (lower: more consistent)", fontsize=9)
        ax.tick_params(axis="y", labelsize=7)
        ax.set_ylim(bottom=0)
    return save_figure(fig, path, dpi=dpi)


def draw_invariance(curves: Sequence[InvarianceCurves], strips: Sequence[torch.Tensor],
                    strip_steps: Sequence[Sequence[float]], path: str | Path, *, image_names: Sequence[str],
                    units: Mapping[str, str] | None = None, title: str = "Invariance", dpi: int = 100) -> Path:
    """The paper's Fig. 5: one row per transformation, four panels each.

    Column 1: the images as they are transformed (one row per image, one column per shown step);
    columns 2 and 3: the feature distance at the first two layers of the curves; column 4: P(true label).
    One line per image in every chart.

    Args:
        curves: one :class:`~zfnet.analysis.invariance.InvarianceCurves` per transformation.
        strips: per transformation, (N, K, 3, h, w) in [0, 1]: image n at K of the steps.
        strip_steps: per transformation, the K steps shown.
        path: the PNG to write.
        image_names: the N images' names, for the legend.
        units: ``{transform: unit}`` for the x-axis labels.
        title: the figure's title.

    Returns:
        ``path``.

    Example:
        >>> draw_invariance([curves], [strip], [[0, 10]], "/tmp/inv.png", image_names=["a"])  # doctest: +SKIP
    """
    if not curves or len(strips) != len(curves) or len(strip_steps) != len(curves):
        raise ValueError(f"need one strip and one list of shown steps per transformation, got {len(curves)} "
                         f"curves, {len(strips)} strips and {len(strip_steps)} step lists")
    layers = list(curves[0].distances)[:2]
    units = dict(units or {})
    n_rows = len(curves)
    fig = new_figure(17, 3.4 * n_rows + 0.7)
    fig.suptitle(title, fontsize=12, y=1 - 0.08 / fig.get_figheight(), va="top")
    fh = fig.get_figheight()
    colours = [f"C{i % 10}" for i in range(len(image_names))]
    for r, (c, strip, shown) in enumerate(zip(curves, strips, strip_steps)):
        bottom = 1 - (0.55 + (r + 1) * 3.4 - 0.45) / fh
        height = 2.6 / fh
        if strip.dim() != 5:
            raise ValueError(f"a strip must be (N, K, C, h, w), got {tuple(strip.shape)}")
        n, k = strip.shape[:2]
        grid = tile(strip.reshape(n * k, *strip.shape[2:]), ncol=k, pad=max(1, strip.shape[-1] // 24))
        ax = fig.add_axes((0.01, bottom, 0.22, height))
        _show(ax, grid)
        unit = units.get(c.transform, "")
        ax.set_title(f"{c.transform}: " + ", ".join(f"{s:g}" for s in shown) + (f" {unit}" if unit else ""),
                     fontsize=8)
        steps = c.steps.numpy()
        panels = [(c.distances[layer].numpy(), f"{layer}: distance to original") for layer in layers]
        panels.append((c.prob_true.numpy(), "P(true class)"))
        for j, (values, name) in enumerate(panels):
            ax = fig.add_axes((0.29 + j * 0.245, bottom + 0.25 / fh, 0.19, height - 0.25 / fh))
            for i in range(values.shape[0]):
                ax.plot(steps, values[i], "-o", color=colours[i], markersize=2.5, linewidth=1.2,
                        label=image_names[i] if i < len(image_names) else None)
            ax.set_title(name, fontsize=9)
            ax.set_xlabel(f"{c.transform} ({unit})" if unit else c.transform, fontsize=8)
            ax.tick_params(labelsize=7)
            if name.startswith("P("):
                ax.set_ylim(-0.02, 1.02)
            else:
                ax.set_ylim(bottom=0)
            if r == 0 and j == 0:
                ax.legend(fontsize=6, loc="upper left")
    return save_figure(fig, path, dpi=dpi)
