"""Ablations (Table 3): variant definitions and labels, the study's run/resume/skip logic, one evaluation per
variant, its tables and summary, its Config and the CLI."""

from __future__ import annotations

import csv
import inspect
import io
import json
import shutil

import pytest
import torch

from zfnet.cli import main
from zfnet.errors import ZFNetError
from zfnet.experiments import ablation
from zfnet.experiments.ablation import PAPER_VARIANTS, Config, parse_variant, run
from zfnet.models import build


def n_params(model) -> int:
    return sum(p.numel() for p in model.parameters())


# ---------------------------------------------------------------------------------------------- variants
def test_full_size_variants_are_the_papers():
    assert parse_variant("base", "zfnet").parameters == 62_357_608  # the paper's count at 1000 classes
    assert parse_variant("fc-half", "zfnet").options == {"fc": [2048, 2048]}
    assert parse_variant("fc-double", "alexnet").options == {"fc": [8192, 8192]}
    assert parse_variant("conv-wide", "zfnet").options == {"conv345": [512, 1024, 512]}
    v = parse_variant("conv-wide+fc-double", "zfnet")
    assert v.name == "fc-double+conv-wide"  # atoms in canonical order, whatever order they were given in
    assert v.options == {"fc": [8192, 8192], "conv345": [512, 1024, 512]}
    v = parse_variant("no-fc6-7+no-conv3-4", "zfnet")
    assert v.options == {"removed": ["conv3", "conv4", "fc6", "fc7"]}
    assert v.architecture == "conv 96 256 - - 256 · fc - -"


def test_cpu_size_variants_scale_with_the_base():
    # zfnet-tiny: conv3-5 48/48/32, fc6-7 128: x0.5 and x2 for fc, x(512/384, 1024/384, 512/256) for conv.
    assert parse_variant("fc-half", "zfnet-tiny").options == {"fc": [64, 64]}
    assert parse_variant("fc-double", "zfnet-cpu").options == {"fc": [1024, 1024]}
    assert parse_variant("conv-wide", "zfnet-tiny").options == {"conv345": [64, 128, 64]}
    assert parse_variant("conv-wide", "alexnet-cpu").options == {"conv345": [128, 256, 128]}


def test_labels_say_the_variants_own_widths():
    # At full size the paper's words; on a CPU-size model its own widths, the paper's beside them.
    assert parse_variant("fc-half", "zfnet").label == "adjust layers 6, 7: 2048 units"
    assert parse_variant("conv-wide", "zfnet").label == "adjust layers 3, 4, 5: 512, 1024, 512 maps"
    assert parse_variant("fc-half", "zfnet-tiny").label == (
        "adjust layers 6, 7: 64 units (the paper's 2048 at full size)")
    assert parse_variant("fc-double+conv-wide", "zfnet-tiny").label == (
        "adjust layers 6, 7: 256 units (the paper's 8192 at full size); "
        "adjust layers 3, 4, 5: 64, 128, 64 maps (the paper's 512, 1024, 512 at full size)")
    assert parse_variant("no-conv3-4+no-fc6-7", "zfnet-tiny").label == "removed layers 3, 4, 6, 7"


@pytest.mark.parametrize("spec", PAPER_VARIANTS)
def test_variant_parameters_match_the_built_model(spec):
    v = parse_variant(spec, "zfnet-tiny", num_classes=7)
    model = build("zfnet-tiny", num_classes=7, **v.options)
    assert v.parameters == n_params(model)
    removed = v.options.get("removed", [])
    assert [n for n in ("conv3", "conv4", "fc6", "fc7") if not hasattr(model, n)] == removed


@pytest.mark.parametrize(("spec", "message"), [
    ("fc-triple", r"unknown ablation variant 'fc-triple'.*valid: base, no-conv3-4"),
    ("no-fc7+bogus", r"unknown ablation variant 'bogus' in 'no-fc7\+bogus'"),
    ("no-fc7+no-fc7", "names an atom twice"),
    ("no-fc7+no-fc6-7", "removes fc7 twice"),
    ("fc-half+fc-double", "sets the width of fc6 and fc7 twice"),
    ("fc-double+no-fc6-7", "changes the width of fc6 and fc7, which it removes"),
    ("base+no-fc7", "'base' is the unchanged network and combines with nothing"),
])
def test_bad_variants_are_refused(spec, message):
    with pytest.raises(ZFNetError, match=message):
        parse_variant(spec, "zfnet-tiny")


