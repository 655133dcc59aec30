"""Counterfactual augmentation: mix question-answering examples whose context contradicts world knowledge, and
whose target follows the context, into an instruction set (the study's data mitigation, §5).

Sources:

* **NQ-Swap** (Longpre et al. 2021 substitutions on Natural Questions; JSONL with `question`, `sub_context`,
  `sub_answer`): the substituted context and its substituted answer. HTML tags of the Natural Questions
  passages (`<P>`, `<Td>`, ...) are removed and the tokenised spacing around punctuation and hyphens is
  closed. Rows whose answer does not appear in the cleaned context (word-boundary match after
  `ctxrel.core.matching.normalize`), or equals the original answer, are skipped and counted. Distinct questions are
  used before any question repeats.
* **facts**: generated from ctxrel's own fact tables (`ctxrel/train/facts/*.csv`): a real subject stated with
  another row's answer of the same relation ("The currency of Japan is the rupee."), never the true answer or
  one of its aliases. The tables hold no capital relation, so these stay disjoint from `cf_capitals`.

Each example is rendered in the set's own format: Alpaca `{instruction: question, input: context, output:
answer}`, chat `messages` (user: "Background: ...\\n\\nQuestion: ...", the chat rule's labelled context), SQuAD
`{context, question, answers}` or a mixture record of kind `c`. Added records carry `ctxrel_origin` (source
file:line or fact) so they can be traced; the trainer ignores the extra key.

`ratio` is the share of counterfactual examples in the *output*: n_cf = round(n * ratio / (1 - ratio)). When
the source holds fewer usable examples than that, it is cycled (each pass reshuffled) and the manifest says how
many are repeats. Everything is seeded: the same inputs and seed give the same output.
"""

from __future__ import annotations

import gzip
import json
import random
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ctxrel.core import strict_json
from ctxrel.core.errors import CtxrelError, InputError
from ctxrel.core.matching import normalize
from ctxrel.core.prompts import DEFAULT_BODY

_TAG = re.compile(r"</?[A-Za-z][A-Za-z0-9]*[^>]*>")
_SPACE_BEFORE = re.compile(r"\s+([,.;:!?%)\]}'])")
_SPACE_AFTER = re.compile(r"([(\[{])\s+")
_SPACED_HYPHEN = re.compile(r"(?<=\w) - (?=\w)")  # NQ's tokenised "first - ever" -> "first-ever"


@dataclass(frozen=True)
class Counterfactual:
    context: str
    question: str
    answer: str
    origin: str


def clean_nq_text(text: str) -> str:
    """Natural Questions passage -> plain prose: tags out, whitespace collapsed, no space before punctuation."""
    text = _TAG.sub(" ", text)
    text = " ".join(text.split())
    text = _SPACED_HYPHEN.sub("-", _SPACE_BEFORE.sub(r"\1", text))
    return _SPACE_AFTER.sub(r"\1", text).strip()


def _question(text: str) -> str:
    text = " ".join(text.split())
    text = text[:1].upper() + text[1:]
    return text if text.endswith("?") else text + "?"


def read_nq_swap(path: str | Path) -> tuple[list[Counterfactual], dict[str, int]]:
    """Usable NQ-Swap examples (in file order) and counts of the skipped ones by reason."""
    p = Path(path).expanduser()
    if not p.is_file():
        raise CtxrelError(f"--counterfactual nq-swap={path}: no such file (NQ-Swap JSONL, optionally .gz)")
    opener = gzip.open if p.suffix == ".gz" else open
    out, skipped = [], {"answer not in substituted context": 0, "substituted answer equals the original": 0}
    try:
        with opener(p, "rt", encoding="utf-8") as f:
            for n, line in enumerate(f, start=1):
                if not line.strip():
                    continue
                try:
                    row = strict_json.loads(line)
                except ValueError as e:
                    raise InputError(f"invalid JSON ({e})", path=str(p), line=n) from None
                if not isinstance(row, dict):
                    raise InputError("expected a JSON object", path=str(p), line=n)
                for key in ("question", "sub_context"):
                    if not isinstance(row.get(key), str) or not row[key].strip():
                        raise InputError(f"{key!r} must be a non-empty string; is this an NQ-Swap file "
                                         "(question, sub_context, sub_answer)?", path=str(p), line=n, key=key)
                answers = row.get("sub_answer")
                if isinstance(answers, str):
                    answers = [answers]
                if not isinstance(answers, list) or not answers or not all(isinstance(a, str) for a in answers):
                    raise InputError("'sub_answer' must be a non-empty list of strings", path=str(p), line=n,
                                     key="sub_answer")
                context, answer = clean_nq_text(row["sub_context"]), clean_nq_text(answers[0])
                original = {normalize(a) for a in row.get("org_answer") or [] if isinstance(a, str)}
                if normalize(answer) in original:
                    skipped["substituted answer equals the original"] += 1
                elif not normalize(answer) or f" {normalize(answer)} " not in f" {normalize(context)} ":
                    skipped["answer not in substituted context"] += 1
                else:
                    out.append(Counterfactual(context, _question(row["question"]), answer, f"nq-swap:{p}:{n}"))
    except (OSError, EOFError, UnicodeDecodeError) as e:
        raise CtxrelError(f"--counterfactual nq-swap={path}: cannot read ({e})") from None
    if not out:
        raise CtxrelError(f"--counterfactual nq-swap={path}: no usable rows ({skipped})")
    return out, skipped


