# mypy: disable-error-code="empty-body"
"""Interceptors beyond the conformance cases: retries, stream edges, checks, reprs, groups.

The cases every transport runs are in tether.testing (`RpcInterceptorCases`,
`IpcInterceptorTests`); these are the runtime's own edges, over the in-process
transport unless a case is about another.
"""

from __future__ import annotations

import functools
from collections.abc import AsyncIterator
from typing import Any

import attrs
import pytest
import trio

import tether
from tether import CallInfo, Proceed
from tether.runtime._interceptors import INSTALLED, peer_of
from tether.transports import memory, websocket

TIMEOUT = 10.0


class Api(tether.RpcInterface):
    interface_name = "test.Intercepted"
    interface_version = "1.0.0"

    async def flaky(self) -> int: ...
    def count(self, n: int) -> tether.Stream[int]: ...


class Impl(Api):
    def __init__(self) -> None:
        self.tries = 0

    async def flaky(self) -> int:
        self.tries += 1
        if self.tries == 1:
            raise tether.Unavailable("busy, try again", retry_after=0.01)
        return self.tries

    async def count(self, n: int) -> AsyncIterator[int]:
        for i in range(n):
            yield i


def _manager(**kwargs: Any) -> tuple[tether.RpcManager, Impl]:
    manager = tether.RpcManager(**kwargs)
    impl = Impl()
    manager.register_impl(Api, impl)
    return manager, impl


def _outcomes(into: list[object]) -> Any:
    async def intercept(call: CallInfo, proceed: Proceed) -> Any:
        try:
            value = await proceed(call)
        except BaseException as exc:
            into.append(type(exc).__name__)
            raise
        into.append(value)
        return value

    return intercept


async def test_a_client_interceptor_sees_one_outcome_across_retries() -> None:
    """Retries happen inside the chain: the interceptor runs once, and sees the success."""
    client_saw: list[object] = []
    server_saw: list[object] = []
    manager, impl = _manager(interceptors=[_outcomes(server_saw)])
    quick = tether.RetryPolicy(attempts=3, initial_backoff=0.01, max_backoff=0.02)
    with trio.fail_after(TIMEOUT):
        async with memory.connect(
            manager, interfaces=[Api], retry=quick, interceptors=[_outcomes(client_saw)]
        ) as backend:
            assert await backend.get_client(Api).flaky() == 2
    assert impl.tries == 2
    assert client_saw == [2]
    assert server_saw == ["Unavailable", 2]  # each try the server served


async def test_an_error_in_the_stream_block_is_the_interceptors_outcome() -> None:
    saw: list[object] = []
    manager, _ = _manager()
    with trio.fail_after(TIMEOUT):
        async with memory.connect(manager, interfaces=[Api], interceptors=[_outcomes(saw)]) as b:

            async def consume() -> None:
                async with tether.open_stream(b.get_client(Api).count(5)) as items:
                    async for _ in items:
                        raise ValueError("the caller's own")

            with pytest.raises(ValueError, match="the caller's own"):
                await consume()
            # The connection goes on.
            async with tether.open_stream(b.get_client(Api).count(2)) as items:
                assert [i async for i in items] == [0, 1]
    assert saw == ["ValueError", None]


async def test_cancelling_a_stream_block_cancels_its_chain() -> None:
    saw: list[object] = []
    manager, _ = _manager()
    with trio.fail_after(TIMEOUT):
        async with memory.connect(manager, interfaces=[Api], interceptors=[_outcomes(saw)]) as b:
            with trio.CancelScope() as scope:
                async with tether.open_stream(b.get_client(Api).count(5)) as items:
                    async for _ in items:
                        scope.cancel()
                        await trio.lowlevel.checkpoint()
            assert scope.cancelled_caught
    assert saw == ["Cancelled"]


async def test_a_stream_refused_by_an_interceptor_raises_at_open() -> None:
    async def refuse(call: CallInfo, proceed: Proceed) -> Any:
        raise tether.Forbidden("no streams today")

    manager, _ = _manager()
    with trio.fail_after(TIMEOUT):
        async with memory.connect(manager, interfaces=[Api], interceptors=[refuse]) as b:
            with pytest.raises(tether.Forbidden, match="no streams today"):
                async with tether.open_stream(b.get_client(Api).count(5)):
                    pytest.fail("the block must not run")


