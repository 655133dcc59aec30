"""ctxrel curate: the context rule, keyword matching, C / C+S / S thresholds, loss scoring (batched = one at a
time, resume), filters, counterfactual augmentation, manifests, errors, and the CLI on real data slices."""

from __future__ import annotations

import gzip
import hashlib
import json
import math
from pathlib import Path

import pytest

from ctxrel.cli import main
from ctxrel.config.settings import DataConfig
from ctxrel.curate import augment as A
from ctxrel.curate.dataset import context_of, has_context, load_records, without_context
from ctxrel.curate.filters import (KeywordMatcher, classify_score, countries_capitals, loss_threshold, quantile,
                                   read_keyword_file)
from ctxrel.curate.config import AugmentConfig, ClassifyConfig, FilterConfig
from ctxrel.curate.operations import augment, classify, filter_records
from ctxrel.core.errors import CtxrelError, InputError
from ctxrel.train.data import load_examples

ALPACA = [
    {"instruction": "Give three tips for staying healthy.", "input": "", "output": "Eat well, sleep, move."},
    {"instruction": "Identify the odd one out.", "input": "Paris, Lyon, Tokyo", "output": "Tokyo"},
    {"instruction": "Summarise the text.", "input": "The capital city of France is Paris.",
     "output": "Paris is the capital of France."},
    {"instruction": "Name a city in Japan.", "input": "   ", "output": "Osaka"},
    {"instruction": "Translate to French.", "input": "Good morning", "output": "Bonjour"},
    {"instruction": "What is the capital city of Japan?", "input": "", "output": "Tokyo"},
]


def write_jsonl(path: Path, rows) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def lines(path: Path) -> list[dict]:
    return [json.loads(x) for x in path.read_text().splitlines() if x.strip()]


@pytest.fixture
def alpaca_file(tmp_path) -> Path:
    return write_jsonl(tmp_path / "alpaca.jsonl", ALPACA)


@pytest.fixture(scope="module")
def tiny(tiny_model_dir):
    from ctxrel.models.loading import load_model

    model, tok, _ = load_model(str(tiny_model_dir), device="cpu")
    return model, tok


# -- the context rule ------------------------------------------------------------------------------------------

def test_alpaca_context_is_the_non_blank_input():
    assert [has_context(r, "alpaca") for r in ALPACA] == [False, True, True, False, True, False]
    stripped = without_context(ALPACA[1], "alpaca")
    assert stripped == {**ALPACA[1], "input": ""} and ALPACA[1]["input"]  # a copy; the original is untouched


@pytest.mark.parametrize("user, context, rest", [
    ("Summarise the text.\n\nThe capital city of France is Paris.", "The capital city of France is Paris.",
     "Summarise the text."),  # Alpaca-style: request, blank line, input
    ("Background: Lyon is the capital.\n\nQuestion: What is the capital?", "Background: Lyon is the capital.",
     "Question: What is the capital?"),  # a labelled block is the context, wherever it is
    ("Answer briefly.\n\nCONTEXT : It rained.\n\nDid it rain?", "CONTEXT : It rained.",
     "Answer briefly.\n\nDid it rain?"),
    ("Write a poem about the sea.", "", "Write a poem about the sea."),  # one block, no label: no context
    ("Question: What is the capital city of Japan?", "", "Question: What is the capital city of Japan?"),
    ("Line one\nline two of the same block", "", "Line one\nline two of the same block"),
])
def test_chat_context_rule(user, context, rest):
    rec = {"messages": [{"role": "system", "content": "Be kind.\n\nBe brief."}, {"role": "user", "content": user},
                        {"role": "assistant", "content": "ok"}, {"role": "user", "content": "More\n\nplease"},
                        {"role": "assistant", "content": "ok"}]}
    assert context_of(rec, "chat") == context
    out = without_context(rec, "chat")
    assert out["messages"][1]["content"] == (rest if context else user)
    assert out["messages"][0] == rec["messages"][0] and out["messages"][3] == rec["messages"][3]  # first turn only


def test_mixture_and_squad_context():
    assert has_context({"kind": "cs", "context": "Japan uses the yen.", "question": "q", "answer": "a"}, "mixture")
    assert not has_context({"kind": "s", "context": "", "question": "q", "answer": "a"}, "mixture")
    assert without_context({"context": "c", "question": "q", "answers": {"text": ["a"]}}, "squad")["context"] == ""


