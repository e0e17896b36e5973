"""PASCAL VOC 2012 on a small fake tree: targets from the class lists and from the XML, and average precision."""

from __future__ import annotations

import shutil

import numpy as np
import pytest
from helpers.trees import draw

from zfnet.data.voc import VOC_CLASSES, average_precision, mean_average_precision, open_voc, read_annotation
from zfnet.errors import DataError

# image id -> objects (class, difficult)
OBJECTS = {
    "2008_000001": [("dog", False), ("person", False)],
    "2008_000002": [("cat", True)],                       # only a difficult cat: target 0
    "2008_000003": [("cat", False), ("cat", True)],        # one clear cat is enough: target 1
    "2008_000004": [("aeroplane", False)],
}
SETS = {"train": ["2008_000001", "2008_000002", "2008_000003"], "val": ["2008_000004"]}


def _xml(image_id, objects):
    body = "".join(f"<object><name>{n}</name><pose>Left</pose><truncated>0</truncated>"
                   f"<difficult>{int(d)}</difficult><bndbox><xmin>1</xmin><ymin>1</ymin><xmax>9</xmax>"
                   f"<ymax>9</ymax></bndbox></object>" for n, d in objects)
    return f"<annotation><folder>VOC2012</folder><filename>{image_id}.jpg</filename>{body}</annotation>"


def _flag(objects, name):
    found = [d for n, d in objects if n == name]
    return 1 if any(not d for d in found) else 0 if found else -1


@pytest.fixture
def voc(tmp_path):
    base = tmp_path / "VOCdevkit" / "VOC2012"
    main = base / "ImageSets" / "Main"
    for sub in ("JPEGImages", "Annotations"):
        (base / sub).mkdir(parents=True)
    main.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for image_id, objects in OBJECTS.items():
        draw("disc", rng, 40).save(base / "JPEGImages" / f"{image_id}.jpg")
        (base / "Annotations" / f"{image_id}.xml").write_text(_xml(image_id, objects))
    for name, ids in SETS.items():
        (main / f"{name}.txt").write_text("".join(f"{i}\n" for i in ids))
        for c in VOC_CLASSES:  # the official lists: "<id> <flag>", ids padded as VOC pads them
            (main / f"{c}_{name}.txt").write_text("".join(f"{i} {_flag(OBJECTS[i], c):2d}\n" for i in ids))
    return tmp_path


def test_targets_from_class_lists(voc):
    data = open_voc(voc, "train", size=32)
    assert data.ids == SETS["train"] and data.classes == list(VOC_CLASSES)
    assert data.targets.shape == (3, 20)
    col = {c: VOC_CLASSES.index(c) for c in ("dog", "person", "cat", "aeroplane")}
    assert data.targets[0, col["dog"]] == 1 and data.targets[0, col["person"]] == 1
    assert data.targets[1, col["cat"]] == 0 and data.targets[2, col["cat"]] == 1
    assert data.targets[:, col["aeroplane"]].tolist() == [-1, -1, -1]
    assert int((data.targets == 1).sum()) == 3
    image, _, _, problem = data.images[0]
    assert image.shape == (3, 32, 32) and problem is None


def test_targets_from_annotations_match_the_lists(voc):
    base = voc / "VOCdevkit" / "VOC2012"
    from_lists = open_voc(base, "train", size=32).targets
    main = base / "ImageSets" / "Main"
    for p in main.glob("*_train.txt"):
        p.unlink()
    from_xml = open_voc(voc / "VOCdevkit", "train", size=32).targets
    assert from_xml.tolist() == from_lists.tolist()


def test_read_annotation(voc):
    path = voc / "VOCdevkit" / "VOC2012" / "Annotations" / "2008_000003.xml"
    assert read_annotation(path) == [("cat", False), ("cat", True)]
    path.write_text("<annotation><object>")
    with pytest.raises(DataError, match="2008_000003.xml"):
        read_annotation(path)


def test_voc_errors(voc, tmp_path):
    with pytest.raises(DataError, match="not a PASCAL VOC folder"):
        open_voc(tmp_path / "VOCdevkit" / "VOC2012" / "Annotations", "train", 32)
    with pytest.raises(DataError, match="no image set 'test'"):
        open_voc(voc, "test", 32)
    (voc / "VOCdevkit" / "VOC2012" / "JPEGImages" / "2008_000004.jpg").unlink()
    with pytest.raises(DataError, match="2008_000004"):
        open_voc(voc, "val", 32)
    main = voc / "VOCdevkit" / "VOC2012" / "ImageSets" / "Main"
    (main / "dog_train.txt").write_text("2008_000001 yes\n")
    with pytest.raises(DataError, match="dog_train.txt:1"):
        open_voc(voc, "train", 32)
    shutil.rmtree(main)
    with pytest.raises(DataError, match="ImageSets/Main"):
        open_voc(voc, "train", 32)


def _voc_devkit_ap(scores, targets):
    """VOCevalcls.m of the VOC 2012 devkit, transcribed: the reference for average precision."""
    keep = targets != 0
    scores, gt = scores[keep], targets[keep]
    order = np.argsort(-scores, kind="stable")
    tp = np.cumsum(gt[order] > 0)
    fp = np.cumsum(gt[order] < 0)
    rec = tp / np.sum(gt > 0)
    prec = tp / (fp + tp)
    mrec = np.concatenate([[0], rec, [1]])
    mpre = np.concatenate([[0], prec, [0]])
    for i in range(len(mpre) - 2, -1, -1):
        mpre[i] = max(mpre[i], mpre[i + 1])
    i = np.flatnonzero(mrec[1:] != mrec[:-1]) + 1
    return float(np.sum((mrec[i] - mrec[i - 1]) * mpre[i]))


def test_average_precision_known_answers():
    assert average_precision(np.array([3.0, 2.0, 1.0]), np.array([1, 1, -1])) == 1.0
    # Positives ranked 2nd and 3rd of 3: precision 1/2 at recall 1/2, 2/3 at recall 1: envelope 2/3 both.
    assert average_precision(np.array([3.0, 2.0, 1.0]), np.array([-1, 1, 1])) == pytest.approx(2 / 3)
    # A difficult image (0) is ignored wherever it ranks.
    assert average_precision(np.array([9.0, 3.0, 2.0]), np.array([0, 1, -1])) == 1.0
    with pytest.raises(ValueError, match="positive"):
        average_precision(np.array([1.0, 2.0]), np.array([-1, 0]))


def test_average_precision_matches_the_devkit():
    rng = np.random.default_rng(0)
    for _ in range(200):
        n = int(rng.integers(2, 40))
        targets = rng.choice([-1, 0, 1], size=n, p=[0.6, 0.1, 0.3])
        if not (targets > 0).any():
            targets[0] = 1
        scores = rng.normal(size=n) + 0.8 * (targets > 0)
        # Distinct scores: the devkit's ordering of ties is MATLAB sort's, which the reference need not copy.
        assert average_precision(scores, targets) == pytest.approx(_voc_devkit_ap(scores, targets), abs=1e-12)


def test_mean_average_precision():
    scores = np.array([[0.9, 0.2], [0.1, 0.8], [0.5, 0.3]])
    targets = np.array([[1, -1], [-1, 1], [-1, -1]])
    per_class, mean = mean_average_precision(scores, targets)
    assert per_class == [1.0, 1.0] and mean == 1.0
    targets[2, 1] = 1  # class 1: positives score 0.8 and 0.3, both above the negative (0.2)
    assert mean_average_precision(scores, targets)[0][1] == 1.0
    with pytest.raises(ValueError):
        mean_average_precision(scores, targets[:, :1])
