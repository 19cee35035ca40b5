"""The ``inline`` engine: a Grid that hands messages straight to a ClientApp in
this process, no Ray. Same ServerApp, same ClientApp, same messages; used for
tests and debugging. A ClientApp exception becomes an error reply, as in
Flower's Simulation Runtime.
"""

from __future__ import annotations

from collections.abc import Iterable
from uuid import uuid4

from flwr.app import Context, Error, Message, RecordDict
from flwr.clientapp import ClientApp
from flwr.common.constant import SUPERLINK_NODE_ID
from flwr.serverapp import Grid
from flwr.supercore.run import Run
from flwr.supercore.task_identity import TaskIdentity

_FIRST_NODE_ID = 1001
CLIENT_APP_RAISED_EXCEPTION = 2  # flwr ErrorCode.CLIENT_APP_RAISED_EXCEPTION


def call_client_app(client_app: ClientApp, msg: Message, context: Context) -> Message:
    """The ClientApp's reply; an exception becomes an error reply, as in
    Flower's Simulation Runtime worker."""
    try:
        return client_app(msg, context)
    except Exception as ex:
        reason = f"{type(ex)}:<'{ex}'>"
        return Message(Error(code=CLIENT_APP_RAISED_EXCEPTION, reason=reason), reply_to=msg)


class InlineGrid(Grid):
    """A Grid over ``num_nodes`` in-process virtual SuperNodes."""

    def __init__(self, client_app: ClientApp, num_nodes: int, run_id: int = 1) -> None:
        self.client_app = client_app
        self._run = Run.create_empty(run_id=run_id)
        self._contexts = {
            _FIRST_NODE_ID + i: Context(
                run_id=run_id,
                node_id=_FIRST_NODE_ID + i,
                node_config={"partition-id": i, "num-partitions": num_nodes},
                state=RecordDict(),
                run_config={},
            )
            for i in range(num_nodes)
        }
        self._replies: dict[str, Message] = {}
        # Message() reads the sender's identity from the process, as in a ServerApp.
        TaskIdentity.task_id = 1
        TaskIdentity.run_id = run_id
        TaskIdentity.node_id = SUPERLINK_NODE_ID

    def set_run(self, run: Run) -> None:
        self._run = run

    @property
    def run(self) -> Run:
        return self._run

    def create_message(self, content, message_type, dst_node_id, group_id, ttl=None) -> Message:
        return Message(content, dst_node_id, message_type, ttl=ttl, group_id=group_id)

    def get_node_ids(self) -> Iterable[int]:
        return list(self._contexts)

    def _stamp(self, msg: Message) -> int:
        """Give a pushed message its id and run; returns its node."""
        msg.metadata.__dict__["_message_id"] = str(uuid4())
        msg.metadata.__dict__["_run_id"] = self._run.run_id
        node = msg.metadata.dst_node_id
        if node not in self._contexts:
            raise ValueError(f"no node {node}")
        return node

    def push_messages(self, messages: Iterable[Message]) -> Iterable[str]:
        ids = []
        for msg in messages:
            node = self._stamp(msg)
            reply = call_client_app(self.client_app, msg, self._contexts[node])
            reply.metadata.__dict__["_src_node_id"] = node
            self._replies[msg.metadata.message_id] = reply
            ids.append(msg.metadata.message_id)
        return ids

    def pull_messages(self, message_ids: Iterable[str]) -> Iterable[Message]:
        return [self._replies.pop(i) for i in list(message_ids) if i in self._replies]

    def send_and_receive(self, messages: Iterable[Message], *, timeout: float | None = None) -> Iterable[Message]:
        return self.pull_messages(self.push_messages(messages))
