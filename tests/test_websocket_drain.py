# mypy: disable-error-code="empty-body"
"""Graceful shutdown of both WebSocket servers: drain, close 1001, and /health.

`websocket.serve` and `http.serve`'s `{prefix}/ws`, stopped by their
`shutdown_trigger`: a call running finishes and its caller gets the result; a
call still running when the grace is over is cancelled and its caller hears
why; a call or invoke that arrives meanwhile is refused with `Unavailable`; a
new connection is refused (503); every connection closes with 1001 and the
reason. `websocket.serve` answers a plain `GET /health`, 503 while it drains.
"""

from __future__ import annotations

import functools
import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any
from urllib.parse import urlsplit

import attrs
import pytest
import trio
import trio.testing
import trio_websocket

from tests.test_websocket import Wire, call, make_manager, raw, reply
from tether import BackendIpc, IpcHandler, IpcInterface
from tether.runtime import (
    ConnectError,
    ConnectionClosed,
    RpcManager,
    TetherError,
    Unavailable,
)
from tether.runtime._util import open_service_nursery
from tether.testing import Probe
from tether.transports import http, websocket

TIMEOUT = 10.0
VARIANTS = ["trio-websocket", "hypercorn"]
SHUTTING_DOWN = "the server is shutting down"
#: These tests look at each refusal itself: no retries, no reconnects.
NO_RETRY: dict[str, Any] = {"retry": None}


@pytest.fixture(params=VARIANTS)
def variant(request: pytest.FixtureRequest) -> str:
    """Which server: trio-websocket's (`websocket.serve`) or hypercorn's (`http.serve`)."""
    param: str = request.param
    return param


@attrs.frozen
class Server:
    url: str  # ws:// to connect to
    stop: trio.Event  # set it: the server shuts down gracefully
    stopped: trio.Event  # set once the server task has returned
    port: int


async def _run(
    variant: str,
    manager: RpcManager | None,
    ipc: BackendIpc | None,
    graceful_timeout: float,
    *,
    task_status: trio.TaskStatus[Server] = trio.TASK_STATUS_IGNORED,
) -> None:
    stop, stopped = trio.Event(), trio.Event()
    try:
        async with trio.open_nursery() as nursery:
            if variant == "trio-websocket":
                url = await nursery.start(
                    functools.partial(
                        websocket.serve,
                        manager,
                        "127.0.0.1",
                        0,
                        ipc=ipc,
                        graceful_timeout=graceful_timeout,
                        shutdown_trigger=stop.wait,
                    )
                )
            else:
                base = await nursery.start(
                    functools.partial(
                        http.serve,
                        manager,
                        "127.0.0.1",
                        0,
                        ipc=ipc,
                        graceful_timeout=graceful_timeout,
                        shutdown_trigger=stop.wait,
                    )
                )
                url = base.replace("http://", "ws://") + "/ws"
            port = urlsplit(url).port
            assert port is not None
            task_status.started(Server(url, stop, stopped, port))
    finally:
        stopped.set()


@asynccontextmanager
async def serving(
    variant: str,
    manager: RpcManager | None,
    ipc: BackendIpc | None = None,
    *,
    graceful_timeout: float = 5.0,
) -> AsyncIterator[Server]:
    """Serve on 127.0.0.1, port 0, for the block (cancelled at its end if still up)."""
    async with open_service_nursery() as nursery:
        server: Server = await nursery.start(_run, variant, manager, ipc, graceful_timeout)
        yield server
        nursery.cancel_scope.cancel()


async def _shutdown_begun(probe: Probe, server: Server, key: str) -> None:
    """Once `key` runs: trigger the shutdown, and wait until it has begun."""
    await probe.wait(f"started:{key}")
    server.stop.set()
    await trio.testing.wait_all_tasks_blocked()


async def _close_of(ws: trio_websocket.WebSocketConnection) -> tuple[int, str | None]:
    """Read until the connection closes: the server's close code and reason."""
    for _ in range(100):
        try:
            await ws.get_message()  # a ping of hypercorn's envelope, if any
        except trio_websocket.ConnectionClosed as closed:
            why = closed.reason
            break
    else:
        raise AssertionError("the connection stayed open")  # pragma: no cover
    return why.code, why.reason


# ---------------------------------------------------------------------------
# RPC


