"""Many idle IPC sessions on one server: what each costs the server, and how fast all answer.

Run from the repository root::

    .venv/bin/python -m bench.sessions                    # 1,000 sessions per transport, ~15 s
    .venv/bin/python -m bench.sessions --quick            # 200 sessions, a few seconds
    .venv/bin/python -m bench.sessions --transport websocket --sessions 2000
    .venv/bin/python -m bench.sessions --trace            # also where the memory goes (slow)
    .venv/bin/python -m bench.sessions --json out.json    # also write the results as JSON

Transports: `websocket` (`websocket.serve`) and `local` (`local.serve`, a Unix
socket) by default; `http-ws` (hypercorn's `/ws` route of `http.serve`) with
`--transport http-ws`. For each transport the backend runs in a child process
of its own (`python -m bench.sessions --serve TRANSPORT`), serving one
`BackendIpc` (with `max_sessions_per_client=None`: every session comes from
one process), so the frontends' memory is not counted. The parent, one process, is every
frontend:

1. it opens a control session (the `bench.sessions.probe` channel, through
   which the backend reports its resident memory, Trio tasks, descriptors and
   sessions, after a `gc.collect()`), warms the server with one session that
   invokes once and closes, and samples the backend: **before**;
2. opens `--sessions` IPC sessions (16 handshakes at a time), lets them sit
   idle for `--settle` seconds, and samples again: **idle**. The growth over
   **before**, divided by the sessions, is what an idle session costs;
3. all sessions invoke `ping(n) -> n` at once (one task per session, released
   by one event), and each invoke's latency is recorded from its own call to
   its answer; **all answered** is the time from the release to the last
   answer. Then a last sample: **after** the burst.

The targets (issue 13): at most 50 KiB of server memory per idle session, and
an invoke's p99 within 100 ms when all call at once. Every wait is bounded.
Only tether's public API is used on both sides, so
`PYTHONPATH=<checkout>/src python -m bench.sessions` measures that checkout.
"""

from __future__ import annotations

import argparse
import cProfile
import functools
import gc
import json
import math
import os
import resource
import subprocess
import sys
import time
import tracemalloc
from collections.abc import Awaitable, Callable, Sequence
from contextlib import AbstractAsyncContextManager
from typing import Any

import attrs
import trio

import tether
from bench._process import count_tasks, open_fds, rss_kib
from tether.transports import http, local, websocket

#: Targets of issue 13, point 6.
TARGET_KIB_PER_SESSION = 50.0
TARGET_P99_MS = 100.0
#: Handshakes the frontend runs at once while opening the sessions.
OPENING_AT_ONCE = 16
#: Lines `--trace` prints, by line and by module.
TRACE_LINES = 25
#: Sessions the server is allowed beyond those measured (the control session, the warm-up).
_SPARE = 16

# ---------------------------------------------------------------------------
# The channels both sides import


@attrs.frozen
class Sample:
    rss_kib: int
    tasks: int
    fds: int
    sessions: int


class Ping(tether.IpcInterface):
    channel_name = "bench.sessions"
    version = "1.0.0"

    async def ping(self, n: int) -> int:  # type: ignore[empty-body]
        ...


class Probe(tether.IpcInterface):
    channel_name = "bench.sessions.probe"
    version = "1.0.0"

    async def sample(self) -> Sample:  # type: ignore[empty-body]
        ...

    async def mark(self) -> None:
        """Remember what is allocated now (with `--trace`)."""

    async def top(self, limit: int) -> list[str]:  # type: ignore[empty-body]
        """What was allocated since `mark`, largest first, by line and by module."""

    async def profile(self, on: bool) -> None:
        """Start or stop the profiler (with `--profile PATH`: its stats go there)."""


# ---------------------------------------------------------------------------
# The backend (child process)


class PingHandler(tether.IpcHandler, Ping):
    async def ping(self, n: int) -> int:
        return n


_backend: tether.BackendIpc | None = None
_marked: tracemalloc.Snapshot | None = None
_profile_path: str | None = None
_profiler: cProfile.Profile | None = None


