"""Decoding methods that weigh the context at decoding time: the contrast of logits with and without it.

Pure tensor math (torch in, torch out), shared by the generation loop and the likelihood scorer of the HF
backend. Shapes: (..., V) logits over the vocabulary for the next token, the same leading shape in both branches.

* **CAD** — context-aware decoding (Shi, Han, Lewis, Tsvetkov, Zettlemoyer, Yih, "Trusting Your Evidence:
  Hallucinate Less with Context-aware Decoding", NAACL 2024, arXiv:2305.14739, Eq. 2-3):

      y_t ~ softmax[(1 + α) · logit(y_t | c, x, y_<t) − α · logit(y_t | x, y_<t)]

  α = 0 is ordinary decoding with the context; the paper's default is α = 1 (α = 0.5 for summarisation).
* **AdaCAD** — adaptive CAD (Wang, Prasad, Stengel-Eskin, Bansal, "AdaCAD: Adaptively Decoding to Balance
  Conflicts between Contextual and Parametric Knowledge", arXiv:2409.07394, Sec. 2): the same contrast with α set
  at every token to the Jensen-Shannon divergence between the two next-token distributions,

      α_t = JSD(p(· | c, x, y_<t) ‖ p(· | x, y_<t)),   JSD(P‖Q) = ½ KL(P‖M) + ½ KL(Q‖M),  M = ½ (P + Q),

  in bits (log base 2), so 0 ≤ α_t ≤ 1: no contrast where the context changes nothing, a strong one where the
  two branches disagree.
"""

from __future__ import annotations

import math
import re
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # torch is imported where the math runs: config validation stays light
    import torch

METHODS = ("greedy", "cad", "adacad")


def cad_logits(logits_ctx: torch.Tensor, logits_noctx: torch.Tensor, alpha: float | torch.Tensor) -> torch.Tensor:
    """CAD's contrast (1 + α)·logits_ctx − α·logits_noctx (Shi et al. 2023, Eq. 2). `alpha` is a float or a
    tensor broadcastable to the logits' leading shape plus a trailing 1 (one α per row, as AdaCAD gives).

    >>> import torch
    >>> cad_logits(torch.tensor([2.0, 1.0]), torch.tensor([0.0, 1.0]), 1.0).tolist()
    [4.0, 1.0]
    """
    import torch

    if isinstance(alpha, torch.Tensor) and alpha.dim() == logits_ctx.dim() - 1:
        alpha = alpha.unsqueeze(-1)
    return (1 + alpha) * logits_ctx.float() - alpha * logits_noctx.float()


def jensen_shannon(logits_p: torch.Tensor, logits_q: torch.Tensor) -> torch.Tensor:
    """JSD(softmax(p) ‖ softmax(q)) over the last dimension, in bits (0 ≤ JSD ≤ 1); shape (...,).

    Computed from log-probabilities (log M = logsumexp of the halves), so near-zero probabilities cost nothing
    and the value is exactly 0 for equal inputs.
    """
    import torch

    lp = torch.log_softmax(logits_p.float(), dim=-1)
    lq = torch.log_softmax(logits_q.float(), dim=-1)
    lm = torch.logsumexp(torch.stack([lp, lq]), dim=0) - math.log(2.0)
    kl_pm = (lp.exp() * (lp - lm)).sum(-1)
    kl_qm = (lq.exp() * (lq - lm)).sum(-1)
    return (0.5 * (kl_pm + kl_qm) / math.log(2.0)).clamp(0.0, 1.0)


def adacad_alpha(logits_ctx: torch.Tensor, logits_noctx: torch.Tensor) -> torch.Tensor:
    """AdaCAD's per-token weight α_t = JSD(p_ctx ‖ p_noctx) in bits (Wang et al. 2024, Sec. 2); shape (...,)."""
    return jensen_shannon(logits_ctx, logits_noctx)


def contrast(method: str, logits_ctx: torch.Tensor, logits_noctx: torch.Tensor | None,
             alpha: float = 1.0) -> torch.Tensor:
    """The next-token logits a decoding method scores with: `greedy` -> logits_ctx; `cad` -> the CAD contrast
    with `alpha`; `adacad` -> the CAD contrast with α_t from `adacad_alpha` (its `alpha` argument is unused)."""
    if method == "greedy":
        return logits_ctx.float()
    if logits_noctx is None:
        raise ValueError(f"decoding method {method!r} needs the logits without context")
    if method == "cad":
        return cad_logits(logits_ctx, logits_noctx, alpha)
    if method == "adacad":
        return cad_logits(logits_ctx, logits_noctx, adacad_alpha(logits_ctx, logits_noctx))
    raise ValueError(f"unknown decoding method {method!r}; expected one of {', '.join(METHODS)}")


# -- names: a decoding method with its weight, as written in configs, records and metric rows ----------------

def label(method: str, alpha: float = 1.0) -> str:
    """`greedy`, `adacad`, `cad` (α = 1, the paper's default) or `cad<α>` (`cad0.5`): unambiguous, short."""
    if method != "cad":
        return method
    return "cad" if alpha == 1.0 else f"cad{alpha:g}"


def parse_label(text: str) -> tuple[str, float]:
    """Inverse of `label`: 'cad0.5' -> ('cad', 0.5); 'greedy' -> ('greedy', 0.0).

    >>> parse_label("cad"), parse_label("cad0.5"), parse_label("adacad")
    (('cad', 1.0), ('cad', 0.5), ('adacad', 0.0))
    """
    if text in ("greedy", "adacad"):
        return text, 0.0
    m = re.fullmatch(r"cad(\d+(?:\.\d*)?(?:e[-+]?\d+)?)?", text)
    if not m:
        raise ValueError(f"unknown decoding {text!r}; expected greedy, cad, cad<alpha> or adacad")
    return "cad", float(m.group(1)) if m.group(1) else 1.0


def labels(methods: list[str], alphas: list[float]) -> list[str]:
    """The decodings a config asks for, in order: every alpha for `cad`, one entry otherwise."""
    out: list[str] = []
    for m in methods:
        for x in (alphas if m == "cad" else [0.0]):
            name = label(m, x)
            if name not in out:
                out.append(name)
    return out
