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

def _windowed_sinusoid(f0: float, n: int = 41) -> torch.Tensor:
    """A horizontal cosine of ``f0`` cycles/pixel under a 2-D Hann window, (1, 3, n, n).

    The window keeps the spectrum to two narrow lobes at (0, +-f0), each about 2 / n wide on either side
    (a bare sinusoid's rectangular window would leak a few per cent of its energy to every frequency).
    """
    x = torch.arange(n, dtype=torch.float64)
    hann = torch.hann_window(n, periodic=False, dtype=torch.float64)
    return (hann[:, None] * hann[None, :] * torch.cos(2 * math.pi * f0 * x)).expand(1, 3, n, n)


def _aliasing_by_quadrature(w: torch.Tensor, stride: int, points: int = 400) -> torch.Tensor:
    """Per filter, ``1 - (energy inside the output grid's band) / (all energy)`` by the midpoint rule.

    The spectrum is evaluated as the DTFT sum itself (a matrix of complex exponentials, no FFT) on a grid of
    ``points`` x ``points`` midpoints of the box ``|fy|, |fx| <= 1 / (2 stride)``; the total energy is the
    sum of squares (Parseval).
    """
    c = 1 / (2 * stride)
    f = -c + (torch.arange(points, dtype=torch.float64) + 0.5) * (2 * c / points)
    ey = torch.exp(-2j * math.pi * f[:, None] * torch.arange(w.shape[-2], dtype=torch.float64))  # (P, kh)
    ex = torch.exp(-2j * math.pi * f[:, None] * torch.arange(w.shape[-1], dtype=torch.float64))  # (P, kw)
    spectrum = torch.einsum("yi,ocij,xj->ocyx", ey, w.to(torch.complex128), ex)
    inside = spectrum.abs().pow(2).sum(dim=(1, 2, 3)) * (2 * c / points) ** 2
    return 1 - inside / w.pow(2).sum(dim=(1, 2, 3))


def test_windowed_sinusoid_aliases_only_above_the_output_nyquist_frequency():
    # Stride 4 keeps frequencies up to 1/8 cycles/pixel. The lobes (half-width 2/41 ~ 0.05) lie wholly below
    # it at f0 = 0.05 and wholly above it at f0 = 0.19 and 0.4; the Hann side lobes carry < 1e-3 of the energy.
    assert aliasing(_windowed_sinusoid(0.05), stride=4) < 1e-3
    assert aliasing(_windowed_sinusoid(0.19), stride=4) > 0.999
    assert aliasing(_windowed_sinusoid(0.4), stride=4) > 0.999


def test_stride_decides_what_aliases():
    # The same filter: f0 = 0.19 is below stride 2's limit (1/4) and above stride 4's (1/8).
    w = _windowed_sinusoid(0.19)
    assert aliasing(w, stride=1) == 0.0
    assert aliasing(w, stride=2) < 1e-3
    assert aliasing(w, stride=4) > 0.999
    # Any filter: a coarser output grid keeps a smaller band, so the share can only grow with the stride.
    torch.manual_seed(0)
    for size in (7, 11):
        r = torch.randn(6, 3, size, size)
        scores = [aliasing(r, stride=s) for s in (1, 2, 3, 4)]
        assert scores[0] == 0.0 and scores == sorted(scores) and scores[3] > scores[1]


def test_aliasing_closed_forms():
    # One tap: a flat spectrum, so the aliased share is the area outside the band: 1 - 1 / (sy * sx).
    tap = torch.ones(2, 3, 1, 1)
    assert aliasing(tap, stride=2) == pytest.approx(0.75, abs=1e-12)
    assert aliasing(tap, stride=4) == pytest.approx(1 - 1 / 16, abs=1e-12)
    assert aliasing(tap, stride=(1, 4)) == pytest.approx(0.75, abs=1e-12)
    # The difference filter [1, -1] (1 x 2): |W|^2 = 2 - 2 cos(2 pi fx), flat in fy, total energy 2; over
    # |fy|, |fx| <= c it integrates to 2c (4c - 2 sin(2 pi c) / pi).
    diff = torch.tensor([[[[1.0, -1.0]]]])
    for stride in (1, 2, 3, 4):
        c = 1 / (2 * stride)
        expected = 1 - 2 * c * (4 * c - 2 * math.sin(2 * math.pi * c) / math.pi) / 2
        assert aliasing(diff, stride=stride) == pytest.approx(expected, abs=1e-12)


def test_aliasing_matches_quadrature_of_the_spectrum():
    torch.manual_seed(1)
    for size, stride in ((7, 2), (11, 4), (5, 3)):
        w = torch.randn(4, 3, size, size, dtype=torch.float64)
        reference = _aliasing_by_quadrature(w, stride)
        # The midpoint rule's error is ~ h^2 / 24 of the spectrum's curvature (h = 1 / (400 stride)), under
        # 1e-6 of the energy for these kernels (observed up to 6e-7); the function itself is exact.
        assert aliasing(w, stride=stride) == pytest.approx(float(reference.mean()), abs=1e-5)
        assert aliasing(w[:1], stride=stride) == pytest.approx(float(reference[0]), abs=1e-5)


def test_aliasing_averages_live_filters_only():
    low, high = _windowed_sinusoid(0.05)[0], _windowed_sinusoid(0.4)[0]
    w = torch.stack([high, low, torch.zeros_like(low)])
    assert aliasing(w, stride=4) == pytest.approx(0.5, abs=1e-3)  # the zero filter is dead
    w[2] = 0
    w[2, :, 20, 20] = 0.01  # one tap at 1/100 of the others' RMS or less: dead at the 10% threshold
    assert dead_filter_fraction(w) == pytest.approx(1 / 3)
    assert aliasing(w, stride=4) == pytest.approx(0.5, abs=1e-3)
    # With threshold 0 only zero filters are dead: the tap (flat spectrum, 15/16 aliased) counts too.
    assert aliasing(w, stride=4, threshold=0) == pytest.approx((1 + 0 + 15 / 16) / 3, abs=1e-3)
    assert aliasing(torch.zeros(2, 3, 5, 5), stride=2) == 0.0


def test_aliasing_validation():
    w = torch.randn(2, 3, 7, 7)
    for bad in (0, -2, (2,), (2, 0), 1.5, True):
        with pytest.raises(ValueError, match="stride"):
            aliasing(w, stride=bad)
    with pytest.raises(ValueError, match="conv weights"):
        aliasing(torch.ones(3, 7, 7), stride=2)
    with pytest.raises(ValueError, match="threshold"):
        aliasing(w, stride=2, threshold=-1)


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
