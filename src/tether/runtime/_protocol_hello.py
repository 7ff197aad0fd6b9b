"""The messages that open a session, sans-IO: `hello`, `welcome`, and the
interface descriptions a `welcome` carries.

Split from `_protocol` along the seam between opening a session and the
messages of each request; `_protocol` re-exports every name, and its
`encode` / `decode` read and write these too.

Resuming (IPC over WebSocket, docs/ipc.md "Resuming a session"): a frontend
that can resume says `"resumable": true` in its `hello`; a backend that keeps
the session across a dropped connection answers with a `resume_token` and its
`grace_ms`. To resume, the frontend sends another `hello` carrying `session_id`
and `resume` (`token`, and `received`: how many messages of the session it
has received); the backend answers a `welcome` whose `received` says how many
of the frontend's it has. All of it is optional on the wire: a peer that does
not know these fields neither sends nor reads them.
"""

from __future__ import annotations

import contextlib
from typing import Any

import attrs

from ._fields import Fields as _Fields
from ._policies import OperationPolicy

__all__ = [
    "MODES",
    "Hello",
    "InterfaceInfo",
    "Resume",
    "Welcome",
    "decode_hello",
    "decode_welcome",
    "encode_hello",
    "encode_welcome",
]

#: The session kinds a `hello` may ask for.
MODES = ("rpc", "ipc")


@attrs.frozen(slots=True)
class Resume:
    """What a frontend presents to take its session back over a new connection.

    `token` is the session's resume token (never shown in the repr); `received`
    how many of the session's messages the frontend has received from the
    backend (so the backend sends it the rest).
    """

    token: str = attrs.field(repr=False)
    received: int


@attrs.frozen(slots=True)
class Hello:
    """Opens a session: the client's protocol version, application and channels.

    `mode` says what the session is for: `"rpc"` (loosely coupled calls, each
    with its full context) or `"ipc"` (a paired session over the `channels`).
    `authorization` is the credential an IPC frontend presents to the backend's
    `authorize` hook; it is never shown in the repr. `binary`: the client
    reads binary frames (`"binary": true` on the wire; absent means false).
    `resumable`: an IPC frontend asks for a session it may resume after a
    dropped connection; `resume`: this hello takes back the session
    `session_id` instead of opening one.
    """

    protocol: int
    session_id: str | None = None
    application_id: str | None = None
    application_version: str | None = None
    channels: dict[str, str] = attrs.field(factory=dict)
    mode: str = "rpc"
    authorization: str | None = attrs.field(default=None, repr=False)
    binary: bool = False
    resumable: bool = False
    resume: Resume | None = None


@attrs.frozen(slots=True)
class InterfaceInfo:
    """What a backend says about one interface it serves.

    `policies`: the operations that declare a policy (idempotent, cacheable,
    long-running), by name; described as `"policies": {op: {...}}`, absent
    when none does.
    """

    version: str
    operations: tuple[str, ...]
    policies: dict[str, OperationPolicy] = attrs.field(factory=dict)

    def to_json(self) -> dict[str, Any]:
        """The interface as `welcome` and `GET {prefix}/` describe it."""
        obj: dict[str, Any] = {"version": self.version, "operations": list(self.operations)}
        if self.policies:
            obj["policies"] = {name: p.to_json() for name, p in self.policies.items()}
        return obj

    @classmethod
    def from_json(cls, obj: Any) -> InterfaceInfo:
        """Read a described interface; policies this version cannot read are dropped.

        Raises:
            ValueError: it is not an object with a version and a list of
                operation names.
        """
        if type(obj) is not dict:
            raise ValueError(f"an interface is described by an object, got {obj!r}")
        version = obj.get("version")
        operations = obj.get("operations")
        if (
            type(version) is not str
            or type(operations) is not list
            or not all(type(op) is str for op in operations)
        ):
            raise ValueError(
                "an interface is described by a version (a string) and operations (an array "
                f"of strings), got {obj!r}"
            )
        policies: dict[str, OperationPolicy] = {}
        described = obj.get("policies")
        if type(described) is dict:
            for name, raw in described.items():
                if type(raw) is dict:
                    with contextlib.suppress(ValueError):
                        policies[str(name)] = OperationPolicy.from_json(raw)
        return cls(version, tuple(operations), policies)


