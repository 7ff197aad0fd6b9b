"""The RobotWorld example: the demo's output, and its backend over the in-process transport."""

from __future__ import annotations

import logging
import re
import subprocess
import sys
from collections import defaultdict
from pathlib import Path

import attrs
import pytest
import trio

import tether
from examples.robot_world.backend import IModel, RobotWorldEngine, make_backend, seed_world
from examples.robot_world.interface import (
    IModelNotFound,
    IModelProps,
    Position,
    RobotNotFound,
    RobotTelemetry,
    RobotWorldRead,
)
from tether.contexts import ContextFilter
from tether.transports import memory

REPO_ROOT = Path(__file__).resolve().parent.parent

# "[frontend] <activity id>  <message>": one log line of the demo.
LOG_LINE = re.compile(r"^\[(?P<tier>frontend|backend) *\] (?P<activity>\S+)  (?P<message>.*)$")
ACTIVITY_ID = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")
ACTION = re.compile(r"^action (\d+): ")
ACCESS = re.compile(r"^Robot(?:WorldRead|Telemetry)RpcInterface\.(\w+) (\S+) [\d.]+ms$")
STOPPED = re.compile(r"^stopped streaming robot-1 after (\d+) positions$")


# -- the demo, run as `make demo` runs it -------------------------------------


