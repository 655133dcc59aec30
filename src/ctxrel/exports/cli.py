"""`ctxrel export lm-eval BENCHMARK --out DIR` and `ctxrel export eee RUN --out DIR`: the verb of ctxrel.exports.

Imports only the standard library at the top (ctxrel --help stays instant); the work is imported in the handlers.
"""

from __future__ import annotations

from ctxrel.errors import CtxrelError


def add_parsers(sub, verb: str | None = None) -> None:
    from ctxrel.config import RunConfig
    from ctxrel.flags import add_common, add_flags

    p = sub.add_parser("export", help="hand results to other tools: an lm-eval task, Every Eval Ever records",
                       description="Export a conflict benchmark as an lm-evaluation-harness task, or a run's "
                                   "results as Every Eval Ever records.")
    kinds = p.add_subparsers(dest="export_kind", metavar="KIND", required=True)
    t = kinds.add_parser("lm-eval", help="a conflict benchmark as an lm-evaluation-harness task (YAML + utils.py)",
                         description="Write an lm-evaluation-harness task that scores BENCHMARK's items with the "
                                     "prompts `ctxrel eval` renders for the same settings, and reports cf_acc, "
                                     "par_acc and memorization_ratio with ctxrel's matching rules. Run it with "
                                     "lm_eval --include_path DIR --tasks ctxrel_BENCHMARK.")
    t.add_argument("benchmark", metavar="BENCHMARK", help="a conflict benchmark: NAME, NAME=PATH or PATH (as "
                                                          "--benchmark of ctxrel eval)")
    t.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="config overrides, e.g. eval.limit=40")
    add_common(t)
    add_flags(t, RunConfig, skip=("eval.benchmarks",))
    t.set_defaults(handler=cmd_export_lm_eval)
    e = kinds.add_parser("eee", help="a run's summary and per-item results as Every Eval Ever records",
                         description="Write a run directory's metric rows and per-item records in the Every Eval "
                                     "Ever schema (one aggregate file per checkpoint, with its instance-level "
                                     "JSONL).")
    e.add_argument("run", metavar="RUN", help="a run directory (ctxrel eval or ctxrel study)")
    e.add_argument("--out", required=True, metavar="DIR", help="a new or empty directory (or one ctxrel wrote "
                                                               "an EEE export into)")
    e.set_defaults(handler=cmd_export_eee)


def cmd_export_lm_eval(args) -> int:
    from ctxrel.config import RunConfig, load_config
    from ctxrel.exports.lmeval_task import export_lm_eval
    from ctxrel.flags import given

    settings = given(args)
    if "out" not in settings:
        raise CtxrelError("ctxrel export lm-eval needs --out DIR (a new or empty directory)")
    cfg = load_config(RunConfig, args.config, list(args.overrides or []), settings, verb="eval")
    done = export_lm_eval(cfg, args.benchmark, cfg.out)
    print(f"wrote {', '.join(done['files'])} to {done['out']}: task {done['task']}, {done['n_items']} items, "
          f"template {done['template']}")
    print(f"run: lm_eval --include_path {done['out']} --tasks {done['task']} --model hf --model_args "
          "pretrained=MODEL (ctxrel must be importable there)")
    return 0


def cmd_export_eee(args) -> int:
    from ctxrel.exports.every_eval import export_eee

    done = export_eee(args.run, args.out)
    print(f"wrote {done['n_aggregate']} aggregate file(s) and {done['n_instances']} instance records to "
          f"{done['out']} (schema {done['schema_version']})")
    return 0
