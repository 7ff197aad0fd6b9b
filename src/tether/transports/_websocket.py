"""The WebSocket transport: RPC and IPC sessions over one socket each.

One connection is one session. Text frames carry the JSON envelope of
`runtime._protocol`; the runtime multiplexes calls by id and runs the
handshake, cancellation and deadlines, exactly as in-process. This module only
moves frames, and adds what a network connection needs: liveness (ping/pong),
limits, the Origin allow-list, authorization at the handshake, and close codes.

Two servers share everything here but the socket:

* `serve` runs trio-websocket's server;
* the HTTP transport's `HttpApp` answers WebSocket requests on `{prefix}/ws`
  (the ASGI variant, `AsgiWebSocketStream`), so one hypercorn port serves HTTP
  and WebSocket together.

Liveness: trio-websocket's server and tether's client send WebSocket pings and
close a peer that does not answer. ASGI gives an app no access to pings and
pongs, so on hypercorn the server pings inside the envelope instead
(`{"t":"ping","id":n}`, answered with `{"t":"pong","id":n}`); tether's client
answers it, and docs/websocket.md tells other clients how.
"""

from __future__ import annotations

import abc
import contextlib
import functools
import itertools
import logging
import math
import socket
import ssl
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable, Collection, Iterable, Mapping
from contextlib import asynccontextmanager
from typing import Any
from urllib.parse import urlsplit

import attrs
import orjson
import trio
import trio_websocket

from ..runtime import (
    DEFAULT_MAX_PENDING_NOTIFICATIONS,
    DEFAULT_SLOW_FRONTEND_TIMEOUT,
    BackendIpc,
    ClientOptions,
    ConnectError,
    ConnectionClosed,
    FrontendIpc,
    IpcInterface,
    MessageStream,
    PayloadTooLarge,
    RpcConnection,
    RpcInterface,
    RpcManager,
    TetherError,
    Unauthorized,
    Unavailable,
    open_ipc_connection,
    open_rpc_connection,
    serve_ipc_session,
    serve_rpc_session,
)
from ..runtime._dispatch import error_info
from ..runtime._protocol import Hello, decode, error_info_to_json
from ..runtime._util import check_positive_int, open_service_nursery
from ._wsframes import FastFrames
from ._wsframes import frame as text_frame

__all__ = [
    "DEFAULT_MAX_MESSAGE_SIZE",
    "DEFAULT_PING_INTERVAL",
    "DEFAULT_PING_TIMEOUT",
    "Handshake",
    "WebSocketSettings",
    "connect",
    "connect_ipc",
    "serve",
]

_log = logging.getLogger("tether.websocket")

#: Default limit of one message, in bytes (16 MiB).
DEFAULT_MAX_MESSAGE_SIZE = 16 * 1024 * 1024
#: Seconds between pings, by default.
DEFAULT_PING_INTERVAL = 20.0
#: Seconds a peer has to answer a ping before the connection is closed.
DEFAULT_PING_TIMEOUT = 20.0
#: Seconds a close waits for the peer's close frame before dropping the socket.
_CLOSE_TIMEOUT = 5.0
#: Seconds between a client's checks for pings that arrived while it was idle.
_IDLE_CHECK = 1.0
#: Seconds a close waits when the peer is already known to be unresponsive.
_ABORT_TIMEOUT = 0.5

# Close codes (RFC 6455 section 7.4.1).
NORMAL = 1000
GOING_AWAY = 1001
POLICY_VIOLATION = 1008
MESSAGE_TOO_BIG = 1009
INTERNAL_ERROR = 1011

_CLOSE_NAMES = {
    1000: "normal closure",
    1001: "going away",
    1002: "protocol error",
    1003: "unsupported data",
    1005: "no status",
    1006: "abnormal closure",
    1007: "invalid payload",
    1008: "policy violation",
    1009: "message too big",
    1010: "mandatory extension",
    1011: "internal error",
    1012: "service restart",
    1013: "try again later",
    1015: "TLS handshake failed",
}


def close_name(code: int | None) -> str:
    """Words for a WebSocket close code: `1009 message too big`."""
    if code is None:
        return "no close code"
    return f"{code} {_CLOSE_NAMES.get(code, 'application code' if code >= 3000 else 'reserved')}"


def closed_error(code: int | None, reason: str | None, *, prefix: str) -> ConnectionClosed:
    """The ConnectionClosed for a socket that closed with `code` and `reason`.

    Its `reason` is the peer's own words, or None when it gave none (the
    runtime then says who left); the message always says what happened.
    """
    reason = reason or None
    if reason:
        words = reason
    elif code == 1006:
        words = "the connection was lost without a close frame"
    elif code in (None, 1000, 1005):
        words = "closed"
    else:
        words = _CLOSE_NAMES.get(code, "closed")
    return ConnectionClosed(
        f"{prefix} closed ({close_name(code)}): {words}", reason=reason, close_code=code
    )


def _too_large(size: int, limit: int) -> PayloadTooLarge:
    return PayloadTooLarge(
        f"message of {size} bytes is over this WebSocket's limit of {limit}: raise "
        "max_message_size or send less at once"
    )


def too_large_reason(size: int, limit: int) -> str:
    """The close reason for a frame over the limit (sent with code 1009)."""
    return f"a message of {size} bytes is over this server's limit of {limit} bytes"


# ---------------------------------------------------------------------------
# Handshake policy, shared by both servers


