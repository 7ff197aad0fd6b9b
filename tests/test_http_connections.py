"""The HTTP server's connections, over real sockets to the real hypercorn server.

Issue 12: a request body that stalls or dribbles is timed out (point 5); a
connection the client closed is closed by the server at once, not after the
keep-alive timeout (point 7); `max_connections` refuses connections past it,
even under a burst (point 8).
"""

from __future__ import annotations

import contextlib
import functools
import json
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import pytest
import trio
import trio.testing

from tether.runtime import PROTOCOL_VERSION
from tether.runtime._protocol import Hello, encode
from tether.runtime._util import open_service_nursery
from tether.testing import ConformanceIpc, IpcConformance, RpcConformance
from tether.transports import http

TIMEOUT = 10.0
ADD = b"/rpc/tether.Conformance/1.2.3/add"
HELLO = encode(
    Hello(
        PROTOCOL_VERSION, channels={ConformanceIpc.channel_name: ConformanceIpc.version}, mode="ipc"
    )
)


@asynccontextmanager
async def served(**options: Any) -> AsyncIterator[int]:
    """Serve the conformance backend on 127.0.0.1, port 0; yield the port."""
    manager = RpcConformance().backend_manager()
    ipc = IpcConformance().backend_ipc()
    async with open_service_nursery() as nursery:
        serve = functools.partial(http.serve, manager, "127.0.0.1", 0, ipc=ipc, **options)
        url: str = await nursery.start(serve)
        yield int(url.rsplit(":", 1)[1].split("/")[0])
        nursery.cancel_scope.cancel()


def request(method: bytes, target: bytes, body: bytes = b"", *, length: int | None = None) -> bytes:
    """An HTTP/1.1 request's head (and `body`), announcing `length` bytes of body."""
    size = len(body) if length is None else length
    head = (
        b"%s %s HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
        b"Content-Length: %d\r\n\r\n" % (method, target, size)
    )
    return head + body


