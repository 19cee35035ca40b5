"""The ``actors`` engine: the same apps on a pool of Ray actors behind our own
Grid. One Ray instance for the module; each run's ActorGrid joins it."""

import pytest

import fedforget
from fedforget.config import with_overrides
from fedforget.results import read_events

pytestmark = pytest.mark.ray


@pytest.fixture(scope="module")
def ray_instance():
    import ray

    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, logging_level="ERROR")
    yield
    ray.shutdown()


def test_actors_engine_matches_inline_bit_for_bit(ray_instance, tmp_path):
    from tests.conftest import assert_same_metrics, tiny

    sc = tiny(
        train={"rounds": 4}, events=[{"round": 2, "client": 1}],
        unlearning={"methods": ["none", "perturb", "pga"], "recovery_rounds": 1},
        runtime={"engine": "inline", "client_failure_rate": 0.2},
    )
    actors = fedforget.run(with_overrides(sc, ["runtime.engine=actors"]), out=tmp_path / "actors")
    inline = fedforget.run(sc, out=tmp_path / "inline")
    assert assert_same_metrics(actors.metrics, inline.metrics)
    assert (actors.metrics.query("metric == 'failed_clients'").value > 0).any()


def test_actors_engine_reports_a_failing_client(ray_instance, tmp_path):
    """A ClientApp exception on an actor is an error reply, as on Flower's runtime."""
    from flwr.app import Message, RecordDict
    from flwr.clientapp import ClientApp

    from fedforget.flower.actors import ActorGrid
    from fedforget.flower.inline import CLIENT_APP_RAISED_EXCEPTION

    app = ClientApp()

    @app.query()
    def query(msg, context):
        raise RuntimeError(f"node {context.node_config['partition-id']} is down")

    grid = ActorGrid(app, 3)
    try:
        assert grid.num_actors == 2  # one per CPU of the Ray instance
        msgs = [Message(RecordDict(), n, "query") for n in grid.get_node_ids()]
        replies = list(grid.send_and_receive(msgs))
    finally:
        grid.shutdown()
    assert len(replies) == 3 and all(r.has_error() for r in replies)
    assert all(r.error.code == CLIENT_APP_RAISED_EXCEPTION for r in replies)
    assert sorted(r.metadata.src_node_id for r in replies) == sorted(m.metadata.dst_node_id for m in msgs)
    assert "node 2 is down" in " ".join(r.error.reason for r in replies)


def test_one_thousand_clients_start_and_run_a_round_on_actors(ray_instance, tmp_path):
    from tests.conftest import thousand_clients

    res = fedforget.run(with_overrides(thousand_clients(), ["runtime.engine=actors"]), out=tmp_path / "k")
    trained = [e for e in read_events(res.run_dir) if e["event"] == "message" and e["type"] == "train"]
    assert len(trained) == 10 and len({e["client"] for e in trained}) == 10
    assert res.final() > 0
