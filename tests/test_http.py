# mypy: disable-error-code="empty-body"
"""The HTTP transport's wire contract, against the real server on 127.0.0.1 (DESIGN.md 4-7).

Raw wire tests use httpx as an independent client; client tests use tether's
own `http.connect` / `http.connect_ipc`. The fuzz test calls the ASGI app
directly (no network) to stay fast; a few malformed requests go over real
sockets too.
"""

from __future__ import annotations

import functools
import json
import logging
import math
import re
import string
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, MutableMapping
from contextlib import asynccontextmanager
from typing import Any

import attrs
import httpx
import hypercorn.config
import hypercorn.trio
import pytest
import trio
import trio.testing
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from openapi_spec_validator import validate

import tether
from tether import contexts
from tether.runtime import (
    PROTOCOL_VERSION,
    ConnectError,
    ConnectionClosed,
    IncompatibleVersion,
    RpcInterface,
    RpcManager,
    TransportError,
)
from tether.runtime._protocol import Hello, encode
from tether.runtime._util import open_service_nursery
from tether.testing import ConformanceInterface, Everything, Probe, RpcConformance
from tether.testing._rpc_streams_suite import ConformanceStreams
from tether.transports import http
from tether.transports.http import HttpApp, _ipc_server

TIMEOUT = 10.0
CONF = "/tether.Conformance/1.2.3"
UUID_SHAPE = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")
TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
TRACEPARENT = f"00-{TRACE_ID}-00f067aa0ba902b7-01"

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]


def conformance_manager(probe: Probe | None = None, **kwargs: Any) -> RpcManager:
    return RpcConformance().backend_manager(probe, **kwargs)


@asynccontextmanager
async def served(manager: RpcManager | None, **options: Any) -> AsyncIterator[str]:
    """Serve with `http.serve` on 127.0.0.1, port 0, for the block; yield its URL."""
    async with open_service_nursery() as nursery:
        url = await nursery.start(functools.partial(http.serve, manager, "127.0.0.1", 0, **options))
        yield url
        nursery.cancel_scope.cancel()


@asynccontextmanager
async def raw_client(
    manager: RpcManager | None, **options: Any
) -> AsyncIterator[httpx.AsyncClient]:
    """An httpx client whose base URL is a served backend's prefix."""
    # Every POST must be JSON (415 otherwise): the client says so on every request.
    headers = {"Content-Type": "application/json"}
    async with (
        served(manager, **options) as url,
        httpx.AsyncClient(base_url=url, headers=headers) as client,
    ):
        yield client


@asynccontextmanager
async def served_asgi(app: Any, **config_options: Any) -> AsyncIterator[str]:
    """Serve an ASGI app with hypercorn's defaults, but for `config_options`; yield its origin."""
    config = hypercorn.config.Config()
    config.bind = ["127.0.0.1:0"]
    config.accesslog = None
    for name, value in config_options.items():
        setattr(config, name, value)
    async with open_service_nursery() as nursery:
        binds = await nursery.start(functools.partial(hypercorn.trio.serve, app, config))
        yield binds[0]
        nursery.cancel_scope.cancel()


def error_of(response: httpx.Response) -> dict[str, Any]:
    """The `error` object of a tether error response, checked for its shape."""
    assert response.headers["content-type"] == "application/json"
    body = response.json()
    assert set(body) == {"error"}
    error: dict[str, Any] = body["error"]
    assert set(error) == {"code", "status", "name", "message", "details", "activity_id"}
    assert error["status"] == response.status_code
    assert isinstance(error["message"], str)
    assert error["message"]
    return error


# ---------------------------------------------------------------------------
# RPC calls: results and context


async def test_call_answers_200_with_the_json_result() -> None:
    with trio.fail_after(TIMEOUT):
        async with raw_client(conformance_manager()) as client:
            response = await client.post(f"{CONF}/add", content=b"[2, 40]")
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/json"
    assert response.json() == 42


async def test_correlation_id_sent_is_echoed_back() -> None:
    with trio.fail_after(TIMEOUT):
        async with raw_client(conformance_manager()) as client:
            ok = await client.post(
                f"{CONF}/add", content=b"[1, 2]", headers={"X-Correlation-ID": "my-activity-7"}
            )
            failed = await client.post(
                f"{CONF}/add", content=b"[1]", headers={"X-Correlation-ID": "my-activity-8"}
            )
    assert ok.headers["x-correlation-id"] == "my-activity-7"
    assert failed.headers["x-correlation-id"] == "my-activity-8"
    assert error_of(failed)["activity_id"] == "my-activity-8"


@pytest.mark.parametrize(
    ("header", "value"),
    [
        ("X-Correlation-ID", "a" * 201),
        ("X-Correlation-ID", "tab\there"),
        ("X-Session-Id", "s" * 201),
        ("X-Session-Id", "tab\there"),
        ("X-Application-Id", "app\x7f"),
        ("X-Application-Version", "v" * 5000),
    ],
)
async def test_context_headers_that_are_not_short_printable_text_are_refused(
    header: str, value: str, caplog: pytest.LogCaptureFixture
) -> None:
    """They end up in every log line of the request: a client cannot write kilobytes
    or control characters into them (the same bound as WebSocket and IPC messages)."""
    probe = Probe()
    caplog.set_level(logging.INFO, logger="tether.access")
    with trio.fail_after(TIMEOUT):
        async with raw_client(conformance_manager(probe)) as client:
            response = await client.post(f"{CONF}/add", content=b"[1, 2]", headers={header: value})
    assert response.status_code == 400
    assert error_of(response)["details"] == {"field": header}
    assert header in error_of(response)["message"]
    assert all(value not in record.getMessage() for record in caplog.records)


async def test_correlation_id_is_generated_uuid_shaped_when_absent() -> None:
    with trio.fail_after(TIMEOUT):
        async with raw_client(conformance_manager()) as client:
            first = await client.post(f"{CONF}/context", content=b"[]")
            second = await client.post(f"{CONF}/context", content=b"[]")
    generated = first.headers["x-correlation-id"]
    assert UUID_SHAPE.fullmatch(generated)
    assert first.json()["activity_id"] == generated
    assert second.headers["x-correlation-id"] != generated


async def test_impl_sees_activity_session_application_and_authorization_from_headers() -> None:
    headers = {
        "X-Correlation-ID": "activity-42",
        "X-Session-Id": "session-9",
        "X-Application-Id": "editor",
        "X-Application-Version": "3.1.4",
        "Authorization": "Bearer s3cr3t",
        "X-Timeout-Ms": "5000",
        "X-Protocol-Version": str(PROTOCOL_VERSION),
    }
    with trio.fail_after(TIMEOUT):
        async with raw_client(conformance_manager()) as client:
            response = await client.post(f"{CONF}/context", content=b"[]", headers=headers)
            bare = await client.post(f"{CONF}/context", content=b"[]")
    assert response.status_code == 200
    seen = response.json()
    assert seen["activity_id"] == "activity-42"
    assert seen["session_id"] == "session-9"
    assert seen["application_id"] == "editor"
    assert seen["application_version"] == "3.1.4"
    assert seen["operation"] == "tether.Conformance.context"
    assert seen["has_authorization"] is True
    assert 0 < seen["seconds_left"] <= 5.0
    nothing = bare.json()
    assert nothing["session_id"] is None
    assert nothing["application_id"] is None
    assert nothing["has_authorization"] is False


async def test_traceparent_alone_makes_the_trace_id_the_activity_id() -> None:
    with trio.fail_after(TIMEOUT):
        async with raw_client(conformance_manager()) as client:
            response = await client.post(
                f"{CONF}/context", content=b"[]", headers={"traceparent": TRACEPARENT}
            )
            both = await client.post(
                f"{CONF}/context",
                content=b"[]",
                headers={"traceparent": TRACEPARENT, "X-Correlation-ID": "explicit"},
            )
    expected = str(uuid.UUID(TRACE_ID))
    assert response.json()["activity_id"] == expected
    assert response.headers["x-correlation-id"] == expected
    # X-Correlation-ID wins over traceparent.
    assert both.json()["activity_id"] == "explicit"


@pytest.mark.parametrize(
    "traceparent",
    [
        "00-zzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzz-00f067aa0ba902b7-01",
        f"ff-{TRACE_ID}-00f067aa0ba902b7-01",
        f"00-{'0' * 32}-00f067aa0ba902b7-01",
        f"00-{TRACE_ID}-{'0' * 16}-01",
        "garbage",
    ],
)
async def test_invalid_traceparent_is_ignored(traceparent: str) -> None:
    with trio.fail_after(TIMEOUT):
        async with raw_client(conformance_manager()) as client:
            response = await client.post(
                f"{CONF}/context", content=b"[]", headers={"traceparent": traceparent}
            )
    assert response.status_code == 200
    activity = response.json()["activity_id"]
    assert UUID_SHAPE.fullmatch(activity)
    assert activity != str(uuid.UUID(TRACE_ID))
    assert response.headers["x-correlation-id"] == activity


