"""Stratified subsets: items grouped by category and taken round robin, so every category gets its share.

The two samplers built on this (`evaluate.selection.select_items` for conflict benchmarks,
`standard.tasks.stratified_limit` for standard tasks) differ only in how they seed the shuffles, and each seeding
is frozen by the run directories already written (their items are guarded by `items_sha256`).
"""

from __future__ import annotations

from collections import defaultdict
from typing import Sequence, TypeVar

T = TypeVar("T")


def by_category(items: Sequence[T]) -> dict[str, list[T]]:
    """Items grouped by their `category`, each group in the items' order (groups in order of first appearance)."""
    groups: dict[str, list[T]] = defaultdict(list)
    for it in items:
        groups[it.category].append(it)
    return groups


def round_robin(queues: Sequence[Sequence[T]], limit: int) -> list[T]:
    """The first of every queue, then the second of every queue that has one, ..., cut at `limit` items: a
    smaller limit is always a prefix of a larger one."""
    out: list[T] = []
    for r in range(max((len(q) for q in queues), default=0)):
        out.extend(q[r] for q in queues if r < len(q))
        if len(out) >= limit:
            break
    return out[:limit]
