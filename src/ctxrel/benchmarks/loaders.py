"""Loaders: published knowledge-conflict files -> `ConflictItem`s.

Formats (every file may also be gzip-compressed, `name.ext.gz`):

* study_json / study_jsonl -- the files released with "Context-Parametric Inversion" (Goyal et al., ICLR 2025):
  `world_facts.json`, `country_capitals_only.json` (JSON list of `{context, question, answer, memory_answer}`)
  and `famous_biographies.jsonl` (`{context, question, answer, parametric_answer}`). `answer` is the context
  answer. Nested pairs ("New Cairo" / "Cairo") and a question repeated with different answers are kept as they
  are: `ctxrel.core.matching` handles nesting, and ids come from the row index. Category: `category` key, else file stem.
* memotrap -- MemoTrap (Liu & Liu, Inverse Scaling Prize round 2): the repository's CSVs (`prompt`, `classes` as
  a Python list literal, `answer_index` = the non-memorised, instructed continuation) or the prize's JSONL (same
  fields plus `round`, `part`). The prompt is used verbatim; the raw classes are the continuations scored in
  likelihood mode; the answers are the classes without surrounding space and final punctuation. History-of-science
  rows (classes " A"/" B") take their answers from the option texts in the prompt, since a lone letter cannot be
  found in free text.
* nq_swap -- NQ-Swap (Longpre et al. 2021 substitutions on Natural Questions): JSONL with `question`,
  `org_context`, `org_answer` (list), `sub_context`, `sub_answer` (list). The substituted side is the context side.
* ctxrel_jsonl -- ctxrel's own JSONL, one object per line with `ConflictItem` field names.

Every bad row raises `InputError` naming file and line (JSON lists: `file:[index]`, 1-based); with
`skip_invalid=True` it is recorded in `LoadResult.skipped` instead. Rows are numbered from 0 in file order, bad
rows included, so ids (`f"{name}/{n}"`) do not move when rows are skipped.
"""

from __future__ import annotations

import ast
import codecs
import csv
import gzip
import io
import json
import re
import zlib
from dataclasses import dataclass, field
from functools import partial
from itertools import chain
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Union

from ctxrel.benchmarks.schema import REQUIRED, ConflictItem, validate_item
from ctxrel.core import strict_json
from ctxrel.core.errors import InputError
from ctxrel.core.matching import find_spans, normalize

FORMATS = ("study_json", "study_jsonl", "memotrap", "nq_swap", "ctxrel_jsonl")
Where = tuple[str, Union[int, None]]  # (path label, line) exactly as `InputError` takes them
Record = Union[dict, Any, InputError]  # a parsed row, a non-object JSON value, or the error that row raised
_PARAMETRIC_KEYS = ("memory_answer", "parametric_answer")
# `benchmark` and `source` are accepted so `ConflictItem.to_dict()` rows load back, but ignored: the name comes
# from --benchmark and the source is this file's path and line.
_CTXREL_KEYS = REQUIRED + ("id", "category", "context_aliases", "parametric_aliases", "prompt",
                           "context_continuation", "parametric_continuation", "meta", "benchmark", "source")
_MEMOTRAP_COLUMNS = ("prompt", "classes", "answer_index")


@dataclass
class LoadResult:
    items: list[ConflictItem]
    skipped: list[tuple[str, str]] = field(default_factory=list)  # (source "path:line", reason)


# ---------------------------------------------------------------- reading
def _read_bytes(path: str | Path) -> bytes:
    """The file's bytes, gunzipped for `.gz`, BOM removed; InputError if missing, unreadable or empty."""
    p = Path(path)
    if not p.exists():
        raise InputError("file not found; check the path", path=str(path))
    if p.is_dir():
        raise InputError("is a directory, expected a file", path=str(path))
    data = p.read_bytes()
    if p.suffix == ".gz":
        try:
            data = gzip.decompress(data)
        except (OSError, EOFError, zlib.error) as e:
            raise InputError(f"not a readable gzip file ({e})", path=str(path)) from None
    data = data.removeprefix(codecs.BOM_UTF8)
    if not data.strip():
        raise InputError("empty file: no items to load", path=str(path))
    return data


