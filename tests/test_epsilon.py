"""The challenge's per-example epsilon estimator, on answers known in advance."""

import numpy as np
import pytest

from fedforget.oracle.epsilon import (
    clopper_pearson_upper,
    epsilon_of,
    estimate,
    forgetting_quality,
    resolvable_epsilon,
)


def test_clopper_pearson_upper_matches_the_closed_form_at_zero():
    # 0 of n: the upper end is 1 - (alpha/2)^(1/n)
    assert clopper_pearson_upper(0, 20) == pytest.approx(1 - 0.025 ** (1 / 20))
    assert clopper_pearson_upper(20, 20) == 1.0


def test_retrain_against_retrain_is_zero_on_average():
    rng = np.random.default_rng(0)
    eps = [epsilon_of(rng.normal(size=64), rng.normal(size=64)) for _ in range(200)]
    # the same distribution: the conservative (upper-bound) rates leave almost nothing
    assert np.mean(eps) < 0.15 and np.median(eps) == 0.0


def test_perfect_separation_reaches_the_ceiling_and_the_ceiling_grows_with_n():
    for n in (8, 64, 512):
        assert epsilon_of(np.full(n, 5.0), np.zeros(n)) == pytest.approx(resolvable_epsilon(n))
        # the other side is found too
        assert epsilon_of(np.zeros(n), np.full(n, 5.0)) == pytest.approx(resolvable_epsilon(n))
    assert resolvable_epsilon(8) < resolvable_epsilon(64) < resolvable_epsilon(512)
    # ln of the one-sided bound 1 - (alpha/2)^(1/n): about 2.5 at n = 64
    n = 64
    hi = 1 - 0.025 ** (1 / n)
    assert resolvable_epsilon(n) == pytest.approx(np.log(1 - 1e-5 - hi) - np.log(hi))


def test_a_partial_shift_lies_in_between_and_grows_with_it():
    rng = np.random.default_rng(1)
    n = 256
    base = rng.normal(size=n)
    small = epsilon_of(rng.normal(size=n) + 0.5, base)
    large = epsilon_of(rng.normal(size=n) + 2.0, base)
    assert 0 < small < large < resolvable_epsilon(n)


def test_forgetting_quality_buckets():
    assert forgetting_quality(np.array([0.0, 0.49, 0.5, 1.2])) == pytest.approx((1 + 1 + 0.5 + 0.25) / 4)


def test_estimate_over_examples():
    rng = np.random.default_rng(2)
    u = rng.normal(size=(32, 5))
    u[:, 0] += 10  # one example fully exposed
    est = estimate(u, rng.normal(size=(32, 5)))
    assert est.epsilons[0] == pytest.approx(est.ceiling) and est.n_unlearned == 32
    assert est.epsilons[1:].max() < est.ceiling
    with pytest.raises(ValueError, match="same examples"):
        estimate(np.zeros((4, 3)), np.zeros((4, 2)))
