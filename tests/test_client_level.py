"""The client-level membership test holds its level and its stated power.

Null replicates have class structure: the client's label histogram differs
from the pool's, class means differ and scores are skewed like ``-loss``.
"""

from __future__ import annotations

import numpy as np
import pytest
from scipy.stats import kstest

from fedforget.oracle.client_level import ClientMembershipTest

N_CLASSES = 5
CLASS_MEANS = np.linspace(-2.0, 0.0, N_CLASSES)


def _labels(rng: np.random.Generator, n: int, p: np.ndarray) -> np.ndarray:
    y = rng.choice(N_CLASSES, size=n, p=p)
    y[:N_CLASSES] = np.arange(N_CLASSES)  # every class present on both sides
    return y


def _scores(rng: np.random.Generator, y: np.ndarray) -> np.ndarray:
    # -loss is bounded above and long-tailed below: a negated exponential per class.
    return CLASS_MEANS[y] - rng.exponential(1.0 + 0.3 * y)


def _replicate(rng: np.random.Generator, n: int, ratio: float, shift: float = 0.0) -> dict[str, float]:
    """One never-trained client of ``n`` samples (non-IID labels) against a pool of ``n / ratio``."""
    member_y = _labels(rng, n, rng.dirichlet(np.full(N_CLASSES, 0.5)))
    pool_y = _labels(rng, int(round(n / ratio)), np.full(N_CLASSES, 1 / N_CLASSES))
    test = ClientMembershipTest.calibrate(member_y, pool_y, 999, rng)
    return test.evaluate(_scores(rng, member_y) + shift, _scores(rng, pool_y))


@pytest.mark.parametrize("ratio", [0.1, 0.5, 1.0])
def test_level_and_uniform_pvalues_when_the_client_was_never_trained_on(ratio):
    """1,000 null replicates at n/P = ratio: a 5% test rejects 3.5-6.5% of the
    time and the p-values pass a KS test against the uniform at 1%. (The old
    pseudo-client test, which ignored the pool mean's variance, rejected about
    15% at n/P = 1.)"""
    rng = np.random.default_rng(int(ratio * 10))
    p = np.array([_replicate(rng, 30, ratio)["client_mia_pvalue"] for _ in range(1000)])
    assert 0.035 <= np.mean(p <= 0.05) <= 0.065
    assert kstest(p, "uniform").pvalue > 0.01


def test_power_at_the_stated_detectable_shift():
    """A client whose mean score sits ``client_mia_mde`` above never-trained data
    is detected about 80% of the time, as the report says."""
    rng = np.random.default_rng(7)
    mde = np.median([_replicate(rng, 60, 0.5)["client_mia_mde"] for _ in range(100)])
    hits = [_replicate(rng, 60, 0.5, shift=mde)["client_mia_pvalue"] <= 0.05 for _ in range(400)]
    assert 0.72 <= np.mean(hits) <= 0.88


def test_a_shift_raises_z_and_lowers_p():
    rng = np.random.default_rng(3)
    res = _replicate(rng, 200, 0.2, shift=0.5)
    assert res["client_mia_pvalue"] == pytest.approx(0.001) and res["client_mia_z"] > 3


def test_small_pool_warns_and_large_pool_does_not():
    y = np.repeat(np.arange(4), 50)
    rng = np.random.default_rng(0)
    small = ClientMembershipTest.calibrate(y, np.repeat(np.arange(4), 20), 99, rng)
    large = ClientMembershipTest.calibrate(y, np.repeat(np.arange(4), 500), 99, rng)
    assert "little power" in small.power_warning() and "200 samples" in small.power_warning()
    assert small.pool_inflation() == pytest.approx(np.sqrt(1 + 50 / 20))
    assert large.power_warning() is None


def test_constant_scores_give_nan_not_a_verdict():
    y = np.repeat(np.arange(2), 10)
    test = ClientMembershipTest.calibrate(y, y, 99, np.random.default_rng(0))
    assert all(np.isnan(v) for v in test.evaluate(np.zeros(20), np.zeros(20)).values())


def _small_withdrawal(seed: int):
    from tests.conftest import tiny

    return tiny(seed=seed, data={"dataset": "synthetic", "num_clients": 4, "holdout_fraction": 0.3,
                                 "synthetic": {"samples": 600, "features": 20, "informative": 8, "classes": 4}},
                model={"name": "logreg", "hidden": []}, train={"rounds": 3, "lr": 0.1, "local_epochs": 1},
                events=[{"round": 3, "client": 1}], unlearning={"methods": [], "recovery_rounds": 0},
                oracle={"n_boot": 10, "controls": 0})


@pytest.mark.slow
def test_retrain_pvalues_are_uniform_end_to_end(tmp_path):
    """Over 100 seeds of a small scenario, retrain's p for the withdrawn client
    right after the event (label t - 0.5) is uniform: retrain never saw the
    client, so the test must not see it either (about 75 s inline)."""
    import warnings

    import fedforget

    p = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "events without methods": only original and retrain are needed
        for seed in range(100):
            m = fedforget.run(_small_withdrawal(seed), out=tmp_path / str(seed)).metrics
            sel = (m.arm == "retrain") & (m.metric == "client_mia_pvalue") & (m.client == 1) & (m["round"] == 2.5)
            p.append(float(m[sel].value.iloc[0]))
    p = np.array(p)
    assert kstest(p, "uniform").pvalue > 0.01
    # binomial(100, 0.05): 11 or more happens with probability 1.1%
    assert np.sum(p <= 0.05) <= 10 and np.sum(p >= 0.95) <= 10
