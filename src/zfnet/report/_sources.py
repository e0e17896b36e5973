"""Finding and reading saved results: run directories, visualize output, evaluations and analyses.

Every command of zfnet leaves JSON behind; the report reads only that JSON (and the PNGs it names), so
rebuilding a report never recomputes anything. :func:`discover` walks the folders it is given and sorts
what it finds into a :class:`Sources`:

- a run directory (``config.json``, ``classes.json``, ``metrics.jsonl``) of ``zfnet train``;
- a visualize folder (``index.json`` with ``layers``) of ``zfnet visualize``, and its
  ``architectures.json`` when made with ``--compare``;
- an evaluation (``evaluation.json`` of the demo, or ``zfnet evaluate --json``): ``{"results": [...]}``;
- an analysis: any ``*.json`` with a ``"kind"`` and a ``"report"`` block ``{"title", "summary",
  "figures", "tables"}``, which the report renders without knowing the analysis.

Data sets (folders with ``train/`` and ``val/``), weight snapshots and hidden folders are not entered.
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import ZFNetError

__all__ = ["Run", "Visualization", "Evaluation", "Analysis", "Sources", "discover", "ANALYSIS_ORDER"]

log = logging.getLogger("zfnet")

ANALYSIS_ORDER = ("occlusion", "invariance", "correspondence", "architectures", "ablation", "ensemble",
                  "transfer", "probes")
"""The order of the analysis pages; kinds not listed follow, alphabetically."""

_MAX_DEPTH = 4  # a demo folder holds results at most three levels down (demo/analysis/occlusion/x.json)
_MAX_FOLDERS = 5000  # a walk that reaches this many folders was given the wrong folder (a home, a disk)
_SKIPPED_FOLDERS = {"snapshots", "__pycache__", "node_modules"}


@dataclass
class Run:
    """A training run: its configuration, classes and per-epoch metrics."""

    root: Path
    label: str
    config: dict[str, Any]
    classes: list[str]
    class_names: list[str]
    metrics: list[dict[str, Any]]
    snapshots: list[int]

    @property
    def model(self) -> str:
        return str(self.config.get("model", "?"))


@dataclass
class Visualization:
    """The output of ``zfnet visualize``: its ``index.json`` and the folder its paths are relative to."""

    root: Path
    label: str
    index: dict[str, Any]

    @property
    def layers(self) -> dict[str, dict[str, Any]]:
        layers = self.index.get("layers")
        return layers if isinstance(layers, dict) else {}

    @property
    def figures(self) -> dict[str, str]:
        figures = self.index.get("figures")
        return figures if isinstance(figures, dict) else {}


@dataclass
class Evaluation:
    """Top-1 / top-5 errors of models and ensembles, as ``zfnet evaluate --json`` and the demo write them."""

    path: Path
    results: list[dict[str, Any]]
    ten_crop: bool | None = None


@dataclass
class Analysis:
    """An analysis result rendered generically: its kind and its ``report`` block.

    Figure paths are resolved against the folder of the JSON file.
    """

    path: Path
    kind: str
    title: str
    summary: str
    figures: list[dict[str, Any]]
    tables: list[dict[str, Any]]

    @property
    def root(self) -> Path:
        return self.path.parent


@dataclass
class Sources:
    """Everything found in the folders given to the report."""

    runs: list[Run] = field(default_factory=list)
    visualizations: list[Visualization] = field(default_factory=list)
    evaluations: list[Evaluation] = field(default_factory=list)
    analyses: list[Analysis] = field(default_factory=list)

    def empty(self) -> bool:
        return not (self.runs or self.visualizations or self.evaluations or self.analyses)

    def analysis_kinds(self) -> list[str]:
        """The kinds of analyses present, in report order."""
        kinds = {a.kind for a in self.analyses}
        known = [k for k in ANALYSIS_ORDER if k in kinds]
        return known + sorted(kinds - set(ANALYSIS_ORDER))


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as err:
        log.warning("skipping %s: not readable JSON (%s)", path, err)
        return None


def _read_metrics(path: Path) -> list[dict[str, Any]]:
    rows = []
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as err:
        log.warning("skipping %s: %s", path, err)
        return []
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except ValueError:
            log.warning("%s line %d is not JSON; skipped", path, number)
            continue
        if isinstance(row, dict):
            rows.append(row)
    return rows


def _is_data_set(folder: Path) -> bool:
    return (folder / "annotations.json").is_file() or ((folder / "train").is_dir() and (folder / "val").is_dir())


def _is_run(folder: Path) -> bool:
    return (folder / "config.json").is_file() and (folder / "classes.json").is_file()


def _read_run(folder: Path) -> Run | None:
    config = _read_json(folder / "config.json")
    classes = _read_json(folder / "classes.json")
    if not isinstance(config, dict) or not isinstance(classes, dict) or not isinstance(classes.get("classes"), list):
        log.warning("skipping %s: its config.json or classes.json is not a run's", folder)
        return None
    names = classes.get("names", classes["classes"])
    snapshots = sorted(int(p.stem[6:]) for p in (folder / "snapshots").glob("epoch-*.safetensors")
                       if p.stem[6:].isdigit())
    metrics = _read_metrics(folder / "metrics.jsonl") if (folder / "metrics.jsonl").is_file() else []
    return Run(folder, folder.name, config, [str(c) for c in classes["classes"]], [str(c) for c in names],
               metrics, snapshots)


def _str(value: Any, default: str = "") -> str:
    return value if isinstance(value, str) else default


def _analysis(path: Path, data: dict[str, Any]) -> Analysis | None:
    block = data["report"]
    figures = [f for f in block.get("figures", []) or [] if isinstance(f, dict)]
    tables = [t for t in block.get("tables", []) or [] if isinstance(t, dict)]
    kind = _str(data.get("kind")).strip()
    if not kind:
        log.warning("skipping %s: its kind is empty", path)
        return None
    return Analysis(path, kind, _str(block.get("title"), kind.capitalize()), _str(block.get("summary")),
                    figures, tables)


def _architectures(path: Path, data: dict[str, Any]) -> Analysis:
    """``architectures.json`` of ``zfnet visualize --compare`` as a generic analysis."""
    runs = [r for r in data.get("runs", []) if isinstance(r, dict)]
    definitions = data.get("definitions", {}) if isinstance(data.get("definitions"), dict) else {}
    names = " vs ".join(str(r.get("model", "?")) for r in runs) or "two runs"
    def stride(r: dict[str, Any]) -> str | None:
        value = r.get("conv1_stride")
        return "×".join(str(v) for v in value) if isinstance(value, list) else None

    rows = [[str(r.get("model", "?")), stride(r), r.get("dead_fraction"), r.get("aliasing"),
             Path(str(r.get("run", ""))).name] for r in runs]
    tables = [{"caption": "Layer-1 filters: the fraction that are dead and their high-frequency energy (aliasing).",
               "columns": ["model", "conv1 stride", "dead filters (fraction)", "aliasing", "run"], "rows": rows}]
    if definitions:
        tables.append({"caption": "How the two numbers are measured.", "columns": ["quantity", "definition"],
                       "rows": [[k, str(v)] for k, v in definitions.items()]})
    figures = []
    if isinstance(data.get("png"), str):
        layer2 = _str(data.get("layer2"), "layer-2")
        figures.append({"path": data["png"],
                        "caption": f"{names}: each model's layer-1 filters beside the strongest {layer2} "
                                   "projections, as in the paper's Fig. 6."})
    return Analysis(
        path, "architectures", f"Architectures: {names}",
        "The paper's Fig. 6 compares AlexNet's first two layers with ZFNet's: large 11x11 stride-4 filters leave "
        "many layer-1 filters dead and alias the layer-2 features. Smaller 7x7 stride-2 filters should show fewer "
        "dead filters and less high-frequency energy.",
        figures, tables)


def _classify_json(path: Path, found: Sources) -> bool:
    """Read one JSON file into ``found`` if it is an analysis, an evaluation or a visualize index."""
    data = _read_json(path)
    if not isinstance(data, dict):
        return False
    if isinstance(data.get("kind"), str) and isinstance(data.get("report"), dict):
        analysis = _analysis(path, data)
        if analysis is not None:
            found.analyses.append(analysis)
        return analysis is not None
    if path.name == "architectures.json" and isinstance(data.get("runs"), list):
        found.analyses.append(_architectures(path, data))
        return True
    if path.name == "index.json" and isinstance(data.get("layers"), dict):
        found.visualizations.append(Visualization(path.parent, Path(_str(data.get("run"), path.parent.name)).name,
                                                  data))
        return True
    results = data.get("results")
    if isinstance(results, list) and results and all(isinstance(r, dict) and "top1_error" in r for r in results):
        ten = data.get("ten_crop")
        found.evaluations.append(Evaluation(path, results, ten if isinstance(ten, bool) else None))
        return True
    return False


def _inside(path: Path, folder: Path) -> bool:
    return path == folder or folder in path.parents


def discover(sources: list[Path], *, exclude: Path | None = None) -> Sources:
    """Find every saved result in ``sources`` (folders or JSON files), walking folders a few levels down.

    Args:
        sources: demo folders, run directories, visualize and analysis output folders, or JSON files.
        exclude: a folder not to enter (the report's own output).

    Returns:
        What was found; labels of runs and visualizations are made unique.

    Raises:
        ZFNetError: a source does not exist, or nothing was found in any of them.
    """
    found = Sources()
    seen: set[Path] = set()
    exclude = exclude.resolve() if exclude is not None else None
    folders = 0
    for source in sources:
        source = Path(source)
        if not source.exists():
            raise ZFNetError(f"{source} does not exist")
        resolved = source.resolve()
        if source.is_file():
            if resolved not in seen and not _classify_json(resolved, found):
                raise ZFNetError(f"{source} is not a zfnet result (an evaluation, a visualize index.json or an "
                                 "analysis JSON with a kind and a report block)")
            seen.add(resolved)
            continue
        if exclude is not None and _inside(resolved, exclude):
            raise ZFNetError(f"source {source} is the report's output folder or inside it; choose another --out")
        stack = [(resolved, 0)]
        while stack:
            folder, depth = stack.pop()
            if folder in seen or (exclude is not None and _inside(folder, exclude)):
                continue
            seen.add(folder)
            folders += 1
            if folders > _MAX_FOLDERS:
                raise ZFNetError(f"{source} holds more than {_MAX_FOLDERS} folders: give the report the result "
                                 "folders themselves (a demo folder, runs, visualize or analysis output)")
            if _is_run(folder):
                run = _read_run(folder)
                if run is not None:
                    found.runs.append(run)
            try:
                entries = sorted(os.scandir(folder), key=lambda e: e.name)
            except OSError as err:
                log.warning("skipping %s: %s", folder, err.strerror)
                continue
            for entry in entries:
                if entry.name.startswith("."):
                    continue
                path = Path(entry.path)
                if entry.is_file() and entry.name.endswith(".json") and entry.name not in ("config.json",
                                                                                          "classes.json"):
                    if path not in seen:
                        seen.add(path)
                        _classify_json(path, found)
                elif entry.is_dir() and depth < _MAX_DEPTH and entry.name not in _SKIPPED_FOLDERS \
                        and not _is_data_set(path):
                    stack.append((path, depth + 1))
    if found.empty():
        raise ZFNetError(f"found no zfnet results in {', '.join(str(s) for s in sources)}: expected run "
                         "directories, visualize output (index.json) or analysis JSON files")
    found.runs.sort(key=lambda r: str(r.root))
    found.visualizations.sort(key=lambda v: str(v.root))
    found.evaluations.sort(key=lambda e: str(e.path))
    _unique_labels(found.runs)
    _unique_labels(found.visualizations)
    return found


def _unique_labels(items: list[Run] | list[Visualization]) -> None:
    """Give items sharing a label their folder's parent as a prefix, then a number."""
    counts: dict[str, int] = {}
    for item in items:
        counts[item.label] = counts.get(item.label, 0) + 1
    used: set[str] = set()
    for item in items:
        label = item.label
        if counts[label] > 1:
            label = f"{item.root.parent.name}/{item.root.name}" if isinstance(item, Run) else \
                f"{item.label} ({item.root.name})"
        base, n = label, 2
        while label in used:
            label, n = f"{base} {n}", n + 1
        used.add(label)
        item.label = label
