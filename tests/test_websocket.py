# mypy: disable-error-code="empty-body"
"""The WebSocket transport's own contract, on both servers (trio-websocket and hypercorn).

The conformance suites (test_websocket_conformance.py) cover RPC and IPC as
such; these tests pin down what only a network socket has: size limits and
their close codes, in-flight limits, the Origin allow-list, authorization at
the handshake, connection limits, keepalive, close reasons, malformed frames,
and the wire form of cancellation and deadlines.

Raw wire tests use trio-websocket as an independent client, or wsproto by hand
where a peer must misbehave below the WebSocket layer (never answering pings).
Every test that can runs against both servers: the `variant` fixture.
"""

from __future__ import annotations

import functools
import json
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any
from urllib.parse import urlsplit

import attrs
import hypercorn.config
import hypercorn.trio
import pytest
import trio
import trio.testing
import trio_websocket
from wsproto import ConnectionType, WSConnection
from wsproto.events import AcceptConnection, Request, TextMessage

from tether import BackendIpc
from tether.runtime import (
    PROTOCOL_VERSION,
    ConnectError,
    ConnectionClosed,
    InvalidRequest,
    PayloadTooLarge,
    RpcInterface,
    RpcManager,
    Unauthorized,
)
from tether.runtime._protocol import Hello, Welcome, encode
from tether.runtime._util import open_service_nursery
from tether.testing import ConformanceInterface, ConformanceIpc, IpcConformance, Probe
from tether.testing import RpcConformance as _RpcConformance
from tether.transports import http, websocket
from tether.transports.http import HttpApp

TIMEOUT = 10.0
VARIANTS = ["trio-websocket", "hypercorn"]
RPC_HELLO = encode(Hello(PROTOCOL_VERSION)).decode()
IPC_HELLO = encode(
    Hello(
        PROTOCOL_VERSION, channels={ConformanceIpc.channel_name: ConformanceIpc.version}, mode="ipc"
    )
)


class Wire(RpcInterface):
    """What these tests call: a call that waits for the test, and a sized one."""

    interface_name = "tests.WebSocketWire"
    interface_version = "1.0.0"

    async def hold(self, key: str) -> str: ...
    async def length(self, text: str) -> int: ...


class WireImpl(Wire):
    """Counts the `hold` calls running at once; they return when `release` is set."""

    def __init__(self, probe: Probe) -> None:
        self.probe = probe
        self.running = 0
        self.most = 0
        self.release = trio.Event()

    async def hold(self, key: str) -> str:
        self.running += 1
        self.most = max(self.most, self.running)
        self.probe.signal(f"started:{key}")
        self.probe.signal(f"running:{self.running}")
        try:
            await self.release.wait()
        except trio.Cancelled:
            self.probe.signal(f"cancelled:{key}")
            raise
        finally:
            self.running -= 1
        return key

    async def length(self, text: str) -> int:
        return len(text)


def make_manager(probe: Probe | None = None) -> tuple[RpcManager, WireImpl]:
    """A manager serving the conformance interface and `Wire`, both reporting to `probe`."""
    probe = probe if probe is not None else Probe()
    manager = _RpcConformance().backend_manager(probe)
    impl = WireImpl(probe)
    manager.register_impl(Wire, impl)
    return manager, impl


def make_backend_ipc(probe: Probe | None = None) -> BackendIpc:
    return IpcConformance().backend_ipc(probe)


# ---------------------------------------------------------------------------
# Servers and raw peers


@pytest.fixture(params=VARIANTS)
def variant(request: pytest.FixtureRequest) -> str:
    """Which server: trio-websocket's (`websocket.serve`) or hypercorn's (`http.serve`)."""
    param: str = request.param
    return param


@attrs.frozen
class Server:
    url: str
    scope: trio.CancelScope  # cancel it to stop the server
    stopped: trio.Event  # set once the server task has ended


async def _run_server(
    variant: str,
    manager: RpcManager | None,
    ipc: BackendIpc | None,
    settings: dict[str, Any],
    *,
    task_status: trio.TaskStatus[Server] = trio.TASK_STATUS_IGNORED,
) -> None:
    stopped = trio.Event()
    try:
        with trio.CancelScope() as scope:
            async with trio.open_nursery() as nursery:
                if variant == "trio-websocket":
                    url = await nursery.start(
                        functools.partial(
                            websocket.serve, manager, "127.0.0.1", 0, ipc=ipc, **settings
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
                            websocket=websocket.WebSocketSettings(**settings),
                        )
                    )
                    url = base.replace("http://", "ws://", 1) + "/ws"
                task_status.started(Server(url, scope, stopped))
    finally:
        stopped.set()


@asynccontextmanager
async def serving(
    variant: str, manager: RpcManager | None, ipc: BackendIpc | None = None, **settings: Any
) -> AsyncIterator[Server]:
    """Serve on 127.0.0.1, port 0, for the block; `Server.scope` stops it early."""
    async with open_service_nursery() as nursery:
        server: Server = await nursery.start(_run_server, variant, manager, ipc, settings)
        yield server
        nursery.cancel_scope.cancel()


