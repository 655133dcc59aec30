"""A prepared GPU check: ctxrel's GPU tests, then its evaluation and training pieces on a 7B-shaped model.

    python perf/gpu_check.py            # one CUDA GPU, nothing downloaded, a few minutes
    python perf/gpu_check.py --tiny     # the same steps on CPU with a tiny shape (CI runs this)

1. runs the `gpu`-marked tests (`pytest -m gpu`; they skip without CUDA);
2. builds a *randomly initialised* model with the shape of Llama-2-7B (LlamaConfig, bf16 on the GPU; no weights
   are needed: speed does not depend on their values) and a tokenizer trained here on the prompts;
3. measures, with the settings of the shipped `paper/llama2-7b-alpaca-lora` preset (evaluation batch, LoRA rank
   and targets, batch and micro-batch, template):
   * evaluation throughput through ctxrel's own backend (`HFBackend`) on conflict prompts built from ctxrel's
     built-in conflict items (cf_capitals, biographies) in the Alpaca template: items/s for greedy generation of
     32 tokens, and for likelihood mode (context and parametric answer scored per item);
   * one LoRA rank-128 training step through the loop's pieces (select_trainable, ResponseLoss, collate, AdamW;
     bf16 autocast on GPU) on examples of Alpaca-like lengths: tokens/s and peak memory;
   * the adapter swap: save the trained adapter as a study checkpoint, then load it into the resident model
     (`checkpoints.load_weights`), and check that the loaded tensors are the saved ones;
4. prints one table with a model-FLOP-utilisation figure against the GPU's dense bf16 peak (known devices below;
   an unknown one is named and left without MFU).

Model FLOPs (approximate, as usually reported): 2 N per token processed in inference and 4 N per token in a LoRA
step (forward 2 N, backward to the activations 2 N; frozen weights get no gradient), N = parameters other than
the input embedding; attention scores and the LoRA matrices themselves are left out.
"""

from __future__ import annotations

import argparse
import math
import random
import re
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PRESET = "paper/llama2-7b-alpaca-lora"

# dense bf16 tensor-core peaks (TFLOP/s, no sparsity), from NVIDIA's data sheets; first match wins
PEAK_BF16_TFLOPS = [
    (r"H100.*PCIe", 756.0),
    (r"H100.*NVL", 835.0),
    (r"H100|H200|GH200", 989.0),
    (r"A100", 312.0),
    (r"L40S", 362.0),
    (r"\bL4\b", 121.0),
    (r"\bA10\b", 125.0),
]

LLAMA2_7B = dict(vocab_size=32000, hidden_size=4096, intermediate_size=11008, num_hidden_layers=32,
                 num_attention_heads=32, num_key_value_heads=32, max_position_embeddings=4096, rms_norm_eps=1e-5)
TINY = dict(vocab_size=1024, hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
            num_key_value_heads=2, max_position_embeddings=2048)


def peak_tflops(device_name: str) -> float | None:
    for pattern, tflops in PEAK_BF16_TFLOPS:
        if re.search(pattern, device_name):
            return tflops
    return None


def run_gpu_tests(path: str) -> str:
    """`pytest -m gpu` on `path`; returns pytest's summary line (a failure is reported, not raised)."""
    proc = subprocess.run([sys.executable, "-m", "pytest", "-q", "-m", "gpu", "-p", "no:cacheprovider", path],
                          cwd=ROOT, capture_output=True, text=True)
    lines = [ln for ln in proc.stdout.strip().splitlines() if ln.strip()]
    last = lines[-1] if lines else proc.stderr.strip()[-200:]
    return ("" if proc.returncode in (0, 5) else "FAILED: ") + last.strip("= ")


def conflict_prompts(n: int) -> list[tuple[str, str, str]]:
    """(prompt, context answer, parametric answer) for `n` of ctxrel's built-in conflict items, Alpaca template
    (the preset's), spread over both benchmarks."""
    from ctxrel.benchmarks.registry import load_benchmark
    from ctxrel.evaluate.selection import select_items
    from ctxrel.core.prompts import PromptBuilder

    items = [it for b in ("cf_capitals", "biographies") for it in select_items(load_benchmark(b).items, n, seed=0)]
    random.Random(0).shuffle(items)
    builder = PromptBuilder("alpaca")
    return [(builder.with_context(it.context, it.question, it.prompt), it.context_answer, it.parametric_answer)
            for it in items[:n]]


