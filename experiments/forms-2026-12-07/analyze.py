"""The pre-registered analysis of the context-form ablation (prereg.md in this folder).

    python experiments/forms-2026-12-07/analyze.py \
        0=runs/forms-s0-full,8=runs/forms-s0-step8,128=runs/forms-s0-step128 \
        0=runs/forms-s0-full,8=runs/forms-s1-step8,128=runs/forms-s1-step128 ... \
        --out experiments/forms-2026-12-07/results.csv > experiments/forms-2026-12-07/table.md

One positional argument per seed: STEP=DIR pairs, DIR a study (its checkpoint step-STEP is read) or an evaluation
of one checkpoint (its only checkpoint is read). Step 0 of every seed is the base model (amendment 1).

For every benchmark of the runs: cf-acc and par-acc at step 0, early (step 8, amendment 1; fixed in advance, no
peak chosen) and end (step 128); the early-to-end change per seed and pooled over seeds, each with a paired item
bootstrap 95% interval (2,000 resamples; an item keeps its early and end together, and in the pooled interval its
seeds together); and, for each form, the difference from the `study` form of the same relation on the same items.
"""

from __future__ import annotations

import argparse
import csv
import sys
from pathlib import Path

import numpy as np

from ctxrel.rundir.files import read_records

EARLY, END, START = (8, 16), 128, 0
N_BOOT = 2000


def _checkpoint_dir(run: Path, step: int) -> Path:
    evals = run / "evals"
    named = evals / f"step-{step:06d}"
    if named.is_dir():
        return named
    dirs = [d for d in evals.iterdir() if d.is_dir()]
    if len(dirs) != 1:
        raise SystemExit(f"{run}: no step-{step:06d} and not a single-checkpoint evaluation")
    return dirs[0]


def seed_tables(spec: str) -> dict[str, dict[str, dict[int, tuple[float, float]]]]:
    """{benchmark: {item key: {step: (cf, par)}}} of one seed from its STEP=DIR pairs; the key drops the
    benchmark name so forms pair by item."""
    out: dict[str, dict[str, dict[int, tuple[float, float]]]] = {}
    for pair in spec.split(","):
        step, run = pair.split("=", 1)
        ckpt = _checkpoint_dir(Path(run), int(step))
        for f in sorted(ckpt.glob("*.jsonl")):
            if f.name.count(".") > 1:  # .nocontext.jsonl, .attention.jsonl, ...
                continue
            by_id: dict[str, list[tuple[float, float]]] = {}
            for r in read_records(f):
                by_id.setdefault(r["id"].split("/", 1)[1], []).append(
                    (float(bool(r["contains_context"])), float(bool(r["contains_parametric"]))))
            table = out.setdefault(f.stem, {})
            for key, vals in by_id.items():
                table.setdefault(key, {})[int(step)] = tuple(np.mean(vals, axis=0))
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
    ap.add_argument("seeds", nargs="+", help="per seed: STEP=DIR,STEP=DIR,...")
    ap.add_argument("--out", help="CSV of every number in the table")
    ap.add_argument("--early", default="8", help="early steps (amendment 1: 8; seed 0 also has 16)")
    ap.add_argument("--end", type=int, default=128, help="end step (pre-registered: 128)")
    args = ap.parse_args(argv)
    global EARLY, END
    EARLY, END = tuple(int(s) for s in args.early.split(",")), args.end
    runs = [seed_tables(spec) for spec in args.seeds]
    need = (START, *EARLY, END)
    benches = sorted(b for b in set.intersection(*(set(r) for r in runs))
                     if all(any(all(s in v for s in need) for v in r[b].values()) for r in runs))
    rows, cells = [], {}
    for b in benches:
        tables = [r[b] for r in runs]
        keys, cf = per_item(tables, 0)
        _, par = per_item(tables, 1)
        cells[b] = (keys, cf, par)
    print(f"Seeds: {'; '.join(args.seeds)}. Steps: start {START}, early = mean of {EARLY}, end "
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
