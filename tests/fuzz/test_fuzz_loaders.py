"""Fuzzing the conflict-item loaders (ctxrel.benchmarks.loaders): every supported format, plain and gzip.

Round trips: rows drawn from a model of the format are written the way the format is written (JSON, JSON Lines,
csv.writer), loaded, and compared with the items built straight from the drawn rows -- every row whose item
passes `validate_item` must come back equal (fields, id, category, source line), every other row must be
refused (or counted as skipped with --skip-invalid). Damage: the same files cut short, flipped, spliced, and
arbitrary JSON values, must load or be refused in one sentence naming the file -- never a traceback.
"""

from __future__ import annotations

import csv
import io
import json
import re
import tempfile
from pathlib import Path

import pytest

pytest.importorskip("hypothesis")
from hypothesis import example, given, strategies as st  # noqa: E402

from fuzzkit import JSON, TEXT, WORD, jsonl_bytes, mutated, one_sentence, outcome, snapshot, write  # noqa: E402

from ctxrel.benchmarks.loaders import load_file, load_memotrap  # noqa: E402
from ctxrel.benchmarks.schema import ConflictItem, validate_item  # noqa: E402
from ctxrel.core.errors import InputError  # noqa: E402

NAME = "fz"
ANSWER = st.lists(WORD, min_size=1, max_size=3).map(" ".join)


@st.composite
def conflict_row(draw) -> dict:
    """A row whose context usually states its context answer, sometimes not; answers usually differ."""
    ca, pa = draw(ANSWER), draw(ANSWER)
    states = draw(st.booleans() | st.just(True))
    context = f"{draw(TEXT)} {ca if states else ''} {draw(TEXT)}"
    return dict(context=context, question=draw(TEXT) or "Where?", context_answer=ca, parametric_answer=pa)


def _valid(item: ConflictItem, implied: bool = False) -> bool:
    try:
        validate_item(item, path="x", line=None, implied_context=implied)
        return True
    except InputError:
        return False


def check_round_trip(path: Path, expected: list[ConflictItem | None], skip: bool) -> None:
    """`expected[n]`: the item row n must load as, or None when the row is invalid (its own validity was decided
    by validate_item on the item built from the drawn row). Unique valid ids are the drawer's job."""
    root = path.parent
    before = snapshot(root)
    result, err = outcome(lambda: load_file(path, name=NAME, skip_invalid=skip))
    assert snapshot(root) == before, "the loader wrote a file"
    good = [e for e in expected if e is not None]
    if err is not None:
        one_sentence(err, str(path))
        assert not good or (not skip and len(good) < len(expected)), f"refused a valid file: {err}"
        return
    assert [it for it in result.items] == good, "loaded items differ from the rows written"
    for it, want in zip(result.items, good):
        assert it.meta == want.meta
    assert len(result.skipped) == len(expected) - len(good)
    assert skip or len(good) == len(expected)


SUFFIX = st.sampled_from(["", ".gz"])


@given(rows=st.lists(conflict_row(), min_size=1, max_size=6), gz=SUFFIX, skip=st.booleans(),
       extra=st.dictionaries(st.sampled_from(["category", "id", "meta", "context_aliases"]), TEXT, max_size=1))
@example(rows=[dict(context="The capital is Lyon, \"really\".\n", question="Capital?", context_answer="Lyon",
                    parametric_answer="Paris")], gz=".gz", skip=False, extra={})
def test_ctxrel_jsonl_round_trip(rows, gz, skip, extra):
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / f"bench.jsonl{gz}"
        written, expected = [], []
        for n, row in enumerate(rows):
            row = dict(row)
            if n == 0 and "category" in extra:
                row["category"] = extra["category"]
            if n == 0 and "id" in extra:
                row["id"] = "explicit-" + extra["id"]
            if n == 0 and "meta" in extra:
                row["meta"] = {"note": extra["meta"]}
            if n == 0 and "context_aliases" in extra:
                row["context_aliases"] = [extra["context_aliases"]]
            written.append(row)
            item = ConflictItem(id=row.get("id", f"{NAME}/{n}"), benchmark=NAME,
                                category=row.get("category", "bench"), context=row["context"],
                                question=row["question"], context_answer=row["context_answer"],
                                parametric_answer=row["parametric_answer"],
                                context_aliases=tuple(row.get("context_aliases", ())),
                                source=f"{path}:{n + 1}", meta=row.get("meta", {}))
            expected.append(item if _valid(item) else None)
        write(path, jsonl_bytes(written))
        check_round_trip(path, expected, skip)


def _study_rows(draw_rows, key: str) -> list[dict]:
    return [dict(context=r["context"], question=r["question"], answer=r["context_answer"],
                 **{key: r["parametric_answer"]}) for r in draw_rows]


@given(rows=st.lists(conflict_row(), min_size=1, max_size=6), gz=SUFFIX, skip=st.booleans(),
       extra=st.none() | TEXT)
