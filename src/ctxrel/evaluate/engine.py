"""The one scoring engine: a conflict benchmark at one checkpoint, under any (context kind, decoding) pair.

`score_benchmark` scores the benchmark itself -- `(conflict, greedy)`, written under the benchmark's own name and
in its own format, as it always was -- and then every other pair of `eval.contexts` x `eval.decoding` on the
items the benchmark selected (same ids, same knowledge-filter answers). Each is a `Pass`: one context kind with
the decodings scored on it together (one chunk of prompts feeds greedy and every contrast decoding), and
`score_pass` is the one skeleton every pass goes through: check the settings of each records file, resume from
them, score what is left (sharded or not, `evaluate.shards`), and write the metric rows and counts of each
decoding. What the benchmark itself does differently is data on its Pass (`itself`: its samples, the records
untagged, metrics over every record of its file, --attention and eval.probes after its counts), never a second
copy of the skeleton.

Records files and metric rows are the same bytes as before the two paths were one: `cf_capitals` for the
benchmark itself, `cf_capitals[gold,cad0.5]` for a variant (`contexts.variant_name`), so old run directories
resume and read as they did.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

from ctxrel.backends.base import LM, chunk_size
from ctxrel.benchmarks.contexts import build_kind, variant_name
from ctxrel.benchmarks.registry import LoadedBenchmark
from ctxrel.benchmarks.schema import ConflictItem
from ctxrel.config.settings import EvalConfig
from ctxrel.core.decoding import parse_label
from ctxrel.core.errors import CtxrelError
from ctxrel.core.metrics import conflict_metrics, m_c
from ctxrel.core.prompts import PromptBuilder, continuation_delimiter
from ctxrel.evaluate.probe_passes import attention_rows, probe_rows
from ctxrel.evaluate.records import (BenchmarkResult, eval_settings, generation_records, likelihood_records,
                                     progress_bar)
from ctxrel.evaluate.selection import fit_window, knowledge_filter, select_items
from ctxrel.evaluate.shards import ALONE, Shard, score_files
from ctxrel.evaluate.variants import acc_rows, change_rows, wanted
from ctxrel.rundir.files import RunDir, read_records, step_of


@dataclass
class Pass:
    """One context kind of a benchmark and the decodings scored on it together, with the items and prompts."""

    bench: LoadedBenchmark
    kind: str
    decodings: list[str]
    itself: bool  # the benchmark itself, (conflict, greedy): untagged records, metrics over its whole file
    items: list[ConflictItem] = field(default_factory=list)
    prompts: dict[str, str] = field(default_factory=dict)  # with the context
    no_ctx: dict[str, str] = field(default_factory=dict)  # without it (the contrast decodings' second branch)
    known: dict[str, bool] | None = None
    skipped: list[tuple[str, str]] = field(default_factory=list)  # itself: invalid and too-long items
    kind_skipped: list[tuple[str, str]] = field(default_factory=list)  # a variant: items the kind was not built for
    too_long: int = 0
    unavailable: int = 0  # items a contrast decoding cannot score (a verbatim prompt has no question alone)

    def name(self, decoding: str) -> str:
        return variant_name(self.bench.name, self.kind, decoding)

    @property
    def contrast(self) -> list[str]:
        return [d for d in self.decodings if d != "greedy"]


@dataclass
class Scoring:
    """Where and how a pass is scored: the model, the prompt builder, settings and the run directory."""

    lm: LM
    cfg: EvalConfig
    builder: PromptBuilder
    run: RunDir
    checkpoint: str = "model"
    extra_settings: dict[str, Any] | None = None
    shard: Shard = ALONE


def score_benchmark(lm: LM, bench: LoadedBenchmark, cfg: EvalConfig, builder: PromptBuilder, run: RunDir, *,
                    checkpoint: str = "model", reference: LM | None = None,
                    reference_builder: PromptBuilder | None = None, extra_settings: dict[str, Any] | None = None,
                    known_checkpoint: str | None = None, shard: Shard = ALONE,
                    variants: bool = True) -> list[BenchmarkResult]:
    """Score `bench` at one checkpoint: the benchmark itself first (its result first), then, with `variants`,
    every other wanted (kind, decoding) pair on the items it selected. `known_checkpoint` names the checkpoint
    whose knowledge-filter answers define the known subset (a study uses step 0 for every checkpoint); those
    answers must already exist unless it is this checkpoint. `shard`: this process's part of a sharded
    evaluation; only the main process writes metric rows and returns variant results."""
    s = Scoring(lm, cfg, builder, run, checkpoint, extra_settings, shard)
    base = score_pass(s, Pass(bench, "conflict", ["greedy"], itself=True),
                      prepare=lambda p: _select(s, p, reference, reference_builder, known_checkpoint))[0]
    return [base] + (score_variants(s, bench, base) if variants else [])


def score_variants(s: Scoring, bench: LoadedBenchmark, base: BenchmarkResult) -> list[BenchmarkResult]:
    """Every wanted (kind, decoding) pair but the benchmark itself, on the items and known subset of `base`."""
    pairs = wanted(s.cfg)
    if not pairs:
        return []
    if any(dec != "greedy" for _, dec in pairs) and not s.lm.capabilities.contrast:
        raise CtxrelError(f"{s.lm.name}: this backend cannot decode by contrast (cad, adacad); drop them from "
                          "eval.decoding")
    by_kind: dict[str, list[str]] = defaultdict(list)
    for kind, dec in pairs:
        by_kind[kind].append(dec)
    results = []
    for kind, decs in by_kind.items():
        p = Pass(bench, kind, decs, itself=False, known=base.known)
        results += score_pass(s, p, prepare=lambda p: _build_kind(s, p, base.items))
    return results


def score_pass(s: Scoring, p: Pass, prepare) -> list[BenchmarkResult]:
    """The one skeleton: check the settings of each records file, `prepare` the pass's items and prompts,
    resume, score what is left, then write each decoding's metric rows and counts (main process)."""
    if s.shard.main:  # sharded, the others score once it has checked (`shards.score_files` waits for it)
        for d in p.decodings:
            s.run.check_settings(s.checkpoint, p.name(d), _settings(s, p, d))
    prepare(p)
    per_sample = _per_sample(s.cfg, p)
    files = [s.run.eval_file(s.checkpoint, p.name(d)) for d in p.decodings]
    records, done = zip(*(_resume(f, per_sample) for f in files))
    todo = [it for it in p.items if any(it.id not in dn for dn in done)]
    label = f"{s.cfg.mode}" if p.itself else f"{p.kind}: {', '.join(p.decodings)}"
    bar = progress_bar(len(todo), f"{p.bench.name} ({label})")
    new = score_files(todo, size=chunk_size(s.lm), paths=files, ids=lambda it: [it.id], shard=s.shard,
                      score=lambda chunk: _score_chunk(s, p, chunk, done, bar),
                      finished=lambda it, held: all(it.id in dn or len(h.get(it.id, ())) >= per_sample
                                                    for dn, h in zip(done, held)),
                      cost=lambda chunk: _cost(s, p, chunk, per_sample))
    bar.close()
    if not s.shard.main:  # its share of the attention pass; the main process writes every metric row
        if p.itself and s.cfg.attention:
            attention_rows(s.lm, p.items, p.prompts, s.run, s.cfg, checkpoint=s.checkpoint,
                           benchmark=p.bench.name, known=p.known, shard=s.shard)
        return [BenchmarkResult(p.bench.name, {}, {}, p.skipped, items=p.items, known=p.known)] if p.itself else []
    return [_write_rows(s, p, d, list(recs) + got) for d, recs, got in zip(p.decodings, records, new)]


