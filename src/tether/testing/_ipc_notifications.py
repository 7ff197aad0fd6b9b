"""The IPC conformance suite: notifications both ways (delivery, order,
back-pressure, listener failures).
"""

from __future__ import annotations

import logging
from typing import Any

import pytest
import trio

from .. import contexts
from ..runtime import ConnectionClosed
from ._ipc_fixtures import (
    HUNG_CALL,
    RAW_CHANNEL,
    BackendRecorder,
    ConformanceIpc,
    ConformanceIpcEvents,
    EventsHandler,
    FrontendEvents,
    FrontendHandler,
    IpcSuiteBase,
    Received,
    errors_logged,
    frontend_caller,
)
from ._probe import Probe
from ._rpc_samples import Circle, Point, Square
from ._rpc_suite import TEST_TIMEOUT


class IpcNotificationTests(IpcSuiteBase):
    """Notifications both ways: delivery, order, back-pressure and listener failures."""

    # -- notifications -------------------------------------------------------------

    async def test_typed_notifications_reach_a_notification_handler_as_their_types(
        self,
    ) -> None:
        shape = Circle("circle", Point(0.5, -1.0), 2.0)
        path = [Point(1.0, 2.0), Point(3.5, -4.0)]
        with trio.fail_after(TEST_TIMEOUT):
            async with self.open() as frontend:
                events = EventsHandler()
                frontend.add_notification_handler(events)
                proxy = frontend.proxy(ConformanceIpc)
                assert await proxy.send_ticks(7, 2) == 2
                await proxy.send_moved(shape, path)
                got = await events.received.wait_for(3)
        assert got == [("tick", 7), ("tick", 8), ("moved", shape, path)]
        assert isinstance(got[2][1], Circle)
        assert all(isinstance(point, Point) for point in got[2][2])

    async def test_raw_listener_gets_the_method_and_the_json_arguments(self) -> None:
        with trio.fail_after(TEST_TIMEOUT):
            async with self.open() as frontend:
                events = Received()
                raw = Received()
                frontend.add_listener(
                    ConformanceIpcEvents.channel_name, lambda *message: events.add(message)
                )
                frontend.add_listener(RAW_CHANNEL, lambda *message: raw.add(message))
                proxy = frontend.proxy(ConformanceIpc)
                await proxy.send_ticks(3, 1)
                await proxy.send_moved(Square("square", Point(0.0, 1.0), 2.5), [Point(1.0, 2.0)])
                assert await proxy.send_raw(10) is True  # BackendIpc.is_valid in a handler
                assert await events.wait_for(2) == [
                    ("tick", 3),
                    (
                        "moved",
                        {"kind": "square", "corner": {"x": 0.0, "y": 1.0}, "side": 2.5},
                        [{"x": 1.0, "y": 2.0}],
                    ),
                ]
                # IpcSession.send and BackendIpc.send (to the current session's frontend).
                assert await raw.wait_for(2) == [
                    ("via-session", 10, {"x": 1.0, "y": 2.0}),
                    ("via-backend", 11),
                ]

    async def test_frontend_messages_reach_the_backend_listeners(self) -> None:
        backend = self.backend_ipc()
        heard = BackendRecorder()
        backend.add_listener(FrontendEvents.channel_name, heard.listener)
        with trio.fail_after(TEST_TIMEOUT):
            async with self.open(backend) as frontend:
                with contexts.activity() as act:
                    await frontend.send(FrontendEvents.channel_name, "clicked", 1, Point(1, 2))
                    await frontend.notifier(FrontendEvents).clicked(2, Point(3.0, 4.5))
                got = await heard.wait_for(2)
        assert [(h.method, h.args) for h in got] == [
            ("clicked", (1, {"x": 1, "y": 2})),
            ("clicked", (2, {"x": 3.0, "y": 4.5})),
        ]
        # The listener runs in the sender's session, with the sender's activity.
        assert {h.session_id for h in got} == {frontend.session_id}
        assert {h.activity_id for h in got} == {act.activity_id}

    async def test_frontend_message_to_a_served_channel_runs_the_handler_method(self) -> None:
        probe = Probe()
        with trio.fail_after(TEST_TIMEOUT):
            async with self.open(self.backend_ipc(probe)) as frontend:
                with contexts.activity() as act:
                    await frontend.send(ConformanceIpc.channel_name, "record", "one-way", 5)
                value, activity_id, session_id = await probe.wait("record:one-way")
                assert await frontend.proxy(ConformanceIpc).add(1, 1) == 2
        assert value == 5
        assert activity_id == act.activity_id
        assert session_id == frontend.session_id

    async def test_notifications_arrive_in_order_both_ways(self) -> None:
        # A burst far over the backend's queue bound reaches a frontend that
        # keeps up: only a frontend that stops reading may overflow it.
        backend = self.backend_ipc(max_pending_notifications=16)
        heard = BackendRecorder()
        backend.add_listener(FrontendEvents.channel_name, heard.listener)
        with trio.fail_after(TEST_TIMEOUT):
            async with self.open(backend) as frontend:
                ticks = Received()
                frontend.add_listener(
                    ConformanceIpcEvents.channel_name, lambda method, n: ticks.add(n)
                )
                assert await frontend.proxy(ConformanceIpc).send_ticks(0, 200) == 200
                assert await ticks.wait_for(200) == list(range(200))
                notifier = frontend.notifier(FrontendEvents)
                for n in range(200):
                    await notifier.clicked(n, Point(n, 0))
                got = await heard.wait_for(200)
                assert frontend.is_valid
        assert [h.args[0] for h in got] == list(range(200))

    async def test_a_notification_sent_before_the_handler_returns_arrives_before_the_call_returns(
        self,
    ) -> None:
        got: list[int] = []
        with trio.fail_after(TEST_TIMEOUT):
            async with self.open() as frontend:
                frontend.add_listener(
                    ConformanceIpcEvents.channel_name, lambda method, n: got.append(n)
                )
                proxy = frontend.proxy(ConformanceIpc)
                for n in range(0, 60, 3):  # scheduling varies: look more than once
                    await proxy.send_ticks(n, 3)
                    assert got == list(range(n + 3))

    async def test_removers_stop_delivery(self) -> None:
        backend = self.backend_ipc()
        removed_heard, kept_heard = BackendRecorder(), BackendRecorder()
        remove_heard = backend.add_listener(FrontendEvents.channel_name, removed_heard.listener)
        backend.add_listener(FrontendEvents.channel_name, kept_heard.listener)
        with trio.fail_after(TEST_TIMEOUT):
            async with self.open(backend) as frontend:
                removed, kept = Received(), Received()
                events = EventsHandler()
                remove_listener = frontend.add_listener(
                    ConformanceIpcEvents.channel_name, lambda method, n: removed.add(n)
                )
                frontend.add_listener(
                    ConformanceIpcEvents.channel_name, lambda method, n: kept.add(n)
                )
                remove_events = frontend.add_notification_handler(events)
                remove_served = frontend.register(FrontendHandler())
                proxy = frontend.proxy(ConformanceIpc)
                notifier = frontend.notifier(FrontendEvents)

                await proxy.send_ticks(0, 1)
                await notifier.clicked(0, Point(0, 0))
                await kept.wait_for(1)
                await kept_heard.wait_for(1)
                assert removed.items == [0]
                assert events.received.items == [("tick", 0)]
                assert len(removed_heard.items) == 1
                assert await proxy.ask_frontend("double", 2) == "ok:4"

                for remove in (remove_listener, remove_events, remove_served, remove_heard):
                    remove()
                    remove()  # a second call does nothing
                # Messages are delivered one at a time, in order: once the kept
                # listeners got the second, the removed ones would have had the first.
                await proxy.send_ticks(1, 2)
                for n in (1, 2):
                    await notifier.clicked(n, Point(0, 0))
                await kept.wait_for(3)
                await kept_heard.wait_for(3)
                assert removed.items == [0]
                assert events.received.items == [("tick", 0)]
                assert len(removed_heard.items) == 1
                assert (await proxy.ask_frontend("double", 2)).startswith("NotFound:")

    # -- slow frontend ---------------------------------------------------------------

    async def test_a_frontend_whose_listeners_fall_behind_is_closed_as_too_slow(self) -> None:
        probe = Probe()
        # A full queue makes the sender wait for room; a frontend that makes
        # none within slow_frontend_timeout is dropped.
        backend = self.backend_ipc(probe, max_pending_notifications=8, slow_frontend_timeout=0.2)
        release = trio.Event()
        seen: list[int] = []

        async def slow(method: str, n: int) -> None:
            seen.append(n)
            await release.wait()

        with trio.fail_after(TEST_TIMEOUT):
            async with self.open(backend, max_pending_notifications=4) as frontend:
                proxy = frontend.proxy(ConformanceIpc)
                info = await proxy.context()
                frontend.add_listener(ConformanceIpcEvents.channel_name, slow)
                await proxy.start_flood(5000)  # bounded: far more than any buffer's room
                sent, error_reason, is_open, closed_reason = await probe.wait("flood")
                assert error_reason == "frontend too slow"
                assert not is_open
                assert closed_reason == "frontend too slow"
                assert sent < 5000
                assert await probe.wait(f"on_close:{info.handler}") == "frontend too slow"
                # The frontend finds out once its listener lets it read on.
                assert frontend.is_valid or frontend.closed_reason == "frontend too slow"
                release.set()
                assert await frontend.wait_closed() == "frontend too slow"
                assert frontend.closed_reason == "frontend too slow"
                assert not frontend.is_valid
                with pytest.raises(ConnectionClosed) as caught:
                    await proxy.add(1, 1)
                assert caught.value.reason == "frontend too slow"
        # What arrived was delivered in order, nothing skipped.
        assert seen == list(range(len(seen)))
        assert 0 < len(seen) <= sent

    async def test_a_frontend_listener_can_call_the_backend_while_notifications_wait(
        self,
    ) -> None:
        # Replies must not be stuck behind notifications that wait for the very
        # listener awaiting them: more notifications than the frontend's queue
        # holds, each answered by a call to the backend.
        await self._listener_calls_back_through_a_full_queue(max_pending_notifications=2)

    async def test_listeners_behind_in_bytes_make_a_slow_frontend(self) -> None:
        # The count bounds are far away: the byte bounds (max_pending_bytes,
        # both sides) are what makes the sender wait, and then drops the frontend.
        probe = Probe()
        backend = self.backend_ipc(
            probe, max_pending_bytes=512, max_pending_notifications=4096, slow_frontend_timeout=0.2
        )
        release = trio.Event()
        seen: list[int] = []

        async def slow(method: str, n: int) -> None:
            seen.append(n)
            await release.wait()

        with trio.fail_after(TEST_TIMEOUT):
            async with self.open(
                backend, max_pending_bytes=512, max_pending_notifications=4096
            ) as frontend:
                proxy = frontend.proxy(ConformanceIpc)
                frontend.add_listener(ConformanceIpcEvents.channel_name, slow)
                await proxy.start_flood(5000)  # bounded: far more than any buffer's room
                sent, error_reason, is_open, _ = await probe.wait("flood")
                assert error_reason == "frontend too slow"
                assert not is_open
                assert sent < 5000
                release.set()
                assert await frontend.wait_closed() == "frontend too slow"
        assert seen == list(range(len(seen)))

    async def test_a_notification_larger_than_the_byte_bounds_passes_alone(self) -> None:
        backend = self.backend_ipc(max_pending_bytes=64)
        path = [Point(float(n), -float(n)) for n in range(40)]  # some 1.5 KB encoded
        with trio.fail_after(TEST_TIMEOUT):
            async with self.open(backend, max_pending_bytes=64) as frontend:
                events = EventsHandler()
                frontend.add_notification_handler(events)
                proxy = frontend.proxy(ConformanceIpc)
                for radius in (1.0, 2.0, 3.0):
                    await proxy.send_moved(Circle("circle", Point(0.0, 0.0), radius), path)
                got = await events.received.wait_for(3)
        assert [(item[1].radius, item[2]) for item in got] == [
            (1.0, path),
            (2.0, path),
            (3.0, path),
        ]

    async def test_a_frontend_listener_can_call_the_backend_while_bytes_wait(self) -> None:
        # A byte bound of 1: the frontend's queue is full after every message.
        await self._listener_calls_back_through_a_full_queue(max_pending_bytes=1)

    async def _listener_calls_back_through_a_full_queue(self, **bounds: int) -> None:
        """Six notifications, each answered by the frontend's listener with a call to
        the backend, through a frontend queue that `bounds` keep full."""
        with trio.fail_after(TEST_TIMEOUT):
            async with self.open(None, **bounds) as frontend:
                proxy = frontend.proxy(ConformanceIpc)
                answers = Received()

                async def listener(method: str, n: int) -> None:
                    answers.add(await proxy.add(n, 100))

                frontend.add_listener(ConformanceIpcEvents.channel_name, listener)
                with trio.move_on_after(HUNG_CALL) as stuck:
                    await proxy.send_ticks(0, 6)
                    await answers.wait_for(6)
                assert not stuck.cancelled_caught, (
                    f"the session hung after {answers.items}: a reply waits behind "
                    "notifications the frontend stopped reading"
                )
                assert answers.items == [100, 101, 102, 103, 104, 105]

    async def test_a_backend_listener_can_call_the_frontend_while_messages_wait(self) -> None:
        backend = self.backend_ipc(max_pending_notifications=2)
        answers = BackendRecorder()
        backend.add_listener(FrontendEvents.channel_name, frontend_caller("double", answers))
        with trio.fail_after(TEST_TIMEOUT):
            async with self.open(backend) as frontend:
                frontend.register(FrontendHandler())
                notifier = frontend.notifier(FrontendEvents)
                for n in range(6):  # more than the backend's queue holds
                    await notifier.clicked(n, Point(0, 0))
                got = [(heard.method, heard.args) for heard in await answers.wait_for(6)]
        assert got == [(f"ok:{2 * n}", (n,)) for n in range(6)], (
            "a backend listener's call to the frontend hung: its reply waits behind "
            "one-way messages the backend stopped reading"
        )

    async def test_leaving_ends_the_session_while_backend_listeners_are_behind(self) -> None:
        backend = self.backend_ipc(max_pending_notifications=2)
        answers = BackendRecorder()
        backend.add_listener(FrontendEvents.channel_name, frontend_caller("wait", answers))
        with trio.fail_after(TEST_TIMEOUT):
            async with self.open(backend) as frontend:
                served = FrontendHandler()
                frontend.register(served)
                notifier = frontend.notifier(FrontendEvents)
                for n in range(6):  # more than the backend's queue holds
                    await notifier.clicked(n, Point(0, 0))
                await served.started.wait()
            got = await answers.wait_for(6)
        # The backend saw the frontend leave: the listener's pending call failed,
        # and so did the calls of the messages that were still waiting.
        assert got[0].method.startswith("ConnectionClosed:"), (
            f"the backend did not notice the frontend left ({got[0].method}): its reader "
            "waits for its listeners instead of reading"
        )
        assert all(heard.method.startswith("ConnectionClosed:") for heard in got)
        assert backend.sessions == ()

    # -- listener failures ---------------------------------------------------------

    async def test_a_frontend_listener_that_raises_is_logged_and_the_session_goes_on(
        self, caplog: pytest.LogCaptureFixture
    ) -> None:
        caplog.set_level(logging.ERROR, logger="tether.ipc")
        caplog.handler.addFilter(contexts.ContextFilter())

        def broken(method: str, n: int) -> None:
            raise ValueError(f"listener broke on {n}")

        with trio.fail_after(TEST_TIMEOUT):
            async with self.open() as frontend:
                after = Received()
                frontend.add_listener(ConformanceIpcEvents.channel_name, broken)
                frontend.add_listener(
                    ConformanceIpcEvents.channel_name, lambda method, n: after.add(n)
                )
                proxy = frontend.proxy(ConformanceIpc)
                with contexts.activity() as act:
                    await proxy.send_ticks(0, 2)
                assert await after.wait_for(2) == [0, 1]
                assert await proxy.add(1, 2) == 3
                assert frontend.is_valid
        records = errors_logged(caplog, ValueError)
        assert len(records) == 2
        assert [str(r.exc_info[1]) for r in records if r.exc_info] == [
            "listener broke on 0",
            "listener broke on 1",
        ]
        assert {getattr(r, "activity_id", None) for r in records} == {act.activity_id}

    async def test_a_backend_listener_that_raises_is_logged_and_the_session_goes_on(
        self, caplog: pytest.LogCaptureFixture
    ) -> None:
        caplog.set_level(logging.ERROR, logger="tether.ipc")
        caplog.handler.addFilter(contexts.ContextFilter())

        def broken(method: str, *args: Any) -> None:
            raise ValueError(f"backend listener broke on {args[0]}")

        backend = self.backend_ipc()
        heard = BackendRecorder()
        backend.add_listener(FrontendEvents.channel_name, broken)
        backend.add_listener(FrontendEvents.channel_name, heard.listener)
        with trio.fail_after(TEST_TIMEOUT):
            async with self.open(backend) as frontend:
                with contexts.activity() as act:
                    await frontend.notifier(FrontendEvents).clicked(1, Point(0, 0))
                await heard.wait_for(1)
                assert await frontend.proxy(ConformanceIpc).add(1, 2) == 3
                assert frontend.is_valid
        records = errors_logged(caplog, ValueError)
        assert len(records) == 1
        assert getattr(records[0], "activity_id", None) == act.activity_id
