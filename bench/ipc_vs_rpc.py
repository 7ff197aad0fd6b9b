"""IPC against RPC: tether's invoke rate over its call rate, on each transport, in one run.

Run from the repository root::

    .venv/bin/python -m bench.ipc_vs_rpc                 # full run, about 40 seconds
    .venv/bin/python -m bench.ipc_vs_rpc --quick         # a few seconds, for a smoke test
    .venv/bin/python -m bench.ipc_vs_rpc --json out.json # also write the results as JSON

Measured, in one run, on every transport of `TRANSPORTS`:

* an RPC call `hello(name: str) -> str` through a typed client (`bench.inprocess`'s
  `BenchApi`), and an IPC invoke of the same method through a typed proxy
  (`bench.ipc`'s `BenchIpc`), both answering `"hi " + name`;
* in two modes: sequential (one caller) and 64 concurrent callers sharing one
  connection (one session);
* notifications backend -> frontend as in `bench.ipc` (a `burst(count)` invoke,
  a checkpoint every 64, every tick checked to arrive in order).

The transports: `memory` (`memory.connect` and `memory.connect_ipc`, same
loop), `websocket` (one `websocket.serve` on 127.0.0.1, port 0, serving both,
with `websocket.connect` and `websocket.connect_ipc`) and `local` (one
`local.serve` on a Unix socket in a private directory, with `local.connect`
and `local.connect_ipc`); every server runs in the benchmark's own Trio loop.
The RPC and IPC cases of a transport and mode are interleaved for several
rounds (reversed every other round), with the same count in every round; the
table shows the best round and the median, and IPC / RPC is the ratio of the
best rounds.

The issue's goal (issue 13, point 4) is printed at the end: sequential IPC /
RPC >= 1.0 (goal 1.1), 64 concurrent >= 1.0; the exit status is 0 either way.
This script is separate from `bench.ipc`, which measures IPC against bare Trio
loops in-process, because this one compares tether with itself across
transports: different baselines, different servers.
"""

from __future__ import annotations

import functools
import gc
import json
import statistics
import sys
import time
from collections.abc import Awaitable, Callable, Sequence
from contextlib import AsyncExitStack
from typing import Any, Literal

import attrs
import trio

from bench.inprocess import (
    CONCURRENCY,
    BenchApi,
    _round_calls,
    format_machine,
    format_rate,
    machine_info,
    make_manager,
    markdown_table,
    parse_bench_args,
)
from bench.ipc import (
    ARGUMENT,
    EXPECTED,
    BenchIpc,
    Receiver,
    TickListener,
    make_backend,
    notify_measure,
)
from tether.transports import local, memory, websocket

Mode = Literal["sequential", "concurrent", "notify"]
Kind = Literal["rpc", "ipc"]
Op = Callable[[str], Awaitable[str]]
Measure = Callable[[int], Awaitable[float]]

MODES: tuple[Mode, ...] = ("sequential", "concurrent", "notify")
#: Sequential IPC / RPC must reach this (issue 13, point 4); GOAL is what it aims for.
TARGET = 1.0
GOAL = 1.1
#: Starting and closing a transport's connections may take this long at most.
STARTUP_TIMEOUT = 20.0

_MODE_LABELS: dict[Mode, str] = {
    "sequential": "hello(str) -> str, sequential",
    "concurrent": f"hello(str) -> str, {CONCURRENCY} concurrent",
    "notify": "notify tick(int), backend -> frontend",
}


@attrs.define
class Ends:
    """What one transport gives the benchmark: an RPC call, an IPC invoke, notifications."""

    rpc: Op
    ipc: Op
    ipc_proxy: BenchIpc
    receiver: Receiver


async def _ends(stack: AsyncExitStack, rpc_connect: Any, ipc_connect: Any) -> Ends:
    rpc = await stack.enter_async_context(rpc_connect)
    ipc = await stack.enter_async_context(ipc_connect)
    receiver = Receiver()
    ipc.add_notification_handler(TickListener(receiver))
    proxy = ipc.proxy(BenchIpc)
    return Ends(rpc.get_client(BenchApi).hello, proxy.hello, proxy, receiver)


