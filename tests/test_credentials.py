"""Credentials per request: a `CredentialProvider` asked for each request, refreshed once on 401.

Real servers throughout: in-process (memory, memory in a thread), a local
socket, hypercorn over HTTP, trio-websocket. The server's `authorize` hook
accepts one token at a time; the provider (a caching one, as
docs/observability.md shows) hands out tokens and counts what it was asked.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import pytest
import trio

import tether
from tests.test_http_credentials import texts_of
from tether.runtime import ConnectError
from tether.runtime._protocol import Call, CallContext
from tether.runtime._util import open_service_nursery
from tether.testing import faulty_streams
from tether.transports import http, local, memory, websocket

TIMEOUT = 10.0
#: Every token carries it: the leak test looks for it everywhere.
SECRET = "Zq9-s3cr3t-credential"
FIRST = f"Bearer first-{SECRET}"
SECOND = f"Bearer second-{SECRET}"
RPC_TRANSPORTS = ["memory", "memory-thread", "local", "http", "websocket", "http-websocket"]
IPC_TRANSPORTS = ["memory", "memory-thread", "local", "http", "websocket"]


class Vault(tether.RpcInterface):
    interface_name = "CredentialsVault"
    interface_version = "1.0.0"

    async def read(self, key: str) -> str: ...

    async def expired_inside(self) -> str: ...

    def count(self, n: int) -> tether.Stream[int]: ...

    async def total(self, values: tether.Stream[int]) -> int: ...


class VaultImpl(Vault):
    runs: list[str]

    async def read(self, key: str) -> str:
        VaultImpl.runs.append(key)
        context = tether.current_context()
        assert context is not None
        # Everything an impl might log about its request: none of it shows the credential.
        logging.getLogger("test.vault").debug("context %r %s", context, context)
        return key

    async def expired_inside(self) -> str:
        VaultImpl.runs.append("inside")
        # An impl refusing mid-way: not the server's authorization step, so not retried.
        raise tether.Unauthorized("the impl's own check refused")

    async def count(self, n: int) -> AsyncIterator[int]:  # type: ignore[override]
        VaultImpl.runs.append(f"count {n}")
        for i in range(n):
            yield i

    async def total(self, values: tether.Stream[int]) -> int:
        VaultImpl.runs.append("total")
        return sum([value async for value in values])


class Editor(tether.IpcInterface):
    channel_name = "credentials.editor"
    version = "1.0.0"

    async def move(self, dx: float) -> float: ...


class TokenServer:
    """Issues tokens, and is what the server's hooks ask: only `accepted` gets in."""

    def __init__(self, accepted: str | None, *, check_handshakes: bool = False) -> None:
        self.accepted = accepted
        self.check_handshakes = check_handshakes
        self.seen: list[str | None] = []
        self.handshakes: list[str | None] = []

    async def authorize(self, context: tether.RequestContext) -> bool:
        self.seen.append(context.authorization)
        return context.authorization is not None and context.authorization == self.accepted

    async def authorize_handshake(self, handshake: Any) -> bool:
        self.handshakes.append(handshake.authorization)
        if not self.check_handshakes:
            return True
        return handshake.authorization is not None and handshake.authorization == self.accepted


class CachingProvider:
    """The docs' caching provider: one token, refreshed at most once per `min_age` s.

    Concurrent refreshes wait on the lock; the ones that come after a fresh
    token was fetched get it without fetching again.
    """

    def __init__(self, tokens: list[str], min_age: float = 60.0) -> None:
        self._tokens = iter(tokens)
        self._token = next(self._tokens)
        self._fetched = -float("inf")
        self._lock = trio.Lock()
        self.min_age = min_age
        self.calls = 0
        self.refreshes = 0

    async def __call__(self, *, refresh: bool) -> str | None:
        self.calls += 1
        if refresh:
            async with self._lock:
                if trio.current_time() - self._fetched >= self.min_age:
                    await trio.lowlevel.checkpoint()  # the identity provider's round trip
                    self._token = next(self._tokens)
                    self._fetched = trio.current_time()
                    self.refreshes += 1
        return self._token


def make_manager(server: TokenServer) -> tether.RpcManager:
    manager = tether.RpcManager(authorize=server.authorize)
    VaultImpl.runs = []
    manager.register_impl(Vault, VaultImpl)
    return manager


