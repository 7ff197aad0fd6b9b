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
from collections.abc import AsyncIterator, Iterable, Mapping

import attrs
import trio

import tether

from .interface import (
    IModelNotFound,
    IModelProps,
    Position,
    RobotNotFound,
    RobotTelemetry,
    RobotWorldRead,
)

__all__ = [
    "Circle",
    "IModel",
    "RobotTelemetryImpl",
    "RobotWorldEngine",
    "RobotWorldReadImpl",
    "make_backend",
    "seed_world",
]

log = logging.getLogger(__name__)

#: The side of a snapshot, in pixels.
SNAPSHOT_SIZE = 256


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

    def robot(self, key: str, robot_id: str) -> Circle:
        robot = self.imodel(key).robots.get(robot_id)
        if robot is None:
            log.warning("%s has no robot %s", key, robot_id)
            raise RobotNotFound(key, robot_id)
        return robot

    def position(self, robot: Circle, step: int) -> tuple[float, float]:
        """Where a robot is at `step` of its patrol: a circle of radius 1 around its start."""
        angle = step * math.pi / 8
        return round(robot.x + math.cos(angle) - 1, 3), round(robot.y + math.sin(angle), 3)

    def snapshot(self, key: str, size: int = SNAPSHOT_SIZE) -> bytes:
        """The floor plan as a binary PGM image, `size` pixels square, 10 cm a pixel."""
        imodel = self.imodel(key)
        pixels = bytearray(size * size)
        shapes = [(o, 128) for o in imodel.obstacles.values()]
        shapes += [(r, 255) for r in imodel.robots.values()]
        for shape, shade in shapes:
            cx, cy = size // 2 + shape.x * 10, size // 2 - shape.y * 10
            reach = int(shape.radius * 10)
            for row in range(max(0, int(cy) - reach), min(size, int(cy) + reach + 1)):
                for col in range(max(0, int(cx) - reach), min(size, int(cx) + reach + 1)):
                    if (col - cx) ** 2 + (row - cy) ** 2 <= reach**2:
                        pixels[row * size + col] = shade
        log.info("rendered a %dx%d snapshot of %s", size, size, key)
        return b"P5 %d %d 255\n" % (size, size) + bytes(pixels)


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


class RobotTelemetryImpl(RobotTelemetry):
    """Serves `RobotTelemetry` from a `RobotWorldEngine`."""

    def __init__(self, engine: RobotWorldEngine) -> None:
        self.engine = engine

    async def watch(
        self, imodel: IModelProps, robot_id: str, every: float
    ) -> AsyncIterator[Position]:
        # An async generator: each `yield` waits while the frontend has a
        # window's worth of positions unread, and leaving the frontend's block
        # cancels it here, so `finally` says how far it got.
        robot = self.engine.robot(imodel.key, robot_id)
        log.info("streaming the positions of %s", robot_id)
        step = 0
        try:
            while True:
                x, y = self.engine.position(robot, step)
                yield Position(robot_id, step, x, y)
                step += 1
                await trio.sleep(every)
        finally:
            log.info("stopped streaming %s after %d positions", robot_id, step)

    async def snapshot(self, imodel: IModelProps) -> bytes:
        return self.engine.snapshot(imodel.key)


def make_backend(engine: RobotWorldEngine | None = None) -> tether.RpcManager:
    """The backend's RpcManager, serving RobotWorldRead and RobotTelemetry.

    From the seeded world by default.
    """
    engine = engine or seed_world()
    manager = tether.RpcManager()
    manager.register_impl(RobotWorldRead, RobotWorldReadImpl(engine))
    manager.register_impl(RobotTelemetry, RobotTelemetryImpl(engine))
    return manager
