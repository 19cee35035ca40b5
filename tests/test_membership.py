"""The membership audit inside a run: oracles calibrated at the event on the
original model, metrics for every arm and round, controls, scores, flags."""

import numpy as np
import pandas as pd
import pytest

import fedforget
from fedforget.results import read_events

ORACLE_METRICS = [
    "fr", "fr_transition", "b_t", "n_forget", "mia_auc", "mia_balanced_accuracy", "tpr_at_1pct_fpr",
    "tpr_at_0.1pct_fpr", "fr_lo", "fr_hi", "mia_auc_lo", "mia_auc_hi",
]


def memorising(**over):
    """A small federation that memorises its clients (synthetic, wide MLP)."""
    from tests.conftest import tiny

    base = dict(
        data={"dataset": "synthetic", "num_clients": 4, "synthetic": {"samples": 800, "features": 100, "informative": 20, "classes": 10}},
        model={"name": "mlp", "hidden": [256]},
        train={"rounds": 5, "local_epochs": 5, "lr": 0.05},
        events=[{"round": 4, "client": 1}],
        unlearning={"methods": ["none", "federaser"], "recovery_rounds": 1},
        oracle={"n_boot": 50},
    )
    base.update(over)
    return tiny(**base)


@pytest.fixture(scope="module")
def audited(tmp_path_factory):
    res = fedforget.run(memorising(), out=tmp_path_factory.mktemp("m") / "run")
    return res


def test_oracle_sees_the_client_before_and_retrain_is_near_chance(audited):
    df = audited.metrics
    auc = df[(df.metric == "mia_auc") & (df.client == 1)].set_index(["arm", "round"]).value
    assert auc[("original", 3)] > 0.65  # calibration model: the client is remembered
    lo = df[(df.metric == "mia_auc_lo") & (df.client == 1)].set_index(["arm", "round"]).value
    hi = df[(df.metric == "mia_auc_hi") & (df.client == 1)].set_index(["arm", "round"]).value
    assert abs(auc[("retrain", 5)] - 0.5) < 0.05 or lo[("retrain", 5)] <= 0.5 <= hi[("retrain", 5)]
    fr = df[(df.metric == "fr") & (df.client == 1)].set_index(["arm", "round"]).value
    assert fr[("original", 3)] == 0.0  # the calibration model judged against itself
    # client level: "is its data still in the model?" yes before, no after retraining
    p = df[(df.metric == "client_mia_pvalue") & (df.client == 1)].set_index(["arm", "round"]).value
    assert p[("original", 3)] < 0.01 and p[("retrain", 5)] > 0.05 and p[("none", 5)] < 0.01
    assert fr[("retrain", 5)] > 0.3 and fr[("none", 5)] < fr[("retrain", 5)]


def test_every_arm_every_round_from_the_event_has_the_oracle_metrics(audited):
    df = audited.metrics
    for arm in ["original", "retrain", "none", "federaser"]:
        for rnd in (4, 5):
            got = set(df[(df.arm == arm) & (df["round"] == rnd) & (df.client == 1)].metric)
            assert set(ORACLE_METRICS) <= got, (arm, rnd, set(ORACLE_METRICS) - got)
    # intervals bracket the point estimates
    piv = df[df.client == 1].pivot_table(index=["arm", "round"], columns="metric", values="value").dropna(subset=["mia_auc"])
    assert (piv.mia_auc_lo <= piv.mia_auc + 1e-9).all() and (piv.mia_auc <= piv.mia_auc_hi + 1e-9).all()