async def test_a_call_running_at_shutdown_finishes_and_its_caller_gets_the_result(
    variant: str,
) -> None:
    probe = Probe()
    manager, impl = make_manager(probe)
    results: list[str] = []
    with trio.fail_after(TIMEOUT):
        async with (
            serving(variant, manager) as server,
            websocket.connect(server.url, interfaces=[Wire], **NO_RETRY) as backend,
        ):
            client = backend.get_client(Wire)
            async with trio.open_nursery() as nursery:

                async def call() -> None:
                    results.append(await client.hold("k"))

                nursery.start_soon(call)
                await _shutdown_begun(probe, server, "k")
                # Draining: the server waits for the call, and has not stopped.
                assert not server.stopped.is_set()
                impl.release.set()
            await server.stopped.wait()
            # Then it closed the connection.
            with pytest.raises(ConnectionClosed):
                await client.length("after")
    assert results == ["k"]
    assert not probe.is_set("cancelled:k")


async def test_a_call_still_running_after_the_grace_is_cancelled_and_its_caller_told_why(
    variant: str,
) -> None:
    probe = Probe()
    manager, _ = make_manager(probe)
    with trio.fail_after(TIMEOUT):
        async with (
            serving(variant, manager, graceful_timeout=0.5) as server,
            websocket.connect(server.url, interfaces=[Wire], **NO_RETRY) as backend,
        ):
            client = backend.get_client(Wire)
            async with trio.open_nursery() as nursery:
                nursery.start_soon(_shutdown_begun, probe, server, "k")
                with pytest.raises(ConnectionClosed) as caught:
                    await client.hold("k")
            await server.stopped.wait()
    assert probe.is_set("cancelled:k")
    assert caught.value.close_code == 1001
    assert caught.value.reason == SHUTTING_DOWN
    assert SHUTTING_DOWN in str(caught.value)


async def test_a_call_sent_while_draining_is_refused_with_unavailable_then_1001(
    variant: str,
) -> None:
    # On the wire (a plain trio-websocket client): what any client sees.
    probe = Probe()
    manager, impl = make_manager(probe)
    with trio.fail_after(TIMEOUT):
        async with serving(variant, manager) as server, raw(server.url) as ws:
            await ws.send_message(call(1, "hold", ["k"]))
            await _shutdown_begun(probe, server, "k")
            # The connection is still open (a call runs on it): a new call on
            # it is refused, certainly not run, so that its caller retries.
            await ws.send_message(call(2, "length", ["new"]))
            refused = await reply(ws)
            impl.release.set()
            done = await reply(ws)
            code, reason = await _close_of(ws)
            await server.stopped.wait()
    assert refused["t"] == "error"
    assert refused["id"] == 2
    assert refused["error"]["code"] == "unavailable"
    assert refused["error"]["status"] == 503
    assert "shutting down" in refused["error"]["message"]
    assert done == {"t": "result", "id": 1, "value": "k"}
    assert (code, reason) == (1001, SHUTTING_DOWN)


async def test_a_new_connection_while_draining_is_refused(variant: str) -> None:
    probe = Probe()
    manager, impl = make_manager(probe)
    with trio.fail_after(TIMEOUT):
        async with (
            serving(variant, manager) as server,
            websocket.connect(server.url, interfaces=[Wire], **NO_RETRY) as backend,
        ):
            client = backend.get_client(Wire)
            async with trio.open_nursery() as nursery:
                nursery.start_soon(client.hold, "k")
                await _shutdown_begun(probe, server, "k")
                with pytest.raises((ConnectError, Unavailable)) as refused:
                    async with websocket.connect(server.url, interfaces=[Wire], **NO_RETRY):
                        pass
                impl.release.set()
    # Either refused at the handshake (503) or, on hypercorn, whose listener
    # closes at once, refused by the socket.
    assert isinstance(refused.value, TetherError)
    if variant == "trio-websocket":
        assert "503" in str(refused.value) or isinstance(refused.value, Unavailable)


async def test_an_idle_connection_closes_with_1001_at_once(variant: str) -> None:
    manager, _ = make_manager()
    with trio.fail_after(TIMEOUT):
        async with (
            serving(variant, manager, graceful_timeout=30.0) as server,
            raw(server.url) as ws,
        ):
            await ws.send_message(call(1, "length", ["up"]))
            assert (await reply(ws))["value"] == 2
            server.stop.set()
            # Nothing runs: the server does not wait out its 30 s of grace.
            with trio.fail_after(3):
                code, reason = await _close_of(ws)
                await server.stopped.wait()
    assert (code, reason) == (1001, SHUTTING_DOWN)


