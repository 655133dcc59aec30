"""The context-parametric inversion study's released conflict files, by name: `--benchmark cpi:world_facts`.

Goyal et al. (ICLR 2025) published their evaluation files in a repository without a package. ctxrel ships none of
them; on first use it fetches the file from a pinned commit, checks it against a pinned sha256 and record count,
and keeps it under the ctxrel cache (`$CTXREL_CACHE/cpi/<sha256 prefix>/<file>`, content-addressed: a file is
only ever found under the hash it has). A file whose hash or size differs (a partial or changed download) is
refused in one sentence and never cached.

| name                     | file (repository root)       | records | schema                                         |
|--------------------------|------------------------------|---------|------------------------------------------------|
| cpi:world_facts          | world_facts.json             | 313     | JSON list: context, question, answer, memory_answer |
| cpi:capitals             | country_capitals_only.json   | 196     | the same; the first 196 records of world_facts |
| cpi:world_facts_other    | world_facts.json minus its first 196 records (the capitals file): 117 records |
| cpi:biographies          | famous_biographies.jsonl     | 555     | JSONL: context, question, answer, parametric_answer |

`cpi:capitals` is a prefix of `cpi:world_facts`: the two are never independent benchmarks. Compare the capitals
with `cpi:world_facts_other` (checked, when loaded, to be world_facts without exactly the capitals file's records);
a run that asks for both `cpi:capitals` and `cpi:world_facts` gets a warning.

Where the files come from: `$CTXREL_CPI_SOURCE` (a URL base, or a local directory holding the files, e.g. a
mirror), else the pinned commit on GitHub. Downloading is a network call the user asked for by naming the
benchmark; with `HF_HUB_OFFLINE` set (ctxrel's offline switch) none is made and one sentence says what to download
and where to put it. `$CTXREL_CPI_PINS` names a JSON file `{file name: {"sha256": ..., "records": N}}` that
replaces pins of this process (for files of other content, e.g. a test's own small files); the pins below never
change, and the cache being content-addressed keeps the two apart.
"""

from __future__ import annotations

import hashlib
import http.client
import json
import os
import re
import sys
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from ctxrel.benchmarks import loaders
from ctxrel.core.cache import cache_root
from ctxrel.core.errors import CtxrelError
from ctxrel.rundir.files import atomic_write_bytes

REPOSITORY = "locuslab/context-parametric-inversion"
COMMIT = "6f989849656f433d4520eaf0b9af6e3bb6a7ae70"
DEFAULT_SOURCE = f"https://raw.githubusercontent.com/{REPOSITORY}/{COMMIT}"
SOURCE_VAR, PINS_VAR = "CTXREL_CPI_SOURCE", "CTXREL_CPI_PINS"
PREFIX = "cpi:"
_MAX_BYTES = 64 << 20  # the released files are below 1 MB; anything this large is not one of them


@dataclass(frozen=True)
class Pin:
    sha256: str
    records: int


# The released files at COMMIT (fixed; tests assert these values)
PINS: dict[str, Pin] = {
    "world_facts.json": Pin("a040ca190e4b3517474a229b9e97083df077aedce27bd92fb263018e00c1982c", 313),
    "country_capitals_only.json": Pin("c4c2b090a863bd4919df8c9b8a795dc1437611cc8d1a96b156710d15b33eee12", 196),
    "famous_biographies.jsonl": Pin("d08c6f1cc388d6271a2294d512ae8988937388e1e834461c02887c2684c3c071", 555),
}
CAPITALS, WORLD, BIOS = "country_capitals_only.json", "world_facts.json", "famous_biographies.jsonl"
# name -> (file, loader, description)
NAMES = {
    "cpi:world_facts": (WORLD, loaders.load_study_json, "CPI study release: world facts (capitals, landmarks, "
                        "rivers...); includes every cpi:capitals item"),
    "cpi:capitals": (CAPITALS, loaders.load_study_json, "CPI study release: country capitals (the first 196 "
                     "records of cpi:world_facts: not independent of it)"),
    "cpi:world_facts_other": (WORLD, loaders.load_study_json, "CPI study release: world facts minus the capitals "
                              "(independent of cpi:capitals)"),
    "cpi:biographies": (BIOS, loaders.load_study_jsonl, "CPI study release: famous biographies"),
}
VERSION = 1


def pins() -> dict[str, Pin]:
    """The pins in force: PINS, with the entries of $CTXREL_CPI_PINS replacing theirs."""
    path = os.environ.get(PINS_VAR)
    if not path:
        return dict(PINS)
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
        extra = {str(f): Pin(str(p["sha256"]).lower(), int(p["records"])) for f, p in data.items()}
    except (OSError, ValueError, TypeError, KeyError, AttributeError) as e:
        raise CtxrelError(f"{PINS_VAR}={path}: expected a JSON object {{file: {{\"sha256\": ..., \"records\": N}}}} "
                          f"({type(e).__name__}: {e})") from None
    bad = [f for f, p in extra.items() if not re.fullmatch(r"[0-9a-f]{64}", p.sha256)]
    if bad:
        raise CtxrelError(f"{PINS_VAR}={path}: the sha256 of {bad[0]} is not 64 hex digits")
    return {**PINS, **extra}


def source() -> str:
    return os.environ.get(SOURCE_VAR) or DEFAULT_SOURCE


def cached_path(file: str, pin: Pin) -> Path:
    return cache_root() / "cpi" / pin.sha256[:16] / file


def _offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in ("1", "true", "yes", "on")


