"""The miniature of §5 in one call: plumbing, the findings weighed from the parts' own results, resumption.

The full-size miniature (nine variants, 30 epochs, 5 splits) takes minutes and is measured in
docs/transfer.md; here every part is shrunk to seconds, which tests the wiring, not the findings (those
are tested as properties in test_ablation.py, test_transfer.py and test_probes.py).
"""

from __future__ import annotations

import json

import pytest

import zfnet.experiments.miniature as miniature_module
import zfnet.experiments.transfer as transfer_module
from zfnet.analysis.probes import depth_trend
from zfnet.analysis.stats import paired_difference
from zfnet.cli import main
from zfnet.errors import ZFNetError
from zfnet.experiments.miniature import CRITERIA, FINDINGS, VERDICTS, Config, run

TINY = dict(
    data={"classes": 3, "per_class": 12, "val_per_class": 4},
    ablation={"variants": ("base", "no-fc6-7", "no-conv3-4+no-fc6-7"), "epochs": 1, "batch_size": 8},
    secondary={"classes": 3, "per_class": 10, "val_per_class": 2},
    transfer={"per_class": (4,), "splits": 2, "probe_per_class": 4, "scratch_steps": 2},
)


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    out = tmp_path_factory.mktemp("miniature")
    return out, run(Config(**TINY), out, show_progress=False).numbers


def _expected_verdict(c) -> str:
    """The verdict of one test of the paper's direction at 5%, from its two one-sided p-values."""
    return "holds" if c.p_greater <= 0.05 else "the opposite" if c.p_less <= 0.05 else "no evidence either way"


def test_findings_are_weighed_from_the_parts_results(study):
    out, result = study
    assert json.loads((out / "miniature.json").read_text()) == json.loads(json.dumps(result))
    transfer = json.loads((out / "transfer" / "transfer.json").read_text())
    probes = json.loads((out / "transfer" / "probes.json").read_text())
    ablation_json = json.loads((out / "ablation" / "ablation.json").read_text())
    ablation = {r["variant"]: r for r in ablation_json["variants"]}
    f = result["findings"]
    assert all(finding["verdict"] in VERDICTS for finding in f.values())
    assert all(finding["holds"] == (finding["verdict"] == "holds") for finding in f.values())

    # Transfer: pretrained against from scratch, paired over the splits.
    pre, scratch = transfer["pretrained"]["4"], transfer["scratch"]["4"]
    test = paired_difference(pre["per_split"], scratch["per_split"], alternative="greater")
    assert f["transfer"]["pretrained_minus_scratch"] == {"4": pytest.approx(pre["mean"] - scratch["mean"])}
    assert f["transfer"]["margin"]["4"]["p_value"] == pytest.approx(test.p_value)
    assert f["transfer"]["verdict"] == _expected_verdict(test)
    assert f["transfer"]["scratch_steps"] == 2 and any("2 SGD steps" in c for c in f["transfer"]["caveats"])
    # 2 splits: the test cannot reach 5% (its smallest p-value is 1/4), so it is never said to hold.
    assert f["transfer"]["verdict"] != "holds"

    # Depth: each split's rank correlation of accuracy with depth, against 0.
    assert f["depth"]["rank_correlation"] == probes["depth_trend"]
    for kind, by_layer in probes["results"].items():
        trends = [depth_trend([by_layer[n]["per_split"][s] for n in probes["layers"]]) for s in range(2)]
        assert f["depth"]["rank_correlation_per_split"][kind] == pytest.approx(trends)

    # Ablation: the ablation's own image-by-image test, with the margins of both variants over the base.
    base = ablation["base"]["val_top1_error"]
    shallow = ablation["no-conv3-4+no-fc6-7"]["val_top1_error"] - base
    no_fc = ablation["no-fc6-7"]["val_top1_error"] - base
    assert f["ablation"]["val_top1_error_increase"] == {"no-conv3-4+no-fc6-7": pytest.approx(shallow),
                                                        "no-fc6-7": pytest.approx(no_fc)}
    assert f["ablation"]["margin"]["difference"] == pytest.approx(shallow - no_fc)
    assert f["ablation"]["evidence"] == [ablation_json["finding"]["verdict"]]
    assert ("lowers the error here" in " ".join(f["ablation"]["caveats"])) == (no_fc < 0)
    # The transfer starts from the ablation's base network, trained on the primary classes.
    assert transfer["run"] == str(out / "ablation" / "runs" / "base")
    assert set(transfer["per_class"]) == {4} and transfer["classes"] == 3


