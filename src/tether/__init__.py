"""tether: typed RPC and IPC interfaces for Trio, over interchangeable transports."""

from .contexts import RequestContext as RequestContext
from .contexts import activity as activity
from .contexts import current as current_context
from .contexts import metadata as metadata
from .runtime import BackendGroup as BackendGroup
from .runtime import BackendIpc as BackendIpc
from .runtime import CallInfo as CallInfo
from .runtime import CallMayHaveRun as CallMayHaveRun
from .runtime import CallNotSent as CallNotSent
from .runtime import ConnectError as ConnectError
from .runtime import ConnectionClosed as ConnectionClosed
from .runtime import ConnectionState as ConnectionState
from .runtime import DeadlineExceeded as DeadlineExceeded
from .runtime import Forbidden as Forbidden
from .runtime import FrontendIpc as FrontendIpc
from .runtime import IncompatibleVersion as IncompatibleVersion
from .runtime import Installed as Installed
from .runtime import Interceptor as Interceptor
from .runtime import InvalidRequest as InvalidRequest
from .runtime import IpcHandler as IpcHandler
from .runtime import IpcHandshake as IpcHandshake
from .runtime import IpcInterface as IpcInterface
from .runtime import IpcSession as IpcSession
from .runtime import NotFound as NotFound
from .runtime import NotificationHandler as NotificationHandler
from .runtime import NotificationInterface as NotificationInterface
from .runtime import PayloadTooLarge as PayloadTooLarge
from .runtime import Proceed as Proceed
from .runtime import Progress as Progress
from .runtime import RemoteError as RemoteError
from .runtime import RetryPolicy as RetryPolicy
from .runtime import RpcInterface as RpcInterface
from .runtime import RpcManager as RpcManager
from .runtime import Stream as Stream
from .runtime import StreamMessages as StreamMessages
from .runtime import StreamWindow as StreamWindow
from .runtime import TetherError as TetherError
from .runtime import TransportError as TransportError
from .runtime import Unauthorized as Unauthorized
from .runtime import Unavailable as Unavailable
from .runtime import cacheable as cacheable
from .runtime import current_session as current_session
from .runtime import idempotent as idempotent
from .runtime import install_interceptor as install_interceptor
from .runtime import is_version_compatible as is_version_compatible
from .runtime import long_running as long_running
from .runtime import on_progress as on_progress
from .runtime import open_stream as open_stream
from .runtime import remote_error as remote_error
from .runtime import report_progress as report_progress

__version__ = "0.1.0"

__all__ = [
    "BackendGroup",
    "BackendIpc",
    "CallInfo",
    "CallMayHaveRun",
    "CallNotSent",
    "ConnectError",
    "ConnectionClosed",
    "ConnectionState",
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
