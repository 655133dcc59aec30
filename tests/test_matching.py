"""Answer matching: table-driven cases for normalisation, boundaries, aliases, nesting and outcomes."""

import pytest

from ctxrel.core.matching import match, normalize, overlapping_answers


@pytest.mark.parametrize("text, expected", [
    ("Paris", "paris"),
    ("  ZÜRICH  ", "zurich"),
    ("São Paulo's", "sao paulo s"),
    ("Jean-Paul", "jean paul"),
    ("“Lyon.”", "lyon"),
    ("New\tDelhi\n", "new delhi"),
    ("Ｔｏｋｙｏ", "tokyo"),  # full-width forms
    ("Malmö, Sweden", "malmo sweden"),
    ("", ""),
])
def test_normalize(text, expected):
    assert normalize(text) == expected


@pytest.mark.parametrize("output, ctx, par, outcome, first", [
    # plain containment, case and punctuation around the answer
    ("The capital of France is Lyon.", ["Lyon"], ["Paris"], "context", None),
    ("PARIS!", ["Lyon"], ["Paris"], "parametric", None),
    ("(Paris)", ["Lyon"], ["Paris"], "parametric", None),
    ("I don't know.", ["Lyon"], ["Paris"], "neither", None),
    # word boundaries: no match inside other words
    ("Romeo and Juliet", ["Rome"], ["Milan"], "neither", None),
    ("Parisian cafes", ["Lyon"], ["Paris"], "neither", None),
    # possessives and accents
    ("Lyon's mayor governs the capital", ["Lyon"], ["Paris"], "context", None),
    ("It is Bogota", ["Medellín"], ["Bogotá"], "parametric", None),
    ("Medellin, of course", ["Medellín"], ["Bogotá"], "context", None),
    # both, resolved by first mention
    ("Paris, although the text says Lyon", ["Lyon"], ["Paris"], "both", "parametric"),
    ("Lyon (formerly Paris)", ["Lyon"], ["Paris"], "both", "context"),
    # aliases
    ("The answer is NYC", ["Boston"], ["New York City", "NYC"], "parametric", None),
    # nested answers: the shorter counts only outside the longer one's span
    ("The capital is New Cairo.", ["New Cairo"], ["Cairo"], "context", None),
    ("Cairo.", ["New Cairo"], ["Cairo"], "parametric", None),
    ("New Cairo replaced Cairo", ["New Cairo"], ["Cairo"], "both", "context"),
    ("Cairo, not New Cairo", ["New Cairo"], ["Cairo"], "both", "parametric"),
    ("York", ["New York"], ["York"], "parametric", None),
    # numbers
    ("The season had 775 episodes", ["775"], ["23"], "context", None),
    ("It had 2300 episodes", ["775"], ["23"], "neither", None),
])
def test_match(output, ctx, par, outcome, first):
    m = match(output, ctx, par)
    assert (m.outcome, m.first_mention) == (outcome, first)
    assert m.contains_context == (outcome in ("context", "both"))
    assert m.contains_parametric == (outcome in ("parametric", "both"))


def test_resolved_outcome():
    assert match("Paris then Lyon", ["Lyon"], ["Paris"]).resolved == "parametric"
    assert match("Lyon", ["Lyon"], ["Paris"]).resolved == "context"


def test_overlapping_answers():
    assert overlapping_answers(["Paris", "Lyon"], ["paris."]) == ["paris"]
    assert overlapping_answers(["Lyon"], ["Paris"]) == []
