"""Hostile clients of HTTP RPC streams: the real hypercorn server, raw sockets.

Each test is an attack a client on the network can make on a stream call
(docs/http.md, "Streams"): bodies that trickle, never end, or lie about their
lengths; clients that never read, leave, or come two hundred at once. The
server must answer each with the documented status in bounded time and
memory, and every impl it started must end.
"""

from __future__ import annotations

import functools
import json
import logging
import socket
import struct
import time
import tracemalloc
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import pytest
import trio
import trio.testing

import tether
from tether.runtime._util import open_service_nursery
from tether.transports import http

TIMEOUT = 20.0
OP = "/rpc/HttpAttack/1.0.0"
NDJSON = "application/x-ndjson"
RECORDS = "application/vnd.tether.stream"


class Attack(tether.RpcInterface):
    interface_name = "HttpAttack"
    interface_version = "1.0.0"

    async def count(self, key: str, items: tether.Stream[str]) -> int:
        """The total length of the items."""

    async def stuck(self, key: str, items: tether.Stream[str]) -> int:
        """Never reads its items; waits until cancelled."""

    def ticks(self, key: str, size: int) -> tether.Stream[str]:
        """Texts of `size` characters, until cancelled."""

    def hang(self, key: str) -> tether.Stream[int]:
        """One item, then waits until cancelled."""


class Tracker:
    def __init__(self) -> None:
        self.produced: dict[str, int] = {}
        self.taken: dict[str, int] = {}
        self.running: set[str] = set()
        self.ended: dict[str, trio.Event] = {}
        self.ended_at: dict[str, float] = {}

    def ended_event(self, key: str) -> trio.Event:
        return self.ended.setdefault(key, trio.Event())

    def start(self, key: str) -> None:
        self.running.add(key)
        self.ended_event(key)

    def end(self, key: str) -> None:
        self.running.discard(key)
        self.ended_at[key] = trio.current_time()
        self.ended_event(key).set()


class AttackImpl(Attack):
    def __init__(self, tracker: Tracker) -> None:
        self.tracker = tracker

    async def count(self, key: str, items: tether.Stream[str]) -> int:
        self.tracker.start(key)
        try:
            total = 0
            async with tether.open_stream(items) as texts:
                async for text in texts:
                    total += len(text)
                    self.tracker.taken[key] = self.tracker.taken.get(key, 0) + 1
            return total
        finally:
            self.tracker.end(key)

    async def stuck(self, key: str, items: tether.Stream[str]) -> int:
        self.tracker.start(key)
        try:
            await trio.sleep_forever()
        finally:
            self.tracker.end(key)

    async def ticks(self, key: str, size: int) -> AsyncIterator[str]:
        self.tracker.start(key)
        self.tracker.produced[key] = 0
        try:
            n = 0
            while True:
                yield f"{n:>{size}}"
                n += 1
                self.tracker.produced[key] = n
        finally:
            self.tracker.end(key)

    async def hang(self, key: str) -> AsyncIterator[int]:
        self.tracker.start(key)
        try:
            yield 0
            await trio.sleep_forever()
        finally:
            self.tracker.end(key)


@asynccontextmanager
async def served(**options: Any) -> AsyncIterator[tuple[int, Tracker]]:
    """Serve `Attack` on 127.0.0.1:0 for the block; yield its port and the impl's tracker."""
    tracker = Tracker()
    manager = tether.RpcManager()
    manager.register_impl(Attack, AttackImpl(tracker))
    async with open_service_nursery() as nursery:
        url = await nursery.start(functools.partial(http.serve, manager, "127.0.0.1", 0, **options))
        yield int(url.split(":")[2].split("/")[0]), tracker
        nursery.cancel_scope.cancel()


# ---------------------------------------------------------------------------
# A raw HTTP/1.1 client


