"""The blocks a reviewer asks for beside a verdict, added to one subset's trajectory statistics as new keys
(today's keys and values are left exactly as inversion.trajectory_stats made them):

* `power`            per change (rise, drop) and level (items, seeds, seeds+items): SE, MDE at 80% power,
                     the largest change the interval still allows (power.change_power);
* `honest`           the selection-honest verdict: peak on a seeded half of the items, tested on the other half;
                     leave one seed out with 3+ seeds (honest.honest_stats);
* `plan`             with a drop to plan for: the items and seeds that detect it (power.plan);
* `decomposition`    generate mode: start -> peak and peak -> final changes of cf-acc, par-acc, both, neither
                     (decompose.decomposition);
* `context_share`    generate mode: cf / (cf + par), its trajectory and its own secondary verdict.

Pure given the trajectories (summary.py reads them from the runs).
"""

from __future__ import annotations

from typing import Any, Callable

from ctxrel.analysis.decompose import OUTCOME_METRICS, TERMS, context_share_stats, decomposition, outcome_shares
from ctxrel.analysis.honest import honest_stats
from ctxrel.analysis.inversion import Point, smoothed_trajectory
from ctxrel.analysis.power import change_power, item_differences, plan, seed_item_differences

SPLIT_SEED = 0  # the item split of the selection-honest verdict (written into its output)


def scrutinise(st: dict[str, Any], points: list[Point], *, metric: str, trajectory: Callable[[str], list[Point]],
               smooth: int = 0, n_boot: int = 2000, seed: int = 0, plan_drop: float | None = None
               ) -> dict[str, Any]:
    """The new keys for one subset's statistics `st` (inversion.trajectory_stats of `points`); `trajectory(m)`
    gives the same runs' trajectory of item metric m (par_acc, share_*), needed in generate mode."""
    out: dict[str, Any] = {}
    pts = {p.step: p for p in smoothed_trajectory(points, smooth)}
    if st.get("peak") and all(st[k]["step"] in pts for k in ("start", "peak", "final")):
        start, peak, final = (pts[st[k]["step"]] for k in ("start", "peak", "final"))
        if start.items and peak.items:
            out["power"] = dict(alpha=0.05, power=0.8, level=st.get("level", 0.95),
                                rise=change_power(start, peak, st["rise"], n_boot=n_boot, seed=seed),
                                drop=change_power(final, peak, st["drop"], n_boot=n_boot, seed=seed),
                                # the changes that are 0 by construction (the peak is the first / last checkpoint)
                                untested=[c for c, (x, y) in (("rise", (start, peak)), ("drop", (peak, final)))
                                          if x.step == y.step])
            if plan_drop is not None:
                out["plan"] = dict(plan(seed_item_differences(final, peak), item_differences(final, peak), plan_drop),
                                   change="drop", from_step=peak.step, to_step=final.step)
    out["honest"] = honest_stats(points, smooth_window=smooth, n_boot=n_boot, seed=seed, split_seed=SPLIT_SEED)
    if metric == "cf_acc" and st.get("peak"):
        by = {m: points if m == "cf_acc" else trajectory(m) for m in set(TERMS) | set(OUTCOME_METRICS)}
        if all(by.values()):
            by_s = {m: smoothed_trajectory(p, smooth) for m, p in by.items()}
            marks = [("start", "peak"), ("peak", "final")]
            out["decomposition"] = {f"{a}->{b}": decomposition(by_s, st[a]["step"], st[b]["step"], n_boot=n_boot,
                                                               seed=seed) for a, b in marks}
            out["context_share"] = context_share_stats(by["cf_acc"], by["par_acc"], smooth_window=smooth,
                                                       n_boot=n_boot, seed=seed)
            out["outcome_shares"] = outcome_shares(by_s)
    return out

