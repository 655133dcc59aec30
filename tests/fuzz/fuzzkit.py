"""What every fuzz target shares: the hypothesis profiles, the property checks (one sentence, nothing written
outside, no new directory left by a refusal) and the strategies that make hostile bytes out of good files.

Profiles: `ci` (default: a few hundred examples per target, derandomized so a CI failure replays) and `long`
(CTXREL_FUZZ=long: 1,000 random examples per target, for a nightly-style run); CTXREL_FUZZ_EXAMPLES=N overrides the
number of examples of either. They live here, not in a conftest.py: a second module named `conftest` would shadow
tests/conftest.py for the tests that import helpers from it.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import os
from pathlib import Path
from typing import Any, Callable

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st

from ctxrel.core.errors import CtxrelError

_QUIET = [HealthCheck.too_slow, HealthCheck.function_scoped_fixture, HealthCheck.data_too_large,
          HealthCheck.filter_too_much]
_N = os.environ.get("CTXREL_FUZZ_EXAMPLES")
settings.register_profile("ci", max_examples=int(_N or 200), deadline=None, derandomize=True, database=None,
                          suppress_health_check=_QUIET, print_blob=True)
settings.register_profile("long", max_examples=int(_N or 1000), deadline=None, database=None,
                          suppress_health_check=_QUIET, print_blob=True)
settings.load_profile(os.environ.get("CTXREL_FUZZ", "ci"))


# ---------------------------------------------------------------- properties
def outcome(fn: Callable[[], Any]) -> tuple[Any, CtxrelError | None]:
    """(result, None) or (None, the CtxrelError). Any other exception escapes: it is the traceback a user would
    see, so the example fails."""
    try:
        return fn(), None
    except CtxrelError as e:
        return None, e


def one_sentence(err: CtxrelError, *names: str) -> str:
    """The refusal is one line, says something, and names at least one of `names` (a file, a line, a key)."""
    text = str(err)
    assert text.strip(), "empty error message"
    assert "\n" not in text.strip(), f"more than one line: {text!r}"
    assert "Traceback" not in text
    if names:
        assert any(str(n) in text for n in names), f"names none of {names}: {text!r}"
    return text


def snapshot(root: Path, skip: Path | None = None) -> dict[str, str]:
    """path -> digest of every file and directory under `root`, except those under `skip`."""
    out = {}
    for p in sorted(root.rglob("*")):
        if skip is not None and (p == skip or skip in p.parents):
            continue
        out[str(p.relative_to(root))] = "dir" if p.is_dir() else hashlib.sha256(p.read_bytes()).hexdigest()
    return out


# ---------------------------------------------------------------- strategies
# text a user's file may hold: any character a UTF-8 file can carry (no lone surrogates), quotes, commas,
# newlines, brackets included
TEXT = st.text(st.characters(exclude_categories=("Cs",)), max_size=24)
WORD = st.text(st.characters(categories=("Lu", "Ll", "Nd"), max_codepoint=0x2FF), min_size=1, max_size=10)
JSON_SCALARS = st.none() | st.booleans() | st.integers(-2**70, 2**70) | st.floats(allow_nan=False,
                                                                               allow_infinity=False) | TEXT
JSON = st.recursive(JSON_SCALARS, lambda inner: st.lists(inner, max_size=4)
                    | st.dictionaries(TEXT, inner, max_size=4), max_leaves=12)


@st.composite
def mutated(draw, data: bytes) -> bytes:
    """`data` damaged the ways files get damaged: cut short, a byte flipped, bytes inserted or deleted, a line
    doubled or dropped, a NUL block (a crash on some file systems), or a few edits at once."""
    def one(b: bytes) -> bytes:
        kind = draw(st.sampled_from(["cut", "flip", "insert", "delete", "dup_line", "drop_line", "nul"]))
        n = len(b)
        at = draw(st.integers(0, n)) if n else 0
        if kind == "cut":
            return b[:at]
        if kind == "flip" and n:
            i = min(at, n - 1)
            return b[:i] + bytes([b[i] ^ draw(st.integers(1, 255))]) + b[i + 1:]
        if kind == "insert":
            return b[:at] + draw(st.binary(min_size=1, max_size=8)
                                 | st.sampled_from([b'"', b",", b"\n", b"{", b"]", b"\xff", b"\r", b"NaN"])) + b[at:]
        if kind == "delete":
            return b[:at] + b[at + draw(st.integers(1, 16)):]
        if kind in ("dup_line", "drop_line"):
            lines = b.split(b"\n")
            i = draw(st.integers(0, len(lines) - 1))
            lines[i:i + 1] = [lines[i]] * (2 if kind == "dup_line" else 0)
            return b"\n".join(lines)
        if kind == "nul":
            return b[:at] + b"\0" * draw(st.integers(1, 64)) + b[at + 64:]
        return b
    for _ in range(draw(st.integers(1, 3))):
        data = one(data)
    return data


def write(path: Path, data: bytes) -> Path:
    """Write `data` to `path`, gzip-compressed when the name ends in .gz."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(gzip.compress(data, mtime=0) if path.suffix == ".gz" else data)
    return path


def jsonl_bytes(rows: list[Any]) -> bytes:
    return "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows).encode()
