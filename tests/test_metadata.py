"""Request metadata and traceparent in the context, and their checks on the wire (unit tests).

The end-to-end cases, on every transport, are in the conformance suites
(`tether.testing._rpc_metadata_suite`, and the IPC call cases).
"""

from __future__ import annotations

import json
import logging

import pytest

import tether
from tether import contexts
from tether.contexts._metadata import Metadata, decode_baggage, encode_baggage
from tether.runtime import InvalidRequest
from tether.runtime._protocol import Call, CallContext, Invoke, decode, encode

TRACEPARENT = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"


def test_metadata_block_merges_into_the_current_context_and_restores_it() -> None:
    assert contexts.current() is None
    with tether.activity(metadata={"tenant": "acme"}) as act:
        with tether.metadata(tenant="beta", user="u1") as inner:
            assert tether.current_context() is inner
            assert inner.metadata == {"tenant": "beta", "user": "u1"}
            # The rest of the context is kept.
            assert inner.activity_id == act.activity_id
        assert tether.current_context() is act
        assert act.metadata == {"tenant": "acme"}
    assert contexts.current() is None


def test_metadata_outside_any_context_starts_an_activity() -> None:
    with tether.metadata(tenant="acme") as ctx:
        assert contexts.current() is ctx
        assert ctx.activity_id
        assert ctx.metadata == {"tenant": "acme"}
    assert contexts.current() is None


def test_activity_keeps_the_enclosing_metadata_but_not_its_traceparent() -> None:
    with tether.activity(metadata={"a": "1"}, traceparent=TRACEPARENT) as outer:
        assert outer.traceparent == TRACEPARENT
        with tether.activity(metadata={"b": "2"}) as inner:
            assert inner.metadata == {"a": "1", "b": "2"}
            # A new activity is a new trace (its ActivityId's).
            assert inner.traceparent is None


