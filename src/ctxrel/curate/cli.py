"""`ctxrel curate classify|filter|augment|substitute`: find and fix the finetuning data that drives the inversion.

Only the standard library is imported here at the top; each handler imports what it needs, so `ctxrel --help`
stays instant.
"""

from __future__ import annotations

import argparse
import json

DEFAULT_MODEL = "smollm2-135m-instruct"


def _data_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--data", required=True, help="mixture (the built-in C / C+S / S mixture; "
                                                 "mixture:c=0.2,cs=0.4,ci=0.2,s=0.2 sets its shares), a local "
                                                 ".json/.jsonl(.gz) file (Alpaca, chat messages, SQuAD), or a "
                                                 "Hugging Face dataset id (tatsu-lab/alpaca)")
    p.add_argument("--format", default="auto", choices=["auto", "alpaca", "chat", "squad", "mixture"],
                   help="record format (default: from the first record's fields)")
    p.add_argument("--split", default="train", help="split of a hub dataset (default train)")
    p.add_argument("--limit", type=int, help="use the first N records (a reproducible slice); for --data "
                                             "mixture, the mixture size (default 2000)")
    p.add_argument("--seed", type=int, default=0, help="seed of the mixture and of augmentation (default 0)")
    p.add_argument("--out", required=True, help="output directory: data.jsonl + manifest.json (+ reports)")


def _model_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", default=DEFAULT_MODEL, help="reference model: hub id, local directory, .gguf, or "
                                                          f"{DEFAULT_MODEL} (default)")
    p.add_argument("--template", default="auto", choices=["auto", "alpaca", "tulu", "chat"],
                   help="how records are rendered, as the trainer would (auto: chat if the tokenizer has one)")
    p.add_argument("--max-length", type=int, default=512, help="tokens per rendering; longer ones are cut at "
                                                               "the end (default 512)")
    p.add_argument("--batch-size", type=int, help="sequences per forward pass (default 4 on CPU, 32 on GPU)")
    p.add_argument("--device", help="cpu, cuda, cuda:1 ... (default: cuda if available)")
    p.add_argument("--no-progress", action="store_true", help="hide the progress bar")


def add_parsers(sub) -> None:
    cur = sub.add_parser("curate", help="classify, filter and augment instruction data (C / C+S / S)",
                         description="Find and fix the finetuning data that drives context-parametric "
                                     "inversion. Every output directory holds data.jsonl (the trainer reads it "
                                     "as data.source) and manifest.json.")
    curate_sub = cur.add_subparsers(dest="curate_verb", metavar="SUBCOMMAND", required=True)

    c = curate_sub.add_parser(
        "classify", help="C / C+S / S composition from loss with and without context",
        description="Score every record's mean response-token loss with and without its context under a "
                    "reference model (batched, resumable: rerun the same command to continue), classify it as "
                    "S (no context), C+S (context present, loss without it below the threshold) or C, and "
                    "write scores.jsonl, data.jsonl (annotated records), report.json, loss_without_context.png.")
    _data_args(c)
    _model_args(c)
    th = c.add_mutually_exclusive_group()
    th.add_argument("--threshold-quantile", type=float, default=0.25,
                    help="C+S = context records whose loss without context lies below this quantile of the "
                         "context records' losses (default 0.25, the study's lowest 25%%)")
    th.add_argument("--threshold", type=float, help="C+S = loss without context below this value (nats)")
    th.add_argument("--threshold-s-quantile", type=float, metavar="Q",
                    help="C+S = loss without context below this quantile of the no-context (S) records' loss, "
                         "e.g. 0.5: predicted without the context as well as the median pure-recall example")
    c.add_argument("--examples", type=int, default=3, help="examples of each class in report.json (default 3)")
    c.set_defaults(handler=cmd_classify)

    f = curate_sub.add_parser(
        "filter", help="keep context-only / context-critical records, drop records naming listed entities",
        description="Keep records with a context (context-only) or only context-critical C records (drops S "
                    "and the C+S records whose loss without context is lowest), and/or drop records that name "
                    "an entity of a list at word boundaries. Writes data.jsonl, dropped.jsonl (which and why), "
                    "manifest.json.")
    _data_args(f)
    f.add_argument("--keep", default="all", choices=["all", "context-only", "context-critical"])
    dq = f.add_mutually_exclusive_group()
    dq.add_argument("--drop-quantile", type=float, default=0.25,
                    help="context-critical: drop context records below this quantile of loss without context "
                         "(default 0.25)")
    dq.add_argument("--drop-threshold", type=float, help="context-critical: drop context records whose loss "
                                                         "without context is below this value")
    f.add_argument("--scores", metavar="DIR", help="context-critical: reuse the scores of a `curate classify` "
                                                   "run (its --out; same --data and --limit); else they are "
                                                   "computed into --out")
    f.add_argument("--drop-keywords", metavar="LIST", help="countries-capitals (every name of the cf_capitals "
                                                           "benchmark) or a text file with one name per line")
    f.add_argument("--ignore-case", action="store_true", help="match keywords in any case (default: as written)")
    _model_args(f)
    f.set_defaults(handler=cmd_filter)

    a = curate_sub.add_parser(
        "augment", help="mix counterfactual QA examples into a data set",
        description="Mix counterfactual question-answering examples (context contradicts world knowledge; the "
                    "target follows the context) into a data set, rendered in its own format. Seeded.")
    _data_args(a)
    a.add_argument("--counterfactual", required=True, metavar="SOURCE",
                   help="nq-swap=PATH (NQ-Swap JSONL[.gz]: question, sub_context, sub_answer) or facts "
                        "(generated from ctxrel's fact tables)")
    a.add_argument("--ratio", type=float, default=0.10,
                   help="share of counterfactual examples in the output (default 0.10)")
    a.set_defaults(handler=cmd_augment)

    from ctxrel.curate import substitute  # standard library only, like this module

    substitute.add_parser(curate_sub)


