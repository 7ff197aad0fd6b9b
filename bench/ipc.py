"""In-process IPC: tether's `memory.connect_ipc` against bare Trio memory channels.

Run from the repository root::

    .venv/bin/python -m bench.ipc                 # full run, 30 to 40 seconds
    .venv/bin/python -m bench.ipc --quick         # a few seconds, for a smoke test
    .venv/bin/python -m bench.ipc --json out.json # also write the results as JSON

Measured, in one run:

* invokes, frontend -> backend, of `hello(name: str) -> str` through a typed
  proxy, in calls per second, in two modes: sequential (one caller), and 64
  concurrent callers (64 tasks sharing one session and one proxy), each against
  - bare: the `bench.inprocess` baseline, a server task answering
    `(request, reply_channel)` tuples from a Trio memory channel, both sides
    sending with `send_nowait`;
  - bare, await send: the same loop spelled with `await channel.send(...)`;
  - tether in the same Trio loop, and tether with `thread=True`;
* notifications, backend -> frontend, in messages per second: a handler method
  `burst(count)` sends `count` `tick(n)` notifications through
  `current_session().notifier(...)`, yielding every 64, and a typed
  NotificationHandler on the frontend receives them; the clock runs from the
  `burst` invoke until the last tick is delivered. Against
  - bare one-way: a producer task encoding each message (the same bytes as
    tether's `notify` envelope) with orjson and sending it over a Trio memory
    channel (buffer 256, as the in-process transport's) with `send_nowait`,
    yielding every 64; a consumer task decoding each with orjson;
  - bare one-way, await send: the producer sends with `await channel.send(...)`.

As in `bench.inprocess`, the cases of a group are interleaved for several
rounds (reversed every other round) with the same count in every round; the
table shows the best round and the median, and ratios to the fastest bare
variant are computed from the best rounds. No target is set for IPC.
"""

from __future__ import annotations

import gc
import json
import statistics
import sys
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, Literal

import attrs
import orjson
import trio

import tether
from bench.inprocess import (
    _BARE_BUFFER,
    ARGUMENTS,
    BARE_WORK,
    CONCURRENCY,
    BareClient,
    BareRequest,
    _round_calls,
    format_machine,
    format_rate,
    machine_info,
    markdown_table,
    parse_bench_args,
    serve_bare,
    serve_bare_await,
)
from tether.transports import memory

Group = Literal["sequential", "concurrent", "notify"]
Impl = Literal["bare", "bare-await", "tether", "tether-thread"]

GROUPS: tuple[Group, ...] = ("sequential", "concurrent", "notify")
IMPLS: tuple[Impl, ...] = ("bare", "bare-await", "tether", "tether-thread")

#: The notifying handler yields to the scheduler after this many notifications.
YIELD_EVERY = 64
#: Room in the bare one-way channel: the in-process transport's buffer.
ONE_WAY_BUFFER = 256
#: The backend's bound on queued notifications, far above any round's count: the
#: benchmark measures throughput, not the "frontend too slow" limit.
MAX_PENDING_NOTIFICATIONS = 1 << 22
#: Likewise for its bound in bytes (1 MiB by default, which a round's burst passes).
MAX_PENDING_BYTES = 1 << 40

_GROUP_LABELS: dict[Group, str] = {
    "sequential": "invoke hello(str) -> str, sequential",
    "concurrent": f"invoke hello(str) -> str, {CONCURRENCY} concurrent",
    "notify": "notify tick(int), backend -> frontend",
}
_IMPL_LABELS: dict[Group, dict[Impl, str]] = {
    "sequential": {
        "bare": "bare round trip",
        "bare-await": "bare, await send",
        "tether": "tether, same loop",
        "tether-thread": "tether, thread=True",
    },
    "notify": {
        "bare": "bare one-way",
        "bare-await": "bare one-way, await send",
        "tether": "tether, same loop",
        "tether-thread": "tether, thread=True",
    },
}
_IMPL_LABELS["concurrent"] = _IMPL_LABELS["sequential"]
_UNITS: dict[Group, str] = {"sequential": "calls", "concurrent": "calls", "notify": "messages"}

