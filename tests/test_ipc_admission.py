# mypy: disable-error-code="empty-body"
"""Who may open an IPC session, transport by transport: what the `authorize` hook
sees, the per-client cap, the statuses and close codes of a refusal, and what a
refusal leaves behind (nothing).

What every transport must do alike is in the conformance suite
(`tether.testing._ipc_authorization`); this file holds what differs by
transport: addresses, headers, HTTP statuses, WebSocket close codes. Servers are
the real ones on 127.0.0.1, clients the real ones (tether's, httpx,
trio-websocket).
"""

from __future__ import annotations

import functools
import json
from collections.abc import AsyncIterator
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import Any
from urllib.parse import urlsplit

import httpx
import hypercorn.config
import hypercorn.trio
import pytest
import trio
import trio.testing
import trio_websocket

import tether
from tether.runtime import DEFAULT_MAX_SESSIONS_PER_CLIENT, serve_ipc_session
from tether.runtime._protocol import PROTOCOL_VERSION, Error, Hello, Welcome, decode, encode
from tether.runtime._stream import MessageStream
from tether.runtime._util import open_service_nursery
from tether.transports import http, memory, websocket

TIMEOUT = 10.0
SECRET = "Bearer admission-credential"
NETWORK = ["http", "trio-websocket", "hypercorn-websocket"]
EVERY = ["memory", "memory-thread", *NETWORK]


class Editor(tether.IpcInterface):
    channel_name = "admission.editor"
    version = "1.0.0"

    async def move(self, dx: float) -> float: ...


def make_backend(**options: Any) -> tuple[tether.BackendIpc, list[str]]:
    """A backend serving `Editor`, and the list of the handlers it made."""
    made: list[str] = []

    class EditorHandler(tether.IpcHandler, Editor):
        def __init__(self) -> None:
            made.append("made")

        async def move(self, dx: float) -> float:
            return dx

    backend = tether.BackendIpc(**options)
    backend.register(EditorHandler)
    return backend, made


def recorder(seen: list[tether.IpcHandshake], *, allow: bool = True) -> Any:
    async def authorize(handshake: tether.IpcHandshake) -> bool:
        seen.append(handshake)
        return allow

    return authorize


def hello(authorization: str | None = None, **changes: Any) -> bytes:
    return encode(
        Hello(
            PROTOCOL_VERSION,
            channels={Editor.channel_name: Editor.version},
            mode="ipc",
            authorization=authorization,
            **changes,
        )
    )


def leftovers(backend: tether.BackendIpc) -> tuple[Any, ...]:
    """What a backend holds for sessions: open ones, places reserved, per-client counts."""
    return backend.sessions, backend._opening, backend._per_client


def task_count() -> int:
    """Every task of this Trio run."""

    def walk(task: trio.lowlevel.Task) -> int:
        return 1 + sum(
            walk(child) for nursery in task.child_nurseries for child in nursery.child_tasks
        )

    return walk(trio.lowlevel.current_root_task())


@asynccontextmanager
async def serving(transport: str, backend: tether.BackendIpc) -> AsyncIterator[str]:
    """Serve `backend` over a network transport on 127.0.0.1; yield the URL."""
    async with open_service_nursery() as nursery:
        if transport == "trio-websocket":
            url = await nursery.start(
                functools.partial(websocket.serve, None, "127.0.0.1", 0, ipc=backend)
            )
        else:
            base = await nursery.start(
                functools.partial(http.serve, None, "127.0.0.1", 0, ipc=backend)
            )
            url = base if transport == "http" else base.replace("http://", "ws://", 1) + "/ws"
        yield url
        nursery.cancel_scope.cancel()


@asynccontextmanager
async def session(
    transport: str, backend: tether.BackendIpc, **options: Any
) -> AsyncIterator[tether.FrontendIpc]:
    """Serve `backend` over `transport` and open one session with it, for the block."""
    options.setdefault("channels", [Editor])
    if transport.startswith("memory"):
        thread = transport == "memory-thread"
        async with memory.connect_ipc(backend, thread=thread, **options) as frontend:
            yield frontend
        return
    async with serving(transport, backend) as url, connect(transport, url, **options) as frontend:
        yield frontend


