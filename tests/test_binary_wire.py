"""bytes on real sockets (127.0.0.1, port 0): how many bytes a 1 MiB argument and result
take on the wire, what a JSON-only WebSocket peer gets, and a binary frame sent by
the `websockets` client following docs/wire.md only."""

from __future__ import annotations

import base64
import functools
import struct
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import orjson
import pytest
import trio
import trio_websocket

import tether
from tether.runtime._util import open_service_nursery
from tether.transports import http, websocket

TIMEOUT = 20.0
MIB = 1024 * 1024


class Blobs(tether.RpcInterface):
    interface_name = "Blobs"
    interface_version = "1.0.0"

    async def mirror(self, data: bytes) -> bytes: ...
    async def sizes(self, key: str, parts: list[bytes]) -> dict[str, int]: ...


class BlobsImpl(Blobs):
    async def mirror(self, data: bytes) -> bytes:
        return data[::-1]

    async def sizes(self, key: str, parts: list[bytes]) -> dict[str, int]:
        return {key: sum(map(len, parts))}


def _manager() -> tether.RpcManager:
    manager = tether.RpcManager()
    manager.register_impl(Blobs, BlobsImpl())
    return manager


class Counter:
    """A TCP relay in front of a server that counts the bytes it moves each way."""

    def __init__(self, target: int) -> None:
        self.target = target
        self.up = 0  # client -> server
        self.down = 0  # server -> client

    async def _pump(self, source: trio.SocketStream, sink: trio.SocketStream, up: bool) -> None:
        try:
            while True:
                data = await source.receive_some(256 * 1024)
                if not data:
                    break
                if up:
                    self.up += len(data)
                else:
                    self.down += len(data)
                await sink.send_all(data)
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            pass
        finally:
            await trio.aclose_forcefully(sink)

    async def handle(self, client: trio.SocketStream) -> None:
        server = await trio.open_tcp_stream("127.0.0.1", self.target)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self._pump, client, server, True)
            nursery.start_soon(self._pump, server, client, False)


@asynccontextmanager
async def _counted(port: int) -> AsyncIterator[tuple[Counter, int]]:
    counter = Counter(port)
    async with open_service_nursery() as nursery:
        listeners = await nursery.start(
            functools.partial(trio.serve_tcp, counter.handle, 0, host="127.0.0.1")
        )
        yield counter, listeners[0].socket.getsockname()[1]
        nursery.cancel_scope.cancel()


@asynccontextmanager
async def _server(kind: str) -> AsyncIterator[int]:
    """Serve Blobs on 127.0.0.1:0 (`websocket.serve`, or hypercorn); yield the port."""
    async with open_service_nursery() as nursery:
        if kind == "websocket":
            url = await nursery.start(
                lambda task_status: websocket.serve(
                    _manager(), "127.0.0.1", 0, task_status=task_status
                )
            )
        else:
            url = await nursery.start(
                lambda task_status: http.serve(_manager(), "127.0.0.1", 0, task_status=task_status)
            )
        yield int(url.split(":")[2].split("/")[0])
        nursery.cancel_scope.cancel()


@pytest.mark.parametrize("kind", ["websocket", "websocket-hypercorn", "http"])
async def test_a_mebibyte_each_way_is_at_most_one_percent_more_on_the_socket(kind: str) -> None:
    """1 MiB argument + 1 MiB result: every byte on the socket, handshakes and headers
    included, is at most 1.01x the 2 MiB of payload (base64 in JSON would be 1.33x)."""
    data = bytes(range(256)) * 4096
    with trio.fail_after(TIMEOUT):
        async with (
            _server("http" if kind != "websocket" else "websocket") as port,
            _counted(port) as (counter, relay),
        ):
            if kind == "http":
                connect = http.connect(f"http://127.0.0.1:{relay}/rpc", interfaces=[Blobs])
            elif kind == "websocket":
                connect = websocket.connect(f"ws://127.0.0.1:{relay}/", interfaces=[Blobs])
            else:
                connect = websocket.connect(f"ws://127.0.0.1:{relay}/rpc/ws", interfaces=[Blobs])
            async with connect as backend:
                before = counter.up + counter.down
                assert await backend.get_client(Blobs).mirror(data) == data[::-1]
                call = counter.up + counter.down - before
            total = counter.up + counter.down
    payload = 2 * MIB
    assert call <= 1.01 * payload, (call, counter.up, counter.down)
    assert total <= 1.01 * payload, (total, counter.up, counter.down)
    assert counter.up >= MIB
    assert counter.down >= MIB


