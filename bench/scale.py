"""HTTP RPC calls/s with 1, 2 and 4 worker processes behind nginx: the scale-out figure.

Run from the repository root, with nginx installed (Debian: `apt-get install nginx`)::

    .venv/bin/python -m bench.scale                 # about 2.5 minutes
    .venv/bin/python -m bench.scale --quick         # about 25 seconds, a smoke test
    .venv/bin/python -m bench.scale --workers 1,2 --repeat 3 --window 2
    .venv/bin/python -m bench.scale --json out.json # also write every measurement

What runs is the shape a user deploys: `tether serve bench.http:make_manager
--http 127.0.0.1:0 --workers N` (access log off) for N in `--workers`, and
one nginx (Debian's, started by the bench on 127.0.0.1 with its config in a
temporary directory, stopped at the end) in front of each, an `upstream` with
`keepalive` connections. Each N is measured in up to two shapes:

* `workers`: one `tether serve --workers N` process (hypercorn's model: one
  listening socket, N worker processes accepting on it); only when the
  installed tether has `--workers` above 1;
* `procs`: N separate `tether serve` processes, each an nginx upstream server.

plus the baseline without a proxy: the client straight to one worker.

The load comes from `--clients` processes (default 1), each running
tether's own client (`http.connect` + `get_client`, what an application
uses) with `--concurrency` tasks (default 32) calling `add(1, 2)` in a loop.
One process with 32 calls in flight was chosen by measurement (docs/performance.md,
"Scaling out behind nginx"): it spent the least CPU per call of 1 to 4
processes and used about half a core, so it is not what limits the rate.
**The clients run on the same cores as the servers**: the bench reads every
process's CPU time (`/proc/PID/stat`) over each timed window and reports the
client's share, and the calls per CPU-second of the tether workers and of
nginx, which do not depend on how many cores the client took.

Each measurement: `--warmup` seconds (connections open, caches warm), then a
timed `--window`; only calls that end inside the window count. The
configurations are interleaved, the order reversed every other repetition,
`--repeat` times; the table shows the median and the range.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import socket
import statistics
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Sequence
from contextlib import AsyncExitStack, asynccontextmanager, suppress
from pathlib import Path
from typing import Any

import attrs
import trio

#: What every tether server serves (the `add(int, int) -> int` of `bench.http`).
TARGET = "bench.http:make_manager"
#: Seconds a server, nginx or a client process may take to start, and to stop.
STARTUP_TIMEOUT = 30.0
STOP_TIMEOUT = 10.0
#: Seconds between handing the clients a window and its warm-up's start (connecting).
SLACK = 0.3
_TICKS = os.sysconf("SC_CLK_TCK")
_REPO = Path(__file__).resolve().parent.parent


@attrs.frozen
class Settings:
    """What one run of the bench measures."""

    workers: tuple[int, ...] = (1, 2, 4)
    #: "workers" (one `--workers N` process), "procs" (N processes), or both.
    shapes: tuple[str, ...] = ("workers", "procs")
    clients: int = 1
    concurrency: int = 32
    warmup: float = 1.0
    window: float = 3.0
    repeat: int = 5
    nginx_workers: str = "auto"
    #: Idle connections nginx keeps to each upstream; 0: none, a connection per
    #: request (examples/deploy's choice, for rolling restarts without loss).
    upstream_keepalive: int = 64
    #: Include the client straight to one worker, without nginx.
    direct: bool = True


@attrs.frozen
class Config:
    """One thing measured: a URL and the processes behind it."""

    name: str
    workers: int
    shape: str  # "direct", "workers" or "procs"
    url: str
    server_pids: tuple[int, ...]


@attrs.define
class Sample:
    """One timed window of one configuration."""

    config: str
    calls: int
    errors: int
    seconds: float
    #: CPU seconds in the window: "client", "tether", "nginx", "others" (the rest of the machine).
    cpu: dict[str, float]
    #: Busy CPU seconds the machine could have given (cores x window).
    capacity: float
    p50_ms: float
    p99_ms: float
    #: CPU seconds of each tether process that worked in the window (>2% of their sum), sorted.
    tether_each: list[float] = attrs.Factory(list)

    @property
    def rate(self) -> float:
        return self.calls / self.seconds


# ---------------------------------------------------------------------------
# CPU accounting (Linux /proc)


def _tree(pid: int) -> list[int]:
    """`pid` and its descendants alive now."""
    found, stack = [], [pid]
    while stack:
        current = stack.pop()
        found.append(current)
        try:
            for task in os.listdir(f"/proc/{current}/task"):
                text = Path(f"/proc/{current}/task/{task}/children").read_text()
                stack.extend(int(child) for child in text.split())
        except OSError:
            continue
    return found


def _alive(pid: int) -> bool:
    """Whether `pid` is still running (not a zombie)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def cpu_seconds(pids: Sequence[int]) -> dict[int, float]:
    """User + system CPU seconds of each process in the trees of `pids`."""
    seconds = {}
    for root in pids:
        for pid in _tree(root):
            try:
                fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            seconds[pid] = (int(fields[11]) + int(fields[12])) / _TICKS
    return seconds


