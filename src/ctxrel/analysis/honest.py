"""A selection-honest inversion verdict: the peak is chosen on data that do not test it. Pure: Points in, plain
data out.

Today's verdict (inversion.py) picks the peak as the highest checkpoint and tests rise and drop on the same
items. With many checkpoints the highest one is partly noise, so its rise and drop are biased upward and their
intervals cover less than they say (a winner's curse; Kriegeskorte et al. 2009 call it double dipping). Two
remedies, both computed here:

* **item split** -- a seeded random half of the items ("selection half") chooses the peak step; the rise
  (peak - start) and drop (peak - final) are tested on the other half ("test half"), with the same intervals as
  today's verdict (paired item bootstrap, and a seeds t interval with 2+ seeds). The test half never saw the
  choice, so under no change its intervals keep their nominal level -- for noise that is independent between
  items. Noise that moves *every* item of a checkpoint together (the model at that checkpoint, not the item
  sample) is shared by both halves; only other seeds can tell it apart (next point). The split is written out.
* **leave one seed out** (3+ seeds) -- for each seed, the peak step is chosen on the other seeds (all items), and
  that seed's own rise and drop are measured at it; a t interval over the seeds' selection-free changes
  (scipy.stats.t, inversion.seeds_diff) gives a verdict that would survive another training run.
"""

from __future__ import annotations

from dataclasses import asdict
from typing import Any

import numpy as np

from ctxrel.analysis.inversion import (VERDICTS, Diff, Point, diffs_between, smoothed_trajectory, mean_over_seeds,
                                       paired_bootstrap_diff, seeds_diff, verdict_of)


def split_items(ids: list[str], seed: int = 0) -> tuple[list[str], list[str]]:
    """(selection half, test half): a seeded random permutation of the sorted ids, cut in two (the test half gets
    the odd item). The same ids and seed always give the same split.

    >>> split_items(["a", "b", "c", "d", "e"], seed=0)
    (['c', 'e'], ['a', 'b', 'd'])
    """
    order = sorted(ids)
    perm = np.random.default_rng(seed).permutation(len(order))
    half = len(order) // 2
    return sorted(order[k] for k in perm[:half]), sorted(order[k] for k in perm[half:])


def restrict(p: Point, ids: set[str]) -> Point:
    """The point with only the items in `ids` (every seed)."""
    return Point(p.step, p.checkpoint, [{i: v for i, v in d.items() if i in ids} for d in p.items], [], p.epoch)


def _text(code: str, peak_is_last: bool) -> str:
    if code == "rise":
        return ("monotone rise: peak at the last checkpoint" if peak_is_last else
                "rise, then plateau: significant rise, drop after the peak not significant")
    return VERDICTS[code]


def _common_ids(pts: list[Point]) -> list[str]:
    ids = set(mean_over_seeds(pts[0].items))
    for p in pts[1:]:
        ids &= set(mean_over_seeds(p.items))
    return sorted(ids)


def honest_stats(points: list[Point], *, smooth_window: int = 0, n_boot: int = 2000, level: float = 0.95,
                 seed: int = 0, split_seed: int = 0, leave_one_seed_out: bool = True) -> dict[str, Any]:
    """The selection-honest verdict (module docstring):

        {split: {method, seed, n_select, n_test, select_ids}, peak_step, start, peak, final: {step, value (test
         half)}, rise: [Diff...], drop: [Diff...], verdict, verdict_text, level, loso: {...} (3+ seeds)}

    `undetermined` with fewer than 3 checkpoints or 4 common items.
    """
    pts = smoothed_trajectory(points, smooth_window)
    if len(pts) < 3 or not all(p.items for p in pts):
        return dict(verdict="undetermined", verdict_text="undetermined: fewer than 3 checkpoints with item records")
    ids = _common_ids(pts)
    if len(ids) < 4:
        return dict(verdict="undetermined", verdict_text="undetermined: fewer than 4 items to split")
    select, test = split_items(ids, split_seed)
    sel_pts = [restrict(p, set(select)) for p in pts]
    test_pts = [restrict(p, set(test)) for p in pts]
    k_peak = int(np.argmax([p.value for p in sel_pts]))  # first maximum, as inversion._peak_trough
    start, peak, final = test_pts[0], test_pts[k_peak], test_pts[-1]
    rise = diffs_between(start, peak, n_boot=n_boot, level=level, seed=seed)
    drop = diffs_between(final, peak, n_boot=n_boot, level=level, seed=seed)
    code = verdict_of(rise, drop, len(pts))
    out = dict(split=dict(method="random half of the items chooses the peak; the other half tests it",
                          seed=split_seed, n_select=len(select), n_test=len(test), select_ids=select),
               peak_step=peak.step,
               start=dict(step=start.step, value=start.value), peak=dict(step=peak.step, value=peak.value),
               final=dict(step=final.step, value=final.value),
               rise=[asdict(d) for d in rise], drop=[asdict(d) for d in drop], verdict=code,
               verdict_text=_text(code, k_peak == len(pts) - 1), level=level)
    n_seeds = min(len(p.items) for p in pts)
    if leave_one_seed_out and n_seeds >= 3:
        out["loso"] = leave_one_seed_out_stats(pts, n_boot=n_boot, level=level, seed=seed)
    return out