@attrs.frozen
class Handshake:
    """What a WebSocket client sent to open the connection, for `authorize`.

    Attributes:
        path: The request path (`/rpc/ws`).
        headers: The request headers, names in lower case (repeated headers
            joined with ", ").
        authorization: The `Authorization` header, when sent.
        origin: The `Origin` header (browsers always send it), when sent.
        remote: The client's address, `"host:port"`, when known.
    """

    path: str
    headers: Mapping[str, str] = attrs.field(repr=False)
    authorization: str | None = attrs.field(repr=False)
    origin: str | None
    remote: str | None

    @classmethod
    def from_raw(
        cls, path: str, raw: Iterable[tuple[bytes, bytes]], remote: str | None
    ) -> Handshake:
        headers: dict[str, str] = {}
        for key, value in raw:
            name = key.decode("latin-1").lower()
            text = value.decode("utf-8", "replace")
            headers[name] = f"{headers[name]}, {text}" if name in headers else text
        return cls(path, headers, headers.get("authorization"), headers.get("origin"), remote)


#: The handshake authorization hook: return False (or raise `Unauthorized`) to
#: refuse the connection with 401 before any message is read.
Authorize = Callable[[Handshake], Awaitable[bool]]


def _check_positive(name: str, value: float | None, *, optional: bool = False) -> None:
    if value is None and optional:
        return
    if value is None or isinstance(value, bool) or not value > 0 or math.isinf(value):
        raise ValueError(f"{name} must be a positive finite number, got {value!r}")


def _origins(value: Collection[str] | None) -> frozenset[str] | None:
    if value is None:
        return None
    if isinstance(value, str):
        raise TypeError(f"allowed_origins takes a collection of origins, not one str: {value!r}")
    return frozenset(value)


@attrs.frozen(kw_only=True)
class WebSocketSettings:
    """How a WebSocket endpoint treats its clients; both servers take one.

    Attributes:
        max_message_size: Largest message, in bytes, either way. A larger
            incoming frame closes the connection with 1009 and a reason (on
            hypercorn, a frame over twice the limit is closed by hypercorn
            itself, with 1009 and no reason).
        max_in_flight: RPC calls (or IPC invocations) one connection may have
            running at once; more are refused with `Unavailable`
            (too-many-requests). tether's own client never goes over it: its
            calls wait for room instead.
        max_connections: Connections served at once; more are refused at the
            handshake with 503 and `Retry-After`.
        ping_interval: Seconds between pings; None turns keepalive off.
        ping_timeout: Seconds a client has to answer a ping before its
            connection is closed (1011) and its session torn down.
        allowed_origins: Browser origins allowed to connect
            (`"https://app.example.com"`); a handshake from another origin is
            refused with 403. Requests without an Origin header (programs, not
            browsers) are allowed. None allows every origin.
        authorize: Called with each `Handshake` before it is accepted; False
            refuses it with 401.
        handshake_timeout: Seconds a client has to send its `hello` after the
            socket opens.
    """

    max_message_size: int = DEFAULT_MAX_MESSAGE_SIZE
    max_in_flight: int = 1024
    max_connections: int = 1024
    ping_interval: float | None = DEFAULT_PING_INTERVAL
    ping_timeout: float = DEFAULT_PING_TIMEOUT
    allowed_origins: frozenset[str] | None = attrs.field(default=None, converter=_origins)
    authorize: Authorize | None = None
    handshake_timeout: float = 10.0

    def __attrs_post_init__(self) -> None:
        for name in ("max_message_size", "max_in_flight", "max_connections"):
            check_positive_int(name, getattr(self, name))
        _check_positive("ping_interval", self.ping_interval, optional=True)
        _check_positive("ping_timeout", self.ping_timeout)
        _check_positive("handshake_timeout", self.handshake_timeout)
        if self.allowed_origins is not None:
            for origin in self.allowed_origins:
                if not isinstance(origin, str) or origin.endswith("/") or "://" not in origin:
                    raise ValueError(
                        f"allowed_origins holds scheme://host[:port] values without a "
                        f"trailing slash, like 'https://app.example.com'; got {origin!r}"
                    )


@attrs.frozen
class Refusal:
    """A handshake refused: the HTTP status, the error, and extra headers."""

    status: int
    error: TetherError
    headers: tuple[tuple[bytes, bytes], ...] = ()

    def body(self) -> bytes:
        info = error_info(self.error, None, development_mode=False)
        return orjson.dumps({"error": error_info_to_json(info)})

    def response_headers(self) -> list[tuple[bytes, bytes]]:
        return [(b"content-type", b"application/json"), *self.headers]


