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

Every file is read through :mod:`zfnet.report._inputs` (inside the folder it was found in, symbolic links
resolved; a size cap; non-finite numbers made ``None``), and every result remembers that folder as its
``source``, so the figures it names are held to the same folder. Values of the wrong type are left out
here, each with a warning naming the file and the key, so the pages never meet them.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import ZFNetError
from ._inputs import MAX_JSON_BYTES, Notes, Refused, inside, parse_json, printable, read_input, read_json

__all__ = ["Run", "Visualization", "Evaluation", "Analysis", "Sources", "discover", "ANALYSIS_ORDER"]

log = logging.getLogger("zfnet")

ANALYSIS_ORDER = ("occlusion", "invariance", "correspondence", "architectures", "ablation", "ensemble",
                  "transfer", "probes")
"""The order of the analysis pages; kinds not listed follow, alphabetically."""

# How much of one file is shown. A results file may hold far more than any of zfnet's (a 64 MiB JSON of empty
# rows, each padded to the widest); beyond these the rest is left out, with a warning, so that the pages stay
# in proportion to what a person can read.
MAX_LAYERS = 100       # layers of one visualize index
MAX_MAPS = 2048        # feature maps of one layer (the widest zoo conv layers have 2048)
MAX_TOP = 1000         # top activations listed per map (k is 9 in the paper)
MAX_FIGURES = 500      # figures of one analysis
MAX_TABLES = 50        # tables of one analysis
MAX_ROWS = 5000        # rows of one table (and models of one evaluation)
MAX_COLUMNS = 100      # columns of one table
MAX_EPOCHS = 100_000   # lines of one metrics.jsonl

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
    source: Path  # the results folder it was found in: nothing outside it is read

    @property
    def model(self) -> str:
        return str(self.config.get("model", "?"))


@dataclass
class Visualization:
    """The output of ``zfnet visualize``: its ``index.json`` and the folder its paths are relative to."""

    root: Path
    label: str
    index: dict[str, Any]  # checked by :func:`_visualization`: its layers, figures and per-map lists typed
    source: Path

    @property
    def layers(self) -> dict[str, dict[str, dict[str, Any]]]:
        return self.index["layers"]

    @property
    def figures(self) -> dict[str, str]:
        return self.index["figures"]


@dataclass
class Evaluation:
    """Top-1 / top-5 errors of models and ensembles, as ``zfnet evaluate --json`` and the demo write them."""

    path: Path
    results: list[dict[str, Any]]
    ten_crop: bool | None
    source: Path


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
    source: Path

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


def _read_json(path: Path, source: Path) -> Any:
    """A found JSON file's content, or None (with a warning) when it may not or cannot be read."""
    try:
        return read_json(path, source)
    except Refused as err:
        log.warning("report: skipped: %s", err)
        return None


_METRIC_NUMBERS = ("epoch", "train_loss", "train_top1_error", "val_top1_error", "val_top5_error", "lr", "seconds")


def _read_metrics(path: Path, source: Path) -> list[dict[str, Any]]:
    notes = Notes(path)
    try:
        text = read_input(path, source, limit=MAX_JSON_BYTES).decode("utf-8")
    except (Refused, UnicodeDecodeError) as err:
        log.warning("report: skipped: %s", err if isinstance(err, Refused) else printable(f"{path} is not UTF-8"))
        return []
    rows = []
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        if len(rows) == MAX_EPOCHS:
            notes.add(f"lines after line {number - 1}, beyond {MAX_EPOCHS} epochs")
            break
        try:
            row = parse_json(line, str(path), notes, at=f"line {number} ")
        except Refused:
            notes.add(f"line {number} (not JSON)")
            continue
        if not isinstance(row, dict):
            continue
        for key in _METRIC_NUMBERS:
            if key in row:
                row[key] = _typed(row, key, int if key == "epoch" else (int, float), notes, at=f"line {number} ")
        rows.append(row)
    notes.warn()
    return rows


def _is_data_set(folder: Path) -> bool:
    return (folder / "annotations.json").is_file() or ((folder / "train").is_dir() and (folder / "val").is_dir())


def _is_run(folder: Path) -> bool:
    return (folder / "config.json").is_file() and (folder / "classes.json").is_file()


