"""Hostile inputs (issue 13): every case ends in exit 2 with one sentence naming the file, line or key, or in a
counted skip -- never a traceback, never a changed file outside the run directory, never a mixed run.

The corpus is a table of cases; each builds its inputs under tmp_path, runs the CLI through `main()` and checks
the exit code, the message and the decoys (hashed before and after). Two cases run real processes: two
`ctxrel eval` into one directory at once, and a `kill -9` in the middle of one.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from ctxrel.cli import main
from ctxrel.core.matching import match, unscorable
from ctxrel.rundir.files import RunDir, read_records

pytestmark = pytest.mark.integration

GOOD = {"context": "The capital of France is Lyon.", "question": "What is the capital of France?",
        "context_answer": "Lyon", "parametric_answer": "Paris"}
FAST = ["--max-new-tokens", "3", "--no-knowledge-filter", "--batch-size", "4"]


def digest_tree(root: Path) -> dict[str, str]:
    """path -> sha256 (and mode) of every file under root; directories as entries too."""
    out = {}
    for p in sorted(root.rglob("*")):
        rel = str(p.relative_to(root))
        out[rel] = "dir" if p.is_dir() else hashlib.sha256(p.read_bytes()).hexdigest() + oct(p.stat().st_mode)
    return out


@pytest.fixture
def decoys(tmp_path):
    """A user's directory next to every case: nothing in it may change."""
    d = tmp_path / "decoys"
    (d / "checkpoints" / "step-000000").mkdir(parents=True)
    (d / "checkpoints" / ".tmp-mine").mkdir()
    (d / "checkpoints" / "step-000000" / "notes.txt").write_text("keep me")
    (d / "config.yaml").write_text("my: own config\n")
    (d / "metrics.csv").write_text("a,b\n1,2\n")
    (d / "train_log.jsonl").write_text('{"step": 1}\n{"step": 2')  # no final newline
    (d / "report").mkdir()
    (d / "report" / "trajectory.png").write_bytes(b"\x89PNG user figure")
    (d / "data.jsonl").write_text("".join(json.dumps({"instruction": f"q{i}", "output": "a"}) + "\n"
                                          for i in range(6)))
    before = digest_tree(d)
    yield d
    assert digest_tree(d) == before, "a file outside the run directory changed"


def cli(capsys, *argv) -> tuple[int, str]:
    code = main([str(a) for a in argv])
    cap = capsys.readouterr()
    text = cap.out + cap.err
    assert "Traceback" not in text
    return code, text


def refused(capsys, *argv, names=()) -> str:
    code, text = cli(capsys, *argv)
    assert code == 2, text
    err = [line for line in text.splitlines() if line.startswith("ctxrel: error:")]
    assert len(err) == 1, text
    for n in names:
        assert str(n) in err[0], (n, err[0])
    return err[0]


def jsonl(path: Path, rows) -> Path:
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows))
    return path


# ------------------------------------------------------------------ 1. data loss: directory guard
def test_out_into_a_users_directory_is_refused(tiny_model_dir, decoys, capsys):
    msg = refused(capsys, "eval", "--model", tiny_model_dir, "--out", decoys, "--limit", "2", *FAST,
                  names=[decoys, "config.yaml"])
    assert "ctxrel-run.json" in msg


@pytest.mark.parametrize("out", ["", "/", "HOME", "HOME_PARENT"])
def test_out_root_home_and_empty_are_refused(tiny_model_dir, tmp_path, monkeypatch, capsys, out):
    home = tmp_path / "home" / "me"
    home.mkdir(parents=True)
    monkeypatch.setenv("HOME", str(home))
    target = {"HOME": home, "HOME_PARENT": home.parent}.get(out, out)
    refused(capsys, "eval", "--model", tiny_model_dir, "--out", target, "--limit", "2", *FAST, names=["--out"])
    assert list(home.iterdir()) == []


