"""`ctxrel study` / `train` / `eval --run` end to end on a tiny random Llama: run directory, resume after kill -9,
2-process data parallelism, and a slice of real Alpaca."""

from __future__ import annotations

import importlib.util
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

pytest.importorskip("torch")
pytestmark = pytest.mark.integration

from ctxrel.cli import main  # noqa: E402
from ctxrel.rundir.files import RunDir, read_records  # noqa: E402

ALPACA = [{"instruction": f"Name city number {i}.", "input": "Paris Lyon" if i % 3 else "",
           "output": f"City {i} is Lyon."} for i in range(32)]


def write_config(tmp_path: Path, model_dir: Path, **sections) -> Path:
    data = tmp_path / "alpaca.json"
    data.write_text(json.dumps(ALPACA))
    cfg = dict(model=dict(name=str(model_dir), batch_size=8, device="cpu"),
               data=dict(source=str(data), max_length=64),
               train=dict(mode="lora", lora=dict(rank=4, alpha=8, dropout=0.1), lr=1e-2, epochs=1, batch_size=4,
                          tensorboard=False),
               eval=dict(benchmarks=["cf_capitals"], limit=6, max_new_tokens=6, every=4, early=[1]),
               out=str(tmp_path / "run"))
    for k, v in sections.items():
        cfg[k].update(v) if isinstance(v, dict) else cfg.__setitem__(k, v)
    path = tmp_path / "study.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def outputs(run: Path) -> dict[str, list[str]]:
    """Every checkpoint's generations, in item order."""
    return {d.name: [r["output"] for r in sorted(read_records(d / "cf_capitals.jsonl"), key=lambda r: r["id"])]
            for d in sorted((run / "evals").iterdir())}


def losses(run: Path) -> dict[int, float]:
    return {r["step"]: r["loss"] for r in read_records(run / "train_log.jsonl")}  # a rerun's repeat wins


def test_study_writes_the_run_directory_and_eval_run_rescores(tiny_model_dir, tmp_path, capsys):
    cfg = write_config(tmp_path, tiny_model_dir)
    assert main(["study", str(cfg)]) == 0
    out = capsys.readouterr().out
    run = tmp_path / "run"
    assert "cf_capitals" in out and "evaluation / training" in out
    verdicts = [line for line in out.splitlines() if line.startswith("verdict cf_capitals [all")]
    assert len(verdicts) == 1 and "peak" in verdicts[0] and "drop" in verdicts[0]  # what `ctxrel report` says
    assert (run / "report" / "trajectory.png").read_bytes()[:4] == b"\x89PNG"
    assert sorted(d.name for d in (run / "checkpoints").iterdir()) == [
        "step-000000", "step-000001", "step-000004", "step-000008"]
    assert (run / "checkpoints" / "step-000008" / "state" / "optimizer.safetensors").exists()
    assert not (run / "checkpoints" / "step-000004" / "state").exists()  # resume state only in the latest
    assert not list(run.rglob("*.bin")) and not list(run.rglob("*.pt"))  # no pickle anywhere
    rows = [r for r in RunDir(run).metrics() if r["metric"] == "cf_acc" and r["subset"] == "all"]
    assert [r["step"] for r in rows] == [0, 1, 4, 8]
    assert [r["epoch"] for r in rows] == [0.0, 0.125, 0.5, 1.0]
    assert rows[0]["tokens"] is None or rows[0]["tokens"] == 0
    assert rows[-1]["tokens"] > rows[1]["tokens"] > 0
    assert len(read_records(run / "train_log.jsonl")) == 8
    # the known subset comes from step 0 for every checkpoint
    assert not (run / "evals" / "step-000004" / "cf_capitals.nocontext.jsonl").exists()
    assert yaml.safe_load((run / "config.yaml").read_text())["train"]["lr"] == 0.01

    # score the saved checkpoints after the fact on another benchmark; loading them gives the live outputs
    bench = tmp_path / "mine.jsonl"
    bench.write_text("".join(json.dumps(dict(context=f"The capital of X{i} is Lyon.", question=f"Capital of X{i}?",
                                             context_answer="Lyon", parametric_answer="Paris")) + "\n"
                             for i in range(5)))
    assert main(["eval", "--run", str(run), "--benchmark", f"mine={bench}"]) == 0
    mine = [r for r in RunDir(run).metrics() if r["benchmark"] == "mine" and r["metric"] == "cf_acc"
            and r["subset"] == "all"]
    assert [r["step"] for r in mine] == [0, 1, 4, 8] and mine[-1]["epoch"] == 1.0
    live = outputs(run)
    assert main(["eval", "--run", str(run), "eval.limit=6", "out=ignored"]) == 0  # cf_capitals: all done already
    assert outputs(run) == live
    assert main(["eval", "--run", str(run), "--model", "x"]) == 2
    assert "cannot be combined" in capsys.readouterr().err


