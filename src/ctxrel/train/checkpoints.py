"""Checkpoints of a study: what is saved, where, and how a rerun resumes from it (no pickle anywhere).

    checkpoints/step-000050/
      adapter_config.json, adapter_model.safetensors   LoRA modes (a PEFT adapter: `ctxrel eval --adapter` reads it)
      trainable.safetensors                            full / qk modes: the trained weights only
      checkpoint.json                                  step, epoch, tokens seen, mode, base model
      state/                                           only in the latest checkpoint: what resuming needs
        optimizer.safetensors + optimizer.json         AdamW moments and param groups
        rng-<rank>.safetensors                         torch RNG of each process (dropout)
        progress.json                                  scheduler state, loss history, train/eval seconds

A checkpoint is written into a temporary folder and renamed into place, so a crash leaves either a complete
checkpoint or none. Under FSDP the weights and moments are gathered whole before rank 0 writes them: the files
are those of a single-process run, and a run resumes on any number of processes. The schedule of checkpoint
steps is a pure function of the config.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
from pathlib import Path
from typing import Any

from ctxrel.core.errors import CtxrelError
from ctxrel.rundir import interruption
from ctxrel.rundir.files import CHECKPOINTS_DIR, list_checkpoints


def checkpoint_steps(total: int, every: int, early: list[int]) -> list[int]:
    """Steps evaluated by a study: 0, every `every` steps, the `early` extras, and the last step."""
    if every < 1:
        raise CtxrelError(f"eval.every must be at least 1, got {every}")
    bad = [s for s in early if s < 0]
    if bad:
        raise CtxrelError(f"eval.early: steps must be >= 0, got {bad}")
    steps = {0, total} | set(range(every, total + 1, every)) | {s for s in early if s <= total}
    return sorted(steps)


def latest_resumable(run_dir: Path) -> Path | None:
    for _, d in reversed(list_checkpoints(run_dir)):
        if (d / "state" / "progress.json").exists():
            return d
    return None


@contextlib.contextmanager
def readable(folder: Path):
    """Loading checkpoint `folder` to resume: a file in it that cannot be read (cut short or damaged outside
    ctxrel: ctxrel's own writes leave a checkpoint complete or absent) is one sentence naming the folder."""
    try:
        yield
    except CtxrelError:
        raise
    except Exception as e:
        raise CtxrelError(f"{folder}: damaged checkpoint, cannot resume from it ({type(e).__name__}: "
                          f"{' '.join(str(e).split())[:160]}); move the folder away to resume from the checkpoint "
                          "before it, or use another out=") from None


def optimizer_tensors(optimizer) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """An optimizer's state as flat `{"<param index>.<name>": tensor}` (safetensors holds no nesting, and no
    pickle is used) plus its JSON-able param groups. Under FSDP the moments are gathered whole (call it on every
    process): the file is the same as one process would write, so a run resumes on any number of processes."""
    import torch

    from ctxrel.models.loading import whole

    sd = optimizer.state_dict()
    tensors = {f"{idx}.{key}": whole(torch.as_tensor(value).detach()).to("cpu").contiguous()
               for idx, st in sorted(sd["state"].items()) for key, value in sorted(st.items())}
    return tensors, sd["param_groups"]


def restore_optimizer(optimizer, tensors: dict[str, Any], groups: list[dict[str, Any]]) -> None:
    """Inverse of `optimizer_tensors`. Under FSDP each process keeps the part of a moment that matches its shard
    of the parameter (no communication: every process read the whole file)."""
    from ctxrel.models.loading import is_sharded

    params = [p for g in optimizer.param_groups for p in g["params"]]  # state_dict's indices
    nested: dict[int, dict[str, Any]] = {}
    for key, value in tensors.items():
        idx, name = key.split(".", 1)
        p = params[int(idx)] if int(idx) < len(params) else None
        if is_sharded(p) and value.shape == p.shape:  # a moment of a sharded weight (not `step`)
            from torch.distributed.tensor import distribute_tensor

            value = distribute_tensor(value.to(p.device_mesh.device_type), p.device_mesh, p.placements,
                                      src_data_rank=None)
        nested.setdefault(int(idx), {})[name] = value
    optimizer.load_state_dict({"state": nested, "param_groups": groups})


def save_state(folder: Path, moments, progress: dict[str, Any]) -> None:
    """Optimizer moments (`optimizer_tensors`: flattened into safetensors) and progress; written by the main
    process."""
    from safetensors.torch import save_file

    tensors, groups = moments
    (folder / "state").mkdir(parents=True, exist_ok=True)
    save_file(tensors, str(folder / "state" / "optimizer.safetensors"))
    interruption.point("checkpoint.optimizer", folder.name.removeprefix(".tmp-"))
    (folder / "state" / "optimizer.json").write_text(json.dumps(groups))
    (folder / "state" / "progress.json").write_text(json.dumps(progress, indent=1))


def save_rng(folder: Path, rank: int) -> None:
    import torch
    from safetensors.torch import save_file

    (folder / "state").mkdir(parents=True, exist_ok=True)
    t = {"cpu": torch.get_rng_state()}
    if torch.cuda.is_available():
        t["cuda"] = torch.cuda.get_rng_state()
    save_file(t, str(folder / "state" / f"rng-{rank}.safetensors"))


def load_state(folder: Path, optimizer, rank: int) -> dict[str, Any]:
    """Restore optimizer moments and this process's RNG; return the saved progress."""
    import torch
    from safetensors.torch import load_file

    state_dir = folder / "state"
    restore_optimizer(optimizer, load_file(str(state_dir / "optimizer.safetensors")),
                      json.loads((state_dir / "optimizer.json").read_text()))
    rng_file = state_dir / f"rng-{rank}.safetensors"
    if rng_file.exists():
        rng = load_file(str(rng_file))
        torch.set_rng_state(rng["cpu"])
        if "cuda" in rng and torch.cuda.is_available():
            torch.cuda.set_rng_state(rng["cuda"])
    return json.loads((state_dir / "progress.json").read_text())


def commit(tmp: Path, final: Path) -> None:
    """Rename a fully written temporary checkpoint into place (replacing a stale one of the same step)."""
    if final.exists():
        shutil.rmtree(final)
    os.replace(tmp, final)


def prune(run_dir: Path, keep_weights: bool) -> None:
    """Drop resume state from all but the latest checkpoint; without `keep_weights`, drop older checkpoints."""
    cps = list_checkpoints(run_dir)
    for _, d in cps[:-1]:
        if keep_weights:
            shutil.rmtree(d / "state", ignore_errors=True)
        else:
            shutil.rmtree(d, ignore_errors=True)
    for d in (Path(run_dir) / CHECKPOINTS_DIR).glob(".tmp-*"):
        shutil.rmtree(d, ignore_errors=True)
