"""What a TLS failure says: each cause named, with the advice that fits it.

Certificates are made at test time by `trustme`; every server listens on
127.0.0.1, port 0, and is stopped by its test.
"""

from __future__ import annotations

import datetime
import ssl

import pytest
import trio
import trustme

from tests.test_tls import client_context, echo_client, echo_manager, serving
from tether import ConnectError
from tether.runtime._util import open_service_nursery
from tether.transports import http, websocket

TIMEOUT = 15.0


def context_for(
    authority: trustme.CA, name: str, not_after: datetime.datetime | None = None
) -> ssl.SSLContext:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    authority.issue_cert(name, not_after=not_after).configure_cert(context)
    return context


async def refusal(url: str, context: ssl.SSLContext) -> str:
    with trio.fail_after(TIMEOUT), pytest.raises(ConnectError) as caught:
        async with echo_client(url, context) as echo:
            await echo.echo("x")
    return str(caught.value)


@pytest.mark.parametrize("kind", ["http", "ws"])
async def test_an_expired_certificate_is_said_to_be_expired(kind: str) -> None:
    authority = trustme.CA()
    past = datetime.datetime(2020, 1, 1, tzinfo=datetime.UTC)
    async with serving(kind, context_for(authority, "127.0.0.1", not_after=past)) as url:
        said = await refusal(url, client_context(authority))
    assert "certificate has expired" in said
    assert "trusts the CA" not in said  # the CA is trusted: that advice would mislead
    assert "renew" in said


@pytest.mark.parametrize("kind", ["http", "ws"])
async def test_a_certificate_for_another_name_is_said_to_be_for_another_name(kind: str) -> None:
    authority = trustme.CA()
    async with serving(kind, context_for(authority, "other.example")) as url:
        said = await refusal(url, client_context(authority))
    assert "not valid for '127.0.0.1'" in said
    assert "trusts the CA" not in said
    assert "name" in said


@pytest.mark.parametrize("kind", ["http", "ws"])
async def test_a_tls_client_of_a_plain_server_is_told_it_does_not_speak_tls(kind: str) -> None:
    async with open_service_nursery() as nursery:
        with trio.fail_after(TIMEOUT):
            if kind == "http":
                url = (await nursery.start(http.serve, echo_manager())).replace("http:", "https:")
            else:
                url = (await nursery.start(websocket.serve, echo_manager())).replace("ws:", "wss:")
        said = await refusal(url, client_context(trustme.CA()))
        nursery.cancel_scope.cancel()
    assert "does not speak TLS" in said
    assert ("http://" if kind == "http" else "ws://") in said
