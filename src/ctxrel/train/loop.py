"""The finetuning loop, explicit and readable top to bottom: setup -> (resume) -> train -> checkpoint -> done.

Built on `accelerate` (devices, DDP under `accelerate launch`, bf16 autocast on GPU) and `peft` (LoRA); there is
no Trainer subclass. Choices that matter for the science:

* batches are a pure function of (seed, epoch, step): every process holds the whole tokenised data set and takes
  its slice of each global batch, so 1 process x batch 4 and 2 processes x batch 2 see the same examples, and a
  resumed run continues with exactly the batches an uninterrupted one would have used;
* `train.group_by_length` rearranges the examples of an epoch (the same ones unsorted batching would use) into
  batches of similar length, still a pure function of (seed, epoch, step): less padding, the same loss per batch;
* the loss of an optimizer step is the mean over all response tokens of its global batch (summed per micro-batch,
  divided by the step's total), so gradient accumulation and data parallelism change nothing but rounding;
* the vocabulary projection runs only at positions that carry a label (`ResponseLoss`), most of a small
  model's cost at short responses.
"""

from __future__ import annotations

import functools
import json
import math
import random
import shutil
import sys
import time
import warnings
from contextlib import nullcontext
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any, Callable

import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from ctxrel.errors import CtxrelError
from ctxrel.results import append_records, atomic_write_text, read_records
from ctxrel.train import checkpoints as ckpt
from ctxrel.train.data import IGNORE, collate


class ResponseLoss(torch.nn.Module):
    """Summed cross-entropy over labelled positions. Wraps the model so that DDP sees one
    forward; the decoder runs on every position, the output projection only where a label is."""

    def __init__(self, model):
        super().__init__()
        self.model = model
        base = model.get_base_model() if hasattr(model, "get_base_model") else model
        self.decoder = base.get_decoder()
        self.head = base.get_output_embeddings()
        self.softcap = getattr(base.config, "final_logit_softcapping", None)
        for attr in ("logit_scale", "logits_scaling"):  # Cohere / Granite scale logits inside forward()
            if getattr(base.config, attr, None) not in (None, 1, 1.0):
                raise CtxrelError(f"models with config.{attr} are not supported by the training loss yet")

    def forward(self, input_ids, attention_mask, labels):
        hidden = self.decoder(input_ids=input_ids, attention_mask=attention_mask,
                              use_cache=False).last_hidden_state  # (B, T, C)
        targets = labels[:, 1:]  # token t predicts t+1
        keep = targets != IGNORE  # (B, T-1)
        logits = self.head(hidden[:, :-1][keep]).float()  # (N, V): only labelled positions
        if self.softcap:
            logits = torch.tanh(logits / self.softcap) * self.softcap
        return F.cross_entropy(logits, targets[keep], reduction="sum")


# peft (not ctxrel) still calls transformers' deprecated `is_gradient_checkpointing`; the warning is noise to a
# researcher reading a study's output (pytest filters the same message in pyproject.toml)
warnings.filterwarnings("ignore", message="`is_gradient_checkpointing` is deprecated", category=FutureWarning)


def lr_factor(step: int, total: int, warmup_steps: int, schedule: str) -> float:
    """Multiplier of the peak lr at optimizer step `step` (0-based): linear warmup, then constant, linear or
    cosine decay towards 0 at `total`."""
    if step < warmup_steps:
        return (step + 1) / warmup_steps
    if schedule == "constant":
        return 1.0
    progress = (step - warmup_steps) / max(1, total - warmup_steps)
    if schedule == "linear":
        return max(0.0, 1.0 - progress)
    return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))


@functools.lru_cache(maxsize=2)  # pure; every step of an epoch reads the same order
def epoch_order(n: int, seed: int, epoch: int) -> tuple[int, ...]:
    order = list(range(n))
    random.Random(f"ctxrel-{seed}-{epoch}").shuffle(order)
    return tuple(order)


GROUP_WINDOW = 50  # batches per window sorted by length (as transformers' LengthGroupedSampler's mega-batches)


