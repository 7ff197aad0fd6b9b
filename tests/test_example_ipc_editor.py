"""The IPC editor example: its user actions in-process (both modes), and the demo's output."""

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
from examples.ipc_editor.backend import Document, make_backend, seed_elements
from examples.ipc_editor.frontend import (
    APPLICATION_ID,
    ConfirmDialog,
    EditorEventsListener,
    Outcome,
    run,
)
from examples.ipc_editor.interface import (
    ChangeKind,
    EditorIpc,
    ElementNotFound,
    Placement,
)
from tether.contexts import ContextFilter
from tether.transports import memory

REPO_ROOT = Path(__file__).resolve().parent.parent
FRONTEND = "examples.ipc_editor.frontend"
BACKEND = "examples.ipc_editor.backend"

# "[frontend] <activity id>  <message>": one log line of the demo.
LOG_LINE = re.compile(
    r"^\[(?P<tier>frontend|backend|tether) *\] (?P<activity>\S+)  (?P<message>.*)$"
)
ACTIVITY_ID = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")
ACTION = re.compile(r"^action (\d+): ")
ACCESS = re.compile(r"^(?P<channel>[\w-]+)\.(?P<method>\w+) (?P<outcome>\S+) [\d.]+ms$")
CANCELLED = {"cancelled", "deadline-exceeded"}  # a timed-out call: whichever the backend saw first


@pytest.fixture(params=[False, True], ids=["same-loop", "thread"])
def thread(request: pytest.FixtureRequest) -> bool:
    value: bool = request.param
    return value


# -- the user actions, in-process -----------------------------------------------


async def test_actions_see_notifications_error_and_cancellation(
    thread: bool, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="examples.ipc_editor")
    caplog.set_level(logging.INFO, logger="tether.access")
    caplog.handler.addFilter(ContextFilter())
    view, dialog, outcome = EditorEventsListener(), ConfirmDialog(), Outcome()
    with trio.fail_after(10):
        await run(make_backend(), thread=thread, view=view, dialog=dialog, outcome=outcome)

    # The notifications, in the order the backend sent them.
    assert [(c.revision, c.kind, c.element.id, c.element.placement) for c in view.changes] == [
        (1, ChangeKind.ADDED, "door-5", Placement(10.0, 0.0)),
        (2, ChangeKind.MOVED, "door-5", Placement(12.5, 0.0)),
        (3, ChangeKind.DELETED, "door-5", Placement(12.5, 0.0)),
        (4, ChangeKind.ADDED, "xref-6", Placement(60.0, 60.0)),
    ]
    seeded = len(seed_elements())
    full = [("validate", done, seeded) for done in range(1, seeded + 1)]
    # The second validation stops at the external reference, the last element.
    cut_short = [("validate", done, seeded + 1) for done in range(1, seeded + 1)]
    assert view.progress_reports == full + cut_short
    assert dialog.questions == ["delete door door-5?"]
    assert view.closed_reason == "closed by the frontend"

    # The application error, rebuilt as itself from its fields.
    assert type(outcome.error) is ElementNotFound
    assert attrs.asdict(outcome.error) == {"element_id": "door-5"}
    assert outcome.problems == 1  # lamp-1 is off the sheet
    assert outcome.validation_cancelled
    assert outcome.saved is not None
    assert outcome.saved.revision == 4
    assert outcome.saved.element_ids == sorted([e.id for e in seed_elements()] + ["xref-6"])

    # Each action's log lines, on both tiers, carry that action's ActivityId.
    by_activity: dict[str, list[tuple[str, str]]] = defaultdict(list)
    for record in caplog.records:
        by_activity[getattr(record, "activity_id", "?")].append((record.name, record.getMessage()))
    assert len(outcome.activities) == 7
    assert len(set(outcome.activities)) == 7
    for activity in outcome.activities:
        names = {name for name, _ in by_activity[activity]}
        assert {FRONTEND, BACKEND, "tether.access"} <= names, (activity, by_activity[activity])
    assert set(by_activity) == {*outcome.activities, "-"}  # "-": the two on_close hooks
    assert sorted(by_activity["-"]) == [
        (BACKEND, "session over (closed by the frontend): closing floor-plan"),
        (FRONTEND, "view: session over (closed by the frontend)"),
    ]

    def lines(action: int, logger: str) -> list[str]:
        return [m for name, m in by_activity[outcome.activities[action - 1]] if name == logger]

    def calls(action: int) -> list[tuple[str, str]]:
        return [
            (f"{m['channel']}.{m['method']}", m["outcome"])
            for line in lines(action, "tether.access")
            if (m := ACCESS.match(line))
        ]

    # Notifications arrive with the ActivityId of the action that caused them.
    assert "view: door-5 added (10, 0), revision 1" in lines(2, FRONTEND)
    assert "view: door-5 moved (12.5, 0), revision 2" in lines(2, FRONTEND)
    # The backend's call back to the frontend, inside action 3, keeps its ActivityId.
    assert "dialog: delete door door-5? yes" in lines(3, FRONTEND)
    assert calls(3) == [("ipc-editor-prompts.confirm", "ok"), ("ipc-editor.delete_element", "ok")]
    assert calls(4) == [("ipc-editor.move_element", "application")]
    assert "caught ElementNotFound(element_id='door-5'), raised by the backend" in lines(
        4, FRONTEND
    )
    # The handler saw the cancellation, and stopped there.
    assert "validation cancelled after 4 of 5 elements" in lines(6, BACKEND)
    assert not [line for line in lines(6, BACKEND) if line.startswith("validation found")]
    [added, (validate, result)] = calls(6)
    assert added == ("ipc-editor.add_element", "ok")
    assert validate == "ipc-editor.validate_all"
    assert result in CANCELLED


