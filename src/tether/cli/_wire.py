"""The command line's client side: plain HTTP requests and a raw WebSocket session.

The CLI speaks the documented wire (docs/http.md, docs/websocket.md) itself,
with the standard library's `urllib` over HTTP and trio-websocket over
WebSocket, so that what it shows is exactly what the server answers.
"""

from __future__ import annotations

import contextlib
import json
import ssl
import urllib.error
import urllib.request
from collections.abc import AsyncIterator, Sequence
from typing import Any

import trio_websocket

from ._common import CliError

__all__ = ["DEADLINE_EXIT", "TRANSPORT_EXIT", "HttpAnswer", "http_request", "ws_next", "ws_session"]

#: The exit code of a transport failure (cannot connect, closed).
TRANSPORT_EXIT = 9
#: The exit code of a wait past `--timeout`.
DEADLINE_EXIT = 8


class HttpAnswer:
    """An HTTP response: status, headers (lower-case names), body."""

    def __init__(self, status: int, headers: dict[str, str], body: bytes) -> None:
        self.status = status
        self.headers = headers
        self.body = body

    def json(self, what: str) -> Any:
        try:
            return json.loads(self.body)
        except ValueError:
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

    Raises:
        CliError: the server cannot be reached (exit 9) or did not answer
            within `timeout` seconds (exit 8).
    """
    request = urllib.request.Request(url, data=body, method=method)
    for name, value in headers:
        request.add_header(name, value)
    context = ssl.create_default_context() if url.startswith("https:") else None
    try:
        with urllib.request.urlopen(request, timeout=timeout, context=context) as response:
            return HttpAnswer(
                response.status,
                {k.lower(): v for k, v in response.headers.items()},
                response.read(),
            )
    except urllib.error.HTTPError as exc:
        return HttpAnswer(exc.code, {k.lower(): v for k, v in exc.headers.items()}, exc.read())
    except TimeoutError:
        raise CliError(f"no answer from {url} within {timeout} s", DEADLINE_EXIT) from None
    except urllib.error.URLError as exc:
        if isinstance(exc.reason, TimeoutError):
            raise CliError(f"no answer from {url} within {timeout} s", DEADLINE_EXIT) from None
        raise CliError(f"cannot reach {url}: {exc.reason}", TRANSPORT_EXIT) from None
    except (OSError, ValueError) as exc:  # a reset connection, a malformed answer
        raise CliError(f"cannot reach {url}: {exc}", TRANSPORT_EXIT) from None


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
