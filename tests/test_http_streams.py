"""RPC streams over HTTP: tether's client against the real hypercorn server on 127.0.0.1.

A server stream is a chunked response of records (NDJSON for curl, see
test_http_streams_wire.py), a client stream a chunked request body; a two-way
stream is refused. The interface and its impl are in tests/http_streams_app.py.
"""

from __future__ import annotations

import functools
import os
import subprocess
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
import trio
import trio.testing

import tether
from tests.http_streams_app import Position, RobotLost, Telemetry, TelemetryImpl, manager
from tether.runtime import ConnectionClosed, NotFound, PayloadTooLarge
from tether.runtime._util import open_service_nursery
from tether.transports import http

TIMEOUT = 10.0
HERE = Path(__file__).resolve().parent
#: The child must import this tree's tether, not an installed one.
SOURCES = Path(tether.__file__).resolve().parents[1]
tracker = TelemetryImpl.tracker


@asynccontextmanager
async def served(**options: Any) -> AsyncIterator[str]:
    """Serve the stream interface on 127.0.0.1 for the block; yield its URL."""
    async with open_service_nursery() as nursery:
        url = await nursery.start(
            functools.partial(http.serve, manager(), "127.0.0.1", 0, **options)
        )
        yield url
        nursery.cancel_scope.cancel()


@asynccontextmanager
async def telemetry(**options: Any) -> AsyncIterator[tuple[Telemetry, http.HttpBackend]]:
    server = {k: options.pop(k) for k in list(options) if k == "max_body_size"}
    async with (
        served(**server) as url,
        http.connect(url, interfaces=[Telemetry], **options) as backend,
    ):
        yield backend.get_client(Telemetry), backend


async def collect(items: AsyncIterator[Any], into: list[Any]) -> None:
    async for item in items:
        into.append(item)


async def collect_stream(stream: tether.Stream[Any]) -> list[Any]:
    got: list[Any] = []
    async with tether.open_stream(stream) as items:
        await collect(items, got)
    return got


async def test_a_server_stream_yields_every_item_then_ends() -> None:
    with trio.fail_after(TIMEOUT):
        async with telemetry() as (client, _):
            with tether.contexts.activity() as activity:
                async with tether.open_stream(client.watch("r2d2", 5)) as positions:
                    got = [p async for p in positions]
    assert got == [Position(float(n), 4.0) for n in range(5)]
    # Every item was produced under the call's ActivityId.
    assert tracker.activity_ids[-5:] == [activity.activity_id] * 5


async def test_an_empty_server_stream_ends_at_once() -> None:
    with trio.fail_after(TIMEOUT):
        async with (
            telemetry() as (client, _),
            tether.open_stream(client.watch("r", 0)) as positions,
        ):
            assert [p async for p in positions] == []


async def test_the_connection_goes_back_to_the_pool_after_a_whole_stream() -> None:
    with trio.fail_after(TIMEOUT):
        async with telemetry() as (client, backend):
            for _ in range(3):
                async with tether.open_stream(client.watch("r", 2)) as positions:
                    assert len([p async for p in positions]) == 2
            stats = backend._pool.statistics()
    assert (stats.opened, stats.idle, stats.in_use) == (1, 1, 0)


async def test_an_application_error_mid_stream_reaches_the_async_for_with_its_fields() -> None:
    got: list[int] = []
    with trio.fail_after(TIMEOUT):
        async with (
            telemetry() as (client, _),
            tether.open_stream(client.lose("r5", 3)) as numbers,
        ):
            with pytest.raises(RobotLost) as raised:
                await collect(numbers, got)
    assert got == [0, 1, 2]
    assert (raised.value.robot_id, raised.value.last_seen) == ("r5", 3)


async def test_an_error_before_the_first_item_is_raised_by_the_first_step() -> None:
    with trio.fail_after(TIMEOUT):
        async with (
            telemetry() as (client, _),
            tether.open_stream(client.lose("r0", 0)) as numbers,
        ):
            with pytest.raises(RobotLost) as raised:
                await anext(numbers)
    assert raised.value.last_seen == 0


async def test_leaving_the_block_cancels_the_generator_within_a_second() -> None:
    with trio.fail_after(TIMEOUT):
        async with telemetry() as (client, backend):
            async with tether.open_stream(client.forever("leave", 10)) as numbers:
                assert (await anext(numbers)).strip() == "0"
            with trio.fail_after(1.0):
                await tracker.closed_event("leave").wait()
            # Its connection was closed, not put back with a response half read.
            assert backend._pool.statistics().idle == 0


