"""train.report_to: a tiny study logged to Trackio, TensorBoard and (offline) W&B, read back from each tracker's
own storage; the logged steps are the study's checkpoint steps. Refusals come before any model loads."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

pytest.importorskip("torch")
pytestmark = pytest.mark.integration

from ctxrel.cli import main  # noqa: E402
from ctxrel.rundir.files import RunDir, read_records  # noqa: E402

CHECKPOINTS = [0, 1, 2, 4]


def write_config(tmp_path: Path, model_dir: Path, report_to: list[str]) -> Path:
    cfg = dict(model=dict(name=str(model_dir), batch_size=8, device="cpu"),
               data=dict(mixture=dict(n=64), max_length=64),
               train=dict(mode="lora", lora=dict(rank=4, alpha=8), lr=1e-2, epochs=3, max_steps=4, batch_size=4,
                          report_to=report_to),
               eval=dict(benchmarks=["cf_capitals"], limit=4, max_new_tokens=4, every=2, early=[1]),
               out=str(tmp_path / "run"))
    path = tmp_path / "study.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def run_study(cfg: Path, env: dict[str, str]) -> None:
    r = subprocess.run([sys.executable, "-m", "ctxrel", "train", str(cfg)], env={**os.environ, **env},
                       capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]


def trackio_metric(trackio_dir: Path, run: Path, metric: str) -> list[dict]:
    """(step, value) rows of one metric, read back by trackio's own CLI from its SQLite store."""
    r = subprocess.run([sys.executable, "-m", "trackio.cli", "get", "metric", "--project", "ctxrel", "--run",
                        str(run), "--metric", metric, "--json"], env={**os.environ, "TRACKIO_DIR": str(trackio_dir)},
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr[-2000:]
    return json.loads(r.stdout)["values"]


def cf_rows(run: Path) -> dict[int, float]:
    return {r["step"]: r["value"] for r in RunDir(run).metrics()
            if r["benchmark"] == "cf_capitals" and r["subset"] == "all" and r["metric"] == "cf_acc"}


@pytest.mark.skipif(importlib.util.find_spec("trackio") is None, reason="trackio is not installed (extra `trackio`)")
def test_trackio_and_tensorboard_hold_the_checkpoint_steps(tiny_model_dir, tmp_path):
    cfg = write_config(tmp_path, tiny_model_dir, ["trackio", "tensorboard"])
    store = tmp_path / "trackio-store"
    run_study(cfg, {"TRACKIO_DIR": str(store), "OMP_NUM_THREADS": "1"})
    run = tmp_path / "run"
    expected = cf_rows(run)
    assert sorted(expected) == CHECKPOINTS

    # trackio: one point per checkpoint, at the training step, with the run directory's value
    logged = trackio_metric(store, run, "eval/cf_capitals/all/cf_acc")
    assert [v["step"] for v in logged] == CHECKPOINTS
    assert {v["step"]: v["value"] for v in logged} == pytest.approx(expected)
    loss = trackio_metric(store, run, "train/loss")
    assert [v["step"] for v in loss] == [1, 2, 3, 4]
    assert [v["value"] for v in loss] == pytest.approx([r["loss"] for r in read_records(run / "train_log.jsonl")])
    assert [v["step"] for v in trackio_metric(store, run, "train/tokens_per_s")] == [1, 2, 3, 4]
    assert [v["step"] for v in trackio_metric(store, run, "train/lr")] == [1, 2, 3, 4]
    # the per-item flips table of each checkpoint, from trackio's store
    import sqlite3

    (db,) = store.glob("*.db")
    with sqlite3.connect(db) as con:
        rows = con.execute("SELECT step, metrics FROM metrics ORDER BY step").fetchall()
    tables = {step: json.loads(m)["flips/cf_capitals"] for step, m in rows if "flips/cf_capitals" in json.loads(m)}
    assert sorted(tables) == CHECKPOINTS
    step4 = [r for r in read_records(run / "evals" / "step-000004" / "cf_capitals.jsonl")]
    assert len(tables[4]["_value"]) == len(step4) == 4
    assert {r["id"] for r in tables[4]["_value"]} == {r["id"] for r in step4}
    assert all(r["before"] == "" for r in tables[0]["_value"]) and all(r["before"] for r in tables[4]["_value"])

    # tensorboard: the same steps in the event files
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(run / "tensorboard"))
    acc.Reload()
    events = acc.Scalars("eval/cf_capitals/all/cf_acc")
    assert [e.step for e in events] == CHECKPOINTS
    assert {e.step: e.value for e in events} == pytest.approx(expected, abs=1e-6)
    assert [e.step for e in acc.Scalars("train/loss")] == [1, 2, 3, 4]


