"""Instruction records as curation sees them: the raw record (kept verbatim for the output), where it came from,
its format, and the one question every curation step asks of it: *does it carry a context, and what is it
without that context?*

Records come from the same sources the trainer reads (`ctxrel.train.data`): the built-in mixture, a local
JSON / JSONL (.gz) file, or a Hugging Face dataset id. Outputs are JSONL files of records in the input's own
format, so `data.source=<out>/data.jsonl` trains on them unchanged.

Context rule, per format:

* alpaca  - the `input` field, when it is not blank (the study's "context-only" Alpaca subset);
* squad   - the `context` field (always present);
* mixture - the `context` field, when not blank (c and cs records; s records have none);
* chat    - only the **first user turn** is read (later turns refer to the conversation itself). It is split into
  blocks at blank lines. A block that opens with a context label (`Background:`, `Context:`, `Passage:`,
  `Article:`, `Document:`, `Paragraph:`, `Text:`, `Input:`, `Reference:`; any case) is context; if no block is
  labelled and there are two or more blocks, every block after the first is context (the request comes first,
  as an Alpaca record renders: instruction, blank line, input). One block and no label: no context.
  Removing the context removes those blocks and keeps the rest of the turn.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ctxrel.core.errors import CtxrelError, InputError

FORMATS = ("alpaca", "chat", "squad", "mixture")
CONTEXT_LABELS = ("background", "context", "passage", "article", "document", "paragraph", "text", "input",
                  "reference")
_LABEL = re.compile(r"\s*(?:" + "|".join(CONTEXT_LABELS) + r")\s*:", re.IGNORECASE)
_BLANK_LINE = re.compile(r"\n[ \t]*\n")


@dataclass
class Record:
    """One input record, unchanged, with its position (0-based) and location for messages."""

    data: dict[str, Any]
    index: int
    where: str
    fmt: str

    @property
    def digest(self) -> str:
        """Short content hash: resume refuses to reuse a score computed for a different record."""
        return hashlib.sha256(canonical_json(self.data).encode("utf-8")).hexdigest()[:16]


def canonical_json(obj: Any) -> str:
    return json.dumps(obj, ensure_ascii=False, sort_keys=True, separators=(",", ":"))


@dataclass
class Source:
    """What was read, for the manifest: a file (hashed), a hub id, or the generated mixture."""

    spec: str
    kind: str  # file | hub | mixture
    path: Path | None
    fmt: str
    n_records: int
    params: dict[str, Any]


def mixture_shares(spec: str) -> dict[str, float]:
    """The shares a `mixture:c=0.2,cs=0.4,ci=0.2,s=0.2` spec sets (a plain `mixture` sets none: the defaults).

    >>> mixture_shares("mixture:ci=0.25,cs=0.35")
    {'ci': 0.25, 'cs': 0.35}
    """
    from ctxrel.train.mixture import KINDS

    _, _, body = spec.partition(":")
    shares: dict[str, float] = {}
    for part in filter(None, (p.strip() for p in body.split(","))):
        key, eq, value = part.partition("=")
        key = key.strip()
        if not eq or key not in KINDS:
            raise CtxrelError(f"--data {spec}: expected mixture:KIND=SHARE,... with KIND one of {', '.join(KINDS)}; "
                              f"found {part!r}")
        try:
            shares[key] = float(value)
        except ValueError:
            raise CtxrelError(f"--data {spec}: share of {key} must be a number, found {value.strip()!r}") from None
    return shares


def load_records(spec: str, *, fmt: str = "auto", split: str = "train", limit: int | None = None,
                 seed: int = 0) -> tuple[list[Record], Source]:
    """The records of `--data SPEC`: `mixture` (the built-in C / C+S / S mixture: `limit` records, default
    2000, from `seed`), a local file, or a hub dataset id. `limit` keeps the first N records of a file or hub set
    (a reproducible slice, not a sample). Every record is checked with the trainer's own parser, so a dataset
    that curation accepts is one the trainer accepts; a bad record raises InputError naming file, line and key."""
    from ctxrel.train import data as D

    if limit is not None and limit < 1:
        raise CtxrelError(f"--limit {limit}: must be >= 1")
    if spec == "mixture" or spec.startswith("mixture:"):
        from ctxrel.config.settings import MixtureConfig
        from ctxrel.train.mixture import generate_mixture

        m = MixtureConfig()
        n = limit or m.n
        proportions = m.shares()
        proportions.update(mixture_shares(spec))
        raw = generate_mixture(n, proportions, seed=seed)
        pairs = [(r, f"mixture:{i}") for i, r in enumerate(raw)]
        source = Source(spec, "mixture", None, "mixture", len(pairs), dict(n=n, seed=seed, **proportions))
        fmt = "mixture"
    else:
        path = Path(spec).expanduser()
        if path.exists():
            pairs, kind = D.read_file(path), "file"
        elif spec.startswith((".", "/", "~")) or spec.endswith((".json", ".jsonl", ".gz")):
            raise CtxrelError(f"--data {spec}: no such file")
        else:
            try:
                pairs, kind, path = D.read_hub(spec, split), "hub", None
            except CtxrelError as e:  # the trainer's message names its config key; here the flag is --data
                raise CtxrelError(str(e).replace("data.source", "--data", 1)) from None
        if not pairs:
            raise CtxrelError(f"--data {spec}: no records")
        if limit is not None:
            pairs = pairs[:limit]
        if fmt == "auto":
            first, where = pairs[0]
            if not isinstance(first, dict):
                raise InputError(f"expected a JSON object, got {type(first).__name__}", path=where)
            fmt = D.sniff_format(first, where)
        elif fmt not in FORMATS:
            raise CtxrelError(f"--format {fmt!r}: choose auto, {', '.join(FORMATS)}")
        source = Source(spec, kind, path, fmt, len(pairs), dict(split=split) if kind == "hub" else {})
    records = []
    for i, (r, where) in enumerate(pairs):
        D.to_example(r, fmt, where)  # validates: raises InputError(file:line [key])
        records.append(Record(r, i, where, fmt))
    return records, source


# -- the context of a record ------------------------------------------------------------------------------------

def _first_user(messages: list[dict[str, str]]) -> int | None:
    return next((i for i, m in enumerate(messages) if m["role"] == "user"), None)


def _chat_context_blocks(text: str) -> tuple[list[str], list[bool]]:
    """Blocks of a user turn and which of them are context (the chat rule in the module docstring)."""
    blocks = _BLANK_LINE.split(text.strip())
    labelled = [bool(_LABEL.match(b)) for b in blocks]
    if any(labelled):
        return blocks, labelled
    return blocks, [i > 0 and bool(b.strip()) for i, b in enumerate(blocks)]


def context_of(data: dict[str, Any], fmt: str) -> str:
    """The record's context passage ('' when it has none)."""
    if fmt == "alpaca":
        return (data.get("input") or "").strip()
    if fmt in ("squad", "mixture"):
        return (data.get("context") or "").strip()
    if fmt == "chat":
        u = _first_user(data["messages"])
        if u is None:
            return ""
        blocks, is_ctx = _chat_context_blocks(data["messages"][u]["content"])
        return "\n\n".join(b for b, c in zip(blocks, is_ctx) if c).strip()
    raise CtxrelError(f"unknown format {fmt!r}")


