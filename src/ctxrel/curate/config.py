"""`ctxrel curate`'s settings: one dataclass per operation, built like every verb's (`config.load_config`:
--config FILE or KEY=VALUE, then the flags derived from these fields by `ctxrel.config.flags`).

Keys are flat (`limit=100 threshold_quantile=0.5`); each field's comment is its `--help` line. No torch here:
the parsers are built without it.
"""

from __future__ import annotations

from dataclasses import dataclass

from ctxrel.config.flags import option
from ctxrel.core.prompts import TRAIN_TEMPLATES

DEFAULT_MODEL = "smollm2-135m-instruct"
FORMATS = ("auto", "alpaca", "chat", "squad", "mixture")


@dataclass
class DataSettings:
    # mixture (the built-in C / C+S / S mixture; mixture:c=0.2,cs=0.4,ci=0.2,s=0.2 sets its shares), a local
    # .json/.jsonl(.gz) file (Alpaca, chat messages, SQuAD), or a Hugging Face dataset id (tatsu-lab/alpaca)
    data: str | None = option(None, required=True)
    format: str = option("auto", choices=FORMATS)  # record format (auto: from the first record's fields)
    split: str = "train"  # split of a hub dataset
    # use the first N records (a reproducible slice); for data=mixture, the mixture size (None = 2000)
    limit: int | None = None
    seed: int = 0  # seed of the mixture and of augmentation
    out: str | None = option(None, required=True)  # output directory: data.jsonl + manifest.json (+ reports)


@dataclass
class ModelSettings:
    model: str = DEFAULT_MODEL  # reference model: hub id, local directory, .gguf, or smollm2-135m-instruct
    template: str = option("auto", choices=TRAIN_TEMPLATES)  # how records are rendered, as the trainer would
    max_length: int = 512  # tokens per rendering; longer ones are cut at the end
    batch_size: int | None = None  # sequences per forward pass (None = 4 on CPU, 32 on GPU)
    device: str | None = None  # cpu, cuda, cuda:1 ... (None = cuda if available)
    progress: bool = True  # show a progress bar


@dataclass
class ClassifyConfig(ModelSettings, DataSettings):
    # C+S = context records whose loss without context lies below this quantile of the context records' losses
    # (the study's lowest 25%)
    threshold_quantile: float | None = option(0.25, group="threshold")
    threshold: float | None = option(None, group="threshold")  # C+S = loss without context below this (nats)
    # C+S = loss without context below this quantile of the no-context (S) records' loss, e.g. 0.5: predicted
    # without the context as well as the median pure-recall example
    threshold_s_quantile: float | None = option(None, group="threshold")
    examples: int = 3  # examples of each class in report.json


@dataclass
class FilterConfig(ModelSettings, DataSettings):
    # all | context-only (records with a context) | context-critical (C records only: drops S and the C+S
    # records whose loss without context is lowest)
    keep: str = option("all", choices=("all", "context-only", "context-critical"))
    # context-critical: drop context records below this quantile of loss without context
    drop_quantile: float | None = option(0.25, group="drop")
    # context-critical: drop context records whose loss without context is below this value
    drop_threshold: float | None = option(None, group="drop")
    # context-critical: reuse the scores of a `curate classify` run (its out; same data and limit); else they
    # are computed into out
    scores: str | None = None
    # countries-capitals (every name of the cf_capitals benchmark) or a text file with one name per line
    drop_keywords: str | None = None
    ignore_case: bool = False  # match keywords in any case (false: as written)


@dataclass
class AugmentConfig(DataSettings):
    # nq-swap=PATH (NQ-Swap JSONL[.gz]: question, sub_context, sub_answer) or facts (generated from ctxrel's
    # fact tables)
    counterfactual: str | None = option(None, required=True)
    ratio: float = 0.10  # share of counterfactual examples in the output


@dataclass
class SubstituteConfig:
    text: str | None = option(None, required=True)  # text file to rewrite, or - for stdin
    entity: str | None = option(None, required=True)  # the name to replace, e.g. "William Shakespeare"
    replacement: str | None = option(None, flag="--with", required=True)  # the new name, e.g. "Julius Caesar"
    # a phrase never to touch (case-sensitive; the flag is repeatable), e.g. 'Washington State'
    protect: list[str] = option(factory=list)
    out: str = "-"  # where to write the new text (- = stdout)
    report: str | None = None  # also write the full report as JSON to this file


@dataclass
class PairsBuildConfig:
    # facts (ctxrel's fact tables, disjoint from the evaluation benchmarks) or a conflict benchmark whose items
    # become pairs (NAME, NAME=PATH or a file, as --benchmark takes)
    source: str = "facts"
    n: int = 256  # pairs built (from a benchmark: at most one of each kind per item)
    irrelevant: float = 0.0  # share of KnowPO irrelevant-context pairs (chosen = memory); the rest Context-DPO
    user: str | None = None  # a pairs file (prompt, chosen, rejected) to add, validated and guarded like the rest
    skip_invalid: bool = False  # skip (and count) invalid records of `user` instead of stopping at the first
    seed: int = 0  # which facts / items and wordings are drawn
    out: str | None = option(None, required=True)  # output directory: data.jsonl + manifest.json