@pytest.mark.parametrize("client", ["websockets", "trio-websocket"])
async def test_a_json_only_websocket_peer_gets_base64_in_text_frames(client: str) -> None:
    """A peer whose hello does not say `"binary": true` is sent text frames only,
    bytes as standard base64, and may send base64 itself."""
    data = bytes(range(256)) * 64
    call = {
        "t": "call",
        "id": 1,
        "iface": "Blobs",
        "ver": "1.0.0",
        "op": "mirror",
        "args": [base64.b64encode(data).decode()],
        "ctx": {},
    }
    hello = {"t": "hello", "protocol": 1}
    with trio.fail_after(TIMEOUT):
        async with _server("websocket") as port:
            url = f"ws://127.0.0.1:{port}/"
            if client == "websockets":
                frames = await trio.to_thread.run_sync(_websockets_exchange, url, [hello, call])
            else:
                async with trio_websocket.open_websocket_url(url) as ws:
                    frames = []
                    for message in (hello, call):
                        await ws.send_message(orjson.dumps(message).decode())
                        frames.append(await ws.get_message())
    welcome, result = frames
    assert isinstance(welcome, str)
    assert "binary" not in orjson.loads(welcome)
    assert isinstance(result, str)
    assert orjson.loads(result) == {
        "t": "result",
        "id": 1,
        "value": base64.b64encode(data[::-1]).decode(),
    }


def _websockets_exchange(url: str, messages: list[Any]) -> list[str | bytes]:
    """Send each message as a text frame with the `websockets` client; collect the answers."""
    from websockets.sync.client import connect

    out: list[str | bytes] = []
    with connect(url, max_size=4 * MIB) as ws:
        for message in messages:
            if isinstance(message, bytes):
                ws.send(message)  # bytes: a binary frame
            else:
                ws.send(orjson.dumps(message).decode())
            out.append(ws.recv(timeout=TIMEOUT))
    return out


def _frame(envelope: dict[str, Any], *attachments: bytes) -> bytes:
    """A binary frame as docs/wire.md lays it out, written from the docs alone."""
    body = orjson.dumps(envelope)
    return struct.pack(">I", len(body)) + body + b"".join(attachments)


def _unframe(frame: bytes) -> tuple[dict[str, Any], list[bytes]]:
    (length,) = struct.unpack(">I", frame[:4])
    envelope = orjson.loads(frame[4 : 4 + length])
    attachments, at = [], 4 + length
    for entry in envelope["bin"]:
        attachments.append(frame[at : at + entry["size"]])
        at += entry["size"]
    assert at == len(frame)
    return envelope, attachments


@pytest.mark.parametrize("kind", ["websocket", "websocket-hypercorn"])
async def test_the_websockets_client_drives_a_binary_frame_following_the_docs(kind: str) -> None:
    """docs/wire.md's recipe with another WebSocket library: say `"binary": true` in the
    hello, send a call as a binary frame, read the result's binary frame."""
    first, second = b"\x00\x01" * 1000, b"\xff" * 3
    hello = {"t": "hello", "protocol": 1, "binary": True}
    call = _frame(
        {
            "t": "call",
            "id": 7,
            "iface": "Blobs",
            "ver": "1.0.0",
            "op": "mirror",
            "args": [None],
            "ctx": {"activity_id": "docs-1"},
            "bin": [{"path": ["args", 0], "size": len(first)}],
        },
        first,
    )
    sizes = _frame(
        {
            "t": "call",
            "id": 8,
            "iface": "Blobs",
            "ver": "1.0.0",
            "op": "sizes",
            "args": ["k", [None, "/w=="]],  # bytes may also come as base64 text
            "ctx": {},
            "bin": [{"path": ["args", 1, 0], "size": len(second)}],
        },
        second,
    )
    with trio.fail_after(TIMEOUT):
        async with _server("http" if kind != "websocket" else "websocket") as port:
            path = "/" if kind == "websocket" else "/rpc/ws"
            welcome, result, counted = await trio.to_thread.run_sync(
                _websockets_exchange, f"ws://127.0.0.1:{port}{path}", [hello, call, sizes]
            )
    assert isinstance(welcome, str)
    assert orjson.loads(welcome)["binary"] is True
    assert isinstance(result, bytes)
    envelope, attachments = _unframe(result)
    assert envelope == {
        "t": "result",
        "id": 7,
        "value": None,
        "bin": [{"path": ["value"], "size": len(first)}],
    }
    assert attachments == [first[::-1]]
    # No bytes in the result: plain JSON, in a text frame.
    assert isinstance(counted, str)
    assert orjson.loads(counted) == {"t": "result", "id": 8, "value": {"k": 4}}


