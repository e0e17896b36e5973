"""Ensembles (Table 2): known answers from hand-set networks whose output ignores the image; each run
evaluated once; the finding tested image by image; the Config and the CLI."""

from __future__ import annotations

import csv
import io
import json
import math

import pytest
import torch

from zfnet.cli import main
from zfnet.errors import ZFNetError
from zfnet.experiments.ensemble import Config, run, run_architecture
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


def ensemble_study(runs, data, out=None, **options):
    """The ensemble experiment on CPU without progress bars, as the command line runs it."""
    config = Config(runs=tuple(str(r) for r in runs), data=str(data), device="cpu", workers=0, **options)
    return run(config, out, show_progress=False)


def expected_ensemble_label(names: list[str], logits: dict[str, list[float]]) -> int:
    probs = [softmax(logits[n]) for n in names]
    mean = [sum(p[k] for p in probs) / len(probs) for k in range(3)]
    return max(range(3), key=mean.__getitem__)


def test_each_run_is_evaluated_once(data, runs, monkeypatch):
    # Two zfnet-tiny runs and one alexnet-tiny: three rows alone, the pair's ensemble and all three's, all
    # from three passes over the images.
    from zfnet.train import evaluate

    passes = []
    real = evaluate._predict  # the one pass of every prediction

    def counted(*args, **kwargs):
        passes.append(kwargs.get("desc"))
        return real(*args, **kwargs)

    monkeypatch.setattr(evaluate, "_predict", counted)
    result = ensemble_study([runs["a"], runs["a2"], runs["b"]], data)
    assert len(result.rows) == 5
    assert sorted(passes) == ["evaluating a", "evaluating a2", "evaluating b"]


def test_members_and_mixed_ensemble_have_known_errors(data, runs, tmp_path):
    names = ["a", "b", "c"]
    result = ensemble_study([runs[n] for n in names], data, tmp_path / "out")
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
    result = ensemble_study([runs["a"], runs["a2"], runs["b"]], data, None)
    assert [len(r.members) for r in result.rows] == [1, 1, 1, 2, 3]
    pair, everything = result.rows[3], result.rows[4]
    assert pair.architecture == "zfnet-tiny" and pair.name.startswith("2 × zfnet-tiny")
    assert pair.top1_error == pytest.approx(constant_error(expected_ensemble_label(["a", "a2"], logits)), abs=1e-6)
    assert everything.top1_error == pytest.approx(
        constant_error(expected_ensemble_label(["a", "a2", "b"], logits)), abs=1e-6)
    assert result.files == {}  # out=None writes nothing


def test_files_and_report_block(data, runs, tmp_path):
    out = tmp_path / "out"
    result = ensemble_study([runs["a"], runs["b"]], data, out)
    saved = json.loads((out / "ensemble.json").read_text())
    assert saved["kind"] == "ensemble"
    report = saved["report"]
    assert set(report) <= {"title", "summary", "figures", "tables"}
    assert report["summary"].count(". ") >= 1 and report.get("figures", []) == []
    measured, paper = report["tables"]
    assert len(measured["rows"]) == 3 and all(len(r) == len(measured["columns"]) for r in measured["rows"])
    assert ["6 convnets, (a) & (b) combined", 36.0, 14.7, 14.8] in paper["rows"]
    measured_csv = (out / "ensemble.csv").read_text().split("\n\n")[0].split("\n", 1)[1]  # below its caption
    rows = list(csv.DictReader(io.StringIO(measured_csv)))
    assert [float(r["top-1 err %"]) for r in rows] == pytest.approx([100 * r.top1_error for r in result.rows],
                                                                   abs=0.01)
    assert "| 1 ZFNet (Fig. 3) | 38.4 | 16.5 | — |" in (out / "ensemble.md").read_text()
    written = json.loads((out / "ensemble.config.json").read_text())
    assert written["experiment"] == "ensemble" and written["config"]["runs"] == [str(runs["a"]), str(runs["b"])]
    assert result.files["config"] == out / "ensemble.config.json"


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
    assert "combined" in printed and f"results in {out}" in printed
    assert json.loads((out / "ensemble.json").read_text())["kind"] == "ensemble"


