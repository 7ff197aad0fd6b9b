"""The deployment of docs/deployment.md: `tether serve` backends behind a real nginx.

examples/deploy/run.py starts the backends (`tether serve examples.deploy.app:app`,
each a process of its own with JSON logs) and Debian's nginx (`make test` installs
it; without it these tests fail under `make test`, and skip elsewhere) on a socket
the test binds and hands over. Everything started is stopped when each test ends.
The app's answers say which backend process served them.
"""

from __future__ import annotations

import collections
import contextlib
import json
import logging
import os
import re
import signal
import socket
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from pathlib import Path

import pytest
import trio

import tether
from examples.deploy.app import Served, Tally, TallyEvents, Where
from examples.deploy.run import (
    Backend,
    Deployment,
    deployed,
    find_nginx,
    free_port,
    http_get,
)
from tests.child_processes import SOURCES
from tether import contexts
from tether.testing import faulty_streams
from tether.transports import http, websocket

ROOT = Path(__file__).resolve().parents[1]
#: Two backends start (about a second each, at once), then nginx.
TIMEOUT = 30.0
#: Callers at once, and the pace they keep together (calls/s) in the rolling restart.
CALLERS = 16
RATE = 300.0
#: The least rate the rolling restart must run under (issue 16: 200 calls/s).
LEAST_RATE = 200.0
#: Resumes retried quickly: the test waits for them.
FAST = tether.RetryPolicy(attempts=30, initial_backoff=0.01, max_backoff=0.05)


def require_nginx() -> None:
    if find_nginx() is None:
        message = "nginx is not installed: `make test` installs it (Debian: apt-get install nginx)"
        if os.environ.get("TETHER_REQUIRE_NGINX"):
            pytest.fail(message)
        pytest.skip(message)


@asynccontextmanager
async def deployment(directory: Path, backends: int = 2) -> AsyncIterator[Deployment]:
    """run.py's deployment, nginx on a port this test bound (nothing races for it)."""
    require_nginx()
    listener = socket.socket()
    try:
        listener.bind(("127.0.0.1", 0))
        listener.listen(512)
        async with deployed(
            directory, backends=backends, listener=listener, path=[SOURCES, ROOT]
        ) as running:
            listener.close()  # nginx has its own copy now
            yield running
    finally:
        listener.close()


class Records(logging.Handler):
    """The log records of a logger, with the request context on each."""

    def __init__(self) -> None:
        super().__init__()
        self.addFilter(contexts.ContextFilter())
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


@contextmanager
def recording(name: str) -> Iterator[Records]:
    logger = logging.getLogger(name)
    handler = Records()
    level = logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    try:
        yield handler
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)


def access_lines(running: Deployment) -> list[str]:
    return (running.directory / "access.log").read_text().splitlines()


async def access_line(running: Deployment, needle: str) -> str:
    """nginx's one access line holding `needle`.

    nginx writes a line once it has answered (a WebSocket's once it closed),
    so the client may be done first: nothing to await but the file, read
    every 10 ms at most 500 times.
    """
    for _ in range(500):
        lines = [line for line in access_lines(running) if needle in line]
        if lines:
            [line] = lines
            return line
        await trio.sleep(0.01)
    raise AssertionError(f"no access line holds {needle!r}")


def backend_log(running: Deployment, name: str) -> list[dict[str, object]]:
    log = running.directory / f"{name}.log"
    return [json.loads(line) for line in log.read_text().splitlines() if line.startswith("{")]


async def test_calls_are_spread_over_every_backend(tmp_path: Path) -> None:
    with trio.fail_after(TIMEOUT):
        async with (
            deployment(tmp_path) as running,
            http.connect(running.url, interfaces=[Where]) as backend,
        ):
            where = backend.get_client(Where)
            served = collections.Counter([(await where.where()).backend for _ in range(30)])
            # nginx's round robin: each backend takes every other call.
            assert served == {"b1": 15, "b2": 15}
            addresses = {line.split(" up=")[1].split()[0] for line in access_lines(running)}
            assert {b.address for b in running.backends} <= addresses


