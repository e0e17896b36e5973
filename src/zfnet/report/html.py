"""The report ("microscope"): a static site built from saved results, opened from the file system.

:func:`build_report` reads what zfnet's commands saved (run directories, ``zfnet visualize`` output,
evaluations and analysis JSON; see :mod:`zfnet.report._sources`) and writes into one folder:

- ``index.html``: the architecture of each run as the paper's Fig. 3, training curves, the error table,
  links to every layer and analysis page, each section explained in two sentences;
- ``layer-<layer>.html`` per visualised layer: every shown feature map under its own anchor
  (``#conv5-map-17``) with its top-k projections, image patches and evolution strip;
- ``<kind>.html`` per analysis kind (occlusion, invariance, correspondence, architectures, ablation,
  ensemble, transfer, probes, and any new kind), rendered from its ``report`` block;
- ``img/``: copies of every figure, named by content, so the folder can be moved or archived on its own;
  ``assets/``: the style sheet and the keyboard navigation script;
- ``report.json``: what was written, so that a rebuild removes its own stale files and nothing else.

Nothing is fetched from the network (no CDN, no remote fonts) and nothing is recomputed: the only figure
drawn here is the training curves, from ``metrics.jsonl``.

The results are data that may be hostile (docs/safety.md). Every file is read through
:mod:`zfnet.report._inputs`: only inside the results folder it was found in, size-capped, and a figure only
if its content is a PNG or JPEG image, whose checked bytes are what is copied. Every piece of text that
comes from data is escaped by the templates (Jinja2 with autoescaping; nothing is marked safe; control
characters replaced), every link, image source and id passes the ``link`` filter (the report's own pages,
images and anchors, named by slugs and content hashes, never a scheme or ``..``), and every file is written
inside ``out``, through no symbolic link.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import io
import json
import logging
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import jinja2
import markupsafe
from PIL import Image

from .._io import atomic_write, atomic_write_json, folder_entries, folder_lock
from ..errors import ZFNetError
from ..paper import PAPER_TABLE2
from ._architecture import architecture, diagram
from ._curves import training_curves_png
from ._inputs import Refused, inside, printable, read_json, read_raster
from ._sources import Analysis, Evaluation, Run, Sources, Visualization, discover

__all__ = ["build_report", "REPORT_FORMAT"]

log = logging.getLogger("zfnet")

REPORT_FORMAT = "zfnet-report"
MANIFEST = "report.json"

_RESERVED_PAGES = {"index", "report"}
_MAX_PAGES = 300     # layer and analysis pages in all; each lists every other one in its sidebar
_MAX_CLASSES = 2000  # class names shown per run (ImageNet has 1000)

# What each section of the overview means, two sentences each.
ABOUT = {
    "architecture": "Each network is drawn as the paper's Fig. 3 draws ZFNet: every layer with its filters, stride "
                    "and the size of the maps it outputs. The table lists every stage and its parameter count, "
                    "rebuilt from the run's saved configuration.",
    "training": "Top-1 error on the training images (dashed) and on the held-out validation images (solid) after "
                "every epoch, with the learning rate beside it. A gap that widens between the two is overfitting; "
                "a drop in the learning rate usually shows as a step down in both.",
    "errors": "Top-1 and top-5 error on the validation set, with a single centre crop and with the paper's ten "
              "crops (corners, centre and their mirror images, softmax averaged). An ensemble averages its "
              "members' softmax outputs, as in the paper's Table 2.",
    "features": "For a sample of feature maps in each layer, the deconvnet projects the nine strongest "
                "activations over the data set back to pixel space, beside the image patches that caused them "
                "(the paper's Fig. 2). The evolution strips show the strongest projection at each saved epoch "
                "(Fig. 4): lower layers settle within a few epochs, higher ones keep changing.",
    "analyses": "Each analysis below asks one of the paper's questions of the trained network and is explained on "
                "its own page. The figures and tables are read from the analyses' saved results, so rebuilding "
                "this report recomputes nothing.",
}

# The paper's Table 2 (ImageNet 2012 validation, error %), shown beside the measured errors for scale.
PAPER_TABLE_2 = {
    "caption": "The paper's Table 2 (ImageNet 2012 validation set, error %), for reference; the numbers above are "
               "measured on this report's own data set and are not comparable one to one.",
    "columns": ["model", "top-1 error (%)", "top-5 error (%)"],
    "rows": [[model, f"{top1:.1f}", f"{top5:.1f}"] for model, top1, top5, _ in PAPER_TABLE2],
    "numeric": [False, True, True],
}


def _slug(text: str) -> str:
    slug = re.sub(r"[^a-z0-9_]+", "-", str(text).lower()).strip("-")
    return slug or "x"


def _cell(value: Any) -> str:
    """A table cell as text: floats to four significant digits, None as a dash."""
    if value is None:
        return "—"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return f"{value:.4g}"
    if isinstance(value, str):
        return value
    return json.dumps(value, ensure_ascii=False)


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _percent(value: Any) -> str:
    return f"{100 * value:.1f}%" if _is_number(value) else "—"


def _table(caption: str, columns: Sequence[Any], rows: Sequence[Any]) -> dict[str, Any]:
    """A table ready for the template: every cell text, numeric columns marked (right-aligned)."""
    columns = [_cell(c) for c in columns]
    clean_rows = [list(r) if isinstance(r, (list, tuple)) else [r] for r in rows]
    width = max([len(columns), *(len(r) for r in clean_rows)]) if (columns or clean_rows) else 0
    numeric = [bool(clean_rows) and all(_is_number(r[i]) or r[i] is None for r in clean_rows if i < len(r))
               and any(i < len(r) and _is_number(r[i]) for r in clean_rows) for i in range(width)]
    text_rows = [[_cell(r[i]) if i < len(r) else "" for i in range(width)] for r in clean_rows]
    return {"caption": caption, "columns": columns + [""] * (width - len(columns)), "rows": text_rows,
            "numeric": numeric}


@dataclass
class _Site:
    """The report folder: writes files atomically, only inside itself, and remembers them for the manifest."""

    out: Path
    written: set[str] = field(default_factory=set)
    images: dict[tuple[str, Path], dict[str, Any] | None] = field(default_factory=dict)
    refused: dict[tuple[str, Path], str] = field(default_factory=dict)  # why a figure was left out

    def __post_init__(self) -> None:
        self.root = self.out.resolve()

    def _dest(self, rel: str) -> Path:
        """Where ``rel`` is written: inside ``out``, through no symbolic link (an ``img`` linked elsewhere)."""
        path = self.out / rel
        parent = path.parent
        parent.mkdir(parents=True, exist_ok=True)
        if parent.resolve() != self.root.joinpath(*Path(rel).parent.parts) or path.is_dir():
            raise ZFNetError(f"{path} leads out of --out {self.out} (a symbolic link?); the report writes only "
                             "inside its folder")
        return path

    def write_bytes(self, rel: str, data: bytes) -> str:
        path = self._dest(rel)
        if path.is_symlink() or not (path.is_file() and path.read_bytes() == data):
            atomic_write(path, lambda tmp: tmp.write_bytes(data))  # replaces a link itself, never its target
        self.written.add(rel)
        return rel

    def write_text(self, rel: str, text: str) -> str:
        return self.write_bytes(rel, text.encode("utf-8"))

    def image(self, path: Path, source: Path, named_in: Path) -> dict[str, Any] | None:
        """Copy a figure a result names into ``img/``, under a name made from its content.

        Every rule of :func:`~zfnet.report._inputs.read_raster` applies (inside the results folder
        ``source``, a PNG or JPEG by content, size caps); the bytes checked are the bytes written. A figure
        that breaks one is left out with a warning, and None returned.
        """
        key = (str(path), source)
        if key not in self.images:
            try:
                raster = read_raster(path, source, exclude=self.out)
            except Refused as err:
                log.warning("report: left out a figure named in %s: %s", printable(named_in), err)
                self.images[key] = None
                self.refused[key] = err.rule
            else:
                rel = f"img/{_slug(path.stem)[:60]}-{hashlib.sha256(raster.data).hexdigest()[:12]}{raster.extension}"
                self.write_bytes(rel, raster.data)
                self.images[key] = {"src": rel, "width": raster.width, "height": raster.height}
        return self.images[key]

    def image_bytes(self, name: str, data: bytes) -> dict[str, Any]:
        """Write a PNG drawn here into ``img/``, named by its content."""
        rel = self.write_bytes(f"img/{name}-{hashlib.sha256(data).hexdigest()[:12]}.png", data)
        with Image.open(io.BytesIO(data)) as img:
            width, height = img.size
        return {"src": rel, "width": width, "height": height}


def _prepare_out(out: Path) -> tuple[list[str], str | None]:
    """Check that ``out`` is new, empty or an earlier report's; return the files and the title that report had."""
    if out.exists() and not out.is_dir():
        raise ZFNetError(f"--out {out} is a file, not a folder")
    if not out.exists():
        return [], None
    manifest = out / MANIFEST
    if manifest.is_file():
        try:
            saved = read_json(manifest, out)
        except Refused:
            saved = None
        if isinstance(saved, dict) and saved.get("format") == REPORT_FORMAT and isinstance(saved.get("files"), list):
            title = saved.get("title")
            return ([f for f in saved["files"] if isinstance(f, str)],
                    title if isinstance(title, str) and 0 < len(title) <= 200 else None)
    if folder_entries(out):
        raise ZFNetError(f"--out {out} is not empty and holds no zfnet report; choose an empty or new folder")
    return [], None


