"""`ctxrel study` / `ctxrel train` as functions: finetune, score every checkpoint on the live model, plot.

A study evaluates step 0 (the base model) first; its knowledge-filter answers define the `known` subset for
every later checkpoint, so the subset does not drift as the model learns. Evaluation goes through `run_eval`,
the same code as `ctxrel eval`, with the live model (no reload) and the checkpoint's epoch and tokens seen in
every metric row. `score_run` does the same after the fact from saved checkpoints (`ctxrel eval --run`).
"""

from __future__ import annotations

import dataclasses
import json
import time
from pathlib import Path
from typing import Any

from ctxrel.config import settings as C
from ctxrel.core.errors import CtxrelError
from ctxrel.rundir.files import step_name
from ctxrel.train import checkpoints as ckpt

KNOWN_FROM = step_name(0)
# config sections a resumed run must share with the run it continues (eval settings are guarded per benchmark)
_RESUME_KEYS = ("data", "train")
_VIEW_KEYS = {"train.report_to", "train.tracker_project", "train.tensorboard"}  # where numbers are shown: free


def load_study_config(source: str, overrides: list[str] = (), settings: dict[str, Any] | None = None
                      ) -> C.StudyConfig:
    """A study's config from a YAML file, a shipped preset (`quickstart`, `paper/llama2-7b-alpaca-lora`) or a run
    directory, then KEY=VALUE overrides and typed settings (`config.load_config`)."""
    return C.load_config(C.StudyConfig, source, overrides, settings, verb="study")


def _with_template(cfg: C.StudyConfig, eval_cfg: C.RunConfig, tokenizer) -> C.RunConfig:
    """`eval_cfg` with the template a study evaluates with: `eval.template: auto` means the template the model is
    trained with (for a tokenizer without a chat template, `ctxrel eval` alone would pick plain, but training
    picks alpaca). A copy: `eval_cfg` itself is never changed."""
    from ctxrel.train.data import resolve_data_template

    if cfg.eval.template != "auto":
        return eval_cfg
    template = resolve_data_template(cfg.data.template, tokenizer)
    return dataclasses.replace(eval_cfg, eval=dataclasses.replace(eval_cfg.eval, template=template))


def _eval_config(cfg: C.StudyConfig, benchmarks: list[str] | None = None) -> C.RunConfig:
    fields = {f.name for f in dataclasses.fields(C.EvalConfig)}
    ev = C.EvalConfig(**{k: v for k, v in dataclasses.asdict(cfg.eval).items() if k in fields})
    if benchmarks:
        ev.benchmarks = list(benchmarks)
    return C.RunConfig(model=dataclasses.replace(cfg.model, adapter=None), eval=ev, out=cfg.out)


def _check_resume(out: Path, cfg: C.StudyConfig) -> None:
    """Refuse to continue a run with other data or training settings (its checkpoints would be meaningless)."""
    path = out / "config.yaml"
    if not path.exists() or ckpt.latest_resumable(out) is None:
        return
    old = C.read_yaml_mapping(path)
    new, defaults = C.to_dict(cfg), C.to_dict(C.StudyConfig())

    def was(sec, k):  # a key added to ctxrel after the run started had its default then
        value = old.get(sec, {}).get(k, defaults[sec][k])
        return {**defaults[sec][k], **value} if isinstance(value, dict) else value

    diffs = [f"{sec}.{k}: {was(sec, k)!r} -> {v!r}" for sec in _RESUME_KEYS
             for k, v in new[sec].items() if was(sec, k) != v and f"{sec}.{k}" not in _VIEW_KEYS]
    if old.get("stages", []) != new["stages"]:
        diffs.append(f"stages: {len(old.get('stages', []))} stage(s) -> {len(new['stages'])}, or their settings")
    if old.get("model", {}).get("name") != cfg.model.name:
        diffs.append(f"model.name: {old.get('model', {}).get('name')!r} -> {cfg.model.name!r}")
    if diffs:
        raise CtxrelError(f"{out} holds a run started with other settings ({'; '.join(diffs)}); use another "
                          "out=, or delete the directory to start over")


