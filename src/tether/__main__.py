"""The `tether` command line.

tether --version
tether check-version BACKEND_VERSION FRONTEND_VERSION
tether serve MODULE:ATTR --http HOST:PORT [--ws HOST:PORT] ...
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from . import __version__
from .cli import _serve
from .cli._common import UsageError
from .runtime import PROTOCOL_VERSION, is_version_compatible
from .runtime._versions import compatibility_advice


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit status."""
    parser = argparse.ArgumentParser(prog="tether", description=__doc__.split("\n")[0])
    parser.add_argument(
        "--version",
        action="version",
        version=f"tether {__version__} (wire protocol {PROTOCOL_VERSION})",
    )
    commands = parser.add_subparsers(dest="command")
    check = commands.add_parser(
        "check-version",
        help="say whether a frontend built against one interface version can call a backend",
    )
    check.add_argument("backend", help="the version the backend serves, e.g. 1.2.0")
    check.add_argument("frontend", help="the version the frontend was built against")
    _serve.register(commands)
    args = parser.parse_args(argv)
    if getattr(args, "run", None) is not None:
        try:
            code: int = args.run(args)
        except UsageError as exc:
            print(f"tether: {exc}", file=sys.stderr)
            return 2
        return code
    if args.command != "check-version":
        parser.print_help()
        return 2
    try:
        compatible = is_version_compatible(args.backend, args.frontend)
    except ValueError as exc:
        print(f"tether: {exc}", file=sys.stderr)
        return 2
    if compatible:
        print(f"compatible: backend {args.backend} serves frontend {args.frontend}")
        return 0
    print(f"incompatible: {compatibility_advice('the interface', args.backend, args.frontend)}")
    return 1


if __name__ == "__main__":
    sys.exit(main())
