"""The model interface is declared in one place (ctxrel/backends/base.py): callers outside backends/ use only
what its protocols declare, never a private attribute, and the HF backend implements every declared method."""

from __future__ import annotations

import ast
import dataclasses
from pathlib import Path

import pytest

from ctxrel.backends.base import Capabilities
from ctxrel.config.settings import EvalConfig
from ctxrel.core.errors import CtxrelError

PACKAGE = Path(__file__).resolve().parents[1] / "src" / "ctxrel"
PROTOCOLS = ("LM", "ContrastLM", "ProbedLM")
LM_NAMES = {"lm", "ref"}  # the names callers give a backend (`reference` also names other things)


def declared() -> set[str]:
    """Methods and attributes the protocols of backends/base.py declare."""
    tree = ast.parse((PACKAGE / "backends" / "base.py").read_text())
    names = set()
    for node in tree.body:
        if isinstance(node, ast.ClassDef) and node.name in PROTOCOLS:
            for item in node.body:
                if isinstance(item, ast.FunctionDef):
                    names.add(item.name)
                elif isinstance(item, ast.AnnAssign) and isinstance(item.target, ast.Name):
                    names.add(item.target.id)
    return names


def test_callers_use_only_declared_backend_methods_and_no_private_attribute():
    allowed, used = declared(), []
    for path in sorted(PACKAGE.rglob("*.py")):
        if "backends" in path.relative_to(PACKAGE).parts:
            continue
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id in LM_NAMES:
                used.append((node.attr, f"{path.relative_to(PACKAGE)}:{node.lineno}"))
    assert used, "no backend use found: the test looks at the wrong names"
    undeclared = [(a, where) for a, where in used if a not in allowed or a.startswith("_")]
    assert not undeclared, f"backend attributes used but not declared in backends/base.py: {undeclared}"
    getattrs = [f"{p.relative_to(PACKAGE)}:{n.lineno}" for p in PACKAGE.rglob("*.py")
                for n in ast.walk(ast.parse(p.read_text())) if isinstance(n, ast.Call)
                and isinstance(n.func, ast.Name) and n.func.id in ("getattr", "hasattr") and n.args
                and isinstance(n.args[0], ast.Name) and n.args[0].id in LM_NAMES]
    assert not getattrs, f"a caller probes a backend with getattr/hasattr instead of its capabilities: {getattrs}"


def test_hf_backend_implements_every_declared_method_and_capability():
    pytest.importorskip("torch")
    from ctxrel.backends.hf import HFBackend

    missing = [name for name in declared() if not hasattr(HFBackend, name)
               and name not in ("name", "max_length", "batch_size", "capabilities")]  # set in __init__
    assert not missing, missing
    assert {f.name for f in dataclasses.fields(Capabilities)} >= {"contrast", "attention", "hidden_states",
                                                                 "weight_deltas", "chat_template"}


def test_hf_backend_declares_its_capabilities(tiny_lm):
    caps = tiny_lm.capabilities
    assert caps.contrast and caps.attention and caps.hidden_states and caps.weight_deltas
    assert tiny_lm.has_lora() is False  # a plain model: the weights probe reads the base weights
    head, tail = tiny_lm.split_continuation("Answer:", " Paris")
    assert head and tail and tiny_lm.count_tokens(["Answer: Paris"])[0] == len(head) + len(tail)


def test_contrast_decoding_is_refused_by_a_backend_that_does_not_declare_it(tiny_lm):
    from ctxrel.evaluate.engine import evaluate_variants

    declared_caps = tiny_lm.capabilities
    tiny_lm.capabilities = dataclasses.replace(declared_caps, contrast=False)
    try:
        with pytest.raises(CtxrelError, match="cannot decode by contrast"):
            evaluate_variants(tiny_lm, None, None, EvalConfig(decoding=["greedy", "cad"]), None, None,
                              checkpoint="model")
    finally:
        tiny_lm.capabilities = declared_caps
    # greedy alone on the conflict kind asks nothing of the backend
    assert evaluate_variants(tiny_lm, None, None, EvalConfig(decoding=["greedy"]), None, None,
                             checkpoint="model") == []
