"""Tests pinning the science of the membership oracle (fedforget.oracle)."""

import os

os.environ["FLWR_TELEMETRY_ENABLED"] = "0"

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from scipy.stats import norm
from sklearn.datasets import make_classification
from sklearn.metrics import roc_auc_score, roc_curve

from fedforget.oracle import (
    ATTACKS,
    LiraAttack,
    LossThresholdAttack,
    MembershipOracle,
    SampleStats,
    auc_interval,
    balanced_accuracy,
    class_matched_nonmembers,
    forgetting_rate,
    fr_interval,
    get_attack,
    lira_offline_score,
    lira_score,
    roc_metrics,
    sample_statistics,
    stats_from_logits,
)

# --------------------------------------------------------------------------- metrics


def _brute_tpr_at_fpr(scores, is_member, max_fpr):
    """TPR at FPR by direct counting over every threshold (independent of sklearn)."""
    best = 0.0
    pos, neg = scores[is_member], scores[~is_member]
    for t in np.r_[np.unique(scores), np.inf]:
        fpr = np.mean(neg >= t)
        if fpr <= max_fpr:
            best = max(best, np.mean(pos >= t))
    return best


@pytest.mark.parametrize("ties", [False, True])
def test_roc_metrics_match_sklearn(ties):
    rng = np.random.default_rng(1)
    n = 2000
    is_member = rng.random(n) < 0.4
    scores = rng.normal(size=n) + 0.8 * is_member
    if ties:
        scores = np.round(scores, 1)
    out = roc_metrics(scores, is_member)
    assert out["auc"] == pytest.approx(roc_auc_score(is_member, scores), abs=1e-12)
    fpr, tpr, _ = roc_curve(is_member, scores, drop_intermediate=False)
    for key, f in [("tpr_at_1pct_fpr", 0.01), ("tpr_at_0.1pct_fpr", 0.001)]:
        assert out[key] == pytest.approx(tpr[fpr <= f].max(), abs=1e-12)
        assert out[key] == pytest.approx(_brute_tpr_at_fpr(scores, is_member, f), abs=1e-12)


def test_balanced_accuracy():
    m = np.array([1, 1, 1, 1, 0, 0], bool)
    d = np.array([1, 1, 1, 0, 1, 0], bool)
    assert balanced_accuracy(d, m) == pytest.approx(0.5 * (3 / 4 + 1 / 2))
    assert np.isnan(balanced_accuracy(d, np.ones(6, bool)))


def test_fr_nan_when_nothing_flagged_before():
    out = forgetting_rate(np.zeros(5, bool), np.array([1, 0, 0, 0, 0], bool))
    assert out["b_t"] == 0 and out["n_forget"] == 5
    assert np.isnan(out["fr"]) and np.isnan(out["fr_transition"])


def test_fr_negative_when_more_flagged_after():
    before = np.array([1, 1, 0, 0, 0, 0], bool)
    after = np.array([1, 1, 1, 1, 1, 0], bool)
    out = forgetting_rate(before, after)
    assert out["fr"] == pytest.approx((1 - 4) / 2)  # (A_F - B_F) / B_T
    assert out["fr_transition"] == 0.0


def test_fr_one_when_nothing_stays_flagged():
    before = np.array([1, 1, 1, 0], bool)
    out = forgetting_rate(before, np.zeros(4, bool))
    assert out["fr"] == 1.0 and out["fr_transition"] == 1.0 and out["b_t"] == 3


def test_fr_transition_differs_when_some_flip_false_to_true():
    before = np.array([1, 1, 1, 1, 0, 0], bool)
    after = np.array([0, 0, 1, 1, 1, 0], bool)  # two T->F, one F->T
    out = forgetting_rate(before, after)
    assert out["fr"] == pytest.approx((3 - 2) / 4)  # net: the F->T flip cancels one
    assert out["fr_transition"] == pytest.approx(2 / 4)
    assert out["fr"] == pytest.approx(1 - after.sum() / before.sum())


def test_bootstrap_intervals_contain_estimate_and_are_deterministic():
    rng = np.random.default_rng(0)
    is_member = np.r_[np.ones(300, bool), np.zeros(300, bool)]
    scores = rng.normal(size=600) + is_member
    lo, hi = auc_interval(scores, is_member, n_boot=200, rng=3)
    assert lo <= roc_auc_score(is_member, scores) <= hi
    assert (lo, hi) == auc_interval(scores, is_member, n_boot=200, rng=3)
    before = rng.random(200) < 0.8
    after = before & (rng.random(200) < 0.5)
    lo, hi = fr_interval(before, after, n_boot=200, rng=4)
    assert lo <= forgetting_rate(before, after)["fr"] <= hi
    assert np.isnan(fr_interval(np.zeros(10, bool), np.zeros(10, bool), rng=0)).all()


