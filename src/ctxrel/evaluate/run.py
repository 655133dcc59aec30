"""Benchmarks x model -> per-item records + metric rows. The engine behind `ctxrel eval`.

For each benchmark: pick items (seeded, stratified `limit`), check prompts fit the model window, ask the
reference model each question without context (the knowledge filter), ask the evaluated model with context
(generation or likelihood), append records chunk by chunk (a rerun resumes from them), then write metric rows
for all items and for the known subset.
"""

from __future__ import annotations

import dataclasses
import functools
import os
import random
import time
from collections import defaultdict
from pathlib import Path
from typing import Any, Sequence

from ctxrel.rundir import marker as run_marker

from ctxrel.evaluate import shards
from ctxrel.backends.base import LM, ProbedLM, chunk_size
from ctxrel.benchmarks.cpi import warn_overlap
from ctxrel.benchmarks.registry import LoadedBenchmark, load_benchmark, require_scorable
from ctxrel.benchmarks.schema import ConflictItem
from ctxrel.config.settings import EvalConfig, to_dict
from ctxrel.core.errors import CtxrelError, InputError
from ctxrel.core.matching import match, unscorable
from ctxrel.core.metrics import bootstrap_rows, conflict_metrics
from ctxrel.evaluate.probe_passes import probe_rows, timing_line, weight_probe
from ctxrel.core.prompts import PromptBuilder, check_format, resolve_template
from ctxrel.evaluate.records import (BenchmarkResult, attention_spans, eval_settings, generation_records, items_digest,
                            likelihood_records, progress_bar)
from ctxrel.rundir.files import RunDir, read_records, step_of
from ctxrel.evaluate.shards import ALONE, Shard
from ctxrel.standard.runner import evaluate_task, id_accuracy_row
from ctxrel.standard.tasks import STANDARD_TASKS, load_task, load_task_hub, standard_name, stratified_limit
from ctxrel.evaluate.variants import check_variants, evaluate_variants


def select_items(items: Sequence[ConflictItem], limit: int | None, seed: int = 0) -> list[ConflictItem]:
    """At most `limit` items, spread evenly over categories (round robin over seeded shuffles), in a stable
    order. The same (items, limit, seed) always gives the same subset, so checkpoints are compared on the same
    items."""
    if limit is None or limit >= len(items):
        return list(items)
    groups: dict[str, list[ConflictItem]] = defaultdict(list)
    for it in items:
        groups[it.category].append(it)
    rng = random.Random(seed)
    queues = []
    for cat in sorted(groups):
        g = groups[cat][:]
        rng.shuffle(g)
        queues.append(g)
    picked: list[ConflictItem] = []
    while len(picked) < limit:
        for q in queues:
            if q and len(picked) < limit:
                picked.append(q.pop(0))
    return picked


def _fit_window(items: list[ConflictItem], prompts: dict[str, str], lm: LM, cfg: EvalConfig,
                skipped: list[tuple[str, str]]) -> list[ConflictItem]:
    budget = lm.max_length - cfg.max_new_tokens
    lengths = lm.count_tokens([prompts[it.id] for it in items])
    kept = []
    for it, n in zip(items, lengths):
        if n <= budget:
            kept.append(it)
            continue
        msg = (f"prompt of item {it.id} is {n} tokens; with max_new_tokens={cfg.max_new_tokens} it exceeds "
               f"the model window of {lm.max_length} tokens")
        if not cfg.skip_invalid:
            path, _, line = it.source.rpartition(":")
            raise InputError(msg + "; shorten the context or pass --skip-invalid to count and skip it",
                             path=path or it.source, line=int(line) if line.isdigit() else None)
        skipped.append((it.source, msg))
    return kept