def _read_run(folder: Path, source: Path) -> Run | None:
    config = _read_json(folder / "config.json", source)
    classes = _read_json(folder / "classes.json", source)
    if not isinstance(config, dict) or not isinstance(classes, dict) or not isinstance(classes.get("classes"), list):
        log.warning("report: skipping %s: its config.json or classes.json is not a run's", printable(folder))
        return None
    notes = Notes(folder / "config.json")
    config = {**config, "model_options": _typed(config, "model_options", dict, notes, {}),
              "epochs": _typed(config, "epochs", int, notes)}
    notes.warn()
    notes = Notes(folder / "classes.json")
    ids = [str(c) for c in classes["classes"]]
    names = _typed(classes, "names", list, notes)
    if names is not None and len(names) != len(ids):
        notes.add(f"names has {len(names)} entries for {len(ids)} classes")
        names = None
    notes.warn()
    snapshots_dir = folder / "snapshots"
    snapshots = sorted(int(p.stem[6:]) for p in snapshots_dir.glob("epoch-*.safetensors")
                       if p.stem[6:].isascii() and p.stem[6:].isdigit() and len(p.stem) < 16) \
        if snapshots_dir.is_dir() and inside(snapshots_dir.resolve(), source) else []
    metrics = _read_metrics(folder / "metrics.jsonl", source) if (folder / "metrics.jsonl").is_file() else []
    return Run(folder, folder.name, config, ids, [str(n) for n in names] if names is not None else ids, metrics,
               snapshots, source)


_JSON_TYPES = {dict: "an object", list: "a list", str: "a string", int: "an integer", float: "a number",
               bool: "true or false", type(None): "null"}


def _type_name(value: Any) -> str:
    return _JSON_TYPES.get(type(value), type(value).__name__)


def _typed(data: dict[str, Any], key: str, kind: type | tuple[type, ...], notes: Notes, default: Any = None, *,
           at: str = "") -> Any:
    """``data[key]`` if it is of ``kind`` (true and false are not numbers), else ``default``, noting a wrong type.

    A missing key or ``null`` is ``default`` without a note.
    """
    value = data.get(key)
    if value is None:
        return default
    kinds = kind if isinstance(kind, tuple) else (kind,)
    if isinstance(value, kinds) and not (isinstance(value, bool) and bool not in kinds):
        return value
    wanted = " or ".join(dict.fromkeys(_JSON_TYPES[k] for k in kinds))
    notes.add(f"{at}{key} is {_type_name(value)}, not {wanted}")
    return default


def _capped(items: list[Any], limit: int, notes: Notes, what: str) -> list[Any]:
    """The first ``limit`` items, noting how many more there were."""
    if len(items) > limit:
        notes.add(f"{len(items) - limit} {what} beyond the first {limit}")
        return items[:limit]
    return items


def _str(value: Any, default: str = "") -> str:
    return value if isinstance(value, str) else default


_FIGURE_TEXT = ("path", "figure", "caption", "image")


def _analysis(path: Path, data: dict[str, Any], source: Path) -> Analysis | None:
    block = data["report"]
    kind = _str(data.get("kind")).strip()
    if not kind:
        log.warning("report: skipping %s: its kind is empty", printable(path))
        return None
    notes = Notes(path)
    figures = []
    for i, f in enumerate(_capped(_typed(block, "figures", list, notes, [], at="report."), MAX_FIGURES, notes,
                                  "report.figures")):
        if not isinstance(f, dict):
            notes.add(f"report.figures[{i}] is {_type_name(f)}, not an object")
            continue
        figure = {key: _typed(f, key, str, notes, at=f"report.figures[{i}].") for key in _FIGURE_TEXT}
        figure["label"] = _typed(f, "label", (str, int, float), notes, at=f"report.figures[{i}].")
        figures.append(figure)
    tables = []
    for i, t in enumerate(_capped(_typed(block, "tables", list, notes, [], at="report."), MAX_TABLES, notes,
                                  "report.tables")):
        if not isinstance(t, dict):
            notes.add(f"report.tables[{i}] is {_type_name(t)}, not an object")
            continue
        at = f"report.tables[{i}]."
        tables.append(_bounded_table(_typed(t, "caption", (str, int, float), notes, "", at=at),
                                     _typed(t, "columns", list, notes, [], at=at),
                                     _typed(t, "rows", list, notes, [], at=at), notes, at))
    title = _typed(block, "title", str, notes, kind.capitalize(), at="report.")
    summary = _typed(block, "summary", str, notes, "", at="report.")
    notes.warn()
    return Analysis(path, kind, title, summary, figures, tables, source)