def machine_busy() -> float:
    """CPU seconds the whole machine has been busy since boot (all cores)."""
    fields = [int(f) for f in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = fields[3] + fields[4]  # idle + iowait
    return (sum(fields[:8]) - idle) / _TICKS


# ---------------------------------------------------------------------------
# Processes: tether servers, nginx, clients


class Lines:
    """Lines from a process's stdout."""

    def __init__(self, stream: trio.abc.ReceiveStream) -> None:
        self._stream = stream
        self._buffer = b""

    async def next(self) -> str:
        while b"\n" not in self._buffer:
            chunk = await self._stream.receive_some(65536)
            if not chunk:
                raise EOFError("the process closed its output")
            self._buffer += chunk
        line, self._buffer = self._buffer.split(b"\n", 1)
        return line.decode()


def _append(log: Path) -> int:
    """A descriptor appending to `log`: every child's stderr goes there."""
    return os.open(log, os.O_WRONLY | os.O_CREAT | os.O_APPEND)


def _tail(log: Path) -> str:
    """The end of `log`, for an error message."""
    try:
        return log.read_text(errors="replace")[-1500:]
    except OSError:
        return "(no output)"


def _env() -> dict[str, str]:
    """The children import this checkout's tether and `bench` first."""
    path = [str(_REPO / "src"), str(_REPO), os.environ.get("PYTHONPATH", "")]
    return {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in path if p)}


@asynccontextmanager
async def stopping(process: trio.Process, sig: int = signal.SIGTERM) -> AsyncIterator[None]:
    """Stop `process` with `sig` when the block ends (killed if it takes too long)."""
    try:
        yield
    finally:
        with trio.CancelScope(shield=True):
            family = _tree(process.pid)[1:]  # its workers, if it has any
            if process.returncode is None:
                process.send_signal(sig)
                with trio.move_on_after(STOP_TIMEOUT):
                    await process.wait()
            if process.returncode is None:
                process.kill()
                await process.wait()
            # Its children (multiprocessing's resource tracker, nginx's workers) exit just
            # after it; one still there after a second must not outlive the bench.
            for _ in range(50):  # about a second
                if not any(_alive(pid) for pid in family):
                    break
                await trio.sleep(0.02)
            for pid in family:
                with suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)