class Endpoint:
    """One WebSocket endpoint's state: what it serves, its settings, its connections."""

    __slots__ = (
        "_closing",
        "_idle",
        "_sessions",
        "connections",
        "ipc",
        "manager",
        "settings",
    )

    def __init__(
        self, manager: RpcManager | None, ipc: BackendIpc | None, settings: WebSocketSettings
    ) -> None:
        if manager is None and ipc is None:
            raise TypeError(
                "a WebSocket endpoint needs an RpcManager, a BackendIpc (ipc=), or both"
            )
        if manager is not None and not isinstance(manager, RpcManager):
            raise TypeError(f"expected a tether.RpcManager, got {manager!r}")
        if ipc is not None and not isinstance(ipc, BackendIpc):
            raise TypeError(f"ipc= expects a tether.BackendIpc, got {ipc!r}")
        self.manager = manager
        self.ipc = ipc
        self.settings = settings
        self.connections = 0
        self._sessions: set[trio.CancelScope] = set()
        self._idle = trio.Event()  # set when shutting down with no connection left
        self._closing = trio.Event()  # set by begin_shutdown

    @property
    def shutting_down(self) -> bool:
        """After `begin_shutdown`: new handshakes are refused, and connections
        close with 1001 "the server is shutting down", whatever their session says."""
        return self._closing.is_set()

    def begin_shutdown(self) -> None:
        """Refuse new connections and end every session with 1001."""
        self._closing.set()
        for scope in list(self._sessions):
            scope.cancel()
        if self.connections == 0:
            self._idle.set()

    async def wait_closing(self) -> None:
        """Wait until `begin_shutdown` is called."""
        await self._closing.wait()

    async def wait_idle(self) -> None:
        """After `begin_shutdown`: wait until every connection has closed."""
        await self._idle.wait()

    async def check(self, handshake: Handshake) -> Refusal | None:
        """Whether to accept `handshake`; the refusal when not."""
        settings = self.settings
        if self.shutting_down:
            return Refusal(
                503, Unavailable("the server is shutting down"), ((b"retry-after", b"1"),)
            )
        origins = settings.allowed_origins
        if origins is not None and handshake.origin is not None and handshake.origin not in origins:
            return Refusal(
                403,
                Unauthorized(
                    f"origin {handshake.origin!r} is not allowed to open a WebSocket here: "
                    "add it to allowed_origins"
                ),
            )
        if self.connections >= settings.max_connections:
            return Refusal(
                503,
                Unavailable(
                    f"this server already serves {settings.max_connections} WebSocket "
                    "connections: retry later",
                    retry_after=1,
                    overloaded=True,
                ),
                ((b"retry-after", b"1"),),
            )
        if settings.authorize is not None:
            try:
                allowed = await settings.authorize(handshake)
            except Unauthorized as exc:
                return Refusal(401, exc, ((b"www-authenticate", b"Bearer"),))
            if not allowed:
                return Refusal(
                    401,
                    Unauthorized("the WebSocket handshake was refused by the authorization hook"),
                    ((b"www-authenticate", b"Bearer"),),
                )
        return None

    async def run(self, stream: WebSocketStream) -> None:
        """Serve one accepted connection: its session, and its keepalive, until it ends."""
        self.connections += 1
        try:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(stream.write_loop)
                if self.settings.ping_interval is not None:
                    nursery.start_soon(
                        stream.keep_alive, self.settings.ping_interval, self.settings.ping_timeout
                    )
                with trio.CancelScope() as session:
                    self._sessions.add(session)
                    if self.shutting_down:
                        session.cancel()
                    try:
                        await self._session(stream)
                    finally:
                        self._sessions.discard(session)
                nursery.cancel_scope.cancel()
        finally:
            self.connections -= 1
            if self.shutting_down and self.connections == 0:
                self._idle.set()

    async def _session(self, stream: WebSocketStream) -> None:
        settings = self.settings
        with trio.move_on_after(settings.handshake_timeout) as waited:
            try:
                first = await stream.receive_message()
            except ConnectionClosed:
                return
        if waited.cancelled_caught:
            await stream.aclose(
                f"no hello within {settings.handshake_timeout:g} s of opening", POLICY_VIOLATION
            )
            return
        stream.push_back(first)
        # Both kinds served here: the hello says which kind of session it is.
        # An endpoint serving one kind hands any hello to it, which refuses the
        # other kind with a clear error.
        if self.ipc is not None and (self.manager is None or _asks_for_ipc(first)):
            await serve_ipc_session(self.ipc, stream)
        else:
            assert self.manager is not None
            await serve_rpc_session(self.manager, stream, max_in_flight=settings.max_in_flight)


def _asks_for_ipc(data: bytes | str) -> bool:
    try:
        message = decode(data)
    except TetherError:
        return False
    return isinstance(message, Hello) and message.mode == "ipc"


# ---------------------------------------------------------------------------
# Streams


#: How a server closes its connections when it is shutting down.
_SHUTDOWN = ("the server is shutting down", GOING_AWAY)


#: Messages a stream holds for its writer before senders wait for room.
_OUTBOX_LIMIT = 64
#: What `_try_send_now` returns when the message must be queued.
_NOT_SENT: Any = object()


class WebSocketStream(MessageStream):
    """A MessageStream over one WebSocket: text frames, close codes, keepalive.

    Sends do not wait. `send_message` writes a message straight to the socket
    when nothing is queued and the socket takes it (`_try_send_now`);
    otherwise it puts it in the stream's outbox and returns without yielding
    when there is room, and one writer task (`write_loop`, run by whoever owns
    the stream) sends the outbox in order. On a network socket every send
    yields to the scheduler; a caller or an impl that waited for its own send
    would make the runtime hand its reading over to another task, and
    concurrent senders would queue on a lock. With the outbox, neither
    happens, and a burst of replies goes out back to back.
    """

    __slots__ = (
        "_drained",
        "_endpoint",
        "_first",
        "_outbox",
        "_prefix",
        "_room",
        "_send_error",
        "_writer",
        "max_message_size",
    )

    def __init__(
        self, max_message_size: int, prefix: str, endpoint: Endpoint | None = None
    ) -> None:
        self.max_message_size = max_message_size
        self._endpoint = endpoint  # the server's, on a server's stream
        self._first: bytes | str | None = None
        self._prefix = prefix
        self._outbox: deque[bytes] = deque()
        self._writer = trio.lowlevel.ParkingLot()  # the writer, waiting for work
        self._room = trio.lowlevel.ParkingLot()  # senders waiting for room
        self._drained = trio.lowlevel.ParkingLot()  # closers waiting for the outbox
        self._send_error: ConnectionClosed | None = None

    def push_back(self, data: bytes | str) -> None:
        """Make `data` the next message received (the peeked hello)."""
        self._first = data

    async def receive_message(self) -> bytes | str:
        first = self._first
        if first is not None:
            self._first = None
            await trio.lowlevel.checkpoint()
            return first
        return await self._receive_next()

    @abc.abstractmethod
    async def _receive_next(self) -> bytes | str:
        """The next message off the socket (what `receive_message` returns)."""

    def _close_as(self, reason: str | None, code: int) -> tuple[str | None, int]:
        """The reason and code a close goes out with: a shutdown's, when shutting down."""
        if self._endpoint is not None and self._endpoint.shutting_down:
            return _SHUTDOWN
        return reason, code

    async def send_message(self, data: bytes) -> None:
        if len(data) > self.max_message_size:
            raise _too_large(len(data), self.max_message_size)
        if self._send_error is not None:
            await trio.lowlevel.checkpoint()
            raise self._send_error
        outbox = self._outbox
        if not outbox:
            rest = self._try_send_now(data)
            if rest is None:
                return
            if rest is not _NOT_SENT:
                await self._finish_send(rest)
                return
        while len(outbox) >= _OUTBOX_LIMIT:
            await self._room.park()
            if self._send_error is not None:
                raise self._send_error
        outbox.append(data)
        if self._writer:
            self._writer.unpark()

    def _try_send_now(self, data: bytes) -> Any:
        """Send `data` at once, without yielding, if the socket allows.

        Returns:
            None when it was sent; `_NOT_SENT` when it must go through the
            outbox; else the send was begun, and the caller finishes it with
            `_finish_send(returned)`.
        """
        return _NOT_SENT

    async def _finish_send(self, rest: Any) -> None:
        raise NotImplementedError  # pragma: no cover - only after a _try_send_now that begins one

    async def write_loop(self) -> None:
        """Send what `send_message` queued, in order, until the socket closes.

        Run it in the nursery that owns the stream, for as long as the stream.
        """
        outbox = self._outbox
        try:
            while True:
                if not outbox:
                    if self._drained:
                        self._drained.unpark_all()
                    await self._writer.park()
                    continue
                if len(outbox) == 1:
                    batch = [outbox.popleft()]
                else:
                    batch = list(outbox)
                    outbox.clear()
                if self._room:
                    self._room.unpark_all()
                await self._send_batch(batch)
        except ConnectionClosed as exc:
            self._fail_sends(exc)

    def _fail_sends(self, exc: ConnectionClosed) -> None:
        if self._send_error is None:
            self._send_error = exc
        self._outbox.clear()
        self._room.unpark_all()
        self._drained.unpark_all()

    async def _drain(self) -> None:
        """Wait until the writer has sent everything queued (or cannot)."""
        while self._outbox and self._send_error is None:
            await self._drained.park()

    async def _send_batch(self, batch: list[bytes]) -> None:
        """Send these messages now, one text frame each, in order. Raises ConnectionClosed."""
        raise NotImplementedError

    async def keep_alive(self, interval: float, answer_within: float) -> None:
        """Ping every `interval` seconds; close if a ping is not answered in time."""
        raise NotImplementedError

    @abc.abstractmethod
    async def aclose(self, reason: str | None = None, code: int = NORMAL) -> None:
        """Close with `code` (1000 by default) and `reason`; see MessageStream.aclose.

        What was queued is sent first (for at most a few seconds).
        """


