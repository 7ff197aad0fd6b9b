"""docs/wire.md's stream messages are enough for another language's client.

The `websockets` client (not tether's) drives a server stream, a client stream
and a cancel over a tether WebSocket server, writing only the JSON the docs
show: `call` with `credit`, `item`s until `result`; `call`, `ready`, `send`s,
`end`, `result`; and `cancel`, which closes the backend's generator.
"""

from __future__ import annotations

import functools
from collections.abc import AsyncIterator
from typing import Any

import orjson
import trio

import tether
from tether.runtime._util import open_service_nursery
from tether.transports import websocket

TIMEOUT = 10


class Counter(tether.RpcInterface):
    interface_name = "WireCounter"
    interface_version = "1.0.0"

    def count(self, n: int) -> tether.Stream[int]: ...

    async def total(self, values: tether.Stream[int]) -> int: ...


class CounterImpl(Counter):
    def __init__(self) -> None:
        self.closed = trio.Event()

    async def count(self, n: int) -> AsyncIterator[int]:
        try:
            for i in range(n):
                yield i
        finally:
            self.closed.set()

    async def total(self, values: tether.Stream[int]) -> int:
        return sum([v async for v in values])


def exchange(url: str, script: list[tuple[str, Any]]) -> list[Any]:
    """Run `script` with the `websockets` client: ("send", message) or ("recv", None)."""
    from websockets.sync.client import connect

    got: list[Any] = []
    with connect(url) as ws:
        for action, message in script:
            if action == "send":
                ws.send(orjson.dumps(message).decode())
            else:
                got.append(orjson.loads(ws.recv(timeout=TIMEOUT)))
    return got


def call(id_: int, op: str, args: list[Any]) -> dict[str, Any]:
    return {
        "t": "call",
        "id": id_,
        "iface": "WireCounter",
        "ver": "1.0.0",
        "op": op,
        "args": args,
        "ctx": {"activity_id": f"wire-{id_}"},
    }


RECV = ("recv", None)


async def test_another_client_drives_streams_from_the_docs_alone() -> None:
    impl = CounterImpl()
    manager = tether.RpcManager()
    manager.register_impl(Counter, impl)
    script = [
        ("send", {"t": "hello", "protocol": 1}),
        RECV,  # welcome
        # A server stream of 5 with credit for 2: two items, then more credit.
        ("send", call(1, "count", [5])),
        ("send", {"t": "credit", "id": 1, "items": 2, "bytes": 1 << 20}),
        RECV,
        RECV,
        ("send", {"t": "credit", "id": 1, "items": 10, "bytes": 1 << 20}),
        RECV,
        RECV,
        RECV,
        RECV,  # the result that ends it
        # A client stream: the callee grants credit, the caller sends and ends.
        ("send", call(2, "total", [None])),
        RECV,  # ready
        ("send", {"t": "send", "id": 2, "value": 40}),
        ("send", {"t": "send", "id": 2, "value": 2}),
        ("send", {"t": "end", "id": 2}),
        RECV,
        # A long server stream, cancelled after its first item.
        ("send", call(3, "count", [1_000_000])),
        ("send", {"t": "credit", "id": 3, "items": 1, "bytes": 1 << 20}),
        RECV,
        ("send", {"t": "cancel", "id": 3}),
    ]
    with trio.fail_after(TIMEOUT):
        async with open_service_nursery() as nursery:
            url = await nursery.start(functools.partial(websocket.serve, manager, "127.0.0.1", 0))
            got = await trio.to_thread.run_sync(exchange, url, script)
            await impl.closed.wait()  # the cancel closed the generator
            nursery.cancel_scope.cancel()
    welcome, *rest = got
    assert welcome["t"] == "welcome"
    assert rest[:6] == [
        {"t": "item", "id": 1, "value": 0},
        {"t": "item", "id": 1, "value": 1},
        {"t": "item", "id": 1, "value": 2},
        {"t": "item", "id": 1, "value": 3},
        {"t": "item", "id": 1, "value": 4},
        {"t": "result", "id": 1, "value": None},
    ]
    ready, total, first = rest[6:]
    assert ready["t"] == "ready"
    assert ready["id"] == 2
    assert ready["items"] >= 2
    assert ready["bytes"] > 0
    assert total == {"t": "result", "id": 2, "value": 42}
    assert first == {"t": "item", "id": 3, "value": 0}
