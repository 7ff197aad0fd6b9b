"""The lifeline between a frontend and the backend process it spawned: what crosses it.

`local.spawn` makes a `socket.socketpair()` and hands one end to the child
(its descriptor number in `TETHER_LOCAL_LIFELINE`), with the path to serve on
in `TETHER_LOCAL_SOCKET`. The lifeline carries, from the backend to the
frontend only, JSON objects one per line (UTF-8, ending in `\\n`):

* `{"t": "ready", "path": ..., "pid": ...}` once the backend listens;
* `{"t": "log", "name": ..., "levelno": ..., "msg": ..., ...}` for each of the
  backend's log records: the standard `LogRecord` attributes that make sense in
  another process, the message already formatted, and the request context's
  `activity_id`, `session_id`, `application_id` and `operation` when set
  (never the authorization).

The frontend sends nothing; it half-closes its end to ask the backend to stop,
and its process exiting (even by SIGKILL) closes it too: the backend sees
end-of-file either way. Lines of an unknown `t` are ignored, so either side may
learn new ones.

Both sides are bounded: the backend keeps at most `MAX_PENDING` bytes of lines
the frontend has not read yet and drops log records past that (then says how
many, in a record of its own); the frontend reads one line at a time, of at
most `MAX_LINE` bytes, and hands each record to its logging before it reads
the next.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import socket
from collections.abc import Mapping
from typing import Any

import trio

from ...contexts import CONTEXT_FIELDS, current

__all__ = [
    "LIFELINE_ENV",
    "MAX_LINE",
    "MAX_PENDING",
    "SOCKET_ENV",
    "LineSplitter",
    "LogForwarder",
    "decode_line",
    "encode_line",
    "make_record",
]

#: The environment variable that holds the path the backend serves on.
SOCKET_ENV = "TETHER_LOCAL_SOCKET"
#: The environment variable that holds the lifeline's descriptor number.
LIFELINE_ENV = "TETHER_LOCAL_LIFELINE"
#: The longest line either side handles, in bytes; the frontend skips longer ones.
MAX_LINE = 256 * 1024
#: Bytes of lines the backend holds for a frontend that reads slowly (1 MiB).
MAX_PENDING = 1024 * 1024
#: Characters of a record's message, traceback or stack a line carries.
_MAX_TEXT = 32 * 1024
#: What a frontend makes of each field of a forwarded record: its type.
_FIELDS: Mapping[str, type] = {
    "name": str,
    "levelno": int,
    "levelname": str,
    "msg": str,
    "created": float,
    "msecs": float,
    "pathname": str,
    "filename": str,
    "module": str,
    "lineno": int,
    "funcName": str,
    "thread": int,
    "threadName": str,
    "processName": str,
    "exc_text": str,
    "stack_info": str,
    **dict.fromkeys(CONTEXT_FIELDS, str),
}
_formatter = logging.Formatter()


def encode_line(message: Mapping[str, Any]) -> bytes:
    """One lifeline line: `message` as compact JSON, then a newline."""
    return (
        json.dumps(message, ensure_ascii=False, separators=(",", ":"), default=str).encode(
            "utf-8", "replace"
        )
        + b"\n"
    )


def decode_line(line: bytes) -> dict[str, Any] | None:
    """The object on one line, or None when it is not a JSON object with a `t`."""
    try:
        message = json.loads(line)
    except ValueError:
        return None
    if not isinstance(message, dict) or not isinstance(message.get("t"), str):
        return None
    return message


def _cut(text: str | None) -> str | None:
    if text is None or len(text) <= _MAX_TEXT:
        return text
    return f"{text[:_MAX_TEXT]}... (cut: {len(text)} characters)"


def record_line(record: logging.LogRecord) -> bytes:
    """The `log` line for `record`, with the request context it was logged in."""
    exc_text = record.exc_text
    if record.exc_info and not exc_text:
        exc_text = _formatter.formatException(record.exc_info)
    message: dict[str, Any] = {
        "t": "log",
        "name": record.name,
        "levelno": record.levelno,
        "levelname": record.levelname,
        "msg": _cut(record.getMessage()),
        "created": record.created,
        "msecs": record.msecs,
        "pathname": record.pathname,
        "filename": record.filename,
        "module": record.module,
        "lineno": record.lineno,
        "funcName": record.funcName,
        "thread": record.thread,
        "threadName": record.threadName,
        "processName": record.processName,
        "exc_text": _cut(exc_text),
        "stack_info": _cut(record.stack_info),
    }
    # The same fields, chosen the same way, as ContextFilter's: a field set
    # explicitly on the record wins. Only these: never the authorization.
    context = current()
    for field in CONTEXT_FIELDS:
        value = getattr(record, field, None)
        if value is None and context is not None:
            value = getattr(context, field, None)
        if value is not None:
            message[field] = str(value)
    line = encode_line(message)
    if len(line) > MAX_LINE:
        # Control characters escaped six times over: say less, but say it.
        message.update(
            msg=f"{message['msg'][:1024]}... (cut: the record was {len(line)} bytes)",
            exc_text=None,
            stack_info=None,
        )
        line = encode_line(message)
    return line


def make_record(message: Mapping[str, Any], pid: int) -> logging.LogRecord | None:
    """The frontend's copy of a forwarded record, or None when `message` is not one.

    Only the known fields are taken, each of its type; `process` and
    `backend_pid` are the backend's process id.
    """
    fields: dict[str, Any] = {}
    for name, kind in _FIELDS.items():
        value = message.get(name)
        if kind is float and isinstance(value, int) and not isinstance(value, bool):
            value = float(value)
        if isinstance(value, kind) and not isinstance(value, bool):
            fields[name] = value
    if "name" not in fields or "levelno" not in fields:
        return None
    fields.setdefault("levelname", logging.getLevelName(fields["levelno"]))
    fields.setdefault("msg", "")
    fields.update(args=None, process=pid, backend_pid=pid)
    return logging.makeLogRecord(fields)


class LineSplitter:
    """Bytes in, whole lines out, holding at most `max_line` bytes of a line.

    A longer line is cut: its first `max_line` bytes come out as a line, marked
    in `cut`, and the rest of it is skipped.
    """

    def __init__(self, max_line: int) -> None:
        self.max_line = max_line
        self.cut = 0
        self._partial = bytearray()
        self._skipping = False

    def feed(self, data: bytes | bytearray) -> list[bytes]:
        lines: list[bytes] = []
        start = 0
        while start < len(data):
            end = data.find(b"\n", start)
            piece = data[start:] if end < 0 else data[start:end]
            if not self._skipping:
                room = self.max_line - len(self._partial)
                self._partial += piece[:room]
                if len(piece) > room:
                    lines.append(bytes(self._partial))
                    self._partial.clear()
                    self.cut += 1
                    self._skipping = True
            if end < 0:
                break
            if self._skipping:
                self._skipping = False
            else:
                lines.append(bytes(self._partial))
                self._partial.clear()
            start = end + 1
        return lines

    def rest(self) -> bytes:
        """The last line, when the stream ended without its newline."""
        rest = bytes(self._partial)
        self._partial.clear()
        return rest


class LogForwarder(logging.Handler):
    """The backend's handler that sends its records to the frontend over the lifeline.

    `emit` never waits: a line goes straight into the socket when nothing is
    queued ahead of it, else into a buffer of at most `MAX_PENDING` bytes that
    `run` (a task) writes out as the frontend reads; a record that finds the
    buffer full is dropped and counted, and once there is room again a warning
    says how many were. It may be called from any thread.
    """

    def __init__(self, sock: socket.socket, *, max_pending: int = MAX_PENDING) -> None:
        super().__init__()
        self._sock = sock
        self._token = trio.lowlevel.current_trio_token()
        self._max_pending = max_pending
        self._pending = bytearray()
        self._dropped = 0
        self._gone = False  # the frontend's end is closed: nobody to tell
        self._wake = trio.Event()

    @property
    def pending(self) -> int:
        """Bytes waiting for the frontend to read them."""
        return len(self._pending)

    @property
    def dropped(self) -> int:
        """Records dropped since the last warning about them."""
        return self._dropped

    def emit(self, record: logging.LogRecord) -> None:
        try:
            line = record_line(record)
        except Exception:
            self.handleError(record)
            return
        self._put(line, droppable=True)

    def send(self, message: Mapping[str, Any]) -> None:
        """Send a lifeline message that is not a record (`ready`); never dropped."""
        with self.lock:  # type: ignore[union-attr]  # made by Handler.__init__
            self._put(encode_line(message), droppable=False)

    def _put(self, line: bytes, *, droppable: bool) -> None:
        # Called with self.lock held (Handler.handle takes it around emit).
        if self._gone:
            return
        if self._pending:
            if droppable and len(self._pending) + len(line) > self._max_pending:
                self._dropped += 1
                return
            self._pending += line
            return
        try:
            sent = self._sock.send(line)
        except BlockingIOError:
            sent = 0
        except OSError:
            self._gone = True
            return
        if sent < len(line):
            # The rest of a line that is partly out is never dropped.
            self._pending += line[sent:]
            with contextlib.suppress(trio.RunFinishedError):
                self._token.run_sync_soon(self._set_wake)

    def _set_wake(self) -> None:
        self._wake.set()

    async def run(self) -> None:
        """Write out what `emit` could not send at once, as the frontend reads it."""
        while True:
            await self._wake.wait()
            self._wake = trio.Event()
            await self._drain()

    async def flush_for(self, seconds: float) -> None:
        """Write out what is buffered, waiting at most `seconds` for the frontend."""
        with trio.move_on_after(seconds):
            await self._drain()

    async def _drain(self) -> None:
        sock = self._sock
        while True:
            with self.lock:  # type: ignore[union-attr]
                if not self._pending and self._dropped and not self._gone:
                    self._pending += self._dropped_line()
                if not self._pending or self._gone:
                    self._pending.clear()
                    return
                try:
                    sent = sock.send(self._pending)
                except BlockingIOError:
                    sent = 0
                except OSError:
                    self._gone = True
                    continue
                del self._pending[:sent]
                if not self._pending:
                    continue
            await trio.lowlevel.wait_writable(sock)

    def _dropped_line(self) -> bytes:
        record = logging.LogRecord(
            "tether.local",
            logging.WARNING,
            __file__,
            0,
            "dropped %d log record(s): the frontend read them more slowly than "
            "the backend wrote them",
            (self._dropped,),
            None,
        )
        record.process = os.getpid()
        self._dropped = 0
        return record_line(record)
