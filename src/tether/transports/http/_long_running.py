"""Long-running operations over HTTP: `202 Accepted`, a status location, polls.

A call of an operation declared `@tether.long_running` runs in a task of the
app's nursery, not the request's. The request waits for it `ready_within`
seconds (the policy's, else the server's setting); a result ready by then is
answered as any call's. Otherwise the answer is `202 Accepted` with
`Location: {prefix}/operations/{id}` (an unguessable id) and `Retry-After`.

* `GET` of the location: 202 and `{"status": "running", "progress": ...}`
  while the impl runs; its reply (200 and the result, or the error) once done.
  A collected reply is kept a few seconds more for a GET whose answer was
  lost, then dropped.
* `DELETE`: cancels the impl (or drops the reply); 204.
* A reply not collected within `keep_result` seconds of its end is dropped; a
  running operation nobody polled for `keep_result` (plus a poll interval) is
  cancelled.
* Only the frontend that started it sees it: besides the id, a call that
  carried `Authorization` is polled with the same one (others get 404).
* The operations held at once are bounded (`max_operations`); past it, 503.
"""

from __future__ import annotations

import contextvars
import hashlib
import hmac
import logging
import math
import secrets
from typing import Any

import trio

from ...runtime import Dispatcher, NotFound, Unavailable
from ...runtime._codec import dumps
from ...runtime._dispatch import PreparedCall
from ...runtime._progress import Progress
from ...runtime._protocol import Error, Result
from ._asgi import DisconnectWatch, Receive, Send, raw_header, send_empty, takes_frame
from ._stream_server import send_reply
from ._wire import JSON

__all__ = [
    "DEFAULT_MAX_OPERATIONS",
    "DEFAULT_READY_WITHIN",
    "LongRunningOperations",
]

_log = logging.getLogger("tether.http")

#: Seconds the server waits for a long-running call's result before it answers
#: 202, unless the operation's policy says `ready_within`.
DEFAULT_READY_WITHIN = 2.0
#: Long-running operations a server holds at once (running, or done and not
#: yet collected); more are refused with 503.
DEFAULT_MAX_OPERATIONS = 256
#: Seconds a collected reply is kept for a GET whose answer was lost.
COLLECTED_GRACE = 5.0
_NO_STORE = (b"cache-control", b"no-store")


def _ignore() -> None:
    pass


def _fingerprint(authorization: str | None) -> bytes | None:
    # Only a digest is kept: the credential itself never lingers in memory
    # longer than the request that carried it.
    return None if authorization is None else hashlib.sha256(authorization.encode()).digest()


class Operation:
    """One long-running call the server holds: running, or done and waiting to be collected."""

    __slots__ = (
        "activity_id",
        "credential",
        "done",
        "hold",
        "id",
        "keep_result",
        "prepared",
        "progress",
        "reply",
        "retry_after",
        "scope",
    )

    def __init__(
        self,
        prepared: PreparedCall,
        authorization: str | None,
        keep_result: float,
        poll_interval: float,
        route: str | None = None,
    ) -> None:
        token = secrets.token_urlsafe(24)
        # The server's routing token first, as in IPC session ids: a proxy sends
        # the polls to the process that holds the operation.
        self.id = token if route is None else f"{route}.{token}"
        self.prepared = prepared
        self.activity_id = prepared.context.activity_id
        self.credential = _fingerprint(authorization)
        self.keep_result = keep_result
        self.retry_after = max(1, math.ceil(poll_interval))
        #: How long a running operation waits for its next poll before it is cancelled.
        self.hold = keep_result + self.retry_after
        #: Cancelled by DELETE, by the client leaving before the 202, and by expiry.
        self.scope = trio.CancelScope()
        self.done = trio.Event()
        self.reply: Result | Error | None = None
        self.progress: Progress | None = None

    def __repr__(self) -> str:
        # The id is a bearer capability: never in a repr.
        return f"<long-running {self.prepared.context.operation} ({self.activity_id})>"

    async def report(self, call_id: int, progress: Progress) -> None:
        """The impl's `report_progress`: the next poll answers it."""
        self.progress = progress
        await trio.lowlevel.checkpoint()

    def allows(self, authorization: str | None) -> bool:
        """Whether a poll with `authorization` may see this operation."""
        if self.credential is None:
            return True
        given = _fingerprint(authorization)
        return given is not None and hmac.compare_digest(given, self.credential)

    def status(self) -> dict[str, Any]:
        """The body of a 202: the operation is running, and how far it got."""
        progress = self.progress
        return {"status": "running", "progress": None if progress is None else progress.to_json()}


