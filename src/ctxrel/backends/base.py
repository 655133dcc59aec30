"""The narrow interface the evaluator talks to: generate text, score continuations.

Anything with these methods can be evaluated: the HF backend, a future vLLM backend, or a scripted model in a
test of the plumbing (in the spirit of lm-evaluation-harness's dummy model). A backend says what it can do
beyond that in `capabilities`; callers ask there, never by probing for methods or catching errors.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Iterator, Protocol, Sequence

CHUNK_BATCHES = 4  # prompts handed to a backend at once, in batches: the unit of work appended to the records


@dataclass(frozen=True)
class Capabilities:
    """What a backend can do beyond generate / loglikelihood / count_tokens."""

    chat_template: bool = False  # render_chat works: the model has its own chat template (`template: chat`)
    attention: bool = False  # attention weights: attention_to_spans (eval.attention), attention_by_head (heads)
    hidden_states: bool = False  # every layer's hidden state: answer_lens, probe_pass (the lens probe)
    weight_deltas: bool = False  # ΔW per linear layer (the weights probe)
    contrast: bool = False  # generate_contrast / loglikelihood_contrast (eval.decoding cad, adacad)


class LM(Protocol):
    name: str
    max_length: int  # prompt tokens + new tokens the model can attend over
    batch_size: int  # prompts per forward pass (>= 1)
    capabilities: Capabilities

    def generate(self, prompts: Sequence[str], *, max_new_tokens: int, samples: int = 1,
                 temperature: float = 0.0, seed: int = 0, stop: Sequence[str] = (),
                 on_done: Callable[[int], None] | None = None) -> list[list[str]]:
        """For each prompt, `samples` completions (greedy when temperature == 0), each cut before the first of
        the `stop` strings. `on_done(k)` reports k finished prompts (for progress bars)."""
        ...

    def loglikelihood(self, requests: Sequence[tuple[str, str]],
                      on_done: Callable[[int], None] | None = None) -> list[float]:
        """Summed log-probability of each continuation given its prompt (natural log)."""
        ...

    def count_tokens(self, texts: Sequence[str]) -> list[int]:
        ...

    def render_chat(self, messages: list[dict[str, str]]) -> str:
        """The prompt string the model's own chat template makes of `messages`, ready for generation (only when
        `capabilities.chat_template`)."""
        ...


def chunk_size(lm: LM) -> int:
    """How many prompts a caller hands `lm` at once between two appends of records: a crash loses at most one
    chunk, and each call still fills several batches."""
    return lm.batch_size * CHUNK_BATCHES


class ContrastLM(LM, Protocol):
    """What the contrast decodings of `eval.decoding` (cad, adacad; ctxrel.core.decoding holds the math) need from a
    backend, present when `capabilities.contrast` is declared."""

    def generate_contrast(self, pairs: Sequence[tuple[str, str]], methods: Sequence[tuple[str, float]], *,
                          max_new_tokens: int, stop: Sequence[str] = (),
                          on_done: Callable[[int], None] | None = None) -> list[list[str]]:
        """Greedy text of the contrast of each (prompt with context, prompt without context) pair, per
        (method, alpha) in `methods`: out[i][m]."""
        ...

    def loglikelihood_contrast(self, requests: Sequence[tuple[str, str, str]],
                               methods: Sequence[tuple[str, float]],
                               on_done: Callable[[int], None] | None = None) -> list[list[float]]:
        """Summed log-probability of each continuation under the contrast of its (prompt with context, prompt
        without context) pair, per (method, alpha): out[i][m]."""
        ...


class ProbedLM(LM, Protocol):
    """What measurements inside the model need from a backend beyond scoring: `--attention` and the probes of
    `eval.probes` (ctxrel.core.probe_math holds the math), each method present when its capability is declared.

    Each method hands over only reduced tensors: nothing of a batch's hidden states or attention weights outlives
    the layer that made them, beyond the rows returned."""

    def split_continuation(self, prompt: str, continuation: str) -> tuple[list[int], list[int]]:
        """Token ids of `prompt` and of `continuation` as the model sees them joined (as `loglikelihood` scores
        them)."""
        ...

    def has_lora(self) -> bool:
        """Whether the model carries a LoRA adapter, whose ΔW `weight_deltas` reads without the base weights."""
        ...

    def attention_to_spans(self, prompts: Sequence[str], spans: Sequence[Sequence[tuple[int, int]]], *,
                           on_done: Callable[[int], None] | None = None) -> list[list[float]]:
        """Per prompt, the attention mass of its last token on each character span, averaged over layers and
        heads (`eval.attention`; capability `attention`)."""
        ...

    def probe_pass(self, prompts: Sequence[str], *, spans: Sequence[Sequence[tuple[int, int]]] | None = None,
                   continuations: Sequence[Sequence[str]] | None = None,
                   on_done: Callable[[int], None] | None = None) -> tuple[list | None, list | None]:
        """One forward pass per batch that serves both probes: (`attention_by_head`, `answer_lens`) results,
        None for the one not asked."""
        ...

    def weight_deltas(self, base_weight: Callable[[str], Any] | None = None) -> Iterator[tuple[str, Any, Any]]:
        """(linear layer name, ΔW, W_0), one layer at a time: LoRA's B·A·scale, or the dense difference from the
        base weights that `base_weight(name)` reads."""
        ...

    def attention_by_head(self, prompts: Sequence[str], spans: Sequence[Sequence[tuple[int, int]]], *,
                          on_done: Callable[[int], None] | None = None) -> list[Any]:
        """Per prompt an (L, H, S + 1) tensor: attention from the last token to each character span, then to the
        rest of the prompt, per layer and head."""
        ...

    def answer_lens(self, requests: Sequence[tuple[str, Sequence[str]]], *,
                    on_done: Callable[[int], None] | None = None) -> list[Any]:
        """Per (prompt, continuations) an (L, K) tensor: each continuation's first-token log-probability read off
        every layer through the final norm and the unembedding."""
        ...
