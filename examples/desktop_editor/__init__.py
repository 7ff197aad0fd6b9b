"""The IPC editor as a desktop app: a frontend process and the backend process it spawns.

    python -m examples.desktop_editor

The same channels, backend handlers and user actions as `examples.ipc_editor`,
but the backend runs in a process of its own, started by the frontend with
`tether.transports.local.spawn` and paired with it for life over a Unix
socket: see `__main__` (the frontend) and `backend`.
"""
