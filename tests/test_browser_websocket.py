"""The TypeScript client in Chromium, over WebSocket: RobotWorld over the HTTP
server's `/rpc/ws` (which pings inside the envelope), the IPC editor with a
notification and a backend-to-page call, a cancel and a deadline that reach the
impl, an application error with its name and details, streams and bytes.

The page is tests/browser_pages/ws_client.html; what the server saw is
asserted here, in Python. The scripts shared with the HTTP tests are in
tests/browser_scenarios.py.
"""

from __future__ import annotations

import functools
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import pytest
import trio

from examples.ipc_editor import backend as editor_backend
from examples.ipc_editor.backend import make_backend as make_editor
from examples.ipc_editor.interface import Element
from tests import browser_scenarios as scenarios
from tests.browser_scenarios import TIMEOUT, WaiterImpl, robot_world_with
from tests.browser_support import Page, serve_pages
from tether.transports import websocket
from tether.transports.websocket import WebSocketSettings


@asynccontextmanager
async def robot_page(page: Page, **options: object) -> AsyncIterator[WaiterImpl]:
    """RobotWorld and a `WaiterImpl` served, the page loaded and `rpc`
    connected, all under the test's time limit: the impl."""
    waiter = WaiterImpl()
    with trio.fail_after(TIMEOUT):
        async with serve_pages(robot_world_with(waiter), **options) as base:
            await page.goto(f"{base}/pages/ws_client.html")
            await page.wait_for("window.ready === true")
            await page.evaluate(scenarios.connect_rpc("wsUrl"))
            yield waiter


@asynccontextmanager
async def editor_page(page: Page) -> AsyncIterator[None]:
    """The IPC editor served and the page loaded, under the test's time limit."""
    with trio.fail_after(TIMEOUT):
        async with serve_pages(None, make_editor()) as base:
            await page.goto(f"{base}/pages/ws_client.html")
            await page.wait_for("window.ready === true")
            yield


async def test_robot_world_over_the_http_servers_websocket(browser_page: Page) -> None:
    async with robot_page(browser_page):
        result = await browser_page.evaluate(scenarios.ROBOT_TOUR)
        assert result == scenarios.ROBOT_TOUR_RESULT


async def test_bytes_and_a_client_stream_round_trip(browser_page: Page) -> None:
    async with robot_page(browser_page):
        result = await browser_page.evaluate(scenarios.BYTES_AND_CLIENT_STREAM)
        assert result == scenarios.BYTES_AND_CLIENT_STREAM_RESULT


async def test_an_application_error_arrives_with_its_name_and_details(browser_page: Page) -> None:
    async with robot_page(browser_page):
        result = await browser_page.evaluate(scenarios.APPLICATION_ERROR)
        scenarios.check_application_error(result)


async def test_an_abort_in_the_page_cancels_the_impl(browser_page: Page) -> None:
    async with robot_page(browser_page) as waiter:
        await scenarios.check_an_abort_cancels_the_impl(browser_page, waiter)


async def test_a_deadline_cancels_the_impl_and_rejects_with_deadline_exceeded(
    browser_page: Page,
) -> None:
    async with robot_page(browser_page) as waiter:
        await scenarios.check_a_deadline_ends_the_impl(browser_page, waiter)


async def test_progress_reports_reach_on_progress(browser_page: Page) -> None:
    async with robot_page(browser_page) as waiter:
        await browser_page.evaluate(
            """window.progress = [];
            window.outcome = rpc.proxy(refs.Waiter)
              .halfway({onProgress: (p) => progress.push(p)});
            true"""
        )
        await browser_page.wait_for("progress.length === 1")
        waiter.proceed.set()
        assert await browser_page.evaluate("window.outcome") == "done"
        assert await browser_page.evaluate("progress") == [
            {"done": 1, "total": 2, "message": "half done"}
        ]