@asynccontextmanager
async def rpc_backend(
    transport: str, server: TokenServer, authorization: Any, **options: Any
) -> AsyncIterator[Any]:
    """Serve a Vault whose `authorize` asks `server`; connect with `authorization`."""
    manager = make_manager(server)
    options.update(interfaces=[Vault], authorization=authorization)
    if transport.startswith("memory"):
        async with memory.connect(manager, thread=transport == "memory-thread", **options) as b:
            yield b
        return
    async with open_service_nursery() as nursery:
        if transport == "local":
            path = await nursery.start(functools.partial(local.serve, manager))
            opened: Any = local.connect(path, **options)
        elif transport == "websocket":
            url = await nursery.start(
                functools.partial(websocket.serve, manager, authorize=server.authorize_handshake)
            )
            opened = websocket.connect(url, **options)
        else:
            url = await nursery.start(functools.partial(http.serve, manager, "127.0.0.1", 0))
            if transport == "http":
                opened = http.connect(url, **options)
            else:  # the WebSocket endpoint on the HTTP server's port
                opened = websocket.connect(url.replace("http://", "ws://") + "/ws", **options)
        async with opened as backend:
            yield backend
        nursery.cancel_scope.cancel()


# -- per request ------------------------------------------------------------------


@pytest.mark.parametrize("transport", RPC_TRANSPORTS)
async def test_the_provider_is_asked_for_each_request(transport: str) -> None:
    server = TokenServer(accepted=None)
    given: list[str] = []
    asked: list[bool] = []

    async def provider(*, refresh: bool) -> str:
        asked.append(refresh)
        given.append(f"Bearer n{len(given)}-{SECRET}")
        return given[-1]

    # The hook accepts whatever the request carries: it records them.
    async def accept_all(context: tether.RequestContext) -> bool:
        server.seen.append(context.authorization)
        return True

    server.authorize = accept_all  # type: ignore[method-assign]
    with trio.fail_after(TIMEOUT):
        async with rpc_backend(transport, server, provider) as backend:
            vault = backend.get_client(Vault)
            del asked[:], given[:]  # a WebSocket handshake asked once: not a request
            for i in range(5):
                assert await vault.read(f"k{i}") == f"k{i}"
    assert asked == [False] * 5
    assert len(set(given)) == 5
    assert server.seen == given


@pytest.mark.parametrize("transport", ["memory", "http", "websocket"])
async def test_a_provider_giving_none_forwards_the_current_contexts(transport: str) -> None:
    server = TokenServer(accepted=FIRST)

    async def nothing(*, refresh: bool) -> None:
        return None

    with trio.fail_after(TIMEOUT):
        async with rpc_backend(transport, server, nothing) as backend:
            with tether.activity(authorization=FIRST):
                assert await backend.get_client(Vault).read("k") == "k"
    assert server.seen == [FIRST]


# -- refresh once on 401 ----------------------------------------------------------


@pytest.mark.parametrize("transport", RPC_TRANSPORTS)
async def test_a_refused_request_is_sent_again_once_with_a_refreshed_credential(
    transport: str,
) -> None:
    server = TokenServer(accepted=SECOND)
    provider = CachingProvider([FIRST, SECOND])
    with trio.fail_after(TIMEOUT):
        async with rpc_backend(transport, server, provider) as backend:
            assert await backend.get_client(Vault).read("k") == "k"
    assert server.seen == [FIRST, SECOND]
    assert provider.refreshes == 1
    assert VaultImpl.runs == ["k"]


@pytest.mark.parametrize("transport", ["http", "websocket"])
async def test_a_group_of_backends_refreshes_once_too(transport: str) -> None:
    server = TokenServer(accepted=SECOND, check_handshakes=False)
    provider = CachingProvider([FIRST, SECOND])
    manager = make_manager(server)
    with trio.fail_after(TIMEOUT):
        async with open_service_nursery() as nursery:
            serve: Any = http.serve if transport == "http" else websocket.serve
            urls = [await nursery.start(serve, manager) for _ in range(2)]
            connect: Any = http.connect if transport == "http" else websocket.connect
            async with connect(urls, interfaces=[Vault], authorization=provider) as group:
                assert await group.get_client(Vault).read("k") == "k"
            nursery.cancel_scope.cancel()
    assert server.seen == [FIRST, SECOND]
    assert provider.refreshes == 1


