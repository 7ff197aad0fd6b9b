# mypy: disable-error-code="empty-body"
"""IPC engine edge cases found in review: hangs, lost sends, leaks, wrong sessions.

Each test is bounded by `trio.fail_after`. Same-loop tests that wait for
something that should not happen use the autojump clock, so that a bug fails
fast instead of waiting out a real timeout.
"""

from __future__ import annotations

import collections
import itertools
import random
import threading
from typing import Any, ClassVar

import pytest
import trio
import trio.testing

import tether
from tether.runtime import open_ipc_connection, serve_ipc_session
from tether.runtime._protocol import PROTOCOL_VERSION, Hello, Welcome, decode, encode
from tether.runtime._stream import MessageStream
from tether.transports import memory
from tether.transports.memory import _connect as memory_module

TIMEOUT = 10.0


class EchoIpc(tether.IpcInterface):
    channel_name = "review-echo"
    version = "1.0.0"

    async def echo(self, value: int) -> int: ...
    async def block(self) -> None: ...


class EchoHandler(tether.IpcHandler, EchoIpc):
    def __init__(self) -> None:
        self.closed: list[str] = []

    async def echo(self, value: int) -> int:
        return value

    async def block(self) -> None:
        await trio.sleep_forever()

    def on_close(self, reason: str) -> None:
        self.closed.append(reason)


def make_backend(**options: Any) -> tether.BackendIpc:
    backend = tether.BackendIpc(**options)
    backend.register(EchoHandler)
    return backend


class GatedStream(MessageStream):
    """A stream whose first send (the backend's `welcome`) waits for `gate`.

    Any network transport yields in `send_message`; this makes the moment
    between "session listed in `backend.sessions`" and "welcome written" one a
    test can aim at.
    """

    def __init__(self, inner: MessageStream) -> None:
        self.inner = inner
        self.max_message_size = inner.max_message_size
        self.entered = trio.Event()
        self.gate = trio.Event()
        self.first = True

    async def send_message(self, data: bytes) -> None:
        if self.first:
            self.first = False
            self.entered.set()
            await self.gate.wait()
        await self.inner.send_message(data)

    async def receive_message(self) -> bytes:
        return await self.inner.receive_message()

    async def aclose(self, reason: str | None = None) -> None:
        await self.inner.aclose(reason)


# ---------------------------------------------------------------------------
# Hangs


