"""The built-in biographies benchmark: its table is honest, every substitution is clean (0 leaks, 0
over-replacements), and the items are well-formed conflicts."""

from __future__ import annotations

import pytest

from ctxrel.benchmarks.biographies import (CATEGORIES, SUBSTITUTES_PER_PERSON, build_biographies, build_report,
                                           load_biographies, main)
from ctxrel.benchmarks.builtin import BUILTINS
from ctxrel.benchmarks.registry import load_benchmark
from ctxrel.benchmarks.schema import validate_item
from ctxrel.core.entity_swap import PARTICLES, fold
from ctxrel.core.matching import find_spans, match, normalize


@pytest.fixture(scope="module")
def bios():
    return load_biographies()


@pytest.fixture(scope="module")
def items():
    return build_biographies()


def test_table(bios):
    assert len(bios) >= 36
    assert {b.category for b in bios} == set(CATEGORIES)
    people = [b.person for b in bios]
    assert len(set(people)) == len(people)
    for tricky in ("Leonardo da Vinci", "George Washington", "Marie Curie", "Pierre Curie", "Charles Darwin",
                   "Charles Dickens", "Ludwig van Beethoven", "Kurt G\u00f6del", "Homer"):
        assert tricky in people
    for b in bios:
        assert 2 <= b.bio.count(". ") + 1 <= 4, b.person
        for q in b.questions:  # a question must not give the answer away
            assert q.endswith("?") and not find_spans(normalize(q).split(), b.person), q
            assert not {fold(t) for t in b.person.split()} & set(normalize(q).split()), q


def test_count_ids_and_schema(bios, items):
    assert len(items) == sum(len(b.questions) for b in bios) * SUBSTITUTES_PER_PERSON
    assert len({i.id for i in items}) == len(items)
    assert {i.category for i in items} == set(CATEGORIES)
    for item in items:
        validate_item(item, path="builtin", line=None)
        assert item.benchmark == "biographies" and item.source.startswith("ctxrel:biographies.csv:")
        assert normalize(item.context_answer) != normalize(item.parametric_answer)
    assert items[0].id == "biographies/isaac_newton/julius_caesar/q1"


def test_build_report_is_clean(bios):
    r = build_report()
    assert (r["leaks"], r["over_replacements"], r["common_words"]) == (0, 0, 0), r["leak_details"]
    assert r["people"] == len(bios) and r["substitutions"] == len(bios) * SUBSTITUTES_PER_PERSON
    assert r["substitutes"] >= 15 and r["protected_mentions"] >= 9  # Vinci, Washington, the other Curie


def test_context_names_the_substitute_and_not_the_person(items):
    for item in items:
        words = normalize(item.context).split()
        assert find_spans(words, item.context_answer), item.id
        assert item.context.startswith(item.context_answer)
        assert not find_spans(words, item.parametric_answer), item.id
        m = match(item.context, item.context_answers, item.parametric_answers)
        assert m.contains_context, item.id
        # tokens of the real name may survive only as protected other entities (town of Vinci, Pierre Curie)
        tokens = {fold(t) for t in item.parametric_answer.split() if t not in PARTICLES}
        left = [w for w in words if w in tokens]
        assert len(left) == len(item.meta["protected"]), (item.id, left)


def test_protected_mentions_kept():
    by_id = {i.id: i for i in build_biographies()}
    leo = next(i for k, i in by_id.items() if k.startswith("biographies/leonardo_da_vinci/"))
    assert "born in 1452 in the town of Vinci near Florence" in leo.context and leo.meta["protected"] == ["Vinci"]
    marie = next(i for k, i in by_id.items() if k.startswith("biographies/marie_curie/"))
    assert "her husband Pierre Curie" in marie.context and not marie.context.startswith("Marie")
    george = next(i for k, i in by_id.items() if k.startswith("biographies/george_washington/"))
    assert george.context.endswith("the new city of Washington.")


def test_deterministic_and_registered():
    assert [i.to_dict() for i in build_biographies()] == [i.to_dict() for i in build_biographies()]
    loaded = load_benchmark("biographies")
    assert loaded.version == 1 and loaded.source == "builtin" and len(loaded.items) == len(BUILTINS["biographies"]())


def test_main_prints_report(capsys):
    assert main([]) == 0
    out = capsys.readouterr().out
    assert "leaks: 0" in out and "over-replacements: 0" in out


@pytest.mark.integration
def test_eval_runs_on_biographies(tiny_model_dir, tmp_path, capsys):
    from ctxrel.cli import main as cli_main
    from ctxrel.rundir.files import read_records

    out = tmp_path / "run"
    code = cli_main(["eval", "--model", str(tiny_model_dir), "--out", str(out), "--max-new-tokens", "4",
                     "--benchmark", "biographies", "--limit", "3", "--no-knowledge-filter"])
    assert code == 0
    recs = read_records(out / "evals" / "model" / "biographies.jsonl")
    assert len(recs) == 3 and all(r["id"].startswith("biographies/") for r in recs)
    assert "biographies" in capsys.readouterr().out
