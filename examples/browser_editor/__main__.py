"""Run the browser editor: serve the IPC editor's backend and its web page.

    python -m examples.browser_editor [--host 127.0.0.1] [--port 8000] [--build]

Prints the page's URL and serves until Ctrl-C. Open it in a browser; add
`?transport=http` to the URL for IPC over HTTP instead of WebSocket.
"""

from __future__ import annotations

import argparse
import signal
import sys
from collections.abc import Sequence

import trio

from .server import build_page, serve, static_mounts


async def run(host: str, port: int) -> None:
    """Serve until Ctrl-C (SIGINT), then stop serving and return."""
    with trio.open_signal_receiver(signal.SIGINT) as interrupts:
        async with trio.open_nursery() as nursery:
            url = await nursery.start(serve, host, port)
            print(f"browser editor: open {url} (or {url}?transport=http); Ctrl-C stops", flush=True)
            async for _ in interrupts:
                nursery.cancel_scope.cancel()
                break
    print("stopped")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m examples.browser_editor",
        description="Serve the IPC editor's backend with a web page as its frontend.",
    )
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (127.0.0.1)")
    parser.add_argument("--port", type=int, default=8000, help="port (8000; 0 picks a free one)")
    parser.add_argument(
        "--build", action="store_true", help="compile the page's TypeScript first (needs node)"
    )
    args = parser.parse_args(argv)
    try:
        if args.build:
            build_page()
        static_mounts()  # says what to build, before serving
        trio.run(run, args.host, args.port)
    except (FileNotFoundError, RuntimeError) as error:
        print(f"python -m examples.browser_editor: {error}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
