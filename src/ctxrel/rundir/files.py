"""The run directory: the only contract between stages (docs/design.md, 'The run-directory contract').

    runs/<study>/
      config.yaml                                 resolved config of the latest command
      evals/<checkpoint>/<benchmark>.jsonl        one line per item x sample
      evals/<checkpoint>/<benchmark>.nocontext.jsonl   knowledge-filter answers (question asked without context)
      evals/<checkpoint>/<benchmark>.settings.json     what produced those records (guards resume)
      evals/<checkpoint>/<records>.shard-R-of-W.jsonl  process R's part of a records file while W processes score
                                                  it (sharded evaluation, ctxrel.evaluate.shards; merged, then deleted)
      metrics.sqlite                              one row per (checkpoint, benchmark, subset, metric)
      metrics.csv                                 the same table; pandas.read_csv(path) reads it

Crash safety: records are appended and fsync'd a chunk at a time; a line cut short by a crash (no trailing
newline) is never read as data and is truncated away before the next append. Metric rows are written in one
SQLite transaction; the CSV is rewritten to a temporary file and renamed into place.

This module owns the directory's names: the file names below, the checkpoint name `step-NNNNNN` (`step_name`
writes it, `step_of` reads it back; nothing else parses it) and the chunk size of appends (`chunked`).
"""

from __future__ import annotations

import csv
import errno
import io
import json
import os
import re
import sqlite3
import tempfile
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Iterable

import yaml

from ctxrel.core import strict_json
from ctxrel.core.errors import CtxrelError, InputError
from ctxrel.rundir import interruption

CONFIG_FILE = "config.yaml"  # resolved config of the latest command
METRICS_DB = "metrics.sqlite"
METRICS_CSV = "metrics.csv"
EVALS_DIR = "evals"  # evals/<checkpoint>/<benchmark>[.<kind>].jsonl
CHECKPOINTS_DIR = "checkpoints"  # checkpoints/<step-NNNNNN>/ (a study's and the synthetic lab's)
CHECKPOINT_META = "checkpoint.json"  # inside a checkpoint folder: written last, so its presence means complete
TRAIN_LOG = "train_log.jsonl"
TRAIN_SUMMARY = "train_summary.json"

STEP_NAME = re.compile(r"step-(\d{6,})")  # what step_name writes: at least six digits
SHARD_NAME = re.compile(r"\.shard-(\d+)-of-(\d+)\.jsonl")  # what shard_file adds to a records file's stem


def step_name(step: int) -> str:
    """The checkpoint name of a training step: its folder under checkpoints/ and evals/, and the `checkpoint`
    column of its metric rows.

    >>> step_name(48), step_of(step_name(48)), step_of("model")
    ('step-000048', 48, None)
    """
    return f"step-{step:06d}"


def step_of(checkpoint: str) -> int | None:
    """The step a checkpoint name stands for (None for a name `step_name` does not write: an adapter folder,
    "model")."""
    m = STEP_NAME.fullmatch(checkpoint)
    return int(m.group(1)) if m else None


def list_checkpoints(run_dir: Path) -> list[tuple[int, Path]]:
    """The complete checkpoints of a run directory (those with checkpoint.json), ordered by step: (step, folder).
    A study's, read by `ctxrel eval --run` and by resume."""
    root = Path(run_dir) / CHECKPOINTS_DIR
    found = []
    if root.is_dir():
        for d in root.iterdir():
            step = step_of(d.name)
            if step is not None and (d / CHECKPOINT_META).exists():
                found.append((step, d))
    return sorted(found)


def chunked(seq: list, size: int):
    """Consecutive slices of at most `size`: the unit of work appended at once (a crash loses at most one)."""
    for i in range(0, len(seq), size):
        yield seq[i:i + size]


def shard_file(path: Path, rank: int, world: int) -> Path:
    """Process `rank`'s part of records file `path` while `world` processes score it (ctxrel.evaluate.shards).

    >>> shard_file(Path("evals/step-000008/cf_capitals.jsonl"), 1, 2).name
    'cf_capitals.shard-1-of-2.jsonl'
    """
    return path.with_name(f"{path.name.removesuffix('.jsonl')}.shard-{rank}-of-{world}.jsonl")


def shard_files(path: Path) -> list[Path]:
    """Every shard file of records file `path` beside it, of any number of processes (names `shard_file`
    writes, nothing else)."""
    stem = path.name.removesuffix(".jsonl")
    if not path.parent.is_dir():
        return []
    return sorted(f for f in path.parent.iterdir()
                  if f.name.startswith(stem + ".") and SHARD_NAME.fullmatch(f.name[len(stem):]) and f.is_file())


