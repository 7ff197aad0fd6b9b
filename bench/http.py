"""HTTP RPC call rate: tether's server and client against a bare hypercorn ASGI app.

Run from the repository root::

    .venv/bin/python -m bench.http                  # full run, about 110 seconds
    .venv/bin/python -m bench.http --quick          # about 10 seconds, for a smoke test
    .venv/bin/python -m bench.http --rounds 3       # fewer rounds
    .venv/bin/python -m bench.http --profile        # then profile (about 10 seconds more)
    .venv/bin/python -m bench.http --json out.json  # also write the results as JSON

Measured, in one run, in requests per second:

* two operations: `add(a: int, b: int) -> int` (body `[1,2]`), and
  `echo(robot: Robot) -> Robot` whose argument and result is a small attrs
  frozen class (body `[{"key":"robot-0001","name":"Factory floor"}]`);
* two modes: sequential (one caller), and 64 concurrent callers (64 tasks in a
  nursery, each making N/64 calls through one pool of at most 64 keep-alive
  connections);
* three cases:
  - bare: a raw ASGI app, no framework, that reads the body, `orjson.loads` it,
    does the operation's work and answers `orjson.dumps(result)` as
    application/json; served by `hypercorn.trio.serve` with the same Config as
    `tether.transports.http.serve` (keep-alive 75 s, keep-alive max requests
    1,000,000, no access log, error log to a quiet logger);
  - tether server, raw POST: `http.serve` with an RpcManager, sent the same
    POSTs as bare (same body, and the headers tether's client sends:
    content-type, x-protocol-version, x-correlation-id, traceparent) by the
    same client; the difference from bare is the server's alone;
  - tether end to end: the `http.connect` client stub (`client.add(1, 2)`)
    against `http.serve`, what an application sees.

The HTTP client is tether's h11 connection pool (`http._pool.ConnectionPool`) in
every case. Servers and client run in one process and one Trio loop, on one
core: a request costs the client's work plus the server's, so ratios to bare
understate the server's own gap (the "raw POST" row is the closest to it).

As in `bench.inprocess`, the cases of a group are interleaved for several rounds
(reversed every other round) with the same request count in every round, after a
warm-up; before each measurement every caller makes one untimed request, so the
pool's connections are open. The table shows the best round and the median;
ratios to bare (same operation and mode) are computed from the best rounds.

The target checked at the end (issue: "at least 90% of the bare app's
throughput") is printed as PASS or FAIL for each operation and mode, for the
tether end-to-end case and for the tether server alone; the exit status is 0
either way.

`--profile` then runs the sequential `add` case of each implementation under
cProfile and prints where the time goes: own time by package (tether's server,
client and runtime, hypercorn, h11, trio), scheduling counts per request (run
loop batches, task wake-ups, tasks spawned, cancel scopes), tether's hottest
functions, and the functions whose own time grew most from the bare app to
tether's server.
"""

from __future__ import annotations

import argparse
import cProfile
import gc
import json
import logging
import pstats
import statistics
import sys
import time
from collections import defaultdict
from collections.abc import AsyncIterator, Awaitable, Callable, MutableMapping, Sequence
from contextlib import AsyncExitStack, asynccontextmanager
from importlib.metadata import version
from pathlib import Path
from typing import Any, Literal

import attrs
import orjson
import trio
from hypercorn.config import Config
from hypercorn.trio import serve as hypercorn_serve

import tether
from bench.inprocess import format_machine, format_rate, machine_info, markdown_table
from tether import contexts
from tether.runtime import PROTOCOL_VERSION
from tether.transports import http
from tether.transports.http._pool import ConnectionPool
from tether.transports.http._serve import _KEEP_ALIVE_MAX_REQUESTS

#: Concurrent callers in the "64 concurrent" mode, and the pool's connection limit.
CONCURRENCY = 64
#: tether's rate must be at least this share of the bare app's, in each mode.
TARGET_RATIO = 0.90
#: Requests per round: (sequential, concurrent); and the same for --quick.
REQUESTS = (1500, 3000)
QUICK_REQUESTS = (300, 1000)
#: Seconds one measurement may take before the run fails (rather than hangs).
MEASURE_TIMEOUT = 120.0
#: Seconds starting the servers and connecting may take.
STARTUP_TIMEOUT = 30.0