def _post(url: str, body: bytes, headers: dict[str, str]) -> Any:
    import httpx

    return httpx.post(url, content=body, headers=headers, timeout=TIMEOUT)


async def test_http_takes_a_frame_body_and_answers_a_frame_when_accept_names_it() -> None:
    """docs/wire.md's HTTP forms: a frame body `{"args": [...]}` in, the `result` frame out;
    JSON with base64 for a client that does not ask for frames."""
    data = b"\x00\x01\x02" * 1000
    body = _frame({"args": [None], "bin": [{"path": ["args", 0], "size": len(data)}]}, data)
    with trio.fail_after(TIMEOUT):
        async with _server("http") as port:
            url = f"http://127.0.0.1:{port}/rpc/Blobs/1.0.0/mirror"
            framed = await trio.to_thread.run_sync(
                _post,
                url,
                body,
                {
                    "Content-Type": "application/vnd.tether.frame",
                    "Accept": "application/vnd.tether.frame, application/json",
                },
            )
            plain = await trio.to_thread.run_sync(
                _post, url, body, {"Content-Type": "application/vnd.tether.frame"}
            )
            json_in = await trio.to_thread.run_sync(
                _post,
                url,
                orjson.dumps([base64.b64encode(data).decode()]),
                {"Content-Type": "application/json"},
            )
            cross_site = await trio.to_thread.run_sync(
                _post,
                url,
                body,
                {"Content-Type": "application/vnd.tether.frame", "Origin": "http://evil.example"},
            )
            other_type = await trio.to_thread.run_sync(
                _post, url, body, {"Content-Type": "application/octet-stream"}
            )
    assert framed.status_code == 200
    assert framed.headers["content-type"] == "application/vnd.tether.frame"
    envelope, attachments = _unframe(framed.content)
    assert envelope["value"] is None
    assert envelope["bin"] == [{"path": ["value"], "size": len(data)}]
    assert attachments == [data[::-1]]
    for response in (plain, json_in):
        assert response.status_code == 200
        assert response.headers["content-type"] == "application/json"
        assert response.json() == base64.b64encode(data[::-1]).decode()
    assert cross_site.status_code == 403  # a page on another site runs nothing
    assert other_type.status_code == 415
    assert "application/vnd.tether.frame" in other_type.json()["error"]["message"]


async def test_http_refuses_a_malformed_frame_body_as_bad_request() -> None:
    body = _frame({"args": [None], "bin": [{"path": ["args", 0], "size": 10}]}, b"short")
    with trio.fail_after(TIMEOUT):
        async with _server("http") as port:
            url = f"http://127.0.0.1:{port}/rpc/Blobs/1.0.0/mirror"
            bad = await trio.to_thread.run_sync(
                _post, url, body, {"Content-Type": "application/vnd.tether.frame"}
            )
            no_args = await trio.to_thread.run_sync(
                _post, url, _frame({"value": 1}), {"Content-Type": "application/vnd.tether.frame"}
            )
    assert bad.status_code == 400
    assert "lists 10 bytes of attachments, the frame carries 5" in bad.json()["error"]["message"]
    assert no_args.status_code == 400
    assert '{"args": [...]}' in no_args.json()["error"]["message"]
