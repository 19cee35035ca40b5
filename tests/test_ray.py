"""End to end on Ray: one Flower Simulation Runtime for the whole module.

Ray and Flower take ~17 s to start on a 2-core machine, so every scenario this
module needs runs in one ``run_many`` call (one runtime), and the tests inspect
the resulting run directories.
"""

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
        "failures": tiny(
            train={"rounds": 4}, events=[{"round": 3, "client": 2}],
            unlearning={"methods": ["none"], "recovery_rounds": 0}, runtime={"client_failure_rate": 0.3},
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


@pytest.mark.parametrize("name", ["plain", "withdrawal", "deletion", "failures"])
def test_ray_and_inline_give_identical_metrics(ray_runs, tmp_path, name):
    from tests.conftest import assert_same_metrics

    results, scenarios = ray_runs
    inline = fedforget.run(with_overrides(scenarios[name], ["runtime.engine=inline"]), out=tmp_path / "inline")
    has_timed = assert_same_metrics(results[name].metrics, inline.metrics)
    assert has_timed == (name != "plain")
    if name == "failures":  # failures were drawn, recorded and matched
        assert (results[name].metrics.query("metric == 'failed_clients'").value > 0).any()


def test_ray_withdrawn_client_gets_no_training_message(ray_runs):
    results, _ = ray_runs
    msgs = [e for e in read_events(results["withdrawal"].run_dir) if e["event"] == "message"]
    train = [m for m in msgs if m["type"] == "train"]
    assert not [m for m in train if m["client"] == 1 and m["arm"] != "original" and (m["arm"] == "retrain" or m["tag"] or m["round"] >= 2)]
    assert [m for m in train if m["client"] == 1 and m["arm"] == "original" and m["round"] == 4]


def test_one_thousand_clients_start_and_run_a_round_on_flowers_runtime(tmp_path):
    """Every one of 1,000 virtual SuperNodes registers before discovery (the
    race that once failed with 858 of 1,000)."""
    from tests.conftest import thousand_clients

    res = fedforget.run(thousand_clients(), out=tmp_path / "k", engine="ray")
    trained = [e for e in read_events(res.run_dir) if e["event"] == "message" and e["type"] == "train"]
    assert len(trained) == 10 and res.final() > 0
