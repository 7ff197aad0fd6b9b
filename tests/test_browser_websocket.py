"""The TypeScript client in Chromium, over WebSocket: RobotWorld over the HTTP
server's `/rpc/ws` (which pings inside the envelope), the IPC editor with a
notification and a backend-to-page call, a cancel and a deadline that reach the
impl, an application error with its name and details, streams and bytes.

The page is tests/browser_pages/ws_client.html; what the server saw is
asserted here, in Python.
"""

from __future__ import annotations

import functools
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import pytest
import trio

import tether
from examples.ipc_editor import backend as editor_backend
from examples.ipc_editor.backend import make_backend as make_editor
from examples.ipc_editor.interface import Element
from examples.robot_world.backend import make_backend as make_robot_world
from tests.browser_support import Page, serve_pages
from tether.transports import websocket
from tether.transports.websocket import WebSocketSettings

TIMEOUT = 20.0


class Waiter(tether.RpcInterface):
    interface_name = "WaiterRpcInterface"
    interface_version = "1.0.0"

    async def wait(self, tag: str) -> int: ...

    async def echo_bytes(self, data: bytes) -> bytes: ...

    async def total(self, numbers: tether.Stream[int]) -> int: ...

    async def halfway(self) -> str: ...


class WaiterImpl(Waiter):
    """`wait` runs until it is cancelled; the test sees it start and end."""

    def __init__(self) -> None:
        self.started = trio.Event()
        self.cancelled = trio.Event()
        self.tags: list[str] = []
        self.proceed = trio.Event()

    async def wait(self, tag: str) -> int:
        self.tags.append(tag)
        self.started.set()
        try:
            await trio.sleep_forever()
        except trio.Cancelled:
            self.cancelled.set()
            raise
        return 0  # pragma: no cover

    async def echo_bytes(self, data: bytes) -> bytes:
        return bytes(reversed(data))

    async def total(self, numbers: tether.Stream[int]) -> int:
        return sum([number async for number in numbers])

    async def halfway(self) -> str:
        await tether.report_progress(1, 2, "half done")
        await self.proceed.wait()
        return "done"


def robot_world_with(waiter: WaiterImpl) -> tether.RpcManager:
    manager = make_robot_world()
    manager.register_impl(Waiter, waiter)
    return manager


@asynccontextmanager
async def robot_page(page: Page, waiter: WaiterImpl, **options: object) -> AsyncIterator[None]:
    async with serve_pages(robot_world_with(waiter), **options) as base:
        await page.goto(f"{base}/pages/ws_client.html")
        await page.wait_for("window.ready === true")
        await page.evaluate(
            "(async () => { window.rpc = await tether.connectRpc(wsUrl, {"
            " interfaces: [refs.RobotWorldRead, refs.RobotTelemetry, refs.Waiter],"
            " application: {id: 'browser-test', version: '1.0'} }); return true; })()"
        )
        yield


async def test_robot_world_over_the_http_servers_websocket(browser_page: Page) -> None:
    waiter = WaiterImpl()
    with trio.fail_after(TIMEOUT):
        async with robot_page(browser_page, waiter):
            result = await browser_page.evaluate(
                """(async () => {
                  const robots = rpc.proxy(refs.RobotWorldRead);
                  const telemetry = rpc.proxy(refs.RobotTelemetry);
                  const count = await robots.countRobots({key: "warehouse"});
                  const hit = await robots.queryObstaclesHitByRobot({key: "warehouse"}, "robot-1");
                  const steps = [];
                  for await (const p of telemetry.watch({key: "warehouse"}, "robot-2", 0.001)) {
                    steps.push(p.step);
                    if (steps.length === 3) break;
                  }
                  const picture = await telemetry.snapshot({key: "warehouse"});
                  const header = new TextDecoder().decode(picture.subarray(0, 2));
                  return {count, hit, steps, isBytes: picture instanceof Uint8Array, header,
                          served: Object.keys(rpc.interfaces).sort()};
                })()"""
            )
            assert result == {
                "count": 3,
                "hit": ["crate-1", "crate-2"],
                "steps": [0, 1, 2],
                "isBytes": True,
                "header": "P5",
                "served": [
                    "RobotTelemetryRpcInterface",
                    "RobotWorldReadRpcInterface",
                    "WaiterRpcInterface",
                ],
            }


async def test_bytes_and_a_client_stream_round_trip(browser_page: Page) -> None:
    waiter = WaiterImpl()
    with trio.fail_after(TIMEOUT):
        async with robot_page(browser_page, waiter):
            result = await browser_page.evaluate(
                """(async () => {
                  const w = rpc.proxy(refs.Waiter);
                  const back = await w.echoBytes(new Uint8Array([1, 2, 3, 0, 255]));
                  async function* numbers() { for (let i = 1; i <= 600; i++) yield i; }
                  const total = await w.total(numbers());
                  return {back: [...back], isBytes: back instanceof Uint8Array, total};
                })()"""
            )
            assert result == {"back": [255, 0, 3, 2, 1], "isBytes": True, "total": 180300}


