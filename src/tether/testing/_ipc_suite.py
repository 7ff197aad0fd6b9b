# mypy: disable-error-code="empty-body"
# (channel methods are declared with `...` bodies)
"""The IPC conformance suite: what every transport's IPC sessions must do, as pytest tests.

A transport's IPC is correct when it passes this suite. Subclass
`IpcConformance` in a test module (the subclass's name must start with `Test`)
and implement `connect_ipc`::

    class TestMemoryIpc(tether.testing.IpcConformance):
        def connect_ipc(self, backend, **options):
            return memory.connect_ipc(backend, **options)

The backend may run in another thread, on a Trio loop of its own (the
in-process transport's `thread=True`): the suite's handlers report to the test
only through `Probe` and thread-safe recorders, never through Trio objects.
Frontend listeners and handlers run in the test's own loop.

Every test runs under pytest-trio and is bounded by `trio.fail_after`.
"""

from __future__ import annotations

import itertools
import logging
import math
import threading
from collections.abc import Awaitable, Callable
from contextlib import AbstractAsyncContextManager
from typing import Any, ClassVar

import attrs
import pytest
import trio

from .. import contexts
from ..runtime import (
    CONVERTER,
    BackendIpc,
    ConnectionClosed,
    DeadlineExceeded,
    FrontendIpc,
    IncompatibleVersion,
    InvalidRequest,
    IpcHandler,
    IpcInterface,
    NotFound,
    NotificationHandler,
    NotificationInterface,
    PayloadTooLarge,
    RemoteError,
    TetherError,
    TransportError,
    Unauthorized,
    Unavailable,
    current_session,
)
from ._probe import Probe
from ._rpc_suite import (
    TEST_TIMEOUT,
    Circle,
    ConformanceError,
    Everything,
    Point,
    Square,
    sample_everything,
)

__all__ = [
    "ConformanceFrontendIpc",
    "ConformanceIpc",
    "ConformanceIpcEvents",
    "IpcConformance",
    "IpcContextInfo",
]


@attrs.frozen
class IpcContextInfo:
    """What a backend handler saw of its RequestContext and its session."""

    activity_id: str
    session_id: str | None
    application_id: str | None
    application_version: str | None
    operation: str | None
    #: `tether.current_session()`: the session serving the call.
    current_session_id: str
    current_session_application_id: str | None
    #: Seconds left before `trio.current_effective_deadline()`, None when unbounded.
    seconds_left: float | None
    #: Seconds left before `RequestContext.deadline`, None when it has none.
    context_deadline_left: float | None
    #: Which handler instance served the call (a number, unique in the process).
    handler: int


class ConformanceIpc(IpcInterface):
    """The channel the suite's backend serves."""

    channel_name = "tether.testing.ipc"
    version = "2.3.1"

    async def add(self, a: int, b: int) -> int: ...
    async def echo(self, value: Everything) -> Everything: ...
    async def echo_list(self, values: list[Everything]) -> list[Everything]: ...
    async def context(self) -> IpcContextInfo: ...
    async def fail(self, kind: str, message: str) -> None: ...
    async def lying(self) -> int: ...
    async def wait_until_cancelled(self, key: str) -> None: ...
    async def send_ticks(self, start: int, count: int) -> int: ...
    async def send_moved(self, shape: Circle | Square, path: list[Point]) -> None: ...
    async def send_raw(self, value: int) -> bool: ...
    async def start_task(self, key: str) -> None: ...
    async def start_flood(self, limit: int) -> None: ...
    async def ask_frontend(self, method: str, value: int) -> str: ...
    async def ask_frontend_later(self, key: str, method: str, value: int) -> None: ...
    async def close_session(self, reason: str) -> None: ...
    async def record(self, key: str, value: int) -> None: ...


class ConformanceIpcEvents(NotificationInterface):
    """Notifications the suite's backend sends to its frontend."""

    channel_name = "tether.testing.ipc-events"

    async def tick(self, n: int) -> None: ...
    async def moved(self, shape: Circle | Square, path: list[Point]) -> None: ...


class ConformanceFrontendIpc(IpcInterface):
    """A channel the frontend serves, for the backend to call."""

    channel_name = "tether.testing.ipc-frontend"
    version = "1.0.0"

    async def double(self, value: int) -> int: ...
    async def fail(self, value: int) -> int: ...
    async def wait_until_cancelled(self, value: int) -> int: ...


class _FrontendEvents(NotificationInterface):
    # One-way messages from the frontend to the backend's listeners.
    channel_name = "tether.testing.ipc-frontend-events"

    async def clicked(self, n: int, where: Point) -> None: ...


#: The untyped channel the backend's `send_raw` uses.
_RAW_CHANNEL = "tether.testing.ipc-raw"


