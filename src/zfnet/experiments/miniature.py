"""``zfnet experiment miniature``: the paper's §5 findings in miniature, on the synthetic data set, in one call.

:func:`run` runs, into one folder and resumably:

1. ``primary/``: the synthetic data set's primary classes (``MINIATURE_DATA``: 10 classes, 200 training
   and 50 validation images each, 73 px);
2. ``ablation/``: the paper's nine Table 3 variants of ``zfnet-tiny`` trained on it (``MINIATURE``);
3. ``secondary/``: the disjoint secondary classes (10 classes, 96 images each);
4. ``transfer/``: the ablation's ``base`` network, frozen, transferred to the secondary classes with 15 and
   30 images per class against the same network trained from scratch and an untrained one (Tables 4-5),
   and a linear probe on every layer (Table 7);

and then weighs the evidence for the three findings the paper reports and writes ``miniature.json``
(with a report block), ``miniature.md`` and ``miniature.csv``:

- frozen pretrained features beat training from scratch on the same few images (paired over the
  splits, at every number of images per class);
- probe accuracy rises with depth (each split's rank correlation of accuracy with depth, above 0 for
  both classifiers);
- removing conv3, conv4, fc6 and fc7 hurts more than removing fc6 and fc7 alone (the ablation's test,
  image by image over the validation set).

A finding *holds* only with evidence: a permutation test (:mod:`zfnet.analysis.stats`) significant at
5 % in the paper's direction, for every part of it; significant the other way in any part, it is *the
opposite*; otherwise there is *no evidence either way*. Each finding is written with its margin, the
margin's 95 % interval and p-value, and the caveats that apply to this miniature.

Each part resumes what an interrupted call left (finished variants, splits and fits are not redone).

Example:
    >>> from zfnet.experiments import miniature
    >>> print(miniature.run(miniature.Config(), "mini").summary())  # doctest: +SKIP
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .._io import folder_entries
from ..analysis.probes import depth_trend
from ..analysis.stats import Comparison, paired_difference
from ..data.synthetic import write_synthetic
from ..errors import ZFNetError
from ..paper import PAPER_TABLE3
from ..results import Report, Table, write_results
from ..train.loop import left_chance
from ..train.scratch import SCRATCH_STEPS
from . import ablation, transfer
from .base import MAX_SEED, MAX_WORKERS, Options, option, write_config
from .base import Result as _Result

__all__ = ["Config", "Result", "run", "NAME", "HELP", "DESCRIPTION", "MINIATURE_SECONDARY", "MINIATURE_TRANSFER",
           "FINDINGS", "CRITERIA", "VERDICTS"]

log = logging.getLogger("zfnet")

NAME = "miniature"
HELP = "the paper's §5 findings in miniature on the synthetic data (Tables 3-5, 7)"
DESCRIPTION = ("From nothing: the synthetic primary classes, the nine Table 3 variants of zfnet-tiny trained on "
               "them, the disjoint secondary classes, and the base network's frozen features transferred to them "
               "(15 and 30 images per class, 5 splits, against training from scratch) with a linear probe per "
               "layer. Writes OUT/miniature.json and .md: each of the paper's three findings with its margin, "
               "the evidence for it (holds, the opposite, or no evidence either way) and its caveats. Run the "
               "same command again to resume.")

MINIATURE_SECONDARY: dict[str, Any] = {"classes": 10, "per_class": 80, "val_per_class": 16, "size": 73}
"""The secondary classes' data set (train/ and val/ are pooled by the transfer: 96 images per class)."""

MINIATURE_TRANSFER: dict[str, Any] = {"per_class": (15, 30), "splits": 5, "probe_per_class": 30,
                                      "scratch_steps": SCRATCH_STEPS}
"""The transfer and probe protocol: training images per class, splits, and the from-scratch budget."""