def connect(
    transport: str, url: str, **options: Any
) -> AbstractAsyncContextManager[tether.FrontendIpc]:
    options.setdefault("channels", [Editor])
    if transport == "http":
        return http.connect_ipc(url, **options)
    return websocket.connect_ipc(url, **options)


# -- the hook's view, per transport ------------------------------------------------------


@pytest.mark.parametrize("transport", EVERY)
async def test_the_hook_sees_the_transport_the_client_and_its_headers(transport: str) -> None:
    seen: list[tether.IpcHandshake] = []
    backend, made = make_backend(authorize=recorder(seen))
    with trio.fail_after(TIMEOUT):
        async with session(
            transport, backend, authorization=SECRET, application_id="admission"
        ) as frontend:
            assert await frontend.proxy(Editor).move(1.5) == 1.5
            (opened,) = backend.sessions
            remote = opened.remote
    (handshake,) = seen
    assert handshake.authorization == SECRET
    assert handshake.application_id == "admission"
    assert dict(handshake.channels) == {Editor.channel_name: Editor.version}
    assert len(made) == 1
    if transport.startswith("memory"):
        assert (handshake.transport, handshake.remote, handshake.client) == ("memory", None, None)
        assert dict(handshake.headers) == {}
        assert remote is None
        return
    assert handshake.remote is not None
    host, _, port = handshake.remote.rpartition(":")
    assert (host, handshake.client) == ("127.0.0.1", "127.0.0.1")
    assert int(port) > 0
    assert remote == handshake.remote
    assert all(name == name.lower() for name in handshake.headers)
    if transport != "trio-websocket":  # trio-websocket keeps Host to itself
        assert "host" in handshake.headers
    if transport == "http":
        assert handshake.transport == "http"
        assert handshake.headers["content-type"] == "application/json"
    else:
        assert handshake.transport == "websocket"
        assert handshake.headers["upgrade"].lower() == "websocket"
        # The WebSocket client sends the credential as the upgrade's header too.
        assert handshake.headers["authorization"] == SECRET
    # Headers may hold the credential: the repr shows none of them.
    assert SECRET not in repr(handshake)
    assert "content-type" not in repr(handshake)


@pytest.mark.parametrize("transport", NETWORK)
async def test_the_authorization_header_serves_when_the_hello_has_none(transport: str) -> None:
    seen: list[tether.IpcHandshake] = []
    backend, _ = make_backend(authorize=recorder(seen))
    with trio.fail_after(TIMEOUT):
        async with serving(transport, backend) as url:
            if transport == "http":
                async with httpx.AsyncClient(base_url=url) as client:
                    for body in (hello(), hello("Bearer from-the-hello")):
                        response = await client.post(
                            "/ipc",
                            content=body,
                            headers={"Authorization": SECRET, "Content-Type": "application/json"},
                        )
                        assert response.status_code == 200, response.text
            else:
                async with websocket.connect_ipc(
                    url, channels=[Editor], headers={"Authorization": SECRET}
                ) as frontend:
                    assert await frontend.proxy(Editor).move(2.0) == 2.0
    assert seen[0].authorization == SECRET
    if transport == "http":  # both present: the hello's wins
        assert seen[1].authorization == "Bearer from-the-hello"


# -- statuses, per transport ---------------------------------------------------------------

#: case -> (backend options, credential sent, error code, status, WebSocket close code)
REFUSALS: dict[str, tuple[dict[str, Any], str | None, str, int, int]] = {
    "unauthorized": (
        {"authorize": lambda handshake: handshake.authorization == SECRET},
        None,
        "unauthorized",
        401,
        1008,
    ),
    "per-client": ({"max_sessions_per_client": 1}, SECRET, "too-many-requests", 429, 1013),
    "full": (
        {"max_sessions": 1, "max_sessions_per_client": None},
        SECRET,
        "unavailable",
        503,
        1013,
    ),
}


@asynccontextmanager
async def first_session_unless_unauthorized(
    case: str, transport: str, url: str
) -> AsyncIterator[None]:
    """The session that fills the client's or the backend's places, for the 429 and 503 cases."""
    if case == "unauthorized":
        yield
        return
    async with connect(transport, url, authorization=SECRET) as first:
        assert await first.proxy(Editor).move(1.0) == 1.0
        yield


