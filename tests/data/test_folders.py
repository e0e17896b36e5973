"""Image folders and ImageNet layouts on disk, and images that are not plain RGB or not images."""

from __future__ import annotations

import logging

import numpy as np
import pytest
import torch
from helpers.trees import draw, make_tree
from PIL import Image

from zfnet.data import ImageStream, mean_image, open_dataset
from zfnet.data.transforms import load_image, to_rgb
from zfnet.errors import DataError


def test_image_folder_tree(tiny_tree):
    ds = open_dataset(tiny_tree, "train", 40)
    assert ds.classes == ["bar", "cross", "disc"]
    assert len(ds) == 24
    image, label, index, problem = ds[0]
    assert image.shape == (3, 40, 40) and image.dtype == torch.uint8 and problem is None
    val = open_dataset(tiny_tree, "val", 40, classes=ds.classes)
    assert len(val) == 12 and sorted(set(val.targets)) == [0, 1, 2]


def _write_odd_images(folder):
    rng = np.random.default_rng(0)
    rgb = np.asarray(draw("disc", rng, 32))
    Image.fromarray(rgb).convert("L").save(folder / "gray.png")
    Image.fromarray(rgb).convert("CMYK").save(folder / "cmyk.jpg")
    Image.fromarray(rgb).convert("RGBA").save(folder / "rgba.png")
    Image.fromarray(rgb).convert("P").save(folder / "palette.gif")
    Image.fromarray(rgb[..., 0].astype(np.uint16) * 257).save(folder / "deep16.png")
    return rgb


def test_odd_modes_are_converted(tmp_path):
    folder = tmp_path / "d" / "train" / "a"
    folder.mkdir(parents=True)
    rgb = _write_odd_images(folder)
    ds = open_dataset(tmp_path / "d", "train", 32)
    got = {p.name: ds[i][0] for i, (p, _) in enumerate(ds.samples)}
    assert set(got) == {"gray.png", "cmyk.jpg", "rgba.png", "palette.gif", "deep16.png"}
    for name, image in got.items():
        assert image is not None and image.shape == (3, 32, 32), name
    # 16-bit values are scaled down, not clipped: the red channel round-trips exactly.
    assert torch.equal(got["deep16.png"][0], torch.from_numpy(rgb[..., 0].copy()))
    gray = np.asarray(Image.fromarray(rgb).convert("L"))
    assert torch.equal(got["gray.png"][1], torch.from_numpy(gray.copy()))


def test_transparency_composited_on_white():
    img = Image.new("RGBA", (4, 4), (10, 20, 30, 0))
    assert to_rgb(img).getpixel((0, 0)) == (255, 255, 255)


