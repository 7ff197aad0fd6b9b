# mypy: disable-error-code="empty-body"
"""Static files served beside the RPC routes: `http.serve(..., static={mount: dir})`.

Real hypercorn, real sockets; requests are written by hand where a client
library would normalize the path (`..`, `%2e%2e`, backslashes, NUL).
"""

from __future__ import annotations

import functools
import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
import trio

import tether
from tether.cli._common import CliError
from tether.cli._serve import parse_static
from tether.runtime._util import open_service_nursery
from tether.transports import http

TIMEOUT = 10.0


class Counter(tether.RpcInterface):
    interface_name = "test.StaticCounter"
    interface_version = "1.0.0"

    async def bump(self) -> int: ...


class CounterImpl(Counter):
    def __init__(self) -> None:
        self.calls = 0

    async def bump(self) -> int:
        self.calls += 1
        return self.calls


def make_site(tmp_path: Path) -> dict[str, Path]:
    """A site, a client dist beside it, and a secret outside both."""
    site = tmp_path / "site"
    (site / "sub").mkdir(parents=True)
    (site / "index.html").write_text("<h1>home</h1>")
    (site / "sub" / "index.html").write_text("<h1>sub</h1>")
    (site / "empty").mkdir()
    for name in ("a.js", "a.mjs", "a.css", "a.json", "a.js.map", "a.svg", "a.png", "a.ico"):
        (site / name).write_bytes(b"x" * 3)
    (site / "a.wasm").write_bytes(b"\0asm")
    (site / "a.txt").write_text("text")
    (site / "a.bin").write_bytes(b"\x00\x01")
    (site / "empty.txt").write_text("")
    (site / ".env").write_text("SECRET=1")
    (site / "big.bin").write_bytes(bytes(range(256)) * 1024)  # 256 KiB: several chunks
    client = tmp_path / "dist"
    client.mkdir()
    (client / "index.js").write_text("export const x = 1;\n")
    secret = tmp_path / "secret.txt"
    secret.write_text("the secret")
    (site / "leak.txt").symlink_to(secret)
    (site / "leakdir").symlink_to(tmp_path)
    (site / "inside.txt").symlink_to(site / "a.txt")
    return {"site": site, "client": client}


@asynccontextmanager
async def served(tmp_path: Path, **options: Any) -> AsyncIterator[tuple[str, int, CounterImpl]]:
    """A backend serving the site at `/` and the dist at `/client`: (base URL, port, impl)."""
    dirs = make_site(tmp_path)
    impl = CounterImpl()
    manager = tether.RpcManager()
    manager.register_impl(Counter, impl)
    options.setdefault("static", {"/": dirs["site"], "/client": str(dirs["client"])})
    with trio.fail_after(TIMEOUT):
        async with open_service_nursery() as nursery:
            url = await nursery.start(functools.partial(http.serve, manager, **options))
            base = url.removesuffix("/rpc")
            yield base, int(base.rsplit(":", 1)[1]), impl
            nursery.cancel_scope.cancel()


async def raw(port: int, target: str, method: str = "GET", extra: str = "") -> tuple[int, str]:
    """A request written by hand (its target as given): the status and the body."""
    stream = await trio.open_tcp_stream("127.0.0.1", port)
    async with stream:
        request = f"{method} {target} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n{extra}"
        await stream.send_all(f"{request}Connection: close\r\n\r\n".encode("latin-1"))
        data = b""
        while chunk := await stream.receive_some(65536):
            data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    return int(head.split(b" ", 2)[1]), body.decode("latin-1")


async def test_files_directories_and_mounts(tmp_path: Path) -> None:
    async with served(tmp_path) as (base, _, _), httpx.AsyncClient(base_url=base) as client:
        home = await client.get("/")
        assert (home.status_code, home.text) == (200, "<h1>home</h1>")
        assert home.headers["content-type"] == "text/html; charset=utf-8"
        assert home.headers["content-length"] == str(len("<h1>home</h1>"))
        assert home.headers["x-content-type-options"] == "nosniff"
        assert (await client.get("/index.html")).text == "<h1>home</h1>"
        assert (await client.get("/sub/")).text == "<h1>sub</h1>"
        # A directory without its "/" is redirected, so that its relative links work.
        moved = await client.get("/sub")
        assert (moved.status_code, moved.headers["location"]) == (308, "/sub/")
        # A directory without index.html is not listed.
        assert (await client.get("/empty/")).status_code == 404
        module = await client.get("/client/index.js")
        assert (module.status_code, module.text) == (200, "export const x = 1;\n")
        assert (await client.get("/client/")).status_code == 404  # no index.html there
        assert (await client.get("/client/a.txt")).status_code == 404  # not the site's
        big = await client.get("/big.bin")
        assert big.content == bytes(range(256)) * 1024
        empty = await client.get("/empty.txt")
        assert (empty.status_code, empty.content, empty.headers["content-length"]) == (
            200,
            b"",
            "0",
        )


