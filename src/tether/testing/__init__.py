"""Testing helpers: the transport conformance suites (RPC and IPC), probes, and the
pytest plugin's fixtures (`tether.testing.pytest_plugin`, docs/testing.md).

Needs pytest (the `test` extra): `pip install tether[test]`.
"""

import importlib
import typing

if typing.TYPE_CHECKING:
    from ._faults import FaultyStream as FaultyStream
    from ._faults import FaultyStreams as FaultyStreams
    from ._faults import faulty_streams as faulty_streams
    from ._ipc_suite import ConformanceFrontendIpc as ConformanceFrontendIpc
    from ._ipc_suite import ConformanceIpc as ConformanceIpc
    from ._ipc_suite import ConformanceIpcEvents as ConformanceIpcEvents
    from ._ipc_suite import IpcConformance as IpcConformance
    from ._ipc_suite import IpcContextInfo as IpcContextInfo
    from ._logs import TetherLogs as TetherLogs
    from ._probe import Probe as Probe
    from ._proxy import FaultyProxy as FaultyProxy
    from ._rpc_suite import ConformanceDownstream as ConformanceDownstream
    from ._rpc_suite import ConformanceError as ConformanceError
    from ._rpc_suite import ConformanceInterface as ConformanceInterface
    from ._rpc_suite import ContextInfo as ContextInfo
    from ._rpc_suite import Everything as Everything
    from ._rpc_suite import RpcConformance as RpcConformance

# Imported when first used: pytest loads the plugin (`tether.testing.pytest_plugin`)
# in every project that installs tether, and must not pay for the conformance
# suites at each start.
_LAZY = {
    "FaultyStream": "._faults",
    "FaultyStreams": "._faults",
    "faulty_streams": "._faults",
    "ConformanceFrontendIpc": "._ipc_suite",
    "ConformanceIpc": "._ipc_suite",
    "ConformanceIpcEvents": "._ipc_suite",
    "IpcConformance": "._ipc_suite",
    "IpcContextInfo": "._ipc_suite",
    "TetherLogs": "._logs",
    "Probe": "._probe",
    "FaultyProxy": "._proxy",
    "ConformanceDownstream": "._rpc_suite",
    "ConformanceError": "._rpc_suite",
    "ConformanceInterface": "._rpc_suite",
    "ContextInfo": "._rpc_suite",
    "Everything": "._rpc_suite",
    "RpcConformance": "._rpc_suite",
}


def __getattr__(name: str) -> typing.Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(module, __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})


__all__ = [
    "ConformanceDownstream",
    "ConformanceError",
    "ConformanceFrontendIpc",
    "ConformanceInterface",
    "ConformanceIpc",
    "ConformanceIpcEvents",
    "ContextInfo",
    "Everything",
    "FaultyProxy",
    "FaultyStream",
    "FaultyStreams",
    "IpcConformance",
    "IpcContextInfo",
    "Probe",
    "RpcConformance",
    "TetherLogs",
    "faulty_streams",
]