Mode = Literal["sequential", "concurrent"]
Impl = Literal["bare", "tether-raw", "tether"]
Payload = Literal["add", "echo"]

#: One request: returns the decoded result.
Op = Callable[[], Awaitable[Any]]

PAYLOADS: tuple[Payload, ...] = ("add", "echo")
MODES: tuple[Mode, ...] = ("sequential", "concurrent")
IMPLS: tuple[Impl, ...] = ("bare", "tether-raw", "tether")

_IMPL_LABELS: dict[Impl, str] = {
    "bare": "bare ASGI app, raw POST",
    "tether-raw": "tether server, raw POST",
    "tether": "tether client -> tether server",
}
_PAYLOAD_LABELS: dict[Payload, str] = {
    "add": "add(int, int) -> int",
    "echo": "echo(Robot) -> Robot",
}
_MODE_LABELS: dict[Mode, str] = {
    "sequential": "sequential",
    "concurrent": f"{CONCURRENCY} concurrent",
}


# ---------------------------------------------------------------------------
# The interface, its impl, and the bare app


@attrs.frozen
class Robot:
    """A small attrs argument and result."""

    key: str
    name: str


class BenchApi(tether.RpcInterface):
    interface_name = "BenchApi"
    interface_version = "1.0.0"

    async def add(self, a: int, b: int) -> int: ...

    async def echo(self, robot: Robot) -> Robot: ...


class BenchImpl(BenchApi):
    async def add(self, a: int, b: int) -> int:
        return a + b

    async def echo(self, robot: Robot) -> Robot:
        return robot


ROBOT = Robot(key="robot-0001", name="Factory floor")
#: The JSON array of arguments each payload's requests carry.
BODIES: dict[Payload, bytes] = {
    "add": orjson.dumps([1, 2]),
    "echo": orjson.dumps([attrs.asdict(ROBOT)]),
}
#: What the stub returns, and what the raw POSTs' bodies decode to.
EXPECTED: dict[Payload, Any] = {"add": 3, "echo": ROBOT}
EXPECTED_JSON: dict[Payload, Any] = {"add": 3, "echo": attrs.asdict(ROBOT)}


def make_manager() -> tether.RpcManager:
    manager = tether.RpcManager()
    manager.register_impl(BenchApi, BenchImpl)
    return manager


Scope = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[MutableMapping[str, Any]]]
Send = Callable[[MutableMapping[str, Any]], Awaitable[None]]

_JSON_HEADERS = [(b"content-type", b"application/json")]


async def bare_app(scope: Scope, receive: Receive, send: Send) -> None:
    """The baseline: read the body, decode it, do the work, answer JSON.

    POST `.../add` answers the sum of the two arguments, any other path the
    first argument as it came.
    """
    if scope["type"] == "lifespan":
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            else:
                await send({"type": "lifespan.shutdown.complete"})
                return
    if scope["type"] != "http":
        return
    chunks = []
    while True:
        message = await receive()
        chunks.append(message.get("body", b""))
        if not message.get("more_body", False):
            break
    args = orjson.loads(b"".join(chunks))
    result = args[0] + args[1] if scope["path"].endswith("/add") else args[0]
    await send({"type": "http.response.start", "status": 200, "headers": _JSON_HEADERS})
    await send({"type": "http.response.body", "body": orjson.dumps(result)})


async def serve_bare(*, task_status: trio.TaskStatus[str] = trio.TASK_STATUS_IGNORED) -> None:
    """Serve `bare_app` on 127.0.0.1, port 0, configured as `http.serve` configures."""
    config = Config()
    config.bind = ["127.0.0.1:0"]
    config.keep_alive_timeout = http.DEFAULT_KEEP_ALIVE_TIMEOUT
    config.keep_alive_max_requests = _KEEP_ALIVE_MAX_REQUESTS
    config.graceful_timeout = 5.0
    config.accesslog = None
    config.errorlog = logging.getLogger("bench.http.hypercorn")

    class _Started:
        def started(self, binds: list[str] | None = None) -> None:
            assert binds
            task_status.started(binds[0])

    await hypercorn_serve(bare_app, config, task_status=_Started())  # type: ignore[arg-type]


# ---------------------------------------------------------------------------
# The client side


