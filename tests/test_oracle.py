"""Tests pinning the science of the membership oracle (fedforget.oracle)."""

import os
from dataclasses import replace

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
    MIN_COUNT_FACTOR,
    LiraAttack,
    LossThresholdAttack,
    MembershipOracle,
    SampleStats,
    auc_interval,
    balanced_accuracy,
    best_balanced_threshold,
    class_matched_nonmembers,
    forgetting_rate,
    fr_at_fixed_fpr,
    fr_interval,
    get_attack,
    lira_offline_score,
    lira_score,
    min_nonmembers_for_fpr,
    roc_metrics,
    sample_statistics,
    stats_from_logits,
    threshold_at_fpr,
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
    n = 25000  # ~15,000 non-members: enough (>= 10 / FPR) for both low-FPR TPRs
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


def test_low_fpr_tpr_needs_ten_over_fpr_nonmembers():
    assert MIN_COUNT_FACTOR == 10
    assert min_nonmembers_for_fpr(0.01) == 1000 and min_nonmembers_for_fpr(0.001) == 10000
    assert min_nonmembers_for_fpr(0.07) == 143  # ceil(142.86)
    rng = np.random.default_rng(2)

    def roc(n_non, **kw):
        is_member = np.r_[np.ones(500, bool), np.zeros(n_non, bool)]
        return roc_metrics(rng.normal(size=is_member.size) + is_member, is_member, **kw)

    assert np.isnan(roc(999)["tpr_at_1pct_fpr"]) and np.isfinite(roc(1000)["tpr_at_1pct_fpr"])
    assert np.isnan(roc(9999)["tpr_at_0.1pct_fpr"]) and np.isfinite(roc(10000)["tpr_at_0.1pct_fpr"])
    out = roc(512)
    assert np.isnan(out["tpr_at_1pct_fpr"]) and np.isnan(out["tpr_at_0.1pct_fpr"])
    # Withholding leaves the AUC and the exact ROC alone.
    assert np.isfinite(out["auc"]) and out["fpr"].size == out["tpr"].size > 2
    # The factor is a keyword: with 5 / FPR, 500 non-members suffice at 1%.
    assert np.isfinite(roc(500, min_count_factor=5)["tpr_at_1pct_fpr"])
    assert np.isnan(roc(499, min_count_factor=5)["tpr_at_1pct_fpr"])


def _brute_threshold_check(s, fprs):
    """Check threshold_at_fpr against direct counting over every distinct decision."""
    n = s.size
    u = np.unique(s)
    cand = np.r_[-np.inf, u, np.nextafter(u, np.inf)]
    counts = np.array([(s >= c).sum() for c in cand])
    for fpr in fprs:
        t = threshold_at_fpr(s, fpr)
        best = counts[counts / n <= fpr + 1e-12].max()  # largest achievable FPR not above fpr
        got = int((s >= t).sum())
        assert got == best, (fpr, got, best)
        # ... and t is the lowest threshold achieving it.
        assert t == -np.inf or (s >= np.nextafter(t, -np.inf)).sum() > best


@pytest.mark.parametrize("ties", [False, True])
def test_threshold_at_fpr_is_exact(ties):
    rng = np.random.default_rng(3)
    for n in (1, 7, 300, 1000):
        s = rng.normal(size=n)
        if ties:
            s = np.round(s * 2) / 2  # a handful of distinct values, heavy ties
        fprs = [0.0, 0.0005, 0.001, 0.01, 0.05, 1 / 3, 0.5, 0.999, 1.0, *(np.arange(n + 1) / n)]
        _brute_threshold_check(s, [float(f) for f in fprs])
    # Hand-worked: sorted 1, 2, 2, 3.
    s = np.array([2.0, 1.0, 3.0, 2.0])
    assert threshold_at_fpr(s, 0.0) == np.nextafter(3.0, np.inf)
    assert threshold_at_fpr(s, 0.25) == np.nextafter(2.0, np.inf)
    # k = 2 but the 2nd and 3rd largest tie: flagging both would give FPR 3/4.
    assert threshold_at_fpr(s, 0.5) == np.nextafter(2.0, np.inf)
    assert threshold_at_fpr(s, 0.75) == np.nextafter(1.0, np.inf)
    assert threshold_at_fpr(s, 1.0) == -np.inf
    # floor(0.01 * 1000) is exactly 10 flagged, not 9.
    assert (np.arange(1000.0) >= threshold_at_fpr(np.arange(1000.0), 0.01)).sum() == 10
    for bad in ((s, 1.5), (s, -0.1), (np.zeros(0), 0.1), (np.array([1.0, np.nan]), 0.1)):
        with pytest.raises(ValueError):
            threshold_at_fpr(*bad)


