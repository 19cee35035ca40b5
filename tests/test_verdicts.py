"""Paired verdicts against retrain (fedforget.analysis.verdicts), the analysis
API's verdict tables, and the one "signal" threshold."""

from __future__ import annotations

import ast
import math
import os
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy import stats

os.environ["FLWR_TELEMETRY_ENABLED"] = "0"

import fedforget  # noqa: E402
from fedforget.analysis import stats as fstats  # noqa: E402
from fedforget.analysis.tables import METRICS  # noqa: E402
from fedforget.analysis.verdicts import (  # noqa: E402
    ONE_SEED,
    VERDICT_MARGINS,
    PairedVerdict,
    paired_verdict,
    seeds_to_decide,
)
from tests.test_report import RELAPSE_AUC, make_fake_run, metric_value  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent


def t_half(sd: float, n: int) -> float:
    """Half-width of the 95% t-interval, computed here independently of the module."""
    return float(stats.t.ppf(0.975, n - 1) * sd / math.sqrt(n))


def with_moments(mean: float, sd: float, n: int) -> np.ndarray:
    """n values with exactly this mean and sample standard deviation."""
    z = np.linspace(-1.0, 1.0, n)
    z = (z - z.mean()) / z.std(ddof=1)
    return mean + sd * z


# ------------------------------------------------------------- paired_verdict


def test_equivalent_when_the_interval_lies_inside_the_margin():
    diffs = [0.001, -0.002, 0.003, 0.0, -0.001]
    v = paired_verdict(diffs, "mia_auc")
    x = np.asarray(diffs)
    half = t_half(x.std(ddof=1), x.size)
    assert v.verdict == "equivalent" and v.n == 5 and v.margin == VERDICT_MARGINS["mia_auc"] == 0.02
    assert v.mean == pytest.approx(x.mean()) and v.lo == pytest.approx(x.mean() - half)
    assert v.hi == pytest.approx(x.mean() + half)
    assert math.isnan(v.seeds_to_decide)
    assert v.text() == f"{x.mean():+.3f} ± {half:.3f}, equivalent"


@pytest.mark.parametrize("metric, diffs, verdict", [
    # higher is worse: the method remembers more of the client than retrain
    ("mia_auc", [0.05, 0.06, 0.055], "worse"),
    ("mia_auc", [-0.05, -0.06, -0.055], "better"),
    ("client_mia_z", [2.0, 2.5, 2.2], "worse"),
    ("forget_accuracy", [0.05, 0.06, 0.055], "worse"),
    # lower is worse: less forgotten, or a worse model for the federation
    ("fr", [-0.2, -0.25, -0.22], "worse"),
    ("fr", [0.2, 0.25, 0.22], "better"),
    ("fr_fixed_fpr", [-0.2, -0.25, -0.22], "worse"),
    ("test_accuracy", [-0.05, -0.06, -0.055], "worse"),
    ("test_accuracy", [0.05, 0.06, 0.055], "better"),
    # relapse: the gap to retrain grew after the step, judged on the base metric's margin
    ("relapse_auc", [0.05, 0.06, 0.055], "worse"),
    ("relapse_z", [-2.0, -2.5, -2.2], "better"),
])
def test_worse_and_better_sides_per_metric(metric, diffs, verdict):
    v = paired_verdict(diffs, metric)
    assert v.verdict == verdict and math.isnan(v.seeds_to_decide)


def test_the_issues_examples():
    """Forsaken on withdrawal.toml, 3 seeds: AUC gap +0.028 ± 0.019 is worse (the
    interval clears 0 and leaves the ±0.02 band); FR gap −0.055 ± 0.091 is undecided."""
    q = float(stats.t.ppf(0.975, 2)) / math.sqrt(3)
    auc = paired_verdict(with_moments(0.028, 0.019 / q, 3), "mia_auc")
    assert auc.text() == "+0.028 ± 0.019, worse"
    fr = paired_verdict(with_moments(-0.055, 0.091 / q, 3), "fr")
    assert fr.gap_text() == "-0.055 ± 0.091" and fr.verdict == "undecided"


def test_a_real_but_negligible_gap_is_equivalent():
    v = paired_verdict([0.010, 0.011, 0.012, 0.010], "mia_auc")  # clears 0, inside ±0.02
    assert v.lo > 0 and v.verdict == "equivalent"


