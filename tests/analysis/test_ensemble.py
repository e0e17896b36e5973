"""Ensembles (Table 2): known answers from hand-set networks whose output ignores the image."""

from __future__ import annotations

import csv
import io
import json
import math

import pytest
import torch

from zfnet.analysis.ensemble import ensemble_study, run_architecture
from zfnet.cli import main
from zfnet.errors import ZFNetError
from zfnet.models import build
from zfnet.train.checkpoint import save_mean, save_weights

# Validation images per class, deliberately unequal so that each constant prediction has its own error.
VAL_COUNTS = {"bar": 2, "cross": 5, "disc": 3}
CLASSES = sorted(VAL_COUNTS)


@pytest.fixture
def data(tmp_path):
    from helpers.trees import make_tree

    root = make_tree(tmp_path / "data", classes=3, per_class=2, val_per_class=5, size=40)
    for name, keep in VAL_COUNTS.items():
        for extra in sorted((root / "val" / name).iterdir())[keep:]:
            extra.unlink()
    return root


def constant_run(root, model: str, fc8_bias: list[float], **options):
    """A run directory whose network outputs ``fc8_bias`` as logits for every image (fc8's weights are 0)."""
    net = build(model, num_classes=len(fc8_bias), **options).eval()
    with torch.no_grad():
        net.fc8.weight.zero_()
        net.fc8.bias.copy_(torch.tensor(fc8_bias))
    root.mkdir(parents=True)
    size = round(net.config.input_size * 256 / 224)
    save_mean(root / "mean.safetensors", torch.full((3, size, size), 100.0))
    (root / "classes.json").write_text(json.dumps({"classes": CLASSES, "names": CLASSES}))
    save_weights(root / "best.safetensors", net, {"model": model, "num_classes": len(fc8_bias),
                                                  "model_options": options, "epoch": 1})
    return root


def constant_error(label: int) -> float:
    """Top-1 error of always answering ``label``."""
    return 1.0 - VAL_COUNTS[CLASSES[label]] / sum(VAL_COUNTS.values())


def softmax(logits: list[float]) -> list[float]:
    e = [math.exp(v) for v in logits]
    return [v / sum(e) for v in e]


# Run a (zfnet-tiny) is sure of class 2; runs b and c (alexnet-tiny, zfnet-cpu at another input size)
# lean to class 0. Averaged softmax: class 0 (0.61 against 0.36); averaged logits would say class 2 and
# a vote would tie a with b, so the expected answers check that the softmax outputs are what is averaged.
LOGITS = {"a": [0.0, 0.0, 10.0], "b": [3.0, 0.0, 0.0], "c": [3.0, 0.0, 0.0]}


@pytest.fixture
def runs(tmp_path):
    return {
        "a": constant_run(tmp_path / "runs" / "a", "zfnet-tiny", LOGITS["a"]),
        "b": constant_run(tmp_path / "runs" / "b", "alexnet-tiny", LOGITS["b"]),
        "c": constant_run(tmp_path / "runs" / "c", "zfnet-cpu", LOGITS["c"]),
        "a2": constant_run(tmp_path / "runs" / "a2", "zfnet-tiny", [0.0, 4.0, 3.0]),
    }


def expected_ensemble_label(names: list[str], logits: dict[str, list[float]]) -> int:
    probs = [softmax(logits[n]) for n in names]
    mean = [sum(p[k] for p in probs) / len(probs) for k in range(3)]
    return max(range(3), key=mean.__getitem__)


def test_members_and_mixed_ensemble_have_known_errors(data, runs, tmp_path):
    names = ["a", "b", "c"]
    result = ensemble_study([runs[n] for n in names], data, tmp_path / "out", device="cpu", workers=0,
                            show_progress=False)
    singles = result.rows[:3]
    for row, n in zip(singles, names):
        label = max(range(3), key=LOGITS[n].__getitem__)
        assert row.top1_error == pytest.approx(constant_error(label), abs=1e-6), n
        assert row.top5_error == 0.0  # 3 classes: the top 5 always hold the label
        assert row.images == 10
    assert [r.architecture for r in singles] == ["zfnet-tiny", "alexnet-tiny", "zfnet-cpu"]
    combined = result.ensemble
    label = expected_ensemble_label(names, LOGITS)
    assert label == 0  # the averaged softmax, not the averaged logits (which would give 2)
    assert combined is not None and combined.top1_error == pytest.approx(constant_error(label), abs=1e-6)
    assert len(combined.members) == 3 and "combined" in combined.name
    assert len(result.rows) == 4  # one run per architecture: no per-architecture ensemble rows


