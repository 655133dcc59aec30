"""The one-layer theory simulator: structure of the model, gradients, and each preset's sign prediction."""

from __future__ import annotations

import csv
import dataclasses
import importlib.util
import math

import pytest

torch = pytest.importorskip("torch")

from ctxrel.core.errors import CtxrelError  # noqa: E402
from ctxrel.theory import PRESETS, run_theory  # noqa: E402
from ctxrel.theory import onelayer as M  # noqa: E402
from ctxrel.theory.driver import resolve, to_series  # noqa: E402

SEEDS = (0, 1, 2)


def tiny(**kw) -> M.TheoryConfig:
    base = dict(n_answers=4, n_c=5, n_cs=3, n_s=2, n_conflict=4, alpha_mem=4.0, beta_copy=1.0, steps=3, lr=5.0)
    return M.TheoryConfig(**{**base, **kw})


def preset_runs(name: str, seed: int) -> dict:
    cfg = resolve(name, {"seed": seed})
    runs = {"main": to_series(M.simulate(cfg))}
    for v, extra in PRESETS[name].variants.items():
        runs[v] = to_series(M.simulate(dataclasses.replace(cfg, **extra)))
    return runs


# -- structure ----------------------------------------------------------------------------------------------

def test_embeddings_unit_norm_and_orthogonal():
    world, _ = M.make_points(tiny())
    S, A, r = world.subjects, world.answers, world.relation
    assert torch.allclose(S.norm(dim=1), torch.ones(len(S), dtype=S.dtype))
    assert torch.allclose(A.norm(dim=1), torch.ones(len(A), dtype=A.dtype))
    assert float(r.norm()) == pytest.approx(1.0)
    assert float(world.theta_s @ world.theta_c) == 0.0
    assert torch.all(S @ r == 0) and torch.all(A @ r == 0)
    # own directions mutually orthogonal: distinct tokens overlap only through their shared theta (1/2)
    assert torch.allclose(S @ S.T, 0.5 + 0.5 * torch.eye(len(S), dtype=S.dtype))
    assert torch.allclose(A @ A.T, 0.5 + 0.5 * torch.eye(len(A), dtype=A.dtype))
    assert torch.all(S @ A.T == 0)  # subject and answer directions (incl. theta_S, theta_C) are orthogonal
    assert torch.allclose(S @ world.theta_s, torch.full((len(S),), math.sqrt(0.5), dtype=S.dtype))


def test_pretrained_values_read_out_memory_and_copy():
    cfg = tiny(alpha_mem=3.0, beta_copy=0.5)
    world, pts = M.make_points(cfg)
    W_V = M.pretrained_value(world, cfg.alpha_mem, cfg.beta_copy)
    known = (world.memory >= 0).nonzero().flatten()
    unknown = (world.memory < 0).nonzero().flatten()
    assert torch.allclose(world.subjects[known] @ W_V.T, 3.0 * world.answers[world.memory[known]])
    assert torch.allclose(world.subjects[unknown] @ W_V.T, torch.zeros(len(unknown), W_V.shape[0],
                                                                        dtype=W_V.dtype))
    assert torch.allclose(world.answers @ W_V.T, 0.5 * world.answers)
    # the data: C subjects unknown, C+S contexts agree with memory, conflicts disagree, S points have no context
    assert torch.all(world.memory[pts["C"].subject] == -1)
    assert torch.equal(pts["C+S"].context, world.memory[pts["C+S"].subject])
    assert torch.all(pts["conflict"].context != pts["conflict"].parametric)
    assert torch.all(pts["S"].context == -1)


def test_uniform_attention_at_init_and_relation_never_attended():
    cfg = tiny()
    world, pts = M.make_points(cfg)
    W_KQ = torch.zeros(world.answers.shape[1], world.answers.shape[1], dtype=torch.float64)
    W_V = M.pretrained_value(world, cfg.alpha_mem, cfg.beta_copy)
    for name in ("C", "C+S", "conflict"):
        attn, _ = M.forward(W_KQ, W_V, *M.embed(world, pts[name]), world)
        assert torch.allclose(attn, torch.tensor([0.5, 0.5, 0.0], dtype=attn.dtype).expand_as(attn))
    attn, _ = M.forward(W_KQ + torch.randn_like(W_KQ), W_V, *M.embed(world, pts["S"]), world)
    assert torch.equal(attn, torch.tensor([0.0, 1.0, 0.0], dtype=attn.dtype).expand_as(attn))
    # M_C at init is the closed form sigmoid((beta - alpha) / 4): half attention, half of each readout margin
    h = M.simulate(dataclasses.replace(cfg, steps=0))
    assert h[0]["conflict"]["m_c"] == pytest.approx(1 / (1 + math.exp((cfg.alpha_mem - cfg.beta_copy) / 4)))


def test_autograd_matches_finite_differences():
    cfg = tiny()
    world, pts = M.make_points(cfg)
    X, mask = M.embed(world, pts["C+S"])
    d = X.shape[-1]
    g = torch.Generator().manual_seed(0)
    W_KQ = (0.3 * torch.randn(d, d, generator=g, dtype=torch.float64)).requires_grad_()
    W_V = M.pretrained_value(world, cfg.alpha_mem, cfg.beta_copy).requires_grad_()

    def loss(a, b):
        return torch.nn.functional.cross_entropy(M.forward(a, b, X, mask, world)[1], pts["C+S"].target)

    gk, gv = torch.autograd.grad(loss(W_KQ, W_V), (W_KQ, W_V))
    rel = d - 1  # only the relation row of W_KQ matters: score(x) = r^T W_KQ x
    subj = int(pts["C+S"].subject[0])  # e_s of a subject in the batch (theta_S = d-3, theta_C = d-2)
    eps = 1e-6
    for (i, j) in [(rel, subj), (rel, d - 2), (rel, d - 3), (0, subj)]:
        E = torch.zeros(d, d, dtype=torch.float64)
        E[i, j] = eps
        with torch.no_grad():
            fd = (loss(W_KQ + E, W_V) - loss(W_KQ - E, W_V)) / (2 * eps)
        assert float(gk[i, j]) == pytest.approx(float(fd), rel=1e-5, abs=1e-9)
        with torch.no_grad():
            fd = (loss(W_KQ, W_V + E) - loss(W_KQ, W_V - E)) / (2 * eps)
        assert float(gv[i, j]) == pytest.approx(float(fd), rel=1e-5, abs=1e-9)
    assert float(gk[:rel].abs().max()) == 0.0  # no other row of W_KQ gets gradient