@pytest.mark.parametrize("mean, sd, n", [(0.028, 0.03, 3), (0.01, 0.02, 3), (-0.035, 0.06, 4), (0.3, 0.6, 2)])
def test_undecided_names_the_smallest_number_of_seeds_that_decides(mean, sd, n):
    metric = "mia_auc" if abs(mean) < 0.1 else "client_mia_z"
    margin = VERDICT_MARGINS[metric]
    v = paired_verdict(with_moments(mean, sd, n), metric)
    assert v.verdict == "undecided"
    need = int(v.seeds_to_decide)
    # at that many seeds and the same spread the verdict is decided; one fewer is not
    decided = paired_verdict(with_moments(mean, sd, need), metric)
    assert decided.verdict in ("equivalent", "better" if mean < 0 else "worse")
    assert need - 1 <= n or paired_verdict(with_moments(mean, sd, need - 1), metric).verdict == "undecided"
    room = max(abs(mean), margin - abs(mean))
    assert t_half(sd, need) <= room < t_half(sd, need - 1) or need - 1 <= n
    assert v.verdict_text() == f"undecided ({need} seeds would decide it at this spread)"


def test_a_zero_mean_against_a_zero_margin_is_never_decided():
    assert seeds_to_decide(0.0, 1.0, 0.0) == math.inf
    assert seeds_to_decide(0.0, 1.0, 0.5) < math.inf  # fits the band eventually


def test_one_seed_has_no_interval():
    v = paired_verdict([0.1], "mia_auc")
    assert v.verdict == ONE_SEED == "one seed, no interval" and v.n == 1
    assert v.mean == pytest.approx(0.1) and math.isnan(v.lo) and math.isnan(v.hi)
    assert v.text() == "+0.100, one seed, no interval"
    assert paired_verdict([0.1, float("nan")], "fr").verdict == ONE_SEED  # one finite pair


def test_nan_and_infinite_differences_are_left_out():
    clean = paired_verdict([0.05, 0.06, 0.055], "mia_auc")
    dirty = paired_verdict([np.nan, 0.05, np.inf, 0.06, -np.inf, 0.055], "mia_auc")
    assert dirty == clean
    none = paired_verdict([np.nan, np.nan], "mia_auc")
    assert none.n == 0 and none.verdict == "n/a" and none.text() == "n/a" and math.isnan(none.mean)
    with pytest.raises(KeyError):
        paired_verdict([0.1, 0.2], "retain_accuracy")  # no margin declared: no verdict


def test_verdicts_are_frozen():
    v = paired_verdict([0.1, 0.2], "mia_auc")
    assert isinstance(v, PairedVerdict)
    with pytest.raises(AttributeError):
        v.verdict = "equivalent"  # type: ignore[misc]


# ------------------------------------------------------------------ the API


def seeds_dir(tmp_path: Path, n: int = 3, **kw) -> Path:
    root = tmp_path / "multi"
    for s in range(n):
        make_fake_run(root / f"seed-{s}", seed=s, client_test=True, **kw)
    return root


def test_results_verdicts_pair_each_seed_with_its_retrain(tmp_path):
    root = seeds_dir(tmp_path)
    res = fedforget.load(root)
    table = res.verdicts("event")
    assert list(table.columns) == ["arm", "client", "metric", "at", "n_seeds", "mean", "lo", "hi", "margin",
                                   "verdict", "seeds_to_decide"]
    assert set(table.arm) == {"forsaken", "pga", "none"} and set(table.client) == {2}
    assert list(table[table.arm == "forsaken"].metric) == list(VERDICT_MARGINS)
    for at, rnd in (("event", 3.5), ("final", 6.0)):
        table = res.verdicts(at).set_index(["arm", "metric"])
        for metric in VERDICT_MARGINS:
            client = None if metric == "test_accuracy" else 2  # test accuracy: the global rows
            diffs = [metric_value(root / f"seed-{s}", "pga", rnd, client, metric)
                     - metric_value(root / f"seed-{s}", "retrain", rnd, client, metric) for s in range(3)]
            want = paired_verdict(diffs, metric)
            row = table.loc[("pga", metric)]
            assert row["at"] == at and row.n_seeds == 3 and row.margin == VERDICT_MARGINS[metric]
            assert (row["mean"], row.lo, row.hi) == pytest.approx((want.mean, want.lo, want.hi)), (at, metric)
            assert row.verdict == want.verdict
    with pytest.raises(ValueError, match="at must be"):
        res.verdicts("middle")


