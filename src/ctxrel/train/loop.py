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

from ctxrel.core.errors import CtxrelError
from ctxrel.models.loading import decay_exempt, load_weights, save_weights, trainable_state
from ctxrel.rundir import interruption
from ctxrel.rundir.files import (CHECKPOINTS_DIR, TRAIN_LOG, TRAIN_SUMMARY, append_records, atomic_write_text,
                                 disk_full, read_records, step_name)
from ctxrel.train import checkpoints as ckpt
from ctxrel.train.data import IGNORE, collate
from ctxrel.train.trackers import Trackers, check_trackers


class ResponseLoss(torch.nn.Module):
    """Summed cross-entropy over labelled positions. Wraps the model so that DDP sees one
    forward; the decoder runs on every position, the output projection only where a label is."""

    def __init__(self, model):
        super().__init__()
        self.model = model
        base = model.get_base_model() if hasattr(model, "get_base_model") else model
        self._no_split_modules = getattr(base, "_no_split_modules", None)  # FSDP's per-layer wrapping reads it
        self.decoder = base.get_decoder()
        self.head = base.get_output_embeddings()
        self.softcap = getattr(base.config, "final_logit_softcapping", None)
        for attr in ("logit_scale", "logits_scaling"):  # Cohere / Granite scale logits inside forward()
            if getattr(base.config, attr, None) not in (None, 1, 1.0):
                raise CtxrelError(f"models with config.{attr} are not supported by the training loss yet")

    def forward(self, input_ids, attention_mask, labels, per_sequence: str | None = None):
        """Summed cross-entropy of the labelled tokens (a scalar); with `per_sequence` "sum" or "mean", each
        row's summed (or per-token mean) log-probability of its labelled tokens instead, shape (B,): what a
        preference loss (`ctxrel.train.preference`) takes; "token": every labelled token's log-prob, (N,)."""
        hidden = self.decoder(input_ids=input_ids, attention_mask=attention_mask,
                              use_cache=False).last_hidden_state  # (B, T, C)
        targets = labels[:, 1:]  # token t predicts t+1
        keep = targets != IGNORE  # (B, T-1)
        logits = self.head(hidden[:, :-1][keep]).float()  # (N, V): only labelled positions
        if self.softcap:
            logits = torch.tanh(logits / self.softcap) * self.softcap
        if per_sequence is None:
            return F.cross_entropy(logits, targets[keep], reduction="sum")
        token_logps = -F.cross_entropy(logits, targets[keep], reduction="none")  # (N,)
        if per_sequence == "token":  # each labelled token's log-prob, row by row (GRPO: ctxrel.train.grpo)
            return token_logps
        rows = keep.nonzero()[:, 0]  # (N,): the row of each labelled position
        total = torch.zeros(len(labels), device=logits.device, dtype=logits.dtype).index_add(0, rows, token_logps)
        return total / keep.sum(-1).clamp(min=1) if per_sequence == "mean" else total  # (B,)


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
    check_launch(cfg)
    check_trackers(cfg.train)  # a tracker named in train.report_to but not installed


def sharded_launch(env=None) -> bool:
    """Was this process started by `accelerate launch` with an FSDP config?"""
    import os

    env = os.environ if env is None else env
    return env.get("ACCELERATE_USE_FSDP", "false").lower() == "true"


