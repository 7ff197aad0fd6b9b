"""Which pages and which Host names may open a WebSocket, on both servers.

Browsers apply no CORS to WebSocket: a page of any origin can open a socket to
a backend its user can reach, local ones included, with the user's cookies. So
both servers (`websocket.serve` and hypercorn's `{prefix}/ws`) refuse, before
the upgrade and before anything runs, a handshake whose `Origin` is neither
absent, nor the server's own (same-origin), nor listed (403 `forbidden`); and,
against DNS rebinding, a handshake whose `Host` is not a name the server
answers to (400; loopback names by default on a loopback address).

Where a header must be forged (a `Host` a browser would send after
rebinding), the handshake is written with trio-websocket's own client over a
plain TCP stream, which sends the Host it is given.
"""

from __future__ import annotations

import functools
import json
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any
from urllib.parse import urlsplit

import pytest
import trio
import trio.testing
import trio_websocket
from test_websocket import (
    RPC_HELLO,
    TIMEOUT,
    VARIANTS,
    Wire,
    call,
    make_backend_ipc,
    make_manager,
    served,
)

from tether import BackendIpc
from tether.runtime import ConnectError, RpcManager
from tether.runtime._util import open_service_nursery
from tether.testing import ConformanceIpc, Probe
from tether.transports import http, websocket
from tether.transports.websocket._frames import frame

EVIL = "https://evil.example"


@pytest.fixture(params=VARIANTS)
def variant(request: pytest.FixtureRequest) -> str:
    """Which server: trio-websocket's (`websocket.serve`) or hypercorn's (`http.serve`)."""
    param: str = request.param
    return param


def port_of(url: str) -> int:
    port = urlsplit(url).port
    assert port is not None
    return port


async def refused(url: str, **options: Any) -> ConnectError:
    """The ConnectError of a `websocket.connect` the server must refuse."""
    with pytest.raises(ConnectError) as caught:
        async with websocket.connect(url, interfaces=[Wire], **options):
            raise AssertionError("the handshake was accepted")  # pragma: no cover
    return caught.value


@asynccontextmanager
async def forged(
    url: str, host: str, headers: dict[str, str] | None = None
) -> AsyncIterator[trio_websocket.WebSocketConnection]:
    """trio-websocket's client, sending `Host: host` (and `headers`) whatever it connects to."""
    parts = urlsplit(url)
    async with open_service_nursery() as nursery:
        tcp = await trio.open_tcp_stream("127.0.0.1", port_of(url))
        try:
            ws = await trio_websocket.wrap_client_stream(
                nursery,
                tcp,
                host,
                parts.path,
                extra_headers=[(k.encode(), v.encode()) for k, v in (headers or {}).items()],
            )
            try:
                yield ws
            finally:
                with trio.CancelScope(shield=True) as scope:
                    scope.relative_deadline = 2
                    await ws.aclose()
        finally:
            await trio.aclose_forcefully(tcp)
        nursery.cancel_scope.cancel()


async def forged_refusal(
    url: str, host: str, headers: dict[str, str] | None = None
) -> trio_websocket.ConnectionRejected:
    with pytest.raises(trio_websocket.ConnectionRejected) as caught:
        async with forged(url, host, headers):
            raise AssertionError("the handshake was accepted")  # pragma: no cover
    return caught.value


@asynccontextmanager
async def served_app(
    manager: RpcManager, settings: websocket.WebSocketSettings | None = None, **app: Any
) -> AsyncIterator[str]:
    """`http.serve` with HttpApp options (`cors_origins`...); yield the `/ws` URL."""
    async with open_service_nursery() as nursery:
        base = await nursery.start(
            functools.partial(http.serve, manager, "127.0.0.1", 0, websocket=settings, **app)
        )
        yield base.replace("http://", "ws://", 1) + "/ws"
        nursery.cancel_scope.cancel()


# ---------------------------------------------------------------------------
# Origin


async def test_cross_origin_handshake_is_refused_with_403_by_default_and_nothing_runs(
    variant: str,
) -> None:
    manager, _ = make_manager()
    backend = make_backend_ipc()
    asked: list[websocket.Handshake] = []

    async def authorize(handshake: websocket.Handshake) -> bool:
        asked.append(handshake)
        return True

    with trio.fail_after(TIMEOUT):
        async with served(variant, manager, backend, authorize=authorize) as url:
            rpc = await refused(url, headers={"Origin": EVIL})
            with pytest.raises(ConnectError) as caught:
                async with websocket.connect_ipc(
                    url, channels=[ConformanceIpc], headers={"Origin": EVIL}
                ):
                    raise AssertionError("the handshake was accepted")  # pragma: no cover
            ipc = caught.value
            assert backend.sessions == ()
    for error in (rpc, ipc):
        assert error.status_code == 403
        assert error.details["error"]["code"] == "forbidden"
        assert error.details["error"]["name"] == "Forbidden"
        assert EVIL in error.message
    # Refused before the authorization hook, before any session.
    assert asked == []


