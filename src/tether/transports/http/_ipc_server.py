"""IPC over HTTP, the backend's side: sessions opened with `POST {prefix}/ipc`,
messages from the frontend as POSTs, messages to it as Server-Sent Events.
"""

from __future__ import annotations

import hmac
import logging
import math
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
from ...runtime._protocol import BinaryMessage, Error, decode
from .._web import header_map, heartbeat, ping_message
from ._asgi import (
    DisconnectWatch,
    Receive,
    Refused,
    Scope,
    Send,
    header_text,
    joined_header,
    raw_header,
    read_body,
    remote_address,
    require_json,
    send_empty,
    send_error_info,
)
from ._wire import JSON

__all__ = [
    "DEFAULT_IPC_GRACE_PERIOD",
    "DEFAULT_IPC_PING_INTERVAL",
    "DEFAULT_IPC_PING_TIMEOUT",
    "OUTBOUND_BYTES",
    "OUTBOUND_MESSAGES",
    "REPLAY_BYTES",
    "REPLAY_MESSAGES",
    "HttpIpcSession",
    "IpcRoutes",
    "ServerStream",
]

_log = logging.getLogger("tether.http")

#: Seconds an IPC session outlives its event stream, so a frontend can reconnect.
DEFAULT_IPC_GRACE_PERIOD = 5.0
#: Seconds between pings on a session's event stream (as WebSocket's default).
DEFAULT_IPC_PING_INTERVAL = 20.0
#: Seconds a frontend has to answer a ping (POST the pong) before its session ends.
DEFAULT_IPC_PING_TIMEOUT = 20.0
#: Seconds between comment lines on an idle event stream when pings are off
#: (keeps proxies from cutting it).
_EVENTS_KEEPALIVE = 15.0
#: Messages, and bytes of them, that may wait for the event stream; past
#: either bound the backend's sends wait (one larger message goes alone).
OUTBOUND_MESSAGES = 1024
OUTBOUND_BYTES = 4 * 1024 * 1024
#: Messages, and bytes of them, of the event stream kept for a client that
#: reconnects with Last-Event-ID; the oldest are dropped past either bound.
REPLAY_MESSAGES = 1024
REPLAY_BYTES = 4 * 1024 * 1024
#: Bytes of messages handed to one send of the event stream (one larger
#: message goes alone): what a send stuck on a frontend that reads nothing holds.
_BATCH_BYTES = 256 * 1024
#: Seconds the last messages of a session that ended get to reach its frontend.
_CLOSE_DRAIN = 1.0
#: Seconds one send of the event stream may take before the frontend is taken
#: as not reading it (a reading frontend takes a send at once).
_STUCK_SEND = 0.1
#: Seconds the backend may take to answer an IPC hello.
_HANDSHAKE_TIMEOUT = 10.0
#: Messages from the frontend, and bytes of them, a session buffers before
#: its POSTs wait (one larger message goes alone).
_INBOUND_BUFFER = 64
_INBOUND_BYTES = 4 * 1024 * 1024


