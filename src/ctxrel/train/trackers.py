"""Experiment trackers: a study's numbers in TensorBoard, Trackio or Weights & Biases, beside its run directory.

`train.report_to` names them (config.TRACKERS). Each receives, with ctxrel's *training step* as the x-axis:

* every optimizer step: `train/loss`, `train/lr`, `train/tokens_per_s` (real tokens of the step / its time);
* every checkpoint: each of its metric rows as `eval/<benchmark>/<subset>/<metric>` (prefixed `<stage>/` when
  the row names a stage), plus `train/epoch` and `train/tokens` seen;
* every checkpoint, where the tracker has tables (Trackio, W&B): `flips/<benchmark>`, one row per generation
  with the item's outcome at the previous scored checkpoint and now.

The step is passed explicitly (TensorBoard's global step, Trackio's `step=`); W&B gets it as the metric
`train/step`, declared the step metric of every other one, so W&B's own call counter never becomes the x-axis.
Only the main process logs. The run directory stays the record: a tracker is a view of the same numbers.

Trackers are optional packages (extras `train` for TensorBoard, `trackio`, `wandb`), imported only here and only
when named: `check_trackers` refuses a missing one in one sentence before any model loads. TensorBoard alone is
skipped quietly when missing, as it was when it was the only tracker (train_log.jsonl holds the same numbers).
"""

from __future__ import annotations

import hashlib
import importlib.util
import math
from pathlib import Path
from typing import Any

from ctxrel.core.errors import CtxrelError
from ctxrel.core.matching import resolve
from ctxrel.rundir.files import EVALS_DIR, RunDir, read_records, step_name, step_of

PACKAGE = {"tensorboard": "tensorboard", "trackio": "trackio", "wandb": "wandb"}  # name -> module it needs
EXTRA = {"tensorboard": "train", "trackio": "trackio", "wandb": "wandb"}  # name -> ctxrel extra installing it


def wanted(train_cfg) -> list[str]:
    """The trackers `train.report_to` names (tensorboard left out when the older `train.tensorboard` is false)."""
    return [n for n in train_cfg.report_to if n != "tensorboard" or train_cfg.tensorboard]


def check_trackers(train_cfg) -> list[str]:
    """The trackers a study will log to; a named tracker that is not installed is refused in one sentence
    (tensorboard, the default, is dropped instead). Imports nothing."""
    names = wanted(train_cfg)
    for n in names:
        if n != "tensorboard" and importlib.util.find_spec(PACKAGE[n]) is None:
            raise CtxrelError(f"config key train.report_to names {n}, which is not installed: pip install "
                              f"'ctxrel[{EXTRA[n]}]' (or leave {n} out of train.report_to)")
    return [n for n in names if n != "tensorboard" or importlib.util.find_spec("tensorboard") is not None]


def metric_key(row: dict[str, Any]) -> str:
    """The tracker name of one metric row.

    >>> metric_key(dict(benchmark="cf_capitals", subset="known", metric="cf_acc"))
    'eval/cf_capitals/known/cf_acc'
    >>> metric_key(dict(benchmark="gsm8k", subset="all", metric="acc", stage="sft"))
    'sft/eval/gsm8k/all/acc'
    """
    key = f"eval/{row['benchmark']}/{row['subset']}/{row['metric']}"
    return f"{row['stage']}/{key}" if row.get("stage") else key


def checkpoint_scalars(rows: list[dict[str, Any]], step: int) -> dict[str, float]:
    """The scalars of checkpoint `step`: its metric rows (finite values) and the epoch and tokens seen there."""
    name = step_name(step)
    mine = [r for r in rows if r["checkpoint"] == name]
    out = {metric_key(r): float(r["value"]) for r in mine
           if r["value"] is not None and math.isfinite(float(r["value"]))}
    for col in ("epoch", "tokens"):
        seen = [r[col] for r in mine if r.get(col) is not None]
        if seen:
            out[f"train/{col}"] = float(seen[0])
    return out


FLIP_COLUMNS = ("step", "benchmark", "id", "category", "sample", "before", "outcome", "flip", "contains_context",
                "contains_parametric", "output")