def grouped_order(lengths: tuple[int, ...], batch_size: int, n_batches: int, seed: int, epoch: int,
                  window: int = GROUP_WINDOW) -> tuple[int, ...]:
    """An epoch's order for length-grouped batching (pure): the first `n_batches * batch_size` examples of the
    unsorted epoch order (so an epoch trains on the same examples either way), cut into windows of `window`
    batches, each sorted by length (longest first; ties keep the shuffled order), cut into batches, and the
    batches shuffled with a seed of their own. Consecutive slices of `batch_size` are the global batches."""
    order = epoch_order(len(lengths), seed, epoch)[:n_batches * batch_size]
    span = window * batch_size
    batches = []
    for start in range(0, len(order), span):
        chunk = sorted(order[start:start + span], key=lambda i: -lengths[i])
        batches += [chunk[j:j + batch_size] for j in range(0, len(chunk), batch_size)]
    random.Random(f"ctxrel-groups-{seed}-{epoch}").shuffle(batches)
    return tuple(i for b in batches for i in b)


@dataclass
class Plan:
    """Batch geometry and schedule, derived from the config and the number of processes."""

    n_examples: int
    batch_size: int  # examples per optimizer step, all processes
    per_process: int
    micro: int
    accum: int
    steps_per_epoch: int
    total: int
    checkpoints: list[int]
    lengths: tuple[int, ...] | None = None  # tokens per example when batches are grouped by length, else None
    _orders: dict = field(default_factory=dict, repr=False, compare=False)  # (seed, epoch) -> grouped order

    def global_batch(self, step: int, seed: int) -> list[int]:
        epoch, i = divmod(step, self.steps_per_epoch)
        if self.lengths is None:
            order = epoch_order(self.n_examples, seed, epoch)
        else:
            if (seed, epoch) not in self._orders:
                self._orders.clear()
                self._orders[seed, epoch] = grouped_order(self.lengths, self.batch_size, self.steps_per_epoch,
                                                          seed, epoch)
            order = self._orders[seed, epoch]
        return list(order[i * self.batch_size:(i + 1) * self.batch_size])

    def padding(self, batch: list[int], lengths) -> int:
        """Pad positions the step's forward passes compute, over all processes: each micro-batch is padded to
        its longest example."""
        pad = 0
        for start in range(0, len(batch), self.micro):
            sizes = [lengths[i] for i in batch[start:start + self.micro]]
            pad += max(sizes) * len(sizes) - sum(sizes)
        return pad

    def epoch_at(self, step: int) -> float:
        return step / self.steps_per_epoch

    def epoch_boundaries(self) -> list[int]:
        return [k * self.steps_per_epoch for k in range(1, math.ceil(self.total / self.steps_per_epoch))]


def check_train_config(cfg) -> None:
    """Values the loop cannot use, named by key -- checked before any model loads."""
    t, lo = cfg.train, cfg.train.lora
    problems = [(k, v, why) for k, v, ok, why in [
        ("train.lr", t.lr, t.lr > 0, "must be > 0"),
        ("train.warmup", t.warmup, 0 <= t.warmup <= 1, "is a share of the steps, in [0, 1]"),
        ("train.clip", t.clip, t.clip >= 0, "must be >= 0 (0 = no clipping)"),
        ("train.weight_decay", t.weight_decay, t.weight_decay >= 0, "must be >= 0"),
        ("train.epochs", t.epochs, t.epochs >= 1, "must be >= 1"),
        ("train.max_steps", t.max_steps, t.max_steps is None or t.max_steps >= 1, "must be >= 1 (or null)"),
        ("train.micro_batch_size", t.micro_batch_size, t.micro_batch_size is None or t.micro_batch_size >= 1,
         "must be >= 1 (or null)"),
        ("train.lora.rank", lo.rank, lo.rank >= 1, "must be >= 1"),
        ("train.lora.dropout", lo.dropout, 0 <= lo.dropout < 1, "must be in [0, 1)"),
        ("data.limit", cfg.data.limit, cfg.data.limit is None or cfg.data.limit >= 1, "must be >= 1 (or null)"),
        ("data.max_length", cfg.data.max_length, cfg.data.max_length >= 2, "must be >= 2"),
    ] if not ok]
    if problems:
        raise CtxrelError("; ".join(f"{k}={v!r} {why}" for k, v, why in problems))


