"""`ctxrel eval` end to end on a tiny random Llama: run directory, resume, crash safety, bad input, modes."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest

from ctxrel.cli import main
from ctxrel.rundir.files import read_records

pytestmark = pytest.mark.integration

FIELDS = {"id", "question", "output", "contains_context", "contains_parametric", "outcome", "first_mention",
          "known", "prompt", "sample", "category"}


def run_eval(model_dir, out, *extra, expect=0, capsys=None):
    code = main(["eval", "--model", str(model_dir), "--out", str(out), "--max-new-tokens", "6", *extra])
    assert code == expect
    return code


def write_jsonl(path: Path, rows) -> Path:
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows))
    return path


GOOD = {"context": "The capital of France is Lyon.", "question": "What is the capital of France?",
        "context_answer": "Lyon", "parametric_answer": "Paris"}


def test_eval_writes_run_directory(tiny_model_dir, tmp_path, capsys):
    out = tmp_path / "run"
    run_eval(tiny_model_dir, out, "--benchmark", "cf_capitals", "--limit", "6")
    printed = capsys.readouterr().out
    assert "cf_capitals: 198 rows" in printed and "6 evaluated" in printed and "cf-acc" in printed
    recs = read_records(out / "evals" / "model" / "cf_capitals.jsonl")
    assert len(recs) == 6 and FIELDS <= set(recs[0])
    assert {r["category"] for r in recs} == {"answer_first", "answer_middle", "answer_last"}  # stratified
    assert len(read_records(out / "evals" / "model" / "cf_capitals.nocontext.jsonl")) == 6
    df = pd.read_csv(out / "metrics.csv")
    row = df[(df.metric == "cf_acc") & (df.subset == "all")].iloc[0]
    assert row.n == 6 and row.ci_low <= row.value <= row.ci_high
    assert set(df.metric) >= {"cf_acc", "par_acc", "share_context", "share_parametric", "share_both",
                              "share_neither", "n_items", "n_known", "n_invalid", "n_too_long"}
    assert df[df.metric == "n_items"].value.iloc[0] == 6
    cfg = (out / "config.yaml").read_text()
    assert "limit: 6" in cfg and "max_new_tokens: 6" in cfg and "batch_size: 16" in cfg


def test_rerun_resumes_without_recomputing(tiny_model_dir, tmp_path):
    out = tmp_path / "run"
    run_eval(tiny_model_dir, out, "--benchmark", "cf_capitals", "--limit", "5")
    f = out / "evals" / "model" / "cf_capitals.jsonl"
    before = f.read_bytes()
    run_eval(tiny_model_dir, out, "--benchmark", "cf_capitals", "--limit", "5")
    assert f.read_bytes() == before  # nothing regenerated or appended
    # a larger limit extends the same file with only the new items (limits are prefix-consistent)
    run_eval(tiny_model_dir, out, "--benchmark", "cf_capitals", "--limit", "8")
    after = f.read_bytes()
    assert after.startswith(before) and after.count(b"\n") == 8
    # other settings are refused rather than mixed into the same file
    run_eval(tiny_model_dir, out, "--benchmark", "cf_capitals", "--limit", "8", "--temperature", "0.5",
             expect=2)


def test_crash_remnant_is_recomputed(tiny_model_dir, tmp_path):
    out = tmp_path / "run"
    run_eval(tiny_model_dir, out, "--benchmark", "cf_capitals", "--limit", "6", "--no-knowledge-filter")
    f = out / "evals" / "model" / "cf_capitals.jsonl"
    full = f.read_bytes()
    lines = full.splitlines(keepends=True)
    f.write_bytes(b"".join(lines[:3]) + lines[3][:25])  # as if killed while writing line 4
    run_eval(tiny_model_dir, out, "--benchmark", "cf_capitals", "--limit", "6", "--no-knowledge-filter")
    recs = read_records(f)
    assert sorted(r["id"] for r in recs) == sorted(json.loads(x)["id"] for x in lines)
    assert f.read_bytes().count(b"\n") == 6


def test_kill_9_then_resume(tiny_model_dir, tmp_path):
    out = tmp_path / "run"
    cmd = [sys.executable, "-m", "ctxrel", "eval", "--model", str(tiny_model_dir), "--out", str(out),
           "--benchmark", "cf_capitals", "--limit", "60", "--batch-size", "1", "--max-new-tokens", "24",
           "--no-knowledge-filter"]
    f = out / "evals" / "model" / "cf_capitals.jsonl"
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while time.time() < deadline and not (f.exists() and f.stat().st_size > 0):
        time.sleep(0.05)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    partial = read_records(f)
    assert 0 < len(partial) < 60, "the kill should land mid-run"
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    recs = read_records(f)
    assert len(recs) == 60 and len({r["id"] for r in recs}) == 60
    assert recs[:len(partial)] == partial  # finished work was kept, not redone


def test_bad_input_names_file_and_line(tiny_model_dir, tmp_path, capsys):
    bench = write_jsonl(tmp_path / "mine.jsonl", [GOOD, '{"context": "x", oops}', GOOD])
    run_eval(tiny_model_dir, tmp_path / "run", "--benchmark", f"mine={bench}", expect=2)
    err = capsys.readouterr().err
    assert "mine.jsonl:2" in err
    assert not (tmp_path / "run" / "evals").exists()  # failed before any model work


def test_skip_invalid_counts_skips(tiny_model_dir, tmp_path, capsys):
    same = dict(GOOD, context_answer="Paris")
    bench = write_jsonl(tmp_path / "mine.jsonl", [GOOD, same, dict(GOOD, context=""), GOOD])
    run_eval(tiny_model_dir, tmp_path / "run", "--benchmark", f"mine={bench}", "--skip-invalid")
    out = capsys.readouterr().out
    assert "4 rows, 2 invalid skipped" in out and "2 evaluated" in out
    assert "mine.jsonl:2" in out and "mine.jsonl:3" in out
    df = pd.read_csv(tmp_path / "run" / "metrics.csv")
    assert df[df.metric == "n_invalid"].value.iloc[0] == 2


def test_context_longer_than_window(tiny_model_dir, tmp_path, capsys):
    long = dict(GOOD, context="Lyon is big. " * 600)
    bench = write_jsonl(tmp_path / "long.jsonl", [GOOD, long])
    run_eval(tiny_model_dir, tmp_path / "a", "--benchmark", f"long={bench}", expect=2)
    assert "long.jsonl:2" in capsys.readouterr().err
    run_eval(tiny_model_dir, tmp_path / "b", "--benchmark", f"long={bench}", "--skip-invalid")
    assert "1 too long skipped" in capsys.readouterr().out


def test_likelihood_mode(tiny_model_dir, tmp_path, capsys):
    out = tmp_path / "run"
    run_eval(tiny_model_dir, out, "--benchmark", "cf_capitals", "--limit", "4", "--mode", "likelihood")
    assert "M_C" in capsys.readouterr().out
    recs = read_records(out / "evals" / "model" / "cf_capitals.jsonl")
    assert len(recs) == 4 and all(0.0 <= r["m_c"] <= 1.0 and r["logp_context"] < 0 for r in recs)
    df = pd.read_csv(out / "metrics.csv")
    mean = df[(df.metric == "m_c") & (df.subset == "all")].value.iloc[0]
    assert mean == pytest.approx(sum(r["m_c"] for r in recs) / 4)


def test_samples_template_and_custom_prompt(tiny_model_dir, tmp_path):
    out = tmp_path / "run"
    run_eval(tiny_model_dir, out, "--benchmark", "cf_capitals", "--limit", "2", "--samples", "3",
             "--temperature", "0.9", "--template", "alpaca", "--prompt", "C: {context}\nQ: {question}")
    recs = read_records(out / "evals" / "model" / "cf_capitals.jsonl")
    assert len(recs) == 6 and sorted({r["sample"] for r in recs}) == [0, 1, 2]
    assert recs[0]["prompt"].startswith("Below is an instruction") and "\nQ: What is the capital" in recs[0]["prompt"]


def test_adapter_checkpoint_and_reference_model(tiny_model_dir, tmp_path):
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    from conftest import build_tiny_model

    base = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    peft = get_peft_model(base, LoraConfig(r=4, target_modules=["q_proj", "v_proj"], init_lora_weights=False))
    adapter = tmp_path / "ckpts" / "step-000050"
    peft.save_pretrained(adapter, safe_serialization=True)
    assert (adapter / "adapter_model.safetensors").exists()
    ref = build_tiny_model(tmp_path / "ref", seed=1)
    out = tmp_path / "run"
    run_eval(tiny_model_dir, out, "--adapter", str(adapter), "--reference-model", str(ref),
             "--benchmark", "cf_capitals", "--limit", "3")
    assert (out / "evals" / "step-000050" / "cf_capitals.jsonl").exists()
    df = pd.read_csv(out / "metrics.csv")
    assert set(df.checkpoint) == {"step-000050"} and set(df.step) == {50}


def test_bad_flags_are_clear(tiny_model_dir, tmp_path, capsys):
    run_eval(tiny_model_dir, tmp_path / "r", "--benchmark", "nope", expect=2)
    assert "unknown benchmark 'nope'" in capsys.readouterr().err
    run_eval(tiny_model_dir, tmp_path / "r", "--prompt", "{context} only", expect=2)
    assert "{question}" in capsys.readouterr().err
    run_eval(tmp_path / "missing-model", tmp_path / "r", expect=2)
    run_eval(tiny_model_dir, tmp_path / "r", "--adapter", str(tmp_path), expect=2)
    assert "adapter_config.json" in capsys.readouterr().err
    pickle_only = tmp_path / "pk"
    pickle_only.mkdir()
    (pickle_only / "pytorch_model.bin").write_bytes(b"x")
    (pickle_only / "config.json").write_text("{}")
    run_eval(pickle_only, tmp_path / "r", expect=2)
    assert "safetensors only" in capsys.readouterr().err


def test_greedy_samples_rejected_before_anything_is_written(tiny_model_dir, tmp_path, capsys):
    run_eval(tiny_model_dir, tmp_path / "run", "--samples", "3", "--limit", "2", expect=2)
    assert "--temperature > 0" in capsys.readouterr().err
    assert not (tmp_path / "run" / "evals").exists()


def test_refused_rerun_leaves_config_and_results_untouched(tiny_model_dir, tmp_path, capsys):
    out = tmp_path / "run"
    run_eval(tiny_model_dir, out, "--benchmark", "cf_capitals", "--limit", "2")
    config = (out / "config.yaml").read_text()
    metrics = (out / "metrics.csv").read_text()
    run_eval(tiny_model_dir, out, "--benchmark", "cf_capitals", "--limit", "2", "--instruct", expect=2)
    assert "instruct: False -> True" in capsys.readouterr().err
    assert (out / "config.yaml").read_text() == config and (out / "metrics.csv").read_text() == metrics
    run_eval(tiny_model_dir, out, "--benchmark", "cf_capitals", "--limit", "2", "--no-knowledge-filter",
             expect=2)  # dropping the filter would leave stale 'known' rows: refused too


def test_reference_model_named_with_adapter_means_base_without_adapter(tiny_model_dir, tmp_path):
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    base = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    peft = get_peft_model(base, LoraConfig(r=8, lora_alpha=256, target_modules=["q_proj", "v_proj", "o_proj"],
                                           init_lora_weights=False))
    adapter = tmp_path / "step-000010"
    peft.save_pretrained(adapter, safe_serialization=True)
    args = ("--benchmark", "cf_capitals", "--limit", "6", "--max-new-tokens", "12")
    run_eval(tiny_model_dir, tmp_path / "base", *args)
    run_eval(tiny_model_dir, tmp_path / "ft", "--adapter", str(adapter), "--reference-model",
             str(tiny_model_dir), *args)
    run_eval(tiny_model_dir, tmp_path / "self", "--adapter", str(adapter), *args)

    def nocontext(run, ckpt):
        return [r["output"] for r in read_records(run / "evals" / ckpt / "cf_capitals.nocontext.jsonl")]

    assert nocontext(tmp_path / "ft", "step-000010") == nocontext(tmp_path / "base", "model")
    assert nocontext(tmp_path / "self", "step-000010") != nocontext(tmp_path / "base", "model")


def test_standard_tasks_and_id_accuracy(tiny_model_dir, tmp_path, test_data, capsys):
    out = tmp_path / "run"
    args = []
    for task in ("mmlu", "arc_challenge", "squad", "gsm8k"):
        args += ["--benchmark", f"{task}={test_data / task}"]
    run_eval(tiny_model_dir, out, *args, "--limit", "4", "--no-knowledge-filter")
    assert "id_accuracy: 4 tasks" in capsys.readouterr().out
    df = pd.read_csv(out / "metrics.csv")
    primary = {"mmlu": "acc", "arc_challenge": "acc", "squad": "exact_match", "gsm8k": "exact_match"}
    values = [df[(df.benchmark == t) & (df.metric == m)].value.iloc[0] for t, m in primary.items()]
    idacc = df[df.metric == "id_accuracy"].iloc[0]
    assert idacc.value == pytest.approx(sum(values) / 4) and idacc.n == 4
    recs = read_records(out / "evals" / "model" / "mmlu.jsonl")
    assert len(recs) == 4 and all(len(r["logprobs"]) == 4 and r["acc"] in (0, 1) for r in recs)
    assert all(r["acc"] == (max(range(4), key=lambda k: r["logprobs"][k]) == r["gold"]) for r in recs)
    before = (out / "evals" / "model" / "gsm8k.jsonl").read_bytes()
    run_eval(tiny_model_dir, out, *args, "--limit", "4", "--no-knowledge-filter")  # resumes: nothing recomputed
    assert (out / "evals" / "model" / "gsm8k.jsonl").read_bytes() == before


def test_standard_task_without_data_is_clear(tiny_model_dir, tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("CTXREL_DATA", raising=False)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")  # no local data, hub off: a clear error at once, no network wait
    run_eval(tiny_model_dir, tmp_path / "run", "--benchmark", "mmlu", expect=2)
    assert "mmlu=PATH" in capsys.readouterr().err


def test_attention_to_context_rows_and_records(tiny_model_dir, tmp_path):
    out = tmp_path / "run"
    run_eval(tiny_model_dir, out, "--benchmark", "cf_capitals", "--limit", "5", "--attention")
    recs = read_records(out / "evals" / "model" / "cf_capitals.attention.jsonl")
    assert len(recs) == 5
    for r in recs:
        assert 0 < r["attention_context"] < 1 and 0 < r["attention_question"] < 1
        assert r["attention_context"] + r["attention_question"] <= 1 + 1e-6
    df = pd.read_csv(out / "metrics.csv")
    row = df[(df.metric == "attention_context") & (df.subset == "all")].iloc[0]
    assert row.n == 5 and row.value == pytest.approx(sum(r["attention_context"] for r in recs) / 5)
    assert row.ci_low <= row.value <= row.ci_high
    assert {"all", "known"} == set(df[df.metric == "attention_question"].subset)
    before = (out / "evals" / "model" / "cf_capitals.attention.jsonl").read_bytes()
    run_eval(tiny_model_dir, out, "--benchmark", "cf_capitals", "--limit", "5", "--attention")  # resumes
    assert (out / "evals" / "model" / "cf_capitals.attention.jsonl").read_bytes() == before
