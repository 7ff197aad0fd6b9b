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

import contextlib
import functools
import threading
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from contextlib import asynccontextmanager
from typing import Any

import trio

from ..runtime import (
    DEFAULT_MAX_PENDING_NOTIFICATIONS,
    DEFAULT_SLOW_FRONTEND_TIMEOUT,
    BackendIpc,
    ClientOptions,
    ConnectionClosed,
    FrontendIpc,
    IpcInterface,
    MessageStream,
    PayloadTooLarge,
    RpcConnection,
    RpcInterface,
    RpcManager,
    open_ipc_connection,
    open_rpc_connection,
    serve_ipc_session,
    serve_rpc_session,
)
from ..runtime._util import open_service_nursery

__all__ = ["DEFAULT_MAX_MESSAGE_SIZE", "connect", "connect_ipc", "stream_pair"]

#: Default limit of one encoded message, in bytes (16 MiB).
DEFAULT_MAX_MESSAGE_SIZE = 16 * 1024 * 1024
#: Messages a side may have sent and the other not yet received.
_BUFFER = 256
#: Credits a thread-mode receiver returns at once.
_CREDIT_BATCH = _BUFFER // 4


def _too_large(size: int, limit: int) -> PayloadTooLarge:
    return PayloadTooLarge(
        f"message of {size} bytes is over the in-process limit of {limit}: raise "
        "max_message_size or send less at once"
    )


class _CloseReason:
    """Why a pair was closed: the first close's reason, shared by both ends."""

    __slots__ = ("reason",)

    def __init__(self) -> None:
        self.reason: str | None = None

    def set(self, reason: str | None) -> None:
        if self.reason is None:
            self.reason = reason or "closed"

    def error(self) -> ConnectionClosed:
        reason = self.reason or "closed"
        return ConnectionClosed(f"in-process connection closed: {reason}", reason=reason)


class _ChannelStream(MessageStream):
    """One end of a same-loop pair: a memory channel each way."""

    __slots__ = ("_closed", "_receive", "_send", "max_message_size")

    def __init__(
        self,
        send: trio.MemorySendChannel[bytes],
        receive: trio.MemoryReceiveChannel[bytes],
        max_message_size: int,
        closed: _CloseReason,
    ) -> None:
        self._send = send
        self._receive = receive
        self._closed = closed
        self.max_message_size = max_message_size

    async def send_message(self, data: bytes) -> None:
        if len(data) > self.max_message_size:
            raise _too_large(len(data), self.max_message_size)
        try:
            # Buffered without a yield when there is room: the caller is about to
            # block on its reply anyway, and the extra scheduling round this
            # saves is a large part of an in-process call's cost.
            self._send.send_nowait(data)
        except trio.WouldBlock:
            await self._send_blocking(data)
        except (trio.ClosedResourceError, trio.BrokenResourceError):
            raise self._closed.error() from None

    async def _send_blocking(self, data: bytes) -> None:
        try:
            await self._send.send(data)
        except (trio.ClosedResourceError, trio.BrokenResourceError):
            raise self._closed.error() from None

    async def receive_message(self) -> bytes:
        try:
            return await self._receive.receive()
        except (trio.EndOfChannel, trio.ClosedResourceError):
            raise self._closed.error() from None

    async def aclose(self, reason: str | None = None) -> None:
        self._closed.set(reason)
        self._send.close()
        self._receive.close()
        await trio.lowlevel.cancel_shielded_checkpoint()


class _ThreadStream(MessageStream):
    """One end of a cross-thread pair; it lives in one Trio run, its peer in another."""

    __slots__ = (
        "_closed",
        "_consumed",
        "_credits",
        "_inbox",
        "_inbox_send",
        "_lock",
        "_lot",
        "_peer",
        "_peer_gone",
        "_reason",
        "_token",
        "max_message_size",
    )

    def __init__(self, lock: threading.Lock, max_message_size: int, reason: _CloseReason) -> None:
        self._lock = lock
        self._reason = reason  # shared with the peer; written under the lock
        self._inbox_send, self._inbox = trio.open_memory_channel[bytes](_BUFFER)
        # Messages we may send before the peer says it received some: the
        # peer's inbox has room for exactly that many, so delivery never blocks.
        self._credits = _BUFFER
        # Received messages whose credit is not yet returned to the peer.
        self._consumed = 0
        self._lot = trio.lowlevel.ParkingLot()
        self._token: trio.lowlevel.TrioToken | None = None
        self._peer: _ThreadStream | None = None
        self._peer_gone = False
        self._closed = False
        self.max_message_size = max_message_size

    def attach(self) -> None:
        """Bind this end to the Trio run it is used in. Call once, from that run."""
        with self._lock:
            self._token = trio.lowlevel.current_trio_token()
            gone = self._peer_gone
        if gone:
            self._on_peer_closed()

    def _to_peer(self, fn: Any, *args: Any) -> bool:
        """Run `fn(*args)` in the peer's loop; False when the peer has no loop now."""
        peer = self._peer
        assert peer is not None
        token = peer._token
        if token is None:
            return False
        try:
            token.run_sync_soon(fn, *args)
        except trio.RunFinishedError:
            return False
        return True

    # These run in this end's own loop, scheduled by the peer.
    def _deliver(self, data: bytes) -> None:
        # After we closed, a message is dropped, as on any closed connection.
        with contextlib.suppress(trio.ClosedResourceError, trio.BrokenResourceError):
            self._inbox_send.send_nowait(data)

    def _credit(self, count: int) -> None:
        self._credits += count
        self._lot.unpark_all()

    def _on_peer_closed(self) -> None:
        self._closed = True
        self._inbox_send.close()  # receives drain what arrived, then see the close
        self._lot.unpark_all()

    async def send_message(self, data: bytes) -> None:
        await trio.lowlevel.checkpoint()
        if len(data) > self.max_message_size:
            raise _too_large(len(data), self.max_message_size)
        while self._credits == 0 and not self._closed:
            await self._lot.park()
        if self._closed:
            raise self._reason.error()
        self._credits -= 1
        peer = self._peer
        assert peer is not None
        if not self._to_peer(peer._deliver, data):
            # The peer's run has ended; if it closed with a reason, that is the news.
            with self._lock:
                self._reason.set("the other thread's Trio run has ended")
            self._on_peer_closed()
            raise self._reason.error()

    async def receive_message(self) -> bytes:
        try:
            data = await self._inbox.receive()
        except (trio.EndOfChannel, trio.ClosedResourceError):
            raise self._reason.error() from None
        # Credits go back in batches: each return wakes the peer's loop, and one
        # wake per message would double the cross-thread traffic. No deadlock:
        # when the peer has no credit left, fewer than a batch are held here and
        # the rest of the window is still in our inbox, to be received.
        self._consumed += 1
        if self._consumed >= _CREDIT_BATCH:
            peer = self._peer
            assert peer is not None
            self._to_peer(peer._credit, self._consumed)
            self._consumed = 0
        return data

    async def aclose(self, reason: str | None = None) -> None:
        if not self._closed:
            self._closed = True
            self._lot.unpark_all()
            peer = self._peer
            assert peer is not None
            with self._lock:
                self._reason.set(reason)
                if peer._token is None:
                    peer._peer_gone = True  # it will see the close when it attaches
                else:
                    self._to_peer(peer._on_peer_closed)
        self._inbox.close()
        await trio.lowlevel.cancel_shielded_checkpoint()


