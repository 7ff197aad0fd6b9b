"""What a benchmark's backend process holds, read by the process itself.

Shared by `bench.soak` and `bench.sessions`: both run the backend in a child
process and ask it, through tether, for these numbers (Linux `/proc`).
"""

from __future__ import annotations

import os

import trio

__all__ = ["close_wait", "count_tasks", "open_fds", "rss_kib"]


def count_tasks() -> int:
    """Trio tasks alive in this run, the root task included (call it inside `trio.run`)."""
    count = 0
    stack = [trio.lowlevel.current_root_task()]
    while stack:
        task = stack.pop()
        count += 1
        for nursery in task.child_nurseries:
            stack.extend(nursery.child_tasks)
    return count


def close_wait(ports: set[int]) -> int:
    """TCP sockets in CLOSE_WAIT whose local port is one of `ports`."""
    count = 0
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            with open(table) as lines:
                next(lines)
                for line in lines:
                    fields = line.split()
                    local_port = int(fields[1].rsplit(":", 1)[1], 16)
                    if fields[3] == "08" and local_port in ports:  # 08: CLOSE_WAIT
                        count += 1
        except OSError:
            pass
    return count


def rss_kib() -> int:
    """This process's resident memory, in KiB (`VmRSS`)."""
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def open_fds() -> int:
    """File descriptors this process has open."""
    return len(os.listdir("/proc/self/fd"))