async def test_one_activity_id_is_in_the_frontend_nginx_and_backend_logs(tmp_path: Path) -> None:
    with trio.fail_after(TIMEOUT), recording("deploy.frontend") as frontend:
        async with (
            deployment(tmp_path) as running,
            http.connect(running.url, interfaces=[Where]) as backend,
        ):
            with contexts.activity() as context:
                logging.getLogger("deploy.frontend").info("asking where")
                served = await backend.get_client(Where).record("a note")
            activity_id = context.activity_id
            # The frontend's record carries it (ContextFilter)...
            assert [r.activity_id for r in frontend.records] == [activity_id]  # type: ignore[attr-defined]
            # ...nginx's access line (X-Correlation-ID as the client sent it, and
            # the traceparent of the same trace)...
            line = await access_line(running, f"cid={activity_id} ")
            assert '"POST /rpc/deploy.Where/1.0.0/record HTTP/1.1" 200' in line
            trace_id = line.split(" tp=")[1].split("-")[1]
            assert trace_id == contexts.trace_id_of(activity_id)
            # ...and the JSON log of the backend that served it: the app's own
            # line and the access line.
            records = [r for r in backend_log(running, served.backend) if r["activity_id"]]
            assert [(r["logger"], r["message"]) for r in records] == [
                ("examples.deploy.app", "record: note 1 taken (6 bytes)"),
                ("tether.access", records[1]["message"]),
            ]
            assert {r["activity_id"] for r in records} == {activity_id}
            assert records[1]["operation"] == "deploy.Where.record"
            # The other backend saw nothing of it.
            other = next(b.name for b in running.backends if b.name != served.backend)
            assert not [r for r in backend_log(running, other) if r["activity_id"]]


class Load:
    """CALLERS callers of `where()` keeping RATE calls/s between them, until stopped."""

    def __init__(self, where: Where) -> None:
        self.where = where
        self.done = 0
        self.failures: list[BaseException] = []
        self.served: collections.defaultdict[str, set[int]] = collections.defaultdict(set)
        self.stop = False
        self.started = trio.Event()

    async def caller(self, index: int, most: int) -> None:
        due = trio.current_time() + index / RATE
        for _ in range(most):
            if self.stop:
                return
            try:
                served: Served = await self.where.where()
            except Exception as exc:  # every failure is what this test counts
                self.failures.append(exc)
            else:
                self.served[served.backend].add(served.pid)
            self.done += 1
            if self.done >= CALLERS:
                self.started.set()
            # A paced loop: each caller's next call is due CALLERS / RATE s after its last.
            due += CALLERS / RATE
            await trio.sleep(max(0.0, due - trio.current_time()))


async def test_a_rolling_restart_under_load_loses_no_call(tmp_path: Path) -> None:
    """Each backend in turn: out of nginx, SIGTERM, started again, back in (run.py's
    `rolling_restart`), while 16 callers keep 300 calls/s of an idempotent operation.
    No call fails, and the rate holds over the restart."""
    with trio.fail_after(TIMEOUT), recording("tether.client") as client_log:
        async with (
            deployment(tmp_path) as running,
            http.connect(running.url, interfaces=[Where]) as backend,
        ):
            load = Load(backend.get_client(Where))
            async with trio.open_nursery() as nursery:
                for index in range(CALLERS):
                    nursery.start_soon(load.caller, index, int(RATE * TIMEOUT / CALLERS))
                await load.started.wait()
                # The worker processes that served each backend before the restart.
                before = {name: set(pids) for name, pids in load.served.items()}
                started_at, done_before = trio.current_time(), load.done
                await running.rolling_restart()
                seconds = trio.current_time() - started_at
                calls = load.done - done_before
                load.stop = True
            retries = [r for r in client_log.records if r.getMessage().startswith("retrying")]
            for record in retries:
                print(record.getMessage())
            print(
                f"rolling restart of {len(running.backends)} backends: {seconds:.2f} s, "
                f"{calls} calls ({calls / seconds:.0f}/s), {len(load.failures)} failed, "
                f"{len(retries)} retried"
            )
            assert load.failures == []
            assert calls / seconds >= LEAST_RATE
            # Each backend served before its restart, and only new workers after it.
            assert sorted(before) == [b.name for b in running.backends]
            after = collections.defaultdict(set)
            for _ in range(20):
                served = await load.where.where()
                after[served.backend].add(served.pid)
            assert sorted(after) == sorted(before)
            for name, pids in before.items():
                assert after[name].isdisjoint(pids)


