"""CAD and AdaCAD math on hand-made logits (decoding.py)."""

import math

import pytest
import torch

from ctxrel.core.decoding import adacad_alpha, cad_logits, contrast, jensen_shannon, label, labels, parse_label


def test_cad_contrast_on_hand_made_logits():
    ctx = torch.tensor([[3.0, 1.0, 0.0]])
    noctx = torch.tensor([[1.0, 2.0, 0.0]])
    # (1 + 1) * ctx - 1 * noctx
    assert cad_logits(ctx, noctx, 1.0).tolist() == [[5.0, 0.0, 0.0]]
    assert cad_logits(ctx, noctx, 0.5).tolist() == [[4.0, 0.5, 0.0]]
    assert cad_logits(ctx, noctx, 0.0).tolist() == ctx.tolist()  # alpha 0 is plain decoding with the context


def test_cad_flips_the_choice_when_memory_and_context_disagree():
    # with context the model barely prefers token 0 (the context answer); without, it strongly prefers token 1
    # (memory). Greedy picks 0; CAD removes the prior's share and picks 0 by a wide margin -- and where the
    # context's preference is weak and the prior's the same, CAD pushes away from the prior.
    ctx = torch.tensor([2.0, 1.9, -1.0])
    noctx = torch.tensor([0.0, 3.0, -1.0])
    out = cad_logits(ctx, noctx, 1.0)
    assert int(out.argmax()) == 0
    assert float(out[0] - out[1]) == pytest.approx(2 * 0.1 + 3.0)
    # and a case where greedy follows memory but CAD follows the context
    ctx2 = torch.tensor([1.0, 1.5, 0.0])
    noctx2 = torch.tensor([-1.0, 2.0, 0.0])
    assert int(ctx2.argmax()) == 1 and int(cad_logits(ctx2, noctx2, 1.0).argmax()) == 0


def test_per_row_alpha_broadcasts():
    ctx = torch.tensor([[1.0, 0.0], [1.0, 0.0]])
    noctx = torch.tensor([[0.0, 1.0], [0.0, 1.0]])
    out = cad_logits(ctx, noctx, torch.tensor([0.0, 1.0]))
    assert out.tolist() == [[1.0, 0.0], [2.0, -1.0]]


def test_adacad_weight_is_zero_for_equal_distributions():
    z = torch.tensor([[0.3, -1.2, 2.0, 0.0], [5.0, 5.0, 5.0, 5.0]])
    assert adacad_alpha(z, z).tolist() == [0.0, 0.0]
    # logits that differ by a constant are the same distribution
    assert float(adacad_alpha(z[0], z[0] + 7.0)) == pytest.approx(0.0, abs=1e-6)
    # with alpha 0 the contrast is the context's logits
    assert torch.equal(contrast("adacad", z, z), z)


def test_adacad_weight_grows_with_divergence_and_is_bounded():
    base = torch.tensor([2.0, 0.0, 0.0])
    weights = [float(adacad_alpha(base, torch.tensor([2.0 - d, d, 0.0]))) for d in (0.0, 0.5, 1.0, 2.0, 4.0, 8.0)]
    assert weights[0] == 0.0
    assert all(a < b for a, b in zip(weights, weights[1:]))
    assert 0.0 < weights[-1] <= 1.0
    # disjoint one-hot distributions are 1 bit apart: the maximum
    far = float(adacad_alpha(torch.tensor([100.0, -100.0]), torch.tensor([-100.0, 100.0])))
    assert far == pytest.approx(1.0, abs=1e-6)


def test_jensen_shannon_matches_a_direct_computation():
    p = torch.tensor([0.7, 0.2, 0.1])
    q = torch.tensor([0.1, 0.3, 0.6])
    m = (p + q) / 2
    kl = lambda a, b: float((a * (a / b).log2()).sum())  # noqa: E731
    expect = 0.5 * kl(p, m) + 0.5 * kl(q, m)
    assert float(jensen_shannon(p.log(), q.log())) == pytest.approx(expect, rel=1e-5)
    assert float(jensen_shannon(p.log(), q.log())) == pytest.approx(float(jensen_shannon(q.log(), p.log())))


def test_adacad_uses_the_divergence_as_alpha():
    ctx = torch.tensor([[1.0, 0.0, -1.0]])
    noctx = torch.tensor([[-1.0, 0.5, 1.0]])
    a = float(adacad_alpha(ctx, noctx)[0])
    assert 0 < a < 1
    assert torch.allclose(contrast("adacad", ctx, noctx), (1 + a) * ctx - a * noctx)
    assert torch.equal(contrast("greedy", ctx, None), ctx)
    with pytest.raises(ValueError):
        contrast("cad", ctx, None)


def test_labels_round_trip():
    assert labels(["greedy", "cad", "adacad"], [1.0]) == ["greedy", "cad", "adacad"]
    assert labels(["cad"], [0.5, 1.0, 2.0]) == ["cad0.5", "cad", "cad2"]
    for name in ("greedy", "cad", "cad0.5", "cad2", "adacad"):
        m, a = parse_label(name)
        assert label(m, a if m == "cad" else 1.0) == name
    with pytest.raises(ValueError):
        parse_label("beam")
    assert not math.isnan(parse_label("cad0.25")[1])
