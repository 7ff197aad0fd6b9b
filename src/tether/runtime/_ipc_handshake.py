"""The backend's side of the IPC handshake: what the `authorize` hook sees
(`IpcHandshake`), and `accept`, which reads a frontend's `hello` and opens or
refuses its session.

The steps run in this order, and each refusal leaves nothing behind:

1. the `hello` is read and checked (protocol version, IPC mode);
2. the `authorize` hook runs, before anything is reserved or made: a refused
   frontend learns nothing of what is served, and a slow hook holds no place;
3. the channels asked for are checked against the ones served;
4. a place is reserved: `max_sessions_per_client` (429), `max_sessions` (503);
5. the per-session handlers are made.

A refusal goes to the frontend as an `error` with no id, and the stream closes
with its message as the reason (`MessageStream.refuse`: WebSocket closes with
1008 after `unauthorized`, 1013 after `unavailable` or `too-many-requests`).
"""

from __future__ import annotations

import contextlib
import inspect
import logging
import types
from collections.abc import Awaitable, Callable, Mapping
from typing import TYPE_CHECKING

import attrs
import trio

from ._dispatch import error_info
from ._errors import ConnectionClosed, TetherError, Unauthorized, Unavailable
from ._ipc_engine import Served
from ._ipc_proxy import check_served
from ._protocol import Error, ErrorInfo, Hello, check_hello, decode, encode
from ._stream import MessageStream

if TYPE_CHECKING:
    from ._ipc_backend import BackendIpc

__all__ = [
    "DEFAULT_AUTHORIZE_TIMEOUT",
    "DEFAULT_MAX_SESSIONS_PER_CLIENT",
    "Authorize",
    "IpcHandshake",
    "accept",
]

_log = logging.getLogger("tether.ipc")

#: Default bound of the sessions one client (one remote address) may have open.
DEFAULT_MAX_SESSIONS_PER_CLIENT = 64
#: Default seconds the `authorize` hook may take before the session is refused.
DEFAULT_AUTHORIZE_TIMEOUT = 10.0

_NO_HEADERS: Mapping[str, str] = types.MappingProxyType({})


def _read_only(value: Mapping[str, str] | None) -> Mapping[str, str]:
    return _NO_HEADERS if not value else types.MappingProxyType(dict(value))


@attrs.frozen(kw_only=True, eq=False)
class IpcHandshake:
    """What a frontend presented to open an IPC session; `BackendIpc(authorize=...)` gets it.

    The same on every transport; the transport adds what it knows of the
    connection (`transport`, `remote`, `headers`).

    Attributes:
        authorization: The frontend's credential: the one its `hello` carries
            (`connect_ipc(authorization=...)` on every transport), else, on HTTP
            and WebSocket, the `Authorization` header of the request that opened
            the session; None when it sent neither. Never shown in the repr.
        application_id: Who the frontend says it is (`connect_ipc(application_id=...)`).
        application_version: That application's version.
        channels: The channels it asked for at connect: name -> version.
        transport: Which transport carries the session: `"memory"`, `"http"`,
            `"websocket"`, `"local"` (or what another transport says).
        remote: The client's address as the transport reports it,
            `"host:port"`; None in-process. Behind a reverse proxy, it is the
            proxy's address. Over a local socket it is the client process,
            `"pid=1234,uid=1000"` (Linux; None elsewhere).
        headers: The headers of the request that opened the session (HTTP's
            `POST {prefix}/ipc`, WebSocket's upgrade request), names in lower
            case, repeated headers joined with ", "; empty in-process. Not shown
            in the repr (they may hold cookies and the credential).
    """

    authorization: str | None = attrs.field(repr=False)
    application_id: str | None
    application_version: str | None
    channels: Mapping[str, str] = attrs.field(converter=_read_only)
    transport: str
    remote: str | None
    headers: Mapping[str, str] = attrs.field(repr=False, converter=_read_only)

    @property
    def client(self) -> str | None:
        """Who counts as one client for `max_sessions_per_client`: the host of `remote`."""
        if self.remote is None:
            return None
        host, colon, port = self.remote.rpartition(":")
        return host.strip("[]") if colon and port.isdigit() else self.remote


#: The handshake authorization hook: return True to open the session; False
#: (or raise `Unauthorized`) refuses it with 401. A coroutine function or a
#: plain function.
Authorize = Callable[[IpcHandshake], Awaitable[bool] | bool]


