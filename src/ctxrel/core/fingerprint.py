"""A fingerprint of a checkpoint's weights: sha256 over every tensor of its safetensors files, read as bytes.

Published checkpoint series sometimes serve the same weights under two step names (a step branch that holds the
final model); a trajectory that does not notice scores one model several times and draws a flat line. The
fingerprint is what `ctxrel eval --revisions / --checkpoints` compares between steps.

It is computed from the safetensors format itself (an 8-byte little-endian header length, a JSON header naming
each tensor's dtype, shape and byte range, then the bytes), so no tensor library and no pickle is involved, and
it does not depend on how the tensors are split over files: tensors are hashed in name order, each as its name,
dtype, shape and raw bytes. Only `*.safetensors` files are read; a directory without one has no fingerprint.
"""

from __future__ import annotations

import hashlib
import json
import struct
from pathlib import Path

from ctxrel.core.errors import CtxrelError

_CHUNK = 1 << 22  # bytes read at once
_MAX_HEADER = 100 << 20  # a header larger than this is not a safetensors file


def tensor_index(path: Path) -> dict[str, tuple[str, list[int], int, int]]:
    """{tensor name: (dtype, shape, start, end)} of one safetensors file, offsets absolute in the file.
    CtxrelError naming the file when it is not a well-formed safetensors file (cut short, foreign bytes)."""
    size = path.stat().st_size
    with open(path, "rb") as f:
        head = f.read(8)
        if len(head) < 8:
            raise CtxrelError(f"{path}: not a safetensors file (shorter than its 8-byte header length)")
        (n,) = struct.unpack("<Q", head)
        if n > min(_MAX_HEADER, size - 8):
            raise CtxrelError(f"{path}: not a safetensors file (header length {n} does not fit the file)")
        try:
            header = json.loads(f.read(n))
        except (ValueError, UnicodeDecodeError):
            raise CtxrelError(f"{path}: not a safetensors file (its header is not JSON)") from None
    if not isinstance(header, dict):
        raise CtxrelError(f"{path}: not a safetensors file (its header is not a JSON object)")
    out = {}
    for name, spec in header.items():
        if name == "__metadata__":
            continue
        try:
            start, end = (int(x) + 8 + n for x in spec["data_offsets"])
            entry = (str(spec["dtype"]), [int(d) for d in spec["shape"]], start, end)
        except (KeyError, TypeError, ValueError):
            raise CtxrelError(f"{path}: tensor {name!r} has no valid dtype/shape/data_offsets") from None
        if not start <= end <= size:
            raise CtxrelError(f"{path}: tensor {name!r} lies beyond the end of the file (a partial download?)")
        out[name] = entry
    return out


def weights_fingerprint(directory: str | Path, names: tuple[str, ...] | None = None) -> tuple[str, int]:
    """(sha256 hex digest, number of tensors) over every tensor of the `*.safetensors` files of `directory` (only
    the files `names` of them when given, e.g. an adapter's weights without anything else saved beside them).

    >>> import tempfile, struct, json
    >>> d = Path(tempfile.mkdtemp())
    >>> def save(name, data):
    ...     head = json.dumps({"w": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]}}).encode()
    ...     (d / name).write_bytes(struct.pack("<Q", len(head)) + head + data)
    >>> save("model.safetensors", struct.pack("<f", 1.0)); a = weights_fingerprint(d)
    >>> save("model.safetensors", struct.pack("<f", 2.0)); b = weights_fingerprint(d)
    >>> a[1], a[0] != b[0], len(a[0])
    (1, True, 64)
    """
    directory = Path(directory)
    files = sorted(f for f in directory.glob("*.safetensors") if names is None or f.name in names)
    if not files:
        raise CtxrelError(f"{directory}: no *.safetensors weights to fingerprint (ctxrel reads safetensors only)")
    where: dict[str, tuple[Path, tuple[str, list[int], int, int]]] = {}
    for f in files:
        for name, entry in tensor_index(f).items():
            if name in where:
                raise CtxrelError(f"{directory}: tensor {name!r} appears in both {where[name][0].name} and {f.name}")
            where[name] = (f, entry)
    h = hashlib.sha256()
    handles = {}
    try:
        for name in sorted(where):
            f, (dtype, shape, start, end) = where[name]
            h.update(json.dumps([name, dtype, shape]).encode())
            fh = handles.get(f) or handles.setdefault(f, open(f, "rb"))
            fh.seek(start)
            left = end - start
            while left:
                chunk = fh.read(min(_CHUNK, left))
                if not chunk:
                    raise CtxrelError(f"{f}: ends inside tensor {name!r} (a partial download?)")
                h.update(chunk)
                left -= len(chunk)
    finally:
        for fh in handles.values():
            fh.close()
    return h.hexdigest(), len(where)
