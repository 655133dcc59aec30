"""Run directory: crash remnants are never read as data; metrics survive and are readable by pandas."""

import json

import pandas as pd
import pytest

from ctxrel.errors import CtxrelError, InputError
from ctxrel.results import RunDir, append_records, read_records


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
