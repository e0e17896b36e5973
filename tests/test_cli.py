"""The command line: help for every command, one-line errors with status 2, train and evaluate."""

from __future__ import annotations

import json

import pytest
from helpers.cli import one_line_error

from zfnet.cli import main

ALL_COMMANDS = [[], ["data"], ["data", "synth"], ["models"], ["train"], ["evaluate"], ["visualize"], ["occlusion"],
                ["correspondence"], ["invariance"], ["experiment"], ["experiment", "transfer"],
                ["experiment", "probes"], ["experiment", "ablation"], ["experiment", "ensemble"],
                ["experiment", "miniature"], ["report"], ["demo"]]


@pytest.mark.parametrize("argv", ALL_COMMANDS, ids=lambda a: " ".join(a) or "zfnet")
def test_help_documents_defaults_once(argv, capsys, monkeypatch):
    monkeypatch.setenv("COLUMNS", "1000")  # one line per option, so that each is checked alone
    with pytest.raises(SystemExit) as exc:
        main([*argv, "--help"])
    assert exc.value.code == 0
    out = capsys.readouterr().out
    assert "usage: zfnet" in out
    for line in out.splitlines():
        assert line.count("(default:") <= 1, line
    if argv == ["train"]:
        assert "(default: 128)" in out and "(default: 0.01)" in out and "zfnet-tiny" in out
        assert "(default: from the cores free when training starts)" in out


def test_unknown_model_lists_valid_choices(capsys, tiny_tree, tmp_path):
    argv = ["train", "--data", str(tiny_tree), "--model", "vgg16", "--out", str(tmp_path / "r")]
    line = one_line_error(capsys, argv, "vgg16", "zfnet-tiny")
    assert line.startswith("zfnet train: error:")


def test_missing_data_path(capsys, tmp_path):
    one_line_error(capsys, ["train", "--data", str(tmp_path / "nope"), "--model", "zfnet-tiny",
                             "--out", str(tmp_path / "r")], "does not exist")


def test_impossible_size_and_bad_values(capsys, tiny_tree, tmp_path):
    one_line_error(capsys, ["train", "--data", str(tiny_tree), "--model", "zfnet-tiny", "--remove", "conv5",
                             "--out", str(tmp_path / "r")], "cannot remove")
    one_line_error(capsys, ["train", "--data", str(tiny_tree), "--epochs", "0", "--out", str(tmp_path / "r")],
                    "--epochs")
    one_line_error(capsys, ["evaluate", str(tmp_path / "norun"), "--data", str(tiny_tree)], "does not exist")


def test_crafted_checkpoint_via_cli(capsys, tiny_tree, tmp_path):
    import os

    import torch

    class Exploit:
        def __reduce__(self):
            return (os.system, (f"touch {tmp_path / 'pwned'}",))

    run = tmp_path / "run"
    run.mkdir()
    (run / "config.json").write_text(json.dumps({"data": str(tiny_tree), "out": str(run), "model": "zfnet-tiny"}))
    torch.save({"format": "zfnet-train-state-v1", "epoch": 1, "model": Exploit()}, run / "last.pt")
    one_line_error(capsys, ["train", "--out", str(run), "--resume"], "refusing to load")
    assert not (tmp_path / "pwned").exists()


def test_config_file_and_flags(tiny_tree, tmp_path, capsys):
    cfg = tmp_path / "run.toml"
    cfg.write_text(f'data = "{tiny_tree}"\nmodel = "zfnet-tiny"\nepochs = 1\nbatch-size = 6\nworkers = 0\n')
    run = tmp_path / "run"
    assert main(["train", "--config", str(cfg), "--out", str(run), "--lr", "0.005", "--quiet"]) == 0
    saved = json.loads((run / "config.json").read_text())
    assert saved["batch_size"] == 6 and saved["lr"] == 0.005 and saved["epochs"] == 1
    assert "run directory:" in capsys.readouterr().out
    # resume cannot change the model
    one_line_error(capsys, ["train", "--out", str(run), "--resume", "--model", "alexnet-tiny"], "cannot change")
    # ... but can train longer
    assert main(["train", "--out", str(run), "--resume", "--epochs", "2", "--quiet"]) == 0
    assert len((run / "metrics.jsonl").read_text().splitlines()) == 2


def test_evaluate_ensemble_of_mixed_architectures(tiny_tree, tmp_path, capsys):
    a, b = tmp_path / "a", tmp_path / "b"
    common = ["--data", str(tiny_tree), "--epochs", "1", "--batch-size", "6", "--workers", "0", "--quiet"]
    assert main(["train", "--model", "zfnet-tiny", "--out", str(a), *common]) == 0
    assert main(["train", "--model", "alexnet-tiny", "--out", str(b), *common]) == 0
    capsys.readouterr()
    out_json = tmp_path / "eval.json"
    assert main(["evaluate", str(a), "--data", str(tiny_tree), "--ensemble", str(b), "--workers", "0",
                 "--json", str(out_json)]) == 0
    out = capsys.readouterr().out
    assert "ensemble of 2" in out
    rows = json.loads(out_json.read_text())["results"]
    assert len(rows) == 3 and all(0 <= r["top1_error"] <= 1 for r in rows) and rows[2]["images"] == 12


