"""The public surface, and the architecture the folder tree promises (STYLE.md)."""

import ast
import importlib
import types
from pathlib import Path

import pytest

import tether
import tether.contexts
import tether.runtime

PUBLIC_MODULES = [
    "tether",
    "tether.contexts",
    "tether.runtime",
    "tether.transports",
    "tether.transports.memory",
    "tether.transports.http",
    "tether.transports.websocket",
    "tether.transports.local",
    "tether.transports.abc",
    "tether.testing",
    "tether.otel",
]


def _isort_key(name: str) -> tuple[int, str]:
    """The order RUF022 and isort give `__all__`: CONSTANTS, then Classes, then functions."""
    if name.isupper():
        return (0, name)
    if name[:1].isupper():
        return (1, name)
    return (2, name)


@pytest.mark.parametrize("modname", PUBLIC_MODULES)
def test_all_is_sorted_and_unique(modname: str) -> None:
    """`__all__` is kept sorted (constants, classes, functions) with no duplicates."""
    module = importlib.import_module(modname)
    assert len(set(module.__all__)) == len(module.__all__)
    assert list(module.__all__) == sorted(module.__all__, key=_isort_key)


@pytest.mark.parametrize("modname", PUBLIC_MODULES)
def test_every_name_in_all_exists(modname: str) -> None:
    """Every name `__all__` promises can be imported from the module."""
    module = importlib.import_module(modname)
    missing = [name for name in module.__all__ if not hasattr(module, name)]
    assert missing == []


@pytest.mark.parametrize("modname", PUBLIC_MODULES)
def test_every_public_attribute_is_in_all(modname: str) -> None:
    """Nothing is public by accident: a public attribute that is not a submodule is in `__all__`."""
    module = importlib.import_module(modname)
    public = {
        name
        for name, value in vars(module).items()
        if not name.startswith("_") and not isinstance(value, types.ModuleType)
    }
    assert public - set(module.__all__) == set()


def test_top_level_all_is_exactly_this() -> None:
    """The exact top-level surface: adding or removing a name must be a deliberate change."""
    assert tether.__all__ == [
        "BackendGroup",
        "BackendIpc",
        "CallInfo",
        "CallMayHaveRun",
        "CallNotSent",
        "ConnectError",
        "ConnectionClosed",
        "ConnectionState",
        "CredentialProvider",
        "DeadlineExceeded",
        "Forbidden",
        "FrontendIpc",
        "IncompatibleVersion",
        "Installed",
        "Interceptor",
        "InvalidRequest",
        "IpcHandler",
        "IpcHandshake",
        "IpcInterface",
        "IpcSession",
        "NotFound",
        "NotificationHandler",
        "NotificationInterface",
        "PayloadTooLarge",
        "Proceed",
        "Progress",
        "RemoteError",
        "RequestContext",
        "RetryPolicy",
        "RpcInterface",
        "RpcManager",
        "Stream",
        "StreamMessages",
        "StreamWindow",
        "TetherError",
        "TransportError",
        "Unauthorized",
        "Unavailable",
        "activity",
        "cacheable",
        "current_context",
        "current_session",
        "idempotent",
        "install_interceptor",
        "is_version_compatible",
        "long_running",
        "metadata",
        "on_progress",
        "open_stream",
        "remote_error",
        "report_progress",
    ]


def test_http_surface_is_exactly_this() -> None:
    """The HTTP transport's public names: adding or removing one must be deliberate."""
    import tether.transports.http as http

    assert http.__all__ == [
        "DEFAULT_BODY_TIMEOUT",
        "DEFAULT_IPC_GRACE_PERIOD",
        "DEFAULT_IPC_PING_INTERVAL",
        "DEFAULT_IPC_PING_TIMEOUT",
        "DEFAULT_KEEP_ALIVE_TIMEOUT",
        "DEFAULT_MAX_BODY_SIZE",
        "DEFAULT_READ_TIMEOUT",
        "DEFAULT_SEND_TIMEOUT",
        "HttpApp",
        "HttpBackend",
        "connect",
        "connect_ipc",
        "serve",
    ]


