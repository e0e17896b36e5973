"""The report ("microscope"): a static site built from saved results, opened from the file system.

:func:`build_report` reads what zfnet's commands saved (run directories, ``zfnet visualize`` output,
evaluations and analysis JSON; see :mod:`zfnet.report._sources`) and writes into one folder:

- ``index.html``: the architecture of each run as the paper's Fig. 3, training curves, the error table,
  links to every layer and analysis page, each section explained in two sentences;
- ``layer-<layer>.html`` per visualised layer: every shown feature map under its own anchor
  (``#conv5-map-17``) with its top-k projections, image patches and evolution strip;
- ``<kind>.html`` per analysis kind (occlusion, invariance, correspondence, architectures, ablation,
  ensemble, transfer, probes, and any new kind), rendered from its ``report`` block;
- ``img/``: copies (hard links where possible) of every figure, named by content, so the folder can be
  moved or archived on its own; ``assets/``: the style sheet and the keyboard navigation script;
- ``report.json``: what was written, so that a rebuild removes its own stale files and nothing else.

Nothing is fetched from the network (no CDN, no remote fonts) and nothing is recomputed: the only figure
drawn here is the training curves, from ``metrics.jsonl``. Every piece of text that comes from data is
escaped by the templates (Jinja2 with autoescaping), and file names in links are derived from content
hashes or sanitised names.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import json
import logging
import os
import re
import shutil
from collections.abc import Sequence
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import jinja2
from PIL import Image, UnidentifiedImageError

from .._io import atomic_write, atomic_write_json
from ..errors import ZFNetError
from ._architecture import architecture, diagram
from ._curves import training_curves_png
from ._sources import Analysis, Evaluation, Run, Sources, Visualization, discover

__all__ = ["build_report", "REPORT_FORMAT"]

log = logging.getLogger("zfnet")

REPORT_FORMAT = "zfnet-report"
MANIFEST = "report.json"

_IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".gif", ".webp", ".svg"}
_RESERVED_PAGES = {"index", "report"}

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
    "rows": [["Krizhevsky et al., 1 convnet (replicated)", "40.5", "18.1"],
             ["ZFNet (Fig. 3), 1 convnet", "38.4", "16.5"],
             ["ZFNet, 5 convnets", "36.7", "15.3"],
             ["ZFNet with conv3-5 of 512, 1024, 512 maps", "37.5", "16.0"],
             ["6 convnets", "36.0", "14.7"]],
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
    """The report folder: writes files atomically and remembers them for the manifest."""

    out: Path
    written: set[str] = field(default_factory=set)
    images: dict[Path, dict[str, Any] | None] = field(default_factory=dict)

    def write_bytes(self, rel: str, data: bytes) -> str:
        path = self.out / rel
        if not (path.is_file() and path.read_bytes() == data):
            atomic_write(path, lambda tmp: tmp.write_bytes(data))
        self.written.add(rel)
        return rel

    def write_text(self, rel: str, text: str) -> str:
        return self.write_bytes(rel, text.encode("utf-8"))

    def image(self, source: Path) -> dict[str, Any] | None:
        """Copy an image into ``img/`` under a name made from its content; None if it is missing or not one."""
        source = source.resolve() if source.exists() else source
        if source in self.images:
            return self.images[source]
        info = None
        if source.suffix.lower() not in _IMAGE_SUFFIXES:
            log.warning("report: %s is not an image (%s); left out", source, ", ".join(sorted(_IMAGE_SUFFIXES)))
        elif not source.is_file():
            log.warning("report: figure %s is missing; left out", source)
        else:
            data = source.read_bytes()
            rel = f"img/{_slug(source.stem)[:60]}-{hashlib.sha256(data).hexdigest()[:12]}{source.suffix.lower()}"
            dest = self.out / rel
            if not dest.is_file():
                _link_or_copy(source, dest)
            self.written.add(rel)
            info = {"src": rel, "width": None, "height": None}
            if source.suffix.lower() != ".svg":
                try:
                    with Image.open(source) as img:
                        info["width"], info["height"] = img.size
                except (OSError, UnidentifiedImageError):
                    log.warning("report: %s is not a readable image; left out", source)
                    info = None
        self.images[source] = info
        return info

    def image_bytes(self, name: str, data: bytes) -> dict[str, Any]:
        """Write a PNG drawn here into ``img/``, named by its content."""
        rel = self.write_bytes(f"img/{name}-{hashlib.sha256(data).hexdigest()[:12]}.png", data)
        with Image.open(self.out / rel) as img:
            width, height = img.size
        return {"src": rel, "width": width, "height": height}


def _link_or_copy(source: Path, dest: Path) -> None:
    """Put ``source``'s content at ``dest`` atomically: a hard link, or a copy across file systems."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.with_name(f".{dest.name}.{os.getpid()}.tmp")
    tmp.unlink(missing_ok=True)
    try:
        os.link(source, tmp)
    except OSError:  # another file system, or links not allowed
        atomic_write(dest, lambda t: shutil.copyfile(source, t))
        return
    os.replace(tmp, dest)