def test_each_architecture_gets_its_own_ensemble(data, runs, tmp_path):
    # Two zfnet-tiny runs and one alexnet-tiny: the paper's "(a)" (the zfnet-tiny pair) and "(a) & (b)".
    logits = {**LOGITS, "a2": [0.0, 4.0, 3.0]}
    result = ensemble_study([runs["a"], runs["a2"], runs["b"]], data, None, device="cpu", workers=0,
                            show_progress=False)
    assert [len(r.members) for r in result.rows] == [1, 1, 1, 2, 3]
    pair, everything = result.rows[3], result.rows[4]
    assert pair.architecture == "zfnet-tiny" and pair.name.startswith("2 × zfnet-tiny")
    assert pair.top1_error == pytest.approx(constant_error(expected_ensemble_label(["a", "a2"], logits)), abs=1e-6)
    assert everything.top1_error == pytest.approx(
        constant_error(expected_ensemble_label(["a", "a2", "b"], logits)), abs=1e-6)
    assert result.files == {}  # out=None writes nothing


def test_files_and_report_block(data, runs, tmp_path):
    out = tmp_path / "out"
    result = ensemble_study([runs["a"], runs["b"]], data, out, device="cpu", workers=0, show_progress=False)
    saved = json.loads((out / "ensemble.json").read_text())
    assert saved["kind"] == "ensemble"
    report = saved["report"]
    assert set(report) == {"title", "summary", "figures", "tables"}
    assert report["summary"].count(". ") >= 1 and report["figures"] == []
    measured, paper = report["tables"]
    assert len(measured["rows"]) == 3 and all(len(r) == len(measured["columns"]) for r in measured["rows"])
    assert ["6 convnets, (a) & (b) combined", 36.0, 14.7, 14.8] in paper["rows"]
    rows = list(csv.DictReader(io.StringIO((out / "ensemble.csv").read_text())))
    assert [float(r["top-1 err %"]) for r in rows] == pytest.approx([100 * r.top1_error for r in result.rows],
                                                                   abs=0.01)
    assert "| 1 ZFNet (Fig. 3) | 38.4 | 16.5 | — |" in (out / "ensemble.md").read_text()


def test_run_architecture_names_model_and_options(tmp_path):
    run = constant_run(tmp_path / "wide", "zfnet-tiny", [0.0, 1.0, 2.0], conv345=(8, 16, 8))
    assert run_architecture(run) == "zfnet-tiny (conv345=8/16/8)"
    assert run_architecture(run / "best.safetensors") == "zfnet-tiny (conv345=8/16/8)"


def test_refusals(data, runs, tmp_path):
    with pytest.raises(ZFNetError, match="no run"):
        ensemble_study([], data)
    with pytest.raises(ZFNetError, match=r"runs/a is named twice"):
        ensemble_study([runs["a"], runs["a"]], data)
    with pytest.raises(ZFNetError, match="does not exist"):
        ensemble_study([tmp_path / "absent", runs["a"]], data)


def test_cli_prints_the_table_and_writes_files(data, runs, tmp_path, capsys):
    out = tmp_path / "cli"
    status = main(["experiment", "ensemble", str(runs["a"]), str(runs["b"]), "--data", str(data), "--out", str(out),
                   "--device", "cpu", "--workers", "0", "--quiet"])
    printed = capsys.readouterr().out
    assert status == 0
    assert "combined" in printed and str(out / "ensemble.json") in printed
    assert json.loads((out / "ensemble.json").read_text())["kind"] == "ensemble"


def test_cli_bad_input_is_one_line_and_status_2(data, runs, tmp_path, capsys):
    status = main(["experiment", "ensemble", str(runs["a"]), str(tmp_path / "nope"), "--data", str(data),
                   "--out", str(tmp_path / "o"), "--quiet"])
    err = capsys.readouterr().err
    assert status == 2
    assert err.count("\n") == 1 and "nope" in err
