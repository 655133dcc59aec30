"""Multi-stage studies (sft -> dpo) on a tiny random Llama: the hand-over between stages, the DPO reference with
LoRA, resume inside the second stage after kill -9, a first stage started from another run's checkpoint (which
is never written), and the checks made before any model loads."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

torch = pytest.importorskip("torch")
pytestmark = pytest.mark.integration

from ctxrel.cli import main  # noqa: E402
from ctxrel.rundir.files import read_records  # noqa: E402

ALPACA = [{"instruction": f"Name city number {i}.", "input": "Paris Lyon" if i % 3 else "",
           "output": f"City {i} is Lyon."} for i in range(16)]


def write_config(tmp_path: Path, model_dir: Path, *, dpo_epochs: int = 1, every: int = 4, **top) -> Path:
    data = tmp_path / "alpaca.json"
    data.write_text(json.dumps(ALPACA))
    cfg = dict(model=dict(name=str(model_dir), batch_size=8, device="cpu"),
               data=dict(source=str(data), max_length=64),
               train=dict(mode="lora", lora=dict(rank=4, alpha=8, dropout=0.1), lr=1e-2, epochs=1, batch_size=4,
                          tensorboard=False),
               eval=dict(benchmarks=["cf_capitals"], limit=4, max_new_tokens=4, every=every, early=[1],
                         knowledge_filter=False),
               out=str(tmp_path / "run"),
               stages=[dict(kind="sft"),
                       dict(kind="dpo", beta=0.5, data=dict(source="pairs", max_length=160, pairs=dict(n=8)),
                            train=dict(lr=2e-2, epochs=dpo_epochs, warmup=0.0))])
    cfg.update(top)
    path = tmp_path / "study.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def adapter(folder: Path) -> dict:
    from safetensors.torch import load_file

    return load_file(str(folder / "adapter_model.safetensors"))


def test_stage_hand_over_and_reference(tiny_model_dir, tmp_path, capsys):
    cfg = write_config(tmp_path, tiny_model_dir)
    assert main(["train", str(cfg)]) == 0
    run = tmp_path / "run"
    ledger = json.loads((run / "stages.json").read_text())
    assert [(e["name"], e["offset"], e["total"], e["total_steps"]) for e in ledger] == [("sft", 0, 4, 4),
                                                                                           ("dpo", 4, 2, 2)]
    metas = {p.name: json.loads((p / "checkpoint.json").read_text()) for p in (run / "checkpoints").iterdir()}
    assert sorted(metas) == ["step-000000", "step-000001", "step-000004", "step-000005", "step-000006"]
    assert metas["step-000004"]["stage"] == "sft" and metas["step-000005"]["stage"] == "dpo"
    assert metas["step-000005"]["stage_step"] == 1
    # the dpo stage's initial weights (its reference, saved) are the sft stage's last checkpoint, tensor by tensor
    from safetensors.torch import load_file

    reference = load_file(str(run / "stages" / "1-dpo.reference.safetensors"))
    last_sft = adapter(run / "checkpoints" / "step-000004")
    assert {k.replace(".default", "") for k in reference} == set(last_sft)
    assert all(torch.equal(reference[k], last_sft[k.replace(".default", "")]) for k in reference)
    # ... and the policy starts there: the first dpo loss is exactly log 2 (policy = reference), later ones move
    log = {r["step"]: r for r in read_records(run / "train_log.jsonl")}
    assert [log[s]["stage"] for s in range(1, 7)] == ["sft"] * 4 + ["dpo"] * 2
    assert log[5]["loss"] == pytest.approx(0.6931472, abs=1e-6) and log[5]["reward_margin"] == 0.0
    assert abs(log[6]["loss"] - 0.6931472) > 2e-5 and log[6]["reward_margin"] != 0.0
    assert not torch.equal(adapter(run / "checkpoints" / "step-000006")["base_model.model.model.layers.0.self_attn."
                                                                          "q_proj.lora_B.weight"],
                           last_sft["base_model.model.model.layers.0.self_attn.q_proj.lora_B.weight"])
    rows = list(__import__("csv").DictReader((run / "metrics.csv").open()))
    assert {(r["step"], r["stage"]) for r in rows} == {("0", "sft"), ("1", "sft"), ("4", "sft"), ("5", "dpo"),
                                                       ("6", "dpo")}
    capsys.readouterr()
    assert main(["train", str(cfg), "stages=[{kind: sft}]"]) == 2  # other stages: refused, like other settings
    assert "holds a run started with other settings (stages: 2 stage(s) -> 1" in capsys.readouterr().err
    assert main(["eval", "--run", str(run)]) == 0  # re-scoring saved checkpoints keeps each row's stage
    rows = list(__import__("csv").DictReader((run / "metrics.csv").open()))
    assert {(r["step"], r["stage"]) for r in rows} == {("0", "sft"), ("1", "sft"), ("4", "sft"), ("5", "dpo"),
                                                       ("6", "dpo")}
    # the report: a verdict across the run and one per stage; a stage's name names its last checkpoint in flips
    capsys.readouterr()
    assert main(["report", str(run), "--from", "sft", "--to", "6", "--bootstrap", "50"]) == 0
    text = capsys.readouterr().out
    assert "verdict across the run:" in text and "stage sft (sft) steps 0-4:" in text
    assert "stage dpo (dpo) steps 4-6:" in text and "flips run step-000004 -> step-000006" in text
    summary = json.loads((run / "report" / "summary.json").read_text())
    group = summary["groups"][0] if "groups" in summary else summary
    assert group["epoch_boundaries"] == [[4, "sft | dpo"]]


def test_reference_log_probs_with_lora(tiny_model_dir, tmp_path):
    """The reference of a dpo stage after an sft stage is base + that stage's adapter (as PEFT loads it); with no
    previous stage it is the base model (a fresh adapter adds zero)."""
    from types import SimpleNamespace

    from accelerate import Accelerator

    from ctxrel.config import settings as C
    from ctxrel.models.loading import load_model, load_weights
    from ctxrel.train.data import collate
    from ctxrel.train.loop import ResponseLoss, build_model
    from ctxrel.train.reference import reference_logps, snapshot

    cfg = C.load_config(C.StudyConfig, write_config(tmp_path, tiny_model_dir))
    assert main(["train", str(tmp_path / "study.yaml"), "stages=[{kind: sft}]"]) == 0  # an sft run to take from
    ids = [[1, 40, 41, 42, 43, 44], [1, 50, 51, 52]]
    labels = [[-100, -100, -100, 42, 43, 44], [-100, -100, 51, 52]]
    x, mask, y = collate(ids, labels, 3)
    for previous in (None, tmp_path / "run" / "checkpoints" / "step-000004"):
        model, _ = build_model(cfg, "cpu", cpu=True)
        if previous is not None:
            load_weights(model, previous)
        reference = snapshot(model, tmp_path / "ref.safetensors", fresh=True, main=True)
        with torch.no_grad():  # the policy moves away from the reference
            for name, p in model.named_parameters():
                if p.requires_grad:
                    p.add_(0.3)
        s = SimpleNamespace(acc=Accelerator(cpu=True), model=model, wrapped=ResponseLoss(model))
        got = reference_logps(s, reference, x, mask, y, "sum")
        plain, _, _ = load_model(str(tiny_model_dir), adapter=str(previous) if previous else None, device="cpu")
        with torch.no_grad():
            want = ResponseLoss(plain)(x, mask, y, per_sequence="sum")
            moved = ResponseLoss(model)(x, mask, y, per_sequence="sum")
        torch.testing.assert_close(got, want, rtol=0, atol=1e-5)
        assert (moved - want).abs().max() > 1e-3  # the swap put the trained weights back
        assert not any(torch.equal(p, reference[n]) for n, p in model.named_parameters() if n in reference)


def test_resume_inside_the_dpo_stage_after_kill_9(tiny_model_dir, tmp_path):
    cfg = write_config(tmp_path, tiny_model_dir, dpo_epochs=6, every=100)
    cmd = [sys.executable, "-m", "ctxrel", "train", str(cfg)]
    env = dict(os.environ, OMP_NUM_THREADS="1")
    run, ref = tmp_path / "run", tmp_path / "ref"
    proc = subprocess.Popen(cmd + [f"out={run}"], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    log = run / "train_log.jsonl"
    deadline = time.time() + 300
    while time.time() < deadline and not (log.exists() and sum(r.get("stage") == "dpo"
                                                                   for r in read_records(log)) >= 3):
        time.sleep(0.02)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    dpo_rows = sum(r.get("stage") == "dpo" for r in read_records(log))
    assert 3 <= dpo_rows < 12, "the kill should land inside the dpo stage"
    subprocess.run(cmd + [f"out={run}"], check=True, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    subprocess.run(cmd + [f"out={ref}"], check=True, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    a, b = ({r["step"]: r["loss"] for r in read_records(d / "train_log.jsonl")} for d in (run, ref))
    resumed = json.loads((run / "train_summary.json").read_text())  # the skipped sft stage is still summarised
    assert [(e["name"], e["offset"], e["total"]) for e in resumed["stages"]] == [("sft", 0, 4), ("dpo", 4, 12)]
    assert a == b and len(b) == 4 + 12
    last_a, last_b = adapter(run / "checkpoints" / "step-000016"), adapter(ref / "checkpoints" / "step-000016")
    assert all(torch.equal(last_a[k], last_b[k]) for k in last_b)


def test_first_stage_from_another_runs_checkpoint_never_writes_there(tiny_model_dir, tmp_path, capsys):
    cfg = write_config(tmp_path, tiny_model_dir)
    assert main(["train", str(cfg), "stages=[{kind: sft}]", f"out={tmp_path / 'first'}"]) == 0
    source = tmp_path / "first" / "checkpoints" / "step-000004"

    def digest(folder):
        return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.rglob("*")) if p.is_file()}

    before = digest(tmp_path / "first")
    stages = f"stages=[{{kind: dpo, init: {source}, beta: 0.5, data: {{source: pairs, max_length: 160, pairs: {{n: 8}}}}}}]"
    assert main(["train", str(cfg), stages, f"out={tmp_path / 'second'}"]) == 0
    assert digest(tmp_path / "first") == before
    from safetensors.torch import load_file

    reference = load_file(str(tmp_path / "second" / "stages" / "0-dpo.reference.safetensors"))
    start = adapter(source)
    assert all(torch.equal(reference[k], start[k.replace(".default", "")]) for k in reference)
    log = read_records(tmp_path / "second" / "train_log.jsonl")
    assert log[0]["loss"] == pytest.approx(0.6931472, abs=1e-6)


@pytest.mark.parametrize("override, words", [
    ("stages=[{kind: dpo, data: {source: mixture}}]", "a dpo stage trains on preference pairs"),
    ("stages=[{kind: dpo}]", "alpaca.json:record 0 [prompt]: missing field 'prompt'"),  # the study's data.source
    ("stages=[{kind: sft, train: {mode: full}}]", "stages[0] (sft).train.mode: every stage uses the study's"),
    ("stages=[{kind: sft}, {kind: dpo, init: x, data: {source: pairs}}]", "only the first stage starts from"),
    ("stages=[{kind: dpo, beta: 0, data: {source: pairs}}]", "beta=0.0 must be > 0"),
    ("stages=[{kind: sft, train: {lr: -1}}]", "train.lr=-1.0 must be > 0"),
    ("stages=[{kind: sft, tarin: {}}]", "unknown config key(s) in section 'stages[0]'"),
    ("stages=[{kind: dpo, data: {source: ./nope.jsonl}}]", "no such file"),
    ("stages=[{kind: dpo, init: ./nowhere, data: {source: pairs}}]", "not a ctxrel checkpoint directory"),
])
def test_bad_stages_are_refused_before_anything_is_written(tiny_model_dir, tmp_path, capsys, override, words):
    cfg = write_config(tmp_path, tiny_model_dir)
    assert main(["study", str(cfg), override]) == 2
    err = capsys.readouterr().err
    assert words in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "run").exists()


def test_bad_pair_file_names_file_and_line(tiny_model_dir, tmp_path, capsys):
    pairs = tmp_path / "pairs.jsonl"
    pairs.write_text(json.dumps(dict(prompt="Q?", chosen="a", rejected="b")) + "\n"
                     + json.dumps(dict(prompt="Q?", chosen="a", rejected="a")) + "\n")
    cfg = write_config(tmp_path, tiny_model_dir)
    assert main(["study", str(cfg), f"stages=[{{kind: dpo, data: {{source: {pairs}}}}}]"]) == 2
    assert f"{pairs}:2" in capsys.readouterr().err and not (tmp_path / "run").exists()


def test_a_metrics_table_from_before_the_stage_column_still_reads(tmp_path):
    import sqlite3

    from ctxrel.rundir.files import RunDir

    run = tmp_path / "old"
    run.mkdir()
    con = sqlite3.connect(run / "metrics.sqlite")
    con.execute("CREATE TABLE metrics (checkpoint TEXT NOT NULL, step INTEGER, epoch REAL, tokens INTEGER, "
                "benchmark TEXT NOT NULL, subset TEXT NOT NULL, metric TEXT NOT NULL, value REAL, n INTEGER, "
                "ci_low REAL, ci_high REAL, created TEXT, PRIMARY KEY (checkpoint, benchmark, subset, metric))")
    con.execute("INSERT INTO metrics VALUES ('step-000000', 0, 0.0, 0, 'cf_capitals', 'all', 'cf_acc', 0.5, 10, "
                "0.2, 0.8, 'then')")
    con.commit()
    con.close()
    rows = RunDir(run).metrics()
    assert rows[0]["value"] == 0.5 and rows[0]["stage"] is None
    RunDir(run).write_metrics([dict(checkpoint="step-000008", step=8, benchmark="cf_capitals", subset="all",
                                    metric="cf_acc", value=0.25, n=10, stage="dpo")])
    assert [r["stage"] for r in RunDir(run).metrics()] == [None, "dpo"]
    assert (run / "metrics.csv").read_text().splitlines()[0].endswith(",created,stage")


def test_stages_key_rejects_what_is_not_a_list_of_stages():
    from ctxrel.config import settings as C
    from ctxrel.core.errors import CtxrelError

    for bad, words in [("stages=5", "expected a list of mappings"), ("stages=[3]", "config section stages[0]:"),
                       ("stages=[{kind: ppo}]", "stages[0].kind: 'ppo' is not one of sft, dpo")]:
        with pytest.raises(CtxrelError, match=__import__("re").escape(words)):
            C.load_config(C.StudyConfig, None, [bad])


@pytest.mark.parametrize("mode", ["full", "qk"])
def test_full_and_qk_modes_hand_over_and_start_dpo_at_log_2(tiny_model_dir, tmp_path, mode):
    cfg = write_config(tmp_path, tiny_model_dir)
    assert main(["train", str(cfg), f"train.mode={mode}", "train.lr=1e-3", "eval.every=100", "eval.early=[]",
                 "stages=[{kind: sft, train: {max_steps: 2}}, {kind: dpo, beta: 0.5, train: {lr: 1.0e-3}, "
                 "data: {source: pairs, max_length: 160, pairs: {n: 8}}}]"]) == 0
    from safetensors.torch import load_file

    run = tmp_path / "run"
    reference = load_file(str(run / "stages" / "1-dpo.reference.safetensors"))
    last_sft = load_file(str(run / "checkpoints" / "step-000002" / "trainable.safetensors"))
    assert reference.keys() == last_sft.keys() and all(torch.equal(reference[k], last_sft[k]) for k in reference)
    if mode == "qk":
        assert all(k.endswith(("q_proj.weight", "k_proj.weight")) for k in reference)
    log = {r["step"]: r for r in read_records(run / "train_log.jsonl")}
    assert log[3]["stage"] == "dpo" and log[3]["loss"] == pytest.approx(0.6931472, abs=1e-6)
    final = load_file(str(run / "checkpoints" / "step-000004" / "trainable.safetensors"))
    assert any(not torch.equal(final[k], last_sft[k]) for k in final)
