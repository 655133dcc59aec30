"""Sharded evaluation (ctxrel.evaluate.shards): 2 CPU processes over gloo write exactly the records and metric rows one
process writes, for a study's evaluation and for `ctxrel eval --run`; a restarted process does not rescore its
finished shard. Plus the pure parts (dealing, merging, names) in milliseconds."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from ctxrel.evaluate import shards
from ctxrel.core.errors import CtxrelError
from ctxrel.rundir.files import RunDir, read_records, shard_file, shard_files

ALPACA = [{"instruction": f"Name city number {i}.", "input": "Paris Lyon" if i % 3 else "",
           "output": f"City {i} is Lyon."} for i in range(16)]
MMLU_HEADER = "question,choice0,choice1,choice2,choice3,answer\n"


# ------------------------------------------------------------------------------------------------- pure parts

def test_deal_is_deterministic_and_balanced():
    costs = [30, 10, 25, 25, 5, 40, 12]
    owners = shards.deal(costs, 3)
    assert owners == shards.deal(costs, 3)
    loads = [sum(c for c, o in zip(costs, owners) if o == r) for r in range(3)]
    assert max(loads) - min(loads) <= max(costs)
    assert sorted(set(owners)) == [0, 1, 2]
    assert shards.deal(costs, 1) == [0] * len(costs)
    assert shards.deal([], 4) == []


def test_merge_restores_the_order_one_process_appends():
    # units: prompts asking for item ids (a knowledge-filter shape: one prompt, several items), 2 per chunk
    units = ["p0", "p1", "p2", "p3", "p4"]
    ids = {"p0": ["a"], "p1": ["b", "c"], "p2": ["d"], "p3": ["e"], "p4": ["f"]}
    owners = [1, 0, 1]  # chunks [p0 p1] [p2 p3] [p4]
    rec = lambda i, s=0, v="": dict(id=i, sample=s, v=v)  # noqa: E731
    shard0 = [rec("e", 1), rec("e", 0), rec("d"), rec("a", v="not mine")]
    shard1 = [rec("f"), rec("c"), rec("b", v="old"), rec("a"), rec("b", v="new")]
    merged = shards.merge(units, owners, [shard0, shard1], ids.__getitem__, 2)
    assert [(r["id"], r["sample"], r["v"]) for r in merged] == [
        ("a", 0, ""), ("b", 0, "new"), ("c", 0, ""), ("d", 0, ""), ("e", 0, ""), ("e", 1, ""), ("f", 0, "")]


def test_shard_file_names_and_what_holds_records(tmp_path):
    run = RunDir(tmp_path / "run")
    path = run.eval_file("step-000004", "cf_capitals")
    assert shard_file(path, 0, 2).name == "cf_capitals.shard-0-of-2.jsonl"
    assert shard_file(run.eval_file("m", "b", "nocontext"), 1, 3).name == "b.nocontext.shard-1-of-3.jsonl"
    path.parent.mkdir(parents=True)
    for name in ("cf_capitals.shard-1-of-2.jsonl", "cf_capitals.nocontext.shard-0-of-2.jsonl",
                 "cf_capitals.shard-x-of-2.jsonl", "cf_capitals_2.shard-0-of-2.jsonl"):
        (path.parent / name).write_text("")
    assert [f.name for f in shard_files(path)] == ["cf_capitals.shard-1-of-2.jsonl"]
    assert not run.holds_records("step-000004", "cf_capitals")
    shard_file(path, 1, 2).write_text('{"id": "x"}\n')  # a sharded run that crashed before its merge
    assert run.holds_records("step-000004", "cf_capitals")  # so its settings are kept: nothing mixes with them


class InTurn(shards.Shard):
    """A process of a sharded evaluation run one after the other in this test process: with every process's
    scoring done before the main process merges, the barriers have nothing to wait for."""

    def wait(self) -> None:
        pass


def test_shards_scored_in_turn_merge_into_one_process_files_and_resume(tmp_path):
    units = [f"i{k}" for k in range(10)]  # 5 chunks of 2, equal cost: dealt 0 1 0 1 0
    calls: dict[int, list] = {0: [], 1: [], -1: []}

    def score_as(rank):
        def score(chunk):
            calls[rank].append(list(chunk))
            return [[dict(id=u, v="A") for u in chunk], [dict(id=u, sample=0, v="B") for u in chunk]]
        return score

    def run(root: Path, shard, rank):
        paths = [root / "a.jsonl", root / "b.jsonl"]
        return shards.score_files(units, size=2, score=score_as(rank), paths=paths, ids=lambda u: [u],
                                  finished=lambda u, held: all(u in h for h in held), cost=len, shard=shard)

    alone = run(tmp_path / "alone", shards.ALONE, -1)
    assert [len(c) for c in calls[-1]] == [2] * 5 and [r["id"] for r in alone[0]] == units
    two = tmp_path / "two"
    two.mkdir()
    # process 1 of a killed launch: chunk i2 i3 done in both files, i6 in one file only (chunk i6 i7 unfinished)
    (two / "a.shard-1-of-2.jsonl").write_text("".join(json.dumps(dict(id=u, v="kept")) + "\n"
                                                      for u in ("i2", "i3", "i6")))
    (two / "b.shard-1-of-2.jsonl").write_text("".join(json.dumps(dict(id=u, sample=0, v="kept")) + "\n"
                                                      for u in ("i2", "i3")) + '{"id": "i6"')
    assert run(two, InTurn(1, 2), 1) == [[], []]  # not the main process: no merge
    merged = run(two, InTurn(0, 2), 0)
    assert calls[1] == [["i6", "i7"]] and calls[0] == [["i0", "i1"], ["i4", "i5"], ["i8", "i9"]]
    assert not shard_files(two / "a.jsonl") and not shard_files(two / "b.jsonl")
    for k, name in enumerate(("a.jsonl", "b.jsonl")):
        assert merged[k] == read_records(two / name)
        expected = [dict(r, v="kept") if r["id"] in ("i2", "i3") else r for r in alone[k]]
        assert read_records(two / name) == expected  # one process's order; the finished chunk not rescored


@pytest.mark.parametrize("env, message", [
    (dict(WORLD_SIZE="two", RANK="0"), "not whole numbers"),
    (dict(WORLD_SIZE="2", RANK="2"), "not a process of WORLD_SIZE=2"),
    (dict(WORLD_SIZE="0", RANK="0"), "not a process of WORLD_SIZE=0"),
])
def test_a_broken_launcher_environment_is_one_sentence(monkeypatch, env, message):
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    with pytest.raises(CtxrelError, match=message):
        shards.current()


def test_alone_outside_a_launcher(monkeypatch):
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    assert shards.current() == shards.ALONE and shards.ALONE.main
    assert shards.device_of(shards.ALONE, None) is None


# ---------------------------------------------------------------------------------- 2 processes over gloo

def launch(args: list[str], *, timeout: int = 600) -> None:
    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
           "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no",
           "--main_process_port", str(29500 + (os.getpid() + len(args)) % 1000), "-m", "ctxrel", *args]
    r = subprocess.run(cmd, env=dict(os.environ, OMP_NUM_THREADS="1"), capture_output=True, text=True,
                       timeout=timeout)
    assert r.returncode == 0, r.stderr[-3000:]


@contextlib.contextmanager
def one_thread():
    """The reference run in this process uses one torch thread, as each launched process does (OMP_NUM_THREADS=1):
    the thread count changes a matmul's reduction order, and with it the last bits of its result."""
    import torch

    n = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(n)