class Reader:
    """Reads HTTP/1.1 responses (with Content-Length) off a socket stream."""

    def __init__(self, stream: trio.SocketStream) -> None:
        self.stream = stream
        self.buffer = b""

    async def response(self) -> tuple[int, dict[str, str], bytes]:
        while b"\r\n\r\n" not in self.buffer:
            chunk = await self.stream.receive_some()
            assert chunk, f"closed before a response: {self.buffer!r}"
            self.buffer += chunk
        head, _, self.buffer = self.buffer.partition(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        status = int(lines[0].split()[1])
        headers = {}
        for line in lines[1:]:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
        if headers.get("transfer-encoding") != "chunked":
            return status, headers, await self._take(int(headers.get("content-length", "0")))
        body = b""
        while True:
            while b"\r\n" not in self.buffer:
                await self._more()
            size, _, self.buffer = self.buffer.partition(b"\r\n")
            part = await self._take(int(size, 16) + 2)
            if part == b"\r\n":
                return status, headers, body
            body += part[:-2]

    async def _take(self, size: int) -> bytes:
        while len(self.buffer) < size:
            await self._more()
        taken, self.buffer = self.buffer[:size], self.buffer[size:]
        return taken

    async def _more(self) -> None:
        chunk = await self.stream.receive_some()
        assert chunk, "closed in the middle of a body"
        self.buffer += chunk

    async def eof(self) -> None:
        """Wait until the server closes its side; nothing more may come first."""
        while chunk := await self.stream.receive_some():
            self.buffer += chunk
        assert not self.buffer, self.buffer


async def open_session(port: int) -> bytes:
    """Open an IPC session; the path of its messages, with its token as a query."""
    stream = await trio.open_tcp_stream("127.0.0.1", port)
    async with stream:
        await stream.send_all(request(b"POST", b"/rpc/ipc", HELLO))
        status, _, body = await Reader(stream).response()
    assert status == 200, body
    opened = json.loads(body)
    return f"/rpc/ipc/{opened['session_id']}?token={opened['token']}".encode()


# ---------------------------------------------------------------------------
# Point 5: stalled and dribbled bodies


@pytest.mark.parametrize("route", ["rpc", "ipc-open", "ipc-message"])
async def test_a_stalled_body_gets_408_and_the_connection_closes(route: str) -> None:
    with trio.fail_after(TIMEOUT):
        async with served(body_timeout=0.5) as port:
            target = {"rpc": ADD, "ipc-open": b"/rpc/ipc"}.get(route) or await open_session(port)
            stream = await trio.open_tcp_stream("127.0.0.1", port)
            async with stream:
                started = trio.current_time()
                # Ten bytes of the hundred announced, then nothing.
                await stream.send_all(request(b"POST", target, b"[1, 2, 3, ", length=100))
                reader = Reader(stream)
                status, headers, body = await reader.response()
                await reader.eof()
                elapsed = trio.current_time() - started
    assert status == 408
    assert headers["connection"] == "close"
    error = json.loads(body)["error"]
    assert (error["code"], error["name"]) == ("request-timeout", "InvalidRequest")
    assert "0.5" in error["message"]
    assert 0.5 <= elapsed < 3


async def test_a_dribbled_body_gets_408_though_bytes_keep_coming() -> None:
    with trio.fail_after(TIMEOUT):
        async with served(body_timeout=1.0) as port:
            stream = await trio.open_tcp_stream("127.0.0.1", port)
            async with stream, trio.open_nursery() as nursery:
                await stream.send_all(request(b"POST", ADD, length=1000))

                async def dribble() -> None:
                    # A byte every 50 ms: the whole body would take 50 s.
                    for _ in range(1000):
                        await stream.send_all(b" ")
                        await trio.sleep(0.05)

                nursery.start_soon(dribble)
                started = trio.current_time()
                reader = Reader(stream)
                status, headers, _ = await reader.response()
                elapsed = trio.current_time() - started
                nursery.cancel_scope.cancel()
    assert status == 408
    assert headers["connection"] == "close"
    assert 1.0 <= elapsed < 3


async def test_a_body_that_comes_in_time_is_taken() -> None:
    with trio.fail_after(TIMEOUT):
        async with served(body_timeout=5.0) as port:
            stream = await trio.open_tcp_stream("127.0.0.1", port)
            async with stream:
                await stream.send_all(request(b"POST", ADD, b"[1, ", length=7))
                await trio.testing.wait_all_tasks_blocked()
                await stream.send_all(b"41]")
                status, _, body = await Reader(stream).response()
    assert (status, body) == (200, b"42")


@pytest.mark.parametrize("bad", [0, -1.0, float("nan"), "5"])
async def test_body_timeout_must_be_a_positive_number(bad: Any) -> None:
    with pytest.raises((ValueError, TypeError), match="body_timeout must be"):
        http.HttpApp(body_timeout=bad)


# ---------------------------------------------------------------------------
# Point 7: the server closes a connection as soon as the client has


@pytest.mark.parametrize("requests", [0, 1, 3])
async def test_the_server_closes_at_once_when_the_client_closes(requests: int) -> None:
    # The keep-alive timeout is the default (75 s): the server must not wait
    # for it before closing a connection whose client has gone.
    with trio.fail_after(TIMEOUT):
        async with served() as port:
            stream = await trio.open_tcp_stream("127.0.0.1", port)
            async with stream:
                reader = Reader(stream)
                for _ in range(requests):
                    await stream.send_all(b"GET /rpc/health HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
                    status, _, _ = await reader.response()
                    assert status == 200
                await stream.send_eof()
                with trio.fail_after(2):
                    await reader.eof()


# ---------------------------------------------------------------------------
# Point 8: max_connections


Answer = tuple[int, dict[str, str], bytes]


async def _connect_and_ask(port: int, answers: trio.MemorySendChannel[Answer]) -> None:
    stream = await trio.open_tcp_stream("127.0.0.1", port)
    async with stream:
        await stream.send_all(b"GET /rpc/health HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        await answers.send(await Reader(stream).response())
        # Served connections stay open (keep-alive) until every answer came.
        await trio.sleep_forever()


async def test_max_connections_holds_under_a_burst_and_refuses_with_503() -> None:
    send, receive = trio.open_memory_channel[Answer](40)
    with trio.fail_after(TIMEOUT):
        async with served(max_connections=5) as port:
            async with trio.open_nursery() as nursery:
                for _ in range(40):
                    nursery.start_soon(_connect_and_ask, port, send)
                answers = [await receive.receive() for _ in range(40)]
                nursery.cancel_scope.cancel()
            # The slots are free again once the server has seen those close.
            await trio.testing.wait_all_tasks_blocked(cushion=0.05)
            stream = await trio.open_tcp_stream("127.0.0.1", port)
            async with stream:
                await stream.send_all(b"GET /rpc/health HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
                again, _, _ = await Reader(stream).response()
    statuses = sorted(status for status, _, _ in answers)
    assert statuses == [200] * 5 + [503] * 35
    for status, headers, body in answers:
        if status == 503:
            assert headers["retry-after"] == "1"
            assert headers["connection"] == "close"
            error = json.loads(body)["error"]
            assert (error["code"], error["name"]) == ("unavailable", "Unavailable")
            assert "5 connections" in error["message"]
    assert again == 200


async def test_a_refused_connection_is_closed_by_the_server() -> None:
    with trio.fail_after(TIMEOUT):
        async with served(max_connections=1) as port:
            held = await trio.open_tcp_stream("127.0.0.1", port)
            async with held:
                await held.send_all(b"GET /rpc/health HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
                assert (await Reader(held).response())[0] == 200
                stream = await trio.open_tcp_stream("127.0.0.1", port)
                async with stream:
                    reader = Reader(stream)
                    status, _, _ = await reader.response()
                    await reader.eof()
    assert status == 503


@pytest.mark.parametrize("bad", [0, -1, 1.5, "5"])
async def test_max_connections_must_be_a_positive_int(bad: Any) -> None:
    with (
        trio.fail_after(TIMEOUT),
        pytest.raises((ValueError, TypeError), match="max_connections must be"),
    ):
        await http.serve(None, max_connections=bad)


async def test_stalled_headers_are_cut_at_the_keep_alive_timeout() -> None:
    # Slowloris: hypercorn's idle timer runs until a request's headers are
    # whole, so the keep-alive timeout bounds them (docs/http.md, Limits).
    with trio.fail_after(TIMEOUT):
        async with served(keep_alive_timeout=0.5) as port:
            stream = await trio.open_tcp_stream("127.0.0.1", port)
            async with stream:
                started = trio.current_time()
                await stream.send_all(b"POST /rpc/ipc HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: ")
                await Reader(stream).eof()
                elapsed = trio.current_time() - started
    assert 0.5 <= elapsed < 3


# ---------------------------------------------------------------------------
# A connection hypercorn fails on stops only that connection


async def test_a_connection_that_breaks_hypercorn_does_not_stop_the_server() -> None:
    """A WebSocket upgrade and a frame in one write makes hypercorn raise (h11's
    "Can't send data when our state is ERROR", pgjones/hypercorn#225): that
    connection is closed, and the server goes on serving every other one."""
    upgrade = (
        b"GET /rpc/ws HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\n"
        b"Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
        b"Sec-WebSocket-Version: 13\r\n\r\n"
    )
    frame = b"\x81\x85\x00\x00\x00\x00hello"  # a masked text frame, right behind the request
    with trio.fail_after(TIMEOUT):
        async with served() as port:
            for _ in range(3):
                hostile = await trio.open_tcp_stream("127.0.0.1", port)
                async with hostile:
                    await hostile.send_all(upgrade + frame)
                    # Whatever hypercorn answered, the server ends this connection.
                    while await hostile.receive_some():
                        pass
            stream = await trio.open_tcp_stream("127.0.0.1", port)
            async with stream:
                await stream.send_all(request(b"POST", ADD, b"[2, 3]"))
                status, _, body = await Reader(stream).response()
            assert (status, body) == (200, b"5")


# ---------------------------------------------------------------------------
# A client that never reads its answer


class _Heard(logging.Handler):
    """Sets an event when a record whose message holds `words` is logged."""

    def __init__(self, words: str) -> None:
        super().__init__()
        self.words = words
        self.event = trio.Event()

    def emit(self, record: logging.LogRecord) -> None:
        if self.words in record.getMessage():
            self.event.set()


async def test_a_client_that_never_reads_its_answer_is_dropped_after_send_timeout() -> None:
    """hypercorn's send is shielded and has no bound: a client that sent a call and
    never read the answer held it (8 MiB here), its task and its connection for
    as long as it kept the socket open. `serve` closes such a connection once the
    client has taken nothing for `send_timeout` seconds."""
    size = 8 * 1024 * 1024  # far more than the sockets' buffers hold
    heard = _Heard("took nothing for")
    logger = logging.getLogger("tether.http")
    logger.addHandler(heard)
    level = logger.level
    logger.setLevel(logging.INFO)
    try:
        with trio.fail_after(TIMEOUT):
            async with served(send_timeout=0.5) as port:
                deaf = await trio.open_tcp_stream("127.0.0.1", port)
                async with deaf:
                    body = b"[%d]" % size
                    await deaf.send_all(
                        request(b"POST", b"/rpc/tether.Conformance/1.2.3/big", body)
                    )
                    await heard.event.wait()  # the server gave up on it
                    received = 0
                    with contextlib.suppress(trio.BrokenResourceError):
                        while chunk := await deaf.receive_some(1 << 20):
                            received += len(chunk)
                assert received < size  # the answer was cut off, not delivered
                # Every other client is served as before.
                stream = await trio.open_tcp_stream("127.0.0.1", port)
                async with stream:
                    await stream.send_all(request(b"POST", ADD, b"[2, 3]"))
                    status, _, answer = await Reader(stream).response()
                assert (status, answer) == (200, b"5")
    finally:
        logger.removeHandler(heard)
        logger.setLevel(level)


async def test_send_timeout_must_be_positive_seconds_or_none() -> None:
    with pytest.raises(ValueError, match="send_timeout must be"):
        await http.serve(None, "127.0.0.1", 0, send_timeout=0)