async def test_tether_client_sends_a_traceparent_whose_trace_id_is_the_activity() -> None:
    seen: list[dict[bytes, bytes]] = []
    app = HttpApp(conformance_manager())

    async def recording(scope: Scope, receive: Any, send: Any) -> None:
        if scope["type"] == "http" and scope["method"] == "POST":
            seen.append(dict(scope["headers"]))
        await app(scope, receive, send)

    with trio.fail_after(TIMEOUT):
        async with (
            served_asgi(recording) as origin,
            http.connect(f"{origin}/rpc", interfaces=[ConformanceInterface]) as backend,
        ):
            client = backend.get_client(ConformanceInterface)
            with contexts.activity() as act:
                assert await client.add(1, 2) == 3
    [headers] = seen
    assert headers[b"x-correlation-id"] == act.activity_id.encode()
    version, trace_id, span_id, flags = headers[b"traceparent"].decode().split("-")
    assert version == "00"
    assert trace_id == act.activity_id.replace("-", "")
    assert re.fullmatch(r"[0-9a-f]{16}", span_id)
    assert flags == "01"


# ---------------------------------------------------------------------------
# Status codes and error bodies (DESIGN.md section 5)


@pytest.mark.parametrize("body", [b"[1, 2", b"not json", b"", b"\xff\xfe", b"[1, 2] [3]"])
async def test_malformed_json_is_400(body: bytes) -> None:
    with trio.fail_after(TIMEOUT):
        async with raw_client(conformance_manager()) as client:
            response = await client.post(f"{CONF}/add", content=body)
    assert response.status_code == 400
    error = error_of(response)
    assert error["code"] == "bad-request"
    assert error["name"] == "InvalidRequest"


@pytest.mark.parametrize("body", [b'{"a": 1, "b": 2}', b"3", b'"text"', b"null"])
async def test_body_that_is_not_an_array_is_400(body: bytes) -> None:
    with trio.fail_after(TIMEOUT):
        async with raw_client(conformance_manager()) as client:
            response = await client.post(f"{CONF}/add", content=body)
    assert response.status_code == 400
    error = error_of(response)
    assert error["code"] == "bad-request"
    assert error["details"] == {"field": "body"}


async def test_wrong_arity_is_400_naming_the_parameters() -> None:
    with trio.fail_after(TIMEOUT):
        async with raw_client(conformance_manager()) as client:
            few = await client.post(f"{CONF}/add", content=b"[1]")
            many = await client.post(f"{CONF}/add", content=b"[1, 2, 3]")
    for response, got in ((few, 1), (many, 3)):
        assert response.status_code == 400
        error = error_of(response)
        assert error["code"] == "bad-request"
        assert error["details"] == {"expected": ["a", "b"], "got": got}


async def test_wrong_type_is_400_naming_the_parameter() -> None:
    with trio.fail_after(TIMEOUT):
        async with raw_client(conformance_manager()) as client:
            response = await client.post(f"{CONF}/add", content=b'[1, "two"]')
    assert response.status_code == 400
    error = error_of(response)
    assert error["code"] == "bad-request"
    assert error["details"]["parameter"] == "b"
    assert "'b'" in error["message"]


@pytest.mark.parametrize(
    "path", ["/tether.Nobody/1.0.0/add", f"{CONF}/not_an_operation", f"{CONF}/_private"]
)
async def test_unknown_interface_or_operation_is_404(path: str) -> None:
    with trio.fail_after(TIMEOUT):
        async with raw_client(conformance_manager()) as client:
            response = await client.post(path, content=b"[]")
    assert response.status_code == 404
    assert error_of(response)["code"] == "not-found"


@pytest.mark.parametrize("version", ["2.0.0", "1.3.0", "0.9.0"])
async def test_incompatible_interface_version_is_403(version: str) -> None:
    with trio.fail_after(TIMEOUT):
        async with raw_client(conformance_manager()) as client:
            response = await client.post(f"/tether.Conformance/{version}/add", content=b"[1, 2]")
    assert response.status_code == 403
    error = error_of(response)
    assert error["code"] == "incompatible-version"
    assert error["details"]["backend_version"] == "1.2.3"
    assert error["details"]["client_version"] == version


async def test_version_that_is_not_semver_is_400() -> None:
    with trio.fail_after(TIMEOUT):
        async with raw_client(conformance_manager()) as client:
            response = await client.post("/tether.Conformance/banana/add", content=b"[1, 2]")
    assert response.status_code == 400
    assert error_of(response)["details"] == {"field": "ver"}


async def test_compatible_older_minor_version_is_served() -> None:
    with trio.fail_after(TIMEOUT):
        async with raw_client(conformance_manager()) as client:
            response = await client.post("/tether.Conformance/1.1.0/add", content=b"[1, 2]")
    assert response.status_code == 200
    assert response.json() == 3


@pytest.mark.parametrize("value", ["abc", "-5", "1.5", ""])
async def test_bad_timeout_header_is_400(value: str) -> None:
    with trio.fail_after(TIMEOUT):
        async with raw_client(conformance_manager()) as client:
            response = await client.post(
                f"{CONF}/add", content=b"[1, 2]", headers={"X-Timeout-Ms": value}
            )
    assert response.status_code == 400
    error = error_of(response)
    assert error["details"] == {"field": "X-Timeout-Ms"}


async def test_other_protocol_version_is_403() -> None:
    with trio.fail_after(TIMEOUT):
        async with raw_client(conformance_manager()) as client:
            response = await client.post(
                f"{CONF}/add", content=b"[1, 2]", headers={"X-Protocol-Version": "99"}
            )
    assert response.status_code == 403
    error = error_of(response)
    assert error["code"] == "incompatible-version"
    assert "99" in error["message"]


async def test_timeout_header_too_large_for_a_float_is_served_not_500() -> None:
    # Regression: 10**400 ms overflowed float division in the dispatcher (500).
    with trio.fail_after(TIMEOUT):
        async with raw_client(conformance_manager()) as client:
            response = await client.post(
                f"{CONF}/context", content=b"[]", headers={"X-Timeout-Ms": "1" + "0" * 400}
            )
    assert response.status_code == 200
    assert response.json()["seconds_left"] > 0


async def test_body_over_the_limit_with_content_length_is_413() -> None:
    with trio.fail_after(TIMEOUT):
        async with raw_client(conformance_manager(), max_body_size=1000) as client:
            fits = await client.post(f"{CONF}/big", content=b"[10]" + b" " * 996)
            response = await client.post(f"{CONF}/big", content=b"[10]" + b" " * 997)
    assert fits.status_code == 200
    assert response.status_code == 413
    assert error_of(response)["code"] == "payload-too-large"


async def test_streamed_body_over_the_limit_without_content_length_is_413() -> None:
    sent_length: list[str | None] = []

    async def chunks() -> AsyncIterator[bytes]:
        yield b"[10"
        for _ in range(3):
            yield b" " * 400
        yield b"]"

    with trio.fail_after(TIMEOUT):
        async with raw_client(conformance_manager(), max_body_size=1000) as client:
            request = client.build_request("POST", f"{CONF}/big", content=chunks())
            sent_length.append(request.headers.get("content-length"))
            response = await client.send(request)
    assert sent_length == [None]
    assert response.status_code == 413
    assert error_of(response)["code"] == "payload-too-large"


async def test_reply_over_the_limit_is_413() -> None:
    with trio.fail_after(TIMEOUT):
        async with raw_client(conformance_manager(), max_body_size=1000) as client:
            response = await client.post(f"{CONF}/big", content=b"[5000]")
    assert response.status_code == 413
    assert error_of(response)["code"] == "payload-too-large"


async def test_authorize_hook_refusing_is_401_with_www_authenticate() -> None:
    async def authorize(ctx: contexts.RequestContext) -> bool:
        return ctx.authorization == "Bearer right"

    with trio.fail_after(TIMEOUT):
        async with raw_client(conformance_manager(authorize=authorize)) as client:
            missing = await client.post(f"{CONF}/add", content=b"[1, 2]")
            wrong = await client.post(
                f"{CONF}/add", content=b"[1, 2]", headers={"Authorization": "Bearer wrong"}
            )
            right = await client.post(
                f"{CONF}/add", content=b"[1, 2]", headers={"Authorization": "Bearer right"}
            )
    for response in (missing, wrong):
        assert response.status_code == 401
        assert response.headers["www-authenticate"] == "Bearer"
        assert error_of(response)["code"] == "unauthorized"
    assert right.status_code == 200


