"""`ctxrel synth`: pretrain a tiny GPT on a synthetic world, instruction-finetune it, score every checkpoint.

The recipe, top to bottom (torchtune style: setup -> pretrain -> finetune + evaluate -> report):

    world     = make_world(...)                  facts, pools, vocabulary (world.py)
    pretrain  statements of known facts + copy documents, plain LM loss; the knowledge filter then asks each
              conflict fact in the statement format (`known` subset)
    finetune  the C / C+S / S mixture (mixture.py), loss on answer tokens; at every checkpoint step the model is
              scored (measure.py) and its records and metric rows are written to the run directory
    report    report/trajectory.png through ctxrel.report.plot_trajectory

Run directory (the contract of rundir/files.py, as a real study):
    config.yaml, metrics.sqlite / metrics.csv, evals/step-NNNNNN/synth_conflict.jsonl (+ .nocontext at step 0),
    checkpoints/pretrained/model.safetensors, checkpoints/step-NNNNNN/ (latest only: weights + AdamW state),
    report/trajectory.png.
Rerunning the same command resumes: the pretrained weights are reused, training restarts from the latest saved
step (the data order is a pure function of the step), finished checkpoints are not re-scored. A different
config in the same directory is refused.
"""

from __future__ import annotations

import functools
import json
import math
import random
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import torch
from safetensors.torch import load_file, save_file

from ctxrel.core.errors import CtxrelError
from ctxrel.rundir.files import CHECKPOINT_META
from ctxrel.synth.model import ModelConfig, TinyGPT, batch, lm_loss
from ctxrel.synth.world import WorldConfig
from ctxrel.train.checkpoints import optimizer_tensors, restore_optimizer


@dataclass
class PretrainConfig:
    steps: int = 600  # statement recall of the default world is reported as synth_pretrain/recall
    batch_size: int = 64  # statements per pretraining step
    lr: float = 2e-3  # 1e-2 stalls; 1e-3 memorises more slowly
    warmup: int = 30  # linear warmup steps, then cosine decay to 10%
    copy_docs: int = 500  # copy documents in the corpus (0 = the model meets copying only in IFT)


@dataclass
class FinetuneConfig:
    n_examples: int = 2000  # the finetuning set; epochs = steps * batch_size / (examples kept)
    c: float = 0.4  # shares of n_examples (sum to 1): context-critical
    cs: float = 0.4  # non-context-critical: the context repeats a memorised fact
    s: float = 0.2  # subject-critical: recall without context
    irrelevant: float = 0.0  # known subject, the context is about other facts (memory must answer)
    cf_aug: float = 0.0  # mitigation: known subject, counterfactual context, target = the context's answer
    drop_cs: bool = False  # mitigation: remove the examples a memorised answer solves (C+S, C+S:irrelevant)
    c_fresh: bool = False  # C examples get a random answer each (false: the world's fact, memorisable over epochs)
    train: str = "full"  # full | qk (mitigation/theory: only attention query and key projections)
    steps: int = 600  # finetuning optimizer steps
    batch_size: int = 32  # examples per finetuning step
    lr: float = 1e-3  # AdamW peak learning rate of finetuning
    warmup: int = 10  # linear warmup steps
    schedule: str = "constant"  # constant | cosine (after warmup)
    weight_decay: float = 0.0  # AdamW decoupled decay (pulls unused memory toward 0)


@dataclass
class SynthEvalConfig:
    every: int = 50  # score every this many finetuning steps (step 0 and the last step always)
    early: list[int] = field(default_factory=lambda: [10, 25])  # extra early steps (the peak can come early)
    bootstrap: int = 1000  # resamples for the 95% intervals
    probe: int = 64  # training examples per kind whose loss is tracked


