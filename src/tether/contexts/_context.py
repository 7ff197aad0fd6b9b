"""The request context: who asked, for which user action, under which deadline."""

from __future__ import annotations

import contextvars
import itertools
import os
from collections.abc import Iterator
from contextlib import contextmanager

import attrs

__all__ = ["RequestContext", "activity", "current", "new_activity_id", "using"]


# ActivityIds are made on every call that has no activity, so they must be
# cheap: 76 random bits per process (in UUID version-4 layout) and a counter.
# That is unique across processes for all practical purposes, but predictable
# within one: an ActivityId correlates, it is never a secret.
_random = os.urandom(10).hex()
_variant = "89ab"[int(_random[15], 16) % 4]
_id_prefix = f"{_random[:8]}-{_random[8:12]}-4{_random[12:15]}-{_variant}{_random[16:19]}-"
_id_counter = itertools.count(int.from_bytes(os.urandom(4), "big"))


def new_activity_id() -> str:
    """Return a fresh ActivityId, shaped like a UUID (`8-4-4-4-12` hex digits).

    Unique, but not unpredictable: never use one as a secret.
    """
    return f"{_id_prefix}{next(_id_counter) & 0xFFFFFFFFFFFF:012x}"


@attrs.frozen(slots=True)
class RequestContext:
    """Everything a request carries besides its arguments.

    On the frontend, `activity()` sets one for a user action; on the backend, the
    server sets one for every request before the impl task is spawned, so the impl,
    its child tasks and its downstream calls all see it.

    Attributes:
        activity_id: Correlates every log line and downstream call of one user action.
        session_id: The frontend's session, or the connection's when it has none.
        application_id: Which application made the request.
        application_version: That application's version.
        authorization: The credential the request carries. It is never logged, never
            shown by `repr`, and not forwarded by `str`.
        deadline: On a backend, the Trio clock time by which the request must finish,
            or None when it has none. Informational: the impl already runs under it.
        operation: On a backend, `InterfaceName.operation` of the request being served.
    """

    activity_id: str = attrs.field(factory=new_activity_id)
    session_id: str | None = None
    application_id: str | None = None
    application_version: str | None = None
    authorization: str | None = attrs.field(default=None, repr=False)
    deadline: float | None = None
    operation: str | None = None


_current: contextvars.ContextVar[RequestContext | None] = contextvars.ContextVar(
    "tether_request_context", default=None
)


def current() -> RequestContext | None:
    """Return the RequestContext of the request or activity being run, or None."""
    return _current.get()


class using:
    """Make `context` current for the block, then restore the previous one.

    Trio copies the context when a task is spawned, so tasks started inside the
    block keep `context` after the block ends; that is how the server hands a
    request's context to the impl task without leaking it into its own.
    """

    # A class, not @contextmanager: the server enters one per request.
    __slots__ = ("_context", "_token")

    def __init__(self, context: RequestContext | None) -> None:
        self._context = context
        self._token: contextvars.Token[RequestContext | None] | None = None

    def __enter__(self) -> RequestContext | None:
        self._token = _current.set(self._context)
        return self._context

    def __exit__(self, *exc_info: object) -> None:
        assert self._token is not None
        _current.reset(self._token)


@contextmanager
def activity(
    activity_id: str | None = None,
    *,
    session_id: str | None = None,
    application_id: str | None = None,
    application_version: str | None = None,
    authorization: str | None = None,
) -> Iterator[RequestContext]:
    """Start a user action: a new ActivityId for every call made inside the block.

    Fields not given are kept from the enclosing context, if any, so an activity
    started inside a request keeps its session and application.

    Args:
        activity_id: Use this ActivityId instead of a fresh one (for example one
            received from an outside system).
        session_id: Overrides the session the calls carry.
        application_id: Overrides the application the calls carry.
        application_version: Overrides the application version the calls carry.
        authorization: The credential the calls carry.

    Returns:
        A context manager whose value is the RequestContext now current.
    """
    outer = _current.get()
    if outer is not None:
        session_id = session_id if session_id is not None else outer.session_id
        application_id = application_id if application_id is not None else outer.application_id
        if application_version is None:
            application_version = outer.application_version
        authorization = authorization if authorization is not None else outer.authorization
    context = RequestContext(
        activity_id=activity_id if activity_id is not None else new_activity_id(),
        session_id=session_id,
        application_id=application_id,
        application_version=application_version,
        authorization=authorization,
    )
    with using(context):
        yield context
