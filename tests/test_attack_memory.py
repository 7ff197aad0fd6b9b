"""What anyone can make a server keep after their requests are answered: nothing that grows.

The client here is anonymous and every request it sends is answered; what it
tries is to leave something behind each time (a cache entry, a queued
message), so that the server's memory grows with the number of requests.
Memory is measured with tracemalloc around real servers on 127.0.0.1.
"""

from __future__ import annotations

import functools
import gc
import tracemalloc
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager

import httpx
import trio
import trio_websocket
from test_http_ipc_memory import JSON_TYPE as JSON
from test_http_ipc_memory import served as served_app

import tether
from tether.runtime._protocol import Call, CallContext, Hello, decode, encode
from tether.runtime._util import open_service_nursery
from tether.transports import http, websocket

KiB = 1024


class Counter(tether.RpcInterface):
    interface_name = "attack.Counter"
    interface_version = "1.0.0"

    async def bump(self) -> int: ...


class CounterImpl(Counter):
    async def bump(self) -> int:
        return 1


def manager() -> tether.RpcManager:
    served = tether.RpcManager()
    served.register_impl(Counter, CounterImpl())
    return served


@asynccontextmanager
async def serving(serve: object) -> AsyncIterator[str]:
    async with open_service_nursery() as nursery:
        url: str = await nursery.start(functools.partial(serve, manager(), "127.0.0.1", 0))  # type: ignore[call-overload]
        yield url
        nursery.cancel_scope.cancel()


class Held:
    """Bytes tracemalloc sees held since `mark()`."""

    def __init__(self) -> None:
        self.base = 0

    def mark(self) -> None:
        gc.collect()
        self.base = tracemalloc.get_traced_memory()[0]

    def since(self) -> int:
        gc.collect()
        return tracemalloc.get_traced_memory()[0] - self.base


@contextmanager
def traced() -> Iterator[Held]:
    tracemalloc.start()
    try:
        yield Held()
    finally:
        tracemalloc.stop()


def version(n: int, length: int) -> str:
    """A distinct, valid semantic version of about `length` characters (prerelease `-v…n`)."""
    return f"1.0.0-v{'x' * (length - 20)}{n}"


async def test_distinct_client_versions_over_http_leave_nothing_behind() -> None:
    """The dispatcher remembered every (interface, version) pair it ever saw, for as
    long as the server ran: 2,000 requests with new versions held 700 KiB more."""
    with trio.fail_after(60), traced() as held:
        async with serving(http.serve) as url, httpx.AsyncClient(base_url=url) as client:

            async def calls(start: int, count: int) -> None:
                for n in range(start, start + count):
                    path = f"/{Counter.interface_name}/{version(n, 200)}/bump"
                    response = await client.post(
                        path, content=b"[]", headers={"content-type": "application/json"}
                    )
                    assert response.status_code == 403, response.text  # a prerelease: incompatible

            await calls(0, 2000)  # the server's bounded caches fill up
            held.mark()
            await calls(2000, 2000)
            grown = held.since()
    assert grown < 150 * KiB, f"{grown / KiB:.0f} KiB more held after 2,000 more versions"


async def test_long_client_versions_are_refused_and_not_kept() -> None:
    """A version string of any length was parsed and cached (twice, in lru_caches
    of 1,024 entries): 100 calls with 64 KiB versions left 12 MiB behind for good."""
    replies = []
    with trio.fail_after(60), traced() as held:
        async with serving(websocket.serve) as url:
            held.mark()
            async with trio_websocket.open_websocket_url(url) as ws:
                await ws.send_message(encode(Hello(1)).decode())
                await ws.get_message()
                for n in range(100):
                    call = Call(
                        n, Counter.interface_name, version(n, 64 * KiB), "bump", [], CallContext()
                    )
                    await ws.send_message(encode(call).decode())
                    replies.append(decode(await ws.get_message()))
            grown = held.since()
    assert grown < 1024 * KiB, f"{grown / KiB:.0f} KiB held after the connection closed"
    error = replies[0].error  # type: ignore[union-attr]
    assert (error.code, error.details["field"]) == ("bad-request", "ver")
    assert "256 characters" in error.message


MiB = 1024 * KiB


async def test_messages_posted_to_an_http_ipc_session_wait_bounded_in_bytes() -> None:
    """The queue of POSTed messages a session had not read yet was bounded at 64
    messages of any size: up to 64 x 16 MiB (1 GiB) per session while its
    listeners were busy."""
    release = trio.Event()
    backend = tether.BackendIpc(slow_frontend_timeout=60)

    async def busy_listener(method: str, *args: object) -> None:
        await release.wait()  # the session's reader stops: its inbox is full

    backend.add_listener("attack.sink", busy_listener)
    app = http.HttpApp(None, ipc=backend)
    note = b'{"t":"notify","channel":"attack.sink","method":"put","args":["%s"]}' % (b"x" * MiB)
    taken = 0
    with trio.fail_after(60):
        async with (
            served_app(app) as origin,
            httpx.AsyncClient(base_url=origin, headers=JSON) as client,
        ):
            opened = await client.post("/rpc/ipc", content=encode(Hello(1, mode="ipc")))
            session, token = opened.json()["session_id"], opened.json()["token"]
            assert app._ipc is not None
            stream = app._ipc._sessions[session].stream
            for _ in range(20):
                with trio.move_on_after(1.0) as waited:
                    posted = await client.post(
                        f"/rpc/ipc/{session}", content=note, headers={"x-session-token": token}
                    )
                    assert posted.status_code == 202
                    taken += 1
                if waited.cancelled_caught:
                    break  # the POST waits for room: the queue is full
            held = sum(len(message) for message in stream.inbound)
            release.set()
    assert held <= 4 * MiB + len(note), f"{held / MiB:.0f} MiB of POSTed messages queued"
    assert taken < 20