def test_out_that_is_a_file_is_refused(tiny_model_dir, tmp_path, capsys):
    f = tmp_path / "results.txt"
    f.write_text("mine")
    refused(capsys, "eval", "--model", tiny_model_dir, "--out", f, *FAST, names=[f])
    assert f.read_text() == "mine"


def test_study_into_a_users_directory_is_refused(tiny_model_dir, decoys, capsys):
    refused(capsys, "study", "quickstart", f"model.name={tiny_model_dir}", f"out={decoys}", "train.max_steps=1",
            names=[decoys])


def test_eval_into_a_study_directory_and_run_of_a_users_directory(tiny_model_dir, tmp_path, decoys, capsys):
    study = tmp_path / "study"
    study.mkdir()
    (study / "ctxrel-run.json").write_text(json.dumps({"ctxrel_run": 1, "kind": "study"}))
    refused(capsys, "eval", "--model", tiny_model_dir, "--out", study, *FAST, names=[study, "eval --run"])
    refused(capsys, "eval", "--run", decoys, names=[decoys])


def test_eval_run_with_an_empty_path_is_refused_not_a_plain_eval(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert "empty path" in refused(capsys, "eval", "--run", "", names=["--run"])
    assert not (tmp_path / "runs").exists()  # the default eval out= was never created


def test_curate_never_overwrites_its_input(tmp_path, decoys, capsys):
    refused(capsys, "curate", "filter", "--data", decoys / "data.jsonl", "--out", decoys, "--keep",
            "context-only", names=[decoys])
    first = tmp_path / "cur"
    code, text = cli(capsys, "curate", "filter", "--data", decoys / "data.jsonl", "--out", first,
                     "--drop-keywords", "countries-capitals")
    assert code == 0, text
    data = (first / "data.jsonl").read_bytes()
    refused(capsys, "curate", "filter", "--data", first / "data.jsonl", "--out", first,
            "--drop-keywords", "countries-capitals", names=["data.jsonl", "overwritten"])
    assert (first / "data.jsonl").read_bytes() == data
    text_file = tmp_path / "bio.txt"
    text_file.write_text("Robert Schumann wrote symphonies.")
    refused(capsys, "curate", "substitute", "--text", text_file, "--entity", "Robert Schumann", "--with",
            "Carl Weber", "--out", text_file, names=[text_file])
    assert text_file.read_text() == "Robert Schumann wrote symphonies."


def test_a_marker_of_another_kind_or_damaged_is_refused(tiny_model_dir, tmp_path, capsys):
    cur = tmp_path / "cur"
    cur.mkdir()
    (cur / "ctxrel-run.json").write_text(json.dumps({"ctxrel_run": 1, "kind": "curate"}))
    refused(capsys, "eval", "--model", tiny_model_dir, "--out", cur, *FAST, names=[cur, "curate"])
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "ctxrel-run.json").write_bytes(b"\xff\xfe{")
    refused(capsys, "eval", "--model", tiny_model_dir, "--out", bad, *FAST, names=["ctxrel-run.json"])


# ------------------------------------------------------------------ 2. settings checked before any model loads
@pytest.mark.parametrize("args,key", [
    (["--limit", "0"], "eval.limit"), (["--limit", "-1"], "eval.limit"), (["eval.bootstrap=0"], "eval.bootstrap"),
    (["--temperature", "nan"], "eval.temperature"), (["eval.temperature=.inf"], "eval.temperature"),
    (["eval.seed=-3"], "eval.seed"), (["--max-new-tokens", "0"], "max-new-tokens"),
    (["--batch-size", "0"], "model.batch_size"), (["eval.limit=[1,"], "eval.limit=[1,"),
    (["eval.limit=!!python/object/apply:os.system [echo hi]"], "eval.limit"), (["eval.limit"], "eval.limit"),
])
def test_bad_settings_are_refused_before_anything(tmp_path, capsys, args, key):
    out = tmp_path / "run"
    refused(capsys, "eval", "--model", tmp_path / "no-model-needed", "--out", out, *args, names=[key])
    assert not out.exists()  # refused before the directory, let alone config.yaml, was touched


