"""The manifest every curation output carries: what went in (with sha256 hashes), what was done with which
parameters, what came out, how many records were kept or dropped and why, the ctxrel version and the time.

    {"operation": "curate filter", "command": "ctxrel curate filter ...", "created": "...",
     "ctxrel_version": "0.1.0", "parameters": {...},
     "inputs": [{"role": "data", "spec": ..., "kind": "file", "path": ..., "sha256": ..., "format": ...,
                 "records": 52002, "records_sha256": ...}, ...],
     "outputs": [{"path": "data.jsonl", "sha256": ..., "records": ...}],
     "counts": {"input": ..., "kept": ..., "dropped": {"reason": n}, "added": {...}}, ...}

`records_sha256` hashes the records actually used (after --limit) as canonical JSON lines, so two manifests
can be compared even when the input was a hub dataset or the generated mixture. Written atomically.
"""

from __future__ import annotations

import hashlib
import json
import sys
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from ctxrel.curate.dataset import Record, Source, canonical_json
from ctxrel.rundir.files import atomic_write_text

MANIFEST = "manifest.json"


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def records_sha256(records: list[Record]) -> str:
    h = hashlib.sha256()
    for r in records:
        h.update(canonical_json(r.data).encode("utf-8") + b"\n")
    return h.hexdigest()


def data_input(source: Source, records: list[Record]) -> dict[str, Any]:
    entry: dict[str, Any] = {"role": "data", "spec": source.spec, "kind": source.kind, "format": source.fmt,
                             "records": len(records), "records_sha256": records_sha256(records), **source.params}
    if source.path is not None:
        entry["path"] = str(source.path.resolve())
        entry["sha256"] = sha256_file(source.path)
    return entry


def file_input(role: str, path: str | Path, **extra: Any) -> dict[str, Any]:
    p = Path(path).expanduser().resolve()
    return {"role": role, "path": str(p), "sha256": sha256_file(p), **extra}


def output_entry(out: Path, name: str, records: int | None = None) -> dict[str, Any]:
    entry: dict[str, Any] = {"path": name, "sha256": sha256_file(out / name)}
    if records is not None:
        entry["records"] = records
    return entry


def write_manifest(out: Path, *, operation: str, parameters: dict[str, Any], inputs: list[dict[str, Any]],
                   outputs: list[dict[str, Any]], counts: dict[str, Any], **extra: Any) -> Path:
    from ctxrel import __version__

    manifest = {
        "operation": operation,
        "command": " ".join(["ctxrel", *sys.argv[1:]]) if Path(sys.argv[0]).name in ("ctxrel", "__main__.py")
        else None,
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "ctxrel_version": __version__,
        "parameters": parameters,
        "inputs": inputs,
        "outputs": outputs,
        "counts": counts,
        **extra,
    }
    path = out / MANIFEST
    atomic_write_text(path, json.dumps(manifest, indent=1, ensure_ascii=False) + "\n")
    return path
