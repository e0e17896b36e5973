"""Figures of Zeiler & Fergus (2014): top-9 projections beside their patches, filters, feature evolution.

Two kinds of functions live here:

- pure computations on tensors: :func:`normalize_projection` (each projection contrast-normalised on its
  own, as the paper shows them), :func:`tile` (a grid of images), :func:`filter_rms`,
  :func:`dead_filter_fraction` and :func:`aliasing` (the two numbers of Fig. 6);
- drawing functions that take tensors and write one PNG each (matplotlib's Agg canvas, no pyplot state):
  :func:`draw_top_projections` (Fig. 2), :func:`draw_filters` (layer-1 filters), :func:`draw_evolution`
  (Fig. 4) and :func:`draw_architecture_comparison` (Fig. 6).

Projections are shown contrast-normalised, each on its own, with zero at mid-grey; image patches are shown
as they are (the uint8 pixels under the receptive field).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from matplotlib.figure import Figure
from PIL import Image

from .._io import atomic_write
from ..models.layers import filter_rms
from ..results import save_figure

__all__ = [
    "normalize_projection", "tile", "filter_rms", "dead_filter_fraction", "aliasing",
    "draw_top_projections", "draw_filters", "draw_evolution", "draw_architecture_comparison",
    "DEAD_RMS_FRACTION",
]

DEAD_RMS_FRACTION = 0.1
"""A filter is dead when its RMS is at most this fraction of the layer's median filter RMS."""

_GAP = 0.08  # white space between grids, as a fraction of a grid's size


def normalize_projection(x: torch.Tensor) -> torch.Tensor:
    """Contrast-normalise each image on its own into [0, 1], zero at mid-grey.

    Each image is divided by twice its largest absolute value and shifted by 0.5, so the strongest
    value reaches black or white and zero (no signal) is grey, as in the paper's projections. An
    all-zero image stays grey.

    Shape:
        (..., C, H, W) -> the same, float32.

    Example:
        >>> normalize_projection(torch.tensor([[[[-2.0, 0.0, 1.0]]]]))
        tensor([[[[0.0000, 0.5000, 0.7500]]]])
    """
    if x.dim() < 3:
        raise ValueError(f"expected images (..., C, H, W), got shape {tuple(x.shape)}")
    x = x.detach().float()
    peak = x.abs().amax(dim=(-3, -2, -1), keepdim=True)
    return (0.5 + 0.5 * x / peak.clamp(min=1e-12)).clamp(0.0, 1.0)