@pytest.mark.parametrize("case", list(REFUSALS))
async def test_http_refuses_with_401_429_503_and_their_headers(case: str) -> None:
    options, credential, code, status, _ = REFUSALS[case]
    backend, made = make_backend(**options)
    with trio.fail_after(TIMEOUT):
        async with (
            serving("http", backend) as url,
            first_session_unless_unauthorized(case, "http", url),
        ):
            async with httpx.AsyncClient(base_url=url) as client:
                response = await client.post(
                    "/ipc",
                    content=hello(credential),
                    headers={"Content-Type": "application/json"},
                )
            with pytest.raises(tether.TetherError) as caught:
                async with http.connect_ipc(url, channels=[Editor], authorization=credential):
                    pass  # pragma: no cover - the connect must fail
            assert len(backend.sessions) == (0 if case == "unauthorized" else 1)
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert (error["code"], error["status"]) == (code, status)
    if status == 401:
        assert response.headers["www-authenticate"] == "Bearer"
        assert isinstance(caught.value, tether.Unauthorized)
    else:
        assert response.headers["retry-after"] == "1"
        assert isinstance(caught.value, tether.Unavailable)
        assert caught.value.overloaded is (status == 429)
    assert (caught.value.code, caught.value.status) == (code, status)
    assert len(made) == (0 if case == "unauthorized" else 1)
    assert leftovers(backend) == ((), 0, {})


@asynccontextmanager
async def raw_websocket(url: str) -> AsyncIterator[trio_websocket.WebSocketConnection]:
    """trio-websocket's own client, on a TCP stream this test closes (trio-websocket
    leaves the socket open when the server closes first)."""
    parts = urlsplit(url)
    assert parts.hostname is not None
    assert parts.port is not None
    tcp = await trio.open_tcp_stream(parts.hostname, parts.port)
    try:
        async with trio.open_nursery() as nursery:
            ws = await trio_websocket.wrap_client_stream(
                nursery, tcp, parts.hostname, parts.path or "/"
            )
            try:
                yield ws
            finally:
                await ws.aclose()
    finally:
        await trio.aclose_forcefully(tcp)


@pytest.mark.parametrize("variant", ["trio-websocket", "hypercorn-websocket"])
@pytest.mark.parametrize("case", list(REFUSALS))
async def test_websocket_refuses_with_an_error_then_a_close_that_says_why(
    variant: str, case: str
) -> None:
    options, credential, code, status, close_code = REFUSALS[case]
    backend, made = make_backend(**options)
    with trio.fail_after(TIMEOUT):
        async with (
            serving(variant, backend) as url,
            first_session_unless_unauthorized(case, variant, url),
        ):
            async with raw_websocket(url) as ws:
                await ws.send_message(hello(credential).decode())
                refusal = decode(await ws.get_message())
                with pytest.raises(trio_websocket.ConnectionClosed) as closed:
                    await ws.get_message()
            with pytest.raises(tether.TetherError) as caught:
                async with websocket.connect_ipc(url, channels=[Editor], authorization=credential):
                    pass  # pragma: no cover - the connect must fail
    assert isinstance(refusal, Error)
    assert refusal.id is None
    assert (refusal.error.code, refusal.error.status) == (code, status)
    reason = closed.value.reason
    assert reason.code == close_code
    assert reason.reason == refusal.error.message
    assert isinstance(caught.value, tether.Unauthorized if status == 401 else tether.Unavailable)
    assert (caught.value.code, caught.value.status) == (code, status)
    assert len(made) == (0 if case == "unauthorized" else 1)
    assert leftovers(backend) == ((), 0, {})


# -- a refusal leaves nothing behind ----------------------------------------------------------


@asynccontextmanager
async def served_app(app: http.HttpApp) -> AsyncIterator[str]:
    """Serve `app` on real hypercorn (its Trio worker) on 127.0.0.1; yield the IPC base URL."""
    config = hypercorn.config.Config()
    config.bind = ["127.0.0.1:0"]
    config.accesslog = None
    async with open_service_nursery() as nursery:
        binds = await nursery.start(functools.partial(hypercorn.trio.serve, app, config))
        yield binds[0] + app.prefix
        nursery.cancel_scope.cancel()


