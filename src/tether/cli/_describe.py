"""`tether describe URL`: what a backend serves, as a table or as JSON."""

from __future__ import annotations

import argparse
import json
from typing import Any
from urllib.parse import unquote, urlsplit

import trio

from ._common import CliError, check_url, printable
from ._wire import TRANSPORT_EXIT, http_request, ws_session

__all__ = ["describe_endpoint", "register"]

_HTTP_TYPES_NOTE = "from {prefix}/openapi.json"
_WS_TYPES_NOTE = (
    "unavailable: a WebSocket welcome names operations but not their types; "
    "describe the server's http:// URL for them"
)


def register(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add `tether describe` to the command line."""
    parser = commands.add_parser(
        "describe",
        help="list a backend's interfaces, versions, operations, policies and IPC channels",
        description="List what a tether backend serves. URL: http(s)://host:port/prefix "
        "(GET {prefix}/ and {prefix}/openapi.json) or ws(s)://host:port/path (the welcome).",
    )
    parser.add_argument("url", help="e.g. http://127.0.0.1:8000/rpc or ws://127.0.0.1:8001/")
    parser.add_argument("--json", action="store_true", help="print the machine form (JSON)")
    add_connection_options(parser)
    parser.set_defaults(run=_run)


def add_connection_options(parser: argparse.ArgumentParser) -> None:
    """`-H` and `--timeout`, which `describe` and `call` share."""
    parser.add_argument(
        "-H",
        "--header",
        action="append",
        default=[],
        metavar="'NAME: VALUE'",
        help="a request header (repeatable), e.g. -H 'Authorization: Bearer ...'",
    )
    parser.add_argument(
        "--timeout",
        type=float,
        default=30.0,
        metavar="SECONDS",
        help="how long to wait for the server (default 30)",
    )


def parse_headers(raw: list[str]) -> list[tuple[str, str]]:
    """`['Name: value', ...]` as pairs; a malformed one is a usage error."""
    headers = []
    for item in raw:
        name, sep, value = item.partition(":")
        if not sep or not name.strip() or any(c in name for c in " \t\r\n"):
            # Not repeated: without a name, it may well be the credential itself.
            raise CliError(
                f"expected -H 'Name: value' (a colon after the name), got {len(item)} "
                "characters without one (not shown: they may hold a credential)"
            )
        if not (name + value.strip()).isprintable():
            # A line break would end the header early; name only the header, not its value.
            raise CliError(
                f"-H '{printable(name.strip()[:40])}: ...' has a control character (a line "
                "break?) in it: give each header on one line"
            )
        headers.append((name.strip(), value.strip()))
    return headers


#: The longest `--timeout` (a day): the socket layer refuses far larger ones.
MAX_TIMEOUT = 86400.0


def check_timeout(seconds: float) -> None:
    """Raise `CliError` unless `--timeout` is a positive number of seconds, at most a day."""
    if not 0 < seconds <= MAX_TIMEOUT:
        raise CliError(
            f"--timeout wants a positive number of seconds up to {MAX_TIMEOUT:g}, got {seconds}"
        )


def _run(args: argparse.Namespace) -> int:
    check_timeout(args.timeout)
    described = describe_endpoint(args.url, parse_headers(args.header), args.timeout)
    if args.json:
        print(json.dumps(described, indent=2))
    else:
        print(render(described))
    return 0


def describe_endpoint(url: str, headers: list[tuple[str, str]], timeout: float) -> dict[str, Any]:
    """The machine form of what the backend at `url` serves.

    `{"url", "transport", "protocol", "types", "interfaces": {name: {"version",
    "operations": {op: {"params": [{"name", "type"}] | None, "returns": str |
    None, "policy": {...} | None, "stream": str | None}}}}, "channels": {...}}`;
    `types` says where parameter and return types came from, or why they are
    unavailable (then `params` and `returns` are null).
    """
    scheme = check_url(url)
    try:
        if scheme in ("ws", "wss"):
            return _from_welcome(url, headers, timeout)
        return _from_http(url, headers, timeout)
    except (AttributeError, KeyError, TypeError, RecursionError) as exc:
        # The reading assumes the documented shapes; a server that answers JSON of
        # another shape (a list for a dict, a number for a list) is not one we can read.
        raise CliError(
            f"{url} answered a description of an unexpected shape ({type(exc).__name__}: "
            f"{exc}): is it a tether endpoint of wire protocol 1?",
            TRANSPORT_EXIT,
        ) from None


def _from_http(url: str, headers: list[tuple[str, str]], timeout: float) -> dict[str, Any]:
    base = url.rstrip("/")
    answer = http_request("GET", base + "/", headers=headers, timeout=timeout)
    if answer.status != 200:
        raise CliError(
            f"GET {base}/ answered HTTP {answer.status}: is {url} a tether endpoint "
            "(http://host:port/prefix)?"
        )
    body = answer.json(f"GET {base}/")
    if not isinstance(body, dict) or not isinstance(body.get("interfaces"), dict):
        raise CliError(f"GET {base}/ did not answer a tether description", TRANSPORT_EXIT)
    prefix = urlsplit(base).path
    types_note = _HTTP_TYPES_NOTE.format(prefix=prefix)
    openapi: dict[str, Any] = {}
    doc = http_request("GET", base + "/openapi.json", headers=headers, timeout=timeout)
    parsed = doc.json(f"GET {base}/openapi.json") if doc.status == 200 else None
    if isinstance(parsed, dict):
        openapi = parsed
    else:
        types_note = f"unavailable: GET {base}/openapi.json answered HTTP {doc.status}"
    channels = _object(_object(body.get("ipc")).get("channels"))
    return _machine_form(url, "http", body, channels, openapi, types_note)


def _from_welcome(url: str, headers: list[tuple[str, str]], timeout: float) -> dict[str, Any]:
    async def read() -> dict[str, Any]:
        with trio.move_on_after(timeout) as scope:
            async with ws_session(url, headers) as (_, welcome):
                return welcome
        assert scope.cancelled_caught
        raise CliError(f"no welcome from {url} within {timeout} s", 8)

    welcome = trio.run(read)
    channels = welcome.get("channels")
    return _machine_form(
        url,
        "websocket",
        welcome,
        channels if isinstance(channels, dict) else {},
        {},
        _WS_TYPES_NOTE,
    )


def _machine_form(
    url: str,
    transport: str,
    body: dict[str, Any],
    channels: dict[str, Any],
    openapi: dict[str, Any],
    types_note: str,
) -> dict[str, Any]:
    operations_by_id = _openapi_operations(openapi)
    schemas = openapi.get("components", {}).get("schemas", {}) if openapi else {}
    interfaces: dict[str, Any] = {}
    for name, info in body.get("interfaces", {}).items():
        if not isinstance(info, dict):
            continue
        policies: dict[str, Any] = _object(info.get("policies"))
        streams: dict[str, Any] = _object(info.get("streams"))
        ops: dict[str, Any] = {}
        for op in info.get("operations", []):
            found = operations_by_id.get(f"{name}.{op}")
            params = returns = None
            if found is not None:
                params, returns = _signature(found, schemas)
            ops[str(op)] = {
                "params": params,
                "returns": returns,
                "policy": policies.get(op),
                "stream": streams.get(op),
            }
        interfaces[str(name)] = {"version": info.get("version"), "operations": ops}
    return {
        "url": url,
        "transport": transport,
        "protocol": body.get("protocol"),
        "types": types_note,
        "interfaces": interfaces,
        "channels": channels,
    }


def _object(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _openapi_operations(openapi: dict[str, Any]) -> dict[str, dict[str, Any]]:
    found: dict[str, dict[str, Any]] = {}
    for path_item in openapi.get("paths", {}).values():
        post = path_item.get("post") if isinstance(path_item, dict) else None
        if isinstance(post, dict) and isinstance(post.get("operationId"), str):
            found[unquote(post["operationId"])] = post
    return found


def _signature(
    operation: dict[str, Any], schemas: dict[str, Any]
) -> tuple[list[dict[str, str]], str | None]:
    body = operation.get("requestBody", {}).get("content", {})
    schema = _object(next(iter(body.values()), {})).get("schema", {}) if body else {}
    items = schema.get("prefixItems", []) if isinstance(schema, dict) else []
    params = [
        {"name": str(item.get("title", f"arg{i}")), "type": type_text(item)}
        for i, item in enumerate(items)
    ]
    ok = operation.get("responses", {}).get("200", {})
    content = ok.get("content", {}) if isinstance(ok, dict) else {}
    json_body = content.get("application/json")
    if isinstance(json_body, dict) and "schema" in json_body:
        return params, type_text(json_body["schema"])
    if content:
        return params, " | ".join(sorted(content))  # a stream: its media types
    return params, None


_SCALAR_NAMES = {
    "integer": "int",
    "number": "float",
    "boolean": "bool",
    "null": "None",
    "object": "dict",
}


def type_text(schema: Any) -> str:
    """A short Python-like spelling of a JSON Schema (as the OpenAPI document writes them)."""
    if not isinstance(schema, dict):
        return "any"
    if "$ref" in schema:
        return str(schema["$ref"]).rsplit("/", 1)[-1]
    for key in ("anyOf", "oneOf"):
        if key in schema:
            return " | ".join(type_text(s) for s in schema[key])
    if "const" in schema:
        return f"Literal[{json.dumps(schema['const'])}]"
    if "enum" in schema:
        return f"Literal[{', '.join(json.dumps(v) for v in schema['enum'])}]"
    kind = schema.get("type")
    if isinstance(kind, list):
        return " | ".join(type_text({**schema, "type": k}) for k in kind)
    if kind == "string":
        if schema.get("contentEncoding") == "base64":
            return "bytes"
        return {"date-time": "datetime", "date": "date", "uuid": "UUID"}.get(
            schema.get("format", ""), "str"
        )
    if kind == "array":
        if "prefixItems" in schema:
            return f"tuple[{', '.join(type_text(s) for s in schema['prefixItems'])}]"
        return f"list[{type_text(schema.get('items', {}))}]"
    if kind == "object" and isinstance(schema.get("additionalProperties"), dict):
        return f"dict[str, {type_text(schema['additionalProperties'])}]"
    return _SCALAR_NAMES.get(str(kind), "any")


def _policy_text(policy: Any) -> str:
    if not isinstance(policy, dict) or not policy:
        return ""
    words = []
    for key, value in policy.items():
        if value is True:
            words.append(key)
        elif value not in (False, None):
            words.append(f"{key}={json.dumps(value) if not isinstance(value, str) else value}")
    return ", ".join(words)


def render(described: dict[str, Any]) -> str:
    """The readable table of `describe_endpoint`'s machine form."""
    lines = [
        f"{described['url']}  ({described['transport']}, wire protocol {described['protocol']})",
        f"types: {described['types']}",
        "",
    ]
    rows: list[tuple[str, str, str, str, str]] = []
    for name, info in described["interfaces"].items():
        for op, entry in info["operations"].items():
            if entry["params"] is None:
                params = "?"
            else:
                params = ", ".join(f"{p['name']}: {p['type']}" for p in entry["params"])
            policy = _policy_text(entry["policy"])
            if entry["stream"]:
                policy = ", ".join(filter(None, [f"stream={entry['stream']}", policy]))
            rows.append(
                (name, str(info["version"]), f"{op}({params})", entry["returns"] or "?", policy)
            )
    header = ("INTERFACE", "VERSION", "OPERATION", "RETURNS", "POLICY")
    if rows:
        widths = [max(len(r[i]) for r in (header, *rows)) for i in range(4)]
        for row in (header, *rows):
            cells = [cell.ljust(widths[i]) for i, cell in enumerate(row[:4])]
            lines.append("  ".join([*cells, row[4]]).rstrip())
    else:
        lines.append("no RPC interfaces")
    lines.append("")
    channels = described["channels"]
    if channels:
        lines.append("IPC CHANNELS")
        lines.extend(f"  {name}  {version}" for name, version in channels.items())
    else:
        lines.append("IPC channels: none")
    # Names and versions are the server's text: escaped, so they cannot drive the terminal.
    return "\n".join(printable(line) for line in lines)