def tile(images: torch.Tensor, ncol: int | None = None, pad: int = 1, fill: float = 1.0) -> torch.Tensor:
    """Arrange images in a grid, row by row, ``pad`` pixels of ``fill`` between them.

    Args:
        images: (N, C, h, w).
        ncol: images per row (default: the ceiling of the square root of N).
        pad: pixels between neighbours (none around the outside).
        fill: value of the padding and of empty cells.

    Shape:
        (N, C, h, w) -> (C, rows * h + (rows - 1) * pad, ncol * w + (ncol - 1) * pad).
    """
    if images.dim() != 4 or len(images) == 0:
        raise ValueError(f"expected a non-empty (N, C, h, w) tensor, got shape {tuple(images.shape)}")
    n, c, h, w = images.shape
    ncol = int(np.ceil(np.sqrt(n))) if ncol is None else int(ncol)
    if ncol < 1:
        raise ValueError(f"ncol must be at least 1, got {ncol}")
    nrow = -(-n // ncol)
    out = torch.full((c, nrow * h + (nrow - 1) * pad, ncol * w + (ncol - 1) * pad), float(fill),
                     dtype=images.dtype if images.is_floating_point() else torch.float32)
    for i in range(n):
        r, q = divmod(i, ncol)
        out[:, r * (h + pad):r * (h + pad) + h, q * (w + pad):q * (w + pad) + w] = images[i]
    return out


def dead_filter_fraction(weights: torch.Tensor, threshold: float = DEAD_RMS_FRACTION) -> float:
    """Fraction of "dead" filters: RMS at most ``threshold`` times the layer's median filter RMS.

    A zero filter is always dead (so is every filter of an all-zero layer).

    Example:
        >>> w = torch.randn(4, 3, 7, 7); w[1] = 0
        >>> dead_filter_fraction(w)
        0.25
    """
    if not 0 <= threshold:
        raise ValueError(f"threshold must be non-negative, got {threshold}")
    if weights.dim() != 4:
        raise ValueError(f"expected conv weights (C_out, C_in, kh, kw), got shape {tuple(weights.shape)}")
    rms = filter_rms(weights.double())
    return float((rms <= threshold * rms.median()).double().mean())


def aliasing(weights: torch.Tensor, stride: int | Sequence[int], *, threshold: float = DEAD_RMS_FRACTION) -> float:
    """Mean share of each live filter's spectral energy above the Nyquist frequency of its output grid.

    A convolution with stride ``s`` keeps every ``s``-th output, a grid that holds frequencies up to
    ``1 / (2 s)`` cycles per pixel; whatever the filter passes above that is folded back (aliased) onto
    lower frequencies. With ``|W(fy, fx)|^2`` a filter's power spectrum (the squared magnitude of its
    discrete-time Fourier transform, summed over input channels) and ``(sy, sx)`` the stride,

        aliasing = 1 - (energy in |fy| <= 1/(2 sy), |fx| <= 1/(2 sx)) / (energy in |fy|, |fx| <= 1/2),

    the energy being the integral of ``|W|^2``. The integral is exact: ``|W|^2`` is the Fourier series of
    the filter's autocorrelation ``r`` (computed with an FFT zero-padded past twice the kernel size, so no
    lags wrap), and over the box it is ``sum_m r[my, mx] b_y(my) b_x(mx)`` with
    ``b(m) = sin(2 pi c m) / (pi m)``, ``b(0) = 2 c``, ``c = 1 / (2 s)``. Stride 1 gives 0; a single-tap
    filter (white spectrum) gives ``1 - 1 / (sy sx)``.

    The share is averaged over the live filters: those whose RMS exceeds ``threshold`` times the layer's
    median filter RMS (the filters :func:`dead_filter_fraction` does not count as dead); 0.0 when none is.

    Args:
        weights: (C_out, C_in, kh, kw) convolution weights.
        stride: the layer's stride, one int or ``(sy, sx)``.
        threshold: the dead-filter threshold, as in :func:`dead_filter_fraction`.

    Example:
        >>> aliasing(torch.ones(2, 3, 7, 7), stride=1)
        0.0
        >>> round(aliasing(torch.ones(2, 3, 1, 1), stride=4), 4)  # one tap: a flat spectrum
        0.9375
    """
    if weights.dim() != 4:
        raise ValueError(f"expected conv weights (C_out, C_in, kh, kw), got shape {tuple(weights.shape)}")
    strides = tuple(stride) if isinstance(stride, Sequence) else (stride, stride)
    if len(strides) != 2 or any(isinstance(s, bool) or not isinstance(s, int) or s < 1 for s in strides):
        raise ValueError(f"stride must be a positive int or a pair of them, got {stride!r}")
    if not 0 <= threshold:
        raise ValueError(f"threshold must be non-negative, got {threshold}")
    w = weights.detach().double().cpu()
    rms = filter_rms(w)
    live = rms > threshold * rms.median()
    if not bool(live.any()):
        return 0.0
    w = w[live]
    kh, kw = w.shape[-2:]
    size = (_fft_size(2 * kh - 1), _fft_size(2 * kw - 1))
    power = torch.fft.rfft2(w, s=size).abs().pow(2).sum(dim=1)  # (L, size_y, size_x // 2 + 1)
    r = torch.fft.irfft2(power, s=size)  # autocorrelation at lags fftfreq(size) * size, (L, size_y, size_x)
    by = _box_weights(size[0], 1 / (2 * strides[0]))
    bx = _box_weights(size[1], 1 / (2 * strides[1]))
    inside = torch.einsum("lyx,y,x->l", r, by, bx)
    total = r[:, 0, 0]  # the integral over the whole band is the filter's energy
    return float((1 - inside / total).clamp(0, 1).mean())


def _fft_size(n: int) -> int:
    return 1 << max(0, n - 1).bit_length()


def _box_weights(n: int, c: float) -> torch.Tensor:
    """``integral over |f| <= c of exp(2 pi i f m) df`` at the lags ``m`` of an FFT of size ``n``."""
    m = torch.fft.fftfreq(n, dtype=torch.float64) * n
    safe = torch.where(m == 0, torch.ones_like(m), m)
    return torch.where(m == 0, torch.full_like(m, 2 * c), torch.sin(2 * torch.pi * c * m) / (torch.pi * safe))


def _rgb(image: torch.Tensor) -> np.ndarray:
    """(C, H, W) in [0, 1] -> (H, W, 3) for imshow; one channel is shown as grey."""
    image = image.detach().float().clamp(0, 1)
    if image.shape[0] == 1:
        image = image.expand(3, -1, -1)
    return image[:3].permute(1, 2, 0).cpu().numpy()


def _pixels(patches: torch.Tensor) -> torch.Tensor:
    """Image patches as they are: uint8 (or 0-255 floats) to [0, 1]."""
    return patches.float().div(255.0).clamp(0, 1)


def _save(fig: Figure, path: str | Path, dpi: int) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    return save_figure(fig, path, dpi=dpi, facecolor="white")


def _show(ax, image: torch.Tensor, title: str | None = None, fontsize: float = 8) -> None:
    ax.imshow(_rgb(image), interpolation="nearest")
    ax.set_xticks([])
    ax.set_yticks([])
    for spine in ax.spines.values():
        spine.set_visible(False)
    if title:
        ax.set_title(title, fontsize=fontsize, pad=2)


def _grid_pad(size: int) -> int:
    return max(1, size // 16)


def draw_top_projections(projections: torch.Tensor, patches: torch.Tensor, channels: Sequence[int],
                         path: str | Path, *, layer: str, ncol: int = 4, dpi: int = 100) -> Path:
    """Fig. 2: per feature map, its top-k projections (a grid) beside the matching image patches.

    Args:
        projections: (M, k, 3, H, W) deconvnet projections (any scale; each is normalised on its own).
            The projections are cropped to the patches' window by the caller if wanted.
        patches: (M, k, 3, h, w) the uint8 pixels under each activation's receptive field.
        channels: the M feature maps' numbers, for the titles.
        path: the PNG to write.
        layer: the layer's name, for the titles.
        ncol: map pairs per row of the figure.

    Returns:
        ``path``.
    """
    if projections.dim() != 5 or patches.dim() != 5 or projections.shape[:2] != patches.shape[:2]:
        raise ValueError(f"projections (M, k, C, H, W) and patches (M, k, C, h, w) must agree in M and k, got "
                         f"{tuple(projections.shape)} and {tuple(patches.shape)}")
    m, k = projections.shape[:2]
    if len(channels) != m:
        raise ValueError(f"{len(channels)} channel numbers for {m} maps")
    if m == 0:
        raise ValueError("no feature maps to draw")
    side = int(np.ceil(np.sqrt(k)))
    ncol = max(1, min(ncol, m))
    nrow = -(-m // ncol)
    fig = Figure(figsize=(ncol * 4.4, nrow * 2.35 + 0.5))
    fig.suptitle(f"{layer}: top-{k} projections (left) and image patches (right)", fontsize=12,
                 y=1 - 0.08 / fig.get_figheight(), va="top")  # placed in inches: tall figures keep a header
    for i, c in enumerate(channels):
        r, q = divmod(i, ncol)
        # Each map pair: two axes, a small gap between them, a wider one to the next pair.
        left = (q * 4.4 + 0.15) / (ncol * 4.4)
        width = 2.0 / (ncol * 4.4)
        bottom = 1 - ((r + 1) * 2.35 + 0.45) / (nrow * 2.35 + 0.5)
        height = 2.0 / (nrow * 2.35 + 0.5)
        proj = tile(normalize_projection(projections[i]), side, _grid_pad(projections.shape[-1]))
        patch = tile(_pixels(patches[i]), side, _grid_pad(patches.shape[-1]))
        _show(fig.add_axes((left, bottom, width, height)), proj, f"{layer} map {int(c)}: projections")
        _show(fig.add_axes((left + width + 0.1 / (ncol * 4.4), bottom, width, height)), patch, "patches")
    return _save(fig, path, dpi)


def save_image(image: torch.Tensor, path: str | Path, *, min_side: int = 96) -> Path:
    """Write one (C, H, W) image in [0, 1] as a PNG, enlarged by a whole factor to at least ``min_side``.

    Pixels are repeated (nearest neighbour), so small tiles stay sharp in a browser.
    """
    if image.dim() != 3 or image.shape[0] not in (1, 3):
        raise ValueError(f"expected one (1 or 3, H, W) image, got shape {tuple(image.shape)}")
    factor = max(1, -(-min_side // max(1, min(image.shape[-2:]))))
    pixels = (image.detach().float().clamp(0, 1) * 255).round().to(torch.uint8)
    pixels = pixels.repeat_interleave(factor, 1).repeat_interleave(factor, 2)
    array = pixels.permute(1, 2, 0).cpu().numpy()
    picture = Image.fromarray(array[..., 0] if array.shape[2] == 1 else array)
    return atomic_write(path, lambda tmp: picture.save(tmp, format="PNG"))


def map_tiles(projections: torch.Tensor, patches: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """One map's top-k projections and patches as two square grids, as in :func:`draw_top_projections`.

    Shape:
        projections (k, C, H, W), patches (k, C, h, w) -> two (C, H', W') images in [0, 1].
    """
    side = int(np.ceil(np.sqrt(projections.shape[0])))
    return (tile(normalize_projection(projections), side, _grid_pad(projections.shape[-1])),
            tile(_pixels(patches), side, _grid_pad(patches.shape[-1])))


def draw_filters(weights: torch.Tensor, path: str | Path, *, title: str = "conv1 filters", ncol: int | None = None,
                 dpi: int = 100) -> Path:
    """Layer-1 filters drawn directly, each contrast-normalised on its own (zero at mid-grey).

    Args:
        weights: (C_out, C_in, kh, kw); C_in of 3 is drawn in colour, 1 in grey, others by their first 3.
        path: the PNG to write.
        title: the figure's title.
        ncol: filters per row (default about square).
    """
    if weights.dim() != 4:
        raise ValueError(f"expected conv weights (C_out, C_in, kh, kw), got shape {tuple(weights.shape)}")
    grid = tile(normalize_projection(weights), ncol, pad=1)
    scale = max(1.0, 320 / max(grid.shape[1:]))  # small filters are drawn at least 320 px wide
    fig = Figure(figsize=(grid.shape[2] * scale / dpi + 0.4, grid.shape[1] * scale / dpi + 0.6))
    _show(fig.add_axes((0.2 / fig.get_figwidth(), 0.2 / fig.get_figheight(),
                        1 - 0.4 / fig.get_figwidth(), 1 - 0.6 / fig.get_figheight())), grid)
    fig.suptitle(title, fontsize=10, y=1 - 0.08 / fig.get_figheight(), va="top")
    return _save(fig, path, dpi)


def draw_evolution(projections: torch.Tensor, epochs: Sequence[int], channels: Sequence[int], path: str | Path, *,
                   layer: str, dpi: int = 100) -> Path:
    """Fig. 4: for each feature map (a row), its strongest projection at each training snapshot (a column).

    Args:
        projections: (M, E, 3, H, W), map m's strongest projection with snapshot e's weights.
        epochs: the E snapshot epochs, for the column titles.
        channels: the M feature maps' numbers, for the row labels.
        path: the PNG to write.
        layer: the layer's name, for the title.
    """
    if projections.dim() != 5:
        raise ValueError(f"expected projections (M, E, C, H, W), got shape {tuple(projections.shape)}")
    m, e = projections.shape[:2]
    if len(epochs) != e or len(channels) != m or m == 0 or e == 0:
        raise ValueError(f"projections {tuple(projections.shape)} do not match {len(channels)} maps and "
                         f"{len(epochs)} epochs")
    cell = 1.1
    fig = Figure(figsize=(max(e * cell + 0.9, 4.0), m * cell + 0.7))  # wide enough for the title
    fig.suptitle(f"{layer}: strongest projection per snapshot", fontsize=10, y=1 - 0.08 / fig.get_figheight(),
                 va="top")
    fw, fh = fig.get_figwidth(), fig.get_figheight()
    for i, c in enumerate(channels):
        for j, ep in enumerate(epochs):
            ax = fig.add_axes(((0.8 + j * cell) / fw, 1 - (0.55 + (i + 1) * cell) / fh, cell * 0.92 / fw,
                               cell * 0.92 / fh))
            _show(ax, normalize_projection(projections[i, j]), f"epoch {ep}" if i == 0 else None)
            if j == 0:
                ax.set_ylabel(f"map {int(c)}", fontsize=8)
    return _save(fig, path, dpi)


def _stride_label(stride: int | Sequence[int] | None) -> str:
    if stride is None:
        return ""
    sy, sx = (stride, stride) if isinstance(stride, int) else stride
    return f" (stride {sy})" if sy == sx else f" (stride {sy}x{sx})"


def draw_architecture_comparison(panels: Sequence[dict], path: str | Path, *, dpi: int = 100) -> Path:
    """Fig. 6: per run (a row), its layer-1 filters and its layer-2 projections, with the two numbers.

    Args:
        panels: one dict per run with ``name`` (str), ``filters`` (C_out, C_in, kh, kw) layer-1 weights,
            ``projections`` (M, 3, h, w) layer-2 projections (one per shown map, cut to their receptive
            field by the caller), ``dead_fraction`` and ``aliasing`` (floats), and optionally ``stride``
            (layer 1's, shown in the title).
        path: the PNG to write.
    """
    if not panels:
        raise ValueError("no runs to compare")
    fig = Figure(figsize=(11, 4.6 * len(panels) + 0.6))
    fig.suptitle("Architecture selection: layer-1 filters (left) and layer-2 features (right)", fontsize=12,
                 y=1 - 0.08 / fig.get_figheight(), va="top")
    fh = fig.get_figheight()
    for i, p in enumerate(panels):
        bottom = 1 - (0.5 + (i + 1) * 4.6) / fh
        height = 4.0 / fh
        filters = tile(normalize_projection(p["filters"]), pad=1)
        proj = p["projections"]
        feats = tile(normalize_projection(proj), pad=_grid_pad(proj.shape[-1]))
        stride = _stride_label(p.get("stride"))
        _show(fig.add_axes((0.03, bottom, 0.44, height)), filters,
              f"{p['name']} conv1{stride}: dead {p['dead_fraction']:.0%}, aliasing {p['aliasing']:.3f}",
              fontsize=10)
        _show(fig.add_axes((0.53, bottom, 0.44, height)), feats, f"{p['name']} conv2: strongest projections",
              fontsize=10)
    return _save(fig, path, dpi)
