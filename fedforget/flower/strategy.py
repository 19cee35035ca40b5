"""FedForgetStrategy: FedAvg (weighted by example counts) with seeded sampling,
per-arm client exclusion and deterministic aggregation order.

Built on ``flwr.serverapp.strategy.FedAvg``. Flower samples nodes with Python's
global ``random``; this strategy samples partition ids with
:func:`fedforget.schedule.sample_clients` instead, so the sample depends only on
(scenario seed, round) and every arm sees the same draw.
"""

from __future__ import annotations

from collections.abc import Iterable

from flwr.app import ArrayRecord, ConfigRecord, Message, MessageType, MetricRecord, RecordDict
from flwr.serverapp import Grid
from flwr.serverapp.strategy import FedAvg

from fedforget.flower.arrays import weighted_average
from fedforget.schedule import ORIGINAL, local_seed, sample_clients


class ClientFailure(RuntimeError):
    """A client replied with an error; the run stops rather than aggregate a
    partial round that would look complete."""


class DivergenceError(RuntimeError):
    """An arm's training produced non-finite weights or losses; the run stops
    rather than report NaN metrics as results."""


class RunsFailed(RuntimeError):
    """Some of several scenarios run in one runtime failed (the others ran).

    ``failures``: (run directory, error) of each failed run."""

    def __init__(self, failures: list[tuple[str, BaseException]]) -> None:
        self.failures = failures
        super().__init__(f"{len(failures)} run(s) failed: "
                         + "; ".join(f"{out}: {err}" for out, err in failures))


class FedForgetStrategy(FedAvg):
    """Seeded FedAvg over virtual SuperNodes that are mapped to partition ids.

    Parameters
    ----------
    seed : int
        Scenario seed.
    num_clients : int
        Number of partitions (clients).
    node_of : dict[int, int]
        Partition id -> Flower node id.
    fraction : float
        Share of all clients sampled per round (before exclusions).
    scenario_index : int
        Which of the ClientApp's bound scenarios the messages are for.
    """

    def __init__(
        self, seed: int, num_clients: int, node_of: dict[int, int], fraction: float = 1.0, scenario_index: int = 0
    ) -> None:
        super().__init__(
            fraction_train=fraction, fraction_evaluate=1.0, min_train_nodes=1, min_available_nodes=1
        )
        self.seed = seed
        self.scenario_index = scenario_index
        self.num_clients = num_clients
        self.node_of = dict(node_of)
        self.client_of = {n: c for c, n in node_of.items()}

    def sample(self, round_tag: int | str, exclude: set[int] = frozenset(), seed: int | None = None) -> list[int]:
        """Partition ids sampled for ``round_tag`` minus ``exclude`` (``seed``
        overrides the scenario seed, for the oracle's reference federations)."""
        seed = self.seed if seed is None else seed
        return sample_clients(seed, round_tag, self.num_clients, self.fraction_train, exclude)

    def configure_train_arm(
        self,
        round_tag: int | str,
        arrays: ArrayRecord,
        clients: list[int],
        arm: str,
        epochs: float | None = None,
        seed: int | None = None,
        drop: list[int] | None = None,
    ) -> list[Message]:
        """Training messages of one arm for the given clients.

        ``drop``: indices of the deletion events in force in this arm; each client
        leaves out the samples those events deleted from its own data.
        """
        seed = self.seed if seed is None else seed
        messages = []
        for c in clients:
            cfg = ConfigRecord(
                {
                    "sc": self.scenario_index,
                    "arm": arm,
                    "round": str(round_tag),
                    "seed": local_seed(seed, round_tag, c),
                    "drop": ",".join(str(e) for e in (drop or [])),
                    **({"epochs": float(epochs)} if epochs is not None else {}),
                }
            )
            content = RecordDict({self.arrayrecord_key: arrays, self.configrecord_key: cfg})
            messages.append(Message(content=content, message_type=MessageType.TRAIN, dst_node_id=self.node_of[c]))
        return messages

    def configure_train(
        self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid: Grid
    ) -> Iterable[Message]:
        """Flower's entry point: the original arm's seeded sample for a round."""
        return self.configure_train_arm(server_round, arrays, self.sample(server_round), ORIGINAL)

    def check_replies(self, replies: Iterable[Message]) -> list[Message]:
        """Raise :class:`ClientFailure` naming the client on any error reply;
        return the replies ordered by partition id (a fixed summation order keeps
        aggregation bit-identical across engines)."""
        replies = list(replies)
        for msg in replies:
            if msg.has_error():
                cid = self.client_of.get(msg.metadata.src_node_id, "?")
                raise ClientFailure(
                    f"client {cid} (node {msg.metadata.src_node_id}) failed: {msg.error.reason}"
                )
        return sorted(replies, key=lambda m: int(m.content["meta"]["partition-id"]))

    def aggregate_train(
        self, server_round: int, replies: Iterable[Message]
    ) -> tuple[ArrayRecord | None, MetricRecord | None]:
        """FedAvg of the replies, in partition-id order; fails on any error reply."""
        ordered = self.check_replies(replies)
        if not ordered:
            return None, None
        contents = [m.content for m in ordered]
        weights = [float(c["metrics"][self.weighted_by_key]) for c in contents]
        arrays = weighted_average([c["arrays"] for c in contents], weights)
        return arrays, self.train_metrics_aggr_fn(contents, self.weighted_by_key)
