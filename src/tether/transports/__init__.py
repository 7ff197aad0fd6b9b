"""Transports: how messages get from a frontend to a backend.

* `tether.transports.memory`: in-process (same loop, or the backend in a thread);
* `tether.transports.abc`: the contracts a transport implements.
"""

from . import abc as abc
from . import memory as memory

__all__ = ["abc", "memory"]
