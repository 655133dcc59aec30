"""Throughput of `ctxrel eval` against a naive loop, in one process, on the same items.

    python perf/eval_throughput.py [--n 64] [--batch-size 16] [--max-new-tokens 24] [--loop-only | --decoding-only]

First, ctxrel's own greedy loop (`ctxrel.backends.decode_loop`: finished rows leave the batch, waiting prompts
join it, the prompts' common prefix runs once) against the backend's HF `generate` path (length-sorted batches run
until their longest row ends), on the same prompts and batch size: items/s of both, their ratio in wall time and
in the process's CPU time (on a shared machine the CPU time is the steadier measure of the work done), the token
positions each path hands the model (rows x tokens of every forward pass), and how many greedy outputs are
identical. Each path runs `--repeats` times (default 2), alternating, and the fastest run of each counts.
`--loop-only` stops there; `--decoding-only` times greedy and each contrast method back to back instead.

Naive loop: HF `generate`, one prompt at a time, greedy. ctxrel: the HF backend (length-sorted batches, left
padding). Both see identical prompt strings and stop tokens; the script checks the greedy outputs are identical
and prints items/s for both, their ratio, and the likelihood mode's items/s (two answers scored per item).
Then the decoding methods on the same items (`ctxrel.core.decoding`; both branches, with and without context, batched
on one KV cache): greedy, CAD (alpha 1), AdaCAD, and both contrast methods in one pass sharing the prompt
encoding, with the ratio CAD / greedy.
"""

from __future__ import annotations

import argparse
import time

