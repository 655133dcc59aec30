"""The summary of a study (or of several seeds of one): every statistic the report shows, as JSON-ready data.

Per conflict benchmark: trajectory statistics and verdict for the followed metric (cf-acc; M_C in likelihood
mode), unfiltered (`all`) and knowledge-filtered (`known`) side by side, the same per category, the per-step
series the plots draw (mean over seeds, 95% item-bootstrap CI), and the item flips between two checkpoints
(peak -> final by default) of each run.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from ctxrel.analysis.flips import flips_by_category, resolve_checkpoint
from ctxrel.analysis.inversion import Point, anchors, mean_over_seeds, return_stats, trajectory_stats
from ctxrel.analysis.items import categories
from ctxrel.analysis.probes import weights_summary
from ctxrel.analysis.rundata import Run, metric_series, outcomes_at, trajectory_points, weight_steps
from ctxrel.analysis.scrutiny import scrutinise
from ctxrel.core.metrics import bootstrap_ci

SUBSETS = ("all", "known")
SERIES_METRICS = {"generate": ("cf_acc", "par_acc"), "likelihood": ("m_c",)}
ATTENTION_METRICS = ("attention_context", "attention_question")


def series(points: list[Point], *, n_boot: int = 1000, seed: int = 0) -> list[dict[str, Any]]:
    """[{step, epoch, value, ci_low, ci_high, n}] per point: mean over seeds and items, with a 95% bootstrap
    interval over (seed-averaged) items."""
    out = []
    for p in points:
        vals = np.array([[v] for v in mean_over_seeds(p.items).values()])
        lo, hi = bootstrap_ci(vals, n_boot=n_boot, seed=seed) if len(vals) else ([np.nan], [np.nan])
        out.append(dict(step=p.step, epoch=p.epoch, value=p.value, ci_low=float(lo[0]), ci_high=float(hi[0]),
                        n=len(vals)))
    return out


def benchmark_summary(runs: list[Run], benchmark: str, *, smooth: int = 0, n_boot: int = 2000, seed: int = 0,
                      flips_from: str = "peak", flips_to: str = "final", flips_subset: str = "all",
                      plan: float | None = None) -> dict[str, Any]:
    mode = runs[0].mode(benchmark)
    metric = "m_c" if mode == "likelihood" else "cf_acc"
    out: dict[str, Any] = dict(benchmark=benchmark, mode=mode, metric=metric, subsets={}, series={},
                               categories={}, category_series={}, attention={})
    if len(runs) > 1:  # seeds pool only the steps every one of them has: name the checkpoints left out
        have = [set(run.checkpoint_steps(benchmark)) for run in runs]
        common = set.intersection(*have)
        left = {Path(run.path).name: sorted(h - common) for run, h in zip(runs, have) if h - common}
        if left:
            out["steps_left_out"] = left
    for subset in SUBSETS:
        pts = trajectory_points(runs, benchmark, metric, subset)
        if not pts:
            continue
        out["subsets"][subset] = trajectory_stats(pts, smooth_window=smooth, n_boot=n_boot, seed=seed)
        if runs[0].stages:  # each stage's own trajectory: from the checkpoint it starts at to its last one
            out["subsets"][subset]["stages"] = [
                dict(stage, **trajectory_stats([p for p in pts if stage["offset"] <= p.step
                                                <= stage["offset"] + stage["total"]],
                                               smooth_window=smooth, n_boot=n_boot, seed=seed))
                for stage in runs[0].stages]
        if len(runs) > 1:  # each seed on its own: its paired item-bootstrap rise and drop
            out["subsets"][subset]["per_seed"] = [
                dict(run=Path(run.path).name, **trajectory_stats(trajectory_points([run], benchmark, metric, subset),
                                                       smooth_window=smooth, n_boot=n_boot, seed=seed))
                for run in runs]
        by_metric = {m: pts if m == metric else trajectory_points(runs, benchmark, m, subset)
                     for m in SERIES_METRICS[mode]}
        # the memorised answer back after its trough (docs/design.md, 'Words': memory return), pooled and per seed
        if mode == "generate":
            out["subsets"][subset]["memory_return"] = return_stats(by_metric["par_acc"], smooth_window=smooth,
                                                                   n_boot=n_boot, seed=seed)
            for one, run in zip(out["subsets"][subset].get("per_seed", []), runs):
                one["memory_return"] = return_stats(trajectory_points([run], benchmark, "par_acc", subset),
                                                    smooth_window=smooth, n_boot=n_boot, seed=seed)
        out["series"][subset] = {m: series(p, n_boot=min(n_boot, 1000), seed=seed) for m, p in by_metric.items()}
        # new keys beside today's (power, selection-honest verdict, plan, decomposition, context share): scrutiny.py
        out["subsets"][subset].update(scrutinise(
            out["subsets"][subset], pts, metric=metric, smooth=smooth, n_boot=n_boot, seed=seed, plan_drop=plan,
            trajectory=lambda m, s=subset: by_metric.get(m) or trajectory_points(runs, benchmark, m, s)))
    recs = [r for run in runs for (c, b), rs in run.records.items() if b == benchmark for r in rs]
    cats = categories(recs)
    for cat in cats if len(cats) > 1 else []:  # one category: the benchmark's own statistics say it all
        for subset in SUBSETS:
            pts = trajectory_points(runs, benchmark, metric, subset, category=cat)
            if len(pts) and all(p.items and p.items[0] for p in pts):
                out["categories"].setdefault(cat, {})[subset] = trajectory_stats(
                    pts, smooth_window=smooth, n_boot=n_boot, seed=seed)
                out["category_series"].setdefault(cat, {})[subset] = series(pts, n_boot=200, seed=seed)
    for subset in SUBSETS:
        att = {m: [dict(step=s, value=v, ci_low=lo, ci_high=hi) for s, v, lo, hi in
                   metric_series(runs[0], benchmark, m, subset)] for m in ATTENTION_METRICS}
        if any(att.values()):
            out["attention"][subset] = att
    if "all" in out["subsets"]:  # probes of the first run: heads at peak vs final, lens per checkpoint
        from ctxrel.analysis.rundata import probe_summaries

        marks = anchors(trajectory_points(runs[:1], benchmark, metric, "all"), smooth)
        found = probe_summaries(runs[0], benchmark, marks, n_boot=min(n_boot, 1000), seed=seed)
        if found:
            out["probes"] = found
    if mode == "generate" and flips_subset in out["subsets"]:
        marks = anchors(trajectory_points(runs, benchmark, metric, flips_subset), smooth)
        # a multi-stage study: each stage's name names its last checkpoint (--flips-from sft --flips-to dpo)
        marks.update({st["name"]: st["offset"] + st["total"] for st in runs[0].stages
                      if st["offset"] + st["total"] in runs[0].checkpoint_steps(benchmark)})
        # seeds share their group's label: each seed's table is named by its own run directory
        out["flips"] = [run_flips(run, benchmark, marks, flips_from, flips_to, flips_subset,
                                  name=Path(run.path).name if len(runs) > 1 else None) for run in runs]
    return out


def run_flips(run: Run, benchmark: str, marks: dict[str, int], frm: str, to: str, subset: str,
              name: str | None = None) -> dict[str, Any]:
    """Flips of one run between two checkpoints named as in flips.resolve_checkpoint; `marks` are the
    trajectory's anchors (inversion.anchors: start, peak, trough, final -> step); `name` replaces the run's label."""
    steps = sorted(run.checkpoint_steps(benchmark).items())
    a_step, a_ckpt = resolve_checkpoint(frm, steps, marks)
    b_step, b_ckpt = resolve_checkpoint(to, steps, marks)
    oa = outcomes_at(run, benchmark, a_ckpt, subset)
    ob = outcomes_at(run, benchmark, b_ckpt, subset)
    table = flips_by_category(oa, ob)
    examples = {k: [dict(id=i, category=oa[i]["category"], question=oa[i]["question"],
                         context_answer=oa[i]["context_answer"], parametric_answer=oa[i]["parametric_answer"],
                         output_from=oa[i]["output"], output_to=ob[i]["output"]) for i in table["all"][k]]
                for k in ("to_parametric", "to_context")}
    return {"run": name or run.label, "subset": subset, "from": dict(spec=str(frm), step=a_step, checkpoint=a_ckpt),
            "to": dict(spec=str(to), step=b_step, checkpoint=b_ckpt), "by_category": table, "items": examples}


def id_accuracy(run: Run) -> list[dict[str, Any]]:
    return [dict(step=s, value=v, ci_low=lo, ci_high=hi) for s, v, lo, hi in metric_series(run, "id_accuracy",
                                                                                          "id_accuracy")]


def summarise(runs: list[Run], label: str, **kw) -> dict[str, Any]:
    """Summary of one group of runs (one run, or seeds of one study) over all its conflict benchmarks.
    Keyword arguments go to benchmark_summary (smooth, n_boot, seed, flips_from, flips_to, flips_subset, plan)."""
    from ctxrel.analysis.mitigation import mitigation_summary
    from ctxrel.benchmarks.contexts import parse_variant

    # every decoding of the conflict items is a trajectory of its own (its own verdict); the gold and irrelevant
    # kinds are about harm, not inversion: they appear in the mitigation summary only
    benches = sorted(b for b in set.intersection(*(set(r.benchmarks()) for r in runs))
                     if parse_variant(b)[1] == "conflict")
    mitigation = mitigation_summary(runs, lambda pts: series(pts, n_boot=min(kw.get("n_boot", 2000), 1000),
                                                             seed=kw.get("seed", 0)),
                                    smooth=kw.get("smooth", 0), n_boot=kw.get("n_boot", 2000), seed=kw.get("seed", 0))
    return dict(label=label, runs=[str(r.path) for r in runs], n_seeds=len(runs),
                epoch_boundaries=runs[0].epoch_boundaries,
                id_accuracy=id_accuracy(runs[0]) if len(runs) == 1 else _mean_id_accuracy(runs),
                benchmarks={b: benchmark_summary(runs, b, **kw) for b in benches}, mitigation=mitigation,
                weights=weights_summary(weight_steps(runs[0])), reward=reward_summary(runs))


def reward_summary(runs: list[Run]) -> list[dict[str, Any]]:
    """The grpo reward per logged step, averaged over the runs (seeds) that logged that step, with the share of
    groups whose rewards were all equal and the KL to the stage's initial weights; [] without a grpo stage. A
    training signal only: the verdicts never use it (the report draws it beside the held-out accuracies, the
    guard against a reward that rises while what it stands for does not)."""
    per_run = [{r["step"]: r for r in run.reward_rows()} for run in runs]
    steps = sorted(set().union(*per_run)) if per_run else []
    out = []
    for step in steps:
        rows = [p[step] for p in per_run if step in p]
        mean = {k: (float(np.mean(v)) if (v := [r[k] for r in rows if isinstance(r.get(k), (int, float))]) else None)
                for k in ("reward", "zero_variance_share", "kl")}
        out.append(dict(step=step, stage=rows[0]["stage"], n_runs=len(rows), **mean))
    return out


def _mean_id_accuracy(runs: list[Run]) -> list[dict[str, Any]]:
    """ID accuracy averaged over seeds at the steps every seed has (no interval: the seeds' own are per run)."""
    per = [{d["step"]: d["value"] for d in id_accuracy(r)} for r in runs]
    steps = sorted(set.intersection(*(set(p) for p in per))) if per else []
    return [dict(step=s, value=float(np.mean([p[s] for p in per])), ci_low=None, ci_high=None) for s in steps]
