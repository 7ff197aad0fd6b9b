"""Put the request context on log records: standard logging and structlog."""

from __future__ import annotations

import logging
from collections.abc import MutableMapping
from typing import Any

from ._context import current

__all__ = ["CONTEXT_FIELDS", "ContextFilter", "add_request_context"]

#: The RequestContext fields copied onto log records. `authorization` is never one.
CONTEXT_FIELDS = ("activity_id", "session_id", "application_id", "operation")


class ContextFilter(logging.Filter):
    """A logging filter that adds the current request's context to every record.

    Attach it to a handler (`handler.addFilter(ContextFilter())`) and use
    `%(activity_id)s`, `%(session_id)s`, `%(application_id)s` and `%(operation)s`
    in the format. Outside a request the fields are `default` ("-").
    It never rejects a record, and never copies the authorization.
    """

    def __init__(self, name: str = "", *, default: str = "-") -> None:
        super().__init__(name)
        self.default = default

    def filter(self, record: logging.LogRecord) -> bool:
        context = current()
        for field in CONTEXT_FIELDS:
            # A record made inside a request keeps what it was given explicitly
            # (`extra=`), so a server can log on behalf of a finished request.
            if getattr(record, field, None) is None:
                value = getattr(context, field, None) if context is not None else None
                setattr(record, field, value if value is not None else self.default)
        return True


def add_request_context(
    logger: Any, method_name: str, event_dict: MutableMapping[str, Any]
) -> MutableMapping[str, Any]:
    """A structlog processor that adds the current request's context to the event.

    Add it to `structlog.configure(processors=[...])` before the renderer. Fields
    the event already has are kept; the authorization is never added.
    """
    context = current()
    if context is not None:
        for field in CONTEXT_FIELDS:
            value = getattr(context, field)
            if value is not None:
                event_dict.setdefault(field, value)
    return event_dict