def make_plan(n_examples: int, train_cfg, eval_cfg, world: int, lengths=None) -> Plan:
    """Batch geometry and checkpoint steps; `lengths` (tokens per example) are needed with
    `train.group_by_length`."""
    b = train_cfg.batch_size
    if b < 1 or b % world:
        raise CtxrelError(f"train.batch_size={b} must be a positive multiple of the {world} process(es)")
    per = b // world
    micro = train_cfg.micro_batch_size or per
    if micro < 1 or per % micro:
        raise CtxrelError(f"train.micro_batch_size={micro} must divide the {per} examples per process and step "
                          f"(batch_size {b} / {world} processes)")
    spe = n_examples // b
    if spe == 0:
        raise CtxrelError(f"only {n_examples} training examples for train.batch_size={b}; add data or lower it")
    total = spe * train_cfg.epochs
    if train_cfg.max_steps is not None:
        total = min(total, train_cfg.max_steps)
    if total < 1:
        raise CtxrelError("no optimizer steps to take: check train.epochs and train.max_steps")
    grouped = None
    if train_cfg.group_by_length:
        if lengths is None or len(lengths) != n_examples:
            raise CtxrelError("train.group_by_length needs the length of every example")
        grouped = tuple(lengths)
    return Plan(n_examples, b, per, micro, per // micro, spe, total,
                ckpt.checkpoint_steps(total, eval_cfg.every, eval_cfg.early), grouped)


def _optimizer(model, train_cfg):
    decay, no_decay = [], []
    for p in model.parameters():
        if p.requires_grad:
            (no_decay if p.ndim < 2 or getattr(p, "_ctxrel_no_decay", False) else decay).append(p)
    if not decay and not no_decay:
        raise CtxrelError(f"train.mode={train_cfg.mode} left no trainable parameter")
    groups = [{"params": decay, "weight_decay": train_cfg.weight_decay},
              {"params": no_decay, "weight_decay": 0.0}]
    return torch.optim.AdamW([g for g in groups if g["params"]], lr=train_cfg.lr)


