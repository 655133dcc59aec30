"""The stacked figure of the four outcome shares (context, parametric, both, neither) over steps: where cf-acc's
movements come from (analysis/decompose.py). Drawn from study summaries; no run directory reads."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ctxrel.report.canvas import figure, save, style

OUTCOME_COLORS = {"context": "tab:blue", "both": "tab:purple", "parametric": "tab:red", "neither": "0.75"}


def plot_outcome_shares(groups: list[dict[str, Any]], bench: str, path: Path) -> Path | None:
    """One panel per subset (all, known) of the first group: the mean share of each outcome by step, stacked to 1;
    the context share cf / (cf + par) as a black line on the same axis. None in likelihood mode (no outcomes)."""
    g = groups[0]
    subs = {s: st for s, st in g["benchmarks"][bench]["subsets"].items() if st.get("outcome_shares")}
    if not subs:
        return None
    fig, axes = figure(len(subs), w=5.0)
    for ax, (subset, st) in zip(axes, subs.items()):
        rows = st["outcome_shares"]
        steps = [r["step"] for r in rows]
        order = ("context", "both", "parametric", "neither")
        ax.stackplot(steps, *[[r[o] for r in rows] for o in order], labels=order,
                     colors=[OUTCOME_COLORS[o] for o in order], alpha=0.85)
        cs = st.get("context_share", {}).get("series", [])
        if cs:
            ax.plot([p["step"] for p in cs], [p["value"] for p in cs], "k-o", ms=3, lw=1.3,
                    label="context share cf/(cf+par)")
        ax.set_ylim(0, 1)
        ax.set_title(f"{bench}: {subset} items", fontsize=9.5)
        style(ax, "training step", "share of generations (0-1)", g.get("epoch_boundaries"))
    who = f" ({g['label']})" if len(groups) > 1 else ""
    fig.suptitle(f"{bench}: outcomes by step, stacked{who}", fontsize=10)
    return save(fig, path)