class IpcRoutes:
    """The IPC routes of an `HttpApp`: `{prefix}/ipc` and the sessions under it.

    Sessions run in the nursery the app's ASGI lifespan owns, so they end
    when the server does.
    """

    def __init__(
        self,
        ipc: BackendIpc,
        prefix: str,
        max_body_size: int,
        grace: float,
        body_timeout: float,
        ping_interval: float | None = DEFAULT_IPC_PING_INTERVAL,
        ping_timeout: float = DEFAULT_IPC_PING_TIMEOUT,
        session_route: str | None = None,
    ) -> None:
        self.ipc = ipc
        #: The server's routing token, which starts every session id (`route=`).
        self.session_route = session_route
        self.prefix = prefix
        self.max_body_size = max_body_size
        self.ipc_grace_period = grace
        self.body_timeout = body_timeout
        self.ping_interval = ping_interval
        self.ping_timeout = ping_timeout
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

        The app has checked the method against the route (`POST {prefix}/ipc`,
        `POST`/`DELETE {prefix}/ipc/{session}`, `GET .../events`) and the site.

        Args:
            nursery: Where sessions run (the lifespan's), or None when the app
                is served without the lifespan protocol (IPC is refused then).
            shutting_down: The server is shutting down: no new session opens.
        """
        if method == "POST":
            require_json(joined_header(headers, b"content-type"))
        if len(parts) == 1:
            if shutting_down:
                raise Refused(
                    Unavailable("this backend is shutting down: retry shortly", retry_after=1)
                )
            await self._open(receive, send, headers, cors, nursery, remote_address(scope))
            return
        session = self._authorized_session(parts[1], headers, scope)
        if len(parts) == 2:
            if method == "POST":
                body = await read_body(
                    receive,
                    raw_header(headers, b"content-length"),
                    self.max_body_size,
                    self.body_timeout,
                )
                sequence = _sequence(header_text(headers, b"x-tether-seq"))
                await session.stream.from_frontend(body, sequence)
                await send_empty(send, 202, cors)
            else:  # DELETE
                session.stream.close_from_frontend("the frontend left")
                await send_empty(send, 204, cors)
        else:  # GET .../events
            last = header_text(headers, b"last-event-id")
            if raw_header(headers, b"x-tether-acks") == b"1":
                # The client acknowledges the events it took (POSTed `ack`s):
                # no more go unacknowledged than the replay buffer keeps.
                session.stream.acks = True
            await session.stream.stream_events(receive, send, last, cors)

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
        remote: str | None,
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
        hello = await read_body(
            receive, raw_header(headers, b"content-length"), self.max_body_size, self.body_timeout
        )
        stream = ServerStream(
            self.max_body_size, self.ipc_grace_period, self.ping_interval, self.ping_timeout
        )
        stream.inbound.append(hello)
        stream.inbound_bytes = len(hello)
        token = secrets.token_urlsafe(32)
        started = trio.Event()
        first: list[bytes] = []
        # What the backend's `authorize` hook is told of the request.
        facts = header_map(headers)

        async def run_session() -> None:
            session_id: str | None = None
            try:
                with stream.scope:
                    async with trio.open_nursery() as inner:
                        inner.start_soon(stream.expire_without_events)
                        inner.start_soon(stream.heartbeat)
                        await serve_ipc_session(
                            ipc,
                            stream,
                            transport="http",
                            remote=remote,
                            headers=facts,
                            route=self.session_route,
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
                # Last: it may give a reading frontend a moment for what is left.
                await stream.release()

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
        ping = None
        if self.ping_interval is not None:
            ping = {
                "interval_ms": math.ceil(self.ping_interval * 1000),
                "timeout_ms": math.ceil(self.ping_timeout * 1000),
            }
        body = dumps(
            {
                "session_id": session_id,
                "token": token,
                "events": f"{self.prefix}/ipc/{session_id}/events",
                "welcome": reply,
                "ping": ping,
                # How long the session waits for a broken event stream to be
                # reopened: the client's budget for resuming it.
                "grace_ms": math.ceil(self.ipc_grace_period * 1000),
                # What the replay buffer keeps: a client that acknowledges
                # events does so well before either bound.
                "replay": {"messages": REPLAY_MESSAGES, "bytes": REPLAY_BYTES},
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

    Both buffers are bounded in messages and in bytes; when `outbound` is full
    the backend's sends wait (and its engine closes a frontend that stays too
    slow). When the session ends, `release` drops both, whether or not the
    frontend's connection is still open.

    Liveness: while an event stream is open, a `ping` event goes out every
    `ping_interval` seconds, and the frontend must POST the matching `pong`
    within `ping_timeout` seconds, or the session ends (`heartbeat`).
    """

    def __init__(
        self,
        max_message_size: int,
        grace: float,
        ping_interval: float | None = None,
        ping_timeout: float = DEFAULT_IPC_PING_TIMEOUT,
    ) -> None:
        self.max_message_size = max_message_size
        self.grace = grace
        self.ping_interval = ping_interval
        self.ping_timeout = ping_timeout
        self.inbound: deque[bytes] = deque()
        self.inbound_bytes = 0
        self.inbound_lot = trio.lowlevel.ParkingLot()
        self.room_lot = trio.lowlevel.ParkingLot()
        self.ended = False
        self.scope = trio.CancelScope()
        self.outbound: deque[tuple[int, bytes]] = deque()
        self.outbound_bytes = 0
        self.outbound_lot = trio.lowlevel.ParkingLot()  # the pump, waiting for work
        self.drained_lot = trio.lowlevel.ParkingLot()  # senders, waiting for room
        self.replay: deque[tuple[int, bytes]] = deque()
        self.replay_bytes = 0
        self.sequence = 0
        self.closed_reason: str | None = None
        self.frontend_left = False
        self.events_open = False
        self.events_generation = 0
        self.events_changed = trio.lowlevel.ParkingLot()
        self.sent_upto = 0
        # When the event stream's send in progress began (None: not sending).
        self.send_started: float | None = None
        self.ping_id = 0
        self.ping_due: int | None = None
        self.pong_id = 0
        self.pong_lot = trio.lowlevel.ParkingLot()
        # The highest `X-Tether-Seq` taken from the frontend: a POST retried
        # after its answer was lost carries the same number and is not
        # taken twice.
        self.received_upto = 0
        # Whether the frontend acknowledges events (`{"t":"ack","id":n}`), and
        # the last it did: then the replay buffer keeps exactly the events
        # not acknowledged, and none is sent past its bounds, so a resumed
        # stream never finds one gone.
        self.acks = False
        self.acked = 0
        # The open event stream's scope, so that a client resuming with
        # Last-Event-ID can take over a stream whose connection died unseen.
        self.events_scope: trio.CancelScope | None = None
        self.session_id: str | None = None
        self.on_first: Callable[[bytes], object] | None = None

    # -- MessageStream (the backend's side) ------------------------------------

    async def send_message(self, data: bytes | BinaryMessage) -> None:
        # JSON only (`binary` is False): the events are SSE text, bytes in base64.
        assert type(data) is bytes
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
        size = len(data)
        if size > self.max_message_size:
            raise PayloadTooLarge(
                f"message of {size} bytes is over the session's limit of {self.max_message_size}"
            )
        # A message larger than the byte bound goes alone, into an empty queue.
        while self.outbound and (
            len(self.outbound) >= OUTBOUND_MESSAGES or self.outbound_bytes + size > OUTBOUND_BYTES
        ):
            # The event stream is not keeping up: wait, as any stream does.
            await self.drained_lot.park()
            if self.closed_reason is not None:
                raise self._closed()
        self.sequence += 1
        self.outbound.append((self.sequence, data))
        self.outbound_bytes += size
        self.outbound_lot.unpark_all()

    async def receive_message(self) -> bytes:
        while not self.inbound:
            if self.closed_reason is not None:
                raise self._closed()
            await self.inbound_lot.park()
        await trio.lowlevel.checkpoint()
        data = self.inbound.popleft()
        self.inbound_bytes -= len(data)
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
        self.drained_lot.unpark_all()
        self.events_changed.unpark_all()
        self.pong_lot.unpark_all()

    async def from_frontend(self, data: bytes, sequence: int | None = None) -> None:
        """Take a message POSTed by the frontend.

        `sequence` is the POST's `X-Tether-Seq` (None without one): a message
        whose number was taken already is a retry of a POST whose answer was
        lost, and is answered as taken without being taken again.
        """
        if self.closed_reason is not None:
            raise Refused(NotFound("no IPC session with that id and token"))
        if len(data) <= 64 and (b"pong" in data or b"ack" in data) and self._take_beat(data):
            # Taken at once, even while the engine is not reading: a busy
            # backend must not mistake its own delay for a dead frontend.
            return
        size = len(data)
        while self.inbound and (
            len(self.inbound) >= _INBOUND_BUFFER or self.inbound_bytes + size > _INBOUND_BYTES
        ):
            await self.room_lot.park()
            if self.closed_reason is not None:
                raise Refused(NotFound("no IPC session with that id and token"))
        if sequence is not None:
            # Checked after any wait: the first try may have been waiting
            # for room too, and taken first.
            if sequence <= self.received_upto:
                return
            self.received_upto = sequence
        self.inbound.append(data)
        self.inbound_bytes += size
        self.inbound_lot.unpark_all()

    def _take_beat(self, data: bytes) -> bool:
        """Note a `pong` or `ack` envelope; False if `data` is neither."""
        if b'"ack"' in data:
            return self._take_ack(data)
        beat = heartbeat(data)
        if beat is None or beat[0] != "pong":
            return False
        answered = beat[1]
        if type(answered) is int:
            # Never past the last ping sent: a pong cannot answer pings to come.
            self.pong_id = max(self.pong_id, min(answered, self.ping_id))
            self.pong_lot.unpark_all()
        return True

    def _take_ack(self, data: bytes) -> bool:
        """Note an `ack` envelope: the frontend took every event up to its id."""
        try:
            message = loads(data)
        except InvalidRequest:
            return False
        if type(message) is not dict or message.get("t") != "ack":
            return False
        acked = message.get("id")
        if type(acked) is int and acked > self.acked:
            # Never past the last event sent.
            self.acked = min(acked, self.sent_upto)
            replay = self.replay
            while replay and replay[0][0] <= self.acked:
                self.replay_bytes -= len(replay.popleft()[1])
            self.outbound_lot.unpark_all()  # the pump may be waiting for room
        return True

    async def heartbeat(self) -> None:
        """Ping the frontend every `ping_interval` s; end the session if a ping goes unanswered.

        Pings go out only while an event stream is open (without one, the
        grace period decides), and each must be answered within `ping_timeout`
        seconds by a POSTed `{"t":"pong","id":n}`. This is how the backend
        learns of a frontend whose connection went silent (no FIN, no RST).
        """
        interval = self.ping_interval
        if interval is None:
            return
        timeout = self.ping_timeout
        # Pings awaiting their pong: (id, answer by, event stream it went on).
        waiting: deque[tuple[int, float, int]] = deque()
        next_ping = trio.current_time() + interval
        while self.closed_reason is None:
            while waiting and (
                waiting[0][0] <= self.pong_id or waiting[0][2] != self.events_generation
            ):
                waiting.popleft()  # answered, or sent on a stream that has since closed
            wake = min(next_ping, waiting[0][1]) if waiting else next_ping
            with trio.move_on_at(wake):
                await self.pong_lot.park()
            now = trio.current_time()
            if waiting and waiting[0][0] > self.pong_id and now >= waiting[0][1]:
                if self.events_open and waiting[0][2] == self.events_generation:
                    self.close_from_frontend(self._unanswered(now))
                    return
                waiting.clear()
            if now >= next_ping:
                next_ping = now + interval
                if self.events_open:
                    self.ping_id += 1
                    self.ping_due = self.ping_id
                    waiting.append((self.ping_id, now + timeout, self.events_generation))
                    self.outbound_lot.unpark_all()

    def _unanswered(self, now: float) -> str:
        reason = f"no answer to a ping within {self.ping_timeout:g} s"
        started = self.send_started
        if started is not None and now - started >= self.ping_timeout:
            # The ping never left: the event stream has been stuck in one send.
            return f"{reason}: the frontend is not reading its event stream"
        return reason

    async def expire_without_events(self) -> None:
        """End the session when no event stream is open for `grace` seconds."""
        while True:
            if not self.events_open:
                with trio.move_on_after(self.grace):
                    while not self.events_open:
                        await self.events_changed.park()
                if not self.events_open:
                    self.close_from_frontend(
                        "the frontend's event stream did not come back within the grace "
                        f"period of {self.grace:g} s"
                    )
                    return
            await self.events_changed.park()

    async def release(self) -> None:
        """The session has ended: drop every message it still holds.

        Nothing can be replayed now, nor read by the engine. Messages still
        waiting for the event stream get `_CLOSE_DRAIN` seconds to reach a
        frontend that reads them; none when the stream has been stuck in a
        send (the frontend is not reading: a frontend too slow, a silent
        connection), so that they are freed at once although the frontend's
        connection may stay open for a long time.
        """
        self.inbound.clear()
        self.inbound_bytes = 0
        self.replay.clear()
        self.replay_bytes = 0
        try:
            if self.outbound and self.events_open and not self._stuck():
                with trio.move_on_after(_CLOSE_DRAIN):
                    while self.outbound and self.events_open and not self._stuck():
                        await self.drained_lot.park()
        finally:
            self.outbound.clear()
            self.outbound_bytes = 0
            self.ping_due = None
            self._wake()

    def _stuck(self) -> bool:
        started = self.send_started
        return started is not None and trio.current_time() - started >= _STUCK_SEND

    async def stream_events(
        self,
        receive: Receive,
        send: Send,
        last_event_id: str | None,
        cors: list[tuple[bytes, bytes]],
    ) -> None:
        seen: int | None = None
        if last_event_id is not None:
            try:
                seen = int(last_event_id)
            except ValueError:
                raise Refused(InvalidRequest("Last-Event-ID must be an event id")) from None
        if self.events_open:
            if seen is None or self.events_scope is None:
                raise Refused(
                    InvalidRequest("this session's event stream is already open"), status=409
                )
            # A client resuming: its old stream's connection is dead although
            # this side has not seen it yet (a cut without FIN or RST, or not
            # noticed yet). The new stream takes over at once: the old one
            # may be stuck in a send that only the send watchdog ends, but
            # what it holds is in the replay buffer, and it sends no more.
            self.events_scope.cancel()
        replay: list[tuple[int, bytes]] = []
        if seen is not None:
            replay = [item for item in self.replay if item[0] > seen]
            if seen < self.sent_upto and (not replay or replay[0][0] != seen + 1):
                # Sent on the stream that broke and no longer kept: the
                # frontend would miss them, so the session cannot go on.
                kept = f"from event {replay[0][0]}" if replay else "none"
                self.close_from_backend(
                    f"events were lost while the frontend was away: it had event {seen}, the "
                    f"backend had sent up to {self.sent_upto} and keeps only the last "
                    f"{REPLAY_MESSAGES} events or {REPLAY_BYTES // 1024 // 1024} MiB ({kept})"
                )
        self.events_open = True
        self.events_generation += 1
        generation = self.events_generation
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
            del replay
            await send({"type": "http.response.body", "body": opening, "more_body": True})
            del opening
            async with trio.open_nursery() as nursery:
                self.events_scope = nursery.cancel_scope
                watch = DisconnectWatch(receive)
                watch.call_scope = nursery.cancel_scope
                nursery.start_soon(watch.run)
                await self._pump(send, generation)
                nursery.cancel_scope.cancel()
        finally:
            if generation == self.events_generation:  # not taken over
                self.events_scope = None
                self.events_open = False
                self.send_started = None
                self.events_changed.unpark_all()
                self.drained_lot.unpark_all()

    async def _pump(self, send: Send, generation: int) -> None:
        while generation == self.events_generation:
            body = self._next_batch()
            if body:
                self.send_started = trio.current_time()
                try:
                    await send({"type": "http.response.body", "body": body, "more_body": True})
                finally:
                    if generation == self.events_generation:
                        self.send_started = None
                # Dropped before waiting again, so that a stuck send holds one batch at most.
                del body
                continue
            if self.closed_reason is not None:
                close = dumps({"reason": self.closed_reason})
                await send(
                    {"type": "http.response.body", "body": b"event: close\ndata: %s\n\n" % close}
                )
                return
            if self.ping_interval is not None:
                # The heartbeat wakes us when a ping is due.
                await self.outbound_lot.park()
                continue
            with trio.move_on_after(_EVENTS_KEEPALIVE) as idle:
                await self.outbound_lot.park()
            if idle.cancelled_caught:
                await send(
                    {"type": "http.response.body", "body": b": keep-alive\n\n", "more_body": True}
                )

    def _next_batch(self) -> bytes:
        """What the event stream sends next: a due ping, then messages up to `_BATCH_BYTES`."""
        parts: list[bytes] = []
        if self.ping_due is not None:
            parts.append(b"event: ping\ndata: %s\n\n" % ping_message(self.ping_due))
            self.ping_due = None
        outbound = self.outbound
        replay = self.replay
        size = 0
        while (
            outbound
            and size < _BATCH_BYTES
            # With acks, no more go unacknowledged than the replay buffer
            # keeps (one larger message goes alone).
            and not (
                self.acks
                and replay
                and (
                    len(replay) >= REPLAY_MESSAGES
                    or self.replay_bytes + len(outbound[0][1]) > REPLAY_BYTES
                )
            )
        ):
            sequence, data = outbound.popleft()
            self.outbound_bytes -= len(data)
            size += len(data)
            self._keep_for_replay(sequence, data)
            self.sent_upto = sequence
            parts.append(_event(sequence, data))
        if size:
            self.drained_lot.unpark_all()
        return b"".join(parts)

    def _keep_for_replay(self, sequence: int, data: bytes) -> None:
        replay = self.replay
        replay.append((sequence, data))
        self.replay_bytes += len(data)
        if self.acks:
            return  # bounded by `_next_batch`; only acks remove events
        while replay and (len(replay) > REPLAY_MESSAGES or self.replay_bytes > REPLAY_BYTES):
            self.replay_bytes -= len(replay.popleft()[1])


def _sequence(value: str | None) -> int | None:
    """A POST's `X-Tether-Seq`: its message's number in the session (None: not numbered)."""
    if value is None:
        return None
    try:
        sequence = int(value)
    except ValueError:
        sequence = 0
    if sequence < 1:
        raise Refused(InvalidRequest(f"X-Tether-Seq must be a positive integer, got {value!r}"))
    return sequence


def _event(sequence: int, data: bytes) -> bytes:
    """One Server-Sent Event carrying one encoded message (orjson never writes a newline)."""
    return b"id: %d\ndata: %s\n\n" % (sequence, data)
