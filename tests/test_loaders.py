"""Loaders: each published format -> ConflictItems, and every kind of bad input -> InputError at file:line."""

from __future__ import annotations

import gzip
import json
import os
from pathlib import Path

import pytest

from ctxrel.benchmarks.loaders import (FORMATS, LoadResult, load_ctxrel_jsonl, load_file, load_memotrap,
                                       load_nq_swap, load_study_json, load_study_jsonl, sniff_format)
from ctxrel.core.errors import InputError
from ctxrel.core.matching import match

# ------------------------------------------------------------------ fixtures (a few rows per format)

WORLD_FACTS = [
    {"context": "Lyon is the capital of France.", "question": "What is the capital of France?",
     "answer": "Lyon", "memory_answer": "Paris"},
    {"context": "The capital of Egypt is Cairo, not New Cairo.", "question": "What is the capital of Egypt?",
     "answer": "Cairo", "memory_answer": "New Cairo", "category": "capitals"},
    # the same question again with a different context answer: both rows are kept
    {"context": "Marseille is the capital of France.", "question": "What is the capital of France?",
     "answer": "Marseille", "memory_answer": "Paris"},
]
BIOGRAPHIES = [
    {"context": "Marie Curie was born in Lisbon.", "question": "Where was Marie Curie born?",
     "answer": "Lisbon", "parametric_answer": "Warsaw"},
    {"context": "Alan Turing was born in 1950.", "question": "When was Alan Turing born?",
     "answer": "1950", "parametric_answer": "1912", "id": "turing"},
]
PROVERB_CSV = '''prompt,classes,answer_index
"Write a quote that ends in the word ""heavy"": Absence makes the heart grow","[' heavy.', ' fonder.']",0
"Write a quote that ends in the word ""me"": Admiration: our polite recognition of another man's resemblance to","[' ourselves.', ' me.']",1
'''
TRANSLATION_CSV = '''prompt,classes,answer_index
"Translate the following sentence from French into English.
Les absents sont toujours dans l'arrière-plan.
to:
The absent are always in the","[' wrong.', ' background.']",1
"Translate the following sentence from German into English.
Lange abwesend, bald zurück.
to:
Long absent, soon","[' returned.', ' forgotten.']",0
'''
HISTORY_CSV = '''prompt,classes,answer_index
"What was the common wisdom before the following event: Aristotle argued that Earth is spherical.
A. The Earth is spherical.
B. The Earth is flat.
Answer:","["" A"", "" B""]",1
'''
MEMOTRAP_JSONL = [
    {"prompt": 'Write a quote that ends in the word "heavy": Absence makes the heart grow',
     "classes": "[' heavy.', ' fonder.']", "answer_index": 0, "round": 2, "part": 1},
    {"prompt": 'Write a sign that says Irish citizens do not "need visas": No Irish need',
     "classes": "[' visas', ' apply']", "answer_index": 0, "round": 2, "part": 3},
]
NQ_SWAP = [
    {"question": "how many episodes are in chicago fire season 4",
     "org_context": "<P> The season contained 23 episodes . </P>", "org_answer": ["23"],
     "sub_context": "<P> The season   contained 775 episodes . </P>", "sub_answer": ["775"]},
    {"question": "who wrote the song",
     "org_context": "<P> Written by Jim Capaldi . </P>", "org_answer": ["Jim Capaldi", "Capaldi"],
     "sub_context": "<P> Written by Ada Lovelace . </P>", "sub_answer": ["Ada Lovelace", "Lovelace"]},
]
CTXREL = [
    {"context": "Lyon is the capital of France.", "question": "What is the capital of France?",
     "context_answer": "Lyon", "parametric_answer": "Paris"},
    {"id": "q7", "category": "capitals", "context": "The capital of Japan is Osaka.",
     "question": "What is the capital of Japan?", "context_answer": "Osaka", "parametric_answer": "Tokyo",
     "context_aliases": ["Osaka City"], "parametric_aliases": ["Tokyo Metropolis"], "meta": {"year": 2024}},
]


def _jsonl(rows: list) -> str:
    return "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows)


def _write(path: Path, text: str | bytes) -> Path:
    data = text.encode("utf-8") if isinstance(text, str) else text
    path.write_bytes(gzip.compress(data) if path.suffix == ".gz" else data)
    return path