def test_cli_bad_input_is_one_line_and_status_2(data, runs, tmp_path, capsys):
    status = main(["experiment", "ensemble", str(runs["a"]), str(tmp_path / "nope"), "--data", str(data),
                   "--out", str(tmp_path / "o"), "--quiet"])
    err = capsys.readouterr().err
    assert status == 2
    assert err.count("\n") == 1 and "nope" in err


def test_the_finding_is_tested_image_by_image(data, runs, tmp_path):
    # a alone answers class 2 (disc: right on 3 of 10 images); the ensemble of a, b and c answers class 0 (bar:
    # right on 2). They differ on 5 images, 3 against the ensemble: no evidence either way.
    result = ensemble_study([runs["a"], runs["b"], runs["c"]], data)
    finding = result["finding"]
    assert finding["verdict"].startswith("no evidence either way") and finding["images_differing"] == 5
    assert finding["difference"] == pytest.approx(10.0)  # points: 80% against 70% top-1 error
    assert result["report"]["summary"].endswith(f"Image by image: {finding['verdict']}.")
    single = ensemble_study([runs["a"]], data)
    assert single["finding"] is None and single.ensemble is None
    assert single["report"]["summary"].endswith("An ensemble needs at least two runs.")


def test_compare_errors_counts_only_the_images_answered_differently():
    from zfnet.experiments.ensemble import compare_errors
    from zfnet.train.evaluate import Predictions

    def outputs(wrong: list[bool], order=None) -> Predictions:
        n = len(wrong)
        probs = torch.tensor([[0.9, 0.1] if w else [0.1, 0.9] for w in wrong])
        index = torch.arange(n) if order is None else torch.tensor(order)
        return Predictions("r", probs, torch.ones(n, dtype=torch.long), index)

    ensemble = outputs([True] + [False] * 9)
    best = outputs([True] * 7 + [False] * 3)
    c = compare_errors(ensemble, best)
    assert c.difference == pytest.approx(-60.0) and c.sizes == (6,)  # 10% against 70%, 6 images differ
    assert c.p_value == pytest.approx(1 / 64) and c.verdict().endswith("holds")  # all 6 the ensemble's way
    # The same images in another order, less one the other model could not read: aligned by index (aligned
    # by position, 7 would differ).
    shuffled = outputs([False] * 3 + [True] * 6, order=[9 - i for i in range(9)])  # best's, reversed, less image 0
    assert compare_errors(ensemble, shuffled).sizes == (6,)
    assert compare_errors(best, best) is None


@pytest.mark.parametrize(("options", "field"), [
    ({"weights": "worst"}, "weights"), ({"layout": "caltech101"}, "layout"), ({"batch_size": 0}, "batch_size"),
    ({"workers": 1000}, "workers"), ({"device": "tpu"}, "device"),
])
def test_bad_options_name_their_field(options, field):
    with pytest.raises(ZFNetError, match=field):
        Config(runs=("r",), data="d", **options)


def test_config_needs_runs_and_data():
    with pytest.raises(ZFNetError, match="runs, data missing"):
        Config.from_mapping({})
    assert Config(runs=("r",), data="d", weights="epoch-12").weights == "epoch-12"


def test_cli_config_file_and_default_out(data, runs, tmp_path, capsys, monkeypatch):
    options = tmp_path / "ensemble.toml"
    options.write_text(f'data = "{data}"\ndevice = "cpu"\nworkers = 0\nten-crop = true\n')
    monkeypatch.chdir(tmp_path)
    status = main(["experiment", "ensemble", str(runs["a"]), str(runs["b"]), "--config", str(options), "--quiet"])
    assert status == 0, capsys.readouterr().err
    saved = json.loads((tmp_path / "zfnet-ensemble" / "ensemble.json").read_text())  # --out's default
    assert saved["ten_crop"] is True and len(saved["results"]) == 3
    written = json.loads((tmp_path / "zfnet-ensemble" / "ensemble.config.json").read_text())["config"]
    assert written["runs"] == [str(runs["a"]), str(runs["b"])] and written["data"] == str(data)


def test_cli_bad_flag_value_names_the_flag(data, runs, tmp_path, capsys):
    from helpers.cli import one_line_error

    one_line_error(capsys, ["experiment", "ensemble", str(runs["a"]), "--data", str(data), "--out",
                            str(tmp_path / "o"), "--batch-size", "0"], "--batch-size")
