"""RPC over WebSocket reconnects by itself (issue 15, point 3).

Against real servers on 127.0.0.1 (`websocket.serve`, and the HTTP server's
`/ws` route on hypercorn), stopped and started again on the same port, and
against connections cut by `tether.testing.faulty_streams()`:

* a lost socket is made again with the backoff of `retry=`; calls made
  meanwhile wait for it and succeed; the state goes CONNECTED ->
  RECONNECTING -> CONNECTED;
* a backend that comes back incompatible (or without the interface) ends
  the connection: CLOSED, and calls raise IncompatibleVersion (NotFound);
* tries spent: CLOSED, calls raise ConnectError saying how many tries over
  how long, and are not retried through the closed connection;
* a call waits no longer than its own deadline;
* leaving the block while reconnecting is prompt and leaves no task behind.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from urllib.parse import urlsplit

import pytest
import trio
import trio.testing

import tether
from tether import ConnectionState, RetryPolicy, RpcInterface, RpcManager
from tether.runtime import (
    CallNotSent,
    ConnectError,
    ConnectionClosed,
    IncompatibleVersion,
    NotFound,
    ReconnectingBackend,
)
from tether.testing import faulty_streams
from tether.transports import http, memory, websocket

TIMEOUT = 15.0
VARIANTS = ["trio-websocket", "hypercorn"]
CONNECTED, RECONNECTING, CLOSED = (
    ConnectionState.CONNECTED,
    ConnectionState.RECONNECTING,
    ConnectionState.CLOSED,
)
#: Quick tries for tests: about 4 s of them.
QUICK = RetryPolicy(attempts=40, initial_backoff=0.02, max_backoff=0.1)


class Sums(RpcInterface):
    interface_name = "tests.Reconnect"
    interface_version = "1.2.0"

    async def add(self, a: int, b: int) -> int: ...


class SumsImpl(Sums):
    def __init__(self) -> None:
        self.calls = 0

    async def add(self, a: int, b: int) -> int:
        self.calls += 1
        return a + b


class SumsV2(RpcInterface):
    """The same interface, served at a major version this client cannot use."""

    interface_name = "tests.Reconnect"
    interface_version = "2.0.0"

    async def add(self, a: int, b: int) -> int: ...


class SumsV2Impl(SumsV2):
    async def add(self, a: int, b: int) -> int:
        return a + b


class Other(RpcInterface):
    interface_name = "tests.ReconnectOther"
    interface_version = "1.0.0"

    async def ping(self) -> str: ...


class OtherImpl(Other):
    async def ping(self) -> str:
        return "pong"


def serving(impl: RpcInterface, interface: type[RpcInterface]) -> RpcManager:
    manager = RpcManager()
    manager.register_impl(interface, impl)
    return manager


class Backend:
    """A server on 127.0.0.1 that a test stops and starts again on the same port."""

    def __init__(self, nursery: trio.Nursery, variant: str) -> None:
        self.nursery = nursery
        self.variant = variant
        self.port = 0
        self.url = ""
        self._scope: trio.CancelScope | None = None
        self._stopped = trio.Event()

    async def start(self, manager: RpcManager) -> str:
        url: str = await self.nursery.start(self._serve, manager, self.port)
        self.port = urlsplit(url).port or 0
        self.url = url
        return url

    async def _serve(
        self, manager: RpcManager, port: int, *, task_status: trio.TaskStatus[str]
    ) -> None:
        stopped = self._stopped = trio.Event()
        try:
            with trio.CancelScope() as self._scope:
                async with trio.open_nursery() as nursery:
                    if self.variant == "trio-websocket":
                        url = await nursery.start(
                            functools.partial(websocket.serve, manager, "127.0.0.1", port)
                        )
                    else:
                        base = await nursery.start(
                            functools.partial(http.serve, manager, "127.0.0.1", port)
                        )
                        url = base.replace("http://", "ws://", 1) + "/ws"
                    task_status.started(url)
        finally:
            stopped.set()

    async def stop(self) -> None:
        """Stop the server (its sockets go with it); return once its port is free."""
        assert self._scope is not None
        self._scope.cancel()
        await self._stopped.wait()


@asynccontextmanager
async def a_backend(variant: str, manager: RpcManager) -> AsyncIterator[Backend]:
    async with trio.open_nursery() as nursery:
        backend = Backend(nursery, variant)
        await backend.start(manager)
        yield backend
        nursery.cancel_scope.cancel()


async def record_states(
    backend: ReconnectingBackend,
    seen: list[ConnectionState],
    *,
    task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Append every state `backend` goes through, seen with `wait_state_change`."""
    state = backend.state
    seen.append(state)
    task_status.started()
    while state is not CLOSED:
        state = await backend.wait_state_change(state)
        seen.append(state)