def check_launch(cfg, env=None) -> None:
    """What the ctxrel loop supports of the accelerate launch settings (environment variables that `accelerate
    launch` sets from its config file), checked before any model loads: plain data parallelism, or FSDP2 for
    train.mode full / qk; DeepSpeed and FSDP1 are refused (not tested here)."""
    import os

    env = os.environ if env is None else env
    on = lambda key: env.get(key, "false").lower() == "true"  # noqa: E731
    if on("ACCELERATE_USE_DEEPSPEED"):
        raise CtxrelError("accelerate is set up for DeepSpeed, which the ctxrel loop refuses: it cannot be tested "
                          "on CPU processes, and untested distributed code is not shipped; use DDP, or FSDP "
                          "(fsdp_version: 2) for train.mode full / qk")
    if not sharded_launch(env):
        return
    version = env.get("FSDP_VERSION", "1")
    problems = []
    if version != "2":
        problems.append(f"fsdp_version {version}: only FSDP2 (fsdp_config: fsdp_version: 2) is supported and tested")
    if cfg.train.mode == "lora" or cfg.train.qk_lora:
        problems.append(f"train.mode={cfg.train.mode}{' with train.qk_lora' if cfg.train.qk_lora else ''}: LoRA "
                        "under FSDP is not tested; use DDP (its adapters are small) or train.mode full / qk")
    if on("FSDP_ACTIVATION_CHECKPOINTING"):
        problems.append("fsdp_activation_checkpointing: it renames the layers, so checkpoints would not match "
                        "the model; leave it false")
    if on("FSDP_OFFLOAD_PARAMS"):
        problems.append("fsdp_offload_params: CPU offload is not tested; leave it false")
    if not cfg.train.keep_weights:
        problems.append("train.keep_weights=false: under FSDP checkpoints are scored after training (ctxrel eval "
                        "--run), so their weights must be kept")
    if problems:
        raise CtxrelError("accelerate FSDP launch: " + "; ".join(problems))


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
            (no_decay if p.ndim < 2 or decay_exempt(p) else decay).append(p)
    if not decay and not no_decay:
        raise CtxrelError(f"train.mode={train_cfg.mode} left no trainable parameter")
    groups = [{"params": decay, "weight_decay": train_cfg.weight_decay},
              {"params": no_decay, "weight_decay": 0.0}]
    return torch.optim.AdamW([g for g in groups if g["params"]], lr=train_cfg.lr)


@dataclass
class Session:
    """What `setup` builds and every later part of the recipe reads: a plain record, not a Trainer to subclass."""

    cfg: Any
    out: Path
    acc: Any  # accelerate.Accelerator
    model: Any  # the (PEFT-wrapped) model; `wrapped` is its ResponseLoss as prepared by accelerate
    tok: Any
    wrapped: Any
    optimizer: Any
    scheduler: Any
    trainable: list
    tokenized: Any
    lengths: list[int]
    plan: Plan
    progress: dict[str, Any]  # step, tokens, pad_tokens, train_s, eval_s: what a checkpoint saves
    n_trainable: int
    n_parameters: int
    trackers: Any = None  # ctxrel.train.trackers.Trackers of train.report_to (main process) or None
    last_logged: tuple = (0, 0.0)  # (tokens, train_s) at the previous logged step: the step's tokens/s
    say: Callable[..., None] = print  # log on the main process, silent on the others
    # a stage of a multi-stage study (ctxrel.train.stages): its steps are counted from 0 in `progress` and the
    # plan, and are `offset` further on the study's step axis (checkpoint names, logs, metrics); `stage` holds
    # its index, name, kind, offset and total, written into every checkpoint.json and log row
    offset: int = 0
    stage: dict[str, Any] | None = None

    @property
    def main(self) -> bool:
        return self.acc.is_main_process

    @property
    def sharded(self) -> bool:
        """FSDP: weights and optimizer state are split over the processes; every process takes part in
        gathering them, and the model runs only when all processes run it."""
        return getattr(self.acc, "is_fsdp2", False)


def train(cfg, *, on_checkpoint: Callable[..., None] | None = None, tokenized=None, log=print) -> dict[str, Any]:
    """Finetune `cfg.model` on `cfg.data` with `cfg.train`; at each checkpoint step save weights and resume state,
    then call `on_checkpoint(step=, epoch=, tokens=, model=, tokenizer=)` on every process (the study evaluates
    there, each process a shard of the items). Rerunning with the same config resumes from the latest checkpoint. Returns a summary.

    The recipe, top to bottom: setup -> (resume) -> train: one optimizer step at a time, a checkpoint (save, then
    evaluate) at each scheduled step -> cleanup."""
    s = setup(cfg, tokenized=tokenized, log=log)
    step = s.progress["step"]
    if step in s.plan.checkpoints:
        checkpoint(s, step, on_checkpoint)  # step 0 (the base model), or one a crash interrupted in its evaluation
    bar = tqdm(total=s.plan.total, initial=step, desc="train", unit="step", file=sys.stderr, disable=not s.main,
               dynamic_ncols=True)
    while step < s.plan.total:
        loss, grad_norm = optimizer_step(s, step)
        step += 1
        log_step(s, step, loss, grad_norm, bar)
        if step in s.plan.checkpoints:
            checkpoint(s, step, on_checkpoint)
    bar.close()
    return cleanup(s)


# -- setup -------------------------------------------------------------------------------------------------------

def on_cpu(cfg) -> bool:
    """Does this run train on the CPU (fp32, no autocast)? `model.device`, else the default device."""
    from ctxrel.models.loading import default_device

    return (cfg.model.device or default_device()) == "cpu"