def test_two_controls_are_audited_and_barely_forget(audited):
    df = audited.metrics
    controls = sorted(set(df[(df.metric == "fr") & (df.client != 1)].client.dropna()))
    assert len(controls) == 2 and 1 not in controls
    fr = df[(df.metric == "fr") & df.client.isin(controls)]
    whole = fr[fr["round"] == fr["round"].round()]
    # controls are not forgotten in any arm after a regular round (continued
    # training may even make them more memorised: FR <= 0), while retraining
    # forgets the withdrawn client
    assert (whole.value < 0.2).all()
    # Right after its step, FedEraser's replay moves every score a little (its
    # fixed-threshold FR on controls is about 0.2 here); the drift-controlled FR
    # shows that this is mostly drift, not forgetting of the controls.
    ffpr = df[(df.metric == "fr_fixed_fpr") & df.client.isin(controls) & (df["round"] == 3.5)]
    assert (ffpr.value < 0.15).all()
    fr_w = df[(df.metric == "fr") & (df.client == 1) & (df.arm == "retrain") & (df["round"] == 5)].value.iloc[0]
    assert fr_w > fr[(fr.arm == "retrain") & (fr["round"] == 5)].value.max() + 0.3


def test_scores_parquet_per_sample(audited):
    sc = pd.read_parquet(audited.run_dir / "scores.parquet")
    assert list(sc.columns) == ["arm", "round", "client", "sample_id", "member", "score", "decision", "phi"]
    # phi is the logit-scaled confidence of the same model: with the loss attack, score = log p_y
    p = np.exp(sc.score.to_numpy())
    ok = (p > 1e-6) & (p < 1 - 1e-6)
    np.testing.assert_allclose(sc.phi.to_numpy()[ok], np.log(p[ok]) - np.log1p(-p[ok]), rtol=1e-4, atol=1e-4)
    assert set(sc["round"]) == {3, 3.5, 5}  # before (calibration), right after unlearning, last
    one = sc[(sc.arm == "original") & (sc["round"] == 5) & (sc.client == 1)]
    from fedforget.data import federated_data_for

    fd = federated_data_for(audited.scenario)
    # at least min_nonmembers non-members where the data allows: here the pool
    # (the client's audit part and the test set) is smaller, so as many distinct
    # samples as keep the members' label histogram
    pool = len(fd.audit_ids[1]) + len(fd.test_ids)
    assert 0 < (~one.member).sum() < pool
    assert one[~one.member].sample_id.is_unique
    assert set(one[~one.member].sample_id) <= set(fd.audit_ids[1].tolist()) | set(fd.test_ids.tolist())
    # member ids are the client's train part, joinable with the metrics
    assert set(one[one.member].sample_id) == set(fd.train_ids[1].tolist())
    assert not set(one[~one.member].sample_id) & set(np.concatenate(fd.train_ids).tolist())


@pytest.mark.slow  # headless Chromium
def test_run_writes_a_report_that_renders(audited, tmp_path):
    from tests.test_report import rendered_figures

    report = audited.run_dir / "report.html"
    html = report.read_text()
    assert "federaser" in html and "retrain" in html and "http://" not in html
    rendered, total = rendered_figures(report, tmp_path)
    assert rendered == total >= 4  # accuracy, FR, AUC, ROC at least


def test_seeds_run_in_one_runtime_and_report_across_seeds(tmp_path):
    from tests.conftest import tiny

    sc = tiny(train={"rounds": 3}, events=[{"round": 2, "client": 1}], unlearning={"methods": ["none"], "recovery_rounds": 0}, oracle={"n_boot": 10})
    results = fedforget.run_seeds(sc, 2, out=tmp_path / "seeds")
    assert [r.scenario.seed for r in results] == [3, 4]
    assert (tmp_path / "seeds" / "seed-3" / "metrics.parquet").is_file()
    assert (tmp_path / "seeds" / "seed-4" / "report.html").is_file()
    html = (tmp_path / "seeds" / "report.html").read_text()
    assert "2 seeds" in html and "±" in html
    assert not results[0].metrics.equals(results[1].metrics)


def test_over_unlearning_flags_exist_for_methods_only(audited):
    df = audited.metrics
    flags = df[df.metric == "over_unlearning"]
    assert set(flags.arm) == {"none", "federaser"}
    assert set(flags.value) <= {0.0, 1.0}