def wandb_log_records(path: Path):
    """The records of W&B's offline transaction log (what `wandb sync` uploads): a 7-byte header, then
    LevelDB-style framing in 32 KiB blocks (crc32c 4 bytes, length 2 bytes little-endian, type 1 byte: 1 = full,
    2 = first, 3 = middle, 4 = last part of a record)."""
    data, pos, block, part = path.read_bytes(), 7, 32768, b""
    assert data[:4] == b":W&B"
    while pos + 7 <= len(data):
        if block - pos % block < 7:  # a block's tail too short for a header is padding
            pos += block - pos % block
            continue
        length, kind = int.from_bytes(data[pos + 4:pos + 6], "little"), data[pos + 6]
        part += data[pos + 7:pos + 7 + length]
        pos += 7 + length
        if kind in (1, 4):
            yield part
            part = b""


@pytest.mark.skipif(importlib.util.find_spec("wandb") is None,
                    reason="wandb is not installed (extra `wandb`); W&B is tested offline when it is")
def test_wandb_offline_holds_the_checkpoint_steps(tiny_model_dir, tmp_path):
    cfg = write_config(tmp_path, tiny_model_dir, ["wandb"])
    run_study(cfg, {"WANDB_MODE": "offline", "WANDB_SILENT": "true", "OMP_NUM_THREADS": "1"})
    run = tmp_path / "run"
    expected = cf_rows(run)
    from wandb.proto import wandb_internal_pb2

    (file,) = (run / "wandb").glob("offline-run-*/run-*.wandb")
    history = []
    for data in wandb_log_records(file):
        rec = wandb_internal_pb2.Record()
        rec.ParseFromString(data)
        if rec.WhichOneof("record_type") == "history":
            history.append({i.key or i.nested_key[0]: json.loads(i.value_json) for i in rec.history.item})
    points = {int(h["train/step"]): h["eval/cf_capitals/all/cf_acc"] for h in history
              if "eval/cf_capitals/all/cf_acc" in h}
    assert points == pytest.approx(expected)
    assert sorted(int(h["train/step"]) for h in history if "train/loss" in h) == [1, 2, 3, 4]
    tables = sorted(int(h["train/step"]) for h in history if "flips/cf_capitals" in h)  # W&B tables, one a checkpoint
    assert tables == CHECKPOINTS
    files = [json.loads(f.read_text()) for f in file.parent.glob("files/media/table/flips/cf_capitals_*.table.json")]
    assert len(files) == 4 and all(len(t["data"]) == 4 and "flip" in t["columns"] for t in files)


def test_unknown_and_missing_trackers_are_refused_before_the_model(tmp_path, capsys, monkeypatch):
    out = tmp_path / "run"
    args = ["train", "quickstart", "model.name=/nonexistent/model", f"out={out}"]
    assert main(args + ["train.report_to=[mlflow]"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "train.report_to" in err and "'mlflow' is not one of" in err
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "wandb" else real(name, *a))
    assert main(args + ["train.report_to=[tensorboard,wandb]"]) == 2
    err = capsys.readouterr().err.strip()
    assert err == ("ctxrel: error: config key train.report_to names wandb, which is not installed: pip install "
                   "'ctxrel[wandb]' (or leave wandb out of train.report_to)")
    assert not out.exists()  # refused before the run directory (and the model) were touched


def test_help_imports_no_tracker():
    code = ("import sys, contextlib, io\nfrom ctxrel.cli import main\n"
            "for argv in (['--help'], ['study', '--help'], ['train', '--help']):\n"
            "    with contextlib.redirect_stdout(io.StringIO()), contextlib.suppress(SystemExit):\n"
            "        main(argv)\n"
            "print(sorted(m for m in ('trackio', 'wandb', 'tensorboard', 'torch') if m in sys.modules))")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "[]"
