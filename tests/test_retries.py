"""Retries: deadlines, the ActivityId and the log line of each attempt, and HTTP's faults.

The retry loop is tested with a fake backend under an autojump clock (the
deadline cases); the HTTP cases run real hypercorn behind a `FaultyProxy`.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from typing import Any

import pytest
import trio
import trio.testing

import tether
from tether import ConnectionState, RpcManager
from tether.runtime import (
    CallMayHaveRun,
    CallNotSent,
    ClientOptions,
    ConnectError,
    ConnectionClosed,
    RetryPolicy,
    RpcBackend,
)
from tether.runtime._client import make_client
from tether.runtime._protocol import Call, Error, InterfaceInfo, Result
from tether.runtime._streams import open_stream
from tether.runtime._util import open_service_nursery
from tether.testing import FaultyProxy, faulty_streams
from tether.testing._probe import Probe
from tether.testing._rpc_faults_suite import ConformanceFaults, FaultsImpl, client_log
from tether.testing._rpc_streams_suite import ConformanceStreams, StreamsImpl
from tether.transports import http, memory
from tether.transports.http._client import HttpBackend, split_url

TIMEOUT = 20.0


class FailingBackend(RpcBackend):
    """A backend whose every request fails with `error`, recording the calls."""

    def __init__(self, error: Exception, retry: RetryPolicy) -> None:
        self.error = error
        self.calls: list[Call] = []
        self.times: list[float] = []
        self._options = ClientOptions(retry=retry)

    @property
    def options(self) -> ClientOptions:
        return self._options

    @property
    def interfaces(self) -> Mapping[str, InterfaceInfo]:
        return {}

    async def request(self, call: Call) -> Result | Error:
        self.calls.append(call)
        self.times.append(trio.current_time())
        await trio.lowlevel.checkpoint()
        raise self.error


async def test_retries_stop_before_the_deadline_and_raise_the_last_failure(
    autojump_clock: trio.testing.MockClock,
) -> None:
    backend = FailingBackend(ConnectError("nobody listens"), RetryPolicy(attempts=100))
    client = make_client(ConformanceFaults, backend)
    start = trio.current_time()
    with trio.fail_after(3.0):
        with pytest.raises(ConnectError, match="nobody listens") as raised:
            await client.increment()
        ended = trio.current_time()
    # Not a hang, nor a TooSlowError: the last failure, before the deadline.
    assert ended - start < 3.0
    assert 3 <= len(backend.calls) < 100
    assert backend.times[-1] - start < 3.0
    assert f"tried {len(backend.calls)} times" in "".join(raised.value.__notes__)


async def test_every_attempt_carries_the_same_activity_and_logs_its_number(
    autojump_clock: trio.testing.MockClock, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="tether.client")
    backend = FailingBackend(CallNotSent("lost before it went"), RetryPolicy(attempts=4))
    client = make_client(ConformanceFaults, backend)
    with tether.contexts.activity() as ctx, pytest.raises(CallNotSent):
        await client.increment()
    assert [call.ctx.activity_id for call in backend.calls] == [ctx.activity_id] * 4
    assert len({call.id for call in backend.calls}) == 4  # a new id per attempt
    retrying = [r for r in caplog.records if r.getMessage().startswith("retrying")]
    assert [r.getMessage().split("(attempt ")[1][0] for r in retrying] == ["2", "3", "4"]
    assert all(getattr(r, "activity_id", None) == ctx.activity_id for r in retrying)
    calling = [r.getMessage() for r in caplog.records if r.getMessage().startswith("calling")]
    assert calling[-1].endswith("(attempt 4)")


async def test_a_call_that_may_have_run_is_retried_only_when_idempotent(
    autojump_clock: trio.testing.MockClock,
) -> None:
    backend = FailingBackend(CallMayHaveRun("lost after it went"), RetryPolicy(attempts=3))
    client = make_client(ConformanceFaults, backend)
    with pytest.raises(CallMayHaveRun, match="it is not idempotent"):
        await client.increment()
    assert len(backend.calls) == 1
    with pytest.raises(CallMayHaveRun, match=r"it was tried 3 times"):
        await client.read()
    assert len(backend.calls) == 4


async def test_retry_none_makes_one_attempt(autojump_clock: trio.testing.MockClock) -> None:
    backend = FailingBackend(ConnectError("nobody listens"), None)  # type: ignore[arg-type]
    with pytest.raises(ConnectError):
        await make_client(ConformanceFaults, backend).read()
    assert len(backend.calls) == 1


async def test_a_connection_closed_by_this_side_is_plain_connection_closed() -> None:
    manager = RpcManager()
    manager.register_impl(ConformanceFaults, FaultsImpl())
    with trio.fail_after(TIMEOUT):
        async with memory.connect(manager, interfaces=[ConformanceFaults]) as backend:
            client = backend.get_client(ConformanceFaults)
            await backend.aclose()
            with pytest.raises(ConnectionClosed) as raised:
                await client.read()
    assert type(raised.value) is ConnectionClosed
    assert backend.state is ConnectionState.CLOSED


async def test_memory_connection_lost_goes_closed_and_is_not_retried() -> None:
    manager = RpcManager()
    manager.register_impl(ConformanceFaults, FaultsImpl())
    with trio.fail_after(TIMEOUT), faulty_streams() as faults:
        async with memory.connect(manager, interfaces=[ConformanceFaults]) as backend:
            client = backend.get_client(ConformanceFaults)
            await client.read()
            faults.latest.cut()
            with pytest.raises(CallNotSent, match="did not run"):
                await client.read()
            assert backend.state is ConnectionState.CLOSED
            assert faults.latest.sent == 2  # hello, the first read: nothing more


# -- HTTP: real hypercorn behind a FaultyProxy -----------------------------------------


@asynccontextmanager
async def proxied(manager: RpcManager, **options: Any) -> AsyncIterator[tuple[HttpBackend, Any]]:
    async with open_service_nursery() as nursery:
        url = await nursery.start(functools.partial(http.serve, manager, "127.0.0.1", 0))
        host, port, prefix = split_url(url)
        async with (
            FaultyProxy(host, port) as proxy,
            http.connect(f"http://127.0.0.1:{proxy.port}{prefix}", **options) as backend,
        ):
            yield backend, proxy
        nursery.cancel_scope.cancel()


async def test_http_call_while_the_backend_refuses_connections_is_retried_and_runs_once() -> None:
    manager = RpcManager()
    impl = FaultsImpl()
    manager.register_impl(ConformanceFaults, impl)
    quick = RetryPolicy(attempts=50, initial_backoff=0.05, max_backoff=0.1)
    with trio.fail_after(TIMEOUT):
        async with (
            proxied(manager, interfaces=[ConformanceFaults], retry=quick) as (backend, proxy),
            client_log() as log,
        ):
            client = backend.get_client(ConformanceFaults)
            assert backend.state is ConnectionState.CONNECTED
            await proxy.refuse()  # a stopped backend: no connects...
            proxy.cut_all()  # ...and its keep-alive connections gone
            result: list[int] = []
            async with trio.open_nursery() as nursery:
                nursery.start_soon(lambda: _append(result, client.increment()))
                await log.retrying.wait()
                # Backing off: a UI would show "reconnecting...".
                assert backend.state is ConnectionState.RECONNECTING
                await proxy.accept()
            assert result == [1]
            assert impl.runs == {"increment": 1}
            assert backend.state is ConnectionState.CONNECTED
        assert backend.state is ConnectionState.CLOSED


async def _append(into: list[Any], awaitable: Any) -> None:
    into.append(await awaitable)


async def test_http_server_stream_whose_opening_fails_is_retried() -> None:
    manager = RpcManager()
    manager.register_impl(ConformanceStreams, StreamsImpl(Probe()))
    quick = RetryPolicy(attempts=50, initial_backoff=0.05, max_backoff=0.1)
    with trio.fail_after(TIMEOUT):
        async with (
            proxied(manager, interfaces=[ConformanceStreams], retry=quick) as (backend, proxy),
            client_log() as log,
        ):
            client = backend.get_client(ConformanceStreams)
            await proxy.refuse()  # a stopped backend: no connects...
            proxy.cut_all()  # ...and its keep-alive connections gone
            got: list[int] = []

            async def consume() -> None:
                async with open_stream(client.count("s", 3)) as items:
                    got.extend([item async for item in items])

            async with trio.open_nursery() as nursery:
                nursery.start_soon(consume)
                await log.retrying.wait()
                await proxy.accept()
    assert got == [0, 1, 2]


async def test_http_non_idempotent_call_cut_after_sending_is_not_retried() -> None:
    manager = RpcManager()
    impl = FaultsImpl()
    manager.register_impl(ConformanceFaults, impl)
    with trio.fail_after(TIMEOUT):
        async with proxied(manager, interfaces=[ConformanceFaults]) as (backend, proxy):
            client = backend.get_client(ConformanceFaults)
            proxy.cut_when(b"/increment ")
            with pytest.raises(CallMayHaveRun, match="may have run on the backend"):
                await client.increment()
            assert proxy.cuts == 1
            # The next call goes over a new connection.
            assert await client.read() == impl.count
    assert impl.runs["increment"] <= 1
