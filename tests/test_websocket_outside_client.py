# mypy: disable-error-code="empty-body"
"""An outside client, the `websockets` package, speaks the documented envelope to both servers.

tether does not use `websockets`: every message here is a dict written by hand
from DESIGN.md section 4 (and the encoder it documents), sent with `json.dumps`;
nothing is encoded by tether. Each test runs the tether server in the Trio test
and the client, `websockets.sync.client`, in a worker thread, which reaches back
into Trio with `trio.from_thread.run` to wait for what the backend saw.

Both servers: trio-websocket's (`websocket.serve`, `ws://host:port/`) and the
hypercorn ASGI one (`http.serve`, `ws://host:port/rpc/ws`).
"""

from __future__ import annotations

import contextlib
import functools
import json
import logging
import time
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager
from typing import Any, TypeVar

import attrs
import pytest
import trio
from websockets.exceptions import ConnectionClosed as WsClosed
from websockets.frames import Opcode
from websockets.sync.client import ClientConnection
from websockets.sync.client import connect as ws_connect

import tether
from tether.runtime._util import open_service_nursery
from tether.transports import http, websocket

TIMEOUT = 10.0  # the cap of every test
RECV = 3.0  # seconds the client waits for one message
PINGS: dict[str, Any] = {"ping_interval": 0.2, "ping_timeout": 1.0}
VARIANTS = pytest.mark.parametrize("variant", ["trio-websocket", "hypercorn"])
J = dict[str, Any]  # one JSON message
T = TypeVar("T")


# -- what the backend serves ---------------------------------------------------------------


@attrs.frozen
class Placement:
    x: float
    y: float


@tether.remote_error(name="outside.Refused")
@attrs.define
class Refused(Exception):
    code: int
    reason: str


class Calc(tether.RpcInterface):
    interface_name = "outside.Calc"
    interface_version = "2.1.0"

    async def add(self, a: int, b: int) -> int: ...
    async def wait_forever(self, key: str) -> None: ...
    async def fail(self, kind: str) -> None: ...


class CalcImpl(Calc):
    def __init__(self) -> None:
        self.seen: list[tuple[str, str | None, str | None]] = []  # activity, session, app
        self.outcome: list[str] = []
        self.started, self.done = trio.Event(), trio.Event()

    async def add(self, a: int, b: int) -> int:
        ctx = tether.current_context()
        assert ctx is not None
        self.seen.append((ctx.activity_id, ctx.session_id, ctx.application_id))
        return a + b

    async def wait_forever(self, key: str) -> None:
        self.started.set()
        try:
            await trio.sleep_forever()
        except trio.Cancelled:
            self.outcome.append(f"cancelled:{key}")
            raise
        finally:
            self.outcome.append(f"finally:{key}")
            self.done.set()

    async def fail(self, kind: str) -> None:
        if kind == "application":
            raise Refused(code=7, reason="no room")
        raise ValueError("boom")


class Editor(tether.IpcInterface):
    channel_name = "outside.editor"
    version = "1.4.0"

    async def move(self, element_id: str, dx: float) -> Placement: ...


class EditorEvents(tether.NotificationInterface):
    channel_name = "outside.editor-events"

    async def moved(self, element_id: str, placement: Placement) -> None: ...


def editor_backend(closed: list[str], closed_event: trio.Event) -> tether.BackendIpc:
    class EditorHandler(tether.IpcHandler, Editor):
        async def move(self, element_id: str, dx: float) -> Placement:
            return Placement(dx, 0.0)

        def on_close(self, reason: str) -> None:
            closed.append(reason)
            closed_event.set()

    backend = tether.BackendIpc()
    backend.register(EditorHandler)
    return backend


def calc_manager() -> tuple[tether.RpcManager, CalcImpl]:
    manager, impl = tether.RpcManager(), CalcImpl()
    manager.register_impl(Calc, impl)
    return manager, impl


@asynccontextmanager
async def serving(
    variant: str, manager: tether.RpcManager | None, ipc: tether.BackendIpc | None = None, **kw: Any
) -> AsyncIterator[str]:
    """Serve on `variant` on 127.0.0.1 for the block; yield the ws:// URL."""
    async with open_service_nursery() as nursery:
        if variant == "trio-websocket":
            serve = functools.partial(websocket.serve, manager, "127.0.0.1", 0, ipc=ipc, **kw)
            url = await nursery.start(serve)
        else:
            settings = websocket.WebSocketSettings(**kw)
            serve = functools.partial(
                http.serve, manager, "127.0.0.1", 0, ipc=ipc, websocket=settings
            )
            url = (await nursery.start(serve)).replace("http://", "ws://", 1) + "/ws"
        yield url
        nursery.cancel_scope.cancel()


