"""Trajectory statistics, the inversion verdict and item flips on hand-built data with known answers."""

from __future__ import annotations

import math

import numpy as np
import pytest

from ctxrel.analysis.flips import flip_table, flips_by_category, mcnemar_exact, resolve_checkpoint
from ctxrel.analysis.inversion import (Point, anchors, paired_bootstrap_diff, return_stats, seeds_diff, smooth,
                                       trajectory_stats)
from ctxrel.analysis.items import item_outcomes, item_values

STEPS = [0, 8, 16, 24, 32, 40, 48]


def points(probs, n_items=200, seed=0, n_seeds=1):
    """A trajectory whose item k at checkpoint t gives the context answer with probability probs[t]
    (independent draws: item-level noise with a known mean curve)."""
    rng = np.random.default_rng(seed)
    return [Point(s, f"step-{s:06d}", [{f"i{k}": float(rng.random() < p) for k in range(n_items)}
                                      for _ in range(n_seeds)], epoch=s / 48)
            for s, p in zip(STEPS, probs)]


def test_obvious_inversion():
    st = trajectory_stats(points([0.40, 0.55, 0.75, 0.65, 0.55, 0.45, 0.40]), n_boot=1000)
    assert st["verdict"] == "inversion", st
    assert (st["start"]["step"], st["peak"]["step"], st["final"]["step"]) == (0, 16, 48)
    assert st["trough"]["step"] >= st["peak"]["step"]
    rise, drop = st["rise"][0], st["drop"][0]
    assert rise["estimate"] == pytest.approx(st["peak"]["value"] - st["start"]["value"])
    assert drop["estimate"] == pytest.approx(st["peak"]["value"] - st["final"]["value"])
    assert 0 < rise["ci_low"] < rise["estimate"] < rise["ci_high"]
    assert 0 < drop["ci_low"] < drop["estimate"] < drop["ci_high"]
    assert rise["n"] == drop["n"] == 200 and rise["basis"] == "items"
    assert st["n_points"] == 7 and st["n_seeds"] == 1 and st["n_items"] == 200 and st["smoothed"] is None


def test_monotone_rise():
    st = trajectory_stats(points([0.30, 0.40, 0.50, 0.60, 0.70, 0.75, 0.80]), n_boot=1000)
    assert st["verdict"] == "rise" and st["verdict_text"].startswith("monotone rise")
    assert st["peak"]["step"] == 48 and st["drop"][0]["estimate"] == 0.0
    assert st["rise"][0]["ci_low"] > 0.3


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_pure_noise_is_no_significant_change(seed):
    st = trajectory_stats(points([0.5] * 7, n_items=150, seed=seed), n_boot=1000, seed=seed)
    assert st["verdict"] == "no_change", st
    assert st["verdict_text"].startswith("no significant change")


def test_fall_and_undetermined():
    assert trajectory_stats(points([0.8, 0.7, 0.6, 0.5, 0.4, 0.35, 0.3]), n_boot=500)["verdict"] == "fall"
    two = points([0.2, 0.9])[:2]
    assert trajectory_stats(two, n_boot=200)["verdict"] == "undetermined"
    no_items = [Point(s, f"step-{s}", values=[v]) for s, v in zip(STEPS, [0.2, 0.9, 0.2])]
    st = trajectory_stats(no_items)
    assert st["verdict"] == "undetermined" and "records" in st["verdict_text"]
    assert st["peak"]["value"] == 0.9


def test_paired_bootstrap_pairs_items():
    # every item goes 0 -> 1 except one: the paired difference is 0.9 with a tight CI; unpaired items ignored
    a = {f"i{k}": 0.0 for k in range(10)} | {"only_a": 1.0}
    b = {f"i{k}": 1.0 for k in range(9)} | {"i9": 0.0, "only_b": 0.0}
    d = paired_bootstrap_diff(a, b, n_boot=2000)
    assert d.n == 10 and d.estimate == pytest.approx(0.9)
    assert 0.6 <= d.ci_low < 0.9 <= d.ci_high <= 1.0 and d.significant
    assert math.isnan(paired_bootstrap_diff({"x": 1.0}, {"y": 1.0}).estimate)


def test_seeds_interval_is_a_t_interval():
    d = seeds_diff([0.5, 0.5, 0.5], [0.6, 0.7, 0.8])
    # mean 0.2, sd 0.1, t(0.975, 2) = 4.302653: half-width 4.302653 * 0.1 / sqrt(3)
    half = 4.302653 * 0.1 / math.sqrt(3)
    assert (d.estimate, d.basis, d.n) == (pytest.approx(0.2), "seeds", 3)
    assert d.ci_low == pytest.approx(0.2 - half, abs=1e-6) and d.ci_high == pytest.approx(0.2 + half, abs=1e-6)
    assert math.isnan(seeds_diff([0.1], [0.2]).ci_low)


def test_seeds_add_a_second_interval_and_both_must_exclude_zero():
    st = trajectory_stats(points([0.40, 0.55, 0.75, 0.65, 0.55, 0.45, 0.40], n_items=120, n_seeds=3), n_boot=500)
    assert st["n_seeds"] == 3 and [d["basis"] for d in st["rise"]] == ["items", "seeds"]
    assert st["verdict"] == "inversion"


