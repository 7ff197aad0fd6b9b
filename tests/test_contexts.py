"""Request contexts: activities, inheritance by child tasks, and what repr shows."""

from __future__ import annotations

import itertools
import os
import uuid

import pytest
import trio

import tether
from tether import contexts


def test_no_context_outside_a_request_or_activity() -> None:
    assert contexts.current() is None
    assert tether.current_context() is None


def test_activity_sets_a_fresh_id_and_restores_the_outer_context() -> None:
    with contexts.activity(session_id="s", application_id="app") as outer:
        assert contexts.current() is outer
        with contexts.activity() as inner:
            assert contexts.current() is inner
            assert inner.activity_id != outer.activity_id
            # Fields not given are kept from the enclosing context.
            assert inner.session_id == "s"
            assert inner.application_id == "app"
        assert contexts.current() is outer
    assert contexts.current() is None


def test_activity_accepts_an_outside_activity_id() -> None:
    with contexts.activity("from-upstream", authorization="Bearer x") as ctx:
        assert ctx.activity_id == "from-upstream"
        assert ctx.authorization == "Bearer x"


def test_using_restores_the_previous_context_even_on_error() -> None:
    ctx = contexts.RequestContext(activity_id="a")
    seen: list[contexts.RequestContext | None] = []

    def fail_inside() -> None:
        with contexts.using(ctx):
            seen.append(contexts.current())
            raise ValueError("inside")

    with pytest.raises(ValueError, match="inside"):
        fail_inside()
    assert seen == [ctx]
    assert contexts.current() is None


def test_activity_ids_are_unique_and_uuid_shaped() -> None:
    made = [contexts.new_activity_id() for _ in range(100_000)]
    assert len(set(made)) == len(made)
    for activity_id in made[:1000]:
        parsed = uuid.UUID(activity_id)
        assert str(parsed) == activity_id
        assert parsed.version == 4
        assert parsed.variant == uuid.RFC_4122


def test_consecutive_activity_ids_differ_in_their_leading_digits() -> None:
    """Read in a log, two ids of consecutive actions look different at a glance."""
    made = [contexts.new_activity_id() for _ in range(1000)]
    for before, after in itertools.pairwise(made):
        assert before[:8] != after[:8]
    # And they are not all alike elsewhere: every group varies.
    for group in range(5):
        assert len({activity_id.split("-")[group] for activity_id in made}) > 100


def test_a_forked_child_makes_other_activity_ids_than_its_parent() -> None:
    """The random source is reseeded after fork: no id made twice by parent and child."""
    contexts.new_activity_id()  # the source is in use before the fork
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child
        try:
            os.close(read_end)
            ids = "\n".join(contexts.new_activity_id() for _ in range(100))
            os.write(write_end, ids.encode())
        finally:
            os._exit(0)
    os.close(write_end)
    try:
        with os.fdopen(read_end, "rb") as pipe:
            child = pipe.read().decode().split("\n")
    finally:
        _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    parent = [contexts.new_activity_id() for _ in range(100)]
    assert len(child) == 100
    assert not set(child) & set(parent)
    assert all(uuid.UUID(activity_id).version == 4 for activity_id in child)


def test_repr_never_shows_the_authorization() -> None:
    ctx = contexts.RequestContext(activity_id="a", authorization="Bearer TOPSECRET")
    assert "TOPSECRET" not in repr(ctx)
    assert "TOPSECRET" not in str(ctx)
    assert ctx.authorization == "Bearer TOPSECRET"


def test_context_is_immutable() -> None:
    ctx = contexts.RequestContext(activity_id="a")
    with pytest.raises(AttributeError):
        ctx.activity_id = "b"  # type: ignore[misc]


async def test_child_tasks_inherit_the_activity_siblings_do_not() -> None:
    seen: dict[str, str | None] = {}

    async def record(name: str, task_status: trio.TaskStatus[None]) -> None:
        task_status.started()
        await trio.lowlevel.checkpoint()
        ctx = contexts.current()
        seen[name] = ctx.activity_id if ctx else None

    with trio.fail_after(5):
        async with trio.open_nursery() as nursery:
            await nursery.start(record, "before")
            with contexts.activity("act-1"):
                await nursery.start(record, "inside")
            await nursery.start(record, "after")
    assert seen == {"before": None, "inside": "act-1", "after": None}
