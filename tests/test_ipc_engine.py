"""The IPC engine's reading and running, below the conformance suite.

Invokes run on the worker that read them, on reused workers and cancel scopes;
a caller waiting for its reply reads it itself (the reading baton). These
tests pin what that must not change: a call's context changes stay its own,
an invoke from the other side that a reading caller comes across still runs,
messages that arrive after the last reply are still read, and a sequential
same-loop invoke costs two scheduler batches.
"""

from __future__ import annotations

import contextvars
import functools
import threading

import trio
import trio.testing

import tether
from tether.transports import local, memory

TIMEOUT = 10.0

marker: contextvars.ContextVar[str] = contextvars.ContextVar("ipc_engine_marker", default="clean")


class EngineIpc(tether.IpcInterface):
    channel_name = "engine-test"
    version = "1.0.0"

    async def touch(self, yields: bool) -> str: ...

    async def ask_frontend(self, n: int) -> int: ...

    async def later(self, n: int) -> None: ...

    async def hello(self, name: str) -> str: ...


class EngineEvents(tether.NotificationInterface):
    channel_name = "engine-test-events"

    async def tick(self, n: int) -> None: ...


class FrontendIpc(tether.IpcInterface):
    channel_name = "engine-test-frontend"
    version = "1.0.0"

    async def triple(self, n: int) -> int: ...


class EngineHandler(tether.IpcHandler, EngineIpc):
    go = trio.Event()

    async def touch(self, yields: bool) -> str:
        seen = marker.get()
        marker.set("dirty")  # never reset: must not reach another invoke
        if yields:
            await trio.lowlevel.checkpoint()
        return seen

    async def ask_frontend(self, n: int) -> int:
        return await tether.current_session().proxy(FrontendIpc).triple(n)

    async def later(self, n: int) -> None:
        session = tether.current_session()

        async def tick_later() -> None:
            await EngineHandler.go.wait()
            await session.notifier(EngineEvents).tick(n)

        session.start_soon(tick_later)

    async def hello(self, name: str) -> str:
        return "hi " + name


class Tripler(tether.IpcHandler, FrontendIpc):
    async def triple(self, n: int) -> int:
        return 3 * n


def _backend() -> tether.BackendIpc:
    backend = tether.BackendIpc()
    backend.register(EngineHandler)
    return backend


async def test_a_contextvar_an_invoke_sets_does_not_reach_later_invokes() -> None:
    """Workers are reused only when the method left their context as it found it."""
    with trio.fail_after(TIMEOUT):
        async with memory.connect_ipc(_backend(), channels=[EngineIpc]) as frontend:
            proxy = frontend.proxy(EngineIpc)
            seen = [await proxy.touch(n % 2 == 1) for n in range(6)]
            async with trio.open_nursery() as nursery:
                for n in range(8):

                    async def touch(yields: bool = n % 2 == 1) -> None:
                        seen.append(await proxy.touch(yields))

                    nursery.start_soon(touch)
    assert seen == ["clean"] * 14


async def test_an_invoke_from_the_backend_reaches_a_frontend_whose_caller_is_reading() -> None:
    """The waiting caller reads the backend's invoke; a worker runs it, the reply comes back."""
    with trio.fail_after(TIMEOUT):
        async with memory.connect_ipc(_backend(), channels=[EngineIpc]) as frontend:
            frontend.register(Tripler)
            proxy = frontend.proxy(EngineIpc)
            assert [await proxy.ask_frontend(n) for n in range(5)] == [0, 3, 6, 9, 12]
            async with trio.open_nursery() as nursery:
                got: list[int] = []

                async def ask(n: int) -> None:
                    got.append(await proxy.ask_frontend(n))

                for n in range(10):
                    nursery.start_soon(ask, n)
            assert sorted(got) == [3 * n for n in range(10)]


async def test_a_notification_after_the_last_reply_is_read_without_another_invoke() -> None:
    """A caller that read its own reply leaves the reading to a worker, not to its next call."""
    EngineHandler.go = trio.Event()
    heard = trio.Event()
    with trio.fail_after(TIMEOUT):
        async with memory.connect_ipc(_backend(), channels=[EngineIpc]) as frontend:
            frontend.add_listener(EngineEvents.channel_name, lambda method, n: heard.set())
            proxy = frontend.proxy(EngineIpc)
            for _ in range(3):
                assert await proxy.hello("x") == "hi x"
            await proxy.later(7)
            EngineHandler.go.set()  # the backend notifies now; nobody invokes again
            await heard.wait()


class _Batches(trio.abc.Instrument):
    """Counts the run loop's scheduler batches (one I/O check each)."""

    def __init__(self) -> None:
        self.count = 0

    def after_io_wait(self, timeout: float) -> None:
        self.count += 1


