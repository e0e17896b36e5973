"""Training curves of runs, drawn from their ``metrics.jsonl`` as one PNG (matplotlib's Agg canvas)."""

from __future__ import annotations

import io
from collections.abc import Sequence

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from ._sources import Run

__all__ = ["training_curves_png"]

_COLOURS = ("#1f5fa8", "#c2410c", "#15803d", "#7c3aed", "#be123c", "#0f766e", "#a16207", "#475569")


def _finite(value: object, scale: float = 1.0) -> bool:
    """A number to plot: not true or false, and finite and below 1e12 when scaled (no error rate or learning
    rate is larger; 1e308 would overflow the axes' arithmetic)."""
    return isinstance(value, (int, float)) and not isinstance(value, bool) and abs(scale * value) < 1e12


def _text(label: str) -> str:
    return label.replace("$", r"\$")  # a run named "a$b$" must not turn into mathtext


def training_curves_png(runs: Sequence[Run], dpi: int = 110) -> bytes | None:
    """Top-1 errors (training and validation) and the learning rate per epoch, one colour per run.

    Returns:
        The PNG's bytes, or None when no run has metrics.
    """
    runs = [r for r in runs if any("epoch" in m for m in r.metrics)]
    if not runs:
        return None
    fig = Figure(figsize=(10.5, 3.6), layout="constrained")
    FigureCanvasAgg(fig)
    err_ax, lr_ax = fig.subplots(1, 2, width_ratios=(2.2, 1))
    for i, run in enumerate(runs):
        colour = _COLOURS[i % len(_COLOURS)]
        rows = [m for m in run.metrics if isinstance(m.get("epoch"), int)]
        epochs = [m["epoch"] for m in rows]
        for key, style, what in (("val_top1_error", "-", "val top-1"), ("train_top1_error", "--", "train top-1"),
                                 ("val_top5_error", ":", "val top-5")):
            points = [(e, 100 * m[key]) for e, m in zip(epochs, rows) if _finite(m.get(key), 100)]
            if points:
                err_ax.plot(*zip(*points), style, color=colour, lw=1.6 if style == "-" else 1.1,
                            label=_text(f"{run.label} {what}"))
        points = [(e, m["lr"]) for e, m in zip(epochs, rows) if _finite(m.get("lr")) and m["lr"] > 0]
        if points:
            lr_ax.step(*zip(*points), where="post", color=colour, lw=1.4, label=_text(run.label))
    err_ax.set(xlabel="epoch", ylabel="error (%)", title="Top-1 and top-5 error")
    err_ax.set_ylim(bottom=0)
    err_ax.grid(alpha=0.3)
    err_ax.legend(fontsize=7.5, ncol=2 if len(runs) > 1 else 1, frameon=False)
    lr_ax.set(xlabel="epoch", ylabel="learning rate", title="Learning rate", yscale="log")
    lr_ax.grid(alpha=0.3, which="both")
    if len(runs) > 1:
        lr_ax.legend(fontsize=7.5, frameon=False)
    for ax in (err_ax, lr_ax):
        ax.spines[["top", "right"]].set_visible(False)
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=dpi, facecolor="white")
    return buffer.getvalue()
