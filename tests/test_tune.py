"""simulations/tune.py: equal budgets, the declared selection rule, tuning
scenarios disjoint from the reported ones, and a tiny end-to-end run."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from fedforget import registry
from tests.simulation_scripts import load_simulation

tune = load_simulation("tune")
TUNABLE = [m for m in tune.methods() if registry.methods.get(m).search_space]


def test_every_built_in_method_declares_a_space_and_none_has_nothing_to_tune():
    assert {"forsaken", "perturb", "fnn", "federaser", "pga"} <= set(TUNABLE)
    assert registry.methods.get("none").search_space == {}
    assert tune.settings("none", 8) == [{}]
    for m in TUNABLE:
        params = registry.methods.get(m).Params
        assert set(registry.methods.get(m).search_space) <= set(params.model_fields), m
        for p in tune.grid(m):  # every grid point is a valid parameter table
            params.model_validate(p)


@pytest.mark.parametrize("budget", [2, 5, 8])
def test_settings_are_k_distinct_deterministic_and_include_the_defaults(budget):
    for m in TUNABLE:
        s = tune.settings(m, budget)
        assert len(s) == budget, m
        assert s[0] == tune.defaults_of(m), m
        assert len({json.dumps(p, sort_keys=True) for p in s}) == budget, m
        assert s == tune.settings(m, budget), m
        assert all(p in tune.grid(m) for p in s[1:]), m


def test_a_grid_smaller_than_the_budget_is_an_error_naming_the_method(monkeypatch):
    cls = registry.methods.get("perturb")
    monkeypatch.setattr(cls, "search_space", {"beta": [0.0, 0.05, 0.1]})
    with pytest.raises(ValueError, match="perturb"):
        tune.settings("perturb", 4)
    assert len(tune.settings("perturb", 3)) == 3


def _row(method, setting, scenario, seed, d_auc, d_fr=0.0, d_test=0.0, cost=0.01, signal=True, default=False):
    return {"method": method, "setting": setting, "params": json.dumps({"x": setting}), "is_default": default,
            "scenario": scenario, "seed": seed, "signal": signal, "calibration_auc": 0.8 if signal else 0.5,
            "d_auc": d_auc, "d_fr": d_fr, "d_test_acc": d_test, "cost_ratio": cost, "error": ""}


def _table():
    rows = []
    for sc in ("a", "b"):
        for seed in (1, 2, 3):
            j = 0.001 * seed
            rows += [
                _row("m", "s0", sc, seed, 0.10 + j, default=True),  # eligible, worse gap
                _row("m", "s1", sc, seed, 0.01 + j, d_test=-0.10 - j),  # best gap, loses accuracy
                _row("m", "s2", sc, seed, 0.00 + j, cost=0.5),  # best gap, too costly
                _row("m", "s3", sc, seed, -0.04 - j, d_fr=0.2),  # |gap| 0.042: ties s4 at 3 decimals, worse FR
                _row("m", "s4", sc, seed, 0.04 + j, d_fr=0.01, d_test=-0.03 + 0.02 * (seed - 2)),  # noisy acc, ok
                _row("m", "s5", sc, seed, 0.30 + j, signal=False),  # no-signal pairs do not count in the gap
            ]
    return pd.DataFrame(rows)


def test_the_rule_picks_the_smallest_gap_within_the_accuracy_and_cost_bounds():
    s = tune.choose(tune.summarise(_table())).set_index("setting")
    assert not s.loc["s1", "acc_ok"] and s.loc["s1", "cost_ok"] and not s.loc["s1", "eligible"]
    assert s.loc["s2", "acc_ok"] and not s.loc["s2", "cost_ok"] and not s.loc["s2", "eligible"]
    assert s.loc["s4", "acc_ok"]  # mean −0.03 but its interval reaches −0.02: within noise
    assert s.loc["s3", "eligible"] and s.loc["s4", "eligible"]
    assert s.loc["s3", "abs_auc"] == pytest.approx(s.loc["s4", "abs_auc"])
    assert s.chosen.sum() == 1 and s.loc["s4", "chosen"] and s.loc["s4", "choice"] == "eligible"  # FR breaks the tie
    assert s.loc["s5", "pairs_with_signal"] == 0 and not s.loc["s5", "eligible"]
    assert tune.chosen_settings(_table())["m"] == ({"x": "s4"}, "eligible", False)


def test_the_rule_falls_back_flagged_when_nothing_is_eligible():
    df = _table()
    df = df[df.setting.isin(["s1", "s2"])]
    s = tune.choose(tune.summarise(df)).set_index("setting")
    assert s.loc["s2", "chosen"] and s.loc["s2", "choice"] == "fallback: accuracy bound only"
    df.loc[df.setting == "s2", "error"] = "ValueError: boom"
    s = tune.choose(tune.summarise(df)).set_index("setting")
    assert s.loc["s1", "chosen"] and s.loc["s1", "choice"] == "fallback: best objective"


def test_relapse_counts_in_the_objective_and_detection_bounds_eligibility():
    """A setting that matches retrain at the step but relapses loses to one
    with a small gap at both points; one detected by the client-level test
    more often than retrain is not eligible."""
    rows = []
    for seed in (1, 2, 3):
        for setting, d_auc, d_auc_r, detected in (("relapses", 0.0, 0.12, False), ("steady", 0.03, 0.03, False),
                                                   ("detected", 0.0, 0.0, seed == 1)):
            r = _row("m", setting, "a", seed, d_auc)
            rows.append({**r, "d_auc_r": d_auc_r, "relapse_auc": d_auc_r - d_auc, "detected": detected,
                         "retrain_detected": False})
    s = tune.choose(tune.summarise(pd.DataFrame(rows))).set_index("setting")
    assert s.loc["relapses", "abs_auc"] == pytest.approx(0.06) and s.loc["steady", "abs_auc"] == pytest.approx(0.03)
    assert s.loc["relapses", "relapse_auc"] == pytest.approx(0.12)
    assert not s.loc["detected", "detection_ok"] and not s.loc["detected", "eligible"]
    assert s.loc["steady", "chosen"] and s.loc["steady", "choice"] == "eligible"


def test_tuning_scenarios_share_no_dataset_family_partitioner_or_model_with_a_reported_one():
    reported = [tune.triple(sc) for sc in tune.report_scenarios(1).values()]
    assert {r[0] for r in reported} == {"synthetic", "mnist5k"}  # the configs as they are today
    for name, sc in ((k[0], v) for k, v in tune.tune_scenarios(1).items()):
        fam, part, model = tune.triple(sc)
        assert fam not in {r[0] for r in reported}, name
        assert part not in {r[1] for r in reported}, name
        assert model not in {r[2] for r in reported}, name
    assert len(tune.TUNE) >= 3
    tune.check_disjoint()


def test_check_disjoint_refuses_a_clashing_tuning_scenario(monkeypatch):
    clash = {**next(iter(tune.TUNE.values())), "model": {"name": "mlp", "hidden": [32]}}
    monkeypatch.setitem(tune.TUNE, "clash", clash)
    with pytest.raises(ValueError, match="clash.*model 'mlp'"):
        tune.check_disjoint()


def test_a_tiny_end_to_end_tuning_run(monkeypatch):
    tiny = {"name": "tune-tiny", "seed": 5,
            "data": {"dataset": "digits", "partitioner": "shard", "shards_per_client": 2, "num_clients": 4,
                     "holdout_fraction": 0.4, "test_fraction": 0.5},
            "model": {"name": "lenet"}, "train": {"rounds": 3, "local_epochs": 1, "lr": 0.05},
            "events": [{"round": 3, "client": 1}]}
    monkeypatch.setattr(tune, "TUNE", {"tiny": tiny})
    df = tune.tune(budget=2, seeds=1, log=lambda *_: None)
    assert set(tune.methods()) == {"forsaken", "perturb", "fnn", "federaser", "pga", "none"}
    assert len(df) == 2 * len(TUNABLE) + 1 and (df.error == "").all(), df.error.unique()
    assert df.groupby("method").size().to_dict() == {m: (2 if m in TUNABLE else 1) for m in tune.methods()}
    s = tune.choose(tune.summarise(df))
    # One choice per method where the scenario has signal; none where it has not (no objective to minimise).
    assert s.groupby("method").chosen.sum().eq(int(df.signal.iloc[0])).all()
    text = tune.summary_markdown(df)
    assert "Chosen settings" in text and "nothing to tune" in text
    # Every setting is judged again after the recovery rounds, with the client-level test at both points.
    for col in ("auc_r", "d_auc_r", "relapse_auc", "client_p", "client_p_r", "detected", "retrain_detected"):
        assert df[col].notna().all(), col
    assert np.allclose(df.relapse_auc, df.d_auc_r - df.d_auc)
