"""The HF backend on a tiny random Llama: batching must not change greedy outputs; scores match a manual pass."""

import math

import pytest
import torch

PROMPTS = ["Background: The capital city of France is Lyon.\n\nQuestion: What is the capital city of France?",
           "Question: What is the capital city of Japan?\nAnswer:",
           "Paris",
           "Rome Milan Madrid Barcelona Tokyo Osaka Cairo New Cairo Ottawa Toronto Berlin Munich"]


def test_batched_generation_equals_one_at_a_time(tiny_lm):
    batched = tiny_lm.generate(PROMPTS, max_new_tokens=8)
    single = [tiny_lm.generate([p], max_new_tokens=8)[0] for p in PROMPTS]
    assert batched == single
    assert all(len(o) == 1 for o in batched)
    assert any(o[0] for o in batched)  # a random model still emits tokens


def test_generation_matches_plain_hf_generate(tiny_lm):
    tok, model = tiny_lm.tok, tiny_lm.model
    for p in PROMPTS[:2]:
        ids = torch.tensor([tiny_lm.encode(p)])
        out = model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), max_new_tokens=8,
                             do_sample=False, pad_token_id=tok.pad_token_id, eos_token_id=tiny_lm.stop_ids)
        expect = tok.decode(out[0, ids.shape[1]:], skip_special_tokens=True).strip()
        assert tiny_lm.generate([p], max_new_tokens=8)[0][0] == expect


def test_samples_are_returned_per_prompt(tiny_lm):
    out = tiny_lm.generate(PROMPTS[:2], max_new_tokens=4, samples=3, temperature=1.0, seed=1)
    assert [len(o) for o in out] == [3, 3]
    again = tiny_lm.generate(PROMPTS[:2], max_new_tokens=4, samples=3, temperature=1.0, seed=1)
    assert out == again  # seeded


def test_loglikelihood_matches_manual_forward(tiny_lm):
    prompt, cont = "Question: What is the capital city of Japan?\nAnswer:", " Tokyo"
    (score,) = tiny_lm.loglikelihood([(prompt, cont)])
    head, tail = tiny_lm.split_continuation(prompt, cont)
    ids = torch.tensor([head + tail])
    with torch.no_grad():
        logp = torch.log_softmax(tiny_lm.model(ids).logits[0].float(), -1)
    manual = sum(float(logp[len(head) - 1 + k, t]) for k, t in enumerate(tail))
    assert math.isclose(score, manual, rel_tol=1e-4, abs_tol=1e-4)
    assert score < 0


def test_loglikelihood_batching_is_invariant(tiny_lm):
    reqs = [(p, c) for p in PROMPTS for c in (" Paris", " Lyon", " New Cairo")]
    batched = tiny_lm.loglikelihood(reqs)
    single = [tiny_lm.loglikelihood([r])[0] for r in reqs]
    assert all(math.isclose(a, b, abs_tol=1e-4) for a, b in zip(batched, single))


def test_leading_space_goes_with_the_continuation(tiny_lm):
    # the prompt's trailing space moves into the continuation, so both spellings score the same tokens
    a = tiny_lm.split_continuation("Answer: ", "Paris")
    b = tiny_lm.split_continuation("Answer:", " Paris")
    assert a == b
    assert tiny_lm.tok.decode(b[1]) == " Paris"


def test_shared_prefix_scores_equal_full_forward(tiny_lm):
    """Multi-token continuations of different lengths, several per prompt, scored through the shared KV cache,
    must equal a plain full forward pass over prompt + continuation."""
    reqs = [(p, c) for p in PROMPTS for c in (" Paris", " New Cairo", " Rome Milan Madrid", "\nTokyo")]
    shared = tiny_lm.loglikelihood(reqs)
    for (p, c), got in zip(reqs, shared):
        head, tail = tiny_lm.split_continuation(p, c)
        with torch.no_grad():
            logp = torch.log_softmax(tiny_lm.model(torch.tensor([head + tail])).logits[0].float(), -1)
        manual = sum(float(logp[len(head) - 1 + k, t]) for k, t in enumerate(tail))
        assert math.isclose(got, manual, abs_tol=1e-4), (p, c)


@pytest.mark.gpu
def test_cuda_uses_bf16_and_generates(tiny_model_dir):
    if not torch.cuda.is_available():
        pytest.skip("no CUDA device")
    from ctxrel.backends.hf import HFBackend
    from ctxrel.models.loading import load_model

    model, tok, name = load_model(str(tiny_model_dir))
    assert next(model.parameters()).dtype == torch.bfloat16 and model.device.type == "cuda"
    lm = HFBackend(model, tok, batch_size=4)
    assert [len(o) for o in lm.generate(PROMPTS, max_new_tokens=4)] == [1] * len(PROMPTS)
    assert all(s < 0 for s in lm.loglikelihood([(p, " Paris") for p in PROMPTS]))


def test_tokenizer_that_appends_eos(tiny_model_dir):
    """A post-processor adding `<s> ... </s>` must not end prompts with EOS nor score EOS as part of answers."""
    from tokenizers.processors import TemplateProcessing
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from ctxrel.backends.hf import HFBackend

    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    tok.backend_tokenizer.post_processor = TemplateProcessing(
        single="<s> $A </s>", special_tokens=[("<s>", tok.bos_token_id), ("</s>", tok.eos_token_id)])
    assert tok("Paris")["input_ids"][-1] == tok.eos_token_id
    lm = HFBackend(AutoModelForCausalLM.from_pretrained(tiny_model_dir), tok)
    head, tail = lm.split_continuation("Answer:", " Paris")
    assert head[0] == tok.bos_token_id and tok.eos_token_id not in head + tail
    assert tok.decode(tail) == " Paris"