def test_models_command_lists_parameter_counts(capsys):
    assert main(["models"]) == 0
    out = capsys.readouterr().out
    assert "62,357,608" in out and "107,627,624" in out


def test_visualize_command(tiny_tree, tmp_path, capsys):
    run = tmp_path / "run"
    assert main(["train", "--data", str(tiny_tree), "--model", "zfnet-tiny", "--epochs", "1", "--batch-size", "6",
                 "--workers", "0", "--snapshots", "1", "--out", str(run), "--quiet"]) == 0
    out = tmp_path / "vis"
    assert main(["visualize", str(run), "--data", str(tiny_tree), "--layers", "conv1,conv5", "--maps", "2",
                 "--k", "4", "--out", str(out)]) == 0
    index = json.loads((out / "index.json").read_text())
    assert list(index["layers"]) == ["conv1", "conv5"]
    assert all(len(m) == 2 for m in index["layers"].values())
    assert (out / "top4-conv5.png").is_file() and (out / "filters-conv1.png").is_file()
    capsys.readouterr()
    one_line_error(capsys, ["visualize", str(run), "--data", str(tiny_tree), "--layers", "conv9",
                             "--out", str(out)], "conv9", "conv5")


def test_resume_only_continues_a_zfnet_run(capsys, tiny_tree, tmp_path):
    one_line_error(capsys, ["train", "--out", str(tmp_path / "absent"), "--resume"], "does not exist")
    assert not (tmp_path / "absent").exists()
    photos = tmp_path / "photos"
    photos.mkdir()
    (photos / ".notes.tmp").write_text("the user's")
    (photos / "cat.jpg").write_bytes(b"the user's")
    for extra in ([], ["--data", str(tiny_tree)]):
        one_line_error(capsys, ["train", "--out", str(photos), "--resume", *extra], "not a zfnet run")
    assert sorted(p.name for p in photos.iterdir()) == [".notes.tmp", "cat.jpg"]  # nothing cleaned, nothing added
    (tmp_path / "empty").mkdir()
    one_line_error(capsys, ["train", "--out", str(tmp_path / "empty"), "--resume"], "is empty")


def test_snapshots_must_be_epochs(capsys, tiny_tree, tmp_path):
    one_line_error(capsys, ["train", "--data", str(tiny_tree), "--snapshots", "-3", "--out", str(tmp_path / "r")],
                    "snapshots")
    assert not (tmp_path / "r").exists()


