"""The Python API (ctxrel.api): its doctests on a toy run directory, the tables against the files, lazy import."""

from __future__ import annotations

import doctest
import subprocess
import sys

import pytest

import ctxrel
from ctxrel import api
from ctxrel.rundir.files import RunDir, read_records


def test_doctests_of_the_api_module(toy_run):
    """The examples in ctxrel.api (and the docs page) run as written on a run directory."""
    res = doctest.testmod(api, extraglobs={"run_dir": str(toy_run)}, optionflags=doctest.NORMALIZE_WHITESPACE)
    assert res.attempted >= 8 and res.failed == 0


def test_import_ctxrel_stays_light():
    """`import ctxrel` does not import pandas, numpy or the API until a name is used."""
    code = ("import sys, ctxrel; assert 'ctxrel.api' not in sys.modules and 'pandas' not in sys.modules "
            "and 'numpy' not in sys.modules; ctxrel.load; assert 'ctxrel.api' in sys.modules")
    subprocess.run([sys.executable, "-c", code], check=True)


def test_package_faces_keep_the_public_imports_and_stay_light():
    """`from ctxrel.evaluate import run_eval` and `from ctxrel.config import RunConfig` work after the modules moved
    into folders, and neither face imports torch."""
    code = ("import sys; from ctxrel.config import RunConfig, StudyConfig, load_config; import ctxrel.evaluate as E; "
            "assert 'torch' not in sys.modules; from ctxrel.evaluate import run_eval, select_items, evaluate_variants; "
            "from ctxrel.evaluate.run import run_eval as r; assert run_eval is r and E.select_items is select_items")
    subprocess.run([sys.executable, "-c", code], check=True)


def test_items_table_matches_the_records_files(toy_run):
    runs = ctxrel.load(toy_run)
    items = runs.items
    recs = read_records(toy_run / "evals" / "step-000008" / "cf_toy.jsonl")
    at8 = items[items.step == 8].set_index("id")
    assert len(at8) == len(recs) == 20
    for r in recs:
        assert at8.loc[r["id"], "output"] == r["output"]
        assert bool(at8.loc[r["id"], "contains_context"]) == r["contains_context"]
        assert at8.loc[r["id"], "outcome"] == r["outcome"]
    assert set(items.context_kind) == {"conflict"} and set(items.decoding) == {"greedy"}
    assert "prompt" not in items.columns
    assert len(runs.metrics) == len(RunDir(toy_run).metrics())


def test_several_runs_as_seeds_and_labels(tmp_path):
    from conftest import write_toy_run

    a = write_toy_run(tmp_path / "a")
    b = write_toy_run(tmp_path / "b", {0: 4, 8: 19, 16: 5})
    c = write_toy_run(tmp_path / "c", {0: 5, 8: 10, 16: 15})
    runs = ctxrel.load([a, b, c], labels=["base", "base", "other"])
    assert [label for label, _ in runs.groups] == ["base", "other"]
    assert sorted(runs.items.label.unique()) == ["base", "other"]
    rep = runs.report(bootstrap=200)
    base = next(v for v in rep.verdicts if v.label == "base" and v.subset == "all")
    other = next(v for v in rep.verdicts if v.label == "other" and v.subset == "all")
    assert base.n_seeds == 2 and base.seeds_drop_ci is not None
    assert base.verdict == "inversion" and other.verdict == "rise"
    assert other.peak_step == 16 and other.final == pytest.approx(0.75)
    assert len(rep.table()) == len(rep.verdicts)


def test_the_verdict_is_the_reports(toy_run):
    """The API's verdict is summarise's, as `ctxrel report` prints it (same numbers, same text)."""
    from ctxrel.analysis.rundata import load_run
    from ctxrel.analysis.summary import summarise

    st = summarise([load_run(toy_run)], "toy", n_boot=300)["benchmarks"]["cf_toy"]["subsets"]["all"]
    v = next(v for v in ctxrel.load(toy_run).report(bootstrap=300).verdicts if v.subset == "all")
    assert v.verdict_text == st["verdict_text"]
    assert v.drop_ci == (st["drop"][0]["ci_low"], st["drop"][0]["ci_high"])
    assert v.memory_return == pytest.approx(st["memory_return"]["change"][0]["estimate"])


def test_bad_config_is_one_sentence():
    with pytest.raises(ctxrel.api.CtxrelError, match="eval.limit"):
        ctxrel.make_config("eval", overrides=["eval.limit=0"])
    with pytest.raises(ctxrel.api.CtxrelError, match="choose one of"):
        ctxrel.make_config("train")
    cfg = ctxrel.make_config("eval")
    cfg.eval.limit = -3  # a hand-edited object is checked like a file
    with pytest.raises(ctxrel.api.CtxrelError, match="below its minimum"):
        api._config(ctxrel.RunConfig, cfg, (), "eval")


def test_public_names_are_not_module_names():
    """Python sets a submodule on its package when it loads: a public name equal to one would be replaced."""
    import pkgutil

    modules = {m.name for m in pkgutil.iter_modules(ctxrel.__path__)}
    assert not set(ctxrel._LAZY) & modules
    assert set(ctxrel._LAZY) == set(api.__all__)
    import importlib

    importlib.import_module("ctxrel.evaluate.run")
    assert callable(ctxrel.run_eval) and ctxrel.run_eval is api.run_eval


def test_the_docs_page_examples_run_as_written(toy_run):
    from pathlib import Path

    page = Path(__file__).resolve().parents[1] / "docs" / "python-api.md"
    res = doctest.testfile(str(page), module_relative=False, globs={"run_dir": str(toy_run)},
                           optionflags=doctest.NORMALIZE_WHITESPACE)
    assert res.attempted >= 9 and res.failed == 0