# -- C / C+S / S -----------------------------------------------------------------------------------------------

def test_quantile_matches_numpy():
    np = pytest.importorskip("numpy")
    xs = [3.0, 1.0, 4.0, 1.5, 9.0, 2.6, 5.0]
    for q in (0, 0.1, 0.25, 0.5, 0.9, 1):
        assert quantile(xs, q) == pytest.approx(float(np.quantile(xs, q)))


def test_classification_thresholds():
    scores = [dict(context=True, loss_without=x) for x in (0.5, 1.0, 2.0, 3.0, 4.0)] + \
             [dict(context=False, loss_without=0.1), dict(context=True, loss_without=None)]
    cut = loss_threshold(scores, quantile_=0.25)  # over the 5 scored context losses only: 1.0
    assert cut == pytest.approx(1.0)
    assert [classify_score(s, cut) for s in scores] == ["C+S", "C", "C", "C", "C", "S", "unscored"]
    assert [classify_score(s, 2.5) for s in scores[:5]] == ["C+S", "C+S", "C+S", "C", "C"]
    assert loss_threshold(scores, value=2.5) == 2.5
    with pytest.raises(CtxrelError, match="quantile"):
        loss_threshold(scores, quantile_=1.5)
    with pytest.raises(CtxrelError, match="no scored context records"):
        loss_threshold([dict(context=False, loss_without=1.0)], quantile_=0.25)
    # the S-quantile rule: the median loss of the records without context (0.1 and 2.2 -> 1.15)
    s_scores = scores + [dict(context=False, loss_without=2.2)]
    assert loss_threshold(s_scores, s_quantile=0.5) == pytest.approx(1.15)
    with pytest.raises(CtxrelError, match="exactly one"):
        loss_threshold(scores, quantile_=0.25, value=1.0)


# -- keywords --------------------------------------------------------------------------------------------------

def test_keywords_match_whole_words_only():
    m = KeywordMatcher(["Roman", "Cairo", "New Cairo", "Nice", "United States", "Paris"])
    assert m.find("Romania and the Romans") == []
    assert m.find("Roman roads") == ["Roman"]
    assert m.find("She flew from New Cairo to Cairo.") == ["New Cairo", "Cairo"]  # longest name first
    assert m.find("a nicely done Niceness") == []
    assert m.find("The United\n  States' flag, Paris-based, France's") == ["United States", "Paris"]
    assert m.find("Paris2 _Paris_ Paris_") == ["Paris"]  # a digit glues, an underscore separates
    assert m.find("paris") == [] and KeywordMatcher(["Paris"], ignore_case=True).find("PARIS, paris") == ["Paris"]


def test_countries_capitals_list_holds_the_benchmark_names():
    names = set(countries_capitals())
    assert {"France", "Paris", "Lyon", "Marseille", "Toulouse", "Japan", "Tokyo"} <= names
    from ctxrel.benchmarks.registry import load_benchmark

    for item in load_benchmark("cf_capitals").items:  # both answers of every evaluation item are listed
        assert item.context_answer in names and item.parametric_answer in names
        assert KeywordMatcher(countries_capitals()).find(item.context)  # so every context is caught


def test_keyword_file(tmp_path):
    f = tmp_path / "names.txt"
    f.write_text("# entities\nParis\n\n  Lyon  \n")
    assert read_keyword_file(f) == ["Paris", "Lyon"]
    (tmp_path / "empty.txt").write_text("# nothing\n")
    with pytest.raises(CtxrelError, match="no names"):
        read_keyword_file(tmp_path / "empty.txt")
    (tmp_path / "long.txt").write_text("Paris\n" + "x" * 300 + "\n")
    with pytest.raises(InputError, match=r"long.txt:2"):
        read_keyword_file(tmp_path / "long.txt")


