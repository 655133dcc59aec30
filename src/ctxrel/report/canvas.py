"""The drawing primitives every report figure shares: a bare Agg figure (no pyplot state), the atomic PNG save,
axis style (epoch boundaries on step axes) and a line with its confidence band."""

from __future__ import annotations

import io
import math
from pathlib import Path
from typing import Any

from ctxrel.report.trajectory import draw_epoch_lines
from ctxrel.rundir.files import atomic_write_bytes


def figure(ncols: int, nrows: int = 1, w: float = 5.2, h: float = 3.7):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(max(w * ncols, 7.0), h * nrows))  # one panel: wide enough for the figure title
    FigureCanvasAgg(fig)
    return fig, fig.subplots(nrows, ncols, squeeze=False).ravel()


def save(fig, path: Path) -> Path:
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100)
    atomic_write_bytes(path, buf.getvalue())
    return path


def style(ax, xlabel: str, ylabel: str, boundaries: list[int] | None = None) -> None:
    ax.set_xlabel(xlabel, fontsize=9)
    ax.set_ylabel(ylabel, fontsize=9)
    ax.tick_params(labelsize=8)
    ax.grid(alpha=0.25, lw=0.5)
    if xlabel == "training step":
        from matplotlib.ticker import MaxNLocator

        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    if boundaries:
        draw_epoch_lines(ax, boundaries)
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=7.5, loc="best", framealpha=0.85)


def line(ax, pts: list[dict[str, Any]], color: str, label: str, *, dashed: bool = False, band: bool = True,
          x: str = "step") -> None:
    pts = [p for p in pts if p.get("value") is not None and not math.isnan(p["value"])]
    if not pts:
        return
    xs, ys = [p[x] for p in pts], [p["value"] for p in pts]
    ax.plot(xs, ys, "--" if dashed else "-", marker="s" if dashed else "o", ms=3.5, lw=1.5, color=color, label=label)
    if band and all(p.get("ci_low") is not None and p.get("ci_high") is not None for p in pts):
        ax.fill_between(xs, [p["ci_low"] for p in pts], [p["ci_high"] for p in pts], color=color,
                        alpha=0.08 if dashed else 0.16, lw=0)
