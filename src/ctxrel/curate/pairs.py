"""`ctxrel curate pairs`: preference pairs for a dpo stage, built from ctxrel's own engines or a user's file,
with the training mixture's leak guard and a composition report.

Builders (`ctxrel.train.pairs` holds the record format):

* **conflict** (Context-DPO): chosen = the answer the context states, rejected = the memorised one. From the
  fact tables (`source=facts`: a real subject stated with another row's answer) or from the items of a conflict
  benchmark (`source=NAME`, `NAME=PATH` or a file, loaded like `--benchmark`);
* **irrelevant** (KnowPO): the question asked with a context about another subject; chosen = the memorised
  answer, rejected = the distractor the irrelevant context states. From the fact tables, or from the items of
  the benchmark through `ctxrel.benchmarks.contexts.irrelevant_item` (the same borrowing as the `irrelevant` context kind);
* **user**: the pairs of `user=PATH` (validated like a dpo stage's data; `skip_invalid` counts bad records).

Leak guard: every pair goes through `ctxrel.train.mixture.eval_overlap`, the check that keeps the training
mixture disjoint from the built-in evaluation benchmarks: a pair whose prompt, context, question, either
response or subject names a `cf_capitals` city or a `biographies` person, or asks about a capital, is refused
and counted with its reason. Built from `cf_capitals` itself, every pair is refused.

Outputs: `<out>/data.jsonl` (pair records; a dpo stage reads it as `data.source`) and `<out>/manifest.json`
(parameters, inputs, and counts: pairs per kind, refused overlaps, invalid records skipped).
"""

from __future__ import annotations

import random
from collections import Counter
from pathlib import Path
from typing import Any

from ctxrel.core.errors import CtxrelError


def pair_overlap(record: dict[str, Any]) -> list[str]:
    """The ways one pair record touches the built-in evaluation benchmarks (empty = none): the training
    mixture's guard applied to its prompt, context, question, both responses and subject."""
    from ctxrel.train.mixture import eval_overlap

    prompt = record.get("prompt")
    text = prompt if isinstance(prompt, str) else " ".join(
        m.get("content", "") for m in prompt if isinstance(m, dict)) if isinstance(prompt, list) else ""

    def answer(key):
        v = record.get(key)
        return v[0].get("content", "") if isinstance(v, list) and v and isinstance(v[0], dict) else str(v or "")

    probe = dict(id=record.get("id", "?"), relation=str(record.get("relation", "")),
                 context=" ".join(str(record.get("context") or "").split() + text.split()),
                 question=str(record.get("question") or ""), answer=f"{answer('chosen')} ; {answer('rejected')}",
                 subject=str(record.get("subject") or ""))
    return eval_overlap([probe])


def items_pairs(bench: str, kinds: dict[str, int], seed: int) -> list[dict]:
    """Pairs from a conflict benchmark's items: up to kinds[kind] of each kind (all when larger), seeded."""
    from ctxrel.benchmarks.registry import load_benchmark
    from ctxrel.benchmarks.contexts import available, irrelevant_item, subject

    items = [it for it in load_benchmark(bench).items if available(it, "irrelevant")]
    if not items:
        raise CtxrelError(f"source={bench}: no item with a separate context to build pairs from")
    out = []
    for kind, count in kinds.items():
        rng = random.Random(f"{seed}:items:{kind}")
        for k, item in enumerate(rng.sample(items, min(count, len(items)))):
            if kind == "conflict":
                context, chosen, rejected = item.context, item.context_answer, item.parametric_answer
            else:
                other, _ = irrelevant_item(item, items, seed)
                if other is None:
                    continue
                context, chosen, rejected = other.context, item.parametric_answer, other.context_answer
            out.append(dict(kind=kind, context=context, question=item.question, chosen=chosen, rejected=rejected,
                            subject=subject(item), id=f"{kind}-{item.id}"))
    return out


def build_pairs(cfg) -> dict[str, Any]:
    """Build, guard and write the pairs of `cfg` (`ctxrel.curate.config.PairsBuildConfig`); return the counts."""
    from ctxrel.curate.dataset import dataset_text
    from ctxrel.curate.manifest import file_input, output_entry, write_manifest
    from ctxrel.curate.operations import DATA, claim_out_dir
    from ctxrel.train.pairs import generate_pairs, pair_counts, read_pairs

    counts = pair_counts(cfg.n, cfg.irrelevant)  # checks the share before anything is written
    user_pairs, skipped = [], Counter()
    if cfg.user:  # validated before the output directory is claimed
        from ctxrel.train.data import read_file

        pairs, skipped = read_pairs(cfg.user, skip_invalid=cfg.skip_invalid)
        valid = {p.source for p in pairs}
        from ctxrel.train.data import local_source

        user_pairs = [dict(r, kind="user") for r, where in read_file(local_source(cfg.user)) if where in valid]
    out = claim_out_dir(cfg.out, (cfg.user,))
    built = generate_pairs(cfg.n, cfg.irrelevant, seed=cfg.seed) if cfg.source == "facts" else \
        items_pairs(cfg.source, counts, cfg.seed)
    kept, refused = [], []
    for record in built + user_pairs:
        problems = pair_overlap(record)
        if problems:
            refused.append(dict(kind=record.get("kind", ""), id=record.get("id", "?"), why=problems[0]))
        else:
            kept.append(record)
    if not kept:
        raise CtxrelError(f"every pair ({len(refused)}) names an entity of an evaluation benchmark (e.g. "
                          f"{refused[0]['why'] if refused else '-'}); nothing written to {cfg.out}/{DATA}")
    from ctxrel.rundir.files import atomic_write_text

    atomic_write_text(out / DATA, dataset_text(kept))
    composition = dict(pairs=len(kept), kinds=dict(Counter(r.get("kind", "") for r in kept)),
                       refused_overlap=dict(Counter(r["kind"] for r in refused)),
                       skipped_invalid=dict(skipped))
    inputs = [dict(role="source", source=cfg.source)] + ([file_input("user", cfg.user)] if cfg.user else [])
    write_manifest(out, operation="curate pairs",
                   parameters=dict(source=cfg.source, n=cfg.n, irrelevant=cfg.irrelevant, user=cfg.user,
                                   skip_invalid=cfg.skip_invalid, seed=cfg.seed),
                   inputs=inputs, outputs=[output_entry(out, DATA, len(kept))], counts=composition,
                   refused=refused[:50])
    return dict(counts=composition, refused=refused, out=str(out), examples=kept[:2])
