"""The command line's client side: plain HTTP requests and a raw WebSocket session.

The CLI speaks the documented wire (docs/http.md, docs/websocket.md) itself,
with the standard library's `urllib` over HTTP and trio-websocket over
WebSocket, so that what it shows is exactly what the server answers.
"""

from __future__ import annotations

import contextlib
import functools
import json
import math
import ssl
import urllib.error
import urllib.request
from collections.abc import AsyncIterator, Sequence
from typing import Any
from urllib.parse import urlsplit

import trio
import trio_websocket

from ..transports._tls import tls_connect_error
from ._common import CliError

__all__ = [
    "DEADLINE_EXIT",
    "MAX_ANSWER_BYTES",
    "TRANSPORT_EXIT",
    "HttpAnswer",
    "http_request",
    "tls_failure",
    "ws_next",
    "ws_session",
]

#: The exit code of a transport failure (cannot connect, closed).
TRANSPORT_EXIT = 9
#: The exit code of a wait past `--timeout`.
DEADLINE_EXIT = 8
#: The most the command reads of one HTTP answer (a description, a result):
#: a server that sends more, or never stops, is refused rather than filling memory.
MAX_ANSWER_BYTES = 64 * 1024 * 1024


class HttpAnswer:
    """An HTTP response: status, headers (lower-case names), body."""

    def __init__(self, status: int, headers: dict[str, str], body: bytes) -> None:
        self.status = status
        self.headers = headers
        self.body = body

    def json(self, what: str) -> Any:
        try:
            return json.loads(self.body)
        except (ValueError, RecursionError):  # RecursionError: nested past Python's limit
            raise CliError(
                f"{what} answered HTTP {self.status} with a body that is not JSON: "
                "is this a tether endpoint?",
                TRANSPORT_EXIT,
            ) from None


def http_request(
    method: str,
    url: str,
    *,
    headers: Sequence[tuple[str, str]] = (),
    body: bytes | None = None,
    timeout: float | None = None,
) -> HttpAnswer:
    """Send one request; an HTTP error status is an answer, not an exception.

    `timeout` bounds the whole exchange (connect, TLS handshake, and an answer
    that trickles in), not each read; redirects are not followed.

    Raises:
        CliError: the server cannot be reached, redirects, or answers more
            than `MAX_ANSWER_BYTES` (exit 9), or did not answer within
            `timeout` seconds (exit 8).
    """
    exchange = functools.partial(_exchange, method, url, headers, body, timeout)

    async def bounded() -> HttpAnswer:
        with trio.move_on_after(math.inf if timeout is None else timeout):
            # urllib's timeout is per read; the thread is abandoned past the deadline
            # (trio's worker threads are daemons: it cannot keep the command alive).
            return await trio.to_thread.run_sync(exchange, abandon_on_cancel=True)
        raise CliError(f"no answer from {url} within {timeout} s", DEADLINE_EXIT)

    return trio.run(bounded)


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    """Refuses every redirect: following one would send the call and its
    headers (an `Authorization`) to wherever the server says."""

    def redirect_request(self, *args: Any, **kwargs: Any) -> None:
        return None


def _exchange(
    method: str,
    url: str,
    headers: Sequence[tuple[str, str]],
    body: bytes | None,
    timeout: float | None,
) -> HttpAnswer:
    request = urllib.request.Request(url, data=body, method=method)
    for name, value in headers:
        request.add_header(name, value)
    context = ssl.create_default_context() if url.startswith("https:") else None
    opener = urllib.request.build_opener(_NoRedirect, urllib.request.HTTPSHandler(context=context))
    try:
        with opener.open(request, timeout=timeout) as response:
            return HttpAnswer(
                response.status,
                {k.lower(): v for k, v in response.headers.items()},
                _read_capped(response, url),
            )
    except urllib.error.HTTPError as exc:
        if 300 <= exc.code < 400:
            raise CliError(
                f"{url} answered HTTP {exc.code}, a redirect to "
                f"{exc.headers.get('location', 'nowhere')}: tether does not follow redirects "
                "(they could carry your headers elsewhere); give that URL if you trust it",
                TRANSPORT_EXIT,
            ) from None
        return HttpAnswer(
            exc.code, {k.lower(): v for k, v in exc.headers.items()}, _read_capped(exc, url)
        )
    except TimeoutError:
        raise CliError(f"no answer from {url} within {timeout} s", DEADLINE_EXIT) from None
    except urllib.error.URLError as exc:
        if isinstance(exc.reason, TimeoutError):
            raise CliError(f"no answer from {url} within {timeout} s", DEADLINE_EXIT) from None
        if isinstance(exc.reason, ssl.SSLError):
            raise tls_failure(exc.reason, url) from None
        raise CliError(f"cannot reach {url}: {exc.reason}", TRANSPORT_EXIT) from None
    except ssl.SSLError as exc:
        raise tls_failure(exc, url) from None
    except (OSError, ValueError) as exc:  # a reset connection, a malformed answer
        raise CliError(f"cannot reach {url}: {exc}", TRANSPORT_EXIT) from None