async def test_the_rpc_routes_take_precedence(tmp_path: Path) -> None:
    (tmp_path / "site" / "rpc").mkdir(parents=True)
    (tmp_path / "site" / "rpc" / "index.html").write_text("shadowed")
    async with served(tmp_path) as (base, _, impl), httpx.AsyncClient(base_url=base) as client:
        described = await client.get("/rpc/")
        assert "interfaces" in described.json()
        assert (await client.get("/rpc/index.html")).json()["error"]["status"] == 404
        called = await client.post("/rpc/test.StaticCounter/1.0.0/bump", json=[])
        assert (called.status_code, called.json(), impl.calls) == (200, 1, 1)


CONTENT_TYPES = [
    ("a.js", "text/javascript; charset=utf-8"),
    ("a.mjs", "text/javascript; charset=utf-8"),
    ("a.css", "text/css; charset=utf-8"),
    ("a.json", "application/json"),
    ("a.js.map", "application/json"),
    ("a.svg", "image/svg+xml"),
    ("a.png", "image/png"),
    ("a.ico", "image/x-icon"),
    ("a.wasm", "application/wasm"),
    ("a.txt", "text/plain; charset=utf-8"),
    ("a.bin", "application/octet-stream"),
]


async def test_content_types(tmp_path: Path) -> None:
    async with served(tmp_path) as (base, _, _), httpx.AsyncClient(base_url=base) as client:
        for name, kind in CONTENT_TYPES:
            answer = await client.get(f"/{name}")
            assert (name, answer.status_code, answer.headers["content-type"]) == (name, 200, kind)
            assert answer.headers["x-content-type-options"] == "nosniff"


async def test_head_and_other_methods(tmp_path: Path) -> None:
    async with served(tmp_path) as (base, _, impl), httpx.AsyncClient(base_url=base) as client:
        head = await client.head("/a.txt")
        assert (head.status_code, head.content, head.headers["content-length"]) == (200, b"", "4")
        assert head.headers["content-type"] == "text/plain; charset=utf-8"
        for method in ("POST", "PUT", "DELETE", "PATCH", "OPTIONS"):
            answer = await client.request(method, "/a.txt")
            assert (method, answer.status_code, answer.headers["allow"]) == (
                method,
                405,
                "GET, HEAD",
            )
        # A path no mount holds (there is no "/" mount here) is 404, whatever the method.
    async with served(tmp_path / "2", static={"/client": tmp_path / "dist"}) as (b2, _, _):
        async with httpx.AsyncClient(base_url=b2) as client:
            assert (await client.get("/index.js")).status_code == 404
            assert (await client.post("/x")).status_code == 404
            assert (await client.get("/client/index.js")).status_code == 200
        assert impl.calls == 0


async def test_validators_and_304(tmp_path: Path) -> None:
    async with served(tmp_path) as (base, _, _), httpx.AsyncClient(base_url=base) as client:
        first = await client.get("/a.txt")
        etag, modified = first.headers["etag"], first.headers["last-modified"]
        again = await client.get("/a.txt", headers={"If-None-Match": etag})
        assert (again.status_code, again.content, again.headers["etag"]) == (304, b"", etag)
        listed = await client.get("/a.txt", headers={"If-None-Match": f'"other", W/{etag}'})
        assert listed.status_code == 304
        other = await client.get("/a.txt", headers={"If-None-Match": '"other"'})
        assert (other.status_code, other.text) == (200, "text")
        since = await client.get("/a.txt", headers={"If-Modified-Since": modified})
        assert since.status_code == 304
        old = await client.get(
            "/a.txt", headers={"If-Modified-Since": "Mon, 01 Jan 2001 00:00:00 GMT"}
        )
        assert old.status_code == 200
        garbage = await client.get("/a.txt", headers={"If-Modified-Since": "yesterday"})
        assert garbage.status_code == 200
        # An edit changes the ETag: the next conditional GET gets the new file.
        path = tmp_path / "site" / "a.txt"
        path.write_text("edited")
        os.utime(path, ns=(first_ns := path.stat().st_mtime_ns + 10**9, first_ns))
        edited = await client.get("/a.txt", headers={"If-None-Match": etag})
        assert (edited.status_code, edited.text) == (200, "edited")
        assert edited.headers["etag"] != etag


