# mypy: disable-error-code="empty-body"
"""A real outside client, curl, drives the HTTP backend by the documented protocol only.

Every body here is JSON written by hand, as someone reading DESIGN.md section 4
(and the routes in `tether.transports.http._server`) would write it; nothing
is encoded with tether's own code.
"""

from __future__ import annotations

import functools
import json
import shutil
import subprocess
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import attrs
import trio

import tether
from tether.runtime._util import open_service_nursery
from tether.testing import RpcConformance
from tether.transports import http

CURL = shutil.which("curl") or "/usr/bin/curl"
TIMEOUT = 10.0

# curl is part of every machine this project runs on (the CI image included):
# a missing curl fails these tests rather than skipping the outside-client check.


@attrs.frozen
class Placement:
    x: float
    y: float


class EditorIpc(tether.IpcInterface):
    channel_name = "editor"
    version = "1.2.0"

    async def move(self, element_id: str, dx: float) -> Placement: ...


class EditorEvents(tether.NotificationInterface):
    channel_name = "editor-events"

    async def moved(self, element_id: str, placement: Placement) -> None: ...


class Ended:
    """The reasons the backend's sessions ended, and an event for the first."""

    def __init__(self) -> None:
        self.reasons: list[str] = []
        self.event = trio.Event()


def editor_backend(ended: Ended) -> tether.BackendIpc:
    class EditorHandler(tether.IpcHandler, EditorIpc):
        async def move(self, element_id: str, dx: float) -> Placement:
            placement = Placement(dx, 0.0)
            await tether.current_session().notifier(EditorEvents).moved(element_id, placement)
            return placement

        def on_close(self, reason: str) -> None:
            ended.reasons.append(reason)
            ended.event.set()

    backend = tether.BackendIpc()
    backend.register(EditorHandler)
    return backend


@asynccontextmanager
async def served(**options: Any) -> AsyncIterator[str]:
    """Serve the conformance backend on 127.0.0.1 for the block; yield its URL."""
    manager = RpcConformance().backend_manager()
    async with open_service_nursery() as nursery:
        url = await nursery.start(functools.partial(http.serve, manager, "127.0.0.1", 0, **options))
        yield url
        nursery.cancel_scope.cancel()


@attrs.frozen
class CurlResponse:
    status: int
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


#: Every POST is JSON: the server refuses anything else (415).
JSON_TYPE = "Content-Type: application/json"


async def curl(*args: str) -> CurlResponse:
    """Run `curl -s -i` with `args`; parse the status, headers and body it printed."""
    done = await trio.run_process(
        [CURL, "-s", "-S", "-i", "--max-time", "10", *args], capture_stdout=True
    )
    head, _, body = done.stdout.partition(b"\r\n\r\n")
    status_line, *lines = head.decode("latin-1").split("\r\n")
    headers = {}
    for line in lines:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    return CurlResponse(int(status_line.split()[1]), headers, body)


async def test_curl_call_answers_200_with_the_result_and_echoes_the_correlation_id() -> None:
    with trio.fail_after(TIMEOUT):
        async with served() as url:
            response = await curl(
                "-X",
                "POST",
                "-H",
                "Content-Type: application/json",
                "-H",
                "X-Correlation-ID: curl-activity-1",
                "--data",
                "[2, 40]",
                f"{url}/tether.Conformance/1.2.3/add",
            )
    assert response.status == 200
    assert response.headers["content-type"] == "application/json"
    assert response.headers["x-correlation-id"] == "curl-activity-1"
    assert response.json() == 42


async def test_curl_call_with_an_incompatible_version_gets_403_and_an_error_body() -> None:
    with trio.fail_after(TIMEOUT):
        async with served() as url:
            response = await curl(
                "-X",
                "POST",
                "-H",
                "Content-Type: application/json",
                "--data",
                "[1, 2]",
                f"{url}/tether.Conformance/2.0.0/add",
            )
    assert response.status == 403
    error = response.json()["error"]
    assert error["code"] == "incompatible-version"
    assert error["status"] == 403
    assert error["name"] == "IncompatibleVersion"
    assert error["activity_id"] == response.headers["x-correlation-id"]


async def test_curl_reads_the_describe_endpoint() -> None:
    with trio.fail_after(TIMEOUT):
        async with served() as url:
            response = await curl(f"{url}/")
    assert response.status == 200
    described = response.json()
    assert described["protocol"] == 1
    conformance = described["interfaces"]["tether.Conformance"]
    assert conformance["version"] == "1.2.3"
    assert "add" in conformance["operations"]


async def _read_until(stream: trio.abc.ReceiveStream, buffer: bytearray, marker: bytes) -> bytes:
    """Read curl's output into `buffer` until `marker`; return what came before it."""
    for _ in range(1000):  # bounded: each pass reads at least one byte or ends
        if marker in buffer:
            before, _, rest = bytes(buffer).partition(marker)
            buffer[:] = rest
            return before
        chunk = await stream.receive_some(4096)
        if not chunk:
            break
        buffer += chunk
    raise AssertionError(f"curl's output ended before {marker!r}: {bytes(buffer)!r}")


async def test_curl_follows_an_ipc_session_and_its_server_sent_events() -> None:
    ended = Ended()
    hello = '{"t": "hello", "protocol": 1, "mode": "ipc", "channels": {"editor": "1.2.0"}}'
    invoke = '{"t": "invoke", "id": 1, "channel": "editor", "method": "move", "args": ["e1", 2.5]}'
    with trio.fail_after(TIMEOUT):
        async with served(ipc=editor_backend(ended), ipc_grace_period=1.0) as url:
            origin = url.removesuffix("/rpc")
            opened = await curl("-X", "POST", "-H", JSON_TYPE, "--data", hello, f"{url}/ipc")
            assert opened.status == 200, opened.body
            session = opened.json()
            token_header = f"X-Session-Token: {session['token']}"
            events_command = [
                CURL,
                *("-s", "-N", "-i", "--max-time", "10", "-H", token_header),
                f"{origin}{session['events']}",  # "events" is a path: join it to the origin
            ]
            async with trio.open_nursery() as nursery:
                events = await nursery.start(
                    functools.partial(
                        trio.run_process, events_command, stdout=subprocess.PIPE, check=False
                    )
                )
                assert events.stdout is not None
                # What the backend sends before curl is connected waits for
                # the stream, so the order of these two does not matter.
                posted = await curl(
                    "-X",
                    "POST",
                    "-H",
                    token_header,
                    "-H",
                    JSON_TYPE,
                    "--data",
                    invoke,
                    f"{url}/ipc/{session['session_id']}",
                )
                output = bytearray()
                head = await _read_until(events.stdout, output, b"\r\n\r\n")
                messages = []
                for _ in range(2):
                    await _read_until(events.stdout, output, b"data: ")
                    messages.append(json.loads(await _read_until(events.stdout, output, b"\n")))
                events.kill()
            await ended.event.wait()
    status_line, *header_lines = head.decode("latin-1").split("\r\n")
    assert status_line.split()[1] == "200"
    assert "content-type: text/event-stream" in [line.lower() for line in header_lines]
    assert posted.status == 202
    by_type = {message["t"]: message for message in messages}
    notify = by_type["notify"]
    assert notify["channel"] == "editor-events"
    assert notify["method"] == "moved"
    assert notify["args"] == ["e1", {"x": 2.5, "y": 0.0}]
    assert by_type["result"] == {"t": "result", "id": 1, "value": {"x": 2.5, "y": 0.0}}
    assert ended.reasons == [
        "the frontend's event stream did not come back within the grace period of 1 s"
    ]
