"""`ctxrel eval --run DIR`: every saved checkpoint of a study scored after the fact, as the study scores them live.

Step 0 (the base model) is scored first: its knowledge-filter answers define the `known` subset for every later
checkpoint (`KNOWN_FROM`), so the subset does not drift as the model learns. The base model loads once and each
checkpoint's weights are swapped in (`models.adapter_swap`); every checkpoint goes through `run_eval` with its
epoch and tokens seen in every metric row. A study's own evaluation (train/study.py) uses the same eval config
(`study_eval_config`, `with_study_template`) and, under FSDP, this module's `score_checkpoints`.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

from ctxrel.config.settings import EvalConfig, RunConfig, StudyConfig, load_study_config
from ctxrel.core.errors import CtxrelError
from ctxrel.core.prompts import resolve_data_template
from ctxrel.evaluate import shards
from ctxrel.rundir.files import list_checkpoints, step_name

KNOWN_FROM = step_name(0)  # the checkpoint whose knowledge-filter answers define the known subset


def study_eval_config(cfg: StudyConfig, benchmarks: list[str] | None = None) -> RunConfig:
    """The `ctxrel eval` config a study scores its checkpoints with: its eval section, its model without adapter."""
    fields = {f.name for f in dataclasses.fields(EvalConfig)}
    ev = EvalConfig(**{k: v for k, v in dataclasses.asdict(cfg.eval).items() if k in fields})
    if benchmarks:
        ev.benchmarks = list(benchmarks)
    return RunConfig(model=dataclasses.replace(cfg.model, adapter=None), eval=ev, out=cfg.out)


def with_study_template(cfg: StudyConfig, eval_cfg: RunConfig, tokenizer) -> RunConfig:
    """`eval_cfg` with the template a study evaluates with: `eval.template: auto` means the template the model is
    trained with (for a tokenizer without a chat template, `ctxrel eval` alone would pick plain, but training
    picks alpaca). A copy: `eval_cfg` itself is never changed."""
    if cfg.eval.template != "auto":
        return eval_cfg
    template = resolve_data_template(cfg.data.template, tokenizer)
    return dataclasses.replace(eval_cfg, eval=dataclasses.replace(eval_cfg.eval, template=template))


def score_run(run_dir: str, benchmarks: list[str] | None = None, overrides: list[str] = (),
              settings: dict[str, Any] | None = None, log=print) -> list[tuple[int, list]]:
    """`ctxrel eval --run DIR`: score every saved checkpoint of a study (step 0 first: it defines the known
    subset), on the study's benchmarks or `benchmarks`. `overrides` are KEY=VALUE strings, `settings` already
    typed values by dotted key (CLI flags). Resumable like any evaluation."""
    from ctxrel.rundir import marker

    out = Path(run_dir)
    if not (out / "config.yaml").exists():
        raise CtxrelError(f"--run {run_dir}: no config.yaml there (not a study run directory)")
    with marker.scope():
        if shards.is_main_process():  # under a launcher the others score shards under this claim (evaluate.shards)
            marker.claim(out, "study", verb="eval --run", what="--run")
        return score_checkpoints(out, benchmarks, overrides, settings, log)


def score_checkpoints(out: Path, benchmarks, overrides, settings, log) -> list[tuple[int, list]]:
    """Score the saved checkpoints of study `out` (already claimed) on every process of a launch; (step, results)."""
    from ctxrel.backends.hf import HFBackend
    from ctxrel.evaluate.run import run_eval
    from ctxrel.evaluate.variants import check_variants
    from ctxrel.models.adapter_swap import ResidentModel

    cfg = load_study_config(str(out), overrides, {**(settings or {}), "out": str(out)})  # its config.yaml
    cps = _saved_checkpoints(out)
    eval_cfg = study_eval_config(cfg, benchmarks)
    check_variants(eval_cfg.eval)  # before the first checkpoint loads
    done = []
    device = shards.device_of(shards.current(), cfg.model.device)  # sharded: this process's own GPU
    shard = shards.join(cpu=device == "cpu")
    if not shard.main:
        log = lambda *a, **k: None  # noqa: E731 -- one process reports
    resident = ResidentModel(cfg.model.name, device=device,  # the base loads once; checkpoints swap in
                             trust_remote_code=cfg.model.trust_remote_code)
    tok = resident.tokenizer
    eval_cfg = with_study_template(cfg, eval_cfg, tok)  # one tokenizer for every checkpoint
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


def _saved_checkpoints(out: Path) -> list[tuple[int, Path]]:
    """The study's saved checkpoints, step 0 first; one sentence when there is none or step 0 is missing."""
    cps = list_checkpoints(out)
    if not cps:
        raise CtxrelError(f"--run {out}: no saved checkpoints under {out / 'checkpoints'} (train.keep_weights "
                          "was false, or the run has not reached its first checkpoint)")
    if cps[0][0] != 0:
        raise CtxrelError(f"--run {out}: step-000000 is missing; it defines the known subset (was the run "
                          "trained with train.keep_weights=false?)")
    return cps
