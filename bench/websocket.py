"""WebSocket RPC call rate over one connection: tether against a bare echo and grpc.aio.

Run from the repository root::

    .venv/bin/python -m bench.websocket                  # full run, about 45 seconds
    .venv/bin/python -m bench.websocket --quick          # about 10 seconds, for a smoke test
    .venv/bin/python -m bench.websocket --rounds 3       # fewer rounds
    .venv/bin/python -m bench.websocket --profile        # then profile (about 5 seconds more)
    .venv/bin/python -m bench.websocket --json out.json  # also write the results as JSON

Measured, in one run, in calls per second over ONE connection (one channel for
gRPC), all on 127.0.0.1 with port 0, of `add(1, 2) -> 3`:

* two modes: sequential (one caller), and 64 concurrent callers (64 tasks, each
  making N/64 calls, sharing the one connection);
* four cases:
  - bare: the baseline, a `trio_websocket.serve_websocket` server whose handler
    reads each text message `{"id": n, "args": [a, b]}`, decodes it with orjson
    and answers `{"id": n, "value": a + b}`; the client is one
    `trio_websocket.open_websocket_url` connection whose single reader task
    reads the replies and wakes the waiting caller by request id;
  - tether, trio-websocket server: `websocket.serve` with an RpcManager, and
    the `websocket.connect` client stub (`client.add(1, 2)`);
  - tether, hypercorn: the same client against the WebSocket route
    (`.../rpc/ws`) of `http.serve`'s ASGI app, served by hypercorn;
  - grpc.aio: a generic unary-unary handler (bytes in and out, a JSON body
    `{"args": [1, 2]}` answered `{"value": 3}` with orjson, no protobuf) on a
    `grpc.aio` server, called through one `grpc.aio` channel; 64 concurrent is
    `asyncio.gather` over 64 tasks.

The Trio cases' servers and client share one process, one Trio loop and so one
core. grpc.aio runs on asyncio: its server and channel live in one
`asyncio.Runner` in the same process, run (blocking the Trio loop, which is idle
meanwhile) between the Trio cases. Its C core frames HTTP/2 and does the socket
I/O on threads of its own, so it can use a second core where the pure-Python
stacks cannot: the CPU/wall column (process CPU time over wall time, median
round) shows how much.

As in `bench.inprocess`, each case is sized from a warm-up so that a
measurement takes about the same time, and the four cases of a mode are
interleaved for several rounds (reversed every other round); before each
measurement every caller makes one untimed call. The table shows the best round
and the median; ratios (to bare and to grpc.aio, same mode) come from the best
rounds.

The targets checked at the end (issue: tether over its trio-websocket server
at least 85% of the bare echo's rate, and ahead of grpc.aio, in both modes) are
printed as PASS or FAIL; the hypercorn route's ratios are printed too, with no
target. The exit status is 0 either way.

`--profile` then runs the sequential bare and tether (trio-websocket server)
cases under cProfile and prints own time per call by package, and tether's
hottest functions.
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import functools
import gc
import json
import math
import pstats
import statistics
import sys
import time
from collections import defaultdict
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import AsyncExitStack, asynccontextmanager
from importlib.metadata import version
from pathlib import Path
from typing import Any, Literal

import attrs
import grpc
import grpc.aio
import orjson
import trio
from trio_websocket import (
    ConnectionClosed,
    WebSocketConnection,
    WebSocketRequest,
    WebSocketServer,
    open_websocket_url,
    serve_websocket,
)

from bench.http import BenchApi, _make_calls, _run_callers, _short, make_manager
from bench.inprocess import (
    CONCURRENCY,
    _round_calls,
    format_machine,
    format_rate,
    machine_info,
    markdown_table,
)
from tether.transports import http, websocket

#: tether (trio-websocket server) must reach this share of the bare echo's rate.
TARGET_RATIO = 0.85
#: Seconds one measurement should take; and with --quick.
SECONDS = 0.5
QUICK_SECONDS = 0.25
#: Calls in the warm-up that sizes each case.
WARMUP_CALLS = 640
#: Seconds one measurement may take before the run fails (rather than hangs).
MEASURE_TIMEOUT = 60.0
#: Seconds starting the servers and connecting (or closing them) may take.
STARTUP_TIMEOUT = 30.0

Mode = Literal["sequential", "concurrent"]
Impl = Literal["bare", "tether", "tether-hypercorn", "grpc"]

#: One call: returns the sum, decoded.
Op = Callable[[], Awaitable[int]]

MODES: tuple[Mode, ...] = ("sequential", "concurrent")
IMPLS: tuple[Impl, ...] = ("bare", "tether", "tether-hypercorn", "grpc")

_IMPL_LABELS: dict[Impl, str] = {
    "bare": "bare trio-websocket echo",
    "tether": "tether, trio-websocket server",
    "tether-hypercorn": "tether, hypercorn (/rpc/ws)",
    "grpc": "grpc.aio unary (asyncio)",
}
_MODE_LABELS: dict[Mode, str] = {
    "sequential": "sequential",
    "concurrent": f"{CONCURRENCY} concurrent",
}
EXPECTED = 3


# ---------------------------------------------------------------------------
# The bare echo: server, and a client with a request-id reader


async def _bare_handler(request: WebSocketRequest) -> None:
    """Answer each `{"id": n, "args": [a, b]}` with `{"id": n, "value": a + b}`."""
    ws = await request.accept()
    try:
        while True:
            message = orjson.loads(await ws.get_message())
            a, b = message["args"]
            await ws.send_message(orjson.dumps({"id": message["id"], "value": a + b}).decode())
    except ConnectionClosed:
        pass


async def serve_bare(*, task_status: trio.TaskStatus[str] = trio.TASK_STATUS_IGNORED) -> None:
    """Serve the bare echo on 127.0.0.1, port 0; started with its URL."""

    async def serve(*, task_status: trio.TaskStatus[WebSocketServer]) -> None:
        await serve_websocket(_bare_handler, "127.0.0.1", 0, None, task_status=task_status)

    async with trio.open_nursery() as nursery:
        server: WebSocketServer = await nursery.start(serve)
        task_status.started(f"ws://127.0.0.1:{server.port}/")


@attrs.define(slots=True)
class _Slot:
    """Where the reader leaves one call's reply."""

    event: trio.Event = attrs.field(factory=trio.Event)
    value: int = 0


