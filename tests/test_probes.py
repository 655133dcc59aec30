"""Probes (ctxrel.core.probe_math math, the HF backend's hooks) on a tiny random Llama: LoRA deltas against merged weights,
the logit lens against the model's own log-probabilities, per-head attention against `attention_to_spans`."""

from __future__ import annotations

import copy

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from ctxrel.core.probe_math import (crossing_layer, decided_layer, lora_delta, module_of, span_masks,  # noqa: E402
                                    weight_rows, weight_summary)

PROMPTS = ["Background: The capital city of France is Lyon. Question: What is the capital city of France?",
           "Background: Osaka. Question: What is the capital city of Japan? Answer:",
           "Background: Paris Lyon Berlin Munich Rome Milan Madrid. Question: Tokyo?"]


def _spans(prompt: str) -> list[tuple[int, int]]:
    q = prompt.rfind("Question")
    return [(0, max(q - 1, 1)), (q, len(prompt))]


def test_module_of_names_layers_and_projections():
    assert module_of("model.layers.11.mlp.down_proj.weight") == (11, "down")
    assert module_of("base_model.model.model.layers.0.self_attn.k_proj") == (0, "k")
    assert module_of("gpt_neox.layers.2.attention.query_key_value") == (2, "qkv")
    assert module_of("gpt_neox.layers.2.attention.dense") == (2, "o")
    assert module_of("lm_head") is None and module_of("model.embed_tokens") is None


def test_weight_summary_share_of_squared_change():
    z = torch.zeros(2, 2)
    rows = weight_rows([("m.layers.0.self_attn.q_proj", torch.full((2, 2), 1.0), torch.ones(2, 2)),
                        ("m.layers.0.mlp.up_proj", torch.full((2, 2), 2.0), torch.ones(2, 2)),
                        ("m.layers.1.self_attn.v_proj", z, torch.ones(2, 2)), ("lm_head", z, z)])
    assert [(r["layer"], r["module"]) for r in rows] == [(0, "q"), (0, "up"), (1, "v")]
    assert rows[0]["delta_norm"] == pytest.approx(2.0) and rows[1]["relative"] == pytest.approx(2.0)
    s = weight_summary(rows)
    assert s["weight_change_qk_share"] == pytest.approx(4 / (4 + 16))
    assert s["weight_change"] == pytest.approx(np.sqrt(20))
    assert s["weight_change_relative"] == pytest.approx(np.sqrt(20 / 12))
    assert np.isnan(weight_summary([dict(r, delta_norm=0.0) for r in rows])["weight_change_qk_share"])


def test_decided_and_crossing_layers():
    assert decided_layer([1.0, 2.0, 3.0]) == 0  # the context answer leads from the first layer
    assert decided_layer([1.0, -2.0, 0.5, 3.0]) == 2
    assert decided_layer([1.0, 2.0, -0.5]) == 2
    assert decided_layer([1.0, 0.0]) is None
    assert crossing_layer([-1.0, -1.0, 1.0]) == pytest.approx(1.5)
    assert crossing_layer([-3.0, 1.0, -1.0, 1.0]) == pytest.approx(2.5)  # the last crossing
    assert crossing_layer([1.0, 2.0]) is None


def test_span_masks_give_each_token_a_span_or_the_rest():
    m = span_masks([(0, 0), (0, 4), (4, 9), (9, 12)], [(0, 5), (9, 12)])
    assert m.tolist() == [[0, 1, 1, 0], [0, 0, 0, 1], [1, 0, 0, 0]]  # BOS (empty offsets) is rest


