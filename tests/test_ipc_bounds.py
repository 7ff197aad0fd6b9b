# mypy: disable-error-code="empty-body"
"""IPC queues bounded in bytes as well as in messages, below the conformance suite.

The engine's notification queue and its listeners' inbox (`max_pending_bytes`),
the in-process transport's buffer (`max_buffer_bytes`, both shapes), and what a
session that ended still holds (nothing).
"""

from __future__ import annotations

import functools
import gc
import tracemalloc
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import pytest
import trio
import trio.testing

import tether
from tether.runtime import DEFAULT_MAX_PENDING_BYTES, serve_ipc_session
from tether.runtime._ipc_engine import Peer
from tether.runtime._protocol import PROTOCOL_VERSION, Hello, Notify, Welcome, decode, encode
from tether.runtime._stream import MessageStream
from tether.transports import memory
from tether.transports.memory._streams import ThreadStream

TIMEOUT = 10.0


class Feed(tether.IpcInterface):
    channel_name = "bounds.feed"
    version = "1.0.0"

    async def flood(self, count: int, size: int) -> None: ...
    async def burst(self, count: int, size: int) -> int: ...


class FeedEvents(tether.NotificationInterface):
    channel_name = "bounds.feed-events"

    async def item(self, n: int, payload: str) -> None: ...


class FeedHandler(tether.IpcHandler, Feed):
    def __init__(self) -> None:
        self.sent = 0
        self.outcome: str | None = None
        self.done = trio.Event()

    async def flood(self, count: int, size: int) -> None:
        tether.current_session().start_soon(self._flood, count, size)

    async def _flood(self, count: int, size: int) -> None:
        notifier = tether.current_session().notifier(FeedEvents)
        try:
            for n in range(count):
                await notifier.item(FIRST + n, "x" * size)
                self.sent += 1
            self.outcome = "all sent"
        except tether.ConnectionClosed as exc:
            self.outcome = exc.reason
        finally:
            self.done.set()

    async def burst(self, count: int, size: int) -> int:
        notifier = tether.current_session().notifier(FeedEvents)
        for n in range(count):
            await notifier.item(n, "x" * size)
        return count


def feed_backend(**options: Any) -> tuple[tether.BackendIpc, FeedHandler]:
    backend = tether.BackendIpc(**options)
    handler = FeedHandler()
    backend.register(handler)  # shared: the test reads its counters
    return backend, handler


def peer_of(backend: tether.BackendIpc) -> Peer:
    (session,) = backend.sessions
    return session._peer


#: The first number `flood` sends: all have as many digits, so all encode to one size.
FIRST = 100_000


def notification_size(size: int) -> int:
    """The encoded size of one `flood` notification with a payload of `size` characters."""
    notify = Notify(FeedEvents.channel_name, "item", [FIRST, "x" * size], str(uuid.uuid4()))
    return len(encode(notify))


# -- the in-process transport's buffer --------------------------------------------------------


def pair(thread: bool, **options: Any) -> tuple[MessageStream, MessageStream]:
    a, b = memory.stream_pair(thread=thread, **options)
    if thread:  # both ends in this run: the credit logic is the same as across threads
        assert isinstance(a, ThreadStream)
        assert isinstance(b, ThreadStream)
        a.attach()
        b.attach()
    return a, b


@pytest.mark.parametrize("thread", [False, True])
async def test_the_in_process_buffer_holds_at_most_max_buffer_bytes(thread: bool) -> None:
    a, b = pair(thread, max_buffer_bytes=1000)
    sent = 0

    async def sender() -> None:
        nonlocal sent
        for _ in range(30):
            await a.send_message(b"x" * 100)
            sent += 1

    with trio.fail_after(TIMEOUT):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(sender)
            await trio.testing.wait_all_tasks_blocked()
            assert sent == 10  # 1000 bytes sent and not received: the next one waits
            assert await b.receive_message() == b"x" * 100
            await trio.testing.wait_all_tasks_blocked()
            assert sent == 11  # one received, one more in
            for _ in range(19):
                await b.receive_message()
        assert sent == 30


@pytest.mark.parametrize("thread", [False, True])
async def test_a_message_larger_than_max_buffer_bytes_passes_alone(thread: bool) -> None:
    a, b = pair(thread, max_buffer_bytes=1000)
    after: list[bytes] = []

    async def send_after() -> None:
        await a.send_message(b"small")
        after.append(b"small")

    with trio.fail_after(TIMEOUT):
        await a.send_message(b"y" * 5000)  # nothing else held: it goes, whatever its size
        async with trio.open_nursery() as nursery:
            nursery.start_soon(send_after)
            await trio.testing.wait_all_tasks_blocked()
            assert after == []  # waits behind the large one
            assert await b.receive_message() == b"y" * 5000
        assert after == [b"small"]
        assert await b.receive_message() == b"small"


async def test_a_thread_pair_returns_credit_a_waiting_sender_asks_for() -> None:
    # Credit goes back in batches (a quarter of the bytes): a sender waiting for
    # bytes the receiver has consumed but not yet returned asks for them.
    a, b = pair(True, max_buffer_bytes=1000)
    with trio.fail_after(TIMEOUT):
        await a.send_message(b"x" * 200)
        assert await b.receive_message() == b"x" * 200  # 200 < 250: not returned yet
        await a.send_message(b"y" * 900)  # 200 + 900 > 1000: waits for that credit
        assert await b.receive_message() == b"y" * 900