def leave_one_seed_out_stats(pts: list[Point], *, n_boot: int = 2000, level: float = 0.95,
                             seed: int = 0) -> dict[str, Any]:
    """For each seed s: the peak step chosen on the other seeds' mean, s's rise and drop there (paired item
    bootstrap on s alone); then a t interval over the seeds' changes and a verdict from those intervals.

        {per_seed: [{seed, peak_step, rise: Diff, drop: Diff}], rise: Diff (seeds), drop: Diff (seeds), verdict,
         verdict_text}
    """
    k = min(len(p.items) for p in pts)
    per, rises, drops = [], [], []
    for s in range(k):
        others = [Point(p.step, p.checkpoint, [d for j, d in enumerate(p.items) if j != s], [], p.epoch)
                  for p in pts]
        k_peak = int(np.argmax([p.value for p in others]))
        a, pk, z = pts[0].items[s], pts[k_peak].items[s], pts[-1].items[s]
        rise = paired_bootstrap_diff(a, pk, n_boot=n_boot, level=level, seed=seed)
        drop = paired_bootstrap_diff(z, pk, n_boot=n_boot, level=level, seed=seed)
        per.append(dict(seed=s, peak_step=pts[k_peak].step, rise=asdict(rise), drop=asdict(drop)))
        rises.append(rise.estimate)
        drops.append(drop.estimate)
    rise_s = seeds_diff([0.0] * k, rises, level=level)
    drop_s = seeds_diff([0.0] * k, drops, level=level)
    code = verdict_of([rise_s], [drop_s], len(pts))
    last = all(d["peak_step"] == pts[-1].step for d in per)
    return dict(per_seed=per, rise=asdict(rise_s), drop=asdict(drop_s), verdict=code, verdict_text=_text(code, last))


def false_positive_rates(make_null, n_sims: int, *, n_boot: int = 200, seed: int = 0) -> dict[str, float]:
    """Share of planted-null trajectories (`make_null(rng) -> list[Point]`) on which today's verdict, the
    item-split verdict and (3+ seeds) the leave-one-seed-out verdict claim a significant rise, a significant drop,
    or anything but `no_change` (keys `<verdict>_rise`, `_drop`, `_any`): the measured false-positive rates
    (tests and perf/verdict_false_positives.py)."""
    from ctxrel.analysis.inversion import trajectory_stats

    rng = np.random.default_rng(seed)
    counts: dict[str, int] = {}
    for r in range(n_sims):
        pts = make_null(rng)
        hs = honest_stats(pts, n_boot=n_boot, seed=r, split_seed=r)
        found = [("today", trajectory_stats(pts, n_boot=n_boot, seed=r)), ("honest", hs)]
        if "loso" in hs:
            found.append(("loso", dict(hs["loso"], rise=[hs["loso"]["rise"]], drop=[hs["loso"]["drop"]])))
        for name, st in found:
            up = all(Diff(**d).significant and d["estimate"] > 0 for d in st["rise"])
            down = all(Diff(**d).significant and d["estimate"] > 0 for d in st["drop"])
            for what, hit in (("rise", up), ("drop", down), ("any", st["verdict"] != "no_change")):
                counts[f"{name}_{what}"] = counts.get(f"{name}_{what}", 0) + hit
    return {k: v / n_sims for k, v in counts.items()}
