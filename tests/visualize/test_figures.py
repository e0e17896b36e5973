"""Known answers for the Fig. 6 numbers and projection normalisation; the drawing functions write PNGs."""

from __future__ import annotations

import math

import pytest
import torch
from PIL import Image

from zfnet.visualize.figures import (
    aliasing,
    dead_filter_fraction,
    draw_architecture_comparison,
    draw_evolution,
    draw_filters,
    draw_top_projections,
    filter_rms,
    normalize_projection,
    tile,
)


def _checkerboard(n: int) -> torch.Tensor:
    idx = torch.arange(n)
    return ((idx[:, None] + idx[None, :]) % 2 * 2 - 1).double()  # +-1


# --- projection normalisation -------------------------------------------------------------------------

def test_normalize_projection_zero_is_grey_and_peak_reaches_black_or_white():
    x = torch.tensor([[[[-2.0, 0.0, 1.0]]]])
    assert torch.equal(normalize_projection(x), torch.tensor([[[[0.0, 0.5, 0.75]]]]))
    assert torch.equal(normalize_projection(torch.zeros(2, 3, 4, 4)), torch.full((2, 3, 4, 4), 0.5))


def test_normalize_projection_each_image_on_its_own():
    a, b = torch.randn(3, 5, 5), torch.randn(3, 5, 5)
    both = normalize_projection(torch.stack([a, 1000 * b]))
    # Scaling one image changes nothing of either image's normalised look (float32 rounding only).
    torch.testing.assert_close(both[0], normalize_projection(a[None])[0])
    torch.testing.assert_close(both[1], normalize_projection(b[None])[0])
    assert both.amin() >= 0 and both.amax() <= 1
    for img in both:
        assert torch.isclose(torch.maximum(img.amax() - 0.5, 0.5 - img.amin()), torch.tensor(0.5))


def test_normalize_projection_rejects_non_images():
    with pytest.raises(ValueError, match="images"):
        normalize_projection(torch.zeros(4, 4))


def test_tile_places_images_row_by_row_with_padding():
    imgs = torch.arange(5.0)[:, None, None, None].expand(5, 1, 2, 2)
    grid = tile(imgs, ncol=3, pad=1, fill=-1)
    assert grid.shape == (1, 2 * 2 + 1, 3 * 2 + 2)
    assert grid[0, 0, 0] == 0 and grid[0, 0, 3] == 1 and grid[0, 3, 3] == 4
    assert grid[0, 2, 0] == -1 and grid[0, 3, 6] == -1  # padding row and the empty sixth cell


# --- dead filters ---------------------------------------------------------------------------------------

def test_zero_filter_is_dead():
    w = torch.randn(4, 3, 7, 7)
    w[1] = 0
    assert dead_filter_fraction(w) == 0.25


def test_dead_threshold_is_relative_to_the_median_rms():
    w = torch.ones(10, 3, 5, 5)
    w[0] *= 0.05  # 5% of the median: dead
    w[1] *= 0.2   # 20%: alive
    w[2] *= 100   # a loud filter does not move the median
    assert dead_filter_fraction(w) == pytest.approx(0.1)
    assert dead_filter_fraction(w, threshold=0.3) == pytest.approx(0.2)
    assert dead_filter_fraction(torch.zeros(3, 3, 7, 7)) == 1.0
    assert dead_filter_fraction(torch.randn(8, 3, 7, 7)) == 0.0


def test_filter_rms_known_answer():
    w = torch.ones(2, 3, 2, 2)
    w[1] = -3
    assert filter_rms(w).tolist() == [1.0, 3.0]
    with pytest.raises(ValueError, match="conv weights"):
        dead_filter_fraction(torch.ones(3, 7, 7))


# --- aliasing -------------------------------------------------------------------------------------------

def test_checkerboard_aliases_fully_and_constant_not_at_all():
    # An even-sized checkerboard is exactly the Nyquist frequency: all energy above half Nyquist.
    board = _checkerboard(8).expand(2, 3, 8, 8)
    assert aliasing(board) == pytest.approx(1.0, abs=1e-12)
    # Odd sizes have no exact Nyquist bin and leak. In 1-D, (-1)^x over 7 samples has DFT power
    # 2 / (1 + cos(2 pi k / 7)) at bin k (sum 7 * 7 = 49); bins 0 and +-1 (|f| = 1/7) lie at or below 0.25
    # cycles/pixel. The 2-D board is the outer product, so its low part is that fraction squared: ~0.995.
    low_1d = (1 + 2 * 2 / (1 + math.cos(2 * math.pi / 7))) / 49
    assert aliasing(_checkerboard(7).expand(1, 3, 7, 7)) == pytest.approx(1 - low_1d**2, abs=1e-12)
    assert aliasing(torch.ones(4, 3, 7, 7)) == pytest.approx(0.0, abs=1e-12)  # FFT rounding only


def test_smooth_filter_scores_low_and_zero_filters_are_ignored():
    y = torch.linspace(-1, 1, 11)
    gauss = torch.exp(-(y[:, None] ** 2 + y[None, :] ** 2) / 0.5).expand(3, 11, 11)
    board = _checkerboard(8)
    assert aliasing(gauss[None]) < 0.01
    w = torch.zeros(3, 3, 8, 8)
    w[0] = board
    assert aliasing(w) == pytest.approx(1.0)  # the two zero filters do not count
    assert aliasing(torch.zeros(2, 3, 5, 5)) == 0.0
    w[1] = 1.0
    assert aliasing(w) == pytest.approx(0.5)  # mean of 1 and 0
    with pytest.raises(ValueError, match="cutoff"):
        aliasing(w, cutoff=0.7)


# --- drawing --------------------------------------------------------------------------------------------

def _png(path) -> Image.Image:
    img = Image.open(path)
    img.load()
    return img


def test_draw_top_projections_writes_a_png(tmp_path):
    proj = torch.randn(3, 9, 3, 27, 27)
    patches = torch.randint(0, 256, (3, 9, 3, 27, 27), dtype=torch.uint8)
    path = draw_top_projections(proj, patches, [0, 4, 7], tmp_path / "f.png", layer="conv2")
    img = _png(path)
    assert img.format == "PNG" and img.width >= 800 and img.height >= 200
    with pytest.raises(ValueError, match="agree"):
        draw_top_projections(proj, patches[:2], [0, 4], tmp_path / "g.png", layer="conv2")
    with pytest.raises(ValueError, match="channel numbers"):
        draw_top_projections(proj, patches, [0], tmp_path / "g.png", layer="conv2")


def test_draw_filters_evolution_and_comparison_write_pngs(tmp_path):
    w = torch.randn(16, 3, 7, 7)
    assert _png(draw_filters(w, tmp_path / "w.png")).width >= 320
    evo = draw_evolution(torch.randn(4, 3, 3, 15, 15), [1, 2, 5], [0, 3, 5, 9], tmp_path / "e.png", layer="conv2")
    assert _png(evo).height >= 4 * 100
    with pytest.raises(ValueError, match="epochs"):
        draw_evolution(torch.randn(4, 3, 3, 15, 15), [1, 2], [0, 3, 5, 9], tmp_path / "e.png", layer="conv2")
    panel = {"name": "a", "filters": w, "projections": torch.randn(8, 3, 32, 32), "dead_fraction": 0.1,
             "aliasing": 0.3}
    cmp = draw_architecture_comparison([panel, {**panel, "name": "b"}], tmp_path / "c.png")
    assert _png(cmp).size[0] >= 1000
