"""The IPC conformance suite: a session's connection lost mid-session (resume).

A transport's test class says what it promises with `resumes`:

- True (WebSocket): the session survives a lost connection: the frontend
  connects again (with the backoff of the `retry=` it is given) and each side
  sends again what the other has not got: every notification arrives exactly
  once, in order, every invoke either way is answered once (its handler ran
  once), and the state goes back to CONNECTED.
- False (memory, local): a lost connection ends the session, on both sides,
  with a reason: the frontend's state is CLOSED, its calls fail with
  `ConnectionClosed`, and the backend's handler hears `on_close`.

The connection is broken with `faulty_streams()` cuts (never `drop()`: a
stream that loses messages but stays open is not one a real transport gives,
and resuming counts messages on an ordered stream).
"""

from __future__ import annotations

import contextlib
from collections.abc import Awaitable, Callable
from contextlib import AbstractAsyncContextManager
from typing import Any, ClassVar

import pytest
import trio

from ..runtime import BackendIpc, ConnectionClosed, ConnectionState, FrontendIpc, RetryPolicy
from ._faults import FaultyStreams, faulty_streams
from ._ipc_fixtures import ConformanceIpc, EventsHandler, FrontendHandler, IpcSuiteBase
from ._probe import Probe
from ._rpc_suite import TEST_TIMEOUT

#: Quick reconnects, so a case does not wait out the default backoff.
QUICK = RetryPolicy(attempts=20, initial_backoff=0.01, max_backoff=0.05)
#: The burst: notifications from the backend, invokes to it and to the frontend.
NOTIFICATIONS = 1500
#: Invokes each way go on until the cuts are done, at least the first, at
#: most the second (bounding the case).
MIN_INVOKES = 20
MAX_INVOKES = 100_000


class IpcResumeTests(IpcSuiteBase):
    """A session's connection cut during bursts both ways (see the module docstring)."""

    #: Whether a session survives its connection's loss (see the module docstring).
    resumes: ClassVar[bool] = False

    def open_resumable(
        self, backend: BackendIpc, **options: Any
    ) -> AbstractAsyncContextManager[FrontendIpc]:
        """The session these cases cut; a transport whose connection is not a
        `FaultyStream` at the bottom (HTTP: its resuming sits under the
        stream the engine sees) opens it through a fault injector of its own."""
        return self.open(backend, **options)

    async def cut_connection(self, faults: FaultyStreams, frontend: FrontendIpc, cut: int) -> None:
        """Break the session's connection, and (where it resumes) wait until it is back."""
        faults.latest.cut(f"cut {cut} by the conformance suite")
        if self.resumes:
            await faults.wait_opened(cut + 1)

    def resume_options(self) -> dict[str, Any]:
        """What `connect_ipc` is given for these cases: quick reconnects where it resumes."""
        return {"retry": QUICK} if self.resumes else {}

    async def test_resume_cuts_during_bursts_both_ways_as_the_transport_promises(self) -> None:
        probe = Probe()
        backend = self.backend_ipc(probe)
        cuts = 3 if self.resumes else 1
        marks = [NOTIFICATIONS * cut // (cuts + 1) for cut in range(1, cuts + 1)]
        with trio.fail_after(TEST_TIMEOUT), faulty_streams() as faults:
            async with self.open_resumable(backend, **self.resume_options()) as frontend:
                events = EventsHandler()
                frontend.add_notification_handler(events)
                doubler = FrontendHandler()
                frontend.register(doubler)
                proxy = frontend.proxy(ConformanceIpc)
                handler = (await proxy.context()).handler
                states: list[ConnectionState] = []
                outcomes: dict[str, list[Any]] = {"ticks": [], "adds": [], "asks": []}
                cut_done = trio.Event()
                cuts_made: list[int] = []

                async def watch() -> None:
                    state = frontend.state
                    while state is not ConnectionState.CLOSED:
                        state = await frontend.wait_state_change(state)
                        states.append(state)

                async def cutter() -> None:
                    for cut, mark in enumerate(marks, 1):
                        await events.received.wait_for(mark)
                        await self.cut_connection(faults, frontend, cut)
                        cuts_made.append(cut)
                    cut_done.set()

                async def burst(name: str, invoke: Callable[[int], Awaitable[Any]]) -> None:
                    # Invokes in flight across every cut: until the cuts are
                    # done (resumes), or until the session ends (does not).
                    try:
                        for n in range(MAX_INVOKES):
                            if self.resumes and cut_done.is_set() and n >= MIN_INVOKES:
                                return
                            outcomes[name].append(await invoke(n))
                    except ConnectionClosed as exc:
                        outcomes[name].append(exc)

                async def ticks(_: int) -> int:
                    result = await proxy.send_ticks(0, NOTIFICATIONS)
                    return result

                async with trio.open_nursery() as nursery:
                    nursery.start_soon(watch)
                    nursery.start_soon(cutter)
                    async with trio.open_nursery() as bursts:
                        bursts.start_soon(burst, "adds", lambda n: proxy.add(n, 1))
                        bursts.start_soon(burst, "asks", lambda n: proxy.ask_frontend("double", n))
                        with contextlib.suppress(ConnectionClosed):
                            outcomes["ticks"].append(await ticks(0))
                    if self.resumes:
                        await events.received.wait_for(NOTIFICATIONS)
                    else:
                        await frontend.wait_closed()
                    nursery.cancel_scope.cancel()
                if self.resumes:
                    assert cuts_made == list(range(1, cuts + 1))
                    assert events.received.items == [("tick", n) for n in range(NOTIFICATIONS)]
                    assert outcomes["ticks"] == [NOTIFICATIONS]
                    adds, asks = outcomes["adds"], outcomes["asks"]
                    assert adds == [n + 1 for n in range(len(adds))]
                    assert asks == [f"ok:{2 * n}" for n in range(len(asks))]
                    assert len(doubler.activities) == len(asks)  # each ran once
                    # Each cut is seen as at least one RECONNECTING, CONNECTED (a
                    # transport with several connections, HTTP, may see more).
                    assert states[::2] == [ConnectionState.RECONNECTING] * (len(states) // 2)
                    assert states[1::2] == [ConnectionState.CONNECTED] * (len(states) // 2)
                    assert len(states) % 2 == 0
                    assert len(states) >= 2 * cuts
                    assert frontend.state is ConnectionState.CONNECTED
                else:
                    await self._check_ended(probe, handler, frontend, events, outcomes, states)

    async def _check_ended(
        self,
        probe: Probe,
        handler: int,
        frontend: FrontendIpc,
        events: EventsHandler,
        outcomes: dict[str, list[Any]],
        states: list[ConnectionState],
    ) -> None:
        assert frontend.closed_reason, "the frontend must say why the session ended"
        assert frontend.state is ConnectionState.CLOSED
        assert states == [ConnectionState.CLOSED]
        # The invokes in flight failed with the session; none is answered twice.
        for name in ("adds", "asks"):
            assert isinstance(outcomes[name][-1], ConnectionClosed), outcomes[name][-1:]
        assert outcomes["adds"][:-1] == [n + 1 for n in range(len(outcomes["adds"]) - 1)]
        # What arrived came once and in order: the start of the burst.
        got = events.received.items
        assert got == [("tick", n) for n in range(len(got))]
        assert len(got) >= NOTIFICATIONS // 2
        backend_reason = await probe.wait(f"on_close:{handler}")
        assert backend_reason, "the backend's handler must hear why the session ended"
        with pytest.raises(ConnectionClosed):
            await frontend.proxy(ConformanceIpc).add(1, 1)
