"""The paper's §5 findings in miniature, on the built-in synthetic data set, in one call.

:func:`miniature_study` runs, into one folder and resumably:

1. ``primary/``: the synthetic data set's primary classes (``MINIATURE_DATA``: 10 classes, 200 training
   and 50 validation images each, 73 px);
2. ``ablation/``: the paper's nine Table 3 variants of ``zfnet-tiny`` trained on it (``MINIATURE``);
3. ``secondary/``: the disjoint secondary classes (10 classes, 96 images each);
4. ``transfer/``: the ablation's ``base`` network, frozen, transferred to the secondary classes with 15 and
   30 images per class against the same network trained from scratch and an untrained one (Tables 4-5),
   and a linear probe on every layer (Table 7);

and then checks the three findings the paper reports and writes ``miniature.json`` (with a report
block), ``miniature.md`` and ``miniature.csv``:

- frozen pretrained features beat training from scratch on the same few images;
- probe accuracy rises with depth overall (rank correlation of accuracy with depth);
- removing conv3, conv4, fc6 and fc7 hurts far more than removing fc6 and fc7 alone.

Each part resumes what an interrupted call left (finished variants, splits and fits are not redone).
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

from .._io import folder_entries
from ..data.synthetic import write_synthetic
from ..errors import ZFNetError
from .ablation import MINIATURE, MINIATURE_DATA, ablation_study
from .transfer import ScratchRecipe, _write_outputs, transfer_study

__all__ = ["miniature_study", "MINIATURE_SECONDARY", "MINIATURE_TRANSFER", "FINDINGS", "CRITERIA"]

log = logging.getLogger("zfnet")

MINIATURE_SECONDARY: dict[str, Any] = {"classes": 10, "per_class": 80, "val_per_class": 16, "size": 73}
"""The secondary classes' data set (train/ and val/ are pooled by the transfer: 96 images per class)."""

MINIATURE_TRANSFER: dict[str, Any] = {"per_class": (15, 30), "splits": 5, "probe_per_class": 30,
                                      "scratch_steps": 300}
"""The transfer and probe protocol: training images per class, splits, and the from-scratch budget."""

FINDINGS = {
    "transfer": "frozen pretrained features beat training from scratch on the same few images",
    "depth": "probe accuracy rises with depth overall",
    "ablation": "removing conv3, conv4, fc6 and fc7 hurts far more than removing fc6 and fc7 alone",
}
"""The paper's three findings that the miniature checks, by key."""

CRITERIA = {
    "transfer": "at least 5 points of mean per-class accuracy at every number of images per class",
    "depth": "rank correlation of accuracy with depth at least +0.5, for the SVM and the softmax",
    "ablation": "the shallow net's validation top-1 error rises at least 5 points more than without fc6-7",
}
"""What "holds" means for each finding (margins well above the splits' spread and the validation noise)."""

SHALLOW, NO_FC = "no-conv3-4+no-fc6-7", "no-fc6-7"


def _data(path: Path, spec: dict[str, Any], class_set: str, seed: int, show_progress: bool) -> Path:
    if not (path / "annotations.json").is_file():
        write_synthetic(path, classes=spec["classes"], per_class=spec["per_class"],
                        val_per_class=spec["val_per_class"], size=spec["size"], seed=seed, class_set=class_set,
                        progress=show_progress, overwrite=True)  # overwrite: a set killed while written
    return path


def _findings(ablation, transfer: dict[str, Any], probes: dict[str, Any]) -> dict[str, Any]:
    ns = [str(n) for n in transfer["per_class"]]
    gaps = {n: transfer["pretrained"][n]["mean"] - transfer["scratch"][n]["mean"] for n in ns}
    trend = probes["depth_trend"]
    base = ablation.row("base").val_top1_error
    shallow = ablation.row(SHALLOW).val_top1_error - base
    no_fc = ablation.row(NO_FC).val_top1_error - base
    return {
        "transfer": {"finding": FINDINGS["transfer"], "criterion": CRITERIA["transfer"],
                     "holds": all(g >= 0.05 for g in gaps.values()),
                     "pretrained_minus_scratch": gaps,
                     "pretrained": {n: transfer["pretrained"][n]["mean"] for n in ns},
                     "scratch": {n: transfer["scratch"][n]["mean"] for n in ns}},
        "depth": {"finding": FINDINGS["depth"], "criterion": CRITERIA["depth"],
                  "holds": all(t >= 0.5 for t in trend.values()),
                  "rank_correlation": trend},
        "ablation": {"finding": FINDINGS["ablation"], "criterion": CRITERIA["ablation"],
                     "holds": shallow >= no_fc + 0.05,
                     "base_val_top1_error": base,
                     "val_top1_error_increase": {SHALLOW: shallow, NO_FC: no_fc}},
    }


