"""Decoding methods x context kinds end to end on a tiny random Llama: eval, a study at every checkpoint,
eval --run, the do-no-harm table and the report's panels; config errors before any model loads."""

from __future__ import annotations

import json

import pandas as pd
import pytest
import yaml

pytest.importorskip("torch")
pytestmark = pytest.mark.integration

from ctxrel.cli import main  # noqa: E402
from ctxrel.benchmarks.contexts import variant_name  # noqa: E402
from ctxrel.rundir.files import read_records  # noqa: E402

ALL = ["eval.decoding=[greedy,cad,adacad]", "eval.contexts=[conflict,gold,irrelevant]"]
KINDS = ("conflict", "gold", "irrelevant")
DECODINGS = ("greedy", "cad", "adacad")


def test_eval_scores_every_pair_and_keeps_todays_files(tiny_model_dir, tmp_path, capsys):
    plain, both = tmp_path / "plain", tmp_path / "both"
    args = ["eval", "--model", str(tiny_model_dir), "--max-new-tokens", "6", "--limit", "6",
            "--benchmark", "cf_capitals"]
    assert main(args + ["--out", str(plain)]) == 0
    capsys.readouterr()
    assert main(args + ["--out", str(both), *ALL]) == 0
    printed = capsys.readouterr().out
    assert "do no harm (all)" in printed and "cf_capitals[irrelevant,adacad]" in printed
    ev = both / "evals" / "model"
    # greedy on the conflict items: byte-identical records, whatever else is scored
    strip = lambda p: [{k: v for k, v in r.items()} for r in read_records(p)]  # noqa: E731
    assert strip(ev / "cf_capitals.jsonl") == strip(plain / "evals" / "model" / "cf_capitals.jsonl")
    df = pd.read_csv(both / "metrics.csv")
    for kind in KINDS:
        for dec in DECODINGS:
            name = variant_name("cf_capitals", kind, dec)
            recs = read_records(ev / f"{name}.jsonl")
            assert len(recs) == 6, name
            if (kind, dec) != ("conflict", "greedy"):
                assert {r["decoding"] for r in recs} == {dec} and {r["context_kind"] for r in recs} == {kind}
                rows = df[(df.benchmark == name) & (df.subset == "all")]
                acc = rows[rows.metric == "acc"].value.iloc[0]
                right = "contains_context" if kind == "conflict" else "contains_parametric"
                assert acc == pytest.approx(sum(r[right] for r in recs) / 6)
                assert (dec == "greedy") != ("acc_vs_greedy" in set(rows.metric))
    gold = {r["id"]: r for r in read_records(ev / "cf_capitals[gold].jsonl")}
    conflict = {r["id"]: r for r in read_records(ev / "cf_capitals.jsonl")}
    assert set(gold) == set(conflict)  # the same items, paired by id
    for i, r in gold.items():
        assert conflict[i]["context_answer"] not in r["prompt"].split("Question")[0]
        assert r["parametric_answer"] in r["prompt"]
    irr = read_records(ev / "cf_capitals[irrelevant].jsonl")
    assert all(r["context_from"] != r["id"] and r["parametric_answer"] not in r["prompt"] for r in irr)
    # a rerun recomputes nothing and refuses other alphas in the same directory
    before = (ev / "cf_capitals[cad].jsonl").read_bytes()
    assert main(args + ["--out", str(both), *ALL]) == 0
    assert (ev / "cf_capitals[cad].jsonl").read_bytes() == before
    assert main(args + ["--out", str(both), *ALL, "eval.cad_alpha=0.5"]) == 0  # a new variant: cad0.5
    assert (ev / "cf_capitals[cad0.5].jsonl").exists()


def test_likelihood_mode_gets_the_contrast(tiny_model_dir, tmp_path):
    out = tmp_path / "ll"
    assert main(["eval", "--model", str(tiny_model_dir), "--limit", "4", "--mode", "likelihood",
                 "--out", str(out), "eval.decoding=[cad]", "eval.cad_alpha=[0,1]", "eval.contexts=[gold]"]) == 0
    ev = out / "evals" / "model"
    base = {r["id"]: r for r in read_records(ev / "cf_capitals.jsonl")}
    a0 = {r["id"]: r for r in read_records(ev / "cf_capitals[cad0].jsonl")}
    a1 = {r["id"]: r for r in read_records(ev / "cf_capitals[cad].jsonl")}
    for i in base:  # alpha 0 is the plain score with the context; alpha 1 moves it
        assert a0[i]["logp_context"] == pytest.approx(base[i]["logp_context"], abs=1e-4)
    assert any(abs(a1[i]["logp_context"] - base[i]["logp_context"]) > 1e-3 for i in base)
    assert len(read_records(ev / "cf_capitals[gold,cad].jsonl")) == 4


@pytest.mark.parametrize("override, words", [
    ("eval.decoding=[greedy,beam]", "eval.decoding: 'beam' is not one of"),
    ("eval.contexts=[conflict,noise]", "eval.contexts: 'noise' is not one of"),
    ("eval.cad_alpha=-1", "eval.cad_alpha: -1.0 must be"),
    ("eval.decoding=[cad,cad]", "names an entry twice"),
])
def test_bad_keys_fail_before_the_model_loads(tmp_path, capsys, override, words):
    extra = ["eval.decoding=[cad]"] if "cad_alpha" in override else []
    code = main(["eval", "--model", str(tmp_path / "no-such-model"), "--out", str(tmp_path / "x"), override, *extra])
    err = capsys.readouterr().err
    assert code == 2 and words in err and "Traceback" not in err