async def start_tether(
    stack: AsyncExitStack, workers: int, log: Path, started: list[trio.Process]
) -> tuple[str, int]:
    """Start `tether serve ... --workers N` for the run; its URL and pid."""
    argv = [sys.executable, "-m", "tether", "serve", TARGET, "--http", "127.0.0.1:0"]
    argv += ["--no-access-log", "--log-level", "warning", "--workers", str(workers)]
    stderr = _append(log)
    try:
        process = await trio.lowlevel.open_process(
            argv, stdout=-1, stderr=stderr, env=_env(), cwd=_REPO
        )
    finally:
        os.close(stderr)
    started.append(process)
    await stack.enter_async_context(stopping(process))
    assert process.stdout is not None
    lines = Lines(process.stdout)
    try:
        with trio.fail_after(STARTUP_TIMEOUT):
            while not (line := await lines.next()).startswith("http"):
                pass
    except (EOFError, trio.TooSlowError):
        raise RuntimeError(f"`{' '.join(argv[2:])}` did not start: {_tail(log)}") from None
    # The rest of its output (URLs of workers, if any) is read and dropped.
    stack.push_async_callback(process.stdout.aclose)
    return line.strip(), process.pid


_NGINX_CONF = """{user}daemon off; master_process on; worker_processes {workers};
pid {dir}/nginx.pid; error_log {dir}/error.log warn;
events {{ worker_connections 4096; }}
http {{
  access_log off;
  client_body_temp_path {dir}/body; proxy_temp_path {dir}/proxy;
  fastcgi_temp_path {dir}/fastcgi; uwsgi_temp_path {dir}/uwsgi; scgi_temp_path {dir}/scgi;
{blocks}}}
"""
_NGINX_BLOCK = """  upstream {name} {{
{servers}{keepalive}  }}
  server {{
    listen 127.0.0.1:{port};
    location / {{
      proxy_pass http://{name};
      proxy_http_version 1.1;
{connection}      proxy_set_header Host $http_host;
    }}
  }}
"""


def find_nginx() -> str | None:
    return shutil.which("nginx", path=f"{os.environ.get('PATH', '')}:/usr/sbin:/usr/local/sbin")


async def start_nginx(
    stack: AsyncExitStack,
    upstreams: dict[str, list[str]],
    directory: Path,
    workers: str,
    started: list[trio.Process],
    keepalive: int = 64,
) -> tuple[dict[str, str], int]:
    """One nginx with a port per upstream; their URLs (by upstream name) and its pid.

    Each port is a socket bound here and handed to nginx (its `NGINX`
    variable), so connections queue from the start and nothing races for it.
    """
    binary = find_nginx()
    if binary is None:
        raise RuntimeError("nginx is not installed (Debian: apt-get install nginx)")
    listeners, blocks, urls = [], [], {}
    try:
        for name, servers in upstreams.items():
            listener = socket.socket()
            listeners.append(listener)
            listener.bind(("127.0.0.1", 0))
            listener.listen(1024)
            port = listener.getsockname()[1]
            lines = "".join(f"    server {s.split('//')[1].split('/')[0]};\n" for s in servers)
            reuse = keepalive > 0
            blocks.append(
                _NGINX_BLOCK.format(
                    name=name,
                    servers=lines,
                    port=port,
                    keepalive=f"    keepalive {keepalive};\n" if reuse else "",
                    connection='      proxy_set_header Connection "";\n' if reuse else "",
                )
            )
            urls[name] = f"http://127.0.0.1:{port}/rpc"
        conf = directory / "nginx.conf"
        user = "user root;\n" if os.geteuid() == 0 else ""
        conf.write_text(
            _NGINX_CONF.format(user=user, workers=workers, dir=directory, blocks="".join(blocks))
        )
        fds = [listener.fileno() for listener in listeners]
        process = await trio.lowlevel.open_process(
            [binary, "-c", str(conf), "-p", str(directory), "-e", str(directory / "error.log")],
            env={**os.environ, "NGINX": "".join(f"{fd};" for fd in fds)},
            pass_fds=fds,
        )
    finally:
        for listener in listeners:
            listener.close()  # nginx has its own copies now
    started.append(process)
    await stack.enter_async_context(stopping(process))  # SIGTERM: nginx's fast stop
    return urls, process.pid


