"""The HTTP/1.1 client pool: reuse, expiry, retry, limits, cancellation, streaming.

Against real hypercorn on 127.0.0.1 for what a well-behaved server does, and
against raw `trio.serve_tcp` servers for the misbehaving ones.
"""

from __future__ import annotations

import socket
import struct
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from functools import partial
from typing import Any

import pytest
import trio
import trio.testing
from hypercorn.config import Config
from hypercorn.trio import serve

from tether.runtime import ConnectError, ConnectionClosed, PayloadTooLarge
from tether.transports.http._pool import ConnectionPool

HOST = "127.0.0.1"
Scope = dict[str, Any]
Message = dict[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]

# ---------------------------------------------------------------------------
# A raw ASGI app and the servers


class App:
    """A bare ASGI app; each path is one behaviour the tests need."""

    def __init__(self) -> None:
        self.requests: list[Scope] = []
        self.started = trio.Event()
        self.disconnected = trio.Event()
        self.stream_steps = [trio.Event(), trio.Event()]
        self.running = 0
        self.peak = 0

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            while True:
                message = await receive()
                if message["type"] == "lifespan.startup":
                    await send({"type": "lifespan.startup.complete"})
                elif message["type"] == "lifespan.shutdown":
                    await send({"type": "lifespan.shutdown.complete"})
                    return
        self.requests.append(scope)
        body = b""
        while True:
            message = await receive()
            body += message.get("body", b"")
            if not message.get("more_body", False):
                break
        self.running += 1
        self.peak = max(self.peak, self.running)
        try:
            await self.respond(scope["path"], scope["method"].encode(), body, receive, send)
        finally:
            self.running -= 1

    async def respond(
        self, path: str, method: bytes, body: bytes, receive: Receive, send: Send
    ) -> None:
        if path == "/echo":
            # A checkpoint, so that concurrent requests overlap in the app.
            await trio.lowlevel.checkpoint()
            headers = [(b"content-type", b"text/plain"), (b"x-method", method)]
            await send_response(send, 200, headers, body)
        elif path == "/big":
            await send_response(send, 200, [], b"x" * 2000)
        elif path == "/big-chunked":
            # No Content-Length: hypercorn sends it chunked, so only the running
            # total can catch it.
            await send({"type": "http.response.start", "status": 200, "headers": []})
            for _ in range(4):
                await send({"type": "http.response.body", "body": b"x" * 500, "more_body": True})
            await send({"type": "http.response.body", "body": b""})
        elif path == "/wait":
            self.started.set()
            message = await receive()
            if message["type"] == "http.disconnect":
                self.disconnected.set()
        elif path == "/sse":
            await send({"type": "http.response.start", "status": 200, "headers": []})
            await send({"type": "http.response.body", "body": b"data: 1\n\n", "more_body": True})
            self.started.set()
            message = await receive()
            if message["type"] == "http.disconnect":
                self.disconnected.set()
        elif path == "/stream":
            headers = [(b"content-type", b"text/event-stream")]
            await send({"type": "http.response.start", "status": 200, "headers": headers})
            chunks = [b"one", b"two", b"three"]
            for chunk, step in zip(chunks, [*self.stream_steps, None], strict=True):
                await send({"type": "http.response.body", "body": chunk, "more_body": True})
                if step is not None:
                    await step.wait()
            await send({"type": "http.response.body", "body": b""})
        else:
            await send_response(send, 404, [], b"")


async def send_response(
    send: Send, status: int, headers: list[tuple[bytes, bytes]], body: bytes
) -> None:
    headers = [*headers, (b"content-length", b"%d" % len(body))]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


@asynccontextmanager
async def serve_app(app: App, **options: Any) -> AsyncIterator[int]:
    """Run hypercorn with `app` on 127.0.0.1, an OS-chosen port; yield the port."""
    config = Config()
    config.bind = [f"{HOST}:0"]
    config.graceful_timeout = 1
    for name, value in options.items():
        setattr(config, name, value)
    shutdown = trio.Event()
    async with trio.open_nursery() as nursery:
        urls = await nursery.start(partial(serve, app, config, shutdown_trigger=shutdown.wait))
        try:
            yield int(urls[0].rsplit(":", 1)[1])
        finally:
            shutdown.set()


