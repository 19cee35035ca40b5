"""A two-node Ray cluster on the loopback address (``ray start --head``, then a
second node joining it): the ``actors`` engine spreads clients over both nodes
through ``runtime.address`` and gives the ``inline`` engine's metrics."""

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

import fedforget
from fedforget.config import with_overrides

pytestmark = pytest.mark.ray
RAY = str(Path(sys.executable).parent / "ray")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def cluster_address(tmp_path_factory):
    env = {**os.environ, "RAY_USAGE_STATS_ENABLED": "0"}
    address = f"127.0.0.1:{_free_port()}"
    common = ["--node-ip-address=127.0.0.1", "--num-cpus=1", "--disable-usage-stats"]
    try:
        subprocess.run([RAY, "start", "--head", f"--port={address.split(':')[1]}", "--include-dashboard=false", *common],
                       env=env, check=True, capture_output=True, timeout=180)
        subprocess.run([RAY, "start", f"--address={address}", *common, f"--resources={json.dumps({'second_node': 1})}"],
                       env=env, check=True, capture_output=True, timeout=180)
        yield address
    finally:
        subprocess.run([RAY, "stop", "--force"], env=env, capture_output=True, timeout=180)


def test_actors_land_on_both_nodes(cluster_address):
    from fedforget.flower.actors import ActorGrid
    from fedforget.flower.client_app import make_client_app
    from tests.conftest import tiny

    grid = ActorGrid(make_client_app([tiny()]), 4, num_cpus=1.0, address=cluster_address)
    try:
        import ray

        assert len({n["NodeID"] for n in ray.nodes() if n["Alive"]}) == 2
        assert grid.num_actors == 2 and len(set(grid.actor_nodes())) == 2
    finally:
        grid.shutdown()


def test_cluster_run_matches_inline(cluster_address, tmp_path):
    from tests.conftest import assert_same_metrics, tiny

    sc = tiny(train={"rounds": 4}, events=[{"round": 2, "client": 1}],
              unlearning={"methods": ["none", "perturb"], "recovery_rounds": 0})
    on_cluster = fedforget.run(with_overrides(sc, ["runtime.engine=actors", f"runtime.address={cluster_address}"]),
                               out=tmp_path / "cluster")
    inline = fedforget.run(sc, out=tmp_path / "inline")
    assert assert_same_metrics(on_cluster.metrics, inline.metrics)
