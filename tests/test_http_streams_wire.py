"""RPC streams over HTTP on the wire: curl and raw sockets against the real server.

Every request here is written by hand from docs/http.md ("Streams"), as a
client in another language would write it; nothing is encoded by tether.
"""

from __future__ import annotations

import functools
import json
import shutil
import socket
import struct
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import trio
import trio.testing

from tests.http_streams_app import TelemetryImpl, manager
from tether.runtime._util import open_service_nursery
from tether.transports import http

CURL = shutil.which("curl") or "/usr/bin/curl"
TIMEOUT = 10.0
tracker = TelemetryImpl.tracker
OP = "HttpTelemetry/1.0.0"
JSON_TYPE = "Content-Type: application/json"
NDJSON_TYPE = "Content-Type: application/x-ndjson"


@asynccontextmanager
async def served(**options: Any) -> AsyncIterator[str]:
    async with open_service_nursery() as nursery:
        url = await nursery.start(
            functools.partial(http.serve, manager(), "127.0.0.1", 0, **options)
        )
        yield url
        nursery.cancel_scope.cancel()


class Curled:
    def __init__(self, stdout: bytes) -> None:
        head, _, self.body = stdout.partition(b"\r\n\r\n")
        while head.startswith(b"HTTP/1.1 100"):  # curl -T shows the 100 Continue too
            head, _, self.body = self.body.partition(b"\r\n\r\n")
        status_line, *lines = head.decode("latin-1").split("\r\n")
        self.status = int(status_line.split()[1])
        self.headers = {}
        for line in lines:
            name, _, value = line.partition(":")
            self.headers[name.strip().lower()] = value.strip()

    def lines(self) -> list[Any]:
        return [json.loads(line) for line in self.body.splitlines() if line.strip()]

    def json(self) -> Any:
        return json.loads(self.body)


async def curl(*args: str, stdin: bytes | None = None) -> Curled:
    done = await trio.run_process(
        [CURL, "-s", "-S", "-i", "--max-time", "10", *args], capture_stdout=True, stdin=stdin
    )
    return Curled(done.stdout)


async def test_curl_reads_a_server_stream_line_by_line() -> None:
    with trio.fail_after(TIMEOUT):
        async with served() as url:
            # As docs/http.md writes it.
            response = await curl(
                "-N", "-X", "POST", "-H", JSON_TYPE, "-d", '["r1", 3]', f"{url}/{OP}/watch"
            )
    assert response.status == 200
    assert response.headers["content-type"] == "application/x-ndjson"
    assert response.headers["transfer-encoding"] == "chunked"
    assert response.lines() == [
        {"t": "item", "value": {"x": 0.0, "y": 2.0}},
        {"t": "item", "value": {"x": 1.0, "y": 2.0}},
        {"t": "item", "value": {"x": 2.0, "y": 2.0}},
        {"t": "result", "value": None},
    ]


async def test_an_error_mid_stream_is_the_last_line_with_the_error_object_of_a_unary_call() -> None:
    with trio.fail_after(TIMEOUT):
        async with served() as url:
            response = await curl(
                "-N", "-X", "POST", "-H", JSON_TYPE, "-d", '["r7", 2]', f"{url}/{OP}/lose"
            )
            # The same error, before the first item: its own status and body.
            early = await curl("-X", "POST", "-H", JSON_TYPE, "-d", '["r7", 0]', f"{url}/{OP}/lose")
    assert response.status == 200
    *items, last = response.lines()
    assert items == [{"t": "item", "value": 0}, {"t": "item", "value": 1}]
    assert last["t"] == "error"
    error = last["error"]
    assert (error["code"], error["status"], error["name"]) == (
        "application",
        422,
        "tests.http_streams.RobotLost",
    )
    assert error["details"] == {"fields": {"robot_id": "r7", "last_seen": 2}}
    assert error["activity_id"] == response.headers["x-correlation-id"]
    assert early.status == 422
    assert early.headers["content-type"] == "application/json"
    assert early.json()["error"]["details"] == {"fields": {"robot_id": "r7", "last_seen": 0}}