@asynccontextmanager
async def served(
    variant: str, manager: RpcManager | None, ipc: BackendIpc | None = None, **settings: Any
) -> AsyncIterator[str]:
    """Serve for the block; yield the ws:// URL."""
    async with serving(variant, manager, ipc, **settings) as server:
        yield server.url


@asynccontextmanager
async def raw(
    url: str, *, hello: str | bytes | None = RPC_HELLO, **options: Any
) -> AsyncIterator[trio_websocket.WebSocketConnection]:
    """A plain trio-websocket client; after `hello` and the server's `welcome` unless None.

    It owns its TCP stream: trio-websocket's client leaves the socket open when
    the server closes first.
    """
    parts = urlsplit(url)
    assert parts.hostname is not None
    assert parts.port is not None
    async with open_service_nursery() as nursery:
        tcp = await trio.open_tcp_stream(parts.hostname, parts.port)
        try:
            ws = await trio_websocket.wrap_client_stream(
                nursery, tcp, parts.netloc, parts.path, **options
            )
            try:
                if hello is not None:
                    await ws.send_message(hello)
                    welcome = json.loads(await ws.get_message())
                    assert welcome["t"] == "welcome", welcome
                yield ws
            finally:
                with trio.CancelScope(shield=True) as scope:
                    scope.relative_deadline = 2
                    await ws.aclose()
        finally:
            await trio.aclose_forcefully(tcp)
        nursery.cancel_scope.cancel()


async def reply(ws: trio_websocket.WebSocketConnection) -> dict[str, Any]:
    """The next message, decoded (skipping hypercorn's envelope pings)."""
    for _ in range(100):
        message: dict[str, Any] = json.loads(await ws.get_message())
        if message.get("t") != "ping":
            return message
    raise AssertionError("only pings came")  # pragma: no cover


def call(id_: int, op: str, args: list[Any], **extra: Any) -> str:
    """A raw `call` to `Wire` (or to `iface`/`ver` given in `extra`)."""
    message = {
        "t": "call",
        "id": id_,
        "iface": Wire.interface_name,
        "ver": Wire.interface_version,
        "op": op,
        "args": args,
        "ctx": {},
    }
    message.update(extra)
    return json.dumps(message)


async def closed_reason(ws: trio_websocket.WebSocketConnection) -> trio_websocket.CloseReason:
    """Read until the server closes; return its close code and reason."""
    for _ in range(100):
        try:
            await ws.get_message()
        except trio_websocket.ConnectionClosed as exc:
            reason = exc.reason
            break
    else:  # pragma: no cover
        raise AssertionError("the server did not close")
    assert reason is not None
    return reason


async def _read_event(stream: trio.SocketStream, ws: WSConnection, kind: type) -> Any:
    for _ in range(100):
        for event in ws.events():
            if isinstance(event, kind):
                return event
        data = await stream.receive_some(65536)
        assert data, "the other side hung up"
        ws.receive_data(data)
    raise AssertionError(f"no {kind.__name__}")  # pragma: no cover


@asynccontextmanager
async def silent_client(url: str, first: bytes) -> AsyncIterator[trio.SocketStream]:
    """A peer that opens a WebSocket by hand, sends `first`, reads one reply, then goes silent.

    It never answers a WebSocket ping nor an envelope ping: for the server it is
    a dead peer whose socket stays open.
    """
    parts = urlsplit(url)
    assert parts.port is not None
    stream = await trio.open_tcp_stream("127.0.0.1", parts.port)
    async with stream:
        ws = WSConnection(ConnectionType.CLIENT)
        await stream.send_all(ws.send(Request(host=parts.netloc, target=parts.path)))
        await _read_event(stream, ws, AcceptConnection)
        await stream.send_all(ws.send(TextMessage(first.decode())))
        await _read_event(stream, ws, TextMessage)
        yield stream


@asynccontextmanager
async def tcp_server(
    handler: Callable[[trio.SocketStream], Awaitable[None]],
) -> AsyncIterator[int]:
    """Serve `handler` on 127.0.0.1, port 0, for the block; yield the port."""
    async with open_service_nursery() as nursery:
        listeners = await nursery.start(
            functools.partial(trio.serve_tcp, handler, 0, host="127.0.0.1")
        )
        yield listeners[0].socket.getsockname()[1]
        nursery.cancel_scope.cancel()


def silent_server(welcome: bytes) -> Callable[[trio.SocketStream], Awaitable[None]]:
    """A WebSocket server by hand: accepts, answers the hello, then never reads again."""

    async def handler(stream: trio.SocketStream) -> None:
        ws = WSConnection(ConnectionType.SERVER)
        await _read_event(stream, ws, Request)
        await stream.send_all(ws.send(AcceptConnection()))
        await _read_event(stream, ws, TextMessage)
        await stream.send_all(ws.send(TextMessage(welcome.decode())))
        await trio.sleep_forever()  # silence: no reads, no pongs

    return handler