class _Newer(IpcInterface):
    # The channel as a newer frontend sees it: minor 4 > the backend's 3.
    channel_name = "tether.testing.ipc"
    version = "2.4.0"

    async def add(self, a: int, b: int) -> int: ...


class _NextMajor(IpcInterface):
    channel_name = "tether.testing.ipc"
    version = "3.0.0"

    async def add(self, a: int, b: int) -> int: ...


class _Patched(IpcInterface):
    # A frontend built against a later patch: compatible.
    channel_name = "tether.testing.ipc"
    version = "2.3.9"

    async def add(self, a: int, b: int) -> int: ...


class _OlderMinor(IpcInterface):
    # A frontend built against an older minor: compatible.
    channel_name = "tether.testing.ipc"
    version = "2.1.0"

    async def add(self, a: int, b: int) -> int: ...


class _Extra(IpcInterface):
    # The same name and version, with a method the backend lacks.
    channel_name = "tether.testing.ipc"
    version = "2.3.1"

    async def not_there(self) -> int: ...


class _Unserved(IpcInterface):
    channel_name = "tether.testing.nobody-serves-this"
    version = "1.0.0"

    async def anything(self) -> int: ...


_ERRORS: dict[str, type[TetherError]] = {
    "not-found": NotFound,
    "bad-request": InvalidRequest,
    "unauthorized": Unauthorized,
    "incompatible-version": IncompatibleVersion,
    "payload-too-large": PayloadTooLarge,
    "deadline-exceeded": DeadlineExceeded,
}

#: Seconds after which a call that should take milliseconds counts as hung.
_HUNG_CALL = 1.0

# Handler instances are numbered so the test can tell them apart across threads.
_handler_numbers = itertools.count(1)


def _seconds_left(deadline: float | None) -> float | None:
    if deadline is None or deadline == math.inf:
        return None
    return deadline - trio.current_time()


def _activity_id() -> str | None:
    ctx = contexts.current()
    return None if ctx is None else ctx.activity_id


async def _ask_frontend(method: str, value: int) -> str:
    """Call the frontend from the backend; describe the outcome ("ok:..." or the error)."""
    session = current_session()
    frontend = session.proxy(ConformanceFrontendIpc)
    try:
        if method == "double":
            result: Any = await frontend.double(value)
        elif method == "fail":
            result = await frontend.fail(value)
        elif method == "wait":
            result = await frontend.wait_until_cancelled(value)
        else:  # "raw:<method>": the untyped form
            name = method.removeprefix("raw:")
            result = await session.call_frontend(ConformanceFrontendIpc.channel_name, name, value)
    except ConformanceError as exc:
        return f"ConformanceError:{exc.code}:{exc.reason}"
    except TetherError as exc:
        return f"{type(exc).__name__}:{exc.message}"
    return f"ok:{result!r}"


