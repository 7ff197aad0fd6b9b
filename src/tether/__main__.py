"""The `tether` command line.

tether --version
tether check-version BACKEND_VERSION FRONTEND_VERSION
tether describe URL [--json]
tether call URL Interface.operation [ARG ...]
tether openapi module:attr [-o FILE] [--prefix /rpc]
tether codegen typescript module[:attr] [-o FILE] [--client-module tether-client]
tether serve MODULE:ATTR --http HOST:PORT [--ws HOST:PORT] ...
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from . import __version__
from .cli import _call, _codegen, _describe, _openapi, _serve
from .cli._common import CliError, printable
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
    check.set_defaults(run=_check_version)
    _describe.register(commands)
    _call.register(commands)
    _openapi.register(commands)
    _codegen.register(commands)
    _serve.register(commands)
    args = parser.parse_args(argv)
    if getattr(args, "run", None) is None:
        parser.print_help()
        return 2
    try:
        status: int = args.run(args)
    except CliError as exc:
        return _fail(exc)
    except BaseExceptionGroup as group:  # a CliError raised inside a Trio nursery
        matched, _ = group.split(CliError)
        if matched is None:
            raise
        first = matched.exceptions[0]
        while isinstance(first, BaseExceptionGroup):
            first = first.exceptions[0]
        assert isinstance(first, CliError)
        return _fail(first)
    except KeyboardInterrupt:
        print("tether: interrupted", file=sys.stderr)
        return 130
    return status


def _fail(exc: CliError) -> int:
    # The message may quote what a server or a module said: one line, no raw escapes.
    print(f"tether: {printable(str(exc))}", file=sys.stderr)
    return exc.exit_code


def _check_version(args: argparse.Namespace) -> int:
    try:
        compatible = is_version_compatible(args.backend, args.frontend)
    except ValueError as exc:
        raise CliError(str(exc)) from None
    if compatible:
        print(f"compatible: backend {args.backend} serves frontend {args.frontend}")
        return 0
    print(f"incompatible: {compatibility_advice('the interface', args.backend, args.frontend)}")
    return 1


if __name__ == "__main__":
    sys.exit(main())