@pytest.mark.parametrize("online", [False, True])
def test_lira_runs_with_reference_federations(tmp_path, online):
    # Online LiRA fits an IN Gaussian per sample from half the shadows: with 2
    # shadows that is one model per sample and the attack is near chance here
    # (AUC 0.52; it read 0.61 while duplicated non-members leaked IN-trained
    # twins into OUT columns), so online runs 4.
    shadows = 4 if online else 2
    sc = memorising(
        oracle={"attack": "lira", "n_boot": 20, "controls": 0, "lira": {"shadows": shadows, "online": online}},
        unlearning={"methods": ["none"], "recovery_rounds": 0},
    )
    res = fedforget.run(sc, out=tmp_path / "lira")
    events = read_events(res.run_dir)
    refs = [e for e in events if e["event"] == "oracle_references"]
    assert refs and refs[0]["count"] == (2 * shadows if online else shadows) and set(refs[0]["rounds_each"]) == {3}
    arms = {"original", "retrain", "none"}
    ref_msgs = [e for e in events if e["event"] == "message" and e["type"] == "train" and e["arm"] not in arms]
    assert {e["arm"] for e in ref_msgs} == {f"lira/{k}/1/{i}" for k in (("out", "in") if online else ("out",)) for i in range(shadows)}
    # OUT references never train the audited client; all stop at the calibration round
    for e in ref_msgs:
        assert int(e["round"]) <= 3
        if "/out/" in e["arm"]:
            assert e["client"] != 1
    if online:
        assert any("/in/" in e["arm"] and e["client"] == 1 for e in ref_msgs)
    df = res.metrics
    assert set(df.arm) == arms  # reference federations are not arms of the study
    auc = df[(df.metric == "mia_auc") & (df.client == 1)].set_index(["arm", "round"]).value
    assert auc[("original", 3)] > 0.6


def test_old_top_level_lira_keys_are_unknown_keys():
    # [oracle] shadows / lira_online / lira_fixed_variance live in [oracle.lira] now.
    from fedforget.config import ConfigError

    for key in ("shadows", "lira_online", "lira_fixed_variance"):
        with pytest.raises(ConfigError, match=rf"{key}: unknown key \(not a registered attack\)"):
            memorising(oracle={"attack": "lira", key: 3})


def test_fr_nan_warning_when_nothing_is_flagged_before():
    """B_T = 0: FR is NaN and the audit records one warning for the events log."""
    from fedforget.data import build_federated_data
    from fedforget.oracle.audit import MembershipAudit, _Watch
    from fedforget.oracle.metrics import forgetting_rate
    from fedforget.oracle.oracle import OracleReport

    fd = build_federated_data(
        dict(dataset="digits", partitioner="iid", num_clients=3, holdout_fraction=0.2, test_fraction=0.2), seed=0
    )

    class NothingFlaggedBefore:  # an oracle whose calibration flagged no member
        def evaluate_stats(self, member_stats, nonmember_stats):
            before = np.zeros(5, bool)
            after = np.array([1, 0, 0, 0, 0], bool)
            m = forgetting_rate(before, after)
            per = {k: np.zeros(10) for k in ("sample_id", "score")}
            per.update(member=np.r_[np.ones(5, bool), np.zeros(5, bool)], decision=np.zeros(10, bool))
            return OracleReport({**m, "mia_auc": 0.5}, per, (np.zeros(2), np.zeros(2)))

    audit = MembershipAudit(fd=fd, seed=0, n_boot=10)
    target = audit.add(0, 2, True, fd.train_ids[0])
    w = _Watch(target, NothingFlaggedBefore())
    no_stats = lambda ids: None  # noqa: E731 (the fake oracle reads none)
    rows = audit._rows_for(w, "none", 2, None, False, no_stats) + audit._rows_for(w, "none", 3, None, False, no_stats)
    fr = [v for *_, m, v in rows if m == "fr"]
    assert all(np.isnan(v) for v in fr) and [v for *_, m, v in rows if m == "b_t"][0] == 0
    assert len(audit.warnings) == 1 and "B_T = 0" in audit.warnings[0]