@pytest.mark.parametrize("override,key", [("train.lr=.inf", "train.lr"), ("train.lr=-1", "train.lr"),
                                          ("train.warmup=nan", "train.warmup"), ("train.epochs=0", "train.epochs"),
                                          ("eval.every=0", "eval.every")])
def test_bad_study_settings_are_refused_before_anything(tmp_path, capsys, override, key):
    out = tmp_path / "study"
    refused(capsys, "study", "quickstart", override, f"out={out}", names=[key])
    assert not out.exists()


@pytest.mark.parametrize("source,says", [("data.source=./missing.jsonl", "no such file"),
                                          ("data.source=$CTXREL_UNSET_DIR/a.json", "$CTXREL_UNSET_DIR is not set"),
                                          ("data.source=", "is empty"), ("data.source=/", "is a directory")])
def test_missing_training_data_is_refused_before_the_run_directory(tmp_path, monkeypatch, capsys, source, says):
    monkeypatch.delenv("CTXREL_UNSET_DIR", raising=False)
    out = tmp_path / "study"
    assert says in refused(capsys, "study", "quickstart", source, f"out={out}", names=["data.source"])
    assert not out.exists()


def test_bad_config_files(tmp_path, capsys):
    binary = tmp_path / "c.yaml"
    binary.write_bytes(b"\x00\xff\xfe binary")
    refused(capsys, "eval", "--config", binary, "--out", tmp_path / "r", names=[binary])
    listing = tmp_path / "l.yaml"
    listing.write_text("- a\n- b\n")
    refused(capsys, "eval", "--config", listing, "--out", tmp_path / "r", names=[listing])
    tagged = tmp_path / "t.yaml"
    tagged.write_text("eval: !!python/object/apply:os.system ['echo pwned']\n")
    refused(capsys, "eval", "--config", tagged, "--out", tmp_path / "r", names=[tagged])
    deep = tmp_path / "d.yaml"
    deep.write_text("[" * 5000 + "]" * 5000)
    refused(capsys, "eval", "--config", deep, "--out", tmp_path / "r", names=[deep])
    assert not (tmp_path / "r").exists()


def test_theory_override_malformed_yaml(tmp_path, capsys):
    refused(capsys, "theory", "--preset", "prop1", "--out", tmp_path / "t", "lr=[1,", names=["lr=[1,"])


# ------------------------------------------------------------------ 3. items that cannot be scored
def test_answer_rule_table():
    assert unscorable("The") and unscorable("A") and unscorable("of the") and unscorable("us")
    assert not unscorable("US") and not unscorable("Li") and not unscorable("5") and not unscorable("Lyon")
    assert match("Let us see.", ["Lyon"], ["US"]).outcome == "neither"  # case-sensitive short answers
    assert match("The US capital moved.", ["Lyon"], ["US"]).outcome == "parametric"
    assert match("us", ["Lyon"], ["US"]).outcome == "neither"


BAD_ROWS = {  # reason -> (row, key named in the message)
    "stop-word answer": ({**GOOD, "parametric_answer": "The"}, "parametric_answer"),
    "one-letter answer": ({**GOOD, "context_answer": "A", "context": "The capital of France is A."},
                          "context_answer"),
    "function-word alias": ({**GOOD, "parametric_aliases": ["it"]}, "parametric_aliases"),
    "context without its answer": ({**GOOD, "context": "France is a country in Europe."}, "context"),
}


