"""The narrow interface the evaluator talks to: generate text, score continuations.

Anything with these methods can be evaluated: the HF backend, a future vLLM backend, or a scripted model in a
test of the plumbing (in the spirit of lm-evaluation-harness's dummy model).
"""

from __future__ import annotations

from typing import Callable, Protocol, Sequence


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
