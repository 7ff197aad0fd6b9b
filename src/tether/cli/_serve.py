"""`tether serve module:attr`: serve an app over HTTP and/or WebSocket until SIGINT/SIGTERM.

    tether serve myapp.backend:manager --http 127.0.0.1:8000 --ws 127.0.0.1:8001

The target (`attr`) is an `RpcManager`, a `BackendIpc`, a `(manager, ipc)`
tuple (either may be None), an object with a `manager` (or `rpc`) and/or an
`ipc` attribute, or a zero-argument callable returning any of those. Each
bound URL is printed on stdout, one line each, once the servers listen; logs
go to stderr. The first SIGINT or SIGTERM stops gracefully (within
`--graceful-timeout` seconds), a second one at once.

With `--workers N` (N > 1) the HTTP server runs in N processes sharing the
`--http` socket (`_workers`); each also listens on a Unix socket of its own.
"""

from __future__ import annotations

import argparse
import errno
import functools
import json
import logging
import os
import signal
import socket
import ssl
import sys
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import trio

from ..contexts import ContextFilter
from ..contexts._logging import CONTEXT_FIELDS
from ..runtime import BackendIpc, RpcManager
from ..runtime._util import check_route
from ..transports._web import SitePolicy
from ._common import CliError as UsageError
from ._common import load_target

__all__ = [
    "DEFAULT_ROUTE",
    "bind_message",
    "configure_logging",
    "load_tls",
    "parse_address",
    "register",
    "resolve_app",
    "run",
    "serve_app",
    "serve_blocking",
]

#: Extra fields an access line carries (see `runtime._dispatch.access_line`).
_ACCESS_FIELDS = ("outcome", "duration_ms")
_LEVELS = ("debug", "info", "warning", "error", "critical")
#: The routing token of `--workers N` without `--route`: workers w-0, w-1, ...
DEFAULT_ROUTE = "w"


def register(subparsers: Any) -> None:
    """Add the `serve` subcommand to the `tether` parser."""
    parser = subparsers.add_parser(
        "serve",
        help="serve an RpcManager and/or BackendIpc over HTTP and WebSocket",
        description=__doc__.split("\n")[0] if __doc__ else None,
    )
    parser.add_argument(
        "target",
        help="module:attr naming an RpcManager, a BackendIpc, an object with "
        "`manager`/`rpc` and/or `ipc`, a (manager, ipc) tuple, or a zero-argument "
        "factory of one",
    )
    parser.add_argument("--http", metavar="HOST:PORT", help="serve HTTP (and {prefix}/ws) here")
    parser.add_argument("--ws", metavar="HOST:PORT", help="serve WebSocket (trio-websocket) here")
    parser.add_argument(
        "--prefix", default="/rpc", help="the HTTP routes' path prefix (default: /rpc)"
    )
    parser.add_argument(
        "--workers",
        type=int,
        default=1,
        metavar="N",
        help="HTTP server processes sharing the --http socket (default: 1)",
    )
    parser.add_argument(
        "--route",
        metavar="NAME",
        help="routing token starting every IPC session id (1-32 of a-z, 0-9, -); worker i "
        f"of --workers N gets NAME-i (default with --workers > 1: {DEFAULT_ROUTE})",
    )
    parser.add_argument(
        "--socket-dir",
        metavar="DIR",
        help="where --workers N > 1 puts each worker's Unix socket ROUTE-i.sock "
        "(default: a new temporary directory, removed at exit)",
    )
    parser.add_argument("--certfile", help="PEM certificate chain, to serve https:// and wss://")
    parser.add_argument("--keyfile", help="PEM private key of --certfile (if not in it)")
    parser.add_argument(
        "--client-ca",
        metavar="FILE",
        help="PEM CA certificates: verify client certificates against them (mutual TLS)",
    )
    parser.add_argument(
        "--require-client-cert",
        action="store_true",
        help="refuse clients without a certificate from --client-ca",
    )
    parser.add_argument(
        "--cors-origin",
        action="append",
        default=[],
        metavar="ORIGIN",
        help="a browser origin (https://app.example) whose pages may call, besides the "
        "server's own; '*' for any; repeat for several (default: none)",
    )
    parser.add_argument(
        "--static",
        action="append",
        default=[],
        metavar="[MOUNT=]DIR",
        help="serve the files of DIR (GET, HEAD) at URL path MOUNT (default: /) of --http; "
        "repeat for several (--static site --static /client=clients/typescript/dist)",
    )
    parser.add_argument(
        "--allowed-host",
        action="append",
        metavar="NAME",
        help="a Host name served, without port ('*' for any); repeat for several (default: "
        "loopback names on a loopback address, any name otherwise)",
    )
    parser.add_argument("--log-level", choices=_LEVELS, default="info", help="default: info")
    parser.add_argument(
        "--log-format", choices=("text", "json"), default="text", help="default: text"
    )
    parser.add_argument(
        "--access-log",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="one line per request on the tether.access logger (default: on)",
    )
    parser.add_argument(
        "--graceful-timeout",
        type=float,
        default=5.0,
        metavar="SECONDS",
        help="seconds requests in flight get to finish at SIGINT/SIGTERM (default: 5)",
    )
    parser.set_defaults(run=run)


