"""The fact tables ctxrel ships in `benchmarks/facts/` (CSV, written for ctxrel by hand): one reader for all of
them, so every built-in benchmark checks headers and row shapes the same way."""

from __future__ import annotations

import csv
import io
from importlib.resources import files

from ctxrel.core.errors import InputError


def fact_rows(file_name: str, header: list[str]):
    """(path shown in errors, line, cells) for every non-blank row of a CSV shipped in `benchmarks/facts/`,
    after checking the header and each row's column count."""
    path = f"ctxrel/benchmarks/facts/{file_name}"
    text = (files("ctxrel.benchmarks") / "facts" / file_name).read_text(encoding="utf-8")
    reader = csv.reader(io.StringIO(text))
    if (found := next(reader, None)) != header:
        raise InputError(f"header must be {','.join(header)}, found {found}", path=path, line=1)
    for row in reader:
        line = reader.line_num
        if not any(cell.strip() for cell in row):
            continue
        if len(row) != len(header):
            raise InputError(f"expected {len(header)} columns, found {len(row)}", path=path, line=line)
        yield path, line, row