Handler = Callable[[trio.SocketStream], Awaitable[None]]


@asynccontextmanager
async def serve_raw(handler: Handler) -> AsyncIterator[int]:
    """Run a raw TCP server on 127.0.0.1, an OS-chosen port; yield the port."""
    async with trio.open_nursery() as nursery:
        listeners = await nursery.start(partial(trio.serve_tcp, handler, 0, host=HOST))
        yield listeners[0].socket.getsockname()[1]
        nursery.cancel_scope.cancel()


@asynccontextmanager
async def open_pool(port: int, **options: Any) -> AsyncIterator[ConnectionPool]:
    pool = ConnectionPool(HOST, port, **options)
    try:
        yield pool
    finally:
        await pool.aclose()


class RequestReader:
    """Reads bodiless requests (the pool's GETs) off a raw stream, one head at a time."""

    def __init__(self, stream: trio.SocketStream) -> None:
        self.stream = stream
        self.buffer = b""

    async def read_head(self) -> bytes:
        """Return the next request head, or b"" if the client closed the connection."""
        while b"\r\n\r\n" not in self.buffer:
            data = await self.stream.receive_some(65536)
            if not data:
                return b""
            self.buffer += data
        head, self.buffer = self.buffer.split(b"\r\n\r\n", 1)
        return head


OK = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok"


async def reset(stream: trio.SocketStream) -> None:
    """Close with a TCP reset (SO_LINGER 0) instead of a FIN."""
    stream.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    await stream.aclose()


# ---------------------------------------------------------------------------
# Well-behaved server


async def test_request_returns_status_headers_and_body_and_adds_host_and_length() -> None:
    app = App()
    with trio.fail_after(10):
        async with serve_app(app) as port, open_pool(port) as pool:
            response = await pool.request(b"POST", b"/echo", [(b"x-caller", b"yes")], body=b"hello")
    assert response.status == 200
    assert response.body == b"hello"
    assert response.header(b"content-type") == b"text/plain"
    assert response.header(b"x-method") == b"POST"
    assert response.header(b"x-missing") is None
    assert all(name == name.lower() for name, _ in response.headers)
    sent = dict(app.requests[0]["headers"])
    assert sent[b"host"] == f"{HOST}:{port}".encode()
    assert sent[b"content-length"] == b"5"
    assert sent[b"x-caller"] == b"yes"


async def test_get_without_body_sends_no_content_length() -> None:
    app = App()
    with trio.fail_after(10):
        async with serve_app(app) as port, open_pool(port) as pool:
            response = await pool.request(b"GET", b"/echo", [])
    assert response.status == 200
    assert response.body == b""
    assert b"content-length" not in dict(app.requests[0]["headers"])


async def test_large_bodies_go_both_ways_on_a_reused_connection() -> None:
    """A body over the 64 KiB the pool copies behind the head is sent on its own."""
    app = App()
    body = bytes(range(256)) * 1000
    with trio.fail_after(10):
        async with serve_app(app) as port, open_pool(port) as pool:
            for _ in range(2):
                assert (await pool.request(b"POST", b"/echo", [], body)).body == body
            assert pool.statistics().opened == 1


async def test_sequential_requests_reuse_one_connection() -> None:
    app = App()
    with trio.fail_after(10):
        async with serve_app(app) as port, open_pool(port) as pool:
            for index in range(20):
                body = b"%d" % index
                assert (await pool.request(b"POST", b"/echo", [], body)).body == body
            stats = pool.statistics()
    assert (stats.opened, stats.idle, stats.in_use) == (1, 1, 0)
    assert len({request["client"] for request in app.requests}) == 1


async def test_connections_have_tcp_nodelay() -> None:
    """Small requests are not held back by Nagle's algorithm (trio sets it; pin it)."""
    app = App()
    with trio.fail_after(10):
        async with serve_app(app) as port, open_pool(port) as pool:
            await pool.request(b"GET", b"/echo", [])
            (conn,) = pool._idle
            assert conn.stream.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY)