def test_lora_deltas_equal_the_dense_difference_of_merged_weights(tiny_model_dir):
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from ctxrel.backends.hf import HFBackend

    base = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    before = {n: p.detach().clone() for n, p in base.named_parameters()}
    peft = get_peft_model(base, LoraConfig(r=4, lora_alpha=12, target_modules="all-linear", lora_dropout=0.0))
    torch.manual_seed(1)
    with torch.no_grad():  # B starts at zero; give the adapter a real change
        for n, p in peft.named_parameters():
            if "lora_B" in n or "lora_A" in n:
                p.normal_(0, 0.2)
    lm = HFBackend(peft, AutoTokenizer.from_pretrained(tiny_model_dir), name="lora")
    deltas = {n: (d.clone(), w.clone()) for n, d, w in lm.weight_deltas()}
    merged = copy.deepcopy(peft).merge_and_unload()
    after = dict(merged.named_parameters())
    assert len(deltas) == 2 * 7  # 2 layers x q, k, v, o, gate, up, down
    for name, (d, w) in deltas.items():
        torch.testing.assert_close(w, before[name + ".weight"])
        torch.testing.assert_close(d, after[name + ".weight"] - before[name + ".weight"], atol=1e-5, rtol=1e-4)
    rows = weight_rows(lm.weight_deltas())
    assert all(r["delta_norm"] > 0 for r in rows) and {r["module"] for r in rows} == {
        "q", "k", "v", "o", "gate", "up", "down"}
    # the same factors through the pure function
    m = peft.base_model.model.model.layers[0].self_attn.q_proj
    torch.testing.assert_close(lora_delta(m.lora_A["default"].weight, m.lora_B["default"].weight, 3.0),
                               deltas["model.layers.0.self_attn.q_proj"][0])


def test_full_checkpoint_deltas_read_the_base_weights(tiny_model_dir):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from ctxrel.backends.hf import HFBackend
    from ctxrel.models.loading import base_weights

    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    with torch.no_grad():
        model.model.layers[1].self_attn.k_proj.weight.add_(0.5)
    lm = HFBackend(model, AutoTokenizer.from_pretrained(tiny_model_dir), name="qk")
    rows = weight_rows(lm.weight_deltas(base_weights(str(tiny_model_dir))))
    changed = [(r["layer"], r["module"]) for r in rows if r["delta_norm"] > 0]
    assert changed == [(1, "k")]
    k = model.model.layers[1].self_attn.k_proj.weight
    assert rows[[(r["layer"], r["module"]) for r in rows].index((1, "k"))]["delta_norm"] == pytest.approx(
        0.5 * k.numel() ** 0.5, rel=1e-5)
    assert weight_summary(rows)["weight_change_qk_share"] == 1.0


def test_lens_at_the_last_layer_equals_the_model_log_probabilities(tiny_lm):
    conts = [" Lyon", " Paris"]
    lens = tiny_lm.answer_lens([(p, conts) for p in PROMPTS])
    model = tiny_lm.model
    for p, lp in zip(PROMPTS, lens):
        assert lp.shape == (model.config.num_hidden_layers, 2)
        first = [tiny_lm.split_continuation(p, c)[1][0] for c in conts]
        head = tiny_lm.split_continuation(p, conts[0])[0]
        with torch.no_grad():  # one prompt alone: no padding
            logits = model(input_ids=torch.tensor([head])).logits[0, -1]
        own = torch.log_softmax(logits.float(), -1)[first]
        assert torch.allclose(lp[-1], own, atol=1e-4)
        assert not torch.allclose(lp[0], lp[-1], atol=1e-3)  # earlier layers read something else


def test_per_head_attention_averages_back_to_attention_to_spans(tiny_lm):
    spans = [_spans(p) for p in PROMPTS]
    kernel = tiny_lm.model.config._attn_implementation
    heads = tiny_lm.attention_by_head(PROMPTS, spans)
    assert tiny_lm.model.config._attn_implementation == kernel  # eager only for the heads pass
    today = tiny_lm.attention_to_spans(PROMPTS, spans, batch_size=2)
    cfg = tiny_lm.model.config
    for m, ref in zip(heads, today):
        assert m.shape == (cfg.num_hidden_layers, cfg.num_attention_heads, 3)
        torch.testing.assert_close(m.sum(-1), torch.ones(m.shape[:2]), atol=1e-5, rtol=0)
        assert m[..., 0].mean().item() == pytest.approx(ref[0], abs=1e-5)
        assert m[..., 1].mean().item() == pytest.approx(ref[1], abs=1e-5)


