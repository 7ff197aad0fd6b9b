"""Testing helpers: the transport conformance suites (RPC and IPC) and probes.

Needs pytest (the `test` extra): `pip install tether[test]`.
"""

from ._faults import FaultyStream as FaultyStream
from ._faults import FaultyStreams as FaultyStreams
from ._faults import faulty_streams as faulty_streams
from ._ipc_suite import ConformanceFrontendIpc as ConformanceFrontendIpc
from ._ipc_suite import ConformanceIpc as ConformanceIpc
from ._ipc_suite import ConformanceIpcEvents as ConformanceIpcEvents
from ._ipc_suite import IpcConformance as IpcConformance
from ._ipc_suite import IpcContextInfo as IpcContextInfo
from ._probe import Probe as Probe
from ._proxy import FaultyProxy as FaultyProxy
from ._rpc_suite import ConformanceDownstream as ConformanceDownstream
from ._rpc_suite import ConformanceError as ConformanceError
from ._rpc_suite import ConformanceInterface as ConformanceInterface
from ._rpc_suite import ContextInfo as ContextInfo
from ._rpc_suite import Everything as Everything
from ._rpc_suite import RpcConformance as RpcConformance

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
    "faulty_streams",
]