class BareClient:
    """Calls over one connection; a single reader task wakes each caller by request id."""

    def __init__(self, ws: WebSocketConnection) -> None:
        self._ws = ws
        self._pending: dict[int, _Slot] = {}
        self._last_id = 0

    async def read_replies(self) -> None:
        try:
            while True:
                reply = orjson.loads(await self._ws.get_message())
                slot = self._pending.pop(reply["id"])
                slot.value = reply["value"]
                slot.event.set()
        except ConnectionClosed:
            pass

    async def add(self, a: int, b: int) -> int:
        self._last_id += 1
        request_id = self._last_id
        slot = self._pending[request_id] = _Slot()
        await self._ws.send_message(orjson.dumps({"id": request_id, "args": [a, b]}).decode())
        await slot.event.wait()
        return slot.value


# ---------------------------------------------------------------------------
# grpc.aio, on asyncio


async def _grpc_add(request: bytes, context: grpc.aio.ServicerContext[bytes, bytes]) -> bytes:
    a, b = orjson.loads(request)["args"]
    return orjson.dumps({"value": a + b})


_GRPC_METHOD = "/bench.Calc/Add"
_GRPC_BODY = orjson.dumps({"args": [1, 2]})


class GrpcSide:
    """A grpc.aio server and one channel to it, living in one asyncio loop."""

    def __init__(self, server: grpc.aio.Server, channel: grpc.aio.Channel) -> None:
        self.server = server
        self.channel = channel
        # No serializers: the request and the response are bytes as they are.
        self._call = channel.unary_unary(_GRPC_METHOD)

    @classmethod
    async def open(cls) -> GrpcSide:
        async with asyncio.timeout(STARTUP_TIMEOUT):
            server = grpc.aio.server()
            handler = grpc.method_handlers_generic_handler(
                "bench.Calc", {"Add": grpc.unary_unary_rpc_method_handler(_grpc_add)}
            )
            server.add_generic_rpc_handlers((handler,))
            port = server.add_insecure_port("127.0.0.1:0")
            await server.start()
            channel = grpc.aio.insecure_channel(f"127.0.0.1:{port}")
            await channel.channel_ready()
            return cls(server, channel)

    async def aclose(self) -> None:
        async with asyncio.timeout(STARTUP_TIMEOUT):
            await self.channel.close()
            await self.server.stop(grace=None)

    async def add(self) -> int:
        value: int = orjson.loads(await self._call(_GRPC_BODY))["value"]
        return value

    async def _calls(self, count: int) -> None:
        for _ in range(count):
            await self.add()

    async def measure(self, callers: int, calls: int) -> Sample:
        per_caller = calls // callers
        async with asyncio.timeout(MEASURE_TIMEOUT):
            await asyncio.gather(*(self._calls(1) for _ in range(callers)))
            gc.collect()
            clock = _Clock()
            if callers == 1:
                await self._calls(per_caller)
            else:
                await asyncio.gather(*(self._calls(per_caller) for _ in range(callers)))
            return clock.sample(per_caller * callers)


