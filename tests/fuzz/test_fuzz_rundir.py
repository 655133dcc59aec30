"""Fuzzing run directories (results.py, analysis/rundata.py, `ctxrel report`, `ctxrel flips`): a small study
directory -- marker, config.yaml, train_summary.json, metrics.sqlite / .csv, per-item records of three
checkpoints -- with one file cut short or damaged.

Cut short (any file, any byte): the analysis either refuses in one sentence or gives exactly the numbers of the
intact directory -- a truncated records file or table is never read as a smaller, different study (silent wrong).
Damaged (flipped, spliced bytes): one sentence or a result, never a traceback. `ctxrel flips` and `ctxrel report`
through the CLI: exit 0 or exit 2 with one `ctxrel: error:` line, nothing written outside the run directory.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import shutil
import tempfile
from functools import lru_cache
from pathlib import Path

import pytest

pytest.importorskip("hypothesis")
from hypothesis import example, given, settings, strategies as st  # noqa: E402

from fuzzkit import mutated, one_sentence, outcome, snapshot  # noqa: E402

from ctxrel.cli import main  # noqa: E402
from ctxrel.core.metrics import conflict_metrics  # noqa: E402
from ctxrel.rundir.files import RunDir, append_records  # noqa: E402

STEPS = (0, 4, 8)
CF = (0.4, 0.8, 0.5)
N = 12
BENCH = "cf_fz"


def make_study(path: Path) -> Path:
    """A study run directory as `ctxrel study` leaves it (no weights: the analysis never reads them)."""
    from ctxrel.rundir import marker as run_marker

    run_marker.claim(path, "study", verb="study")
    run_marker.release(path)
    run = RunDir(path)
    run.write_config({"model": {"name": "hand-built"}, "train": {"lr": 1e-4}, "out": str(path)})
    for step, p in zip(STEPS, CF):
        ckpt = f"step-{step:06d}"
        recs = []
        for k in range(N):
            ctx = (k * 7 + step) % N < p * N
            out = "context" if ctx else ("parametric" if k % 3 else "neither")
            recs.append(dict(id=f"q{k}", sample=0, category=("a", "b")[k % 2], question=f"Q{k}?",
                             context_answer=f"Ctx{k}", parametric_answer=f"Par{k}", output=f"{out} {k}",
                             contains_context=ctx, contains_parametric=out == "parametric", outcome=out,
                             first_mention=None, known=k % 4 != 0))
        append_records(run.eval_file(ckpt, BENCH), recs)
        meta = dict(checkpoint=ckpt, step=step, epoch=step / 8, benchmark=BENCH)
        rows = [dict(meta, subset="all", **m) for m in conflict_metrics(recs, n_boot=20)]
        rows += [dict(meta, subset="known", **m) for m in conflict_metrics([r for r in recs if r["known"]],
                                                                           n_boot=20)]
        run.write_metrics(rows)
    (path / "train_summary.json").write_text(json.dumps({"epoch_boundaries": [8]}))
    return path


@lru_cache(maxsize=1)
def pristine() -> Path:
    root = Path(tempfile.mkdtemp(prefix="ctxrel-fuzz-run-"))
    return make_study(root / "run")


def analyse(path: Path):
    """What `ctxrel report` computes (without the plots) and what `ctxrel flips` computes."""
    from ctxrel.analysis.inversion import anchors
    from ctxrel.analysis.rundata import load_run, trajectory_points
    from ctxrel.analysis.summary import run_flips, summarise

    run = load_run(path)
    summary = summarise([run], "fz", n_boot=30)
    pts = trajectory_points([run], BENCH, "cf_acc", "all")
    flips = run_flips(run, BENCH, anchors(pts, 0), "peak", "final", "all")
    return json.dumps(summary["benchmarks"], sort_keys=True, default=str), json.dumps(flips, sort_keys=True,
                                                                                      default=str)


@lru_cache(maxsize=1)
def baseline():
    return analyse(pristine())


def files() -> list[str]:
    return sorted(str(p.relative_to(pristine())) for p in pristine().rglob("*") if p.is_file())


@contextlib.contextmanager
def copy_of_run():
    with tempfile.TemporaryDirectory() as d:
        run = Path(d) / "run"
        shutil.copytree(pristine(), run)
        yield run


@given(name=st.sampled_from(files()), data=st.data())
@example(name=f"evals/step-000008/{BENCH}.jsonl", data=None)
def test_truncated_file_is_refused_or_changes_nothing(name, data):
    with copy_of_run() as run:
        f = run / name
        raw = f.read_bytes()
        cut = data.draw(st.integers(0, len(raw))) if data is not None else len(raw) - 1
        f.write_bytes(raw[:cut])
        result, err = outcome(lambda: analyse(run))
        if err is not None:
            one_sentence(err, str(run))
            return
        assert result == baseline(), f"{name} cut at byte {cut} of {len(raw)} was read as a different study"


@given(name=st.sampled_from(files()), data=st.data())
def test_damaged_file_is_refused_in_one_sentence(name, data):
    with copy_of_run() as run:
        f = run / name
        f.write_bytes(data.draw(mutated(f.read_bytes())))
        result, err = outcome(lambda: analyse(run))
        if err is not None:
            one_sentence(err, str(run))


def _cli(argv: list[str]) -> tuple[int, str]:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            code = main(argv)
        except SystemExit as e:  # argparse's usage errors
            code = e.code
    text = out.getvalue() + err.getvalue()
    assert "Traceback" not in text, text
    return code, text


def check_cli(code: int, text: str) -> None:
    assert code in (0, 2), (code, text)
    if code == 2:
        errors = [line for line in text.splitlines() if "error:" in line]
        assert len(errors) == 1, text


FLIP_FLAGS = st.lists(st.sampled_from(["--from", "--to", "--benchmark", "--subset", "--smooth", "--show"]).flatmap(
    lambda f: st.tuples(st.just(f), st.sampled_from(["peak", "final", "start", "trough", "4", "step-000004", "99",
                                                    "-1", "all", "known", BENCH, "x", "0", "3", ""]))),
    max_size=3).map(lambda pairs: [x for p in pairs for x in p])


@given(name=st.sampled_from(files() + [None]), data=st.data(), flags=FLIP_FLAGS)
def test_flips_cli_on_damaged_runs(name, data, flags):
    with copy_of_run() as run:
        if name is not None:
            f = run / name
            f.write_bytes(data.draw(mutated(f.read_bytes())))
        outside = snapshot(run.parent, skip=run)
        before = snapshot(run)
        check_cli(*_cli(["flips", str(run), *flags]))
        assert snapshot(run.parent, skip=run) == outside
        assert snapshot(run) == before, "ctxrel flips wrote into the run directory"


# each report draws its figures (seconds each): 8 examples in CI, 100 in the long profile; the in-process targets
# above read the same damaged directories by the thousand
@settings(max_examples=100 if os.environ.get("CTXREL_FUZZ") == "long" else 8)
@given(name=st.sampled_from(files() + [None]), data=st.data(),
       flags=st.lists(st.sampled_from(["smooth=1", "--smooth", "2", "--bootstrap", "0", "--from", "start",
                                       "--to", "trough", "--labels", "a,b", "--seeds", "bootstrap=50"]), max_size=3))
def test_report_cli_on_damaged_runs(name, data, flags):
    with copy_of_run() as run:
        if name is not None:
            f = run / name
            f.write_bytes(data.draw(mutated(f.read_bytes())))
        outside = snapshot(run.parent, skip=run)
        kept = snapshot(run, skip=run / "report")
        code, text = _cli(["report", str(run), "--bootstrap", "50", *flags])
        check_cli(code, text)
        assert snapshot(run.parent, skip=run) == outside
        assert snapshot(run, skip=run / "report") == kept, "ctxrel report changed the study's own files"
        if code == 2:
            assert not (run / "report").exists(), "a refused report left a report directory behind"
