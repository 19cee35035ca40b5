"""The inline engine end to end: run directory contents, failures, determinism."""

import time
import tomllib

import numpy as np
import pytest

import fedforget
from fedforget.config import scenario_from_dict
from fedforget.protocol import ClientFailure
from fedforget.results import read_events


def test_inline_run_writes_a_complete_run_directory(tiny_scenario, tmp_path):
    sc = tiny_scenario()
    res = fedforget.run(sc, out=tmp_path / "run")
    files = {p.name for p in (tmp_path / "run").iterdir()}
    assert {"resolved.toml", "events.jsonl", "metrics.parquet"} <= files
    assert not any(f.endswith((".tmp", ".partial")) for f in files)
    df = res.metrics
    assert list(df.columns) == ["arm", "round", "client", "metric", "value"]
    acc = df[(df.metric == "test_accuracy") & (df.arm == "original")]
    assert sorted(acc["round"]) == [0, 1, 2, 3]
    assert acc["client"].isna().all()
    assert acc.sort_values("round").value.iloc[-1] > 0.5  # it learns
    # resolved.toml has every default and reloads to the same scenario
    resolved = tomllib.loads((tmp_path / "run" / "resolved.toml").read_text())
    assert resolved["data"]["holdout_fraction"] == 0.2
    assert scenario_from_dict(resolved) == sc
    kinds = [e["event"] for e in read_events(tmp_path / "run")]
    assert kinds[0] == "run_start" and kinds[-1] == "run_end" and kinds.count("round_end") == 3


def test_same_seed_same_metrics_different_seed_different(tiny_scenario, tmp_path):
    a = fedforget.run(tiny_scenario(), out=tmp_path / "a").metrics
    b = fedforget.run(tiny_scenario(), out=tmp_path / "b").metrics
    c = fedforget.run(tiny_scenario(seed=4), out=tmp_path / "c").metrics
    assert a.equals(b)
    assert not np.allclose(a.value.to_numpy(), c.value.to_numpy())


def test_fraction_samples_seeded_subsets(tiny_scenario, tmp_path):
    sc = tiny_scenario(train={"fraction": 0.5})
    res = fedforget.run(sc, out=tmp_path / "r")
    msgs = [e for e in read_events(res.run_dir) if e["event"] == "message" and e["type"] == "train"]
    per_round = {}
    for m in msgs:
        per_round.setdefault(m["round"], []).append(m["client"])
    assert all(len(v) == 2 for v in per_round.values())
    from fedforget.schedule import sample_clients

    assert all(sorted(v) == sample_clients(sc.seed, int(r), 4, 0.5) for r, v in per_round.items())


def test_client_crash_stops_the_run_without_a_complete_looking_result(tiny_scenario, tmp_path, monkeypatch):
    import fedforget.flower.client_app as ca

    real = ca.train_local

    def crashing(model, x, y, **kw):
        if len(y) and kw.get("seed", 0) % 2 == 0:
            raise RuntimeError("simulated client crash")
        return real(model, x, y, **kw)

    monkeypatch.setattr(ca, "train_local", crashing)
    with pytest.raises(ClientFailure, match="client .* failed: .*simulated client crash"):
        fedforget.run(tiny_scenario(runtime={"engine": "inline", "on_client_error": "abort"}), out=tmp_path / "run")
    names = {p.name for p in (tmp_path / "run").iterdir()}
    assert "metrics.parquet" not in names and "events.jsonl" not in names
    assert "events.jsonl.partial" in names


def test_a_client_process_resolves_its_scenario_and_data_once(tiny_scenario, monkeypatch):
    """Scenario resolved once per process, each client's data built once and
    looked up by the scenario's data key, however many messages arrive."""
    from flwr.app import ConfigRecord, Message, MessageType, RecordDict

    import fedforget.flower.client_app as ca
    from fedforget.data import federated_data_for
    from fedforget.flower.arrays import state_to_record
    from fedforget.flower.inline import InlineGrid
    from fedforget.models import build_model

    calls = {"key": 0, "view": 0}
    data_key, view_of = ca.data_key, ca.ClientDataView.of

    def counting_key(sc):
        calls["key"] += 1
        return data_key(sc)

    def counting_view(fd, pid):
        calls["view"] += 1
        return view_of(fd, pid)

    monkeypatch.setattr(ca, "data_key", counting_key)
    monkeypatch.setattr(ca.ClientDataView, "of", counting_view)
    sc = tiny_scenario()
    fd = federated_data_for(sc)
    grid = InlineGrid(ca.make_client_app([sc]), 4)
    node = sorted(grid.get_node_ids())[2]
    rec = state_to_record(build_model("mlp", fd.input_shape, fd.num_classes, [32], seed=0).state_dict())
    for rnd in (1, 2, 3):
        cfg = ConfigRecord({"sc": 0, "arm": "original", "round": float(rnd), "tag": "", "seed": rnd})
        msg = Message(content=RecordDict({"arrays": rec, "config": cfg}), message_type=MessageType.TRAIN,
                      dst_node_id=node)
        (reply,) = grid.send_and_receive([msg])
        assert not reply.has_error() and reply.content["metrics"]["num-examples"] == len(fd.train_ids[2])
    assert calls == {"key": 1, "view": 1}


