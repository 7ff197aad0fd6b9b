"""W3C Trace Context interop: ActivityIds and `traceparent` headers line up."""

from __future__ import annotations

import re

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tether import contexts

TRACEPARENT = re.compile(r"00-[0-9a-f]{32}-[0-9a-f]{16}-01")


def test_a_uuid_shaped_activity_id_is_its_own_trace_id() -> None:
    activity = "0af76519-16cd-43dd-8448-eb211c80319c"
    assert contexts.trace_id_of(activity) == "0af7651916cd43dd8448eb211c80319c"
    header = contexts.traceparent_for(activity)
    assert TRACEPARENT.fullmatch(header)
    assert header.split("-")[1] == "0af7651916cd43dd8448eb211c80319c"


def test_each_call_gets_its_own_parent_id() -> None:
    activity = contexts.new_activity_id()
    spans = {contexts.traceparent_for(activity).split("-")[2] for _ in range(20)}
    assert len(spans) == 20


def test_other_activity_ids_map_to_a_stable_hash() -> None:
    one = contexts.trace_id_of("order-42")
    assert re.fullmatch(r"[0-9a-f]{32}", one)
    assert contexts.trace_id_of("order-42") == one
    assert contexts.trace_id_of("order-43") != one
    # All zeros is not a valid trace id: hashed too.
    assert contexts.trace_id_of("0" * 32) != "0" * 32


@given(st.uuids())
def test_traceparent_round_trips_a_uuid_activity(value: object) -> None:
    activity = str(value)
    assert contexts.activity_id_from_traceparent(contexts.traceparent_for(activity)) == activity


def test_the_trace_id_of_a_foreign_traceparent_becomes_the_activity() -> None:
    header = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
    assert contexts.activity_id_from_traceparent(header) == "4bf92f35-77b3-4da6-a3ce-929d0e0e4736"
    # A future version may add fields after the flags.
    assert contexts.activity_id_from_traceparent("01-" + header[3:] + "-extra") is not None


@pytest.mark.parametrize(
    "header",
    [
        "",
        "garbage",
        "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7",  # no flags
        "00-00000000000000000000000000000000-00f067aa0ba902b7-01",  # zero trace id
        "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",  # zero parent id
        "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",  # forbidden version
        "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",  # upper case
        "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra",  # v00 has 4 fields
    ],
)
def test_an_invalid_traceparent_is_ignored(header: str) -> None:
    assert contexts.activity_id_from_traceparent(header) is None
