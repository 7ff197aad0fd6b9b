"""The client side of interceptors: a stub's call through its connection's chain.

`_client`'s stubs come here only when an interceptor is registered (on the
connection or process-wide); they hand in the step that makes the call
without interceptors (`inner`), which runs as the chain's innermost step in
the context the chain passed on.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from contextlib import AbstractAsyncContextManager
from typing import TYPE_CHECKING, Any

import attrs

from .. import contexts
from ..contexts import current as current_context
from ._errors import InvalidRequest
from ._interceptors import (
    CallInfo,
    Interceptor,
    StreamMessages,
    counted_source,
    intercepted_stream,
    run_chain,
    stream_kind,
)
from ._interfaces import Operation, RpcInterface
from ._protocol import Item
from ._streams import Exchange

if TYPE_CHECKING:
    from ._client import RpcBackend

__all__ = ["call_info", "intercepted_call", "open_intercepted_stream"]

#: The call without interceptors: `_client._call` or `_client._call_with_stream`.
Inner = Callable[
    ["RpcBackend", type[RpcInterface], Operation, tuple[Any, ...], Mapping[str, Any]],
    Awaitable[Any],
]
#: The opener of a result stream without interceptors: `_client._open_rpc_stream`.
InnerOpener = Callable[
    ["RpcBackend", type[RpcInterface], Operation, tuple[Any, ...], Mapping[str, Any]],
    AbstractAsyncContextManager[Exchange],
]


def _bound_args(op: Operation, args: tuple[Any, ...], kwargs: Mapping[str, Any]) -> tuple[Any, ...]:
    """A call's arguments bound to the operation's parameters, in order (defaults applied)."""
    if not kwargs and len(args) == len(op.param_names):
        return args
    try:
        bound = op.signature.bind(None, *args, **kwargs)
    except TypeError as exc:
        raise InvalidRequest(f"{op.qualname}: {exc}") from None
    bound.apply_defaults()
    return tuple(bound.arguments.values())[1:]


def call_info(
    backend: RpcBackend,
    interface: type[RpcInterface],
    op: Operation,
    args: tuple[Any, ...],
    kwargs: Mapping[str, Any],
) -> CallInfo:
    """What the client's interceptors see of a call made now, in the current context."""
    options = backend.options
    ctx = current_context()
    if ctx is None:
        context = contexts.RequestContext(
            session_id=options.session_id,
            application_id=options.application_id,
            application_version=options.application_version,
            operation=op.qualname,
        )
    else:
        # What `_make_call` sends, but the connection's own credential: it is
        # added after the interceptors, who need not see it.
        context = attrs.evolve(
            ctx,
            session_id=ctx.session_id or options.session_id,
            application_id=ctx.application_id or options.application_id,
            application_version=ctx.application_version or options.application_version,
            operation=op.qualname,
        )
    stream = stream_kind(op)
    return CallInfo(
        "client",
        "rpc",
        interface.interface_name,
        interface.interface_version,
        op.name,
        _bound_args(op, args, kwargs),
        context,
        stream=stream,
        peer=options.peer,
        messages=StreamMessages() if stream is not None else None,
    )


def _with_counted_source(op: Operation, call: CallInfo) -> tuple[Any, ...]:
    """The call's arguments, its argument stream reporting each item as sent."""
    if op.stream_param is None or call.messages is None:
        return call.args
    args = list(call.args)
    args[op.stream_param] = counted_source(args[op.stream_param], call.messages)
    return tuple(args)


async def intercepted_call(
    inner: Inner,
    chain: tuple[Interceptor, ...],
    backend: RpcBackend,
    interface: type[RpcInterface],
    op: Operation,
    args: tuple[Any, ...],
    kwargs: Mapping[str, Any],
) -> Any:
    """A unary or client-stream call, through the connection's interceptors."""

    async def innermost(call: CallInfo) -> Any:
        with contexts.using(call.context):
            return await inner(backend, interface, op, _with_counted_source(op, call), {})

    return await run_chain(chain, call_info(backend, interface, op, args, kwargs), innermost)


def open_intercepted_stream(
    inner: InnerOpener,
    chain: tuple[Interceptor, ...],
    backend: RpcBackend,
    interface: type[RpcInterface],
    op: Operation,
    args: tuple[Any, ...],
    kwargs: Mapping[str, Any],
) -> AbstractAsyncContextManager[Exchange]:
    """A result-stream call for the block, through the connection's interceptors."""

    def open_inner(call: CallInfo) -> AbstractAsyncContextManager[Exchange]:
        with contexts.using(call.context):
            return inner(backend, interface, op, _with_counted_source(op, call), {})

    call = call_info(backend, interface, op, args, kwargs)
    return intercepted_stream(chain, call, open_inner, Item)
