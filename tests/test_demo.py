"""``zfnet demo --quick`` end to end: from an empty folder, resumable, refusing foreign folders."""

from __future__ import annotations

import json

import pytest

from zfnet.cli import main
from zfnet.errors import ZFNetError
from zfnet.experiments import demo


def run_demo(out, *, quick=True, show_progress=False, seed=0):
    return demo.run(demo.Config(quick=quick, seed=seed), out, show_progress=show_progress)


@pytest.mark.slow
def test_quick_demo_runs_and_resumes(tmp_path, capsys):
    out = tmp_path / "demo"
    assert main(["demo", "--quick", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert f"results in {out}" in printed
    evaluation = json.loads((out / "evaluation.json").read_text())
    assert [r["name"] for r in evaluation["results"]] == ["zfnet", "alexnet", "ensemble"]
    for name in ("zfnet", "alexnet"):
        rows = (out / "runs" / name / "metrics.jsonl").read_text().splitlines()
        assert len(rows) == 3
    report = out / "report" / "index.html"
    assert f"report: {report}" in printed and report.is_file()
    for name in ("visualize/index.json", "occlusion/occlusion.json", "correspondence/correspondence.json",
                 "invariance/invariance.json", "transfer/transfer.json", "transfer/probes.json"):
        assert (out / name).is_file(), name
    pages = {p.name for p in (out / "report").rglob("*.html")}
    assert {"occlusion.html", "invariance.html", "correspondence.html", "transfer.html", "probes.html"} <= pages, pages
    # A second run finds everything done and recomputes nothing (the report is rebuilt from the results).
    again = run_demo(out, quick=True, show_progress=False)
    assert again.stages == ["nothing left to do"]
    # The time over both sessions, the first one's included.
    marker = json.loads((out / "demo.json").read_text())
    assert again.seconds == pytest.approx(marker["seconds"], abs=0.2) and again.seconds > again.session_seconds
    comparison = json.loads((out / "comparison" / "comparison.json").read_text())
    assert set(comparison["left_chance"]) == {"zfnet", "alexnet"} and comparison["verdict"] in printed


@pytest.mark.slow
def test_interrupted_demo_resumes_training(tmp_path, monkeypatch):
    import dataclasses

    from zfnet import train as train_pkg

    out = tmp_path / "demo"
    real_train = train_pkg.train

    def stopped_after_one_epoch(config, **kw):
        if config.model.startswith("alexnet"):
            real_train(dataclasses.replace(config, epochs=1), **kw)
            raise KeyboardInterrupt  # as if the user pressed Ctrl-C during AlexNet's second epoch
        return real_train(config, **kw)

    monkeypatch.setattr(train_pkg, "train", stopped_after_one_epoch)
    with pytest.raises(KeyboardInterrupt):
        run_demo(out, quick=True, show_progress=False)
    monkeypatch.setattr(train_pkg, "train", real_train)
    result = run_demo(out, quick=True, show_progress=False)
    # Data and ZFNet were not redone; the analyses come after the training.
    assert result.stages == ["train alexnet", "evaluate", "deconvnet figures", "occlusion", "correspondence",
                             "invariance", "transfer and probes"]
    rows = [json.loads(line) for line in (out / "runs" / "alexnet" / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in rows] == [1, 2, 3]


def test_foreign_or_unusable_out_is_refused(tmp_path, capsys):
    foreign = tmp_path / "photos"
    foreign.mkdir()
    (foreign / "holiday.jpg").write_bytes(b"not mine to delete")
    with pytest.raises(ZFNetError, match="not empty and is not a zfnet demo"):
        run_demo(foreign, quick=True)
    assert (foreign / "holiday.jpg").read_bytes() == b"not mine to delete"
    a_file = tmp_path / "file"
    a_file.write_text("x")
    assert main(["demo", "--quick", "--out", str(a_file)]) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "is a file" in err
