"""Message exchange for many arms over one Grid, and the handle methods get.

:class:`FederationRuntime` owns the node <-> client mapping, sends every arm's
messages of a round in one batch (so the backend can run them in parallel),
records each message in the events log, accounts bytes and client steps, and
stops the run with a clear error when a client fails.

:class:`FederationHandle` is the narrow view one unlearning method gets during one
withdrawal event (see :class:`fedforget.unlearning.base.Federation`).
"""

from __future__ import annotations

import time
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from flwr.app import Array, ArrayRecord, ConfigRecord, Message, MessageType, RecordDict
from flwr.serverapp import Grid

from fedforget.flower.arrays import record_to_state
from fedforget.flower.strategy import ClientFailure, DivergenceError, FedForgetStrategy
from fedforget.results import RunWriter
from fedforget.schedule import derive_seed
from fedforget.unlearning.base import ClientReply, CostRecord, HistoryEntry

EXCHANGE_TIMEOUT_S = 1800.0
NODE_REGISTRATION_TIMEOUT_S = 120.0
NODE_COUNT_STABLE_S = 10.0  # a count unchanged this long has finished registering


@dataclass
class TrainJob:
    """One arm's training in one round."""

    arm: str
    round_tag: int | str
    state: dict[str, torch.Tensor]
    clients: list[int]
    epochs: float | None = None
    keep_client_states: bool = False
    seed: int | None = None  # overrides the scenario seed (the oracle's reference federations)
    train_ids: dict[int, np.ndarray] | None = None  # per-client training ids (reference federations only)
    drop: list[int] | None = None  # deletion events in force in this arm


@dataclass(frozen=True)
class FailurePolicy:
    """What a client's error reply does (``[runtime]`` min_replies,
    on_client_error, client_retries)."""

    min_replies: int = 1
    on_client_error: str = "abort"
    retries: int = 0
    mark_divergence: bool = False  # on_divergence = "mark": report it in the outcome instead of raising

    def records(self, reason: str) -> bool:
        """A training error is recorded (not fatal): a simulated failure always,
        a ClientApp exception unless on_client_error = 'abort'."""
        return self.on_client_error == "record" or "SimulatedClientFailure" in reason


@dataclass
class TrainOutcome:
    state: dict[str, torch.Tensor]  # aggregated (unchanged if nobody trained)
    failed: dict[int, str] = field(default_factory=dict)  # client -> reason (recorded failures)
    diverged: str = ""  # what went non-finite (on_divergence = "mark"; otherwise train raises)
    client_states: dict[int, dict[str, torch.Tensor]] = field(default_factory=dict)
    num_examples: dict[int, int] = field(default_factory=dict)
    steps: int = 0
    bytes_up: int = 0
    bytes_down: int = 0
    wall_s: float = 0.0  # of the whole exchange this job was sent in


def _state_to_record(state: dict[str, torch.Tensor]) -> ArrayRecord:
    return ArrayRecord({k: Array(v.detach().cpu().numpy()) for k, v in state.items()})


def divergence(state: dict[str, torch.Tensor], losses: list[float] = ()) -> str:
    """What is non-finite in a state (or the losses), or '' when nothing is."""
    bad = [k for k, v in state.items() if v.is_floating_point() and not bool(torch.isfinite(v).all())]
    if bad:
        return f"non-finite weights ({', '.join(bad[:3])})"
    return "a non-finite training loss" if not all(np.isfinite(losses)) else ""


