# mypy: disable-error-code="empty-body"
# (interface operations are declared with `...` bodies)
"""The RPC conformance cases for request metadata and the W3C traceparent.

Part of `RpcConformance`. A frontend sets metadata (`tether.metadata`) and a
traceparent (`tether.activity(traceparent=...)`); the impl reads them from its
`RequestContext`, and its own call to a second backend over the same transport
carries them on. Metadata over a limit, sent by a client that skipped the
check `tether.metadata` makes, is refused by the server as bad-request; a
traceparent that is not a valid W3C value is ignored.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from contextlib import AbstractAsyncContextManager
from typing import Any

import attrs
import pytest
import trio

from .. import contexts
from ..contexts import (
    MAX_METADATA_BYTES,
    MAX_METADATA_ENTRIES,
    MAX_METADATA_VALUE_BYTES,
    RequestContext,
)
from ..runtime import InvalidRequest, RpcBackend, RpcInterface, RpcManager

__all__ = ["ConformanceMetadata", "RpcMetadataCases"]

#: Seconds every metadata case may take.
METADATA_TIMEOUT = 10.0
#: A W3C traceparent a caller might have received from an outside system.
TRACEPARENT = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"


@attrs.frozen
class Seen:
    """What an impl saw of its RequestContext's metadata and trace."""

    activity_id: str
    metadata: dict[str, str]
    traceparent: str | None


class ConformanceMetadata(RpcInterface):
    """Reports the context the impl sees, here or one hop further."""

    interface_name = "tether.conformance.Metadata"
    interface_version = "1.0.0"

    async def seen(self) -> Seen: ...

    async def seen_downstream(self, hop: str) -> Seen:
        """Call `seen` on the downstream backend inside `tether.metadata(hop=hop)`."""


def _seen() -> Seen:
    ctx = contexts.current()
    assert ctx is not None, "the server did not set a RequestContext"
    return Seen(ctx.activity_id, dict(ctx.metadata), ctx.traceparent)


Opener = Callable[[], AbstractAsyncContextManager[RpcBackend]]


class MetadataImpl(ConformanceMetadata):
    def __init__(self, manager: RpcManager, downstream: Opener | None = None) -> None:
        self.manager = manager
        self.downstream = downstream

    async def seen(self) -> Seen:
        return _seen()

    async def seen_downstream(self, hop: str) -> Seen:
        assert self.downstream is not None, "this backend has no downstream"
        async with self.downstream() as backend:
            with contexts.metadata(hop=hop):
                return await backend.get_client(ConformanceMetadata).seen()


def _over_the_limit(limit: str) -> dict[str, str]:
    """Metadata just over `limit`, for a context built without the client's check."""
    if limit == "entries":
        return {f"k{i}": "v" for i in range(MAX_METADATA_ENTRIES + 1)}
    if limit == "value":
        return {"big": "v" * (MAX_METADATA_VALUE_BYTES + 1)}
    # Each value within its own limit, all of them over the total.
    count = MAX_METADATA_BYTES // MAX_METADATA_VALUE_BYTES + 1
    return {f"k{i}": "v" * MAX_METADATA_VALUE_BYTES for i in range(count)}


