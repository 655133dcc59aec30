"""`eval.probes` and `--attention`: passes inside the model at one checkpoint, and their rows (math: core/probe_math).

    evals/<checkpoint>/weights.jsonl             one row per (layer, module): ||ΔW||_F, ||W_0||_F, relative
    evals/<checkpoint>/<benchmark>.heads.jsonl   one row per (item, layer, head): attention mass on the context,
                                                 the question and the rest of the prompt (they sum to 1)
    evals/<checkpoint>/<benchmark>.lens.jsonl    one row per (item, layer): log-probabilities of the first token
                                                 of the context answer and of the parametric answer, log-odds

Every file is tidy (`pandas.read_json(path, lines=True)`) and resumable (items already there are not measured
again; weights.jsonl is written whole). Metric rows where a single number fits: `weight_change`,
`weight_change_relative`, `weight_change_qk_share` (benchmark `weights`), `head_attention_context_max`,
`lens_context_wins`, `lens_decided_layer`, `lens_cross_layer` (per benchmark and subset).

The probes see what the scoring saw: the same items and the same prompts. Only the heads pass uses the eager
attention kernel; the lens pass runs the model as it is.
"""

from __future__ import annotations

import json
import time
from typing import Any

import numpy as np

from ctxrel.backends.base import ProbedLM
from ctxrel.benchmarks.schema import ConflictItem
from ctxrel.core.errors import CtxrelError
from ctxrel.core.metrics import bootstrap_rows
from ctxrel.core.probe_math import (SPANS, crossing_layer, decided_layer, head_matrices, lens_curves, weight_rows,
                                    weight_summary)
from ctxrel.core.prompts import continuation_delimiter
from ctxrel.evaluate import shards
from ctxrel.evaluate.records import attention_spans, progress_bar
from ctxrel.evaluate.shards import ALONE, Shard
from ctxrel.rundir.files import RunDir, append_records, atomic_write_text, chunked, read_records, step_of

WEIGHTS_BENCHMARK = "weights"  # the benchmark column of weight-change metric rows (a property of the model)
CHUNK = 64  # items per append: a crash loses at most this much probe work


def _round(x: float) -> float:
    return float(f"{x:.6g}")


def _need(lm: ProbedLM, able: bool, probe: str) -> None:
    if not able:
        raise CtxrelError(f"{lm.name}: this backend cannot run the {probe} probe; drop it from eval.probes")


def weight_probe(lm: ProbedLM, run: RunDir, *, checkpoint: str, step: int | None, base: str,
                 seconds: dict[str, float]) -> list[dict[str, Any]]:
    """Weight change of every decoder projection from the base model `base` (model.name); rows once per
    checkpoint, reused on a rerun."""
    _need(lm, lm.capabilities.weight_deltas, "weights")
    t0 = time.perf_counter()
    path = run.eval_file(checkpoint, WEIGHTS_BENCHMARK)
    rows = read_records(path)
    if not rows:
        reader = None
        if not lm.has_lora():
            from ctxrel.models.loading import base_weights

            reader = base_weights(base)
        rows = [dict(checkpoint=checkpoint, step=step, **{k: _round(v) if isinstance(v, float) else v
                                                          for k, v in r.items()})
                for r in weight_rows(lm.weight_deltas(reader))]
        if not rows:
            raise CtxrelError(f"{lm.name}: the weights probe found no decoder projections to measure")
        atomic_write_text(path, "".join(json.dumps(r) + "\n" for r in rows))
    summary = weight_summary(rows)
    seconds["weights"] = seconds.get("weights", 0.0) + time.perf_counter() - t0
    return [dict(checkpoint=checkpoint, step=step, benchmark=WEIGHTS_BENCHMARK, subset="all", metric=m, value=v,
                 n=len(rows)) for m, v in summary.items() if not np.isnan(v)]


def _subsets(ids: list[str], known: dict[str, bool] | None) -> dict[str, list[str]]:
    out = {"all": ids}
    if known is not None:
        out["known"] = [i for i in ids if known.get(i)]
    return out


def _requests(it: ConflictItem, prompt: str) -> list[str]:
    """The two continuations whose first tokens the lens reads (as likelihood mode scores them)."""
    d = continuation_delimiter(prompt)
    return [it.context_continuation or d + it.context_answer, it.parametric_continuation or d + it.parametric_answer]


