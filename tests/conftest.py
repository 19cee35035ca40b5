import os

os.environ["FLWR_TELEMETRY_ENABLED"] = "0"
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


@pytest.fixture
def tiny_scenario():
    return tiny
