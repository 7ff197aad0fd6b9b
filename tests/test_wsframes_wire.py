# mypy: disable-error-code="empty-body"
"""The fast frame path (`websocket._frames.FastFrames`) against real sockets and hand-made frames.

Both sides of tether's trio-websocket transport read whole data frames with
`FastFrames` and leave the rest to wsproto. Here a raw peer, written by hand
over a TCP stream (HTTP upgrade, frame building and frame parsing all in this
file, nothing from `_frames`), sends what a real network delivers: frames cut
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
import itertools
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
from tether.transports import websocket
from tether.transports.websocket import _client as ws_client
from tether.transports.websocket import _server as ws_server
from tether.transports.websocket import _streams as ws_streams
from tether.transports.websocket._frames import FastFrames

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
        assert (self.fin, self.rsv, self.opcode) == (True, 0, TEXT), self
        message = json.loads(self.payload)
        assert isinstance(message, dict)
        return message

    def close(self) -> tuple[int | None, str]:
        assert (self.fin, self.opcode) == (True, CLOSE), self
        if not self.payload:
            return None, ""
        return struct.unpack("!H", self.payload[:2])[0], self.payload[2:].decode()


class Peer:
    """A raw WebSocket end over a TCP stream: frames in and out, by hand.

    `masked`: whether the other side's frames must be masked (a client's are, a
    server's are not); every frame read is checked.
    """

    def __init__(self, stream: trio.SocketStream, buffer: bytes, *, masked: bool) -> None:
        self.stream = stream
        self.masked = masked
        self.buffer = bytearray(buffer)
        self.response = b""  # a raw server's 101, to send when its script says

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
            assert size >= 126, f"a 2-byte length for {size} bytes"  # RFC 6455: minimal
        elif size == 127:
            assert await self._fill(10)
            size, at = struct.unpack("!Q", self.buffer[2:10])[0], 10
            assert 65536 <= size < 1 << 63, f"an 8-byte length for {size} bytes"
        masked = bool(second & 0x80)
        assert masked is self.masked, f"frame masked: {masked}, expected {self.masked}"
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


assert accept_key("dGhlIHNhbXBsZSBub25jZQ==") == "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="  # RFC 6455 1.3


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
class Made:
    """What the transport built while the test ran: every FastFrames and stream."""

    frames: list[FastFrames] = attrs.Factory(list)
    streams: list[ws_streams.TrioWebSocketStream] = attrs.Factory(list)

    def one(self, *, client: bool) -> FastFrames:
        (found,) = [f for f in self.frames if f.client is client]
        return found


@pytest.fixture
def made(monkeypatch: pytest.MonkeyPatch) -> Made:
    """Records what the transport builds (each looked up by name when a connection opens)."""
    record = Made()

    class RecordedFrames(FastFrames):
        def __init__(self, inner: Any, max_message_size: int) -> None:
            super().__init__(inner, max_message_size)
            record.frames.append(self)

    class RecordedStream(ws_streams.TrioWebSocketStream):
        def __init__(self, *args: Any, **kw: Any) -> None:
            super().__init__(*args, **kw)
            record.streams.append(self)

    monkeypatch.setattr(ws_streams, "FastFrames", RecordedFrames)
    monkeypatch.setattr(ws_server, "TrioWebSocketStream", RecordedStream)
    monkeypatch.setattr(ws_client, "TrioWebSocketStream", RecordedStream)
    return record


@attrs.define
class Served:
    port: int
    made: Made

    @property
    def frames(self) -> FastFrames:
        """The server's FastFrames of its one connection."""
        return self.made.one(client=False)

    @property
    def ws(self) -> Any:
        """The server's trio-websocket connection of its one connection."""
        (stream,) = self.made.streams
        return stream._ws


@asynccontextmanager
async def serving(made: Made, **settings: Any) -> AsyncIterator[Served]:
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
        peer = Peer(stream, rest, masked=False)
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


async def test_a_call_in_one_frame_is_answered_on_the_fast_path(made: Made) -> None:
    with trio.fail_after(TIMEOUT):
        async with serving(made) as served, raw_client(served.port) as peer:
            base = await settled_count(served)
            await peer.send(text(call(1, "add", 2, 40)))
            assert await peer.json() == result(1, 42)
            assert await settled_count(served) == base + 1


async def test_a_call_sent_one_byte_per_write_is_answered(made: Made) -> None:
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


async def test_twenty_calls_in_one_write_are_all_answered(made: Made) -> None:
    with trio.fail_after(TIMEOUT):
        async with serving(made) as served, raw_client(served.port) as peer:
            base = await settled_count(served)
            await peer.send(b"".join(text(call(i, "add", i, 1000)) for i in range(1, 21)))
            replies = [await peer.json() for _ in range(20)]
            assert sorted(replies, key=lambda r: int(r["id"])) == [
                result(i, i + 1000) for i in range(1, 21)
            ]
            assert await settled_count(served) == base + 20