# --------------------------------------------------------------------------- features


def test_stats_match_naive_formulas_and_stay_finite():
    torch.manual_seed(0)
    z = torch.randn(64, 7, dtype=torch.float64) * 3
    y = torch.randint(0, 7, (64,))
    s = stats_from_logits(z, y)
    p = torch.softmax(z, 1).numpy()
    yy = y.numpy()
    py = p[np.arange(64), yy]
    np.testing.assert_allclose(s.loss, F.cross_entropy(z, y, reduction="none").numpy(), rtol=1e-10)
    np.testing.assert_allclose(s.confidence, py, rtol=1e-10)
    np.testing.assert_allclose(s.max_confidence, p.max(1), rtol=1e-10)
    np.testing.assert_allclose(s.entropy, -(p * np.log(p)).sum(1), rtol=1e-10)
    np.testing.assert_allclose(s.logit_scaled, np.log(py) - np.log(1 - py), rtol=1e-8, atol=1e-10)
    other = np.ones_like(p, bool)
    other[np.arange(64), yy] = False
    mentr = -(1 - py) * np.log(py) - np.where(other, p * np.log(1 - p), 0).sum(1)
    np.testing.assert_allclose(s.modified_entropy, mentr, rtol=1e-8, atol=1e-12)

    # Extreme logits: naive log(1 - p) would be -inf / nan.
    ext = stats_from_logits(torch.tensor([[100.0, 0.0, 0.0], [0.0, 80.0, 0.0]]), torch.tensor([0, 0]))
    assert ext.logit_scaled[0] == pytest.approx(100 - np.log(2))
    assert ext.logit_scaled[1] == pytest.approx(-80 - np.log1p(np.exp(-80)))
    for name in SampleStats.field_names():
        assert np.all(np.isfinite(getattr(ext, name))), name
    # Wrongly confident: -(1-p_y) log p_y = 80 plus -p_1 log(1 - p_1) = 80 - log 2.
    assert ext.modified_entropy[1] == pytest.approx(80 + 80 - np.log(2), rel=1e-9)


def test_sample_statistics_restores_mode_and_subset_concat():
    model = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.Dropout(0.5), torch.nn.Linear(8, 3))
    model.train()
    model[1].eval()  # mixed modes must survive
    x, y = torch.randn(10, 4), torch.randint(0, 3, (10,))
    s = sample_statistics(model, x, y, batch_size=3)
    assert model.training and model[0].training and not model[1].training
    assert len(s) == 10 and s.loss.dtype == np.float64
    s2 = sample_statistics(model, x, y, batch_size=1024)
    np.testing.assert_allclose(s.loss, s2.loss, rtol=1e-6)  # dropout off in eval
    both = SampleStats.concat(s.subset(np.arange(4)), s.subset(np.arange(4, 10)))
    np.testing.assert_array_equal(both.entropy, s.entropy)


# --------------------------------------------------------------------------- LiRA


def test_lira_scores_equal_handwritten_gaussian_formulas():
    phi = np.array([2.0, -1.0, 0.5, 4.0])
    mu_in, s_in = np.array([3.0, 0.0, 1.0, 2.0]), np.array([1.0, 0.5, 2.0, 0.3])
    mu_out, s_out = np.array([0.0, -2.0, 0.5, 1.0]), np.array([1.5, 0.7, 1.0, 2.0])
    expected = norm.logpdf(phi, mu_in, s_in) - norm.logpdf(phi, mu_out, s_out)
    np.testing.assert_allclose(lira_score(phi, mu_in, s_in, mu_out, s_out), expected, atol=1e-6)
    # Written out: log N(x; m, s) = -log s - log sqrt(2 pi) - (x - m)^2 / (2 s^2)
    manual = (
        -np.log(s_in) - (phi - mu_in) ** 2 / (2 * s_in**2) + np.log(s_out) + (phi - mu_out) ** 2 / (2 * s_out**2)
    )
    np.testing.assert_allclose(lira_score(phi, mu_in, s_in, mu_out, s_out), manual, atol=1e-6)
    np.testing.assert_allclose(
        lira_offline_score(phi, mu_out, s_out), np.log(norm.cdf((phi - mu_out) / s_out)), atol=1e-6
    )


