"""Training stages on one step axis: supervised finetuning, then preference optimisation (DPO / IPO), ...

A study with `stages:` runs them one after another in one run directory; each stage is the study's `data` and
`train` sections with the stage's own overrides (its data, lr, schedule, warmup, steps ...). The recipe, top
to bottom, for each stage:

    setup   - its data (supervised examples, or preference pairs: `ctxrel.train.pairs`), its plan and
              checkpoint schedule (the study's `eval.every` / `eval.early`, counted from the stage's start, so
              every stage is checkpointed densely early), a fresh optimizer and lr schedule;
    weights - the first stage starts from the base model (or `init`, a checkpoint of another run, which is only
              read); every later stage from the previous stage's last checkpoint, loaded from its files.
              Resuming inside a stage loads that stage's latest checkpoint and its optimizer state instead;
    train   - one optimizer step at a time (`loop.optimizer_step` for sft, `preference_step` for dpo), a
              checkpoint (save, then score with the study's evaluation) at each scheduled step.

The model is loaded once; `train.mode` (lora / full / qk) is the study's for every stage. Steps are counted on
the study's axis: stage k's step s is step offset_k + s, where offset_k is where stage k-1 ended; so its step 0 is
the previous stage's last checkpoint (scored once, as that stage's end). Checkpoint folders, train_log.jsonl rows
and metric rows carry the stage name; `stages.json` records each stage's offset and length.

The DPO reference model is the stage's initial weights: their trainable tensors (with LoRA, the adapter the
previous stage left, or the fresh adapter, whose zero B matrices give the base model, when none) are kept aside
and saved as `stages/<index>-<name>.reference.safetensors` (so a resumed stage scores against the same
reference), and the reference log-probabilities of a pair are computed with them swapped in, once per pair
(cached: the reference does not move). Dropout is off in a dpo stage (as TRL's default), so at its first step
the policy equals the reference and the loss is log 2.
"""

from __future__ import annotations

import json
import sys
import time
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from ctxrel.config import settings as C
from ctxrel.core.errors import CtxrelError, InputError
from ctxrel.rundir.files import CHECKPOINT_META, atomic_write_text
from ctxrel.train import checkpoints as ckpt

LEDGER = "stages.json"
STAGES_DIR = "stages"
FIXED_TRAIN_KEYS = ("mode", "qk_lora", "lora", "tensorboard", "report_to", "tracker_project", "keep_weights")  # the study's, for every stage


@dataclass
class Stage:
    index: int
    name: str
    kind: str
    spec: C.StageConfig
    cfg: C.StudyConfig  # the study with the stage's data and train overrides (stages emptied)