async def test_connection_close_response_is_not_reused() -> None:
    """hypercorn answers every third request with `Connection: close`: the pool reconnects."""
    app = App()
    with trio.fail_after(10):
        async with serve_app(app, keep_alive_max_requests=3) as port, open_pool(port) as pool:
            for _ in range(10):
                assert (await pool.request(b"GET", b"/echo", [])).status == 200
            stats = pool.statistics()
    assert stats.opened == 4
    assert stats.in_use == 0


async def test_http_1_0_response_closes_the_connection() -> None:
    async def handler(stream: trio.SocketStream) -> None:
        reader = RequestReader(stream)
        while await reader.read_head():
            await stream.send_all(b"HTTP/1.0 200 OK\r\ncontent-length: 2\r\n\r\nok")

    with trio.fail_after(10):
        async with serve_raw(handler) as port, open_pool(port) as pool:
            for _ in range(2):
                assert (await pool.request(b"GET", b"/", [])).body == b"ok"
            stats = pool.statistics()
    assert (stats.opened, stats.idle) == (2, 0)


async def test_idle_connection_expires(mock_clock: trio.testing.MockClock) -> None:
    """An idle connection older than idle_expiry is closed, not reused.

    The mock clock runs at real speed (so that `fail_after` still works) and is
    jumped past the expiry: no sleeping, and no race with a slow machine.
    """
    mock_clock.rate = 1
    app = App()
    with trio.fail_after(10):
        async with serve_app(app) as port, open_pool(port, idle_expiry=2.0) as pool:
            await pool.request(b"GET", b"/echo", [])
            await pool.request(b"GET", b"/echo", [])
            assert pool.statistics().opened == 1
            mock_clock.jump(2.5)
            await pool.request(b"GET", b"/echo", [])
            stats = pool.statistics()
    assert (stats.opened, stats.idle) == (2, 1)
    assert len({request["client"] for request in app.requests}) == 2


async def test_concurrency_is_bounded_by_max_connections() -> None:
    app = App()
    results: list[bytes] = []

    async def one(index: int) -> None:
        body = b"%d" % index
        results.append((await pool.request(b"POST", b"/echo", [], body)).body)

    with trio.fail_after(10):
        async with serve_app(app) as port, open_pool(port, max_connections=4) as pool:
            async with trio.open_nursery() as nursery:
                for index in range(64):
                    nursery.start_soon(one, index)
            stats = pool.statistics()
    assert sorted(results) == sorted(b"%d" % i for i in range(64))
    assert stats.opened <= 4
    assert app.peak <= 4
    assert (stats.idle, stats.in_use) == (stats.opened, 0)


# ---------------------------------------------------------------------------
# Retry, and when not to


async def test_reused_connection_closed_by_server_while_idle_is_replaced() -> None:
    connections = 0
    closed = trio.Event()

    async def handler(stream: trio.SocketStream) -> None:
        nonlocal connections
        connections += 1
        if await RequestReader(stream).read_head():
            await stream.send_all(OK)
        await stream.aclose()
        closed.set()

    with trio.fail_after(10):
        async with serve_raw(handler) as port, open_pool(port) as pool:
            assert (await pool.request(b"GET", b"/", [])).body == b"ok"
            await closed.wait()
            assert (await pool.request(b"GET", b"/", [])).body == b"ok"
            opened = pool.statistics().opened
    assert opened == connections == 2


@pytest.mark.parametrize("how", ["eof", "reset"])
async def test_request_is_retried_once_when_reused_connection_drops_it(how: str) -> None:
    """The race the idle expiry avoids: the server closes a kept-alive connection
    just as the next request arrives, without answering it. That request is sent
    again on a fresh connection."""
    heads: list[list[bytes]] = []

    async def handler(stream: trio.SocketStream) -> None:
        reader = RequestReader(stream)
        mine: list[bytes] = []
        heads.append(mine)
        while head := await reader.read_head():
            mine.append(head)
            if len(heads) == 1 and len(mine) == 2:
                await (reset(stream) if how == "reset" else stream.aclose())
                return
            await stream.send_all(OK)

    with trio.fail_after(10):
        async with serve_raw(handler) as port, open_pool(port) as pool:
            assert (await pool.request(b"GET", b"/first", [])).body == b"ok"
            assert (await pool.request(b"GET", b"/second", [])).body == b"ok"
            opened = pool.statistics().opened
    assert opened == 2
    assert [len(mine) for mine in heads] == [2, 1]
    assert heads[1][0].startswith(b"GET /second ")