def record(data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + data


def chunk(data: bytes) -> bytes:
    return b"%x\r\n%s\r\n" % (len(data), data)


async def connect(port: int, rcvbuf: int | None = None) -> trio.SocketStream:
    sock = trio.socket.socket()
    if rcvbuf is not None:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
    await sock.connect(("127.0.0.1", port))
    stream = trio.SocketStream(sock)
    stream.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, True)
    return stream


def head(
    port: int, target: str, content_type: str, *extra: str, length: int | None = None
) -> bytes:
    framing = "Transfer-Encoding: chunked" if length is None else f"Content-Length: {length}"
    lines = [
        f"POST {target} HTTP/1.1",
        f"Host: 127.0.0.1:{port}",
        f"Content-Type: {content_type}",
        framing,
        *extra,
    ]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


class Response:
    def __init__(self, status: int, headers: dict[str, str], body: bytes) -> None:
        self.status = status
        self.headers = headers
        self.body = body

    def error(self) -> dict[str, Any]:
        error: dict[str, Any] = json.loads(self.body)["error"]
        return error


class Reader:
    """Reads responses off a raw connection."""

    def __init__(self, stream: trio.SocketStream) -> None:
        self.stream = stream
        self.buffer = b""

    async def _fill(self) -> None:
        data = await self.stream.receive_some(65536)
        if not data:
            raise EOFError(f"the connection ended; got {self.buffer[:200]!r}")
        self.buffer += data

    async def _until(self, mark: bytes) -> bytes:
        while mark not in self.buffer:
            await self._fill()
        found, _, self.buffer = self.buffer.partition(mark)
        return found

    async def _exactly(self, size: int) -> bytes:
        while len(self.buffer) < size:
            await self._fill()
        found, self.buffer = self.buffer[:size], self.buffer[size:]
        return found

    async def head(self) -> tuple[int, dict[str, str]]:
        text = (await self._until(b"\r\n\r\n")).decode("latin-1")
        status_line, *lines = text.split("\r\n")
        headers = {}
        for header in lines:
            name, _, value = header.partition(":")
            headers[name.strip().lower()] = value.strip()
        return int(status_line.split()[1]), headers

    async def response(self) -> Response:
        """A whole response, its body by `Content-Length` or chunked."""
        status, headers = await self.head()
        if "content-length" in headers:
            return Response(status, headers, await self._exactly(int(headers["content-length"])))
        assert headers["transfer-encoding"] == "chunked", headers
        body = b""
        while size := int(await self._until(b"\r\n"), 16):
            body += await self._exactly(size)
            await self._exactly(2)
        await self._until(b"\r\n")
        return Response(status, headers, body)


async def request(port: int, data: bytes) -> Response:
    """One request on a new connection, its answer read whole."""
    stream = await connect(port)
    async with stream:
        await stream.send_all(data)
        return await Reader(stream).response()


async def healthy(port: int, tracker: Tracker, key: str = "after") -> None:
    """The server still answers a client stream on a new connection."""
    body = b'["%s", null]\n"ab"\n"cd"\n' % key.encode()
    response = await request(port, head(port, f"{OP}/count", NDJSON, length=len(body)) + body)
    assert (response.status, response.body) == (200, b"4")


async def send_forever(stream: trio.SocketStream, data: bytes, sent: list[int]) -> None:
    """Write `data` again and again until the connection breaks (bounded by the test's cap)."""
    try:
        while True:
            await stream.send_all(data)
            sent[0] += len(data)
    except (trio.BrokenResourceError, trio.ClosedResourceError):
        pass


# ---------------------------------------------------------------------------
# 1. A body trickled one byte per write, one byte per chunk