async def test_each_session_has_its_own_document(thread: bool) -> None:
    backend = make_backend()
    with trio.fail_after(10):
        async with (
            memory.connect_ipc(backend, channels=[EditorIpc], thread=thread) as first,
            memory.connect_ipc(backend, channels=[EditorIpc], thread=thread) as second,
        ):
            views = EditorEventsListener(), EditorEventsListener()
            first.add_notification_handler(views[0])
            second.add_notification_handler(views[1])
            editors = first.proxy(EditorIpc), second.proxy(EditorIpc)
            for editor in editors:
                await editor.open_document("plan")
            door = await editors[0].add_element("door", 1.0, 2.0)
            lamp = await editors[1].add_element("lamp", 3.0, 4.0)
            await editors[1].move_element(lamp.id, 1.0, 1.0)
            with pytest.raises(ElementNotFound):
                await editors[1].move_element(door.id, 1.0, 1.0)
            saved = [await editor.save_document() for editor in editors]
            for view, info in zip(views, saved, strict=True):
                await view.wait_for_revision(info.revision)
    assert (saved[0].revision, saved[1].revision) == (1, 2)
    assert door.id in saved[0].element_ids
    assert door.id not in saved[1].element_ids
    # Each frontend heard of its own changes only.
    assert [c.element.id for c in views[0].changes] == [door.id]
    assert [c.element.id for c in views[1].changes] == [lamp.id, lamp.id]


async def test_declined_deletion_keeps_the_element(thread: bool) -> None:
    view, dialog = EditorEventsListener(), ConfirmDialog(answer=False)
    with trio.fail_after(10):
        async with memory.connect_ipc(
            make_backend(), channels=[EditorIpc], thread=thread, application_id=APPLICATION_ID
        ) as frontend_ipc:
            frontend_ipc.add_notification_handler(view)
            frontend_ipc.register(dialog)
            editor = frontend_ipc.proxy(EditorIpc)
            await editor.open_document("plan")
            assert await editor.delete_element("wall-1") is False
            await editor.move_element("wall-1", 1.0, 0.0)
            info = await editor.save_document()
            await view.wait_for_revision(info.revision)
    assert dialog.questions == ["delete wall wall-1?"]
    assert "wall-1" in info.element_ids
    assert [(c.kind, c.element.id) for c in view.changes] == [(ChangeKind.MOVED, "wall-1")]


async def test_calls_before_opening_a_document_are_refused() -> None:
    with trio.fail_after(10):
        async with memory.connect_ipc(make_backend(), channels=[EditorIpc]) as frontend_ipc:
            with pytest.raises(tether.NotFound, match="no document is open"):
                await frontend_ipc.proxy(EditorIpc).validate_all()
            assert frontend_ipc.is_valid  # an error ends the call, not the session


def test_document_is_plain_code() -> None:
    """The document runs without tether: it is ordinary backend code."""
    document = Document("plan", seed_elements())
    change = document.add("door", Placement(1.0, 1.0))
    assert (change.revision, change.element.id) == (1, "door-5")
    assert document.move("door-5", 1.0, -1.0).element.placement == Placement(2.0, 0.0)
    assert document.delete("door-5").revision == 3
    with pytest.raises(ElementNotFound):
        document.get("door-5")


# -- the demo, run as `make demo-ipc` runs it -----------------------------------------


def test_demo_correlates_each_action_across_tiers() -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "examples.ipc_editor"],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 0, f"exit {proc.returncode}\n{proc.stdout}\n{proc.stderr}"
    assert proc.stderr == ""
    output = proc.stdout
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

    assert [number for number, _ in actions] == list(range(1, 8)), output
    activities = [activity for _, activity in actions]
    assert len(set(activities)) == 7, "each user action has its own ActivityId"
    # Every log line belongs to one of the actions, but the session's end.
    assert set(lines) == {*activities, "-"}, output
    assert sorted(lines["-"]) == [
        ("backend", "session over (closed by the frontend): closing floor-plan"),
        ("frontend", "view: session over (closed by the frontend)"),
    ]
    for activity in activities:
        assert ACTIVITY_ID.match(activity), activity
        tiers = {tier for tier, _ in lines[activity]}
        assert tiers == {"frontend", "backend"}, (activity, lines[activity])

    def calls(action: int, tier: str) -> list[tuple[str, str]]:
        return [
            (f"{m['channel']}.{m['method']}", m["outcome"])
            for t, message in lines[activities[action - 1]]
            if t == tier and (m := ACCESS.match(message))
        ]

    assert calls(2, "backend") == [
        ("ipc-editor.add_element", "ok"),
        ("ipc-editor.move_element", "ok"),
    ]
    assert ("frontend", "view: door-5 moved (12.5, 0), revision 2") in lines[activities[1]]
    # The frontend served the backend's question: its access line is the frontend's.
    assert calls(3, "frontend") == [("ipc-editor-prompts.confirm", "ok")]
    assert calls(4, "backend") == [("ipc-editor.move_element", "application")]
    caught = "caught ElementNotFound(element_id='door-5'), raised by the backend"
    assert ("frontend", caught) in lines[activities[3]]
    six = lines[activities[5]]
    assert ("backend", "validation cancelled after 4 of 5 elements") in six
    assert ("frontend", "validation cancelled: it took longer than 0.5s") in six
    [added, (validate, result)] = calls(6, "backend")
    assert added == ("ipc-editor.add_element", "ok")
    assert validate == "ipc-editor.validate_all"
    assert result in CANCELLED
    assert ("frontend", "saved floor-plan at revision 4") in lines[activities[6]]
