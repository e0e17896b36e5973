"""The one image-opening path (zfnet.data.images) and its rules, in data sets and for a single --image."""

from __future__ import annotations

import logging
import os
import re
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers.runs import png_header_claiming, write_run
from helpers.trees import draw, make_tree
from PIL import Image

from zfnet.cli import main
from zfnet.data import ImageStream, open_dataset
from zfnet.data.images import MAX_IMAGE_PIXELS, image_problem, image_size, open_image, scan_images
from zfnet.data.transforms import load_image
from zfnet.errors import ImageError

SRC = Path(__file__).resolve().parents[2] / "src" / "zfnet"


def _half_and_half(path: Path, orientation: int | None) -> Path:
    """A 40x20 image, left half red, right half blue, with an EXIF orientation tag."""
    arr = np.zeros((20, 40, 3), dtype=np.uint8)
    arr[:, :20] = (255, 0, 0)
    arr[:, 20:] = (0, 0, 255)
    exif = Image.Exif()
    if orientation is not None:
        exif[0x0112] = orientation
    Image.fromarray(arr).save(path, exif=exif.tobytes())
    return path


def test_exif_orientation_is_applied_everywhere(tmp_path):
    # Orientation 6: the camera was turned; the viewer turns the stored image 90 degrees clockwise,
    # so its left side (red) is on top.
    turned = _half_and_half(tmp_path / "turned.png", 6)
    img = open_image(turned)
    assert img.size == (20, 40) and image_size(turned) == (20, 40)
    assert img.getpixel((10, 5)) == (255, 0, 0) and img.getpixel((10, 35)) == (0, 0, 255)
    pixels = load_image(turned, 20)  # resized to 20 wide, centre-cropped: the boundary row 10
    assert pixels.shape == (3, 20, 20) and pixels[0, 2, 10] == 255 and pixels[2, 17, 10] == 255
    plain = _half_and_half(tmp_path / "plain.png", None)
    assert open_image(plain).size == (40, 20) and image_size(plain) == (40, 20)


def test_a_decompression_bomb_is_refused_from_its_header(tmp_path):
    bomb = png_header_claiming(tmp_path / "bomb.png", 20_000, 20_000)
    for read in (open_image, image_size, lambda p: load_image(p, 32)):
        with pytest.raises(ImageError, match=r"has (20000x20000 = )?400,000,000 pixels.*decompression bomb") as exc:
            read(bomb)
        assert exc.value.path == bomb and "\n" not in str(exc.value)
    # Over zfnet's limit but under Pillow's own (twice it): refused all the same, with its size.
    over = png_header_claiming(tmp_path / "over.png", 10_000, 10_000)
    assert 10_000**2 > MAX_IMAGE_PIXELS
    with pytest.raises(ImageError, match=r"has 10000x10000 = 100,000,000 pixels, more than the 89,478,485"):
        open_image(over)


def test_what_the_file_system_shows_is_judged_before_a_byte_is_read(tmp_path):
    (tmp_path / "folder.jpg").mkdir()
    (tmp_path / "dangling.png").symlink_to(tmp_path / "nowhere.png")
    (tmp_path / "loop.png").symlink_to(tmp_path / "loop.png")
    os.mkfifo(tmp_path / "pipe.png")  # opening it would block forever
    (tmp_path / "empty.png").write_bytes(b"")
    expected = {"folder.jpg": "is a directory, not an image file", "dangling.png": "is a dangling symbolic link",
                "loop.png": "is a symbolic link loop", "pipe.png": "is a FIFO (named pipe), not a regular file",
                "empty.png": "is an empty file", "missing.png": "does not exist"}
    for name, reason in expected.items():
        assert image_problem(tmp_path / name) == reason
        with pytest.raises(ImageError) as exc:
            open_image(tmp_path / name)
        assert str(exc.value) == f"image {tmp_path / name} {reason}"


def test_corrupt_and_truncated_files_are_refused(tmp_path):
    good = tmp_path / "good.png"
    draw("disc", np.random.default_rng(0), 32).save(good)
    (tmp_path / "text.png").write_text("not an image")
    (tmp_path / "half.png").write_bytes(good.read_bytes()[:200])
    with pytest.raises(ImageError, match="is not an image zfnet can read"):
        open_image(tmp_path / "text.png")
    with pytest.raises(ImageError, match="truncated or corrupt"):
        open_image(tmp_path / "half.png")
    assert open_image(good).mode == "RGB"