FINDINGS = {
    "transfer": "frozen pretrained features beat training from scratch on the same few images",
    "depth": "probe accuracy rises with depth overall",
    "ablation": "removing conv3, conv4, fc6 and fc7 hurts far more than removing fc6 and fc7 alone",
}
"""The paper's three findings that the miniature checks, by key."""

CRITERIA = {
    "transfer": "pretrained minus from-scratch accuracy above 0 at every number of images per class: paired "
                "sign-flip test over the splits, p ≤ 0.05 each",
    "depth": "each split's rank correlation of accuracy with depth above 0, for the SVM and the softmax: "
             "sign-flip test over the splits, p ≤ 0.05 each",
    "ablation": "the shallow net's validation top-1 error above no-fc6-7's: the ablation's paired test over "
                "the validation images, p ≤ 0.05",
}
"""What "holds" means for each finding: evidence in the paper's direction, for every part of it."""

VERDICTS = ("holds", "the opposite", "no evidence either way")
"""A finding's verdict: the tests say so, say the reverse in some part, or say neither."""

ALPHA = 0.05
SHALLOW, NO_FC = "no-conv3-4+no-fc6-7", "no-fc6-7"
_DICTS = {"data": ablation.MINIATURE_DATA, "ablation": ablation.MINIATURE, "secondary": MINIATURE_SECONDARY,
          "transfer": MINIATURE_TRANSFER}


@dataclass(frozen=True, kw_only=True)
class Config(Options):
    """The miniature's options (``zfnet experiment miniature --help`` shows the flags); the overrides of its
    four settings are for Python and config files (``--config FILE``)."""

    what = "miniature option"

    seed: int = option(0, low=0, high=MAX_SEED, help="seed of the data, the trainings and the splits")
    workers: int = option(0, low=0, high=MAX_WORKERS, help="data loading processes of the trainings")
    data: dict[str, Any] = option(default_factory=dict, cli=False,
                                  help="overrides of MINIATURE_DATA (the primary classes' data set)")
    ablation: dict[str, Any] = option(default_factory=dict, cli=False,
                                      help="overrides of MINIATURE (the ablation's settings); its variants must "
                                      "include base, no-fc6-7 and no-conv3-4+no-fc6-7")
    secondary: dict[str, Any] = option(default_factory=dict, cli=False,
                                       help="overrides of MINIATURE_SECONDARY (the secondary classes' data set)")
    transfer: dict[str, Any] = option(default_factory=dict, cli=False,
                                      help="overrides of MINIATURE_TRANSFER (the transfer and probe protocol)")

    def __post_init__(self) -> None:
        super().__post_init__()
        for name, defaults in _DICTS.items():
            unknown = sorted(set(getattr(self, name)) - set(defaults))
            if unknown:
                raise ZFNetError(f"{self.what} {name} has no setting {', '.join(unknown)}; valid: "
                                 f"{', '.join(defaults)}")
        missing = {"base", NO_FC, SHALLOW} - set(self.spec("ablation")["variants"])
        if missing:
            raise ZFNetError(f"the miniature needs the ablation variants {', '.join(sorted(missing))}")

    def spec(self, name: str) -> dict[str, Any]:
        """One of the four settings (``data``, ``ablation``, ``secondary``, ``transfer``) with its overrides."""
        return {**_DICTS[name], **getattr(self, name)}


@dataclass
class Result(_Result):
    """The miniature's numbers: ``numbers["findings"]`` (per finding its verdict, margin, evidence and
    caveats), ``numbers["seconds"]`` per part, and the settings."""

    kind = NAME

    def lines(self) -> list[str]:
        lines = [self.numbers["report"]["summary"]]
        for finding in self.numbers["findings"].values():
            lines.append(f"  {finding['verdict']}: {finding['finding']}")
        if self.out is not None:
            lines.append(f"details in {self.out / 'miniature.md'}; tables in {self.out / 'ablation'} and "
                         f"{self.out / 'transfer'}")
        return lines