async def test_a_session_closed_before_its_welcome_is_written_still_ends(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """`backend.sessions` lists a session before `welcome` is written: closing it then must work.

    Otherwise the session runs on with `closed_reason` set: it serves invokes
    but drops every reply, so the frontend's calls wait forever.
    """
    backend = make_backend()
    client, raw_server = memory.stream_pair()
    server = GatedStream(raw_server)
    outcome: list[object] = []

    async def frontend() -> None:
        try:
            async with open_ipc_connection(client) as frontend_ipc:
                outcome.append(await frontend_ipc.call_backend("review-echo", "echo", 1))
        except tether.TetherError as exc:
            outcome.append(exc)

    ended = False
    with trio.fail_after(TIMEOUT):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(serve_ipc_session, backend, server)
            nursery.start_soon(frontend)
            await server.entered.wait()
            (session,) = backend.sessions
            session.close("shutting down")
            server.gate.set()
            with trio.move_on_after(5):
                assert await session.wait_closed() == "shutting down"
                ended = True
            if not ended:
                nursery.cancel_scope.cancel()
    assert ended, "the session was closed but never ended"
    assert len(outcome) == 1
    assert isinstance(outcome[0], tether.ConnectionClosed)
    assert outcome[0].reason == "shutting down"
    assert backend.sessions == ()


async def test_a_send_queued_behind_a_blocked_write_fails_when_the_frontend_closes(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """The writer is cancelled mid-write: the message it holds must fail its sender, not hang it.

    The same happens with `thread=True` on any close while the writer is
    writing, since the cross-thread stream always yields in `send_message`
    (the randomized test below hits it).
    """
    client, server = memory.stream_pair()
    release_one = trio.Event()
    finished = {"flood": trio.Event(), "queued": trio.Event()}
    reasons: dict[str, str | None] = {}

    async def fake_backend() -> None:
        decode(await server.receive_message())
        await server.send_message(encode(Welcome(PROTOCOL_VERSION, "s", {})))
        await release_one.wait()
        await server.receive_message()  # room for exactly one more message
        await trio.sleep_forever()  # then never reads again

    async def sender(name: str, frontend_ipc: tether.FrontendIpc, count: int) -> None:
        try:
            for n in range(count):
                await frontend_ipc.send("events", name, n)
        except tether.ConnectionClosed as exc:
            reasons[name] = exc.reason
        finished[name].set()

    with trio.fail_after(TIMEOUT):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(fake_backend)
            async with open_ipc_connection(client) as frontend_ipc:
                # 256 fit in the stream; the next one blocks in a direct send.
                nursery.start_soon(sender, "flood", frontend_ipc, 300)
                await trio.testing.wait_all_tasks_blocked()
                nursery.start_soon(sender, "queued", frontend_ipc, 1)  # queued behind it
                await trio.testing.wait_all_tasks_blocked()
                release_one.set()  # the writer takes "queued" and blocks writing it
                await trio.testing.wait_all_tasks_blocked()
                await frontend_ipc.aclose()
                with trio.move_on_after(5):
                    await finished["queued"].wait()
            nursery.cancel_scope.cancel()
    assert finished["queued"].is_set(), "the send the writer held never returned"
    assert reasons == {"flood": "closed by the frontend", "queued": "closed by the frontend"}


async def test_connect_closes_the_stream_when_the_welcome_lacks_a_listed_channel(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """open_ipc_connection re-checks `channels` against the welcome; failing, it must still close.

    With `connect_ipc`, a stream left open keeps the backend's session (and
    so the `connect_ipc` block's exit) waiting forever. A welcome can lack the
    channel when it is unregistered between the backend's check and its
    welcome (the welcome lists `backend.channels` of that moment).
    """
    client, server = memory.stream_pair()
    closed = trio.Event()

    async def fake_backend() -> None:
        decode(await server.receive_message())
        await server.send_message(encode(Welcome(PROTOCOL_VERSION, "s", {})))
        try:
            await server.receive_message()
        except tether.ConnectionClosed:
            closed.set()

    with trio.fail_after(TIMEOUT):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(fake_backend)
            with pytest.raises(tether.NotFound):
                async with open_ipc_connection(client, channels=[EchoIpc]):
                    pass
            with trio.move_on_after(5):
                await closed.wait()
            nursery.cancel_scope.cancel()
    assert closed.is_set(), "the frontend left the stream open"


class _CancelWhenStarted(trio.abc.Instrument):
    """Cancel `scope` when the memory transport's thread starter is woken by `started`."""

    def __init__(self, scope: trio.CancelScope) -> None:
        self.scope = scope
        self.task: trio.lowlevel.Task | None = None
        self.scheduled = 0

    def task_spawned(self, task: trio.lowlevel.Task) -> None:
        if task.name.endswith("_serve_in_thread"):
            self.task = task

    def task_scheduled(self, task: trio.lowlevel.Task) -> None:
        if task is self.task:
            self.scheduled += 1
            if self.scheduled == 2:  # woken by `started`, not yet running
                self.scope.cancel()


async def test_thread_connect_cancelled_as_the_backend_thread_starts_does_not_hang(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A cancel that lands between the backend thread's `started` and the starter running.

    `task_status.started()` in a cancelled `nursery.start` quietly does not
    reparent; the starter then waits for the backend thread, which waits for
    a `hello` that never comes: an uncancellable hang. A watchdog closes the
    frontend's end after a while, so that the bug fails this test instead of
    hanging the run.
    """
    pairs: list[tuple[MessageStream, MessageStream]] = []
    real_stream_pair = memory_module.stream_pair

    def recording_stream_pair(**options: Any) -> tuple[MessageStream, MessageStream]:
        pair = real_stream_pair(**options)
        pairs.append(pair)
        return pair

    monkeypatch.setattr(memory_module, "stream_pair", recording_stream_pair)
    hung: list[bool] = []
    left = trio.Event()

    async def watchdog() -> None:
        # Waits for connect_ipc to be left; if that does not come within the
        # bound, the hang is uncancellable: release it by closing the stream.
        with trio.move_on_after(3):
            await left.wait()
            return
        hung.append(True)
        await pairs[0][0].aclose("released by the test's watchdog")

    with trio.fail_after(TIMEOUT):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(watchdog)
            with trio.CancelScope() as scope:
                instrument = _CancelWhenStarted(scope)
                trio.lowlevel.add_instrument(instrument)
                try:
                    async with memory.connect_ipc(make_backend(), thread=True):
                        await trio.sleep_forever()
                finally:
                    trio.lowlevel.remove_instrument(instrument)
            left.set()
    assert instrument.scheduled >= 2, "the starter was never woken: is the test stale?"
    assert scope.cancelled_caught
    assert hung == [], "connect_ipc hung, uncancellably, until its stream was closed"


async def test_a_session_task_is_its_sessions_even_when_started_from_elsewhere() -> None:
    """`IpcSession.start_soon` tasks see their own session as `current_session()`.

    Started from another session's handler (a broadcast) or from outside any
    session, the task inherits the caller's context, so `current_session()`
    is the caller's session (or raises): a broadcast reaches the wrong frontend.
    """

    class Broadcast(tether.IpcHandler, EchoIpc):
        async def echo(self, value: int) -> int:
            for session in backend.sessions:
                session.start_soon(push, value)
            return value

        async def block(self) -> None:
            pass

    async def push(value: int) -> None:
        try:
            await tether.current_session().send("news", "hello", value)
        except RuntimeError:
            failures.append("no current session")

    failures: list[str] = []
    backend = tether.BackendIpc()
    backend.register(Broadcast)
    heard: dict[str, list[int]] = {"a": [], "b": []}
    with trio.fail_after(TIMEOUT):
        async with (
            memory.connect_ipc(backend) as a,
            memory.connect_ipc(backend) as b,
        ):
            a.add_listener("news", lambda method, value: heard["a"].append(value))
            b.add_listener("news", lambda method, value: heard["b"].append(value))
            await a.call_backend("review-echo", "echo", 1)  # from session a's handler
            for session in backend.sessions:  # from outside any session
                session.start_soon(push, 2)
            await trio.testing.wait_all_tasks_blocked()
    assert failures == []
    assert heard == {"a": [1, 2], "b": [1, 2]}


async def test_session_start_soon_from_another_trio_run_raises() -> None:
    """With `thread=True` the session lives in the backend's run; the frontend's run can see it.

    `send` and `proxy` raise RuntimeError there. `start_soon` instead runs the
    task in the frontend's run as a child of the backend's nursery (a
    TrioInternalError if that nursery is closing when the task ends).
    """
    ran_in: list[bool] = []

    async def where() -> None:
        ran_in.append(trio.lowlevel.current_trio_token() is frontend_token)

    frontend_token = trio.lowlevel.current_trio_token()
    backend = make_backend()
    with trio.fail_after(TIMEOUT):
        async with memory.connect_ipc(backend, thread=True):
            (session,) = backend.sessions
            refused: list[str] = []
            try:
                session.start_soon(where)
            except RuntimeError as exc:
                refused.append(str(exc))
            await trio.testing.wait_all_tasks_blocked()
    assert ran_in == [], "the session task ran in the frontend's Trio run"
    assert len(refused) == 1
    assert "another Trio run" in refused[0]


async def test_session_wait_closed_from_another_trio_run_raises() -> None:
    """`wait_closed` from another run parks a foreign task in the backend's Event.

    Setting it then fails in the backend's run (`assert task._runner is
    self`), which escapes `connect_ipc` as a bare AssertionError, and the
    waiter never wakes.
    """
    backend = make_backend()
    outcome: list[BaseException | str] = []

    async def waiter(session: tether.IpcSession) -> None:
        try:
            outcome.append(await session.wait_closed())
        except RuntimeError as exc:
            outcome.append(exc)

    with trio.fail_after(TIMEOUT):
        try:
            async with memory.connect_ipc(backend, thread=True) as frontend_ipc:
                (session,) = backend.sessions
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(waiter, session)
                    await trio.testing.wait_all_tasks_blocked()
                    if not outcome:  # parked in the backend's Event
                        session.close("bye")
                        assert await frontend_ipc.wait_closed() == "bye"
                        nursery.cancel_scope.cancel()
        except AssertionError as exc:
            outcome.append(f"connect_ipc raised a bare {exc!r}")
    assert len(outcome) == 1
    assert isinstance(outcome[0], RuntimeError), outcome


async def test_per_session_handlers_are_told_when_serving_is_cancelled_before_welcome() -> None:
    """The handler made for a session is told it ended, even when serving is cancelled early.

    `serve_ipc_session` tells the handlers when the frontend leaves before
    `welcome` (ConnectionClosed), but not when it is cancelled while writing
    it (a server shutting down): the per-session resources leak.
    """
    made: list[EchoHandler] = []

    class Recording(EchoHandler):
        def __init__(self) -> None:
            super().__init__()
            made.append(self)

    backend = tether.BackendIpc()
    backend.register(Recording)
    client, raw_server = memory.stream_pair()
    server = GatedStream(raw_server)
    with trio.fail_after(TIMEOUT):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(serve_ipc_session, backend, server)
            await client.send_message(encode(Hello(PROTOCOL_VERSION, mode="ipc")))
            await server.entered.wait()  # the handler is made, `welcome` is being written
            nursery.cancel_scope.cancel()  # e.g. the server shuts down
    assert backend.sessions == ()
    assert len(made) == 1
    assert len(made[0].closed) == 1, "the handler made for the session was never told it ended"


# ---------------------------------------------------------------------------
# Randomized: calls, cancels, notifications both ways, call-backs, closes


class StressIpc(tether.IpcInterface):
    channel_name = "review-stress"
    version = "1.0.0"

    async def echo(self, n: int, notes: int) -> int: ...
    async def nap(self, n: int, ms: int) -> int: ...
    async def ask(self, n: int) -> int: ...
    async def spawn(self, n: int, notes: int) -> None: ...
    async def up(self, worker: int, seq: int) -> None: ...
    async def drained(self, total: int) -> int: ...
    async def close_me(self, reason: str) -> None: ...


class StressEvents(tether.NotificationInterface):
    channel_name = "review-stress-events"

    async def tick(self, n: int, i: int) -> None: ...


class FrontStress(tether.IpcInterface):
    channel_name = "review-stress-front"
    version = "1.0.0"

    async def double(self, n: int) -> int: ...


class StressHandler(tether.IpcHandler, StressIpc):
    """Per session; runs in the backend's loop (its own thread with thread=True)."""

    made: ClassVar[list[StressHandler]] = []

    def __init__(self) -> None:
        self.closed: list[str] = []
        self.ups: dict[int, list[int]] = collections.defaultdict(list)
        self.up_count = 0
        self.changed = trio.Event()
        self.peer: Any = None
        StressHandler.made.append(self)

    async def echo(self, n: int, notes: int) -> int:
        self.peer = tether.current_session()._peer
        tick = tether.current_session().notifier(StressEvents).tick
        for i in range(notes):
            await tick(n, i)
        return n

    async def nap(self, n: int, ms: int) -> int:
        await trio.sleep(ms / 1000)
        return n

    async def ask(self, n: int) -> int:
        return await tether.current_session().proxy(FrontStress).double(n)

    async def spawn(self, n: int, notes: int) -> None:
        session = tether.current_session()

        async def task() -> None:
            assert tether.current_session() is session
            tick = session.notifier(StressEvents).tick
            for i in range(notes):
                await tick(n, i)
                await trio.lowlevel.checkpoint()

        session.start_soon(task)

    async def up(self, worker: int, seq: int) -> None:  # a one-way message from the frontend
        self.ups[worker].append(seq)
        self.up_count += 1
        self.changed.set()
        self.changed = trio.Event()
        if seq % 7 == 3:  # a listener that calls back
            assert await tether.current_session().proxy(FrontStress).double(seq) == 2 * seq

    async def drained(self, total: int) -> int:
        while self.up_count < total:
            await self.changed.wait()
        return self.up_count

    async def close_me(self, reason: str) -> None:
        tether.current_session().close(reason)
        await trio.sleep_forever()

    def on_close(self, reason: str) -> None:
        self.closed.append(reason)


class Doubler(tether.IpcHandler, FrontStress):
    async def double(self, n: int) -> int:
        await trio.lowlevel.checkpoint()
        return 2 * n


async def _stress_session(seed: int, thread: bool, ops: int) -> None:
    rnd = random.Random(seed)
    backend = tether.BackendIpc(max_pending_notifications=rnd.choice([2, 8, 64]))
    backend.register(StressHandler)
    StressHandler.made = []
    close_at = rnd.randrange(ops) if seed % 4 in (1, 3) else None
    close_how = ["backend", "aclose", "listener"][seed % 3]
    close_reason = "stress close" if close_how == "backend" else "closed by the frontend"
    state = {"closing": False, "aclose_in_listener": False}
    ticks: dict[int, list[int]] = collections.defaultdict(list)
    expected_ticks: dict[int, int] = {}  # n -> count; negative: a session task's, a prefix
    sent_ups: dict[int, int] = collections.defaultdict(int)
    fence = trio.Event()
    numbers = itertools.count()
    closed_with: list[tuple[bool, str | None]] = []
    async with memory.connect_ipc(
        backend,
        channels=[StressIpc],
        thread=thread,
        max_pending_notifications=rnd.choice([1, 4, 64]),
    ) as frontend_ipc:
        frontend_ipc.register(Doubler)
        stress = frontend_ipc.proxy(StressIpc)

        async def on_tick(method: str, n: int, i: int) -> None:
            ticks[n].append(i)
            if n == -2:
                fence.set()
            if state["aclose_in_listener"]:
                await frontend_ipc.aclose()
            if i == 0 and n % 5 == 0 and n > 0:
                assert await stress.echo(-1, 0) == -1  # a listener that calls back

        frontend_ipc.add_listener(StressEvents.channel_name, on_tick)

        async def worker(w: int) -> None:
            wr = random.Random(rnd.random())
            for _ in range(ops // 4):
                n = next(numbers)
                op = wr.randrange(7)
                try:
                    if n == close_at:
                        state["closing"] = True
                        if close_how == "backend":
                            await stress.close_me("stress close")
                        elif close_how == "aclose":
                            await frontend_ipc.aclose()
                        else:
                            state["aclose_in_listener"] = True
                            await stress.echo(n, 2)
                    elif op == 0:
                        notes = wr.randrange(4)
                        assert await stress.echo(n, notes) == n
                        expected_ticks[n] = notes
                    elif op == 1:
                        with trio.move_on_after(wr.random() * 0.004):
                            assert await stress.nap(n, wr.randrange(6)) == n
                    elif op == 2:
                        assert await stress.ask(n) == 2 * n
                    elif op == 3:
                        await frontend_ipc.send(StressIpc.channel_name, "up", w, sent_ups[w])
                        sent_ups[w] += 1
                    elif op == 4:
                        notes = wr.randrange(4)
                        await stress.spawn(n, notes)
                        expected_ticks[n] = -notes
                    elif op == 5:
                        with trio.move_on_after(wr.random() * 0.001):
                            assert await stress.echo(n, 0) == n
                    else:
                        with trio.move_on_after(wr.random() * 0.002):
                            assert await stress.ask(n) == 2 * n
                except tether.DeadlineExceeded:
                    pass  # the backend's deadline passed first: allowed
                except tether.ConnectionClosed as exc:
                    closed_with.append((state["closing"], exc.reason))
                    return

        async with trio.open_nursery() as nursery:
            for w in range(4):
                nursery.start_soon(worker, w)
        assert set(closed_with) <= {(True, close_reason)}, closed_with
        if close_at is None:
            assert frontend_ipc.is_valid
            total = sum(sent_ups.values())
            assert await stress.drained(total) == total
            assert await stress.echo(-2, 1) == -2
            await fence.wait()  # every notification sent before it was delivered
            (handler,) = StressHandler.made
            for w, count in sent_ups.items():
                assert handler.ups[w] == list(range(count)), (w, handler.ups[w])
            for n, notes in expected_ticks.items():
                if notes >= 0:
                    assert ticks[n] == list(range(notes)), (n, ticks[n])
                else:
                    assert ticks[n] == list(range(len(ticks[n]))), (n, ticks[n])
        else:
            assert await frontend_ipc.wait_closed() == close_reason
        peer = frontend_ipc._peer
    assert backend.sessions == ()
    assert peer.pending == {}
    assert peer.calls == {}
    (handler,) = StressHandler.made
    assert handler.closed == [close_reason if close_at is not None else "closed by the frontend"]
    if handler.peer is not None:
        assert handler.peer.pending == {}
        assert handler.peer.calls == {}
        assert handler.peer.closed.is_set()


@pytest.mark.parametrize("thread", [False, True], ids=["same-loop", "thread"])
async def test_randomized_sessions_end_cleanly_and_keep_order(thread: bool) -> None:
    """20 seeds x 200 operations; a quarter of the seeds close mid-way, three ways.

    Calls (some under short move_on_after), cancels, notifications both
    ways, listeners and one-way handlers that call back, session tasks.
    Checked: no hang, replies match, notifications in order and none lost,
    `calls`/`pending` empty, `backend.sessions` empty, `on_close` once.
    """
    for seed in range(20):
        with trio.fail_after(TIMEOUT):
            await _stress_session(seed, thread, 200)


class _RunFinished(trio.abc.Instrument):
    """Added to the backend's run: tells another thread when that run has finished."""

    def __init__(self, finished: threading.Event) -> None:
        self.finished = finished

    def after_run(self) -> None:
        self.finished.set()


async def test_thread_close_reason_survives_a_send_racing_the_backend_threads_end() -> None:
    """The backend closes with a reason and its thread ends; a frontend send races the notice.

    The reason is on the shared stream before the backend's run ends, but a
    send that finds the backend's run finished raises `reason="closed"`, and
    the session ends as "closed". Trio runs our task and the loop's "peer
    closed" callback in either order, so a few rounds.
    """
    for attempt in range(20):
        finished = threading.Event()

        class Watched(EchoHandler):
            run_finished = finished

            def __init__(self) -> None:  # made in the backend's run
                super().__init__()
                trio.lowlevel.add_instrument(_RunFinished(self.run_finished))

        backend = tether.BackendIpc()
        backend.register(Watched)
        reason = f"bye {attempt}"
        raised: list[str | None] = []
        with trio.fail_after(TIMEOUT):
            async with memory.connect_ipc(backend, thread=True) as frontend_ipc:
                (session,) = backend.sessions
                session.close(reason)  # handed to the backend's loop
                # Without yielding to our loop (which would run the backend's
                # "closed" notice), wait until the backend's run has finished.
                assert finished.wait(TIMEOUT)
                try:
                    await frontend_ipc.send("events", "late")
                except tether.ConnectionClosed as exc:
                    raised.append(exc.reason)
                assert await frontend_ipc.wait_closed() == reason
        assert raised == [reason]


@pytest.mark.parametrize("thread", [False, True], ids=["same-loop", "thread"])
async def test_the_frontends_request_context_does_not_reach_the_backends_session(
    thread: bool,
) -> None:
    """The in-process backend must not run in the frontend's contextvars.

    Over a network the backend never sees them; in-process the serving task
    (or thread) is spawned from the `connect_ipc` caller's context, so the
    per-session handler's constructor, `on_close` and every session-level log
    line run under the frontend's RequestContext, credential included.
    """
    seen: dict[str, tuple[str, str | None] | None] = {}

    def note(where: str) -> None:
        context = tether.current_context()
        seen[where] = None if context is None else (context.activity_id, context.authorization)

    class Noting(EchoHandler):
        def __init__(self) -> None:
            super().__init__()
            note("constructor")

        def on_close(self, reason: str) -> None:
            note("on_close")

    backend = tether.BackendIpc()
    backend.register(Noting)
    with trio.fail_after(TIMEOUT):
        with tether.activity("frontend-action", authorization="Bearer frontend-secret"):
            async with memory.connect_ipc(backend, thread=thread) as frontend_ipc:
                assert await frontend_ipc.call_backend("review-echo", "echo", 1) == 1
    assert set(seen) == {"constructor", "on_close"}
    for where, context in seen.items():
        assert context is None or context[1] is None, f"{where} saw the frontend's credential"
