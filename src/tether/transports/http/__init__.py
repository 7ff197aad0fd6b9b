"""HTTP transport (web configuration): RPC as POSTs, IPC as POSTs plus Server-Sent Events.

The backend is an ASGI app (`HttpApp`) served by hypercorn's Trio worker,
in-process with `serve` or from hypercorn's command line; the frontend
connects with `connect` (RPC) or `connect_ipc` (IPC). The wire contract is in
docs/http.md.
"""

from ._client import DEFAULT_READ_TIMEOUT as DEFAULT_READ_TIMEOUT
from ._client import HttpBackend as HttpBackend
from ._group import connect as connect
from ._group import connect_ipc as connect_ipc
from ._ipc_server import DEFAULT_IPC_GRACE_PERIOD as DEFAULT_IPC_GRACE_PERIOD
from ._ipc_server import DEFAULT_IPC_PING_INTERVAL as DEFAULT_IPC_PING_INTERVAL
from ._ipc_server import DEFAULT_IPC_PING_TIMEOUT as DEFAULT_IPC_PING_TIMEOUT
from ._serve import DEFAULT_KEEP_ALIVE_TIMEOUT as DEFAULT_KEEP_ALIVE_TIMEOUT
from ._serve import DEFAULT_SEND_TIMEOUT as DEFAULT_SEND_TIMEOUT
from ._serve import serve as serve
from ._server import HttpApp as HttpApp
from ._wire import DEFAULT_BODY_TIMEOUT as DEFAULT_BODY_TIMEOUT
from ._wire import DEFAULT_MAX_BODY_SIZE as DEFAULT_MAX_BODY_SIZE

__all__ = [
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
