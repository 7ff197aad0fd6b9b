# mypy: disable-error-code="empty-body"
"""The fast frame path (`_wsframes.FastFrames`) against real sockets and hand-made frames.

Both sides of tether's trio-websocket transport read whole data frames with
`FastFrames` and leave the rest to wsproto. Here a raw peer, written by hand
over a TCP stream (HTTP upgrade, frame building and frame parsing all in this
file, nothing from `_wsframes`), sends what a real network delivers: frames cut
at every byte, many frames in one write, fragments with control frames between
them, and frames that break RFC 6455. Every answer is checked exactly, and so
is the number of frames the fast path read (`FastFrames.fast_frames`), so that
a test fails both when an answer is wrong and when the fast path silently
stopped being used.

`trio.testing.wait_all_tasks_blocked()` after a write lets the peer's reader
task take those bytes before the next write: the writes then reach the reader
one by one instead of being merged by the kernel.
"""

from __future__ import annotations

import base64
import functools
import hashlib
import json
import os
import struct
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any

import attrs
import pytest
import trio
import trio.testing

import tether
from tether.runtime import ConnectError, ConnectionClosed
from tether.runtime._util import open_service_nursery
from tether.transports import _websocket, websocket
from tether.transports._wsframes import FastFrames

TIMEOUT = 10.0  # the cap of every test
GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"  # RFC 6455 section 1.3

# Opcodes (RFC 6455 section 5.2).
CONT, TEXT, BINARY, CLOSE, PING, PONG = 0x0, 0x1, 0x2, 0x8, 0x9, 0xA

J = dict[str, Any]


# -- what the server serves ----------------------------------------------------------------


class Adder(tether.RpcInterface):
    interface_name = "wsframes.Adder"
    interface_version = "1.0.0"

    async def add(self, a: int, b: int) -> int: ...
    async def echo(self, text: str) -> str: ...


class AdderImpl(Adder):
    async def add(self, a: int, b: int) -> int:
        return a + b

    async def echo(self, text: str) -> str:
        return text


def adder_manager() -> tether.RpcManager:
    manager = tether.RpcManager()
    manager.register_impl(Adder, AdderImpl())
    return manager


HELLO: J = {"t": "hello", "protocol": 1, "mode": "rpc"}
WELCOME: J = {
    "t": "welcome",
    "protocol": 1,
    "session_id": "raw-session",
    "channels": {},
    "interfaces": {"wsframes.Adder": {"version": "1.0.0", "operations": ["add", "echo"]}},
}


def call(id_: int, op: str, *args: Any) -> bytes:
    message = {"t": "call", "id": id_, "iface": "wsframes.Adder", "ver": "1.0.0", "op": op,
               "args": list(args), "ctx": {}}  # fmt: skip
    return json.dumps(message, ensure_ascii=False).encode()


def result(id_: int, value: Any) -> J:
    return {"t": "result", "id": id_, "value": value}


# -- frames, by hand (RFC 6455 section 5.2) ------------------------------------------------


def build(
    opcode: int,
    payload: bytes,
    *,
    fin: bool = True,
    rsv: int = 0,
    mask: bool = True,
    length: str = "auto",
) -> bytes:
    """One frame. `length` forces the length's form: "7", "16" or "64" bits."""
    first = (0x80 if fin else 0) | (rsv << 4) | opcode
    size = len(payload)
    if length == "auto":
        length = "7" if size < 126 else "16" if size < 65536 else "64"
    bit = 0x80 if mask else 0
    if length == "7":
        header = bytes((first, bit | size))
    elif length == "16":
        header = bytes((first, bit | 126)) + struct.pack("!H", size)
    else:
        header = bytes((first, bit | 127)) + struct.pack("!Q", size)
    if not mask:
        return header + payload
    key = os.urandom(4)
    return header + key + bytes(byte ^ key[i % 4] for i, byte in enumerate(payload))


def text(data: bytes, **kw: Any) -> bytes:
    return build(TEXT, data, **kw)


@attrs.frozen
class Frame:
    fin: bool
    rsv: int
    opcode: int
    masked: bool
    payload: bytes

    def json(self) -> J:
        assert (self.fin, self.rsv, self.opcode, self.masked) == (True, 0, TEXT, False), self
        message = json.loads(self.payload)
        assert isinstance(message, dict)
        return message

    def close(self) -> tuple[int | None, str]:
        assert (self.fin, self.opcode, self.masked) == (True, CLOSE, False), self
        if not self.payload:
            return None, ""
        return struct.unpack("!H", self.payload[:2])[0], self.payload[2:].decode()


