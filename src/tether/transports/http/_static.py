"""Static files: directories served under URL mounts beside the RPC routes.

`HttpApp(static={"/": "site", "/client": "clients/typescript/dist"})` answers
`GET /client/index.js` with `clients/typescript/dist/index.js`. Only GET and
HEAD; a path that is not plainly inside its mount's directory (`..`, `.`, a
dotfile, a backslash, a NUL, a symlink leading out) is answered 404, as a file
that is not there. A directory answers its `index.html`.
"""

from __future__ import annotations

import email.utils
import os
import stat
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import trio

from ...runtime import NotFound
from ._asgi import Refused, Send, not_allowed, raw_header

__all__ = ["StaticFiles", "check_static"]

#: The content types of the files a web frontend is made of; others are
#: `application/octet-stream`.
CONTENT_TYPES = {
    ".html": "text/html; charset=utf-8",
    ".htm": "text/html; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".mjs": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".json": "application/json",
    ".map": "application/json",
    ".svg": "image/svg+xml",
    ".png": "image/png",
    ".jpg": "image/jpeg",
    ".jpeg": "image/jpeg",
    ".gif": "image/gif",
    ".webp": "image/webp",
    ".ico": "image/x-icon",
    ".wasm": "application/wasm",
    ".txt": "text/plain; charset=utf-8",
    ".woff2": "font/woff2",
}
_OCTETS = "application/octet-stream"
_ALLOW = "GET, HEAD"
_CHUNK = 64 * 1024
_NOSNIFF = (b"x-content-type-options", b"nosniff")
# Always revalidated (with the ETag): an edited page shows on the next load.
_NO_CACHE = (b"cache-control", b"no-cache")


def check_static(
    static: Mapping[str, str | os.PathLike[str]] | None, prefix: str
) -> dict[str, str]:
    """The mounts of `static`, checked: URL path -> the real path of its directory.

    Raises:
        ValueError: A mount is not a path like `/` or `/client` (starting with
            "/", no empty, `.` or `..` segment, no trailing "/"), two mounts are
            the same, a mount is inside `prefix` (its routes win there) or the
            prefix is empty, or a directory does not exist.
        TypeError: `static` is not a mapping of str to a path.
    """
    if static is None:
        return {}
    if not isinstance(static, Mapping):
        raise TypeError(
            "static must map URL mounts to directories, such as "
            f"{{'/': 'site', '/client': 'clients/typescript/dist'}}, got {static!r}"
        )
    mounts: dict[str, str] = {}
    for mount, directory in static.items():
        if not isinstance(mount, str) or not isinstance(directory, (str, os.PathLike)):
            raise TypeError(
                f"static maps a URL mount (str) to a directory (str or Path), got "
                f"{mount!r}: {directory!r}"
            )
        segments = mount.split("/")[1:]
        if (
            not mount.startswith("/")
            or (mount != "/" and any(s in ("", ".", "..") for s in segments))
            or any(c in mount for c in "\\\x00?#%")
        ):
            raise ValueError(
                f"static mount {mount!r} is not a URL path: expected '/' or one like "
                "'/client' (starting with '/', no trailing '/', '.', '..', '%', '?' or '#')"
            )
        if not prefix:
            raise ValueError(
                "static files need a non-empty prefix: with prefix='' the RPC routes "
                "take every path"
            )
        if mount == prefix or mount.startswith(prefix + "/"):
            raise ValueError(
                f"static mount {mount!r} is inside the RPC prefix {prefix!r}, whose routes "
                "take precedence: mount it elsewhere"
            )
        if mount in mounts:
            raise ValueError(f"static mount {mount!r} is given twice")
        path = Path(directory)
        if not path.is_dir():
            raise ValueError(
                f"static mount {mount!r}: {str(path)!r} is not a directory "
                f"(from {os.getcwd()!r}); give an existing directory"
            )
        mounts[mount] = os.path.realpath(path)
    return mounts


