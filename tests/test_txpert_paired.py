"""Paired comparison of per-perturbation scores (txpert_head.metrics.paired), on hand-computed cases."""

import itertools

import numpy as np
import pytest

from txpert_head.metrics.paired import describe_comparison, paired_comparison


def _p_at(d, delta, **kw):
    """p(δ) of the same test: the sign-flip p of d − δ (same seed -> same random signs)."""
    return paired_comparison(np.asarray(d) - delta, np.zeros(len(d)), **kw)["p_value"]


def test_all_better_by_the_same_amount():
    c = paired_comparison([0.5, 0.6, 0.7], [0.4, 0.5, 0.6])
    assert c["difference"] == pytest.approx(0.1)
    assert c["wins"] == 3 and c["n"] == 3
    # every resample has mean difference 0.1
    assert c["boot_low"] == pytest.approx(0.1) and c["boot_high"] == pytest.approx(0.1)
    # sign flips of three equal differences: only all +1 and all -1 reach |mean| >= 0.1 -> 2 of 8
    assert c["p_value"] == pytest.approx(2 / 8)
    # ... and those two reach it for every shift δ, so p(δ) >= 0.25 > 0.05 everywhere: nothing is rejected
    assert c["min_p"] == pytest.approx(2 / 8)
    assert c["ci_low"] == -np.inf and c["ci_high"] == np.inf


def test_six_perturbations_hand_computed():
    """The issue's case: bootstrap excludes 0, exact p = 0.0625, inverted interval contains 0.

    d = (0.1, 0.12, 0.08, 0.3, −0.02, 0.15), Σd = 0.73. |Σ s d| ≥ 0.73 only for s = all +1 and for s
    flipping just −0.02 (Σ = 0.77), and their negations: p = 4/64. For P = 6 at 95% a shift δ needs
    ≥ 4 of 64 sign vectors (3.2 rounded up to a pair): above max d every w_p = δ − d_p > 0 and only ±1
    count (2/64, rejected); at δ = max d = 0.3 flipping that element counts too (4/64, kept). By symmetry
    the interval is [min d, max d] = [−0.02, 0.3].
    """
    d = np.array([0.1, 0.12, 0.08, 0.3, -0.02, 0.15])
    c = paired_comparison(d, np.zeros(6))
    assert c["p_value"] == pytest.approx(4 / 64)
    assert c["min_p"] == pytest.approx(2 / 64)
    assert c["ci_low"] == pytest.approx(-0.02) and c["ci_high"] == pytest.approx(0.3)
    assert c["ci_low"] <= 0 <= c["ci_high"]
    assert c["boot_low"] > 0  # the percentile bootstrap would have claimed a difference
    text = describe_comparison(c)
    assert "[95% CI -0.020, +0.300]" in text and "no p below" not in text
    # 90%: a shift needs ≥ 6.4 -> 8 of 64; p(0) = 0.0625 < 0.1 -> rejected, so 0 is outside
    c90 = paired_comparison(d, np.zeros(6), level=0.90)
    assert not c90["ci_low"] <= 0 <= c90["ci_high"]


def test_four_perturbations_cannot_reject_anything():
    c = paired_comparison([0.9, 0.8, 0.7, 0.6], [0.1, 0.2, 0.1, 0.2])
    assert c["min_p"] == pytest.approx(2 / 16) and c["p_value"] == pytest.approx(2 / 16)
    assert c["ci_low"] == -np.inf and c["ci_high"] == np.inf
    text = describe_comparison(c)
    assert "[95% CI -∞, +∞]" in text
    assert text.endswith("with 4 perturbations no p below 0.125 is possible")


