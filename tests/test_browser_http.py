"""The TypeScript client in Chromium, over HTTP: RobotWorld RPC (a fetch per
call, a server stream, bytes, a client stream), a cancel and a deadline that
reach the impl, an application error with its name and details, and the IPC
editor over POSTs and a fetch-streamed event stream, whose stream is cut
mid-session and resumed with nothing lost.

The page (tests/browser_pages/http_client.html) is served through `Gate`, a
TCP relay the test can cut: the page's origin is the relay's, so calls to the
server itself (`?rpc=`) are cross-origin and pass the server's CORS lists,
and calls through the relay can be dropped for real (their connections closed)
and held while the backend sends on. What the server saw is asserted here.
"""

from __future__ import annotations

import math
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any
from urllib.parse import quote

import attrs
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
from examples.robot_world.backend import make_backend as make_robot_world
from tests.browser_support import Page, serve_pages
from tether.runtime._util import open_service_nursery

TIMEOUT = 20.0


@attrs.frozen
class Seen:
    """What the impl saw of a call's context."""

    activity_id: str
    session_id: str | None
    application_id: str | None
    application_version: str | None
    authorization: str | None
    metadata: dict[str, str]
    traceparent: str | None
    has_deadline: bool


class Waiter(tether.RpcInterface):
    interface_name = "WaiterRpcInterface"
    interface_version = "1.0.0"

    async def wait(self, tag: str) -> int: ...

    async def who_am_i(self) -> Seen: ...

    async def echo_bytes(self, data: bytes) -> bytes: ...

    async def total(self, numbers: tether.Stream[int]) -> int: ...


class WaiterImpl(Waiter):
    """`wait` runs until it is cancelled; the test sees it start and end."""

    def __init__(self) -> None:
        self.started = trio.Event()
        self.cancelled = trio.Event()
        self.tags: list[str] = []

    async def wait(self, tag: str) -> int:
        self.tags.append(tag)
        self.started.set()
        try:
            await trio.sleep_forever()
        except trio.Cancelled:
            self.cancelled.set()
            raise
        return 0  # pragma: no cover

    async def who_am_i(self) -> Seen:
        context = tether.current_context()
        assert context is not None
        return Seen(
            context.activity_id,
            context.session_id,
            context.application_id,
            context.application_version,
            context.authorization,
            dict(context.metadata),
            context.traceparent,
            context.deadline is not None and math.isfinite(context.deadline),
        )

    async def echo_bytes(self, data: bytes) -> bytes:
        return bytes(reversed(data))

    async def total(self, numbers: tether.Stream[int]) -> int:
        return sum([number async for number in numbers])


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


def robot_world_with(waiter: WaiterImpl) -> tether.RpcManager:
    manager = make_robot_world()
    manager.register_impl(Waiter, waiter)
    return manager


CONNECT_RPC = (
    "(async () => { window.rpc = await tether.connectRpc(rpcUrl, {"
    " interfaces: [refs.RobotWorldRead, refs.RobotTelemetry, refs.Waiter],"
    " application: {id: 'browser-test', version: '1.0'}, sessionId: 'page-session',"
    " authorization: 'Bearer page-token' }); return true; })()"
)


async def test_robot_world_over_http_from_a_page_of_another_origin(browser_page: Page) -> None:
    waiter = WaiterImpl()
    with trio.fail_after(TIMEOUT):
        async with served(browser_page, robot_world_with(waiter)):
            await browser_page.evaluate(CONNECT_RPC)
            assert await browser_page.evaluate("rpcUrl.startsWith(location.origin)") is False
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


