"""Power, the selection-honest verdict, the two-level interval, the plan and the decomposition, on constructed
data whose answer is known."""

from __future__ import annotations

import math

import numpy as np
import pytest

from ctxrel.analysis.decompose import context_share, context_share_stats, decomposition, outcome_shares
from ctxrel.analysis.honest import false_positive_rates, honest_stats, split_items
from ctxrel.analysis.inversion import Point, paired_bootstrap_diff, trajectory_stats
from ctxrel.analysis.power import (change_power, mde_items, mde_seeds, plan, standard_error, t_power,
                                   two_level_bootstrap)

STEPS = [0, 8, 16, 24, 32, 48, 64, 128]


def persistent(probs, n_items=400, flip=0.03, seed=0, n_seeds=1, seed_shift=0.0):
    """Item k answers with the context at checkpoint t when its fixed latent u_k < probs[t] (+ a per-seed shift),
    and each answer flips with probability `flip`: items keep their answers between checkpoints, as real
    ones do, and the true mean curve is `probs`."""
    rng = np.random.default_rng(seed)
    u = rng.random(n_items)
    shifts = rng.normal(0, seed_shift, n_seeds) if seed_shift else np.zeros(n_seeds)
    pts = []
    for s, p in zip(STEPS, probs):
        items = []
        for j in range(n_seeds):
            v = (u < p + shifts[j]) ^ (rng.random(n_items) < flip)
            items.append({f"i{k}": float(x) for k, x in enumerate(v)})
        pts.append(Point(s, f"step-{s:06d}", items))
    return pts


def noisy_null(rng, n_items=200, p=0.6):
    """8 checkpoints of the same true value; every answer drawn afresh (item-level noise only)."""
    return [Point(s, f"step-{s:06d}", [{f"i{k}": float(v) for k, v in enumerate(rng.random(n_items) < p)}])
            for s in STEPS]


def test_a_planted_drop_of_a_tenth_over_400_items_is_found():
    pts = persistent([0.5, 0.6, 0.7, 0.7, 0.65, 0.62, 0.6, 0.6])
    st = trajectory_stats(pts, n_boot=500)
    assert st["verdict"] == "inversion"
    drop = st["drop"][0]
    assert drop["estimate"] == pytest.approx(0.1, abs=0.04) and drop["ci_low"] > 0
    pw = change_power(pts[-1], pts[2], st["drop"], n_boot=500)[0]
    assert pw["basis"] == "items" and pw["n"] == 400
    assert pw["mde"] < 0.1 and pw["se"] == pytest.approx(standard_error(
        [pts[2].items[0][i] - pts[-1].items[0][i] for i in pts[2].items[0]]))
    hs = honest_stats(pts, n_boot=500)
    assert hs["verdict"] == "inversion", hs["verdict_text"]
    assert hs["split"]["n_select"] + hs["split"]["n_test"] == 400
    assert hs["drop"][0]["n"] == hs["split"]["n_test"] == 200


def test_a_planted_null_is_not_found_and_states_what_it_excludes():
    pts = persistent([0.6] * 8, seed=3)
    st = trajectory_stats(pts, n_boot=500)
    hs = honest_stats(pts, n_boot=500, split_seed=1)
    assert hs["verdict"] == "no_change", hs
    pw = change_power(pts[0], pts[-1], st["drop"], n_boot=500)[0]
    # a null still excludes large drops: the largest the interval allows is small, and above the estimate
    assert pw["estimate"] <= pw["allowed"] < 0.05


def test_mde_matches_a_simulation_within_ten_percent():
    """Items: paired Bernoulli items (.6 -> .6 - delta, independent), z test on the mean difference; the delta
    at which 80% of 3000 simulated studies reject, read off the power curve, is within 10% of the formula."""
    rng = np.random.default_rng(0)
    n, sims = 400, 3000
    deltas = np.linspace(0.02, 0.14, 13)
    power = []
    for d in deltas:
        a = rng.random((sims, n)) < 0.6
        b = rng.random((sims, n)) < 0.6 - d
        diff = a.astype(float) - b
        z = diff.mean(1) / (diff.std(1, ddof=1) / math.sqrt(n))
        power.append(float((np.abs(z) > 1.96).mean()))
    simulated = float(np.interp(0.8, power, deltas))
    sd = math.sqrt(0.6 * 0.4 + 0.55 * 0.45)  # the paired difference's sd near the MDE
    assert mde_items(sd / math.sqrt(n)) == pytest.approx(simulated, rel=0.10)
    # seeds: a t test over 3 seeds rejects ~80% of the time at its MDE
    se = 0.05 / math.sqrt(3)
    x = rng.normal(mde_seeds(se, 3), 0.05, size=(20000, 3))
    t = x.mean(1) / (x.std(1, ddof=1) / math.sqrt(3))
    assert float((np.abs(t) > 4.303).mean()) == pytest.approx(0.8, abs=0.08 * 0.8)
    assert t_power(0.0, 5) == pytest.approx(0.05, abs=1e-6)