@pytest.mark.parametrize("n", [4, 5, 6, 7, 9, 12, 20])
def test_interval_is_the_inverted_test(n):
    """ci contains δ exactly when the test of d − δ is not rejected (p(δ) ≥ 0.05), on a grid of δ and at 0,
    for exact (P ≤ 16) and random (P = 20) sign flips, over several difference vectors."""
    rng = np.random.default_rng(n)
    kw = {"n_perm": 999, "n_boot": 200}
    for k in range(3):
        d = rng.normal(0.15 * k, 0.3, size=n)
        c = paired_comparison(d, np.zeros(n), **kw)
        assert (c["ci_low"] <= 0 <= c["ci_high"]) == (c["p_value"] >= 0.05)
        assert c["ci_low"] <= c["difference"] <= c["ci_high"]
        lo, hi = d.min() - 0.5, d.max() + 0.5
        for delta in np.linspace(lo, hi, 41):
            inside = c["ci_low"] <= delta <= c["ci_high"]
            assert inside == (_p_at(d, delta, **kw) >= 0.05), (n, k, delta, c)
        if np.isfinite(c["ci_high"]):  # the bounds themselves are kept, a hair beyond is rejected
            assert _p_at(d, c["ci_high"], **kw) >= 0.05 > _p_at(d, c["ci_high"] + 1e-6, **kw)
            assert _p_at(d, c["ci_low"], **kw) >= 0.05 > _p_at(d, c["ci_low"] - 1e-6, **kw)


def test_exact_sign_flip_p_matches_enumeration():
    d = np.array([0.3, -0.1, 0.2, 0.05, -0.02])
    b = np.zeros(5)
    c = paired_comparison(d, b)
    flips = [abs(np.mean(np.array(s) * d)) >= abs(d.mean()) - 1e-12
             for s in itertools.product((-1, 1), repeat=5)]
    assert c["p_value"] == pytest.approx(np.mean(flips))
    assert c["wins"] == 3
    assert c["boot_low"] <= c["difference"] <= c["boot_high"]
    assert c["boot_low"] >= d.min() and c["boot_high"] <= d.max()
    assert c["min_p"] == pytest.approx(2 / 32)  # >= 0.05: the interval is the whole line
    assert c["ci_low"] == -np.inf and c["ci_high"] == np.inf


def test_identical_methods_and_nan_rows():
    c = paired_comparison([0.2, np.nan, 0.4], [0.2, 0.9, 0.4])
    assert c["n"] == 2 and c["wins"] == 0
    assert c["difference"] == 0.0 and c["p_value"] == 1.0
    empty = paired_comparison([np.nan], [0.1])
    assert empty["n"] == 0 and np.isnan(empty["difference"]) and np.isnan(empty["min_p"])
    assert "no perturbation" in describe_comparison(empty)


def test_large_n_uses_random_flips_and_finds_a_clear_difference():
    rng = np.random.default_rng(1)
    b = rng.normal(size=40)
    a = b + 0.5 + 0.1 * rng.normal(size=40)
    c = paired_comparison(a, b, n_perm=2000)
    assert c["p_value"] == pytest.approx(1 / 2001)  # no random flip reaches the observed mean; +1 for itself
    assert c["min_p"] == pytest.approx(1 / 2001)
    assert 0.4 < c["ci_low"] < c["difference"] < c["ci_high"] < 0.6
    assert 0.4 < c["boot_low"] < c["difference"] < c["boot_high"] < 0.6
    # no difference in distribution: p is not small, and the interval holds 0
    noise = paired_comparison(b, rng.permutation(b), n_perm=2000)
    assert noise["p_value"] > 0.05 and noise["ci_low"] < 0 < noise["ci_high"]


def test_bad_input():
    with pytest.raises(ValueError, match="same length"):
        paired_comparison([1.0, 2.0], [1.0])
    with pytest.raises(ValueError, match="level"):
        paired_comparison([1.0], [1.0], level=1.5)


def test_description():
    text = describe_comparison(paired_comparison([0.5, 0.6, 0.7, 0.1], [0.4, 0.5, 0.6, 0.3]))
    assert text.startswith("Pearson Δ +0.025 [95% CI")
    # d = (0.1, 0.1, 0.1, -0.2): every signed sum is an odd multiple of 0.1, so |mean| >= 0.025 always: p = 1
    assert "better on 3/4" in text and "sign-flip p 1;" in text
    # a JSON round trip turns infinite bounds into null
    c = paired_comparison([0.5, 0.6, 0.7, 0.1], [0.4, 0.5, 0.6, 0.3])
    c.update(ci_low=None, ci_high=None)
    assert "[95% CI unbounded, unbounded]" in describe_comparison(c)