class Peer:
    """A raw WebSocket end over a TCP stream: frames in and out, by hand."""

    def __init__(self, stream: trio.SocketStream, buffer: bytes) -> None:
        self.stream = stream
        self.buffer = bytearray(buffer)

    async def send(self, data: bytes) -> None:
        await self.stream.send_all(data)

    async def send_settled(self, *chunks: bytes) -> None:
        """Each chunk in its own write, taken by the other side before the next."""
        for chunk in chunks:
            await self.stream.send_all(chunk)
            await trio.testing.wait_all_tasks_blocked()

    async def _fill(self, size: int) -> bool:
        for _ in range(10_000):  # bounded: a 70 kB frame takes a few reads
            if len(self.buffer) >= size:
                return True
            data = await self.stream.receive_some(65536)
            if not data:
                return False
            self.buffer += data
        raise AssertionError("too many reads for one frame")

    async def frame(self) -> Frame | None:
        """The next frame; None if the other side closed the TCP stream first."""
        if not await self._fill(2):
            assert not self.buffer, f"EOF inside a frame header: {bytes(self.buffer)!r}"
            return None
        first, second = self.buffer[0], self.buffer[1]
        size, at = second & 0x7F, 2
        if size == 126:
            assert await self._fill(4)
            size, at = struct.unpack("!H", self.buffer[2:4])[0], 4
        elif size == 127:
            assert await self._fill(10)
            size, at = struct.unpack("!Q", self.buffer[2:10])[0], 10
        masked = bool(second & 0x80)
        key = b""
        if masked:
            assert await self._fill(at + 4)
            key, at = bytes(self.buffer[at : at + 4]), at + 4
        assert await self._fill(at + size), "EOF inside a frame"
        payload = bytes(self.buffer[at : at + size])
        del self.buffer[: at + size]
        if masked:
            payload = bytes(byte ^ key[i % 4] for i, byte in enumerate(payload))
        return Frame(bool(first & 0x80), (first >> 4) & 7, first & 0x0F, masked, payload)

    async def next_frame(self) -> Frame:
        got = await self.frame()
        assert got is not None, "the other side closed the TCP stream"
        return got

    async def json(self) -> J:
        return (await self.next_frame()).json()

    async def closing(self) -> tuple[int | None, str] | None:
        """Read to the close frame: its code and reason; None when the TCP stream ended first."""
        for _ in range(100):
            got = await self.frame()
            if got is None:
                return None
            if got.opcode == CLOSE:
                return got.close()
        raise AssertionError("no close in 100 frames")


def accept_key(key: str) -> str:
    return base64.b64encode(hashlib.sha1(key.encode() + GUID).digest()).decode()


async def read_head(stream: trio.SocketStream) -> tuple[list[str], bytes]:
    """An HTTP head's lines and the bytes after it."""
    data = b""
    for _ in range(100):
        if b"\r\n\r\n" in data:
            head, rest = data.split(b"\r\n\r\n", 1)
            return head.decode("latin-1").split("\r\n"), rest
        more = await stream.receive_some(65536)
        assert more, f"EOF in an HTTP head: {data!r}"
        data += more
    raise AssertionError("no end of the HTTP head")


def header(lines: list[str], name: str) -> str:
    values = [line.split(":", 1)[1].strip() for line in lines[1:] if
              line.split(":", 1)[0].strip().lower() == name]  # fmt: skip
    assert len(values) == 1, (name, lines)
    return values[0]


# -- the raw client, against tether's server -----------------------------------------------


@attrs.define
class Served:
    port: int
    made: list[FastFrames]

    @property
    def frames(self) -> FastFrames:
        """The server's FastFrames of its one connection."""
        (server,) = [f for f in self.made if not f.client]
        return server


@pytest.fixture
def made(monkeypatch: pytest.MonkeyPatch) -> list[FastFrames]:
    """Every FastFrames the transport installs from now on (server's and client's)."""
    instances: list[FastFrames] = []

    class Recorded(FastFrames):
        def __init__(self, inner: Any, max_message_size: int) -> None:
            super().__init__(inner, max_message_size)
            instances.append(self)

    monkeypatch.setattr(_websocket, "FastFrames", Recorded)
    return instances


@asynccontextmanager
async def serving(made: list[FastFrames], **settings: Any) -> AsyncIterator[Served]:
    """tether's trio-websocket server on 127.0.0.1 (no pings: they would interleave)."""
    settings.setdefault("ping_interval", None)
    async with open_service_nursery() as nursery:
        serve = functools.partial(websocket.serve, adder_manager(), "127.0.0.1", 0, **settings)
        url: str = await nursery.start(serve)
        yield Served(int(url.rsplit(":", 1)[1].strip("/")), made)
        nursery.cancel_scope.cancel()