# ---------------------------------------------------------------------------------------------- the study
SETTINGS = dict(base="zfnet-tiny", epochs=1, batch_size=8, seed=0, workers=0, device="cpu")


def study_run(data, out, **options):
    """The ablation study with the small settings, as the command line runs it."""
    return run(Config(data=str(data), **{**SETTINGS, **options}), out, show_progress=False)


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    """A finished one-epoch study of two variants on a tiny tree (about 2 s of training)."""
    from helpers.trees import make_tree

    root = tmp_path_factory.mktemp("ablation")
    data = make_tree(root / "data", classes=3, per_class=8, val_per_class=4)
    result = study_run(data, root / "out", variants=("no-fc7", "base"))
    return data, root / "out", result


def test_study_writes_runs_and_tables(study):
    data, out, result = study
    assert [r.variant for r in result.rows] == ["no-fc7", "base"]  # in the order asked for
    assert sorted(p.name for p in (out / "runs").iterdir()) == ["base", "no-fc7"]
    for r in result.rows:
        metrics = [json.loads(line) for line in (out / "runs" / r.variant / "metrics.jsonl").read_text().splitlines()]
        # The last epoch's weights evaluated afresh give the error the training loop measured at that epoch.
        assert r.val_top1_error == pytest.approx(metrics[-1]["val_top1_error"], abs=1e-6)
        # The training error is the one training measured over the evaluated (last) epoch.
        assert r.train_top1_error == metrics[-1]["train_top1_error"]
        assert r.epochs == 1 and 0.0 <= r.train_top1_error <= 1.0
        assert r.val_top5_error == 0.0  # 3 classes
    base, no_fc7 = result.row("base"), result.row("no-fc7")
    assert (base.paper_model, base.paper) == ("ZFNet", (33.1, 38.4, 16.5))
    assert (no_fc7.paper_model, no_fc7.paper) == ("Krizhevsky et al. (replication)", (27.4, 40.0, 18.4))
    saved = json.loads((out / "ablation.json").read_text())
    assert saved["kind"] == "ablation" and saved["base"] == "zfnet-tiny"
    assert saved["finding"] is None  # the study has neither of the depth finding's rows
    report = saved["report"]
    assert set(report) <= {"title", "summary", "figures", "tables"} and report.get("figures", []) == []
    table = report["tables"][0]
    assert [row[0] for row in table["rows"]] == ["no-fc7", "base"]
    assert all(len(row) == len(table["columns"]) for row in table["rows"])
    rows = list(csv.DictReader(io.StringIO((out / "ablation.csv").read_text().split("\n", 1)[1])))
    assert [float(r["val top-1 err %"]) for r in rows] == pytest.approx(
        [100 * r.val_top1_error for r in result.rows], abs=0.01)
    assert float(rows[0]["paper val top-1 %"]) == 40.0
    md = (out / "ablation.md").read_text()
    assert md.count("\n| ") == 3 and "| base | zfnet-tiny as it is |" in md
    written = json.loads((out / "ablation.config.json").read_text())
    assert written["experiment"] == "ablation" and written["config"]["variants"] == ["no-fc7", "base"]
    assert Config.from_mapping(written["config"]) == Config(data=str(data), variants=("no-fc7", "base"), **SETTINGS)


def test_each_variant_is_evaluated_once(study, tmp_path, monkeypatch):
    # One pass over the validation set per variant, none over the training set: the training error comes
    # from what training returned.
    from zfnet.train import evaluate

    data, out, _ = study
    copy = tmp_path / "out"
    shutil.copytree(out, copy)
    passes = []
    real = evaluate._predict  # the one prediction pass every evaluation goes through

    def counted(model, stream, *args, **kwargs):
        passes.append((kwargs.get("desc"), stream.dataset.samples[0][0].parent.parent.name))  # DATA/split/class/x
        return real(model, stream, *args, **kwargs)

    monkeypatch.setattr(evaluate, "_predict", counted)
    again = study_run(data, copy, variants=("base", "no-fc7", "no-fc6-7"), epochs=2)
    # (the training's own per-epoch validation passes, "validating", are training's, not the study's)
    assert sorted(p for p in passes if p[0] != "validating") == [
        ("evaluating base", "val"), ("evaluating no-fc6-7", "val"), ("evaluating no-fc7", "val")]
    assert all(r.epochs == 2 for r in again.rows)