def test_cad_with_sampling_is_refused(tmp_path, capsys):
    code = main(["eval", "--model", str(tmp_path / "nope"), "--out", str(tmp_path / "x"), "--samples", "2",
                 "--temperature", "1", "eval.decoding=[adacad]"])
    assert code == 2 and "adacad is decoded greedily" in capsys.readouterr().err


def test_study_scores_every_combination_at_every_checkpoint_and_reports(tiny_model_dir, tmp_path, capsys):
    data = tmp_path / "alpaca.json"
    data.write_text(json.dumps([{"instruction": f"Name city {i}.", "input": "Paris Lyon" if i % 2 else "",
                                 "output": f"City {i} is Lyon."} for i in range(16)]))
    run = tmp_path / "run"
    cfg = dict(model=dict(name=str(tiny_model_dir), batch_size=8, device="cpu"),
               data=dict(source=str(data), max_length=64),
               train=dict(mode="lora", lora=dict(rank=4, alpha=8, dropout=0.0), lr=1e-2, epochs=1, batch_size=4,
                          tensorboard=False),
               eval=dict(benchmarks=["cf_capitals"], limit=5, max_new_tokens=5, every=2, early=[1],
                         decoding=["greedy", "cad", "adacad"], contexts=list(KINDS)),
               out=str(run))
    path = tmp_path / "study.yaml"
    path.write_text(yaml.safe_dump(cfg))
    assert main(["study", str(path)]) == 0
    printed = capsys.readouterr().out
    assert "do no harm (all)" in printed
    steps = sorted(d.name for d in (run / "evals").iterdir())
    assert steps == ["step-000000", "step-000001", "step-000002", "step-000004"]
    df = pd.read_csv(run / "metrics.csv")
    for kind in KINDS:
        for dec in DECODINGS:
            name = variant_name("cf_capitals", kind, dec)
            metric = "cf_acc" if (kind, dec) == ("conflict", "greedy") else "acc"
            got = df[(df.benchmark == name) & (df.metric == metric) & (df.subset == "all")]
            assert sorted(got.step) == [0, 1, 2, 4], name
            assert all(len(read_records(run / "evals" / s / f"{name}.jsonl")) == 5 for s in steps)

    # eval --run with the same keys rescored nothing new (finished items are kept)
    before = (run / "evals" / "step-000004" / "cf_capitals[gold,cad].jsonl").read_bytes()
    assert main(["eval", "--run", str(run)]) == 0
    assert (run / "evals" / "step-000004" / "cf_capitals[gold,cad].jsonl").read_bytes() == before

    assert main(["report", str(run)]) == 0
    summary = json.loads((run / "report" / "summary.json").read_text())
    group = summary["groups"][0]
    # every decoding of the conflict items has its own verdict; gold / irrelevant do not
    assert set(group["benchmarks"]) == {"cf_capitals", "cf_capitals[cad]", "cf_capitals[adacad]"}
    assert all(b["subsets"]["all"]["verdict"] for b in group["benchmarks"].values())
    m = group["mitigation"]["cf_capitals"]
    assert set(m["recoverability"]["all"]) == set(DECODINGS)
    assert [p["step"] for p in m["recoverability"]["all"]["cad"]] == [0, 1, 2, 4]
    assert set(m["contexts"]) == set(KINDS) and set(m["contexts"]["gold"]) == set(DECODINGS)
    assert {s["decoding"] for s in m["recovery"]["all"]} == {"cad", "adacad"}
    assert all(s["verdict"] in ("no drop", "recovered", "partly recovered", "not recovered")
               for s in m["recovery"]["all"])
    html = (run / "report" / "index.html").read_text()
    assert "decoding methods and context kinds" in html and "Do no harm at the final checkpoint" in html
    assert (run / "report" / "cf_capitals-recoverability.png").exists()
    assert (run / "report" / "cf_capitals-context-kinds.png").exists()


def test_context_kind_and_decoding_are_columns_of_the_metric_rows(tiny_model_dir, tmp_path):
    """Every metric row of a conflict benchmark says in columns which context kind and decoding scored it (the
    benchmark name keeps its tag, for the records files and resume); a table written before those columns has
    them empty, and the Python API reads them from the name instead."""
    import sqlite3

    import ctxrel
    from ctxrel.benchmarks.contexts import parse_variant
    from ctxrel.rundir.files import METRICS_DB

    out = tmp_path / "run"
    assert main(["eval", "--model", str(tiny_model_dir), "--max-new-tokens", "4", "--limit", "4",
                 "--benchmark", "cf_capitals", "--out", str(out), "eval.decoding=[greedy,cad]",
                 "eval.contexts=[conflict,gold]"]) == 0
    df = pd.read_csv(out / "metrics.csv")
    assert {tuple(parse_variant(b)[1:]) for b in df.benchmark} == {(k, d) for k in ("conflict", "gold")
                                                                    for d in ("greedy", "cad")}
    for b, rows in df.groupby("benchmark"):
        assert set(zip(rows.context, rows.decoding)) == {parse_variant(b)[1:]}, b
    con = sqlite3.connect(out / METRICS_DB)  # what a table of an older ctxrel holds: the columns empty
    with con:
        con.execute("UPDATE metrics SET context = NULL, decoding = NULL")
    con.close()
    api = ctxrel.load(str(out)).metrics
    assert api.context.notna().all() and api.decoding.notna().all()
    assert all((c, d) == parse_variant(b)[1:] for b, c, d in zip(api.benchmark, api.context, api.decoding))
