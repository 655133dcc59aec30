"""ctxrel's own greedy loop (finished rows leave the batch, waiting prompts join it) against HF `generate`.

The reference is the backend's HF path (`decode="hf"`), the generation every earlier ctxrel result used: the two
must give the same text item for item, whatever the batch size, the prompt lengths and where each row stops."""

import pytest
import torch

from ctxrel.backends.hf import HFBackend

PROMPTS = ["Background: The capital city of France is Lyon.\n\nQuestion: What is the capital city of France?",
           "Question: What is the capital city of Japan?\nAnswer:",
           "Paris",
           "Rome Milan Madrid Barcelona Tokyo Osaka Cairo New Cairo Ottawa Toronto Berlin Munich",
           "Question: What is the capital city of Egypt? Answer: Cairo. Question: And of Canada?",
           "Below is an instruction that describes a task.",
           "Lyon Berlin",
           "### Instruction: What is the capital city of Italy?\n### Response:"]


def _pair(tiny_lm, batch_size: int):
    own = HFBackend(tiny_lm.model, tiny_lm.tok, name="own", batch_size=batch_size, decode="own")
    hf = HFBackend(tiny_lm.model, tiny_lm.tok, name="hf", batch_size=batch_size, decode="hf")
    return own, hf


def _stop_ids_that_fire(lm, n_new: int, prompts=PROMPTS, picks=((0, 1), (3, 4), (5, 0))) -> list[int]:
    """Tokens the random model emits at different steps of different prompts: used as stop tokens, they end rows
    at different points (a random model almost never emits its EOS)."""
    lm.decode = "hf"
    ids = []
    for p in prompts:
        enc = torch.tensor([lm.encode(p)])
        out = lm.model.generate(input_ids=enc, attention_mask=torch.ones_like(enc), max_new_tokens=n_new,
                                do_sample=False, pad_token_id=lm.tok.pad_token_id, eos_token_id=lm.stop_ids)
        ids.append(out[0, enc.shape[1]:].tolist())
    lm.decode = "own"
    # by default the second, fifth and first generated token of three prompts
    return sorted(set(lm.stop_ids) | {ids[p][step] for p, step in picks})


@pytest.mark.parametrize("batch_size", [1, 2, 3, 8])
def test_own_loop_equals_hf_generate_with_rows_stopping_at_different_points(tiny_lm, batch_size):
    own, hf = _pair(tiny_lm, batch_size)
    own.stop_ids = hf.stop_ids = _stop_ids_that_fire(own, 10)
    want = hf.generate(PROMPTS, max_new_tokens=10)
    got = own.generate(PROMPTS, max_new_tokens=10)
    assert got == want
    # and it was the own loop that produced them (it returns None where it would fall back)
    assert own._generate_own([own.encode(p) for p in PROMPTS], max_new_tokens=10, stop=(), on_done=None) == want
    lengths = {len(tiny_lm.tok(o[0])["input_ids"]) for o in want}
    assert len(lengths) >= 3, f"rows should stop at different points, got lengths {lengths}"


