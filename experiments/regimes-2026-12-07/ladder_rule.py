"""Regime A's pre-registered learning-rate rule (prereg.md in this folder), applied to the ladder's train logs.

    python experiments/regimes-2026-12-07/ladder_rule.py 3e-4=runs/ladder-3e-4 1e-4=runs/ladder-1e-4 3e-5=runs/ladder-3e-5

Smooth each run's training loss with a centred 5-step moving average (the ends use the steps that exist); the curve
oscillates when, after step 8, the smoothed loss rises more than 10% above its running minimum. The chosen rate is
the largest that does not oscillate, else the smallest.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path


def smoothed(losses: list[float], width: int = 5) -> list[float]:
    h = width // 2
    return [sum(losses[max(0, i - h):i + h + 1]) / len(losses[max(0, i - h):i + h + 1]) for i in range(len(losses))]


def oscillates(steps: list[int], losses: list[float], after: int = 8, rise: float = 0.10) -> tuple[bool, float]:
    """(whether it oscillates, the largest rise above the running minimum after `after`, as a share)."""
    s = smoothed(losses)
    low, worst = float("inf"), 0.0
    for step, v in zip(steps, s):
        if step > after and low < float("inf"):
            worst = max(worst, v / low - 1)
        low = min(low, v)
    return worst > rise, worst


def main(argv: list[str]) -> int:
    verdicts = {}
    for arg in argv:
        lr, run = arg.split("=", 1)
        rows = [json.loads(line) for line in (Path(run) / "train_log.jsonl").read_text().splitlines() if line]
        osc, worst = oscillates([r["step"] for r in rows], [r["loss"] for r in rows])
        s = smoothed([r["loss"] for r in rows])
        verdicts[float(lr)] = osc
        print(f"lr {lr}: {len(rows)} steps, smoothed loss {s[0]:.3f} -> min {min(s):.3f} -> end {s[-1]:.3f}; "
              f"largest rise above the running minimum after step 8: {worst:+.0%} -> "
              f"{'oscillates' if osc else 'does not oscillate'}")
    calm = [lr for lr, osc in verdicts.items() if not osc]
    chosen = max(calm) if calm else min(verdicts)
    print(f"chosen: {chosen:g}" + ("" if calm else " (every rate oscillates: the smallest, by the rule)"))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
