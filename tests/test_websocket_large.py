"""Large messages over WebSocket: frames the socket cannot take at once.

A send writes a frame straight to the socket when the socket takes it whole;
a larger one is begun there and finished by the sender, or queued for the
connection's writer. Either way every message must arrive whole and in order,
while small calls go on beside it.
"""

from __future__ import annotations

import hashlib

import pytest
import trio

import tether
from tether.runtime._util import open_service_nursery
from tether.transports import http, websocket

MiB = 1024 * 1024


class Blobs(tether.RpcInterface):
    interface_name = "BlobsRpcInterface"
    interface_version = "1.0.0"

    async def digest(self, data: bytes) -> str: ...

    async def make(self, size: int, seed: int) -> bytes: ...

    async def add(self, a: int, b: int) -> int: ...


def _blob(size: int, seed: int) -> bytes:
    return bytes((seed + i) % 251 for i in range(256)) * (size // 256) + bytes(size % 256)


class BlobsImpl(Blobs):
    async def digest(self, data: bytes) -> str:
        return hashlib.sha256(data).hexdigest()

    async def make(self, size: int, seed: int) -> bytes:
        return _blob(size, seed)

    async def add(self, a: int, b: int) -> int:
        return a + b


@pytest.fixture(params=["trio-websocket", "hypercorn"])
def variant(request: pytest.FixtureRequest) -> str:
    return str(request.param)


async def _serve(nursery: trio.Nursery, variant: str, manager: tether.RpcManager) -> str:
    if variant == "trio-websocket":
        url: str = await nursery.start(websocket.serve, manager, "127.0.0.1", 0)
        return url
    base: str = await nursery.start(http.serve, manager, "127.0.0.1", 0)
    return base.replace("http://", "ws://", 1) + "/ws"


async def test_large_messages_arrive_whole_beside_small_calls(variant: str) -> None:
    manager = tether.RpcManager()
    manager.register_impl(Blobs, BlobsImpl)
    sizes = [2 * MiB + 17, MiB, 512 * 1024 + 1]
    with trio.fail_after(30):
        async with open_service_nursery() as nursery:
            url = await _serve(nursery, variant, manager)
            async with websocket.connect(url, interfaces=[Blobs]) as backend:
                blobs = backend.get_client(Blobs)
                digests: dict[int, str] = {}
                made: dict[int, bytes] = {}
                sums: list[int] = []

                async def send_big(index: int, size: int) -> None:
                    digests[index] = await blobs.digest(_blob(size, index))

                async def fetch_big(index: int, size: int) -> None:
                    made[index] = await blobs.make(size, index)

                async def small(count: int) -> None:
                    for i in range(count):
                        sums.append(await blobs.add(i, 1))

                async with trio.open_nursery() as calls:
                    for index, size in enumerate(sizes):
                        calls.start_soon(send_big, index, size)
                        calls.start_soon(fetch_big, index, size)
                    calls.start_soon(small, 50)
            nursery.cancel_scope.cancel()
    for index, size in enumerate(sizes):
        assert digests[index] == hashlib.sha256(_blob(size, index)).hexdigest()
        assert made[index] == _blob(size, index)
    assert sums == [i + 1 for i in range(50)]
