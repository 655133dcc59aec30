"""Probes: measurements inside the model at a checkpoint, as pure functions over tensors the backend hands over.

Three probes (docs/design.md, 'Words': probe), each named by its `eval.probes` key:

* `weights` — how far finetuning moved each projection of each layer: the Frobenius norm of the change from the
  base model, ||ΔW||_F, and its size relative to the base weight, ||ΔW||_F / ||W_0||_F. For LoRA the change is
  ΔW = B·A·scale (Hu et al. 2021, eq. 3), formed for one layer at a time.
* `heads` — the attention mass the answer-predicting position puts on the context, the question and the rest of
  the prompt, per layer and head (the study's Fig. 3b measure before its average over layers and heads).
* `lens` — the logit lens (nostalgebraist 2020): each layer's residual stream at the answer-predicting position,
  projected through the final norm and the unembedding, scored on the first token of the context answer and of
  the parametric answer; the layer from which the final winner stays ahead.

torch is imported by the functions that need it, so the row-shaping helpers stay usable without it.
"""

from __future__ import annotations

import math
import re

import numpy as np
from typing import Any, Callable, Iterable, Sequence

PROBES = ("weights", "heads", "lens")

# projection leaf names -> module kind (Llama / Mistral / Qwen / Gemma, GPT-NeoX, GPT-2, Phi)
MODULE_KINDS = {
    "q_proj": "q", "k_proj": "k", "v_proj": "v", "o_proj": "o",
    "gate_proj": "gate", "up_proj": "up", "down_proj": "down",
    "query_key_value": "qkv", "qkv_proj": "qkv", "c_attn": "qkv", "Wqkv": "qkv",
    "dense": "o", "dense_h_to_4h": "up", "dense_4h_to_h": "down", "c_fc": "up", "fc1": "up", "fc2": "down",
    "gate_up_proj": "gate_up",
}
MODULE_ORDER = ("q", "k", "qkv", "v", "o", "gate", "up", "gate_up", "down")
QK = ("q", "k")
SPANS = ("context", "question", "rest")


def module_of(name: str) -> tuple[int, str] | None:
    """(layer index, module kind) of a linear layer's name, or None for layers outside the decoder blocks
    (embeddings, the unembedding).

    >>> module_of("model.layers.3.self_attn.q_proj")
    (3, 'q')
    >>> module_of("lm_head") is None
    True
    """
    name = name.removesuffix(".weight")
    leaf = name.rsplit(".", 1)[-1]
    kind = MODULE_KINDS.get(leaf)
    if kind == "o" and leaf == "dense" and "attention" not in name and "attn" not in name:
        return None  # a `dense` outside attention (e.g. a classifier head) is not the output projection
    layer = re.search(r"\.(\d+)\.", f".{name}.")
    if kind is None or layer is None:
        return None
    return int(layer.group(1)), kind


# -- weights ---------------------------------------------------------------------------------------------------

def lora_delta(a, b, scale: float, *, fan_in_fan_out: bool = False):
    """ΔW = B·A·scale for LoRA factors A (r, in) and B (out, r): the (out, in) change the adapter adds to the
    base weight (transposed for layers that store weights as (in, out), e.g. GPT-2's Conv1D)."""
    delta = (b.float() @ a.float()) * scale
    return delta.T if fan_in_fan_out else delta


def weight_change(name: str, delta, base) -> dict[str, Any] | None:
    """One tidy row for a linear layer: layer, module, ||ΔW||_F, ||W_0||_F and their ratio; None when the name
    is not a decoder projection."""
    where = module_of(name)
    if where is None:
        return None
    d = float(delta.detach().float().norm())
    w = float(base.detach().float().norm())
    return dict(name=name.removesuffix(".weight"), layer=where[0], module=where[1], delta_norm=d, base_norm=w,
                relative=d / w if w > 0 else float("nan"))


def weight_rows(deltas: Iterable[tuple[str, Any, Any]]) -> list[dict[str, Any]]:
    """Rows for every (name, ΔW, W_0) the backend yields (it yields one layer at a time), ordered by layer and
    module."""
    rows = [r for name, delta, base in deltas if (r := weight_change(name, delta, base)) is not None]
    order = {m: k for k, m in enumerate(MODULE_ORDER)}
    return sorted(rows, key=lambda r: (r["layer"], order.get(r["module"], 99), r["name"]))


