"""Every shipped study preset (src/ctxrel/configs/quickstart.yaml, paper/*.yaml, ...) resolves, and its training and
evaluation plan builds on a tiny stand-in model of the same family: a typo, a renamed key or settings that do not
fit together (micro-batch, LoRA targets, templates, benchmark names, checkpoint steps) fail here, not on a GPU
after the download. Nothing is downloaded; hub data sources are replaced by a stand-in record of their format."""

from __future__ import annotations

import dataclasses
import math

import pytest

torch = pytest.importorskip("torch")

from ctxrel.config.shipped import names  # noqa: E402
from ctxrel.config.shipped import PRESETS_DIR  # noqa: E402
from ctxrel.config import load_study_config  # noqa: E402

STUDY_PRESETS = names("study")  # synth and theory presets are those verbs' (test_synth, test_theory resolve them)

STAND_IN_RECORDS = {  # one record per data.format, for presets whose data come from the hub
    "alpaca": dict(instruction="Name the capital of France.", input="Paris Lyon", output="Paris."),
    "chat": dict(messages=[dict(role="user", content="Name the capital of France."),
                           dict(role="assistant", content="Paris."),
                           dict(role="user", content="And of Japan?"), dict(role="assistant", content="Tokyo.")]),
    "squad": dict(context="Paris is the capital of France.", question="What is the capital of France?",
                  answers=dict(text=["Paris"])),
}
HUB_EXAMPLES = 52_002  # a stand-in data size for hub sources (Alpaca's)


def stand_in_model(name: str, tok):
    """A tiny random model of the preset's architecture family (module names are what LoRA targets and qk mode
    look up). A preset of a new family fails here until a stand-in is added."""
    from transformers import (Gemma3ForCausalLM, Gemma3TextConfig, GPTNeoXConfig, GPTNeoXForCausalLM, LlamaConfig,
                              LlamaForCausalLM, MistralConfig, MistralForCausalLM)

    small = dict(vocab_size=len(tok), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                 num_attention_heads=4, max_position_embeddings=2048, bos_token_id=tok.bos_token_id,
                 eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id)
    lowered = name.lower()
    torch.manual_seed(0)
    if "pythia" in lowered or "neox" in lowered:
        return GPTNeoXForCausalLM(GPTNeoXConfig(**small))
    if "mistral" in lowered:
        return MistralForCausalLM(MistralConfig(**small, num_key_value_heads=2))
    if "gemma" in lowered:
        return Gemma3ForCausalLM(Gemma3TextConfig(**small, num_key_value_heads=2, head_dim=8))
    if "llama" in lowered or "smollm" in lowered:
        return LlamaForCausalLM(LlamaConfig(**small, num_key_value_heads=2))
    raise AssertionError(f"no stand-in architecture for model.name {name!r}: add one to stand_in_model()")


@pytest.fixture(scope="module")
def tok(tiny_model_dir):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(tiny_model_dir))


def test_the_shipped_presets_are_all_found():
    assert "quickstart" in STUDY_PRESETS and "paper/llama2-7b-alpaca-lora" in STUDY_PRESETS
    assert sum(n.startswith("paper/") for n in STUDY_PRESETS) >= 10