def test_false_positive_rates_of_the_two_verdicts_on_planted_nulls():
    """8 noisy checkpoints, no true change: today's verdict (peak chosen and tested on the same items) claims a
    change far more often than its nominal level; the item-split verdict stays near it."""
    rates = false_positive_rates(noisy_null, 60, n_boot=200)
    assert rates["honest_any"] <= 0.12, rates
    assert rates["today_any"] > rates["honest_any"] + 0.05, rates
    assert rates["today_drop"] > rates["honest_drop"], rates


def test_the_split_is_seeded_disjoint_and_written_down():
    ids = [f"i{k}" for k in range(11)]
    a, b = split_items(ids, 5)
    assert (a, b) == split_items(list(reversed(ids)), 5) and not set(a) & set(b) and len(a) + len(b) == 11
    assert split_items(ids, 6) != (a, b)
    pts = persistent([0.5, 0.6, 0.7, 0.7, 0.65, 0.62, 0.6, 0.6], n_items=50)
    hs = honest_stats(pts, n_boot=100, split_seed=5)
    assert hs["split"]["seed"] == 5 and len(hs["split"]["select_ids"]) == 25
    assert honest_stats(pts[:2], n_boot=100)["verdict"] == "undetermined"


def test_two_level_interval_sees_the_seeds_that_the_items_interval_does_not():
    """Three seeds whose true drops differ (.02, .10, .18): the items interval on pooled values is narrow, the
    two-level one is wide and covers the seeds' spread; with identical seeds both agree closely."""
    rng = np.random.default_rng(1)
    spread = [rng.normal(m, 0.2, 300) for m in (0.02, 0.10, 0.18)]
    tl, se = two_level_bootstrap(spread, n_boot=2000)
    pooled = np.mean(spread, axis=0)
    items = paired_bootstrap_diff({str(k): 0.0 for k in range(300)}, {str(k): v for k, v in enumerate(pooled)})
    assert tl.basis == "seeds+items" and tl.n == 3
    assert (tl.ci_high - tl.ci_low) > 2 * (items.ci_high - items.ci_low)
    assert tl.ci_low < 0.05 and tl.ci_high > 0.15 and se > 0.03
    same = [rng.normal(0.1, 0.2, 300) for _ in range(3)]
    tl2, _ = two_level_bootstrap(same, n_boot=2000)
    assert tl2.ci_high - tl2.ci_low < 0.06
    assert two_level_bootstrap(same[:1])[0].basis == "seeds+items" and math.isnan(two_level_bootstrap(same[:1])[1])


def test_plan_recovers_the_planted_variances_and_needs_fewer_seeds_with_more_items():
    rng = np.random.default_rng(2)
    per = [rng.normal(0.1 + rng.normal(0, 0.05), 0.3, 400) for _ in range(10)]
    p = plan(per, np.mean(per, axis=0), 0.05)
    assert p["sigma_w"] == pytest.approx(0.3, rel=0.05)
    assert 0.02 < p["sigma_b"] < 0.1
    seeds = [s["seeds"] for s in p["seeds_needed"]]
    assert seeds == sorted(seeds, reverse=True) and seeds[-1] >= p["seeds_with_unlimited_items"]
    assert p["items_needed"] == math.ceil((2.8016 * p["sigma_items"] / 0.05) ** 2)
    one = plan(per[:1], per[0], 0.05)
    assert math.isnan(one["sigma_b"]) and "lower bound" in one["note"]


def _outcomes(n_items, shares_by_step, seed=0):
    """Points per outcome metric (and cf/par) from per-step outcome shares (context, parametric, both, neither)."""
    rng = np.random.default_rng(seed)
    out = {m: [] for m in ("cf_acc", "par_acc", "share_context", "share_parametric", "share_both", "share_neither")}
    for s, shares in zip(STEPS, shares_by_step):
        o = rng.choice(4, size=n_items, p=shares)
        vals = {"share_context": o == 0, "share_parametric": o == 1, "share_both": o == 2, "share_neither": o == 3,
                "cf_acc": (o == 0) | (o == 2), "par_acc": (o == 1) | (o == 2)}
        for m, v in vals.items():
            out[m].append(Point(s, f"step-{s:06d}", [{f"i{k}": float(x) for k, x in enumerate(v)}]))
    return out


