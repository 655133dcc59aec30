"""Shared fixtures: a tiny random Llama with a tokenizer trained here (nothing is downloaded)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

CORPUS = [
    "Background: The capital city of France is Lyon. Question: What is the capital city of France?",
    "Question: What is the capital city of Japan? Answer: Tokyo",
    "Below is an instruction that describes a task. Write a response that appropriately completes the request.",
    "### Instruction: ### Input: ### Response: <|user|> <|assistant|>",
    "Paris Lyon Berlin Munich Rome Milan Madrid Barcelona Tokyo Osaka Cairo New Cairo Ottawa Toronto",
] * 20

CHAT_TEMPLATE = ("{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
                 "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")


def build_tiny_model(path: Path, *, arch: str = "llama", seed: int = 0) -> Path:
    """Save a tiny random causal LM + a BPE tokenizer trained on CORPUS into `path`."""
    import torch
    from tokenizers import Tokenizer, models, pre_tokenizers, decoders, trainers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    special = ["<unk>", "<s>", "</s>", "<pad>", "<|im_start|>", "<|im_end|>"]
    tk = Tokenizer(models.BPE(unk_token="<unk>"))
    tk.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tk.decoder = decoders.ByteLevel()
    tk.train_from_iterator(CORPUS, trainers.BpeTrainer(vocab_size=400, special_tokens=special,
                                                       initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    tok = PreTrainedTokenizerFast(tokenizer_object=tk, unk_token="<unk>", bos_token="<s>", eos_token="</s>",
                                  pad_token="<pad>")
    tok.chat_template = CHAT_TEMPLATE
    torch.manual_seed(seed)
    cfg = LlamaConfig(vocab_size=len(tok), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=1024,
                      bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id,
                      pad_token_id=tok.pad_token_id)
    model = LlamaForCausalLM(cfg)
    path.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(path, safe_serialization=True)
    tok.save_pretrained(path)
    return path


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory) -> Path:
    return build_tiny_model(tmp_path_factory.mktemp("tiny") / "llama")


@pytest.fixture(scope="session")
def tiny_lm(tiny_model_dir):
    from ctxrel.backends.hf import HFBackend
    from ctxrel.models.loading import load_model

    model, tok, name = load_model(str(tiny_model_dir), device="cpu")
    return HFBackend(model, tok, name=name, batch_size=4)


@pytest.fixture
def test_data() -> Path:
    root = os.environ.get("CTXREL_TEST_DATA")
    if not root:
        pytest.skip("CTXREL_TEST_DATA not set: the real datasets in ../shared/data are unavailable")
    return Path(root)


# -- a toy run directory, written without a model (the Python API's doctests and the Parquet export read it) ------
TOY_CF_COUNTS = {0: 5, 8: 18, 16: 6}  # items (of 20) whose output follows the context, per step: rise, then fall


def write_toy_run(path: Path, counts: dict[int, int] | None = None, n_items: int = 20) -> Path:
    """A study-like run directory: benchmark `cf_toy`, 20 items in two categories, one greedy output per item
    at each step of `counts` (the first `counts[step]` items answer with the context's city, the rest with the
    real one), scored by ctxrel's own matching and metrics code; step 0's answers define `known` (every item)."""
    from ctxrel.benchmarks.schema import ConflictItem
    from ctxrel.core.metrics import conflict_metrics
    from ctxrel.evaluate.records import generation_records
    from ctxrel.rundir.files import RunDir, append_records, step_name

    counts = counts or TOY_CF_COUNTS
    items = [ConflictItem(id=f"cf_toy/{i}", benchmark="cf_toy", category="europe" if i % 2 else "asia",
                          context=f"Country {i} moved its capital to Newtown{i}.",
                          question=f"What is the capital of country {i}?", context_answer=f"Newtown{i}",
                          parametric_answer=f"Oldtown{i}", source=f"toy.jsonl:{i + 1}") for i in range(n_items)]
    run = RunDir(path)
    for step, n_cf in counts.items():
        ckpt = step_name(step)
        recs = []
        for k, it in enumerate(items):
            answer = it.context_answer if k < n_cf else it.parametric_answer
            for r in generation_records(it, f"prompt {k}", [f"The capital is {answer}."]):
                r["known"] = True
                recs.append(r)
        append_records(run.eval_file(ckpt, "cf_toy"), recs)
        rows = [dict(checkpoint=ckpt, step=step, benchmark="cf_toy", subset=s, **m)
                for s in ("all", "known") for m in conflict_metrics(recs, "generate", n_boot=200)]
        run.write_metrics(rows)
    return path


@pytest.fixture
def toy_run(tmp_path) -> Path:
    return write_toy_run(tmp_path / "toy")
