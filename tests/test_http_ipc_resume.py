# mypy: disable-error-code="empty-body"
"""IPC over HTTP survives a dropped event stream: the client resumes it with
`Last-Event-ID` within the backend's grace period, and POSTs whose answer was
lost are sent again with the same `X-Tether-Seq`, which the backend takes once.

Everything runs over the real hypercorn server on 127.0.0.1, port 0. Drops are
real: the client's own socket shut down under it, or a TCP relay between the
two (written here until `tether.testing.FaultyProxy` lands) that resets both
sides of every connection, or only the client's side, so that the backend does
not see the cut and the resumed stream must take over from the one it still
thinks open.
"""

from __future__ import annotations

import functools
import json
import random
import socket
import struct
from collections import Counter
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import httpx
import pytest
import trio

import tether
from tether import ConnectionState
from tether.runtime import ConnectionClosed
from tether.runtime._util import open_service_nursery
from tether.testing import faulty_streams
from tether.transports import http
from tether.transports.http import _ipc_server

TIMEOUT = 20.0
#: Every POST to tether's server says it is JSON (cross-site form posts are refused).
JSON_TYPE = {"Content-Type": "application/json"}
HELLO = json.dumps(
    {"t": "hello", "protocol": 1, "mode": "ipc", "channels": {"resume": "1.0.0"}}
).encode()
BURST_50 = json.dumps(
    {"t": "invoke", "id": 1, "channel": "resume", "method": "burst", "args": [50]}
).encode()


class ResumeIpc(tether.IpcInterface):
    channel_name = "resume"
    version = "1.0.0"

    async def burst(self, count: int) -> int: ...

    async def record(self, key: int) -> int: ...


class Ticks(tether.NotificationInterface):
    channel_name = "resume-ticks"

    async def tick(self, n: int) -> None: ...


class Backend:
    """A BackendIpc whose handler counts what it ran, and notes why sessions ended."""

    def __init__(self) -> None:
        self.runs: Counter[int] = Counter()
        self.ran = trio.lowlevel.ParkingLot()
        self.reasons: list[str] = []
        self.ended = trio.Event()
        self.sent = 0
        owner = self

        class Handler(tether.IpcHandler, ResumeIpc):
            async def burst(self, count: int) -> int:
                tick = tether.current_session().notifier(Ticks).tick
                for n in range(count):
                    await tick(n)
                    owner.sent = n + 1
                    owner.ran.unpark_all()
                    if n % 64 == 63:
                        await trio.lowlevel.checkpoint()
                return count

            async def record(self, key: int) -> int:
                owner.runs[key] += 1
                owner.ran.unpark_all()
                return key * 10

            def on_close(self, reason: str) -> None:
                owner.reasons.append(reason)
                owner.ended.set()

        self.ipc = tether.BackendIpc()
        self.ipc.register(Handler)


def _reset(sock: socket.socket) -> None:
    """Close `sock` with a RST (no FIN): the peer sees the connection reset."""
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        sock.close()
    except OSError:
        pass


