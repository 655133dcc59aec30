"""GRPO: the reward is ctxrel's matcher, group advantages, the loss and its gradient, and a grpo stage's log."""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")

from ctxrel.train.grpo import group_advantages, grpo_loss, reward  # noqa: E402


@pytest.mark.parametrize("output, wanted, other, want", [
    ("The capital is Lyon.", "Lyon", "Paris", 1.0),
    ("Paris.", "Lyon", "Paris", 0.0),
    ("Lyon or Paris", "Lyon", "Paris", 0.0),  # naming both earns nothing
    ("I do not know.", "Lyon", "Paris", 0.0),
    ("New Cairo", "New Cairo", "Cairo", 1.0),  # nested answers, as the matcher resolves them
    ("Cairo", "New Cairo", "Cairo", 0.0),
    ("the YEN.", "yen", "euro", 1.0),  # normalised, case-folded
    ("Yenisei", "yen", "euro", 0.0),  # word boundaries
])
def test_reward_is_the_matcher(output, wanted, other, want):
    assert reward(output, wanted, other) == want


def test_group_advantages_and_zero_variance_share():
    r = torch.tensor([[1.0, 0.0, 0.0, 1.0], [0.0, 0.0, 0.0, 0.0], [1.0, 1.0, 1.0, 0.0]])
    adv, zero = group_advantages(r)
    assert zero == pytest.approx(1 / 3)
    assert torch.allclose(adv[0], torch.tensor([1.0, -1.0, -1.0, 1.0]), atol=1e-3)
    assert torch.equal(adv[1], torch.zeros(4))
    assert adv[2].sum().abs() < 1e-5 and adv[2, 3] < 0 < adv[2, 0]


def test_grpo_loss_value_and_gradient():
    logps = torch.tensor([-1.0, -2.0, -0.5, -3.0, -1.5], requires_grad=True)  # 5 tokens of 2 completions
    rows = torch.tensor([0, 0, 0, 1, 1])
    adv = torch.tensor([1.0, -1.0])
    loss, kl = grpo_loss(logps, logps.detach(), adv, rows, 2, beta=0.5)  # policy = reference: KL 0
    assert kl == 0.0 and loss.item() == pytest.approx(0.0)
    loss.backward()  # d/d logp_t = -A_row / (tokens of the row * rows)
    assert torch.allclose(logps.grad, torch.tensor([-1 / 6, -1 / 6, -1 / 6, 1 / 4, 1 / 4]))
    ref = torch.tensor([-1.5, -2.0, -0.5, -2.0, -1.5])  # the reference differs: the k3 KL term, >= 0
    loss, kl = grpo_loss(logps.detach(), ref, torch.zeros(2), rows, 2, beta=1.0)
    d = ref - logps.detach()
    k3 = torch.exp(d) - d - 1
    assert kl == pytest.approx(k3.mean().item()) and kl > 0
    assert loss.item() == pytest.approx(((k3[:3].mean() + k3[3:].mean()) / 2).item())


