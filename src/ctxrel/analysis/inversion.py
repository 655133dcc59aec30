"""Trajectory statistics and the inversion verdict (Goyal et al., ICLR 2025, Sec. 4: cf-acc rises early in
instruction finetuning, then falls while ID accuracy keeps rising). Pure: item values in, plain data out.

A trajectory is a list of `Point`s ordered by step; each point holds, per seed (one run = one seed), the item
values of the followed metric (items.py: cf-acc, or M_C in likelihood mode). From it:

* start / peak / trough / final: value and step. Peak = highest value (earliest on ties); trough = lowest value
  at or after the peak (how far the fall went); final = last checkpoint.
* rise = peak - start and drop = peak - final, each with a **paired bootstrap CI over items**: the same items
  at both checkpoints, resampled together (percentile bootstrap of the mean per-item difference, core/metrics.py).
  With several seeds the item values are first averaged over seeds, and a second CI **across seeds** is given
  (t interval of the per-seed differences, scipy.stats.t), which captures training randomness.
* verdict: `inversion` when the rise and the drop both have CIs excluding 0 (all CIs given); otherwise
  `rise` (significant rise, no significant drop after it: a monotone rise or a plateau), `fall` (no significant
  rise, significant drop), `no_change`, or `undetermined` (fewer than 3 checkpoints, or no per-item records).

Caveat (stated in reports): the peak is chosen on the same data that test it, so with many checkpoints the
intervals are somewhat optimistic; seeds or a second item sample settle a borderline verdict.

Smoothing (optional, always labelled): a centred moving average of each item's values over `window`
checkpoints (shrinking at the ends); peak and CIs are then those of the smoothed trajectory.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any, Sequence

import numpy as np

from ctxrel.core.metrics import bootstrap_ci

VERDICTS = {
    "inversion": "inversion: significant rise to the peak, then significant drop to the end",
    "rise": "rise without inversion: significant rise, no significant drop after the peak",
    "fall": "fall: no significant rise before the peak, significant drop after it",
    "no_change": "no significant change: neither the rise nor the drop has a CI excluding 0",
    "undetermined": "undetermined",
}


@dataclass
class Point:
    """One checkpoint of a trajectory. `items` holds one {item id: value} per seed; `values` the per-seed
    means when no item records are available (then no CI can be computed)."""
    step: int
    checkpoint: str
    items: list[dict[str, float]] = field(default_factory=list)
    values: list[float] = field(default_factory=list)
    epoch: float | None = None

    def seed_values(self) -> list[float]:
        if self.items:
            return [float(np.mean(list(d.values()))) if d else math.nan for d in self.items]
        return list(self.values)

    @property
    def value(self) -> float:
        v = [x for x in self.seed_values() if not math.isnan(x)]
        return float(np.mean(v)) if v else math.nan


@dataclass
class Diff:
    """b - a at two checkpoints: estimate, CI and what the CI is over (`items` or `seeds`)."""
    estimate: float
    ci_low: float = math.nan
    ci_high: float = math.nan
    n: int = 0
    basis: str = "items"

    @property
    def significant(self) -> bool:
        """The CI excludes 0 (NaN bounds: not significant)."""
        return bool(self.ci_low > 0 or self.ci_high < 0)


def paired_bootstrap_diff(a: dict[str, float], b: dict[str, float], *, n_boot: int = 2000, level: float = 0.95,
                          seed: int = 0) -> Diff:
    """Mean of b[i] - a[i] over items present at both checkpoints, with a percentile bootstrap CI that
    resamples items (each item's pair stays together). Identical values give a zero-width CI at 0.

    >>> d = paired_bootstrap_diff({"x": 0.0, "y": 0.0}, {"x": 1.0, "y": 1.0})
    >>> (d.estimate, d.ci_low, d.ci_high, d.n)
    (1.0, 1.0, 1.0, 2)
    """
    common = [i for i in a if i in b]
    if not common:
        return Diff(math.nan, n=0)
    d = np.array([[b[i] - a[i]] for i in common])
    lo, hi = bootstrap_ci(d, n_boot=n_boot, level=level, seed=seed)
    return Diff(float(d.mean()), float(lo[0]), float(hi[0]), len(common), "items")


def seeds_diff(a: Sequence[float], b: Sequence[float], *, level: float = 0.95) -> Diff:
    """Mean over seeds of b_s - a_s with a t interval (needs 2+ seeds; NaN bounds otherwise)."""
    from scipy import stats

    d = np.asarray(b, float) - np.asarray(a, float)
    d = d[~np.isnan(d)]
    if len(d) < 2:
        return Diff(float(d.mean()) if len(d) else math.nan, n=len(d), basis="seeds")
    half = stats.t.ppf(0.5 + level / 2, len(d) - 1) * d.std(ddof=1) / math.sqrt(len(d))
    return Diff(float(d.mean()), float(d.mean() - half), float(d.mean() + half), len(d), "seeds")


def mean_over_seeds(items: list[dict[str, float]]) -> dict[str, float]:
    """Each item's value averaged over the seeds that have it (items missing in a seed are kept)."""
    acc: dict[str, list[float]] = {}
    for d in items:
        for i, v in d.items():
            acc.setdefault(i, []).append(v)
    return {i: float(np.mean(v)) for i, v in acc.items()}


def smooth(points: list[Point], window: int) -> list[Point]:
    """Centred moving average over `window` checkpoints (shrinking at the ends), item by item and seed by seed;
    an item enters a smoothed point only if every checkpoint in the window has it. window <= 1: unchanged."""
    if window <= 1:
        return points
    half = window // 2
    out = []
    for k, p in enumerate(points):
        win = points[max(0, k - half): k + (window - half)]
        items = []
        for s in range(len(p.items)):
            maps = [w.items[s] for w in win if s < len(w.items)]
            ids = [i for i in maps[0] if all(i in m for m in maps)]
            items.append({i: float(np.mean([m[i] for m in maps])) for i in ids})
        values = [float(np.mean([w.values[s] for w in win])) for s in range(len(p.values))] if not p.items else []
        out.append(Point(p.step, p.checkpoint, items, values, p.epoch))
    return out


def diffs_between(a: Point, b: Point, *, n_boot: int, level: float, seed: int) -> list[Diff]:
    """b - a: a paired item bootstrap (on seed-averaged item values) and, with 2+ seeds, a seeds interval."""
    diffs = []
    if a.items and b.items:
        diffs.append(paired_bootstrap_diff(mean_over_seeds(a.items), mean_over_seeds(b.items),
                                           n_boot=n_boot, level=level, seed=seed))
    else:
        diffs.append(Diff(b.value - a.value, n=0, basis="none"))
    sa, sb = a.seed_values(), b.seed_values()
    if len(sa) >= 2 and len(sa) == len(sb):
        diffs.append(seeds_diff(sa, sb, level=level))
    return diffs


def _at(p: Point) -> dict[str, Any]:
    return dict(step=p.step, checkpoint=p.checkpoint, value=p.value, epoch=p.epoch)


def verdict_of(rise: list[Diff], drop: list[Diff], n_points: int) -> str:
    """Verdict code from the rise (peak - start) and drop (peak - final) intervals: a change counts when it is
    positive and every CI given for it excludes 0."""
    if n_points < 3 or any(d.basis == "none" for d in rise + drop):
        return "undetermined"
    up = all(d.significant and d.estimate > 0 for d in rise)
    down = all(d.significant and d.estimate > 0 for d in drop)
    return {(True, True): "inversion", (True, False): "rise", (False, True): "fall",
            (False, False): "no_change"}[(up, down)]


def _peak_trough(pts: list[Point]) -> tuple[int, int]:
    values = [p.value for p in pts]
    k_peak = int(np.argmax(values))  # first maximum: earliest step wins a tie
    return k_peak, k_peak + int(np.argmin(values[k_peak:]))


def smoothed_trajectory(points: list[Point], smooth_window: int) -> list[Point]:
    """The points with a value, by step, smoothed when asked: what every statistic of a trajectory reads."""
    return smooth(sorted((p for p in points if not math.isnan(p.value)), key=lambda p: p.step), smooth_window)


def anchors(points: list[Point], smooth_window: int = 0) -> dict[str, int]:
    """{start, peak, trough, final: step} of a trajectory (peak on the smoothed values when smoothing), without
    the bootstrap: what `--from peak --to final` resolve against. {} when no point has a value."""
    pts = smoothed_trajectory(points, smooth_window)
    if not pts:
        return {}
    k_peak, k_trough = _peak_trough(pts)
    return dict(start=pts[0].step, peak=pts[k_peak].step, trough=pts[k_trough].step, final=pts[-1].step)


def return_stats(points: list[Point], *, smooth_window: int = 0, n_boot: int = 2000, level: float = 0.95,
                 seed: int = 0) -> dict[str, Any]:
    """The return of a metric after its trough (par-acc: the memorised answer coming back after finetuning first
    suppressed it): final - trough, with the same intervals as a drop. The trough is the first minimum; a trough at
    the last checkpoint has nothing to return and gives an estimate of 0.

        {trough, final: {step, checkpoint, value, epoch}, change: [Diff...], significant: bool}  ({} without points)
    """
    pts = smoothed_trajectory(points, smooth_window)
    if len(pts) < 3:
        return {}
    trough, final = pts[int(np.argmin([p.value for p in pts]))], pts[-1]
    change = diffs_between(trough, final, n_boot=n_boot, level=level, seed=seed)
    return dict(trough=_at(trough), final=_at(final), change=[asdict(d) for d in change],
                significant=all(d.significant and d.estimate > 0 for d in change))


def trajectory_stats(points: list[Point], *, smooth_window: int = 0, n_boot: int = 2000, level: float = 0.95,
                     seed: int = 0) -> dict[str, Any]:
    """Statistics of one trajectory (see the module docstring), as plain JSON-ready data:

        {n_points, n_seeds, n_items, smoothed, start, peak, trough, final: {step, checkpoint, value, epoch},
         rise: [Diff...], drop: [Diff...], verdict, verdict_text}

    `rise`/`drop` list the item-bootstrap interval first, then the seeds interval when there are 2+ seeds.
    """
    pts = smoothed_trajectory(points, smooth_window)
    if not pts:
        return dict(n_points=0, n_seeds=0, n_items=0, smoothed=smooth_window if smooth_window > 1 else None,
                    verdict="undetermined", verdict_text="undetermined: no checkpoint has a value")
    k_peak, k_trough = _peak_trough(pts)
    start, peak, final = pts[0], pts[k_peak], pts[-1]
    rise = diffs_between(start, peak, n_boot=n_boot, level=level, seed=seed)
    drop = diffs_between(final, peak, n_boot=n_boot, level=level, seed=seed)
    code = verdict_of(rise, drop, len(pts))
    text = VERDICTS[code]
    if code == "rise":
        text = ("monotone rise: peak at the last checkpoint" if k_peak == len(pts) - 1 else
                "rise, then plateau: significant rise, drop after the peak not significant")
    elif code == "undetermined":
        text += (": fewer than 3 checkpoints" if len(pts) < 3 else ": no per-item records to pair")
    return dict(n_points=len(pts), n_seeds=max(len(p.seed_values()) for p in pts),
                n_items=len(mean_over_seeds(final.items)) if final.items else 0,
                smoothed=smooth_window if smooth_window > 1 else None,
                start=_at(start), peak=_at(peak), trough=_at(pts[k_trough]), final=_at(final),
                rise=[asdict(d) for d in rise], drop=[asdict(d) for d in drop], verdict=code,
                verdict_text=text, level=level)