def _split(url: str) -> tuple[str, int]:
    host, port = url.removeprefix("http://").split("/", 1)[0].rsplit(":", 1)
    return host, int(port)


def raw_post(pool: ConnectionPool, target: bytes, body: bytes) -> Op:
    """A POST of `body` to `target`, with the headers tether's client sends.

    A fresh ActivityId and traceparent every request, as `HttpBackend.request`
    makes them, so that the raw POSTs cost the client what a tether call does
    in headers.
    """
    content_type = (b"content-type", b"application/json")
    protocol = (b"x-protocol-version", b"%d" % PROTOCOL_VERSION)
    new_activity_id = contexts.new_activity_id
    traceparent_for = contexts.traceparent_for

    async def op() -> Any:
        activity_id = new_activity_id()
        headers = [
            content_type,
            protocol,
            (b"x-correlation-id", activity_id.encode()),
            (b"traceparent", traceparent_for(activity_id).encode()),
        ]
        response = await pool.request(b"POST", target, headers, body)
        if response.status != 200:
            raise AssertionError(f"HTTP {response.status}: {response.body[:200]!r}")
        return orjson.loads(response.body)

    return op


def stub_call(client: BenchApi, payload: Payload) -> Op:
    if payload == "add":
        return lambda: client.add(1, 2)
    return lambda: client.echo(ROBOT)


# ---------------------------------------------------------------------------
# Measuring


@attrs.define
class Case:
    """One row of the table: an operation, a mode and an implementation."""

    payload: Payload
    mode: Mode
    impl: Impl
    op: Op
    rates: list[float] = attrs.field(factory=list)

    @property
    def label(self) -> str:
        return f"{_PAYLOAD_LABELS[self.payload]}, {_IMPL_LABELS[self.impl]}"

    @property
    def concurrency(self) -> int:
        return CONCURRENCY if self.mode == "concurrent" else 1

    @property
    def best(self) -> float:
        return max(self.rates)

    @property
    def median(self) -> float:
        return statistics.median(self.rates)


async def _make_calls(op: Op, count: int) -> None:
    for _ in range(count):
        await op()


async def _run_callers(op: Op, callers: int, per_caller: int) -> None:
    if callers == 1:
        await _make_calls(op, per_caller)
        return
    async with trio.open_nursery() as nursery:
        for _ in range(callers):
            nursery.start_soon(_make_calls, op, per_caller)


async def measure(case: Case, requests: int) -> float:
    """Make `requests` requests (split over the callers); return requests per second."""
    callers = case.concurrency
    per_caller = requests // callers
    # One untimed request per caller: the pool's connections are open (an idle
    # one expires after 4 s, and the other cases ran meanwhile).
    with trio.fail_after(MEASURE_TIMEOUT):
        await _run_callers(case.op, callers, 1)
        gc.collect()
        started = time.perf_counter()
        await _run_callers(case.op, callers, per_caller)
        elapsed = time.perf_counter() - started
    return per_caller * callers / elapsed


@attrs.frozen
class Servers:
    """The URLs of the two servers (tether's with its prefix)."""

    bare: str
    tether: str


async def _start_servers(nursery: trio.Nursery) -> Servers:
    bare_url: str = await nursery.start(serve_bare)
    tether_url: str = await nursery.start(http.serve, make_manager(), "127.0.0.1", 0)
    return Servers(bare_url, tether_url)


def _make_cases(
    servers: Servers, bare_pool: ConnectionPool, raw_pool: ConnectionPool, client: BenchApi
) -> list[Case]:
    def op(payload: Payload, impl: Impl) -> Op:
        if impl == "bare":
            return raw_post(bare_pool, f"/rpc/BenchApi/1.0.0/{payload}".encode(), BODIES[payload])
        if impl == "tether-raw":
            prefix = "/" + servers.tether.removeprefix("http://").split("/", 1)[1]
            target = f"{prefix}/BenchApi/1.0.0/{payload}".encode()
            return raw_post(raw_pool, target, BODIES[payload])
        return stub_call(client, payload)

    return [
        Case(payload, mode, impl, op(payload, impl))
        for payload in PAYLOADS
        for mode in MODES
        for impl in IMPLS
    ]