async def test_frames_sent_behind_a_cross_origin_handshake_never_run() -> None:
    # A raw client sends the upgrade, its hello and a call in one write, not
    # waiting for the answer: the server must answer 403 and run nothing.
    # On websocket.serve only: hypercorn 0.18 itself fails on bytes that
    # follow an upgrade request in the same read, whatever the app answers,
    # and its whole server stops (pgjones/hypercorn#225).
    probe = Probe()
    manager, _ = make_manager(probe)
    with trio.fail_after(TIMEOUT):
        async with served("trio-websocket", manager) as url:
            parts = urlsplit(url)
            request = (
                f"GET {parts.path} HTTP/1.1\r\nHost: {parts.netloc}\r\nUpgrade: websocket\r\n"
                "Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
                f"Sec-WebSocket-Version: 13\r\nOrigin: {EVIL}\r\n\r\n"
            ).encode()
            frames = frame(RPC_HELLO.encode(), True) + frame(call(1, "hold", ["x"]).encode(), True)
            answer = b""
            async with await trio.open_tcp_stream("127.0.0.1", port_of(url)) as tcp:
                await tcp.send_all(request + frames)
                for _ in range(100):
                    if b"\r\n\r\n" in answer:
                        break
                    data = await tcp.receive_some(65536)
                    if not data:
                        break
                    answer += data
            await trio.testing.wait_all_tasks_blocked()
    assert answer.startswith(b"HTTP/1.1 403 "), answer
    assert not probe.is_set("started:x")


async def test_same_origin_handshake_is_accepted_by_default(variant: str) -> None:
    manager, _ = make_manager()
    with trio.fail_after(TIMEOUT):
        async with served(variant, manager) as url:
            # The page was served by this very server: its Origin names the
            # Host the socket is opened to.
            origin = f"http://127.0.0.1:{port_of(url)}"
            async with websocket.connect(url, interfaces=[Wire], headers={"Origin": origin}) as b:
                assert await b.get_client(Wire).length("same") == 4
            async with forged(
                url, f"localhost:{port_of(url)}", {"Origin": f"http://localhost:{port_of(url)}"}
            ) as ws:
                await ws.send_message(RPC_HELLO)
                assert json.loads(await ws.get_message())["t"] == "welcome"
            # Another port of the same host is another origin.
            error = await refused(url, headers={"Origin": f"http://127.0.0.1:{port_of(url) ^ 1}"})
    assert error.status_code == 403


async def test_listed_origins_are_accepted_and_others_refused(variant: str) -> None:
    manager, _ = make_manager()
    with trio.fail_after(TIMEOUT):
        async with served(variant, manager, allowed_origins={"https://app.example"}) as url:
            async with websocket.connect(
                url, interfaces=[Wire], headers={"Origin": "https://app.example"}
            ) as backend:
                assert await backend.get_client(Wire).length("listed") == 6
            error = await refused(url, headers={"Origin": EVIL})
        async with (
            served(variant, manager, allowed_origins={"*"}) as url,
            websocket.connect(url, interfaces=[Wire], headers={"Origin": EVIL}) as backend,
        ):
            assert await backend.get_client(Wire).length("any") == 3
    assert error.status_code == 403
    assert error.details["error"]["code"] == "forbidden"


async def test_ws_route_takes_the_apps_cors_origins_unless_its_settings_list_their_own() -> None:
    manager, _ = make_manager()
    with trio.fail_after(TIMEOUT):
        async with served_app(manager, cors_origins=["https://app.example"]) as url:
            async with websocket.connect(
                url, interfaces=[Wire], headers={"Origin": "https://app.example"}
            ) as backend:
                assert await backend.get_client(Wire).length("app") == 3
            from_app = await refused(url, headers={"Origin": EVIL})
        settings = websocket.WebSocketSettings(allowed_origins={"https://ws.example"})
        async with served_app(manager, settings, cors_origins=["https://app.example"]) as url:
            async with websocket.connect(
                url, interfaces=[Wire], headers={"Origin": "https://ws.example"}
            ) as backend:
                assert await backend.get_client(Wire).length("own") == 3
            own = await refused(url, headers={"Origin": "https://app.example"})
    assert from_app.status_code == 403
    assert own.status_code == 403