def test_a_shift_common_to_both_arms_of_a_seed_changes_no_verdict(tmp_path):
    """Pairing: what a seed does to both arms alike (its data, its init) cancels."""
    root = seeds_dir(tmp_path)
    before = fedforget.load(root).verdicts("final")
    for s, shift in enumerate((-0.15, 0.0, 0.2)):
        path = root / f"seed-{s}" / "metrics.parquet"
        df = pd.read_parquet(path)
        df.loc[(df.metric == "mia_auc") & (df["round"] > 3), "value"] += shift  # after calibration
        df.to_parquet(path, index=False)
    after = fedforget.load(root).verdicts("final")
    pd.testing.assert_frame_equal(before, after, check_exact=False, rtol=1e-9)
    # an unpaired comparison of the means' intervals would now overlap everywhere
    auc = after[(after.arm == "forsaken") & (after.metric == "mia_auc")].iloc[0]
    assert auc.hi - auc.lo < 0.1


def test_fr_verdicts_leave_out_seeds_without_signal(tmp_path):
    root = seeds_dir(tmp_path)
    path = root / "seed-0" / "metrics.parquet"
    df = pd.read_parquet(path)
    cal = (df.arm == "original") & (df["round"] == 3) & (df.client == 2) & (df.metric == "mia_auc")
    df.loc[cal, "value"] = fstats.SIGNAL_AUC - 0.1
    df.to_parquet(path, index=False)
    table = fedforget.load(root).verdicts("final").set_index(["arm", "metric"])
    assert table.loc[("pga", "fr"), "n_seeds"] == table.loc[("pga", "fr_fixed_fpr"), "n_seeds"] == 2
    assert table.loc[("pga", "mia_auc"), "n_seeds"] == 3
    for s in (1, 2):
        path = root / f"seed-{s}" / "metrics.parquet"
        df = pd.read_parquet(path)
        df.loc[(df.arm == "original") & (df["round"] == 3) & (df.client == 2) & (df.metric == "mia_auc"), "value"] = 0.5
        df.to_parquet(path, index=False)
    table = fedforget.load(root).verdicts("event").set_index(["arm", "metric"])
    assert table.loc[("pga", "fr"), "n_seeds"] == 0 and table.loc[("pga", "fr"), "verdict"] == "no signal"
    assert table.loc[("pga", "mia_auc"), "verdict"] != "no signal"


def test_one_run_gives_one_seed_verdicts_and_relapse_is_read_back(tmp_path):
    run = make_fake_run(tmp_path / "run", client_test=True, relapse="forsaken")
    table = fedforget.load(run).verdicts("final")
    assert (table.verdict == ONE_SEED).all() and (table.n_seeds == 1).all()
    root = seeds_dir(tmp_path, relapse="forsaken")
    relapse = fedforget.load(root).relapse().set_index(["arm", "metric"])
    values = [metric_value(root / f"seed-{s}", "forsaken", 6.0, 2, "relapse_auc") for s in range(3)]
    row = relapse.loc[("forsaken", "relapse_auc")]
    assert row["mean"] == pytest.approx(np.mean(values)) and row["mean"] == pytest.approx(RELAPSE_AUC, abs=0.02)
    assert row.verdict == "worse" and row.margin == VERDICT_MARGINS["mia_auc"]
    assert relapse.loc[("pga", "relapse_auc"), "verdict"] != "worse"


def test_the_data_dictionary_documents_the_new_metrics():
    for name in ("client_mia_mde", "witness_mia_auc_lo", "witness_mia_auc_hi", "relapse_auc", "relapse_z",
                 "relapse_flag"):
        assert name in METRICS, name
    assert "95% interval of the difference" in METRICS["over_unlearning"]
    assert "80% of the time" in METRICS["client_mia_mde"]


# ------------------------------------------------------- one signal threshold


def test_one_signal_threshold_declared_once_and_imported():
    assert fstats.SIGNAL_AUC == 0.65
    declared = []
    for path in [*(ROOT / "fedforget").rglob("*.py"), *(ROOT / "simulations").rglob("*.py")]:
        if re.search(r"^\s*SIGNAL_AUC\s*[:=]", path.read_text(), re.MULTILINE):
            declared.append(path.relative_to(ROOT).as_posix())
    assert declared == ["fedforget/analysis/stats.py"]
    tree = ast.parse((ROOT / "simulations" / "forsaken_sweep.py").read_text())
    imports = [(n.module, a.name) for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) for a in n.names]
    assert ("fedforget.analysis.stats", "SIGNAL_AUC") in imports
    from fedforget.analysis import runs
    from fedforget.report import run as report_run

    assert runs.SIGNAL_AUC is report_run.SIGNAL_AUC is fstats.SIGNAL_AUC
