# mypy: disable-error-code="empty-body"
"""Shared code: the channels the frontend and the backend both import.

Three channels make up the editor's IPC:

* `EditorIpc`, requests from the frontend that the backend answers;
* `EditorEvents`, one-way notifications from the backend to its frontend;
* `EditorPrompts`, requests the other way: the backend asks the frontend's
  user a question in the middle of one of its own methods.

The argument and result types, and the application error that crosses the
wire, live here too so that both tiers agree on them.
"""

from __future__ import annotations

import enum

import attrs

import tether

__all__ = [
    "ChangeKind",
    "DocumentInfo",
    "EditorEvents",
    "EditorIpc",
    "EditorPrompts",
    "Element",
    "ElementChange",
    "ElementNotFound",
    "Placement",
]


@attrs.frozen
class Placement:
    """Where an element sits on the sheet."""

    x: float
    y: float


@attrs.frozen
class Element:
    """One element of the document: a wall, a door, an external reference..."""

    id: str
    kind: str
    placement: Placement


@attrs.frozen
class DocumentInfo:
    """The open document: its name, how many changes it went through, its elements."""

    name: str
    revision: int
    element_ids: list[str]


class ChangeKind(enum.Enum):
    ADDED = "added"
    MOVED = "moved"
    DELETED = "deleted"


@attrs.frozen
class ElementChange:
    """What one edit did; `revision` counts the document's edits, from 1."""

    revision: int
    kind: ChangeKind
    element: Element


@tether.remote_error
@attrs.define
class ElementNotFound(Exception):
    """The document has no element with this id.

    Registered with `remote_error`, so the frontend catches it as itself, with
    its field, rather than as a generic remote error.
    """

    element_id: str

    def __str__(self) -> str:
        return f"no element {self.element_id!r} in the document"


class EditorIpc(tether.IpcInterface):
    """The editor's requests: the frontend asks, its backend answers."""

    channel_name = "ipc-editor"  # the wire name: never change it
    version = "1.0.0"

    async def open_document(self, name: str) -> DocumentInfo:
        """Open `name` (a fresh copy of the seeded plan) for this session."""
        ...

    async def add_element(self, kind: str, x: float, y: float) -> Element:
        """Add an element; notifies `element_changed`."""
        ...

    async def move_element(self, element_id: str, dx: float, dy: float) -> Placement:
        """Move an element by (dx, dy); notifies `element_changed`.

        Raises:
            ElementNotFound: no such element.
        """
        ...

    async def delete_element(self, element_id: str) -> bool:
        """Delete an element once the user confirms (`EditorPrompts.confirm`).

        Returns:
            True when deleted, False when the user said no.

        Raises:
            ElementNotFound: no such element.
        """
        ...

    async def validate_all(self) -> int:
        """Check every element; notifies `progress` after each one.

        Long-running: an external reference takes a long time to check, and
        cancelling the call stops the validation where it is.

        Returns:
            How many problems were found.
        """
        ...

    async def save_document(self) -> DocumentInfo:
        """Save the document and describe it."""
        ...


class EditorEvents(tether.NotificationInterface):
    """What the backend tells its frontend, unasked."""

    channel_name = "ipc-editor-events"

    async def element_changed(self, change: ElementChange) -> None:
        """An element was added, moved or deleted."""
        ...

    async def progress(self, task: str, done: int, total: int) -> None:
        """A long-running `task` has handled `done` of its `total` items."""
        ...


class EditorPrompts(tether.IpcInterface):
    """Served by the frontend, called by the backend: questions for the user."""

    channel_name = "ipc-editor-prompts"
    version = "1.0.0"

    async def confirm(self, question: str) -> bool:
        """Ask the user a yes/no question."""
        ...