def resolve_app(
    target: object, spec: str = "the target"
) -> tuple[RpcManager | None, BackendIpc | None]:
    """The (manager, ipc) pair `target` holds (see the module's docstring).

    Raises:
        UsageError: It holds neither, or something of the wrong type.
    """
    if callable(target) and not isinstance(target, (RpcManager, BackendIpc, type)):
        try:
            target = target()
        except Exception as exc:
            raise UsageError(
                f"calling {spec} (a factory, called with no arguments) failed: "
                f"{type(exc).__name__}: {exc}"
            ) from None
    if isinstance(target, RpcManager):
        return target, None
    if isinstance(target, BackendIpc):
        return None, target
    if isinstance(target, tuple) and len(target) == 2:
        manager, ipc = target
    else:
        manager = getattr(target, "manager", None) or getattr(target, "rpc", None)
        ipc = getattr(target, "ipc", None)
    if (manager is None and ipc is None) or not (
        isinstance(manager, RpcManager | None) and isinstance(ipc, BackendIpc | None)
    ):
        raise UsageError(
            f"{spec} is {_a(type(target).__name__)}: expected an RpcManager, a BackendIpc, "
            "a (manager, ipc) tuple, an object with `manager`/`rpc` and/or `ipc`, "
            "or a zero-argument factory of one"
        )
    return manager, ipc


def _a(noun: str) -> str:
    """`noun` after its indefinite article: "an int", "a str"."""
    return f"{'an' if noun[:1].lower() in 'aeiou' else 'a'} {noun}"


def parse_static(values: list[str]) -> dict[str, str]:
    """`--static [MOUNT=]DIR` options as `{mount: directory}`; MOUNT is `/` when absent.

    Raises:
        UsageError: A mount is given twice.
    """
    mounts: dict[str, str] = {}
    for value in values:
        mount, sep, directory = value.partition("=")
        if not sep or not mount.startswith("/"):  # a plain DIR (which may hold "=")
            mount, directory = "/", value
        if mount in mounts:
            raise UsageError(
                f"--static: the mount {mount} is given twice ({mounts[mount]!r} and "
                f"{directory!r}); give each DIR its own MOUNT=DIR"
            )
        mounts[mount] = directory
    return mounts


def parse_address(option: str, value: str) -> tuple[str, int]:
    """`HOST:PORT` (or `[IPv6]:PORT`) as (host, port).

    Raises:
        UsageError: It is not one.
    """
    host, sep, port_text = value.rpartition(":")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    if not sep or not host or not port_text.isdigit() or int(port_text) > 65535:
        raise UsageError(f"{option} expects HOST:PORT (e.g. 127.0.0.1:8000), got {value!r}")
    return host, int(port_text)


