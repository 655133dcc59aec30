"""Preference pairs: records, validation, built-in generation from ctxrel's fact tables, and token ids.

A pair record (JSON / JSONL, one object per line) is a prompt and two responses:

* plain:  `prompt` (string), `chosen`, `rejected` (strings);
* QA:     `question` and optional `context` instead of `prompt`: rendered with the same prompt body as the
          built-in mixture and the conflict benchmarks ("Background: ...\\n\\nQuestion: ..."), so a DPO stage
          reads exactly like the SFT stage and the evaluation;
* chat:   `prompt` as a list of {role, content} turns (system / user / earlier assistant turns), `chosen` and
          `rejected` as strings or as a one-message list [{role: assistant, content}] (TRL's conversational
          format).

Optional keys: `kind` (conflict / irrelevant / user: what built the pair, counted in reports), `id`, `meta`.
Every rendering goes through `ctxrel.train.data` (`render_segments`, `label_segments`): the template
(`data.template`: alpaca / tulu / chat, auto = the tokenizer's chat template when it has one) is applied as for
supervised data, and only the response tokens carry labels.

A record is invalid when a field is missing or not a string, a string is empty, chosen equals rejected, or
(found when tokenising) the prompt alone fills `data.max_length`. Each is one sentence naming file and line, or,
with `skip_invalid`, a counted skip.

Built-in pairs (`data.source: pairs`) come from the real facts the mixture may teach (`training_fact_pool`,
disjoint from the built-in evaluation benchmarks):

* `conflict`   (Context-DPO, Bi et al. 2024): a real subject stated with another row's answer of the same
  relation; chosen = the context's answer, rejected = the memorised (true) one;
* `irrelevant` (KnowPO, Zhang et al. 2025): the question asked with a context about another subject of the same
  relation; chosen = the memorised answer, rejected = the answer the irrelevant context states.
"""

from __future__ import annotations

import math
import random
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from ctxrel.core.errors import CtxrelError, InputError
from ctxrel.core.matching import normalize

PAIR_KINDS = ("conflict", "irrelevant")


@dataclass
class Pair:
    prompt: list[dict[str, str]]  # the turns before the response (the last one a user turn)
    chosen: str
    rejected: str
    qa: tuple[str, str] | None = None  # (question, context) of a QA record: the alpaca template's fields
    kind: str = ""
    source: str = ""  # file:line, for messages


@dataclass
class TokenizedPairs:
    chosen_ids: list[list[int]]
    chosen_labels: list[list[int]]
    rejected_ids: list[list[int]]
    rejected_labels: list[list[int]]
    kinds: list[str]
    stats: dict[str, Any] = field(default_factory=dict)
    answers: list[tuple[str, str]] = field(default_factory=list)  # (chosen, rejected) texts: a grpo reward's


def _where(source: str) -> dict[str, Any]:
    path, _, line = source.rpartition(":")
    return dict(path=path, line=int(line)) if line.isdigit() else dict(path=source)


def _response(record: dict, key: str, source: str) -> str:
    value = record.get(key)
    if isinstance(value, list) and len(value) == 1 and isinstance(value[0], dict) \
            and value[0].get("role") == "assistant":
        value = value[0].get("content")
    if value is None:
        raise InputError(f"missing field {key!r} (a pair needs prompt, chosen and rejected)", key=key,
                         **_where(source))
    if not isinstance(value, str):
        raise InputError(f"field {key!r} must be a string (or one assistant message), got {value!r}"[:200], key=key,
                         **_where(source))
    if not value.strip():
        raise InputError(f"field {key!r} is empty", key=key, **_where(source))
    return value