def knowledge_filter(items: list[ConflictItem], ref: LM, builder: PromptBuilder, cfg: EvalConfig,
                     path, shard: Shard = ALONE) -> dict[str, bool]:
    """Ask each question without context (greedy); an item is known if the answer contains the parametric
    answer (nested answers resolved as in `match`). Items sharing a question are asked once. Resumable:
    answers are appended to `path`. Sharded, the questions are split over the processes (`ctxrel.evaluate.shards`) and
    every process returns the whole verdict."""
    done = {r["id"]: r for r in read_records(path)}
    todo = [it for it in items if it.id not in done]
    by_prompt: dict[str, list[ConflictItem]] = defaultdict(list)
    for it in todo:
        by_prompt[builder.without_context(it.question)].append(it)
    prompts = list(by_prompt)
    if not prompts:  # all answered already (a resumed run, or a study's later checkpoint)
        shards.clear(path, shard)
        return {it.id: bool(done[it.id]["known"]) for it in items}
    bar = progress_bar(len(prompts), "knowledge filter")

    def ask(chunk: list[str]) -> list[dict[str, Any]]:
        outs = ref.generate(chunk, max_new_tokens=cfg.max_new_tokens, on_done=bar.update)
        recs = []
        for p, o in zip(chunk, outs):
            for it in by_prompt[p]:
                # an answer containment cannot score (likelihood mode accepts them) never makes an item known
                known = (match(o[0], it.context_answers, it.parametric_answers).contains_parametric
                         and not unscorable(it.parametric_answer))
                recs.append(dict(id=it.id, question=it.question, prompt=p, output=o[0], known=known))
        return recs

    new = shards.score_units(prompts, size=chunk_size(ref), score=ask, path=path,
                             ids=lambda p: [it.id for it in by_prompt[p]],
                             cost=lambda c: sum(ref.count_tokens(c)), shard=shard)
    done.update({r["id"]: r for r in new})
    if shard.world > 1:  # the merged file, for the processes that scored only their shard
        done = {r["id"]: r for r in read_records(path)}
    bar.close()
    return {it.id: bool(done[it.id]["known"]) for it in items}