async def test_a_client_stream_sent_one_byte_per_write_and_per_chunk_parses_in_bounded_time() -> (
    None
):
    items = [b"x" * (n % 7 + 1) for n in range(400)] + [b"y" * 3000]
    body = b'["trickle", null]\n' + b"".join(b'"%s"\n' % item for item in items)
    with trio.fail_after(TIMEOUT):
        async with served() as (port, tracker):
            stream = await connect(port)
            async with stream:
                await stream.send_all(head(port, f"{OP}/count", NDJSON))
                tracemalloc.start()
                try:
                    started = time.perf_counter()
                    for byte in body:
                        await stream.send_all(chunk(bytes([byte])))
                    await stream.send_all(b"0\r\n\r\n")
                    response = await Reader(stream).response()
                    elapsed = time.perf_counter() - started
                    _, peak = tracemalloc.get_traced_memory()
                finally:
                    tracemalloc.stop()
    assert response.status == 200, response.body
    assert int(response.body) == sum(len(item) for item in items)
    assert tracker.taken["trickle"] == len(items)
    # About 8 KB in 8,000 chunks: linear work is well under a second even
    # traced; the bound leaves room for a loaded machine.
    assert elapsed < 15.0, elapsed
    # The server held a few texts and hypercorn's queue, not the body many times over.
    assert peak < 4 * 1024 * 1024, peak


# ---------------------------------------------------------------------------
# 2. A line that never ends


@pytest.mark.parametrize("position", ["arguments", "item"])
async def test_a_line_that_never_ends_is_refused_413_and_the_server_stays_healthy(
    position: str,
) -> None:
    limit = 64 * 1024
    start = b"" if position == "arguments" else b'["endless", null]\n"ok"\n'
    piece = b"z" * 8192
    with trio.fail_after(TIMEOUT):
        async with served(max_body_size=limit) as (port, tracker):
            stream = await connect(port)
            async with stream, trio.open_nursery() as nursery:
                await stream.send_all(head(port, f"{OP}/count", NDJSON) + chunk(start + b'["'))
                sent = [0]
                nursery.start_soon(send_forever, stream, chunk(piece), sent)
                response = await Reader(stream).response()
                nursery.cancel_scope.cancel()
            await healthy(port, tracker)
    assert response.status == 413, response.body
    error = response.error()
    assert error["code"] == "payload-too-large"
    assert error["details"]["limit"] == limit
    # Refused once past the limit, not after the whole (endless) line.
    assert error["details"]["size"] < limit + 128 * 1024
    if position == "item":
        assert tracker.ended_event("endless").is_set()


# ---------------------------------------------------------------------------
# 3. A record that says it is 4 GiB


@pytest.mark.parametrize("position", ["arguments", "item"])
async def test_a_record_of_4_gib_is_refused_at_once_without_allocating_it(position: str) -> None:
    start = b"" if position == "arguments" else record(b'["huge", null]') + record(b'"ok"')
    with trio.fail_after(TIMEOUT):
        async with served() as (port, tracker):
            stream = await connect(port)
            async with stream:
                tracemalloc.start()
                try:
                    # The length and a few bytes of the record: nothing more is
                    # sent, so the answer must come from the length alone.
                    await stream.send_all(
                        head(port, f"{OP}/count", RECORDS)
                        + chunk(start + b"\xff\xff\xff\xff" + b'"abc')
                    )
                    with trio.fail_after(2.0):
                        response = await Reader(stream).response()
                    _, peak = tracemalloc.get_traced_memory()
                finally:
                    tracemalloc.stop()
            await healthy(port, tracker)
    assert response.status == 413, response.body
    error = response.error()
    assert error["code"] == "payload-too-large"
    assert error["details"]["size"] == 0xFFFFFFFF
    assert peak < 8 * 1024 * 1024, peak


# ---------------------------------------------------------------------------
# 4. A body that never ends, from a client that never reads


async def test_an_endless_client_stream_ends_at_its_deadline_with_504() -> None:
    deadline = 0.5
    with trio.fail_after(TIMEOUT):
        async with served() as (port, tracker):
            stream = await connect(port)
            async with stream, trio.open_nursery() as nursery:
                started = trio.current_time()
                await stream.send_all(
                    head(port, f"{OP}/count", NDJSON, f"X-Timeout-Ms: {int(deadline * 1000)}")
                    + chunk(b'["deadline", null]\n')
                )
                sent = [0]
                nursery.start_soon(send_forever, stream, chunk(b'"item"\n' * 100), sent)
                status, headers = await Reader(stream).head()
                answered = trio.current_time() - started
                nursery.cancel_scope.cancel()
            with trio.fail_after(1.0):
                await tracker.ended_event("deadline").wait()
    assert status == 504, headers
    assert answered < deadline + 1.0, answered
    assert tracker.taken["deadline"] > 0  # it was reading items all along