def all_tasks() -> set[trio.lowlevel.Task]:
    tasks: set[trio.lowlevel.Task] = set()
    nurseries = list(trio.lowlevel.current_root_task().child_nurseries)
    for _ in range(100_000):  # bounded: the task tree of one test
        if not nurseries:
            return tasks
        for task in nurseries.pop().child_tasks:
            tasks.add(task)
            nurseries.extend(task.child_nurseries)
    raise AssertionError("too many nurseries")


@pytest.fixture(params=VARIANTS)
def variant(request: pytest.FixtureRequest) -> str:
    """Which server: trio-websocket's (`websocket.serve`) or hypercorn's (`http.serve`'s /ws)."""
    param: str = request.param
    return param


# ---------------------------------------------------------------------------
# A backend restarted on the same port


async def test_a_restarted_backend_is_reconnected_and_calls_made_meanwhile_succeed(
    variant: str,
) -> None:
    impl = SumsImpl()
    seen: list[ConnectionState] = []
    results: dict[int, int] = {}

    async def add(sums: Sums, n: int) -> None:
        results[n] = await sums.add(n, 10)

    with trio.fail_after(TIMEOUT):
        async with (
            a_backend(variant, serving(impl, Sums)) as server,
            websocket.connect(server.url, interfaces=[Sums], retry=QUICK) as backend,
            trio.open_nursery() as nursery,
        ):
            sums = backend.get_client(Sums)
            assert await sums.add(1, 2) == 3
            await nursery.start(record_states, backend, seen)
            await server.stop()
            assert await backend.wait_state_change(CONNECTED) is RECONNECTING
            async with trio.open_nursery() as calls:
                for n in range(3):
                    calls.start_soon(add, sums, n)
                await trio.testing.wait_all_tasks_blocked()
                assert results == {}  # they wait: none failed
                await server.start(serving(impl, Sums))
            assert results == {0: 10, 1: 11, 2: 12}
            assert backend.state is CONNECTED
            assert await sums.add(5, 5) == 10
            nursery.cancel_scope.cancel()
    assert seen == [CONNECTED, RECONNECTING, CONNECTED]
    assert impl.calls == 5  # each call ran once
    assert backend.state is CLOSED
    assert backend.state_watch.reason == "closed by this client"


async def test_default_settings_ride_through_a_restart(variant: str) -> None:
    """`retry=` left as it is: the backend is away a while, the call made meanwhile succeeds."""
    impl = SumsImpl()
    with trio.fail_after(TIMEOUT):
        async with (
            a_backend(variant, serving(impl, Sums)) as server,
            websocket.connect(server.url, interfaces=[Sums]) as backend,
        ):
            sums = backend.get_client(Sums)
            await server.stop()
            assert await backend.wait_state_change(CONNECTED) is RECONNECTING
            async with trio.open_nursery() as nursery:
                nursery.start_soon(sums.add, 2, 2)
                await trio.sleep(1.0)  # the backend is down this long (not a wait for an event)
                await server.start(serving(impl, Sums))
            assert backend.state is CONNECTED
            assert "reconnected to" in (backend.state_watch.reason or "")
    assert impl.calls == 1


async def test_a_backend_back_with_an_incompatible_version_ends_the_connection(
    variant: str,
) -> None:
    caught: list[BaseException] = []

    async def add(sums: Sums) -> None:
        with pytest.raises(IncompatibleVersion) as info:
            await sums.add(1, 1)
        caught.append(info.value)

    with trio.fail_after(TIMEOUT):
        async with (
            a_backend(variant, serving(SumsImpl(), Sums)) as server,
            websocket.connect(server.url, interfaces=[Sums], retry=QUICK) as backend,
        ):
            sums = backend.get_client(Sums)
            await server.stop()
            assert await backend.wait_state_change(CONNECTED) is RECONNECTING
            async with trio.open_nursery() as calls:
                calls.start_soon(add, sums)
                calls.start_soon(add, sums)
                await trio.testing.wait_all_tasks_blocked()
                await server.start(serving(SumsV2Impl(), SumsV2))
            assert backend.state is CLOSED
            assert len(caught) == 2
            assert "2.0.0" in str(caught[0])
            assert "1.2.0" in str(caught[0])
            assert "2.0.0" in (backend.state_watch.reason or "")
            with pytest.raises(IncompatibleVersion, match=r"2\.0\.0"):  # later calls too, at once
                await sums.add(2, 2)


