"""A conflict benchmark scored under other context kinds and decoding methods: the do-no-harm evaluation.

`eval.contexts` (conflict, gold, irrelevant; `ctxrel.benchmarks.contexts`) times `eval.decoding` (greedy, cad with each
`eval.cad_alpha`, adacad; `ctxrel.core.decoding`) gives the variants of a benchmark. `(conflict, greedy)` is the
benchmark itself; every pair is scored by the one engine, `evaluate.engine`, the other variants on the same
selected items (same ids, same knowledge-filter answers), and is written under its own name
(`contexts.variant_name`: `cf_capitals[gold,cad]`) — its records in `evals/<ckpt>/<name>.jsonl`, its metric
rows with that name in the `benchmark` column. Old run directories therefore read exactly as before, and
`ctxrel report` sees each decoding of the conflict items as a trajectory of its own.

Per variant, besides the usual rows: `acc` (the right answer of the kind: the context answer for `conflict`, the
parametric answer for `gold` and `irrelevant`; in likelihood mode the share of items scoring it higher),
`acc_vs_greedy` (the paired change against greedy decoding on the same kind and items, with a bootstrap
interval over items), and counts (`n_items`, `n_kind_skipped`: items the kind could not be built for,
`n_too_long`). `harm_summary` turns those rows into the do-no-harm table: per checkpoint and decoding method,
cf-acc on `conflict`, accuracy on `gold` and on `irrelevant`, and their changes against greedy.
"""

from __future__ import annotations

import math
from collections import defaultdict
from typing import Any, Sequence

import numpy as np

from ctxrel.benchmarks.contexts import KINDS, available, parse_variant
from ctxrel.core.decoding import METHODS, labels
from ctxrel.core.errors import CtxrelError
from ctxrel.core.metrics import bootstrap_rows


def decodings(cfg) -> list[str]:
    """Decoding labels to score, greedy first (always: it is the reference of every change)."""
    return labels(["greedy"] + [m for m in cfg.decoding if m != "greedy"], list(cfg.cad_alpha))


def kinds(cfg) -> list[str]:
    """Context kinds to score, conflict first (always: it is the benchmark itself)."""
    return ["conflict"] + [k for k in KINDS[1:] if k in cfg.contexts]


def wanted(cfg) -> list[tuple[str, str]]:
    """(kind, decoding) pairs scored here: every pair but (conflict, greedy)."""
    return [(k, d) for k in kinds(cfg) for d in decodings(cfg) if (k, d) != ("conflict", "greedy")]


def check_variants(cfg) -> None:
    """Validate eval.decoding, eval.cad_alpha and eval.contexts (before any model loads); one sentence each."""
    for key, values, valid in (("eval.decoding", cfg.decoding, METHODS), ("eval.contexts", cfg.contexts, KINDS)):
        bad = [v for v in values if v not in valid]
        if bad:
            raise CtxrelError(f"config key {key}: {bad[0]!r} is not one of {', '.join(valid)}")
        if not values:
            raise CtxrelError(f"config key {key}: empty list; give at least one of {', '.join(valid)}")
        if len(set(values)) != len(values):
            raise CtxrelError(f"config key {key}: {values} names an entry twice")
    if "cad" in cfg.decoding:
        if not cfg.cad_alpha:
            raise CtxrelError("config key eval.cad_alpha: empty list; give CAD's weight, e.g. 1.0")
        bad_alpha = [a for a in cfg.cad_alpha if not (math.isfinite(a) and a >= 0)]
        if bad_alpha:
            raise CtxrelError(f"config key eval.cad_alpha: {bad_alpha[0]!r} must be a finite number >= 0")
    contrast = [m for m in cfg.decoding if m != "greedy"]
    if contrast and (cfg.temperature > 0 or cfg.samples > 1):
        raise CtxrelError(f"config key eval.decoding: {contrast[0]} is decoded greedily (argmax of the contrast); "
                          "use eval.temperature=0 and eval.samples=1 with it")


def acc_value(r: dict[str, Any], kind: str) -> float:
    """1 when the record gives the right answer of its kind (generate: contains it; likelihood: scores it
    higher than the other answer)."""
    if "contains_context" in r:
        return float(r["contains_context"] if kind == "conflict" else r["contains_parametric"])
    higher = r["logp_context"] > r["logp_parametric"]
    return float(higher if kind == "conflict" else not higher)


