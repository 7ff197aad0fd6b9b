"""The `tether` command line's subcommands, one private module each.

`tether.__main__` registers them; nothing here is public API.
"""

__all__: list[str] = []
