"""The backend's IPC: `BackendIpc` (channels served, sessions open), `IpcSession`
(one frontend, as a handler sees it), and `serve_ipc_session`.
"""

from __future__ import annotations

import contextvars
import logging
import threading
import uuid
from collections.abc import Awaitable, Callable, Iterable, Mapping
from typing import Any, TypeVar, cast, overload

import attrs
import trio

from .. import contexts
from ._channels import IpcHandler, IpcInterface, NotificationInterface, require_channel
from ._drain import Drain
from ._errors import ConnectionClosed, Unavailable
from ._interceptors import Interceptor, to_interceptors
from ._ipc_engine import (
    DEFAULT_MAX_PENDING_BYTES,
    DEFAULT_MAX_PENDING_NOTIFICATIONS,
    DEFAULT_SLOW_FRONTEND_TIMEOUT,
    Listener,
    Peer,
)
from ._ipc_handshake import (
    DEFAULT_AUTHORIZE_TIMEOUT,
    DEFAULT_MAX_SESSIONS_PER_CLIENT,
    Authorize,
    accept,
)
from ._ipc_proxy import add_to_table, check_listener, handler_channel, make_proxy, plain_args
from ._protocol import PROTOCOL_VERSION, Welcome, encode
from ._resume import ResumableSessions, ResumableStream
from ._stream import MessageStream
from ._streams import DEFAULT_STREAM_WINDOW, StreamWindow, check_stream_window
from ._util import check_positive_int, check_route, check_seconds

__all__ = ["BackendIpc", "IpcSession", "current_session", "serve_ipc_session"]

C = TypeVar("C", bound=IpcInterface)
N = TypeVar("N", bound=NotificationInterface)
H = TypeVar("H", bound=IpcHandler)

_log = logging.getLogger("tether.ipc")


_current_session: contextvars.ContextVar[IpcSession | None] = contextvars.ContextVar(
    "tether_ipc_session", default=None
)


def current_session() -> IpcSession:
    """Return the IPC session of the frontend being served.

    Available in an `IpcHandler` method, a listener on the backend, and any
    task they start.

    Raises:
        RuntimeError: called outside a backend's IPC session.
    """
    session = _current_session.get()
    if session is None:
        raise RuntimeError(
            "tether.current_session() is only available on a backend, inside an IpcHandler "
            "method, a listener, or a task started from one"
        )
    return session


