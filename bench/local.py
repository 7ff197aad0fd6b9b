"""RPC call rate over the local Unix socket: tether against a bare Trio echo and WebSocket.

Run from the repository root::

    .venv/bin/python -m bench.local                  # full run, about 30 seconds
    .venv/bin/python -m bench.local --quick          # a few seconds, for a smoke test
    .venv/bin/python -m bench.local --json out.json  # also write the results as JSON

Measured, in one run, in calls per second over ONE connection, of
`add(1, 2) -> 3`, sequential (one caller) and 64 concurrent callers:

* bare Trio Unix-socket echo: the baseline, written the usual Trio way. The
  server (`trio.serve_listeners` on a `trio.SocketListener` over a Unix
  socket) reads length-prefixed frames (4-byte big-endian length, then JSON,
  the local transport's framing) from a `trio.SocketStream`, decodes each
  `{"id": n, "args": [a, b]}` with orjson and answers `{"id": n, "value": a +
  b}` in a frame. The client (`trio.open_unix_socket`) has one reader task
  that reads the reply frames and wakes each caller by request id.
* tether, local: `local.serve` with an RpcManager, and the `local.connect`
  client stub (`client.add(1, 2)`).
* tether, WebSocket: `websocket.serve` (trio-websocket's server) on
  127.0.0.1, port 0, and the `websocket.connect` client.

Servers and clients share one process and one Trio loop. Sizing,
interleaving, best and median are as in `bench.websocket`. The targets
(issue 13: sequential tether over the local socket at least 1.3x tether over
WebSocket and at least 0.8x the bare echo) are printed as PASS or FAIL; the
exit status is 0 either way.
"""

from __future__ import annotations

import argparse
import functools
import json
import math
import struct
import sys
import tempfile
from collections.abc import AsyncIterator, Sequence
from contextlib import AsyncExitStack, asynccontextmanager
from pathlib import Path
from typing import Literal

import orjson
import trio

from bench.http import BenchApi, make_manager
from bench.inprocess import format_machine, format_rate, machine_info, markdown_table
from bench.websocket import (
    MODES,
    QUICK_SECONDS,
    SECONDS,
    STARTUP_TIMEOUT,
    WARMUP_CALLS,
    Case,
    Op,
    _round_calls,
    _Slot,
    trio_measure,
)
from tether.transports import local, websocket

#: Sequential tether over the local socket against tether over WebSocket, and against bare.
TARGET_OVER_WEBSOCKET = 1.3
TARGET_OVER_BARE = 0.8
EXPECTED = 3

Impl = Literal["bare", "local", "websocket"]
IMPLS: tuple[Impl, ...] = ("bare", "local", "websocket")
LABELS: dict[str, str] = {
    "bare": "bare Trio Unix-socket echo",
    "local": "tether, local socket",
    "websocket": "tether, WebSocket (127.0.0.1)",
}

_header = struct.Struct(">I")


class FrameReader:
    """Length-prefixed frames from a Trio stream, buffered."""

    def __init__(self, stream: trio.abc.ReceiveStream) -> None:
        self._stream = stream
        self._buffer = bytearray()

    async def frame(self) -> bytes:
        buffer = self._buffer
        while True:
            if len(buffer) >= 4:
                (size,) = _header.unpack_from(buffer)
                if len(buffer) >= 4 + size:
                    data = bytes(buffer[4 : 4 + size])
                    del buffer[: 4 + size]
                    return data
            chunk = await self._stream.receive_some(65536)
            if not chunk:
                raise trio.EndOfChannel
            buffer += chunk


def _frame(data: bytes) -> bytes:
    return _header.pack(len(data)) + data


async def _bare_handler(stream: trio.SocketStream) -> None:
    frames = FrameReader(stream)
    try:
        while True:
            message = orjson.loads(await frames.frame())
            a, b = message["args"]
            await stream.send_all(_frame(orjson.dumps({"id": message["id"], "value": a + b})))
    except (trio.EndOfChannel, trio.BrokenResourceError, trio.ClosedResourceError):
        pass


async def serve_bare(path: str, *, task_status: trio.TaskStatus[None]) -> None:
    sock = trio.socket.socket(trio.socket.AF_UNIX, trio.socket.SOCK_STREAM)
    await sock.bind(path)
    sock.listen(128)
    listener = trio.SocketListener(sock)
    await trio.serve_listeners(_bare_handler, [listener], task_status=task_status)


class BareClient:
    """Calls over one connection; a single reader task wakes each caller by request id."""

    def __init__(self, stream: trio.SocketStream) -> None:
        self._stream = stream
        self._frames = FrameReader(stream)
        self._pending: dict[int, _Slot] = {}
        self._last_id = 0
        self._send_lock = trio.Lock()

    async def read_replies(self) -> None:
        try:
            while True:
                reply = orjson.loads(await self._frames.frame())
                slot = self._pending.pop(reply["id"])
                slot.value = reply["value"]
                slot.event.set()
        except (trio.EndOfChannel, trio.ClosedResourceError, trio.BrokenResourceError):
            pass

    async def add(self, a: int, b: int) -> int:
        self._last_id += 1
        request_id = self._last_id
        slot = self._pending[request_id] = _Slot()
        async with self._send_lock:  # a SocketStream takes one sender at a time
            await self._stream.send_all(_frame(orjson.dumps({"id": request_id, "args": [a, b]})))
        await slot.event.wait()
        return slot.value


