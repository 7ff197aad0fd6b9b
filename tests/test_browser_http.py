"""The TypeScript client in Chromium, over HTTP: RobotWorld RPC (a fetch per
call, a server stream, bytes, a client stream), a cancel and a deadline that
reach the impl, an application error with its name and details, and the IPC
editor over POSTs and a fetch-streamed event stream, whose stream is cut
mid-session and resumed with nothing lost. The scripts shared with the
WebSocket tests are in tests/browser_scenarios.py.

The page (tests/browser_pages/http_client.html) is served through `Gate`, a
TCP relay the test can cut: the page's origin is the relay's, so calls to the
server itself (`?rpc=`) are cross-origin and pass the server's CORS lists,
and calls through the relay can be dropped for real (their connections closed)
and held while the backend sends on. What the server saw is asserted here.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any
from urllib.parse import quote

import trio

import tether
from examples.ipc_editor.backend import make_backend as make_editor
from examples.ipc_editor.interface import (
    ChangeKind,
    EditorEvents,
    Element,
    ElementChange,
    Placement,
)
from tests import browser_scenarios as scenarios
from tests.browser_scenarios import TIMEOUT, WaiterImpl, robot_world_with
from tests.browser_support import Page, serve_pages
from tether.runtime._util import open_service_nursery


class Gate:
    """A TCP relay to the server that the test can cut (closing every
    connection through it, as a network failure would) and hold (new
    connections wait) until it opens again."""

    def __init__(self) -> None:
        self.port = 0
        self.target = 0
        self._open = trio.Event()
        self._open.set()
        self._scopes: set[trio.CancelScope] = set()
        self.cuts = 0

    async def run(self, *, task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED) -> None:
        listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
        self.port = listeners[0].socket.getsockname()[1]
        task_status.started(self.port)
        await trio.serve_listeners(self._relay, listeners)

    async def _relay(self, client: trio.SocketStream) -> None:
        async with client:
            await self._open.wait()
            with trio.CancelScope() as scope:
                self._scopes.add(scope)
                try:
                    server = await trio.open_tcp_stream("127.0.0.1", self.target)
                    async with server, trio.open_nursery() as nursery:
                        nursery.start_soon(self._pump, client, server, nursery.cancel_scope)
                        nursery.start_soon(self._pump, server, client, nursery.cancel_scope)
                finally:
                    self._scopes.discard(scope)

    @staticmethod
    async def _pump(
        source: trio.SocketStream, sink: trio.SocketStream, done: trio.CancelScope
    ) -> None:
        try:
            async for chunk in source:
                await sink.send_all(chunk)
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            pass
        done.cancel()

    def cut(self) -> None:
        """Closes every connection through the relay, and holds new ones."""
        self.cuts += 1
        self._open = trio.Event()
        for scope in list(self._scopes):
            scope.cancel()

    def reopen(self) -> None:
        self._open.set()


@asynccontextmanager
async def served(
    page: Page,
    manager: tether.RpcManager | None,
    ipc: tether.BackendIpc | None = None,
    *,
    cross_origin: bool = True,
    **options: Any,
) -> AsyncIterator[Gate]:
    """The page loaded through a `Gate` to `serve_pages`; its RPC URL is the
    server's own (another origin, allowed by `cors_origins`) when
    `cross_origin`, else the gate's (same origin, cuttable)."""
    gate = Gate()
    async with open_service_nursery() as nursery:
        await nursery.start(gate.run)
        page_origin = f"http://127.0.0.1:{gate.port}"
        async with serve_pages(manager, ipc, cors_origins=[page_origin], **options) as base:
            gate.target = int(base.rsplit(":", 1)[1])
            query = f"?rpc={quote(base + '/rpc', safe='')}" if cross_origin else ""
            await page.goto(f"{page_origin}/pages/http_client.html{query}")
            await page.wait_for("window.ready === true")
            assert await page.evaluate("location.origin") == page_origin
            yield gate
        nursery.cancel_scope.cancel()


CONNECT_RPC = scenarios.connect_rpc(
    "rpcUrl", ", sessionId: 'page-session', authorization: 'Bearer page-token'"
)


@asynccontextmanager
async def robot_page(page: Page) -> AsyncIterator[WaiterImpl]:
    """RobotWorld and a `WaiterImpl` served to a page of another origin and
    `rpc` connected, all under the test's time limit: the impl."""
    waiter = WaiterImpl()
    with trio.fail_after(TIMEOUT):
        async with served(page, robot_world_with(waiter)):
            await page.evaluate(CONNECT_RPC)
            yield waiter


async def test_robot_world_over_http_from_a_page_of_another_origin(browser_page: Page) -> None:
    async with robot_page(browser_page):
        assert await browser_page.evaluate("rpcUrl.startsWith(location.origin)") is False
        result = await browser_page.evaluate(scenarios.ROBOT_TOUR)
        assert result == scenarios.ROBOT_TOUR_RESULT


