"""Throughput of `ctxrel curate classify` scoring against a naive loop, in one process, on the same records.

    python perf/curate_throughput.py [--data PATH] [--n 48] [--batch-size 4] [--max-length 512]

Records: the first --n context-bearing Alpaca records of --data (default $CTXREL_TEST_DATA/alpaca), each scored
twice (with and without its context), plus as many no-context records (scored once), so the mix is the one
classify sees. Naive loop: one sequence at a time through the model's own `forward(labels=...)` (full
vocabulary projection at every position). ctxrel: length-sorted batches, projection only at response
positions. Both get identical token ids; the script checks the losses agree and prints records/s for both and
their ratio.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import torch


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default="smollm2-135m-instruct")
    ap.add_argument("--data", help="Alpaca JSON(.gz); default $CTXREL_TEST_DATA/alpaca/alpaca_data.json.gz")
    ap.add_argument("--n", type=int, default=48, help="context records (and as many without context)")
    ap.add_argument("--batch-size", type=int, default=4, help="ctxrel's CPU default")
    ap.add_argument("--max-length", type=int, default=512)
    args = ap.parse_args()

    from ctxrel.curate.dataset import has_context, load_records
    from ctxrel.curate.scoring import record_sequences, score_records
    from ctxrel.models.loading import load_model
    from ctxrel.core.prompts import resolve_data_template

    data = args.data
    if data is None:
        root = os.environ.get("CTXREL_TEST_DATA")
        if not root:
            raise SystemExit("give --data PATH or set CTXREL_TEST_DATA (the shared real data folder)")
        data = str(Path(root) / "alpaca" / "alpaca_data.json.gz")
    all_records, _ = load_records(data, limit=20 * args.n)
    ctx = [r for r in all_records if has_context(r.data, r.fmt)][:args.n]
    bare = [r for r in all_records if not has_context(r.data, r.fmt)][:args.n]
    records = sorted(ctx + bare, key=lambda r: r.index)

    model, tok, name = load_model(args.model, device="cpu")
    template = resolve_data_template("auto", tok)
    seqs = record_sequences(records, tok, template=template, max_length=args.max_length)
    tokens = sum(len(s[2]) for s in seqs)
    print(f"{name}: {len(records)} records ({len(ctx)} with context) -> {len(seqs)} sequences, {tokens} tokens "
          f"(mean {tokens / len(seqs):.0f}), template {template}, torch threads={torch.get_num_threads()}")

    def naive(ids, labels) -> float:
        with torch.inference_mode():
            return model(input_ids=torch.tensor([ids]), labels=torch.tensor([labels])).loss.item()

    naive(*seqs[0][2:])  # warm-up, not timed
    t = time.perf_counter()
    slow = {(i, v): naive(ids, labels) for i, v, ids, labels in seqs}
    t_naive = time.perf_counter() - t

    with tempfile.TemporaryDirectory() as tmp:
        t = time.perf_counter()
        rows = score_records(records, Path(tmp), model_spec=args.model, model=model, tok=tok,
                             max_length=args.max_length, batch_size=args.batch_size, progress=False)
        t_ctxrel = time.perf_counter() - t
    counts = {(i, v): sum(x != -100 for x in labels[1:]) for i, v, _, labels in seqs}
    worst = 0.0
    for rec, row in zip(records, rows):
        for variant, key in (("with", "loss_with"), ("without", "loss_without")):
            # compare where the mean covers the whole response (not cut to the other rendering's length)
            if counts.get((rec.index, variant)) == row["n_tokens"] > 0:
                worst = max(worst, abs(row[key] - slow[(rec.index, variant)]))

    n = len(records)
    print(f"naive forward(labels), batch 1:  {n / t_naive:6.2f} records/s  ({t_naive:.1f} s)")
    print(f"ctxrel scoring (batch {args.batch_size}, sorted): {n / t_ctxrel:6.2f} records/s  ({t_ctxrel:.1f} s)")
    print(f"largest loss difference: {worst:.2e}")
    print(f"speed-up ratio (ctxrel / naive): {t_naive / t_ctxrel:.2f}x")


if __name__ == "__main__":
    main()
