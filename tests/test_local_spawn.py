"""`local.spawn` and `local.serve_paired`: a backend process paired with its frontend.

Every test starts real processes (tests/local_paired_backend.py, or a one-line
Python program) and stops each one itself. Times are measured with the real
clock: the SIGKILL tests print what they measured (run with `-s` to see).
"""

from __future__ import annotations

import logging
import os
import signal
import socket
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import trio
from local_paired_backend import PairedIpc, PairedRpc

import tether
from tether.contexts import ContextFilter
from tether.runtime import ConnectError, ConnectionClosed
from tether.transports import local

HERE = Path(__file__).resolve().parent
BACKEND = HERE / "local_paired_backend.py"
FRONTEND = HERE / "local_paired_frontend.py"
#: The children must import this tree's tether, and the backend module.
SOURCES = Path(tether.__file__).resolve().parents[1]
ENV = {**os.environ, "PYTHONPATH": os.pathsep.join([str(SOURCES), str(HERE)])}
#: A Python process has to start and import tether, on a machine others share.
TIMEOUT = 20.0
KILLED = "the backend process exited with status -9 (SIGKILL)"


def backend(mode: str = "serve") -> list[str]:
    return [sys.executable, str(BACKEND), mode]


def python(code: str) -> list[str]:
    return [sys.executable, "-c", code]


def gone(path: str) -> bool:
    return not os.path.lexists(path)


