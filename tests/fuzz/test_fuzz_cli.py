"""Fuzzing the command line: argument lists drawn from every verb's flags and hostile values, run in-process
through `ctxrel.cli.main` from a scratch working directory. Properties: exit 0 or 2 (argparse's usage errors
included), never a traceback, one `error:` line on a refusal, nothing written outside the working directory, and
no new directory left by a refusal (a refused run into a new directory used to keep one holding only its marker).
A few cases run the real `python -m ctxrel` process; the integration cases refuse after a real claim (bad
training data, a prompt longer than the model's window) and check that the new directory is gone."""

from __future__ import annotations

import contextlib
import io
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

pytest.importorskip("hypothesis")
from hypothesis import example, given, strategies as st  # noqa: E402

from fuzzkit import TEXT, snapshot  # noqa: E402

from ctxrel.cli import main  # noqa: E402

NOMODEL = "./no-such-model"  # every eval / study ends at the model's preflight at the latest: no model loads here
VALUES = st.sampled_from(["", " ", "0", "-1", "3", "1e-4", "nan", "inf", "x", "[a, b]", "{a: 1}", "[", "runs/x",
                          "out", "/", "~", "..", "-", "--", "a=b", "cf_capitals", "quickstart", "mmlu=/nope",
                          "\x00", "é", "true", "null"]) | TEXT.filter(lambda t: "\x00" not in t)
FLAGS = {
    "eval": ["--benchmark", "--limit", "--template", "--prompt", "--samples", "--temperature", "--max-new-tokens",
             "--mode", "--batch-size", "--device", "--out", "--config", "--seed", "--shots", "--decode",
             "--skip-invalid", "--no-knowledge-filter", "--eval.probes", "--eval.contexts", "--adapter"],
    "study": ["--config", "--train.lr", "--train.mode", "--eval.every", "--data.source", "--out", "--model.name",
              "--train.max-steps", "--eval.early", "--data.mixture.c"],
    "presets": [],
    "benchmarks": [],
}
KEYS = ["eval.limit", "eval.every", "train.lr", "train.epochs", "out", "data.source", "model.batch_size",
        "eval.benchmarks", "train.lora.rank", "data.mixture.n", "eval", "train", "nope", "eval.early"]


@st.composite
def argv(draw) -> list[str]:
    verb = draw(st.sampled_from(["eval", "study", "train", "presets", "benchmarks"]))
    args = [verb]
    if verb in ("study", "train"):
        args.append(draw(st.sampled_from(["quickstart", "nope.yaml", "paper/llama2-7b-alpaca-lora", "."])))
    if verb == "presets":
        args += draw(st.lists(st.sampled_from(["show", "list", "quickstart", "synth/quick", "x"]), max_size=2))
    for _ in range(draw(st.integers(0, 4))):
        kind = draw(st.sampled_from(["flag", "override", "junk"]))
        if kind == "flag" and FLAGS.get(verb if verb != "train" else "study"):
            flag = draw(st.sampled_from(FLAGS[verb if verb != "train" else "study"]))
            args += [flag] if flag.startswith(("--skip", "--no-")) else [flag, draw(VALUES)]
        elif kind == "override":
            args.append(f"{draw(st.sampled_from(KEYS))}={draw(VALUES)}")
        else:
            args.append(draw(VALUES))
    if verb == "eval":
        args += ["--model", NOMODEL]
    if verb in ("study", "train"):
        args.append(f"model.name={NOMODEL}")
    return args


def run_cli(args: list[str]) -> tuple[int, str]:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            code = main(args)
        except SystemExit as e:  # argparse: --help (0) and usage errors (2)
            code = e.code
    return code, out.getvalue() + err.getvalue()


@given(args=argv())
@example(args=["study", "quickstart", "out=fresh/run", f"model.name={NOMODEL}"])
@example(args=["eval", "--out", "fresh", "--model", NOMODEL])
@example(args=["study", ".", f"model.name={NOMODEL}"])
def test_cli_arguments(args):
    with tempfile.TemporaryDirectory() as d:
        root = Path(d)
        (root / "cwd").mkdir()
        before = snapshot(root)
        old = os.getcwd()
        os.chdir(root / "cwd")
        try:
            code, text = run_cli(args)
        finally:
            os.chdir(old)
        assert "Traceback" not in text, text
        assert code in (0, 2), (code, text)
        if code == 2:
            errors = [line for line in text.splitlines() if "error:" in line]
            assert len(errors) == 1, text
            assert snapshot(root) == before, f"a refused command left files behind: {args}"
        else:
            assert set(snapshot(root)) >= set(before)


SUBPROCESS_CASES = [
    (["eval", "--limit", "x"], "invalid int value"),
    (["eval", "--model", NOMODEL, "--limit", "0"], "below its minimum"),
    (["study", "quickstart", "train.lr=nan", f"model.name={NOMODEL}"], "finite"),
    (["study", "quickstart", "1: 2", f"model.name={NOMODEL}"], "takes one config"),
    (["report", "nowhere"], "nowhere"),
    (["flips", "nowhere", "--show", "-1"], "nowhere"),
]


@pytest.mark.integration
@pytest.mark.parametrize("args,says", SUBPROCESS_CASES)
def test_real_process_refuses_in_one_line(tmp_path, args, says):
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(Path(__file__).resolve().parents[2] / "src"),
                                                      os.environ.get("PYTHONPATH", "")]))
    r = subprocess.run([sys.executable, "-m", "ctxrel", *args], cwd=tmp_path, env=env, capture_output=True,
                       text=True, timeout=120)
    assert r.returncode == 2, r.stderr
    assert "Traceback" not in r.stderr
    errors = [line for line in r.stderr.splitlines() if "error:" in line]
    assert len(errors) == 1 and says in errors[0], r.stderr
    assert list(tmp_path.iterdir()) == []


@pytest.mark.integration
def test_refused_study_leaves_no_new_directory(tiny_model_dir, tmp_path, capsys):
    """A study refused after its claim (training data broken on line 3, found when the loop reads it) removes
    the directory it created, parents included; into an existing empty directory it leaves it empty."""
    pytest.importorskip("torch")
    data = tmp_path / "data.jsonl"
    data.write_text('{"instruction": "a", "input": "", "output": "b"}\n' * 2 + '{"instruction": 3\n')
    args = ["train", "quickstart", f"model.name={tiny_model_dir}", f"data.source={data}", "model.device=cpu",
            "eval.limit=2"]
    assert main(args + [f"out={tmp_path / 'new' / 'run'}"]) == 2
    assert f"{data}:3" in capsys.readouterr().err
    assert not (tmp_path / "new").exists()
    (tmp_path / "empty").mkdir()
    assert main(args + [f"out={tmp_path / 'empty'}"]) == 2
    assert list((tmp_path / "empty").iterdir()) == []


@pytest.mark.integration
def test_refused_eval_leaves_no_new_directory(tiny_model_dir, tmp_path, capsys):
    """An evaluation refused after the model loaded (a prompt longer than the model's window)."""
    pytest.importorskip("torch")
    bench = tmp_path / "long.jsonl"
    bench.write_text(json.dumps(dict(context="Lyon " * 3000 + "is the capital.", question="Capital of France?",
                                     context_answer="Lyon", parametric_answer="Paris")) + "\n")
    out = tmp_path / "new" / "eval"
    code = main(["eval", "--model", str(tiny_model_dir), "--benchmark", f"long={bench}", "--out", str(out),
                 "--device", "cpu", "--no-knowledge-filter"])
    err = capsys.readouterr().err
    assert code == 2 and err.count("error:") == 1, err
    assert not (tmp_path / "new").exists()
