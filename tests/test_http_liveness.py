# mypy: disable-error-code="empty-body"
"""HTTP connections that go silent are given up within a documented bound, on both sides.

A black-holed connection sends no FIN and no RST: nothing tells either side
that the other is gone. Each test here puts a black-hole proxy between the
real hypercorn server and tether's client; it forwards until told to stop,
then keeps both sockets open and forwards nothing (and reads nothing, so the
senders' buffers fill as they would with no ACKs coming back).

RPC: a call without a deadline of its own carries the connection's
`read_timeout` as its `X-Timeout-Ms`, so the server cancels the impl when it
passes, and the client gives up a short grace later. IPC: the server pings on
the event stream and ends a session whose frontend does not answer; the
client ends a session from which nothing (no event, no ping) comes.
"""

from __future__ import annotations

import functools
import json
import math
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import attrs
import httpx
import pytest
import trio

import tether
from tether.runtime import ConnectionClosed
from tether.runtime._protocol import Hello, encode
from tether.runtime._util import open_service_nursery
from tether.testing import ConformanceInterface, Probe, RpcConformance
from tether.transports import http

#: Every POST to tether's server says it is JSON (cross-site form posts are refused).
JSON_TYPE = {"Content-Type": "application/json"}

TIMEOUT = 10.0
#: How late, past its bound, a side may notice under a loaded machine.
SLACK = 1.5


class BlackHoleProxy:
    """A TCP proxy on 127.0.0.1 that can turn into a black hole.

    Until `black_hole()` it forwards both ways; from then on it forwards and
    reads nothing, on the connections it has and on those it accepts later,
    and closes none of them until the block that runs it ends.
    """

    def __init__(self, upstream_port: int) -> None:
        self.upstream_port = upstream_port
        self.port = 0
        self.forwarding: list[trio.CancelScope] = []
        self.holes = False
        self.sockets: list[trio.SocketStream] = []

    def black_hole(self) -> None:
        self.holes = True
        for scope in self.forwarding:
            scope.cancel()

    async def run(self, task_status: trio.TaskStatus[int]) -> None:
        [listener] = await trio.open_tcp_listeners(0, host="127.0.0.1")
        self.port = listener.socket.getsockname()[1]
        try:
            async with trio.open_nursery() as nursery:
                task_status.started(self.port)
                while True:
                    client = await listener.accept()
                    self.sockets.append(client)
                    if self.holes:
                        continue  # accepted, and never served
                    upstream = await trio.open_tcp_stream("127.0.0.1", self.upstream_port)
                    self.sockets.append(upstream)
                    nursery.start_soon(self._forward, client, upstream)
                    nursery.start_soon(self._forward, upstream, client)
        finally:
            with trio.CancelScope(shield=True):
                await listener.aclose()
                for sock in self.sockets:
                    await trio.aclose_forcefully(sock)

    async def _forward(self, source: trio.SocketStream, sink: trio.SocketStream) -> None:
        with trio.CancelScope() as scope:
            self.forwarding.append(scope)
            if self.holes:
                scope.cancel()
            try:
                while data := await source.receive_some(65536):
                    await sink.send_all(data)
                await sink.send_eof()
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                pass


@asynccontextmanager
async def proxied(url: str) -> AsyncIterator[tuple[str, BlackHoleProxy]]:
    """A black-hole proxy in front of the server at `url`; yields the URL through it."""
    origin, _, path = url.removeprefix("http://").partition("/")
    proxy = BlackHoleProxy(int(origin.rpartition(":")[2]))
    async with open_service_nursery() as nursery:
        port = await nursery.start(proxy.run)
        yield f"http://127.0.0.1:{port}/{path}", proxy
        nursery.cancel_scope.cancel()


@asynccontextmanager
async def served(manager: tether.RpcManager | None, **options: Any) -> AsyncIterator[str]:
    async with open_service_nursery() as nursery:
        url = await nursery.start(functools.partial(http.serve, manager, "127.0.0.1", 0, **options))
        yield url
        nursery.cancel_scope.cancel()


