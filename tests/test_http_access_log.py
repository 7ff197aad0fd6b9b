# mypy: disable-error-code="empty-body"
"""One access line per HTTP request, with its context (issue 12, point 14).

Every request that reaches the HTTP server gets exactly one line on the
`tether.access` logger: calls that ran (whatever their outcome), calls the
client cancelled or whose deadline passed, and requests refused before any
impl ran. Each line carries the request's ActivityId, session, application and
operation, as `ContextFilter` puts them on a record, and its outcome and
duration.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from typing import Any

import httpx
import pytest
import trio

import tether
from tether.contexts import ContextFilter
from tether.runtime import PROTOCOL_VERSION
from tether.runtime._protocol import Hello, encode
from tether.runtime._util import open_service_nursery
from tether.testing import Probe
from tether.transports import http

TIMEOUT = 10.0
CALL = "/test.Slow/1.0.0/echo"
CONTEXT = {
    "X-Correlation-ID": "activity-1",
    "X-Session-Id": "session-1",
    "X-Application-Id": "app-1",
    "Content-Type": "application/json",
}


class Slow(tether.RpcInterface):
    interface_name = "test.Slow"
    interface_version = "1.0.0"

    async def echo(self, value: int) -> int: ...

    async def hang(self) -> None: ...


class Tally(tether.IpcInterface):
    channel_name = "test.tally"
    version = "1.0.0"

    async def bump(self) -> int: ...


class Lines(logging.Handler):
    """The `tether.access` records, with the fields `ContextFilter` gives them."""

    def __init__(self) -> None:
        super().__init__()
        self.addFilter(ContextFilter())
        self.records: list[logging.LogRecord] = []
        self._changed = trio.Event()

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)
        self._changed.set()

    async def wait_for(self, count: int) -> None:
        while len(self.records) < count:
            changed = self._changed = trio.Event()
            await changed.wait()

    def fields(self, record: logging.LogRecord) -> dict[str, Any]:
        names = ("activity_id", "session_id", "application_id", "operation", "outcome")
        return {name: getattr(record, name) for name in names}


@contextmanager
def access_lines() -> Iterator[Lines]:
    logger = logging.getLogger("tether.access")
    lines = Lines()
    level = logger.level
    logger.setLevel(logging.INFO)
    logger.addHandler(lines)
    try:
        yield lines
    finally:
        logger.removeHandler(lines)
        logger.setLevel(level)


def backend(probe: Probe) -> tuple[tether.RpcManager, tether.BackendIpc]:
    class SlowImpl(Slow):
        async def echo(self, value: int) -> int:
            return value

        async def hang(self) -> None:
            try:
                probe.signal("hanging")
                await trio.sleep_forever()
            finally:
                probe.signal("ended")

    async def authorize(context: tether.RequestContext) -> bool:
        return context.authorization != "Bearer no"

    manager = tether.RpcManager(authorize=authorize)
    manager.register_impl(Slow, SlowImpl)

    class TallyHandler(tether.IpcHandler, Tally):
        async def bump(self) -> int:
            return 1

    ipc = tether.BackendIpc()
    ipc.register(TallyHandler)
    return manager, ipc


@asynccontextmanager
async def raw_client(probe: Probe, **options: Any) -> AsyncIterator[httpx.AsyncClient]:
    manager, ipc = backend(probe)
    async with open_service_nursery() as nursery:
        serve = functools.partial(http.serve, manager, "127.0.0.1", 0, ipc=ipc, **options)
        url = await nursery.start(serve)
        async with httpx.AsyncClient(base_url=url) as client:
            yield client
        nursery.cancel_scope.cancel()


REFUSED = [
    pytest.param("POST", CALL, {"X-Timeout-Ms": "soon"}, b"[1]", "bad-request", id="400"),
    pytest.param("POST", CALL, {"Authorization": "Bearer no"}, b"[1]", "unauthorized", id="401"),
    pytest.param(
        "POST", CALL, {"Origin": "http://evil.example"}, b"[1]", "forbidden", id="403-origin"
    ),
    pytest.param(
        "POST",
        "/test.Slow/9.0.0/echo",
        {},
        b"[1]",
        "incompatible-version",
        id="403-version",
    ),
    pytest.param("POST", "/test.Slow/1.0.0/nope", {}, b"[1]", "not-found", id="404"),
    pytest.param("GET", CALL, {}, b"", "method-not-allowed", id="405"),
    pytest.param("POST", CALL, {}, b"[" + b"1," * 1000 + b"1]", "payload-too-large", id="413"),
    pytest.param(
        "POST", CALL, {"Content-Type": "text/plain"}, b"[1]", "unsupported-media-type", id="415"
    ),
    pytest.param("POST", CALL, {}, b"[1]", "ok", id="200"),
]


@pytest.mark.parametrize(("method", "path", "headers", "body", "outcome"), REFUSED)
async def test_each_rpc_request_gets_one_line_with_its_context(
    method: str, path: str, headers: dict[str, str], body: bytes, outcome: str
) -> None:
    with access_lines() as lines, trio.fail_after(TIMEOUT):
        async with raw_client(Probe(), max_body_size=1000) as client:
            response = await client.request(
                method, path, content=body, headers={**CONTEXT, **headers}
            )
            await lines.wait_for(1)
            # A second request, so that a late second line would show.
            await client.get("/health")
            await lines.wait_for(2)
    answered = response.json() if outcome == "ok" else response.json()["error"]["code"]
    assert answered == (1 if outcome == "ok" else outcome), response.text
    record = lines.records[0]
    operation = "test.Slow." + path.rsplit("/", 1)[1]
    assert lines.fields(record) == {
        "activity_id": "activity-1",
        "session_id": "session-1",
        "application_id": "app-1",
        "operation": operation,
        "outcome": outcome,
    }
    assert record.levelno == logging.INFO
    assert record.duration_ms >= 0  # type: ignore[attr-defined]
    assert record.getMessage() == f"{operation} {outcome} {record.duration_ms:.2f}ms"  # type: ignore[attr-defined]
    assert [lines.fields(r)["operation"] for r in lines.records[1:]] == ["GET /rpc/health"]


async def test_a_call_the_client_cancels_gets_one_line_with_its_context() -> None:
    probe = Probe()
    with access_lines() as lines, trio.fail_after(TIMEOUT):
        async with raw_client(probe) as client:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(
                    functools.partial(
                        client.post, "/test.Slow/1.0.0/hang", content=b"[]", headers=CONTEXT
                    )
                )
                await probe.wait("hanging")
                nursery.cancel_scope.cancel()  # httpx closes the connection
            await lines.wait_for(1)
            await probe.wait("ended")
    assert [lines.fields(record) for record in lines.records] == [
        {
            "activity_id": "activity-1",
            "session_id": "session-1",
            "application_id": "app-1",
            "operation": "test.Slow.hang",
            "outcome": "cancelled",
        }
    ]


async def test_a_call_past_its_deadline_gets_one_line_with_its_context() -> None:
    with access_lines() as lines, trio.fail_after(TIMEOUT):
        async with raw_client(Probe()) as client:
            response = await client.post(
                "/test.Slow/1.0.0/hang", content=b"[]", headers={**CONTEXT, "X-Timeout-Ms": "50"}
            )
            await lines.wait_for(1)
    assert response.status_code == 504
    assert [lines.fields(record) for record in lines.records] == [
        {
            "activity_id": "activity-1",
            "session_id": "session-1",
            "application_id": "app-1",
            "operation": "test.Slow.hang",
            "outcome": "deadline-exceeded",
        }
    ]
    assert lines.records[0].duration_ms >= 50  # type: ignore[attr-defined]


async def test_a_call_over_max_in_flight_gets_one_line() -> None:
    probe = Probe()
    with access_lines() as lines, trio.fail_after(TIMEOUT):
        async with raw_client(probe, max_in_flight=1) as client:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(
                    functools.partial(
                        client.post, "/test.Slow/1.0.0/hang", content=b"[]", headers=JSON
                    )
                )
                await probe.wait("hanging")
                refused = await client.post(CALL, content=b"[1]", headers=CONTEXT)
                await lines.wait_for(1)
                nursery.cancel_scope.cancel()
            await lines.wait_for(2)
    assert refused.status_code == 429
    assert lines.fields(lines.records[0]) == {
        "activity_id": "activity-1",
        "session_id": "session-1",
        "application_id": "app-1",
        "operation": "test.Slow.echo",
        "outcome": "too-many-requests",
    }
    assert lines.fields(lines.records[1])["outcome"] == "cancelled"
    assert len(lines.records) == 2


JSON = {"Content-Type": "application/json"}
HELLO = encode(Hello(PROTOCOL_VERSION, channels={"test.tally": "1.0.0"}, mode="ipc"))


async def test_each_ipc_request_gets_one_line() -> None:
    with access_lines() as lines, trio.fail_after(TIMEOUT):
        async with raw_client(Probe()) as client:
            refused = await client.post("/ipc", content=HELLO, headers={"Content-Type": "text/xml"})
            opened = await client.post("/ipc", content=HELLO, headers=JSON)
            session = opened.json()["session_id"]
            unknown = await client.post(
                "/ipc/nobody", content=b"{}", headers={**JSON, "X-Session-Token": "x"}
            )
            left = await client.delete(
                f"/ipc/{session}", headers={"X-Session-Token": opened.json()["token"]}
            )
            await lines.wait_for(4)
    assert (refused.status_code, opened.status_code, unknown.status_code, left.status_code) == (
        415,
        200,
        404,
        204,
    )
    seen = [(lines.fields(r)["operation"], lines.fields(r)["outcome"]) for r in lines.records]
    assert seen == [
        ("POST /rpc/ipc", "unsupported-media-type"),
        ("POST /rpc/ipc", "ok"),
        ("POST /rpc/ipc/nobody", "not-found"),
        (f"DELETE /rpc/ipc/{session}", "ok"),
    ]
    assert lines.fields(lines.records[3])["session_id"] == session


async def test_a_stalled_body_gets_one_line_request_timeout() -> None:
    with access_lines() as lines, trio.fail_after(TIMEOUT):
        async with raw_client(Probe(), body_timeout=0.2) as client:
            port = client.base_url.port
            assert port is not None
            stream = await trio.open_tcp_stream("127.0.0.1", port)
            async with stream:
                await stream.send_all(
                    b"POST /rpc/test.Slow/1.0.0/echo HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                    b"Content-Type: application/json\r\nX-Correlation-ID: activity-1\r\n"
                    b"Content-Length: 10\r\n\r\n[1"
                )
                await lines.wait_for(1)
    assert [lines.fields(record) for record in lines.records] == [
        {
            "activity_id": "activity-1",
            "session_id": "-",
            "application_id": "-",
            "operation": "test.Slow.echo",
            "outcome": "request-timeout",
        }
    ]
    assert lines.records[0].duration_ms >= 200  # type: ignore[attr-defined]


async def test_a_connection_over_max_connections_gets_one_line() -> None:
    with access_lines() as lines, trio.fail_after(TIMEOUT):
        async with raw_client(Probe(), max_connections=1) as client:
            port = client.base_url.port
            assert port is not None
            held = await trio.open_tcp_stream("127.0.0.1", port)
            async with held:
                refused = await trio.open_tcp_stream("127.0.0.1", port)
                async with refused:
                    assert (await refused.receive_some()).startswith(b"HTTP/1.1 503 ")
                    await lines.wait_for(1)
    assert [lines.fields(record) for record in lines.records] == [
        {
            "activity_id": "-",
            "session_id": "-",
            "application_id": "-",
            "operation": "connect",
            "outcome": "unavailable",
        }
    ]