def stream_pair(
    *, thread: bool = False, max_message_size: int = DEFAULT_MAX_MESSAGE_SIZE
) -> tuple[MessageStream, MessageStream]:
    """Return two connected in-process MessageStreams.

    Args:
        thread: Make a pair whose ends live in different Trio runs (threads).
            Each end must then be `attach()`-ed from the run that uses it.
        max_message_size: Largest message either end sends, in bytes.
    """
    if thread:
        lock = threading.Lock()
        reason = _CloseReason()
        a = _ThreadStream(lock, max_message_size, reason)
        b = _ThreadStream(lock, max_message_size, reason)
        a._peer, b._peer = b, a
        return a, b
    a_send, b_receive = trio.open_memory_channel[bytes](_BUFFER)
    b_send, a_receive = trio.open_memory_channel[bytes](_BUFFER)
    closed = _CloseReason()
    return (
        _ChannelStream(a_send, a_receive, max_message_size, closed),
        _ChannelStream(b_send, b_receive, max_message_size, closed),
    )


async def _serve_in_thread(
    serve: Callable[[MessageStream], Awaitable[None]],
    stream: _ThreadStream,
    client_end: _ThreadStream,
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
    max_in_flight: int = 1024,
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
        max_in_flight: Calls the backend runs at once for this connection.

    Raises:
        IncompatibleVersion: an interface's version is incompatible.
        NotFound: the backend does not serve one of `interfaces`.
    """
    options = ClientOptions(
        application_id=application_id,
        application_version=application_version,
        authorization=authorization,
        session_id=session_id,
    )
    serve = functools.partial(serve_rpc_session, manager, max_in_flight=max_in_flight)
    async with (
        _backend(serve, thread, max_message_size) as client_end,
        open_rpc_connection(client_end, interfaces=interfaces, options=options) as connection,
    ):
        yield connection


@asynccontextmanager
async def _backend(
    serve: Callable[[MessageStream], Awaitable[None]], thread: bool, max_message_size: int
) -> AsyncIterator[MessageStream]:
    """Start `serve(server_end)` beside this task (or in its own thread) for the block."""
    client_end, server_end = stream_pair(thread=thread, max_message_size=max_message_size)
    async with open_service_nursery() as nursery:
        if isinstance(client_end, _ThreadStream):
            assert isinstance(server_end, _ThreadStream)
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
    max_message_size: int = DEFAULT_MAX_MESSAGE_SIZE,
    max_pending_notifications: int = DEFAULT_MAX_PENDING_NOTIFICATIONS,
    slow_listener_timeout: float = DEFAULT_SLOW_FRONTEND_TIMEOUT,
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
        max_message_size: Largest encoded message, in bytes, either way.
        max_pending_notifications: Notifications from the backend that may wait
            for this frontend's listeners before it stops reading.
        slow_listener_timeout: Seconds the listeners may leave that queue full
            before the session is closed as "frontend too slow".

    Raises:
        NotFound: the backend does not serve one of `channels`.
        IncompatibleVersion: a channel's version is incompatible.
    """
    if not isinstance(backend, BackendIpc):
        raise TypeError(f"connect_ipc() needs a tether.BackendIpc, got {backend!r}")
    serve = functools.partial(serve_ipc_session, backend)
    async with (
        _backend(serve, thread, max_message_size) as client_end,
        open_ipc_connection(
            client_end,
            channels=channels,
            application_id=application_id,
            application_version=application_version,
            max_pending_notifications=max_pending_notifications,
            slow_listener_timeout=slow_listener_timeout,
        ) as frontend,
    ):
        yield frontend
