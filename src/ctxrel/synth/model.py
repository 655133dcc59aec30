"""A tiny GPT for the synthetic lab: pre-LayerNorm decoder blocks, learned positions, an untied readout.

Small enough to pretrain from scratch on CPU in seconds (width 128, 2-4 layers), and explicit enough to read
its attention: `forward(..., return_attention=True)` also returns every layer's attention probabilities, which
the lab uses for the theory's diagnostics (how much the answer position attends to the context vs the subject).
Attention is computed by hand (not SDPA) for exactly that reason; at these sizes it costs nothing.
The readout is untied from the input embeddings: tied, the 2-layer model memorised the default world's facts
about half as fast (recall 0.34 vs 0.80 after 400 pretraining steps, measured once).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn as nn


@dataclass
class ModelConfig:
    n_layer: int = 2  # decoder blocks
    n_head: int = 4  # attention heads per block
    d_model: int = 128  # width (the residual stream)
    d_mlp: int = 512  # MLP hidden width: where memorised facts mostly live
    max_len: int = 64  # positions (a sequence longer than this is a config error)


class SelfAttention(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.n_head, self.d_head = cfg.n_head, cfg.d_model // cfg.n_head
        self.q = nn.Linear(cfg.d_model, cfg.d_model)
        self.k = nn.Linear(cfg.d_model, cfg.d_model)
        self.v = nn.Linear(cfg.d_model, cfg.d_model)
        self.proj = nn.Linear(cfg.d_model, cfg.d_model)

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        B, T, C = x.shape
        q = self.q(x).view(B, T, self.n_head, self.d_head).transpose(1, 2)  # (B, H, T, Dh)
        k = self.k(x).view(B, T, self.n_head, self.d_head).transpose(1, 2)  # (B, H, T, Dh)
        v = self.v(x).view(B, T, self.n_head, self.d_head).transpose(1, 2)  # (B, H, T, Dh)
        att = (q @ k.transpose(-2, -1)) / math.sqrt(self.d_head)  # (B, H, T, T)
        att = att.masked_fill(~mask, float("-inf")).softmax(dim=-1)  # causal and padding mask
        y = (att @ v).transpose(1, 2).reshape(B, T, C)  # (B, T, C)
        return self.proj(y), att


class Block(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.ln1, self.ln2 = nn.LayerNorm(cfg.d_model), nn.LayerNorm(cfg.d_model)
        self.attn = SelfAttention(cfg)
        self.mlp = nn.Sequential(nn.Linear(cfg.d_model, cfg.d_mlp), nn.GELU(), nn.Linear(cfg.d_mlp, cfg.d_model))

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        a, att = self.attn(self.ln1(x), mask)
        x = x + a
        return x + self.mlp(self.ln2(x)), att


class TinyGPT(nn.Module):
    def __init__(self, cfg: ModelConfig, vocab_size: int):
        super().__init__()
        self.cfg = cfg
        self.tok = nn.Embedding(vocab_size, cfg.d_model)
        self.pos = nn.Embedding(cfg.max_len, cfg.d_model)
        self.blocks = nn.ModuleList(Block(cfg) for _ in range(cfg.n_layer))
        self.ln_f = nn.LayerNorm(cfg.d_model)
        self.head = nn.Linear(cfg.d_model, vocab_size, bias=False)
        self.apply(self._init)

    @staticmethod
    def _init(m: nn.Module) -> None:
        if isinstance(m, (nn.Linear, nn.Embedding)):
            nn.init.normal_(m.weight, std=0.02)
        if isinstance(m, nn.Linear) and m.bias is not None:
            nn.init.zeros_(m.bias)

    def forward(self, ids: torch.Tensor, *, return_attention: bool = False):
        """ids (B, T) right-padded with 0 -> logits (B, T, V) [, list of n_layer (B, H, T, T) attentions].
        Padding sits after every real token, so the causal mask alone keeps real positions from seeing it."""
        B, T = ids.shape
        if T > self.cfg.max_len:
            raise ValueError(f"sequence of {T} tokens exceeds model.max_len={self.cfg.max_len}")
        x = self.tok(ids) + self.pos(torch.arange(T, device=ids.device))  # (B, T, C)
        mask = torch.ones(T, T, dtype=torch.bool, device=ids.device).tril()  # (T, T) causal
        atts = []
        for blk in self.blocks:
            x, att = blk(x, mask)
            atts.append(att)
        logits = self.head(self.ln_f(x))  # (B, T, V)
        return (logits, atts) if return_attention else logits


def qk_parameters(model: TinyGPT) -> list[str]:
    """Names of the attention query/key projections: what QK-only finetuning trains (docs/design.md, 'Words')."""
    return [n for n, _ in model.named_parameters() if ".attn.q." in n or ".attn.k." in n]


def lm_loss(logits: torch.Tensor, ids: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Mean next-token cross-entropy over positions marked in `target` (B, T): target[:, t] = 1 means ids[:, t]
    is predicted from position t-1."""
    logp = logits[:, :-1].log_softmax(-1)  # (B, T-1, V)
    nll = -logp.gather(-1, ids[:, 1:, None])[..., 0]  # (B, T-1)
    w = target[:, 1:].float()
    return (nll * w).sum() / w.sum().clamp(min=1)


def batch(seqs: list[list[int]], masks: list[list[int]] | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Right-pad token lists into (B, T) ids and (B, T) target masks."""
    T = max(len(s) for s in seqs)
    ids = torch.zeros(len(seqs), T, dtype=torch.long)
    tgt = torch.zeros(len(seqs), T, dtype=torch.long)
    for i, s in enumerate(seqs):
        ids[i, :len(s)] = torch.tensor(s)
        if masks is not None:
            tgt[i, :len(s)] = torch.tensor(masks[i])
    return ids, tgt


def answer_logprob(model: TinyGPT, prompts: list[list[int]], answers: list[tuple[int, ...]]) -> torch.Tensor:
    """Teacher-forced log p(answer | prompt) per item (B,): the sum over the answer's tokens."""
    seqs = [p + list(a) for p, a in zip(prompts, answers)]
    masks = [[0] * len(p) + [1] * len(a) for p, a in zip(prompts, answers)]
    ids, tgt = batch(seqs, masks)
    logp = model(ids)[:, :-1].log_softmax(-1)  # (B, T-1, V)
    tok = logp.gather(-1, ids[:, 1:, None])[..., 0]  # (B, T-1)
    return (tok * tgt[:, 1:]).sum(1)


@torch.no_grad()
def greedy(model: TinyGPT, prompts: list[list[int]], n_new: int) -> list[list[int]]:
    """Greedy continuation of `n_new` tokens. Prompts are grouped by length (learned absolute positions make
    left padding unsafe), so each group is one exact batch."""
    out: list[list[int] | None] = [None] * len(prompts)
    groups: dict[int, list[int]] = {}
    for i, p in enumerate(prompts):
        groups.setdefault(len(p), []).append(i)
    for _, idx in groups.items():
        ids = torch.tensor([prompts[i] for i in idx])  # (B, T)
        for _ in range(n_new):
            nxt = model(ids)[:, -1].argmax(-1, keepdim=True)  # (B, 1)
            ids = torch.cat([ids, nxt], 1)
        for row, i in enumerate(idx):
            out[i] = ids[row, len(prompts[i]):].tolist()
    return out  # type: ignore[return-value]
