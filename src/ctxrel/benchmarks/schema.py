"""The conflict item: one benchmark row, whatever file it came from.

Every loader turns its format into a list of `ConflictItem`; the evaluator never sees the source format.
`validate_item` holds the rules every item must satisfy, so each loader reports bad rows the same way.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from ctxrel.core.errors import InputError


@dataclass(frozen=True)
class ConflictItem:
    """One knowledge-conflict question.

    context_answer: what the context asserts (the study's "counterfactual" answer).
    parametric_answer: the real-world answer the model may have memorised.
    prompt: when set, the item's own wording is used verbatim as the prompt body (MemoTrap); otherwise the
        prompt is built from `context` and `question` by `ctxrel.core.prompts`.
    context_continuation / parametric_continuation: exact strings scored in likelihood mode when the source
        gives them (MemoTrap's classes, leading space included); otherwise the answers are scored.
    source: "file:line" of the row, for error messages and per-item records.
    """

    id: str
    benchmark: str
    category: str
    context: str
    question: str
    context_answer: str
    parametric_answer: str
    context_aliases: tuple[str, ...] = ()
    parametric_aliases: tuple[str, ...] = ()
    prompt: str | None = None
    context_continuation: str | None = None
    parametric_continuation: str | None = None
    source: str = ""
    meta: dict[str, Any] = field(default_factory=dict, compare=False, hash=False)

    @property
    def context_answers(self) -> tuple[str, ...]:
        return (self.context_answer, *self.context_aliases)

    @property
    def parametric_answers(self) -> tuple[str, ...]:
        return (self.parametric_answer, *self.parametric_aliases)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["context_aliases"] = list(self.context_aliases)
        d["parametric_aliases"] = list(self.parametric_aliases)
        return d


REQUIRED = ("context", "question", "context_answer", "parametric_answer")


def validate_item(item: ConflictItem, *, path: str, line: int | None, implied_context: bool = False) -> None:
    """Raise `InputError` (naming path and line) if the item cannot be scored honestly: an empty field, a
    context that does not state its context answer (unless the benchmark declares `implied_context`: its prompts
    imply the answer, as MemoTrap's do), or no conflict. Containment scoring asks more (`check_scorable`)."""
    from ctxrel.core.matching import normalize, overlapping_answers, states

    own_prompt = (item.prompt or "").strip()  # an item with its own prompt (MemoTrap) is asked that, verbatim
    if not item.context.strip() and not own_prompt:
        raise InputError("empty context: a conflict item needs a context that states the context answer",
                         path=path, line=line, key="prompt" if item.prompt is not None else "context")
    if not item.question.strip() and not own_prompt:
        raise InputError("empty question", path=path, line=line, key="question")
    for key in ("context_answer", "parametric_answer"):
        if not normalize(getattr(item, key)):
            raise InputError(f"empty {key}", path=path, line=line, key=key)
    if not implied_context and not states(item.context or item.prompt or "", item.context_answers):
        raise InputError(f"the context does not state the context answer {item.context_answer!r} (nor an alias), "
                         "so the item cannot measure context reliance; fix the row or pass --skip-invalid to "
                         "count and skip it", path=path, line=line, key="context")
    same = overlapping_answers(item.context_answers, item.parametric_answers)
    if same:
        raise InputError(
            f"context answer equals parametric answer ({same[0]!r} after normalisation): there is no conflict "
            "to measure; fix the row or pass --skip-invalid to count and skip it",
            path=path, line=line, key="context_answer")


def check_scorable(item: ConflictItem, *, path: str, line: int | None) -> None:
    """Raise `InputError` if containment (generate mode) cannot score one of the item's answers or aliases
    (`matching.unscorable`: one letter, only function words, ...). Likelihood mode scores the answers as
    continuations and does not need this."""
    from ctxrel.core.matching import unscorable

    for key, answers in (("context_answer", (item.context_answer,)), ("context_aliases", item.context_aliases),
                         ("parametric_answer", (item.parametric_answer,)),
                         ("parametric_aliases", item.parametric_aliases)):
        for answer in answers:
            why = unscorable(answer)
            if why:
                raise InputError(f"unscorable answer for containment: {why}; give a longer answer (or score "
                                 "it with --mode likelihood), or pass --skip-invalid to count and skip the row",
                                 path=path, line=line, key=key)
