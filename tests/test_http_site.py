# mypy: disable-error-code="empty-body"
"""Cross-site requests never run anything over HTTP (issue 12, points 1 and 13).

A browser page on any origin can make a "simple" request (a `text/plain` or form
POST, no preflight), and DNS rebinding can give a hostile page a name that
resolves to a loopback backend. Every route of the HTTP server refuses these
before anything runs: 415 for a POST that is not JSON, 403 `forbidden` for an
Origin that is not allowed, 400 for a Host the server does not answer to. Each
test proves the impl (or the IPC handler) never ran with a counter.
"""

from __future__ import annotations

import functools
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import httpx
import pytest
import trio

import tether
from tether.runtime import PROTOCOL_VERSION
from tether.runtime._client import error_from_info
from tether.runtime._protocol import ErrorInfo, Hello, Invoke, encode
from tether.runtime._util import open_service_nursery
from tether.transports import http

TIMEOUT = 10.0
JSON = {"Content-Type": "application/json"}
CALL = "/test.Counter/1.0.0/bump"


class Counter(tether.RpcInterface):
    interface_name = "test.Counter"
    interface_version = "1.0.0"

    async def bump(self, by: int) -> int: ...


class CounterImpl(Counter):
    def __init__(self) -> None:
        self.calls = 0

    async def bump(self, by: int) -> int:
        self.calls += by
        return self.calls


class Tally(tether.IpcInterface):
    channel_name = "test.tally"
    version = "1.0.0"

    async def bump(self) -> int: ...


class Runs:
    """What ran on the backend: RPC calls, IPC sessions opened, IPC invokes."""

    def __init__(self) -> None:
        self.impl = CounterImpl()
        self.sessions = 0
        self.invokes = 0

    def manager(self) -> tether.RpcManager:
        manager = tether.RpcManager()
        manager.register_impl(Counter, self.impl)
        return manager

    def backend_ipc(self) -> tether.BackendIpc:
        runs = self

        class TallyHandler(tether.IpcHandler, Tally):
            def __init__(self) -> None:
                runs.sessions += 1

            async def bump(self) -> int:
                runs.invokes += 1
                return runs.invokes

        backend = tether.BackendIpc()
        backend.register(TallyHandler)
        return backend

    @property
    def anything(self) -> int:
        return self.impl.calls + self.sessions + self.invokes


@asynccontextmanager
async def raw_client(runs: Runs, **options: Any) -> AsyncIterator[httpx.AsyncClient]:
    """An httpx client whose base URL is the prefix of a backend serving `runs`."""
    async with open_service_nursery() as nursery:
        serve = functools.partial(
            http.serve, runs.manager(), "127.0.0.1", 0, ipc=runs.backend_ipc(), **options
        )
        url = await nursery.start(serve)
        async with httpx.AsyncClient(base_url=url) as client:
            yield client
        nursery.cancel_scope.cancel()


HELLO = encode(Hello(PROTOCOL_VERSION, channels={"test.tally": "1.0.0"}, mode="ipc"))
INVOKE = encode(Invoke(1, "test.tally", "bump", []))


async def open_session(client: httpx.AsyncClient) -> tuple[str, dict[str, str]]:
    """Open an IPC session the way a same-site client does: its path and token header."""
    opened = await client.post("/ipc", content=HELLO, headers=JSON)
    assert opened.status_code == 200, opened.text
    body = opened.json()
    return f"/ipc/{body['session_id']}", {"X-Session-Token": body["token"]}


def assert_error(response: httpx.Response, status: int, code: str, name: str) -> None:
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert (error["code"], error["status"], error["name"]) == (code, status, name)


# ---------------------------------------------------------------------------
# 415: a POST that is not JSON


SIMPLE_BODIES = [
    pytest.param({"Content-Type": "text/plain"}, id="text/plain"),
    pytest.param({"Content-Type": "text/plain;charset=UTF-8"}, id="text/plain-charset"),
    pytest.param({"Content-Type": "application/x-www-form-urlencoded"}, id="form"),
    pytest.param({"Content-Type": "multipart/form-data; boundary=x"}, id="multipart"),
    pytest.param({}, id="no-content-type"),
    pytest.param({"Content-Type": "application/jsonp"}, id="not-quite-json"),
]


