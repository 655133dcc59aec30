"""Faults in the middle of a write (issue 28): a tiny study is stopped at the worst moments -- SIGKILL and SIGTERM
while a checkpoint, its optimizer state, a records chunk, the training log or the metrics table is being written,
a full disk during a checkpoint, a corrupted last line -- and the next run must resume to exactly the metrics,
generations, losses and weights of an uninterrupted run, or refuse in one sentence. Never is half a file read
as data.

The stop is exact, not a race: `CTXREL_FAULT_AT` names a fault point (ctxrel.rundir.interruption) where the child
process writes its position to a file and freezes itself (SIGSTOP) in the middle of that write; the test inspects
the directory at that instant, then kills it.
"""

from __future__ import annotations

import json
import os
import resource
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

pytest.importorskip("torch")
pytestmark = pytest.mark.integration

from ctxrel.cli import main  # noqa: E402
from ctxrel.rundir.files import read_metrics, read_records  # noqa: E402
from ctxrel.train.checkpoints import list_checkpoints  # noqa: E402

ALPACA = [{"instruction": f"Name city number {i}.", "input": "Paris Lyon" if i % 3 else "",
           "output": f"City {i} is Lyon."} for i in range(32)]
SRC = Path(__file__).resolve().parents[1] / "src"


@pytest.fixture(scope="module")
def study(tiny_model_dir, tmp_path_factory):
    """The config of a tiny study (8 steps, checkpoints 0, 1, 4, 8, 6 cf_capitals items each) and its
    uninterrupted run, made once."""
    root = tmp_path_factory.mktemp("faults")
    data = root / "alpaca.json"
    data.write_text(json.dumps(ALPACA))
    cfg = dict(model=dict(name=str(tiny_model_dir), batch_size=8, device="cpu"),
               data=dict(source=str(data), max_length=64),
               train=dict(mode="lora", lora=dict(rank=16, alpha=32, dropout=0.1), lr=1e-2, epochs=1, batch_size=4,
                          tensorboard=False),
               eval=dict(benchmarks=["cf_capitals"], limit=6, max_new_tokens=6, every=4, early=[1]))
    path = root / "study.yaml"
    path.write_text(yaml.safe_dump(cfg))
    ref = root / "ref"
    assert main(["train", str(path), f"out={ref}"]) == 0
    return path, ref


def state(run: Path) -> dict:
    """Everything a resumed run must reproduce: losses by step, generations and metric values by checkpoint,
    the final adapter."""
    from safetensors.torch import load_file

    losses = {r["step"]: r["loss"] for r in read_records(run / "train_log.jsonl")}
    outputs = {d.name: sorted((r["id"], r["output"]) for r in read_records(d / "cf_capitals.jsonl"))
               for d in sorted((run / "evals").iterdir())}
    metrics = sorted((r["checkpoint"], r["subset"], r["metric"], r["value"], r["n"]) for r in read_metrics(run))
    final = load_file(str(run / "checkpoints" / "step-000008" / "adapter_model.safetensors"))
    return dict(losses=losses, outputs=outputs, metrics=metrics, adapter={k: v.tolist() for k, v in final.items()})


def child(cfg: Path, run: Path, fault: str | None, *, limit_bytes: int | None = None) -> subprocess.Popen:
    """`ctxrel train` in a process of its own, as many threads as this one (same arithmetic), stopping itself at
    fault point `fault`; `limit_bytes`: a file-size limit (a full disk) for it and only it."""
    import torch

    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(SRC), os.environ.get("PYTHONPATH", "")]),
               OMP_NUM_THREADS=str(torch.get_num_threads()), CTXREL_FAULT_FILE=str(run.parent / "fault"))
    env.pop("CTXREL_FAULT_AT", None)
    if fault:
        env["CTXREL_FAULT_AT"] = fault

    def limit():
        if limit_bytes is not None:
            signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit fails (EFBIG), as on a full disk
            resource.setrlimit(resource.RLIMIT_FSIZE, (limit_bytes, limit_bytes))

    return subprocess.Popen([sys.executable, "-m", "ctxrel", "train", str(cfg), f"out={run}"], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, preexec_fn=limit)


def wait_for_fault(proc: subprocess.Popen, run: Path) -> str:
    """Block until the child has frozen itself at its fault point; return what it wrote there."""
    flag = run.parent / "fault"
    deadline = time.time() + 300
    while time.time() < deadline:
        if flag.exists() and flag.read_text().endswith("\n") and stopped(proc.pid):
            return flag.read_text()  # frozen for sure: a SIGTERM sent earlier would be eaten by its own SIGSTOP
        if proc.poll() is not None:
            pytest.fail(f"the run ended before its fault point (rc {proc.returncode}): {proc.stderr.read()[-2000:]}")
        time.sleep(0.05)
    proc.kill()
    pytest.fail("the fault point was never reached")


