"""The frontend's IPC: `FrontendIpc`, its end of a paired session, and
`open_ipc_connection`, which runs the engine as a frontend over a stream.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Iterable, Mapping
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import Any, TypeVar, cast

import attrs
import trio

from ._channels import (
    IpcHandler,
    IpcInterface,
    NotificationHandler,
    NotificationInterface,
    require_channel,
)
from ._connection import exchange_hello
from ._faults import wrap_client_stream
from ._interceptors import Interceptor, to_interceptors
from ._ipc_engine import (
    DEFAULT_MAX_PENDING_BYTES,
    DEFAULT_MAX_PENDING_NOTIFICATIONS,
    DEFAULT_SLOW_FRONTEND_TIMEOUT,
    Listener,
    Peer,
    Served,
)
from ._ipc_proxy import (
    add_to_table,
    check_listener,
    check_served,
    handler_channel,
    make_proxy,
    plain_args,
)
from ._protocol import PROTOCOL_VERSION, Hello
from ._resume import (
    DEFAULT_REPLAY_BYTES,
    DEFAULT_REPLAY_MESSAGES,
    ResumableStream,
    keep_connected,
)
from ._retry import RetryPolicy
from ._state import ConnectionState
from ._stream import MessageStream
from ._streams import DEFAULT_STREAM_WINDOW, StreamWindow, check_stream_window
from ._util import check_positive_int, check_seconds, open_service_nursery

__all__ = ["FrontendIpc", "open_ipc_connection"]

C = TypeVar("C", bound=IpcInterface)
N = TypeVar("N", bound=NotificationInterface)


class FrontendIpc:
    """The frontend's end of a paired session with one backend.

    Made by a transport's `connect_ipc`; valid for the `async with` block.
    Call the backend with `proxy(Channel)` (typed) or `call_backend` (untyped),
    receive its notifications with `add_notification_handler` (typed) or
    `add_listener` (untyped), and serve channels the backend calls with
    `register`.
    """

    __slots__ = ("_channels", "_peer")

    def __init__(self, peer: Peer, channels: Mapping[str, str]) -> None:
        self._peer = peer
        self._channels = dict(channels)

    def __repr__(self) -> str:
        state = "open" if self.is_valid else f"closed: {self.closed_reason}"
        return f"<FrontendIpc session {self.session_id} ({state})>"

    @property
    def session_id(self) -> str:
        """The session's id, made by the backend."""
        return self._peer.session_id

    @property
    def channels(self) -> Mapping[str, str]:
        """The channels the backend serves: name -> version."""
        return self._channels

    @property
    def is_valid(self) -> bool:
        """True while the session is open."""
        return self._peer.closed_reason is None

    @property
    def closed_reason(self) -> str | None:
        """Why the session ended (`"frontend too slow"`, ...), or None while open."""
        return self._peer.closed_reason

    @property
    def state(self) -> ConnectionState:
        """Where the session is: connected, reconnecting (a transport that
        resumes sessions is getting its connection back), or closed."""
        return self._peer.state_watch.state

    async def wait_state_change(self, seen: ConnectionState | None = None) -> ConnectionState:
        """Wait until the state is not `seen` (the current one when None), and return it.

        For UIs that show "reconnecting...": pass back what you last saw, and
        no change is missed. `closed_reason` says why once it is CLOSED.
        """
        return await self._peer.state_watch.wait_change(seen)

    def proxy(self, channel: type[C]) -> C:
        """A typed caller of `channel` on the backend (mypy checks the calls).

        A method that returns a `tether.Stream` returns a stream call, opened
        with `async with tether.open_stream(...)` (docs/ipc.md, "Streams").

        Raises:
            TypeError: `channel` is not an IpcInterface declaration.
            NotFound: the backend does not serve it.
            IncompatibleVersion: it serves an incompatible version.
        """
        require_channel(channel, IpcInterface)
        check_served(self._channels, channel.channel_name, channel.version)
        return cast(C, make_proxy(channel, self._peer, "Proxy"))

    def notifier(self, channel: type[N]) -> N:
        """A typed sender of one-way messages of `channel` to the backend."""
        require_channel(channel, NotificationInterface)
        return cast(N, make_proxy(channel, self._peer, "Notifier"))

    async def call_backend(self, channel: str, method: str, *args: Any) -> Any:
        """Invoke `channel.method(*args)` on the backend and return its result as JSON.

        The untyped form of `proxy`: arguments are converted by their runtime
        types, and the result is returned as decoded JSON (dicts, lists, ...).

        Raises:
            NotFound: the backend does not serve `channel`, or it has no `method`.
            InvalidRequest: the arguments do not fit the method (details say which).
            ConnectionClosed: the session ended before the reply came.
            TetherError: any other error the handler raised, by its code.
        """
        check_served(self._channels, channel, None)
        return await self._peer.invoke(channel, method, plain_args(args))

    async def send(self, channel: str, method: str, *args: Any) -> None:
        """Send a one-way message to the backend; waits only while the backend is behind.

        Raises:
            ConnectionClosed: the session is closed.
        """
        await self._peer.notify(channel, method, plain_args(args))

    def add_listener(self, channel: str, listener: Listener) -> Callable[[], None]:
        """Call `listener(method, *args)` for every notification on `channel`.

        Returns:
            A function that removes the listener.
        """
        check_listener(channel, listener)
        return add_to_table(self._peer.listeners, channel, listener)

    def add_notification_handler(self, handler: NotificationHandler) -> Callable[[], None]:
        """Deliver the notifications of the handler's channel to its methods, typed.

        Returns:
            A function that removes the handler.

        Raises:
            TypeError: `handler` is not a NotificationHandler instance.
        """
        if not (
            isinstance(handler, NotificationHandler) and isinstance(handler, NotificationInterface)
        ):
            raise TypeError(
                f"{handler!r} is not a NotificationHandler: pass an instance of "
                "'class MyListener(tether.NotificationHandler, MyEvents)'"
            )
        return add_to_table(self._peer.notification_handlers, handler.channel_name, handler)

    def register(self, handler: IpcHandler | type[IpcHandler]) -> Callable[[], None]:
        """Serve a channel on the frontend, for the backend to call (`IpcSession.proxy`).

        Args:
            handler: An IpcHandler instance, or a class (instantiated once).

        Returns:
            A function that stops serving it.
        """
        channel = handler_channel(handler)
        name = channel.channel_name
        served = self._peer.served
        if name in served:
            raise TypeError(f"channel {name!r} is already served by this frontend")
        instance = handler() if isinstance(handler, type) else handler
        entry = Served(channel, instance, owned=True)
        served[name] = entry

        def remove() -> None:
            if served.get(name) is entry:
                del served[name]

        return remove

    async def wait_closed(self) -> str:
        """Wait until the session has ended; return why."""
        return await self._peer.wait_closed()

    async def aclose(self) -> None:
        """End the session; calls still waiting fail with ConnectionClosed."""
        self._peer.close("closed by the frontend")
        await self._peer.wait_closed()


