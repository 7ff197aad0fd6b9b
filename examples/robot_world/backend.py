"""The backend: an in-memory RobotWorld engine, and the impl that serves it.

The engine is ordinary backend code: it knows nothing of tether and logs with
the standard `logging` module. Yet each of its log lines carries the ActivityId
of the user action that caused it, because the server sets the request's
context before the impl runs and `tether.contexts.ContextFilter` (see
`__main__`) copies it onto every record.

The impl is the thin layer between the wire and that code: it turns the
interface's types into the engine's and calls it.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterable, Mapping

import attrs

import tether

from .interface import IModelNotFound, IModelProps, RobotNotFound, RobotWorldRead

__all__ = [
    "Circle",
    "IModel",
    "RobotWorldEngine",
    "RobotWorldReadImpl",
    "make_backend",
    "seed_world",
]

log = logging.getLogger(__name__)


@attrs.frozen
class Circle:
    """A robot or an obstacle: a disc on the floor plan."""

    id: str
    x: float
    y: float
    radius: float

    def overlaps(self, other: Circle) -> bool:
        """True when the two discs overlap (discs that only touch do not)."""
        return math.dist((self.x, self.y), (other.x, other.y)) < self.radius + other.radius


@attrs.frozen
class IModel:
    """One iModel: its robots and obstacles, by id."""

    key: str
    robots: Mapping[str, Circle]
    obstacles: Mapping[str, Circle]

    @classmethod
    def build(cls, key: str, robots: Iterable[Circle], obstacles: Iterable[Circle]) -> IModel:
        return cls(key, {r.id: r for r in robots}, {o.id: o for o in obstacles})


class RobotWorldEngine:
    """The iModels a backend holds, and the queries RobotWorld runs on them."""

    def __init__(self, imodels: Iterable[IModel]) -> None:
        self.imodels: dict[str, IModel] = {m.key: m for m in imodels}

    def imodel(self, key: str) -> IModel:
        try:
            return self.imodels[key]
        except KeyError:
            raise IModelNotFound(key) from None

    def count_robots(self, key: str) -> int:
        log.info("counting robots in %s", key)
        return len(self.imodel(key).robots)

    def count_robots_in_array(self, key: str, element_ids: Iterable[str]) -> int:
        robots = self.imodel(key).robots
        ids = list(element_ids)
        log.info("counting robots among %d elements of %s", len(ids), key)
        return sum(1 for element_id in ids if element_id in robots)

    def query_obstacles_hit_by_robot(self, key: str, robot_id: str) -> list[str]:
        log.info("looking for obstacles hit by %s in %s", robot_id, key)
        imodel = self.imodel(key)
        robot = imodel.robots.get(robot_id)
        if robot is None:
            log.warning("%s has no robot %s", key, robot_id)
            raise RobotNotFound(key, robot_id)
        return sorted(o.id for o in imodel.obstacles.values() if robot.overlaps(o))


def seed_world() -> RobotWorldEngine:
    """A small deterministic world: a warehouse with robots among crates, and an empty lab."""
    warehouse = IModel.build(
        "warehouse",
        robots=[
            Circle("robot-1", 0.0, 0.0, 1.0),
            Circle("robot-2", 6.0, 0.0, 1.0),
            Circle("robot-3", 0.0, 8.0, 0.5),
        ],
        obstacles=[
            Circle("crate-1", 1.5, 0.0, 1.0),  # hit by robot-1
            Circle("crate-2", 0.0, -1.8, 1.0),  # hit by robot-1
            Circle("crate-3", 7.0, 1.0, 0.5),  # hit by robot-2
            Circle("pillar-1", 3.5, 3.5, 1.0),  # in nobody's way
            Circle("wall-1", 0.0, 10.0, 1.0),  # near robot-3, but clear of it
        ],
    )
    lab = IModel.build("lab", robots=[], obstacles=[Circle("bench-1", 2.0, 2.0, 1.0)])
    return RobotWorldEngine([warehouse, lab])


class RobotWorldReadImpl(RobotWorldRead):
    """Serves `RobotWorldRead` from a `RobotWorldEngine`."""

    def __init__(self, engine: RobotWorldEngine) -> None:
        self.engine = engine

    async def count_robots(self, imodel: IModelProps) -> int:
        return self.engine.count_robots(imodel.key)

    async def count_robots_in_array(self, imodel: IModelProps, element_ids: list[str]) -> int:
        return self.engine.count_robots_in_array(imodel.key, element_ids)

    async def query_obstacles_hit_by_robot(self, imodel: IModelProps, robot_id: str) -> list[str]:
        return self.engine.query_obstacles_hit_by_robot(imodel.key, robot_id)


def make_backend(engine: RobotWorldEngine | None = None) -> tether.RpcManager:
    """The backend's RpcManager, serving RobotWorldRead (from the seeded world by default)."""
    manager = tether.RpcManager()
    manager.register_impl(RobotWorldRead, RobotWorldReadImpl(engine or seed_world()))
    return manager