def _settings(s: Scoring, p: Pass, decoding: str) -> dict[str, Any]:
    """What guards a records file: the benchmark's settings, and for a variant its kind and decoding."""
    extra = dict(s.extra_settings or {})
    if not p.itself:
        extra.update(context_kind=p.kind, decoding=decoding)
    return eval_settings(p.bench, s.cfg, extra)


def _per_sample(cfg: EvalConfig, p: Pass) -> int:
    """Records per item: eval.samples for the benchmark itself in generate mode, else one (greedy, or a score)."""
    return cfg.samples if p.itself and cfg.mode != "likelihood" else 1


def _resume(path, per_sample: int) -> tuple[list[dict[str, Any]], set[str]]:
    """The records of `path` whose item has all its samples (a rerun's duplicate wins), and those items' ids."""
    latest = {(r["id"], r.get("sample", 0)): r for r in read_records(path)}
    have: dict[str, int] = defaultdict(int)
    for (rid, _) in latest:
        have[rid] += 1
    done = {rid for rid, k in have.items() if k >= per_sample}  # an item is done when all its samples are
    return [r for (rid, _), r in latest.items() if rid in done], done


def _cost(s: Scoring, p: Pass, chunk: list[ConflictItem], per_sample: int) -> float:
    """What a chunk costs, to deal chunks over processes: prompt tokens (twice with a contrast decoding's second
    branch) and, for the benchmark itself, the tokens it generates."""
    tokens = sum(s.lm.count_tokens([p.prompts[it.id] for it in chunk]))
    if p.itself:
        return tokens + (s.cfg.max_new_tokens * per_sample if s.cfg.mode == "generate" else 0) * len(chunk)
    return (1 + bool(p.contrast)) * tokens