def test_filter_keywords_and_context_only(alpaca_file, tmp_path):
    (tmp_path / "kw.txt").write_text("Paris\nOsaka\n")
    r = filter_records(FilterConfig(data=str(alpaca_file), out=tmp_path / "out", keep="context-only",
                                    drop_keywords=str(tmp_path / "kw.txt")))
    kept = lines(tmp_path / "out" / "data.jsonl")
    assert kept == [ALPACA[4]]  # 1, 2 name Paris; 0, 3, 5 have no context; Osaka (3) was already dropped
    assert r["counts"]["dropped"] == {"no context (S)": 3, "keyword": 2}
    assert r["keywords"]["records_per_name"] == {"Paris": 2}
    dropped = lines(tmp_path / "out" / "dropped.jsonl")
    assert [d["index"] for d in dropped] == [0, 1, 2, 3, 5] and dropped[1]["reason"] == "keyword: Paris"
    examples = load_examples(DataConfig(source=str(tmp_path / "out" / "data.jsonl")))
    assert len(examples) == 1 and examples[0].alpaca == ("Translate to French.", "Good morning")


# -- manifest --------------------------------------------------------------------------------------------------

def test_manifest_hashes_inputs_and_outputs(alpaca_file, tmp_path):
    filter_records(FilterConfig(data=str(alpaca_file), out=tmp_path / "o", keep="context-only", limit=4))
    m = json.loads((tmp_path / "o" / "manifest.json").read_text())
    assert m["operation"] == "curate filter" and m["ctxrel_version"]
    data = m["inputs"][0]
    assert data["sha256"] == hashlib.sha256(alpaca_file.read_bytes()).hexdigest()
    assert data["records"] == 4 and data["format"] == "alpaca"
    out = {o["path"]: o for o in m["outputs"]}
    assert out["data.jsonl"]["sha256"] == hashlib.sha256((tmp_path / "o" / "data.jsonl").read_bytes()).hexdigest()
    assert m["counts"] == {"input": 4, "kept": 2, "dropped": {"no context (S)": 2}, "kept_share": 0.5}
    assert m["parameters"]["keep"] == "context-only" and m["created"]


# -- bad input -------------------------------------------------------------------------------------------------

def test_bad_records_name_file_line_and_key(tmp_path):
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps(ALPACA[0]) + "\n" + json.dumps({"instruction": "x", "output": 3}) + "\n")
    with pytest.raises(InputError) as e:
        load_records(str(bad))
    assert str(e.value).startswith(f"{bad}:2 [output]")
    (tmp_path / "broken.jsonl").write_text(json.dumps(ALPACA[0]) + "\n{not json\n")
    with pytest.raises(InputError, match=r"broken.jsonl:2"):
        load_records(str(tmp_path / "broken.jsonl"))
    with pytest.raises(CtxrelError, match="no such file"):
        load_records("./missing.jsonl")


def test_bad_nq_swap_and_flags(tmp_path, alpaca_file):
    nq = write_jsonl(tmp_path / "nq.jsonl", [NQ[0], {"question": "q", "sub_context": "c", "sub_answer": 5}])
    with pytest.raises(InputError) as e:
        A.read_nq_swap(nq)
    assert str(e.value).startswith(f"{nq}:2 [sub_answer]")
    with pytest.raises(CtxrelError, match="nq-swap=PATH"):
        A.parse_counterfactual("nqswap:foo")
    with pytest.raises(CtxrelError, match=r"--ratio 1"):
        augment(AugmentConfig(data=str(alpaca_file), out=tmp_path / "o", counterfactual="facts", ratio=1.0))
    with pytest.raises(CtxrelError, match="nothing to filter"):
        filter_records(FilterConfig(data=str(alpaca_file), out=tmp_path / "o"))


# -- augmentation ----------------------------------------------------------------------------------------------

NQ = [
    {"question": "who wrote the novel dune", "org_context": "<P> Dune is a novel by Frank Herbert . </P>",
     "org_answer": ["Frank Herbert"], "sub_context": "<P> Dune is a novel by Jane Austen , published 1965 . </P>",
     "sub_answer": ["Jane Austen"]},
    {"question": "who wrote the novel dune", "org_context": "<P> Dune is a novel by Frank Herbert . </P>",
     "org_answer": ["Frank Herbert"], "sub_context": "<P> Dune is a novel by Mark Twain . </P>",
     "sub_answer": ["Mark Twain"]},
    {"question": "how many moons does mars have", "org_context": "<P> Mars has two moons . </P>",
     "org_answer": ["two"], "sub_context": "<P> Mars has 14 moons ( small ones ) . </P>", "sub_answer": ["14"]},
    {"question": "what colour is the sky", "org_context": "<P> The sky is blue . </P>", "org_answer": ["blue"],
     "sub_context": "<P> The sky is blue . </P>", "sub_answer": ["blue"]},  # not a substitution: skipped
    {"question": "who painted x", "org_context": "<P> X was painted by A . </P>", "org_answer": ["A"],
     "sub_context": "<P> X was painted by someone . </P>", "sub_answer": ["B"]},  # answer not in context
]


