"""The transport contracts, for those who write a transport.

A message transport (a connection that moves whole messages both ways, like a
WebSocket) implements `MessageStream` and lets the runtime run the protocol
over it with `open_rpc_connection` / `serve_rpc_session`. A request/response
transport (HTTP) implements `RpcBackend` on the frontend and drives the
runtime's `Dispatcher` on the backend.

The contracts are defined in the runtime, which only knows these abstract
shapes; they are re-exported here, where transport authors look for them.
"""

from ..runtime._binary import BinaryMessage as BinaryMessage
from ..runtime._client import ClientOptions as ClientOptions
from ..runtime._client import RpcBackend as RpcBackend
from ..runtime._stream import MessageStream as MessageStream

__all__ = ["BinaryMessage", "ClientOptions", "MessageStream", "RpcBackend"]
