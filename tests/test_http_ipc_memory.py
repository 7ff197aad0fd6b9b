# mypy: disable-error-code="empty-body"
"""What an IPC session over HTTP holds: bounded in bytes, and freed when the session ends.

A session's messages wait for its event stream in an outbound queue, and the
last ones sent stay in a replay buffer for a client that reconnects. Both are
bounded in messages and in bytes (docs/http.md), and both are dropped when the
session ends, even while the frontend's TCP connection stays open (a frontend
that stopped reading, a silent network path).
"""

from __future__ import annotations

import functools
import gc
import json
import tracemalloc
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import httpx
import hypercorn.config
import hypercorn.trio
import trio
import trio.testing

import tether
from tether.runtime._protocol import Hello, encode
from tether.runtime._util import open_service_nursery
from tether.transports import http
from tether.transports.http import HttpApp

#: Every POST to tether's server says it is JSON (cross-site form posts are refused).
JSON_TYPE = {"Content-Type": "application/json"}

TIMEOUT = 30.0
MiB = 1024 * 1024
#: The documented bounds (docs/http.md, "Limits").
OUTBOUND_BYTES = 4 * MiB
REPLAY_BYTES = 4 * MiB
NOTIFICATION = 64 * 1024


class Flood(tether.IpcInterface):
    channel_name = "flood"
    version = "1.0.0"

    async def flood(self, size: int, count: int) -> int: ...


class FloodEvents(tether.NotificationInterface):
    channel_name = "flood-events"

    async def chunk(self, n: int, data: str) -> None: ...


class Ended:
    def __init__(self) -> None:
        self.reasons: list[str] = []
        self.event = trio.Event()


def flood_backend(ended: Ended, **options: Any) -> tether.BackendIpc:
    class FloodHandler(tether.IpcHandler, Flood):
        async def flood(self, size: int, count: int) -> int:
            events = tether.current_session().notifier(FloodEvents)
            for n in range(count):
                await events.chunk(n, "x" * size)
            return count

        def on_close(self, reason: str) -> None:
            ended.reasons.append(reason)
            ended.event.set()

    backend = tether.BackendIpc(**options)
    backend.register(FloodHandler)
    return backend


@asynccontextmanager
async def served(app: HttpApp) -> AsyncIterator[str]:
    """Serve `app` on 127.0.0.1 with hypercorn's Trio worker; yield its origin."""
    config = hypercorn.config.Config()
    config.bind = ["127.0.0.1:0"]
    config.accesslog = None
    async with open_service_nursery() as nursery:
        binds = await nursery.start(functools.partial(hypercorn.trio.serve, app, config))  # type: ignore[arg-type]
        yield binds[0]
        nursery.cancel_scope.cancel()


def held(items: Any) -> int:
    """Bytes of the messages in a queue of (sequence, data) pairs."""
    return sum(len(data) for _, data in items)


HELLO = encode(Hello(1, channels={"flood": "1.0.0"}, mode="ipc"))