# ---------------------------------------------------------------------------
# 1. Message size


@pytest.mark.parametrize("size", [1001, 1500])
async def test_frame_over_the_server_limit_closes_with_1009_and_a_reason(
    variant: str, size: int
) -> None:
    manager, _ = make_manager()
    with trio.fail_after(TIMEOUT):
        async with served(variant, manager, max_message_size=1000) as url, raw(url) as ws:
            overhead = len(call(1, "length", [""]))
            frame = call(1, "length", ["x" * (size - overhead)])
            assert len(frame) == size
            await ws.send_message(frame)
            reason = await closed_reason(ws)
    assert reason.code == 1009
    assert reason.reason
    assert "1000" in reason.reason


async def test_frame_far_over_the_server_limit_closes_with_1009(variant: str) -> None:
    manager, _ = make_manager()
    with trio.fail_after(TIMEOUT):
        async with served(variant, manager, max_message_size=1000) as url, raw(url) as ws:
            await ws.send_message("x" * 5000)
            reason = await closed_reason(ws)
    assert reason.code == 1009
    if variant == "trio-websocket":
        assert reason.reason
        assert "1000" in reason.reason
    else:
        # Past twice the limit, hypercorn closes before the app sees the frame,
        # and gives no reason (docs/websocket.md says so).
        assert reason.reason is None


async def test_call_over_the_server_limit_fails_with_connection_closed_1009(variant: str) -> None:
    manager, _ = make_manager()
    with trio.fail_after(TIMEOUT):
        async with (
            served(variant, manager, max_message_size=1000) as url,
            websocket.connect(url, interfaces=[Wire], max_message_size=100_000) as backend,
        ):
            client = backend.get_client(Wire)
            assert await client.length("x" * 500) == 500
            with pytest.raises(ConnectionClosed) as caught:
                await client.length("x" * 1500)
    assert caught.value.close_code == 1009
    assert caught.value.reason is not None
    assert "1000" in caught.value.reason


async def test_client_refuses_to_send_over_its_own_limit_and_stays_usable(variant: str) -> None:
    manager, _ = make_manager()
    with trio.fail_after(TIMEOUT):
        async with (
            served(variant, manager) as url,
            websocket.connect(url, interfaces=[Wire], max_message_size=1000) as backend,
        ):
            client = backend.get_client(Wire)
            with pytest.raises(PayloadTooLarge, match="1000"):
                await client.length("x" * 2000)
            assert await client.length("abc") == 3
            assert not backend.is_closed


# ---------------------------------------------------------------------------
# 2. Calls in flight


async def test_call_over_max_in_flight_is_refused_with_too_many_requests(variant: str) -> None:
    probe = Probe()
    manager, impl = make_manager(probe)
    with trio.fail_after(TIMEOUT):
        async with served(variant, manager, max_in_flight=2) as url, raw(url) as ws:
            for i, key in enumerate("abc", start=1):
                await ws.send_message(call(i, "hold", [key]))
            refused = await reply(ws)
            assert refused["t"] == "error"
            assert refused["id"] == 3
            assert refused["error"]["code"] == "too-many-requests"
            assert refused["error"]["status"] == 429
            assert "2 calls in flight" in refused["error"]["message"]
            assert not probe.is_set("started:c")
            assert impl.running == 2
            impl.release.set()
            replies = [await reply(ws), await reply(ws)]
            assert sorted((r["id"], r["value"]) for r in replies) == [(1, "a"), (2, "b")]
            # Room again: the next call runs.
            await ws.send_message(call(4, "hold", ["d"]))
            assert await reply(ws) == {"t": "result", "id": 4, "value": "d"}


async def test_client_with_max_in_flight_waits_for_room_instead_of_being_refused(
    variant: str,
) -> None:
    probe = Probe()
    manager, impl = make_manager(probe)
    results: dict[str, str] = {}

    async def one(client: Wire, key: str) -> None:
        results[key] = await client.hold(key)

    with trio.fail_after(TIMEOUT):
        async with (
            served(variant, manager, max_in_flight=2) as url,
            websocket.connect(url, interfaces=[Wire], max_in_flight=2) as backend,
        ):
            client = backend.get_client(Wire)
            async with trio.open_nursery() as nursery:
                for key in "abcde":
                    nursery.start_soon(one, client, key)
                await probe.wait("running:2")
                await trio.testing.wait_all_tasks_blocked()
                assert impl.running == 2
                impl.release.set()
    assert results == {key: key for key in "abcde"}
    assert impl.most == 2


# ---------------------------------------------------------------------------
# 3. Origin allow-list


