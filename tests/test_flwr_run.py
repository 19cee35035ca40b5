"""Flower's deployment path: `flwr run .` on a fresh Flower home, one SuperNode
per scenario client, with the local SuperLink it starts stopped afterwards."""

import subprocess
import sys
from pathlib import Path

import pytest

import fedforget
from fedforget.config import with_overrides
from fedforget.flower import deployment

pytestmark = pytest.mark.ray
ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def flwr_home(tmp_path_factory):
    if deployment.local_superlink_running():
        pytest.fail("a local SuperLink is already running on this machine's port; stop it first")
    home = tmp_path_factory.mktemp("flwr-home")  # a fresh machine's Flower home
    mp = pytest.MonkeyPatch()
    mp.setenv("FLWR_HOME", str(home))
    yield home
    deployment.stop_local_superlink(home)
    mp.undo()


def test_flwr_run_follows_the_scenario_and_matches_inline(flwr_home, tmp_path):
    from tests.conftest import assert_same_metrics, tiny

    # 6 clients: neither Flower's default of 2 SuperNodes nor the old pyproject's 10.
    sc = tiny(
        data={"num_clients": 6}, train={"rounds": 3},
        events=[{"round": 2, "client": 1}], unlearning={"methods": ["none", "perturb"], "recovery_rounds": 0},
    )
    config = tmp_path / "six.toml"
    config.write_text(sc.to_toml())
    proc = subprocess.run(
        [sys.executable, "-m", "fedforget", "flwr-run", str(config), "--out", str(tmp_path / "flwr")],
        cwd=ROOT, capture_output=True, text=True, timeout=600,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "changed from 10 to 2" not in proc.stdout + proc.stderr  # stale: fedforget sets the count
    assert not deployment.local_superlink_running()  # started by this run, so stopped by it
    assert not deployment._pids_with("flower-superlink", str(flwr_home))
    from fedforget.results import read_metrics

    flwr_metrics = read_metrics(tmp_path / "flwr")
    inline = fedforget.run(with_overrides(sc, ["runtime.engine=inline"]), out=tmp_path / "inline")
    assert assert_same_metrics(flwr_metrics, inline.metrics)
    assert (tmp_path / "flwr" / "report.html").is_file()
