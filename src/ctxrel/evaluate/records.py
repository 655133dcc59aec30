"""What one evaluated item becomes: the per-item records of generate and likelihood mode, the settings that
guard a records file against mixing (`eval_settings`), and `BenchmarkResult`, what scoring one benchmark at one
checkpoint returns. Shared by run.py, variants.py (other context kinds and decoding methods of the same
items), probe_passes.py and the standard tasks, so none of them needs the others.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import sys
from dataclasses import dataclass, field
from typing import Any, Sequence

from tqdm.auto import tqdm

from ctxrel.backends.base import LM
from ctxrel.benchmarks.registry import LoadedBenchmark
from ctxrel.benchmarks.schema import ConflictItem
from ctxrel.config.settings import EvalConfig
from ctxrel.core.matching import match
from ctxrel.core.metrics import m_c
from ctxrel.core.prompts import continuation_delimiter


@dataclass
class BenchmarkResult:
    benchmark: str
    counts: dict[str, int]
    metrics: dict[str, list[dict[str, Any]]]  # subset -> metric rows
    skipped: list[tuple[str, str]] = field(default_factory=list)
    seconds: dict[str, float] = field(default_factory=dict)  # wall time of the whole benchmark, and per probe
    items: list[ConflictItem] = field(default_factory=list, repr=False)  # the items scored (variants reuse them)
    known: dict[str, bool] | None = field(default=None, repr=False)  # knowledge-filter verdict per item id


def items_digest(items: Sequence) -> str:
    """A fingerprint of a benchmark's content (conflict items or standard-task items): resuming is refused if
    the items changed under the same name."""
    h = hashlib.sha256()
    for it in items:
        d = dataclasses.asdict(it)
        d.pop("source", None)  # the same file reached by another path spelling is the same benchmark
        h.update(json.dumps(d, sort_keys=True, ensure_ascii=False, default=str).encode())
    return h.hexdigest()[:16]


def progress_bar(total: int, desc: str):
    return tqdm(total=total, desc=desc, unit="item", file=sys.stderr, leave=False, dynamic_ncols=True)


def generation_records(it: ConflictItem, prompt: str, outputs: list[str]) -> list[dict[str, Any]]:
    recs = []
    for s, out in enumerate(outputs):
        mt = match(out, it.context_answers, it.parametric_answers)
        recs.append(dict(id=it.id, sample=s, category=it.category, question=it.question,
                         context_answer=it.context_answer, parametric_answer=it.parametric_answer,
                         output=out, contains_context=mt.contains_context,
                         contains_parametric=mt.contains_parametric, outcome=mt.outcome,
                         first_mention=mt.first_mention, prompt=prompt, source=it.source))
    return recs


def likelihood_records(lm: LM, chunk: list[ConflictItem], prompts: dict[str, str],
                        on_done) -> list[dict[str, Any]]:
    requests = []
    for it in chunk:
        p = prompts[it.id]
        d = continuation_delimiter(p)
        requests.append((p, it.context_continuation or d + it.context_answer))
        requests.append((p, it.parametric_continuation or d + it.parametric_answer))
    answered = [0]  # requests scored so far; the bar counts items (two requests each)

    def progress(k: int) -> None:
        before = answered[0] // 2
        answered[0] += k
        on_done(answered[0] // 2 - before)

    scores = lm.loglikelihood(requests, on_done=progress)
    recs = []
    for k, it in enumerate(chunk):
        lc, lp = scores[2 * k], scores[2 * k + 1]
        recs.append(dict(id=it.id, sample=0, category=it.category, question=it.question,
                         context_answer=it.context_answer, parametric_answer=it.parametric_answer,
                         logp_context=lc, logp_parametric=lp, m_c=m_c(lc, lp), prompt=prompts[it.id],
                         source=it.source))
    return recs


def eval_settings(bench: LoadedBenchmark, cfg: EvalConfig, extra: dict[str, Any] | None = None) -> dict:
    """What determines a benchmark's records; resuming into a directory made with other settings is refused."""
    return dict(benchmark=bench.name, version=bench.version, items_sha256=items_digest(bench.items),
                mode=cfg.mode, template=cfg.template, prompt=cfg.prompt, instruct=cfg.instruct,
                samples=cfg.samples, temperature=cfg.temperature, max_new_tokens=cfg.max_new_tokens,
                seed=cfg.seed, knowledge_filter=cfg.knowledge_filter, **(extra or {}))


def attention_spans(item: ConflictItem, prompt: str) -> list[tuple[int, int]] | None:
    """Character spans of the item's context and question inside its prompt (None when the prompt does not
    contain them verbatim, e.g. a benchmark's own pre-rendered prompt)."""
    c, q = prompt.find(item.context), prompt.rfind(item.question)
    if c < 0 or q < 0 or not item.context or not item.question:
        return None
    return [(c, c + len(item.context)), (q, q + len(item.question))]