def evaluate_benchmark(lm: LM, bench: LoadedBenchmark, cfg: EvalConfig, builder: PromptBuilder, run: RunDir,
                       *, checkpoint: str = "model", reference: LM | None = None,
                       reference_builder: PromptBuilder | None = None,
                       extra_settings: dict[str, Any] | None = None,
                       known_checkpoint: str | None = None, shard: Shard = ALONE) -> BenchmarkResult:
    """Score one benchmark at one checkpoint. `known_checkpoint` names the checkpoint whose knowledge-filter
    answers define the known subset (a study uses step 0, the base model, for every checkpoint so the subset
    stays fixed along the trajectory); those answers must already exist unless it is this checkpoint.
    `shard`: this process's part of a sharded evaluation (`ctxrel.evaluate.shards`); only the main process writes metric
    rows (and runs eval.probes), the others return a result without metrics."""
    skipped = list(bench.skipped)
    if shard.main:  # sharded, the others score only once it has checked (`shards.score_units` waits for it)
        run.check_settings(checkpoint, bench.name, eval_settings(bench, cfg, extra_settings))

    # skip_invalid: drop over-long prompts first, so `limit` still gets its full, balanced share; otherwise only
    # the selected items must fit and the first one that does not is an error
    pool = list(bench.items) if cfg.skip_invalid else select_items(bench.items, cfg.limit, cfg.seed)
    prompts = {it.id: builder.with_context(it.context, it.question, it.prompt) for it in pool}
    pool = _fit_window(pool, prompts, lm, cfg, skipped)
    items = select_items(pool, cfg.limit, cfg.seed) if cfg.skip_invalid else pool

    known = None
    if cfg.knowledge_filter:
        source = known_checkpoint or checkpoint
        known_path = run.eval_file(source, bench.name, "nocontext")
        if source != checkpoint:
            have = {r["id"] for r in read_records(known_path)}
            missing = [it.id for it in items if it.id not in have]
            if missing:
                raise CtxrelError(f"knowledge-filter answers of {source} for {bench.name} are missing "
                                  f"({len(missing)} items, e.g. {missing[0]}) in {known_path}; evaluate "
                                  f"{source} first")
        known = knowledge_filter(items, reference or lm, reference_builder or builder, cfg, known_path, shard)

    path = run.eval_file(checkpoint, bench.name)
    per_sample = 1 if cfg.mode == "likelihood" else cfg.samples
    latest = {(r["id"], r.get("sample", 0)): r for r in read_records(path)}  # a rerun's duplicate wins
    have = defaultdict(int)
    for (rid, _) in latest:
        have[rid] += 1
    done = {rid for rid, k in have.items() if k >= per_sample}  # an item is done when all its samples are
    records = [r for (rid, _), r in latest.items() if rid in done]
    todo = [it for it in items if it.id not in done]
    bar = progress_bar(len(todo), f"{bench.name} ({cfg.mode})")

    def score(chunk: list[ConflictItem]) -> list[dict[str, Any]]:
        if cfg.mode == "likelihood":
            recs = likelihood_records(lm, chunk, prompts, bar.update)
        else:
            outs = lm.generate([prompts[it.id] for it in chunk], max_new_tokens=cfg.max_new_tokens,
                               samples=cfg.samples, temperature=cfg.temperature, seed=cfg.seed,
                               on_done=bar.update)
            recs = [r for it, o in zip(chunk, outs) for r in generation_records(it, prompts[it.id], o)]
        if known is not None:
            for r in recs:
                r["known"] = known[r["id"]]
        return recs

    new_tokens = cfg.max_new_tokens * per_sample if cfg.mode == "generate" else 0
    records += shards.score_units(
        todo, size=chunk_size(lm), score=score, path=path, ids=lambda it: [it.id], per_id=per_sample,
        cost=lambda c: sum(lm.count_tokens([prompts[it.id] for it in c])) + new_tokens * len(c), shard=shard)
    bar.close()
    if not shard.main:  # its share of the attention pass; the main process writes every metric row
        if cfg.attention:
            attention_rows(lm, items, prompts, run, cfg, checkpoint=checkpoint, benchmark=bench.name, known=known,
                           shard=shard)
        return BenchmarkResult(bench.name, {}, {}, skipped, items=items, known=known)

    # The metrics aggregate every item the file holds for these settings -- an earlier run's larger --limit
    # included -- so the metric rows always describe exactly the records beside them, never a mixture.
    held = {r["id"]: r for r in records}
    if known is not None:
        known = {**{rid: bool(r.get("known")) for rid, r in held.items()}, **known}
    subsets = {"all": records}
    if known is not None:
        subsets["known"] = [r for r in records if known[r["id"]]]
    metrics = {name: conflict_metrics(recs, cfg.mode, n_boot=cfg.bootstrap, seed=cfg.seed)
               for name, recs in subsets.items()}
    counts = dict(n_loaded=len(bench.items) + len(bench.skipped), n_invalid=len(bench.skipped),
                  n_too_long=len(skipped) - len(bench.skipped), n_items=len(held),
                  n_known=sum(known[rid] for rid in held) if known is not None else -1)
    earlier = len(set(held) - {it.id for it in items})
    if earlier:
        counts["n_from_earlier_runs"] = earlier
    step = step_of(checkpoint)
    rows = [dict(checkpoint=checkpoint, step=step, benchmark=bench.name, subset=subset, **m)
            for subset, ms in metrics.items() for m in ms]
    rows += [dict(checkpoint=checkpoint, step=step, benchmark=bench.name, subset="all", metric=k, value=v, n=v)
             for k, v in counts.items() if v >= 0]
    if cfg.attention:
        rows += attention_rows(lm, items, prompts, run, cfg, checkpoint=checkpoint, benchmark=bench.name,
                               known=known, shard=shard)
    seconds: dict[str, float] = {}
    if cfg.probes:
        rows += probe_rows(lm, items, prompts, run, cfg, checkpoint=checkpoint, step=step, benchmark=bench.name,
                           known=known, seconds=seconds)
    run.write_metrics(rows)
    return BenchmarkResult(bench.name, counts, metrics, skipped, seconds, items=items, known=known)


