"""Analysis of run directories: trajectory statistics, inversion verdict and item flips (pure functions).

The parts and the words (verdict, memory return): docs/design.md, 'Parts' and 'Words'."""

from ctxrel.analysis.flips import flip_table, flips_by_category, mcnemar_exact, resolve_checkpoint
from ctxrel.analysis.inversion import Diff, Point, paired_bootstrap_diff, seeds_diff, smooth, trajectory_stats
from ctxrel.analysis.items import item_outcomes, item_values

__all__ = ["Diff", "Point", "flip_table", "flips_by_category", "item_outcomes", "item_values", "mcnemar_exact",
           "paired_bootstrap_diff", "resolve_checkpoint", "seeds_diff", "smooth", "trajectory_stats"]
