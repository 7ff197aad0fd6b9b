"""WebSocket transport: RPC and IPC sessions, one socket each, over trio-websocket.

`serve` runs trio-websocket's server; the HTTP transport's server answers
WebSocket on `{prefix}/ws` too (one port for both). `connect` and `connect_ipc`
are the clients, for either server. docs/websocket.md has the wire contract.
"""

from ._endpoint import DEFAULT_MAX_MESSAGE_SIZE as DEFAULT_MAX_MESSAGE_SIZE
from ._endpoint import DEFAULT_PING_INTERVAL as DEFAULT_PING_INTERVAL
from ._endpoint import DEFAULT_PING_TIMEOUT as DEFAULT_PING_TIMEOUT
from ._endpoint import Authorize as Authorize
from ._endpoint import Handshake as Handshake
from ._endpoint import WebSocketSettings as WebSocketSettings
from ._group import connect as connect
from ._group import connect_ipc as connect_ipc
from ._server import serve as serve

__all__ = [
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