async def _fill_and_leave(port: int, operation: str, *extra: str) -> float:
    """Start a client stream, send items for up to 0.5 s, close the socket; when it closed."""
    stream = await connect(port)
    await stream.send_all(head(port, f"{OP}/{operation}", NDJSON, *extra))
    await stream.send_all(chunk(b'["left", null]\n'))
    with trio.move_on_after(0.5):  # as much as the server takes in that time
        for _ in range(2000):
            await stream.send_all(chunk(b'"item"\n'))
    await trio.testing.wait_all_tasks_blocked(0.05)
    await stream.aclose()
    return trio.current_time()


async def test_an_endless_client_stream_ends_within_1_s_of_the_client_leaving() -> None:
    with trio.fail_after(TIMEOUT):
        async with served() as (port, tracker):
            left = await _fill_and_leave(port, "count")
            with trio.fail_after(5.0):
                await tracker.ended_event("left").wait()
            await healthy(port, tracker)
    assert tracker.taken["left"] > 0
    assert tracker.ended_at["left"] - left < 1.0


async def test_an_impl_that_reads_nothing_after_its_client_left_ends_at_the_deadline() -> None:
    # `stuck` reads none of its items: its window (256 items) fills, the
    # server stops reading the body, hypercorn stops reading the socket, and
    # the client's close sits behind the unread bytes (docs/http.md: "the
    # impl learns of it when it reads the next item"). The deadline still
    # ends it.
    deadline = 1.5
    with trio.fail_after(TIMEOUT):
        async with served() as (port, tracker):
            started = trio.current_time()
            await _fill_and_leave(port, "stuck", f"X-Timeout-Ms: {int(deadline * 1000)}")
            assert "left" in tracker.running
            with trio.fail_after(deadline + 2.0):
                await tracker.ended_event("left").wait()
            await healthy(port, tracker)
    assert tracker.ended_at["left"] - started < deadline + 1.0


# ---------------------------------------------------------------------------
# 5. A server stream nobody reads


async def test_a_server_stream_nobody_reads_blocks_its_generator_until_send_timeout() -> None:
    size = 10_000
    send_timeout = 1.0
    body = b'["unread", %d]' % size
    with trio.fail_after(TIMEOUT):
        async with served(send_timeout=send_timeout) as (port, tracker):
            stream = await connect(port, rcvbuf=64 * 1024)
            async with stream:
                await stream.send_all(
                    head(port, f"{OP}/ticks", "application/json", length=len(body)) + body
                )
                await trio.testing.wait_all_tasks_blocked(0.1)
                blocked_at = tracker.produced["unread"]
                stalled = trio.current_time()
                await trio.testing.wait_all_tasks_blocked(0.1)
                assert tracker.produced["unread"] == blocked_at  # it waits, it does not buffer
                with trio.fail_after(send_timeout * 1.25 + 2.0):
                    await tracker.ended_event("unread").wait()
                ended = trio.current_time() - stalled
                # The server closed the connection: what it sent, then the end.
                received = 0
                with trio.fail_after(5.0):
                    try:
                        while data := await stream.receive_some(65536):
                            received += len(data)
                    except trio.BrokenResourceError:
                        pass  # a reset: the server aborted with bytes unsent
            await healthy(port, tracker)
    # What the sockets hold, not what a free-running generator would make.
    assert blocked_at * size < 16 * 1024 * 1024, blocked_at
    # The kernel may grow its buffers once more, not the server its own.
    assert tracker.produced["unread"] <= blocked_at + 8
    assert ended >= send_timeout * 0.9, ended
    assert received <= (tracker.produced["unread"] + 1) * (size + 64) + 4096