# ---------------------------------------------------------------------------
# IPC


class Slow(IpcInterface):
    channel_name = "tests.drain.slow"
    version = "1.0.0"

    async def hold(self, key: str) -> str: ...


def slow_backend(probe: Probe, release: trio.Event) -> BackendIpc:
    class SlowHandler(IpcHandler, Slow):
        async def hold(self, key: str) -> str:
            probe.signal(f"started:{key}")
            try:
                await release.wait()
            except trio.Cancelled:
                probe.signal(f"cancelled:{key}")
                raise
            return key

        def on_close(self, reason: str) -> None:
            probe.signal("on_close", reason)

    backend = BackendIpc()
    backend.register(SlowHandler)
    return backend


async def test_an_ipc_invoke_running_at_shutdown_finishes_then_the_session_closes_with_the_reason(
    variant: str,
) -> None:
    probe, release = Probe(), trio.Event()
    results: list[str] = []
    with trio.fail_after(TIMEOUT):
        async with (
            serving(variant, None, slow_backend(probe, release)) as server,
            websocket.connect_ipc(server.url, channels=[Slow]) as frontend,
        ):
            proxy = frontend.proxy(Slow)
            async with trio.open_nursery() as nursery:

                async def invoke() -> None:
                    results.append(await proxy.hold("k"))

                nursery.start_soon(invoke)
                await _shutdown_begun(probe, server, "k")
                # An invoke made while it drains is refused; the session stays.
                with pytest.raises(Unavailable):
                    await proxy.hold("late")
                release.set()
            reason = await frontend.wait_closed()
            await server.stopped.wait()
    assert results == ["k"]
    assert reason == SHUTTING_DOWN
    assert frontend.closed_reason == SHUTTING_DOWN
    assert probe.is_set("on_close")
    assert await probe.wait("on_close") == SHUTTING_DOWN


# ---------------------------------------------------------------------------
# GET /health on websocket.serve


async def _get(port: int, path: str) -> tuple[int, dict[str, str], Any]:
    """A plain HTTP/1.1 GET on a real socket: (status, headers, JSON body)."""
    stream = await trio.open_tcp_stream("127.0.0.1", port)
    async with stream:
        await stream.send_all(
            f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\n\r\n".encode()
        )
        data = b""
        while chunk := await stream.receive_some():
            data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode().split("\r\n")
    status = int(lines[0].split(" ")[1])
    headers = {
        name.lower(): value.strip()
        for name, _, value in (line.partition(":") for line in lines[1:])
    }
    return status, headers, json.loads(body)


async def test_health_answers_200_then_503_while_draining() -> None:
    probe = Probe()
    manager, impl = make_manager(probe)
    with trio.fail_after(TIMEOUT):
        async with (
            serving("trio-websocket", manager) as server,
            websocket.connect(server.url, interfaces=[Wire], **NO_RETRY) as backend,
        ):
            up = await _get(server.port, "/health")
            client = backend.get_client(Wire)
            async with trio.open_nursery() as nursery:
                nursery.start_soon(client.hold, "k")
                await _shutdown_begun(probe, server, "k")
                draining = await _get(server.port, "/health?probe=1")
                impl.release.set()
            await server.stopped.wait()
            # Once stopped, nothing listens: the socket refuses.
            with pytest.raises(OSError, match="connect"):
                await trio.open_tcp_stream("127.0.0.1", server.port)
    assert up[0] == 200
    assert up[1]["content-type"] == "application/json"
    assert up[2] == {"status": "ok"}
    assert draining[0] == 503
    assert draining[1]["retry-after"] == "1"
    assert draining[2] == {"status": "shutting-down"}


async def test_a_plain_get_of_another_path_is_still_refused_with_400() -> None:
    manager, _ = make_manager()
    with trio.fail_after(TIMEOUT):
        async with serving("trio-websocket", manager) as server:
            stream = await trio.open_tcp_stream("127.0.0.1", server.port)
            async with stream:
                await stream.send_all(b"GET /other HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
                data = b""
                while chunk := await stream.receive_some():
                    data += chunk
    assert data.startswith(b"HTTP/1.1 400")