def test_node_registration_is_awaited_with_a_timeout(monkeypatch):
    """Nodes register while the ServerApp starts: discovery waits for all of
    them, and names the shortfall after a timeout."""
    from fedforget.flower import runtime as federation
    from fedforget.flower.runtime import FlowerRuntime

    class GrowingGrid:
        def __init__(self, final):
            self.calls, self.final = 0, final

        def get_node_ids(self):
            self.calls += 1
            return list(range(100, 100 + min(self.final, 3 * self.calls)))

    rt = FlowerRuntime.__new__(FlowerRuntime)
    rt.grid = GrowingGrid(10)
    assert rt._wait_for_nodes(10) == list(range(100, 110)) and rt.grid.calls == 4
    monkeypatch.setattr(federation, "NODE_REGISTRATION_TIMEOUT_S", 0.3)
    rt.grid = GrowingGrid(7)
    with pytest.raises(RuntimeError, match="7 nodes but the scenario has 10 clients"):
        rt._wait_for_nodes(10)
    # A count that stops moving (`flwr run` with too few SuperNodes) fails
    # early, naming the fix, instead of waiting for the full timeout.
    monkeypatch.setattr(federation, "NODE_REGISTRATION_TIMEOUT_S", 60.0)
    monkeypatch.setattr(federation, "NODE_COUNT_STABLE_S", 0.3)
    rt.grid = GrowingGrid(2)
    t0 = time.monotonic()
    with pytest.raises(RuntimeError, match='2 nodes .* "num-supernodes=10"'):
        rt._wait_for_nodes(10)
    assert time.monotonic() - t0 < 5


def test_one_thousand_clients_start_and_run_a_round_inline(tmp_path):
    from tests.conftest import thousand_clients

    sc = thousand_clients()
    res = fedforget.run(sc, out=tmp_path / "k")
    trained = [e for e in read_events(res.run_dir) if e["event"] == "message" and e["type"] == "train"]
    assert len(trained) == 10 and len({e["client"] for e in trained}) == 10
    assert res.final() > 0


#: Server-side memory per client beyond the data: a node context, partition
#: indices, node maps. A per-client model copy of the MLP below (~26 KB) or a
#: per-client dataset would break it.
BYTES_PER_CLIENT_BOUND = 8 * 1024


@pytest.mark.slow  # memory bound over growing federations
def test_server_memory_does_not_grow_with_clients_beyond_a_small_bound(tmp_path):
    import tracemalloc

    from fedforget.data import federated_data_for
    from tests.conftest import tiny

    def peak_bytes(n: int) -> int:
        sc = tiny(
            data={"dataset": "synthetic", "num_clients": n, "holdout_fraction": 0.2,
                  "synthetic": {"samples": 8000, "features": 20, "informative": 5, "classes": 4}},
            model={"name": "mlp", "hidden": [256]},
            train={"rounds": 2, "fraction": 10 / n, "local_epochs": 1},
        )
        federated_data_for(sc)  # the dataset itself is shared by every client count
        tracemalloc.start()
        fedforget.run(sc, out=tmp_path / f"n{n}")
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
        return peak

    peak_bytes(20)  # warm-up: lazy imports and caches
    small, large = peak_bytes(100), peak_bytes(2000)
    assert (large - small) / 1900 < BYTES_PER_CLIENT_BOUND, (small, large)


def test_fast_array_reading_equals_flowers():
    """array_to_numpy reads np.save bytes without parsing the header: the same
    values, dtypes and shapes as Array.numpy(), Fortran order falling back."""
    from flwr.app import Array

    from fedforget.flower.arrays import array_to_numpy

    rng = np.random.default_rng(0)
    cases = [rng.normal(size=(3, 4)).astype(np.float32), rng.normal(size=7), np.arange(5, dtype=np.int64),
             np.array(2.5, dtype=np.float32), np.zeros((0, 3), np.float32), np.asfortranarray(rng.normal(size=(3, 2))),
             rng.integers(0, 255, size=(2, 2, 2)).astype(np.uint8), np.array([True, False])]
    for a in cases:
        arr = Array(a)
        got, want = array_to_numpy(arr), arr.numpy()
        assert got.dtype == want.dtype and got.shape == want.shape
        np.testing.assert_array_equal(got, want)
