"""The correspondence and invariance jobs and commands on a tiny run over the synthetic data set."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from helpers.nets import VGGStyle
from PIL import Image
from torch import nn

from zfnet._io import atomic_write_json
from zfnet.analysis.correspondence import RANDOM, correspondence
from zfnet.analysis.jobs import PAPER_TABLE1, correspondence_job, invariance_job
from zfnet.cli import main
from zfnet.data.annotations import map_box, read_part_annotations
from zfnet.data.synthetic import write_synthetic
from zfnet.data.transforms import base_size, center_crop, load_image, pil_to_tensor, resize_center_crop
from zfnet.errors import ZFNetError
from zfnet.models import build
from zfnet.train.checkpoint import LoadedRun, RunFiles, load_run, save_mean, save_weights

pytestmark = pytest.mark.usefixtures("one_thread")



def _default_init_(model: nn.Module) -> nn.Module:
    for m in model.modules():  # PyTorch's default init: activations far from zero at every layer
        if isinstance(m, (nn.Conv2d, nn.Linear)):
            m.reset_parameters()
    return model


@pytest.fixture(scope="module")
def synth_run(tmp_path_factory):
    """Synthetic data (4 classes, faces among them, 64 px) and a zfnet-tiny run directory written directly."""
    root = tmp_path_factory.mktemp("analyses")
    summary = write_synthetic(root / "data", classes=4, per_class=2, val_per_class=4, size=64, progress=False)
    torch.manual_seed(0)
    model = _default_init_(build("zfnet-tiny", num_classes=4))
    run = root / "run"
    files = RunFiles(run)
    run.mkdir()
    save_weights(files.best, model, {"model": "zfnet-tiny", "num_classes": 4, "model_options": {}})
    base = base_size(64)
    train = sorted((root / "data" / "train").rglob("*.png"))
    save_mean(files.mean, torch.stack([load_image(p, base) for p in train]).float().mean(0))
    atomic_write_json(files.classes, {"classes": summary.classes, "names": summary.classes})
    return root / "data", run


def _png(path: Path) -> Image.Image:
    img = Image.open(path)
    img.load()
    assert img.format == "PNG"
    return img


def _check_report(record: dict, out: Path, kind: str) -> None:
    assert record["kind"] == kind
    assert json.loads((out / f"{kind}.json").read_text()) == record
    report = record["report"]
    assert report["title"] and report["summary"].count(".") >= 2
    for fig in report["figures"]:
        img = _png(out / fig["path"])
        assert img.width >= 600 and img.height >= 300 and fig["caption"]
    for table in report["tables"]:
        assert table["rows"] and all(len(r) == len(table["columns"]) for r in table["rows"])


# ------------------------------------------------------------------------------------- box mapping

@pytest.mark.parametrize("file_size,base,crop", [((64, 64), 73, 64), ((128, 128), 128, 112), ((100, 50), 73, 64),
                                                 ((40, 90), 146, 128)])
def test_map_box_follows_the_preprocessing_of_the_pixels(file_size, base, crop):
    w, h = file_size
    box = [w // 5, h // 3, w // 5 + w // 4, h // 3 + h // 5]
    mask = Image.new("L", file_size)
    mask.paste(255, box)
    # The mask goes through the same resize and crops (nearest neighbour, so edges do not blur).
    scale = base / min(w, h)
    big = mask.resize((max(base, round(w * scale)), max(base, round(h * scale))), Image.Resampling.NEAREST)
    left, top = (big.width - base) // 2, (big.height - base) // 2
    cropped = big.crop((left, top, left + base, top + base))
    assert cropped.size == resize_center_crop(mask, base).size
    pixels = center_crop(pil_to_tensor(cropped.convert("RGB"))[0], crop)
    ys, xs = torch.nonzero(pixels > 0, as_tuple=True)
    seen = [int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1]
    got = map_box(box, file_size, base, crop)
    # Rounded outwards: contains what nearest-neighbour resizing shows, within a pixel of it.
    assert got[0] <= seen[0] and got[1] <= seen[1] and got[2] >= seen[2] and got[3] >= seen[3]
    assert all(abs(a - b) <= 1 for a, b in zip(got, seen))


def test_read_part_annotations(tmp_path):
    good = {"images": {"a.png": {"box": [0, 0, 9, 9], "parts": {"nose": [1, 2, 3, 4]}}, "b.png": {"parts": {}}}}
    atomic_write_json(tmp_path / "a.json", good)
    entries = read_part_annotations(tmp_path / "a.json")
    assert entries["a.png"]["parts"] == {"nose": [1.0, 2.0, 3.0, 4.0]} and entries["b.png"]["box"] is None
    atomic_write_json(tmp_path / "bad.json", {"images": {"a.png": {"parts": {"nose": [1, 2]}}}})
    with pytest.raises(ZFNetError, match=r"part 'nose' of 'a.png' is \[1, 2\]"):
        read_part_annotations(tmp_path / "bad.json")
    atomic_write_json(tmp_path / "none.json", [1, 2])
    with pytest.raises(ZFNetError, match="no \"images\" mapping"):
        read_part_annotations(tmp_path / "none.json")
    with pytest.raises(ZFNetError, match="does not exist"):
        read_part_annotations(tmp_path / "missing.json")


# ------------------------------------------------------------------------------------ correspondence

def test_correspondence_job_matches_the_algorithm_on_the_same_inputs(synth_run, tmp_path):
    data, run = synth_run
    record = correspondence_job(run, data, tmp_path, images=4, random_trials=2, show_progress=False)
    _check_report(record, tmp_path, "correspondence")
    assert record["parts"] == ["right_eye", "left_eye", "nose"] and record["layers"] == ["conv5", "fc7"]
    assert len(record["images"]) == 4 and all(p.startswith("val/face/") for p in record["images"])
    assert record["paper"]["random"]["layer 5"] == {"mean": 0.107, "std": 0.017}
    assert set(record["delta"]) == {"right_eye", "left_eye", "nose", RANDOM}
    assert set(record["finding"]) == {"conv5", "fc7"}

    # The same analysis from inputs prepared here: file boxes mapped, pixels mean-subtracted and cropped.
    loaded = load_run(run)
    ann = json.loads((data / "annotations.json").read_text())["images"]
    x = torch.stack([load_image(data / p, 73) for p in record["images"]]).float()
    x = center_crop(x - loaded.mean, 64)
    boxes = {part: torch.tensor([map_box(ann[p]["parts"][part], (64, 64), 73, 64) for p in record["images"]])
             for part in record["parts"]}
    objects = torch.tensor([map_box(ann[p]["box"], (64, 64), 73, 64) for p in record["images"]])
    again = correspondence(loaded.model, x, boxes, object_boxes=objects, random_trials=2,
                           generator=torch.Generator().manual_seed(0))
    for row, per in again.scores.items():
        for layer, s in per.items():
            assert record["delta"][row][layer] == pytest.approx({"mean": s.mean, "std": s.std, "pairs": s.pairs})
    for layer, f in record["finding"].items():
        assert f["parts_below_random"] == again.below_random(layer)

    table = record["report"]["tables"][0]
    assert table["columns"][:3] == ["occluded", "Δ conv5", "Δ fc7"]
    assert [r[0] for r in table["rows"]] == ["right eye", "left eye", "nose", "random"]
    assert table["rows"][0][3] == "0.067 ± 0.007" == f"{PAPER_TABLE1['right_eye']['layer 5'][0]:.3f} ± 0.007"


def test_correspondence_job_errors(synth_run, tmp_path):
    data, run = synth_run
    with pytest.raises(ZFNetError, match=r"0 image\(s\) under val/ with all of the parts tail.*left_eye"):
        correspondence_job(run, data, tmp_path, parts=["tail"], show_progress=False)
    with pytest.raises(ZFNetError, match="images must be an int of at least 2"):
        correspondence_job(run, data, tmp_path, images=1, show_progress=False)
    with pytest.raises(ZFNetError, match="annotation file .*nothing.json does not exist"):
        correspondence_job(run, data, tmp_path, annotations=tmp_path / "nothing.json", show_progress=False)


def test_user_annotations_without_object_boxes(synth_run, tmp_path):
    data, run = synth_run
    ann = json.loads((data / "annotations.json").read_text())["images"]
    faces = {p: {"parts": {"nose": e["parts"]["nose"]}} for p, e in ann.items() if e["parts"]}
    atomic_write_json(tmp_path / "parts.json", {"images": faces})
    record = correspondence_job(run, data, tmp_path / "out", parts=["nose"], annotations=tmp_path / "parts.json",
                                split=None, images=3, random_trials=1, show_progress=False)
    assert record["parts"] == ["nose"] and len(record["images"]) == 3 and record["split"] is None
    assert [r[0] for r in record["report"]["tables"][0]["rows"]] == ["nose", "random"]


# ---------------------------------------------------------------------------------------- invariance

def test_invariance_job(synth_run, tmp_path):
    data, run = synth_run
    steps = {"translation": [-8, 0, 8], "scale": [1.0, 1.5], "rotation": [0, 90, 360]}
    record = invariance_job(run, data, tmp_path, images=3, steps=steps, show_progress=False)
    _check_report(record, tmp_path, "invariance")
    assert [im["label"] for im in record["images"]] == sorted({im["label"] for im in record["images"]},
                                                             key=[im["label"] for im in record["images"]].index)
    assert len(record["images"]) == 3  # three different classes
    assert record["layers"] == ["conv1", "fc7"]
    for t, amounts in steps.items():
        entry = record["transforms"][t]
        assert entry["steps"] == [float(a) for a in amounts]
        identity = [j for j, a in enumerate(amounts) if a in (0, 1.0, 360)]
        for layer in ("conv1", "fc7"):
            assert len(entry["distance"][layer]) == 3
            for j in identity:
                assert [row[j] for row in entry["distance"][layer]] == [0.0, 0.0, 0.0]
        assert all(0 <= p <= 1 for row in entry["prob_true"] for p in row)
    # Rotation by 360 degrees is the identity: P(true) is the same as at 0.
    rot = record["transforms"]["rotation"]["prob_true"]
    assert [r[0] for r in rot] == [r[2] for r in rot]


def test_invariance_job_errors(synth_run, tmp_path):
    data, run = synth_run
    with pytest.raises(ZFNetError, match="unknown transforms \\['shear'\\]"):
        invariance_job(run, data, tmp_path, transforms=["shear"], show_progress=False)
    with pytest.raises(ZFNetError, match="images must be a positive int"):
        invariance_job(run, data, tmp_path, images=0, show_progress=False)


# --------------------------------------------------------------------- a model defined outside zfnet

def test_both_jobs_on_a_model_defined_outside_zfnet(synth_run, tmp_path):
    data, run = synth_run
    zf = load_run(run)
    outside = LoadedRun(root=tmp_path, model=_default_init_(VGGStyle(num_classes=4)), mean=zf.mean,
                        classes=zf.classes, class_names=zf.class_names, metadata={"model": "vgg-style"})
    with pytest.raises(ZFNetError, match="VGGStyle has no config.input_size; give input_size"):
        invariance_job(outside, data, tmp_path, show_progress=False)
    corr = correspondence_job(outside, data, tmp_path, layers=["features.7", "classifier.4"], images=3,
                              random_trials=1, input_size=64, show_progress=False)
    assert corr["model"] == "vgg-style" and corr["layers"] == ["features.7", "classifier.4"]
    assert set(corr["delta"]["nose"]) == {"features.7", "classifier.4"}
    inv = invariance_job(outside, data, tmp_path, layers=["features.0", "classifier.4"], images=2, input_size=64,
                         steps={"translation": [0, 4], "scale": [1.0, 1.2], "rotation": [0, 45]},
                         show_progress=False)
    assert inv["transforms"]["scale"]["distance"]["features.0"][0][0] == 0.0
    assert all(m._forward_hooks == {} for m in outside.model.modules())


# ----------------------------------------------------------------------------------------------- CLI

def test_cli_correspondence_and_invariance(synth_run, tmp_path, capsys):
    data, run = synth_run
    out = tmp_path / "out"
    assert main(["correspondence", str(run), "--data", str(data), "--out", str(out), "--images", "3",
                 "--trials", "1", "--quiet"]) == 0
    printed = capsys.readouterr().out
    assert "right eye" in printed and "random" in printed and str(out) in printed
    assert (out / "correspondence.png").is_file() and (out / "correspondence.json").is_file()
    assert main(["invariance", str(run), "--data", str(data), "--out", str(out), "--images", "2",
                 "--shifts=-4,0,4", "--scales", "1,1.4", "--angles", "0,180", "--quiet"]) == 0
    printed = capsys.readouterr().out
    assert "invariance.json" in printed and "rotation" in printed
    record = json.loads((out / "invariance.json").read_text())
    assert record["transforms"]["translation"]["steps"] == [-4.0, 0.0, 4.0]
    assert (out / "correspondence.json").is_file()  # both analyses share one folder


def test_cli_errors_are_one_line(synth_run, tmp_path, capsys):
    data, run = synth_run
    assert main(["correspondence", str(run), "--data", str(data), "--out", str(tmp_path), "--parts", "tail",
                 "--quiet"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("zfnet correspondence: error:") and "tail" in err and "\n" not in err
    assert main(["invariance", str(run), "--data", str(data), "--out", str(tmp_path), "--layers", "conv9",
                 "--quiet"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("zfnet invariance: error: unknown layer 'conv9'") and "\n" not in err
    with pytest.raises(SystemExit):
        main(["invariance", str(run), "--data", str(data), "--out", str(tmp_path), "--scales", "1,x"])