@asynccontextmanager
async def no_deadline(cap: float = TIMEOUT) -> AsyncIterator[None]:
    """Run the block with no deadline a call could see, yet cap it at `cap` seconds.

    The test's own `fail_after` would be the deadline of every call made in it
    (sent as X-Timeout-Ms): here the cap is a watchdog that cancels the block.
    """
    async with open_service_nursery() as nursery:
        with trio.CancelScope(shield=True) as scope:

            async def watchdog() -> None:
                await trio.sleep(cap)
                scope.cancel()

            nursery.start_soon(watchdog)
            yield
        nursery.cancel_scope.cancel()
    if scope.cancelled_caught:
        raise trio.TooSlowError


# ---------------------------------------------------------------------------
# RPC


async def test_rpc_call_on_a_black_holed_connection_fails_within_the_bound() -> None:
    probe = Probe()
    read_timeout = 0.5
    raised: list[BaseException] = []
    with trio.fail_after(TIMEOUT):
        async with (
            served(RpcConformance().backend_manager(probe)) as url,
            proxied(url) as (through, proxy),
            http.connect(
                through, interfaces=[ConformanceInterface], read_timeout=read_timeout
            ) as backend,
        ):
            client = backend.get_client(ConformanceInterface)

            async def call() -> None:
                try:
                    await client.wait_until_cancelled("k")
                except ConnectionClosed as exc:
                    raised.append(exc)

            async with no_deadline(), trio.open_nursery() as nursery:
                started = trio.current_time()
                nursery.start_soon(call)
                await probe.wait("started:k")
                proxy.black_hole()
                # The server runs the impl under the call's X-Timeout-Ms.
                await probe.wait("finally:k")
                impl_ended = trio.current_time() - started
            failed = trio.current_time() - started
    assert probe.is_set("cancelled:k")
    assert impl_ended <= read_timeout + SLACK
    # The 504 went into the black hole: the client gave up on its own.
    [exc] = raised
    assert isinstance(exc, ConnectionClosed)
    assert exc.reason is not None
    assert "no answer" in exc.reason
    assert "read_timeout of 0.5 s" in str(exc)
    # It waits for the 504 a grace of min(read_timeout, 5 s) past read_timeout.
    assert failed <= 2 * read_timeout + SLACK


async def test_rpc_call_without_a_deadline_carries_the_read_timeout() -> None:
    with trio.fail_after(TIMEOUT):
        async with (
            served(RpcConformance().backend_manager()) as url,
            http.connect(url, interfaces=[ConformanceInterface], read_timeout=7.0) as limited,
            http.connect(url, interfaces=[ConformanceInterface], read_timeout=None) as unlimited,
            no_deadline(),
        ):
            bounded = await limited.get_client(ConformanceInterface).context()
            unbounded = await unlimited.get_client(ConformanceInterface).context()
            with trio.move_on_after(30):  # the caller's own deadline wins over read_timeout
                own = await limited.get_client(ConformanceInterface).context()
    assert bounded.seconds_left is not None
    assert 6.0 < bounded.seconds_left <= 7.0
    assert unbounded.seconds_left is None
    assert own.seconds_left is not None
    assert 20.0 < own.seconds_left <= 30.0


async def test_rpc_call_that_overruns_the_read_timeout_is_deadline_exceeded() -> None:
    probe = Probe()
    with trio.fail_after(TIMEOUT):
        async with (
            served(RpcConformance().backend_manager(probe)) as url,
            http.connect(url, interfaces=[ConformanceInterface], read_timeout=0.2) as backend,
        ):
            with pytest.raises(tether.DeadlineExceeded, match="read_timeout"):
                async with no_deadline():
                    await backend.get_client(ConformanceInterface).wait_until_cancelled("k")
    assert probe.is_set("finally:k")


async def test_connect_over_a_black_holed_connection_fails_within_read_timeout() -> None:
    with trio.fail_after(TIMEOUT):
        async with (
            served(RpcConformance().backend_manager()) as url,
            proxied(url) as (through, proxy),
        ):
            proxy.black_hole()
            started = trio.current_time()
            with pytest.raises(tether.ConnectError, match=r"within 0\.3 s"):
                async with http.connect(
                    through, interfaces=[ConformanceInterface], read_timeout=0.3
                ):
                    pytest.fail("connected through a black hole")
            waited = trio.current_time() - started
    assert waited <= 0.3 + SLACK