def _calibrated(m, n):
    """Before decisions and calibration FPR of the balanced-accuracy threshold, as the oracle fits them."""
    thr, _ = best_balanced_threshold(m, n)
    return thr, m >= thr, float(np.mean(n >= thr))


def test_fr_at_fixed_fpr_ignores_a_uniform_shift():
    rng = np.random.default_rng(4)
    # Multiples of 1/64 below 2**10: adding an integer is exact, so the shift keeps every order.
    m = np.round((rng.normal(size=400) + 1.5) * 64) / 64
    n = np.round(rng.normal(size=500) * 64) / 64
    thr, before, fpr = _calibrated(m, n)
    assert 0 < fpr < 0.5 and 0 < before.sum() < m.size
    assert fr_at_fixed_fpr(before, m, n, fpr) == 0.0  # the calibration model itself

    # Every score drops by 3 (all losses rise): the fixed threshold "forgets" most members.
    down = forgetting_rate(before, m - 3 >= thr)["fr"]
    # Every score rises by 3: the fixed threshold flags members it missed, FR < 0.
    up = forgetting_rate(before, m + 3 >= thr)["fr"]
    assert down > 0.5 and up < -0.1
    assert fr_at_fixed_fpr(before, m - 3, n - 3, fpr) == 0.0
    assert fr_at_fixed_fpr(before, m + 3, n + 3, fpr) == 0.0


def test_fr_at_fixed_fpr_measures_real_forgetting_under_drift():
    rng = np.random.default_rng(5)
    n_m, n_n = 2000, 2000
    m, n = rng.normal(3.0, 1.0, n_m), rng.normal(0.0, 1.0, n_n)  # strong signal
    _, before, fpr = _calibrated(m, n)
    b_t = int(before.sum())
    # Forgotten: members now look like fresh non-members, and everything drifts by -2.
    m_after, n_after = rng.normal(0.0, 1.0, n_m) - 2, rng.normal(0.0, 1.0, n_n) - 2
    fr = fr_at_fixed_fpr(before, m_after, n_after, fpr)
    # FR = 1 - (#members flagged after) / B_T and each forgotten member is flagged with
    # probability ~fpr, so E[FR] ~ 1 - fpr n_m / B_T. SD: binomial count of flagged members
    # plus the error of the threshold as an empirical fpr-quantile of n_n non-members.
    expected = 1 - fpr * n_m / b_t
    sd = np.sqrt(n_m * fpr * (1 - fpr) * (1 + n_m / n_n)) / b_t
    assert abs(fr - expected) < 5 * sd
    assert fr > 0.5
    assert np.isnan(fr_at_fixed_fpr(np.zeros(n_m, bool), m_after, n_after, fpr))  # B_T == 0


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


@pytest.mark.parametrize("name", sorted(ATTACKS))
def test_attack_constructor_defaults_are_the_schema_defaults(name):
    """One default per parameter: a bare constructor, ``get_attack`` (what a
    scenario runs) and the ``Params`` schema agree on every parameter of every
    registered attack (LiRA's ``fixed_variance`` once had two defaults)."""
    import inspect

    cls = ATTACKS[name]
    schema = {k: f.default for k, f in cls.Params.model_fields.items()}
    assert cls().params == schema
    assert get_attack(name).params == schema
    for p in inspect.signature(cls.__init__).parameters.values():
        if p.default is not inspect.Parameter.empty:
            assert schema.get(p.name, p) == p.default, f"{name}.__init__ default of {p.name!r}"
    with pytest.raises(ValueError, match="Extra inputs"):
        cls(no_such_parameter=1)


def test_lira_pools_the_variance_by_default():
    assert LiraAttack().params["fixed_variance"] is True
    phi_out = np.array([[0.0, 0.0], [0.0, 4.0]])  # column 0: std 0; column 1: std 2
    att = LiraAttack().fit_reference(None, phi_out)
    np.testing.assert_allclose(att.sigma_out, [np.sqrt(2.0), np.sqrt(2.0)])  # pooled, not [1e-3, 2]


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

    # Too few candidates of a class: never a sample twice; the whole set shrinks
    # to the largest size whose histogram fits (7:2:1 of 4 -> 3, 1, 0).
    few = np.r_[np.zeros(3), np.ones(5), [2]].astype(int)
    idx = class_matched_nonmembers(members, few, None, rng)
    assert np.unique(idx).size == idx.size
    np.testing.assert_array_equal(np.bincount(few[idx], minlength=3), [3, 1, 0])

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
    with pytest.raises(ValueError, match="unknown attack 'shokri'; expected one of lira, loss, population"):
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