@dataclass
class SynthConfig:
    seed: int = 0  # world, initialisation, data order: one seed for all
    world: WorldConfig = field(default_factory=WorldConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    pretrain: PretrainConfig = field(default_factory=PretrainConfig)
    finetune: FinetuneConfig = field(default_factory=FinetuneConfig)
    eval: SynthEvalConfig = field(default_factory=SynthEvalConfig)
    threads: int = 1  # torch CPU threads (0 = torch's default). Matrices this small gain little from a second
    #                   thread, and on a busy 2-core machine 2 threads ran 2-4x slower than 1 (measured). The
    #                   float summation order, hence the exact trajectory, depends on it; not part of the digest.


def validate(cfg: SynthConfig) -> None:
    ft = cfg.finetune
    shares = [ft.c, ft.cs, ft.s, ft.irrelevant, ft.cf_aug]
    if min(shares) < 0 or abs(sum(shares) - 1) > 1e-6:
        raise CtxrelError(f"synth config: finetune.c + cs + s + irrelevant + cf_aug must be 1 (non-negative), "
                          f"got {sum(shares):.3f}")
    if ft.train not in ("full", "qk"):
        raise CtxrelError(f"config key finetune.train: {ft.train!r} is not one of full, qk")
    if ft.schedule not in ("constant", "cosine"):
        raise CtxrelError(f"config key finetune.schedule: {ft.schedule!r} is not one of constant, cosine")
    if cfg.model.d_model % cfg.model.n_head:
        raise CtxrelError("synth config: model.d_model must be a multiple of model.n_head")
    if cfg.world.n_values < 2 or cfg.world.answer_len < 1 or cfg.world.n_conflict < 1:
        raise CtxrelError("synth config: need world.n_values >= 2, world.answer_len >= 1, world.n_conflict >= 1")


def lr_at(step: int, base: float, warmup: int, total: int, schedule: str, floor: float = 0.1) -> float:
    if step < warmup:
        return base * (step + 1) / warmup
    if schedule == "constant":
        return base
    t = (step - warmup) / max(1, total - warmup)
    return base * (floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * min(t, 1.0))))


@functools.lru_cache(maxsize=4)
def epoch_order(n: int, seed: int, epoch: int) -> tuple[int, ...]:
    order = list(range(n))
    random.Random(f"order-{seed}-{epoch}").shuffle(order)
    return tuple(order)


def batch_indices(step: int, batch_size: int, n: int, seed: int) -> list[int]:
    """The examples of optimizer step `step`: epochs are seeded permutations laid end to end, so any step's
    batch can be recomputed (this is what lets a rerun resume mid-training)."""
    out, pos = [], step * batch_size
    while len(out) < batch_size:
        epoch, k = divmod(pos, n)
        order = epoch_order(n, seed, epoch)
        take = min(batch_size - len(out), n - k)
        out += order[k:k + take]
        pos += take
    return out


def train_steps(model: TinyGPT, opt: torch.optim.Optimizer, examples, start: int, stop: int, batch_size: int,
                lr: Callable[[int], float], seed: int) -> float:
    """Optimizer steps start..stop-1 on `examples`; returns the last step's loss."""
    model.train()
    loss = torch.tensor(float("nan"))
    for step in range(start, stop):
        idx = batch_indices(step, batch_size, len(examples), seed)
        ids, tgt = batch([examples[i].ids for i in idx], [examples[i].target for i in idx])
        loss = lm_loss(model(ids), ids, tgt)
        for g in opt.param_groups:
            g["lr"] = lr(step)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
    model.eval()
    return loss.item()


# -- saving and loading (safetensors + json; no pickle) -----------------------------------------------------

def save_state(path: Path, model: TinyGPT, opt: torch.optim.Optimizer | None, meta: dict[str, Any]) -> None:
    """Write into a temporary folder, then rename: a crash leaves a complete checkpoint or none."""
    tmp = path.with_name(path.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(tmp / "model.safetensors"))
    if opt is not None:
        tensors, groups = optimizer_tensors(opt)
        save_file(tensors, str(tmp / "optimizer.safetensors"))
        meta = {**meta, "param_groups": groups}
    (tmp / CHECKPOINT_META).write_text(json.dumps(meta, indent=1))
    shutil.rmtree(path, ignore_errors=True)
    tmp.rename(path)


def load_state(path: Path, model: TinyGPT, opt: torch.optim.Optimizer | None) -> dict[str, Any]:
    model.load_state_dict(load_file(str(path / "model.safetensors")))
    meta = json.loads((path / CHECKPOINT_META).read_text())
    if opt is not None:
        restore_optimizer(opt, load_file(str(path / "optimizer.safetensors")), meta["param_groups"])
    return meta
