"""`ctxrel study` / `ctxrel train` as functions: finetune, score every checkpoint on the live model, plot.

A study evaluates step 0 (the base model) first; its knowledge-filter answers define the `known` subset for
every later checkpoint, so the subset does not drift as the model learns. Evaluation goes through `run_eval`,
the same code as `ctxrel eval`, with the live model (no reload) and the checkpoint's epoch and tokens seen in
every metric row. Scoring the saved checkpoints after the fact (`ctxrel eval --run`) is evaluate/saved_run.py,
whose eval config and known subset this module shares.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from ctxrel.config import settings as C
from ctxrel.core.errors import CtxrelError
from ctxrel.evaluate.saved_run import KNOWN_FROM, study_eval_config, with_study_template
from ctxrel.evaluate.shards import is_main_process
from ctxrel.rundir.files import step_name
from ctxrel.train import checkpoints as ckpt

# config sections a resumed run must share with the run it continues (eval settings are guarded per benchmark)
_RESUME_KEYS = ("data", "train")
_VIEW_KEYS = {"train.report_to", "train.tracker_project", "train.tensorboard"}  # where numbers are shown: free


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
    from ctxrel.evaluate import shards
    from ctxrel.rundir import marker as run_marker
    from ctxrel.rundir.files import RunDir
    from ctxrel.train.loop import check_train_config

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
    from ctxrel.backends.hf import HFBackend
    from ctxrel.evaluate import shards
    from ctxrel.evaluate.run import run_eval
    from ctxrel.evaluate.saved_run import score_checkpoints
    from ctxrel.train.loop import train

    eval_cfg = study_eval_config(cfg)
    def on_checkpoint(*, step, epoch, tokens, model, tokenizer, stage=None):  # every process scores a shard
        lm = HFBackend.for_config(model, tokenizer, cfg.model, name=f"{cfg.model.name}@{step_name(step)}")
        meta = dict(epoch=epoch, tokens=tokens, **({"stage": stage} if stage else {}))
        run_eval(with_study_template(cfg, eval_cfg, tokenizer), checkpoint=step_name(step), lm=lm, write_config=False,
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
        score_checkpoints(out, None, [], None, log)
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