def test_read_nq_swap_cleans_and_skips(tmp_path):
    pool, skipped = A.read_nq_swap(write_jsonl(tmp_path / "nq.jsonl", NQ))
    assert [(c.context, c.question, c.answer) for c in pool] == [
        ("Dune is a novel by Jane Austen, published 1965.", "Who wrote the novel dune?", "Jane Austen"),
        ("Dune is a novel by Mark Twain.", "Who wrote the novel dune?", "Mark Twain"),
        ("Mars has 14 moons (small ones).", "How many moons does mars have?", "14")]
    assert skipped == {"answer not in substituted context": 1, "substituted answer equals the original": 1}
    first_two = A.nq_swap_draw(pool, 2, __import__("random").Random(0))
    assert {c.question for c in first_two} == {"Who wrote the novel dune?", "How many moons does mars have?"}


@pytest.mark.parametrize("fmt", ["alpaca", "chat", "mixture"])
def test_augment_ratio_format_and_seed(tmp_path, fmt):
    if fmt == "alpaca":
        rows = ALPACA * 5
    elif fmt == "chat":
        rows = [{"messages": [{"role": "user", "content": r["instruction"]},
                              {"role": "assistant", "content": r["output"]}]} for r in ALPACA * 5]
    else:
        rows = None
    data = "mixture" if rows is None else str(write_jsonl(tmp_path / "in.jsonl", rows))
    nq = tmp_path / "nq.jsonl.gz"
    with gzip.open(nq, "wt") as f:
        f.write("".join(json.dumps(r) + "\n" for r in NQ))
    r = augment(AugmentConfig(data=data, out=tmp_path / "a", counterfactual=f"nq-swap={nq}", ratio=0.25, seed=1,
                              limit=30))
    out = lines(tmp_path / "a" / "data.jsonl")
    assert len(out) == 40 and r["counts"]["added"] == {"nq-swap": 10}  # 30 * 0.25 / 0.75
    added = [x for x in out if "ctxrel_origin" in x]
    assert len(added) == 10 and r["repeats"] == 7  # 3 usable rows, cycled
    originals = [x for x in out if "ctxrel_origin" not in x]
    src = lines(Path(data)) if rows else [rec.data for rec in load_records("mixture", limit=30, seed=1)[0]]
    assert originals == src  # original order kept
    ex = added[0]
    if fmt == "alpaca":
        assert set(ex) == {"instruction", "input", "output", "ctxrel_origin"} and ex["output"] in ex["input"]
    elif fmt == "chat":
        assert ex["messages"][0]["content"].startswith("Background: ") and has_context(ex, "chat")
    else:
        assert ex["kind"] == "c" and ex["answer"] in ex["context"]
    examples = load_examples(DataConfig(source=str(tmp_path / "a" / "data.jsonl")))
    assert len(examples) == 40
    augment(AugmentConfig(data=data, out=tmp_path / "b", counterfactual=f"nq-swap={nq}", ratio=0.25, seed=1, limit=30))
    assert (tmp_path / "a" / "data.jsonl").read_bytes() == (tmp_path / "b" / "data.jsonl").read_bytes()
    m = json.loads((tmp_path / "a" / "manifest.json").read_text())
    assert m["inputs"][1]["sha256"] == hashlib.sha256(nq.read_bytes()).hexdigest()