class IpcSession:
    """The backend's end of one paired session: its frontend, and how to reach it.

    `tether.current_session()` returns it inside a handler. Notifications and
    calls made through it reach this session's frontend only.
    """

    __slots__ = ("_client", "_peer", "_remote")

    def __init__(self, peer: Peer, remote: str | None = None, client: str | None = None) -> None:
        self._peer = peer
        self._remote = remote
        self._client = client  # what max_sessions_per_client counts it under

    def __repr__(self) -> str:
        state = "open" if self.is_open else f"closed: {self.closed_reason}"
        return f"<IpcSession {self.id} ({state})>"

    @property
    def id(self) -> str:
        """The session id (unguessable; made by the backend)."""
        return self._peer.session_id

    @property
    def application_id(self) -> str | None:
        """What the frontend said it is in its `hello`."""
        return self._peer.application_id

    @property
    def application_version(self) -> str | None:
        """The frontend application's version, from its `hello`."""
        return self._peer.application_version

    @property
    def remote(self) -> str | None:
        """The frontend's address as the transport reported it (`"host:port"`); None in-process."""
        return self._remote

    @property
    def is_open(self) -> bool:
        """True until the session ends."""
        return self._peer.closed_reason is None

    @property
    def closed_reason(self) -> str | None:
        """Why the session ended, or None while it is open."""
        return self._peer.closed_reason

    def notifier(self, channel: type[N]) -> N:
        """A typed sender of `channel`'s notifications to this session's frontend.

        Each call queues the message and returns at once while the session's
        queue has room; messages arrive in order. When `max_pending_notifications`
        are waiting, the call waits for room; if none opens within the
        backend's `slow_frontend_timeout`, the session is closed ("frontend too
        slow") and the call raises `ConnectionClosed`.

        Raises:
            TypeError: `channel` is not a NotificationInterface declaration.
        """
        require_channel(channel, NotificationInterface)
        return cast(N, make_proxy(channel, self._peer, "Notifier"))

    def proxy(self, channel: type[C]) -> C:
        """A typed caller of a channel this session's frontend serves (`FrontendIpc.register`).

        A method that returns a `tether.Stream` returns a stream call, opened
        with `async with tether.open_stream(...)` (docs/ipc.md, "Streams").

        Raises:
            TypeError: `channel` is not an IpcInterface declaration.
        """
        require_channel(channel, IpcInterface)
        return cast(C, make_proxy(channel, self._peer, "Proxy"))

    async def send(self, channel: str, method: str, *args: Any) -> None:
        """Queue a one-way message to this session's frontend (untyped `notifier`).

        Raises:
            ConnectionClosed: the session is closed, or this send closed it (too slow).
            PayloadTooLarge: the message is over the session's size limit.
        """
        await self._peer.notify(channel, method, plain_args(args))

    async def call_frontend(self, channel: str, method: str, *args: Any) -> Any:
        """Invoke a method the frontend serves and return its JSON result (untyped `proxy`)."""
        return await self._peer.invoke(channel, method, plain_args(args))

    def start_soon(self, fn: Callable[..., Awaitable[Any]], *args: Any) -> None:
        """Run `fn(*args)` as a task owned by this session: cancelled when it ends.

        The task runs in the caller's context (its ActivityId) and sees this
        session as `current_session()`. An exception it raises is logged.
        """
        self._peer.check_run()
        nursery = self._peer.nursery
        if nursery is None or not self.is_open:
            raise self._peer.closed_error(None)
        nursery.start_soon(_logged, self._peer, fn, args)

    def close(self, reason: str = "closed by the backend") -> None:
        """End the session: cancel its tasks, and tell the frontend `reason`."""
        self._peer.close(reason)

    async def wait_closed(self) -> str:
        """Wait until the session has ended and torn down; return why it ended.

        Raises:
            RuntimeError: the session is still open, and this is another Trio
                run than the session's (its events cannot be awaited here).
        """
        return await self._peer.wait_closed()


async def _logged(peer: Peer, fn: Callable[..., Awaitable[Any]], args: tuple[Any, ...]) -> None:
    # Its own session, whoever started it (another session's handler, say).
    _current_session.set(peer.session)
    try:
        await fn(*args)
    except Exception as exc:
        if isinstance(exc, ConnectionClosed) and peer.closed_reason is not None:
            # Ended by its own session's end: that is the news, not this.
            _log.debug("a session task (%s) ended with its session: %s", fn, exc.reason)
        else:
            _log.exception("a session task (%s) raised", getattr(fn, "__qualname__", fn))


class _Registration:
    __slots__ = ("channel", "factory", "shared")

    def __init__(self, channel: type[IpcInterface], handler: Any) -> None:
        self.channel = channel
        self.shared = None if isinstance(handler, type) else handler
        self.factory = handler if isinstance(handler, type) else None