@pytest.mark.parametrize("method", ["GET", "PUT", "DELETE", "PATCH"])
async def test_other_method_on_an_rpc_path_is_405_with_allow(method: str) -> None:
    with trio.fail_after(TIMEOUT):
        async with raw_client(conformance_manager()) as client:
            response = await client.request(method, f"{CONF}/add")
    assert response.status_code == 405
    assert response.headers["allow"] == "POST, OPTIONS"
    assert error_of(response)["code"] == "method-not-allowed"


@pytest.mark.parametrize("path", ["/", "/elsewhere", "/rpcx/health", "/rp"])
async def test_path_outside_the_prefix_is_404(path: str) -> None:
    with trio.fail_after(TIMEOUT):
        async with served(conformance_manager()) as url, httpx.AsyncClient() as client:
            origin = url.removesuffix("/rpc")
            response = await client.get(origin + path)
    assert response.status_code == 404
    assert error_of(response)["code"] == "not-found"


@pytest.mark.parametrize("path", ["/a/b", "/a/b/c/d", "/health/x"])
async def test_unknown_path_inside_the_prefix_is_404(path: str) -> None:
    with trio.fail_after(TIMEOUT):
        async with raw_client(conformance_manager()) as client:
            response = await client.post(path, content=b"[]")
    assert response.status_code == 404
    assert error_of(response)["code"] == "not-found"


async def test_calls_over_max_in_flight_are_429_with_retry_after() -> None:
    probe = Probe()
    with trio.fail_after(TIMEOUT):
        async with raw_client(conformance_manager(probe), max_in_flight=2) as client:
            async with trio.open_nursery() as nursery:
                for key in "ab":
                    nursery.start_soon(
                        functools.partial(
                            client.post, f"{CONF}/wait_until_cancelled", content=f'["{key}"]'
                        )
                    )
                await probe.wait("started:a")
                await probe.wait("started:b")
                refused = await client.post(f"{CONF}/add", content=b"[1, 2]")
                nursery.cancel_scope.cancel()
            await probe.wait("finally:a")
            await probe.wait("finally:b")
            # The held places were given back.
            after = await client.post(f"{CONF}/add", content=b"[1, 2]")
    assert refused.status_code == 429
    assert refused.headers["retry-after"] == "1"
    error = error_of(refused)
    assert error["code"] == "too-many-requests"
    assert after.status_code == 200


@pytest.mark.parametrize("development_mode", [False, True])
async def test_unexpected_impl_exception_is_500_with_type_name(development_mode: bool) -> None:
    manager = conformance_manager(development_mode=development_mode)
    with trio.fail_after(TIMEOUT):
        async with raw_client(manager) as client:
            response = await client.post(f"{CONF}/fail", content=b'["other", "it broke"]')
    assert response.status_code == 500
    error = error_of(response)
    assert error["code"] == "internal"
    assert error["name"] == "builtins.ValueError"
    assert error["message"] == "it broke"
    if development_mode:
        assert "Traceback" in error["details"]["traceback"]
        assert "ValueError: it broke" in error["details"]["traceback"]
    else:
        assert error["details"] == {}
        assert "Traceback" not in response.text


async def test_application_error_is_422_with_its_fields() -> None:
    with trio.fail_after(TIMEOUT):
        async with raw_client(conformance_manager()) as client:
            response = await client.post(f"{CONF}/fail", content=b'["application", "no"]')
    assert response.status_code == 422
    error = error_of(response)
    assert error["code"] == "application"
    assert error["name"] == "tether.testing.ConformanceError"
    assert error["details"] == {"fields": {"code": 42, "reason": "no"}}


@pytest.mark.parametrize(
    ("kind", "status"),
    [("not-found", 404), ("unauthorized", 401), ("unavailable", 503), ("overloaded", 429)],
)
async def test_tether_errors_raised_by_the_impl_keep_their_status(kind: str, status: int) -> None:
    with trio.fail_after(TIMEOUT):
        async with raw_client(conformance_manager()) as client:
            response = await client.post(f"{CONF}/fail", content=f'["{kind}", "m"]')
    assert response.status_code == status
    error_of(response)
    if status in (429, 503):
        assert int(response.headers["retry-after"]) >= 1


# ---------------------------------------------------------------------------
# No input makes the server answer 500 or log an error


class Fuzz(RpcInterface):
    interface_name = "fuzz"
    interface_version = "1.2.0"

    async def add(self, a: int, b: int) -> int: ...
    async def echo(self, value: Everything) -> Everything: ...
    async def greet(self, name: str, times: int = 1) -> list[str]: ...
    async def context(self) -> dict[str, str | None]: ...


class FuzzImpl(Fuzz):
    async def add(self, a: int, b: int) -> int:
        return a + b

    async def echo(self, value: Everything) -> Everything:
        return value

    async def greet(self, name: str, times: int = 1) -> list[str]:
        return [name] * max(0, min(times, 3))

    async def context(self) -> dict[str, str | None]:
        ctx = contexts.current()
        assert ctx is not None
        return {"activity_id": ctx.activity_id, "session_id": ctx.session_id}


@attrs.frozen
class Placement:
    x: float
    y: float


class EditorIpc(tether.IpcInterface):
    channel_name = "editor"
    version = "1.2.0"

    async def move(self, element_id: str, dx: float) -> Placement: ...


class EditorEvents(tether.NotificationInterface):
    channel_name = "editor-events"

    async def moved(self, element_id: str, placement: Placement) -> None: ...


class SessionLog:
    """What the handlers of a backend saw: the reasons their sessions ended."""

    def __init__(self) -> None:
        self.reasons: list[str] = []
        self.closed = trio.Event()


def editor_backend(log: SessionLog | None = None, **options: Any) -> tether.BackendIpc:
    """A BackendIpc serving `editor`; each session's end is recorded in `log`."""
    record = log if log is not None else SessionLog()

    class EditorHandler(tether.IpcHandler, EditorIpc):
        async def move(self, element_id: str, dx: float) -> Placement:
            placement = Placement(dx, 0.0)
            await tether.current_session().notifier(EditorEvents).moved(element_id, placement)
            return placement

        def on_close(self, reason: str) -> None:
            record.reasons.append(reason)
            record.closed.set()

    backend = tether.BackendIpc(**options)
    backend.register(EditorHandler)
    return backend


def fuzz_manager() -> RpcManager:
    manager = RpcManager()
    manager.register_impl(Fuzz, FuzzImpl())
    return manager


IPC_HELLO = encode(Hello(PROTOCOL_VERSION, channels={"editor": "1.2.0"}, mode="ipc"))
SEGMENTS = [
    "rpc",
    "fuzz",
    "1.2.0",
    "1.0.0",
    "1.9.0",
    "2.0.0",
    "add",
    "echo",
    "greet",
    "context",
    "ipc",
    "events",
    "health",
    "openapi.json",
    "{session}",
    "",
    "..",
    "%2F",
    "\x00",
    "é",
]
KNOWN_PATHS = [
    "/rpc/fuzz/1.2.0/add",
    "/rpc/fuzz/1.2.0/echo",
    "/rpc/fuzz/1.1.0/greet",
    "/rpc/fuzz/1.0.0/context",
    "/rpc/fuzz/2.0.0/add",
    "/rpc/ipc",
    "/rpc/ipc/{session}",
    "/rpc/ipc/{session}/events",
    "/rpc/",
    "/rpc/health",
    "/rpc/openapi.json",
]
HEADER_NAMES = [
    b"content-length",
    b"content-type",
    b"x-correlation-id",
    b"x-session-id",
    b"x-application-id",
    b"x-application-version",
    b"authorization",
    b"x-protocol-version",
    b"x-timeout-ms",
    b"traceparent",
    b"origin",
    b"x-session-token",
    b"last-event-id",
    b"access-control-request-method",
]
HEADER_SAMPLES = [
    b"",
    b"0",
    b"1",
    b"-1",
    b"99",
    b"1.5",
    b"abc",
    b"99999999999999999999999",
    b"1" + b"0" * 400,
    TRACEPARENT.encode(),
    b"http://app.example",
    b"Bearer x",
    b"{token}",
    b"x" * 300,
]


def _field_value(raw: bytes) -> bytes:
    """`raw` as h11 would let it through as a header value."""
    kept = bytes(b for b in raw if b in (0x20, 0x09) or 0x21 <= b <= 0x7E or b >= 0x80)
    return kept.strip(b" \t")


