"""Per-item values of a conflict benchmark at one checkpoint: the unit every statistic here resamples.

A record (evaluate/run.py) is one generation (or one likelihood score) of one item. Statistics over a trajectory
need, per checkpoint, one number per item, keyed by item id so two checkpoints can be paired:

* `cf_acc`  -> share of the item's samples whose output contains the context answer;
* `par_acc` -> share containing the parametric answer;
* `m_c`     -> p_context / (p_context + p_parametric) (likelihood mode; one score per item);
* `share_context`, `share_parametric`, `share_both`, `share_neither` -> share of the item's samples with that
  outcome (generate mode; the terms of analysis/decompose.py).

The mean of these values over items is exactly the metric row's value (core/metrics.py averages samples within an
item, then items), so point estimates here agree with the metrics table. Pure: records in, dicts out.
"""

from __future__ import annotations

from collections import defaultdict
from typing import Any, Iterable

from ctxrel.core.matching import RESOLVED_OUTCOMES, resolve

ITEM_METRICS = ("cf_acc", "par_acc", "m_c", "share_context", "share_parametric", "share_both", "share_neither")


def is_conflict_record(r: dict[str, Any]) -> bool:
    """Conflict-benchmark records carry match flags or M_C; standard-task records (acc, exact_match) do not."""
    return "contains_context" in r or "m_c" in r


def record_mode(records: Iterable[dict[str, Any]]) -> str:
    """`generate` or `likelihood`, from the first record (a file never mixes modes: evaluate/run.py guards it)."""
    for r in records:
        return "likelihood" if "m_c" in r and "contains_context" not in r else "generate"
    return "generate"


def _value(r: dict[str, Any], metric: str) -> float:
    if metric == "cf_acc":
        return float(r["contains_context"])
    if metric == "par_acc":
        return float(r["contains_parametric"])
    if metric == "m_c":
        return float(r["m_c"])
    if metric.startswith("share_") and metric in ITEM_METRICS:  # one outcome of matching.OUTCOMES
        return float(r["outcome"] == metric.removeprefix("share_"))
    raise ValueError(f"unknown item metric {metric!r}; expected one of {ITEM_METRICS}")


def keep(r: dict[str, Any], subset: str = "all", category: str | None = None) -> bool:
    """Whether a record belongs to `subset` (`all`, or `known`: the base model knew the parametric answer)
    and, when given, to `category`."""
    if subset == "known" and not r.get("known", False):
        return False
    if subset not in ("all", "known"):
        raise ValueError(f"unknown subset {subset!r}; expected 'all' or 'known'")
    return category is None or r.get("category") == category


def item_values(records: Iterable[dict[str, Any]], metric: str = "cf_acc", subset: str = "all",
                category: str | None = None) -> dict[str, float]:
    """{item id: mean of `metric` over the item's samples}, for records in `subset` (and `category`).

    >>> recs = [dict(id="a", sample=0, contains_context=True), dict(id="a", sample=1, contains_context=False),
    ...         dict(id="b", sample=0, contains_context=True)]
    >>> item_values(recs)
    {'a': 0.5, 'b': 1.0}
    """
    sums: dict[str, list[float]] = defaultdict(list)
    for r in records:
        if keep(r, subset, category):
            sums[r["id"]].append(_value(r, metric))
    return {i: sum(v) / len(v) for i, v in sums.items()}


def resolved_outcome(r: dict[str, Any]) -> str:
    """`context`, `parametric` or `neither`; an output with both answers counts as the one it names first."""
    return resolve(r["outcome"], r.get("first_mention"))


def item_outcomes(records: Iterable[dict[str, Any]], subset: str = "all",
                  category: str | None = None) -> dict[str, dict[str, Any]]:
    """Per item at one checkpoint: {category, question, context_answer, parametric_answer, output, outcome,
    cf} where `outcome` is the resolved outcome of the majority of samples (first sample on a tie) and `cf` is
    whether most samples contain the context answer (the binary state McNemar compares). Generate mode only."""
    by_item: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for r in records:
        if keep(r, subset, category):
            by_item[r["id"]].append(r)
    out = {}
    for i, recs in by_item.items():
        recs = sorted(recs, key=lambda r: r.get("sample", 0))
        votes = [resolved_outcome(r) for r in recs]
        outcome = max(RESOLVED_OUTCOMES, key=lambda o: (votes.count(o), o == votes[0]))
        first = recs[0]
        out[i] = dict(category=first.get("category", ""), question=first.get("question", ""),
                      context_answer=first.get("context_answer", ""),
                      parametric_answer=first.get("parametric_answer", ""), output=first.get("output", ""),
                      outcome=outcome, cf=sum(bool(r["contains_context"]) for r in recs) * 2 > len(recs))
    return out


def categories(records: Iterable[dict[str, Any]]) -> list[str]:
    """Sorted distinct categories of the records (items without one count as "")."""
    return sorted({r.get("category") or "" for r in records})
