"""A synthetic world of facts and the token sequences built from it: pretraining statements, instruction
finetuning (IFT) examples of type C / C+S / S, and held-out conflict items. Pure: a seed in, token lists out.

Vocabulary (word level; one token per word):

    specials   <pad> <bos> <eos> is . ctx: q: ? a:
    relations  r0 .. r{R-1}
    subjects   s0 .. s{N-1}      (one token each)
    values     v0 .. v{V-1}      (an answer is `answer_len` value tokens, e.g. "v12 v7")

Subjects are split once per seed into disjoint pools (docs/design.md, 'Words'):

    known        pretrained on (every relation stated); the IFT's C+S and S examples use them
    conflict     pretrained on too, but never seen in IFT: the held-out known facts of the conflict evaluation
    unknown      never pretrained; the subjects of C examples (the answer is only in the context)
    id_unknown   never pretrained, never trained: the held-out context-reading (ID) evaluation
    copy         pretraining-only "documents" that state a random fact about them twice (a copy skill the
                 pretrained model brings to IFT, as real language models do); never a fixed fact

Formats (the model sees them as token ids; loss on the answer tokens and <eos> only):

    statement   <bos> s r is v v . <eos>
    copy doc    <bos> s r is v v . [other facts .] s r is v v . <eos>
    C, C+S      <bos> ctx: [facts .] q: s r ? a: v v <eos>     (the fact s r is among the context's facts)
    S           <bos> q: s r ? a: v v <eos>
    conflict    <bos> ctx: [facts .] q: s r ? a:               (s a conflict subject, the context's fact
                                                                  about s r names another answer)
"""

from __future__ import annotations

import random
from dataclasses import dataclass

SPECIALS = ("<pad>", "<bos>", "<eos>", "is", ".", "ctx:", "q:", "?", "a:")
PAD, BOS, EOS, IS, DOT, CTX, Q, QMARK, A = range(len(SPECIALS))


@dataclass
class WorldConfig:
    n_known: int = 120  # pretrained subjects used by C+S and S examples
    n_conflict: int = 50  # pretrained subjects held out of IFT: the conflict evaluation's facts
    n_unknown: int = 200  # never-pretrained subjects of the C examples
    n_id_unknown: int = 50  # never-pretrained, never-trained subjects of the held-out context-reading eval
    n_copy: int = 200  # pretraining-only subjects of copy documents
    n_relations: int = 4  # relations per subject
    n_values: int = 64  # value tokens; each relation draws its answers from them
    answer_len: int = 1  # value tokens per answer (2+ = multi-token answers, teacher-forced)
    distractors: int = 1  # other facts in every context besides the relevant one (0 = a single fact)


@dataclass
class World:
    cfg: WorldConfig
    vocab: list[str]  # token id -> word
    facts: dict[tuple[int, int], tuple[int, ...]]  # (subject id, relation id) -> answer token ids
    pools: dict[str, list[int]]  # pool name -> subject token ids

    @property
    def relations(self) -> list[int]:
        return [len(SPECIALS) + k for k in range(self.cfg.n_relations)]

    def decode(self, ids) -> str:
        return " ".join(self.vocab[i] for i in ids)


POOLS = ("known", "conflict", "unknown", "id_unknown", "copy")


def make_world(cfg: WorldConfig, seed: int) -> World:
    """Draw subjects' pools and every (subject, relation) answer; the same seed gives the same world."""
    rng = random.Random(f"world-{seed}")
    sizes = {"known": cfg.n_known, "conflict": cfg.n_conflict, "unknown": cfg.n_unknown,
             "id_unknown": cfg.n_id_unknown, "copy": cfg.n_copy}
    n_subj = sum(sizes.values())
    vocab = list(SPECIALS) + [f"r{k}" for k in range(cfg.n_relations)] + [f"s{k}" for k in range(n_subj)] + \
        [f"v{k}" for k in range(cfg.n_values)]
    first_subj = len(SPECIALS) + cfg.n_relations
    first_val = first_subj + n_subj
    subjects = list(range(first_subj, first_val))
    rng.shuffle(subjects)  # pools get scattered token ids: no pool is recognisable from its id range
    pools, k = {}, 0
    for name in POOLS:
        pools[name] = sorted(subjects[k:k + sizes[name]])
        k += sizes[name]
    facts = {}
    for s in sorted(subjects):
        for r in range(len(SPECIALS), first_subj):
            facts[(s, r)] = tuple(first_val + rng.randrange(cfg.n_values) for _ in range(cfg.answer_len))
    return World(cfg, vocab, facts, pools)


def other_answer(world: World, answer: tuple[int, ...], rng: random.Random) -> tuple[int, ...]:
    """A random answer differing from `answer` in its first token (so the two never share a prefix that
    teacher forcing or greedy decoding could confuse)."""
    first_val = len(world.vocab) - world.cfg.n_values
    while True:
        alt = tuple(first_val + rng.randrange(world.cfg.n_values) for _ in answer)
        if alt[0] != answer[0]:
            return alt