_hello = BARE_WORK["hello"]
ARGUMENT: str = ARGUMENTS["hello"]
EXPECTED: str = _hello(ARGUMENT)


# ---------------------------------------------------------------------------
# The channels and their handlers


class BenchIpc(tether.IpcInterface):
    channel_name = "bench"
    version = "1.0.0"

    async def hello(self, name: str) -> str: ...

    async def burst(self, count: int) -> int: ...


class BenchEvents(tether.NotificationInterface):
    channel_name = "bench-events"

    async def tick(self, n: int) -> None: ...


class BenchHandler(tether.IpcHandler, BenchIpc):
    async def hello(self, name: str) -> str:
        return _hello(name)

    async def burst(self, count: int) -> int:
        """Send `count` ticks, yielding every YIELD_EVERY so the writer can drain."""
        tick = tether.current_session().notifier(BenchEvents).tick
        for n in range(count):
            await tick(n)
            if n % YIELD_EVERY == YIELD_EVERY - 1:
                await trio.lowlevel.checkpoint()
        return count


class Receiver:
    """Counts messages numbered 0, 1, ...; notes when the last expected one arrived."""

    def __init__(self) -> None:
        self.reset(0)

    def reset(self, expected: int) -> None:
        self.expected = expected
        self.received = 0
        self.out_of_order = 0
        self.last_at = 0.0
        self.done = trio.Event()

    def got(self, n: int) -> None:
        if n != self.received:
            self.out_of_order += 1
        self.received += 1
        if self.received == self.expected:
            self.last_at = time.perf_counter()
            self.done.set()

    def check(self, label: str) -> None:
        if self.received != self.expected or self.out_of_order:
            raise AssertionError(
                f"{label}: {self.received} of {self.expected} messages, "
                f"{self.out_of_order} out of order"
            )


class TickListener(tether.NotificationHandler, BenchEvents):
    def __init__(self, receiver: Receiver) -> None:
        self.receiver = receiver

    async def tick(self, n: int) -> None:
        self.receiver.got(n)


def make_backend() -> tether.BackendIpc:
    backend = tether.BackendIpc(
        max_pending_notifications=MAX_PENDING_NOTIFICATIONS, max_pending_bytes=MAX_PENDING_BYTES
    )
    backend.register(BenchHandler)
    return backend


# ---------------------------------------------------------------------------
# The bare one-way baseline


def _notify_envelope(n: int) -> bytes:
    """The bytes tether sends for `tick(n)` (see `tether.runtime._protocol`)."""
    return orjson.dumps(
        {"t": "notify", "channel": BenchEvents.channel_name, "method": "tick", "args": [n]}
    )


async def _consume(receive: trio.MemoryReceiveChannel[bytes], receiver: Receiver) -> None:
    async with receive:
        async for data in receive:
            receiver.got(orjson.loads(data)["args"][0])


async def bare_one_way(count: int, *, await_send: bool) -> float:
    """Send `count` encoded messages to a decoding consumer; return messages per second."""
    receiver = Receiver()
    receiver.reset(count)
    send, receive = trio.open_memory_channel[bytes](ONE_WAY_BUFFER)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(_consume, receive, receiver)
        await trio.lowlevel.checkpoint()  # let the consumer start waiting
        gc.collect()
        started = time.perf_counter()
        async with send:
            if await_send:
                for n in range(count):
                    await send.send(_notify_envelope(n))
            else:
                for n in range(count):
                    data = _notify_envelope(n)
                    try:
                        send.send_nowait(data)
                    except trio.WouldBlock:
                        await send.send(data)
                    if n % YIELD_EVERY == YIELD_EVERY - 1:
                        await trio.lowlevel.checkpoint()
        await receiver.done.wait()
    receiver.check("bare one-way")
    return count / (receiver.last_at - started)


