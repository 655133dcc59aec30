"""`ctxrel export lm-eval`: the exported task is well formed and refused where it must be (fast); lm-eval runs it
on the default model and agrees with `ctxrel eval` item by item (slow)."""

from __future__ import annotations

import ast
import importlib.util
import json
from pathlib import Path

import pytest
import yaml

from ctxrel.cli import main


class _FunctionTag(yaml.SafeLoader):
    """Reads lm-eval's `!function module.name` tags as plain strings (the YAML must parse before lm-eval)."""


_FunctionTag.add_constructor("!function", lambda loader, node: "!function " + loader.construct_scalar(node))


def test_export_is_well_formed(tmp_path, capsys):
    out = tmp_path / "task"
    assert main(["export", "lm-eval", "cf_capitals", "--out", str(out), "--limit", "6", "--template", "plain"]) == 0
    assert "task ctxrel_cf_capitals, 6 items, template plain" in capsys.readouterr().out
    spec = yaml.load((out / "ctxrel_cf_capitals.yaml").read_text(), Loader=_FunctionTag)
    assert spec["task"] == "ctxrel_cf_capitals" and spec["output_type"] == "generate_until"
    assert spec["process_results"] == "!function utils.process_results"
    assert [m["metric"] for m in spec["metric_list"]] == ["cf_acc", "par_acc", "memorization_ratio"]
    assert spec["generation_kwargs"]["max_gen_toks"] == 32 and spec["metadata"]["items_file"] == \
        "ctxrel_cf_capitals.jsonl"
    ast.parse((out / "utils.py").read_text())
    rows = [json.loads(line) for line in (out / "ctxrel_cf_capitals.jsonl").read_text().splitlines()]
    from ctxrel.benchmarks.registry import load_benchmark
    from ctxrel.evaluate.selection import select_items
    from ctxrel.core.prompts import PromptBuilder

    items = select_items(load_benchmark("cf_capitals").items, 6, 0)
    assert [r["id"] for r in rows] == [it.id for it in items]  # ctxrel eval's own selection
    builder = PromptBuilder(template="plain")
    assert [r["prompt"] for r in rows] == [builder.with_context(it.context, it.question) for it in items]
    assert rows[0]["context_answers"][0] == items[0].context_answer

    # the exported helpers score with ctxrel's matching (loaded as lm-eval loads them: a module from the path)
    spec_ = importlib.util.spec_from_file_location("exported_utils", out / "utils.py")
    utils = importlib.util.module_from_spec(spec_)
    spec_.loader.exec_module(utils)
    doc = rows[0]
    both = f"{doc['context_answers'][0]}, or maybe {doc['parametric_answers'][0]}"
    assert utils.process_results(doc, [both]) == {"cf_acc": 1.0, "par_acc": 1.0, "memorization_ratio": (1.0, 1.0)}
    assert utils.memorization_ratio([(1.0, 0.0), (1.0, 1.0), (0.0, 1.0), (0.0, 0.0)]) == pytest.approx(0.5)
    if importlib.util.find_spec("datasets"):
        assert len(utils.load_items(**spec["metadata"])["test"]) == 6

    # a second benchmark into the same (ctxrel-written) directory shares utils.py
    assert main(["export", "lm-eval", "cf_capitals_moved", "--out", str(out), "--limit", "4",
                 "--template", "plain"]) == 0
    assert (out / "ctxrel_cf_capitals_moved.yaml").exists() and (out / "ctxrel_cf_capitals.yaml").exists()


@pytest.mark.parametrize("argv, words", [
    (["nope_bench"], "unknown benchmark 'nope_bench'"),
    (["cf_capitals", "--eval.mode", "likelihood"], "eval.mode='likelihood'"),
    (["cf_capitals", "--eval.samples", "2"], "eval.samples=2"),
    (["gsm8k"], "standard task"),
])
def test_export_refusals(tmp_path, capsys, argv, words):
    out = tmp_path / "task"
    assert main(["export", "lm-eval", *argv, "--out", str(out), "--template", "plain"]) == 2
    err = capsys.readouterr().err.strip()
    assert words in err and err.count("\n") == 0 and "Traceback" not in err
    assert not out.exists()


def test_export_refuses_a_directory_it_did_not_write(tmp_path, capsys):
    out = tmp_path / "mine"
    out.mkdir()
    (out / "notes.txt").write_text("my notes")
    assert main(["export", "lm-eval", "cf_capitals", "--out", str(out), "--template", "plain"]) == 2
    err = capsys.readouterr().err.strip()
    assert "not made by ctxrel" in err and err.count("\n") == 0
    assert sorted(p.name for p in out.iterdir()) == ["notes.txt"]
    assert main(["export", "lm-eval", "cf_capitals", "--template", "plain"]) == 2
    assert "needs --out DIR" in capsys.readouterr().err


@pytest.mark.slow
def test_lm_eval_agrees_with_ctxrel_item_by_item(tmp_path):
    pytest.importorskip("lm_eval", reason="lm_eval is not installed (extra `lmeval`: lm_eval==0.4.13)")
    pytest.importorskip("torch")
    from lm_eval import simple_evaluate
    from lm_eval.models.huggingface import HFLM
    from lm_eval.tasks import TaskManager

    from ctxrel.backends.hf import HFBackend
    from ctxrel.config.settings import EvalConfig, ModelConfig, RunConfig
    from ctxrel.evaluate.run import run_eval
    from ctxrel.models.loading import load_model
    from ctxrel.rundir.files import read_records

    limit = 12
    task_dir = tmp_path / "task"
    assert main(["export", "lm-eval", "cf_capitals", "--out", str(task_dir), "--limit", str(limit)]) == 0
    model, tok, name = load_model("smollm2-135m-instruct", device="cpu")
    cfg = RunConfig(model=ModelConfig(device="cpu"), out=str(tmp_path / "ctxrel"),
                    eval=EvalConfig(benchmarks=["cf_capitals"], limit=limit, knowledge_filter=False, bootstrap=10))
    run_eval(cfg, lm=HFBackend.for_config(model, tok, cfg.model, name=name))
    mine = {r["id"]: r for r in read_records(tmp_path / "ctxrel" / "evals" / "model" / "cf_capitals.jsonl")}

    out = simple_evaluate(model=HFLM(pretrained=model, tokenizer=tok, batch_size=16, device="cpu"),
                          tasks=["ctxrel_cf_capitals"], log_samples=True, bootstrap_iters=0,
                          task_manager=TaskManager(include_defaults=False, include_path=str(task_dir)))
    samples = out["samples"]["ctxrel_cf_capitals"]
    theirs = {s["doc"]["id"]: s for s in samples}
    assert sorted(theirs) == sorted(mine) and len(mine) == limit
    for item_id, s in theirs.items():
        assert s["arguments"][0][0] == mine[item_id]["prompt"]  # the same prompt, character for character
        assert (s["cf_acc"], s["par_acc"]) == (float(mine[item_id]["contains_context"]),
                                               float(mine[item_id]["contains_parametric"])), item_id
    res = out["results"]["ctxrel_cf_capitals"]
    cf = sum(r["contains_context"] for r in mine.values())
    par = sum(r["contains_parametric"] for r in mine.values())
    assert res["cf_acc,none"] == pytest.approx(cf / limit)
    assert res["par_acc,none"] == pytest.approx(par / limit)
    if cf + par:
        assert res["memorization_ratio,none"] == pytest.approx(par / (cf + par))
