"""The synthetic lab: world generation, the tiny model, pretraining, and the run directory of a study."""

from __future__ import annotations

import json
import random

import pytest

torch = pytest.importorskip("torch")

from ctxrel.cli import main  # noqa: E402
from ctxrel.core.errors import CtxrelError  # noqa: E402
from ctxrel.rundir.files import RunDir, read_records  # noqa: E402
from ctxrel.synth import mixture as X  # noqa: E402
from ctxrel.synth import world as W  # noqa: E402
from ctxrel.synth.lab import SynthConfig, batch_indices  # noqa: E402
from ctxrel.synth.model import ModelConfig, TinyGPT, answer_logprob, batch, qk_parameters  # noqa: E402
from ctxrel.synth.lab_presets import preset_names, resolve  # noqa: E402

TINY = ["world.n_known=12", "world.n_conflict=6", "world.n_unknown=12", "world.n_id_unknown=6",
        "world.n_copy=12", "world.n_values=16", "model.n_layer=1", "model.d_model=32", "model.d_mlp=128",
        "pretrain.steps=30", "pretrain.copy_docs=20", "finetune.n_examples=60", "finetune.steps=12",
        "eval.every=6", "eval.early=[2]", "eval.bootstrap=50", "eval.probe=8", "threads=1"]


def tiny_world(seed=0, **kw):
    cfg = W.WorldConfig(**{**dict(n_known=10, n_conflict=5, n_unknown=10, n_id_unknown=5, n_copy=10,
                                  n_values=12), **kw})
    return W.make_world(cfg, seed)


# -- world and mixture ---------------------------------------------------------------------------------------

def test_world_is_deterministic_per_seed_and_pools_disjoint():
    a, b, c = tiny_world(0), tiny_world(0), tiny_world(1)
    assert a.facts == b.facts and a.pools == b.pools
    assert a.facts != c.facts
    pools = [set(v) for v in a.pools.values()]
    assert sum(len(p) for p in pools) == len(set().union(*pools))  # disjoint


def test_conflict_facts_never_in_finetuning_and_c_subjects_never_pretrained():
    world = tiny_world(0, distractors=2)
    shares = dict(c=0.3, cs=0.3, s=0.2, irrelevant=0.1, cf_aug=0.1)
    exs = X.ift_mixture(world, shares, 100, False, seed=0)
    held = set(world.pools["conflict"])
    assert not any(held & set(e.ids) for e in exs)  # not as subject, not as distractor
    pre = W.pretraining_corpus(world, 20, random.Random(0))
    pre_tokens = {t for e in pre for t in e.ids}
    assert not pre_tokens & set(world.pools["unknown"]) and not pre_tokens & set(world.pools["id_unknown"])
    c = [e for e in exs if e.kind == "C"]
    assert c and all(e.ids[e.ids.index(W.Q) + 1] in world.pools["unknown"] for e in c)
    # the answer of a C example is in its context; of C+S it is also the memorised one
    for e in exs:
        ans = e.ids[-1 - world.cfg.answer_len:-1]
        s, r = e.ids[e.ids.index(W.Q) + 1:e.ids.index(W.Q) + 3]
        if e.kind in ("C+S", "S", "C+S:irrelevant", "C"):
            assert tuple(ans) == world.facts[(s, r)]
        if e.kind == "cf_aug":
            assert tuple(ans) != world.facts[(s, r)]


def test_conflict_items_contradict_memory_and_drop_cs_removes_memory_solved():
    world = tiny_world(0, answer_len=2)
    items = X.conflict_items(world, 0)
    assert len(items) == 5 * world.cfg.n_relations
    for it in items:
        assert it.context_answer[0] != it.parametric_answer[0]
        assert it.parametric_answer == world.facts[(it.subject, it.relation)]
        ctx = it.prompt[:it.prompt.index(W.Q)]
        assert W.statement(it.subject, it.relation, it.context_answer) == \
            ctx[ctx.index(it.subject):ctx.index(it.subject) + 3 + 2 + 1]
    shares = dict(c=0.4, cs=0.3, s=0.2, irrelevant=0.1, cf_aug=0.0)
    kinds = {e.kind for e in X.ift_mixture(world, shares, 50, True, 0)}
    assert kinds == {"C", "S"}