async def test_x_timeout_ms_ends_a_stream_with_deadline_exceeded() -> None:
    with trio.fail_after(TIMEOUT):
        async with served() as url:
            response = await curl(
                "-N",
                "-X",
                "POST",
                "-H",
                JSON_TYPE,
                "-H",
                "X-Timeout-Ms: 300",
                "-d",
                '["timeout", 1]',
                f"{url}/{OP}/forever",
            )
    assert response.status == 200
    *items, last = response.lines()
    assert items
    assert last["t"] == "error"
    assert last["error"]["code"] == "deadline-exceeded"
    assert tracker.closed_event("timeout").is_set()


async def test_the_record_form_when_accept_names_it() -> None:
    with trio.fail_after(TIMEOUT):
        async with served() as url:
            response = await curl(
                "-X",
                "POST",
                "-H",
                JSON_TYPE,
                "-H",
                "Accept: application/vnd.tether.stream",
                "-d",
                '["r1", 2]',
                f"{url}/{OP}/watch",
            )
    assert response.headers["content-type"] == "application/vnd.tether.stream"
    body, messages = response.body, []
    while body:
        (size,) = struct.unpack(">I", body[:4])
        messages.append(json.loads(body[4 : 4 + size]))
        body = body[4 + size :]
    assert [m["t"] for m in messages] == ["item", "item", "result"]


async def test_curl_uploads_a_client_stream_as_a_chunked_body() -> None:
    # total(numbers: Stream[int]): the arguments are [null], the stream's place.
    lines = b"[null]\n"
    lines += b"".join(b"%d\n" % n for n in range(1000))
    with trio.fail_after(TIMEOUT):
        async with served() as url:
            response = await curl(
                "-X",
                "POST",
                "-H",
                NDJSON_TYPE,
                "-T",
                "-",  # stdin, sent with Transfer-Encoding: chunked
                f"{url}/{OP}/total",
                stdin=lines,
            )
            also = await curl(
                "-X",
                "POST",
                "-H",
                NDJSON_TYPE,
                "--data-binary",
                "@-",
                f"{url}/{OP}/total",
                stdin=b"[null]\n1\n2\n3",  # the last line may go without its line break
            )
    assert (response.status, response.json()) == (200, sum(range(1000)))
    assert (also.status, also.json()) == (200, 6)


async def test_a_bad_item_in_a_client_stream_is_a_bad_request() -> None:
    with trio.fail_after(TIMEOUT):
        async with served() as url:
            not_json = await curl(
                "-X",
                "POST",
                "-H",
                NDJSON_TYPE,
                "--data-binary",
                "@-",
                f"{url}/{OP}/total",
                stdin=b"[null]\n1\n{oops\n",
            )
            wrong_type = await curl(
                "-X",
                "POST",
                "-H",
                NDJSON_TYPE,
                "--data-binary",
                "@-",
                f"{url}/{OP}/total",
                stdin=b'[null]\n1\n"two"\n',
            )
    assert not_json.status == 400
    assert not_json.json()["error"]["code"] == "bad-request"
    assert wrong_type.status == 400
    assert "does not fit" in wrong_type.json()["error"]["message"]


async def test_a_two_way_stream_is_not_found_naming_the_transports_that_carry_it() -> None:
    with trio.fail_after(TIMEOUT):
        async with served() as url:
            response = await curl(
                "-X", "POST", "-H", NDJSON_TYPE, "--data-binary", "@-", f"{url}/{OP}/steer",
                stdin=b'[null]\n{"x": 1, "y": 2}\n',
            )  # fmt: skip
    assert response.status == 404
    error = response.json()["error"]
    assert error["code"] == "not-found"
    assert error["details"]["transports"] == ["memory", "websocket", "local"]
    assert "/rpc/ws" in error["message"]