@pytest.mark.parametrize("cors_origins", [(), ("http://app.example",)], ids=["no-cors", "cors"])
@pytest.mark.parametrize("headers", SIMPLE_BODIES)
async def test_a_post_that_is_not_json_gets_415_and_runs_nothing(
    headers: dict[str, str], cors_origins: tuple[str, ...]
) -> None:
    runs = Runs()
    with trio.fail_after(TIMEOUT):
        async with raw_client(runs, cors_origins=cors_origins) as client:
            call = await client.post(CALL, content=b"[1]", headers=headers)
            opened = await client.post("/ipc", content=HELLO, headers=headers)
            path, token = await open_session(client)
            sessions = runs.sessions
            invoked = await client.post(path, content=INVOKE, headers={**headers, **token})
    for response in (call, opened, invoked):
        assert_error(response, 415, "unsupported-media-type", "InvalidRequest")
        assert "application/json" in response.json()["error"]["message"]
    assert runs.impl.calls == 0
    assert runs.invokes == 0
    assert sessions == 1  # only the one opened as JSON


@pytest.mark.parametrize(
    "content_type",
    ["application/json", "application/json; charset=utf-8", "Application/JSON;Charset=UTF-8"],
)
async def test_json_content_types_with_parameters_in_any_case_are_taken(content_type: str) -> None:
    runs = Runs()
    headers = {"Content-Type": content_type}
    with trio.fail_after(TIMEOUT):
        async with raw_client(runs) as client:
            call = await client.post(CALL, content=b"[2]", headers=headers)
            opened = await client.post("/ipc", content=HELLO, headers=headers)
    assert call.status_code == 200, call.text
    assert call.json() == 2
    assert opened.status_code == 200, opened.text


@pytest.mark.parametrize(
    ("status", "code"),
    [(405, "method-not-allowed"), (408, "request-timeout"), (415, "unsupported-media-type")],
)
def test_http_refusals_are_bad_requests_to_tethers_client(status: int, code: str) -> None:
    # The client raises by the code: what a caller catches for every request
    # the server refused as malformed.
    info = ErrorInfo(code, status, "InvalidRequest", "refused", {}, None)
    exc = error_from_info(info, None)
    assert type(exc) is tether.InvalidRequest
    assert exc.remote


# ---------------------------------------------------------------------------
# 403: an Origin that is not allowed


async def test_a_cross_origin_json_post_gets_403_and_runs_nothing() -> None:
    runs = Runs()
    evil = {**JSON, "Origin": "http://evil.example"}
    with trio.fail_after(TIMEOUT):
        async with raw_client(runs, cors_origins=["http://app.example"]) as client:
            call = await client.post(CALL, content=b"[1]", headers=evil)
            opened = await client.post("/ipc", content=HELLO, headers=evil)
            path, token = await open_session(client)
            sessions = runs.sessions
            invoked = await client.post(path, content=INVOKE, headers={**evil, **token})
            events = await client.get(f"{path}/events", headers={**evil, **token})
            deleted = await client.delete(path, headers={**evil, **token})
            # The refused DELETE left the session open: its owner still uses it.
            still = await client.post(path, content=INVOKE, headers={**JSON, **token})
    for response in (call, opened, invoked, events, deleted):
        assert_error(response, 403, "forbidden", "Forbidden")
        assert "access-control-allow-origin" not in response.headers
    assert still.status_code == 202
    assert runs.impl.calls == 0
    assert sessions == 1


@pytest.mark.parametrize("path", ["/", "/health", "/openapi.json"])
async def test_a_cross_origin_get_gets_403(path: str) -> None:
    runs = Runs()
    with trio.fail_after(TIMEOUT):
        async with raw_client(runs) as client:
            refused = await client.get(path, headers={"Origin": "http://evil.example"})
            same = await client.get(path)
    assert_error(refused, 403, "forbidden", "Forbidden")
    assert same.status_code == 200


async def test_without_cors_origins_only_same_origin_pages_may_call() -> None:
    runs = Runs()
    with trio.fail_after(TIMEOUT):
        async with raw_client(runs) as client:
            own = f"http://{client.base_url.host}:{client.base_url.port}"
            same = await client.post(CALL, content=b"[1]", headers={**JSON, "Origin": own})
            other = await client.post(
                CALL, content=b"[1]", headers={**JSON, "Origin": "http://app.example"}
            )
            program = await client.post(CALL, content=b"[1]", headers=JSON)
    assert same.status_code == 200
    assert "access-control-allow-origin" not in same.headers
    assert_error(other, 403, "forbidden", "Forbidden")
    assert program.status_code == 200  # no Origin: not a browser
    assert runs.impl.calls == 2


