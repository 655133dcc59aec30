"""The run directory: what ctxrel writes, where, and how a write survives a crash or a stop.

Owns the file names and crash-safe writers (`files`: `RunDir`, records JSONL, the SQLite metrics and their CSV,
`step_name` / `step_of`), the marker that says which directories ctxrel may write, resume or delete (`marker`,
ctxrel-run.json and the per-run lock) and SIGTERM's clean stop between writes with the fault points
(`interruption`). It may import core/ only (and the package root for `__version__`); everything that reads or
writes a run directory goes through it.
"""