class FederationRuntime:
    """All message traffic of one scenario run."""

    def __init__(
        self, grid: Grid, seed: int, num_clients: int, fraction: float, writer: RunWriter, scenario_index: int = 0,
        policy: FailurePolicy = FailurePolicy(),
    ) -> None:
        self.policy = policy
        self.grid = grid
        self.scenario_index = scenario_index
        self.writer = writer
        self.seed = seed
        self.num_clients = num_clients
        node_of = self._discover(num_clients)
        self.strategy = FedForgetStrategy(seed, num_clients, node_of, fraction, scenario_index)

    # -- plumbing ---------------------------------------------------------------
    def _exchange(self, messages: list[Message], what: str) -> list[Message]:
        """Every reply, ordered by partition id; any error stops the run."""
        replies = self._send(messages, what)
        if hasattr(self, "strategy"):
            return self.strategy.check_replies(replies)
        for r in replies:
            if r.has_error():
                raise ClientFailure(f"{what}: node {r.metadata.src_node_id} failed: {r.error.reason}")
        return replies

    def _send(self, messages: list[Message], what: str) -> list[Message]:
        """Send, log and collect one reply per message (errors included)."""
        if not messages:
            return []
        for m in messages:
            cfg = m.content.config_records.get("config")
            self.writer.event(
                "message",
                type=m.metadata.message_type,
                client=self._client_of_node(m.metadata.dst_node_id),
                arm=str(cfg["arm"]) if cfg is not None and "arm" in cfg else "",
                round=str(cfg["round"]) if cfg is not None and "round" in cfg else "",
                op=str(cfg["op"]) if cfg is not None and "op" in cfg else "",
                drop=str(cfg["drop"]) if cfg is not None and "drop" in cfg else "",
            )
        replies = list(self.grid.send_and_receive(messages, timeout=EXCHANGE_TIMEOUT_S))
        if len(replies) != len(messages):
            raise ClientFailure(
                f"{what}: {len(messages) - len(replies)} of {len(messages)} clients did not reply "
                f"within {EXCHANGE_TIMEOUT_S:.0f} s"
            )
        return replies

    def _client_of_node(self, node_id: int) -> int | None:
        if hasattr(self, "strategy"):
            return self.strategy.client_of.get(node_id)
        return None

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
        node_ids = self._wait_for_nodes(num_clients)
        msgs = [
            Message(content=RecordDict(), message_type=MessageType.QUERY + ".whoami", dst_node_id=n)
            for n in node_ids
        ]
        replies = self._exchange(msgs, "node discovery")
        node_of = {int(r.content["metrics"]["partition-id"]): r.metadata.src_node_id for r in replies}
        if sorted(node_of) != list(range(num_clients)):
            raise RuntimeError(f"nodes report partition ids {sorted(node_of)}, expected 0..{num_clients - 1}")
        return node_of

    # -- training ---------------------------------------------------------------
    def train(self, jobs: list[TrainJob]) -> list[TrainOutcome]:
        """Run several arms' local training in one exchange and aggregate each."""
        messages: list[Message] = []
        owners: list[int] = []
        records = []
        for j, job in enumerate(jobs):
            rec = _state_to_record(job.state)
            records.append(rec)
            msgs = self.strategy.configure_train_arm(
                job.round_tag, rec, job.clients, job.arm, job.epochs, job.seed, job.drop
            )
            # Tag each message with its job (arm names may repeat across jobs).
            for m in msgs:
                m.content["config"]["job"] = j
                c = self.strategy.client_of[m.metadata.dst_node_id]
                if job.train_ids and c in job.train_ids:
                    # The oracle's reference training only (auditor-side, not the protocol).
                    m.content["train_ids"] = ArrayRecord({"ids": Array(np.asarray(job.train_ids[c], dtype=np.int64))})
            messages += msgs
            owners += [j] * len(msgs)
        t0 = time.perf_counter()
        replies = self._send(messages, "training")
        wall = time.perf_counter() - t0
        # Message ids are given when the Grid pushes the messages.
        sent = {m.metadata.message_id: (owner, self.strategy.client_of[m.metadata.dst_node_id])
                for m, owner in zip(messages, owners, strict=True)}
        by_job, failed = self._split_train_replies(replies, sent, jobs)
        out = []
        for j, job in enumerate(jobs):
            reps = by_job.get(j, [])
            need = min(self.policy.min_replies, len(job.clients))
            if len(reps) < need:
                raise ClientFailure(
                    f"arm {job.arm!r}, round {job.round_tag}: {len(reps)} of {len(job.clients)} clients replied "
                    f"(runtime.min_replies = {self.policy.min_replies}); failures: {failed.get(j, {})}"
                )
            outcome = TrainOutcome(state={k: v.clone() for k, v in job.state.items()}, wall_s=wall,
                                   failed=failed.get(j, {}))
            outcome.bytes_down = records[j].count_bytes() * len(job.clients)
            if reps:
                agg, _ = self.strategy.aggregate_train(0, reps)
                outcome.state = record_to_state(agg)
            what = divergence(outcome.state, [float(r.content["metrics"]["train-loss"]) for r in reps])
            if what and not self.policy.mark_divergence:
                raise DivergenceError(f"arm {job.arm!r} diverged in round {job.round_tag}: {what} "
                                      f"(is train.lr too high for this model?)")
            outcome.diverged = what
            for r in reps:
                cid = int(r.content["meta"]["partition-id"])
                outcome.steps += int(r.content["metrics"]["steps"])
                outcome.bytes_up += r.content["arrays"].count_bytes()
                outcome.num_examples[cid] = int(r.content["metrics"]["num-examples"])
                if job.keep_client_states:
                    outcome.client_states[cid] = record_to_state(r.content["arrays"])
            out.append(outcome)
        return out

    def _split_train_replies(self, replies, sent, jobs):
        """Replies by job, in partition-id order, and recorded failures by job;
        an error the policy does not record stops the run."""
        by_job: dict[int, list[Message]] = defaultdict(list)
        failed: dict[int, dict[int, str]] = defaultdict(dict)
        for r in replies:
            j, client = sent[r.metadata.reply_to_message_id]
            if not r.has_error():
                by_job[j].append(r)
            elif self.policy.records(r.error.reason):
                failed[j][client] = r.error.reason
            else:
                raise ClientFailure(f"arm {jobs[j].arm!r}, round {jobs[j].round_tag}: client {client} "
                                    f"(node {r.metadata.src_node_id}) failed: {r.error.reason}")
        for j in by_job:
            by_job[j].sort(key=lambda m: int(m.content["meta"]["partition-id"]))
        return by_job, failed

    def ask_batch(
        self,
        requests: list[tuple[int, str, dict[str, np.ndarray] | None, dict[str, Any]]],
        arm: str,
        state: dict[str, torch.Tensor],
    ) -> tuple[list[ClientReply], int, int]:
        """Several ``train.unlearn`` requests ``(client, op, arrays, config)`` in ONE
        exchange (one round trip through the backend); returns the replies in
        request order, bytes up and bytes down."""
        rec = _state_to_record(state)
        messages, bytes_down = [], 0
        for i, (client, op, arrays, config) in enumerate(requests):
            content = RecordDict({"arrays": rec})
            bytes_down += rec.count_bytes()
            if arrays:
                content["extra"] = ArrayRecord({k: Array(np.ascontiguousarray(v)) for k, v in arrays.items()})
                bytes_down += content["extra"].count_bytes()
            content["config"] = ConfigRecord({"op": op, "arm": arm, "sc": self.scenario_index, "req": i, **config})
            messages.append(
                Message(content=content, message_type=MessageType.TRAIN + ".unlearn", dst_node_id=self.strategy.node_of[client])
            )
        ops = sorted({op for _, op, _, _ in requests})
        replies = self._with_retries(messages, f"arm {arm!r}: step {', '.join(ops)} on clients {[r[0] for r in requests]}")
        out: list[ClientReply | None] = [None] * len(requests)
        bytes_up = 0
        for reply in replies:
            rec_up = reply.content.array_records.get("extra")
            arrays_up = {k: v.numpy() for k, v in rec_up.items()} if rec_up is not None else {}
            bytes_up += rec_up.count_bytes() if rec_up is not None else 0
            metrics = {k: float(v) for k, v in reply.content["metrics"].items()}
            out[int(reply.content["meta"]["req"])] = ClientReply(arrays_up, metrics)
        return out, bytes_up, bytes_down

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
                    f"{what}: client {self.strategy.client_of.get(r.metadata.src_node_id, '?')} failed "
                    f"{attempt + 1} time(s) (runtime.client_retries = {self.policy.retries}): {r.error.reason}"
                )
            # Fresh copies (a message is pushed once) of the failed requests.
            pending = [Message(content=by_id[r.metadata.reply_to_message_id].content,
                               message_type=by_id[r.metadata.reply_to_message_id].metadata.message_type,
                               dst_node_id=by_id[r.metadata.reply_to_message_id].metadata.dst_node_id)
                       for r in errors]
        return done

    def ask(
        self,
        clients: list[int],
        op: str,
        arm: str,
        state: dict[str, torch.Tensor],
        arrays: dict[str, np.ndarray] | None,
        config: dict[str, Any],
    ) -> tuple[dict[int, ClientReply], int, int]:
        """The same ``train.unlearn`` request to some clients (one exchange)."""
        replies, up, down = self.ask_batch([(c, op, arrays, config) for c in clients], arm, state)
        return dict(zip(clients, replies, strict=True)), up, down


