"""Metrics and bootstrap on fixed fixtures (values known by hand)."""

import math

import numpy as np
import pytest

from ctxrel.core.metrics import bootstrap_ci, conflict_metrics, item_matrix, m_c


def rec(i, outcome, sample=0, first=None):
    return dict(id=str(i), sample=sample, outcome=outcome, first_mention=first,
                contains_context=outcome in ("context", "both"),
                contains_parametric=outcome in ("parametric", "both"))


def test_cf_and_par_acc_by_hand():
    recs = [rec(0, "context"), rec(1, "parametric"), rec(2, "both", first="parametric"), rec(3, "neither")]
    m = {r["metric"]: r for r in conflict_metrics(recs, n_boot=200)}
    assert m["cf_acc"]["value"] == 0.5  # context + both
    assert m["par_acc"]["value"] == 0.5  # parametric + both
    assert [m[f"share_{o}"]["value"] for o in ("context", "parametric", "both", "neither")] == [.25] * 4
    assert m["resolved_context"]["value"] == 0.25 and m["resolved_parametric"]["value"] == 0.5
    assert m["cf_acc"]["n"] == 4
    assert m["cf_acc"]["ci_low"] <= 0.5 <= m["cf_acc"]["ci_high"]


def test_samples_average_within_item():
    recs = [rec(0, "context", 0), rec(0, "parametric", 1), rec(1, "context", 0), rec(1, "context", 1)]
    mat = item_matrix(recs)
    assert mat.shape[0] == 2
    assert mat[:, 0].tolist() == [0.5, 1.0]  # cf-acc per item
    m = {r["metric"]: r for r in conflict_metrics(recs)}
    assert m["cf_acc"]["value"] == 0.75 and m["cf_acc"]["n"] == 2


def test_bootstrap_interval_shrinks_with_n_and_is_seeded():
    small = np.array([[0.0], [1.0]] * 10)
    big = np.array([[0.0], [1.0]] * 500)
    lo_s, hi_s = bootstrap_ci(small)
    lo_b, hi_b = bootstrap_ci(big)
    assert (hi_b - lo_b)[0] < (hi_s - lo_s)[0]
    assert abs((hi_b - lo_b)[0] - 2 * 1.96 * 0.5 / math.sqrt(1000)) < 0.01  # normal approximation
    assert bootstrap_ci(small, seed=3)[0][0] == bootstrap_ci(small, seed=3)[0][0]


def test_constant_metric_has_degenerate_interval():
    recs = [rec(i, "context") for i in range(30)]
    m = {r["metric"]: r for r in conflict_metrics(recs)}
    assert m["cf_acc"]["ci_low"] == m["cf_acc"]["ci_high"] == 1.0


def test_empty_records_give_nan_not_crash():
    m = {r["metric"]: r for r in conflict_metrics([])}
    assert m["cf_acc"]["n"] == 0 and math.isnan(m["cf_acc"]["value"])


def test_m_c_is_a_probability_ratio():
    assert m_c(math.log(0.3), math.log(0.1)) == pytest.approx(0.75)
    assert m_c(-1000.0, 0.0) == 0.0 and m_c(0.0, -1000.0) == 1.0
    recs = [dict(id="a", m_c=0.75, logp_context=-1.0, logp_parametric=-2.0),
            dict(id="b", m_c=0.25, logp_context=-2.0, logp_parametric=-1.0)]
    m = {r["metric"]: r for r in conflict_metrics(recs, mode="likelihood")}
    assert m["m_c"]["value"] == 0.5 and m["ll_context"]["value"] == 0.5