def test_smoothing_is_a_moving_average_of_items():
    pts = [Point(s, f"c{s}", [{"a": v, "b": 0.0}]) for s, v in zip([0, 1, 2, 3], [0.0, 1.0, 0.0, 1.0])]
    sm = smooth(pts, 3)
    assert [p.items[0]["a"] for p in sm] == pytest.approx([0.5, 1 / 3, 2 / 3, 0.5])
    assert smooth(pts, 1) is pts
    st = trajectory_stats(pts, smooth_window=3, n_boot=100)
    assert st["smoothed"] == 3 and st["peak"]["step"] == 2


def test_item_values_average_samples_and_filter_known_and_category():
    recs = [dict(id="a", sample=0, category="x", known=True, contains_context=True, contains_parametric=False),
            dict(id="a", sample=1, category="x", known=True, contains_context=False, contains_parametric=True),
            dict(id="b", sample=0, category="y", known=False, contains_context=True, contains_parametric=True)]
    assert item_values(recs) == {"a": 0.5, "b": 1.0}
    assert item_values(recs, "par_acc", subset="known") == {"a": 0.5}
    assert item_values(recs, category="y") == {"b": 1.0}
    assert item_values([dict(id="z", m_c=0.25)], "m_c") == {"z": 0.25}


def test_mcnemar_exact_against_hand_computation():
    # b=8, c=2: p = 2 * P(X <= 2 | n=10, 1/2) = 2 * (1 + 10 + 45) / 1024
    assert mcnemar_exact(8, 2) == pytest.approx(112 / 1024)
    assert mcnemar_exact(2, 8) == pytest.approx(112 / 1024)
    assert mcnemar_exact(0, 0) == 1.0
    assert mcnemar_exact(5, 0) == pytest.approx(2 / 32)


def rec(i, outcome, cat, first=None):
    return dict(id=i, sample=0, category=cat, question=f"q{i}", context_answer="Lyon", parametric_answer="Paris",
                output=outcome, outcome=outcome, first_mention=first,
                contains_context=outcome in ("context", "both"), contains_parametric=outcome in ("parametric", "both"))


def test_flip_table_counts_transitions_and_tests_them():
    before = [rec(f"c{k}", "context", "capital") for k in range(8)] + [rec("p0", "parametric", "capital"),
                                                                     rec("p1", "parametric", "river"),
                                                                     rec("n0", "neither", "river"),
                                                                     rec("b0", "both", "river", first="parametric")]
    after = ([rec(f"c{k}", "parametric", "capital") for k in range(6)] + [rec("c6", "neither", "capital"),
             rec("c7", "context", "capital"), rec("p0", "context", "capital"), rec("p1", "parametric", "river"),
             rec("n0", "neither", "river"), rec("b0", "parametric", "river")])
    a, b = item_outcomes(before), item_outcomes(after)
    assert a["b0"]["outcome"] == "parametric" and a["b0"]["cf"]  # both, parametric named first
    t = flip_table(a, b)
    assert t["n"] == 12
    assert t["transitions"]["context"] == {"context": 1, "parametric": 6, "neither": 1}
    assert t["transitions"]["parametric"]["context"] == 1 and t["transitions"]["parametric"]["parametric"] == 2
    # cf lost: c0-c6 and b0 (contained the context answer, now does not) = 8; gained: p0 = 1
    assert (t["lost"], t["gained"]) == (8, 1)
    assert t["p_value"] == pytest.approx(2 * (1 + 9) / 512)
    assert t["to_parametric"] == [f"c{k}" for k in range(6)] and t["to_context"] == ["p0"]
    assert t["cf_a"] == pytest.approx(9 / 12) and t["cf_b"] == pytest.approx(2 / 12)
    cats = flips_by_category(a, b)
    assert list(cats) == ["all", "capital", "river"]
    assert (cats["capital"]["lost"], cats["capital"]["gained"], cats["capital"]["n"]) == (7, 1, 9)
    assert (cats["river"]["lost"], cats["river"]["gained"]) == (1, 0) and cats["river"]["p_value"] == 1.0


def test_resolve_checkpoint_accepts_anchors_steps_and_names():
    steps = [(0, "step-000000"), (8, "step-000008"), (48, "step-000048")]
    anchors = {"start": 0, "peak": 8, "final": 48}
    assert resolve_checkpoint("peak", steps, anchors) == (8, "step-000008")
    assert resolve_checkpoint("final", steps, anchors) == (48, "step-000048")
    assert resolve_checkpoint("48", steps, anchors) == (48, "step-000048")
    assert resolve_checkpoint(0, steps, anchors) == (0, "step-000000")
    assert resolve_checkpoint("step-000008", steps, anchors) == (8, "step-000008")
    with pytest.raises(ValueError, match="peak, trough, final, 0, 8, 48"):
        resolve_checkpoint("12", steps, anchors)


def test_anchors_match_the_statistics():
    pts = points([0.40, 0.55, 0.75, 0.65, 0.35, 0.45, 0.40])
    st = trajectory_stats(pts, n_boot=100)
    marks = anchors(pts)
    assert marks == {k: st[k]["step"] for k in ("start", "peak", "trough", "final")}
    assert (marks["peak"], marks["trough"]) == (16, 32)
    assert anchors([]) == {}


def test_return_stats_trough_at_the_end_returns_nothing():
    falling = [Point(s, f"step-{s:06d}", [{f"q{i}": float(i < n) for i in range(10)}]) for s, n in
               ((0, 6), (8, 4), (16, 2))]
    mr = return_stats(falling, n_boot=200)
    assert mr["trough"]["step"] == 16 and mr["change"][0]["estimate"] == 0 and not mr["significant"]
    assert return_stats(falling[:2], n_boot=200) == {}  # fewer than 3 checkpoints: no trajectory
