"""Preference pairs: record validation (one sentence naming file and line, or a counted skip), tokenising with
response-only labels, the built-in Context-DPO / KnowPO pairs, and the leak guard of `ctxrel curate pairs`."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from ctxrel.cli import main
from ctxrel.core.errors import InputError
from ctxrel.train.pairs import generate_pairs, read_pairs

GOOD = dict(prompt="Question: What is the currency of Japan?", chosen="yen", rejected="euro")


def write_jsonl(path: Path, rows) -> Path:
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows))
    return path


@pytest.mark.parametrize("bad, words", [
    (dict(prompt="Q?", chosen="a"), "missing field 'rejected'"),
    (dict(chosen="a", rejected="b"), "missing field 'prompt'"),
    (dict(prompt="Q?", chosen="Lyon ", rejected="Lyon"), "chosen and rejected are the same text"),
    (dict(prompt="  ", chosen="a", rejected="b"), "field 'prompt' is empty"),
    (dict(prompt="Q?", chosen="", rejected="b"), "field 'chosen' is empty"),
    (dict(prompt="Q?", chosen=3, rejected="b"), "field 'chosen' must be a string"),
    (dict(prompt=[{"role": "assistant", "content": "x"}], chosen="a", rejected="b"), "ending with a user turn"),
    ("[1, 2]", "expected a JSON object"),
])
def test_invalid_records_name_file_and_line_or_are_counted(tmp_path, bad, words):
    path = write_jsonl(tmp_path / "pairs.jsonl", [GOOD, bad, GOOD])
    with pytest.raises(InputError) as e:
        read_pairs(str(path))
    assert f"{path}:2" in str(e.value) and words in str(e.value) and "\n" not in str(e.value)
    pairs, skipped = read_pairs(str(path), skip_invalid=True)
    assert len(pairs) == 2 and sum(skipped.values()) == 1


def test_chat_and_qa_records_render_with_labels_on_the_response_only(tiny_model_dir, tmp_path):
    pytest.importorskip("torch")
    from transformers import AutoTokenizer

    from ctxrel.train.pairs import tokenize_pairs

    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    rows = [dict(prompt=[{"role": "user", "content": "What is the capital city of Japan?"}],
                 chosen=[{"role": "assistant", "content": "Tokyo"}], rejected="Osaka"),
            dict(question="What is the capital city of France?", context="The capital city of France is Lyon.",
                 chosen="Lyon", rejected="Paris")]
    pairs, _ = read_pairs(str(write_jsonl(tmp_path / "p.jsonl", rows)))
    t = tokenize_pairs(pairs, tok, template="chat", max_length=64)
    for ids, labels, want in [(t.chosen_ids[0], t.chosen_labels[0], "Tokyo"),
                              (t.rejected_ids[1], t.rejected_labels[1], "Paris")]:
        text = tok.decode([i for i, y in zip(ids, labels) if y != -100])
        assert text.startswith(want) and "<|im_end|>" in text and "Question" not in text
    prompt = tok.decode([i for i, y in zip(t.chosen_ids[1], t.chosen_labels[1]) if y == -100])
    assert "Background: The capital city of France is Lyon." in prompt  # the mixture's prompt body
    first = [y != -100 for y in t.chosen_labels[0]].index(True)  # prompt tokens of each pair
    second = [y != -100 for y in t.chosen_labels[1]].index(True)
    assert second > first + 2
    with pytest.raises(InputError, match=r"p\.jsonl:2: the prompt is \d+ tokens"):  # over-long prompt
        tokenize_pairs(pairs, tok, template="chat", max_length=first + 2)
    t = tokenize_pairs(pairs, tok, template="chat", max_length=first + 2, skip_invalid=True)
    assert len(t.chosen_ids) == 1 and t.stats["skipped"]


def test_built_in_pairs_follow_their_kind_and_never_touch_evaluation_entities():
    from ctxrel.curate.pairs import pair_overlap
    from ctxrel.core.matching import match

    records = generate_pairs(600, irrelevant=0.5, seed=3)
    assert {r["kind"] for r in records} == {"conflict", "irrelevant"}
    assert sum(r["kind"] == "irrelevant" for r in records) == 300
    for r in records:
        assert r["chosen"] != r["rejected"]
        states = match(r["context"], [r["chosen"]], [r["rejected"]])
        if r["kind"] == "conflict":  # the context states the chosen answer, not the memorised one
            assert states.contains_context and not states.contains_parametric
        else:  # the irrelevant context states the distractor; memory (chosen) answers
            assert states.contains_parametric and not states.contains_context
            assert not match(r["context"], [r["subject"]], []).contains_context
        assert pair_overlap(r) == []
    assert generate_pairs(600, irrelevant=0.5, seed=3) == records


def test_curate_pairs_refuses_pairs_that_name_evaluation_entities(tmp_path, capsys):
    user = write_jsonl(tmp_path / "mine.jsonl", [
        dict(prompt="Which city hosts the Louvre?", chosen="Paris", rejected="Rome"),  # cf_capitals cities
        dict(question="Who wrote Hamlet?", chosen="William Shakespeare", rejected="Ben Jonson"),  # biographies
        dict(question="What is the chemical symbol for gold?", context="Gold is written Ag.", chosen="Ag",
             rejected="Au"),
        dict(prompt="Q?", chosen="x", rejected="x")])
    assert main(["curate", "pairs", "--out", str(tmp_path / "o"), "--user", str(user), "n=10",
                 "irrelevant=0.3", "--skip-invalid"]) == 0
    manifest = json.loads((tmp_path / "o" / "manifest.json").read_text())
    c = manifest["counts"]
    assert c["kinds"] == {"conflict": 7, "irrelevant": 3, "user": 1}
    assert c["refused_overlap"] == {"user": 2} and sum(c["skipped_invalid"].values()) == 1
    kept = [json.loads(line) for line in (tmp_path / "o" / "data.jsonl").read_text().splitlines()]
    assert not any("Paris" in json.dumps(r) or "Shakespeare" in json.dumps(r) for r in kept)
    assert "11 pairs" in capsys.readouterr().out
    # built from the evaluation benchmark itself, every pair is refused: exit 2, one sentence
    assert main(["curate", "pairs", "--out", str(tmp_path / "o2"), "--source", "cf_capitals", "n=6"]) == 2
    err = capsys.readouterr().err
    assert "names an entity of an evaluation benchmark" in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "o2" / "data.jsonl").exists()
