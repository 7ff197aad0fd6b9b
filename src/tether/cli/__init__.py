"""The `tether` command line's subcommands, one private module each.

`tether.__main__` registers each module's subcommand (`register(subparsers)`)
and runs the handler it set (`args.run(args)`, an exit code).
"""

from __future__ import annotations

__all__: list[str] = []
