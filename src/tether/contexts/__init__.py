"""Request contexts: the ActivityId and friends, carried in contextvars.

`contexts` depends on nothing else in tether; the runtime and transports read
and set the context through this package.
"""

from ._context import RequestContext as RequestContext
from ._context import activity as activity
from ._context import current as current
from ._context import new_activity_id as new_activity_id
from ._context import using as using
from ._logging import CONTEXT_FIELDS as CONTEXT_FIELDS
from ._logging import ContextFilter as ContextFilter
from ._logging import add_request_context as add_request_context
from ._trace import activity_id_from_traceparent as activity_id_from_traceparent
from ._trace import trace_id_of as trace_id_of
from ._trace import traceparent_for as traceparent_for

__all__ = [
    "CONTEXT_FIELDS",
    "ContextFilter",
    "RequestContext",
    "activity",
    "activity_id_from_traceparent",
    "add_request_context",
    "current",
    "new_activity_id",
    "trace_id_of",
    "traceparent_for",
    "using",
]
