"""Hugging Face transformers backend: batched, length-sorted, left-padded generation and scoring.

Why each choice:
* length-sorted batches keep padding (wasted compute, and the one source of batch-vs-single differences) small;
* left padding puts every prompt's last token at the same position, so generation continues in lockstep and a
  continuation's scored tokens all sit in the last positions — the vocabulary projection is computed only there
  (`logits_to_keep`), which is most of a small model's cost;
* greedy unless a temperature is given; generation stops at EOS, at the chat template's end-of-turn token, or
  at max_new_tokens;
* greedy generation runs on ctxrel's own loop (`decode_loop`: finished rows leave the batch, the prompts' common
  prefix runs once) unless `decode="hf"`; sampling and caches that loop cannot split use HF `generate`.
"""

from __future__ import annotations

import inspect
import zlib
from typing import Any, Callable, Sequence

import torch

from ctxrel.backends.base import Capabilities
from ctxrel.core.errors import CtxrelError

# End-of-turn markers of common chat templates; each stops generation when the tokenizer knows it.
_END_OF_TURN = ("<|im_end|>", "<|eot_id|>", "<|end|>", "<end_of_turn>", "</s>", "<|endoftext|>")


def _cut(text: str, stop: Sequence[str]) -> str:
    """Text before the first stop string (generation may run a few tokens past it within a batch)."""
    cut = min((k for k in (text.find(s) for s in stop) if k >= 0), default=len(text))
    return text[:cut]


# generation_config settings that change which token HF's greedy search picks; ctxrel's own loop applies none of
# them, so a model that sets one keeps HF `generate`
_GREEDY_CHANGERS = ("repetition_penalty", "no_repeat_ngram_size", "bad_words_ids", "min_length", "min_new_tokens",
                    "forced_bos_token_id", "forced_eos_token_id", "suppress_tokens", "begin_suppress_tokens",
                    "sequence_bias", "encoder_repetition_penalty", "exponential_decay_length_penalty",
                    "guidance_scale", "watermarking_config")


def _plain_greedy(model) -> bool:
    """True when the model's generation_config leaves greedy search as a plain argmax."""
    from transformers import GenerationConfig

    have, default = getattr(model, "generation_config", None), GenerationConfig()
    return have is None or all(getattr(have, k, None) == getattr(default, k, None) for k in _GREEDY_CHANGERS)