# ---------------------------------------------------------------------------
# Measuring

#: Measures one round of `count` calls or messages; returns the rate per second.
Measure = Callable[[int], Awaitable[float]]
Op = Callable[[str], Awaitable[str]]


@attrs.define
class Case:
    """One row of the table."""

    group: Group
    impl: Impl
    measure: Measure
    count: int = 0
    rates: list[float] = attrs.field(factory=list)

    @property
    def label(self) -> str:
        return f"{_GROUP_LABELS[self.group]}, {_IMPL_LABELS[self.group][self.impl]}"

    @property
    def best(self) -> float:
        return max(self.rates)

    @property
    def median(self) -> float:
        return statistics.median(self.rates)


async def _call(op: Op, count: int) -> None:
    for _ in range(count):
        await op(ARGUMENT)


def invoke_measure(new_op: Callable[[], Op], concurrency: int) -> Measure:
    async def measure(count: int) -> float:
        ops = [new_op() for _ in range(concurrency)]
        for op in ops:
            if (answer := await op(ARGUMENT)) != EXPECTED:
                raise AssertionError(f"got {answer!r}")
        per_caller = count // concurrency
        gc.collect()
        started = time.perf_counter()
        if concurrency == 1:
            await _call(ops[0], per_caller)
        else:
            async with trio.open_nursery() as nursery:
                for op in ops:
                    nursery.start_soon(_call, op, per_caller)
        return per_caller * concurrency / (time.perf_counter() - started)

    return measure


def notify_measure(proxy: BenchIpc, receiver: Receiver, label: str) -> Measure:
    async def measure(count: int) -> float:
        receiver.reset(count)
        gc.collect()
        started = time.perf_counter()
        sent = await proxy.burst(count)
        await receiver.done.wait()
        receiver.check(label)
        if sent != count:
            raise AssertionError(f"{label}: burst returned {sent}")
        return count / (receiver.last_at - started)

    return measure


async def run_cases(rounds: int, seconds: float) -> list[Case]:
    """Open the sessions once, calibrate, then measure every case `rounds` times."""
    receivers = {"tether": Receiver(), "tether-thread": Receiver()}
    async with (
        trio.open_nursery() as nursery,
        memory.connect_ipc(make_backend(), channels=[BenchIpc]) as same_loop,
        memory.connect_ipc(make_backend(), channels=[BenchIpc], thread=True) as threaded,
    ):
        proxies: dict[Impl, BenchIpc] = {
            "tether": same_loop.proxy(BenchIpc),
            "tether-thread": threaded.proxy(BenchIpc),
        }
        same_loop.add_notification_handler(TickListener(receivers["tether"]))
        threaded.add_notification_handler(TickListener(receivers["tether-thread"]))

        bare_requests: dict[Impl, trio.MemorySendChannel[BareRequest]] = {}
        for impl, serve in (("bare", serve_bare), ("bare-await", serve_bare_await)):
            send, receive = trio.open_memory_channel[BareRequest](_BARE_BUFFER)
            nursery.start_soon(serve, receive, _hello)
            bare_requests[impl] = send

        def new_op(impl: Impl) -> Callable[[], Op]:
            if impl == "bare":
                return lambda: BareClient(bare_requests["bare"]).call
            if impl == "bare-await":
                return lambda: BareClient(bare_requests["bare-await"]).call_await
            op = proxies[impl].hello
            return lambda: op

        def measure_of(group: Group, impl: Impl) -> Measure:
            if group == "notify":
                if impl == "bare":
                    return lambda count: bare_one_way(count, await_send=False)
                if impl == "bare-await":
                    return lambda count: bare_one_way(count, await_send=True)
                return notify_measure(proxies[impl], receivers[impl], f"notify, {impl}")
            return invoke_measure(new_op(impl), CONCURRENCY if group == "concurrent" else 1)

        groups = [
            [Case(group, impl, measure_of(group, impl)) for impl in IMPLS] for group in GROUPS
        ]

        # Size each case from a short warm-up so that one measurement takes about `seconds`.
        warmup = _round_calls(20_000, seconds / 10)
        for group in groups:
            for case in group:
                case.count = _round_calls(await case.measure(warmup), seconds)

        for index in range(rounds):
            print(f"round {index + 1}/{rounds}", file=sys.stderr, flush=True)
            for group in groups:
                for case in group if index % 2 == 0 else reversed(group):
                    case.rates.append(await case.measure(case.count))

        nursery.cancel_scope.cancel()
    return [case for group in groups for case in group]


