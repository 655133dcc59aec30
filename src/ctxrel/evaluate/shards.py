"""Sharded evaluation: the scoring behind one records file split over the processes of a distributed launch, and merged
back into exactly the file one process would have written.

Under `accelerate launch` (WORLD_SIZE > 1; torchrun sets the same variables, untested) a study evaluates each
checkpoint on every process, and so do `ctxrel eval --run` and `ctxrel eval`. What is split is the unit one process
appends at once: the chunks of `chunk_size(lm)` prompts (`results.chunked`) cut from the work still to do. Every
process forms the same chunks (from the same records file), `deal` gives each chunk to one process (largest first to
the least loaded, by token count), and each process appends the records of its chunks to its own shard file
(`results.shard_file`: `evals/<ckpt>/<records>.shard-R-of-W.jsonl`). A chunk reaches the backend exactly as one
process would have handed it over, so every batch holds the same prompts with the same padding: greedy outputs and
likelihood scores are the same bits as one process's, not merely close. After a barrier the main process merges the
shard files into the records file, unit by unit in the order one process appends them, deletes them, and goes on as
one process does (metric rows from the whole file); a last barrier lets the others read the merged file.

Resume, per shard: a restarted process reads its own shard file and scores only the units of its chunks that are
unfinished there, by the rule the records file uses (a unit is finished when each of its item ids has all its
samples; a line cut short by a crash is ignored and cut off before the next append). Shard files of another number
of processes (an earlier launch) are not read; the merge deletes them with this file's own shards.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

from ctxrel.core.errors import CtxrelError
from ctxrel.rundir.files import append_records, chunked, read_records, shard_file, shard_files


@dataclass(frozen=True)
class Shard:
    """This process's place in the evaluation: `rank` of `world` processes (0 of 1 outside a launch)."""

    rank: int = 0
    world: int = 1

    @property
    def main(self) -> bool:
        return self.rank == 0

    def wait(self) -> None:
        """A barrier over every process (nothing to wait for alone)."""
        if self.world > 1:
            from accelerate import PartialState

            PartialState().wait_for_everyone()


ALONE = Shard()


def is_main_process() -> bool:
    """True outside a distributed launch, and on rank 0 inside one (RANK, set by torchrun / accelerate launch): the
    process that claims the run directory, writes metric rows and reports. The one such test outside training
    (the training loop asks its accelerator, which reads the same variable)."""
    return os.environ.get("RANK", "0") == "0"


def current() -> Shard:
    """The shard of this process from the launcher's RANK and WORLD_SIZE (ALONE when they are unset)."""
    raw = {k: os.environ.get(k) for k in ("RANK", "WORLD_SIZE")}
    if raw["WORLD_SIZE"] is None:
        return ALONE
    try:
        rank, world = int(raw["RANK"] or "0"), int(raw["WORLD_SIZE"])
    except ValueError:
        raise CtxrelError(f"environment: RANK={raw['RANK']!r} / WORLD_SIZE={raw['WORLD_SIZE']!r} are not whole "
                          "numbers; launch ctxrel with accelerate launch or torchrun, which set them") from None
    if world < 1 or not 0 <= rank < world:
        raise CtxrelError(f"environment: RANK={rank} is not a process of WORLD_SIZE={world}; launch ctxrel with "
                          "accelerate launch or torchrun, which set them")
    return Shard(rank, world)


def join(cpu: bool) -> Shard:
    """The shard of this process, with the process group set up (gloo on CPU, nccl on GPUs) when there is more
    than one: `ctxrel eval --run` under a launcher (a study's training has set it up already)."""
    shard = current()
    if shard.world > 1:
        from datetime import timedelta

        from accelerate import PartialState

        PartialState(cpu=cpu, timeout=timedelta(hours=6))  # a slow process's shard may keep the others waiting
    return shard


def device_of(shard: Shard, device: str | None) -> str | None:
    """The device a sharded process loads its model on: its own GPU (LOCAL_RANK) when `device` names CUDA
    without an index (or nothing, on a machine with CUDA); `device` itself otherwise."""
    if shard.world == 1:
        return device
    if device is None:
        import torch

        device = "cuda" if torch.cuda.is_available() else "cpu"  # models.default_device
    if device == "cuda":
        return f"cuda:{int(os.environ.get('LOCAL_RANK', shard.rank))}"
    return device


def deal(costs: Sequence[float], world: int) -> list[int]:
    """The process of each chunk: largest first to the process with the least cost so far (ties: the chunk that
    comes first, the lowest rank). Deterministic, and balanced to within one chunk.

    >>> deal([5, 1, 4, 4, 2], 2)
    [0, 0, 1, 1, 0]
    """
    load = [0.0] * world
    owner = [0] * len(costs)
    for i in sorted(range(len(costs)), key=lambda i: (-costs[i], i)):
        p = min(range(world), key=lambda r: (load[r], r))
        owner[i] = p
        load[p] += costs[i]
    return owner