@attrs.define
class Client:
    """A load-generating process (`python -m bench.scale --client`)."""

    process: trio.Process
    lines: Lines
    log: Path

    async def result(self) -> dict[str, Any]:
        """The result of the last command sent."""
        try:
            with trio.fail_after(STARTUP_TIMEOUT):
                result: dict[str, Any] = json.loads(await self.lines.next())
        except (EOFError, trio.TooSlowError):
            raise RuntimeError(f"a client process failed: {_tail(self.log)}") from None
        return result

    async def send(self, command: dict[str, Any]) -> None:
        assert self.process.stdin is not None
        await self.process.stdin.send_all(json.dumps(command).encode() + b"\n")


async def start_client(stack: AsyncExitStack, log: Path, started: list[trio.Process]) -> Client:
    stderr = _append(log)
    try:
        process = await trio.lowlevel.open_process(
            [sys.executable, "-m", "bench.scale", "--client"],
            stdin=-1,
            stdout=-1,
            stderr=stderr,
            env=_env(),
            cwd=_REPO,
        )
    finally:
        os.close(stderr)
    started.append(process)
    await stack.enter_async_context(stopping(process))
    assert process.stdin is not None
    assert process.stdout is not None
    stack.push_async_callback(process.stdin.aclose)  # EOF: the client exits by itself
    client = Client(process, Lines(process.stdout), log)
    with trio.fail_after(STARTUP_TIMEOUT):
        if await client.lines.next() != "ready":
            raise RuntimeError(f"a client process did not start: {_tail(log)}")
    return client


# ---------------------------------------------------------------------------
# The client process