@attrs.frozen(slots=True)
class Welcome:
    """Accepts a session: the server's protocol version, channels and interfaces.

    `binary`: the server reads binary frames, and will send them (`"binary":
    true` on the wire; absent means false). `resume_token` (never in the
    repr) and `grace_ms`: the session may be resumed with that token within
    that many milliseconds of a dropped connection. `received`: in answer to
    a resuming hello, how many of the frontend's messages the backend has.
    """

    protocol: int
    session_id: str
    channels: dict[str, str] = attrs.field(factory=dict)
    interfaces: dict[str, InterfaceInfo] = attrs.field(factory=dict)
    binary: bool = False
    resume_token: str | None = attrs.field(default=None, repr=False)
    grace_ms: int | None = None
    received: int | None = None


def _drop_none(obj: dict[str, Any]) -> dict[str, Any]:
    return {key: value for key, value in obj.items() if value is not None}


def encode_hello(m: Hello) -> dict[str, Any]:
    obj: dict[str, Any] = {
        "t": "hello",
        "protocol": m.protocol,
        "session_id": m.session_id,
        "application": _drop_none({"id": m.application_id, "version": m.application_version}),
        "channels": m.channels,
        "mode": m.mode,
    }
    if m.authorization is not None:
        obj["authorization"] = m.authorization
    if m.binary:
        obj["binary"] = True
    if m.resumable:
        obj["resumable"] = True
    if m.resume is not None:
        obj["resume"] = {"token": m.resume.token, "received": m.resume.received}
    return obj


def encode_welcome(m: Welcome) -> dict[str, Any]:
    obj: dict[str, Any] = {
        "t": "welcome",
        "protocol": m.protocol,
        "session_id": m.session_id,
        "channels": m.channels,
        "interfaces": {name: info.to_json() for name, info in m.interfaces.items()},
    }
    if m.binary:
        obj["binary"] = True
    obj.update(
        _drop_none({"resume_token": m.resume_token, "grace_ms": m.grace_ms, "received": m.received})
    )
    return obj


def decode_hello(f: _Fields) -> Hello:
    app = f.sub("application", optional=True)
    mode = f.get_str("mode", optional=True)
    if mode is None:
        mode = "rpc"
    elif mode not in MODES:
        raise f._fail("mode", "'rpc' or 'ipc'", mode)
    resume = None
    if f.obj.get("resume") is not None:
        r = f.sub("resume")
        resume = Resume(r.get_label("token"), r.get_int("received"))
    return Hello(
        protocol=f.get_int("protocol"),
        session_id=f.get_label("session_id", optional=True),
        application_id=app.get_label("id", optional=True),
        application_version=app.get_label("version", optional=True),
        channels=f.get_str_map("channels"),
        mode=mode,
        authorization=f.get_str("authorization", optional=True),
        binary=f.get_bool("binary"),
        resumable=f.get_bool("resumable"),
        resume=resume,
    )


def decode_welcome(f: _Fields) -> Welcome:
    interfaces: dict[str, InterfaceInfo] = {}
    for name, raw in f.get_dict("interfaces", optional=True).items():
        if type(raw) is not dict:
            raise f._fail(f"interfaces.{name}", "an object", raw)
        info = _Fields(raw, f"welcome.interfaces.{name}")
        operations = info.get_list("operations")
        if not all(type(op) is str for op in operations):
            raise info._fail("operations", "an array of strings", operations)
        info.get_str("version")
        interfaces[name] = InterfaceInfo.from_json(raw)
    return Welcome(
        protocol=f.get_int("protocol"),
        session_id=f.get_label("session_id"),
        channels=f.get_str_map("channels"),
        interfaces=interfaces,
        binary=f.get_bool("binary"),
        resume_token=f.get_label("resume_token", optional=True),
        grace_ms=f.get_int("grace_ms", optional=True),
        received=f.get_int("received", optional=True),
    )
