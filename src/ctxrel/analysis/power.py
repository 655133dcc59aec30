"""How much a verdict can see: standard errors, minimum detectable effects, the largest effect an interval still
allows, a two-level (seeds, then items) bootstrap, and a plan of the items and seeds a given drop needs.
Pure: item values in, plain data out. Library: scipy.stats (normal, t and noncentral t distributions) and
scipy.optimize.brentq; the bootstrap resamples with numpy.

A change between two checkpoints a -> b (a rise: start -> peak; a drop: final -> peak, so both are positive when
they happen) is read at two levels, as in inversion.py:

* **items** -- d_i = b_i - a_i per item (values averaged over seeds). SE = sd(d) / sqrt(n). The paired test is a
  z test on the mean (the bootstrap interval of inversion.py is its resampling version), so the minimum
  detectable effect at power 1 - beta, two-sided alpha, is MDE = (z_{1-alpha/2} + z_{1-beta}) * SE
  (Cohen 1988, Ch. 2; with alpha = .05 and power .8 the factor is 2.80). Answers: would another sample of items,
  from these same training runs, agree?
* **seeds** -- D_s = mean over items of seed s. SE = sd(D) / sqrt(k); the test is a one-sample t test with k - 1
  degrees of freedom, whose power at a true effect delta is P(|T'| > t_{1-alpha/2}) with T' noncentral t of
  noncentrality delta / SE; the MDE is the delta at which that power is 1 - beta (solved numerically). Answers:
  would another training run (seed) agree?
* **two-level** -- a hierarchical bootstrap: resample seeds with replacement, then items within each drawn seed,
  and average (Davison & Hinkley 1997, Sec. 3.8). Its interval carries both sources of noise at once.

The *largest effect a null interval still allows* is the interval's upper bound: "a drop of more than X is
excluded (95%)".

The plan (`plan`) models a seed's measured change as delta + u_s + e_s, u_s ~ N(0, sigma_b^2) between seeds and
e_s the mean of n item deviations of variance sigma_w^2: var(D_s) = sigma_b^2 + sigma_w^2 / n (a one-way random
effects model; sigma_b^2 by the method of moments, floored at 0).
"""

from __future__ import annotations

import math
from typing import Any, Sequence

import numpy as np

from ctxrel.analysis.inversion import Diff, Point, mean_over_seeds

ALPHA = 0.05
POWER = 0.80


def z_factor(alpha: float = ALPHA, power: float = POWER) -> float:
    """z_{1-alpha/2} + z_{power}: the MDE in standard errors of a two-sided z test (2.80 at .05 / .80).

    >>> round(z_factor(), 3)
    2.802
    """
    from scipy import stats

    return float(stats.norm.ppf(1 - alpha / 2) + stats.norm.ppf(power))


def standard_error(d: Sequence[float]) -> float:
    """sd(d, ddof=1) / sqrt(n); NaN with fewer than 2 values.

    >>> standard_error([0.0, 1.0, 0.0, 1.0])
    0.28867513459481287
    """
    x = np.asarray(d, float)
    x = x[~np.isnan(x)]
    return float(x.std(ddof=1) / math.sqrt(len(x))) if len(x) >= 2 else math.nan


def mde_items(se: float, *, alpha: float = ALPHA, power: float = POWER) -> float:
    """Minimum detectable effect of the paired item-level test: (z_{1-alpha/2} + z_power) * SE. NaN when the SE
    is 0 (every difference the same, e.g. no item changed): the sample says nothing about the spread, and an MDE
    of 0 would claim that any effect could be seen.

    >>> mde_items(0.0)
    nan
    """
    return z_factor(alpha, power) * se if not math.isnan(se) and se > 0 else math.nan


def t_power(delta_over_se: float, df: int, *, alpha: float = ALPHA) -> float:
    """Power of a two-sided one-sample t test with `df` degrees of freedom when the true effect is
    `delta_over_se` standard errors: P(|T'| > t_{1-alpha/2, df}), T' ~ noncentral t(df, delta/SE)."""
    from scipy import stats

    crit = stats.t.ppf(1 - alpha / 2, df)
    lam = abs(delta_over_se)
    upper, lower = stats.nct.sf(crit, df, lam), stats.nct.cdf(-crit, df, lam)
    # scipy's noncentral t returns NaN where a tail is below its precision: that tail is ~0 (lower) or ~1 (upper)
    return float((1.0 if math.isnan(upper) else upper) + (0.0 if math.isnan(lower) else lower))


def mde_seeds(se: float, k: int, *, alpha: float = ALPHA, power: float = POWER) -> float:
    """Minimum detectable effect of the seeds-level t test over k seeds with standard error `se`: the effect whose
    power (t_power, df = k - 1) is `power`. NaN with fewer than 2 seeds or an SE of 0 (as mde_items).

    >>> round(mde_seeds(1.0, 3) / mde_items(1.0), 2)  # with 3 seeds (t = 4.30) the t test needs ~2x the z test's
    2.02
    """
    from scipy.optimize import brentq

    if k < 2 or math.isnan(se) or se <= 0:
        return math.nan
    lam = brentq(lambda x: t_power(x, k - 1, alpha=alpha) - power, 0.0, 200.0)
    return float(lam * se)