def _note(held: dict[str, set], records: list[dict[str, Any]]) -> None:
    for r in records:
        held.setdefault(r["id"], set()).add(r.get("sample", 0))


def merge(units: list, owners: list[int], shards: list[list[dict[str, Any]]], ids: Callable[[Any], list[str]],
          size: int) -> list[dict[str, Any]]:
    """The records of `units` in the order one process appends them: unit by unit, each unit's item ids in
    order, each id's samples in order, each record as its owner's shard holds it last (a rescored unit's later
    records win). `owners` are per chunk of `size` units; `shards[r]` is process r's shard file. Pure."""
    latest = []
    for recs in shards:
        last: dict[tuple[str, int], dict[str, Any]] = {}
        for r in recs:
            last[(r["id"], r.get("sample", 0))] = r
        by_id: dict[str, list[tuple[int, dict[str, Any]]]] = {}
        for (rid, s), r in last.items():
            by_id.setdefault(rid, []).append((s, r))
        latest.append(by_id)
    out = []
    for k, chunk in enumerate(chunked(units, size)):
        held = latest[owners[k]]
        for u in chunk:
            for rid in ids(u):
                out += [r for _, r in sorted(held.get(rid, []), key=lambda sr: sr[0])]
    return out


def clear(path: Path, shard: Shard) -> None:
    """Delete the shard files left beside records file `path` by a launch that scored it and stopped before its
    merge (the main process of a sharded evaluation, once the file needs nothing more)."""
    if shard.world > 1 and shard.main:
        for f in shard_files(path):
            f.unlink()


def score_units(units: list, *, size: int, score: Callable[[list], list[dict[str, Any]]], path: Path,
                ids: Callable[[Any], list[str]], per_id: int = 1, cost: Callable[[list], float],
                shard: Shard = ALONE) -> list[dict[str, Any]]:
    """Score `units` (the work still to do, in order) `size` at a time with `score`, whose records go to records
    file `path`; return the new records in the order they were appended (on the main process; [] on the others).

    Alone: each chunk's records are appended as it is scored (the loop every evaluation had). Sharded: chunks are
    dealt by `cost` (`deal`), each process scores its own into its shard file (resuming from it: units whose
    item ids, `ids(unit)`, each hold `per_id` samples there are not scored again), and the main process merges
    them into `path` (see the module docstring). Every process must call this with the same `units` and `size`.
    """
    def finished(unit, held: list[dict[str, set]]) -> bool:
        return all(len(held[0].get(i, ())) >= per_id for i in ids(unit))

    return score_files(units, size=size, score=lambda c: [score(c)], paths=[path], ids=ids, finished=finished,
                       cost=cost, shard=shard)[0]


def score_files(units: list, *, size: int, score: Callable[[list], list[list[dict[str, Any]]]], paths: list[Path],
                ids: Callable[[Any], list[str]], finished: Callable[[Any, list[dict[str, set]]], bool],
                cost: Callable[[list], float], shard: Shard = ALONE) -> list[list[dict[str, Any]]]:
    """`score_units` for work whose chunks write several records files at once (a benchmark's variants: one
    file per decoding method): `score(chunk)` returns one list of records per path, and `finished(unit, held)`
    says whether a unit needs no more scoring given, per path, the samples of each item id its shard holds.
    Returns the new records per path (on the main process)."""
    if shard.world == 1:
        new: list[list[dict[str, Any]]] = [[] for _ in paths]
        for chunk in chunked(units, size):
            for path, recs, got in zip(paths, score(chunk), new):
                append_records(path, recs)
                got.extend(recs)
        return new
    if not units:  # every process sees the same finished files: nothing to score, only leftovers to clear
        for path in paths:
            clear(path, shard)
        return [[] for _ in paths]
    shard.wait()  # the main process has checked these files' settings and finished every earlier merge
    chunks = list(chunked(units, size))
    owners = deal([cost(c) for c in chunks], shard.world)
    mine = [shard_file(path, shard.rank, shard.world) for path in paths]
    held: list[dict[str, set]] = [{} for _ in paths]
    for h, f in zip(held, mine):
        _note(h, read_records(f))  # what a crashed or killed launch of this process left: not scored again
    for chunk, owner in zip(chunks, owners):
        if owner != shard.rank:
            continue
        left = [u for u in chunk if not finished(u, held)]
        if left:
            for f, h, recs in zip(mine, held, score(left)):
                append_records(f, recs)
                _note(h, recs)
    shard.wait()  # every shard file is complete
    new = [[] for _ in paths]
    if shard.main:
        for k, path in enumerate(paths):
            parts = [read_records(shard_file(path, r, shard.world)) for r in range(shard.world)]
            new[k] = merge(units, owners, parts, ids, size)
            append_records(path, new[k])
            for f in shard_files(path):
                f.unlink()
    shard.wait()  # the merged files are in place for every process to read
    return new
