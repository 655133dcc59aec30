"""The trajectory of a study: conflict metrics of every checkpoint ordered by step, as a table and a plot.

A trajectory is where an inversion shows (docs/design.md, 'Words'): cf-acc (or M_C) rising, then falling, while ID
accuracy keeps improving. This module only *describes* it: the values with their 95% bootstrap intervals, the peak and
how far the last step sits from it. Whether a drop is significant is a question for a test on the drop itself
(analysis/), not for overlapping per-step intervals, so no table or plot here claims significance.

Everything is read from the run directory's metrics table (rundir/files.py); no model is needed. Rows of checkpoints
without a step (e.g. `model`, a base model scored on its own) are not part of a trajectory and are ignored.
"""

from __future__ import annotations

import io
import math
from pathlib import Path
from typing import Any

from ctxrel.core.errors import CtxrelError
from ctxrel.rundir.files import atomic_write_bytes

# Metrics a trajectory follows, in column order. cf_acc/par_acc come from generate mode, m_c from likelihood
# mode, id_accuracy from the standard tasks (its own benchmark, always subset "all").
TRAJECTORY_METRICS = ("cf_acc", "par_acc", "m_c", "id_accuracy")
CONFLICT_METRICS = ("cf_acc", "par_acc", "m_c")
LABELS = {"cf_acc": "cf-acc", "par_acc": "par-acc", "m_c": "M_C", "id_accuracy": "ID acc"}
Point = tuple[float, "float | None", "float | None"]  # (value, ci_low, ci_high); value NaN when not computable


def _num(x: Any) -> float | None:
    return None if x is None else float(x)


def trajectory_rows(rows: list[dict[str, Any]], subset: str = "all") -> dict[str, list[dict[str, Any]]]:
    """Per benchmark, one entry per step, sorted by step (benchmarks sorted by name):

        {"step": int, "epoch": float | None, "tokens": int | None, "n": int | None,
         "cf_acc": (value, ci_low, ci_high) | None, "par_acc": ..., "m_c": ..., "id_accuracy": ...}

    Conflict benchmarks come first (by name), `id_accuracy` last. Only the metrics a benchmark has at some step
    appear as keys; a metric missing at one step is None there, so all entries of a benchmark share their keys.
    `n` is the metric rows' item count (what the interval is over). Benchmarks without any trajectory metric
    (count rows, standard tasks' own acc) are left out. Two checkpoints with the same step cannot be told apart
    on a step axis: the later row (by checkpoint name) wins.
    Pure: metric rows (RunDir.metrics()) in, plain data out.
    """
    by_bench: dict[str, dict[int, dict[str, Any]]] = {}
    for r in rows:
        if r.get("step") is None or r.get("subset") != subset or r.get("metric") not in TRAJECTORY_METRICS:
            continue
        step = int(r["step"])
        e = by_bench.setdefault(r["benchmark"], {}).setdefault(
            step, {"step": step, "epoch": None, "tokens": None, "n": None})
        e["epoch"] = e["epoch"] if r.get("epoch") is None else float(r["epoch"])
        e["tokens"] = e["tokens"] if r.get("tokens") is None else int(r["tokens"])
        e["n"] = e["n"] if r.get("n") is None else int(r["n"])
        value = _num(r.get("value"))  # SQLite stores NaN as NULL
        e[r["metric"]] = (math.nan if value is None else value, _num(r.get("ci_low")), _num(r.get("ci_high")))
    out: dict[str, list[dict[str, Any]]] = {}
    for bench in sorted(by_bench, key=lambda b: (b == "id_accuracy", b)):  # ID accuracy after the conflicts
        steps = by_bench[bench]
        present = [m for m in TRAJECTORY_METRICS if any(m in e for e in steps.values())]
        out[bench] = [{**{m: None for m in present}, **steps[s]} for s in sorted(steps)]
    return out


def primary_metric(entries: list[dict[str, Any]]) -> str:
    """The metric whose peak matters: cf-acc in generate mode, M_C in likelihood mode, else the first present."""
    keys = [m for m in TRAJECTORY_METRICS if entries and m in entries[0]]
    return next((m for m in ("cf_acc", "m_c", "id_accuracy") if m in keys), keys[0] if keys else "")


