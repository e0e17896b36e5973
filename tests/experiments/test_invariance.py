"""``zfnet invariance``: its curves on a tiny run over the synthetic data set, its config and command line."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from helpers.nets import VGGStyle
from helpers.runs import default_init_, synthetic_run
from PIL import Image

from zfnet.cli import main
from zfnet.errors import ZFNetError
from zfnet.experiments.invariance import Config, Result, run
from zfnet.train.run import LoadedRun, load_run

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def synth_run(tmp_path_factory):
    """Synthetic data (4 classes, faces among them, 64 px) and a zfnet-tiny run directory written directly."""
    return synthetic_run(tmp_path_factory.mktemp("invariance"), classes=4, val_per_class=4)


def invariance_job(run_dir: Path, data: Path, out: Path, **options) -> Result:
    """The invariance experiment on a run directory, as the command line runs it."""
    return run(Config(run=str(run_dir), data=str(data), **options), out, show_progress=False)


def _check_report(record: dict, out: Path) -> None:
    assert record["kind"] == "invariance"
    assert json.loads((out / "invariance.json").read_text()) == record
    report = record["report"]
    assert report["title"] and report["summary"].count(".") >= 2
    for fig in report["figures"]:
        img = Image.open(out / fig["path"])
        img.load()
        assert img.format == "PNG" and img.width >= 600 and img.height >= 300 and fig["caption"]
    for table in report["tables"]:
        assert table["rows"] and all(len(r) == len(table["columns"]) for r in table["rows"])


def test_invariance_job(synth_run, tmp_path):
    data, run_dir = synth_run
    steps = {"translation": [-8, 0, 8], "scale": [1.0, 1.5], "rotation": [0, 90, 360]}
    record = invariance_job(run_dir, data, tmp_path, images=3, shifts=(-8, 0, 8), scales=(1.0, 1.5),
                            angles=(0, 90, 360)).numbers
    _check_report(record, tmp_path)
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
    data, run_dir = synth_run
    with pytest.raises(ZFNetError, match=r"invariance option transforms .*one of translation, scale, rotation"):
        invariance_job(run_dir, data, tmp_path, transforms=("shear",))
    with pytest.raises(ZFNetError, match="invariance option images must be a whole number from 1"):
        invariance_job(run_dir, data, tmp_path, images=0)
    with pytest.raises(ZFNetError, match="unknown layer 'conv9'"):
        invariance_job(run_dir, data, tmp_path, layers=("conv9",), transforms=("scale",), scales=(1.0, 1.2))


def test_a_model_defined_outside_zfnet(synth_run, tmp_path):
    data, run_dir = synth_run
    zf = load_run(run_dir)
    outside = LoadedRun(root=tmp_path, model=default_init_(VGGStyle(num_classes=4)), mean=zf.mean,
                        classes=zf.classes, class_names=zf.class_names, metadata={"model": "vgg-style"})
    with pytest.raises(ZFNetError, match="VGGStyle has no config.input_size; give input_size"):
        run(Config(data=str(data)), tmp_path, loaded=outside, show_progress=False)
    inv = run(Config(data=str(data), layers=("features.0", "classifier.4"), images=2, input_size=64,
                     shifts=(0, 4), scales=(1.0, 1.2), angles=(0, 45)), tmp_path, loaded=outside, show_progress=False)
    assert inv["transforms"]["scale"]["distance"]["features.0"][0][0] == 0.0
    assert all(m._forward_hooks == {} for m in outside.model.modules())
    # Without --layers: its first convolutional stage and the layer before its classifier.
    inv = run(Config(data=str(data), images=2, input_size=64, transforms=("scale",), scales=(1.0, 1.2)),
              tmp_path / "d", loaded=outside, show_progress=False)
    assert inv["layers"] == ["features.0", "classifier.5"]


def test_config_checks_every_value_and_names_the_field():
    with pytest.raises(ZFNetError, match="invariance option scales must be"):
        Config(data="d", scales=(0.0, 1.0))  # a factor of 0 is no image
    with pytest.raises(ZFNetError, match="invariance option angles must be"):
        Config(data="d", angles=(1e9,))
    with pytest.raises(ZFNetError, match="transforms is empty"):
        Config(data="d", transforms=())
    assert Config(data="d", shifts=(-4, 4)).steps() == {"translation": (-4.0, 4.0)}


def test_the_resolved_config_is_written_beside_the_results(synth_run, tmp_path):
    data, run_dir = synth_run
    invariance_job(run_dir, data, tmp_path, images=2, transforms=("rotation",), angles=(0, 90))
    saved = json.loads((tmp_path / "invariance.config.json").read_text())
    assert saved["experiment"] == "invariance"
    assert saved["resolved"] == {"layers": ["conv1", "fc7"], "input_size": 64, "steps": {"rotation": [0.0, 90.0]}}
    assert Config.from_mapping(saved["config"]) == Config(run=str(run_dir), data=str(data), images=2,
                                                          transforms=("rotation",), angles=(0, 90))
    assert {p.name for p in tmp_path.iterdir()} >= {"invariance.json", "invariance.md", "invariance.csv",
                                                    "invariance.png"}


def test_cli_flags_come_from_the_config(synth_run, tmp_path, capsys, monkeypatch):
    data, run_dir = synth_run
    monkeypatch.setenv("COLUMNS", "1000")
    with pytest.raises(SystemExit):
        main(["invariance", "--help"])
    text = capsys.readouterr().out
    for flag in ("--layers", "--images", "--split", "--transforms", "--shifts", "--scales", "--angles", "--seed",
                 "--data", "--config", "--model", "--device"):
        assert flag in text, flag
    options = tmp_path / "options.json"
    options.write_text(json.dumps({"transforms": ["scale"], "scales": [1.0, 1.3], "images": 3}))
    out = tmp_path / "o"
    assert main(["invariance", str(run_dir), "--data", str(data), "--out", str(out), "--config", str(options),
                 "--images", "2", "--quiet"]) == 0
    record = json.loads((out / "invariance.json").read_text())
    assert list(record["transforms"]) == ["scale"] and record["transforms"]["scale"]["steps"] == [1.0, 1.3]
    assert len(record["images"]) == 2  # the flag wins over the file


def test_cli_invariance_beside_correspondence(synth_run, tmp_path, capsys):
    data, run_dir = synth_run
    out = tmp_path / "out"
    assert main(["correspondence", str(run_dir), "--data", str(data), "--out", str(out), "--images", "3",
                 "--trials", "1", "--quiet"]) == 0
    capsys.readouterr()
    assert main(["invariance", str(run_dir), "--data", str(data), "--out", str(out), "--images", "2",
                 "--shifts=-4,0,4", "--scales", "1,1.4", "--angles", "0,180", "--quiet"]) == 0
    printed = capsys.readouterr().out
    assert f"results in {out}" in printed and "rotation" in printed
    record = json.loads((out / "invariance.json").read_text())
    assert record["transforms"]["translation"]["steps"] == [-4.0, 0.0, 4.0]
    assert (out / "correspondence.json").is_file()  # both analyses share one folder


def test_cli_errors_are_one_line(synth_run, tmp_path, capsys):
    data, run_dir = synth_run
    assert main(["invariance", str(run_dir), "--data", str(data), "--out", str(tmp_path), "--layers", "conv9",
                 "--quiet"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("zfnet invariance: error: unknown layer 'conv9'") and "\n" not in err
    with pytest.raises(SystemExit):
        main(["invariance", str(run_dir), "--data", str(data), "--out", str(tmp_path), "--scales", "1,x"])