def _null_auc_se(n_m, n_n):
    """Standard error of the AUC when members and non-members are exchangeable (Mann-Whitney null)."""
    return np.sqrt((n_m + n_n + 1) / (12 * n_m * n_n))


def test_loss_attack_is_chance_on_unseen_data_of_a_trained_model(overfit):
    model, train, (xte, yte) = overfit
    unseen_b, unseen_c = (xte[:400], yte[:400]), (xte[400:], yte[400:])
    # B and C were both held out of training: as "members" vs non-members they are
    # exchangeable, so the AUC is 0.5 up to sampling noise (4 SE ~ 0.08 here).
    auc_null = _auc(get_attack("loss"), model, unseen_b, unseen_c)
    assert abs(auc_null - 0.5) < 4 * _null_auc_se(400, 400)
    # The same attack on the same model does see the real training set: the null
    # result above is not an attack that cannot tell anything apart.
    assert _auc(get_attack("loss"), model, train, unseen_c) > 0.6


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
    # A model that never trained cannot tell members from non-members.
    assert abs(fresh.metrics["mia_auc"] - 0.5) < 4 * _null_auc_se(300, 300)
    assert fresh.metrics["fr_lo"] <= fresh.metrics["fr"] <= fresh.metrics["fr_hi"]
    assert fresh.metrics["mia_auc_lo"] <= fresh.metrics["mia_auc"] <= fresh.metrics["mia_auc_hi"]
    # Deterministic given the seed (assert_equal: withheld TPRs are NaN on both sides).
    np.testing.assert_equal(fresh.metrics, oracle.evaluate(_mlp(200, 20, 99)).metrics)

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


class _Tempered(torch.nn.Module):
    """``model`` with logits multiplied by ``scale``: every loss moves, the ranking barely."""

    def __init__(self, model: torch.nn.Module, scale: float) -> None:
        super().__init__()
        self.model, self.scale = model, scale

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x) * self.scale


def test_membership_oracle_drift_controls(overfit):
    model, (xtr, ytr), (xte, yte) = overfit
    oracle = MembershipOracle.calibrate(model, (xtr, ytr, None), (xte[:300], yte[:300], None), n_boot=20)
    assert oracle.fpr_calibration == float(oracle.before_nonmember.mean())
    for rep in (oracle.calibration, oracle.evaluate(model)):
        assert rep.metrics["fr_fixed_fpr"] == 0.0
        assert rep.metrics["nonmember_fpr"] == oracle.fpr_calibration

    # Every loss + 1 (exactly uniform, via the statistics): all drift, no forgetting.
    sm = sample_statistics(model, xtr, ytr)
    sn = sample_statistics(model, xte[:300], yte[:300])
    drifted = oracle.evaluate_stats(replace(sm, loss=sm.loss + 1.0), replace(sn, loss=sn.loss + 1.0)).metrics
    assert oracle.fpr_calibration > 0
    assert drifted["fr"] > 0.9  # the fixed threshold calls it forgetting
    assert drifted["nonmember_fpr"] < oracle.fpr_calibration
    assert drifted["fr_fixed_fpr"] == 0.0

    # A real model: logits halved. Membership is as visible as before (AUC > 0.99), yet
    # every loss rises and the fixed threshold flags no one; at the calibration FPR
    # (2 of 300 non-members) almost every member is still flagged.
    cooled = oracle.evaluate(_Tempered(model, 0.5)).metrics
    assert cooled["mia_auc"] > 0.99
    assert cooled["fr"] > 0.9 and cooled["nonmember_fpr"] < oracle.fpr_calibration
    assert 0 <= cooled["fr_fixed_fpr"] < 0.05
    # Logits doubled: drift the other way, more non-members flagged by the fixed threshold.
    heated = oracle.evaluate(_Tempered(model, 2.0)).metrics
    assert heated["nonmember_fpr"] > oracle.fpr_calibration
    assert heated["fr_fixed_fpr"] == pytest.approx(0.0, abs=0.05)


def test_oracle_report_notes_name_withheld_tpr():
    torch.manual_seed(0)
    model = torch.nn.Linear(5, 3)
    x, y = torch.randn(1100, 5), torch.randint(0, 3, (1100,))
    small = MembershipOracle.calibrate(model, (x[:100], y[:100], None), (x[100:612], y[100:612], None), n_boot=5)
    rep = small.calibration
    assert np.isnan(rep.metrics["tpr_at_1pct_fpr"]) and np.isnan(rep.metrics["tpr_at_0.1pct_fpr"])
    assert rep.notes == (
        "tpr_at_1pct_fpr: NaN because 512 non-members < 1000 needed (10 / FPR)",
        "tpr_at_0.1pct_fpr: NaN because 512 non-members < 10000 needed (10 / FPR)",
    )
    big = MembershipOracle.calibrate(model, (x[:100], y[:100], None), (x[100:], y[100:], None), n_boot=5)
    rep = big.evaluate(model)
    assert np.isfinite(rep.metrics["tpr_at_1pct_fpr"]) and np.isnan(rep.metrics["tpr_at_0.1pct_fpr"])
    assert len(rep.notes) == 1 and rep.notes[0].startswith("tpr_at_0.1pct_fpr: NaN because 1000 non-members")


