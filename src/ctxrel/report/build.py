"""`ctxrel report` as a function: run directories in, a report directory out.

    <out>/index.html      one self-contained page (PNGs embedded)
    <out>/summary.json    every number on the page, machine-readable
    <out>/*.png           the figures

Runs that share a label are seeds of one study (statistics averaged over them, with a second CI across
seeds); different labels are compared on the same figures. Default <out>: `<first run>/report/` for one study,
`<first run>/report/compare-<label>-<label>.../` for a comparison.
"""

from __future__ import annotations

import json
import math
import re
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Sequence

from ctxrel.core.errors import CtxrelError
from ctxrel.rundir.files import CONFIG_FILE


def group_runs(runs: Sequence[str], labels: Sequence[str] | None = None, seeds: bool = False
               ) -> list[tuple[str, list[str]]]:
    """[(label, [run paths])] in first-seen order. Labels default to the run directories' names; `seeds` puts
    every run in one group. Repeated labels make a group of seeds.

    >>> group_runs(["runs/a1", "runs/a2", "runs/b"], ["a", "a", "b"])
    [('a', ['runs/a1', 'runs/a2']), ('b', ['runs/b'])]
    """
    if not runs:
        raise CtxrelError("no run directory given")
    if labels is not None and len(labels) not in (len(runs), 1 if seeds else len(runs)):
        raise CtxrelError(f"--labels gives {len(labels)} labels for {len(runs)} runs; give one per run "
                          "(repeat a label to group seeds)")
    if labels is None:
        labels = [Path(r).resolve().name for r in runs]
    if seeds:
        return [(labels[0], list(runs))]
    groups: dict[str, list[str]] = {}
    for label, run in zip(labels, runs):
        groups.setdefault(label, []).append(run)
    return list(groups.items())


def default_out(groups: list[tuple[str, list[str]]]) -> Path:
    first = Path(groups[0][1][0])
    if len(groups) == 1:
        return first / "report"
    slug = "-".join(re.sub(r"[^A-Za-z0-9_.]+", "_", label) for label, _ in groups)
    return first / "report" / f"compare-{slug[:80]}"


def _json_safe(x: Any) -> Any:
    """NaN/inf -> None (JSON has no NaN); Paths -> str."""
    if isinstance(x, float):
        return None if math.isnan(x) or math.isinf(x) else x
    if isinstance(x, dict):
        return {str(k): _json_safe(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_json_safe(v) for v in x]
    if isinstance(x, Path):
        return str(x)
    return x


def build_report(runs: Sequence[str], *, labels: Sequence[str] | None = None, out: str | Path | None = None,
                 seeds: bool = False, smooth: int = 0, n_boot: int = 2000, seed: int = 0,
                 flips_from: str = "peak", flips_to: str = "final", flips_subset: str = "all",
                 plan: float | None = None) -> dict[str, Any]:
    """Write the report; return {out, index, summary, figures, groups (the summaries)}. `plan`: a drop (0 < D < 1)
    to plan items and seeds for (analysis/power.py), from the variance of the runs given."""
    from ctxrel.analysis.rundata import load_run
    from ctxrel.analysis.summary import summarise
    from ctxrel.report.html import render
    from ctxrel.report.plots import plot_all
    from ctxrel.rundir.files import atomic_write_text

    if plan is not None and not (isinstance(plan, (int, float)) and 0 < plan < 1):
        raise CtxrelError(f"--plan {plan!r}: the drop to plan for must be a share strictly between 0 and 1, e.g. 0.05")
    grouped = group_runs(runs, labels, seeds)
    loaded = [(label, [load_run(p, label) for p in paths]) for label, paths in grouped]
    for label, rs in loaded:
        if not set.intersection(*(set(r.benchmarks()) for r in rs)):
            raise CtxrelError(f"{', '.join(str(r.path) for r in rs)}: no conflict benchmark with records at "
                              "checkpoints with a step (step-NNNNNN); run ctxrel study or ctxrel eval --run first")
    try:
        summaries = [summarise(rs, label, smooth=smooth, n_boot=n_boot, seed=seed, flips_from=flips_from,
                               flips_to=flips_to, flips_subset=flips_subset, plan=plan) for label, rs in loaded]
    except ValueError as e:  # a --from/--to that names no checkpoint
        raise CtxrelError(str(e)) from None
    if not set.intersection(*(set(s["benchmarks"]) for s in summaries)):
        raise CtxrelError("the runs compared share no conflict benchmark: " + "; ".join(
            f"{s['label']}: {', '.join(s['benchmarks']) or 'none'}" for s in summaries))
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        raise CtxrelError("the report needs matplotlib: pip install 'ctxrel[report]'") from None

    from ctxrel.rundir import marker as run_marker
    from ctxrel.analysis.rundata import live_text

    live = [t for _, rs in loaded for r in rs if (t := live_text(r))]  # runs still being written
    dest = Path(out) if out is not None else default_out(grouped)
    with run_marker.held(dest, "report", verb="report"):
        return _write_report(dest, loaded, summaries, live)


def _write_report(dest: Path, loaded, summaries, live: list[str] = ()) -> dict[str, Any]:
    from ctxrel.report.html import render
    from ctxrel.report.plots import plot_all
    from ctxrel.rundir.files import atomic_write_text

    figures = plot_all(summaries, dest)
    configs = {}
    for label, rs in loaded:
        for r in rs:
            cfg = r.path / CONFIG_FILE
            if cfg.exists():
                configs[f"{label}: {r.path}"] = cfg.read_text()
    title = ("ctxrel report: " + " vs ".join(s["label"] for s in summaries)
             + (" (snapshot of a running study: the checkpoints evaluated so far)" if live else ""))
    index = dest / "index.html"
    atomic_write_text(index, render(summaries, figures, configs, title))
    summary_path = dest / "summary.json"
    payload = dict(generated=datetime.now(timezone.utc).isoformat(timespec="seconds"), title=title,
                   figures={b: [p.name for p in ps] for b, ps in figures.items()}, groups=summaries, live=list(live))
    atomic_write_text(summary_path, json.dumps(_json_safe(payload), indent=1))
    return dict(out=dest, index=index, summary=summary_path, figures=figures, groups=summaries, live=list(live))