def _merge(base: dict, over: dict) -> dict:
    out = dict(base)
    for k, v in over.items():
        out[k] = _merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def resolve_stages(cfg: C.StudyConfig) -> list[Stage]:
    """The stages of a study with their effective configs, checked (pure: no file is read). Names are the
    kinds, numbered when a kind repeats (sft, dpo, dpo-2)."""
    if not cfg.stages:
        return []
    base = C.to_dict(cfg)
    base.pop("stages")
    seen: dict[str, int] = {}
    out = []
    for k, spec in enumerate(cfg.stages):
        seen[spec.kind] = seen.get(spec.kind, 0) + 1
        name = spec.name or (spec.kind if seen[spec.kind] == 1 else f"{spec.kind}-{seen[spec.kind]}")
        where = f"stages[{k}] ({name})"
        if spec.init is not None and k > 0:
            raise CtxrelError(f"{where}.init: only the first stage starts from a named checkpoint; a later stage "
                              "starts from the previous stage's last checkpoint")
        fixed = sorted(set(spec.train) & set(FIXED_TRAIN_KEYS))
        if fixed:
            raise CtxrelError(f"{where}.train.{fixed[0]}: every stage uses the study's train.{fixed[0]}; set it "
                              "in the study's train section")
        try:
            scfg = C.from_dict(C.StudyConfig, _merge(base, {"data": spec.data, "train": spec.train}))
        except CtxrelError as e:
            raise CtxrelError(f"{where}: {e}") from None
        if spec.kind == "grpo":
            bad = [(k, v, why) for k, v, ok, why in [
                ("generations", spec.generations, spec.generations >= 2, "must be >= 2 (a group to compare)"),
                ("completion_tokens", spec.completion_tokens, spec.completion_tokens >= 1, "must be >= 1"),
                ("temperature", spec.temperature, spec.temperature > 0, "must be > 0 (completions are sampled)"),
                ("beta", spec.beta, spec.beta >= 0, "must be >= 0")] if not ok]
            if bad:
                raise CtxrelError(f"{where}.{bad[0][0]}={bad[0][1]!r} {bad[0][2]}")
            if scfg.data.source == "mixture":
                raise CtxrelError(f"{where}.data.source: a grpo stage takes the prompts and answers of preference "
                                  "pairs: `pairs` (built in, data.pairs) or a pairs file")
        if spec.kind == "dpo":
            if not spec.beta > 0:
                raise CtxrelError(f"{where}.beta={spec.beta!r} must be > 0")
            if not 0 <= spec.label_smoothing < 0.5:
                raise CtxrelError(f"{where}.label_smoothing={spec.label_smoothing!r} must be in [0, 0.5)")
            if scfg.data.source == "mixture":
                raise CtxrelError(f"{where}.data.source: a dpo stage trains on preference pairs: `pairs` (built "
                                  "in, data.pairs) or a pairs file (prompt, chosen, rejected)")
        elif spec.kind == "sft" and scfg.data.source == "pairs":
            raise CtxrelError(f"{where}.data.source: pairs are for a dpo or grpo stage; an sft stage takes the "
                              "mixture, a file or a dataset id")
        out.append(Stage(k, name, spec.kind, spec, scfg))
    names = [s.name for s in out]
    if len(set(names)) != len(names):
        raise CtxrelError(f"stages: names must differ, got {names}")
    return out


def check_stages(cfg: C.StudyConfig) -> list[Stage]:
    """Everything about the stages that can be checked before a model loads: keys, training values, data
    sources and pair files (every record validated), the `init` checkpoint."""
    from ctxrel.train.loop import check_train_config, sharded_launch

    stages = resolve_stages(cfg)
    if stages and sharded_launch():
        raise CtxrelError("stages under an FSDP launch are not tested, so not supported; run them with DDP or "
                          "one process")
    for st in stages:
        where = f"stages[{st.index}] ({st.name})"
        try:
            check_train_config(st.cfg)
            data = st.cfg.data
            if st.kind in ("dpo", "grpo"):
                from ctxrel.train.pairs import pair_counts, read_pairs

                if data.source == "pairs":
                    pair_counts(data.pairs.n, data.pairs.irrelevant)
                else:
                    read_pairs(data.source, skip_invalid=st.spec.skip_invalid)
            elif data.source == "mixture":
                from ctxrel.train.mixture import kind_counts

                kind_counts(data.mixture.n, data.mixture.shares())
            else:
                from ctxrel.train.data import local_source

                local_source(data.source)
        except InputError:
            raise  # names its file and line already
        except CtxrelError as e:
            raise CtxrelError(f"{where}: {e}") from None
        if st.spec.init is not None:
            init_checkpoint(st.spec.init, cfg)
    return stages