async def test_a_post_is_never_sent_twice() -> None:
    """A POST whose reused connection dropped it unanswered fails: the server may
    have started it (an RPC call is not known to be safe to repeat)."""
    heads: list[bytes] = []

    async def handler(stream: trio.SocketStream) -> None:
        reader = RequestReader(stream)
        while head := await reader.read_head():
            heads.append(head)
            if len(heads) == 2:
                await stream.aclose()
                return
            await stream.send_all(OK)

    with trio.fail_after(10):
        async with serve_raw(handler) as port, open_pool(port) as pool:
            assert (await pool.request(b"POST", b"/first", [], b"1")).body == b"ok"
            with pytest.raises(ConnectionClosed):
                await pool.request(b"POST", b"/second", [], b"2")
            opened = pool.statistics().opened
    assert opened == 1
    assert len(heads) == 2


async def test_fresh_connection_closed_without_answer_is_not_retried() -> None:
    connections = 0

    async def handler(stream: trio.SocketStream) -> None:
        nonlocal connections
        connections += 1
        await stream.aclose()

    with trio.fail_after(10):
        async with serve_raw(handler) as port, open_pool(port) as pool:
            with pytest.raises(ConnectionClosed, match="without answering") as caught:
                await pool.request(b"GET", b"/", [])
            stats = pool.statistics()
    assert caught.value.reason == "connection lost"
    assert connections == 1
    assert (stats.opened, stats.idle, stats.in_use) == (1, 0, 0)


@pytest.mark.parametrize(
    "partial",
    [b"HTTP/1.1 200 OK\r\ncontent-le", b"HTTP/1.1 200 OK\r\ncontent-length: 10\r\n\r\nabc"],
    ids=["in-head", "in-body"],
)
async def test_no_retry_once_response_bytes_arrived(partial: bytes) -> None:
    """A reused connection that breaks mid-response fails the request: the server answered."""
    connections = 0

    async def handler(stream: trio.SocketStream) -> None:
        nonlocal connections
        connections += 1
        first = connections == 1
        reader = RequestReader(stream)
        await reader.read_head()
        await stream.send_all(OK)
        if first and await reader.read_head():
            await stream.send_all(partial)
            await stream.aclose()

    with trio.fail_after(10):
        async with serve_raw(handler) as port, open_pool(port) as pool:
            await pool.request(b"GET", b"/", [])
            with pytest.raises(ConnectionClosed, match="was lost") as caught:
                await pool.request(b"GET", b"/", [])
            await trio.testing.wait_all_tasks_blocked()
            opened = pool.statistics().opened
    # The server closed mid-response: the connection was lost, not the protocol broken.
    assert caught.value.reason == "connection lost"
    assert opened == connections == 1


# ---------------------------------------------------------------------------
# Errors


async def test_refused_port_raises_connect_error() -> None:
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        port = sock.getsockname()[1]
    # Bound, never listening, now closed: nothing accepts on that port.
    with trio.fail_after(10):
        async with open_pool(port) as pool:
            with pytest.raises(ConnectError, match=rf"could not connect to http://{HOST}:{port}"):
                await pool.request(b"GET", b"/", [])
            assert pool.statistics().opened == 0


async def test_connection_reset_mid_body_raises_connection_closed() -> None:
    async def handler(stream: trio.SocketStream) -> None:
        await RequestReader(stream).read_head()
        await stream.send_all(b"HTTP/1.1 200 OK\r\ncontent-length: 100\r\n\r\n0123456789")
        await reset(stream)

    with trio.fail_after(10):
        async with serve_raw(handler) as port, open_pool(port) as pool:
            with pytest.raises(ConnectionClosed) as caught:
                await pool.request(b"GET", b"/", [])
            stats = pool.statistics()
    # A reset reaches the client as ECONNRESET or, data and reset read together, as
    # EOF: the connection was lost either way.
    assert caught.value.reason == "connection lost"
    assert (stats.idle, stats.in_use) == (0, 0)