def test_report_block_and_markdown(study):
    out, result = study
    report = result["report"]
    assert result["kind"] == "miniature" and report["title"]
    rows = report["tables"][0]["rows"]
    assert [r[0] for r in rows] == list(FINDINGS.values()) and [r[3] for r in rows] == list(CRITERIA.values())
    assert [r[2] for r in rows] == [f["verdict"] for f in result["findings"].values()]
    assert [r[4] for r in rows] == ["; ".join(f["caveats"]) for f in result["findings"].values()]
    md = (out / "miniature.md").read_text()
    assert all(text in md for text in FINDINGS.values())
    # The summary names every finding with its verdict, not a bare count.
    assert "of 3 hold" not in report["summary"]
    for f in result["findings"].values():
        assert f"{f['finding'][1:]}: {f['verdict']}" in report["summary"]
    assert set(result["seconds"]) == {"primary data", "ablation", "secondary data", "transfer and probes", "total"}
    saved = json.loads((out / "miniature.config.json").read_text())
    assert saved["experiment"] == "miniature" and saved["config"]["transfer"]["per_class"] == [4]


def test_second_call_resumes_everything(study, monkeypatch):
    out, first = study

    def refuse(*args, **kwargs):
        raise AssertionError("finished work was redone")

    monkeypatch.setattr("zfnet.experiments.ablation.train", refuse)
    monkeypatch.setattr(transfer_module, "fit_and_score", refuse)
    monkeypatch.setattr("zfnet.analysis.probes.fit_and_score", refuse)
    monkeypatch.setattr(transfer_module, "train_from_scratch", refuse)
    monkeypatch.setattr(miniature_module, "write_synthetic", refuse)
    again = run(Config(**TINY), out, show_progress=False).numbers
    assert again["findings"] == first["findings"]


def test_a_foreign_folder_is_refused(tmp_path):
    (tmp_path / "notes.txt").write_text("mine")
    with pytest.raises(ZFNetError, match="holds no miniature study"):
        run(Config(**TINY), tmp_path, show_progress=False)
    assert [p.name for p in tmp_path.iterdir()] == ["notes.txt"]


def test_config_checks_its_settings(tmp_path):
    with pytest.raises(ZFNetError, match="no-conv3-4"):
        Config(**{**TINY, "ablation": {"variants": ("base", "no-fc6-7")}})
    with pytest.raises(ZFNetError, match="miniature option transfer has no setting splitz"):
        Config(transfer={"splitz": 2})
    with pytest.raises(ZFNetError, match="miniature option seed "):
        Config(seed=-1)
    assert Config(transfer={"splits": 3}).spec("transfer")["splits"] == 3
    assert not any(tmp_path.iterdir())


def test_cli_prints_each_finding(study, monkeypatch, capsys):
    out, numbers = study
    calls = []

    def fake(config, path, **kwargs):
        calls.append((config, path, kwargs))
        return miniature_module.Result(path, numbers)

    monkeypatch.setattr(miniature_module, "run", fake)
    assert main(["experiment", "miniature", "--out", str(out), "--seed", "3", "--quiet"]) == 0
    assert calls == [(Config(seed=3, workers=0), out, {"show_progress": False})]
    printed = capsys.readouterr().out
    for finding in numbers["findings"].values():
        assert f"{finding['verdict']}: {finding['finding']}" in printed
    assert f"details in {out / 'miniature.md'}" in printed