def cmd_classify(args) -> int:
    from ctxrel.curate.operations import classify

    r = classify(args.data, args.out, model=args.model, quantile=args.threshold_quantile,
                 threshold=args.threshold, s_quantile=args.threshold_s_quantile, limit=args.limit,
                 fmt=args.format, split=args.split, seed=args.seed,
                 template=args.template, max_length=args.max_length, batch_size=args.batch_size,
                 device=args.device, n_examples=args.examples, progress=not args.no_progress)
    print(r["table"])
    print(f"\nout: {r['out']}/ data.jsonl (annotated records), scores.jsonl, report.json, manifest.json; "
          f"histogram: {r['plot']}")
    return 0


def cmd_filter(args) -> int:
    from ctxrel.curate.operations import filter_records

    r = filter_records(args.data, args.out, keep=args.keep, drop_quantile=args.drop_quantile,
                       drop_threshold=args.drop_threshold, scores=args.scores, drop_keywords=args.drop_keywords,
                       ignore_case=args.ignore_case, limit=args.limit, fmt=args.format, split=args.split,
                       seed=args.seed, model=args.model, template=args.template, max_length=args.max_length,
                       batch_size=args.batch_size, device=args.device, progress=not args.no_progress)
    c = r["counts"]
    print(f"{c['input']} records -> kept {c['kept']} ({c['kept_share']:.1%})")
    for reason, n in c["dropped"].items():
        print(f"  dropped {n:>6}  {reason}")
    if "threshold" in r:
        print(f"  C+S threshold: loss without context < {r['threshold']:.4f} ({r['threshold_rule']})")
    kw = r["keywords"]
    if kw:
        top = list(kw["records_per_name"].items())
        shown = ", ".join(f"{name} {n}" for name, n in top[:20]) + (f", ... ({len(top) - 20} more)"
                                                                      if len(top) > 20 else "")
        print(f"  keywords ({kw['list']}, {kw['names']} names): {kw['records_dropped']} records dropped, "
              f"{kw['names_matched']} names matched{': ' + shown if top else ''}")
    print(f"\nout: {r['out']}/ data.jsonl, dropped.jsonl (which record and why), manifest.json")
    return 0


def cmd_augment(args) -> int:
    from ctxrel.curate.operations import augment

    r = augment(args.data, args.out, counterfactual=args.counterfactual, ratio=args.ratio, seed=args.seed,
                limit=args.limit, fmt=args.format, split=args.split)
    c = r["counts"]
    kind, n = next(iter(c["added"].items()))
    print(f"{c['input']} records + {n} counterfactual ({kind}) = {c['output']} "
          f"(counterfactual share {c['counterfactual_share']:.3f}; {r['repeats']} repeats)")
    for ex in r["examples"][:1]:
        print(f"  e.g. {json.dumps(ex, ensure_ascii=False)[:400]}")
    print(f"\nout: {r['out']}/ data.jsonl, manifest.json")
    return 0