class FederationHandle:
    """What one unlearning method sees of the federation during one event."""

    def __init__(
        self,
        runtime: FederationRuntime,
        arm: str,
        event_round: int,
        withdrawing: list[int],
        excluded: set[int],
        model_factory: Callable[[], torch.nn.Module],
        num_classes: int,
        history: list[HistoryEntry],
        validation_accuracy: Callable[[torch.nn.Module], float],
        local_epochs: int = 1,
        drop: list[int] | None = None,
        event_index: int = -1,
        server_validation: tuple[torch.Tensor, torch.Tensor] | None = None,
        train_lr: float = 0.05,
    ) -> None:
        self.local_epochs = local_epochs
        self.train_lr = train_lr
        self._server_validation = server_validation
        self.drop = list(drop or [])  # deletion events in force (including this one)
        self.event_index = event_index
        self.runtime = runtime
        self.arm = arm
        self.round = event_round
        self.withdrawing = list(withdrawing)
        self.remaining = [c for c in range(runtime.num_clients) if c not in excluded]
        self.num_clients = runtime.num_clients
        self.num_classes = num_classes
        self._model_factory = model_factory
        self._history = history
        self._validation_accuracy = validation_accuracy
        self._cost = CostRecord()
        self._n_rounds = 0

    def build_model(self) -> torch.nn.Module:
        return self._model_factory()

    def ask_client(self, client, op, model, arrays, config) -> ClientReply:
        if client not in self.withdrawing:
            raise ValueError(f"ask_client: client {client} is not withdrawing in this event")
        return self._ask([client], op, model, arrays, config)[client]

    def ask_remaining(self, op, model, arrays, config, clients) -> dict[int, ClientReply]:
        bad = [c for c in clients if c not in self.remaining]
        if bad:
            raise ValueError(f"ask_remaining: clients {bad} are not remaining clients")
        return self._ask(list(clients), op, model, arrays, config)

    def _ask(self, clients, op, model, arrays, config) -> dict[int, ClientReply]:
        replies = self._batch([(c, op, arrays, config) for c in clients], model)
        return dict(zip(clients, replies, strict=True))

    def ask_batch(self, requests, model) -> list[ClientReply]:
        allowed = set(self.withdrawing) | set(self.remaining)
        bad = [c for c, *_ in requests if c not in allowed]
        if bad:
            raise ValueError(f"ask_batch: clients {bad} are neither withdrawing nor remaining")
        return self._batch(requests, model)

    def _batch(self, requests, model) -> list[ClientReply]:
        extra_cfg = {"drop": ",".join(map(str, self.drop)), "forget_event": self.event_index}
        requests = [(c, op, arrays, {**config, **extra_cfg}) for c, op, arrays, config in requests]
        replies, up, down = self.runtime.ask_batch(requests, self.arm, model.state_dict())
        self._cost.bytes_up += up
        self._cost.bytes_down += down
        self._cost.client_steps += sum(int(r.metrics.get("steps", 0)) for r in replies)
        return replies

    def self_check(self, model) -> float:
        replies = self._ask(self.withdrawing, "self_check", model, None, {})
        n = sum(r.metrics["n"] for r in replies.values())
        return float(sum(r.metrics["auc"] * r.metrics["n"] for r in replies.values()) / n)

    def _tag(self) -> str:
        self._n_rounds += 1
        return f"{self.arm}:e{self.round}:{self._n_rounds}"

    def train_remaining(self, model, tag, *, epochs=None, clients=None):
        tag = f"{self._tag()}:{tag}"
        if clients is None:
            clients = self.runtime.strategy.sample(tag, set(range(self.num_clients)) - set(self.remaining))
        elif any(c not in self.remaining for c in clients):
            raise ValueError(f"train_remaining: {clients} includes clients that are not remaining")
        (res,) = self.runtime.train(
            [TrainJob(self.arm, tag, model.state_dict(), clients, epochs, keep_client_states=True, drop=self.drop)]
        )
        self._account(res)
        return res.client_states, res.num_examples

    def run_rounds(self, model, k, tag, *, epochs=None):
        state = {n: v.detach().clone() for n, v in model.state_dict().items()}
        excluded = set(range(self.num_clients)) - set(self.remaining)
        for _ in range(k):
            rtag = f"{self._tag()}:{tag}"
            clients = self.runtime.strategy.sample(rtag, excluded)
            (res,) = self.runtime.train([TrainJob(self.arm, rtag, state, clients, epochs, drop=self.drop)])
            self._account(res)
            state = res.state
        out = self.build_model()
        out.load_state_dict(state)
        return out

    def _account(self, res: TrainOutcome) -> None:
        self._cost.client_steps += res.steps
        self._cost.bytes_up += res.bytes_up
        self._cost.bytes_down += res.bytes_down
        self._cost.rounds += 1

    def history(self) -> list[HistoryEntry]:
        return list(self._history)

    def server_validation_data(self):
        sv = self._server_validation
        return sv if sv is not None and len(sv[1]) else None

    def validation_accuracy(self, model) -> float:
        return self._validation_accuracy(model)

    def log(self, **info) -> None:
        self.runtime.writer.event("unlearn_step", arm=self.arm, round=self.round, **info)

    def cost(self) -> CostRecord:
        return CostRecord(**vars(self._cost))

    def seed(self, *parts) -> int:
        return derive_seed(self.runtime.seed, "method", self.arm, self.round, *parts)
