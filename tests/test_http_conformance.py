"""The HTTP transport passes the RPC and IPC conformance suites over real hypercorn on 127.0.0.1."""

from __future__ import annotations

import functools
from collections.abc import AsyncIterator, Sequence
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import Any

import trio
import trio.testing

from tether import BackendIpc, ConnectionState, FrontendIpc, RpcInterface, RpcManager
from tether.runtime import RpcBackend
from tether.runtime._streams import open_stream
from tether.runtime._util import open_service_nursery
from tether.testing import (
    ConformanceIpc,
    FaultyProxy,
    FaultyStreams,
    IpcConformance,
    Probe,
    RpcConformance,
)
from tether.testing._rpc_faults_suite import Faults, ProxyFaults
from tether.testing._rpc_lifecycle_suite import Stop
from tether.testing._rpc_streams_suite import ConformanceStreams
from tether.transports import http
from tether.transports.http._client import split_url


@asynccontextmanager
async def _served_rpc(
    manager: RpcManager,
    interfaces: Sequence[type[RpcInterface]],
    options: dict[str, Any],
    stop: Stop | None = None,
) -> AsyncIterator[RpcBackend]:
    """Serve `manager`, connect; the server stops gracefully once `stop()` returns
    (or the block is left)."""
    server_options = {}
    if "max_message_size" in options:
        server_options["max_body_size"] = options["max_message_size"]
    left = trio.Event()

    async def trigger() -> None:
        async with trio.open_nursery() as nursery:

            async def first(wait: Stop) -> None:
                await wait()
                nursery.cancel_scope.cancel()

            nursery.start_soon(first, left.wait)
            if stop is not None:
                nursery.start_soon(first, stop)

    async with open_service_nursery() as nursery:
        url = await nursery.start(
            lambda task_status: http.serve(
                manager,
                "127.0.0.1",
                0,
                task_status=task_status,
                shutdown_trigger=trigger,
                **server_options,
            )
        )
        async with http.connect(url, interfaces=interfaces, **options) as backend:
            yield backend
        # A graceful stop, as a deployment's: calls the client left end as a
        # client leaving ends them (a stream's impl hears ConnectionClosed),
        # not cancelled by the server stopping in the same instant.
        left.set()


@asynccontextmanager
async def _served_ipc(backend: BackendIpc, options: dict[str, Any]) -> AsyncIterator[FrontendIpc]:
    server_options = {}
    if "max_message_size" in options:
        server_options["max_body_size"] = options["max_message_size"]
    async with open_service_nursery() as nursery:
        url = await nursery.start(
            lambda task_status: http.serve(
                None, "127.0.0.1", 0, ipc=backend, task_status=task_status, **server_options
            )
        )
        async with http.connect_ipc(url, **options) as frontend:
            yield frontend
        nursery.cancel_scope.cancel()


class TestHttpRpc(RpcConformance):
    # Every request may go on a connection of its own; hypercorn drains.
    reconnects = "request"
    server_stop = "drains"

    # Two-way streams are not carried over HTTP (docs/http.md, "Streams"): the
    # suite checks that they are refused with NotFound.
    stream_kinds = frozenset({"server", "client"})

    @asynccontextmanager
    async def open_faulty(
        self, manager: RpcManager, *, interfaces: Sequence[type[RpcInterface]], **options: Any
    ) -> AsyncIterator[tuple[RpcBackend, Faults]]:
        """The fault cases over HTTP: a `FaultyProxy` between the client and hypercorn."""
        async with open_service_nursery() as nursery:
            url = await nursery.start(functools.partial(http.serve, manager, "127.0.0.1", 0))
            host, port, prefix = split_url(url)
            async with FaultyProxy(host, port) as proxy:
                proxied = f"http://127.0.0.1:{proxy.port}{prefix}"
                async with http.connect(proxied, interfaces=interfaces, **options) as backend:
                    yield backend, ProxyFaults(proxy)
            nursery.cancel_scope.cancel()

    def connect(
        self, manager: RpcManager, *, interfaces: Sequence[type[RpcInterface]], **options: Any
    ) -> AbstractAsyncContextManager[RpcBackend]:
        return _served_rpc(manager, interfaces, options)

    def connect_stoppable(
        self,
        manager: RpcManager,
        stop: Stop,
        *,
        interfaces: Sequence[type[RpcInterface]],
        **options: Any,
    ) -> AbstractAsyncContextManager[RpcBackend]:
        return _served_rpc(manager, interfaces, options, stop)

    async def test_slow_consumer_stops_the_producer_at_the_window(self) -> None:
        """Over HTTP a stream's window is TCP's (docs/http.md, "Streams"), not a
        credit window: the producer stops once the sockets' buffers are full,
        stays stopped while the consumer takes nothing, and goes on as it
        consumes. (The suite's own case counts credit, which HTTP/1.1 cannot
        send back on a request whose body has ended.)"""
        probe = Probe()
        manager = self.streams_manager(probe)
        registration = manager.lookup(ConformanceStreams.interface_name)
        assert registration is not None
        produced: dict[str, int] = registration.impl.produced
        with trio.fail_after(10):
            async with self.open_streams(manager) as backend:
                client = backend.get_client(ConformanceStreams)
                async with open_stream(client.count("slow", -1)) as items:
                    await anext(items)
                    await trio.testing.wait_all_tasks_blocked(0.05)
                    held = produced["slow"]
                    await trio.testing.wait_all_tasks_blocked(0.05)
                    assert produced["slow"] == held
                    # What the buffers hold, at about 40 bytes an item.
                    assert held * 40 < 8 * 1024 * 1024
                    for _ in range(held + 100):
                        await anext(items)
                    assert produced["slow"] > held


class TestHttpIpc(IpcConformance):
    # A cut event stream is resumed with Last-Event-ID, POSTs deduplicated.
    resumes = True

    @asynccontextmanager
    async def open_resumable(
        self, backend: BackendIpc, **options: Any
    ) -> AsyncIterator[FrontendIpc]:
        """The resume case over HTTP: a `FaultyProxy` between the client and
        hypercorn (the client's resuming sits under the stream the engine sees)."""
        options.setdefault("channels", [ConformanceIpc])
        async with open_service_nursery() as nursery:
            url = await nursery.start(
                lambda task_status: http.serve(
                    None, "127.0.0.1", 0, ipc=backend, task_status=task_status
                )
            )
            host, port, prefix = split_url(url)
            async with FaultyProxy(host, port) as proxy:
                self._proxy = proxy
                proxied = f"http://127.0.0.1:{proxy.port}{prefix}"
                async with http.connect_ipc(proxied, **options) as frontend:
                    yield frontend
            nursery.cancel_scope.cancel()

    async def cut_connection(self, faults: FaultyStreams, frontend: FrontendIpc, cut: int) -> None:
        # Every TCP connection of the session at once (its event stream and POSTs).
        self._proxy.cut_all()
        state = frontend.state
        while state is not ConnectionState.RECONNECTING:
            state = await frontend.wait_state_change(state)
        while state is not ConnectionState.CONNECTED:
            state = await frontend.wait_state_change(state)

    def connect_ipc(
        self, backend: BackendIpc, **options: Any
    ) -> AbstractAsyncContextManager[FrontendIpc]:
        return _served_ipc(backend, options)