def weight_summary(rows: Sequence[dict[str, Any]]) -> dict[str, float]:
    """Whole-model numbers: total change sqrt(Σ||ΔW||²), relative to sqrt(Σ||W_0||²) of the same layers, and
    the q/k share of the squared change Σ_{q,k}||ΔW||² / Σ||ΔW||² (squared norms add over layers; a fused
    q|k|v layer counts as not q/k). NaN share when nothing changed."""
    total = sum(r["delta_norm"] ** 2 for r in rows)
    base = sum(r["base_norm"] ** 2 for r in rows)
    qk = sum(r["delta_norm"] ** 2 for r in rows if r["module"] in QK)
    return dict(weight_change=math.sqrt(total),
                weight_change_relative=math.sqrt(total / base) if base > 0 else float("nan"),
                weight_change_qk_share=qk / total if total > 0 else float("nan"))


# -- heads -----------------------------------------------------------------------------------------------------

def span_masks(offsets: Sequence[tuple[int, int]], spans: Sequence[tuple[int, int]]):
    """(S + 1, T) 0/1 masks over a prompt's tokens: one per character span [start, end) — a token belongs to a
    span when its characters overlap it (the rule of `--attention`) — and last `rest`, the tokens in none of
    them (template, special tokens)."""
    import torch

    m = torch.zeros(len(spans) + 1, len(offsets))
    for t, (a, b) in enumerate(offsets):
        for s, (start, end) in enumerate(spans):
            if b > a and a < end and b > start:
                m[s, t] = 1.0
    m[-1] = (m[:-1].sum(0) == 0).float()
    return m


def head_span_mass(last_row, masks):
    """Attention mass per head on each span: `last_row` (B, H, T) is one layer's attention from the last position
    (the one predicting the answer's first token), `masks` (B, S, T) the span masks aligned to the same padded
    positions (0 on padding). Returns (B, H, S)."""
    import torch

    return torch.einsum("bht,bst->bhs", last_row.float(), masks.float())


# -- lens ------------------------------------------------------------------------------------------------------

def logit_lens(hidden, to_logits: Callable, token_ids):
    """Log-probabilities of `token_ids` (B, K) read off every layer: `hidden` (L, B, D) are the residual streams
    after each decoder layer at the answer-predicting position, `to_logits` the model's final norm followed by
    its unembedding (B, D) -> (B, V). Returns (L, B, K); at the last layer this is the model's own next-token
    log-probability. One layer's (B, V) logits exist at a time."""
    import torch

    out = []
    for h in hidden:
        logp = torch.log_softmax(to_logits(h).float(), dim=-1)  # (B, V)
        out.append(logp.gather(1, token_ids))
    return torch.stack(out)


def decided_layer(log_odds: Sequence[float]) -> int | None:
    """The first layer from which the sign of the log-odds (context vs parametric) stays that of the last layer:
    where the final winner overtakes for good (0 when it leads throughout). None when the last layer is a tie.

    >>> decided_layer([-2.0, -1.0, 0.5, -0.1, 0.3, 1.2])
    4
    """
    final = log_odds[-1]
    if final == 0:
        return None
    layer = len(log_odds) - 1
    while layer > 0 and (log_odds[layer - 1] > 0) == (final > 0) and log_odds[layer - 1] != 0:
        layer -= 1
    return layer


def crossing_layer(curve: Sequence[float]) -> float | None:
    """Where a mean log-odds curve last crosses 0, interpolated linearly between layers (None if it never does)."""
    for k in range(len(curve) - 1, 0, -1):
        a, b = curve[k - 1], curve[k]
        if (a < 0) != (b < 0) and a != b:
            return (k - 1) + a / (a - b)
    return None


# -- rows -> arrays (the probe files' shape, shared by the evaluation and the report) --------------------------

def head_matrices(records: list[dict[str, Any]], span: str = "context") -> dict[str, np.ndarray]:
    """Per item, the (layers, heads) matrix of one span's attention mass from heads.jsonl rows."""
    by_id: dict[str, dict[tuple[int, int], float]] = {}
    for r in records:
        by_id.setdefault(r["id"], {})[(r["layer"], r["head"])] = r[span]
    out = {}
    for i, cells in by_id.items():
        n_l = 1 + max(l for l, _ in cells)
        n_h = 1 + max(h for _, h in cells)
        m = np.full((n_l, n_h), np.nan)
        for (l, h), v in cells.items():
            m[l, h] = v
        out[i] = m
    return out


def lens_curves(records: list[dict[str, Any]]) -> dict[str, np.ndarray]:
    """Per item, its log-odds (context vs parametric first token) by layer, from lens.jsonl rows; items whose two
    answers begin with the same token (log-odds 0 at every layer) are left out."""
    by_id: dict[str, dict[int, float]] = {}
    skip = set()
    for r in records:
        by_id.setdefault(r["id"], {})[r["layer"]] = r["log_odds"]
        if r.get("same_first_token"):
            skip.add(r["id"])
    return {i: np.array([c[k] for k in sorted(c)]) for i, c in by_id.items() if i not in skip}