def _decode(path: str | Path, data: bytes, line: int | None = None) -> str:
    """Strict UTF-8 decode of a whole file (error names line and byte offset) or of one `line` (names column)."""
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as e:
        at = f"byte offset {e.start}" if line is None else f"column {e.start + 1}"
        raise InputError(f"not valid UTF-8: byte {data[e.start:e.start + 1]!r} at {at}; re-save the file as UTF-8",
                         path=str(path), line=line or data.count(b"\n", 0, e.start) + 1) from None


def _jsonl_records(path: str | Path) -> Iterator[tuple[Where, Record]]:
    """The line reader every JSON Lines format shares: ((path, 1-based line), parsed value) per non-blank line.
    A line that is not UTF-8 or not JSON yields its InputError instead, so that row alone can be skipped."""
    for number, raw in enumerate(_read_bytes(path).splitlines(), 1):
        where = (str(path), number)
        try:
            text = _decode(path, raw, number)
            if text.strip():
                yield where, strict_json.loads(text)
        except InputError as e:
            yield where, e
        except json.JSONDecodeError as e:
            yield where, _error(where, f"malformed JSON at column {e.colno}: {e.msg}")
        except strict_json.BadJSON as e:
            yield where, _error(where, f"unusable JSON: {e}")


def _json_list_records(path: str | Path) -> Iterator[tuple[Where, Record]]:
    try:
        data = strict_json.loads(_decode(path, _read_bytes(path)))
    except json.JSONDecodeError as e:
        raise InputError(f"malformed JSON at column {e.colno}: {e.msg}", path=str(path), line=e.lineno) from None
    except strict_json.BadJSON as e:
        raise InputError(f"unusable JSON: {e}", path=str(path)) from None
    if not isinstance(data, list):
        raise InputError(f"expected a JSON list of objects, found {_type_name(data)}", path=str(path))
    for index, record in enumerate(data, 1):
        yield (f"{path}:[{index}]", None), record


def _csv_records(path: str | Path) -> Iterator[tuple[Where, Record]]:
    rows = csv.reader(io.StringIO(_decode(path, _read_bytes(path)), newline=""))
    try:
        header = next(rows)
        missing = [c for c in _MEMOTRAP_COLUMNS if c not in header]
        if missing:
            raise InputError(f"missing column(s) {missing} (columns found: {header})", path=str(path), line=1)
        start = rows.line_num + 1
        for row in rows:
            where, start = (str(path), start), rows.line_num + 1
            if not row:  # blank line
                continue
            if len(row) != len(header):
                yield where, _error(where, f"expected {len(header)} columns, found {len(row)}")
            else:
                yield where, dict(zip(header, row))
    except csv.Error as e:
        raise InputError(f"malformed CSV: {e}", path=str(path), line=rows.line_num) from None


def _plain(path: str | Path) -> Path:
    """The file name without `.gz`: its `.suffix` names the format, its `.stem` the default category."""
    return Path(Path(path).name.removesuffix(".gz"))


def _error(where: Where, message: str, key: str | None = None) -> InputError:
    return InputError(message, path=where[0], line=where[1], key=key)


def _source(where: Where) -> str:
    return where[0] if where[1] is None else f"{where[0]}:{where[1]}"


def _type_name(value: Any) -> str:
    names = {dict: "an object", list: "a list", str: "a string", bool: "a boolean", type(None): "null"}
    return names.get(type(value), "a number")


# ---------------------------------------------------------------- fields
def _require(record: dict, keys: Iterable[str], where: Where) -> None:
    for key in keys:
        if key not in record:
            raise _error(where, f"missing field {key!r} (fields found: {', '.join(record) or 'none'})", key)


def _str(record: dict, key: str, where: Where, default: str | None = None, *, nullable: bool = False) -> Any:
    """record[key], which must be a string (or null when `nullable`); `default` when the key is absent."""
    if key not in record:
        return default
    value = record[key]
    if not isinstance(value, str) and not (nullable and value is None):
        raise _error(where, f"{key} must be a string, found {_type_name(value)}", key)
    return value


def _str_list(record: dict, key: str, where: Where) -> tuple[str, ...]:
    value = record.get(key, [])
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise _error(where, f"{key} must be a list of strings, found {value!r:.80}", key)
    return tuple(value)


def _item_id(record: dict, name: str, n: int, where: Where) -> str:
    value = record.get("id", f"{name}/{n}")
    if isinstance(value, bool) or not isinstance(value, (str, int)):
        raise _error(where, f"id must be a string or integer, found {_type_name(value)}", "id")
    return str(value)