async def test_a_sequential_same_loop_invoke_costs_two_scheduler_batches() -> None:
    """As an RPC call: the backend's worker runs it inline, the caller reads its reply."""
    calls = 200
    with trio.fail_after(TIMEOUT):
        async with memory.connect_ipc(_backend(), channels=[EngineIpc]) as frontend:
            hello = frontend.proxy(EngineIpc).hello
            for _ in range(10):  # past the first invoke, which hands the reading over
                await hello("x")
            batches = _Batches()
            trio.lowlevel.add_instrument(batches)
            try:
                for _ in range(calls):
                    await hello("x")
            finally:
                trio.lowlevel.remove_instrument(batches)
    # A little room for a stray batch (a task of the test harness).
    assert batches.count <= 2 * calls + 4, batches.count


async def test_a_notification_after_a_loop_of_invokes_is_read_when_the_loop_goes_idle() -> None:
    """A caller on a streak leaves the reading lazily: once it goes elsewhere, a worker reads."""
    EngineHandler.go = trio.Event()
    heard = trio.Event()
    with trio.fail_after(TIMEOUT):
        async with memory.connect_ipc(_backend(), channels=[EngineIpc]) as frontend:
            frontend.add_listener(EngineEvents.channel_name, lambda method, n: heard.set())
            proxy = frontend.proxy(EngineIpc)
            for _ in range(50):  # past the streak that makes the session lazy
                assert await proxy.hello("x") == "hi x"
            await proxy.later(7)
            # Everything waits now: the run loop is about to sleep, with the
            # caller gone and only a lazily left role behind it.
            await trio.testing.wait_all_tasks_blocked()
            EngineHandler.go.set()  # the backend notifies now; nobody invokes again
            await heard.wait()


class _Steps(trio.abc.Instrument):
    """Counts task steps."""

    def __init__(self) -> None:
        self.count = 0

    def before_task_step(self, task: trio.lowlevel.Task) -> None:
        self.count += 1


async def test_a_loop_of_invokes_costs_two_task_steps_each() -> None:
    """The caller's and the backend worker's: no spare worker wakes to find the role taken."""
    calls = 200
    with trio.fail_after(TIMEOUT):
        async with memory.connect_ipc(_backend(), channels=[EngineIpc]) as frontend:
            hello = frontend.proxy(EngineIpc).hello
            for _ in range(10):  # past the streak that makes the session lazy
                await hello("x")
            steps = _Steps()
            trio.lowlevel.add_instrument(steps)
            try:
                for _ in range(calls):
                    await hello("x")
            finally:
                trio.lowlevel.remove_instrument(steps)
    # A little room for a stray step (a task of the test harness).
    assert steps.count <= 2 * calls + 4, steps.count


class ReleasedLater(EngineHandler):
    """Notifies once a thread-safe event is set (the frontend is then in another run)."""

    released = threading.Event()

    async def later(self, n: int) -> None:
        session = tether.current_session()

        async def tick_later() -> None:
            await trio.to_thread.run_sync(ReleasedLater.released.wait, abandon_on_cancel=True)
            await session.notifier(EngineEvents).tick(n)

        session.start_soon(tick_later)


def _serve_in_a_thread(path: list[str], ready: threading.Event, stop: threading.Event) -> None:
    backend = tether.BackendIpc()
    backend.register(ReleasedLater)

    async def main() -> None:
        async with trio.open_nursery() as nursery:
            path.append(await nursery.start(functools.partial(local.serve, ipc=backend)))
            ready.set()
            await trio.to_thread.run_sync(stop.wait, abandon_on_cancel=True)
            nursery.cancel_scope.cancel()

    trio.run(main)


async def test_a_notification_over_a_socket_after_a_loop_of_invokes_wakes_a_sleeping_loop() -> None:
    """The role left lazily is taken before the run loop sleeps on I/O, not at its next deadline.

    The backend runs in another thread, so nothing in the frontend's run is
    ready when its caller has gone: the loop sleeps until the socket is
    readable, which it only notices if a worker is waiting on it by then.
    """
    ReleasedLater.released = threading.Event()
    heard = trio.Event()
    path: list[str] = []
    ready, stop = threading.Event(), threading.Event()
    thread = threading.Thread(target=_serve_in_a_thread, args=(path, ready, stop))
    thread.start()
    try:
        with trio.fail_after(TIMEOUT):
            await trio.to_thread.run_sync(ready.wait)
            async with local.connect_ipc(path[0], channels=[EngineIpc]) as frontend:
                frontend.add_listener(EngineEvents.channel_name, lambda method, n: heard.set())
                proxy = frontend.proxy(EngineIpc)
                for _ in range(50):  # past the streak that makes the session lazy
                    assert await proxy.hello("x") == "hi x"
                await proxy.later(7)
                ReleasedLater.released.set()  # the backend notifies soon; nobody invokes
                await heard.wait()
    finally:
        stop.set()
        ReleasedLater.released.set()
        with trio.CancelScope(shield=True):
            await trio.to_thread.run_sync(thread.join)
