"""The narrow interface the evaluator talks to: generate text, score continuations.

Anything with these methods can be evaluated: the HF backend, a future vLLM backend, or a scripted model in a
test of the plumbing (in the spirit of lm-evaluation-harness's dummy model).
"""

from __future__ import annotations

from typing import Any, Callable, Iterator, Protocol, Sequence


class LM(Protocol):
    name: str
    max_length: int  # prompt tokens + new tokens the model can attend over

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
        """The prompt string the model's own chat template makes of `messages`, ready for generation."""
        ...


class ProbedLM(LM, Protocol):
    """What the probes of `eval.probes` need from a backend beyond scoring (ctxrel.probes holds the math).

    Each method hands over only reduced tensors: nothing of a batch's hidden states or attention weights outlives
    the layer that made them, beyond the rows returned."""

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