def attention_rows(lm: ProbedLM, items: list[ConflictItem], prompts: dict[str, str], run: RunDir, cfg: EvalConfig, *,
                   checkpoint: str, benchmark: str, known: dict[str, bool] | None,
                   shard: Shard = ALONE) -> list[dict[str, Any]]:
    """`--attention`: mean attention from the answer position to the context's and the question's tokens
    (averaged over layers and heads; the study's Fig. 3b), per item in evals/<ckpt>/<bench>.attention.jsonl
    (resumable) and as metric rows `attention_context` / `attention_question` with bootstrap intervals.
    Sharded, the items are split over the processes and the main process alone returns rows."""

    if not lm.capabilities.attention:
        raise CtxrelError(f"{lm.name}: this backend cannot report attention weights; drop --attention")
    path = run.eval_file(checkpoint, benchmark, "attention")
    done = {r["id"]: r for r in read_records(path)}
    spans = {it.id: attention_spans(it, prompts[it.id]) for it in items}
    todo = [it for it in items if it.id not in done and spans[it.id] is not None]
    bar = progress_bar(len(todo), f"{benchmark} (attention)")

    def measure(chunk: list[ConflictItem]) -> list[dict[str, Any]]:
        values = lm.attention_to_spans([prompts[it.id] for it in chunk], [spans[it.id] for it in chunk],
                                       on_done=bar.update)
        return [dict(id=it.id, category=it.category, attention_context=v[0], attention_question=v[1])
                for it, v in zip(chunk, values)]

    new = shards.score_units(todo, size=16, score=measure, path=path, ids=lambda it: [it.id],
                             cost=lambda c: sum(lm.count_tokens([prompts[it.id] for it in c])), shard=shard)
    done.update({r["id"]: r for r in new})
    bar.close()
    if not shard.main:
        return []
    measured = [done[it.id] for it in items if it.id in done]
    subsets = {"all": measured}
    if known is not None:
        subsets["known"] = [r for r in measured if known.get(r["id"])]
    rows = []
    names = ("attention_context", "attention_question")
    for subset, recs in subsets.items():
        rows += bootstrap_rows([[r[m] for m in names] for r in recs], names, n_boot=cfg.bootstrap, seed=cfg.seed,
                               checkpoint=checkpoint, step=step_of(checkpoint), benchmark=benchmark, subset=subset)
    return rows


LIKELIHOOD_SUFFIX = "@likelihood"  # eval.mode both: the benchmark name of the M_C pass over every item


def likelihood_pass(bench: LoadedBenchmark, cfg: EvalConfig) -> tuple[LoadedBenchmark, EvalConfig]:
    """eval.mode both: the benchmark and settings of its likelihood pass -- every item (no limit), one score per
    item, no attention or probes (those follow the generation pass), written as benchmark `NAME@likelihood`, so
    `ctxrel report` follows its M_C as a trajectory with its own verdict."""
    return (dataclasses.replace(bench, name=bench.name + LIKELIHOOD_SUFFIX),
            dataclasses.replace(cfg, mode="likelihood", limit=None, samples=1, attention=False, probes=[]))


def load_lm(spec: str, adapter: str | None, model_cfg, shard: Shard = ALONE) -> LM:
    from ctxrel.backends.hf import HFBackend
    from ctxrel.models.loading import load_model

    model, tok, name = load_model(spec, adapter=adapter, device=shards.device_of(shard, model_cfg.device),
                                  trust_remote_code=model_cfg.trust_remote_code)
    return HFBackend.for_config(model, tok, model_cfg, name=name)


def _builder(lm: LM, cfg: EvalConfig) -> PromptBuilder:
    has_chat = lm.capabilities.chat_template
    template = resolve_template(cfg.template, has_chat)
    return PromptBuilder(template=template, body=cfg.prompt, instruct=cfg.instruct,
                         render_chat=lm.render_chat if has_chat else None)


def run_eval(config, **kwargs) -> list[BenchmarkResult]:
    """`ctxrel eval` as a function (see `_run_eval`); the run directory is locked while it runs."""
    with run_marker.scope():
        return _run_eval(config, **kwargs)