@pytest.mark.parametrize("transport", RPC_TRANSPORTS)
async def test_concurrent_refused_calls_refresh_once(transport: str) -> None:
    server = TokenServer(accepted=FIRST)
    provider = CachingProvider([FIRST, SECOND])
    with trio.fail_after(TIMEOUT):
        async with rpc_backend(transport, server, provider) as backend:
            vault = backend.get_client(Vault)
            server.accepted = SECOND  # FIRST has expired at the server
            results: list[str] = []

            async def read(key: str) -> None:
                results.append(await vault.read(key))

            async with trio.open_nursery() as nursery:
                for i in range(8):
                    nursery.start_soon(read, f"k{i}")
    assert sorted(results) == [f"k{i}" for i in range(8)]
    assert provider.refreshes == 1
    assert server.seen.count(SECOND) == 8
    assert server.seen.count(FIRST) == 8


@pytest.mark.parametrize("transport", RPC_TRANSPORTS)
async def test_a_refresh_that_still_fails_raises_unauthorized_once(transport: str) -> None:
    server = TokenServer(accepted=FIRST)
    provider = CachingProvider([FIRST, SECOND, f"Bearer third-{SECRET}"])
    with trio.fail_after(TIMEOUT):
        async with rpc_backend(transport, server, provider) as backend:
            server.accepted = "Bearer nobody has it"
            server.seen.clear()
            with pytest.raises(tether.Unauthorized) as caught:
                await backend.get_client(Vault).read("k")
    assert caught.value.remote
    assert server.seen == [FIRST, SECOND]  # one retry, no loop
    assert provider.refreshes == 1
    assert VaultImpl.runs == []


@pytest.mark.parametrize("transport", RPC_TRANSPORTS)
async def test_a_refused_stream_call_is_opened_again_once_refreshed(transport: str) -> None:
    server = TokenServer(accepted=SECOND)
    provider = CachingProvider([FIRST, SECOND], min_age=0.0)

    async def source() -> AsyncIterator[int]:
        for i in range(4):
            yield i

    with trio.fail_after(TIMEOUT):
        async with rpc_backend(transport, server, provider) as backend:
            vault = backend.get_client(Vault)
            async with tether.open_stream(vault.count(3)) as items:
                assert [item async for item in items] == [0, 1, 2]
            assert server.seen == [FIRST, SECOND]
            assert provider.refreshes == 1
            server.accepted = f"Bearer third-{SECRET}"
            provider._tokens = iter([server.accepted])
            if transport == "http":
                # The request body (the argument stream) went out with the call: the items
                # read cannot be sent again, so the refusal is the caller's to see.
                with pytest.raises(tether.Unauthorized):
                    await vault.total(source())
                assert provider.refreshes == 1
                return
            # Elsewhere the refusal comes before any argument item was read.
            assert await vault.total(source()) == 6
            assert provider.refreshes == 2
    assert VaultImpl.runs == ["count 3", "total"]


@pytest.mark.parametrize("transport", RPC_TRANSPORTS)
async def test_an_impl_raising_unauthorized_itself_is_not_retried(transport: str) -> None:
    server = TokenServer(accepted=FIRST)
    provider = CachingProvider([FIRST, SECOND])
    with trio.fail_after(TIMEOUT):
        async with rpc_backend(transport, server, provider) as backend:
            with pytest.raises(tether.Unauthorized, match="impl's own check"):
                await backend.get_client(Vault).expired_inside()
    assert VaultImpl.runs == ["inside"]  # it ran once: nothing says it may run again
    assert provider.refreshes == 0


@pytest.mark.parametrize("transport", ["memory", "http", "websocket"])
async def test_a_fixed_credential_is_not_retried(transport: str) -> None:
    server = TokenServer(accepted=SECOND)
    with trio.fail_after(TIMEOUT):
        async with rpc_backend(transport, server, FIRST) as backend:
            with pytest.raises(tether.Unauthorized):
                await backend.get_client(Vault).read("k")
    assert server.seen == [FIRST]


async def test_a_websocket_handshake_refused_is_tried_once_more_refreshed() -> None:
    server = TokenServer(accepted=SECOND, check_handshakes=True)
    provider = CachingProvider([FIRST, SECOND])
    with trio.fail_after(TIMEOUT):
        async with rpc_backend("websocket", server, provider) as backend:
            assert server.handshakes == [FIRST, SECOND]
            assert await backend.get_client(Vault).read("k") == "k"
    assert server.seen == [SECOND]  # the call carried the refreshed one too
    assert provider.refreshes == 1