class ConformanceIpcHandler(IpcHandler, ConformanceIpc):
    """The backend of the suite; one instance per session unless registered shared.

    It reports to the test through `probe` (set on a subclass per backend).
    """

    probe: ClassVar[Probe]
    backend: ClassVar[BackendIpc]

    def __init__(self) -> None:
        self.number = next(_handler_numbers)

    async def _private(self) -> int:
        return 1  # a helper: never callable from the frontend

    async def add(self, a: int, b: int) -> int:
        return a + b

    async def echo(self, value: Everything) -> Everything:
        assert isinstance(value, Everything), "the backend must structure arguments"
        return value

    async def echo_list(self, values: list[Everything]) -> list[Everything]:
        return values

    async def context(self) -> IpcContextInfo:
        ctx = contexts.current()
        assert ctx is not None, "the backend did not set a RequestContext"
        session = current_session()
        return IpcContextInfo(
            activity_id=ctx.activity_id,
            session_id=ctx.session_id,
            application_id=ctx.application_id,
            application_version=ctx.application_version,
            operation=ctx.operation,
            current_session_id=session.id,
            current_session_application_id=session.application_id,
            seconds_left=_seconds_left(trio.current_effective_deadline()),
            context_deadline_left=_seconds_left(ctx.deadline),
            handler=self.number,
        )

    async def fail(self, kind: str, message: str) -> None:
        if kind == "application":
            raise ConformanceError(code=42, reason=message)
        if kind == "unavailable":
            raise Unavailable(message, retry_after=2.5)
        if kind == "overloaded":
            raise Unavailable(message, retry_after=1, overloaded=True)
        if kind in _ERRORS:
            raise _ERRORS[kind](message)
        raise ValueError(message)

    async def lying(self) -> int:
        return "not an int"  # type: ignore[return-value]

    async def wait_until_cancelled(self, key: str) -> None:
        self.probe.signal(f"started:{key}", await self.context())
        try:
            await trio.sleep_forever()
        except trio.Cancelled:
            self.probe.signal(f"cancelled:{key}")
            raise
        finally:
            self.probe.signal(f"finally:{key}")

    async def send_ticks(self, start: int, count: int) -> int:
        notifier = current_session().notifier(ConformanceIpcEvents)
        for n in range(start, start + count):
            await notifier.tick(n)
        return count

    async def send_moved(self, shape: Circle | Square, path: list[Point]) -> None:
        await current_session().notifier(ConformanceIpcEvents).moved(shape, path)

    async def send_raw(self, value: int) -> bool:
        await current_session().send(_RAW_CHANNEL, "via-session", value, Point(1.0, 2.0))
        await self.backend.send(_RAW_CHANNEL, "via-backend", value + 1)
        return self.backend.is_valid

    async def start_task(self, key: str) -> None:
        current_session().start_soon(self._task, key)

    async def _task(self, key: str) -> None:
        self.probe.signal(f"task-started:{key}", (_activity_id(), current_session().id))
        try:
            await trio.sleep_forever()
        except trio.Cancelled:
            self.probe.signal(f"task-cancelled:{key}")
            raise

    async def start_flood(self, limit: int) -> None:
        current_session().start_soon(self._flood, limit)

    async def _flood(self, limit: int) -> None:
        session = current_session()
        notifier = session.notifier(ConformanceIpcEvents)
        sent = 0
        try:
            for n in range(limit):
                await notifier.tick(n)
                sent += 1
        except ConnectionClosed as exc:
            self.probe.signal("flood", (sent, exc.reason, session.is_open, session.closed_reason))
            return
        self.probe.signal("flood", (sent, None, session.is_open, session.closed_reason))

    async def ask_frontend(self, method: str, value: int) -> str:
        return await _ask_frontend(method, value)

    async def ask_frontend_later(self, key: str, method: str, value: int) -> None:
        current_session().start_soon(self._ask_later, key, method, value)

    async def _ask_later(self, key: str, method: str, value: int) -> None:
        try:
            answer = await _ask_frontend(method, value)
        except trio.Cancelled:
            self.probe.signal(f"later:{key}", "cancelled")
            raise
        self.probe.signal(f"later:{key}", answer)

    async def close_session(self, reason: str) -> None:
        current_session().close(reason)

    async def record(self, key: str, value: int) -> None:
        self.probe.signal(f"record:{key}", (value, _activity_id(), current_session().id))

    def on_close(self, reason: str) -> None:
        self.probe.signal(f"on_close:{self.number}", reason)


@attrs.frozen
class _Heard:
    """A one-way message a backend listener got."""

    method: str
    args: tuple[Any, ...]
    session_id: str
    activity_id: str | None


class _BackendRecorder:
    """A thread-safe record of what a backend listener heard, that the test can wait on."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._items: list[_Heard] = []
        self._probe = Probe()

    def listener(self, method: str, *args: Any) -> None:
        heard = _Heard(method, args, current_session().id, _activity_id())
        with self._lock:
            self._items.append(heard)
            count = len(self._items)
        self._probe.signal(f"count:{count}")

    @property
    def items(self) -> list[_Heard]:
        with self._lock:
            return list(self._items)

    async def wait_for(self, count: int) -> list[_Heard]:
        """Wait until at least `count` messages were heard; return them all."""
        await self._probe.wait(f"count:{count}")
        return self.items


def _frontend_caller(method: str, answers: _BackendRecorder) -> Callable[..., Awaitable[None]]:
    """A backend listener that calls the frontend for each message and records the outcome.

    If a call hangs, the listener gives up after a bound and skips what follows,
    so that a hung session still ends (a backend thread cannot be abandoned).
    """
    gave_up = threading.Event()

    async def listener(event: str, n: int, where: Any) -> None:
        if gave_up.is_set():
            answers.listener("skipped after a hung call", n)
            return
        with trio.move_on_after(_HUNG_CALL):
            answers.listener(await _ask_frontend(method, n), n)
            return
        gave_up.set()
        answers.listener("hung", n)

    return listener


class _Received:
    """What a frontend listener got, in order. The test's loop only."""

    def __init__(self) -> None:
        self.items: list[Any] = []
        self._changed = trio.Event()

    def add(self, item: Any) -> None:
        self.items.append(item)
        self._changed.set()
        self._changed = trio.Event()

    async def wait_for(self, count: int) -> list[Any]:
        while len(self.items) < count:
            await self._changed.wait()
        return self.items


