"""IPC over HTTP, the backend's side: sessions opened with `POST {prefix}/ipc`,
messages from the frontend as POSTs, messages to it as Server-Sent Events.
"""

from __future__ import annotations

import hmac
import logging
import secrets
from collections import deque
from collections.abc import Callable

import trio

from ...runtime import (
    BackendIpc,
    ConnectionClosed,
    InvalidRequest,
    MessageStream,
    NotFound,
    PayloadTooLarge,
    Unavailable,
    serve_ipc_session,
)
from ...runtime._codec import dumps, loads
from ...runtime._protocol import Error, decode
from ._asgi import (
    DisconnectWatch,
    Receive,
    Refused,
    Scope,
    Send,
    header_text,
    not_allowed,
    raw_header,
    read_body,
    send_empty,
    send_error_info,
)
from ._wire import JSON

__all__ = ["DEFAULT_IPC_GRACE_PERIOD", "HttpIpcSession", "IpcRoutes", "ServerStream"]

_log = logging.getLogger("tether.http")

#: Seconds an IPC session outlives its event stream, so a frontend can reconnect.
DEFAULT_IPC_GRACE_PERIOD = 5.0
#: Seconds between comment lines on an idle event stream (keeps proxies from
#: cutting it, and shows a dead client).
_EVENTS_KEEPALIVE = 15.0
#: Messages of a session's event stream kept for a reconnecting client.
_REPLAY = 1024
#: Seconds the backend may take to answer an IPC hello.
_HANDSHAKE_TIMEOUT = 10.0
#: Messages from the frontend a session buffers before its POSTs wait.
_INBOUND_BUFFER = 64


class IpcRoutes:
    """The IPC routes of an `HttpApp`: `{prefix}/ipc` and the sessions under it.

    Sessions run in the nursery the app's ASGI lifespan owns, so they end
    when the server does.
    """

    def __init__(self, ipc: BackendIpc, prefix: str, max_body_size: int, grace: float) -> None:
        self.ipc = ipc
        self.prefix = prefix
        self.max_body_size = max_body_size
        self.ipc_grace_period = grace
        self._sessions: dict[str, HttpIpcSession] = {}

    def close_all(self, reason: str) -> None:
        """End every open session with `reason` (the server is shutting down)."""
        for session in list(self._sessions.values()):
            session.stream.close_from_backend(reason)

    async def route(
        self,
        receive: Receive,
        send: Send,
        headers: list[tuple[bytes, bytes]],
        method: str,
        parts: list[str],
        scope: Scope,
        cors: list[tuple[bytes, bytes]],
        nursery: trio.Nursery | None,
        *,
        shutting_down: bool,
    ) -> None:
        """Answer a request under `{prefix}/ipc`; `parts` is its path after the prefix.

        Args:
            nursery: Where sessions run (the lifespan's), or None when the app
                is served without the lifespan protocol (IPC is refused then).
            shutting_down: The server is shutting down: no new session opens.
        """
        if len(parts) == 1:
            if method != "POST":
                raise not_allowed(method, "POST")
            if shutting_down:
                raise Refused(
                    Unavailable("this backend is shutting down: retry shortly", retry_after=1)
                )
            await self._open(receive, send, headers, cors, nursery, scope.get("client"))
            return
        session = self._authorized_session(parts[1], headers, scope)
        if len(parts) == 2:
            if method == "POST":
                body = await read_body(
                    receive, raw_header(headers, b"content-length"), self.max_body_size
                )
                await session.stream.from_frontend(body)
                await send_empty(send, 202, cors)
            elif method == "DELETE":
                session.stream.close_from_frontend("the frontend left")
                await send_empty(send, 204, cors)
            else:
                raise not_allowed(method, "POST, DELETE")
        elif len(parts) == 3 and parts[2] == "events":
            if method != "GET":
                raise not_allowed(method, "GET")
            last = header_text(headers, b"last-event-id")
            await session.stream.stream_events(receive, send, last, cors)
        else:
            raise Refused(NotFound(f"nothing is served at {scope['path']}"))

    def _authorized_session(
        self, session_id: str, headers: list[tuple[bytes, bytes]], scope: Scope
    ) -> HttpIpcSession:
        token = header_text(headers, b"x-session-token")
        if token is None:
            for pair in scope.get("query_string", b"").decode("latin-1").split("&"):
                key, _, value = pair.partition("=")
                if key == "token":
                    token = value
        session = self._sessions.get(session_id)
        # One answer for an unknown session and a wrong token, compared in
        # constant time: a request learns nothing about other sessions.
        expected = session.token if session is not None else "-" * 43
        if not hmac.compare_digest((token or "").encode(), expected.encode()) or session is None:
            raise Refused(NotFound("no IPC session with that id and token"))
        return session

    async def _open(
        self,
        receive: Receive,
        send: Send,
        headers: list[tuple[bytes, bytes]],
        cors: list[tuple[bytes, bytes]],
        nursery: trio.Nursery | None,
        client: tuple[str, int] | None,
    ) -> None:
        ipc = self.ipc
        if nursery is None:
            raise Refused(
                Unavailable(
                    "IPC sessions need the ASGI lifespan protocol: serve this app with "
                    "tether.transports.http.serve() or hypercorn's trio worker",
                    retry_after=1,
                )
            )
        hello = await read_body(receive, raw_header(headers, b"content-length"), self.max_body_size)
        stream = ServerStream(self.max_body_size, self.ipc_grace_period)
        stream.inbound.append(hello)
        token = secrets.token_urlsafe(32)
        started = trio.Event()
        first: list[bytes] = []
        # What the backend's `authorize` hook is told of the request.
        remote = f"{client[0]}:{client[1]}" if client else None
        facts: dict[str, str] = {}
        for key, value in headers:
            name, text = key.decode("latin-1").lower(), value.decode("utf-8", "replace")
            facts[name] = f"{facts[name]}, {text}" if name in facts else text

        async def run_session() -> None:
            session_id: str | None = None
            try:
                with stream.scope:
                    async with trio.open_nursery() as inner:
                        inner.start_soon(stream.expire_without_events)
                        await serve_ipc_session(
                            ipc, stream, transport="http", remote=remote, headers=facts
                        )
                        inner.cancel_scope.cancel()
            except Exception:
                # One session's failure must not end the lifespan's nursery,
                # and with it every other session.
                _log.exception("IPC session over HTTP failed")
                stream.close_from_backend("the backend failed")
            finally:
                stream.ended = True
                session_id = stream.session_id
                if session_id is not None:
                    self._sessions.pop(session_id, None)
                if not started.is_set():
                    started.set()

        def on_first(data: bytes) -> None:
            first.append(data)
            started.set()

        stream.on_first = on_first
        nursery.start_soon(run_session)
        with trio.move_on_after(_HANDSHAKE_TIMEOUT):
            await started.wait()
        if not started.is_set():
            # The backend did not answer the hello (a hung hook): give up on it.
            stream.close_from_frontend("the handshake timed out")
            stream.scope.cancel()
            raise Refused(
                Unavailable("the backend did not open the session in time", retry_after=1)
            )
        if not first:
            raise Refused(Unavailable("the IPC session ended before it opened", retry_after=1))
        # The engine's own first message: `welcome`, or the `error` refusing it.
        message = decode(first[0])
        if isinstance(message, Error):
            await send_error_info(send, message.error, cors, first[0])
            return
        reply = loads(first[0])
        session_id = str(reply.get("session_id"))
        if stream.ended:
            raise Refused(Unavailable("the IPC session ended before it opened", retry_after=1))
        stream.session_id = session_id
        self._sessions[session_id] = HttpIpcSession(session_id, token, stream)
        body = dumps(
            {
                "session_id": session_id,
                "token": token,
                "events": f"{self.prefix}/ipc/{session_id}/events",
                "welcome": reply,
            }
        )
        await send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [
                    JSON,
                    (b"x-session-id", session_id.encode()),
                    (b"x-session-token", token.encode()),
                    *cors,
                ],
            }
        )
        await send({"type": "http.response.body", "body": body})


