"""`tether call URL Interface.operation ARGS...`: one call, its result as JSON."""

from __future__ import annotations

import argparse
import json
import sys
import uuid
from typing import Any
from urllib.parse import quote

import trio

from ..runtime._fields import MAX_LABEL_LENGTH, is_label
from ._common import CliError, check_url, json_text, printable
from ._describe import add_connection_options, check_timeout, describe_endpoint, parse_headers
from ._wire import DEADLINE_EXIT, TRANSPORT_EXIT, http_request, ws_next, ws_session

__all__ = ["EXIT_CODES", "exit_code_of", "register"]

#: The exit code of each error code (docs/cli.md); any other code exits 1.
EXIT_CODES: dict[str, int] = {
    "bad-request": 3,
    "payload-too-large": 3,
    "unsupported-media-type": 3,
    "method-not-allowed": 3,
    "not-found": 4,
    "unauthorized": 5,
    "forbidden": 5,
    "incompatible-version": 6,
    "unavailable": 7,
    "too-many-requests": 7,
    "deadline-exceeded": 8,
    "request-timeout": 8,
    "transport": TRANSPORT_EXIT,
}


#: Seconds the command waits past `--timeout`, so that the server's own
#: `deadline-exceeded` answer (with its ActivityId) arrives before it gives up.
ANSWER_GRACE = 1.0


def exit_code_of(code: Any) -> int:
    """The exit code for an error's `code`: 1 for application, internal and unknown codes."""
    return EXIT_CODES.get(code, 1) if isinstance(code, str) else 1


