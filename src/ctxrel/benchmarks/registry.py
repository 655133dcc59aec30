"""Named, versioned benchmarks, so `--benchmark name`, `--benchmark name=path` and `--benchmark path` all work.

A registered file benchmark knows its format and where its data usually sits under `$CTXREL_DATA` (a folder laid
out like the project's shared data: `memotrap/`, `nq_swap/`, ...). Built-ins are generated from ctxrel's own
fact tables and need no file. Bump a version whenever the items a name produces change, so results stay
comparable by (name, version).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from ctxrel.benchmarks import cpi, loaders
from ctxrel.benchmarks.schema import ConflictItem, check_scorable
from ctxrel.core.errors import CtxrelError, InputError


@dataclass(frozen=True)
class BenchmarkSpec:
    name: str
    version: int
    description: str
    loader: Callable | None = None  # file benchmarks: loaders.load_* (path, *, name, skip_invalid)
    builder: Callable[[], list[ConflictItem]] | None = None  # built-ins
    data: tuple[str, ...] = ()  # candidate paths under $CTXREL_DATA


@dataclass
class LoadedBenchmark:
    name: str
    version: int
    source: str
    items: list[ConflictItem]
    skipped: list[tuple[str, str]] = field(default_factory=list)


def _builtin(name: str):
    from ctxrel.benchmarks import builtin

    return builtin.BUILTINS[name]


REGISTRY: dict[str, BenchmarkSpec] = {s.name: s for s in [
    BenchmarkSpec("cf_capitals", 1, "built-in: counterfactual capital cities, 3 context templates placing the "
                  "answer first/middle/last (ctxrel's own country table)",
                  builder=lambda: _builtin("cf_capitals")()),
    BenchmarkSpec("cf_capitals_moved", 1, "built-in: cf_capitals with contexts that also name the real capital as "
                  "the former one, as in the CPI study's capitals file", builder=lambda: _builtin("cf_capitals_moved")()),
    BenchmarkSpec("biographies", 1, "built-in: who-did-it questions on 45 short biographies (ctxrel's own), the "
                  "person swapped for 3 substitutes each by the leak-checked substitution engine",
                  builder=lambda: _builtin("biographies")()),
    BenchmarkSpec("memotrap", 1, "MemoTrap (Liu & Liu): instructions that contradict a memorised ending "
                  "(the 4 CSVs, or the Inverse Scaling Prize JSONL)", loader=loaders.load_memotrap,
                  data=("memotrap",)),
    BenchmarkSpec("nq_swap", 1, "NQ-Swap (Longpre et al. 2021): Natural Questions with the answer entity "
                  "swapped in the context", loader=loaders.load_nq_swap,
                  data=("nq_swap/nqswap.jsonl.gz", "nq_swap/nqswap.jsonl")),
    BenchmarkSpec("world_facts", 1, "CPI study release: world_facts.json (JSON list, answer/memory_answer)",
                  loader=loaders.load_study_json, data=("cpi/world_facts.json",)),
    BenchmarkSpec("country_capitals", 1, "CPI study release: country_capitals_only.json",
                  loader=loaders.load_study_json, data=("cpi/country_capitals_only.json",)),
    BenchmarkSpec("famous_biographies", 1, "CPI study release: famous_biographies.jsonl "
                  "(answer/parametric_answer)", loader=loaders.load_study_jsonl,
                  data=("cpi/famous_biographies.jsonl",)),
]}


def _form_specs() -> dict[str, BenchmarkSpec]:
    """The context-form family (`ctxrel.benchmarks.forms`), one built-in benchmark per relation and form."""
    from ctxrel.benchmarks import forms

    return {name: BenchmarkSpec(name, forms.FORMS_VERSION, forms.describe(name), builder=builder)
            for name, builder in forms.FORM_BUILDERS.items()}


REGISTRY.update(_form_specs())


def _default_path(spec: BenchmarkSpec) -> Path:
    root = os.environ.get("CTXREL_DATA")
    if root:
        for rel in spec.data:
            if (Path(root) / rel).exists():
                return Path(root) / rel
    where = f"$CTXREL_DATA (= {root})" if root else "$CTXREL_DATA (unset)"
    raise CtxrelError(f"benchmark {spec.name!r} needs its data file: pass --benchmark {spec.name}=PATH, or set "
                      f"CTXREL_DATA to a folder holding {' or '.join(spec.data)}; looked in {where}")


def load_benchmark(arg: str, *, skip_invalid: bool = False) -> LoadedBenchmark:
    """Resolve one `--benchmark` argument: `name`, `name=path`, or a bare file path."""
    name, _, path = arg.partition("=")
    name, path = name.strip(), path.strip()
    if name.startswith(cpi.PREFIX):  # the study's released files, fetched and verified (benchmarks/cpi.py)
        if path:
            raise CtxrelError(f"--benchmark {arg}: {name} takes no path; to read the file from a directory, set "
                              f"{cpi.SOURCE_VAR} to it")
        result, file = cpi.load(name, skip_invalid=skip_invalid)
        return LoadedBenchmark(name, cpi.VERSION, str(file), result.items, result.skipped)
    if not path and name not in REGISTRY and (Path(name).exists() or "/" in name):
        path, name = name, Path(name).name.split(".")[0]
    spec = REGISTRY.get(name)
    if spec is None and not path:
        raise CtxrelError(f"unknown benchmark {name!r}; registered: {', '.join(REGISTRY)} "
                          "(or pass NAME=PATH for your own file)")
    if spec is not None and spec.builder is not None:
        if path:
            raise CtxrelError(f"{name} is built in and takes no path; name your file differently")
        return LoadedBenchmark(name, spec.version, "builtin", spec.builder())
    file = Path(path) if path else _default_path(spec)
    if not file.exists():
        raise CtxrelError(f"--benchmark {arg}: {file} does not exist")
    loader = spec.loader if spec is not None else loaders.load_file
    result = loader(file, name=name, skip_invalid=skip_invalid)
    return LoadedBenchmark(name, spec.version if spec else 0, str(file), result.items, result.skipped)


def require_scorable(bench: LoadedBenchmark, *, skip_invalid: bool = False) -> LoadedBenchmark:
    """The benchmark restricted to items containment can score (generate mode, `schema.check_scorable`): the
    first unscorable item is an error, or with `skip_invalid` every one is skipped and counted with its reason."""
    items, skipped = [], list(bench.skipped)
    for it in bench.items:
        path, _, line = it.source.rpartition(":")
        try:
            check_scorable(it, path=path or it.source, line=int(line) if line.isdigit() else None)
            items.append(it)
        except InputError as e:
            if not skip_invalid:
                raise
            skipped.append((it.source, str(e)))
    if not items:
        raise InputError(f"no scorable items in benchmark {bench.name} ({len(skipped)} invalid rows skipped)",
                         path=bench.source)
    return LoadedBenchmark(bench.name, bench.version, bench.source, items, skipped)


def describe() -> list[dict[str, str]]:
    rows = []
    for s in REGISTRY.values():
        if s.builder is not None:
            status = "built in"
        else:
            try:
                status = str(_default_path(s))
            except CtxrelError:
                status = "needs NAME=PATH or $CTXREL_DATA"
        rows.append(dict(name=s.name, version=str(s.version), data=status, description=s.description))
    return rows + cpi.describe()