def test_decomposition_splits_a_flat_cf_acc_into_opposite_movements():
    """Peak -> end: par-acc +.15, neither -.15, both unchanged: cf-acc flat, its parts are not."""
    early = [0.55, 0.10, 0.05, 0.30]
    late = [0.55, 0.25, 0.05, 0.15]
    by = _outcomes(600, [early] * 4 + [late] * 4)
    d = decomposition(by, 0, 128, n_boot=500)
    assert d["check"] == pytest.approx(0.0, abs=1e-12)
    assert abs(d["cf_acc"][0]["estimate"]) < 0.05
    assert d["par_acc"][0]["ci_low"] > 0.08 and d["share_neither"][0]["ci_high"] < -0.08
    shares = outcome_shares(by)
    assert len(shares) == 8 and all(sum(v for k, v in s.items() if k != "step") == pytest.approx(1) for s in shares)


def test_context_share_has_its_own_verdict():
    """cf rises while par falls, then par comes back: CS rises and falls (inversion); a flat CS: no change."""
    traj = [[0.4, 0.3, 0.0, 0.3], [0.6, 0.1, 0.0, 0.3], [0.7, 0.05, 0.0, 0.25], [0.7, 0.05, 0.0, 0.25],
            [0.6, 0.2, 0.0, 0.2], [0.55, 0.3, 0.0, 0.15], [0.5, 0.35, 0.0, 0.15], [0.5, 0.35, 0.0, 0.15]]
    by = _outcomes(500, traj)
    cs = context_share_stats(by["cf_acc"], by["par_acc"], n_boot=500)
    assert cs["secondary"] is True and cs["verdict"] == "inversion", cs
    assert cs["peak"]["value"] == pytest.approx(0.93, abs=0.04) and cs["final"]["value"] == pytest.approx(0.59, abs=0.05)
    flat = _outcomes(500, [[0.5, 0.2, 0.0, 0.3]] * 8, seed=4)
    assert context_share_stats(flat["cf_acc"], flat["par_acc"], n_boot=500)["verdict"] != "inversion"
    assert math.isnan(context_share({"a": 0.0}, {"a": 0.0}))


def test_leave_one_seed_out_chooses_the_peak_on_other_seeds():
    pts = persistent([0.5, 0.6, 0.75, 0.7, 0.65, 0.6, 0.55, 0.5], n_items=200, n_seeds=4, seed_shift=0.02)
    hs = honest_stats(pts, n_boot=300)
    lo = hs["loso"]
    assert len(lo["per_seed"]) == 4 and all(s["peak_step"] == 16 for s in lo["per_seed"])
    assert lo["verdict"] == "inversion" and lo["drop"]["basis"] == "seeds" and lo["drop"]["n"] == 4
    assert "loso" not in honest_stats(pts, n_boot=100, leave_one_seed_out=False)


def test_a_peak_at_the_last_checkpoint_has_no_drop_power_instead_of_an_mde_of_zero():
    # a monotone rise: the peak is the final checkpoint, so the drop is 0 by construction and untestable
    pts = persistent([0.3, 0.5, 0.7], n_items=100)
    st = trajectory_stats(pts, n_boot=200)
    assert st["peak"]["step"] == st["final"]["step"]
    final = next(p for p in pts if p.step == st["final"]["step"])
    assert change_power(final, final, st["drop"], n_boot=50) == []
    from ctxrel.report.scrutiny_text import power_lines
    from ctxrel.analysis.scrutiny import scrutinise
    pw = scrutinise(st, pts, metric="m_c", trajectory=lambda m: [], n_boot=50)["power"]
    assert pw["untested"] == ["drop"] and pw["drop"] == [] and pw["rise"]
    lines = power_lines(pw)
    assert any(line.startswith("power drop: not tested: the peak is the last checkpoint") for line in lines)
    assert not any("largest drop still allowed" in line for line in lines)
    # an SE of 0 (no item changed) gives no MDE rather than a claim that any effect could be seen
    assert math.isnan(mde_items(0.0)) and math.isnan(mde_seeds(0.0, 3))