def nq_swap_draw(pool: list[Counterfactual], k: int, rng: random.Random) -> list[Counterfactual]:
    """k examples: distinct questions first (one substitution each, seeded), then the other substitutions,
    then further seeded passes over the pool if k exceeds it."""
    by_question: dict[str, list[Counterfactual]] = {}
    for cf in pool:
        by_question.setdefault(cf.question, []).append(cf)
    out: list[Counterfactual] = []
    while len(out) < k:
        ranked = []
        for group in by_question.values():
            shuffled = rng.sample(group, len(group))
            ranked += [(rank, rng.random(), cf) for rank, cf in enumerate(shuffled)]
        ranked.sort(key=lambda t: (t[0], t[1]))
        out += [cf for _, _, cf in ranked[:k - len(out)]]
    return out


def facts_draw(k: int, rng: random.Random) -> list[Counterfactual]:
    """k counterfactual facts from ctxrel's fact tables: a real subject, another row's answer of the same
    relation as the asserted (counterfactual) answer."""
    from ctxrel.core.prompts import sentence_case
    from ctxrel.train.mixture import TEMPLATES, fact_statement, training_fact_pool

    facts = list(training_fact_pool())
    by_relation: dict[str, list] = {}
    for f in facts:
        by_relation.setdefault(f.relation, []).append(f)
    out = []
    order: list[int] = []
    while len(out) < k:
        if not order:
            order = rng.sample(range(len(facts)), len(facts))
        fact = facts[order.pop()]
        true = {normalize(a) for a in (fact.answer, *fact.aliases)}
        options = sorted({g.answer for g in by_relation[fact.relation] if normalize(g.answer) not in true})
        if not options:
            continue
        answer = rng.choice(options)
        statements, questions = TEMPLATES[fact.relation]
        context = fact_statement(fact.relation, fact.subject, answer, rng.choice(statements))
        question = sentence_case(rng.choice(questions).format(subject=fact.subject))
        out.append(Counterfactual(context, question, answer,
                                  f"facts:{fact.relation}:{fact.subject} (true: {fact.answer})"))
    return out


def render(cf: Counterfactual, fmt: str, k: int) -> dict[str, Any]:
    """The example as a record of format `fmt` (the set it joins)."""
    if fmt == "alpaca":
        rec = {"instruction": cf.question, "input": cf.context, "output": cf.answer}
    elif fmt == "chat":
        rec = {"messages": [{"role": "user", "content": DEFAULT_BODY.format(context=cf.context, question=cf.question)},
                            {"role": "assistant", "content": cf.answer}]}
    elif fmt == "squad":
        rec = {"id": f"ctxrel-cf-{k:06d}", "context": cf.context, "question": cf.question,
               "answers": {"text": [cf.answer], "answer_start": [cf.context.lower().find(cf.answer.lower())]}}
    elif fmt == "mixture":
        rec = {"kind": "c", "context": cf.context, "question": cf.question, "answer": cf.answer,
               "id": f"cf-{k:06d}"}
    else:
        raise CtxrelError(f"cannot render counterfactual examples in format {fmt!r}")
    rec["ctxrel_origin"] = cf.origin
    return rec


def n_counterfactual(n: int, ratio: float) -> int:
    """How many examples make `ratio` of the output when added to n records."""
    if not 0 <= ratio < 1:
        raise CtxrelError(f"--ratio {ratio}: the share of counterfactual examples in the output must lie in [0, 1)")
    return round(n * ratio / (1 - ratio))


def mix(records: list[dict], added: list[dict], rng: random.Random) -> list[dict]:
    """The original records in their order, with `added` inserted at seeded random positions."""
    total = len(records) + len(added)
    slots = set(rng.sample(range(total), len(added)))
    src, new = iter(records), iter(added)
    return [next(new) if i in slots else next(src) for i in range(total)]


def parse_counterfactual(spec: str) -> tuple[str, str | None]:
    """`nq-swap=PATH` or `facts` -> (kind, path)."""
    if spec == "facts":
        return "facts", None
    kind, sep, path = spec.partition("=")
    if kind == "nq-swap" and sep and path:
        return kind, path
    raise CtxrelError(f"--counterfactual {spec!r}: expected nq-swap=PATH (NQ-Swap JSONL[.gz]) or facts")
