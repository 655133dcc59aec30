"""Analysis of run directories: trajectory statistics, inversion verdict and item flips (pure functions; DESIGN §3)."""
