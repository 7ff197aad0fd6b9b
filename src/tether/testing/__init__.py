"""Testing helpers: the transport conformance suite and probes.

Needs pytest (the `test` extra): `pip install tether[test]`.
"""

from ._probe import Probe as Probe
from ._rpc_suite import ConformanceDownstream as ConformanceDownstream
from ._rpc_suite import ConformanceError as ConformanceError
from ._rpc_suite import ConformanceInterface as ConformanceInterface
from ._rpc_suite import ContextInfo as ContextInfo
from ._rpc_suite import Everything as Everything
from ._rpc_suite import RpcConformance as RpcConformance

__all__ = [
    "ConformanceDownstream",
    "ConformanceError",
    "ConformanceInterface",
    "ContextInfo",
    "Everything",
    "Probe",
    "RpcConformance",
]
