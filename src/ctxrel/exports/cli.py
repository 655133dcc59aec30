"""`ctxrel export lm-eval BENCHMARK --out DIR`, `ctxrel export eee RUN --out DIR` and `ctxrel export parquet RUN
--out DIR`: the verb of ctxrel.exports.

Imports only the standard library at the top (ctxrel --help stays instant); the work is imported in the handlers.
"""

from __future__ import annotations

from ctxrel.core.errors import CtxrelError


def add_parsers(sub, verb: str | None = None) -> None:
    from ctxrel.config.settings import RunConfig
    from ctxrel.config.flags import add_common, add_flags

    p = sub.add_parser("export", help="hand results to other tools: an lm-eval task, Every Eval Ever records, "
                                      "Parquet",
                       description="Export a conflict benchmark as an lm-evaluation-harness task, or a run's "
                                   "results as Every Eval Ever records or as a Parquet dataset.")
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
    add_flags(t, RunConfig, skip=("eval.benchmarks", "series.revisions", "series.checkpoints",
                                   "series.on_duplicate"))
    t.set_defaults(handler=cmd_export_lm_eval)
    e = kinds.add_parser("eee", help="a run's summary and per-item results as Every Eval Ever records",
                         description="Write a run directory's metric rows and per-item records in the Every Eval "
                                     "Ever schema (one aggregate file per checkpoint, with its instance-level "
                                     "JSONL).")
    e.add_argument("run", metavar="RUN", help="a run directory (ctxrel eval or ctxrel study)")
    e.add_argument("--out", required=True, metavar="DIR", help="a new or empty directory (or one ctxrel wrote "
                                                               "an EEE export into)")
    e.set_defaults(handler=cmd_export_eee)
    q = kinds.add_parser("parquet", help="a run's per-item table and metric rows as Parquet, with a dataset card",
                         description="Write RUN's per-item results (one row per item x sample x checkpoint x "
                                     "benchmark variant) and metric rows as Parquet files with a dataset card "
                                     "(README.md), readable with pandas and datasets.load_dataset('parquet'), "
                                     "ready to upload as an HF dataset. Needs pyarrow (extra `export`).")
    q.add_argument("run", metavar="RUN", help="run directory (ctxrel eval / study)")
    q.add_argument("--out", required=True, metavar="DIR", help="output directory (new, empty, or an earlier "
                                                               "Parquet export)")
    q.add_argument("--push", metavar="REPO", help="also upload DIR as the HF dataset REPO (needs the network and "
                                                  "a token; refused while HF_HUB_OFFLINE is set)")
    q.set_defaults(handler=cmd_export_parquet)


def cmd_export_lm_eval(args) -> int:
    from ctxrel.config.settings import RunConfig, load_config
    from ctxrel.exports.lmeval_task import export_lm_eval
    from ctxrel.config.flags import given

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


def cmd_export_parquet(args) -> int:
    from ctxrel.exports.parquet import export_parquet, hub_offline, push

    if args.push is not None and hub_offline():  # refused before anything is written
        raise CtxrelError(f"--push {args.push}: the HF hub is off (HF_HUB_OFFLINE / HF_DATASETS_OFFLINE is set); "
                          "export without --push and upload the folder once online")
    if args.push is not None and args.push.count("/") != 1:
        raise CtxrelError(f"--push {args.push!r}: expected a dataset repository id OWNER/NAME")
    res = export_parquet(args.run, args.out)
    print(f"wrote {res['items']} item rows and {res['metrics']} metric rows:")
    for f in res["files"]:
        print(f"  {f}")
    print(f"read: pandas.read_parquet('{res['files'][1]}'), or datasets.load_dataset('parquet', "
          f"data_files='{res['files'][1]}')")
    if args.push is not None:
        print(f"pushed: {push(res['out'], args.push)}")
    return 0