@pytest.mark.parametrize("value", [0, -1.0, math.nan, math.inf, "5"])
async def test_connect_refuses_a_read_timeout_that_is_not_a_positive_number(value: Any) -> None:
    with pytest.raises(ValueError, match="read_timeout"):
        async with http.connect(
            "http://127.0.0.1:1/rpc", interfaces=[ConformanceInterface], read_timeout=value
        ):
            pytest.fail("connected")


# ---------------------------------------------------------------------------
# IPC


@attrs.frozen
class Placement:
    x: float
    y: float


class EditorIpc(tether.IpcInterface):
    channel_name = "editor"
    version = "1.2.0"

    async def move(self, element_id: str, dx: float) -> Placement: ...


class Ended:
    """The reasons the backend's sessions ended, with the time of the first."""

    def __init__(self) -> None:
        self.reasons: list[str] = []
        self.event = trio.Event()
        self.at = math.inf


def editor_backend(ended: Ended) -> tether.BackendIpc:
    class EditorHandler(tether.IpcHandler, EditorIpc):
        async def move(self, element_id: str, dx: float) -> Placement:
            return Placement(dx, 0.0)

        def on_close(self, reason: str) -> None:
            ended.reasons.append(reason)
            ended.at = min(ended.at, trio.current_time())
            ended.event.set()

    backend = tether.BackendIpc()
    backend.register(EditorHandler)
    return backend


async def test_ipc_session_on_a_black_holed_connection_ends_on_both_sides_within_the_bound() -> (
    None
):
    interval, timeout = 0.2, 0.3
    ended = Ended()
    with trio.fail_after(TIMEOUT):
        async with (
            served(
                None,
                ipc=editor_backend(ended),
                ipc_ping_interval=interval,
                ipc_ping_timeout=timeout,
            ) as url,
            proxied(url) as (through, proxy),
            # Without resuming: the bound on noticing the silence is pinned here
            # (a resume would then try for the grace period, test_http_ipc_resume).
            http.connect_ipc(through, channels=[EditorIpc], retry=None) as frontend,
        ):
            assert await frontend.proxy(EditorIpc).move("e1", 1.0) == Placement(1.0, 0.0)
            proxy.black_hole()
            silent_since = trio.current_time()
            reason = await frontend.wait_closed()
            frontend_ended = trio.current_time() - silent_since
            await ended.event.wait()
            backend_ended = ended.at - silent_since
    # The frontend: nothing came for interval + timeout (then 1 s at most to say goodbye).
    assert reason == "nothing came from the backend for 0.5 s (no event, no ping)"
    assert frontend_ended <= interval + timeout + 1.0 + SLACK
    # The backend: its ping went unanswered.
    assert ended.reasons == ["no answer to a ping within 0.3 s"]
    assert backend_ended <= interval + timeout + SLACK


async def test_ipc_session_whose_frontend_answers_pings_outlives_many_intervals() -> None:
    ended = Ended()
    with trio.fail_after(TIMEOUT):
        async with (
            served(
                None, ipc=editor_backend(ended), ipc_ping_interval=0.05, ipc_ping_timeout=0.1
            ) as url,
            http.connect_ipc(url, channels=[EditorIpc]) as frontend,
        ):
            # Time must pass here: ten ping intervals, each ping answered.
            await trio.sleep(0.5)
            assert await frontend.proxy(EditorIpc).move("e1", 2.0) == Placement(2.0, 0.0)
            assert frontend.closed_reason is None
        await ended.event.wait()
    assert ended.reasons == ["the frontend left"]


HELLO = encode(Hello(1, channels={"editor": "1.2.0"}, mode="ipc"))


class EventStream:
    """A Server-Sent Events response read by a background task: (event type, data) pairs.

    The task is cancelled when the block ends, which unwinds httpx's async
    generators (left to the garbage collector, they would warn).
    """

    def __init__(self, response: httpx.Response) -> None:
        self.response = response
        self._send, self._receive = trio.open_memory_channel[tuple[str, Any]](math.inf)

    async def pump(self) -> None:
        fields: dict[str, str] = {}
        async with self._send:
            async for line in self.response.aiter_lines():
                if line.startswith(":"):
                    continue  # a comment
                if line:
                    name, _, value = line.partition(":")
                    fields[name] = value.removeprefix(" ")
                    continue
                if "data" in fields:
                    event = (fields.get("event", "message"), json.loads(fields["data"]))
                    await self._send.send(event)
                fields = {}

    async def read(self, count: int) -> list[tuple[str, Any]]:
        return [await self._receive.receive() for _ in range(count)]


