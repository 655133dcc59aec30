"""eval.mode both in a study on a tiny random Llama: generation on the --limit items, M_C on every item of the
benchmark (benchmark NAME@likelihood) at every checkpoint; the report follows M_C with its own verdict."""

from __future__ import annotations

import json

import pytest

pytest.importorskip("torch")
pytestmark = pytest.mark.integration

from ctxrel.benchmarks.registry import load_benchmark  # noqa: E402
from ctxrel.cli import main  # noqa: E402
from ctxrel.rundir.files import RunDir, read_records  # noqa: E402
from test_study import write_config  # noqa: E402


def test_study_with_both_modes_scores_m_c_on_every_item(tiny_model_dir, tmp_path, capsys):
    cfg = write_config(tmp_path, tiny_model_dir, eval=dict(mode="both", limit=6, every=8, early=[4]))
    assert main(["study", str(cfg)]) == 0
    run = tmp_path / "run"
    n_all = len(load_benchmark("cf_capitals").items)
    for ckpt in ("step-000000", "step-000004", "step-000008"):
        gen = read_records(run / "evals" / ckpt / "cf_capitals.jsonl")
        lik = read_records(run / "evals" / ckpt / "cf_capitals@likelihood.jsonl")
        assert len(gen) == 6 and all("contains_context" in r for r in gen)
        assert len({r["id"] for r in lik}) == n_all and all(0 <= r["m_c"] <= 1 for r in lik)
    rows = {(r["step"], r["benchmark"], r["metric"]) for r in RunDir(run).metrics() if r["subset"] == "all"}
    assert (8, "cf_capitals", "cf_acc") in rows and (8, "cf_capitals@likelihood", "m_c") in rows
    capsys.readouterr()
    assert main(["report", str(run), "--bootstrap", "200"]) == 0
    out = capsys.readouterr().out
    assert f"cf_capitals@likelihood [all, {n_all} items]" in out and "cf_capitals [all, 6 items]" in out
    s = json.loads((run / "report" / "summary.json").read_text())["groups"][0]["benchmarks"]
    assert s["cf_capitals@likelihood"]["metric"] == "m_c" and s["cf_capitals"]["metric"] == "cf_acc"
    assert s["cf_capitals@likelihood"]["subsets"]["all"]["verdict"] in (
        "inversion", "rise", "fall", "no_change")
    # rerunning resumes: nothing is scored again
    before = (run / "evals" / "step-000008" / "cf_capitals@likelihood.jsonl").read_bytes()
    assert main(["eval", "--run", str(run)]) == 0
    assert (run / "evals" / "step-000008" / "cf_capitals@likelihood.jsonl").read_bytes() == before
