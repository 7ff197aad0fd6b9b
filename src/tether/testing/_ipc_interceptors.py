# mypy: disable-error-code="empty-body"
# (channel methods are declared with `...` bodies)
"""The IPC conformance suite: interceptors, both directions, notifications included.

`BackendIpc(interceptors=)` and `connect_ipc(interceptors=)` run around what
their end sends (`CallInfo.side` "client") and receives ("server"); the
process-wide ones (`install_interceptor`) run outside both. The backend may
run in another thread: what its interceptors and handlers record goes in
lists, appended to from either thread.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any, ClassVar

import attrs
import pytest
import trio

from .. import contexts
from ..runtime import (
    BackendIpc,
    Forbidden,
    FrontendIpc,
    IpcHandler,
    IpcInterface,
    NotificationHandler,
    NotificationInterface,
    Stream,
    current_session,
    open_stream,
)
from ..runtime._interceptors import CallInfo, Interceptor, Proceed, install_interceptor
from ._ipc_fixtures import IpcSuiteBase
from ._rpc_suite import TEST_TIMEOUT

__all__ = ["InterceptedEvents", "InterceptedIpc", "IpcInterceptorTests"]


class InterceptedIpc(IpcInterface):
    """The channel the frontend calls in the interceptor cases."""

    channel_name = "tether.conformance.intercepted"
    version = "1.0.0"

    async def add(self, a: int, b: int) -> int: ...
    async def application(self) -> str | None: ...
    async def round_trip(self, n: int) -> int: ...
    def count(self, n: int) -> Stream[int]: ...


class InterceptedEvents(NotificationInterface):
    """One-way messages, each way."""

    channel_name = "tether.conformance.intercepted-events"
    version = "1.0.0"

    async def done(self, n: int) -> None: ...


class InterceptedFrontend(IpcInterface):
    """A channel the frontend serves, for the backend's invokes."""

    channel_name = "tether.conformance.intercepted-frontend"
    version = "1.0.0"

    async def double(self, n: int) -> int: ...


class _Handler(IpcHandler, InterceptedIpc):
    ran: ClassVar[list[str]]

    async def add(self, a: int, b: int) -> int:
        self.ran.append("add")
        return a + b

    async def application(self) -> str | None:
        ctx = contexts.current()
        assert ctx is not None
        return ctx.application_id

    async def round_trip(self, n: int) -> int:
        """Notify the frontend, then invoke it: the backend's two ways of sending."""
        session = current_session()
        await session.notifier(InterceptedEvents).done(n)
        return await session.proxy(InterceptedFrontend).double(n)

    async def count(self, n: int) -> AsyncIterator[int]:
        for i in range(n):
            yield i


class _FrontendHandler(IpcHandler, InterceptedFrontend):
    async def double(self, n: int) -> int:
        return 2 * n


class _Heard(NotificationHandler, InterceptedEvents):
    """The frontend's listener: each `done` it hears, and an event per count."""

    def __init__(self) -> None:
        self.heard: list[int] = []
        self.changed = trio.Event()

    async def done(self, n: int) -> None:
        self.heard.append(n)
        self.changed.set()
        self.changed = trio.Event()

    async def wait_for(self, n: int) -> None:
        while n not in self.heard:
            await self.changed.wait()


def _recorder(name: str, events: list[tuple[str, str, str, bool]]) -> Interceptor:
    async def intercept(call: CallInfo, proceed: Proceed) -> Any:
        assert call.kind == "ipc"
        assert call.version is None
        events.append((name, call.side, call.operation, call.notification))
        return await proceed(call)

    return intercept


