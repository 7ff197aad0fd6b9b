# mypy: disable-error-code="empty-body"
"""Shared code: what the frontend and the backend both import.

An RPC interface is a class of annotated `async def` operations with `...`
bodies, plus an immutable wire name and a semantic version of its shape. The
frontend calls it through a client stub typed as the interface; the backend
subclasses it with an impl. The argument and result types, and the
application errors that cross the wire, live here too so that both tiers
agree on them.

(The comment on the first line lets `mypy --strict` accept the `...` bodies
of the operations.)
"""

from __future__ import annotations

import attrs

import tether

__all__ = [
    "IModelNotFound",
    "IModelProps",
    "Position",
    "RobotNotFound",
    "RobotTelemetry",
    "RobotWorldRead",
]


@attrs.frozen
class IModelProps:
    """Which iModel (the backend's database) a request is about."""

    key: str


@tether.remote_error
@attrs.define
class IModelNotFound(Exception):
    """The backend has no iModel with this key."""

    key: str

    def __str__(self) -> str:
        return f"no iModel {self.key!r}"


@tether.remote_error
@attrs.define
class RobotNotFound(Exception):
    """The iModel has no robot with this id.

    Registered with `remote_error`, so a frontend catches it as itself, with
    its fields, rather than as a generic remote error.
    """

    imodel_key: str
    robot_id: str

    def __str__(self) -> str:
        return f"no robot {self.robot_id!r} in iModel {self.imodel_key!r}"


class RobotWorldRead(tether.RpcInterface):
    """Read-only queries about the robots and obstacles in an iModel."""

    interface_name = "RobotWorldReadRpcInterface"  # the wire name: never change it
    interface_version = "1.0.0"

    async def count_robots(self, imodel: IModelProps) -> int:
        """How many robots the iModel holds.

        Raises:
            IModelNotFound: no such iModel.
        """
        ...

    async def count_robots_in_array(self, imodel: IModelProps, element_ids: list[str]) -> int:
        """How many entries of `element_ids` are robots (other and unknown ids count 0).

        Raises:
            IModelNotFound: no such iModel.
        """
        ...

    async def query_obstacles_hit_by_robot(self, imodel: IModelProps, robot_id: str) -> list[str]:
        """The ids of the obstacles the robot overlaps, sorted.

        Raises:
            IModelNotFound: no such iModel.
            RobotNotFound: the iModel has no robot `robot_id`.
        """
        ...


@attrs.frozen
class Position:
    """Where a robot is at one step of its patrol."""

    robot_id: str
    step: int
    x: float
    y: float


class RobotTelemetry(tether.RpcInterface):
    """Live data about the robots: a stream of positions, and a binary snapshot."""

    interface_name = "RobotTelemetryRpcInterface"
    interface_version = "1.0.0"

    def watch(self, imodel: IModelProps, robot_id: str, every: float) -> tether.Stream[Position]:
        """The robot's position every `every` seconds, for as long as the caller reads.

        A server stream: the caller opens it with `tether.open_stream` and ends
        it by leaving the block, which stops the backend's generator.

        Raises:
            IModelNotFound: no such iModel.
            RobotNotFound: the iModel has no robot `robot_id`.
        """
        ...

    async def snapshot(self, imodel: IModelProps) -> bytes:
        """A picture of the floor plan: a binary PGM image (robots bright, obstacles grey).

        Bytes travel without text encoding where the transport allows it.

        Raises:
            IModelNotFound: no such iModel.
        """
        ...
