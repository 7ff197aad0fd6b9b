"""The values the conformance suites send: every kind the codec carries."""

from __future__ import annotations

import datetime
import enum
import uuid
from typing import Literal

import attrs

__all__ = ["Circle", "Color", "Everything", "Level", "Point", "Square", "sample_everything"]


class Color(enum.Enum):
    RED = "red"
    GREEN = "green"


class Level(enum.IntEnum):
    LOW = 1
    HIGH = 2


@attrs.frozen
class Point:
    x: float
    y: float


@attrs.frozen
class Circle:
    kind: Literal["circle"]
    center: Point
    radius: float


@attrs.frozen
class Square:
    kind: Literal["square"]
    corner: Point
    side: float


@attrs.frozen
class Everything:
    """One value of every type the codec carries (DESIGN.md section 3)."""

    flag: bool
    count: int
    ratio: float
    name: str
    raw: bytes
    color: Color
    level: Level
    when: datetime.datetime
    day: datetime.date
    ident: uuid.UUID
    nothing: None
    maybe: int | None
    either: int | str
    shape: Circle | Square
    points: list[Point]
    pair: tuple[int, str]
    rest: tuple[int, ...]
    by_name: dict[str, Point]
    by_id: dict[int, str]
    tags: set[str]
    frozen: frozenset[int]


def sample_everything() -> list[Everything]:
    """A few values of `Everything`, edge cases included."""
    base = Everything(
        flag=True,
        count=-(2**53),
        ratio=-1.5e-300,
        name='héllo ✓ \u0000 "quoted"',
        raw=bytes(range(256)),
        color=Color.GREEN,
        level=Level.HIGH,
        when=datetime.datetime(2026, 11, 21, 12, 30, 5, 123456, tzinfo=datetime.UTC),
        day=datetime.date(1999, 12, 31),
        ident=uuid.UUID("12345678-1234-5678-1234-567812345678"),
        nothing=None,
        maybe=None,
        either="text",
        shape=Square("square", Point(0.0, 1.0), 2.5),
        points=[Point(1.0, 2.0), Point(-3.25, 4e10)],
        pair=(7, "seven"),
        rest=(1, 2, 3),
        by_name={"origin": Point(0.0, 0.0), "": Point(1.0, 1.0)},
        by_id={1: "one", -2: "minus two"},
        tags={"a", "b"},
        frozen=frozenset({3, 4}),
    )
    empty = attrs.evolve(
        base,
        flag=False,
        count=0,
        ratio=0.0,
        name="",
        raw=b"",
        maybe=12,
        either=5,
        shape=Circle("circle", Point(0.5, 0.5), 1.0),
        points=[],
        rest=(),
        by_name={},
        by_id={},
        tags=set(),
        frozen=frozenset(),
        when=datetime.datetime(2000, 1, 1),
    )
    return [base, empty]