async def test_listed_origins_and_any_origin_may_call() -> None:
    runs = Runs()
    with trio.fail_after(TIMEOUT):
        async with raw_client(runs, cors_origins=["http://app.example"]) as client:
            listed = await client.post(
                CALL, content=b"[1]", headers={**JSON, "Origin": "http://app.example"}
            )
        async with raw_client(runs, cors_origins=["*"]) as client:
            anyone = await client.post(
                CALL, content=b"[1]", headers={**JSON, "Origin": "http://anyone.example"}
            )
    assert listed.status_code == 200
    assert listed.headers["access-control-allow-origin"] == "http://app.example"
    assert anyone.status_code == 200
    assert anyone.headers["access-control-allow-origin"] == "http://anyone.example"


async def test_a_preflight_from_another_origin_is_403_forbidden() -> None:
    headers = {"Origin": "http://evil.example", "Access-Control-Request-Method": "POST"}
    with trio.fail_after(TIMEOUT):
        async with raw_client(Runs(), cors_origins=["http://app.example"]) as client:
            response = await client.options(CALL, headers=headers)
    assert_error(response, 403, "forbidden", "Forbidden")
    assert "access-control-allow-origin" not in response.headers


# ---------------------------------------------------------------------------
# 400: a Host the server does not answer to


async def test_a_rebinding_host_on_a_loopback_server_gets_400_and_runs_nothing() -> None:
    runs = Runs()
    rebound = {**JSON, "Host": "evil.example"}
    with trio.fail_after(TIMEOUT):
        async with raw_client(runs) as client:
            call = await client.post(CALL, content=b"[1]", headers=rebound)
            opened = await client.post("/ipc", content=HELLO, headers=rebound)
            path, token = await open_session(client)
            sessions = runs.sessions
            invoked = await client.post(path, content=INVOKE, headers={**rebound, **token})
            described = await client.get("/", headers={"Host": "evil.example"})
            local = await client.post(CALL, content=b"[1]", headers={**JSON, "Host": "localhost"})
    for response in (call, opened, invoked, described):
        assert_error(response, 400, "bad-request", "InvalidRequest")
        assert response.json()["error"]["details"] == {"field": "Host"}
    assert local.status_code == 200
    assert runs.impl.calls == 1
    assert sessions == 1


async def test_allowed_hosts_names_the_hosts_served() -> None:
    runs = Runs()
    with trio.fail_after(TIMEOUT):
        async with raw_client(runs, allowed_hosts=["api.example"]) as client:
            named = await client.post(
                CALL, content=b"[1]", headers={**JSON, "Host": "api.example:8000"}
            )
            loopback = await client.post(CALL, content=b"[1]", headers=JSON)
    assert named.status_code == 200
    assert_error(loopback, 400, "bad-request", "InvalidRequest")


# ---------------------------------------------------------------------------
# Allow: 405 and OPTIONS agree, route by route

ROUTES = [
    pytest.param(CALL, "POST, OPTIONS", id="rpc"),
    pytest.param("/", "GET, HEAD, OPTIONS", id="describe"),
    pytest.param("/health", "GET, HEAD, OPTIONS", id="health"),
    pytest.param("/openapi.json", "GET, HEAD, OPTIONS", id="openapi"),
    pytest.param("/ipc", "POST, OPTIONS", id="ipc-open"),
    pytest.param("/ipc/{session}", "POST, DELETE, OPTIONS", id="ipc-session"),
    pytest.param("/ipc/{session}/events", "GET, OPTIONS", id="ipc-events"),
]


@pytest.mark.parametrize(("route", "allow"), ROUTES)
async def test_405_and_options_say_the_same_allow_per_route(route: str, allow: str) -> None:
    methods = {method.strip() for method in allow.split(",")}
    wrong = next(m for m in ("PUT", "PATCH") if m not in methods)
    with trio.fail_after(TIMEOUT):
        async with raw_client(Runs(), cors_origins=["http://app.example"]) as client:
            path, token = await open_session(client)
            target = route.replace("/ipc/{session}", path)
            refused = await client.request(wrong, target, headers=token)
            options = await client.options(target, headers=token)
            preflight = await client.options(
                target,
                headers={"Origin": "http://app.example", "Access-Control-Request-Method": "POST"},
            )
    assert_error(refused, 405, "method-not-allowed", "InvalidRequest")
    assert refused.headers["allow"] == allow
    assert options.status_code == 204
    assert options.headers["allow"] == allow
    assert "access-control-allow-origin" not in options.headers
    assert preflight.status_code == 204
    assert preflight.headers["allow"] == allow
    assert preflight.headers["access-control-allow-methods"] == allow
    assert preflight.headers["access-control-allow-origin"] == "http://app.example"