def run_demo(*args: str) -> str:
    proc = subprocess.run(
        [sys.executable, "-m", "examples.robot_world", *args],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 0, f"exit {proc.returncode}\n{proc.stdout}\n{proc.stderr}"
    assert proc.stderr == ""
    return proc.stdout


@pytest.mark.parametrize("args", [(), ("--thread",)], ids=["same-loop", "thread"])
def test_demo_correlates_each_action_across_tiers(args: tuple[str, ...]) -> None:
    output = run_demo(*args)
    lines: dict[str, list[tuple[str, str]]] = defaultdict(list)  # activity -> (tier, message)
    actions: list[tuple[int, str]] = []  # (action number, activity)
    for line in output.splitlines():
        match = LOG_LINE.match(line)
        if match is None:
            continue
        tier, activity, message = match.group("tier", "activity", "message")
        lines[activity].append((tier, message))
        action = ACTION.match(message)
        if tier == "frontend" and action:
            actions.append((int(action.group(1)), activity))

    assert [number for number, _ in actions] == [1, 2, 3, 4, 5], output
    activities = [activity for _, activity in actions]
    assert len(set(activities)) == 5, "each user action has its own ActivityId"
    # Every log line of either tier belongs to one of the actions.
    assert set(lines) == set(activities), output
    for activity in activities:
        assert ACTIVITY_ID.match(activity), activity
        tiers = [tier for tier, _ in lines[activity]]
        assert tiers.count("frontend") >= 2, (activity, lines[activity])  # the action, a result
        assert tiers.count("backend") >= 2, (activity, lines[activity])  # engine, access log

    def calls(activity: str) -> list[tuple[str, str]]:
        """(operation, outcome) of each access-log line of the activity."""
        return [
            (access[1], access[2])
            for tier, message in lines[activity]
            if tier == "backend" and (access := ACCESS.match(message))
        ]

    one, two, three, four, five = activities
    robots = len(seed_world().imodel("warehouse").robots)
    assert calls(one) == [("count_robots", "ok")]
    assert ("frontend", f"warehouse holds {robots} robots") in lines[one]
    assert calls(two) == [
        ("count_robots_in_array", "ok"),
        ("query_obstacles_hit_by_robot", "ok"),
        ("query_obstacles_hit_by_robot", "ok"),
    ]
    assert calls(three) == [("query_obstacles_hit_by_robot", "application")]
    caught = (
        "caught RobotNotFound(imodel_key='warehouse', robot_id='robot-9'), raised by the backend"
    )
    assert ("frontend", caught) in lines[three]
    # Action 4: a live stream, ended by leaving the block; the backend's
    # generator saw it, in the same activity, as every position it made.
    assert calls(four) == [("watch", "cancelled")]
    seen = [m for tier, m in lines[four] if tier == "frontend" and m.startswith("robot-1 at")]
    assert [m.rsplit(" ", 1)[1] for m in seen] == ["0", "1", "2", "3"], lines[four]
    [stopped] = [
        int(m[1]) for t, msg in lines[four] if t == "backend" and (m := STOPPED.match(msg))
    ]
    assert stopped >= 4
    # Action 5: a binary result.
    assert calls(five) == [("snapshot", "ok")]
    size = 256 * 256 + len(b"P5 256 256 255\n")
    assert ("frontend", f"snapshot of {size} bytes (P5 256 256 255)") in lines[five]


# -- the engine and the impl ----------------------------------------------------


def expected_hits(imodel: IModel) -> dict[str, list[str]]:
    """Obstacles each robot overlaps, computed here from the seeded positions."""
    return {
        robot.id: sorted(
            obstacle.id
            for obstacle in imodel.obstacles.values()
            if (robot.x - obstacle.x) ** 2 + (robot.y - obstacle.y) ** 2
            < (robot.radius + obstacle.radius) ** 2
        )
        for robot in imodel.robots.values()
    }


def test_seeded_world_makes_a_useful_example() -> None:
    hits = expected_hits(seed_world().imodel("warehouse"))
    counts = sorted(len(obstacles) for obstacles in hits.values())
    assert counts[0] == 0, "a robot that hits nothing"
    assert counts[-1] >= 2, "a robot that hits several obstacles"


def test_engine_answers_from_the_seeded_world() -> None:
    engine = seed_world()
    assert set(engine.imodels) == {"warehouse", "lab"}
    for imodel in engine.imodels.values():
        for robot_id, obstacles in expected_hits(imodel).items():
            assert engine.query_obstacles_hit_by_robot(imodel.key, robot_id) == obstacles


@pytest.fixture(params=[False, True], ids=["same-loop", "thread"])
def thread(request: pytest.FixtureRequest) -> bool:
    value: bool = request.param
    return value


async def test_impl_over_memory_transport(thread: bool) -> None:
    engine = seed_world()
    warehouse = engine.imodel("warehouse")
    robot_ids = sorted(warehouse.robots)
    obstacle_ids = sorted(warehouse.obstacles)
    selection = [robot_ids[0], obstacle_ids[0], robot_ids[-1], "no-such-element", robot_ids[0]]
    with trio.fail_after(10):
        async with memory.connect(
            make_backend(engine), interfaces=[RobotWorldRead], thread=thread
        ) as backend:
            robots = backend.get_client(RobotWorldRead)
            for imodel in engine.imodels.values():
                props = IModelProps(imodel.key)
                assert await robots.count_robots(props) == len(imodel.robots)
                for robot_id, obstacles in expected_hits(imodel).items():
                    assert await robots.query_obstacles_hit_by_robot(props, robot_id) == obstacles
            assert await robots.count_robots_in_array(IModelProps("warehouse"), selection) == 3
            assert await robots.count_robots_in_array(IModelProps("lab"), selection) == 0


async def test_application_errors_round_trip(thread: bool) -> None:
    with trio.fail_after(10):
        async with memory.connect(make_backend(), interfaces=[RobotWorldRead], thread=thread) as b:
            robots = b.get_client(RobotWorldRead)
            with pytest.raises(RobotNotFound) as robot_error:
                await robots.query_obstacles_hit_by_robot(IModelProps("warehouse"), "robot-9")
            with pytest.raises(IModelNotFound) as imodel_error:
                await robots.count_robots(IModelProps("attic"))
    # The same classes, rebuilt from the fields (attrs exceptions compare by identity).
    assert type(robot_error.value) is RobotNotFound
    assert attrs.asdict(robot_error.value) == {"imodel_key": "warehouse", "robot_id": "robot-9"}
    assert type(imodel_error.value) is IModelNotFound
    assert attrs.asdict(imodel_error.value) == {"key": "attic"}
    assert str(robot_error.value) == "no robot 'robot-9' in iModel 'warehouse'"


async def test_backend_logs_carry_the_frontends_activity_id(
    thread: bool, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="examples.robot_world.backend")
    caplog.handler.addFilter(ContextFilter())
    with trio.fail_after(10):
        async with memory.connect(make_backend(), interfaces=[RobotWorldRead], thread=thread) as b:
            robots = b.get_client(RobotWorldRead)
            with tether.activity() as first:
                await robots.count_robots(IModelProps("warehouse"))
            with tether.activity() as second:
                await robots.count_robots(IModelProps("lab"))
    records = [r for r in caplog.records if r.name == "examples.robot_world.backend"]
    assert [(r.getMessage(), getattr(r, "activity_id", None)) for r in records] == [
        ("counting robots in warehouse", first.activity_id),
        ("counting robots in lab", second.activity_id),
    ]
    assert first.activity_id != second.activity_id


async def test_telemetry_streams_and_snapshots_over_memory(thread: bool) -> None:
    engine = seed_world()
    robot = engine.imodel("warehouse").robots["robot-2"]
    with trio.fail_after(10):
        async with memory.connect(
            make_backend(engine), interfaces=[RobotTelemetry], thread=thread
        ) as backend:
            telemetry = backend.get_client(RobotTelemetry)
            got = []
            async with tether.open_stream(
                telemetry.watch(IModelProps("warehouse"), "robot-2", 0)
            ) as positions:
                async for position in positions:
                    got.append(position)
                    if len(got) == 20:
                        break
            assert got == [
                Position("robot-2", step, *engine.position(robot, step)) for step in range(20)
            ]
            with pytest.raises(RobotNotFound):
                async with tether.open_stream(
                    telemetry.watch(IModelProps("warehouse"), "robot-9", 0)
                ) as positions:
                    await anext(positions)
            image = await telemetry.snapshot(IModelProps("warehouse"))
    assert image == engine.snapshot("warehouse")
    header, pixels = image.split(b"\n", 1)
    assert header == b"P5 256 256 255"
    assert len(pixels) == 256 * 256
    assert set(pixels) == {0, 128, 255}  # floor, obstacles, robots


def test_robot_world_engine_is_plain_code() -> None:
    """The engine runs without tether: it is ordinary backend code."""
    engine = RobotWorldEngine([IModel.build("empty", robots=[], obstacles=[])])
    assert engine.count_robots("empty") == 0
    with pytest.raises(IModelNotFound):
        engine.count_robots("missing")