TRAVERSALS = [
    "/../secret.txt",
    "/sub/../../secret.txt",
    "/%2e%2e/secret.txt",
    "/%2E%2E/secret.txt",
    "/sub/%2e%2e/%2e%2e/secret.txt",
    "/..%2fsecret.txt",
    "/%2e%2e%2fsecret.txt",
    "/sub/..%5c..%5csecret.txt",
    "/sub\\..\\..\\secret.txt",
    "/a.txt%00.html",
    "/./a.txt",
    "/sub//index.html",
    "/.env",
    "/%2eenv",
    "/leak.txt",
    "/leakdir/secret.txt",
    "/client/../secret.txt",
    "/client/%2e%2e/%2e%2e/secret.txt",
    "//etc/passwd",
    "/%2fetc/passwd",
]


async def test_no_path_leads_out_of_the_root(tmp_path: Path) -> None:
    async with served(tmp_path) as (_, port, _):
        for target in TRAVERSALS:
            status, body = await raw(port, target)
            assert (target, status) == (target, 404), body
            for secret in ("the secret", "SECRET", "root:"):
                assert secret not in body
        # The control: the same requests reach files that are inside.
        assert await raw(port, "/a.txt") == (200, "text")
        assert await raw(port, "/%61.txt") == (200, "text")
        assert await raw(port, "/inside.txt") == (200, "text")  # a symlink inside the root


async def test_host_and_origin_checks_apply(tmp_path: Path) -> None:
    async with served(tmp_path, cors_origins=["http://app.example"]) as (_, port, _):
        status, _ = await raw(port, "/a.txt", extra="Origin: http://evil.example\r\n")
        assert status == 403
        status, _ = await raw(port, "/a.txt", extra="Origin: http://app.example\r\n")
        assert status == 200
    async with served(tmp_path / "2") as (_, port, _):
        stream = await trio.open_tcp_stream("127.0.0.1", port)
        async with stream:
            await stream.send_all(
                b"GET /index.html HTTP/1.1\r\nHost: rebound.example\r\nConnection: close\r\n\r\n"
            )
            data = b""
            while chunk := await stream.receive_some(65536):
                data += chunk
        assert data.split(b" ", 2)[1] == b"400"
        assert b"home" not in data


BAD_MOUNTS = [
    ({"client": "."}, "is not a URL path"),
    ({"/client/": "."}, "is not a URL path"),
    ({"/a/../b": "."}, "is not a URL path"),
    ({"/a//b": "."}, "is not a URL path"),
    ({"/a%2e": "."}, "is not a URL path"),
    ({"/rpc": "."}, "inside the RPC prefix"),
    ({"/rpc/x": "."}, "inside the RPC prefix"),
    ({"/": "no/such/dir"}, "is not a directory"),
]


@pytest.mark.parametrize(("static", "message"), BAD_MOUNTS)
def test_bad_mounts_are_refused_at_construction(static: dict[str, str], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        http.HttpApp(static=static)


def test_other_bad_static_arguments(tmp_path: Path) -> None:
    with pytest.raises(TypeError, match="must map URL mounts"):
        http.HttpApp(static=[str(tmp_path)])  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="non-empty prefix"):
        http.HttpApp(static={"/": tmp_path}, prefix="")
    (tmp_path / "f").write_text("")
    with pytest.raises(ValueError, match="not a directory"):
        http.HttpApp(static={"/": tmp_path / "f"})
    app = http.HttpApp(static={"/": tmp_path}, prefix="/api")
    assert app.static == {"/": os.path.realpath(tmp_path)}


def test_the_command_line_option() -> None:
    assert parse_static(["site", "/client=dist", "/x=a=b"]) == {
        "/": "site",
        "/client": "dist",
        "/x": "a=b",
    }
    assert parse_static(["odd=name"]) == {"/": "odd=name"}  # a DIR holding "="
    with pytest.raises(CliError, match="the mount /client is given twice"):
        parse_static(["/client=a", "/client=b"])
