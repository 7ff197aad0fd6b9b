"""Streams: small items per second over one WebSocket, and MB/s of 64 MiB in 1 MiB items.

Run from the repository root::

    .venv/bin/python -m bench.streams                  # full run, about a minute
    .venv/bin/python -m bench.streams --quick          # a few seconds, for a smoke test
    .venv/bin/python -m bench.streams --rounds 3       # fewer rounds
    .venv/bin/python -m bench.streams --profile        # then profile the tether cases
    .venv/bin/python -m bench.streams --json out.json  # also write the results as JSON

Two groups of cases, each measured against its baseline in the same run (issue
14, point 9):

1. **Small items** (items per second), one process, one Trio loop: a server
   stream of `Reading` items (a frozen attrs class: an int, two floats, a
   short str), as many as the reader takes, over ONE connection:

   - bare: a `trio_websocket.serve_websocket` server whose handler, asked for
     N items, sends N text messages `{"t":"item","id":1,"value":{"seq":..,
     "x":..,"y":..,"label":..}}` (orjson, the exact bytes tether puts on the
     wire for such an item: checked at start) and a final `result`; the
     reader (`trio_websocket.open_websocket_url`) decodes each with orjson
     and builds the `Reading`, as tether's client hands the application one;
   - tether, WebSocket: `websocket.serve` with an RpcManager, whose impl is an
     async generator yielding `Reading`s as fast as it may; the client
     (`websocket.connect`) iterates `tether.open_stream(client.readings(N))`;
   - for context (no target), the same tether stream over `memory.connect`
     (same loop) and `local` (`local.serve`, a Unix socket).

2. **Bulk bytes** (MB/s, MB = 10^6 bytes): 64 MiB in 1 MiB items, the
   backend in a CHILD process (`python -m bench.streams --serve`), the
   client in this one:

   - bare: a Trio TCP stream between the same two processes: the child
     (`trio.serve_tcp`) writes 64 chunks of 1 MiB with `send_all`, this
     process reads with `receive_some(1 MiB)` until it has them all;
   - tether, WebSocket: a server stream `chunks(64, 1 MiB) -> Stream[bytes]`
     from `websocket.serve`, read through `websocket.connect`;
   - tether, HTTP: the same stream from `http.serve` (hypercorn), read through
     `http.connect`;
   - and the other way, a client stream (upload): `swallow(chunks:
     Stream[bytes]) -> int` taking the same 64 MiB, against this process
     writing the 64 chunks to the child over bare TCP (`send_all`) and the
     child reading them with `receive_some`.

   Each row also shows the CPU time this process (the client) and the child
   (the server) spent per MB, read from the OS.

Each case is measured several rounds, interleaved with its baseline (within a
group every case runs once per round, in reversed order every other round);
the small-item cases are sized from a warm-up so that one measurement takes
about the same time. The tables show the best round and the median; ratios
come from the best rounds (the median ratio is shown beside it). The targets
(issue 14: tether over WebSocket at least 0.8x the bare sender's items per
second; each bulk download at least 0.5x bare TCP's MB/s) are printed as PASS
or FAIL; uploads are reported against the same 0.5x bar, marked as such. The
exit status is 0 either way.

`--profile` then runs the tether WebSocket small-item stream under cProfile
(in this process: server and client) and the WebSocket and HTTP bulk
downloads with the profiler on in both processes, and prints own time by area
and the hottest functions.

Only tether's public API drives the cases, so `PYTHONPATH=<checkout>/src
python -m bench.streams` measures that checkout.
"""

from __future__ import annotations

import argparse
import cProfile
import functools
import gc
import json
import math
import os
import pstats
import statistics
import struct
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import AsyncExitStack, asynccontextmanager
from importlib.metadata import version
from pathlib import Path
from typing import Any

import attrs
import orjson
import trio
from trio_websocket import (
    ConnectionClosed,
    WebSocketRequest,
    WebSocketServer,
    open_websocket_url,
    serve_websocket,
)

import tether
from bench.http import _short
from bench.inprocess import format_machine, machine_info, markdown_table
from bench.sessions import _child_env, _read_line
from tether.transports import http, local, memory, websocket