class RpcMetadataCases:
    """Metadata and traceparent cases; mixed into `RpcConformance`."""

    def connect(
        self,
        manager: RpcManager,
        *,
        interfaces: Sequence[type[RpcInterface]],
        **options: Any,
    ) -> AbstractAsyncContextManager[RpcBackend]:
        raise NotImplementedError

    def _metadata_manager(self, downstream: RpcManager | None = None) -> RpcManager:
        manager = RpcManager()
        opener: Opener | None = None
        if downstream is not None:
            served = downstream

            def opener() -> AbstractAsyncContextManager[RpcBackend]:
                return self.connect(served, interfaces=[ConformanceMetadata])

        manager.register_impl(ConformanceMetadata, MetadataImpl(manager, opener))
        return manager

    async def test_metadata_reaches_the_impl_and_its_downstream_calls(self) -> None:
        last = self._metadata_manager()
        middle = self._metadata_manager(downstream=last)
        # Characters a header cannot carry raw: they travel percent-encoded.
        odd = "a b,c;d=e%41 é\N{SNOWMAN}"
        with trio.fail_after(METADATA_TIMEOUT):
            async with self.connect(middle, interfaces=[ConformanceMetadata]) as backend:
                client = backend.get_client(ConformanceMetadata)
                with contexts.metadata(tenant="acme", **{"x-odd": odd}) as ctx:
                    here = await client.seen()
                    there = await client.seen_downstream("middle")
        assert here.metadata == {"tenant": "acme", "x-odd": odd}
        assert here.activity_id == ctx.activity_id
        # The impl's downstream call carried the request's metadata, plus its own.
        assert there.metadata == {"tenant": "acme", "x-odd": odd, "hop": "middle"}
        assert there.activity_id == ctx.activity_id

    async def test_nested_metadata_blocks_merge_and_the_inner_one_wins(self) -> None:
        with trio.fail_after(METADATA_TIMEOUT):
            async with self.connect(
                self._metadata_manager(), interfaces=[ConformanceMetadata]
            ) as backend:
                client = backend.get_client(ConformanceMetadata)
                with contexts.activity(metadata={"tenant": "acme", "region": "eu"}):
                    with contexts.metadata(tenant="beta", user="u1"):
                        inner = await client.seen()
                    outer = await client.seen()
                none = await client.seen()
        assert inner.metadata == {"tenant": "beta", "region": "eu", "user": "u1"}
        assert outer.metadata == {"tenant": "acme", "region": "eu"}
        assert none.metadata == {}

    @pytest.mark.parametrize("limit", ["entries", "value", "total"])
    async def test_server_refuses_metadata_over_a_limit_as_bad_request(self, limit: str) -> None:
        over = _over_the_limit(limit)
        with pytest.raises(ValueError, match="MAX_METADATA_"):
            contexts.metadata(**over).__enter__()
        # A context built by hand skips the client's check: the server refuses it.
        context = RequestContext(metadata=over)
        with trio.fail_after(METADATA_TIMEOUT):
            async with self.connect(
                self._metadata_manager(), interfaces=[ConformanceMetadata]
            ) as backend:
                client = backend.get_client(ConformanceMetadata)
                with contexts.using(context), pytest.raises(InvalidRequest) as refused:
                    await client.seen()
                # The connection still serves calls within the limits.
                with contexts.metadata(tenant="acme"):
                    assert (await client.seen()).metadata == {"tenant": "acme"}
        assert "MAX_METADATA_" in str(refused.value)

    async def test_callers_traceparent_is_the_impls_and_goes_downstream(self) -> None:
        last = self._metadata_manager()
        middle = self._metadata_manager(downstream=last)
        with trio.fail_after(METADATA_TIMEOUT):
            async with self.connect(middle, interfaces=[ConformanceMetadata]) as backend:
                client = backend.get_client(ConformanceMetadata)
                with contexts.activity(traceparent=TRACEPARENT):
                    here = await client.seen()
                    there = await client.seen_downstream("middle")
        assert here.traceparent == TRACEPARENT
        # Without a tracer, the parent is passed on as it came (W3C allows it).
        assert there.traceparent == TRACEPARENT

    async def test_invalid_traceparent_is_ignored(self) -> None:
        context = RequestContext(traceparent="00-not-a-trace-01")
        with trio.fail_after(METADATA_TIMEOUT):
            async with self.connect(
                self._metadata_manager(), interfaces=[ConformanceMetadata]
            ) as backend:
                client = backend.get_client(ConformanceMetadata)
                with contexts.using(context):
                    seen = await client.seen()
        assert seen.traceparent is None
        assert seen.activity_id == context.activity_id

    async def test_without_a_traceparent_the_trace_is_the_activity(self) -> None:
        with trio.fail_after(METADATA_TIMEOUT):
            async with self.connect(
                self._metadata_manager(), interfaces=[ConformanceMetadata]
            ) as backend:
                client = backend.get_client(ConformanceMetadata)
                with contexts.activity() as act:
                    seen = await client.seen()
        # None on a transport that sends none; over HTTP, the one derived from
        # the ActivityId.
        assert seen.activity_id == act.activity_id
        if seen.traceparent is not None:
            assert seen.traceparent.split("-")[1] == contexts.trace_id_of(act.activity_id)
