"""The in-process transport: encoded messages over Trio memory channels.

Messages are encoded and decoded even here, so a type that would fail over
HTTP fails in-process too, and the two sides never share a mutable object.

Two shapes:

* same loop (default): the backend's session runs as a task beside the
  frontend, over a pair of memory channels;
* `thread=True` ("mobile" style): the backend runs its own Trio loop in its own
  thread, so a CPU-bound impl does not stall the frontend's loop. Messages
  cross between the loops with `TrioToken.run_sync_soon`, with credit-based
  flow control so neither side can flood the other.
"""

from __future__ import annotations

import functools
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from contextlib import asynccontextmanager

import trio

from ...runtime import (
    DEFAULT_MAX_PENDING_BYTES,
    DEFAULT_MAX_PENDING_NOTIFICATIONS,
    DEFAULT_SLOW_FRONTEND_TIMEOUT,
    DEFAULT_STREAM_WINDOW,
    BackendIpc,
    ClientOptions,
    FrontendIpc,
    IpcInterface,
    MessageStream,
    RpcConnection,
    RpcInterface,
    RpcManager,
    StreamWindow,
    open_ipc_connection,
    open_rpc_connection,
    serve_ipc_session,
    serve_rpc_session,
)
from ...runtime._interceptors import Interceptor
from ...runtime._retry import DEFAULT_RETRY, RetryPolicy
from ...runtime._streams import check_stream_window
from ...runtime._util import open_service_nursery
from ._streams import (
    DEFAULT_MAX_BUFFER_BYTES,
    DEFAULT_MAX_MESSAGE_SIZE,
    ThreadStream,
    stream_pair,
)

__all__ = ["connect", "connect_ipc"]


async def _serve_in_thread(
    serve: Callable[[MessageStream], Awaitable[None]],
    stream: ThreadStream,
    client_end: ThreadStream,
    *,
    task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
) -> None:
    frontend = trio.lowlevel.current_trio_token()
    started = trio.Event()
    finished = trio.Event()

    async def backend_main() -> None:
        stream.attach()
        frontend.run_sync_soon(started.set)
        await serve(stream)

    async def run_thread() -> None:
        try:
            # The thread is owned by this task: it cannot be abandoned, so
            # leaving `connect` waits until the backend's loop has finished. It
            # has a limiter of its own: a connection must not hold one of the
            # tokens of Trio's default thread limiter for as long as it is open.
            await trio.to_thread.run_sync(
                functools.partial(trio.run, backend_main),
                thread_name="tether-backend",
                limiter=trio.CapacityLimiter(1),
            )
        finally:
            started.set()  # a backend that failed to start must not leave us waiting
            finished.set()

    async with trio.open_nursery() as nursery:
        nursery.start_soon(run_thread)
        try:
            await started.wait()
            task_status.started()
            await finished.wait()
        except BaseException:
            # Cancelled, at any point: the backend may be waiting for our
            # hello, so close our end, or the thread (and this nursery, which
            # waits for it and cannot cancel it) never ends.
            await client_end.aclose()
            raise


@asynccontextmanager
async def connect(
    manager: RpcManager,
    *,
    interfaces: Iterable[type[RpcInterface]],
    thread: bool = False,
    application_id: str | None = None,
    application_version: str | None = None,
    authorization: str | None = None,
    session_id: str | None = None,
    max_message_size: int = DEFAULT_MAX_MESSAGE_SIZE,
    max_buffer_bytes: int = DEFAULT_MAX_BUFFER_BYTES,
    max_in_flight: int = 1024,
    stream_window: StreamWindow = DEFAULT_STREAM_WINDOW,
    retry: RetryPolicy | None = DEFAULT_RETRY,
    interceptors: Iterable[Interceptor] = (),
) -> AsyncIterator[RpcConnection]:
    """Serve `manager` in-process and connect to it, for the block.

    Example::

        async with memory.connect(manager, interfaces=[RobotWorldRead]) as backend:
            robots = backend.get_client(RobotWorldRead)
            await robots.count_robots(IModelProps("m1"))

    Args:
        manager: The backend's RpcManager, with impls registered.
        interfaces: The interfaces this frontend will call; each is checked
            against what the backend serves before the block starts.
        thread: Run the backend in its own thread with its own Trio loop.
        application_id: Sent with every call (unless the current context has one).
        application_version: Likewise.
        authorization: The credential every call carries; when None, the current
            context's authorization is forwarded.
        session_id: The session the calls belong to; a fresh one by default.
        max_message_size: Largest encoded message, in bytes, either way.
        max_buffer_bytes: Bytes each direction holds, sent and not yet
            received, besides its 256 messages; a sender waits for room (a
            single larger message still passes, alone).
        max_in_flight: Calls the backend runs at once for this connection.
        stream_window: What this frontend takes of a stream's results before
            the backend must wait, per stream (256 items, 4 MiB by default).
        retry: How calls are retried (`tether.RetryPolicy`; by default 10
            tries over about 11 s, backing off from 0.1 s to 2 s, never past
            the caller's deadline): a 503 or 429 refusal is retried for every
            operation, waiting at least its `Retry-After`. This connection ends
            only with its backend, and is not made again: its calls then
            fail at once, with `CallMayHaveRun` if they were sent. None: no retries.
        interceptors: Run around every call made through this connection
            (`tether.Interceptor`; first outermost, inside the process-wide
            ones), wrapping its retries: one outcome per call as the caller sees it.

    Raises:
        ValueError: `stream_window` is not a `tether.StreamWindow`.
        IncompatibleVersion: an interface's version is incompatible.
        NotFound: the backend does not serve one of `interfaces`.
    """
    options = ClientOptions(
        application_id=application_id,
        application_version=application_version,
        authorization=authorization,
        session_id=session_id,
        stream_window=stream_window,
        retry=retry,
        interceptors=interceptors,
    )
    serve = functools.partial(serve_rpc_session, manager, max_in_flight=max_in_flight)
    async with (
        _backend(serve, thread, max_message_size, max_buffer_bytes) as client_end,
        open_rpc_connection(client_end, interfaces=interfaces, options=options) as connection,
    ):
        yield connection