def _select(s: Scoring, p: Pass, reference: LM | None, reference_builder: PromptBuilder | None,
            known_checkpoint: str | None) -> None:
    """The benchmark itself: the --limit items that fit the window, and the knowledge filter's verdict on them."""
    cfg, bench = s.cfg, p.bench
    p.skipped = list(bench.skipped)
    # skip_invalid: drop over-long prompts first, so `limit` still gets its full, balanced share; otherwise only
    # the selected items must fit and the first one that does not is an error
    pool = list(bench.items) if cfg.skip_invalid else select_items(bench.items, cfg.limit, cfg.seed)
    p.prompts = {it.id: s.builder.with_context(it.context, it.question, it.prompt) for it in pool}
    pool = fit_window(pool, p.prompts, s.lm, cfg, p.skipped)
    p.items = select_items(pool, cfg.limit, cfg.seed) if cfg.skip_invalid else pool
    p.too_long = len(p.skipped) - len(bench.skipped)
    if not cfg.knowledge_filter:
        return
    source = known_checkpoint or s.checkpoint
    known_path = s.run.eval_file(source, bench.name, "nocontext")
    if source != s.checkpoint:
        have = {r["id"] for r in read_records(known_path)}
        missing = [it.id for it in p.items if it.id not in have]
        if missing:
            raise CtxrelError(f"knowledge-filter answers of {source} for {bench.name} are missing "
                              f"({len(missing)} items, e.g. {missing[0]}) in {known_path}; evaluate "
                              f"{source} first")
    p.known = knowledge_filter(p.items, reference or s.lm, reference_builder or s.builder, cfg, known_path,
                               s.shard)


def _build_kind(s: Scoring, p: Pass, items: list[ConflictItem]) -> None:
    """A variant: the benchmark's items under context kind `p.kind`, those that fit the window and, with a
    contrast decoding, those whose question stands alone."""
    kitems, p.kind_skipped = build_kind(items, p.kind, s.cfg.seed)
    p.prompts = {it.id: s.builder.with_context(it.context, it.question, it.prompt) for it in kitems}
    p.no_ctx = {it.id: s.builder.without_context(it.question) for it in kitems}
    lengths = dict(zip(p.prompts, s.lm.count_tokens(list(p.prompts.values()))))
    fit = [it for it in kitems if lengths[it.id] <= s.lm.max_length - s.cfg.max_new_tokens]
    p.too_long = len(kitems) - len(fit)
    p.items = [it for it in fit if not p.contrast or it.prompt is None]  # the no-context branch needs a question
    p.unavailable = len(fit) - len(p.items)


def _score_chunk(s: Scoring, p: Pass, chunk: list[ConflictItem], done, bar) -> list[list[dict[str, Any]]]:
    """One chunk under every decoding of the pass: one list of new records per decoding."""
    live = p.decodings == ["greedy"]  # one decoding: the bar follows the model's own progress
    new: dict[str, list[dict[str, Any]]] = {d: [] for d in p.decodings}
    if "greedy" in p.decodings:
        new["greedy"] = _greedy_records(s, p, chunk, bar.update if live else None)
    if p.contrast:
        new.update(_contrast_records(s, p, chunk))
    out = [_tag(p, d, [r for r in new[d] if r["id"] not in dn], chunk) for d, dn in zip(p.decodings, done)]
    if not live:
        bar.update(len(chunk))
    return out