def _check_benchmarks(cfg: C.StudyConfig) -> None:
    """Load every benchmark before any training, so a missing file fails in a second, not after an epoch."""
    from ctxrel.benchmarks.registry import load_benchmark, require_scorable
    from ctxrel.evaluate.run import load_standard, standard_tasks
    from ctxrel.standard.tasks import standard_name
    from ctxrel.evaluate.variants import check_variants

    check_variants(cfg.eval)  # eval.decoding / cad_alpha / contexts
    for b in cfg.eval.benchmarks:
        if not standard_name(b):
            bench = load_benchmark(b, skip_invalid=cfg.eval.skip_invalid)
            if cfg.eval.mode != "likelihood":  # generate, or both (its generation pass)
                require_scorable(bench, skip_invalid=cfg.eval.skip_invalid)
    for b in standard_tasks(cfg.eval):
        load_standard(b, cfg.eval)


def run_study(cfg: C.StudyConfig, *, plot: bool = True, log=print) -> dict[str, Any]:
    """Train with evaluation at every checkpoint; write the trajectory plot. Resumable. Returns the summary."""
    from ctxrel.rundir import marker as run_marker
    from ctxrel.rundir.files import RunDir

    from ctxrel.train.loop import check_train_config

    from ctxrel.evaluate import shards

    out = Path(cfg.out)
    shards.current()  # a broken launcher environment fails now, not at the first evaluation
    check_train_config(cfg)
    if cfg.stages:  # every stage's keys, data and pair files, before the run directory is touched
        from ctxrel.train.stages import check_stages

        check_stages(cfg)
    elif cfg.data.source == "mixture":  # the shares (n >= 1 is config.MINIMUM's), before the run directory is touched
        from ctxrel.train.mixture import kind_counts

        kind_counts(cfg.data.mixture.n, cfg.data.mixture.shares())
    else:  # a missing file or an unset $VAR in data.source, before the run directory is touched
        from ctxrel.train.data import local_source

        local_source(cfg.data.source)
    _check_benchmarks(cfg)
    from ctxrel.models.loading import preflight

    preflight(cfg.model.name)  # the model's files, before the run directory is touched
    with run_marker.scope():
        if is_main_process():  # the other processes of a distributed launch write only under rank 0's claim
            run_marker.claim(out, "study", verb="study", settings=C.to_dict(cfg), what="out=")
            _check_resume(out, cfg)
            RunDir(out).write_config(C.to_dict(cfg))
        return _train_and_plot(cfg, out, plot, log)


def _train_and_plot(cfg: C.StudyConfig, out: Path, plot: bool, log) -> dict[str, Any]:
    from ctxrel.evaluate import shards
    from ctxrel.backends.hf import HFBackend
    from ctxrel.evaluate.run import run_eval
    from ctxrel.train.loop import train

    eval_cfg = _eval_config(cfg)
    def on_checkpoint(*, step, epoch, tokens, model, tokenizer, stage=None):  # every process scores a shard
        lm = HFBackend.for_config(model, tokenizer, cfg.model, name=f"{cfg.model.name}@{step_name(step)}")
        meta = dict(epoch=epoch, tokens=tokens, **({"stage": stage} if stage else {}))
        run_eval(_with_template(cfg, eval_cfg, tokenizer), checkpoint=step_name(step), lm=lm, write_config=False,
                                         row_meta=meta, known_checkpoint=KNOWN_FROM,
                                         shard=shards.current())

    t0 = time.perf_counter()
    if cfg.stages:
        from ctxrel.train.stages import train_stages

        summary = train_stages(cfg, on_checkpoint=on_checkpoint, log=log)
    else:
        summary = train(cfg, on_checkpoint=on_checkpoint, log=log)
    if summary["sharded"]:  # FSDP: no process held the whole model, so every process scores its share of the
        t1 = time.perf_counter()  # saved checkpoints now, as `ctxrel eval --run` under a launcher would
        _score_run(out, None, [], None, log)
        if is_main_process():  # the trackers see these metric rows now
            from ctxrel.train.trackers import Trackers, check_trackers

            trackers = Trackers(check_trackers(cfg.train), out,  # TensorBoard appends (no purge)
                                project=cfg.train.tracker_project, config=C.to_dict(cfg))
            for step in summary["checkpoints"]:
                trackers.checkpoint(step)
            trackers.close()
        summary["eval_s"] = round(summary["eval_s"] + time.perf_counter() - t1, 1)
    summary["wall_s"] = round(time.perf_counter() - t0, 1)
    if plot and is_main_process():
        from ctxrel.report import plot_trajectory

        boundaries = summary["epoch_boundaries"]
        if summary.get("stages"):  # a multi-stage study: its stage boundaries, labelled
            st = summary["stages"]
            boundaries = [[b["offset"], f"{a['name']} | {b['name']}"] for a, b in zip(st, st[1:])]
        summary["plot"] = str(plot_trajectory(out, epoch_boundaries=boundaries))
    return summary


