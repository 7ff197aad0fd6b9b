"""The local transport's own promises: a private socket, clear errors, close reasons, limits.

Real Unix sockets throughout (the conformance suites are in test_local_conformance.py).
"""

from __future__ import annotations

import functools
import os
import socket
import stat
import struct
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import pytest
import trio

import tether
from tether.runtime import ConnectError, ConnectionClosed, PayloadTooLarge
from tether.transports import local
from tether.transports.local._socket import SocketStream

TIMEOUT = 10
_header = struct.Struct(">I")


class Echo(tether.RpcInterface):
    interface_name = "LocalEcho"
    interface_version = "1.0.0"

    async def echo(self, text: str) -> str: ...

    async def hold(self) -> str: ...


class EchoImpl(Echo):
    released: trio.Event
    started: trio.Event

    async def echo(self, text: str) -> str:
        return text

    async def hold(self) -> str:
        self.started.set()
        await self.released.wait()
        return "released"


def make_manager() -> tether.RpcManager:
    manager = tether.RpcManager()
    EchoImpl.started = trio.Event()
    EchoImpl.released = trio.Event()
    manager.register_impl(Echo, EchoImpl)
    return manager


@asynccontextmanager
async def served(**options: object) -> AsyncIterator[str]:
    async with trio.open_nursery() as nursery:
        path = await nursery.start(functools.partial(local.serve, make_manager(), **options))
        yield path
        nursery.cancel_scope.cancel()


def _read_close_reason(sock: socket.socket) -> str:
    """Read frames from a blocking socket until the close frame; return its reason."""
    data = b""
    while True:
        chunk = sock.recv(65536)
        if not chunk:
            raise AssertionError(f"no close frame before end-of-file, got {data!r}")
        data += chunk
        while len(data) >= 4:
            (size,) = _header.unpack_from(data)
            if size & 0x8000_0000:
                length = size & 0x7FFF_FFFF
                if len(data) >= 4 + length:
                    return data[4 : 4 + length].decode()
                break
            if len(data) < 4 + size:
                break
            data = data[4 + size :]


# ---------------------------------------------------------------------------
# Where the socket lives


async def test_the_socket_is_private_unguessable_and_removed() -> None:
    with trio.fail_after(TIMEOUT):
        async with served() as first, served() as second:
            for path in (first, second):
                directory = os.path.dirname(path)
                assert stat.S_IMODE(os.stat(directory).st_mode) == 0o700
                assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
                assert stat.S_ISSOCK(os.stat(path).st_mode)
                assert os.stat(directory).st_uid == os.getuid()
            # Random directory names: two servers never share one.
            assert os.path.dirname(first) != os.path.dirname(second)
            assert len(os.path.basename(os.path.dirname(first))) >= len("tether-") + 8
    assert not Path(first).exists()  # noqa: ASYNC240 (a stat, not I/O that waits)
    assert not Path(first).parent.exists()


async def test_a_given_path_is_bound_0600_and_removed_after(tmp_path: Path) -> None:
    path = tmp_path / "app.sock"
    with trio.fail_after(TIMEOUT):
        async with served(path=path) as bound:
            assert bound == str(path)
            assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
            # Nothing else is left beside it (the staging directory is gone).
            assert sorted(p.name for p in tmp_path.iterdir()) == ["app.sock"]  # noqa: ASYNC240
            async with local.connect(bound, interfaces=[Echo]) as backend:
                assert await backend.get_client(Echo).echo("hi") == "hi"
    assert list(tmp_path.iterdir()) == []  # noqa: ASYNC240


async def test_a_stale_socket_is_replaced(tmp_path: Path) -> None:
    path = tmp_path / "stale.sock"
    left = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    left.bind(str(path))  # bound, never listening: what a killed server leaves
    left.close()
    assert path.exists()
    with trio.fail_after(TIMEOUT):
        async with served(path=path) as bound, local.connect(bound, interfaces=[Echo]) as backend:
            assert await backend.get_client(Echo).echo("fresh") == "fresh"


async def test_a_file_that_is_not_a_socket_is_refused_and_kept(tmp_path: Path) -> None:
    path = tmp_path / "notes.txt"
    path.write_text("mine")
    with trio.fail_after(TIMEOUT), pytest.raises(FileExistsError, match="not a socket"):
        await local.serve(make_manager(), path)
    assert path.read_text() == "mine"


async def test_a_live_server_is_not_replaced(tmp_path: Path) -> None:
    path = tmp_path / "live.sock"
    with trio.fail_after(TIMEOUT):
        async with served(path=path):
            with pytest.raises(OSError, match="already listening"):
                await local.serve(make_manager(), path)
            # The first server still answers.
            async with local.connect(path, interfaces=[Echo]) as backend:
                assert await backend.get_client(Echo).echo("still") == "still"