class HFBackend:
    @classmethod
    def for_config(cls, model, tokenizer, model_cfg, *, name: str) -> "HFBackend":
        """The backend a config's `model` section asks for: its batch size and its greedy decode path."""
        return cls(model, tokenizer, name=name, batch_size=model_cfg.batch_size, decode=model_cfg.decode)

    def __init__(self, model, tokenizer, *, name: str = "model", batch_size: int = 16, decode: str = "own"):
        if decode not in ("own", "hf"):
            raise ValueError(f"decode must be 'own' (ctxrel's loop that drops finished rows) or 'hf' (transformers' "
                             f"generate), not {decode!r}")
        self.decode = decode  # greedy generation: "own" = backends.decode_loop, "hf" = model.generate
        self.model = model
        self.tok = tokenizer
        self.name = name
        self.batch_size = max(1, int(batch_size))
        self.capabilities = Capabilities(chat_template=bool(getattr(tokenizer, "chat_template", None)),
                                         attention=True, hidden_states=True, weight_deltas=True,
                                         contrast=True)
        self.device = next(model.parameters()).device
        if self.tok.pad_token_id is None:  # padding is always masked out, so any known token will do
            if self.tok.eos_token is not None:
                self.tok.pad_token = self.tok.eos_token
            elif self.tok.unk_token is not None:
                self.tok.pad_token = self.tok.unk_token
            else:
                raise ValueError(f"tokenizer of {name} has no pad, eos or unk token to pad batches with")
        cfg = getattr(model, "config", None)
        self.max_length = int(getattr(cfg, "max_position_embeddings", 0) or 2048)
        vocab = self.tok.get_vocab()
        stops = {self.tok.eos_token_id} | {vocab[t] for t in _END_OF_TURN if t in vocab}
        self.stop_ids = sorted(i for i in stops if i is not None)
        # transformers 5.x renamed `past_key_values` to `cache` in forward(); accept both
        inner = model.get_base_model() if hasattr(model, "get_base_model") else model  # under a PEFT wrapper
        self._cache_kwarg = "cache" if "cache" in inspect.signature(type(inner).forward).parameters \
            else "past_key_values"

    # -- tokenisation -------------------------------------------------------------------------------------
    def encode(self, text: str) -> list[int]:
        """Token ids of `text`; special tokens (BOS) are added unless the text already starts with them, as a
        rendered chat template does."""
        bos, eos = self.tok.bos_token, self.tok.eos_token
        add = not (bos and text.startswith(bos))
        ids = self.tok(text, add_special_tokens=add)["input_ids"]
        # some tokenizers also append EOS; a prompt must not end a turn, nor a scored answer carry an EOS
        if add and ids and ids[-1] == self.tok.eos_token_id and not (eos and text.endswith(eos)):
            ids = ids[:-1]
        return ids

    def count_tokens(self, texts: Sequence[str]) -> list[int]:
        return [len(self.encode(t)) for t in texts]

    def render_chat(self, messages: list[dict[str, str]]) -> str:
        if not getattr(self.tok, "chat_template", None):
            raise ValueError("this tokenizer has no chat template; use --template alpaca, tulu or plain")
        return self.tok.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)

    def _left_pad(self, seqs: list[list[int]]):
        width = max(len(s) for s in seqs)
        pad = self.tok.pad_token_id
        ids = torch.full((len(seqs), width), pad, dtype=torch.long)
        mask = torch.zeros((len(seqs), width), dtype=torch.long)
        for i, s in enumerate(seqs):
            ids[i, width - len(s):] = torch.tensor(s, dtype=torch.long)
            mask[i, width - len(s):] = 1
        return ids.to(self.device), mask.to(self.device)

    def _batches(self, lengths: Sequence[int]) -> list[list[int]]:
        order = sorted(range(len(lengths)), key=lambda i: -lengths[i])
        return [order[i:i + self.batch_size] for i in range(0, len(order), self.batch_size)]

    # -- generation ---------------------------------------------------------------------------------------
    @torch.inference_mode()
    def generate(self, prompts: Sequence[str], *, max_new_tokens: int, samples: int = 1,
                 temperature: float = 0.0, seed: int = 0, stop: Sequence[str] = (),
                 on_done: Callable[[int], None] | None = None) -> list[list[str]]:
        encoded = [self.encode(p) for p in prompts]
        if (self.decode == "own" and temperature <= 0 and samples == 1 and max_new_tokens > 0
                and _plain_greedy(self.model)):
            own = self._generate_own(encoded, max_new_tokens=max_new_tokens, stop=stop, on_done=on_done)
            if own is not None:
                return own
        out: list[list[str]] = [[] for _ in prompts]
        sampling = temperature > 0
        for batch in self._batches([len(e) for e in encoded]):
            ids, mask = self._left_pad([encoded[i] for i in batch])
            kwargs = dict(do_sample=False)
            if sampling:  # seeded by the batch's own prompts: chunks never repeat a stream; reruns reproduce
                key = "\x00".join(prompts[i] for i in batch).encode()
                torch.manual_seed((seed * 1_000_003 + zlib.crc32(key)) % 2**63)
                kwargs = dict(do_sample=True, temperature=temperature, top_p=1.0, top_k=0)
            if stop:  # a row ends at its first stop string; the text is cut there below
                kwargs.update(stop_strings=list(stop), tokenizer=self.tok)
            gen = self.model.generate(
                input_ids=ids, attention_mask=mask, max_new_tokens=max_new_tokens,
                num_return_sequences=samples, pad_token_id=self.tok.pad_token_id,
                eos_token_id=self.stop_ids, **kwargs)
            new = gen[:, ids.shape[1]:]
            texts = self.tok.batch_decode(new, skip_special_tokens=True)
            for j, i in enumerate(batch):
                out[i] = [_cut(t, stop).strip() for t in texts[j * samples:(j + 1) * samples]]
            if on_done:
                on_done(len(batch))
        return out

    @torch.inference_mode()
    def _generate_own(self, encoded: list[list[int]], *, max_new_tokens: int, stop: Sequence[str],
                      on_done: Callable[[int], None] | None) -> list[list[str]] | None:
        """Greedy generation on ctxrel's own loop (`decode_loop.greedy_decode`: finished rows leave the batch,
        waiting prompts join it, the prompts' common prefix runs once); None when the model's KV cache is not one
        that loop can split and join."""
        from transformers.cache_utils import DynamicCache

        from ctxrel.backends.decode_loop import greedy_decode

        def prefill(seqs, head):
            """Left-padded `seqs` after the cached prefix `head` (one row; None: no prefix): its keys and values
            are copied to every row, and the mask and positions count it (padding then sits between the two)."""
            ids, mask = self._left_pad(seqs)
            shift, past = 0, {}
            if head is not None:
                shift = head.get_seq_length()
                past = {self._cache_kwarg: DynamicCache([(x.keys.expand(len(seqs), -1, -1, -1),
                                                          x.values.expand(len(seqs), -1, -1, -1))
                                                         for x in head.layers])}
                mask = torch.cat([mask.new_ones(len(seqs), shift), mask], dim=1)
            pos = (mask.cumsum(-1) - 1).clamp(min=0)[:, shift:]
            out = self.model(input_ids=ids, attention_mask=mask, position_ids=pos, use_cache=True,
                             logits_to_keep=1, **past)
            cache = getattr(out, "cache", None) or out.past_key_values
            return cache, mask, mask.sum(-1), out.logits[:, -1]

        def forward(tokens, mask, pos, cache):
            return self.model(input_ids=tokens, attention_mask=mask, position_ids=pos, use_cache=True,
                              logits_to_keep=1, **{self._cache_kwarg: cache}).logits[:, -1]

        check = None
        if stop:
            from transformers.generation.stopping_criteria import StopStringCriteria
            check = StopStringCriteria(self.tok, list(stop))
        tokens = greedy_decode(forward, prefill, encoded, max_new_tokens=max_new_tokens,
                               batch_size=self.batch_size, stop_ids=self.stop_ids, stop_check=check,
                               pad_id=self.tok.pad_token_id, refill_at=max(1, self.batch_size // 4),
                               on_done=on_done)
        if tokens is None:
            return None
        return [[_cut(self.tok.decode(t, skip_special_tokens=True), stop).strip()] for t in tokens]

    # -- scoring ------------------------------------------------------------------------------------------
    def split_continuation(self, prompt: str, continuation: str) -> tuple[list[int], list[int]]:
        """Token ids of prompt and continuation as the model would see them joined.

        Tokenising the continuation alone would mis-tokenise a leading space (" Paris" vs "Paris"), so the
        joined text is tokenised and split where the prompt's own tokens end (trailing spaces of the prompt move
        to the continuation first, as lm-evaluation-harness does).
        """
        stripped = prompt.rstrip(" ")
        continuation = prompt[len(stripped):] + continuation
        whole = self.encode(stripped + continuation)
        head = self.encode(stripped)
        n = len(head)
        if whole[:n] != head:  # tokeniser merged across the boundary; fall back to a prefix match
            n = next((k for k in range(min(len(head), len(whole))) if whole[k] != head[k]), n)
        return whole[:n], whole[n:]

    @torch.inference_mode()
    def loglikelihood(self, requests: Sequence[tuple[str, str]],
                      on_done: Callable[[int], None] | None = None) -> list[float]:
        """Summed log-probabilities of continuations. Requests that share a prompt share its forward pass: the
        prompt runs once, its KV cache is copied to each continuation, and only the continuation tokens run
        again (scoring a context answer and a parametric answer costs little more than one of them)."""
        pieces = [self.split_continuation(p, c) for p, c in requests]
        groups: dict[tuple[int, ...], list[int]] = {}
        for i, (head, _) in enumerate(pieces):
            groups.setdefault(tuple(head), []).append(i)
        heads = list(groups)
        scores = [0.0] * len(requests)
        for batch in self._batches([len(h) for h in heads]):
            rows = [(b, i) for b, j in enumerate(batch) for i in groups[heads[j]]]
            for (b, i), s in zip(rows, self._score_shared([list(heads[j]) for j in batch],
                                                          [(b, pieces[i][1]) for b, i in rows])):
                scores[i] = s
            if on_done:
                on_done(len(rows))
        return scores

    def _score_shared(self, heads: list[list[int]], conts: list[tuple[int, list[int]]]) -> list[float]:
        """Score continuations `conts` = [(row of its head, token ids)] after left-padded `heads`."""
        ids, mask = self._left_pad(heads)
        pos = (mask.cumsum(-1) - 1).clamp(min=0)  # left padding: real tokens start at position 0
        out = self.model(input_ids=ids, attention_mask=mask, position_ids=pos, use_cache=True, logits_to_keep=1)
        first = torch.log_softmax(out.logits[:, -1].float(), dim=-1)  # (B, V): predicts each first token
        scores = [float(first[b, c[0]]) for b, c in conts]
        width = max(len(c) for _, c in conts) - 1  # tokens still to feed: all but each continuation's last
        if width == 0:
            return scores
        index = torch.tensor([b for b, _ in conts], device=ids.device)
        cache = getattr(out, "cache", None) or out.past_key_values
        cache.reorder_cache(index)  # (B, ...) -> (R, ...): one copy of the prompt's cache per continuation
        feed = torch.full((len(conts), width), self.tok.pad_token_id, dtype=torch.long, device=ids.device)
        feed_mask = torch.zeros_like(feed)
        for r, (_, c) in enumerate(conts):
            feed[r, :len(c) - 1] = torch.tensor(c[:-1], dtype=torch.long)
            feed_mask[r, :len(c) - 1] = 1
        full_mask = torch.cat([mask.index_select(0, index), feed_mask], dim=1)  # (R, T + width)
        feed_pos = mask.sum(-1).index_select(0, index)[:, None] + torch.arange(width, device=ids.device)
        logits = self.model(input_ids=feed, attention_mask=full_mask, position_ids=feed_pos,
                            use_cache=True, **{self._cache_kwarg: cache}).logits  # (R, width, V)
        logp = torch.log_softmax(logits.float(), dim=-1)
        for r, (_, c) in enumerate(conts):
            if len(c) > 1:
                target = torch.tensor(c[1:], device=logp.device)
                scores[r] += float(logp[r, :len(c) - 1].gather(1, target[:, None]).sum())
        return scores

    # -- attention ----------------------------------------------------------------------------------------
    @torch.inference_mode()
    def attention_to_spans(self, prompts: Sequence[str], spans: Sequence[Sequence[tuple[int, int]]], *,
                           batch_size: int = 4, on_done: Callable[[int], None] | None = None
                           ) -> list[list[float]]:
        """For each prompt, the attention mass its last token (the position that predicts the answer's first
        token) puts on each character span [start, end) of the prompt, averaged over layers and heads (the
        study's Fig. 3b measure). A token counts toward a span when its characters overlap it.

        Attention weights need the eager attention kernel, so it is switched on for these forward passes and
        switched back after; batches are small because every layer's (B, H, T, T) weights are materialised."""
        owner = self.model if hasattr(self.model, "set_attn_implementation") else self.model.get_base_model()
        before = owner.config._attn_implementation
        owner.set_attn_implementation("eager")
        try:
            out: list[list[float]] = [[] for _ in prompts]
            order = sorted(range(len(prompts)), key=lambda i: -len(prompts[i]))
            for k in range(0, len(order), batch_size):
                batch = order[k:k + batch_size]
                encs = [self._offsets(prompts[i]) for i in batch]
                ids, mask = self._left_pad([ids for ids, _ in encs])
                pos = (mask.cumsum(-1) - 1).clamp(min=0)
                att = self.model(input_ids=ids, attention_mask=mask, position_ids=pos, output_attentions=True,
                                 logits_to_keep=1).attentions  # L x (B, H, T, T)
                last = torch.stack([a[:, :, -1, :].float() for a in att]).mean(dim=(0, 2))  # (B, T)
                width = ids.shape[1]
                for j, i in enumerate(batch):
                    tok_ids, offsets = encs[j]
                    shift = width - len(tok_ids)  # left padding
                    out[i] = [float(sum(last[j, shift + t] for t, (a, b) in enumerate(offsets)
                                        if b > a and a < end and b > start)) for start, end in spans[i]]
                if on_done:
                    on_done(len(batch))
            return out
        finally:
            owner.set_attn_implementation(before)

    def _offsets(self, text: str) -> tuple[list[int], list[tuple[int, int]]]:
        """Token ids (as `encode` makes them) and each token's character span in `text`."""
        bos = self.tok.bos_token
        add = not (bos and text.startswith(bos))
        enc = self.tok(text, add_special_tokens=add, return_offsets_mapping=True)
        n = len(self.encode(text))  # encode() drops a trailing EOS some tokenizers append
        return list(enc["input_ids"])[:n], [tuple(o) for o in enc["offset_mapping"]][:n]

    # -- probes (ctxrel.core.probe_math: weights, heads, lens) -------------------------------------------------------
    def _inner(self):
        """The transformers model under a PEFT wrapper (or the model itself)."""
        return self.model.get_base_model() if hasattr(self.model, "get_base_model") else self.model

    def _recorded(self, key: str) -> list:
        """The modules whose outputs transformers records as `key` ("hidden_states": the decoder layers,
        "attentions": their attention modules), in forward order, with the index of the tensor wanted in each
        module's output tuple; found through the model's own `_can_record_outputs` declaration."""
        from transformers.utils.output_capturing import OutputRecorder

        inner = self._inner()
        spec = None
        for m in inner.modules():
            spec = (getattr(type(m), "_can_record_outputs", None) or {}).get(key)
            if spec is not None:
                break
        if spec is None:
            raise CtxrelError(f"{self.name}: transformers declares no {key} outputs for "
                              f"{type(inner).__name__}; the probes cannot find its layers")
        if not isinstance(spec, OutputRecorder):
            spec = OutputRecorder(target_class=spec, index=0 if key == "hidden_states" else 1)
        found = []
        for name, m in inner.named_modules():
            if isinstance(m, spec.target_class) and (
                    spec.layer_name is None or f".{spec.layer_name.strip('.')}." in f".{name}."):
                found.append(m)
        return [(m, spec.index) for m in found]

    def _to_logits(self):
        """Final norm then unembedding (and Gemma's logit soft-cap), as the model's own head applies them."""
        inner = self._inner()
        decoder = inner.get_decoder() if hasattr(inner, "get_decoder") else inner
        norm = next((getattr(decoder, a) for a in ("norm", "final_layer_norm", "ln_f", "final_layernorm")
                     if isinstance(getattr(decoder, a, None), torch.nn.Module)), None)
        if norm is None:
            raise CtxrelError(f"{self.name}: no final norm found on {type(decoder).__name__}; the lens probe "
                              "cannot read its layers")
        head = inner.get_output_embeddings()
        cap = getattr(inner.config, "final_logit_softcapping", None)

        def to_logits(h):
            logits = head(norm(h))
            return torch.tanh(logits / cap) * cap if cap else logits
        return to_logits

    def has_lora(self) -> bool:
        """Whether the model is a PEFT model (a LoRA adapter on its base): `weight_deltas` then needs no base
        weights."""
        return hasattr(self.model, "peft_config")

    @torch.no_grad()
    def weight_deltas(self, base_weight: Callable[[str], "torch.Tensor"] | None = None):
        """Yield (name, ΔW, W_0) for each linear layer, one at a time: for a LoRA adapter ΔW = B·A·scale and W_0 its
        base layer (nothing else is read); for a plain model (full / qk checkpoints) ΔW = W - `base_weight(name
        + '.weight')`, read from the base model's files."""
        from ctxrel.core.probe_math import lora_delta, module_of

        lora = [(n, m) for n, m in self.model.named_modules() if hasattr(m, "lora_A") and hasattr(m, "base_layer")]
        if lora:
            for name, m in lora:
                base = m.get_base_layer().weight
                adapters = [a for a in m.active_adapters if a in m.lora_A]
                if any(m.use_dora.get(a) for a in adapters):
                    raise CtxrelError(f"{name}: DoRA adapters are not supported by the weights probe")
                delta = torch.zeros(base.shape, dtype=torch.float32, device=base.device)
                for a in adapters:
                    delta += lora_delta(m.lora_A[a].weight, m.lora_B[a].weight, m.scaling[a],
                                        fan_in_fan_out=getattr(m, "fan_in_fan_out", False))
                yield name.removeprefix("base_model.model."), delta, base.detach()
            return
        if base_weight is None:
            raise CtxrelError(f"{self.name}: the weights probe needs the base model's weights for a model without "
                              "a LoRA adapter")
        for name, m in self.model.named_modules():
            if isinstance(m, torch.nn.Linear) and module_of(name) is not None:
                base = base_weight(name + ".weight").to(m.weight.device, torch.float32)
                yield name, m.weight.detach().float() - base, base

    def attention_by_head(self, prompts: Sequence[str], spans: Sequence[Sequence[tuple[int, int]]], *,
                          on_done: Callable[[int], None] | None = None) -> list["torch.Tensor"]:
        """For each prompt, an (L, H, S + 1) tensor: the attention mass the last token puts on each character
        span of the prompt and last on the rest, per layer and head (its mean over layers and heads is
        `attention_to_spans`)."""
        return self.probe_pass(prompts, spans=spans, on_done=on_done)[0]

    def answer_lens(self, requests: Sequence[tuple[str, Sequence[str]]], *,
                    on_done: Callable[[int], None] | None = None) -> list["torch.Tensor"]:
        """For each (prompt, continuations), an (L, K) tensor: the log-probability of each continuation's first
        token (tokenised joined to the prompt, as `loglikelihood` does) read off the output of every decoder
        layer through the final norm and the unembedding (the logit lens)."""
        return self.probe_pass([p for p, _ in requests], continuations=[c for _, c in requests],
                               on_done=on_done)[1]

    @torch.inference_mode()
    def probe_pass(self, prompts: Sequence[str], *, spans: Sequence[Sequence[tuple[int, int]]] | None = None,
                   continuations: Sequence[Sequence[str]] | None = None,
                   on_done: Callable[[int], None] | None = None) -> tuple[list | None, list | None]:
        """One forward pass per batch that serves both probes: (heads, lens) as in `attention_by_head` and
        `answer_lens` (None for the one not asked). Hooks reduce each layer's output as soon as it exists — the
        attention module's (B, H, T, T) weights to (B, H, S + 1) span masses, the decoder layer's (B, T, D) output
        to its last position — so nothing of a layer outlives it. The eager attention kernel (the only one that
        returns weights) is on only when `spans` are given; the lens's last layer is checked against the model's
        own logits."""
        from ctxrel.core.probe_math import head_span_mass, logit_lens, span_masks

        if spans is None and continuations is None:
            return None, None
        if continuations is not None:  # the prompt as `loglikelihood` tokenises it (trailing spaces move over)
            split = [[self.split_continuation(p, c) for c in conts] for p, conts in zip(prompts, continuations)]
            firsts = [[c[0] for _, c in pieces] for pieces in split]
            texts = [p.rstrip(" ") for p in prompts]
        else:
            texts = list(prompts)
        encs = [self._offsets(t) for t in texts]
        if continuations is not None:
            bad = [i for i, (ids, _) in enumerate(encs) if ids != split[i][0][0]]
            if bad:
                raise CtxrelError(f"{self.name}: prompt {bad[0]} tokenises differently alone and joined to its "
                                  "answer; the lens cannot place the answer-predicting position")
        hooks, current = [], {"heads": [], "hidden": []}
        if spans is not None:
            def on_attention(module, args, output, index):
                weights = output[index]  # (B, H, T, T), this layer's only
                current["heads"].append(head_span_mass(weights[:, :, -1, :], current["masks"]))
            hooks += [(m, i, on_attention) for m, i in self._recorded("attentions")]
        if continuations is not None:
            to_logits = self._to_logits()

            def on_layer(module, args, output, index):
                h = output[index] if isinstance(output, tuple) else output
                current["hidden"].append(h[:, -1, :])  # (B, D): the position predicting the answer's first token
            hooks += [(m, i, on_layer) for m, i in self._recorded("hidden_states")]
        owner = self.model if hasattr(self.model, "set_attn_implementation") else self._inner()
        before = owner.config._attn_implementation
        handles = [m.register_forward_hook(lambda mod, a, o, i=i, f=f: f(mod, a, o, i)) for m, i, f in hooks]
        heads_out = [None] * len(prompts) if spans is not None else None
        lens_out = [None] * len(prompts) if continuations is not None else None
        try:
            if spans is not None:
                owner.set_attn_implementation("eager")
            for batch in self._batches([len(ids) for ids, _ in encs]):
                ids, mask = self._left_pad([encs[i][0] for i in batch])
                pos = (mask.cumsum(-1) - 1).clamp(min=0)
                width = ids.shape[1]
                current.update(heads=[], hidden=[])
                if spans is not None:
                    masks = torch.zeros(len(batch), len(spans[batch[0]]) + 1, width, device=ids.device)
                    for j, i in enumerate(batch):
                        m = span_masks(encs[i][1], spans[i])
                        masks[j, :, width - m.shape[1]:] = m  # left padding: padded positions are in no span
                    current["masks"] = masks
                logits = self.model(input_ids=ids, attention_mask=mask, position_ids=pos,
                                    logits_to_keep=1).logits[:, -1]
                if spans is not None:
                    stacked = torch.stack(current["heads"]).cpu()  # (L, B, H, S + 1)
                    for j, i in enumerate(batch):
                        heads_out[i] = stacked[:, j]
                if continuations is not None:
                    tokens = torch.tensor([firsts[i] for i in batch], device=ids.device)
                    lens = logit_lens(torch.stack(current["hidden"]), to_logits, tokens)  # (L, B, K)
                    own = torch.log_softmax(logits.float(), dim=-1).gather(1, tokens)
                    gap = float((lens[-1] - own).abs().max())
                    if gap > (1e-3 if logits.dtype == torch.float32 else 0.1):
                        raise CtxrelError(f"{self.name}: the logit lens at the last layer differs from the model's "
                                          f"own log-probabilities by {gap:.3g}; its final norm or head is not the "
                                          "one ctxrel applies")
                    lens = lens.cpu()
                    for j, i in enumerate(batch):
                        lens_out[i] = lens[:, j]
                if on_done:
                    on_done(len(batch))
            return heads_out, lens_out
        finally:
            for h in handles:
                h.remove()
            owner.set_attn_implementation(before)

    # -- decoding with and without the context (CAD, AdaCAD; ctxrel.core.decoding) -------------------------------
    def _prefill_pairs(self, pairs: Sequence[tuple[list[int], list[int]]], copies: int):
        """One left-padded forward pass over the with-context and without-context prompts of a batch (rows
        0..B-1 with, B..2B-1 without), then the KV cache copied `copies` times (one per decoding method):
        rows (M, 2, B) flattened. Returns (last logits (M*2*B, V), cache, mask, next positions)."""
        b = len(pairs)
        ids, mask = self._left_pad([p[0] for p in pairs] + [p[1] for p in pairs])
        pos = (mask.cumsum(-1) - 1).clamp(min=0)
        out = self.model(input_ids=ids, attention_mask=mask, position_ids=pos, use_cache=True, logits_to_keep=1)
        cache = getattr(out, "cache", None) or out.past_key_values
        index = torch.arange(2 * b, device=ids.device).repeat(copies)
        if copies > 1:
            cache.reorder_cache(index)
        return (out.logits[:, -1].float().index_select(0, index), cache, mask.index_select(0, index),
                mask.sum(-1).index_select(0, index))

    @torch.inference_mode()
    def generate_contrast(self, pairs: Sequence[tuple[str, str]], methods: Sequence[tuple[str, float]], *,
                          max_new_tokens: int, stop: Sequence[str] = (),
                          on_done: Callable[[int], None] | None = None) -> list[list[str]]:
        """Greedy decoding of the contrast of each (prompt with context, prompt without context) pair, for
        every (method, alpha) in `methods` (`ctxrel.core.decoding.contrast`): out[i][m] is item i's text under
        method m. Both branches of every method run batched together on one KV cache; the prompts are encoded
        once and their cache copied per method. The chosen token is fed to both branches; a row stops at the
        same tokens as `generate` (EOS, end of turn) or at max_new_tokens, and its text is cut at `stop`."""
        from ctxrel.core.decoding import contrast

        encoded = [(self.encode(c), self.encode(n)) for c, n in pairs]
        out: list[list[str]] = [[""] * len(methods) for _ in pairs]
        stop_ids = torch.tensor(self.stop_ids, device=self.device)
        m = len(methods)
        for batch in self._batches([len(e[0]) for e in encoded]):
            b = len(batch)
            last, cache, mask, pos = self._prefill_pairs([encoded[i] for i in batch], m)
            tokens = torch.full((m, b, max_new_tokens), self.tok.pad_token_id, dtype=torch.long,
                                device=self.device)
            done = torch.zeros((m, b), dtype=torch.bool, device=self.device)
            for t in range(max_new_tokens):
                z = last.view(m, 2, b, -1)  # (M, 2, B, V): branch 0 with the context, 1 without
                nxt = torch.stack([contrast(meth, z[k, 0], z[k, 1], alpha).argmax(-1)
                                   for k, (meth, alpha) in enumerate(methods)])  # (M, B)
                nxt = torch.where(done, torch.full_like(nxt, self.tok.pad_token_id), nxt)
                tokens[:, :, t] = nxt
                done |= torch.isin(nxt, stop_ids)
                if bool(done.all()) or t == max_new_tokens - 1:
                    break
                feed = nxt[:, None, :].expand(m, 2, b).reshape(-1, 1)  # the same token to both branches
                mask = torch.cat([mask, torch.ones_like(mask[:, :1])], dim=1)
                logits = self.model(input_ids=feed, attention_mask=mask, position_ids=pos[:, None],
                                    use_cache=True, logits_to_keep=1, **{self._cache_kwarg: cache}).logits
                pos = pos + 1
                last = logits[:, -1].float()
            for k in range(m):
                for j, i in enumerate(batch):
                    row = tokens[k, j].tolist()
                    cut = next((q for q, x in enumerate(row) if x in self.stop_ids), len(row))
                    text = self.tok.decode(row[:cut], skip_special_tokens=True)
                    out[i][k] = _cut(text, stop).strip()
            if on_done:
                on_done(len(batch))
        return out

    @torch.inference_mode()
    def loglikelihood_contrast(self, requests: Sequence[tuple[str, str, str]],
                               methods: Sequence[tuple[str, float]],
                               on_done: Callable[[int], None] | None = None) -> list[list[float]]:
        """Summed log-probability of each continuation under the contrast of its (prompt with context, prompt
        without context) pair, per (method, alpha): out[i][m]. The per-token distribution is
        log_softmax(contrast(...)) at every continuation position (AdaCAD's α per position), so the score is
        the likelihood the decoding method itself assigns. The continuation is tokenised after the context
        prompt and the same tokens follow the prompt without context."""
        from ctxrel.core.decoding import contrast

        seqs = []
        for c, n, cont in requests:
            head_c, tail = self.split_continuation(c, cont)
            head_n, _ = self.split_continuation(n, cont)
            seqs.append((head_c + tail, head_n + tail, len(tail)))
        out: list[list[float]] = [[0.0] * len(methods) for _ in requests]
        for batch in self._batches([len(s[0]) for s in seqs]):
            b = len(batch)
            ids, mask = self._left_pad([seqs[i][0] for i in batch] + [seqs[i][1] for i in batch])
            pos = (mask.cumsum(-1) - 1).clamp(min=0)
            keep = max(seqs[i][2] for i in batch) + 1
            logits = self.model(input_ids=ids, attention_mask=mask, position_ids=pos,
                                logits_to_keep=keep).logits.float()  # (2B, keep, V)
            for j, i in enumerate(batch):
                n = seqs[i][2]
                target = ids[j, ids.shape[1] - n:]  # the continuation's tokens (left padding: they end the row)
                zc, zn = logits[j, keep - 1 - n:keep - 1], logits[b + j, keep - 1 - n:keep - 1]  # (n, V)
                for k, (meth, alpha) in enumerate(methods):
                    logp = torch.log_softmax(contrast(meth, zc, zn, alpha), dim=-1)
                    out[i][k] = float(logp.gather(1, target[:, None]).sum())
            if on_done:
                on_done(len(batch))
        return out