@pytest.mark.parametrize("name", STUDY_PRESETS)
def test_preset_builds_its_training_and_evaluation_plan(name, tok):
    from ctxrel.backends.hf import HFBackend
    from ctxrel.benchmarks.registry import REGISTRY, load_benchmark
    from ctxrel.evaluate.run import _builder, standard_tasks
    from ctxrel.standard.tasks import standard_name
    from ctxrel.models.loading import select_trainable
    from ctxrel.core.prompts import check_format, continuation_delimiter
    from ctxrel.train.data import collate, load_examples, to_example, tokenize
    from ctxrel.core.prompts import resolve_data_template
    from ctxrel.train.loop import ResponseLoss, _optimizer, check_train_config, make_plan
    from ctxrel.evaluate.saved_run import study_eval_config as _eval_config

    cfg = load_study_config(name)
    assert cfg.out.startswith("runs/"), f"{name}: out should be a run directory under runs/"
    check_train_config(cfg)

    # -- training data: the built-in mixture for real, hub data as a stand-in record of the preset's format
    if cfg.data.source == "mixture":
        examples = load_examples(cfg.data, seed=cfg.train.seed)
        n_examples = len(examples)
    else:
        fmt = cfg.data.format if cfg.data.format != "auto" else "alpaca"
        examples = [to_example(STAND_IN_RECORDS[fmt], fmt, f"{name}:stand-in")] * 4
        n_examples = HUB_EXAMPLES if cfg.data.limit is None else cfg.data.limit
    template = resolve_data_template(cfg.data.template, tok)
    data = tokenize(examples[:8], tok, template=template, max_length=cfg.data.max_length)

    # -- the plan: batch geometry, steps, checkpoints (a single process and a data-parallel launch of 8)
    lengths = [len(x) for x in data.input_ids] * math.ceil(n_examples / len(data.input_ids))
    plan = make_plan(n_examples, cfg.train, cfg.eval, 1, lengths[:n_examples])
    assert plan.checkpoints[0] == 0 and plan.checkpoints[-1] == plan.total
    early = [s for s in cfg.eval.early if s > plan.total]
    assert not early, f"{name}: eval.early steps {early} come after the last step {plan.total}"
    if name.startswith("paper/"):  # written for many GPUs
        make_plan(n_examples, cfg.train, cfg.eval, 8, lengths[:n_examples])
    assert plan.global_batch(plan.total - 1, cfg.train.seed)

    # -- the model: trainable parameters of train.mode on the family's modules, one loss on a stand-in batch
    model = select_trainable(stand_in_model(cfg.model.name, tok), cfg.train)
    _optimizer(model, cfg.train)
    ids, mask, labels = collate(data.input_ids[:2], data.labels[:2], tok.pad_token_id)
    loss = ResponseLoss(model)(ids, mask, labels)
    assert torch.isfinite(loss) and loss.item() > 0

    # -- evaluation: benchmark and standard-task names, the prompt, one scored item on the stand-in
    ev = _eval_config(cfg)
    if cfg.eval.prompt is not None:
        check_format(cfg.eval.prompt)
    standard_tasks(ev.eval)
    item = None
    for b in ev.eval.benchmarks:
        if standard_name(b):
            continue
        bench = b.partition("=")[0].strip()
        assert bench in REGISTRY, f"{name}: eval.benchmarks names {bench!r}, not a registered benchmark"
        if REGISTRY[bench].builder is not None and item is None:
            item = load_benchmark(bench).items[0]
    model.eval()
    lm = HFBackend(model, tok, name=f"stand-in for {cfg.model.name}", batch_size=cfg.model.batch_size)
    if cfg.eval.template == "auto":
        ev.eval.template = template  # as a study does (train.study._with_template)
    builder = _builder(lm, ev.eval)
    prompt = builder.with_context(item.context, item.question, item.prompt) if item else \
        builder.with_context("Paris is the capital of France.", "What is the capital of France?", None)
    if ev.eval.mode == "likelihood":
        (lp,) = lm.loglikelihood([(prompt, continuation_delimiter(prompt) + "Paris")])
        assert lp < 0
    else:
        (outs,) = lm.generate([prompt], max_new_tokens=2)
        assert len(outs) == 1 and isinstance(outs[0], str)


def test_a_broken_preset_fails_here(tmp_path, tok):
    """The checks above can fail: a renamed key, and a micro-batch that does not divide the batch."""
    from ctxrel.core.errors import CtxrelError
    from ctxrel.train.loop import make_plan

    text = (PRESETS_DIR / "paper" / "llama2-7b-alpaca-lora.yaml").read_text()
    renamed = tmp_path / "renamed.yaml"
    renamed.write_text(text.replace("micro_batch_size:", "micro_batch:"))
    with pytest.raises(CtxrelError, match="unknown config key.*train.micro_batch"):
        load_study_config(str(renamed))
    cfg = load_study_config("paper/llama2-7b-alpaca-lora")
    bad = dataclasses.replace(cfg.train, micro_batch_size=7)
    with pytest.raises(CtxrelError, match="micro_batch_size=7"):
        make_plan(HUB_EXAMPLES, bad, cfg.eval, 1)