#: tether over WebSocket must reach this share of the bare sender's items per second.
TARGET_ITEMS = 0.8
#: Each tether bulk download must reach this share of bare TCP's MB/s.
TARGET_BULK = 0.5
MiB = 1024 * 1024
#: The bulk cases: this many items of CHUNK bytes (64 MiB); with --quick, QUICK_CHUNKS.
CHUNK = MiB
CHUNKS = 64
QUICK_CHUNKS = 8
#: Seconds one small-item measurement should take; and with --quick.
SECONDS = 0.5
QUICK_SECONDS = 0.1
#: Items in the warm-up that sizes each small-item case.
WARMUP_ITEMS = 2000
#: Seconds one measurement may take before the run fails (rather than hangs).
MEASURE_TIMEOUT = 120.0
#: Seconds starting the servers and connecting (or closing them) may take.
STARTUP_TIMEOUT = 30.0
#: MB, for MB/s.
MB = 1e6

_CALL_ID = 1
_X, _Y, _LABEL = 1.25, -3.5, "robot-1"


# ---------------------------------------------------------------------------
# The interface both sides import


@attrs.frozen
class Reading:
    """A small stream item: what a telemetry stream would carry."""

    seq: int
    x: float
    y: float
    label: str


class StreamBench(tether.RpcInterface):
    interface_name = "bench.Streams"
    interface_version = "1.0.0"

    def readings(self, count: int) -> tether.Stream[Reading]: ...  # type: ignore[empty-body]

    def chunks(self, count: int, size: int) -> tether.Stream[bytes]: ...  # type: ignore[empty-body]

    async def swallow(self, chunks: tether.Stream[bytes]) -> int:  # type: ignore[empty-body]
        ...


