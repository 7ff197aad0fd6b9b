"""Round-robin against least-in-flight over two HTTP backends, one of them slow.

Two `http.serve` backends run in this process on 127.0.0.1: "fast" answers at
once, "slow" sleeps SLOW_MS before answering (a busy or remote backend). WORKERS
concurrent callers make CALLS calls in all through `http.connect([...])`, once
per balance, and this prints calls/s, the p50/p99 latency and how the calls
were shared:

    PYTHONPATH=src:. .venv/bin/python -m bench.backend_group [CALLS] [WORKERS] [SLOW_MS]

Defaults: 2000 calls, 16 workers, 20 ms.
"""

from __future__ import annotations

import sys
import time
from collections import Counter

import trio

import tether
from tether.transports import http


class Api(tether.RpcInterface):
    interface_name = "bench.Group"
    interface_version = "1.0.0"

    async def name(self) -> str: ...


class Impl(Api):
    def __init__(self, label: str, delay: float) -> None:
        self.label = label
        self.delay = delay

    async def name(self) -> str:
        if self.delay:
            await trio.sleep(self.delay)
        return self.label


async def run(urls: list[str], balance: str, calls: int, workers: int) -> None:
    latencies: list[float] = []
    shares: Counter[str] = Counter()
    async with http.connect(urls, interfaces=[Api], balance=balance) as group:  # type: ignore[arg-type]
        client = group.get_client(Api)
        left = calls

        async def worker() -> None:
            nonlocal left
            while left > 0:
                left -= 1
                start = time.perf_counter()
                shares[await client.name()] += 1
                latencies.append(time.perf_counter() - start)

        start = time.perf_counter()
        async with trio.open_nursery() as nursery:
            for _ in range(workers):
                nursery.start_soon(worker)
        elapsed = time.perf_counter() - start
    latencies.sort()
    p50 = latencies[len(latencies) // 2] * 1000
    p99 = latencies[int(len(latencies) * 0.99)] * 1000
    print(
        f"{balance:16} {len(latencies) / elapsed:7.0f} calls/s  p50 {p50:6.1f} ms  "
        f"p99 {p99:6.1f} ms  fast {shares['fast']:5d}  slow {shares['slow']:5d}"
    )


async def main(calls: int, workers: int, slow_ms: float) -> None:
    async with trio.open_nursery() as nursery:
        urls = []
        for label, delay in (("fast", 0.0), ("slow", slow_ms / 1000)):
            manager = tether.RpcManager()
            manager.register_impl(Api, Impl(label, delay))
            urls.append(await nursery.start(http.serve, manager, "127.0.0.1", 0))
        for balance in ("round-robin", "least-in-flight"):
            await run(urls, balance, calls, workers)
        nursery.cancel_scope.cancel()


if __name__ == "__main__":
    args = [float(a) for a in sys.argv[1:]]
    trio.run(
        main,
        int(args[0]) if args else 2000,
        int(args[1]) if len(args) > 1 else 16,
        args[2] if len(args) > 2 else 20.0,
    )
