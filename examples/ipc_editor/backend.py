"""The backend: an in-memory document, and the handler that edits it for one frontend.

`EditorHandler` is registered as a class, so the backend makes one for each
session: every frontend gets its own open document, kept in the handler, with
no session table to look it up in. Inside a method, `tether.current_session()`
is that frontend's session; the handler uses it to notify the frontend of
every change, to report progress, and to ask the frontend's user to confirm a
deletion (a call from the backend to the frontend, in the middle of a call
the other way).

The document is ordinary code that knows nothing of tether. Its log lines, and
the handler's, carry the ActivityId of the user action that caused them,
because the session sets each request's context before the method runs and
`tether.contexts.ContextFilter` (see `__main__`) copies it onto every record.
"""

from __future__ import annotations

import itertools
import logging
from collections.abc import Iterable

import trio

import tether

from .interface import (
    ChangeKind,
    DocumentInfo,
    EditorEvents,
    EditorIpc,
    EditorPrompts,
    Element,
    ElementChange,
    ElementNotFound,
    Placement,
)

__all__ = [
    "SHEET_SIZE",
    "XREF_CHECK_SECONDS",
    "Document",
    "EditorHandler",
    "make_backend",
    "seed_elements",
]

log = logging.getLogger(__name__)

#: The sheet is a square of this side; an element placed off it is a problem.
SHEET_SIZE = 100.0
#: How long checking an external reference takes: it fetches the referenced file.
XREF_CHECK_SECONDS = 30.0


def seed_elements() -> list[Element]:
    """The elements every opened document starts with; the lamp is off the sheet."""
    return [
        Element("wall-1", "wall", Placement(0.0, 0.0)),
        Element("wall-2", "wall", Placement(0.0, 50.0)),
        Element("window-1", "window", Placement(25.0, 0.0)),
        Element("lamp-1", "lamp", Placement(120.0, 40.0)),
    ]


class Document:
    """An open document: its elements by id, and a revision counting its edits."""

    def __init__(self, name: str, elements: Iterable[Element]) -> None:
        self.name = name
        self.revision = 0
        self.elements: dict[str, Element] = {e.id: e for e in elements}
        self._numbers = itertools.count(len(self.elements) + 1)

    def info(self) -> DocumentInfo:
        return DocumentInfo(self.name, self.revision, sorted(self.elements))

    def get(self, element_id: str) -> Element:
        try:
            return self.elements[element_id]
        except KeyError:
            log.warning("%s has no element %s", self.name, element_id)
            raise ElementNotFound(element_id) from None

    def add(self, kind: str, placement: Placement) -> ElementChange:
        element = Element(f"{kind}-{next(self._numbers)}", kind, placement)
        self.elements[element.id] = element
        log.info("added %s at (%g, %g)", element.id, placement.x, placement.y)
        return self._changed(ChangeKind.ADDED, element)

    def move(self, element_id: str, dx: float, dy: float) -> ElementChange:
        old = self.get(element_id)
        placement = Placement(old.placement.x + dx, old.placement.y + dy)
        element = Element(old.id, old.kind, placement)
        self.elements[element_id] = element
        log.info("moved %s to (%g, %g)", element_id, placement.x, placement.y)
        return self._changed(ChangeKind.MOVED, element)

    def delete(self, element_id: str) -> ElementChange:
        element = self.get(element_id)
        del self.elements[element_id]
        log.info("deleted %s", element_id)
        return self._changed(ChangeKind.DELETED, element)

    def _changed(self, kind: ChangeKind, element: Element) -> ElementChange:
        self.revision += 1
        return ElementChange(self.revision, kind, element)


async def check_element(element: Element) -> bool:
    """Validate one element; True when it has a problem."""
    if element.kind == "xref":
        # An external reference: fetching the referenced file is slow.
        log.info("checking %s: fetching its referenced file", element.id)
        await trio.sleep(XREF_CHECK_SECONDS)
        return False
    await trio.lowlevel.checkpoint()
    placement = element.placement
    if not (0 <= placement.x <= SHEET_SIZE and 0 <= placement.y <= SHEET_SIZE):
        log.warning("%s is off the sheet at (%g, %g)", element.id, placement.x, placement.y)
        return True
    return False


class EditorHandler(tether.IpcHandler, EditorIpc):
    """Serves `EditorIpc` for one session: one instance, one open document, per frontend."""

    def __init__(self) -> None:
        self.document: Document | None = None

    def _document(self) -> Document:
        if self.document is None:
            raise tether.NotFound("no document is open in this session: call open_document")
        return self.document

    async def _notify(self, change: ElementChange) -> None:
        # Queued for this session's frontend only; returns without waiting for it.
        events = tether.current_session().notifier(EditorEvents)
        await events.element_changed(change)

    async def open_document(self, name: str) -> DocumentInfo:
        session = tether.current_session()
        log.info("opening %s for %s", name, session.application_id)
        self.document = Document(name, seed_elements())
        return self.document.info()

    async def add_element(self, kind: str, x: float, y: float) -> Element:
        change = self._document().add(kind, Placement(x, y))
        await self._notify(change)
        return change.element

    async def move_element(self, element_id: str, dx: float, dy: float) -> Placement:
        change = self._document().move(element_id, dx, dy)
        await self._notify(change)
        return change.element.placement

    async def delete_element(self, element_id: str) -> bool:
        document = self._document()
        element = document.get(element_id)
        # A call to the frontend, inside this call from it: same session, same ActivityId.
        prompts = tether.current_session().proxy(EditorPrompts)
        if not await prompts.confirm(f"delete {element.kind} {element.id}?"):
            log.info("kept %s: the user said no", element_id)
            return False
        await self._notify(document.delete(element_id))
        return True

    async def validate_all(self) -> int:
        document = self._document()
        events = tether.current_session().notifier(EditorEvents)
        elements = [document.elements[key] for key in sorted(document.elements)]
        total = len(elements)
        log.info("validating %d elements of %s", total, document.name)
        problems = done = 0
        try:
            for element in elements:
                problems += await check_element(element)
                done += 1
                await events.progress("validate", done, total)
        except trio.Cancelled:
            # The caller cancelled (or its deadline passed): the call stops here.
            log.warning("validation cancelled after %d of %d elements", done, total)
            raise
        log.info("validation found %d problem(s)", problems)
        return problems

    async def save_document(self) -> DocumentInfo:
        document = self._document()
        log.info("saved %s at revision %d", document.name, document.revision)
        return document.info()

    def on_close(self, reason: str) -> None:
        name = self.document.name if self.document is not None else "no document"
        log.info("session over (%s): closing %s", reason, name)


def make_backend() -> tether.BackendIpc:
    """The backend's IPC, serving `EditorIpc` with one `EditorHandler` per session."""
    backend = tether.BackendIpc()
    backend.register(EditorHandler)
    return backend