def _remove_stale(out: Path, previous: list[str], written: set[str]) -> None:
    """Remove files the previous build wrote and this one did not; never anything outside ``out``.

    A listed name is removed only if its folder lies inside ``out`` (no ``..``, no symbolic link out) and it
    is a file or a link; a link is removed itself, never what it points to.
    """
    root = out.resolve()
    for rel in previous:
        if rel in written or rel == MANIFEST:
            continue
        path = out / rel
        try:
            parent = path.parent.resolve()
            if not inside(parent, root) or path.name in ("", ".", "..") or (path.is_dir() and not path.is_symlink()):
                continue
            if path.is_symlink() or path.is_file():
                path.unlink()
        except (OSError, RuntimeError, ValueError):  # gone already, a symlink loop, a NUL in a forged name
            continue


# Every href, src and id the templates fill in: a page, an image or an anchor of the report's own, named by
# this module (slugs and content hashes). Nothing read from the results can form one with a scheme
# ("javascript:"), a "/" at the start, "..", a query or a quote.
_LINK = re.compile(r"(?:(?:img|assets)/)?[a-z0-9_][a-z0-9_.-]*(?:#[a-z0-9_][a-z0-9_-]*)?")


def _link(value: str) -> str:
    """The ``link`` filter: ``value`` if it is one of the report's own links; a bug in this module otherwise."""
    if not isinstance(value, str) or not _LINK.fullmatch(value) or ".." in value:
        raise RuntimeError(f"zfnet report: refusing to write the link {value!r}: not one of the report's own")
    return value


