"""What the report shows of the probes (ctxrel.core.probe_math, written by ctxrel.evaluate.probe_passes): pure functions over their rows.

* weights: per checkpoint a layer x module matrix of the relative change ||ΔW||_F / ||W_0||_F, and the q/k
  share of the squared change across steps;
* heads: the layer x head matrix of context attention at two checkpoints (peak and final by default), and the
  heads whose context attention changed most between them, with a paired bootstrap over items;
* lens: the mean log-odds (context vs parametric first token) against layer, one curve per checkpoint, with the
  layer where it crosses 0 and the mean layer at which items are decided.
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np

from ctxrel.core.probe_math import MODULE_ORDER, crossing_layer, decided_layer, weight_summary


def weights_summary(by_step: dict[int, list[dict[str, Any]]]) -> dict[str, Any] | None:
    """{steps, modules, layers, relative: [L x M per step], qk_share: [{step, value}], total: [...]} from
    weights.jsonl rows per step; None when there are none."""
    if not by_step:
        return None
    steps = sorted(by_step)
    modules = [m for m in MODULE_ORDER if any(r["module"] == m for rows in by_step.values() for r in rows)]
    n_layers = 1 + max(r["layer"] for rows in by_step.values() for r in rows)
    rel, shares, totals = [], [], []
    for s in steps:
        m = np.full((n_layers, len(modules)), np.nan)
        for r in by_step[s]:
            m[r["layer"], modules.index(r["module"])] = r["relative"]
        rel.append(m.tolist())
        summ = weight_summary(by_step[s])
        shares.append(dict(step=s, value=summ["weight_change_qk_share"]))
        totals.append(dict(step=s, value=summ["weight_change_relative"]))
    return dict(steps=steps, modules=modules, layers=n_layers, relative=rel, qk_share=shares, relative_total=totals)


def head_means(per_item: dict[str, np.ndarray]) -> np.ndarray:
    return np.nanmean(np.stack(list(per_item.values())), axis=0)


def head_changes(a: dict[str, np.ndarray], b: dict[str, np.ndarray], *, n_boot: int = 2000, seed: int = 0,
                 top: int = 8) -> list[dict[str, Any]]:
    """The `top` (layer, head) cells whose mean context attention moved most from checkpoint a to b, each with a
    95% percentile bootstrap CI of the change, paired: items are resampled together at both checkpoints (and
    for all heads at once). Items present at both only."""
    ids = sorted(set(a) & set(b))
    if not ids:
        return []
    diff = np.stack([b[i] - a[i] for i in ids])  # (N, L, H)
    mean = diff.mean(axis=0)
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, len(ids), size=(n_boot, len(ids)))
    boots = np.stack([diff[row].mean(axis=0) for row in idx])  # (n_boot, L, H)
    lo, hi = np.quantile(boots, 0.025, axis=0), np.quantile(boots, 0.975, axis=0)
    a_mean, b_mean = np.stack([a[i] for i in ids]).mean(0), np.stack([b[i] for i in ids]).mean(0)
    order = np.argsort(-np.abs(np.nan_to_num(mean)), axis=None)[:top]
    out = []
    for flat in order:
        l, h = np.unravel_index(flat, mean.shape)
        out.append(dict(layer=int(l), head=int(h), before=float(a_mean[l, h]), after=float(b_mean[l, h]),
                        change=float(mean[l, h]), ci_low=float(lo[l, h]), ci_high=float(hi[l, h]),
                        significant=bool(lo[l, h] > 0 or hi[l, h] < 0), n=len(ids)))
    return out


def heads_summary(a: dict[str, np.ndarray], b: dict[str, np.ndarray], a_step: int, b_step: int, *,
                  n_boot: int = 2000, seed: int = 0) -> dict[str, Any]:
    """Context attention per layer and head at two checkpoints (means over items) and the largest changes."""
    return dict(from_step=a_step, to_step=b_step, before=head_means(a).tolist(), after=head_means(b).tolist(),
                changes=head_changes(a, b, n_boot=n_boot, seed=seed))


def lens_summary(by_step: dict[int, dict[str, np.ndarray]], *, n_boot: int = 1000, seed: int = 0
                 ) -> dict[str, Any] | None:
    """Per step: the mean log-odds curve over items (with a 95% bootstrap band), the layer where it last crosses
    0, the mean layer at which items are decided (ctxrel.core.probe_math.decided_layer), and the share of items whose
    context first token wins at the last layer."""
    if not by_step:
        return None
    curves = []
    rng = np.random.default_rng(seed)
    for s in sorted(by_step):
        items = by_step[s]
        if not items:
            continue
        odds = np.stack(list(items.values()))  # (N, L)
        boots = np.stack([odds[row].mean(0) for row in rng.integers(0, len(odds), size=(n_boot, len(odds)))])
        decided = [d for v in items.values() if (d := decided_layer(list(v))) is not None]
        curves.append(dict(step=s, mean=odds.mean(0).tolist(), ci_low=np.quantile(boots, 0.025, 0).tolist(),
                           ci_high=np.quantile(boots, 0.975, 0).tolist(), n=len(odds),
                           cross_layer=crossing_layer(list(odds.mean(0))),
                           decided_layer=float(np.mean(decided)) if decided else None,
                           context_wins=float((odds[:, -1] > 0).mean())))
    return dict(curves=curves) if curves else None


def pick_steps(steps: Sequence[int], k: int = 6) -> list[int]:
    """At most k steps spread evenly over `steps`, always with the first and the last.

    >>> pick_steps([0, 1, 2, 3, 4, 5, 6, 7, 8], 3)
    [0, 4, 8]
    """
    steps = list(steps)
    if len(steps) <= k:
        return steps
    return [steps[round(i * (len(steps) - 1) / (k - 1))] for i in range(k)]
