# mypy: disable-error-code="empty-body"
# (channel methods are declared with `...` bodies)
"""The IPC conformance suite's declarations, handlers and recorders.

The channels and handlers the tests of `IpcConformance` run against, and the
thread-safe recorders through which a backend (maybe in another thread) reports
to the test.
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
    TetherError,
    Unauthorized,
    Unavailable,
    current_session,
)
from ._probe import Probe
from ._rpc_suite import Circle, ConformanceError, Everything, Point, Square

__all__ = [
    "HUNG_CALL",
    "RAW_CHANNEL",
    "BackendRecorder",
    "ConformanceFrontendIpc",
    "ConformanceIpc",
    "ConformanceIpcEvents",
    "EventsHandler",
    "Extra",
    "FrontendEvents",
    "FrontendHandler",
    "IpcContextInfo",
    "IpcSuiteBase",
    "Newer",
    "NextMajor",
    "OlderMinor",
    "Patched",
    "Received",
    "Unserved",
    "activity_id",
    "errors_logged",
    "frontend_caller",
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
    #: `RequestContext.metadata` and `.traceparent`.
    metadata: dict[str, str] = attrs.field(factory=dict)
    traceparent: str | None = None


class ConformanceIpc(IpcInterface):
    """The channel the suite's backend serves."""

    channel_name = "tether.testing.ipc"
    version = "2.3.1"

    async def add(self, a: int, b: int) -> int: ...
    async def echo(self, value: Everything) -> Everything: ...
    async def echo_list(self, values: list[Everything]) -> list[Everything]: ...
    async def mirror(self, data: bytes) -> bytes: ...
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


class FrontendEvents(NotificationInterface):
    # One-way messages from the frontend to the backend's listeners.
    channel_name = "tether.testing.ipc-frontend-events"

    async def clicked(self, n: int, where: Point) -> None: ...


#: The untyped channel the backend's `send_raw` uses.
RAW_CHANNEL = "tether.testing.ipc-raw"


class Newer(IpcInterface):
    # The channel as a newer frontend sees it: minor 4 > the backend's 3.
    channel_name = "tether.testing.ipc"
    version = "2.4.0"

    async def add(self, a: int, b: int) -> int: ...


class NextMajor(IpcInterface):
    channel_name = "tether.testing.ipc"
    version = "3.0.0"

    async def add(self, a: int, b: int) -> int: ...


class Patched(IpcInterface):
    # A frontend built against a later patch: compatible.
    channel_name = "tether.testing.ipc"
    version = "2.3.9"

    async def add(self, a: int, b: int) -> int: ...


class OlderMinor(IpcInterface):
    # A frontend built against an older minor: compatible.
    channel_name = "tether.testing.ipc"
    version = "2.1.0"

    async def add(self, a: int, b: int) -> int: ...


class Extra(IpcInterface):
    # The same name and version, with a method the backend lacks.
    channel_name = "tether.testing.ipc"
    version = "2.3.1"

    async def not_there(self) -> int: ...


class Unserved(IpcInterface):
    channel_name = "tether.testing.nobody-serves-this"
    version = "1.0.0"

    async def anything(self) -> int: ...


ERRORS: dict[str, type[TetherError]] = {
    "not-found": NotFound,
    "bad-request": InvalidRequest,
    "unauthorized": Unauthorized,
    "incompatible-version": IncompatibleVersion,
    "payload-too-large": PayloadTooLarge,
    "deadline-exceeded": DeadlineExceeded,
}

#: Seconds after which a call that should take milliseconds counts as hung.
HUNG_CALL = 1.0

# Handler instances are numbered so the test can tell them apart across threads.
handler_numbers = itertools.count(1)


def seconds_left(deadline: float | None) -> float | None:
    if deadline is None or deadline == math.inf:
        return None
    return deadline - trio.current_time()


def activity_id() -> str | None:
    ctx = contexts.current()
    return None if ctx is None else ctx.activity_id


