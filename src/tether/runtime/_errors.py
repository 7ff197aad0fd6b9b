"""The exceptions tether raises, and how they cross the wire.

The tree::

    TetherError                      root of every error tether raises
    ├── InvalidRequest               bad-request (400): malformed message, args or result
    ├── Unauthorized                 unauthorized (401): the authorization hook refused
    ├── Forbidden                    forbidden (403): from an Origin not allowed
    ├── IncompatibleVersion          incompatible-version (403): interface versions differ
    ├── NotFound                     not-found (404): unknown interface, operation, channel
    ├── PayloadTooLarge              payload-too-large (413): over the message size limit
    ├── Unavailable                  too-many-requests (429) / unavailable (503)
    ├── DeadlineExceeded             deadline-exceeded (504): the propagated deadline passed
    ├── RemoteError                  internal (500): the impl raised an unexpected exception
    └── TransportError               the connection failed; never crosses the wire
        ├── ConnectError             could not connect, or the handshake failed
        └── ConnectionClosed         the connection closed while in use
            ├── CallNotSent          ...before the call was sent: it certainly did not run
            └── CallMayHaveRun       ...after the call was sent: it may have run

Every error carries `activity_id` (the user action it belongs to, when known) and
`remote`: True when the other side reported it, False when it was raised here.
Application exceptions registered with `remote_error` cross the wire as themselves
(code `application`, status 422) and are not part of the tree.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, ClassVar, TypeVar, overload

__all__ = [
    "CallMayHaveRun",
    "CallNotSent",
    "ConnectError",
    "ConnectionClosed",
    "DeadlineExceeded",
    "Forbidden",
    "IncompatibleVersion",
    "InvalidRequest",
    "NotFound",
    "PayloadTooLarge",
    "RemoteError",
    "TetherError",
    "TransportError",
    "Unauthorized",
    "Unavailable",
    "error_class_for_code",
    "registered_remote_error",
    "remote_error",
    "remote_error_name",
]


class TetherError(Exception):
    """Root of every exception tether raises.

    Attributes:
        message: What went wrong, what was expected, and what to do.
        details: Structured facts about the error (JSON values), for programs.
        activity_id: The ActivityId of the request, when known.
        remote: True when the other side reported the error.
    """

    code: ClassVar[str] = "internal"
    status: ClassVar[int] = 500

    def __init__(
        self,
        message: str,
        *,
        details: Mapping[str, Any] | None = None,
        activity_id: str | None = None,
        remote: bool = False,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.details: dict[str, Any] = dict(details) if details else {}
        self.activity_id = activity_id
        self.remote = remote

    def __str__(self) -> str:
        if self.activity_id:
            return f"{self.message} (activity {self.activity_id})"
        return self.message


class InvalidRequest(TetherError):
    """A message, argument or result did not fit what was declared (400)."""

    code = "bad-request"
    status = 400


class Unauthorized(TetherError):
    """The server's authorization hook refused the request (401)."""

    code = "unauthorized"
    status = 401


class Forbidden(TetherError):
    """The request came from where it may not: a browser page of an origin the
    server does not allow (403). (A `Host` it does not answer to is a
    bad request, `InvalidRequest`, 400.)

    Nothing ran. A server refuses these before it looks at what was asked, so
    that a hostile page cannot make a browser call a backend it can reach.
    """

    code = "forbidden"
    status = 403


class IncompatibleVersion(TetherError):
    """The client's and the server's versions of an interface are incompatible (403)."""

    code = "incompatible-version"
    status = 403


class NotFound(TetherError):
    """Unknown interface, operation, channel or method (404)."""

    code = "not-found"
    status = 404


class PayloadTooLarge(TetherError):
    """A message is larger than the configured limit (413)."""

    code = "payload-too-large"
    status = 413


class Unavailable(TetherError):
    """The server is overloaded (429) or shutting down (503); retry later.

    Attributes:
        retry_after: Seconds the server asks the client to wait, when it said.
    """

    code = "unavailable"
    status = 503

    def __init__(
        self,
        message: str,
        *,
        retry_after: float | None = None,
        overloaded: bool = False,
        details: Mapping[str, Any] | None = None,
        activity_id: str | None = None,
        remote: bool = False,
    ) -> None:
        merged = dict(details) if details else {}
        if retry_after is not None:
            merged["retry_after"] = retry_after
        if overloaded:
            merged["overloaded"] = True
        super().__init__(message, details=merged, activity_id=activity_id, remote=remote)
        self.retry_after = retry_after
        self.overloaded = overloaded
        if overloaded:
            # Instance attributes shadow the class ones: 429 is the same error,
            # told apart so HTTP can answer with the right status.
            self.code = "too-many-requests"  # type: ignore[misc]
            self.status = 429  # type: ignore[misc]


class DeadlineExceeded(TetherError):
    """The deadline the client propagated passed while the server worked (504)."""

    code = "deadline-exceeded"
    status = 504


class RemoteError(TetherError):
    """The impl raised an exception that is not registered as remote-capable (500).

    Attributes:
        remote_type: The qualified name of the exception class on the server.
        remote_traceback: The server's traceback, only when it runs in development mode.
    """

    code = "internal"
    status = 500

    def __init__(
        self,
        message: str,
        *,
        remote_type: str = "",
        remote_traceback: str | None = None,
        details: Mapping[str, Any] | None = None,
        activity_id: str | None = None,
        remote: bool = True,
    ) -> None:
        super().__init__(message, details=details, activity_id=activity_id, remote=remote)
        self.remote_type = remote_type
        self.remote_traceback = remote_traceback


