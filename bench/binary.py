"""A 1 MiB bytes round trip: `mirror(data: bytes) -> bytes` on every transport.

Run from the repository root::

    .venv/bin/python -m bench.binary                  # full run, about 20 seconds
    .venv/bin/python -m bench.binary --quick          # a few seconds, for a smoke test
    .venv/bin/python -m bench.binary --json out.json  # also write the results as JSON

Measured, in one run: the latency of one call whose argument is 1 MiB of
`bytes` and whose result is the same 1 MiB reversed (so 2 MiB cross the
transport per call), sequential, over one connection each of:

* in-process: `memory.connect` in the same Trio loop, and with `thread=True`;
* WebSocket: `websocket.serve` (trio-websocket's server) on 127.0.0.1, port 0,
  and the `websocket.connect` client;
* HTTP: `http.serve` (hypercorn) on 127.0.0.1, port 0, and the `http.connect`
  client;
* local: `local.serve` on a Unix socket in a temporary directory, and the
  `local.connect` client.

Servers and clients share one process and one Trio loop (the thread mode's
backend has its own). The script uses only the public API, so it runs
unchanged on an older tether: that is how the "before" numbers of
docs/performance.md were taken (bytes as base85 text inside JSON then; raw
beside the JSON now). The cases are interleaved for several rounds; the table
shows the best round (lowest mean latency) and the median. The issue's
target is "latency before and after": nothing is PASS or FAIL here.
"""

from __future__ import annotations

import argparse
import functools
import json
import statistics
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import AsyncExitStack, asynccontextmanager
from pathlib import Path
from typing import Any

import trio

import tether
from bench.inprocess import format_machine, machine_info, markdown_table
from tether.transports import http, local, memory, websocket

#: Bytes in each direction per call.
SIZE = 1024 * 1024
#: Calls per case per round.
CALLS = 20
QUICK_CALLS = 5
#: Rounds (each case measured once per round, interleaved).
ROUNDS = 5
QUICK_ROUNDS = 2
WARMUP_CALLS = 3

CASES = ("memory", "memory, thread=True", "websocket", "http", "local")


class BinaryBench(tether.RpcInterface):
    interface_name = "BinaryBench"
    interface_version = "1.0.0"

    async def mirror(self, data: bytes) -> bytes: ...


class BinaryBenchImpl(BinaryBench):
    async def mirror(self, data: bytes) -> bytes:
        return data[::-1]


def make_manager() -> tether.RpcManager:
    manager = tether.RpcManager()
    manager.register_impl(BinaryBench, BinaryBenchImpl())
    return manager


Call = Callable[[bytes], Awaitable[bytes]]


@asynccontextmanager
async def open_calls() -> AsyncIterator[dict[str, Call]]:
    """Serve and connect every case; yield each one's `mirror`."""
    calls: dict[str, Call] = {}
    async with trio.open_nursery() as nursery, AsyncExitStack() as stack:
        interfaces = [BinaryBench]
        same_loop = await stack.enter_async_context(
            memory.connect(make_manager(), interfaces=interfaces)
        )
        threaded = await stack.enter_async_context(
            memory.connect(make_manager(), interfaces=interfaces, thread=True)
        )
        ws_url = await nursery.start(
            functools.partial(websocket.serve, make_manager(), "127.0.0.1", 0)
        )
        ws = await stack.enter_async_context(websocket.connect(ws_url, interfaces=interfaces))
        http_url = await nursery.start(
            functools.partial(http.serve, make_manager(), "127.0.0.1", 0)
        )
        over_http = await stack.enter_async_context(http.connect(http_url, interfaces=interfaces))
        directory = stack.enter_context(tempfile.TemporaryDirectory(prefix="tether-bench-"))
        path = await nursery.start(
            functools.partial(local.serve, make_manager(), str(Path(directory) / "bench.sock"))
        )
        over_local = await stack.enter_async_context(local.connect(path, interfaces=interfaces))
        for name, backend in zip(
            CASES, (same_loop, threaded, ws, over_http, over_local), strict=True
        ):
            calls[name] = backend.get_client(BinaryBench).mirror
        yield calls
        await stack.aclose()  # the clients first, then the servers
        nursery.cancel_scope.cancel()


async def measure(call: Call, data: bytes, expected: bytes, count: int) -> float:
    """Mean seconds per call over `count` sequential calls."""
    start = time.perf_counter()
    for _ in range(count):
        if await call(data) != expected:
            raise AssertionError("wrong result")
    return (time.perf_counter() - start) / count


async def run(calls_per_round: int, rounds: int) -> dict[str, list[float]]:
    data = bytes(range(256)) * (SIZE // 256)
    expected = data[::-1]
    results: dict[str, list[float]] = {name: [] for name in CASES}
    async with open_calls() as calls:
        for call in calls.values():
            await measure(call, data, expected, WARMUP_CALLS)
        for _ in range(rounds):
            for name in CASES:
                results[name].append(await measure(calls[name], data, expected, calls_per_round))
    return results


def report(results: dict[str, list[float]]) -> str:
    rows = []
    for name in CASES:
        times = results[name]
        rows.append(
            [
                name,
                f"{min(times) * 1000:.1f}",
                f"{statistics.median(times) * 1000:.1f}",
            ]
        )
    return markdown_table(
        ["1 MiB bytes argument + 1 MiB result", "ms per call (best)", "median"], rows
    )


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--quick", action="store_true", help="a short run (a few seconds)")
    parser.add_argument(
        "--rounds", type=int, help=f"rounds (default {ROUNDS}, quick {QUICK_ROUNDS})"
    )
    parser.add_argument("--json", type=Path, metavar="PATH", help="also write results here")
    args = parser.parse_args(argv)
    rounds = args.rounds or (QUICK_ROUNDS if args.quick else ROUNDS)
    calls = QUICK_CALLS if args.quick else CALLS
    results = trio.run(run, calls, rounds)
    info = machine_info()
    print(format_machine(info))
    print(f"{calls} calls per case per round, {rounds} rounds, interleaved")
    print()
    print(report(results))
    if args.json is not None:
        out: dict[str, Any] = {"machine": info, "calls": calls, "rounds": rounds}
        out["cases"] = {
            name: {
                "best_ms": min(times) * 1000,
                "median_ms": statistics.median(times) * 1000,
                "rounds_ms": [t * 1000 for t in times],
            }
            for name, times in results.items()
        }
        args.json.write_text(json.dumps(out, indent=2))
    sys.stdout.flush()


if __name__ == "__main__":
    main()