class TrioWebSocketStream(WebSocketStream):
    """A MessageStream over a trio-websocket connection (either side)."""

    __slots__ = ("_local_close", "_mask", "_raw", "_reading", "_ws")

    def __init__(
        self,
        ws: trio_websocket.WebSocketConnection,
        max_message_size: int,
        prefix: str,
        endpoint: Endpoint | None = None,
    ) -> None:
        super().__init__(max_message_size, prefix, endpoint)
        self._ws = ws
        # How this side closed it, when it did: trio-websocket records a close
        # it did not receive as (1000, no reason), and receives must say why.
        self._local_close: ConnectionClosed | None = None
        self._reading = False
        # Whole data frames are read and written by _wsframes, not wsproto
        # (a fifth of a call's round trip); wsproto keeps everything else.
        ws._wsproto = FastFrames(ws._wsproto, ws._max_message_size)  # type: ignore[assignment]
        self._mask = ws.is_client
        # The plain socket under the connection, for sends that need no wait
        # (None under TLS: the SSL stream must do its own writing).
        stream = ws._stream
        plain = type(stream) is trio.SocketStream
        raw = getattr(getattr(stream, "socket", None), "_sock", None) if plain else None
        self._raw: socket.socket | None = raw if isinstance(raw, socket.socket) else None

    def _closed(self, reason: trio_websocket.CloseReason | None) -> ConnectionClosed:
        """The error for trio-websocket's close `reason` (this side's own, when it closed)."""
        if self._local_close is not None:
            return self._local_close
        if reason is None:
            return closed_error(None, None, prefix=self._prefix)
        return closed_error(reason.code, reason.reason, prefix=self._prefix)

    async def _broken(self) -> ConnectionClosed:
        """The socket failed under a send: trio-websocket records it; the error to raise."""
        await self._ws._abort_web_socket()
        return self._closed(self._ws._close_reason)

    def _try_send_now(self, data: bytes) -> Any:
        # A frame that the socket takes at once is written here, with no task
        # switch and no yield: the same saving as the in-process transport's
        # buffered send. The stream lock keeps it whole against trio-websocket's
        # own sends (pongs, close); a socket that takes only part of it is
        # finished by the caller, still holding the lock.
        ws = self._ws
        # trio-websocket sets the close reason before anything leaves OPEN (a
        # close sent, received or refused), so no data frame follows a close.
        if ws._close_reason is not None:
            raise self._closed(ws._close_reason)
        raw = self._raw
        lock = ws._stream_lock
        if raw is None or lock.locked():
            return _NOT_SENT
        frame = text_frame(data, self._mask)
        lock.acquire_nowait()
        try:
            sent = raw.send(frame)
        except BlockingIOError:
            sent = 0
        except OSError:
            sent = 0  # broken: trio's send, in _finish_send, reports it
        if sent == len(frame):
            lock.release()
            return None
        return memoryview(frame)[sent:]

    async def _finish_send(self, rest: Any) -> None:
        # The frame is on the wire in part: it must be finished before any
        # other, even if the caller is cancelled meanwhile, or the peer would
        # read garbage. So it is shielded; what ends it early is the socket
        # closing (keepalive closes a peer that stopped reading).
        ws = self._ws
        try:
            with trio.CancelScope(shield=True):
                await ws._stream.send_all(rest)
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            raise await self._broken() from None
        finally:
            ws._stream_lock.release()

    async def _send_batch(self, batch: list[bytes]) -> None:
        ws = self._ws
        if ws._close_reason is not None:
            raise self._closed(ws._close_reason)
        # All the frames queued, framed and written in one send: what
        # `send_message` does for one, minus a lock round and a socket write
        # per frame.
        mask = self._mask
        data = b"".join([text_frame(item, mask) for item in batch])
        async with ws._stream_lock:
            try:
                await ws._stream.send_all(data)
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                raise await self._broken() from None

    async def _receive_next(self) -> bytes | str:
        self._reading = True
        try:
            return await self._receive()
        finally:
            self._reading = False

    async def answer_pings_while_idle(self, every: float) -> None:
        """Client side: answer a hypercorn server's envelope pings while nobody reads.

        An RPC connection reads only while a call waits for its reply; an idle
        one would leave the server's pings unanswered and be closed as dead.
        Every `every` seconds, while no receive is running, this takes what
        has arrived: pings are answered, and the first other message is kept
        for the next receive.
        """
        channel = self._ws._recv_channel
        while True:
            await trio.sleep(every)
            while not self._reading and self._first is None:
                try:
                    data = channel.receive_nowait()
                except trio.WouldBlock:
                    break
                except (trio.EndOfChannel, trio.ClosedResourceError):
                    return
                if type(data) is str and data[:7] == '{"t":"p' and await self._answer_ping(data):
                    continue
                self._first = data

    async def _receive(self) -> bytes | str:
        ws = self._ws
        while True:
            try:
                data = await ws.get_message()
            except trio_websocket.ConnectionClosed as exc:
                closed = self._closed(exc.reason)
                self._fail_sends(closed)
                raise closed from None
            if data[:7] == '{"t":"p' and type(data) is str and await self._answer_ping(data):
                continue
            return data

    async def _answer_ping(self, data: str) -> bool:
        """Answer an envelope ping (hypercorn's server sends them); True if it was one."""
        try:
            message = orjson.loads(data)
        except orjson.JSONDecodeError:
            return False
        if type(message) is not dict or message.get("t") != "ping":
            return False
        pong = orjson.dumps({"t": "pong", "id": message.get("id")})
        with contextlib.suppress(ConnectionClosed):
            await self.send_message(pong)  # if closed, the next receive says so
        return True

    async def aclose(self, reason: str | None = None, code: int = NORMAL) -> None:
        reason, code = self._close_as(reason, code)
        await self._close(reason, code, _CLOSE_TIMEOUT)

    async def _close(self, reason: str | None, code: int, wait: float) -> None:
        # Shielded so that a close during cancellation (the usual case: a block
        # left by an exception) still tells the peer why; bounded so a peer
        # that does not answer cannot hold us.
        if self._local_close is None and self._ws.closed is None:
            self._local_close = closed_error(code, reason, prefix=self._prefix)
        with trio.CancelScope(shield=True) as scope:
            scope.relative_deadline = wait
            await self._drain()
            await self._ws.aclose(code, _fit_reason(reason))
        self._fail_sends(self._local_close or closed_error(code, reason, prefix=self._prefix))

    async def hang_up(self) -> None:
        """Server side, once closed: end the TCP connection, at the latest after the close timeout.

        trio-websocket ends it when the close handshake completes. When it
        closed the connection itself (a message over the size limit) it stops
        reading, and a peer that never answers would keep the socket open
        for as long as the server runs.
        """
        ws = self._ws
        try:
            with trio.move_on_after(_CLOSE_TIMEOUT):
                await ws._close_handshake.wait()
        finally:
            await trio.aclose_forcefully(ws._stream)

    async def keep_alive(self, interval: float, answer_within: float) -> None:
        ws = self._ws
        while True:
            await trio.sleep(interval)
            with trio.move_on_after(answer_within) as scope:
                try:
                    await ws.ping()
                except trio_websocket.ConnectionClosed:
                    return
            if scope.cancelled_caught:
                _log.info("closing %s: no pong within %s s", self._prefix, answer_within)
                await self._close(
                    f"no answer to a ping within {answer_within:g} s",
                    INTERNAL_ERROR,
                    _ABORT_TIMEOUT,
                )
                return