@asynccontextmanager
async def open_cases() -> AsyncIterator[list[Case]]:
    """Start both servers, open the pools and the tether client; yield every case."""
    async with trio.open_nursery() as nursery:
        try:
            async with AsyncExitStack() as stack:
                with trio.fail_after(STARTUP_TIMEOUT):
                    servers = await _start_servers(nursery)
                    bare = ConnectionPool(*_split(servers.bare), max_connections=CONCURRENCY)
                    stack.push_async_callback(bare.aclose)
                    raw = ConnectionPool(*_split(servers.tether), max_connections=CONCURRENCY)
                    stack.push_async_callback(raw.aclose)
                    backend = await stack.enter_async_context(
                        http.connect(
                            servers.tether, interfaces=[BenchApi], max_connections=CONCURRENCY
                        )
                    )
                    cases = _make_cases(servers, bare, raw, backend.get_client(BenchApi))
                    # Every case answers correctly.
                    for case in cases:
                        answer = await case.op()
                        expected = EXPECTED if case.impl == "tether" else EXPECTED_JSON
                        if answer != expected[case.payload]:
                            raise AssertionError(f"{case.label}: got {answer!r}")
                yield cases
        finally:
            # The servers run until cancelled; stopped only once the pools and
            # the client are closed (a Cancelled from their closing would
            # otherwise hide an error of the block).
            nursery.cancel_scope.cancel()


