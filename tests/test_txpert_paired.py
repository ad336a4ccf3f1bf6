"""Paired comparison of per-perturbation scores (txpert_head.paired), on hand-computed cases."""

import itertools

import numpy as np
import pytest

from txpert_head.paired import describe_comparison, paired_comparison


def test_all_better_by_the_same_amount():
    c = paired_comparison([0.5, 0.6, 0.7], [0.4, 0.5, 0.6])
    assert c["difference"] == pytest.approx(0.1)
    assert c["wins"] == 3 and c["n"] == 3
    # every resample has mean difference 0.1
    assert c["ci_low"] == pytest.approx(0.1) and c["ci_high"] == pytest.approx(0.1)
    # sign flips of three equal differences: only all +1 and all -1 reach |mean| >= 0.1 -> 2 of 8
    assert c["p_value"] == pytest.approx(2 / 8)


def test_exact_sign_flip_p_matches_enumeration():
    d = np.array([0.3, -0.1, 0.2, 0.05, -0.02])
    b = np.zeros(5)
    c = paired_comparison(d, b)
    flips = [abs(np.mean(np.array(s) * d)) >= abs(d.mean()) - 1e-12
             for s in itertools.product((-1, 1), repeat=5)]
    assert c["p_value"] == pytest.approx(np.mean(flips))
    assert c["wins"] == 3
    assert c["ci_low"] <= c["difference"] <= c["ci_high"]
    assert c["ci_low"] >= d.min() and c["ci_high"] <= d.max()


def test_identical_methods_and_nan_rows():
    c = paired_comparison([0.2, np.nan, 0.4], [0.2, 0.9, 0.4])
    assert c["n"] == 2 and c["wins"] == 0
    assert c["difference"] == 0.0 and c["p_value"] == 1.0
    empty = paired_comparison([np.nan], [0.1])
    assert empty["n"] == 0 and np.isnan(empty["difference"])
    assert "no perturbation" in describe_comparison(empty)


def test_large_n_uses_random_flips_and_finds_a_clear_difference():
    rng = np.random.default_rng(1)
    b = rng.normal(size=40)
    a = b + 0.5 + 0.1 * rng.normal(size=40)
    c = paired_comparison(a, b, n_perm=2000)
    assert c["p_value"] == pytest.approx(1 / 2001)  # no random flip reaches the observed mean; +1 for itself
    assert 0.4 < c["ci_low"] < c["difference"] < c["ci_high"] < 0.6
    # no difference in distribution: p is not small
    noise = paired_comparison(b, rng.permutation(b), n_perm=2000)
    assert noise["p_value"] > 0.05


def test_bad_input():
    with pytest.raises(ValueError, match="same length"):
        paired_comparison([1.0, 2.0], [1.0])
    with pytest.raises(ValueError, match="level"):
        paired_comparison([1.0], [1.0], level=1.5)


def test_description():
    text = describe_comparison(paired_comparison([0.5, 0.6, 0.7, 0.1], [0.4, 0.5, 0.6, 0.3]))
    assert text.startswith("Pearson Δ +0.025 [95% CI")
    # d = (0.1, 0.1, 0.1, -0.2): every signed sum is an odd multiple of 0.1, so |mean| >= 0.025 always: p = 1
    assert "better on 3/4" in text and text.endswith("sign-flip p 1")