def make_accelerator(cpu: bool):
    """The accelerate state of this process: CPU (fp32) or GPU (bf16 autocast); plain data parallelism, or FSDP2
    (`check_launch` has refused what is not supported)."""
    from accelerate import Accelerator, DistributedType, InitProcessGroupKwargs

    acc = Accelerator(cpu=cpu, mixed_precision="no" if cpu else "bf16",
                      kwargs_handlers=[InitProcessGroupKwargs(timeout=timedelta(hours=6))])  # evals: probes on rank 0
    if acc.distributed_type == DistributedType.MULTI_CPU and sharded_launch():
        # accelerate (1.15) turns an FSDP launch into FSDP only on accelerators, and into plain DDP on CPU
        # processes; torch's FSDP2 shards over gloo on the CPU as well, so select it here the way accelerate does
        # on a GPU: this is how the tests check the FSDP path on a machine without GPUs
        from accelerate import PartialState
        from accelerate.utils import FullyShardedDataParallelPlugin

        acc.state.fsdp_plugin = FullyShardedDataParallelPlugin()  # read from the launcher's FSDP_* variables
        PartialState().distributed_type = DistributedType.FSDP  # shared state: later AcceleratorState()s copy it
        acc.state.distributed_type = DistributedType.FSDP
    if acc.distributed_type not in (DistributedType.NO, DistributedType.MULTI_GPU, DistributedType.MULTI_CPU,
                                    DistributedType.FSDP) or (acc.distributed_type == DistributedType.FSDP
                                                              and not acc.is_fsdp2):
        raise CtxrelError(f"accelerate is set up for {acc.distributed_type}; the ctxrel loop supports plain data "
                          "parallelism (DDP) and FSDP2 (fsdp_version: 2) for train.mode full / qk")
    return acc


def build_model(cfg, device, *, cpu: bool) -> tuple[Any, Any]:
    """The model with `train.mode`'s trainable parameters (fp32 on CPU and for full weights, else bf16) and its
    tokenizer (given a pad token), in training mode. The random generators are seeded with `train.seed` after the
    base model is loaded and before the trainable parameters are made, so the LoRA initialisation never depends on
    what loading drew (a first load of a GGUF model converts it, which initialises a model at random: before this,
    a run on a cold model cache trained from another LoRA initialisation than the same run on a warm one)."""
    from accelerate.utils import set_seed

    from ctxrel.models.loading import load_model, select_trainable

    tc = cfg.train
    dtype = torch.float32 if cpu or tc.mode == "full" or (tc.mode == "qk" and not tc.qk_lora) else torch.bfloat16
    model, tok, _ = load_model(cfg.model.name, device=str(device), dtype=dtype,
                               trust_remote_code=cfg.model.trust_remote_code)
    if tok.pad_token_id is None:
        tok.pad_token = tok.eos_token or tok.unk_token
    set_seed(tc.seed)
    model = select_trainable(model, tc)
    model.train()
    return model, tok


def build_optimizer(model, train_cfg, total: int):
    """AdamW (no weight decay on vectors and marked parameters) and its lr schedule over `total` steps."""
    optimizer = _optimizer(model, train_cfg)
    warmup = round(train_cfg.warmup * total)
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: lr_factor(s, total, warmup, train_cfg.schedule))
    return optimizer, scheduler