def _prepare_out(out: Path) -> list[str]:
    """Check that ``out`` is new, empty or an earlier report's, and return the files that report wrote."""
    if out.exists() and not out.is_dir():
        raise ZFNetError(f"--out {out} is a file, not a folder")
    if not out.exists():
        return []
    manifest = out / MANIFEST
    if manifest.is_file():
        try:
            saved = json.loads(manifest.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            saved = None
        if isinstance(saved, dict) and saved.get("format") == REPORT_FORMAT:
            return [str(f) for f in saved.get("files", []) if isinstance(f, str)]
    if any(out.iterdir()):
        raise ZFNetError(f"--out {out} is not empty and holds no zfnet report; choose an empty or new folder")
    return []


def _remove_stale(out: Path, previous: list[str], written: set[str]) -> None:
    """Remove files the previous build wrote and this one did not; never anything outside ``out``."""
    root = out.resolve()
    for rel in previous:
        if rel in written or rel == MANIFEST:
            continue
        path = (out / rel).resolve()
        if root not in path.parents or not path.is_file():
            continue
        path.unlink()


def _environment() -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.PackageLoader("zfnet.report", "templates"),
        autoescape=True,  # every value from data is escaped; nothing is marked safe
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
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
        "label": run.label, "model": run.model, "classes": run.class_names, "epochs": len(rows),
        "planned_epochs": run.config.get("epochs"), "best_top1": best[0] if best else None,
        "best_epoch": best[1] if best else None, "last_top1": last.get("val_top1_error"),
        "last_top5": last.get("val_top5_error"), "last_train_top1": last.get("train_top1_error"),
        "seconds": seconds, "snapshots": run.snapshots, "layers": [], "diagram": None, "parameters": None,
        "input_size": None, "error": None, "options": run.config.get("model_options") or {},
    }
    try:
        arch = architecture(run.config, num_classes=max(1, len(run.classes)))
    except (ValueError, TypeError, RuntimeError, NotImplementedError) as err:
        summary["error"] = f"cannot rebuild model {run.model!r} from {run.root.name}/config.json: {err}"
        log.warning("report: %s", summary["error"])
        return summary
    summary.update(parameters=arch.parameters, input_size=arch.input_size, diagram=diagram(arch), layers=[
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


def _layer_pages(visualizations: list[Visualization]) -> list[list[_LayerPage]]:
    pages = []
    for vis in visualizations:
        prefix = "layer" if len(visualizations) == 1 else f"layer-{_slug(vis.label)}"
        group = []
        for layer, maps in vis.layers.items():
            if not isinstance(maps, dict):
                continue
            keys = sorted(maps, key=lambda m: (0, int(m)) if str(m).isdigit() else (1, str(m)))
            group.append(_LayerPage(vis, str(layer), f"{prefix}-{_slug(layer)}.html", keys))
        pages.append(group)
    return pages


def _map_anchor(layer: str, key: str) -> str:
    return f"{_slug(layer)}-map-{int(key) if str(key).isdigit() else _slug(key)}"


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


def _page_name(kind: str, analyses: list[Analysis]) -> str:
    """An analysis page's name: its analysis's title, or the kind when several analyses share the page."""
    return analyses[0].title if len(analyses) == 1 else kind.capitalize()


def _figure(site: _Site, root: Path, entry: dict[str, Any]) -> dict[str, Any] | None:
    """A figure of an analysis ``report`` block: ``{"path", "caption"}`` or ``{"figure", "image", "label"}``."""
    rel = entry.get("path", entry.get("figure"))
    if not isinstance(rel, str) or not rel:
        return None
    img = site.image(root / rel)
    label = entry.get("label")
    image = entry.get("image")
    caption = entry.get("caption")
    wide = bool(img and img["width"] and img["height"] and img["width"] > 640 and img["width"] > 1.6 * img["height"])
    return {"img": img, "missing": rel if img is None else None, "wide": wide,
            "caption": caption if isinstance(caption, str) else "",
            "label": str(label) if label is not None else None,
            "image": Path(str(image)).name if isinstance(image, str) and image else None}


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


def _image_of(site: _Site, vis: Visualization, rel: Any) -> dict[str, Any] | None:
    return site.image(vis.root / rel) if isinstance(rel, str) and rel else None


def _layer_context(site: _Site, page: _LayerPage) -> dict[str, Any]:
    """A layer page: each map with its own PNGs where the index lists them, else the layer's figures once."""
    vis, layer = page.vis, page.layer
    figures = vis.figures
    k = vis.index.get("k", 9)
    entries = {key: e if isinstance(e, dict) else {} for key, e in vis.layers[layer].items()}

    def image(rel: Any) -> dict[str, Any] | None:
        return _image_of(site, vis, rel)

    maps = [{"key": key, "anchor": _map_anchor(layer, key), "order": order + 1,
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
        figures = [f for f in (_figure(site, a.root, e) for e in a.figures) if f is not None]
        tables = [_table(_cell(t.get("caption", "")), t.get("columns") or [], t.get("rows") or [])
                  for t in a.tables]
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


def build_report(sources: Sequence[str | Path], out: str | Path, *, title: str = "ZFNet report") -> Path:
    """Build the static report from saved results, recomputing nothing.

    Args:
        sources: folders (a demo folder, run directories, ``zfnet visualize`` output, analysis output) or
            JSON files; folders are searched a few levels down.
        out: the report folder: new, empty, or an earlier report's (which is updated; files it wrote and
            that are no longer needed are removed, nothing else is).
        title: the site's title.

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
    previous = _prepare_out(out)
    found = discover([Path(s) for s in sources], exclude=out)
    out.mkdir(parents=True, exist_ok=True)
    # Mark the folder as a report's first, so that a build cut short can be rebuilt in place.
    atomic_write_json(out / MANIFEST, {"format": REPORT_FORMAT, "sources": [str(Path(s)) for s in sources],
                                       "files": previous})
    site = _Site(out)
    env = _environment()
    base = _common_base(found)

    site.write_bytes("assets/report.css", _asset("report.css"))
    site.write_bytes("assets/report.js", _asset("report.js"))

    layer_groups = _layer_pages(found.visualizations)
    analysis_pages = _analysis_pages(found)
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
                                  "maps": [{"key": m, "href": f"{p.href}#{_map_anchor(p.layer, m)}"}
                                           for m in p.maps]} for p in group]}
                     for group in layer_groups if group],
        "analyses": [{"title": _page_name(kind, analyses), "href": href,
                      "summaries": [a.summary for a in analyses], "kind": kind}
                     for kind, href, analyses in analysis_pages],
    }
    render("index.html", "index.html", page_title="Overview", prev_href=None,
           next_href=flat_layers[0].href if flat_layers else None, **overview)

    _remove_stale(out, previous, site.written)
    atomic_write_json(out / MANIFEST, {"format": REPORT_FORMAT, "sources": [str(Path(s)) for s in sources],
                                       "files": sorted(site.written)})
    return out / "index.html"
