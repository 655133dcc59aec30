"""GRPO with ctxrel's matcher as the reward: the pure parts (reward, group advantages, the loss) and one step.

A grpo stage (`ctxrel.train.stages`) takes the prompts of preference pairs (`ctxrel.train.pairs`: built-in or a
file) and, for each, the answer that should be given (`chosen`: the context's answer on a conflict pair, the
memorised answer on an irrelevant-context pair) and the one that should not (`rejected`). Each optimizer step:

1. samples `generations` completions of at most `completion_tokens` tokens for each of `train.batch_size`
   prompts from the current policy (temperature `temperature`, no dropout, no gradients);
2. scores each completion with `reward`: 1 when `ctxrel.core.matching.match` finds the wanted answer and not the
   other one, else 0 (naming both earns nothing, so listing candidates is not a way to the reward);
3. normalises rewards within each prompt's group (`group_advantages`; Shao et al. 2024, "DeepSeekMath", §4.1.2:
   A_i = (r_i - mean(r)) / std(r)); a group whose rewards are all equal gives no signal (its share is logged);
4. minimises `grpo_loss` (Shao et al. 2024, eq. 3, with one policy update per batch of generations, so the
   ratio pi / pi_old is 1 and its gradient that of log pi): per completion token
       -A * exp(logp - logp.detach()) + beta * (exp(ref - logp) - (ref - logp) - 1),
   the second term the unbiased estimator of KL(pi || pi_ref) the paper uses (eq. 4), averaged over each
   completion's tokens, then over the completions.

The study's verdict keeps coming from the scored benchmarks: the reward is logged per step (`reward`,
`zero_variance_share`, `kl`) in train_log.jsonl next to the checkpoints' cf-acc and irrelevant-context accuracy.
"""

from __future__ import annotations

from typing import Any

from ctxrel.core.matching import match


def reward(output: str, wanted: str, other: str) -> float:
    """1.0 when `output` contains `wanted` and not `other` (ctxrel's matcher: normalised, word boundaries,
    nested answers), else 0.0."""
    return 1.0 if match(output, [wanted], [other]).outcome == "context" else 0.0


def group_advantages(rewards, eps: float = 1e-4):
    """(P, G) rewards -> (P, G) advantages normalised within each row (group), and the share of rows whose
    rewards are all equal (no learning signal)."""
    mean = rewards.mean(dim=1, keepdim=True)
    std = rewards.std(dim=1, keepdim=True, unbiased=False)
    zero = (std.squeeze(1) == 0).float().mean()
    return (rewards - mean) / (std + eps), float(zero)


def grpo_loss(token_logps, ref_token_logps, advantages, rows, n_rows: int, *, beta: float):
    """GRPO loss of a batch of completions (Shao et al. 2024, eq. 3 and 4), and the mean per-token KL estimate.

    token_logps, ref_token_logps: (N,) log-probabilities of the completion tokens under the policy (with
    gradients) and the reference; rows: (N,) the completion each token belongs to; advantages: (n_rows,)."""
    import torch

    delta = ref_token_logps - token_logps  # (N,)
    kl = torch.exp(delta) - delta - 1  # (N,): k3 estimator, >= 0
    ratio = torch.exp(token_logps - token_logps.detach())  # 1, with the gradient of log pi
    per_token = -advantages[rows] * ratio + beta * kl  # (N,)
    counts = torch.zeros(n_rows, device=token_logps.device).index_add(0, rows, torch.ones_like(per_token))
    per_row = torch.zeros(n_rows, device=token_logps.device).index_add(0, rows, per_token) / counts.clamp(min=1)
    return per_row.mean(), float(kl.detach().mean())


def generate(s, prompt_ids: list[int], n: int, max_new_tokens: int, temperature: float) -> list[list[int]]:
    """`n` sampled completions (token ids, cut after the first EOS) of one prompt under the current policy."""
    import torch

    model = s.acc.unwrap_model(s.wrapped).model
    ids = torch.tensor([prompt_ids], device=s.acc.device)
    with torch.no_grad(), s.acc.autocast():
        out = model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), do_sample=True,
                             temperature=temperature, top_k=0, top_p=1.0, max_new_tokens=max_new_tokens,
                             num_return_sequences=n, pad_token_id=s.tok.pad_token_id)
    eos = s.tok.eos_token_id
    completions = []
    for row in out[:, len(prompt_ids):].tolist():
        cut = row.index(eos) + 1 if eos in row else len(row)
        completions.append(row[:cut] or [eos])
    return completions


def grpo_step(s, step: int, reference: dict[str, Any], spec) -> tuple[float, Any, dict[str, float]]:
    """Optimizer step `step` of a grpo stage (see the module docstring). Returns (loss, gradient norm, stats:
    reward, zero_variance_share, kl)."""
    import time

    import torch

    from ctxrel.train.data import IGNORE, collate
    from ctxrel.train.loop import apply_update, count_step
    from ctxrel.train.reference import reference_logps

    t0 = time.perf_counter()
    acc, plan, tc, d = s.acc, s.plan, s.cfg.train, s.tokenized
    batch = plan.global_batch(step, tc.seed)
    rank = acc.process_index
    mine = batch[rank * plan.per_process:(rank + 1) * plan.per_process]
    s.model.eval()  # sampling and the loss without dropout
    g = spec.generations
    seqs, labels, rewards = [], [], []
    for i in mine:
        start = next(j for j, y in enumerate(d.chosen_labels[i]) if y != IGNORE)  # the response's first token
        prompt = d.chosen_ids[i][:start]
        wanted, other = d.answers[i]
        group = []
        for c in generate(s, prompt, g, spec.completion_tokens, spec.temperature):
            seqs.append(prompt + c)
            labels.append([IGNORE] * len(prompt) + c)
            group.append(reward(s.tok.decode(c, skip_special_tokens=True), wanted, other))
        rewards.append(group)
    r = torch.tensor(rewards, device=acc.device)  # (P, G)
    adv, zero = group_advantages(r)
    ids, mask, lab = (t.to(acc.device) for t in collate(seqs, labels, s.tok.pad_token_id))
    ref = reference_logps(s, reference, ids, mask, lab, "token")
    logps = s.wrapped(ids, mask, lab, per_sequence="token")
    rows = (lab[:, 1:] != IGNORE).nonzero()[:, 0]
    loss, kl = grpo_loss(logps, ref, adv.reshape(-1), rows, len(seqs), beta=spec.beta)
    acc.backward(loss * len(mine) / len(batch) * acc.num_processes)  # DDP averages: the batch mean
    grad_norm = apply_update(s)
    count_step(s, step, t0, sum(len(x) for x in seqs), None)  # generated lengths vary: no padding count
    return float(loss.detach()), grad_norm, dict(reward=float(r.mean()), zero_variance_share=zero, kl=kl)