def test_a_data_set_skips_names_and_counts_every_unusable_entry(tmp_path, caplog):
    root = make_tree(tmp_path / "d", classes=2, per_class=3, val_per_class=1, size=32)
    folder = root / "train" / "bar"
    (folder / "folder.jpg").mkdir()
    (folder / "dangling.png").symlink_to(tmp_path / "nowhere.png")
    (folder / "loop.png").symlink_to(folder / "loop.png")
    os.mkfifo(folder / "pipe.png")
    (folder / "linked.png").symlink_to(folder / "000.png")  # a link to a good image is an image
    png_header_claiming(folder / "bomb.png", 20_000, 20_000)
    with caplog.at_level(logging.WARNING, logger="zfnet"):
        ds = open_dataset(root, "train", 32)
        stream = ImageStream(ds, workers=0, cache="memory", show_progress=False)
        kept = sum(len(b.images) for b in stream.batches(range(len(ds)), 4))
    assert kept == 7  # 3 + 3 + the link to a good one
    skipped = {"folder.jpg": "directory", "dangling.png": "dangling", "loop.png": "loop", "pipe.png": "FIFO",
               "bomb.png": "decompression bomb"}
    assert set(stream.bad_files) == {f"train/bar/{name}" for name in skipped}
    for name, word in skipped.items():
        assert word in stream.bad_files[f"train/bar/{name}"]
        assert re.search(rf"skipped train/bar/{re.escape(name)}: it .*{word}", caplog.text), name
    # the listing alone, as every data set reads its folders
    images, bad, _ = scan_images(folder)
    assert [p.name for p in images] == ["000.png", "001.png", "002.png", "bomb.png", "linked.png"]
    assert [p.name for p, _ in bad] == ["dangling.png", "folder.jpg", "loop.png", "pipe.png"]


def test_every_image_in_zfnet_is_opened_through_the_one_function():
    # Image.open appears in zfnet.data.images alone (the report checks its own figures' bytes).
    for path in SRC.rglob("*.py"):
        rel = path.relative_to(SRC).as_posix()
        if rel == "data/images.py" or rel.startswith("report/"):
            continue
        assert "Image.open(" not in path.read_text(encoding="utf-8"), rel


@pytest.fixture(scope="module")
def crafted(tmp_path_factory):
    root = tmp_path_factory.mktemp("images")
    run = write_run(root / "run")
    (root / "dir.png").mkdir()
    png_header_claiming(root / "bomb.png", 20_000, 20_000)
    (root / "corrupt.png").write_text("not an image")
    os.mkfifo(root / "pipe.png")
    return root, run


@pytest.mark.parametrize("name, words", [
    ("dir.png", "is a directory"), ("missing.png", "does not exist"), ("bomb.png", "decompression bomb"),
    ("corrupt.png", "is not an image"), ("pipe.png", "FIFO"),
])
def test_occlusion_image_refusals_are_one_line(crafted, tmp_path, capsys, name, words):
    root, run = crafted
    out = tmp_path / "out"
    code = main(["occlusion", str(run), "--image", str(root / name), "--out", str(out)])
    err = capsys.readouterr().err
    assert code == 2 and len(err.strip().splitlines()) == 1 and "Traceback" not in err, err
    assert f"image {root / name} " in err and words in err, err
    assert not out.exists()


def test_correspondence_reads_images_by_the_same_rules(crafted, tmp_path, capsys):
    root, run = crafted
    data = tmp_path / "data"
    (data / "val").mkdir(parents=True)
    for i in range(2):
        draw("disc", np.random.default_rng(i), 64).save(data / "val" / f"{i}.png")
    png_header_claiming(data / "val" / "1.png", 20_000, 20_000)
    parts = {"nose": [1, 1, 5, 5]}
    import json

    (data / "annotations.json").write_text(json.dumps({"images": {
        f"val/{i}.png": {"label": 0, "box": [0, 0, 10, 10], "parts": parts} for i in range(2)}}))
    code = main(["correspondence", str(run), "--data", str(data), "--out", str(tmp_path / "out"), "--parts", "nose",
                 "--images", "2"])
    err = capsys.readouterr().err
    assert code == 2 and len(err.strip().splitlines()) == 1 and "decompression bomb" in err, err
    assert torch.is_tensor(load_image(data / "val" / "0.png", 16))
