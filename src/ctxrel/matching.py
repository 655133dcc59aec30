"""Answer matching: does a generation contain the context answer, the parametric answer, both, or neither?

Pure functions on strings. The study scores a generation by containment: cf-acc counts generations that contain
the context answer, par-acc those that contain the parametric answer, and both can hold for one generation.
ctxrel makes containment precise:

* normalisation: Unicode compatibility form, accents stripped, case folded, every punctuation or symbol
  character turned into a space, whitespace collapsed ("Zürich's," -> "zurich s");
* containment at word boundaries only ("Rome" is not found in "Romeo");
* aliases: each side may list several acceptable strings;
* nested answers: when an answer of one side lies inside a longer answer of the other side ("Cairo" inside
  "New Cairo"), an occurrence of the shorter one counts only outside the longer one's spans;
* outcome: context / parametric / both / neither, and for `both` the side mentioned first.
"""

from __future__ import annotations

import unicodedata
from dataclasses import dataclass
from typing import Sequence

OUTCOMES = ("context", "parametric", "both", "neither")


def normalize(text: str) -> str:
    """Lower-case, accent-free, punctuation-free, single-spaced form of `text`.

    >>> normalize("  São Paulo's  ")
    'sao paulo s'
    """
    text = unicodedata.normalize("NFKD", text)
    out = []
    for ch in text:
        cat = unicodedata.category(ch)
        if cat == "Mn":  # combining accent left by NFKD
            continue
        out.append(" " if cat[0] in "PSZC" else ch)
    return " ".join("".join(out).casefold().split())


def _words(text: str) -> list[str]:
    return normalize(text).split()


def find_spans(text_words: Sequence[str], answer: str) -> list[tuple[int, int]]:
    """Word-index spans [start, end) where the normalised `answer` occurs in `text_words`."""
    target = _words(answer)
    n = len(target)
    if n == 0:
        return []
    return [(i, i + n) for i in range(len(text_words) - n + 1) if list(text_words[i:i + n]) == target]


def _inside(span: tuple[int, int], other: tuple[int, int]) -> bool:
    return other[0] <= span[0] and span[1] <= other[1] and (span[1] - span[0]) < (other[1] - other[0])


def _valid_spans(text_words: Sequence[str], answers: Sequence[str],
                 rivals: Sequence[str]) -> list[tuple[int, int]]:
    """Spans of `answers` that do not sit inside a longer span of a rival answer."""
    rival_spans = [s for r in rivals for s in find_spans(text_words, r)]
    spans = []
    for a in answers:
        for s in find_spans(text_words, a):
            if not any(_inside(s, r) for r in rival_spans):
                spans.append(s)
    return sorted(set(spans))


@dataclass(frozen=True)
class Match:
    contains_context: bool
    contains_parametric: bool
    outcome: str  # one of OUTCOMES
    first_mention: str | None  # "context" / "parametric" when both are present, else None

    @property
    def resolved(self) -> str:
        """The outcome with `both` replaced by the side mentioned first."""
        return self.first_mention if self.outcome == "both" else self.outcome


def match(output: str, context_answers: Sequence[str], parametric_answers: Sequence[str]) -> Match:
    """Score one generation against both sides of a conflict.

    >>> match("The capital is New Cairo.", ["New Cairo"], ["Cairo"]).outcome
    'context'
    >>> match("Cairo, not New Cairo", ["New Cairo"], ["Cairo"]).first_mention
    'parametric'
    """
    words = _words(output)
    ctx = _valid_spans(words, context_answers, parametric_answers)
    par = _valid_spans(words, parametric_answers, context_answers)
    has_c, has_p = bool(ctx), bool(par)
    if has_c and has_p:
        outcome = "both"
        first = "context" if ctx[0][0] < par[0][0] else "parametric"
        if ctx[0][0] == par[0][0]:  # same start: the longer (more specific) answer was said
            first = "context" if ctx[0][1] > par[0][1] else "parametric"
    else:
        outcome = "context" if has_c else "parametric" if has_p else "neither"
        first = None
    return Match(has_c, has_p, outcome, first)


def overlapping_answers(context_answers: Sequence[str], parametric_answers: Sequence[str]) -> list[str]:
    """Answers that normalise identically on both sides (such an item cannot separate the two)."""
    c = {normalize(a) for a in context_answers}
    return sorted(normalize(a) for a in parametric_answers if normalize(a) in c)