@pytest.mark.parametrize(
    "partial",
    [b"HTTP/1.1 200 OK\r\ncontent-le", b"HTTP/1.1 200 OK\r\ncontent-length: 10\r\n\r\nabc"],
    ids=["in-head", "in-body"],
)
async def test_response_that_stalls_midway_fails_after_read_timeout(partial: bytes) -> None:
    stop = trio.Event()

    async def handler(stream: trio.SocketStream) -> None:
        await RequestReader(stream).read_head()
        await stream.send_all(partial)
        await stop.wait()  # the connection stays open, and silent

    with trio.fail_after(10):
        async with serve_raw(handler) as port, open_pool(port, read_timeout=0.2) as pool:
            with pytest.raises(ConnectionClosed, match=r"sent nothing for 0\.2 s") as caught:
                await pool.request(b"GET", b"/", [])
            stats = pool.statistics()
            stop.set()
    assert caught.value.reason == "no data"
    assert (stats.idle, stats.in_use) == (0, 0)


async def test_read_timeout_does_not_bound_the_wait_for_the_first_byte() -> None:
    # An answer takes as long as the server works on it: that wait is the caller's.
    async def handler(stream: trio.SocketStream) -> None:
        await RequestReader(stream).read_head()
        await trio.sleep(0.3)
        await stream.send_all(OK)

    with trio.fail_after(10):
        async with serve_raw(handler) as port, open_pool(port, read_timeout=0.1) as pool:
            response = await pool.request(b"GET", b"/", [])
    assert response.body == b"ok"


@pytest.mark.parametrize("value", [0, -1.0])
def test_read_timeout_must_be_positive(value: float) -> None:
    with pytest.raises(ValueError, match="read_timeout"):
        ConnectionPool(HOST, 1, read_timeout=value)


async def test_garbage_response_raises_connection_closed() -> None:
    async def handler(stream: trio.SocketStream) -> None:
        await RequestReader(stream).read_head()
        await stream.send_all(b"garbage\r\n\r\n")
        await RequestReader(stream).read_head()

    with trio.fail_after(10):
        async with serve_raw(handler) as port, open_pool(port) as pool:
            with pytest.raises(ConnectionClosed, match=r"invalid HTTP/1\.1 response") as caught:
                await pool.request(b"GET", b"/", [])
            stats = pool.statistics()
    assert caught.value.reason == "protocol error"
    assert isinstance(caught.value.__cause__, Exception)
    assert (stats.idle, stats.in_use) == (0, 0)


@pytest.mark.parametrize(
    ("path", "expected"),
    [
        # Refused on its Content-Length, before the body is read.
        (b"/big", "is 2000 bytes, over the limit of 1000 bytes"),
        # No Content-Length: refused once the running total is over.
        (b"/big-chunked", "is at least 1500 bytes, over the limit of 1000 bytes"),
    ],
)
async def test_response_over_max_response_size_raises_and_closes(
    path: bytes, expected: str
) -> None:
    app = App()
    with trio.fail_after(10):
        async with serve_app(app) as port, open_pool(port, max_response_size=1000) as pool:
            with pytest.raises(PayloadTooLarge, match=expected):
                await pool.request(b"GET", path, [])
            stats = pool.statistics()
            # The pool goes on working, on a new connection.
            assert (await pool.request(b"POST", b"/echo", [], b"small")).body == b"small"
    assert (stats.opened, stats.idle, stats.in_use) == (1, 0, 0)
    assert pool.statistics().opened == 2


async def test_invalid_header_raises_value_error_before_connecting() -> None:
    with trio.fail_after(10):
        async with open_pool(1) as pool:
            with pytest.raises(ValueError, match="header name b'bad name' is not a valid"):
                await pool.request(b"GET", b"/", [(b"bad name", b"x")])
            with pytest.raises(ValueError, match="Host"):
                await pool.request(b"GET", b"/", [(b"host", b"other")])
            assert pool.statistics().opened == 0


# ---------------------------------------------------------------------------
# Cancellation and closing


