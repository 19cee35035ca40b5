"""The ``actors`` engine: the same ServerApp and ClientApp, the ClientApp running
in a pool of Ray actors, behind a Grid of our own.

Flower's Simulation Runtime (the ``ray`` engine) routes every message through
its SuperLink state and polls for replies every 0.1 s, which dominates small
rounds. :class:`ActorGrid` hands each message straight to an idle actor and
returns when every reply is in. Nodes are virtual as in Flower's runtime: an
actor serves whichever node's message it is given, with that node's Context
sent along (and its updated state kept), so load balances across actors.

On one machine the pool has one actor per ``num_cpus`` (and ``num_gpus``) of the
local Ray instance; with ``runtime.address`` it joins an existing Ray cluster and
spreads actors over its nodes (every node needs fedforget installed).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable

from flwr.app import Context, Error, Message
from flwr.clientapp import ClientApp

from fedforget.flower.inline import (
    CLIENT_APP_RAISED_EXCEPTION,
    InlineGrid,
    call_client_app,
)

#: Batches queued per actor: one running, one waiting, so no actor idles
#: for a driver round trip between two batches.
IN_FLIGHT_PER_ACTOR = 2
#: Messages per actor call, at most: one call per message costs a Ray task
#: (~1 ms) and a pickle of the model each; a batch pickles a model shared by
#: its messages once. Batches stay small enough to balance the load.
MAX_BATCH = 16


class _ClientWorker:
    """One Ray actor running the ClientApp for any node it is handed."""

    def __init__(self, client_app: ClientApp) -> None:
        self.client_app = client_app

    def handle(self, batch: list[tuple[Message, Context]]) -> list[tuple[Message, Context]]:
        return [(call_client_app(self.client_app, msg, context), context) for msg, context in batch]

    def node(self) -> str:
        """The Ray node this actor runs on."""
        import ray

        return ray.get_runtime_context().get_node_id()


class ActorGrid(InlineGrid):
    """A Grid over ``num_nodes`` virtual SuperNodes served by a pool of Ray actors."""

    def __init__(
        self,
        client_app: ClientApp,
        num_nodes: int,
        *,
        num_cpus: float = 1.0,
        num_gpus: float = 0.0,
        address: str = "",
        verbose: bool = False,
        run_id: int = 1,
    ) -> None:
        import ray

        super().__init__(client_app, num_nodes, run_id)
        self._owns_ray = not ray.is_initialized()
        if self._owns_ray:
            ray.init(address=address or None, include_dashboard=False, log_to_driver=verbose,
                     logging_level="DEBUG" if verbose else "ERROR")
        res = ray.cluster_resources()
        slots = int(res.get("CPU", 1) // num_cpus)
        if num_gpus > 0:
            slots = min(slots, int(res.get("GPU", 0) // num_gpus))
        if slots < 1:
            if self._owns_ray:
                ray.shutdown()
            raise RuntimeError(f"the Ray cluster ({res}) cannot host one client with "
                               f"num_cpus={num_cpus}, num_gpus={num_gpus}")
        worker_cls = ray.remote(_ClientWorker).options(num_cpus=num_cpus, num_gpus=num_gpus, max_restarts=2)
        self._workers = [worker_cls.remote(client_app) for _ in range(min(slots, num_nodes))]

    @property
    def num_actors(self) -> int:
        return len(self._workers)

    def actor_nodes(self) -> list[str]:
        """The Ray node of each actor (several on a multi-node cluster)."""
        import ray

        return ray.get([w.node.remote() for w in self._workers])

    def push_messages(self, messages: Iterable[Message]) -> Iterable[str]:
        """Run every message on the pool; replies are ready when this returns."""
        import ray

        todo = [(self._stamp(m), m) for m in messages]
        size = max(1, min(MAX_BATCH, -(-len(todo) // (IN_FLIGHT_PER_ACTOR * len(self._workers)))))
        queue = deque(todo[i : i + size] for i in range(0, len(todo), size))
        pending: dict = {}  # object ref -> (worker index, batch)
        load = [0] * len(self._workers)
        while queue or pending:
            while queue and min(load) < IN_FLIGHT_PER_ACTOR:
                w = load.index(min(load))
                batch = queue.popleft()
                ref = self._workers[w].handle.remote([(msg, self._contexts[node]) for node, msg in batch])
                pending[ref] = (w, batch)
                load[w] += 1
            (done,), _ = ray.wait(list(pending), num_returns=1)
            w, batch = pending.pop(done)
            load[w] -= 1
            try:
                results = ray.get(done)
            except ray.exceptions.RayError as err:  # the actor died: an error reply for each of its nodes
                results = [(Message(Error(code=CLIENT_APP_RAISED_EXCEPTION, reason=f"Ray actor failed: {err}"),
                                    reply_to=msg), self._contexts[node]) for node, msg in batch]
            for (node, msg), (reply, context) in zip(batch, results, strict=True):
                self._contexts[node] = context
                reply.metadata.__dict__["_src_node_id"] = node
                self._replies[msg.metadata.message_id] = reply
        return [msg.metadata.message_id for _, msg in todo]

    def shutdown(self) -> None:
        import ray

        for w in self._workers:
            ray.kill(w)
        self._workers = []
        if self._owns_ray:
            ray.shutdown()
