"""Long-running operations and progress reports, on every transport.

Over memory and WebSocket a long-running call runs on the open connection and
its reports come as `progress` messages; over HTTP (real hypercorn) the call is
answered 202 with a status location that the client polls, and a cancelled
caller DELETEs it.
"""

from __future__ import annotations

import functools
import json
import math
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import Any

import pytest
import trio
import trio.testing

import tether
from tether.runtime import PROTOCOL_VERSION
from tether.runtime._protocol import ProgressReport, decode, encode
from tether.transports import http, memory, websocket
from tether.transports.http._pool import ConnectionPool
from tether.transports.http._server import HttpApp

TIMEOUT = 10


class Builds(tether.RpcInterface):
    interface_name = "test.Builds"
    interface_version = "1.0.0"

    @tether.long_running(poll_interval=0.02, ready_within=0.05, keep_result=30.0)
    async def rebuild(self, steps: int) -> str: ...

    @tether.long_running(poll_interval=0.02, ready_within=0.05, keep_result=30.0)
    async def hang(self) -> str: ...

    @tether.long_running(poll_interval=0.02, ready_within=0.05, keep_result=2.0)
    async def gated(self) -> str: ...

    async def plain(self) -> str: ...

    @tether.long_running(poll_interval=0.02, ready_within=0.05)
    async def has_deadline(self) -> bool: ...


class BuildsImpl(Builds):
    def __init__(self) -> None:
        # rebuild waits, after reporting step i, until the caller has seen it.
        self.seen = [trio.Event() for _ in range(10)]
        self.started = trio.Event()
        self.cancelled = trio.Event()
        self.gate = trio.Event()
        self.finished = trio.Event()

    async def rebuild(self, steps: int) -> str:
        for step in range(1, steps + 1):
            await tether.report_progress(step, steps, f"step {step}")
            await self.seen[step].wait()
        return f"rebuilt in {steps}"

    async def hang(self) -> str:
        self.started.set()
        try:
            await tether.report_progress(0, None, "waiting")
            await trio.sleep_forever()
        except trio.Cancelled:
            self.cancelled.set()
            raise
        return "never"  # pragma: no cover

    async def gated(self) -> str:
        await self.gate.wait()
        self.finished.set()
        return "gated done"

    async def plain(self) -> str:
        await tether.report_progress(1, 2)
        return "plain"

    async def has_deadline(self) -> bool:
        context = tether.current_context()
        assert context is not None
        return context.deadline is not None


Connect = Callable[[tether.RpcManager], AbstractAsyncContextManager[Any]]


@asynccontextmanager
async def _memory(manager: tether.RpcManager) -> AsyncIterator[Any]:
    async with memory.connect(manager, interfaces=[Builds]) as backend:
        yield backend


@asynccontextmanager
async def _websocket(manager: tether.RpcManager) -> AsyncIterator[Any]:
    async with trio.open_nursery() as nursery:
        url = await nursery.start(websocket.serve, manager, "127.0.0.1", 0)
        async with websocket.connect(url, interfaces=[Builds]) as backend:
            yield backend
        nursery.cancel_scope.cancel()


@asynccontextmanager
async def _http(manager: tether.RpcManager) -> AsyncIterator[Any]:
    async with trio.open_nursery() as nursery:
        url = await nursery.start(http.serve, manager, "127.0.0.1", 0)
        async with http.connect(url, interfaces=[Builds]) as backend:
            yield backend
        nursery.cancel_scope.cancel()


TRANSPORTS = pytest.mark.parametrize(
    "connect", [_memory, _websocket, _http], ids=["memory", "websocket", "http"]
)


def _manager(impl: BuildsImpl) -> tether.RpcManager:
    manager = tether.RpcManager()
    manager.register_impl(Builds, impl)
    return manager


