"""`ctxrel report` / `ctxrel flips` on hand-built run directories (metric rows + per-item records written
here), a comparison of two studies, seeds, and the HTML page rendered by headless Chromium."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

from ctxrel.analysis.flips import mcnemar_exact
from ctxrel.cli import main
from ctxrel.core.metrics import conflict_metrics
from ctxrel.rundir.files import RunDir, append_records

STEPS = [0, 4, 8, 16, 24, 32]
INVERSION = [0.45, 0.65, 0.80, 0.70, 0.55, 0.45]
RISE = [0.40, 0.50, 0.60, 0.70, 0.75, 0.80]
CATS = ("capital", "currency")
BENCH = "cf_test"


def make_run(path: Path, probs, *, n_items=80, seed=0, id_acc=None, attention=None) -> Path:
    """A study run directory: records whose items give the context answer with probability probs[t] (else the
    parametric answer, or neither), metric rows computed from them by metrics.py, config and train summary."""
    rng = np.random.default_rng(seed)
    run = RunDir(path)
    run.write_config({"model": {"name": "hand-built"}, "train": {"lr": 1e-4, "seed": seed}, "out": str(path)})
    known = {f"q{k}": k % 4 != 0 for k in range(n_items)}
    for t, (step, p) in enumerate(zip(STEPS, probs)):
        ckpt = f"step-{step:06d}"
        recs = []
        for k in range(n_items):
            u = rng.random()
            outcome = "context" if u < p else ("parametric" if u < p + (1 - p) * 0.8 else "neither")
            recs.append(dict(id=f"q{k}", sample=0, category=CATS[k % 2], question=f"Capital of land {k}?",
                             context_answer=f"Ctx{k}", parametric_answer=f"Par{k}", output=f"{outcome} {k}",
                             contains_context=outcome == "context", contains_parametric=outcome == "parametric",
                             outcome=outcome, first_mention=None, known=known[f"q{k}"]))
        append_records(run.eval_file(ckpt, BENCH), recs)
        meta = dict(checkpoint=ckpt, step=step, epoch=step / 16, benchmark=BENCH)
        rows = [dict(meta, subset="all", **m) for m in conflict_metrics(recs, n_boot=100)]
        rows += [dict(meta, subset="known", **m) for m in conflict_metrics([r for r in recs if r["known"]],
                                                                           n_boot=100)]
        if id_acc is not None:
            rows.append(dict(meta, benchmark="id_accuracy", subset="all", metric="id_accuracy", value=id_acc[t],
                             n=3, ci_low=id_acc[t] - 0.03, ci_high=id_acc[t] + 0.03))
        if attention is not None:
            for subset in ("all", "known"):
                rows += [dict(meta, subset=subset, metric="attention_context", value=attention[t], n=n_items),
                         dict(meta, subset=subset, metric="attention_question", value=0.5 - attention[t] / 2,
                              n=n_items)]
        run.write_metrics(rows)
    (path / "train_summary.json").write_text(json.dumps({"epoch_boundaries": [16, 32]}))
    return path


@pytest.fixture
def inversion_run(tmp_path):
    return make_run(tmp_path / "base", INVERSION, id_acc=[0.30, 0.32, 0.35, 0.37, 0.38, 0.40],
                    attention=[0.30, 0.40, 0.45, 0.40, 0.35, 0.30])


def external_refs(page: str) -> list[str]:
    """Every src/href/url() that is not an embedded data: URI or an in-page anchor."""
    refs = re.findall(r"""(?:src|href)\s*=\s*["']([^"']*)["']""", page, flags=re.I)
    refs += re.findall(r"url\(([^)]*)\)", page)
    return [r for r in refs if not r.startswith(("data:", "#"))]


def test_report_of_one_study(inversion_run, capsys):
    assert main(["report", str(inversion_run), "--bootstrap", "400"]) == 0
    out = capsys.readouterr().out
    assert "verdict: inversion" in out and "McNemar p" in out
    rep = inversion_run / "report"
    pngs = sorted(p.name for p in rep.glob("*.png"))
    assert pngs == ["cf_test-attention.png", "cf_test-categories.png", "cf_test-outcomes.png", "cf_test-steps.png",
                    "cf_test-vs-id-accuracy.png"]
    assert all((rep / p).read_bytes()[:4] == b"\x89PNG" for p in pngs)
    summary = json.loads((rep / "summary.json").read_text())
    assert summary["figures"]["cf_test"] == ["cf_test-steps.png", "cf_test-vs-id-accuracy.png",
                                             "cf_test-categories.png", "cf_test-attention.png"]
    g = summary["groups"][0]
    b = g["benchmarks"]["cf_test"]
    st = b["subsets"]["all"]
    assert (st["verdict"], st["peak"]["step"], st["start"]["step"], st["final"]["step"]) == ("inversion", 8, 0, 32)
    assert st["n_items"] == 80 and b["subsets"]["known"]["n_items"] == 60
    # the point estimates agree with the metric rows written by metrics.py
    rows = {(r["step"], r["subset"]): r["value"] for r in RunDir(inversion_run).metrics() if r["metric"] == "cf_acc"}
    assert st["peak"]["value"] == pytest.approx(rows[(8, "all")])
    assert b["subsets"]["known"]["final"]["value"] == pytest.approx(rows[(32, "known")])
    assert set(b["categories"]) == set(CATS) and g["epoch_boundaries"] == [16, 32]
    assert [d["step"] for d in g["id_accuracy"]] == STEPS
    fl = b["flips"][0]
    assert (fl["from"]["step"], fl["to"]["step"]) == (8, 32)
    t = fl["by_category"]["all"]
    assert t["p_value"] == pytest.approx(mcnemar_exact(t["lost"], t["gained"])) and t["lost"] > t["gained"]
    page = (rep / "index.html").read_text()
    assert external_refs(page) == []
    assert page.count("data:image/png;base64,") == 5  # the four figures above and the stacked outcome shares
    assert "inversion: significant rise" in page and "hand-built" in page  # verdict and the resolved config
    assert "McNemar" in page and "context &rarr; parametric" in page


def test_comparison_of_two_studies_goes_to_a_compare_dir(inversion_run, tmp_path, capsys):
    other = make_run(tmp_path / "qk", RISE, seed=1)
    assert main(["report", str(inversion_run), str(other), "--labels", "base,qk", "--bootstrap", "300"]) == 0
    rep = inversion_run / "report" / "compare-base-qk"
    summary = json.loads((rep / "summary.json").read_text())
    verdicts = {g["label"]: g["benchmarks"]["cf_test"]["subsets"]["all"]["verdict"] for g in summary["groups"]}
    assert verdicts == {"base": "inversion", "qk": "rise"}
    page = (rep / "index.html").read_text()
    assert external_refs(page) == [] and "base" in page and "qk" in page
    assert (rep / "cf_test-steps.png").exists()
    assert "compare-base-qk" in capsys.readouterr().out


def test_runs_sharing_a_label_are_seeds(tmp_path):
    from ctxrel.report.build import build_report

    runs = [make_run(tmp_path / f"s{k}", INVERSION, seed=k) for k in range(3)]
    res = build_report([str(r) for r in runs], labels=["base"] * 3, out=tmp_path / "rep", n_boot=300)
    st = res["groups"][0]["benchmarks"]["cf_test"]["subsets"]["all"]
    assert res["groups"][0]["n_seeds"] == 3 and [d["basis"] for d in st["drop"]] == ["items", "seeds"]
    assert st["verdict"] == "inversion"
    flips = res["groups"][0]["benchmarks"]["cf_test"]["flips"]
    assert [fl["run"] for fl in flips] == [r.name for r in runs]  # one flip table per seed, named by its directory
    # each seed on its own, with its own paired item-bootstrap intervals
    per = st["per_seed"]
    assert [p["run"] for p in per] == [r.name for r in runs] and all(p["n_seeds"] == 1 for p in per)
    assert all([d["basis"] for d in p["drop"]] == ["items"] for p in per)


def test_seed_lines_are_printed(tmp_path, capsys):
    runs = [make_run(tmp_path / f"s{k}", INVERSION, seed=k) for k in range(2)]
    assert main(["report", *map(str, runs), "--seeds", "--out", str(tmp_path / "rep"), "--bootstrap", "200"]) == 0
    out = capsys.readouterr().out
    assert "2 seeds" in out and out.count("    seed s") >= 2 and "[" in out.split("    seed s0")[1]


def test_smoothing_is_labelled(inversion_run, tmp_path):
    assert main(["report", str(inversion_run), "--smooth", "3", "--out", str(tmp_path / "sm"),
                 "--bootstrap", "200"]) == 0
    summary = json.loads((tmp_path / "sm" / "summary.json").read_text())
    assert summary["groups"][0]["benchmarks"]["cf_test"]["subsets"]["all"]["smoothed"] == 3
    assert "Smoothed" in (tmp_path / "sm" / "index.html").read_text()


def test_flips_verb(inversion_run, capsys):
    assert main(["flips", str(inversion_run), "--from", "peak", "--to", "final"]) == 0
    out = capsys.readouterr().out
    assert "step-000008 (peak) -> step-000032 (final)" in out
    line = next(x for x in out.splitlines() if x.strip().startswith("all"))
    n, cf_a, cf_b, lost, gained = line.split()[1:6]
    assert int(n) == 80 and float(cf_a) > float(cf_b)
    assert line.split()[-1] == f"{mcnemar_exact(int(lost), int(gained)):.3g}"
    assert main(["flips", str(inversion_run), "--from", "0", "--to", "step-000008", "--subset", "known"]) == 0
    assert "[known]: step-000000 (0) -> step-000008 (step-000008)" in capsys.readouterr().out
    assert main(["flips", str(inversion_run), "--from", "7"]) == 2
    assert "choose one of: start, peak, trough, final, 0, 4, 8" in capsys.readouterr().err


def test_errors_name_the_run_dir(tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    assert main(["report", str(tmp_path / "empty")]) == 2
    assert f"no metrics in {tmp_path / 'empty'}" in capsys.readouterr().err
    assert main(["report", str(tmp_path / "missing")]) == 2
    assert "no such run directory" in capsys.readouterr().err
    assert not (tmp_path / "missing").exists()
    run = make_run(tmp_path / "r", INVERSION)
    assert main(["report", str(run), str(run), "--labels", "a,b,c"]) == 2
    assert "3 labels for 2 runs" in capsys.readouterr().err


def test_likelihood_mode_run_follows_m_c(tmp_path):
    """A study scored in likelihood mode: M_C per item, no generations (so no flips), same report."""
    from ctxrel.core.metrics import m_c
    from ctxrel.report.build import build_report

    rng = np.random.default_rng(0)
    run = RunDir(tmp_path / "ll")
    for step, shift in zip(STEPS, [0.0, 1.0, 2.0, 1.0, 0.0, -0.5]):
        ckpt = f"step-{step:06d}"
        recs = []
        for k in range(60):
            lc, lp = -2.0 + shift + rng.normal(0, 0.5), -2.0
            recs.append(dict(id=f"q{k}", sample=0, category="capital", question="?", context_answer="a",
                             parametric_answer="b", logp_context=lc, logp_parametric=lp, m_c=m_c(lc, lp)))
        append_records(run.eval_file(ckpt, BENCH), recs)
        run.write_metrics([dict(checkpoint=ckpt, step=step, benchmark=BENCH, subset="all", **m)
                           for m in conflict_metrics(recs, "likelihood", n_boot=50)])
    res = build_report([str(run.path)], out=tmp_path / "rep", n_boot=300)
    b = res["groups"][0]["benchmarks"][BENCH]
    assert (b["mode"], b["metric"]) == ("likelihood", "m_c") and "flips" not in b
    assert b["subsets"]["all"]["verdict"] == "inversion" and b["subsets"]["all"]["peak"]["step"] == 8
    assert [p.name for p in res["figures"][BENCH]] == ["cf_test-steps.png"]


CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.mark.skipif(CHROMIUM is None, reason="headless Chromium not installed (Debian package `chromium`)")
def test_html_renders_in_headless_chromium(inversion_run, tmp_path):
    from PIL import Image

    from ctxrel.report.build import build_report

    res = build_report([str(inversion_run)], out=tmp_path / "rep", n_boot=200)
    shot = tmp_path / "shot.png"
    cmd = [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
           "--disable-background-networking", "--disable-component-update", "--disable-sync",
           f"--user-data-dir={tmp_path / 'profile'}", f"--screenshot={shot}", "--window-size=1200,2000",
           res["index"].resolve().as_uri()]
    subprocess.run(cmd, check=True, capture_output=True, timeout=120)
    img = np.asarray(Image.open(shot).convert("L"), dtype=float)
    assert img.shape == (2000, 1200)
    assert img.std() > 20  # not a blank page: text, tables and plots
    assert (img < 100).mean() > 0.005  # dark pixels (text, lines) present
    top = img[:1000]
    assert top.std() > 20  # the summary and the first plot are above the fold


def test_memory_return_is_par_acc_from_its_trough_to_the_end(tmp_path, capsys):
    from ctxrel.report.build import build_report

    inv = [make_run(tmp_path / f"i{k}", INVERSION, seed=k) for k in range(3)]  # par-acc ~ .8 (1 - p): down, then up
    rise = make_run(tmp_path / "r", RISE, seed=5)  # par-acc falls to the end: nothing comes back
    res = build_report([*map(str, inv), str(rise)], labels=["inv"] * 3 + ["rise"], out=tmp_path / "rep", n_boot=300)
    mr = {g["label"]: g["benchmarks"][BENCH]["subsets"]["all"]["memory_return"] for g in res["groups"]}
    assert mr["inv"]["trough"]["step"] == 8 and mr["inv"]["final"]["step"] == 32
    assert [d["basis"] for d in mr["inv"]["change"]] == ["items", "seeds"] and mr["inv"]["significant"]
    assert mr["inv"]["change"][0]["estimate"] == pytest.approx(mr["inv"]["final"]["value"] - mr["inv"]["trough"]["value"])
    assert mr["rise"]["trough"]["step"] >= 24 and mr["rise"]["change"][0]["estimate"] < 0.05  # sampling noise only
    assert not mr["rise"]["significant"]
    per = res["groups"][0]["benchmarks"][BENCH]["subsets"]["all"]["per_seed"]
    assert all(p["memory_return"]["trough"]["step"] in (8, 16) for p in per)  # each seed its own trough
    assert main(["report", *map(str, inv), "--seeds", "--out", str(tmp_path / "rep2"), "--bootstrap", "200"]) == 0
    out = capsys.readouterr().out
    assert "memory return: par-acc" in out and "(significant)" in out and "par-acc back +" in out
    page = (tmp_path / "rep2" / "index.html").read_text()
    assert "memory return: par-acc final - its trough" in page


def test_seeds_with_different_checkpoints_say_what_the_pooled_statistics_leave_out(tmp_path, capsys):
    runs = [make_run(tmp_path / f"s{k}", INVERSION, seed=k) for k in range(2)]
    shutil.rmtree(runs[1] / "evals" / "step-000032")  # seed 1 has no last checkpoint (a shorter epoch, say)
    assert main(["report", *map(str, runs), "--seeds", "--out", str(tmp_path / "rep"), "--bootstrap", "200"]) == 0
    out = capsys.readouterr().out
    assert "leaving out s0: step 32" in out and "final 0." in out
    summary = json.loads((tmp_path / "rep" / "summary.json").read_text())
    b = summary["groups"][0]["benchmarks"][BENCH]
    assert b["steps_left_out"] == {"s0": [32]} and b["subsets"]["all"]["final"]["step"] == 24
    assert "leaving out s0: step 32" in (tmp_path / "rep" / "index.html").read_text()