async def test_handshake_from_another_origin_is_refused_with_403(variant: str) -> None:
    manager, _ = make_manager()
    with trio.fail_after(TIMEOUT):
        async with served(variant, manager, allowed_origins={"https://app.example"}) as url:
            with pytest.raises(ConnectError) as caught:
                async with websocket.connect(
                    url, interfaces=[Wire], headers={"Origin": "https://evil.example"}
                ):
                    pass  # pragma: no cover - the handshake is refused
            async with websocket.connect(
                url, interfaces=[Wire], headers={"Origin": "https://app.example"}
            ) as backend:
                assert await backend.get_client(Wire).length("ok") == 2
            async with websocket.connect(url, interfaces=[Wire]) as backend:
                assert await backend.get_client(Wire).length("no origin") == 9
    assert caught.value.status_code == 403
    assert "https://evil.example" in caught.value.message
    assert "allowed origins" in caught.value.message
    assert caught.value.details["error"]["code"] == "forbidden"


@pytest.mark.parametrize(
    ("origins", "error"),
    [
        ("https://app.example", TypeError),
        ({"https://app.example/"}, ValueError),
        ({"app.example"}, ValueError),
        ({""}, ValueError),
    ],
)
def test_bad_allowed_origins_are_refused(origins: Any, error: type[Exception]) -> None:
    with pytest.raises(error, match="allowed_origins"):
        websocket.WebSocketSettings(allowed_origins=origins)


async def test_serve_refuses_bad_allowed_origins_before_listening() -> None:
    with trio.fail_after(TIMEOUT), pytest.raises(TypeError, match="allowed_origins"):
        await websocket.serve(RpcManager(), allowed_origins="https://app.example")


# ---------------------------------------------------------------------------
# 4. Authorization at the handshake


async def test_authorize_returning_false_refuses_with_401_and_the_servers_words(
    variant: str,
) -> None:
    manager, _ = make_manager()

    async def authorize(handshake: websocket.Handshake) -> bool:
        return False

    with trio.fail_after(TIMEOUT):
        async with served(variant, manager, authorize=authorize) as url:
            with pytest.raises(ConnectError) as caught:
                async with websocket.connect(url, interfaces=[Wire], authorization="Bearer x"):
                    pass  # pragma: no cover - the handshake is refused
    assert caught.value.status_code == 401
    assert caught.value.reason == "the WebSocket handshake was refused by the authorization hook"
    assert caught.value.reason in caught.value.message
    assert caught.value.details["error"]["code"] == "unauthorized"


async def test_authorize_raising_unauthorized_refuses_with_its_words(variant: str) -> None:
    manager, _ = make_manager()

    async def authorize(handshake: websocket.Handshake) -> bool:
        raise Unauthorized("custom words: token expired")

    with trio.fail_after(TIMEOUT):
        async with served(variant, manager, authorize=authorize) as url:
            with pytest.raises(ConnectError) as caught:
                async with websocket.connect(url, interfaces=[Wire]):
                    pass  # pragma: no cover - the handshake is refused
    assert caught.value.status_code == 401
    assert caught.value.reason == "custom words: token expired"


async def test_authorize_sees_the_handshake_and_true_lets_it_in(variant: str) -> None:
    manager, _ = make_manager()
    seen: list[websocket.Handshake] = []

    async def authorize(handshake: websocket.Handshake) -> bool:
        seen.append(handshake)
        return handshake.authorization == "Bearer s3cret"

    with trio.fail_after(TIMEOUT):
        async with served(variant, manager, authorize=authorize) as url:
            async with websocket.connect(
                url, interfaces=[Wire], authorization="Bearer s3cret", headers={"X-Extra": "1"}
            ) as backend:
                assert await backend.get_client(Wire).length("in") == 2
            with pytest.raises(ConnectError) as caught:
                async with websocket.connect(url, interfaces=[Wire], authorization="Bearer no"):
                    pass  # pragma: no cover - the handshake is refused
    assert caught.value.status_code == 401
    assert len(seen) == 2
    first = seen[0]
    assert first.authorization == "Bearer s3cret"
    assert first.path == urlsplit(url).path
    assert first.headers["x-extra"] == "1"
    assert first.origin is None
    assert first.remote is not None
    assert first.remote.startswith("127.0.0.1:")


# ---------------------------------------------------------------------------
# 5. Connection limit


async def test_connection_over_max_connections_is_503_until_one_closes(variant: str) -> None:
    manager, _ = make_manager()
    with trio.fail_after(TIMEOUT):
        async with served(variant, manager, max_connections=1) as url:
            async with websocket.connect(url, interfaces=[Wire]) as first:
                with pytest.raises(ConnectError) as caught:
                    async with websocket.connect(url, interfaces=[Wire]):
                        pass  # pragma: no cover - refused while the first is open
                assert await first.get_client(Wire).length("still") == 5
            # The server frees the place once it notices the close.
            refusals: list[int | None] = []
            for _ in range(50):
                try:
                    async with websocket.connect(url, interfaces=[Wire]) as second:
                        assert await second.get_client(Wire).length("again") == 5
                    break
                except ConnectError as exc:
                    refusals.append(exc.status_code)
                    await trio.testing.wait_all_tasks_blocked(0.01)
            else:  # pragma: no cover
                raise AssertionError("the place was never freed")
    assert set(refusals) <= {503}
    assert caught.value.status_code == 503
    assert "1 WebSocket connections" in caught.value.message
    # The body says what the status says: a full server is `unavailable`, as
    # http.serve's max_connections answers (429 is for one client's own excess).
    error = caught.value.details["error"]
    assert (error["code"], error["status"]) == ("unavailable", 503)