def test_lira_attack_reference_columns_and_threshold():
    rng = np.random.default_rng(0)
    n_m, n_n, k = 50, 60, 16
    mu_out = rng.normal(size=n_m + n_n)
    phi_out = mu_out + 0.5 * rng.normal(size=(k, n_m + n_n))
    phi_in = mu_out + 3.0 + 0.5 * rng.normal(size=(k, n_m + n_n))
    target = np.r_[mu_out[:n_m] + 3.0, mu_out[n_m:]] + 0.1 * rng.normal(size=n_m + n_n)

    def stats(v):
        z = np.zeros_like(v)
        return SampleStats(z, z, z, z, z, v)

    for offline in (False, True):
        att = LiraAttack(fixed_variance=offline).fit_reference(None if offline else phi_in, phi_out)
        att.fit(stats(target[:n_m]), stats(target[n_m:]))
        assert att.params["calibration_balanced_accuracy"] > 0.95
        full = att.score(stats(target))
        cols = np.array([n_m + 3, 5])
        np.testing.assert_allclose(att.score(stats(target[cols]), columns=cols), full[cols])
    with pytest.raises(ValueError):
        att.score(stats(target[:3]))  # needs columns


# --------------------------------------------------------------------------- sampling


def test_class_matched_nonmembers_histogram_preference_and_errors():
    rng = np.random.default_rng(0)
    members = np.r_[np.zeros(7), np.ones(2), np.full(1, 2)].astype(int)
    cand = np.r_[np.zeros(20), np.ones(20), np.full(20, 2)].astype(int)
    preferred = np.zeros(60, bool)
    preferred[[0, 1, 2, 3, 4, 5, 6, 7, 20]] = True  # 8 of class 0, 1 of class 1
    idx = class_matched_nonmembers(members, cand, None, rng, preferred=preferred)
    assert idx.size == 10 and np.unique(idx).size == 10
    np.testing.assert_array_equal(np.bincount(cand[idx], minlength=3), [7, 2, 1])
    assert preferred[idx][cand[idx] == 0].all()  # enough preferred of class 0
    assert 20 in idx  # the single preferred class-1 candidate is used first

    # Scaled to n with largest remainder: 7/10, 2/10, 1/10 of 15 -> 10.5, 3, 1.5 -> 11, 3, 1
    idx = class_matched_nonmembers(members, cand, 15, rng)
    np.testing.assert_array_equal(np.bincount(cand[idx], minlength=3), [11, 3, 1])

    # Too few candidates of a class: all used, then resampled with replacement.
    idx = class_matched_nonmembers(members, np.r_[np.zeros(3), np.ones(5), [2]].astype(int), None, rng)
    np.testing.assert_array_equal(np.bincount(np.r_[np.zeros(3), np.ones(5), [2]].astype(int)[idx]), [7, 2, 1])

    with pytest.raises(ValueError, match="class"):
        class_matched_nonmembers(members, np.r_[np.zeros(20), np.ones(20)].astype(int), None, rng)


# --------------------------------------------------------------------------- attacks


def test_loss_attack_picks_balanced_accuracy_optimal_threshold():
    z = np.zeros(4)

    def stats(loss):
        return SampleStats(np.asarray(loss, float), z, z, z, z, z)

    # Sorted scores (-loss): m m m | n n m | n n. Best: loss <= 0.4 (TPR 3/4, FPR 0).
    m, n = stats([0.1, 0.2, 0.3, 0.9]), stats([0.5, 0.8, 1.2, 2.0])
    att = LossThresholdAttack().fit(m, n)
    assert att.threshold == pytest.approx(-0.4)
    assert att.params["calibration_balanced_accuracy"] == pytest.approx(0.875)
    np.testing.assert_array_equal(att.decide(m), [True, True, True, False])
    np.testing.assert_array_equal(att.decide(n), [False, False, False, False])


def test_registry():
    assert set(ATTACKS) == {"loss", "population", "lira"}
    assert isinstance(get_attack("loss"), LossThresholdAttack)
    with pytest.raises(ValueError, match="known attacks"):
        get_attack("shokri")


# --------------------------------------------------------------------------- end to end


def _mlp(d, c, seed):
    torch.manual_seed(seed)
    return torch.nn.Sequential(torch.nn.Linear(d, 128), torch.nn.ReLU(), torch.nn.Linear(128, c))


@pytest.fixture(scope="module")
def overfit():
    """An MLP trained to ~100% train accuracy on 300 samples, plus held-out data."""
    x, y = make_classification(
        n_samples=1100, n_features=200, n_informative=40, n_classes=20, n_clusters_per_class=1, random_state=0
    )
    x = torch.tensor(x, dtype=torch.float32)
    y = torch.tensor(y, dtype=torch.int64)
    xtr, ytr, xte, yte = x[:300], y[:300], x[300:], y[300:]
    model = _mlp(200, 20, 0)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    for _ in range(400):
        opt.zero_grad()
        F.cross_entropy(model(xtr), ytr).backward()
        opt.step()
    with torch.no_grad():
        assert (model(xtr).argmax(1) == ytr).float().mean() > 0.99
    return model, (xtr, ytr), (xte, yte)