def test_augment_from_fact_tables_is_counterfactual(alpaca_file, tmp_path):
    from ctxrel.core.matching import normalize
    from ctxrel.train.mixture import load_fact_tables

    truth = {(f.subject, f.relation): {normalize(a) for a in (f.answer, *f.aliases)} for f in load_fact_tables()}
    drawn = A.facts_draw(200, __import__("random").Random(0))
    for cf in drawn:
        relation, subject = cf.origin.split(":")[1], cf.origin.split(":")[2].split(" (true")[0]
        assert normalize(cf.answer) not in truth[(subject, relation)]
        # containment as scoring reads it: a sentence may open with the answer ("The Wright brothers invented")
        assert f" {normalize(cf.answer)} " in f" {normalize(cf.context)} " and cf.question.endswith("?")
    r = augment(AugmentConfig(data=str(alpaca_file), out=tmp_path / "f", counterfactual="facts", ratio=0.5))
    assert r["counts"]["added"] == {"facts": 6}


# -- scoring on a tiny model -----------------------------------------------------------------------------------

def _reference_loss(model, tok, rec, fmt, context=True):
    """Mean response-token loss through the model's own forward(labels=...): the unbatched reference."""
    import torch

    from ctxrel.curate.dataset import Record
    from ctxrel.curate.scoring import record_sequences

    data = rec if context else without_context(rec, fmt)
    [(_, _, ids, labels)] = record_sequences([Record(data, 0, "t", fmt)][:1], tok, template="chat",
                                             max_length=512)[:1]
    with torch.inference_mode():
        return model(input_ids=torch.tensor([ids]), labels=torch.tensor([labels])).loss.item()


def test_scores_batched_equal_reference(tiny, tmp_path, alpaca_file):
    from ctxrel.curate.scoring import score_records

    model, tok = tiny
    records, _ = load_records(str(alpaca_file))
    rows = score_records(records, tmp_path / "s", model_spec="tiny", model=model, tok=tok, batch_size=4,
                         progress=False)
    one = score_records(records, tmp_path / "s1", model_spec="tiny", model=model, tok=tok, batch_size=1,
                        progress=False)
    for r, a, b in zip(ALPACA, rows, one):
        assert a["context"] == has_context(r, "alpaca")
        assert a["loss_with"] == pytest.approx(b["loss_with"], abs=1e-4)
        assert a["loss_without"] == pytest.approx(b["loss_without"], abs=1e-4)
        assert a["loss_with"] == pytest.approx(_reference_loss(model, tok, r, "alpaca"), abs=1e-4)
        # a record without context (record 3's blank input included) is scored once, as the trainer renders it
        ref = _reference_loss(model, tok, r, "alpaca", context=not a["context"])
        assert a["loss_without"] == pytest.approx(ref, abs=1e-4)
    assert rows[1]["loss_with"] != rows[1]["loss_without"]  # the context changes the loss


def test_classify_resumes_and_reports(tiny, tmp_path, alpaca_file):
    import ctxrel.curate.scoring as S

    out = tmp_path / "c"
    classify(ClassifyConfig(data=str(alpaca_file), out=out, model="tiny", limit=4, progress=False), loaded=tiny)
    assert len(lines(out / "scores.jsonl")) == 4
    calls = []
    real = S.TokenLosses.__call__

    def counting(self, ids, labels):
        calls.append(len(ids))
        return real(self, ids, labels)

    S.TokenLosses.__call__ = counting
    try:
        with open(out / "scores.jsonl", "a") as f:
            f.write('{"index": 4, "digest": "cut-by-a-cra')  # a crash remnant: ignored, then truncated
        r = classify(ClassifyConfig(data=str(alpaca_file), out=out, model="tiny", progress=False), loaded=tiny)
        assert sum(calls) == 3  # only records 4 (with + without context) and 5 (no context) were scored
        calls.clear()
        classify(ClassifyConfig(data=str(alpaca_file), out=out, model="tiny", progress=False), loaded=tiny)
        assert calls == []
    finally:
        S.TokenLosses.__call__ = real
    scores = lines(out / "scores.jsonl")
    assert [s["index"] for s in scores] == [0, 1, 2, 3, 4, 5]
    rep = json.loads((out / "report.json").read_text())
    assert rep["counts"]["S"] == 3 and rep["counts"]["C"] + rep["counts"]["C+S"] == 3
    assert rep["counts"]["C+S"] == sum(s["loss_without"] < r["report"]["threshold"] for s in scores if s["context"])
    assert (out / "loss_without_context.png").read_bytes()[:4] == b"\x89PNG"
    annotated = lines(out / "data.jsonl")
    assert annotated[0]["ctxrel_class"] == "S" and annotated[0]["instruction"] == ALPACA[0]["instruction"]
    assert len(load_examples(DataConfig(source=str(out / "data.jsonl")))) == 6
    with pytest.raises(CtxrelError, match="other settings"):
        classify(ClassifyConfig(data=str(alpaca_file), out=out, model="tiny", progress=False, max_length=64),
                                loaded=tiny)
    changed = [dict(r) for r in ALPACA]
    changed[2]["output"] = "Lyon."
    write_jsonl(alpaca_file, changed)
    with pytest.raises(CtxrelError, match="has changed since it was scored"):
        classify(ClassifyConfig(data=str(alpaca_file), out=out, model="tiny", progress=False), loaded=tiny)