def flip_rows(run: Path, step: int) -> dict[str, list[dict[str, Any]]]:
    """Per conflict benchmark scored at checkpoint `step`, one row per generation: its resolved outcome at the
    previous checkpoint that scored the same benchmark (`before`; "" at the first) and now, and the flip
    ("context->parametric", ...; "" when unchanged)."""
    evals = Path(run) / EVALS_DIR
    here = evals / step_name(step)
    if not here.is_dir():
        return {}
    earlier = sorted((s, d) for d in evals.iterdir() if d.is_dir() and (s := step_of(d.name)) is not None
                     and s < step)
    tables = {}
    for f in sorted(here.glob("*.jsonl")):
        if "." in f.stem:  # <benchmark>.<kind>.jsonl: knowledge filter, other contexts, shards
            continue
        records = [r for r in read_records(f) if "contains_context" in r]
        if not records:
            continue
        prev_file = next((d / f.name for _, d in reversed(earlier) if (d / f.name).is_file()), None)
        before = {(r["id"], r.get("sample", 0)): resolve(r["outcome"], r.get("first_mention"))
                  for r in (read_records(prev_file) if prev_file else []) if "outcome" in r}
        rows = []
        for r in records:
            now = resolve(r["outcome"], r.get("first_mention"))
            was = before.get((r["id"], r.get("sample", 0)), "")
            rows.append(dict(step=step, benchmark=f.stem, id=str(r["id"]), category=str(r.get("category", "")),
                             sample=int(r.get("sample", 0)), before=was, outcome=now,
                             flip=f"{was}->{now}" if was and was != now else "",
                             contains_context=bool(r["contains_context"]),
                             contains_parametric=bool(r["contains_parametric"]), output=str(r.get("output", ""))))
        tables[f.stem] = rows
    return tables


class _TensorBoard:
    tables = False

    def __init__(self, out: Path, step: int, **_):
        from torch.utils.tensorboard import SummaryWriter

        self.w = SummaryWriter(str(out / "tensorboard"), purge_step=step or None)

    def scalars(self, values: dict[str, float], step: int) -> None:
        for k, v in values.items():
            self.w.add_scalar(k, v, step)

    def flush(self) -> None:
        self.w.flush()

    def close(self) -> None:
        self.w.close()


class _Trackio:
    tables = True

    def __init__(self, out: Path, step: int, *, project: str, config: dict):
        import trackio

        self.trackio = trackio
        self.run = trackio.init(project=project, name=str(out), config=config, resume="allow", embed=False,
                                auto_log_gpu=False, auto_log_cpu=False)

    def scalars(self, values: dict[str, float], step: int) -> None:
        self.run.log(values, step=step)

    def table(self, name: str, rows: list[dict[str, Any]], step: int) -> None:
        self.run.log({name: self.trackio.Table(data=rows)}, step=step)

    def flush(self) -> None:
        pass

    def close(self) -> None:
        self.trackio.finish()  # also clears trackio's current run, so its exit hook does not finish it again


class _Wandb:
    tables = True

    def __init__(self, out: Path, step: int, *, project: str, config: dict):
        import wandb

        self.wandb = wandb
        run_id = hashlib.sha256(str(out.resolve()).encode()).hexdigest()[:16]  # a rerun resumes the same run
        self.run = wandb.init(project=project, name=str(out), id=run_id, resume="allow", dir=str(out),
                              config=config)
        self.run.define_metric("train/step")
        self.run.define_metric("*", step_metric="train/step")

    def scalars(self, values: dict[str, float], step: int) -> None:
        self.run.log({"train/step": step, **values})

    def table(self, name: str, rows: list[dict[str, Any]], step: int) -> None:
        data = [[r[c] for c in FLIP_COLUMNS] for r in rows]
        self.run.log({"train/step": step, name: self.wandb.Table(columns=list(FLIP_COLUMNS), data=data)})

    def flush(self) -> None:
        pass

    def close(self) -> None:
        self.run.finish()


_ADAPTERS = {"tensorboard": _TensorBoard, "trackio": _Trackio, "wandb": _Wandb}


class Trackers:
    """The trackers of one run (main process): `train_step` per optimizer step, `checkpoint` per scored
    checkpoint, `close` at the end. With no tracker named, every call does nothing."""

    def __init__(self, names: list[str], out: str | Path, *, step: int = 0, project: str = "ctxrel",
                 config: dict | None = None):
        self.out = Path(out)
        self.names = list(names)
        self.adapters = [_ADAPTERS[n](self.out, step, project=project, config=config or {}) for n in self.names]

    def train_step(self, step: int, *, loss: float, lr: float, tokens_per_s: float | None,
                   extra: dict[str, float] | None = None) -> None:
        """`extra`: further per-step values (a dpo stage's rewards, ctxrel.train.stages) as `train/<name>`."""
        values = {"train/loss": loss, "train/lr": lr, **{f"train/{k}": v for k, v in (extra or {}).items()}}
        if tokens_per_s is not None:
            values["train/tokens_per_s"] = tokens_per_s
        for a in self.adapters:
            a.scalars(values, step)

    def checkpoint(self, step: int) -> None:
        """Log checkpoint `step`'s metric rows (and its flip tables) as the run directory now holds them."""
        if not self.adapters:
            return
        values = checkpoint_scalars(RunDir(self.out).metrics(), step)
        tables = flip_rows(self.out, step) if any(a.tables for a in self.adapters) else {}
        for a in self.adapters:
            if values:
                a.scalars(values, step)
            if a.tables:
                for bench, rows in tables.items():
                    a.table(f"flips/{bench}", rows, step)
            a.flush()

    def close(self) -> None:
        for a in self.adapters:
            a.close()
        self.adapters = []