@functools.cache
def _chunk(size: int) -> bytes:
    """The bytes every bulk case moves: the same object item after item, on every side."""
    return bytes(range(256)) * (size // 256) + bytes(size % 256)


class StreamBenchImpl(StreamBench):
    async def readings(self, count: int) -> AsyncIterator[Reading]:
        for seq in range(count):
            yield Reading(seq, _X, _Y, _LABEL)

    async def chunks(self, count: int, size: int) -> AsyncIterator[bytes]:
        chunk = _chunk(size)
        for _ in range(count):
            yield chunk

    async def swallow(self, chunks: tether.Stream[bytes]) -> int:
        total = 0
        async for chunk in chunks:
            total += len(chunk)
        return total


def make_manager() -> tether.RpcManager:
    manager = tether.RpcManager()
    manager.register_impl(StreamBench, StreamBenchImpl)
    return manager


# ---------------------------------------------------------------------------
# Measurements


@attrs.frozen
class Sample:
    #: Items or bytes moved, and the wall time it took.
    amount: int
    seconds: float
    #: CPU seconds this process and the child spent meanwhile (child: 0 in-process).
    client_cpu: float
    server_cpu: float

    @property
    def rate(self) -> float:
        return self.amount / self.seconds


Measure = Callable[[int], Awaitable[Sample]]


@attrs.define
class Case:
    key: str
    label: str
    #: The baseline this case is compared with (None: it is a baseline).
    baseline: str | None
    measure: Measure
    #: What `measure` times: moves that many items or bytes, returns what it moved.
    run: Callable[[int], Awaitable[int]]
    #: Items (small) or bytes (bulk) per measurement.
    amount: int = 0
    samples: list[Sample] = attrs.field(factory=list)

    def _best_sample(self) -> Sample:
        return max(self.samples, key=lambda s: s.rate)

    @property
    def best(self) -> float:
        return self._best_sample().rate

    @property
    def median(self) -> float:
        return statistics.median(s.rate for s in self.samples)

    def cpu_per(self, unit: float) -> tuple[float, float]:
        """Client and server CPU seconds per `unit` moved, median over the rounds."""
        return (
            statistics.median(s.client_cpu / s.amount * unit for s in self.samples),
            statistics.median(s.server_cpu / s.amount * unit for s in self.samples),
        )


def _cpu_seconds(pid: int) -> float:
    """CPU time process `pid`'s main thread has used, in seconds (`/proc/PID/schedstat`:
    nanoseconds, where `/proc/PID/stat` counts 10 ms ticks)."""
    with open(f"/proc/{pid}/schedstat") as stat:
        return int(stat.read().split()[0]) / 1e9


class _Clock:
    def __init__(self, child: int | None) -> None:
        self._child = child
        self._server = 0.0 if child is None else _cpu_seconds(child)
        self._cpu = time.process_time()
        self._wall = time.perf_counter()

    def sample(self, amount: int) -> Sample:
        wall = time.perf_counter() - self._wall
        cpu = time.process_time() - self._cpu
        server = 0.0 if self._child is None else _cpu_seconds(self._child) - self._server
        return Sample(amount, wall, cpu, server)


def _timed(run: Callable[[int], Awaitable[int]], child: int | None = None) -> Measure:
    """A measurement of `run(amount)`, which returns what it moved (checked)."""

    async def measure(amount: int) -> Sample:
        with trio.fail_after(MEASURE_TIMEOUT):
            gc.collect()
            clock = _Clock(child)
            moved = await run(amount)
            sample = clock.sample(moved)
        if moved != amount:
            raise AssertionError(f"moved {moved}, expected {amount}")
        return sample

    return measure


async def interleave(groups: Sequence[Sequence[Case]], rounds: int) -> None:
    """Measure every case `rounds` times, its group's cases alternating, reversed every
    other round."""
    for index in range(rounds):
        print(f"round {index + 1}/{rounds}", file=sys.stderr, flush=True)
        for group in groups:
            for case in group if index % 2 == 0 else reversed(group):
                case.samples.append(await case.measure(case.amount))


@asynccontextmanager
async def _bounded_startup() -> AsyncIterator[Callable[[bool], None]]:
    """Bound starting and stopping by STARTUP_TIMEOUT; yield `measuring(on)`, which lifts
    the bound while the cases are measured and sets it again for the closing.

    (A connection's nursery cannot sit inside a `fail_after` left before it closes.)
    """
    with trio.CancelScope(deadline=trio.current_time() + STARTUP_TIMEOUT) as bounded:

        def measuring(on: bool) -> None:
            bounded.deadline = math.inf if on else trio.current_time() + STARTUP_TIMEOUT

        yield measuring
    if bounded.cancelled_caught:
        raise trio.TooSlowError("starting or closing the connections took too long")


# ---------------------------------------------------------------------------
# 1. Small items, one process: the bare trio-websocket sender and reader


def _item_message(seq: int) -> bytes:
    return orjson.dumps(
        {"t": "item", "id": _CALL_ID, "value": {"seq": seq, "x": _X, "y": _Y, "label": _LABEL}}
    )


_RESULT_MESSAGE = orjson.dumps({"t": "result", "id": _CALL_ID, "value": None}).decode()


def check_same_wire_form() -> None:
    """The bare sender's item is byte for byte what tether sends for the same item."""
    from tether.runtime import CONVERTER
    from tether.runtime._protocol import Item, encode

    theirs = encode(Item(_CALL_ID, CONVERTER.unstructure(Reading(7, _X, _Y, _LABEL))))
    if theirs != _item_message(7):
        raise AssertionError(f"tether sends {theirs!r}, the bare sender {_item_message(7)!r}")


async def _bare_items_handler(request: WebSocketRequest) -> None:
    """Asked `{"count": n}`, send n item messages and a result, each as a text message."""
    ws = await request.accept()
    try:
        while True:
            count = orjson.loads(await ws.get_message())["count"]
            for seq in range(count):
                await ws.send_message(_item_message(seq).decode())
            await ws.send_message(_RESULT_MESSAGE)
    except ConnectionClosed:
        pass


async def serve_bare_items(*, task_status: trio.TaskStatus[str]) -> None:
    async def serve(*, task_status: trio.TaskStatus[WebSocketServer]) -> None:
        await serve_websocket(_bare_items_handler, "127.0.0.1", 0, None, task_status=task_status)

    async with trio.open_nursery() as nursery:
        server: WebSocketServer = await nursery.start(serve)
        task_status.started(f"ws://127.0.0.1:{server.port}/")


def _bare_reader(ws: Any) -> Callable[[int], Awaitable[int]]:
    async def run(count: int) -> int:
        await ws.send_message(orjson.dumps({"count": count}).decode())
        taken = 0
        while True:
            message = orjson.loads(await ws.get_message())
            if message["t"] != "item":
                return taken
            Reading(**message["value"])
            taken += 1

    return run


def _tether_reader(client: StreamBench) -> Callable[[int], Awaitable[int]]:
    async def run(count: int) -> int:
        taken = 0
        async with tether.open_stream(client.readings(count)) as readings:
            async for _reading in readings:
                taken += 1
        return taken

    return run


ITEM_CASES = {
    "bare-ws": "bare trio-websocket sender and reader",
    "tether-ws": "tether, WebSocket (websocket.serve)",
    "tether-memory": "tether, memory (same loop)",
    "tether-local": "tether, local (Unix socket)",
}


@asynccontextmanager
async def open_item_cases() -> AsyncIterator[list[Case]]:
    """Start the in-process servers, connect once to each; yield the small-item cases."""
    check_same_wire_form()
    runs: dict[str, Callable[[int], Awaitable[int]]] = {}
    async with trio.open_nursery() as nursery:
        try:
            async with _bounded_startup() as measuring, AsyncExitStack() as stack:
                bare_url: str = await nursery.start(serve_bare_items)
                runs["bare-ws"] = _bare_reader(
                    await stack.enter_async_context(open_websocket_url(bare_url))
                )
                url = await nursery.start(
                    functools.partial(websocket.serve, make_manager(), "127.0.0.1", 0)
                )
                ws = await stack.enter_async_context(
                    websocket.connect(url, interfaces=[StreamBench])
                )
                runs["tether-ws"] = _tether_reader(ws.get_client(StreamBench))
                mem = await stack.enter_async_context(
                    memory.connect(make_manager(), interfaces=[StreamBench])
                )
                runs["tether-memory"] = _tether_reader(mem.get_client(StreamBench))
                path = await nursery.start(functools.partial(local.serve, make_manager()))
                loc = await stack.enter_async_context(local.connect(path, interfaces=[StreamBench]))
                runs["tether-local"] = _tether_reader(loc.get_client(StreamBench))
                cases = [
                    Case(
                        key,
                        label,
                        None if key == "bare-ws" else "bare-ws",
                        _timed(runs[key]),
                        runs[key],
                    )
                    for key, label in ITEM_CASES.items()
                ]
                measuring(True)
                yield cases
                measuring(False)
        finally:
            nursery.cancel_scope.cancel()


async def run_item_cases(rounds: int, seconds: float) -> list[Case]:
    async with open_item_cases() as cases:
        for case in cases:
            warmup = await case.measure(WARMUP_ITEMS)
            case.amount = max(WARMUP_ITEMS, round(warmup.rate * seconds))
        await interleave([cases], rounds)
    return cases


# ---------------------------------------------------------------------------
# 2. Bulk bytes, two processes: the child's servers

_REQUEST = struct.Struct(">cII")  # b"d" (download) or b"u" (upload), count, size
_TOTAL = struct.Struct(">Q")


async def _bare_tcp_handler(stream: trio.SocketStream) -> None:
    """Asked to send, write `count` chunks of `size` bytes; asked to take, read as many and
    answer their total."""
    buffer = bytearray()
    try:
        while True:
            while len(buffer) < _REQUEST.size:
                data = await stream.receive_some(CHUNK)
                if not data:
                    return
                buffer += data
            op, count, size = _REQUEST.unpack_from(buffer)
            del buffer[: _REQUEST.size]
            if op == b"d":
                chunk = _chunk(size)
                for _ in range(count):
                    await stream.send_all(chunk)
                continue
            expected, got = count * size, len(buffer)
            buffer.clear()
            while got < expected:
                data = await stream.receive_some(CHUNK)
                if not data:
                    return
                got += len(data)
            await stream.send_all(_TOTAL.pack(got))
    except (trio.BrokenResourceError, trio.ClosedResourceError):
        pass


async def serve_child(profile: str | None) -> None:
    """The child process: bare TCP, tether WebSocket and HTTP servers; prints their
    addresses as one JSON line, then serves until killed.

    With `profile`, SIGUSR1 starts cProfile and SIGUSR2 stops it, writing the stats there.
    """
    manager = make_manager()
    async with trio.open_nursery() as nursery:
        listeners = await nursery.start(
            functools.partial(trio.serve_tcp, _bare_tcp_handler, 0, host="127.0.0.1")
        )
        port = listeners[0].socket.getsockname()[1]
        ws_url = await nursery.start(functools.partial(websocket.serve, manager, "127.0.0.1", 0))
        http_url = await nursery.start(functools.partial(http.serve, manager, "127.0.0.1", 0))
        if profile is not None:
            nursery.start_soon(_profile_on_signal, profile)
        print(json.dumps({"tcp": port, "websocket": ws_url, "http": http_url}), flush=True)
        await trio.sleep_forever()


async def _profile_on_signal(path: str) -> None:
    import signal

    profiler: cProfile.Profile | None = None
    with trio.open_signal_receiver(signal.SIGUSR1, signal.SIGUSR2) as signals:
        async for signum in signals:
            if signum == signal.SIGUSR1:
                profiler = cProfile.Profile()
                profiler.enable()
            elif profiler is not None:
                profiler.disable()
                profiler.dump_stats(path)
                profiler = None
                print("profiled", flush=True)


# ---------------------------------------------------------------------------
# 2. Bulk bytes: this process's clients


def _bare_download(stream: trio.SocketStream) -> Callable[[int], Awaitable[int]]:
    async def run(amount: int) -> int:
        await stream.send_all(_REQUEST.pack(b"d", amount // CHUNK, CHUNK))
        got = 0
        while got < amount:
            data = await stream.receive_some(CHUNK)
            if not data:
                raise trio.BrokenResourceError("the child closed the bare TCP stream")
            got += len(data)
        return got

    return run


def _bare_upload(stream: trio.SocketStream) -> Callable[[int], Awaitable[int]]:
    chunk = _chunk(CHUNK)

    async def run(amount: int) -> int:
        await stream.send_all(_REQUEST.pack(b"u", amount // CHUNK, CHUNK))
        for _ in range(amount // CHUNK):
            await stream.send_all(chunk)
        reply = b""
        while len(reply) < _TOTAL.size:
            data = await stream.receive_some(_TOTAL.size - len(reply))
            if not data:
                raise trio.BrokenResourceError("the child closed the bare TCP stream")
            reply += data
        (total,) = _TOTAL.unpack(reply)
        return int(total)

    return run


def _tether_download(client: StreamBench) -> Callable[[int], Awaitable[int]]:
    async def run(amount: int) -> int:
        got = 0
        async with tether.open_stream(client.chunks(amount // CHUNK, CHUNK)) as chunks:
            async for chunk in chunks:
                got += len(chunk)
        return got

    return run


def _tether_upload(client: StreamBench) -> Callable[[int], Awaitable[int]]:
    chunk = _chunk(CHUNK)

    async def source(count: int) -> AsyncIterator[bytes]:
        for _ in range(count):
            yield chunk

    async def run(amount: int) -> int:
        return await client.swallow(source(amount // CHUNK))

    return run


BULK_CASES = {
    "down": {
        "bare-tcp-down": ("download, bare Trio TCP (child -> parent)", None),
        "tether-ws-down": ("download, tether WebSocket server stream", "bare-tcp-down"),
        "tether-http-down": ("download, tether HTTP server stream (hypercorn)", "bare-tcp-down"),
    },
    "up": {
        "bare-tcp-up": ("upload, bare Trio TCP (parent -> child)", None),
        "tether-ws-up": ("upload, tether WebSocket client stream", "bare-tcp-up"),
        "tether-http-up": ("upload, tether HTTP client stream (hypercorn)", "bare-tcp-up"),
    },
}


@attrs.frozen
class Child:
    process: trio.Process
    addresses: dict[str, Any]


@asynccontextmanager
async def open_child(profile: str | None = None) -> AsyncIterator[Child]:
    """Run the child's servers for the block; it is killed at the end."""
    command = [sys.executable, "-m", "bench.streams", "--serve"]
    if profile is not None:
        command += ["--serve-profile", profile]
    async with trio.open_nursery() as nursery:
        try:
            process: trio.Process = await nursery.start(
                functools.partial(
                    trio.run_process, command, stdout=subprocess.PIPE, env=_child_env(), check=False
                )
            )
            assert process.stdout is not None
            with trio.fail_after(STARTUP_TIMEOUT):
                addresses = json.loads(await _read_line(process.stdout))
            yield Child(process, addresses)
        finally:
            nursery.cancel_scope.cancel()  # run_process kills the child


@asynccontextmanager
async def open_bulk_cases(child: Child) -> AsyncIterator[list[list[Case]]]:
    """Connect once to each of the child's servers; yield the bulk cases, by direction."""
    pid = child.process.pid
    where = child.addresses
    async with _bounded_startup() as measuring, AsyncExitStack() as stack:
        tcp = await trio.open_tcp_stream("127.0.0.1", where["tcp"])
        stack.push_async_callback(tcp.aclose)
        ws = await stack.enter_async_context(
            websocket.connect(where["websocket"], interfaces=[StreamBench])
        )
        web = await stack.enter_async_context(http.connect(where["http"], interfaces=[StreamBench]))
        ws_client, web_client = ws.get_client(StreamBench), web.get_client(StreamBench)
        runs = {
            "bare-tcp-down": _bare_download(tcp),
            "tether-ws-down": _tether_download(ws_client),
            "tether-http-down": _tether_download(web_client),
            "bare-tcp-up": _bare_upload(tcp),
            "tether-ws-up": _tether_upload(ws_client),
            "tether-http-up": _tether_upload(web_client),
        }
        groups = [
            [
                Case(key, label, baseline, _timed(runs[key], pid), runs[key])
                for key, (label, baseline) in cases.items()
            ]
            for cases in BULK_CASES.values()
        ]
        measuring(True)
        yield groups
        measuring(False)


async def run_bulk_cases(rounds: int, chunks: int) -> list[Case]:
    async with open_child() as child, open_bulk_cases(child) as groups:
        for group in groups:
            for case in group:
                case.amount = chunks * CHUNK
                await case.measure(min(chunks, 4) * CHUNK)  # warm: connections, code paths
        await interleave(groups, rounds)
    return [case for group in groups for case in group]


# ---------------------------------------------------------------------------
# Profiling

_AREAS: tuple[tuple[str, str], ...] = (
    ("tether/transports/websocket/", "tether websocket transport"),
    ("tether/transports/http/", "tether http transport"),
    ("tether/transports/", "tether, other transports"),
    ("tether/runtime/_codec", "tether codec"),
    ("tether/runtime/_protocol", "tether protocol (encode, decode)"),
    ("tether/runtime/", "tether runtime (streams, connection, dispatch)"),
    ("tether/", "tether, other"),
    ("trio_websocket/", "trio-websocket"),
    ("wsproto/", "wsproto"),
    ("hypercorn/", "hypercorn"),
    ("h11/", "h11"),
    ("cattrs/", "cattrs"),
    ("trio/", "trio"),
    ("bench/", "this benchmark"),
)


def _area(filename: str) -> str:
    path = filename.replace("\\", "/")
    for needle, area in _AREAS:
        if needle in path:
            return area
    if path == "~" or path.startswith("<"):
        return "builtins and C (socket, orjson, base64, bytes)"
    return "other Python (stdlib, attrs, ...)"


def profile_report(stats: pstats.Stats, title: str, per: float, unit: str, top: int = 15) -> str:
    """Own time by area and the hottest functions, in µs per `unit` (`per` units in all)."""
    raw: dict[tuple[str, int, str], tuple[int, int, float, float, Any]]
    raw = stats.stats  # type: ignore[attr-defined]
    scale = 1e6 / per
    by_area: dict[str, float] = defaultdict(float)
    functions = []
    for func, (_primitive, ncalls, own, cumulative, _callers) in raw.items():
        by_area[_area(func[0])] += own * scale
        functions.append((_short(func), ncalls / per, own * scale, cumulative * scale))
    total = sum(by_area.values())
    areas = sorted(by_area.items(), key=lambda kv: -kv[1])
    out = [
        f"{title} (cProfile, which inflates every Python call: compare shares, not times)",
        "",
        markdown_table(
            ["area", f"own µs per {unit}", "share"],
            [[a, f"{t:.1f}", f"{t / total:.0%}"] for a, t in areas if t / total >= 0.005]
            + [["total", f"{total:.1f}", "100%"]],
        ),
        "",
        markdown_table(
            ["function", f"calls per {unit}", "own µs", "cumulative µs"],
            [
                [f, f"{n:.2f}", f"{o:.1f}", f"{c:.1f}"]
                for f, n, o, c in sorted(functions, key=lambda x: -x[2])[:top]
            ],
        ),
    ]
    return "\n".join(out)


async def profile_items(count: int) -> str:
    async with open_item_cases() as cases:
        case = next(c for c in cases if c.key == "tether-ws")
        await case.measure(count // 4)
        gc.collect()
        profiler = cProfile.Profile()
        profiler.enable()
        with trio.fail_after(MEASURE_TIMEOUT):
            await case.run(count)
        profiler.disable()
    return profile_report(
        pstats.Stats(profiler),
        f"tether WebSocket stream of {count:,} small items, server and client in one process",
        count,
        "item",
    )


async def profile_bulk(chunks: int) -> str:
    import signal

    reports = []
    with tempfile.TemporaryDirectory(prefix="tether-bench-") as directory:
        path = os.path.join(directory, "child.prof")
        async with open_child(path) as child, open_bulk_cases(child) as groups:
            assert child.process.stdout is not None
            for case in groups[0][1:]:
                await case.measure(min(chunks, 4) * CHUNK)
                gc.collect()
                child.process.send_signal(signal.SIGUSR1)
                await trio.sleep(0.2)  # let the child's signal task start the profiler
                profiler = cProfile.Profile()
                profiler.enable()
                with trio.fail_after(MEASURE_TIMEOUT):
                    await case.run(chunks * CHUNK)
                profiler.disable()
                child.process.send_signal(signal.SIGUSR2)
                with trio.fail_after(STARTUP_TIMEOUT):
                    await _read_line(child.process.stdout)  # "profiled"
                megabytes = chunks * CHUNK / MB
                reports.append(
                    profile_report(
                        pstats.Stats(profiler),
                        f"{case.label}: the client (this process)",
                        megabytes,
                        "MB",
                    )
                )
                reports.append(
                    profile_report(
                        pstats.Stats(path), f"{case.label}: the server (child)", megabytes, "MB"
                    )
                )
    return "\n\n".join(reports)


# ---------------------------------------------------------------------------
# Reporting


def _by_key(cases: Sequence[Case]) -> dict[str, Case]:
    return {case.key: case for case in cases}


def ratios(cases: Sequence[Case], case: Case) -> tuple[float, float] | None:
    """`case` over its baseline: best over best, median over median."""
    if case.baseline is None:
        return None
    base = _by_key(cases)[case.baseline]
    return case.best / base.best, case.median / base.median


def _ratio_cells(cases: Sequence[Case], case: Case) -> list[str]:
    found = ratios(cases, case)
    return ["—", "—"] if found is None else [f"{found[0]:.2f}", f"{found[1]:.2f}"]


def items_table(cases: Sequence[Case]) -> str:
    rows = [
        [
            case.label,
            f"{case.best:,.0f}",
            f"{case.median:,.0f}",
            f"{1e6 / case.best:.1f}",
            *_ratio_cells(cases, case),
        ]
        for case in cases
    ]
    headers = ["case", "items/s (best)", "median", "µs/item (best)", "vs bare", "median vs bare"]
    return markdown_table(headers, rows)


def bulk_table(cases: Sequence[Case]) -> str:
    rows = []
    for case in cases:
        client, server = case.cpu_per(MB)
        rows.append(
            [
                case.label,
                f"{case.best / MB:,.0f}",
                f"{case.median / MB:,.0f}",
                *_ratio_cells(cases, case),
                f"{client * 1000:.2f}",
                f"{server * 1000:.2f}",
            ]
        )
    headers = [
        "case",
        "MB/s (best)",
        "median",
        "vs bare TCP",
        "median vs bare",
        "client CPU ms/MB",
        "server CPU ms/MB",
    ]
    return markdown_table(headers, rows)


def verdict_lines(items: Sequence[Case], bulk: Sequence[Case]) -> list[str]:
    lines = []
    found = _by_key(items).get("tether-ws")
    if found is not None and (ratio := ratios(items, found)) is not None:
        verdict = "PASS" if ratio[0] >= TARGET_ITEMS else "FAIL"
        lines.append(
            f"{verdict}: small items, {found.label}: {ratio[0]:.2f}x the bare sender's items/s "
            f"(target: at least {TARGET_ITEMS}x)"
        )
    for case in bulk:
        ratio = ratios(bulk, case)
        if ratio is None:
            continue
        verdict = "PASS" if ratio[0] >= TARGET_BULK else "FAIL"
        if case.key.endswith("-up"):
            lines.append(
                f"({verdict} against the same bar, no target of the issue): {case.label}: "
                f"{ratio[0]:.2f}x bare TCP's MB/s"
            )
        else:
            lines.append(
                f"{verdict}: {case.label}: {ratio[0]:.2f}x bare TCP's MB/s "
                f"(target: at least {TARGET_BULK}x)"
            )
    return lines


def _case_json(cases: Sequence[Case], case: Case) -> dict[str, Any]:
    found = ratios(cases, case)
    return {
        "key": case.key,
        "label": case.label,
        "baseline": case.baseline,
        "amount_per_round": case.amount,
        "rates": [s.rate for s in case.samples],
        "seconds": [s.seconds for s in case.samples],
        "client_cpu": [s.client_cpu for s in case.samples],
        "server_cpu": [s.server_cpu for s in case.samples],
        "best": case.best,
        "median": case.median,
        "ratio_best": None if found is None else found[0],
        "ratio_median": None if found is None else found[1],
    }


def to_json(
    items: Sequence[Case], bulk: Sequence[Case], info: dict[str, Any], rounds: int, wall: float
) -> dict[str, Any]:
    return {
        "machine": {
            **info,
            "trio-websocket": version("trio-websocket"),
            "hypercorn": version("hypercorn"),
        },
        "rounds": rounds,
        "wall_seconds": wall,
        "items": {"unit": "items/s", "cases": [_case_json(items, c) for c in items]},
        "bulk": {"unit": "bytes/s", "cases": [_case_json(bulk, c) for c in bulk]},
        "target": {"items_ratio": TARGET_ITEMS, "bulk_ratio": TARGET_BULK},
        "verdicts": verdict_lines(items, bulk),
    }


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m bench.streams", description=(__doc__ or "").split("\n\n")[0]
    )
    parser.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--serve-profile", metavar="PATH", help=argparse.SUPPRESS)
    parser.add_argument("--quick", action="store_true", help="a short run, for a smoke test")
    parser.add_argument("--rounds", type=int, help="measurements per case (default 7, quick 2)")
    parser.add_argument(
        "--chunks", type=int, help=f"1 MiB items per bulk case (default {CHUNKS}, quick 8)"
    )
    parser.add_argument(
        "--profile", action="store_true", help="then profile the tether WebSocket and HTTP cases"
    )
    parser.add_argument("--json", type=Path, metavar="PATH", help="also write the results here")
    args = parser.parse_args(argv)
    if args.serve:
        trio.run(serve_child, args.serve_profile)
        return
    rounds: int = args.rounds or (2 if args.quick else 7)
    chunks: int = args.chunks or (QUICK_CHUNKS if args.quick else CHUNKS)
    seconds = QUICK_SECONDS if args.quick else SECONDS

    info = machine_info()
    started = time.perf_counter()
    items = trio.run(run_item_cases, rounds, seconds)
    bulk = trio.run(run_bulk_cases, rounds, chunks)
    wall = time.perf_counter() - started

    print(
        f"\n{format_machine(info)}; trio-websocket {version('trio-websocket')}; "
        f"hypercorn {version('hypercorn')}; load average {os.getloadavg()[0]:.2f}"
    )
    print(
        f"{rounds} interleaved rounds per case, {wall:.0f} s in all, on 127.0.0.1; the "
        f"machine's {info['cores']} cores may be shared with other work.\n"
    )
    print(
        f"Small items (Reading: int, 2 floats, str), a server stream over one connection; "
        f"about {seconds} s per measurement; server and client in one process and one loop.\n"
    )
    print(items_table(items))
    print(
        f"\n{chunks} MiB in 1 MiB bytes items (MB = 10^6 bytes), the server in a child "
        "process, the client in this one.\n"
    )
    print(bulk_table(bulk))
    print()
    for line in verdict_lines(items, bulk):
        print(line)
    if args.json is not None:
        args.json.write_text(json.dumps(to_json(items, bulk, info, rounds, wall), indent=2) + "\n")
        print(f"\nwrote {args.json}")
    if args.profile:
        print()
        print(trio.run(profile_items, 5000 if args.quick else 20000))
        print()
        print(trio.run(profile_bulk, chunks))


if __name__ == "__main__":
    main()
