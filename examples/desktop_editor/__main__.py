"""Run the desktop editor: this frontend process spawns its backend process and edits.

    python -m examples.desktop_editor

The frontend starts `python -m examples.desktop_editor.backend` with
`local.spawn`, opens an IPC session over the Unix socket the backend serves,
and runs the IPC editor's user actions (`examples.ipc_editor.frontend`). The
backend's log records come back over the lifeline and are logged here, so the
output holds both tiers, each line with the ActivityId of the user action
that caused it and the process that logged it. Leaving `spawn`'s block stops
the backend: it sees its lifeline close and exits.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence

import trio

from tether.contexts import ContextFilter
from tether.transports import local

from ..ipc_editor.__main__ import TierFilter
from ..ipc_editor.frontend import APPLICATION_ID, Outcome, run_session
from ..ipc_editor.interface import EditorIpc

#: How the frontend starts its backend: the same Python, the backend's module.
BACKEND_COMMAND = (sys.executable, "-m", "examples.desktop_editor.backend")


class ProcessTierFilter(TierFilter):
    """The IPC editor's tiers, where a record the backend process logged is "backend"."""

    def filter(self, record: logging.LogRecord) -> bool:
        super().filter(record)
        if getattr(record, "backend_pid", None) is not None:
            record.tier = "backend"
        return True


def configure_logging() -> None:
    """Log both processes to stdout as `[tier pid] activity_id  message`."""
    handler = logging.StreamHandler(sys.stdout)
    handler.addFilter(ContextFilter())
    handler.addFilter(ProcessTierFilter())
    handler.setFormatter(logging.Formatter("[%(tier)-8s %(process)d] %(activity_id)s  %(message)s"))
    logging.basicConfig(level=logging.WARNING, handlers=[handler])
    logging.getLogger("examples.ipc_editor").setLevel(logging.INFO)
    logging.getLogger("tether.access").setLevel(logging.INFO)


async def run() -> Outcome:
    """Spawn the backend, run the user actions over IPC, and stop it."""
    async with local.spawn(BACKEND_COMMAND) as backend:
        print(f"backend process {backend.pid} serves on {backend.path}\n", flush=True)
        async with backend.connect_ipc(
            channels=[EditorIpc], application_id=APPLICATION_ID
        ) as frontend_ipc:
            outcome = await run_session(frontend_ipc)
    print(f"\nbackend process {backend.pid} exited with status {backend.returncode}")
    return outcome


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m examples.desktop_editor",
        description="Run the IPC editor's frontend, which spawns its backend process.",
    )
    parser.parse_args(argv)
    configure_logging()
    print("IPC editor as two processes over tether's local transport\n", flush=True)
    trio.run(run)
    return 0


if __name__ == "__main__":
    sys.exit(main())
