"""The pre-registered analysis of three seeds of `multistage` and `multistage-knowpo` (prereg.md in this folder),
items 2 and 3: the do-no-harm table and the primary contrasts. Item 1 (the verdict per stage) is
`ctxrel report RUNS --seeds --from sft --to final`.

    python experiments/stages-2026-12-07/analyze.py \
        --multistage runs/multistage-s0 runs/multistage-s1 runs/multistage-s2 \
        --knowpo runs/multistage-knowpo-s0 runs/multistage-knowpo-s1 runs/multistage-knowpo-s2

Runs are paired by position (seed number). For each run and each context kind, the per-item greedy accuracy is
read from the records of the checkpoints at step 0, 32 (end of sft) and 56 (end of dpo): conflict = the context's
answer (cf-acc), gold = the answer (context and memory agree), irrelevant = the memorised answer. A change is
reported per seed, as a mean with a t interval over seeds (`seeds_diff`), and pooled over seeds with a paired item
bootstrap interval (each item's seed mean at both steps kept together; 2,000 resamples).
"""

from __future__ import annotations

import argparse
from pathlib import Path

from ctxrel.analysis.inversion import Diff, mean_over_seeds, paired_bootstrap_diff, seeds_diff
from ctxrel.evaluate.variants import acc_value
from ctxrel.rundir.files import read_records

STEPS = {"start": 0, "end of sft": 32, "end of dpo": 56}
KINDS = {"conflict": "cf_capitals.jsonl", "gold": "cf_capitals[gold].jsonl",
         "irrelevant": "cf_capitals[irrelevant].jsonl"}


def item_acc(run: Path, step: int, kind: str) -> dict[str, float]:
    """{item id: greedy accuracy of its kind} at one checkpoint of one run."""
    f = run / "evals" / f"step-{step:06d}" / KINDS[kind]
    if not f.is_file():
        raise SystemExit(f"{f}: missing (is the run finished?)")
    return {r["id"]: acc_value(r, kind) for r in read_records(f)}


def fmt(d: Diff) -> str:
    star = "*" if d.significant else ""
    return f"{d.estimate:+.3f} [{d.ci_low:+.3f}, {d.ci_high:+.3f}]{star}"


def change(runs: list[Path], kind: str, a: int, b: int) -> tuple[list[float], Diff, Diff, dict[str, float]]:
    """Per-seed change b - a, its t interval over seeds, its pooled item interval, and each item's mean change."""
    before = [item_acc(r, a, kind) for r in runs]
    after = [item_acc(r, b, kind) for r in runs]
    per_seed = [sum(y.values()) / len(y) - sum(x.values()) / len(x) for x, y in zip(before, after)]
    over_seeds = seeds_diff([0.0] * len(per_seed), per_seed)
    mb, ma = mean_over_seeds(before), mean_over_seeds(after)
    items = paired_bootstrap_diff(mb, ma)
    return per_seed, over_seeds, items, {i: ma[i] - mb[i] for i in mb if i in ma}


def no_harm_table(name: str, runs: list[Path]) -> list[str]:
    lines = [f"### {name} ({len(runs)} seeds: {', '.join(r.name for r in runs)})", "",
             "| context kind | " + " | ".join(f"{k} (step {s})" for k, s in STEPS.items()) + " |",
             "|---|" + "---|" * len(STEPS)]
    for kind in KINDS:
        cells = []
        for step in STEPS.values():
            vals = [sum(v.values()) / len(v) for v in (item_acc(r, step, kind) for r in runs)]
            cells.append(f"{sum(vals) / len(vals):.3f} ({' '.join(f'{v:.3f}' for v in vals)})")
        lines.append(f"| {kind} | " + " | ".join(cells) + " |")
    return lines + [""]


def contrast_line(label: str, per_seed: list[float], seeds: Diff, items: Diff) -> str:
    return (f"| {label} | {' '.join(f'{v:+.3f}' for v in per_seed)} | {fmt(seeds)} | {fmt(items)} |")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--multistage", nargs="+", type=Path, required=True)
    ap.add_argument("--knowpo", nargs="+", type=Path, required=True)
    args = ap.parse_args()
    sft, dpo = STEPS["end of sft"], STEPS["end of dpo"]
    out = ["## Do-no-harm table (greedy accuracy: mean of the seeds, each seed's value in brackets)", ""]
    out += no_harm_table("multistage", args.multistage) + no_harm_table("multistage-knowpo", args.knowpo)
    out += ["## Contrasts (* = interval excludes 0; the call is made on the interval over seeds)", "",
            "| contrast | per seed | mean, t interval over seeds | pooled, item bootstrap |", "|---|---|---|---|"]
    changes = {}
    for preset, runs in (("multistage", args.multistage), ("multistage-knowpo", args.knowpo)):
        for kind, what in (("conflict", "cf-acc"), ("irrelevant", "irrelevant-context acc"), ("gold", "gold acc")):
            for (a, b, stage) in ((sft, dpo, "dpo stage"), (0, sft, "sft stage")):
                per_seed, seeds, items, by_item = change(runs, kind, a, b)
                changes[preset, kind, stage] = (per_seed, by_item)
                out.append(contrast_line(f"{preset}: {stage} change of {what} (step {b} - {a})", per_seed, seeds,
                                         items))
    (ms, ms_items), (kp, kp_items) = changes["multistage", "irrelevant", "dpo stage"], \
        changes["multistage-knowpo", "irrelevant", "dpo stage"]
    n = min(len(ms), len(kp))
    paired = seeds_diff(ms[:n], kp[:n])
    items = paired_bootstrap_diff(ms_items, kp_items)
    out.append(contrast_line("knowpo - multistage: dpo-stage change of irrelevant-context acc (seeds paired)",
                             [k - m for m, k in zip(ms[:n], kp[:n])], paired, items))
    print("\n".join(out))


if __name__ == "__main__":
    main()
