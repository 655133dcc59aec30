"""The C / C+S / S instruction mixture: exact proportions, determinism, example shape, and disjointness from
the cf_capitals evaluation facts."""

from __future__ import annotations

import re

import pytest

from ctxrel.core.errors import CtxrelError
from ctxrel.core.matching import normalize
from ctxrel.train.mixture import (KINDS, REAL_RELATIONS, TEMPLATES, eval_city_names, eval_overlap, eval_person_names,
                                  generate_mixture, load_fact_tables, mixture_counts, training_fact_pool,
                                  training_facts)

THIRDS = {"c": 0.34, "cs": 0.33, "s": 0.33}
MIX = {"c": 0.4, "cs": 0.3, "s": 0.3}
MIX_CI = {"c": 0.2, "cs": 0.3, "ci": 0.3, "s": 0.2}


@pytest.fixture(scope="module")
def big():
    return generate_mixture(3000, MIX, seed=0)


def _contains(text: str, phrase: str) -> bool:
    return f" {normalize(phrase)} " in f" {normalize(text)} "


@pytest.mark.parametrize("n, proportions, expected", [
    (0, THIRDS, {"c": 0, "cs": 0, "s": 0}),
    (1, THIRDS, {"c": 1, "cs": 0, "s": 0}),
    (10, THIRDS, {"c": 4, "cs": 3, "s": 3}),  # 3.4/3.3/3.3: the one left over goes to the largest remainder
    (7, {"c": 0.5, "cs": 0.25, "s": 0.25}, {"c": 3, "cs": 2, "s": 2}),  # 3.5/1.75/1.75
    (3, {"c": 1 / 3, "cs": 1 / 3, "s": 1 / 3}, {"c": 1, "cs": 1, "s": 1}),
    (1000, {"c": 0.6, "cs": 0.1, "s": 0.3}, {"c": 600, "cs": 100, "s": 300}),
    (5, {"c": 0.0, "cs": 1.0, "s": 0.0}, {"c": 0, "cs": 5, "s": 0}),
    (10, MIX_CI, {"c": 2, "cs": 3, "ci": 3, "s": 2}),
    (7, {"c": 0.0, "cs": 0.0, "ci": 1.0, "s": 0.0}, {"c": 0, "cs": 0, "ci": 7, "s": 0}),
])
def test_counts_follow_proportions_exactly(n, proportions, expected):
    records = generate_mixture(n, proportions, seed=3)
    assert len(records) == n
    assert mixture_counts(records) == {"ci": 0, **expected}


def test_same_seed_same_records_other_seed_other_records():
    assert generate_mixture(200, MIX, seed=7) == generate_mixture(200, MIX, seed=7)
    assert generate_mixture(200, MIX, seed=7) != generate_mixture(200, MIX, seed=8)


def test_changing_one_share_keeps_the_other_kinds_records():
    """Each kind has its own stream: more c examples never rewrite the cs examples that were already there."""
    a = {r["id"]: r for r in generate_mixture(100, {"c": 0.2, "cs": 0.4, "s": 0.4}, seed=1)}
    b = {r["id"]: r for r in generate_mixture(100, {"c": 0.6, "cs": 0.2, "s": 0.2}, seed=1)}
    shared = set(a) & set(b)
    assert {i.split("-")[0] for i in shared} == {"c", "cs", "s"}
    assert all(a[i] == b[i] for i in shared)
    # adding the optional ci kind (share 0 before) leaves the records of the others as they were
    c = {r["id"]: r for r in generate_mixture(100, {"c": 0.2, "cs": 0.2, "ci": 0.2, "s": 0.4}, seed=1)}
    assert all(a[i] == c[i] for i in set(a) & set(c)) and any(i.startswith("ci-") for i in c)


def test_records_are_shuffled(big):
    first_kinds = [r["kind"] for r in big[:100]]
    assert len(set(first_kinds)) == 3