class ProbeHandler(tether.IpcHandler, Probe):
    async def sample(self) -> Sample:
        gc.collect()
        assert _backend is not None
        return Sample(
            rss_kib=rss_kib(), tasks=count_tasks(), fds=open_fds(), sessions=len(_backend.sessions)
        )

    async def mark(self) -> None:
        global _marked
        if tracemalloc.is_tracing():
            gc.collect()
            _marked = tracemalloc.take_snapshot()

    async def top(self, limit: int) -> list[str]:
        if not tracemalloc.is_tracing() or _marked is None:
            return []
        gc.collect()
        now = tracemalloc.take_snapshot()
        lines = []
        for key in ("lineno", "filename"):
            stats = now.compare_to(_marked, key)
            stats.sort(key=lambda stat: stat.size_diff, reverse=True)
            lines.append(f"-- by {key}")
            for stat in stats[:limit]:
                frame = stat.traceback[0]
                where = _short(frame.filename) + (f":{frame.lineno}" if key == "lineno" else "")
                lines.append(
                    f"{stat.size_diff / 1024:10.1f} KiB {stat.count_diff:+8d} blocks  {where}"
                )
        return lines

    async def profile(self, on: bool) -> None:
        global _profiler
        if _profile_path is None:
            return
        if on:
            _profiler = cProfile.Profile()
            _profiler.enable()
        elif _profiler is not None:
            _profiler.disable()
            _profiler.dump_stats(_profile_path)


def _short(filename: str) -> str:
    for marker in ("/site-packages/", "/src/", "/lib/python3"):
        if marker in filename:
            return filename.split(marker, 1)[1]
    return filename


Server = Callable[..., Awaitable[None]]


async def _serve_websocket(ipc: tether.BackendIpc, limit: int, *, task_status: Any) -> None:
    await websocket.serve(
        None, "127.0.0.1", 0, ipc=ipc, max_connections=limit, task_status=task_status
    )


async def _serve_http_ws(ipc: tether.BackendIpc, limit: int, *, task_status: Any) -> None:
    async with trio.open_nursery() as nursery:
        url = await nursery.start(
            functools.partial(
                http.serve,
                None,
                "127.0.0.1",
                0,
                ipc=ipc,
                websocket=websocket.WebSocketSettings(max_connections=limit),
            )
        )
        task_status.started(url.replace("http://", "ws://") + "/ws")


async def _serve_local(ipc: tether.BackendIpc, limit: int, *, task_status: Any) -> None:
    await local.serve(None, ipc=ipc, max_connections=limit, task_status=task_status)


#: How each transport's server is started in the child: it reports the address to connect to.
SERVERS: dict[str, Server] = {
    "websocket": _serve_websocket,
    "local": _serve_local,
    "http-ws": _serve_http_ws,
}


async def _serve(transport: str, sessions: int, profile: str | None) -> None:
    global _backend, _profile_path
    _profile_path = profile
    _backend = tether.BackendIpc(max_sessions=sessions + _SPARE, max_sessions_per_client=None)
    _backend.register(PingHandler)
    _backend.register(ProbeHandler)
    async with trio.open_nursery() as nursery:
        address = await nursery.start(SERVERS[transport], _backend, sessions + _SPARE)
        print(json.dumps({"address": address}), flush=True)
        await trio.sleep_forever()


# ---------------------------------------------------------------------------
# The frontend (this process)

Connect = Callable[[str, list[type[tether.IpcInterface]]], AbstractAsyncContextManager[Any]]


def _connect_websocket(
    address: str, channels: list[type[tether.IpcInterface]]
) -> AbstractAsyncContextManager[Any]:
    return websocket.connect_ipc(address, channels=channels)


def _connect_local(
    address: str, channels: list[type[tether.IpcInterface]]
) -> AbstractAsyncContextManager[Any]:
    return local.connect_ipc(address, channels=channels)


#: How the frontend opens a session on each transport's address.
CONNECTS: dict[str, Connect] = {
    "websocket": _connect_websocket,
    "local": _connect_local,
    "http-ws": _connect_websocket,
}
#: The transports measured when none is named (http-ws: hypercorn's `/ws`, on request).
DEFAULT_TRANSPORTS = ("websocket", "local")


@attrs.frozen
class Result:
    transport: str
    sessions: int
    opening_s: float
    before: Sample
    idle: Sample
    after: Sample
    latencies_ms: list[float]
    all_answered_ms: float
    server_cpu_ms: float
    client_cpu_ms: float
    top: list[str]

    @property
    def kib_per_session(self) -> float:
        return (self.idle.rss_kib - self.before.rss_kib) / self.sessions

    @property
    def kib_per_session_after(self) -> float:
        return (self.after.rss_kib - self.before.rss_kib) / self.sessions

    @property
    def tasks_per_session(self) -> float:
        return (self.idle.tasks - self.before.tasks) / self.sessions

    @property
    def fds_per_session(self) -> float:
        return (self.idle.fds - self.before.fds) / self.sessions

    def percentile(self, p: float) -> float:
        ordered = sorted(self.latencies_ms)
        return ordered[max(0, math.ceil(p / 100 * len(ordered)) - 1)]


def _child_env() -> dict[str, str]:
    """The environment of the backend: the same tether and bench as this process."""
    here = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    source = os.path.dirname(os.path.dirname(os.path.abspath(tether.__file__)))
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([source, here, *filter(None, [env.get("PYTHONPATH")])])
    return env