def test_bad_config_is_a_user_error():
    with pytest.raises(CtxrelError, match="valid keys"):
        resolve("theorem1", {"bogus": 1})
    with pytest.raises(CtxrelError, match="train"):
        resolve("theorem1", {"train": "v"})
    with pytest.raises(CtxrelError, match="unknown theory preset"):
        resolve("nope", {})


# -- the study's sign predictions, each on three seeds ------------------------------------------------------

@pytest.mark.parametrize("seed", SEEDS)
def test_prop1_context_first_then_subject(seed):
    runs = preset_runs("prop1", seed)
    res = PRESETS["prop1"].check(runs)
    assert res["passed"], res
    assert res["delta_step1"] > 0 > res["delta_step2"]
    cs = runs["main"]["C+S"]["attn_context"]
    assert cs[1] > cs[0] and cs[2] < cs[1]  # the same reversal on the training C+S points


@pytest.mark.parametrize("seed", SEEDS)
def test_prop2_s_points_strengthen_drift_to_subject(seed):
    res = PRESETS["prop2"].check(preset_runs("prop2", seed))
    assert res["passed"], res


def test_prop2_s_points_act_through_values_only():
    # control: with W_KQ alone, S points ([s, r], all attention on s) carry no attention gradient
    cfg = resolve("prop2", {"train": "kq", "steps": 4})
    a = to_series(M.simulate(cfg))["conflict"]["attn_subject"]
    b = to_series(M.simulate(dataclasses.replace(cfg, n_s=0)))["conflict"]["attn_subject"]
    assert a == pytest.approx(b, abs=1e-12)


@pytest.mark.parametrize("seed", SEEDS)
def test_prop3_values_make_c_subjects_predictive(seed):
    res = PRESETS["prop3"].check(preset_runs("prop3", seed))
    assert res["passed"], res
    assert res["readout_end_kq_v"] > 0.01 and res["readout_end_kq_only"] == 0


@pytest.mark.parametrize("seed", SEEDS)
def test_theorem1_m_c_rises_then_falls(seed):
    res = PRESETS["theorem1"].check(preset_runs("theorem1", seed))
    assert res["passed"], res
    assert 0 < res["peak_step"] < res["end_step"] and res["drop"] > 0.03 and res["rise"] > 0.03


@pytest.mark.parametrize("seed", SEEDS)
def test_mitigation_without_cs_points_m_c_does_not_fall(seed):
    res = PRESETS["mitigation"].check(preset_runs("mitigation", seed))
    assert res["passed"], res
    with_cs = PRESETS["theorem1"].check(preset_runs("theorem1", seed))
    assert res["m_c_end"] > with_cs["m_c_end"] + 0.1


# -- the driver writes a run directory ----------------------------------------------------------------------

def test_run_theory_writes_run_directory(tmp_path):
    out = tmp_path / "run"
    res = run_theory("prop2", out, steps=3)
    assert res["check"].keys() >= {"passed"} and res["config"]["steps"] == 3
    with open(out / "metrics.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    metrics = {(r["benchmark"], r["subset"], r["metric"]) for r in rows}
    for key in [("theory", "conflict", "attn_context"), ("theory", "conflict", "attn_subject"),
                ("theory", "conflict", "m_c"), ("theory", "C", "loss"), ("theory", "C+S", "loss"),
                ("theory", "S", "loss"), ("theory", "C", "subject_readout"), ("theory:no_s", "conflict", "m_c")]:
        assert key in metrics, key
    steps = sorted({int(r["step"]) for r in rows})
    assert steps == [0, 1, 2, 3] and {r["checkpoint"] for r in rows} >= {"step-000000", "step-000003"}
    m_c0 = [float(r["value"]) for r in rows if r["benchmark"] == "theory" and r["subset"] == "conflict"
            and r["metric"] == "m_c" and r["step"] == "0"]
    assert m_c0 == [pytest.approx(res["series"]["main"]["conflict"]["m_c"][0])]
    assert "preset: prop2" in (out / "config.yaml").read_text()
    assert (out / "check.json").exists()
    if importlib.util.find_spec("matplotlib") is None:
        pytest.skip("matplotlib not installed: plot not written (pip install matplotlib)")
    assert (out / "theory.png").stat().st_size > 1000 and res["plot"].endswith("theory.png")


def test_cli_theory_preset_and_bad_override(tmp_path, capsys):
    from ctxrel.cli import main

    assert main(["theory", "--preset", "mitigation", "--out", str(tmp_path / "m")]) == 0
    out = capsys.readouterr().out
    assert "PASS" in out and (tmp_path / "m" / "metrics.csv").exists()
    assert main(["theory", "--preset", "theorem1", "--out", str(tmp_path / "t"), "lrr=3"]) == 2
    assert "lrr" in capsys.readouterr().err