def _fit_reason(reason: str | None) -> str | None:
    """A close reason cut to the 123 bytes a close frame can carry."""
    if reason is None:
        return None
    data = reason.encode()
    if len(data) <= 123:
        return reason
    return data[:120].decode("utf-8", "ignore") + "..."


class AsgiWebSocketStream(WebSocketStream):
    """A MessageStream over an ASGI WebSocket connection (hypercorn), server side."""

    __slots__ = ("_ping_ids", "_pong", "_receive", "_receiving", "_send")

    def __init__(
        self,
        receive: Callable[[], Awaitable[Any]],
        send: Callable[[Any], Awaitable[None]],
        max_message_size: int,
        endpoint: Endpoint | None = None,
    ) -> None:
        super().__init__(max_message_size, "WebSocket", endpoint)
        self._receive = receive
        # Cancelled by a close from this side: hypercorn then waits for the
        # peer's close frame, which a dead peer never sends.
        self._receiving: trio.CancelScope | None = None
        self._send = send
        self._ping_ids = itertools.count(1)
        self._pong = trio.Event()

    async def _send_batch(self, batch: list[bytes]) -> None:
        for data in batch:
            if self._send_error is not None:
                raise self._send_error
            # hypercorn drops a send on a closed socket silently; the receive
            # side sees the close and reports it.
            await self._send({"type": "websocket.send", "text": data.decode()})

    async def _receive_next(self) -> bytes | str:
        while True:
            if self._send_error is not None:
                await trio.lowlevel.checkpoint()
                raise self._send_error
            with trio.CancelScope() as self._receiving:
                event = await self._receive()
            self._receiving = None
            if self._send_error is not None:
                raise self._send_error
            kind = event["type"]
            if kind == "websocket.receive":
                text = event.get("text")
                data: bytes | str = text if text is not None else event.get("bytes") or b""
                if len(data) > self.max_message_size:
                    reason = too_large_reason(len(data), self.max_message_size)
                    await self.aclose(reason, MESSAGE_TOO_BIG)
                    raise self._send_error or closed_error(
                        MESSAGE_TOO_BIG, reason, prefix="WebSocket"
                    )
                if len(data) < 64 and self._is_pong(data):
                    continue
                return data
            if kind == "websocket.disconnect":
                code = event.get("code", 1005)
                closed = closed_error(code, event.get("reason"), prefix="WebSocket")
                self._fail_sends(closed)
                raise closed

    def _fail_sends(self, exc: ConnectionClosed) -> None:
        # Closed: a keepalive waiting for a pong stops waiting.
        super()._fail_sends(exc)
        self._pong.set()

    def _is_pong(self, data: bytes | str) -> bool:
        text = data if isinstance(data, str) else data.decode("utf-8", "replace")
        if '"pong"' not in text:
            return False
        try:
            message = orjson.loads(data)
        except orjson.JSONDecodeError:
            return False
        if type(message) is dict and message.get("t") == "pong":
            self._pong.set()
            return True
        return False

    async def aclose(self, reason: str | None = None, code: int = NORMAL) -> None:
        reason, code = self._close_as(reason, code)
        if self._send_error is None:
            with trio.CancelScope(shield=True) as scope:
                scope.relative_deadline = _CLOSE_TIMEOUT
                await self._drain()
                self._fail_sends(closed_error(code, reason, prefix="WebSocket"))
                if self._receiving is not None:
                    self._receiving.cancel()
                await self._send(
                    {"type": "websocket.close", "code": code, "reason": _fit_reason(reason)}
                )
            return
        await trio.lowlevel.checkpoint()

    async def keep_alive(self, interval: float, answer_within: float) -> None:
        # ASGI hides WebSocket pings from the app: ping inside the envelope.
        while True:
            await trio.sleep(interval)
            if self._send_error is not None:
                return
            self._pong = trio.Event()
            ping = orjson.dumps({"t": "ping", "id": next(self._ping_ids)})
            try:
                await self.send_message(ping)
            except ConnectionClosed:
                return
            with trio.move_on_after(answer_within):
                await self._pong.wait()
                continue
            _log.info("closing a WebSocket: no pong within %s s", answer_within)
            await self.aclose(f"no answer to a ping within {answer_within:g} s", INTERNAL_ERROR)
            return


