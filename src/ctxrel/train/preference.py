"""Preference losses on sequence log-probabilities: DPO and IPO, pure functions of plain tensors.

The preference stage of a study (`ctxrel.train.stages`) feeds each pair's chosen and rejected response through
the policy (with gradients) and through the reference model (the stage's initial weights, without), sums the
log-probabilities of the response tokens, and hands the four vectors to one of the losses below. Nothing here
knows about models, batches or devices.

Notation, per pair i of a batch (all shapes (B,)):

    chosen_logratio   = log pi_theta(y_w | x) - log pi_ref(y_w | x)
    rejected_logratio = log pi_theta(y_l | x) - log pi_ref(y_l | x)
    h                 = chosen_logratio - rejected_logratio

* `sigmoid` (DPO, Rafailov et al. 2023, "Direct Preference Optimization", eq. 7):
      L = -log sigmoid(beta * h)
  With `label_smoothing` eps > 0 the labels are taken as flipped with probability eps (the conservative DPO of
  Mitchell 2023): L = -(1 - eps) log sigmoid(beta h) - eps log sigmoid(-beta h).
* `ipo` (IPO, Azar et al. 2024, "A General Theoretical Paradigm to Understand Learning from Human
  Preferences", eq. 17, the empirical IPO loss):
      L = (h - 1 / (2 * beta)) ** 2
  Here beta is the paper's tau (the regularisation). As in TRL, the recipe gives IPO the *mean* log-probability
  per response token instead of the sum (`length_normalised`), so a long answer does not dominate the square.

The implicit rewards beta * logratio (detached) are what the training log reports: their margin and the share
of pairs with chosen reward > rejected reward ("accuracy").
"""

from __future__ import annotations

LOSSES = ("sigmoid", "ipo")


def length_normalised(loss_type: str) -> bool:
    """Whether `loss_type` takes per-token mean log-probabilities (IPO, as TRL computes it) rather than sums."""
    return loss_type == "ipo"


def preference_loss(policy_chosen, policy_rejected, ref_chosen, ref_rejected, *, beta: float,
                    loss_type: str = "sigmoid", label_smoothing: float = 0.0):
    """Per-pair losses (B,) and the implicit rewards (chosen (B,), rejected (B,), detached) of a batch of pairs.

    Inputs are sequence log-probabilities (B,) of the chosen / rejected responses under the policy (with
    gradients) and under the reference (constants). See the module docstring for the equations."""
    import torch.nn.functional as F

    if beta <= 0:
        raise ValueError(f"beta must be > 0, got {beta}")
    chosen_logratio = policy_chosen - ref_chosen  # (B,)
    rejected_logratio = policy_rejected - ref_rejected  # (B,)
    h = chosen_logratio - rejected_logratio  # (B,)
    if loss_type == "sigmoid":  # Rafailov et al. 2023, eq. 7 (+ conservative label smoothing)
        losses = -(1 - label_smoothing) * F.logsigmoid(beta * h) - label_smoothing * F.logsigmoid(-beta * h)
    elif loss_type == "ipo":  # Azar et al. 2024, eq. 17
        losses = (h - 1 / (2 * beta)) ** 2
    else:
        raise ValueError(f"unknown preference loss {loss_type!r}; expected one of {', '.join(LOSSES)}")
    return losses, beta * chosen_logratio.detach(), beta * rejected_logratio.detach()


def pair_stats(losses, chosen_rewards, rejected_rewards) -> dict[str, float]:
    """What a preference step logs: mean loss, reward of chosen and rejected, their margin, and the share of
    pairs whose chosen reward is higher."""
    margin = chosen_rewards - rejected_rewards
    return dict(loss=float(losses.mean()), reward_chosen=float(chosen_rewards.mean()),
                reward_rejected=float(rejected_rewards.mean()), reward_margin=float(margin.mean()),
                reward_accuracy=float((margin > 0).float().mean()))
