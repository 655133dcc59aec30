"""`ctxrel eval` as a function: benchmarks x model -> per-item records + metric rows in a run directory.

`run_eval` checks the settings, loads the benchmarks, standard tasks and model(s), claims the run directory, and
hands each conflict benchmark to the one scoring engine (`evaluate.engine.score_benchmark`: pick items, check
the window, the knowledge filter, score with context under every (context kind, decoding) pair, resume, metric
rows for all items and the known subset); then the standard tasks and the model's own probes.
"""

from __future__ import annotations

import dataclasses
import functools
import os
import time
from pathlib import Path
from typing import Any

from ctxrel.backends.base import LM
from ctxrel.benchmarks.cpi import warn_overlap
from ctxrel.benchmarks.registry import LoadedBenchmark, load_benchmark, require_scorable
from ctxrel.config.settings import EvalConfig, to_dict
from ctxrel.core.errors import CtxrelError
from ctxrel.core.prompts import PromptBuilder, check_format, resolve_template
from ctxrel.evaluate import shards
from ctxrel.evaluate.probe_passes import timing_line, weight_probe
from ctxrel.evaluate.records import BenchmarkResult, eval_settings, items_digest, progress_bar
from ctxrel.evaluate.engine import score_benchmark
from ctxrel.evaluate.selection import fit_window, select_items
from ctxrel.evaluate.shards import ALONE, Shard
from ctxrel.evaluate.variants import check_variants
from ctxrel.rundir import marker as run_marker
from ctxrel.rundir.files import RunDir, step_of
from ctxrel.standard.runner import evaluate_task, id_accuracy_row
from ctxrel.standard.tasks import STANDARD_TASKS, load_task, load_task_hub, standard_name, stratified_limit


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
    `shard`: this process's part of a sharded evaluation (`evaluate.shards`; every process calls run_eval alike).
    The conflict items (their variants and --attention too), knowledge-filter questions and standard-task items are
    split over the processes; the main process alone claims the directory, writes settings and metric rows, and
    runs eval.probes. Its results are complete; the others' carry no metrics.
    """
    cfg = pass_config(config.eval)
    benches, standard = _inputs(cfg)
    if lm is None:  # the model's files, checked before the run directory is touched
        from ctxrel.models.loading import preflight

        preflight(config.model.name)
        if cfg.knowledge_filter and config.model.reference:
            preflight(config.model.reference)
    run = _open_run(config, write_config, row_meta, shard)
    if checkpoint is None:
        adapter = config.model.adapter
        checkpoint = adapter.rstrip("/").split("/")[-1] if adapter else "model"
    ref_name, separate_ref = _reference(config, checkpoint, known_checkpoint)
    extra = dict(model=config.model.name, adapter=config.model.adapter, reference=ref_name)
    passes = [(b, cfg) for b in benches] + ([likelihood_pass(b, cfg) for b in benches]
                                            if config.eval.mode == "both" else [])
    for b, c in passes if shard.main else []:  # refuse mixed settings before writing anything
        run.drop_unused_settings(checkpoint, b.name)  # an earlier run that wrote no result holds nothing to mix
        run.check_settings(checkpoint, b.name, eval_settings(b, c, extra), dry_run=True)
    if lm is None:
        lm = load_lm(config.model.name, config.model.adapter, config.model, shard)
    builder = _builder(lm, cfg)
    reference = load_lm(ref_name, None, config.model, shard) if separate_ref else None
    ref_builder = _builder(reference, cfg) if reference else None
    if not cfg.skip_invalid:  # a prompt too long for the window is an error: find it before config.yaml changes
        _check_windows(passes, builder, lm)
    if write_config and shard.main:  # every check has passed and the model(s) loaded
        run.write_config(to_dict(config))
    t0 = time.perf_counter()
    results = []
    for b in benches:  # the benchmark itself, then its other context kinds and decodings on the same items
        both = [likelihood_pass(b, cfg)] if config.eval.mode == "both" else []  # then M_C on every item
        for bench, c in [(b, cfg), *both]:
            results += score_benchmark(lm, bench, c, builder, run, checkpoint=checkpoint, reference=reference,
                                       reference_builder=ref_builder, extra_settings=extra,
                                       known_checkpoint=known_checkpoint, shard=shard, variants=bench is b)
    if standard:
        results += evaluate_standard(lm, standard, cfg, run, checkpoint=checkpoint, shard=shard)
    if cfg.probes and shard.main:
        _model_probes(lm, cfg, run, results, checkpoint=checkpoint, base=config.model.name,
                      total_s=time.perf_counter() - t0)
    return results


def _reference(config, checkpoint: str, known_checkpoint: str | None) -> tuple[str | None, bool]:
    """(the knowledge filter's reference model, whether it is loaded beside the evaluated one). The filter asks the
    evaluated model unless a reference is named; naming the base model while evaluating an adapter means the base
    model *without* the adapter."""
    ref_name = config.model.reference if config.eval.knowledge_filter else None
    separate_ref = ref_name is not None and (ref_name != config.model.name or config.model.adapter is not None)
    if known_checkpoint is not None and known_checkpoint != checkpoint:
        separate_ref = False  # the known subset was decided at known_checkpoint; no reference model is asked
    return ref_name, separate_ref


def _check_windows(passes: list[tuple[LoadedBenchmark, EvalConfig]], builder: PromptBuilder, lm: LM) -> None:
    """The first selected item whose prompt does not fit the model window is an error (one sentence)."""
    for b, c in passes:
        chosen = select_items(b.items, c.limit, c.seed)
        fit_window(chosen, {it.id: builder.with_context(it.context, it.question, it.prompt) for it in chosen},
                   lm, c, [])


def pass_config(ev: EvalConfig) -> EvalConfig:
    """The settings of the generation pass, checked (one sentence each): eval.mode both reads as a generate run
    (`likelihood_pass` adds M_C on every item)."""
    cfg = dataclasses.replace(ev, mode="generate") if ev.mode == "both" else ev
    if cfg.prompt is not None:
        check_format(cfg.prompt)
    if cfg.samples < 1 or cfg.max_new_tokens < 1:
        raise CtxrelError("--samples and --max-new-tokens must be at least 1")
    if cfg.samples > 1 and cfg.temperature <= 0:
        raise CtxrelError(f"--samples {cfg.samples} needs --temperature > 0 (greedy decoding gives one answer)")
    if cfg.mode == "likelihood" and cfg.samples > 1:
        raise CtxrelError("--samples applies to generate mode; likelihood mode scores each item once")
    check_variants(cfg)  # eval.decoding / cad_alpha / contexts
    return cfg


def _inputs(cfg: EvalConfig) -> tuple[list[LoadedBenchmark], list[tuple[str, list]]]:
    """The conflict benchmarks and standard tasks, loaded (fail fast, before any model loads)."""
    standard_args = standard_tasks(cfg)
    benches = [load_benchmark(b, skip_invalid=cfg.skip_invalid) for b in cfg.benchmarks if not standard_name(b)]
    warn_overlap([b.name for b in benches])  # cpi:capitals is a part of cpi:world_facts
    if cfg.mode == "generate":  # containment needs answers it can find (`matching.unscorable`)
        benches = [require_scorable(b, skip_invalid=cfg.skip_invalid) for b in benches]
    return benches, [load_standard(b, cfg) for b in standard_args]


def _open_run(config, write_config: bool, row_meta: dict[str, Any] | None, shard: Shard) -> RunDir:
    """The run directory, claimed by the main process (the others write only shard files, under its claim)."""
    if shard.main:
        run_marker.claim(config.out, "eval" if write_config else "study", verb="eval", settings=to_dict(config))
    run = RunDir(config.out, row_defaults=row_meta)
    if shard.main:
        run.metrics()  # a damaged metrics.sqlite is refused now, not after the generations
    return run


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

