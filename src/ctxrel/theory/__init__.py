"""The study's one-layer theory as a runnable simulator (`ctxrel theory`).

onelayer.py: the model, its data and full-batch gradient descent (pure functions on torch tensors).
presets.py:  the propositions / theorem / mitigation as presets with their sign checks, and `run_theory`.
"""

from ctxrel.theory.presets import PRESETS, run_theory

__all__ = ["PRESETS", "run_theory"]