def measure_items(lm: ProbedLM, items: list[ConflictItem], prompts: dict[str, str], run: RunDir, *, checkpoint: str,
                  benchmark: str, heads: bool, lens: bool, seconds: dict[str, float]) -> None:
    """Append heads.jsonl / lens.jsonl rows for the items not yet measured. When both probes are on, one forward
    pass per batch serves both (eager attention kernel; the lens's last layer is still checked against the
    model's logits), so the two cost one prefill of the prompts, not two."""
    if heads:
        _need(lm, lm.capabilities.attention, "heads")  # with lens as well: one probe_pass needs both
    if lens:
        _need(lm, lm.capabilities.hidden_states, "lens")
    t0 = time.perf_counter()
    hpath, lpath = run.eval_file(checkpoint, benchmark, "heads"), run.eval_file(checkpoint, benchmark, "lens")
    spans = {it.id: attention_spans(it, prompts[it.id]) for it in items}
    need_h = {it.id for it in items if heads and spans[it.id] is not None} - {r["id"] for r in read_records(hpath)}
    need_l = {it.id for it in items if lens} - {r["id"] for r in read_records(lpath)}
    todo = [it for it in items if it.id in need_h | need_l]
    names = " + ".join(n for n, on in (("heads", heads), ("lens", lens)) if on)
    bar = progress_bar(len(todo), f"{benchmark} ({names})")
    for chunk in chunked(todo, CHUNK):
        with_h = [it for it in chunk if it.id in need_h]
        texts = [prompts[it.id] for it in chunk]
        conts = [_requests(it, prompts[it.id]) for it in chunk]
        if heads and lens and len(with_h) == len(chunk):
            masses, lenses = lm.probe_pass(texts, spans=[spans[it.id] for it in chunk], continuations=conts,
                                           on_done=bar.update)
        else:
            masses = lm.attention_by_head([prompts[it.id] for it in with_h], [spans[it.id] for it in with_h]) \
                if with_h else []
            lenses = lm.answer_lens(list(zip(texts, conts)), on_done=bar.update) if lens else []
            masses = dict(zip([it.id for it in with_h], masses))
            masses = [masses.get(it.id) for it in chunk]
        h_recs, l_recs = [], []
        for k, it in enumerate(chunk):
            m = masses[k] if heads else None
            if m is not None and it.id in need_h:
                h_recs += [dict(id=it.id, category=it.category, layer=layer, head=head,
                                **{s: _round(float(m[layer, head, j])) for j, s in enumerate(SPANS)})
                           for layer in range(m.shape[0]) for head in range(m.shape[1])]
            if lens and it.id in need_l:
                lp, same = lenses[k], _same_first_token(lm, texts[k], conts[k])
                l_recs += [dict(id=it.id, category=it.category, layer=layer,
                                logp_context=_round(float(lp[layer, 0])), logp_parametric=_round(float(lp[layer, 1])),
                                log_odds=_round(float(lp[layer, 0] - lp[layer, 1])), same_first_token=same)
                           for layer in range(lp.shape[0])]
        if h_recs:
            append_records(hpath, h_recs)
        if l_recs:
            append_records(lpath, l_recs)
    bar.close()
    key = "heads+lens" if heads and lens else names
    seconds[key] = seconds.get(key, 0.0) + time.perf_counter() - t0


def head_rows(run: RunDir, items: list[ConflictItem], *, checkpoint: str, step: int | None, benchmark: str,
              known: dict[str, bool] | None) -> list[dict[str, Any]]:
    """Metric rows of the heads probe: the largest mean context attention of any head."""
    per_item = head_matrices(read_records(run.eval_file(checkpoint, benchmark, "heads")), "context")
    rows = []
    for subset, ids in _subsets([it.id for it in items if it.id in per_item], known).items():
        if ids:
            mean = np.mean([per_item[i] for i in ids], axis=0)  # (L, H)
            rows.append(dict(checkpoint=checkpoint, step=step, benchmark=benchmark, subset=subset,
                             metric="head_attention_context_max", value=float(mean.max()), n=len(ids)))
    return rows


def lens_rows(run: RunDir, items: list[ConflictItem], *, checkpoint: str, step: int | None, benchmark: str,
              known: dict[str, bool] | None, n_boot: int, seed: int) -> list[dict[str, Any]]:
    """Metric rows of the lens probe: share of items whose context first token wins at the last layer, mean
    layer at which items are decided, and where the mean log-odds curve crosses 0."""
    curves = lens_curves(read_records(run.eval_file(checkpoint, benchmark, "lens")))
    rows = []
    for subset, ids in _subsets([it.id for it in items if it.id in curves], known).items():
        if not ids:
            continue
        meta = dict(checkpoint=checkpoint, step=step, benchmark=benchmark, subset=subset)
        odds = np.array([curves[i] for i in ids])  # (N, L)
        wins = (odds[:, -1] > 0).astype(float)[:, None]
        rows += bootstrap_rows(wins, ["lens_context_wins"], n_boot=n_boot, seed=seed, **meta)
        layers = [[d] for i in ids if (d := decided_layer(list(curves[i]))) is not None]
        if layers:
            rows += bootstrap_rows(layers, ["lens_decided_layer"], n_boot=n_boot, seed=seed, **meta)
        cross = crossing_layer(list(odds.mean(axis=0)))
        if cross is not None:
            rows.append(dict(meta, metric="lens_cross_layer", value=cross, n=len(ids)))
    return rows


