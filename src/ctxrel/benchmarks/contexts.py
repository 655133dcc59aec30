"""Three kinds of context per conflict item, and the names of a benchmark scored under a kind and a decoding.

A mitigation that makes a model follow a *conflicting* context may also make it follow an *irrelevant* one, or
damage answers when the context *agrees* with memory. So each conflict item can be asked three ways:

* `conflict`   — the item as it is: the context states the context answer, against memory;
* `gold`       — the same context with the context answer replaced by the parametric answer, so context and
  memory agree. Person answers (items with `meta.person`, e.g. `biographies`) go through ctxrel's substitution
  engine (`substitution`: name parts, possessives, derived words, other people protected); any other
  answer is replaced as a whole word (every alias, longest first). Either way the result must pass the same
  check: no leak (a token of the renamed person left, or the context answer still found by `matching`), no
  over-replacement, and the parametric answer present. An item that cannot be turned cleanly is skipped and
  counted, with the reason;
* `irrelevant` — the context of another item about a different subject (another country, person or question),
  chosen with a seeded generator keyed by the item's id, so every checkpoint sees the same pairs. The borrowed
  context must name neither of this item's answers.

For `gold` and `irrelevant` the right answer is the parametric one. Their records keep the item's id (so kinds
and decoding methods pair item by item) and its parametric answer; `context_answer` is the wrong answer the
output is checked for: for `gold` the original counterfactual answer, for `irrelevant` the answer the borrowed
context states (an output containing it copied the irrelevant context).

Items whose prompt is used verbatim (MemoTrap) have no separate context: only `conflict` is available for them.
Pure: items in, items out.
"""

from __future__ import annotations

import dataclasses
import random
import re
from typing import Sequence

from ctxrel.benchmarks.schema import ConflictItem
from ctxrel.core.entity_swap import substitute
from ctxrel.core.matching import match, normalize, overlapping_answers

KINDS = ("conflict", "gold", "irrelevant")


def available(item: ConflictItem, kind: str) -> bool:
    """Whether `kind` can be built for the item (gold and irrelevant need a separate context)."""
    return kind == "conflict" or (item.prompt is None and bool(item.context.strip()))


def _whole_word(text: str, old: Sequence[str], new: str) -> tuple[str, int]:
    """Replace every whole-word mention of any of `old` (longest first, case-sensitive) by `new`."""
    names = sorted({o for o in old if o.strip()}, key=len, reverse=True)
    rx = re.compile(r"(?<!\w)(?:" + "|".join(re.escape(o) for o in names) + r")(?!\w)")
    return rx.subn(new, text)


def gold_item(item: ConflictItem) -> tuple[ConflictItem | None, str]:
    """The item with its context turned to agree with memory, or (None, why it could not be turned)."""
    if not available(item, "gold"):
        return None, "the item's prompt is used verbatim: no separate context to turn"
    if item.meta.get("person"):
        result = substitute(item.context, item.context_answer, item.parametric_answer)
        text, n = result.text, len(result.replacements)
        if result.leaks:
            return None, f"{result.leaks} leak(s) of {item.context_answer!r} left by the substitution"
        if result.over_replacements:
            return None, f"over-replacement: {result.over_replacements[0].reason}"
    else:
        text, n = _whole_word(item.context, item.context_answers, item.parametric_answer)
    if not n:
        return None, f"the context does not name the context answer {item.context_answer!r} as a whole word"
    m = match(text, item.context_answers, item.parametric_answers)
    if m.contains_context:
        return None, f"the context answer {item.context_answer!r} is still found after replacement"
    if not m.contains_parametric:
        return None, f"the parametric answer {item.parametric_answer!r} is not found after replacement"
    return dataclasses.replace(item, context=text, meta={**item.meta, "context_kind": "gold"}), ""


def subject(item: ConflictItem) -> str:
    """What an item is about: its country or person when the benchmark says, else its question."""
    return str(item.meta.get("country") or item.meta.get("person") or normalize(item.question))


def _fits(item: ConflictItem, other: ConflictItem) -> bool:
    if subject(other) == subject(item) or normalize(other.question) == normalize(item.question):
        return False
    if not available(other, "irrelevant"):
        return False
    m = match(other.context, item.context_answers, item.parametric_answers)
    if m.contains_context or m.contains_parametric:
        return False  # the borrowed context would name one of this item's answers
    return not overlapping_answers(other.context_answers, item.parametric_answers)


def irrelevant_item(item: ConflictItem, pool: Sequence[ConflictItem], seed: int = 0
                    ) -> tuple[ConflictItem | None, str]:
    """The item asked with the context of another item of `pool` about a different subject (seeded by `seed`
    and the item's id: the same choice on every call), or (None, why none fits)."""
    if not available(item, "irrelevant"):
        return None, "the item's prompt is used verbatim: no separate context to replace"
    candidates = sorted((o for o in pool if _fits(item, o)), key=lambda o: o.id)
    if not candidates:
        return None, "no other item about a different subject has a context that names neither answer"
    other = random.Random(f"{seed}:{item.id}").choice(candidates)
    return dataclasses.replace(item, context=other.context, context_answer=other.context_answer,
                               context_aliases=other.context_aliases, context_continuation=None,
                               parametric_continuation=None,
                               meta={**item.meta, "context_kind": "irrelevant", "context_from": other.id}), ""


def build_kind(items: Sequence[ConflictItem], kind: str, seed: int = 0
               ) -> tuple[list[ConflictItem], list[tuple[str, str]]]:
    """(items of that kind, [(item id, why skipped)]): `conflict` returns the items unchanged."""
    if kind not in KINDS:
        raise ValueError(f"unknown context kind {kind!r}; expected one of {', '.join(KINDS)}")
    if kind == "conflict":
        return list(items), []
    built, skipped = [], []
    for it in items:
        new, why = gold_item(it) if kind == "gold" else irrelevant_item(it, items, seed)
        if new is None:
            skipped.append((it.id, why))
        else:
            built.append(new)
    return built, skipped


# -- names: a benchmark under a context kind and a decoding method ------------------------------------------

_VARIANT = re.compile(r"(?P<base>.+)\[(?P<tags>[A-Za-z0-9_.,-]+)\]")


def variant_name(benchmark: str, kind: str = "conflict", decoding: str = "greedy") -> str:
    """`cf_capitals` for (conflict, greedy) — today's name, so old run directories read the same — else
    `cf_capitals[cad]`, `cf_capitals[gold]`, `cf_capitals[irrelevant,adacad]`.

    >>> variant_name("cf_capitals"), variant_name("cf_capitals", "gold", "cad0.5")
    ('cf_capitals', 'cf_capitals[gold,cad0.5]')
    """
    tags = [t for t, default in ((kind, "conflict"), (decoding, "greedy")) if t != default]
    return f"{benchmark}[{','.join(tags)}]" if tags else benchmark


def parse_variant(name: str) -> tuple[str, str, str]:
    """(benchmark, context kind, decoding) of a metric row's benchmark name (inverse of `variant_name`).

    >>> parse_variant("cf_capitals"), parse_variant("cf_capitals[cad]"), parse_variant("nq_swap[gold,adacad]")
    (('cf_capitals', 'conflict', 'greedy'), ('cf_capitals', 'conflict', 'cad'), ('nq_swap', 'gold', 'adacad'))
    """
    m = _VARIANT.fullmatch(name)
    if not m:
        return name, "conflict", "greedy"
    kind, decoding = "conflict", "greedy"
    for tag in m.group("tags").split(","):
        if tag in KINDS:
            kind = tag
        else:
            decoding = tag
    return m.group("base"), kind, decoding