class IpcInterceptorTests(IpcSuiteBase):
    """The interceptor cases; mixed into `IpcConformance`."""

    def intercepted_backend(self, *interceptors: Interceptor) -> tuple[BackendIpc, list[str]]:
        backend = BackendIpc(interceptors=interceptors)

        class Handler(_Handler):
            ran: ClassVar[list[str]] = []

        backend.register(Handler)
        return backend, Handler.ran

    def open_intercepted(
        self, backend: BackendIpc, *interceptors: Interceptor, **options: Any
    ) -> Any:
        return self.connect_ipc(
            backend, channels=[InterceptedIpc], interceptors=interceptors, **options
        )

    async def test_ipc_interceptors_see_both_directions_in_order(self) -> None:
        events: list[tuple[str, str, str, bool]] = []
        backend, _ = self.intercepted_backend(_recorder("b1", events), _recorder("b2", events))
        backend_heard: list[tuple[str, int]] = []

        async def answer(method: str, n: int) -> None:
            # Heard by the backend: it answers with a notification the test waits for.
            backend_heard.append((method, n))
            await current_session().notifier(InterceptedEvents).done(n + 1000)

        backend.add_listener(InterceptedEvents.channel_name, answer)
        heard = _Heard()
        with trio.fail_after(TEST_TIMEOUT), install_interceptor(_recorder("g", events)):
            frontend: FrontendIpc
            async with self.open_intercepted(
                backend, _recorder("f1", events), _recorder("f2", events)
            ) as frontend:
                frontend.add_notification_handler(heard)
                frontend.register(_FrontendHandler)
                assert await frontend.proxy(InterceptedIpc).round_trip(21) == 42
                await heard.wait_for(21)
                await frontend.notifier(InterceptedEvents).done(7)
                await heard.wait_for(1007)
                assert await frontend.proxy(InterceptedIpc).add(1, 2) == 3
        assert backend_heard == [("done", 7)]

        def chain(side: str, operation: str, notification: bool) -> list[str]:
            return [e[0] for e in events if e[1:] == (side, operation, notification)]

        # Each message, on each end: the installed one outermost, then in order.
        assert chain("client", "round_trip", False) == ["g", "f1", "f2"]
        assert chain("server", "round_trip", False) == ["g", "b1", "b2"]
        assert chain("client", "double", False) == ["g", "b1", "b2"]
        assert chain("server", "double", False) == ["g", "f1", "f2"]
        # done(21) from the backend, done(7) from the frontend, done(1007) back.
        backend_chain, frontend_chain = ["g", "b1", "b2"], ["g", "f1", "f2"]
        assert chain("client", "done", True) == backend_chain + frontend_chain + backend_chain
        assert chain("server", "done", True) == frontend_chain + backend_chain + frontend_chain
        assert chain("client", "add", False) == ["g", "f1", "f2"]
        assert chain("server", "add", False) == ["g", "b1", "b2"]
        assert len(events) == 36

    async def test_an_ipc_interceptor_refuses_an_invoke_and_a_notification(self) -> None:
        async def refuse_add(call: CallInfo, proceed: Proceed) -> Any:
            if call.operation == "add":
                raise Forbidden(f"{call.operation} refused by an interceptor")
            return await proceed(call)

        async def drop_13(call: CallInfo, proceed: Proceed) -> Any:
            if call.side == "server" and call.notification and call.args == (13,):
                raise Forbidden("13 is refused")
            return await proceed(call)

        backend, ran = self.intercepted_backend(refuse_add)
        heard = _Heard()
        with trio.fail_after(TEST_TIMEOUT):
            async with self.open_intercepted(backend, drop_13) as frontend:
                frontend.add_notification_handler(heard)
                frontend.register(_FrontendHandler)
                with pytest.raises(Forbidden) as refused:
                    await frontend.proxy(InterceptedIpc).add(1, 2)
                # The frontend's interceptor drops the notification 13 it receives...
                await frontend.proxy(InterceptedIpc).round_trip(13)
                # ...and the next one, delivered in order after it, arrives.
                await frontend.proxy(InterceptedIpc).round_trip(14)
                await heard.wait_for(14)
        assert refused.value.code == "forbidden"
        assert refused.value.remote
        assert ran == []  # the handler's add never ran
        assert heard.heard == [14]

    async def test_a_backend_interceptor_changes_the_handlers_context(self) -> None:
        async def change(call: CallInfo, proceed: Proceed) -> Any:
            if call.side == "server":
                context = attrs.evolve(call.context, application_id="from-the-interceptor")
                call = attrs.evolve(call, context=context)
            return await proceed(call)

        backend, _ = self.intercepted_backend(change)
        with trio.fail_after(TEST_TIMEOUT):
            async with self.open_intercepted(backend, application_id="app") as frontend:
                assert await frontend.proxy(InterceptedIpc).application() == "from-the-interceptor"

    async def test_ipc_stream_messages_are_reported(self) -> None:
        heard: list[tuple[str, str, int]] = []
        outcomes: list[tuple[str, object]] = []

        async def listen(call: CallInfo, proceed: Proceed) -> Any:
            if call.messages is not None:
                assert call.stream == "server"
                call.messages.add_listener(
                    lambda direction, index: heard.append((call.side, direction, index))
                )
            value = await proceed(call)
            outcomes.append((call.side, value))
            return value

        backend, _ = self.intercepted_backend(listen)
        with trio.fail_after(TEST_TIMEOUT):
            async with (
                self.open_intercepted(backend, listen) as frontend,
                open_stream(frontend.proxy(InterceptedIpc).count(3)) as items,
            ):
                assert [item async for item in items] == [0, 1, 2]
        assert [h for h in heard if h[0] == "server"] == [("server", "sent", i) for i in range(3)]
        assert [h for h in heard if h[0] == "client"] == [
            ("client", "received", i) for i in range(3)
        ]
        assert outcomes == [("server", None), ("client", None)]
