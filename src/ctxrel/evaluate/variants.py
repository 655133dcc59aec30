"""A conflict benchmark scored under other context kinds and decoding methods: the do-no-harm evaluation.

`eval.contexts` (conflict, gold, irrelevant; `ctxrel.benchmarks.contexts`) times `eval.decoding` (greedy, cad with each
`eval.cad_alpha`, adacad; `ctxrel.core.decoding`) gives the variants of a benchmark. `(conflict, greedy)` is the
benchmark itself, scored by `evaluate.evaluate_benchmark` exactly as before; every other variant is scored here
on the same selected items (same ids, same knowledge-filter answers), and is written under its own name
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

from ctxrel.backends.base import chunk_size
from ctxrel.benchmarks.contexts import KINDS, available, build_kind, parse_variant, variant_name
from ctxrel.core.decoding import METHODS, labels, parse_label
from ctxrel.core.errors import CtxrelError
from ctxrel.core.metrics import bootstrap_rows, conflict_metrics, m_c
from ctxrel.core.prompts import continuation_delimiter
from ctxrel.evaluate.records import BenchmarkResult, eval_settings, generation_records, likelihood_records, progress_bar
from ctxrel.rundir.files import read_records, step_of
from ctxrel.evaluate.shards import ALONE, Shard, score_files


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


def evaluate_variants(lm, bench, base, cfg, builder, run, *, checkpoint: str,
                      extra_settings: dict[str, Any] | None = None, shard: Shard = ALONE) -> list:
    """Score every wanted (kind, decoding) variant of one benchmark at one checkpoint, on the items `base`
    (the benchmark's own BenchmarkResult) selected; resumable like the benchmark itself. Sharded
    (`ctxrel.evaluate.shards`), the items are split over the processes and only the main process writes metric rows and
    returns results."""
    pairs = wanted(cfg)
    if not pairs:
        return []
    if any(dec != "greedy" for _, dec in pairs) and not lm.capabilities.contrast:
        raise CtxrelError(f"{lm.name}: this backend cannot decode by contrast (cad, adacad); drop them from "
                          "eval.decoding")
    items, known = base.items, base.known
    subsets = ["all"] + (["known"] if known is not None else [])
    step = step_of(checkpoint)
    budget = lm.max_length - cfg.max_new_tokens
    results = []
    by_kind: dict[str, list[str]] = defaultdict(list)
    for kind, dec in pairs:
        by_kind[kind].append(dec)
    for kind, decs in by_kind.items():
        kitems, kind_skipped = build_kind(items, kind, cfg.seed)
        with_ctx = {it.id: builder.with_context(it.context, it.question, it.prompt) for it in kitems}
        no_ctx = {it.id: builder.without_context(it.question) for it in kitems}
        lengths = dict(zip(with_ctx, lm.count_tokens(list(with_ctx.values()))))
        fit = [it for it in kitems if lengths[it.id] <= budget]
        n_too_long = len(kitems) - len(fit)
        files, done, records = {}, {}, {}
        for dec in decs:
            name = variant_name(bench.name, kind, dec)
            settings = eval_settings(bench, cfg, {**(extra_settings or {}), "context_kind": kind, "decoding": dec})
            if shard.main:  # sharded, the others score once it has checked (`shards.score_files` waits for it)
                run.check_settings(checkpoint, name, settings)
            files[dec] = run.eval_file(checkpoint, name)
            latest = {r["id"]: r for r in read_records(files[dec])}
            done[dec] = set(latest)
            records[dec] = list(latest.values())
        greedy_here = "greedy" in decs
        contrast = [d for d in decs if d != "greedy"]
        usable = [it for it in fit if not contrast or it.prompt is None]  # the no-context branch needs a question
        todo = [it for it in usable if any(it.id not in done[d] for d in decs)]
        bar = progress_bar(len(todo), f"{bench.name} ({kind}: {', '.join(decs)})")

        def score(chunk: list) -> list[list[dict[str, Any]]]:  # called before this loop moves on
            new: dict[str, list[dict[str, Any]]] = {d: [] for d in decs}
            if greedy_here:
                if cfg.mode == "likelihood":
                    new["greedy"] = likelihood_records(lm, chunk, with_ctx, lambda k: None)
                else:
                    outs = lm.generate([with_ctx[it.id] for it in chunk], max_new_tokens=cfg.max_new_tokens)
                    new["greedy"] = [r for it, o in zip(chunk, outs)
                                     for r in generation_records(it, with_ctx[it.id], o)]
            if contrast:
                methods = [parse_label(d) for d in contrast]
                if cfg.mode == "likelihood":
                    reqs = []
                    for it in chunk:
                        dlm = continuation_delimiter(with_ctx[it.id])
                        reqs.append((with_ctx[it.id], no_ctx[it.id], dlm + it.context_answer))
                        reqs.append((with_ctx[it.id], no_ctx[it.id], dlm + it.parametric_answer))
                    scores = lm.loglikelihood_contrast(reqs, methods)
                    for k, d in enumerate(contrast):
                        for j, it in enumerate(chunk):
                            lc, lp = scores[2 * j][k], scores[2 * j + 1][k]
                            new[d].append(dict(id=it.id, sample=0, category=it.category, question=it.question,
                                               context_answer=it.context_answer,
                                               parametric_answer=it.parametric_answer, logp_context=lc,
                                               logp_parametric=lp, m_c=m_c(lc, lp), prompt=with_ctx[it.id],
                                               source=it.source))
                else:
                    outs = lm.generate_contrast([(with_ctx[it.id], no_ctx[it.id]) for it in chunk], methods,
                                                max_new_tokens=cfg.max_new_tokens)
                    for k, d in enumerate(contrast):
                        new[d] = [r for it, o in zip(chunk, outs)
                                  for r in generation_records(it, with_ctx[it.id], [o[k]])]
            out = []
            for d in decs:
                recs = [r for r in new[d] if r["id"] not in done[d]]
                for r in recs:
                    r.update(context_kind=kind, decoding=d)
                    if d != "greedy":
                        r["prompt_without_context"] = no_ctx[r["id"]]
                    src = next(it for it in chunk if it.id == r["id"]).meta.get("context_from")
                    if src:
                        r["context_from"] = src
                    if known is not None:
                        r["known"] = known[r["id"]]
                out.append(recs)
            bar.update(len(chunk))
            return out

        def finished(it, held) -> bool:  # a shard's resume: the item is in the file or the shard of every method
            return all(it.id in done[d] or it.id in h for d, h in zip(decs, held))

        new_recs = score_files(todo, size=chunk_size(lm), score=score, paths=[files[d] for d in decs],
                               ids=lambda it: [it.id], finished=finished, shard=shard,
                               cost=lambda c: (1 + bool(contrast)) * sum(
                                   lm.count_tokens([with_ctx[it.id] for it in c])))
        for d, recs in zip(decs, new_recs):
            records[d].extend(recs)
            done[d].update(r["id"] for r in recs)
        bar.close()
        if not shard.main:
            continue
        wanted_ids = {it.id for it in usable}
        for dec in decs:
            name = variant_name(bench.name, kind, dec)
            recs = [r for r in records[dec] if r["id"] in wanted_ids]
            groups = {"all": recs}
            if known is not None:
                groups["known"] = [r for r in recs if known[r["id"]]]
            metrics = {s: conflict_metrics(rs, cfg.mode, n_boot=cfg.bootstrap, seed=cfg.seed)
                       for s, rs in groups.items()}
            extra_rows = acc_rows(recs, kind, known, subsets, n_boot=cfg.bootstrap, seed=cfg.seed)
            if dec != "greedy":
                ref = (run.eval_file(checkpoint, bench.name) if kind == "conflict" else files["greedy"])
                ref_recs = [r for r in read_records(ref) if r["id"] in wanted_ids]
                extra_rows += change_rows(recs, ref_recs, kind, known, subsets, n_boot=cfg.bootstrap,
                                          seed=cfg.seed)
            counts = dict(n_loaded=len(bench.items) + len(bench.skipped), n_invalid=len(bench.skipped),
                          n_too_long=n_too_long, n_items=len(wanted_ids),
                          n_known=sum(bool(known[i]) for i in wanted_ids) if known is not None else -1,
                          n_kind_skipped=len(kind_skipped), n_unavailable=len(fit) - len(usable))
            rows = [dict(checkpoint=checkpoint, step=step, benchmark=name, subset=s, **m)
                    for s, ms in metrics.items() for m in ms]
            rows += [dict(checkpoint=checkpoint, step=step, benchmark=name, **m) for m in extra_rows]
            rows += [dict(checkpoint=checkpoint, step=step, benchmark=name, subset="all", metric=k, value=v, n=v)
                     for k, v in counts.items() if v >= 0]
            run.write_metrics(rows)
            skipped = [(f"{i}", f"{kind}: {why}") for i, why in kind_skipped]
            if len(fit) > len(usable):
                skipped.append((bench.name, f"{len(fit) - len(usable)} items with a verbatim prompt: {dec} needs "
                                            "a separate context and question"))
            results.append(BenchmarkResult(name, counts, metrics, skipped))
    return results


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
