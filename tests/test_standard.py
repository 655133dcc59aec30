"""Standard benchmarks: lm-eval prompt formats on tiny fixtures, pure metrics on hand cases, real-file counts."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import pytest

from ctxrel.core.errors import CtxrelError, InputError
from ctxrel.standard import (GenItem, MCItem, gsm8k_correct, gsm8k_extract, load_task, mc_scores,
                             score_generation, squad_em_f1, stratified_limit, truncate_at_stop)

# ------------------------------------------------------------------------------------------------------ fixtures

MMLU_HEADER = "question,choice0,choice1,choice2,choice3,answer\n"


def write_mmlu(root: Path, subjects=("abstract_algebra", "anatomy"), n_test=3, n_dev=5) -> Path:
    (root / "test").mkdir(parents=True)
    (root / "dev").mkdir()
    for s in subjects:
        (root / "dev" / f"{s}_dev.csv").write_text(
            MMLU_HEADER + "".join(f"{s} dev q{i}?,a{i},b{i},c{i},d{i},{i % 4}\n" for i in range(n_dev)))
        (root / "test" / f"{s}_test.csv").write_text(
            MMLU_HEADER + "".join(f"\"{s} test q{i}, really?\",w,x,y,z,{(i + 1) % 4}\n" for i in range(n_test)))
    return root


def arc_row(qid: str, stem: str, texts, labels, key) -> str:
    return json.dumps({"id": qid, "question": {"stem": stem, "choices": [
        {"text": t, "label": lab} for t, lab in zip(texts, labels)]}, "answerKey": key}) + "\n"


def write_arc(root: Path) -> Path:
    root.mkdir(parents=True)
    (root / "ARC-Challenge-Test.jsonl").write_text(
        arc_row("q1", "Which is a gas?", ["rock", "air", "wood", "iron"], "ABCD", "B")
        + arc_row("q2", "Pick three.", ["one", "two", "three"], "123", "3"))
    (root / "ARC-Challenge-Dev.jsonl").write_text(arc_row("d1", "Dev stem?", ["no", "yes"], "AB", "B"))
    return root


def write_gsm8k(root: Path, n=4) -> Path:
    root.mkdir(parents=True)
    rows = [{"question": f"What is {i} + {i}?", "answer": f"{i} + {i} = <<{i}+{i}={2 * i}>>{2 * i}\n#### {2 * i}"}
            for i in range(n)]
    rows[3]["answer"] = "Big.\n#### 1,234"
    (root / "test.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return root


def write_squad(root: Path) -> Path:
    root.mkdir(parents=True)
    doc = {"version": "1.1", "data": [{"title": "Super_Bowl_50", "paragraphs": [{
        "context": "Denver beat Carolina.", "qas": [
            {"id": "a1", "question": "Who won?", "answers": [{"text": "Denver", "answer_start": 0},
                                                               {"text": "Denver", "answer_start": 0}]},
            {"id": "a2", "question": "Who lost?", "answers": [{"text": "Carolina", "answer_start": 12}]}]}]}]}
    with gzip.open(root / "dev-v1.1.json.gz", "wt", encoding="utf-8") as f:
        json.dump(doc, f)
    return root


# ------------------------------------------------------------------------------------------------------- loaders

def test_mmlu_prompt_is_lm_eval_5shot_from_dev(tmp_path):
    items = load_task("mmlu", write_mmlu(tmp_path / "mmlu"))
    assert [i.id for i in items][:4] == ["mmlu/abstract_algebra/0", "mmlu/abstract_algebra/1",
                                         "mmlu/abstract_algebra/2", "mmlu/anatomy/0"]
    it = items[1]
    shots = "".join(f"abstract_algebra dev q{i}?\nA. a{i}\nB. b{i}\nC. c{i}\nD. d{i}\nAnswer: {'ABCD'[i % 4]}\n\n"
                    for i in range(5))
    assert it.prompt == ("The following are multiple choice questions (with answers) about abstract algebra.\n\n"
                         + shots + "abstract_algebra test q1, really?\nA. w\nB. x\nC. y\nD. z\nAnswer:")
    assert it.choices == (" A", " B", " C", " D") and it.gold == 2 and it.category == "abstract_algebra"
    assert "anatomy dev" in items[3].prompt and "abstract_algebra dev" not in items[3].prompt
    zero = load_task("mmlu", tmp_path, shots=0)  # the data root works too
    assert zero[1].prompt == ("The following are multiple choice questions (with answers) about abstract algebra."
                              "\n\nabstract_algebra test q1, really?\nA. w\nB. x\nC. y\nD. z\nAnswer:")
    assert load_task("mmlu", tmp_path / "mmlu", shots=2)[0].prompt.count("Answer:") == 3


def test_arc_prompt_choices_and_numeric_labels(tmp_path):
    items = load_task("arc_challenge", write_arc(tmp_path / "arc_challenge") / "ARC-Challenge-Test.jsonl")
    a, b = items
    assert a.prompt == "Question: Which is a gas?\nAnswer:"
    assert a.choices == (" rock", " air", " wood", " iron") and a.gold == 1 and a.id == "arc_challenge/q1"
    assert b.choices == (" one", " two", " three") and b.gold == 2
    one_shot = load_task("arc_challenge", tmp_path / "arc_challenge", shots=1)
    assert one_shot[0].prompt == "Question: Dev stem?\nAnswer: yes\n\nQuestion: Which is a gas?\nAnswer:"


def test_gsm8k_shots_come_from_the_first_rows_and_are_not_evaluated(tmp_path):
    root = write_gsm8k(tmp_path / "gsm8k")
    items = load_task("gsm8k", root, shots=2)
    assert [i.id for i in items] == ["gsm8k/2", "gsm8k/3"]
    assert items[0].prompt == ("Question: What is 0 + 0?\nAnswer: 0 + 0 = <<0+0=0>>0\n#### 0\n\n"
                               "Question: What is 1 + 1?\nAnswer: 1 + 1 = <<1+1=2>>2\n#### 2\n\n"
                               "Question: What is 2 + 2?\nAnswer:")
    assert items[0].answers == ("4",) and items[1].answers == ("1234",)
    assert "Question:" in items[0].stop and isinstance(items[0], GenItem)
    assert len(load_task("gsm8k", root, shots=0)) == 4
    with pytest.raises(InputError, match="nothing to evaluate"):
        load_task("gsm8k", root, shots=4)


def test_squad_prompt_and_answers(tmp_path):
    items = load_task("squad", write_squad(tmp_path / "squad"))
    assert [i.id for i in items] == ["squad/a1", "squad/a2"]
    assert items[0].prompt == ("Title: Super_Bowl_50\n\nBackground: Denver beat Carolina.\n\n"
                               "Question: Who won?\n\nAnswer:")
    assert items[0].answers == ("Denver",) and items[1].answers == ("Carolina",)
    with pytest.raises(CtxrelError, match="0-shot"):
        load_task("squad", tmp_path / "squad", shots=3)


def test_bad_rows_name_file_and_line(tmp_path):
    root = write_arc(tmp_path / "arc")
    f = root / "ARC-Challenge-Test.jsonl"
    f.write_text(f.read_text() + arc_row("q3", "Bad key", ["x", "y"], "AB", "C"))
    with pytest.raises(InputError) as e:
        load_task("arc_challenge", f)
    assert e.value.path == str(f) and e.value.line == 3 and e.value.key == "answerKey"

    g = write_gsm8k(tmp_path / "g") / "test.jsonl"
    g.write_text(g.read_text() + "{not json\n")
    with pytest.raises(InputError, match=r"test\.jsonl:5: not valid JSON"):
        load_task("gsm8k", g)
    g.write_text(json.dumps({"question": "q", "answer": "no final line"}) + "\n")
    with pytest.raises(InputError, match=r"test\.jsonl:1 \[answer\]"):
        load_task("gsm8k", g, shots=0)

    m = write_mmlu(tmp_path / "m")
    bad = m / "test" / "anatomy_test.csv"
    bad.write_text(MMLU_HEADER + "\"multi\nline q\",a,b,c,d,0\nq2,a,b,c,d,E\n")
    with pytest.raises(InputError) as e:
        load_task("mmlu", m)
    assert e.value.path == str(bad) and e.value.line == 4 and e.value.key == "answer"
    (m / "dev" / "anatomy_dev.csv").unlink()
    with pytest.raises(InputError, match="anatomy_dev.csv: dev file"):
        load_task("mmlu", m)

    s = write_squad(tmp_path / "s") / "dev-v1.1.json.gz"
    doc = json.load(gzip.open(s, "rt"))
    doc["data"][0]["paragraphs"][0]["qas"][1]["answers"] = []
    with gzip.open(s, "wt") as fh:
        json.dump(doc, fh)
    with pytest.raises(InputError, match=r"dev-v1\.1\.json\.gz \[data\[0\]\.paragraphs\[0\]\.qas\[1\]\.answers\]"):
        load_task("squad", s)


def test_unknown_task_and_missing_path(tmp_path):
    with pytest.raises(CtxrelError, match="choose from gsm8k, mmlu"):
        load_task("hellaswag", tmp_path)
    with pytest.raises(CtxrelError, match="does not exist"):
        load_task("gsm8k", tmp_path / "nope")


def _items(counts: dict[str, int]) -> list[MCItem]:
    return [MCItem(id=f"{c}/{i}", task="mmlu", category=c, prompt="p", choices=(" A", " B"), gold=0)
            for c, n in counts.items() for i in range(n)]


def test_stratified_limit_is_balanced_seeded_and_prefix_stable():
    items = _items({"a": 50, "b": 5, "c": 20})
    small, large = stratified_limit(items, 9, seed=3), stratified_limit(items, 30, seed=3)
    assert large[:9] == small and len(set(i.id for i in large)) == 30
    assert sorted(i.category for i in small) == ["a"] * 3 + ["b"] * 3 + ["c"] * 3
    cats = [i.category for i in large]
    assert cats.count("b") == 5 and sorted([cats.count("a"), cats.count("c")]) == [12, 13]  # b runs out early
    assert stratified_limit(items, 9, seed=3) == small  # deterministic
    assert stratified_limit(items, 9, seed=4) != small
    assert stratified_limit(items, None) == items and len(stratified_limit(items, 1000)) == 75
    with pytest.raises(CtxrelError):
        stratified_limit(items, 0)


# ------------------------------------------------------------------------------------------------------- scoring

def test_mc_acc_and_acc_norm_can_disagree():
    item = MCItem(id="x", task="arc_challenge", category="arc_challenge", prompt="Question: q\nAnswer:",
                  choices=(" ab", " abcdefghij"), gold=1)
    # raw: -3 > -6 picks the short choice; per character: -3/2 = -1.5 < -6/10 = -0.6 picks the long one
    assert mc_scores(item, [-3.0, -6.0]) == {"acc": 0, "acc_norm": 1, "pred": 0}
    assert mc_scores(item, [-9.0, -6.0]) == {"acc": 1, "acc_norm": 1, "pred": 1}
    assert mc_scores(item, [-1.0, -1.0])["pred"] == 0  # ties go to the first choice, as np.argmax
    with pytest.raises(ValueError):
        mc_scores(item, [-1.0])


@pytest.mark.parametrize("text, expected", [
    ("She pays 1,000 + 234\n#### 1,234", "1234"),
    ("The temperature drops to #### -5", "-5"),
    ("#### 2.50 dollars, not 3", "2.50"),
    ("#### 18.", "18"),  # lm-eval drops one trailing period
    ("So the answer is $18.", "18"),  # flexible: the last number
    ("She has 3 apples and 4 pears, so 7", "7"),
    ("It costs $1,234.", "1234"),
    ("#### 5\nthen 6 more", "5"),  # strict wins over the last number
    ("no number here", None),
])
def test_gsm8k_extract(text, expected):
    assert gsm8k_extract(text) == expected


def test_gsm8k_correct_and_score():
    assert gsm8k_correct("x = 1,234\n#### 1,234", ["1234"])
    assert gsm8k_correct("so she makes $18.", ["18"])
    assert not gsm8k_correct("#### 18.00", ["18"])  # string match, as lm-eval
    assert not gsm8k_correct("I do not know", ["18"])
    item = GenItem(id="g", task="gsm8k", category="gsm8k", prompt="Question: q\nAnswer:", answers=("5",),
                   stop=("Question:",))
    assert score_generation(item, " 2+3=5\n#### 5\n\nQuestion: next #### 9") == {
        "exact_match": 1, "strict_match": 1, "flexible_match": 1}
    assert score_generation(item, " #### 5 then 7") == {"exact_match": 1, "strict_match": 1, "flexible_match": 0}
    assert score_generation(item, " it is 5") == {"exact_match": 1, "strict_match": 0, "flexible_match": 1}


def test_squad_em_f1_classic_cases():
    assert squad_em_f1("The Denver Broncos!", ["Denver Broncos"]) == (1.0, 1.0)  # article, case, punctuation
    assert squad_em_f1("Broncos", ["Denver Broncos"]) == (0.0, pytest.approx(2 / 3))  # p=1, r=1/2
    assert squad_em_f1("Carolina", ["Denver Broncos"]) == (0.0, 0.0)
    em, f1 = squad_em_f1("the Denver team", ["Panthers", "Denver Broncos", "Denver"])  # max over answers
    assert em == 0.0 and f1 == pytest.approx(2 * 0.5 * 1 / 1.5)
    assert squad_em_f1("  an  apple  ", ["apple"]) == (1.0, 1.0)
    item = GenItem(id="s", task="squad", category="squad", prompt="p", answers=("Denver Broncos",), stop=("\n",))
    assert score_generation(item, " Denver Broncos\nQuestion: who lost?") == {"exact_match": 1.0, "f1": 1.0}


def test_truncate_at_stop_uses_the_earliest_stop():
    assert truncate_at_stop("a\n\nb Question: c", ("Question:", "\n\n")) == "a"
    assert truncate_at_stop("abc", ("x",)) == "abc"
    assert truncate_at_stop("abc", "b") == "a"
    assert truncate_at_stop("abc", ()) == "abc"


# ------------------------------------------------------------------------------------------- real files (opt-in)

def test_real_gsm8k(test_data):
    items = load_task("gsm8k", test_data / "gsm8k")
    assert len(items) == 1319 - 5 and items[0].id == "gsm8k/5"
    assert items[0].prompt.startswith("Question: Janet\u2019s ducks lay 16 eggs per day.")
    assert items[0].prompt.count("\n#### ") == 5 and items[0].prompt.endswith("How much does he need to pay for "
                                                                               "them?\nAnswer:")
    assert items[0].answers == ("64",)


def test_real_mmlu(test_data):
    items = load_task("mmlu", test_data / "mmlu")
    assert len(items) == 14042 and len({i.category for i in items}) == 57
    assert sum(i.category == "professional_law" for i in items) == 1534
    first = items[0]
    assert first.id == "mmlu/abstract_algebra/0" and first.gold == 1
    assert first.prompt.startswith("The following are multiple choice questions (with answers) about abstract "
                                   "algebra.\n\nFind all c in Z_3 such that Z_3[x]/(x^2 + c) is a field.\n")
    assert first.prompt.endswith("Find the degree for the given field extension Q(sqrt(2), sqrt(3), sqrt(18)) "
                                 "over Q.\nA. 0\nB. 4\nC. 2\nD. 6\nAnswer:")
    assert first.prompt.count("Answer:") == 6


def test_real_arc_challenge(test_data):
    items = load_task("arc_challenge", test_data / "arc_challenge")
    assert len(items) == 1172
    assert sorted({len(i.choices) for i in items}) == [3, 4, 5]
    first = items[0]
    assert first.id == "arc_challenge/Mercury_7175875" and first.gold == 2
    assert first.choices[2] == " Planetary days will become shorter."
    assert first.prompt == ("Question: An astronomer observes that a planet rotates faster after a meteorite "
                            "impact. Which is the most likely effect of this increase in rotation?\nAnswer:")


def test_real_squad(test_data):
    items = load_task("squad", test_data / "squad")
    assert len(items) == 10570
    first = items[0]
    assert first.id == "squad/56be4db0acb8001400a502ec" and first.answers == ("Denver Broncos",)
    assert first.prompt.startswith("Title: Super_Bowl_50\n\nBackground: Super Bowl 50 was an American football")
    assert first.prompt.endswith("\n\nQuestion: Which NFL team represented the AFC at Super Bowl 50?\n\nAnswer:")
    mmlu = stratified_limit(load_task("mmlu", test_data / "mmlu"), 200, seed=0)
    assert len(mmlu) == 200 and len({i.category for i in mmlu}) == 57


# ------------------------------------------------------------------------------- hub schema, config selection

def test_hub_rows_give_the_same_items_as_local_files(tmp_path):
    """Rows in the hub datasets' schemas (what `load_task_hub` reads) make the very items the local files make."""
    from ctxrel.standard import items_from_hub_rows

    local = load_task("mmlu", write_mmlu(tmp_path / "mmlu"))
    test = [dict(question=f"{s} test q{i}, really?", subject=s, choices=["w", "x", "y", "z"], answer=(i + 1) % 4)
            for s in ("anatomy", "abstract_algebra") for i in range(3)]  # subject order must not matter
    dev = [dict(question=f"{s} dev q{i}?", subject=s, choices=[f"a{i}", f"b{i}", f"c{i}", f"d{i}"], answer=i % 4)
           for s in ("abstract_algebra", "anatomy") for i in range(5)]
    assert items_from_hub_rows("mmlu", test, dev, 5) == local

    arc_local = load_task("arc_challenge", write_arc(tmp_path / "arc"))
    arc_hub = [dict(id="q1", question="Which is a gas?", answerKey="B",
                    choices=dict(text=["rock", "air", "wood", "iron"], label=list("ABCD"))),
               dict(id="q2", question="Pick three.", answerKey="3",
                    choices=dict(text=["one", "two", "three"], label=list("123")))]
    assert items_from_hub_rows("arc_challenge", arc_hub, [], 0) == arc_local

    rows = [dict(question=f"q{i}?", answer=f"work\n#### {i}") for i in range(4)]
    gsm = items_from_hub_rows("gsm8k", rows[2:], rows, 2)
    assert [g.id for g in gsm] == ["gsm8k/0", "gsm8k/1"] and gsm[0].answers == ("2",)
    assert gsm[0].prompt == "Question: q0?\nAnswer: work\n#### 0\n\nQuestion: q1?\nAnswer: work\n#### 1\n\n" \
                            "Question: q2?\nAnswer:"
    sq = items_from_hub_rows("squad", [dict(id="x", title="T", context="C.", question="Q?",
                                            answers=dict(text=["a", "a", "b"], answer_start=[0, 0, 1]))], [], 0)
    assert sq[0].answers == ("a", "b") and sq[0].prompt == "Title: T\n\nBackground: C.\n\nQuestion: Q?\n\nAnswer:"


def test_standard_tasks_come_from_benchmarks_and_eval_standard(tmp_path, monkeypatch):
    from ctxrel.config.settings import EvalConfig
    from ctxrel.evaluate.run import load_standard, standard_tasks

    cfg = EvalConfig(benchmarks=["cf_capitals", "mmlu"], standard=[f"arc_challenge={write_arc(tmp_path / 'a')}"])
    assert standard_tasks(cfg) == ["mmlu", f"arc_challenge={tmp_path / 'a'}"]
    with pytest.raises(CtxrelError, match="eval.standard: 'cf_capitals' is not a standard task"):
        standard_tasks(EvalConfig(standard=["cf_capitals"]))
    with pytest.raises(CtxrelError, match="mmlu named twice"):
        standard_tasks(EvalConfig(benchmarks=["mmlu"], standard=["mmlu"]))

    write_mmlu(tmp_path / "data" / "mmlu", n_test=10)
    monkeypatch.setenv("CTXREL_DATA", str(tmp_path / "data"))
    name, items = load_standard("mmlu", EvalConfig(limit=3, standard_limit=7))
    assert name == "mmlu" and len(items) == 7  # standard_limit wins over limit
    assert len(load_standard("mmlu", EvalConfig(limit=3))[1]) == 3