def _run_eval(config, *, checkpoint: str | None = None, lm: LM | None = None, write_config: bool = True,
              row_meta: dict[str, Any] | None = None, known_checkpoint: str | None = None,
              shard: Shard = ALONE) -> list[BenchmarkResult]:
    """`ctxrel eval` as a function: load benchmarks and model(s), evaluate, write the run directory.

    `lm` lets a caller pass a live model (the training loop does); otherwise `config.model` is loaded.
    A study passes `write_config=False` (its own config stays in the run directory), `row_meta` (epoch and
    tokens seen, added to every metric row) and `known_checkpoint="step-000000"`.
    `shard`: this process's part of a sharded evaluation (`ctxrel.evaluate.shards`; every process calls run_eval alike).
    The conflict items (their variants and --attention too), knowledge-filter questions and standard-task items are
    split over the processes; the main process alone claims the directory, writes settings and metric rows, and
    runs eval.probes. Its
    results are complete; the others' carry no metrics.
    """
    cfg = both = config.eval
    if cfg.mode == "both":  # the generation pass reads as a generate run; likelihood_pass adds M_C on every item
        cfg = dataclasses.replace(both, mode="generate")
    if cfg.prompt is not None:
        check_format(cfg.prompt)
    if cfg.samples < 1 or cfg.max_new_tokens < 1:
        raise CtxrelError("--samples and --max-new-tokens must be at least 1")
    if cfg.samples > 1 and cfg.temperature <= 0:
        raise CtxrelError(f"--samples {cfg.samples} needs --temperature > 0 (greedy decoding gives one answer)")
    if cfg.mode == "likelihood" and cfg.samples > 1:
        raise CtxrelError("--samples applies to generate mode; likelihood mode scores each item once")
    check_variants(cfg)  # eval.decoding / cad_alpha / contexts
    standard_args = standard_tasks(cfg)
    benches = [load_benchmark(b, skip_invalid=cfg.skip_invalid)  # fail fast, before any model loads
               for b in cfg.benchmarks if not standard_name(b)]
    warn_overlap([b.name for b in benches])  # cpi:capitals is a part of cpi:world_facts
    if cfg.mode == "generate":  # containment needs answers it can find (`matching.unscorable`)
        benches = [require_scorable(b, skip_invalid=cfg.skip_invalid) for b in benches]
    standard = [load_standard(b, cfg) for b in standard_args]
    if lm is None:  # the model's files, checked before the run directory is touched
        from ctxrel.models.loading import preflight

        preflight(config.model.name)
        if cfg.knowledge_filter and config.model.reference:
            preflight(config.model.reference)
    if shard.main:  # the other processes of a sharded evaluation write only shard files, under its claim
        run_marker.claim(config.out, "eval" if write_config else "study", verb="eval", settings=to_dict(config))
    run = RunDir(config.out, row_defaults=row_meta)
    if shard.main:
        run.metrics()  # a damaged metrics.sqlite is refused now, not after the generations
    if checkpoint is None:
        adapter = config.model.adapter
        checkpoint = adapter.rstrip("/").split("/")[-1] if adapter else "model"
    # The knowledge filter asks the evaluated model unless a reference is named; naming the base model while
    # evaluating an adapter means the base model *without* the adapter.
    ref_name = config.model.reference if cfg.knowledge_filter else None
    separate_ref = ref_name is not None and (ref_name != config.model.name or config.model.adapter is not None)
    if known_checkpoint is not None and known_checkpoint != checkpoint:
        separate_ref = False  # the known subset was decided at known_checkpoint; no reference model is asked
    extra = dict(model=config.model.name, adapter=config.model.adapter, reference=ref_name)
    passes = [(b, cfg) for b in benches] + ([likelihood_pass(b, cfg) for b in benches] if both.mode == "both" else [])
    for b, c in passes if shard.main else []:  # refuse mixed settings before writing anything
        run.drop_unused_settings(checkpoint, b.name)  # an earlier run that wrote no result holds nothing to mix
        run.check_settings(checkpoint, b.name, eval_settings(b, c, extra), dry_run=True)
    if lm is None:
        lm = load_lm(config.model.name, config.model.adapter, config.model, shard)
    builder = _builder(lm, cfg)
    reference, ref_builder = None, None
    if separate_ref:
        reference = load_lm(ref_name, None, config.model, shard)
        ref_builder = _builder(reference, cfg)
    if not cfg.skip_invalid:  # a prompt too long for the window is an error: find it before config.yaml changes
        for b, c in passes:
            chosen = select_items(b.items, c.limit, c.seed)
            _fit_window(chosen, {it.id: builder.with_context(it.context, it.question, it.prompt) for it in chosen},
                        lm, c, [])
    if write_config and shard.main:  # every check has passed and the model(s) loaded
        run.write_config(to_dict(config))
    t0 = time.perf_counter()
    results = []
    for b in benches:
        base = evaluate_benchmark(lm, b, cfg, builder, run, checkpoint=checkpoint, reference=reference,
                                  reference_builder=ref_builder, extra_settings=extra,
                                  known_checkpoint=known_checkpoint, shard=shard)
        # other context kinds and decoding methods of the same items (eval.contexts / eval.decoding)
        results += [base] + evaluate_variants(lm, b, base, cfg, builder, run, checkpoint=checkpoint,
                                              extra_settings=extra, shard=shard)
        if both.mode == "both":
            lb, lc = likelihood_pass(b, cfg)
            results.append(evaluate_benchmark(lm, lb, lc, builder, run, checkpoint=checkpoint, reference=reference,
                                              reference_builder=ref_builder, extra_settings=extra,
                                              known_checkpoint=known_checkpoint, shard=shard))
    if standard:
        results += evaluate_standard(lm, standard, cfg, run, checkpoint=checkpoint, shard=shard)
    if cfg.probes and shard.main:
        _model_probes(lm, cfg, run, results, checkpoint=checkpoint, base=config.model.name,
                      total_s=time.perf_counter() - t0)
    return results


