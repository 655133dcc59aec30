"""`ctxrel export eee RUN --out DIR`: a run's summary and per-item results as Every Eval Ever records, checked by
the `every-eval-ever` package's own validator (skipped when the package is not importable: 0.3.0 requires
Python >= 3.12)."""

from __future__ import annotations

import glob
import importlib.util
import io
import json
import sys
from contextlib import redirect_stdout
from pathlib import Path

import pytest
import yaml

pytest.importorskip("torch")
pytestmark = pytest.mark.integration

from ctxrel.cli import main  # noqa: E402
from ctxrel.rundir.files import RunDir, read_records  # noqa: E402

HAVE_EEE = importlib.util.find_spec("every_eval_ever") is not None
WHY = (f"every-eval-ever is not importable here (its 0.3.0 wheel requires Python >= 3.12; this is "
       f"{sys.version_info.major}.{sys.version_info.minor})")


@pytest.fixture(scope="module")
def runs(tiny_model_dir, tmp_path_factory):
    """A plain evaluation and a 2-step study of the tiny model on 4 cf_capitals items."""
    root = tmp_path_factory.mktemp("eee")
    ev = root / "eval"
    assert main(["eval", "--model", str(tiny_model_dir), "--benchmark", "cf_capitals", "--limit", "4",
                 "--max-new-tokens", "4", "--device", "cpu", "--out", str(ev), "eval.bootstrap=50"]) == 0
    cfg = dict(model=dict(name=str(tiny_model_dir), device="cpu"), data=dict(mixture=dict(n=64), max_length=64),
               train=dict(lora=dict(rank=4, alpha=8), epochs=3, max_steps=2, batch_size=4, report_to=[]),
               eval=dict(benchmarks=["cf_capitals"], limit=4, max_new_tokens=4, every=2, bootstrap=50),
               out=str(root / "study"))
    (root / "study.yaml").write_text(yaml.safe_dump(cfg))
    assert main(["train", str(root / "study.yaml")]) == 0
    return ev, root / "study"


def validate(paths: str) -> tuple[int, dict]:
    from every_eval_ever.validator.validate import main as eee_validate

    buf = io.StringIO()
    with redirect_stdout(buf):
        code = eee_validate(["--format", "json", paths])
    return code, json.loads(buf.getvalue())


def test_export_holds_the_run_and_refuses_foreign_directories(runs, tmp_path, capsys):
    ev, study = runs
    out = tmp_path / "eee"
    assert main(["export", "eee", str(study), "--out", str(out)]) == 0
    assert "wrote 2 aggregate file(s) and 16 instance records" in capsys.readouterr().out  # 2 checkpoints x 4 x 2
    aggregates = sorted(out.glob("data/cf_capitals/local/*/*.json"))
    assert [a.parent.name.rsplit("-", 1)[-1] for a in aggregates] == ["000000", "000002"]
    for a in aggregates:
        agg = json.loads(a.read_text())
        step = agg["model_info"]["additional_details"]["checkpoint"]
        rows = {(r["subset"], r["metric"]): r for r in RunDir(study).metrics()
                if r["checkpoint"] == step and r["benchmark"] == "cf_capitals"}
        got = {r["evaluation_result_id"]: r["score_details"]["score"] for r in agg["evaluation_results"]}
        assert got["cf_capitals/all/cf_acc"] == rows[("all", "cf_acc")]["value"]
        assert got["cf_capitals/all/par_acc"] == rows[("all", "par_acc")]["value"]
        samples = [json.loads(line) for line in a.with_name(a.stem + "_samples.jsonl").read_text().splitlines()]
        records = {r["id"]: r for r in read_records(study / "evals" / step / "cf_capitals.jsonl")}
        assert len(samples) == agg["detailed_evaluation_results"]["total_rows"] == 2 * len(records)
        for s in samples:
            flag = "contains_context" if s["evaluation_result_id"].endswith("cf_acc") else "contains_parametric"
            assert s["evaluation"]["is_correct"] == records[s["sample_id"]][flag]
    again = sorted(p.name for p in out.rglob("*.json*"))
    assert main(["export", "eee", str(study), "--out", str(out)]) == 0  # same file names, rewritten in place
    assert sorted(p.name for p in out.rglob("*.json*")) == again

    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "keep.txt").write_text("x")
    assert main(["export", "eee", str(ev), "--out", str(mine)]) == 2
    assert "not made by ctxrel" in capsys.readouterr().err
    assert main(["export", "eee", str(tmp_path / "nothing"), "--out", str(tmp_path / "e2")]) == 2
    assert "not a ctxrel run directory" in capsys.readouterr().err


@pytest.mark.skipif(not HAVE_EEE, reason=WHY)
def test_every_eval_ever_validator_accepts_the_export(runs, tmp_path):
    for run in runs:
        out = tmp_path / run.name
        assert main(["export", "eee", str(run), "--out", str(out)]) == 0
        files = glob.glob(str(out / "data" / "*" / "*" / "*" / "*.json*"))
        assert len(files) == (2 if run.name == "eval" else 4)
        code, report = validate(str(out / "data" / "*" / "*" / "*" / "*.json*"))
        assert code == 0, json.dumps(report)[:3000]
        assert len(report) == len(files) and all(f["valid"] and not f["errors"] and not f["warnings"]
                                                 for f in report)
    # the validator can fail: a score outside its bounds is reported
    agg = next(Path(p) for p in glob.glob(str(tmp_path / "eval" / "data" / "*" / "*" / "*" / "*.json")))
    data = json.loads(agg.read_text())
    data["evaluation_results"][0]["score_details"]["score"] = 1.5
    agg.write_text(json.dumps(data))
    code, report = validate(str(agg))
    assert code != 0 and "outside" in json.dumps(report)
