"""The bulk paths of the stream transports (bench.streams, 64 MiB in 1 MiB items).

- WebSocket: a large binary frame is read into a buffer of its own
  (`FastFrames.wanting`/`filled`, or `receive_data` pieces) and must read
  exactly as wsproto reads it, cut anywhere, masked or not, with frames
  around it; a binary message written in pieces (`message_parts`) is the
  frame `message_frame` makes, masked or not.
- HTTP: a large record is gathered in a buffer of its own (`Splitter`); h11's
  receive buffer hands a body's bytes over without copying and parses what
  h11 parses; a client stream's items holding bytes cross as binary frame
  records (the bytes on the socket are the payload, not base64), and the
  server reads such records from any client.
"""

from __future__ import annotations

import functools
import os
import shutil
import struct
import urllib.parse
from collections.abc import AsyncIterator

import h11
import orjson
import pytest
import trio
from wsproto.events import BytesMessage, TextMessage

from tests.http_streams_app import Telemetry, manager
from tests.test_wsframes import BINARY, PING, TEXT, build, read_all, receiver
from tether.runtime import InvalidRequest
from tether.runtime._binary import BinaryMessage, pack
from tether.runtime._util import open_service_nursery
from tether.transports import http
from tether.transports.http._duplex import _BodyBuffer, _use_body_buffer
from tether.transports.http._framing import Splitter, item_value
from tether.transports.websocket import _frames
from tether.transports.websocket._frames import (
    BIG_FRAME,
    FastFrames,
    message_frame,
    message_parts,
)

TIMEOUT = 20.0
CURL = shutil.which("curl") or "/usr/bin/curl"
OP = "HttpTelemetry/1.0.0"

# -- WebSocket: large binary frames ----------------------------------------


def _wire(masked: bool) -> tuple[bytes, list[tuple[str, object]]]:
    """Two large binary frames with small frames and a ping between: bytes, and what is read."""
    big = os.urandom(3 * BIG_FRAME + 17)
    other = os.urandom(BIG_FRAME * 2)
    wire = (
        build(TEXT, b'{"a":1}', masked=masked)
        + build(BINARY, big, masked=masked)
        + build(PING, b"hi", masked=masked)
        + build(BINARY, other, masked=masked)
        + build(TEXT, b'{"b":2}', masked=masked)
    )
    return wire, [
        ("text", '{"a":1}'),
        ("bytes", big),
        ("Ping", b"hi"),
        ("bytes", other),
        ("text", '{"b":2}'),
    ]


@pytest.mark.parametrize("role", ["client", "server"])
@pytest.mark.parametrize("piece", [1000, 65536, 100_000, 1 << 20])
def test_a_large_binary_frame_fed_in_pieces_reads_as_wsproto_reads_it(
    role: str, piece: int
) -> None:
    wire, expected = _wire(masked=role == "server")
    chunks = [wire[i : i + piece] for i in range(0, len(wire), piece)]
    plain = read_all(receiver(role), chunks)
    fast = FastFrames(receiver(role), 1 << 20)
    assert plain == expected
    assert read_all(fast, chunks) == expected
    assert fast.fast_frames == 4  # both large frames on the fast path, not wsproto's


@pytest.mark.parametrize("role", ["client", "server"])
def test_a_large_binary_frame_is_received_into_its_own_buffer(role: str) -> None:
    # What SocketReader does: while `wanting()` names a buffer, the socket is
    # read into it (`recv_into`) and `filled` says how much came.
    wire, expected = _wire(masked=role == "server")
    fast = FastFrames(receiver(role), 1 << 20)
    seen: list[tuple[str, object]] = []
    at = into_reads = 0
    while at < len(wire):
        into = fast.wanting()
        if into is None:
            fast.receive_data(wire[at : at + 4096])
            at += 4096
        else:
            count = min(len(into), 50_000)
            into[:count] = wire[at : at + count]
            fast.filled(count)
            at += count
            into_reads += 1
        for event in fast.events():
            if isinstance(event, TextMessage):
                seen.append(("text", event.data))
            elif isinstance(event, BytesMessage):
                seen.append(("bytes", bytes(event.data)))
            else:
                seen.append((type(event).__name__, bytes(event.payload)))
    assert seen == expected
    assert into_reads >= 4  # the large frames' rests came straight into their buffers