# ---------------------------------------------------------------------------
# Measuring


@attrs.frozen
class Sample:
    """One measurement: calls per second, and process CPU time over wall time."""

    rate: float
    cpu_share: float


class _Clock:
    def __init__(self) -> None:
        self.wall = time.perf_counter()
        self.cpu = time.process_time()

    def sample(self, calls: int) -> Sample:
        wall = time.perf_counter() - self.wall
        return Sample(calls / wall, (time.process_time() - self.cpu) / wall)


#: Measures `calls` calls (split over the callers) from the Trio loop.
Measure = Callable[[int], Awaitable[Sample]]


@attrs.define
class Case:
    """One row of the table: a mode and an implementation."""

    mode: Mode
    impl: Impl
    measure: Measure
    calls: int = 0
    samples: list[Sample] = attrs.field(factory=list)

    @property
    def label(self) -> str:
        return _IMPL_LABELS[self.impl]

    @property
    def best(self) -> float:
        return max(s.rate for s in self.samples)

    @property
    def median(self) -> float:
        return statistics.median(s.rate for s in self.samples)

    @property
    def cpu_share(self) -> float:
        return statistics.median(s.cpu_share for s in self.samples)


def _callers(mode: Mode) -> int:
    return CONCURRENCY if mode == "concurrent" else 1


def trio_measure(op: Op, mode: Mode) -> Measure:
    callers = _callers(mode)

    async def measure(calls: int) -> Sample:
        per_caller = calls // callers
        with trio.fail_after(MEASURE_TIMEOUT):
            await _run_callers(op, callers, 1)
            gc.collect()
            clock = _Clock()
            await _run_callers(op, callers, per_caller)
            return clock.sample(per_caller * callers)

    return measure


def grpc_measure(runner: asyncio.Runner, side: GrpcSide, mode: Mode) -> Measure:
    callers = _callers(mode)

    async def measure(calls: int) -> Sample:
        # Blocks the Trio loop (idle meanwhile) while asyncio runs the calls.
        return runner.run(side.measure(callers, calls))

    return measure


def _ws_route(http_url: str) -> str:
    """`http://host:port/rpc` -> `ws://host:port/rpc/ws`, the HTTP app's WebSocket route."""
    return "ws://" + http_url.removeprefix("http://").rstrip("/") + "/ws"


@asynccontextmanager
async def open_trio_ops(impls: Sequence[Impl]) -> AsyncIterator[dict[Impl, Op]]:
    """Start the Trio servers, connect once to each; yield each implementation's call."""
    ops: dict[Impl, Op] = {}
    async with trio.open_nursery() as nursery:
        try:
            # Starting and closing are capped (a nursery opened by a connection
            # cannot sit inside a `fail_after` left before it closes).
            with trio.CancelScope(deadline=trio.current_time() + STARTUP_TIMEOUT) as bounded:
                async with AsyncExitStack() as stack:
                    await _connect(impls, nursery, stack, ops)
                    for impl, op in ops.items():
                        if (answer := await op()) != EXPECTED:
                            raise AssertionError(f"{_IMPL_LABELS[impl]}: got {answer!r}")
                    bounded.deadline = math.inf
                    yield ops
                    bounded.deadline = trio.current_time() + STARTUP_TIMEOUT
            if bounded.cancelled_caught:
                raise trio.TooSlowError("starting or closing the connections took too long")
        finally:
            # The servers run until cancelled; stopped only once the clients are
            # closed (a Cancelled from their closing would hide an error of the block).
            nursery.cancel_scope.cancel()


