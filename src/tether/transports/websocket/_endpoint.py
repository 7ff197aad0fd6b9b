"""What both WebSocket servers share but the socket: settings, the handshake
policy (Host, Origin, connection limit, authorization), close codes and
reasons, and the endpoint that runs one session per accepted connection.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Collection, Iterable, Mapping
from typing import TYPE_CHECKING

import attrs
import orjson
import trio

from ...runtime import (
    BackendIpc,
    ConnectionClosed,
    NotFound,
    PayloadTooLarge,
    RemoteError,
    RpcManager,
    TetherError,
    Unauthorized,
    Unavailable,
    serve_ipc_session,
    serve_rpc_session,
)
from ...runtime._dispatch import error_info
from ...runtime._drain import SHUTTING_DOWN, Drain, shutting_down_error
from ...runtime._protocol import (
    BinaryMessage,
    Error,
    Hello,
    asks_for_ipc,
    decode,
    encode,
    error_info_to_json,
)
from ...runtime._resume import (
    DEFAULT_REPLAY_BYTES,
    DEFAULT_REPLAY_MESSAGES,
    DEFAULT_RESUME_GRACE,
    ResumableSessions,
)
from ...runtime._util import check_positive_int, check_route, check_seconds
from .._web import SitePolicy, header_map, origin_list
from ._keepalive import Pinger

if TYPE_CHECKING:
    from ._streams import WebSocketStream

__all__ = [
    "ABNORMAL",
    "CONNECTION_LOST",
    "DEFAULT_MAX_MESSAGE_SIZE",
    "DEFAULT_PING_INTERVAL",
    "DEFAULT_PING_TIMEOUT",
    "GOING_AWAY",
    "INTERNAL_ERROR",
    "MESSAGE_TOO_BIG",
    "NORMAL",
    "POLICY_VIOLATION",
    "TRY_AGAIN_LATER",
    "Authorize",
    "Endpoint",
    "Handshake",
    "Refusal",
    "WebSocketSettings",
    "close_name",
    "closed_error",
    "log_refusal",
    "too_large",
    "too_large_reason",
]

_log = logging.getLogger("tether.websocket")
_access = logging.getLogger("tether.access")

#: Default limit of one message, in bytes (16 MiB).
DEFAULT_MAX_MESSAGE_SIZE = 16 * 1024 * 1024
#: Seconds between pings, by default.
DEFAULT_PING_INTERVAL = 20.0
#: Seconds a peer has to answer a ping before the connection is closed.
DEFAULT_PING_TIMEOUT = 20.0

# Close codes (RFC 6455 section 7.4.1).
NORMAL = 1000
GOING_AWAY = 1001
#: Never sent: a connection that ended without a close frame reads as this.
ABNORMAL = 1006
POLICY_VIOLATION = 1008
MESSAGE_TOO_BIG = 1009
INTERNAL_ERROR = 1011
#: Not in RFC 6455: IANA's registry (a refused IPC session of a full backend).
TRY_AGAIN_LATER = 1013

#: The reason of a connection that ended without a close frame (1006), where
#: that is known: the peer's process died, or the network failed. Nobody
#: closed it, so it gets words of its own rather than "the backend closed
#: the session".
CONNECTION_LOST = "the connection was lost (it ended without a close frame)"

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


def too_large(size: int, limit: int) -> PayloadTooLarge:
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
        headers = header_map(raw)
        return cls(path, headers, headers.get("authorization"), headers.get("origin"), remote)


#: The handshake authorization hook: return False (or raise `Unauthorized`) to
#: refuse the connection with 401 before any message is read.
Authorize = Callable[[Handshake], Awaitable[bool]]


def _origins(value: Collection[str] | None) -> frozenset[str] | None:
    return origin_list(value, "allowed_origins")


def _hosts(value: Collection[str] | None) -> frozenset[str] | None:
    # SitePolicy checks and normalizes host names (lower case, no port).
    return None if value is None else SitePolicy(allowed_hosts=value).allowed_hosts


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
            calls wait for room instead. Once as many RPC replies wait for a
            client that does not read them, the connection is not read
            until they are sent.
        max_connections: Connections served at once, counted from the moment
            a handshake is let in (before the `authorize` hook) until its
            socket is closed; more are refused at the handshake with 503 and
            `Retry-After`.
        ping_interval: Seconds between pings; None turns keepalive off.
        ping_timeout: Seconds a client has to answer a ping before its
            connection is closed (1011) and its session torn down.
        allowed_origins: Browser origins allowed to connect besides the
            server's own (`"https://app.example.com"`; `"*"` for any). A
            handshake whose `Origin` is neither listed nor same-origin (naming
            the `Host` it was sent to) is refused with 403 (`forbidden`); one
            without `Origin` (a program, not a browser) is allowed. None: same
            origin only, or, on `HttpApp`'s `{prefix}/ws`, the app's own
            `cors_origins`.
        allowed_hosts: Host names the endpoint answers to, without port
            (`"api.example.com"`; `"*"` for any); another `Host` is refused
            with 400 before the upgrade (DNS rebinding). None: the loopback
            names (`localhost`, `127.0.0.1`, `[::1]`, `*.localhost`) for a
            connection that arrived on a loopback address, any name otherwise;
            on `HttpApp`'s `{prefix}/ws`, the app's own policy.
        authorize: Called with each `Handshake` before it is accepted; False
            (or raising `Unauthorized`) refuses it with 401. Raising anything
            else refuses it with 500, and the exception is logged; not
            answering within `handshake_timeout` refuses it with 503.
        handshake_timeout: Seconds a client has to send its `hello` after the
            socket opens, and the `authorize` hook has to answer.
        resume_grace: Seconds an IPC session whose frontend asked for a
            resumable session (`connect_ipc`'s default) outlives a dropped
            connection, waiting for the frontend to resume it (docs/ipc.md,
            "Resuming a session"); None: sessions end with their connection.
        replay_messages, replay_bytes: Each resumable session's replay buffer:
            what it sent and the frontend has not acknowledged. Once it stays
            full (the frontend away, or not reading) for the IPC backend's
            `slow_frontend_timeout`, the session ends.
    """

    max_message_size: int = DEFAULT_MAX_MESSAGE_SIZE
    max_in_flight: int = 1024
    max_connections: int = 1024
    ping_interval: float | None = DEFAULT_PING_INTERVAL
    ping_timeout: float = DEFAULT_PING_TIMEOUT
    allowed_origins: frozenset[str] | None = attrs.field(default=None, converter=_origins)
    allowed_hosts: frozenset[str] | None = attrs.field(default=None, converter=_hosts)
    authorize: Authorize | None = None
    handshake_timeout: float = 10.0
    resume_grace: float | None = DEFAULT_RESUME_GRACE
    replay_messages: int = DEFAULT_REPLAY_MESSAGES
    replay_bytes: int = DEFAULT_REPLAY_BYTES

    def __attrs_post_init__(self) -> None:
        for name in (
            "max_message_size",
            "max_in_flight",
            "max_connections",
            "replay_messages",
            "replay_bytes",
        ):
            check_positive_int(name, getattr(self, name))
        check_seconds("resume_grace", self.resume_grace, optional=True)
        check_seconds("ping_interval", self.ping_interval, optional=True)
        check_seconds("ping_timeout", self.ping_timeout)
        check_seconds("handshake_timeout", self.handshake_timeout)

    def site_policy(self, default: SitePolicy | None = None) -> SitePolicy:
        """The Origin and Host policy: these settings', or `default`'s where they are None."""
        default = default if default is not None else SitePolicy()
        return SitePolicy(
            allowed_origins=(
                self.allowed_origins
                if self.allowed_origins is not None
                else default.allowed_origins
            ),
            allowed_hosts=(
                self.allowed_hosts if self.allowed_hosts is not None else default.allowed_hosts
            ),
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


def log_refusal(refusal: Refusal, path: str, remote: str | None) -> None:
    """The access line of a refused handshake: one INFO record on `tether.access`.

    Shaped like the HTTP routes' lines, `<operation> <outcome> ...`:
    `WebSocket /rpc/ws forbidden 403 from 127.0.0.1:53122: <message>`. The
    record carries `operation`, `outcome` (the error code), `status` and
    `remote`. It never holds the request's headers but the Origin or Host
    refused, nor the path's query (an `Authorization` value, or a token in
    the URL, must not reach a log).
    """
    if not _access.isEnabledFor(logging.INFO):
        return
    error = refusal.error
    # Without the query: a browser's WebSocket can carry its credential only there.
    operation = f"WebSocket {path.partition('?')[0]}"
    _access.info(
        "%s %s %d from %s: %s",
        operation,
        error.code,
        refusal.status,
        remote or "-",
        error.message,
        extra={
            "operation": operation,
            "outcome": error.code,
            "status": refusal.status,
            "remote": remote,
        },
    )


class Endpoint:
    """One WebSocket endpoint's state: what it serves, its settings, its connections.

    Args:
        manager, ipc: What the endpoint serves.
        settings: How it treats its clients.
        site: The Origin and Host policy where `settings` leave it None (an
            `HttpApp`'s own); same-origin and loopback names by default.
        route: The server's routing token, which starts every IPC session id.
    """

    __slots__ = (
        "_closing",
        "_cut",
        "_drain",
        "_idle",
        "_pinger",
        "_sessions",
        "connections",
        "ipc",
        "manager",
        "resumable",
        "route",
        "settings",
        "site",
    )

    def __init__(
        self,
        manager: RpcManager | None,
        ipc: BackendIpc | None,
        settings: WebSocketSettings,
        site: SitePolicy | None = None,
        *,
        route: str | None = None,
    ) -> None:
        if manager is None and ipc is None:
            raise TypeError(
                "a WebSocket endpoint needs an RpcManager, a BackendIpc (ipc=), or both"
            )
        if manager is not None and not isinstance(manager, RpcManager):
            raise TypeError(f"expected a tether.RpcManager, got {manager!r}")
        if ipc is not None and not isinstance(ipc, BackendIpc):
            raise TypeError(f"ipc= expects a tether.BackendIpc, got {ipc!r}")
        check_route(route)
        self.manager = manager
        self.ipc = ipc
        self.route = route
        self.settings = settings
        self.site = settings.site_policy(site)
        # Handshakes let in and not yet closed: each holds its place from
        # `check` on, so a burst of handshakes cannot all pass the limit
        # before the first of them is counted.
        self.connections = 0
        self._sessions: set[trio.CancelScope] = set()
        self._idle = trio.Event()  # set when shutting down with no connection left
        self._closing = trio.Event()  # set by begin_shutdown
        # The sessions, told when a graceful shutdown begins.
        self._drain = Drain()
        self._cut = trio.Event()  # set by cut: the sessions end now
        self._pinger: Pinger | None = None  # while `ping_connections` runs
        #: The IPC sessions a frontend may resume after a dropped connection.
        self.resumable: ResumableSessions | None = None
        if ipc is not None and settings.resume_grace is not None:
            self.resumable = ResumableSessions(
                settings.resume_grace, settings.replay_messages, settings.replay_bytes
            )

    @property
    def shutting_down(self) -> bool:
        """After `begin_shutdown`: new handshakes are refused, and connections
        close with 1001 "the server is shutting down", whatever their session says."""
        return self._closing.is_set()

    @property
    def draining(self) -> bool:
        """After `begin_shutdown(graceful=True)`, until every connection has closed."""
        return self._drain.draining and not self._idle.is_set()

    def begin_shutdown(self, *, graceful: bool = False) -> None:
        """Refuse new connections (503), and end every session with 1001.

        Args:
            graceful: Drain: each session refuses new calls and invokes
                (`Unavailable`) and ends once those running have answered;
                `drain` bounds the wait. Otherwise every session ends now, its
                calls cancelled. A shutdown that is not graceful after one that
                is ends the sessions still draining.
        """
        self._closing.set()
        if graceful:
            self._drain.begin()
        else:
            self.cut()
        if self.connections == 0:
            self._idle.set()

    def cut(self) -> None:
        """End every session now, cancelling what still runs (after a drain's grace)."""
        self._cut.set()
        for scope in list(self._sessions):
            scope.cancel()

    async def drain(self, grace: float) -> None:
        """After `begin_shutdown(graceful=True)`: wait up to `grace` s for every
        connection to close, then end those left (`cut`)."""
        with trio.move_on_after(grace):
            await self._idle.wait()
        if not self._idle.is_set():
            _log.info(
                "graceful shutdown: %d WebSocket connections still busy after %g s; "
                "cancelling what they run",
                self.connections,
                grace,
            )
            self.cut()

    async def wait_cut(self) -> None:
        """Wait until the sessions are ended (`cut`), rather than drained."""
        await self._cut.wait()

    async def wait_idle(self) -> None:
        """After `begin_shutdown`: wait until every connection has closed."""
        await self._idle.wait()

    async def check(self, handshake: Handshake, *, local: str | None) -> Refusal | None:
        """Whether to accept `handshake`; the refusal when not.

        In this order: its `Host` (400), its `Origin` (403), shutdown and the
        connection limit (503), then the `authorize` hook (401; 500, logged,
        when the hook raises anything but `Unauthorized`; 503 when it does not
        answer within `handshake_timeout`). When it
        returns None, the handshake holds one of `max_connections` places:
        the caller must give it back with `release` once the connection is
        over (or was never accepted).

        Args:
            handshake: What the client sent.
            local: The address the connection arrived on (the server's end),
                for the loopback Host rule; None when unknown.
        """
        settings = self.settings
        host = handshake.headers.get("host")
        error: TetherError | None = self.site.refuse_host(host, local)
        if error is not None:
            return Refusal(400, error)
        error = self.site.refuse_origin(handshake.origin, host)
        if error is not None:
            return Refusal(403, error)
        if self.shutting_down:
            return Refusal(
                503, Unavailable("the server is shutting down"), ((b"retry-after", b"1"),)
            )
        if self.connections >= settings.max_connections:
            return Refusal(
                503,
                Unavailable(
                    f"this server already serves {settings.max_connections} WebSocket "
                    "connections: retry later",
                    retry_after=1,
                ),
                ((b"retry-after", b"1"),),
            )
        # The place is taken before the hook runs: handshakes waiting for it
        # count against the limit too.
        self.connections += 1
        if settings.authorize is None:
            return None
        refusal: Refusal | None = None
        limit = settings.handshake_timeout
        try:
            # Bounded: a hook that hangs (a directory that does not answer)
            # must not hold handshakes, and their places, for as long as the
            # server runs.
            with trio.move_on_after(limit) as waited:
                allowed = await settings.authorize(handshake)
        except Unauthorized as exc:
            refusal = Refusal(401, exc, ((b"www-authenticate", b"Bearer"),))
        except Exception as exc:
            # A bug in the hook refuses this handshake; it must not stop the
            # server (on websocket.serve it would).
            _log.exception("the WebSocket authorize hook raised; refusing the handshake")
            refusal = Refusal(
                500,
                RemoteError(
                    "the server's authorization hook failed: see the server's log",
                    remote_type=type(exc).__qualname__,
                    remote=False,
                ),
            )
        except BaseException:
            self.release()
            raise
        else:
            if waited.cancelled_caught:
                _log.warning(
                    "the WebSocket authorize hook did not answer within %g s; refusing the "
                    "handshake",
                    limit,
                )
                refusal = Refusal(
                    503,
                    Unavailable(
                        f"the server's authorization hook did not answer within {limit:g} s: "
                        "try again later",
                        retry_after=1,
                    ),
                    ((b"retry-after", b"1"),),
                )
            elif not allowed:
                refusal = Refusal(
                    401,
                    Unauthorized("the WebSocket handshake was refused by the authorization hook"),
                    ((b"www-authenticate", b"Bearer"),),
                )
        if refusal is not None:
            self.release()
        return refusal

    def release(self) -> None:
        """Give back the place `check` took for a connection, now over."""
        self.connections -= 1
        if self.shutting_down and self.connections == 0:
            self._idle.set()

    async def run(self, stream: WebSocketStream, handshake: Handshake | None = None) -> None:
        """Serve one accepted connection: its session, and its keepalive, until it ends.

        `handshake`, the upgrade request, is what an IPC session's `authorize`
        hook is told of the connection (its address and headers). The
        connection's place (taken by `check`) is the caller's to release.
        """
        async with trio.open_nursery() as nursery:
            # No task of its own for writing or keepalive while it is idle:
            # the writer starts when a send must wait, and the server's pinger,
            # when it runs one, pings it.
            stream.start_writer_in(nursery)
            pinger = self._pinger
            if pinger is not None:
                pinger.add(stream, nursery)
            elif self.settings.ping_interval is not None:
                nursery.start_soon(
                    stream.keep_alive, self.settings.ping_interval, self.settings.ping_timeout
                )
            try:
                with trio.CancelScope() as session:
                    self._sessions.add(session)
                    if self.shutting_down:
                        session.cancel()
                    try:
                        await self._session(stream, handshake)
                    finally:
                        self._sessions.discard(session)
            finally:
                if pinger is not None:
                    pinger.remove(stream)
            nursery.cancel_scope.cancel()

    async def ping_connections(
        self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
    ) -> None:
        """Keep every connection of this endpoint alive from this one task, until cancelled.

        Run it with `nursery.start` beside the server, for as long as the
        server: connections accepted meanwhile are pinged by it (see `Pinger`)
        instead of by a task of their own. Returns at once when keepalive is
        off (`ping_interval=None`).
        """
        interval = self.settings.ping_interval
        if interval is None:
            task_status.started()
            return
        pinger = Pinger(interval, self.settings.ping_timeout)
        self._pinger = pinger
        try:
            task_status.started()
            await pinger.run()
        finally:
            self._pinger = None

    async def _session(self, stream: WebSocketStream, handshake: Handshake | None) -> None:
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
        if self._drain.draining:
            # Its hello came as the server began to shut down: the client's
            # connect fails with Unavailable, which it retries.
            info = error_info(shutting_down_error(), None, development_mode=False)
            await stream.refuse(encode(Error(None, info)), "unavailable", SHUTTING_DOWN)
            return
        stream.push_back(first)
        # Binary frames only to a client whose hello says it reads them.
        stream.peer_said(first)
        # Both kinds served here: the hello says which kind of session it is.
        # An endpoint serving one kind hands any hello to it, which refuses the
        # other kind with a clear error.
        if self.ipc is not None and (self.manager is None or asks_for_ipc(first)):
            hello = _resuming_hello(first)
            if hello is not None:
                await self._resume(stream, hello)
                return
            await serve_ipc_session(
                self.ipc,
                stream,
                transport="websocket",
                remote=None if handshake is None else handshake.remote,
                headers=None if handshake is None else handshake.headers,
                resumable=self.resumable,
                drain=self._drain,
                route=self.route,
            )
        else:
            assert self.manager is not None
            await serve_rpc_session(
                self.manager, stream, max_in_flight=settings.max_in_flight, drain=self._drain
            )

    async def _resume(self, stream: WebSocketStream, hello: Hello) -> None:
        """A frontend takes its IPC session back over this connection (or is refused)."""
        await stream.receive_message()  # the hello, pushed back
        if self.resumable is None:
            error = NotFound(
                "this server does not resume IPC sessions (resume_grace=None): open a new session"
            )
            info = error_info(error, None, development_mode=False)
            await stream.refuse(encode(Error(None, info)), info.code, info.message)
            return
        await self.resumable.resume(stream, hello)


def _resuming_hello(first: bytes | str | BinaryMessage) -> Hello | None:
    """The first message, when it is a `hello` that resumes a session."""
    try:
        message = decode(first)
    except TetherError:
        return None
    return message if isinstance(message, Hello) and message.resume is not None else None