def to_pair(record: Any, source: str) -> Pair:
    """One pair record -> Pair; an invalid record raises InputError naming file, line and key."""
    from ctxrel.core.prompts import DEFAULT_BODY, NO_CONTEXT_BODY

    if not isinstance(record, dict):
        raise InputError(f"expected a JSON object, got {type(record).__name__}", **_where(source))
    qa = None
    prompt = record.get("prompt")
    if prompt is None and "question" in record:
        question, context = record.get("question"), record.get("context") or ""
        if not isinstance(question, str) or not question.strip():
            raise InputError("field 'question' must be a non-empty string", key="question", **_where(source))
        if not isinstance(context, str):
            raise InputError("field 'context' must be a string", key="context", **_where(source))
        body = DEFAULT_BODY.format(context=context, question=question) if context.strip() else \
            NO_CONTEXT_BODY.format(question=question)
        turns, qa = [{"role": "user", "content": body}], (question, context)
    elif isinstance(prompt, str):
        if not prompt.strip():
            raise InputError("field 'prompt' is empty", key="prompt", **_where(source))
        turns = [{"role": "user", "content": prompt}]
    elif isinstance(prompt, list):
        ok = prompt and all(isinstance(m, dict) and isinstance(m.get("role"), str) and isinstance(m.get("content"), str)
                            and m["content"].strip() for m in prompt)
        if not ok or prompt[-1]["role"] == "assistant":
            raise InputError("'prompt' must be a non-empty list of {role, content} turns with non-empty content, "
                             "ending with a user turn", key="prompt", **_where(source))
        turns = [{"role": m["role"], "content": m["content"]} for m in prompt]
    elif prompt is None:
        raise InputError("missing field 'prompt' (or 'question'): a pair needs prompt, chosen and rejected",
                         key="prompt", **_where(source))
    else:
        raise InputError(f"field 'prompt' must be a string or a list of turns, got {type(prompt).__name__}",
                         key="prompt", **_where(source))
    chosen, rejected = _response(record, "chosen", source), _response(record, "rejected", source)
    if chosen.strip() == rejected.strip():
        raise InputError(f"chosen and rejected are the same text ({chosen.strip()[:60]!r}): nothing to prefer",
                         key="rejected", **_where(source))
    kind = record.get("kind", "")
    return Pair(turns, chosen, rejected, qa, kind if isinstance(kind, str) else "", source)


def read_pairs(source: str, *, skip_invalid: bool = False) -> tuple[list[Pair], Counter]:
    """The pairs of a .json / .jsonl(.gz) file; with `skip_invalid`, invalid records are counted by reason
    (their first sentence without the location) instead of stopping at the first."""
    from ctxrel.train.data import local_source, read_file

    path = local_source(source)
    if path is None:
        raise CtxrelError(f"pairs source {source}: no such file (preference pairs are read from a local "
                          ".json/.jsonl file, or `pairs` for the built-in ones)")
    records = read_file(path)
    pairs, skipped = [], Counter()
    for record, where in records:
        try:
            pairs.append(to_pair(record, where))
        except InputError as e:
            if not skip_invalid:
                raise
            skipped[e.detail.split(" (")[0]] += 1
    if not pairs:
        raise CtxrelError(f"pairs source {source}: no valid pair ({sum(skipped.values())} skipped)")
    return pairs, skipped


# -- built-in pairs from the fact tables -------------------------------------------------------------------------

def pair_counts(n: int, irrelevant: float) -> dict[str, int]:
    if not (isinstance(irrelevant, (int, float)) and math.isfinite(irrelevant) and 0 <= irrelevant <= 1):
        raise CtxrelError(f"data.pairs.irrelevant={irrelevant!r} is a share of the pairs, in [0, 1]")
    k = round(n * irrelevant)
    return {"conflict": n - k, "irrelevant": k}


def generate_pairs(n: int, irrelevant: float = 0.0, seed: int = 0) -> list[dict]:
    """n pair records (QA form, with `kind`, `subject`, `relation`, `id`) from the training fact pool: a share
    `irrelevant` of KnowPO irrelevant-context pairs, the rest Context-DPO conflict pairs. Seeded; each kind
    cycles through the facts in its own seeded order."""
    from ctxrel.core.prompts import sentence_case
    from ctxrel.train.mixture import TEMPLATES, fact_statement, training_fact_pool

    from ctxrel.core.matching import match

    # a subject that names its own answer ("the Czech Republic" / Czech) would put the memorised answer into
    # every context about it: such facts give no clean pair
    facts = [f for f in training_fact_pool() if not match(f.subject, [f.answer, *f.aliases], []).contains_context]
    records = []
    for kind, count in pair_counts(n, irrelevant).items():
        rng = random.Random(f"{seed}:pairs:{kind}")
        order = rng.sample(range(len(facts)), len(facts))
        for k in range(count):
            fact = facts[order[k % len(facts)]]
            true = {normalize(a) for a in (fact.answer, *fact.aliases)}
            others = sorted((f for f in facts if f.relation == fact.relation and f.subject != fact.subject
                             and normalize(f.answer) not in true
                             and match(f"{f.subject} {f.answer}", [fact.answer, *fact.aliases],
                                       [fact.subject]).outcome == "neither"),
                            key=lambda f: (f.subject, f.answer))
            other = rng.choice(others)
            statements, questions = TEMPLATES[fact.relation]
            question = sentence_case(rng.choice(questions).format(subject=fact.subject))
            if kind == "conflict":  # the context states another row's answer about this subject
                context = fact_statement(fact.relation, fact.subject, other.answer, rng.choice(statements))
                chosen, rejected = other.answer, fact.answer
            else:  # the context is about another subject; memory answers
                context = fact_statement(other.relation, other.subject, other.answer, rng.choice(statements))
                chosen, rejected = fact.answer, other.answer
            records.append(dict(kind=kind, context=context, question=question, chosen=chosen, rejected=rejected,
                                subject=fact.subject, relation=fact.relation, id=f"{kind}-{k:06d}"))
    random.Random(f"{seed}:pairs:shuffle").shuffle(records)
    return records


