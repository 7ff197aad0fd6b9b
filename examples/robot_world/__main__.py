"""Run RobotWorld: the backend and the frontend in one process, over tether.

    python -m examples.robot_world [--thread]

The backend is served with tether's in-process transport, on the frontend's
Trio loop or, with `--thread`, on its own loop in its own thread ("mobile"
style). Messages are encoded either way, exactly as they would be over HTTP or
WebSocket; swapping the transport changes only `serve_and_run` below.

Logging is configured once for both tiers, since they share the process: one
handler, with `ContextFilter` to put the request context's `activity_id` on
every record, and a small filter that labels each record with its tier from
its logger's name. `tether.access` logs one line per call on the backend.
"""

from __future__ import annotations

import argparse
import functools
import logging
import sys
from collections.abc import Sequence

import trio

from tether.contexts import ContextFilter
from tether.transports import memory

from .backend import make_backend
from .frontend import run_actions
from .interface import RobotTelemetry, RobotWorldRead

#: Loggers of the backend tier; every other record comes from the frontend.
BACKEND_LOGGERS = ("examples.robot_world.backend", "tether.access", "tether.server")


class TierFilter(logging.Filter):
    """Set `record.tier` to "backend" or "frontend", from the logger's name."""

    def filter(self, record: logging.LogRecord) -> bool:
        record.tier = "backend" if record.name.startswith(BACKEND_LOGGERS) else "frontend"
        return True


def configure_logging() -> None:
    """Log both tiers to stdout as `[tier] activity_id  message`."""
    handler = logging.StreamHandler(sys.stdout)
    handler.addFilter(ContextFilter())
    handler.addFilter(TierFilter())
    handler.setFormatter(logging.Formatter("[%(tier)-8s] %(activity_id)s  %(message)s"))
    logging.basicConfig(level=logging.WARNING, handlers=[handler])
    logging.getLogger("examples.robot_world").setLevel(logging.INFO)
    logging.getLogger("tether.access").setLevel(logging.INFO)


async def serve_and_run(*, thread: bool) -> None:
    """Serve the backend in-process, connect to it, and run the frontend's actions."""
    async with memory.connect(
        make_backend(),
        interfaces=[RobotWorldRead, RobotTelemetry],
        thread=thread,
        application_id="robot-world-demo",
        application_version="1.0.0",
    ) as backend:
        await run_actions(backend.get_client(RobotWorldRead), backend.get_client(RobotTelemetry))


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m examples.robot_world",
        description="Run the RobotWorld frontend against its backend, in one process.",
    )
    parser.add_argument(
        "--thread", action="store_true", help="run the backend in its own thread and Trio loop"
    )
    args = parser.parse_args(argv)
    configure_logging()
    where = "in its own thread" if args.thread else "on the frontend's Trio loop"
    print(f"RobotWorld over tether's in-process transport, backend {where}\n")
    trio.run(functools.partial(serve_and_run, thread=args.thread))
    return 0


if __name__ == "__main__":
    sys.exit(main())
