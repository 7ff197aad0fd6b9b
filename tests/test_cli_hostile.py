"""`tether call` and `tether describe` against hostile or broken servers, and bad input.

Each server here is a raw Trio TCP server on 127.0.0.1 that answers what a
test scripts: a redirect to another host, an answer that never ends or
trickles, JSON of the wrong shape, text with terminal escape sequences.
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
import socket
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import attrs
import pytest
import trio

from tether.cli._wire import MAX_ANSWER_BYTES

ROOT = Path(__file__).resolve().parent.parent
SECRET = "s3cret-token"

Answer = Callable[[trio.SocketStream, bytes], Awaitable[None]]


@attrs.frozen
class Ran:
    code: int
    out: str
    err: str
    seconds: float


async def run_tether(*argv: str, cap: float = 60, path: Path | None = None) -> Ran:
    """Run `python -m tether ARGV` as a child process, this worktree's sources first
    (and `path`, if given, on PYTHONPATH too)."""
    paths = [str(ROOT / "src"), str(ROOT), *([str(path)] if path else [])]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(paths)}
    started = time.monotonic()
    with trio.fail_after(cap):
        done = await trio.run_process(
            [sys.executable, "-m", "tether", *argv],
            capture_stdout=True,
            capture_stderr=True,
            check=False,
            env=env,
        )
    return Ran(
        done.returncode,
        done.stdout.decode(errors="replace"),
        done.stderr.decode(errors="replace"),
        time.monotonic() - started,
    )


def one_clean_line(ran: Ran) -> None:
    assert ran.err.startswith("tether: "), ran.err
    assert ran.err.count("\n") == 1, ran.err  # one line, no traceback
    assert SECRET not in ran.err + ran.out


async def read_request(stream: trio.SocketStream) -> bytes:
    data = b""
    with trio.move_on_after(10):
        while b"\r\n\r\n" not in data and len(data) < 65536:
            chunk = await stream.receive_some(65536)
            if not chunk:
                break
            data += chunk
            if data.startswith(b"\x16"):  # a TLS ClientHello: answer it at once
                break
    return data


def response(status: str, body: bytes, *headers: str) -> bytes:
    head = [f"HTTP/1.1 {status}", f"Content-Length: {len(body)}", "Connection: close", *headers]
    return ("\r\n".join(head) + "\r\n\r\n").encode() + body


async def start_server(nursery: trio.Nursery, answer: Answer, seen: list[bytes]) -> int:
    """Serve `answer` on 127.0.0.1 (port 0) until the test's nursery ends; the port."""

    async def handler(stream: trio.SocketStream) -> None:
        request = await read_request(stream)
        seen.append(request)
        # The command may give up (as it should) before the answer is all sent.
        with contextlib.suppress(trio.BrokenResourceError, trio.ClosedResourceError):
            await answer(stream, request)

    listeners = await nursery.start(functools.partial(trio.serve_tcp, handler, 0, host="127.0.0.1"))
    port: int = listeners[0].socket.getsockname()[1]
    return port


DESCRIPTION = {"protocol": 1, "interfaces": {"I": {"version": "1.0.0", "operations": ["op"]}}}


def describing(post_answer: bytes, description: object = DESCRIPTION) -> Answer:
    """A server describing `description` at GET and answering `post_answer` to a POST."""

    async def answer(stream: trio.SocketStream, request: bytes) -> None:
        if request.startswith(b"POST"):
            await stream.send_all(post_answer)
        elif request.startswith(b"GET /rpc/ "):
            await stream.send_all(response("200 OK", json.dumps(description).encode()))
        else:
            await stream.send_all(response("404 Not Found", b"{}"))

    return answer


async def test_call_does_not_follow_a_redirect_to_another_host(nursery: trio.Nursery) -> None:
    elsewhere: list[bytes] = []
    other = await start_server(nursery, describing(response("200 OK", b"42")), elsewhere)

    async def redirect(stream: trio.SocketStream, request: bytes) -> None:
        target = f"http://localhost:{other}/rpc/"
        await stream.send_all(response("302 Found", b"", f"Location: {target}"))

    port = await start_server(nursery, redirect, [])
    url = f"http://127.0.0.1:{port}/rpc"
    for argv in (("call", url, "I.op"), ("describe", url)):
        ran = await run_tether(*argv, "-H", f"Authorization: Bearer {SECRET}")
        assert ran.code == 9, ran
        one_clean_line(ran)
        assert "redirect" in ran.err
        assert f"localhost:{other}" in ran.err  # where it wanted to send us
    assert elsewhere == []  # never followed, so the credential went nowhere else


