"""Local transport: RPC and IPC over a Unix domain socket, for a backend on the same computer.

`serve` listens on a socket only this user may open (mode 0600, in a private
directory by default); `connect` and `connect_ipc` are the clients.
docs/transports.md has the wire and the desktop configuration.
"""

from ._client import connect as connect
from ._client import connect_ipc as connect_ipc
from ._server import serve as serve
from ._socket import DEFAULT_MAX_MESSAGE_SIZE as DEFAULT_MAX_MESSAGE_SIZE

__all__ = [
    "DEFAULT_MAX_MESSAGE_SIZE",
    "connect",
    "connect_ipc",
    "serve",
]