_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")


def _finalize(value: Any) -> Any:
    """Every value a template prints, before escaping: control characters (a NUL, an escape) made visible.

    Markup (a macro's output, already escaped) passes as it is.
    """
    if isinstance(value, str) and not isinstance(value, markupsafe.Markup):
        return _CONTROL.sub("\ufffd", value)
    return value


def _environment() -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.PackageLoader("zfnet.report", "templates"),
        autoescape=True,  # every value from data is escaped; nothing is marked safe
        finalize=_finalize,
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters["link"] = _link
    env.filters["percent"] = _percent
    env.filters["thousands"] = lambda v: f"{v:,}" if _is_number(v) else "—"
    return env


def _asset(name: str) -> bytes:
    return resources.files("zfnet.report").joinpath("templates").joinpath(name).read_bytes()


# ---------------------------------------------------------------------------------------------- contents


def _run_summary(run: Run) -> dict[str, Any]:
    rows = [m for m in run.metrics if isinstance(m.get("epoch"), int)]
    val = [(m["val_top1_error"], m["epoch"]) for m in rows if _is_number(m.get("val_top1_error"))]
    best = min(val) if val else None
    last = rows[-1] if rows else {}
    seconds = sum(m["seconds"] for m in rows if _is_number(m.get("seconds")))
    summary: dict[str, Any] = {
        "label": run.label, "model": run.model, "classes": run.class_names[:_MAX_CLASSES],
        "class_count": len(run.class_names), "epochs": len(rows),
        "planned_epochs": run.config.get("epochs"), "best_top1": best[0] if best else None,
        "best_epoch": best[1] if best else None, "last_top1": last.get("val_top1_error"),
        "last_top5": last.get("val_top5_error"), "last_train_top1": last.get("train_top1_error"),
        "seconds": seconds, "snapshots": run.snapshots, "layers": [], "diagram": None, "parameters": None,
        "input_size": None, "error": None, "options": run.config.get("model_options") or {},
    }
    try:
        arch = architecture(run.config, num_classes=max(1, len(run.classes)))
        drawing = diagram(arch)
    except Exception as err:  # noqa: BLE001 - a crafted config.json can make a builder raise anything
        summary["error"] = printable(f"cannot rebuild model {run.model!r} from {run.root.name}/config.json: "
                                     f"{err or type(err).__name__}", 500)
        log.warning("report: %s", summary["error"])
        return summary
    summary.update(parameters=arch.parameters, input_size=arch.input_size, diagram=drawing, layers=[
        {"name": la.name, "parameters": la.parameters,
         "stages": [{"name": s.name, "operation": s.operation, "size": s.size, "parameters": s.parameters}
                    for s in la.stages]} for la in arch.layers])
    return summary