@pytest.mark.parametrize("reason", list(BAD_ROWS))
def test_unscorable_rows_refused_or_counted(tiny_model_dir, tmp_path, capsys, reason):
    row, key = BAD_ROWS[reason]
    bench = jsonl(tmp_path / "b.jsonl", [row, GOOD, {**GOOD, "question": "Which city is the capital of France?"}])
    refused(capsys, "eval", "--model", tiny_model_dir, "--out", tmp_path / "a", "--benchmark", f"mine={bench}",
            *FAST, names=[f"{bench}:1", key])
    assert not (tmp_path / "a" / "config.yaml").exists()
    # --skip-invalid: the bad FIRST row is skipped and counted (format sniffing does not trip on it)
    code, text = cli(capsys, "eval", "--model", tiny_model_dir, "--out", tmp_path / "b", "--benchmark",
                     f"mine={bench}", "--skip-invalid", *FAST)
    assert code == 0, text
    assert "3 rows, 1 invalid skipped" in text and f"skipped {bench}:1" in text


def test_bare_path_first_row_broken_with_skip_invalid(tiny_model_dir, tmp_path, capsys):
    bench = jsonl(tmp_path / "mine.jsonl", ["{broken", '"a string"', GOOD])
    refused(capsys, "eval", "--model", tiny_model_dir, "--out", tmp_path / "a", "--benchmark", bench, *FAST,
            names=[f"{bench}:1"])
    code, text = cli(capsys, "eval", "--model", tiny_model_dir, "--out", tmp_path / "b", "--benchmark", bench,
                     "--skip-invalid", *FAST)
    assert code == 0 and "3 rows, 2 invalid skipped" in text, text


def test_memory_and_parametric_answer_disagree(tmp_path, capsys):
    row = {"context": GOOD["context"], "question": GOOD["question"], "answer": "Lyon", "memory_answer": "Paris",
           "parametric_answer": "Marseille"}
    bench = jsonl(tmp_path / "study.jsonl", [row])
    refused(capsys, "eval", "--model", tmp_path / "m", "--out", tmp_path / "r", "--benchmark", f"x={bench}",
            names=[f"{bench}:1", "parametric_answer"])


@pytest.mark.parametrize("line,what", [
    ('{"context": "\\ud800 Lyon", "question": "q?", "context_answer": "Lyon", "parametric_answer": "Paris"}',
     "surrogate"),
    ("[" * 100000 + "]" * 100000, "nested too deeply"),
    ('{"context": "Lyon", "question": "q?", "context_answer": "Lyon", "parametric_answer": NaN}', "NaN"),
    ("\xff\xfe not utf-8", "UTF-8"),
])
def test_hostile_json_lines(tmp_path, capsys, line, what):
    bench = tmp_path / "b.jsonl"
    bench.write_bytes(line.encode("utf-8", "surrogateescape") if "\xff" not in line else b"\xff\xfe not utf-8\n")
    refused(capsys, "eval", "--model", tmp_path / "m", "--out", tmp_path / "r", "--benchmark", f"mine={bench}",
            names=[f"{bench}:1", what])


def test_directory_as_benchmark_is_not_read_as_memotrap(tmp_path, capsys):
    d = tmp_path / "bench_dir"
    d.mkdir()
    jsonl(d / "items.jsonl", [GOOD])
    msg = refused(capsys, "eval", "--model", tmp_path / "m", "--out", tmp_path / "r", "--benchmark", d,
                  names=[d, "is a directory"])
    assert "malformed CSV" not in msg


def test_corrupt_gzip_and_empty_files(tmp_path, capsys):
    gz = tmp_path / "b.jsonl.gz"
    gz.write_bytes(gzip.compress(b"x" * 100)[:20])
    refused(capsys, "eval", "--model", tmp_path / "m", "--out", tmp_path / "r", "--benchmark", f"g={gz}",
            names=[gz])
    empty = tmp_path / "e.jsonl"
    empty.write_text("")
    refused(capsys, "eval", "--model", tmp_path / "m", "--out", tmp_path / "r", "--benchmark", f"e={empty}",
            names=[empty])


