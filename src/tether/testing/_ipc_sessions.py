"""The IPC conformance suite: sessions (isolation, teardown, cancellation,
deadlines, contexts).
"""

from __future__ import annotations

import math

import pytest
import trio

from .. import contexts
from ..runtime import (
    ConnectionClosed,
    DeadlineExceeded,
    FrontendIpc,
    TetherError,
    TransportError,
    current_session,
)
from ._ipc_fixtures import (
    RAW_CHANNEL,
    ConformanceIpc,
    ConformanceIpcEvents,
    EventsHandler,
    FrontendEvents,
    FrontendHandler,
    IpcContextInfo,
    IpcSuiteBase,
    Received,
)
from ._probe import Probe
from ._rpc_samples import Point
from ._rpc_suite import TEST_TIMEOUT


class IpcSessionTests(IpcSuiteBase):
    """Sessions: isolation, teardown, cancellation, deadlines and contexts."""

    # -- sessions: isolation -----------------------------------------------------

    async def test_each_frontend_gets_only_its_own_notifications(self) -> None:
        backend = self.backend_ipc()
        with trio.fail_after(TEST_TIMEOUT):
            async with self.open(backend) as first, self.open(backend) as second:
                got: dict[str, Received] = {}
                for frontend in (first, second):
                    received = got[frontend.session_id] = Received()
                    frontend.add_listener(
                        ConformanceIpcEvents.channel_name,
                        lambda method, n, received=received: received.add(n),
                    )
                    frontend.add_listener(
                        RAW_CHANNEL, lambda method, n, *rest, received=received: received.add(n)
                    )
                one, two = first.proxy(ConformanceIpc), second.proxy(ConformanceIpc)
                await one.send_ticks(100, 3)
                await two.send_ticks(200, 3)
                await one.send_raw(110)  # IpcSession.send and BackendIpc.send
                await two.send_raw(210)
                # A last message after both: whatever was misrouted came before it.
                await one.send_ticks(150, 1)
                await two.send_ticks(250, 1)
                assert await got[first.session_id].wait_for(6) == [100, 101, 102, 110, 111, 150]
                assert await got[second.session_id].wait_for(6) == [200, 201, 202, 210, 211, 250]

    async def test_each_session_has_its_own_id_and_handler(self) -> None:
        backend = self.backend_ipc()
        with trio.fail_after(TEST_TIMEOUT):
            async with self.open(backend) as first, self.open(backend) as second:
                a1 = await first.proxy(ConformanceIpc).context()
                b1 = await second.proxy(ConformanceIpc).context()
                a2 = await first.proxy(ConformanceIpc).context()
                assert sorted(session.id for session in backend.sessions) == sorted(
                    [first.session_id, second.session_id]
                )
        assert first.session_id != second.session_id
        assert a1.current_session_id == a1.session_id == first.session_id
        assert b1.current_session_id == b1.session_id == second.session_id
        # Registered as a class: one instance per session, not per call.
        assert a1.handler == a2.handler
        assert a1.handler != b1.handler

    async def test_a_registered_instance_serves_every_session_and_is_not_closed_with_them(
        self,
    ) -> None:
        probe = Probe()
        backend = self.backend_ipc(probe, shared=True)
        with trio.fail_after(TEST_TIMEOUT):
            async with self.open(backend) as first, self.open(backend) as second:
                a = await first.proxy(ConformanceIpc).context()
                b = await second.proxy(ConformanceIpc).context()
            for session_end in (first, second):
                assert not session_end.is_valid
        assert a.handler == b.handler
        assert a.current_session_id != b.current_session_id
        assert backend.sessions == ()
        assert not probe.is_set(f"on_close:{a.handler}")

    # -- teardown ----------------------------------------------------------------

    async def test_leaving_the_block_cancels_running_handlers_and_ends_the_session(
        self,
    ) -> None:
        probe = Probe()
        backend = self.backend_ipc(probe)
        outcome: list[BaseException] = []

        async def call(proxy: ConformanceIpc) -> None:
            try:
                await proxy.wait_until_cancelled("k")
            except TetherError as exc:
                outcome.append(exc)

        with trio.fail_after(TEST_TIMEOUT):
            async with trio.open_nursery() as nursery, self.open(backend) as frontend:
                proxy = frontend.proxy(ConformanceIpc)
                info = await proxy.context()
                (session,) = backend.sessions
                assert session.id == frontend.session_id
                assert session.is_open
                nursery.start_soon(call, proxy)
                await probe.wait("started:k")
            assert probe.is_set("cancelled:k")
            assert probe.is_set("finally:k")
            reason = await session.wait_closed()
        assert len(outcome) == 1
        assert isinstance(outcome[0], ConnectionClosed)
        assert "frontend" in reason
        assert not session.is_open
        assert session.closed_reason == reason
        assert probe.value(f"on_close:{info.handler}") == reason
        assert backend.sessions == ()

    async def test_backend_closing_the_session_fails_pending_calls_with_its_reason(
        self,
    ) -> None:
        probe = Probe()
        outcome: list[BaseException] = []

        async def call(frontend: FrontendIpc) -> None:
            try:
                await frontend.call_backend(
                    ConformanceIpc.channel_name, "wait_until_cancelled", "k"
                )
            except TetherError as exc:
                outcome.append(exc)

        with trio.fail_after(TEST_TIMEOUT):
            async with self.open(self.backend_ipc(probe)) as frontend:
                events = EventsHandler()
                frontend.add_notification_handler(events)
                served = FrontendHandler()
                frontend.register(served)
                proxy = frontend.proxy(ConformanceIpc)
                info = await proxy.context()
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(call, frontend)
                    await probe.wait("started:k")
                    with pytest.raises(ConnectionClosed) as closing:
                        await proxy.close_session("bye")
                assert await frontend.wait_closed() == "bye"
                assert frontend.closed_reason == "bye"
                assert not frontend.is_valid
                with pytest.raises(ConnectionClosed) as later:
                    await proxy.add(1, 1)
            assert await probe.wait("finally:k") is None
        assert len(outcome) == 1
        assert isinstance(outcome[0], ConnectionClosed)
        assert isinstance(outcome[0], TransportError)
        assert outcome[0].reason == "bye"
        assert closing.value.reason == "bye"
        assert later.value.reason == "bye"
        assert events.closed == ["bye"]
        assert served.closed == ["bye"]
        assert probe.value(f"on_close:{info.handler}") == "bye"

    async def test_session_tasks_run_in_the_callers_context_and_end_with_the_session(
        self,
    ) -> None:
        probe = Probe()
        with trio.fail_after(TEST_TIMEOUT):
            async with self.open(self.backend_ipc(probe)) as frontend:
                proxy = frontend.proxy(ConformanceIpc)
                with contexts.activity() as act:
                    await proxy.start_task("t")
                activity_id, session_id = await probe.wait("task-started:t")
                # The task runs beside the session's calls.
                assert await proxy.add(1, 2) == 3
                assert not probe.is_set("task-cancelled:t")
            # No task outlives its session: it was cancelled (and awaited) by now.
            assert probe.is_set("task-cancelled:t")
        assert activity_id == act.activity_id
        assert session_id == frontend.session_id

    async def test_pending_calls_both_ways_fail_when_the_frontend_leaves(self) -> None:
        probe = Probe()
        with trio.fail_after(TEST_TIMEOUT):
            async with self.open(self.backend_ipc(probe)) as frontend:
                served = FrontendHandler()
                frontend.register(served)
                await frontend.proxy(ConformanceIpc).ask_frontend_later("w", "wait", 1)
                await served.started.wait()
            assert served.finished.is_set()
            answer = await probe.wait("later:w")
        # The backend's call to the frontend failed instead of hanging.
        assert answer.startswith("ConnectionClosed:")

    async def test_aclose_ends_the_session_and_fails_pending_calls(self) -> None:
        probe = Probe()
        outcome: list[BaseException] = []

        async def call(proxy: ConformanceIpc) -> None:
            try:
                await proxy.wait_until_cancelled("k")
            except TetherError as exc:
                outcome.append(exc)

        with trio.fail_after(TEST_TIMEOUT):
            async with self.open(self.backend_ipc(probe)) as frontend:
                proxy = frontend.proxy(ConformanceIpc)
                info = await proxy.context()
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(call, proxy)
                    await probe.wait("started:k")
                    await frontend.aclose()
                assert not frontend.is_valid
                reason = frontend.closed_reason
                assert reason is not None
                assert await frontend.wait_closed() == reason
            assert await probe.wait(f"on_close:{info.handler}")
            assert probe.is_set("finally:k")
        assert len(outcome) == 1
        assert isinstance(outcome[0], ConnectionClosed)

    async def test_calls_after_close_fail_cleanly(self) -> None:
        with trio.fail_after(TEST_TIMEOUT):
            async with self.open() as frontend:
                proxy = frontend.proxy(ConformanceIpc)
                assert await proxy.add(1, 1) == 2
            assert not frontend.is_valid
            with pytest.raises(ConnectionClosed):
                await proxy.add(1, 1)
            with pytest.raises(ConnectionClosed):
                await frontend.call_backend(ConformanceIpc.channel_name, "add", 1, 1)
            with pytest.raises(ConnectionClosed):
                await frontend.send(FrontendEvents.channel_name, "clicked", 1, Point(0, 0))
            with pytest.raises(ConnectionClosed):
                await frontend.notifier(FrontendEvents).clicked(1, Point(0, 0))

    # -- cancellation and deadlines ----------------------------------------------

    async def test_cancelling_the_caller_cancels_the_handler(self) -> None:
        probe = Probe()
        with trio.fail_after(TEST_TIMEOUT):
            async with self.open(self.backend_ipc(probe)) as frontend:
                proxy = frontend.proxy(ConformanceIpc)
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(proxy.wait_until_cancelled, "typed")
                    nursery.start_soon(
                        frontend.call_backend,
                        ConformanceIpc.channel_name,
                        "wait_until_cancelled",
                        "untyped",
                    )
                    await probe.wait("started:typed")
                    await probe.wait("started:untyped")
                    nursery.cancel_scope.cancel()
                for key in ("typed", "untyped"):
                    await probe.wait(f"cancelled:{key}")
                    assert probe.is_set(f"finally:{key}")
                # Only those calls were cancelled: the session still works.
                assert await proxy.add(1, 2) == 3
                assert frontend.is_valid

    async def test_caller_deadline_becomes_the_handler_deadline(self) -> None:
        with trio.fail_after(TEST_TIMEOUT):
            async with self.open() as frontend:
                proxy = frontend.proxy(ConformanceIpc)
                with trio.move_on_after(3):
                    info = await proxy.context()
                unbounded = await proxy.context()
        for left in (info.seconds_left, info.context_deadline_left):
            assert left is not None
            assert 0 < left <= 3
        # Outside move_on_after the call carries only the test's own, longer cap.
        for left in (unbounded.seconds_left, unbounded.context_deadline_left):
            assert left is None or left > 3

    async def test_handler_is_cancelled_when_the_deadline_passes(self) -> None:
        probe = Probe()
        with trio.fail_after(TEST_TIMEOUT):
            async with self.open(self.backend_ipc(probe)) as frontend:
                proxy = frontend.proxy(ConformanceIpc)
                with trio.move_on_after(0.2) as scope:
                    await proxy.wait_until_cancelled("k")
                assert scope.cancelled_caught
                await probe.wait("finally:k")
                started: IpcContextInfo = probe.value("started:k")
                assert started.seconds_left is not None
                assert started.seconds_left <= 0.2
                assert await proxy.add(2, 2) == 4

    async def test_handler_past_its_deadline_answers_deadline_exceeded(self) -> None:
        probe = Probe()

        async def call(
            proxy: ConformanceIpc,
            key: str,
            budget: float,
            outcome: list[BaseException],
            *,
            task_status: trio.TaskStatus[trio.CancelScope] = trio.TASK_STATUS_IGNORED,
        ) -> None:
            with trio.CancelScope(deadline=trio.current_time() + budget) as scope:
                task_status.started(scope)
                try:
                    await proxy.wait_until_cancelled(key)
                except TetherError as exc:
                    outcome.append(exc)

        with trio.fail_after(TEST_TIMEOUT):
            async with self.open(self.backend_ipc(probe)) as frontend:
                proxy = frontend.proxy(ConformanceIpc)
                outcome: list[BaseException] = []
                # The call carries the caller's deadline; once the handler runs,
                # the caller stops enforcing it, so the backend's answer is what
                # comes back. A retry with more time covers a slow start.
                for key, budget in (("k1", 0.3), ("k2", 1.0), ("k3", 3.0)):
                    async with trio.open_nursery() as nursery:
                        scope = await nursery.start(call, proxy, key, budget, outcome)
                        await probe.wait(f"started:{key}")
                        scope.deadline = math.inf
                    if outcome:
                        break
                assert len(outcome) == 1, "the caller's own deadline passed every time"
                assert probe.is_set(f"finally:{key}")
                assert await proxy.add(2, 2) == 4
        exc = outcome[0]
        assert isinstance(exc, DeadlineExceeded)
        assert exc.remote
        assert exc.status == 504

    # -- contexts ----------------------------------------------------------------

    async def test_handler_sees_the_session_the_activity_and_the_application(self) -> None:
        with trio.fail_after(TEST_TIMEOUT):
            async with self.open(
                application_id="conformance-app", application_version="9.8.7"
            ) as frontend:
                proxy = frontend.proxy(ConformanceIpc)
                with contexts.activity() as act:
                    info = await proxy.context()
                no_activity = await proxy.context()
        assert info.activity_id == act.activity_id
        assert info.session_id == frontend.session_id
        assert info.current_session_id == frontend.session_id
        assert info.application_id == "conformance-app"
        assert info.application_version == "9.8.7"
        assert info.current_session_application_id == "conformance-app"
        assert info.operation == "tether.testing.ipc.context"
        # A call outside any activity still gets an ActivityId of its own.
        assert no_activity.activity_id
        assert no_activity.activity_id != act.activity_id
        assert no_activity.session_id == frontend.session_id

    async def test_frontend_listeners_see_the_activity_of_the_call_that_notified(self) -> None:
        with trio.fail_after(TEST_TIMEOUT):
            async with self.open(application_id="conformance-app") as frontend:
                seen = Received()

                def listener(method: str, n: int) -> None:
                    ctx = contexts.current()
                    assert ctx is not None
                    seen.add((n, ctx.activity_id, ctx.session_id))
                    with pytest.raises(RuntimeError):
                        current_session()  # the frontend has no backend session

                frontend.add_listener(ConformanceIpcEvents.channel_name, listener)
                proxy = frontend.proxy(ConformanceIpc)
                with contexts.activity() as first:
                    await proxy.send_ticks(0, 1)
                with contexts.activity() as second:
                    await proxy.send_ticks(1, 1)
                got = await seen.wait_for(2)
        assert got == [
            (0, first.activity_id, frontend.session_id),
            (1, second.activity_id, frontend.session_id),
        ]
        with pytest.raises(RuntimeError):
            current_session()