def _bounded_table(caption: Any, columns: list[Any], rows: list[Any], notes: Notes, at: str) -> dict[str, Any]:
    """A table of at most :data:`MAX_ROWS` rows and :data:`MAX_COLUMNS` columns."""
    rows = _capped(rows, MAX_ROWS, notes, f"{at}rows")
    clipped = sum(isinstance(r, list) and len(r) > MAX_COLUMNS for r in rows)
    if clipped or len(columns) > MAX_COLUMNS:
        notes.add(f"{at}columns beyond the first {MAX_COLUMNS}")
    return {"caption": caption, "columns": columns[:MAX_COLUMNS],
            "rows": [r[:MAX_COLUMNS] if isinstance(r, list) else r for r in rows]}


def _architectures(path: Path, data: dict[str, Any], source: Path) -> Analysis:
    """``architectures.json`` of ``zfnet visualize --compare`` as a generic analysis."""
    notes = Notes(path)
    runs = _capped([r for r in data["runs"] if isinstance(r, dict)], MAX_ROWS, notes, "runs")
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
                       "rows": [[k, str(v)] for k, v in list(definitions.items())[:MAX_ROWS]]})
    figures = []
    png = _typed(data, "png", str, notes)
    notes.warn()
    if png:
        layer2 = _str(data.get("layer2"), "layer-2")
        figures.append({"path": png,
                        "caption": f"{names}: each model's layer-1 filters beside the strongest {layer2} "
                                   "projections, as in the paper's Fig. 6."})
    return Analysis(
        path, "architectures", f"Architectures: {names}",
        "The paper's Fig. 6 compares AlexNet's first two layers with ZFNet's: large 11x11 stride-4 filters leave "
        "many layer-1 filters dead and alias the layer-2 features. Smaller 7x7 stride-2 filters should show fewer "
        "dead filters and less high-frequency energy.",
        figures, tables, source)


_MAP_LISTS = ("image_ids", "positions", "values", "labels", "classes")
_MAP_FILES = ("png", "projections_png", "patches_png", "evolution_png")


def _visualization(path: Path, data: dict[str, Any], source: Path) -> Visualization:
    """A visualize ``index.json`` with every value the pages use of the type they expect."""
    notes = Notes(path)
    layers: dict[str, dict[str, dict[str, Any]]] = {}
    for layer, maps in _capped(list(data["layers"].items()), MAX_LAYERS, notes, "layers"):
        if not isinstance(maps, dict):
            notes.add(f"layers.{layer} is {_type_name(maps)}, not an object")
            continue
        entries = {}
        for key, entry in _capped(list(maps.items()), MAX_MAPS, notes, f"maps of layers.{layer}"):
            at = f"layers.{layer}.{key}."
            if not isinstance(entry, dict):
                notes.add(f"{at[:-1]} is {_type_name(entry)}, not an object")
                entry = {}
            lists = {k: _typed(entry, k, list, notes, at=at) for k in _MAP_LISTS}
            entries[key] = {**entry, **{k: v if v is None else _capped(v, MAX_TOP, notes, f"{at}{k}")
                                        for k, v in lists.items()},
                            **{k: _typed(entry, k, str, notes, at=at) for k in _MAP_FILES}}
        layers[layer] = entries
    figures = {}
    for name, rel in _typed(data, "figures", dict, notes, {}).items():
        if isinstance(rel, str):
            figures[name] = rel
        else:
            notes.add(f"figures.{name} is {_type_name(rel)}, not a string")
    snapshots = [s for s in _typed(data, "snapshots", list, notes, []) if isinstance(s, int)]
    index = {**data, "layers": layers, "figures": figures, "snapshots": snapshots,
             "k": _typed(data, "k", int, notes, 9), "images": _typed(data, "images", int, notes),
             "split": _typed(data, "split", str, notes), "weights": _typed(data, "weights", (str, int), notes)}
    run = _typed(data, "run", str, notes)
    notes.warn()
    return Visualization(path.parent, Path(run or path.parent.name).name or path.parent.name, index, source)


_EVALUATION_NUMBERS = ("top1_error", "top5_error", "ten_crop_top1_error", "ten_crop_top5_error")