@pytest.mark.parametrize(
    ("pairs", "limit"),
    [
        ({f"k{i}": "v" for i in range(contexts.MAX_METADATA_ENTRIES + 1)}, "MAX_METADATA_ENTRIES"),
        ({"k" * (contexts.MAX_METADATA_KEY_LENGTH + 1): "v"}, "MAX_METADATA_KEY_LENGTH"),
        ({"k": "é" * (contexts.MAX_METADATA_VALUE_BYTES // 2 + 1)}, "MAX_METADATA_VALUE_BYTES"),
        ({f"k{i}": "%" * 300 for i in range(10)}, "MAX_METADATA_BYTES"),
    ],
)
def test_client_refuses_metadata_over_a_limit_naming_it(pairs: dict[str, str], limit: str) -> None:
    with pytest.raises(ValueError, match=limit), tether.metadata(**pairs):
        pass
    with pytest.raises(ValueError, match=limit), tether.activity(metadata=pairs):
        pass


def test_limits_are_reached_but_not_exceeded() -> None:
    """Exactly at each limit is allowed."""
    at_limit = {f"k{i}": "v" for i in range(contexts.MAX_METADATA_ENTRIES)}
    with tether.metadata(**at_limit) as ctx:
        assert len(ctx.metadata) == contexts.MAX_METADATA_ENTRIES
    with tether.metadata(**{"k" * contexts.MAX_METADATA_KEY_LENGTH: "v"}):
        pass
    with tether.metadata(big="v" * contexts.MAX_METADATA_VALUE_BYTES):
        pass


@pytest.mark.parametrize("key", ["", "has space", "comma,", "é", "semi;colon"])
def test_keys_must_be_w3c_tokens(key: str) -> None:
    with pytest.raises(ValueError, match="W3C Baggage keys"), tether.metadata(**{key: "v"}):
        pass


def test_values_must_be_strings() -> None:
    with pytest.raises(ValueError, match="must be a string"), tether.activity(metadata={"k": 1}):  # type: ignore[dict-item]
        pass


def test_activity_refuses_an_invalid_traceparent() -> None:
    with pytest.raises(ValueError, match="traceparent"), tether.activity(traceparent="00-x-01"):
        pass


def test_metadata_is_frozen_and_its_repr_shows_keys_only() -> None:
    context = contexts.RequestContext(metadata={"tenant": "s3cr3t-ish"})
    assert isinstance(context.metadata, Metadata)
    with pytest.raises(TypeError):
        context.metadata["tenant"] = "other"  # type: ignore[index]
    assert hash(context) == hash(contexts.RequestContext(**_fields(context)))
    call_ctx = CallContext("a", metadata=context.metadata)
    for shown in (repr(context), repr(call_ctx), repr(context.metadata)):
        assert "tenant" in shown
        assert "s3cr3t-ish" not in shown


def _fields(context: contexts.RequestContext) -> dict[str, object]:
    return {
        "activity_id": context.activity_id,
        "metadata": dict(context.metadata),
    }


def test_context_filter_does_not_add_metadata() -> None:
    handler = logging.Handler()
    records: list[logging.LogRecord] = []
    handler.emit = records.append  # type: ignore[method-assign]
    handler.addFilter(contexts.ContextFilter())
    log = logging.getLogger("test_metadata.filter")
    log.addHandler(handler)
    try:
        with tether.metadata(tenant="hidden-value"):
            log.warning("inside")
    finally:
        log.removeHandler(handler)
    [record] = records
    assert "hidden-value" not in repr(vars(record))


# -- the baggage header -----------------------------------------------------


def test_baggage_round_trips_any_text() -> None:
    metadata = {"a": "plain", "b": 'a b,c;d=e%41 "é\\☃', "c": ""}
    encoded = encode_baggage(metadata)
    assert encoded.isascii()
    assert " " not in encoded
    assert decode_baggage([encoded]) == metadata


def test_baggage_skips_malformed_members_and_drops_properties() -> None:
    assert decode_baggage(["k=v;p=1;q, =x,nokey,a b=c,ok=%E2%98%83,bad=%C3"]) == {
        "k": "v",
        "ok": "☃",
    }


# -- the protocol's ctx and invoke ---------------------------------------------


def test_call_ctx_carries_metadata_and_traceparent() -> None:
    call = Call(1, "I", "1.0.0", "op", [], CallContext("act", metadata=Metadata({"k": "v"})))
    call = call._replace(ctx=call.ctx._replace(traceparent=TRACEPARENT))
    wire = json.loads(encode(call))
    assert wire["ctx"]["metadata"] == {"k": "v"}
    assert wire["ctx"]["traceparent"] == TRACEPARENT
    assert decode(encode(call)) == call
    # Neither key when there is nothing to carry.
    bare = json.loads(encode(Call(1, "I", "1.0.0", "op", [], CallContext("act"))))
    assert set(bare["ctx"]) == {"activity_id"}


def _call_with_ctx(ctx: dict[str, object]) -> bytes:
    return json.dumps(
        {"t": "call", "id": 7, "iface": "I", "ver": "1.0.0", "op": "op", "args": [], "ctx": ctx}
    ).encode()


@pytest.mark.parametrize(
    ("metadata", "says"),
    [
        (["k", "v"], "an object"),
        ({"k": 1}, "an object of strings"),
        ({f"k{i}": "v" for i in range(65)}, "MAX_METADATA_ENTRIES"),
        ({"k": "v" * 1025}, "MAX_METADATA_VALUE_BYTES"),
        ({"bad key": "v"}, "W3C Baggage keys"),
    ],
)
def test_decoder_refuses_bad_metadata_as_bad_request(metadata: object, says: str) -> None:
    with pytest.raises(InvalidRequest, match=says) as refused:
        decode(_call_with_ctx({"metadata": metadata}))
    assert refused.value.details == {"field": "metadata", "id": 7}


def test_decoder_ignores_an_invalid_traceparent_but_not_a_non_string() -> None:
    call = decode(_call_with_ctx({"traceparent": "00-nope-01"}))
    assert isinstance(call, Call)
    assert call.ctx.traceparent is None
    with pytest.raises(InvalidRequest, match="traceparent"):
        decode(_call_with_ctx({"traceparent": 5}))
    # A later version keeps the fields this one knows.
    later = decode(_call_with_ctx({"traceparent": "01" + TRACEPARENT[2:] + "-more"}))
    assert isinstance(later, Call)
    assert later.ctx.traceparent == "01" + TRACEPARENT[2:]


def test_invoke_carries_metadata_and_traceparent() -> None:
    invoke = Invoke(3, "ch", "m", [], "act", None, None, TRACEPARENT, Metadata({"k": "v"}))
    wire = json.loads(encode(invoke))
    assert wire["metadata"] == {"k": "v"}
    assert wire["traceparent"] == TRACEPARENT
    assert decode(encode(invoke)) == invoke
    with pytest.raises(InvalidRequest, match="MAX_METADATA_ENTRIES"):
        decode(encode(invoke._replace(metadata=Metadata({f"k{i}": "v" for i in range(65)}))))