# ---------------------------------------------------------------------------
# 6. Keepalive


async def test_server_tears_down_the_session_of_a_peer_that_never_answers_pings(
    variant: str,
) -> None:
    backend = make_backend_ipc()
    with trio.fail_after(5):
        async with (
            served(variant, None, backend, ping_interval=0.2, ping_timeout=0.3) as url,
            silent_client(url, IPC_HELLO),
        ):
            (session,) = backend.sessions
            # A ping after 0.2 s, unanswered 0.3 s later: 3 s is ample.
            with trio.move_on_after(3):
                await session.wait_closed()
            assert not session.is_open, "the session of a dead peer was never torn down"
            assert backend.sessions == ()
    reason = session.closed_reason
    assert reason is not None
    assert "ping" in reason
    assert "0.3" in reason


async def test_client_fails_pending_call_with_1011_when_the_server_never_answers_pings() -> None:
    manager, _ = make_manager()
    welcome = encode(Welcome(PROTOCOL_VERSION, "fake-session", interfaces=manager.describe()))
    with trio.fail_after(5):
        async with (
            tcp_server(silent_server(welcome)) as port,
            websocket.connect(
                f"ws://127.0.0.1:{port}/",
                interfaces=[Wire],
                ping_interval=0.2,
                ping_timeout=0.3,
            ) as backend,
        ):
            with pytest.raises(ConnectionClosed) as caught:
                await backend.get_client(Wire).length("never answered")
    assert caught.value.close_code == 1011
    assert caught.value.reason is not None
    assert "ping" in caught.value.reason


class _PingWatch:
    """Counts the server's pings to a client; notes any close."""

    def __init__(self, wanted: int) -> None:
        self.wanted = wanted
        self.pings = 0
        self.closes: list[str] = []
        self.done = trio.Event()

    def ping(self) -> None:
        self.pings += 1
        if self.pings >= self.wanted:
            self.done.set()

    def close(self, what: str) -> None:
        self.closes.append(what)
        self.done.set()


class _TrioWebSocketLog(logging.Handler):
    """trio-websocket logs each ping its client answers, and each close it gets."""

    def __init__(self, watch: _PingWatch) -> None:
        super().__init__(logging.DEBUG)
        self.watch = watch

    def emit(self, record: logging.LogRecord) -> None:
        text = record.getMessage()
        if not text.startswith("client-"):
            return
        if " ping " in text:
            self.watch.ping()
        elif "CloseConnection" in text:
            self.watch.close(text)


@asynccontextmanager
async def watched_server(
    variant: str,
    manager: RpcManager | None,
    ipc: BackendIpc | None,
    watch: _PingWatch,
    **settings: Any,
) -> AsyncIterator[str]:
    """Serve like `served`, counting the server's pings as they happen."""
    if variant == "trio-websocket":
        logger = logging.getLogger("trio-websocket")
        handler = _TrioWebSocketLog(watch)
        level = logger.level
        logger.setLevel(logging.DEBUG)
        logger.addHandler(handler)
        try:
            async with served(variant, manager, ipc, **settings) as url:
                yield url
        finally:
            logger.removeHandler(handler)
            logger.setLevel(level)
        return
    # hypercorn: the app pings inside the envelope; watch what it sends, as
    # http.serve configures it.
    app = HttpApp(manager, ipc=ipc, websocket=websocket.WebSocketSettings(**settings))

    async def watching(scope: Any, receive: Any, send: Any) -> None:
        async def send_watched(event: Any) -> None:
            if event["type"] == "websocket.send" and event.get("text", "").startswith(
                '{"t":"ping"'
            ):
                watch.ping()
            elif event["type"] == "websocket.close":
                watch.close(repr(event))
            await send(event)

        await app(scope, receive, send_watched)

    config = hypercorn.config.Config()
    config.bind = ["127.0.0.1:0"]
    config.accesslog = None
    config.websocket_ping_interval = None
    config.websocket_max_message_size = 2 * app.websocket.max_message_size
    async with open_service_nursery() as nursery:
        binds = await nursery.start(functools.partial(hypercorn.trio.serve, watching, config))
        yield binds[0].replace("http://", "ws://", 1) + "/rpc/ws"
        nursery.cancel_scope.cancel()