@pytest.mark.parametrize("transport", ["websocket", "http-websocket"])
async def test_a_websocket_reconnect_asks_the_provider_and_refreshes_a_refused_handshake(
    transport: str,
) -> None:
    server = TokenServer(accepted=FIRST, check_handshakes=True)
    provider = CachingProvider([FIRST, SECOND])
    quick = tether.RetryPolicy(attempts=20, initial_backoff=0.01, max_backoff=0.05)
    with trio.fail_after(TIMEOUT), faulty_streams() as faults:
        async with rpc_backend(transport, server, provider, retry=quick) as backend:
            vault = backend.get_client(Vault)
            assert await vault.read("before") == "before"
            asked = provider.calls
            server.accepted = SECOND  # the token rotated while the socket was up
            faults.latest.cut()
            await faults.wait_opened(2)
            while backend.state is not tether.ConnectionState.CONNECTED:
                await backend.wait_state_change(backend.state)
            assert await vault.read("after") == "after"
    if transport == "websocket":  # websocket.serve's hook sees each handshake
        assert server.handshakes == [FIRST, FIRST, SECOND]
    assert provider.calls > asked  # asked again at the reconnect, not only per call
    assert provider.refreshes == 1
    assert server.seen[-1] == SECOND


async def test_a_websocket_handshake_refused_after_the_refresh_fails_once() -> None:
    server = TokenServer(accepted="Bearer nobody has it", check_handshakes=True)
    provider = CachingProvider([FIRST, SECOND])
    with trio.fail_after(TIMEOUT):
        with pytest.raises(ConnectError) as caught:
            async with rpc_backend("websocket", server, provider):
                pass  # pragma: no cover - the handshake is refused
    assert caught.value.status_code == 401
    assert server.handshakes == [FIRST, SECOND]
    assert provider.refreshes == 1
    assert [text for text in texts_of(caught.value) if SECRET in text] == []


async def test_the_provider_must_give_a_str_or_none() -> None:
    server = TokenServer(accepted=FIRST)

    async def wrong(*, refresh: bool) -> Any:
        return b"bytes"

    with trio.fail_after(TIMEOUT):
        async with rpc_backend("memory", server, wrong) as backend:
            with pytest.raises(TypeError, match="returned a bytes"):
                await backend.get_client(Vault).read("k")


async def test_authorization_must_be_a_str_none_or_a_provider() -> None:
    with pytest.raises(TypeError, match="got a int") as caught:
        async with memory.connect(tether.RpcManager(), interfaces=[], authorization=42):  # type: ignore[arg-type]
            pass  # pragma: no cover
    assert "42" not in str(caught.value)


# -- IPC: the session's credential at the opening ----------------------------------


@asynccontextmanager
async def ipc_session(
    transport: str, backend: tether.BackendIpc, authorization: Any
) -> AsyncIterator[tether.FrontendIpc]:
    options: dict[str, Any] = {"channels": [Editor], "authorization": authorization}
    if transport.startswith("memory"):
        thread = transport == "memory-thread"
        async with memory.connect_ipc(backend, thread=thread, **options) as frontend:
            yield frontend
        return
    async with open_service_nursery() as nursery:
        if transport == "local":
            path = await nursery.start(functools.partial(local.serve, None, ipc=backend))
            opened: Any = local.connect_ipc(path, **options)
        elif transport == "websocket":
            url = await nursery.start(functools.partial(websocket.serve, None, ipc=backend))
            opened = websocket.connect_ipc(url, **options)
        else:
            url = await nursery.start(
                functools.partial(http.serve, None, "127.0.0.1", 0, ipc=backend)
            )
            opened = http.connect_ipc(url, **options)
        async with opened as frontend:
            yield frontend
        nursery.cancel_scope.cancel()


def make_ipc_backend(seen: list[str | None]) -> tether.BackendIpc:
    class EditorHandler(tether.IpcHandler, Editor):
        async def move(self, dx: float) -> float:
            return dx

    async def authorize(handshake: tether.IpcHandshake) -> bool:
        seen.append(handshake.authorization)
        return handshake.authorization == FIRST

    backend = tether.BackendIpc(authorize=authorize)
    backend.register(EditorHandler)
    return backend


@pytest.mark.parametrize("transport", IPC_TRANSPORTS)
async def test_an_ipc_session_opens_with_the_providers_credential(transport: str) -> None:
    seen: list[str | None] = []
    provider = CachingProvider([FIRST, SECOND])
    with trio.fail_after(TIMEOUT):
        async with ipc_session(transport, make_ipc_backend(seen), provider) as frontend:
            assert await frontend.proxy(Editor).move(1.5) == 1.5
    assert seen == [FIRST]
    assert provider.refreshes == 0