def _evaluation_table(ev: Evaluation, base: Path | None) -> dict[str, Any]:
    has_ten = any("ten_crop_top1_error" in r for r in ev.results)
    # the demo's evaluation holds both protocols; ``zfnet evaluate --json`` one, named by its ten_crop flag
    crops = "10 crops" if ev.ten_crop else "centre crop" if (ev.ten_crop is False or has_ten) else ""
    columns = ["model", f"top-1 error{f' ({crops})' if crops else ''}", f"top-5 error{f' ({crops})' if crops else ''}"]
    if has_ten:
        columns += ["top-1 error (10 crops)", "top-5 error (10 crops)"]
    columns.append("images")
    rows = []
    for r in ev.results:
        row = [str(r.get("name", "?")), _percent(r.get("top1_error")), _percent(r.get("top5_error"))]
        if has_ten:
            row += [_percent(r.get("ten_crop_top1_error")), _percent(r.get("ten_crop_top5_error"))]
        row.append(r.get("images"))
        rows.append(row)
    name = ev.path.name if base is None else os.path.relpath(ev.path, base)
    table = _table(f"Validation errors from {name}.", columns, rows)
    table["numeric"] = [False] + [True] * (len(columns) - 1)
    return table


@dataclass
class _LayerPage:
    vis: Visualization
    layer: str
    href: str
    maps: list[str]


def _number(key: str) -> int | None:
    """A map's number when its key is one (ASCII digits only: ``"²".isdigit()`` is true, ``int("²")`` fails)."""
    return int(key) if re.fullmatch(r"[0-9]{1,12}", key) else None


def _unique(name: str, taken: set[str]) -> str:
    """``name``, or ``name-2``, ``name-3`` ... if taken (two layers whose names slug alike)."""
    stem, n = name, 2
    while name in taken:
        name, n = f"{stem}-{n}", n + 1
    taken.add(name)
    return name


