import os

os.environ["FLWR_TELEMETRY_ENABLED"] = "0"
os.environ["MLFLOW_DISABLE_TELEMETRY"] = "true"  # the tracker tests run offline
os.environ.setdefault("RAY_DEDUP_LOGS", "0")

import pytest  # noqa: E402

from fedforget.config import scenario_from_dict  # noqa: E402


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
