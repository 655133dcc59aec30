"""Decoding-time mitigations along a trajectory: is the late drop recoverable, and at what cost?

Reads the variants `ctxrel.evaluate.variants` wrote (`cf_capitals[cad]`, `cf_capitals[gold,adacad]`, ...) from loaded runs:

* **recoverability** — the followed metric (cf-acc; M_C in likelihood mode) of every decoding method against
  step on the conflict items, with 95% item-bootstrap intervals;
* **context kinds** — accuracy per context kind (conflict: cf-acc; gold, irrelevant: the parametric answer)
  per decoding method against step, from the metric rows (`acc`, with their intervals);
* **the recovery sentence** — per method: its value at the final checkpoint against greedy's value at greedy's
  peak, a paired bootstrap over items (the same items at both checkpoints). The drop is *recovered* when the
  method's final value is not significantly below greedy's peak, *partly recovered* when it is below the peak
  but significantly above greedy's own final value, and *not recovered* otherwise.
"""

from __future__ import annotations

from dataclasses import asdict
from typing import Any

from ctxrel.analysis.inversion import anchors, mean_over_seeds, paired_bootstrap_diff
from ctxrel.analysis.rundata import Run, metric_series, trajectory_points
from ctxrel.benchmarks.contexts import KINDS, parse_variant, variant_name


def variants_of(runs: list[Run]) -> dict[str, dict[str, list[str]]]:
    """{benchmark: {kind: [decodings]}} for benchmarks with any variant beyond (conflict, greedy)."""
    found: dict[str, dict[str, set[str]]] = {}
    for name in set.intersection(*(set(r.benchmarks()) for r in runs)) if runs else set():
        base, kind, dec = parse_variant(name)
        found.setdefault(base, {}).setdefault(kind, set()).add(dec)
    order = {"greedy": 0, "cad": 1, "adacad": 3}
    out = {}
    for base, kinds in found.items():
        if set(kinds) == {"conflict"} and kinds["conflict"] == {"greedy"}:
            continue
        out[base] = {k: sorted(kinds[k], key=lambda d: (order.get(d, 2), d)) for k in KINDS if k in kinds}
    return out


def _values_at(points, step) -> dict[str, float] | None:
    p = next((p for p in points if p.step == step), None)
    return mean_over_seeds(p.items) if p is not None and p.items else None


def recovery(runs: list[Run], base: str, decoding: str, metric: str, subset: str = "all", *,
             smooth: int = 0, n_boot: int = 2000, seed: int = 0) -> dict[str, Any] | None:
    """The recovery statistics of one decoding method (see the module docstring), or None without data."""
    greedy = trajectory_points(runs, base, metric, subset)
    method = trajectory_points(runs, variant_name(base, "conflict", decoding), metric, subset)
    marks = anchors(greedy, smooth)
    if not marks or not method:
        return None
    peak, final = marks["peak"], marks["final"]
    g_peak, g_final, m_final = _values_at(greedy, peak), _values_at(greedy, final), _values_at(method, final)
    if not (g_peak and g_final and m_final):
        return None
    vs_peak = paired_bootstrap_diff(g_peak, m_final, n_boot=n_boot, seed=seed)
    vs_final = paired_bootstrap_diff(g_final, m_final, n_boot=n_boot, seed=seed)
    drop = paired_bootstrap_diff(g_final, g_peak, n_boot=n_boot, seed=seed)  # greedy's own peak - final
    if not (drop.significant and drop.estimate > 0):
        verdict = "no drop"
    elif vs_peak.ci_high >= 0:
        verdict = "recovered"
    elif vs_final.significant and vs_final.estimate > 0:
        verdict = "partly recovered"
    else:
        verdict = "not recovered"
    return dict(decoding=decoding, subset=subset, metric=metric, peak_step=peak, final_step=final,
                greedy_peak=sum(g_peak.values()) / len(g_peak), greedy_final=sum(g_final.values()) / len(g_final),
                method_final=sum(m_final.values()) / len(m_final), greedy_drop=asdict(drop),
                vs_greedy_peak=asdict(vs_peak), vs_greedy_final=asdict(vs_final), verdict=verdict,
                sentence=recovery_sentence(decoding, metric, peak, final, drop, vs_peak, vs_final, verdict,
                                           sum(g_peak.values()) / len(g_peak), sum(m_final.values()) / len(m_final)))


