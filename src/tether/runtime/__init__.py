"""The runtime: interfaces, versions, codec, protocol, dispatch, errors, managers.

It knows no transport: transports reach it through the sans-IO protocol
(`tether.runtime.protocol` names), the `MessageStream` and `RpcBackend`
contracts, and the session functions below.
"""

from ._binary import BinaryMessage as BinaryMessage
from ._channels import IpcHandler as IpcHandler
from ._channels import IpcInterface as IpcInterface
from ._channels import NotificationHandler as NotificationHandler
from ._channels import NotificationInterface as NotificationInterface
from ._client import ClientOptions as ClientOptions
from ._client import RpcBackend as RpcBackend
from ._codec import CONVERTER as CONVERTER
from ._codec import make_converter as make_converter
from ._connection import RpcConnection as RpcConnection
from ._connection import RpcConnectionStatistics as RpcConnectionStatistics
from ._connection import open_rpc_connection as open_rpc_connection
from ._credentials import CredentialProvider as CredentialProvider
from ._dispatch import Dispatcher as Dispatcher
from ._errors import CallMayHaveRun as CallMayHaveRun
from ._errors import CallNotSent as CallNotSent
from ._errors import ConnectError as ConnectError
from ._errors import ConnectionClosed as ConnectionClosed
from ._errors import DeadlineExceeded as DeadlineExceeded
from ._errors import Forbidden as Forbidden
from ._errors import IncompatibleVersion as IncompatibleVersion
from ._errors import InvalidRequest as InvalidRequest
from ._errors import NotFound as NotFound
from ._errors import PayloadTooLarge as PayloadTooLarge
from ._errors import RemoteError as RemoteError
from ._errors import TetherError as TetherError
from ._errors import TransportError as TransportError
from ._errors import Unauthorized as Unauthorized
from ._errors import Unavailable as Unavailable
from ._errors import remote_error as remote_error
from ._group import BackendGroup as BackendGroup
from ._interceptors import CallInfo as CallInfo
from ._interceptors import Installed as Installed
from ._interceptors import Interceptor as Interceptor
from ._interceptors import Proceed as Proceed
from ._interceptors import StreamMessages as StreamMessages
from ._interceptors import install_interceptor as install_interceptor
from ._interfaces import Operation as Operation
from ._interfaces import RpcInterface as RpcInterface
from ._ipc_backend import BackendIpc as BackendIpc
from ._ipc_backend import IpcSession as IpcSession
from ._ipc_backend import current_session as current_session
from ._ipc_backend import serve_ipc_session as serve_ipc_session
from ._ipc_engine import DEFAULT_MAX_PENDING_BYTES as DEFAULT_MAX_PENDING_BYTES
from ._ipc_engine import DEFAULT_MAX_PENDING_NOTIFICATIONS as DEFAULT_MAX_PENDING_NOTIFICATIONS
from ._ipc_engine import DEFAULT_SLOW_FRONTEND_TIMEOUT as DEFAULT_SLOW_FRONTEND_TIMEOUT
from ._ipc_engine import Listener as Listener
from ._ipc_frontend import FrontendIpc as FrontendIpc
from ._ipc_frontend import open_ipc_connection as open_ipc_connection
from ._ipc_handshake import DEFAULT_MAX_SESSIONS_PER_CLIENT as DEFAULT_MAX_SESSIONS_PER_CLIENT
from ._ipc_handshake import IpcHandshake as IpcHandshake
from ._manager import RpcManager as RpcManager
from ._manager import RpcManagerStatistics as RpcManagerStatistics
from ._policies import CachePolicy as CachePolicy
from ._policies import LongRunningPolicy as LongRunningPolicy
from ._policies import OperationPolicy as OperationPolicy
from ._policies import cacheable as cacheable
from ._policies import idempotent as idempotent
from ._policies import long_running as long_running
from ._progress import Progress as Progress
from ._progress import on_progress as on_progress
from ._progress import report_progress as report_progress
from ._protocol import PROTOCOL_VERSION as PROTOCOL_VERSION
from ._reconnect import ReconnectingBackend as ReconnectingBackend
from ._retry import DEFAULT_RETRY as DEFAULT_RETRY
from ._retry import NO_RETRY as NO_RETRY
from ._retry import RetryPolicy as RetryPolicy
from ._rpc_session import serve_rpc_session as serve_rpc_session
from ._state import ConnectionState as ConnectionState
from ._state import StateWatch as StateWatch
from ._stream import MessageStream as MessageStream
from ._streams import DEFAULT_STREAM_WINDOW as DEFAULT_STREAM_WINDOW
from ._streams import Stream as Stream
from ._streams import StreamWindow as StreamWindow
from ._streams import open_stream as open_stream
from ._versions import is_version_compatible as is_version_compatible

__all__ = [
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
