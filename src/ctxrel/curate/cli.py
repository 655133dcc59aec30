"""`ctxrel curate classify|filter|augment|substitute`: find and fix the finetuning data that drives the inversion.

Each operation's flags are derived from its config dataclass (`ctxrel.curate.config`). Only the standard library
is imported here at the top; each handler imports what it needs, so `ctxrel --help` stays instant.
"""

from __future__ import annotations

import argparse
import json

from ctxrel.config.flags import add_common, add_flags
from ctxrel.curate.config import DEFAULT_MODEL  # noqa: F401  (the name callers knew here)


def _operation(curate_sub, name: str, cls, handler, **kwargs) -> argparse.ArgumentParser:
    """A `curate` operation: --config, KEY=VALUE overrides and one flag per key of its config dataclass."""
    p = curate_sub.add_parser(name, **kwargs)
    p.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="config overrides, e.g. limit=100")
    add_common(p)
    add_flags(p, cls)
    p.set_defaults(handler=handler)
    return p


def add_parsers(sub, verb: str | None = None) -> None:
    from ctxrel.curate.config import AugmentConfig, ClassifyConfig, FilterConfig, SubstituteConfig

    cur = sub.add_parser("curate", help="classify, filter and augment instruction data (C / C+S / S)",
                         description="Find and fix the finetuning data that drives context-parametric "
                                     "inversion. Every output directory holds data.jsonl (the trainer reads it "
                                     "as data.source) and manifest.json.")
    curate_sub = cur.add_subparsers(dest="curate_verb", metavar="SUBCOMMAND", required=True)
    _operation(curate_sub, "classify", ClassifyConfig, cmd_classify,
               help="C / C+S / S composition from loss with and without context",
               description="Score every record's mean response-token loss with and without its context under a "
                           "reference model (batched, resumable: rerun the same command to continue), classify it "
                           "as S (no context), C+S (context present, loss without it below the threshold) or C, "
                           "and write scores.jsonl, data.jsonl (annotated records), report.json, "
                           "loss_without_context.png.")
    _operation(curate_sub, "filter", FilterConfig, cmd_filter,
               help="keep context-only / context-critical records, drop records naming listed entities",
               description="Keep records with a context (context-only) or only context-critical C records (drops "
                           "S and the C+S records whose loss without context is lowest), and/or drop records that "
                           "name an entity of a list at word boundaries. Writes data.jsonl, dropped.jsonl (which "
                           "and why), manifest.json.")
    _operation(curate_sub, "augment", AugmentConfig, cmd_augment,
               help="mix counterfactual QA examples into a data set",
               description="Mix counterfactual question-answering examples (context contradicts world knowledge; "
                           "the target follows the context) into a data set, rendered in its own format. Seeded.")

    from ctxrel.curate.config import PairsBuildConfig

    _operation(curate_sub, "pairs", PairsBuildConfig, cmd_pairs,
               help="preference pairs for a dpo stage (Context-DPO, KnowPO irrelevant-context, your file)",
               description="Build preference pairs (prompt, chosen, rejected) from ctxrel's fact tables or a "
                           "conflict benchmark's items: Context-DPO pairs (chosen = the context's answer) and "
                           "KnowPO irrelevant-context pairs (chosen = the memorised answer), plus a user's pairs "
                           "file; pairs naming an entity of an evaluation benchmark are refused. Writes "
                           "data.jsonl and manifest.json (the composition).")

    from ctxrel.curate import substitute  # standard library only, like this module

    _operation(curate_sub, "substitute", SubstituteConfig, substitute.run_substitute, **substitute.PARSER)


def cmd_classify(args) -> int:
    from ctxrel.curate.operations import classify
    from ctxrel.config.flags import from_args

    r = classify(from_args(args))
    print(r["table"])
    print(f"\nout: {r['out']}/ data.jsonl (annotated records), scores.jsonl, report.json, manifest.json; "
          f"histogram: {r['plot']}")
    return 0


def cmd_filter(args) -> int:
    from ctxrel.curate.operations import filter_records
    from ctxrel.config.flags import from_args

    r = filter_records(from_args(args))
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
    from ctxrel.config.flags import from_args

    r = augment(from_args(args))
    c = r["counts"]
    kind, n = next(iter(c["added"].items()))
    print(f"{c['input']} records + {n} counterfactual ({kind}) = {c['output']} "
          f"(counterfactual share {c['counterfactual_share']:.3f}; {r['repeats']} repeats)")
    for ex in r["examples"][:1]:
        print(f"  e.g. {json.dumps(ex, ensure_ascii=False)[:400]}")
    print(f"\nout: {r['out']}/ data.jsonl, manifest.json")
    return 0


def cmd_pairs(args) -> int:
    from ctxrel.curate.pairs import build_pairs
    from ctxrel.config.flags import from_args

    r = build_pairs(from_args(args))
    c = r["counts"]
    kinds = ", ".join(f"{k} {n}" for k, n in c["kinds"].items())
    print(f"{c['pairs']} pairs ({kinds}); refused for naming an evaluation entity: "
          f"{sum(c['refused_overlap'].values())} {c['refused_overlap'] or ''}; invalid skipped: "
          f"{sum(c['skipped_invalid'].values())}")
    for ex in r["examples"][:1]:
        print(f"  e.g. {json.dumps(ex, ensure_ascii=False)[:300]}")
    print(f"\nout: {r['out']}/ data.jsonl, manifest.json")
    return 0