def _greedy_records(s: Scoring, p: Pass, chunk: list[ConflictItem], on_done) -> list[dict[str, Any]]:
    cfg = s.cfg
    if cfg.mode == "likelihood":
        return likelihood_records(s.lm, chunk, p.prompts, on_done or (lambda k: None))
    sampling = dict(samples=cfg.samples, temperature=cfg.temperature, seed=cfg.seed) if p.itself else {}
    outs = s.lm.generate([p.prompts[it.id] for it in chunk], max_new_tokens=cfg.max_new_tokens, on_done=on_done,
                         **sampling)
    return [r for it, o in zip(chunk, outs) for r in generation_records(it, p.prompts[it.id], o)]


def _contrast_records(s: Scoring, p: Pass, chunk: list[ConflictItem]) -> dict[str, list[dict[str, Any]]]:
    """Records of every contrast decoding of the pass (cad with each alpha, adacad) for one chunk."""
    methods = [parse_label(d) for d in p.contrast]
    new: dict[str, list[dict[str, Any]]] = {d: [] for d in p.contrast}
    if s.cfg.mode != "likelihood":
        outs = s.lm.generate_contrast([(p.prompts[it.id], p.no_ctx[it.id]) for it in chunk], methods,
                                      max_new_tokens=s.cfg.max_new_tokens)
        for k, d in enumerate(p.contrast):
            new[d] = [r for it, o in zip(chunk, outs) for r in generation_records(it, p.prompts[it.id], [o[k]])]
        return new
    reqs = []
    for it in chunk:
        dlm = continuation_delimiter(p.prompts[it.id])
        reqs.append((p.prompts[it.id], p.no_ctx[it.id], dlm + it.context_answer))
        reqs.append((p.prompts[it.id], p.no_ctx[it.id], dlm + it.parametric_answer))
    scores = s.lm.loglikelihood_contrast(reqs, methods)
    for k, d in enumerate(p.contrast):
        for j, it in enumerate(chunk):
            lc, lp = scores[2 * j][k], scores[2 * j + 1][k]
            new[d].append(dict(id=it.id, sample=0, category=it.category, question=it.question,
                               context_answer=it.context_answer, parametric_answer=it.parametric_answer,
                               logp_context=lc, logp_parametric=lp, m_c=m_c(lc, lp), prompt=p.prompts[it.id],
                               source=it.source))
    return new


def _tag(p: Pass, decoding: str, recs: list[dict[str, Any]], chunk: list[ConflictItem]) -> list[dict[str, Any]]:
    """What a record carries beyond its scoring: a variant's kind and decoding (and its second prompt, and where
    its context came from), then the knowledge filter's verdict."""
    for r in recs:
        if not p.itself:
            r.update(context_kind=p.kind, decoding=decoding)
            if decoding != "greedy":
                r["prompt_without_context"] = p.no_ctx[r["id"]]
            src = next(it for it in chunk if it.id == r["id"]).meta.get("context_from")
            if src:
                r["context_from"] = src
        if p.known is not None:
            r["known"] = p.known[r["id"]]
    return recs


def _write_rows(s: Scoring, p: Pass, decoding: str, records: list[dict[str, Any]]) -> BenchmarkResult:
    """One decoding's metric rows (per subset), its extra rows and counts, written; its result returned.

    The benchmark itself aggregates every item its file holds for these settings -- an earlier run's larger
    --limit included -- so its rows always describe exactly the records beside them; a variant aggregates the
    items scored now."""
    cfg, name, step = s.cfg, p.name(decoding), step_of(s.checkpoint)
    scored = {it.id for it in p.items}
    if not p.itself:
        records = [r for r in records if r["id"] in scored]
    held = {r["id"]: r for r in records}
    known = p.known
    if known is not None:
        known = {**{rid: bool(r.get("known")) for rid, r in held.items()}, **known}
    subsets = {"all": records} | ({"known": [r for r in records if known[r["id"]]]} if known is not None else {})
    metrics = {sub: conflict_metrics(recs, cfg.mode, n_boot=cfg.bootstrap, seed=cfg.seed)
               for sub, recs in subsets.items()}
    counts = _counts(p, held, known)
    row = dict(checkpoint=s.checkpoint, step=step, benchmark=name, context=p.kind, decoding=decoding)
    rows = [dict(row, subset=sub, **m) for sub, ms in metrics.items() for m in ms]
    rows += [dict(row, **m) for m in _variant_rows(s, p, decoding, records, list(subsets))]
    rows += [dict(row, subset="all", metric=k, value=v, n=v) for k, v in counts.items() if v >= 0]
    seconds: dict[str, float] = {}
    if p.itself:
        rows += _probe_rows(s, p, known, seconds)
    s.run.write_metrics(rows)
    if p.itself:
        return BenchmarkResult(name, counts, metrics, p.skipped, seconds, items=p.items, known=known)
    return BenchmarkResult(name, counts, metrics, _variant_skipped(p, decoding))


