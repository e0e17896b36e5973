"""``zfnet experiment probes``: accuracy rises with depth on the test shapes, the files, resumption, the Config."""

from __future__ import annotations

import json

import pytest
from helpers.cli import one_line_error

import zfnet.analysis.probes as probes_module
from zfnet.cli import main
from zfnet.errors import ZFNetError
from zfnet.experiments.probes import Config, over_splits, run


def probes_job(run_dir, data, out, **options):
    """The probes on a run directory, as the command line runs them (one process, CPU)."""
    options = {"workers": 0, "device": "cpu", **options}
    return run(Config(run=str(run_dir), data=str(data), **options), out, show_progress=False)


@pytest.mark.slow
def test_miniature_probes_rise_with_depth(pretrained_run, secondary_data, tmp_path):
    result = probes_job(pretrained_run, secondary_data, tmp_path / "out", per_class=30, splits=3).numbers
    for kind in ("svm", "softmax"):
        acc = {n: result["results"][kind][n]["mean"] for n in result["layers"]}
        # Overall rise. Measured (docs/transfer.md): rank correlation with depth 1.0 (SVM) and 0.89
        # (softmax); conv1 0.53 / 0.58, best of conv5-fc7 0.78 / 0.79. Margins about half of those.
        assert result["depth_trend"][kind] >= 0.5, acc
        assert max(acc["conv5"], acc["fc6"], acc["fc7"]) >= acc["conv1"] + 0.12, acc
    files = {p.name for p in (tmp_path / "out").iterdir()}
    assert {"probes.json", "probes.md", "probes.csv", "probes.png", "features", "probes.partial.json",
            "probes.config.json"} <= files
    report = json.loads((tmp_path / "out" / "probes.json").read_text())["report"]
    assert report["figures"][0]["path"] == "probes.png" and len(report["tables"][0]["rows"]) == 14


def test_cli_probes(quick_run, secondary_data, tmp_path, capsys):
    out = tmp_path / "cli"
    status = main(["experiment", "probes", str(quick_run), "--data", str(secondary_data), "--out", str(out),
                   "--per-class", "10", "--splits", "2", "--layers", "conv2,fc7", "--classifiers", "softmax",
                   "--workers", "0", "--device", "cpu", "--quiet"])
    assert status == 0
    result = json.loads((out / "probes.json").read_text())
    assert result["kind"] == "probes" and result["layers"] == ["conv2", "fc7"]
    assert len(result["results"]["softmax"]["fc7"]["per_split"]) == 2
    assert f"results in {out}" in capsys.readouterr().out
    assert main(["experiment", "probes", str(quick_run), "--data", str(secondary_data), "--out", str(out),
                 "--layers", "conv9", "--quiet", "--workers", "0"]) == 2
    assert main(["experiment", "probes", str(quick_run), "--data", str(secondary_data), "--out", str(out),
                 "--per-class", "60", "--quiet", "--workers", "0"]) == 2  # 50 images per class: too few
    assert "has 50 images" in capsys.readouterr().err


def test_probe_fits_are_resumed(quick_run, secondary_data, tmp_path, monkeypatch):
    kwargs = dict(per_class=10, splits=2, layers=("conv1", "fc6"))
    first = probes_job(quick_run, secondary_data, tmp_path, **kwargs).numbers

    def refuse(*args, **kw):
        raise AssertionError("a finished fit was redone")

    monkeypatch.setattr(probes_module, "fit_and_score", refuse)
    again = probes_job(quick_run, secondary_data, tmp_path, **kwargs).numbers
    assert again["results"] == first["results"]



def test_config_checks_every_option_by_name():
    for bad, name in ((dict(layout="voc2012"), "layout"), (dict(classifiers=("knn",)), "classifiers"),
                      (dict(grid=0), "grid"), (dict(pool="median"), "pool"), (dict(per_class=0), "per_class"),
                      (dict(l2=-1.0), "l2")):
        with pytest.raises(ZFNetError, match=f"probes option {name} "):
            Config(data="d", **bad)
    assert Config(data="d", l2="1e-3").l2 == 1e-3 and Config(data="d").classifiers == ("svm", "softmax")


def test_flags_config_file_and_the_written_config(quick_run, secondary_data, tmp_path, capsys):
    options = tmp_path / "probes.json"
    options.write_text(json.dumps({"per_class": 10, "splits": 1, "layers": ["conv1", "fc7"],
                                   "classifiers": ["softmax"], "workers": 0, "device": "cpu"}))
    out = tmp_path / "out"
    assert main(["experiment", "probes", str(quick_run), "--data", str(secondary_data), "--out", str(out),
                 "--config", str(options), "--grid", "2", "--quiet"]) == 0
    result = json.loads((out / "probes.json").read_text())
    assert result["layers"] == ["conv1", "fc7"] and result["classifiers"] == ["softmax"] and result["grid"] == 2
    saved = json.loads((out / "probes.config.json").read_text())
    assert saved["experiment"] == "probes" and saved["config"]["grid"] == 2 and saved["config"]["per_class"] == 10
    one_line_error(capsys, ["experiment", "probes", str(quick_run), "--data", str(secondary_data), "--out",
                            str(tmp_path / "o"), "--classifiers", "svm,knn"], "--classifiers")


def test_over_splits():
    assert over_splits([0.5]) == {"mean": 0.5, "std": 0.0, "per_split": [0.5]}
    assert over_splits([0.2, 0.4])["std"] == pytest.approx(0.1414213562373095)
