"""The WebSocket frame codec under trio-websocket (tether.transports.websocket._frames).

`FastFrames` must read exactly what wsproto reads: the same messages, pings,
pongs and closes (with their codes) for any bytes cut anywhere. These tests
feed the same bytes to a plain wsproto connection and to `FastFrames` over
another, and compare. Frames here are built by hand, not by `_frames.frame`,
which is tested against wsproto's parser on its own.
"""

from __future__ import annotations

import gc
import os
import types
import weakref
from collections import deque
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from wsproto import ConnectionType, WSConnection
from wsproto.connection import ConnectionState
from wsproto.events import (
    AcceptConnection,
    BytesMessage,
    CloseConnection,
    Ping,
    Pong,
    Request,
    TextMessage,
)

from tether.transports.websocket._frames import FastFrames, _between_frames, _xor, frame

CONT, TEXT, BINARY, CLOSE, PING, PONG = 0x0, 0x1, 0x2, 0x8, 0x9, 0xA


def open_pair() -> tuple[WSConnection, WSConnection]:
    """A wsproto client and server, handshake done."""
    client = WSConnection(ConnectionType.CLIENT)
    server = WSConnection(ConnectionType.SERVER)
    server.receive_data(client.send(Request(host="localhost", target="/")))
    assert isinstance(next(server.events()), Request)
    client.receive_data(server.send(AcceptConnection()))
    assert isinstance(next(client.events()), AcceptConnection)
    return client, server


def receiver(role: str) -> WSConnection:
    """An open wsproto connection on the side `role` that receives ("server" or "client")."""
    client, server = open_pair()
    return server if role == "server" else client


def build(
    opcode: int,
    payload: bytes,
    *,
    masked: bool,
    fin: bool = True,
    rsv: int = 0,
    long_form: int | None = None,
) -> bytes:
    """One frame, by hand (RFC 6455 section 5.2). `long_form` forces 126 or 127 lengths."""
    first = (0x80 if fin else 0) | rsv | opcode
    size = len(payload)
    mask_bit = 0x80 if masked else 0
    form = long_form or (0 if size < 126 else 126 if size < 65536 else 127)
    if form == 0:
        header = bytes((first, mask_bit | size))
    elif form == 126:
        header = bytes((first, mask_bit | 126)) + size.to_bytes(2, "big")
    else:
        header = bytes((first, mask_bit | 127)) + size.to_bytes(8, "big")
    if not masked:
        return header + payload
    key = os.urandom(4)
    return header + key + bytes(b ^ key[i % 4] for i, b in enumerate(payload))


def read_all(connection: Any, chunks: list[bytes]) -> list[tuple[Any, ...]]:
    """What trio-websocket would make of these bytes: whole messages, control events, the close."""
    seen: list[tuple[Any, ...]] = []
    parts: list[Any] = []
    for chunk in chunks:
        connection.receive_data(chunk)
        for event in connection.events():
            if isinstance(event, TextMessage | BytesMessage):
                parts.append(event.data)
                if event.message_finished:
                    kind = "text" if isinstance(event, TextMessage) else "bytes"
                    joined = "".join(parts) if kind == "text" else b"".join(parts)
                    seen.append((kind, joined))
                    parts = []
            elif isinstance(event, Ping | Pong):
                seen.append((type(event).__name__, bytes(event.payload)))
            elif isinstance(event, CloseConnection):
                # A UTF-8 error's reason gives a position within what wsproto
                # was handed at once, which depends on how the bytes came.
                reason = "invalid UTF-8" if event.code == 1007 else event.reason
                seen.append(("close", int(event.code), reason))
                return seen  # trio-websocket reads nothing after a close
            else:
                seen.append(("other", type(event).__name__))
    return seen


def both_read(role: str, data: bytes, cuts: list[int], limit: int = 1 << 20) -> Any:
    """(wsproto's reading, FastFrames' reading, the FastFrames) of `data` cut at `cuts`."""
    points = sorted({c for c in cuts if 0 < c < len(data)})
    chunks = [data[a:b] for a, b in zip([0, *points], [*points, len(data)], strict=True)]
    plain = read_all(receiver(role), chunks)
    fast = FastFrames(receiver(role), limit)
    return plain, read_all(fast, chunks), fast


# -- frame() -----------------------------------------------------------------


