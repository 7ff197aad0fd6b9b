"""tether's pytest plugin: fixtures for testing your own interfaces over every transport.

Installed with tether (the `pytest11` entry point `tether`), so a project's
tests get these fixtures with no conftest:

- `tether_transport`: the transport's name; every test that uses it (directly
  or through the fixtures below) runs once per transport picked with the
  `tether_transports` ini option or the `@pytest.mark.tether_transports(...)`
  marker: `memory`, `thread`, `http`, `websocket`.
- `rpc_backend`: a `tether.runtime.RpcBackend` connected over that transport to
  your `tether_manager` fixture (an `RpcManager`), for every interface it serves.
- `ipc_frontend`: a `tether.FrontendIpc` connected over that transport to your
  `tether_ipc` fixture (a `BackendIpc`).
- `tether_logs`: a `tether.testing.TetherLogs`, the test's log records with
  their ActivityIds.
- `tether_faults`: a `tether.testing.FaultyStreams` through which the
  connections above speak (not RPC over HTTP, which has no message stream).

The async fixtures run under pytest-trio (`trio_mode = true`, or
`@pytest.mark.trio` on the test). docs/testing.md has a whole suite.

This module imports only pytest when pytest loads it; tether's transports are
imported by the fixtures that use them.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from .. import BackendIpc, FrontendIpc, RpcManager
    from ..runtime import RpcBackend
    from ._faults import FaultyStreams
    from ._logs import TetherLogs

__all__ = [
    "DEFAULT_TIMEOUT",
    "DEFAULT_TRANSPORTS",
    "TRANSPORTS",
    "ipc_frontend",
    "rpc_backend",
    "tether_faults",
    "tether_logs",
    "tether_transport",
]

#: The transports a test runs on when neither the ini option nor the marker says.
DEFAULT_TRANSPORTS = ("memory", "http", "websocket")
#: Seconds a fixture may take to start, and again to stop, its server and connection.
DEFAULT_TIMEOUT = 10.0
#: The transports the fixtures serve on, by the names the option and the marker take.
TRANSPORTS = ("memory", "thread", "http", "websocket")
_MARKER = "tether_transports"


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addini(
        "tether_transports",
        "transports the tether fixtures run each test on: memory thread http websocket "
        f"(default: {' '.join(DEFAULT_TRANSPORTS)})",
        type="args",
        default=list(DEFAULT_TRANSPORTS),
    )
    parser.addini(
        "tether_timeout",
        f"seconds a tether fixture may take to start, and to stop (default {DEFAULT_TIMEOUT:g})",
        default=str(DEFAULT_TIMEOUT),
    )
    parser.addini(
        "tether_log_level",
        "lowest level tether_logs captures (default DEBUG)",
        default="DEBUG",
    )


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        f"{_MARKER}(*names): run this test on these tether transports only "
        f"(of {', '.join(TRANSPORTS)}), instead of the tether_transports ini option",
    )
    _check(config.getini("tether_transports"), "the tether_transports ini option", usage=True)
    _timeout(config)


def _check(names: list[str], where: str, *, usage: bool = False) -> list[str]:
    problem = None
    if not names:
        problem = f"{where} names no transport"
    for name in names:
        if name not in TRANSPORTS:
            problem = f"{where} names {name!r}, which is not a tether transport"
            break
    if len(set(names)) != len(names):
        problem = f"{where} names a transport twice: {' '.join(names)}"
    if problem is None:
        return names
    message = f"{problem}: expected some of {', '.join(TRANSPORTS)}"
    if usage:
        raise pytest.UsageError(message)
    pytest.fail(message, pytrace=False)


def _timeout(config: pytest.Config) -> float:
    value = config.getini("tether_timeout")
    try:
        timeout = float(value)
    except ValueError:
        timeout = -1.0
    if not timeout > 0:
        raise pytest.UsageError(
            f"tether_timeout must be a positive number of seconds, got {value!r}"
        )
    return timeout


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "tether_transport" not in metafunc.fixturenames:
        return
    marker = metafunc.definition.get_closest_marker(_MARKER)
    if marker is not None:
        if marker.kwargs:
            pytest.fail(
                f"@pytest.mark.{_MARKER} takes transport names only, got {sorted(marker.kwargs)}",
                pytrace=False,
            )
        names = _check(list(marker.args), f"@pytest.mark.{_MARKER} on {metafunc.function.__name__}")
    else:
        names = list(metafunc.config.getini("tether_transports"))
    metafunc.parametrize("tether_transport", names, indirect=True)


@pytest.fixture
def tether_transport(request: pytest.FixtureRequest) -> str:
    """The name of the transport this run of the test uses."""
    name: str = request.param
    return name


@pytest.fixture
def tether_logs(request: pytest.FixtureRequest) -> Iterator[TetherLogs]:
    """The test's log records (all loggers, from `tether_log_level` up) with their ActivityIds."""
    import logging

    from ._logs import TetherLogs

    name = request.config.getini("tether_log_level")
    level = logging.getLevelName(name.upper()) if isinstance(name, str) else name
    if not isinstance(level, int):
        raise pytest.UsageError(f"tether_log_level must be a logging level name, got {name!r}")
    logs = TetherLogs(level)
    logs.start()
    try:
        yield logs
    finally:
        logs.stop()


@pytest.fixture
def tether_faults(request: pytest.FixtureRequest, tether_transport: str) -> Iterator[FaultyStreams]:
    """The `FaultyStream`s of the connections the test opens (`.latest`, `.streams`).

    Fails the test at setup (not a skip) for `rpc_backend` over HTTP: each RPC
    call is an HTTP request of its own there, with no message stream to break.
    """
    if tether_transport == "http" and "rpc_backend" in request.fixturenames:
        pytest.fail(
            "tether_faults cannot break RPC over HTTP: each call is an HTTP request of its "
            "own, with no message stream to fault; run this test on the other transports "
            f'with @pytest.mark.{_MARKER}("memory", "thread", "websocket")',
            pytrace=False,
        )
    from ..runtime._faults import STREAM_WRAPPER
    from ._faults import FaultyStreams

    # Set in the thread's own context during setup, before the test's Trio run
    # starts: pytest-trio runs the async fixtures and the test in a copy of it
    # (so does a test's own trio.run), so every connection they open is wrapped:
    # the fixtures', their reconnects, and the test's own.
    streams = FaultyStreams()
    token = STREAM_WRAPPER.set(streams._wrap)
    try:
        yield streams
    finally:
        STREAM_WRAPPER.reset(token)


@pytest.fixture
async def rpc_backend(
    request: pytest.FixtureRequest,
    tether_transport: str,
    tether_manager: RpcManager,
) -> AsyncIterator[RpcBackend]:
    """A backend connected over `tether_transport` to your `tether_manager` fixture.

    `rpc_backend.get_client(Interface)` calls it; every interface the manager
    serves is checked at connect. Stopped (connection, then server) after the test.
    """
    from ._served import open_rpc_backend

    timeout = _timeout(request.config)
    async with open_rpc_backend(tether_transport, tether_manager, timeout=timeout) as backend:
        yield backend


@pytest.fixture
async def ipc_frontend(
    request: pytest.FixtureRequest,
    tether_transport: str,
    tether_ipc: BackendIpc,
) -> AsyncIterator[FrontendIpc]:
    """An IPC session over `tether_transport` with your `tether_ipc` fixture (a BackendIpc).

    Closed (session, then server) after the test.
    """
    from ._served import open_ipc_frontend

    timeout = _timeout(request.config)
    async with open_ipc_frontend(tether_transport, tether_ipc, timeout=timeout) as frontend:
        yield frontend
