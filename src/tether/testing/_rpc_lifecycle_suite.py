# mypy: disable-error-code="empty-body"
# (interface operations are declared with `...` bodies)
"""The RPC conformance cases for a connection's life: reconnect, and a server's stop.

Part of `RpcConformance`. A transport's test class says what it promises:

- `reconnects`: what a lost connection becomes. "connection": the client
  makes its connection again by itself (WebSocket): the state goes
  CONNECTED -> RECONNECTING -> CONNECTED, and calls go on. "request": every
  request may go on a connection of its own (HTTP): the next call opens a new
  one, and the state stays CONNECTED. None: lost for good (memory, local):
  the state goes CLOSED, and later calls fail at once with `CallNotSent`.
- `server_stop`: what stopping the server does, through `connect_stoppable`.
  "drains" (WebSocket, HTTP): a graceful shutdown: the call running finishes
  and its caller gets the result; a call made meanwhile is refused, certainly
  not run (`Unavailable`, or the closed listener's `ConnectError`), and with
  retries it is tried again until the server is gone, and fails then.
  "closes" (local): stopping closes every connection at once ("the server is
  shutting down") and cancels what runs: its caller hears that it may have
  run. None (memory): there is no server apart from the connection; leaving
  the connect block is the only stop, and it cancels what runs.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import Any, ClassVar, Literal

import pytest
import trio
import trio.testing

from ..runtime import (
    CallMayHaveRun,
    CallNotSent,
    ConnectError,
    ConnectionClosed,
    ConnectionState,
    RetryPolicy,
    RpcBackend,
    RpcInterface,
    RpcManager,
    Unavailable,
)
from ._probe import Probe
from ._rpc_faults_suite import QUICK, ConformanceFaults, Faults, FaultsImpl, client_log

__all__ = ["ConformanceLifecycle", "RpcLifecycleCases"]

#: Seconds every lifecycle case may take.
LIFECYCLE_TIMEOUT = 10.0
#: Seconds a call on a connection lost for good may take to fail: at once.
AT_ONCE = 1.0
#: Few, quick tries: a call refused while the server drains is tried again
#: (after the refusal's Retry-After of 1 s) and fails once the server is gone.
FEW = RetryPolicy(attempts=3, initial_backoff=0.02, max_backoff=0.05)

CONNECTED, RECONNECTING, CLOSED = (
    ConnectionState.CONNECTED,
    ConnectionState.RECONNECTING,
    ConnectionState.CLOSED,
)

Stop = Callable[[], Awaitable[object]]


class ConformanceLifecycle(RpcInterface):
    """A call that runs until released, and one that returns at once."""

    interface_name = "tether.conformance.Lifecycle"
    interface_version = "1.0.0"

    async def hold(self, key: str) -> str: ...
    async def echo(self, key: str) -> str: ...


class LifecycleImpl(ConformanceLifecycle):
    """Reports through a `Probe` (the backend may run on a loop of its own)."""

    def __init__(self, probe: Probe) -> None:
        self.probe = probe
        self.release = trio.Event()
        self.runs: list[str] = []

    async def hold(self, key: str) -> str:
        self.runs.append(f"hold:{key}")
        self.probe.signal(f"started:{key}")
        try:
            await self.release.wait()
        except trio.Cancelled:
            self.probe.signal(f"cancelled:{key}")
            raise
        return key

    async def echo(self, key: str) -> str:
        self.runs.append(f"echo:{key}")
        return key


async def _record_states(
    backend: RpcBackend,
    seen: list[ConnectionState],
    *,
    task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
) -> None:
    state = backend.state
    seen.append(state)
    task_status.started()
    while state is not CLOSED:
        state = await backend.wait_state_change(state)
        seen.append(state)


class RpcLifecycleCases:
    """The reconnect and server-stop cases of `RpcConformance` (see the module docstring)."""

    #: What a lost connection becomes: "connection", "request" or None.
    reconnects: ClassVar[Literal["connection", "request"] | None] = None
    #: What stopping the server does: "drains", "closes" or None (no server).
    server_stop: ClassVar[Literal["drains", "closes"] | None] = None

    def connect(
        self, manager: RpcManager, *, interfaces: Sequence[type[RpcInterface]], **options: Any
    ) -> AbstractAsyncContextManager[RpcBackend]:
        raise NotImplementedError

    def open_faulty(
        self, manager: RpcManager, *, interfaces: Sequence[type[RpcInterface]], **options: Any
    ) -> AbstractAsyncContextManager[tuple[RpcBackend, Faults]]:
        raise NotImplementedError

    def connect_stoppable(
        self,
        manager: RpcManager,
        stop: Stop,
        *,
        interfaces: Sequence[type[RpcInterface]],
        **options: Any,
    ) -> AbstractAsyncContextManager[RpcBackend]:
        """Like `connect`, with a server that stops once `stop()` returns.

        Gracefully where `server_stop` is "drains" (the server's
        `shutdown_trigger`), the way the transport stops otherwise. A
        transport whose `server_stop` is None need not implement it.
        """
        raise NotImplementedError(
            "a conformance test class whose server_stop is not None must implement "
            "connect_stoppable()"
        )

    def lifecycle_manager(self, probe: Probe) -> tuple[RpcManager, LifecycleImpl]:
        manager = RpcManager()
        impl = LifecycleImpl(probe)
        manager.register_impl(ConformanceLifecycle, impl)
        return manager, impl

    # -- reconnect ---------------------------------------------------------------

    async def test_reconnect_a_lost_idle_connection_as_the_transport_promises(self) -> None:
        manager = RpcManager()
        impl = FaultsImpl()
        manager.register_impl(ConformanceFaults, impl)
        seen: list[ConnectionState] = []
        with trio.fail_after(LIFECYCLE_TIMEOUT):
            async with (
                self.open_faulty(manager, interfaces=[ConformanceFaults], retry=QUICK) as (
                    backend,
                    faults,
                ),
                trio.open_nursery() as nursery,
            ):
                client = backend.get_client(ConformanceFaults)
                assert await client.increment() == 1
                await nursery.start(_record_states, backend, seen)
                opened = faults.connections
                await faults.cut_now()
                if self.reconnects == "connection":
                    # Seen lost with no call to notice it, and made again.
                    assert await backend.wait_state_change(CONNECTED) is RECONNECTING
                    assert await backend.wait_state_change(RECONNECTING) is CONNECTED
                    assert await client.increment() == 2
                    assert faults.connections == opened + 1
                    assert seen == [CONNECTED, RECONNECTING, CONNECTED]
                elif self.reconnects == "request":
                    assert await client.increment() == 2
                    assert faults.connections > opened  # on a new connection
                    assert backend.state is CONNECTED
                    assert seen == [CONNECTED]
                else:
                    # Lost for good. (An idle connection that does not reconnect
                    # is read only by its calls: the next one finds it lost.)
                    with trio.fail_after(AT_ONCE), pytest.raises(CallNotSent):
                        await client.increment()
                    await trio.testing.wait_all_tasks_blocked()
                    assert backend.state is CLOSED
                    assert backend.state_watch.reason
                    assert faults.connections == opened  # not made again
                    assert seen == [CONNECTED, CLOSED]
                nursery.cancel_scope.cancel()
        assert impl.runs["increment"] == (2 if self.reconnects else 1)

    # -- a server's stop -----------------------------------------------------------

    @asynccontextmanager
    async def _stoppable(
        self, probe: Probe, **options: Any
    ) -> AsyncIterator[tuple[ConformanceLifecycle, LifecycleImpl, trio.Event]]:
        manager, impl = self.lifecycle_manager(probe)
        stop = trio.Event()
        async with self.connect_stoppable(
            manager, stop.wait, interfaces=[ConformanceLifecycle], **options
        ) as backend:
            yield backend.get_client(ConformanceLifecycle), impl, stop

    async def test_drain_a_call_running_at_a_stop(self) -> None:
        """Drains: it finishes and its caller gets the result. Closes: it is
        cancelled and its caller hears it may have run. No server: leaving the
        connection cancels it."""
        probe = Probe()
        outcome: list[str | BaseException] = []

        async def call(client: ConformanceLifecycle) -> None:
            try:
                outcome.append(await client.hold("k"))
            except ConnectionClosed as exc:
                outcome.append(exc)

        with trio.fail_after(LIFECYCLE_TIMEOUT):
            if self.server_stop is None:
                manager, _ = self.lifecycle_manager(probe)
                async with (
                    trio.open_nursery() as nursery,
                    self.connect(manager, interfaces=[ConformanceLifecycle]) as backend,
                ):
                    nursery.start_soon(call, backend.get_client(ConformanceLifecycle))
                    await probe.wait("started:k")
                await probe.wait("cancelled:k")
                [closed] = outcome
                assert isinstance(closed, ConnectionClosed)
                return
            async with (
                self._stoppable(probe, retry=None) as (client, impl, stop),
                trio.open_nursery() as nursery,
            ):
                nursery.start_soon(call, client)
                await probe.wait("started:k")
                stop.set()
                await trio.testing.wait_all_tasks_blocked()
                if self.server_stop == "drains":
                    assert outcome == []  # still running: the server waits for it
                impl.release.set()
        if self.server_stop == "drains":
            assert outcome == ["k"]
            assert not probe.is_set("cancelled:k")
        else:
            [lost] = outcome
            assert isinstance(lost, CallMayHaveRun), repr(lost)
            assert "shutting down" in str(lost)
            assert probe.is_set("cancelled:k")

    async def test_drain_a_call_made_during_the_stop_never_runs(self) -> None:
        """Drains: refused, certainly not run (`Unavailable` on an open
        connection, `ConnectError` from a closed listener), and never run.
        Closes: the connection is gone: `CallNotSent`. No server: the
        connection's end is the server's, and a call after it fails cleanly."""
        probe = Probe()
        with trio.fail_after(LIFECYCLE_TIMEOUT):
            if self.server_stop is None:
                manager, impl = self.lifecycle_manager(probe)
                async with self.connect(manager, interfaces=[ConformanceLifecycle]) as backend:
                    client = backend.get_client(ConformanceLifecycle)
                with pytest.raises(ConnectionClosed):
                    await client.echo("late")
                assert impl.runs == []
                return
            async with self._stoppable(probe, retry=None) as (client, impl, stop):
                held: list[str | BaseException] = []

                async def hold() -> None:
                    try:
                        held.append(await client.hold("k"))
                    except ConnectionClosed as exc:
                        held.append(exc)

                async with trio.open_nursery() as nursery:
                    nursery.start_soon(hold)
                    await probe.wait("started:k")
                    stop.set()
                    await trio.testing.wait_all_tasks_blocked()
                    expected: tuple[type[Exception], ...] = (
                        (Unavailable, ConnectError, CallNotSent)
                        if self.server_stop == "drains"
                        else (CallNotSent,)
                    )
                    with pytest.raises(expected) as refused:
                        await client.echo("late")
                    impl.release.set()
        assert impl.runs == ["hold:k"]
        # Drains: the held call still answered; closes: it was lost with the server.
        [answer] = held
        assert answer == "k" if self.server_stop == "drains" else isinstance(answer, CallMayHaveRun)
        if self.server_stop == "drains" and isinstance(refused.value, Unavailable):
            assert "shutting down" in str(refused.value)

    async def test_drain_a_call_refused_during_the_stop_is_retried_then_fails_once_it_is_gone(
        self,
    ) -> None:
        """With retries, a call refused while the server drains is tried again
        (at least its `Retry-After` later) and, the server gone, fails with
        `ConnectError` (or the connection's end): never run. (Only "drains".)"""
        probe = Probe()
        if self.server_stop != "drains":
            # Nothing refuses a call and leaves it to a retry: the case before
            # this one checks what happens instead.
            assert self.server_stop in ("closes", None)
            return
        with trio.fail_after(LIFECYCLE_TIMEOUT):
            async with (
                self._stoppable(probe, retry=FEW) as (client, impl, stop),
                client_log() as log,
            ):
                failed: list[BaseException] = []

                async def late() -> None:
                    with pytest.raises((ConnectError, ConnectionClosed)) as caught:
                        await client.echo("late")
                    failed.append(caught.value)

                async with trio.open_nursery() as nursery:
                    nursery.start_soon(client.hold, "k")
                    await probe.wait("started:k")
                    stop.set()
                    await trio.testing.wait_all_tasks_blocked()
                    nursery.start_soon(late)
                    await log.retrying.wait()  # refused, and to be tried again
                    impl.release.set()
        assert len(failed) == 1
        assert impl.runs == ["hold:k"]
        assert any("retrying" in line and "echo" in line for line in log.lines), log.lines