async def test_stream_bodies_are_not_a_simple_request_cross_site() -> None:
    # A browser sends text/plain (or a form) cross-site without a preflight:
    # a client-stream operation refuses it, as every POST does. NDJSON needs a
    # preflight, which an unlisted origin is refused.
    with trio.fail_after(TIMEOUT):
        async with served(cors_origins=["https://app.example"]) as url:
            plain = await curl(
                "-X", "POST", "-H", "Content-Type: text/plain", "--data-binary", "@-",
                f"{url}/{OP}/total", stdin=b"[null]\n1\n",
            )  # fmt: skip
            preflight = await curl(
                "-X", "OPTIONS", "-H", "Origin: https://evil.example",
                "-H", "Access-Control-Request-Method: POST",
                "-H", "Access-Control-Request-Headers: content-type", f"{url}/{OP}/total",
            )  # fmt: skip
            cross_site = await curl(
                "-X", "POST", "-H", "Origin: https://evil.example", "-H", NDJSON_TYPE,
                "--data-binary", "@-", f"{url}/{OP}/total", stdin=b"[null]\n1\n",
            )  # fmt: skip
            listed = await curl(
                "-X", "OPTIONS", "-H", "Origin: https://app.example",
                "-H", "Access-Control-Request-Method: POST",
                "-H", "Access-Control-Request-Headers: content-type", f"{url}/{OP}/total",
            )  # fmt: skip
            from_listed = await curl(
                "-X", "POST", "-H", "Origin: https://app.example", "-H", NDJSON_TYPE,
                "--data-binary", "@-", f"{url}/{OP}/total", stdin=b"[null]\n1\n2\n",
            )  # fmt: skip
    assert plain.status == 415
    assert "application/x-ndjson" in plain.json()["error"]["message"]
    assert preflight.status == 403
    assert cross_site.status == 403
    assert listed.status == 204
    assert "content-type" in listed.headers["access-control-allow-headers"]
    assert (from_listed.status, from_listed.json()) == (200, 3)
    assert from_listed.headers["access-control-allow-origin"] == "https://app.example"


# ---------------------------------------------------------------------------
# Flow control: TCP's


async def _request(port: int, body: bytes, target: str) -> trio.SocketStream:
    sock = trio.socket.socket()
    # A small receive buffer, so the bytes in flight are few and the bound tight.
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 64 * 1024)
    await sock.connect(("127.0.0.1", port))
    stream = trio.SocketStream(sock)
    head = (
        f"POST {target} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
    ).encode()
    await stream.send_all(head + body)
    return stream


async def test_a_client_that_does_not_read_blocks_the_generator_and_holds_memory_flat() -> None:
    item = 10_000  # characters in each item
    with trio.fail_after(TIMEOUT):
        async with served() as url:
            port = int(url.split(":")[2].split("/")[0])
            stream = await _request(port, b'["slow", %d]' % item, f"/rpc/{OP}/forever")
            try:
                # Nothing is read: the generator runs until the socket buffers
                # (the server's send buffer, this client's receive buffer) are
                # full, then its yield waits.
                await trio.testing.wait_all_tasks_blocked(0.05)
                blocked_at = tracker.produced["slow"]
                await trio.testing.wait_all_tasks_blocked(0.05)
                assert tracker.produced["slow"] == blocked_at
                sndbuf = stream.socket.getsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF)
                # What a generator free to run would make 100,000 of a second
                # is a few hundred items: what the sockets hold, no more.
                in_flight = blocked_at * item
                assert in_flight < 16 * 1024 * 1024, (blocked_at, sndbuf)
                # Reading slowly: each read lets the generator make about as
                # much as was read, never more than the buffers hold.
                read = 0
                for _ in range(5):
                    read += len(await stream.receive_some(256 * 1024))
                    await trio.testing.wait_all_tasks_blocked(0.05)
                    produced = tracker.produced["slow"]
                    assert (produced * item) - read < in_flight + 2 * item + 512 * 1024
            finally:
                await stream.aclose()
            with trio.fail_after(1.0):
                await tracker.closed_event("slow").wait()
    print(f"blocked after {blocked_at} items of {item} bytes ({in_flight} bytes in flight)")
