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

OUTCOMES = ("context", "parametric", "both", "neither")  # of one generation: `Match.outcome`, a record's "outcome"
RESOLVED_OUTCOMES = ("context", "parametric", "neither")  # `both` given to the answer mentioned first (`resolve`)


def resolve(outcome: str, first_mention: str | None) -> str:
    """The resolved outcome: `both` becomes the side mentioned first (`context` when a record lacks it).

    >>> resolve("both", "parametric"), resolve("neither", None)
    ('parametric', 'neither')
    """
    if outcome == "both":
        return first_mention or "context"
    return outcome


def normalize(text: str, *, fold: bool = True) -> str:
    """Lower-case (unless `fold=False`), accent-free, punctuation-free, single-spaced form of `text`.

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
    joined = "".join(out)
    return " ".join((joined.casefold() if fold else joined).split())


def _words(text: str) -> list[str]:
    return normalize(text).split()


# English function words: an answer made only of these ("The", "of the", "it") is found in nearly any output.
STOP_WORDS = frozenset("""
a an the this that these those some any each every no not nor and or but if so yet than then as of at by for from
in into on onto off out over under up down to with without about above below across after before between during
through toward towards upon via is am are was were be been being do does did done have has had having will would
shall should can could may might must i me my mine we us our ours you your yours he him his she her hers it its
they them their theirs who whom whose which what when where why how there here all both either neither such own
same other too very just also only s t d ll m re ve o y
""".split())


def is_short(answer: str) -> bool:
    """A one- or two-character answer containing a letter ("A", "US", "Li"): matched case-sensitively."""
    norm = normalize(answer)
    return 0 < len(norm) <= 2 and " " not in norm and any(ch.isalpha() for ch in norm)


def unscorable(answer: str) -> str | None:
    """Why containment cannot score `answer` (None when it can). The rule (docs/benchmarks.md, "Bad input"):

    * empty after normalisation;
    * one letter ("A", "b"): it is an option label or a word fragment, found in almost any text;
    * only English function words after normalisation ("The", "of the");
    * two letters written in lower case that form a function word ("us", "it"). Two-letter answers written
      otherwise ("US", "UK", "Li") are scorable and matched as an exact, case-sensitive word ("US" is not in
      "Let us see").
    """
    norm = normalize(answer)
    if not norm:
        return "is empty after normalisation"
    if is_short(answer):
        if len(norm) == 1:
            return f"{answer!r} is a single letter, found in almost any text"
        if norm in STOP_WORDS and normalize(answer, fold=False) == norm:
            return f"{answer!r} is a lower-case function word, found in almost any text"
        return None
    if all(w in STOP_WORDS for w in norm.split()):
        return f"{answer!r} is made only of function words ({norm!r}), found in almost any text"
    return None


def find_spans(text_words: Sequence[str], answer: str,
               cased_words: Sequence[str] | None = None) -> list[tuple[int, int]]:
    """Word-index spans [start, end) where the normalised `answer` occurs in `text_words`. A short answer
    (`is_short`) is compared case-sensitively with `cased_words` (the text normalised without case folding),
    when given."""
    if cased_words is not None and is_short(answer):
        target = normalize(answer, fold=False)
        return [(i, i + 1) for i, w in enumerate(cased_words) if w == target]
    target = _words(answer)
    n = len(target)
    if n == 0:
        return []
    return [(i, i + n) for i in range(len(text_words) - n + 1) if list(text_words[i:i + n]) == target]


def states(text: str, answers: Sequence[str]) -> bool:
    """Does `text` contain one of `answers` (as `match` would find it in an output)?"""
    cased = normalize(text, fold=False).split()
    words = [w.casefold() for w in cased]
    return any(find_spans(words, a, cased) for a in answers)


def _inside(span: tuple[int, int], other: tuple[int, int]) -> bool:
    return other[0] <= span[0] and span[1] <= other[1] and (span[1] - span[0]) < (other[1] - other[0])


def _valid_spans(text_words: Sequence[str], answers: Sequence[str], rivals: Sequence[str],
                 cased_words: Sequence[str] | None = None) -> list[tuple[int, int]]:
    """Spans of `answers` that do not sit inside a longer span of a rival answer."""
    rival_spans = [s for r in rivals for s in find_spans(text_words, r, cased_words)]
    spans = []
    for a in answers:
        for s in find_spans(text_words, a, cased_words):
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
        """The outcome with `both` replaced by the side mentioned first (one of RESOLVED_OUTCOMES)."""
        return resolve(self.outcome, self.first_mention)


def match(output: str, context_answers: Sequence[str], parametric_answers: Sequence[str]) -> Match:
    """Score one generation against both sides of a conflict.

    >>> match("The capital is New Cairo.", ["New Cairo"], ["Cairo"]).outcome
    'context'
    >>> match("Cairo, not New Cairo", ["New Cairo"], ["Cairo"]).first_mention
    'parametric'
    """
    cased = normalize(output, fold=False).split()
    words = [w.casefold() for w in cased]  # the same words as normalize(output).split()
    ctx = _valid_spans(words, context_answers, parametric_answers, cased)
    par = _valid_spans(words, parametric_answers, context_answers, cased)
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
