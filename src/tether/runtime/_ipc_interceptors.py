"""Interceptors on an IPC session: around what one end sends and what it receives.

The engine (`Peer`) checks its own chain and the process-wide ones on each
invoke, notification and stream it sends or receives, and comes here only
when there is one: what it sends is `side="client"`, what it receives
`side="server"`. On the backend the chain is `BackendIpc(interceptors=)`, on the
frontend `connect_ipc(interceptors=)`; the process-wide ones run outside.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterable
from contextlib import AbstractAsyncContextManager
from typing import TYPE_CHECKING, Any

from .. import contexts
from ..contexts import RequestContext
from ._interceptors import (
    CallInfo,
    Interceptor,
    StreamMessages,
    counted_source,
    intercepted_stream,
    run_chain,
    run_in_context,
    stream_kind,
)
from ._interfaces import Operation
from ._protocol import Item, Notify

if TYPE_CHECKING:
    from ._dispatch import PreparedCall
    from ._ipc_engine import Peer

__all__ = [
    "deliver_intercepted",
    "invoke_intercepted",
    "notify_intercepted",
    "open_invoke_intercepted",
    "serve_intercepted",
]

_log = logging.getLogger("tether.ipc")


def _peer_address(peer: Peer) -> str | None:
    session = peer.session
    return session.remote if session is not None else None


def _sending_context(peer: Peer, channel: str, method: str) -> RequestContext:
    """The context an invoke or notification is sent in: the current one, or the session's."""
    context = contexts.current()
    if context is not None:
        return context
    return RequestContext(
        session_id=peer.session_id,
        application_id=peer.application_id,
        application_version=peer.application_version,
        operation=f"{channel}.{method}",
    )


def _sent(
    peer: Peer,
    channel: str,
    method: str,
    args: list[Any],
    *,
    stream: Any = None,
    notification: bool = False,
) -> CallInfo:
    return CallInfo(
        "client",
        "ipc",
        channel,
        None,
        method,
        tuple(args),
        _sending_context(peer, channel, method),
        stream=stream,
        notification=notification,
        peer=_peer_address(peer),
        messages=StreamMessages() if stream is not None else None,
    )


async def invoke_intercepted(
    peer: Peer,
    chain: tuple[Interceptor, ...],
    channel: str,
    method: str,
    args: list[Any],
    names: tuple[str, ...] | None,
) -> Any:
    """An invoke this end sends (one value each way), through `chain`."""

    async def innermost(call: CallInfo) -> Any:
        with contexts.using(call.context):
            return await peer.invoke(channel, method, list(call.args), names, intercepted=True)

    return await run_chain(chain, _sent(peer, channel, method, args), innermost)


async def notify_intercepted(
    peer: Peer,
    chain: tuple[Interceptor, ...],
    channel: str,
    method: str,
    args: list[Any],
    names: tuple[str, ...] | None,
) -> None:
    """A notification this end sends, through `chain` (its outcome: None once queued or sent)."""

    async def innermost(call: CallInfo) -> None:
        with contexts.using(call.context):
            await peer.notify(channel, method, list(call.args), names, intercepted=True)

    call = _sent(peer, channel, method, args, notification=True)
    await run_chain(chain, call, innermost)


def _counted(call: CallInfo, op: Operation, source: Any) -> Any:
    if source is None or call.messages is None:
        return source
    return counted_source(source, call.messages)


def open_invoke_intercepted(
    peer: Peer,
    chain: tuple[Interceptor, ...],
    channel: str,
    op: Operation,
    values: list[Any],
    source: AsyncIterable[Any] | None,
) -> AbstractAsyncContextManager[Any]:
    """A stream invoke this end sends, for an `open_stream` block, through `chain`."""

    def open_inner(call: CallInfo) -> AbstractAsyncContextManager[Any]:
        return _opened_in(call, peer, channel, op, _counted(call, op, source))

    call = _sent(peer, channel, op.name, values, stream=stream_kind(op))
    return intercepted_stream(chain, call, open_inner, Item)


class _opened_in:
    """`peer.open_invoke` entered in the call's context (its ActivityId is sent)."""

    __slots__ = ("_call", "_inner")

    def __init__(
        self, call: CallInfo, peer: Peer, channel: str, op: Operation, source: Any
    ) -> None:
        self._call = call
        with contexts.using(call.context):
            self._inner = peer.open_invoke(channel, op, list(call.args), source)

    async def __aenter__(self) -> Any:
        with contexts.using(self._call.context):
            return await self._inner.__aenter__()

    async def __aexit__(self, *exc_info: Any) -> bool | None:
        return await self._inner.__aexit__(*exc_info)


async def serve_intercepted(
    peer: Peer, chain: tuple[Interceptor, ...], prepared: PreparedCall
) -> Any:
    """An invoke this end received: the handler runs inside `chain`."""
    op = prepared.operation
    context = prepared.context
    stream = prepared.stream
    if stream is not None:
        stream.messages = StreamMessages()
    call = CallInfo(
        "server",
        "ipc",
        op.interface_name,
        None,
        op.name,
        tuple(prepared.args),
        context,
        stream=stream_kind(op) if stream is not None else None,
        peer=_peer_address(peer),
        messages=stream.messages if stream is not None else None,
    )

    async def run(call: CallInfo) -> Any:
        args = list(call.args)
        if stream is None:
            return await prepared.handler(*args)
        prepared.args = args
        return await peer.serve_stream(prepared, stream)

    async def innermost(call: CallInfo) -> Any:
        return await run_in_context(call, context, lambda: run(call))

    return await run_chain(chain, call, innermost)


async def deliver_intercepted(
    peer: Peer, chain: tuple[Interceptor, ...], notify: Notify, context: RequestContext
) -> None:
    """A notification this end received: its listeners run inside `chain`.

    An interceptor that refuses it (raises) drops it, with a warning: a
    notification has nobody to answer.
    """
    call = CallInfo(
        "server",
        "ipc",
        notify.channel,
        None,
        notify.method,
        tuple(notify.args),
        context,
        notification=True,
        peer=_peer_address(peer),
    )

    async def innermost(call: CallInfo) -> None:
        changed = Notify(notify.channel, notify.method, list(call.args), call.context.activity_id)
        await peer.deliver(changed, call.context, intercepted=True)

    try:
        await run_chain(chain, call, innermost)
    except Exception as exc:
        _log.warning(
            "dropped %s from the %s (activity %s): an interceptor raised %r",
            context.operation,
            peer.other,
            context.activity_id,
            exc,
        )