async def _connect(
    impls: Sequence[Impl], nursery: trio.Nursery, stack: AsyncExitStack, ops: dict[Impl, Op]
) -> None:
    """Start the servers of `impls` in `nursery`, connect (closed by `stack`); fill `ops`."""
    if "bare" in impls:
        bare_url: str = await nursery.start(serve_bare)
        bare = BareClient(await stack.enter_async_context(open_websocket_url(bare_url)))
        nursery.start_soon(bare.read_replies)
        ops["bare"] = functools.partial(bare.add, 1, 2)
    if "tether" in impls:
        url: str = await nursery.start(
            functools.partial(websocket.serve, make_manager(), "127.0.0.1", 0)
        )
        conn = await stack.enter_async_context(websocket.connect(url, interfaces=[BenchApi]))
        ops["tether"] = functools.partial(conn.get_client(BenchApi).add, 1, 2)
    if "tether-hypercorn" in impls:
        url = await nursery.start(functools.partial(http.serve, make_manager(), "127.0.0.1", 0))
        conn = await stack.enter_async_context(
            websocket.connect(_ws_route(url), interfaces=[BenchApi])
        )
        ops["tether-hypercorn"] = functools.partial(conn.get_client(BenchApi).add, 1, 2)


async def run_cases(rounds: int, seconds: float, impls: Sequence[Impl] = IMPLS) -> list[Case]:
    """Start every server once, size each case, then measure every case `rounds` times."""
    with asyncio.Runner() as runner:
        side = runner.run(GrpcSide.open()) if "grpc" in impls else None
        try:
            async with open_trio_ops(impls) as ops:

                def measure_of(mode: Mode, impl: Impl) -> Measure:
                    if impl == "grpc":
                        assert side is not None
                        return grpc_measure(runner, side, mode)
                    return trio_measure(ops[impl], mode)

                groups = [
                    [Case(mode, impl, measure_of(mode, impl)) for impl in IMPLS if impl in impls]
                    for mode in MODES
                ]
                if side is not None and (answer := runner.run(side.add())) != EXPECTED:
                    raise AssertionError(f"grpc.aio: got {answer!r}")

                # Size each case from a warm-up so that one measurement takes about `seconds`.
                for group in groups:
                    for case in group:
                        warmup = await case.measure(WARMUP_CALLS)
                        case.calls = _round_calls(warmup.rate, seconds)

                # Interleave: within each mode, the cases alternate, in reversed
                # order every other round.
                for index in range(rounds):
                    print(f"round {index + 1}/{rounds}", file=sys.stderr, flush=True)
                    for group in groups:
                        for case in group if index % 2 == 0 else reversed(group):
                            case.samples.append(await case.measure(case.calls))
        finally:
            if side is not None:
                runner.run(side.aclose())
    return [case for group in groups for case in group]


# ---------------------------------------------------------------------------
# Profiling

#: Where a function's time is counted, by the path of its file.
_AREAS: tuple[tuple[str, str], ...] = (
    ("tether/transports/", "tether transport (websocket)"),
    ("tether/runtime/", "tether runtime (dispatch, client stub, codec)"),
    ("tether/", "tether, other (contexts, ...)"),
    ("trio_websocket/", "trio-websocket"),
    ("wsproto/", "wsproto"),
    ("h11/", "h11"),
    ("trio/", "trio"),
    ("bench/", "this benchmark"),
)


def _area(filename: str) -> str:
    path = filename.replace("\\", "/")
    for needle, area in _AREAS:
        if needle in path:
            return area
    if path == "~" or path.startswith("<"):
        return "builtins and C functions (socket, orjson, ...)"
    return "other Python (stdlib, attrs, cattrs, ...)"


@attrs.frozen
class Profile:
    impl: Impl
    calls: int
    #: Per function (short name): (calls, own µs, cumulative µs), per call made.
    functions: dict[str, tuple[float, float, float]]
    #: Own µs per call made, by area.
    by_area: dict[str, float]


