"""The headers of an RPC request over HTTP: its context, deadline and body's type."""

from __future__ import annotations

from ... import contexts
from ...contexts._metadata import EMPTY_METADATA, Metadata, decode_baggage
from ...contexts._trace import valid_traceparent
from ...runtime import IncompatibleVersion, InvalidRequest
from ...runtime._protocol import MAX_LABEL_LENGTH, PROTOCOL_VERSION, is_label
from ...runtime._util import MAX_TIMEOUT_MS

__all__ = ["CallHeaders", "read_call_headers"]


class CallHeaders:
    """What an RPC request's headers say, read in one pass."""

    __slots__ = (
        "accept",
        "activity_id",
        "application_id",
        "application_version",
        "authorization",
        "bad_label",
        "bad_metadata",
        "content_length",
        "content_type",
        "metadata",
        "protocol",
        "session_id",
        "timeout",
        "traceparent",
    )

    def __init__(self) -> None:
        self.activity_id = ""
        self.session_id: str | None = None
        self.application_id: str | None = None
        self.application_version: str | None = None
        self.authorization: str | None = None
        self.timeout: bytes | None = None
        self.protocol: bytes | None = None
        self.accept: bytes | None = None
        self.content_length: bytes | None = None
        self.content_type: bytes | None = None
        #: The first header that must be a label (`is_label`) and is not.
        self.bad_label: str | None = None
        #: The `baggage` header's members as metadata (malformed ones skipped).
        self.metadata: Metadata = EMPTY_METADATA
        #: Why the `baggage` header was refused (over a limit), or None.
        self.bad_metadata: str | None = None
        #: The `traceparent` header when it is a valid W3C value, else None.
        self.traceparent: str | None = None

    def refusal(self) -> InvalidRequest | None:
        """The error for a context header the request cannot carry, or None."""
        if self.bad_label is not None:
            return InvalidRequest(
                f"{self.bad_label} must be printable text of at most {MAX_LABEL_LENGTH} characters",
                details={"field": self.bad_label},
            )
        if self.bad_metadata is not None:
            return InvalidRequest(
                f"the baggage header (the request's metadata): {self.bad_metadata}",
                details={"field": "baggage"},
            )
        return None

    def checked_timeout_ms(self) -> int | None:
        """The `X-Timeout-Ms` deadline (None without one), once the protocol is checked.

        Raises:
            IncompatibleVersion: `X-Protocol-Version` names another protocol.
            InvalidRequest: `X-Timeout-Ms` is not a whole number >= 0.
        """
        protocol = self.protocol
        if protocol is not None and protocol.strip() != b"%d" % PROTOCOL_VERSION:
            raise IncompatibleVersion(
                f"this backend speaks tether protocol {PROTOCOL_VERSION}, the request says "
                f"X-Protocol-Version: {protocol.decode('latin-1')}: upgrade the older side"
            )
        timeout = self.timeout
        if timeout is None:
            return None
        try:
            timeout_ms = int(timeout)
        except ValueError:
            timeout_ms = -1
        if timeout_ms < 0:
            raise InvalidRequest(
                f"X-Timeout-Ms must be a whole number of milliseconds >= 0, got "
                f"{timeout.decode('latin-1')!r}",
                details={"field": "X-Timeout-Ms"},
            )
        # Beyond any real deadline, and too large to become a float: the most a
        # client sends (the runtime's own bound).
        return min(timeout_ms, MAX_TIMEOUT_MS)


def read_call_headers(headers: list[tuple[bytes, bytes]]) -> CallHeaders:
    """Read a request's headers (one pass, a decode only for those used).

    The ActivityId is the `X-Correlation-ID`, else the trace id of a
    `traceparent`, else a new one; one that is not a label is replaced, and
    `bad_label` names the first header that must be one and is not. The
    `baggage` header (one line or several) becomes the metadata; one over a
    limit sets `bad_metadata`.
    """
    out = CallHeaders()
    activity_id = traceparent = None
    baggage: list[str] | None = None
    for key, raw in headers:
        if key == b"x-correlation-id":
            activity_id = raw.decode("utf-8", "replace")
        elif key == b"content-length":
            out.content_length = raw
        elif key == b"content-type":
            # Sent twice: both, which is not JSON's type.
            out.content_type = raw if out.content_type is None else out.content_type + b", " + raw
        elif key == b"x-session-id":
            out.session_id = raw.decode("utf-8", "replace")
        elif key == b"x-application-id":
            out.application_id = raw.decode("utf-8", "replace")
        elif key == b"x-application-version":
            out.application_version = raw.decode("utf-8", "replace")
        elif key == b"authorization":
            out.authorization = raw.decode("utf-8", "replace")
        elif key == b"x-timeout-ms":
            out.timeout = raw
        elif key == b"x-protocol-version":
            out.protocol = raw
        elif key == b"traceparent":
            traceparent = raw.decode("utf-8", "replace")
        elif key == b"accept":
            out.accept = raw if out.accept is None else out.accept + b", " + raw
        elif key == b"baggage":
            line = raw.decode("latin-1")
            baggage = [line] if baggage is None else [*baggage, line]
    if baggage is not None:
        try:
            out.metadata = decode_baggage(baggage)
        except ValueError as exc:
            out.bad_metadata = str(exc)
    if traceparent is not None:
        out.traceparent = valid_traceparent(traceparent)
    if not activity_id:
        if traceparent is not None:
            activity_id = contexts.activity_id_from_traceparent(traceparent)
        if not activity_id:
            activity_id = contexts.new_activity_id()
    elif not is_label(activity_id):
        activity_id = contexts.new_activity_id()
        out.bad_label = "X-Correlation-ID"
    out.activity_id = activity_id
    # What ends up in every log line of the request: short, printable text.
    if out.session_id is not None and not is_label(out.session_id):
        out.bad_label = "X-Session-Id"
    elif out.application_id is not None and not is_label(out.application_id):
        out.bad_label = "X-Application-Id"
    elif out.application_version is not None and not is_label(out.application_version):
        out.bad_label = "X-Application-Version"
    return out
