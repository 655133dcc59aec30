"""Knowledge-conflict benchmarks: the item schema, loaders for published formats, built-ins, a registry."""

from ctxrel.benchmarks.schema import ConflictItem, validate_item

__all__ = ["ConflictItem", "validate_item"]