def init_checkpoint(path: str, cfg: C.StudyConfig) -> Path:
    """The checkpoint directory a first stage starts from, checked: complete, and trained with this study's
    train.mode on this study's base model. It is only read."""
    folder = Path(path).expanduser()
    meta_file = folder / CHECKPOINT_META
    if not meta_file.is_file():
        raise CtxrelError(f"stages[0].init {path}: not a ctxrel checkpoint directory (no {CHECKPOINT_META})")
    meta = json.loads(meta_file.read_text())
    if meta.get("mode") != cfg.train.mode:
        raise CtxrelError(f"stages[0].init {path}: trained with train.mode={meta.get('mode')}, this study uses "
                          f"train.mode={cfg.train.mode}")
    if meta.get("base_model") != cfg.model.name:
        raise CtxrelError(f"stages[0].init {path}: a checkpoint of {meta.get('base_model')!r}, this study "
                          f"trains {cfg.model.name!r}")
    if folder.resolve().is_relative_to(Path(cfg.out).resolve()):
        raise CtxrelError(f"stages[0].init {path}: lies inside this study's own out={cfg.out}; name another run's "
                          "checkpoint")
    return folder


# -- the recipe ---------------------------------------------------------------------------------------------------

def _stage_data(st: Stage, tok) -> tuple[Any, list[int]]:
    """(tokenised data, tokens per example) of a stage."""
    from ctxrel.train.data import load_examples, tokenize
    from ctxrel.core.prompts import resolve_data_template

    template = resolve_data_template(st.cfg.data.template, tok)
    if st.kind in ("dpo", "grpo"):
        from ctxrel.train.pairs import load_pairs, tokenize_pairs

        pairs, skipped = load_pairs(st.cfg.data, seed=st.cfg.train.seed, skip_invalid=st.spec.skip_invalid)
        data = tokenize_pairs(pairs, tok, template=template, max_length=st.cfg.data.max_length,
                              skip_invalid=st.spec.skip_invalid, skipped=skipped)
        return data, [len(c) + len(r) for c, r in zip(data.chosen_ids, data.rejected_ids)]
    data = tokenize(load_examples(st.cfg.data, seed=st.cfg.train.seed), tok, template=template,
                    max_length=st.cfg.data.max_length)
    return data, [len(x) for x in data.input_ids]


def _latest(out: Path) -> tuple[Path | None, dict[str, Any]]:
    latest = ckpt.latest_resumable(out)
    return latest, (json.loads((latest / CHECKPOINT_META).read_text()) if latest is not None else {})


def _reference_file(out: Path, st: Stage) -> Path:
    return out / STAGES_DIR / f"{st.index}-{st.name}.reference.safetensors"


