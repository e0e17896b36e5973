"""The synthetic data set: determinism, ground truth, the files it writes, and that it is not trivial."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image

from zfnet.data import synthetic
from zfnet.data.synthetic import (
    PART_NAMES,
    PRIMARY_CLASSES,
    SECONDARY_CLASSES,
    class_names,
    render_sample,
    sample_rng,
    write_synthetic,
)

ALL_CLASSES = PRIMARY_CLASSES + SECONDARY_CLASSES


def _arrays(sample):
    return np.asarray(sample.image), np.asarray(sample.mask)


def _centre(box):
    x0, y0, x1, y1 = box
    return (x0 + x1) / 2, (y0 + y1) / 2


# ------------------------------------------------------------------------------------ class sets

def test_class_sets_are_disjoint_sorted_and_large_enough():
    assert len(PRIMARY_CLASSES) >= 10 and len(SECONDARY_CLASSES) >= 10
    assert "face" in PRIMARY_CLASSES[:10]
    assert not set(PRIMARY_CLASSES) & set(SECONDARY_CLASSES)
    # Sorted, so label i of a written set is also the i-th class folder an image-folder loader finds.
    assert list(PRIMARY_CLASSES) == sorted(PRIMARY_CLASSES)
    assert list(SECONDARY_CLASSES) == sorted(SECONDARY_CLASSES)
    assert PART_NAMES == ("left_eye", "right_eye", "nose", "mouth")


def test_class_names_takes_a_prefix_and_validates():
    assert class_names() == list(PRIMARY_CLASSES)
    assert class_names("secondary", 3) == list(SECONDARY_CLASSES[:3])
    assert class_names("primary", len(PRIMARY_CLASSES)) == list(PRIMARY_CLASSES)
    with pytest.raises(ValueError, match="'tertiary'.*primary, secondary"):
        class_names("tertiary")
    for bad in (0, len(PRIMARY_CLASSES) + 1):
        with pytest.raises(ValueError, match=f"1 to {len(PRIMARY_CLASSES)}.*{bad}"):
            class_names("primary", bad)


# ------------------------------------------------------------------------------------- rendering

def test_same_key_gives_the_same_sample_and_other_keys_differ():
    a = render_sample("star", sample_rng(3, "train/star", 5), size=64)
    b = render_sample("star", sample_rng(3, "train/star", 5), size=64)
    for x, y in zip(_arrays(a), _arrays(b), strict=True):
        np.testing.assert_array_equal(x, y)
    assert (a.box, a.parts) == (b.box, b.parts)
    for other in (sample_rng(4, "train/star", 5), sample_rng(3, "val/star", 5), sample_rng(3, "train/star", 6)):
        c = render_sample("star", other, size=64)
        assert not np.array_equal(_arrays(a)[0], _arrays(c)[0])


@pytest.mark.parametrize("name", ALL_CLASSES)
def test_box_is_the_tight_box_of_the_mask(name):
    size = 64
    for j in range(4):
        s = render_sample(name, sample_rng(0, f"train/{name}", j), size=size, label=7)
        assert s.image.size == (size, size) and s.image.mode == "RGB"
        assert s.mask.size == (size, size) and s.mask.mode == "L"
        assert (s.label, s.class_name) == (7, name)
        mask = np.asarray(s.mask)
        assert set(np.unique(mask)) <= {0, 255}
        x0, y0, x1, y1 = s.box
        assert 0 <= x0 < x1 <= size and 0 <= y0 < y1 <= size
        inside = np.zeros_like(mask, dtype=bool)
        inside[y0:y1, x0:x1] = True
        assert not mask[~inside].any(), "object pixels outside the box"
        # Tight: every edge row and column of the box holds object pixels.
        assert mask[y0, x0:x1].any() and mask[y1 - 1, x0:x1].any()
        assert mask[y0:y1, x0].any() and mask[y0:y1, x1 - 1].any()
        # The object is a sizeable part of the image (radius >= 25% of the side, thin shapes included).
        assert max(x1 - x0, y1 - y0) >= 0.3 * size
        assert s.parts == {} or name == "face"


def test_face_parts_lie_in_the_face_in_their_places():
    for j in range(25):
        s = render_sample("face", sample_rng(1, "train/face", j), size=128)
        assert tuple(s.parts) == PART_NAMES
        mask = np.asarray(s.mask) > 0
        x0, y0, x1, y1 = s.box
        for name, (a, b, c, d) in s.parts.items():
            assert x0 <= a < c <= x1 and y0 <= b < d <= y1, name
            cx, cy = _centre((a, b, c, d))
            assert mask[int(cy), int(cx)], f"{name} centre is off the face"
        (lx, ly), (rx, ry) = _centre(s.parts["left_eye"]), _centre(s.parts["right_eye"])
        (nx, ny), (_, my) = _centre(s.parts["nose"]), _centre(s.parts["mouth"])
        # Faces turn at most 25 degrees, so the order survives: left eye left of the right one
        # (as seen by the viewer), the nose between them, eyes above the nose, nose above the mouth.
        assert lx < nx < rx
        assert max(ly, ry) < ny < my


def test_render_sample_validates():
    rng = sample_rng(0, "train", 0)
    with pytest.raises(ValueError, match="'blob'"):
        render_sample("blob", rng)
    with pytest.raises(ValueError, match="31"):
        render_sample("ring", rng, size=31)
    with pytest.raises(ValueError, match="-1"):
        sample_rng(-1, "train", 0)


# --------------------------------------------------------------------------------------- writing

def _tree_bytes(root):
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_write_synthetic_layout_and_annotations(tmp_path):
    out = tmp_path / "synth"
    summary = write_synthetic(out, classes=4, per_class=5, seed=2, size=48, progress=False)
    names = list(PRIMARY_CLASSES[:4])
    assert summary.root == out.absolute() and summary.classes == names
    assert summary.counts == {"train": 20, "val": 4}  # val_per_class = max(1, 5 // 5)
    ann = json.loads((out / "annotations.json").read_text())
    assert {k: ann[k] for k in ("format", "version", "seed", "size", "class_set", "classes")} == {
        "format": "zfnet-synthetic", "version": 1, "seed": 2, "size": 48, "class_set": "primary",
        "classes": names,
    }
    assert len(ann["images"]) == 24
    for split, n in (("train", 5), ("val", 1)):
        assert sorted(p.name for p in (out / split).iterdir()) == names
        for label, name in enumerate(names):
            files = sorted(p.name for p in (out / split / name).iterdir())
            assert files == [f"{j:05d}.png" for j in range(n)]
            for j in range(n):
                rel = f"{split}/{name}/{j:05d}.png"
                entry = ann["images"][rel]
                assert entry["label"] == label and entry["class"] == name
                assert entry["mask"] == f"masks/{rel}"
                # Any image can be made again alone from its path.
                again = render_sample(name, sample_rng(2, f"{split}/{name}", j), size=48, label=label)
                np.testing.assert_array_equal(np.asarray(Image.open(out / rel)), np.asarray(again.image))
                np.testing.assert_array_equal(np.asarray(Image.open(out / entry["mask"])), np.asarray(again.mask))
                assert entry["box"] == list(again.box)
                assert entry["parts"] == {k: list(v) for k, v in again.parts.items()}
                assert (set(entry["parts"]) == set(PART_NAMES)) == (name == "face")
    assert sorted(p.name for p in out.iterdir()) == ["annotations.json", "masks", "train", "val"], \
        "staging folder or lock left behind"


def test_write_synthetic_is_byte_identical_per_seed_and_reruns_cleanly(tmp_path):
    kwargs = dict(classes=2, per_class=3, val_per_class=1, size=40, progress=False, class_set="secondary")
    a = _tree_bytes(write_synthetic(tmp_path / "a", seed=5, **kwargs).root)
    b = _tree_bytes(write_synthetic(tmp_path / "b", seed=5, **kwargs).root)
    assert a == b
    c = _tree_bytes(write_synthetic(tmp_path / "c", seed=6, **kwargs).root)
    assert a.keys() == c.keys()
    assert all(a[k] != c[k] for k in a if k.startswith("train/"))

    # A second run into the same folder replaces the first when asked to: no stale images survive.
    with pytest.raises(ValueError, match="already holds a synthetic data set; pass --overwrite"):
        write_synthetic(tmp_path / "a", seed=5, **{**kwargs, "per_class": 1, "val_per_class": 0})
    assert _tree_bytes(tmp_path / "a") == a
    write_synthetic(tmp_path / "a", seed=5, **{**kwargs, "per_class": 1, "val_per_class": 0}, overwrite=True)
    left = _tree_bytes(tmp_path / "a")
    assert sorted(k for k in left if k.endswith(".png") and not k.startswith("masks/")) == [
        f"train/{n}/00000.png" for n in SECONDARY_CLASSES[:2]
    ]
    assert left["train/bolt/00000.png"] == a["train/bolt/00000.png"]
    assert not (tmp_path / "a" / "val").exists()


def test_write_synthetic_pool_matches_in_process(tmp_path, monkeypatch):
    kwargs = dict(classes=2, per_class=3, val_per_class=1, size=32, seed=1, progress=False)
    serial = _tree_bytes(write_synthetic(tmp_path / "serial", **kwargs).root)
    monkeypatch.setattr(synthetic, "_workers", lambda n_images: 2)
    pooled = _tree_bytes(write_synthetic(tmp_path / "pooled", **kwargs).root)
    assert serial == pooled


def test_write_synthetic_keeps_a_folder_it_did_not_write(tmp_path):
    out = tmp_path / "mine"
    out.mkdir()
    (out / "notes.txt").write_text("keep me")
    for overwrite in (False, True):
        with pytest.raises(ValueError, match="not a zfnet synthetic data set"):
            write_synthetic(out, classes=1, per_class=1, size=32, progress=False, overwrite=overwrite)
    assert [p.name for p in out.iterdir()] == ["notes.txt"] and (out / "notes.txt").read_text() == "keep me"


def test_overwrite_replaces_only_the_files_zfnet_wrote(tmp_path):
    out = tmp_path / "synth"
    write_synthetic(out, classes=3, per_class=2, val_per_class=1, size=32, progress=False)
    added = {"README.md": b"my notes", "train/arrow/mine.png": b"my own arrow", "extra/x.bin": b"\x00"}
    for rel, data in added.items():
        (out / rel).parent.mkdir(parents=True, exist_ok=True)
        (out / rel).write_bytes(data)
    with pytest.raises(ValueError, match=r"already holds a synthetic data set and files zfnet did not write.*"
                                         r"README.md.*--overwrite"):
        write_synthetic(out, classes=2, per_class=1, val_per_class=1, size=32, progress=False)
    # Fewer classes and images: the set's own files that the new one lacks go, the user's stay.
    write_synthetic(out, classes=2, per_class=1, val_per_class=1, size=32, progress=False, overwrite=True)
    for rel, data in added.items():
        assert (out / rel).read_bytes() == data
    ann = json.loads((out / "annotations.json").read_text())
    assert sorted(ann["images"]) == ["train/arrow/00000.png", "train/crescent/00000.png",
                                     "val/arrow/00000.png", "val/crescent/00000.png"]
    pngs = sorted(p.relative_to(out).as_posix() for p in out.rglob("*.png"))
    assert pngs == sorted([*ann["images"], *(e["mask"] for e in ann["images"].values()), "train/arrow/mine.png"])
    assert not (out / "train" / "cross").exists() and not (out / "masks" / "val" / "cross").exists()
    assert synthetic.written_files(out) == {"annotations.json", *pngs} - {"train/arrow/mine.png"}


def test_a_users_file_with_a_name_the_new_set_needs_is_refused(tmp_path):
    out = tmp_path / "synth"
    write_synthetic(out, classes=1, per_class=1, val_per_class=0, size=32, progress=False)
    (out / "train" / "arrow" / "00001.png").write_bytes(b"the user's")
    with pytest.raises(ValueError, match="00001.png was not written by zfnet"):
        write_synthetic(out, classes=1, per_class=2, val_per_class=0, size=32, progress=False, overwrite=True)
    assert (out / "train" / "arrow" / "00001.png").read_bytes() == b"the user's"


def test_a_crafted_manifest_cannot_delete_outside_the_set(tmp_path):
    out = tmp_path / "synth"
    write_synthetic(out, classes=1, per_class=1, val_per_class=0, size=32, progress=False)
    victim = tmp_path / "victim.txt"
    victim.write_text("outside")
    ann = json.loads((out / "annotations.json").read_text())
    ann["images"]["../victim.txt"] = {"mask": str(victim)}
    (out / "annotations.json").write_text(json.dumps(ann))
    write_synthetic(out, classes=1, per_class=1, val_per_class=0, size=32, progress=False, overwrite=True)
    assert victim.read_text() == "outside"


def test_a_set_killed_while_replacing_another_is_still_recognised(tmp_path, monkeypatch):
    out = tmp_path / "synth"
    write_synthetic(out, classes=2, per_class=2, val_per_class=1, size=32, progress=False)
    real_replace, moved = synthetic.os.replace, []

    def killed_after_three(src, dst):
        if len(moved) == 3:
            raise KeyboardInterrupt  # the process dies half-way through moving the new files in
        moved.append(dst)
        real_replace(src, dst)

    monkeypatch.setattr(synthetic.os, "replace", killed_after_three)
    with pytest.raises(KeyboardInterrupt):
        write_synthetic(out, classes=2, per_class=3, val_per_class=1, size=32, seed=1, progress=False, overwrite=True)
    monkeypatch.setattr(synthetic.os, "replace", real_replace)
    # No annotations.json: a half-replaced set is never taken for a finished one, yet it is zfnet's.
    assert not (out / "annotations.json").exists()
    with pytest.raises(ValueError, match="already holds a synthetic data set; pass --overwrite"):
        write_synthetic(out, classes=2, per_class=3, val_per_class=1, size=32, seed=1, progress=False)
    write_synthetic(out, classes=2, per_class=3, val_per_class=1, size=32, seed=1, progress=False, overwrite=True)
    fresh = write_synthetic(tmp_path / "fresh", classes=2, per_class=3, val_per_class=1, size=32, seed=1,
                            progress=False)
    assert _tree_bytes(out) == _tree_bytes(fresh.root)


def test_data_synth_command_refuses_an_existing_folder_without_overwrite(tmp_path, capsys):
    from zfnet.cli import main

    out = tmp_path / "synth"
    args = ["data", "synth", str(out), "--classes", "1", "--per-class", "1", "--size", "32"]
    assert main(args) == 0
    capsys.readouterr()
    assert main(args) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "--overwrite" in err
    assert main([*args, "--overwrite"]) == 0


@pytest.mark.parametrize(("kwargs", "bad"), [
    ({"classes": 0}, "0"),
    ({"classes": len(PRIMARY_CLASSES) + 1}, str(len(PRIMARY_CLASSES) + 1)),
    ({"per_class": 0}, "per_class.*0"),
    ({"val_per_class": -1}, "val_per_class.*-1"),
    ({"size": 16}, "16"),
    ({"class_set": "other"}, "'other'"),
    ({"seed": -3}, "-3"),
])
def test_write_synthetic_validates(tmp_path, kwargs, bad):
    with pytest.raises(ValueError, match=bad):
        write_synthetic(tmp_path / "x", **{"classes": 2, "per_class": 2, "progress": False, **kwargs})
    assert not (tmp_path / "x").exists()


# -------------------------------------------------------------------------------------- hardness

def _pixels(split, n, size=64):
    x, y = [], []
    for label, name in enumerate(PRIMARY_CLASSES[:10]):
        for j in range(n):
            s = render_sample(name, sample_rng(0, f"{split}/{name}", j), size=size, label=label)
            x.append(np.asarray(s.image, dtype=np.float32).reshape(-1) / 255.0)
            y.append(label)
    return torch.from_numpy(np.stack(x)), torch.tensor(y)


def test_a_linear_classifier_on_raw_pixels_does_poorly():
    x_train, y_train = _pixels("train", 60)
    x_val, y_val = _pixels("val", 20)
    mean, std = x_train.mean(0), x_train.std(0) + 1e-3
    x_train, x_val = (x_train - mean) / std, (x_val - mean) / std
    linear = torch.nn.Linear(x_train.shape[1], 10)
    opt = torch.optim.LBFGS(linear.parameters(), max_iter=100, history_size=10, line_search_fn="strong_wolfe")

    def closure():
        opt.zero_grad()
        loss = torch.nn.functional.cross_entropy(linear(x_train), y_train) + 5e-3 * linear.weight.pow(2).sum()
        loss.backward()
        return loss

    opt.step(closure)
    with torch.no_grad():
        train_acc = (linear(x_train).argmax(1) == y_train).float().mean().item()
        val_acc = (linear(x_val).argmax(1) == y_val).float().mean().item()
    # The classifier did fit (so a low validation score is the data's doing, not the optimiser's) ...
    assert train_acc > 0.9
    # ... but does not generalise: chance is 0.1 and this scores 0.11. The binomial s.d. of an
    # accuracy near 0.1 on 200 images is 0.02, so 0.3 is ten of them above chance: only a real leak of
    # the class into colour, brightness or position would cross it, and 0.3 is far from "trivial".
    assert val_acc < 0.3, f"raw pixels predict the class ({val_acc:.2f}): the data set leaks its labels"


@pytest.mark.parametrize("size", [31, 1025, 10**7, 2.5, True, "64"])
def test_an_absurd_image_size_is_refused_before_anything_is_written(tmp_path, size):
    from zfnet.data.synthetic import write_synthetic
    from zfnet.errors import ZFNetError

    with pytest.raises(ZFNetError, match="size must be an integer from 32 to 1024 pixels"):
        write_synthetic(tmp_path / "s", classes=2, per_class=1, size=size, progress=False)
    assert not (tmp_path / "s").exists()


def test_clutter_composited_in_its_box_equals_the_whole_texture_composited():
    # The box of the clutter's alpha is all that is computed; the image and the generator's state must be
    # exactly those of compositing the whole texture, for every texture kind and for clutter outside the frame.
    from PIL import ImageDraw
    size, ss = 64, 2
    mixed = np.random.default_rng(0)
    for trial in range(240):
        layer = Image.new("L", (size * ss, size * ss))
        cx, cy = mixed.uniform(-0.6, 1.6, 2) * size * ss  # some wholly outside the image
        r = mixed.uniform(2, 40)
        ImageDraw.Draw(layer).ellipse([cx - r, cy - r, cx + r, cy + 0.6 * r], fill=int(mixed.integers(1, 256)))
        base = np.random.default_rng(trial).uniform(0, 1, (size, size, 3)).astype(np.float32)
        whole, boxed = base.copy(), base.copy()
        rng_whole, rng_boxed = np.random.default_rng(1000 + trial), np.random.default_rng(1000 + trial)
        synthetic._over(whole, synthetic._texture(rng_whole, size), synthetic._soft(layer, ss))
        synthetic._over_clutter(boxed, rng_boxed, layer, ss)
        assert np.array_equal(whole, boxed), trial
        assert rng_whole.random() == rng_boxed.random(), trial