json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=8),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=5), children, max_size=4)
    ),
    max_leaves=12,
)
bodies = st.one_of(
    st.binary(max_size=80),
    json_values.map(lambda value: json.dumps(value).encode()),
    st.lists(json_values, max_size=3).map(lambda value: json.dumps(value).encode()),
    st.sampled_from(
        [
            IPC_HELLO,
            b'{"t":"hello","protocol":1,"mode":"ipc","channels":{"editor":"9.0.0"}}',
            b'{"t":"invoke","id":1,"channel":"editor","method":"move","args":["e",1.5]}',
            b'{"t":"invoke","id":1,"channel":"editor","method":"nope","args":[]}',
            b'{"t":"cancel","id":1}',
            b"[1, 2]",
            b'["x", 2]',
            b"[]",
            b'[{"flag": true}]',
        ]
    ),
)


VALID_CALLS: list[tuple[str, st.SearchStrategy[list[Any]]]] = [
    ("/rpc/fuzz/1.2.0/add", st.lists(st.integers(), min_size=2, max_size=2)),
    ("/rpc/fuzz/1.1.0/greet", st.tuples(st.text(max_size=5), st.integers(-2, 5)).map(list)),
    ("/rpc/fuzz/1.0.0/context", st.just([])),
]


@attrs.frozen
class FuzzRequest:
    method: str
    path: str
    headers: list[tuple[bytes, bytes]]
    query_string: bytes
    chunks: list[bytes]
    leaves_early: bool


@st.composite
def fuzz_requests(draw: st.DrawFn) -> FuzzRequest:
    if draw(st.booleans()):
        # A well-formed call, so that the headers are what the server judges.
        method = "POST"
        path, arguments = draw(st.sampled_from(VALID_CALLS))
        body = json.dumps(draw(arguments)).encode()
    else:
        method = draw(
            st.just("POST")
            | st.sampled_from(["GET", "HEAD", "POST", "PUT", "DELETE", "OPTIONS", "PATCH"])
            | st.text(alphabet=string.ascii_uppercase, min_size=1, max_size=7)
        )
        path = draw(
            st.one_of(
                st.sampled_from(KNOWN_PATHS),
                st.lists(st.sampled_from(SEGMENTS) | st.text(max_size=6), max_size=5).map(
                    lambda segments: "/" + "/".join(segments)
                ),
                st.text(max_size=20),
            )
        )
        body = draw(bodies)
    headers = draw(
        st.lists(
            st.tuples(
                st.sampled_from(HEADER_NAMES)
                | st.text(alphabet=string.ascii_lowercase + "-", min_size=1, max_size=10).map(
                    str.encode
                ),
                st.sampled_from(HEADER_SAMPLES) | st.binary(max_size=40).map(_field_value),
            ),
            max_size=6,
        )
    )
    cuts = sorted(draw(st.lists(st.integers(0, len(body)), max_size=2)))
    chunks = [body[start:end] for start, end in zip([0, *cuts], [*cuts, len(body)], strict=True)]
    query = draw(st.sampled_from([b"", b"token={token}", b"token=", b"a=b&token"]))
    return FuzzRequest(method, path, headers, query, chunks, draw(st.booleans()))


class _Lifespan:
    """Runs an ASGI app's lifespan in a nursery, as a server would."""

    def __init__(self, app: HttpApp) -> None:
        self.app = app
        self.started = trio.Event()
        self.stop = trio.Event()
        self.stopped = trio.Event()
        self._messages = 0

    async def receive(self) -> Message:
        self._messages += 1
        if self._messages == 1:
            return {"type": "lifespan.startup"}
        await self.stop.wait()
        return {"type": "lifespan.shutdown"}

    async def send(self, message: Message) -> None:
        if message["type"] == "lifespan.startup.complete":
            self.started.set()
        elif message["type"] == "lifespan.shutdown.complete":
            self.stopped.set()

    async def run(self) -> None:
        await self.app({"type": "lifespan", "asgi": {"version": "3.0"}}, self.receive, self.send)


async def _asgi_request(
    app: HttpApp, request: FuzzRequest, session: dict[str, str]
) -> list[Message]:
    """Send one request straight to the ASGI app; return what it sent back."""

    def fill(raw: bytes) -> bytes:
        return raw.replace(b"{token}", session.get("token", "").encode())

    path = request.path.replace("{session}", session.get("session_id", "none"))
    scope: Scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": request.method,
        "scheme": "http",
        "path": path,
        "raw_path": path.encode("utf-8", "surrogateescape"),
        "query_string": fill(request.query_string),
        "root_path": "",
        "headers": [(name, fill(value)) for name, value in request.headers],
        "client": ("127.0.0.1", 50000),
        "server": ("127.0.0.1", 8000),
    }
    pending = list(request.chunks)
    sent: list[Message] = []
    gone = trio.Event()

    async def receive() -> Message:
        await trio.lowlevel.checkpoint()
        if pending:
            body = pending.pop(0)
            return {"type": "http.request", "body": body, "more_body": bool(pending)}
        if not request.leaves_early:
            await gone.wait()
        return {"type": "http.disconnect"}

    async def send(message: Message) -> None:
        await trio.lowlevel.checkpoint()
        sent.append(message)
        if message["type"] == "http.response.body" and not message.get("more_body", False):
            gone.set()
        elif message["type"] == "http.response.start":
            headers = dict(message["headers"])
            if headers.get(b"content-type") == b"text/event-stream":
                gone.set()  # an event stream: the client reads its head and leaves

    await app(scope, receive, send)
    return sent


@settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(requests=st.lists(fuzz_requests(), min_size=1, max_size=3))
async def test_no_request_makes_the_app_answer_500_or_log_an_error(
    requests: list[FuzzRequest], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.clear()
    app = HttpApp(
        fuzz_manager(),
        ipc=editor_backend(),
        max_body_size=200,
        cors_origins=["http://app.example"],
        ipc_grace_period=0.01,
    )
    lifespan = _Lifespan(app)
    session: dict[str, str] = {}
    with trio.fail_after(TIMEOUT):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(lifespan.run)
            await lifespan.started.wait()
            for request in requests:
                sent = await _asgi_request(app, request, session)
                if not sent:
                    assert request.leaves_early, "the app did not answer a client still there"
                    continue
                start = sent[0]
                assert start["type"] == "http.response.start"
                assert start["status"] != 500, sent
                for name, value in start["headers"]:
                    assert re.fullmatch(rb"[a-z0-9-]+", name)
                    assert not re.search(rb"[\x00\r\n]", value), (name, value)
                if start["status"] == 200 and request.method == "POST" and app.ipc is not None:
                    body = b"".join(m.get("body", b"") for m in sent[1:])
                    try:
                        opened = json.loads(body)
                    except ValueError:
                        opened = None
                    if isinstance(opened, dict) and "token" in opened:
                        session = {"session_id": opened["session_id"], "token": opened["token"]}
            lifespan.stop.set()
            await lifespan.stopped.wait()
    errors = [
        record
        for record in caplog.records
        if record.levelno >= logging.ERROR and record.name.startswith(("tether", "hypercorn"))
    ]
    assert not errors, [record.getMessage() for record in errors]


RAW_REQUESTS = [
    b"NOT HTTP AT ALL\r\n\r\n",
    b"POST /rpc/tether.Conformance/1.2.3/add HTTP/1.1\r\nHost: x\r\nContent-Length: abc\r\n\r\n",
    b"POST /rpc/tether.Conformance/1.2.3/add HTTP/1.1\r\nHost: x\r\n"
    b"Transfer-Encoding: chunked\r\n\r\nZZ\r\n\r\n",
    b"POST /rpc/tether.Conformance/1.2.3/add HTTP/1.0\r\nContent-Length: 5\r\n\r\n[1,2]",
    b"GET /rpc/%00/..%2F/health HTTP/1.1\r\nHost: x\r\n\r\n",
    b"GET /rpc/%C3%28 HTTP/1.1\r\nHost: x\r\n\r\n",
    b"POST /rpc/tether.Conformance/1.2.3/add HTTP/1.1\r\nHost: x\r\n"
    b"X-Correlation-ID: \xff\xfe\r\nContent-Length: 5\r\n\r\n[1,2]",
    b"POST /rpc/tether.Conformance/1.2.3/add HTTP/1.1\r\nHost: x\r\n"
    b"X-Correlation-ID: " + b"a" * 201 + b"\r\nContent-Length: 5\r\n\r\n[1,2]",
    b"GET /rpc/ipc/x/events?token=%ZZ HTTP/1.1\r\nHost: x\r\n\r\n",
    b"POST /rpc/ipc HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\n{}",
    b"POST /rpc/ipc HTTP/1.1\r\nHost: x\r\nContent-Length: 9999\r\n\r\n{",
    b"HEAD /rpc/tether.Conformance/1.2.3/add HTTP/1.1\r\nHost: x\r\n\r\n",
    b"HEAD /nothing HTTP/1.1\r\nHost: x\r\n\r\n",
    b"OPTIONS * HTTP/1.1\r\nHost: x\r\n\r\n",
    b"POST /rpc/ipc HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n1\r\n{\r\n0\r\n\r\n",
    b"POST /rpc/tether.Conformance/1.2.3/add HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n[1,",
]


@pytest.mark.parametrize("raw", RAW_REQUESTS)
async def test_malformed_requests_over_the_network_get_no_500_and_log_no_error(
    raw: bytes, caplog: pytest.LogCaptureFixture
) -> None:
    with trio.fail_after(TIMEOUT):
        async with served(conformance_manager(), ipc=editor_backend()) as url:
            port = int(url.rsplit(":", 1)[1].split("/")[0])
            stream = await trio.open_tcp_stream("127.0.0.1", port)
            await stream.send_all(raw)
            received = b""
            # Read the response head, unless the request is left unfinished.
            while b"\r\n\r\n" not in received and not raw.endswith((b"{", b"[1,")):
                chunk = await stream.receive_some(65536)
                if not chunk:
                    break
                received += chunk
            await stream.aclose()
            await trio.testing.wait_all_tasks_blocked()
    if received:
        status_line = received.split(b"\r\n", 1)[0]
        assert re.fullmatch(rb"HTTP/1\.[01] [1-4]\d\d .*", status_line), status_line
    errors = [
        record
        for record in caplog.records
        if record.levelno >= logging.ERROR and record.name.startswith(("tether", "hypercorn"))
    ]
    assert not errors, [record.getMessage() for record in errors]


# ---------------------------------------------------------------------------
# Deadlines and cancellation


async def test_timeout_header_passing_is_504_and_the_impl_finally_runs() -> None:
    probe = Probe()
    with trio.fail_after(TIMEOUT):
        async with raw_client(conformance_manager(probe)) as client:
            response = await client.post(
                f"{CONF}/wait_until_cancelled", content=b'["k"]', headers={"X-Timeout-Ms": "50"}
            )
            await probe.wait("finally:k")
    assert probe.is_set("started:k")
    assert probe.is_set("cancelled:k")
    assert response.status_code == 504
    error = error_of(response)
    assert error["code"] == "deadline-exceeded"
    assert error["activity_id"] == response.headers["x-correlation-id"]


async def test_cancelled_client_call_cancels_the_impl_and_the_pool_stays_usable() -> None:
    probe = Probe()
    with trio.fail_after(TIMEOUT):
        async with (
            served(conformance_manager(probe)) as url,
            http.connect(url, interfaces=[ConformanceInterface]) as backend,
        ):
            client = backend.get_client(ConformanceInterface)
            async with trio.open_nursery() as nursery:
                nursery.start_soon(client.wait_until_cancelled, "k")
                await probe.wait("started:k")
                nursery.cancel_scope.cancel()
            await probe.wait("cancelled:k")
            await probe.wait("finally:k")
            assert await client.add(1, 2) == 3
            assert await client.add(3, 4) == 7
            stats = backend._pool.statistics()
    assert stats.in_use == 0
    assert stats.idle == 1


async def test_client_deadline_propagates_to_the_server() -> None:
    with trio.fail_after(TIMEOUT):
        async with (
            served(conformance_manager()) as url,
            http.connect(url, interfaces=[ConformanceInterface]) as backend,
        ):
            client = backend.get_client(ConformanceInterface)
            with trio.move_on_after(5):
                info = await client.context()
    assert info.seconds_left is not None
    assert 0 < info.seconds_left <= 5


# ---------------------------------------------------------------------------
# Describe, health, OpenAPI


async def test_describe_lists_protocol_interfaces_operations_and_channels() -> None:
    with trio.fail_after(TIMEOUT):
        manager = RpcConformance().streams_manager()
        async with raw_client(manager, ipc=editor_backend()) as client:
            slash = await client.get("/")
            bare = await client.get("")
    assert slash.status_code == 200
    assert slash.headers["content-type"] == "application/json"
    described = slash.json()
    assert described == {
        "protocol": PROTOCOL_VERSION,
        "interfaces": {
            "tether.Conformance": {
                "version": "1.2.3",
                "operations": list(ConformanceInterface.__tether_operations__),
            },
            # An interface with stream operations says which, and of what kind.
            "tether.ConformanceStreams": {
                "version": "1.0.0",
                "operations": list(ConformanceStreams.__tether_operations__),
                "streams": {
                    "count": "server",
                    "total": "client",
                    "scale": "two-way",
                    "fail_after": "server",
                    "take": "client",
                    "activities": "server",
                    "seconds_left": "server",
                    "chunks": "server",
                    "swallow": "client",
                },
            },
        },
        "ipc": {"channels": {"editor": "1.2.0"}},
    }
    assert bare.json() == described


async def test_describe_without_ipc_has_no_ipc_entry() -> None:
    with trio.fail_after(TIMEOUT):
        async with raw_client(conformance_manager()) as client:
            described = (await client.get("/")).json()
    assert "ipc" not in described
    assert set(described) == {"protocol", "interfaces"}


async def test_health_answers_ok() -> None:
    with trio.fail_after(TIMEOUT):
        async with raw_client(conformance_manager()) as client:
            response = await client.get("/health")
    assert response.status_code == 200
    assert response.json() == {"status": "ok"}


async def test_openapi_document_is_valid_and_lists_the_operations() -> None:
    with trio.fail_after(TIMEOUT):
        async with raw_client(conformance_manager()) as client:
            response = await client.get("/openapi.json")
    assert response.status_code == 200
    document = response.json()
    validate(document)
    assert document["openapi"].startswith("3.1")
    for operation in ConformanceInterface.__tether_operations__:
        assert "post" in document["paths"][f"/rpc{CONF}/{operation}"]
    assert "get" in document["paths"]["/rpc/"]
    assert "get" in document["paths"]["/rpc/health"]


@pytest.mark.parametrize("path", ["/", "/health", "/openapi.json"])
async def test_head_answers_like_get_without_a_body(path: str) -> None:
    with trio.fail_after(TIMEOUT):
        async with raw_client(conformance_manager()) as client:
            head = await client.head(path)
            get = await client.get(path)
    assert head.status_code == 200
    assert head.content == b""
    assert head.headers["content-type"] == "application/json"
    assert get.status_code == 200
    assert get.content


async def test_post_on_describe_is_405_with_allow_get() -> None:
    with trio.fail_after(TIMEOUT):
        async with raw_client(conformance_manager()) as client:
            response = await client.post("/health", content=b"[]")
    assert response.status_code == 405
    assert response.headers["allow"] == "GET, HEAD, OPTIONS"


# ---------------------------------------------------------------------------
# CORS


async def test_cors_is_off_by_default() -> None:
    # No origin is listed: a page of another origin may not call (403), and
    # nothing tells a browser otherwise.
    origin = {"Origin": "http://app.example"}
    with trio.fail_after(TIMEOUT):
        async with raw_client(conformance_manager()) as client:
            call = await client.post(f"{CONF}/add", content=b"[1, 2]", headers=origin)
            preflight = await client.options(
                f"{CONF}/add", headers={**origin, "Access-Control-Request-Method": "POST"}
            )
            options = await client.options(f"{CONF}/add")
    assert call.status_code == 403
    assert preflight.status_code == 403
    assert options.status_code == 204
    for response in (call, preflight, options):
        assert not [name for name in response.headers if name.startswith("access-control-")]


async def test_cors_preflight_from_an_allowed_origin_is_204_with_allow_headers() -> None:
    headers = {
        "Origin": "http://app.example",
        "Access-Control-Request-Method": "POST",
        "Access-Control-Request-Headers": "content-type, x-correlation-id",
    }
    with trio.fail_after(TIMEOUT):
        async with raw_client(conformance_manager(), cors_origins=["http://app.example"]) as client:
            response = await client.options(f"{CONF}/add", headers=headers)
    assert response.status_code == 204
    assert response.headers["access-control-allow-origin"] == "http://app.example"
    assert "POST" in response.headers["access-control-allow-methods"]
    allowed = {h.strip() for h in response.headers["access-control-allow-headers"].split(",")}
    assert {"content-type", "x-correlation-id", "authorization", "x-timeout-ms"} <= allowed
    assert "origin" in response.headers["vary"].lower()


async def test_cors_preflight_from_another_origin_is_403_without_allow_origin() -> None:
    headers = {"Origin": "http://evil.example", "Access-Control-Request-Method": "POST"}
    with trio.fail_after(TIMEOUT):
        async with raw_client(conformance_manager(), cors_origins=["http://app.example"]) as client:
            response = await client.options(f"{CONF}/add", headers=headers)
            call = await client.post(
                f"{CONF}/add", content=b"[1, 2]", headers={"Origin": "http://evil.example"}
            )
    assert response.status_code == 403
    assert "access-control-allow-origin" not in response.headers
    assert "access-control-allow-origin" not in call.headers


async def test_cors_simple_post_from_an_allowed_origin_carries_allow_origin() -> None:
    with trio.fail_after(TIMEOUT):
        async with raw_client(conformance_manager(), cors_origins=["http://app.example"]) as client:
            response = await client.post(
                f"{CONF}/add", content=b"[1, 2]", headers={"Origin": "http://app.example"}
            )
            failed = await client.post(
                f"{CONF}/add", content=b"[1]", headers={"Origin": "http://app.example"}
            )
    assert response.status_code == 200
    assert response.headers["access-control-allow-origin"] == "http://app.example"
    exposed = response.headers["access-control-expose-headers"].lower()
    assert "x-correlation-id" in exposed
    # Error responses carry it too, or the browser hides the error body.
    assert failed.status_code == 400
    assert failed.headers["access-control-allow-origin"] == "http://app.example"


# ---------------------------------------------------------------------------
# Graceful shutdown


async def test_shutdown_trigger_ends_serve_and_closes_ipc_sessions_with_a_reason() -> None:
    trigger = trio.Event()
    returned = trio.Event()
    log = SessionLog()

    async def run(task_status: trio.TaskStatus[str]) -> None:
        await http.serve(
            None,
            "127.0.0.1",
            0,
            ipc=editor_backend(log),
            shutdown_trigger=trigger.wait,
            graceful_timeout=2.0,
            task_status=task_status,
        )
        returned.set()

    with trio.fail_after(TIMEOUT):
        async with open_service_nursery() as nursery:
            url = await nursery.start(run)
            # No resume: the session ends with its connection.
            async with http.connect_ipc(url, channels=[EditorIpc], retry=None) as frontend:
                placement = await frontend.proxy(EditorIpc).move("e1", 2.0)
                trigger.set()
                reason = await frontend.wait_closed()
            await returned.wait()
    assert placement == Placement(2.0, 0.0)
    assert reason == "the server is shutting down"
    assert frontend.closed_reason == "the server is shutting down"
    assert log.reasons == ["the server is shutting down"]


class Gate(RpcInterface):
    interface_name = "test.Gate"
    interface_version = "1.0.0"

    async def wait(self, key: str) -> str: ...


class GateImpl(Gate):
    def __init__(self, probe: Probe, gate: trio.Event) -> None:
        self.probe = probe
        self.gate = gate

    async def wait(self, key: str) -> str:
        self.probe.signal(f"started:{key}")
        try:
            await self.gate.wait()
        finally:
            self.probe.signal(f"finally:{key}")
        return f"done:{key}"


def _serve_until_triggered(
    manager: RpcManager, trigger: trio.Event, returned: trio.Event, **options: Any
) -> Callable[..., Awaitable[None]]:
    async def run(task_status: trio.TaskStatus[str]) -> None:
        await http.serve(
            manager,
            "127.0.0.1",
            0,
            shutdown_trigger=trigger.wait,
            task_status=task_status,
            **options,
        )
        returned.set()

    return run


async def test_shutdown_lets_a_call_in_flight_finish() -> None:
    probe, gate, trigger, returned = Probe(), trio.Event(), trio.Event(), trio.Event()
    manager = RpcManager()
    manager.register_impl(Gate, GateImpl(probe, gate))
    responses: list[httpx.Response] = []
    run = _serve_until_triggered(manager, trigger, returned, graceful_timeout=5.0)
    with trio.fail_after(TIMEOUT):
        async with open_service_nursery() as nursery:
            url = await nursery.start(run)
            async with httpx.AsyncClient(base_url=url) as client, trio.open_nursery() as calls:

                async def call() -> None:
                    responses.append(await client.post("/test.Gate/1.0.0/wait", json=["a"]))

                calls.start_soon(call)
                await probe.wait("started:a")
                trigger.set()
                # Let the shutdown begin: every task then waits on the call.
                await trio.testing.wait_all_tasks_blocked()
                assert not returned.is_set()
                gate.set()
            await returned.wait()
    [response] = responses
    assert response.status_code == 200
    assert response.json() == "done:a"


async def test_shutdown_cancels_a_call_still_running_after_the_graceful_timeout() -> None:
    probe, trigger, returned = Probe(), trio.Event(), trio.Event()
    manager = RpcManager()
    manager.register_impl(Gate, GateImpl(probe, trio.Event()))
    raised: list[BaseException] = []
    run = _serve_until_triggered(manager, trigger, returned, graceful_timeout=0.2)
    with trio.fail_after(TIMEOUT):
        async with open_service_nursery() as nursery:
            url = await nursery.start(run)
            async with (
                http.connect(url, interfaces=[Gate]) as backend,
                trio.open_nursery() as calls,
            ):

                async def call() -> None:
                    try:
                        await backend.get_client(Gate).wait("a")
                    except Exception as exc:
                        raised.append(exc)

                calls.start_soon(call)
                await probe.wait("started:a")
                trigger.set()
                await returned.wait()
            await probe.wait("finally:a")
    [exc] = raised
    # The connection closes without an answer (today the pool's one retry then
    # finds no server: ConnectError); a tether TransportError either way.
    assert isinstance(exc, TransportError)


# ---------------------------------------------------------------------------
# Client errors


class ConformanceV2(RpcInterface):
    interface_name = "tether.Conformance"
    interface_version = "2.0.0"

    async def add(self, a: int, b: int) -> int: ...


async def test_connect_to_a_refused_port_is_connect_error() -> None:
    with trio.fail_after(TIMEOUT):
        with trio.socket.socket() as sock:
            # Bound, never listening: connections to it are refused.
            await sock.bind(("127.0.0.1", 0))
            port = sock.getsockname()[1]
            with pytest.raises(ConnectError, match="could not connect"):
                async with http.connect(
                    f"http://127.0.0.1:{port}/rpc", interfaces=[ConformanceInterface]
                ):
                    pytest.fail("connected to a port nobody listens on")


async def _not_found_app(scope: Scope, receive: Any, send: Any) -> None:
    if scope["type"] == "http":
        await send({"type": "http.response.start", "status": 404, "headers": []})
        await send({"type": "http.response.body", "body": b"Not Found"})
    elif scope["type"] == "lifespan":
        while (await receive())["type"] != "lifespan.shutdown":
            await send({"type": "lifespan.startup.complete"})
        await send({"type": "lifespan.shutdown.complete"})


async def _other_json_app(scope: Scope, receive: Any, send: Any) -> None:
    if scope["type"] == "http":
        await send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [(b"content-type", b"application/json")],
            }
        )
        await send({"type": "http.response.body", "body": b'{"hello": "world"}'})
    elif scope["type"] == "lifespan":
        while (await receive())["type"] != "lifespan.shutdown":
            await send({"type": "lifespan.startup.complete"})
        await send({"type": "lifespan.shutdown.complete"})


