"""Sharded training (FSDP2 through accelerate) on 2 CPU processes over gloo, against 1 process: the same losses,
the same gathered checkpoints and optimizer moments, the same scores; a resumed sharded run equals an
uninterrupted one; what is not supported is refused before any model loads."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("torch")

from ctxrel.config import settings as C  # noqa: E402
from ctxrel.core.errors import CtxrelError  # noqa: E402
from ctxrel.rundir.files import read_records  # noqa: E402
from ctxrel.train.loop import check_launch  # noqa: E402

from test_study import losses, outputs, write_config  # noqa: E402

# the accelerate config file a user passes to `accelerate launch --config_file` (docs/scale-out.md, "FSDP2")
FSDP2_CONFIG = """\
distributed_type: FSDP
num_machines: 1
num_processes: 2
mixed_precision: 'no'
fsdp_config:
  fsdp_version: 2
  fsdp_auto_wrap_policy: TRANSFORMER_BASED_WRAP
  fsdp_reshard_after_forward: true
"""

FSDP_ENV = {"ACCELERATE_USE_FSDP": "true", "FSDP_VERSION": "2"}


def launch(tmp_path: Path, *args: str, port_offset: int = 0, ok: bool = True) -> subprocess.CompletedProcess:
    """`accelerate launch --config_file fsdp2.yaml ARGS` with 2 CPU processes."""
    conf = tmp_path / "fsdp2.yaml"
    conf.write_text(FSDP2_CONFIG)
    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--config_file", str(conf),
           "--main_process_port", str(29600 + (os.getpid() + port_offset) % 900), *args]
    r = subprocess.run(cmd, env=dict(os.environ, OMP_NUM_THREADS="1"), capture_output=True, text=True, timeout=600)
    if ok:
        assert r.returncode == 0, r.stderr[-3000:]
    return r


def tensors(path: Path) -> dict:
    from safetensors.torch import load_file

    return load_file(str(path))


# -- what is refused (no process is launched) ----------------------------------------------------------------------

@pytest.mark.parametrize("env, cfg_over, words", [
    ({"ACCELERATE_USE_DEEPSPEED": "true"}, {}, "DeepSpeed"),
    ({**FSDP_ENV, "FSDP_VERSION": "1"}, {}, "fsdp_version 1"),
    (FSDP_ENV, {"train.mode": "lora"}, "LoRA under FSDP"),
    (FSDP_ENV, {"train.mode": "qk", "train.qk_lora": "true"}, "LoRA under FSDP"),
    ({**FSDP_ENV, "FSDP_ACTIVATION_CHECKPOINTING": "true"}, {}, "fsdp_activation_checkpointing"),
    ({**FSDP_ENV, "FSDP_OFFLOAD_PARAMS": "true"}, {}, "fsdp_offload_params"),
    (FSDP_ENV, {"train.keep_weights": "false"}, "train.keep_weights=false"),
])
def test_unsupported_launches_are_refused_with_one_sentence(env, cfg_over, words):
    cfg = C.load_config(C.StudyConfig, None, [f"{k}={v}" for k, v in {"train.mode": "full", **cfg_over}.items()])
    with pytest.raises(CtxrelError, match=words):
        check_launch(cfg, env)


def test_supported_launches_pass():
    for mode in ("full", "qk"):
        check_launch(C.load_config(C.StudyConfig, None, [f"train.mode={mode}"]), FSDP_ENV)
    check_launch(C.load_config(C.StudyConfig, None, []), {})  # no launcher: DDP or one process, any mode


def test_an_fsdp1_launch_fails_before_the_run_directory_is_touched(tiny_model_dir, tmp_path, monkeypatch, capsys):
    from ctxrel.cli import main

    cfg = write_config(tmp_path, tiny_model_dir, train=dict(mode="full"))
    monkeypatch.setenv("ACCELERATE_USE_FSDP", "true")
    monkeypatch.setenv("FSDP_VERSION", "1")
    assert main(["train", str(cfg)]) == 2
    err = capsys.readouterr().err
    assert "only FSDP2" in err and "Traceback" not in err and not (tmp_path / "run").exists()


# -- 2 sharded processes against 1 ---------------------------------------------------------------------------------

@pytest.mark.integration
@pytest.mark.parametrize("mode, micro", [("full", 1), ("qk", None)])
def test_two_sharded_processes_match_one(tiny_model_dir, tmp_path, mode, micro):
    """batch 4 on 1 process = batch 2 x 2 FSDP2 processes (gloo): same mean loss per step; the gathered weights
    and optimizer moments equal the single process's; the checkpoints, scored after training, give the same
    generations as the single process's in-loop scoring. micro=1 accumulates 2 micro-batches (FSDP's no_sync)."""
    cfg = write_config(tmp_path, tiny_model_dir, train=dict(mode=mode, lr=1e-3, epochs=1, micro_batch_size=micro))
    one, two = tmp_path / "one", tmp_path / "two"
    env = dict(os.environ, OMP_NUM_THREADS="1")
    subprocess.run([sys.executable, "-m", "ctxrel", "train", str(cfg), f"out={one}"], check=True, env=env,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    r = launch(tmp_path, "-m", "ctxrel", "train", str(cfg), f"out={two}")
    assert "FSDP over 2 process(es)" in r.stdout + r.stderr
    summary = json.loads((two / "train_summary.json").read_text())
    assert summary["processes"] == 2 and summary["sharded"] is True
    l1, l2 = losses(one), losses(two)
    assert len(l1) == 8 and l1.keys() == l2.keys()
    for s in l1:
        assert l2[s] == pytest.approx(l1[s], rel=1e-5), f"step {s}"
    import torch

    last = one / "checkpoints" / "step-000008"
    a, b = tensors(last / "trainable.safetensors"), tensors(two / "checkpoints" / "step-000008" /
                                                           "trainable.safetensors")
    assert a.keys() == b.keys() and len(a) == (21 if mode == "full" else 4)  # qk: q and k of 2 layers
    for k in a:
        torch.testing.assert_close(b[k], a[k], rtol=1e-3, atol=1e-5)
    ma, mb = (tensors(d / "checkpoints" / "step-000008" / "state" / "optimizer.safetensors") for d in (one, two))
    assert ma.keys() == mb.keys() and all(ma[k].shape == mb[k].shape for k in ma)  # whole, not one shard
    for k in ma:
        torch.testing.assert_close(mb[k], ma[k], rtol=1e-3, atol=1e-6)
    assert outputs(two) == outputs(one) and len(outputs(one)) == 4  # steps 0, 1, 4, 8


@pytest.mark.integration
def test_a_resumed_sharded_run_equals_an_uninterrupted_one(tiny_model_dir, tmp_path):
    """2 FSDP2 processes: 8 steps straight, against 4 steps then a restart that resumes at step 4 (the gathered
    optimizer moments are sharded again): bit-identical losses, weights and moments. The same step-4 checkpoint
    resumed by one plain process gives the same losses (to rounding): the files do not depend on the sharding."""
    driver = tmp_path / "drive.py"  # the loop itself: the CLI refuses a changed train.max_steps on resume
    driver.write_text("import sys\nfrom ctxrel.config import load_study_config\n"
                      "from ctxrel.train.loop import train\n"
                      "train(load_study_config(sys.argv[1], sys.argv[2:]), log=lambda *a, **k: None)\n")
    cfg = write_config(tmp_path, tiny_model_dir, train=dict(mode="full", lr=1e-3, epochs=1, schedule="constant"),
                       eval=dict(every=4, early=[]))
    ref, part = tmp_path / "ref", tmp_path / "part"
    launch(tmp_path, str(driver), str(cfg), f"out={ref}", "train.max_steps=8")
    launch(tmp_path, str(driver), str(cfg), f"out={part}", "train.max_steps=4", port_offset=1)
    assert len(read_records(part / "train_log.jsonl")) == 4
    single = tmp_path / "single"  # the same checkpoint resumed by one process, without FSDP
    shutil.copytree(part, single)
    launch(tmp_path, str(driver), str(cfg), f"out={part}", "train.max_steps=8", port_offset=2)
    assert losses(part) == losses(ref) and len(losses(ref)) == 8
    import torch

    for f in ("trainable.safetensors", "state/optimizer.safetensors"):
        a, b = (tensors(d / "checkpoints" / "step-000008" / f) for d in (part, ref))
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a), f
    subprocess.run([sys.executable, str(driver), str(cfg), f"out={single}", "train.max_steps=8"], check=True,
                   env=dict(os.environ, OMP_NUM_THREADS="1"), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    l1, l2 = losses(single), losses(ref)
    assert l1.keys() == l2.keys() and all(l1[s] == pytest.approx(l2[s], rel=1e-5) for s in l2)


@pytest.mark.integration
def test_qk_on_a_fused_qkv_layer_is_refused_under_fsdp(tiny_model_dir, tmp_path):
    """GPT-NeoX's query_key_value trains only its q and k rows through a gradient hook that sharding would drop."""
    import torch
    from transformers import AutoTokenizer, GPTNeoXConfig, GPTNeoXForCausalLM

    tok = AutoTokenizer.from_pretrained(str(tiny_model_dir))
    torch.manual_seed(0)
    neox = GPTNeoXForCausalLM(GPTNeoXConfig(vocab_size=len(tok), hidden_size=32, intermediate_size=64,
                                            num_hidden_layers=2, num_attention_heads=4,
                                            max_position_embeddings=256))
    neox.save_pretrained(tmp_path / "neox", safe_serialization=True)
    tok.save_pretrained(tmp_path / "neox")
    cfg = write_config(tmp_path, tmp_path / "neox", train=dict(mode="qk"))
    r = launch(tmp_path, "-m", "ctxrel", "train", str(cfg), ok=False)
    assert r.returncode != 0 and "fused q|k|v layer (GPT-NeoX) is not supported under FSDP" in r.stderr
    assert not list((tmp_path / "run").glob("checkpoints/step-*"))