@pytest.fixture
def files(tmp_path: Path) -> dict[str, Path]:
    memotrap_dir = tmp_path / "memotrap"
    memotrap_dir.mkdir()
    _write(memotrap_dir / "1-proverb-ending.csv", PROVERB_CSV)
    _write(memotrap_dir / "2-proverb-translation.csv", TRANSLATION_CSV)
    _write(memotrap_dir / "4-history-of-science-qa.csv", HISTORY_CSV)
    return {
        "study_json": _write(tmp_path / "world_facts.json", json.dumps(WORLD_FACTS, indent=2)),
        "study_jsonl": _write(tmp_path / "famous_biographies.jsonl", _jsonl(BIOGRAPHIES)),
        "memotrap": memotrap_dir,
        "memotrap_csv": memotrap_dir / "1-proverb-ending.csv",
        "memotrap_jsonl": _write(tmp_path / "memo-trap_isp_round2.jsonl", _jsonl(MEMOTRAP_JSONL)),
        "nq_swap": _write(tmp_path / "nqswap.jsonl.gz", _jsonl(NQ_SWAP)),
        "ctxrel_jsonl": _write(tmp_path / "mine.jsonl", _jsonl(CTXREL)),
    }


# ------------------------------------------------------------------ mapping


def test_study_json_mapping_keeps_nested_and_repeated_questions(files):
    result = load_study_json(files["study_json"], name="world_facts")
    assert isinstance(result, LoadResult) and result.skipped == []
    a, b, c = result.items
    assert (a.id, a.benchmark, a.category) == ("world_facts/0", "world_facts", "world_facts")
    assert (a.context_answer, a.parametric_answer) == ("Lyon", "Paris")
    assert a.source == f"{files['study_json']}:[1]"
    assert (b.context_answer, b.parametric_answer, b.category) == ("Cairo", "New Cairo", "capitals")
    assert match("It is Cairo.", b.context_answers, b.parametric_answers).outcome == "context"
    assert a.question == c.question and (c.id, c.context_answer) == ("world_facts/2", "Marseille")


def test_study_jsonl_mapping(files):
    items = load_study_jsonl(files["study_jsonl"], name="bio").items
    assert [(i.id, i.category, i.context_answer, i.parametric_answer) for i in items] == [
        ("bio/0", "famous_biographies", "Lisbon", "Warsaw"), ("turing", "famous_biographies", "1950", "1912")]
    assert items[1].source == f"{files['study_jsonl']}:2"


def test_study_json_gz(tmp_path):
    path = _write(tmp_path / "country_capitals_only.json.gz", json.dumps(WORLD_FACTS))
    items = load_study_json(path, name="cc").items
    assert len(items) == 3 and items[0].category == "country_capitals_only"


def test_memotrap_csv_directory_mapping(files):
    items = load_memotrap(files["memotrap"], name="memotrap").items
    assert [i.id for i in items] == [f"memotrap/{n}" for n in range(5)]
    heavy, admiration, absent, returned, science = items
    assert heavy.category == "proverb_ending"
    assert (heavy.context_answer, heavy.parametric_answer) == ("heavy", "fonder")
    assert (heavy.context_continuation, heavy.parametric_continuation) == (" heavy.", " fonder.")
    assert heavy.prompt == heavy.context == 'Write a quote that ends in the word "heavy": Absence makes the heart grow'
    assert heavy.question == "Absence makes the heart grow"
    assert heavy.source == f"{files['memotrap_csv']}:2"
    # answer_index 1 picks the second class; a colon inside the proverb stays in the question
    assert (admiration.context_answer, admiration.parametric_answer) == ("me", "ourselves")
    assert admiration.question == "Admiration: our polite recognition of another man's resemblance to"
    assert absent.category == "proverb_translation" and absent.question == "The absent are always in the"
    assert (absent.context_answer, absent.parametric_answer) == ("background", "wrong")
    assert absent.source.endswith("2-proverb-translation.csv:2") and returned.source.endswith(".csv:6")


def test_memotrap_history_of_science_uses_option_texts(files):
    science = load_memotrap(files["memotrap"] / "4-history-of-science-qa.csv", name="m").items[0]
    assert science.category == "history_of_science_qa"
    assert (science.context_answer, science.parametric_answer) == ("The Earth is flat", "The Earth is spherical")
    assert (science.context_continuation, science.parametric_continuation) == (" B", " A")
    assert science.question == science.prompt == (
        "What was the common wisdom before the following event: Aristotle argued that Earth is spherical.\n"
        "A. The Earth is spherical.\nB. The Earth is flat.\nAnswer:")