# -- sequences ----------------------------------------------------------------------------------------------

def statement(s: int, r: int, answer: tuple[int, ...]) -> list[int]:
    return [s, r, IS, *answer, DOT]


def context_block(fact: list[int], others: list[list[int]], rng: random.Random) -> list[int]:
    """`ctx:` followed by the relevant statement and the distractor statements in random order."""
    parts = others + [fact]
    rng.shuffle(parts)
    return [CTX] + [t for p in parts for t in p]


def distractor_facts(world: World, pool: list[int], n: int, avoid: tuple[int, int],
                     rng: random.Random) -> list[list[int]]:
    """`n` true statements about other (subject, relation) pairs of `pool` (true: a distractor never
    contradicts what the world says)."""
    out = []
    while len(out) < n:
        s, r = rng.choice(pool), rng.choice(world.relations)
        if s != avoid[0]:
            out.append(statement(s, r, world.facts[(s, r)]))
    return out


@dataclass
class Example:
    """One sequence: token ids, where the loss applies (1 = answer token or <eos>), and what it is."""
    ids: list[int]
    target: list[int]  # 0/1 per position of `ids`: is ids[t] a training target (predicted from t-1)?
    kind: str  # statement | copy | C | C+S | S | cf_aug | C+S:irrelevant


def pretraining_corpus(world: World, n_copy_docs: int, rng: random.Random) -> list[Example]:
    """Statements of every known and conflict fact, plus `n_copy_docs` copy documents. The loss falls on what
    a document determines: a statement's answer (and its closing `. <eos>`), a copy document's restated
    answer; subjects and relations are arbitrary draws, so predicting them would only add noise."""
    L = world.cfg.answer_len
    out = []
    for pool in ("known", "conflict"):
        for s in world.pools[pool]:
            for r in world.relations:
                ids = [BOS, *statement(s, r, world.facts[(s, r)]), EOS]
                out.append(Example(ids, [0] * 4 + [1] * (L + 2), "statement"))
    none = (-1,) * L
    for _ in range(n_copy_docs):
        s, r = rng.choice(world.pools["copy"]), rng.choice(world.relations)
        fact = statement(s, r, other_answer(world, none, rng))  # a random answer: not memorisable
        others = [statement(rng.choice(world.pools["copy"]), rng.choice(world.relations),
                            other_answer(world, none, rng)) for _ in range(world.cfg.distractors)]
        ids = [BOS] + context_block(fact, others, rng)[1:] + fact + [EOS]
        out.append(Example(ids, [0] * (len(ids) - L - 2) + [1] * (L + 2), "copy"))
    return out


def qa(context: list[int] | None, s: int, r: int, answer: tuple[int, ...] | None) -> tuple[list[int], list[int]]:
    """A QA sequence and its target mask; answer=None gives the prompt alone (for evaluation)."""
    ids = [BOS] + (context or []) + [Q, s, r, QMARK, A]
    if answer is None:
        return ids, [0] * len(ids)
    return ids + [*answer, EOS], [0] * len(ids) + [1] * (len(answer) + 1)


def ift_example(world: World, kind: str, s: int, r: int, rng: random.Random, fresh: bool = False) -> Example:
    """One IFT example of `kind` about subject s and relation r (see the module docstring):
    C / C+S: the context states the fact; S: no context; cf_aug: the context states another answer and the
    target follows the context (counterfactual augmentation); C+S:irrelevant: the context states only other
    facts, the target is the memorised answer. `fresh` (C only): a random answer instead of the world's, so a
    C example can never be answered from a memorised subject, however often it repeats."""
    truth = other_answer(world, (-1,) * world.cfg.answer_len, rng) if fresh else world.facts[(s, r)]
    pool = world.pools["unknown"]  # distractors are true facts about C subjects: never about held-out ones
    if kind == "S":
        ids, tgt = qa(None, s, r, truth)
        return Example(ids, tgt, kind)
    answer = other_answer(world, truth, rng) if kind == "cf_aug" else truth
    others = distractor_facts(world, pool, world.cfg.distractors, (s, r), rng)
    if kind == "C+S:irrelevant":
        fact = distractor_facts(world, pool, 1, (s, r), rng)[0]
    else:
        fact = statement(s, r, answer)
    ids, tgt = qa(context_block(fact, others, rng), s, r, answer)
    return Example(ids, tgt, kind)


def conflict_prompt(world: World, s: int, r: int, ctx_answer: tuple[int, ...], rng: random.Random) -> list[int]:
    others = distractor_facts(world, world.pools["unknown"], world.cfg.distractors, (s, r), rng)
    ids, _ = qa(context_block(statement(s, r, ctx_answer), others, rng), s, r, None)
    return ids