async def test_a_backend_back_without_the_interface_ends_the_connection_with_not_found() -> None:
    with trio.fail_after(TIMEOUT):
        async with (
            a_backend("trio-websocket", serving(SumsImpl(), Sums)) as server,
            websocket.connect(server.url, interfaces=[Sums], retry=QUICK) as backend,
        ):
            sums = backend.get_client(Sums)
            await server.stop()
            await server.start(serving(OtherImpl(), Other))
            with pytest.raises(NotFound, match=r"tests\.Reconnect"):
                await sums.add(1, 1)
            assert backend.state is CLOSED


# ---------------------------------------------------------------------------
# Tries spent, no reconnects, deadlines


async def test_spent_tries_close_the_connection_with_connect_error(
    caplog: pytest.LogCaptureFixture,
) -> None:
    policy = RetryPolicy(attempts=4, initial_backoff=0.05, multiplier=1.0, jitter=0.0)
    with trio.fail_after(TIMEOUT):
        async with (
            a_backend("trio-websocket", serving(SumsImpl(), Sums)) as server,
            websocket.connect(server.url, interfaces=[Sums], retry=policy) as backend,
        ):
            sums = backend.get_client(Sums)
            await server.stop()
            with pytest.raises(ConnectError, match=r"4 tries over \d+\.\d s") as waiting:
                await sums.add(1, 1)  # made while reconnecting: waits, then fails
            assert backend.state is CLOSED
            assert "refused" in str(waiting.value) or "could not connect" in str(waiting.value)
            caplog.clear()
            with (
                caplog.at_level(logging.INFO, logger="tether.client"),
                pytest.raises(ConnectError, match="could not reconnect"),
            ):
                await sums.add(2, 2)
            # A connection closed for good is not tried again call by call.
            assert not [r for r in caplog.records if "retrying" in r.getMessage()]


async def test_retry_none_does_not_reconnect() -> None:
    with trio.fail_after(TIMEOUT):
        async with (
            a_backend("trio-websocket", serving(SumsImpl(), Sums)) as server,
            websocket.connect(server.url, interfaces=[Sums], retry=None) as backend,
        ):
            sums = backend.get_client(Sums)
            assert await sums.add(1, 1) == 2
            await server.stop()
            assert await backend.wait_state_change(CONNECTED) is CLOSED
            assert "retry=None" in (backend.state_watch.reason or "")
            with pytest.raises(ConnectionClosed) as caught:
                await sums.add(1, 1)
            assert not isinstance(caught.value, ConnectError)


async def test_a_call_waits_for_the_reconnect_no_longer_than_its_deadline() -> None:
    with trio.fail_after(TIMEOUT):
        async with (
            a_backend("trio-websocket", serving(SumsImpl(), Sums)) as server,
            websocket.connect(server.url, interfaces=[Sums]) as backend,
        ):
            sums = backend.get_client(Sums)
            await server.stop()
            assert await backend.wait_state_change(CONNECTED) is RECONNECTING
            began = trio.current_time()
            with pytest.raises(trio.TooSlowError), trio.fail_after(0.3):
                await sums.add(1, 1)
            assert trio.current_time() - began < 1.0
            with trio.move_on_after(0.2) as scope:
                await sums.add(1, 1)
            assert scope.cancelled_caught
            assert backend.state is RECONNECTING  # still trying: the calls gave up, not it


async def test_leaving_the_block_while_reconnecting_is_prompt_and_leaves_no_task() -> None:
    with trio.fail_after(TIMEOUT):
        async with a_backend("trio-websocket", serving(SumsImpl(), Sums)) as server:
            before = all_tasks()
            async with trio.open_nursery() as outside:
                async with websocket.connect(server.url, interfaces=[Sums]) as backend:
                    sums = backend.get_client(Sums)
                    await server.stop()
                    assert await backend.wait_state_change(CONNECTED) is RECONNECTING

                    async def waiting_call() -> None:
                        with pytest.raises(ConnectionClosed, match="closed by this client"):
                            await sums.add(1, 1)

                    outside.start_soon(waiting_call)
                    await trio.testing.wait_all_tasks_blocked()
                    began = trio.current_time()
                assert trio.current_time() - began < 0.5
                assert backend.state is CLOSED
            assert all_tasks() - before == set()  # (the stopped server's are gone too)