async def test_idle_rpc_connection_answers_pings_and_stays_up(variant: str) -> None:
    manager, _ = make_manager()
    watch = _PingWatch(wanted=4)
    with trio.fail_after(TIMEOUT):
        async with (
            watched_server(
                variant, manager, None, watch, ping_interval=0.2, ping_timeout=0.3
            ) as url,
            websocket.connect(
                url, interfaces=[Wire], ping_interval=0.2, ping_timeout=0.3
            ) as backend,
        ):
            # Idle: no call is waiting while the server pings.
            await watch.done.wait()
            assert watch.closes == []
            assert watch.pings >= 4
            assert await backend.get_client(Wire).length("alive") == 5


async def test_idle_ipc_session_answers_pings_and_stays_up(variant: str) -> None:
    backend = make_backend_ipc()
    watch = _PingWatch(wanted=4)
    with trio.fail_after(TIMEOUT):
        async with (
            watched_server(
                variant, None, backend, watch, ping_interval=0.2, ping_timeout=0.3
            ) as url,
            websocket.connect_ipc(
                url, channels=[ConformanceIpc], ping_interval=0.2, ping_timeout=0.3
            ) as frontend,
        ):
            await watch.done.wait()
            assert watch.closes == []
            assert frontend.is_valid
            assert await frontend.proxy(ConformanceIpc).add(2, 3) == 5


async def test_raw_client_answering_envelope_pings_stays_up_on_hypercorn() -> None:
    # The envelope ping, as docs/websocket.md tells other clients to answer it.
    manager, _ = make_manager()
    with trio.fail_after(TIMEOUT):
        async with (
            served("hypercorn", manager, ping_interval=0.2, ping_timeout=0.3) as url,
            raw(url) as ws,
        ):
            ids = []
            for _ in range(4):
                message = json.loads(await ws.get_message())
                assert message["t"] == "ping"
                ids.append(message["id"])
                await ws.send_message(json.dumps({"t": "pong", "id": message["id"]}))
            await ws.send_message(call(1, "length", ["alive"]))
            assert await reply(ws) == {"t": "result", "id": 1, "value": 5}
    assert ids == [1, 2, 3, 4]


# ---------------------------------------------------------------------------
# 7. Close reasons and connect errors


async def test_server_shutdown_closes_clients_with_1001_and_a_reason(variant: str) -> None:
    probe = Probe()
    manager, _ = make_manager(probe)
    with trio.fail_after(TIMEOUT):
        async with (
            serving(variant, manager) as server,
            websocket.connect(server.url, interfaces=[Wire]) as backend,
        ):
            client = backend.get_client(Wire)

            async def stop() -> None:
                await probe.wait("started:k")
                server.scope.cancel()

            async with trio.open_nursery() as nursery:
                nursery.start_soon(stop)
                with pytest.raises(ConnectionClosed) as caught:
                    await client.hold("k")
            assert probe.is_set("cancelled:k")
    assert caught.value.close_code == 1001
    assert caught.value.reason == "the server is shutting down"


async def test_server_shutdown_does_not_wait_out_the_close_timeout_of_a_live_client(
    variant: str,
) -> None:
    # The client answers the close frame at once; the server has no reason to
    # wait the 5 s it allows a peer that does not.
    manager, _ = make_manager()
    with trio.fail_after(TIMEOUT):
        async with (
            serving(variant, manager) as server,
            websocket.connect(server.url, interfaces=[Wire]) as backend,
        ):
            assert await backend.get_client(Wire).length("up") == 2
            server.scope.cancel()
            with trio.fail_after(2):
                await server.stopped.wait()


async def test_server_shutdown_ends_ipc_sessions_with_the_reason(variant: str) -> None:
    backend = make_backend_ipc()
    with trio.fail_after(TIMEOUT):
        async with (
            serving(variant, None, backend) as server,
            websocket.connect_ipc(server.url, channels=[ConformanceIpc]) as frontend,
        ):
            assert await frontend.proxy(ConformanceIpc).add(1, 1) == 2
            server.scope.cancel()
            reason = await frontend.wait_closed()
    assert reason == "the server is shutting down"
    assert frontend.closed_reason == "the server is shutting down"


async def test_backend_closing_an_ipc_session_sends_its_reason(variant: str) -> None:
    backend = make_backend_ipc()
    with trio.fail_after(TIMEOUT):
        async with (
            served(variant, None, backend) as url,
            websocket.connect_ipc(url, channels=[ConformanceIpc]) as frontend,
        ):
            (session,) = backend.sessions
            session.close("bye now")
            assert await frontend.wait_closed() == "bye now"
            with pytest.raises(ConnectionClosed) as caught:
                await frontend.proxy(ConformanceIpc).add(1, 2)
    assert frontend.closed_reason == "bye now"
    assert caught.value.reason == "bye now"


async def test_connect_to_a_closed_port_is_connect_error() -> None:
    with trio.socket.socket() as sock:
        await sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    with trio.fail_after(TIMEOUT):
        with pytest.raises(ConnectError) as caught:
            async with websocket.connect(f"ws://127.0.0.1:{port}/", interfaces=[Wire]):
                pass  # pragma: no cover - nothing listens
        with pytest.raises(ConnectError):
            async with websocket.connect_ipc(f"ws://127.0.0.1:{port}/"):
                pass  # pragma: no cover - nothing listens
    assert not isinstance(caught.value, OSError)
    assert str(port) in caught.value.message