def peak_and_last(entries: list[dict[str, Any]], metric: str) -> tuple[int, float, int, float] | None:
    """(peak step, peak value, last step, last value) of `metric`, skipping steps where it is missing or NaN;
    the earliest step wins a tie. None if no step has a value."""
    pts = [(e["step"], e[metric][0]) for e in entries if e.get(metric) is not None and not math.isnan(e[metric][0])]
    if not pts:
        return None
    peak = max(pts, key=lambda p: p[1])  # max returns the first maximal element: earliest step on ties
    return peak[0], peak[1], pts[-1][0], pts[-1][1]


def _cell(p: Point | None) -> str:
    if p is None or math.isnan(p[0]):
        return "-"
    ci = f" [{p[1]:.3f}, {p[2]:.3f}]" if p[1] is not None and p[2] is not None else ""
    return f"{p[0]:.3f}{ci}"


def format_trajectory(rows: list[dict[str, Any]], subset: str = "all") -> str:
    """A plain-text table of the trajectory for the terminal: one block per benchmark, one line per step,
    values with their 95% intervals, then the peak of cf-acc (M_C in likelihood mode) and the last step's
    distance from it. Descriptive only: a drop here is a difference of two point estimates, not a test."""
    traj = trajectory_rows(rows, subset)
    if not traj:
        return f"no trajectory: no metric rows of checkpoints with a step (subset {subset!r})"
    blocks = []
    for bench, entries in traj.items():
        metrics = [m for m in TRAJECTORY_METRICS if m in entries[0]]
        n = entries[-1]["n"]
        unit = "tasks" if bench == "id_accuracy" else "items"
        lines = [f"{bench}  (subset {subset}, n={n if n is not None else '?'} {unit} at the last step)",
                 f"  {'step':>7} {'epoch':>6}  " + "  ".join(f"{LABELS[m]:<20}" for m in metrics).rstrip()]
        for e in entries:
            epoch = "-" if e["epoch"] is None else f"{e['epoch']:.2f}"
            cells = "  ".join(f"{_cell(e[m]):<20}" for m in metrics).rstrip()
            lines.append(f"  {e['step']:>7} {epoch:>6}  {cells}")
        main = primary_metric(entries)
        pk = peak_and_last(entries, main)
        if pk is not None:
            ps, pv, ls, lv = pk
            lines.append(f"  peak {LABELS[main]} {pv:.3f} at step {ps}; last {lv:.3f} ({lv - pv:+.3f})"
                         + (" = the peak" if ls == ps else f" at step {ls}"))
        blocks.append("\n".join(lines))
    return "\n\n".join(blocks)


# -- plot ---------------------------------------------------------------------------------------------------

def _draw(ax, entries: list[dict[str, Any]], metric: str, color: str, label: str, dashed: bool = False) -> None:
    """One metric vs step: line with markers, its 95% interval as a shaded band (lighter when dashed)."""
    pts = [(e["step"], e[metric]) for e in entries if e.get(metric) is not None]
    if not pts:
        return
    x = [s for s, _ in pts]
    ax.plot(x, [p[0] for _, p in pts], "--" if dashed else "-", marker="s" if dashed else "o", ms=3.5, lw=1.4,
            color=color, label=label)
    if any(p[1] is not None and p[2] is not None for _, p in pts):
        lo = [p[0] if p[1] is None else p[1] for _, p in pts]
        hi = [p[0] if p[2] is None else p[2] for _, p in pts]
        ax.fill_between(x, lo, hi, color=color, alpha=0.07 if dashed else 0.18, lw=0)


def draw_epoch_lines(ax, boundaries: list) -> None:
    for i, step in enumerate(boundaries, start=1):
        if isinstance(step, (list, tuple)):  # [step, "sft | dpo"]: a stage boundary of a multi-stage study
            ax.axvline(step[0], ls="--", lw=1.2, color="tab:purple")
            ax.text(step[0], 0.99, f" {step[1]}", transform=ax.get_xaxis_transform(), ha="center", va="top",
                    fontsize=7, color="tab:purple")
            continue
        ax.axvline(step, ls=":", lw=1, color="0.45")
        # Left of its line, so a boundary at the last step stays inside the panel: "epoch i" ends here.
        ax.text(step, 0.99, f"epoch {i} ", transform=ax.get_xaxis_transform(), ha="right", va="top", fontsize=7,
                color="0.35")