# ------------------------------------------------------------ client-level membership test


def test_client_level_test_detects_a_trained_client_and_holds_its_level(overfit):
    """p < 0.01 for the client the model was fitted on; for never-trained
    'clients' the p-values are roughly uniform (false-positive rate near the
    level over many draws)."""
    from fedforget.oracle.client_level import ClientMembershipTest

    model, (xtr, ytr), (xte, yte) = overfit
    scores_tr = -sample_statistics(model, xtr, ytr).loss
    scores_te = -sample_statistics(model, xte, yte).loss
    y_te = yte.numpy()
    pool, candidates = np.arange(400), np.arange(400, len(y_te))  # pseudo-client pool vs fake clients
    rng = np.random.default_rng(0)
    test = ClientMembershipTest.calibrate(ytr.numpy()[:100], y_te[pool], 200, rng)
    res = test.evaluate(scores_tr[:100], scores_te[pool])
    assert res["client_mia_pvalue"] < 0.01 and res["client_mia_z"] > 3
    pvals = []
    for k in range(200):
        members = rng.choice(candidates, size=60, replace=False)  # never trained on
        t = ClientMembershipTest.calibrate(y_te[members], y_te[pool], 200, np.random.default_rng(k))
        pvals.append(t.evaluate(scores_te[members], scores_te[pool])["client_mia_pvalue"])
    pvals = np.array(pvals)
    # binomial(200, 0.05): mean 10, sd 3.1; the pool is finite, so allow some slack
    assert (pvals < 0.05).mean() < 0.12 and (pvals < 0.5).mean() == pytest.approx(0.5, abs=0.15)


def test_client_level_test_needs_every_member_class_in_the_pool():
    from fedforget.oracle.client_level import ClientMembershipTest

    with pytest.raises(ValueError, match="no never-trained sample of class 3"):
        ClientMembershipTest.calibrate(np.array([1, 3]), np.array([1, 1, 2]), 10, np.random.default_rng(0))


def test_vectorised_intervals_equal_the_generic_bootstrap():
    """auc_interval and fr_interval compute every replicate at once; they must
    give the generic bootstrap's interval (same draws), ties included."""
    from fedforget.oracle.metrics import (
        auc_of,
        auc_interval,
        bootstrap_interval,
        forgetting_rate,
        fr_interval,
    )

    rng = np.random.default_rng(0)
    for trial in range(12):
        n_m, n_n = int(rng.integers(1, 200)), int(rng.integers(1, 500))
        s = np.concatenate([rng.normal(0.3, 1, n_m), rng.normal(0, 1, n_n)])
        if trial % 3 == 0:
            s = np.round(s, 1)  # many ties
        m = rng.permutation(np.r_[np.ones(n_m, bool), np.zeros(n_n, bool)])
        generic = bootstrap_interval(auc_of, (s, m), 100, rng=np.random.default_rng(trial), strata=m)
        np.testing.assert_allclose(auc_interval(s, m, 100, rng=trial), generic, atol=1e-12, rtol=0)
        b = rng.random(n_m) < rng.random()
        a = (b & (rng.random(n_m) < 0.7)) | (rng.random(n_m) < 0.1)
        generic = bootstrap_interval(lambda x, y: forgetting_rate(x, y)["fr"], (b, a), 100,
                                     rng=np.random.default_rng(trial))
        np.testing.assert_allclose(fr_interval(b, a, 100, rng=trial), generic, atol=1e-12, rtol=0)


def test_exact_roc_equals_sklearn():
    from fedforget.oracle.metrics import exact_roc

    rng = np.random.default_rng(1)
    for trial in range(10):
        n = int(rng.integers(2, 400))
        s = rng.normal(size=n)
        if trial % 2:
            s = np.round(s, 1)  # ties
        m = rng.random(n) < 0.4
        m[0], m[1] = True, False
        fpr, tpr = exact_roc(s, m)
        ref_fpr, ref_tpr, _ = roc_curve(m, s, drop_intermediate=False)
        np.testing.assert_array_equal(fpr, ref_fpr)
        np.testing.assert_array_equal(tpr, ref_tpr)