async def test_a_resumed_ipc_session_asks_the_provider_again() -> None:
    seen: list[str | None] = []
    server = TokenServer(accepted=FIRST, check_handshakes=True)
    backend = make_ipc_backend(seen)
    provider = CachingProvider([FIRST, SECOND])
    quick = tether.RetryPolicy(attempts=20, initial_backoff=0.01, max_backoff=0.05)
    with trio.fail_after(TIMEOUT), faulty_streams() as faults:
        async with open_service_nursery() as nursery:
            url = await nursery.start(
                functools.partial(
                    websocket.serve, None, ipc=backend, authorize=server.authorize_handshake
                )
            )
            async with websocket.connect_ipc(
                url, channels=[Editor], authorization=provider, retry=quick
            ) as frontend:
                editor = frontend.proxy(Editor)
                assert await editor.move(1.0) == 1.0
                asked = provider.calls
                server.accepted = SECOND  # rotated: the resuming handshake must carry SECOND
                faults.latest.cut()
                await faults.wait_opened(2)  # resumed (after FIRST was refused, with SECOND)
                assert await editor.move(2.0) == 2.0
                sessions = list(backend.sessions)
            nursery.cancel_scope.cancel()
    assert len(sessions) == 1  # the same session, resumed
    assert seen == [FIRST]  # the IPC hook ran once: a resume is not a new session
    assert server.handshakes == [FIRST, FIRST, SECOND]
    assert provider.calls > asked
    assert provider.refreshes == 1


# -- never leaked -------------------------------------------------------------------


def texts_of_records(records: list[logging.LogRecord]) -> list[str]:
    formatter = logging.Formatter("%(name)s %(levelname)s %(message)s %(args)s")
    texts = []
    for record in records:
        texts.append(formatter.format(record))
        texts.append(repr(record.__dict__))
    return texts


@pytest.mark.parametrize("transport", RPC_TRANSPORTS)
async def test_the_credential_is_never_shown(
    transport: str, caplog: pytest.LogCaptureFixture
) -> None:
    """Succeeding, refused then refreshed, failing after the refresh: the secret shows nowhere."""
    caplog.set_level(logging.DEBUG)  # every logger, tether's and hypercorn's included
    texts: list[str] = []
    server = TokenServer(accepted=FIRST)
    provider = CachingProvider([FIRST, SECOND, f"Bearer third-{SECRET}"], min_age=0.0)
    with trio.fail_after(TIMEOUT):
        async with rpc_backend(transport, server, provider) as backend:
            vault = backend.get_client(Vault)
            texts += [repr(backend), str(backend), repr(vault), repr(backend.options)]
            texts += [repr(getattr(backend, "statistics", lambda: None)())]
            assert await vault.read("ok") == "ok"  # succeeds
            server.accepted = SECOND
            assert await vault.read("refreshed") == "refreshed"  # 401, refresh, success
            server.accepted = "Bearer nobody has it"
            with pytest.raises(tether.Unauthorized) as caught:
                await vault.read("refused")  # 401, refresh, 401
            texts += texts_of(caught.value)
            with tether.activity(authorization=SECOND) as context:
                texts += [repr(context), str(context)]
            call_context = CallContext("activity", "session", None, None, SECOND)
            texts += [repr(call_context), str(call_context)]
            texts += [repr(Call(1, "i", "1.0.0", "op", [], call_context))]
    assert provider.refreshes == 2
    texts += texts_of_records(caplog.records)
    assert caplog.records  # something was logged: the capture worked
    leaked = [text for text in texts if SECRET in text]
    assert leaked == []


@pytest.mark.parametrize("transport", IPC_TRANSPORTS)
async def test_the_ipc_credential_is_never_shown(
    transport: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    texts: list[str] = []
    seen: list[str | None] = []
    backend = make_ipc_backend(seen)
    with trio.fail_after(TIMEOUT):
        async with ipc_session(transport, backend, CachingProvider([FIRST])) as frontend:
            texts += [repr(frontend), repr(frontend.proxy(Editor))]
            texts += [repr(session) for session in backend.sessions]
        with pytest.raises(tether.Unauthorized) as caught:
            async with ipc_session(transport, backend, CachingProvider([SECOND])):
                pass  # pragma: no cover - refused
        texts += texts_of(caught.value)
    texts += texts_of_records(caplog.records)
    assert seen == [FIRST, SECOND]
    assert [text for text in texts if SECRET in text] == []