def stopped(pid: int) -> bool:
    """Is the process stopped (state T in /proc/PID/stat)?"""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "T"
    except (OSError, IndexError):
        return False


def kill(proc: subprocess.Popen, how: signal.Signals) -> tuple[int, str]:
    os.kill(proc.pid, how)
    if how != signal.SIGKILL:
        os.kill(proc.pid, signal.SIGCONT)  # the frozen process wakes up with the signal pending
    _, err = proc.communicate(timeout=300)
    return proc.returncode, err


def snapshot(root: Path, skip: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*"))
            if p.is_file() and skip not in p.parents}


def resume_equals_reference(cfg: Path, run: Path, ref: Path) -> None:
    assert main(["train", str(cfg), f"out={run}"]) == 0
    assert state(run) == state(ref)
    assert not list((run / "checkpoints").glob(".tmp-*"))


SIGKILL_CASES = [
    # (fault point, what must hold in the directory while the process is frozen there)
    ("checkpoint.weights@step-000004", "tmp_without_state"),
    ("checkpoint.optimizer@step-000004", "tmp_without_progress"),
    ("records.append@cf_capitals.jsonl#2", "half_a_line"),
    ("records.append@train_log.jsonl#3", "half_a_line"),
    ("metrics.write@step-000004", "uncommitted_rows"),
]


@pytest.mark.parametrize("fault,frozen", SIGKILL_CASES, ids=[c[0] for c in SIGKILL_CASES])
def test_sigkill_mid_write_then_resume_equals_uninterrupted(study, tmp_path, fault, frozen):
    cfg, ref = study
    run = tmp_path / "run"
    proc = child(cfg, run, fault)
    where = wait_for_fault(proc, run)
    if frozen == "tmp_without_state":
        tmp = run / "checkpoints" / ".tmp-step-000004"
        assert (tmp / "adapter_model.safetensors").exists() and not (tmp / "state" / "optimizer.safetensors").exists()
        assert [s for s, _ in list_checkpoints(run)] == [0, 1]  # the half-written one is not a checkpoint
    elif frozen == "tmp_without_progress":
        tmp = run / "checkpoints" / ".tmp-step-000004" / "state"
        assert (tmp / "optimizer.safetensors").exists() and not (tmp / "progress.json").exists()
    elif frozen == "half_a_line":
        name = where.split()[1]
        f = next(run.rglob(name)) if name != "train_log.jsonl" else run / name
        raw = f.read_bytes()
        assert not raw.endswith(b"\n"), "the process should be frozen with half a line on disk"
        assert len(read_records(f)) == raw.count(b"\n")  # the half line is not read
    elif frozen == "uncommitted_rows":
        assert (run / "metrics.sqlite-journal").exists()
    kill(proc, signal.SIGKILL)
    if frozen == "uncommitted_rows":  # the transaction never committed: a reader sees none of its rows
        assert not [r for r in read_metrics(run) if r["checkpoint"] == "step-000004"]
    resume_equals_reference(cfg, run, ref)


@pytest.mark.parametrize("fault", ["checkpoint.weights@step-000004", "records.append@train_log.jsonl#6"])
def test_sigterm_is_a_clean_stop_that_says_how_to_resume(study, tmp_path, fault):
    """SIGTERM while a checkpoint (or a line of the training log) is being written: the write completes, the
    process stops with exit 143 and the command to resume; the next run resumes to the uninterrupted result."""
    cfg, ref = study
    run = tmp_path / "run"
    proc = child(cfg, run, fault)
    wait_for_fault(proc, run)
    code, err = kill(proc, signal.SIGTERM)
    assert code == 143, err
    assert "Traceback" not in err
    said = [line for line in err.splitlines() if "stopped by SIGTERM" in line]
    assert len(said) == 1 and f"Resume with the same command: ctxrel train {cfg} out={run}" in said[0], err
    assert not list((run / "checkpoints").glob(".tmp-*"))
    if fault.startswith("checkpoint"):  # the checkpoint being written was completed, not dropped
        assert [s for s, _ in list_checkpoints(run)] == [0, 1, 4]
        assert (run / "checkpoints" / "step-000004" / "state" / "progress.json").exists()
    assert (run / "train_log.jsonl").read_bytes().endswith(b"\n")
    resume_equals_reference(cfg, run, ref)


