"""Sequential calls over one transport, timed from outside: the A/B yardstick of a change.

Run it under `farm-bench`, once with this checkout and once with another, so
the ratio holds on a noisy machine (docs/performance.md, "The cost of
reliability"):

    farm-bench -n 7 \\
        --vs "env PYTHONPATH=<other>/src:. .venv/bin/python -m bench.call_loop ws 8000" \\
        -- env PYTHONPATH=src:. .venv/bin/python -m bench.call_loop ws 8000

Arguments: the transport (`memory`, `ws` or `http`; the server runs in the same
process, on 127.0.0.1), how many calls, and optionally how many pass-through
interceptors each side runs (default 0: the cost of an interceptor chain, A/B
against 0, and of none at all, against a checkout without them). Prints the
calls per second.
"""

from __future__ import annotations

import sys
import time
from typing import Any

import trio

import tether
from tether.transports import http, memory, websocket


class Api(tether.RpcInterface):
    interface_name = "bench.CallLoop"
    interface_version = "1.0.0"

    async def hello(self, name: str) -> str: ...  # type: ignore[empty-body]


class Impl(Api):
    async def hello(self, name: str) -> str:
        return name


async def _loop(backend: Any, count: int) -> float:
    client = backend.get_client(Api)
    start = time.perf_counter()
    for _ in range(count):
        await client.hello("x")
    return count / (time.perf_counter() - start)


async def _pass(call: Any, proceed: Any) -> Any:
    return await proceed(call)


async def main(kind: str, count: int, interceptors: int = 0) -> None:
    # Without interceptors, exactly the calls a checkout without the keyword makes.
    chain = {"interceptors": [_pass] * interceptors} if interceptors else {}
    manager = tether.RpcManager(**chain)
    manager.register_impl(Api, Impl())
    if kind == "memory":
        async with memory.connect(manager, interfaces=[Api], **chain) as backend:
            rate = await _loop(backend, count)
    else:
        async with trio.open_nursery() as nursery:
            serve = websocket.serve if kind == "ws" else http.serve
            url = await nursery.start(serve, manager, "127.0.0.1", 0)
            connect = websocket.connect if kind == "ws" else http.connect
            async with connect(url, interfaces=[Api], **chain) as backend:
                rate = await _loop(backend, count)
            nursery.cancel_scope.cancel()
    print(f"{kind}: {rate:,.0f} calls/s")


if __name__ == "__main__":
    if len(sys.argv) not in (3, 4) or sys.argv[1] not in ("memory", "ws", "http"):
        sys.exit("usage: python -m bench.call_loop memory|ws|http COUNT [INTERCEPTORS]")
    trio.run(main, sys.argv[1], int(sys.argv[2]), int(sys.argv[3]) if len(sys.argv) == 4 else 0)