# ---------------------------------------------------------------------------
# Host


async def test_rebinding_host_is_refused_with_400_on_loopback(variant: str) -> None:
    manager, _ = make_manager()
    with trio.fail_after(TIMEOUT):
        async with served(variant, manager) as url:
            port = port_of(url)
            # After DNS rebinding, the hostile page is same-origin with itself.
            host = f"evil.example:{port}"
            rejected = await forged_refusal(url, host, {"Origin": f"http://{host}"})
            plain = await forged_refusal(url, host)
            # Loopback names are served.
            for name in ("localhost", "127.0.0.1", "app.localhost"):
                async with forged(url, f"{name}:{port}") as ws:
                    await ws.send_message(RPC_HELLO)
                    assert json.loads(await ws.get_message())["t"] == "welcome"
    for rejection in (rejected, plain):
        assert rejection.status_code == 400
        assert rejection.body is not None
        error = json.loads(rejection.body)["error"]
        assert error["code"] == "bad-request"
        assert "evil.example" in error["message"]
        assert "allowed_hosts" in error["message"]


async def test_allowed_hosts_serves_the_names_it_lists(variant: str) -> None:
    manager, _ = make_manager()
    with trio.fail_after(TIMEOUT):
        async with served(variant, manager, allowed_hosts={"api.example"}) as url:
            port = port_of(url)
            async with forged(url, f"api.example:{port}") as ws:
                await ws.send_message(RPC_HELLO)
                assert json.loads(await ws.get_message())["t"] == "welcome"
            # Listing names replaces the loopback default.
            rejection = await forged_refusal(url, f"localhost:{port}")
        async with (
            served(variant, manager, allowed_hosts={"*"}) as url,
            forged(url, f"anything.example:{port_of(url)}") as ws,
        ):
            await ws.send_message(RPC_HELLO)
            assert json.loads(await ws.get_message())["t"] == "welcome"
    assert rejection.status_code == 400


@pytest.mark.parametrize(
    ("hosts", "error"),
    [("api.example", TypeError), ({"api.example:80"}, ValueError), ({"a/b"}, ValueError)],
)
def test_bad_allowed_hosts_are_refused(hosts: Any, error: type[Exception]) -> None:
    with pytest.raises(error, match="allowed_hosts"):
        websocket.WebSocketSettings(allowed_hosts=hosts)


def test_settings_take_star_for_any_origin() -> None:
    assert websocket.WebSocketSettings(allowed_origins=["*"]).allowed_origins == {"*"}


# ---------------------------------------------------------------------------
# Access lines for refused handshakes


def access_lines(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [record for record in caplog.records if record.name == "tether.access"]


async def test_each_refused_handshake_leaves_one_access_line(
    variant: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="tether.access")
    manager, _ = make_manager()

    async def authorize(handshake: websocket.Handshake) -> bool:
        return handshake.authorization == "Bearer let-me-in"

    with trio.fail_after(TIMEOUT):
        async with served(variant, manager, authorize=authorize) as url:
            port = port_of(url)
            await refused(url, headers={"Origin": EVIL}, authorization="Bearer let-me-in")
            await forged_refusal(url, f"evil.example:{port}")
            await refused(url, authorization="Bearer s3cret-token")
            lines = access_lines(caplog)
    assert len(lines) == 3, [r.getMessage() for r in lines]
    for record, status, reason in zip(
        lines, (403, 400, 401), ("forbidden", "bad-request", "unauthorized"), strict=True
    ):
        assert record.levelno == logging.INFO
        assert (record.status, record.outcome) == (status, reason)  # type: ignore[attr-defined]
        text = record.getMessage()
        assert str(status) in text
        assert reason in text
        assert "127.0.0.1:" in text
        assert "s3cret" not in text
        assert "let-me-in" not in text


async def test_a_full_server_leaves_an_access_line_for_its_503(
    variant: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="tether.access")
    backend: BackendIpc = make_backend_ipc()
    with trio.fail_after(TIMEOUT):
        async with served(variant, None, backend, max_connections=1) as url:
            async with websocket.connect_ipc(url, channels=[ConformanceIpc]):
                error = await refused(url)
            lines = access_lines(caplog)
    assert error.status_code == 503
    assert len(lines) == 1
    assert "503" in lines[0].getMessage()
