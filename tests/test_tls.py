"""TLS on every client and server: https:// and wss://, trust, and mutual TLS.

Certificates are made at test time by `trustme` (no files checked in); every
server listens on 127.0.0.1, port 0, and is stopped by its test.
"""

from __future__ import annotations

import ssl
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import pytest
import trio
import trustme

import tether
from tether import BackendIpc, ConnectError
from tether.runtime._util import open_service_nursery
from tether.testing import ConformanceIpc, IpcConformance
from tether.transports import http, websocket

TIMEOUT = 15.0


class Echo(tether.RpcInterface):
    interface_name = "tls.Echo"
    interface_version = "1.0.0"

    async def echo(self, text: str) -> str: ...


class EchoImpl(Echo):
    async def echo(self, text: str) -> str:
        return text


def echo_manager() -> tether.RpcManager:
    manager = tether.RpcManager()
    manager.register_impl(Echo, EchoImpl())
    return manager


def backend_ipc() -> BackendIpc:
    return IpcConformance().backend_ipc(None)


@pytest.fixture
def authority() -> trustme.CA:
    return trustme.CA()


def server_context(authority: trustme.CA, *, mutual: bool = False) -> ssl.SSLContext:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    authority.issue_cert("127.0.0.1").configure_cert(context)
    if mutual:
        context.verify_mode = ssl.CERT_REQUIRED
        authority.configure_trust(context)
    return context


def client_context(authority: trustme.CA, *, certificate: bool = False) -> ssl.SSLContext:
    context = ssl.create_default_context()
    authority.configure_trust(context)
    if certificate:
        authority.issue_cert("frontend@example.com").configure_cert(context)
    return context


@asynccontextmanager
async def serving(kind: str, context: ssl.SSLContext, *, ipc: bool = False) -> AsyncIterator[str]:
    """Serve Echo (and IPC) with TLS; yield the URL for `kind`: "http", "ws" (websocket.serve),
    or "http-ws" (http.serve's /ws)."""
    async with open_service_nursery() as nursery:
        backend = backend_ipc() if ipc else None
        if kind == "ws":
            url: str = await nursery.start(
                lambda task_status: websocket.serve(
                    echo_manager(), ipc=backend, ssl_context=context, task_status=task_status
                )
            )
        else:
            url = await nursery.start(
                lambda task_status: http.serve(
                    echo_manager(), ipc=backend, ssl_context=context, task_status=task_status
                )
            )
            if kind == "http-ws":
                url = url.replace("https://", "wss://", 1) + "/ws"
        yield url
        nursery.cancel_scope.cancel()


@asynccontextmanager
async def echo_client(url: str, context: ssl.SSLContext | None) -> AsyncIterator[Echo]:
    if url.startswith("https://"):
        async with http.connect(url, interfaces=[Echo], ssl_context=context, retry=None) as backend:
            yield backend.get_client(Echo)
    else:
        async with websocket.connect(
            url, interfaces=[Echo], ssl_context=context, retry=None
        ) as connection:
            yield connection.get_client(Echo)


KINDS = ["http", "ws", "http-ws"]


# ---------------------------------------------------------------------------
# Calls over TLS


@pytest.mark.parametrize("kind", KINDS)
async def test_rpc_over_tls(kind: str, authority: trustme.CA) -> None:
    with trio.fail_after(TIMEOUT):
        async with serving(kind, server_context(authority)) as url:
            assert url.startswith("https://" if kind == "http" else "wss://")
            async with echo_client(url, client_context(authority)) as echo:
                for text in ("one", "two", "x" * 200_000):
                    assert await echo.echo(text) == text


@pytest.mark.parametrize("kind", KINDS)
async def test_ipc_over_tls(kind: str, authority: trustme.CA) -> None:
    context = client_context(authority)
    with trio.fail_after(TIMEOUT):
        async with serving(kind, server_context(authority), ipc=True) as url:
            if kind == "http":
                opened = http.connect_ipc(url, channels=[ConformanceIpc], ssl_context=context)
            else:
                opened = websocket.connect_ipc(url, channels=[ConformanceIpc], ssl_context=context)
            async with opened as frontend:
                proxy = frontend.proxy(ConformanceIpc)
                assert await proxy.add(2, 3) == 5
                assert await proxy.mirror(b"\x00" * 100_000) == b"\x00" * 100_000


