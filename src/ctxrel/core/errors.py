"""User-facing errors: each says what was wrong, where, and what to do.

The CLI prints these without a traceback; everything else is a bug and keeps its traceback.
"""

from __future__ import annotations


class CtxrelError(Exception):
    """An error caused by the user's input (a file, a flag, a config key), not by ctxrel itself."""


class InputError(CtxrelError):
    """Bad content in an input file, pinned to a location.

    >>> str(InputError("missing field 'question'", path="bench.jsonl", line=3))
    "bench.jsonl:3: missing field 'question'"
    """

    def __init__(self, message: str, *, path: str | None = None, line: int | None = None,
                 key: str | None = None):
        self.path, self.line, self.key, self.detail = path, line, key, message
        where = ""
        if path is not None:
            where = str(path) + (f":{line}" if line is not None else "")
        if key is not None:
            where = f"{where} [{key}]" if where else f"[{key}]"
        super().__init__(f"{where}: {message}" if where else message)