def test_population_attack_in_a_run(tmp_path):
    sc = memorising(oracle={"attack": "population", "n_boot": 20, "controls": 0}, unlearning={"methods": ["none"], "recovery_rounds": 0})
    df = fedforget.run(sc, out=tmp_path / "pop").metrics
    auc = df[(df.metric == "mia_auc") & (df.client == 1)].set_index(["arm", "round"]).value
    assert auc[("original", 3)] > 0.65 and auc[("retrain", 5)] < auc[("original", 5)] - 0.1


def test_lira_in_masks_are_balanced():
    from fedforget.oracle.attacks import lira_in_masks

    m = lira_in_masks(200, 4, seed=0)
    assert m.shape == (4, 200) and (m.sum(axis=0) == 2).all()
    assert not (m == m[0]).all()  # different halves per shadow


def test_witness_is_audited_against_witness_nonmembers(tmp_path):
    """Planted members vs planted non-members: a model that never saw the client
    (retrain) sits near 0.5 on the witness and client-wide; original does not."""
    sc = memorising(
        data={"dataset": "synthetic", "num_clients": 4, "holdout_fraction": 0.4,
              "synthetic": {"samples": 800, "features": 100, "informative": 20, "classes": 10}},
        events=[{"round": 4, "client": 1, "witness": "canary", "witness_fraction": 0.3}],
        unlearning={"methods": ["none"], "recovery_rounds": 0}, oracle={"n_boot": 20, "controls": 0},
    )
    res = fedforget.run(sc, out=tmp_path / "w")
    df = res.metrics[res.metrics.client == 1].pivot_table(index=["arm", "round"], columns="metric", values="value")
    from fedforget.data import federated_data_for

    fd = federated_data_for(sc)
    n_m, n_n = len(fd.witness_ids[1]), len(fd.witness_audit_ids[1])
    se = np.sqrt((n_m + n_n + 1) / (12 * n_m * n_n))  # AUC standard error under the null
    for rnd in (3.5, 5.0):
        assert abs(df.loc[("retrain", rnd), "witness_mia_auc"] - 0.5) < 4 * se, rnd
        assert abs(df.loc[("retrain", rnd), "mia_auc"] - 0.5) < 0.1, rnd
    # the canaries are memorised (one-sided, p < 0.002 under the null)
    assert df.loc[("original", 3.0), "witness_mia_auc"] > 0.5 + 3 * se
    # client-wide members leave the planted samples out (like against like)
    assert df.loc[("original", 3.0), "n_forget"] == len(fd.train_ids[1]) - n_m


def test_over_unlearning_flag_on_constructed_runs():
    from fedforget.oracle.audit import over_unlearning_rows

    def rows(arm, auc, auc_lo, acc, n=2000):
        return [(arm, 5.0, 1, "mia_auc", auc), (arm, 5.0, 1, "mia_auc_lo", auc_lo), (arm, 5.0, 1, "forget_accuracy", acc),
                (arm, 5.0, 1, "n_forget", n)]

    # The accuracy margin is the 95% interval of the difference: on 2,000 samples
    # at 0.30 vs 0.27, 1.96 * sqrt((.3 * .7 + .27 * .73) / 2000) = 0.028 < 0.03.
    base = rows("retrain", 0.50, 0.46, 0.30)
    cases = {
        "below_retrain_interval": (rows("m", 0.40, 0.36, 0.30), 1.0),
        "inside_retrain_interval": (rows("m", 0.47, 0.43, 0.30), 0.0),
        "forget_acc_too_low": (rows("m", 0.50, 0.46, 0.27), 1.0),
        "forget_acc_within_margin": (rows("m", 0.50, 0.46, 0.285), 0.0),
        "same_gap_on_few_samples_is_noise": (rows("m", 0.50, 0.46, 0.27, n=200), 0.0),
        "remembers_more": (rows("m", 0.70, 0.66, 0.60), 0.0),
    }
    for name, (mine, expected) in cases.items():
        df = pd.DataFrame(base + mine, columns=["arm", "round", "client", "metric", "value"])
        out = over_unlearning_rows(df, ["m"], [1])
        assert out == [("m", 5.0, 1, "over_unlearning", expected)], name