METRIC_COLUMNS = ("checkpoint", "step", "epoch", "tokens", "benchmark", "subset", "metric", "value", "n",
                  "ci_low", "ci_high", "context", "decoding", "created", "stage")
# Columns that came later; a metrics table without them gets them (empty) when it is opened for writing, and is
# read with them as NULL, so older run directories read the same. `stage` (sft, dpo, ...: the training stage a
# checkpoint ends, ctxrel.train.stages); `context` and `decoding` (the context kind and decoding method a conflict
# benchmark's row was scored with: conflict / gold / irrelevant ..., greedy / cad0.5 ...; NULL for rows that are
# not a conflict benchmark's). The benchmark name keeps its variant tag (`cf_capitals[gold,cad0.5]`): records
# files and resume are keyed by it.
ADDED_COLUMNS = {"stage": "TEXT", "context": "TEXT", "decoding": "TEXT"}


def atomic_write_text(path: Path, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write to a temporary file beside `path`, fsync, rename: readers see the old file or the new one."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        os.fchmod(fd, 0o666 & ~_umask())  # mkstemp makes 0600; follow the umask like every other file ctxrel writes
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _umask() -> int:
    mask = os.umask(0o022)  # reading the umask means setting it; put it straight back
    os.umask(mask)
    return mask


def read_records(path: Path) -> list[dict[str, Any]]:
    """Complete JSONL records of `path` ([] if absent). A final line without newline is a crash remnant:
    ignored here and cut off by `append_records`. A broken complete line is corruption and raises."""
    if not path.exists():
        return []
    data = path.read_bytes()
    end = data.rfind(b"\n") + 1
    records = []
    for n, raw in enumerate(data[:end].splitlines(), start=1):
        if not raw.strip():
            continue
        try:
            record = strict_json.loads(raw, allow_nan=True)
        except ValueError as e:  # also not UTF-8, a lone surrogate, nesting too deep
            raise InputError(f"corrupt record ({e}); delete the file to recompute it", path=str(path),
                             line=n) from None
        if not isinstance(record, dict):
            raise InputError("corrupt record (not a JSON object); delete the file to recompute it",
                             path=str(path), line=n)
        records.append(record)
    return records


def append_records(path: Path, records: Iterable[dict[str, Any]]) -> None:
    """Append records durably, first cutting any partial last line left by a crash."""
    path.parent.mkdir(parents=True, exist_ok=True)
    text = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records)
    with interruption.critical():  # a SIGTERM waits for the whole chunk: no half line from a clean stop
        if path.exists():
            data = path.read_bytes()
            end = data.rfind(b"\n") + 1
            if end != len(data):
                with open(path, "r+b") as f:
                    f.truncate(end)
        with open(path, "a", encoding="utf-8") as f:
            if interruption.armed("records.append", path.name):  # a test stops here, half the chunk on disk
                f.write(text[:len(text) // 2])
                f.flush()
                interruption.stop("records.append", path.name)
                text = text[len(text) // 2:]
            f.write(text)
            f.flush()
            os.fsync(f.fileno())


class RunDir:
    def __init__(self, path: str | Path, *, row_defaults: dict[str, Any] | None = None):
        """`row_defaults` fill columns a metric row leaves out (a study passes the checkpoint's epoch and
        tokens seen)."""
        self.path = Path(path)
        self.row_defaults = dict(row_defaults or {})
        if self.path.exists() and not self.path.is_dir():
            raise CtxrelError(f"--out {self.path}: exists and is not a directory")
        self.path.mkdir(parents=True, exist_ok=True)

    # -- files --------------------------------------------------------------------------------------------
    def eval_file(self, checkpoint: str, benchmark: str, kind: str = "") -> Path:
        safe = benchmark.replace("/", "_")
        return self.path / EVALS_DIR / checkpoint / f"{safe}{'.' + kind if kind else ''}.jsonl"

    def write_config(self, config: dict[str, Any]) -> None:
        atomic_write_text(self.path / CONFIG_FILE, yaml.safe_dump(config, sort_keys=False))

    def check_settings(self, checkpoint: str, benchmark: str, settings: dict[str, Any], *,
                       dry_run: bool = False) -> None:
        """Refuse to mix records made with different settings in one file; first use records them
        (unless `dry_run`, which only checks)."""
        path = self.eval_file(checkpoint, benchmark).with_suffix(".settings.json")
        if path.exists():
            old = strict_json.load_object(path, "settings file", f"delete {path.parent} to recompute this checkpoint")
            diff = {k: (old.get(k), v) for k, v in settings.items() if old.get(k) != v}
            if diff:
                desc = ", ".join(f"{k}: {a!r} -> {b!r}" for k, (a, b) in sorted(diff.items()))
                raise CtxrelError(
                    f"{self.path} already holds {benchmark} results for {checkpoint} made with other settings "
                    f"({desc}); use another --out, or delete {path.parent} to recompute")
            return
        if not dry_run:
            atomic_write_text(path, json.dumps(settings, indent=1, sort_keys=True))

    def drop_unused_settings(self, checkpoint: str, benchmark: str) -> None:
        """Forget the settings of an evaluation that wrote no record (it failed, or was killed, before its first
        result): a rerun with other settings has nothing to mix with."""
        path = self.eval_file(checkpoint, benchmark).with_suffix(".settings.json")
        if path.exists() and not self.holds_records(checkpoint, benchmark):
            path.unlink()

    def holds_records(self, checkpoint: str, benchmark: str) -> bool:
        """Does any records file of this (checkpoint, benchmark), or a shard of one, hold a complete line?"""
        for kind in ("", "nocontext", "attention"):
            f = self.eval_file(checkpoint, benchmark, kind)
            for g in [f] + shard_files(f):
                if g.is_file() and b"\n" in g.read_bytes():
                    return True
        return False

    # -- metrics table ------------------------------------------------------------------------------------
    def _db(self) -> sqlite3.Connection:
        db = self.path / METRICS_DB
        try:
            con = sqlite3.connect(db, timeout=60)
            con.execute(
                "CREATE TABLE IF NOT EXISTS metrics (checkpoint TEXT NOT NULL, step INTEGER, epoch REAL, "
                "tokens INTEGER, benchmark TEXT NOT NULL, subset TEXT NOT NULL, metric TEXT NOT NULL, value REAL, "
                "n INTEGER, ci_low REAL, ci_high REAL, created TEXT, "
                "PRIMARY KEY (checkpoint, benchmark, subset, metric))")
            cols = {r[1] for r in con.execute("PRAGMA table_info(metrics)")}
        except sqlite3.DatabaseError as e:
            raise CtxrelError(f"{db}: not a readable ctxrel metrics database ({e}); move it away (the per-item "
                              "records under evals/ let a rerun of the same command rebuild it)") from None
        missing = set(METRIC_COLUMNS) - set(ADDED_COLUMNS) - cols
        if not missing:
            for name, sql_type in ADDED_COLUMNS.items():
                if name not in cols:
                    with con:
                        con.execute(f"ALTER TABLE metrics ADD COLUMN {name} {sql_type}")
        if missing:
            con.close()
            raise CtxrelError(f"{db}: its metrics table lacks column(s) {', '.join(sorted(missing))}; not a ctxrel "
                              "metrics database")
        return con

    def write_metrics(self, rows: list[dict[str, Any]]) -> None:
        """Insert or replace rows (one transaction), then refresh metrics.csv."""
        now = datetime.now(timezone.utc).isoformat(timespec="seconds")
        rows = [{**self.row_defaults, **{k: v for k, v in r.items() if v is not None}} for r in rows]
        with interruption.critical():  # the table and its CSV copy change together, even on SIGTERM
            con = self._db()
            try:
                with con:
                    con.executemany(
                        f"INSERT OR REPLACE INTO metrics ({', '.join(METRIC_COLUMNS)}) "
                        f"VALUES ({', '.join('?' * len(METRIC_COLUMNS))})",
                        [tuple(now if c == "created" else r.get(c) for c in METRIC_COLUMNS) for r in rows])
                    interruption.point("metrics.write", rows[0].get("checkpoint", "") if rows else "")
            finally:
                con.close()
            self.export_csv()

    def metrics(self) -> list[dict[str, Any]]:
        if not (self.path / METRICS_DB).exists():
            return []
        con = self._db()
        try:
            return _select_metrics(con, self.path / METRICS_DB)
        finally:
            con.close()

    def export_csv(self) -> None:
        buf = io.StringIO(newline="")
        w = csv.DictWriter(buf, fieldnames=METRIC_COLUMNS)
        w.writeheader()
        w.writerows(self.metrics())
        atomic_write_text(self.path / METRICS_CSV, buf.getvalue())


_DAMAGED = "move it away (a rerun of the same command rebuilds it from the records)"
_TEXT_COLUMNS = ("checkpoint", "benchmark", "subset", "metric")
_NUMBER_COLUMNS = ("step", "epoch", "tokens", "value", "n", "ci_low", "ci_high")
_INT_COLUMNS = ("step", "tokens", "n")


def _select_metrics(con: sqlite3.Connection, db: Path, absent: frozenset[str] = frozenset()) -> list[dict[str, Any]]:
    """Every metric row, checked: a damaged file can hand back NULL or text where the table says otherwise.
    `absent`: columns added after the table was written (ADDED_COLUMNS), read as NULL."""
    select = ", ".join(f"NULL AS {c}" if c in absent else c for c in METRIC_COLUMNS)
    try:
        cur = con.execute(f"SELECT {select} FROM metrics "
                          "ORDER BY step, checkpoint, benchmark, subset, metric")
        rows = [dict(zip(METRIC_COLUMNS, row)) for row in cur]
    except (sqlite3.DatabaseError, ValueError, OverflowError) as e:
        raise CtxrelError(f"{db}: damaged metrics database ({e}); {_DAMAGED}") from None
    for n, r in enumerate(rows, 1):
        bad = [c for c in _TEXT_COLUMNS if not isinstance(r[c], str)]
        bad += [c for c in _NUMBER_COLUMNS if r[c] is not None and (not isinstance(r[c], (int, float))
                                                                  or c in _INT_COLUMNS and not isinstance(r[c], int))]
        if bad:
            raise CtxrelError(f"{db}: damaged metrics database (row {n}: {bad[0]} is {r[bad[0]]!r:.40}); {_DAMAGED}")
    return rows


def read_metrics(run_dir: str | Path) -> list[dict[str, Any]]:
    """The metric rows of a run directory, read without writing anything: a read-only SQLite connection creates
    no table and takes only a reader's lock for the one query, so it never blocks a running study (whose writes
    are single transactions: a reader sees the rows committed before it, never part of a transaction). [] when
    the run has no table yet."""
    db = Path(run_dir) / METRICS_DB
    if not db.is_file():
        return []
    try:
        con = sqlite3.connect(db.resolve().as_uri() + "?mode=ro", uri=True, timeout=60)
    except sqlite3.DatabaseError as e:
        raise CtxrelError(f"{db}: cannot open the metrics database ({e}); {_DAMAGED}") from None
    try:
        cols = {r[1] for r in con.execute("PRAGMA table_info(metrics)")}
        if not cols:
            raise CtxrelError(f"{db}: no metrics table in it (an empty or foreign file); {_DAMAGED}")
        missing = set(METRIC_COLUMNS) - cols - set(ADDED_COLUMNS)  # an older table lacks only the added ones
        if missing:
            raise CtxrelError(f"{db}: its metrics table lacks column(s) {', '.join(sorted(missing))}; not a ctxrel "
                              "metrics database")
        return _select_metrics(con, db, frozenset(set(ADDED_COLUMNS) - cols))
    except sqlite3.DatabaseError as e:
        raise CtxrelError(f"{db}: damaged metrics database ({e}); {_DAMAGED}") from None
    finally:
        con.close()


_DISK_ERRNOS = {errno.ENOSPC, errno.EFBIG, errno.EDQUOT}


def disk_full(e: BaseException, where: str | Path | None = None) -> str | None:
    """One sentence for a write that failed because the disk is full or a file-size limit was reached (an
    OSError, safetensors' error, SQLite's I/O error), saying what survives and how to go on; None for any other
    error. `where`: what was being written, when the error does not name it."""
    if isinstance(e, OSError) and e.errno in _DISK_ERRNOS:
        detail, where = e.strerror, e.filename or where
    elif type(e).__name__ == "SafetensorError" and re.search(r"os error (27|28|122)\b", str(e)):
        detail = str(e).split("I/O error: ")[-1]
    elif isinstance(e, sqlite3.OperationalError) and ("disk" in str(e) or "full" in str(e)):
        detail = f"SQLite: {e}"
    else:
        return None
    return (f"{where or 'the run directory'}: could not write ({detail}): the disk is full or a file-size limit "
            "was reached; nothing half-written is kept (finished checkpoints, records and metric rows are): free "
            "space, then rerun the same command to resume")
