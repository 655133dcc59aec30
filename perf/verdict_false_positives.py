"""False-positive rates of the inversion verdicts on planted nulls (no true change anywhere).

Eight checkpoints (steps 0 .. 128) of one true value; three kinds of noise:

  items       every answer drawn afresh at every checkpoint (item sampling noise only), 1 seed, 200 items
  checkpoint  as `items`, plus a shift of the whole checkpoint (sd .05, shared by all its items: the model at
              that step), 1 seed
  seeds       3 seeds of 120 items, each seed with its own checkpoint shifts (sd .05)

For each, the share of simulated studies on which a verdict claims a significant rise, a significant drop, or
anything but "no significant change": today's verdict (inversion.trajectory_stats: the peak chosen and tested on
the same items), the item-split verdict (honest.honest_stats: the peak chosen on a random half of the items,
tested on the other half) and, with 3 seeds, leave-one-seed-out.

    PYTHONPATH=src python perf/verdict_false_positives.py [N_SIMS]   # default 500; ~2 min per 500 on 1 core
"""

from __future__ import annotations

import sys
import time

import numpy as np

from ctxrel.analysis.honest import false_positive_rates
from ctxrel.analysis.inversion import Point

STEPS = [0, 8, 16, 24, 32, 48, 64, 128]


def null(rng, *, n_items=200, p=0.6, shift=0.0, n_seeds=1):
    pts = []
    shifts = rng.normal(0, shift, size=(len(STEPS), n_seeds)) if shift else np.zeros((len(STEPS), n_seeds))
    for t, s in enumerate(STEPS):
        pts.append(Point(s, f"step-{s:06d}", [{f"i{k}": float(v) for k, v in
                                               enumerate(rng.random(n_items) < p + shifts[t, j])}
                                              for j in range(n_seeds)]))
    return pts


SCENARIOS = {
    "items": lambda rng: null(rng),
    "checkpoint": lambda rng: null(rng, shift=0.05),
    "seeds": lambda rng: null(rng, n_items=120, shift=0.05, n_seeds=3),
}


def main() -> None:
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 500
    print(f"{n} planted nulls per scenario, 8 checkpoints, bootstrap 200; share claiming a change (95% level)")
    print(f"{'scenario':<11} {'verdict':<8} {'rise':>6} {'drop':>6} {'any':>6}")
    for name, make in SCENARIOS.items():
        t0 = time.perf_counter()
        rates = false_positive_rates(make, n, n_boot=200, seed=1)
        for v in ("today", "honest", "loso"):
            if f"{v}_any" in rates:
                print(f"{name:<11} {v:<8} {rates[v + '_rise']:>6.3f} {rates[v + '_drop']:>6.3f} "
                      f"{rates[v + '_any']:>6.3f}")
        print(f"{'':<11} ({time.perf_counter() - t0:.0f} s)")


if __name__ == "__main__":
    main()