def load_tls(
    certfile: str | None,
    keyfile: str | None,
    client_ca: str | None = None,
    require_client_cert: bool = False,
) -> ssl.SSLContext | None:
    """The server's TLS context from PEM files; None without `certfile`.

    With `client_ca`, a client certificate is asked for and verified against
    it (optional unless `require_client_cert`: a client without one is then
    refused in the handshake).

    Raises:
        UsageError: `keyfile` or `client_ca` without `certfile`,
            `require_client_cert` without `client_ca`, or a file cannot be
            read or used.
    """
    if require_client_cert and client_ca is None:
        raise UsageError(
            "--require-client-cert needs --client-ca FILE (the CA that client certificates "
            "must come from)"
        )
    if certfile is None:
        if keyfile is not None:
            raise UsageError("--keyfile needs --certfile (the certificate it belongs to)")
        if client_ca is not None:
            raise UsageError("--client-ca needs --certfile and --keyfile (mutual TLS is TLS)")
        return None
    paths = {"--certfile": certfile, "--keyfile": keyfile, "--client-ca": client_ca}
    for option, path in paths.items():
        if path is not None and not os.access(path, os.R_OK):
            raise UsageError(f"cannot read {option} {path}: no such file, or not readable")
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    try:
        context.load_cert_chain(certfile, keyfile)
    except ssl.SSLError as exc:
        with open(certfile, "rb") as pem:
            text = pem.read()
        if b"-----BEGIN CERTIFICATE-----" not in text:
            raise UsageError(
                f"{certfile} is not a PEM certificate (no BEGIN CERTIFICATE line): give the "
                "certificate chain as PEM"
            ) from None
        if keyfile is None and b"PRIVATE KEY-----" not in text:
            raise UsageError(
                f"the certificate {certfile} has no private key: give --keyfile KEY.pem "
                "(or put the key in the same PEM file)"
            ) from None
        raise UsageError(
            f"cannot use the certificate {certfile} with the key {keyfile}: {exc} "
            "(give a readable PEM certificate chain and the private key that matches it)"
        ) from None
    except OSError as exc:
        files = certfile if keyfile is None else f"{certfile} and {keyfile}"
        raise UsageError(
            f"cannot use the certificate {files}: {exc.strerror or exc} "
            "(give a readable PEM certificate chain and its private key)"
        ) from None
    if client_ca is not None:
        try:
            context.load_verify_locations(cafile=client_ca)
        except (OSError, ssl.SSLError) as exc:
            raise UsageError(
                f"cannot use the client CA {client_ca}: {getattr(exc, 'strerror', None) or exc} "
                "(give a readable PEM file of CA certificates)"
            ) from None
        context.verify_mode = ssl.CERT_REQUIRED if require_client_cert else ssl.CERT_OPTIONAL
    return context