class HttpIpcSession:
    __slots__ = ("session_id", "stream", "token")

    def __init__(self, session_id: str, token: str, stream: ServerStream) -> None:
        self.session_id = session_id
        self.token = token
        self.stream = stream


class ServerStream(MessageStream):
    """The backend's end of an IPC session over HTTP.

    Messages from the frontend arrive as POSTs (`from_frontend`); messages to
    the frontend wait in `outbound` until the event stream takes them. Each
    sent message gets a sequence number and stays in a short replay buffer, so
    a client that reconnects with `Last-Event-ID` misses nothing.
    """

    def __init__(self, max_message_size: int, grace: float) -> None:
        self.max_message_size = max_message_size
        self.grace = grace
        self.inbound: deque[bytes] = deque()
        self.inbound_lot = trio.lowlevel.ParkingLot()
        self.room_lot = trio.lowlevel.ParkingLot()
        self.ended = False
        self.scope = trio.CancelScope()
        self.outbound: deque[tuple[int, bytes]] = deque()
        self.outbound_lot = trio.lowlevel.ParkingLot()
        self.replay: deque[tuple[int, bytes]] = deque(maxlen=_REPLAY)
        self.sequence = 0
        self.closed_reason: str | None = None
        self.frontend_left = False
        self.events_open = False
        self.events_changed = trio.lowlevel.ParkingLot()
        self.sent_upto = 0
        self.session_id: str | None = None
        self.on_first: Callable[[bytes], object] | None = None

    # -- MessageStream (the backend's side) ------------------------------------

    async def send_message(self, data: bytes) -> None:
        await trio.lowlevel.checkpoint_if_cancelled()
        if self.closed_reason is not None:
            raise self._closed()
        on_first = self.on_first
        if on_first is not None:
            # The handshake's answer goes in the POST {prefix}/ipc response. It
            # is not held to the message limit: a refusal must reach the client
            # even when the limit is smaller than its message.
            self.on_first = None
            on_first(data)
            return
        if len(data) > self.max_message_size:
            raise PayloadTooLarge(
                f"message of {len(data)} bytes is over the session's limit of "
                f"{self.max_message_size}"
            )
        while len(self.outbound) >= _REPLAY:
            # The event stream is not keeping up: wait, as any stream does.
            await self.outbound_lot.park()
            if self.closed_reason is not None:
                raise self._closed()
        self.sequence += 1
        self.outbound.append((self.sequence, data))
        self.outbound_lot.unpark_all()

    async def receive_message(self) -> bytes:
        while not self.inbound:
            if self.closed_reason is not None:
                raise self._closed()
            await self.inbound_lot.park()
        await trio.lowlevel.checkpoint()
        data = self.inbound.popleft()
        # A POST may be waiting for room.
        self.room_lot.unpark()
        return data

    async def aclose(self, reason: str | None = None) -> None:
        self.close_from_backend(reason or "closed")
        await trio.lowlevel.checkpoint()

    def _closed(self) -> ConnectionClosed:
        reason = self.closed_reason or "closed"
        return ConnectionClosed(f"IPC session over HTTP closed: {reason}", reason=reason)

    # -- the HTTP side ---------------------------------------------------------

    def close_from_backend(self, reason: str) -> None:
        if self.closed_reason is None:
            self.closed_reason = reason
        self._wake()

    def close_from_frontend(self, reason: str) -> None:
        self.frontend_left = True
        self.close_from_backend(reason)

    def _wake(self) -> None:
        self.inbound_lot.unpark_all()
        self.room_lot.unpark_all()
        self.outbound_lot.unpark_all()
        self.events_changed.unpark_all()

    async def from_frontend(self, data: bytes) -> None:
        if self.closed_reason is not None:
            raise Refused(NotFound("no IPC session with that id and token"))
        while len(self.inbound) >= _INBOUND_BUFFER:
            await self.room_lot.park()
            if self.closed_reason is not None:
                raise Refused(NotFound("no IPC session with that id and token"))
        self.inbound.append(data)
        self.inbound_lot.unpark_all()

    async def expire_without_events(self) -> None:
        """End the session when no event stream is open for `grace` seconds."""
        while True:
            if not self.events_open:
                with trio.move_on_after(self.grace):
                    while not self.events_open:
                        await self.events_changed.park()
                if not self.events_open:
                    self.close_from_frontend("the frontend's event stream did not come back")
                    return
            await self.events_changed.park()

    async def stream_events(
        self,
        receive: Receive,
        send: Send,
        last_event_id: str | None,
        cors: list[tuple[bytes, bytes]],
    ) -> None:
        if self.events_open:
            raise Refused(InvalidRequest("this session's event stream is already open"), status=409)
        replay: list[tuple[int, bytes]] = []
        if last_event_id is not None:
            try:
                seen = int(last_event_id)
            except ValueError:
                raise Refused(InvalidRequest("Last-Event-ID must be an event id")) from None
            replay = [item for item in self.replay if item[0] > seen]
            if seen < self.sent_upto and (not replay or replay[0][0] != seen + 1):
                # Sent on the stream that broke and no longer kept: the
                # frontend would miss them, so the session cannot go on.
                self.close_from_backend("events were lost while the frontend was away")
        self.events_open = True
        self.events_changed.unpark_all()
        try:
            await send(
                {
                    "type": "http.response.start",
                    "status": 200,
                    "headers": [
                        (b"content-type", b"text/event-stream"),
                        (b"cache-control", b"no-store"),
                        (b"x-accel-buffering", b"no"),
                        *cors,
                    ],
                }
            )
            # A comment first, so that clients see the stream open at once
            # (curl and some proxies hold the head until body bytes come).
            opening = b"".join([b": open\n\n", *(_event(*item) for item in replay)])
            await send({"type": "http.response.body", "body": opening, "more_body": True})
            async with trio.open_nursery() as nursery:
                watch = DisconnectWatch(receive)
                watch.call_scope = nursery.cancel_scope
                nursery.start_soon(watch.run)
                await self._pump(send)
                nursery.cancel_scope.cancel()
        finally:
            self.events_open = False
            self.events_changed.unpark_all()

    async def _pump(self, send: Send) -> None:
        outbound = self.outbound
        while True:
            if outbound:
                batch: list[bytes] = []
                while outbound:
                    sequence, data = outbound.popleft()
                    self.replay.append((sequence, data))
                    self.sent_upto = sequence
                    batch.append(_event(sequence, data))
                self.outbound_lot.unpark_all()
                await send(
                    {"type": "http.response.body", "body": b"".join(batch), "more_body": True}
                )
                continue
            if self.closed_reason is not None:
                close = dumps({"reason": self.closed_reason})
                await send(
                    {"type": "http.response.body", "body": b"event: close\ndata: %s\n\n" % close}
                )
                return
            with trio.move_on_after(_EVENTS_KEEPALIVE) as idle:
                await self.outbound_lot.park()
            if idle.cancelled_caught:
                await send(
                    {"type": "http.response.body", "body": b": keep-alive\n\n", "more_body": True}
                )


def _event(sequence: int, data: bytes) -> bytes:
    """One Server-Sent Event carrying one encoded message (orjson never writes a newline)."""
    return b"id: %d\ndata: %s\n\n" % (sequence, data)