async def _read_line(stream: trio.abc.ReceiveStream) -> bytes:
    data = b""
    while b"\n" not in data:
        chunk = await stream.receive_some(4096)
        if not chunk:
            raise RuntimeError(f"the backend exited before reporting its address: {data!r}")
        data += chunk
    return data.split(b"\n", 1)[0]


async def measure(
    transport: str,
    sessions: int,
    *,
    settle: float = 1.0,
    trace: bool = False,
    profile: str | None = None,
    seconds: float = 120.0,
) -> Result:
    """Run the backend for `transport` in a child process and measure `sessions` sessions.

    Bounded by `seconds` in all; the child is stopped before it returns.
    """
    command = [sys.executable]
    if trace:
        command += ["-X", "tracemalloc=1"]
    command += ["-m", "bench.sessions", "--serve", transport, "--sessions", str(sessions)]
    if profile is not None:
        command += ["--profile", profile]
    connect = CONNECTS[transport]
    with trio.fail_after(seconds):
        async with trio.open_nursery() as nursery:
            child: trio.Process = await nursery.start(
                functools.partial(
                    trio.run_process,
                    command,
                    stdout=subprocess.PIPE,
                    env=_child_env(),
                    check=False,
                )
            )
            try:
                assert child.stdout is not None
                with trio.fail_after(30):
                    address = json.loads(await _read_line(child.stdout))["address"]
                return await _frontend(
                    transport, connect, address, sessions, settle, child.pid, profile
                )
            finally:
                nursery.cancel_scope.cancel()  # run_process kills the child


def _cpu_ms(pid: int) -> float:
    """CPU time (user and system) process `pid` has used, in ms."""
    with open(f"/proc/{pid}/stat") as stat:
        fields = stat.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) * 1000 / os.sysconf("SC_CLK_TCK")


async def _frontend(
    transport: str,
    connect: Connect,
    address: str,
    sessions: int,
    settle: float,
    pid: int,
    profile: str | None,
) -> Result:
    async with connect(address, [Probe]) as control:
        probe = control.proxy(Probe)
        async with connect(address, [Ping]) as warm:
            assert await warm.proxy(Ping).ping(0) == 0
        await trio.sleep(settle)
        before = await probe.sample()
        await probe.mark()

        opened = 0
        all_open = trio.Event()
        go = trio.Event()
        answered = 0
        all_answered = trio.Event()
        leave = trio.Event()
        latencies: list[float] = []
        last_answer = 0.0
        gate = trio.Semaphore(OPENING_AT_ONCE)

        async def session(n: int) -> None:
            nonlocal opened, answered, last_answer
            await gate.acquire()
            async with _ReleasedOnEntry(gate, connect(address, [Ping])) as frontend:
                ping = frontend.proxy(Ping)
                opened += 1
                if opened == sessions:
                    all_open.set()
                await go.wait()
                began = time.perf_counter()
                assert await ping.ping(n) == n
                last_answer = time.perf_counter()
                latencies.append((last_answer - began) * 1000)
                answered += 1
                if answered == sessions:
                    all_answered.set()
                await leave.wait()

        async with trio.open_nursery() as nursery:
            began = time.perf_counter()
            for n in range(sessions):
                nursery.start_soon(session, n)
            with trio.fail_after(max(30.0, sessions * 0.05)):
                await all_open.wait()
            opening = time.perf_counter() - began
            await trio.sleep(settle)
            idle = await probe.sample()
            await probe.profile(True)
            profiler = cProfile.Profile() if profile is not None else None
            if profiler is not None:
                profiler.enable()
            server_cpu = _cpu_ms(pid)
            client_cpu = time.process_time()
            released = time.perf_counter()
            go.set()
            with trio.fail_after(30):
                await all_answered.wait()
            all_answered_ms = (last_answer - released) * 1000
            client_cpu = (time.process_time() - client_cpu) * 1000
            server_cpu = _cpu_ms(pid) - server_cpu
            if profiler is not None:
                profiler.disable()
                profiler.dump_stats(f"{profile}.client")
            await probe.profile(False)
            await trio.sleep(settle)
            after = await probe.sample()
            top = await probe.top(TRACE_LINES)
            leave.set()
        return Result(
            transport=transport,
            sessions=sessions,
            opening_s=opening,
            before=before,
            idle=idle,
            after=after,
            latencies_ms=latencies,
            all_answered_ms=all_answered_ms,
            server_cpu_ms=server_cpu,
            client_cpu_ms=client_cpu,
            top=top,
        )


