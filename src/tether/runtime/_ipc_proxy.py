"""What both ends of an IPC session share besides the engine: typed proxies and
notifiers, listener tables, and the checks of channels and handlers.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping
from contextlib import AbstractAsyncContextManager
from typing import Any

import trio

from ._channels import IpcHandler, IpcInterface, NotificationInterface, channel_operations
from ._client import error_for_reply
from ._codec import CONVERTER
from ._errors import IncompatibleVersion, InvalidRequest, NotFound
from ._interceptors import INSTALLED, client_chain
from ._interfaces import Operation, unimplemented
from ._ipc_engine import Peer
from ._ipc_interceptors import open_invoke_intercepted
from ._limits import too_deep
from ._protocol import Item, Result
from ._streams import Exchange, StreamCall
from ._versions import compatibility_advice, is_version_compatible

__all__ = [
    "add_to_table",
    "check_listener",
    "check_served",
    "handler_channel",
    "make_proxy",
    "plain_args",
]


def plain_args(args: tuple[Any, ...]) -> list[Any]:
    """Unstructure untyped arguments by their runtime types (for the untyped calls).

    The engine checks them against the codec's limits when it encodes them.

    Raises:
        InvalidRequest: an argument cannot be converted (one nested past
            Python's recursion limit, for one).
    """
    out = []
    for index, arg in enumerate(args):
        try:
            out.append(CONVERTER.unstructure(arg))
        except RecursionError:
            raise InvalidRequest(
                f"argument 'args[{index}]' cannot be sent: {too_deep('it')}",
                details={"path": f"args[{index}]"},
            ) from None
        except Exception as exc:  # cattrs raises many kinds
            raise InvalidRequest(
                f"argument 'args[{index}]' cannot be sent: {type(arg).__name__} does not "
                f"convert to JSON ({exc})",
                details={"path": f"args[{index}]"},
            ) from None
    return out


def _open_stream_invoke(
    peer: Peer, channel: str, op: Operation, args: tuple[Any, ...], kwargs: Mapping[str, Any]
) -> AbstractAsyncContextManager[Exchange]:
    """Make a stream invoke for an `open_stream` block (the arguments are taken now)."""
    values = op.encode_args(args, kwargs)
    source = op.stream_source(args, kwargs) if op.stream_param is not None else None
    own = peer.interceptors
    if own or INSTALLED.client:
        return open_invoke_intercepted(peer, client_chain(own), channel, op, values, source)
    return peer.open_invoke(channel, op, values, source)


async def _invoke_with_stream(
    peer: Peer, channel: str, op: Operation, args: tuple[Any, ...], kwargs: Mapping[str, Any]
) -> Any:
    """A client-stream invoke: its argument stream goes out, one result comes back.

    Through the interceptors, the stream's end is `proceed`'s outcome (None);
    the result is decoded after.
    """
    await trio.lowlevel.checkpoint_if_cancelled()
    async with _open_stream_invoke(peer, channel, op, args, kwargs) as exchange:
        reply = await exchange.receive()
        while type(reply) is Item:  # pragma: no cover - the engine drops them
            reply = await exchange.receive()
    if type(reply) is Result:
        return op.decode_result(reply.value)
    raise await error_for_reply(reply.error, None)  # type: ignore[union-attr]


def _invoker(channel: type[IpcInterface], op: Operation) -> Any:
    # Looked up once, not per invoke.
    name, method, names = channel.channel_name, op.name, op.param_names
    encode_args, decode_result = op.encode_args, op.decode_result

    if op.stream_result:
        # Nothing is sent until `open_stream` opens it, as an RPC stub's.
        def open_(self: Any, *args: Any, **kwargs: Any) -> Any:
            return StreamCall(
                op,
                functools.partial(_open_stream_invoke, self._tether_peer, name, op, args, kwargs),
            )

        return _named(open_, channel, op, "Proxy")
    if op.stream_param is not None:

        async def with_stream(self: Any, *args: Any, **kwargs: Any) -> Any:
            return await _invoke_with_stream(self._tether_peer, name, op, args, kwargs)

        return _named(with_stream, channel, op, "Proxy")

    async def forward(self: Any, *args: Any, **kwargs: Any) -> Any:
        values = encode_args(args, kwargs)
        return decode_result(await self._tether_peer.invoke(name, method, values, names))

    return _named(forward, channel, op, "Proxy")


def _notifier(channel: type[NotificationInterface], op: Operation) -> Any:
    async def forward(self: Any, *args: Any, **kwargs: Any) -> None:
        values = op.encode_args(args, kwargs)
        await self._tether_peer.notify(channel.channel_name, op.name, values, op.param_names)

    return _named(forward, channel, op, "Notifier")


def _named(forward: Any, channel: type, op: Operation, suffix: str) -> Any:
    forward.__name__ = op.name
    forward.__qualname__ = f"{channel.__qualname__}{suffix}.{op.name}"
    forward.__doc__ = op.function.__doc__
    forward.__signature__ = op.signature
    return forward


_proxy_classes: dict[tuple[type, str], type[Any]] = {}


def make_proxy(channel: type[Any], peer: Peer, kind: str) -> Any:
    key = (channel, kind)
    cls = _proxy_classes.get(key)
    if cls is None:
        make = _invoker if kind == "Proxy" else _notifier
        namespace: dict[str, Any] = {
            name: make(channel, op) for name, op in channel_operations(channel).items()
        }
        namespace["__slots__"] = ("_tether_peer",)
        namespace["__repr__"] = lambda self: (
            f"<{channel.__qualname__} {kind.lower()} on channel {channel.channel_name}>"
        )
        cls = type(f"{channel.__qualname__}{kind}", (channel,), namespace)
        _proxy_classes[key] = cls
    proxy = object.__new__(cls)
    proxy._tether_peer = peer
    return proxy


def add_to_table(table: dict[str, list[Any]], key: str, item: Any) -> Callable[[], None]:
    table.setdefault(key, []).append(item)

    def remove() -> None:
        items = table.get(key)
        if items is not None and item in items:
            items.remove(item)
            if not items:
                del table[key]

    return remove


def check_listener(channel: object, fn: object) -> None:
    if not isinstance(channel, str) or not channel:
        raise TypeError(f"a channel name must be a non-empty string, got {channel!r}")
    if not callable(fn):
        raise TypeError(f"a listener must be callable, got {fn!r}")


def handler_channel(handler: Any) -> type[IpcInterface]:
    cls = handler if isinstance(handler, type) else type(handler)
    if not (
        isinstance(cls, type) and issubclass(cls, IpcHandler) and issubclass(cls, IpcInterface)
    ):
        raise TypeError(
            f"{cls!r} is not an IpcHandler: declare it as "
            "'class MyHandler(tether.IpcHandler, MyIpcInterface)'"
        )
    channel = cls.__tether_channel__
    assert channel is not None
    missing = unimplemented(cls, channel.__tether_operations__)
    if missing:
        raise TypeError(
            f"{cls.__qualname__} does not implement {', '.join(missing)} of channel "
            f"{channel.channel_name}"
        )
    return channel


def check_served(
    channels: Mapping[str, str], name: str, version: str | None, *, advice: str = ""
) -> None:
    """Check a channel against what the backend serves (a version of None: any).

    Raises:
        NotFound: it does not serve `name` (the message ends with `advice`).
        IncompatibleVersion: it serves a version incompatible with `version`.
        InvalidRequest: a version is not a semantic version.
    """
    served = channels.get(name)
    if served is None:
        available = ", ".join(sorted(channels)) or "none"
        raise NotFound(
            f"backend does not serve channel {name!r} (it serves {available}){advice}",
            details={"channel": name},
        )
    if version is None:
        return
    try:
        compatible = is_version_compatible(served, version)
    except ValueError as exc:
        # The other side's version (a hello's, a welcome's): its mistake, not a crash.
        raise InvalidRequest(
            f"channel {name!r}: {exc}", details={"channel": name, "field": "version"}
        ) from None
    if not compatible:
        raise IncompatibleVersion(
            compatibility_advice(f"channel {name!r}", served, version),
            details={"channel": name, "backend_version": served, "client_version": version},
        )
