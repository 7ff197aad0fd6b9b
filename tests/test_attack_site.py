"""Cross-site checks with headers a request carries twice.

A browser never sends `Origin` or `Content-Type` twice; a request that does is
malformed, and must be refused whichever copy comes first, as the WebSocket
handshakes already refuse it. Taking one copy (the last for Origin and RPC's
Content-Type, the first for IPC's) let a request with a foreign Origin or a
form type through whenever the other copy was acceptable.
"""

from __future__ import annotations

from typing import Any

import httpx
import pytest
import trio
from test_http_site import CALL, HELLO, Runs, assert_error, open_session, raw_client

TIMEOUT = 10.0
JSON = ("Content-Type", "application/json")


async def events(client: httpx.AsyncClient, path: str, headers: list[tuple[str, str]]) -> Any:
    """GET an event stream; its head only, when it opened (its body never ends)."""
    async with client.stream("GET", path, headers=headers) as response:
        if response.status_code != 200:
            await response.aread()
        return response


@pytest.mark.parametrize("evil_first", [True, False], ids=["evil-first", "evil-last"])
async def test_a_request_with_two_origins_is_refused_on_every_route(evil_first: bool) -> None:
    runs = Runs()
    with trio.fail_after(TIMEOUT):
        async with raw_client(runs) as client:
            own = f"http://{client.base_url.host}:{client.base_url.port}"
            origins = [("Origin", "http://evil.example"), ("Origin", own)]
            if not evil_first:
                origins.reverse()
            path, token = await open_session(client)
            sessions = runs.sessions
            session = [(name, value) for name, value in token.items()]
            answers = [
                await client.post(CALL, content=b"[1]", headers=[JSON, *origins]),
                await client.post("/ipc", content=HELLO, headers=[JSON, *origins]),
                await client.get("/", headers=origins),
                await events(client, f"{path}/events", [*origins, *session]),
                await client.delete(path, headers=[*origins, *session]),
            ]
    for response in answers:
        assert_error(response, 403, "forbidden", "Forbidden")
    assert runs.impl.calls == 0
    assert runs.sessions == sessions


@pytest.mark.parametrize("json_first", [True, False], ids=["json-first", "json-last"])
async def test_a_post_with_two_content_types_is_415_and_runs_nothing(json_first: bool) -> None:
    runs = Runs()
    types = [JSON, ("Content-Type", "text/plain")]
    if not json_first:
        types.reverse()
    with trio.fail_after(TIMEOUT):
        async with raw_client(runs) as client:
            path, token = await open_session(client)
            sessions = runs.sessions
            session = list(token.items())
            answers = [
                await client.post(CALL, content=b"[1]", headers=types),
                await client.post("/ipc", content=HELLO, headers=types),
                await client.post(
                    path,
                    content=b'{"t":"invoke","id":1,"channel":"test.tally","method":"bump","args":[]}',
                    headers=[*types, *session],
                ),
            ]
    for response in answers:
        assert_error(response, 415, "unsupported-media-type", "InvalidRequest")
    assert runs.impl.calls == 0
    assert runs.invokes == 0
    assert runs.sessions == sessions