import torch


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default="smollm2-135m-instruct")
    ap.add_argument("--benchmark", default="cf_capitals")
    ap.add_argument("--n", type=int, default=64)
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--max-new-tokens", type=int, default=24)
    ap.add_argument("--repeats", type=int, default=2, help="timed runs of each path (alternating; fastest counts)")
    ap.add_argument("--loop-only", action="store_true", help="only the own loop vs HF generate comparison")
    ap.add_argument("--decoding-only", action="store_true",
                    help="only greedy vs CAD / AdaCAD, each method timed right after a greedy run (the default path)")
    args = ap.parse_args()

    from ctxrel.backends.hf import HFBackend
    from ctxrel.benchmarks.registry import load_benchmark
    from ctxrel.evaluate.selection import select_items
    from ctxrel.models.loading import load_model
    from ctxrel.core.prompts import PromptBuilder, continuation_delimiter

    model, tok, name = load_model(args.model, device="cpu")
    lm = HFBackend(model, tok, name=name, batch_size=args.batch_size, decode="own")
    items = select_items(load_benchmark(args.benchmark).items, args.n, seed=0)
    builder = PromptBuilder("chat", render_chat=lm.render_chat)
    prompts = [builder.with_context(it.context, it.question, it.prompt) for it in items]
    print(f"{name}: {len(items)} items of {args.benchmark}, max_new_tokens={args.max_new_tokens}, "
          f"torch threads={torch.get_num_threads()}")

    def naive(prompt: str) -> str:
        ids = torch.tensor([lm.encode(prompt)])
        with torch.inference_mode():
            out = model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), do_sample=False,
                                 max_new_tokens=args.max_new_tokens, pad_token_id=tok.pad_token_id,
                                 eos_token_id=lm.stop_ids)
        return tok.decode(out[0, ids.shape[1]:], skip_special_tokens=True).strip()

    naive(prompts[0])  # warm-up, not timed
    lm.generate(prompts[:2], max_new_tokens=4)

    hf_lm = HFBackend(model, tok, name=name, batch_size=args.batch_size, decode="hf")
    if args.decoding_only:
        return decoding_ratios(hf_lm, builder, items, prompts, args)
    best = {"hf": float("inf"), "own": float("inf")}
    cpu = dict(best)
    texts, positions = {}, {}
    counted: list[int] = []  # rows x tokens of every forward pass: the work each path hands the model
    hook = model.register_forward_pre_hook(lambda mod, a, kw: counted.append(kw["input_ids"].numel()),
                                           with_kwargs=True)
    for _ in range(args.repeats):
        for what, backend in (("hf", hf_lm), ("own", lm)):
            counted.clear()
            t, c = time.perf_counter(), time.process_time()
            texts[what] = [o[0] for o in backend.generate(prompts, max_new_tokens=args.max_new_tokens)]
            best[what] = min(best[what], time.perf_counter() - t)
            cpu[what] = min(cpu[what], time.process_time() - c)
            positions[what] = sum(counted)
    hook.remove()
    n = len(items)
    same = sum(a == b for a, b in zip(texts["hf"], texts["own"]))
    for a, b, it in zip(texts["hf"], texts["own"], items):
        if a != b:
            print(f"  differs on {it.id}: hf={a!r} own={b!r}")
    print(f"HF generate path (batch {args.batch_size}):  {n / best['hf']:6.2f} items/s  ({best['hf']:.1f} s wall, "
          f"{cpu['hf']:.1f} s CPU, {positions['hf']} token positions computed)")
    print(f"own decode loop (batch {args.batch_size}):   {n / best['own']:6.2f} items/s  ({best['own']:.1f} s wall, "
          f"{cpu['own']:.1f} s CPU, {positions['own']} token positions computed)")
    print(f"identical greedy outputs: {same}/{n}")
    print(f"speed-up ratio (own loop / HF generate): {best['hf'] / best['own']:.2f}x wall, "
          f"{cpu['hf'] / cpu['own']:.2f}x CPU time, {positions['hf'] / positions['own']:.2f}x fewer positions")
    if args.loop_only:
        return

    t = time.perf_counter()
    slow = [naive(p) for p in prompts]
    t_naive = time.perf_counter() - t
    t = time.perf_counter()
    fast = [o[0] for o in lm.generate(prompts, max_new_tokens=args.max_new_tokens)]
    t_ctxrel = time.perf_counter() - t
    same = sum(a == b for a, b in zip(slow, fast))
    for a, b, it in zip(slow, fast, items):
        if a != b:
            print(f"  differs on {it.id}: naive={a!r} ctxrel={b!r}")

    reqs = []
    for it, p in zip(items, prompts):
        d = continuation_delimiter(p)
        reqs += [(p, d + it.context_answer), (p, d + it.parametric_answer)]
    t = time.perf_counter()
    lm.loglikelihood(reqs)
    t_ll = time.perf_counter() - t

    n = len(items)
    print(f"naive HF generate (batch 1): {n / t_naive:6.2f} items/s  ({t_naive:.1f} s)")
    print(f"ctxrel generate (batch {args.batch_size}):    {n / t_ctxrel:6.2f} items/s  ({t_ctxrel:.1f} s)")
    print(f"ctxrel likelihood mode:       {n / t_ll:6.2f} items/s  ({t_ll:.1f} s)")
    print(f"identical greedy outputs: {same}/{n}")
    print(f"speed-up ratio (ctxrel / naive): {t_naive / t_ctxrel:.2f}x")

    pairs = [(p, builder.without_context(it.question)) for it, p in zip(items, prompts)]
    timings = {}
    for what, methods in (("cad", [("cad", 1.0)]), ("adacad", [("adacad", 0.0)]),
                          ("cad+adacad", [("cad", 1.0), ("adacad", 0.0)])):
        t = time.perf_counter()
        lm.generate_contrast(pairs, methods, max_new_tokens=args.max_new_tokens)
        timings[what] = time.perf_counter() - t
    g = n / t_ctxrel
    print(f"decoding methods on the same {n} items (greedy = ctxrel generate above):")
    print(f"  greedy:            {g:6.2f} items/s")
    for what, sec in timings.items():
        per = n * (2 if what == "cad+adacad" else 1) / sec
        print(f"  {what + ':':<18} {per:6.2f} items/s{' (item x method)' if what == 'cad+adacad' else ''}  "
              f"({sec:.1f} s)  ratio to greedy {per / g:.2f}")


def decoding_ratios(lm, builder, items, prompts, args) -> None:
    """Greedy (HF generate, the default path) against each contrast method, timed back to back `--repeats` times
    (greedy, method, greedy, method, ...; fastest of each counts), so that a change of load on a shared machine
    hits both sides of a ratio alike."""
    pairs = [(p, builder.without_context(it.question)) for it, p in zip(items, prompts)]
    n = len(items)
    print(f"greedy (HF generate) against each decoding method, back to back, {args.repeats} repeat(s):")
    for what, methods in (("cad", [("cad", 1.0)]), ("adacad", [("adacad", 0.0)]),
                          ("cad+adacad", [("cad", 1.0), ("adacad", 0.0)])):
        g_best = m_best = float("inf")
        for _ in range(args.repeats):
            t = time.perf_counter()
            lm.generate(prompts, max_new_tokens=args.max_new_tokens)
            g_best = min(g_best, time.perf_counter() - t)
            t = time.perf_counter()
            lm.generate_contrast(pairs, methods, max_new_tokens=args.max_new_tokens)
            m_best = min(m_best, time.perf_counter() - t)
        per = n * len(methods) / m_best
        print(f"  {what + ':':<12} greedy {n / g_best:5.2f} items/s, {what} {per:5.2f} "
              f"{'item-methods' if len(methods) > 1 else 'items'}/s, ratio {per / (n / g_best):.2f}")


if __name__ == "__main__":
    main()
