"""HTTP/1.1 client rate on Trio against hypercorn: httpx, httpcore, and tether's h11 pool.

Run from the repository root::

    .venv/bin/python -m bench.http_clients                 # full run, about 90 seconds
    .venv/bin/python -m bench.http_clients --quick         # a few seconds, for a smoke test
    .venv/bin/python -m bench.http_clients --json out.json # also write the results as JSON

Measured, in requests per second, for a fixed number of requests per round:

* the server: hypercorn (`hypercorn.trio.serve`, 127.0.0.1, an OS-chosen port,
  `keep_alive_timeout=75`, no limit on requests per connection) serving a bare
  ASGI app that reads the JSON body with orjson and answers
  `orjson.dumps({"ok": value})` as application/json;
* three clients, each making `POST /echo` with a small JSON body, checking the
  status and decoding the answer with orjson:
  - httpx: `httpx.AsyncClient()` with its default pool (HTTP/1.1, 100
    connections, of which 20 are kept alive);
  - httpcore: `httpcore.AsyncConnectionPool(max_connections=100)` used directly
    (its default is 10 connections);
  - tether h11: `tether.transports.http._pool.ConnectionPool` (100 connections);
* two modes: sequential (one caller), and 64 concurrent callers (64 tasks in a
  nursery sharing the client, each making N/64 requests).

The server runs in the same process and the same Trio loop as the client, as in
tether's tests: every request pays for hypercorn as well, so the rates are lower
than a client alone would reach, and the ratios between clients understate their
difference. The cases are interleaved (reversed every other round) for several
rounds with the same count in every round; the table shows the best round and
the median.
"""

from __future__ import annotations

import argparse
import gc
import json
import statistics
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager
from functools import partial
from pathlib import Path
from typing import Any, Literal

import attrs
import h11
import httpcore
import httpx
import orjson
import trio
from hypercorn.config import Config
from hypercorn.trio import serve

from bench.inprocess import CONCURRENCY, format_machine, format_rate, machine_info, markdown_table
from tether.transports.http._pool import ConnectionPool

Mode = Literal["sequential", "concurrent"]
ClientName = Literal["httpx", "httpcore", "tether-h11"]

MODES: tuple[Mode, ...] = ("sequential", "concurrent")
CLIENTS: tuple[ClientName, ...] = ("httpx", "httpcore", "tether-h11")

#: Requests per round, full and --quick; the concurrent counts are multiples of
#: CONCURRENCY. Sized so that the full run stays under two minutes on a small
#: 2-core machine, where the slowest case does about 400 requests per second.
COUNTS: dict[Mode, int] = {"sequential": 1536, "concurrent": 2048}
QUICK_COUNTS: dict[Mode, int] = {"sequential": 300, "concurrent": 640}

_MODE_LABELS: dict[Mode, str] = {
    "sequential": "sequential",
    "concurrent": f"{CONCURRENCY} concurrent",
}
_CLIENT_LABELS: dict[ClientName, str] = {
    "httpx": f"httpx {httpx.__version__} AsyncClient",
    "httpcore": f"httpcore {httpcore.__version__} AsyncConnectionPool",
    "tether-h11": f"tether h11 pool (h11 {h11.__version__})",
}

#: What each request sends, and what the answer must decode to.
PAYLOAD = {"robot": "R2-D2", "x": 3, "y": 4, "tags": ["astromech", "blue"]}
EXPECTED = {"ok": PAYLOAD}
CONTENT_TYPE = "application/json"

#: One request: sends PAYLOAD, returns the decoded answer.
Op = Callable[[], Awaitable[Any]]

Scope = dict[str, Any]
Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]


# ---------------------------------------------------------------------------
# The server


async def echo_app(scope: Scope, receive: Receive, send: Send) -> None:
    """A bare ASGI app: `{"ok": <the JSON body>}` for any request."""
    if scope["type"] == "lifespan":
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await send({"type": "lifespan.shutdown.complete"})
                return
    body = b""
    while True:
        message = await receive()
        body += message.get("body", b"")
        if not message.get("more_body", False):
            break
    answer = orjson.dumps({"ok": orjson.loads(body)})
    await send(
        {
            "type": "http.response.start",
            "status": 200,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", b"%d" % len(answer)),
            ],
        }
    )
    await send({"type": "http.response.body", "body": answer})


def server_config() -> Config:
    config = Config()
    config.bind = ["127.0.0.1:0"]
    config.keep_alive_timeout = 75
    config.keep_alive_max_requests = 2**62
    config.loglevel = "WARNING"
    return config


# ---------------------------------------------------------------------------
# The clients


@asynccontextmanager
async def open_clients(port: int) -> AsyncIterator[dict[ClientName, Op]]:
    """The three clients, each as an op making one request."""
    url = f"http://127.0.0.1:{port}/echo"
    headers = {"content-type": CONTENT_TYPE}
    h11_headers = [(b"content-type", CONTENT_TYPE.encode())]
    pool = ConnectionPool("127.0.0.1", port)

    async with (
        httpx.AsyncClient() as client,
        httpcore.AsyncConnectionPool(max_connections=100) as core,
    ):

        async def via_httpx() -> Any:
            response = await client.post(url, content=orjson.dumps(PAYLOAD), headers=headers)
            if response.status_code != 200:
                raise AssertionError(f"httpx: status {response.status_code}")
            return orjson.loads(response.content)

        async def via_httpcore() -> Any:
            response = await core.request(
                "POST", url, headers=headers, content=orjson.dumps(PAYLOAD)
            )
            if response.status != 200:
                raise AssertionError(f"httpcore: status {response.status}")
            return orjson.loads(response.content)

        async def via_h11_pool() -> Any:
            response = await pool.request(b"POST", b"/echo", h11_headers, orjson.dumps(PAYLOAD))
            if response.status != 200:
                raise AssertionError(f"tether h11: status {response.status}")
            return orjson.loads(response.body)

        try:
            yield {"httpx": via_httpx, "httpcore": via_httpcore, "tether-h11": via_h11_pool}
        finally:
            await pool.aclose()