async def test_a_stream_interceptor_that_never_proceeds_is_told() -> None:
    async def forgets(call: CallInfo, proceed: Proceed) -> Any:
        return None

    manager, _ = _manager()
    with trio.fail_after(TIMEOUT):
        async with memory.connect(manager, interfaces=[Api], interceptors=[forgets]) as b:
            with pytest.raises(RuntimeError, match="without calling proceed"):
                async with tether.open_stream(b.get_client(Api).count(5)):
                    pytest.fail("the block must not run")


async def test_proceed_takes_a_call_info() -> None:
    async def wrong(call: CallInfo, proceed: Proceed) -> Any:
        return await proceed(call.args)  # type: ignore[arg-type]

    manager, impl = _manager()
    with trio.fail_after(TIMEOUT):
        async with memory.connect(manager, interfaces=[Api], interceptors=[wrong]) as b:
            with pytest.raises(TypeError, match=r"pass a tether\.CallInfo to proceed"):
                await b.get_client(Api).flaky()
    assert impl.tries == 0


def test_interceptors_must_be_callable() -> None:
    with pytest.raises(TypeError, match="async callable"):
        tether.RpcManager(interceptors=[42])  # type: ignore[list-item]
    with pytest.raises(TypeError, match="async callable"):
        tether.BackendIpc(interceptors=["not one"])  # type: ignore[list-item]
    with pytest.raises(TypeError, match="async callable"):
        tether.install_interceptor(None)  # type: ignore[arg-type]
    assert INSTALLED.client == INSTALLED.server == ()


def test_install_interceptor_is_process_wide_until_uninstalled() -> None:
    async def one(call: CallInfo, proceed: Proceed) -> Any:
        return await proceed(call)

    async def two(call: CallInfo, proceed: Proceed) -> Any:
        return await proceed(call)

    first = tether.install_interceptor(one)
    with tether.install_interceptor(two, client=False) as second:
        assert INSTALLED.client == (one,)
        assert INSTALLED.server == (one, two)
        assert "client=False" in repr(second)
    assert INSTALLED.server == (one,)
    first.uninstall()
    first.uninstall()
    assert INSTALLED.client == INSTALLED.server == ()


def test_peer_shows_no_userinfo_and_no_query() -> None:
    assert peer_of("http://user:secret@example.com:8080/rpc?token=x") == (
        "http://example.com:8080/rpc"
    )
    assert peer_of("wss://[::1]/ws") == "wss://[::1]/ws"
    # Not a URL: the transport's own check reports it, not this.
    assert peer_of("ws://127.0.0.1:99999/") is None
    assert peer_of(b"ws://127.0.0.1:1/") is None


async def test_call_info_repr_shows_no_credential() -> None:
    seen: list[CallInfo] = []

    async def keep(call: CallInfo, proceed: Proceed) -> Any:
        seen.append(call)
        return await proceed(call)

    manager, _ = _manager(interceptors=[keep])
    with trio.fail_after(TIMEOUT):
        async with memory.connect(
            manager, interfaces=[Api], authorization="Bearer conn-secret", interceptors=[keep]
        ) as backend:
            with tether.activity() as act:
                forwarded = attrs.evolve(act, authorization="Bearer user-secret")
                with tether.contexts.using(forwarded):
                    await backend.get_client(Api).flaky()
    assert [call.side for call in seen] == ["client", "server", "server"]
    for call in seen:
        assert "secret" not in repr(call)
        assert "secret" not in str(call)
    # The client's interceptors see the forwarded credential, never the connection's.
    assert seen[0].context.authorization == "Bearer user-secret"
    assert seen[1].context.authorization == "Bearer conn-secret"


async def test_a_group_runs_its_interceptors_once_per_call() -> None:
    """`websocket.connect([url, url])`: the group's chain, not each member's as well."""
    saw: list[tuple[str, str | None]] = []

    async def record(call: CallInfo, proceed: Proceed) -> Any:
        saw.append((call.operation, call.peer))
        return await proceed(call)

    managers = [_manager()[0], _manager()[0]]
    with trio.fail_after(TIMEOUT):
        async with trio.open_nursery() as nursery:
            urls = [
                await nursery.start(functools.partial(websocket.serve, manager, "127.0.0.1", 0))
                for manager in managers
            ]
            async with (
                websocket.connect(urls, interfaces=[Api], interceptors=[record]) as group,
                tether.open_stream(group.get_client(Api).count(2)) as items,
            ):
                assert [i async for i in items] == [0, 1]
            async with (
                websocket.connect(urls[0], interfaces=[Api], interceptors=[record]) as one,
                tether.open_stream(one.get_client(Api).count(1)) as items,
            ):
                assert [i async for i in items] == [0]
            nursery.cancel_scope.cancel()
    assert saw == [("count", None), ("count", urls[0])]