@TRANSPORTS
async def test_progress_reaches_the_caller_in_order_then_the_result(connect: Connect) -> None:
    impl = BuildsImpl()
    seen: list[tether.Progress] = []

    def listen(progress: tether.Progress) -> None:
        seen.append(progress)
        impl.seen[int(progress.done)].set()

    with trio.fail_after(TIMEOUT):
        async with connect(_manager(impl)) as backend:
            with tether.on_progress(listen):
                result = await backend.get_client(Builds).rebuild(3)
    assert result == "rebuilt in 3"
    assert seen == [tether.Progress(step, 3, f"step {step}") for step in (1, 2, 3)]


@TRANSPORTS
async def test_cancelling_the_caller_cancels_the_impl(connect: Connect) -> None:
    impl = BuildsImpl()
    heard = trio.Event()
    with trio.fail_after(TIMEOUT):
        async with connect(_manager(impl)) as backend:
            client = backend.get_client(Builds)
            async with trio.open_nursery() as nursery:

                async def call() -> None:
                    with tether.on_progress(lambda _: heard.set()):
                        await client.hang()

                nursery.start_soon(call)
                # Over HTTP the report comes from a poll: the call was accepted (202).
                await heard.wait()
                nursery.cancel_scope.cancel()
            await impl.cancelled.wait()


@pytest.mark.parametrize("connect", [_memory, _websocket], ids=["memory", "websocket"])
async def test_any_operation_may_report_on_a_session(connect: Connect) -> None:
    impl = BuildsImpl()
    seen: list[tether.Progress] = []
    with trio.fail_after(TIMEOUT):
        async with connect(_manager(impl)) as backend:
            with tether.on_progress(seen.append):
                assert await backend.get_client(Builds).plain() == "plain"
    assert seen == [tether.Progress(1, 2)]


async def test_an_ordinary_http_call_reports_nowhere() -> None:
    impl = BuildsImpl()
    seen: list[tether.Progress] = []
    with trio.fail_after(TIMEOUT):
        async with _http(_manager(impl)) as backend:
            with tether.on_progress(seen.append):
                assert await backend.get_client(Builds).plain() == "plain"
    assert seen == []


async def test_http_a_long_running_call_runs_under_the_callers_deadline_only() -> None:
    """Not under the client's read_timeout: it may take minutes (each poll is bounded).

    The call without a deadline cannot sit inside `fail_after` (that would be
    its deadline): a watchdog task caps the test instead.
    """
    answers: list[bool] = []
    async with trio.open_nursery() as nursery:

        async def watchdog() -> None:
            await trio.sleep(TIMEOUT)
            raise trio.TooSlowError

        nursery.start_soon(watchdog)
        async with _http(_manager(BuildsImpl())) as backend:
            client = backend.get_client(Builds)
            answers.append(await client.has_deadline())
            with trio.fail_after(TIMEOUT):
                answers.append(await client.has_deadline())
        nursery.cancel_scope.cancel()
    assert answers == [False, True]


async def test_report_progress_outside_a_call_is_an_error() -> None:
    with pytest.raises(RuntimeError, match="outside a call"):
        await tether.report_progress(1)


