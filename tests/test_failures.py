"""Client failures: simulated ones (runtime.client_failure_rate) and ClientApp
exceptions are recorded and every arm aggregates the replies that arrived; an
unlearning step retries a failed request, then stops naming the step."""

import pytest

import fedforget
from fedforget.protocol import ClientFailure
from fedforget.results import read_events
from fedforget.schedule import client_fails


def _scenario(**runtime):
    from tests.conftest import tiny

    return tiny(
        data={"num_clients": 6}, train={"rounds": 5},
        events=[{"round": 3, "client": 1}],
        unlearning={"methods": ["none", "perturb"], "recovery_rounds": 0},
        runtime={"engine": "inline", **runtime},
    )


def _sent_and_failed(run_dir, arms):
    """(arm, round) -> clients sent a regular round's training, and those that failed."""
    sent, failed = {}, {}
    for e in read_events(run_dir):
        if e["event"] == "message" and e["type"] == "train" and e["arm"] in arms and not e["tag"]:
            sent.setdefault((e["arm"], int(e["round"])), set()).add(e["client"])
        if e["event"] == "client_failures":
            failed[(e["arm"], e["round"])] = set(e["clients"])
    return sent, failed


def test_simulated_failures_are_the_same_in_every_arm_and_reported(tmp_path):
    sc = _scenario(client_failure_rate=0.3)
    res = fedforget.run(sc, out=tmp_path / "run")
    arms = set(res.metrics.arm)
    sent, failed = _sent_and_failed(res.run_dir, arms)
    assert failed, "a 30% failure rate over 5 rounds of 6 clients should fail someone"
    for (arm, rnd), clients in sent.items():  # exactly the seeded draws
        assert failed.get((arm, rnd), set()) == {c for c in clients if client_fails(sc.seed, rnd, c, 0.3)}
    for rnd in range(1, 6):
        aggregated = {arm: clients - failed.get((arm, r), set()) - {1}
                      for (arm, r), clients in sent.items() if r == rnd}
        assert {"original", "retrain"} <= set(aggregated) and (rnd < 3 or set(aggregated) == arms)
        assert len({frozenset(s) for s in aggregated.values()}) == 1, (rnd, aggregated)
    m = res.metrics[res.metrics.metric == "failed_clients"].set_index(["arm", "round"]).value
    for (arm, rnd) in sent:
        assert m[(arm, float(rnd))] == len(failed.get((arm, rnd), ()))
    assert "Client failures:" in (res.run_dir / "report.html").read_text()


def _crash_even_seeds(monkeypatch):
    import fedforget.flower.client_app as ca

    real = ca.train_local

    def crashing(model, x, y, **kw):
        if kw.get("seed", 0) % 3 == 0:
            raise RuntimeError("simulated client crash")
        return real(model, x, y, **kw)

    monkeypatch.setattr(ca, "train_local", crashing)


def test_clientapp_exceptions_are_recorded_unless_abort(tmp_path, monkeypatch):
    _crash_even_seeds(monkeypatch)
    res = fedforget.run(_scenario(), out=tmp_path / "record")
    failures = [e for e in read_events(res.run_dir) if e["event"] == "client_failures"]
    assert failures and all("simulated client crash" in r for e in failures for r in e["reasons"])
    with pytest.raises(ClientFailure, match="client .* failed: .*simulated client crash"):
        fedforget.run(_scenario(on_client_error="abort"), out=tmp_path / "abort")


def test_too_few_replies_stop_the_run(tmp_path):
    with pytest.raises(ClientFailure, match="runtime.min_replies = 5"):
        fedforget.run(_scenario(client_failure_rate=0.6, min_replies=5), out=tmp_path / "run")


def test_unlearning_step_retries_then_names_the_step(tmp_path, monkeypatch):
    from fedforget import unlearning

    real = unlearning.CLIENT_OPS["self_check"]
    calls = {"n": 0}

    def flaky(model, data, extra, cfg):
        calls["n"] += 1
        if calls["n"] % 2 == 1:  # every other call fails once
            raise RuntimeError("transient network error")
        return real(model, data, extra, cfg)

    monkeypatch.setitem(unlearning.CLIENT_OPS, "self_check", flaky)
    res = fedforget.run(_scenario(), out=tmp_path / "flaky")
    assert calls["n"] >= 2 and (res.run_dir / "metrics.parquet").is_file()

    def broken(model, data, extra, cfg):
        raise RuntimeError("client gone")

    monkeypatch.setitem(unlearning.CLIENT_OPS, "self_check", broken)
    with pytest.raises(ClientFailure, match=r"arm 'perturb': step self_check .* failed 3 time\(s\).*client gone"):
        fedforget.run(_scenario(), out=tmp_path / "broken")


def test_a_diverging_method_arm_is_marked_or_stops_the_run(tmp_path, monkeypatch):
    import torch

    from fedforget.protocol import DivergenceError
    from fedforget.unlearning.none import NoUnlearning

    real = NoUnlearning.unlearn

    def blow_up(self, model, fed):
        model, cost = real(self, model, fed)
        with torch.no_grad():
            next(model.parameters()).fill_(float("nan"))
        return model, cost

    monkeypatch.setattr(NoUnlearning, "unlearn", blow_up)
    with pytest.raises(DivergenceError, match="arm 'none' diverged in its unlearning step at round 3"):
        fedforget.run(_scenario(), out=tmp_path / "stop")
    res = fedforget.run(_scenario(on_divergence="mark"), out=tmp_path / "mark")
    m = res.metrics
    assert m.query("arm == 'none' and metric == 'diverged'").set_index("round").value.to_dict() == {2.5: 1.0}
    assert m.query("arm == 'none' and metric == 'test_accuracy'")["round"].max() == 2  # frozen: no later rows
    assert m.query("arm == 'perturb' and metric == 'test_accuracy'")["round"].max() == 5  # the others go on
    assert "Arm none diverged" in (res.run_dir / "report.html").read_text()
