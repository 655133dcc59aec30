"""Conflict metrics from per-item records, with bootstrap confidence intervals. Pure: lists in, rows out.

Definitions (Goyal et al., "Context-Parametric Inversion", ICLR 2025, Sec. 3):
* cf_acc  = share of generations containing the context ("counterfactual") answer;
* par_acc = share of generations containing the parametric answer (both can hold for one generation);
* share_<outcome> = share of generations whose outcome is context / parametric / both / neither;
* resolved_context = share of generations that give the context answer, or give both and name it first;
* m_c (likelihood mode) = mean over items of p_context / (p_context + p_parametric), the quantity the study's
  one-layer theory tracks; ll_context = share of items with p_context > p_parametric.

With several samples per item, an item's value is the mean over its samples, and every metric is the mean over
items; the 95% interval is a percentile bootstrap that resamples items (samples of one item stay together).
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Any, Iterable, Sequence

import numpy as np

GENERATE_METRICS = ("cf_acc", "par_acc", "share_context", "share_parametric", "share_both", "share_neither",
                    "resolved_context", "resolved_parametric")
LIKELIHOOD_METRICS = ("m_c", "ll_context")


def _generation_values(r: dict[str, Any]) -> list[float]:
    outcome, first = r["outcome"], r.get("first_mention")
    return [float(r["contains_context"]), float(r["contains_parametric"]),
            float(outcome == "context"), float(outcome == "parametric"), float(outcome == "both"),
            float(outcome == "neither"),
            float(outcome == "context" or (outcome == "both" and first == "context")),
            float(outcome == "parametric" or (outcome == "both" and first == "parametric"))]


def _likelihood_values(r: dict[str, Any]) -> list[float]:
    return [float(r["m_c"]), float(r["logp_context"] > r["logp_parametric"])]


def item_matrix(records: Iterable[dict[str, Any]], mode: str = "generate") -> np.ndarray:
    """(n_items, n_metrics) array: each item's metric values averaged over its samples."""
    per_item: "OrderedDict[str, list[list[float]]]" = OrderedDict()
    values = _generation_values if mode == "generate" else _likelihood_values
    for r in records:
        per_item.setdefault(r["id"], []).append(values(r))
    width = len(GENERATE_METRICS if mode == "generate" else LIKELIHOOD_METRICS)
    if not per_item:
        return np.zeros((0, width))
    return np.array([np.mean(v, axis=0) for v in per_item.values()])


def bootstrap_means(matrix: np.ndarray, *, n_boot: int = 1000, seed: int = 0) -> np.ndarray:
    """(n_boot, n_metrics) column means of `matrix` over rows resampled with replacement (memory-bounded)."""
    n = matrix.shape[0]
    rng = np.random.default_rng(seed)
    step = max(1, 2_000_000 // max(1, n * matrix.shape[1]))  # resamples per block: bounded memory on big sets
    return np.concatenate([matrix[rng.integers(0, n, size=(min(step, n_boot - k), n))].mean(axis=1)
                           for k in range(0, n_boot, step)])


def mean_of_tasks(values: Sequence[float], replicates: Sequence[np.ndarray], *,
                  level: float = 0.95) -> tuple[float, float, float]:
    """(mean, low, high) of several tasks' scores: the interval is the percentile interval of the tasks'
    bootstrap replicates averaged replicate by replicate (tasks resampled independently) -- `id_accuracy`."""
    mean_reps = np.mean(np.stack(list(replicates)), axis=0)
    alpha = (1 - level) / 2
    return float(np.mean(values)), float(np.quantile(mean_reps, alpha)), float(np.quantile(mean_reps, 1 - alpha))


def bootstrap_ci(matrix: np.ndarray, *, n_boot: int = 1000, level: float = 0.95,
                 seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Percentile bootstrap over rows of an (n_items, n_metrics) matrix; returns (low, high) per column.

    >>> lo, hi = bootstrap_ci(np.array([[0.0], [1.0]] * 50))
    >>> bool(lo[0] < 0.5 < hi[0])
    True
    """
    if matrix.shape[0] == 0:
        nan = np.full(matrix.shape[1], np.nan)
        return nan, nan
    means = bootstrap_means(matrix, n_boot=n_boot, seed=seed)
    alpha = (1 - level) / 2
    return np.quantile(means, alpha, axis=0), np.quantile(means, 1 - alpha, axis=0)


def conflict_metrics(records: Sequence[dict[str, Any]], mode: str = "generate", *, n_boot: int = 1000,
                     seed: int = 0) -> list[dict[str, Any]]:
    """Metric rows {metric, value, n, ci_low, ci_high}; n counts items (not samples)."""
    names = GENERATE_METRICS if mode == "generate" else LIKELIHOOD_METRICS
    return bootstrap_rows(item_matrix(records, mode), names, n_boot=n_boot, seed=seed)


def bootstrap_rows(matrix, names: Sequence[str], *, n_boot: int = 1000, seed: int = 0,
                   **meta: Any) -> list[dict[str, Any]]:
    """The one builder of bootstrap metric rows: for each column of an (n_items, len(names)) matrix, the row
    {**meta, metric, value, n, ci_low, ci_high} -- value the column mean (NaN without items), n the number of
    items (rows), the interval from `bootstrap_ci` over items. `meta` carries checkpoint, step, benchmark,
    subset as the caller knows them.

    >>> [(r["metric"], r["value"], r["n"]) for r in bootstrap_rows([[1.0, 0.0], [0.0, 0.0]], ["a", "b"])]
    [('a', 0.5, 2), ('b', 0.0, 2)]
    >>> bootstrap_rows(np.zeros((0, 1)), ["a"], subset="known")[0]["value"]
    nan
    """
    matrix = np.asarray(matrix, dtype=float).reshape(-1, len(names))
    lo, hi = bootstrap_ci(matrix, n_boot=n_boot, seed=seed)
    n = matrix.shape[0]
    mean = matrix.mean(axis=0) if n else np.full(len(names), np.nan)
    return [dict(meta, metric=m, value=float(mean[k]), n=n, ci_low=float(lo[k]), ci_high=float(hi[k]))
            for k, m in enumerate(names)]


def m_c(logp_context: float, logp_parametric: float) -> float:
    """p_c / (p_c + p_p) computed stably from log-probabilities (a logistic of their difference)."""
    d = logp_parametric - logp_context
    if d > 50:
        return 0.0
    return float(1.0 / (1.0 + np.exp(d)))