async def run_cases(rounds: int, requests: tuple[int, int]) -> list[Case]:
    """Start both servers once, warm up, then measure every case `rounds` times."""
    async with open_cases() as cases:
        # One warm-up measurement of a tenth of a round per case.
        for case in cases:
            await measure(case, max(CONCURRENCY, _requests(case, requests) // 10))

        # Interleave: within each (payload, mode) group, the three cases
        # alternate, in reversed order every other round.
        groups = [cases[i : i + len(IMPLS)] for i in range(0, len(cases), len(IMPLS))]
        for index in range(rounds):
            print(f"round {index + 1}/{rounds}", file=sys.stderr, flush=True)
            for group in groups:
                for case in group if index % 2 == 0 else reversed(group):
                    case.rates.append(await measure(case, _requests(case, requests)))
    return cases


def _requests(case: Case, requests: tuple[int, int]) -> int:
    return requests[0] if case.mode == "sequential" else requests[1]


# ---------------------------------------------------------------------------
# Profiling

#: Where a function's time is counted, by the path of its file.
_AREAS: tuple[tuple[str, str], ...] = (
    ("tether/transports/http/_server", "tether HTTP server (HttpApp)"),
    ("tether/transports/http/_client", "tether HTTP client (HttpBackend)"),
    ("tether/transports/http/_pool", "tether h11 pool (client)"),
    ("tether/runtime/_dispatch", "tether dispatcher"),
    ("tether/runtime/_client", "tether client stub"),
    ("tether/", "tether, other (codec, contexts, ...)"),
    ("hypercorn/", "hypercorn"),
    ("h11/", "h11 (client and server)"),
    ("trio/", "trio"),
    ("bench/", "this benchmark"),
)


def _area(filename: str) -> str:
    path = filename.replace("\\", "/")
    for needle, area in _AREAS:
        if needle in path:
            return area
    if path == "~" or path.startswith("<"):
        return "builtins and C functions"
    return "other Python (stdlib, attrs, cattrs, ...)"


def _short(func: tuple[str, int, str]) -> str:
    filename, line, name = func
    if filename == "~":
        return name
    path = filename.replace("\\", "/")
    for marker in ("/src/", "/site-packages/", "/bench/"):
        if marker in path:
            path = path.split(marker, 1)[1]
            break
    return f"{path}:{line}({name})"


#: One function's cost per request: (calls, own time in µs, cumulative time in µs).
FunctionCost = tuple[float, float, float]


@attrs.frozen
class Profile:
    """Where one case's time went, per request."""

    impl: Impl
    requests: int
    seconds: float
    #: Per function (short name): calls, own time and cumulative time, per request.
    functions: dict[str, FunctionCost]
    #: Own time per area (see `_AREAS`), in µs per request.
    by_area: dict[str, float]


async def _profile_one(case: Case, requests: int) -> Profile:
    await measure(case, requests // 4)  # warm
    gc.collect()
    profiler = cProfile.Profile()
    started = time.perf_counter()
    profiler.enable()
    await _make_calls(case.op, requests)
    profiler.disable()
    seconds = time.perf_counter() - started
    raw: dict[tuple[str, int, str], tuple[int, int, float, float, Any]]
    raw = pstats.Stats(profiler).stats  # type: ignore[attr-defined]
    per = 1e6 / requests
    functions: dict[str, FunctionCost] = {}
    by_area: dict[str, float] = defaultdict(float)
    for func, (_primitive, ncalls, tottime, cumtime, _callers) in raw.items():
        by_area[_area(func[0])] += tottime * per
        # cProfile counts a coroutine's every resume as a call.
        functions[_short(func)] = (ncalls / requests, tottime * per, cumtime * per)
    return Profile(case.impl, requests, seconds, functions, dict(by_area))


async def run_profiles(requests: int) -> list[Profile]:
    """Profile the sequential `add` case of each implementation, one after the other."""
    async with open_cases() as cases:
        return [
            await _profile_one(case, requests)
            for case in cases
            if case.payload == "add" and case.mode == "sequential"
        ]


#: Functions whose calls per request show how much scheduling a request costs.
_SCHEDULING = (
    ("trio/_core/_run.py", "unrolled_run", "scheduler batches (resumes of the run loop)"),
    ("trio/_core/_run.py", "reschedule", "task wake-ups (reschedule)"),
    ("trio/_core/_run.py", "spawn_impl", "tasks spawned"),
    ("trio/_core/_run.py", "__enter__", "cancel scopes entered"),
    ("~", "<method 'send' of '_socket.socket' objects>", "socket sends"),
    ("~", "<method 'recv' of '_socket.socket' objects>", "socket receives"),
    ("h11/_headers.py", "normalize_and_validate", "h11 header lists validated"),
)


def _calls_of(profile: Profile, path: str, name: str) -> float:
    return sum(
        calls
        for function, (calls, _own, _cum) in profile.functions.items()
        if (function == name if path == "~" else path in function and f"({name})" in function)
    )


def _fn_table(rows: Sequence[tuple[str, FunctionCost]]) -> str:
    return markdown_table(
        ["function", "calls/req", "own µs/req", "cumulative µs/req"],
        [[name, f"{n:.2f}", f"{own:.1f}", f"{cum:.1f}"] for name, (n, own, cum) in rows],
    )


def format_profiles(profiles: Sequence[Profile], top: int = 15) -> str:
    """Areas side by side, scheduling counts, then tether's hottest functions and the
    functions that cost the tether server most over the bare app."""
    labels = [_IMPL_LABELS[p.impl] for p in profiles]
    last = profiles[-1].by_area
    areas = sorted({a for p in profiles for a in p.by_area}, key=lambda a: -last.get(a, 0.0))
    rows = [[area, *(f"{p.by_area.get(area, 0.0):.1f}" for p in profiles)] for area in areas]
    rows.append(["total", *(f"{sum(p.by_area.values()):.1f}" for p in profiles)])
    out = [
        f"Profile: sequential add(1, 2), {profiles[0].requests:,} requests per case, under "
        "cProfile (which inflates every Python call: compare shares and counts, not times).",
        "",
        markdown_table(["own time, µs per request", *labels], rows),
        "",
        markdown_table(
            ["per request", *labels],
            [
                [label, *(f"{_calls_of(p, path, name):.1f}" for p in profiles)]
                for path, name, label in _SCHEDULING
            ],
        ),
    ]
    by_impl = {p.impl: p for p in profiles}
    for profile in profiles:
        if profile.impl == "bare":
            continue
        mine = sorted(
            ((f, c) for f, c in profile.functions.items() if f.startswith("tether/")),
            key=lambda fc: -fc[1][1],
        )
        out += ["", f"{_IMPL_LABELS[profile.impl]}: tether's functions by own time", ""]
        out.append(_fn_table(mine[:top]))
    bare, server = by_impl.get("bare"), by_impl.get("tether-raw")
    if bare is not None and server is not None:
        zero: FunctionCost = (0.0, 0.0, 0.0)
        grown = sorted(
            ((f, c, bare.functions.get(f, zero)) for f, c in server.functions.items()),
            key=lambda fcb: -(fcb[1][1] - fcb[2][1]),
        )
        out += [
            "",
            "tether server, raw POST, against bare: the functions whose own time grew most",
            "",
            markdown_table(
                [
                    "function",
                    "calls/req bare",
                    "calls/req tether",
                    "own µs/req bare",
                    "own µs/req tether",
                    "more",
                ],
                [
                    [
                        f,
                        f"{b[0]:.2f}",
                        f"{c[0]:.2f}",
                        f"{b[1]:.1f}",
                        f"{c[1]:.1f}",
                        f"{c[1] - b[1]:+.1f}",
                    ]
                    for f, c, b in grown[:top]
                ],
            ),
        ]
    return "\n".join(out)


# ---------------------------------------------------------------------------
# Reporting


def find(cases: Sequence[Case], payload: Payload, mode: Mode, impl: Impl) -> Case:
    return next(c for c in cases if (c.payload, c.mode, c.impl) == (payload, mode, impl))


def ratio_to_bare(cases: Sequence[Case], case: Case) -> float:
    return case.best / find(cases, case.payload, case.mode, "bare").best


def results_table(cases: Sequence[Case]) -> str:
    rows = [
        [
            case.label,
            _MODE_LABELS[case.mode],
            format_rate(case.best),
            format_rate(case.median),
            "—" if case.impl == "bare" else f"{ratio_to_bare(cases, case):.2f}",
        ]
        for case in cases
    ]
    return markdown_table(["case", "mode", "req/s (best)", "median", "ratio to bare"], rows)


def verdict_lines(cases: Sequence[Case]) -> list[str]:
    lines = []
    for case in cases:
        if case.impl == "bare":
            continue
        ratio = ratio_to_bare(cases, case)
        verdict = "PASS" if ratio >= TARGET_RATIO else "FAIL"
        lines.append(
            f"{verdict}: {ratio:.0%} of bare, {case.label}, {_MODE_LABELS[case.mode]} "
            f"(target: at least {TARGET_RATIO:.0%})"
        )
    return lines


def to_json(
    cases: Sequence[Case],
    info: dict[str, Any],
    rounds: int,
    requests: tuple[int, int],
    wall: float,
) -> dict[str, Any]:
    return {
        "machine": {**info, "hypercorn": version("hypercorn"), "h11": version("h11")},
        "rounds": rounds,
        "concurrency": CONCURRENCY,
        "requests_per_round": {"sequential": requests[0], "concurrent": requests[1]},
        "wall_seconds": wall,
        "cases": [
            {
                "payload": case.payload,
                "mode": case.mode,
                "impl": case.impl,
                "label": case.label,
                "rates": case.rates,
                "best": case.best,
                "median": case.median,
                "ratio_to_bare": None if case.impl == "bare" else ratio_to_bare(cases, case),
            }
            for case in cases
        ],
        "target": TARGET_RATIO,
    }


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m bench.http", description=(__doc__ or "").split("\n\n")[0]
    )
    parser.add_argument("--quick", action="store_true", help="a short run, for a smoke test")
    parser.add_argument("--rounds", type=int, help="measurements per case (default 5, quick 3)")
    parser.add_argument(
        "--profile", action="store_true", help="then profile the sequential add cases"
    )
    parser.add_argument("--json", type=Path, metavar="PATH", help="also write results here")
    args = parser.parse_args(argv)
    rounds: int = args.rounds or (3 if args.quick else 5)
    requests = QUICK_REQUESTS if args.quick else REQUESTS

    info = machine_info()
    started = time.perf_counter()
    cases = trio.run(run_cases, rounds, requests)
    wall = time.perf_counter() - started

    print(f"\n{format_machine(info)}; hypercorn {version('hypercorn')}; h11 {version('h11')}")
    print(
        f"{rounds} interleaved rounds of {requests[0]:,} sequential / {requests[1]:,} concurrent "
        f"requests per case, {wall:.0f} s in all. Servers and client share one process, one "
        f"Trio loop and so one core (of {info['cores']}): each rate is client + server work.\n"
    )
    print(results_table(cases))
    print()
    for line in verdict_lines(cases):
        print(line)
    if args.json is not None:
        args.json.write_text(
            json.dumps(to_json(cases, info, rounds, requests, wall), indent=2) + "\n"
        )
        print(f"\nwrote {args.json}")
    if args.profile:
        print()
        profiles = trio.run(run_profiles, requests[0])
        print(format_profiles(profiles))


if __name__ == "__main__":
    main()