# ------------------------------------------------------------------ 4. models
def test_junk_gguf_and_model_dir_without_tokenizer(tiny_model_dir, tmp_path, capsys):
    junk = tmp_path / "m.gguf"
    junk.write_bytes(os.urandom(2000))
    refused(capsys, "eval", "--model", junk, "--out", tmp_path / "a", *FAST, names=[junk, "GGUF"])
    notok = tmp_path / "notok"
    notok.mkdir()
    for f in ("config.json", "model.safetensors"):
        (notok / f).write_bytes((tiny_model_dir / f).read_bytes())
    refused(capsys, "eval", "--model", notok, "--out", tmp_path / "b", *FAST, names=[notok, "tokenizer"])
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()


# ------------------------------------------------------------------ 5. mixed runs
def test_metrics_are_the_aggregate_of_the_records_held(tiny_model_dir, tmp_path, capsys):
    out = tmp_path / "run"
    assert cli(capsys, "eval", "--model", tiny_model_dir, "--out", out, "--limit", "6", *FAST)[0] == 0
    code, text = cli(capsys, "eval", "--model", tiny_model_dir, "--out", out, "--limit", "2", *FAST)
    assert code == 0 and "earlier run" in text
    recs = read_records(out / "evals" / "model" / "cf_capitals.jsonl")
    row = next(r for r in RunDir(out).metrics() if r["metric"] == "cf_acc" and r["subset"] == "all")
    assert row["n"] == len({r["id"] for r in recs}) == 6
    assert row["value"] == pytest.approx(sum(r["contains_context"] for r in recs) / 6)


def test_a_run_that_wrote_nothing_does_not_block_other_settings(tiny_model_dir, tmp_path, capsys):
    out = tmp_path / "run"
    # every prompt is too long for a window of 1024 with 1020 new tokens: refused after the settings were taken
    refused(capsys, "eval", "--model", tiny_model_dir, "--out", out, "--limit", "2", "--max-new-tokens", "1020",
            "--no-knowledge-filter", names=["model window"])
    assert not (out / "config.yaml").exists()
    code, text = cli(capsys, "eval", "--model", tiny_model_dir, "--out", out, "--limit", "2", *FAST)
    assert code == 0, text
    assert "max_new_tokens: 3" in (out / "config.yaml").read_text()


def _eval_cmd(model, out, limit):
    return [sys.executable, "-m", "ctxrel", "eval", "--model", str(model), "--out", str(out), "--limit",
            str(limit), "--max-new-tokens", "24", "--batch-size", "1", "--no-knowledge-filter"]


def _env():
    src = str(Path(__file__).resolve().parent.parent / "src")
    return {**os.environ, "PYTHONPATH": src + os.pathsep + os.environ.get("PYTHONPATH", ""),
            "OMP_NUM_THREADS": "1"}


def test_two_processes_into_one_directory(tiny_model_dir, tmp_path):
    out = tmp_path / "run"
    first = subprocess.Popen(_eval_cmd(tiny_model_dir, out, 60), env=_env(), stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True)
    records = out / "evals" / "model" / "cf_capitals.jsonl"
    deadline = time.time() + 120
    while not (records.exists() and records.stat().st_size) and first.poll() is None and time.time() < deadline:
        time.sleep(0.2)
    assert first.poll() is None, "the first process ended before the second could start; raise its --limit"
    second = subprocess.run(_eval_cmd(tiny_model_dir, out, 60), env=_env(), capture_output=True, text=True,
                            timeout=120)
    assert second.returncode == 2, second.stderr
    assert "another ctxrel process is writing" in second.stderr and "Traceback" not in second.stderr
    _, err = first.communicate(timeout=300)
    assert first.returncode == 0, err
    recs = read_records(records)
    ids = [(r["id"], r["sample"]) for r in recs]
    assert len(ids) == len(set(ids)) == 60  # no duplicated row