@pytest.mark.parametrize("app", [_not_found_app, _other_json_app])
async def test_connect_to_a_server_that_is_not_tether_is_connect_error(
    app: Callable[[Scope, Any, Any], Awaitable[None]],
) -> None:
    with trio.fail_after(TIMEOUT):
        async with served_asgi(app) as origin:
            with pytest.raises(ConnectError, match="tether"):
                async with http.connect(f"{origin}/rpc", interfaces=[ConformanceInterface]):
                    pytest.fail("connected to a server that is not tether")


async def test_connect_with_an_incompatible_interface_is_incompatible_version() -> None:
    with trio.fail_after(TIMEOUT):
        async with served(conformance_manager()) as url:
            with pytest.raises(IncompatibleVersion):
                async with http.connect(url, interfaces=[ConformanceV2]):
                    pytest.fail("connected with an incompatible interface")


async def test_server_gone_mid_call_is_a_transport_error_never_a_foreign_one() -> None:
    probe = Probe()
    server = trio.CancelScope()

    async def run(task_status: trio.TaskStatus[str]) -> None:
        with server:
            await http.serve(conformance_manager(probe), "127.0.0.1", 0, task_status=task_status)

    raised: dict[str, BaseException] = {}
    with trio.fail_after(TIMEOUT):
        async with open_service_nursery() as nursery:
            url = await nursery.start(run)
            # One try: what a lost call raises, not how it is retried.
            connect = http.connect(url, interfaces=[ConformanceInterface], retry=None)
            async with connect as backend:
                client = backend.get_client(ConformanceInterface)

                async def call(key: str) -> None:
                    try:
                        await client.wait_until_cancelled(key)
                    except Exception as exc:
                        raised[key] = exc

                async with trio.open_nursery() as calls:
                    # "reused" takes the connection `connect` described on;
                    # "fresh" then opens a second one.
                    calls.start_soon(call, "reused")
                    await probe.wait("started:reused")
                    calls.start_soon(call, "fresh")
                    await probe.wait("started:fresh")
                    server.cancel()
                with pytest.raises(TransportError):
                    await client.add(1, 2)
    assert isinstance(raised["fresh"], ConnectionClosed)
    # The pool re-sends a request once when a reused connection closes before
    # any byte of the answer, so this one ends as ConnectError (the server is
    # gone): still a tether TransportError, never an httpx/h11/trio exception.
    assert isinstance(raised["reused"], TransportError)