async def _plain_http(stream: trio.SocketStream) -> None:
    """An HTTP server that knows nothing of WebSocket: 404 to everything."""
    request = b""
    for _ in range(100):
        data = await stream.receive_some(65536)
        if not data:
            return
        request += data
        if b"\r\n\r\n" in request:
            break
    body = b"no sockets here"
    await stream.send_all(
        b"HTTP/1.1 404 Not Found\r\nContent-Type: text/plain\r\n"
        b"Content-Length: %d\r\nConnection: close\r\n\r\n%s" % (len(body), body)
    )


async def test_server_that_refuses_the_upgrade_is_connect_error_with_its_status() -> None:
    with trio.fail_after(TIMEOUT):
        async with tcp_server(_plain_http) as port:
            with pytest.raises(ConnectError) as caught:
                async with websocket.connect(f"ws://127.0.0.1:{port}/x", interfaces=[Wire]):
                    pass  # pragma: no cover - refused
    assert caught.value.status_code == 404
    assert "no sockets here" in caught.value.message


async def test_server_that_hangs_up_during_the_handshake_is_connect_error() -> None:
    async def hang_up(stream: trio.SocketStream) -> None:
        await stream.receive_some(65536)
        await stream.aclose()

    with trio.fail_after(TIMEOUT):
        async with tcp_server(hang_up) as port:
            with pytest.raises(ConnectError):
                async with websocket.connect(
                    f"ws://127.0.0.1:{port}/", interfaces=[Wire], connect_timeout=1
                ):
                    pass  # pragma: no cover - no handshake


@pytest.mark.parametrize(
    "url",
    ["http://127.0.0.1:1/", "ws://", "not a url", "ws://127.0.0.1:99999/", "ws:///path", ""],
)
async def test_garbage_url_is_value_error(url: str) -> None:
    with trio.fail_after(TIMEOUT):
        with pytest.raises(ValueError, match="ws://"):
            async with websocket.connect(url, interfaces=[Wire]):
                pass  # pragma: no cover - refused before connecting
        with pytest.raises(ValueError, match="ws://"):
            async with websocket.connect_ipc(url):
                pass  # pragma: no cover - refused before connecting


async def test_url_that_is_not_a_str_is_type_error() -> None:
    with trio.fail_after(TIMEOUT), pytest.raises(TypeError, match="url"):
        async with websocket.connect(b"ws://127.0.0.1:1/", interfaces=[Wire]):  # type: ignore[arg-type]
            pass  # pragma: no cover - refused before connecting


# ---------------------------------------------------------------------------
# 8. Malformed frames


@pytest.mark.parametrize(
    ("frame", "words"),
    [
        ("this is not json", "JSON"),
        ("[1, 2, 3]", "JSON object"),
        ('{"t": "nope", "id": 5}', "unknown message type"),
        ('{"t": "welcome", "protocol": 1, "session_id": "x"}', "Welcome"),
        (call(6, "length", [42]), "text"),
        (call(7, "nope", []), "nope"),
        ('{"t": "call", "id": "eight"}', "id"),
    ],
)
async def test_malformed_frame_gets_an_error_and_the_session_goes_on(
    variant: str, frame: str, words: str
) -> None:
    manager, _ = make_manager()
    with trio.fail_after(TIMEOUT):
        async with served(variant, manager) as url, raw(url) as ws:
            await ws.send_message(frame)
            error = await reply(ws)
            await ws.send_message(call(100, "length", ["still fine"]))
            after = await reply(ws)
    assert error["t"] == "error"
    assert error["error"]["code"] in ("bad-request", "not-found")
    assert words in error["error"]["message"]
    assert after == {"t": "result", "id": 100, "value": 10}


async def test_call_with_wrong_argument_types_is_bad_request_for_that_id(variant: str) -> None:
    manager, _ = make_manager()
    with trio.fail_after(TIMEOUT):
        async with served(variant, manager) as url, raw(url) as ws:
            await ws.send_message(call(6, "length", [42]))
            error = await reply(ws)
    assert error["id"] == 6
    assert error["error"]["code"] == "bad-request"
    assert error["error"]["status"] == 400


async def test_binary_frame_carrying_json_is_served(variant: str) -> None:
    manager, _ = make_manager()
    with trio.fail_after(TIMEOUT):
        async with served(variant, manager) as url, raw(url, hello=RPC_HELLO.encode()) as ws:
            await ws.send_message(call(1, "length", ["binary"]).encode())
            assert await reply(ws) == {"t": "result", "id": 1, "value": 6}


