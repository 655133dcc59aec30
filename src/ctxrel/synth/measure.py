"""Score one checkpoint of the tiny model: conflict records (the same fields `ctxrel eval` writes, plus the
theory's diagnostics) and the metric rows of the run-directory contract.

Per conflict item (a held-out known fact, the context naming another answer):
    output            greedy continuation of `answer_len` tokens, matched like any generation (core/matching.py)
    logp_context/_parametric, m_c   teacher-forced answer log-probabilities, M_C = p_c / (p_c + p_p)
    attention_context / attention_subject   attention of the answer position (the prompt's last token `a:`) on
                      the context tokens / on the question's subject token, mean over layers and heads: the
                      quantity the study's one-layer theory moves (Prop. 1, Thm. 1)
Metric rows: cf_acc, par_acc, share_*, resolved_* (generate), m_c, ll_context (likelihood), attention_* — each
with a 95% percentile bootstrap over items (core/metrics.py) — for subsets `all` and `known`; ID tasks: held-out
context reading and recall without context, and `id_accuracy` = their mean (the study's x-axis analogue);
training loss per example kind on a fixed probe.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from ctxrel.core.matching import match
from ctxrel.core.metrics import bootstrap_means, bootstrap_rows, conflict_metrics, m_c, mean_of_tasks
from ctxrel.synth.mixture import ConflictItem
from ctxrel.synth.model import TinyGPT, answer_logprob, batch, greedy, lm_loss
from ctxrel.synth.world import CTX, Q, Example, World

BENCHMARK = "synth_conflict"
ATTENTION_METRICS = ("attention_context", "attention_subject")


@torch.no_grad()
def last_position_attention(model: TinyGPT, prompts: list[list[int]]) -> np.ndarray:
    """(N, 2): attention mass of each prompt's last position on its context span (from `ctx:` up to `q:`) and
    on its question's subject (the token after `q:`), averaged over layers and heads."""
    out = np.zeros((len(prompts), 2))
    groups: dict[int, list[int]] = {}
    for i, p in enumerate(prompts):
        groups.setdefault(len(p), []).append(i)
    for T, idx in groups.items():
        ids = torch.tensor([prompts[i] for i in idx])  # (B, T)
        _, atts = model(ids, return_attention=True)
        last = torch.stack([a[:, :, -1, :] for a in atts]).mean(dim=(0, 2))  # (B, T): layers and heads averaged
        for row, i in enumerate(idx):
            p = prompts[i]
            q = p.index(Q)
            c0 = p.index(CTX) if CTX in p else q
            out[i, 0] = last[row, c0:q].sum().item()
            out[i, 1] = last[row, q + 1].item()
    return out


def knowledge_records(model: TinyGPT, world: World, items: list[ConflictItem]) -> list[dict[str, Any]]:
    """The knowledge filter in the pretraining format: does the model complete `s r is` with the fact? Asked of
    the pretrained model (step 0), it fixes the `known` subset for the whole trajectory."""
    L = world.cfg.answer_len
    outs = greedy(model, [it.statement_prompt for it in items], L)
    return [dict(id=it.id, question=world.decode(it.statement_prompt[1:]), output=world.decode(o),
                 known=tuple(o) == it.parametric_answer) for it, o in zip(items, outs)]