class BackendIpc:
    """The backend's IPC: the channels it serves and the sessions of its frontends.

    Register `IpcHandler` classes, then serve it over a transport
    (`memory.connect_ipc(backend_ipc)`, `http.serve(..., ipc=backend_ipc)`,
    `websocket.serve(..., ipc=backend_ipc)`). Each connected frontend gets its
    own `IpcSession`.

    Args:
        authorize: Called with each session's `IpcHandshake` before anything
            is reserved or made for it; a falsy answer (or `Unauthorized`)
            refuses the session with 401, another `TetherError` with that
            error, any other exception with 500 (logged). A coroutine function
            or a plain function. None: every frontend may open a session.
        authorize_timeout: Seconds the hook may take; then the session is
            refused with `Unavailable` (503) and the hook cancelled.
        max_sessions_per_client: Sessions one client (the remote host the
            transport reports; in-process sessions have none) may have open at
            once; more are refused with `Unavailable` (429 too-many-requests).
            Applies with or without `authorize`. Behind a reverse proxy every
            client has the proxy's address: raise it, or None for no bound.
        max_pending_notifications: Notifications a session may have waiting for
            a slow frontend before senders wait for room; also how many one-way
            messages from the frontend may wait for listeners.
        max_pending_bytes: The same two queues' bound in encoded bytes (a
            single larger message still passes, alone).
        max_in_flight: Invokes one session may have running (or answered, their
            reply not yet written) at once; more are refused with
            `Unavailable` (too-many-requests).
        max_sessions: Sessions open at once; more are refused with
            `Unavailable` (503 unavailable).
        slow_frontend_timeout: Seconds a sender may wait for room in a full
            notification queue; then the session is closed ("frontend too slow").
        development_mode: Send tracebacks of unexpected handler errors to the
            frontend (never in production).
        stream_window: How much of a stream the backend takes before its
            sender must wait: the items of a frontend's argument streams (a
            handler's `Stream[T]` parameter), and the result items of the
            backend's own stream calls to a frontend (`IpcSession.proxy`).
            256 items and 4 MiB by default.
        interceptors: Run around every invoke and notification a session
            receives (`CallInfo.side` "server") and sends ("client"), inside
            the process-wide ones; first outermost.

    Raises:
        TypeError: `authorize` is not callable, or an interceptor is not.
        ValueError: a bound is not a positive int, a timeout not a positive
            number of seconds, or `stream_window` not a `StreamWindow`.
    """

    def __init__(
        self,
        *,
        authorize: Authorize | None = None,
        authorize_timeout: float = DEFAULT_AUTHORIZE_TIMEOUT,
        max_sessions_per_client: int | None = DEFAULT_MAX_SESSIONS_PER_CLIENT,
        max_pending_notifications: int = DEFAULT_MAX_PENDING_NOTIFICATIONS,
        max_pending_bytes: int = DEFAULT_MAX_PENDING_BYTES,
        max_in_flight: int = 1024,
        max_sessions: int = 1024,
        slow_frontend_timeout: float = DEFAULT_SLOW_FRONTEND_TIMEOUT,
        development_mode: bool = False,
        stream_window: StreamWindow = DEFAULT_STREAM_WINDOW,
        interceptors: Iterable[Interceptor] = (),
    ) -> None:
        if authorize is not None and not callable(authorize):
            raise TypeError(f"authorize must be a function of an IpcHandshake, got {authorize!r}")
        if max_sessions_per_client is not None:
            check_positive_int("max_sessions_per_client", max_sessions_per_client)
        check_positive_int("max_pending_notifications", max_pending_notifications)
        check_positive_int("max_pending_bytes", max_pending_bytes)
        check_positive_int("max_in_flight", max_in_flight)
        check_positive_int("max_sessions", max_sessions)
        check_seconds("authorize_timeout", authorize_timeout, finite=False)
        check_seconds("slow_frontend_timeout", slow_frontend_timeout, finite=False)
        self.authorize = authorize
        self.authorize_timeout = float(authorize_timeout)
        self.max_sessions_per_client = max_sessions_per_client
        self.max_pending_notifications = max_pending_notifications
        self.max_pending_bytes = max_pending_bytes
        self.max_in_flight = max_in_flight
        self.max_sessions = max_sessions
        self.slow_frontend_timeout = float(slow_frontend_timeout)
        self.development_mode = development_mode
        self.stream_window = check_stream_window(stream_window)
        self.interceptors = to_interceptors(interceptors)
        self._registrations: dict[str, _Registration] = {}
        self._listeners: dict[str, list[Listener]] = {}
        # Sessions may run in another thread (the in-process transport's
        # thread=True), so the table is guarded.
        self._lock = threading.Lock()
        self._sessions: dict[str, IpcSession] = {}
        self._opening = 0  # places reserved by sessions being opened
        self._per_client: dict[str, int] = {}  # places held (opening or open) per client

    @overload
    def register(self, handler: type[H]) -> type[H]: ...
    @overload
    def register(self, handler: H) -> H: ...

    def register(self, handler: type[H] | H) -> type[H] | H:
        """Serve a channel with `handler`; usable as a class decorator.

        Args:
            handler: An `IpcHandler` subclass (instantiated with no arguments for
                each session) or an instance (shared by every session).

        Returns:
            `handler`, unchanged.

        Raises:
            TypeError: `handler` is not an IpcHandler of an IpcInterface, leaves a
                method unimplemented, or its channel is already registered.
        """
        channel = handler_channel(handler)
        name = channel.channel_name
        if name in self._registrations:
            raise TypeError(f"channel {name!r} is already registered; unregister it first")
        self._registrations[name] = _Registration(channel, handler)
        return handler

    def unregister(self, channel: type[IpcInterface] | str) -> None:
        """Stop serving `channel` to new sessions; open sessions keep it."""
        name = channel if isinstance(channel, str) else channel.channel_name
        self._registrations.pop(name, None)

    @property
    def channels(self) -> dict[str, str]:
        """The channels served: name -> version."""
        return {name: reg.channel.version for name, reg in self._registrations.items()}

    @property
    def sessions(self) -> tuple[IpcSession, ...]:
        """The sessions open now."""
        with self._lock:
            return tuple(self._sessions.values())

    @property
    def is_valid(self) -> bool:
        """True when called inside an open session (so `send` has a frontend to reach)."""
        session = _current_session.get()
        return session is not None and session.is_open

    def add_listener(self, channel: str, listener: Listener) -> Callable[[], None]:
        """Call `listener(method, *args)` for each one-way message a frontend sends on `channel`.

        Args:
            channel: The channel name.
            listener: A function or coroutine function; it gets the method name
                and the JSON arguments. `current_session()` is the sender's.

        Returns:
            A function that removes the listener.
        """
        check_listener(channel, listener)
        return add_to_table(self._listeners, channel, listener)

    async def send(self, channel: str, method: str, *args: Any) -> None:
        """Send a one-way message to the frontend of the current session.

        Raises:
            RuntimeError: not inside a session (see `current_session`).
            ConnectionClosed: the session is closed.
        """
        await current_session().send(channel, method, *args)

    def _reserve(self, client: str | None) -> None:
        """Hold a place for a session being opened, or refuse it (one step, under the lock)."""
        with self._lock:
            cap = self.max_sessions_per_client
            held = 0 if client is None else self._per_client.get(client, 0)
            if cap is not None and held >= cap:
                raise Unavailable(
                    f"this client already has {cap} IPC sessions open with this backend: "
                    "close one, or try again later",
                    retry_after=1,
                    overloaded=True,
                )
            if len(self._sessions) + self._opening >= self.max_sessions:
                raise Unavailable(
                    f"this backend already has {self.max_sessions} IPC sessions open: try "
                    "again later",
                    retry_after=1,
                )
            self._opening += 1
            if client is not None:
                self._per_client[client] = held + 1

    def _release(self, client: str | None) -> None:
        """Give back a place reserved for a session that did not open."""
        with self._lock:
            self._opening -= 1
            self._forget(client)

    def _add(self, session: IpcSession) -> None:
        """Turn a reserved place into an open session."""
        with self._lock:
            self._opening -= 1
            self._sessions[session.id] = session

    def _remove(self, session: IpcSession) -> None:
        with self._lock:
            if self._sessions.pop(session.id, None) is not None:
                self._forget(session._client)

    def _forget(self, client: str | None) -> None:
        # Under the lock. An address with no session left is dropped, so the
        # table holds only clients with sessions.
        if client is not None:
            held = self._per_client[client] - 1
            if held:
                self._per_client[client] = held
            else:
                del self._per_client[client]


