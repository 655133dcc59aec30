"""The built-in cf_capitals benchmark: its fact table is honest to match against and its items are well formed."""

from __future__ import annotations

import itertools
import statistics

import pytest

from ctxrel.benchmarks.builtin import (BUILTINS, TEMPLATES, CountryFact, build_cf_capitals,
                                       load_country_facts)
from ctxrel.benchmarks.schema import validate_item
from ctxrel.core.matching import find_spans, match, normalize


@pytest.fixture(scope="module")
def facts() -> list[CountryFact]:
    return load_country_facts()


@pytest.fixture(scope="module")
def items():
    return build_cf_capitals()


def test_facts_load(facts):
    assert len(facts) >= 50
    france = next(f for f in facts if f.country == "France")
    assert france.capital == "Paris" and "Lyon" in france.other_cities
    assert all(2 <= len(f.other_cities) <= 3 for f in facts)
    assert all(f.capital not in f.other_cities for f in facts)
    assert [f.line for f in facts] == list(range(2, len(facts) + 2))


def test_no_name_nests_in_another(facts):
    names = [n for f in facts for n in (f.country, f.capital, *f.other_cities)]
    assert all(normalize(n) for n in names)
    clashes = [(a, b) for a, b in itertools.permutations(names, 2)
               if find_spans(normalize(b).split(), a)]
    assert clashes == []


def test_no_capital_contains_its_country(facts):
    for f in facts:
        c, k = normalize(f.country), normalize(f.capital)
        assert c not in k and k not in c, f.country


def test_count_and_unique_ids(facts, items):
    assert len(items) == len(facts) * len(TEMPLATES)
    assert len({i.id for i in items}) == len(items)
    assert {i.category for i in items} == set(TEMPLATES)
    assert len(TEMPLATES) >= 3
    assert items[0].id == "cf_capitals/france/answer_first"
    assert items[0].source == "ctxrel:countries.csv:2"
    assert items[0].meta["country"] == "France" and items[0].meta["template"] == "answer_first"


def test_every_item_validates(items):
    for item in items:
        validate_item(item, path="builtin", line=None)
        assert item.benchmark == "cf_capitals"
        assert item.question.endswith("?")


def test_context_asserts_context_answer_only(items):
    for item in items:
        m = match(item.context, item.context_answers, item.parametric_answers)
        assert m.outcome == "context", item.id
        assert not find_spans(normalize(item.context).split(), item.parametric_answer), item.id


def test_contexts_name_only_the_countrys_own_cities(facts, items):
    # A template word or another country's city in a context would be a stray answer for matching.
    by_country = {f.country: f for f in facts}
    all_cities = {c for f in facts for c in (f.capital, *f.other_cities)}
    for item in items:
        own = set(by_country[item.meta["country"]].other_cities)
        words = normalize(item.context).split()
        found = {c for c in all_cities if find_spans(words, c)}
        assert found <= own and item.context_answer in found, item.id


def _relative_offset(item) -> float:
    words = normalize(item.context).split()
    start = find_spans(words, item.context_answer)[0][0]
    return start / len(words)


def test_templates_place_answer_at_different_positions(items):
    pos = {t: [_relative_offset(i) for i in items if i.category == t] for t in TEMPLATES}
    mean = {t: statistics.mean(v) for t, v in pos.items()}
    assert mean["answer_first"] < mean["answer_middle"] < mean["answer_last"]
    assert max(pos["answer_first"]) == 0.0
    assert min(pos["answer_last"]) > 0.8
    assert 0.2 < mean["answer_middle"] < 0.8


def test_articles_and_sentence_case(items):
    by_id = {i.id: i for i in items}
    nl = by_id["cf_capitals/netherlands/answer_middle"]
    assert nl.context.startswith("The Netherlands ") and nl.question == "What is the capital city of the Netherlands?"
    assert by_id["cf_capitals/france/answer_middle"].context.startswith("France ")


def test_deterministic():
    assert [i.to_dict() for i in build_cf_capitals()] == [i.to_dict() for i in build_cf_capitals()]


def test_registry():
    assert BUILTINS["cf_capitals"] is build_cf_capitals


def test_limit_is_prefix_consistent():
    from ctxrel.evaluate.selection import select_items

    items = build_cf_capitals()
    small, large = select_items(items, 5, seed=0), select_items(items, 20, seed=0)
    assert large[:5] == small
    assert select_items(items, 5, seed=1) != small


def test_moved_variant_names_the_real_capital_as_the_former_one(facts):
    """cf_capitals_moved: the same items as cf_capitals (ids aside), contexts naming both capitals, the
    counterfactual asserted as today's capital."""
    from ctxrel.benchmarks.builtin import MOVED_TEMPLATES, build_cf_capitals_moved
    from ctxrel.benchmarks.registry import load_benchmark

    moved, plain = build_cf_capitals_moved(), build_cf_capitals()
    assert len(moved) == len(plain) and set(MOVED_TEMPLATES) == set(TEMPLATES)
    by_country = {f.country: f for f in facts}
    all_cities = {c for f in facts for c in (f.capital, *f.other_cities)}
    for m, p in zip(moved, plain):
        validate_item(m, path="builtin", line=None)
        assert m.id == p.id.replace("cf_capitals/", "cf_capitals_moved/", 1) and m.benchmark == "cf_capitals_moved"
        assert (m.question, m.context_answer, m.parametric_answer, m.category) == \
               (p.question, p.context_answer, p.parametric_answer, p.category)
        words = normalize(m.context).split()
        assert find_spans(words, m.context_answer) and find_spans(words, m.parametric_answer), m.id
        # "today the capital ... is X" / "X is the capital": the asserted capital is the context answer
        assert f"capital city of" in m.context and m.context_answer in m.context.split("capital")[-1] or \
            m.context.startswith(m.context_answer), m.id
        f = by_country[m.meta["country"]]
        found = {c for c in all_cities if find_spans(words, c)}
        assert found <= {f.capital, *f.other_cities}, m.id
    assert [i.id for i in load_benchmark("cf_capitals_moved").items] == [i.id for i in moved]