class LongRunningOperations:
    """The long-running operations one HttpApp holds, and their routes."""

    __slots__ = (
        "_clean",
        "_dispatcher",
        "_held",
        "max_operations",
        "prefix",
        "ready_within",
        "routing_token",
    )

    def __init__(
        self,
        dispatcher: Dispatcher,
        prefix: str,
        ready_within: float,
        max_operations: int,
        clean: contextvars.Context,
        route: str | None = None,
    ) -> None:
        self._dispatcher = dispatcher
        self.routing_token = route
        self.prefix = prefix
        self.ready_within = ready_within
        self.max_operations = max_operations
        self._clean = clean
        self._held: dict[str, Operation] = {}

    def __len__(self) -> int:
        return len(self._held)

    async def call(
        self,
        prepared: PreparedCall,
        authorization: str | None,
        receive: Receive,
        send: Send,
        echo: list[tuple[bytes, bytes]],
        nursery: trio.Nursery,
    ) -> Result | Error | None:
        """Start a long-running call; return its reply if it is ready in time.

        Returns:
            The reply, for the caller to answer as any call's; None when this
            answered already (202), or the client left (the impl is cancelled).

        Raises:
            Unavailable: the server holds `max_operations` already (nothing ran).
        """
        policy = prepared.operation.policy.long_running
        assert policy is not None
        if len(self._held) >= self.max_operations:
            raise Unavailable(
                f"this backend holds {self.max_operations} long-running operations already: "
                "retry shortly",
                retry_after=1,
            )
        operation = Operation(
            prepared, authorization, policy.keep_result, policy.poll_interval, self.routing_token
        )
        prepared.progress = operation
        self._held[operation.id] = operation
        # Spawned from an empty context: the call's own is set by `run_in`.
        self._clean.run(nursery.start_soon, self._run, operation)
        wait = policy.ready_within if policy.ready_within is not None else self.ready_within
        watch = DisconnectWatch(receive)
        watch.call_scope = operation.scope  # a client gone before the 202 cancels the impl
        async with trio.open_nursery() as watching:
            watching.start_soon(watch.run)
            with trio.move_on_after(wait):
                await operation.done.wait()
            watch.scope.cancel()
        if watch.disconnected:
            self._forget(operation)
            return None
        if operation.reply is not None:
            self._forget(operation)
            return operation.reply
        # Polls keep it: one that does not come within `hold` lets it go.
        operation.scope.deadline = trio.current_time() + operation.hold
        location = f"{self.prefix}/operations/{operation.id}".encode()
        await self._send_status(send, operation, [*echo, (b"location", location)])
        return None

    async def _run(self, operation: Operation) -> None:
        prepared = operation.prepared
        try:
            with operation.scope:
                with trio.CancelScope() as call_scope:
                    operation.reply = await self._dispatcher.run_in(prepared, call_scope, _ignore)
                if operation.reply is None:
                    # The caller's deadline passed: 504 (None if it was not that).
                    operation.reply = self._dispatcher.interrupted(prepared)
                operation.done.set()
                if operation.reply is None:
                    return
                # Done: kept `keep_result` seconds for a poll to collect it.
                operation.scope.deadline = trio.current_time() + operation.keep_result
                await trio.sleep_forever()
            if operation.reply is None:
                # Cancelled (DELETE, expiry, the client left): its access line.
                self._dispatcher.interrupted(prepared)
        finally:
            operation.done.set()
            if self._held.get(operation.id) is operation:
                del self._held[operation.id]

    def _forget(self, operation: Operation) -> None:
        operation.scope.cancel()
        if self._held.get(operation.id) is operation:
            del self._held[operation.id]

    def _find(self, operation_id: str, authorization: str | None) -> Operation:
        operation = self._held.get(operation_id)
        if operation is None or not operation.allows(authorization):
            raise NotFound(
                "no such long-running operation here: it was collected, cancelled or dropped "
                "(results not collected in time are), the server restarted, or it was started "
                "with another credential (poll with the Authorization that started it)"
            )
        return operation

    async def poll(
        self,
        operation_id: str,
        authorization: str | None,
        send: Send,
        cors: list[tuple[bytes, bytes]],
        limit: int,
        *,
        frame: bool,
    ) -> None:
        """`GET {prefix}/operations/{id}`: 202 and its progress, or its reply.

        Raises:
            NotFound: no such operation for this credential.
        """
        operation = self._find(operation_id, authorization)
        echo = [*cors, (b"x-correlation-id", (operation.activity_id or "").encode())]
        reply = operation.reply
        if reply is None:
            operation.scope.deadline = trio.current_time() + operation.hold
            await self._send_status(send, operation, echo)
            return
        await send_reply(send, reply, [*echo, _NO_STORE], limit, None, frame=frame)
        # Collected: kept only a little longer, for a GET whose answer was lost.
        operation.scope.deadline = min(
            operation.scope.deadline, trio.current_time() + COLLECTED_GRACE
        )

    async def route(
        self,
        send: Send,
        headers: list[tuple[bytes, bytes]],
        method: str,
        operation_id: str,
        cors: list[tuple[bytes, bytes]],
        limit: int,
    ) -> None:
        """`GET` or `DELETE {prefix}/operations/{id}`.

        Raises:
            NotFound: no such operation for this request's credential.
        """
        authorization = raw_header(headers, b"authorization")
        credential = None if authorization is None else authorization.decode("latin-1")
        if method == "DELETE":
            self.cancel(operation_id, credential)
            await send_empty(send, 204, cors)
            return
        frame = takes_frame(raw_header(headers, b"accept"))
        await self.poll(operation_id, credential, send, cors, limit, frame=frame)

    def cancel(self, operation_id: str, authorization: str | None) -> None:
        """`DELETE {prefix}/operations/{id}`: cancel the impl, or drop its reply.

        Raises:
            NotFound: no such operation for this credential.
        """
        self._forget(self._find(operation_id, authorization))

    async def _send_status(
        self, send: Send, operation: Operation, headers: list[tuple[bytes, bytes]]
    ) -> None:
        retry = (b"retry-after", b"%d" % operation.retry_after)
        await send(
            {
                "type": "http.response.start",
                "status": 202,
                "headers": [JSON, _NO_STORE, retry, *headers],
            }
        )
        await send({"type": "http.response.body", "body": dumps(operation.status())})