class Recorder(logging.Handler):
    """Keeps the records it is handed, and wakes whoever waits for one."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []
        self._changed = trio.Event()

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)
        self._changed.set()
        self._changed = trio.Event()

    async def wait_for(self, predicate: Callable[[logging.LogRecord], bool]) -> logging.LogRecord:
        while True:
            for record in self.records:
                if predicate(record):
                    return record
            await self._changed.wait()

    async def wait_for_message(self, message: str) -> logging.LogRecord:
        return await self.wait_for(lambda record: record.getMessage() == message)


@pytest.fixture
def recorder() -> Iterator[Recorder]:
    """Records of the backend's `paired_backend` and tether's `tether.local` loggers."""
    handler = Recorder()
    handler.addFilter(ContextFilter())
    loggers = [logging.getLogger("paired_backend"), logging.getLogger("tether.local")]
    levels = [logger.level for logger in loggers]
    for logger in loggers:
        logger.addHandler(handler)
        logger.setLevel(logging.DEBUG)
    yield handler
    for logger, level in zip(loggers, levels, strict=True):
        logger.removeHandler(handler)
        logger.setLevel(level)


# -- calls through the handle ------------------------------------------------------


async def test_rpc_and_ipc_through_the_handle_then_the_backend_exits_by_itself() -> None:
    with trio.fail_after(TIMEOUT):
        async with local.spawn(backend(), env=ENV) as paired:
            directory = os.path.dirname(paired.path)
            assert os.stat(directory).st_mode & 0o777 == 0o700
            assert os.stat(paired.path).st_mode & 0o777 == 0o600
            assert paired.returncode is None
            for _ in range(2):  # each usable more than once
                async with paired.connect(interfaces=[PairedRpc]) as connection:
                    client = connection.get_client(PairedRpc)
                    assert await client.add(2, 3) == 5
                    assert await client.pid() == paired.pid
                async with paired.connect_ipc(channels=[PairedIpc]) as session:
                    assert await session.proxy(PairedIpc).add(40, 2) == 42
        # It saw the lifeline close and exited on its own: no signal.
        assert paired.returncode == 0
        assert gone(directory)
        with pytest.raises(ConnectError, match="spawn block has ended"):
            async with paired.connect(interfaces=[PairedRpc]):
                pass


async def test_leaving_the_block_closes_sessions_opened_through_it() -> None:
    with trio.fail_after(TIMEOUT):
        async with trio.open_nursery() as nursery:
            async with local.spawn(backend(), env=ENV) as paired:

                async def hold(task_status: trio.TaskStatus[tether.FrontendIpc]) -> None:
                    # A session whose block outlives spawn's.
                    async with paired.connect_ipc(channels=[PairedIpc]) as session:
                        task_status.started(session)
                        await session.wait_closed()

                session = await nursery.start(hold)
                assert await session.proxy(PairedIpc).add(1, 1) == 2
            assert session.closed_reason == "the frontend stopped the backend"
            assert paired.returncode == 0


# -- starting ----------------------------------------------------------------------


async def test_a_backend_that_exits_before_ready_gives_its_status_and_stderr() -> None:
    command = python("import sys; sys.exit('cannot open the model: no such file')")
    with trio.fail_after(TIMEOUT):
        started = trio.current_time()
        with pytest.raises(local.BackendStartError) as caught:
            async with local.spawn(command, env=ENV, ready_timeout=15.0):
                pytest.fail("the block must not run")
        elapsed = trio.current_time() - started
    error = caught.value
    assert isinstance(error, ConnectError)
    assert error.returncode == 1
    assert error.stderr_tail == "cannot open the model: no such file"
    assert "exited with status 1 before it was ready" in str(error)
    assert "cannot open the model: no such file" in str(error)
    assert elapsed < 5.0, "an exit is reported when it happens, not at ready_timeout"


async def test_a_backend_that_hangs_is_stopped_and_reported_after_ready_timeout() -> None:
    command = python(
        "import sys, time; print('loading the model', file=sys.stderr, flush=True); time.sleep(60)"
    )
    with trio.fail_after(TIMEOUT):
        started = trio.current_time()
        with pytest.raises(local.BackendStartError) as caught:
            async with local.spawn(command, env=ENV, ready_timeout=1.5, kill_timeout=1.0):
                pytest.fail("the block must not run")
        elapsed = trio.current_time() - started
    error = caught.value
    assert error.returncode == -signal.SIGTERM  # stopped with SIGTERM, which it did not handle
    assert error.stderr_tail == "loading the model"
    assert "was not ready within 1.5 s" in str(error)
    assert "loading the model" in str(error)
    assert 1.5 <= elapsed < 1.5 + 1.0 + 1.0


async def test_a_command_that_cannot_run_is_a_start_error() -> None:
    with trio.fail_after(TIMEOUT), pytest.raises(local.BackendStartError) as caught:
        async with local.spawn(["/nonexistent/tether-backend"], env=ENV):
            pytest.fail("the block must not run")
    assert caught.value.returncode is None
    assert "could not start the backend '/nonexistent/tether-backend'" in str(caught.value)


@pytest.mark.parametrize("command", ["python -m my_backend", b"backend", []])
async def test_command_must_be_a_list_of_arguments(command: object) -> None:
    with pytest.raises(TypeError, match="list of arguments"):
        async with local.spawn(command):  # type: ignore[arg-type]
            pass


async def test_times_must_be_positive() -> None:
    with pytest.raises(ValueError, match="stop_timeout"):
        async with local.spawn(backend(), stop_timeout=0):
            pass


# -- stopping ----------------------------------------------------------------------


async def test_a_backend_that_ignores_sigterm_is_killed_after_the_grace_periods(
    recorder: Recorder,
) -> None:
    with trio.fail_after(TIMEOUT):
        async with local.spawn(
            backend("stubborn"), env=ENV, stop_timeout=0.3, kill_timeout=0.3
        ) as paired:
            async with paired.connect(interfaces=[PairedRpc]) as connection:
                assert await connection.get_client(PairedRpc).add(1, 2) == 3
            left = trio.current_time()
        elapsed = trio.current_time() - left
    assert paired.returncode == -signal.SIGKILL
    assert 0.6 <= elapsed < 0.6 + 1.5
    messages = [r.getMessage() for r in recorder.records if r.name == "tether.local"]
    assert any(
        "did not exit within 0.3 s of its lifeline closing: sending SIGTERM" in m for m in messages
    )
    assert any("did not exit within 0.3 s of SIGTERM: sending SIGKILL" in m for m in messages)


async def test_sigterm_ends_the_backend_gracefully(recorder: Recorder) -> None:
    with trio.fail_after(TIMEOUT):
        async with local.spawn(backend(), env=ENV) as paired:
            os.kill(paired.pid, signal.SIGTERM)
            assert await paired.wait() == 0
            record = await recorder.wait_for_message("stopping: got SIGTERM")
            assert record.backend_pid == paired.pid  # type: ignore[attr-defined]
            with pytest.raises(ConnectError, match="exited with status 0"):
                async with paired.connect(interfaces=[PairedRpc]):
                    pass
    assert paired.stderr_tail == ""  # no traceback


# -- a backend killed --------------------------------------------------------------


async def test_backend_killed_fails_pending_calls_and_the_session_within_a_second(
    recorder: Recorder,
) -> None:
    failed: dict[str, tuple[ConnectionClosed, float]] = {}
    with trio.fail_after(TIMEOUT):
        async with (
            local.spawn(backend(), env=ENV) as paired,
            paired.connect(interfaces=[PairedRpc]) as connection,
            paired.connect_ipc(channels=[PairedIpc]) as session,
        ):

            async def pending(name: str, call: Callable[[str], object]) -> None:
                with pytest.raises(ConnectionClosed) as caught:
                    await call(name)  # type: ignore[misc]
                failed[name] = (caught.value, trio.current_time())

            async with trio.open_nursery() as nursery:
                nursery.start_soon(pending, "rpc", connection.get_client(PairedRpc).hang)
                nursery.start_soon(pending, "ipc", session.proxy(PairedIpc).hang)
                await recorder.wait_for_message("started rpc")
                await recorder.wait_for_message("started ipc")
                killed = trio.current_time()
                os.kill(paired.pid, signal.SIGKILL)
            reason = await session.wait_closed()
            closed = trio.current_time()
            with pytest.raises(ConnectError, match="exited with status -9"):
                async with paired.connect_ipc(channels=[PairedIpc]):
                    pass
    times = {name: at - killed for name, (_, at) in failed.items()}
    times["session"] = closed - killed
    print(f"\nbackend SIGKILL -> ConnectionClosed: {times}")
    assert reason == KILLED
    assert session.closed_reason == KILLED
    for name, (exc, _) in failed.items():
        assert exc.reason == KILLED, name
    assert max(times.values()) < 1.0, times
    assert paired.returncode == -signal.SIGKILL


async def test_frontend_killed_the_backend_exits_within_a_second() -> None:
    with trio.fail_after(TIMEOUT):
        frontend = await trio.lowlevel.open_process(
            [sys.executable, str(FRONTEND)], env=ENV, stdout=subprocess.PIPE
        )
        pidfd = -1
        try:
            assert frontend.stdout is not None
            line = b""
            while not line.endswith(b"\n"):
                chunk = await frontend.stdout.receive_some()
                assert chunk, "the frontend exited before its backend was ready"
                line += chunk
            word, pid_text, path = line.decode().split()
            assert word == "backend"
            pidfd = os.pidfd_open(int(pid_text))
            frontend.kill()
            killed = trio.current_time()
            await trio.lowlevel.wait_readable(pidfd)  # the backend has exited
            elapsed = trio.current_time() - killed
            await frontend.wait()
        finally:
            if frontend.returncode is None:
                frontend.kill()
                with trio.CancelScope(shield=True):
                    await frontend.wait()
            if pidfd >= 0:
                # Should the backend live on (the test failed), it is stopped here.
                signal.pidfd_send_signal(pidfd, signal.SIGKILL)
                os.close(pidfd)
            if frontend.stdout is not None:
                await frontend.stdout.aclose()
    print(f"\nfrontend SIGKILL -> backend exited: {elapsed:.3f} s")
    assert elapsed < 1.0
    # The backend removed its socket and the directory the frontend could not.
    assert gone(os.path.dirname(path))


# -- logs --------------------------------------------------------------------------


async def test_backend_records_reach_the_frontend_with_their_contexts(recorder: Recorder) -> None:
    secret = "Bearer s3cret-value-never-logged"
    with trio.fail_after(TIMEOUT), tether.activity() as spawning:
        async with (
            local.spawn(backend(), env=ENV) as paired,
            paired.connect(interfaces=[PairedRpc], authorization=secret) as connection,
            paired.connect_ipc(channels=[PairedIpc], application_id="desk") as session,
        ):
            with tether.activity() as action:
                seen = await connection.get_client(PairedRpc).say("hello over rpc")
                seen_ipc = await session.proxy(PairedIpc).say("hello over ipc")
            over_rpc = await recorder.wait_for_message("hello over rpc")
            over_ipc = await recorder.wait_for_message("hello over ipc")
            serving = await recorder.wait_for(
                lambda r: r.getMessage().startswith("serving on local socket")
            )
    assert seen == seen_ipc == action.activity_id
    for record in (over_rpc, over_ipc):
        assert record.name == "paired_backend"
        assert record.levelno == logging.INFO
        assert record.activity_id == action.activity_id  # type: ignore[attr-defined]
        assert record.backend_pid == record.process == paired.pid  # type: ignore[attr-defined]
        assert record.funcName == "_say"
    assert over_rpc.operation == "tests.Paired.say"  # type: ignore[attr-defined]
    assert over_ipc.application_id == "desk"  # type: ignore[attr-defined]
    assert over_ipc.session_id not in (None, "-")  # type: ignore[attr-defined]
    # A record outside any request has no ActivityId: not the one spawn ran in.
    assert serving.activity_id == "-"  # type: ignore[attr-defined]
    assert spawning.activity_id not in {
        getattr(r, "activity_id", None) for r in recorder.records if r.name != "tether.local"
    }
    for record in recorder.records:
        assert "s3cret" not in repr(vars(record))


async def test_the_frontends_logger_levels_apply_to_backend_records(recorder: Recorder) -> None:
    logging.getLogger("paired_backend").setLevel(logging.WARNING)
    with trio.fail_after(TIMEOUT):
        async with (
            local.spawn(backend(), env=ENV) as paired,
            paired.connect(interfaces=[PairedRpc]) as connection,
        ):
            await connection.get_client(PairedRpc).say("not shown")
    # The backend's last records have arrived once the block has ended.
    assert [r for r in recorder.records if r.name == "paired_backend"] == []
    assert any(r.getMessage().startswith("stopping: the frontend closed") for r in recorder.records)


# -- serve_paired outside a spawned process -------------------------------------------


async def test_serve_paired_outside_spawn_says_so(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("TETHER_LOCAL_SOCKET", raising=False)
    monkeypatch.delenv("TETHER_LOCAL_LIFELINE", raising=False)
    with pytest.raises(
        local.NotPaired, match="TETHER_LOCAL_SOCKET and TETHER_LOCAL_LIFELINE not set"
    ):
        await local.serve_paired(ipc=tether.BackendIpc())


@pytest.mark.parametrize("kind", ["number", "closed", "file", "udp"])
async def test_serve_paired_refuses_a_malformed_lifeline(
    kind: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    opened: list[int] = []
    if kind == "number":
        value, expected = "three", "is not a file descriptor number"
    elif kind == "closed":
        fd = os.open(tmp_path / "x", os.O_CREAT | os.O_RDONLY)
        os.close(fd)
        value, expected = str(fd), "is not an open file descriptor"
    elif kind == "file":
        fd = os.open(tmp_path / "x", os.O_CREAT | os.O_RDONLY)
        opened.append(fd)
        value, expected = str(fd), "is not a socket"
    else:
        udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        opened.append(udp.detach())
        value, expected = str(opened[0]), "is not a Unix stream socket"
    monkeypatch.setenv("TETHER_LOCAL_SOCKET", str(tmp_path / "tether.sock"))
    monkeypatch.setenv("TETHER_LOCAL_LIFELINE", value)
    try:
        with pytest.raises(local.NotPaired, match=expected):
            await local.serve_paired(ipc=tether.BackendIpc())
        assert os.environ["TETHER_LOCAL_LIFELINE"] == value  # left as it was
        for fd in opened:
            os.fstat(fd)  # still open: not closed by the refusal
    finally:
        for fd in opened:
            os.close(fd)