@pytest.mark.integration
def grpo_study(tiny_model, tmp_path, eval_keys: dict, grpo_keys: dict):
    """A study config file on the tiny model: a short sft stage on 8 examples, then a grpo stage on 4 built-in
    pairs; `eval_keys` and `grpo_keys` complete its eval section and its grpo stage."""
    import json

    import yaml

    data = tmp_path / "alpaca.json"
    data.write_text(json.dumps([{"instruction": f"Say {i}.", "input": "", "output": f"{i} Lyon"} for i in range(8)]))
    cfg = dict(model=dict(name=str(tiny_model), batch_size=8, device="cpu"),
               data=dict(source=str(data), max_length=64),
               train=dict(mode="lora", lora=dict(rank=4, alpha=8, dropout=0.1), lr=1e-2, epochs=1, batch_size=4,
                          tensorboard=False),
               eval=dict(benchmarks=["cf_capitals"], max_new_tokens=2, early=[], knowledge_filter=False, **eval_keys),
               out=str(tmp_path / "run"),
               stages=[dict(kind="sft"),
                       dict(kind="grpo", temperature=1.5, train=dict(batch_size=2),
                            data=dict(source="pairs", max_length=160, pairs=dict(n=4, irrelevant=0.5)), **grpo_keys)])
    path = tmp_path / "s.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def test_a_grpo_stage_samples_scores_and_logs(tiny_model_dir, tmp_path):
    import json

    from ctxrel.cli import main
    from ctxrel.rundir.files import read_records

    path = grpo_study(tiny_model_dir, tmp_path, dict(limit=2, every=100), dict(generations=3, completion_tokens=4))
    assert main(["train", str(path)]) == 0
    rows = [r for r in read_records(tmp_path / "run" / "train_log.jsonl") if r["stage"] == "grpo"]
    assert [r["step"] for r in rows] == [3, 4]
    for r in rows:
        assert 0.0 <= r["reward"] <= 1.0 and 0.0 <= r["zero_variance_share"] <= 1.0 and r["kl"] >= 0.0
    assert rows[0]["kl"] == pytest.approx(0.0, abs=1e-6)  # the first step samples from the reference itself
    assert (tmp_path / "run" / "stages" / "1-grpo.reference.safetensors").exists()
    assert json.loads((tmp_path / "run" / "checkpoints" / "step-000004" / "checkpoint.json").read_text())[
        "stage_kind"] == "grpo"
    assert main(["study", str(path), "stages=[{kind: grpo, generations: 1, data: {source: pairs}}]",
                 f"out={tmp_path / 'bad'}"]) == 2


def test_report_shows_the_reward_beside_held_out_accuracy(tiny_model_dir, tmp_path, capsys):
    """A study with a grpo stage: the report prints the logged reward from its first to its last step beside the
    held-out cf-acc and irrelevant-context accuracy, draws them on one figure, and keeps the reward out of every
    verdict; summary.json's reward equals train_log.jsonl's."""
    import json

    from ctxrel.cli import main
    from ctxrel.rundir.files import read_records

    path = grpo_study(tiny_model_dir, tmp_path, dict(limit=4, every=2, contexts=["conflict", "irrelevant"]),
                      dict(generations=2, completion_tokens=3))
    assert main(["study", str(path)]) == 0
    logged = {r["step"]: r["reward"] for r in read_records(tmp_path / "run" / "train_log.jsonl")
              if r["stage"] == "grpo"}
    capsys.readouterr()
    assert main(["report", str(tmp_path / "run"), "--out", str(tmp_path / "rep")]) == 0
    out = capsys.readouterr().out
    first, last = min(logged), max(logged)
    assert (f"grpo reward (training batches, not a verdict): mean {sum(logged.values()) / len(logged):.3f} over "
            f"steps {first}-{last} (first half {logged[first]:.3f}, second half {logged[last]:.3f})") in out
    assert "cf_capitals: cf-acc (held out)" in out and "irrelevant-context accuracy (held out)" in out
    summary = json.loads((tmp_path / "rep" / "summary.json").read_text())
    assert {r["step"]: r["reward"] for r in summary["groups"][0]["reward"]} == pytest.approx(logged)
    assert (tmp_path / "rep" / "grpo-reward.png").stat().st_size > 0
    log = tmp_path / "run" / "train_log.jsonl"  # a damaged log: one sentence with a remedy that holds
    log.write_text(log.read_text() + '{"step": 9, "bro\n')
    assert main(["report", str(tmp_path / "run"), "--out", str(tmp_path / "rep2")]) == 2
    err = capsys.readouterr().err
    assert f"{log}:" in err and "move the file away to report without the reward" in err and "recompute" not in err
    log.rename(tmp_path / "log.bak")  # moved away: the report goes on without the reward line
    assert main(["report", str(tmp_path / "run"), "--out", str(tmp_path / "rep3")]) == 0
    assert "grpo reward" not in capsys.readouterr().out