def _auc(attack, model, members, nonmembers):
    sm, sn = sample_statistics(model, *members), sample_statistics(model, *nonmembers)
    attack.fit(sm, sn)
    scores = np.r_[attack.score(sm), attack.score(sn)]
    return roc_auc_score(np.r_[np.ones(len(sm)), np.zeros(len(sn))], scores)


@pytest.mark.parametrize("name", ["loss", "population"])
def test_attack_detects_overfit_model(overfit, name):
    model, train, test = overfit
    assert _auc(get_attack(name), model, train, (test[0][:300], test[1][:300])) > 0.6


def test_loss_attack_is_chance_on_model_that_never_saw_data(overfit):
    _, train, test = overfit
    fresh = _mlp(200, 20, 123)
    # 300 "members" vs 800 non-members: AUC std ~ 0.02.
    assert abs(_auc(get_attack("loss"), fresh, train, test) - 0.5) < 0.08


def test_membership_oracle_end_to_end(overfit):
    model, (xtr, ytr), (xte, yte) = overfit
    members = (xtr, ytr, np.arange(300) + 1000)
    nonmembers = (xte[:300], yte[:300], np.arange(300) + 5000)
    oracle = MembershipOracle.calibrate(model, members, nonmembers, attack="loss", n_boot=100, seed=7)

    same = oracle.evaluate(model)
    assert same.metrics["fr"] == 0.0 and same.metrics["fr_transition"] == 0.0
    np.testing.assert_array_equal(same.per_sample["decision"][:300], oracle.before_member)
    np.testing.assert_array_equal(same.per_sample["decision"], same.per_sample["decision_before"])
    assert same.metrics["b_t"] == int(oracle.before_member.sum()) > 0
    assert same.metrics["mia_auc"] > 0.6
    assert same.metrics["mia_auc_lo"] <= same.metrics["mia_auc"] <= same.metrics["mia_auc_hi"]
    assert same.metrics["fr_lo"] <= same.metrics["fr"] <= same.metrics["fr_hi"]
    lengths = {k: len(v) for k, v in same.per_sample.items()}
    assert set(lengths.values()) == {600}
    assert same.per_sample["sample_id"][0] == 1000 and same.per_sample["sample_id"][-1] == 5299

    fresh = oracle.evaluate(_mlp(200, 20, 99))
    assert fresh.metrics["fr"] > 0
    assert fresh.metrics["fr_lo"] <= fresh.metrics["fr"] <= fresh.metrics["fr_hi"]
    assert fresh.metrics["mia_auc_lo"] <= fresh.metrics["mia_auc"] <= fresh.metrics["mia_auc_hi"]
    # Deterministic given the seed.
    assert fresh.metrics == oracle.evaluate(_mlp(200, 20, 99)).metrics

    # Witness subset: FR on the subset, metrics vs all non-members.
    mask = np.zeros(300, bool)
    mask[:40] = True
    sub = oracle.evaluate(model, subset_mask=mask)
    assert sub.metrics["n_forget"] == 40 and len(sub.per_sample["member"]) == 340
    assert sub.metrics["fr"] == 0.0 or np.isnan(sub.metrics["fr"])

    with pytest.raises(AttributeError):
        oracle.attack = LossThresholdAttack()


def test_membership_oracle_with_lira_reference(overfit):
    model, (xtr, ytr), (xte, yte) = overfit
    members, nonmembers = (xtr[:100], ytr[:100], None), (xte[:100], yte[:100], None)
    phi = np.r_[
        sample_statistics(model, xtr[:100], ytr[:100]).logit_scaled,
        sample_statistics(model, xte[:100], yte[:100]).logit_scaled,
    ]
    rng = np.random.default_rng(0)
    # Synthetic shadows: OUT models sit 3 units lower on every sample.
    reference = {"phi_in": phi + rng.normal(size=(8, 200)), "phi_out": phi - 3 + rng.normal(size=(8, 200))}
    oracle = MembershipOracle.calibrate(model, members, nonmembers, attack="lira", reference=reference, n_boot=20)
    rep = oracle.evaluate(model)
    assert rep.metrics["fr"] == 0.0
    with pytest.raises(ValueError, match="reference"):
        MembershipOracle.calibrate(model, members, nonmembers, attack="lira")
