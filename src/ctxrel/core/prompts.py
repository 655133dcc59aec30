"""Prompt templates: how a conflict item (or a bare question) becomes the text the model reads.

Two layers:
* the *body* states the task: by default "Background: <context>\n\nQuestion: <question>", optionally followed
  by an instruction to answer from the background; `--prompt FORMAT` replaces it with the user's own format
  string (fields `{context}` and `{question}`);
* the *template* wraps the body the way the model was finetuned: `alpaca` (instruction + input), `tulu`
  (<|user|>/<|assistant|>), `chat` (the tokenizer's own chat template) or `plain` (the body followed by
  "Answer:"; a user format string is used verbatim).

Items that carry their own wording (MemoTrap) use it as the body unchanged.
"""

from __future__ import annotations

import string
from dataclasses import dataclass
from typing import Callable

from ctxrel.core.errors import CtxrelError

TEMPLATES = ("auto", "alpaca", "tulu", "chat", "plain")  # the one list (config keys and flags take it from here)
TRAIN_TEMPLATES = TEMPLATES[:-1]  # training renders a response after the prompt: every template but plain
DEFAULT_BODY = "Background: {context}\n\nQuestion: {question}"
NO_CONTEXT_BODY = "Question: {question}"
CONTEXT_INSTRUCTION = "Answer the question using the background above."

# The Stanford Alpaca training preamble (with and without an input field); a finetuned model expects it verbatim.
ALPACA_WITH_INPUT = (
    "Below is an instruction that describes a task, paired with an input that provides further context. "
    "Write a response that appropriately completes the request.\n\n"
    "### Instruction:\n{instruction}\n\n### Input:\n{input}\n\n### Response:\n")
ALPACA_NO_INPUT = (
    "Below is an instruction that describes a task. "
    "Write a response that appropriately completes the request.\n\n"
    "### Instruction:\n{instruction}\n\n### Response:\n")
TULU = "<|user|>\n{message}\n<|assistant|>\n"


def check_format(fmt: str) -> None:
    """Reject a --prompt format string that lacks {context}/{question} or names other fields."""
    try:
        fields = {f for _, f, _, _ in string.Formatter().parse(fmt) if f is not None}
    except ValueError as e:
        raise CtxrelError(f"--prompt {fmt!r}: not a valid format string ({e}); write literal braces as {{{{ }}}}")
    unknown = fields - {"context", "question"}
    if unknown:
        raise CtxrelError(f"--prompt: unknown field(s) {sorted(unknown)}; only {{context}} and {{question}} exist")
    if not {"context", "question"} <= fields:
        raise CtxrelError("--prompt must contain both {context} and {question}")


@dataclass(frozen=True)
class PromptBuilder:
    """Turns items into prompt strings for one template. `render_chat` is the backend's chat renderer."""

    template: str = "plain"
    body: str | None = None  # user format string; None = DEFAULT_BODY
    instruct: bool = False  # add CONTEXT_INSTRUCTION to the default body
    render_chat: Callable[[list[dict[str, str]]], str] | None = None

    def __post_init__(self):
        if self.template not in TEMPLATES or self.template == "auto":
            raise CtxrelError(f"unknown template {self.template!r}; choose one of alpaca, tulu, chat, plain")
        if self.body is not None:
            check_format(self.body)
        if self.template == "chat" and self.render_chat is None:
            raise CtxrelError("template 'chat' needs a tokenizer with a chat template")

    def with_context(self, context: str, question: str, verbatim: str | None = None) -> str:
        """The prompt for a question asked with its (conflicting) context."""
        if verbatim is not None:
            return self._wrap(verbatim, instruction=verbatim, input_text=None, custom=True)
        if self.body is not None:
            text = self.body.format(context=context, question=question)
            return self._wrap(text, instruction=text, input_text=None, custom=True)
        text = DEFAULT_BODY.format(context=context, question=question)
        if self.instruct:
            text += "\n" + CONTEXT_INSTRUCTION
        instruction = question + ("\n" + CONTEXT_INSTRUCTION if self.instruct else "")
        return self._wrap(text, instruction=instruction, input_text=context, custom=False)

    def without_context(self, question: str) -> str:
        """The prompt for the knowledge filter: the bare question."""
        return self._wrap(NO_CONTEXT_BODY.format(question=question), instruction=question, input_text=None,
                          custom=False)

    def _wrap(self, body: str, *, instruction: str, input_text: str | None, custom: bool) -> str:
        if self.template == "plain":
            return body if custom else body + "\nAnswer:"
        if self.template == "alpaca":
            if custom or input_text is None:
                return ALPACA_NO_INPUT.format(instruction=body if custom else instruction)
            return ALPACA_WITH_INPUT.format(instruction=instruction, input=input_text)
        if self.template == "tulu":
            return TULU.format(message=body)
        return self.render_chat([{"role": "user", "content": body}])


def continuation_delimiter(prompt: str) -> str:
    """A space before a scored answer unless the prompt already ends in whitespace (lm-eval's convention)."""
    return "" if not prompt or prompt[-1].isspace() else " "


def sentence_case(text: str) -> str:
    """`text` with its first character upper-cased (questions and statements built from lower-case templates)."""
    return text[:1].upper() + text[1:]


def resolve_data_template(template: str, tok) -> str:
    """The template a model is trained with: `auto` means the tokenizer's chat template when it has one, else
    alpaca (training never picks plain; evaluation's `resolve_template` does)."""
    if template == "auto":
        return "chat" if getattr(tok, "chat_template", None) else "alpaca"
    return template


def resolve_template(template: str, has_chat_template: bool) -> str:
    """`auto` means the tokenizer's chat template when it has one, else plain."""
    if template == "auto":
        return "chat" if has_chat_template else "plain"
    return template
