"""FedForgetStrategy: FedAvg (weighted by example counts) with the round
protocol's seeded client samples, per-request messages and a deterministic
aggregation order.

Built on ``flwr.serverapp.strategy.FedAvg``. Flower samples nodes with Python's
global ``random``; the round protocol samples partition ids from the scenario
seed instead (:meth:`fedforget.protocol.FederationRuntime.sample`), and this
strategy turns each :class:`~fedforget.protocol.TrainRequest` into messages to
the nodes of those partitions.
"""

from __future__ import annotations

from collections.abc import Iterable

from flwr.app import ArrayRecord, ConfigRecord, Message, MessageType, RecordDict
from flwr.serverapp.strategy import FedAvg

from fedforget.flower.arrays import weighted_average
from fedforget.protocol import ClientFailure, TrainRequest
from fedforget.schedule import local_seed


class FedForgetStrategy(FedAvg):
    """Seeded FedAvg over virtual SuperNodes that are mapped to partition ids.

    Parameters
    ----------
    seed : int
        Scenario seed.
    node_of : dict[int, int]
        Partition id -> Flower node id.
    fraction : float
        Share of all clients sampled per round (before exclusions).
    scenario_index : int
        Which of the ClientApp's bound scenarios the messages are for.
    """

    def __init__(self, seed: int, node_of: dict[int, int], fraction: float = 1.0, scenario_index: int = 0) -> None:
        super().__init__(
            fraction_train=fraction, fraction_evaluate=1.0, min_train_nodes=1, min_available_nodes=1
        )
        self.seed = seed
        self.scenario_index = scenario_index
        self.node_of = dict(node_of)
        self.client_of = {n: c for c, n in node_of.items()}

    def configure_train_request(self, request: TrainRequest, arrays: ArrayRecord) -> list[Message]:
        """The training messages of one request, one per sampled client.

        Each carries the round label, the exchange's tag, the client's local
        seed and the deletion events in force (the client leaves their samples out).
        """
        seed = self.seed if request.seed is None else request.seed
        messages = []
        for c in request.clients:
            cfg = ConfigRecord({
                "sc": self.scenario_index, "arm": request.arm, "round": float(request.round), "tag": request.tag,
                "seed": local_seed(seed, request.seed_key, c),
                **({"drop": list(request.drop)} if request.drop else {}),  # Flower cannot size an empty list
                **({"epochs": float(request.epochs)} if request.epochs is not None else {}),
            })
            content = RecordDict({self.arrayrecord_key: arrays, self.configrecord_key: cfg})
            messages.append(Message(content=content, message_type=MessageType.TRAIN, dst_node_id=self.node_of[c]))
        return messages

    def check_replies(self, replies: Iterable[Message]) -> list[Message]:
        """Raise :class:`ClientFailure` naming the client on any error reply;
        return the replies ordered by partition id (a fixed summation order keeps
        aggregation bit-identical across engines)."""
        replies = list(replies)
        for msg in replies:
            if msg.has_error():
                cid = self.client_of.get(msg.metadata.src_node_id, "?")
                raise ClientFailure(f"client {cid} (node {msg.metadata.src_node_id}) failed: {msg.error.reason}")
        return sorted(replies, key=lambda m: int(m.content["meta"]["partition-id"]))

    def aggregate_replies(self, replies: Iterable[Message]) -> ArrayRecord:
        """FedAvg of the replies weighted by their example counts, in
        partition-id order; fails on any error reply."""
        contents = [m.content for m in self.check_replies(replies)]
        weights = [float(c["metrics"][self.weighted_by_key]) for c in contents]
        return weighted_average([c["arrays"] for c in contents], weights)
