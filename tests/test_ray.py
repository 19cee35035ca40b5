"""End to end on Ray: one Flower Simulation Runtime for the whole module.

Ray and Flower take ~17 s to start on a 2-core machine, so every scenario this
module needs runs in one ``run_many`` call (one runtime), and the tests inspect
the resulting run directories.
"""

import numpy as np
import pytest

import fedforget
from fedforget.config import with_overrides
from fedforget.results import read_events

pytestmark = pytest.mark.ray


@pytest.fixture(scope="module")
def ray_runs(tmp_path_factory):
    from tests.conftest import tiny

    root = tmp_path_factory.mktemp("ray")
    scenarios = {
        "plain": tiny(),
        "withdrawal": tiny(
            train={"rounds": 4},
            events=[{"round": 2, "client": 1}],
            unlearning={"methods": ["none", "perturb"], "recovery_rounds": 1},
        ),
        "deletion": tiny(
            train={"rounds": 3},
            events=[{"round": 2, "client": 2, "kind": "delete_class", "label": 3}],
            unlearning={"methods": ["fnn", "pga"], "recovery_rounds": 0},
            oracle={"n_boot": 20},
        ),
    }
    names = list(scenarios)
    outs = [root / n for n in names]
    results = fedforget.run_many([scenarios[n] for n in names], outs, engine="ray")
    return dict(zip(names, results)), scenarios


def test_ray_run_completes_and_learns(ray_runs):
    results, _ = ray_runs
    res = results["plain"]
    assert (res.run_dir / "metrics.parquet").is_file()
    assert res.final() > 0.5


@pytest.mark.parametrize("name", ["plain", "withdrawal", "deletion"])
def test_ray_and_inline_give_identical_metrics(ray_runs, tmp_path, name):
    results, scenarios = ray_runs
    inline = fedforget.run(with_overrides(scenarios[name], ["runtime.engine=inline"]), out=tmp_path / "inline")
    ray_df = results[name].metrics.sort_values(["arm", "round", "client", "metric"]).reset_index(drop=True)
    in_df = inline.metrics.sort_values(["arm", "round", "client", "metric"]).reset_index(drop=True)
    # wall-clock times (and speed-ups in wall time) are measurements, not results
    timed = ray_df.metric.isin(["cost_wall_s", "speedup_wall", "retrain_wall_s_to_event", "retrain_wall_s_to_end"])
    assert ray_df[~timed].drop(columns="value").equals(in_df[~timed].drop(columns="value"))
    # bit-identical; NaN (e.g. a TPR withheld for too few non-members) equals NaN
    np.testing.assert_array_equal(ray_df[~timed].value.to_numpy(), in_df[~timed].value.to_numpy())
    assert timed.any() == (name != "plain")


def test_ray_withdrawn_client_gets_no_training_message(ray_runs):
    results, _ = ray_runs
    msgs = [e for e in read_events(results["withdrawal"].run_dir) if e["event"] == "message"]
    train = [m for m in msgs if m["type"] == "train"]
    assert not [m for m in train if m["client"] == 1 and m["arm"] != "original" and (m["arm"] == "retrain" or not m["round"].isdigit() or int(m["round"]) >= 2)]
    assert [m for m in train if m["client"] == 1 and m["arm"] == "original" and m["round"] == "4"]