def test_rerun_skips_finished_runs(study, monkeypatch):
    data, out, result = study

    def no_training(*args, **kwargs):
        raise AssertionError("a finished run was trained again")

    monkeypatch.setattr(ablation, "train", no_training)
    again = study_run(data, out, variants=("base", "no-fc7"))
    assert again.row("base").val_top1_error == result.row("base").val_top1_error
    assert again.row("base").train_top1_error == result.row("base").train_top1_error  # read from the run


def test_interrupted_study_resumes_and_checks_its_settings(study, tmp_path):
    data, out, _ = study
    copy = tmp_path / "out"
    shutil.copytree(out, copy)
    # Asking for 2 epochs continues each run from its first epoch.
    resumed = study_run(data, copy, variants=("base",), epochs=2)
    lines = (copy / "runs" / "base" / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(line)["epoch"] for line in lines] == [1, 2] and resumed.row("base").epochs == 2
    with pytest.raises(ZFNetError, match="has trained 2 epochs, more than the 1 asked for"):
        study_run(data, copy, variants=("base",))
    with pytest.raises(ZFNetError, match=r"trained with lr=0.01, not 0.05"):
        study_run(data, copy, variants=("base",), epochs=2, lr=0.05)


def test_refusals_before_any_training(study, tmp_path, monkeypatch):
    data, _, _ = study
    monkeypatch.setattr(ablation, "train", lambda *a, **k: pytest.fail("trained despite bad input"))
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("mine")
    with pytest.raises(ZFNetError, match="not empty and holds no ablation study"):
        study_run(data, foreign, variants=("base",))
    with pytest.raises(ZFNetError, match="unknown ablation variant 'wide'"):
        study_run(data, tmp_path / "new", variants=("base", "wide"))
    assert not (tmp_path / "new").exists()


# ---------------------------------------------------------------------------------------------- Config
@pytest.mark.parametrize(("options", "field"), [
    ({"lr": 0.0}, "lr"), ({"lr_patience": -1}, "lr_patience"), ({"epochs": 0}, "epochs"),
    ({"weights": "epoch-1"}, "weights"), ({"base": "vgg16"}, "base"), ({"workers": -1}, "workers"),
    ({"device": "tpu"}, "device"), ({"batch_size": 0}, "batch_size"),
])
def test_bad_options_name_their_field(options, field):
    with pytest.raises(ZFNetError, match=field):
        Config(data="d", **options)


def test_config_refuses_no_variant_and_unknown_options():
    with pytest.raises(ZFNetError, match="no ablation variant"):
        Config(data="d", variants=())
    with pytest.raises(ZFNetError, match="unknown ablation option.*lr_patienc.*valid: .*lr_patience"):
        Config.from_mapping({"data": "d", "lr_patienc": 1})
    with pytest.raises(ZFNetError, match="data missing"):
        Config.from_mapping({})


def test_config_defaults_are_the_recipes():
    from zfnet.train import TrainConfig

    recipe, config = TrainConfig(data="", out=""), Config(data="d")
    assert (config.epochs, config.batch_size, config.lr, config.lr_patience) == (
        recipe.epochs, recipe.batch_size, recipe.lr, recipe.lr_patience)
    assert config.variants == PAPER_VARIANTS and config.weights == "last" and config.ten_crop is False


# ---------------------------------------------------------------------------------------------- CLI
def test_cli_runs_a_study(study, tmp_path, capsys):
    data, out, _ = study
    copy = tmp_path / "out"
    shutil.copytree(out, copy)
    status = main(["experiment", "ablation", "--data", str(data), "--out", str(copy), "--base", "zfnet-tiny",
                   "--variants", "base,no-fc7", "--epochs", "1", "--batch-size", "8", "--workers", "0",
                   "--device", "cpu", "--quiet"])
    printed = capsys.readouterr().out
    assert status == 0
    assert "no-fc7" in printed and f"results in {copy}" in printed and f"runs in {copy / 'runs'}" in printed
    assert (copy / "ablation.config.json").is_file()