def test_stop_strings_cut_generation(tiny_lm):
    full = tiny_lm.generate(PROMPTS[:2], max_new_tokens=12)
    stops = [o[0][3:6] for o in full if len(o[0]) > 6]
    assert stops, "the random model should emit some text"
    cut = tiny_lm.generate(PROMPTS[:2], max_new_tokens=12, stop=stops)
    for (f,), (c,) in zip(full, cut):
        first = min((k for k in (f.find(s) for s in stops) if k >= 0), default=len(f))
        assert c == f[:first].strip()


def test_attention_to_spans_matches_an_unbatched_eager_pass(tiny_lm):
    """Left-padded batches give the same attention mass as one prompt alone, computed here by hand."""
    import torch

    prompts = ["The capital of France is Lyon. What is the capital of France?", "Short one. Why?"]
    spans = [[(0, 30), (31, len(prompts[0]))], [(0, 10), (11, 15)]]
    batched = tiny_lm.attention_to_spans(prompts, spans, batch_size=2)
    model, tok = tiny_lm.model, tiny_lm.tok
    assert model.config._attn_implementation != "eager"  # switched back afterwards
    model.set_attn_implementation("eager")
    try:
        for prompt, sp, got in zip(prompts, spans, batched):
            enc = tok(prompt, return_offsets_mapping=True)
            ids = torch.tensor([tiny_lm.encode(prompt)])
            with torch.no_grad():
                att = model(input_ids=ids, output_attentions=True).attentions
            last = torch.stack([a[0, :, -1, :] for a in att]).mean(dim=(0, 1))  # (T,)
            offsets = enc["offset_mapping"][:ids.shape[1]]
            want = [float(sum(last[t] for t, (a, b) in enumerate(offsets) if b > a and a < e and b > s))
                    for s, e in sp]
            assert got == pytest.approx(want, abs=1e-5)
    finally:
        model.set_attn_implementation("sdpa")


# -- decoding with and without the context (CAD, AdaCAD) --------------------------------------------------
PAIRS = [(PROMPTS[0], "Question: What is the capital city of France?"),
         (PROMPTS[3], "Paris"),
         (PROMPTS[1], "Question: What is the capital city of Japan?")]


def test_contrast_with_alpha_zero_is_greedy(tiny_lm):
    greedy = [o[0] for o in tiny_lm.generate([c for c, _ in PAIRS], max_new_tokens=8)]
    out = tiny_lm.generate_contrast(PAIRS, [("cad", 0.0)], max_new_tokens=8)
    assert [o[0] for o in out] == greedy
    assert any(greedy)


def test_contrast_methods_share_one_pass_and_match_one_at_a_time(tiny_lm):
    methods = [("cad", 1.0), ("adacad", 0.0), ("cad", 0.5)]
    together = tiny_lm.generate_contrast(PAIRS, methods, max_new_tokens=8)
    for k, m in enumerate(methods):
        for i, p in enumerate(PAIRS):
            assert tiny_lm.generate_contrast([p], [m], max_new_tokens=8)[0][0] == together[i][k]


def test_cad_decoding_matches_a_manual_loop(tiny_lm):
    from ctxrel.core.decoding import cad_logits

    (c, n) = PAIRS[0]
    ids_c, ids_n = tiny_lm.encode(c), tiny_lm.encode(n)
    chosen = []
    with torch.no_grad():
        for _ in range(6):
            zc = tiny_lm.model(torch.tensor([ids_c + chosen])).logits[0, -1]
            zn = tiny_lm.model(torch.tensor([ids_n + chosen])).logits[0, -1]
            t = int(cad_logits(zc, zn, 1.0).argmax())
            if t in tiny_lm.stop_ids:
                break
            chosen.append(t)
    expect = tiny_lm.tok.decode(chosen, skip_special_tokens=True).strip()
    assert tiny_lm.generate_contrast([PAIRS[0]], [("cad", 1.0)], max_new_tokens=6)[0][0] == expect


def test_loglikelihood_contrast(tiny_lm):
    from ctxrel.core.decoding import cad_logits

    reqs = [(c, n, " Paris") for c, n in PAIRS] + [(PAIRS[0][0], PAIRS[0][1], " New Cairo")]
    got = tiny_lm.loglikelihood_contrast(reqs, [("cad", 0.0), ("cad", 1.0), ("adacad", 0.0)])
    plain = tiny_lm.loglikelihood([(c, cont) for c, _, cont in reqs])
    for g, p in zip(got, plain):
        assert math.isclose(g[0], p, abs_tol=1e-4)  # alpha 0: the ordinary score with the context
    # alpha 1 by hand for the last request
    c, n, cont = reqs[-1]
    head_c, tail = tiny_lm.split_continuation(c, cont)
    head_n, _ = tiny_lm.split_continuation(n, cont)
    with torch.no_grad():
        zc = tiny_lm.model(torch.tensor([head_c + tail])).logits[0, len(head_c) - 1:-1]
        zn = tiny_lm.model(torch.tensor([head_n + tail])).logits[0, len(head_n) - 1:-1]
    logp = torch.log_softmax(cad_logits(zc, zn, 1.0), -1)
    manual = sum(float(logp[k, t]) for k, t in enumerate(tail))
    assert math.isclose(got[-1][1], manual, abs_tol=1e-4)
    assert got[-1][2] != got[-1][0]  # AdaCAD moved the score
