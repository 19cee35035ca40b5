"""Models, local training and FedAvg weighting."""

import numpy as np
import pytest
import torch

from fedforget.models import build_model
from fedforget.training import evaluate, get_weights, set_weights, train_local


@pytest.mark.parametrize(
    "name, shape", [("logreg", (1, 8, 8)), ("mlp", (1, 8, 8)), ("mlp", (30,)), ("cnn", (1, 8, 8)), ("cnn", (1, 28, 28)), ("cnn", (3, 32, 32))]
)
def test_output_shapes(name, shape):
    m = build_model(name, shape, 7, [16], seed=0)
    assert m(torch.zeros(5, *shape)).shape == (5, 7)


def test_cnn_rejects_tabular():
    with pytest.raises(ValueError, match="image input"):
        build_model("cnn", (30,), 3, [16], seed=0)


def test_seeded_init_and_weight_roundtrip():
    a = build_model("mlp", (10,), 3, [8], seed=1)
    b = build_model("mlp", (10,), 3, [8], seed=1)
    c = build_model("mlp", (10,), 3, [8], seed=2)
    assert all(np.array_equal(x, y) for x, y in zip(get_weights(a), get_weights(b)))
    assert not np.array_equal(get_weights(a)[0], get_weights(c)[0])
    set_weights(c, get_weights(a))
    assert all(np.array_equal(x, y) for x, y in zip(get_weights(a), get_weights(c)))


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
    assert all(np.array_equal(p, q) for p, q in zip(get_weights(m), get_weights(m2)))


def test_fedavg_weighted_by_example_counts():
    from flwr.app import Array, ArrayRecord, ConfigRecord, Context, Message, MetricRecord, RecordDict
    from flwr.clientapp import ClientApp

    from fedforget.flower.inline import InlineGrid
    from fedforget.flower.strategy import ClientFailure, FedForgetStrategy

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
    strat = FedForgetStrategy(seed=0, num_clients=4, node_of=node_of)
    rec = ArrayRecord({"w": Array(np.zeros(3, dtype=np.float32))})
    replies = grid.send_and_receive(strat.configure_train_arm(1, rec, [2, 0, 1], "original"))
    arrays, _ = strat.aggregate_train(1, replies)
    expected = (0 * 10 + 1 * 30 + 2 * 60) / 100
    np.testing.assert_allclose(arrays["w"].numpy(), expected, rtol=1e-6)
    replies = grid.send_and_receive(strat.configure_train_arm(1, rec, [0, 3], "original"))
    with pytest.raises(ClientFailure, match="client 3 .*disk on fire"):
        strat.aggregate_train(1, replies)
