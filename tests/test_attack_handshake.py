# mypy: disable-error-code="empty-body"
"""What one hostile handshake can do to a server: nothing but get refused.

Each test opens a real server on 127.0.0.1 and sends it, by hand, a handshake
tether's own clients never send. The server must refuse it as a client's
mistake (no traceback in its log, no 5xx) and go on serving everyone else.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import socket
import struct
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from urllib.parse import urlsplit

import httpx
import pytest
import trio
import trio.testing
import trio_websocket
from test_ipc_admission import Editor, make_backend, raw_websocket
from test_websocket import Wire, make_manager, served

import tether
from tether.runtime._protocol import (
    PROTOCOL_VERSION,
    Error,
    Hello,
    InterfaceInfo,
    Welcome,
    decode,
    encode,
)
from tether.runtime._util import open_service_nursery
from tether.transports import http, websocket

TIMEOUT = 10.0
NETWORK = ["http", "trio-websocket", "hypercorn-websocket"]


@asynccontextmanager
async def serving(transport: str, backend: tether.BackendIpc) -> AsyncIterator[str]:
    """Serve `backend` over `transport` on 127.0.0.1; yield its URL.

    Unlike test_ipc_admission's, the server runs in the test's own nursery:
    a server that stops on a client's message fails the test.
    """
    async with trio.open_nursery() as nursery:
        if transport == "trio-websocket":
            url = await nursery.start(
                functools.partial(websocket.serve, None, "127.0.0.1", 0, ipc=backend)
            )
        else:
            base = await nursery.start(
                functools.partial(http.serve, None, "127.0.0.1", 0, ipc=backend)
            )
            url = base if transport == "http" else base.replace("http://", "ws://", 1) + "/ws"
        yield url
        nursery.cancel_scope.cancel()


def hello_with_version(version: str) -> bytes:
    return encode(Hello(PROTOCOL_VERSION, channels={Editor.channel_name: version}, mode="ipc"))


@pytest.mark.parametrize("transport", NETWORK)
@pytest.mark.parametrize("version", ["not-a-version", "1.0", ""])
async def test_an_ipc_hello_whose_channel_version_is_not_semver_is_a_bad_request(
    transport: str, version: str, caplog: pytest.LogCaptureFixture
) -> None:
    """It was a bare ValueError out of the handshake: websocket.serve stopped (one
    message from anyone ended the server), hypercorn logged 'Error in ASGI
    Framework', and HTTP answered 503 after logging a traceback."""
    backend, made = make_backend()
    caplog.set_level(logging.INFO)
    with trio.fail_after(TIMEOUT):
        async with serving(transport, backend) as url:
            if transport == "http":
                async with httpx.AsyncClient(base_url=url) as client:
                    response = await client.post(
                        "/ipc",
                        content=hello_with_version(version),
                        headers={"Content-Type": "application/json"},
                    )
                assert response.status_code == 400, response.text
                error = response.json()["error"]
                assert (error["code"], error["details"]["channel"]) == (
                    "bad-request",
                    Editor.channel_name,
                )
            else:
                async with raw_websocket(url) as ws:
                    await ws.send_message(hello_with_version(version).decode())
                    refusal = decode(await ws.get_message())
                assert isinstance(refusal, Error)
                assert refusal.error.code == "bad-request"
                assert refusal.error.details["channel"] == Editor.channel_name
            # The server serves on.
            connect = http.connect_ipc if transport == "http" else websocket.connect_ipc
            async with connect(url, channels=[Editor]) as frontend:
                assert await frontend.proxy(Editor).move(2.0) == 2.0
    assert len(made) == 1  # the good session's only
    assert not [r for r in caplog.records if r.exc_info or r.levelno >= logging.ERROR]
    assert backend.sessions == ()


class Counter(tether.RpcInterface):
    interface_name = "attack.Counter"
    interface_version = "1.0.0"

    async def bump(self) -> int: ...


async def connect_and_leave(kind: str, url: str) -> None:
    if kind == "rpc":
        async with websocket.connect(url, interfaces=[Counter]):
            pass
    else:
        async with websocket.connect_ipc(url, channels=[Editor]):
            pass


@pytest.mark.parametrize("kind", ["rpc", "ipc"])
async def test_a_backend_welcome_whose_version_is_not_semver_is_a_tether_error(kind: str) -> None:
    """A hostile (or broken) backend: the frontend's connect raised a bare ValueError."""

    async def hostile(request: trio_websocket.WebSocketRequest) -> None:
        ws = await request.accept()
        await ws.get_message()  # the hello
        if kind == "rpc":
            interfaces = {Counter.interface_name: InterfaceInfo("junk", ("bump",))}
            welcome = Welcome(PROTOCOL_VERSION, "s", interfaces=interfaces)
        else:
            welcome = Welcome(PROTOCOL_VERSION, "s", {Editor.channel_name: "junk"})
        await ws.send_message(encode(welcome).decode())
        with contextlib.suppress(trio_websocket.ConnectionClosed):
            await ws.get_message()

    with trio.fail_after(TIMEOUT):
        async with open_service_nursery() as nursery:
            server = await nursery.start(
                trio_websocket.serve_websocket, hostile, "127.0.0.1", 0, None
            )
            url = f"ws://127.0.0.1:{server.port}/"
            with pytest.raises(tether.TetherError, match="not a semantic version"):
                await connect_and_leave(kind, url)
            nursery.cancel_scope.cancel()