def test_memotrap_jsonl_mapping(files):
    items = load_memotrap(files["memotrap_jsonl"], name="isp").items
    assert [(i.category, i.context_answer, i.parametric_answer) for i in items] == [
        ("part1", "heavy", "fonder"), ("part3", "visas", "apply")]
    assert items[1].question == "No Irish need" and items[1].meta == {"answer_index": 0, "round": 2, "part": 3}


def test_nq_swap_mapping(files):
    first, second = load_nq_swap(files["nq_swap"], name="nq_swap").items
    assert first.context == "The season contained 775 episodes ."
    assert (first.context_answer, first.parametric_answer, first.category) == ("775", "23", "nq_swap")
    assert first.meta["org_context"] == "The season contained 23 episodes ."
    assert second.context_aliases == ("Lovelace",) and second.parametric_aliases == ("Capaldi",)
    assert second.source == f"{files['nq_swap']}:2"


def test_ctxrel_jsonl_mapping(files):
    first, second = load_ctxrel_jsonl(files["ctxrel_jsonl"], name="mine").items
    assert (first.id, first.category, first.context_answer) == ("mine/0", "mine", "Lyon")
    assert (second.id, second.category) == ("q7", "capitals")
    assert second.context_answers == ("Osaka", "Osaka City")
    assert second.parametric_answers == ("Tokyo", "Tokyo Metropolis") and second.meta == {"year": 2024}


@pytest.mark.parametrize("key", ["study_json", "study_jsonl", "memotrap", "memotrap_csv", "memotrap_jsonl",
                                 "nq_swap", "ctxrel_jsonl"])
def test_sniff_format_and_load_file(files, key):
    expected = key.split("_")[0] if key.startswith("memotrap") else key
    assert sniff_format(files[key]) == expected and expected in FORMATS
    assert load_file(files[key], name="b").items


def test_sniff_format_unknown(tmp_path):
    with pytest.raises(InputError, match=r"other\.jsonl:1.*unknown benchmark format.*'text'"):
        sniff_format(_write(tmp_path / "other.jsonl", '{"text": "hello"}\n'))
    with pytest.raises(InputError, match=r"empty\.json: no items to load"):
        sniff_format(_write(tmp_path / "empty.json", "[]"))
    with pytest.raises(InputError, match=r"notes\.txt.*unknown file type"):
        sniff_format(_write(tmp_path / "notes.txt", "hello"))


# ------------------------------------------------------------------ bad input

GOOD = json.dumps(CTXREL[0]).encode()


def _row(**changes) -> bytes:
    row = {k: v for k, v in CTXREL[0].items() if changes.get(k, 0) is not None}
    row.update({k: v for k, v in changes.items() if v is not None})
    return json.dumps(row).encode()


BAD_ROWS = {
    "malformed": (b'{"context": "x", ', "malformed JSON at column"),
    "not_object": (b'["Lyon", "Paris"]', "expected a JSON object, found a list"),
    "missing": (_row(question=None), "missing field 'question' (fields found: context, context_answer, parametric"),
    "answer_type": (_row(context_answer=5), "[context_answer]: context_answer must be a string, found a number"),
    "alias_type": (_row(context_aliases="Lyon"), "[context_aliases]: context_aliases must be a list of strings"),
    "alias_items": (_row(parametric_aliases=["Paname", 3]), "parametric_aliases must be a list of strings"),
    "empty_context": (_row(context="  "), "[context]: empty context"),
    "same_answer": (_row(parametric_answer="lyon."), "context answer equals parametric answer ('lyon'"),
    "non_utf8": (b'{"context": "caf\xe9", "question": "q", "context_answer": "a", "parametric_answer": "b"}',
                 "not valid UTF-8: byte b'\\xe9' at column 17"),
    "unknown_key": (_row(answer="Lyon"), "[answer]: unknown key 'answer'; valid keys: context, question"),
    "meta_type": (_row(meta=[1]), "[meta]: meta must be an object, found a list"),
}