async def in_thread(fn: Callable[[], T]) -> T:
    """Run the blocking client script in a worker thread (abandoned if the test times out)."""
    return await trio.to_thread.run_sync(fn, abandon_on_cancel=True)


async def _wait(event: trio.Event) -> None:
    with trio.fail_after(RECV):
        await event.wait()


def wait_in_trio(event: trio.Event) -> None:
    """From the client's thread: wait, bounded, for something the backend does in Trio."""
    trio.from_thread.run(_wait, event)


# -- the hand-written client -----------------------------------------------------------------


class PingCounter(logging.Handler):
    """Counts the WebSocket-level PING frames `websockets` logs as received (`< PING ...`)."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.pings = 0
        self.logger = logging.getLogger(f"tests.outside.{id(self)}")
        self.logger.setLevel(logging.DEBUG)
        self.logger.propagate = False
        self.logger.addHandler(self)

    def emit(self, record: logging.LogRecord) -> None:
        args = record.args
        frame = args[0] if record.msg == "< %s" and isinstance(args, tuple) and args else None
        if getattr(frame, "opcode", None) is Opcode.PING:
            self.pings += 1


def open_client(url: str, counter: PingCounter | None = None) -> ClientConnection:
    # No pings of the client's own: the servers' pings are under test.
    logger = counter.logger if counter is not None else None
    return ws_connect(
        url, open_timeout=RECV, close_timeout=2, ping_interval=None, proxy=None, logger=logger
    )


def send(ws: ClientConnection, message: J) -> None:
    ws.send(json.dumps(message))


def recv(ws: ClientConnection) -> J:
    message = json.loads(ws.recv(timeout=RECV))
    assert isinstance(message, dict), message
    return message


RPC_HELLO = {
    "t": "hello",
    "protocol": 1,
    "session_id": "outside-session",
    "application": {"id": "outside-app", "version": "0.9"},
    "channels": {},
    "mode": "rpc",
}


def call(id_: int, op: str, args: Any, **fields: Any) -> J:
    ctx = {"activity_id": f"outside-activity-{id_}", "application_id": "outside-app"}
    message = {"t": "call", "id": id_, "iface": "outside.Calc", "ver": "2.1.0", "op": op,
               "args": args, "ctx": ctx, "timeout_ms": 5000}  # fmt: skip
    return message | fields


@contextlib.contextmanager
def rpc_session(url: str, counter: PingCounter | None = None) -> Iterator[ClientConnection]:
    with open_client(url, counter) as ws:
        send(ws, RPC_HELLO)
        yield ws


# -- RPC ---------------------------------------------------------------------------------------


@VARIANTS
async def test_rpc_hello_welcome_and_a_call_carry_the_clients_context(variant: str) -> None:
    manager, impl = calc_manager()

    def client(url: str) -> tuple[J, J]:
        with rpc_session(url) as ws:
            welcome = recv(ws)
            send(ws, call(1, "add", [2, 40]))
            return welcome, recv(ws)

    with trio.fail_after(TIMEOUT):
        async with serving(variant, manager) as url:
            welcome, result = await in_thread(lambda: client(url))
    operations = ["add", "wait_forever", "fail"]
    assert welcome == {
        "t": "welcome",
        "protocol": 1,
        "session_id": "outside-session",  # the hello's, echoed
        "channels": {},
        "interfaces": {"outside.Calc": {"version": "2.1.0", "operations": operations}},
    }
    assert result == {"t": "result", "id": 1, "value": 42}
    # The ctx had no session_id: the call belongs to the connection's session.
    assert impl.seen == [("outside-activity-1", "outside-session", "outside-app")]


@VARIANTS
async def test_rpc_cancel_stops_the_impl_sends_no_reply_and_keeps_the_connection(
    variant: str,
) -> None:
    manager, impl = calc_manager()

    def client(url: str) -> tuple[J, list[str]]:
        with rpc_session(url) as ws:
            assert recv(ws)["t"] == "welcome"
            send(ws, call(2, "wait_forever", ["k"], timeout_ms=None))
            wait_in_trio(impl.started)
            send(ws, {"t": "cancel", "id": 2})
            wait_in_trio(impl.done)
            outcome = list(impl.outcome)
            send(ws, {"t": "cancel", "id": 99})  # nothing runs under 99: ignored, no reply
            send(ws, call(3, "add", [1, 2]))
            after = recv(ws)
            # Nothing more comes: a cancelled call gets no reply at all (DESIGN.md §4:
            # "no reply is expected"); a short bounded wait shows the absence.
            with pytest.raises(TimeoutError):
                ws.recv(timeout=0.3)
            return after, outcome

    with trio.fail_after(TIMEOUT):
        async with serving(variant, manager) as url:
            after, outcome = await in_thread(lambda: client(url))
    assert outcome == ["cancelled:k", "finally:k"]
    assert after == {"t": "result", "id": 3, "value": 3}


ERROR_CASES = [  # (call, code, status, name): DESIGN.md section 5
    (call(10, "fail", ["application"]), "application", 422, "outside.Refused"),
    (call(11, "fail", ["plain"]), "internal", 500, "builtins.ValueError"),
    (call(12, "nope", []), "not-found", 404, "NotFound"),
    (call(13, "add", [1, 2], iface="outside.Nobody"), "not-found", 404, "NotFound"),
    (call(14, "add", ["one", 2]), "bad-request", 400, "InvalidRequest"),
    (call(15, "add", [1]), "bad-request", 400, "InvalidRequest"),
    (call(16, "add", [1, 2], ver="3.0.0"), "incompatible-version", 403, "IncompatibleVersion"),
    (call(17, "add", [1, 2], ver="2.2.0"), "incompatible-version", 403, "IncompatibleVersion"),
    (call(18, "wait_forever", ["x"], timeout_ms=100), "deadline-exceeded", 504, "DeadlineExceeded"),
]


@VARIANTS
async def test_rpc_errors_have_the_documented_codes_and_statuses(variant: str) -> None:
    manager, _ = calc_manager()

    def client(url: str) -> list[J]:
        with rpc_session(url) as ws:
            assert recv(ws)["t"] == "welcome"
            replies = []
            for request, *_ in ERROR_CASES:
                send(ws, request)
                replies.append(recv(ws))
            send(ws, call(19, "add", "not a list"))  # a malformed envelope
            replies.append(recv(ws))
            ws.send("this is not JSON")
            replies.append(recv(ws))
            send(ws, call(20, "add", [20, 22]))  # the connection survived all of it
            replies.append(recv(ws))
            return replies

    with trio.fail_after(TIMEOUT):
        async with serving(variant, manager) as url:
            replies = await in_thread(lambda: client(url))
    *errors, malformed, not_json, last = replies
    for (request, code, status, name), reply in zip(ERROR_CASES, errors, strict=True):
        assert reply["t"] == "error", reply
        assert reply["id"] == request["id"]
        error = reply["error"]
        assert (error["code"], error["status"], error["name"]) == (code, status, name), reply
        assert error["activity_id"] == request["ctx"]["activity_id"]  # every error carries it
    assert errors[0]["error"]["details"] == {"fields": {"code": 7, "reason": "no room"}}
    assert errors[1]["error"]["message"] == "boom"
    assert errors[1]["error"]["details"] == {}  # no traceback outside development mode
    assert malformed["t"] == "error"
    assert malformed["id"] == 19
    assert malformed["error"]["code"] == "bad-request"
    assert malformed["error"]["details"] == {"field": "args", "id": 19}
    assert (not_json["t"], not_json["id"], not_json["error"]["status"]) == ("error", None, 400)
    assert last == {"t": "result", "id": 20, "value": 42}


# -- IPC ---------------------------------------------------------------------------------------


@VARIANTS
async def test_ipc_session_invoke_and_notifications_both_ways(variant: str) -> None:
    closed: list[str] = []
    closed_event, heard_event = trio.Event(), trio.Event()
    backend = editor_backend(closed, closed_event)
    heard: list[tuple[Any, ...]] = []

    def listener(method: str, *args: Any) -> None:
        heard.append((method, *args, tether.current_session().id))
        heard_event.set()

    backend.add_listener("outside.frontend-events", listener)
    sessions: list[tuple[str | None, str | None]] = []

    async def push() -> None:  # the backend notifies its frontend, unasked
        (session,) = backend.sessions
        sessions.append((session.application_id, session.application_version))
        await session.notifier(EditorEvents).moved("e7", Placement(1.0, 2.0))

    def client(url: str) -> list[J]:
        with open_client(url) as ws:
            send(ws, {"t": "hello", "protocol": 1, "mode": "ipc",
                      "application": {"id": "outside-ipc", "version": "3.0"},
                      "channels": {"outside.editor": "1.4.0"}})  # fmt: skip
            welcome = recv(ws)
            send(ws, {"t": "invoke", "id": 1, "channel": "outside.editor", "method": "move",
                      "args": ["e1", 2.5], "activity_id": "outside-ipc-1"})  # fmt: skip
            result = recv(ws)
            trio.from_thread.run(push)
            notified = recv(ws)
            send(ws, {"t": "notify", "channel": "outside.frontend-events", "method": "clicked",
                      "args": [3, {"button": "left"}], "activity_id": "outside-click"})  # fmt: skip
            wait_in_trio(heard_event)
            ws.close(1000, "bye now")
            return [welcome, result, notified]

    manager, _ = calc_manager()
    with trio.fail_after(TIMEOUT):
        # One endpoint serves both kinds: the hello's mode picks the session.
        async with serving(variant, manager, ipc=backend) as url:
            welcome, result, notified = await in_thread(lambda: client(url))
            await closed_event.wait()
    assert welcome == {
        "t": "welcome",
        "protocol": 1,
        "session_id": heard[0][-1],  # made by the backend
        "channels": {"outside.editor": "1.4.0"},
        "interfaces": {},
    }
    assert result == {"t": "result", "id": 1, "value": {"x": 2.5, "y": 0.0}}
    assert sessions == [("outside-ipc", "3.0")]
    # Sent outside any request context: no activity_id on the wire.
    args = ["e7", {"x": 1.0, "y": 2.0}]
    assert notified == {"t": "notify", "channel": "outside.editor-events", "method": "moved",
                        "args": args}  # fmt: skip
    assert heard == [("clicked", 3, {"button": "left"}, welcome["session_id"])]
    # trio-websocket hands the client's close reason to the session; hypercorn's
    # `websocket.disconnect` event carries no reason (0.18), so the runtime says who left.
    expected = "bye now" if variant == "trio-websocket" else "the frontend closed the session"
    assert closed == [expected]


HANDSHAKE_REFUSALS: dict[str, tuple[str, J, str, int]] = {
    # case: (what the endpoint serves, the hello's changes, code, status)
    "protocol-2": ("rpc", {"protocol": 2}, "incompatible-version", 403),
    "ipc-hello-to-rpc-only": ("rpc", {"mode": "ipc"}, "bad-request", 400),
    # On hypercorn, `http.serve(None, ipc=...)` hands its WebSocket endpoint an empty
    # RpcManager instead of None, so this hello gets a `welcome` (no interfaces), unlike
    # on trio-websocket and unlike docs/ipc.md ("an RPC hello sent to an IPC endpoint
    # ... is InvalidRequest, naming the right call"): HttpApp.__init__ in http/_server.py.
    "rpc-hello-to-ipc-only": ("ipc", {"mode": "rpc"}, "bad-request", 400),
    "unknown-channel": ("ipc", {"channels": {"outside.nobody": "1.0.0"}}, "not-found", 404),
    "major-2": ("ipc", {"channels": {"outside.editor": "2.0.0"}}, "incompatible-version", 403),
}


@VARIANTS
@pytest.mark.parametrize("case", list(HANDSHAKE_REFUSALS))
async def test_a_refused_hello_gets_an_error_without_id_then_a_normal_close(
    variant: str, case: str
) -> None:
    serves, changes, code, status = HANDSHAKE_REFUSALS[case]
    hello = {"t": "hello", "protocol": 1, "channels": {}, "mode": serves} | changes
    rpc = serves == "rpc"
    manager = calc_manager()[0] if rpc else None
    backend = None if rpc else editor_backend([], trio.Event())

    def client(url: str) -> tuple[J, WsClosed | None]:
        with open_client(url) as ws:
            send(ws, hello)
            refusal = recv(ws)
            if refusal["t"] != "error":
                return refusal, None  # accepted: fails below, showing what came
            with pytest.raises(WsClosed) as closed:
                ws.recv(timeout=RECV)
            return refusal, closed.value

    with trio.fail_after(TIMEOUT):
        async with serving(variant, manager, ipc=backend) as url:
            refusal, closed = await in_thread(lambda: client(url))
    assert refusal["t"] == "error", refusal
    assert refusal["id"] is None
    assert (refusal["error"]["code"], refusal["error"]["status"]) == (code, status)
    if "mode" in changes:  # the message names the kind of session served here
        assert f"serves {serves.upper()} sessions" in refusal["error"]["message"]
    assert closed is not None
    assert closed.rcvd is not None
    assert closed.rcvd.code == 1000


# -- keepalive -----------------------------------------------------------------------------------


async def test_hypercorn_envelope_pings_answered_keep_the_connection_open() -> None:
    manager, _ = calc_manager()
    counter = PingCounter()

    def client(url: str) -> tuple[list[int], float, J]:
        with rpc_session(url, counter) as ws:
            ping_ids: list[int] = []
            first = 0.0
            for _ in range(20):  # bounded: each pass gets a message within RECV
                message = recv(ws)
                if message["t"] != "ping":
                    assert message["t"] == "welcome", message
                    continue
                first = first or time.monotonic()
                ping_ids.append(message["id"])
                send(ws, {"t": "pong", "id": message["id"]})
                if len(ping_ids) == 7:
                    break
            elapsed = time.monotonic() - first
            send(ws, call(1, "add", [5, 6]))
            for _ in range(3):  # a ping may come before the result
                reply = recv(ws)
                if reply["t"] != "ping":
                    return ping_ids, elapsed, reply
                send(ws, {"t": "pong", "id": reply["id"]})
            raise AssertionError("no reply to the call")

    with trio.fail_after(TIMEOUT):
        async with serving("hypercorn", manager, **PINGS) as url:
            ping_ids, elapsed, reply = await in_thread(lambda: client(url))
    assert ping_ids == [1, 2, 3, 4, 5, 6, 7]
    assert elapsed > PINGS["ping_timeout"]  # open for longer than one unanswered ping lasts
    assert reply == {"t": "result", "id": 1, "value": 11}
    assert counter.pings == 0  # and no WebSocket-level pings: the app pings in the envelope


async def test_hypercorn_closes_a_client_that_does_not_answer_pings_with_1011() -> None:
    manager, _ = calc_manager()

    def client(url: str) -> tuple[list[J], WsClosed]:
        with rpc_session(url) as ws:
            seen: list[J] = []
            for _ in range(30):  # bounded: a ping after 0.2 s, the close 1 s later
                try:
                    seen.append(recv(ws))
                except WsClosed as exc:
                    return seen, exc
            raise AssertionError(f"still open after {seen}")

    with trio.fail_after(TIMEOUT):
        async with serving("hypercorn", manager, **PINGS) as url:
            seen, closed = await in_thread(lambda: client(url))
    assert {m["t"] for m in seen} == {"welcome", "ping"}
    # One ping went out; no other is sent while it waits for its pong.
    assert [m for m in seen if m["t"] == "ping"] == [{"t": "ping", "id": 1}]
    assert closed.rcvd is not None
    assert (closed.rcvd.code, closed.rcvd.reason) == (1011, "no answer to a ping within 1 s")


async def test_trio_websocket_pings_are_websocket_pings_that_websockets_answers() -> None:
    manager, _ = calc_manager()
    counter = PingCounter()

    def client(url: str) -> tuple[list[Any], J]:
        with rpc_session(url, counter) as ws:
            assert recv(ws)["t"] == "welcome"
            unexpected: list[Any] = []
            for _ in range(60):  # bounded: 60 x 0.1 s; 7 pings take about 1.4 s
                if counter.pings >= 7:
                    break
                with contextlib.suppress(TimeoutError):
                    unexpected.append(ws.recv(timeout=0.1))  # no envelope ping comes
            send(ws, call(1, "add", [5, 6]))
            return unexpected, recv(ws)

    with trio.fail_after(TIMEOUT):
        async with serving("trio-websocket", manager, **PINGS) as url:
            unexpected, reply = await in_thread(lambda: client(url))
    assert counter.pings >= 7  # each answered by websockets itself, for longer than ping_timeout
    assert unexpected == []
    assert reply == {"t": "result", "id": 1, "value": 11}
