"""gold / irrelevant context builders on hand-made items, and variant names (contexts.py)."""

from ctxrel.benchmarks.schema import ConflictItem
from ctxrel.benchmarks.contexts import build_kind, gold_item, irrelevant_item, parse_variant, variant_name


def item(i, context, question, ca, pa, *, ca_alias=(), meta=None, prompt=None):
    return ConflictItem(id=f"t/{i}", benchmark="t", category="c", context=context, question=question,
                        context_answer=ca, parametric_answer=pa, context_aliases=tuple(ca_alias),
                        prompt=prompt, meta=meta or {})


FRANCE = item("fr", "Lyon is the capital of France. Lyon's parliament moved in 2019; Lyonnais food is famous.",
              "What is the capital of France?", "Lyon", "Paris", meta={"country": "France"})
FRANCE_2 = item("fr2", "Since 2019 France has been governed from Lyon.", "Which city is the capital of France?",
                "Lyon", "Paris", meta={"country": "France"})
JAPAN = item("jp", "Osaka is the capital of Japan.", "What is the capital of Japan?", "Osaka", "Tokyo",
             meta={"country": "Japan"})
EGYPT = item("eg", "New Cairo is the capital of Egypt.", "What is the capital of Egypt?", "New Cairo", "Cairo",
             meta={"country": "Egypt"})
MENTIONS_PARIS = item("it", "Milan, not Rome and not Paris, is the capital of Italy.",
                      "What is the capital of Italy?", "Milan", "Rome", meta={"country": "Italy"})
NEWTON = item("nw", "Julius Caesar was an English physicist. His Principia set out the laws of motion, and Caesar "
              "also built a telescope. Caesar's optics were new.", "Who wrote the Principia?", "Julius Caesar",
              "Isaac Newton", ca_alias=("Caesar",), meta={"person": "Isaac Newton"})
MEMOTRAP = item("mt", "", "", "a", "b", prompt="Write a quote that ends in the word 'heavy':")


def test_gold_replaces_whole_words_only_and_keeps_the_wrong_answer_to_check():
    g, why = gold_item(FRANCE)
    assert why == ""
    # "Lyonnais" is another word: left alone; "Lyon's" is a mention
    assert g.context == "Paris is the capital of France. Paris's parliament moved in 2019; Lyonnais food is famous."
    assert g.id == FRANCE.id and g.context_answer == "Lyon" and g.parametric_answer == "Paris"
    assert g.meta["context_kind"] == "gold"


def test_gold_on_nested_answers():
    g, _ = gold_item(EGYPT)
    assert g.context == "Cairo is the capital of Egypt."


def test_gold_uses_the_substitution_engine_for_people():
    g, why = gold_item(NEWTON)
    assert why == ""
    assert "Caesar" not in g.context
    assert g.context.startswith("Isaac Newton was an English physicist.")
    assert "Newton also built" in g.context and "Newton's optics" in g.context


def test_gold_skips_what_cannot_be_turned_and_says_why():
    no_mention = item("x", "The capital moved in 2019.", "What is the capital of Peru?", "Cusco", "Lima")
    assert gold_item(no_mention)[0] is None and "does not name" in gold_item(no_mention)[1]
    assert gold_item(MEMOTRAP)[0] is None
    # a bare name part that could be either of two people of one sentence is a leak: skipped (a bare surname
    # in a later sentence goes to the most recently mentioned bearer, so it no longer counts)
    kin = item("k", "Marie Curie and Pierre Curie won a prize, and Curie spoke first.", "Who won?", "Marie Curie",
               "Ada Lovelace", meta={"person": "Ada Lovelace"})
    built, skipped = build_kind([FRANCE, kin, MEMOTRAP], "gold")
    assert [b.id for b in built] == ["t/fr"]
    assert [s[0] for s in skipped] == ["t/k", "t/mt"] and "leak" in skipped[0][1]


def test_irrelevant_borrows_another_subjects_context_seeded():
    pool = [FRANCE, FRANCE_2, JAPAN, EGYPT, MENTIONS_PARIS]
    a, _ = irrelevant_item(FRANCE, pool, seed=0)
    assert a.meta["context_from"] in {"t/jp", "t/eg"}  # not France again, not the context naming Paris
    assert a.question == FRANCE.question and a.parametric_answer == "Paris"
    other = next(o for o in pool if o.id == a.meta["context_from"])
    assert a.context == other.context and a.context_answer == other.context_answer
    # deterministic, and independent of the pool's order
    assert irrelevant_item(FRANCE, pool[::-1], seed=0)[0] == a
    picks = {irrelevant_item(FRANCE, pool, seed=s)[0].meta["context_from"] for s in range(20)}
    assert picks == {"t/jp", "t/eg"}  # the seed matters


def test_irrelevant_skips_when_nothing_fits():
    built, skipped = build_kind([FRANCE, FRANCE_2, MEMOTRAP], "irrelevant", seed=0)
    assert built == [] and len(skipped) == 3


def test_variant_names_round_trip_and_keep_todays_name():
    assert variant_name("cf_capitals", "conflict", "greedy") == "cf_capitals"
    for kind in ("conflict", "gold", "irrelevant"):
        for dec in ("greedy", "cad", "cad0.5", "adacad"):
            assert parse_variant(variant_name("nq_swap", kind, dec)) == ("nq_swap", kind, dec)
    assert parse_variant("world_facts") == ("world_facts", "conflict", "greedy")