def test_unknown_probe_is_a_config_error():
    from ctxrel.config import settings as C
    from ctxrel.core.errors import CtxrelError

    with pytest.raises(CtxrelError, match="eval.probes: 'lense' is not one of weights, heads, lens"):
        C.load(None, ["eval.probes=[weights,lense]"])
    assert C.load(None, ["eval.probes=[lens,lens,heads]"]).eval.probes == ["lens", "heads"]
    assert C.load(None, []).eval.probes == []


@pytest.mark.integration
def test_study_with_probes_writes_rows_and_report_figures(tiny_model_dir, tmp_path, capsys):
    import pandas as pd

    from ctxrel.cli import main
    from ctxrel.rundir.files import RunDir
    from test_study import write_config

    cfg = write_config(tmp_path, tiny_model_dir, train=dict(max_steps=4), eval=dict(every=2, early=[]))
    assert main(["study", str(cfg), "eval.probes=[weights,heads,lens]"]) == 0
    out = capsys.readouterr().out
    assert "scoring" in out and "probes" in out and "lens" in out  # the time split, per checkpoint
    run = tmp_path / "run"
    for ckpt in ("step-000000", "step-000002", "step-000004"):
        w = pd.read_json(run / "evals" / ckpt / "weights.jsonl", lines=True)
        assert len(w) == 2 * 7 and set(w.module) == {"q", "k", "v", "o", "gate", "up", "down"}
        assert (w.delta_norm == 0).all() == (ckpt == "step-000000")  # LoRA's B starts at zero
        heads = pd.read_json(run / "evals" / ckpt / "cf_capitals.heads.jsonl", lines=True)
        assert len(heads) == 6 * 2 * 4 and heads.id.nunique() == 6  # items x layers x heads
        assert ((heads.context + heads.question + heads.rest - 1).abs() < 1e-4).all()
        lens = pd.read_json(run / "evals" / ckpt / "cf_capitals.lens.jsonl", lines=True)
        assert len(lens) == 6 * 2 and ((lens.log_odds - (lens.logp_context - lens.logp_parametric)).abs() < 1e-4).all()
    metrics = pd.DataFrame(RunDir(run).metrics())
    share = metrics[metrics.metric == "weight_change_qk_share"]
    assert list(share.step) == [2, 4] and ((share.value > 0) & (share.value < 1)).all()
    assert set(metrics[metrics.benchmark == "cf_capitals"].metric) >= {
        "head_attention_context_max", "lens_context_wins", "lens_decided_layer"}
    assert main(["report", str(run)]) == 0
    pngs = sorted(p.name for p in (run / "report").glob("*.png"))
    assert {"probe-weights.png", "cf_capitals-heads.png", "cf_capitals-lens.png"} <= set(pngs)
    import json

    summary = json.loads((run / "report" / "summary.json").read_text())["groups"][0]
    assert [p["step"] for p in summary["weights"]["qk_share"]] == [0, 2, 4]
    probes = summary["benchmarks"]["cf_capitals"]["probes"]
    assert [c["step"] for c in probes["lens"]["curves"]] == [0, 2, 4]
    assert probes["heads"]["to_step"] == 4 and len(probes["heads"]["changes"]) == 8
    # rerun: nothing is measured again
    before = (run / "evals" / "step-000004" / "cf_capitals.heads.jsonl").read_bytes()
    assert main(["eval", "--run", str(run), "eval.probes=[weights,heads,lens]"]) == 0
    assert (run / "evals" / "step-000004" / "cf_capitals.heads.jsonl").read_bytes() == before


def test_one_pass_serves_both_probes(tiny_lm):
    """heads + lens in one eager pass give what each gives alone (the lens to kernel rounding)."""
    spans = [_spans(p) for p in PROMPTS]
    conts = [[" Lyon", " Paris"]] * len(PROMPTS)
    heads, lens = tiny_lm.probe_pass(PROMPTS, spans=spans, continuations=conts)
    for a, b in zip(heads, tiny_lm.attention_by_head(PROMPTS, spans)):
        torch.testing.assert_close(a, b)
    for a, b in zip(lens, tiny_lm.answer_lens(list(zip(PROMPTS, conts)))):
        torch.testing.assert_close(a, b, atol=1e-4, rtol=0)
