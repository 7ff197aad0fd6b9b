"""The request context: who asked, for which user action, under which deadline."""

from __future__ import annotations

import collections.abc
import contextvars
import os
import random
from collections.abc import Iterator, Mapping
from contextlib import contextmanager

import attrs

from ._metadata import EMPTY_METADATA, check_metadata, freeze_metadata
from ._trace import valid_traceparent

__all__ = ["RequestContext", "activity", "current", "metadata", "new_activity_id", "using"]


# ActivityIds are made on every call that has no activity, so they must be
# cheap, and they are read by people in logs, so consecutive ones must look
# different at a glance (a counter made them differ in their last digits only).
# So: 122 random bits in UUID version-4 layout, from a Mersenne Twister seeded
# from os.urandom, which is several times cheaper than uuid.uuid4() (a system
# call each). Unique across processes for all practical purposes, but
# predictable to someone who has seen many of them: an ActivityId correlates,
# it is never a secret. A forked child would repeat its parent's sequence, so
# it reseeds.
_random = random.Random(os.urandom(32))
_random_bits = _random.getrandbits
# The version (4) and variant (RFC 4122: 0b10) bits of a version-4 UUID.
_KEEP = 0xFFFFFFFF_FFFF_0FFF_3FFF_FFFFFFFFFFFF
_SET = 0x00000000_0000_4000_8000_000000000000


def _reseed() -> None:
    _random.seed(os.urandom(32))


os.register_at_fork(after_in_child=_reseed)


# Where a new activity takes its id when the process traces its calls: tether.otel sets
# it (to "the active span's trace id, in UUID form, or None when no span is active") so
# that an ActivityId and its trace id are one. A hook, because contexts imports nothing.
_activity_id_source: collections.abc.Callable[[], str | None] | None = None


def new_activity_id() -> str:
    """Return a fresh ActivityId: a random version-4 UUID, as text (`8-4-4-4-12` hex digits).

    With `tether.otel` instrumenting the process and a span active, it is that span's
    trace id in UUID form instead. Unique, but not unpredictable: never use one as a secret.
    """
    if _activity_id_source is not None:
        traced = _activity_id_source()
        if traced is not None:
            return traced
    # to_bytes().hex() is about twice as fast as formatting the int as hex.
    h = (_random_bits(128) & _KEEP | _SET).to_bytes(16).hex()
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


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
        metadata: User key/value pairs (a frozen mapping; empty by default) that travel
            with every call made in this context and reach the impl, whose own calls
            carry them on (`tether.metadata`). Never the place for a credential. Its
            `repr` shows the keys only.
        traceparent: The W3C `traceparent` the request arrived with, or the one the
            calls made in this context send; None: each call derives one from the
            ActivityId.
    """

    activity_id: str = attrs.field(factory=new_activity_id)
    session_id: str | None = None
    application_id: str | None = None
    application_version: str | None = None
    authorization: str | None = attrs.field(default=None, repr=False)
    deadline: float | None = None
    operation: str | None = None
    metadata: Mapping[str, str] = attrs.field(default=EMPTY_METADATA, converter=freeze_metadata)
    traceparent: str | None = None


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
    metadata: Mapping[str, str] | None = None,
    traceparent: str | None = None,
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
        metadata: Key/value pairs the calls carry, merged over the enclosing
            context's (these win).
        traceparent: A W3C `traceparent` (for example one received from an outside
            system) the calls send instead of one derived from the ActivityId.

    Returns:
        A context manager whose value is the RequestContext now current.

    Raises:
        ValueError: `metadata` (merged) is over a limit (`MAX_METADATA_ENTRIES` and
            friends), or `traceparent` is not a valid W3C value.
    """
    outer = _current.get()
    if traceparent is not None and valid_traceparent(traceparent) is None:
        raise ValueError(
            f"traceparent must be a W3C Trace Context value like "
            f"'00-<32 hex>-<16 hex>-<2 hex>', got {traceparent!r}"
        )
    merged = check_metadata({**outer.metadata, **(metadata or {})} if outer else metadata or {})
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
        metadata=merged,
        traceparent=traceparent,
    )
    with using(context):
        yield context


@contextmanager
def metadata(**pairs: str) -> Iterator[RequestContext]:
    """Add key/value pairs to the current context for the block.

    Every call made in the block carries them (over HTTP as the W3C `baggage`
    header), the impl reads them as `tether.current_context().metadata`, and its
    own downstream calls carry them on. Nested blocks merge; the inner one wins
    for a key both set. Outside any activity or request, the block starts an
    activity (`activity()`), so its calls share one ActivityId.

    Metadata is not a place for credentials: it is forwarded to every downstream
    backend, including ones the user never meant the credential for.

    Args:
        **pairs: The pairs to add. For a key that is not a Python name, unpack a
            dict: `metadata(**{"x-tenant": "acme"})`.

    Returns:
        A context manager whose value is the RequestContext now current.

    Raises:
        ValueError: the merged metadata is over a limit: `MAX_METADATA_ENTRIES`,
            `MAX_METADATA_KEY_LENGTH`, `MAX_METADATA_VALUE_BYTES` or
            `MAX_METADATA_BYTES`; or a key is not a W3C Baggage key.
    """
    outer = _current.get()
    if outer is None:
        with activity(metadata=pairs) as context:
            yield context
        return
    context = attrs.evolve(outer, metadata=check_metadata({**outer.metadata, **pairs}))
    with using(context):
        yield context
