"""The miniature of §5 in one call: plumbing, the findings read from the parts' own results, resumption.

The full-size miniature (nine variants, 30 epochs, 5 splits) takes minutes and is measured in
docs/transfer.md; here every part is shrunk to seconds, which tests the wiring, not the findings (those
are tested as properties in test_ablation.py, test_transfer.py and test_probes.py).
"""

from __future__ import annotations

import json

import pytest

import zfnet.analysis.probes as probes_module
import zfnet.analysis.transfer as transfer_module
from zfnet.analysis.miniature import CRITERIA, FINDINGS, miniature_study
from zfnet.cli import main
from zfnet.errors import ZFNetError

TINY = dict(
    data={"classes": 3, "per_class": 12, "val_per_class": 4},
    ablation={"variants": ("base", "no-fc6-7", "no-conv3-4+no-fc6-7"), "epochs": 1, "batch_size": 8},
    secondary={"classes": 3, "per_class": 10, "val_per_class": 2},
    transfer={"per_class": (4,), "splits": 2, "probe_per_class": 4, "scratch_steps": 2},
)


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    out = tmp_path_factory.mktemp("miniature")
    return out, miniature_study(out, show_progress=False, **TINY)


def test_findings_are_read_from_the_parts_results(study):
    out, result = study
    assert json.loads((out / "miniature.json").read_text()) == json.loads(json.dumps(result))
    transfer = json.loads((out / "transfer" / "transfer.json").read_text())
    probes = json.loads((out / "transfer" / "probes.json").read_text())
    ablation = {r["variant"]: r for r in json.loads((out / "ablation" / "ablation.json").read_text())["variants"]}
    f = result["findings"]
    gap = transfer["pretrained"]["4"]["mean"] - transfer["scratch"]["4"]["mean"]
    assert f["transfer"]["pretrained_minus_scratch"] == {"4": pytest.approx(gap)}
    assert f["transfer"]["holds"] == (gap >= 0.05)
    assert f["depth"]["rank_correlation"] == probes["depth_trend"]
    assert f["depth"]["holds"] == all(t >= 0.5 for t in probes["depth_trend"].values())
    base = ablation["base"]["val_top1_error"]
    shallow = ablation["no-conv3-4+no-fc6-7"]["val_top1_error"] - base
    no_fc = ablation["no-fc6-7"]["val_top1_error"] - base
    assert f["ablation"]["val_top1_error_increase"] == {"no-conv3-4+no-fc6-7": pytest.approx(shallow),
                                                        "no-fc6-7": pytest.approx(no_fc)}
    assert f["ablation"]["holds"] == (shallow >= no_fc + 0.05)
    # The transfer starts from the ablation's base network, trained on the primary classes.
    assert transfer["run"] == str(out / "ablation" / "runs" / "base")
    assert set(transfer["per_class"]) == {4} and transfer["classes"] == 3


def test_report_block_and_markdown(study):
    out, result = study
    report = result["report"]
    assert result["kind"] == "miniature" and report["title"]
    rows = report["tables"][0]["rows"]
    assert [r[0] for r in rows] == list(FINDINGS.values()) and [r[3] for r in rows] == list(CRITERIA.values())
    assert [r[2] for r in rows] == ["yes" if f["holds"] else "no" for f in result["findings"].values()]
    md = (out / "miniature.md").read_text()
    assert all(text in md for text in FINDINGS.values())
    assert set(result["seconds"]) == {"primary data", "ablation", "secondary data", "transfer and probes", "total"}


def test_second_call_resumes_everything(study, monkeypatch):
    out, first = study

    def refuse(*args, **kwargs):
        raise AssertionError("finished work was redone")

    monkeypatch.setattr("zfnet.train.train", refuse)
    monkeypatch.setattr(transfer_module, "fit_and_score", refuse)
    monkeypatch.setattr(probes_module, "fit_and_score", refuse)
    monkeypatch.setattr(transfer_module, "train_from_scratch", refuse)
    monkeypatch.setattr("zfnet.analysis.miniature.write_synthetic", refuse)
    again = miniature_study(out, show_progress=False, **TINY)
    assert again["findings"] == first["findings"]


def test_a_foreign_folder_is_refused(tmp_path):
    (tmp_path / "notes.txt").write_text("mine")
    with pytest.raises(ZFNetError, match="holds no miniature study"):
        miniature_study(tmp_path, show_progress=False, **TINY)
    assert [p.name for p in tmp_path.iterdir()] == ["notes.txt"]


def test_variants_the_findings_need_are_required(tmp_path):
    with pytest.raises(ZFNetError, match="no-conv3-4"):
        miniature_study(tmp_path, show_progress=False, **{**TINY, "ablation": {"variants": ("base", "no-fc6-7")}})
    assert not any(tmp_path.iterdir())


def test_cli_prints_each_finding(study, monkeypatch, capsys):
    out, result = study
    calls = []

    def fake(path, **kwargs):
        calls.append((path, kwargs))
        return result

    monkeypatch.setattr("zfnet.analysis.miniature.miniature_study", fake)
    assert main(["experiment", "miniature", "--out", str(out), "--seed", "3", "--quiet"]) == 0
    assert calls == [(out, {"seed": 3, "workers": 0, "show_progress": False})]
    printed = capsys.readouterr().out
    for finding in result["findings"].values():
        assert f"{'holds' if finding['holds'] else 'does not hold'}: {finding['finding']}" in printed