@asynccontextmanager
async def open_ops(impls: Sequence[Impl]) -> AsyncIterator[dict[Impl, Op]]:
    """Start each server, connect once; yield each implementation's call."""
    ops: dict[Impl, Op] = {}
    with tempfile.TemporaryDirectory(prefix="tether-bench-") as directory:
        async with trio.open_nursery() as nursery:
            try:
                # Capped as a whole: a connection's nursery cannot sit inside a
                # `fail_after` left before it closes.
                with trio.CancelScope(deadline=trio.current_time() + STARTUP_TIMEOUT) as bounded:
                    async with AsyncExitStack() as stack:
                        await _connect(impls, Path(directory), nursery, stack, ops)
                        bounded.deadline = math.inf
                        yield ops
                        bounded.deadline = trio.current_time() + STARTUP_TIMEOUT
                if bounded.cancelled_caught:
                    raise trio.TooSlowError("starting or closing the connections took too long")
            finally:
                nursery.cancel_scope.cancel()


async def _connect(
    impls: Sequence[Impl],
    directory: Path,
    nursery: trio.Nursery,
    stack: AsyncExitStack,
    ops: dict[Impl, Op],
) -> None:
    if "bare" in impls:
        bare_path = str(directory / "bare.sock")
        await nursery.start(serve_bare, bare_path)
        stream = await trio.open_unix_socket(bare_path)
        stack.push_async_callback(stream.aclose)
        bare = BareClient(stream)
        nursery.start_soon(bare.read_replies)
        ops["bare"] = functools.partial(bare.add, 1, 2)
    if "local" in impls:
        path = await nursery.start(functools.partial(local.serve, make_manager()))
        conn = await stack.enter_async_context(local.connect(path, interfaces=[BenchApi]))
        ops["local"] = functools.partial(conn.get_client(BenchApi).add, 1, 2)
    if "websocket" in impls:
        url = await nursery.start(
            functools.partial(websocket.serve, make_manager(), "127.0.0.1", 0)
        )
        ws = await stack.enter_async_context(websocket.connect(url, interfaces=[BenchApi]))
        ops["websocket"] = functools.partial(ws.get_client(BenchApi).add, 1, 2)
    for impl, op in ops.items():
        if (answer := await op()) != EXPECTED:
            raise AssertionError(f"{LABELS[impl]}: got {answer!r}")


async def run_cases(rounds: int, seconds: float, impls: Sequence[Impl] = IMPLS) -> list[Case]:
    """Connect once to each, size each case, then measure every case `rounds` times."""
    async with open_ops(impls) as ops:
        groups = [
            [Case(mode, impl, trio_measure(ops[impl], mode)) for impl in impls]  # type: ignore[arg-type]
            for mode in MODES
        ]
        for group in groups:
            for case in group:
                warmup = await case.measure(WARMUP_CALLS)
                case.calls = _round_calls(warmup.rate, seconds)
        for index in range(rounds):
            print(f"round {index + 1}/{rounds}", file=sys.stderr, flush=True)
            for group in groups:
                for case in group if index % 2 == 0 else reversed(group):
                    case.samples.append(await case.measure(case.calls))
    return [case for group in groups for case in group]


def _find(cases: Sequence[Case], mode: str, impl: str) -> Case:
    return next(c for c in cases if c.mode == mode and c.impl == impl)


def results_table(cases: Sequence[Case]) -> str:
    rows = []
    for case in cases:
        bare = _find(cases, case.mode, "bare").best
        ws = _find(cases, case.mode, "websocket").best
        rows.append(
            [
                f"{case.mode}, {LABELS[case.impl]}",
                format_rate(case.best),
                format_rate(case.median),
                "—" if case.impl == "bare" else f"{case.best / bare:.2f}",
                f"{case.best / ws:.2f}",
            ]
        )
    return markdown_table(
        ["case", "calls/s (best)", "median", "ratio to bare", "ratio to WebSocket"], rows
    )


def verdicts(cases: Sequence[Case]) -> list[str]:
    tether = _find(cases, "sequential", "local").best
    lines = []
    for other, target in (("websocket", TARGET_OVER_WEBSOCKET), ("bare", TARGET_OVER_BARE)):
        ratio = tether / _find(cases, "sequential", other).best
        verdict = "PASS" if ratio >= target else "FAIL"
        lines.append(
            f"sequential, tether local / {LABELS[other]}: {ratio:.2f} (target {target:g}) {verdict}"
        )
    return lines


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.local", description=__doc__)
    parser.add_argument("--rounds", type=int, default=None, help="rounds (default 9; 3 quick)")
    parser.add_argument("--quick", action="store_true", help="shorter, for a smoke test")
    parser.add_argument("--json", type=Path, default=None, help="also write results here")
    args = parser.parse_args(argv)
    rounds = args.rounds or (3 if args.quick else 9)
    seconds = QUICK_SECONDS if args.quick else SECONDS
    cases = trio.run(run_cases, rounds, seconds)
    print(format_machine(machine_info()))
    print()
    print(results_table(cases))
    print()
    for line in verdicts(cases):
        print(line)
    if args.json is not None:
        args.json.write_text(
            json.dumps(
                {
                    "machine": machine_info(),
                    "cases": [
                        {
                            "mode": c.mode,
                            "impl": c.impl,
                            "best": c.best,
                            "median": c.median,
                            "samples": [s.rate for s in c.samples],
                        }
                        for c in cases
                    ],
                    "verdicts": verdicts(cases),
                },
                indent=2,
            )
        )


if __name__ == "__main__":
    main()