def setup(cfg, *, tokenized=None, log=print) -> Session:
    """Check the config, read the data, build model, optimizer and plan, and resume from the latest checkpoint."""
    from ctxrel.train.data import load_examples, tokenize

    from ctxrel.core.prompts import resolve_data_template

    tc = cfg.train
    check_train_config(cfg)
    examples = load_examples(cfg.data, seed=tc.seed) if tokenized is None else None  # bad data fails before the model
    cpu = on_cpu(cfg)
    acc = make_accelerator(cpu)
    say = log if acc.is_main_process else (lambda *a, **k: None)
    model, tok = build_model(cfg, acc.device, cpu=cpu)  # seeds the generators itself, after loading
    if getattr(acc, "is_fsdp2", False) and any(decay_exempt(p) for p in model.parameters()):
        raise CtxrelError("train.mode=qk on a fused q|k|v layer (GPT-NeoX) is not supported under FSDP: sharding "
                          "replaces the weight, and with it the hook that keeps the v rows frozen")
    n_train = sum(p.numel() for p in model.parameters() if p.requires_grad)
    n_all = sum(p.numel() for p in model.parameters())
    if tokenized is None:
        template = resolve_data_template(cfg.data.template, tok)
        tokenized = tokenize(examples, tok, template=template, max_length=cfg.data.max_length)
    lengths = [len(x) for x in tokenized.input_ids]
    plan = make_plan(len(lengths), tc, cfg.eval, acc.num_processes, lengths)
    st = tokenized.stats
    say(f"ctxrel: {len(tokenized.input_ids)} examples ({st['truncated']} truncated to {cfg.data.max_length} "
        f"tokens, {st['dropped']} dropped: no response left), {st['label_tokens']} response tokens; "
        f"train.mode={tc.mode}: {n_train:,} of {n_all:,} parameters trainable")
    say(f"ctxrel: {plan.total} steps ({plan.steps_per_epoch}/epoch) of {plan.batch_size} examples = "
        f"{acc.num_processes} process(es) x {plan.accum} micro-batch(es) x {plan.micro}"
        f"{', grouped by length' if tc.group_by_length else ''}; checkpoints at steps {plan.checkpoints}")
    optimizer, scheduler = build_optimizer(model, tc, plan.total)
    latest = ckpt.latest_resumable(Path(cfg.out))
    if latest is not None:
        with ckpt.readable(latest):
            load_weights(model, latest)  # before FSDP shards the weights: every process holds them whole here
    wrapped, optimizer = acc.prepare(ResponseLoss(model), optimizer)
    s = Session(cfg, Path(cfg.out), acc, model, tok, wrapped, optimizer, scheduler,
                [p for p in model.parameters() if p.requires_grad],  # after prepare: FSDP replaces them
                tokenized, lengths, plan, dict(step=0, tokens=0, pad_tokens=0, train_s=0.0, eval_s=0.0),
                n_train, n_all, say=say)
    if s.sharded:
        say(f"ctxrel: FSDP over {acc.num_processes} process(es); checkpoints are gathered, and scored after "
            "training")
    resume(s, latest)
    if s.main:
        from ctxrel.config.settings import to_dict

        s.trackers = Trackers(check_trackers(tc), s.out, step=s.progress["step"], project=tc.tracker_project,
                              config=to_dict(cfg))
    s.last_logged = (s.progress["tokens"], s.progress["train_s"])
    return s


def resume(s: Session, latest: Path | None) -> None:
    """Continue from `latest`, the latest checkpoint that holds resume state (its weights are already loaded), if
    any: optimizer, scheduler, RNG, progress; steps the log holds beyond it are trained again, so they are dropped
    from the log."""
    if latest is None:
        return
    with ckpt.readable(latest):
        progress = ckpt.load_state(latest, s.optimizer, s.acc.process_index)
    s.scheduler.load_state_dict(progress.pop("scheduler"))
    progress.setdefault("pad_tokens", None)  # a checkpoint written before padding was counted
    s.progress = progress
    if s.main:  # steps logged after the checkpoint are trained again; keep one row per step
        log_file = s.out / TRAIN_LOG
        kept = [r for r in read_records(log_file) if r["step"] <= progress["step"] + s.offset]
        atomic_write_text(log_file, "".join(json.dumps(r) + "\n" for r in kept))
    s.say(f"ctxrel: resuming from {latest.name} ({progress['step']} of {s.plan.total} steps done)")


# -- train -------------------------------------------------------------------------------------------------------

def optimizer_step(s: Session, step: int) -> tuple[float, Any]:
    """Optimizer step `step` (0-based) on its global batch: this process's micro-batches, gradients scaled so the
    loss is the mean over all response tokens of the batch, clipping, AdamW and the schedule. Updates
    `s.progress`; returns (loss, gradient norm or None)."""
    t0 = time.perf_counter()
    acc, plan, tc, tokenized = s.acc, s.plan, s.cfg.train, s.tokenized
    world = acc.num_processes
    batch = plan.global_batch(step, tc.seed)
    n_labels = sum(sum(y != IGNORE for y in tokenized.labels[i][1:]) for i in batch)
    rank = acc.process_index
    mine = batch[rank * plan.per_process:(rank + 1) * plan.per_process]
    loss_sum = torch.zeros((), device=acc.device)
    for k in range(plan.accum):
        idx = mine[k * plan.micro:(k + 1) * plan.micro]
        ids, mask, labels = (t.to(acc.device) for t in collate(
            [tokenized.input_ids[i] for i in idx], [tokenized.labels[i] for i in idx], s.tok.pad_token_id))
        sync = k == plan.accum - 1
        with (acc.no_sync(s.wrapped) if not sync and world > 1 else nullcontext()):
            loss = s.wrapped(ids, mask, labels)
            acc.backward(loss * world / n_labels)  # DDP averages over processes; undo that to get the mean
        loss_sum += loss.detach()
    grad_norm = apply_update(s)
    loss = acc.reduce(loss_sum, "sum").item() / n_labels
    count_step(s, step, t0, sum(s.lengths[i] for i in batch), plan.padding(batch, s.lengths))
    return loss, grad_norm