def test_batch_order_is_a_pure_function_of_the_step():
    n, b = 10, 4
    seen = [i for s in range(5) for i in batch_indices(s, b, n, seed=3)]
    assert sorted(seen[:10]) == list(range(10)) and sorted(seen[10:20]) == list(range(10))
    assert batch_indices(3, b, n, 3) == seen[12:16]


# -- model ---------------------------------------------------------------------------------------------------

def test_model_shapes_attention_and_qk_parameters():
    torch.manual_seed(0)
    m = TinyGPT(ModelConfig(n_layer=2, n_head=2, d_model=16, d_mlp=32, max_len=12), vocab_size=20)
    ids, _ = batch([[1, 5, 6, 7], [1, 8, 9]])
    logits, atts = m(ids, return_attention=True)
    assert logits.shape == (2, 4, 20) and len(atts) == 2 and atts[0].shape == (2, 2, 4, 4)
    assert torch.allclose(atts[1].sum(-1), torch.ones(2, 2, 4))
    assert atts[0][0, :, 0, 1:].abs().max() == 0  # causal
    assert qk_parameters(m) == [f"blocks.{i}.attn.{p}.{w}" for i in range(2) for p in "qk" for w in
                                ("weight", "bias")]
    lp = answer_logprob(m, [[1, 5], [1, 8, 9]], [(6, 7), (3,)])
    full = m(torch.tensor([[1, 5, 6, 7]]))[0].log_softmax(-1)
    assert lp[0].item() == pytest.approx((full[1, 6] + full[2, 7]).item(), abs=1e-5)


def test_pretraining_reaches_recall_on_a_tiny_world():
    from ctxrel.synth.study import pretrain

    cfg = resolve(None, TINY + ["pretrain.steps=150", "pretrain.lr=5e-3", "pretrain.copy_docs=0",
                                "model.d_model=64", "model.d_mlp=256", "world.n_known=6", "world.n_conflict=4"])
    torch.set_num_threads(1)
    world = W.make_world(cfg.world, cfg.seed)
    _, stats = pretrain(cfg, world, log=lambda m: None)
    assert stats["recall"] >= 0.9, stats


# -- the study's run directory ------------------------------------------------------------------------------

def test_study_writes_the_run_directory_and_rerun_is_idempotent(tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["synth", "--out", str(out), *TINY]) == 0
    text = capsys.readouterr().out
    assert "synth_conflict" in text and "peak cf-acc" in text
    assert (out / "config.yaml").exists() and (out / "report" / "trajectory.png").stat().st_size > 1000
    rows = RunDir(out).metrics()
    steps = sorted({r["step"] for r in rows if r["benchmark"] == "synth_conflict"})
    assert steps == [0, 2, 6, 12]
    metrics = {(r["subset"], r["metric"]) for r in rows if r["benchmark"] == "synth_conflict"}
    for m in ("cf_acc", "par_acc", "share_context", "m_c", "attention_context", "attention_subject"):
        assert ("all", m) in metrics and ("known", m) in metrics
    assert {r["benchmark"] for r in rows} >= {"id_accuracy", "synth_id_context", "synth_id_recall", "synth_train",
                                              "synth_pretrain"}
    cf = [r for r in rows if r["metric"] == "cf_acc" and r["subset"] == "all"]
    assert all(r["ci_low"] <= r["value"] <= r["ci_high"] and r["n"] == 24 for r in cf)
    assert [r["epoch"] for r in sorted(cf, key=lambda r: r["step"])] == pytest.approx([0, 64 / 60, 3.2, 6.4])
    recs = read_records(out / "evals" / "step-000012" / "synth_conflict.jsonl")
    assert len(recs) == 24
    r = recs[0]
    for k in ("id", "output", "outcome", "contains_context", "contains_parametric", "known", "m_c",
              "logp_context", "logp_parametric", "attention_context", "attention_subject", "prompt"):
        assert k in r
    assert 0 <= r["attention_context"] + r["attention_subject"] <= 1 + 1e-6
    summary = json.loads((out / "summary.json").read_text())
    assert summary["cf_acc"]["12"] == pytest.approx(cf[-1]["value"])

    before = {(r["checkpoint"], r["benchmark"], r["subset"], r["metric"]): r["value"] for r in rows}
    assert main(["synth", "--out", str(out), *TINY]) == 0
    assert "reused" in capsys.readouterr().out
    after = {(r["checkpoint"], r["benchmark"], r["subset"], r["metric"]): r["value"] for r in RunDir(out).metrics()}
    assert after == before
    assert len(read_records(out / "evals" / "step-000012" / "synth_conflict.jsonl")) == 24