class Relay:
    """A TCP relay on 127.0.0.1 in front of the server that cuts on command.

    `cut()` resets both sides of every connection it carries; `cut(client_only=True)`
    resets the client's side only and leaves the server's side open, silent,
    so the server does not learn of it. While `refusing`, new connections are
    reset at once. `hold_responses` stops forwarding the server's bytes (the
    client's still go through), so a request is taken and its answer lost
    when a cut follows.
    """

    def __init__(self, upstream_port: int) -> None:
        self.upstream_port = upstream_port
        self.pairs: list[tuple[trio.SocketStream, trio.SocketStream, trio.CancelScope]] = []
        self.refusing = False
        self.hold_responses = False
        self.released = trio.lowlevel.ParkingLot()
        self.held: list[trio.SocketStream] = []

    def cut(self, *, client_only: bool = False) -> None:
        pairs, self.pairs = self.pairs, []
        for client, upstream, scope in pairs:
            _reset(client.socket)  # type: ignore[arg-type]
            if client_only:
                self.held.append(upstream)
            else:
                _reset(upstream.socket)  # type: ignore[arg-type]
            scope.cancel()
        self.hold_responses = False

    async def run(self, task_status: trio.TaskStatus[int]) -> None:
        [listener] = await trio.open_tcp_listeners(0, host="127.0.0.1")
        try:
            async with trio.open_nursery() as nursery:
                task_status.started(listener.socket.getsockname()[1])
                while True:
                    client = await listener.accept()
                    if self.refusing:
                        _reset(client.socket)  # type: ignore[arg-type]
                        continue
                    upstream = await trio.open_tcp_stream("127.0.0.1", self.upstream_port)
                    scope = trio.CancelScope()
                    self.pairs.append((client, upstream, scope))
                    nursery.start_soon(self._carry, client, upstream, scope)
        finally:
            with trio.CancelScope(shield=True):
                await listener.aclose()
                for client, upstream, _ in self.pairs:
                    await trio.aclose_forcefully(client)
                    await trio.aclose_forcefully(upstream)
                for upstream in self.held:
                    await trio.aclose_forcefully(upstream)

    async def _carry(
        self, client: trio.SocketStream, upstream: trio.SocketStream, scope: trio.CancelScope
    ) -> None:
        with scope:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(self._forward, client, upstream, False)
                nursery.start_soon(self._forward, upstream, client, True)

    async def _forward(
        self, source: trio.SocketStream, sink: trio.SocketStream, response: bool
    ) -> None:
        try:
            while True:
                if response:
                    while self.hold_responses:
                        await self.released.park()
                data = await source.receive_some(65536)
                if not data:
                    await sink.send_eof()
                    return
                await sink.send_all(data)
        except (trio.BrokenResourceError, trio.ClosedResourceError, OSError):
            pass


@asynccontextmanager
async def served(backend: Backend, **options: Any) -> AsyncIterator[tuple[str, Relay]]:
    """The backend served by hypercorn, and a relay in front of it: the URL through it."""
    async with open_service_nursery() as nursery:
        url = await nursery.start(
            functools.partial(http.serve, None, "127.0.0.1", 0, ipc=backend.ipc, **options)
        )
        origin, _, path = url.removeprefix("http://").partition("/")
        relay = Relay(int(origin.rpartition(":")[2]))
        port = await nursery.start(relay.run)
        yield f"http://127.0.0.1:{port}/{path}", relay
        nursery.cancel_scope.cancel()


class States:
    """Every state a frontend went through, recorded by a task of the test."""

    def __init__(self) -> None:
        self.seen: list[ConnectionState] = []
        self.lot = trio.lowlevel.ParkingLot()

    async def watch(self, frontend: tether.FrontendIpc) -> None:
        state = frontend.state
        while state is not ConnectionState.CLOSED:
            state = await frontend.wait_state_change(state)
            self.seen.append(state)
            self.lot.unpark_all()

    async def wait_for(self, state: ConnectionState, count: int) -> None:
        while self.seen.count(state) < count:
            await self.lot.park()


def _client_stream(frontend: tether.FrontendIpc) -> Any:
    """The HTTP client's MessageStream under `frontend` (unwrapped from the fault wrapper)."""
    stream = frontend._peer.stream
    return getattr(stream, "inner", stream)