async def serve_ipc_session(
    backend: BackendIpc,
    stream: MessageStream,
    *,
    transport: str = "unknown",
    remote: str | None = None,
    headers: Mapping[str, str] | None = None,
    resumable: ResumableSessions | None = None,
    drain: Drain | None = None,
    route: str | None = None,
) -> None:
    """Serve one frontend's IPC session over `stream` until either side ends it.

    Expects `hello` (mode "ipc") first, runs the backend's `authorize` hook,
    checks every channel the hello lists against what `backend` serves,
    reserves the session's place, answers `welcome`, then runs the session.
    When it ends, every task it started has been cancelled and awaited, and the
    stream is closed with the reason. A refused session gets an `error` and a
    closed stream (`MessageStream.refuse`), and holds nothing.

    Args:
        backend: What to serve.
        stream: The connection to the frontend.
        transport: The transport's name, for the hook (`IpcHandshake.transport`).
        remote: The client's address, `"host:port"`, when the transport knows
            it; its host is what `max_sessions_per_client` counts.
        headers: The headers of the request that opened the connection, names
            in lower case; the `authorization` one is the credential when the
            hello carries none.
        resumable: Where this server keeps sessions that survive a dropped
            connection: given, a frontend whose hello says `"resumable": true`
            gets a resume token in its welcome (`_resume`).
        drain: The server's shutdown: once it begins, invokes read are refused
            with `Unavailable`, and the session closes ("the server is shutting
            down") as soon as the invokes running have answered.
        route: The server's routing token: the session id is
            `"<route>.<uuid4>"`, so that a reverse proxy can send the
            session's later requests to this server; None: a plain uuid4.

    Raises:
        ValueError: `route` is not 1-32 characters of `a-z`, `0-9` and `-`.
    """
    check_route(route)
    # A session starts with no request context: in-process, this task (or the
    # backend's thread) was spawned from the frontend's, and the frontend's
    # ActivityId and credential must not reach the backend that way.
    with contexts.using(None):
        await _serve_ipc_session(
            backend, stream, transport, remote, headers, resumable, drain, route
        )


