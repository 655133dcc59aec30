"""The context-form family: one factor changed at a time, each level visible in the text it claims."""

from __future__ import annotations

import re

import pytest

from ctxrel.benchmarks import forms
from ctxrel.benchmarks.registry import REGISTRY, load_benchmark
from ctxrel.core.matching import states


def _items(name):
    return forms.FORM_BUILDERS[name]()


def test_every_form_differs_from_the_base_in_exactly_one_factor():
    base = forms.LEVELS["study"]
    for form, levels in forms.LEVELS.items():
        changed = [k for k in forms.FACTORS if levels[k] != base[k]]
        assert len(changed) == (0 if form == "study" else 1), (form, changed)


@pytest.mark.parametrize("name", sorted(forms.FORM_BUILDERS))
def test_levels_are_true_of_the_text(name):
    items = _items(name)
    assert len({i.id for i in items}) == len(items) == (66 if "capitals" in name else 39)
    for it in items:
        m, ctx = it.meta, it.context
        assert it.category == m["form"] and name.endswith(m["form"])
        assert states(ctx, [it.context_answer])
        year = re.search(r"\b(20\d\d)\b", ctx).group(1)
        assert (int(year) > 2026) == (m["time"] == "future")
        assert (("earthquake" in ctx) or ("letters were found" in ctx)) == (m["cause"] == "yes")
        mem = [pos.start() for pos in re.finditer(re.escape(it.parametric_answer), ctx)]
        cf = ctx.index(it.context_answer)
        if m["memory"] == "none":
            assert not mem and not states(ctx, list(it.parametric_aliases))
        else:
            assert mem and (mem[0] < cf) == (m["memory"] == "first")
        words = len(ctx.split())
        assert (words > 60) == (m["length"] == "long"), (it.id, words)
        stated = "capital city of" in ctx if m["relation"] == "capitals" else \
            it.question.removeprefix("Who ").rstrip("?") in ctx
        assert stated == (m["wording"] == "stated")


def test_forms_share_items_and_answers_across_forms():
    """The same conflicts in every form: same ids (after the benchmark name), questions and answers."""
    for relation, templates in (("capitals", forms.CAPITALS), ("people", forms.PEOPLE)):
        keyed = {f: {i.meta["key"]: (i.question, i.context_answer, i.parametric_answer)
                     for i in _items(f"forms_{relation}_{f}")} for f in templates}
        assert all(v == keyed["study"] for v in keyed.values())


def test_registered_and_loadable_by_name():
    for name in forms.FORM_BUILDERS:
        assert name in REGISTRY
    bench = load_benchmark("forms_people_mem_none")
    assert bench.version == forms.FORMS_VERSION and len(bench.items) == 39
