# mypy: disable-error-code="empty-body"
# (interface operations are declared with `...` bodies)
"""The RPC conformance cases for faults: what is retried, and what never runs twice.

Part of `RpcConformance`. A connection is broken at a chosen moment through
`faulty_streams()` (the MessageStream transports: memory, WebSocket, local)
or, for a transport without a MessageStream, through the faults that its test
class's `open_faulty` hands out (HTTP: a `FaultyProxy`).

The cases:

- certainly not run (the backend refused it with 503/429 and a `Retry-After`,
  could not be reached, or the connection was lost before the call was sent):
  retried for every operation where the connection can carry another try, and
  run once; `CallNotSent` where it cannot;
- may have run (the connection lost after the call was sent): a
  non-idempotent operation raises `CallMayHaveRun` and ran at most once; an
  idempotent one is retried and returns where the transport can carry another
  try (`recovers`), and raises `CallMayHaveRun` where it cannot.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Mapping, Sequence
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import Any, ClassVar, Literal

import pytest
import trio

from .. import contexts
from ..runtime import (
    CallMayHaveRun,
    CallNotSent,
    RetryPolicy,
    RpcBackend,
    RpcInterface,
    RpcManager,
    Unavailable,
    idempotent,
)
from ._faults import FaultyStreams, faulty_streams
from ._proxy import FaultyProxy

__all__ = ["ConformanceFaults", "Faults", "ProxyFaults", "RpcFaultCases", "client_log"]

#: Seconds every fault case may take.
FAULT_TIMEOUT = 20.0
#: Quick retries, so a case does not wait out the default backoff.
QUICK = RetryPolicy(attempts=5, initial_backoff=0.05, max_backoff=0.2)


class ConformanceFaults(RpcInterface):
    """A counter, the operation that must never run twice."""

    interface_name = "tether.conformance.Faults"
    interface_version = "1.0.0"

    async def increment(self) -> int: ...

    @idempotent
    async def read(self) -> int: ...

    @idempotent
    async def busy_once(self, retry_after: int) -> str:
        """Refuse with Unavailable(retry_after) the first time, then return the ActivityId."""


class FaultsImpl(ConformanceFaults):
    def __init__(self) -> None:
        self.count = 0
        self.runs: dict[str, int] = {}
        self.activities: list[str | None] = []
        self.started = trio.Event()

    def _ran(self, op: str) -> None:
        self.runs[op] = self.runs.get(op, 0) + 1
        self.started.set()

    async def increment(self) -> int:
        self._ran("increment")
        self.count += 1
        return self.count

    async def read(self) -> int:
        self._ran("read")
        return self.count

    async def busy_once(self, retry_after: int) -> str:
        self._ran("busy_once")
        ctx = contexts.current()
        self.activities.append(ctx.activity_id if ctx is not None else None)
        if len(self.activities) == 1:
            raise Unavailable("busy: come back later", retry_after=retry_after)
        return self.activities[-1] or ""


class Faults:
    """How a case breaks a connection; `StreamFaults` for MessageStream transports.

    Attributes:
        recovers: Whether a call after a lost connection can go over a new
            one (HTTP: every request may open a connection; WebSocket: the
            client reconnects). False: the connection is lost for good, and
            later calls fail at once.
    """

    recovers = False

    @property
    def connections(self) -> int:
        """Connections the client has opened so far."""
        raise NotImplementedError

    def cut_when_sent(self, operation: str) -> None:
        """Lose the connection once the call to `operation` was sent, before its answer."""
        raise NotImplementedError

    async def cut_now(self) -> None:
        """Lose the connection (every connection) now."""
        raise NotImplementedError


class StreamFaults(Faults):
    def __init__(self, streams: FaultyStreams, *, recovers: bool = False) -> None:
        self.streams = streams
        self.recovers = recovers

    @property
    def connections(self) -> int:
        return len(self.streams.streams)

    def cut_when_sent(self, operation: str) -> None:
        self.streams.latest.cut_after(1, match=f'"op":"{operation}"'.encode())

    async def cut_now(self) -> None:
        self.streams.latest.cut("cut by the conformance suite")
        await trio.lowlevel.checkpoint()


class ProxyFaults(Faults):
    """Faults through a `FaultyProxy`: every request may open a new connection."""

    recovers = True

    def __init__(self, proxy: FaultyProxy, markers: Mapping[str, bytes] | None = None) -> None:
        self.proxy = proxy
        self.markers = markers or {}

    @property
    def connections(self) -> int:
        return self.proxy.connections

    def cut_when_sent(self, operation: str) -> None:
        self.proxy.cut_when(self.markers.get(operation, f"/{operation} ".encode()))

    async def cut_now(self) -> None:
        self.proxy.cut_all()
        await trio.lowlevel.checkpoint()


class _Retries(logging.Handler):
    """The client's "retrying" log lines, as they come."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.lines: list[str] = []
        self.retrying = trio.Event()

    def emit(self, record: logging.LogRecord) -> None:
        line = record.getMessage()
        self.lines.append(line)
        if line.startswith("retrying"):
            self.retrying.set()


