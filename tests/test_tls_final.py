"""A TLS certificate failure is final: raised at once, never retried, saying why.

No retry can fix an untrusted server certificate or a refused client
certificate: the same certificates meet again. Each test makes a backend
change its certificate (stopped, then started again on the same port with
another CA's certificate, or asking for a client certificate) and checks that
calls, reconnects, IPC resumes and groups stop at once (within 1 s, under a
`fail_after(3)`), where the default RetryPolicy used to try for about 11 s.

Certificates are made at test time by `trustme`; every server listens on
127.0.0.1 and is stopped by its test.
"""

from __future__ import annotations

import ssl
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import pytest
import trio
import trustme

from tests.test_tls import Echo, backend_ipc, client_context, echo_manager, server_context
from tether import ConnectError, ConnectionState
from tether.testing import ConformanceIpc, FaultyProxy
from tether.transports import http, websocket


@pytest.fixture
def authority() -> trustme.CA:
    return trustme.CA()


#: Where the old code retried for ~11 s; the new one answers within 1 s.
CAP = 3.0
QUICK = 1.0
TIMEOUT = 20.0


class Server:
    """One TLS backend (HTTP or WebSocket) that a test restarts on its port with another context."""

    def __init__(self, nursery: trio.Nursery, kind: str) -> None:
        self.nursery = nursery
        self.kind = kind
        self.port = 0
        self.url = ""
        self.scope = trio.CancelScope()
        self.stopped = trio.Event()

    async def start(self, context: ssl.SSLContext) -> None:
        self.scope = trio.CancelScope()
        self.stopped = trio.Event()
        url: str = await self.nursery.start(self._run, context)
        self.url = url
        self.port = int(url.split(":")[2].split("/")[0])

    async def _run(self, context: ssl.SSLContext, task_status: trio.TaskStatus[str]) -> None:
        serve: Any = http.serve if self.kind == "http" else websocket.serve
        try:
            with self.scope:
                await serve(
                    echo_manager(),
                    "127.0.0.1",
                    self.port,
                    ipc=backend_ipc(),
                    ssl_context=context,
                    task_status=task_status,
                )
        finally:
            self.stopped.set()

    async def restart(self, context: ssl.SSLContext) -> None:
        self.scope.cancel()
        await self.stopped.wait()
        await self.start(context)


@asynccontextmanager
async def servers(
    kind: str, context: ssl.SSLContext, count: int = 1
) -> AsyncIterator[list[Server]]:
    async with trio.open_nursery() as nursery:
        started = [Server(nursery, kind) for _ in range(count)]
        for server in started:
            await server.start(context)
        yield started
        nursery.cancel_scope.cancel()


def connect(kind: str, url: Any, context: ssl.SSLContext) -> Any:
    # The default RetryPolicy: what a user gets.
    return (http.connect if kind == "http" else websocket.connect)(
        url, interfaces=[Echo], ssl_context=context
    )


def changed_context(kind_of_change: str, authority: trustme.CA) -> ssl.SSLContext:
    if kind_of_change == "untrusted":
        return server_context(trustme.CA())  # another CA: the client trusts only `authority`
    if kind_of_change == "other-host":
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        authority.issue_cert("backend.example").configure_cert(context)
        return context
    return server_context(authority, mutual=True)  # asks for a client certificate


REASONS = {
    "untrusted": "certificate not trusted",
    "other-host": "certificate not trusted",
    "client-certificate": "client certificate refused",
}


@pytest.mark.parametrize("kind", ["http", "ws"])
@pytest.mark.parametrize("change", ["untrusted", "other-host", "client-certificate"])
async def test_a_call_meeting_a_certificate_failure_fails_at_once(
    kind: str, change: str, authority: trustme.CA
) -> None:
    with trio.fail_after(TIMEOUT):
        async with (
            servers(kind, server_context(authority)) as [server],
            connect(kind, server.url, client_context(authority)) as backend,
        ):
            echo = backend.get_client(Echo)
            assert await echo.echo("before") == "before"
            await server.restart(changed_context(change, authority))
            began = trio.current_time()
            with trio.fail_after(CAP), pytest.raises(ConnectError) as raised:
                await echo.echo("after")
            assert trio.current_time() - began < QUICK
    assert raised.value.reason == REASONS[change]
    if kind == "ws":
        assert backend.state is ConnectionState.CLOSED


