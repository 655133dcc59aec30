"""The study's one-layer theory as a runnable simulator (`ctxrel theory`).

onelayer.py: the model, its data and full-batch gradient descent (pure functions on torch tensors).
driver.py:   the propositions / theorem / mitigation as presets with their sign checks, and `run_theory`.
onelayer is pure (the lowest layer); driver is the `ctxrel theory` verb and may import anything below the verbs.
"""

from ctxrel.theory.driver import PRESETS, run_theory

__all__ = ["PRESETS", "run_theory"]