@pytest.mark.parametrize("variant", ["trio-websocket", "hypercorn"])
async def test_a_websocket_authorize_hook_that_never_answers_is_cut_off_with_503(
    variant: str, caplog: pytest.LogCaptureFixture
) -> None:
    """The handshake hook had no bound: a directory that hung held every handshake
    (and its max_connections place) for as long as the server ran."""
    manager, _ = make_manager()
    hang = "Bearer hang"
    hung = trio.Event()  # never set: the hook never answers

    async def authorize(handshake: websocket.Handshake) -> bool:
        if handshake.authorization == hang:
            await hung.wait()
        return True

    with trio.fail_after(TIMEOUT):
        async with served(
            variant, manager, max_connections=1, authorize=authorize, handshake_timeout=0.5
        ) as url:
            for _ in range(2):
                with pytest.raises(tether.ConnectError) as refused:
                    async with websocket.connect(
                        url, interfaces=[Wire], authorization="Bearer hang"
                    ):
                        raise AssertionError("accepted")  # pragma: no cover
                assert refused.value.status_code == 503
            # Each gave its one place back.
            async with websocket.connect(url, interfaces=[Wire], authorization="Bearer ok") as b:
                assert await b.get_client(Wire).length("in") == 2
    assert "did not answer within 0.5 s" in caplog.text


@pytest.mark.parametrize("variant", ["trio-websocket", "hypercorn"])
async def test_a_credential_in_the_websocket_url_stays_out_of_the_refusal_log(
    variant: str, caplog: pytest.LogCaptureFixture
) -> None:
    """A browser cannot set Authorization on a WebSocket, so pages send their token
    in the URL's query; websocket.serve wrote the whole request target, token
    included, into every refused handshake's access line."""
    caplog.set_level(logging.DEBUG)
    secret = "s3cret-query-token"
    manager, _ = make_manager()

    async def authorize(handshake: websocket.Handshake) -> bool:
        return False

    with trio.fail_after(TIMEOUT):
        async with served(variant, manager, authorize=authorize) as url:
            with pytest.raises(tether.ConnectError) as refused:
                async with websocket.connect(f"{url}?access_token={secret}", interfaces=[Wire]):
                    raise AssertionError("accepted")  # pragma: no cover
    assert refused.value.status_code == 401
    lines = [r for r in caplog.records if r.name == "tether.access"]
    assert len(lines) == 1
    assert lines[0].getMessage().split()[:3] == ["WebSocket", urlsplit(url).path, "unauthorized"]
    assert all(secret not in record.getMessage() for record in caplog.records)


async def test_a_handshake_reset_as_soon_as_sent_does_not_stop_websocket_serve() -> None:
    """The server asked for the client's address first thing, and getpeername()
    on a connection the client had already reset raised OSError (ENOTCONN) out
    of websocket.serve: one reset handshake stopped the server."""
    manager, _ = make_manager()
    with trio.fail_after(TIMEOUT):
        async with served("trio-websocket", manager) as url:
            parts = urlsplit(url)
            assert parts.hostname is not None
            assert parts.port is not None
            for _ in range(5):
                tcp = await trio.open_tcp_stream(parts.hostname, parts.port)
                await tcp.send_all(
                    f"GET / HTTP/1.1\r\nHost: {parts.netloc}\r\nUpgrade: websocket\r\n"
                    "Connection: Upgrade\r\nSec-WebSocket-Version: 13\r\n"
                    "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n".encode()
                )
                # Closed with SO_LINGER 0: a reset, not a FIN.
                tcp.socket.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                await trio.aclose_forcefully(tcp)
                await trio.testing.wait_all_tasks_blocked(cushion=0.01)
            async with websocket.connect(url, interfaces=[Wire]) as backend:
                assert await backend.get_client(Wire).length("on") == 2


async def test_a_connection_that_fails_unexpectedly_stops_only_itself(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """trio-websocket runs each connection's handler in the server's own nursery,
    so anything one connection raises (two such triggers were found above) used
    to stop websocket.serve for everyone. Whatever the cause, the connection is
    closed and logged, and the server goes on."""
    manager, _ = make_manager()
    real_check = tether.transports.websocket._endpoint.Endpoint.check
    failures = 0

    async def check_that_fails_once(self: object, *args: object, **kwargs: object) -> object:
        nonlocal failures
        if failures == 0:
            failures += 1
            raise RuntimeError("an unexpected failure in one connection")
        return await real_check(self, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(
        tether.transports.websocket._endpoint.Endpoint, "check", check_that_fails_once
    )
    with trio.fail_after(TIMEOUT):
        async with served("trio-websocket", manager) as url:
            with pytest.raises(tether.ConnectError):
                async with websocket.connect(url, interfaces=[Wire]):
                    pass  # pragma: no cover - this connection fails on the server
            async with websocket.connect(url, interfaces=[Wire]) as backend:
                assert await backend.get_client(Wire).length("on") == 2
    assert failures == 1
    [logged] = [r for r in caplog.records if r.name == "tether.websocket" and r.exc_info]
    assert logged.getMessage() == "closed a WebSocket connection that failed"
    assert "RuntimeError: an unexpected failure in one connection" in caplog.text