async def test_burst_of_10000_notifications_through_20_drops_arrives_once_each_in_order(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The issue's test: each notification exactly once, in order, through 20 real drops."""
    total, drops = 10_000, 20
    # A smaller replay window (the events the backend sends ahead of the
    # client's acks): the events read before a drop, still taken after it,
    # are fewer, so that 20 drops each of a live stream fit in the burst.
    monkeypatch.setattr(_ipc_server, "REPLAY_MESSAGES", 256)
    backend = Backend()
    rng = random.Random(15)
    # Where the drops happen: a random tick in each stretch of 480.
    points = [150 + 480 * i + rng.randrange(150) for i in range(drops)]
    kinds = ["client", "relay", "relay-client-only"]
    received: list[int] = []
    done = trio.Event()
    states = States()
    with trio.fail_after(TIMEOUT):
        async with (
            served(backend) as (url, relay),
            http.connect_ipc(url, channels=[ResumeIpc]) as frontend,
        ):
            stream = _client_stream(frontend)
            dropped: list[tuple[int, str]] = []
            last_cut: list[object] = [None]

            def drop(n: int) -> None:
                kind = kinds[len(dropped) % len(kinds)]
                if kind == "client":
                    # The client's own socket, shut down under its reader.
                    stream._events._conn.stream.socket.shutdown(socket.SHUT_RDWR)
                else:
                    relay.cut(client_only=kind == "relay-client-only")
                dropped.append((n, kind))
                last_cut[0] = stream._events

            class Listener(tether.NotificationHandler, Ticks):
                async def tick(self, n: int) -> None:
                    received.append(n)
                    # Each drop at its point, or at the first tick after
                    # it that came on a new stream (the events read
                    # before a drop may still be buffered).
                    due = len(dropped) < drops and n >= points[len(dropped)]
                    if due and stream._events is not None and stream._events is not last_cut[0]:
                        drop(n)
                    if len(received) == total:
                        done.set()

            frontend.add_notification_handler(Listener())
            async with trio.open_nursery() as nursery:
                nursery.start_soon(states.watch, frontend)
                assert await frontend.proxy(ResumeIpc).burst(total) == total
                await done.wait()
                # The last drop's resume may still be under way.
                await states.wait_for(ConnectionState.CONNECTED, len(dropped))
                nursery.cancel_scope.cancel()
            assert frontend.closed_reason is None
            assert frontend.state is ConnectionState.CONNECTED
    assert received == list(range(total))
    assert len(dropped) == drops, dropped
    assert all(n < total - 1 for n, _ in dropped)  # every drop during the burst
    # One outage for each drop, each over once its stream was open again.
    assert states.seen == [ConnectionState.RECONNECTING, ConnectionState.CONNECTED] * drops
    assert backend.reasons == ["the frontend left"]


async def test_invokes_in_flight_when_the_connection_is_cut_are_run_and_answered_once() -> None:
    """A POST taken by the backend whose answer was lost is sent again, and not run twice;
    replies lost with the event stream come once, from the replay."""
    backend = Backend()
    states = States()
    calls = 10
    results: dict[int, int] = {}
    with trio.fail_after(TIMEOUT), faulty_streams() as faults:
        async with (
            served(backend) as (url, relay),
            http.connect_ipc(url, channels=[ResumeIpc]) as frontend,
        ):
            proxy = frontend.proxy(ResumeIpc)
            assert await proxy.record(-1) == -10
            before = faults.latest.received
            async with trio.open_nursery() as nursery:
                nursery.start_soon(states.watch, frontend)

                async def call(key: int) -> None:
                    results[key] = await proxy.record(key)

                # The backend takes the first POST, but its 202 and the
                # reply on the event stream are held, and then cut.
                relay.hold_responses = True
                async with trio.open_nursery() as callers:
                    for key in range(calls):
                        callers.start_soon(call, key)
                    while backend.runs.total() < 2:  # the warm-up's, and one
                        await backend.ran.park()
                    # Taken and run; its 202 and its reply are held: cut.
                    relay.cut()
                    relay.released.unpark_all()
                nursery.cancel_scope.cancel()
            received = faults.latest.received - before
            assert frontend.closed_reason is None
    assert results == {key: key * 10 for key in range(calls)}
    assert {key: backend.runs[key] for key in range(calls)} == dict.fromkeys(range(calls), 1)
    assert received == calls  # one reply each: none lost, none twice
    assert ConnectionState.RECONNECTING in states.seen
    assert states.seen[-1] is ConnectionState.CONNECTED


async def test_drop_longer_than_the_grace_ends_the_session_with_the_reason_on_both_sides() -> None:
    backend = Backend()
    with trio.fail_after(TIMEOUT):
        async with served(backend, ipc_grace_period=0.3) as (url, relay):
            async with http.connect_ipc(url, channels=[ResumeIpc]) as frontend:
                assert await frontend.proxy(ResumeIpc).record(1) == 10
                relay.refusing = True
                relay.cut()
                reason = await frontend.wait_closed()
                state = frontend.state
            await backend.ended.wait()
    assert backend.reasons == [
        "the frontend's event stream did not come back within the grace period of 0.3 s"
    ]
    assert state is ConnectionState.CLOSED
    # It tried within the grace the backend told it, and says so.
    assert "grace period of 0.3 s" in reason, reason
    assert frontend.closed_reason == reason


async def test_last_event_id_older_than_the_replay_buffer_ends_the_session_clearly(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A client that does not acknowledge events (a browser's EventSource) and resumes
    after more were sent than the replay buffer keeps: the session ends, saying so,
    rather than going on without them."""
    monkeypatch.setattr(_ipc_server, "REPLAY_MESSAGES", 8)
    backend = Backend()
    with trio.fail_after(TIMEOUT):
        async with (
            served(backend) as (url, _),
            httpx.AsyncClient(base_url=url, headers=JSON_TYPE) as client,
        ):
            opened = (await client.post("/ipc", content=HELLO)).json()
            token = {"X-Session-Token": opened["token"]}
            events = opened["events"].removeprefix("/rpc")
            # The event stream by hand (httpx's streams leave generators
            # behind when left early): read up to event 1, then drop it.
            port = int(url.removeprefix("http://").partition("/")[0].rpartition(":")[2])
            async with await trio.open_tcp_stream("127.0.0.1", port) as sse:
                await sse.send_all(
                    f"GET /rpc{events} HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                    f"X-Session-Token: {opened['token']}\r\n\r\n".encode()
                )
                posted = await client.post(
                    f"/ipc/{opened['session_id']}", content=BURST_50, headers=token
                )
                assert posted.status_code == 202
                seen = b""
                while b"id: 1\n" not in seen:
                    seen += await sse.receive_some()
            # The client took event 1 only; the backend sent 51 (50 ticks, the
            # burst's result) and keeps the last 8.
            while backend.sent < 50:
                await backend.ran.park()
            resumed = await client.get(events, headers={**token, "Last-Event-ID": "1"})
            await backend.ended.wait()
    assert resumed.status_code == 200
    close = resumed.text.rpartition("event: close\ndata: ")[2]
    reason = json.loads(close)["reason"]
    assert reason.startswith("events were lost while the frontend was away: it had event 1, ")
    assert "keeps only the last 8 events" in reason
    assert backend.reasons == [reason]


async def test_a_post_sent_again_with_the_same_sequence_number_is_taken_once() -> None:
    backend = Backend()
    with trio.fail_after(TIMEOUT):
        async with (
            served(backend) as (url, _),
            httpx.AsyncClient(base_url=url, headers=JSON_TYPE) as client,
        ):
            opened = (await client.post("/ipc", content=HELLO)).json()
            session = f"/ipc/{opened['session_id']}"
            answers = []
            for seq, key in [(1, 1), (1, 1), (2, 2), (1, 1), (2, 2), (3, 3)]:
                headers = {"X-Session-Token": opened["token"], "X-Tether-Seq": str(seq)}
                record = json.dumps(
                    {
                        "t": "invoke",
                        "id": seq,
                        "channel": "resume",
                        "method": "record",
                        "args": [key],
                    }
                )
                answers.append(await client.post(session, content=record, headers=headers))
            bad = await client.post(
                session,
                content=b'{"t":"pong","id":0}',
                headers={"X-Session-Token": opened["token"], "X-Tether-Seq": "zero"},
            )
            while sum(backend.runs.values()) < 3:
                await backend.ran.park()
            await client.delete(session, headers={"X-Session-Token": opened["token"]})
            await backend.ended.wait()
    assert [answer.status_code for answer in answers] == [202] * 6
    assert backend.runs == {1: 1, 2: 1, 3: 1}
    assert bad.status_code == 400


async def test_retry_must_be_a_retry_policy() -> None:
    with pytest.raises(TypeError, match="RetryPolicy"):
        async with http.connect_ipc("http://127.0.0.1:1/rpc", retry=3):  # type: ignore[arg-type]
            pass


async def test_a_broken_post_without_retries_ends_the_session_as_before() -> None:
    backend = Backend()
    with trio.fail_after(TIMEOUT):
        async with (
            served(backend) as (url, relay),
            http.connect_ipc(url, channels=[ResumeIpc], retry=None) as frontend,
        ):
            assert await frontend.proxy(ResumeIpc).record(1) == 10
            relay.cut()
            with pytest.raises(ConnectionClosed):
                await frontend.proxy(ResumeIpc).record(2)
            reason = await frontend.wait_closed()
    assert reason == "the connection to the backend was lost"