def train_stages(cfg: C.StudyConfig, *, on_checkpoint: Callable[..., None] | None = None, log=print
                 ) -> dict[str, Any]:
    """Run the study's stages in order (resuming where its run directory stopped); `on_checkpoint` as in
    `loop.train`, with `stage=` the stage's name. Returns the summary (one entry per stage)."""
    from accelerate.utils import set_seed
    from tqdm.auto import tqdm

    from ctxrel.models.loading import load_weights
    from ctxrel.train.reference import snapshot
    from ctxrel.train.loop import (ResponseLoss, Session, build_model, build_optimizer, checkpoint, cleanup,
                                   log_step, make_accelerator, make_plan, on_cpu, optimizer_step, resume)

    stages = check_stages(cfg)
    out = Path(cfg.out)
    cpu = on_cpu(cfg)
    acc = make_accelerator(cpu)
    say = log if acc.is_main_process else (lambda *a, **k: None)
    model, tok = build_model(cfg, acc.device, cpu=cpu)  # seeds the LoRA initialisation, as in a one-stage study
    wrapped = acc.prepare(ResponseLoss(model))
    ledger = json.loads((out / LEDGER).read_text()) if (out / LEDGER).exists() else []
    offset, summaries = 0, []
    prepared = [_stage_data(st, tok) for st in stages]  # every stage's data fails (or not) before any training
    for st, (data, lengths) in zip(stages, prepared):
        plan = make_plan(len(lengths), st.cfg.train, st.cfg.eval, acc.num_processes, lengths)
        if st.index > 0:  # its step 0 is the previous stage's last checkpoint, scored as that stage's end
            plan.checkpoints = [c for c in plan.checkpoints if c > 0]
        latest, meta = _latest(out)
        at = meta.get("stage_index", -1 if latest is None else 0)
        if at > st.index:  # finished in an earlier run of this command: its summary is in the ledger
            done = next((e for e in ledger if e["index"] == st.index and "train_s" in e), None)
            summaries.append(done or dict(index=st.index, name=st.name, kind=st.kind, offset=offset,
                                          total=plan.total, train_s=0.0, eval_s=0.0))
            offset += plan.total
            continue
        info = dict(index=st.index, name=st.name, kind=st.kind, offset=offset, total=plan.total)
        if acc.is_main_process and not any(e["index"] == st.index for e in ledger):
            ledger = ledger + [info]
            atomic_write_text(out / LEDGER, json.dumps(ledger, indent=1))
        set_seed(st.cfg.train.seed)
        if at == st.index:  # resume inside this stage (or re-score its last checkpoint)
            load_weights(model, latest)
        elif st.index > 0:  # hand-over: the previous stage's last checkpoint, from its files
            load_weights(model, latest)
        elif st.spec.init is not None:
            try:
                load_weights(model, init_checkpoint(st.spec.init, cfg))
            except (RuntimeError, KeyError) as e:
                raise CtxrelError(f"stages[0].init {st.spec.init}: does not fit this model ({e})"[:300]) from None
        reference = None
        if st.kind in ("dpo", "grpo"):
            reference = snapshot(model, _reference_file(out, st), fresh=at != st.index, main=acc.is_main_process)
            acc.wait_for_everyone()
        optimizer, scheduler = build_optimizer(model, st.cfg.train, plan.total)
        optimizer = acc.prepare(optimizer)
        s = Session(st.cfg, out, acc, model, tok, wrapped, optimizer, scheduler,
                    [p for p in model.parameters() if p.requires_grad], data, lengths, plan,
                    dict(step=0, tokens=0, pad_tokens=0, train_s=0.0, eval_s=0.0),
                    sum(p.numel() for p in model.parameters() if p.requires_grad),
                    sum(p.numel() for p in model.parameters()), say=say, offset=offset, stage=info)
        say(f"ctxrel: stage {st.index} {st.name} ({st.kind}): {len(lengths)} "
            f"{'examples' if st.kind == 'sft' else 'pairs'}, {plan.total} steps of {plan.batch_size} "
            f"(study steps {offset}-{offset + plan.total}); checkpoints at study steps "
            f"{[c + offset for c in plan.checkpoints]}")
        if at == st.index:
            resume(s, latest)
        if s.main:  # closed by cleanup() at the stage's end
            from ctxrel.train.trackers import Trackers, check_trackers

            s.trackers = Trackers(check_trackers(st.cfg.train), out, step=offset + s.progress["step"],
                                  project=st.cfg.train.tracker_project, config=C.to_dict(cfg))
        s.last_logged = (s.progress["tokens"], s.progress["train_s"])
        step = s.progress["step"]
        if step in plan.checkpoints:
            checkpoint(s, step, on_checkpoint)  # step 0 of the first stage, or an interrupted evaluation
        bar = tqdm(total=plan.total, initial=step, desc=st.name, unit="step", file=sys.stderr, disable=not s.main,
                   dynamic_ncols=True)
        cache: dict[int, tuple[float, float]] = {}
        while step < plan.total:
            if st.kind == "dpo":
                loss, grad_norm, extra = preference_step(s, step, reference, cache, st.spec)
            elif st.kind == "grpo":
                from ctxrel.train.grpo import grpo_step

                loss, grad_norm, extra = grpo_step(s, step, reference, st.spec)
            else:
                (loss, grad_norm), extra = optimizer_step(s, step), {}
            step += 1
            log_step(s, step, loss, grad_norm, bar, extra)
            if step in plan.checkpoints:
                checkpoint(s, step, on_checkpoint)
        bar.close()
        summaries.append(dict(info, **cleanup(s)))
        if acc.is_main_process:  # the stage's summary, for a later run that skips the finished stage
            ledger = [e for e in ledger if e["index"] != st.index] + [summaries[-1]]
            atomic_write_text(out / LEDGER, json.dumps(sorted(ledger, key=lambda e: e["index"]), indent=1))
        offset += plan.total
        model.train()
    summary = dict(stages=summaries, total_steps=offset, sharded=False, epoch_boundaries=[],
                   stage_boundaries=[e["offset"] for e in summaries[1:]] if summaries else [],
                   train_s=round(sum(e["train_s"] for e in summaries), 1),
                   eval_s=round(sum(e["eval_s"] for e in summaries), 1))
    if acc.is_main_process:
        atomic_write_text(out / "train_summary.json", json.dumps(summary, indent=1))
    return summary