class Counted(tether.NotificationHandler, TallyEvents):
    """The frontend's side of `TallyEvents`: every total notified, and who sent it."""

    def __init__(self) -> None:
        self.seen: list[tuple[int, Served]] = []
        self._changed = trio.Event()

    async def counted(self, total: int, served: Served) -> None:
        self.seen.append((total, served))
        self._changed.set()
        self._changed = trio.Event()

    async def wait_for(self, count: int) -> None:
        while len(self.seen) < count:
            await self._changed.wait()


def upstreams_of(running: Deployment, needle: str) -> set[str]:
    """The `$upstream_addr` of every access line whose request line holds `needle`."""
    return {
        line.split(" up=")[1].split()[0]
        for line in access_lines(running)
        if needle in line.split('"')[1]
    }


async def test_ipc_sessions_stay_on_the_worker_that_opened_them(tmp_path: Path) -> None:
    """Over HTTP (three sessions one after the other) and over WebSocket (one
    session whose connection breaks and is resumed through nginx)."""
    with trio.fail_after(TIMEOUT), faulty_streams() as faults:
        async with deployment(tmp_path) as running:
            for _ in range(3):
                events = Counted()
                async with http.connect_ipc(running.url, channels=[Tally]) as frontend:
                    frontend.add_notification_handler(events)
                    tally = frontend.proxy(Tally)
                    served = {await tally.add(amount) for amount in (1, 2, 3)}
                    await events.wait_for(3)
                    route = frontend.session_id.split(".")[0]
                # One process answered every call and sent every notification,
                # a worker of the backend the session id names...
                [worker] = served
                assert [total for total, _ in events.seen] == [1, 3, 6]
                assert {who for _, who in events.seen} == {worker}
                assert route.rsplit("-", 1)[0] == worker.backend
                # ...through its own socket, for every request of the session
                # (the event stream included) but the one that opened it.
                socket_path = f"unix:{running.socket(route)}"
                assert upstreams_of(running, frontend.session_id) == {socket_path}

            events = Counted()
            url = running.url.replace("http://", "ws://", 1) + "/ws"
            async with websocket.connect_ipc(url, channels=[Tally], retry=FAST) as frontend:
                frontend.add_notification_handler(events)
                tally = frontend.proxy(Tally)
                first = await tally.add(5)
                session_id = frontend.session_id
                # The connection breaks: the frontend reconnects through nginx
                # with ?tether_session=<id>, and nginx sends it to the worker.
                faults.latest.cut("the test cuts the connection")
                await faults.wait_opened(2)
                again = await tally.add(7)
                await events.wait_for(2)
                assert frontend.session_id == session_id
            # The same process, and the same session's total.
            assert again == first
            assert events.seen == [(5, first), (12, first)]
            route = session_id.split(".")[0]
            assert route.rsplit("-", 1)[0] == first.backend
            resume = f"GET /rpc/ws?tether_session={session_id} HTTP/1.1"
            line = await access_line(running, resume)
            assert f'{resume}" 101 ' in line
            assert f" up=unix:{running.socket(route)} " in line


async def test_long_running_operations_are_polled_on_the_worker_that_holds_them(
    tmp_path: Path,
) -> None:
    """An operation lives in the worker that accepted it; its id starts with that
    worker's route, so nginx sends every poll there (round robin would find it on
    one worker in four)."""
    with trio.fail_after(TIMEOUT):
        async with (
            deployment(tmp_path) as running,
            http.connect(running.url, interfaces=[Where], retry=None) as backend,
        ):
            where = backend.get_client(Where)
            served: list[Served] = []

            async def survey() -> None:
                served.append(await where.survey(0.3))

            async with trio.open_nursery() as nursery:
                for _ in range(4):
                    nursery.start_soon(survey)
        assert len(served) == 4
        polls = [line for line in access_lines(running) if "/rpc/operations/" in line.split('"')[1]]
        assert polls  # each was accepted (202) and polled
        for line in polls:
            route = line.split("/rpc/operations/")[1].split(".")[0]
            assert f" up=unix:{running.socket(route)} " in line
            assert '" 200 ' in line or '" 202 ' in line