def test_study_json_round_trip(rows, gz, skip, extra):
    """world_facts.json / country_capitals_only.json: a JSON list of {context, question, answer,
    memory_answer}; other keys go to meta."""
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / f"world_facts.json{gz}"
        written = _study_rows(rows, "memory_answer")
        if extra is not None:
            written[0]["source_note"] = extra
        expected = []
        for n, r in enumerate(written):
            item = ConflictItem(id=f"{NAME}/{n}", benchmark=NAME, category="world_facts", context=r["context"],
                                question=r["question"], context_answer=r["answer"],
                                parametric_answer=r["memory_answer"], source=f"{path}:[{n + 1}]",
                                meta={k: v for k, v in r.items() if k == "source_note"})
            expected.append(item if _valid(item) else None)
        write(path, json.dumps(written, ensure_ascii=bool(extra)).encode())
        check_round_trip(path, expected, skip)


@given(rows=st.lists(conflict_row(), min_size=1, max_size=6), gz=SUFFIX, skip=st.booleans(),
       blank=st.booleans())
def test_study_jsonl_round_trip(rows, gz, skip, blank):
    """famous_biographies.jsonl: {context, question, answer, parametric_answer} per line (blank lines are
    skipped without moving the line numbers)."""
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / f"famous_biographies.jsonl{gz}"
        written = _study_rows(rows, "parametric_answer")
        text = jsonl_bytes(written)
        if blank:
            text = b"\n" + text.replace(b"\n", b"\n\n", 1)  # line 1 blank, a blank after the first row
        lines = [n for n, raw in enumerate(text.split(b"\n"), 1) if raw.strip()]
        expected = []
        for n, (r, line) in enumerate(zip(written, lines)):
            item = ConflictItem(id=f"{NAME}/{n}", benchmark=NAME, category="famous_biographies",
                                context=r["context"], question=r["question"], context_answer=r["answer"],
                                parametric_answer=r["parametric_answer"], source=f"{path}:{line}")
            expected.append(item if _valid(item) else None)
        write(path, text)
        check_round_trip(path, expected, skip)


def _tidy(text: str) -> str:
    return " ".join(re.sub(r"</?P>", " ", text).split())


@given(rows=st.lists(conflict_row(), min_size=1, max_size=5), gz=SUFFIX, skip=st.booleans(),
       aliases=st.lists(ANSWER, max_size=2), tags=st.booleans())
def test_nq_swap_round_trip(rows, gz, skip, aliases, tags):
    """NQ-Swap JSONL: sub_context / sub_answer (a list: answer and aliases) is the context side, org_answer the
    parametric side; NQ's <P> tags are stripped and whitespace collapsed."""
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / f"nq_swap.jsonl{gz}"
        written, expected = [], []
        for n, r in enumerate(rows):
            ctx = f"<P> {r['context']} </P>" if tags else r["context"]
            row = dict(question=r["question"], org_context="<P> org </P>", org_answer=[r["parametric_answer"]],
                       sub_context=ctx, sub_answer=[r["context_answer"], *aliases])
            written.append(row)
            item = ConflictItem(id=f"{NAME}/{n}", benchmark=NAME, category="nq_swap", context=_tidy(ctx),
                                question=r["question"], context_answer=r["context_answer"],
                                parametric_answer=r["parametric_answer"], context_aliases=tuple(aliases),
                                source=f"{path}:{n + 1}", meta={"org_context": "org"})
            expected.append(item if _valid(item) else None)
        write(path, jsonl_bytes(written))
        check_round_trip(path, expected, skip)


CONTINUATION = st.builds(lambda w, p: f" {w}{p}", ANSWER, st.sampled_from(["", ".", "!", ","]))


@given(rows=st.lists(st.tuples(TEXT, CONTINUATION, CONTINUATION, st.integers(0, 1)), min_size=1, max_size=5),
       gz=SUFFIX, skip=st.booleans(), crlf=st.booleans())
@example(rows=[('Write a quote that ends in "heavy":\n"A, b', " heavy.", " light.", 0)], gz="", skip=False,
         crlf=True)