def test_filter_context_critical_uses_classify_scores(tiny, tmp_path, alpaca_file):
    classify(ClassifyConfig(data=str(alpaca_file), out=tmp_path / "c", model="tiny", progress=False), loaded=tiny)
    scores = {s["index"]: s for s in lines(tmp_path / "c" / "scores.jsonl")}
    r = filter_records(FilterConfig(data=str(alpaca_file), out=tmp_path / "f", keep="context-critical",
                                    scores=tmp_path / "c",
                                    drop_threshold=sorted(s["loss_without"] for s in scores.values() if s["context"])[1]))
    kept = lines(tmp_path / "f" / "data.jsonl")
    assert len(kept) == 2 and r["counts"]["dropped"] == {"no context (S)": 3,
                                                        "C+S: loss without context below the threshold": 1}
    # computing the scores in place gives the same result
    filter_records(FilterConfig(data=str(alpaca_file), out=tmp_path / "g", keep="context-critical",
                                progress=False, drop_threshold=r["threshold"]), loaded=tiny)
    assert lines(tmp_path / "g" / "data.jsonl") == kept and (tmp_path / "g" / "scores.jsonl").exists()
    classify(ClassifyConfig(data=str(alpaca_file), out=tmp_path / "part", limit=2, model="tiny", progress=False),
                            loaded=tiny)
    with pytest.raises(CtxrelError, match="2 of 3 records are not scored"):  # records 2 and 4 are missing
        filter_records(FilterConfig(data=str(alpaca_file), out=tmp_path / "h", keep="context-critical",
                                    scores=tmp_path / "part"))
    with pytest.raises(CtxrelError, match="no scores.jsonl there"):
        filter_records(FilterConfig(data=str(alpaca_file), out=tmp_path / "h", keep="context-critical",
                                    scores=tmp_path / "nowhere"))


# -- CLI -------------------------------------------------------------------------------------------------------

@pytest.mark.integration
def test_cli_verbs(tmp_path, alpaca_file, tiny_model_dir, capsys):
    assert main(["curate", "filter", "--data", "mixture", "--limit", "60", "--keep", "context-only",
                 "--drop-keywords", "countries-capitals", "--out", str(tmp_path / "m")]) == 0
    assert "kept" in capsys.readouterr().out
    assert main(["curate", "augment", "--data", str(alpaca_file), "--counterfactual", "facts", "--ratio", "0.5",
                 "--out", str(tmp_path / "a")]) == 0
    assert main(["curate", "classify", "--data", "mixture", "--limit", "12", "--model", str(tiny_model_dir),
                 "--no-progress", "--out", str(tmp_path / "c")]) == 0
    printed = capsys.readouterr().out
    assert "C+S" in printed and "mixture: the loss rule agrees" in printed
    assert main(["curate", "filter", "--data", str(tmp_path / "nope.jsonl"), "--keep", "context-only",
                 "--out", str(tmp_path / "x")]) == 2
    assert "no such file" in capsys.readouterr().err


# -- real data (CTXREL_TEST_DATA) ------------------------------------------------------------------------------

def test_real_alpaca_context_only_share(test_data, tmp_path):
    r = filter_records(FilterConfig(data=str(test_data / "alpaca" / "alpaca_data.json.gz"), out=tmp_path / "o",
                                    keep="context-only", limit=2000))
    share = r["counts"]["kept_share"]
    assert 0.3 < share < 0.5  # 39.8% of the full 52,002 records carry an input
    kept = load_examples(DataConfig(source=str(tmp_path / "o" / "data.jsonl")))
    assert len(kept) == r["counts"]["kept"] and all(ex.alpaca[1] for ex in kept)