async def test_first_message_that_is_not_hello_gets_an_error_and_a_close(variant: str) -> None:
    manager, _ = make_manager()
    with trio.fail_after(TIMEOUT):
        async with served(variant, manager) as url, raw(url, hello=None) as ws:
            await ws.send_message(call(1, "length", ["too early"]))
            error = await reply(ws)
            closed = await closed_reason(ws)
    assert error["t"] == "error"
    assert error["error"]["code"] == "bad-request"
    assert "expected 'hello' first" in error["error"]["message"]
    assert closed.code in (1000, 1008)


async def test_client_that_never_says_hello_is_closed_with_1008(variant: str) -> None:
    manager, _ = make_manager()
    with trio.fail_after(5):
        async with (
            served(variant, manager, handshake_timeout=0.3) as url,
            raw(url, hello=None) as ws,
        ):
            closed = await closed_reason(ws)
    assert closed.code == 1008
    assert closed.reason == "no hello within 0.3 s of opening"


# ---------------------------------------------------------------------------
# 9. Cancellation and deadlines over the wire


async def test_cancelling_one_call_cancels_its_impl_and_not_the_other(variant: str) -> None:
    probe = Probe()
    manager, impl = make_manager(probe)
    with trio.fail_after(TIMEOUT):
        async with (
            served(variant, manager) as url,
            websocket.connect(url, interfaces=[Wire, ConformanceInterface]) as backend,
        ):
            wire = backend.get_client(Wire)
            conformance = backend.get_client(ConformanceInterface)
            other: list[str] = []

            async def hold() -> None:
                other.append(await wire.hold("b"))

            async with trio.open_nursery() as nursery:
                nursery.start_soon(hold)
                await probe.wait("started:b")
                async with trio.open_nursery() as calls:
                    calls.start_soon(conformance.wait_until_cancelled, "a")
                    await probe.wait("started:a")
                    calls.cancel_scope.cancel()
                await probe.wait("cancelled:a")
                assert not probe.is_set("cancelled:b")
                impl.release.set()
            assert other == ["b"]


async def test_caller_deadline_reaches_the_impl_as_its_deadline(variant: str) -> None:
    probe = Probe()
    manager, _ = make_manager(probe)
    with trio.fail_after(TIMEOUT):
        async with (
            served(variant, manager) as url,
            websocket.connect(url, interfaces=[ConformanceInterface]) as backend,
        ):
            with trio.move_on_after(0.2) as scope:
                await backend.get_client(ConformanceInterface).wait_until_cancelled("t")
            await probe.wait("finally:t")
    assert scope.cancelled_caught
    seen = probe.value("started:t")
    assert seen.seconds_left is not None
    assert 0 < seen.seconds_left <= 0.2
    assert probe.is_set("cancelled:t")


async def test_timeout_ms_alone_cancels_the_impl_and_answers_deadline_exceeded(
    variant: str,
) -> None:
    probe = Probe()
    manager, _ = make_manager(probe)
    with trio.fail_after(TIMEOUT):
        async with served(variant, manager) as url, raw(url) as ws:
            await ws.send_message(
                call(
                    1,
                    "wait_until_cancelled",
                    ["d"],
                    iface=ConformanceInterface.interface_name,
                    ver=ConformanceInterface.interface_version,
                    timeout_ms=100,
                )
            )
            error = await reply(ws)
    assert error["id"] == 1
    assert error["error"]["code"] == "deadline-exceeded"
    assert error["error"]["status"] == 504
    assert probe.is_set("cancelled:d")


# ---------------------------------------------------------------------------
# 10. One endpoint for RPC and IPC; paths


async def test_one_endpoint_serves_rpc_and_ipc(variant: str) -> None:
    manager, _ = make_manager()
    backend = make_backend_ipc()
    with trio.fail_after(TIMEOUT):
        async with (
            served(variant, manager, backend) as url,
            websocket.connect(url, interfaces=[Wire]) as rpc,
            websocket.connect_ipc(url, channels=[ConformanceIpc]) as ipc,
        ):
            assert await rpc.get_client(Wire).length("rpc") == 3
            assert await ipc.proxy(ConformanceIpc).add(20, 22) == 42
            assert len(backend.sessions) == 1


async def test_ipc_only_endpoint_refuses_an_rpc_hello_with_a_clear_error(variant: str) -> None:
    backend = make_backend_ipc()
    with trio.fail_after(TIMEOUT):
        async with served(variant, None, backend) as url:
            with pytest.raises(InvalidRequest, match="serves IPC sessions"):
                async with websocket.connect(url, interfaces=[]):
                    pass  # pragma: no cover - refused


async def test_wrong_path_on_hypercorn_is_404() -> None:
    manager, _ = make_manager()
    with trio.fail_after(TIMEOUT):
        async with served("hypercorn", manager) as url:
            with pytest.raises(ConnectError) as caught:
                async with websocket.connect(url.replace("/rpc/ws", "/rpc/nope"), interfaces=[]):
                    pass  # pragma: no cover - refused
    assert caught.value.status_code == 404
    assert "/rpc/ws" in caught.value.message
