"""The Flower runtime: :class:`~fedforget.protocol.federation.FederationRuntime`
over a Flower ``Grid``.

:class:`FlowerRuntime` owns the node <-> client mapping, sends every request of
an exchange in one batch (so the backend can run them in parallel), records each
message in the events log, counts bytes and client steps, and stops the run with
a clear error when a client fails.
"""

from __future__ import annotations

import time
from collections import defaultdict

import numpy as np
from flwr.app import Array, ArrayRecord, ConfigRecord, Message, MessageType, RecordDict
from flwr.serverapp import Grid

from fedforget.flower.arrays import record_to_state, state_to_record
from fedforget.flower.strategy import FedForgetStrategy
from fedforget.protocol import (
    AskContext,
    AskOutcome,
    AskRequest,
    ClientFailure,
    DivergenceError,
    FailurePolicy,
    FederationRuntime,
    TrainOutcome,
    TrainRequest,
)
from fedforget.protocol.records import divergence
from fedforget.results import RunWriter
from fedforget.unlearning.base import ClientReply

EXCHANGE_TIMEOUT_S = 1800.0
NODE_REGISTRATION_TIMEOUT_S = 120.0
NODE_COUNT_STABLE_S = 10.0  # a count unchanged this long has finished registering


def _failures(failed: dict[int, str], shown: int = 3) -> str:
    """The first few failures of a round, and how many there were."""
    if not failed:
        return "no failure replies"
    first = "; ".join(f"client {c}: {failed[c]}" for c in sorted(failed)[:shown])
    more = f" (and {len(failed) - shown} more)" if len(failed) > shown else ""
    return f"{len(failed)} failed: {first}{more}"