async def _load(url: str, start: float, end: float, concurrency: int) -> dict[str, Any]:
    """Call `add(1, 2)` from `concurrency` tasks until `end`; count the calls ending in the window.

    `start` and `end` are `time.monotonic()` values (CLOCK_MONOTONIC, the same in every process).
    """
    from bench.http import BenchApi
    from tether.transports import http

    calls = errors = 0
    latencies: list[float] = []
    deadline = trio.current_time() + (end - time.monotonic())
    async with http.connect(url, interfaces=[BenchApi], max_connections=concurrency) as backend:
        api = backend.get_client(BenchApi)

        async def caller() -> None:
            nonlocal calls, errors
            while True:
                began = time.monotonic()
                try:
                    ok = await api.add(1, 2) == 3
                except Exception:
                    ok = False
                ended = time.monotonic()
                if start <= ended < end:
                    if ok:
                        calls += 1
                        latencies.append(ended - began)
                    else:
                        errors += 1

        with trio.move_on_at(deadline):
            async with trio.open_nursery() as nursery:
                for _ in range(concurrency):
                    nursery.start_soon(caller)
    latencies.sort()
    return {
        "calls": calls,
        "errors": errors,
        "p50": latencies[len(latencies) // 2] if latencies else 0.0,
        "p99": latencies[int(len(latencies) * 0.99)] if latencies else 0.0,
    }


def client_main() -> None:
    """Serve load commands, one JSON line each on stdin, until stdin ends."""
    import bench.http  # noqa: F401  (imported before "ready": not in a window's warm-up)
    import tether.transports.http  # noqa: F401

    print("ready", flush=True)
    for line in sys.stdin:
        command = json.loads(line)
        result = trio.run(
            _load, command["url"], command["start"], command["end"], command["concurrency"]
        )
        print(json.dumps(result), flush=True)


# ---------------------------------------------------------------------------
# Measuring


async def measure_once(
    config: Config,
    clients: Sequence[Client],
    settings: Settings,
    nginx_pid: int | None,
) -> Sample:
    """One warm-up and timed window of `config`, with every client process."""
    start = time.monotonic() + SLACK + settings.warmup
    end = start + settings.window
    for client in clients:
        await client.send(
            {"url": config.url, "start": start, "end": end, "concurrency": settings.concurrency}
        )
    groups = {
        "client": [c.process.pid for c in clients],
        "tether": list(config.server_pids),
        "nginx": [] if nginx_pid is None or config.shape == "direct" else [nginx_pid],
    }
    await trio.sleep_until(trio.current_time() + (start - time.monotonic()))
    before = {name: cpu_seconds(pids) for name, pids in groups.items()}
    busy_before = machine_busy()
    await trio.sleep_until(trio.current_time() + (end - time.monotonic()))
    after = {name: cpu_seconds(pids) for name, pids in groups.items()}
    busy = machine_busy() - busy_before
    results = [await client.result() for client in clients]
    cpu = {
        name: sum(after[name][pid] - before[name].get(pid, 0.0) for pid in after[name])
        for name in groups
    }
    cpu["others"] = max(0.0, busy - sum(cpu.values()))
    each = [t - before["tether"].get(pid, 0.0) for pid, t in after["tether"].items()]
    each = sorted((c for c in each if c > 0.02 * cpu["tether"]), reverse=True)
    return Sample(
        config=config.name,
        calls=sum(r["calls"] for r in results),
        errors=sum(r["errors"] for r in results),
        seconds=settings.window,
        cpu=cpu,
        capacity=settings.window * (os.cpu_count() or 1),
        p50_ms=1000 * statistics.median(r["p50"] for r in results),
        p99_ms=1000 * max(r["p99"] for r in results),
        tether_each=each,
    )


async def has_workers_option() -> bool:
    """Whether the installed tether's `serve` takes `--workers` above 1."""
    result = await trio.run_process(
        [sys.executable, "-m", "tether", "serve", "--help"],
        capture_stdout=True,
        env=_env(),
        cwd=_REPO,
    )
    return b"only 1 today" not in result.stdout


async def measure(settings: Settings, started: list[trio.Process] | None = None) -> list[Sample]:
    """Start everything, measure every configuration `settings.repeat` times, stop everything.

    `started` (if given) receives every process started, for a caller that
    wants to check they have all exited.
    """
    started = [] if started is None else started
    shapes = list(settings.shapes)
    if "workers" in shapes and not await has_workers_option():
        print("(this tether's `serve` has no --workers above 1: measuring separate processes)")
        shapes.remove("workers")
        if "procs" not in shapes:
            shapes.append("procs")
    with tempfile.TemporaryDirectory(prefix="tether-scale-") as tmp:
        directory = Path(tmp)
        log = directory / "processes.log"
        # Stopped in this order at the end: clients, nginx, servers.
        async with (
            AsyncExitStack() as stack,
            AsyncExitStack() as proxy_stack,
            AsyncExitStack() as client_stack,
        ):
            # Start servers and clients concurrently: each takes a Python start-up.
            servers: dict[tuple[str, int], list[tuple[str, int]]] = {}
            clients: list[Client] = []

            async def serve(key: tuple[str, int], workers: int) -> None:
                servers.setdefault(key, []).append(await start_tether(stack, workers, log, started))

            async def client() -> None:
                clients.append(await start_client(client_stack, log, started))

            async with trio.open_nursery() as nursery:
                for n in settings.workers:
                    if n == 1 or "procs" in shapes:
                        for _ in range(n):
                            nursery.start_soon(serve, ("procs", n), 1)
                    if n > 1 and "workers" in shapes:
                        nursery.start_soon(serve, ("workers", n), n)
                for _ in range(settings.clients):
                    nursery.start_soon(client)
            upstreams = {f"{shape}{n}": [u for u, _ in s] for (shape, n), s in servers.items()}
            urls, nginx_pid = await start_nginx(
                proxy_stack,
                upstreams,
                directory,
                settings.nginx_workers,
                started,
                settings.upstream_keepalive,
            )
            configs = []
            if settings.direct and ("procs", 1) in servers:
                url, pid = servers["procs", 1][0]
                configs.append(Config("no proxy, 1 worker", 1, "direct", url, (pid,)))
            for n in settings.workers:
                for shape in ("workers", "procs") if n > 1 else ("procs",):
                    if (shape, n) not in servers:
                        continue
                    label = (
                        "1 process"
                        if n == 1
                        else (f"`--workers {n}`" if shape == "workers" else f"{n} processes")
                    )
                    pids = tuple(pid for _, pid in servers[shape, n])
                    configs.append(Config(f"nginx → {label}", n, shape, urls[f"{shape}{n}"], pids))
            samples = []
            for rep in range(settings.repeat):
                for config in configs if rep % 2 == 0 else configs[::-1]:
                    samples.append(await measure_once(config, clients, settings, nginx_pid))
    return samples


# ---------------------------------------------------------------------------
# Report


def _median(values: Sequence[float]) -> float:
    return statistics.median(values)


def _balance(samples: Sequence[Sample]) -> str:
    """Each busy tether process's share of their CPU, summed over `samples` (busiest first)."""
    sizes = {len(s.tether_each) for s in samples}
    if len(sizes) != 1 or sizes == {1}:
        return ""
    totals = [sum(column) for column in zip(*(s.tether_each for s in samples), strict=True)]
    return "/".join(f"{t / sum(totals):.0%}" for t in totals)


def summary(samples: Sequence[Sample]) -> list[dict[str, Any]]:
    """One row per configuration (in first-measured order): medians and ranges."""
    rows = []
    for name in dict.fromkeys(s.config for s in samples):
        mine = [s for s in samples if s.config == name]
        rates = [s.rate for s in mine]
        calls = sum(s.calls for s in mine)
        cpu = {k: sum(s.cpu[k] for s in mine) for k in mine[0].cpu}
        capacity = sum(s.capacity for s in mine)
        rows.append(
            {
                "config": name,
                "rate": _median(rates),
                "rate_min": min(rates),
                "rate_max": max(rates),
                "errors": sum(s.errors for s in mine),
                "client_share": cpu["client"] / capacity,
                "client_us": 1e6 * cpu["client"] / calls if calls else 0.0,
                "others_share": cpu["others"] / capacity,
                "tether_cores": cpu["tether"] / sum(s.seconds for s in mine),
                "per_tether_core": calls / cpu["tether"] if cpu["tether"] else 0.0,
                "nginx_us": 1e6 * cpu["nginx"] / calls if calls else 0.0,
                "per_server_core": calls / (cpu["tether"] + cpu["nginx"])
                if cpu["tether"] + cpu["nginx"]
                else 0.0,
                "p50_ms": _median([s.p50_ms for s in mine]),
                "balance": _balance(mine),
                "p99_ms": _median([s.p99_ms for s in mine]),
            }
        )
    return rows


def format_table(rows: Sequence[dict[str, Any]]) -> str:
    from bench.inprocess import markdown_table

    headers = [
        "configuration",
        "calls/s (median)",
        "range",
        "calls/s per tether core",
        "tether cores busy",
        "nginx µs/call",
        "calls/s per server core",
        "client CPU",
        "others' CPU",
        "p50 / p99 ms",
    ]
    body = [
        [
            r["config"],
            f"{r['rate']:,.0f}",
            f"{r['rate_min']:,.0f}-{r['rate_max']:,.0f}",
            f"{r['per_tether_core']:,.0f}",
            f"{r['tether_cores']:.2f}",
            f"{r['nginx_us']:.0f}" if r["nginx_us"] else "-",
            f"{r['per_server_core']:,.0f}",
            f"{r['client_share']:.0%} ({r['client_us']:.0f} µs/call)",
            f"{r['others_share']:.0%}",
            f"{r['p50_ms']:.1f} / {r['p99_ms']:.1f}",
        ]
        for r in rows
    ]
    return markdown_table(headers, body)


_DEFAULT = Settings()


def _counts(text: str) -> tuple[int, ...]:
    counts = tuple(int(part) for part in text.split(","))
    if not counts or any(c < 1 for c in counts):
        raise argparse.ArgumentTypeError(f"expected counts of 1 or more like 1,2,4, got {text!r}")
    return counts


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.scale", description=__doc__)
    parser.add_argument("--client", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--workers", type=_counts, default=_DEFAULT.workers, metavar="1,2,4")
    parser.add_argument(
        "--shapes", default="workers,procs", help="workers and/or procs (default: both)"
    )
    parser.add_argument("--clients", type=int, default=_DEFAULT.clients, help="default: 1")
    parser.add_argument(
        "--concurrency",
        type=int,
        default=_DEFAULT.concurrency,
        help="calls in flight per client process (default 32)",
    )
    parser.add_argument("--warmup", type=float, default=_DEFAULT.warmup, help="seconds, default 1")
    parser.add_argument("--window", type=float, default=_DEFAULT.window, help="seconds, default 3")
    parser.add_argument("--repeat", type=int, default=_DEFAULT.repeat, help="default: 5")
    parser.add_argument("--nginx-workers", default="auto", help="worker_processes (default auto)")
    parser.add_argument(
        "--upstream-keepalive",
        type=int,
        default=_DEFAULT.upstream_keepalive,
        metavar="N",
        help="idle connections nginx keeps per upstream; 0: none, as examples/deploy (default 64)",
    )
    parser.add_argument("--no-direct", action="store_true", help="skip the no-proxy baseline")
    parser.add_argument(
        "--quick", action="store_true", help="1 repetition, 0.5 s warm-up, 1 s window"
    )
    parser.add_argument("--json", type=Path, metavar="PATH", help="also write every sample here")
    args = parser.parse_args(argv)
    if args.client:
        client_main()
        return
    settings = Settings(
        workers=args.workers,
        shapes=tuple(s for s in args.shapes.split(",") if s),
        clients=args.clients,
        concurrency=args.concurrency,
        warmup=0.5 if args.quick else args.warmup,
        window=1.0 if args.quick else args.window,
        repeat=1 if args.quick else args.repeat,
        nginx_workers=args.nginx_workers,
        upstream_keepalive=args.upstream_keepalive,
        direct=not args.no_direct,
    )
    from bench.inprocess import format_machine, machine_info

    info = machine_info()
    began = time.monotonic()
    samples = trio.run(measure, settings)
    rows = summary(samples)
    print(format_machine(info))
    print(
        f"{settings.clients} client processes x {settings.concurrency} concurrent calls, "
        f"{settings.warmup:g} s warm-up + {settings.window:g} s window, "
        f"{settings.repeat} repetitions, nginx worker_processes {settings.nginx_workers}, "
        f"upstream keepalive {settings.upstream_keepalive}; "
        f"{time.monotonic() - began:.0f} s in all"
    )
    print(format_table(rows))
    for row in rows:
        if row["balance"]:
            print(f"{row['config']}: each process's share of the tether CPU: {row['balance']}")
    print(
        "calls/s per tether core: calls per CPU-second of the tether processes; per server core:"
        " of tether and nginx together; client CPU and others' CPU: shares of the machine"
        f" ({os.cpu_count()} cores) in the windows."
    )
    if any(r["errors"] for r in rows):
        print("ERRORS: " + ", ".join(f"{r['config']}: {r['errors']}" for r in rows))
    if args.json:
        args.json.write_text(
            json.dumps(
                {
                    "machine": info,
                    "settings": attrs.asdict(settings),
                    "samples": [attrs.asdict(s) for s in samples],
                    "summary": rows,
                },
                indent=2,
            )
        )


if __name__ == "__main__":
    main()