def test_own_loop_counts_finished_prompts_and_drops_rows(tiny_lm):
    own, hf = _pair(tiny_lm, 3)
    own.stop_ids = hf.stop_ids = _stop_ids_that_fire(own, 10)
    done = []
    assert own.generate(PROMPTS, max_new_tokens=10, on_done=done.append) == hf.generate(PROMPTS, max_new_tokens=10)
    assert sum(done) == len(PROMPTS) and len(done) > -(-len(PROMPTS) // 3)  # rows leave one by one, not per batch


def test_own_loop_applies_stop_strings_like_hf(tiny_lm):
    own, hf = _pair(tiny_lm, 3)
    full = hf.generate(PROMPTS, max_new_tokens=12)
    stops = sorted({o[0][2:4] for o in full if len(o[0]) > 6})
    assert stops, "the random model should emit some text"
    want = hf.generate(PROMPTS, max_new_tokens=12, stop=stops)
    assert own.generate(PROMPTS, max_new_tokens=12, stop=stops) == want
    assert want != full


def test_sampling_keeps_the_hf_path(tiny_lm):
    own, hf = _pair(tiny_lm, 3)
    a = own.generate(PROMPTS[:3], max_new_tokens=5, samples=2, temperature=1.0, seed=3)
    b = hf.generate(PROMPTS[:3], max_new_tokens=5, samples=2, temperature=1.0, seed=3)
    assert a == b and [len(o) for o in a] == [2, 2, 2]


def test_sliding_window_cache_falls_back_to_hf_generate(tiny_model_dir):
    from transformers import AutoTokenizer, MistralConfig, MistralForCausalLM

    from ctxrel.backends.decode_loop import own_cache_supported

    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    torch.manual_seed(0)
    model = MistralForCausalLM(MistralConfig(
        vocab_size=len(tok), hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=2, sliding_window=8, max_position_embeddings=256, pad_token_id=tok.pad_token_id))
    model.eval()
    own = HFBackend(model, tok, batch_size=2, decode="own")
    hf = HFBackend(model, tok, batch_size=2, decode="hf")
    ids = torch.tensor([own.encode(PROMPTS[0])])
    cache = model(input_ids=ids, use_cache=True).past_key_values
    assert not own_cache_supported(cache)
    assert own.generate(PROMPTS[:3], max_new_tokens=6) == hf.generate(PROMPTS[:3], max_new_tokens=6)
    chat = _chat(own)[:3]  # a shared prefix: the loop's first prefill is the prefix's, and it falls back there
    assert own._generate_own([own.encode(p) for p in chat], max_new_tokens=6, stop=(), on_done=None) is None
    assert own.generate(chat, max_new_tokens=6) == hf.generate(chat, max_new_tokens=6)


def test_unknown_decode_is_refused(tiny_lm):
    with pytest.raises(ValueError, match="decode must be"):
        HFBackend(tiny_lm.model, tiny_lm.tok, decode="fast")


def test_a_generation_config_that_changes_greedy_keeps_hf_generate(tiny_lm):
    own, hf = _pair(tiny_lm, 3)
    before = tiny_lm.model.generation_config.repetition_penalty
    tiny_lm.model.generation_config.repetition_penalty = 5.0
    try:
        want = hf.generate(PROMPTS, max_new_tokens=10)
        assert own.generate(PROMPTS, max_new_tokens=10) == want
    finally:
        tiny_lm.model.generation_config.repetition_penalty = before
    assert want != hf.generate(PROMPTS, max_new_tokens=10)  # the penalty did change HF's greedy output


CHAT_PICKS = ((2, 1), (6, 5), (0, 6))  # tokens that end chat prompts' rows after 2, 6, 7 and 10 steps


def _chat(lm) -> list[str]:
    """PROMPTS in the chat template behind one system turn: the encoded prompts share a long common prefix."""
    return [lm.render_chat([{"role": "system", "content": "You are a helpful assistant. Answer briefly."},
                            {"role": "user", "content": p}]) for p in PROMPTS]


@pytest.mark.parametrize("batch_size", [2, 3, 8])
def test_shared_prefix_runs_once_and_outputs_stay_those_of_hf_generate(tiny_lm, batch_size):
    from ctxrel.backends.decode_loop import shared_prefix_len

    own, hf = _pair(tiny_lm, batch_size)
    prompts = _chat(own)
    assert shared_prefix_len([own.encode(p) for p in prompts]) > 10  # the loop takes its shared-prefix path
    own.stop_ids = hf.stop_ids = _stop_ids_that_fire(own, 10, prompts, CHAT_PICKS)
    want = hf.generate(prompts, max_new_tokens=10)
    assert own._generate_own([own.encode(p) for p in prompts], max_new_tokens=10, stop=(), on_done=None) == want
    assert len({len(tiny_lm.tok(o[0])["input_ids"]) for o in want}) >= 3  # rows end at different steps


def test_own_loop_computes_fewer_token_positions_than_hf_generate(tiny_lm):
    """The work each path hands the model (rows x tokens of every forward pass, prefill and decoding): the own
    loop skips finished rows and the shared prefix, so it must be smaller for the same text."""
    own, hf = _pair(tiny_lm, 4)
    prompts = _chat(own)
    own.stop_ids = hf.stop_ids = _stop_ids_that_fire(own, 12, prompts, CHAT_PICKS)
    counted = []
    handle = tiny_lm.model.register_forward_pre_hook(
        lambda mod, args, kwargs: counted.append(kwargs["input_ids"].numel()), with_kwargs=True)
    try:
        work = {}
        for name, lm in (("hf", hf), ("own", own)):
            counted.clear()
            out = lm.generate(prompts, max_new_tokens=12)
            work[name] = (sum(counted), out)
    finally:
        handle.remove()
    assert work["own"][1] == work["hf"][1]
    print("token positions computed (hf, own):", work["hf"][0], work["own"][0])
    assert work["own"][0] < 0.8 * work["hf"][0], work


def test_roomy_cache_layer_writes_in_place_and_grows_when_full():
    from ctxrel.backends.decode_loop import _RoomyLayer

    torch.manual_seed(0)
    a, b = torch.randn(2, 3, 4, 5), torch.randn(1, 3, 2, 5)  # two row blocks of different widths
    layer = _RoomyLayer([a, b], [a + 1, b + 1], width=4, room=1)
    pad = torch.zeros(1, 3, 2, 5)
    want = torch.cat([a, torch.cat([pad, b], dim=2)])  # b right-aligned, zeros on its left
    assert torch.equal(layer.keys, want) and torch.equal(layer.values, torch.cat([a + 1, torch.cat([pad, b + 1], 2)]))
    buffer = layer._k
    for step in range(3):  # the first step fits the room (same buffer); the next ones grow it
        new = torch.randn(3, 3, 1, 5)
        keys, _ = layer.update(new, new)
        want = torch.cat([want, new], dim=2)
        assert torch.equal(keys, want) and keys.shape == (3, 3, 5 + step, 5)
        if step == 0:
            assert layer._k is buffer
    assert layer._k is not buffer and layer.get_seq_length() == 7


def test_shared_prefix_len_leaves_a_token_to_predict_from():
    from ctxrel.backends.decode_loop import shared_prefix_len

    assert shared_prefix_len([[1, 2, 3, 4], [1, 2, 3, 5], [1, 2, 3, 4, 6]]) == 3
    assert shared_prefix_len([[1, 2, 3], [1, 2, 3, 4]]) == 2  # not the whole of the shorter prompt
    assert shared_prefix_len([[7, 2], [1, 2]]) == 0
    assert shared_prefix_len([]) == 0


def test_model_decode_reaches_the_backend_and_both_paths_write_the_same_records(tiny_model_dir, tmp_path, capsys):
    """`model.decode` (`--decode`) chooses the path of every evaluating verb; on the same items both write the
    same records; a value outside own / hf is refused in one sentence before a model loads."""
    import json

    from ctxrel.config import settings as C
    from ctxrel.cli import main
    from ctxrel.evaluate.run import load_lm

    assert load_lm(str(tiny_model_dir), None, C.ModelConfig(decode="hf")).decode == "hf"
    assert load_lm(str(tiny_model_dir), None, C.ModelConfig()).decode == "own"
    outs = {}
    for path in ("own", "hf"):
        out = tmp_path / path
        assert main(["eval", "--model", str(tiny_model_dir), "--benchmark", "cf_capitals", "--limit", "8",
                     "--max-new-tokens", "6", "--decode", path, "--out", str(out)]) == 0
        outs[path] = [(r["id"], r["output"]) for r in map(json.loads, (out / "evals" / "model" /
                                                                          "cf_capitals.jsonl").open())]
    assert outs["own"] == outs["hf"] and len(outs["own"]) == 8
    capsys.readouterr()
    with pytest.raises(SystemExit) as bad:  # argparse's choices: exit 2
        main(["eval", "--model", str(tiny_model_dir), "--decode", "fast", "--out", str(tmp_path / "x")])
    assert bad.value.code == 2 and "--decode: invalid choice: 'fast'" in capsys.readouterr().err
    assert not (tmp_path / "x").exists()