def eval_files(run: Path) -> dict[str, bytes]:
    return {str(f.relative_to(run)): f.read_bytes() for f in sorted((run / "evals").rglob("*")) if f.is_file()}


def metric_rows(run: Path) -> list[dict]:
    return [{k: v for k, v in r.items() if k != "created"} for r in RunDir(run).metrics()]


def fresh_copy(src: Path, dst: Path) -> Path:
    """The run directory with its checkpoints and config, no evaluation."""
    shutil.copytree(src, dst, ignore=shutil.ignore_patterns("evals", "metrics.*", "report"))
    return dst


@pytest.fixture(scope="module")
def study_two(tiny_model_dir, tmp_path_factory) -> tuple[Path, Path]:
    """A study trained and evaluated by 2 processes, and the same checkpoints scored by 1 (`eval --run`)."""
    from ctxrel.cli import main

    tmp = tmp_path_factory.mktemp("shard")
    (tmp / "alpaca.json").write_text(json.dumps(ALPACA))
    mmlu = tmp / "mmlu"
    (mmlu / "test").mkdir(parents=True)
    (mmlu / "dev").mkdir()
    for s in ("anatomy", "astronomy"):
        (mmlu / "dev" / f"{s}_dev.csv").write_text(MMLU_HEADER + "dev q?,a,b,c,d,0\n")
        (mmlu / "test" / f"{s}_test.csv").write_text(
            MMLU_HEADER + "".join(f"{s} q{i}?,Paris,Lyon,Rome,Tokyo,{i % 4}\n" for i in range(5)))
    cfg = dict(model=dict(name=str(tiny_model_dir), batch_size=2, device="cpu"),
               data=dict(source=str(tmp / "alpaca.json"), max_length=48),
               train=dict(mode="lora", lora=dict(rank=4, alpha=8, dropout=0.0), lr=1e-2, max_steps=2, batch_size=4,
                          tensorboard=False),
               eval=dict(benchmarks=["cf_capitals"], limit=14, max_new_tokens=5, every=2, early=[], shots=0,
                         standard=[f"mmlu={mmlu}"], standard_limit=10, bootstrap=50,
                         decoding=["greedy", "cad"]))
    path = tmp / "study.yaml"
    path.write_text(yaml.safe_dump(cfg))
    two = tmp / "two"
    launch(["study", str(path), f"out={two}"])
    one = fresh_copy(two, tmp / "one")
    with one_thread():
        assert main(["eval", "--run", str(one)]) == 0
    return one, two


