"""A two-node Ray cluster on the loopback address (``ray start --head``, then a
second node joining it): the ``actors`` engine spreads clients over both nodes
through ``runtime.address`` and gives the ``inline`` engine's metrics."""

import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

import fedforget
from fedforget.config import with_overrides
from tests.conftest import require_tool

pytestmark = [pytest.mark.ray, pytest.mark.slow]
RAY = str(Path(sys.executable).parent / "ray")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _stop_cluster(port: int, before: set[int]) -> None:
    """Stop this cluster's processes only: those started since ``before`` whose
    command line names the cluster's port, and their children. (``ray stop
    --force`` would stop every Ray process of the user, other tests' included.)"""
    import psutil

    ours = []
    for proc in psutil.process_iter(["pid", "cmdline"]):
        cmd = " ".join(proc.info["cmdline"] or [])
        if proc.info["pid"] not in before and (f":{port}" in cmd or f"={port}" in cmd):
            ours.append(proc)
    ours += [child for proc in ours for child in _children(proc) if child.pid not in before]
    for proc in ours:
        _quietly(proc.terminate)
    _, alive = psutil.wait_procs(ours, timeout=20)
    for proc in alive:
        _quietly(proc.kill)


def _children(proc) -> list:
    import psutil

    try:
        return proc.children(recursive=True)
    except psutil.Error:
        return []


def _quietly(action) -> None:
    import psutil

    try:
        action()
    except psutil.Error:
        pass


@pytest.fixture(scope="module")
def cluster_address(tmp_path_factory):
    import psutil

    if shutil.which(RAY) is None and not Path(RAY).exists():
        require_tool(False, f"the ray command line ({RAY}) is missing")
    env = {**os.environ, "RAY_USAGE_STATS_ENABLED": "0"}
    port = _free_port()
    address = f"127.0.0.1:{port}"
    # A temp dir of its own (short: Ray's socket paths live under it): `ray start`
    # writes the cluster's address there, not to /tmp/ray/ray_current_cluster, which
    # every later ray.init() on this machine (Flower's runtime included) would join.
    temp_dir = tempfile.mkdtemp(prefix="rc", dir="/tmp")
    common = ["--node-ip-address=127.0.0.1", "--num-cpus=1", "--disable-usage-stats", f"--temp-dir={temp_dir}"]
    before = set(psutil.pids())
    try:
        subprocess.run([RAY, "start", "--head", f"--port={port}", "--include-dashboard=false", *common],
                       env=env, check=True, capture_output=True, timeout=180)
        subprocess.run([RAY, "start", f"--address={address}", *common, f"--resources={json.dumps({'second_node': 1})}"],
                       env=env, check=True, capture_output=True, timeout=180)
        yield address
    finally:
        _stop_cluster(port, before)
        shutil.rmtree(temp_dir, ignore_errors=True)


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