async def test_frames_cut_at_every_header_and_mask_boundary(made: Made) -> None:
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


async def test_a_frame_with_a_64_bit_length_both_ways(made: Made) -> None:
    word = "y" * 70_000
    with trio.fail_after(TIMEOUT):
        async with serving(made) as served, raw_client(served.port) as peer:
            base = await settled_count(served)
            data = text(call(1, "echo", word))
            assert data[1] == 0x80 | 127
            await peer.send(data)
            reply = await peer.next_frame()
            assert len(reply.payload) > 65535  # so it came with an 8-byte length
            assert reply.json() == result(1, word)
            assert await settled_count(served) == base + 1


async def test_a_binary_frame_holding_a_call_is_answered_with_text(
    made: Made,
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
            assert (error["t"], error["id"], error["error"]["code"]) == (
                "error",
                None,
                "bad-request",
            )
            await peer.send(text(call(4, "add", 2, 2)))
            assert await peer.json() == result(4, 4)
            assert await settled_count(served) == base + 3


# -- 2. and 3. fragments and control frames, then back to the fast path ------------------------


def fragments(data: bytes, *cuts: int, opcode: int = TEXT) -> list[bytes]:
    """`data` as one fragmented message: a frame per piece between `cuts`."""
    edges = [0, *cuts, len(data)]
    pieces = [data[a:b] for a, b in itertools.pairwise(edges)]
    return [
        build(opcode if i == 0 else CONT, piece, fin=i == len(pieces) - 1)
        for i, piece in enumerate(pieces)
    ]


def pong(payload: bytes) -> Frame:
    return Frame(True, 0, PONG, False, payload)


def text_reply(message: J) -> Frame:
    return Frame(True, 0, TEXT, False, json.dumps(message, separators=(",", ":")).encode())


@pytest.mark.parametrize("writes", ["frame-by-frame", "one-write"])
async def test_a_fragmented_call_with_a_ping_between_fragments(made: Made, writes: str) -> None:
    word = "caf\u00e9 \u20ac!"  # "é" and "€": multi-byte, the € cut across two fragments
    data = call(5, "echo", word)
    euro = data.index("\u20ac".encode())
    first, second, third = fragments(data, 10, euro + 1)
    ping = build(PING, b"are you there?")
    with trio.fail_after(TIMEOUT):
        async with serving(made) as served, raw_client(served.port) as peer:
            base = await settled_count(served)
            if writes == "frame-by-frame":
                await peer.send_settled(first, ping, second, third)
            else:
                await peer.send(first + ping + second + third)
            # The pong goes out as the ping is read, before the message is whole.
            assert await peer.next_frame() == pong(b"are you there?")
            assert await peer.json() == result(5, word)
            assert await settled_count(served) == base  # none of these was the fast path's
            await peer.send(text(call(6, "add", 1, 2)))  # a whole frame after them: fast again
            assert await peer.json() == result(6, 3)
            assert await settled_count(served) == base + 1


def pinged(payload: bytes) -> tuple[list[bytes], list[Frame]]:
    return [build(PING, payload)], [pong(payload)]


#: Frames that the fast path leaves to wsproto, each as (writes, what the server answers).
SLOW_STEPS: dict[str, Callable[[int], tuple[list[bytes], list[Frame]]]] = {
    "ping": lambda i: pinged(b"p%d" % i),
    "empty ping": lambda i: pinged(b""),
    "125-byte ping": lambda i: pinged(bytes(range(125))),
    "unanswered pong": lambda i: ([build(PONG, b"nobody asked")], []),
    "ping cut in two writes": lambda i: _cut(build(PING, b"cut")),
    "fragmented call": lambda i: (
        [b"".join(fragments(call(1000 + i, "add", i, 1), 5, 20))],
        [text_reply(result(1000 + i, i + 1))],
    ),
    "fragments, one per write": lambda i: (
        fragments(call(1000 + i, "add", i, 2), 1, 2, 30),
        [text_reply(result(1000 + i, i + 2))],
    ),
    "binary fragments": lambda i: (
        [b"".join(fragments(call(1000 + i, "add", i, 3), 7, opcode=BINARY))],
        [text_reply(result(1000 + i, i + 3))],
    ),
    "ping then a whole call, one write": lambda i: (
        [build(PING, b"first") + text(call(1000 + i, "add", i, 4))],
        [pong(b"first"), text_reply(result(1000 + i, i + 4))],
    ),
    "empty fragments around a ping": lambda i: (
        [text(b"", fin=False) + build(PING, b"mid") + build(CONT, call(1000 + i, "add", i, 5))],
        [pong(b"mid"), text_reply(result(1000 + i, i + 5))],
    ),
}


#: Whole frames in a step that the fast path still reads: wsproto gets a control
#: frame alone, and the fast path goes on right after it in the same read.
FAST_IN_STEP = {"ping then a whole call, one write": 1}


def _cut(frame: bytes) -> tuple[list[bytes], list[Frame]]:
    return [frame[:3], frame[3:]], [pong(b"cut")]


async def test_the_fast_path_resumes_after_every_kind_of_slow_frame(made: Made) -> None:
    with trio.fail_after(TIMEOUT):
        async with serving(made) as served, raw_client(served.port) as peer:
            count = await settled_count(served)
            for round_ in range(2):  # every step twice, in a row on one connection
                for step, (name, make) in enumerate(SLOW_STEPS.items()):
                    i = round_ * 100 + step
                    writes, expected = make(i)
                    await peer.send_settled(*writes)
                    got = [await peer.next_frame() for _ in expected]
                    assert got == expected, name
                    count += FAST_IN_STEP.get(name, 0)
                    assert await settled_count(served) == count, name
                    # A whole frame in a write of its own: read by the fast path again.
                    await peer.send(text(call(i, "add", i, 1000)))
                    assert await peer.json() == result(i, i + 1000), name
                    count += 1
                    assert await settled_count(served) == count, name


# -- 4. frames that break RFC 6455, and the size limit -------------------------------------


BAD_FRAMES: dict[str, tuple[list[bytes], int, str]] = {
    # case: (writes, the code the server fails the connection with, wsproto's reason)
    "invalid UTF-8": (
        [text(b'{"t":"call","x":"\xff\xfe"}')],
        1007,
        "'utf-8' codec can't decode byte 0xff in position 17: invalid start byte",
    ),
    "a UTF-16 surrogate in UTF-8": (
        [text(b'"\xed\xa0\x80"')],
        1007,
        "'utf-8' codec can't decode byte 0xed in position 1: invalid continuation byte",
    ),
    "invalid UTF-8 across fragments": (
        [text(b'"ab\xe2', fin=False), build(CONT, b'\x82"')],
        1007,
        "'utf-8' codec can't decode bytes in position 0-1: invalid continuation byte",
    ),
    "an unmasked frame from the client": (
        [text(call(1, "add", 1, 1), mask=False)],
        1002,
        "server received unexpected unmasked frame",
    ),
    "RSV1": ([text(call(1, "add", 1, 1), rsv=4)], 1002, "Reserved bit set unexpectedly"),
    "RSV2": ([text(call(1, "add", 1, 1), rsv=2)], 1002, "Reserved bit set unexpectedly"),
    "RSV3 on a binary frame": (
        [build(BINARY, call(1, "add", 1, 1), rsv=1)],
        1002,
        "Reserved bit set unexpectedly",
    ),
    "a 2-byte length under 126": (
        [text(call(1, "add", 1, 1), length="16")],
        1002,
        "Payload length used 2 bytes when 1 would have sufficed",
    ),
    "an 8-byte length under 65536": (
        [text(call(1, "echo", "w" * 300), length="64")],
        1002,
        "Payload length used 8 bytes when 2 would have sufficed",
    ),
    "an 8-byte length with its top bit set": (
        [bytes((0x81, 0xFF, 0x80)) + bytes(7) + os.urandom(4)],
        1002,
        "8-byte payload length with non-zero MSB",
    ),
    "opcode 3": ([build(3, b"x")], 1002, "Invalid opcode 0x3"),
    "opcode 0xB": ([build(0xB, b"")], 1002, "Invalid opcode 0xb"),
    "a continuation first": ([build(CONT, b"[]")], 1002, "unexpected CONTINUATION"),
    "a text frame inside a fragmented message": (
        [text(b"[", fin=False), text(b"]")],
        1002,
        "expected CONTINUATION, got <Opcode.TEXT: 1>",
    ),
    "a fragmented ping": (
        [build(PING, b"x", fin=False)],
        1002,
        "Invalid attempt to fragment control frame",
    ),
    "a 126-byte ping": ([build(PING, b"p" * 126)], 1002, "Control frame with payload len > 125"),
}


@pytest.mark.parametrize("case", list(BAD_FRAMES))
async def test_a_frame_breaking_rfc_6455_fails_the_connection(made: Made, case: str) -> None:
    """wsproto still judges every frame the fast path does not take.

    The server fails the connection with wsproto's code and reason, and sends
    them in a close frame (trio-websocket 0.12 alone would drop the TCP
    connection without one).
    """
    writes, code, reason = BAD_FRAMES[case]
    with trio.fail_after(TIMEOUT):
        async with serving(made) as served, raw_client(served.port) as peer:
            base = await settled_count(served)
            await peer.send_settled(*writes)
            assert await peer.closing() == (code, reason)
            assert (served.ws.closed.code, served.ws.closed.reason) == (code, reason)
            assert served.frames.fast_frames == base


SMALL = 200  # the server's max_message_size in the size tests


def sized_call(id_: int, size: int) -> bytes:
    """An `echo` call that encodes to exactly `size` bytes."""
    data = call(id_, "echo", "")
    data = call(id_, "echo", "s" * (size - len(data)))
    assert len(data) == size
    return data


async def test_a_frame_at_the_limit_is_read_by_the_fast_path_one_over_closes_with_1009(
    made: Made,
) -> None:
    with trio.fail_after(TIMEOUT):
        async with (
            serving(made, max_message_size=SMALL) as served,
            raw_client(served.port) as peer,
        ):
            base = await settled_count(served)
            await peer.send(text(sized_call(1, SMALL)))
            assert await peer.json() == result(1, "s" * (SMALL - len(call(1, "echo", ""))))
            assert await settled_count(served) == base + 1
            await peer.send(text(sized_call(2, SMALL + 1)))
            # trio-websocket's own reason (not docs/websocket.md's "a message of N bytes
            # is over this server's limit of L bytes", which is the hypercorn server's).
            assert await peer.closing() == (1009, f"Exceeded maximum message size: {SMALL} bytes")
            assert served.frames.fast_frames == base + 1
            await peer.send(build(CLOSE, struct.pack("!H", 1009)))  # the close handshake


async def test_a_frame_declaring_more_than_the_limit_closes_once_more_has_come(
    made: Made,
) -> None:
    """A frame over the limit goes to wsproto at once; its payload closes it at the limit.

    trio-websocket counts what arrived, not what the header declares: the
    connection stays open while no more than the limit has come.
    """
    data = text(b'"' + b"d" * 4998 + b'"')
    assert data[1] == 0x80 | 126
    header = 2 + 2 + 4  # the 2-byte length, then the mask key
    with trio.fail_after(TIMEOUT):
        async with (
            serving(made, max_message_size=SMALL) as served,
            raw_client(served.port) as peer,
        ):
            base = await settled_count(served)
            await peer.send_settled(data[:header])
            assert len(served.frames._buffer) == 0  # handed to wsproto, not buffered
            await peer.send_settled(data[header : header + SMALL])
            assert served.ws.closed is None  # exactly the limit so far
            await peer.send(data[header + SMALL : header + SMALL + 1])
            assert await peer.closing() == (1009, f"Exceeded maximum message size: {SMALL} bytes")
            assert served.frames.fast_frames == base


async def test_a_peer_silent_after_a_1009_is_hung_up_on(
    made: Made, monkeypatch: pytest.MonkeyPatch
) -> None:
    """trio-websocket stops reading after its 1009: the server ends TCP after the close timeout."""
    monkeypatch.setattr(ws_streams, "CLOSE_TIMEOUT", 0.2)
    with trio.fail_after(TIMEOUT):
        async with (
            serving(made, max_message_size=SMALL) as served,
            raw_client(served.port) as peer,
        ):
            await settled_count(served)
            await peer.send(text(sized_call(1, SMALL + 1)))
            assert await peer.closing() == (1009, f"Exceeded maximum message size: {SMALL} bytes")
            # No close in answer, and no TCP close: the server ends it.
            assert await peer.frame() is None


async def test_a_ping_after_the_servers_close_is_ignored_and_the_server_goes_on(
    made: Made,
) -> None:
    """trio-websocket answers a ping with a pong, which wsproto refuses once a close is sent.

    That error used to end the connection's reader task and, through it, `serve`
    and every other connection.
    """
    with trio.fail_after(TIMEOUT):
        async with (
            serving(made, handshake_timeout=0.2) as served,
            raw_client(served.port) as bystander,
            raw_client(served.port, hello=False) as peer,
        ):
            assert await peer.closing() == (1008, "no hello within 0.2 s of opening")
            await peer.send(build(PING, b"late"))
            await peer.send(build(CLOSE, struct.pack("!H", 1000)))  # the close handshake
            assert await peer.frame() is None  # no pong: TCP ends
            await bystander.send(text(call(1, "add", 20, 22)))
            assert await bystander.json() == result(1, 42)


# -- 4b. the server's session reads its own socket -----------------------------------------


def running_coroutines() -> list[str]:
    """The name of every task's coroutine in this run."""
    names: list[str] = []
    nurseries = list(trio.lowlevel.current_root_task().child_nurseries)
    for _ in range(100_000):  # bounded: the task tree of one test
        if not nurseries:
            return names
        for task in nurseries.pop().child_tasks:
            names.append(task.coro.cr_code.co_name)
            nurseries.extend(task.child_nurseries)
    raise AssertionError("too many nurseries")


async def test_the_servers_session_reads_its_socket_with_no_reader_task(made: Made) -> None:
    """No trio-websocket reader task (and its channel hop): the session reads the socket."""
    with trio.fail_after(TIMEOUT):
        async with serving(made) as served, raw_client(served.port) as peer:
            await peer.send(text(call(1, "add", 2, 40)))
            assert await peer.json() == result(1, 42)
            await trio.testing.wait_all_tasks_blocked()
            assert "_reader_task" not in running_coroutines()
            (stream,) = made.streams
            assert stream._reader is not None


async def test_pings_and_pongs_between_calls_in_one_read_are_all_answered(made: Made) -> None:
    """Control frames amid data frames in one read: pongs, pings' answers, every call's result."""
    with trio.fail_after(TIMEOUT):
        async with serving(made) as served, raw_client(served.port) as peer:
            base = await settled_count(served)
            await peer.send(
                text(call(1, "add", 1, 1))
                + build(PING, b"first")
                + text(call(2, "add", 2, 2))
                + build(PONG, b"unasked")
                + build(PING, b"second")
                + text(call(3, "add", 3, 3))
            )
            frames = [await peer.next_frame() for _ in range(5)]
            pongs = [f.payload for f in frames if f.opcode == PONG]
            replies = [f.json() for f in frames if f.opcode != PONG]
            assert pongs == [b"first", b"second"]
            assert sorted(replies, key=lambda r: int(r["id"])) == [
                result(1, 2), result(2, 4), result(3, 6)
            ]  # fmt: skip
            assert await settled_count(served) == base + 3


async def test_a_close_in_the_same_read_as_calls_is_answered_and_ends_the_connection(
    made: Made,
) -> None:
    """Calls, then the client's close, in one write: the close is answered, then TCP ends."""
    with trio.fail_after(TIMEOUT):
        async with (
            serving(made) as served,
            raw_client(served.port) as bystander,
            raw_client(served.port) as peer,
        ):
            await peer.send(
                text(call(1, "add", 1, 1))
                + text(call(2, "add", 2, 2))
                + build(CLOSE, struct.pack("!H", 1000) + b"bye")
            )
            frames: list[Frame] = []
            for _ in range(10):
                got = await peer.frame()
                if got is None:
                    break
                frames.append(got)
            # The close answered with its own code and reason, last: nothing after it.
            assert frames[-1].close() == (1000, "bye")
            assert all(f.opcode == TEXT for f in frames[:-1])
            await bystander.send(text(call(3, "add", 20, 22)))
            assert await bystander.json() == result(3, 42)


async def test_a_shutdown_during_a_burst_reads_the_clients_close_without_a_reader_task(
    made: Made,
) -> None:
    """The server's close, with calls still coming: it reads on itself until the client's close."""
    with trio.fail_after(TIMEOUT):
        async with open_service_nursery() as nursery:
            server = trio.CancelScope()

            async def run_server(*, task_status: trio.TaskStatus[str]) -> None:
                with server:
                    await websocket.serve(
                        adder_manager(), "127.0.0.1", 0, ping_interval=None, task_status=task_status
                    )

            url: str = await nursery.start(run_server)
            port = int(url.rsplit(":", 1)[1].strip("/"))
            async with raw_client(port) as peer:
                await peer.send(b"".join(text(call(i, "add", i, 1)) for i in range(1, 101)))
                assert (await peer.json())["t"] == "result"
                server.cancel()
                for _ in range(200):  # the results the server sent before its close
                    got = await peer.next_frame()
                    if got.opcode == CLOSE:
                        break
                assert got.close() == (1001, "the server is shutting down")
                # More calls and then the close's answer: the server reads past the calls.
                await peer.send(text(call(200, "add", 1, 1)))
                await peer.send(build(CLOSE, struct.pack("!H", 1001)))
                began = trio.current_time()
                assert await peer.frame() is None  # TCP ends
                # At once, not after the close timeout (5 s) without an answer.
                assert trio.current_time() - began < ws_streams.CLOSE_TIMEOUT / 2


# -- 5. tether's client against a raw server -----------------------------------------------


Script = Callable[[Peer], Awaitable[None]]


@asynccontextmanager
async def raw_server(script: Script) -> AsyncIterator[str]:
    """A hand-written WebSocket server on 127.0.0.1 running `script` per connection.

    Yields the ws:// URL. An assertion failing in the script fails the test.
    """

    async def handler(stream: trio.SocketStream) -> None:
        async with stream:
            lines, rest = await read_head(stream)
            assert lines[0] == "GET / HTTP/1.1", lines
            key = header(lines, "sec-websocket-key")
            assert len(base64.b64decode(key)) == 16
            assert header(lines, "sec-websocket-version") == "13"
            response = (
                "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
                f"Connection: Upgrade\r\nSec-WebSocket-Accept: {accept_key(key)}\r\n\r\n"
            )
            peer = Peer(stream, rest, masked=True)
            peer.response = response.encode()
            await script(peer)

    async with open_service_nursery() as nursery:
        listeners = await nursery.start(
            functools.partial(trio.serve_tcp, handler, 0, host="127.0.0.1")
        )
        yield f"ws://127.0.0.1:{listeners[0].socket.getsockname()[1]}/"
        nursery.cancel_scope.cancel()


def server_frame(message: J, **kw: Any) -> bytes:
    return build(TEXT, json.dumps(message, ensure_ascii=False).encode(), mask=False, **kw)


async def read_call(peer: Peer) -> J:
    """The client's next frame: a masked, whole text frame holding a call."""
    frame = await peer.next_frame()
    assert (frame.fin, frame.rsv, frame.opcode, frame.masked) == (True, 0, TEXT, True), frame
    message = json.loads(frame.payload)
    assert message["t"] == "call", message
    return message  # type: ignore[no-any-return]


async def greet(peer: Peer, *, welcome: bytes | None = None) -> None:
    """Accept the upgrade, read the client's hello, answer it."""
    await peer.send(peer.response)
    hello = await peer.next_frame()
    assert (hello.fin, hello.opcode, hello.masked) == (True, TEXT, True), hello
    message = json.loads(hello.payload)
    assert (message["t"], message["protocol"], message["mode"]) == ("hello", 1, "rpc")
    await peer.send(server_frame(WELCOME) if welcome is None else welcome)


async def finish(peer: Peer, seen: list[Any]) -> None:
    """Answer the client's close (what tether's client sends when its block ends)."""
    closing = await peer.closing()
    seen.append(closing)
    if closing is not None:
        await peer.send(build(CLOSE, struct.pack("!H", closing[0] or 1000), mask=False))


def client_frames(connection: Any) -> FastFrames:
    """The FastFrames under a `websocket.connect` connection."""
    frames = connection.connection._stream._ws._wsproto
    assert isinstance(frames, FastFrames)
    return frames


def connect(url: str) -> Any:
    # One socket's frames: a lost one is not made again (the script would run anew).
    return websocket.connect(
        url, interfaces=[Adder], ping_interval=None, connect_timeout=5, retry=None
    )


def one_byte_writes(data: bytes) -> list[bytes]:
    return [data[at : at + 1] for at in range(len(data))]


async def test_client_reads_replies_arriving_one_byte_per_write(made: Made) -> None:
    seen: list[Any] = []

    async def script(peer: Peer) -> None:
        await peer.send(peer.response)
        hello = await peer.next_frame()
        assert json.loads(hello.payload)["t"] == "hello"
        frames = made.one(client=True)
        welcome = server_frame(WELCOME)
        for at, byte in enumerate(one_byte_writes(welcome[:-1])):
            await peer.send_settled(byte)
            assert (len(frames._buffer), frames.fast_frames) == (at + 1, 0)
        await peer.send(welcome[-1:])
        request = await read_call(peer)
        assert (request["op"], request["args"]) == ("add", [2, 40])
        await peer.send_settled(*one_byte_writes(server_frame(result(request["id"], 42))))
        await finish(peer, seen)

    with trio.fail_after(TIMEOUT):
        async with raw_server(script) as url, connect(url) as connection:
            assert await connection.get_client(Adder).add(2, 40) == 42
            assert client_frames(connection).fast_frames == 2  # the welcome and the result
            assert client_frames(connection) is made.one(client=True)
    assert seen == [(1000, "")]


async def test_client_reads_a_fragmented_reply_with_a_ping_between_fragments(
    made: Made,
) -> None:
    seen: list[Any] = []

    async def script(peer: Peer) -> None:
        await greet(peer)
        request = await read_call(peer)
        data = json.dumps(result(request["id"], "h\u00e9 \u20ac"), ensure_ascii=False).encode()
        euro = data.index("\u20ac".encode())
        pieces = [data[:4], data[4 : euro + 2], data[euro + 2 :]]  # the € cut in two
        await peer.send_settled(build(TEXT, pieces[0], fin=False, mask=False))
        await peer.send_settled(build(PING, b"still there?", mask=False))
        pong_frame = await peer.next_frame()  # answered before the message is whole
        seen.append((pong_frame.opcode, pong_frame.masked, pong_frame.payload))
        await peer.send_settled(
            build(CONT, pieces[1], fin=False, mask=False), build(CONT, pieces[2], mask=False)
        )
        # Then a ping and two whole replies in one write.
        second, third = await read_call(peer), await read_call(peer)
        await peer.send(
            build(PING, b"again", mask=False)
            + server_frame(result(second["id"], 2))
            + server_frame(result(third["id"], 3))
        )
        again = await peer.next_frame()
        seen.append((again.opcode, again.masked, again.payload))
        # And a whole reply on its own: the fast path's again.
        fourth = await read_call(peer)
        await peer.send(server_frame(result(fourth["id"], 4)))
        await finish(peer, seen)

    with trio.fail_after(TIMEOUT):
        async with raw_server(script) as url, connect(url) as connection:
            adder = connection.get_client(Adder)
            assert await adder.echo("whatever") == "h\u00e9 \u20ac"
            frames = client_frames(connection)
            assert frames.fast_frames == 1  # the welcome only
            async with trio.open_nursery() as nursery:
                got: list[int] = []

                async def add(a: int) -> None:
                    got.append(await adder.add(a, 0))

                nursery.start_soon(add, 2)
                await trio.testing.wait_all_tasks_blocked()  # in this order on the wire
                nursery.start_soon(add, 3)
            assert sorted(got) == [2, 3]
            # Behind a ping in one read: wsproto reads the ping alone, the fast path the rest.
            assert frames.fast_frames == 3
            assert await adder.add(4, 0) == 4
            assert frames.fast_frames == 4
    assert seen == [(PONG, True, b"still there?"), (PONG, True, b"again"), (1000, "")]


async def test_client_reads_twenty_replies_from_one_write_in_any_order(made: Made) -> None:
    seen: list[Any] = []

    async def script(peer: Peer) -> None:
        await greet(peer)
        requests = [await read_call(peer) for _ in range(20)]
        replies = [server_frame(result(r["id"], sum(r["args"]))) for r in requests]
        await peer.send(b"".join(reversed(replies)))
        await finish(peer, seen)

    with trio.fail_after(TIMEOUT):
        async with raw_server(script) as url, connect(url) as connection:
            adder = connection.get_client(Adder)
            got: dict[int, int] = {}

            async def add(a: int) -> None:
                got[a] = await adder.add(a, 100)

            async with trio.open_nursery() as nursery:
                for a in range(20):
                    nursery.start_soon(add, a)
            assert got == {a: a + 100 for a in range(20)}
            assert client_frames(connection).fast_frames == 21
    assert seen == [(1000, "")]


async def test_client_handles_a_welcome_in_the_same_write_as_the_upgrade(made: Made) -> None:
    """Bytes after the 101 in its read are wsproto's (read before FastFrames is installed)."""
    seen: list[Any] = []

    async def script(peer: Peer) -> None:
        await peer.send(peer.response + server_frame(WELCOME))  # before the hello
        hello = await peer.next_frame()
        assert json.loads(hello.payload)["t"] == "hello"
        request = await read_call(peer)
        await peer.send(server_frame(result(request["id"], 7)))
        await finish(peer, seen)

    with trio.fail_after(TIMEOUT):
        async with raw_server(script) as url, connect(url) as connection:
            assert await connection.get_client(Adder).add(3, 4) == 7
            assert client_frames(connection).fast_frames == 1  # the result
    assert seen == [(1000, "")]


async def test_a_masked_welcome_from_the_server_is_a_connect_error(made: Made) -> None:
    seen: list[Any] = []

    async def script(peer: Peer) -> None:
        await greet(peer, welcome=build(TEXT, json.dumps(WELCOME).encode(), mask=True))
        seen.append(await peer.closing())

    with trio.fail_after(TIMEOUT):
        async with raw_server(script) as url:
            with pytest.raises(ConnectError) as caught:
                async with connect(url):
                    raise AssertionError("connected")  # pragma: no cover
    assert str(caught.value) == (
        f"the backend closed the connection during the handshake: WebSocket to {url} closed "
        "(1002 protocol error): client received unexpected masked frame"
    )
    # The client tells the server why, as the server does.
    assert seen == [(1002, "client received unexpected masked frame")]
    assert made.one(client=True).fast_frames == 0


async def test_a_masked_reply_fails_the_call_with_connection_closed_1002(made: Made) -> None:
    seen: list[Any] = []

    async def script(peer: Peer) -> None:
        await greet(peer)
        request = await read_call(peer)
        await peer.send(build(TEXT, json.dumps(result(request["id"], 1)).encode(), mask=True))
        seen.append(await peer.closing())

    with trio.fail_after(TIMEOUT):
        async with raw_server(script) as url, connect(url) as connection:
            adder = connection.get_client(Adder)
            frames = client_frames(connection)
            with pytest.raises(ConnectionClosed) as caught:
                await adder.add(0, 1)
            assert (caught.value.close_code, caught.value.reason) == (
                1002,
                "client received unexpected masked frame",
            )
            with pytest.raises(ConnectionClosed):  # the connection stays closed
                await adder.add(0, 2)
            assert frames.fast_frames == 1  # the welcome
    assert seen == [(1002, "client received unexpected masked frame")]


# -- 6. tether's client reads its own socket, also while no call waits --------------------


async def test_the_client_reads_its_socket_with_no_reader_task(made: Made) -> None:
    seen: list[Any] = []

    async def script(peer: Peer) -> None:
        await greet(peer)
        request = await read_call(peer)
        await peer.send(server_frame(result(request["id"], 42)))
        await finish(peer, seen)

    with trio.fail_after(TIMEOUT):
        async with raw_server(script) as url, connect(url) as connection:
            assert await connection.get_client(Adder).add(2, 40) == 42
            await trio.testing.wait_all_tasks_blocked()
            assert "_reader_task" not in running_coroutines()
            assert connection.connection._stream._reader is not None
    assert seen == [(1000, "")]


async def idle_reading(connection: Any) -> None:
    """Until the client reads its socket with no call running.

    The connection's own watch (`RpcConnection.watch`) reads for nobody, or,
    while it has given way, the stream's idle task.
    """
    for _ in range(1000):  # bounded: IDLE_CHECK is made 0.01 s
        current = connection.connection
        if current._watching is not None or current._stream._reader._idle is not None:
            return
        await trio.sleep(0.01)
    raise AssertionError("the client never read while idle")


async def test_an_idle_client_answers_pings_and_a_call_takes_over_its_reading(
    made: Made, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Between calls the idle task reads (pongs go out); a call takes its place, and back."""
    monkeypatch.setattr(ws_client, "IDLE_CHECK", 0.01)
    seen: list[Any] = []
    may_ping, ponged = trio.Semaphore(0), trio.Semaphore(0)

    async def script(peer: Peer) -> None:
        await greet(peer)
        for n in range(3):
            await may_ping.acquire()
            await peer.send(build(PING, b"idle %d" % n, mask=False))
            pong = await peer.next_frame()
            assert (pong.opcode, pong.payload) == (PONG, b"idle %d" % n)
            ponged.release()
            request = await read_call(peer)
            await peer.send(server_frame(result(request["id"], n)))
        await finish(peer, seen)

    with trio.fail_after(TIMEOUT):
        async with raw_server(script) as url, connect(url) as connection:
            adder = connection.get_client(Adder)
            for n in range(3):
                await idle_reading(connection)
                may_ping.release()
                await ponged.acquire()  # answered by the idle read, no call running
                await idle_reading(connection)
                # The call takes the socket from the idle read.
                assert await adder.add(n, 0) == n
    assert seen == [(1000, "")]


async def test_an_idle_client_answers_the_servers_close_at_once(
    made: Made, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(ws_client, "IDLE_CHECK", 0.01)
    answered = trio.Event()
    may_close = trio.Event()

    async def script(peer: Peer) -> None:
        await greet(peer)
        await may_close.wait()
        await peer.send(build(CLOSE, struct.pack("!H", 1001) + b"going", mask=False))
        assert await peer.closing() == (1001, "going")
        answered.set()

    with trio.fail_after(TIMEOUT):
        async with raw_server(script) as url, connect(url) as connection:
            await idle_reading(connection)
            may_close.set()
            await answered.wait()  # with no call running
            with pytest.raises(ConnectionClosed):
                await connection.get_client(Adder).add(1, 1)


async def test_a_server_hanging_up_during_the_handshake_fails_connect_at_once(
    made: Made,
) -> None:
    """Not after `connect_timeout` (5 s here): the handshake is read in the connecting task."""

    async def script(peer: Peer) -> None:
        pass  # the request read, no answer: the stream closes

    with trio.fail_after(TIMEOUT):
        async with raw_server(script) as url:
            began = trio.current_time()
            with pytest.raises(ConnectError, match="hung up during the handshake"):
                async with connect(url):
                    pass  # pragma: no cover - refused
            assert trio.current_time() - began < 2.5