# ---------------------------------------------------------------------------
# Connections cut under a running server (tether.testing.faulty_streams)


async def test_a_cut_idle_connection_is_made_again_and_the_unsent_call_goes_on_it() -> None:
    impl = SumsImpl()
    with trio.fail_after(TIMEOUT), faulty_streams() as faults:
        async with (
            a_backend("trio-websocket", serving(impl, Sums)) as server,
            websocket.connect(server.url, interfaces=[Sums], retry=QUICK) as backend,
        ):
            sums = backend.get_client(Sums)
            assert await sums.add(1, 1) == 2
            faults.latest.cut()
            # The call finds the socket gone before it is sent (CallNotSent):
            # tried again on the new connection.
            assert await sums.add(2, 3) == 5
            assert len(faults.streams) == 2
            assert backend.state is CONNECTED
    assert impl.calls == 2


async def test_a_call_in_flight_on_a_cut_connection_fails_and_the_next_one_reconnects(
    variant: str,
) -> None:
    impl = SumsImpl()
    seen: list[ConnectionState] = []
    with trio.fail_after(TIMEOUT), faulty_streams() as faults:
        async with (
            a_backend(variant, serving(impl, Sums)) as server,
            websocket.connect(server.url, interfaces=[Sums], retry=QUICK) as backend,
            trio.open_nursery() as nursery,
        ):
            sums = backend.get_client(Sums)
            await nursery.start(record_states, backend, seen)
            faults.latest.cut_after(1, direction="receive")  # the reply is lost with it
            with pytest.raises(ConnectionClosed) as caught:
                await sums.add(1, 1)  # not idempotent: it may have run, so it is not retried
            assert not isinstance(caught.value, CallNotSent)
            await faults.wait_opened(2)
            while backend.state is not CONNECTED:
                await backend.wait_state_change(backend.state)
            assert await sums.add(2, 2) == 4
            nursery.cancel_scope.cancel()
    assert seen == [CONNECTED, RECONNECTING, CONNECTED]
    assert impl.calls == 2


async def test_the_backend_is_still_an_rpc_backend(variant: str) -> None:
    """What a websocket connect's result offers besides calls: interfaces, statistics."""
    with trio.fail_after(TIMEOUT):
        async with (
            a_backend(variant, serving(SumsImpl(), Sums)) as server,
            websocket.connect(server.url, interfaces=[Sums]) as backend,
        ):
            assert isinstance(backend, tether.runtime.RpcBackend)
            assert set(backend.interfaces) == {"tests.Reconnect"}
            assert backend.statistics().calls_in_flight == 0
            assert backend.session_id == backend.options.session_id
            assert not backend.is_closed
            with pytest.raises(NotFound, match="interfaces="):
                backend.get_client(Other)
    assert backend.is_closed


# ---------------------------------------------------------------------------
# RpcConnection's own state (one connection, no reconnects: memory transport)


async def test_an_rpc_connection_is_connected_then_closed_with_a_reason() -> None:
    with trio.fail_after(TIMEOUT):
        async with memory.connect(serving(SumsImpl(), Sums), interfaces=[Sums]) as connection:
            assert connection.state is CONNECTED
            assert await connection.get_client(Sums).add(1, 1) == 2
        assert connection.state is CLOSED
        assert connection.state_watch.reason == "closed by this client"


async def test_an_rpc_connection_lost_under_a_call_is_closed_and_later_calls_are_not_sent() -> None:
    with trio.fail_after(TIMEOUT), faulty_streams() as faults:
        async with memory.connect(serving(SumsImpl(), Sums), interfaces=[Sums]) as connection:
            sums = connection.get_client(Sums)
            faults.latest.cut("gone")
            with pytest.raises(CallNotSent, match="gone"):  # the send found it cut
                await sums.add(1, 1)
            assert await connection.wait_state_change(CONNECTED) is CLOSED
            assert connection.state_watch.reason == "gone"
            with pytest.raises(CallNotSent, match="gone"):  # closed before it was sent
                await sums.add(1, 1)
