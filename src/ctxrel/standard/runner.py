"""Standard benchmarks x model -> per-item records + metric rows, and `id_accuracy` across tasks.

The study's x-axis is ID accuracy: the mean accuracy over standard benchmarks (GSM8K, MMLU, ARC-Challenge, SQuAD;
GSM8K left out for Alpaca runs). Each task is scored on ctxrel's own backends following lm-evaluation-harness's
definitions (see `ctxrel.standard.tasks`); records follow the same run-directory contract and resume rules as the
conflict benchmarks. Prompts are used as raw text (no chat template), as lm-eval does by default.

Primary metric per task (what enters `id_accuracy`): MMLU and ARC-Challenge `acc`, GSM8K and SQuAD
`exact_match`. The interval of `id_accuracy` averages the tasks' independent bootstrap replicates.
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np

from ctxrel.backends.base import chunk_size
from ctxrel.core.metrics import bootstrap_means, bootstrap_rows, mean_of_tasks
from ctxrel.evaluate.shards import ALONE, Shard, score_units
from ctxrel.rundir.files import RunDir, read_records
from ctxrel.standard.scoring import mc_scores, score_generation
from ctxrel.standard.tasks import MCItem

PRIMARY = {"mmlu": "acc", "arc_challenge": "acc", "gsm8k": "exact_match", "squad": "exact_match"}
MAX_NEW_TOKENS = {"gsm8k": 256, "squad": 32}


def _score_mc(lm, chunk, on_done) -> list[dict[str, Any]]:
    requests = [(it.prompt, c) for it in chunk for c in it.choices]
    logprobs = lm.loglikelihood(requests)
    recs, k = [], 0
    for it in chunk:
        lp = logprobs[k:k + len(it.choices)]
        k += len(it.choices)
        recs.append(dict(id=it.id, category=it.category, gold=it.gold, logprobs=lp, **mc_scores(it, lp)))
    on_done(len(chunk))
    return recs


def _score_gen(lm, chunk, task: str, on_done) -> list[dict[str, Any]]:
    stop = tuple(sorted({s for it in chunk for s in it.stop}))
    outs = lm.generate([it.prompt for it in chunk], max_new_tokens=MAX_NEW_TOKENS.get(task, 64), stop=stop,
                       on_done=on_done)
    return [dict(id=it.id, category=it.category, output=o[0], answers=list(it.answers),
                 **score_generation(it, o[0])) for it, o in zip(chunk, outs)]


def evaluate_task(lm, task: str, items: Sequence, run: RunDir, *, checkpoint: str = "model", step=None,
                  n_boot: int = 1000, seed: int = 0, progress=None, shard: Shard = ALONE
                  ) -> tuple[list[dict], np.ndarray]:
    """Score `items` of one standard task (resumable); write metric rows; return (rows, bootstrap replicates of
    the primary metric). Sharded (`ctxrel.evaluate.shards`), each process scores a share of the items and only the main
    process writes and returns rows (the others: [] and no replicates)."""
    path = run.eval_file(checkpoint, task)
    done = {r["id"]: r for r in read_records(path)}
    todo = [it for it in items if it.id not in done]
    bump = progress.update if progress is not None else (lambda k: None)

    def score(chunk: list) -> list[dict[str, Any]]:
        return _score_mc(lm, chunk, bump) if isinstance(chunk[0], MCItem) else _score_gen(lm, chunk, task, bump)

    def cost(chunk: list) -> float:  # prompt tokens handed to the model (a multiple-choice prompt once per choice)
        return sum(n * len(getattr(it, "choices", None) or [0])
                   for it, n in zip(chunk, lm.count_tokens([it.prompt for it in chunk])))

    new = score_units(todo, size=chunk_size(lm), score=score, path=path, ids=lambda it: [it.id], cost=cost,
                      shard=shard)
    if not shard.main:
        return [], np.zeros(0)
    done.update({r["id"]: r for r in new})
    records = [done[it.id] for it in items]
    names = [m for m in ("acc", "acc_norm", "exact_match", "f1") if records and m in records[0]]
    matrix = np.array([[float(r[m]) for m in names] for r in records]) if records else np.zeros((0, len(names)))
    rows = bootstrap_rows(matrix, names, n_boot=n_boot, seed=seed, checkpoint=checkpoint, step=step, benchmark=task,
                          subset="all")
    run.write_metrics(rows)
    primary = names.index(PRIMARY[task]) if PRIMARY.get(task) in names else 0
    reps = bootstrap_means(matrix, n_boot=n_boot, seed=seed)[:, primary] if len(records) else np.zeros(0)
    return rows, reps


def id_accuracy_row(results: dict[str, tuple[list[dict], np.ndarray]], *, checkpoint: str = "model",
                    step=None) -> dict[str, Any] | None:
    """The mean of the tasks' primary metrics, with a 95% interval from averaged bootstrap replicates."""
    values, reps = [], []
    for task, (rows, rep) in results.items():
        row = next((r for r in rows if r["metric"] == PRIMARY.get(task)), None)
        if row is None or not row["n"]:
            continue
        values.append(row["value"])
        reps.append(rep)
    if not values:
        return None
    value, lo, hi = mean_of_tasks(values, reps)
    return dict(checkpoint=checkpoint, step=step, benchmark="id_accuracy", subset="all", metric="id_accuracy",
                value=value, n=len(values), ci_low=lo, ci_high=hi)
