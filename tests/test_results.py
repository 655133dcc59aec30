"""Run directory: crash remnants are never read as data; metrics survive and are readable by pandas."""

import json

import pandas as pd
import pytest

from ctxrel.core.errors import CtxrelError, InputError
from ctxrel.rundir.files import RunDir, append_records, read_records


def test_partial_last_line_is_ignored_then_cut(tmp_path):
    p = tmp_path / "r.jsonl"
    append_records(p, [{"id": "a"}, {"id": "b"}])
    with open(p, "ab") as f:  # what a kill -9 mid-write leaves
        f.write(b'{"id": "c", "outp')
    assert [r["id"] for r in read_records(p)] == ["a", "b"]
    append_records(p, [{"id": "d"}])
    assert [r["id"] for r in read_records(p)] == ["a", "b", "d"]
    assert p.read_text().count("\n") == 3


def test_corrupt_complete_line_names_file_and_line(tmp_path):
    p = tmp_path / "r.jsonl"
    p.write_text('{"id": "a"}\nnot json\n')
    with pytest.raises(InputError, match=r"r\.jsonl:2"):
        read_records(p)


def test_metrics_upsert_and_csv(tmp_path):
    run = RunDir(tmp_path / "run")
    row = dict(checkpoint="model", step=None, benchmark="b", subset="all", metric="cf_acc", value=0.5, n=4,
               ci_low=0.1, ci_high=0.9)
    run.write_metrics([row])
    run.write_metrics([dict(row, value=0.75)])  # same key: replaced, not duplicated
    df = pd.read_csv(tmp_path / "run" / "metrics.csv")
    assert len(df) == 1 and df.loc[0, "value"] == 0.75
    assert {"checkpoint", "step", "benchmark", "subset", "metric", "value", "n", "ci_low", "ci_high"} <= set(df)


def test_settings_guard(tmp_path):
    run = RunDir(tmp_path / "run")
    run.check_settings("model", "b", {"temperature": 0.0})
    run.check_settings("model", "b", {"temperature": 0.0})  # same settings: fine
    with pytest.raises(CtxrelError, match="temperature: 0.0 -> 0.7"):
        run.check_settings("model", "b", {"temperature": 0.7})


def test_out_must_be_a_directory(tmp_path):
    f = tmp_path / "file"
    f.write_text("x")
    with pytest.raises(CtxrelError, match="not a directory"):
        RunDir(f)


def test_config_is_written(tmp_path):
    run = RunDir(tmp_path / "run")
    run.write_config({"model": {"name": "m"}})
    assert "name: m" in (tmp_path / "run" / "config.yaml").read_text()
    assert json.loads(json.dumps(read_records(tmp_path / "none.jsonl"))) == []


def test_a_metrics_table_written_before_the_stage_column_is_read_read_only(tmp_path):
    """Run directories written before `stage` existed keep being read (report, flips, the Python API), without
    the reader adding the column: the file is left exactly as it was."""
    import sqlite3

    from ctxrel.rundir.files import ADDED_COLUMNS, METRIC_COLUMNS, METRICS_DB, read_metrics

    old = [c for c in METRIC_COLUMNS if c not in ADDED_COLUMNS]
    db = tmp_path / METRICS_DB
    con = sqlite3.connect(db)
    con.execute(f"CREATE TABLE metrics ({', '.join(old)})")
    row = dict(checkpoint="step-000008", step=8, benchmark="cf_capitals", subset="all", metric="cf_acc", value=0.5)
    con.execute(f"INSERT INTO metrics ({', '.join(row)}) VALUES ({', '.join('?' * len(row))})", list(row.values()))
    con.commit()
    con.close()
    before = db.read_bytes()
    (got,) = read_metrics(tmp_path)
    assert got["value"] == 0.5 and got["step"] == 8 and got["stage"] is None
    assert db.read_bytes() == before
