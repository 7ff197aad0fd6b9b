"""The access line of an HTTP request that the dispatcher does not log.

A call that reaches the dispatcher gets its line there, with its outcome
(`ok`, the error code, `cancelled`, `deadline-exceeded`). Every other request
(refused before dispatch, a GET route, an IPC route) gets its line here, when
its answer is sent: one line per request, whatever it was (docs/http.md).
"""

from __future__ import annotations

import contextlib
from collections.abc import MutableMapping
from typing import Any

from ...runtime._codec import loads
from ...runtime._dispatch import access_line
from ._asgi import Scope, Send, header_text
from ._wire import STATUS_CODES

__all__ = ["HttpAccess"]


class HttpAccess:
    """One request's access line: who asked, what, and how it was answered.

    `send` stands in for the ASGI send and notes the answer's outcome from
    what goes out: `ok` below 400, else the `code` of tether's error body. A
    request that was never answered (its client left) is `cancelled`.

    What was asked (`<interface>.<operation>` on an RPC route, else
    `<METHOD> <path>`) and who asked (`X-Correlation-ID`, `X-Session-Id`,
    `X-Application-Id`) are made from the request only when this line is
    written, so a call the dispatcher logs costs no look at them;
    `activity_id` and `session_id`, when set (the ActivityId an RPC call was
    given, the session in an IPC path), stand instead of the headers.
    """

    __slots__ = (
        "_erred",
        "_scope",
        "_send",
        "activity_id",
        "dispatched",
        "outcome",
        "rpc_path",
        "session_id",
        "started",
    )

    def __init__(self, send: Send, started: float, scope: Scope) -> None:
        self._send = send
        self.started = started
        self._scope = scope
        #: On an RPC route, the path's parts after the prefix (`[interface,
        #: version, operation]`): the line names the operation.
        self.rpc_path: list[str] | None = None
        self.activity_id: str | None = None
        self.session_id: str | None = None
        self.outcome = "cancelled"
        #: The call reached the dispatcher, which writes its line.
        self.dispatched = False
        self._erred = False

    async def send(self, message: MutableMapping[str, Any]) -> None:
        kind = message["type"]
        if kind == "http.response.start":
            status = message["status"]
            self._erred = status >= 400
            self.outcome = STATUS_CODES.get(status, "error") if self._erred else "ok"
        elif self._erred and kind == "http.response.body":
            # Every error answer is tether's error body: its code says exactly
            # what the client was told (a 403 is forbidden or incompatible-version).
            self._erred = False
            with contextlib.suppress(Exception):
                self.outcome = str(loads(message["body"])["error"]["code"])
        await self._send(message)

    def log(self) -> None:
        """Write the line, unless the dispatcher wrote the call's own."""
        if self.dispatched:
            return
        scope = self._scope
        headers = scope["headers"]
        parts = self.rpc_path
        if parts is not None:
            operation = f"{parts[0]}.{parts[2]}"
        else:
            operation = f"{scope['method']} {scope['path']}"
        activity_id = self.activity_id
        if activity_id is None:
            activity_id = header_text(headers, b"x-correlation-id")
        session_id = self.session_id
        if session_id is None:
            session_id = header_text(headers, b"x-session-id")
        access_line(
            operation,
            self.outcome,
            self.started,
            activity_id=activity_id,
            session_id=session_id,
            application_id=header_text(headers, b"x-application-id"),
        )
