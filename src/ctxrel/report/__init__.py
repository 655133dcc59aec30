"""Reports of a study: plots and tables read from its run directory, never from a live model (DESIGN §3-4)."""

from ctxrel.report.trajectory import format_trajectory, plot_trajectory, trajectory_rows

__all__ = ["format_trajectory", "plot_trajectory", "trajectory_rows"]