@asynccontextmanager
async def client_log() -> AsyncIterator[_Retries]:
    handler = _Retries()
    logger = logging.getLogger("tether.client")
    level = logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.DEBUG)
    try:
        yield handler
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)


class RpcFaultCases:
    """The fault cases of `RpcConformance` (mixed in; see the module docstring).

    A transport without a MessageStream overrides `open_faulty` to serve
    `manager`, connect through something that breaks connections on command,
    and yield the backend with its `Faults`. A transport whose client makes a
    lost connection again (`reconnects`, of `RpcLifecycleCases`) recovers.
    """

    reconnects: ClassVar[Literal["connection", "request"] | None] = None

    def connect(
        self, manager: RpcManager, *, interfaces: Sequence[type[RpcInterface]], **options: Any
    ) -> AbstractAsyncContextManager[RpcBackend]:
        raise NotImplementedError

    @asynccontextmanager
    async def open_faulty(
        self, manager: RpcManager, *, interfaces: Sequence[type[RpcInterface]], **options: Any
    ) -> AsyncIterator[tuple[RpcBackend, Faults]]:
        with faulty_streams() as streams:
            async with self.connect(manager, interfaces=interfaces, **options) as backend:
                yield backend, StreamFaults(streams, recovers=self.reconnects is not None)

    def faults_manager(self) -> tuple[RpcManager, FaultsImpl]:
        manager = RpcManager()
        impl = FaultsImpl()
        manager.register_impl(ConformanceFaults, impl)
        return manager, impl

    async def test_fault_non_idempotent_call_lost_after_sending_may_have_run_and_ran_once(
        self,
    ) -> None:
        manager, impl = self.faults_manager()
        with trio.fail_after(FAULT_TIMEOUT):
            async with self.open_faulty(manager, interfaces=[ConformanceFaults], retry=QUICK) as (
                backend,
                faults,
            ):
                client = backend.get_client(ConformanceFaults)
                assert await client.increment() == 1
                faults.cut_when_sent("increment")
                with pytest.raises(CallMayHaveRun) as raised:
                    await client.increment()
        assert impl.runs["increment"] <= 2  # the first call, and the lost one at most once
        assert impl.count <= 2
        message = str(raised.value)
        assert "increment may have run on the backend" in message
        assert "not idempotent" in message

    async def test_fault_idempotent_call_lost_after_sending_is_retried_where_it_can_be(
        self,
    ) -> None:
        manager, _ = self.faults_manager()
        with trio.fail_after(FAULT_TIMEOUT):
            async with (
                self.open_faulty(manager, interfaces=[ConformanceFaults], retry=QUICK) as (
                    backend,
                    faults,
                ),
                client_log() as log,
            ):
                client = backend.get_client(ConformanceFaults)
                await client.increment()
                faults.cut_when_sent("read")
                if faults.recovers:
                    assert await client.read() == 1
                    assert any(line.startswith("retrying") for line in log.lines)
                    assert any("(attempt 2)" in line for line in log.lines)
                else:
                    # Lost for good: nothing to retry on. The error says so.
                    with pytest.raises(CallMayHaveRun, match="closed for good"):
                        await client.read()

    async def test_fault_call_on_a_lost_connection_is_not_sent_or_is_retried(self) -> None:
        manager, impl = self.faults_manager()
        with trio.fail_after(FAULT_TIMEOUT):
            async with self.open_faulty(manager, interfaces=[ConformanceFaults], retry=QUICK) as (
                backend,
                faults,
            ):
                client = backend.get_client(ConformanceFaults)
                await client.read()
                await faults.cut_now()
                if faults.recovers:
                    assert await client.increment() == 1
                else:
                    with pytest.raises(CallNotSent, match=r"before \S*increment was sent"):
                        await client.increment()
        assert impl.runs.get("increment", 0) == (1 if faults.recovers else 0)

    async def test_fault_refused_with_retry_after_is_retried_after_it_with_the_same_activity(
        self,
    ) -> None:
        manager, impl = self.faults_manager()
        with trio.fail_after(FAULT_TIMEOUT):
            async with (
                self.connect(manager, interfaces=[ConformanceFaults]) as backend,
                client_log() as log,
            ):
                client = backend.get_client(ConformanceFaults)
                began = trio.current_time()
                with contexts.activity() as ctx:
                    activity = await client.busy_once(1)
                waited = trio.current_time() - began
        assert activity == ctx.activity_id
        assert impl.activities == [ctx.activity_id, ctx.activity_id]
        assert waited >= 1.0  # Retry-After is the least wait
        assert any(
            line.startswith("retrying ")
            and "busy_once in 1.000 s" in line
            and "(attempt 2)" in line
            for line in log.lines
        ), log.lines