# ---------------------------------------------------------------- the shared row loop
Convert = Callable[[dict, int, Where], ConflictItem]  # (record, row index, where) -> item


def _gather(path: str | Path, records: Iterable[tuple[Where, Record]], convert: Convert,
            skip_invalid: bool, *, implied_context: bool = False) -> LoadResult:
    items: list[ConflictItem] = []
    skipped: list[tuple[str, str]] = []
    seen: set[str] = set()
    for n, (where, record) in enumerate(records):
        try:
            if isinstance(record, InputError):
                raise record
            if not isinstance(record, dict):
                raise _error(where, f"expected a JSON object, found {_type_name(record)}")
            item = convert(record, n, where)
            validate_item(item, path=where[0], line=where[1], implied_context=implied_context)
            if item.id in seen:
                raise _error(where, f"duplicate id {item.id!r}", "id")
            seen.add(item.id)
            items.append(item)
        except InputError as e:
            if not skip_invalid:
                raise
            skipped.append((_source(where), str(e)))
    if not items:
        raise InputError(f"no items loaded ({len(skipped)} invalid rows skipped)" if skipped else
                         "no items to load", path=str(path))
    return LoadResult(items, skipped)


# ---------------------------------------------------------------- the study's files
def _study_item(record: dict, n: int, where: Where, *, name: str, parametric_key: str,
                category: str) -> ConflictItem:
    given = {k: record[k] for k in _PARAMETRIC_KEYS if k in record}
    if len(given) == 2 and given["memory_answer"] != given["parametric_answer"]:
        raise _error(where, f"memory_answer {given['memory_answer']!r} and parametric_answer "
                     f"{given['parametric_answer']!r} disagree; keep one of the two", "parametric_answer")
    parametric_key = next((k for k in _PARAMETRIC_KEYS if k in record), parametric_key)
    used = ("id", "category", "context", "question", "answer", parametric_key)
    _require(record, used[2:], where)
    return ConflictItem(
        id=_item_id(record, name, n, where), benchmark=name,
        category=_str(record, "category", where, default=category),
        context=_str(record, "context", where), question=_str(record, "question", where),
        context_answer=_str(record, "answer", where), parametric_answer=_str(record, parametric_key, where),
        source=_source(where), meta={k: v for k, v in record.items() if k not in used})


def load_study_json(path: str | Path, *, name: str, skip_invalid: bool = False) -> LoadResult:
    convert = partial(_study_item, name=name, parametric_key="memory_answer", category=_plain(path).stem)
    return _gather(path, _json_list_records(path), convert, skip_invalid)


def load_study_jsonl(path: str | Path, *, name: str, skip_invalid: bool = False) -> LoadResult:
    convert = partial(_study_item, name=name, parametric_key="parametric_answer", category=_plain(path).stem)
    return _gather(path, _jsonl_records(path), convert, skip_invalid)


# ---------------------------------------------------------------- MemoTrap
_OPTION = re.compile(r"^([A-Z])\.\s+(.+?)\s*$", re.MULTILINE)


def _answer_text(continuation: str) -> str:
    """' heavy.' -> 'heavy'."""
    return continuation.strip().rstrip(".,;:!?").strip()


def _proverb_start(prompt: str) -> str:
    """The text the model must complete: the last line of a multi-line prompt ("...\\nto:\\n<start>"), else the
    text after the instruction's colon -- the first colon after its first quoted word, so a colon inside the
    proverb ("Admiration: our polite ...") stays in."""
    lines = prompt.strip().splitlines()
    if len(lines) > 1:
        return lines[-1].strip()
    quote = prompt.find('"', prompt.find('"') + 1) if prompt.count('"') >= 2 else 0
    colon = prompt.find(":", quote)
    return prompt[colon + 1:].strip() if colon >= 0 else ""


def _option_answers(prompt: str, letters: tuple[str, str], where: Where) -> tuple[str, str]:
    """Multiple-choice rows (history of science): the texts of the chosen options ("A. The Earth is flat.")."""
    options = dict(_OPTION.findall(prompt))
    if not all(letter in options for letter in letters):
        raise _error(where, f"options {letters} are not all listed in the prompt as 'A. ...' lines", "prompt")
    first, second = (_answer_text(options[letter]) for letter in letters)
    short, long = sorted((first, second), key=lambda a: len(normalize(a)))
    if find_spans(normalize(long).split(), short):
        raise _error(where, f"options {first!r} and {second!r} are identical or nested after normalisation, so "
                     "containment cannot tell them apart", "prompt")
    return first, second


