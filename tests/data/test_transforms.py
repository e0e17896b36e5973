"""The paper's crops: base size, random crops with flips, the ten-crop sampler, centre and ten crops."""

from __future__ import annotations

import pytest
import torch

from zfnet.data.transforms import (
    base_size,
    center_crop,
    random_crops,
    random_ten_crops,
    resize_center_crop,
    ten_crops,
    training_crops,
)

# A 5x5 image 0..24 and its 3x3 crops at the four corners and the centre, as (top, left).
GRID = torch.arange(25, dtype=torch.float32).view(1, 1, 5, 5)
PAPER_OFFSETS = [(0, 0), (0, 2), (2, 0), (2, 2), (1, 1)]


def _which_crop(crop: torch.Tensor) -> tuple[int, int, bool]:
    """(top, left, mirrored) of a 3x3 crop of GRID, read off its first row: 5 * top + left, ascending or not."""
    row = crop[0, 0].tolist()
    mirrored = row[0] > row[-1]
    first = min(row)
    return int(first) // 5, int(first) % 5, mirrored


def test_base_size_scales_256_over_224():
    assert base_size(224) == 256 and base_size(112) == 128


def test_ten_crops_known_answer():
    x = torch.arange(5 * 5, dtype=torch.float32).view(1, 1, 5, 5)
    crops = ten_crops(x, 3)
    assert crops.shape == (1, 10, 1, 3, 3)
    assert crops[0, 0, 0, 0].tolist() == [0, 1, 2]           # top-left
    assert crops[0, 1, 0, 0].tolist() == [2, 3, 4]           # top-right
    assert crops[0, 3, 0, 2].tolist() == [22, 23, 24]        # bottom-right
    assert crops[0, 4, 0, 1].tolist() == [11, 12, 13]        # centre
    assert torch.equal(crops[0, 5:], crops[0, :5].flip(-1))  # mirrors
    assert torch.equal(center_crop(x, 3), crops[:, 4])


def test_random_crops_subtract_the_matching_mean_crop():
    g = torch.Generator().manual_seed(3)
    images = torch.randint(0, 256, (6, 3, 10, 10), dtype=torch.uint8)
    mean = torch.rand(3, 10, 10) * 255
    full = images.float() - mean
    out = random_crops(images, 7, generator=torch.Generator().manual_seed(3), mean=mean)
    ref = random_crops(full, 7, generator=g)
    assert out.shape == (6, 3, 7, 7) and torch.allclose(out, ref, atol=1e-4)
    # each crop is a window of its image, possibly mirrored
    for i in range(6):
        windows = full[i].unfold(1, 7, 1).unfold(2, 7, 1)  # (3, 4, 4, 7, 7)
        found = any(torch.allclose(out[i], windows[:, y, x], atol=1e-4) or
                    torch.allclose(out[i], windows[:, y, x].flip(-1), atol=1e-4)
                    for y in range(4) for x in range(4))
        assert found


def test_random_crops_flip_about_half():
    images = torch.arange(4, dtype=torch.float32).view(1, 1, 1, 4).expand(2000, 1, 1, 4)
    out = random_crops(images, 1, generator=torch.Generator().manual_seed(0), flip=False)
    assert out.shape == (2000, 1, 1, 1)
    flipped = random_crops(torch.arange(2, dtype=torch.float32).view(1, 1, 1, 2).expand(2000, 1, 2, 2)
                           .contiguous(), 2, generator=torch.Generator().manual_seed(0))
    frac = (flipped[:, 0, 0, 0] == 1).float().mean().item()
    assert 0.45 < frac < 0.55  # 2000 Bernoulli(1/2) draws: std 0.011, so this is > 4 sigma


def test_ten_crop_sampler_yields_only_the_ten_paper_crops():
    out = random_ten_crops(GRID.expand(500, 1, 5, 5), 3, generator=torch.Generator().manual_seed(0))
    assert out.shape == (500, 1, 3, 3)
    for crop in out:
        top, left, mirrored = _which_crop(crop)
        assert (top, left) in PAPER_OFFSETS
        window = GRID[0, :, top:top + 3, left:left + 3]
        assert torch.equal(crop, window.flip(-1) if mirrored else window)


def test_ten_crop_sampler_draws_both_flips_of_every_crop():
    out = random_ten_crops(GRID.expand(500, 1, 5, 5), 3, generator=torch.Generator().manual_seed(0))
    seen = {_which_crop(crop) for crop in out}
    assert seen == {(top, left, mirrored) for top, left in PAPER_OFFSETS for mirrored in (False, True)}


def test_ten_crop_sampler_draws_each_crop_one_time_in_ten():
    out = random_ten_crops(GRID.expand(4000, 1, 5, 5), 3, generator=torch.Generator().manual_seed(1))
    counts: dict[tuple[int, int, bool], int] = {}
    for crop in out:
        key = _which_crop(crop)
        counts[key] = counts.get(key, 0) + 1
    # 4000 draws at p = 1/10: 400 each, std 19; 320-480 is more than 4 sigma either side.
    assert len(counts) == 10 and all(320 < n < 480 for n in counts.values()), counts


def test_ten_crop_sampler_subtracts_the_matching_mean_crop():
    images = torch.randint(0, 256, (8, 3, 10, 10), dtype=torch.uint8)
    mean = torch.rand(3, 10, 10) * 255
    out = random_ten_crops(images, 7, generator=torch.Generator().manual_seed(5), mean=mean)
    ref = random_ten_crops(images.float() - mean, 7, generator=torch.Generator().manual_seed(5))
    assert out.dtype == torch.float32 and torch.allclose(out, ref, atol=1e-4)


def test_training_crops_random_is_random_crops_with_flips():
    images = torch.randint(0, 256, (8, 3, 10, 10), dtype=torch.uint8)
    out = training_crops(images, 7, "random", generator=torch.Generator().manual_seed(2))
    assert torch.equal(out, random_crops(images, 7, generator=torch.Generator().manual_seed(2)))


def test_training_crops_ten_is_the_ten_crop_sampler():
    images = torch.randint(0, 256, (8, 3, 10, 10), dtype=torch.uint8)
    out = training_crops(images, 7, "ten", generator=torch.Generator().manual_seed(2))
    assert torch.equal(out, random_ten_crops(images, 7, generator=torch.Generator().manual_seed(2)))


def test_training_crops_refuse_an_unknown_kind():
    with pytest.raises(ValueError, match="unknown training crops 'five'.*ten, random"):
        training_crops(GRID, 3, "five")


def test_crop_too_large_is_an_error():
    with pytest.raises(ValueError, match="larger than the images"):
        random_ten_crops(torch.zeros(1, 3, 4, 4), 5)
    with pytest.raises(ValueError, match="larger than the images"):
        center_crop(torch.zeros(1, 3, 4, 4), 5)


def test_resize_center_crop_keeps_aspect():
    from PIL import Image

    img = Image.new("RGB", (200, 100))
    out = resize_center_crop(img, 50)
    assert out.size == (50, 50)
