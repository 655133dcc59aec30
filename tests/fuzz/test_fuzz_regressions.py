"""Every failing example the fuzz suite found, kept as a plain test (docs/robustness.md lists the bugs)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from ctxrel.config.settings import DataConfig, StudyConfig, load_config
from ctxrel.core.errors import CtxrelError
from ctxrel.train.data import load_examples


def _refused(fn, *names) -> str:
    with pytest.raises(CtxrelError) as e:
        fn()
    text = str(e.value)
    assert "\n" not in text and all(str(n) in text for n in names), text
    return text


@pytest.mark.parametrize("records", [[1, 2], [None], [[1]]])
def test_data_file_of_non_objects_is_refused_naming_the_record(tmp_path, records):
    """was: TypeError "argument of type 'int' is not iterable" from the format sniffer."""
    path = tmp_path / "d.json"
    path.write_text(json.dumps(records))
    _refused(lambda: load_examples(DataConfig(source=str(path))), path, "expected a JSON object")


def test_data_file_of_strings_is_refused_not_sniffed_letter_by_letter(tmp_path):
    """was: "cannot tell the format of a record with keys ['e', 't', 't', 'x']" (a string's letters as keys)."""
    path = tmp_path / "d.jsonl"
    path.write_text('"text"\n')
    _refused(lambda: load_examples(DataConfig(source=str(path))), f"{path}:1", "a string")


def test_unknown_record_format_names_file_and_line(tmp_path):
    """was: the sniffer's refusal named neither the file nor the record."""
    path = tmp_path / "d.jsonl"
    path.write_text('{"hnstruction": "Name a city.", "input": "", "output": "Lyon"}\n')
    _refused(lambda: load_examples(DataConfig(source=str(path))), f"{path}:1", "hnstruction")


@pytest.mark.parametrize("text", ["1: 2\nb: 3\n", "train:\n  1: 2\n", "~: 1\ntrue: 2\n"])
def test_config_with_non_string_keys_is_refused_in_one_sentence(tmp_path, text):
    """was: TypeError from sorting int/str (or None/bool) keys, or from "section." + 1."""
    path = tmp_path / "c.yaml"
    path.write_text(text)
    _refused(lambda: load_config(StudyConfig, path), "is not a name", "valid keys")


def _study(tmp_path: Path) -> Path:
    import sys

    sys.path.insert(0, str(Path(__file__).parent))
    from test_fuzz_rundir import make_study

    return make_study(tmp_path / "run")


def test_emptied_metrics_table_is_refused_and_not_rewritten(tmp_path):
    """was: `ctxrel flips` / `report` on a run whose metrics.sqlite is an empty file created a fresh table in it
    (a reader writing into the run directory), then said "no metrics"."""
    from ctxrel.analysis.rundata import load_run

    run = _study(tmp_path)
    (run / "metrics.sqlite").write_bytes(b"")
    _refused(lambda: load_run(run), "metrics.sqlite", "no metrics table")
    assert (run / "metrics.sqlite").read_bytes() == b""


def test_null_in_a_metric_row_is_refused(tmp_path):
    """was: AttributeError "'NoneType' object has no attribute 'replace'" when damage left a NULL benchmark."""
    import sqlite3

    from ctxrel.analysis.rundata import load_run

    run = _study(tmp_path)
    con = sqlite3.connect(run / "metrics.sqlite")
    with con:
        con.execute("PRAGMA ignore_check_constraints = 1")
        con.execute("UPDATE metrics SET step = 'x' WHERE rowid = 1")  # what a flipped byte can leave
    con.close()
    _refused(lambda: load_run(run), "metrics.sqlite", "damaged metrics database")


def test_unknown_key_with_a_line_break_is_one_line(tmp_path):
    """was: 'unknown config key(s) \\n; valid keys: ...' -- an error of two lines."""
    path = tmp_path / "c.yaml"
    path.write_text('"\\n": 1\n')
    text = _refused(lambda: load_config(StudyConfig, path), "unknown config key", "'\\n'")
    assert "\n" not in text


def test_memotrap_row_without_a_prompt_is_refused(tmp_path):
    """was: a MemoTrap row with an empty (or whitespace) prompt loaded as an item with nothing to ask."""
    from ctxrel.benchmarks.loaders import load_memotrap

    path = tmp_path / "1-proverb-ending.csv"
    path.write_text('prompt,classes,answer_index\n" ","[\' heavy.\', \' light.\']",0\n')
    _refused(lambda: load_memotrap(path, name="m"), f"{path}:2", "empty context", "[prompt]")


@pytest.mark.parametrize("damage", [("contains_parametric", None), ("contains_context", "true"), ("outcome", "ctx")])
def test_record_that_lost_a_field_is_refused(tmp_path, damage):
    """was: KeyError 'contains_parametric' from the analysis when damage renamed a key but kept the JSON valid."""
    from ctxrel.analysis.rundata import load_run

    run = _study(tmp_path)
    f = run / "evals" / "step-000000" / "cf_fz.jsonl"
    lines = f.read_text().splitlines()
    rec = json.loads(lines[2])
    key, value = damage
    if value is None:
        rec["contains_paramXtric"] = rec.pop(key)
    else:
        rec[key] = value
    lines[2] = json.dumps(rec)
    f.write_text("\n".join(lines) + "\n")
    _refused(lambda: load_run(run), str(f), "record 3", repr(key))