def _per_item(records: Sequence[dict[str, Any]], kind: str, known: dict[str, bool] | None,
              subset: str) -> dict[str, float]:
    vals: dict[str, list[float]] = defaultdict(list)
    for r in records:
        if subset == "known" and not (known or {}).get(r["id"]):
            continue
        vals[r["id"]].append(acc_value(r, kind))
    return {i: float(np.mean(v)) for i, v in vals.items()}


def acc_rows(records, kind, known, subsets, *, n_boot, seed) -> list[dict[str, Any]]:
    rows = []
    for subset in subsets:
        values = [[x] for x in _per_item(records, kind, known, subset).values()]
        rows += bootstrap_rows(values, ["acc"], n_boot=n_boot, seed=seed, subset=subset)
    return rows


def change_rows(records, greedy_records, kind, known, subsets, *, n_boot, seed) -> list[dict[str, Any]]:
    """`acc_vs_greedy`: mean over items of acc(method) - acc(greedy), paired by item, bootstrap over items."""
    rows = []
    for subset in subsets:
        a = _per_item(greedy_records, kind, known, subset)
        b = _per_item(records, kind, known, subset)
        rows += bootstrap_rows([[b[i] - a[i]] for i in b if i in a], ["acc_vs_greedy"], n_boot=n_boot, seed=seed,
                               subset=subset)
    return rows


def harm_summary(rows: Sequence[dict[str, Any]], subset: str = "all") -> list[dict[str, Any]]:
    """The do-no-harm table from metric rows: one entry per (checkpoint, benchmark, decoding) with, per context
    kind, the accuracy (cf-acc for `conflict`) and its change against greedy, as (value, ci_low, ci_high).
    Pure: rows in, entries out; empty when no variant was scored."""
    cells: dict[tuple, dict[str, Any]] = {}
    variants = False
    for r in rows:
        if r["subset"] != subset:
            continue
        base, kind, dec = parse_variant(r["benchmark"])
        variants |= (kind, dec) != ("conflict", "greedy")
        metric = r["metric"]
        if kind == "conflict" and dec == "greedy" and metric == "cf_acc":
            metric = "acc"
        if metric not in ("acc", "acc_vs_greedy"):
            continue
        key = (r["step"] if r["step"] is not None else -1, r["checkpoint"], base, dec)
        e = cells.setdefault(key, dict(checkpoint=r["checkpoint"], step=r["step"], benchmark=base, decoding=dec))
        e[f"{kind}:{metric}"] = (r["value"], r.get("ci_low"), r.get("ci_high"))
    if not variants:
        return []
    order = {d: k for k, d in enumerate(["greedy", "cad", "adacad"])}
    return [cells[k] for k in sorted(cells, key=lambda k: (k[0], k[1], k[2], order.get(k[3], 1.5), k[3]))]


def format_harm(rows: Sequence[dict[str, Any]], subset: str = "all") -> str:
    """The do-no-harm table as text ('' when only the benchmark itself was scored)."""
    entries = harm_summary(rows, subset)
    if not entries:
        return ""

    def cell(e, key):
        v = e.get(key)
        if v is None or v[0] is None or v[0] != v[0]:
            return f"{'-':>21}"
        if v[1] is None or v[1] != v[1]:
            return f"{v[0]:>+21.3f}" if key.endswith("vs_greedy") else f"{v[0]:>21.3f}"
        sign = "+" if key.endswith("vs_greedy") else ""
        return f"{v[0]:{sign}.3f} [{v[1]:{sign}.2f},{v[2]:{sign}.2f}]".rjust(21)

    lines = [f"do no harm ({subset}): accuracy per context kind (conflict: cf-acc; gold, irrelevant: the parametric "
             "answer) and its change against greedy, [95% CI]",
             f"{'checkpoint':<13}{'benchmark':<16}{'decoding':<9}{'conflict':>21}{'gold':>21}{'irrelevant':>21}"
             f"{'d conflict':>21}{'d gold':>21}{'d irrelevant':>21}"]
    for e in entries:
        lines.append(f"{e['checkpoint']:<13}{e['benchmark'][:15]:<16}{e['decoding']:<9}"
                     + "".join(cell(e, f"{k}:acc") for k in KINDS)
                     + "".join(cell(e, f"{k}:acc_vs_greedy") if e["decoding"] != "greedy" else f"{'':>21}"
                               for k in KINDS))
    return "\n".join(lines)


def availability(items) -> dict[str, bool]:
    """Which context kinds a benchmark's items allow (gold and irrelevant need a separate context)."""
    return {k: any(available(it, k) for it in items) for k in KINDS}
