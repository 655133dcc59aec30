"""How ctxrel is interrupted: a clean stop on SIGTERM, and named fault points where tests stop it mid-write.

**SIGTERM** (a job scheduler's stop, `kill PID`, `timeout`) becomes a `Terminated` exception in the main thread
once `install()` has run (the CLI installs it for every verb). Inside a `critical()` block -- a checkpoint being
written, a chunk of records appended, a metrics transaction -- the stop waits until the block ends, so the
checkpoint of the current step is complete or absent and no half line is left by a SIGTERM; everywhere else it
stops at once (finished checkpoints, records and metric rows are already durable: docs/design.md, 'The run-directory
contract'). The CLI then prints how to resume and exits 143. SIGKILL cannot be caught: the atomic writes
(`results.atomic_write_bytes`, checkpoints renamed into place, one SQLite transaction per metrics write, a partial
last line cut before the next append) cover it.

**Fault points** let tests (tests/test_faults.py) stop ctxrel at the worst moments. `point(name, detail)` is a
no-op unless the environment names it:

    CTXREL_FAULT_AT=records.append@cf_capitals.jsonl#2   the 2nd time point records.append is reached for that file
    CTXREL_FAULT_FILE=/tmp/x/fault                       where the process says it has stopped

At that moment the process appends `name detail pid` to CTXREL_FAULT_FILE and stops itself (SIGSTOP); the test
then sends SIGKILL, or SIGTERM and SIGCONT, to the process frozen in the middle of the write. Points:
`checkpoint.weights` (weights written into the temporary checkpoint folder, optimizer not yet), `checkpoint.optimizer`
(optimizer moments written, progress not yet), `checkpoint.commit` (the temporary folder complete, not yet renamed
into place), `records.append` (half of a chunk of JSONL records written and flushed), `metrics.write` (rows
inserted, transaction not committed). Standard library only.
"""

from __future__ import annotations

import contextlib
import os
import signal
import threading

FAULT_AT = "CTXREL_FAULT_AT"
FAULT_FILE = "CTXREL_FAULT_FILE"


class Terminated(BaseException):
    """SIGTERM arrived: stop cleanly (not an Exception, so no `except Exception` swallows it)."""


_depth = 0  # open critical() blocks
_pending = False  # a SIGTERM arrived inside one
_installed = False
_arrivals: dict[str, int] = {}


def _on_sigterm(signum, frame) -> None:
    global _pending
    if _depth > 0:
        _pending = True
        return
    raise Terminated()


def install() -> None:
    """Turn SIGTERM into `Terminated` (main thread only; elsewhere, and a second time, nothing happens)."""
    global _installed
    if _installed or threading.current_thread() is not threading.main_thread():
        return
    signal.signal(signal.SIGTERM, _on_sigterm)
    _installed = True


@contextlib.contextmanager
def critical():
    """A write that must finish once begun: a SIGTERM that arrives inside waits until the block ends."""
    global _depth, _pending
    _depth += 1
    try:
        yield
    finally:
        _depth -= 1
        if _depth == 0 and _pending:
            _pending = False
            raise Terminated()


def armed(name: str, detail: str = "") -> bool:
    """Does CTXREL_FAULT_AT name this point (and this arrival at it)? Counts the arrivals that match."""
    spec = os.environ.get(FAULT_AT)
    if not spec:
        return False
    want, _, nth = spec.partition("#")
    want_name, _, want_detail = want.partition("@")
    if want_name != name or (want_detail and want_detail != detail):
        return False
    _arrivals[spec] = _arrivals.get(spec, 0) + 1
    return _arrivals[spec] == int(nth or 1)


def point(name: str, detail: str = "") -> None:
    """Stop here (SIGSTOP) when CTXREL_FAULT_AT names this point; otherwise return at once."""
    if armed(name, detail):
        stop(name, detail)


def stop(name: str, detail: str = "") -> None:
    """Say where the process stopped, then stop it until the test kills or continues it."""
    path = os.environ.get(FAULT_FILE)
    if path:
        with open(path, "a", encoding="utf-8") as f:
            f.write(f"{name} {detail} {os.getpid()}\n")
            f.flush()
            os.fsync(f.fileno())
    os.kill(os.getpid(), signal.SIGSTOP)