def _data(path: Path, spec: dict[str, Any], class_set: str, seed: int, show_progress: bool) -> Path:
    if not (path / "annotations.json").is_file():
        write_synthetic(path, classes=spec["classes"], per_class=spec["per_class"],
                        val_per_class=spec["val_per_class"], size=spec["size"], seed=seed, class_set=class_set,
                        progress=show_progress, overwrite=True)  # overwrite: a set killed while written
    return path


def _combined(parts: list[str]) -> str:
    """The verdict of a finding made of parts that must all hold (an intersection-union test: no
    adjustment for their number is needed)."""
    if parts and all(p == "holds" for p in parts):
        return "holds"
    return "the opposite" if "the opposite" in parts else "no evidence either way"


def _status(c: Comparison) -> str:
    """One part's verdict at level :data:`ALPHA`, for a test of the paper's direction (``greater``)."""
    if c.p_greater <= ALPHA:
        return "holds"
    return "the opposite" if c.p_less <= ALPHA else "no evidence either way"


def _margin(c: Comparison) -> dict[str, Any]:
    """The margin, its interval (None for an end too few units bound) and the p-value of the paper's direction."""
    return {"difference": c.difference, "low": c.low if math.isfinite(c.low) else None,
            "high": c.high if math.isfinite(c.high) else None, "confidence": c.confidence,
            "p_value": c.p_value, "units": c.sizes[0]}


def _transfer_finding(numbers: dict[str, Any]) -> dict[str, Any]:
    ns = [str(n) for n in numbers["per_class"]]
    steps = numbers["scratch_recipe"]["steps"]
    tests = {n: paired_difference(numbers["pretrained"][n]["per_split"], numbers["scratch"][n]["per_split"],
                                  alternative="greater", unit="splits") for n in ns}
    evidence = [f"{n}/class: " + c.verdict(compared="frozen pretrained features", baseline="training from scratch",
                                           finding="the paper's finding", alpha=ALPHA)
                for n, c in tests.items()]
    chance = numbers["chance"]
    caveats = [f"the from-scratch networks trained for {steps} SGD steps"
               + ("; from the paper's initialisation these networks need about 1000 to leave chance level, so "
                  "a longer baseline may narrow the gap" if steps < 1000 else
                  ", about what the pretrained networks needed to leave chance level")]
    stuck = [n for n in ns if numbers["scratch"][n]["mean"] < chance + 0.05]
    if stuck:
        caveats.append(f"from scratch stayed within 5 points of chance ({100 * chance:.0f}%) at "
                       f"{', '.join(stuck)} per class")
    caveats.append("the splits redraw one pool of images, so they are not independent samples: the test over "
                   "them somewhat overstates the evidence")
    verdict = _combined([_status(c) for c in tests.values()])
    return {"finding": FINDINGS["transfer"], "criterion": CRITERIA["transfer"], "verdict": verdict,
            "holds": verdict == "holds",
            "margin": {n: _margin(c) for n, c in tests.items()}, "evidence": evidence, "caveats": caveats,
            "pretrained_minus_scratch": {n: c.difference for n, c in tests.items()},
            "pretrained": {n: numbers["pretrained"][n]["mean"] for n in ns},
            "scratch": {n: numbers["scratch"][n]["mean"] for n in ns}, "scratch_steps": steps}