def _memotrap_item(record: dict, n: int, where: Where, *, name: str) -> ConflictItem:
    _require(record, _MEMOTRAP_COLUMNS, where)
    prompt, classes, index = _str(record, "prompt", where), record["classes"], record["answer_index"]
    if isinstance(classes, str):
        try:
            classes = ast.literal_eval(classes)  # a literal parser, never eval
        except (ValueError, SyntaxError, MemoryError, RecursionError):
            raise _error(where, f"classes is not a Python list literal: {classes!r:.80}", "classes") from None
    if not (isinstance(classes, (list, tuple)) and len(classes) == 2 and all(isinstance(c, str) for c in classes)):
        raise _error(where, f"classes must be a list of two strings, found {classes!r:.80}", "classes")
    if isinstance(index, str) and index.strip() in ("0", "1"):  # CSV cells are strings
        index = int(index)
    if index not in (0, 1) or isinstance(index, bool):
        raise _error(where, f"answer_index must be 0 or 1, found {index!r}", "answer_index")
    context_cont, parametric_cont = classes[index], classes[1 - index]
    if all(len(c.strip()) == 1 and c.strip().isalpha() for c in classes):  # " A" / " B"
        context_answer, parametric_answer = _option_answers(prompt, (context_cont.strip(), parametric_cont.strip()),
                                                            where)
        question = prompt
    else:
        context_answer, parametric_answer = _answer_text(context_cont), _answer_text(parametric_cont)
        question = _proverb_start(prompt) or prompt
    category = (f"part{record['part']}" if "part" in record  # prize JSONL; CSV "1-proverb-ending" -> proverb_ending
                else re.sub(r"^\d+[-_]", "", _plain(where[0]).stem).replace("-", "_"))
    return ConflictItem(
        id=_item_id(record, name, n, where), benchmark=name, category=category, context=prompt, question=question,
        context_answer=context_answer, parametric_answer=parametric_answer, prompt=prompt,
        context_continuation=context_cont, parametric_continuation=parametric_cont, source=_source(where),
        meta={"answer_index": index, **{k: record[k] for k in ("round", "part") if k in record}})


def load_memotrap(path: str | Path, *, name: str, skip_invalid: bool = False) -> LoadResult:
    """A MemoTrap CSV, the prize JSONL, or a directory: all its `*.csv` / `*.csv.gz` in name order (the JSONL
    packaging of the same rows in that directory is not read, so rows are not counted twice)."""
    p = Path(path)
    if p.is_dir():
        files = sorted(f for f in p.iterdir() if _plain(f).suffix == ".csv")
        if not files:
            raise InputError("no MemoTrap CSV files (*.csv) in this directory", path=str(path))
        records: Iterable[tuple[Where, Record]] = chain.from_iterable(_csv_records(f) for f in files)
    else:
        records = _jsonl_records(p) if _plain(p).suffix == ".jsonl" else _csv_records(p)
    # MemoTrap's prompts imply the instructed ending ("Write a quote that ends in the word 'heavy'") rather
    # than state a fact, so its contexts are not required to contain the context answer
    return _gather(path, records, partial(_memotrap_item, name=name), skip_invalid, implied_context=True)


# ---------------------------------------------------------------- NQ-Swap
_P_TAG = re.compile(r"</?P>")


def _tidy(text: str) -> str:
    """Strip NQ's paragraph tags and collapse whitespace (table/list tags are kept: they carry structure)."""
    return " ".join(_P_TAG.sub(" ", text).split())


def _nq_swap_item(record: dict, n: int, where: Where, *, name: str) -> ConflictItem:
    _require(record, ("question", "sub_context", "sub_answer", "org_answer"), where)
    context_answers, parametric_answers = (_str_list(record, key, where) for key in ("sub_answer", "org_answer"))
    for key, answers in (("sub_answer", context_answers), ("org_answer", parametric_answers)):
        if not answers:
            raise _error(where, f"{key} is an empty list", key)
    return ConflictItem(
        id=_item_id(record, name, n, where), benchmark=name, category="nq_swap",
        context=_tidy(_str(record, "sub_context", where)), question=_str(record, "question", where),
        context_answer=context_answers[0], parametric_answer=parametric_answers[0],
        context_aliases=context_answers[1:], parametric_aliases=parametric_answers[1:], source=_source(where),
        meta={"org_context": _tidy(_str(record, "org_context", where, default=""))})