def tls_failure(exc: BaseException, url: str) -> CliError:
    """What a failed TLS handshake with `url` says, with the command's remedies (exit 9)."""
    refused = tls_connect_error(exc, url)
    if refused is None:
        return CliError(f"the TLS handshake with {url} failed: {exc}", TRANSPORT_EXIT)
    text = str(refused)
    if "ssl_context=" in text:  # the library's advice; the command's is the environment
        text = text.partition(": give ssl_context=")[0] + (
            ": to trust a private CA, run the command with SSL_CERT_FILE=ca.pem"
        )
    elif refused.reason == "client certificate refused":
        text = f"{url} wants a client certificate (mutual TLS), which tether call cannot send"
    return CliError(text, TRANSPORT_EXIT)


async def _check_tls(url: str, context: ssl.SSLContext) -> None:
    """Do one TLS handshake with `url`'s server, so that its failure says why:
    through trio-websocket, a server that does not speak TLS leaves the command
    waiting for the whole --timeout."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    try:
        tcp = await trio.open_tcp_stream(host, parts.port or 443)
    except OSError as exc:
        raise CliError(f"cannot reach {url}: {exc}", TRANSPORT_EXIT) from None
    stream = trio.SSLStream(tcp, context, server_hostname=host)
    try:
        await stream.do_handshake()
    except (trio.BrokenResourceError, OSError) as exc:
        raise tls_failure(exc, url) from None
    finally:
        await trio.aclose_forcefully(stream)


def _read_capped(response: Any, url: str) -> bytes:
    data: bytes = response.read(MAX_ANSWER_BYTES + 1)
    if len(data) > MAX_ANSWER_BYTES:
        raise CliError(
            f"{url} answered more than {MAX_ANSWER_BYTES} bytes: tether reads at most that; "
            "is it a tether endpoint?",
            TRANSPORT_EXIT,
        )
    return data


@contextlib.asynccontextmanager
async def ws_session(
    url: str, headers: Sequence[tuple[str, str]]
) -> AsyncIterator[tuple[trio_websocket.WebSocketConnection, dict[str, Any]]]:
    """Connect, say an RPC `hello` (JSON only), yield the socket and the `welcome`.

    Raises:
        CliError: cannot connect, refused, or the first answer is not a welcome
            (exit 9).
    """
    extra = [(name.encode(), value.encode()) for name, value in headers]
    context = ssl.create_default_context() if url.startswith("wss:") else None
    if context is not None:
        await _check_tls(url, context)
    try:
        async with trio_websocket.open_websocket_url(
            url, ssl_context=context, extra_headers=extra
        ) as ws:
            await ws.send_message(json.dumps({"t": "hello", "protocol": 1, "mode": "rpc"}))
            welcome = await ws_next(ws, url)
            if welcome.get("t") != "welcome":
                error = welcome.get("error")
                said = error.get("message") if isinstance(error, dict) else welcome
                raise CliError(f"{url} refused the session: {said}", TRANSPORT_EXIT)
            yield ws, welcome
    except trio_websocket.HandshakeError as exc:
        # trio-websocket's HandshakeError says nothing itself; its cause says why.
        why = exc.__cause__ or exc.__context__ or type(exc).__name__
        raise CliError(f"cannot open a WebSocket at {url}: {why}", TRANSPORT_EXIT) from None
    except OSError as exc:
        raise CliError(f"cannot reach {url}: {exc}", TRANSPORT_EXIT) from None


async def ws_next(ws: trio_websocket.WebSocketConnection, url: str) -> dict[str, Any]:
    """The next message that is not an envelope ping (which it answers)."""
    while True:
        try:
            raw = await ws.get_message()
        except trio_websocket.ConnectionClosed as exc:
            why = f" ({exc.reason.code} {exc.reason.reason or ''})" if exc.reason else ""
            raise CliError(
                f"{url} closed the connection{why.rstrip()}",
                TRANSPORT_EXIT,
            ) from None
        try:
            message = json.loads(raw)
        except ValueError:
            raise CliError(f"{url} sent a message that is not JSON", TRANSPORT_EXIT) from None
        if not isinstance(message, dict):
            raise CliError(f"{url} sent a message that is not an object", TRANSPORT_EXIT)
        if message.get("t") == "ping":
            await ws.send_message(json.dumps({"t": "pong", "id": message.get("id")}))
            continue
        return message
