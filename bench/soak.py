"""Load and churn against a backend process: what it holds (fds, tasks, RSS) before and after.

Run from the repository root::

    .venv/bin/python -m bench.soak                      # load, then 3 minutes of churn
    .venv/bin/python -m bench.soak --churn 30           # a shorter churn, in seconds
    .venv/bin/python -m bench.soak --quick              # a smoke test, about 15 seconds
    .venv/bin/python -m bench.soak --json out.json      # also write every sample as JSON

The backend runs in a child process (`python -m bench.soak --serve`), serving
one `RpcManager` and one `BackendIpc` over `http.serve` (HTTP and its `/ws`
route) and `websocket.serve`. The parent is the frontend:

* **load**: for each transport (HTTP, WebSocket on trio-websocket's server,
  WebSocket on hypercorn's `/ws`), 200 clients with a connection each, 100 calls
  each, all at once; then what the backend holds once they have left;
* **churn**: for `--churn` seconds, 16 tasks open a connection, make a few
  calls, and leave, over and over, a quarter of them leaving abruptly
  (cancelled mid-call); HTTP and both WebSocket servers in turn, plus IPC
  sessions over HTTP and WebSocket. The backend is sampled every few seconds.

A sample is read by the backend itself (an RPC call): open file descriptors,
sockets in CLOSE_WAIT on its ports, Trio tasks, and resident memory. The parent
prints a table; docs/reliability.md has the results.

Both sides use only tether's public API, so the same script measures any
checkout: `PYTHONPATH=<checkout>/src python -m bench.soak` runs it against that
checkout's tether (the bench package is this one).
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable, Sequence
from contextlib import AbstractAsyncContextManager
from typing import Any, ClassVar

import attrs
import trio

import tether
from bench._process import close_wait, count_tasks, open_fds, rss_kib
from tether.transports import http, websocket

# ---------------------------------------------------------------------------
# The interface both sides import


@attrs.frozen
class Sample:
    fds: int
    close_wait: int
    tasks: int
    rss_kib: int


class Soak(tether.RpcInterface):
    interface_name = "bench.Soak"
    interface_version = "1.0.0"

    async def echo(self, text: str) -> str:  # type: ignore[empty-body]
        ...

    async def pause(self, seconds: float) -> None:  # type: ignore[empty-body]
        ...

    async def sample(self) -> Sample:  # type: ignore[empty-body]
        ...


class SoakIpc(tether.IpcInterface):
    channel_name = "bench.soak"
    version = "1.0.0"

    async def echo(self, text: str) -> str:  # type: ignore[empty-body]
        ...


class SoakEvents(tether.NotificationInterface):
    channel_name = "bench.soak-events"

    async def echoed(self, text: str) -> None:  # type: ignore[empty-body]
        ...


# ---------------------------------------------------------------------------
# The backend (child process)


class SoakImpl(Soak):
    ports: ClassVar[set[int]] = set()

    async def echo(self, text: str) -> str:
        return text

    async def pause(self, seconds: float) -> None:
        await trio.sleep(seconds)

    async def sample(self) -> Sample:
        return Sample(
            fds=open_fds(),
            close_wait=close_wait(self.ports),
            tasks=count_tasks(),
            rss_kib=rss_kib(),
        )


class SoakIpcHandler(tether.IpcHandler, SoakIpc):
    async def echo(self, text: str) -> str:
        await tether.current_session().notifier(SoakEvents).echoed(text)
        return text


async def _serve() -> None:
    manager = tether.RpcManager()
    manager.register_impl(Soak, SoakImpl)
    backend_ipc = tether.BackendIpc()
    backend_ipc.register(SoakIpcHandler)
    async with trio.open_nursery() as nursery:
        http_url = await nursery.start(
            functools.partial(http.serve, manager, "127.0.0.1", 0, ipc=backend_ipc)
        )
        ws_url = await nursery.start(
            functools.partial(websocket.serve, manager, "127.0.0.1", 0, ipc=backend_ipc)
        )
        for url in (http_url, ws_url):
            SoakImpl.ports.add(int(url.split(":")[2].split("/")[0]))
        print(json.dumps({"http": http_url, "ws": ws_url}), flush=True)
        await trio.sleep_forever()


# ---------------------------------------------------------------------------
# The frontend (this process)


@attrs.define
class Counts:
    ok: int = 0
    failed: int = 0
    cancelled: int = 0
    errors: dict[str, int] = attrs.Factory(dict)

    def fail(self, exc: BaseException) -> None:
        self.failed += 1
        name = type(exc).__name__
        self.errors[name] = self.errors.get(name, 0) + 1


Connect = Callable[[], AbstractAsyncContextManager[Any]]


def _rpc_connects(urls: dict[str, str]) -> dict[str, Connect]:
    ws_route = urls["http"].replace("http://", "ws://") + "/ws"
    return {
        "http": lambda: http.connect(urls["http"], interfaces=[Soak], max_connections=1),
        "websocket": lambda: websocket.connect(urls["ws"], interfaces=[Soak]),
        "websocket (/ws)": lambda: websocket.connect(ws_route, interfaces=[Soak]),
    }


def _ipc_connects(urls: dict[str, str]) -> dict[str, Connect]:
    return {
        "http ipc": lambda: http.connect_ipc(urls["http"], channels=[SoakIpc]),
        "websocket ipc": lambda: websocket.connect_ipc(urls["ws"], channels=[SoakIpc]),
    }


async def _sample(url: str) -> Sample:
    async with http.connect(url, interfaces=[Soak]) as backend:
        return await backend.get_client(Soak).sample()


async def _load(connect: Connect, clients: int, calls: int, counts: Counts) -> None:
    async def client(n: int) -> None:
        try:
            async with connect() as backend:
                soak = backend.get_client(Soak)
                for i in range(calls):
                    try:
                        assert await soak.echo(f"{n}-{i}") == f"{n}-{i}"
                        counts.ok += 1
                    except tether.TetherError as exc:
                        counts.fail(exc)
        except tether.TetherError as exc:
            counts.fail(exc)

    async with trio.open_nursery() as nursery:
        for n in range(clients):
            nursery.start_soon(client, n)


async def _churn_rpc(connect: Connect, until: float, counts: Counts, worker: int) -> None:
    round_ = 0
    while trio.current_time() < until:
        round_ += 1
        abrupt = (worker + round_) % 4 == 0
        try:
            with trio.move_on_after(0.05 if abrupt else 30) as scope:
                async with connect() as backend:
                    soak = backend.get_client(Soak)
                    for i in range(3):
                        await soak.echo(str(i))
                        counts.ok += 1
                    if abrupt:
                        await soak.pause(10)  # left mid-call by the cancel scope
            if scope.cancelled_caught:
                counts.cancelled += 1
        except tether.TetherError as exc:
            counts.fail(exc)


async def _churn_ipc(connect: Connect, until: float, counts: Counts, worker: int) -> None:
    round_ = 0
    while trio.current_time() < until:
        round_ += 1
        try:
            async with connect() as frontend:
                heard = trio.Event()
                frontend.add_listener(SoakEvents.channel_name, lambda *_, e=heard: e.set())
                editor = frontend.proxy(SoakIpc)
                assert await editor.echo("x") == "x"
                await heard.wait()
                counts.ok += 1
        except tether.TetherError as exc:
            counts.fail(exc)


@attrs.frozen
class Row:
    phase: str
    transport: str
    seconds: float
    counts: Counts
    sample: Sample


async def _run(urls: dict[str, str], args: argparse.Namespace, rows: list[Row]) -> None:
    start = await _sample(urls["http"])
    rows.append(Row("start", "-", 0.0, Counts(), start))
    for name, connect in _rpc_connects(urls).items():
        counts = Counts()
        began = time.perf_counter()
        await _load(connect, args.clients, args.calls, counts)
        rows.append(
            Row("load", name, time.perf_counter() - began, counts, await _sample(urls["http"]))
        )
    churners: list[tuple[str, Connect, Callable[..., Awaitable[None]]]] = [
        (name, connect, _churn_rpc) for name, connect in _rpc_connects(urls).items()
    ] + [(name, connect, _churn_ipc) for name, connect in _ipc_connects(urls).items()]
    each = args.churn / len(churners)
    for name, connect, churn in churners:
        counts = Counts()
        began = time.perf_counter()
        until = trio.current_time() + each
        peak = await _sample(urls["http"])
        async with trio.open_nursery() as nursery:
            for worker in range(args.workers):
                nursery.start_soon(churn, connect, until, counts, worker)
            while trio.current_time() < until:
                await trio.sleep(min(5.0, max(0.1, until - trio.current_time())))
                now = await _sample(urls["http"])
                peak = Sample(
                    *(
                        max(a, b)
                        for a, b in zip(attrs.astuple(peak), attrs.astuple(now), strict=True)
                    )
                )
        rows.append(Row("churn peak", name, time.perf_counter() - began, counts, peak))
        # What is left once the churners have gone: closed connections must be released.
        await trio.sleep(args.settle)
        rows.append(Row("churn after", name, args.settle, Counts(), await _sample(urls["http"])))


def _print(rows: list[Row]) -> None:
    print(f"tether {tether.__version__} from {os.path.dirname(tether.__file__)}")
    print(
        f"{'phase':<12} {'transport':<16} {'s':>6} {'ok':>7} {'failed':>6} {'cancel':>6} "
        f"{'fds':>5} {'CLOSE_WAIT':>10} {'tasks':>6} {'RSS MiB':>8}  errors"
    )
    for row in rows:
        c, s = row.counts, row.sample
        print(
            f"{row.phase:<12} {row.transport:<16} {row.seconds:6.1f} {c.ok:7d} {c.failed:6d} "
            f"{c.cancelled:6d} {s.fds:5d} {s.close_wait:10d} {s.tasks:6d} "
            f"{s.rss_kib / 1024:8.1f}  {c.errors or ''}"
        )


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m bench.soak", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--clients", type=int, default=200, help="load: clients per transport")
    parser.add_argument("--calls", type=int, default=100, help="load: calls per client")
    parser.add_argument("--churn", type=float, default=180.0, help="churn: seconds in all")
    parser.add_argument("--workers", type=int, default=16, help="churn: concurrent churners")
    parser.add_argument("--settle", type=float, default=3.0, help="seconds before the after-sample")
    parser.add_argument("--quick", action="store_true", help="20 clients x 10 calls, 15 s churn")
    parser.add_argument("--json", metavar="PATH", help="also write the rows as JSON")
    args = parser.parse_args(argv)
    if args.serve:
        trio.run(_serve)
        return
    if args.quick:
        args.clients, args.calls, args.churn = 20, 10, 15.0
    server = subprocess.Popen(
        [sys.executable, "-m", "bench.soak", "--serve"], stdout=subprocess.PIPE, text=True
    )
    rows: list[Row] = []
    try:
        assert server.stdout is not None
        urls = json.loads(server.stdout.readline())
        trio.run(_run, urls, args, rows)
    finally:
        server.terminate()
        server.wait(10)
    _print(rows)
    if args.json:
        with open(args.json, "w") as out:
            json.dump([attrs.asdict(row) for row in rows], out, indent=1)


if __name__ == "__main__":
    main()
