"""The study's one-layer, one-head attention model of instruction finetuning, as a simulator.

Goyal, Baek, Kolter, Raghunathan, "Context-Parametric Inversion: Why Instruction Finetuning May Not Actually
Improve Context Reliance" (ICLR 2025), theory section. Written from the model's description, not from code.

The model, top to bottom (N points, T = 3 positions [context, subject, relation], d = embedding width,
K = answer vocabulary):

    tokens    x_t = unit-norm embeddings                                   # (N, T, d)
    scores    score(x_t) = r^T W_KQ x_t, the relation token is the query   # (N, T)
              (the relation position does not attend to itself; an absent context is masked)
    attention a = softmax(scores)                                          # (N, T)
    output    v = W_V sum_t a_t x_t                                        # (N, d)
    logits    z = E_ans v  (frozen head tied to the answer embeddings)     # (N, K)

Embeddings (one-hot directions, so every stated orthogonality holds exactly):

    subject  s = sqrt(1/2) e_s + sqrt(1/2) theta_S
    answer   a = sqrt(1/2) e_a + sqrt(1/2) theta_C    (a context token is an answer token)
    relation r = e_r                                  (orthogonal to all of the above)

"Pretrained" values: W_V s = alpha_mem * a_{answer(s)} for a memorised subject, W_V s = 0 for an unknown one,
W_V a = beta_copy * a (context tokens weakly read out themselves). Since a_j . a_k = 1/2 + delta_jk / 2 the
shared half of every logit cancels in the softmax: a point's target logit margin is
(alpha_mem * a_subject + beta_copy * a_context) / 2, which is what makes the attention split matter.

Point types (docs/design.md, 'Words'): C = [c, s, r] with an unknown subject (target: the context's answer);
C+S = [c, s, r] with a memorised subject whose answer the context repeats; S = [s, r] (memorised subject, no context).
Conflict inputs (held out, never trained on): a memorised subject with a context naming another answer.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

CTX, SUBJ, REL = 0, 1, 2  # positions in a point


@dataclass
class TheoryConfig:
    seed: int = 0  # data draw (which answers, which conflicts); the model itself has no random init
    n_answers: int = 10  # K: answer / context vocabulary
    n_c: int = 300  # C points: unknown subject, context gives the answer
    n_cs: int = 100  # C+S points: memorised subject, context agrees with memory
    n_s: int = 0  # S points: memorised subject, no context (restating the C+S facts in turn; fresh subjects
    #               when there are no C+S points)
    n_c_subjects: int = 0  # distinct unknown subjects shared by the C points; 0 = one per point
    n_conflict: int = 200  # held-out conflict inputs (memorised subject, context disagrees)
    alpha_mem: float = 4.0  # memory strength: W_V s = alpha_mem * answer(s) for memorised subjects
    beta_copy: float = 1.0  # copy strength: W_V c = beta_copy * c for context tokens
    train: str = "kq"  # kq = W_KQ only | kq+v = W_KQ and W_V
    loss_norm: str = "all"  # all = mean over training points | context = sum / points with a context
    #                         ("context" lets S points add gradient instead of diluting the others')
    lr: float = 50.0  # full-batch gradient-descent step size (large steps are cheap and show the regimes)
    steps: int = 60  # gradient steps; metrics are recorded before every step and after the last


TRAIN_CHOICES = ("kq", "kq+v")
LOSS_NORM_CHOICES = ("all", "context")


# -- the world: embeddings and pretrained values ------------------------------------------------------------

@dataclass
class World:
    subjects: torch.Tensor  # (n_subj, d) unit-norm subject embeddings
    answers: torch.Tensor  # (K, d) unit-norm answer/context embeddings = the frozen readout E_ans
    relation: torch.Tensor  # (d,) relation token (the query)
    theta_s: torch.Tensor  # (d,) direction shared by all subjects
    theta_c: torch.Tensor  # (d,) direction shared by all answer/context tokens
    memory: torch.Tensor  # (n_subj,) answer index of each memorised subject, -1 for unknown subjects


def make_world(memory: torch.Tensor, n_answers: int) -> World:
    """Structured unit-norm embeddings of the theory section: subject/answer tokens are half their own
    direction and half a shared one (theta_S, theta_C); the relation token is orthogonal to everything."""
    n_subj = len(memory)
    d = n_subj + n_answers + 3
    eye = torch.eye(d, dtype=torch.float64)
    theta_s, theta_c, relation = eye[n_subj + n_answers], eye[n_subj + n_answers + 1], eye[d - 1]
    h = math.sqrt(0.5)
    subjects = h * eye[:n_subj] + h * theta_s  # (n_subj, d)
    answers = h * eye[n_subj:n_subj + n_answers] + h * theta_c  # (K, d)
    return World(subjects, answers, relation, theta_s, theta_c, memory)


def pretrained_value(world: World, alpha_mem: float, beta_copy: float) -> torch.Tensor:
    """W_V after "pretraining" (the study's assumption on the value matrix): memorised subjects read out their
    answer with strength alpha_mem, context tokens read out themselves with strength beta_copy. Built on the
    own directions e_s, e_a (scaled by sqrt 2 so that W_V s = alpha * a exactly); theta_S, theta_C, r map to 0."""
    n_subj, K, d = len(world.memory), len(world.answers), world.answers.shape[1]
    W_V = torch.zeros(d, d, dtype=torch.float64)
    known = (world.memory >= 0).nonzero().flatten()  # (M,)
    s2 = math.sqrt(2.0)
    W_V[:, known] = s2 * alpha_mem * world.answers[world.memory[known]].T  # columns e_s -> alpha * a
    W_V[:, n_subj:n_subj + K] = s2 * beta_copy * world.answers.T  # columns e_a -> beta * a
    return W_V  # (d, d)


# -- data ---------------------------------------------------------------------------------------------------

@dataclass
class Points:
    """A batch of points in index form: context answer (-1 = none), subject, target answer."""
    context: torch.Tensor  # (N,) answer index of the context token, -1 when absent
    subject: torch.Tensor  # (N,) subject index
    target: torch.Tensor  # (N,) answer index to predict
    parametric: torch.Tensor  # (N,) memorised answer of the subject (-1 if unknown)


def make_points(cfg: TheoryConfig) -> tuple[World, dict[str, Points]]:
    """Draw the subjects and the four point sets (C, C+S, S, conflict) of the theory section."""
    g = torch.Generator().manual_seed(cfg.seed)
    K = cfg.n_answers

    def rand(n):
        return torch.randint(0, K, (n,), generator=g)

    n_cu = cfg.n_c_subjects or cfg.n_c  # unknown subjects of C points
    n_s_fresh = cfg.n_s if cfg.n_cs == 0 else 0  # S points restate C+S facts; fresh subjects only if n_cs=0
    # subject index layout: [unknown (C) | C+S memorised | fresh S memorised | held-out conflict memorised]
    memory = torch.cat([torch.full((n_cu,), -1), rand(cfg.n_cs), rand(n_s_fresh), rand(cfg.n_conflict)])
    world = make_world(memory, K)
    ar = torch.arange
    none = torch.full

    c_subj = ar(cfg.n_c) % max(n_cu, 1)
    c_ans = rand(cfg.n_c)  # the context decides the answer
    cs_subj = n_cu + ar(cfg.n_cs)
    s_subj = n_cu + cfg.n_cs + ar(n_s_fresh) if n_s_fresh else cs_subj[ar(cfg.n_s) % max(cfg.n_cs, 1)]
    x_subj = n_cu + cfg.n_cs + n_s_fresh + ar(cfg.n_conflict)
    x_par = memory[x_subj]
    x_ctx = (x_par + 1 + torch.randint(0, K - 1, (cfg.n_conflict,), generator=g)) % K  # any other answer
    points = {
        "C": Points(c_ans, c_subj, c_ans, none((cfg.n_c,), -1)),
        "C+S": Points(memory[cs_subj], cs_subj, memory[cs_subj], memory[cs_subj]),
        "S": Points(none((len(s_subj),), -1), s_subj, memory[s_subj], memory[s_subj]),
        "conflict": Points(x_ctx, x_subj, x_ctx, x_par),
    }
    return world, points


def embed(world: World, pts: Points) -> tuple[torch.Tensor, torch.Tensor]:
    """Token embeddings of points [c, s, r] and which positions the relation query may attend to."""
    N, d = len(pts.subject), world.answers.shape[1]
    X = torch.zeros(N, 3, d, dtype=torch.float64)  # (N, T, d)
    has_ctx = pts.context >= 0  # (N,)
    X[has_ctx, CTX] = world.answers[pts.context[has_ctx]]
    X[:, SUBJ] = world.subjects[pts.subject]
    X[:, REL] = world.relation
    mask = torch.stack([has_ctx, torch.ones(N, dtype=torch.bool), torch.zeros(N, dtype=torch.bool)], 1)
    return X, mask  # (N, T, d), (N, T): the relation never attends to itself


# -- the model ----------------------------------------------------------------------------------------------

def forward(W_KQ: torch.Tensor, W_V: torch.Tensor, X: torch.Tensor, mask: torch.Tensor,
            world: World) -> tuple[torch.Tensor, torch.Tensor]:
    """One attention layer, one head, read at the relation position (the study's model): attention from the
    relation token r with scores r^T W_KQ x, values W_V x, logits from the frozen answer embeddings."""
    q = world.relation @ W_KQ  # (d,): score(x) = r^T W_KQ x
    scores = (X @ q).masked_fill(~mask, float("-inf"))  # (N, T)
    attn = torch.softmax(scores, dim=-1)  # (N, T)
    h = torch.einsum("nt,ntd->nd", attn, X)  # (N, d) attended input
    readout = world.answers @ W_V  # (K, d): E_ans W_V, so logits = E_ans (W_V h) without an (N, d) detour
    logits = h @ readout.T  # (N, K)
    return attn, logits


def context_share(logits: torch.Tensor, pts: Points) -> torch.Tensor:
    """M_C = p_context / (p_context + p_parametric) per conflict input (the study's context-reliance
    measure under a knowledge conflict); exact in log space."""
    logp = torch.log_softmax(logits, dim=-1)  # (N, K)
    lc = logp.gather(1, pts.context[:, None])[:, 0]  # (N,)
    lp = logp.gather(1, pts.parametric[:, None])[:, 0]  # (N,)
    return torch.sigmoid(lc - lp)  # (N,)


def subject_readout(W_V: torch.Tensor, world: World, pts: Points) -> torch.Tensor:
    """Logit margin of each point's target when the value matrix reads its subject alone: a_y^T W_V s minus
    the mean over answers (Proposition 3: 0 for unknown subjects at init; training W_V raises it)."""
    z = (world.subjects[pts.subject] @ W_V.T) @ world.answers.T  # (N, K)
    return z.gather(1, pts.target[:, None])[:, 0] - z.mean(1)  # (N,)


# -- training -----------------------------------------------------------------------------------------------

def measure(W_KQ, W_V, world: World, batches: dict[str, tuple]) -> dict[str, dict[str, float]]:
    """Metrics of one step per point type: mean attention on context / subject, loss, score gap, M_C."""
    out: dict[str, dict[str, float]] = {}
    with torch.no_grad():
        for name, (pts, X, mask) in batches.items():
            if len(pts.subject) == 0:
                continue
            attn, logits = forward(W_KQ, W_V, X, mask, world)
            m = {"attn_context": attn[:, CTX].mean().item(), "attn_subject": attn[:, SUBJ].mean().item(),
                 "loss": F.cross_entropy(logits, pts.target).item()}
            if name == "conflict":
                m["m_c"] = context_share(logits, pts).mean().item()
                del m["loss"]  # the conflict target is a convention, not something trained
            if name == "C":
                m["subject_readout"] = subject_readout(W_V, world, pts).mean().item()
            out[name] = m
        q = world.relation @ W_KQ
        out["model"] = {"score_gap_theta": (q @ (world.theta_c - world.theta_s)).item() * math.sqrt(0.5)}
    return out


def simulate(cfg: TheoryConfig) -> list[dict[str, dict[str, float]]]:
    """Full-batch gradient descent on the mean cross-entropy of the training points (C, C+S, S), over W_KQ
    (init 0: uniform attention) or over W_KQ and W_V (from the pretrained values). Returns the metrics before
    every step and after the last: history[t] = state after t steps."""
    if cfg.train not in TRAIN_CHOICES:
        raise ValueError(f"train={cfg.train!r}: expected one of {', '.join(TRAIN_CHOICES)}")
    if cfg.loss_norm not in LOSS_NORM_CHOICES:
        raise ValueError(f"loss_norm={cfg.loss_norm!r}: expected one of {', '.join(LOSS_NORM_CHOICES)}")
    world, points = make_points(cfg)
    batches = {k: (p, *embed(world, p)) for k, p in points.items()}
    train = [batches[k] for k in ("C", "C+S", "S") if len(batches[k][0].subject)]
    X = torch.cat([b[1] for b in train])  # (N, T, d)
    mask = torch.cat([b[2] for b in train])  # (N, T)
    y = torch.cat([b[0].target for b in train])  # (N,)
    d = X.shape[-1]
    norm = len(y) if cfg.loss_norm == "all" else max(int(mask[:, CTX].sum()), 1)
    W_KQ = torch.zeros(d, d, dtype=torch.float64, requires_grad=True)
    W_V = pretrained_value(world, cfg.alpha_mem, cfg.beta_copy).requires_grad_(cfg.train == "kq+v")
    params = [W_KQ] + ([W_V] if cfg.train == "kq+v" else [])
    history = []
    for t in range(cfg.steps + 1):
        history.append(measure(W_KQ, W_V, world, batches))
        if t == cfg.steps:
            break
        _, logits = forward(W_KQ, W_V, X, mask, world)
        loss = F.cross_entropy(logits, y, reduction="sum") / norm
        grads = torch.autograd.grad(loss, params)
        with torch.no_grad():
            for p, gr in zip(params, grads):
                p -= cfg.lr * gr
    return history
