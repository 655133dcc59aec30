"""The instruction-finetuning mixture and the evaluation sets of the synthetic lab. Pure: world + seed in,
examples out; the same (config, seed) always gives the same lists.

Mixture (shares of `n_examples`, summing to 1; docs/design.md, 'Words'):
    c           C    unknown subject, the context states the fact: only the context can answer
    cs          C+S  known subject, the context repeats what the model memorised
    s           S    known subject, no context: pure recall in the QA format
    irrelevant  C+S:irrelevant  known subject, the context states only other facts: memory must answer
    cf_aug      cf_aug  known subject, the context states another answer and the target follows the context
                (the counterfactual-augmentation mitigation)
`c_fresh`: every C example gets a random answer (its subject can never become predictive, Prop. 3 off).
`drop_cs` (the filtering mitigation) removes every example a memorised answer already solves (C+S and
C+S:irrelevant), leaving the rest as they are, so the set shrinks.

Evaluation sets (never trained on): conflict items (every fact of the conflict subjects, the context naming
another answer), the held-out context-reading set (id_unknown subjects with their fact in context), and
recall questions about the conflict facts without context.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from ctxrel.synth.world import BOS, IS, Example, World, conflict_prompt, ift_example, other_answer, qa

KINDS = {"c": "C", "cs": "C+S", "s": "S", "irrelevant": "C+S:irrelevant", "cf_aug": "cf_aug"}
MEMORY_SOLVED = ("C+S", "C+S:irrelevant")  # what drop_cs removes


def _cycle(facts: list[tuple[int, int]], n: int, rng: random.Random) -> list[tuple[int, int]]:
    """`n` facts, each used once before any is reused (reshuffled per round)."""
    out: list[tuple[int, int]] = []
    while len(out) < n and facts:
        round_ = facts[:]
        rng.shuffle(round_)
        out += round_[:n - len(out)]
    return out


def ift_mixture(world: World, shares: dict[str, float], n_examples: int, drop_cs: bool,
                seed: int, c_fresh: bool = False) -> list[Example]:
    """The finetuning set in a seeded order (the training loop reshuffles it every epoch)."""
    rng = random.Random(f"ift-{seed}")
    unknown = [(s, r) for s in world.pools["unknown"] for r in world.relations]
    known = [(s, r) for s in world.pools["known"] for r in world.relations]
    out = []
    for key, kind in KINDS.items():
        n = round(shares[key] * n_examples)
        if n == 0 or (drop_cs and kind in MEMORY_SOLVED):
            continue
        for s, r in _cycle(unknown if kind == "C" else known, n, rng):
            out.append(ift_example(world, kind, s, r, rng, fresh=c_fresh and kind == "C"))
    rng.shuffle(out)
    return out


@dataclass
class ConflictItem:
    id: str
    subject: int
    relation: int
    prompt: list[int]  # ends with `a:`
    context_answer: tuple[int, ...]
    parametric_answer: tuple[int, ...]
    recall_prompt: list[int]  # the same question without context (QA format)
    statement_prompt: list[int]  # `<bos> s r is`: the pretraining format (the knowledge filter asks this)


def conflict_items(world: World, seed: int) -> list[ConflictItem]:
    rng = random.Random(f"conflict-{seed}")
    items = []
    for s in world.pools["conflict"]:
        for r in world.relations:
            truth = world.facts[(s, r)]
            alt = other_answer(world, truth, rng)
            items.append(ConflictItem(f"{world.vocab[s]}-{world.vocab[r]}", s, r,
                                      conflict_prompt(world, s, r, alt, rng), alt, truth,
                                      qa(None, s, r, None)[0], [BOS, s, r, IS]))
    return items


def id_context_items(world: World, seed: int) -> list[Example]:
    """Held-out context-reading questions: never-seen subjects whose fact is in the context."""
    rng = random.Random(f"id-{seed}")
    return [ift_example(world, "C", s, r, rng) for s in world.pools["id_unknown"] for r in world.relations]


def train_probe(examples: list[Example], per_kind: int, seed: int) -> dict[str, list[Example]]:
    """A fixed sample of training examples per kind: their loss is tracked at every checkpoint."""
    rng = random.Random(f"probe-{seed}")
    by_kind: dict[str, list[Example]] = {}
    for e in examples:
        by_kind.setdefault(e.kind, []).append(e)
    return {k: rng.sample(v, min(per_kind, len(v))) for k, v in sorted(by_kind.items())}