def plot_trajectory(run_dir: str | Path, out: str | Path | None = None, epoch_boundaries: list[int] | None = None,
                    subset: str = "all") -> Path:
    """Plot a study's trajectory to a PNG and return its path (default `run_dir/report/trajectory.png`).

    One panel per conflict benchmark: cf-acc and par-acc vs step (M_C in likelihood mode) with shaded 95%
    bootstrap bands, plus the primary metric on the `known` subset dashed when it exists; one more panel for ID
    accuracy when the study has it, so the inversion (conflict metric falls while ID accuracy rises) can be
    read across panels. `epoch_boundaries` are the steps at which epoch 1, 2, ... end: dotted lines. Axes are
    scaled to the data, not to [0, 1], so small changes stay visible; the bands show how small they are.
    The file is written atomically (temporary file, then rename), so a reader never sees half a PNG.
    """
    from ctxrel.rundir.files import RunDir

    run_path = Path(run_dir)
    if not run_path.is_dir():  # RunDir would create it; a report must not invent an empty study
        raise CtxrelError(f"{run_path}: no such run directory")
    rows = RunDir(run_path).metrics()
    traj = trajectory_rows(rows, subset)
    known = trajectory_rows(rows, "known") if subset != "known" else {}
    ids = trajectory_rows(rows, "all").get("id_accuracy")
    ids = ids if ids and "id_accuracy" in ids[0] else None
    conflict = [b for b, e in traj.items() if b != "id_accuracy" and any(m in e[0] for m in CONFLICT_METRICS)]
    if not conflict and ids is None:
        raise CtxrelError(
            f"{run_path}: no trajectory to plot: no cf_acc/par_acc/m_c/id_accuracy rows (subset {subset!r}) of "
            f"checkpoints with a step (step-NNNNNN); evaluate the study's checkpoints into this directory first")
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError:
        raise CtxrelError("plotting needs matplotlib: pip install 'ctxrel[report]'") from None

    panels = len(conflict) + (ids is not None)
    ncols = min(panels, 3)
    nrows = -(-panels // ncols)
    # A bare Figure on an Agg canvas: no pyplot state, no global backend switch, nothing left open.
    fig = Figure(figsize=(5.0 * ncols, 3.6 * nrows))
    FigureCanvasAgg(fig)
    axes = fig.subplots(nrows, ncols, squeeze=False).ravel()
    for ax in axes[panels:]:
        ax.set_visible(False)

    for ax, bench in zip(axes, conflict):
        entries = traj[bench]
        likelihood = "m_c" in entries[0] and "cf_acc" not in entries[0]
        if likelihood:
            _draw(ax, entries, "m_c", "tab:purple", "M_C")
        else:
            _draw(ax, entries, "cf_acc", "tab:blue", "cf-acc")
            _draw(ax, entries, "par_acc", "tab:red", "par-acc")
        main = "m_c" if likelihood else "cf_acc"
        kn = known.get(bench)
        n_known = None
        if kn and main in kn[0]:
            _draw(ax, kn, main, "tab:purple" if likelihood else "tab:blue", f"{LABELS[main]} (known)", dashed=True)
            n_known = kn[-1]["n"]
        n = entries[-1]["n"]
        title = f"{bench} (n={n if n is not None else '?'}" + (f", known {n_known}" if n_known is not None else "")
        ax.set_title(title + (", likelihood)" if likelihood else ")"), fontsize=9)
        ax.set_ylabel("M_C = p_ctx / (p_ctx + p_par)" if likelihood else "share of generations", fontsize=8)
    if ids is not None:
        ax = axes[len(conflict)]
        _draw(ax, ids, "id_accuracy", "black", "ID accuracy")
        ax.set_title(f"id_accuracy (mean of {ids[-1]['n']} tasks)", fontsize=9)
        ax.set_ylabel("accuracy", fontsize=8)
    for ax in axes[:panels]:
        ax.set_xlabel("step", fontsize=8)
        ax.tick_params(labelsize=7)
        ax.grid(alpha=0.25, lw=0.5)
        draw_epoch_lines(ax, epoch_boundaries or [])
        ax.legend(fontsize=7, loc="best")
    fig.suptitle(f"{run_path.resolve().name}: trajectory by step, subset {subset} (shaded: 95% bootstrap CI)",
                 fontsize=10)
    fig.tight_layout()

    dest = Path(out) if out is not None else run_path / "report" / "trajectory.png"
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110)
    atomic_write_bytes(dest, buf.getvalue())
    return dest