# ---------------------------------------------------------------------------
# Measuring


@attrs.define
class Case:
    """One cell of the table: a client and a mode."""

    client: ClientName
    mode: Mode
    rates: list[float] = attrs.field(factory=list)

    @property
    def best(self) -> float:
        return max(self.rates)

    @property
    def median(self) -> float:
        return statistics.median(self.rates)


async def _make_requests(op: Op, count: int) -> None:
    for _ in range(count):
        await op()


async def measure(op: Op, mode: Mode, count: int) -> float:
    """Make `count` requests (split over the callers) and return requests per second."""
    callers = CONCURRENCY if mode == "concurrent" else 1
    per_caller = count // callers
    gc.collect()
    started = time.perf_counter()
    if callers == 1:
        await _make_requests(op, per_caller)
    else:
        async with trio.open_nursery() as nursery:
            for _ in range(callers):
                nursery.start_soon(_make_requests, op, per_caller)
    return per_caller * callers / (time.perf_counter() - started)


async def run_cases(rounds: int, counts: dict[Mode, int]) -> list[Case]:
    """Start hypercorn, check every client's answer, warm up, then measure `rounds` times."""
    cases = [Case(client, mode) for mode in MODES for client in CLIENTS]
    shutdown = trio.Event()
    async with trio.open_nursery() as nursery:
        urls = await nursery.start(
            partial(serve, echo_app, server_config(), shutdown_trigger=shutdown.wait)
        )
        port = int(urls[0].rsplit(":", 1)[1])
        async with open_clients(port) as ops:
            for name, op in ops.items():
                answer = await op()
                if answer != EXPECTED:
                    raise AssertionError(f"{name}: got {answer!r}")
            # Warm up every case (connections opened, code paths hot).
            for case in cases:
                await measure(ops[case.client], case.mode, CONCURRENCY * 4)

            groups = [[c for c in cases if c.mode == mode] for mode in MODES]
            for index in range(rounds):
                print(f"round {index + 1}/{rounds}", file=sys.stderr, flush=True)
                for group in groups:
                    for case in group if index % 2 == 0 else reversed(group):
                        rate = await measure(ops[case.client], case.mode, counts[case.mode])
                        case.rates.append(rate)
        shutdown.set()
    return cases


# ---------------------------------------------------------------------------
# Reporting


def find(cases: Sequence[Case], client: ClientName, mode: Mode) -> Case:
    return next(c for c in cases if (c.client, c.mode) == (client, mode))


def results_table(cases: Sequence[Case]) -> str:
    headers = ["client"]
    for mode in MODES:
        headers += [f"{_MODE_LABELS[mode]}, req/s (best)", "median", "vs httpx"]
    rows = []
    for client in CLIENTS:
        row = [_CLIENT_LABELS[client]]
        for mode in MODES:
            case = find(cases, client, mode)
            ratio = case.best / find(cases, "httpx", mode).best
            row += [format_rate(case.best), format_rate(case.median), f"{ratio:.2f}"]
        rows.append(row)
    return markdown_table(headers, rows)


def to_json(
    cases: Sequence[Case], info: dict[str, Any], rounds: int, counts: dict[Mode, int], wall: float
) -> dict[str, Any]:
    return {
        "machine": info,
        "rounds": rounds,
        "concurrency": CONCURRENCY,
        "requests_per_round": counts,
        "wall_seconds": wall,
        "server": "hypercorn.trio.serve in the same process and Trio loop",
        "cases": [
            {
                "client": case.client,
                "mode": case.mode,
                "label": _CLIENT_LABELS[case.client],
                "rates": case.rates,
                "best": case.best,
                "median": case.median,
            }
            for case in cases
        ],
    }


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m bench.http_clients", description=(__doc__ or "").split("\n\n")[0]
    )
    parser.add_argument("--quick", action="store_true", help="a short run (a few seconds)")
    parser.add_argument("--rounds", type=int, help="measurements per case (default 5, quick 2)")
    parser.add_argument("--json", type=Path, metavar="PATH", help="also write results here")
    args = parser.parse_args(argv)
    rounds: int = args.rounds or (2 if args.quick else 5)
    counts = QUICK_COUNTS if args.quick else COUNTS

    info = machine_info()
    info["httpx"] = httpx.__version__
    info["httpcore"] = httpcore.__version__
    info["h11"] = h11.__version__
    started = time.perf_counter()
    cases = trio.run(run_cases, rounds, counts)
    wall = time.perf_counter() - started

    print(f"\n{format_machine(info)}")
    print(
        f"{rounds} interleaved rounds of {counts['sequential']} sequential and "
        f"{counts['concurrent']} concurrent requests, {wall:.0f} s in all"
    )
    print(
        "The hypercorn server runs in the same process and Trio loop as the client: "
        "every rate includes the server's work.\n"
    )
    print(results_table(cases))
    if args.json is not None:
        args.json.write_text(
            json.dumps(to_json(cases, info, rounds, counts, wall), indent=2) + "\n"
        )
        print(f"\nwrote {args.json}")


if __name__ == "__main__":
    main()