def test_bad_files_are_skipped_with_a_warning_each(tmp_path, caplog):
    root = make_tree(tmp_path / "d", classes=2, per_class=4, val_per_class=2)
    good = root / "train" / "bar" / "000.png"
    (root / "train" / "bar" / "empty.jpg").write_bytes(b"")
    (root / "train" / "bar" / "text.png").write_text("this is not an image")
    data = good.read_bytes()
    (root / "train" / "disc" / "truncated.png").write_bytes(data[: len(data) // 2])
    (root / "train" / "disc" / "notes.txt").write_text("ignored")
    with caplog.at_level(logging.WARNING, logger="zfnet"):
        ds = open_dataset(root, "train", 32)
        stream = ImageStream(ds, workers=0, cache="memory", show_progress=False)
        batches = list(stream.batches(range(len(ds)), 5))
    assert ds.classes == ["bar", "disc"]
    assert sum(len(b.images) for b in batches) == 8
    assert set(stream.bad_files) == {"train/bar/empty.jpg", "train/bar/text.png", "train/disc/truncated.png"}
    assert stream.bad_files["train/bar/empty.jpg"] == "is an empty file"  # found by the listing
    assert "truncated or corrupt" in stream.bad_files["train/disc/truncated.png"]
    assert ds[[p.name for p, _ in ds.samples].index("text.png")][3][0] == "train/bar/text.png"
    text = caplog.text
    for name in ("empty.jpg", "text.png", "truncated.png", "notes.txt"):
        assert name in text
    # streaming (no cache, two workers) skips the same files and keeps the rest in order
    ds2 = open_dataset(root, "train", 32)
    streamed = list(ImageStream(ds2, workers=2, cache="none").batches(range(len(ds2)), 5))
    kept = torch.cat([b.indices for b in streamed]).tolist()
    assert kept == torch.cat([b.indices for b in batches]).tolist()
    assert set(ds2.bad_files) == set(stream.bad_files)


def test_an_empty_class_folder_is_refused_in_training_and_a_warning_in_val(tmp_path, caplog):
    root = make_tree(tmp_path / "d", classes=2, per_class=2, val_per_class=1)
    (root / "train" / "empty_class").mkdir()
    (root / "train" / "empty_class" / "notes.txt").write_text("no image here")
    # It would be an output class the model never sees.
    with pytest.raises(DataError, match="train/empty_class holds no images.*never sees"):
        open_dataset(root, "train", 32)
    (root / "train" / "empty_class" / "0.png").symlink_to(root / "nowhere.png")  # named like one, not one
    with pytest.raises(DataError, match="empty_class holds no images"):
        open_dataset(root, "train", 32)
    (root / "train" / "empty_class" / "0.png").unlink()
    draw("disc", np.random.default_rng(0), 32).save(root / "train" / "empty_class" / "1.png")
    train = open_dataset(root, "train", 32)
    assert train.classes == ["bar", "disc", "empty_class"]
    # In a split whose classes are given, a class without images is only a warning.
    with caplog.at_level(logging.WARNING, logger="zfnet"):
        val = open_dataset(root, "val", 32, classes=train.classes)
    assert sorted(set(val.targets)) == [0, 1] and "empty_class" in caplog.text


def test_imagenet_layout_with_class_folders_and_flat_val(tmp_path):
    rng = np.random.default_rng(1)
    root = tmp_path / "imagenet"
    wnids = ["n01440764", "n01443537"]
    for w in wnids:
        (root / "train" / w).mkdir(parents=True)
        for i in range(2):
            draw("disc", rng, 40).save(root / "train" / w / f"{w}_{i}.JPEG")
    (root / "val").mkdir()
    lines = []
    for i in range(4):
        name = f"ILSVRC2012_val_{i + 1:08d}.JPEG"
        draw("bar", rng, 40).save(root / "val" / name)
        lines.append(f"{name} {wnids[i % 2]}")
    (root / "val_labels.txt").write_text("\n".join(lines) + "\n")
    (root / "LOC_synset_mapping.txt").write_text("n01440764 tench, Tinca tinca\nn01443537 goldfish\n")
    train = open_dataset(root, "train", 32)
    assert train.classes == wnids and train.class_names == ["tench", "goldfish"]
    val = open_dataset(root, "val", 32, classes=train.classes)
    assert val.targets == [0, 1, 0, 1]
    # Kaggle's CSV works too
    (root / "val_labels.txt").unlink()
    csv_lines = ["ImageId,PredictionString"] + [
        f"ILSVRC2012_val_{i + 1:08d},{wnids[(i + 1) % 2]} 1 2 3 4" for i in range(4)]
    (root / "LOC_val_solution.csv").write_text("\n".join(csv_lines) + "\n")
    assert open_dataset(root, "val", 32, classes=train.classes).targets == [1, 0, 1, 0]
    (root / "LOC_val_solution.csv").unlink()
    with pytest.raises(DataError, match="no labels file"):
        open_dataset(root, "val", 32, classes=train.classes)


def test_missing_paths_and_layouts_are_clear_errors(tmp_path, tiny_tree):
    with pytest.raises(DataError, match="does not exist"):
        open_dataset(tmp_path / "nope", "train", 32)
    with pytest.raises(DataError, match="no 'test' folder.*train, val"):
        open_dataset(tiny_tree, "test", 32)
    with pytest.raises(DataError, match="unknown layout"):
        open_dataset(tiny_tree, "train", 32, layout="coco")
    (tmp_path / "empty" / "train").mkdir(parents=True)
    with pytest.raises(DataError, match="no class folders"):
        open_dataset(tmp_path / "empty", "train", 32)
    with pytest.raises(DataError, match="class folders that the training set lacks"):
        open_dataset(tiny_tree, "val", 32, classes=["bar"])


def test_mean_image_is_the_pixelwise_mean(tiny_tree):
    ds = open_dataset(tiny_tree, "train", 24)
    stream = ImageStream(ds, workers=0, show_progress=False)
    expected = torch.stack([load_image(p, 24) for p, _ in ds.samples]).double().mean(0)
    assert torch.allclose(mean_image(stream, show_progress=False).double(), expected, atol=1e-4)


@pytest.mark.parametrize("cache", ["memory", "none"])
def test_chunks_keep_each_chunk_together_around_unreadable_files(tmp_path, cache):
    root = make_tree(tmp_path / "d", classes=2, per_class=4, val_per_class=2)
    (root / "train" / "bar" / "001x.png").write_text("this is not an image")  # sorts second in bar/
    ds = open_dataset(root, "train", 32)
    bad = [i for i, (p, _) in enumerate(ds.samples) if p.name == "001x.png"][0]
    stream = ImageStream(ds, workers=0, cache=cache, show_progress=False)
    chunks = [list(range(i, min(i + 3, len(ds)))) for i in range(0, len(ds), 3)]
    got = list(stream.chunks(chunks))
    assert len(got) == len(chunks)  # one batch per chunk, also the one holding the bad file
    for chunk, batch in zip(chunks, got):
        assert batch.indices.tolist() == [i for i in chunk if i != bad]
        assert len(batch.images) == len(batch.indices)
        assert [p for p, _ in batch.bad] == (["train/bar/001x.png"] if bad in chunk else [])
    # a later chunk alone gives the same batch as in the whole pass (a resumed or sharded pass)
    again = list(stream.chunks(chunks[2:3]))[0]
    assert torch.equal(again.images, got[2].images) and torch.equal(again.indices, got[2].indices)


def test_pinned_batches_only_where_a_gpu_can_use_them(tiny_tree):
    ds = open_dataset(tiny_tree, "val", 32)
    stream = ImageStream(ds, workers=0, cache="none", show_progress=False, pin_memory=True)
    assert stream.pin_memory == torch.cuda.is_available()  # page-locked memory needs a CUDA device
    batches = list(stream.batches(range(len(ds)), 5))
    assert sum(len(b.indices) for b in batches) == len(ds)
    if torch.cuda.is_available():
        assert all(b.images.is_pinned() for b in batches)
        again = batches[0].pin_memory()
        assert again.images.is_pinned() and torch.equal(again.indices, batches[0].indices)