def _fetch(file: str, where: str) -> bytes:
    """The file's bytes from a URL base or a local directory; CtxrelError (one sentence) when unreachable."""
    if not re.match(r"^[a-z][a-z0-9+.-]*://", where):
        path = Path(where).expanduser() / file
        if not path.is_file():
            raise CtxrelError(f"{SOURCE_VAR}={where}: no {file} there; put the study's {file} (from {REPOSITORY} at "
                              f"commit {COMMIT[:12]}) in that directory")
        if path.stat().st_size > _MAX_BYTES:
            raise CtxrelError(f"{path}: {path.stat().st_size} bytes, too large to be the study's {file}")
        return path.read_bytes()
    url = f"{where.rstrip('/')}/{file}"
    try:
        with urllib.request.urlopen(url, timeout=60) as r:  # noqa: S310 -- the user named this benchmark
            data = r.read(_MAX_BYTES + 1)
            expected = r.headers.get("Content-Length")
    except http.client.IncompleteRead as e:
        raise CtxrelError(f"{url}: the download stopped after {len(e.partial)} bytes (partial); nothing was cached, "
                          "run the command again") from None
    except (urllib.error.URLError, http.client.HTTPException, OSError, ValueError) as e:
        raise CtxrelError(f"could not download {url} ({getattr(e, 'reason', e)}); download it yourself and put it at "
                          f"{cached_path(file, pins()[file])}, or set {SOURCE_VAR} to a directory holding it") from None
    if expected is not None and expected.isdigit() and int(expected) != len(data):
        raise CtxrelError(f"{url}: the download stopped after {len(data)} of {expected} bytes (partial); nothing was "
                          "cached, run the command again")
    return data


def fetch(file: str) -> Path:
    """The verified local copy of one released file: from the cache, else fetched, checked and cached."""
    pin = pins()[file]
    target = cached_path(file, pin)
    if target.is_file():
        digest = hashlib.sha256(target.read_bytes()).hexdigest()
        if digest != pin.sha256:  # a cached file changed after it was verified
            raise CtxrelError(f"{target}: sha256 {digest[:16]}... differs from the pinned {pin.sha256[:16]}...; delete "
                              "the file and rerun to fetch it again")
        return target
    where = source()
    if _offline() and re.match(r"^[a-z][a-z0-9+.-]*://", where):
        raise CtxrelError(f"the study's {file} is not in the ctxrel cache and HF_HUB_OFFLINE is set, so it is not "
                          f"downloaded: fetch {where.rstrip('/')}/{file} (sha256 {pin.sha256}) and put it at {target}, "
                          f"or set {SOURCE_VAR} to a directory holding it")
    data = _fetch(file, where)
    digest = hashlib.sha256(data).hexdigest()
    if digest != pin.sha256:
        raise CtxrelError(f"{file} from {where}: sha256 {digest[:16]}... ({len(data)} bytes) is not the pinned "
                          f"{pin.sha256[:16]}... (a partial or changed file); nothing was cached")
    atomic_write_bytes(target, data)  # a temporary file renamed into place: never a half-written copy
    return target


def _row_index(item) -> int:
    """The 0-based row of an item of a JSON-list file (its source is `path:[k]`, k 1-based)."""
    m = re.search(r":\[(\d+)\]$", item.source)
    return int(m.group(1)) - 1 if m else -1


def load(name: str, *, skip_invalid: bool = False) -> tuple[loaders.LoadResult, Path]:
    """`--benchmark cpi:NAME`: the verified file loaded with its schema -> (its items and skipped rows, the file)."""
    if name not in NAMES:
        raise CtxrelError(f"unknown benchmark {name!r}; the study's files are {', '.join(NAMES)}")
    file, loader, _ = NAMES[name]
    table = pins()
    path = fetch(file)
    result = loader(path, name=name, skip_invalid=skip_invalid)
    n_rows = len(result.items) + len(result.skipped)
    if n_rows != table[file].records:
        raise CtxrelError(f"{path}: {n_rows} records, not the pinned {table[file].records}")
    items, skipped = result.items, result.skipped
    if name == "cpi:world_facts_other":  # world facts minus the capitals file, which must be its prefix
        n = table[CAPITALS].records
        capitals = json.loads(fetch(CAPITALS).read_text(encoding="utf-8"))
        world = json.loads(path.read_text(encoding="utf-8"))
        if world[:n] != capitals:
            raise CtxrelError(f"{path}: its first {n} records are not the capitals file {CAPITALS}; "
                              "cpi:world_facts_other is undefined for these files")
        items = [it for it in items if _row_index(it) >= n]
        skipped = [s for s in skipped if int(re.search(r":\[(\d+)\]", s[0]).group(1)) > n]
    return loaders.LoadResult(items, skipped), path


def overlap_warning(names: list[str]) -> str | None:
    """A warning when a run asks for the capitals file and the world facts that contain it."""
    given = set(names)
    if "cpi:capitals" in given and "cpi:world_facts" in given:
        return ("ctxrel: warning: cpi:capitals is the first 196 records of cpi:world_facts: their results are not "
                "independent; compare cpi:capitals with cpi:world_facts_other instead")
    return None


_warned: set[str] = set()


def warn_overlap(names: list[str]) -> None:
    """Print `overlap_warning` once per process (a study evaluates every checkpoint with the same names)."""
    text = overlap_warning(names)
    if text and text not in _warned:
        _warned.add(text)
        print(text, file=sys.stderr, flush=True)


def describe() -> list[dict[str, str]]:
    table = pins()
    rows = []
    for name, (file, _, text) in NAMES.items():
        where = cached_path(file, table[file])
        status = str(where) if where.is_file() else f"fetched on first use from {source()} (sha256-pinned)"
        rows.append(dict(name=name, version=str(VERSION), data=status, description=text))
    return rows