def _counts(p: Pass, held: dict[str, dict[str, Any]], known: dict[str, bool] | None) -> dict[str, int]:
    """The counts of one decoding's rows (a negative count is not written)."""
    bench = p.bench
    counts = dict(n_loaded=len(bench.items) + len(bench.skipped), n_invalid=len(bench.skipped),
                  n_too_long=p.too_long, n_items=len(held),
                  n_known=sum(bool(known[rid]) for rid in held) if known is not None else -1)
    if not p.itself:
        counts.update(n_kind_skipped=len(p.kind_skipped), n_unavailable=p.unavailable)
    elif earlier := len(set(held) - {it.id for it in p.items}):
        counts["n_from_earlier_runs"] = earlier
    return counts


def _variant_rows(s: Scoring, p: Pass, decoding: str, records: list[dict[str, Any]],
                  subsets: list[str]) -> list[dict[str, Any]]:
    """A variant's `acc` rows and, for a contrast decoding, `acc_vs_greedy` against greedy on the same kind."""
    if p.itself:
        return []
    cfg = s.cfg
    rows = acc_rows(records, p.kind, p.known, subsets, n_boot=cfg.bootstrap, seed=cfg.seed)
    if decoding != "greedy":
        greedy = s.run.eval_file(s.checkpoint, p.name("greedy"))  # the benchmark's own file for `conflict`
        scored = {it.id for it in p.items}
        ref_recs = [r for r in read_records(greedy) if r["id"] in scored]
        rows += change_rows(records, ref_recs, p.kind, p.known, subsets, n_boot=cfg.bootstrap, seed=cfg.seed)
    return rows


def _probe_rows(s: Scoring, p: Pass, known: dict[str, bool] | None, seconds: dict[str, float]) -> list[dict]:
    """The benchmark itself: --attention and eval.probes rows on its items and prompts."""
    rows = []
    if s.cfg.attention:
        rows += attention_rows(s.lm, p.items, p.prompts, s.run, s.cfg, checkpoint=s.checkpoint,
                               benchmark=p.bench.name, known=known, shard=s.shard)
    if s.cfg.probes:
        rows += probe_rows(s.lm, p.items, p.prompts, s.run, s.cfg, checkpoint=s.checkpoint,
                           step=step_of(s.checkpoint), benchmark=p.bench.name, known=known, seconds=seconds)
    return rows


def _variant_skipped(p: Pass, decoding: str) -> list[tuple[str, str]]:
    skipped = [(f"{i}", f"{p.kind}: {why}") for i, why in p.kind_skipped]
    if p.unavailable:
        skipped.append((p.bench.name, f"{p.unavailable} items with a verbatim prompt: {decoding} needs a "
                                      "separate context and question"))
    return skipped


def evaluate_benchmark(lm: LM, bench: LoadedBenchmark, cfg: EvalConfig, builder: PromptBuilder, run: RunDir,
                       **kwargs) -> BenchmarkResult:
    """The benchmark itself, (conflict, greedy), at one checkpoint (`score_benchmark` without the variants)."""
    return score_benchmark(lm, bench, cfg, builder, run, variants=False, **kwargs)[0]


def evaluate_variants(lm, bench, base, cfg, builder, run, *, checkpoint: str,
                      extra_settings: dict[str, Any] | None = None, shard: Shard = ALONE) -> list[BenchmarkResult]:
    """Every wanted (kind, decoding) pair of `bench` but the benchmark itself, on the items `base` (its
    BenchmarkResult) selected (`score_benchmark` scores both)."""
    return score_variants(Scoring(lm, cfg, builder, run, checkpoint, extra_settings, shard), bench, base)