@pytest.mark.parametrize(
    "path",
    [
        b"/wait",  # cancelled while waiting for the response's head
        b"/sse",  # cancelled in the middle of the body
    ],
)
async def test_cancelled_request_closes_its_connection_and_the_app_sees_a_disconnect(
    path: bytes,
) -> None:
    app = App()
    with trio.fail_after(10):
        async with serve_app(app) as port, open_pool(port, max_connections=1) as pool:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(pool.request, b"GET", path, [])
                await app.started.wait()
                await trio.testing.wait_all_tasks_blocked()
                nursery.cancel_scope.cancel()
            await app.disconnected.wait()
            stats = pool.statistics()
            # The only slot was given back: another request gets through.
            assert (await pool.request(b"GET", b"/echo", [])).status == 200
    assert (stats.opened, stats.idle, stats.in_use) == (1, 0, 0)
    assert pool.statistics().opened == 2


async def test_aclose_fails_requests_in_flight_and_later_ones() -> None:
    app = App()
    caught: list[BaseException] = []

    async def waiting_request() -> None:
        try:
            await pool.request(b"GET", b"/wait", [])
        except ConnectionClosed as exc:
            caught.append(exc)

    with trio.fail_after(10):
        async with serve_app(app) as port:
            pool = ConnectionPool(HOST, port)
            async with trio.open_nursery() as nursery:
                nursery.start_soon(waiting_request)
                await app.started.wait()
                await pool.aclose()
            await app.disconnected.wait()
            assert pool.closed
            with pytest.raises(ConnectionClosed, match=r"pool for http://\S+ is closed") as later:
                await pool.request(b"GET", b"/echo", [])
    (exc,) = caught
    assert isinstance(exc, ConnectionClosed)
    assert exc.reason == later.value.reason == "pool closed"
    assert pool.statistics().in_use == 0


# ---------------------------------------------------------------------------
# Streaming


async def test_stream_returns_chunks_as_they_come_then_empty() -> None:
    app = App()
    with trio.fail_after(10):
        async with serve_app(app) as port, open_pool(port) as pool:
            async with pool.stream(b"GET", b"/stream", [(b"accept", b"text/event-stream")]) as resp:
                assert resp.status == 200
                assert resp.header(b"content-type") == b"text/event-stream"
                assert pool.statistics().in_use == 1
                chunks = [await resp.receive_some()]
                for step in app.stream_steps:
                    step.set()
                    chunks.append(await resp.receive_some())
                assert await resp.receive_some() == b""
                assert await resp.receive_some() == b""
            stats = pool.statistics()
    assert chunks == [b"one", b"two", b"three"]
    # Never pooled: closed when the block ended.
    assert (stats.opened, stats.idle, stats.in_use) == (1, 0, 0)


async def test_leaving_a_stream_early_disconnects_from_the_app() -> None:
    app = App()
    with trio.fail_after(10):
        async with serve_app(app) as port, open_pool(port) as pool:
            async with pool.stream(b"GET", b"/sse", []) as resp:
                assert await resp.receive_some() == b"data: 1\n\n"
            await app.disconnected.wait()


async def test_stream_broken_mid_body_raises_connection_closed() -> None:
    async def handler(stream: trio.SocketStream) -> None:
        await RequestReader(stream).read_head()
        await stream.send_all(b"HTTP/1.1 200 OK\r\ncontent-length: 100\r\n\r\n0123456789")
        await stream.aclose()

    with trio.fail_after(10):
        async with (
            serve_raw(handler) as port,
            open_pool(port) as pool,
            pool.stream(b"GET", b"/", []) as resp,
        ):
            assert await resp.receive_some() == b"0123456789"
            with pytest.raises(ConnectionClosed, match="was lost") as caught:
                await resp.receive_some()
    assert caught.value.reason == "connection lost"


async def test_stream_read_all_enforces_its_limit() -> None:
    app = App()
    with trio.fail_after(10):
        async with serve_app(app) as port, open_pool(port) as pool:
            async with pool.stream(b"GET", b"/big-chunked", []) as resp:
                assert await resp.read_all(limit=2000) == b"x" * 2000
            async with pool.stream(b"GET", b"/big-chunked", []) as resp:
                with pytest.raises(PayloadTooLarge, match="at least 1500 bytes"):
                    await resp.read_all(limit=1499)
            async with pool.stream(b"GET", b"/big", []) as resp:
                with pytest.raises(PayloadTooLarge, match="is 2000 bytes"):
                    await resp.read_all(limit=1999)