async def test_cancelling_the_caller_cancels_the_generator() -> None:
    with trio.fail_after(TIMEOUT):
        async with telemetry() as (client, _):
            with trio.move_on_after(0.2):
                async with tether.open_stream(client.forever("cancel", 1)) as numbers:
                    async for _ in numbers:
                        pass
            with trio.fail_after(1.0):
                await tracker.closed_event("cancel").wait()


async def test_a_deadline_covers_the_whole_stream() -> None:
    with trio.fail_after(TIMEOUT):
        async with telemetry() as (client, _):
            with trio.move_on_after(0.3) as scope:
                async with tether.open_stream(client.forever("deadline", 1)) as numbers:
                    async for _ in numbers:
                        pass
            assert scope.cancelled_caught
            with trio.fail_after(1.0):
                await tracker.closed_event("deadline").wait()


async def test_a_client_stream_sends_every_item_and_gets_the_result() -> None:
    async def chunks() -> AsyncIterator[bytes]:
        for n in range(100):
            yield bytes([n]) * 1000

    with trio.fail_after(TIMEOUT):
        async with telemetry() as (client, backend):
            assert await client.upload("up", chunks()) == 100_000
            assert await client.total(_numbers(1000)) == sum(range(1000))
            assert backend._pool.statistics().in_use == 0


async def _numbers(count: int) -> AsyncIterator[int]:
    for n in range(count):
        yield n


async def test_an_impl_that_returns_before_reading_everything_gets_its_result_to_the_client() -> (
    None
):
    closed = trio.Event()

    async def endless() -> AsyncIterator[int]:
        try:
            n = 7
            while True:
                yield n
                n += 1
        finally:
            closed.set()

    with trio.fail_after(TIMEOUT):
        async with telemetry() as (client, _):
            assert await client.first(endless()) == 7
            # The call closed its source.
            assert closed.is_set()
            assert await client.total(_numbers(3)) == 3  # the connection still serves


async def test_a_source_that_raises_fails_the_call_with_its_exception() -> None:
    class Broken(Exception):
        pass

    async def broken() -> AsyncIterator[int]:
        yield 1
        raise Broken("the source broke")

    with trio.fail_after(TIMEOUT):
        async with telemetry() as (client, _):
            with pytest.raises(Broken):
                await client.total(broken())
            assert await client.total(_numbers(4)) == 6


async def test_a_client_stream_stops_pulling_its_source_while_the_impl_does_not_read() -> None:
    pulled = 0
    size = 64 * 1024

    async def chunks() -> AsyncIterator[bytes]:
        nonlocal pulled
        while True:
            pulled += 1
            yield bytes(size)

    with trio.fail_after(TIMEOUT):
        async with telemetry() as (client, _), trio.open_nursery() as nursery:
            nursery.start_soon(client.gated, "gate", chunks())
            # The impl reads nothing: the server takes its window (4 MiB), its
            # queue to hypercorn and the socket buffers take some more, and
            # then the client's pump waits to send, pulling no more.
            await trio.testing.wait_all_tasks_blocked(0.05)
            held = pulled
            await trio.testing.wait_all_tasks_blocked(0.05)
            assert pulled == held
            assert held * size < 16 * 1024 * 1024
            assert tracker.taken.get("gate", 0) == 0
            # Leaving (here, cancelling the caller) cancels the impl.
            nursery.cancel_scope.cancel()
        with trio.fail_after(1.0):
            await tracker.closed_event("gate").wait()
    print(f"the source was pulled {held} times ({held * size} bytes) while the impl read nothing")


async def test_a_two_way_stream_is_refused_before_anything_is_sent() -> None:
    async def commands() -> AsyncIterator[Position]:
        yield Position(1, 2)

    with trio.fail_after(TIMEOUT):
        async with telemetry() as (client, backend):
            opened = backend._pool.statistics().opened
            with pytest.raises(NotFound) as raised:
                await collect_stream(client.steer(commands()))
            assert backend._pool.statistics().opened == opened
    message = str(raised.value)
    for name in ("two-way", "memory", "WebSocket", "local", "/rpc/ws"):
        assert name in message