@pytest.mark.parametrize("proportions, named", [
    ({"c": 0.5, "cs": 0.5}, "'s'"),
    ({"c": 0.5, "cs": 0.25, "s": 0.25, "x": 0.0}, "'x'"),
    ({"c": 0.5, "cs": -0.25, "s": 0.75}, "'cs'"),
    ({"c": "half", "cs": 0.25, "s": 0.25}, "'c'"),
    ({"c": float("nan"), "cs": 0.5, "s": 0.5}, "'c'"),
    ({"c": 0.5, "cs": 0.3, "s": 0.3}, "sum to 1"),
])
def test_bad_proportions_name_the_problem(proportions, named):
    with pytest.raises(CtxrelError) as err:
        generate_mixture(10, proportions)
    assert named in str(err.value)


def test_bad_size_is_refused():
    with pytest.raises(CtxrelError, match="n must be"):
        generate_mixture(-1, MIX)


def test_record_shape(big):
    keys = {"kind", "context", "question", "answer", "subject", "relation", "id"}
    assert all(set(r) == keys for r in big)
    assert len({r["id"] for r in big}) == len(big)
    for r in big:
        assert r["question"].endswith("?") and r["question"][0].isupper()
        assert r["answer"].strip() and r["subject"] in r["question"]
        if r["kind"] == "s":
            assert r["context"] == ""
        else:
            assert r["context"].strip() and r["context"].endswith(".")


def test_context_states_the_answer(big):
    for r in big:
        if r["kind"] in ("c", "cs"):
            assert r["answer"].lower() in r["context"].lower(), r
            assert _contains(r["context"], r["answer"]), r


def test_contexts_have_one_to_three_sentences_and_some_distractors(big):
    c_sizes = [r["context"].count(".") for r in big if r["kind"] == "c"]  # invented names hold no periods
    assert set(c_sizes) == {1, 2, 3}
    cs = [r for r in big if r["kind"] == "cs"]
    with_distractor = [r for r in cs if r["context"] not in _single_statements(r)]
    assert 0.2 < len(with_distractor) / len(cs) < 0.5
    for r in with_distractor:  # the distractor states a fact of another relation, next to the fact asked about
        assert any(s in r["context"] and s != r["context"] for s in _single_statements(r)), r


def _single_statements(r: dict) -> set[str]:
    article = "an" if r["answer"][0].lower() in "aeiou" else "a"
    out = set()
    for template in TEMPLATES[r["relation"]][0]:
        text = template.format(subject=r["subject"], answer=r["answer"], a_answer=f"{article} {r['answer']}")
        out.add(text[:1].upper() + text[1:])
    return out


def test_c_facts_are_invented(big):
    """No c example names anything from the real-fact tables, so its answer can only come from the context."""
    cells = {normalize(t) for f in load_fact_tables() for t in (f.subject, f.answer, *f.aliases)}
    pattern = re.compile(r"(?<!\S)(?:" + "|".join(map(re.escape, sorted(cells, key=len, reverse=True))) + r")(?!\S)")
    c = [r for r in big if r["kind"] == "c"]
    assert len({r["relation"] for r in c}) >= 8
    for r in c:
        for field in ("context", "question", "answer", "subject"):
            assert not pattern.search(normalize(r[field])), (field, pattern.search(normalize(r[field])), r)


def test_invented_names_never_reuse_a_cf_capitals_city_word(big):
    city_words = {w for name in eval_city_names() for w in name.split()}
    for r in big:
        if r["kind"] == "c":
            assert not set(normalize(r["subject"] + " " + r["answer"]).split()) & city_words, r


