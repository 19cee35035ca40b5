import os

os.environ["FLWR_TELEMETRY_ENABLED"] = "0"
os.environ["MLFLOW_DISABLE_TELEMETRY"] = "true"  # the tracker tests run offline
os.environ.setdefault("RAY_DEDUP_LOGS", "0")

import pytest  # noqa: E402

from fedforget.config import scenario_from_dict  # noqa: E402

#: Set by .ci/run: a test whose tool (a browser, a notebook kernel, the ray
#: command line) is missing fails instead of skipping, so CI runs them all.
REQUIRE_ALL = os.environ.get("FEDFORGET_REQUIRE_ALL_TOOLS") == "1"

#: Modules of the full tier only (`-m "not slow"` leaves them out): Ray end to
#: end, kill -9, the cluster, the notebook kernel, sweeps and trackers.
SLOW_MODULES = {"test_ray", "test_actors", "test_flwr_run", "test_ray_cluster", "test_resume", "test_progress",
                "test_sweep", "test_tracking"}


def require_tool(available: bool, what: str) -> None:
    """Skip with ``what`` as the reason when a tool is missing; fail under
    FEDFORGET_REQUIRE_ALL_TOOLS=1 (CI)."""
    if available:
        return
    if REQUIRE_ALL:
        pytest.fail(f"{what} (FEDFORGET_REQUIRE_ALL_TOOLS=1 requires it)")
    pytest.skip(what)


def pytest_collection_modifyitems(config, items):
    for item in items:
        if item.module.__name__.rsplit(".", 1)[-1] in SLOW_MODULES or item.get_closest_marker("ray"):
            item.add_marker(pytest.mark.slow)


def tiny(**sections):
    """A 4-client digits scenario that runs in about a second inline.

    Keyword arguments replace or extend top-level sections.
    """
    base = {
        "name": "tiny",
        "seed": 3,
        "data": {"dataset": "digits", "num_clients": 4, "partitioner": "iid"},
        "model": {"name": "mlp", "hidden": [32]},
        "train": {"rounds": 3, "lr": 0.3, "local_epochs": 2},
        "runtime": {"engine": "inline"},
    }
    for k, v in sections.items():
        if isinstance(v, dict) and isinstance(base.get(k), dict):
            base[k] = {**base[k], **v}
        else:
            base[k] = v
    return scenario_from_dict(base)


def thousand_clients():
    """1,000 clients on small synthetic data, one round of 1% participation."""
    return tiny(
        data={"dataset": "synthetic", "num_clients": 1000, "holdout_fraction": 0.0,
              "synthetic": {"samples": 4000, "features": 20, "informative": 5, "classes": 4}},
        model={"name": "logreg", "hidden": []},
        train={"rounds": 1, "fraction": 0.01, "local_epochs": 1},
    )


TIMED_METRICS = ["cost_wall_s", "speedup_wall", "retrain_wall_s_to_event", "retrain_wall_s_to_end"]


def assert_same_metrics(a, b) -> bool:
    """Two runs' metrics are bit-identical except wall-clock measurements
    (NaN equals NaN); returns whether any timed metric was present."""
    import numpy as np

    keys = ["arm", "round", "client", "metric"]
    a = a.sort_values(keys).reset_index(drop=True)
    b = b.sort_values(keys).reset_index(drop=True)
    timed = a.metric.isin(TIMED_METRICS)
    assert a[~timed].drop(columns="value").equals(b[~timed].drop(columns="value"))
    np.testing.assert_array_equal(a[~timed].value.to_numpy(), b[~timed].value.to_numpy())
    return bool(timed.any())


@pytest.fixture
def tiny_scenario():
    return tiny


@pytest.fixture
def unlearning_step(monkeypatch):
    """A flag dict whose ``"step"`` is True while any arm's unlearning step runs
    (ScenarioRun.unlearn patched), for spies on what the step reads."""
    from fedforget.protocol import ScenarioRun

    inside = {"step": False}
    unlearn = ScenarioRun.unlearn

    def spy_unlearn(self, *a, **k):
        inside["step"] = True
        try:
            return unlearn(self, *a, **k)
        finally:
            inside["step"] = False

    monkeypatch.setattr(ScenarioRun, "unlearn", spy_unlearn)
    return inside