async def test_control_characters_from_the_server_are_escaped(nursery: trio.Nursery) -> None:
    evil = "evil\x1b[31mRED\nfake: line\x9b2J\x07"
    error = {"error": {"code": "application", "status": 422, "message": evil, "details": evil}}
    port = await start_server(
        nursery, describing(response("422 X", json.dumps(error).encode())), []
    )
    ran = await run_tether("call", f"http://127.0.0.1:{port}/rpc", "I.op")
    assert ran.code == 1
    for raw in ("\x1b", "\x9b", "\x07"):
        assert raw not in ran.err
    message = [line for line in ran.err.splitlines() if line.startswith("message: ")]
    assert message == ["message: evil\\x1b[31mRED\\nfake: line\\x9b2J\\x07"]
    assert not any(line.startswith("fake: ") for line in ran.err.splitlines())

    # A result is JSON on stdout: still the same value, with no raw control character.
    port = await start_server(
        nursery, describing(response("200 OK", json.dumps(evil).encode())), []
    )
    ran = await run_tether("call", f"http://127.0.0.1:{port}/rpc", "I.op")
    assert ran.code == 0
    assert json.loads(ran.out) == evil
    assert "\x9b" not in ran.out
    assert "\x1b" not in ran.out

    # Names in a description.
    named = {"protocol": 1, "interfaces": {evil: {"version": evil, "operations": [evil]}}}
    port = await start_server(nursery, describing(b"", named), [])
    ran = await run_tether("describe", f"http://127.0.0.1:{port}/rpc")
    assert ran.code == 0
    for raw in ("\x1b", "\x9b", "\x07"):
        assert raw not in ran.out
    assert not any(line.startswith("fake: ") for line in ran.out.splitlines())


async def test_timeout_bounds_an_answer_that_trickles(nursery: trio.Nursery) -> None:
    async def trickle(stream: trio.SocketStream, request: bytes) -> None:
        await stream.send_all(b"HTTP/1.1 200 OK\r\nContent-Length: 100000\r\n\r\n")
        for _ in range(200):  # one byte every 0.1 s: no single read ever times out
            await stream.send_all(b" ")
            await trio.sleep(0.1)

    port = await start_server(nursery, trickle, [])
    for command in ("describe", "call"):
        argv = (command, f"http://127.0.0.1:{port}/rpc", *(["I.op"] if command == "call" else []))
        ran = await run_tether(*argv, "--timeout", "1", cap=30)
        assert ran.code == 8, ran
        one_clean_line(ran)
        assert ran.seconds < 10, ran.seconds  # bounded by --timeout, not by the server