def test_a_relative_data_path_resumes_from_anywhere(capsys, tiny_tree, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    common = ["--batch-size", "8", "--workers", "0", "--quiet"]
    assert main(["train", "--data", "data", "--model", "zfnet-tiny", "--epochs", "1", "--out", "run", *common]) == 0
    run = tmp_path / "run"
    saved = json.loads((run / "config.json").read_text())
    assert saved["data"] == str(tiny_tree.resolve()) and saved["out"] == str(run.resolve())
    (tmp_path / "elsewhere").mkdir()
    monkeypatch.chdir(tmp_path / "elsewhere")
    # No --data, another relative spelling of it, and the absolute path: all the same folder.
    assert main(["train", "--out", "../run", "--resume", "--epochs", "2", *common]) == 0
    assert main(["train", "--out", "../run", "--resume", "--data", "../data", "--epochs", "3", *common]) == 0
    assert main(["train", "--out", str(run), "--resume", "--data", str(tiny_tree), "--epochs", "3", *common]) == 0
    assert len((run / "metrics.jsonl").read_text().splitlines()) == 3
    capsys.readouterr()
    one_line_error(capsys, ["train", "--out", str(run), "--resume", "--data", str(tmp_path)], "cannot change")


FOLDER_COMMANDS = [
    ["train", "--data", "{data}", "--model", "zfnet-tiny", "--out", "{out}"],
    ["data", "synth", "{out}"],
    ["demo", "--quick", "--out", "{out}"],
    ["visualize", "{run}", "--data", "{data}", "--out", "{out}"],
    ["occlusion", "{run}", "--data", "{data}", "--out", "{out}"],
    ["correspondence", "{run}", "--data", "{data}", "--out", "{out}"],
    ["invariance", "{run}", "--data", "{data}", "--out", "{out}"],
    ["experiment", "transfer", "{run}", "--data", "{data}", "--out", "{out}"],
    ["experiment", "probes", "{run}", "--data", "{data}", "--out", "{out}"],
    ["experiment", "ablation", "--data", "{data}", "--out", "{out}"],
    ["experiment", "ensemble", "{run}", "--data", "{data}", "--out", "{out}"],
    ["experiment", "miniature", "--out", "{out}"],
    ["report", "{run}", "--out", "{out}"],
]


def test_every_command_that_writes_a_folder_is_refused_while_another_process_writes_it(capsys, tiny_tree,
                                                                                        tmp_path):
    from helpers.locks import held_by_another_process

    out = tmp_path / "out"
    with held_by_another_process(out) as pid:
        for argv in FOLDER_COMMANDS:
            argv = [a.format(data=tiny_tree, out=out, run=tmp_path / "run") for a in argv]
            one_line_error(capsys, argv, str(out), "in use", f"PID {pid}")
            assert sorted(p.name for p in out.iterdir()) == [".zfnet.lock"], argv  # the holder's alone


def test_flags_are_never_abbreviated(capsys):
    one_line_error(capsys, ["train", "--out", "x", "--epoch", "3"], "unrecognized arguments: --epoch 3",
                   "zfnet train --help")


def test_an_unknown_flag_points_to_its_commands_help(capsys):
    one_line_error(capsys, ["data", "synth", "x", "--bogus"], "zfnet data synth: error", "zfnet data synth --help")
    one_line_error(capsys, ["occlusion", "--out", "x", "--windw", "3"], "zfnet occlusion --help")


def test_only_rank_zero_prints_under_torchrun(monkeypatch, capsys):
    monkeypatch.setenv("RANK", "1")
    assert main(["models"]) == 0
    assert capsys.readouterr().out == ""
    monkeypatch.setenv("RANK", "0")
    assert main(["models"]) == 0
    assert "zfnet-tiny" in capsys.readouterr().out


def test_config_file_on_data_evaluate_and_report(tmp_path, capsys):
    """--config on the commands without a generated Config: the file's options as their flags, flags win."""
    cfg = tmp_path / "synth.toml"
    cfg.write_text("classes = 2\nper_class = 3\nval_per_class = 1\nsize = 48\n")
    data = tmp_path / "data"
    assert main(["data", "synth", str(data), "--config", str(cfg), "--per-class", "2"]) == 0
    assert "wrote 4 train, 2 val images of 2 classes" in capsys.readouterr().out
    # a value is checked as its flag's would be, and an unknown option is named
    (tmp_path / "bad.toml").write_text("classes = 0\n")
    one_line_error(capsys, ["data", "synth", str(tmp_path / "d2"), "--config", str(tmp_path / "bad.toml")],
                   "--classes", "bad.toml")
    (tmp_path / "typo.toml").write_text("clases = 3\n")
    one_line_error(capsys, ["data", "synth", str(tmp_path / "d3"), "--config", str(tmp_path / "typo.toml")],
                   "unknown option 'clases'", "valid: ", "classes")
    assert not (tmp_path / "d2").exists() and not (tmp_path / "d3").exists()

    from helpers.runs import weights, write_run
    run = write_run(tmp_path / "run", classes=["arrow", "crescent"], tensors=weights("zfnet-tiny", 2),
                    metadata={"model": "zfnet-tiny", "num_classes": 2, "model_options": {}, "epoch": 1})
    (tmp_path / "eval.json").write_text(json.dumps({"ten_crop": True, "batch_size": 3, "workers": 0,
                                                    "device": "cpu", "json": str(tmp_path / "out.json")}))
    assert main(["evaluate", str(run), "--data", str(data), "--config", str(tmp_path / "eval.json")]) == 0
    assert "(10 crops)" in capsys.readouterr().out
    assert json.loads((tmp_path / "out.json").read_text())["ten_crop"] is True
    (tmp_path / "eval.json").write_text(json.dumps({"batch_size": "lots"}))
    one_line_error(capsys, ["evaluate", str(run), "--data", str(data), "--config", str(tmp_path / "eval.json")],
                   "--batch-size", "eval.json")
    (tmp_path / "eval.json").write_text(json.dumps({"run": "elsewhere"}))
    one_line_error(capsys, ["evaluate", str(run), "--data", str(data), "--config", str(tmp_path / "eval.json")],
                   "command line")

    # a required option may come from the file; a key may be the flag's name; a value may start with '-'
    (tmp_path / "eval.json").write_text(json.dumps({"data": str(data), "workers": 0, "device": "cpu"}))
    assert main(["evaluate", str(run), "--config", str(tmp_path / "eval.json")]) == 0
    assert "(centre crop)" in capsys.readouterr().out
    (tmp_path / "second.toml").write_text('set = "secondary"\nclasses = 2\nper_class = 1\nval_per_class = 1\n'
                                          'size = 48\n')
    assert main(["data", "synth", str(tmp_path / "d4"), "--config", str(tmp_path / "second.toml")]) == 0
    capsys.readouterr()
    one_line_error(capsys, ["data", "synth", str(tmp_path / "d5"), "--config", str(tmp_path / "typo.toml")],
                   "zfnet data synth: error:")
    # an error of the command line itself does not blame the file
    line = one_line_error(capsys, ["data", "synth", str(tmp_path / "d6"), "--config", str(tmp_path / "synth.toml"),
                                   "--size", "7"], "--size")
    assert "synth.toml" not in line

    (tmp_path / "report.toml").write_text('title = "-draft, from a file"\n')
    assert main(["report", str(tmp_path / "out.json"), "--out", str(tmp_path / "site"),
                 "--config", str(tmp_path / "report.toml")]) == 0
    assert "-draft, from a file" in (tmp_path / "site" / "index.html").read_text()
