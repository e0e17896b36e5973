"""What an experiment hands to people: report blocks, and the one way they are written to disk.

Every experiment ends with a :class:`Report` (a title, a summary, :class:`Table` and :class:`Figure`
blocks) beside its numbers. :func:`write_results` writes them, each file atomically:

- ``OUT/<kind>.json``: the numbers and the report block (``{"kind": ..., ..., "report": {...}}``),
  which ``zfnet report`` reads back (it recomputes nothing);
- ``OUT/<kind>.md``: the title, the summary and every table in Markdown;
- ``OUT/<kind>.csv``: every table, a caption line above each, a blank line between them.

:func:`new_figure` and :func:`save_figure` draw without pyplot: a :class:`matplotlib.figure.Figure`
on its own Agg canvas, so importing zfnet never changes the process's matplotlib backend and figures
drawn in threads do not share state. A figure is written to a temporary file and renamed, so a killed
run leaves the previous PNG or none, never half of one.

Example:
    >>> report = Report("Ensembles (Table 2)", "Averaging two runs lowers the error.",
    ...                 tables=[Table("Top-1 error %", ["run", "top-1"], [["a", "38.4"], ["a+b", "36.0"]])])
    >>> print(report.markdown().splitlines()[4])
    | run | top-1 |
"""

from __future__ import annotations

import csv
import io
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ._io import atomic_write, atomic_write_json, atomic_write_text

__all__ = ["Table", "Figure", "Report", "write_results", "new_figure", "save_figure", "markdown_table", "csv_tables",
           "percent", "mean_std"]

FIGURE_DPI = 110


@dataclass(frozen=True)
class Table:
    """A captioned table: column names and rows of cells (text or numbers, written as given)."""

    caption: str
    columns: Sequence[str]
    rows: Sequence[Sequence[Any]]

    def to_json(self) -> dict[str, Any]:
        return {"caption": self.caption, "columns": list(self.columns), "rows": [list(r) for r in self.rows]}


@dataclass(frozen=True)
class Figure:
    """A written figure: its path relative to the results folder, a caption, and optional fields the
    report shows beside it (``image``, ``label`` ...)."""

    path: str
    caption: str
    extra: Mapping[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {"path": self.path, "caption": self.caption, **dict(self.extra)}


@dataclass(frozen=True)
class Report:
    """One experiment's report block: what ``zfnet report`` shows and the Markdown file says."""

    title: str
    summary: str
    tables: Sequence[Table] = ()
    figures: Sequence[Figure] = ()
    extra: Mapping[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        block: dict[str, Any] = {"title": self.title, "summary": self.summary}
        if self.figures:
            block["figures"] = [f.to_json() for f in self.figures]
        block["tables"] = [t.to_json() for t in self.tables]
        block.update(self.extra)
        return block

    def markdown(self) -> str:
        text = f"# {self.title}\n\n{self.summary}\n"
        for table in self.tables:
            text += "\n" + markdown_table(table)
        for figure in self.figures:
            text += f"\n![{figure.caption}]({figure.path})\n"
        return text

    def csv(self) -> str:
        return csv_tables(self.tables)


def _cell(value: Any) -> str:
    return str(value).replace("|", "\\|").replace("\n", " ")


def markdown_table(table: Table) -> str:
    """A table in Markdown, its caption in bold above it."""
    cols = list(table.columns)
    lines = [f"**{table.caption}**", "", "| " + " | ".join(_cell(c) for c in cols) + " |", "|" + "---|" * len(cols)]
    lines += ["| " + " | ".join(_cell(v) for v in row) + " |" for row in table.rows]
    return "\n".join(lines) + "\n"


def csv_tables(tables: Sequence[Table]) -> str:
    """Tables in one CSV text: the caption on a line of its own above each, a blank line between them."""
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    for i, table in enumerate(tables):
        if i:
            writer.writerow([])
        writer.writerow([table.caption])
        writer.writerow(list(table.columns))
        writer.writerows([list(r) for r in table.rows])
    return buf.getvalue()


def write_results(out: str | Path, kind: str, numbers: Mapping[str, Any], report: Report) -> dict[str, Path]:
    """Write ``OUT/<kind>.json`` (``{"kind": kind, **numbers, "report": ...}``), ``.md`` and ``.csv``.

    Returns:
        ``{"json": path, "markdown": path, "csv": path}``.
    """
    out = Path(out)
    payload = {"kind": kind, **{k: v for k, v in numbers.items() if k != "report"}, "report": report.to_json()}
    return {"json": atomic_write_json(out / f"{kind}.json", payload),
            "markdown": atomic_write_text(out / f"{kind}.md", report.markdown()),
            "csv": atomic_write_text(out / f"{kind}.csv", report.csv())}


def new_figure(width: float, height: float, **kwargs: Any):
    """A matplotlib figure on its own Agg canvas (no pyplot, no global backend): ``fig.subplots(...)``."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure as MplFigure

    fig = MplFigure(figsize=(width, height), **kwargs)
    FigureCanvasAgg(fig)
    return fig


def save_figure(fig, path: str | Path, *, dpi: int = FIGURE_DPI, facecolor: str = "white") -> Path:
    """Write a matplotlib figure as PNG atomically; the figure need not come from pyplot."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    if not isinstance(fig.canvas, FigureCanvasAgg):
        FigureCanvasAgg(fig)
    return atomic_write(path, lambda tmp: fig.savefig(tmp, format="png", dpi=dpi, facecolor=facecolor))


def percent(fraction: float | None, digits: int = 1) -> str:
    """``0.384`` -> ``"38.4"``; None -> ``"—"``."""
    return "—" if fraction is None else f"{100 * fraction:.{digits}f}"


def mean_std(mean: float | None, std: float | None = None, *, scale: float = 1.0, digits: int = 1) -> str:
    """``"38.4 ± 0.5"`` (``scale=100`` for fractions shown as percent); a missing std is left out."""
    if mean is None:
        return "—"
    text = f"{scale * mean:.{digits}f}"
    return text if std is None else f"{text} ± {scale * std:.{digits}f}"