async def accept(
    backend: BackendIpc,
    stream: MessageStream,
    *,
    transport: str,
    remote: str | None,
    headers: Mapping[str, str] | None,
) -> tuple[Hello, dict[str, Served], IpcHandshake] | None:
    """Read the `hello` and open the session: its handlers made and its place reserved.

    Returns:
        None when the session was refused (the frontend was told, and the
        stream closed) or the frontend left first.
    """
    try:
        data = await stream.receive_message()
    except ConnectionClosed:
        return None
    handshake: IpcHandshake | None = None
    try:
        hello = check_hello(decode(data), "ipc")
        authorization = hello.authorization
        if authorization is None and headers:
            authorization = headers.get("authorization")
        handshake = IpcHandshake(
            authorization=authorization,
            application_id=hello.application_id,
            application_version=hello.application_version,
            channels=hello.channels,
            transport=transport,
            remote=remote,
            headers=headers,
        )
        if backend.authorize is not None:
            await _authorize(backend.authorize, handshake, backend.authorize_timeout)
        registrations = dict(backend._registrations)
        versions = {name: reg.channel.version for name, reg in registrations.items()}
        for name, version in hello.channels.items():
            check_served(
                versions, name, version, advice=": register an IpcHandler for it on the backend"
            )
        client = handshake.client
        backend._reserve(client)
        served: dict[str, Served] = {}
        for name, registration in registrations.items():
            instance = registration.shared
            if registration.factory is not None:
                try:
                    instance = registration.factory()
                except BaseException as exc:
                    backend._release(client)
                    if not isinstance(exc, Exception):
                        raise
                    _log.exception("creating %s for a new session failed", registration.factory)
                    for made in served.values():  # the handlers made so far are told
                        if made.owned:
                            with contextlib.suppress(Exception):
                                made.instance.on_close("the session could not be opened")
                    raise Unavailable(
                        f"the backend could not start a session: creating the handler of "
                        f"{name!r} failed ({type(exc).__name__})"
                    ) from None
            served[name] = Served(
                registration.channel, instance, owned=registration.factory is not None
            )
    except TetherError as exc:
        await _refuse(stream, error_info(exc, None, development_mode=False), handshake)
        return None
    except _HookFailed as failed:
        await _refuse(stream, failed.info, handshake)
        return None
    return hello, served, handshake


class _HookFailed(Exception):
    def __init__(self, info: ErrorInfo) -> None:
        self.info = info


async def _authorize(hook: Authorize, handshake: IpcHandshake, limit: float) -> None:
    """Run the hook; raise the refusal (Unauthorized, the hook's TetherError, _HookFailed)."""
    try:
        allowed = hook(handshake)
        if inspect.isawaitable(allowed):
            # Bounded: a hook that hangs (a directory that does not answer)
            # must not keep connections open for as long as the server runs.
            with trio.move_on_after(limit) as waited:
                allowed = await allowed
            if waited.cancelled_caught:
                _log.warning(
                    "the IPC authorize hook did not answer within %g s: the session was refused",
                    limit,
                )
                raise Unavailable(
                    f"the backend's authorization hook did not answer within {limit:g} s: "
                    "try again later",
                    retry_after=1,
                )
    except TetherError:
        raise
    except Exception as exc:
        # Logged with its traceback: the hook's own messages are the hook's
        # to keep free of the credential; tether never puts it in one.
        _log.error(
            "the IPC authorize hook %s raised %s: the session was refused",
            getattr(hook, "__qualname__", type(hook).__qualname__),
            type(exc).__name__,
            exc_info=exc,
        )
        raise _HookFailed(
            ErrorInfo(
                "internal",
                500,
                "RemoteError",
                f"the backend's authorization hook failed ({type(exc).__name__}): the "
                "session was refused; the backend's log has the traceback",
            )
        ) from None
    if not allowed:
        if handshake.authorization is None:
            raise Unauthorized(
                "this backend authorizes IPC sessions and this frontend sent no credential: "
                "pass authorization= to connect_ipc()"
            )
        raise Unauthorized("the backend's authorization hook refused this IPC session")


async def _refuse(stream: MessageStream, info: ErrorInfo, handshake: IpcHandshake | None) -> None:
    if handshake is not None:
        _log.info(
            "refused an IPC session over %s from %s: %s %s",
            handshake.transport,
            handshake.remote or "this process",
            info.status,
            info.message,
        )
    await stream.refuse(encode(Error(None, info)), info.code, info.message)