@pytest.mark.parametrize("thread", [False, True])
async def test_a_sender_waiting_for_bytes_sees_the_close(thread: bool) -> None:
    a, b = pair(thread, max_buffer_bytes=100)
    with trio.fail_after(TIMEOUT):
        await a.send_message(b"x" * 100)
        async with trio.open_nursery() as nursery:

            async def blocked() -> None:
                with pytest.raises(tether.ConnectionClosed, match="gone"):
                    await a.send_message(b"z")

            nursery.start_soon(blocked)
            await trio.testing.wait_all_tasks_blocked()
            await b.aclose("gone")


def test_the_in_process_bounds_are_checked() -> None:
    for bad in (0, -5, 2.5, True):
        with pytest.raises(ValueError, match="max_buffer_bytes must be a positive int"):
            memory.stream_pair(max_buffer_bytes=bad)  # type: ignore[arg-type]
    assert memory.DEFAULT_MAX_BUFFER_BYTES == 1024 * 1024


# -- the engine's queues ---------------------------------------------------------------------


@asynccontextmanager
async def raw_session(
    backend: tether.BackendIpc, **pair_options: Any
) -> AsyncIterator[MessageStream]:
    """A frontend's end of an opened session that reads only what the test reads."""
    client, server = memory.stream_pair(**pair_options)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(functools.partial(serve_ipc_session, backend, server))
        hello = Hello(PROTOCOL_VERSION, channels={Feed.channel_name: Feed.version}, mode="ipc")
        await client.send_message(encode(hello))
        assert isinstance(decode(await client.receive_message()), Welcome)
        try:
            yield client
        finally:
            await client.aclose()


async def test_the_backend_queue_is_bounded_in_bytes_and_a_stuck_frontend_dropped(
    autojump_clock: trio.abc.Clock,
) -> None:
    size = notification_size(100)
    backend, handler = feed_backend(max_pending_bytes=10 * size, max_pending_notifications=1024)
    with trio.fail_after(TIMEOUT):
        async with raw_session(backend, max_buffer_bytes=5 * size) as client:
            invoke = (
                b'{"t":"invoke","id":1,"channel":"bounds.feed","method":"flood","args":[1000,100]}'
            )
            await client.send_message(invoke)
            await trio.testing.wait_all_tasks_blocked()
            peer = peer_of(backend)
            # At most 5 in the transport (the invoke's reply may take a place),
            # one in the writer's hands, 10 in the queue; then the sender waits,
            # with 1014 places left in the count bound.
            assert peer.queued_bytes == 10 * size
            assert peer.queued_notifications == 10
            assert 4 + 1 + 10 <= handler.sent <= 5 + 1 + 10
            assert handler.outcome is None
            await handler.done.wait()  # slow_frontend_timeout passes
            assert handler.outcome == "frontend too slow"
            assert (peer.queued_bytes, peer.queued_notifications, len(peer.outbox)) == (0, 0, 0)


async def test_the_frontend_inbox_is_bounded_in_bytes() -> None:
    size = notification_size(100)
    backend, _ = feed_backend()
    release, all_in = trio.Event(), trio.Event()
    got: list[int] = []

    async def slow(method: str, n: int, payload: str) -> None:
        got.append(n - FIRST)
        if len(got) == 50:
            all_in.set()
        await release.wait()

    with trio.fail_after(TIMEOUT):
        async with memory.connect_ipc(
            backend, channels=[Feed], max_pending_bytes=10 * size, max_pending_notifications=1024
        ) as frontend:
            frontend.add_listener(FeedEvents.channel_name, slow)
            await frontend.proxy(Feed).flood(50, 100)  # sent by a task of the session
            await trio.testing.wait_all_tasks_blocked()
            # The listener holds the first; the reader stopped at the bound.
            assert got == [0]
            assert frontend._peer.inbox_bytes == 10 * size
            assert len(frontend._peer.inbox) == 10
            release.set()
            await all_in.wait()
            assert got == list(range(50))
            assert frontend._peer.inbox_bytes == 0


def test_the_byte_bounds_are_checked() -> None:
    assert tether.BackendIpc().max_pending_bytes == DEFAULT_MAX_PENDING_BYTES == 1024 * 1024
    for bad in (0, -1, 1.5, True):
        with pytest.raises(ValueError, match="max_pending_bytes must be a positive int"):
            tether.BackendIpc(max_pending_bytes=bad)  # type: ignore[arg-type]


# -- a session that ended holds nothing ---------------------------------------------------------


async def test_an_ended_session_frees_its_queues_at_once(autojump_clock: trio.abc.Clock) -> None:
    # A stuck listener and a backend that keeps sending: every queue fills
    # (backend, transport, frontend inbox), then the frontend closes itself as
    # too slow. What they held must be freed when the session ends, while the
    # FrontendIpc and the IpcSession are still referenced (a view, a handler
    # may keep them), not when they are collected.
    backend, handler = feed_backend()
    stuck = trio.Event()

    async def listener(method: str, n: int, payload: str) -> None:
        await stuck.wait()  # never set

    with trio.fail_after(TIMEOUT):
        async with memory.connect_ipc(backend, channels=[Feed]) as frontend:
            frontend.add_listener(FeedEvents.channel_name, listener)
            (session,) = backend.sessions
            gc.collect()
            tracemalloc.start()
            try:
                baseline = tracemalloc.get_traced_memory()[0]
                await frontend.proxy(Feed).flood(4000, 16 * 1024)
                await trio.testing.wait_all_tasks_blocked()
                backlog = tracemalloc.get_traced_memory()[0] - baseline
                assert await frontend.wait_closed() == "frontend too slow"
                await session.wait_closed()
                await handler.done.wait()
                gc.collect()
                left = tracemalloc.get_traced_memory()[0] - baseline
            finally:
                tracemalloc.stop()
    assert handler.outcome is not None
    assert backlog > 1024 * 1024, backlog
    assert left < 256 * 1024, f"{left} bytes still held after the session ended"
    assert not frontend.is_valid
    assert not session.is_open