def test_real_alpaca_keywords_and_nq_swap(test_data, tmp_path):
    alpaca = str(test_data / "alpaca" / "alpaca_data.json.gz")
    r = filter_records(FilterConfig(data=alpaca, out=tmp_path / "k", drop_keywords="countries-capitals", limit=2000))
    names = r["keywords"]["records_per_name"]
    assert 20 < r["keywords"]["records_dropped"] < 300 and "France" in names and "Roman" not in names
    records = load_records(alpaca, limit=2000)[0]
    for d in lines(tmp_path / "k" / "dropped.jsonl")[:20]:
        rec = records[d["index"]].data
        assert all(n in json.dumps(rec, ensure_ascii=False) for n in d["reason"][len("keyword: "):].split(", "))
    a = augment(AugmentConfig(data=alpaca, out=tmp_path / "a",
                              counterfactual=f"nq-swap={test_data / 'nq_swap' / 'nqswap.jsonl.gz'}", ratio=0.1,
                              limit=900))
    assert a["counts"]["added"] == {"nq-swap": 100} and a["repeats"] == 0
    out = lines(tmp_path / "a" / "data.jsonl")
    added = [x for x in out if "ctxrel_origin" in x]
    assert len({x["instruction"] for x in added}) == 100  # distinct questions first
    assert all(x["output"].lower() in x["input"].lower() and "<P>" not in x["input"] for x in added)
    assert len(load_examples(DataConfig(source=str(tmp_path / "a" / "data.jsonl")))) == 1000


@pytest.mark.slow
def test_smollm2_separates_mixture_kinds(tmp_path):
    """On the built-in mixture the generator knows each record's kind: invented-entity (c) records must have a
    far higher loss without context than real-fact (cs) records under the real model."""
    pytest.importorskip("gguf")
    from ctxrel.models.loading import load_model

    try:
        loaded = load_model("smollm2-135m-instruct", device="cpu")[:2]
    except CtxrelError as e:
        pytest.skip(f"SmolLM2 unavailable: {e}")
    r = classify(ClassifyConfig(data="mixture", out=tmp_path / "c", limit=16, progress=False),
                                loaded=loaded)  # 3 c, 10 cs, 3 s
    scores = lines(tmp_path / "c" / "scores.jsonl")
    recs = lines(tmp_path / "c" / "data.jsonl")
    mean = lambda xs: sum(xs) / len(xs)  # noqa: E731
    without = {k: mean([s["loss_without"] for s, x in zip(scores, recs) if x["kind"] == k]) for k in ("c", "cs")}
    gain = mean([s["loss_without"] - s["loss_with"] for s in scores if s["context"]])
    print(f"loss without context: {without}; mean gain from the context {gain:.2f}; {r['report']['counts']}")
    assert without["c"] > without["cs"] + 0.5  # invented facts are harder to guess than known ones
    assert gain > 0.5  # the context lowers the loss
    # 13 context records: their 0.25-quantile is the 4th smallest loss, so 3 lie strictly below it
    assert r["report"]["counts"] == {"C": 10, "C+S": 3, "S": 3, "unscored": 0}
    assert all(math.isfinite(s["loss_with"]) for s in scores)


@pytest.mark.parametrize("spec, said", [("mixture:ci=abc", "must be a number"), ("mixture:zz=0.1", "one of c, cs"),
                                        ("mixture:ci=0.3", "sum to 1")])
def test_bad_mixture_shares_are_refused_before_the_output_directory_exists(tmp_path, capsys, spec, said):
    out = tmp_path / "out"
    assert main(["curate", "augment", "--data", spec, "--counterfactual", "facts", "--ratio", "0.1",
                 "--out", str(out)]) == 2
    assert said in capsys.readouterr().err and not out.exists()


def test_mixture_shares_select_the_kinds(tmp_path):
    from ctxrel.curate.dataset import load_records

    records, source = load_records("mixture:c=0.2,cs=0.4,ci=0.2,s=0.2", limit=50, seed=0)
    kinds = [r.data["kind"] for r in records]
    assert len(records) == 50 and {k: kinds.count(k) for k in set(kinds)} == {"c": 10, "cs": 20, "ci": 10, "s": 10}
    assert source.params["ci"] == 0.2