async def test_an_application_error_arrives_with_its_name_and_details(browser_page: Page) -> None:
    waiter = WaiterImpl()
    with trio.fail_after(TIMEOUT):
        async with robot_page(browser_page, waiter):
            result = await browser_page.evaluate(
                """(async () => {
                  const robots = rpc.proxy(refs.RobotWorldRead);
                  try {
                    await robots.queryObstaclesHitByRobot({key: "warehouse"}, "robot-9",
                                                          {activityId: "act-404"});
                    return "no error";
                  } catch (e) {
                    const registered = "examples.robot_world.interface.RobotNotFound";
                    return {cls: e.constructor.name, name: e.name, code: e.code,
                            isApp: tether.isApplicationError(e, registered),
                            details: e.details, activityId: e.activityId, message: e.message};
                  }
                })()"""
            )
            assert result["cls"] == "ApplicationError"
            # the name it is registered under (`@tether.remote_error`): module-qualified
            assert result["name"] == "examples.robot_world.interface.RobotNotFound"
            assert result["code"] == "application"
            assert result["isApp"] is True
            # an attrs error's fields travel as details["fields"] (src/tether/runtime/_dispatch.py)
            fields = {"imodel_key": "warehouse", "robot_id": "robot-9"}
            assert result["details"] == {"fields": fields}
            assert result["activityId"] == "act-404"
            assert "robot-9" in result["message"]


async def test_an_abort_in_the_page_cancels_the_impl(browser_page: Page) -> None:
    waiter = WaiterImpl()
    with trio.fail_after(TIMEOUT):
        async with robot_page(browser_page, waiter):
            await browser_page.evaluate(
                """window.controller = new AbortController();
                window.outcome = rpc.proxy(refs.Waiter)
                  .wait("abort-me", {signal: controller.signal})
                  .then(() => "resolved",
                        (e) => ({name: e.name, isDom: e instanceof DOMException}));
                true"""
            )
            await waiter.started.wait()
            assert not waiter.cancelled.is_set()
            await browser_page.evaluate("controller.abort(); true")
            await waiter.cancelled.wait()
            assert await browser_page.evaluate("window.outcome") == {
                "name": "AbortError",
                "isDom": True,
            }
            assert waiter.tags == ["abort-me"]


async def test_a_deadline_cancels_the_impl_and_rejects_with_deadline_exceeded(
    browser_page: Page,
) -> None:
    waiter = WaiterImpl()
    with trio.fail_after(TIMEOUT):
        async with robot_page(browser_page, waiter):
            result = await browser_page.evaluate(
                """(async () => {
                  const started = performance.now();
                  try {
                    await rpc.proxy(refs.Waiter).wait("deadline", {timeoutMs: 300});
                    return "resolved";
                  } catch (e) {
                    return {cls: e.constructor.name, code: e.code,
                            after: performance.now() - started};
                  }
                })()"""
            )
            assert result["cls"] == "DeadlineExceeded"
            assert result["code"] == "deadline-exceeded"
            assert result["after"] >= 250
            await waiter.cancelled.wait()


async def test_progress_reports_reach_on_progress(browser_page: Page) -> None:
    waiter = WaiterImpl()
    with trio.fail_after(TIMEOUT):
        async with robot_page(browser_page, waiter):
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
    waiter = WaiterImpl()
    settings = WebSocketSettings(ping_interval=0.1, ping_timeout=0.5)
    with trio.fail_after(TIMEOUT):
        async with robot_page(browser_page, waiter, websocket=settings):
            # Idle for many ping intervals and past the ping timeout: an
            # unanswered ping would have closed the connection (1011).
            await trio.sleep(1.2)
            count = await browser_page.evaluate(
                "rpc.proxy(refs.RobotWorldRead).countRobots({key: 'lab'})"
            )
            assert count == 0


async def test_the_ipc_editor_over_websocket(browser_page: Page) -> None:
    with trio.fail_after(TIMEOUT):
        async with serve_pages(None, make_editor()) as base:
            await browser_page.goto(f"{base}/pages/ws_client.html")
            await browser_page.wait_for("window.ready === true")
            result = await browser_page.evaluate(
                """(async () => {
                  const session = await tether.connectIpc(wsUrl, {
                    channels: [refs.EditorIpc], application: {id: "editor-page", version: "1.0"}});
                  window.session = session;
                  const changes = [];
                  const questions = [];
                  session.listen(refs.EditorEvents, {
                    elementChanged(change) { changes.push([change.kind, change.element.id]); },
                  });
                  session.serve(refs.EditorPrompts, {
                    confirm(question, ctx) {
                      questions.push([question, typeof ctx.signal.aborted]);
                      return true;
                    },
                  });
                  const editor = session.proxy(refs.EditorIpc);
                  const info = await editor.openDocument("plan");
                  const moved = await editor.moveElement("wall-1", 2, 3);
                  const deleted = await editor.deleteElement("window-1");
                  let missing = null;
                  try { await editor.moveElement("nope", 1, 1); } catch (e) {
                    const registered = "examples.ipc_editor.interface.ElementNotFound";
                    missing = {name: e.name, details: e.details,
                               isApp: tether.isApplicationError(e, registered)};
                  }
                  return {doc: info.name, moved, deleted, changes, questions, missing,
                          state: session.state, channels: session.channels};
                })()"""
            )
            assert result["doc"] == "plan"
            assert result["moved"] == {"x": 2.0, "y": 3.0}
            assert result["deleted"] is True
            assert result["changes"] == [["moved", "wall-1"], ["deleted", "window-1"]]
            assert result["questions"] == [["delete window window-1?", "boolean"]]
            assert result["missing"] == {
                "name": "examples.ipc_editor.interface.ElementNotFound",
                "details": {"fields": {"element_id": "nope"}},
                "isApp": True,
            }
            assert result["state"] == "connected"
            assert result["channels"] == {"ipc-editor": "1.0.0"}
            why = await browser_page.evaluate(
                "(async () => { await session.close(); const why = await session.closed;"
                " return [session.state, why.constructor.name]; })()"
            )
            assert why == ["closed", "ConnectionClosed"]


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
    with trio.fail_after(TIMEOUT):
        async with serve_pages(None, make_editor()) as base:
            await browser_page.goto(f"{base}/pages/ws_client.html")
            await browser_page.wait_for("window.ready === true")
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