def test_rerun_with_other_training_settings_is_refused(tiny_model_dir, tmp_path, capsys):
    cfg = write_config(tmp_path, tiny_model_dir, train=dict(max_steps=2, tensorboard=True),
                       eval=dict(every=2, early=[]))
    assert main(["train", str(cfg)]) == 0
    if importlib.util.find_spec("tensorboard"):
        assert list((tmp_path / "run" / "tensorboard").glob("events.out.tfevents.*"))
    assert main(["train", str(cfg), "train.lr=0.5"]) == 2
    err = capsys.readouterr().err
    assert "train.lr: 0.01 -> 0.5" in err
    # a run started before a key existed (its config.yaml lacks it) resumes when the key keeps its default ...
    saved = yaml.safe_load((tmp_path / "run" / "config.yaml").read_text())
    del saved["train"]["group_by_length"]
    (tmp_path / "run" / "config.yaml").write_text(yaml.safe_dump(saved))
    assert main(["train", str(cfg)]) == 0
    # ... and is refused when it does not
    assert main(["train", str(cfg), "train.group_by_length=true"]) == 2
    assert "train.group_by_length: False -> True" in capsys.readouterr().err
    assert main(["study", str(tmp_path / "nope.yaml")]) == 2
    assert "not a shipped preset" in capsys.readouterr().err