def test_resume_from_a_saved_step_matches_an_uninterrupted_run(tmp_path):
    from ctxrel.synth.study import run_synth

    full = run_synth(resolve(None, TINY), tmp_path / "full", log=lambda m: None)
    part = tmp_path / "part"
    run_synth(resolve(None, TINY + ["finetune.steps=6"]), part / "tmp", log=lambda m: None)
    # a run stopped after step 6: its directory holds the state of step 6 and rows up to 6
    import shutil
    shutil.copytree(tmp_path / "full", part / "resumed")
    shutil.rmtree(part / "resumed" / "checkpoints" / "step-000012")
    shutil.copytree(part / "tmp" / "checkpoints" / "step-000006", part / "resumed" / "checkpoints" / "step-000006")
    again = run_synth(resolve(None, TINY), part / "resumed", log=lambda m: None)
    assert again["cf_acc"] == full["cf_acc"] and again["m_c"] == pytest.approx(full["m_c"])


def test_a_different_config_in_the_same_directory_is_refused(tmp_path):
    from ctxrel.synth.study import run_synth

    run_synth(resolve(None, TINY), tmp_path, log=lambda m: None)
    with pytest.raises(CtxrelError, match="made with another config"):
        run_synth(resolve(None, TINY + ["finetune.lr=1e-2"]), tmp_path, log=lambda m: None)


# -- configuration errors ----------------------------------------------------------------------------------

def test_bad_preset_key_and_values_are_user_errors(capsys):
    with pytest.raises(CtxrelError, match="unknown synth preset 'nope'; choose one of .*quick"):
        resolve("nope")
    with pytest.raises(CtxrelError, match="valid keys: .*finetune.drop_cs"):
        resolve("quick", ["finetune.dropcs=true"])
    with pytest.raises(CtxrelError, match="must be 1"):
        resolve("quick", ["finetune.c=0.9"])
    with pytest.raises(CtxrelError, match="full, qk"):
        resolve("quick", ["finetune.train=lora"])
    assert main(["synth", "--preset", "nope"]) == 2
    assert "choose one of" in capsys.readouterr().err


def test_an_empty_mixture_is_refused_before_anything_is_written(tmp_path):
    from ctxrel.synth.study import run_synth

    cfg = resolve(None, TINY + ["finetune.c=0", "finetune.s=0", "finetune.cs=1", "finetune.drop_cs=true"])
    with pytest.raises(CtxrelError, match="mixture is empty"):
        run_synth(cfg, tmp_path / "run", log=lambda m: None)
    assert not (tmp_path / "run").exists()


def test_every_shipped_preset_resolves():
    assert "quick" in preset_names()
    for name in preset_names():
        assert isinstance(resolve(name), SynthConfig)


def test_qk_finetuning_changes_only_query_and_key_weights(tmp_path):
    from safetensors.torch import load_file

    from ctxrel.synth.study import run_synth

    run_synth(resolve(None, TINY + ["finetune.train=qk", "finetune.c_fresh=true"]), tmp_path, log=lambda m: None)
    before = load_file(str(tmp_path / "checkpoints" / "pretrained" / "model.safetensors"))
    after = load_file(str(tmp_path / "checkpoints" / "step-000012" / "model.safetensors"))
    for name, w in before.items():
        changed = not torch.equal(w, after[name])
        assert changed == (".attn.q." in name or ".attn.k." in name), name
