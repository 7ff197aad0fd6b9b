"""Where a local server's socket lives: a private directory, a socket only its owner opens."""

from __future__ import annotations

import contextlib
import errno
import os
import socket
import stat
import tempfile
from collections.abc import Iterator

__all__ = [
    "SOCKET_NAME",
    "bind_private",
    "check_platform",
    "check_socket_path",
    "private_directory",
]

#: The socket's name inside the private directory `serve` makes.
SOCKET_NAME = "tether.sock"
#: The longest socket path the kernel takes, in bytes (macOS's 104; Linux's is 108).
_MAX_PATH = 103


def check_platform() -> None:
    """Refuse clearly where there are no Unix domain sockets (Windows)."""
    if not hasattr(socket, "AF_UNIX"):
        raise NotImplementedError(
            "tether.transports.local needs Unix domain sockets, which this platform "
            "lacks: on Windows, use tether.transports.websocket on 127.0.0.1 with an "
            "authorize hook and a token only the frontend knows (docs/transports.md)"
        )


def check_socket_path(path: object) -> str:
    """The path as a str, refused clearly when no socket can be made or reached there."""
    if isinstance(path, os.PathLike):
        path = os.fspath(path)
    if not isinstance(path, str) or not path:
        raise TypeError(f"path must be a socket path (str or os.PathLike), got {path!r}")
    if "\0" in path:
        raise ValueError(f"socket path {path!r} holds a NUL")
    if len(os.fsencode(path)) > _MAX_PATH:
        raise ValueError(
            f"socket path {path!r} is {len(os.fsencode(path))} bytes, over the "
            f"{_MAX_PATH} a Unix socket's address holds: use a shorter one"
        )
    return path


def private_directory() -> str:
    """A new directory only this user can enter, with a name nobody can guess."""
    for base in (os.environ.get("XDG_RUNTIME_DIR"), tempfile.gettempdir()):
        if not base or not os.path.isdir(base):
            continue
        # mkdtemp: mode 0700, and a random name made with O_EXCL (no race).
        try:
            directory = tempfile.mkdtemp(prefix="tether-", dir=base)
        except PermissionError:
            continue  # $XDG_RUNTIME_DIR of another user (after `su`): the next one
        if len(os.fsencode(os.path.join(directory, SOCKET_NAME))) <= _MAX_PATH:
            return directory
        os.rmdir(directory)
    raise OSError("no directory short enough for a Unix socket path: set TMPDIR to a short one")


@contextlib.contextmanager
def bind_private(path: str | None, backlog: int) -> Iterator[tuple[socket.socket, str]]:
    """A listening socket, mode 0600, at `path` or in a new private directory.

    On leaving, the socket file (and the directory, when made here) is removed.

    A given `path` is bound in a private directory beside it, given its mode,
    then linked into place, so that no other user can reach it even for a
    moment; a stale socket there (nothing listening) is replaced, anything else
    is refused, also a file made there while the socket was being bound.
    """
    made_directory = None
    if path is None:
        made_directory = private_directory()
        path = os.path.join(made_directory, SOCKET_NAME)
        staging = None
    else:
        _clear_stale(path)
        staging = tempfile.mkdtemp(prefix=".tether-", dir=os.path.dirname(path) or ".")
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    where = path if staging is None else os.path.join(staging, SOCKET_NAME)
    placed = False
    try:
        listener.bind(where)
        os.chmod(where, 0o600)
        if staging is not None:
            _place(where, path)
            os.rmdir(staging)
            staging = None
        placed = True
        listener.listen(backlog)
        listener.setblocking(False)
        yield listener, path
    finally:
        listener.close()
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path if placed else where)
        if staging is not None:
            with contextlib.suppress(OSError):
                os.rmdir(staging)
        if made_directory is not None:
            with contextlib.suppress(OSError):
                os.rmdir(made_directory)


def _place(where: str, path: str) -> None:
    """Move the socket at `where` to `path`, never replacing what is there.

    A hard link fails if anything was made at `path` since it was checked
    (where a rename would silently replace it); a file system without hard
    links gets the rename.
    """
    try:
        os.link(where, path)
    except FileExistsError:
        raise FileExistsError(
            f"{path} was made by someone else while the socket was being bound: choose another path"
        ) from None
    except OSError:
        os.rename(where, path)
        return
    os.unlink(where)


def _clear_stale(path: str) -> None:
    try:
        mode = os.lstat(path).st_mode
    except FileNotFoundError:
        return
    if not stat.S_ISSOCK(mode):
        raise FileExistsError(f"{path} exists and is not a socket: choose another path")
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        probe.connect(path)
    except ConnectionRefusedError:
        os.unlink(path)  # left by a server that died: nothing listens
        return
    except OSError as exc:
        raise FileExistsError(f"{path} is a socket this process cannot check: {exc}") from None
    finally:
        probe.close()
    raise OSError(errno.EADDRINUSE, f"a server is already listening on {path}")
