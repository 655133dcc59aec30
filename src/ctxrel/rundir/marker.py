"""The run marker: ctxrel writes, resumes or deletes only inside directories it made
(docs/design.md, 'Words': run marker; 'The run-directory contract').

Every output directory ctxrel writes (an evaluation, a study, a curation output, a report) carries a small
`ctxrel-run.json` written first:

    {"ctxrel_run": 1, "kind": "eval", "created": "...", "ctxrel_version": "...", "settings_sha256": "...",
     "last": {"verb": "eval", "pid": 123, "started": "..."}}

`claim(path, kind)` is the only way into such a directory. It accepts a directory that does not exist yet, an
empty one, or one carrying a marker of the same kind; it refuses anything else (naming the directory, what it
holds and what ctxrel would write there), and always refuses the empty path, `/`, the home directory and the
directories above it. A directory written by a ctxrel older than the marker is adopted only when every entry in
it is a name ctxrel itself writes and one of them proves it (a ctxrel metrics table, a checkpoint, a manifest).

The claim also takes an exclusive OS lock (`fcntl.flock` on the directory itself) for the rest of the command, so
two processes never write one run at once. The kernel drops the lock when the process ends, `kill -9` included;
no lock file outlives its process. Claims are re-entrant within one process (a study's in-loop evaluations claim
the study's directory again) and released by `release_all()` (the CLI calls it after every verb).

A refused command leaves no new directory behind: when a claim that created its directory (and any missing
parents) is released because of a `CtxrelError`, the directory is removed again if it still holds no result --
nothing but the marker, config.yaml, settings files under evals/ and tensorboard logs (`holds_no_result`).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import sqlite3
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from ctxrel.core.errors import CtxrelError
from ctxrel.rundir.files import (CHECKPOINT_META, CHECKPOINTS_DIR, CONFIG_FILE, EVALS_DIR, METRICS_CSV, METRICS_DB,
                                 TRAIN_LOG, TRAIN_SUMMARY, atomic_write_text)

MARKER = "ctxrel-run.json"

# what each kind of directory holds; a legacy directory (no marker) is adopted only if it holds nothing else
_TABLE = {CONFIG_FILE, METRICS_DB, METRICS_DB + "-journal", METRICS_CSV}  # rundir/files.py's names
_NAMES = {
    "eval": _TABLE | {EVALS_DIR, "report", "series.json"},  # series.json: ctxrel.evaluate.series
    "study": _TABLE | {EVALS_DIR, CHECKPOINTS_DIR, TRAIN_LOG, TRAIN_SUMMARY, "tensorboard", "wandb", "report"},
    "curate": {"data.jsonl", "manifest.json", "scores.jsonl", "scores.settings.json", "report.json",
               "dropped.jsonl", "loss_without_context.png"},
    "report": {"index.html", "summary.json"},
    "lm-eval-task": set(),  # ctxrel.exports.lmeval_task (no directory predates the marker)
    "eee": set(),  # ctxrel.exports.every_eval
    "theory": _TABLE | {"check.json"},
    "synth": _TABLE | {EVALS_DIR, CHECKPOINTS_DIR, TRAIN_LOG, "report"},
    "dataset": {"README.md", "data"},  # ctxrel export parquet (exports/parquet.py)
}
_WRITES = {
    "eval": "config.yaml, metrics.sqlite, metrics.csv, evals/",
    "study": "config.yaml, metrics.sqlite, metrics.csv, evals/, checkpoints/ (old checkpoints are deleted), "
             "train_log.jsonl, report/",
    "curate": "data.jsonl, manifest.json and the operation's reports",
    "report": "index.html, summary.json and PNG figures",
    "lm-eval-task": "an lm-eval task (YAML), utils.py and the items (JSONL)",
    "eee": "data/<benchmark>/<developer>/<model>/<uuid>.json and _samples.jsonl (Every Eval Ever)",
    "theory": "config.yaml, metrics.sqlite, metrics.csv, check.json and a PNG",
    "synth": "config.yaml, metrics.sqlite, metrics.csv, evals/, checkpoints/",
    "dataset": "README.md (a dataset card) and data/*.parquet",
}
KIND_HINT = {"study": "score a study's checkpoints with `ctxrel eval --run DIR`",
             "eval": "an eval run directory holds one evaluation; use a new directory"}

_held: dict[str, list] = {}  # resolved path -> [fd, count]
_created: dict[str, list[Path]] = {}  # resolved path -> the directories its claim created, deepest first ([] when
#                                        the claim found it empty: only what ctxrel put there goes on a refusal)
_scopes: list[list[str]] = []  # claims made inside each open `scope()`, released when it closes


def _version() -> str:
    from ctxrel import __version__

    return __version__


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def settings_digest(settings: Any) -> str:
    return hashlib.sha256(json.dumps(settings, sort_keys=True, default=str).encode()).hexdigest()[:16]


def refuse_dangerous(path: str | Path, what: str) -> Path:
    """The resolved path, or CtxrelError for the empty path, `/`, the home directory and any directory above it."""
    if str(path).strip() == "":
        raise CtxrelError(f"{what} is empty; name a directory for the results, e.g. {what.split()[0]} runs/mine")
    p = Path(path).expanduser().resolve()
    home = Path.home().resolve()
    if p == Path(p.anchor) or p == home or p in home.parents:
        raise CtxrelError(f"{what} {path}: refusing to write into {p} (the file-system root, your home directory "
                          "or a directory above it); name a new directory, e.g. runs/mine")
    return p


def read_marker(path: Path) -> dict[str, Any] | None:
    f = path / MARKER
    if not f.is_file():
        return None
    try:
        data = json.loads(f.read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError, RecursionError) as e:
        raise CtxrelError(f"{f}: damaged run marker ({type(e).__name__}); if this is your ctxrel run, delete "
                          "the marker file and rerun (the directory will then be checked like a new one)") from None
    if not isinstance(data, dict) or data.get("ctxrel_run") != 1 or not isinstance(data.get("kind"), str):
        raise CtxrelError(f"{f}: not a ctxrel run marker; if this directory is yours, use another one for ctxrel")
    return data


def _legacy_proof(path: Path, kind: str) -> bool:
    """Does this unmarked directory prove it was written by a ctxrel older than the marker?"""
    if kind in ("eval", "study", "theory", "synth"):
        if kind in ("study", "synth") and any((path / CHECKPOINTS_DIR).glob(f"step-*/{CHECKPOINT_META}")):
            return True
        db = path / METRICS_DB
        if db.is_file():
            try:
                con = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
                try:
                    cols = [r[1] for r in con.execute("PRAGMA table_info(metrics)")]
                finally:
                    con.close()
                return {"checkpoint", "benchmark", "subset", "metric", "value", "ci_low"} <= set(cols)
            except sqlite3.DatabaseError:
                return False
        return False
    if kind == "curate":
        try:
            return str(json.loads((path / "manifest.json").read_text()).get("operation", "")).startswith("curate")
        except (OSError, ValueError, AttributeError, RecursionError, UnicodeDecodeError):
            return False
    if kind == "report":
        return (path / "summary.json").is_file() and (path / "index.html").is_file()
    return False


def _foreign(path: Path, kind: str) -> list[str]:
    """Entries of `path` that ctxrel does not write in a directory of this kind."""
    names = _NAMES[kind]
    out = []
    for e in sorted(path.iterdir()):
        n = e.name
        if n in names or n == MARKER or any(n.startswith(f".{x}.") for x in names | {MARKER}):
            continue  # ctxrel's own, or an atomic writer's temporary file (.config.yaml.XXXX)
        if kind in ("report", "theory") and e.suffix == ".png":
            continue
        out.append(n + ("/" if e.is_dir() else ""))
    return out


def _owned_report_dir(path: Path) -> bool:
    """`RUN/report/` (and `RUN/report/compare-*/`) of a ctxrel run: the study's trajectory plot and `ctxrel
    report` write there."""
    run = path.parent if path.name == "report" else path.parent.parent if path.parent.name == "report" else None
    if run is None:
        return False
    try:
        m = read_marker(run)
    except CtxrelError:
        return False
    if m is not None:
        return m["kind"] in ("study", "eval", "synth")
    return any(_legacy_proof(run, k) and not _foreign(run, k) for k in ("study", "eval"))


def check_owned(path: str | Path, kind: str, what: str = "--out") -> str:
    """Without writing anything: 'new', 'empty', 'marked', 'legacy' or 'report-of-run'; CtxrelError otherwise."""
    p = refuse_dangerous(path, what)
    if not p.exists():
        return "new"
    if not p.is_dir():
        raise CtxrelError(f"{what} {path}: exists and is not a directory")
    marker = read_marker(p)
    if marker is not None:
        if marker["kind"] != kind and not (kind == "report" and _owned_report_dir(p)):
            hint = KIND_HINT.get(marker["kind"], "use another directory")
            raise CtxrelError(f"{what} {path}: a ctxrel {marker['kind']} directory, not a {kind} one ({hint})")
        return "marked"
    entries = list(p.iterdir())
    if not entries:
        return "empty"
    if kind == "report" and _owned_report_dir(p):
        return "report-of-run"
    foreign = _foreign(p, kind)
    if not foreign and _legacy_proof(p, kind):
        return "legacy"
    shown = ", ".join(sorted(e.name + ("/" if e.is_dir() else "") for e in entries)[:8])
    more = f" and {len(entries) - 8} more" if len(entries) > 8 else ""
    raise CtxrelError(f"{what} {path}: this directory exists, is not empty and was not made by ctxrel (no {MARKER}); "
                      f"it holds {shown}{more}, and ctxrel would write {_WRITES[kind]} there. Name a new or empty "
                      "directory")


def claim(path: str | Path, kind: str, *, verb: str | None = None, settings: Any = None,
          what: str = "--out") -> Path:
    """Check ownership of `path` (see `check_owned`), lock it exclusively for this process, write the marker.
    Returns the resolved directory. Re-entrant within a process."""
    import fcntl

    p = refuse_dangerous(path, what)
    key = str(p)
    if key in _held:
        _held[key][1] += 1
        if _scopes:
            _scopes[-1].append(key)
        return p
    state = check_owned(p, kind, what)
    made = [d for d in (p, *p.parents) if not d.exists()] if state == "new" else None
    p.mkdir(parents=True, exist_ok=True)
    fd = os.open(p, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        holder = ""
        try:
            last = (read_marker(p) or {}).get("last") or {}
            holder = f" (pid {last['pid']}, {last.get('verb', '?')} started {last.get('started', '?')})"
        except (CtxrelError, KeyError, TypeError):
            pass
        raise CtxrelError(f"{what} {path}: another ctxrel process is writing this directory{holder}; wait for it "
                          "to finish, or use another directory") from None
    try:
        if state in ("new", "empty"):  # check again under the lock: another process may have filled it meanwhile
            state = check_owned(p, kind, what)
        marker = read_marker(p) or dict(ctxrel_run=1, kind=kind, created=_now(), ctxrel_version=_version(),
                                        settings_sha256=settings_digest(settings) if settings is not None else None)
        if state == "legacy":
            marker["adopted"] = _now()
        marker["last"] = dict(verb=verb or kind, pid=os.getpid(), started=_now(), ctxrel_version=_version())
        atomic_write_text(p / MARKER, json.dumps(marker, indent=1) + "\n")
    except BaseException:
        os.close(fd)
        raise
    _held[key] = [fd, 1]
    if made is not None or state == "empty":
        _created[key] = made or []
    if _scopes:
        _scopes[-1].append(key)
    return p


def holds_no_result(path: Path) -> bool:
    """Does a run directory hold nothing a command produced: only the marker, config.yaml, settings files under
    evals/ (what produced records that were never written), tracker logs (tensorboard, wandb) and empty folders?"""
    for f in path.rglob("*"):
        if f.is_dir():
            continue
        top = f.relative_to(path).parts[0]
        if top in (MARKER, CONFIG_FILE, "tensorboard", "wandb") or top.startswith((f".{MARKER}.", f".{CONFIG_FILE}.")):
            continue
        if top == EVALS_DIR and f.name.endswith(".settings.json"):
            continue
        return False
    return True


def _drop_if_empty(key: str) -> None:
    """Remove the directories claim `key` created, if they hold no result (a refused command); a directory the
    claim found empty is emptied again."""
    if key not in _created:
        return
    made, path = _created.pop(key), Path(key)
    if not path.is_dir() or not holds_no_result(path):
        return
    if not made:  # it was there, empty, before this command
        for e in path.iterdir():
            shutil.rmtree(e, ignore_errors=True) if e.is_dir() else e.unlink(missing_ok=True)
        return
    shutil.rmtree(made[0], ignore_errors=True)
    for d in made[1:]:  # parents the claim created, while empty
        try:
            d.rmdir()
        except OSError:
            break


def release(path: str | Path, *, refused: bool = False) -> None:
    """Release one claim of `path`; the last one drops the lock. `refused`: the command is being refused (a
    CtxrelError), so a directory this claim created is removed again when it holds no result."""
    key = str(Path(path).expanduser().resolve())
    entry = _held.get(key)
    if entry is None:
        return
    entry[1] -= 1
    if entry[1] <= 0:
        if refused:
            _drop_if_empty(key)  # still under the lock: no other process is writing there
        _created.pop(key, None)
        os.close(entry[0])  # closing the descriptor drops the flock
        del _held[key]


def release_all(*, refused: bool = False) -> None:
    for key in list(_held):
        if refused:
            _drop_if_empty(key)
        _created.pop(key, None)
        os.close(_held.pop(key)[0])


def writer(path: str | Path) -> dict[str, Any] | None:
    """The ctxrel process writing run directory `path` right now, found without touching its lock (a reader
    must never take it, even for an instant: a study claiming its directory at that moment would be refused):
    {"pid", "verb", "started"} -- the pid from the kernel's table of flock locks (/proc/locks), verb and start
    from the marker -- or None when no process holds it. Where /proc/locks cannot be read, the marker's last
    writer counts while a process with its pid runs a ctxrel command."""
    p = Path(path)
    try:
        st = os.stat(p)
        last = (read_marker(p) or {}).get("last") or {}
    except (OSError, CtxrelError):
        return None
    pid = _flock_holder(st)
    if pid is False:  # no /proc/locks: the marker's word, if its process still runs ctxrel
        pid = last.get("pid") if isinstance(last.get("pid"), int) and _runs_ctxrel(last["pid"]) else None
    if pid is None:
        return None
    return dict(pid=pid, verb=last.get("verb", "?"), started=last.get("started", "?"))


def _flock_holder(st: os.stat_result) -> int | None | bool:
    """pid holding a flock on the file with this stat (None: nobody), or False when /proc/locks is unreadable.
    Lines read "1: FLOCK  ADVISORY  WRITE 1234 fe:00:2146674 0 EOF" (device major:minor in hex, then the inode);
    processes waiting for a lock have "->" after the number and hold nothing."""
    try:
        text = Path("/proc/locks").read_text()
    except OSError:
        return False
    for line in text.splitlines():
        parts = line.split()
        if len(parts) < 6 or parts[1] != "FLOCK":
            continue
        try:
            major, minor, inode = parts[5].split(":")
            if (int(major, 16), int(minor, 16), int(inode)) == (os.major(st.st_dev), os.minor(st.st_dev),
                                                               st.st_ino):
                return int(parts[4])
        except ValueError:
            continue
    return None


def _runs_ctxrel(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except (OSError, ValueError):
        return False
    try:
        return b"ctxrel" in Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return True  # alive; nothing more to ask on this system


class scope:
    """`with scope(): ...` releases, on exit, every claim made inside the block (a function that claims its
    output directory part-way through, after its input checks, wraps its body in one)."""

    def __enter__(self) -> None:
        _scopes.append([])

    def __exit__(self, exc_type, *exc) -> None:
        refused = exc_type is not None and issubclass(exc_type, CtxrelError)
        for key in _scopes.pop():
            release(key, refused=refused)


class held:
    """`with held(path, kind): ...` claims the directory for the block."""

    def __init__(self, path, kind, **kw):
        self.path, self.kind, self.kw = path, kind, kw

    def __enter__(self) -> Path:
        self.resolved = claim(self.path, self.kind, **self.kw)
        return self.resolved

    def __exit__(self, exc_type, *exc) -> None:
        release(self.resolved, refused=exc_type is not None and issubclass(exc_type, CtxrelError))