def load_nq_swap(path: str | Path, *, name: str, skip_invalid: bool = False) -> LoadResult:
    return _gather(path, _jsonl_records(path), partial(_nq_swap_item, name=name), skip_invalid)


# ---------------------------------------------------------------- ctxrel JSONL
def _ctxrel_item(record: dict, n: int, where: Where, *, name: str, category: str) -> ConflictItem:
    for key in record:
        if key not in _CTXREL_KEYS:
            raise _error(where, f"unknown key {key!r}; valid keys: {', '.join(_CTXREL_KEYS)}", key)
    _require(record, REQUIRED, where)
    meta = record.get("meta", {})
    if not isinstance(meta, dict):
        raise _error(where, f"meta must be an object, found {_type_name(meta)}", "meta")
    text = {key: _str(record, key, where) for key in REQUIRED}
    optional = {key: _str(record, key, where, nullable=True)
                for key in ("prompt", "context_continuation", "parametric_continuation")}
    return ConflictItem(
        id=_item_id(record, name, n, where), benchmark=name,
        category=_str(record, "category", where, default=category),
        **text, **optional, context_aliases=_str_list(record, "context_aliases", where),
        parametric_aliases=_str_list(record, "parametric_aliases", where), source=_source(where), meta=dict(meta))


def load_ctxrel_jsonl(path: str | Path, *, name: str, skip_invalid: bool = False) -> LoadResult:
    convert = partial(_ctxrel_item, name=name, category=_plain(path).stem)
    return _gather(path, _jsonl_records(path), convert, skip_invalid)


# ---------------------------------------------------------------- dispatch
LOADERS: dict[str, Callable[..., LoadResult]] = {
    "study_json": load_study_json, "study_jsonl": load_study_jsonl, "memotrap": load_memotrap,
    "nq_swap": load_nq_swap, "ctxrel_jsonl": load_ctxrel_jsonl}


def sniff_format(path: str | Path) -> str:
    """The format of `path`, from its extension (`.gz` ignored) and the keys of its first record."""
    p = Path(path)
    if not p.exists():
        raise InputError("file not found; check the path", path=str(path))
    suffix = _plain(p).suffix
    if p.is_dir():
        if any(_plain(f).suffix == ".csv" for f in p.iterdir()):
            return "memotrap"
        raise InputError("is a directory without MemoTrap CSV files; pass a benchmark file (.json, .jsonl, .csv, "
                         "optionally .gz) or a directory of MemoTrap CSVs", path=str(path))
    if suffix == ".csv":
        return "memotrap"
    json_list = suffix == ".json"
    if suffix not in (".json", ".jsonl"):
        raise InputError("unknown file type: expected .json, .jsonl or .csv (optionally .gz), or a MemoTrap "
                         "directory", path=str(path))
    # the first record that parses as an object decides (bad rows before it are the loader's to report or,
    # with --skip-invalid, to count)
    first_error, where, first = None, (str(p), None), None
    for where, record in (_json_list_records(p) if json_list else _jsonl_records(p)):
        if isinstance(record, dict):
            first = record
            break
        first_error = first_error or (record if isinstance(record, InputError) else
                                      _error(where, f"expected a JSON object, found {_type_name(record)}"))
    if first is None:
        if first_error is not None:
            raise first_error
        raise InputError("no items to load", path=str(path))
    keys = set(first) if isinstance(first, dict) else set()
    study = "answer" in keys and bool(keys & set(_PARAMETRIC_KEYS))
    if json_list and study:
        return "study_json"
    jsonl = {"memotrap": {"prompt", "classes"} <= keys, "nq_swap": {"sub_context", "sub_answer"} <= keys,
             "ctxrel_jsonl": "context_answer" in keys, "study_jsonl": study}
    for fmt, found in jsonl.items():
        if found and not json_list:
            return fmt
    raise InputError(f"unknown benchmark format: first record has keys {sorted(keys)}; expected the keys of one "
                     f"of {', '.join(FORMATS)} (see ctxrel.benchmarks.loaders)", path=_source(where))


def load_file(path: str | Path, *, name: str, skip_invalid: bool = False) -> LoadResult:
    """Sniff the format of `path` and load it."""
    return LOADERS[sniff_format(path)](path, name=name, skip_invalid=skip_invalid)