@pytest.mark.parametrize("mask", [False, True])
def test_message_parts_are_the_frame_of_the_message(mask: bool) -> None:
    packed = pack({"t": "item", "id": 3, "value": [os.urandom(70_001), b"x", os.urandom(5)]})
    assert type(packed) is BinaryMessage
    reader = receiver("server" if mask else "client")
    parts = message_parts(packed, mask)
    assert read_all(reader, [b"".join(parts)]) == [("bytes", packed.frame())]
    if not mask:
        assert parts[3:] == list(packed.attachments)  # as they are: not copied
        assert b"".join(parts) == message_frame(packed, False)


# -- HTTP: records and h11's buffer ---------------------------------------


def test_a_large_record_is_gathered_whole_from_pieces_and_what_follows_stays() -> None:
    big = b"\x07" * (300_000)
    small = b'{"t":"result"}'
    body = struct.pack(">I", len(big)) + big + struct.pack(">I", len(small)) + small
    splitter = Splitter(True, 1 << 20)
    texts = []
    for start in range(0, len(body), 70_000):
        splitter.feed(body[start : start + 70_000])
        while (text := splitter.next()) is not None:
            texts.append(bytes(text))
    assert texts == [big, small]
    assert splitter.buffered == 0


def test_a_body_that_ends_inside_a_large_record_is_refused() -> None:
    splitter = Splitter(True, 1 << 20)
    splitter.feed(struct.pack(">I", 500_000) + b"\x00" * 100)
    assert splitter.next() is None
    splitter.feed(b"\x00" * 200_000)
    assert splitter.next() is None
    with pytest.raises(InvalidRequest, match="ended inside a record"):
        splitter.finish()


def test_h11_gets_the_body_buffer_and_reads_what_it_would_read() -> None:
    body = os.urandom(200_000)
    wire = (
        b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n"
        + b"%x\r\n" % len(body)
        + body
        + b"\r\n0\r\n\r\n"
    )
    results = []
    for swap in (False, True):
        state = h11.Connection(h11.CLIENT)
        state.send(h11.Request(method="GET", target="/", headers=[("host", "x")]))
        state.send(h11.EndOfMessage())
        if swap:
            assert _use_body_buffer(state)  # fails loudly if h11 moved its buffer
            assert type(state._receive_buffer) is _BodyBuffer
        got, events = bytearray(), []
        for start in range(0, len(wire), 65_000):
            state.receive_data(bytearray(wire[start : start + 65_000]))
            while (event := state.next_event()) is not h11.NEED_DATA:
                events.append(type(event).__name__)
                if type(event) is h11.Data:
                    got += event.data
                if type(event) is h11.EndOfMessage:
                    break
        results.append((bytes(got), [e for e in events if e != "Data"]))
        assert state.their_state is h11.DONE
    assert results[0] == results[1] == (body, ["Response", "EndOfMessage"])


def test_an_item_frame_without_a_value_is_refused() -> None:
    frame = BinaryMessage(b'{"other":null,"bin":[{"path":["other"],"size":1}]}', (b"x",))
    with pytest.raises(InvalidRequest, match=r'\{"value": \.\.\.\}'):
        item_value(frame.frame())
    assert item_value(pack({"value": [b"ab", 1]}).frame()) == [b"ab", 1]  # type: ignore[union-attr]


# -- HTTP: client streams carry bytes raw ---------------------------------