class StaticFiles:
    """Answers GET and HEAD of the files under the mounts `check_static` checked."""

    def __init__(self, mounts: dict[str, str]) -> None:
        # Longest mount first: `/client/x` is `/client`'s before `/`'s.
        self.mounts = sorted(mounts.items(), key=lambda item: -len(item[0]))

    def _find(self, path: str) -> tuple[str, str, list[str]] | None:
        for mount, root in self.mounts:
            if mount == "/":
                rest = path[1:]
            elif path == mount or path.startswith(mount + "/"):
                rest = path[len(mount) + 1 :]
            else:
                continue
            return mount, root, rest.split("/") if rest else []
        return None

    async def answer(
        self,
        path: str,
        method: str,
        headers: list[tuple[bytes, bytes]],
        send: Send,
        cors: list[tuple[bytes, bytes]],
    ) -> bool:
        """Answer a request for `path`; False when no mount holds it.

        Raises:
            Refused: 404 (no such file, or a path that leads out), 405 (not
                GET or HEAD).
        """
        found = self._find(path)
        if found is None:
            return False
        _, root, segments = found
        if method not in ("GET", "HEAD"):
            raise not_allowed(method, _ALLOW)
        missing = Refused(NotFound(f"no file at {path}"))
        last = len(segments) - 1
        for i, segment in enumerate(segments):
            # An empty last segment is a directory's trailing "/".
            if (segment == "" and i != last) or segment.startswith("."):
                raise missing
            if "\\" in segment or "\x00" in segment:
                raise missing
        target = os.path.join(root, *segments)
        info = await trio.to_thread.run_sync(_regular_file, root, target)
        if info is None:
            raise missing
        if info == "directory":
            if not path.endswith("/"):
                await _redirect(send, path + "/", cors)
                return True
            target = os.path.join(target, "index.html")
            info = await trio.to_thread.run_sync(_regular_file, root, target)
            if not isinstance(info, os.stat_result):
                raise missing
        assert isinstance(info, os.stat_result)
        await _send_file(send, target, info, headers, cors, head=method == "HEAD")
        return True


def _regular_file(root: str, target: str) -> os.stat_result | str | None:
    """`target`'s stat when it is a file inside `root` once symlinks are
    followed; "directory" for such a directory; None otherwise."""
    real = os.path.realpath(target)
    if real != root and not real.startswith(root.rstrip(os.sep) + os.sep):
        return None
    try:
        info = os.stat(real)
    except OSError:
        return None
    if stat.S_ISDIR(info.st_mode):
        return "directory"
    return info if stat.S_ISREG(info.st_mode) else None


async def _redirect(send: Send, location: str, cors: list[tuple[bytes, bytes]]) -> None:
    headers = [(b"location", location.encode("utf-8")), (b"content-length", b"0"), *cors]
    await send({"type": "http.response.start", "status": 308, "headers": headers})
    await send({"type": "http.response.body", "body": b""})


def _validators(info: os.stat_result) -> tuple[bytes, bytes]:
    etag = f'"{info.st_size:x}-{info.st_mtime_ns:x}"'.encode()
    modified = email.utils.formatdate(info.st_mtime, usegmt=True).encode()
    return etag, modified


def _not_modified(headers: list[tuple[bytes, bytes]], etag: bytes, mtime: float) -> bool:
    match = raw_header(headers, b"if-none-match")
    if match is not None:
        tags = [tag.strip().removeprefix(b"W/") for tag in match.split(b",")]
        return b"*" in tags or etag in tags
    since = raw_header(headers, b"if-modified-since")
    if since is None:
        return False
    try:
        when = email.utils.parsedate_to_datetime(since.decode("latin-1"))
    except (TypeError, ValueError):
        return False
    return int(mtime) <= when.timestamp()


async def _send_file(
    send: Send,
    target: str,
    info: os.stat_result,
    request: list[tuple[bytes, bytes]],
    cors: list[tuple[bytes, bytes]],
    *,
    head: bool,
) -> None:
    etag, modified = _validators(info)
    common = [(b"etag", etag), (b"last-modified", modified), _NO_CACHE, _NOSNIFF, *cors]
    if _not_modified(request, etag, info.st_mtime):
        await send({"type": "http.response.start", "status": 304, "headers": common})
        await send({"type": "http.response.body", "body": b""})
        return
    kind = CONTENT_TYPES.get(os.path.splitext(target)[1].lower(), _OCTETS)
    headers = [
        (b"content-type", kind.encode()),
        (b"content-length", str(info.st_size).encode()),
        *common,
    ]
    if head:
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": b""})
        return
    try:
        file: Any = await trio.open_file(target, "rb")
    except OSError:  # gone since the stat
        raise Refused(NotFound("no such file")) from None
    async with file:
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        left = info.st_size
        while left > 0:
            chunk = await file.read(min(_CHUNK, left))
            if not chunk:  # shortened since the stat: the length promised cannot be kept
                raise trio.BrokenResourceError(f"{target} shrank while being sent")
            left -= len(chunk)
            await send({"type": "http.response.body", "body": chunk, "more_body": left > 0})
        if info.st_size == 0:
            await send({"type": "http.response.body", "body": b""})