def test_real_facts_cover_the_tables_and_vary_on_repeat(big):
    facts = training_facts()
    assert len(facts) >= 250
    assert {rel for _, rel in facts} == set(REAL_RELATIONS)
    assert not any("capital" in rel for _, rel in facts)
    cs = [r for r in generate_mixture(3 * len(load_fact_tables()), {"c": 0, "cs": 1, "s": 0}, seed=2)]
    assert {(r["subject"], r["relation"]) for r in cs} == facts
    by_fact: dict[tuple[str, str], set[str]] = {}
    for r in cs:
        by_fact.setdefault((r["subject"], r["relation"]), set()).add(r["question"] + r["context"])
    assert all(len(texts) >= 2 for texts in by_fact.values())


def test_fact_tables_are_clean():
    facts = load_fact_tables()
    for relation in REAL_RELATIONS:
        subjects = [f.subject for f in facts if f.relation == relation]
        assert len(subjects) >= 20, relation
        assert len(subjects) == len(set(subjects)), relation


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
@pytest.mark.parametrize("mix", [MIX, MIX_CI])
def test_mixture_is_disjoint_from_the_builtin_benchmarks(seed, mix):
    records = generate_mixture(5000, mix, seed=seed)
    assert eval_overlap(records) == []


def test_fact_pool_leaves_out_every_biographies_person():
    """Rows that name a biographies person (Hamlet -> William Shakespeare) would train the memory the benchmark
    measures: they are in the tables, but never in the pool the mixture draws from."""
    tables, pool = load_fact_tables(), training_fact_pool()
    assert "william shakespeare" in eval_person_names() and "newton" in eval_person_names()
    left_out = set(tables) - set(pool)
    assert any(f.answer == "William Shakespeare" for f in left_out)
    assert not any(f.answer == "William Shakespeare" for f in pool)
    assert eval_overlap([dict(kind="cs", context="Hamlet was written by William Shakespeare.", question="Who?",
                              answer="William Shakespeare", subject="Hamlet", relation="author", id="h")])
    assert len(pool) >= 250 and set(pool) < set(tables)


def test_irrelevant_context_offers_a_wrong_answer_of_the_same_relation():
    """ci: the context states other real facts -- one of the asked relation about another subject, sometimes one
    of another relation (which may be about the asked subject) -- and never the answer: only memory can answer."""
    records = [r for r in generate_mixture(2000, MIX_CI, seed=4) if r["kind"] == "ci"]
    assert len(records) == 600
    pool = training_fact_pool()
    by_relation = {}
    for f in pool:
        by_relation.setdefault(f.relation, []).append(f)
    for r in records:
        assert not _contains(r["context"], r["answer"]), r
        others = [f for f in by_relation[r["relation"]] if f.subject != r["subject"]]
        assert any(_contains(r["context"], f.answer) for f in others), r
        assert (r["subject"], r["relation"]) in training_facts()
    with_two = sum(r["context"].count(". ") >= 1 for r in records)
    assert 0.2 * len(records) < with_two < 0.5 * len(records)  # CS_DISTRACTOR_RATE = 0.35


def test_eval_overlap_catches_cf_capitals_cities_and_capital_questions():
    assert "lyon" in eval_city_names() and "kiev" in eval_city_names() and "zurich" in eval_city_names()
    base = dict(kind="cs", context="Romeo wrote a letter.", question="Who wrote it?", answer="Romeo",
                subject="the letter", relation="author", id="x")
    assert eval_overlap([base]) == []  # "Rome" is not found inside "Romeo"
    bad = [
        {**base, "id": "ctx", "context": "The painter moved to Lyon in 1900."},
        {**base, "id": "ans", "answer": "Zurich"},  # table spells it Zürich
        {**base, "id": "alias", "question": "Who lived in Kiev?"},
        {**base, "id": "rel", "relation": "capital"},
        {**base, "id": "q", "question": "What is the capital of Peru?"},
    ]
    problems = eval_overlap(bad)
    for rid, needle in [("ctx", "lyon"), ("ans", "zurich"), ("alias", "kiev"), ("rel", "capital relation"),
                        ("q", "capital")]:
        assert any(p.startswith(f"{rid}:") and needle in p for p in problems), (rid, problems)
