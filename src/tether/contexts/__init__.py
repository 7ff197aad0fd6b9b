"""Request contexts: the ActivityId and friends, carried in contextvars.

`contexts` depends on nothing else in tether; the runtime and transports read
and set the context through this package.
"""

from ._context import RequestContext as RequestContext
from ._context import activity as activity
from ._context import current as current
from ._context import metadata as metadata
from ._context import new_activity_id as new_activity_id
from ._context import using as using
from ._logging import CONTEXT_FIELDS as CONTEXT_FIELDS
from ._logging import ContextFilter as ContextFilter
from ._logging import add_request_context as add_request_context
from ._metadata import MAX_METADATA_BYTES as MAX_METADATA_BYTES
from ._metadata import MAX_METADATA_ENTRIES as MAX_METADATA_ENTRIES
from ._metadata import MAX_METADATA_KEY_LENGTH as MAX_METADATA_KEY_LENGTH
from ._metadata import MAX_METADATA_VALUE_BYTES as MAX_METADATA_VALUE_BYTES
from ._trace import activity_id_from_traceparent as activity_id_from_traceparent
from ._trace import trace_id_of as trace_id_of
from ._trace import traceparent_for as traceparent_for

__all__ = [
    "CONTEXT_FIELDS",
    "MAX_METADATA_BYTES",
    "MAX_METADATA_ENTRIES",
    "MAX_METADATA_KEY_LENGTH",
    "MAX_METADATA_VALUE_BYTES",
    "ContextFilter",
    "RequestContext",
    "activity",
    "activity_id_from_traceparent",
    "add_request_context",
    "current",
    "metadata",
    "new_activity_id",
    "trace_id_of",
    "traceparent_for",
    "using",
]