async def test_session_of_a_frontend_that_stops_reading_is_freed_at_once_though_its_tcp_stays_open() -> (  # noqa: E501
    None
):
    ended = Ended()
    backend = flood_backend(ended, max_pending_notifications=64, slow_frontend_timeout=1.0)
    app = HttpApp(None, ipc=backend)
    tracemalloc.start()
    try:
        with trio.fail_after(TIMEOUT):
            async with (
                served(app) as origin,
                httpx.AsyncClient(base_url=origin, headers=JSON_TYPE) as client,
            ):
                opened = (await client.post("/rpc/ipc", content=HELLO)).json()
                session_id, token = opened["session_id"], opened["token"]
                assert app._ipc is not None
                stream = app._ipc._sessions[session_id].stream
                # The event stream, on a socket of our own that stops reading
                # after the opening comment and stays open.
                host, port = origin.removeprefix("http://").rsplit(":", 1)
                events = await trio.open_tcp_stream(host, int(port))
                try:
                    await events.send_all(
                        f"GET /rpc/ipc/{session_id}/events HTTP/1.1\r\nhost: {host}\r\n"
                        f"x-session-token: {token}\r\n\r\n".encode()
                    )
                    seen = b""
                    while b": open\n\n" not in seen:
                        seen += await events.receive_some(65536)
                    gc.collect()
                    baseline = tracemalloc.get_traced_memory()[0]
                    invoke = {
                        "t": "invoke",
                        "id": 1,
                        "channel": "flood",
                        "method": "flood",
                        "args": [NOTIFICATION, 3000],
                    }
                    posted = await client.post(
                        f"/rpc/ipc/{session_id}",
                        content=json.dumps(invoke),
                        headers={"x-session-token": token},
                    )
                    assert posted.status_code == 202
                    # Everything waits: the socket is full, the queues too.
                    await trio.testing.wait_all_tasks_blocked(cushion=0.05)
                    assert not ended.event.is_set()
                    waiting = held(stream.outbound)
                    await ended.event.wait()
                    await trio.testing.wait_all_tasks_blocked(cushion=0.05)
                    gc.collect()
                    retained = tracemalloc.get_traced_memory()[0] - baseline
                    # Still connected: the server's event stream request is still there.
                    assert stream.events_open
                finally:
                    await trio.aclose_forcefully(events)
    finally:
        tracemalloc.stop()
    assert ended.reasons == ["frontend too slow"]
    assert held(stream.outbound) == 0
    assert held(stream.replay) == 0
    assert list(stream.inbound) == []
    # What is left is one send's worth, stuck in the socket (well under 4 MiB).
    assert retained < 4 * MiB, f"{retained / MiB:.1f} MiB still held"
    # And while the session lasted, the queue held no more than its bound.
    assert 0 < waiting <= OUTBOUND_BYTES


async def test_replay_buffer_is_bounded_in_bytes() -> None:
    received: list[int] = []
    done = trio.Event()
    count = 200  # 12.5 MiB of notifications, far fewer messages than the count bound

    class Listener(tether.NotificationHandler, FloodEvents):
        async def chunk(self, n: int, data: str) -> None:
            received.append(n)
            if n == count - 1:
                done.set()

    app = HttpApp(None, ipc=flood_backend(Ended()))
    with trio.fail_after(TIMEOUT):
        async with (
            served(app) as origin,
            http.connect_ipc(f"{origin}/rpc", channels=[Flood]) as frontend,
        ):
            frontend.add_notification_handler(Listener())
            assert app._ipc is not None
            [session] = app._ipc._sessions.values()
            assert await frontend.proxy(Flood).flood(NOTIFICATION, count) == count
            await done.wait()
            kept = list(session.stream.replay)
    assert received == list(range(count))
    assert 0 < held(kept) <= REPLAY_BYTES
    # The newest are kept, in order, up to the last message sent.
    sequences = [sequence for sequence, _ in kept]
    assert sequences == list(range(sequences[0], sequences[0] + len(sequences)))
    assert sequences[-1] == session.stream.sent_upto


async def test_a_message_larger_than_the_byte_bounds_still_goes_alone() -> None:
    got: list[int] = []
    done = trio.Event()

    class Listener(tether.NotificationHandler, FloodEvents):
        async def chunk(self, n: int, data: str) -> None:
            got.append(len(data))
            done.set()

    with trio.fail_after(TIMEOUT):
        async with (
            served(HttpApp(None, ipc=flood_backend(Ended()))) as origin,
            http.connect_ipc(f"{origin}/rpc", channels=[Flood]) as frontend,
        ):
            frontend.add_notification_handler(Listener())
            assert await frontend.proxy(Flood).flood(6 * MiB, 1) == 1
            await done.wait()
    assert got == [6 * MiB]


def test_the_documented_bounds_are_the_defaults() -> None:
    from tether.transports.http import _ipc_server

    assert _ipc_server.OUTBOUND_BYTES == OUTBOUND_BYTES
    assert _ipc_server.REPLAY_BYTES == REPLAY_BYTES
    assert _ipc_server.OUTBOUND_MESSAGES == _ipc_server.REPLAY_MESSAGES == 1024