async def _profile_one(impl: Impl, op: Op, calls: int) -> Profile:
    await trio_measure(op, "sequential")(calls // 4)  # warm
    gc.collect()
    profiler = cProfile.Profile()
    profiler.enable()
    await _make_calls(op, calls)
    profiler.disable()
    stats: dict[tuple[str, int, str], tuple[int, int, float, float, Any]]
    stats = pstats.Stats(profiler).stats  # type: ignore[attr-defined]
    per = 1e6 / calls
    functions: dict[str, tuple[float, float, float]] = {}
    by_area: dict[str, float] = defaultdict(float)
    for func, (_primitive, ncalls, own, cumulative, _callers) in stats.items():
        by_area[_area(func[0])] += own * per
        functions[_short(func)] = (ncalls / calls, own * per, cumulative * per)
    return Profile(impl, calls, functions, dict(by_area))


async def run_profiles(calls: int) -> list[Profile]:
    """Profile the sequential bare and tether (trio-websocket server) cases."""
    impls: tuple[Impl, ...] = ("bare", "tether")
    async with open_trio_ops(impls) as ops:
        return [await _profile_one(impl, ops[impl], calls) for impl in impls]


def _fn_table(rows: Sequence[tuple[str, tuple[float, float, float]]]) -> str:
    return markdown_table(
        ["function", "calls/call", "own µs/call", "cumulative µs/call"],
        [[name, f"{n:.2f}", f"{own:.1f}", f"{cum:.1f}"] for name, (n, own, cum) in rows],
    )


def format_profiles(profiles: Sequence[Profile], top: int = 15) -> str:
    """Own time by area side by side, tether's hottest functions, and the functions
    whose own time grew most from the bare echo to tether."""
    labels = [_IMPL_LABELS[p.impl] for p in profiles]
    last = profiles[-1].by_area
    areas = sorted({a for p in profiles for a in p.by_area}, key=lambda a: -last.get(a, 0.0))
    rows = [[area, *(f"{p.by_area.get(area, 0.0):.1f}" for p in profiles)] for area in areas]
    rows.append(["total", *(f"{sum(p.by_area.values()):.1f}" for p in profiles)])
    out = [
        f"Profile: sequential add(1, 2), {profiles[0].calls:,} calls per case, under cProfile "
        "(which inflates every Python call: compare shares and counts, not times).",
        "",
        markdown_table(["own time, µs per call", *labels], rows),
    ]
    bare, mine = profiles[0], profiles[-1]
    tether_fns = sorted(
        ((f, c) for f, c in mine.functions.items() if f.startswith("tether/")),
        key=lambda fc: -fc[1][1],
    )
    out += ["", f"{_IMPL_LABELS[mine.impl]}: tether's functions by own time", ""]
    out.append(_fn_table(tether_fns[:top]))
    zero = (0.0, 0.0, 0.0)
    grown = sorted(
        ((f, c, bare.functions.get(f, zero)) for f, c in mine.functions.items()),
        key=lambda fcb: -(fcb[1][1] - fcb[2][1]),
    )
    out += ["", "tether against bare: the functions whose own time grew most", ""]
    out.append(
        markdown_table(
            ["function", "calls/call bare", "calls/call tether", "own µs bare", "own µs tether"],
            [
                [f, f"{b[0]:.2f}", f"{c[0]:.2f}", f"{b[1]:.1f}", f"{c[1]:.1f}"]
                for f, c, b in grown[:top]
            ],
        )
    )
    return "\n".join(out)


# ---------------------------------------------------------------------------
# Reporting


def find(cases: Sequence[Case], mode: Mode, impl: Impl) -> Case | None:
    return next((c for c in cases if (c.mode, c.impl) == (mode, impl)), None)


def ratio_to(cases: Sequence[Case], case: Case, impl: Impl) -> float | None:
    """`case`'s best rate over the best rate of `impl` in the same mode."""
    other = find(cases, case.mode, impl)
    return None if other is None else case.best / other.best


def _ratio(value: float | None) -> str:
    return "—" if value is None else f"{value:.2f}"


def results_table(cases: Sequence[Case]) -> str:
    rows = [
        [
            case.label,
            _MODE_LABELS[case.mode],
            format_rate(case.best),
            format_rate(case.median),
            f"{1e6 / case.best:.0f}",
            f"{case.cpu_share:.2f}",
            "—" if case.impl == "bare" else _ratio(ratio_to(cases, case, "bare")),
            "—" if case.impl == "grpc" else _ratio(ratio_to(cases, case, "grpc")),
        ]
        for case in cases
    ]
    headers = [
        "case",
        "mode",
        "calls/s (best)",
        "median",
        "µs/call (best)",
        "CPU/wall",
        "vs bare",
        "vs grpc.aio",
    ]
    return markdown_table(headers, rows)


def verdict_lines(cases: Sequence[Case]) -> list[str]:
    lines = []
    for case in cases:
        if case.impl not in ("tether", "tether-hypercorn"):
            continue
        to_bare, to_grpc = ratio_to(cases, case, "bare"), ratio_to(cases, case, "grpc")
        where = f"{case.label}, {_MODE_LABELS[case.mode]}"
        if case.impl == "tether-hypercorn":
            lines.append(
                f"(no target) {where}: {_ratio(to_bare)} of bare, {_ratio(to_grpc)} of grpc.aio"
            )
            continue
        if to_bare is not None:
            verdict = "PASS" if to_bare >= TARGET_RATIO else "FAIL"
            lines.append(
                f"{verdict}: {where}: {to_bare:.0%} of bare (target: at least {TARGET_RATIO:.0%})"
            )
        if to_grpc is not None:
            verdict = "PASS" if to_grpc > 1.0 else "FAIL"
            lines.append(f"{verdict}: {where}: {to_grpc:.2f}x grpc.aio (target: above 1.00x)")
    return lines


def to_json(
    cases: Sequence[Case], info: dict[str, Any], rounds: int, wall: float
) -> dict[str, Any]:
    return {
        "machine": {
            **info,
            "trio-websocket": version("trio-websocket"),
            "hypercorn": version("hypercorn"),
            "grpcio": grpc.__version__,
        },
        "rounds": rounds,
        "concurrency": CONCURRENCY,
        "wall_seconds": wall,
        "cases": [
            {
                "mode": case.mode,
                "impl": case.impl,
                "label": case.label,
                "calls_per_round": case.calls,
                "rates": [s.rate for s in case.samples],
                "cpu_shares": [s.cpu_share for s in case.samples],
                "best": case.best,
                "median": case.median,
                "ratio_to_bare": ratio_to(cases, case, "bare"),
                "ratio_to_grpc": ratio_to(cases, case, "grpc"),
            }
            for case in cases
        ],
        "target": {"ratio_to_bare": TARGET_RATIO, "ratio_to_grpc": 1.0},
    }


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m bench.websocket", description=(__doc__ or "").split("\n\n")[0]
    )
    parser.add_argument("--quick", action="store_true", help="a short run, for a smoke test")
    parser.add_argument("--rounds", type=int, help="measurements per case (default 9, quick 3)")
    parser.add_argument(
        "--profile", action="store_true", help="then profile the sequential bare and tether cases"
    )
    parser.add_argument("--json", type=Path, metavar="PATH", help="also write results here")
    args = parser.parse_args(argv)
    rounds: int = args.rounds or (3 if args.quick else 9)
    seconds = QUICK_SECONDS if args.quick else SECONDS

    info = machine_info()
    started = time.perf_counter()
    cases = trio.run(run_cases, rounds, seconds)
    wall = time.perf_counter() - started

    print(
        f"\n{format_machine(info)}; trio-websocket {version('trio-websocket')}; "
        f"hypercorn {version('hypercorn')}; grpcio {grpc.__version__}"
    )
    print(
        f"{rounds} interleaved rounds of about {seconds} s per case, {wall:.0f} s in all; one "
        "connection (one gRPC channel) per case, on 127.0.0.1.\n"
        "The Trio cases' server and client share one process, one Trio loop and so one core "
        f"(of {info['cores']}). grpc.aio runs in an asyncio loop of the same process, between "
        "the Trio cases, but its C core does HTTP/2 and socket I/O on threads of its own and can "
        "use another core: see CPU/wall (process CPU time over wall time, median round).\n"
    )
    print(results_table(cases))
    print()
    for line in verdict_lines(cases):
        print(line)
    if args.json is not None:
        args.json.write_text(json.dumps(to_json(cases, info, rounds, wall), indent=2) + "\n")
        print(f"\nwrote {args.json}")
    if args.profile:
        print()
        print(format_profiles(trio.run(run_profiles, 2000 if args.quick else 5000)))


if __name__ == "__main__":
    main()
