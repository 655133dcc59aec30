"""Reports of a study: plots and tables read from its run directory, never from a live model
(docs/design.md, 'The run-directory contract').

`trajectory` is the study's own table and plot; `build_report` (ctxrel report) adds statistics, verdict, flips
and comparisons, as one self-contained HTML page plus PNGs and summary.json."""

from ctxrel.report.build import build_report
from ctxrel.report.trajectory import format_trajectory, plot_trajectory, trajectory_rows

__all__ = ["build_report", "format_trajectory", "plot_trajectory", "trajectory_rows"]