async def _serve_ipc_session(
    backend: BackendIpc,
    stream: MessageStream,
    transport: str,
    remote: str | None,
    headers: Mapping[str, str] | None,
    resumable: ResumableSessions | None,
    drain: Drain | None,
    route: str | None,
) -> None:
    try:
        accepted = await accept(
            backend, stream, transport=transport, remote=remote, headers=headers
        )
        if accepted is None:
            return
        hello, served, handshake = accepted
        peer = Peer(
            stream,
            side="backend",
            session_id=str(uuid.uuid4()) if route is None else f"{route}.{uuid.uuid4()}",
            application_id=hello.application_id,
            application_version=hello.application_version,
            served=served,
            listeners=backend._listeners,
            max_pending_notifications=backend.max_pending_notifications,
            max_pending_bytes=backend.max_pending_bytes,
            max_in_flight=backend.max_in_flight,
            development_mode=backend.development_mode,
            slow_frontend_timeout=backend.slow_frontend_timeout,
            stream_window=backend.stream_window,
            interceptors=backend.interceptors,
        )
        session = IpcSession(peer, handshake.remote, handshake.client)
        peer.session = session
        # Listed before the frontend hears `welcome`, so that it is there the
        # moment the frontend can act.
        backend._add(session)
        current = _current_session.set(session)
        try:
            # What was checked and made for this session, even if the backend's
            # registrations changed since.
            channels = {name: entry.channel.version for name, entry in served.items()}
            # "binary": true only to a frontend that said it (as every tether one does).
            binary = stream.binary and hello.binary
            welcome = Welcome(PROTOCOL_VERSION, peer.session_id, channels, binary=binary)
            resuming: ResumableStream | None = None
            if resumable is not None and hello.resumable:
                resuming = resumable.new_stream(stream, backend.slow_frontend_timeout)
                resuming.state = peer.state_watch
                token = resumable.add(
                    peer.session_id,
                    resuming,
                    lambda received: encode(attrs.evolve(welcome, received=received)),
                )
                grace_ms = round(resumable.grace * 1000)
                welcome = attrs.evolve(welcome, resume_token=token, grace_ms=grace_ms)
            try:
                await stream.send_message(encode(welcome))
            except BaseException as exc:
                # Ended before the session opened: its handlers were made, so
                # they are told, as they would be at any other end.
                if isinstance(exc, ConnectionClosed):
                    peer._call_on_close("the frontend left before the session opened")
                    return
                peer._call_on_close("the backend stopped before the session opened")
                raise
            if drain is not None:
                drain.join(peer)
            try:
                if resuming is None:
                    await peer.run()
                else:
                    peer.stream = resuming
                    async with trio.open_nursery() as nursery:
                        nursery.start_soon(resuming.run)
                        await peer.run()
                        nursery.cancel_scope.cancel()
            finally:
                if drain is not None:
                    drain.leave(peer)
        finally:
            _current_session.reset(current)
            backend._remove(session)
            if resumable is not None:
                resumable.remove(peer.session_id, peer.closed_reason or "closed")
    finally:
        await stream.aclose()