def _layer_pages(visualizations: list[Visualization]) -> list[list[_LayerPage]]:
    pages = []
    taken: set[str] = set()
    for vis in visualizations:
        prefix = "layer" if len(visualizations) == 1 else f"layer-{_slug(vis.label)}"
        group = []
        for layer, maps in vis.layers.items():
            keys = sorted(maps, key=lambda m: (0, _number(m), m) if _number(m) is not None else (1, 0, m))
            group.append(_LayerPage(vis, layer, f"{_unique(f'{prefix}-{_slug(layer)}', taken)}.html", keys))
        pages.append(group)
    return pages


def _map_anchors(layer: str, keys: list[str]) -> dict[str, str]:
    """Each map's anchor on its layer page (``conv5-map-17``), unique on the page."""
    taken: set[str] = set()
    return {key: _unique(f"{_slug(layer)}-map-{_number(key) if _number(key) is not None else _slug(key)}", taken)
            for key in keys}


def _analysis_pages(found: Sources) -> list[tuple[str, str, list[Analysis]]]:
    """(kind, href, analyses of that kind) in report order."""
    pages = []
    taken: set[str] = set()
    for kind in found.analysis_kinds():
        slug = _slug(kind)
        if slug in _RESERVED_PAGES or slug.startswith("layer-") or slug in taken:
            slug = f"analysis-{slug}"
        taken.add(slug)
        pages.append((kind, f"{slug}.html", [a for a in found.analyses if a.kind == kind]))
    return pages


def _within_page_limit(layer_groups: list[list[_LayerPage]], analysis_pages: list[tuple[str, str, list[Analysis]]]
                       ) -> tuple[list[list[_LayerPage]], list[tuple[str, str, list[Analysis]]]]:
    """At most :data:`_MAX_PAGES` pages, layers first; the rest left out with a warning."""
    total = sum(len(g) for g in layer_groups) + len(analysis_pages)
    if total <= _MAX_PAGES:
        return layer_groups, analysis_pages
    log.warning("report: the results call for %d pages; the %d after the first %d are left out", total,
                total - _MAX_PAGES, _MAX_PAGES)
    left, groups = _MAX_PAGES, []
    for group in layer_groups:
        groups.append(group[:left])
        left -= len(groups[-1])
    return groups, analysis_pages[:left]


def _page_name(kind: str, analyses: list[Analysis]) -> str:
    """An analysis page's name: its analysis's title, or the kind when several analyses share the page."""
    return analyses[0].title if len(analyses) == 1 else kind.capitalize()


def _figure(site: _Site, analysis: Analysis, entry: dict[str, Any]) -> dict[str, Any] | None:
    """A figure of an analysis ``report`` block: ``{"path", "caption"}`` or ``{"figure", "image", "label"}``."""
    rel = entry.get("path") or entry.get("figure")
    if not rel:
        return None
    path = analysis.root / rel
    img = site.image(path, analysis.source, analysis.path)
    label, image = entry.get("label"), entry.get("image")
    wide = bool(img and img["width"] > 640 and img["width"] > 1.6 * img["height"])
    return {"img": img, "missing": rel if img is None else None, "wide": wide, "caption": entry.get("caption") or "",
            "why": site.refused.get((str(path), analysis.source), "missing"),
            "label": _cell(label) if label is not None else None, "image": Path(image).name if image else None}


def _top_rows(entry: dict[str, Any]) -> list[dict[str, Any]]:
    ids = entry.get("image_ids") or []
    positions = entry.get("positions") or []
    values = entry.get("values") or []
    labels = entry.get("labels") or entry.get("classes") or []
    rows = []
    for i, image in enumerate(ids):
        pos = positions[i] if i < len(positions) else None
        rows.append({"rank": i + 1, "image": _cell(image),
                     "label": _cell(labels[i]) if i < len(labels) else None,
                     "position": ", ".join(_cell(p) for p in pos) if isinstance(pos, (list, tuple)) else _cell(pos),
                     "value": _cell(values[i]) if i < len(values) else "—"})
    return rows


def _image_of(site: _Site, vis: Visualization, rel: str | None) -> dict[str, Any] | None:
    return site.image(vis.root / rel, vis.source, vis.root / "index.json") if rel else None


