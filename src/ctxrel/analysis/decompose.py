"""What a change of cf-acc is made of, and the context share. Pure: Points in, plain data out.

Every generation has one outcome: context (only the context answer), parametric (only the parametric one), both,
or neither. cf-acc counts context + both, par-acc parametric + both, so per generation, per item and for the mean

    cf = 1 - par + both - neither,     hence     delta cf = -delta par + delta both - delta neither     (1)

exactly. A cf-acc that stays flat can hide par-acc rising while "neither" falls (the model answers more often,
and more often from memory). `decomposition` gives each term of (1) between two checkpoints with the same paired
intervals as a rise or drop (inversion._between: item bootstrap; seeds t interval with 2+ seeds).

The **context share** CS = sum_i cf_i / sum_i (cf_i + par_i) = cf-acc / (cf-acc + par-acc), over the items that
give either answer (items giving neither add nothing to either sum): how often the model follows the context
*when it answers at all*; 1 - CS is the memorization ratio of the knowledge-conflict literature (Longpre et al.
2021). Being a ratio, its intervals resample items and recompute the ratio at both checkpoints on the same draw
(paired percentile bootstrap), and per seed for the seeds t interval. `context_share_stats` gives it a
trajectory and a verdict of its own, the same rules as the cf-acc verdict; it is *secondary*: the pre-registered
verdict is cf-acc's (or M_C's).
"""

from __future__ import annotations

import math
from dataclasses import asdict
from typing import Any

import numpy as np

from ctxrel.analysis.inversion import (VERDICTS, Diff, Point, diffs_between, mean_over_seeds, seeds_diff,
                                       smooth, verdict_of)

OUTCOME_METRICS = ("share_context", "share_parametric", "share_both", "share_neither")  # items.py metric names
TERMS = ("cf_acc", "par_acc", "share_both", "share_neither")  # the terms of (1)


def _by_step(points: list[Point]) -> dict[int, Point]:
    return {p.step: p for p in points}


def decomposition(by_metric: dict[str, list[Point]], a_step: int, b_step: int, *, n_boot: int = 2000,
                  level: float = 0.95, seed: int = 0) -> dict[str, Any]:
    """The change a -> b of each term of (1): {from, to, cf_acc, par_acc, share_both, share_neither: [Diff...],
    check}. `by_metric` holds the trajectories of the TERMS (same runs, subset and steps). `check` is
    -d par + d both - d neither - d cf on the estimates: 0 up to rounding, by (1)."""
    out: dict[str, Any] = {"from": a_step, "to": b_step}
    for m in TERMS:
        pts = _by_step(by_metric[m])
        if a_step not in pts or b_step not in pts:
            return {}
        out[m] = [asdict(d) for d in diffs_between(pts[a_step], pts[b_step], n_boot=n_boot, level=level, seed=seed)]
    est = {m: out[m][0]["estimate"] for m in TERMS}
    out["check"] = -est["par_acc"] + est["share_both"] - est["share_neither"] - est["cf_acc"]
    return out


def context_share(cf: dict[str, float], par: dict[str, float]) -> float:
    """sum cf / sum (cf + par) over the items of `cf` (NaN when no item gives either answer).

    >>> context_share({"a": 1.0, "b": 0.0, "c": 0.0}, {"a": 0.0, "b": 1.0, "c": 0.0})
    0.5
    """
    num = sum(cf.values())
    den = num + sum(par[i] for i in cf)
    return num / den if den > 0 else math.nan


def share_points(cf_pts: list[Point], par_pts: list[Point]) -> list[tuple[int, list[float], float]]:
    """(step, per-seed CS, pooled CS on seed-averaged items) per step both trajectories have."""
    par = _by_step(par_pts)
    out = []
    for p in cf_pts:
        q = par.get(p.step)
        if q is None:
            continue
        seeds = [context_share(c, r) for c, r in zip(p.items, q.items)]
        out.append((p.step, seeds, context_share(mean_over_seeds(p.items), mean_over_seeds(q.items))))
    return out


