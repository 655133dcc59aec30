"""Evaluation: a model (or a series of checkpoints) scored on benchmarks into a run directory (`ctxrel eval`).

Owns `run` (`run_eval`: settings, inputs, models, the run directory), `engine` (the one scoring engine: a
benchmark under every (context kind, decoding) pair, resume, metric rows), `selection` (the --limit items, the
window, the knowledge filter), `variants` (the pairs wanted, their accuracy rows, the do-no-harm table), `records`
(what one scored item becomes), `probe_passes` (eval.probes and --attention), `shards` (the items dealt over
processes), `saved_run` (`eval --run`: a study's saved checkpoints) and `series` (a checkpoint series ctxrel did
not train). It may import core/, config/, rundir/, benchmarks/, standard/ (tasks and scoring), backends/ and
models/; never train/, analysis/, report/ or the verbs. This face loads its names on first use (`from
ctxrel.evaluate import run_eval` keeps working and imports no torch).
"""

_LAZY = {"run_eval": "run", "standard_tasks": "run", "load_standard": "run", "evaluate_standard": "run",
         "LIKELIHOOD_SUFFIX": "run", "score_benchmark": "engine", "evaluate_benchmark": "engine",
         "evaluate_variants": "engine", "select_items": "selection", "knowledge_filter": "selection",
         "check_variants": "variants", "BenchmarkResult": "records", "score_series": "series",
         "score_run": "saved_run"}
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