class _ReleasedOnEntry:
    """Enter `manager`, then release `gate` (held while the handshake runs)."""

    def __init__(self, gate: trio.Semaphore, manager: AbstractAsyncContextManager[Any]) -> None:
        self._gate = gate
        self._manager = manager

    async def __aenter__(self) -> Any:
        try:
            return await self._manager.__aenter__()
        finally:
            self._gate.release()

    async def __aexit__(self, *exc: Any) -> bool | None:
        return await self._manager.__aexit__(*exc)


def _raise_fd_limit(sessions: int) -> None:
    """Both ends of every session live on this machine: allow the descriptors."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = 2 * sessions + 256
    if soft != resource.RLIM_INFINITY and soft < wanted:
        top = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
        resource.setrlimit(resource.RLIMIT_NOFILE, (top, hard))


def _print(results: list[Result]) -> None:
    print(f"tether {tether.__version__} from {os.path.dirname(tether.__file__)}")
    print(
        f"{'transport':<10} {'sessions':>8} {'open s':>6} {'RSS MiB':>8} {'+idle MiB':>9} "
        f"{'KiB/sess':>8} {'tasks/s':>7} {'fds/s':>5} {'p50 ms':>7} {'p99 ms':>7} "
        f"{'max ms':>7} {'all ms':>7} {'srv cpu':>7} {'cli cpu':>7} {'KiB/s after':>11}"
    )
    for r in results:
        print(
            f"{r.transport:<10} {r.sessions:8d} {r.opening_s:6.1f} {r.before.rss_kib / 1024:8.1f} "
            f"{(r.idle.rss_kib - r.before.rss_kib) / 1024:9.1f} {r.kib_per_session:8.1f} "
            f"{r.tasks_per_session:7.1f} {r.fds_per_session:5.1f} {r.percentile(50):7.1f} "
            f"{r.percentile(99):7.1f} {max(r.latencies_ms):7.1f} {r.all_answered_ms:7.1f} "
            f"{r.server_cpu_ms:7.1f} {r.client_cpu_ms:7.1f} {r.kib_per_session_after:11.1f}"
        )
    for r in results:
        memory = "PASS" if r.kib_per_session <= TARGET_KIB_PER_SESSION else "FAIL"
        latency = "PASS" if r.percentile(99) <= TARGET_P99_MS else "FAIL"
        print(
            f"{memory} {r.transport}: {r.kib_per_session:.1f} KiB per idle session "
            f"(target <= {TARGET_KIB_PER_SESSION:g})"
        )
        print(
            f"{latency} {r.transport}: p99 {r.percentile(99):.1f} ms with {r.sessions} invoking "
            f"at once (target <= {TARGET_P99_MS:g})"
        )
        if r.top:
            print(f"allocated in the backend between before and after ({r.transport}):")
            print("\n".join(r.top))


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m bench.sessions", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--serve", metavar="TRANSPORT", help=argparse.SUPPRESS)
    parser.add_argument(
        "--transport",
        action="append",
        choices=sorted(SERVERS),
        help=f"measure this transport (repeatable; default: {', '.join(DEFAULT_TRANSPORTS)})",
    )
    parser.add_argument("--sessions", type=int, default=1000, help="idle sessions to open")
    parser.add_argument("--settle", type=float, default=1.0, help="seconds before each sample")
    parser.add_argument("--quick", action="store_true", help="200 sessions, a smoke test")
    parser.add_argument(
        "--trace", action="store_true", help="tracemalloc in the backend (inflates RSS)"
    )
    parser.add_argument(
        "--profile",
        metavar="PATH",
        help="cProfile the burst: the backend's stats to PATH, the frontend's to PATH.client",
    )
    parser.add_argument("--json", metavar="PATH", help="also write the results as JSON")
    args = parser.parse_args(argv)
    if args.serve:
        trio.run(_serve, args.serve, args.sessions, args.profile)
        return
    if args.quick:
        args.sessions = 200
    _raise_fd_limit(args.sessions)
    results = []
    for transport in args.transport or DEFAULT_TRANSPORTS:
        run = functools.partial(
            measure,
            transport,
            args.sessions,
            settle=args.settle,
            trace=args.trace,
            profile=None if args.profile is None else os.path.abspath(args.profile),
        )
        results.append(trio.run(run))
    _print(results)
    if args.json:
        with open(args.json, "w") as out:
            json.dump(
                [
                    {
                        **attrs.asdict(r),
                        "kib_per_session": r.kib_per_session,
                        "tasks_per_session": r.tasks_per_session,
                        "p50_ms": r.percentile(50),
                        "p99_ms": r.percentile(99),
                        "max_ms": max(r.latencies_ms),
                    }
                    for r in results
                ],
                out,
                indent=1,
            )


if __name__ == "__main__":
    main()
