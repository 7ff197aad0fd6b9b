# mypy: disable-error-code="empty-body"
"""What the browser tests over HTTP and over WebSocket share: the `Waiter`
interface and its impl, RobotWorld with it, and the page scripts run over
both transports with what they must return (tests/test_browser_http.py and
tests/test_browser_websocket.py run each one against their own server, the
way the conformance suites share cases across transports).

The pages (tests/browser_pages/http_client.html and ws_client.html) both load
tests/browser_pages/common_client.js (`tether`, `refs`).
"""

from __future__ import annotations

import math
from typing import Any

import attrs
import trio

import tether
from examples.robot_world.backend import make_backend as make_robot_world
from tests.browser_support import Page

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

    async def halfway(self) -> str:
        await tether.report_progress(1, 2, "half done")
        await self.proceed.wait()
        return "done"


def robot_world_with(waiter: WaiterImpl) -> tether.RpcManager:
    manager = make_robot_world()
    manager.register_impl(Waiter, waiter)
    return manager


def connect_rpc(url: str, options: str = "") -> str:
    """The script that connects `window.rpc` to the JS expression `url`."""
    return (
        f"(async () => {{ window.rpc = await tether.connectRpc({url}, {{"
        " interfaces: [refs.RobotWorldRead, refs.RobotTelemetry, refs.Waiter],"
        f" application: {{id: 'browser-test', version: '1.0'}}{options} }}); return true; }})()"
    )


ROBOT_TOUR = """(async () => {
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

ROBOT_TOUR_RESULT = {
    "count": 3,
    "hit": ["crate-1", "crate-2"],
    "steps": [0, 1, 2],
    "isBytes": True,
    "header": "P5",
    "served": ["RobotTelemetryRpcInterface", "RobotWorldReadRpcInterface", "WaiterRpcInterface"],
}

BYTES_AND_CLIENT_STREAM = """(async () => {
  const w = rpc.proxy(refs.Waiter);
  const back = await w.echoBytes(new Uint8Array([1, 2, 3, 0, 255]));
  async function* numbers() { for (let i = 1; i <= 600; i++) yield i; }
  const total = await w.total(numbers());
  return {back: [...back], isBytes: back instanceof Uint8Array, total};
})()"""

BYTES_AND_CLIENT_STREAM_RESULT = {"back": [255, 0, 3, 2, 1], "isBytes": True, "total": 180300}

# `status`: the HTTP tests assert it (422), the WebSocket tests do not.
APPLICATION_ERROR = """(async () => {
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


def check_application_error(result: dict[str, Any]) -> None:
    assert result["cls"] == "ApplicationError"
    # the name it is registered under (`@tether.remote_error`): module-qualified
    assert result["name"] == "examples.robot_world.interface.RobotNotFound"
    assert result["code"] == "application"
    assert result["isApp"] is True
    # an attrs error's fields travel as details["fields"] (src/tether/runtime/_dispatch.py)
    assert result["details"] == {"fields": {"imodel_key": "warehouse", "robot_id": "robot-9"}}
    assert result["activityId"] == "act-404"
    assert "robot-9" in result["message"]


async def check_an_abort_cancels_the_impl(page: Page, waiter: WaiterImpl) -> None:
    await page.evaluate(
        """window.controller = new AbortController();
        window.outcome = rpc.proxy(refs.Waiter)
          .wait("abort-me", {signal: controller.signal})
          .then(() => "resolved",
                (e) => ({name: e.name, isDom: e instanceof DOMException}));
        true"""
    )
    await waiter.started.wait()
    assert not waiter.cancelled.is_set()
    await page.evaluate("controller.abort(); true")
    await waiter.cancelled.wait()
    assert await page.evaluate("window.outcome") == {"name": "AbortError", "isDom": True}
    assert waiter.tags == ["abort-me"]


async def check_a_deadline_ends_the_impl(page: Page, waiter: WaiterImpl) -> None:
    result = await page.evaluate(
        """(async () => {
          const started = performance.now();
          try {
            await rpc.proxy(refs.Waiter).wait("deadline", {timeoutMs: 300});
            return "resolved";
          } catch (e) {
            return {cls: e.constructor.name, code: e.code, after: performance.now() - started};
          }
        })()"""
    )
    assert result["cls"] == "DeadlineExceeded"
    assert result["code"] == "deadline-exceeded"
    assert result["after"] >= 250
    await waiter.cancelled.wait()


def open_editor(url: str) -> str:
    """The script that opens `window.session` (and `window.editor`) to the JS
    expression `url`: notifications go to `changes`, the backend's questions
    to `questions` (answered yes), state changes to `states`."""
    return f"""(async () => {{
  const session = await tether.connectIpc({url}, {{
    channels: [refs.EditorIpc], application: {{id: "editor-page", version: "1.0"}}}});
  window.session = session;
  window.changes = [];
  window.questions = [];
  window.states = [];
  session.onstatechange = (s) => states.push(s);
  session.listen(refs.EditorEvents, {{
    elementChanged(change) {{ changes.push([change.revision, change.kind, change.element.id]); }},
  }});
  session.serve(refs.EditorPrompts, {{
    confirm(question, ctx) {{
      questions.push([question, typeof ctx.signal.aborted]);
      return true;
    }},
  }});
  window.editor = session.proxy(refs.EditorIpc);
  return true;
}})()"""


# `status`: the HTTP tests assert it (422), the WebSocket tests do not.
EDITOR_TOUR = """(async () => {
  const info = await editor.openDocument("plan");
  const moved = await editor.moveElement("wall-1", 2, 3);
  const deleted = await editor.deleteElement("window-1");
  let missing = null;
  try { await editor.moveElement("nope", 1, 1); } catch (e) {
    const registered = "examples.ipc_editor.interface.ElementNotFound";
    missing = {name: e.name, details: e.details, status: e.status,
               isApp: tether.isApplicationError(e, registered)};
  }
  return {doc: info.name, moved, deleted, changes, questions, missing,
          state: session.state, channels: session.channels};
})()"""


def check_editor_tour(result: dict[str, Any]) -> None:
    assert result["doc"] == "plan"
    assert result["moved"] == {"x": 2.0, "y": 3.0}
    assert result["deleted"] is True
    # the notifications reached the listener, the backend's call the handler
    assert result["changes"] == [[1, "moved", "wall-1"], [2, "deleted", "window-1"]]
    assert result["questions"] == [["delete window window-1?", "boolean"]]
    missing = {k: v for k, v in result["missing"].items() if k != "status"}
    assert missing == {
        "name": "examples.ipc_editor.interface.ElementNotFound",
        "details": {"fields": {"element_id": "nope"}},
        "isApp": True,
    }
    assert result["state"] == "connected"


async def check_the_session_closes(page: Page) -> None:
    why = await page.evaluate(
        "(async () => { await session.close(); const why = await session.closed;"
        " return [session.state, why.constructor.name]; })()"
    )
    assert why == ["closed", "ConnectionClosed"]
