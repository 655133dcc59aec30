"""The per-seed trajectory table of a regime (prereg.md in this folder): cf-acc / par-acc by generation and M_C by
likelihood at every scored checkpoint of each run, read from the runs' metric tables with ctxrel's own reader.

    python experiments/regimes-2026-12-07/table.py runs/long-s0 runs/long-s1 runs/long-s2
    python experiments/regimes-2026-12-07/table.py runs/long-s0 --benchmark biographies

Prints one Markdown table per benchmark: a row per run, a column per step, cells "cf-acc / par-acc (M_C)".
The verdicts and intervals are `ctxrel report RUNS` and `ctxrel report RUNS --seeds`; this is only the table.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import NoReturn

from ctxrel.analysis.rundata import load_run, metric_series


def cells(run, benchmark: str) -> dict[int, str]:
    """{step: "cf / par (M_C)"} of one run; M_C is left out where the run has no likelihood rows."""
    cf = {s: v for s, v, _, _ in metric_series(run, benchmark, "cf_acc")}
    par = {s: v for s, v, _, _ in metric_series(run, benchmark, "par_acc")}
    mc = {s: v for s, v, _, _ in metric_series(run, f"{benchmark}@likelihood", "m_c")}
    out = {}
    for step in sorted(cf):
        text = f"{cf[step]:.2f} / {par.get(step, float('nan')):.2f}".replace("0.", ".")
        if step in mc:
            text += f" ({mc[step]:.2f})".replace("0.", ".")
        out[step] = text
    return out


def fail(message: str) -> NoReturn:
    """One sentence on stderr, exit 2 (the project's convention for bad input)."""
    print(message, file=sys.stderr)
    raise SystemExit(2)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("runs", nargs="+", type=Path)
    ap.add_argument("--benchmark", default="cf_capitals_moved")
    args = ap.parse_args()
    table = {}
    for path in args.runs:
        if not (path / "metrics.csv").is_file():
            fail(f"{path}: no metrics.csv (not a run directory, or not started)")
        run = load_run(path)
        table[path.name] = cells(run, args.benchmark)
        if not table[path.name]:
            names = sorted({r["benchmark"] for r in run.rows if "@" not in r["benchmark"]})
            fail(f"{path}: no cf_acc rows of benchmark {args.benchmark!r} (it has: {', '.join(names) or 'none'})")
    steps = sorted({s for row in table.values() for s in row})
    print(f"{args.benchmark}: cf-acc / par-acc (M_C) by step\n")
    print("| run | " + " | ".join(str(s) for s in steps) + " |")
    print("|---|" + "---|" * len(steps))
    for name, row in table.items():
        print(f"| {name} | " + " | ".join(row.get(s, "") for s in steps) + " |")


if __name__ == "__main__":
    main()
