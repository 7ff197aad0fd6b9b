"""In-process transport: the backend in the same process, same loop or own thread."""

from ._connect import connect as connect
from ._connect import connect_ipc as connect_ipc
from ._streams import DEFAULT_MAX_BUFFER_BYTES as DEFAULT_MAX_BUFFER_BYTES
from ._streams import DEFAULT_MAX_MESSAGE_SIZE as DEFAULT_MAX_MESSAGE_SIZE
from ._streams import stream_pair as stream_pair

__all__ = [
    "DEFAULT_MAX_BUFFER_BYTES",
    "DEFAULT_MAX_MESSAGE_SIZE",
    "connect",
    "connect_ipc",
    "stream_pair",
]
