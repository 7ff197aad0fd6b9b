"""The frontend: user actions against the editor's backend, a view, and a dialog.

It imports only the shared channels, never the backend: `run` is handed the
backend's `BackendIpc` to serve in-process, and from then on sees nothing but
a proxy typed as `EditorIpc`.

Three pieces receive what the backend sends:

* `EditorEventsListener`, a `NotificationHandler` of `EditorEvents`: the view,
  which shows every change and progress report as it arrives;
* `ConfirmDialog`, an `IpcHandler` of `EditorPrompts` that the frontend serves:
  the backend calls it to ask the user to confirm a deletion;
* the user actions themselves, which await the backend's replies.

Each user action runs in `tether.activity()`, which starts a new ActivityId.
The calls carry it to the backend, the backend's notifications and calls back
carry it home, so every log line of one action, on both tiers, shares one id.
"""

from __future__ import annotations

import logging

import attrs
import trio

import tether
from tether.transports import memory

from .interface import (
    DocumentInfo,
    EditorEvents,
    EditorIpc,
    EditorPrompts,
    ElementChange,
    ElementNotFound,
)

__all__ = [
    "APPLICATION_ID",
    "DOCUMENT",
    "VALIDATION_BUDGET",
    "ConfirmDialog",
    "EditorEventsListener",
    "Outcome",
    "run",
    "run_actions",
    "run_session",
]

log = logging.getLogger(__name__)

APPLICATION_ID = "ipc-editor-demo"
DOCUMENT = "floor-plan"
#: How long the user waits for the second validation before giving up, in seconds.
VALIDATION_BUDGET = 0.5


class EditorEventsListener(tether.NotificationHandler, EditorEvents):
    """The view: shows each notification, and remembers it.

    Notifications are delivered one at a time, in the order the backend sent
    them, with the ActivityId of the action that caused them.
    """

    def __init__(self) -> None:
        self.changes: list[ElementChange] = []
        self.progress_reports: list[tuple[str, int, int]] = []
        self.closed_reason: str | None = None
        self._changed = trio.Event()

    async def element_changed(self, change: ElementChange) -> None:
        element = change.element
        where = f"({element.placement.x:g}, {element.placement.y:g})"
        log.info(
            "view: %s %s %s, revision %d", element.id, change.kind.value, where, change.revision
        )
        self.changes.append(change)
        self._changed.set()
        self._changed = trio.Event()

    async def progress(self, task: str, done: int, total: int) -> None:
        log.info("view: %s %d/%d", task, done, total)
        self.progress_reports.append((task, done, total))

    @property
    def revision(self) -> int:
        """The document revision the view has caught up with."""
        return self.changes[-1].revision if self.changes else 0

    async def wait_for_revision(self, revision: int) -> None:
        """Wait until the view has shown every change up to `revision`."""
        while self.revision < revision:
            await self._changed.wait()

    def on_close(self, reason: str) -> None:
        self.closed_reason = reason
        log.info("view: session over (%s)", reason)


class ConfirmDialog(tether.IpcHandler, EditorPrompts):
    """Served by the frontend: the backend asks the user a question; this user says `answer`."""

    def __init__(self, answer: bool = True) -> None:
        self.answer = answer
        self.questions: list[str] = []

    async def confirm(self, question: str) -> bool:
        self.questions.append(question)
        log.info("dialog: %s %s", question, "yes" if self.answer else "no")
        return self.answer


@attrs.define
class Outcome:
    """What the user actions saw, for whoever runs them (the demo's test)."""

    activities: list[str] = attrs.Factory(list)  # the ActivityId of each action, in order
    error: ElementNotFound | None = None
    problems: int | None = None
    validation_cancelled: bool = False
    saved: DocumentInfo | None = None