async def _count_up(
    listen: int, nursery: trio.Nursery, counted: list[int], task_status: trio.TaskStatus[int]
) -> None:
    """A TCP relay to `listen`, counting the bytes the client sends."""

    async def relay(client: trio.SocketStream) -> None:
        server = await trio.open_tcp_stream("127.0.0.1", listen)

        async def pump(src: trio.SocketStream, dst: trio.SocketStream, count: bool) -> None:
            try:
                while data := await src.receive_some(1 << 16):
                    if count:
                        counted[0] += len(data)
                    await dst.send_all(data)
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                pass
            finally:
                await dst.aclose()

        async with client, server, trio.open_nursery() as inner:
            inner.start_soon(pump, client, server, True)
            inner.start_soon(pump, server, client, False)

    listeners = await nursery.start(functools.partial(trio.serve_tcp, relay, 0, host="127.0.0.1"))
    task_status.started(listeners[0].socket.getsockname()[1])


async def test_a_client_stream_of_bytes_goes_raw_not_base64() -> None:
    payload = [os.urandom(256 * 1024) for _ in range(8)]

    async def chunks() -> AsyncIterator[bytes]:
        for chunk in payload:
            yield chunk

    counted = [0]
    with trio.fail_after(TIMEOUT):
        async with open_service_nursery() as nursery:
            url = await nursery.start(functools.partial(http.serve, manager(), "127.0.0.1", 0))
            parts = urllib.parse.urlsplit(url)
            relay = await nursery.start(_count_up, parts.port, nursery, counted)
            relayed = parts._replace(netloc=f"127.0.0.1:{relay}").geturl()
            async with http.connect(relayed, interfaces=[Telemetry]) as connection:
                client = connection.get_client(Telemetry)
                total = await client.upload("k", chunks())
            nursery.cancel_scope.cancel()
    size = sum(map(len, payload))
    assert total == size
    # Headers, records and chunk framing only: base64 would be 1.33x.
    assert size < counted[0] < size * 1.01


async def test_the_server_reads_binary_frame_records_from_any_client() -> None:
    # upload(key, chunks: Stream[bytes]), with curl: the arguments as a frame
    # {"args": [...]} (no attachment), the items as frames {"value": ...}.
    def record(data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + data

    items = [os.urandom(100_000), b"", os.urandom(3)]
    args = BinaryMessage(orjson.dumps({"args": ["k", None]}), ())
    body = record(args.frame())
    for item in items:
        packed = pack({"value": item})
        assert type(packed) is BinaryMessage
        body += record(packed.frame())
    with trio.fail_after(TIMEOUT):
        async with open_service_nursery() as nursery:
            url = await nursery.start(functools.partial(http.serve, manager(), "127.0.0.1", 0))
            done = await trio.run_process(
                [
                    CURL,
                    "-s",
                    "-S",
                    "--max-time",
                    "10",
                    "-H",
                    "Content-Type: application/vnd.tether.stream",
                    "--data-binary",
                    "@-",
                    f"{url}/{OP}/upload",
                ],
                capture_stdout=True,
                stdin=body,
            )
            nursery.cancel_scope.cancel()
    assert orjson.loads(done.stdout) == sum(map(len, items))


async def test_tether_client_stream_over_http_still_sends_json_items() -> None:
    # total(numbers: Stream[int]): items without bytes stay JSON records.
    async def numbers() -> AsyncIterator[int]:
        for n in range(100):
            yield n

    with trio.fail_after(TIMEOUT):
        async with open_service_nursery() as nursery:
            url = await nursery.start(functools.partial(http.serve, manager(), "127.0.0.1", 0))
            async with http.connect(url, interfaces=[Telemetry]) as connection:
                assert await connection.get_client(Telemetry).total(numbers()) == sum(range(100))
            nursery.cancel_scope.cancel()


@pytest.mark.parametrize("size", [1025, 70_000, 1 << 20])
def test_masking_without_websockets_is_the_same_xor(
    size: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The pure-Python way (translate on each fourth byte), used when the
    # `websockets` package's C function is not installed.
    data, key = os.urandom(size), os.urandom(4)
    expected = bytes(b ^ key[i % 4] for i, b in enumerate(data))
    monkeypatch.setattr(_frames, "_apply_mask", None)
    assert bytes(_frames._xor(data, key)) == expected
    assert bytes(_frames._xor(bytearray(data), key)) == expected