def recovery_sentence(decoding, metric, peak, final, drop, vs_peak, vs_final, verdict, g_peak, m_final) -> str:
    name = {"cf_acc": "cf-acc", "m_c": "M_C"}.get(metric, metric)
    if verdict == "no drop":
        return (f"Greedy decoding shows no significant late drop of {name} (peak step {peak} -> final step "
                f"{final}: {-drop.estimate:+.3f} [{-drop.ci_high:+.2f}, {-drop.ci_low:+.2f}]), so there is nothing "
                f"for {decoding} to recover; at the final checkpoint {decoding} changes it by {vs_final.estimate:+.3f} "
                f"[{vs_final.ci_low:+.2f}, {vs_final.ci_high:+.2f}] against greedy.")
    what = {"recovered": "recovers the late drop", "partly recovered": "partly recovers the late drop",
            "not recovered": "does not recover the late drop"}[verdict]
    return (f"{decoding} {what}: {name} at the final checkpoint (step {final}) is {m_final:.3f} under {decoding} "
            f"vs {g_peak:.3f} under greedy at its peak (step {peak}), a paired difference of {vs_peak.estimate:+.3f} "
            f"[{vs_peak.ci_low:+.2f}, {vs_peak.ci_high:+.2f}] (95% bootstrap over items), and "
            f"{vs_final.estimate:+.3f} [{vs_final.ci_low:+.2f}, {vs_final.ci_high:+.2f}] against greedy at the final "
            f"checkpoint.")


def mitigation_summary(runs: list[Run], series_fn, *, smooth: int = 0, n_boot: int = 2000,
                       seed: int = 0) -> dict[str, Any]:
    """{benchmark: {recoverability: {subset: {decoding: series}}, contexts: {kind: {decoding: series}},
    recovery: {subset: [per-method statistics]}}}. `series_fn(points)` is summary.series."""
    out: dict[str, Any] = {}
    for base, kinds in variants_of(runs).items():
        mode = runs[0].mode(base)
        metric = "m_c" if mode == "likelihood" else "cf_acc"
        entry: dict[str, Any] = dict(metric=metric, mode=mode, recoverability={}, contexts={}, recovery={})
        for subset in ("all", "known"):
            lines = {}
            for dec in kinds.get("conflict", []):
                pts = trajectory_points(runs, variant_name(base, "conflict", dec), metric, subset)
                if pts:
                    lines[dec] = series_fn(pts)
            if lines:
                entry["recoverability"][subset] = lines
            stats = [recovery(runs, base, d, metric, subset, smooth=smooth, n_boot=n_boot, seed=seed)
                     for d in kinds.get("conflict", []) if d != "greedy"]
            if any(stats):
                entry["recovery"][subset] = [s for s in stats if s]
        for kind, decs in kinds.items():
            for dec in decs:
                name = variant_name(base, kind, dec)
                m = "cf_acc" if (kind, dec) == ("conflict", "greedy") else "acc"
                pts = [dict(step=s, value=v, ci_low=lo, ci_high=hi) for s, v, lo, hi in
                       metric_series(runs[0], name, m, "all")]
                if mode == "likelihood" and m == "cf_acc":
                    pts = [dict(step=s, value=v, ci_low=lo, ci_high=hi) for s, v, lo, hi in
                           metric_series(runs[0], name, "ll_context", "all")]
                if pts:
                    entry["contexts"].setdefault(kind, {})[dec] = pts
        out[base] = entry
    return out
