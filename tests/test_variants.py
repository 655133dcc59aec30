"""The do-no-harm table from hand-made metric rows, accuracy per kind, and the decodings a config asks for."""

from types import SimpleNamespace

from ctxrel.evaluate.variants import acc_value, decodings, format_harm, harm_summary, kinds, wanted


def row(bench, metric, value, ckpt="step-000004", step=4, subset="all", lo=None, hi=None):
    return dict(checkpoint=ckpt, step=step, benchmark=bench, subset=subset, metric=metric, value=value,
                ci_low=lo, ci_high=hi)


def test_harm_summary_collects_each_kind_per_decoding():
    rows = [row("cf", "cf_acc", 0.6), row("cf", "par_acc", 0.2), row("cf[gold]", "acc", 0.9),
            row("cf[irrelevant]", "acc", 0.8), row("cf[cad]", "acc", 0.75), row("cf[cad]", "acc_vs_greedy", 0.15),
            row("cf[gold,cad]", "acc", 0.7), row("cf[gold,cad]", "acc_vs_greedy", -0.2, lo=-0.3, hi=-0.1),
            row("cf[cad]", "acc", 0.5, subset="known")]
    out = harm_summary(rows)
    assert [e["decoding"] for e in out] == ["greedy", "cad"]
    g, c = out
    assert g["conflict:acc"][0] == 0.6 and g["gold:acc"][0] == 0.9 and g["irrelevant:acc"][0] == 0.8
    assert c["conflict:acc"][0] == 0.75 and c["gold:acc_vs_greedy"] == (-0.2, -0.3, -0.1)
    assert "irrelevant:acc" not in c
    text = format_harm(rows)
    assert "-0.200 [-0.30,-0.10]" in text and text.count("\n") == 3


def test_no_variants_no_table():
    assert harm_summary([row("cf", "cf_acc", 0.5)]) == [] and format_harm([row("cf", "cf_acc", 0.5)]) == ""


def test_accuracy_follows_the_right_answer_of_the_kind():
    r = dict(contains_context=True, contains_parametric=False)
    assert acc_value(r, "conflict") == 1.0 and acc_value(r, "gold") == 0.0
    ll = dict(logp_context=-3.0, logp_parametric=-1.0)
    assert acc_value(ll, "conflict") == 0.0 and acc_value(ll, "irrelevant") == 1.0


def test_greedy_and_conflict_are_always_the_reference():
    cfg = SimpleNamespace(decoding=["cad"], cad_alpha=[0.5, 1.0], contexts=["gold"])
    assert decodings(cfg) == ["greedy", "cad0.5", "cad"] and kinds(cfg) == ["conflict", "gold"]
    assert wanted(cfg) == [("conflict", "cad0.5"), ("conflict", "cad"), ("gold", "greedy"), ("gold", "cad0.5"),
                           ("gold", "cad")]
    assert wanted(SimpleNamespace(decoding=["greedy"], cad_alpha=[1.0], contexts=["conflict"])) == []