def test_websocket_surface_is_exactly_this() -> None:
    """The WebSocket transport's public names: adding or removing one must be deliberate."""
    import tether.transports.websocket as websocket

    assert websocket.__all__ == [
        "DEFAULT_MAX_MESSAGE_SIZE",
        "DEFAULT_PING_INTERVAL",
        "DEFAULT_PING_TIMEOUT",
        "Authorize",
        "Handshake",
        "WebSocketSettings",
        "connect",
        "connect_ipc",
        "serve",
    ]


def test_memory_surface_is_exactly_this() -> None:
    """The in-process transport's public names: adding or removing one must be deliberate."""
    import tether.transports.memory as memory

    assert memory.__all__ == [
        "DEFAULT_MAX_BUFFER_BYTES",
        "DEFAULT_MAX_MESSAGE_SIZE",
        "connect",
        "connect_ipc",
        "stream_pair",
    ]


def test_runtime_surface_is_exactly_this() -> None:
    """The runtime's public names (what transports are written against): deliberate too."""
    assert tether.runtime.__all__ == [
        "CONVERTER",
        "DEFAULT_MAX_PENDING_BYTES",
        "DEFAULT_MAX_PENDING_NOTIFICATIONS",
        "DEFAULT_MAX_SESSIONS_PER_CLIENT",
        "DEFAULT_RETRY",
        "DEFAULT_SLOW_FRONTEND_TIMEOUT",
        "DEFAULT_STREAM_WINDOW",
        "NO_RETRY",
        "PROTOCOL_VERSION",
        "BackendGroup",
        "BackendIpc",
        "BinaryMessage",
        "CachePolicy",
        "CallInfo",
        "CallMayHaveRun",
        "CallNotSent",
        "ClientOptions",
        "ConnectError",
        "ConnectionClosed",
        "ConnectionState",
        "CredentialProvider",
        "DeadlineExceeded",
        "Dispatcher",
        "Forbidden",
        "FrontendIpc",
        "IncompatibleVersion",
        "Installed",
        "Interceptor",
        "InvalidRequest",
        "IpcHandler",
        "IpcHandshake",
        "IpcInterface",
        "IpcSession",
        "Listener",
        "LongRunningPolicy",
        "MessageStream",
        "NotFound",
        "NotificationHandler",
        "NotificationInterface",
        "Operation",
        "OperationPolicy",
        "PayloadTooLarge",
        "Proceed",
        "Progress",
        "ReconnectingBackend",
        "RemoteError",
        "RetryPolicy",
        "RpcBackend",
        "RpcConnection",
        "RpcConnectionStatistics",
        "RpcInterface",
        "RpcManager",
        "RpcManagerStatistics",
        "StateWatch",
        "Stream",
        "StreamMessages",
        "StreamWindow",
        "TetherError",
        "TransportError",
        "Unauthorized",
        "Unavailable",
        "cacheable",
        "current_session",
        "idempotent",
        "install_interceptor",
        "is_version_compatible",
        "long_running",
        "make_converter",
        "on_progress",
        "open_ipc_connection",
        "open_rpc_connection",
        "open_stream",
        "remote_error",
        "report_progress",
        "serve_ipc_session",
        "serve_rpc_session",
    ]


def test_contexts_trace_context_names_are_public() -> None:
    """W3C Trace Context interop is part of `tether.contexts`."""
    for name in ("activity_id_from_traceparent", "trace_id_of", "traceparent_for"):
        assert name in tether.contexts.__all__


def test_top_level_names_are_the_subpackages_objects() -> None:
    """`tether.X` is the very object the subpackage exports, not a copy or a wrapper."""
    for name in tether.__all__:
        source = "current" if name == "current_context" else name
        owners = [
            getattr(package, source)
            for package in (tether.runtime, tether.contexts)
            if hasattr(package, source)
        ]
        assert owners, name
        assert all(owner is getattr(tether, name) for owner in owners), name


# ---------------------------------------------------------------------------
# Architecture: contexts <- runtime <- transports