class _EventsHandler(NotificationHandler, ConformanceIpcEvents):
    """The frontend's typed receiver of the backend's notifications."""

    def __init__(self) -> None:
        self.received = _Received()
        self.closed: list[str] = []

    async def tick(self, n: int) -> None:
        self.received.add(("tick", n))

    async def moved(self, shape: Circle | Square, path: list[Point]) -> None:
        self.received.add(("moved", shape, path))

    def on_close(self, reason: str) -> None:
        self.closed.append(reason)


class _FrontendHandler(IpcHandler, ConformanceFrontendIpc):
    """What the frontend serves for the backend to call; runs in the test's loop."""

    def __init__(self) -> None:
        self.activities: list[str | None] = []
        self.deadlines: list[float | None] = []
        self.closed: list[str] = []
        self.started = trio.Event()
        self.finished = trio.Event()

    async def double(self, value: int) -> int:
        self.activities.append(_activity_id())
        self.deadlines.append(_seconds_left(trio.current_effective_deadline()))
        return value * 2

    async def fail(self, value: int) -> int:
        raise ConformanceError(code=value, reason="the frontend refuses")

    async def wait_until_cancelled(self, value: int) -> int:
        self.started.set()
        try:
            await trio.sleep_forever()
        finally:
            self.finished.set()

    def on_close(self, reason: str) -> None:
        self.closed.append(reason)


