"""Distributional losses (txpert_head.training.losses): MMD², sliced W1, the --loss spec parser."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy.stats import wasserstein_distance

from txpert_head.training.losses import (
    LossSpecError,
    build_loss,
    mmd2_rbf,
    mse_loss,
    parse_loss_spec,
    per_group_loss,
    sliced_wasserstein1,
    wasserstein1_1d,
)


def _sets(n: int = 20, m: int = 25, g: int = 5, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    return (torch.randn(n, g, generator=gen, dtype=torch.float64),
            torch.randn(m, g, generator=gen, dtype=torch.float64))


# ---------------------------------------------------------------------------- MMD
def test_mmd_hand_computed_values():
    x, y = torch.tensor([[0.0]], dtype=torch.float64), torch.tensor([[1.0]], dtype=torch.float64)
    # k(0,0) = 1, k(0,1) = exp(-1/β)
    assert float(mmd2_rbf(x, y, bandwidths=[1.0])) == pytest.approx(2 - 2 * math.exp(-1))
    assert float(mmd2_rbf(x, y, bandwidths=[1.0, 2.0])) == pytest.approx(2 - (math.exp(-1) + math.exp(-0.5)))
    # median heuristic: the only distinct-pair squared distance is 1 -> β = 0.5, 1, 2
    expected = 2 - 2 * (math.exp(-2) + math.exp(-1) + math.exp(-0.5)) / 3
    assert float(mmd2_rbf(x, y)) == pytest.approx(expected)


def test_mmd_unbiased_hand_computed():
    x = torch.tensor([[0.0], [1.0]], dtype=torch.float64)
    y = torch.tensor([[0.0], [3.0]], dtype=torch.float64)
    e = math.exp
    xx, yy = e(-1), e(-9)                                  # off-diagonal pairs only
    xy = (1 + e(-9) + e(-1) + e(-4)) / 4
    assert float(mmd2_rbf(x, y, bandwidths=[1.0], unbiased=True)) == pytest.approx(xx + yy - 2 * xy)
    biased = (2 + 2 * e(-1)) / 4 + (2 + 2 * e(-9)) / 4 - 2 * xy
    assert float(mmd2_rbf(x, y, bandwidths=[1.0])) == pytest.approx(biased)


def test_mmd_zero_for_identical_symmetric_and_positive():
    x, y = _sets()
    assert abs(float(mmd2_rbf(x, x.clone()))) < 1e-12
    assert float(mmd2_rbf(x, y)) > 0
    assert float(mmd2_rbf(x, y)) == pytest.approx(float(mmd2_rbf(y, x)), rel=1e-12)
    assert float(mmd2_rbf(x, y, unbiased=True)) == pytest.approx(float(mmd2_rbf(y, x, unbiased=True)), rel=1e-12)


@pytest.mark.parametrize("bandwidths", [None, [4.0, 10.0]])
def test_mmd_increases_with_mean_shift(bandwidths):
    x, y = _sets()
    values = [float(mmd2_rbf(x, y + s, bandwidths=bandwidths)) for s in (0.0, 0.5, 1.0, 2.0, 4.0)]
    assert all(b > a for a, b in zip(values, values[1:])), values


def test_mmd_gradcheck_and_median_bandwidth_is_constant():
    x, y = _sets(n=4, m=3, g=2, seed=1)
    x.requires_grad_(True)
    y.requires_grad_(True)
    assert torch.autograd.gradcheck(lambda a, b: mmd2_rbf(a, b, bandwidths=[0.7, 3.0]), (x, y))
    assert torch.autograd.gradcheck(lambda a, b: mmd2_rbf(a, b, bandwidths=[1.3], unbiased=True), (x, y))
    # median heuristic: gradient equals the gradient at the fixed bandwidths it picked
    pooled = torch.cat([x, y]).detach()
    d = torch.cdist(pooled, pooled) ** 2
    h = float(d[~torch.eye(7, dtype=torch.bool)].median())
    g_auto = torch.autograd.grad(mmd2_rbf(x, y), (x, y))
    g_fixed = torch.autograd.grad(mmd2_rbf(x, y, bandwidths=[0.5 * h, h, 2 * h]), (x, y))
    for a, b in zip(g_auto, g_fixed):
        torch.testing.assert_close(a, b)


def test_mmd_bad_input():
    x, y = _sets()
    with pytest.raises(ValueError, match="gene dimensions differ"):
        mmd2_rbf(x, y[:, :3])
    with pytest.raises(ValueError, match="positive"):
        mmd2_rbf(x, y, bandwidths=[0.0])
    with pytest.raises(ValueError, match="at least 2"):
        mmd2_rbf(x[:1], y, unbiased=True)


# ---------------------------------------------------------------------------- W1 / SW1
@pytest.mark.parametrize(("n", "m"), [(7, 7), (5, 8), (1, 4), (12, 9)])
def test_w1_1d_matches_scipy(n, m):
    rng = np.random.default_rng(n * 100 + m)
    a, b = rng.normal(size=(n, 3)), rng.normal(1.0, 2.0, size=(m, 3))
    ours = wasserstein1_1d(torch.from_numpy(a), torch.from_numpy(b)).numpy()
    ref = [wasserstein_distance(a[:, j], b[:, j]) for j in range(3)]
    np.testing.assert_allclose(ours, ref, rtol=1e-12, atol=1e-12)


def test_w1_1d_hand_computed_unequal():
    # a = {0, 1} (weights 1/2), b = {0, 0, 3} (weights 1/3): grid 1/3, 1/2, 2/3, 1
    # quantiles on (0,1/3]: 0 vs 0; (1/3,1/2]: 0 vs 0; (1/2,2/3]: 1 vs 0; (2/3,1]: 1 vs 3
    a = torch.tensor([[1.0], [0.0]], dtype=torch.float64)
    b = torch.tensor([[3.0], [0.0], [0.0]], dtype=torch.float64)
    assert float(wasserstein1_1d(a, b)[0]) == pytest.approx(1 / 6 * 1 + 1 / 3 * 2)


@pytest.mark.parametrize(("n", "m"), [(10, 10), (6, 11)])
def test_sw1_equals_exact_w1_in_one_dimension(n, m):
    rng = np.random.default_rng(7)
    a, b = rng.normal(size=(n, 1)), rng.exponential(size=(m, 1))
    sw = float(sliced_wasserstein1(torch.from_numpy(a), torch.from_numpy(b), n_projections=5))
    assert sw == pytest.approx(wasserstein_distance(a[:, 0], b[:, 0]), rel=1e-12)


def test_sw1_zero_identical_symmetric_increasing():
    x, y = _sets()
    assert float(sliced_wasserstein1(x, x.clone())) == 0.0
    assert float(sliced_wasserstein1(x, y, seed=3)) == pytest.approx(float(sliced_wasserstein1(y, x, seed=3)))
    values = [float(sliced_wasserstein1(x, y + s)) for s in (0.0, 0.5, 1.0, 2.0, 4.0)]
    assert all(b > a for a, b in zip(values, values[1:])), values
    # a pure shift of the same set: W1 of every projection is |s·θ|, so SW1 is linear in s
    assert float(sliced_wasserstein1(x, x + 2.0)) == pytest.approx(2 * float(sliced_wasserstein1(x, x + 1.0)))


def test_sw1_seeded_and_gradcheck():
    x, y = _sets()
    assert float(sliced_wasserstein1(x, y, seed=1)) == float(sliced_wasserstein1(x, y, seed=1))
    assert float(sliced_wasserstein1(x, y, seed=1)) != float(sliced_wasserstein1(x, y, seed=2))
    a, b = _sets(n=3, m=4, g=2, seed=2)
    a.requires_grad_(True)
    b.requires_grad_(True)
    assert torch.autograd.gradcheck(lambda p, q: sliced_wasserstein1(p, q, n_projections=4), (a, b))
    c = a.detach()[:, :1].clone().requires_grad_(True)
    d = b.detach()[:3, :1].clone().requires_grad_(True)
    assert torch.autograd.gradcheck(lambda p, q: sliced_wasserstein1(p, q, n_projections=2), (c, d))


# ---------------------------------------------------------------------------- MSE, spec, combination
def test_mse_paired_only():
    x, y = _sets(n=5, m=5)
    assert float(mse_loss(x, y)) == pytest.approx(float(((x - y) ** 2).mean()))
    with pytest.raises(ValueError, match="mmd or sw1"):
        mse_loss(x, y[:4])


def test_parse_loss_spec():
    assert parse_loss_spec("mse") == [(1.0, "mse")]
    assert parse_loss_spec("mse+mmd") == [(1.0, "mse"), (1.0, "mmd")]
    assert parse_loss_spec("mse+0.5*mmd") == [(1.0, "mse"), (0.5, "mmd")]
    assert parse_loss_spec(" 2 * SW1 + mse ") == [(2.0, "sw1"), (1.0, "mse")]
    assert parse_loss_spec("1e-2*mmd") == [(0.01, "mmd")]


@pytest.mark.parametrize(("spec", "message"), [
    ("mse+foo", r"unknown loss term 'foo' in 'mse\+foo'; known terms: mse, mmd, sw1"),
    ("l1", "unknown loss term 'l1'"),
    ("mse+", "cannot parse loss term ''"),
    ("0.5mmd", "cannot parse loss term '0.5mmd'"),
    ("0*mmd", "must be positive"),
    ("mse+mmd+mse", "appears twice"),
    ("", "empty loss spec"),
])
def test_parse_loss_spec_rejects(spec, message):
    with pytest.raises(LossSpecError, match=message):
        parse_loss_spec(spec)


def test_build_loss_is_the_weighted_sum_and_differentiable():
    x, y = _sets(n=8, m=8)
    x.requires_grad_(True)
    loss = build_loss("mse+0.5*mmd+2*sw1", n_projections=16, seed=4)
    assert loss.spec == "mse+0.5*mmd+2*sw1"
    value = loss(x, y)
    expected = mse_loss(x, y) + 0.5 * mmd2_rbf(x, y) + 2 * sliced_wasserstein1(x, y, 16, seed=4)
    assert float(value.detach()) == pytest.approx(float(expected.detach()))
    assert set(loss.last_terms) == {"mse", "mmd", "sw1"}
    value.backward()
    assert x.grad is not None and torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0
    # the generator advances: fresh projections on the next call, reproducible across instances
    second = float(loss(x, y).detach())
    again = build_loss("mse+0.5*mmd+2*sw1", n_projections=16, seed=4)
    again(x, y)
    assert float(again(x, y).detach()) == pytest.approx(second)
    assert second != pytest.approx(float(value.detach()))


def test_per_group_loss_weighs_each_perturbation_equally():
    x, y = _sets(n=10, m=10)
    group = torch.tensor([0] * 7 + [1] * 3)
    got = per_group_loss(mse_loss, x, y, group)
    assert float(got) == pytest.approx((float(mse_loss(x[:7], y[:7])) + float(mse_loss(x[7:], y[7:]))) / 2)
    mmd = build_loss("mmd")
    tg = torch.tensor([0] * 4 + [1] * 6)
    got = per_group_loss(mmd, x, y, group, tg)
    assert float(got) == pytest.approx((float(mmd2_rbf(x[:7], y[:4])) + float(mmd2_rbf(x[7:], y[4:]))) / 2)
    with pytest.raises(ValueError, match="group 1 has predicted cells but no true cells"):
        per_group_loss(mmd, x, y, group, torch.zeros(10, dtype=torch.long))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
def test_losses_on_cuda():  # pragma: no cover - exercised only where a GPU exists
    x, y = (t.cuda() for t in _sets(n=6, m=9))
    for spec in ("mmd", "sw1"):
        cpu = float(build_loss(spec)(x.cpu(), y.cpu()))
        assert float(build_loss(spec)(x, y)) == pytest.approx(cpu, rel=1e-6)