async def test_a_refused_http_session_leaves_no_task_no_session_and_no_handler() -> None:
    backend, made = make_backend(authorize=lambda handshake: False)
    app = http.HttpApp(None, ipc=backend)
    with trio.fail_after(TIMEOUT):
        async with served_app(app) as url:
            async with httpx.AsyncClient(base_url=url) as client:
                response = await client.post(
                    "/ipc", content=hello(SECRET), headers={"Content-Type": "application/json"}
                )
            await trio.testing.wait_all_tasks_blocked()
            assert app._nursery is not None
            assert app._nursery.child_tasks == frozenset()  # the session task has ended
            assert app._ipc is not None
            assert app._ipc._sessions == {}
    assert response.status_code == 401
    assert made == []
    assert leftovers(backend) == ((), 0, {})


@pytest.mark.parametrize("transport", ["memory", "memory-thread", "trio-websocket"])
async def test_a_refused_session_leaves_no_task_behind(transport: str) -> None:
    backend, made = make_backend(authorize=lambda handshake: False)
    with trio.fail_after(TIMEOUT):
        if transport.startswith("memory"):
            before = task_count()
            with pytest.raises(tether.Unauthorized):
                async with session(transport, backend, authorization=SECRET):
                    pass  # pragma: no cover - the connect must fail
            await trio.testing.wait_all_tasks_blocked()
            after = task_count()
        else:
            async with serving(transport, backend) as url:
                await trio.testing.wait_all_tasks_blocked()
                before = task_count()
                with pytest.raises(tether.Unauthorized):
                    async with connect(transport, url, authorization=SECRET):
                        pass  # pragma: no cover - the connect must fail
                await trio.testing.wait_all_tasks_blocked(0.05)
                after = task_count()
    assert after == before
    assert made == []
    assert leftovers(backend) == ((), 0, {})


# -- the per-client cap, below the transports -----------------------------------------------


@asynccontextmanager
async def raw_session(
    backend: tether.BackendIpc, remote: str | None, **facts: Any
) -> AsyncIterator[MessageStream]:
    """A frontend's end of a stream served by `serve_ipc_session`, told `remote`."""
    client, server = memory.stream_pair()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(
            functools.partial(serve_ipc_session, backend, server, remote=remote, **facts)
        )
        try:
            yield client
        finally:
            await client.aclose()


async def opens(stream: MessageStream, authorization: str | None = None) -> str:
    """Send a hello; return "welcome" or the refusal's error code."""
    await stream.send_message(hello(authorization))
    reply = decode(await stream.receive_message())
    if isinstance(reply, Welcome):
        return "welcome"
    assert isinstance(reply, Error), reply
    return reply.error.code


async def test_max_sessions_per_client_counts_each_remote_host_apart() -> None:
    backend, _ = make_backend(max_sessions_per_client=2)
    with trio.fail_after(TIMEOUT):
        async with (
            raw_session(backend, "10.0.0.1:4001") as a1,
            raw_session(backend, "10.0.0.1:4002") as a2,
            raw_session(backend, "10.0.0.1:4003") as a3,
            raw_session(backend, "10.0.0.2:4001") as b1,
            raw_session(backend, "[::1]:4001") as c1,
            raw_session(backend, "::1:4002") as c2,
            raw_session(backend, "[::1]:4003") as c3,
        ):
            assert [await opens(s) for s in (a1, a2, a3)] == [
                "welcome",
                "welcome",
                "too-many-requests",
            ]
            assert await opens(b1) == "welcome"  # another host has its own places
            # An IPv6 host, written either way, is one client.
            assert [await opens(s) for s in (c1, c2, c3)] == [
                "welcome",
                "welcome",
                "too-many-requests",
            ]
            assert backend._per_client == {"10.0.0.1": 2, "10.0.0.2": 1, "::1": 2}
            await a1.aclose()
            await trio.testing.wait_all_tasks_blocked()
            # A place given back is the client's again.
            async with raw_session(backend, "10.0.0.1:4004") as a4:
                assert await opens(a4) == "welcome"
    assert leftovers(backend) == ((), 0, {})


async def test_in_process_sessions_have_no_client_and_no_per_client_cap() -> None:
    backend, _ = make_backend(max_sessions_per_client=1)
    with trio.fail_after(TIMEOUT):
        async with memory.connect_ipc(backend) as one, memory.connect_ipc(backend) as two:
            assert one.is_valid
            assert two.is_valid
            assert len(backend.sessions) == 2
            assert backend._per_client == {}