def _same_first_token(lm: ProbedLM, prompt: str, conts: list[str]) -> bool:
    a, b = (lm.split_continuation(prompt, c)[1][:1] for c in conts)
    return a == b


def probe_rows(lm: ProbedLM, items: list[ConflictItem], prompts: dict[str, str], run: RunDir, cfg, *,
               checkpoint: str, step: int | None, benchmark: str, known: dict[str, bool] | None,
               seconds: dict[str, float]) -> list[dict[str, Any]]:
    """The per-benchmark probes of `cfg.probes` (heads, lens) on one benchmark's items; their metric rows."""
    heads, lens = "heads" in cfg.probes, "lens" in cfg.probes
    if not (heads or lens):
        return []
    measure_items(lm, items, prompts, run, checkpoint=checkpoint, benchmark=benchmark, heads=heads, lens=lens,
                  seconds=seconds)
    rows = []
    if heads:
        rows += head_rows(run, items, checkpoint=checkpoint, step=step, benchmark=benchmark, known=known)
    if lens:
        rows += lens_rows(run, items, checkpoint=checkpoint, step=step, benchmark=benchmark, known=known,
                          n_boot=cfg.bootstrap, seed=cfg.seed)
    return rows


def timing_line(checkpoint: str, total_s: float, seconds: dict[str, float]) -> str:
    """'step-000016: scoring 20.1 s, probes 6.3 s (weights 0.4 s, heads 3.9 s, lens 2.0 s)'."""
    probes = sum(seconds.values())
    parts = ", ".join(f"{k} {v:.1f} s" for k, v in seconds.items())
    return f"ctxrel: {checkpoint}: scoring {total_s - probes:.1f} s, probes {probes:.1f} s ({parts})"


def attention_rows(lm: ProbedLM, items: list[ConflictItem], prompts: dict[str, str], run: RunDir, cfg, *,
                   checkpoint: str, benchmark: str, known: dict[str, bool] | None,
                   shard: Shard = ALONE) -> list[dict[str, Any]]:
    """`--attention`: mean attention from the answer position to the context's and the question's tokens
    (averaged over layers and heads; the study's Fig. 3b), per item in evals/<ckpt>/<bench>.attention.jsonl
    (resumable) and as metric rows `attention_context` / `attention_question` with bootstrap intervals.
    Sharded, the items are split over the processes and the main process alone returns rows."""

    if not lm.capabilities.attention:
        raise CtxrelError(f"{lm.name}: this backend cannot report attention weights; drop --attention")
    path = run.eval_file(checkpoint, benchmark, "attention")
    done = {r["id"]: r for r in read_records(path)}
    spans = {it.id: attention_spans(it, prompts[it.id]) for it in items}
    todo = [it for it in items if it.id not in done and spans[it.id] is not None]
    bar = progress_bar(len(todo), f"{benchmark} (attention)")

    def measure(chunk: list[ConflictItem]) -> list[dict[str, Any]]:
        values = lm.attention_to_spans([prompts[it.id] for it in chunk], [spans[it.id] for it in chunk],
                                       on_done=bar.update)
        return [dict(id=it.id, category=it.category, attention_context=v[0], attention_question=v[1])
                for it, v in zip(chunk, values)]

    new = shards.score_units(todo, size=16, score=measure, path=path, ids=lambda it: [it.id],
                             cost=lambda c: sum(lm.count_tokens([prompts[it.id] for it in c])), shard=shard)
    done.update({r["id"]: r for r in new})
    bar.close()
    if not shard.main:
        return []
    measured = [done[it.id] for it in items if it.id in done]
    subsets = {"all": measured}
    if known is not None:
        subsets["known"] = [r for r in measured if known.get(r["id"])]
    rows = []
    names = ("attention_context", "attention_question")
    for subset, recs in subsets.items():
        rows += bootstrap_rows([[r[m] for m in names] for r in recs], names, n_boot=cfg.bootstrap, seed=cfg.seed,
                               checkpoint=checkpoint, step=step_of(checkpoint), benchmark=benchmark, subset=subset)
    return rows