@pytest.mark.parametrize("case", sorted(BAD_ROWS))
def test_bad_row_names_file_and_line(tmp_path, case):
    line, expected = BAD_ROWS[case]
    path = _write(tmp_path / "bad.jsonl", GOOD + b"\n\n" + line + b"\n" + GOOD.replace(b"Lyon", b"Nice") + b"\n")
    with pytest.raises(InputError) as err:
        load_ctxrel_jsonl(path, name="b")
    assert "bad.jsonl:3" in str(err.value) and expected in str(err.value), str(err.value)
    assert err.value.line == 3

    result = load_ctxrel_jsonl(path, name="b", skip_invalid=True)
    assert [i.id for i in result.items] == ["b/0", "b/2"]  # ids keep the row index of the file
    assert len(result.skipped) == 1 and result.skipped[0][0] == f"{path}:3"
    assert result.skipped[0][1] == str(err.value)


def test_study_json_missing_field_names_index(tmp_path):
    rows = [WORLD_FACTS[0], {"context": "c", "question": "q", "answer": "a"}]
    path = _write(tmp_path / "world_facts.json", json.dumps(rows))
    with pytest.raises(InputError, match=r"world_facts\.json:\[2\] \[memory_answer\]: missing field 'memory_answer' "
                                         r"\(fields found: context, question, answer\)"):
        load_study_json(path, name="w")
    result = load_study_json(path, name="w", skip_invalid=True)
    assert len(result.items) == 1 and result.skipped[0][0] == f"{path}:[2]"


def test_study_json_malformed_reports_line_and_column(tmp_path):
    path = _write(tmp_path / "world_facts.json", '[\n  {"context": "c",\n   "question" "q"}\n]')
    with pytest.raises(InputError, match=r"world_facts\.json:3: malformed JSON at column 15"):
        load_study_json(path, name="w")


def test_study_json_non_utf8_reports_line_and_offset(tmp_path):
    path = _write(tmp_path / "world_facts.json", b'[\n {"context": "Z\xfcrich"}\n]')
    with pytest.raises(InputError, match=r"world_facts\.json:2: not valid UTF-8: byte b'\\xfc' at byte offset 17"):
        load_study_json(path, name="w")


def test_study_json_not_a_list(tmp_path):
    with pytest.raises(InputError, match=r"w\.json: expected a JSON list of objects, found an object"):
        load_study_json(_write(tmp_path / "w.json", json.dumps(WORLD_FACTS[0])), name="w")


@pytest.mark.parametrize("loader", [load_study_json, load_study_jsonl, load_memotrap, load_nq_swap,
                                    load_ctxrel_jsonl, load_file])
def test_missing_file(tmp_path, loader):
    with pytest.raises(InputError, match=r"nope\.jsonl: file not found"):
        loader(tmp_path / "nope.jsonl", name="b")


@pytest.mark.parametrize("name", ["empty.jsonl", "empty.json", "empty.csv", "empty.jsonl.gz"])
def test_empty_file(tmp_path, name):
    path = _write(tmp_path / name, "\n  \n")
    with pytest.raises(InputError, match=rf"{name.replace('.', '[.]')}: empty file: no items"):
        load_file(path, name="b") if not name.endswith(".json") else load_study_json(path, name="b")


def test_all_rows_invalid_is_an_error(tmp_path):
    path = _write(tmp_path / "bad.jsonl", _row(context="") + b"\n")
    with pytest.raises(InputError, match=r"bad\.jsonl: no items loaded \(1 invalid rows skipped\)"):
        load_ctxrel_jsonl(path, name="b", skip_invalid=True)


def test_study_jsonl_answer_not_string(tmp_path):
    path = _write(tmp_path / "bio.jsonl", _jsonl([BIOGRAPHIES[0], {**BIOGRAPHIES[1], "answer": 1950}]))
    with pytest.raises(InputError, match=r"bio\.jsonl:2 \[answer\]: answer must be a string, found a number"):
        load_study_jsonl(path, name="bio")


def test_nq_swap_bad_answer_list(tmp_path):
    rows = [NQ_SWAP[0], {**NQ_SWAP[1], "sub_answer": []}, {**NQ_SWAP[1], "org_answer": "Capaldi"}]
    path = _write(tmp_path / "nq.jsonl", _jsonl(rows))
    with pytest.raises(InputError, match=r"nq\.jsonl:2 \[sub_answer\]: sub_answer is an empty list"):
        load_nq_swap(path, name="nq")
    result = load_nq_swap(path, name="nq", skip_invalid=True)
    assert [s[0] for s in result.skipped] == [f"{path}:2", f"{path}:3"]
    assert "org_answer must be a list of strings" in result.skipped[1][1]


