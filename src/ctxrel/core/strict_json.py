"""JSON from files users give or ctxrel wrote: parsed strictly, so a hostile value fails with one sentence.

`json.loads` accepts two things ctxrel cannot use: escapes of lone UTF-16 surrogates (`"\\ud800"`), which decode to
a string that cannot be written back as UTF-8, and nesting deep enough to overflow the parser's recursion.
`loads` refuses both (and NaN / Infinity literals, which are not JSON) with `BadJSON`, a ValueError whose text
says what is wrong; `json.JSONDecodeError` passes through unchanged so callers can still name its column.
"""

from __future__ import annotations

import json
from typing import Any


class BadJSON(ValueError):
    """Valid-looking JSON that ctxrel refuses (lone surrogate, too deep, a NaN literal)."""


def _no_constant(name: str) -> Any:
    raise BadJSON(f"{name} is not a JSON number")


def _check_strings(value: Any) -> None:
    stack = [value]
    while stack:
        v = stack.pop()
        if isinstance(v, str):
            try:
                v.encode("utf-8")
            except UnicodeEncodeError as e:
                raise BadJSON(f"a string holds the lone surrogate escape \\u{ord(v[e.start]):04x}, which is not a "
                              "character (broken UTF-16?)") from None
        elif isinstance(v, dict):
            stack.extend(v.keys())
            stack.extend(v.values())
        elif isinstance(v, list):
            stack.extend(v)


def loads(text: str | bytes, *, allow_nan: bool = False) -> Any:
    """`json.loads`, refusing lone surrogates, nesting too deep to parse and (unless `allow_nan`: ctxrel's own
    records may hold NaN) NaN / Infinity."""
    try:
        value = json.loads(text) if allow_nan else json.loads(text, parse_constant=_no_constant)
    except RecursionError:
        raise BadJSON("nested too deeply to parse") from None
    _check_strings(value)
    return value


def load_object(path, what: str, remedy: str) -> dict[str, Any]:
    """The JSON object in file `path` (a pathlib.Path), read strictly; anything else -- bad JSON, a lone
    surrogate, another JSON type -- is a CtxrelError that names the file, says it is a damaged `what`, and
    ends with `remedy`."""
    from ctxrel.core.errors import CtxrelError

    try:
        data = loads(path.read_bytes())
    except ValueError as e:
        raise CtxrelError(f"{path}: damaged {what} ({e}); {remedy}") from None
    if not isinstance(data, dict):
        raise CtxrelError(f"{path}: damaged {what} (not a JSON object); {remedy}")
    return data