@pytest.mark.parametrize("size", [0, 1, 125, 126, 127, 65535, 65536, 70_000])
@pytest.mark.parametrize("role", ["client", "server"])
def test_frame_is_read_by_wsproto_as_one_text_message(size: int, role: str) -> None:
    # A client's frames are masked and read by a server; a server's are not.
    text = ("é" * size)[: max(size // 2, 0)] + "x" * (size - 2 * (size // 2))
    data = text.encode()
    reader = receiver("server" if role == "client" else "client")
    built = frame(data, mask=role == "client")
    assert bool(built[1] & 0x80) is (role == "client")
    assert read_all(reader, [built]) == [("text", text)]


def test_client_frames_use_fresh_masking_keys() -> None:
    reader = receiver("server")
    keys = set()
    frames = []
    for i in range(1100):
        built = frame(f'{{"n":{i}}}'.encode(), mask=True)
        keys.add(built[2:6])
        frames.append(built)
    assert len(keys) > 1000  # random 32-bit keys: a repeat or two at most
    seen = read_all(reader, [b"".join(frames)])
    assert seen == [("text", f'{{"n":{i}}}') for i in range(1100)]


@pytest.mark.parametrize("size", [0, 1, 3, 4, 5, 1023, 1024, 1025, 1027, 5000])
def test_masking_is_a_repeated_xor_with_the_key(size: int) -> None:
    data = os.urandom(size)
    key = os.urandom(4)
    expected = bytes(b ^ key[i % 4] for i, b in enumerate(data))
    assert bytes(_xor(data, key)) == expected
    assert bytes(_xor(bytearray(data), key)) == expected
    assert bytes(_xor(expected, key)) == data


def test_masking_does_not_show_the_payload() -> None:
    data = b'{"t":"call","id":1}' * 4
    assert data not in frame(data, mask=True)
    assert frame(data, mask=False).endswith(data)


# -- FastFrames: the fast path is taken ----------------------------------------


@pytest.mark.parametrize("role", ["client", "server"])
def test_whole_frames_take_the_fast_path(role: str) -> None:
    # If a wsproto upgrade moved the state _between_frames reads, this fails
    # (everything would still be read, only slowly).
    masked = role == "server"
    data = b"".join(
        [
            build(TEXT, b'{"a":1}', masked=masked),
            build(BINARY, b"\x00\xff", masked=masked),
            build(TEXT, "ü".encode() * 100, masked=masked),
        ]
    )
    plain, fast_seen, fast = both_read(role, data, [])
    assert fast_seen == plain == [("text", '{"a":1}'), ("bytes", b"\x00\xff"), ("text", "ü" * 100)]
    assert fast.fast_frames == 3


def test_a_frame_cut_anywhere_waits_for_its_rest() -> None:
    data = build(TEXT, b"x" * 300, masked=True)
    plain, fast_seen, fast = both_read("server", data, list(range(1, len(data))))
    assert fast_seen == plain == [("text", "x" * 300)]
    assert fast.fast_frames == 1


def test_fast_path_resumes_after_control_frames_and_fragments() -> None:
    frames = [
        build(TEXT, b"one", masked=True),
        build(PING, b"p1", masked=True),
        build(TEXT, b"two", masked=True),
        build(TEXT, b"th", masked=True, fin=False),
        build(PING, b"p2", masked=True),
        build(CONT, b"re", masked=True, fin=False),
        build(CONT, b"e", masked=True),
        build(TEXT, b"four", masked=True),
        build(PONG, b"q", masked=True),
        build(TEXT, b"five", masked=True),
    ]
    data = b"".join(frames)
    boundaries = [sum(len(f) for f in frames[:i]) for i in range(1, len(frames))]
    expected = [
        ("text", "one"),
        ("Ping", b"p1"),
        ("text", "two"),
        ("Ping", b"p2"),
        ("text", "three"),
        ("text", "four"),
        ("Pong", b"q"),
        ("text", "five"),
    ]
    # All at once: wsproto gets each control frame and fragment alone; the
    # whole text frames are read fast.
    plain, fast_seen, fast = both_read("server", data, [])
    assert fast_seen == plain == expected
    assert fast.fast_frames == 4
    # A frame per read: each whole text frame after a slow one is fast again.
    plain, fast_seen, fast = both_read("server", data, boundaries)
    assert fast_seen == plain == expected
    assert fast.fast_frames == 4
    # Cut anywhere: still the same reading.
    plain, fast_seen, fast = both_read("server", data, list(range(0, len(data), 7)))
    assert fast_seen == plain == expected


def test_a_ping_in_a_busy_stream_leaves_the_fast_path_on() -> None:
    # Reads that end mid-frame, as under pipelined load: wsproto reads the
    # ping alone and every whole frame around it is still read fast.
    frames = [build(TEXT, b'{"n":%d}' % i, masked=True) for i in range(2000)]
    frames.insert(10, build(PING, b"keepalive", masked=True))
    data = b"".join(frames)
    plain, fast_seen, fast = both_read("server", data, list(range(997, len(data), 997)))
    assert fast_seen == plain
    assert plain[10] == ("Ping", b"keepalive")
    assert len(plain) == 2001
    assert fast.fast_frames == 2000


def test_a_frame_over_the_limit_goes_to_wsproto() -> None:
    # trio-websocket counts the parts wsproto yields and closes with 1009.
    data = build(TEXT, b"y" * 1000, masked=True) + build(TEXT, b"z", masked=True)
    plain, fast_seen, fast = both_read("server", data, [500], limit=999)
    assert fast_seen == plain == [("text", "y" * 1000), ("text", "z")]
    assert fast.fast_frames == 0  # wsproto held part of the big frame when "z" came


def test_control_frames_never_take_the_fast_path() -> None:
    plain, fast_seen, fast = both_read("server", build(PING, b"", masked=True), [])
    assert fast_seen == plain == [("Ping", b"")]
    assert fast.fast_frames == 0


# -- FastFrames: errors are wsproto's --------------------------------------------


@pytest.mark.parametrize(
    ("name", "bad", "code"),
    [
        ("invalid UTF-8", build(TEXT, b"\xff\xfe", masked=True), 1007),
        ("unmasked from a client", build(TEXT, b"hi", masked=False), 1002),
        ("RSV1 without an extension", build(TEXT, b"hi", masked=True, rsv=0x40), 1002),
        ("reserved opcode", build(0x3, b"hi", masked=True), 1002),
        ("continuation with no message", build(CONT, b"hi", masked=True), 1002),
        ("126 length form for 5 bytes", build(TEXT, b"hello", masked=True, long_form=126), 1002),
        (
            "127 length form for 99 bytes",
            build(TEXT, b"h" * 200, masked=True, long_form=127),
            1002,
        ),
        (
            "a new message inside a fragmented one",
            build(TEXT, b"a", masked=True, fin=False) + build(TEXT, b"b", masked=True),
            1002,
        ),
        ("fragmented ping", build(PING, b"a", masked=True, fin=False), 1002),
        ("close with a 1-byte payload", build(CLOSE, b"\x03", masked=True), 1002),
    ],
)
def test_bad_frames_close_as_wsproto_does(name: str, bad: bytes, code: int) -> None:
    data = build(TEXT, b"before", masked=True) + bad + build(TEXT, b"after", masked=True)
    for cuts in ([], [len(data) - 3], list(range(0, len(data), 3))):
        plain, fast_seen, _ = both_read("server", data, cuts)
        assert fast_seen == plain, name
        assert plain[0] == ("text", "before")
        assert plain[-1][:2] == ("close", code), name


def test_masked_frame_from_a_server_is_an_error_for_the_client() -> None:
    data = build(TEXT, b"ok", masked=False) + build(TEXT, b"bad", masked=True)
    plain, fast_seen, fast = both_read("client", data, [])
    assert fast_seen == plain
    assert plain[0] == ("text", "ok")
    assert plain[1][:2] == ("close", 1002)
    assert fast.fast_frames == 1


@pytest.mark.parametrize(
    ("closing", "expected"),
    [
        (build(CLOSE, (1000).to_bytes(2, "big") + b"bye", masked=True), ("close", 1000, "bye")),
        # wsproto's own close for a bad frame leaves it looking between frames.
        (build(CONT, b"x", masked=True), ("close", 1002, "unexpected CONTINUATION")),
    ],
)
def test_nothing_is_read_fast_after_a_close(closing: bytes, expected: tuple[Any, ...]) -> None:
    fast = FastFrames(receiver("server"), 1 << 20)
    assert read_all(fast, [closing]) == [expected]
    # Anything that still comes is wsproto's to refuse or ignore, not ours to deliver.
    fast.receive_data(build(TEXT, b"late", masked=True))
    assert not [e for e in fast.events() if isinstance(e, TextMessage)]
    assert fast.fast_frames == 0


def test_between_frames_is_false_when_wsproto_internals_are_unknown() -> None:
    strange = types.SimpleNamespace(
        connection=types.SimpleNamespace(state=ConnectionState.OPEN, _events=deque())
    )
    assert _between_frames(strange) is None  # type: ignore[arg-type]
    assert _between_frames(receiver("server")) == "between messages"


def test_sends_and_state_go_to_wsproto() -> None:
    client, server = open_pair()
    fast = FastFrames(server, 1 << 20)
    assert fast.client is False
    assert fast.state is ConnectionState.OPEN
    client.receive_data(fast.send(Ping(payload=b"x")))
    assert [type(e) for e in client.events()] == [Ping]


# -- FastFrames reads what wsproto reads, for anything ---------------------------

_payloads = st.one_of(
    st.text(max_size=40).map(str.encode),
    st.integers(min_value=120, max_value=70_000).map(lambda n: b"q" * n),
    st.binary(max_size=30),  # often invalid UTF-8 as text
)


@st.composite
def _frames(draw: st.DrawFn, masked: bool) -> bytes:
    kind = draw(st.sampled_from(["text", "binary", "fragmented", "ping", "pong", "odd"]))
    payload = draw(_payloads)
    if kind == "text":
        return build(TEXT, payload, masked=masked)
    if kind == "binary":
        return build(BINARY, payload, masked=masked)
    if kind in ("ping", "pong"):
        return build(PING if kind == "ping" else PONG, payload[:125], masked=masked)
    if kind == "fragmented":
        cut = draw(st.integers(min_value=0, max_value=len(payload)))
        ping = build(PING, b"mid", masked=masked) if draw(st.booleans()) else b""
        first = build(TEXT, payload[:cut], masked=masked, fin=False)
        return first + ping + build(CONT, payload[cut:], masked=masked)
    # A frame with a header wsproto refuses, or the peer's masking.
    first = draw(st.sampled_from([0x81, 0x82, 0xC1, 0x83, 0x80, 0x01]))
    flipped = draw(st.booleans())
    return build(
        first & 0x0F,
        payload[:200],
        masked=masked != flipped,
        fin=bool(first & 0x80),
        rsv=first & 0x70,
    )


@settings(max_examples=300, deadline=None)
@given(
    role=st.sampled_from(["client", "server"]),
    data=st.data(),
    limit=st.sampled_from([100, 1 << 20]),
)
def test_fast_frames_read_what_wsproto_reads(role: str, data: st.DataObject, limit: int) -> None:
    masked = role == "server"
    frames = data.draw(st.lists(_frames(masked), min_size=1, max_size=8))
    wire = b"".join(frames)
    cuts = data.draw(
        st.lists(st.integers(min_value=1, max_value=max(len(wire) - 1, 1)), max_size=6)
    )
    plain, fast_seen, _ = both_read(role, wire, cuts, limit)
    assert fast_seen == plain


@pytest.mark.parametrize("role", ["server", "client"])
def test_fast_frames_lets_go_of_the_finished_handshake(role: str) -> None:
    # An open connection keeps wsproto's handshake (its h11 connection, its
    # queues) for nothing: about 2.5 KiB a connection, on a server with a
    # thousand idle sessions.
    conn = receiver(role)
    handshake = weakref.ref(conn.handshake)
    fast = FastFrames(conn, 1 << 20)
    gc.collect()
    assert handshake() is None
    # The connection reads and answers as before.
    peer_masked = role == "server"
    fast.receive_data(
        build(0x1, b"hello", masked=peer_masked) + build(0x9, b"p", masked=peer_masked)
    )
    events = list(fast.events())
    assert [type(event) for event in events] == [TextMessage, Ping]
    assert fast.state is ConnectionState.OPEN
    assert fast.send(events[1].response())


def test_fast_frames_keeps_a_handshake_that_is_not_finished() -> None:
    server = WSConnection(ConnectionType.SERVER)
    client = WSConnection(ConnectionType.CLIENT)
    server.receive_data(client.send(Request(host="localhost", target="/")))
    handshake = server.handshake
    fast = FastFrames(server, 1 << 20)  # the Request not yet read: still wsproto's
    assert server.handshake is handshake
    assert isinstance(next(fast.events()), Request)


@pytest.mark.parametrize("cut", [10, 11, 12, 13])
@pytest.mark.parametrize("size", [65_537, 70_000])
def test_a_large_frame_cut_inside_its_masking_key_is_read_whole(size: int, cut: int) -> None:
    """Regression (found by the property test above with a saved example): a large
    binary frame whose 64-bit length had come but not all of its masking key was
    taken for read from a wrong offset, and the message was lost."""
    frame = build(BINARY, b"q" * size, masked=True)
    plain, fast_seen, _ = both_read("server", frame, [cut])
    assert plain == [("bytes", b"q" * size)]
    assert fast_seen == plain