def test_cli_reads_a_config_file_and_flags_override_it(study, tmp_path, capsys):
    data, out, _ = study
    copy = tmp_path / "out"
    shutil.copytree(out, copy)
    options = tmp_path / "ablation.toml"
    options.write_text(f'data = "{data}"\nbase = "zfnet-tiny"\nvariants = ["base"]\nepochs = 1\nbatch-size = 8\n'
                       'workers = 0\ndevice = "cpu"\nlr = 0.5\n')
    status = main(["experiment", "ablation", "--config", str(options), "--lr", "0.01", "--out", str(copy),
                   "--quiet"])
    assert status == 0, capsys.readouterr().err
    written = json.loads((copy / "ablation.config.json").read_text())["config"]
    assert written["variants"] == ["base"] and written["lr"] == 0.01 and written["batch_size"] == 8


def test_cli_bad_variant_is_one_line_and_status_2(tmp_path, capsys):
    from helpers.trees import make_tree

    data = make_tree(tmp_path / "data", classes=2, per_class=1, val_per_class=1)
    status = main(["experiment", "ablation", "--data", str(data), "--out", str(tmp_path / "o"),
                   "--base", "zfnet-tiny", "--variants", "base,no-fc8", "--epochs", "1", "--quiet"])
    err = capsys.readouterr().err
    assert status == 2
    assert err.count("\n") == 1 and "'no-fc8'" in err
    assert not (tmp_path / "o").exists()


def test_cli_bad_flag_value_names_the_flag(tmp_path, capsys):
    from helpers.cli import one_line_error

    one_line_error(capsys, ["experiment", "ablation", "--data", str(tmp_path), "--out", str(tmp_path / "o"),
                            "--lr-patience", "-1"], "--lr-patience")


def test_cli_unknown_base_is_refused(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["experiment", "ablation", "--data", str(tmp_path), "--out", str(tmp_path / "o"), "--base", "vgg16"])
    assert exit_info.value.code == 2
    assert "vgg16" in capsys.readouterr().err


# ---------------------------------------------------------------------------------------------- summary
def rows_of(errors: dict[str, float]) -> list:
    return [ablation.AblationRow(v, v, "", 1, {}, 1, 0.1, err, 0.0, 1.0, "") for v, err in errors.items()]


def summary(errors: dict[str, float], finding: dict | None = None) -> str:
    return ablation._summary({"base": "zfnet-tiny", "epochs": 3, "finding": finding}, rows_of(errors))


def test_summary_names_the_depth_rows():
    text = summary({"base": 0.20, "no-fc6-7": 0.25, "no-conv3-4+no-fc6-7": 0.60})
    assert "+5.0 points" in text and "+40.0" in text and "from 20.0% (base) to 60.0% (no-conv3-4+no-fc6-7)" in text


def test_summary_of_equal_errors_names_no_range():
    assert "all have 91.2% validation top-1 error" in summary({"base": 0.912, "no-fc7": 0.912})
    assert "base has 91.2% validation top-1 error" in summary({"base": 0.912})
    assert "from 20.0% (base, no-fc7) to 30.0% (fc-half)" in summary({"base": 0.2, "no-fc7": 0.2, "fc-half": 0.3})
    assert "(base) to" not in summary({"base": 0.912, "no-fc7": 0.912})


def test_summary_states_the_finding_with_its_evidence():
    text = summary({"base": 0.2, "no-fc6-7": 0.25, "no-conv3-4+no-fc6-7": 0.6}, {"verdict": "VERDICT"})
    assert text.endswith("Image by image: VERDICT.")


def test_depth_finding_is_tested_image_by_image():
    from zfnet.train.evaluate import Predictions

    def outputs(wrong: list[bool]) -> Predictions:
        n = len(wrong)
        probs = torch.tensor([[0.9, 0.1] if w else [0.1, 0.9] for w in wrong])
        return Predictions("r", probs, torch.ones(n, dtype=torch.long), torch.arange(n))

    # The shallow net errs on 12 images more of 20, on none fewer: 2**12 sign patterns, p = 1/4096.
    shallow, no_fc = outputs([True] * 15 + [False] * 5), outputs([True] * 3 + [False] * 17)
    comparison = ablation._depth_comparison({"no-fc6-7": no_fc, "no-conv3-4+no-fc6-7": shallow})
    assert comparison.difference == pytest.approx(60.0)  # points of top-1 error over all 20 images
    finding = ablation._finding(comparison)
    assert finding["verdict"].endswith("holds") and finding["p_value"] == pytest.approx(1 / 4096)
    assert "12 of 20 images answered differently" in finding["verdict"]
    same = ablation._depth_comparison({"no-fc6-7": no_fc, "no-conv3-4+no-fc6-7": no_fc})
    assert same is None and "no evidence either way" in ablation._finding(same)["verdict"]
    assert ablation._depth_comparison({"no-fc6-7": no_fc}) is None