def _layer_context(site: _Site, page: _LayerPage) -> dict[str, Any]:
    """A layer page: each map with its own PNGs where the index lists them, else the layer's figures once."""
    vis, layer = page.vis, page.layer
    figures = vis.figures
    k = vis.index.get("k", 9)
    entries = vis.layers[layer]

    def image(rel: Any) -> dict[str, Any] | None:
        return _image_of(site, vis, rel)

    anchors = _map_anchors(layer, page.maps)
    maps = [{"key": key, "anchor": anchors[key], "order": order + 1,
             "projections": image(entries[key].get("projections_png")),
             "patches": image(entries[key].get("patches_png")),
             "evolution": image(entries[key].get("evolution_png")), "rows": _top_rows(entries[key])}
            for order, key in enumerate(page.maps)]
    own_images = any(m["projections"] or m["patches"] for m in maps)
    own_evolution = any(m["evolution"] for m in maps)
    grid = evolution = filters = None
    if not own_images:  # the layer's Fig. 2 grid, named in figures or by the maps
        grids = [figures.get(f"top{k}-{layer}")] + sorted({e.get("png") for e in entries.values()
                                                           if isinstance(e.get("png"), str)})
        grid = next((image(g) for g in grids if isinstance(g, str)), None)
    if not own_evolution:
        evolution = image(figures.get(f"evolution-{layer}"))
    if layer == "conv1":
        filters = image(figures.get("filters-conv1"))
    return {"layer": layer, "vis": vis.label, "k": k, "grid": grid, "evolution": evolution, "maps": maps,
            "filters": filters, "images": vis.index.get("images"), "split": vis.index.get("split"),
            "weights": vis.index.get("weights"), "snapshots": vis.index.get("snapshots") or [],
            "own_images": own_images, "own_evolution": own_evolution}


def _analysis_context(site: _Site, analyses: list[Analysis], base: Path | None) -> list[dict[str, Any]]:
    sections = []
    for i, a in enumerate(analyses):
        figures = [f for f in (_figure(site, a, e) for e in a.figures) if f is not None]
        tables = [_table(_cell(t["caption"]), t["columns"], t["rows"]) for t in a.tables]
        source = a.path.name if base is None else os.path.relpath(a.path, base)
        sections.append({"anchor": f"{_slug(a.kind)}-{i + 1}", "title": a.title, "summary": a.summary,
                         "figures": figures, "tables": tables, "source": source})
    return sections


def _common_base(found: Sources) -> Path | None:
    paths = [r.root for r in found.runs] + [v.root for v in found.visualizations] + \
            [e.path.parent for e in found.evaluations] + [a.root for a in found.analyses]
    try:
        return Path(os.path.commonpath([str(p) for p in paths])) if paths else None
    except ValueError:  # different drives
        return None


DEFAULT_TITLE = "ZFNet report"


def build_report(sources: Sequence[str | Path], out: str | Path, *, title: str | None = None) -> Path:
    """Build the static report from saved results, recomputing nothing.

    Args:
        sources: folders (a demo folder, run directories, ``zfnet visualize`` output, analysis output) or
            JSON files; folders are searched a few levels down.
        out: the report folder: new, empty, or an earlier report's (which is updated; files it wrote and
            that are no longer needed are removed, nothing else is).
        title: the site's title; None: the earlier report's in ``out`` (a demo's stays the demo's), else
            "ZFNet report".

    Returns:
        The path of ``index.html``.

    Raises:
        ZFNetError: a missing source, nothing found in the sources, or an ``out`` that is a file or a
            non-empty folder that holds no report.

    Example:
        >>> build_report(["zfnet-demo"], "zfnet-demo/report")  # doctest: +SKIP
        PosixPath('zfnet-demo/report/index.html')
    """
    if isinstance(sources, (str, Path)):
        raise TypeError("sources must be a list of paths, not one path")
    if not sources:
        raise ZFNetError("give at least one source folder")
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise ZFNetError(f"--out {out} is a file, not a folder")
    with folder_lock(out):  # one writer per folder: a second build into it is refused
        return _build(sources, out, title)