def _depth_finding(numbers: dict[str, Any]) -> dict[str, Any]:
    layers, splits = numbers["layers"], numbers["splits"]
    tests, per_split = {}, {}
    for kind, by_layer in numbers["results"].items():
        trends = [depth_trend([by_layer[n]["per_split"][s] for n in layers]) for s in range(splits)]
        per_split[kind] = trends
        tests[kind] = paired_difference(trends, [0.0] * len(trends), alternative="greater", unit="splits")
    evidence = [f"{kind}: " + c.verdict(compared="the rank correlation with depth", baseline="0",
                                        finding="the paper's finding", alpha=ALPHA, digits=2)
                for kind, c in tests.items()]
    caveats = ["the splits redraw one pool of images, so they are not independent samples: the test over them "
               "somewhat overstates the evidence"]
    verdict = _combined([_status(c) for c in tests.values()])
    return {"finding": FINDINGS["depth"], "criterion": CRITERIA["depth"], "verdict": verdict,
            "holds": verdict == "holds",
            "margin": {kind: _margin(c) for kind, c in tests.items()}, "evidence": evidence, "caveats": caveats,
            "rank_correlation": numbers["depth_trend"], "rank_correlation_per_split": per_split}


def _ablation_finding(result: ablation.Result, classes: int, val_images: int) -> dict[str, Any]:
    base = result.row("base").val_top1_error
    shallow_error = result.row(SHALLOW).val_top1_error
    shallow, no_fc = shallow_error - base, result.row(NO_FC).val_top1_error - base
    test = result.numbers.get("finding") or {}
    p = test.get("p_value")
    text = test.get("verdict", "not tested")
    if p is not None and p <= ALPHA and test.get("difference", 0.0) > 0:
        verdict = "holds"
    elif "the opposite" in text:
        verdict = "the opposite"
    else:
        verdict = "no evidence either way"
    caveats = ["one training run per variant: the test is over the validation images of these runs, not over "
               "trainings"]
    if not left_chance(shallow_error, classes, val_images):
        caveats.append("the shallow net never left chance level: at lr 1e-2 it diverges to one prediction for "
                       "every image (docs/experiments.md), an optimisation failure rather than the paper's lack "
                       "of depth")
    paper_no_fc = PAPER_TABLE3["alexnet"][NO_FC][1] - PAPER_TABLE3["alexnet"]["base"][1]
    if no_fc < 0:
        caveats.append(f"removing fc6 and fc7 lowers the error here ({100 * no_fc:+.1f} points) where the paper's "
                       f"rose ({paper_no_fc:+.1f})")
    return {"finding": FINDINGS["ablation"], "criterion": CRITERIA["ablation"], "verdict": verdict,
            "holds": verdict == "holds",
            "margin": {"difference": shallow - no_fc, "low": test.get("low"), "high": test.get("high"),
                       "p_value": p, "units": test.get("images_differing")},
            "evidence": [text], "caveats": caveats, "base_val_top1_error": base,
            "val_top1_error_increase": {SHALLOW: shallow, NO_FC: no_fc}}


def _points(x: float) -> str:
    return f"{100 * x:+.1f}"


def _measured(key: str, f: dict[str, Any]) -> str:
    if key == "transfer":
        return "; ".join(f"{n}/class: {100 * f['pretrained'][n]:.1f}% vs {100 * f['scratch'][n]:.1f}% "
                         f"({_points(m['difference'])} points, p = {m['p_value']:.2g})"
                         for n, m in f["margin"].items())
    if key == "depth":
        return ", ".join(f"{kind} {f['rank_correlation'][kind]:+.2f} (mean over splits "
                         f"{m['difference']:+.2f}, p = {m['p_value']:.2g})" for kind, m in f["margin"].items())
    inc, m = f["val_top1_error_increase"], f["margin"]
    p = f", p = {m['p_value']:.2g}" if m["p_value"] is not None else ""
    return (f"val top-1 error vs base: {_points(inc[SHALLOW])} points vs {_points(inc[NO_FC])} points "
            f"(margin {_points(m['difference'])}{p})")