def apply_update(s: Session):
    """The end of every optimizer step, whatever its loss (SFT, DPO, GRPO): clip the gradients, AdamW, the
    schedule, zero the gradients. Returns the gradient norm before clipping (None when clipping is off)."""
    tc = s.cfg.train
    grad_norm = s.acc.clip_grad_norm_(s.trainable, tc.clip) if tc.clip > 0 else None
    s.optimizer.step()
    s.scheduler.step()
    s.optimizer.zero_grad(set_to_none=True)
    return grad_norm


def count_step(s: Session, step: int, t0: float, tokens: int, padding: int | None) -> None:
    """Record optimizer step `step` (0-based) as done in `s.progress`: tokens trained, padding (None: not
    counted, e.g. generated lengths), and the time since `t0`."""
    p = s.progress
    p["step"] = step + 1
    p["tokens"] += tokens
    p["pad_tokens"] = None if padding is None or p["pad_tokens"] is None else p["pad_tokens"] + padding
    p["train_s"] += time.perf_counter() - t0


def log_step(s: Session, step: int, loss: float, grad_norm, bar, extra: dict[str, Any] | None = None) -> None:
    """One row of train_log.jsonl (and tensorboard), and the progress bar (main process only). `step` counts
    within the stage; the row holds the study's step (and the stage, and `extra` values, in a stage)."""
    if not s.main:
        return
    lr = s.scheduler.get_last_lr()[0]
    gn = float(grad_norm) if grad_norm is not None else None
    tokens, secs = s.progress["tokens"], s.progress["train_s"]
    rate = round((tokens - s.last_logged[0]) / (secs - s.last_logged[1]), 1) if secs > s.last_logged[1] else None
    s.last_logged = (tokens, secs)
    row = dict(step=step + s.offset, epoch=s.plan.epoch_at(step), loss=loss, lr=lr, grad_norm=gn, tokens=tokens,
               tokens_per_s=rate)
    if s.stage is not None:
        row.update(stage=s.stage["name"], **(extra or {}))
    append_records(s.out / TRAIN_LOG, [row])
    if s.trackers is not None:
        s.trackers.train_step(step + s.offset, loss=loss, lr=lr, tokens_per_s=rate, extra=extra)
    bar.update(1)
    bar.set_postfix(loss=f"{loss:.3f}", lr=f"{lr:.1e}")


# -- save --------------------------------------------------------------------------------------------------------

def checkpoint(s: Session, step: int, on_checkpoint: Callable[..., None] | None) -> None:
    """A scheduled checkpoint: save it (unless a complete one is there), then evaluate it on every process (a
    study's evaluation splits the items over them: ctxrel.evaluate.shards). Under FSDP no process holds the whole model, so
    the caller scores the saved checkpoints after training."""
    meta = save_checkpoint(s, step)
    if on_checkpoint is not None and not s.sharded:
        evaluate_checkpoint(s, meta, on_checkpoint)
    s.acc.wait_for_everyone()