async def test_a_stream_of_64_mib_in_1_mib_items() -> None:
    with trio.fail_after(60):
        async with telemetry() as (client, _):
            size = 0
            async with tether.open_stream(client.blobs(64, 1 << 20)) as blobs:
                async for blob in blobs:
                    assert len(blob) == 1 << 20
                    size += len(blob)
            assert size == 64 << 20

            async def chunks() -> AsyncIterator[bytes]:
                for _ in range(16):
                    yield bytes(1 << 20)

            # The other way too (16 MiB: bytes are base85 text in JSON for now,
            # which costs more than the transport).
            assert await client.upload("big", chunks()) == 16 << 20


async def test_an_item_over_the_clients_limit_ends_the_stream_with_payload_too_large() -> None:
    with trio.fail_after(TIMEOUT):
        async with telemetry(max_message_size=100_000) as (client, _):
            async with tether.open_stream(client.blobs(3, 200_000)) as blobs:
                with pytest.raises(PayloadTooLarge):
                    await anext(blobs)
            # Only that stream ended.
            async with tether.open_stream(client.blobs(2, 1000)) as blobs:
                assert len([b async for b in blobs]) == 2


async def test_an_item_over_the_servers_limit_ends_the_stream_with_payload_too_large() -> None:
    with trio.fail_after(TIMEOUT):
        async with (
            telemetry(max_body_size=100_000) as (client, _),
            tether.open_stream(client.blobs(3, 200_000)) as blobs,
        ):
            with pytest.raises(PayloadTooLarge):
                await anext(blobs)


async def test_a_client_stream_item_over_the_servers_limit_fails_the_call() -> None:
    async def chunks() -> AsyncIterator[bytes]:
        yield bytes(10)
        yield bytes(200_000)

    with trio.fail_after(TIMEOUT):
        async with telemetry(max_body_size=100_000) as (client, _):
            with pytest.raises(PayloadTooLarge):
                await client.upload("too-large", chunks())
            assert await client.total(_numbers(3)) == 3


async def test_the_server_killed_mid_stream_ends_it_with_connection_closed() -> None:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(SOURCES), str(HERE.parent)])}
    process = await trio.lowlevel.open_process(
        [sys.executable, str(HERE / "http_streams_app.py")], env=env, stdout=subprocess.PIPE
    )
    try:
        with trio.fail_after(30):  # a Python process has to start and import tether
            assert process.stdout is not None
            lines = _lines(process.stdout)
            url = (await anext(lines)).removeprefix("url ")
            async with http.connect(url, interfaces=[Telemetry]) as backend:
                client = backend.get_client(Telemetry)
                async with tether.open_stream(client.forever("killed", 10)) as numbers:
                    await anext(numbers)
                    process.kill()  # SIGKILL: the kernel closes its sockets, mid-response
                    await process.wait()
                    with pytest.raises(ConnectionClosed) as raised:
                        async for _ in numbers:
                            pass
        assert raised.value.reason == "connection lost"
    finally:
        if process.returncode is None:
            process.kill()
            with trio.CancelScope(shield=True):
                await process.wait()


async def _lines(stream: trio.abc.ReceiveStream) -> AsyncIterator[str]:
    pending = b""
    while chunk := await stream.receive_some():
        pending += chunk
        *lines, pending = pending.split(b"\n")
        for line in lines:
            yield line.decode()


async def test_a_client_that_leaves_mid_upload_leaves_no_request_running() -> None:
    # The impl heard ConnectionClosed and ended by itself: its request used to
    # wait (up to 1 s) for the rest of a body whose client had gone.
    stop = trio.Event()
    stopped = trio.Event()

    async def serve(task_status: trio.TaskStatus[str]) -> None:
        await http.serve(
            manager(), "127.0.0.1", 0, shutdown_trigger=stop.wait, task_status=task_status
        )
        stopped.set()

    class Broken(Exception):
        pass

    async def broken() -> AsyncIterator[bytes]:
        yield b"x"
        while tracker.taken.get("left", 0) < 1:  # the impl is reading
            await trio.testing.wait_all_tasks_blocked()
        raise Broken

    with trio.fail_after(TIMEOUT):
        async with trio.open_nursery() as nursery:
            url = await nursery.start(serve)
            async with http.connect(url, interfaces=[Telemetry]) as backend:
                client = backend.get_client(Telemetry)
                with pytest.raises(Broken):
                    await client.upload("left", broken())
            stop.set()
            with trio.fail_after(0.5):  # a graceful stop with nothing running is at once
                await stopped.wait()