async def test_every_header_of_a_call_passes_cors_and_reaches_the_impl(browser_page: Page) -> None:
    async with robot_page(browser_page):
        seen = await browser_page.evaluate(
            """rpc.proxy(refs.Waiter).whoAmI({
                 activityId: "0af7651916cd43dd8448eb211c80319c",
                 metadata: {tenant: "acme", note: "a b,c=d \u00e9"}, timeoutMs: 5000})"""
        )
        assert seen["activity_id"] == "0af7651916cd43dd8448eb211c80319c"
        assert seen["session_id"] == "page-session"
        assert [seen["application_id"], seen["application_version"]] == ["browser-test", "1.0"]
        assert seen["authorization"] == "Bearer page-token"
        assert seen["metadata"] == {"tenant": "acme", "note": "a b,c=d \u00e9"}
        assert seen["traceparent"].startswith("00-0af7651916cd43dd8448eb211c80319c-")
        assert seen["has_deadline"] is True


async def test_bytes_and_a_client_stream_round_trip(browser_page: Page) -> None:
    async with robot_page(browser_page):
        result = await browser_page.evaluate(scenarios.BYTES_AND_CLIENT_STREAM)
        assert result == scenarios.BYTES_AND_CLIENT_STREAM_RESULT


async def test_an_application_error_arrives_with_its_name_and_details(browser_page: Page) -> None:
    async with robot_page(browser_page):
        result = await browser_page.evaluate(scenarios.APPLICATION_ERROR)
        scenarios.check_application_error(result)
        assert result["status"] == 422


async def test_an_abort_in_the_page_cancels_the_impl(browser_page: Page) -> None:
    async with robot_page(browser_page) as waiter:
        await scenarios.check_an_abort_cancels_the_impl(browser_page, waiter)


async def test_a_deadline_rejects_with_deadline_exceeded_and_ends_the_impl(
    browser_page: Page,
) -> None:
    async with robot_page(browser_page) as waiter:
        await scenarios.check_a_deadline_ends_the_impl(browser_page, waiter)


OPEN_EDITOR = scenarios.open_editor("rpcUrl")


async def test_the_ipc_editor_over_http(browser_page: Page) -> None:
    with trio.fail_after(TIMEOUT):
        async with served(browser_page, None, make_editor()):
            await browser_page.evaluate(OPEN_EDITOR)
            result = await browser_page.evaluate(scenarios.EDITOR_TOUR)
            scenarios.check_editor_tour(result)
            assert result["missing"]["status"] == 422
            await scenarios.check_the_session_closes(browser_page)


async def test_a_dropped_event_stream_resumes_with_nothing_lost(browser_page: Page) -> None:
    editor = make_editor()
    with trio.fail_after(TIMEOUT):
        async with served(browser_page, None, editor, cross_origin=False) as gate:
            await browser_page.evaluate(OPEN_EDITOR)
            await browser_page.evaluate("editor.openDocument('plan')")
            assert await browser_page.evaluate("editor.moveElement('wall-1', 1, 0)") == {
                "x": 1.0,
                "y": 0.0,
            }
            await browser_page.wait_for("changes.length === 1")
            (session,) = editor.sessions
            # The network drops every connection; the page's resume waits at the gate.
            gate.cut()
            await browser_page.wait_for("session.state === 'reconnecting'")
            # Meanwhile the backend sends on, and the page calls.
            notifier = session.notifier(EditorEvents)
            for revision in range(10, 13):
                element = Element(f"lamp-{revision}", "lamp", Placement(1.0, 2.0))
                await notifier.element_changed(ElementChange(revision, ChangeKind.ADDED, element))
            await browser_page.evaluate(
                "window.late = editor.moveElement('wall-2', 0, 5)"
                ".then((p) => ['ok', p], (e) => ['error', e.name, e.message]); true"
            )
            gate.reopen()
            await browser_page.wait_for("session.state === 'connected' && changes.length === 5")
            assert await browser_page.evaluate("window.late") == ["ok", {"x": 0.0, "y": 55.0}]
            changes = await browser_page.evaluate("changes")
            assert changes == [
                [1, "moved", "wall-1"],
                [10, "added", "lamp-10"],
                [11, "added", "lamp-11"],
                [12, "added", "lamp-12"],
                [2, "moved", "wall-2"],
            ]
            assert await browser_page.evaluate("states") == ["reconnecting", "connected"]
            assert gate.cuts == 1
            assert editor.sessions == (session,)
            await browser_page.evaluate("session.close().then(() => true)")


async def test_the_gate_relays_and_cuts() -> None:
    """`Gate` itself: bytes pass both ways; a cut closes the connection; held ones wait."""
    if True:
        gate = Gate()
        received: list[bytes] = []

        async def echo(stream: trio.SocketStream) -> None:
            async for chunk in stream:
                received.append(chunk)
                await stream.send_all(chunk.upper())

        with trio.fail_after(TIMEOUT):
            async with trio.open_nursery() as nursery:
                listeners = await nursery.start(trio.serve_tcp, echo, 0)
                gate.target = listeners[0].socket.getsockname()[1]
                await nursery.start(gate.run)
                client = await trio.open_tcp_stream("127.0.0.1", gate.port)
                await client.send_all(b"ping")
                assert await client.receive_some() == b"PING"
                gate.cut()
                assert await client.receive_some() == b""
                await client.aclose()
                held = await trio.open_tcp_stream("127.0.0.1", gate.port)
                await held.send_all(b"late")
                gate.reopen()
                assert await held.receive_some() == b"LATE"
                await held.aclose()
                assert received == [b"ping", b"late"]
                nursery.cancel_scope.cancel()
