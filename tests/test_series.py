"""`ctxrel eval --checkpoints`: a checkpoint series ctxrel did not train, scored into one trajectory run directory
that `ctxrel report` reads; weights fingerprinted, a duplicated checkpoint caught; hub revisions refused offline."""

from __future__ import annotations

import json
import shutil

import pytest

from ctxrel.cli import main
from ctxrel.core.errors import CtxrelError
from ctxrel.core.fingerprint import weights_fingerprint

EVAL = ["--benchmark", "cf_capitals", "--limit", "4", "--max-new-tokens", "4", "--eval.bootstrap", "50"]


@pytest.fixture(scope="module")
def series_dirs(tmp_path_factory):
    """Three tiny models with different weights (seeds 0, 1, 2), saved as safetensors."""
    from conftest import build_tiny_model

    root = tmp_path_factory.mktemp("series")
    return [build_tiny_model(root / f"ckpt-{k}", seed=k) for k in range(3)]


@pytest.mark.integration
def test_three_local_checkpoints_make_a_trajectory_report_reads(series_dirs, tmp_path, capsys):
    out = tmp_path / "traj"
    spec = ",".join(f"{d}@{s}" for d, s in zip(series_dirs, (0, 50, 100)))
    assert main(["eval", "--checkpoints", spec, "--out", str(out), *EVAL]) == 0
    text = capsys.readouterr().out
    assert "3 checkpoints, weights fingerprinted" in text
    assert sorted(p.name for p in (out / "evals").iterdir()) == ["step-000000", "step-000050", "step-000100"]
    meta = json.loads((out / "series.json").read_text())
    assert [c["step"] for c in meta["checkpoints"]] == [0, 50, 100]
    assert len({c["fingerprint"] for c in meta["checkpoints"]}) == 3
    assert meta["checkpoints"][1]["fingerprint"] == weights_fingerprint(series_dirs[1])[0]
    # the known subset comes from the first step, as a study's from step 0
    assert (out / "evals" / "step-000000" / "cf_capitals.nocontext.jsonl").exists()
    assert not (out / "evals" / "step-000050" / "cf_capitals.nocontext.jsonl").exists()
    pytest.importorskip("matplotlib")
    assert main(["report", str(out), "--bootstrap", "50"]) == 0
    report = capsys.readouterr().out
    assert "cf_capitals [all, 4 items]: start" in report and "verdict:" in report
    # rerunning resumes: nothing rescored, the same rows
    before = (out / "metrics.csv").read_text()
    assert main(["eval", "--checkpoints", spec, "--out", str(out), *EVAL]) == 0
    assert (out / "metrics.csv").read_text().count("\n") == before.count("\n")


@pytest.mark.integration
def test_a_duplicated_checkpoint_stops_the_run_or_is_skipped(series_dirs, tmp_path, capsys):
    copy = tmp_path / "final-again"
    shutil.copytree(series_dirs[2], copy)  # a "step" branch that serves the final weights
    spec = f"{series_dirs[0]}@0,{copy}@50,{series_dirs[2]}@100"
    out = tmp_path / "dup"
    assert main(["eval", "--checkpoints", spec, "--out", str(out), *EVAL]) == 2
    err = capsys.readouterr().err
    assert "step 100" in err and "step 50" in err and "same weights" in err and err.count("\n") == 1
    assert not out.exists()  # refused before anything is written
    assert main(["eval", "--checkpoints", spec, "--out", str(out), "--on-duplicate", "skip", *EVAL]) == 0
    assert "skipped (--on-duplicate skip)" in capsys.readouterr().err
    assert sorted(p.name for p in (out / "evals").iterdir()) == ["step-000000", "step-000050"]


def test_fingerprint_reads_the_tensors_not_the_file_layout(series_dirs, tmp_path):
    """Re-saved with another shard layout, the same tensors give the same fingerprint; one changed value does not."""
    from safetensors.torch import load_file, save_file

    tensors = load_file(str(series_dirs[0] / "model.safetensors"))
    names = sorted(tensors)
    split = tmp_path / "split"
    split.mkdir()
    save_file({k: tensors[k] for k in names[:3]}, str(split / "a.safetensors"))
    save_file({k: tensors[k] for k in names[3:]}, str(split / "b.safetensors"))
    assert weights_fingerprint(split) == weights_fingerprint(series_dirs[0])
    tensors[names[0]] = tensors[names[0]].clone()
    tensors[names[0]].view(-1)[0] += 1
    changed = tmp_path / "changed"
    changed.mkdir()
    save_file(tensors, str(changed / "model.safetensors"))
    assert weights_fingerprint(changed)[0] != weights_fingerprint(series_dirs[0])[0]
    cut = tmp_path / "cut"
    cut.mkdir()
    data = (series_dirs[0] / "model.safetensors").read_bytes()
    (cut / "model.safetensors").write_bytes(data[: len(data) // 2])
    with pytest.raises(CtxrelError, match="beyond the end of the file"):
        weights_fingerprint(cut)


@pytest.mark.parametrize("args, message", [
    (["--revisions", "step1000,step2000", "--model", "EleutherAI/pythia-70m"], "HF_HUB_OFFLINE"),
    (["--revisions", "main@5"], "needs a hub model id"),
    (["--checkpoints", "/nonexistent/ckpt@0"], "is not a directory"),
    (["--revisions", "final", "--model", "EleutherAI/pythia-70m"], "give it as final@STEP"),
    (["--revisions", "step1,step1", "--model", "EleutherAI/pythia-70m"], "step 1 is given twice"),
])
def test_bad_series_is_one_sentence(args, message, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert main(["eval", *args, "--out", str(tmp_path / "x")]) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1
    assert not (tmp_path / "x").exists()


@pytest.mark.integration
def test_adapters_on_one_base_are_a_series_and_their_duplicates_are_caught(series_dirs, tmp_path, capsys):
    """PEFT adapters on model.name: the fingerprint is the adapter's own tensors (files saved beside them do not
    count), so two steps holding the same adapter are caught."""
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    base = AutoModelForCausalLM.from_pretrained(series_dirs[0])
    model = get_peft_model(base, LoraConfig(r=2, target_modules=["q_proj"], init_lora_weights=False))
    a = tmp_path / "adapter-a"
    model.save_pretrained(a)
    b = tmp_path / "adapter-b"
    shutil.copytree(a, b)
    (b / "extra.safetensors").write_bytes(b"x" * 16)  # not even safetensors: never read
    out = tmp_path / "adapters"
    assert main(["eval", "--model", str(series_dirs[0]), "--checkpoints", f"{a}@10,{b}@20", "--out", str(out),
                 *EVAL]) == 2
    err = capsys.readouterr().err
    assert "step 20" in err and "step 10" in err and "same weights" in err


@pytest.mark.integration
def test_the_python_api_scores_a_series_too(series_dirs, tmp_path):
    import ctxrel

    cfg = ctxrel.make_config("eval", overrides=[f"out={tmp_path / 'api'}", "eval.limit=3", "eval.max_new_tokens=3",
                                                "eval.bootstrap=50"])
    cfg.model.name = str(series_dirs[0])
    cfg.series.checkpoints = [f"{series_dirs[0]}@0", f"{series_dirs[1]}@5"]
    runs = ctxrel.run_eval(cfg)
    assert sorted(runs.items.step.unique()) == [0, 5] and len(runs.items) == 6