@asynccontextmanager
async def open_ipc_connection(
    stream: MessageStream,
    *,
    channels: Iterable[type[IpcInterface]] = (),
    application_id: str | None = None,
    application_version: str | None = None,
    authorization: str | None = None,
    max_pending_notifications: int = DEFAULT_MAX_PENDING_NOTIFICATIONS,
    max_pending_bytes: int = DEFAULT_MAX_PENDING_BYTES,
    slow_listener_timeout: float = DEFAULT_SLOW_FRONTEND_TIMEOUT,
    stream_window: StreamWindow = DEFAULT_STREAM_WINDOW,
    reconnect: Callable[[str], AbstractAsyncContextManager[MessageStream]] | None = None,
    retry: RetryPolicy | None = None,
    handshake_timeout: float = 10.0,
    interceptors: Iterable[Interceptor] = (),
) -> AsyncIterator[FrontendIpc]:
    """Run the IPC protocol as the frontend over `stream` for the block.

    Sends `hello` with the channels this frontend will use; the backend checks
    each one before the session opens.

    Args:
        stream: The connection to the backend.
        channels: The channels to check at connect.
        application_id: Who the frontend is; the backend's contexts carry it.
        application_version: That application's version.
        authorization: The credential for the backend's `authorize` hook,
            sent in the `hello` (never logged, never in a repr).
        max_pending_notifications: Notifications that may wait for this
            frontend's listeners before it stops reading.
        max_pending_bytes: The same bound in encoded bytes (a single larger
            notification still passes, alone).
        slow_listener_timeout: Seconds the listeners may leave that queue full
            (making no room at all) before the session is closed as "frontend
            too slow".
        stream_window: How much of a stream this frontend takes before its
            sender must wait: the result items of its stream calls to the
            backend, and the argument items of the backend's stream calls to
            channels it serves. 256 items and 4 MiB by default.
        reconnect: Opens a new connection to the same backend, given the id
            of the session it resumes (for a reverse proxy to route on). Given (with
            `retry`), the session is resumable: after a dropped connection the
            frontend connects again with `retry`'s backoff and resumes it
            (`_resume`), if the backend offers that (its welcome holds a token).
        retry: The reconnect backoff, and tries per outage.
        handshake_timeout: Seconds a resuming handshake may take.
        interceptors: Run around every invoke and notification this frontend
            sends (`CallInfo.side` "client") and receives ("server"), inside the
            process-wide ones; first outermost.

    Raises:
        Unauthorized: the backend's `authorize` hook refused the session.
        Unavailable: the backend has `max_sessions` open (503), or this client
            its `max_sessions_per_client` (429).
        NotFound: the backend does not serve one of `channels`.
        IncompatibleVersion: a channel's (or the protocol's) version is incompatible.
        ConnectError: the backend did not complete the handshake.
        ValueError: a bound is not a positive int, or `stream_window` not a
            `StreamWindow`.
    """
    wanted = list(channels)
    for channel in wanted:
        require_channel(channel, IpcInterface)
    check_positive_int("max_pending_notifications", max_pending_notifications)
    check_positive_int("max_pending_bytes", max_pending_bytes)
    if authorization is not None and not isinstance(authorization, str):
        raise TypeError(f"authorization must be a str or None, got {type(authorization).__name__}")
    check_seconds("slow_listener_timeout", slow_listener_timeout, finite=False)
    check_stream_window(stream_window)
    chain = to_interceptors(interceptors)
    stream = wrap_client_stream(stream)
    hello = Hello(
        PROTOCOL_VERSION,
        None,
        application_id,
        application_version,
        {channel.channel_name: channel.version for channel in wanted},
        mode="ipc",
        authorization=authorization,
        binary=True,  # every stream of ours reads binary frames
        resumable=reconnect is not None and retry is not None,
    )
    try:
        reply = await exchange_hello(stream, hello)
        for channel in wanted:  # the backend checked them; a second look costs nothing
            check_served(reply.channels, channel.channel_name, channel.version)
    except BaseException:
        with trio.CancelScope(shield=True):
            await stream.aclose()
        raise
    peer = Peer(
        stream,
        side="frontend",
        session_id=reply.session_id,
        application_id=application_id,
        application_version=application_version,
        served={},
        listeners={},
        max_pending_notifications=max_pending_notifications,
        max_pending_bytes=max_pending_bytes,
        max_in_flight=1024,
        development_mode=False,
        slow_frontend_timeout=slow_listener_timeout,
        stream_window=stream_window,
        interceptors=chain,
    )
    frontend = FrontendIpc(peer, reply.channels)
    async with open_service_nursery() as nursery:
        if reply.resume_token is not None and reconnect is not None and retry is not None:
            resuming = ResumableStream(
                stream,
                side="frontend",
                max_messages=DEFAULT_REPLAY_MESSAGES,
                max_bytes=DEFAULT_REPLAY_BYTES,
                full_timeout=slow_listener_timeout,
            )
            resuming.state = peer.state_watch
            peer.stream = resuming
            hello = attrs.evolve(hello, session_id=reply.session_id)
            token = reply.resume_token

            async def run(*, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
                # The stream's tasks live as long as the session's engine.
                async with trio.open_nursery() as tasks:
                    tasks.start_soon(resuming.run)
                    tasks.start_soon(
                        keep_connected, resuming, reconnect, hello, token, retry, handshake_timeout
                    )
                    await peer.run(task_status=task_status)
                    tasks.cancel_scope.cancel()

            await nursery.start(run)
        else:
            await nursery.start(peer.run)
        try:
            yield frontend
        finally:
            peer.close("closed by the frontend")