@example(rows=[("", " 0", " 0 0", 0), ("\r", " 0", " 0 0", 0)], gz="", skip=True, crlf=False)  # was: loaded
def test_memotrap_csv_round_trip(rows, gz, skip, crlf):
    """MemoTrap's CSV (prompt, classes as a Python list literal, answer_index), written by csv.writer: prompts
    with commas, quotes and newlines must come back verbatim; the two continuations keep their leading space."""
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / f"1-proverb-ending.csv{gz}"
        buf = io.StringIO(newline="")
        # csv.writer leaves a lone CR unquoted when the line ends in LF only (a file no reader can split
        # right): quote every field then
        w = csv.writer(buf, lineterminator="\r\n" if crlf else "\n",
                       quoting=csv.QUOTE_MINIMAL if crlf else csv.QUOTE_ALL)
        w.writerow(["prompt", "classes", "answer_index"])
        for prompt, a, b, idx in rows:
            w.writerow([prompt, repr([a, b]), idx])
        write(path, buf.getvalue().encode())
        root = Path(d)
        before = snapshot(root)
        result, err = outcome(lambda: load_memotrap(path, name=NAME, skip_invalid=skip))
        assert snapshot(root) == before
        if err is not None:
            one_sentence(err, str(path))
            return
        by_id = {it.id: it for it in result.items}
        assert len(result.items) + len(result.skipped) == len(rows)
        for n, (prompt, a, b, idx) in enumerate(rows):
            it = by_id.get(f"{NAME}/{n}")
            if it is None:
                continue
            assert prompt.strip(), "a row without a prompt was loaded as an item"
            assert it.prompt == prompt and it.context == prompt
            assert (it.context_continuation, it.parametric_continuation) == ((a, b) if idx == 0 else (b, a))
            assert it.category == "proverb_ending"


FILE_NAMES = st.sampled_from(["b.jsonl", "b.json", "b.csv", "b.jsonl.gz", "b.json.gz", "b.csv.gz", "nq.jsonl",
                              "b.txt", "b.gz"])
GOOD_FILES = {
    ".jsonl": jsonl_bytes([dict(context="The capital of France is Lyon.", question="Capital of France?",
                                context_answer="Lyon", parametric_answer="Paris")] * 1
                          + [dict(context="Berlin is in Spain.", question="Where is Berlin?",
                                  context_answer="Spain", parametric_answer="Germany", id="b")]),
    ".json": json.dumps([dict(context="The capital of France is Lyon.", question="Capital of France?", answer="Lyon",
                              memory_answer="Paris")] * 2).encode(),
    ".csv": b'prompt,classes,answer_index\n"Write a quote that ends in ""heavy"": A little knowledge",'
            b'"[\' heavy.\', \' dangerous.\']",0\n',
}
NQ = jsonl_bytes([dict(question="who?", org_context="<P>A</P>", org_answer=["Bob"], sub_context="<P>Al did</P>",
                       sub_answer=["Al"])])


@given(name=FILE_NAMES, data=st.data(), skip=st.booleans())
@example(name="b.jsonl", data=None, skip=False)
def test_damaged_files_of_every_format(name, data, skip):
    """A good file of each format, damaged (cut, flipped, spliced...): loads (every item valid) or is refused in
    one sentence naming the file; nothing is written."""
    plain = name.removesuffix(".gz")
    good = NQ if plain == "nq.jsonl" else GOOD_FILES.get(Path(plain).suffix, GOOD_FILES[".jsonl"])
    damaged = data.draw(mutated(good)) if data is not None else good[:-5]
    with tempfile.TemporaryDirectory() as d:
        path = write(Path(d) / name, damaged)
        before = snapshot(Path(d))
        result, err = outcome(lambda: load_file(path, name=NAME, skip_invalid=skip))
        assert snapshot(Path(d)) == before
        if err is not None:
            one_sentence(err, str(path))
            return
        for it in result.items:
            validate_item(it, path="x", line=None, implied_context=it.prompt is not None)


@given(values=st.lists(JSON, min_size=1, max_size=4), suffix=st.sampled_from([".jsonl", ".json", ".jsonl.gz"]),
       skip=st.booleans())
@example(values=[[1, 2]], suffix=".json", skip=False)
@example(values=[{"context": 1, "question": [], "answer": None, "memory_answer": {}}], suffix=".json", skip=True)
def test_arbitrary_json_values(values, suffix, skip):
    """Any JSON value where a row should be, in either JSON packaging."""
    with tempfile.TemporaryDirectory() as d:
        raw = jsonl_bytes(values) if ".jsonl" in suffix else json.dumps(values).encode()
        path = write(Path(d) / f"v{suffix}", raw)
        result, err = outcome(lambda: load_file(path, name=NAME, skip_invalid=skip))
        if err is not None:
            one_sentence(err, str(path))
            return
        assert result.items


@given(names=st.lists(st.sampled_from(["a.csv", "b.csv.gz", "c.jsonl", "d.txt"]), min_size=1, max_size=3,
                      unique=True), data=st.data())
def test_memotrap_directory(names, data):
    """A directory of MemoTrap CSVs (the repository's layout), some damaged."""
    with tempfile.TemporaryDirectory() as d:
        root = Path(d) / "memotrap"
        for n in names:
            good = GOOD_FILES[".csv"]
            write(root / n, data.draw(mutated(good)) if data.draw(st.booleans()) else good)
        result, err = outcome(lambda: load_file(root, name=NAME, skip_invalid=data.draw(st.booleans())))
        if err is not None:
            one_sentence(err, str(root))