class TransportError(TetherError):
    """The connection to the other side failed. Raised locally, never sent.

    Attributes:
        reason: Why, in the words of the side that ended it, when known.
        close_code: The WebSocket close code (1000-4999) when the connection
            was a WebSocket and it closed with one.
    """

    code = "transport"
    status = 502

    def __init__(
        self,
        message: str,
        *,
        reason: str | None = None,
        close_code: int | None = None,
        details: Mapping[str, Any] | None = None,
        activity_id: str | None = None,
    ) -> None:
        super().__init__(message, details=details, activity_id=activity_id)
        self.reason = reason
        self.close_code = close_code


class ConnectError(TransportError):
    """Could not connect, or the connection's handshake failed.

    Attributes:
        status_code: The HTTP status with which the server refused a WebSocket
            handshake (401, 403, 503...), when it did.
    """

    def __init__(
        self,
        message: str,
        *,
        reason: str | None = None,
        close_code: int | None = None,
        status_code: int | None = None,
        details: Mapping[str, Any] | None = None,
        activity_id: str | None = None,
    ) -> None:
        super().__init__(
            message,
            reason=reason,
            close_code=close_code,
            details=details,
            activity_id=activity_id,
        )
        self.status_code = status_code


class ConnectionClosed(TransportError):
    """The connection closed while a call was using it, or was used after closing.

    `reason` says why, when known; `close_code` is the WebSocket close code.
    """


class CallNotSent(ConnectionClosed):
    """The connection was lost before the call was sent: it certainly did not run.

    Every operation is retried after it (`RetryPolicy`); it reaches the caller
    when the retries are spent or the deadline is near.
    """


class CallMayHaveRun(ConnectionClosed):
    """The connection was lost after the call was sent and before its answer came.

    The backend may have run it, in part or in full, or not at all; nobody can
    tell. An operation declared `@tether.idempotent` (or cacheable) is retried
    after this; any other reaches the caller with it, and never runs twice.
    """


_BY_CODE: dict[str, type[TetherError]] = {
    cls.code: cls
    for cls in (
        InvalidRequest,
        Unauthorized,
        Forbidden,
        IncompatibleVersion,
        NotFound,
        PayloadTooLarge,
        Unavailable,
        DeadlineExceeded,
        RemoteError,
    )
}
_BY_CODE["too-many-requests"] = Unavailable
# The HTTP server's refusals of a malformed request, told apart by their own
# codes (405, 408, 415): to a caller they are bad requests like any other.
_REFUSED_AS_MALFORMED = ("method-not-allowed", "request-timeout", "unsupported-media-type")
_BY_CODE.update(dict.fromkeys(_REFUSED_AS_MALFORMED, InvalidRequest))


def error_class_for_code(code: str) -> type[TetherError] | None:
    """Return the TetherError class for a wire error code, or None if unknown."""
    return _BY_CODE.get(code)


# ---------------------------------------------------------------------------
# Application exceptions that round-trip

E = TypeVar("E", bound=type[BaseException])

_remote_errors: dict[str, type[BaseException]] = {}
_remote_names: dict[type[BaseException], str] = {}


@overload
def remote_error(cls: E, /) -> E: ...
@overload
def remote_error(*, name: str | None = None) -> Callable[[E], E]: ...


def remote_error(cls: E | None = None, /, *, name: str | None = None) -> E | Callable[[E], E]:
    """Register an application exception so it is re-raised on the client as itself.

    Use it on a class shared by both sides, as `@remote_error` or
    `@remote_error(name="robots.NotEnough")`. An attrs exception crosses with its
    fields; any other exception crosses with its `args`, which must then be values
    the codec can carry.

    Args:
        cls: The exception class.
        name: The name on the wire; by default `module.QualifiedName`. Both sides
            must register the same name, so keep it stable across refactors.

    Returns:
        The class, unchanged.

    Raises:
        TypeError: `cls` is not an exception class, or the name is taken by another.
    """

    def register(klass: E) -> E:
        if not (isinstance(klass, type) and issubclass(klass, BaseException)):
            raise TypeError(f"@remote_error needs an exception class, got {klass!r}")
        if issubclass(klass, TetherError):
            raise TypeError(
                f"{klass.__qualname__} is a TetherError: those cross the wire by their "
                "code already; register only application exceptions"
            )
        wire_name = name if name is not None else f"{klass.__module__}.{klass.__qualname__}"
        taken = _remote_errors.get(wire_name)
        if taken is not None and taken is not klass:
            raise TypeError(
                f"remote error name {wire_name!r} is already registered for "
                f"{taken.__module__}.{taken.__qualname__}: pass name=... to tell them apart"
            )
        _remote_errors[wire_name] = klass
        _remote_names[klass] = wire_name
        return klass

    if cls is not None:
        return register(cls)
    return register


def remote_error_name(exc: BaseException) -> str | None:
    """Return the wire name under which `exc`'s class (or a base) is registered."""
    for klass in type(exc).__mro__:
        wire_name = _remote_names.get(klass)
        if wire_name is not None:
            return wire_name
    return None


def registered_remote_error(name: str) -> type[BaseException] | None:
    """Return the application exception class registered under `name`, or None."""
    return _remote_errors.get(name)
