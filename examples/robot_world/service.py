"""RobotWorld's backend as `tether serve` takes it.

    tether serve examples.robot_world.service:manager --http 127.0.0.1:8000

`make_backend` (in `backend`) is a zero-argument factory `tether serve` takes too.
"""

from __future__ import annotations

from .backend import make_backend

__all__ = ["manager"]

#: The RpcManager serving RobotWorldRead and RobotTelemetry on the seeded world.
manager = make_backend()
