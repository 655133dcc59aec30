import pytest

from ctxrel.core.errors import CtxrelError
from ctxrel.core.prompts import PromptBuilder, continuation_delimiter


def test_plain_default():
    p = PromptBuilder("plain").with_context("Lyon is the capital of France.", "What is the capital of France?")
    assert p == ("Background: Lyon is the capital of France.\n\nQuestion: What is the capital of France?"
                 "\nAnswer:")
    assert PromptBuilder("plain").without_context("Q?") == "Question: Q?\nAnswer:"


def test_alpaca_puts_context_in_input():
    p = PromptBuilder("alpaca").with_context("CTX", "Q?")
    assert "### Instruction:\nQ?\n\n### Input:\nCTX\n\n### Response:\n" in p
    nc = PromptBuilder("alpaca").without_context("Q?")
    assert "### Input" not in nc and nc.endswith("### Response:\n")


def test_instruct_and_custom_format():
    p = PromptBuilder("plain", instruct=True).with_context("C", "Q")
    assert "Answer the question using the background above." in p
    custom = PromptBuilder("plain", body="Context: {context}\nQ: {question}\nA:")
    assert custom.with_context("C", "Q") == "Context: C\nQ: Q\nA:"
    assert PromptBuilder("tulu", body="{context} | {question}").with_context("C", "Q") == \
        "<|user|>\nC | Q\n<|assistant|>\n"


def test_chat_uses_renderer_and_verbatim_items():
    b = PromptBuilder("chat", render_chat=lambda msgs: "<u>" + msgs[0]["content"] + "</u><a>")
    assert b.with_context("C", "Q") == "<u>Background: C\n\nQuestion: Q</u><a>"
    assert b.with_context("C", "Q", verbatim="Write a quote: Absence") == "<u>Write a quote: Absence</u><a>"


@pytest.mark.parametrize("fmt, msg", [("{context}", "both"), ("{context} {question} {answer}", "unknown field"),
                                      ("{context", "not a valid format")])
def test_bad_format_strings(fmt, msg):
    with pytest.raises(CtxrelError, match=msg):
        PromptBuilder("plain", body=fmt)


def test_chat_without_template_is_an_error():
    with pytest.raises(CtxrelError, match="chat template"):
        PromptBuilder("chat")


def test_continuation_delimiter():
    assert continuation_delimiter("Answer:") == " "
    assert continuation_delimiter("assistant\n") == ""