def load_pairs(data_cfg, *, seed: int = 0, skip_invalid: bool = False) -> tuple[list[Pair], Counter]:
    """The pairs a preference stage trains on: built-in (`data.source: pairs`) or a file; `data.limit` takes a
    seeded sample."""
    if data_cfg.source == "pairs":
        p = data_cfg.pairs
        records = generate_pairs(p.n, p.irrelevant, seed=seed)
        pairs, skipped = [to_pair(r, f"pairs:{i}") for i, r in enumerate(records)], Counter()
    else:
        pairs, skipped = read_pairs(data_cfg.source, skip_invalid=skip_invalid)
    if data_cfg.limit is not None and data_cfg.limit < len(pairs):
        pairs = random.Random(seed).sample(pairs, data_cfg.limit)
    return pairs, skipped


# -- tokenising ----------------------------------------------------------------------------------------------------

def tokenize_pairs(pairs: list[Pair], tok, *, template: str, max_length: int, skip_invalid: bool = False,
                   skipped: Counter | None = None) -> TokenizedPairs:
    """Token ids and labels of both responses of every pair (labels only on the response). A pair whose prompt
    leaves no room for a response token within `max_length` is an error (or a counted skip); responses longer
    than the room left are cut (counted)."""
    from ctxrel.train.data import IGNORE, Example, label_segments, render_segments

    def render_chat(msgs, add_generation_prompt):
        return tok.apply_chat_template(msgs, tokenize=False, add_generation_prompt=add_generation_prompt)

    has_chat = bool(getattr(tok, "chat_template", None))
    eos = (tok.eos_token or "") if template != "chat" else ""
    skipped = Counter() if skipped is None else skipped
    out = TokenizedPairs([], [], [], [], [], dict(pairs=len(pairs), truncated=0))
    for pair in pairs:
        sides = []
        for response in (pair.chosen, pair.rejected):
            alpaca = pair.qa if pair.qa else (pair.prompt[-1]["content"], "")
            ex = Example(pair.prompt + [{"role": "assistant", "content": response}], alpaca=alpaca, kind=pair.kind,
                         source=pair.source)
            ids, labels = label_segments(render_segments(ex, template, render_chat if has_chat else None, eos),
                                         tok, tok.bos_token)
            sides.append((ids, labels))
        prompt_len = min(next((i for i, y in enumerate(lab) if y != IGNORE), len(lab)) for _, lab in sides)
        if prompt_len >= max_length:
            if not skip_invalid:
                raise InputError(f"the prompt is {prompt_len} tokens, which leaves no room for a response within "
                                 f"data.max_length={max_length}; shorten it, raise data.max_length, or skip it "
                                 "with skip_invalid", **_where(pair.source))
            skipped["the prompt leaves no room for a response within data.max_length"] += 1
            continue
        out.stats["truncated"] += any(len(ids) > max_length for ids, _ in sides)
        (ci, cl), (ri, rl) = ((ids[:max_length], lab[:max_length]) for ids, lab in sides)
        out.chosen_ids.append(ci), out.chosen_labels.append(cl)
        out.rejected_ids.append(ri), out.rejected_labels.append(rl)
        out.kinds.append(pair.kind)
        out.answers.append((pair.chosen, pair.rejected))
    out.stats["skipped"] = dict(skipped)
    out.stats["kinds"] = dict(Counter(out.kinds))
    if not out.chosen_ids:
        raise CtxrelError(f"no preference pair fits data.max_length={max_length}")
    return out