# ---------------------------------------------------------------------------
# 6. Malformed first lines and frames


GARBAGE_FRAME = b"\x00\x00\x00\x05{oops" + b"tail"
CASES = {
    "arguments an object": (NDJSON, b'{"key": "k"}\n"a"\n', "JSON array"),
    "arguments a number": (NDJSON, b'42\n"a"\n', "JSON array"),
    "arguments not JSON": (NDJSON, b'["k", nul\n"a"\n', "JSON"),
    "arguments not UTF-8": (NDJSON, b'["\xff\xfe", null]\n', "UTF-8"),
    "arguments frame with a garbage envelope": (RECORDS, record(GARBAGE_FRAME), "envelope"),
    "arguments frame too short": (RECORDS, record(b"\x00\x00"), "4-byte"),
    "arguments frame over its length": (RECORDS, record(b"\x00\x00\x10\x00{}"), "envelope"),
    "arguments frame without args": (
        RECORDS,
        record(b"\x00\x00\x00\x02{}"),
        "args",
    ),
    "item frame with a garbage envelope": (
        RECORDS,
        record(b'["k", null]') + record(GARBAGE_FRAME),
        "envelope",
    ),
    "item frame without value": (
        RECORDS,
        record(b'["k", null]') + record(b'\x00\x00\x00\x08{"v": 1}'),
        "value",
    ),
    "item frame with a bad bin": (
        RECORDS,
        record(b'["k", null]') + record(b'\x00\x00\x00\x15{"value":1,"bin":[7]}'),
        "bin",
    ),
}


@pytest.mark.parametrize("case", list(CASES))
async def test_a_malformed_body_is_a_400_naming_the_problem_never_a_500(
    case: str, caplog: pytest.LogCaptureFixture
) -> None:
    content_type, body, named = CASES[case]
    with trio.fail_after(TIMEOUT):
        async with served() as (port, tracker):
            with caplog.at_level(logging.DEBUG):
                response = await request(
                    port, head(port, f"{OP}/count", content_type, length=len(body)) + body
                )
            await healthy(port, tracker)
    assert response.status == 400, response.body
    error = response.error()
    assert error["code"] == "bad-request"
    assert named.lower() in error["message"].lower(), error["message"]
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert not [r for r in caplog.records if r.exc_info], [r.getMessage() for r in caplog.records]


# ---------------------------------------------------------------------------
# 7. Many streams at once from one address


async def test_many_concurrent_streams_are_capped_by_max_in_flight_and_end_with_clients() -> None:
    clients, cap = 200, 20
    statuses: list[int] = []
    streams: list[trio.SocketStream] = []

    async def open_one(n: int) -> None:
        stream = await connect(port)
        streams.append(stream)
        body = b'["c%d"]' % n
        await stream.send_all(head(port, f"{OP}/hang", "application/json", length=len(body)) + body)
        status, _ = await Reader(stream).head()
        statuses.append(status)

    with trio.fail_after(TIMEOUT):
        async with served(max_in_flight=cap) as (port, tracker):
            try:
                async with trio.open_nursery() as nursery:
                    for n in range(clients):
                        nursery.start_soon(open_one, n)
                running = len(tracker.running)
            finally:
                for stream in streams:
                    await stream.aclose()
            left = trio.current_time()
            with trio.fail_after(5.0):
                for key in list(tracker.ended):
                    await tracker.ended_event(key).wait()
            assert not tracker.running
            slowest = max(tracker.ended_at.values()) - left
            await healthy(port, tracker)
    assert statuses.count(200) == cap, sorted(statuses)
    assert running == cap
    refused = [s for s in statuses if s != 200]
    assert len(refused) == clients - cap
    assert set(refused) <= {429, 503}, set(refused)
    assert len(tracker.ended_at) == cap + 1  # and the healthy call after them
    assert slowest < 1.0, slowest