async def test_the_client_answers_the_servers_envelope_pings_while_idle(browser_page: Page) -> None:
    settings = WebSocketSettings(ping_interval=0.1, ping_timeout=0.5)
    async with robot_page(browser_page, websocket=settings):
        # Idle for many ping intervals and past the ping timeout: an
        # unanswered ping would have closed the connection (1011).
        await trio.sleep(1.2)
        count = await browser_page.evaluate(
            "rpc.proxy(refs.RobotWorldRead).countRobots({key: 'lab'})"
        )
        assert count == 0


async def test_the_ipc_editor_over_websocket(browser_page: Page) -> None:
    async with editor_page(browser_page):
        await browser_page.evaluate(scenarios.open_editor("wsUrl"))
        result = await browser_page.evaluate(scenarios.EDITOR_TOUR)
        scenarios.check_editor_tour(result)
        assert result["channels"] == {"ipc-editor": "1.0.0"}
        await scenarios.check_the_session_closes(browser_page)


async def test_an_ipc_abort_in_the_page_cancels_the_backends_method(
    browser_page: Page, monkeypatch: pytest.MonkeyPatch
) -> None:
    started = trio.Event()
    cancelled = trio.Event()

    async def check_element(element: Element) -> bool:
        if element.kind != "xref":
            return False
        started.set()
        try:
            await trio.sleep_forever()
        finally:
            cancelled.set()
        return False  # pragma: no cover

    monkeypatch.setattr(editor_backend, "check_element", check_element)
    async with editor_page(browser_page):
        await browser_page.evaluate(
            """(async () => {
              const session = await tether.connectIpc(wsUrl, {channels: [refs.EditorIpc]});
              window.progress = [];
              session.listen(refs.EditorEvents, {
                progress(task, done, total) { progress.push([task, done, total]); },
              });
              const editor = session.proxy(refs.EditorIpc);
              await editor.openDocument("plan");
              await editor.addElement("xref", 1, 1);
              window.controller = new AbortController();
              window.outcome = editor.validateAll({signal: controller.signal})
                .then(() => "resolved", (e) => e.name);
              return true;
            })()"""
        )
        await started.wait()
        # the four elements before the xref were checked, and their progress heard
        await browser_page.wait_for("progress.length === 4")
        assert await browser_page.evaluate("progress.at(-1)") == ["validate", 4, 5]
        assert not cancelled.is_set()
        await browser_page.evaluate("controller.abort(); true")
        await cancelled.wait()
        assert await browser_page.evaluate("window.outcome") == "AbortError"


async def test_websocket_serve_with_the_pages_origin_allowed_and_refused(
    browser_page: Page,
) -> None:
    waiter = WaiterImpl()
    with trio.fail_after(TIMEOUT):
        async with serve_pages() as base, trio.open_nursery() as nursery:
            await browser_page.goto(f"{base}/pages/ws_client.html")
            await browser_page.wait_for("window.ready === true")
            manager = robot_world_with(waiter)
            allowed = await nursery.start(
                functools.partial(websocket.serve, manager, allowed_origins=[base])
            )
            refused = await nursery.start(functools.partial(websocket.serve, manager))
            result = await browser_page.evaluate(
                f"""(async () => {{
                  const rpc = await tether.connectRpc({allowed!r}, {{
                    interfaces: [refs.RobotWorldRead]}});
                  const robots = rpc.proxy(refs.RobotWorldRead);
                  const count = await robots.countRobots({{key: "warehouse"}});
                  await rpc.close();
                  let refusal = null;
                  try {{ await tether.connectRpc({refused!r}); }} catch (e) {{
                    refusal = {{cls: e.constructor.name, closeCode: e.closeCode,
                                message: e.message}};
                  }}
                  return {{count, refusal}};
                }})()"""
            )
            nursery.cancel_scope.cancel()
            assert result["count"] == 3
            refusal = result["refusal"]
            assert refusal["cls"] == "ConnectionClosed"
            assert refusal["closeCode"] == 1006
            assert "refused the handshake" in refusal["message"]
            assert "allowed origins" in refusal["message"]
