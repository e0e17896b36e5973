"""The paper's Fig. 7 panels for one occluded image: input, activity, projection, probability, top class."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from matplotlib import colormaps
from matplotlib.colors import ListedColormap
from matplotlib.patches import Patch, Rectangle

from ..results import new_figure, save_figure
from .figures import normalize_projection, tile

__all__ = ["draw_occlusion"]


def _extent(grid: tuple[int, int], window: int, stride: int) -> tuple[float, float, float, float]:
    """Pixel extent of a grid whose cell (i, j) is the occluder centred at (i*stride + (window-1)/2, ...)."""
    half = (window - 1) / 2
    return (half - stride / 2, half - stride / 2 + grid[1] * stride,
            half - stride / 2 + grid[0] * stride, half - stride / 2)


def _box(ax, box: Sequence[int] | None, colour: str = "lime") -> None:
    if box is not None:
        x0, y0, x1, y1 = box
        ax.add_patch(Rectangle((x0 - 0.5, y0 - 0.5), x1 - x0, y1 - y0, fill=False, edgecolor=colour, linewidth=1.5))


def _position_map(fig, ax, values: np.ndarray, extent, box: Sequence[int] | None, shape: tuple[int, ...], *,
                  cmap: str, title: str, vmin: float | None = None, vmax: float | None = None) -> None:
    """A value per occluder position, drawn over the image's pixel frame with a colour bar and the object's box."""
    im = ax.imshow(values, cmap=cmap, vmin=vmin, vmax=vmax, extent=extent, interpolation="nearest")
    _box(ax, box, "white")
    ax.set_xlim(-0.5, shape[1] - 0.5)
    ax.set_ylim(shape[0] - 0.5, -0.5)
    fig.colorbar(im, ax=ax, fraction=0.046, pad=0.03)
    ax.set_title(title, fontsize=9)


def draw_occlusion(image: torch.Tensor, result, path: str | Path, *, class_names: Sequence[str],
                   box: Sequence[int] | None = None, title: str | None = None, predicted: bool = False,
                   others: torch.Tensor | None = None, dpi: int = 100) -> Path:
    """Draw the paper's Fig. 7 row for one image and save it as a PNG.

    Panels: (a) the input with the object's true box (green) and the occluder that lowers the true
    class's probability most (dashed); (b) the total activation of the strongest feature map as a
    function of the occluder's position; (c) that map's deconvnet projection; (d) the probability of
    the true class; (e) the most probable class (colours keyed by class name).

    Args:
        image: the input as shown, (3, H, W) uint8 or float in [0, 255].
        result: an :class:`zfnet.analysis.occlusion.OcclusionResult` of that image.
        path: PNG file to write.
        class_names: names of the model's classes, by index.
        box: the object's box ``(x0, y0, x1, y1)`` in input pixels, if known.
        title: a line above the panels.
        predicted: the mapped class is the model's prediction, not a known truth: panel (a) says so.
        others: (k, 3, h, w) the same map's projections on other images (its top activations there), each
            cut to the activation's receptive field: drawn beside panel (c), as the paper's Fig. 7 (c).

    Returns:
        ``path``.
    """
    rgb = image.detach().float().clamp(0, 255).permute(1, 2, 0).cpu().numpy() / 255.0
    extent = _extent(result.grid, result.window, result.stride)
    extra = others is not None and len(others) > 0
    fig = new_figure(18 if extra else 15, 3.4)
    axes = list(fig.subplots(1, 6 if extra else 5))
    if extra:
        ax = axes.pop(3)
        strip = tile(normalize_projection(others.detach().float().cpu()), ncol=len(others), pad=2)
        ax.imshow(strip.permute(1, 2, 0).numpy() if strip.shape[0] == 3 else strip[0].numpy(),
                  cmap=None if strip.shape[0] == 3 else "gray", interpolation="nearest")
        ax.set_title(f"(c) map {result.channel} on {len(others)} other images", fontsize=9)
        ax.set_xticks([])
        ax.set_yticks([])
    target = class_names[result.target] if result.target < len(class_names) else str(result.target)

    ax = axes[0]
    ax.imshow(rgb, interpolation="nearest")
    _box(ax, box)
    r, c = divmod(int(torch.argmin(result.prob_true)), result.grid[1])
    ax.add_patch(Rectangle((c * result.stride - 0.5, r * result.stride - 0.5), result.window, result.window,
                           fill=False, edgecolor="white", linestyle="--", linewidth=1.2))
    ax.set_title(f"(a) input: {target} (predicted)" if predicted else f"(a) input: {target}", fontsize=9)

    _position_map(fig, axes[1], result.activity.numpy(), extent, box, rgb.shape, cmap="viridis",
                  title=f"(b) {result.layer} map {result.channel}: total activity")

    ax = axes[2]
    proj = normalize_projection(result.projection[None])[0].permute(1, 2, 0).numpy()
    ax.imshow(proj if proj.shape[2] == 3 else proj[..., 0], cmap=None if proj.shape[2] == 3 else "gray",
              interpolation="nearest")
    ax.set_title(f"(c) projection of map {result.channel}", fontsize=9)

    _position_map(fig, axes[3], result.prob_true.numpy(), extent, box, rgb.shape, cmap="jet", vmin=0.0,
                  vmax=max(1e-6, float(result.prob_true.max())),
                  title=f"(d) p({target}), clean {result.clean_prob:.2f}")

    ax = axes[4]
    present = sorted(set(result.top_class.flatten().tolist()))
    palette = colormaps["tab20"].colors
    colours = ListedColormap([palette[i % len(palette)] for i in range(len(present))])
    codes = np.vectorize({k: i for i, k in enumerate(present)}.get)(result.top_class.numpy())
    ax.imshow(codes, cmap=colours, vmin=-0.5, vmax=len(present) - 0.5, extent=extent, interpolation="nearest")
    ax.set_xlim(-0.5, rgb.shape[1] - 0.5)
    ax.set_ylim(rgb.shape[0] - 0.5, -0.5)
    names = [class_names[k] if k < len(class_names) else str(k) for k in present]
    ax.legend(handles=[Patch(color=palette[i % len(palette)], label=n) for i, n in enumerate(names)],
              loc="upper left", bbox_to_anchor=(1.02, 1.0), fontsize=7, frameon=False)
    ax.set_title("(e) most probable class", fontsize=9)

    for ax in axes:
        ax.set_xticks([])
        ax.set_yticks([])
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return save_figure(fig, path, dpi=dpi, facecolor="white")