async def test_ipc_server_gone_mid_call_is_connection_closed() -> None:
    server = trio.CancelScope()
    started = trio.Event()

    class SlowHandler(tether.IpcHandler, EditorIpc):
        async def move(self, element_id: str, dx: float) -> Placement:
            started.set()
            await trio.sleep_forever()
            raise AssertionError("unreachable")

    backend = tether.BackendIpc()
    backend.register(SlowHandler)

    async def run(task_status: trio.TaskStatus[str]) -> None:
        with server:
            await http.serve(None, "127.0.0.1", 0, ipc=backend, task_status=task_status)

    with trio.fail_after(TIMEOUT):
        async with open_service_nursery() as nursery:
            url = await nursery.start(run)
            async with http.connect_ipc(url, channels=[EditorIpc]) as frontend:
                raised: list[BaseException] = []

                async def call() -> None:
                    try:
                        await frontend.proxy(EditorIpc).move("e1", 1.0)
                    except Exception as exc:
                        raised.append(exc)

                async with trio.open_nursery() as calls:
                    calls.start_soon(call)
                    await started.wait()
                    server.cancel()
                reason = await frontend.wait_closed()
    [exc] = raised
    assert isinstance(exc, ConnectionClosed)
    assert reason


@pytest.mark.parametrize("url", ["ftp://127.0.0.1:1/rpc", "ws://127.0.0.1:1/rpc", "127.0.0.1"])
async def test_connect_to_a_url_that_is_not_http_is_value_error(url: str) -> None:
    with pytest.raises(ValueError, match="http://"):
        async with http.connect(url, interfaces=[ConformanceInterface]):
            pytest.fail("connected to a non-http URL")


# ---------------------------------------------------------------------------
# Keep-alive


async def test_one_connection_carries_more_than_a_thousand_calls() -> None:
    with trio.fail_after(30):
        async with (
            served(conformance_manager()) as url,
            http.connect(url, interfaces=[ConformanceInterface]) as backend,
        ):
            client = backend.get_client(ConformanceInterface)
            for i in range(1100):
                assert await client.add(i, 1) == i + 1
            stats = backend._pool.statistics()
    assert stats.opened == 1


async def test_calls_succeed_when_hypercorn_closes_connections_after_a_few_requests() -> None:
    app = HttpApp(conformance_manager())
    with trio.fail_after(TIMEOUT):
        async with (
            served_asgi(app, keep_alive_max_requests=5) as origin,
            http.connect(f"{origin}/rpc", interfaces=[ConformanceInterface]) as backend,
        ):
            client = backend.get_client(ConformanceInterface)
            for i in range(20):
                assert await client.add(i, 1) == i + 1
            stats = backend._pool.statistics()
    # 21 requests (describe included), 5 per connection.
    assert stats.opened >= 5


# ---------------------------------------------------------------------------
# IPC over HTTP, on the wire


async def open_session(client: httpx.AsyncClient) -> dict[str, Any]:
    response = await client.post("/ipc", content=IPC_HELLO)
    assert response.status_code == 200, response.text
    opened = response.json()
    assert isinstance(opened, dict)
    return opened


def invoke(id_: int, element: str = "e1", dx: float = 1.5) -> bytes:
    return json.dumps(
        {"t": "invoke", "id": id_, "channel": "editor", "method": "move", "args": [element, dx]}
    ).encode()


Event = tuple[str, str, Any]  # id, event type, decoded data


class EventStream:
    """A Server-Sent Events response, read by a background task into a channel.

    The task is cancelled when the block ends: httpx's nested async generators
    are then unwound by the cancellation instead of being left to the garbage
    collector (which would warn).
    """

    def __init__(self, response: httpx.Response) -> None:
        self.response = response
        self._send, self._receive = trio.open_memory_channel[Event](math.inf)

    async def pump(self) -> None:
        fields: dict[str, str] = {}
        async with self._send:
            async for line in self.response.aiter_lines():
                if line:
                    if not line.startswith(":"):
                        name, _, value = line.partition(":")
                        fields[name] = value.removeprefix(" ")
                    continue
                if "data" in fields:
                    data = json.loads(fields["data"])
                    await self._send.send(
                        (fields.get("id", ""), fields.get("event", "message"), data)
                    )
                fields = {}

    async def read(self, count: int) -> list[Event]:
        """The next `count` events; fails if the stream ends before."""
        return [await self._receive.receive() for _ in range(count)]


@asynccontextmanager
async def event_stream(
    client: httpx.AsyncClient, path: str, **options: Any
) -> AsyncIterator[EventStream]:
    async with client.stream("GET", path, **options) as response, trio.open_nursery() as nursery:
        stream = EventStream(response)
        if response.status_code == 200:
            nursery.start_soon(stream.pump)
        yield stream
        nursery.cancel_scope.cancel()


async def test_ipc_open_answers_session_id_token_events_path_and_welcome() -> None:
    with trio.fail_after(TIMEOUT):
        async with raw_client(None, ipc=editor_backend()) as client:
            response = await client.post("/ipc", content=IPC_HELLO)
    assert response.status_code == 200
    opened = response.json()
    session_id = opened["session_id"]
    assert set(opened) == {"session_id", "token", "events", "welcome", "ping", "grace_ms", "replay"}
    assert opened["events"] == f"/rpc/ipc/{session_id}/events"
    assert opened["ping"] == {"interval_ms": 20000, "timeout_ms": 20000}
    assert opened["grace_ms"] == 5000
    assert opened["replay"] == {"messages": 1024, "bytes": 4 * 1024 * 1024}
    assert len(opened["token"]) >= 32
    assert opened["welcome"]["t"] == "welcome"
    assert opened["welcome"]["session_id"] == session_id
    assert opened["welcome"]["protocol"] == PROTOCOL_VERSION
    assert opened["welcome"]["channels"] == {"editor": "1.2.0"}
    assert response.headers["x-session-id"] == session_id
    assert response.headers["x-session-token"] == opened["token"]


@pytest.mark.parametrize(
    ("hello", "status"),
    [
        (b'{"t":"hello","protocol":1,"mode":"ipc","channels":{"editor":"2.0.0"}}', 403),
        (b'{"t":"hello","protocol":1,"mode":"ipc","channels":{"nobody":"1.0.0"}}', 404),
        (b'{"t":"hello","protocol":99,"mode":"ipc","channels":{}}', 403),
        (b'{"t":"hello","protocol":1,"channels":{}}', 400),
        (b"not json", 400),
    ],
)
async def test_ipc_open_refusals_have_their_status(hello: bytes, status: int) -> None:
    with trio.fail_after(TIMEOUT):
        async with raw_client(None, ipc=editor_backend()) as client:
            response = await client.post("/ipc", content=hello)
    assert response.status_code == status, response.text
    error_of(response)


async def test_ipc_bodies_over_the_limit_are_413_not_500() -> None:
    # Regression: PayloadTooLarge from an IPC route's body escaped the app (500).
    with trio.fail_after(TIMEOUT):
        async with raw_client(None, ipc=editor_backend(), max_body_size=300) as client:
            hello = await client.post("/ipc", content=IPC_HELLO + b" " * 300)
            opened = await open_session(client)
            posted = await client.post(
                f"/ipc/{opened['session_id']}",
                content=invoke(1) + b" " * 300,
                headers={"X-Session-Token": opened["token"]},
            )
    for response in (hello, posted):
        assert response.status_code == 413
        assert error_of(response)["code"] == "payload-too-large"


async def test_ipc_refusal_longer_than_the_message_limit_still_reaches_the_client() -> None:
    # Regression: the refusal's own size raised PayloadTooLarge in the session
    # task, which ended the lifespan's nursery and every session with it.
    bad = b'{"t":"hello","protocol":1,"mode":"ipc","channels":{"editor":"9.0.0"}}'
    limit = max(len(bad), len(IPC_HELLO))
    with trio.fail_after(TIMEOUT):
        async with raw_client(None, ipc=editor_backend(), max_body_size=limit) as client:
            refused = await client.post("/ipc", content=bad)
            opened = await client.post("/ipc", content=IPC_HELLO)
    assert refused.status_code == 403
    assert len(refused.content) > limit
    assert error_of(refused)["code"] == "incompatible-version"
    assert opened.status_code == 200


