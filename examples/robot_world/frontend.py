"""The frontend: five user actions against the RobotWorld interfaces.

It imports only the shared interface, never the backend: it is handed a
client typed as `RobotWorldRead` and cannot tell which transport is behind it.

Each user action runs in `tether.activity()`, which starts a new ActivityId.
Every call made inside the block carries it to the backend, so the frontend's
log lines and the backend's for that action share one id; a log browser can
filter on it to follow the action through every tier.
"""

from __future__ import annotations

import logging

import tether

from .interface import IModelProps, RobotNotFound, RobotTelemetry, RobotWorldRead

__all__ = [
    "WAREHOUSE",
    "check_missing_robot",
    "follow_robot",
    "inspect_selection",
    "open_warehouse",
    "run_actions",
    "take_snapshot",
]

log = logging.getLogger(__name__)

WAREHOUSE = IModelProps("warehouse")


async def open_warehouse(robots: RobotWorldRead) -> None:
    """Action 1: open the warehouse iModel and show how many robots it holds."""
    with tether.activity():
        log.info("action 1: open %s", WAREHOUSE.key)
        count = await robots.count_robots(WAREHOUSE)
        log.info("%s holds %d robots", WAREHOUSE.key, count)


async def inspect_selection(robots: RobotWorldRead) -> None:
    """Action 2: the user selects elements; check each selected robot for collisions.

    One action, several calls: they all carry the same ActivityId.
    """
    selection = ["robot-1", "crate-1", "robot-2", "wall-1"]
    with tether.activity():
        log.info("action 2: inspect the selection %s", ", ".join(selection))
        count = await robots.count_robots_in_array(WAREHOUSE, selection)
        log.info("%d of the %d selected elements are robots", count, len(selection))
        for robot_id in ("robot-1", "robot-2"):
            hits = await robots.query_obstacles_hit_by_robot(WAREHOUSE, robot_id)
            log.info("%s hits %s", robot_id, ", ".join(hits) or "nothing")


async def check_missing_robot(robots: RobotWorldRead) -> None:
    """Action 3: ask about a robot that does not exist.

    The backend raises `RobotNotFound`; the frontend catches that same class,
    with its fields, because it is registered with `tether.remote_error`.
    """
    with tether.activity():
        log.info("action 3: check robot-9 for collisions")
        try:
            await robots.query_obstacles_hit_by_robot(WAREHOUSE, "robot-9")
        except RobotNotFound as exc:
            log.info("caught %r, raised by the backend", exc)


async def follow_robot(telemetry: RobotTelemetry, positions: int = 4) -> None:
    """Action 4: follow robot-1 live for a few positions, then stop.

    A server stream: leaving the `open_stream` block stops the backend's
    generator (its log line says how far it got).
    """
    with tether.activity():
        log.info("action 4: follow robot-1 for %d positions", positions)
        async with tether.open_stream(telemetry.watch(WAREHOUSE, "robot-1", 0.01)) as live:
            async for position in live:
                log.info("robot-1 at (%.2f, %.2f), step %d", position.x, position.y, position.step)
                if position.step + 1 == positions:
                    break


async def take_snapshot(telemetry: RobotTelemetry) -> None:
    """Action 5: download a picture of the warehouse (bytes, without text encoding)."""
    with tether.activity():
        log.info("action 5: take a snapshot of %s", WAREHOUSE.key)
        image = await telemetry.snapshot(WAREHOUSE)
        header = image.split(b"\n", 1)[0].decode()
        log.info("snapshot of %d bytes (%s)", len(image), header)


async def run_actions(robots: RobotWorldRead, telemetry: RobotTelemetry | None = None) -> None:
    """Perform the user actions, one after the other (4 and 5 need `telemetry`)."""
    await open_warehouse(robots)
    await inspect_selection(robots)
    await check_missing_robot(robots)
    if telemetry is not None:
        await follow_robot(telemetry)
        await take_snapshot(telemetry)