def local_tokenizer(texts: list[str], vocab: int):
    """A byte-level BPE tokenizer trained here on `texts` (nothing downloaded). With ~1000 merges it splits these
    prompts into about as many tokens as a 32k-vocabulary English tokenizer does."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tk = Tokenizer(models.BPE(unk_token="<unk>"))
    tk.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tk.decoder = decoders.ByteLevel()
    tk.train_from_iterator(texts, trainers.BpeTrainer(
        vocab_size=vocab, special_tokens=["<unk>", "<s>", "</s>", "<pad>"], show_progress=False,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    return PreTrainedTokenizerFast(tokenizer_object=tk, unk_token="<unk>", bos_token="<s>", eos_token="</s>",
                                   pad_token="<pad>")


def training_examples(n: int, max_length: int, vocab: int, seed: int = 0):
    """`n` token sequences of Alpaca-like lengths (log-normal, median 128 tokens, cut at `max_length`), the loss on
    their last 60% (the response)."""
    from ctxrel.train.data import IGNORE

    rng = random.Random(seed)
    ids, labels = [], []
    for _ in range(n):
        length = max(16, min(max_length, int(rng.lognormvariate(math.log(128), 0.6))))
        seq = [rng.randrange(4, vocab) for _ in range(length)]
        cut = int(length * 0.4)
        ids.append(seq)
        labels.append([IGNORE] * cut + seq[cut:])
    return ids, labels


class Clock:
    def __init__(self, cuda: bool):
        import torch

        self.sync = torch.cuda.synchronize if cuda else (lambda: None)

    def __enter__(self):
        self.sync()
        self.t = time.perf_counter()
        return self

    def __exit__(self, *exc):
        self.sync()
        self.s = time.perf_counter() - self.t


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--tiny", action="store_true", help="a tiny model shape on CPU (a correctness run, for CI)")
    ap.add_argument("--items", type=int, help="conflict items per evaluation mode (default: 4 batches)")
    ap.add_argument("--tests", default="tests", help="where the gpu-marked tests are (default: tests)")
    ap.add_argument("--no-tests", action="store_true", help="skip the gpu-marked tests")
    args = ap.parse_args()

    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    from ctxrel.backends.hf import HFBackend
    from ctxrel.core.prompts import continuation_delimiter
    from ctxrel.models.loading import load_weights, save_weights
    from ctxrel.train.data import collate
    from ctxrel.train.loop import ResponseLoss, _optimizer, make_plan
    from ctxrel.config import load_study_config

    cuda = torch.cuda.is_available() and not args.tiny
    if not cuda and not args.tiny:
        print("gpu_check: no CUDA device here; run with --tiny for the CPU correctness run", file=sys.stderr)
        return 2
    device = "cuda" if cuda else "cpu"
    device_name = torch.cuda.get_device_name(0) if cuda else "CPU"
    rows: list[tuple[str, str, float | None]] = []  # (measure, value, TFLOP/s achieved)

    tests = "not run (--no-tests)" if args.no_tests else run_gpu_tests(args.tests)
    print(f"gpu tests ({args.tests}): {tests}", flush=True)

    cfg = load_study_config(PRESET)
    eval_batch = cfg.model.batch_size if cuda else 4
    batch, micro = (cfg.train.batch_size, cfg.train.micro_batch_size or cfg.train.batch_size) if cuda else (4, 2)
    n_items = args.items or 4 * eval_batch
    lora = cfg.train.lora
    shape = LLAMA2_7B if cuda else TINY

    prompts = conflict_prompts(n_items)
    tok = local_tokenizer([p for p, _, _ in prompts], vocab=1000)
    dtype = torch.bfloat16 if cuda else torch.float32
    t0 = time.perf_counter()
    torch.manual_seed(0)
    config = LlamaConfig(**shape, bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id,
                         pad_token_id=tok.pad_token_id)
    with torch.device(device):  # weights are created on the device, in its dtype: no 7B copy in host memory
        model = LlamaForCausalLM._from_config(config, dtype=dtype)
    model.eval()
    n_params = sum(p.numel() for p in model.parameters())
    n_flop = n_params - model.get_input_embeddings().weight.numel()
    print(f"model: {'Llama-2-7B shape' if cuda else 'tiny Llama shape'}, {n_params / 1e6:,.1f} M parameters, {dtype}, "
          f"random weights, built in {time.perf_counter() - t0:.1f} s on {device_name}", flush=True)

    # -- evaluation through ctxrel's backend -------------------------------------------------------------------
    lm = HFBackend(model, tok, name="llama2-7b-shape", batch_size=eval_batch)
    texts = [p for p, _, _ in prompts]
    prompt_tokens = sum(lm.count_tokens(texts))
    print(f"evaluation: {len(texts)} conflict prompts, mean {prompt_tokens / len(texts):.0f} tokens (local BPE), "
          f"batch {eval_batch}", flush=True)
    lm.generate(texts[:2], max_new_tokens=2)  # warm-up (kernels, allocator), not timed
    with Clock(cuda) as c:
        outs = lm.generate(texts, max_new_tokens=32)
    new_tokens = sum(len(lm.encode(o[0])) for o in outs)
    rows.append(("generate, greedy, 32 new tokens", f"{len(texts) / c.s:.2f} items/s ({c.s:.1f} s)",
                 2 * n_flop * (prompt_tokens + new_tokens) / c.s))
    reqs = [r for p, ca, pa in prompts for r in ((p, continuation_delimiter(p) + ca),
                                                  (p, continuation_delimiter(p) + pa))]
    with Clock(cuda) as c:
        scores = lm.loglikelihood(reqs)
    assert all(math.isfinite(s) and s < 0 for s in scores)
    rows.append(("likelihood, 2 answers per item", f"{len(texts) / c.s:.2f} items/s ({c.s:.1f} s)",
                 2 * n_flop * prompt_tokens / c.s))

    # -- one LoRA training step through the loop's pieces ------------------------------------------------------
    from ctxrel.config import settings as C
    from ctxrel.models.loading import select_trainable

    tc = C.TrainConfig(mode="lora", lora=C.LoraSettings(rank=lora.rank, alpha=lora.alpha, dropout=lora.dropout,
                                                        targets=list(lora.targets)),
                       lr=cfg.train.lr, batch_size=batch, micro_batch_size=micro)
    ids, labels = training_examples(2 * batch, cfg.data.max_length, len(tok))
    plan = make_plan(len(ids), tc, C.StudyEvalConfig(every=10 ** 6), 1)
    model = select_trainable(model, tc)
    model.train()
    loss_fn = ResponseLoss(model)
    opt = _optimizer(model, tc)
    n_lora = sum(p.numel() for p in model.parameters() if p.requires_grad)
    autocast = torch.autocast("cuda", dtype=torch.bfloat16) if cuda else torch.autocast("cpu", enabled=False)

    def optimizer_step(step: int) -> tuple[int, float]:
        chosen = plan.global_batch(step, 0)
        n_labels = sum(sum(y != -100 for y in labels[i][1:]) for i in chosen)
        total = 0.0
        for k in range(plan.accum):
            idx = chosen[k * plan.micro:(k + 1) * plan.micro]
            x, m, y = (t.to(device) for t in collate([ids[i] for i in idx], [labels[i] for i in idx],
                                                     tok.pad_token_id))
            with autocast:
                s = loss_fn(x, m, y)
            (s / n_labels).backward()
            total += s.item()
        torch.nn.utils.clip_grad_norm_([p for p in model.parameters() if p.requires_grad], 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
        return sum(len(ids[i]) for i in chosen), total / n_labels

    optimizer_step(0)  # warm-up: first-step allocations and kernel selection, not timed
    if cuda:
        torch.cuda.reset_peak_memory_stats()
    with Clock(cuda) as c:
        tokens, loss = optimizer_step(1)
    assert math.isfinite(loss)
    peak = (f"{torch.cuda.max_memory_allocated() / 2 ** 30:.1f} GiB allocated (peak)" if cuda else
            f"{resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2 ** 20:.2f} GiB process RSS (peak)")
    rows.append((f"LoRA r{lora.rank} step, batch {batch} = {plan.accum} x {micro}",
                 f"{tokens / c.s:.0f} tokens/s ({c.s:.2f} s, {tokens} tokens), {peak}", 4 * n_flop * tokens / c.s))

    # -- adapter swap: a saved checkpoint into the resident model ----------------------------------------------
    model.eval()
    with tempfile.TemporaryDirectory(prefix="ctxrel-gpu-check-") as tmp:
        folder = Path(tmp) / "step-000001"
        folder.mkdir()
        save_weights(model, folder, dict(step=1))
        size = sum(f.stat().st_size for f in folder.iterdir()) / 2 ** 20
        saved = {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}
        with torch.no_grad():
            for p in model.parameters():
                if p.requires_grad:
                    p.zero_()  # another checkpoint was resident
        times = []
        for _ in range(3):
            with Clock(cuda) as c:
                load_weights(model, folder)
            times.append(c.s)
        swapped = dict(model.named_parameters())
        assert all(torch.equal(swapped[n], t) for n, t in saved.items()), "the loaded adapter differs from the saved"
    rows.append(("adapter swap (load_weights)", f"{min(times) * 1e3:.0f} ms (best of 3; {size:.0f} MiB, "
                                                f"{n_lora / 1e6:.1f} M LoRA parameters)", None))

    # -- the table ---------------------------------------------------------------------------------------------
    peak_tf = peak_tflops(device_name) if cuda else None
    print(f"\n{device_name}: dense bf16 peak "
          + (f"{peak_tf:.0f} TFLOP/s" if peak_tf else "unknown for this device (MFU not computed)" if cuda else
             "n/a on CPU (MFU not computed)"))
    print(f"{'measure':<40} {'result':<60} {'MFU':>6}")
    for what, value, flops in rows:
        mfu = f"{flops / 1e12 / peak_tf:6.1%}" if flops is not None and peak_tf else "-"
        print(f"{what:<40} {value:<60} {mfu:>6}")
    return 0 if not tests.startswith("FAILED") else 1


if __name__ == "__main__":
    sys.exit(main())