# ---------------------------------------------------------------------------
# trio-websocket server


async def serve(
    manager: RpcManager | None = None,
    host: str = "127.0.0.1",
    port: int = 0,
    *,
    ipc: BackendIpc | None = None,
    max_message_size: int = DEFAULT_MAX_MESSAGE_SIZE,
    max_in_flight: int = 1024,
    max_connections: int = 1024,
    ping_interval: float | None = DEFAULT_PING_INTERVAL,
    ping_timeout: float = DEFAULT_PING_TIMEOUT,
    allowed_origins: Collection[str] | None = None,
    authorize: Authorize | None = None,
    handshake_timeout: float = 10.0,
    task_status: trio.TaskStatus[str] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Serve RPC (`manager`) and/or IPC (`ipc`) over WebSocket until cancelled.

    Each connection is one session: an RPC session when the client's `hello`
    asks for RPC, an IPC session when it asks for IPC. Use with
    `nursery.start`, which returns the URL to connect to::

        url = await nursery.start(websocket.serve, manager)
        async with websocket.connect(url, interfaces=[RobotWorldRead]) as backend:
            ...

    Cancelling it closes every connection with 1001 ("the server is shutting
    down") and cancels every call still running.

    Args:
        manager: The RPC impls to serve, or None to serve IPC only.
        host: The address to bind; loopback by default.
        port: The port; 0 picks a free one.
        ipc: The IPC backend to serve, if any.
        max_message_size, max_in_flight, max_connections, ping_interval,
        ping_timeout, allowed_origins, authorize, handshake_timeout: See
            `WebSocketSettings`.
        task_status: Reports the URL, `ws://host:port/`, once listening.
    """
    settings = WebSocketSettings(
        max_message_size=max_message_size,
        max_in_flight=max_in_flight,
        max_connections=max_connections,
        ping_interval=ping_interval,
        ping_timeout=ping_timeout,
        allowed_origins=allowed_origins,
        authorize=authorize,
        handshake_timeout=handshake_timeout,
    )
    endpoint = Endpoint(manager, ipc, settings)
    handler = functools.partial(_handle_request, endpoint)
    async with trio.open_nursery() as nursery:
        handlers: trio.Nursery = await nursery.start(_own_connections, endpoint)
        server = await nursery.start(
            functools.partial(
                trio_websocket.serve_websocket,
                handler,
                host,
                port,
                None,
                handler_nursery=handlers,
                message_queue_size=4,
                max_message_size=settings.max_message_size,
                receive_buffer_size=64 * 1024,
                connect_timeout=settings.handshake_timeout,
                disconnect_timeout=_CLOSE_TIMEOUT,
            )
        )
        shown = f"[{host}]" if ":" in host else host
        task_status.started(f"ws://{shown}:{server.port}/")
        try:
            await trio.sleep_forever()
        finally:
            # Cancelled: the listeners close with this nursery; the sessions
            # end now, each telling its client why (1001).
            endpoint.begin_shutdown()


async def _own_connections(
    endpoint: Endpoint, *, task_status: trio.TaskStatus[trio.Nursery] = trio.TASK_STATUS_IGNORED
) -> None:
    """The nursery of the connections, shielded from `serve`'s cancellation.

    So that a shutdown can close each connection properly (the close frame
    sent, the client's answer read by the connection's own reader task) before
    the connections' tasks are cancelled: at once when all have closed, or
    after `_CLOSE_TIMEOUT`.
    """
    with trio.CancelScope(shield=True):
        async with trio.open_nursery() as handlers:
            task_status.started(handlers)
            await endpoint.wait_closing()
            with trio.move_on_after(_CLOSE_TIMEOUT):
                await endpoint.wait_idle()
            handlers.cancel_scope.cancel()


async def _handle_request(endpoint: Endpoint, request: trio_websocket.WebSocketRequest) -> None:
    remote = request.remote
    if isinstance(remote, trio_websocket.Endpoint):
        where = f"{remote.address}:{remote.port}"
    else:
        where = str(remote)
    handshake = Handshake.from_raw(request.path, request.headers, where)
    refusal = await endpoint.check(handshake)
    if refusal is not None:
        _log.info(
            "refused a WebSocket handshake from %s: %s %s",
            where,
            refusal.status,
            refusal.error.message,
        )
        await request.reject(
            refusal.status, extra_headers=refusal.response_headers(), body=refusal.body()
        )
        return
    ws = await request.accept()
    stream = TrioWebSocketStream(ws, endpoint.settings.max_message_size, "WebSocket", endpoint)
    try:
        await endpoint.run(stream)
    finally:
        # Usually a no-op: the session closed the stream as it ended.
        await stream.aclose()
        await stream.hang_up()


# ---------------------------------------------------------------------------
# Client


def _parse_url(url: str) -> tuple[str, int, str, bool]:
    if not isinstance(url, str):
        raise TypeError(f"url must be a str like 'ws://127.0.0.1:8000/', got {url!r}")
    parts = urlsplit(url)
    if parts.scheme not in ("ws", "wss") or not parts.hostname:
        raise ValueError(
            f"expected a ws:// or wss:// URL like 'ws://127.0.0.1:8000/rpc/ws', got {url!r}"
        )
    secure = parts.scheme == "wss"
    try:
        port = parts.port or (443 if secure else 80)
    except ValueError:
        raise ValueError(f"the port in {url!r} is not a number from 0 to 65535") from None
    resource = parts.path or "/"
    if parts.query:
        resource += "?" + parts.query
    return parts.hostname, port, resource, secure


def _header_list(
    headers: Mapping[str, str] | None, authorization: str | None
) -> list[tuple[bytes, bytes]]:
    out: list[tuple[bytes, bytes]] = []
    for key, value in (headers or {}).items():
        if any(c in f"{key}{value}" for c in "\r\n\0"):
            raise ValueError(f"header {key!r} holds a line break or NUL")
        out.append((key.encode("latin-1"), value.encode()))
    if authorization is not None:
        if any(c in authorization for c in "\r\n\0"):
            raise ValueError("authorization holds a line break or NUL")
        out.append((b"authorization", authorization.encode()))
    return out


def _rejected(url: str, exc: trio_websocket.ConnectionRejected) -> ConnectError:
    status = exc.status_code
    detail = ""
    error: dict[str, Any] | None = None
    if exc.body:
        try:
            parsed = orjson.loads(exc.body)
        except orjson.JSONDecodeError:
            parsed = None
        if type(parsed) is dict and type(parsed.get("error")) is dict:
            error = parsed["error"]
            detail = str(error.get("message", ""))
        else:
            detail = exc.body[:200].decode("utf-8", "replace")
    message = f"the server at {url} refused the WebSocket handshake with HTTP {status}"
    if detail:
        message += f": {detail}"
    return ConnectError(
        message,
        reason=detail or None,
        status_code=status,
        details={"error": error} if error else None,
    )


@asynccontextmanager
async def _open_stream(
    url: str,
    *,
    headers: list[tuple[bytes, bytes]],
    max_message_size: int,
    connect_timeout: float,
    ping_interval: float | None,
    ping_timeout: float,
    ssl_context: ssl.SSLContext | None,
) -> AsyncIterator[TrioWebSocketStream]:
    host, port, resource, secure = _parse_url(url)
    _check_positive("connect_timeout", connect_timeout)
    _check_positive("ping_interval", ping_interval, optional=True)
    _check_positive("ping_timeout", ping_timeout)
    if secure and ssl_context is None:
        ssl_context = ssl.create_default_context()
    host_header = host if port in (80, 443) else f"{host}:{port}"
    try:
        async with open_service_nursery() as nursery:
            tcp: trio.abc.Stream | None = None
            try:
                with trio.fail_after(connect_timeout):
                    if secure:
                        assert ssl_context is not None
                        tcp = await trio.open_ssl_over_tcp_stream(
                            host, port, ssl_context=ssl_context, https_compatible=True
                        )
                    else:
                        tcp = await trio.open_tcp_stream(host, port)
                    ws = await trio_websocket.wrap_client_stream(
                        nursery,
                        tcp,
                        host_header,
                        resource,
                        extra_headers=headers,
                        message_queue_size=4,
                        max_message_size=max_message_size,
                        receive_buffer_size=64 * 1024,
                    )
            except BaseException as exc:
                if tcp is not None:
                    await trio.aclose_forcefully(tcp)
                if isinstance(exc, trio.TooSlowError):
                    raise ConnectError(
                        f"no WebSocket handshake from {url} within {connect_timeout:g} s"
                    ) from None
                if isinstance(exc, OSError):
                    raise ConnectError(f"could not connect to {url}: {exc}") from None
                raise
            stream = TrioWebSocketStream(ws, max_message_size, f"WebSocket to {url}")
            try:
                nursery.start_soon(stream.write_loop)
                if ping_interval is not None:
                    nursery.start_soon(stream.keep_alive, ping_interval, ping_timeout)
                every = (
                    _IDLE_CHECK if ping_interval is None else min(_IDLE_CHECK, ping_interval / 2)
                )
                nursery.start_soon(stream.answer_pings_while_idle, every)
                yield stream
            finally:
                with trio.CancelScope(shield=True):
                    await stream.aclose()
                    # trio-websocket leaves the socket to its owner when the
                    # server closed first; this is its owner.
                    await trio.aclose_forcefully(tcp)
                nursery.cancel_scope.cancel()
    except trio_websocket.ConnectionRejected as exc:
        raise _rejected(url, exc) from None
    except trio_websocket.HandshakeError as exc:
        raise ConnectError(f"the WebSocket handshake with {url} failed: {exc!r}") from None


@asynccontextmanager
async def connect(
    url: str,
    *,
    interfaces: Iterable[type[RpcInterface]],
    application_id: str | None = None,
    application_version: str | None = None,
    authorization: str | None = None,
    session_id: str | None = None,
    headers: Mapping[str, str] | None = None,
    max_message_size: int = DEFAULT_MAX_MESSAGE_SIZE,
    max_in_flight: int = 1024,
    ping_interval: float | None = DEFAULT_PING_INTERVAL,
    ping_timeout: float = DEFAULT_PING_TIMEOUT,
    connect_timeout: float = 10.0,
    ssl_context: ssl.SSLContext | None = None,
) -> AsyncIterator[RpcConnection]:
    """Connect to a tether backend over WebSocket, for the block.

    Example::

        url = "ws://127.0.0.1:8000/rpc/ws"
        async with websocket.connect(url, interfaces=[RobotWorldRead]) as backend:
            robots = backend.get_client(RobotWorldRead)
            await robots.count_robots(IModelProps("m1"))

    Every call carries its full context, as over any transport; many calls
    share the one socket. Leaving the block closes it; calls still waiting
    fail with ConnectionClosed.

    Args:
        url: The backend's WebSocket URL: `websocket.serve`'s, or
            `ws://host:port{prefix}/ws` on the HTTP transport's server.
        interfaces: The interfaces this frontend will call; each is checked
            against what the backend serves before the block starts.
        application_id: Sent with every call (unless the current context has one).
        application_version: Likewise.
        authorization: Sent as the handshake's `Authorization` header, and with
            every call; when None, calls forward the current context's.
        session_id: The session the calls belong to; a fresh one by default.
        headers: More handshake headers (an `Origin`, a cookie...).
        max_message_size: Largest message, in bytes, either way.
        max_in_flight: Calls this connection has waiting at once; more wait for
            room (keep it at or under the server's limit).
        ping_interval: Seconds between pings to the server; None: no pings.
        ping_timeout: Seconds the server has to answer before the connection
            is closed as dead (1011) and its calls fail.
        connect_timeout: Seconds to open the socket and finish the handshake.
        ssl_context: For `wss://` URLs; the system's default when None.

    Raises:
        ConnectError: the server could not be reached, or refused the
            handshake (`status_code` says how: 401, 403, 503...).
        IncompatibleVersion: an interface's version is incompatible.
        NotFound: the backend does not serve one of `interfaces`.
    """
    options = ClientOptions(
        application_id=application_id,
        application_version=application_version,
        authorization=authorization,
        session_id=session_id,
    )
    check_positive_int("max_in_flight", max_in_flight)  # before connecting, not after
    async with (
        _open_stream(
            url,
            headers=_header_list(headers, authorization),
            max_message_size=max_message_size,
            connect_timeout=connect_timeout,
            ping_interval=ping_interval,
            ping_timeout=ping_timeout,
            ssl_context=ssl_context,
        ) as stream,
        open_rpc_connection(
            stream, interfaces=interfaces, options=options, max_in_flight=max_in_flight
        ) as connection,
    ):
        yield connection


@asynccontextmanager
async def connect_ipc(
    url: str,
    *,
    channels: Iterable[type[IpcInterface]] = (),
    application_id: str | None = None,
    application_version: str | None = None,
    authorization: str | None = None,
    headers: Mapping[str, str] | None = None,
    max_message_size: int = DEFAULT_MAX_MESSAGE_SIZE,
    max_pending_notifications: int = DEFAULT_MAX_PENDING_NOTIFICATIONS,
    slow_listener_timeout: float = DEFAULT_SLOW_FRONTEND_TIMEOUT,
    ping_interval: float | None = DEFAULT_PING_INTERVAL,
    ping_timeout: float = DEFAULT_PING_TIMEOUT,
    connect_timeout: float = 10.0,
    ssl_context: ssl.SSLContext | None = None,
) -> AsyncIterator[FrontendIpc]:
    """Open an IPC session with a backend over WebSocket, for the block.

    Example::

        async with websocket.connect_ipc(url, channels=[EditorIpc]) as frontend_ipc:
            editor = frontend_ipc.proxy(EditorIpc)
            placement = await editor.move_element("0x20", 1.5)

    The socket is the session: when it closes, for any reason, the session
    ends on both sides, and `FrontendIpc.closed_reason` says why.

    Args:
        url: As for `connect`.
        channels: The channels this frontend will call; each is checked before
            the block starts.
        application_id: Who the frontend is; the backend's contexts carry it.
        application_version: That application's version.
        authorization: Sent as the handshake's `Authorization` header.
        headers: More handshake headers.
        max_message_size: Largest message, in bytes, either way.
        max_pending_notifications: Notifications from the backend that may
            wait for this frontend's listeners before it stops reading.
        slow_listener_timeout: Seconds the listeners may leave that queue full
            before the session is closed as "frontend too slow".
        ping_interval, ping_timeout, connect_timeout, ssl_context: As for `connect`.

    Raises:
        ConnectError: the server could not be reached, or refused the handshake.
        NotFound: the backend does not serve one of `channels`.
        IncompatibleVersion: a channel's version is incompatible.
    """
    async with (
        _open_stream(
            url,
            headers=_header_list(headers, authorization),
            max_message_size=max_message_size,
            connect_timeout=connect_timeout,
            ping_interval=ping_interval,
            ping_timeout=ping_timeout,
            ssl_context=ssl_context,
        ) as stream,
        open_ipc_connection(
            stream,
            channels=channels,
            application_id=application_id,
            application_version=application_version,
            max_pending_notifications=max_pending_notifications,
            slow_listener_timeout=slow_listener_timeout,
        ) as frontend,
    ):
        yield frontend
