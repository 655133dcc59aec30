"""Perplexity without context: each record's mean target-token loss under a reference model, with its context
and with the context removed (the study's signal for non-context-critical C+S examples).

The record is rendered and tokenised exactly as the trainer does (`ctxrel.train.data`: same template, same
response-only labels), once as is and once without its context. Both losses average the cross-entropy over the
same response tokens: the first n of them, n being how many fit within `max_length` in both renderings (usually
the whole response). A record without context is scored once (loss with = loss without).

Speed: sequences of a chunk of records (with- and without-context renderings together) are sorted by length
and batched, so a batch pads little; the vocabulary projection runs only at response positions. Batches are
small on CPU (4) and large on GPU (32); see `default_batch_size`. Resume: scores
are appended to `scores.jsonl` a chunk at a time (crash-safe, `ctxrel.rundir.files`); a rerun skips records already
scored, after checking that the model and settings are the same and that each record's content hash matches.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Callable

from ctxrel.core.errors import CtxrelError
from ctxrel.curate.dataset import Record, has_context, without_context
from ctxrel.rundir.files import append_records, atomic_write_text, read_records

SCORES_FILE = "scores.jsonl"
SETTINGS_FILE = "scores.settings.json"


def default_batch_size(device: str) -> int:
    """Sequences per forward pass. On CPU large batches do not pay: at 1-2 threads a single ~100-token sequence
    already keeps the matmuls busy, and activations of 16 sequences fall out of cache (measured on SmolLM2,
    2-core CPU: batch 2-4 fastest, 16 slower than 1); on a GPU batching is what makes it fast."""
    return 4 if device == "cpu" else 32


def record_sequences(records: list[Record], tok, *, template: str, max_length: int):
    """Token ids and labels for every record: (record index, 'with'|'without', ids, labels), truncated at
    `max_length` (the trainer's rule: cut at the end)."""
    from ctxrel.train.data import label_segments, render_segments, to_example

    def render_chat(msgs, add_generation_prompt):
        return tok.apply_chat_template(msgs, tokenize=False, add_generation_prompt=add_generation_prompt)

    chat = render_chat if getattr(tok, "chat_template", None) else None
    eos = (tok.eos_token or "") if template != "chat" else ""
    out = []
    for rec in records:
        variants = [("with", rec.data)]
        if has_context(rec.data, rec.fmt):
            variants.append(("without", without_context(rec.data, rec.fmt)))
        for name, data in variants:
            ex = to_example(data, rec.fmt, rec.where)
            ids, labels = label_segments(render_segments(ex, template, chat, eos), tok, tok.bos_token)
            out.append((rec.index, name, ids[:max_length], labels[:max_length]))
    return out


class TokenLosses:
    """Per-token cross-entropy at the labelled positions of a batch of sequences, one list per sequence."""

    def __init__(self, model, *, pad_id: int, device: str):
        from ctxrel.train.loop import ResponseLoss

        self.wrapped = ResponseLoss(model)  # finds decoder and output head, rejects unsupported logit scaling
        self.pad_id, self.device = pad_id, device

    def __call__(self, ids: list[list[int]], labels: list[list[int]]) -> list[list[float]]:
        import torch
        import torch.nn.functional as F

        from ctxrel.train.data import IGNORE, collate

        inp, mask, lab = (t.to(self.device) for t in collate(ids, labels, self.pad_id))
        w = self.wrapped
        with torch.inference_mode():
            hidden = w.decoder(input_ids=inp, attention_mask=mask, use_cache=False).last_hidden_state  # (B, T, C)
            targets = lab[:, 1:]  # token t predicts t+1
            keep = targets != IGNORE  # (B, T-1)
            logits = w.head(hidden[:, :-1][keep]).float()  # (N, V): response positions only
            if w.softcap:
                logits = torch.tanh(logits / w.softcap) * w.softcap
            ce = F.cross_entropy(logits, targets[keep], reduction="none")  # (N,)
        return [c.tolist() for c in ce.split(keep.sum(1).tolist())]


def _mean(xs: list[float]) -> float | None:
    return sum(xs) / len(xs) if xs else None


def score_sequences(seqs, losses_fn: Callable, *, batch_size: int, on_batch: Callable[[int], None] | None = None):
    """{(index, variant): per-token losses} for `seqs`, batched in order of length (least padding)."""
    order = sorted(range(len(seqs)), key=lambda i: len(seqs[i][2]))
    out: dict[tuple[int, str], list[float]] = {}
    for b in range(0, len(order), batch_size):
        batch = [seqs[i] for i in order[b:b + batch_size]]
        scorable = [s for s in batch if any(x != -100 for x in s[3][1:])]
        for s in batch:
            out[(s[0], s[1])] = []
        if scorable:
            for s, per_token in zip(scorable, losses_fn([s[2] for s in scorable], [s[3] for s in scorable])):
                out[(s[0], s[1])] = per_token
        if on_batch:
            on_batch(len(batch))
    return out


def combine(rec: Record, per_token: dict[tuple[int, str], list[float]]) -> dict[str, Any]:
    """One score row: mean loss with and without context over the same first n response tokens."""
    with_ = per_token[(rec.index, "with")]
    ctx = (rec.index, "without") in per_token
    without = per_token[(rec.index, "without")] if ctx else with_
    n = min(len(with_), len(without))
    lw, lo = _mean(with_[:n]), _mean(without[:n])
    return dict(index=rec.index, digest=rec.digest, where=rec.where, context=ctx,
                loss_with=None if lw is None else round(lw, 6), loss_without=None if lo is None else round(lo, 6),
                n_tokens=n)


def check_settings(out: Path, settings: dict[str, Any]) -> None:
    """Refuse to mix scores made with another model or rendering into one scores.jsonl."""
    path = out / SETTINGS_FILE
    if path.exists():
        old = json.loads(path.read_text())
        diff = {k: (old.get(k), v) for k, v in settings.items() if old.get(k) != v}
        if diff:
            desc = ", ".join(f"{k}: {a!r} -> {b!r}" for k, (a, b) in sorted(diff.items()))
            raise CtxrelError(f"{out / SCORES_FILE} holds scores made with other settings ({desc}); use another "
                              f"--out, or delete {out / SCORES_FILE} to recompute")
    else:
        atomic_write_text(path, json.dumps(settings, indent=1, sort_keys=True))


def done_scores(out: Path, records: list[Record]) -> dict[int, dict]:
    """Scores already in out/scores.jsonl, by record index; a digest mismatch means the input changed."""
    by_index = {rec.index: rec for rec in records}
    done = {}
    for n, row in enumerate(read_records(out / SCORES_FILE), start=1):
        rec = by_index.get(row.get("index"))
        if rec is None:
            continue  # scored under a larger --limit: kept in the file, not used now
        if row.get("digest") != rec.digest:
            raise CtxrelError(f"{out / SCORES_FILE}:{n}: record {rec.where} has changed since it was scored "
                              f"(content hash {row.get('digest')} -> {rec.digest}); use another --out or delete "
                              "the file to rescore")
        done[rec.index] = row
    return done


def score_records(records: list[Record], out: Path, *, model_spec: str, model=None, tok=None,
                  template: str = "auto", max_length: int = 512, batch_size: int | None = None,
                  device: str | None = None,
                  progress: bool = True, chunk: int | None = None) -> list[dict[str, Any]]:
    """Scores of all `records` (in record order), computing only those not yet in out/scores.jsonl.
    `model`/`tok` may be given already loaded (tests, the benchmark); else `model_spec` is loaded."""
    from ctxrel.core.prompts import resolve_data_template

    if (batch_size is not None and batch_size < 1) or max_length < 2:
        raise CtxrelError(f"--batch-size {batch_size} must be >= 1 and --max-length {max_length} >= 2")
    out.mkdir(parents=True, exist_ok=True)
    check_settings(out, dict(model=model_spec, template=template, max_length=max_length))
    done = done_scores(out, records)
    todo = [r for r in records if r.index not in done]
    if todo:
        if model is None:
            from ctxrel.models.loading import load_model

            model, tok, _ = load_model(model_spec, device=device)
        template = resolve_data_template(template, tok)
        device = str(next(model.parameters()).device)
        batch_size = batch_size or default_batch_size(device)
        pad = tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id
        losses_fn = TokenLosses(model, pad_id=pad, device=device)
        from tqdm.auto import tqdm

        n_seqs = len(todo) + sum(has_context(r.data, r.fmt) for r in todo)  # context records are scored twice
        bar = tqdm(total=n_seqs, unit="seq", desc=f"scoring {len(todo)} records", disable=not progress,
                   dynamic_ncols=True)
        chunk = chunk or max(256, 16 * batch_size)
        try:
            for c in range(0, len(todo), chunk):
                part = todo[c:c + chunk]
                seqs = record_sequences(part, tok, template=template, max_length=max_length)
                per_token = score_sequences(seqs, losses_fn, batch_size=batch_size, on_batch=bar.update)
                rows = [combine(rec, per_token) for rec in part]
                append_records(out / SCORES_FILE, rows)
                done.update({r["index"]: r for r in rows})
        finally:
            bar.close()
    return [done[r.index] for r in records]


def load_scores(directory: Path, records: list[Record]) -> list[dict[str, Any]]:
    """Scores of `records` from a classify run directory (`--scores DIR`); every context record must be there."""
    path = directory / SCORES_FILE
    if not path.exists():
        raise CtxrelError(f"--scores {directory}: no {SCORES_FILE} there; run `ctxrel curate classify` with the "
                          "same --data and --limit first, or leave out --scores to compute them")
    done = done_scores(directory, records)
    missing = [r for r in records if r.index not in done]
    if missing:
        raise CtxrelError(f"--scores {directory}: {len(missing)} of {len(records)} records are not scored (first: "
                          f"{missing[0].where}); rerun classify on the same --data / --limit to complete it")
    return [done[r.index] for r in records]