def _model_probes(lm: LM, cfg: EvalConfig, run: RunDir, results: list[BenchmarkResult], *, checkpoint: str,
                  base: str, total_s: float) -> None:
    """eval.probes that measure the model rather than items (weights), and the time split of this
    checkpoint: scoring vs each probe."""
    seconds: dict[str, float] = {}
    for r in results:
        for k, v in r.seconds.items():
            seconds[k] = seconds.get(k, 0.0) + v
    t0 = time.perf_counter()
    if "weights" in cfg.probes:
        run.write_metrics(weight_probe(lm, run, checkpoint=checkpoint, step=step_of(checkpoint), base=base,
                                       seconds=seconds))
    print(timing_line(checkpoint, total_s + time.perf_counter() - t0, seconds), flush=True)


def standard_tasks(cfg: EvalConfig) -> list[str]:
    """The standard tasks to score: those named in eval.benchmarks, then eval.standard (each once, by name)."""
    for arg in cfg.standard:
        if not standard_name(arg):
            raise CtxrelError(f"config key eval.standard: {arg!r} is not a standard task; choose from "
                              f"{', '.join(STANDARD_TASKS)} (NAME or NAME=PATH)")
    args = [b for b in cfg.benchmarks if standard_name(b)] + list(cfg.standard)
    names = [standard_name(a) for a in args]
    twice = sorted({n for n in names if names.count(n) > 1})
    if twice:
        raise CtxrelError(f"standard task {', '.join(twice)} named twice (eval.benchmarks and eval.standard); "
                          "name each task once")
    return args


def load_standard(arg: str, cfg: EvalConfig) -> tuple[str, list]:
    """`gsm8k`, `mmlu`, `arc_challenge`, `squad` or `name=PATH`: the task's items, subsampled to
    eval.standard_limit (or eval.limit). Data: PATH, else $CTXREL_DATA/<name> if that folder exists, else the HF
    hub (offline, that fails with a message saying how to pass local files)."""
    name, _, path = arg.partition("=")
    name, path = name.strip(), path.strip()
    root = os.environ.get("CTXREL_DATA")
    if not path and root and (Path(root) / name).exists():
        path = str(Path(root) / name)
    limit = cfg.standard_limit if cfg.standard_limit is not None else cfg.limit
    return name, stratified_limit(_task_items(name, path, cfg.shots), limit, cfg.seed)


@functools.lru_cache(maxsize=8)
def _task_items(name: str, path: str, shots: int | None) -> tuple:
    """A standard task's items, read once per process: a study asks for them at every checkpoint, and MMLU's
    14k rows (or a hub download) are not worth re-reading. Items are frozen dataclasses, safe to share."""
    return tuple(load_task(name, path, shots=shots) if path else load_task_hub(name, shots=shots))


def evaluate_standard(lm: LM, tasks: list[tuple[str, list]], cfg: EvalConfig, run: RunDir, *,
                      checkpoint: str = "model", shard: Shard = ALONE) -> list[BenchmarkResult]:
    """Score standard tasks and write their rows plus `id_accuracy` (the mean of their primary metrics); sharded,
    the items are split over the processes and the main process writes the rows."""
    step = step_of(checkpoint)
    done, out = {}, []
    for name, items in tasks:
        if shard.main:
            run.check_settings(checkpoint, name, dict(task=name, shots=cfg.shots, seed=cfg.seed,
                                                      items_sha256=items_digest(items)))
        bar = progress_bar(len(items), name)
        rows, reps = evaluate_task(lm, name, items, run, checkpoint=checkpoint, step=step, n_boot=cfg.bootstrap,
                                   seed=cfg.seed, progress=bar, shard=shard)
        bar.close()
        done[name] = (rows, reps)
        out.append(BenchmarkResult(name, dict(n_items=len(items)), {"all": rows}))
    if not shard.main:
        return out
    row = id_accuracy_row(done, checkpoint=checkpoint, step=step)
    if row is not None:
        run.write_metrics([row])
        out.append(BenchmarkResult("id_accuracy", dict(n_items=row["n"]), {"all": [row]}))
    return out

