"""Local transport: RPC and IPC over a Unix domain socket, for a backend on the same computer.

`serve` listens on a socket only this user may open (mode 0600, in a private
directory by default); `connect` and `connect_ipc` are the clients. `spawn`
starts a backend process paired with its frontend (the desktop
configuration), and `serve_paired` is that backend's side.
docs/transports.md has the wire and the desktop configuration.
"""

from ._client import connect as connect
from ._client import connect_ipc as connect_ipc
from ._paired import NotPaired as NotPaired
from ._paired import serve_paired as serve_paired
from ._server import serve as serve
from ._socket import DEFAULT_MAX_MESSAGE_SIZE as DEFAULT_MAX_MESSAGE_SIZE
from ._spawn import BackendStartError as BackendStartError
from ._spawn import PairedBackend as PairedBackend
from ._spawn import spawn as spawn

__all__ = [
    "DEFAULT_MAX_MESSAGE_SIZE",
    "BackendStartError",
    "NotPaired",
    "PairedBackend",
    "connect",
    "connect_ipc",
    "serve",
    "serve_paired",
    "spawn",
]