class FlowerRuntime(FederationRuntime):
    """All message traffic of one scenario run over a Flower Grid.

    Parameters
    ----------
    grid : Grid
    seed, num_clients, fraction : the scenario's seed, clients and sampled share.
    writer : RunWriter
        Gets one ``message`` event per message.
    scenario_index : int
        Which of the ClientApp's bound scenarios the messages are for.
    policy : FailurePolicy
    """

    def __init__(
        self, grid: Grid, *, seed: int, num_clients: int, fraction: float, writer: RunWriter,
        scenario_index: int = 0, policy: FailurePolicy = FailurePolicy(),
    ) -> None:
        self.grid = grid
        self.seed = seed
        self.num_clients = num_clients
        self.fraction = fraction
        self.writer = writer
        self.scenario_index = scenario_index
        self.policy = policy
        self.client_of: dict[int, int] = {}
        self.strategy = FedForgetStrategy(seed, self._discover(num_clients), fraction, scenario_index)
        self.client_of = self.strategy.client_of

    def log(self, event: str, **info) -> None:
        self.writer.event(event, **info)

    # -- plumbing ---------------------------------------------------------------
    def _send(self, messages: list[Message], what: str) -> list[Message]:
        """Send, log and collect one reply per message (errors included)."""
        if not messages:
            return []
        self.writer.events("message", [self._described(m) for m in messages])
        replies = list(self.grid.send_and_receive(messages, timeout=EXCHANGE_TIMEOUT_S))
        if len(replies) != len(messages):
            raise ClientFailure(
                f"{what}: {len(messages) - len(replies)} of {len(messages)} clients did not reply "
                f"within {EXCHANGE_TIMEOUT_S:.0f} s"
            )
        return replies

    def _described(self, m: Message) -> dict:
        """A message as its ``message`` line in the events log."""
        cfg = m.content.config_records.get("config")
        cfg = cfg if cfg is not None else {}
        return {"type": m.metadata.message_type, "client": self.client_of.get(m.metadata.dst_node_id),
                "arm": cfg.get("arm", ""), "round": cfg.get("round"), "tag": cfg.get("tag", ""),
                "op": cfg.get("op", ""), "drop": list(cfg.get("drop", []))}

    def _wait_for_nodes(self, num_clients: int) -> list[int]:
        """Node ids once every SuperNode has registered. Flower's runtimes
        register nodes concurrently with the ServerApp's start, so an early
        look can see only some (858 of 1,000 on Ray); wait until all are there,
        the count has stopped moving, or the timeout."""
        deadline = time.monotonic() + NODE_REGISTRATION_TIMEOUT_S
        node_ids: list[int] = []
        last_change = time.monotonic()
        while True:
            seen = sorted(self.grid.get_node_ids())
            if len(seen) != len(node_ids):
                node_ids, last_change = seen, time.monotonic()
            now = time.monotonic()
            if len(node_ids) >= num_clients or now > deadline or now - last_change > NODE_COUNT_STABLE_S:
                break
            time.sleep(0.2)
        if len(node_ids) != num_clients:
            raise RuntimeError(
                f"the federation has {len(node_ids)} nodes but the scenario has {num_clients} clients "
                f"(one SuperNode per client; under `flwr run`, pass --federation-config "
                f"\"num-supernodes={num_clients}\", or run `fedforget flwr-run CONFIG`)"
            )
        return node_ids

    def _discover(self, num_clients: int) -> dict[int, int]:
        """Partition id -> node id, from each node's ``query.whoami`` reply."""
        node_ids = self._wait_for_nodes(num_clients)
        msgs = [
            Message(content=RecordDict(), message_type=MessageType.QUERY + ".whoami", dst_node_id=n)
            for n in node_ids
        ]
        replies = self._send(msgs, "node discovery")
        for r in replies:
            if r.has_error():
                raise ClientFailure(f"node discovery: node {r.metadata.src_node_id} failed: {r.error.reason}")
        node_of = {int(r.content["metrics"]["partition-id"]): r.metadata.src_node_id for r in replies}
        if sorted(node_of) != list(range(num_clients)):
            raise RuntimeError(f"nodes report partition ids {sorted(node_of)}, expected 0..{num_clients - 1}")
        return node_of

    # -- training ---------------------------------------------------------------
    def train(self, requests: list[TrainRequest]) -> list[TrainOutcome]:
        """Several requests' local training in one exchange, each aggregated."""
        messages: list[Message] = []
        owners: list[int] = []
        records = []
        for j, request in enumerate(requests):
            rec = state_to_record(request.state)
            records.append(rec)
            msgs = self.strategy.configure_train_request(request, rec)
            for m in msgs:
                m.content["config"]["job"] = j  # arm names may repeat across requests
                c = self.client_of[m.metadata.dst_node_id]
                if request.train_ids and c in request.train_ids:
                    # The oracle's reference training only (auditor-side, not the protocol).
                    ids = np.asarray(request.train_ids[c], dtype=np.int64)
                    m.content["train_ids"] = ArrayRecord({"ids": Array(ids)})
            messages += msgs
            owners += [j] * len(msgs)
        t0 = time.perf_counter()
        replies = self._send(messages, "training")
        wall = time.perf_counter() - t0
        # Message ids are given when the Grid pushes the messages.
        sent = {m.metadata.message_id: (owner, self.client_of[m.metadata.dst_node_id])
                for m, owner in zip(messages, owners, strict=True)}
        by_request, failed = self._split_train_replies(replies, sent, requests)
        return [self._outcome(request, records[j], by_request.get(j, []), failed.get(j, {}), wall)
                for j, request in enumerate(requests)]

    def _outcome(self, request: TrainRequest, record: ArrayRecord, replies: list[Message],
                 failed: dict[int, str], wall: float) -> TrainOutcome:
        need = min(self.policy.min_replies, len(request.clients))
        if len(replies) < need:
            raise ClientFailure(
                f"arm {request.arm!r}, round {request.round:g}: {len(replies)} of {len(request.clients)} clients "
                f"replied (runtime.min_replies = {self.policy.min_replies}); {_failures(failed)}"
            )
        outcome = TrainOutcome(state={k: v.clone() for k, v in request.state.items()}, wall_s=wall, failed=failed)
        outcome.bytes_down = record.count_bytes() * len(request.clients)
        if replies:
            outcome.state = record_to_state(self.strategy.aggregate_replies(replies))
        what = divergence(outcome.state, [float(r.content["metrics"]["train-loss"]) for r in replies])
        if what and not self.policy.mark_divergence:
            raise DivergenceError(f"arm {request.arm!r} diverged in round {request.round:g}: {what} "
                                  f"(is train.lr too high for this model?)")
        outcome.diverged = what
        for r in replies:
            cid = int(r.content["meta"]["partition-id"])
            outcome.steps += int(r.content["metrics"]["steps"])
            outcome.bytes_up += r.content["arrays"].count_bytes()
            outcome.num_examples[cid] = int(r.content["metrics"]["num-examples"])
            if request.keep_client_states:
                outcome.client_states[cid] = record_to_state(r.content["arrays"])
        return outcome

    def _split_train_replies(self, replies, sent, requests):
        """Replies by request, in partition-id order, and recorded failures by
        request; an error the policy does not record stops the run."""
        by_request: dict[int, list[Message]] = defaultdict(list)
        failed: dict[int, dict[int, str]] = defaultdict(dict)
        for r in replies:
            j, client = sent[r.metadata.reply_to_message_id]
            if not r.has_error():
                by_request[j].append(r)
            elif self.policy.records(r.error.reason):
                failed[j][client] = r.error.reason
            else:
                raise ClientFailure(f"arm {requests[j].arm!r}, round {requests[j].round:g}: client {client} "
                                    f"(node {r.metadata.src_node_id}) failed: {r.error.reason}")
        for j in by_request:
            by_request[j].sort(key=lambda m: int(m.content["meta"]["partition-id"]))
        return by_request, failed

    # -- unlearning requests -------------------------------------------------------
    def ask(self, requests: list[AskRequest], context: AskContext) -> AskOutcome:
        """Several ``train.unlearn`` requests in ONE exchange (one round trip
        through the backend); replies in request order."""
        rec = state_to_record(context.state)
        messages, bytes_down = [], 0
        for i, request in enumerate(requests):
            content = RecordDict({"arrays": rec})
            bytes_down += rec.count_bytes()
            if request.arrays:
                content["extra"] = state_to_record(request.arrays)
                bytes_down += content["extra"].count_bytes()
            config = {"op": request.op, "arm": context.arm, "sc": self.scenario_index, "req": i, **request.config}
            if context.drop:
                config["drop"] = list(context.drop)
            if context.forget_event is not None:
                config["forget_event"] = context.forget_event
            content["config"] = ConfigRecord(config)
            messages.append(Message(content=content, message_type=MessageType.TRAIN + ".unlearn",
                                    dst_node_id=self.strategy.node_of[request.client]))
        ops = sorted({r.op for r in requests})
        what = f"arm {context.arm!r}: step {', '.join(ops)} on clients {[r.client for r in requests]}"
        replies = self._with_retries(messages, what)
        out: list[ClientReply | None] = [None] * len(requests)
        bytes_up = 0
        for reply in replies:
            rec_up = reply.content.array_records.get("extra")
            arrays_up = {k: v.numpy() for k, v in rec_up.items()} if rec_up is not None else {}
            bytes_up += rec_up.count_bytes() if rec_up is not None else 0
            metrics = {k: float(v) for k, v in reply.content["metrics"].items()}
            out[int(reply.content["meta"]["req"])] = ClientReply(arrays_up, metrics)
        return AskOutcome(out, bytes_up, bytes_down)

    def _with_retries(self, messages: list[Message], what: str) -> list[Message]:
        """Every reply of an unlearning step; a failed request is sent again up
        to ``policy.retries`` times, then the run stops naming the step."""
        pending, done = list(messages), []
        for attempt in range(self.policy.retries + 1):
            replies = self._send(pending, what)
            by_id = {m.metadata.message_id: m for m in pending}
            errors = [r for r in replies if r.has_error()]
            done += [r for r in replies if not r.has_error()]
            if not errors:
                return done
            if attempt == self.policy.retries:
                r = errors[0]
                raise ClientFailure(
                    f"{what}: client {self.client_of.get(r.metadata.src_node_id, '?')} failed "
                    f"{attempt + 1} time(s) (runtime.client_retries = {self.policy.retries}): {r.error.reason}"
                )
            # Fresh copies (a message is pushed once) of the failed requests.
            pending = [Message(content=by_id[r.metadata.reply_to_message_id].content,
                               message_type=by_id[r.metadata.reply_to_message_id].metadata.message_type,
                               dst_node_id=by_id[r.metadata.reply_to_message_id].metadata.dst_node_id)
                       for r in errors]
        return done
