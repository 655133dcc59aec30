"""The preference losses (DPO, IPO) against TRL's DPOTrainer on the same batch and model: loss and gradients.

TRL (1.x) keeps its losses inside `DPOTrainer._compute_loss`, so the test builds a real DPOTrainer on a tiny
random Llama (policy = perturbed copy, reference = the original), takes one of its collated batches and TRL's
loss on it, then computes ctxrel's loss on the same token ids with ctxrel's own sequence log-probabilities
(`ResponseLoss(per_sequence=...)`) and `preference_loss`, and compares loss and every parameter's gradient.
"""

from __future__ import annotations

import math

import pytest

torch = pytest.importorskip("torch")

from ctxrel.train.preference import pair_stats, preference_loss  # noqa: E402

PAIRS = [dict(prompt="Question: What is the capital city of France? Answer:", chosen=" Lyon", rejected=" Paris"),
         dict(prompt="Question: What is the capital city of Japan? Answer:", chosen=" Tokyo Osaka",
              rejected=" Kyoto"),
         dict(prompt="Background: The capital city of France is Lyon.", chosen=" Berlin Munich", rejected=" Rome")]


def test_dpo_and_ipo_by_hand():
    pc, pr = torch.tensor([-1.0, -2.0]), torch.tensor([-3.0, -1.0])
    rc, rr = torch.tensor([-1.5, -2.0]), torch.tensor([-2.5, -2.0])
    losses, cr, rj = preference_loss(pc, pr, rc, rr, beta=0.5)
    h = torch.tensor([0.5 - (-0.5), 0.0 - 1.0])  # (pc - rc) - (pr - rr)
    assert torch.allclose(losses, -torch.nn.functional.logsigmoid(0.5 * h))
    assert losses[0].item() == pytest.approx(math.log(1 + math.exp(-0.5)))
    assert torch.allclose(cr, torch.tensor([0.25, 0.0])) and torch.allclose(rj, torch.tensor([-0.25, 0.5]))
    ipo, _, _ = preference_loss(pc, pr, rc, rr, beta=0.5, loss_type="ipo")
    assert torch.allclose(ipo, (h - 1.0) ** 2)
    smooth, _, _ = preference_loss(pc, pr, rc, rr, beta=0.5, label_smoothing=0.2)
    assert torch.allclose(smooth, 0.8 * losses - 0.2 * torch.nn.functional.logsigmoid(-0.5 * h))
    stats = pair_stats(losses, cr, rj)
    assert stats["reward_accuracy"] == 0.5 and stats["reward_margin"] == pytest.approx((0.5 - 0.5) / 2)
    with pytest.raises(ValueError):
        preference_loss(pc, pr, rc, rr, beta=0.0)


@pytest.mark.parametrize("loss_type", ["sigmoid", "ipo"])
def test_loss_and_gradients_equal_trl(tiny_model_dir, tmp_path, loss_type):
    trl = pytest.importorskip("trl", reason="trl (the `dev` extra) is not installed: nothing to compare against")
    datasets = pytest.importorskip("datasets", reason="trl's DPOTrainer needs the `datasets` package")
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from ctxrel.train.loop import ResponseLoss

    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    ref = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    policy = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    with torch.no_grad():  # a policy that differs from its reference: non-zero log-ratios
        g = torch.Generator().manual_seed(1)
        for p in policy.parameters():
            p.add_(0.05 * torch.randn(p.shape, generator=g))
    beta = 0.1
    args = trl.DPOConfig(output_dir=str(tmp_path / "trl"), beta=beta, loss_type=[loss_type], report_to=[],
                         per_device_train_batch_size=len(PAIRS), use_cpu=True, precompute_ref_log_probs=False,
                         bf16=False)  # TRL defaults to bf16 autocast; ctxrel trains fp32 on the CPU
    trainer = trl.DPOTrainer(model=policy, ref_model=ref, args=args, processing_class=tok,
                             train_dataset=datasets.Dataset.from_list(PAIRS))
    policy.eval(), ref.eval()  # no dropout on either side (the tiny Llama has none; make it explicit)
    batch = next(iter(trainer.get_train_dataloader()))
    trl_loss = trainer.compute_loss(trainer.model, batch)
    trl_loss.backward()
    trl_grads = {n: p.grad.clone() for n, p in policy.named_parameters()}
    policy.zero_grad(set_to_none=True)

    # ctxrel on the same token ids: [chosen..., rejected...], labels = the completion tokens
    ids, mask = batch["input_ids"], batch["attention_mask"]
    labels = ids.masked_fill(batch["completion_mask"] == 0, -100)
    per_sequence = "mean" if loss_type == "ipo" else "sum"
    logps = ResponseLoss(policy)(ids, mask, labels, per_sequence=per_sequence)
    with torch.no_grad():
        ref_logps = ResponseLoss(ref)(ids, mask, labels, per_sequence=per_sequence)
    n = len(PAIRS)
    losses, _, _ = preference_loss(logps[:n], logps[n:], ref_logps[:n], ref_logps[n:], beta=beta,
                                   loss_type=loss_type)
    loss = losses.mean()
    loss.backward()
    assert loss.item() == pytest.approx(trl_loss.item(), abs=1e-5)
    assert abs(loss.item() - (math.log(2) if loss_type == "sigmoid" else 0)) > 1e-3  # not a trivial batch
    worst = max((p.grad - trl_grads[name]).abs().max().item() for name, p in policy.named_parameters())
    assert worst < 1e-5
    assert max(g.abs().max().item() for g in trl_grads.values()) > 1e-3  # the gradients compared are not all 0