def allowed(diff: dict[str, Any] | Diff) -> float:
    """The largest effect the interval still allows (its upper bound); NaN without an interval."""
    hi = diff.ci_high if isinstance(diff, Diff) else diff.get("ci_high")
    return math.nan if hi is None else float(hi)


# -- the differences behind a change ------------------------------------------------------------------------

def item_differences(a: Point, b: Point) -> np.ndarray:
    """b_i - a_i over items present at both points, item values averaged over seeds (inversion._between's data)."""
    ma, mb = mean_over_seeds(a.items), mean_over_seeds(b.items)
    return np.array([mb[i] - ma[i] for i in ma if i in mb])


def seed_item_differences(a: Point, b: Point) -> list[np.ndarray]:
    """Per seed, b_i - a_i over the items that seed has at both points."""
    return [np.array([db[i] - da[i] for i in da if i in db]) for da, db in zip(a.items, b.items)]


def two_level_replicates(per_seed: list[np.ndarray], *, n_boot: int = 2000, seed: int = 0) -> np.ndarray:
    """Replicates of the hierarchical bootstrap of the mean change: draw k seeds with replacement, then each drawn
    seed's items with replacement, and average the drawn seeds' item means. Each of the k draw positions resamples
    its items afresh, so a seed drawn twice contributes two different item samples (the two-stage scheme)."""
    per_seed = [np.asarray(d, float) for d in per_seed if len(d)]
    k = len(per_seed)
    rng = np.random.default_rng(seed)
    reps = np.zeros(n_boot)
    for _ in range(k):  # draw position
        pick = rng.integers(0, k, size=n_boot)
        for j, d in enumerate(per_seed):
            rows = np.flatnonzero(pick == j)
            if len(rows):
                reps[rows] += d[rng.integers(0, len(d), size=(len(rows), len(d)))].mean(axis=1)
    return reps / max(k, 1)


def two_level_bootstrap(per_seed: list[np.ndarray], *, n_boot: int = 2000, level: float = 0.95,
                        seed: int = 0) -> tuple[Diff, float]:
    """(Diff with basis `seeds+items`, standard error): the percentile interval and the sd of the two-level
    replicates (two_level_replicates); the estimate is the mean of the per-seed means. Needs 2+ seeds with items
    (NaN bounds and SE otherwise)."""
    per_seed = [np.asarray(d, float) for d in per_seed if len(d)]
    k = len(per_seed)
    est = float(np.mean([d.mean() for d in per_seed])) if k else math.nan
    if k < 2:
        return Diff(est, n=k, basis="seeds+items"), math.nan
    reps = two_level_replicates(per_seed, n_boot=n_boot, seed=seed)
    alpha = (1 - level) / 2
    return (Diff(est, float(np.quantile(reps, alpha)), float(np.quantile(reps, 1 - alpha)), k, "seeds+items"),
            float(reps.std(ddof=1)))


def change_power(a: Point, b: Point, diffs: list[dict[str, Any]], *, n_boot: int = 2000, level: float = 0.95,
                 seed: int = 0) -> list[dict[str, Any]]:
    """What the test of the change a -> b can see, one entry per level: items, then (2+ seeds) seeds and
    two-level. Each: {basis, n, estimate, se, mde, allowed, ci_low, ci_high}; `mde` is the minimum detectable
    effect at 80% power, two-sided alpha .05; `allowed` the largest change the interval still allows. `diffs` are
    the change's intervals as trajectory_stats gives them (items first, then seeds), whose bounds are reused.
    No entries when a and b are one checkpoint (the peak is the first or the last): that change is 0 by
    construction, so there is nothing to test and no power to state."""
    out: list[dict[str, Any]] = []
    if a.step == b.step:
        return out
    by_basis = {d["basis"]: d for d in diffs}
    if a.items and b.items:
        d = item_differences(a, b)
        se = standard_error(d)
        it = by_basis.get("items", {})
        out.append(dict(basis="items", n=len(d), estimate=float(d.mean()) if len(d) else math.nan, se=se,
                        mde=mde_items(se), allowed=allowed(it), ci_low=it.get("ci_low", math.nan),
                        ci_high=it.get("ci_high", math.nan)))
    sa, sb = a.seed_values(), b.seed_values()
    if len(sa) >= 2 and len(sa) == len(sb):
        dd = np.asarray(sb, float) - np.asarray(sa, float)
        dd = dd[~np.isnan(dd)]
        se = standard_error(dd)
        sd = by_basis.get("seeds", {})
        out.append(dict(basis="seeds", n=len(dd), estimate=float(dd.mean()), se=se, mde=mde_seeds(se, len(dd)),
                        allowed=allowed(sd), ci_low=sd.get("ci_low", math.nan), ci_high=sd.get("ci_high", math.nan)))
        if a.items and b.items:
            per = seed_item_differences(a, b)
            tl, se2 = two_level_bootstrap(per, n_boot=n_boot, level=level, seed=seed)
            out.append(dict(basis="seeds+items", n=tl.n, estimate=tl.estimate, se=se2, mde=mde_items(se2),
                            allowed=allowed(tl), ci_low=tl.ci_low, ci_high=tl.ci_high))
    return out