async def test_an_answer_past_the_size_cap_is_refused(nursery: trio.Nursery) -> None:
    async def flood(stream: trio.SocketStream, request: bytes) -> None:
        await stream.send_all(b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\n")
        chunk = b" " * 1024 * 1024
        for _ in range(MAX_ANSWER_BYTES // len(chunk) + 4):  # bounded: just past the cap
            await stream.send_all(chunk)

    port = await start_server(nursery, flood, [])
    ran = await run_tether("describe", f"http://127.0.0.1:{port}/rpc", cap=60)
    assert ran.code == 9, ran
    one_clean_line(ran)
    assert f"more than {MAX_ANSWER_BYTES} bytes" in ran.err


@pytest.mark.parametrize(
    "description",
    [
        {"interfaces": {"I": {"version": "1", "operations": 5}}},
        {"interfaces": {"I": {"version": "1", "operations": [["op"]]}}},
        {"interfaces": ["I"]},
        "deep",
    ],
)
async def test_a_description_of_the_wrong_shape_is_one_line(
    nursery: trio.Nursery, description: object
) -> None:
    if description == "deep":
        body = b"[" * 200_000 + b"]" * 200_000  # JSON nested past Python's recursion limit

        async def answer(stream: trio.SocketStream, request: bytes) -> None:
            await stream.send_all(response("200 OK", body))

        port = await start_server(nursery, answer, [])
    else:
        port = await start_server(nursery, describing(b"", description), [])
    url = f"http://127.0.0.1:{port}/rpc"
    for argv in (("describe", url), ("call", url, "I.op")):
        ran = await run_tether(*argv)
        assert ran.code == 9, ran
        one_clean_line(ran)


async def test_ipc_channels_of_the_wrong_shape_read_as_none(nursery: trio.Nursery) -> None:
    description = {"protocol": 1, "interfaces": {}, "ipc": {"channels": 5}}
    port = await start_server(nursery, describing(b"", description), [])
    ran = await run_tether("describe", f"http://127.0.0.1:{port}/rpc")
    assert (ran.code, ran.err) == (0, ""), ran
    assert "IPC channels: none" in ran.out


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


@pytest.mark.parametrize("scheme", ["http", "ws"])
async def test_bad_headers_and_activity_ids_are_refused_without_echoing_them(scheme: str) -> None:
    url = f"{scheme}://127.0.0.1:{closed_port()}/rpc"
    cases = [
        (["-H", f"Authorization: Bearer {SECRET}\r\nX-Other: 1"], "-H 'Authorization: ...'"),
        (["-H", f"Authorization: Bearer {SECRET}\x1b[2J"], "-H 'Authorization: ...'"),
        (["-H", SECRET], "-H 'Name: value'"),  # a bare token, no name
        (["--timeout", "1e300"], "--timeout"),
        (["--activity-id", "act\nforged log line"], "--activity-id"),
        (["--activity-id", "x" * 201], "--activity-id"),
        (["--activity-id", "caf\u20ac"], "--activity-id"),
    ]
    for extra, words in cases:
        ran = await run_tether("call", url, "I.op", *extra, "-H", f"X-Key: {SECRET}")
        assert ran.code == 2, (extra, ran)
        one_clean_line(ran)
        assert words in ran.err, ran.err


@pytest.mark.parametrize("value", ["inf", "-1", "0", "nan", "1e300"])
async def test_describe_refuses_a_timeout_that_is_not_positive_and_finite(value: str) -> None:
    ran = await run_tether("describe", f"http://127.0.0.1:{closed_port()}/rpc", "--timeout", value)
    assert ran.code == 2, ran
    one_clean_line(ran)
    assert "--timeout" in ran.err


@pytest.mark.parametrize("command", ["call", "describe"])
async def test_a_url_with_a_password_is_refused_without_echoing_it(command: str) -> None:
    url = f"http://user:{SECRET}@127.0.0.1:{closed_port()}/rpc"
    ran = await run_tether(command, url, *(["I.op"] if command == "call" else []))
    assert ran.code == 2, ran
    one_clean_line(ran)
    assert "-H 'Authorization: ...'" in ran.err


@pytest.mark.parametrize("scheme", ["https", "wss"])
async def test_a_tls_url_of_a_plain_server_says_it_does_not_speak_tls(
    nursery: trio.Nursery, scheme: str
) -> None:
    async def plain(stream: trio.SocketStream, request: bytes) -> None:
        await stream.send_all(response("400 Bad Request", b"not TLS"))

    port = await start_server(nursery, plain, [])
    ran = await run_tether("call", f"{scheme}://127.0.0.1:{port}/rpc", "I.op", "--timeout", "20")
    assert ran.code == 9, ran
    one_clean_line(ran)
    assert "does not speak TLS" in ran.err
    assert ran.seconds < 8  # said at once, not after --timeout


async def test_a_module_that_prints_at_import_does_not_corrupt_stdout(tmp_path: Path) -> None:
    (tmp_path / "noisy_app.py").write_text(
        'print("hello from import")\nfrom examples.robot_world.service import manager\n'
    )
    ran = await run_tether("openapi", "noisy_app:manager", path=tmp_path)
    assert ran.code == 0, ran
    assert json.loads(ran.out)["openapi"].startswith("3.1")  # stdout is the document alone
    assert "hello from import" in ran.err