def _pts(x: float) -> str:
    return f"{100 * x:+.1f}"


def _report(findings: dict[str, Any], seconds: dict[str, float]) -> dict[str, Any]:
    t, d, a = findings["transfer"], findings["depth"], findings["ablation"]
    gains = "; ".join(f"{n}/class: {100 * t['pretrained'][n]:.1f}% vs {100 * t['scratch'][n]:.1f}%"
                      for n in t["pretrained"])
    rows = [
        [FINDINGS["transfer"], gains, "yes" if t["holds"] else "no", CRITERIA["transfer"]],
        [FINDINGS["depth"], ", ".join(f"{k} {v:+.2f}" for k, v in d["rank_correlation"].items()),
         "yes" if d["holds"] else "no", CRITERIA["depth"]],
        [FINDINGS["ablation"], f"val top-1 error vs base: {_pts(a['val_top1_error_increase'][SHALLOW])} points "
                               f"vs {_pts(a['val_top1_error_increase'][NO_FC])} points",
         "yes" if a["holds"] else "no", CRITERIA["ablation"]],
    ]
    held = sum(f["holds"] for f in findings.values())
    summary = (f"The paper's §5 findings, checked in miniature on the synthetic data set: {held} of 3 hold. "
               f"The whole study took {seconds['total'] / 60:.1f} minutes; the ablation, transfer and probe "
               f"pages give the tables beside the paper's.")
    return {"title": "The findings in miniature", "summary": summary, "figures": [],
            "tables": [{"caption": "Each finding, what was measured, and whether it holds",
                        "columns": ["finding", "measured", "holds", "criterion"], "rows": rows}]}


def miniature_study(out: str | Path, *, seed: int = 0, data: dict[str, Any] | None = None,
                    ablation: dict[str, Any] | None = None, secondary: dict[str, Any] | None = None,
                    transfer: dict[str, Any] | None = None, workers: int | None = 0,
                    show_progress: bool = True) -> dict[str, Any]:
    """Run the miniature of §5 (module docstring) into ``out`` and check the paper's three findings.

    Args:
        out: the study's folder (new, empty, or an earlier miniature study's, which is resumed).
        seed: seed of the data sets, the trainings and the splits.
        data: overrides of ``MINIATURE_DATA`` (the primary classes' data set).
        ablation: overrides of ``MINIATURE`` (the ablation study's settings); its variants must include
            ``base``, ``no-fc6-7`` and ``no-conv3-4+no-fc6-7``.
        secondary: overrides of ``MINIATURE_SECONDARY``.
        transfer: overrides of ``MINIATURE_TRANSFER``.
        workers: image-loading processes of the ablation's trainings.
        show_progress: progress bars.

    Returns:
        The content of ``out/miniature.json``: ``findings`` (per finding, ``holds`` and the numbers),
        ``seconds`` per part, the settings, and a ``report`` block.
    """
    out = Path(out)
    data_spec = {**MINIATURE_DATA, **(data or {})}
    abl_spec = {**MINIATURE, **(ablation or {})}
    sec_spec = {**MINIATURE_SECONDARY, **(secondary or {})}
    tr_spec = {**MINIATURE_TRANSFER, **(transfer or {})}
    missing = {"base", NO_FC, SHALLOW} - set(abl_spec["variants"])
    if missing:
        raise ZFNetError(f"the miniature needs the ablation variants {', '.join(sorted(missing))}")
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

    primary = timed("primary data", lambda: _data(out / "primary", data_spec, "primary", seed, show_progress))
    abl = timed("ablation", lambda: ablation_study(primary, out / "ablation", seed=seed, workers=workers,
                                                    show_progress=show_progress, **abl_spec))
    sec = timed("secondary data", lambda: _data(out / "secondary", sec_spec, "secondary", seed, show_progress))
    study = timed("transfer and probes", lambda: transfer_study(
        out / "ablation" / "runs" / "base", sec, out / "transfer", per_class=tuple(tr_spec["per_class"]),
        splits=tr_spec["splits"], probe_per_class=tr_spec["probe_per_class"], seed=seed,
        recipe=ScratchRecipe(steps=tr_spec["scratch_steps"]), show_progress=show_progress))
    seconds["total"] = round(time.perf_counter() - t0, 2)
    findings = _findings(abl, study["transfer"], study["probes"])
    result = {"kind": "miniature", "seed": seed, "data": data_spec,
              "ablation": {k: (list(v) if isinstance(v, tuple) else v) for k, v in abl_spec.items()},
              "secondary": sec_spec, "transfer": {k: (list(v) if isinstance(v, tuple) else v)
                                                  for k, v in tr_spec.items()},
              "findings": findings, "seconds": seconds}
    result["report"] = _report(findings, seconds)
    _write_outputs(out, "miniature", result)
    return result