async def open_memory(nursery: trio.Nursery, stack: AsyncExitStack) -> Ends:
    """In-process, same Trio loop."""
    return await _ends(
        stack,
        memory.connect(make_manager(), interfaces=[BenchApi]),
        memory.connect_ipc(make_backend(), channels=[BenchIpc]),
    )


async def open_websocket(nursery: trio.Nursery, stack: AsyncExitStack) -> Ends:
    """One trio-websocket server on 127.0.0.1 serving RPC and IPC."""
    serve = functools.partial(
        websocket.serve, make_manager(), "127.0.0.1", 0, ipc=make_backend(), ping_interval=None
    )
    url: str = await nursery.start(serve)
    return await _ends(
        stack,
        websocket.connect(url, interfaces=[BenchApi], ping_interval=None),
        websocket.connect_ipc(url, channels=[BenchIpc], ping_interval=None),
    )


async def open_local(nursery: trio.Nursery, stack: AsyncExitStack) -> Ends:
    """One local (Unix socket) server in a private directory serving RPC and IPC."""
    serve = functools.partial(local.serve, make_manager(), ipc=make_backend())
    path: str = await nursery.start(serve)
    return await _ends(
        stack,
        local.connect(path, interfaces=[BenchApi]),
        local.connect_ipc(path, channels=[BenchIpc]),
    )


#: The transports measured, in order: (name, opener). One line each.
TRANSPORTS: list[tuple[str, Callable[[trio.Nursery, AsyncExitStack], Awaitable[Ends]]]] = [
    ("memory", open_memory),
    ("websocket", open_websocket),
    ("local", open_local),
]


@attrs.define
class Case:
    """One row of the table."""

    transport: str
    mode: Mode
    kind: Kind
    measure: Measure
    count: int = 0
    rates: list[float] = attrs.field(factory=list)

    @property
    def label(self) -> str:
        return f"{self.transport}, {_MODE_LABELS[self.mode]}, {self.kind.upper()}"

    @property
    def best(self) -> float:
        return max(self.rates)

    @property
    def median(self) -> float:
        return statistics.median(self.rates)


async def _call(op: Op, count: int) -> None:
    for _ in range(count):
        await op(ARGUMENT)


def call_measure(op: Op, concurrency: int) -> Measure:
    async def measure(count: int) -> float:
        if (answer := await op(ARGUMENT)) != EXPECTED:
            raise AssertionError(f"got {answer!r}")
        per_caller = count // concurrency
        gc.collect()
        started = time.perf_counter()
        if concurrency == 1:
            await _call(op, per_caller)
        else:
            async with trio.open_nursery() as nursery:
                for _ in range(concurrency):
                    nursery.start_soon(_call, op, per_caller)
        return per_caller * concurrency / (time.perf_counter() - started)

    return measure


def cases_of(transport: str, ends: Ends) -> list[list[Case]]:
    """The groups of cases measured against each other: RPC and IPC per mode; notify alone."""
    groups: list[list[Case]] = []
    for mode in MODES:
        if mode == "notify":
            measure = notify_measure(ends.ipc_proxy, ends.receiver, f"{transport}, notify")
            groups.append([Case(transport, mode, "ipc", measure)])
            continue
        concurrency = CONCURRENCY if mode == "concurrent" else 1
        groups.append(
            [
                Case(transport, mode, "rpc", call_measure(ends.rpc, concurrency)),
                Case(transport, mode, "ipc", call_measure(ends.ipc, concurrency)),
            ]
        )
    return groups