async def ask_frontend(method: str, value: int) -> str:
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
        self.number = next(handler_numbers)

    async def _private(self) -> int:
        return 1  # a helper: never callable from the frontend

    async def add(self, a: int, b: int) -> int:
        return a + b

    async def echo(self, value: Everything) -> Everything:
        assert isinstance(value, Everything), "the backend must structure arguments"
        return value

    async def mirror(self, data: bytes) -> bytes:
        assert type(data) is bytes, "the backend must structure bytes as bytes"
        return data[::-1]

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
            seconds_left=seconds_left(trio.current_effective_deadline()),
            context_deadline_left=seconds_left(ctx.deadline),
            handler=self.number,
            metadata=dict(ctx.metadata),
            traceparent=ctx.traceparent,
        )

    async def fail(self, kind: str, message: str) -> None:
        if kind == "application":
            raise ConformanceError(code=42, reason=message)
        if kind == "unavailable":
            raise Unavailable(message, retry_after=2.5)
        if kind == "overloaded":
            raise Unavailable(message, retry_after=1, overloaded=True)
        if kind in ERRORS:
            raise ERRORS[kind](message)
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
        await current_session().send(RAW_CHANNEL, "via-session", value, Point(1.0, 2.0))
        await self.backend.send(RAW_CHANNEL, "via-backend", value + 1)
        return self.backend.is_valid

    async def start_task(self, key: str) -> None:
        current_session().start_soon(self._task, key)

    async def _task(self, key: str) -> None:
        self.probe.signal(f"task-started:{key}", (activity_id(), current_session().id))
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
        return await ask_frontend(method, value)

    async def ask_frontend_later(self, key: str, method: str, value: int) -> None:
        current_session().start_soon(self._ask_later, key, method, value)

    async def _ask_later(self, key: str, method: str, value: int) -> None:
        try:
            answer = await ask_frontend(method, value)
        except trio.Cancelled:
            self.probe.signal(f"later:{key}", "cancelled")
            raise
        self.probe.signal(f"later:{key}", answer)

    async def close_session(self, reason: str) -> None:
        current_session().close(reason)

    async def record(self, key: str, value: int) -> None:
        self.probe.signal(f"record:{key}", (value, activity_id(), current_session().id))

    def on_close(self, reason: str) -> None:
        self.probe.signal(f"on_close:{self.number}", reason)


@attrs.frozen
class Heard:
    """A one-way message a backend listener got."""

    method: str
    args: tuple[Any, ...]
    session_id: str
    activity_id: str | None


class BackendRecorder:
    """A thread-safe record of what a backend listener heard, that the test can wait on."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._items: list[Heard] = []
        self._probe = Probe()

    def listener(self, method: str, *args: Any) -> None:
        heard = Heard(method, args, current_session().id, activity_id())
        with self._lock:
            self._items.append(heard)
            count = len(self._items)
        self._probe.signal(f"count:{count}")

    @property
    def items(self) -> list[Heard]:
        with self._lock:
            return list(self._items)

    async def wait_for(self, count: int) -> list[Heard]:
        """Wait until at least `count` messages were heard; return them all."""
        await self._probe.wait(f"count:{count}")
        return self.items


def frontend_caller(method: str, answers: BackendRecorder) -> Callable[..., Awaitable[None]]:
    """A backend listener that calls the frontend for each message and records the outcome.

    If a call hangs, the listener gives up after a bound and skips what follows,
    so that a hung session still ends (a backend thread cannot be abandoned).
    """
    gave_up = threading.Event()

    async def listener(event: str, n: int, where: Any) -> None:
        if gave_up.is_set():
            answers.listener("skipped after a hung call", n)
            return
        with trio.move_on_after(HUNG_CALL):
            answers.listener(await ask_frontend(method, n), n)
            return
        gave_up.set()
        answers.listener("hung", n)

    return listener


class Received:
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


class EventsHandler(NotificationHandler, ConformanceIpcEvents):
    """The frontend's typed receiver of the backend's notifications."""

    def __init__(self) -> None:
        self.received = Received()
        self.closed: list[str] = []

    async def tick(self, n: int) -> None:
        self.received.add(("tick", n))

    async def moved(self, shape: Circle | Square, path: list[Point]) -> None:
        self.received.add(("moved", shape, path))

    def on_close(self, reason: str) -> None:
        self.closed.append(reason)


class FrontendHandler(IpcHandler, ConformanceFrontendIpc):
    """What the frontend serves for the backend to call; runs in the test's loop."""

    def __init__(self) -> None:
        self.activities: list[str | None] = []
        self.deadlines: list[float | None] = []
        self.metadata: list[dict[str, str]] = []
        self.closed: list[str] = []
        self.started = trio.Event()
        self.finished = trio.Event()

    async def double(self, value: int) -> int:
        self.activities.append(activity_id())
        self.deadlines.append(seconds_left(trio.current_effective_deadline()))
        ctx = contexts.current()
        self.metadata.append(dict(ctx.metadata) if ctx is not None else {})
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


class IpcSuiteBase:
    """What the IPC suite's tests share: how to connect, and the backends they use.

    `connect_ipc(backend, **options)` returns an async context manager that
    serves `backend` over the transport and yields the frontend's end of one
    session, for the block. Leaving the block ends the session; the block must
    not end before the backend's end of it has (so `IpcSession.wait_closed` is
    done). The suite passes these options, which a transport must honour:
    `channels` (the IpcInterface classes checked at connect), `application_id`,
    `application_version`, `authorization` (the credential the backend's
    `authorize` hook sees, sent in the `hello`) and `max_pending_notifications`
    (how many of the backend's notifications may wait for the frontend's
    listeners).
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


def errors_logged(
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