@asynccontextmanager
async def event_stream(
    client: httpx.AsyncClient, path: str, headers: dict[str, str]
) -> AsyncIterator[EventStream]:
    async with (
        client.stream("GET", path, headers=headers) as response,
        trio.open_nursery() as nursery,
    ):
        stream = EventStream(response)
        nursery.start_soon(stream.pump)
        yield stream
        nursery.cancel_scope.cancel()


async def test_ipc_event_stream_pings_and_a_client_that_never_answers_is_closed() -> None:
    ended = Ended()
    with trio.fail_after(TIMEOUT):
        async with (
            served(
                None, ipc=editor_backend(ended), ipc_ping_interval=0.2, ipc_ping_timeout=0.1
            ) as url,
            httpx.AsyncClient(base_url=url, headers=JSON_TYPE) as client,
        ):
            opened = (await client.post("/ipc", content=HELLO)).json()
            headers = {"X-Session-Token": opened["token"]}
            events = opened["events"].removeprefix("/rpc")
            async with event_stream(client, events, headers) as stream:
                received = await stream.read(2)
    assert opened["ping"] == {"interval_ms": 200, "timeout_ms": 100}
    assert received == [
        ("ping", {"t": "ping", "id": 1}),
        ("close", {"reason": "no answer to a ping within 0.1 s"}),
    ]
    assert ended.reasons == ["no answer to a ping within 0.1 s"]


async def test_ipc_event_stream_pong_posted_to_the_session_keeps_it_open() -> None:
    ended = Ended()
    with trio.fail_after(TIMEOUT):
        async with (
            served(
                None, ipc=editor_backend(ended), ipc_ping_interval=0.05, ipc_ping_timeout=0.2
            ) as url,
            httpx.AsyncClient(base_url=url, headers=JSON_TYPE) as client,
        ):
            opened = (await client.post("/ipc", content=HELLO)).json()
            headers = {"X-Session-Token": opened["token"]}
            session = f"/ipc/{opened['session_id']}"
            async with event_stream(client, f"{session}/events", headers) as stream:
                for _ in range(5):
                    [(kind, ping)] = await stream.read(1)
                    assert (kind, ping["t"]) == ("ping", "ping")
                    pong = json.dumps({"t": "pong", "id": ping["id"]})
                    answered = await client.post(session, content=pong, headers=headers)
                    assert answered.status_code == 202
                assert not ended.event.is_set()
            await client.delete(session, headers=headers)
        await ended.event.wait()
    assert ended.reasons == ["the frontend left"]


async def test_ipc_pings_can_be_turned_off_for_clients_that_cannot_answer() -> None:
    ended = Ended()
    with trio.fail_after(TIMEOUT):
        async with (
            served(None, ipc=editor_backend(ended), ipc_ping_interval=None) as url,
            httpx.AsyncClient(base_url=url, headers=JSON_TYPE) as client,
        ):
            opened = (await client.post("/ipc", content=HELLO)).json()
            headers = {"X-Session-Token": opened["token"]}
            session = f"/ipc/{opened['session_id']}"
            invoke = json.dumps(
                {"t": "invoke", "id": 1, "channel": "editor", "method": "move", "args": ["e", 1]}
            )
            async with event_stream(client, f"{session}/events", headers) as stream:
                # Time must pass here: no ping comes, and no close.
                await trio.sleep(0.3)
                await client.post(session, content=invoke, headers=headers)
                [(kind, reply)] = await stream.read(1)
            assert not ended.event.is_set()
    assert opened["ping"] is None
    assert (kind, reply["t"]) == ("message", "result")


@pytest.mark.parametrize(
    ("option", "value"),
    [
        ("ipc_ping_interval", 0),
        ("ipc_ping_interval", -1.0),
        ("ipc_ping_interval", math.inf),
        ("ipc_ping_timeout", 0),
        ("ipc_ping_timeout", None),
    ],
)
def test_http_app_refuses_ping_settings_that_are_not_positive_numbers(
    option: str, value: Any
) -> None:
    with pytest.raises(ValueError, match=option):
        http.HttpApp(None, ipc=tether.BackendIpc(), **{option: value})
