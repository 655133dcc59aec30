"""Which items of a benchmark are scored: the stratified `--limit`, the model window, the knowledge filter.

`select_items` is the conflict benchmarks' sampler: its picks are frozen by every run directory already written
(a resumed run must score the same ids), so its seeding never changes. The standard tasks keep their own seeding
(`standard.tasks.stratified_limit`, frozen the same way by their `items_sha256`); both walk the categories round
robin through `core.sampling.round_robin`.
"""

from __future__ import annotations

import random
from collections import defaultdict
from typing import Any, Sequence

from ctxrel.backends.base import LM, chunk_size
from ctxrel.benchmarks.schema import ConflictItem
from ctxrel.config.settings import EvalConfig
from ctxrel.core.errors import InputError
from ctxrel.core.matching import match, unscorable
from ctxrel.core.prompts import PromptBuilder
from ctxrel.core.sampling import by_category, round_robin
from ctxrel.evaluate import shards
from ctxrel.evaluate.records import progress_bar
from ctxrel.evaluate.shards import ALONE, Shard
from ctxrel.rundir.files import read_records


def select_items(items: Sequence[ConflictItem], limit: int | None, seed: int = 0) -> list[ConflictItem]:
    """At most `limit` items, spread evenly over categories (round robin over seeded shuffles), in a stable
    order. The same (items, limit, seed) always gives the same subset, so checkpoints are compared on the same
    items."""
    if limit is None or limit >= len(items):
        return list(items)
    groups = by_category(items)
    rng = random.Random(seed)
    queues = []
    for cat in sorted(groups):
        g = groups[cat][:]
        rng.shuffle(g)
        queues.append(g)
    return round_robin(queues, limit)


def fit_window(items: list[ConflictItem], prompts: dict[str, str], lm: LM, cfg: EvalConfig,
               skipped: list[tuple[str, str]]) -> list[ConflictItem]:
    """The items whose prompt leaves room for max_new_tokens in the model window; an item that does not fit is
    an error naming its file and line, or, with eval.skip_invalid, counted in `skipped`."""
    budget = lm.max_length - cfg.max_new_tokens
    lengths = lm.count_tokens([prompts[it.id] for it in items])
    kept = []
    for it, n in zip(items, lengths):
        if n <= budget:
            kept.append(it)
            continue
        msg = (f"prompt of item {it.id} is {n} tokens; with max_new_tokens={cfg.max_new_tokens} it exceeds "
               f"the model window of {lm.max_length} tokens")
        if not cfg.skip_invalid:
            path, _, line = it.source.rpartition(":")
            raise InputError(msg + "; shorten the context or pass --skip-invalid to count and skip it",
                             path=path or it.source, line=int(line) if line.isdigit() else None)
        skipped.append((it.source, msg))
    return kept


def knowledge_filter(items: list[ConflictItem], ref: LM, builder: PromptBuilder, cfg: EvalConfig,
                     path, shard: Shard = ALONE) -> dict[str, bool]:
    """Ask each question without context (greedy); an item is known if the answer contains the parametric
    answer (nested answers resolved as in `match`). Items sharing a question are asked once. Resumable:
    answers are appended to `path`. Sharded, the questions are split over the processes (`evaluate.shards`) and
    every process returns the whole verdict."""
    done = {r["id"]: r for r in read_records(path)}
    by_prompt: dict[str, list[ConflictItem]] = defaultdict(list)
    for it in items:
        if it.id not in done:
            by_prompt[builder.without_context(it.question)].append(it)
    prompts = list(by_prompt)
    if not prompts:  # all answered already (a resumed run, or a study's later checkpoint)
        shards.clear(path, shard)
        return {it.id: bool(done[it.id]["known"]) for it in items}
    bar = progress_bar(len(prompts), "knowledge filter")

    def ask(chunk: list[str]) -> list[dict[str, Any]]:
        outs = ref.generate(chunk, max_new_tokens=cfg.max_new_tokens, on_done=bar.update)
        recs = []
        for p, o in zip(chunk, outs):
            for it in by_prompt[p]:
                # an answer containment cannot score (likelihood mode accepts them) never makes an item known
                known = (match(o[0], it.context_answers, it.parametric_answers).contains_parametric
                         and not unscorable(it.parametric_answer))
                recs.append(dict(id=it.id, question=it.question, prompt=p, output=o[0], known=known))
        return recs

    new = shards.score_units(prompts, size=chunk_size(ref), score=ask, path=path,
                             ids=lambda p: [it.id for it in by_prompt[p]],
                             cost=lambda c: sum(ref.count_tokens(c)), shard=shard)
    done.update({r["id"]: r for r in new})
    if shard.world > 1:  # the merged file, for the processes that scored only their shard
        done = {r["id"]: r for r in read_records(path)}
    bar.close()
    return {it.id: bool(done[it.id]["known"]) for it in items}
