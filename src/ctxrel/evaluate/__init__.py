"""Evaluation: a model (or a series of checkpoints) scored on benchmarks into a run directory (`ctxrel eval`).

Owns `run` (`run_eval`: benchmarks x model -> records + metric rows, resume), `variants` (every (context kind,
decoding) pair of a benchmark), `records` (what one scored item becomes), `probe_passes` (eval.probes at one
checkpoint), `shards` (the items dealt over processes) and `series` (a checkpoint series ctxrel did not train).
It may import core/, config/, rundir/, benchmarks/, standard/ (tasks and scoring), backends/ and models/; never
train/, analysis/, report/ or the verbs. This face loads its names on first use (`from ctxrel.evaluate import
run_eval` keeps working and imports no torch).
"""

_LAZY = {"run_eval": "run", "select_items": "run", "evaluate_benchmark": "run", "knowledge_filter": "run",
         "standard_tasks": "run", "load_standard": "run", "evaluate_standard": "run", "LIKELIHOOD_SUFFIX": "run",
         "evaluate_variants": "variants", "check_variants": "variants", "BenchmarkResult": "records",
         "score_series": "series"}
__all__ = sorted(_LAZY)


def __getattr__(name: str):
    if name in _LAZY:
        import importlib

        value = getattr(importlib.import_module(f"ctxrel.evaluate.{_LAZY[name]}"), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'ctxrel.evaluate' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))