def is_main_process() -> bool:
    """True outside a distributed launch, and on rank 0 inside one (set by torchrun / accelerate launch)."""
    import os

    return os.environ.get("RANK", "0") == "0"


def score_run(run_dir: str, benchmarks: list[str] | None = None, overrides: list[str] = (),
              settings: dict[str, Any] | None = None, log=print) -> list[tuple[int, list]]:
    """`ctxrel eval --run DIR`: score every saved checkpoint of a study (step 0 first: it defines the known
    subset), on the study's benchmarks or `benchmarks`. `overrides` are KEY=VALUE strings, `settings` already
    typed values by dotted key (CLI flags). Resumable like any evaluation."""
    from ctxrel.rundir import marker as run_marker

    out = Path(run_dir)
    if not (out / "config.yaml").exists():
        raise CtxrelError(f"--run {run_dir}: no config.yaml there (not a study run directory)")
    with run_marker.scope():
        if is_main_process():  # under a launcher the others score shards under this claim (ctxrel.evaluate.shards)
            run_marker.claim(out, "study", verb="eval --run", what="--run")
        return _score_run(out, benchmarks, overrides, settings, log)


def _score_run(out: Path, benchmarks, overrides, settings, log) -> list[tuple[int, list]]:
    from ctxrel.evaluate import shards
    from ctxrel.models.adapter_swap import ResidentModel
    from ctxrel.backends.hf import HFBackend
    from ctxrel.evaluate.run import run_eval
    from ctxrel.evaluate.variants import check_variants

    run_dir = str(out)
    cfg = load_study_config(str(out), overrides, {**(settings or {}), "out": str(out)})  # its config.yaml
    cps = ckpt.list_checkpoints(out)
    if not cps:
        raise CtxrelError(f"--run {run_dir}: no saved checkpoints under {out / 'checkpoints'} (train.keep_weights "
                          "was false, or the run has not reached its first checkpoint)")
    if cps[0][0] != 0:
        raise CtxrelError(f"--run {run_dir}: step-000000 is missing; it defines the known subset (was the run "
                          "trained with train.keep_weights=false?)")
    eval_cfg = _eval_config(cfg, benchmarks)
    check_variants(eval_cfg.eval)  # before the first checkpoint loads
    done = []
    shard = shards.current()
    device = shards.device_of(shard, cfg.model.device)  # sharded: this process's own GPU
    shard = shards.join(cpu=device == "cpu")
    if not shard.main:
        log = lambda *a, **k: None  # noqa: E731 -- one process reports
    resident = ResidentModel(cfg.model.name, device=device,  # the base loads once; checkpoints swap in
                             trust_remote_code=cfg.model.trust_remote_code)
    tok = resident.tokenizer
    eval_cfg = _with_template(cfg, eval_cfg, tok)  # one tokenizer for every checkpoint
    for step, folder in cps:
        meta = json.loads((folder / "checkpoint.json").read_text())
        model = resident.load(folder)
        lm = HFBackend.for_config(model, tok, cfg.model, name=f"{cfg.model.name}@{folder.name}")
        log(f"ctxrel: scoring {folder.name}")
        done.append((step, run_eval(eval_cfg, checkpoint=folder.name, lm=lm, write_config=False,
                                    row_meta=dict(epoch=meta["epoch"], tokens=meta["tokens"],
                                                  **({"stage": meta["stage"]} if "stage" in meta else {})),
                                    known_checkpoint=KNOWN_FROM, shard=shard)))
    shard.wait()  # the main process has written the last metric rows
    return done