@asynccontextmanager
async def raw_client(port: int, *, hello: bool = True) -> AsyncIterator[Peer]:
    """A hand-written client: the upgrade, then `hello` and its `welcome` unless told not."""
    stream = await trio.open_tcp_stream("127.0.0.1", port)
    async with stream:
        key = base64.b64encode(os.urandom(16)).decode()
        await stream.send_all(
            (
                f"GET / HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\n"
                f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
                "Sec-WebSocket-Version: 13\r\n\r\n"
            ).encode()
        )
        lines, rest = await read_head(stream)
        assert lines[0].startswith("HTTP/1.1 101 "), lines
        assert header(lines, "sec-websocket-accept") == accept_key(key)
        assert header(lines, "upgrade").lower() == "websocket"
        peer = Peer(stream, rest)
        if hello:
            await peer.send(text(json.dumps(HELLO).encode()))
            welcome = await peer.json()
            assert welcome["t"] == "welcome", welcome
            assert welcome["interfaces"] == WELCOME["interfaces"]
        yield peer


async def settled_count(served: Served) -> int:
    """How many frames the server's fast path has read, once it has read what was sent."""
    await trio.testing.wait_all_tasks_blocked()
    return served.frames.fast_frames


# -- 1. whole frames, however they arrive ----------------------------------------------------


async def test_a_call_in_one_frame_is_answered_on_the_fast_path(made: list[FastFrames]) -> None:
    with trio.fail_after(TIMEOUT):
        async with serving(made) as served, raw_client(served.port) as peer:
            base = await settled_count(served)
            await peer.send(text(call(1, "add", 2, 40)))
            assert await peer.json() == result(1, 42)
            assert await settled_count(served) == base + 1


async def test_a_call_sent_one_byte_per_write_is_answered(made: list[FastFrames]) -> None:
    with trio.fail_after(TIMEOUT):
        async with serving(made) as served, raw_client(served.port) as peer:
            base = await settled_count(served)
            data = text(call(7, "echo", "één €"))
            assert len(data) < 200
            for at in range(len(data) - 1):
                await peer.send_settled(data[at : at + 1])
                # Each byte reached the fast path on its own, and it waits for the rest.
                assert len(served.frames._buffer) == at + 1
                assert served.frames.fast_frames == base
            await peer.send(data[-1:])
            assert await peer.json() == result(7, "één €")
            assert await settled_count(served) == base + 1
            assert len(served.frames._buffer) == 0


async def test_twenty_calls_in_one_write_are_all_answered(made: list[FastFrames]) -> None:
    with trio.fail_after(TIMEOUT):
        async with serving(made) as served, raw_client(served.port) as peer:
            base = await settled_count(served)
            await peer.send(b"".join(text(call(i, "add", i, 1000)) for i in range(1, 21)))
            replies = [await peer.json() for _ in range(20)]
            assert sorted(replies, key=lambda r: int(r["id"])) == [
                result(i, i + 1000) for i in range(1, 21)
            ]
            assert await settled_count(served) == base + 20


async def test_frames_cut_at_every_header_and_mask_boundary(made: list[FastFrames]) -> None:
    """A 16-bit-length frame cut after each byte of its header and mask key, then mid-payload."""
    with trio.fail_after(TIMEOUT):
        async with serving(made) as served, raw_client(served.port) as peer:
            word = "x" * 200
            count = await settled_count(served)
            for id_, cut in enumerate([1, 2, 3, 4, 5, 6, 7, 8, 9, 100], start=1):
                data = text(call(id_, "echo", word))
                assert data[1] == 0x80 | 126  # the 2-byte length form
                await peer.send_settled(data[:cut])
                assert served.frames.fast_frames == count
                await peer.send(data[cut:])
                assert await peer.json() == result(id_, word)
                count += 1
                assert await settled_count(served) == count


async def test_a_frame_with_a_64_bit_length_both_ways(made: list[FastFrames]) -> None:
    word = "y" * 70_000
    with trio.fail_after(TIMEOUT):
        async with serving(made) as served, raw_client(served.port) as peer:
            base = await settled_count(served)
            data = text(call(1, "echo", word))
            assert data[1] == 0x80 | 127
            await peer.send(data)
            reply = await peer.next_frame()
            assert len(reply.payload) > 65535  # sent with the 8-byte length form
            assert reply.json() == result(1, word)
            assert await settled_count(served) == base + 1


async def test_a_binary_frame_holding_a_call_is_answered_with_text(
    made: list[FastFrames],
) -> None:
    """docs/websocket.md: "Binary frames holding the same JSON are accepted too"."""
    with trio.fail_after(TIMEOUT):
        async with serving(made) as served, raw_client(served.port) as peer:
            base = await settled_count(served)
            await peer.send(build(BINARY, call(3, "add", 1, 2)))
            assert await peer.json() == result(3, 3)  # .json() checks: a text frame
            assert await settled_count(served) == base + 1
            # Not JSON, in a binary frame: the envelope's error, and the session goes on.
            await peer.send(build(BINARY, b"\xff\x00 not json"))
            error = await peer.json()
            assert (error["t"], error["id"], error["error"]["code"]) == ("error", None, "bad-request")
            await peer.send(text(call(4, "add", 2, 2)))
            assert await peer.json() == result(4, 4)
            assert await settled_count(served) == base + 3
