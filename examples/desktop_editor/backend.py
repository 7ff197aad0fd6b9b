"""The desktop editor's backend process: the IPC editor's backend, served to its frontend.

    python -m examples.desktop_editor.backend   # started by the frontend, not by hand

`local.serve_paired` serves `examples.ipc_editor`'s backend on the socket its
frontend chose, and returns when the frontend closes the lifeline or exits in
any way (even SIGKILL), or on SIGTERM; then this process exits. Every log
record of INFO and above, with its ActivityId, goes to the frontend's logging,
so nothing here configures logging.
"""

from __future__ import annotations

import functools
import sys

import trio

from tether.transports import local

from ..ipc_editor.backend import make_backend


def main() -> int:
    try:
        trio.run(functools.partial(local.serve_paired, ipc=make_backend()))
    except local.NotPaired as exc:
        # Run by hand: one line, not a traceback.
        print(f"python -m examples.desktop_editor.backend: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