async def test_bad_paths_and_options_are_refused_clearly(tmp_path: Path) -> None:
    with trio.fail_after(TIMEOUT):
        with pytest.raises(ValueError, match="over the 103"):
            await local.serve(make_manager(), tmp_path / ("x" * 120))
        with pytest.raises(TypeError, match="socket path"):
            async with local.connect(42, interfaces=[Echo]):  # type: ignore[arg-type]
                pass
        with pytest.raises(TypeError, match="needs an RpcManager"):
            await local.serve()
        with pytest.raises(ValueError, match="max_connections"):
            await local.serve(make_manager(), max_connections=0)


# ---------------------------------------------------------------------------
# Connecting


async def test_connect_errors_say_what_is_wrong(tmp_path: Path) -> None:
    with trio.fail_after(TIMEOUT):
        with pytest.raises(ConnectError, match="does not exist"):
            async with local.connect(tmp_path / "none.sock", interfaces=[Echo]):
                pass
        stale = tmp_path / "stale.sock"
        left = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        left.bind(str(stale))
        left.close()
        with pytest.raises(ConnectError, match="nothing is listening"):
            async with local.connect(stale, interfaces=[Echo]):
                pass


async def test_a_platform_without_unix_sockets_is_told_what_to_use(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delattr(socket, "AF_UNIX")
    with pytest.raises(NotImplementedError, match=r"websocket on 127\.0\.0\.1"):
        await local.serve(make_manager())
    with pytest.raises(NotImplementedError, match="Unix domain sockets"):
        async with local.connect("/tmp/x.sock", interfaces=[Echo]):
            pass


async def test_an_ipc_session_knows_the_client_process() -> None:
    class Ping(tether.IpcInterface):
        channel_name = "local-ping"
        version = "1.0.0"

        async def ping(self) -> str: ...

    seen: list[tether.IpcHandshake] = []

    def authorize(handshake: tether.IpcHandshake) -> bool:
        seen.append(handshake)
        return True

    backend = tether.BackendIpc(authorize=authorize)

    @backend.register
    class PingHandler(tether.IpcHandler, Ping):
        async def ping(self) -> str:
            return "pong"

    with trio.fail_after(TIMEOUT):
        async with trio.open_nursery() as nursery:
            path = await nursery.start(functools.partial(local.serve, ipc=backend))
            async with local.connect_ipc(path, channels=[Ping]) as frontend:
                assert await frontend.proxy(Ping).ping() == "pong"
            nursery.cancel_scope.cancel()
    [handshake] = seen
    assert handshake.transport == "local"
    assert handshake.remote == f"pid={os.getpid()},uid={os.getuid()}"
    assert handshake.client == handshake.remote  # one process, one client


# ---------------------------------------------------------------------------
# Closing, with a reason


async def test_a_server_that_stops_tells_its_clients_why() -> None:
    with trio.fail_after(TIMEOUT):
        async with trio.open_nursery() as outer:
            server = trio.CancelScope()

            async def serve(*, task_status: trio.TaskStatus[str]) -> None:
                with server:
                    await local.serve(make_manager(), task_status=task_status)

            path = await outer.start(serve)
            failed: list[ConnectionClosed] = []

            async def hold(client: Echo) -> None:
                try:
                    await client.hold()
                except ConnectionClosed as exc:
                    failed.append(exc)

            async with (
                local.connect(path, interfaces=[Echo]) as backend,
                trio.open_nursery() as nursery,
            ):
                nursery.start_soon(hold, backend.get_client(Echo))
                await EchoImpl.started.wait()
                server.cancel()
            [closed] = failed
            assert closed.reason == "the server is shutting down"


async def test_connections_over_the_limit_are_closed_saying_so() -> None:
    with trio.fail_after(TIMEOUT):
        async with served(max_connections=1) as path, local.connect(path, interfaces=[Echo]):
            with pytest.raises(tether.TetherError, match="the server is full"):
                async with local.connect(path, interfaces=[Echo]):
                    pass


async def test_a_connection_that_never_says_hello_is_closed() -> None:
    with trio.fail_after(TIMEOUT):
        async with served(handshake_timeout=0.2) as path:
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            with sock:
                sock.connect(path)
                reason = await trio.to_thread.run_sync(_read_close_reason, sock)
    assert reason == "no hello within 0.2 s of connecting"


# ---------------------------------------------------------------------------
# Messages: size limits, large messages, fairness


async def test_a_message_over_the_servers_limit_closes_the_connection_saying_so() -> None:
    with trio.fail_after(TIMEOUT):
        async with (
            served(max_message_size=64 * 1024) as path,
            local.connect(path, interfaces=[Echo]) as backend,
        ):
            client = backend.get_client(Echo)
            with pytest.raises(ConnectionClosed) as caught:
                await client.echo("x" * 100_000)
    assert caught.value.reason is not None
    assert "message too big" in caught.value.reason


async def test_a_message_over_the_clients_own_limit_fails_alone() -> None:
    with trio.fail_after(TIMEOUT):
        async with (
            served() as path,
            local.connect(path, interfaces=[Echo], max_message_size=4096) as backend,
        ):
            client = backend.get_client(Echo)
            with pytest.raises(PayloadTooLarge, match="4096"):
                await client.echo("x" * 5000)
            assert await client.echo("small") == "small"


async def test_large_messages_cross_whole_and_in_order_among_small_ones() -> None:
    big = "".join(chr(ord("a") + n % 26) for n in range(8 * 1024 * 1024))
    results: dict[int, str] = {}
    with trio.fail_after(30):
        async with served() as path, local.connect(path, interfaces=[Echo]) as backend:
            client = backend.get_client(Echo)

            async def one(n: int) -> None:
                results[n] = await client.echo(big if n % 4 == 0 else f"small {n}")

            async with trio.open_nursery() as nursery:
                for n in range(12):
                    nursery.start_soon(one, n)
    assert sorted(results) == list(range(12))
    for n, got in results.items():
        assert got == (big if n % 4 == 0 else f"small {n}")


async def test_a_flood_of_buffered_messages_does_not_starve_the_loop() -> None:
    left, right = socket.socketpair()
    count = 1_000
    frames = b"".join(_header.pack(1) + b"x" for _ in range(count))
    stream = SocketStream(right, name="test")
    try:
        left.setblocking(True)
        left.sendall(frames)  # all buffered before the first receive
        ticks = 0

        async def tick() -> None:
            nonlocal ticks
            while True:
                await trio.lowlevel.checkpoint()
                ticks += 1

        with trio.fail_after(TIMEOUT):
            async with trio.open_nursery() as nursery:
                nursery.start_soon(tick)
                await trio.lowlevel.checkpoint()
                before = ticks
                for _ in range(count):
                    assert await stream.receive_message() == b"x"
                ran = ticks - before
                nursery.cancel_scope.cancel()
        # The reader yields at least once every 64 messages it had buffered.
        assert ran >= count // 64 - 1
    finally:
        left.close()
        await stream.aclose()


async def test_the_peer_sees_end_of_file_as_a_closed_connection() -> None:
    left, right = socket.socketpair()
    stream = SocketStream(right, name="test")
    left.close()
    with trio.fail_after(TIMEOUT), pytest.raises(ConnectionClosed) as caught:
        await stream.receive_message()
    assert caught.value.reason == "the peer closed the connection"
    with pytest.raises(ConnectionClosed):
        await stream.send_message(b"late")


def test_a_runtime_directory_this_user_cannot_write_is_passed_over(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # After `su`, $XDG_RUNTIME_DIR may still name the other user's directory.
    # (As root no mode stops mkdtemp, so the refusal is made here.)
    from tether.transports.local import _paths

    theirs = tmp_path / "theirs"
    theirs.mkdir()
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(theirs))
    real_mkdtemp = _paths.tempfile.mkdtemp

    def mkdtemp(prefix: str, dir: str) -> str:
        if dir == str(theirs):
            raise PermissionError(13, "Permission denied", dir)
        return real_mkdtemp(prefix=prefix, dir=dir)

    monkeypatch.setattr(_paths.tempfile, "mkdtemp", mkdtemp)
    directory = _paths.private_directory()
    try:
        assert os.path.dirname(directory) == _paths.tempfile.gettempdir()
        assert stat.S_IMODE(os.stat(directory).st_mode) == 0o700
    finally:
        os.rmdir(directory)


def test_a_file_made_at_the_path_while_binding_is_kept_and_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Another process of this user makes a file at the path between the check
    # and the socket's arrival there: it must not be silently replaced.
    from tether.transports.local import _paths

    path = tmp_path / "app.sock"
    checked = _paths._clear_stale

    def check_then_race(where: str) -> None:
        checked(where)
        path.write_text("theirs")

    monkeypatch.setattr(_paths, "_clear_stale", check_then_race)
    with pytest.raises(FileExistsError, match="made by someone else"):  # noqa: SIM117
        with _paths.bind_private(str(path), 8):
            pass
    assert path.read_text() == "theirs"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["app.sock"]  # no staging left


def test_a_spawned_backends_leftovers_are_removed_with_its_directory(tmp_path: Path) -> None:
    # A backend killed while binding leaves its staging directory and socket.
    from tether.transports.local._spawn import _remove

    directory = tmp_path / "private"
    staging = directory / ".tether-abc123"
    staging.mkdir(parents=True)
    for where in (staging / "tether.sock", directory / "tether.sock"):
        left = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        left.bind(str(where))
        left.close()
    _remove(str(directory))
    assert not directory.exists()
