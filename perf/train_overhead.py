"""Costs of a study's training: evaluation against training time, and length-grouped against unsorted batches.

    python perf/train_overhead.py                      # runs `ctxrel study quickstart` into a temp dir
    python perf/train_overhead.py --run runs/quickstart  # reads a finished run instead
    python perf/train_overhead.py key=value ...        # overrides for the quickstart (e.g. eval.limit=30)
    python perf/train_overhead.py --group-by-length [--model M] [--steps 4] [--max-length 192]

Evaluation / training: both times are measured inside the same run by the training loop (train_summary.json:
`train_s` sums the optimizer steps, `eval_s` the checkpoint evaluations), so the ratio compares work done on the
same machine at the same moment. Model loading and the trajectory plot count in neither; wall time is printed
separately.

`--group-by-length`: LoRA training steps (ctxrel's ResponseLoss, collate and AdamW, as in the loop) on the same
examples batched two ways: the first `--steps` batches of an unsorted epoch over `--pool` examples (the loop's
default), and the very same examples grouped by length (`train.group_by_length`; they form a single window, so
this understates windows of 50 batches). The steps of the two alternate in one process, so background load hits
both alike. Examples: real Alpaca from $CTXREL_DATA/alpaca/alpaca_data.json.gz when it exists, else a synthetic
Alpaca-like length distribution. Prints real tokens/s and padding of both and their ratio, and the padding share
of a whole epoch of the pool under each batching (windows of 50 batches; counted exactly, no model).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import random
import tempfile
import time
from pathlib import Path


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--run", help="a finished study run directory to read instead of running the quickstart")
    ap.add_argument("--group-by-length", action="store_true",
                    help="time training steps with length-grouped against unsorted batches instead")
    ap.add_argument("--model", default="smollm2-135m-instruct", help="(--group-by-length) model to train")
    ap.add_argument("--steps", type=int, default=4, help="(--group-by-length) timed steps per batching")
    ap.add_argument("--batch-size", type=int, default=8, help="(--group-by-length) examples per step")
    ap.add_argument("--max-length", type=int, default=192, help="(--group-by-length) tokens per example")
    ap.add_argument("--rank", type=int, default=16, help="(--group-by-length) LoRA rank, all linear layers")
    ap.add_argument("--pool", type=int, default=4000, help="(--group-by-length) examples of the padding count")
    ap.add_argument("overrides", nargs="*", metavar="KEY=VALUE")
    args = ap.parse_args()
    if args.group_by_length:
        return grouped_vs_unsorted(args)

    wall = None
    if args.run:
        run = Path(args.run)
    else:
        from ctxrel.config import load_study_config
        from ctxrel.train.study import run_study

        run = Path(tempfile.mkdtemp(prefix="ctxrel-overhead-"))
        cfg = load_study_config("quickstart", [*args.overrides, f"out={run}"])
        t0 = time.perf_counter()
        run_study(cfg, plot=True)
        wall = time.perf_counter() - t0
    s = json.loads((run / "train_summary.json").read_text())
    n_ckpt = len(s["checkpoints"])
    print(f"run: {run}")
    print(f"training:   {s['train_s']:8.1f} s  ({s['total_steps']} steps, {s['train_s'] / s['total_steps']:.2f} s/step, "
          f"batch {s['batch_size']})")
    print(f"evaluation: {s['eval_s']:8.1f} s  ({n_ckpt} checkpoints, {s['eval_s'] / n_ckpt:.1f} s each)")
    print(f"evaluation / training = {s['eval_s'] / s['train_s']:.2f}")
    if s.get("padding_share") is not None:
        print(f"padding: {s['padding_share']:.1%} of positions computed; {s['tokens_per_s']:.0f} real tokens/s")
    if wall is not None:
        print(f"wall: {wall:.1f} s (includes model loading, data preparation, checkpoint writes and the plot)")


# -- length-grouped against unsorted batches ------------------------------------------------------------------

WORDS = ("the a of to and in for is that with on as be by this are from or an it can not have more which "
         "water city energy describe list explain write three ways example sentence climate history").split()


def synthetic_alpaca(n: int, seed: int = 0) -> list[dict]:
    """Alpaca-shaped records with an Alpaca-like length spread: short instructions, an input on 40% of them,
    responses of a few words to a few hundred (log-normal, median ~40 words)."""
    rng = random.Random(seed)

    def text(k):
        return " ".join(rng.choice(WORDS) for _ in range(max(1, k)))

    return [dict(instruction=text(rng.randint(4, 30)), input=text(rng.randint(5, 60)) if rng.random() < .4 else "",
                 output=text(min(400, int(rng.lognormvariate(3.7, 0.9))))) for _ in range(n)]


def grouped_vs_unsorted(args) -> None:
    import torch

    from ctxrel.config import settings as C
    from ctxrel.models.loading import load_model, select_trainable
    from ctxrel.train.data import collate, read_file, to_example, tokenize
    from ctxrel.core.prompts import resolve_data_template
    from ctxrel.train.loop import ResponseLoss, _optimizer, make_plan

    data = Path(os.environ.get("CTXREL_DATA", "")) / "alpaca" / "alpaca_data.json.gz"
    if os.environ.get("CTXREL_DATA") and data.exists():
        records, source = [r for r, _ in read_file(data)], f"real Alpaca ({data})"
    else:
        records, source = synthetic_alpaca(20000), "synthetic Alpaca-like lengths (set CTXREL_DATA for real Alpaca)"
    rng = random.Random(0)
    pool = rng.sample(records, min(args.pool, len(records)))

    tc = C.TrainConfig(lora=C.LoraSettings(rank=args.rank, alpha=2 * args.rank, dropout=0.0), lr=1e-4,
                       batch_size=args.batch_size, epochs=1)
    model, tok, name = load_model(args.model, device="cpu", dtype=torch.float32)
    if tok.pad_token_id is None:
        tok.pad_token = tok.eos_token or tok.unk_token
    template = resolve_data_template("auto", tok)
    t0 = time.perf_counter()
    data_t = tokenize([to_example(r, "alpaca", f"pool:{i}") for i, r in enumerate(pool)], tok, template=template,
                      max_length=args.max_length)
    lengths = [len(x) for x in data_t.input_ids]
    print(f"{name}, LoRA rank {args.rank}, batch {args.batch_size}, max {args.max_length} tokens, {template} "
          f"template, torch threads {torch.get_num_threads()}; data: {source}")
    print(f"pool: {len(lengths)} examples tokenised in {time.perf_counter() - t0:.1f} s, mean {sum(lengths) / len(lengths):.0f} "
          f"tokens, {data_t.stats['truncated']} truncated")

    def plans(n, lens):
        ev = C.StudyEvalConfig(every=10 ** 9)
        return {"unsorted": make_plan(n, tc, ev, 1),
                "grouped": make_plan(n, dataclasses.replace(tc, group_by_length=True), ev, 1, lens)}

    # a whole epoch of the pool: padding counted exactly (windows of 50 batches, as in a study)
    epoch = plans(len(lengths), lengths)
    for mode, plan in epoch.items():
        batches = [plan.global_batch(s, 0) for s in range(plan.total)]
        real = sum(lengths[i] for b in batches for i in b)
        pad = sum(plan.padding(b, lengths) for b in batches)
        print(f"epoch of {plan.total} steps, {mode:8s}: padding {pad / (real + pad):6.1%} of positions", flush=True)

    # timed: the first `steps` batches of the unsorted epoch (what the loop trains on by default), and the same
    # examples grouped by length (they form one window): identical examples and tokens, only the batching differs
    unsorted = [epoch["unsorted"].global_batch(s, 0) for s in range(args.steps)]
    sub = sorted(i for b in unsorted for i in b)
    regroup = plans(len(sub), [lengths[i] for i in sub])["grouped"]
    timed = {"unsorted": unsorted, "grouped": [[sub[j] for j in regroup.global_batch(s, 0)] for s in range(args.steps)]}
    flat, n = sub, len(sub)

    model = select_trainable(model, tc)
    model.train()
    loss_fn = ResponseLoss(model)
    opt = _optimizer(model, tc)
    trainable = [p for p in model.parameters() if p.requires_grad]

    def step(batch) -> float:
        t = time.perf_counter()
        ids, mask, labels = collate([data_t.input_ids[i] for i in batch], [data_t.labels[i] for i in batch],
                                    tok.pad_token_id)
        n_labels = int((labels[:, 1:] != -100).sum())
        (loss_fn(ids, mask, labels) / n_labels).backward()
        torch.nn.utils.clip_grad_norm_(trainable, 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
        return time.perf_counter() - t

    step(timed["unsorted"][0])  # warm-up, not timed
    secs = {"unsorted": 0.0, "grouped": 0.0}
    for k in range(args.steps):  # alternate, so background load falls on both alike
        took = {mode: step(timed[mode][k]) for mode in secs}
        for mode, s in took.items():
            secs[mode] += s
        print(f"  step {k + 1}: " + ", ".join(f"{m} {s:.1f} s" for m, s in took.items()), flush=True)
    real = sum(lengths[i] for i in flat)
    rate = {}
    for mode, batches in timed.items():
        pad = sum(max(lengths[i] for i in b) * len(b) for b in batches) - real
        rate[mode] = real / secs[mode]
        print(f"{mode:8s}: {args.steps} steps in {secs[mode]:6.1f} s ({secs[mode] / args.steps:5.2f} s/step), "
              f"{rate[mode]:7.0f} real tokens/s, {real} real + {pad} pad tokens ({pad / (real + pad):.1%} padding)")
    print(f"speed-up ratio (grouped / unsorted tokens/s, same {n} examples): {rate['grouped'] / rate['unsorted']:.2f}x")


if __name__ == "__main__":
    main()