@pytest.mark.parametrize("kind", ["http", "ws"])
async def test_an_ipc_session_meeting_a_certificate_failure_ends_at_once(
    kind: str, authority: trustme.CA
) -> None:
    # The server keeps the session; its context presents another CA's
    # certificate from now on; a TCP proxy's reset is the blip after which
    # the session's resume meets it.
    context = server_context(authority)
    with trio.fail_after(TIMEOUT):
        async with servers(kind, context) as [server]:
            connect_ipc: Any = http.connect_ipc if kind == "http" else websocket.connect_ipc
            async with FaultyProxy("127.0.0.1", server.port) as proxy:
                url = server.url.replace(f":{server.port}", f":{proxy.port}", 1)
                async with connect_ipc(
                    url, channels=[ConformanceIpc], ssl_context=client_context(authority)
                ) as frontend:
                    assert await frontend.proxy(ConformanceIpc).add(2, 3) == 5
                    trustme.CA().issue_cert("127.0.0.1").configure_cert(context)
                    began = trio.current_time()
                    proxy.cut_all()
                    with trio.fail_after(CAP):
                        state = frontend.state
                        while state is not ConnectionState.CLOSED:
                            state = await frontend.wait_state_change(state)
                    assert trio.current_time() - began < QUICK
                    reason = frontend.closed_reason or ""
                    assert "not trusted" in reason, reason


@pytest.mark.parametrize("kind", ["http", "ws"])
async def test_a_group_member_with_a_bad_certificate_is_taken_out_for_good(
    kind: str, authority: trustme.CA
) -> None:
    with trio.fail_after(TIMEOUT):
        async with (
            servers(kind, server_context(authority)) as [good],
            servers(kind, changed_context("untrusted", authority)) as [bad],
            connect(kind, [good.url, bad.url], client_context(authority)) as group,
        ):
            # Not dialled again and again: out, and the group says why.
            with trio.fail_after(CAP):
                state = group.members[1].state
                while state is not ConnectionState.CLOSED:
                    state = await group.members[1].wait_state_change(state)
            assert "not trusted" in (group.members[1].state_watch.reason or "")
            echo = group.get_client(Echo)
            for _ in range(6):
                assert await echo.echo("hi") == "hi"
            assert group.state is ConnectionState.CONNECTED


@pytest.mark.parametrize("kind", ["http", "ws"])
async def test_a_group_whose_members_all_fail_their_certificates_says_why_at_once(
    kind: str, authority: trustme.CA
) -> None:
    with trio.fail_after(TIMEOUT):
        async with servers(kind, server_context(authority), count=2) as both:
            urls = [server.url for server in both]
            # At connect: every member refused.
            with trio.fail_after(CAP), pytest.raises(ConnectError) as raised:
                async with connect(kind, urls, client_context(trustme.CA())):
                    pytest.fail("connected with no certificate trusted")  # pragma: no cover
            assert raised.value.reason == "certificate not trusted"
            for url in urls:
                assert url in str(raised.value)
            # After connect: each member's certificate changes.
            async with connect(kind, urls, client_context(authority)) as group:
                echo = group.get_client(Echo)
                assert await echo.echo("before") == "before"
                for server in both:
                    await server.restart(changed_context("untrusted", authority))
                began = trio.current_time()
                with trio.fail_after(CAP), pytest.raises(ConnectError) as raised:
                    await echo.echo("after")
                assert trio.current_time() - began < QUICK
    assert raised.value.reason == "certificate not trusted"
    assert "not trusted" in str(raised.value)