# -- planning -------------------------------------------------------------------------------------------------

def variance_components(per_seed: list[np.ndarray]) -> dict[str, float]:
    """{sigma_w, sigma_b, n}: the within-seed sd of item changes (pooled over seeds), the between-seed sd of the
    true change (method of moments: var(D_s) - sigma_w^2 / n, floored at 0; NaN with one seed), the mean number of
    items per seed."""
    per_seed = [np.asarray(d, float) for d in per_seed if len(d) >= 2]
    if not per_seed:
        return dict(sigma_w=math.nan, sigma_b=math.nan, n=0)
    n = float(np.mean([len(d) for d in per_seed]))
    sw2 = float(np.mean([d.var(ddof=1) for d in per_seed]))
    if len(per_seed) < 2:
        return dict(sigma_w=math.sqrt(sw2), sigma_b=math.nan, n=n)
    between = float(np.var([d.mean() for d in per_seed], ddof=1)) - sw2 / n
    return dict(sigma_w=math.sqrt(sw2), sigma_b=math.sqrt(max(0.0, between)), n=n)


def items_needed(sd: float, d: float, *, alpha: float = ALPHA, power: float = POWER) -> int | None:
    """Items for the paired item-level test to detect a change d: ceil(((z_{1-a/2} + z_pow) * sd / d)^2)."""
    if math.isnan(sd) or d <= 0:
        return None
    return max(2, math.ceil((z_factor(alpha, power) * sd / d) ** 2))


def seeds_needed(d: float, sigma_b: float, sigma_w: float, n_items: int, *, alpha: float = ALPHA,
                 power: float = POWER, most: int = 1000) -> int | None:
    """Seeds k (2..most) for the seeds-level t test to detect d when each seed measures n_items items:
    the smallest k with t_power(d / sqrt((sigma_b^2 + sigma_w^2 / n) / k), k - 1) >= power; None past `most`."""
    if math.isnan(sigma_b) or math.isnan(sigma_w) or d <= 0 or n_items < 1:
        return None
    var = sigma_b ** 2 + sigma_w ** 2 / n_items
    if var <= 0:
        return 2
    for k in range(2, most + 1):
        if t_power(d / math.sqrt(var / k), k - 1, alpha=alpha) >= power:
            return k
    return None


def plan(per_seed: list[np.ndarray], pooled: np.ndarray, d: float, *, alpha: float = ALPHA,
         power: float = POWER) -> dict[str, Any]:
    """Items and seeds needed to detect a change `d` (80% power, two-sided alpha .05) from the change measured
    between two checkpoints: `per_seed` item changes per seed, `pooled` the seed-averaged item changes.

        {d, sigma_items, items_needed, sigma_w, sigma_b, n_items, seeds_needed: [{items, seeds}], note}

    items_needed is for the items interval on seed-averaged values with today's number of seeds; seeds_needed
    gives, for today's items per seed and for 2x, 4x and the items_needed, the seeds the seeds-level t test needs.
    With one seed the between-seed sd is unknown: seeds are planned with sigma_b = 0, a lower bound (note says so).
    """
    sd_items = float(np.std(pooled, ddof=1)) if len(pooled) >= 2 else math.nan
    vc = variance_components(per_seed)
    n_now = int(round(vc["n"])) if vc["n"] else len(pooled)
    need_items = items_needed(sd_items, d, alpha=alpha, power=power)
    sigma_b, note = vc["sigma_b"], ""
    if math.isnan(sigma_b):
        sigma_b, note = 0.0, "one seed: the between-seed sd is unknown; the seeds below assume it is 0 (a lower bound)"
    grid = sorted({n for n in (n_now, 2 * n_now, 4 * n_now, need_items) if n})
    seeds = [dict(items=n, seeds=seeds_needed(d, sigma_b, vc["sigma_w"], n, alpha=alpha, power=power))
             for n in grid]
    floor = None
    if sigma_b > 0:  # infinitely many items: only the between-seed variance is left
        floor = seeds_needed(d, sigma_b, 0.0, 1, alpha=alpha, power=power)
    return dict(d=d, sigma_items=sd_items, items_needed=need_items, sigma_w=vc["sigma_w"], sigma_b=vc["sigma_b"],
                n_items=n_now, n_seeds=len(per_seed), seeds_needed=seeds, seeds_with_unlimited_items=floor,
                note=note)