def conflict_records(model: TinyGPT, world: World, items: list[ConflictItem],
                     known: dict[str, bool]) -> list[dict[str, Any]]:
    L = world.cfg.answer_len
    prompts = [it.prompt for it in items]
    with torch.no_grad():
        outs = greedy(model, prompts, L)
        lc = answer_logprob(model, prompts, [it.context_answer for it in items]).tolist()
        lp = answer_logprob(model, prompts, [it.parametric_answer for it in items]).tolist()
    att = last_position_attention(model, prompts)
    recs = []
    for k, it in enumerate(items):
        ctx, par, out = (world.decode(it.context_answer), world.decode(it.parametric_answer), world.decode(outs[k]))
        mt = match(out, [ctx], [par])
        recs.append(dict(id=it.id, sample=0, category=world.vocab[it.relation],
                         question=world.decode(it.recall_prompt[1:]), context_answer=ctx, parametric_answer=par,
                         output=out, contains_context=mt.contains_context, contains_parametric=mt.contains_parametric,
                         outcome=mt.outcome, first_mention=mt.first_mention, prompt=world.decode(it.prompt),
                         known=known[it.id], logp_context=lc[k], logp_parametric=lp[k], m_c=m_c(lc[k], lp[k]),
                         attention_context=float(att[k, 0]), attention_subject=float(att[k, 1])))
    return recs


def conflict_rows(records: list[dict[str, Any]], *, n_boot: int, seed: int) -> list[dict[str, Any]]:
    """Metric rows (without checkpoint/step) for subsets all and known."""
    rows = []
    subsets = {"all": records, "known": [r for r in records if r["known"]]}
    for subset, recs in subsets.items():
        ms = conflict_metrics(recs, "generate", n_boot=n_boot, seed=seed)
        ms += conflict_metrics(recs, "likelihood", n_boot=n_boot, seed=seed)
        ms += bootstrap_rows([[r[m] for m in ATTENTION_METRICS] for r in recs], ATTENTION_METRICS, n_boot=n_boot,
                             seed=seed)
        rows += [dict(benchmark=BENCHMARK, subset=subset, **m) for m in ms]
    rows += [dict(benchmark=BENCHMARK, subset="all", metric="n_items", value=len(records), n=len(records)),
             dict(benchmark=BENCHMARK, subset="all", metric="n_known", value=len(subsets["known"]),
                  n=len(subsets["known"]))]
    return rows


def id_rows(model: TinyGPT, world: World, id_context: list[Example], items: list[ConflictItem], *,
            n_boot: int, seed: int) -> list[dict[str, Any]]:
    """Exact-answer accuracy on held-out context reading (`synth_id_context`) and on recall of the conflict facts
    without context (`synth_id_recall`), and `id_accuracy`, their mean, with an interval from averaged bootstrap
    replicates (as the standard tasks' id_accuracy row)."""
    L = world.cfg.answer_len
    prompts = [e.ids[:len(e.ids) - L - 1] for e in id_context]
    outs = greedy(model, prompts, L)
    ctx_ok = np.array([[float(o == e.ids[len(e.ids) - L - 1:-1])] for o, e in zip(outs, id_context)])
    outs = greedy(model, [it.recall_prompt for it in items], L)
    rec_ok = np.array([[float(tuple(o) == it.parametric_answer)] for o, it in zip(outs, items)])
    rows, reps = [], []
    for name, m in (("synth_id_context", ctx_ok), ("synth_id_recall", rec_ok)):
        rows += bootstrap_rows(m, ["acc"], n_boot=n_boot, seed=seed, benchmark=name, subset="all")
        reps.append(bootstrap_means(m, n_boot=n_boot, seed=seed)[:, 0])
    value, lo, hi = mean_of_tasks([r["value"] for r in rows], reps)
    rows.append(dict(benchmark="id_accuracy", subset="all", metric="id_accuracy", value=value, n=2, ci_low=lo,
                     ci_high=hi))
    return rows


@torch.no_grad()
def probe_rows(model: TinyGPT, probe: dict[str, list[Example]]) -> list[dict[str, Any]]:
    """Mean training loss of each example kind on a fixed sample (does a kind still carry loss to reduce?)."""
    rows = []
    for kind, exs in probe.items():
        ids, tgt = batch([e.ids for e in exs], [e.target for e in exs])
        loss = lm_loss(model(ids), ids, tgt).item()
        rows.append(dict(benchmark="synth_train", subset=kind, metric="loss", value=loss, n=len(exs)))
    return rows
