# mypy: disable-error-code="empty-body"
# (interface operations are declared with `...` bodies)
"""The interceptor cases of the RPC conformance suite (`RpcConformance` runs them).

Interceptors run in the runtime every transport shares, so each case holds
on every transport: the order (first registered outermost, process-wide ones
outside), a refusal (the caller gets the tether error; the impl never ran), a
changed context (the impl sees it, and its downstream call carries it), the
outcome each interceptor sees, and a stream's messages.

The backend may run in another thread (`memory.connect(thread=True)`): what
the interceptors record goes in lists, appended to from either thread.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager
from typing import Any, ClassVar

import attrs
import pytest
import trio

from .. import contexts
from ..runtime import Forbidden, NotFound, RpcBackend, RpcInterface, RpcManager
from ..runtime._interceptors import CallInfo, Interceptor, Proceed, install_interceptor
from ..runtime._streams import Stream, open_stream

__all__ = ["ConformanceIntercepted", "RpcInterceptorCases"]

#: Seconds an interceptor case may take.
INTERCEPT_TIMEOUT = 10.0


@attrs.frozen
class SeenContext:
    """What an impl saw of its context."""

    activity_id: str
    session_id: str | None
    application_id: str | None


class ConformanceIntercepted(RpcInterface):
    """The interface the interceptor cases call."""

    interface_name = "tether.ConformanceIntercepted"
    interface_version = "1.0.0"

    async def add(self, a: int, b: int) -> int: ...
    async def seen(self) -> SeenContext: ...
    async def downstream_seen(self) -> SeenContext: ...
    async def fail(self) -> None: ...
    def count(self, n: int) -> Stream[int]: ...
    async def total(self, values: Stream[int]) -> int: ...


def _seen() -> SeenContext:
    ctx = contexts.current()
    assert ctx is not None, "the server did not set a RequestContext"
    return SeenContext(ctx.activity_id, ctx.session_id, ctx.application_id)


class _Impl(ConformanceIntercepted):
    """Records each run; `downstream` opens a connection to a second backend."""

    def __init__(
        self,
        manager: RpcManager,
        downstream: Callable[[], AbstractAsyncContextManager[RpcBackend]] | None = None,
    ) -> None:
        self.manager = manager
        self.downstream = downstream
        self.ran: list[str] = []

    async def add(self, a: int, b: int) -> int:
        self.ran.append("add")
        return a + b

    async def seen(self) -> SeenContext:
        self.ran.append("seen")
        return _seen()

    async def downstream_seen(self) -> SeenContext:
        assert self.downstream is not None
        async with self.downstream() as backend:
            return await backend.get_client(ConformanceIntercepted).seen()

    async def fail(self) -> None:
        raise NotFound("nothing here, on purpose")

    async def count(self, n: int) -> AsyncIterator[int]:
        for i in range(n):
            yield i

    async def total(self, values: Stream[int]) -> int:
        return sum([value async for value in values])


def _recorder(name: str, events: list[str]) -> Interceptor:
    """An interceptor that records entering and leaving, with the call's side."""

    async def intercept(call: CallInfo, proceed: Proceed) -> Any:
        events.append(f"{name}>{call.side}")
        try:
            return await proceed(call)
        finally:
            events.append(f"{name}<{call.side}")

    return intercept


def _outcomes(into: list[tuple[str, str, object]]) -> Interceptor:
    """An interceptor that records each call's outcome: ("ok", value) or ("raised", type)."""

    async def intercept(call: CallInfo, proceed: Proceed) -> Any:
        try:
            value = await proceed(call)
        except Exception as exc:
            into.append((call.side, "raised", type(exc).__name__))
            raise
        into.append((call.side, "ok", value))
        return value

    return intercept


async def _numbers(n: int) -> AsyncIterator[int]:
    for i in range(n):
        yield i


