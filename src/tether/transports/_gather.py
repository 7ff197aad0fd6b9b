"""Gathered writes: a message sent as several buffers (`socket.sendmsg`) without joining them."""

from __future__ import annotations

__all__ = ["Parts", "remaining_after"]

#: The buffers of one gathered write, in order.
Parts = list[bytes | bytearray | memoryview]


def remaining_after(parts: Parts, sent: int) -> Parts:
    """What is left of `parts` once their first `sent` bytes went out (a partial `sendmsg`)."""
    for index, part in enumerate(parts):
        size = len(part)
        if sent < size:
            rest = parts[index:]
            if sent:
                rest[0] = memoryview(part)[sent:]
            return rest
        sent -= size
    return []
