"""Models, local training and FedAvg weighting."""

import numpy as np
import pytest
import torch

from fedforget.models import build_model
from fedforget.training import evaluate, train_local, weighted_mean, weighted_mean_state


@pytest.mark.parametrize(
    "name, shape", [("logreg", (1, 8, 8)), ("mlp", (1, 8, 8)), ("mlp", (30,)), ("cnn", (1, 8, 8)), ("cnn", (1, 28, 28)), ("cnn", (3, 32, 32))]
)
def test_output_shapes(name, shape):
    m = build_model(name, shape, 7, [16], seed=0)
    assert m(torch.zeros(5, *shape)).shape == (5, 7)


def test_cnn_rejects_tabular():
    with pytest.raises(ValueError, match="image input"):
        build_model("cnn", (30,), 3, [16], seed=0)


def _weights(model):
    return [v.numpy() for v in model.state_dict().values()]


def test_seeded_init():
    a = build_model("mlp", (10,), 3, [8], seed=1)
    b = build_model("mlp", (10,), 3, [8], seed=1)
    c = build_model("mlp", (10,), 3, [8], seed=2)
    assert all(np.array_equal(x, y) for x, y in zip(_weights(a), _weights(b)))
    assert not np.array_equal(_weights(a)[0], _weights(c)[0])


def test_the_one_weighted_mean():
    assert weighted_mean([1.0, 3.0], [1, 3]) == 2.5
    t = weighted_mean([torch.ones(2), torch.zeros(2)], [3, 1])
    assert torch.equal(t, torch.full((2,), 0.75))
    states = [{"w": np.full(2, 2.0, dtype=np.float32)}, {"w": np.zeros(2, dtype=np.float32)}]
    out = weighted_mean_state(states, [1, 1])
    assert out["w"].dtype == np.float32 and np.array_equal(out["w"], np.ones(2, dtype=np.float32))
    with pytest.raises(ValueError, match="positive weight"):
        weighted_mean([1.0], [0])


def test_local_training_lowers_loss_and_is_seeded():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(200, 10, generator=g)
    y = (x[:, 0] > 0).long()
    m = build_model("mlp", (10,), 2, [16], seed=0)
    before, _ = evaluate(m, x, y)
    m2 = build_model("mlp", (10,), 2, [16], seed=0)
    r = train_local(m, x, y, epochs=10, batch_size=16, lr=0.1, seed=5)
    train_local(m2, x, y, epochs=10, batch_size=16, lr=0.1, seed=5)
    after, acc = evaluate(m, x, y)
    assert after < before * 0.7 and acc > 0.8
    assert r.steps == 2000 and r.num_examples == 200
    assert all(np.array_equal(p, q) for p, q in zip(_weights(m), _weights(m2)))


def test_fedavg_weighted_by_example_counts():
    from flwr.app import (
        Array,
        ArrayRecord,
        ConfigRecord,
        Context,
        Message,
        MetricRecord,
        RecordDict,
    )
    from flwr.clientapp import ClientApp

    from fedforget.flower.arrays import state_to_record
    from fedforget.flower.inline import InlineGrid
    from fedforget.flower.strategy import FedForgetStrategy
    from fedforget.protocol import ClientFailure, TrainRequest

    app = ClientApp()
    counts = {0: 10, 1: 30, 2: 60}

    @app.train()
    def train(msg: Message, ctx: Context) -> Message:
        pid = int(ctx.node_config["partition-id"])
        if pid == 3:
            raise RuntimeError("disk on fire")
        arrays = ArrayRecord({"w": Array(np.full(3, float(pid), dtype=np.float32))})
        return Message(
            RecordDict({"arrays": arrays, "metrics": MetricRecord({"num-examples": counts[pid]}),
                        "meta": ConfigRecord({"partition-id": pid})}),
            reply_to=msg,
        )

    grid = InlineGrid(app, 4)
    node_of = {i: n for i, n in enumerate(sorted(grid.get_node_ids()))}
    strat = FedForgetStrategy(seed=0, node_of=node_of)
    state = {"w": torch.zeros(3)}

    def request(clients):
        return TrainRequest(arm="original", round=1, state=state, clients=clients)

    replies = grid.send_and_receive(strat.configure_train_request(request([2, 0, 1]), state_to_record(state)))
    arrays = strat.aggregate_replies(replies)
    expected = (0 * 10 + 1 * 30 + 2 * 60) / 100
    np.testing.assert_allclose(arrays["w"].numpy(), expected, rtol=1e-6)
    replies = grid.send_and_receive(strat.configure_train_request(request([0, 3]), state_to_record(state)))
    with pytest.raises(ClientFailure, match="client 3 .*disk on fire"):
        strat.aggregate_replies(replies)