class JsonFormatter(logging.Formatter):
    """One JSON object per record: time, level, logger, message, and the request's context.

    `activity_id`, `session_id`, `application_id` and `operation` are those
    `ContextFilter` puts on the record (null outside a request); access lines
    add `outcome` and `duration_ms`.
    """

    def format(self, record: logging.LogRecord) -> str:
        doc: dict[str, Any] = {
            "time": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        for field in CONTEXT_FIELDS:
            value = getattr(record, field, None)
            doc[field] = None if value in (None, "-") else value
        for field in _ACCESS_FIELDS:
            if hasattr(record, field):
                doc[field] = getattr(record, field)
        if record.exc_info:
            doc["exception"] = self.formatException(record.exc_info)
        return json.dumps(doc, default=str)


def configure_logging(level: str, log_format: str, access_log: bool) -> None:
    """Log to stderr (stdout carries the URLs), with the request context on every record."""
    handler = logging.StreamHandler(sys.stderr)
    handler.addFilter(ContextFilter())
    if log_format == "json":
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(
            logging.Formatter("%(asctime)s %(levelname)s %(name)s [%(activity_id)s] %(message)s")
        )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    # The access log is its own switch: on at any --log-level, or off.
    logging.getLogger("tether.access").setLevel(
        logging.INFO if access_log else logging.CRITICAL + 1
    )


class _BindError(Exception):
    """A server could not listen: `main` says where and why."""


async def _start(nursery: trio.Nursery, name: str, address: str, serve: Callable[..., Any]) -> str:
    try:
        url: str = await nursery.start(serve)
    except OSError as exc:
        raise _BindError(bind_message(name, address, exc)) from None
    except BaseExceptionGroup as group:
        matched, _ = group.split(OSError)
        if matched is None:
            raise
        raise _BindError(bind_message(name, address, _first(matched))) from None
    return url


def _first(group: BaseExceptionGroup[Any]) -> BaseException:
    exc: BaseException = group
    while isinstance(exc, BaseExceptionGroup):
        exc = exc.exceptions[0]
    return exc


def bind_message(name: str, address: str, exc: BaseException) -> str:
    why = "the address is in use" if getattr(exc, "errno", None) == errno.EADDRINUSE else str(exc)
    return f"cannot listen on {name} {address}: {why} (pick another HOST:PORT, or 0 for any port)"


def print_urls(urls: list[str]) -> None:
    """Say where the servers listen: one URL a line on stdout."""
    for url in urls:
        print(url, flush=True)


async def serve_app(
    args: argparse.Namespace,
    manager: RpcManager | None,
    ipc: BackendIpc | None,
    tls: ssl.SSLContext | None,
    *,
    route: str | None,
    sockets: Sequence[socket.socket] | None = None,
    stop_signals: tuple[signal.Signals, ...] = (signal.SIGINT, signal.SIGTERM),
    at_once_signals: tuple[signal.Signals, ...] = (),
    announce: Callable[[list[str]], None] = print_urls,
    stop_when: Callable[[], Awaitable[object]] | None = None,
) -> int:
    """Serve until a stop signal (gracefully; a second one: at once); the exit code.

    Args:
        args: The command line (`--http`, `--ws`, `--prefix`, `--graceful-timeout`).
        manager, ipc, tls: What to serve, and how.
        route: The routing token of IPC session ids.
        sockets: Bound sockets to serve HTTP on instead of binding `--http`
            (a worker's, see `_workers`).
        stop_signals: The signals that stop it gracefully; without
            `at_once_signals`, a second one stops it at once.
        at_once_signals: The signals that stop it at once; given, a stop
            signal repeated during the graceful stop changes nothing (a
            worker gets SIGTERM from its parent and, under systemd, from the
            control group too).
        announce: Told the URLs once every server listens.
        stop_when: Also stop gracefully when this returns.
    """
    from ..transports import http, websocket

    stop = trio.Event()
    stopped_at_once = False
    with trio.open_signal_receiver(*stop_signals, *at_once_signals) as signals:
        async with trio.open_nursery() as outer:

            async def watch_signals() -> None:
                nonlocal stopped_at_once
                async for signum in signals:
                    if signum in at_once_signals or (stop.is_set() and not at_once_signals):
                        stopped_at_once = True
                        outer.cancel_scope.cancel()
                        return
                    if stop.is_set():
                        continue  # already stopping
                    logging.getLogger("tether.serve").info(
                        "%s: stopping gracefully (up to %ss; again to stop at once)",
                        signal.Signals(signum).name,
                        args.graceful_timeout,
                    )
                    stop.set()

            outer.start_soon(watch_signals)
            if stop_when is not None:

                async def watch_other() -> None:
                    await stop_when()
                    stop.set()

                outer.start_soon(watch_other)
            common: dict[str, Any] = {
                "ipc": ipc,
                "graceful_timeout": args.graceful_timeout,
                "shutdown_trigger": stop.wait,
                "route": route,
            }
            if tls is not None:
                common["ssl_context"] = tls
            if args.allowed_host:
                common["allowed_hosts"] = args.allowed_host
            async with trio.open_nursery() as servers:
                urls = []
                if args.http:
                    host, port = parse_address("--http", args.http)
                    serve = functools.partial(
                        http.serve,
                        manager,
                        host,
                        port,
                        prefix=args.prefix,
                        sockets=sockets,
                        cors_origins=args.cors_origin,
                        static=parse_static(args.static) or None,
                        **common,
                    )
                    urls.append(await _start(servers, "--http", args.http, serve))
                if args.ws:
                    host, port = parse_address("--ws", args.ws)
                    origins = args.cors_origin or None
                    serve = functools.partial(
                        websocket.serve, manager, host, port, allowed_origins=origins, **common
                    )
                    urls.append(await _start(servers, "--ws", args.ws, serve))
                announce(urls)
            outer.cancel_scope.cancel()
    return 1 if stopped_at_once else 0


def _interrupted(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def run(args: argparse.Namespace) -> int:
    """Serve `args.target` until SIGINT/SIGTERM; the exit code.

    Raises:
        UsageError: Bad input (see `main`).
    """
    # Until trio's own handling takes over (while the target imports, say), a
    # SIGTERM stops the command as SIGINT does: "interrupted", not a silent death.
    signal.signal(signal.SIGTERM, _interrupted)
    if not args.http and not args.ws:
        raise UsageError("give --http HOST:PORT and/or --ws HOST:PORT to serve on")
    if args.workers < 1:
        raise UsageError(f"--workers expects a count of 1 or more, got {args.workers}")
    if args.workers > 1 and not args.http:
        raise UsageError("--workers N needs --http HOST:PORT (the socket the workers share)")
    route = args.route
    if route is None and args.workers > 1:
        route = DEFAULT_ROUTE
    longest = route if args.workers == 1 or route is None else f"{route}-{args.workers - 1}"
    try:
        check_route(longest)
    except ValueError:
        raise UsageError(
            f"--route expects 1-32 characters of a-z, 0-9 and '-'"
            f"{' (with -<worker index> added)' if args.workers > 1 else ''}, got {args.route!r}"
        ) from None
    if not args.graceful_timeout > 0:
        raise UsageError(f"--graceful-timeout expects seconds > 0, got {args.graceful_timeout}")
    for option in ("--http", "--ws"):
        value = getattr(args, option[2:])
        if value:
            parse_address(option, value)
    try:
        SitePolicy(allowed_origins=args.cors_origin, allowed_hosts=args.allowed_host)
    except (TypeError, ValueError) as exc:
        raise UsageError(f"--cors-origin/--allowed-host: {exc}") from None
    if args.static:
        from ..transports.http._static import check_static

        if not args.http:
            raise UsageError("--static serves files over HTTP: give --http HOST:PORT too")
        try:
            check_static(parse_static(args.static), args.prefix.rstrip("/"))
        except ValueError as exc:
            raise UsageError(f"--static: {exc}") from None
    tls = load_tls(args.certfile, args.keyfile, args.client_ca, args.require_client_cert)
    manager, ipc = resolve_app(load_target(args.target), args.target)
    if args.workers > 1:
        from ._workers import run_workers

        assert route is not None
        return run_workers(args, route)
    configure_logging(args.log_level, args.log_format, args.access_log)
    return serve_blocking(functools.partial(serve_app, args, manager, ipc, tls, route=route))


def serve_blocking(serve: Callable[[], Awaitable[int]]) -> int:
    """`trio.run(serve)`, a server that cannot listen told as a `UsageError`.

    Raises:
        UsageError: A server could not listen (port in use, ...).
    """
    try:
        return trio.run(serve)
    except _BindError as exc:
        raise UsageError(str(exc)) from None
    except BaseExceptionGroup as group:
        matched, _ = group.split(_BindError)
        if matched is None:
            raise
        raise UsageError(str(_first(matched))) from None