def test_the_nginx_configuration_in_the_docs_is_the_one_run_py_writes() -> None:
    """docs/deployment.md shows the configuration piece by piece: each line of
    its nginx blocks is a line of what run.py writes for the same deployment."""
    directory = Path("/tmp/tether-deploy-k2v9x1ab")
    running = Deployment(
        "examples.deploy.app:app",
        directory,
        [Backend(f"b{k}", 8000 + k, directory / f"b{k}.log", workers=2) for k in (1, 2)],
    )
    # The template's lines, without their comments.
    written = {re.sub(r"\s+#.*", "", line).strip() for line in running.config().splitlines()}
    doc = (ROOT / "docs" / "deployment.md").read_text()
    section = doc.split("## The nginx configuration, line by line")[1].split("\n## ")[0]
    blocks = re.findall(r"^```nginx\n(.*?)^```", section, flags=re.MULTILINE | re.DOTALL)
    assert len(blocks) >= 8
    shown = [line.strip() for block in blocks for line in block.splitlines() if line.strip()]
    assert [line for line in shown if line not in written] == []


async def test_run_py_serves_restarts_on_sighup_and_stops_everything_on_ctrl_c(
    tmp_path: Path,
) -> None:
    """The script as a user runs it (one worker per backend, to start faster)."""
    require_nginx()
    listen = f"127.0.0.1:{free_port()}"
    script = ROOT / "examples" / "deploy" / "run.py"
    command = [sys.executable, str(script), "--listen", listen, "--workers", "1"]
    with trio.fail_after(TIMEOUT):
        # A process group of its own: should the test fail, nginx and the
        # backends it started are stopped with it (a SIGKILL leaves them).
        process = await trio.lowlevel.open_process(
            [*command, "--dir", str(tmp_path)],
            env={**os.environ, "PYTHONPATH": str(SOURCES)},
            stdout=subprocess.PIPE,
            start_new_session=True,
        )
        try:
            assert process.stdout is not None
            lines = LineReader(process.stdout)
            assert (
                await lines.next() == f"serving http://{listen}/rpc (nginx and logs in {tmp_path})"
            )
            await lines.next()
            async with http.connect(f"http://{listen}/rpc", interfaces=[Where]) as backend:
                where = backend.get_client(Where)
                first = {(await where.where()).pid for _ in range(4)}
                process.send_signal(signal.SIGHUP)
                assert await lines.next() == "rolling restart..."
                assert await lines.next() == "rolling restart done"
                again = {(await where.where()).pid for _ in range(4)}
            assert len(first) == len(again) == 2
            assert first.isdisjoint(again)
            process.send_signal(signal.SIGINT)
            assert await process.wait() == 0
        finally:
            if process.returncode is None:
                with trio.CancelScope(shield=True):
                    process.send_signal(signal.SIGINT)
                    with trio.move_on_after(15):
                        await process.wait()
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)  # whatever is left of its group
            with trio.CancelScope(shield=True):
                await process.wait()
    # nginx and every backend are gone: nothing answers on any of their addresses.
    assert not (tmp_path / "nginx.pid").exists()
    host, port = listen.split(":")
    assert await http_get(host, int(port), "/rpc/health") == 0


class LineReader:
    """The lines a child process prints, one at a time."""

    def __init__(self, stream: trio.abc.ReceiveStream) -> None:
        self.stream = stream
        self.pending = b""

    async def next(self) -> str:
        while b"\n" not in self.pending:
            chunk = await self.stream.receive_some()
            if not chunk:
                raise AssertionError(f"the process ended; it printed {self.pending!r}")
            self.pending += chunk
        line, _, self.pending = self.pending.partition(b"\n")
        return line.decode()
