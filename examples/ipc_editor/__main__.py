"""Run the IPC editor: the backend and the frontend in one process, over tether.

    python -m examples.ipc_editor [--thread]

The backend is served with tether's in-process transport, on the frontend's
Trio loop or, with `--thread`, on its own loop in its own thread ("mobile"
style, as an Electron or mobile app runs its backend). Messages are encoded
either way, exactly as they would be over a socket.

Logging is configured once for both tiers, since they share the process: one
handler, with `ContextFilter` to put the request context's `activity_id` on
every record, and a small filter that labels each record with its tier from
its logger's name. `tether.access` logs one line per call, on the side that
served it.
"""

from __future__ import annotations

import argparse
import functools
import logging
import sys
from collections.abc import Sequence

import trio

import tether
from tether.contexts import ContextFilter

from .backend import make_backend
from .frontend import run
from .interface import EditorPrompts

#: Loggers of the backend tier; every other record comes from the frontend.
BACKEND_LOGGERS = ("examples.ipc_editor.backend",)
#: Channels the frontend serves (the backend calls them).
FRONTEND_CHANNELS = (EditorPrompts.channel_name,)


class TierFilter(logging.Filter):
    """Set `record.tier` to "backend", "frontend" or "tether", from the logger's name.

    `tether.access` logs a line for each call on the side that served it: the
    backend for `EditorIpc`, the frontend for `EditorPrompts`; the current
    context's `operation` (`channel.method`) tells which. tether's own
    `tether.ipc` logger (warnings about the session) is labelled "tether".
    """

    def filter(self, record: logging.LogRecord) -> bool:
        if record.name == "tether.access":
            context = tether.current_context()
            channel = (context.operation or "") if context is not None else ""
            served_by_frontend = channel.startswith(tuple(f"{c}." for c in FRONTEND_CHANNELS))
            record.tier = "frontend" if served_by_frontend else "backend"
        elif record.name.startswith(BACKEND_LOGGERS):
            record.tier = "backend"
        elif record.name.startswith("tether."):
            record.tier = "tether"
        else:
            record.tier = "frontend"
        return True


def configure_logging() -> None:
    """Log both tiers to stdout as `[tier] activity_id  message`."""
    handler = logging.StreamHandler(sys.stdout)
    handler.addFilter(ContextFilter())
    handler.addFilter(TierFilter())
    handler.setFormatter(logging.Formatter("[%(tier)-8s] %(activity_id)s  %(message)s"))
    logging.basicConfig(level=logging.WARNING, handlers=[handler])
    logging.getLogger("examples.ipc_editor").setLevel(logging.INFO)
    logging.getLogger("tether.access").setLevel(logging.INFO)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m examples.ipc_editor",
        description="Run the IPC editor's frontend paired with its backend, in one process.",
    )
    parser.add_argument(
        "--thread", action="store_true", help="run the backend in its own thread and Trio loop"
    )
    args = parser.parse_args(argv)
    configure_logging()
    where = "in its own thread" if args.thread else "on the frontend's Trio loop"
    print(f"IPC editor over tether's in-process transport, backend {where}\n")
    trio.run(functools.partial(run, make_backend(), thread=args.thread))
    return 0


if __name__ == "__main__":
    sys.exit(main())