async def test_the_per_client_cap_applies_with_a_hook_too_after_it() -> None:
    seen: list[tether.IpcHandshake] = []
    backend, made = make_backend(authorize=recorder(seen), max_sessions_per_client=1)
    with trio.fail_after(TIMEOUT):
        async with (
            raw_session(backend, "10.0.0.1:1") as first,
            raw_session(backend, "10.0.0.1:2") as second,
        ):
            assert await opens(first, SECRET) == "welcome"
            assert await opens(second, SECRET) == "too-many-requests"
    assert len(seen) == 2  # the hook ran first: an unauthorized client learns no more than 401
    assert len(made) == 1


async def test_an_unauthorized_frontend_learns_nothing_of_what_is_served() -> None:
    backend, _ = make_backend(authorize=lambda handshake: False, max_sessions=1)
    with trio.fail_after(TIMEOUT):
        async with raw_session(backend, None) as stream:
            await stream.send_message(
                encode(Hello(PROTOCOL_VERSION, channels={"nobody.serves": "1.0.0"}, mode="ipc"))
            )
            reply = decode(await stream.receive_message())
            with pytest.raises(tether.ConnectionClosed) as closed:
                await stream.receive_message()
    assert isinstance(reply, Error)
    assert reply.error.code == "unauthorized"  # not not-found
    assert closed.value.reason == reply.error.message


async def test_a_hook_that_does_not_answer_is_cut_off_with_503(
    autojump_clock: trio.abc.Clock,
) -> None:
    cancelled: list[bool] = []

    async def authorize(handshake: tether.IpcHandshake) -> bool:
        try:
            await trio.sleep_forever()
        finally:
            cancelled.append(True)

    backend, made = make_backend(authorize=authorize)
    with trio.fail_after(60):  # the clock jumps: a minute of Trio time, no real wait
        start = trio.current_time()
        with pytest.raises(tether.Unavailable, match="did not answer within 10 s") as caught:
            async with memory.connect_ipc(backend, channels=[Editor], authorization=SECRET):
                pass  # pragma: no cover - the connect must fail
        assert trio.current_time() - start == pytest.approx(10.0)
    assert (caught.value.code, caught.value.status) == ("unavailable", 503)
    assert cancelled == [True]
    assert made == []
    assert leftovers(backend) == ((), 0, {})


def test_the_defaults_and_the_checks_of_the_new_options() -> None:
    backend = tether.BackendIpc()
    assert backend.max_sessions_per_client == DEFAULT_MAX_SESSIONS_PER_CLIENT == 64
    assert backend.authorize is None
    assert tether.BackendIpc(max_sessions_per_client=None).max_sessions_per_client is None
    for bad in (0, -1, 1.5, True):
        with pytest.raises(ValueError, match="max_sessions_per_client must be a positive int"):
            tether.BackendIpc(max_sessions_per_client=bad)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="authorize must be a function"):
        tether.BackendIpc(authorize="yes")  # type: ignore[arg-type]
    assert backend.authorize_timeout == 10.0
    for bad_timeout in (0, -1.0, True, "10"):
        with pytest.raises(ValueError, match="authorize_timeout must be a positive number"):
            tether.BackendIpc(authorize_timeout=bad_timeout)  # type: ignore[arg-type]


def test_the_hello_carries_the_credential_and_shows_it_nowhere() -> None:
    message = Hello(PROTOCOL_VERSION, mode="ipc", authorization=SECRET)
    assert SECRET not in repr(message)
    wire = json.loads(encode(message))
    assert wire["authorization"] == SECRET
    assert decode(encode(message)) == message
    assert "authorization" not in json.loads(encode(Hello(PROTOCOL_VERSION, mode="ipc")))
    bad = {**wire, "authorization": 42}
    with pytest.raises(tether.InvalidRequest, match="'authorization' must be a string, got int"):
        decode(json.dumps(bad))
    handshake = tether.IpcHandshake(
        authorization=SECRET,
        application_id=None,
        application_version=None,
        channels={},
        transport="memory",
        remote=None,
        headers={"authorization": SECRET, "cookie": "id=1"},
    )
    assert SECRET not in repr(handshake)
    assert "id=1" not in repr(handshake)