class IpcConformance:
    """Tests every IPC transport must pass. Subclass it and implement `connect_ipc`.

    `connect_ipc(backend, **options)` returns an async context manager that
    serves `backend` over the transport and yields the frontend's end of one
    session, for the block. Leaving the block ends the session; the block must
    not end before the backend's end of it has (so `IpcSession.wait_closed` is
    done). The suite passes these options, which a transport must honour:
    `channels` (the IpcInterface classes checked at connect), `application_id`,
    `application_version` and `max_pending_notifications` (how many of the
    backend's notifications may wait for the frontend's listeners).
    """

    def connect_ipc(
        self, backend: BackendIpc, **options: Any
    ) -> AbstractAsyncContextManager[FrontendIpc]:
        raise NotImplementedError("an IPC conformance test class must implement connect_ipc()")

    # -- helpers ---------------------------------------------------------------

    def backend_ipc(
        self, probe: Probe | None = None, *, shared: bool = False, **kwargs: Any
    ) -> BackendIpc:
        """A BackendIpc serving `ConformanceIpc`: a handler per session, or one `shared`."""
        backend = BackendIpc(**kwargs)

        class Handler(ConformanceIpcHandler):
            pass

        Handler.probe = probe if probe is not None else Probe()
        Handler.backend = backend
        backend.register(Handler() if shared else Handler)
        return backend

    def open(
        self, backend: BackendIpc | None = None, **options: Any
    ) -> AbstractAsyncContextManager[FrontendIpc]:
        options.setdefault("channels", [ConformanceIpc])
        return self.connect_ipc(backend if backend is not None else self.backend_ipc(), **options)

    # -- handshake ---------------------------------------------------------------

    async def test_connect_refuses_a_channel_the_backend_does_not_serve(self) -> None:
        backend = self.backend_ipc()
        with trio.fail_after(TEST_TIMEOUT):
            with pytest.raises(NotFound, match=r"tether\.testing\.nobody-serves-this") as caught:
                async with self.connect_ipc(backend, channels=[ConformanceIpc, _Unserved]):
                    pass  # pragma: no cover - the connect must fail
        assert caught.value.details["channel"] == _Unserved.channel_name
        assert backend.sessions == ()

    @pytest.mark.parametrize("channel", [_Newer, _NextMajor])
    async def test_connect_refuses_an_incompatible_channel_version(
        self, channel: type[IpcInterface]
    ) -> None:
        backend = self.backend_ipc()
        with trio.fail_after(TEST_TIMEOUT):
            with pytest.raises(IncompatibleVersion) as caught:
                async with self.connect_ipc(backend, channels=[channel]):
                    pass  # pragma: no cover - the connect must fail
        message = str(caught.value)
        assert "tether.testing.ipc" in message
        assert "2.3.1" in message
        assert channel.version in message
        assert caught.value.details["channel"] == "tether.testing.ipc"
        assert backend.sessions == ()

    @pytest.mark.parametrize("channel", [_Patched, _OlderMinor])
    async def test_connect_accepts_a_compatible_version(self, channel: type[IpcInterface]) -> None:
        with trio.fail_after(TEST_TIMEOUT):
            async with self.connect_ipc(self.backend_ipc(), channels=[channel]) as frontend:
                assert frontend.channels == {"tether.testing.ipc": "2.3.1"}
                assert await frontend.proxy(channel).add(1, 2) == 3  # type: ignore[attr-defined]

    async def test_channels_not_listed_at_connect_are_checked_locally_before_any_call(
        self,
    ) -> None:
        probe = Probe()
        with trio.fail_after(TEST_TIMEOUT):
            async with self.connect_ipc(self.backend_ipc(probe), channels=[]) as frontend:
                with pytest.raises(NotFound, match="nobody-serves-this") as not_served:
                    frontend.proxy(_Unserved)
                assert not not_served.value.remote
                with pytest.raises(IncompatibleVersion, match=r"2\.4\.0") as too_new:
                    frontend.proxy(_Newer)
                assert not too_new.value.remote
                with pytest.raises(NotFound, match="nobody-serves-this") as untyped:
                    await frontend.call_backend(_Unserved.channel_name, "anything")
                assert not untyped.value.remote
                # A served channel needs no listing.
                info = await frontend.proxy(ConformanceIpc).context()
                assert info.current_session_id == frontend.session_id

    # -- calls -------------------------------------------------------------------

    async def test_typed_call_returns_the_handler_result(self) -> None:
        with trio.fail_after(TEST_TIMEOUT):
            async with self.open() as frontend:
                proxy = frontend.proxy(ConformanceIpc)
                assert await proxy.add(2, 40) == 42
                assert await proxy.add(a=-1, b=1) == 0

    async def test_every_carried_type_round_trips(self) -> None:
        with trio.fail_after(TEST_TIMEOUT):
            async with self.open() as frontend:
                proxy = frontend.proxy(ConformanceIpc)
                samples = sample_everything()
                for value in samples:
                    assert await proxy.echo(value) == value
                assert await proxy.echo_list(samples) == samples

    async def test_call_backend_sends_plain_values_and_returns_json(self) -> None:
        with trio.fail_after(TEST_TIMEOUT):
            async with self.open() as frontend:
                channel = ConformanceIpc.channel_name
                assert await frontend.call_backend(channel, "add", 2, 40) == 42
                for value in sample_everything():
                    plain = await frontend.call_backend(channel, "echo", value)
                    assert isinstance(plain, dict)
                    assert CONVERTER.structure(plain, Everything) == value
                info = await frontend.call_backend(channel, "context")
                assert info["current_session_id"] == frontend.session_id

    async def test_many_concurrent_calls_each_get_their_own_reply(self) -> None:
        results: dict[int, int] = {}
        activities: dict[int, tuple[str, str]] = {}
        with trio.fail_after(TEST_TIMEOUT):
            async with self.open() as frontend:
                proxy = frontend.proxy(ConformanceIpc)

                async def one(i: int) -> None:
                    with contexts.activity() as act:
                        results[i] = await proxy.add(i, 1000)
                        seen = await proxy.context()
                        activities[i] = (act.activity_id, seen.activity_id)

                async with trio.open_nursery() as nursery:
                    for i in range(100):
                        nursery.start_soon(one, i)
        assert results == {i: i + 1000 for i in range(100)}
        assert all(sent == seen for sent, seen in activities.values())
        assert len({sent for sent, _ in activities.values()}) == 100

    # -- errors ----------------------------------------------------------------

    @pytest.mark.parametrize(
        ("kind", "error"),
        [
            ("not-found", NotFound),
            ("bad-request", InvalidRequest),
            ("unauthorized", Unauthorized),
            ("incompatible-version", IncompatibleVersion),
            ("payload-too-large", PayloadTooLarge),
            ("deadline-exceeded", DeadlineExceeded),
            ("unavailable", Unavailable),
            ("overloaded", Unavailable),
        ],
    )
    async def test_tether_errors_raised_by_a_handler_keep_their_class(
        self, kind: str, error: type[TetherError]
    ) -> None:
        with trio.fail_after(TEST_TIMEOUT):
            async with self.open() as frontend:
                proxy = frontend.proxy(ConformanceIpc)
                with contexts.activity() as act, pytest.raises(error) as caught:
                    await proxy.fail(kind, f"{kind} on purpose")
                # An error answers one call; the session goes on.
                assert await proxy.add(1, 1) == 2
        exc = caught.value
        assert type(exc) is error
        assert exc.remote
        assert exc.message == f"{kind} on purpose"
        assert exc.activity_id == act.activity_id
        if kind == "unavailable":
            assert isinstance(exc, Unavailable)
            assert exc.retry_after == 2.5
            assert exc.status == 503
        if kind == "overloaded":
            assert isinstance(exc, Unavailable)
            assert exc.status == 429

    async def test_application_error_round_trips_with_its_fields(self) -> None:
        with trio.fail_after(TEST_TIMEOUT):
            async with self.open() as frontend:
                proxy = frontend.proxy(ConformanceIpc)
                with contexts.activity() as act, pytest.raises(ConformanceError) as caught:
                    await proxy.fail("application", "no robots left")
        assert caught.value.code == 42
        assert caught.value.reason == "no robots left"
        assert any(act.activity_id in note for note in caught.value.__notes__)

    async def test_unexpected_exception_is_remote_error_without_traceback(self) -> None:
        with trio.fail_after(TEST_TIMEOUT):
            async with self.open() as frontend:
                with contexts.activity() as act, pytest.raises(RemoteError) as caught:
                    await frontend.call_backend(ConformanceIpc.channel_name, "fail", "x", "boom")
        exc = caught.value
        assert exc.remote_type == "builtins.ValueError"
        assert exc.message == "boom"
        assert exc.remote_traceback is None
        assert "Traceback" not in str(exc.details)
        assert exc.activity_id == act.activity_id

    async def test_development_mode_sends_the_traceback(self) -> None:
        backend = self.backend_ipc(development_mode=True)
        with trio.fail_after(TEST_TIMEOUT):
            async with self.open(backend) as frontend:
                with pytest.raises(RemoteError) as caught:
                    await frontend.proxy(ConformanceIpc).fail("internal", "boom")
        assert caught.value.remote_traceback is not None
        assert "ValueError: boom" in caught.value.remote_traceback

    async def test_result_that_does_not_fit_the_declared_type(self) -> None:
        with trio.fail_after(TEST_TIMEOUT):
            async with self.open() as frontend:
                proxy = frontend.proxy(ConformanceIpc)
                with pytest.raises(InvalidRequest, match="does not fit int"):
                    await proxy.lying()
                assert await proxy.add(1, 1) == 2

    async def test_arguments_that_do_not_fit_are_bad_request_naming_the_parameter(self) -> None:
        channel = ConformanceIpc.channel_name
        with trio.fail_after(TEST_TIMEOUT):
            async with self.open() as frontend:
                with contexts.activity() as act, pytest.raises(InvalidRequest) as wrong:
                    await frontend.call_backend(channel, "add", "two", 2)
                assert wrong.value.remote
                assert wrong.value.details["parameter"] == "a"
                assert wrong.value.activity_id == act.activity_id
                with pytest.raises(InvalidRequest) as shape:
                    await frontend.call_backend(channel, "echo", {"flag": True})
                assert shape.value.details["parameter"] == "value"
                with pytest.raises(InvalidRequest) as count:
                    await frontend.call_backend(channel, "add", 1)
                assert count.value.remote
                # The session is still good.
                assert await frontend.call_backend(channel, "add", 1, 2) == 3

    async def test_proxy_rejects_arguments_of_the_wrong_shape_before_sending(self) -> None:
        with trio.fail_after(TEST_TIMEOUT):
            async with self.open() as frontend:
                proxy = frontend.proxy(ConformanceIpc)
                with pytest.raises(InvalidRequest, match="missing a required argument"):
                    await proxy.add(1)  # type: ignore[call-arg]
                with pytest.raises(InvalidRequest) as caught:
                    await proxy.echo("not an Everything")  # type: ignore[arg-type]
                assert not caught.value.remote

    async def test_unknown_method_of_a_served_channel_is_not_found(self) -> None:
        with trio.fail_after(TEST_TIMEOUT):
            async with self.open() as frontend:
                with pytest.raises(NotFound, match="not_there") as typed:
                    await frontend.proxy(_Extra).not_there()
                assert typed.value.remote
                with pytest.raises(NotFound, match="nope"):
                    await frontend.call_backend(ConformanceIpc.channel_name, "nope")
                assert frontend.is_valid

    @pytest.mark.parametrize(
        "method",
        [
            "__init__",
            "__class__",
            "on_close",
            "get_version",
            "_private",
            "_task",
            "probe",
            "backend",
            "number",
            "",
        ],
    )
    async def test_only_declared_methods_are_callable(self, method: str) -> None:
        probe = Probe()
        with trio.fail_after(TEST_TIMEOUT):
            async with self.open(self.backend_ipc(probe)) as frontend:
                info = await frontend.proxy(ConformanceIpc).context()
                with pytest.raises(NotFound) as caught:
                    await frontend.call_backend(ConformanceIpc.channel_name, method, "x")
                assert caught.value.remote
                assert frontend.is_valid
        # `on_close` in particular was not run by the call: only by the end.
        assert probe.value(f"on_close:{info.handler}") != "x"

    # -- notifications -------------------------------------------------------------

    async def test_typed_notifications_reach_a_notification_handler_as_their_types(
        self,
    ) -> None:
        shape = Circle("circle", Point(0.5, -1.0), 2.0)
        path = [Point(1.0, 2.0), Point(3.5, -4.0)]
        with trio.fail_after(TEST_TIMEOUT):
            async with self.open() as frontend:
                events = _EventsHandler()
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
                events = _Received()
                raw = _Received()
                frontend.add_listener(
                    ConformanceIpcEvents.channel_name, lambda *message: events.add(message)
                )
                frontend.add_listener(_RAW_CHANNEL, lambda *message: raw.add(message))
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
        heard = _BackendRecorder()
        backend.add_listener(_FrontendEvents.channel_name, heard.listener)
        with trio.fail_after(TEST_TIMEOUT):
            async with self.open(backend) as frontend:
                with contexts.activity() as act:
                    await frontend.send(_FrontendEvents.channel_name, "clicked", 1, Point(1, 2))
                    await frontend.notifier(_FrontendEvents).clicked(2, Point(3.0, 4.5))
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
        heard = _BackendRecorder()
        backend.add_listener(_FrontendEvents.channel_name, heard.listener)
        with trio.fail_after(TEST_TIMEOUT):
            async with self.open(backend) as frontend:
                ticks = _Received()
                frontend.add_listener(
                    ConformanceIpcEvents.channel_name, lambda method, n: ticks.add(n)
                )
                assert await frontend.proxy(ConformanceIpc).send_ticks(0, 200) == 200
                assert await ticks.wait_for(200) == list(range(200))
                notifier = frontend.notifier(_FrontendEvents)
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
        removed_heard, kept_heard = _BackendRecorder(), _BackendRecorder()
        remove_heard = backend.add_listener(_FrontendEvents.channel_name, removed_heard.listener)
        backend.add_listener(_FrontendEvents.channel_name, kept_heard.listener)
        with trio.fail_after(TEST_TIMEOUT):
            async with self.open(backend) as frontend:
                removed, kept = _Received(), _Received()
                events = _EventsHandler()
                remove_listener = frontend.add_listener(
                    ConformanceIpcEvents.channel_name, lambda method, n: removed.add(n)
                )
                frontend.add_listener(
                    ConformanceIpcEvents.channel_name, lambda method, n: kept.add(n)
                )
                remove_events = frontend.add_notification_handler(events)
                remove_served = frontend.register(_FrontendHandler())
                proxy = frontend.proxy(ConformanceIpc)
                notifier = frontend.notifier(_FrontendEvents)

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

    # -- sessions: isolation -----------------------------------------------------

    async def test_each_frontend_gets_only_its_own_notifications(self) -> None:
        backend = self.backend_ipc()
        with trio.fail_after(TEST_TIMEOUT):
            async with self.open(backend) as first, self.open(backend) as second:
                got: dict[str, _Received] = {}
                for frontend in (first, second):
                    received = got[frontend.session_id] = _Received()
                    frontend.add_listener(
                        ConformanceIpcEvents.channel_name,
                        lambda method, n, received=received: received.add(n),
                    )
                    frontend.add_listener(
                        _RAW_CHANNEL, lambda method, n, *rest, received=received: received.add(n)
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

    # -- backend-initiated calls ---------------------------------------------------

    async def test_handler_calls_a_channel_the_frontend_serves(self) -> None:
        with trio.fail_after(TEST_TIMEOUT):
            async with self.open() as frontend:
                served = _FrontendHandler()
                frontend.register(served)
                proxy = frontend.proxy(ConformanceIpc)
                with contexts.activity() as act, trio.move_on_after(3):
                    assert await proxy.ask_frontend("double", 21) == "ok:42"
                    assert await proxy.ask_frontend("raw:double", 4) == "ok:8"
        # The backend's call carried the activity and the deadline of the call it serves.
        assert served.activities == [act.activity_id, act.activity_id]
        for left in served.deadlines:
            assert left is not None
            assert 0 < left <= 3

    async def test_cancelling_a_call_cancels_the_backends_call_to_the_frontend(self) -> None:
        with trio.fail_after(TEST_TIMEOUT):
            async with self.open() as frontend:
                served = _FrontendHandler()
                frontend.register(served)
                proxy = frontend.proxy(ConformanceIpc)
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(proxy.ask_frontend, "wait", 1)
                    await served.started.wait()
                    nursery.cancel_scope.cancel()
                # The handler was cancelled, and so was its own call to the frontend.
                await served.finished.wait()
                assert await proxy.ask_frontend("double", 1) == "ok:2"
                assert frontend.is_valid

    async def test_errors_of_backend_initiated_calls_are_mapped(self) -> None:
        with trio.fail_after(TEST_TIMEOUT):
            async with self.open() as frontend:
                proxy = frontend.proxy(ConformanceIpc)
                unserved = await proxy.ask_frontend("double", 1)
                assert unserved.startswith("NotFound:")
                assert "tether.testing.ipc-frontend" in unserved
                frontend.register(_FrontendHandler)  # a class: instantiated once
                assert await proxy.ask_frontend("fail", 7) == (
                    "ConformanceError:7:the frontend refuses"
                )
                missing = await proxy.ask_frontend("raw:nope", 1)
                assert missing.startswith("NotFound:")
                assert "nope" in missing
                bad = await proxy.ask_frontend("raw:double", 1)
                assert bad == "ok:2"
                assert frontend.is_valid

    async def test_session_task_calls_the_frontend(self) -> None:
        probe = Probe()
        with trio.fail_after(TEST_TIMEOUT):
            async with self.open(self.backend_ipc(probe)) as frontend:
                served = _FrontendHandler()
                frontend.register(served)
                with contexts.activity() as act:
                    await frontend.proxy(ConformanceIpc).ask_frontend_later("k", "double", 5)
                assert await probe.wait("later:k") == "ok:10"
        # A session task keeps the activity of the call that started it.
        assert served.activities == [act.activity_id]

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
        with trio.fail_after(TEST_TIMEOUT):
            async with self.open(max_pending_notifications=2) as frontend:
                proxy = frontend.proxy(ConformanceIpc)
                answers = _Received()

                async def listener(method: str, n: int) -> None:
                    answers.add(await proxy.add(n, 100))

                frontend.add_listener(ConformanceIpcEvents.channel_name, listener)
                with trio.move_on_after(_HUNG_CALL) as stuck:
                    await proxy.send_ticks(0, 6)
                    await answers.wait_for(6)
                assert not stuck.cancelled_caught, (
                    f"the session hung after {answers.items}: a reply waits behind "
                    "notifications the frontend stopped reading"
                )
                assert answers.items == [100, 101, 102, 103, 104, 105]

    async def test_a_backend_listener_can_call_the_frontend_while_messages_wait(self) -> None:
        backend = self.backend_ipc(max_pending_notifications=2)
        answers = _BackendRecorder()
        backend.add_listener(_FrontendEvents.channel_name, _frontend_caller("double", answers))
        with trio.fail_after(TEST_TIMEOUT):
            async with self.open(backend) as frontend:
                frontend.register(_FrontendHandler())
                notifier = frontend.notifier(_FrontendEvents)
                for n in range(6):  # more than the backend's queue holds
                    await notifier.clicked(n, Point(0, 0))
                got = [(heard.method, heard.args) for heard in await answers.wait_for(6)]
        assert got == [(f"ok:{2 * n}", (n,)) for n in range(6)], (
            "a backend listener's call to the frontend hung: its reply waits behind "
            "one-way messages the backend stopped reading"
        )

    async def test_leaving_ends_the_session_while_backend_listeners_are_behind(self) -> None:
        backend = self.backend_ipc(max_pending_notifications=2)
        answers = _BackendRecorder()
        backend.add_listener(_FrontendEvents.channel_name, _frontend_caller("wait", answers))
        with trio.fail_after(TEST_TIMEOUT):
            async with self.open(backend) as frontend:
                served = _FrontendHandler()
                frontend.register(served)
                notifier = frontend.notifier(_FrontendEvents)
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
                after = _Received()
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
        records = _errors_logged(caplog, ValueError)
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
        heard = _BackendRecorder()
        backend.add_listener(_FrontendEvents.channel_name, broken)
        backend.add_listener(_FrontendEvents.channel_name, heard.listener)
        with trio.fail_after(TEST_TIMEOUT):
            async with self.open(backend) as frontend:
                with contexts.activity() as act:
                    await frontend.notifier(_FrontendEvents).clicked(1, Point(0, 0))
                await heard.wait_for(1)
                assert await frontend.proxy(ConformanceIpc).add(1, 2) == 3
                assert frontend.is_valid
        records = _errors_logged(caplog, ValueError)
        assert len(records) == 1
        assert getattr(records[0], "activity_id", None) == act.activity_id

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
                events = _EventsHandler()
                frontend.add_notification_handler(events)
                served = _FrontendHandler()
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
                served = _FrontendHandler()
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
                await frontend.send(_FrontendEvents.channel_name, "clicked", 1, Point(0, 0))
            with pytest.raises(ConnectionClosed):
                await frontend.notifier(_FrontendEvents).clicked(1, Point(0, 0))

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
                seen = _Received()

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


def _errors_logged(
    caplog: pytest.LogCaptureFixture, kind: type[BaseException]
) -> list[logging.LogRecord]:
    """Records of "tether.ipc" that carry an exception of `kind`."""
    return [
        record
        for record in caplog.records
        if record.name == "tether.ipc"
        and record.exc_info is not None
        and isinstance(record.exc_info[1], kind)
    ]