def test_memotrap_bad_rows(tmp_path):
    text = HISTORY_CSV + (
        '"Which? \nA. The Earth is flat.\nB. The Earth is flat!\nAnswer:","["" A"", "" B""]",0\n'
        '"Which? \nA. Light is a wave.\nB. Light is a wave and a particle.\nAnswer:","["" A"", "" B""]",0\n'
        '"Say: x","[\' a.\', __import__(\'os\')]",0\n'
        '"Say: x","[\' a.\', \' b.\']",2\n')
    path = _write(tmp_path / "4-history-of-science-qa.csv", text)
    with pytest.raises(InputError, match=r"qa\.csv:6 \[prompt\]: options 'The Earth is flat' and 'The Earth is "
                                         r"flat' are identical or nested"):
        load_memotrap(path, name="m")
    result = load_memotrap(path, name="m", skip_invalid=True)
    assert len(result.items) == 1
    reasons = dict(result.skipped)
    assert "nested" in reasons[f"{path}:10"]
    assert "classes is not a Python list literal" in reasons[f"{path}:14"]
    assert "answer_index must be 0 or 1, found '2'" in reasons[f"{path}:15"]


def test_memotrap_csv_missing_column(tmp_path):
    path = _write(tmp_path / "1-proverb-ending.csv", "prompt,answer_index\n\"x\",0\n")
    with pytest.raises(InputError, match=r"ending\.csv:1: missing column\(s\) \['classes'\]"):
        load_memotrap(path, name="m")


def test_corrupt_gzip(tmp_path):
    path = tmp_path / "nq.jsonl.gz"
    path.write_bytes(b"not gzip at all")
    with pytest.raises(InputError, match=r"nq\.jsonl\.gz: not a readable gzip file"):
        load_nq_swap(path, name="nq")


# ------------------------------------------------------------------ real files (CTXREL_TEST_DATA)


def _data(*parts: str) -> Path:
    root = os.environ.get("CTXREL_TEST_DATA")
    if not root:
        pytest.skip("CTXREL_TEST_DATA not set: real MemoTrap/NQ-Swap files unavailable")
    return Path(root, *parts)


def test_real_memotrap_csvs():
    result = load_memotrap(_data("memotrap"), name="memotrap", skip_invalid=True)
    assert len(result.items) + len(result.skipped) == 2539
    # The only invalid rows are proverbs whose two endings differ in case only (" First." / " first."):
    # 6 in the proverb-ending CSV and their 6 translations.
    assert len(result.skipped) == 12
    assert all("context answer equals parametric answer" in reason for _, reason in result.skipped)
    first = result.items[0]
    assert (first.context_answer, first.parametric_answer) == ("heavy", "fonder")
    assert first.question == "Absence makes the heart grow"
    assert {i.category for i in result.items} == {"proverb_ending", "proverb_translation", "hate_speech_ending",
                                                  "history_of_science_qa"}
    assert sum(i.category == "history_of_science_qa" for i in result.items) == 736


def test_real_memotrap_prize_jsonl():
    result = load_memotrap(_data("memotrap", "memo-trap_isp_round2.jsonl"), name="isp", skip_invalid=True)
    assert len(result.items) + len(result.skipped) == 936 and len(result.skipped) == 6
    assert (result.items[0].context_answer, result.items[0].parametric_answer) == ("heavy", "fonder")
    assert {i.category for i in result.items} == {"part1", "part3"}


def test_real_nq_swap():
    path = _data("nq_swap", "nqswap.jsonl.gz")
    assert sniff_format(path) == "nq_swap"
    result = load_nq_swap(path, name="nq_swap")
    assert len(result.items) == 4746 and result.skipped == []
    first = result.items[0]
    assert (first.context_answer, first.parametric_answer) == ("775", "23")
    assert "<P>" not in first.context and "775 episodes" in first.context


def test_ctxrel_jsonl_round_trips_to_dict(tmp_path):
    import json

    from ctxrel.benchmarks.builtin import build_cf_capitals
    from ctxrel.benchmarks.loaders import load_ctxrel_jsonl

    items = build_cf_capitals()[:3]
    path = tmp_path / "export.jsonl"
    path.write_text("".join(json.dumps(it.to_dict()) + "\n" for it in items))
    loaded = load_ctxrel_jsonl(path, name="cf_capitals").items
    assert [(a.id, a.context, a.context_answer, a.parametric_answer, a.parametric_aliases) for a in loaded] == \
        [(b.id, b.context, b.context_answer, b.parametric_answer, b.parametric_aliases) for b in items]
    assert loaded[0].source.endswith("export.jsonl:1")
