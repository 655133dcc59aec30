"""Verb `ctxrel export FORMAT ...`: a run's results in the formats other tools read. Standard library only at the
top (`ctxrel --help` stays instant); each format's handler imports what it needs. Formats: parquet (the per-item
table and the metric rows, with a dataset card; `ctxrel.parquet_export`)."""

from __future__ import annotations

import argparse


def add_parsers(sub, verb: str | None = None) -> None:
    ex = sub.add_parser("export", help="a run's results in other tools' formats (parquet)",
                        description="Write a run's results in a format other tools read. ctxrel writes only into a "
                                    "new or empty --out, or one it wrote before (its ctxrel-run.json marker).")
    formats = ex.add_subparsers(dest="export_format", metavar="FORMAT", required=True)
    p = formats.add_parser("parquet", help="per-item table + metric rows as Parquet, with a dataset card",
                           description="Write RUN's per-item results (one row per item x sample x checkpoint x "
                                       "benchmark variant) and metric rows as Parquet files with a dataset card "
                                       "(README.md), readable with pandas and datasets.load_dataset('parquet'), "
                                       "ready to upload as an HF dataset. Needs pyarrow (extra `export`).")
    p.add_argument("run", metavar="RUN", help="run directory (ctxrel eval / study)")
    p.add_argument("--out", required=True, metavar="DIR", help="output directory (new, empty, or an earlier export)")
    p.add_argument("--push", metavar="REPO", help="also upload DIR as the HF dataset REPO (needs the network and "
                                                  "a token; refused while HF_HUB_OFFLINE is set)")
    p.set_defaults(handler=cmd_parquet)


def cmd_parquet(args: argparse.Namespace) -> int:
    from ctxrel.errors import CtxrelError
    from ctxrel.parquet_export import export_parquet, hub_offline, push

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