def test_kill_9_then_resume_equals_uninterrupted(tiny_model_dir, tmp_path):
    cfg = write_config(tmp_path, tiny_model_dir, train=dict(epochs=40), eval=dict(every=40, early=[]))
    cmd = [sys.executable, "-m", "ctxrel", "train", str(cfg)]
    run = tmp_path / "run"
    proc = subprocess.Popen(cmd + [f"out={run}"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    log = run / "train_log.jsonl"
    deadline = time.time() + 300
    while time.time() < deadline and not (log.exists() and len(read_records(log)) >= 100):
        time.sleep(0.02)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    done = len(read_records(log))
    assert 100 <= done < 320, "the kill should land mid-run"
    assert not (run / "train_summary.json").exists()
    subprocess.run(cmd + [f"out={run}"], check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    ref = tmp_path / "ref"
    subprocess.run(cmd + [f"out={ref}"], check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    assert losses(run) == losses(ref) and len(losses(ref)) == 320
    assert outputs(run) == outputs(ref) and len(outputs(ref)) == 9
    from safetensors.torch import load_file

    a = load_file(str(run / "checkpoints" / "step-000320" / "adapter_model.safetensors"))
    b = load_file(str(ref / "checkpoints" / "step-000320" / "adapter_model.safetensors"))
    assert a.keys() == b.keys() and all((a[k] == b[k]).all() for k in a)


def test_two_processes_match_one(tiny_model_dir, tmp_path):
    """batch 4 on 1 process = batch 2 x 2 processes (gloo): same examples per step, same mean loss."""
    cfg = write_config(tmp_path, tiny_model_dir, train=dict(epochs=2, lora=dict(rank=4, alpha=8, dropout=0.0)))
    one, two = tmp_path / "one", tmp_path / "two"
    env = dict(os.environ, OMP_NUM_THREADS="1")
    subprocess.run([sys.executable, "-m", "ctxrel", "train", str(cfg), f"out={one}"], check=True, env=env,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    launch = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
              "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no",
              "--main_process_port", str(29500 + os.getpid() % 1000), "-m", "ctxrel", "train", str(cfg),
              f"out={two}"]
    r = subprocess.run(launch, env=env, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    assert json.loads((two / "train_summary.json").read_text())["processes"] == 2
    l1, l2 = losses(one), losses(two)
    assert len(l1) == 16 and l1.keys() == l2.keys()
    for s in l1:
        assert l2[s] == pytest.approx(l1[s], rel=1e-5), f"step {s}"
    from safetensors.torch import load_file
    import torch

    a = load_file(str(one / "checkpoints" / "step-000016" / "adapter_model.safetensors"))
    b = load_file(str(two / "checkpoints" / "step-000016" / "adapter_model.safetensors"))
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=1e-3, atol=1e-5)


def test_alpaca_slice_trains_and_scores(tiny_model_dir, tmp_path, test_data, capsys):
    src = test_data / "alpaca" / "alpaca_data.json.gz"
    standard = [f"mmlu={test_data / 'mmlu'}", f"arc_challenge={test_data / 'arc_challenge'}"]
    cfg = write_config(tmp_path, tiny_model_dir, data=dict(source=str(src), limit=40, max_length=96),
                       train=dict(max_steps=6), eval=dict(every=3, early=[], standard=standard, standard_limit=3,
                                                          attention=True))
    assert main(["study", str(cfg)]) == 0
    run = tmp_path / "run"
    summary = json.loads((run / "train_summary.json").read_text())
    assert summary["data"]["examples"] == 40 and summary["total_steps"] == 6
    assert summary["data"]["truncated"] > 0  # real Alpaca has long examples; they are cut and counted
    rows = [r for r in RunDir(run).metrics() if r["metric"] == "cf_acc" and r["subset"] == "all"]
    assert [r["step"] for r in rows] == [0, 3, 6]
    # ID accuracy at every checkpoint, on the same standard items each time (paired differences)
    idacc = [r for r in RunDir(run).metrics() if r["metric"] == "id_accuracy"]
    assert [r["step"] for r in idacc] == [0, 3, 6] and all(r["n"] == 2 for r in idacc)
    ids = {d.name: [r["id"] for r in read_records(d / "mmlu.jsonl")] for d in sorted((run / "evals").iterdir())}
    assert len(ids) == 3 and len(set(map(tuple, ids.values()))) == 1 and len(ids["step-000000"]) == 3
    att = [r for r in RunDir(run).metrics() if r["metric"] == "attention_context" and r["subset"] == "all"]
    assert [r["step"] for r in att] == [0, 3, 6] and all(0 < r["value"] < 1 for r in att)


def test_shipped_presets_load():
    from ctxrel.config.shipped import names as preset_names
    from ctxrel.config import load_study_config

    names = preset_names("study")  # synth and theory presets are those verbs', not studies'
    alpaca = load_study_config("paper/llama2-7b-alpaca-lora")
    assert alpaca.eval.standard == ["mmlu", "arc_challenge", "squad"] and alpaca.eval.standard_limit == 200
    assert "gsm8k" in load_study_config("paper/llama2-7b-tulu-lora").eval.standard
    assert "quickstart" in names and "paper/llama2-7b-alpaca-lora" in names and len(names) >= 8
    for n in names:
        cfg = load_study_config(n)
        assert cfg.out.startswith("runs/")
    q = load_study_config("quickstart", ["train.lr=1e-5"])
    assert q.train.lr == 1e-5 and q.data.source == "mixture" and q.model.name == "smollm2-135m-instruct"


def test_bad_mixture_is_refused_before_the_run_directory_is_touched(tmp_path, capsys):
    from ctxrel.cli import main as cli_main

    out = tmp_path / "run"
    assert cli_main(["study", "quickstart", "data.mixture.ci=0.5", f"out={out}"]) == 2
    assert "sum to 1" in capsys.readouterr().err and not out.exists()