def _build(sources: Sequence[str | Path], out: Path, title: str | None) -> Path:
    previous, earlier_title = _prepare_out(out)
    title = title if title is not None else earlier_title or DEFAULT_TITLE
    found = discover([Path(s) for s in sources], exclude=out)
    out.mkdir(parents=True, exist_ok=True)
    # Mark the folder as a report's first, so that a build cut short can be rebuilt in place.
    atomic_write_json(out / MANIFEST, {"format": REPORT_FORMAT, "sources": [str(Path(s)) for s in sources],
                                       "files": previous, "title": title})
    site = _Site(out)
    env = _environment()
    base = _common_base(found)

    site.write_bytes("assets/report.css", _asset("report.css"))
    site.write_bytes("assets/report.js", _asset("report.js"))

    layer_groups = _layer_pages(found.visualizations)
    analysis_pages = _analysis_pages(found)
    layer_groups, analysis_pages = _within_page_limit(layer_groups, analysis_pages)
    flat_layers = [p for group in layer_groups for p in group]
    nav = {
        "layers": [{"label": group[0].vis.label, "pages": [{"name": p.layer, "href": p.href, "count": len(p.maps)}
                                                            for p in group]} for group in layer_groups if group],
        "analyses": [{"name": _page_name(kind, analyses), "href": href, "kind": kind}
                     for kind, href, analyses in analysis_pages],
    }
    common = {"site_title": title, "nav": nav, "generated": _dt.datetime.now().strftime("%Y-%m-%d %H:%M"),
              "sources": [str(s) for s in sources]}

    def render(rel: str, template: str, **context: Any) -> None:
        html = env.get_template(template).render(**common, current=rel, **context)
        site.write_text(rel, html)

    for i, page in enumerate(flat_layers):
        context = _layer_context(site, page)
        render(page.href, "layer.html", page_title=f"{page.layer} · {page.vis.label}" if len(layer_groups) > 1
               else page.layer, prev_href=flat_layers[i - 1].href if i > 0 else None,
               next_href=flat_layers[i + 1].href if i + 1 < len(flat_layers) else None, **context)

    for kind, href, analyses in analysis_pages:
        sections = _analysis_context(site, analyses, base)
        render(href, "analysis.html", page_title=_page_name(kind, analyses), kind=kind, sections=sections,
               prev_href=None, next_href=None)

    curves = training_curves_png(found.runs)
    runs = [_run_summary(r) for r in found.runs]
    overview = {
        "about": ABOUT, "runs": runs, "paper": PAPER_TABLE_2,
        "curves": site.image_bytes("training-curves", curves) if curves else None,
        "evaluations": [_evaluation_table(e, base) for e in found.evaluations],
        "features": [{"label": group[0].vis.label, "images": group[0].vis.index.get("images"),
                      "filters": _image_of(site, group[0].vis, group[0].vis.figures.get("filters-conv1")),
                      "split": group[0].vis.index.get("split"), "k": group[0].vis.index.get("k", 9),
                      "layers": [{"name": p.layer, "href": p.href,
                                  "maps": [{"key": m, "href": f"{p.href}#{anchor}"}
                                           for m, anchor in _map_anchors(p.layer, p.maps).items()]}
                                 for p in group]}
                     for group in layer_groups if group],
        "analyses": [{"title": _page_name(kind, analyses), "href": href,
                      "summaries": [a.summary for a in analyses], "kind": kind}
                     for kind, href, analyses in analysis_pages],
    }
    render("index.html", "index.html", page_title="Overview", prev_href=None,
           next_href=flat_layers[0].href if flat_layers else None, **overview)

    _remove_stale(out, previous, site.written)
    atomic_write_json(out / MANIFEST, {"format": REPORT_FORMAT, "sources": [str(Path(s)) for s in sources],
                                       "files": sorted(site.written), "title": title})
    return out / "index.html"