# ---------------------------------------------------------------------------
# Reporting


def find(cases: Sequence[Case], group: Group, impl: Impl) -> Case:
    return next(c for c in cases if (c.group, c.impl) == (group, impl))


def ratio_to(cases: Sequence[Case], case: Case, impl: Impl = "bare") -> float:
    """`case`'s best rate over the best rate of `impl` in the same group."""
    return case.best / find(cases, case.group, impl).best


def results_table(cases: Sequence[Case]) -> str:
    rows = [
        [
            case.label,
            f"{format_rate(case.best)} {_UNITS[case.group]}/s",
            format_rate(case.median),
            f"{1e6 / case.best:.1f}",
            "—" if case.impl == "bare" else f"{ratio_to(cases, case):.2f}",
        ]
        for case in cases
    ]
    headers = ["case", "per second (best)", "median", "µs each (best)", "ratio to bare"]
    return markdown_table(headers, rows)


def summary(cases: Sequence[Case]) -> list[str]:
    """tether / bare for each group, against both bare variants (no target for IPC)."""
    lines = ["tether / bare, best rounds (no target is set for IPC):"]
    for group in GROUPS:
        bare = _IMPL_LABELS[group]
        for impl in ("tether", "tether-thread"):
            case = find(cases, group, impl)
            lines.append(
                f"  {_GROUP_LABELS[group]}, {bare[impl]}: {ratio_to(cases, case):.2f} of "
                f"{bare['bare']}, {ratio_to(cases, case, 'bare-await'):.2f} of {bare['bare-await']}"
            )
    return lines


def to_json(
    cases: Sequence[Case], info: dict[str, Any], rounds: int, wall: float
) -> dict[str, Any]:
    return {
        "machine": info,
        "rounds": rounds,
        "concurrency": CONCURRENCY,
        "yield_every": YIELD_EVERY,
        "wall_seconds": wall,
        "cases": [
            {
                "group": case.group,
                "impl": case.impl,
                "label": case.label,
                "unit": _UNITS[case.group],
                "count_per_round": case.count,
                "rates": case.rates,
                "best": case.best,
                "median": case.median,
                "ratio_to_bare": None if case.impl == "bare" else ratio_to(cases, case),
                "ratio_to_bare_await": ratio_to(cases, case, "bare-await"),
            }
            for case in cases
        ],
    }


def main(argv: Sequence[str] | None = None) -> None:
    args, rounds, seconds = parse_bench_args("bench.ipc", __doc__, argv, quick_seconds=0.06)

    info = machine_info()
    started = time.perf_counter()
    cases = trio.run(run_cases, rounds, seconds)
    wall = time.perf_counter() - started

    print(f"\n{format_machine(info)}")
    print(f"{rounds} interleaved rounds, {wall:.0f} s in all\n")
    print(results_table(cases))
    print()
    print("\n".join(summary(cases)))
    if args.json is not None:
        args.json.write_text(json.dumps(to_json(cases, info, rounds, wall), indent=2) + "\n")
        print(f"\nwrote {args.json}")


if __name__ == "__main__":
    main()