SRC = Path(tether.__file__).resolve().parent


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(SRC.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def imported_modules(source: str, modname: str, *, is_package: bool) -> set[str]:
    """Every absolute module name `source` imports, relative imports resolved.

    `from .. import transports` counts as importing `tether.transports`.
    """
    package = modname if is_package else modname.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                if node.level > 1:
                    base = base[: -(node.level - 1)]
                origin = ".".join([*base, node.module] if node.module else base)
            else:
                origin = node.module or ""
            found.add(origin)
            found.update(f"{origin}.{alias.name}" for alias in node.names)
    return found


def _violations(subpackage: str, forbidden: tuple[str, ...]) -> list[str]:
    files = sorted((SRC / subpackage).rglob("*.py"))
    assert files, f"no source files under {SRC / subpackage}"
    bad = []
    for path in files:
        modname = _module_name(path)
        imports = imported_modules(
            path.read_text(encoding="utf-8"), modname, is_package=path.name == "__init__.py"
        )
        for name in sorted(imports):
            if any(name == f or name.startswith(f + ".") for f in forbidden):
                bad.append(f"{modname} imports {name}")
    return bad


def test_contexts_imports_neither_runtime_nor_transports() -> None:
    """`contexts` is the bottom layer: it knows nothing of the runtime or the transports."""
    assert _violations("contexts", ("tether.runtime", "tether.transports")) == []


def test_runtime_imports_no_transport() -> None:
    """`runtime` knows no transport (relative `..transports` imports count)."""
    assert _violations("runtime", ("tether.transports",)) == []


@pytest.mark.parametrize(
    ("source", "modname", "is_package", "expected"),
    [
        ("from ..transports import memory", "tether.runtime._x", False, "tether.transports"),
        ("from .. import transports", "tether.runtime._x", False, "tether.transports"),
        (
            "from ...transports.memory import connect",
            "tether.runtime.sub._x",
            False,
            "tether.transports.memory",
        ),
        ("from ..transports import x", "tether.runtime", True, "tether.transports"),
        ("import tether.transports.abc", "tether.runtime._x", False, "tether.transports.abc"),
        ("from tether import transports", "tether.runtime._x", False, "tether.transports"),
        ("from . import _codec", "tether.runtime", True, "tether.runtime._codec"),
        ("from ._codec import dumps", "tether.runtime._x", False, "tether.runtime._codec"),
    ],
)
def test_import_resolution_used_by_the_architecture_tests(
    source: str, modname: str, is_package: bool, expected: str
) -> None:
    """The import checker sees the forbidden imports in every spelling, so it can fail."""
    assert expected in imported_modules(source, modname, is_package=is_package)


def test_each_transport_lives_in_a_folder_of_its_own() -> None:
    """One room per transport (STYLE.md): `transports/` holds folders and the contracts."""
    loose = sorted(
        path.name
        for path in (SRC / "transports").glob("*.py")
        # `_web`: the Origin and Host policy both web servers apply; `_gather`:
        # the gathered writes (sendmsg) of the WebSocket and HTTP transports;
        # `_tls`: the TLS contexts and handshake errors of both.
        if path.name not in ("__init__.py", "abc.py", "_web.py", "_gather.py", "_tls.py")
    )
    assert loose == []
    folders = sorted(
        path.name for path in (SRC / "transports").iterdir() if (path / "__init__.py").exists()
    )
    assert folders == ["http", "local", "memory", "websocket"]


def test_no_transport_imports_another_but_the_http_servers_websocket_route() -> None:
    """A transport knows the runtime, not other transports; the one exception is named here."""
    # HttpApp serves `{prefix}/ws` with the WebSocket transport's settings and ASGI stream.
    allowed = ("tether.transports.websocket._endpoint", "tether.transports.websocket._streams")
    names = ("http", "local", "memory", "websocket")
    bad = []
    for name in names:
        others = tuple(f"tether.transports.{other}" for other in names if other != name)
        for line in _violations(f"transports/{name}", others):
            imported = line.partition(" imports ")[2]
            if not (name == "http" and imported.startswith(allowed)):
                bad.append(line)
    assert bad == []


def test_no_module_is_long_enough_to_hold_two_ideas() -> None:
    """A module past ~800 lines usually has two ideas in it (STYLE.md): split it along its seam."""
    long = {
        str(path.relative_to(SRC)): count
        for path in SRC.rglob("*.py")
        if (count := len(path.read_text(encoding="utf-8").splitlines())) > 800
    }
    assert long == {}