class RpcInterceptorCases:
    """The interceptor cases; mixed into `RpcConformance`."""

    connect: Callable[..., AbstractAsyncContextManager[RpcBackend]]
    stream_kinds: ClassVar[frozenset[str]]

    def intercepted(
        self, *interceptors: Interceptor, downstream: RpcManager | None = None
    ) -> tuple[RpcManager, _Impl]:
        """A manager serving `ConformanceIntercepted` with these server interceptors."""
        manager = RpcManager(interceptors=interceptors)
        opener = None
        if downstream is not None:
            served = downstream

            def opener() -> AbstractAsyncContextManager[RpcBackend]:
                return self.connect(served, interfaces=[ConformanceIntercepted])

        impl = _Impl(manager, opener)
        manager.register_impl(ConformanceIntercepted, impl)
        return manager, impl

    def open_intercepted(
        self, manager: RpcManager, *interceptors: Interceptor, **options: Any
    ) -> AbstractAsyncContextManager[RpcBackend]:
        return self.connect(
            manager, interfaces=[ConformanceIntercepted], interceptors=interceptors, **options
        )

    async def test_interceptors_run_first_registered_outermost(self) -> None:
        events: list[str] = []
        manager, _ = self.intercepted(_recorder("s1", events), _recorder("s2", events))
        with trio.fail_after(INTERCEPT_TIMEOUT), install_interceptor(_recorder("g", events)):
            async with self.open_intercepted(
                manager, _recorder("c1", events), _recorder("c2", events)
            ) as backend:
                assert await backend.get_client(ConformanceIntercepted).add(2, 3) == 5
        assert events == [
            "g>client",
            "c1>client",
            "c2>client",
            "g>server",
            "s1>server",
            "s2>server",
            "s2<server",
            "s1<server",
            "g<server",
            "c2<client",
            "c1<client",
            "g<client",
        ]

    @pytest.mark.parametrize("side", ["client", "server"])
    async def test_an_interceptor_refuses_with_a_tether_error(self, side: str) -> None:
        async def refuse(call: CallInfo, proceed: Proceed) -> Any:
            if call.operation == "add":
                raise Forbidden(f"{call.interface}.{call.operation} refused by an interceptor")
            return await proceed(call)

        manager, impl = self.intercepted(*([refuse] if side == "server" else []))
        client_side = [refuse] if side == "client" else []
        with trio.fail_after(INTERCEPT_TIMEOUT):
            async with self.open_intercepted(manager, *client_side) as backend:
                client = backend.get_client(ConformanceIntercepted)
                with pytest.raises(Forbidden) as refused:
                    await client.add(1, 2)
                # The interceptor passes what it does not refuse.
                await client.seen()
        assert refused.value.code == "forbidden"
        assert "refused by an interceptor" in refused.value.message
        assert refused.value.remote == (side == "server")
        assert impl.ran == ["seen"]  # add never ran

    async def test_a_server_interceptor_changes_the_context_downstream_calls_carry(
        self,
    ) -> None:
        async def tag(call: CallInfo, proceed: Proceed) -> Any:
            changed = attrs.evolve(call.context, session_id="session-from-the-interceptor")
            return await proceed(attrs.evolve(call, context=changed))

        downstream, _ = self.intercepted()
        middle, _ = self.intercepted(tag, downstream=downstream)
        with trio.fail_after(INTERCEPT_TIMEOUT):
            async with self.open_intercepted(middle) as backend:
                client = backend.get_client(ConformanceIntercepted)
                with contexts.activity() as act:
                    here = await client.seen()
                    there = await client.downstream_seen()
        assert here.session_id == "session-from-the-interceptor"
        assert there.session_id == "session-from-the-interceptor"
        assert here.activity_id == there.activity_id == act.activity_id

    async def test_a_client_interceptor_changes_what_is_sent(self) -> None:
        async def change(call: CallInfo, proceed: Proceed) -> Any:
            context = attrs.evolve(call.context, application_id="app-from-the-interceptor")
            if call.operation == "add":
                return await proceed(attrs.evolve(call, args=(call.args[0], 100)))
            return await proceed(attrs.evolve(call, context=context))

        manager, _ = self.intercepted()
        with trio.fail_after(INTERCEPT_TIMEOUT):
            async with self.open_intercepted(manager, change, application_id="app") as backend:
                client = backend.get_client(ConformanceIntercepted)
                assert await client.add(1, b=2) == 101
                seen = await client.seen()
        assert seen.application_id == "app-from-the-interceptor"

    async def test_interceptors_see_the_outcome(self) -> None:
        outcomes: list[tuple[str, str, object]] = []
        manager, _ = self.intercepted(_outcomes(outcomes))
        with trio.fail_after(INTERCEPT_TIMEOUT):
            async with self.open_intercepted(manager, _outcomes(outcomes)) as backend:
                client = backend.get_client(ConformanceIntercepted)
                assert await client.add(20, 22) == 42
                with pytest.raises(NotFound):
                    await client.fail()
        assert outcomes == [
            ("server", "ok", 42),
            ("client", "ok", 42),
            ("server", "raised", "NotFound"),
            ("client", "raised", "NotFound"),
        ]

    async def test_stream_messages_are_reported(self) -> None:
        heard: list[tuple[str, str, int]] = []
        outcomes: list[tuple[str, str, object]] = []

        async def listen(call: CallInfo, proceed: Proceed) -> Any:
            assert call.messages is not None, f"{call.operation} is a stream call"
            assert call.stream == ("server" if call.operation == "count" else "client")
            call.messages.add_listener(
                lambda direction, index: heard.append((call.side, direction, index))
            )
            return await proceed(call)

        manager, _ = self.intercepted(listen, _outcomes(outcomes))
        with trio.fail_after(INTERCEPT_TIMEOUT):
            async with self.open_intercepted(manager, _outcomes(outcomes), listen) as backend:
                client = backend.get_client(ConformanceIntercepted)
                if "server" in self.stream_kinds:
                    async with open_stream(client.count(3)) as items:
                        assert [item async for item in items] == [0, 1, 2]
                if "client" in self.stream_kinds:
                    assert await client.total(_numbers(4)) == 6
        expected: list[tuple[str, str, int]] = []
        expected_outcomes: list[tuple[str, str, object]] = []
        if "server" in self.stream_kinds:
            expected += [("server", "sent", i) for i in range(3)]
            expected += [("client", "received", i) for i in range(3)]
            expected_outcomes += [("server", "ok", None), ("client", "ok", None)]
        if "client" in self.stream_kinds:
            expected += [("client", "sent", i) for i in range(4)]
            expected += [("server", "received", i) for i in range(4)]
            expected_outcomes += [("server", "ok", 6), ("client", "ok", 6)]
        # Each side's own messages in order; the two sides interleave as they run.
        for side in ("client", "server"):
            assert [h for h in heard if h[0] == side] == [e for e in expected if e[0] == side]
        assert outcomes == expected_outcomes

    async def test_an_installed_interceptor_stops_at_uninstall(self) -> None:
        events: list[str] = []
        manager, _ = self.intercepted()
        with trio.fail_after(INTERCEPT_TIMEOUT):
            async with self.open_intercepted(manager) as backend:
                client = backend.get_client(ConformanceIntercepted)
                installed = install_interceptor(_recorder("g", events), server=False)
                try:
                    await client.add(1, 1)
                finally:
                    installed.uninstall()
                installed.uninstall()  # a second time does nothing
                await client.add(1, 1)
        assert events == ["g>client", "g<client"]