def test_kill_9_releases_the_lock(tiny_model_dir, tmp_path):
    out = tmp_path / "run"
    proc = subprocess.Popen(_eval_cmd(tiny_model_dir, out, 40), env=_env(), stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    records = out / "evals" / "model" / "cf_capitals.jsonl"
    deadline = time.time() + 120
    while not (records.exists() and records.stat().st_size) and proc.poll() is None and time.time() < deadline:
        time.sleep(0.1)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    done = subprocess.run(_eval_cmd(tiny_model_dir, out, 40), env=_env(), capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, done.stderr
    ids = [r["id"] for r in read_records(records)]
    assert len(ids) == len(set(ids)) == 40


# ------------------------------------------------------------------ 6. damaged run directories
@pytest.fixture
def study_like_run(tiny_lm, tmp_path):
    """A two-checkpoint run made through the evaluation code (what `ctxrel report` reads)."""
    from ctxrel.config.settings import EvalConfig, RunConfig
    from ctxrel.evaluate.run import run_eval

    out = tmp_path / "study"
    cfg = RunConfig(eval=EvalConfig(limit=2, max_new_tokens=3, knowledge_filter=False, bootstrap=50), out=str(out))
    for step in (0, 1):
        run_eval(cfg, checkpoint=f"step-00000{step}", lm=tiny_lm, write_config=False)
    (out / "config.yaml").write_text("out: x\n")
    return out


def test_report_refuses_records_cut_short(study_like_run, capsys):
    f = study_like_run / "evals" / "step-000001" / "cf_capitals.jsonl"
    data = f.read_bytes()
    f.write_bytes(data[:data.rfind(b"\n", 0, len(data) - 1) + 1] + b'{"id": "cut')
    refused(capsys, "report", study_like_run, names=[f, "n=2"])


def test_report_refuses_records_without_match_fields(study_like_run, capsys):
    f = study_like_run / "evals" / "step-000001" / "cf_capitals.jsonl"
    recs = read_records(f)
    jsonl(f, [{k: v for k, v in r.items() if k not in ("contains_context", "contains_parametric")} for r in recs])
    refused(capsys, "report", study_like_run, names=[f, "contains_context"])


@pytest.mark.parametrize("flag,value", [("--bootstrap", "0"), ("--smooth", "-1")])
def test_report_refuses_settings_below_their_minimum(study_like_run, capsys, flag, value):
    refused(capsys, "report", study_like_run, flag, value, names=[flag.lstrip("-"), value])
    assert not (study_like_run / "report").exists()


@pytest.mark.parametrize("damage", ["sqlite", "config", "summary", "deep_record", "surrogate_record"])
def test_report_on_damaged_files(study_like_run, capsys, damage):
    target = {"sqlite": "metrics.sqlite", "config": "config.yaml", "summary": "train_summary.json",
              "deep_record": "evals/step-000000/cf_capitals.jsonl",
              "surrogate_record": "evals/step-000000/cf_capitals.jsonl"}[damage]
    path = study_like_run / target
    content = {"sqlite": b"SQLite format 3\x00" + os.urandom(3000), "config": b"\x00\x01\xff\xfe binary",
               "summary": b'{"epoch_boundaries": [1, 2', "deep_record": b"[" * 100000 + b"]" * 100000 + b"\n",
               "surrogate_record": b'{"id": "\\udc80"}\n'}[damage]
    path.write_bytes(content)
    refused(capsys, "report", study_like_run, names=[path])


def test_eval_into_a_run_with_garbage_sqlite(tiny_model_dir, tmp_path, capsys):
    out = tmp_path / "run"
    assert cli(capsys, "eval", "--model", tiny_model_dir, "--out", out, "--limit", "1", *FAST)[0] == 0
    (out / "metrics.sqlite").write_bytes(os.urandom(4096))
    refused(capsys, "eval", "--model", tiny_model_dir, "--out", out, "--limit", "1", *FAST,
            names=[out / "metrics.sqlite"])


def test_atomic_writes_follow_the_umask(tmp_path):
    from ctxrel.rundir.files import atomic_write_text

    old = os.umask(0o022)
    try:
        atomic_write_text(tmp_path / "a.txt", "x")
    finally:
        os.umask(old)
    assert (tmp_path / "a.txt").stat().st_mode & 0o777 == 0o644
