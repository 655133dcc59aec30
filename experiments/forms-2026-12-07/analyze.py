"""The pre-registered analysis of the context-form ablation (prereg.md in this folder).

    python experiments/forms-2026-12-07/analyze.py runs/forms-s0 runs/forms-s1 runs/forms-s2 \
        --out experiments/forms-2026-12-07/results.csv > experiments/forms-2026-12-07/table.md

For every benchmark of the runs: cf-acc and par-acc at step 0, early (mean of steps 8 and 16, fixed in advance, no
peak chosen) and end (step 128); the early-to-end change per seed and pooled over seeds, each with a paired item
bootstrap 95% interval (2,000 resamples; an item keeps its early and end together, and in the pooled interval its
seeds together); and, for each form, the difference from the `study` form of the same relation on the same items.
"""

from __future__ import annotations

import argparse
import csv
import sys

import numpy as np

from ctxrel.analysis.rundata import load_run

EARLY, END, START = (8, 16), 128, 0
N_BOOT = 2000


def item_table(run, benchmark: str) -> dict[str, dict[int, tuple[float, float]]]:
    """{item key: {step: (cf, par)}}; the key drops the benchmark name so forms pair by item."""
    out: dict[str, dict[int, tuple[float, float]]] = {}
    for step, ckpt in run.checkpoint_steps(benchmark).items():
        by_id: dict[str, list[tuple[float, float]]] = {}
        for r in run.records[(ckpt, benchmark)]:
            by_id.setdefault(r["id"].split("/", 1)[1], []).append(
                (float(bool(r["contains_context"])), float(bool(r["contains_parametric"]))))
        for key, vals in by_id.items():
            out.setdefault(key, {})[step] = tuple(np.mean(vals, axis=0))
    return out


def per_item(tables: list[dict], which: int) -> tuple[list[str], np.ndarray]:
    """Items present in every seed at every needed step -> (keys, array seeds x items x [start, early, end])."""
    need = (START, *EARLY, END)
    keys = sorted(set.intersection(*(set(k for k, v in t.items() if all(s in v for s in need)) for t in tables)))
    arr = np.array([[[t[k][START][which], np.mean([t[k][s][which] for s in EARLY]), t[k][END][which]]
                     for k in keys] for t in tables])
    return keys, arr


def boot(values: np.ndarray, rng: np.random.Generator) -> tuple[float, float, float]:
    """Mean over the last axis (items) of `values` (seeds x items, averaged over seeds), with a percentile
    bootstrap interval resampling items (their seeds stay together)."""
    v = values.mean(axis=0)
    idx = rng.integers(0, len(v), size=(N_BOOT, len(v)))
    means = v[idx].mean(axis=1)
    return float(v.mean()), float(np.percentile(means, 2.5)), float(np.percentile(means, 97.5))


def fmt(m, lo, hi) -> str:
    return f"{m:+.3f} [{lo:+.3f}, {hi:+.3f}]"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("runs", nargs="+")
    ap.add_argument("--out", help="CSV of every number in the table")
    ap.add_argument("--early", default="8,16", help="early steps (pre-registered: 8,16)")
    ap.add_argument("--end", type=int, default=128, help="end step (pre-registered: 128)")
    args = ap.parse_args(argv)
    global EARLY, END
    EARLY, END = tuple(int(s) for s in args.early.split(",")), args.end
    runs = [load_run(p) for p in args.runs]
    benches = sorted(set.intersection(*(set(r.benchmarks()) for r in runs)))
    rows, cells = [], {}
    for b in benches:
        tables = [item_table(r, b) for r in runs]
        keys, cf = per_item(tables, 0)
        _, par = per_item(tables, 1)
        cells[b] = (keys, cf, par)
    print(f"Runs: {', '.join(str(r.path) for r in runs)}. Steps: start {START}, early = mean of {EARLY}, end "
          f"{END}. Change = early - end (cf-acc: a fall is positive); return = end - early (par-acc). Intervals: "
          f"paired item bootstrap, {N_BOOT} resamples, 95%.\n")
    print("| benchmark | items | cf-acc start / early / end | par-acc start / early / end | cf fall, per seed "
          "(* = interval excludes 0) | cf fall, pooled | par return, pooled | seeds reverting | fall minus "
          "study's (pooled) | start cf minus study's |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for b in benches:
        keys, cf, par = cells[b]
        rng = np.random.default_rng(0)
        fall = cf[:, :, 1] - cf[:, :, 2]
        back = par[:, :, 2] - par[:, :, 1]
        seeds, reverting = [], 0
        for s in range(len(runs)):
            f = boot(fall[s:s + 1], rng)
            r = boot(back[s:s + 1], rng)
            seeds.append(f"{f[0]:+.2f}{'*' if f[1] > 0 or f[2] < 0 else ''}")
            reverting += f[1] > 0 and r[1] > 0
        pf, pr = boot(fall, rng), boot(back, rng)
        relation = b.split("_")[1] if b.startswith("forms_") else None
        base = f"forms_{relation}_study" if relation else None
        diff = start_diff = ""
        if base in cells and base != b:
            bkeys, bcf, _ = cells[base]
            common = [k for k in keys if k in set(bkeys)]
            ia, ib = [keys.index(k) for k in common], [bkeys.index(k) for k in common]
            bfall = bcf[:, ib, 1] - bcf[:, ib, 2]
            d = boot(fall[:, ia] - bfall, rng)
            d0 = boot(cf[:, ia, 0] - bcf[:, ib, 0], rng)
            diff, start_diff = fmt(*d), fmt(*d0)
            rows.append(dict(benchmark=b, quantity="fall_minus_study", mean=d[0], lo=d[1], hi=d[2]))
            rows.append(dict(benchmark=b, quantity="start_cf_minus_study", mean=d0[0], lo=d0[1], hi=d0[2]))
        m = lambda a, j: a[:, :, j].mean()  # noqa: E731
        print(f"| {b} | {len(keys)} | {m(cf, 0):.2f} / {m(cf, 1):.2f} / {m(cf, 2):.2f} | {m(par, 0):.2f} / "
              f"{m(par, 1):.2f} / {m(par, 2):.2f} | {' '.join(seeds)} | {fmt(*pf)} | {fmt(*pr)} | "
              f"{reverting} of {len(runs)} | {diff} | {start_diff} |")
        for j, name in enumerate(("start", "early", "end")):
            rows.append(dict(benchmark=b, quantity=f"cf_{name}", mean=m(cf, j), lo="", hi=""))
            rows.append(dict(benchmark=b, quantity=f"par_{name}", mean=m(par, j), lo="", hi=""))
        rows.append(dict(benchmark=b, quantity="cf_fall_pooled", mean=pf[0], lo=pf[1], hi=pf[2]))
        rows.append(dict(benchmark=b, quantity="par_return_pooled", mean=pr[0], lo=pr[1], hi=pr[2]))
        rows.append(dict(benchmark=b, quantity="seeds_reverting", mean=reverting, lo="", hi=""))
    if args.out:
        with open(args.out, "x", newline="") as fh:
            w = csv.DictWriter(fh, fieldnames=["benchmark", "quantity", "mean", "lo", "hi"])
            w.writeheader()
            w.writerows(rows)
    return 0


if __name__ == "__main__":
    sys.exit(main())