def register(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add `tether call` to the command line."""
    parser = commands.add_parser(
        "call",
        help="call one operation and print its result as JSON",
        description="Call Interface.operation on the backend at URL (http(s):// prefix URL "
        "or ws(s)://), each ARG one JSON value, and print the result as JSON.",
    )
    parser.add_argument("url", help="e.g. http://127.0.0.1:8000/rpc or ws://127.0.0.1:8001/")
    parser.add_argument("target", metavar="Interface.operation")
    parser.add_argument("args", nargs="*", metavar="ARG", help="one JSON value per argument")
    parser.add_argument("--activity-id", help="the call's ActivityId (default: a new UUID)")
    add_connection_options(parser)
    parser.set_defaults(run=_run)


def _run(args: argparse.Namespace) -> int:
    scheme = check_url(args.url)
    interface, dot, operation = args.target.rpartition(".")
    if not dot or not interface or not operation:
        raise CliError(
            f"expected Interface.operation (e.g. RobotWorldReadRpcInterface.count_robots), "
            f"got {args.target!r}"
        )
    values = []
    for index, text in enumerate(args.args, 1):
        try:
            values.append(json.loads(text))
        except ValueError as exc:
            raise CliError(
                f"argument {index} is not a JSON value ({exc}): a string needs its quotes, "
                f"e.g. '\"{text[:20]}\"'"
            ) from None
    check_timeout(args.timeout)
    headers = parse_headers(args.header)
    activity_id = args.activity_id or str(uuid.uuid4())
    if not (is_label(activity_id) and activity_id.isascii()):
        raise CliError(
            f"--activity-id wants printable ASCII text of at most {MAX_LABEL_LENGTH} "
            f"characters (e.g. a UUID), got {printable(activity_id[:40])!r}"
            f"{'...' if len(activity_id) > 40 else ''}"
        )
    if scheme in ("ws", "wss"):
        ok, value = trio.run(
            _call_ws, args.url, headers, interface, operation, values, activity_id, args.timeout
        )
    else:
        ok, value = _call_http(
            args.url, headers, interface, operation, values, activity_id, args.timeout
        )
    if ok:
        print(json_text(value))
        return 0
    return _print_error(value, activity_id)


def _version(interfaces: dict[str, Any], interface: str, operation: str) -> str:
    info = interfaces.get(interface)
    if not isinstance(info, dict):
        known = ", ".join(sorted(interfaces)) or "none"
        raise CliError(f"the backend serves no interface {interface!r} (it serves: {known})")
    operations = info.get("operations")
    operations = [str(op) for op in operations] if isinstance(operations, list | dict) else []
    if operation not in operations:
        known = ", ".join(operations) or "none"
        raise CliError(f"{interface} has no operation {operation!r} (it has: {known})")
    return str(info.get("version"))


def _call_http(
    url: str,
    headers: list[tuple[str, str]],
    interface: str,
    operation: str,
    values: list[Any],
    activity_id: str,
    timeout: float,
) -> tuple[bool, Any]:
    described = describe_endpoint(url, headers, timeout)
    version = _version(described["interfaces"], interface, operation)
    path = "/".join(quote(part, safe="") for part in (interface, version, operation))
    answer = http_request(
        "POST",
        f"{url.rstrip('/')}/{path}",
        headers=[
            ("Content-Type", "application/json"),
            ("Accept", "application/json"),
            ("X-Correlation-ID", activity_id),
            ("X-Timeout-Ms", str(max(1, round(timeout * 1000)))),
            *headers,
        ],
        body=json.dumps(values).encode(),
        timeout=timeout + ANSWER_GRACE,
    )
    body = answer.json(f"POST {path}")
    if answer.status == 200:
        return True, body
    if answer.status == 202:
        raise CliError(
            f"{interface}.{operation} is long-running and was accepted (202): poll "
            f"{answer.headers.get('location', 'the status location')}; tether call does not",
            1,
        )
    error = body.get("error") if isinstance(body, dict) else None
    if not isinstance(error, dict):
        error = {"status": answer.status, "message": f"HTTP {answer.status}: {body!r}"}
    error.setdefault("activity_id", answer.headers.get("x-correlation-id"))
    return False, error


async def _call_ws(
    url: str,
    headers: list[tuple[str, str]],
    interface: str,
    operation: str,
    values: list[Any],
    activity_id: str,
    seconds: float,
) -> tuple[bool, Any]:
    with trio.move_on_after(seconds + ANSWER_GRACE):
        async with ws_session(url, headers) as (ws, welcome):
            interfaces = welcome.get("interfaces")
            version = _version(
                interfaces if isinstance(interfaces, dict) else {}, interface, operation
            )
            await ws.send_message(
                json.dumps(
                    {
                        "t": "call",
                        "id": 1,
                        "iface": interface,
                        "ver": version,
                        "op": operation,
                        "args": values,
                        "ctx": {"activity_id": activity_id},
                        "timeout_ms": max(1, round(seconds * 1000)),
                    }
                )
            )
            while True:
                reply = await ws_next(ws, url)
                if reply.get("id") not in (1, None):
                    continue
                if reply.get("t") == "result":
                    return True, reply.get("value")
                if reply.get("t") == "error" and isinstance(reply.get("error"), dict):
                    return False, reply["error"]
                raise CliError(
                    f"{interface}.{operation} answered {reply.get('t')!r}: streams and "
                    "long-running operations are not supported by tether call",
                    1,
                )
    raise CliError(f"no answer from {url} within {seconds + ANSWER_GRACE} s", DEADLINE_EXIT)


def _print_error(error: dict[str, Any], activity_id: str) -> int:
    # Every field is the server's text: escaped, so that it cannot drive the terminal.
    code = error.get("code")
    name = f", {error['name']}" if error.get("name") else ""
    lines = [
        f"error: {code or 'unknown'} (status {error.get('status')}{name})",
        f"message: {error.get('message')}",
    ]
    if error.get("details"):
        lines.append(f"details: {json_text(error['details'])}")
    lines.append(f"activity id: {error.get('activity_id') or activity_id}")
    for line in lines:
        print(printable(line), file=sys.stderr)
    return exit_code_of(code)