async def test_ipc_session_that_fails_leaves_the_other_sessions_running(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    # Regression: an exception from one session's task ended the nursery the
    # ASGI lifespan owns, and so every session, and no new one could open.
    log = SessionLog()
    opened = 0
    real = tether.runtime.serve_ipc_session

    async def fails_once(ipc: tether.BackendIpc, stream: Any, **facts: Any) -> None:
        nonlocal opened
        opened += 1
        if opened == 2:
            raise RuntimeError("one session broke")
        await real(ipc, stream, **facts)

    monkeypatch.setattr(_ipc_server, "serve_ipc_session", fails_once)
    with trio.fail_after(TIMEOUT):
        async with raw_client(None, ipc=editor_backend(log)) as client:
            first = await open_session(client)
            broken = await client.post("/ipc", content=IPC_HELLO)
            posted = await client.post(
                f"/ipc/{first['session_id']}",
                content=invoke(1),
                headers={"X-Session-Token": first["token"]},
            )
            again = await client.post("/ipc", content=IPC_HELLO)
            assert not log.closed.is_set(), log.reasons
    assert broken.status_code == 503
    assert posted.status_code == 202
    assert again.status_code == 200
    assert [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR] == [
        "IPC session over HTTP failed"
    ]


async def test_ipc_routes_are_404_when_no_ipc_is_served() -> None:
    with trio.fail_after(TIMEOUT):
        async with raw_client(conformance_manager()) as client:
            response = await client.post("/ipc", content=IPC_HELLO)
    assert response.status_code == 404
    assert error_of(response)["code"] == "not-found"


async def test_ipc_wrong_token_is_404_like_an_unknown_session() -> None:
    with trio.fail_after(TIMEOUT):
        async with raw_client(None, ipc=editor_backend()) as client:
            opened = await open_session(client)
            session = f"/ipc/{opened['session_id']}"
            wrong = await client.post(
                session, content=invoke(1), headers={"X-Session-Token": "x" * 43}
            )
            unknown = await client.post(
                f"/ipc/{uuid.uuid4()}", content=invoke(1), headers={"X-Session-Token": "x" * 43}
            )
            no_token = await client.post(session, content=invoke(1))
            right = await client.post(
                session, content=invoke(1), headers={"X-Session-Token": opened["token"]}
            )
    assert wrong.status_code == unknown.status_code == no_token.status_code == 404
    assert wrong.content == unknown.content == no_token.content
    assert error_of(wrong)["code"] == "not-found"
    assert right.status_code == 202


async def test_ipc_events_without_token_is_404_and_token_may_be_a_query_parameter() -> None:
    with trio.fail_after(TIMEOUT):
        async with raw_client(None, ipc=editor_backend()) as client:
            opened = await open_session(client)
            events = opened["events"].removeprefix("/rpc")
            refused = await client.get(events)
            async with event_stream(client, events, params={"token": opened["token"]}) as stream:
                status = stream.response.status_code
                content_type = stream.response.headers["content-type"]
                posted = await client.post(
                    f"/ipc/{opened['session_id']}",
                    content=invoke(7),
                    headers={"X-Session-Token": opened["token"]},
                )
                received = await stream.read(2)
    assert refused.status_code == 404
    assert status == 200
    assert content_type == "text/event-stream"
    assert posted.status_code == 202
    messages = {data["t"]: data for _, _, data in received}
    assert messages["result"] == {"t": "result", "id": 7, "value": {"x": 1.5, "y": 0.0}}
    assert messages["notify"]["channel"] == "editor-events"
    assert messages["notify"]["method"] == "moved"


async def test_ipc_second_concurrent_events_stream_is_409() -> None:
    with trio.fail_after(TIMEOUT):
        async with raw_client(None, ipc=editor_backend()) as client:
            opened = await open_session(client)
            events = opened["events"].removeprefix("/rpc")
            token = {"X-Session-Token": opened["token"]}
            async with event_stream(client, events, headers=token) as first:
                second = await client.get(events, headers=token)
                assert first.response.status_code == 200
    assert second.status_code == 409
    error_of(second)


async def test_ipc_delete_ends_the_session_and_runs_on_close() -> None:
    log = SessionLog()
    backend = editor_backend(log)
    with trio.fail_after(TIMEOUT):
        async with raw_client(None, ipc=backend) as client:
            opened = await open_session(client)
            session = f"/ipc/{opened['session_id']}"
            token = {"X-Session-Token": opened["token"]}
            assert len(backend.sessions) == 1
            deleted = await client.delete(session, headers=token)
            await log.closed.wait()
            after = await client.post(session, content=invoke(1), headers=token)
    assert deleted.status_code == 204
    assert log.reasons == ["the frontend left"]
    assert len(backend.sessions) == 0
    assert after.status_code == 404


async def test_ipc_session_whose_events_stream_never_opens_ends_after_the_grace() -> None:
    log = SessionLog()
    backend = editor_backend(log)
    with trio.fail_after(TIMEOUT):
        async with raw_client(None, ipc=backend, ipc_grace_period=0.2) as client:
            opened = await open_session(client)
            start = trio.current_time()
            await log.closed.wait()
            waited = trio.current_time() - start
            events = await client.get(
                opened["events"].removeprefix("/rpc"),
                headers={"X-Session-Token": opened["token"]},
            )
    assert waited >= 0.1
    assert log.reasons == [
        "the frontend's event stream did not come back within the grace period of 0.2 s"
    ]
    assert len(backend.sessions) == 0
    assert events.status_code == 404


async def test_ipc_session_ends_after_the_grace_once_its_events_stream_closes() -> None:
    log = SessionLog()
    backend = editor_backend(log)
    with trio.fail_after(TIMEOUT):
        async with raw_client(None, ipc=backend, ipc_grace_period=0.1) as client:
            opened = await open_session(client)
            token = {"X-Session-Token": opened["token"]}
            events = opened["events"].removeprefix("/rpc")
            async with event_stream(client, events, headers=token) as stream:
                # Longer than the grace: an open stream keeps the session alive.
                # (Time must pass here; there is no event to wait for.)
                await trio.sleep(0.3)
                posted = await client.post(
                    f"/ipc/{opened['session_id']}", content=invoke(1), headers=token
                )
                received = await stream.read(2)
                assert not log.closed.is_set(), log.reasons
                assert len(backend.sessions) == 1
            await log.closed.wait()
    assert posted.status_code == 202
    assert {data["t"] for _, _, data in received} == {"notify", "result"}
    assert log.reasons == [
        "the frontend's event stream did not come back within the grace period of 0.1 s"
    ]
    assert len(backend.sessions) == 0


async def test_ipc_events_reconnect_with_last_event_id_replays_what_followed() -> None:
    log = SessionLog()
    with trio.fail_after(TIMEOUT):
        async with raw_client(None, ipc=editor_backend(log), ipc_grace_period=5.0) as client:
            opened = await open_session(client)
            token = {"X-Session-Token": opened["token"]}
            session = f"/ipc/{opened['session_id']}"
            events = opened["events"].removeprefix("/rpc")
            async with event_stream(client, events, headers=token) as stream:
                assert (await client.post(session, content=invoke(1), headers=token)).is_success
                first = await stream.read(2)
            # Sent while no stream is open: they wait for the next one.
            assert (await client.post(session, content=invoke(2), headers=token)).is_success
            resumed_headers = {**token, "Last-Event-ID": first[0][0]}
            async with event_stream(client, events, headers=resumed_headers) as stream:
                assert stream.response.status_code == 200
                resumed = await stream.read(3)
            assert not log.closed.is_set(), log.reasons
    ids = [int(event_id) for event_id, _, _ in [*first, *resumed]]
    assert ids == [1, 2, 2, 3, 4]
    assert resumed[0] == first[1]
    second_call = {data["t"]: data for _, _, data in resumed[1:]}
    assert second_call["result"]["id"] == 2
    assert second_call["notify"]["method"] == "moved"


async def test_ipc_over_http_with_tether_frontend_receives_notifications() -> None:
    received: list[tuple[str, Placement]] = []
    got = trio.Event()

    class Listener(tether.NotificationHandler, EditorEvents):
        async def moved(self, element_id: str, placement: Placement) -> None:
            received.append((element_id, placement))
            got.set()

    with trio.fail_after(TIMEOUT):
        async with (
            served(None, ipc=editor_backend()) as url,
            http.connect_ipc(url, channels=[EditorIpc]) as frontend,
        ):
            frontend.add_notification_handler(Listener())
            assert await frontend.proxy(EditorIpc).move("e9", 3.0) == Placement(3.0, 0.0)
            await got.wait()
    assert received == [("e9", Placement(3.0, 0.0))]