async def test_every_header_of_a_call_passes_cors_and_reaches_the_impl(browser_page: Page) -> None:
    waiter = WaiterImpl()
    with trio.fail_after(TIMEOUT):
        async with served(browser_page, robot_world_with(waiter)):
            await browser_page.evaluate(CONNECT_RPC)
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
    waiter = WaiterImpl()
    with trio.fail_after(TIMEOUT):
        async with served(browser_page, robot_world_with(waiter)):
            await browser_page.evaluate(CONNECT_RPC)
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
        async with served(browser_page, robot_world_with(waiter)):
            await browser_page.evaluate(CONNECT_RPC)
            result = await browser_page.evaluate(
                """(async () => {
                  const robots = rpc.proxy(refs.RobotWorldRead);
                  try {
                    await robots.queryObstaclesHitByRobot({key: "warehouse"}, "robot-9",
                                                          {activityId: "act-404"});
                    return "no error";
                  } catch (e) {
                    const registered = "examples.robot_world.interface.RobotNotFound";
                    return {cls: e.constructor.name, name: e.name, code: e.code, status: e.status,
                            isApp: tether.isApplicationError(e, registered),
                            details: e.details, activityId: e.activityId, message: e.message};
                  }
                })()"""
            )
            assert result["cls"] == "ApplicationError"
            assert result["name"] == "examples.robot_world.interface.RobotNotFound"
            assert result["code"] == "application"
            assert result["status"] == 422
            assert result["isApp"] is True
            assert result["details"] == {
                "fields": {"imodel_key": "warehouse", "robot_id": "robot-9"}
            }
            assert result["activityId"] == "act-404"
            assert "robot-9" in result["message"]


async def test_an_abort_in_the_page_cancels_the_impl(browser_page: Page) -> None:
    waiter = WaiterImpl()
    with trio.fail_after(TIMEOUT):
        async with served(browser_page, robot_world_with(waiter)):
            await browser_page.evaluate(CONNECT_RPC)
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


async def test_a_deadline_rejects_with_deadline_exceeded_and_ends_the_impl(
    browser_page: Page,
) -> None:
    waiter = WaiterImpl()
    with trio.fail_after(TIMEOUT):
        async with served(browser_page, robot_world_with(waiter)):
            await browser_page.evaluate(CONNECT_RPC)
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


OPEN_EDITOR = """(async () => {
  const session = await tether.connectIpc(rpcUrl, {
    channels: [refs.EditorIpc], application: {id: "editor-page", version: "1.0"}});
  window.session = session;
  window.changes = [];
  window.questions = [];
  window.states = [];
  session.onstatechange = (s) => states.push(s);
  session.listen(refs.EditorEvents, {
    elementChanged(change) { changes.push([change.revision, change.kind, change.element.id]); },
  });
  session.serve(refs.EditorPrompts, {
    confirm(question) { questions.push(question); return true; },
  });
  window.editor = session.proxy(refs.EditorIpc);
  return true;
})()"""


async def test_the_ipc_editor_over_http(browser_page: Page) -> None:
    with trio.fail_after(TIMEOUT):
        async with served(browser_page, None, make_editor()):
            await browser_page.evaluate(OPEN_EDITOR)
            result = await browser_page.evaluate(
                """(async () => {
                  const info = await editor.openDocument("plan");
                  const moved = await editor.moveElement("wall-1", 2, 3);
                  const deleted = await editor.deleteElement("window-1");
                  let missing = null;
                  try { await editor.moveElement("nope", 1, 1); } catch (e) {
                    missing = {name: e.name, details: e.details, status: e.status,
                               isApp: tether.isApplicationError(
                                 e, "examples.ipc_editor.interface.ElementNotFound")};
                  }
                  return {doc: info.name, moved, deleted, changes, questions, missing,
                          state: session.state};
                })()"""
            )
            assert result["doc"] == "plan"
            assert result["moved"] == {"x": 2.0, "y": 3.0}
            assert result["deleted"] is True
            # the notifications reached the listener, the backend's call the handler
            assert result["changes"] == [[1, "moved", "wall-1"], [2, "deleted", "window-1"]]
            assert result["questions"] == ["delete window window-1?"]
            assert result["missing"] == {
                "name": "examples.ipc_editor.interface.ElementNotFound",
                "details": {"fields": {"element_id": "nope"}},
                "status": 422,
                "isApp": True,
            }
            assert result["state"] == "connected"
            why = await browser_page.evaluate(
                "(async () => { await session.close(); const why = await session.closed;"
                " return [session.state, why.constructor.name]; })()"
            )
            assert why == ["closed", "ConnectionClosed"]


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