def train(cfg, *, on_checkpoint: Callable[..., None] | None = None, tokenized=None, log=print) -> dict[str, Any]:
    """Finetune `cfg.model` on `cfg.data` with `cfg.train`; at each checkpoint step save weights and resume state,
    then call `on_checkpoint(step=, epoch=, tokens=, model=, tokenizer=)` on the main process (the study
    evaluates there). Rerunning with the same config resumes from the latest checkpoint. Returns a summary."""
    from accelerate import Accelerator, DistributedType, InitProcessGroupKwargs
    from accelerate.utils import set_seed

    from ctxrel.models import default_device, load_model, select_trainable
    from ctxrel.train.data import load_examples, resolve_data_template, tokenize

    tc, out = cfg.train, Path(cfg.out)
    check_train_config(cfg)
    examples = load_examples(cfg.data, seed=tc.seed) if tokenized is None else None  # bad data fails before the model
    cpu = (cfg.model.device or default_device()) == "cpu"
    acc = Accelerator(cpu=cpu, mixed_precision="no" if cpu else "bf16",
                      kwargs_handlers=[InitProcessGroupKwargs(timeout=timedelta(hours=6))])  # evals run on rank 0
    if acc.distributed_type not in (DistributedType.NO, DistributedType.MULTI_GPU, DistributedType.MULTI_CPU):
        raise CtxrelError(f"accelerate is set up for {acc.distributed_type}; the ctxrel loop supports plain data "
                          "parallelism (DDP) only so far -- sharded optimizers and weights (FSDP, DeepSpeed) need "
                          "gathered checkpoints and evaluation, which are not built yet")
    main, rank, world = acc.is_main_process, acc.process_index, acc.num_processes
    say = log if main else (lambda *a, **k: None)

    # -- setup: model, trainable parameters, data, plan ------------------------------------------------------
    set_seed(tc.seed)
    dtype = torch.float32 if cpu or tc.mode == "full" or (tc.mode == "qk" and not tc.qk_lora) else torch.bfloat16
    model, tok, _ = load_model(cfg.model.name, device=str(acc.device), dtype=dtype,
                               trust_remote_code=cfg.model.trust_remote_code)
    if tok.pad_token_id is None:
        tok.pad_token = tok.eos_token or tok.unk_token
    model = select_trainable(model, tc)
    model.train()
    n_train = sum(p.numel() for p in model.parameters() if p.requires_grad)
    n_all = sum(p.numel() for p in model.parameters())
    if tokenized is None:
        template = resolve_data_template(cfg.data.template, tok)
        tokenized = tokenize(examples, tok, template=template, max_length=cfg.data.max_length)
    lengths = [len(x) for x in tokenized.input_ids]
    plan = make_plan(len(lengths), tc, cfg.eval, world, lengths)
    st = tokenized.stats
    say(f"ctxrel: {len(tokenized.input_ids)} examples ({st['truncated']} truncated to {cfg.data.max_length} "
        f"tokens, {st['dropped']} dropped: no response left), {st['label_tokens']} response tokens; "
        f"train.mode={tc.mode}: {n_train:,} of {n_all:,} parameters trainable")
    say(f"ctxrel: {plan.total} steps ({plan.steps_per_epoch}/epoch) of {plan.batch_size} examples = {world} "
        f"process(es) x {plan.accum} micro-batch(es) x {plan.micro}"
        f"{', grouped by length' if tc.group_by_length else ''}; checkpoints at steps {plan.checkpoints}")

    optimizer = _optimizer(model, tc)
    warmup = round(tc.warmup * plan.total)
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: lr_factor(s, plan.total, warmup, tc.schedule))
    wrapped, optimizer = acc.prepare(ResponseLoss(model), optimizer)
    trainable = [p for p in model.parameters() if p.requires_grad]

    # -- resume ----------------------------------------------------------------------------------------------
    progress = dict(step=0, tokens=0, pad_tokens=0, train_s=0.0, eval_s=0.0)
    latest = ckpt.latest_resumable(out)
    if latest is not None:
        ckpt.load_weights(model, latest)
        progress = ckpt.load_state(latest, optimizer, rank)
        scheduler.load_state_dict(progress.pop("scheduler"))
        progress.setdefault("pad_tokens", None)  # a checkpoint written before padding was counted
        if main:  # steps logged after the checkpoint are trained again; keep one row per step
            log_file = out / "train_log.jsonl"
            kept = [r for r in read_records(log_file) if r["step"] <= progress["step"]]
            atomic_write_text(log_file, "".join(json.dumps(r) + "\n" for r in kept))
        say(f"ctxrel: resuming from {latest.name} ({progress['step']} of {plan.total} steps done)")
    step = progress["step"]

    writer = _tensorboard(out / "tensorboard", step) if main and tc.tensorboard else None

    def checkpoint(step: int) -> None:
        name = ckpt.step_name(step)
        final = out / "checkpoints" / name
        meta = dict(step=step, epoch=plan.epoch_at(step), tokens=progress["tokens"], mode=tc.mode,
                    base_model=cfg.model.name)
        if not (final / "state" / "progress.json").exists():
            tmp = out / "checkpoints" / f".tmp-{name}"
            if main:
                shutil.rmtree(tmp, ignore_errors=True)  # a crashed earlier attempt's files must not be committed
                tmp.mkdir(parents=True)
            acc.wait_for_everyone()
            ckpt.save_rng(tmp, rank)
            acc.wait_for_everyone()
            if main:
                ckpt.save_weights(model, tmp, meta)
                ckpt.save_state(tmp, optimizer, dict(progress, step=step, scheduler=scheduler.state_dict()))
                ckpt.commit(tmp, final)
                ckpt.prune(out, tc.keep_weights)
            acc.wait_for_everyone()
        if on_checkpoint is not None and main:
            t0 = time.perf_counter()
            model.eval()
            # evaluation must not move the training RNG (CPU or GPU), or a resumed run would differ
            devices = [acc.device] if acc.device.type == "cuda" else []
            with torch.random.fork_rng(devices=devices), torch.no_grad(), acc.autocast():
                on_checkpoint(step=step, epoch=meta["epoch"], tokens=meta["tokens"], model=model, tokenizer=tok)
            model.train()
            progress["eval_s"] += time.perf_counter() - t0
            if writer is not None:
                writer.flush()
        acc.wait_for_everyone()

    if step in plan.checkpoints:
        checkpoint(step)  # step 0 (the base model), or the checkpoint a crash interrupted during its evaluation
    bar = tqdm(total=plan.total, initial=step, desc="train", unit="step", file=sys.stderr, disable=not main,
               dynamic_ncols=True)
    while step < plan.total:
        t0 = time.perf_counter()
        batch = plan.global_batch(step, tc.seed)
        n_labels = sum(sum(y != IGNORE for y in tokenized.labels[i][1:]) for i in batch)
        mine = batch[rank * plan.per_process:(rank + 1) * plan.per_process]
        loss_sum = torch.zeros((), device=acc.device)
        for k in range(plan.accum):
            idx = mine[k * plan.micro:(k + 1) * plan.micro]
            ids, mask, labels = (t.to(acc.device) for t in collate(
                [tokenized.input_ids[i] for i in idx], [tokenized.labels[i] for i in idx], tok.pad_token_id))
            sync = k == plan.accum - 1
            with (acc.no_sync(wrapped) if not sync and world > 1 else nullcontext()):
                s = wrapped(ids, mask, labels)
                acc.backward(s * world / n_labels)  # DDP averages over processes; undo that to get the mean
            loss_sum += s.detach()
        grad_norm = acc.clip_grad_norm_(trainable, tc.clip) if tc.clip > 0 else None
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)
        loss = acc.reduce(loss_sum, "sum").item() / n_labels
        step += 1
        progress["step"] = step
        progress["tokens"] += sum(lengths[i] for i in batch)
        if progress["pad_tokens"] is not None:
            progress["pad_tokens"] += plan.padding(batch, lengths)
        progress["train_s"] += time.perf_counter() - t0
        if main:
            lr = scheduler.get_last_lr()[0]
            gn = float(grad_norm) if grad_norm is not None else None
            append_records(out / "train_log.jsonl", [dict(step=step, epoch=plan.epoch_at(step), loss=loss, lr=lr,
                                                          grad_norm=gn, tokens=progress["tokens"])])
            if writer is not None:
                writer.add_scalar("train/loss", loss, step)
                writer.add_scalar("train/lr", lr, step)
            bar.update(1)
            bar.set_postfix(loss=f"{loss:.3f}", lr=f"{lr:.1e}")
        if step in plan.checkpoints:
            checkpoint(step)
    bar.close()
    summary = dict(total_steps=plan.total, steps_per_epoch=plan.steps_per_epoch,
                   epoch_boundaries=plan.epoch_boundaries(), checkpoints=plan.checkpoints, processes=world,
                   batch_size=plan.batch_size, micro_batch_size=plan.micro, accumulation=plan.accum,
                   data=dict(tokenized.stats), trainable_parameters=n_train, parameters=n_all,
                   train_s=round(progress["train_s"], 1), eval_s=round(progress["eval_s"], 1),
                   tokens=progress["tokens"], **throughput(progress), group_by_length=tc.group_by_length)
    if summary["padding_share"] is not None:
        say(f"ctxrel: {summary['tokens']:,} tokens trained + {summary['pad_tokens']:,} padding "
            f"({summary['padding_share']:.1%} of the positions computed); {summary['tokens_per_s']:.0f} tokens/s "
            f"over {summary['train_s']:.0f} s of training")
    if main:
        atomic_write_text(out / "train_summary.json", json.dumps(summary, indent=1))
        if writer is not None:
            writer.close()
    acc.wait_for_everyone()
    return summary


def throughput(progress: dict) -> dict[str, Any]:
    """Real (non-pad) tokens per second of training, padded positions and their share of all positions computed
    (None for a run resumed from a checkpoint that did not count padding)."""
    real, pad, secs = progress["tokens"], progress.get("pad_tokens"), progress["train_s"]
    share = pad / (real + pad) if pad is not None and real + pad else None
    return dict(tokens_per_s=round(real / secs, 1) if secs else None, pad_tokens=pad,
                padding_share=round(share, 4) if share is not None else None)


def _tensorboard(path: Path, step: int):
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        return None  # optional: train_log.jsonl and metrics.* hold the same numbers
    return SummaryWriter(str(path), purge_step=step or None)