def preference_step(s, step: int, reference: dict[str, Any], cache: dict, spec: C.StageConfig
                    ) -> tuple[float, Any, dict[str, float]]:
    """Optimizer step `step` of a dpo stage on its global batch of pairs: chosen and rejected responses of a
    micro-batch in one forward (2m rows), the reference log-probs (cached per pair), the preference loss
    (`ctxrel.train.preference`) as the mean over the global batch's pairs, clipping, AdamW, the schedule.
    Returns (loss, gradient norm, reward statistics)."""
    import torch

    from ctxrel.train.data import collate
    from ctxrel.train.loop import apply_update, count_step
    from ctxrel.train.preference import length_normalised, pair_stats, preference_loss
    from ctxrel.train.reference import reference_logps

    t0 = time.perf_counter()
    acc, plan, tc, d = s.acc, s.plan, s.cfg.train, s.tokenized
    world = acc.num_processes
    per_sequence = "mean" if length_normalised(spec.loss) else "sum"
    batch = plan.global_batch(step, tc.seed)
    rank = acc.process_index
    mine = batch[rank * plan.per_process:(rank + 1) * plan.per_process]
    s.model.eval()  # no dropout: the policy starts equal to its reference
    parts = []
    for k in range(plan.accum):
        idx = mine[k * plan.micro:(k + 1) * plan.micro]
        m = len(idx)
        ids, mask, labels = (t.to(acc.device) for t in collate(
            [d.chosen_ids[i] for i in idx] + [d.rejected_ids[i] for i in idx],
            [d.chosen_labels[i] for i in idx] + [d.rejected_labels[i] for i in idx], s.tok.pad_token_id))
        if any(i not in cache for i in idx):
            ref = reference_logps(s, reference, ids, mask, labels, per_sequence).float().cpu()
            cache.update({i: (float(ref[j]), float(ref[m + j])) for j, i in enumerate(idx)})
        ref = torch.tensor([cache[i][0] for i in idx] + [cache[i][1] for i in idx], device=acc.device)
        sync = k == plan.accum - 1
        with (acc.no_sync(s.wrapped) if not sync and world > 1 else nullcontext()):
            logps = s.wrapped(ids, mask, labels, per_sequence=per_sequence)  # (2m,): chosen rows, then rejected
            losses, chosen_r, rejected_r = preference_loss(logps[:m], logps[m:], ref[:m], ref[m:], beta=spec.beta,
                                                           loss_type=spec.loss,
                                                           label_smoothing=spec.label_smoothing)
            acc.backward(losses.sum() * world / len(batch))  # DDP averages over processes: the batch mean
        parts.append(torch.stack([losses.detach(), chosen_r, rejected_r], dim=1))  # (m, 3)
    grad_norm = apply_update(s)
    stats = acc.gather(torch.cat(parts)).T  # (3, n): loss, chosen and rejected reward of every pair of the batch
    extra = pair_stats(stats[0], stats[1], stats[2])
    loss = extra.pop("loss")
    count_step(s, step, t0, sum(s.lengths[i] for i in batch), plan.padding(batch, s.lengths))
    return loss, grad_norm, extra