@asynccontextmanager
async def _backend(
    serve: Callable[[MessageStream], Awaitable[None]],
    thread: bool,
    max_message_size: int,
    max_buffer_bytes: int,
) -> AsyncIterator[MessageStream]:
    """Start `serve(server_end)` beside this task (or in its own thread) for the block."""
    client_end, server_end = stream_pair(
        thread=thread, max_message_size=max_message_size, max_buffer_bytes=max_buffer_bytes
    )
    async with open_service_nursery() as nursery:
        if isinstance(client_end, ThreadStream):
            assert isinstance(server_end, ThreadStream)
            client_end.attach()
            await nursery.start(_serve_in_thread, serve, server_end, client_end)
        else:
            nursery.start_soon(serve, server_end)
        yield client_end


@asynccontextmanager
async def connect_ipc(
    backend: BackendIpc,
    *,
    channels: Iterable[type[IpcInterface]] = (),
    thread: bool = False,
    application_id: str | None = None,
    application_version: str | None = None,
    authorization: str | None = None,
    max_message_size: int = DEFAULT_MAX_MESSAGE_SIZE,
    max_buffer_bytes: int = DEFAULT_MAX_BUFFER_BYTES,
    max_pending_notifications: int = DEFAULT_MAX_PENDING_NOTIFICATIONS,
    max_pending_bytes: int = DEFAULT_MAX_PENDING_BYTES,
    slow_listener_timeout: float = DEFAULT_SLOW_FRONTEND_TIMEOUT,
    stream_window: StreamWindow = DEFAULT_STREAM_WINDOW,
    interceptors: Iterable[Interceptor] = (),
) -> AsyncIterator[FrontendIpc]:
    """Serve `backend` in-process and open an IPC session with it, for the block.

    Example::

        async with memory.connect_ipc(backend_ipc, channels=[EditorIpc]) as frontend_ipc:
            frontend_ipc.add_notification_handler(EditorEventsListener())
            editor = frontend_ipc.proxy(EditorIpc)
            placement = await editor.move_element("0x20", 1.5)

    Args:
        backend: The backend's BackendIpc, with handlers registered.
        channels: The channels this frontend will call; each is checked against
            what the backend serves before the block starts. Channels not listed
            are checked when `proxy()` is called.
        thread: Run the backend in its own thread with its own Trio loop.
        application_id: Who the frontend is; the backend's contexts carry it.
        application_version: That application's version.
        authorization: The credential for the backend's `authorize` hook
            (`IpcHandshake.authorization`); never logged.
        max_message_size: Largest encoded message, in bytes, either way.
        max_buffer_bytes: Bytes each direction holds, sent and not yet
            received, besides its 256 messages (a single larger message still
            passes, alone).
        max_pending_notifications: Notifications from the backend that may wait
            for this frontend's listeners before it stops reading.
        max_pending_bytes: The same bound in encoded bytes (a single larger
            notification still passes, alone).
        slow_listener_timeout: Seconds the listeners may leave that queue full
            before the session is closed as "frontend too slow".
        stream_window: How much of each stream this frontend takes before
            its sender must wait (`tether.StreamWindow`; 256 items, 4 MiB by
            default): the result items of its stream calls, and the argument
            items of the backend's stream calls to channels it serves.
        interceptors: Run around every invoke and notification this frontend
            sends (`CallInfo.side` "client") and receives ("server"), inside the
            process-wide ones; first outermost.

    Raises:
        Unauthorized: the backend's `authorize` hook refused the session.
        Unavailable: the backend already has `max_sessions` open.
        NotFound: the backend does not serve one of `channels`.
        IncompatibleVersion: a channel's version is incompatible.
        ValueError: `stream_window` is not a `tether.StreamWindow`.
    """
    if not isinstance(backend, BackendIpc):
        raise TypeError(f"connect_ipc() needs a tether.BackendIpc, got {backend!r}")
    check_stream_window(stream_window)
    serve = functools.partial(serve_ipc_session, backend, transport="memory")
    async with (
        _backend(serve, thread, max_message_size, max_buffer_bytes) as client_end,
        open_ipc_connection(
            client_end,
            channels=channels,
            application_id=application_id,
            application_version=application_version,
            authorization=authorization,
            max_pending_notifications=max_pending_notifications,
            max_pending_bytes=max_pending_bytes,
            slow_listener_timeout=slow_listener_timeout,
            stream_window=stream_window,
            interceptors=interceptors,
        ) as frontend,
    ):
        yield frontend
