"""The hook through which `tether.testing.faulty_streams` reaches client streams.

Every frontend connection (RPC and IPC, on every transport, reconnects
included) passes its `MessageStream` through `wrap_client_stream` before it
speaks on it. Outside a `faulty_streams()` block this returns the stream as
it is, for the cost of one ContextVar read per connection.
"""

from __future__ import annotations

from collections.abc import Callable
from contextvars import ContextVar

from ._stream import MessageStream

__all__ = ["STREAM_WRAPPER", "wrap_client_stream"]

STREAM_WRAPPER: ContextVar[Callable[[MessageStream], MessageStream] | None] = ContextVar(
    "tether_stream_wrapper", default=None
)


def wrap_client_stream(stream: MessageStream) -> MessageStream:
    """The stream a frontend connection speaks on: `stream`, or its test wrapper."""
    wrap = STREAM_WRAPPER.get()
    return stream if wrap is None else wrap(stream)
