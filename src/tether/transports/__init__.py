"""Transports: how messages get from a frontend to a backend.

* `tether.transports.memory`: in-process (same loop, or the backend in a thread);
* `tether.transports.http`: HTTP served by hypercorn (RPC, and IPC with Server-Sent Events);
* `tether.transports.websocket`: WebSocket over trio-websocket (RPC and IPC sessions);
* `tether.transports.local`: a Unix domain socket, for a backend process on the same computer;
* `tether.transports.abc`: the contracts a transport implements.
"""

from . import abc as abc
from . import http as http
from . import local as local
from . import memory as memory
from . import websocket as websocket

__all__ = ["abc", "http", "local", "memory", "websocket"]
