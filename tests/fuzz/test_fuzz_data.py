"""Fuzzing the instruction data a study trains on (ctxrel.train.data): alpaca, chat and squad records in JSON,
JSON Lines and gzip. Round trip: the examples (turns, Alpaca fields, and the rendered alpaca / tulu training
text) are exactly what the drawn records say. Damage and arbitrary JSON: examples, or one sentence naming the
file -- never a traceback."""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

import pytest

pytest.importorskip("hypothesis")
from hypothesis import example, given, strategies as st  # noqa: E402

from fuzzkit import JSON, TEXT, jsonl_bytes, mutated, one_sentence, outcome, snapshot, write  # noqa: E402

from ctxrel.config.settings import DataConfig  # noqa: E402
from ctxrel.train.data import load_examples, render_segments  # noqa: E402

ALPACA = st.fixed_dictionaries({"instruction": TEXT, "input": TEXT, "output": TEXT})
CHAT = st.fixed_dictionaries({"messages": st.lists(st.fixed_dictionaries(
    {"role": st.sampled_from(["user", "assistant", "system"]), "content": TEXT}), min_size=1, max_size=4)})
SQUAD = st.fixed_dictionaries({"context": TEXT, "question": TEXT,
                               "answers": st.fixed_dictionaries({"text": st.lists(TEXT, min_size=1, max_size=2)})})
PACKAGING = st.sampled_from(["d.jsonl", "d.json", "d.jsonl.gz", "d.json.gz", "wrapped.json"])


def _bytes(name: str, records: list) -> bytes:
    if name.startswith("wrapped"):
        return json.dumps({"train": records}).encode()
    return jsonl_bytes(records) if ".jsonl" in name else json.dumps(records).encode()


def _load(path: Path, fmt: str = "auto", limit=None):
    return outcome(lambda: load_examples(DataConfig(source=str(path), format=fmt, limit=limit), seed=0))


@given(records=st.lists(ALPACA, min_size=1, max_size=5), name=PACKAGING)
@example(records=[{"instruction": "Name a city.", "input": "", "output": "Lyon"}], name="d.json.gz")
def test_alpaca_round_trip(records, name):
    with tempfile.TemporaryDirectory() as d:
        path = write(Path(d) / name, _bytes(name, records))
        before = snapshot(Path(d))
        examples, err = _load(path)
        assert snapshot(Path(d)) == before
        assert err is None, err  # every drawn record is a valid alpaca record
        assert len(examples) == len(records)
        for ex, r in zip(examples, records):
            user = r["instruction"] + (f"\n\n{r['input']}" if r["input"] else "")
            assert ex.messages == [{"role": "user", "content": user}, {"role": "assistant", "content": r["output"]}]
            assert ex.alpaca == (r["instruction"], r["input"])
            segs = render_segments(ex, "alpaca", None, "</s>")
            assert segs[-1] == (r["output"] + "</s>", True) and not segs[0][1]
            assert r["instruction"] in segs[0][0] and r["input"] in segs[0][0]


@given(records=st.lists(CHAT, min_size=1, max_size=4), name=PACKAGING)
def test_chat_records(records, name):
    """Chat records load turn for turn, or (no assistant turn) are refused naming the record and the key."""
    with tempfile.TemporaryDirectory() as d:
        path = write(Path(d) / name, _bytes(name, records))
        examples, err = _load(path)
        lonely = [r for r in records if not any(m["role"] == "assistant" for m in r["messages"])]
        if err is not None:
            assert lonely, f"refused valid chat records: {err}"
            one_sentence(err, str(path))
            assert "messages" in str(err)
            return
        assert not lonely
        assert [ex.messages for ex in examples] == [r["messages"] for r in records]
        for ex in examples:  # tulu renders every turn, labels exactly the assistant turns
            segs = render_segments(ex, "tulu", None, "</s>")
            assert [t for t, train in segs if train] == [m["content"] + "</s>" for m in ex.messages
                                                         if m["role"] == "assistant"]


@given(records=st.lists(SQUAD, min_size=1, max_size=4), name=PACKAGING)
def test_squad_records(records, name):
    with tempfile.TemporaryDirectory() as d:
        path = write(Path(d) / name, _bytes(name, records))
        examples, err = _load(path)
        assert err is None, err
        for ex, r in zip(examples, records):
            assert ex.messages[1]["content"] == r["answers"]["text"][0]
            assert r["question"] in ex.messages[0]["content"]


@given(values=st.lists(JSON, min_size=1, max_size=4), name=PACKAGING,
       fmt=st.sampled_from(["auto", "alpaca", "chat", "squad"]))
@example(values=[1, 2], name="d.json", fmt="auto")
@example(values=[None], name="d.jsonl", fmt="auto")
@example(values=["text"], name="d.json", fmt="auto")
def test_arbitrary_json_records(values, name, fmt):
    """Any JSON value where a record should be: examples, or one sentence naming the file."""
    with tempfile.TemporaryDirectory() as d:
        path = write(Path(d) / name, _bytes(name, values))
        examples, err = _load(path, fmt)
        if err is not None:
            one_sentence(err, str(path))
        else:
            assert len(examples) == len(values)


GOOD = jsonl_bytes([{"instruction": "Name a city.", "input": "", "output": "Lyon"},
                    {"messages": [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello"}]},
                    {"instruction": "Add.", "input": "1 2", "output": "3"}])


@given(data=st.data(), name=st.sampled_from(["d.jsonl", "d.jsonl.gz", "d.json"]), limit=st.none() | st.integers(1, 3))
def test_damaged_data_files(data, name, limit):
    raw = GOOD if ".jsonl" in name else json.dumps([json.loads(x) for x in GOOD.splitlines()]).encode()
    with tempfile.TemporaryDirectory() as d:
        path = write(Path(d) / name, data.draw(mutated(raw)))
        examples, err = _load(path, limit=limit)
        if err is not None:
            one_sentence(err, str(path))
