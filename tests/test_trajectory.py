"""The trajectory table and plot of a study, from synthetic metric rows written through the run directory."""

from __future__ import annotations

import random
import struct

import pytest

from ctxrel.core.errors import CtxrelError
from ctxrel.report import format_trajectory, plot_trajectory, trajectory_rows
from ctxrel.rundir.files import RunDir

STEPS = [0, 10, 20, 30, 40]
CF = [0.53, 0.66, 0.712, 0.68, 0.633]  # rises, peaks at step 20, falls
PAR = [0.40, 0.30, 0.25, 0.28, 0.31]
CF_KNOWN = [0.50, 0.60, 0.70, 0.65, 0.60]
MC = [0.60, 0.62, 0.61, 0.65, 0.64]  # likelihood mode: peak at step 30
IDACC = [0.30, 0.33, 0.35, 0.36, 0.37]


def row(step, benchmark, metric, value, subset="all", n=40, ci=0.05, checkpoint=None):
    return dict(checkpoint=checkpoint or f"step-{step:06d}", step=step,
                epoch=None if step is None else step / 20, tokens=None if step is None else step * 1000,
                benchmark=benchmark, subset=subset, metric=metric, value=value, n=n,
                ci_low=None if ci is None else value - ci, ci_high=None if ci is None else value + ci)


def study_rows() -> list[dict]:
    rows = []
    for i, s in enumerate(STEPS):
        rows += [row(s, "cf_capitals", "cf_acc", CF[i]), row(s, "cf_capitals", "par_acc", PAR[i]),
                 row(s, "cf_capitals", "cf_acc", CF_KNOWN[i], subset="known", n=30),
                 row(s, "cf_capitals", "n_items", 40, ci=None),
                 row(s, "memotrap", "m_c", MC[i], n=25), row(s, "memotrap", "ll_context", 0.5, n=25),
                 row(s, "id_accuracy", "id_accuracy", IDACC[i], n=3), row(s, "mmlu", "acc", 0.25, n=100)]
    # A base model scored on its own: no step, not part of the trajectory (0.99 would be the peak if it were).
    rows += [row(None, "cf_capitals", "cf_acc", 0.99, checkpoint="model"),
             row(None, "memotrap", "m_c", 0.99, checkpoint="model"),
             row(None, "id_accuracy", "id_accuracy", 0.99, n=3, checkpoint="model")]
    random.Random(0).shuffle(rows)
    return rows


@pytest.fixture
def study(tmp_path):
    run = RunDir(tmp_path / "study")
    run.write_metrics(study_rows())
    return run.path


def test_trajectory_rows_order_values_and_ignored_rows():
    traj = trajectory_rows(study_rows())
    assert list(traj) == ["cf_capitals", "memotrap", "id_accuracy"]  # no mmlu (acc is not a trajectory metric)
    cap = traj["cf_capitals"]
    assert [e["step"] for e in cap] == STEPS
    assert [e["cf_acc"][0] for e in cap] == CF
    assert [e["par_acc"][0] for e in cap] == PAR
    assert cap[2]["cf_acc"] == pytest.approx((0.712, 0.662, 0.762))
    assert (cap[2]["epoch"], cap[2]["tokens"], cap[2]["n"]) == (1.0, 20000, 40)
    assert "m_c" not in cap[0]
    mt = traj["memotrap"]
    assert [e["m_c"][0] for e in mt] == MC and "cf_acc" not in mt[0] and mt[0]["n"] == 25
    assert [e["id_accuracy"][0] for e in traj["id_accuracy"]] == IDACC
    assert all(e["step"] is not None for b in traj.values() for e in b)
    known = trajectory_rows(study_rows(), subset="known")
    assert list(known) == ["cf_capitals"]
    assert [e["cf_acc"][0] for e in known["cf_capitals"]] == CF_KNOWN and known["cf_capitals"][0]["n"] == 30


def test_trajectory_rows_survive_the_run_directory(study):
    assert trajectory_rows(RunDir(study).metrics()) == trajectory_rows(study_rows())


def test_missing_metric_at_a_step_is_none_and_skipped():
    rows = [row(0, "b", "cf_acc", 0.5), row(0, "b", "par_acc", 0.2), row(5, "b", "cf_acc", 0.4),
            row(9, "b", "cf_acc", None, ci=None)]  # NaN is stored as NULL by SQLite
    entries = trajectory_rows(rows)["b"]
    assert entries[1]["par_acc"] is None and entries[1]["cf_acc"][0] == 0.4
    text = format_trajectory(rows)
    assert "peak cf-acc 0.500 at step 0; last 0.400 (-0.100) at step 5" in text
    assert text.splitlines()[-2].split()[-2:] == ["-", "-"]  # step 9: neither value


def test_format_trajectory_peak_and_drop():
    text = format_trajectory(study_rows())
    assert "peak cf-acc 0.712 at step 20; last 0.633 (-0.079) at step 40" in text
    assert "peak M_C 0.650 at step 30; last 0.640 (-0.010) at step 40" in text
    assert "peak ID acc 0.370 at step 40; last 0.370 (+0.000) = the peak" in text
    assert "0.990" not in text  # the step-less `model` checkpoint is ignored
    block = text.split("\n\n")[0].splitlines()
    assert block[0].startswith("cf_capitals") and "n=40" in block[0]
    assert block[2].split()[:4] == ["0", "0.00", "0.530", "[0.480,"]
    assert [line.split()[0] for line in block[2:7]] == [str(s) for s in STEPS]
    assert "significan" not in text
    known = format_trajectory(study_rows(), subset="known")
    assert "peak cf-acc 0.700 at step 20; last 0.600 (-0.100)" in known and "memotrap" not in known


def png_size(path) -> tuple[int, int]:
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and data[12:16] == b"IHDR"
    return struct.unpack(">II", data[16:24])


def test_plot_trajectory_default_and_custom_path(study, tmp_path):
    pytest.importorskip("matplotlib")
    path = plot_trajectory(study, epoch_boundaries=[20, 40])
    assert path == study / "report" / "trajectory.png"
    assert path.stat().st_size > 10_000
    assert png_size(path) == (3 * 550, 396)  # three panels in a row: two benchmarks + ID accuracy, 110 dpi
    assert [p.name for p in path.parent.iterdir()] == ["trajectory.png"]  # no temporary file left behind

    custom = plot_trajectory(study, out=tmp_path / "figs" / "new" / "t.png", subset="known")
    assert custom == tmp_path / "figs" / "new" / "t.png"
    assert png_size(custom) == (2 * 550, 396)  # only cf_capitals has a known subset, plus ID accuracy


def test_plot_trajectory_refuses_a_study_without_trajectory(tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(CtxrelError, match="empty.*no trajectory"):
        plot_trajectory(empty)
    missing = tmp_path / "missing"
    with pytest.raises(CtxrelError, match="missing: no such run directory"):
        plot_trajectory(missing)
    assert not missing.exists()
    base_only = RunDir(tmp_path / "base")
    base_only.write_metrics([row(None, "cf_capitals", "cf_acc", 0.5, checkpoint="model")])
    with pytest.raises(CtxrelError, match="no trajectory"):
        plot_trajectory(base_only.path)
    assert not (base_only.path / "report").exists()
