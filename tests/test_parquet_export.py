"""`ctxrel export parquet`: the per-item table as Parquet with a dataset card, read back by pandas and datasets."""

from __future__ import annotations

import pytest

from ctxrel.cli import main

pytest.importorskip("pyarrow", reason="the Parquet export needs pyarrow (extra `export`)")


def test_export_reads_back_with_pandas_and_datasets(toy_run, tmp_path, capsys, monkeypatch):
    import pandas as pd

    import ctxrel

    out = tmp_path / "ds"
    assert main(["export", "parquet", str(toy_run), "--out", str(out)]) == 0
    assert "wrote 60 item rows" in capsys.readouterr().out
    items = pd.read_parquet(out / "data" / "items.parquet")
    want = ctxrel.load(toy_run).items
    assert len(items) == len(want) == 60 and "run" not in items.columns and "prompt" not in items.columns
    assert items.contains_context.tolist() == want.contains_context.tolist()
    assert items.groupby("step").contains_context.mean().round(2).to_dict() == {0: 0.25, 8: 0.9, 16: 0.3}
    metrics = pd.read_parquet(out / "data" / "metrics.parquet")
    assert len(metrics) == len(ctxrel.load(toy_run).metrics)

    datasets = pytest.importorskip("datasets", reason="datasets (extra `train`) reads the export back")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    ds = datasets.load_dataset("parquet", data_files=str(out / "data" / "items.parquet"),
                               cache_dir=str(tmp_path / "hf-cache"))["train"]
    assert ds.num_rows == 60 and ds[0]["id"] == items.iloc[0]["id"] and ds[0]["output"] == items.iloc[0]["output"]

    card = (out / "README.md").read_text()
    head = card.split("---")[1]
    import yaml

    meta = yaml.safe_load(head)
    assert meta["configs"][0]["data_files"] == "data/items.parquet" and meta["configs"][0]["default"] is True
    assert "`contains_context`" in card and "60 item rows" in card
    # a second export into the same directory is allowed (ctxrel wrote it); it reads back the same
    assert main(["export", "parquet", str(toy_run), "--out", str(out)]) == 0
    assert len(pd.read_parquet(out / "data" / "items.parquet")) == 60


def test_export_never_writes_into_a_foreign_directory(toy_run, tmp_path, capsys):
    out = tmp_path / "mine"
    out.mkdir()
    (out / "README.md").write_text("my own notes\n")
    assert main(["export", "parquet", str(toy_run), "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert "was not made by ctxrel" in err and err.count("\n") == 1
    assert (out / "README.md").read_text() == "my own notes\n" and not (out / "data").exists()


def test_push_offline_is_refused_in_one_sentence(toy_run, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    out = tmp_path / "ds"
    assert main(["export", "parquet", str(toy_run), "--out", str(out), "--push", "me/results"]) == 2
    err = capsys.readouterr().err
    assert "HF_HUB_OFFLINE" in err and err.count("\n") == 1
    assert not out.exists()  # refused before anything is written


def test_export_of_a_directory_that_is_no_run(tmp_path, capsys):
    assert main(["export", "parquet", str(tmp_path / "nope"), "--out", str(tmp_path / "ds")]) == 2
    assert "no such run directory" in capsys.readouterr().err