# ---------------------------------------------------------------------------------------------- the finding
def test_without_conv3_4_and_fc6_7_the_net_does_far_worse_on_plain_shapes(tmp_path):
    # The quick version of the test below, on bright shapes on dim noise (5 classes, 40 training and 20
    # validation images each), which zfnet-tiny learns within a few epochs of the paper's recipe (batch 8,
    # 250 SGD steps). Measured: no-fc6-7 ends at 42% validation error (40-51% over epochs 3-10, with one
    # noisy epoch at 74%), no-conv3-4+no-fc6-7 at chance, 80%, in every epoch (its conv2 units switch off in
    # the first epoch). 100 images: a standard error of 5 points near 45%, so the bounds leave 4 or more.
    from helpers.trees import make_tree

    data = make_tree(tmp_path / "data", classes=5, per_class=40, val_per_class=20)
    result = study_run(data, tmp_path / "out", variants=("no-fc6-7", "no-conv3-4+no-fc6-7"), epochs=10, lr=1e-2)
    no_fc, shallow = result.row("no-fc6-7"), result.row("no-conv3-4+no-fc6-7")
    assert no_fc.val_top1_error <= 0.65, no_fc
    assert shallow.val_top1_error >= 0.75, shallow
    assert shallow.val_top1_error - no_fc.val_top1_error >= 0.15
    assert result["finding"]["verdict"].endswith("holds")  # and the test of it, image by image, agrees


@pytest.mark.slow
def test_removing_conv3_4_and_fc6_7_hurts_far_more_than_fc6_7_alone(tmp_path):
    # The paper's Table 3 (Krizhevsky et al.'s net): removing fc6 and fc7 costs 4.3 points of validation top-1
    # error, removing conv3, conv4, fc6 and fc7 30.8. In miniature (zfnet-tiny, 10 synthetic classes of 100
    # training images, the paper's recipe at batch 32, 940 SGD steps) the network without fc6-7 leaves the
    # chance plateau after ~500 steps and ends near 71%, while the one without conv3, conv4, fc6, fc7 stays at
    # chance (90%): it starts with ~20x the others' signal gain and its conv2 units switch off in the first
    # epoch (docs/experiments.md). About 60 s on 2 free cores.
    from zfnet.data.synthetic import write_synthetic

    write_synthetic(tmp_path / "data", classes=10, per_class=100, val_per_class=30, size=73, seed=0, progress=False)
    result = study_run(tmp_path / "data", tmp_path / "out", variants=("no-fc6-7", "no-conv3-4+no-fc6-7"),
                       epochs=30, batch_size=32, lr=1e-2, lr_patience=2)
    no_fc, shallow = result.row("no-fc6-7"), result.row("no-conv3-4+no-fc6-7")
    # 300 validation images: an error rate near 0.75 has a standard error of 2.5 points, so each bound below
    # leaves 3-4 standard errors between it and the measured value.
    assert no_fc.val_top1_error <= 0.80, no_fc
    assert shallow.val_top1_error >= 0.85, shallow
    assert shallow.val_top1_error - no_fc.val_top1_error >= 0.10
    assert shallow.train_top1_error - no_fc.train_top1_error >= 0.10  # it fits the training set worse too


def test_miniature_settings_are_a_valid_study():
    from dataclasses import fields

    from zfnet.data.synthetic import write_synthetic
    from zfnet.experiments.ablation import MINIATURE, MINIATURE_DATA

    assert set(MINIATURE) <= {f.name for f in fields(Config)}
    assert set(MINIATURE_DATA) <= set(inspect.signature(write_synthetic).parameters)
    config = Config(data="d", **MINIATURE)
    names = [parse_variant(v, config.base, MINIATURE_DATA["classes"]).name for v in config.variants]
    assert names == list(MINIATURE["variants"])
