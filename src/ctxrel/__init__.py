"""ctxrel: watch and fix how a language model weighs its context against what it memorised.

From Python (each name is imported on first use, so `import ctxrel` and `ctxrel --help` stay instant):

    ctxrel.load(RUN or [RUNS], labels=None, seeds=False) -> Results   .metrics, .items (pandas), .report()
    ctxrel.run_eval(config) / ctxrel.run_study(config)      -> Results   (`ctxrel eval` / `ctxrel study`)
    ctxrel.make_config("eval" | "study", source, overrides) -> RunConfig / StudyConfig
    ctxrel.RunConfig, ctxrel.StudyConfig, ctxrel.Results, ctxrel.Report, ctxrel.Verdict

See `ctxrel.api` and the docs page python-api.md.
"""

__version__ = "0.1.0"

# public name -> the module that defines it (ctxrel.api): read on first access (PEP 562)
# (never a submodule's name: importing ctxrel.config.settings would replace a `ctxrel.config.settings` function by the module)
_LAZY = {name: "ctxrel.api" for name in ("load", "run_eval", "run_study", "make_config", "Results", "Report",
                                         "Verdict", "RunConfig", "StudyConfig")}
__all__ = ["__version__", *_LAZY]


def __getattr__(name: str):
    if name in _LAZY:
        from ctxrel import api

        value = getattr(api, name)
        globals()[name] = value  # later lookups skip this function
        return value
    raise AttributeError(f"module 'ctxrel' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))