async def run_cases(rounds: int, seconds: float) -> list[Case]:
    """Open every transport once, size each case, then measure every case `rounds` times."""
    groups: list[list[Case]] = []
    async with trio.open_nursery() as nursery:
        try:
            with trio.CancelScope(deadline=trio.current_time() + STARTUP_TIMEOUT) as bounded:
                async with AsyncExitStack() as stack:
                    for name, opener in TRANSPORTS:
                        groups += cases_of(name, await opener(nursery, stack))
                    bounded.deadline = trio.current_time() + 1e9
                    warmup = _round_calls(20_000, seconds / 10)
                    for group in groups:
                        for case in group:
                            case.count = _round_calls(await case.measure(warmup), seconds)
                    for index in range(rounds):
                        print(f"round {index + 1}/{rounds}", file=sys.stderr, flush=True)
                        for group in groups:
                            for case in group if index % 2 == 0 else reversed(group):
                                case.rates.append(await case.measure(case.count))
                    bounded.deadline = trio.current_time() + STARTUP_TIMEOUT
            if bounded.cancelled_caught:
                raise trio.TooSlowError("starting or closing the connections took too long")
        finally:
            nursery.cancel_scope.cancel()
    return [case for group in groups for case in group]


# ---------------------------------------------------------------------------
# Reporting


def find(cases: Sequence[Case], transport: str, mode: Mode, kind: Kind) -> Case | None:
    return next(
        (c for c in cases if (c.transport, c.mode, c.kind) == (transport, mode, kind)), None
    )


def ratio(cases: Sequence[Case], case: Case) -> float | None:
    """IPC / RPC of the best rounds, for an IPC invoke case."""
    rpc = find(cases, case.transport, case.mode, "rpc")
    if case.kind != "ipc" or rpc is None:
        return None
    return case.best / rpc.best


def results_table(cases: Sequence[Case]) -> str:
    rows = []
    for case in cases:
        unit = "messages" if case.mode == "notify" else "calls"
        found = ratio(cases, case)
        rows.append(
            [
                case.label,
                f"{format_rate(case.best)} {unit}/s",
                format_rate(case.median),
                f"{1e6 / case.best:.1f}",
                "—" if found is None else f"{found:.2f}",
            ]
        )
    headers = ["case", "per second (best)", "median", "µs each (best)", "IPC / RPC"]
    return markdown_table(headers, rows)


def verdict_lines(cases: Sequence[Case]) -> list[str]:
    lines = [f"IPC / RPC, best rounds (target >= {TARGET}, sequential goal {GOAL}):"]
    for case in cases:
        found = ratio(cases, case)
        if found is None:
            continue
        verdict = "PASS" if found >= TARGET else "FAIL"
        if case.mode == "sequential" and found >= GOAL:
            verdict += " (goal met)"
        lines.append(f"  {case.transport}, {_MODE_LABELS[case.mode]}: {found:.3f} {verdict}")
    return lines


def to_json(
    cases: Sequence[Case], info: dict[str, Any], rounds: int, wall: float
) -> dict[str, Any]:
    return {
        "machine": info,
        "rounds": rounds,
        "concurrency": CONCURRENCY,
        "wall_seconds": wall,
        "cases": [
            {
                "transport": case.transport,
                "mode": case.mode,
                "kind": case.kind,
                "label": case.label,
                "count_per_round": case.count,
                "rates": case.rates,
                "best": case.best,
                "median": case.median,
                "ipc_over_rpc": ratio(cases, case),
            }
            for case in cases
        ],
    }


def main(argv: Sequence[str] | None = None) -> None:
    args, rounds, seconds = parse_bench_args("bench.ipc_vs_rpc", __doc__, argv, quick_seconds=0.06)
    if not args.rounds and not args.quick:
        rounds = 7  # about 40 s on a small machine

    info = machine_info()
    started = time.perf_counter()
    cases = trio.run(run_cases, rounds, seconds)
    wall = time.perf_counter() - started

    print(f"\n{format_machine(info)}")
    print(f"{rounds} interleaved rounds, {wall:.0f} s in all\n")
    print(results_table(cases))
    print()
    print("\n".join(verdict_lines(cases)))
    if args.json is not None:
        args.json.write_text(json.dumps(to_json(cases, info, rounds, wall), indent=2) + "\n")
        print(f"\nwrote {args.json}")


if __name__ == "__main__":
    main()