@pytest.mark.parametrize(
    ("args", "match"),
    [
        ((math.nan,), "done must be a finite number"),
        ((-1,), "done must not be negative"),
        ((1, math.inf), "total must be a finite number"),
        ((True,), "done must be a finite number"),
        ((1, None, "x" * 1025), "at most 1024 characters"),
    ],
)
def test_progress_refuses_what_it_cannot_carry(args: tuple[Any, ...], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        tether.Progress(*args)


def test_the_progress_message_on_the_wire() -> None:
    message = ProgressReport(7, tether.Progress(2, 5, "copying"))
    data = encode(message)
    assert json.loads(data) == {
        "t": "progress",
        "id": 7,
        "done": 2,
        "total": 5,
        "message": "copying",
    }
    assert decode(data) == message
    assert decode(b'{"t":"progress","id":1,"done":0.5}') == ProgressReport(1, tether.Progress(0.5))
    with pytest.raises(tether.InvalidRequest) as caught:
        decode(b'{"t":"progress","id":3,"done":"half"}')
    assert caught.value.details["id"] == 3


async def test_reports_made_while_one_is_sent_merge_latest_wins() -> None:
    """At most one report per call is on its way; the ones made meanwhile merge."""
    from tether.runtime._progress import SessionProgress

    sent: list[bytes] = []
    release = trio.Event()

    async def send(data: bytes) -> None:
        sent.append(data)
        await release.wait()

    sink = SessionProgress(send, lambda call_id, p: b"%d:%g" % (call_id, p.done))
    with trio.fail_after(TIMEOUT):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(sink.report, 1, tether.Progress(1))
            await trio.testing.wait_all_tasks_blocked()
            for done in (2, 3, 4):
                await sink.report(1, tether.Progress(done))  # returns at once: merged
            nursery.start_soon(sink.report, 2, tether.Progress(9))  # another call's own
            await trio.testing.wait_all_tasks_blocked()
            assert sent == [b"1:1", b"2:9"]
            release.set()
    assert sent == [b"1:1", b"2:9", b"1:4"]


# -- HTTP: the 202 wire, with raw requests against real hypercorn ---------------


@asynccontextmanager
async def _served(impl: BuildsImpl, **settings: Any) -> AsyncIterator[tuple[str, ConnectionPool]]:
    async with trio.open_nursery() as nursery:
        serve = functools.partial(http.serve, _manager(impl), "127.0.0.1", 0, **settings)
        url = await nursery.start(serve)
        host, port = url.split("//")[1].split("/")[0].split(":")
        pool = ConnectionPool(host, int(port))
        try:
            yield url, pool
        finally:
            await pool.aclose()
            nursery.cancel_scope.cancel()


def _headers(authorization: str | None = None) -> list[tuple[bytes, bytes]]:
    headers = [
        (b"content-type", b"application/json"),
        (b"x-protocol-version", b"%d" % PROTOCOL_VERSION),
        (b"x-correlation-id", b"lro-activity"),
    ]
    if authorization is not None:
        headers.append((b"authorization", authorization.encode()))
    return headers


async def test_http_answers_202_with_a_location_then_the_result() -> None:
    impl = BuildsImpl()
    with trio.fail_after(TIMEOUT):
        async with _served(impl) as (_, pool):
            accepted = await pool.request(
                b"POST", b"/rpc/test.Builds/1.0.0/gated", _headers("Bearer alice"), b"[]"
            )
            assert accepted.status == 202
            location = accepted.header(b"location")
            assert location is not None
            assert location.startswith(b"/rpc/operations/")
            assert len(location) > len(b"/rpc/operations/") + 30  # unguessable
            assert accepted.header(b"retry-after") == b"1"
            assert accepted.header(b"cache-control") == b"no-store"
            assert accepted.header(b"x-correlation-id") == b"lro-activity"
            assert json.loads(accepted.body) == {"status": "running", "progress": None}

            running = await pool.request(b"GET", location, _headers("Bearer alice"))
            assert running.status == 202
            assert json.loads(running.body)["status"] == "running"

            # Another credential, or none, is refused as if it did not exist.
            for wrong in ("Bearer mallory", None):
                refused = await pool.request(b"GET", location, _headers(wrong))
                assert refused.status == 404
                assert json.loads(refused.body)["error"]["code"] == "not-found"
                refused = await pool.request(b"DELETE", location, _headers(wrong))
                assert refused.status == 404
            assert not impl.finished.is_set()

            impl.gate.set()
            await impl.finished.wait()
            done = await pool.request(b"GET", location, _headers("Bearer alice"))
            while done.status == 202:  # bounded by fail_after: the reply is on its way
                await trio.testing.wait_all_tasks_blocked()
                done = await pool.request(b"GET", location, _headers("Bearer alice"))
            assert done.status == 200
            assert json.loads(done.body) == "gated done"
            assert done.header(b"x-correlation-id") == b"lro-activity"
            # Collected: kept a moment for a GET whose answer was lost; DELETE drops it.
            again = await pool.request(b"GET", location, _headers("Bearer alice"))
            assert again.status == 200
            dropped = await pool.request(b"DELETE", location, _headers("Bearer alice"))
            assert dropped.status == 204
            gone = await pool.request(b"GET", location, _headers("Bearer alice"))
            assert gone.status == 404


async def test_http_delete_cancels_the_impl() -> None:
    impl = BuildsImpl()
    with trio.fail_after(TIMEOUT):
        async with _served(impl) as (_, pool):
            accepted = await pool.request(
                b"POST", b"/rpc/test.Builds/1.0.0/hang", _headers(), b"[]"
            )
            assert accepted.status == 202
            assert json.loads(accepted.body)["progress"] == {"done": 0, "message": "waiting"}
            location = accepted.header(b"location")
            assert location is not None
            deleted = await pool.request(b"DELETE", location, _headers())
            assert deleted.status == 204
            await impl.cancelled.wait()
            assert (await pool.request(b"GET", location, _headers())).status == 404


async def test_http_bounds_the_operations_it_holds() -> None:
    impl = BuildsImpl()
    with trio.fail_after(TIMEOUT):
        async with _served(impl, max_operations=2) as (_, pool):
            for _ in range(2):
                accepted = await pool.request(
                    b"POST", b"/rpc/test.Builds/1.0.0/hang", _headers(), b"[]"
                )
                assert accepted.status == 202
            full = await pool.request(b"POST", b"/rpc/test.Builds/1.0.0/hang", _headers(), b"[]")
            assert full.status == 503
            assert full.header(b"retry-after") == b"1"
            assert full.header(b"x-correlation-id") == b"lro-activity"
            assert json.loads(full.body)["error"]["code"] == "unavailable"


async def test_http_a_result_ready_in_time_is_answered_at_once() -> None:
    impl = BuildsImpl()
    impl.gate.set()
    with trio.fail_after(TIMEOUT):
        async with _served(impl) as (_, pool):
            answer = await pool.request(b"POST", b"/rpc/test.Builds/1.0.0/gated", _headers(), b"[]")
            assert answer.status == 200
            assert json.loads(answer.body) == "gated done"


async def test_http_the_server_setting_decides_when_the_policy_does_not() -> None:
    class Slow(tether.RpcInterface):
        interface_name = "test.Slow"
        interface_version = "1.0.0"

        @tether.long_running
        async def work(self) -> int: ...

    gate = trio.Event()

    class SlowImpl(Slow):
        async def work(self) -> int:
            await gate.wait()
            return 1

    manager = tether.RpcManager()
    manager.register_impl(Slow, SlowImpl())
    with trio.fail_after(TIMEOUT):
        async with trio.open_nursery() as nursery:
            serve = functools.partial(http.serve, manager, "127.0.0.1", 0, ready_within=0.01)
            url = await nursery.start(serve)
            async with http.connect(url, interfaces=[Slow]) as backend:
                host, port = url.split("//")[1].split("/")[0].split(":")
                pool = ConnectionPool(host, int(port))
                accepted = await pool.request(
                    b"POST", b"/rpc/test.Slow/1.0.0/work", _headers(), b"[]"
                )
                assert accepted.status == 202
                assert accepted.header(b"retry-after") == b"1"  # the default poll_interval
                await pool.aclose()
                gate.set()
                # The client polls through it (its policy's 1 s, on the real clock).
                assert await backend.get_client(Slow).work() == 1
            nursery.cancel_scope.cancel()


# -- HTTP: held operations expire (the app alone, on the autojump clock) --------


class _App:
    """An HttpApp served without a server: its lifespan run as hypercorn runs it."""

    def __init__(self, app: HttpApp) -> None:
        self.app = app
        self.started = trio.Event()
        self.stop = trio.Event()
        self._asked = 0

    async def _receive(self) -> dict[str, Any]:
        self._asked += 1
        if self._asked == 1:
            return {"type": "lifespan.startup"}
        await self.stop.wait()
        return {"type": "lifespan.shutdown"}

    async def _send(self, message: dict[str, Any]) -> None:
        if message["type"] == "lifespan.startup.complete":
            self.started.set()

    async def run(self) -> None:
        await self.app({"type": "lifespan", "asgi": {"version": "3.0"}}, self._receive, self._send)

    async def request(
        self, method: str, path: str | bytes, body: bytes = b""
    ) -> tuple[int, dict[bytes, bytes], bytes]:
        path = path.decode() if isinstance(path, bytes) else path
        scope = {
            "type": "http",
            "asgi": {"version": "3.0"},
            "http_version": "1.1",
            "method": method,
            "scheme": "http",
            "path": path,
            "raw_path": path.encode(),
            "query_string": b"",
            "root_path": "",
            "headers": [(b"host", b"127.0.0.1"), *_headers()],
            "client": ("127.0.0.1", 50000),
            "server": ("127.0.0.1", 8000),
        }
        sent: list[dict[str, Any]] = []
        answered = trio.Event()
        first = True

        async def receive() -> dict[str, Any]:
            nonlocal first
            if first:
                first = False
                return {"type": "http.request", "body": body, "more_body": False}
            await answered.wait()
            return {"type": "http.disconnect"}

        async def send(message: dict[str, Any]) -> None:
            sent.append(message)
            if message["type"] == "http.response.body" and not message.get("more_body"):
                answered.set()

        await self.app(scope, receive, send)
        start = sent[0]
        return (
            start["status"],
            dict(start["headers"]),
            b"".join(m.get("body", b"") for m in sent[1:]),
        )


async def test_an_uncollected_result_is_dropped_after_keep_result(
    autojump_clock: trio.testing.MockClock,
) -> None:
    impl = BuildsImpl()
    app = _App(HttpApp(_manager(impl)))
    with trio.fail_after(TIMEOUT):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(app.run)
            await app.started.wait()
            status, headers, _ = await app.request("POST", "/rpc/test.Builds/1.0.0/gated", b"[]")
            assert status == 202
            location = headers[b"location"]
            impl.gate.set()
            await impl.finished.wait()
            await trio.sleep(1.5)  # within keep_result (2 s): still there
            status, _, body = await app.request("GET", location)
            assert (status, json.loads(body)) == (200, "gated done")

            status, headers, _ = await app.request("POST", "/rpc/test.Builds/1.0.0/gated", b"[]")
            assert status == 200  # the gate is open: ready at once
            impl.gate = trio.Event()
            impl.finished = trio.Event()
            status, headers, _ = await app.request("POST", "/rpc/test.Builds/1.0.0/gated", b"[]")
            assert status == 202
            location = headers[b"location"]
            impl.gate.set()
            await impl.finished.wait()
            await trio.sleep(2.5)  # past keep_result: dropped
            status, _, body = await app.request("GET", location)
            assert status == 404
            assert len(app.app._operations) == 0
            app.stop.set()


async def test_a_running_operation_nobody_polls_is_cancelled(
    autojump_clock: trio.testing.MockClock,
) -> None:
    impl = BuildsImpl()
    app = _App(HttpApp(_manager(impl)))
    with trio.fail_after(200):  # virtual seconds
        async with trio.open_nursery() as nursery:
            nursery.start_soon(app.run)
            await app.started.wait()
            status, headers, _ = await app.request("POST", "/rpc/test.Builds/1.0.0/hang", b"[]")
            assert status == 202
            location = headers[b"location"]
            for _ in range(5):  # polled every 10 s: kept (keep_result is 30 s)
                await trio.sleep(10)
                status, _, _ = await app.request("GET", location)
                assert status == 202
            assert not impl.cancelled.is_set()
            await impl.cancelled.wait()  # 31 s after the last poll
            assert trio.current_time() >= 50 + 31
            status, _, _ = await app.request("GET", location)
            assert status == 404
            app.stop.set()