def _evaluation(path: Path, data: dict[str, Any], source: Path) -> Evaluation:
    notes = Notes(path)
    results = []
    for i, r in enumerate(_capped(data["results"], MAX_ROWS, notes, "results")):
        results.append({**r, **{k: _typed(r, k, (int, float), notes, at=f"results[{i}].")
                                for k in _EVALUATION_NUMBERS if k in r}})
    ten = _typed(data, "ten_crop", bool, notes)
    notes.warn()
    return Evaluation(path, results, ten, source)


def _classify_json(path: Path, found: Sources, source: Path, *, strict: bool = False) -> bool:
    """Read one JSON file into ``found`` if it is an analysis, an evaluation or a visualize index.

    With ``strict`` (a file named as a source) a file that may not be read raises :class:`Refused`.
    """
    data = read_json(path, source) if strict else _read_json(path, source)
    if not isinstance(data, dict):
        return False
    if isinstance(data.get("kind"), str) and isinstance(data.get("report"), dict):
        analysis = _analysis(path, data, source)
        if analysis is not None:
            found.analyses.append(analysis)
        return analysis is not None
    if path.name == "architectures.json" and isinstance(data.get("runs"), list):
        found.analyses.append(_architectures(path, data, source))
        return True
    if path.name == "index.json" and isinstance(data.get("layers"), dict):
        found.visualizations.append(_visualization(path, data, source))
        return True
    results = data.get("results")
    if isinstance(results, list) and results and all(isinstance(r, dict) and "top1_error" in r for r in results):
        found.evaluations.append(_evaluation(path, data, source))
        return True
    return False


def discover(sources: list[Path], *, exclude: Path | None = None) -> Sources:
    """Find every saved result in ``sources`` (folders or JSON files), walking folders a few levels down.

    Only files inside each source folder are read (a symbolic link that leads out of it is skipped with
    a warning), each through :mod:`zfnet.report._inputs`.

    Args:
        sources: demo folders, run directories, visualize and analysis output folders, or JSON files.
        exclude: a folder not to enter (the report's own output).

    Returns:
        What was found; labels of runs and visualizations are made unique.

    Raises:
        ZFNetError: a source does not exist, a JSON file named as a source may not be read (too large, not
            JSON), or nothing was found in any of them.
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
            if resolved not in seen and not _classify_json(resolved, found, resolved.parent, strict=True):
                raise ZFNetError(f"{source} is not a zfnet result (an evaluation, a visualize index.json or an "
                                 "analysis JSON with a kind and a report block)")
            seen.add(resolved)
            continue
        if exclude is not None and inside(resolved, exclude):
            raise ZFNetError(f"source {source} is the report's output folder or inside it; choose another --out")
        stack = [(resolved, 0)]
        while stack:
            folder, depth = stack.pop()
            if folder in seen or (exclude is not None and inside(folder, exclude)):
                continue
            seen.add(folder)
            folders += 1
            if folders > _MAX_FOLDERS:
                raise ZFNetError(f"{source} holds more than {_MAX_FOLDERS} folders: give the report the result "
                                 "folders themselves (a demo folder, runs, visualize or analysis output)")
            if _is_run(folder):
                run = _read_run(folder, resolved)
                if run is not None:
                    found.runs.append(run)
            try:
                entries = sorted(os.scandir(folder), key=lambda e: e.name)
            except OSError as err:
                log.warning("report: skipping %s: %s", printable(folder), err.strerror)
                continue
            for entry in entries:
                if entry.name.startswith("."):
                    continue
                path = Path(entry.path)
                try:
                    is_json = entry.name.endswith(".json") and entry.name not in ("config.json", "classes.json") \
                        and entry.is_file()
                    is_dir = not is_json and depth < _MAX_DEPTH and entry.name not in _SKIPPED_FOLDERS \
                        and entry.is_dir()
                    if not (is_json or is_dir):
                        continue
                    target = path.resolve()
                except (OSError, RuntimeError) as err:  # a symbolic link loop
                    log.warning("report: skipping %s: %s", printable(path), err.strerror if isinstance(err, OSError)
                                else "a symbolic link loop")
                    continue
                if not inside(target, resolved):  # a symbolic link that leads out of the results folder
                    log.warning("report: skipping %s: a symbolic link to outside %s", printable(path),
                                printable(source))
                elif is_json and target not in seen:
                    seen.add(target)
                    _classify_json(path, found, resolved)
                elif is_dir and not _is_data_set(target):
                    stack.append((target, depth + 1))
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
