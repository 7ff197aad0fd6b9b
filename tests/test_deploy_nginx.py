"""The deployment of docs/deployment.md: `tether serve` backends behind a real nginx.

examples/deploy/run.py starts the backends (`tether serve examples.deploy.app:app`,
each a process of its own with JSON logs) and Debian's nginx (`make test` installs
it; without it these tests fail under `make test`, and skip elsewhere) on a socket
the test binds and hands over. Everything started is stopped when each test ends.
The app's answers say which backend process served them.
"""

from __future__ import annotations

import collections
import json
import logging
import os
import socket
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from pathlib import Path

import pytest
import trio

from examples.deploy.app import Served, Where
from examples.deploy.run import Deployment, deployed, find_nginx
from tests.child_processes import SOURCES
from tether import contexts
from tether.transports import http

ROOT = Path(__file__).resolve().parents[1]
#: Two backends start (about a second each, at once), then nginx.
TIMEOUT = 30.0
#: Callers at once, and the pace they keep together (calls/s) in the rolling restart.
CALLERS = 16
RATE = 300.0
#: The least rate the rolling restart must run under (issue 16: 200 calls/s).
LEAST_RATE = 200.0


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


def backend_log(running: Deployment, name: str) -> list[dict[str, object]]:
    log = running.directory / f"{name}.log"
    return [json.loads(line) for line in log.read_text().splitlines() if line.startswith("{")]


async def test_calls_are_spread_over_every_backend(tmp_path: Path) -> None:
    with trio.fail_after(TIMEOUT):
        async with (
            deployment(tmp_path, backends=3) as running,
            http.connect(running.url, interfaces=[Where]) as backend,
        ):
            where = backend.get_client(Where)
            served = collections.Counter([(await where.where()).backend for _ in range(30)])
            # nginx's round robin: each backend takes every third call.
            assert served == {"b1": 10, "b2": 10, "b3": 10}
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
            [line] = [line for line in access_lines(running) if f"cid={activity_id} " in line]
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
            before = {b.name: b.process.pid for b in running.backends if b.process}
            async with trio.open_nursery() as nursery:
                for index in range(CALLERS):
                    nursery.start_soon(load.caller, index, int(RATE * TIMEOUT / CALLERS))
                await load.started.wait()
                started_at, done_before = trio.current_time(), load.done
                await running.rolling_restart()
                seconds = trio.current_time() - started_at
                calls = load.done - done_before
                load.stop = True
            retries = [r for r in client_log.records if r.getMessage().startswith("retrying")]
            print(
                f"rolling restart of {len(running.backends)} backends: {seconds:.2f} s, "
                f"{calls} calls ({calls / seconds:.0f}/s), {len(load.failures)} failed, "
                f"{len(retries)} retried"
            )
            assert load.failures == []
            assert calls / seconds >= LEAST_RATE
            after = {b.name: b.process.pid for b in running.backends if b.process}
            for name, pid in before.items():
                # Each backend served before its restart, and its new process after it.
                assert pid != after[name]
                assert load.served[name] >= {pid, after[name]}
