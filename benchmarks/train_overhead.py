"""Evaluation overhead of a study: time spent scoring checkpoints / time spent training, on the quickstart.

    python benchmarks/train_overhead.py                      # runs `ctxrel study quickstart` into a temp dir
    python benchmarks/train_overhead.py --run runs/quickstart  # reads a finished run instead
    python benchmarks/train_overhead.py key=value ...        # overrides for the quickstart (e.g. eval.limit=30)

Both times are measured inside the same run by the training loop (train_summary.json: `train_s` sums the
optimizer steps, `eval_s` the checkpoint evaluations), so the ratio compares work done on the same machine at the
same moment. Model loading and the trajectory plot count in neither; wall time is printed separately.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--run", help="a finished study run directory to read instead of running the quickstart")
    ap.add_argument("overrides", nargs="*", metavar="KEY=VALUE")
    args = ap.parse_args()

    wall = None
    if args.run:
        run = Path(args.run)
    else:
        from ctxrel.train.study import load_study_config, run_study

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
    if wall is not None:
        print(f"wall: {wall:.1f} s (includes model loading, data preparation, checkpoint writes and the plot)")


if __name__ == "__main__":
    main()