async def test_a_context_given_for_an_http_url_changes_nothing(authority: trustme.CA) -> None:
    with trio.fail_after(TIMEOUT):
        async with open_service_nursery() as nursery:
            url: str = await nursery.start(http.serve, echo_manager())
            assert url.startswith("http://")
            async with http.connect(
                url, interfaces=[Echo], ssl_context=client_context(authority), retry=None
            ) as backend:
                assert await backend.get_client(Echo).echo("plain") == "plain"
            nursery.cancel_scope.cancel()


# ---------------------------------------------------------------------------
# Trust


@pytest.mark.parametrize("kind", KINDS)
async def test_a_server_signed_by_another_ca_is_a_connect_error_that_says_why(
    kind: str, authority: trustme.CA
) -> None:
    stranger = trustme.CA()
    with trio.fail_after(TIMEOUT):
        async with serving(kind, server_context(authority)) as url:
            with pytest.raises(ConnectError) as caught:
                async with echo_client(url, client_context(stranger)):
                    pytest.fail("connected to a server whose certificate is not trusted")
    message = str(caught.value)
    assert "certificate" in message
    assert "not trusted" in message
    assert "127.0.0.1" in message
    assert caught.value.reason == "certificate not trusted"
    assert not isinstance(caught.value, ssl.SSLError)


@pytest.mark.parametrize("kind", ["http", "ws"])
async def test_without_a_context_the_system_trust_store_is_used(
    kind: str, authority: trustme.CA
) -> None:
    # The test CA is in no system store: the default context refuses it.
    with trio.fail_after(TIMEOUT):
        async with serving(kind, server_context(authority)) as url:
            with pytest.raises(ConnectError, match="not trusted"):
                async with echo_client(url, None):
                    pytest.fail("the default context trusted a test CA")


async def test_ssl_context_must_be_an_ssl_context() -> None:
    with pytest.raises(TypeError, match=r"ssl\.SSLContext"):
        async with http.connect(
            "https://127.0.0.1:1/rpc",
            interfaces=[Echo],
            ssl_context="ca.pem",  # type: ignore[arg-type]
        ):
            pytest.fail("connected with a str for a context")


# ---------------------------------------------------------------------------
# Mutual TLS


@pytest.mark.parametrize("kind", KINDS)
async def test_mutual_tls_refuses_a_client_without_a_certificate(
    kind: str, authority: trustme.CA
) -> None:
    with trio.fail_after(TIMEOUT):
        async with serving(kind, server_context(authority, mutual=True)) as url:
            with pytest.raises(ConnectError) as caught:
                async with echo_client(url, client_context(authority)):
                    pytest.fail("a client without a certificate got through mutual TLS")
    assert "certificate" in str(caught.value)
    assert caught.value.reason == "client certificate refused"


@pytest.mark.parametrize("kind", KINDS)
async def test_mutual_tls_refuses_a_client_certificate_from_another_ca(
    kind: str, authority: trustme.CA
) -> None:
    context = client_context(authority)
    trustme.CA().issue_cert("stranger@example.com").configure_cert(context)
    with trio.fail_after(TIMEOUT):
        async with serving(kind, server_context(authority, mutual=True)) as url:
            with pytest.raises(ConnectError) as caught:
                async with echo_client(url, context):
                    pytest.fail("a client certificate from another CA got through mutual TLS")
    assert "refused this client's TLS certificate" in str(caught.value)
    assert caught.value.reason == "client certificate refused"


@pytest.mark.parametrize("kind", KINDS)
async def test_mutual_tls_accepts_a_client_with_a_certificate(
    kind: str, authority: trustme.CA
) -> None:
    with trio.fail_after(TIMEOUT):
        async with (
            serving(kind, server_context(authority, mutual=True)) as url,
            echo_client(url, client_context(authority, certificate=True)) as echo,
        ):
            assert await echo.echo("mutual") == "mutual"