def _report(findings: dict[str, Any], seconds: dict[str, float]) -> Report:
    rows = [[f["finding"], _measured(key, f), f["verdict"], f["criterion"], "; ".join(f["caveats"])]
            for key, f in findings.items()]
    sentences = []
    for key, f in findings.items():
        sentence = f"{f['finding'][0].upper()}{f['finding'][1:]}: {f['verdict']} ({_measured(key, f)})"
        sentences.append(sentence + (f"; caveat: {'; '.join(f['caveats'])}." if f["caveats"] else "."))
    summary = ("The paper's §5 findings, weighed in miniature on the synthetic data set. " + " ".join(sentences)
               + f" The whole study took {seconds['total'] / 60:.1f} minutes; the ablation, transfer and probe "
               "pages give the tables beside the paper's.")
    return Report("The findings in miniature", summary, tables=[
        Table("Each finding, what was measured, the verdict of the tests and its caveats",
              ["finding", "measured", "verdict", "criterion", "caveats"], rows)])


def run(config: Config, out: str | Path, *, loaded: None = None, show_progress: bool = True) -> Result:
    """Run the miniature of §5 (module docstring) into ``out`` and weigh the evidence for the three findings.

    Args:
        config: the options.
        out: the study's folder (new, empty, or an earlier miniature study's, which is resumed).
        loaded: not used: the study trains its own models (an experiment's common signature).
        show_progress: progress bars.

    Returns:
        A :class:`Result`; ``numbers`` is the content of ``out/miniature.json``.

    Raises:
        ZFNetError: a foreign non-empty ``out``.
    """
    out = Path(out)
    data_spec, abl_spec = config.spec("data"), config.spec("ablation")
    sec_spec, tr_spec = config.spec("secondary"), config.spec("transfer")
    ours = ("primary", "ablation", "secondary", "transfer", "miniature.json")
    if folder_entries(out) and not any((out / name).exists() for name in ours):
        raise ZFNetError(f"{out} is not empty and holds no miniature study; give a new or empty folder")
    out.mkdir(parents=True, exist_ok=True)
    seconds: dict[str, float] = {}
    t0 = time.perf_counter()

    def timed(name: str, fn):
        start = time.perf_counter()
        log.info("miniature: %s", name)
        value = fn()
        seconds[name] = round(time.perf_counter() - start, 2)
        return value

    seed = config.seed
    primary = timed("primary data", lambda: _data(out / "primary", data_spec, "primary", seed, show_progress))
    abl_config = ablation.Config(data=str(primary), seed=seed, workers=config.workers, **abl_spec)
    abl = timed("ablation", lambda: ablation.run(abl_config, out / "ablation", show_progress=show_progress))
    sec = timed("secondary data", lambda: _data(out / "secondary", sec_spec, "secondary", seed, show_progress))
    tr_config = transfer.Config(run=str(out / "ablation" / "runs" / "base"), data=str(sec),
                                per_class=tuple(tr_spec["per_class"]), splits=tr_spec["splits"], seed=seed,
                                scratch_steps=tr_spec["scratch_steps"], workers=config.workers)
    study = timed("transfer and probes", lambda: transfer.transfer_study(
        tr_config, out / "transfer", probe_per_class=tr_spec["probe_per_class"], show_progress=show_progress))
    seconds["total"] = round(time.perf_counter() - t0, 2)
    findings = {"transfer": _transfer_finding(study.transfer.numbers),
                "depth": _depth_finding(study.probes.numbers),
                "ablation": _ablation_finding(abl, data_spec["classes"],
                                              data_spec["classes"] * data_spec["val_per_class"])}
    numbers = {"kind": NAME, "seed": seed, "data": data_spec,
               "ablation": {k: (list(v) if isinstance(v, tuple) else v) for k, v in abl_spec.items()},
               "secondary": sec_spec, "transfer": {k: (list(v) if isinstance(v, tuple) else v)
                                                   for k, v in tr_spec.items()},
               "findings": findings, "seconds": seconds}
    report = _report(findings, seconds)
    files = write_results(out, NAME, numbers, report)
    files["config"] = write_config(out, NAME, config)
    numbers["report"] = report.to_json()
    return Result(out, numbers, files)
