"""Transports: how messages get from a frontend to a backend.

* `tether.transports.memory`: in-process (same loop, or the backend in a thread);
* `tether.transports.http`: HTTP served by hypercorn (RPC, and IPC with Server-Sent Events);
* `tether.transports.websocket`: WebSocket over trio-websocket (RPC and IPC sessions);
* `tether.transports.abc`: the contracts a transport implements.
"""

from . import abc as abc
from . import http as http
from . import memory as memory
from . import websocket as websocket

__all__ = ["abc", "http", "memory", "websocket"]