async def run_actions(
    editor: EditorIpc, view: EditorEventsListener, outcome: Outcome | None = None
) -> Outcome:
    """Perform the user actions, one after the other, each in its own activity."""
    outcome = outcome if outcome is not None else Outcome()

    with tether.activity() as action:
        outcome.activities.append(action.activity_id)
        log.info("action 1: open %s", DOCUMENT)
        info = await editor.open_document(DOCUMENT)
        log.info("%s holds %s", info.name, ", ".join(info.element_ids))

    with tether.activity() as action:
        outcome.activities.append(action.activity_id)
        log.info("action 2: add a door and nudge it")
        door = await editor.add_element("door", 10.0, 0.0)
        placement = await editor.move_element(door.id, 2.5, 0.0)
        log.info("%s is now at (%g, %g)", door.id, placement.x, placement.y)

    with tether.activity() as action:
        outcome.activities.append(action.activity_id)
        log.info("action 3: delete %s", door.id)
        deleted = await editor.delete_element(door.id)
        log.info("%s %s", door.id, "deleted" if deleted else "kept")

    with tether.activity() as action:
        outcome.activities.append(action.activity_id)
        log.info("action 4: move %s again", door.id)
        try:
            await editor.move_element(door.id, 1.0, 0.0)
        except ElementNotFound as exc:
            outcome.error = exc
            log.info("caught %r, raised by the backend", exc)

    with tether.activity() as action:
        outcome.activities.append(action.activity_id)
        log.info("action 5: validate the document")
        outcome.problems = await editor.validate_all()
        log.info("validation found %d problem(s)", outcome.problems)

    with tether.activity() as action:
        outcome.activities.append(action.activity_id)
        log.info("action 6: add an external reference, validate again for %gs", VALIDATION_BUDGET)
        await editor.add_element("xref", 60.0, 60.0)
        with trio.move_on_after(VALIDATION_BUDGET) as budget:
            await editor.validate_all()
        outcome.validation_cancelled = budget.cancelled_caught
        if budget.cancelled_caught:
            log.info("validation cancelled: it took longer than %gs", VALIDATION_BUDGET)

    with tether.activity() as action:
        outcome.activities.append(action.activity_id)
        log.info("action 7: save")
        outcome.saved = await editor.save_document()
        # Notifications travel beside the replies: let the view catch up
        # with every change before the session ends.
        await view.wait_for_revision(outcome.saved.revision)
        log.info("saved %s at revision %d", outcome.saved.name, outcome.saved.revision)

    return outcome


async def run(
    backend_ipc: tether.BackendIpc,
    *,
    thread: bool = False,
    view: EditorEventsListener | None = None,
    dialog: ConfirmDialog | None = None,
    outcome: Outcome | None = None,
) -> Outcome:
    """Serve `backend_ipc` in-process, open a session with it, and run the user actions.

    Args:
        backend_ipc: The backend to pair with (the frontend never imports it).
        thread: Run the backend in its own thread and Trio loop.
        view: Receives the backend's notifications; a new one by default.
        dialog: Answers the backend's questions; one that says yes by default.
        outcome: Filled in as the actions go; a new one by default.
    """
    async with memory.connect_ipc(
        backend_ipc, channels=[EditorIpc], thread=thread, application_id=APPLICATION_ID
    ) as frontend_ipc:
        return await run_session(frontend_ipc, view=view, dialog=dialog, outcome=outcome)


async def run_session(
    frontend_ipc: tether.FrontendIpc,
    *,
    view: EditorEventsListener | None = None,
    dialog: ConfirmDialog | None = None,
    outcome: Outcome | None = None,
) -> Outcome:
    """Run the user actions over an open session, whatever its transport.

    The view and the dialog are attached to the session first, so nothing the
    backend sends is missed.
    """
    view = view if view is not None else EditorEventsListener()
    dialog = dialog if dialog is not None else ConfirmDialog()
    frontend_ipc.add_notification_handler(view)
    frontend_ipc.register(dialog)
    editor = frontend_ipc.proxy(EditorIpc)  # typed as EditorIpc
    return await run_actions(editor, view, outcome)