def test_full_disk_during_a_checkpoint_refuses_then_resumes(study, tmp_path):
    """A run stopped after checkpoint 1 is resumed with a file-size limit below the size of a checkpoint's
    files (above every other file's): writing checkpoint 4 fails; the run refuses in one sentence, leaves no
    partial checkpoint, keeps checkpoints 0 and 1; the next run, with room again, ends as the uninterrupted one."""
    cfg, ref = study
    run = tmp_path / "run"
    proc = child(cfg, run, "checkpoint.weights@step-000004")
    wait_for_fault(proc, run)
    kill(proc, signal.SIGKILL)
    adapter = (run / "checkpoints" / "step-000001" / "adapter_model.safetensors").stat().st_size
    others = max(f.stat().st_size for f in run.rglob("*") if f.is_file() and "checkpoints" not in f.parts)
    assert others * 2 < adapter, (others, adapter)  # a limit between them fails the checkpoint and nothing else
    proc = child(cfg, run, None, limit_bytes=adapter // 2)
    _, err = proc.communicate(timeout=300)
    assert proc.returncode == 2, err
    assert "Traceback" not in err
    errors = [line for line in err.splitlines() if "ctxrel: error:" in line]  # after a progress bar's \r
    assert len(errors) == 1 and "step-000004" in errors[0] and "File too large" in errors[0], err
    assert [s for s, _ in list_checkpoints(run)] == [0, 1]
    assert not list((run / "checkpoints").glob(".tmp-*")) and not (run / "checkpoints" / "step-000004").exists()
    resume_equals_reference(cfg, run, ref)


def test_corrupted_last_line_and_damaged_checkpoint(study, tmp_path, capsys):
    """A last line without its newline (a crash mid-append) is not data: the finished run reads the same and a
    rerun changes nothing; a complete but broken line is refused naming file and line; a checkpoint whose
    optimizer file was cut short is refused in one sentence, not loaded."""
    cfg, ref = study
    run = tmp_path / "run"
    shutil.copytree(ref, run)
    before = state(run)
    records = run / "evals" / "step-000004" / "cf_capitals.jsonl"
    with open(records, "ab") as f:
        f.write(b'{"id": "cf_capitals/999", "output": "Pa')
    with open(run / "train_log.jsonl", "ab") as f:
        f.write(b'{"step": 9, "loss": 0.')
    assert state(run) == before
    assert main(["train", str(cfg), f"out={run}"]) == 0  # finished: nothing to redo, nothing read from the halves
    assert state(run) == before
    assert main(["report", str(run), "--bootstrap", "50"]) == 0
    capsys.readouterr()
    with open(records, "ab") as f:
        f.write(b'\n{"id": "cf_capitals/999", "output": "Pa\n')  # complete, but broken
    assert main(["flips", str(run)]) == 2
    err = capsys.readouterr().err
    assert f"{records}:7" in err and err.count("error:") == 1, err  # the half line, now ended, is line 7
    # a checkpoint cut short outside ctxrel (ctxrel's own writes leave it complete or absent)
    resume_from = run / "checkpoints" / "step-000008" / "state" / "optimizer.safetensors"
    resume_from.write_bytes(resume_from.read_bytes()[:100])
    (run / "train_summary.json").unlink()
    assert main(["train", str(cfg), f"out={run}"]) == 2
    err = capsys.readouterr().err
    assert "damaged checkpoint" in err and "step-000008" in err and err.count("error:") == 1, err


def test_report_and_flips_read_a_running_study(study, tmp_path, capsys):
    """`ctxrel report` and `ctxrel flips` on a study frozen in the middle of writing checkpoint 4's metric rows
    (its lock held, the SQLite transaction open): both finish at once, say the study is running, cover exactly
    the checkpoints evaluated so far (0 and 1), change none of the study's files and take none of its locks --
    the study, continued, ends exactly as the uninterrupted one."""
    cfg, ref = study
    run = tmp_path / "run"
    proc = child(cfg, run, "metrics.write@step-000004")
    wait_for_fault(proc, run)
    assert (run / "evals" / "step-000004" / "cf_capitals.jsonl").exists()  # records done, metrics not committed
    before = snapshot(run, skip=run / "report")
    t0 = time.time()
    assert main(["report", str(run), "--bootstrap", "50"]) == 0
    out = capsys.readouterr().out
    assert f"live: {run} is being written by pid {proc.pid} (ctxrel study" in out
    assert "2 checkpoint(s) evaluated so far (steps 0, 1)" in out, out
    summary = json.loads((run / "report" / "summary.json").read_text())
    steps = [p["step"] for p in summary["groups"][0]["benchmarks"]["cf_capitals"]["series"]["all"]["cf_acc"]]
    assert steps == [0, 1] and summary["live"]
    assert "snapshot of a running study" in (run / "report" / "index.html").read_text()
    assert main(["flips", str(run), "--from", "start"]) == 0
    out = capsys.readouterr().out
    assert out.startswith(f"live: {run}") and "step-000000 (start) -> step-000001 (final)" in out, out
    assert time.time() - t0 < 120
    assert snapshot(run, skip=run / "report") == before, "reading the running study changed its files"
    os.kill(proc.pid, signal.SIGCONT)  # the study goes on: nothing was locked, nothing taken from it
    _, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, err
    assert state(run) == state(ref)
    assert main(["flips", str(run)]) == 0
    assert "live:" not in capsys.readouterr().out
