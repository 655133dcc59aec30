"""Item flips between two checkpoints, with an exact McNemar test. Pure: per-item outcomes in, tables out.

An item *flips* when its answer changes side between checkpoint A and checkpoint B: context -> parametric (it
stopped following the context) or parametric -> context. The transition table counts every pair of resolved
outcomes (context, parametric, neither; an output with both answers counts as the one named first).

McNemar (exact): the binary state compared is "the output contains the context answer" (what cf-acc counts).
Of the items present at both checkpoints, b = context at A but not at B, c = not at A but context at B. Under
H0 (no change in cf-acc) each discordant item is equally likely to go either way, so b ~ Binomial(b + c, 1/2)
and the two-sided p-value is scipy.stats.binomtest(b, b + c, 0.5).pvalue (1.0 when b + c = 0).
"""

from __future__ import annotations

import math
import re
from typing import Any, Sequence

from ctxrel.core.matching import RESOLVED_OUTCOMES

ANCHORS = ("start", "peak", "trough", "final")


def mcnemar_exact(b: int, c: int) -> float:
    """Two-sided exact McNemar p-value from the discordant counts b (lost) and c (gained)."""
    from scipy.stats import binomtest

    if b + c == 0:
        return 1.0
    return float(binomtest(b, b + c, 0.5).pvalue)


def flip_table(a: dict[str, dict[str, Any]], b: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """Compare per-item outcomes (items.item_outcomes) at checkpoints A and B, over items present at both:

        {n, transitions: {from: {to: count}}, lost, gained, cf_a, cf_b, p_value,
         to_parametric: [item ids], to_context: [item ids]}

    `lost`/`gained` are McNemar's b/c (context answer present at A only / at B only); `to_parametric` lists items
    whose resolved outcome went context -> parametric, `to_context` parametric -> context (sorted ids)."""
    common = sorted(i for i in a if i in b)
    trans = {o: {p: 0 for p in RESOLVED_OUTCOMES} for o in RESOLVED_OUTCOMES}
    for i in common:
        trans[a[i]["outcome"]][b[i]["outcome"]] += 1
    lost = sum(1 for i in common if a[i]["cf"] and not b[i]["cf"])
    gained = sum(1 for i in common if not a[i]["cf"] and b[i]["cf"])
    n = len(common)
    return dict(n=n, transitions=trans, lost=lost, gained=gained,
                cf_a=sum(a[i]["cf"] for i in common) / n if n else math.nan,
                cf_b=sum(b[i]["cf"] for i in common) / n if n else math.nan,
                p_value=mcnemar_exact(lost, gained),
                to_parametric=[i for i in common if a[i]["outcome"] == "context" and b[i]["outcome"] == "parametric"],
                to_context=[i for i in common if a[i]["outcome"] == "parametric" and b[i]["outcome"] == "context"])


def flips_by_category(a: dict[str, dict[str, Any]], b: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """flip_table per category (the category of each item at A), categories sorted; "all" first."""
    cats = sorted({v["category"] for v in a.values()})
    out = {"all": flip_table(a, b)}
    for cat in cats:
        out[cat] = flip_table({i: v for i, v in a.items() if v["category"] == cat}, b)
    return out


def resolve_checkpoint(spec: str | int, steps: Sequence[tuple[int, str]], anchors: dict[str, int]) -> tuple[int, str]:
    """(step, checkpoint) named by `spec`: `start`, `peak`, `trough`, `final` (from `anchors`: name -> step), a
    step number (`48`), or a checkpoint name (`step-000048`). `steps` lists the trajectory's (step, checkpoint) pairs.
    Raises ValueError with the valid choices when nothing matches."""
    text = str(spec).strip()
    by_step = dict(steps)
    if text in anchors:
        return anchors[text], by_step[anchors[text]]
    if re.fullmatch(r"\d+", text) and int(text) in by_step:
        return int(text), by_step[int(text)]
    for s, name in steps:
        if name == text:
            return s, name
    choices = ", ".join([*ANCHORS, *(str(s) for s, _ in steps)])
    raise ValueError(f"checkpoint {spec!r} not in this trajectory; choose one of: {choices} (or a checkpoint name)")
