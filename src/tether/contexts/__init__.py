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

__all__ = [
    "CONTEXT_FIELDS",
    "ContextFilter",
    "RequestContext",
    "activity",
    "add_request_context",
    "current",
    "new_activity_id",
    "using",
]