def has_context(data: dict[str, Any], fmt: str) -> bool:
    return bool(context_of(data, fmt))


def without_context(data: dict[str, Any], fmt: str) -> dict[str, Any]:
    """A copy of the record with its context removed (Alpaca: empty `input`; chat: the context blocks of the
    first user turn dropped); the response is untouched."""
    out = dict(data)
    if fmt == "alpaca":
        out["input"] = ""
    elif fmt in ("squad", "mixture"):
        out["context"] = ""
    elif fmt == "chat":
        msgs = [dict(m) for m in data["messages"]]
        u = _first_user(msgs)
        if u is not None:
            blocks, is_ctx = _chat_context_blocks(msgs[u]["content"])
            msgs[u]["content"] = "\n\n".join(b for b, c in zip(blocks, is_ctx) if not c)
        out["messages"] = msgs
    else:
        raise CtxrelError(f"unknown format {fmt!r}")
    return out


def record_text(data: dict[str, Any], fmt: str) -> str:
    """All the text a record shows the model (prompt and response), for keyword matching."""
    if fmt == "chat":
        return "\n".join(m["content"] for m in data["messages"])
    if fmt == "alpaca":
        keys = ("instruction", "input", "output")
    elif fmt == "squad":
        answers = data.get("answers")
        texts = answers.get("text", []) if isinstance(answers, dict) else [data.get("answer") or ""]
        return "\n".join([data.get("context") or "", data.get("question") or "", *map(str, texts)])
    else:
        keys = ("context", "question", "answer")
    return "\n".join(str(data.get(k) or "") for k in keys)


def dataset_text(records: list[dict[str, Any]]) -> str:
    """JSONL text of records (one per line, UTF-8 kept)."""
    return "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records)