def paired_share_diff(cf_a: dict[str, float], par_a: dict[str, float], cf_b: dict[str, float],
                      par_b: dict[str, float], *, n_boot: int = 2000, level: float = 0.95, seed: int = 0) -> Diff:
    """CS(b) - CS(a) over items present at both checkpoints, with a paired percentile bootstrap: each replicate
    resamples items once and recomputes both ratios on that draw (replicates whose ratio is undefined are
    dropped)."""
    ids = [i for i in cf_a if i in cf_b and i in par_a and i in par_b]
    if not ids:
        return Diff(math.nan, n=0)
    m = np.array([[cf_a[i], par_a[i], cf_b[i], par_b[i]] for i in ids])  # (n, 4)
    est = context_share(dict(zip(ids, m[:, 2])), dict(zip(ids, m[:, 3]))) - \
        context_share(dict(zip(ids, m[:, 0])), dict(zip(ids, m[:, 1])))
    rng = np.random.default_rng(seed)
    sums = np.stack([m[rng.integers(0, len(ids), len(ids))].sum(axis=0) for _ in range(n_boot)])  # (n_boot, 4)
    with np.errstate(invalid="ignore", divide="ignore"):
        reps = sums[:, 2] / (sums[:, 2] + sums[:, 3]) - sums[:, 0] / (sums[:, 0] + sums[:, 1])
    reps = reps[~np.isnan(reps)]
    if not len(reps) or math.isnan(est):
        return Diff(est, n=len(ids))
    alpha = (1 - level) / 2
    return Diff(float(est), float(np.quantile(reps, alpha)), float(np.quantile(reps, 1 - alpha)), len(ids), "items")


def _share_between(cf: dict[int, Point], par: dict[int, Point], a: int, b: int, *, n_boot: int, level: float,
                   seed: int) -> list[Diff]:
    diffs = [paired_share_diff(mean_over_seeds(cf[a].items), mean_over_seeds(par[a].items),
                               mean_over_seeds(cf[b].items), mean_over_seeds(par[b].items),
                               n_boot=n_boot, level=level, seed=seed)]
    if len(cf[a].items) >= 2:
        sa = [context_share(c, r) for c, r in zip(cf[a].items, par[a].items)]
        sb = [context_share(c, r) for c, r in zip(cf[b].items, par[b].items)]
        diffs.append(seeds_diff(sa, sb, level=level))
    return diffs


def context_share_stats(cf_pts: list[Point], par_pts: list[Point], *, smooth_window: int = 0, n_boot: int = 2000,
                        level: float = 0.95, seed: int = 0) -> dict[str, Any]:
    """The context share's trajectory and its own (secondary) verdict, by the rules of inversion.verdict_of:

        {secondary: True, series: [{step, value, seeds}], start, peak, final: {step, value}, rise, drop: [Diff...],
         verdict, verdict_text}

    The peak is the highest pooled CS (earliest on ties); rise = peak - start, drop = peak - final."""
    cf_s = smooth(sorted(cf_pts, key=lambda p: p.step), smooth_window)
    par_s = smooth(sorted(par_pts, key=lambda p: p.step), smooth_window)
    series = [(s, seeds, v) for s, seeds, v in share_points(cf_s, par_s) if not math.isnan(v)]
    base = dict(secondary=True, series=[dict(step=s, value=v, seeds=seeds) for s, seeds, v in series])
    if len(series) < 3:
        return dict(base, verdict="undetermined", verdict_text="undetermined: fewer than 3 checkpoints")
    values = [v for _, _, v in series]
    k_peak = int(np.argmax(values))
    steps = [s for s, _, _ in series]
    cf, par = _by_step(cf_s), _by_step(par_s)
    rise = _share_between(cf, par, steps[0], steps[k_peak], n_boot=n_boot, level=level, seed=seed)
    drop = _share_between(cf, par, steps[-1], steps[k_peak], n_boot=n_boot, level=level, seed=seed)
    code = verdict_of(rise, drop, len(series))
    text = VERDICTS[code]
    if code == "rise":
        text = ("monotone rise: peak at the last checkpoint" if k_peak == len(series) - 1 else
                "rise, then plateau: significant rise, drop after the peak not significant")
    at = {k: dict(step=steps[j], value=values[j]) for k, j in (("start", 0), ("peak", k_peak), ("final", -1))}
    return dict(base, **at, rise=[asdict(d) for d in rise], drop=[asdict(d) for d in drop], verdict=code,
                verdict_text=text, level=level)


def outcome_shares(by_metric: dict[str, list[Point]]) -> list[dict[str, Any]]:
    """[{step, context, parametric, both, neither}] per step: the mean shares of the four outcomes (they sum to
    1), what the stacked figure draws."""
    steps = sorted(set.intersection(*(set(_by_step(by_metric[m])) for m in OUTCOME_METRICS)))
    maps = {m: _by_step(by_metric[m]) for m in OUTCOME_METRICS}
    return [dict(step=s, **{m.removeprefix("share_"): maps[m][s].value for m in OUTCOME_METRICS}) for s in steps]