@pytest.mark.integration
def test_study_on_two_processes_writes_what_one_writes(study_two):
    one, two = study_two
    assert json.loads((two / "train_summary.json").read_text())["processes"] == 2
    files = eval_files(two)
    assert not [f for f in files if ".shard-" in f]  # merged, then deleted
    assert {f.split("/")[1] for f in files} == {"step-000000", "step-000002"}
    assert "evals/step-000000/cf_capitals.nocontext.jsonl" in files and "evals/step-000002/mmlu.jsonl" in files
    assert files == eval_files(one)  # same records, same order, same bytes
    rows = metric_rows(two)
    assert {r["benchmark"] for r in rows} == {"cf_capitals", "cf_capitals[cad]", "mmlu", "id_accuracy"}
    assert rows == metric_rows(one)


@pytest.mark.integration
def test_eval_run_on_two_processes_resumes_a_finished_shard(study_two, tmp_path):
    one, _ = study_two
    three = fresh_copy(one, tmp_path / "three")
    # process 1 of a killed 2-process launch left its shard of step-000002: every item but the last answered
    # (marked, so a rescore would show), the last one cut short; and a 3-process launch left a stale shard
    ref = read_records(one / "evals" / "step-000002" / "cf_capitals.jsonl")
    path = RunDir(three).eval_file("step-000002", "cf_capitals")
    path.parent.mkdir(parents=True)
    marked = [dict(r, output="FROM THE SHARD") for r in ref[:-1]]
    shard_file(path, 1, 2).write_text("".join(json.dumps(r) + "\n" for r in marked) + json.dumps(ref[-1])[:40])
    shard_file(path, 0, 3).write_text(json.dumps(dict(ref[0], output="STALE")) + "\n")

    launch(["eval", "--run", str(three)])
    assert not list((three / "evals").rglob("*.shard-*"))
    files, expected = eval_files(three), eval_files(one)
    assert files.keys() == expected.keys()
    changed = [f for f in files if files[f] != expected[f]]
    assert changed == ["evals/step-000002/cf_capitals.jsonl"]
    got = read_records(path)
    assert [r["id"] for r in got] == [r["id"] for r in ref]  # one process's order
    kept = [g for g, r in zip(got, ref) if g != r]
    assert kept and all(g == dict(r, output="FROM THE SHARD") for g, r in zip(got, ref) if g != r)
    assert len(kept) < len(ref) - 1 and got[-1] == ref[-1]  # process 0's chunks and the cut item: scored
    assert metric_rows(three) == metric_rows(one)  # the marks changed no match field


@pytest.mark.integration
def test_plain_eval_on_two_processes_writes_what_one_writes(tiny_model_dir, tmp_path):
    """`ctxrel eval` under accelerate launch, in likelihood mode (the same bits of every log-probability), with
    variants (gold contexts and CAD: records files written together, chunk by chunk) and --attention."""
    from ctxrel.cli import main

    args = ["eval", "--model", str(tiny_model_dir), "--benchmark", "cf_capitals", "--limit", "13", "--mode",
            "likelihood", "model.batch_size=2", "model.device=cpu", "eval.contexts=[conflict,gold]",
            "eval.decoding=[greedy,cad]", "--attention",
            "eval.bootstrap=50"]
    with one_thread():
        assert main(args + ["--out", str(tmp_path / "one")]) == 0
    launch(args + ["--out", str(tmp_path / "two")])
    one, two = eval_files(tmp_path / "one"), eval_files(tmp_path / "two")
    assert {"evals/model/cf_capitals[gold].jsonl", "evals/model/cf_capitals[gold,cad].jsonl",
            "evals/model/cf_capitals[cad].jsonl", "evals/model/cf_capitals.nocontext.jsonl",
            "evals/model/cf_capitals.attention.jsonl"} < one.keys()
    assert two == one
    assert metric_rows(tmp_path / "two") == metric_rows(tmp_path / "one")
    configs = [yaml.safe_load((tmp_path / d / "config.yaml").read_text()) for d in ("one", "two")]
    assert configs[1].pop("out").endswith("two") and configs[0].pop("out").endswith("one")
    assert configs[1] == configs[0]