def save_checkpoint(s: Session, step: int) -> dict[str, Any]:
    """Write checkpoints/step-NNNNNN/ (weights, optimizer, scheduler, RNG of every process, progress) into a
    temporary folder renamed into place, and prune older checkpoints; a complete one is left as it is. Returns
    the checkpoint's meta (step, epoch, tokens, mode, base model)."""
    acc, tc, name = s.acc, s.cfg.train, step_name(step + s.offset)
    final = s.out / CHECKPOINTS_DIR / name
    meta = dict(step=step + s.offset, epoch=s.plan.epoch_at(step), tokens=s.progress["tokens"], mode=tc.mode,
                base_model=s.cfg.model.name)
    if s.stage is not None:  # epoch and tokens count within the stage
        meta.update(stage=s.stage["name"], stage_kind=s.stage["kind"], stage_index=s.stage["index"],
                    stage_step=step, stage_total=s.plan.total)
    if (final / "state" / "progress.json").exists():
        return meta
    tmp = s.out / CHECKPOINTS_DIR / f".tmp-{name}"
    if s.main:
        shutil.rmtree(tmp, ignore_errors=True)  # a crashed earlier attempt's files must not be committed
        tmp.mkdir(parents=True)
    acc.wait_for_everyone()
    ckpt.save_rng(tmp, acc.process_index)
    acc.wait_for_everyone()
    if s.main or s.sharded:  # under FSDP every process takes part in gathering the tensors, rank 0 writes them
        weights = trainable_state(s.model)
        moments = ckpt.optimizer_tensors(s.optimizer)
    if s.main:
        try:
            with interruption.critical():  # a SIGTERM here waits: the checkpoint completes, then the run stops
                save_weights(s.model, tmp, meta, state=weights)
                interruption.point("checkpoint.weights", name)
                ckpt.save_state(tmp, moments, dict(s.progress, step=step, scheduler=s.scheduler.state_dict()))
                interruption.point("checkpoint.commit", name)
                ckpt.commit(tmp, final)
                ckpt.prune(s.out, tc.keep_weights)
        except Exception as e:  # a full disk: the partial folder goes, the one sentence says how to go on
            shutil.rmtree(tmp, ignore_errors=True)
            message = disk_full(e, final)
            if message:
                raise CtxrelError(message) from None
            raise
    acc.wait_for_everyone()
    return meta


def evaluate_checkpoint(s: Session, meta: dict[str, Any], on_checkpoint: Callable[..., None]) -> None:
    """Call `on_checkpoint` with the model in eval mode, without gradients, under the training's autocast, and
    without moving the training RNG (CPU or GPU): a resumed run must not differ from an uninterrupted one."""
    t0 = time.perf_counter()
    s.model.eval()
    devices = [s.acc.device] if s.acc.device.type == "cuda" else []
    stage = {"stage": meta["stage"]} if "stage" in meta else {}
    with torch.random.fork_rng(devices=devices), torch.no_grad(), s.acc.autocast():
        on_checkpoint(step=meta["step"], epoch=meta["epoch"], tokens=meta["tokens"], model=s.model, tokenizer=s.tok,
                      **stage)
    s.model.train()
    s.progress["eval_s"] += time.perf_counter() - t0
    if s.trackers is not None:  # the metric rows the evaluation has just written
        s.trackers.checkpoint(meta["step"])


# -- cleanup -----------------------------------------------------------------------------------------------------

def cleanup(s: Session) -> dict[str, Any]:
    """The run's summary: printed, written to train_summary.json (main process), and returned."""
    plan, p, tc = s.plan, s.progress, s.cfg.train
    summary = dict(total_steps=plan.total, steps_per_epoch=plan.steps_per_epoch,
                   epoch_boundaries=plan.epoch_boundaries(), checkpoints=plan.checkpoints,
                   processes=s.acc.num_processes, batch_size=plan.batch_size, micro_batch_size=plan.micro,
                   accumulation=plan.accum, data=dict(s.tokenized.stats), trainable_parameters=s.n_trainable,
                   parameters=s.n_parameters, train_s=round(p["train_s"], 1), eval_s=round(p["eval_s"], 1),
                   tokens=p["tokens"], **throughput(p), group_by_length=tc.group_by_length,
                   sharded=s.sharded)
    if summary["padding_share"] is not None:
        s.say(f"ctxrel: {summary['tokens']:,} tokens trained + {summary['pad_tokens']:,} padding "
              f"({summary['padding_share']:.1%} of the positions computed); {summary['tokens_per_s']:.0f} tokens/s "
              f"over {summary['train_s']:.0f} s of training")
    if s.main:
        atomic_write_text(s.out / TRAIN_SUMMARY, json.dumps(summary, indent=1))
        if s.trackers is not None:
            s.trackers.close()
    s.acc.wait_for_everyone()
    return summary


def throughput(progress: dict) -> dict[str, Any]:
    """Real (non-pad) tokens per second of training, padded positions and their share of all positions computed
    (None for a run resumed from a checkpoint that did not count padding)."""
    real, pad, secs = progress["tokens"], progress.get("pad_tokens"), progress["train_s"]
    share = pad / (real + pad) if pad is not None and real + pad else None
    return dict(tokens_per_s=round(real / secs, 1) if secs else None, pad_tokens=pad,
                padding_share=round(share, 4) if share is not None else None)

