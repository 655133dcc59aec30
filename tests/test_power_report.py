"""`ctxrel report` with the power, selection-honest, decomposition and context-share blocks: printed, in the
HTML and in summary.json as new keys, today's keys unchanged; `--plan` validated and printed."""

from __future__ import annotations

import json

import pytest

from ctxrel.analysis.rundata import load_run
from ctxrel.analysis.inversion import trajectory_stats
from ctxrel.analysis.rundata import trajectory_points
from ctxrel.cli import main
from test_report import BENCH, INVERSION, make_run  # noqa: E402


@pytest.fixture
def seeds(tmp_path):
    return [make_run(tmp_path / f"s{k}", INVERSION, n_items=60, seed=k) for k in range(3)]


def test_report_prints_and_stores_power_honest_decomposition_and_share(seeds, tmp_path, capsys):
    out = tmp_path / "rep"
    assert main(["report", *map(str, seeds), "--seeds", "--bootstrap", "300", "--plan", "0.05", "--out",
                 str(out)]) == 0
    text = capsys.readouterr().out
    for needle in ("power drop: items SE", "largest drop still allowed (95%)", "selection-honest (peak chosen on 30",
                   "leave one seed out", "plan: to detect a drop of 0.050", "decomposition peak->final",
                   "context share cf/(cf+par) (secondary verdict)", "two-level interval"):
        assert needle in text, needle
    st = json.loads((out / "summary.json").read_text())["groups"][0]["benchmarks"][BENCH]["subsets"]["all"]
    # today's keys: exactly what trajectory_stats gives on the same runs
    runs = [load_run(p) for p in seeds]
    today = json.loads(json.dumps(trajectory_stats(trajectory_points(runs, BENCH, "cf_acc", "all"), n_boot=300)))
    assert {k: st[k] for k in today} == today
    assert [e["basis"] for e in st["power"]["drop"]] == ["items", "seeds", "seeds+items"]
    assert st["power"]["drop"][0]["allowed"] == st["drop"][0]["ci_high"]
    assert st["honest"]["split"]["n_select"] == 30 and len(st["honest"]["split"]["select_ids"]) == 30
    assert st["plan"]["d"] == 0.05 and st["plan"]["items_needed"] > 0
    dec = st["decomposition"]["peak->final"]
    assert dec["check"] == pytest.approx(0, abs=1e-9) and dec["from"] == st["peak"]["step"]
    assert st["context_share"]["secondary"] is True
    page = (out / "index.html").read_text()
    assert "What the verdict can see" in page and 'alt="cf_test-outcomes"' in page
    assert (out / "cf_test-outcomes.png").stat().st_size > 1000


@pytest.mark.parametrize("bad", ["0", "1", "-0.1", "1.5", "nan", "inf"])
def test_plan_outside_zero_one_is_refused_in_one_sentence(seeds, bad, capsys):
    assert main(["report", str(seeds[0]), "--plan", bad]) == 2
    err = capsys.readouterr().err.strip()
    assert "plan" in err and len(err.splitlines()) == 1 and "Traceback" not in err
    assert not (seeds[0] / "report").exists()


def test_plan_that_is_not_a_number_is_an_argparse_error(seeds, capsys):
    with pytest.raises(SystemExit) as e:
        main(["report", str(seeds[0]), "--plan", "abc"])
    assert e.value.code == 2 and "argument --plan: invalid float value: 'abc'" in capsys.readouterr().err