def test_audit_nonmembers_are_distinct_samples_with_the_members_histogram():
    """A pool smaller than min_nonmembers (the shipped withdrawal config's shape)
    used to be topped up with repeats; now no sample id appears twice, and the
    count the oracle reports is the unique count."""
    from fedforget.data import build_federated_data
    from fedforget.oracle.audit import MembershipAudit

    fd = build_federated_data(dict(dataset="synthetic", partitioner="dirichlet", alpha=0.3, num_clients=5,
                                   holdout_fraction=0.2, test_fraction=0.2,
                                   synthetic={"samples": 2000, "features": 20, "informative": 10, "classes": 20}),
                              seed=0)
    audit = MembershipAudit(fd=fd, seed=0, n_boot=10, min_nonmembers=1000)
    for client in range(5):
        t = audit.add(client, 3, True, fd.train_ids[client])
        assert np.unique(t.nonmembers).size == t.nonmembers.size > 0
        assert not np.isin(t.nonmembers, np.concatenate(fd.train_ids)).any()
        share = np.bincount(fd.y[t.nonmembers], minlength=20) / t.nonmembers.size
        member_share = np.bincount(fd.y[t.members], minlength=20) / t.members.size
        assert np.abs(share - member_share).max() < 0.02 + 1 / t.nonmembers.size


def test_tpr_at_1pct_is_withheld_with_999_unique_nonmembers():
    from fedforget.oracle.metrics import roc_metrics, withheld_tpr_notes

    rng = np.random.default_rng(0)
    for n_non, withheld in ((999, True), (1000, False)):
        scores = np.r_[rng.normal(1, 1, 200), rng.normal(0, 1, n_non)]
        roc = roc_metrics(scores, np.r_[np.ones(200, bool), np.zeros(n_non, bool)])
        assert np.isnan(roc["tpr_at_1pct_fpr"]) == withheld
        assert any(n.startswith("tpr_at_1pct_fpr") for n in withheld_tpr_notes(n_non)) == withheld


def test_relapse_rows_on_constructed_runs():
    """relapse_auc/_z: the gap to retrain at the last round minus the gap right
    after the step; the flag: not detected after the step, detected later."""
    from fedforget.oracle.audit import relapse_rows

    def arm(name, auc, z, p):  # values at labels 9.5, 10, 12
        return [(name, r, 2, k, v[i]) for i, r in enumerate((9.5, 10.0, 12.0))
                for k, v in (("mia_auc", auc), ("client_mia_z", z), ("client_mia_pvalue", p))]

    base = arm("retrain", (0.505, 0.50, 0.507), (0.1, 0.0, 0.2), (0.45, 0.5, 0.42))
    relapsing = arm("m", (0.516, 0.53, 0.553), (0.6, 1.5, 3.5), (0.27, 0.06, 0.0005))
    steady = arm("s", (0.51, 0.51, 0.512), (0.3, 0.2, 0.4), (0.38, 0.4, 0.35))
    df = pd.DataFrame(base + relapsing + steady, columns=["arm", "round", "client", "metric", "value"])
    out = {(a, k): v for a, r, c, k, v in relapse_rows(df, ["m", "s"], {2: 10})}
    assert out[("m", "relapse_auc")] == pytest.approx((0.553 - 0.507) - (0.516 - 0.505))
    assert out[("m", "relapse_z")] == pytest.approx((3.5 - 0.2) - (0.6 - 0.1))
    assert out[("m", "relapse_flag")] == 1.0 and out[("s", "relapse_flag")] == 0.0
    assert out[("s", "relapse_auc")] == pytest.approx((0.512 - 0.507) - (0.51 - 0.505))
    assert all(r == 12.0 for _, r, *_ in relapse_rows(df, ["m"], {2: 10}))
