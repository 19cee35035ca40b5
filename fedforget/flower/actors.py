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

from fedforget.flower.inline import CLIENT_APP_RAISED_EXCEPTION, InlineGrid, call_client_app

#: Messages queued per actor: one running, one waiting, so no actor idles
#: for a driver round trip between two messages.
IN_FLIGHT_PER_ACTOR = 2


class _ClientWorker:
    """One Ray actor running the ClientApp for any node it is handed."""

    def __init__(self, client_app: ClientApp) -> None:
        self.client_app = client_app

    def handle(self, msg: Message, context: Context) -> tuple[Message, Context]:
        return call_client_app(self.client_app, msg, context), context


class ActorGrid(InlineGrid):
    """A Grid over ``num_nodes`` virtual SuperNodes served by a pool of Ray actors."""

    def __init__(
        self,
        client_app: ClientApp,
        num_nodes: int,
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
            raise RuntimeError(f"the Ray cluster ({res}) cannot host one client with "
                               f"num_cpus={num_cpus}, num_gpus={num_gpus}")
        worker_cls = ray.remote(_ClientWorker).options(num_cpus=num_cpus, num_gpus=num_gpus, max_restarts=2)
        self._workers = [worker_cls.remote(client_app) for _ in range(min(slots, num_nodes))]

    @property
    def num_actors(self) -> int:
        return len(self._workers)

    def push_messages(self, messages: Iterable[Message]) -> Iterable[str]:
        """Run every message on the pool; replies are ready when this returns."""
        import ray

        queue = deque((self._stamp(m), m) for m in messages)
        pending: dict = {}  # object ref -> (worker index, node, message)
        load = [0] * len(self._workers)
        ids = []
        while queue or pending:
            while queue and min(load) < IN_FLIGHT_PER_ACTOR:
                w = load.index(min(load))
                node, msg = queue.popleft()
                ref = self._workers[w].handle.remote(msg, self._contexts[node])
                pending[ref] = (w, node, msg)
                load[w] += 1
                ids.append(msg.metadata.message_id)
            (done,), _ = ray.wait(list(pending), num_returns=1)
            w, node, msg = pending.pop(done)
            load[w] -= 1
            try:
                reply, self._contexts[node] = ray.get(done)
            except ray.exceptions.RayError as err:  # the actor died: an error reply for this node
                reply = Message(Error(code=CLIENT_APP_RAISED_EXCEPTION, reason=f"Ray actor failed: {err}"),
                                reply_to=msg)
            reply.metadata.__dict__["_src_node_id"] = node
            self._replies[msg.metadata.message_id] = reply
        return ids

    def shutdown(self) -> None:
        import ray

        for w in self._workers:
            ray.kill(w)
        self._workers = []
        if self._owns_ray:
            ray.shutdown()
