"""Attacks with binary frames: `bin` paths that point where no bytes may go.

A frame's `bin` entries say where each attachment goes; a peer may point
them at the message's tag, its id, the call's context, or at a value that is
not a `null`. Each is refused as a malformed message (with the request's id
when it can be read), and a session that receives one goes on.
"""

from __future__ import annotations

import orjson
import pytest
import trio
from test_attack_streams import Numbers, NumbersImpl, Peer, _call

import tether
from tether.runtime import serve_rpc_session
from tether.runtime._binary import BinaryMessage
from tether.runtime._protocol import Credit, Error, decode
from tether.transports.memory import stream_pair


def _frame(obj: dict[str, object], *attachments: bytes) -> bytes:
    return BinaryMessage(orjson.dumps(obj), attachments).frame()


CALL = {
    "t": "call",
    "id": 4,
    "iface": Numbers.interface_name,
    "ver": Numbers.interface_version,
    "op": "add",
    "args": [1, 2],
    "ctx": {"activity_id": None, "authorization": None},
}


@pytest.mark.parametrize(
    ("obj", "why"),
    [
        ({**CALL, "t": None, "bin": [{"path": ["t"], "size": 3}]}, "unknown message type"),
        ({**CALL, "id": None, "bin": [{"path": ["id"], "size": 3}]}, "'id'"),
        (
            {**CALL, "bin": [{"path": ["ctx", "authorization"], "size": 3}]},
            "'authorization' must be a string",
        ),
        (
            {**CALL, "bin": [{"path": ["ctx", "activity_id"], "size": 3}]},
            "'activity_id' must be",
        ),
        ({**CALL, "bin": [{"path": ["args", 0], "size": 3}]}, "must name a null"),
        ({**CALL, "bin": [{"path": ["iface"], "size": 3}]}, "must name a null"),
        ({**CALL, "bin": [{"path": ["args", 9], "size": 3}]}, "must name a null"),
        ({**CALL, "bin": [{"path": ["ctx", "nope", "x"], "size": 3}]}, "names no value"),
    ],
)
def test_a_bin_path_into_the_envelope_is_refused(obj: dict[str, object], why: str) -> None:
    with pytest.raises(tether.InvalidRequest, match=why) as raised:
        decode(_frame(obj, b"abc"))
    # The refusal says what was wrong, not what the attachment held.
    assert "abc" not in str(raised.value)


def test_an_unknown_tag_made_of_bytes_is_named_briefly() -> None:
    # The attachment put in `t` may be megabytes: the refusal quotes at most a few.
    big = b"x" * 100_000
    with pytest.raises(tether.InvalidRequest) as raised:
        decode(_frame({"t": None, "bin": [{"path": ["t"], "size": len(big)}]}, big))
    assert len(str(raised.value)) < 500


def test_attachments_on_a_credit_are_ignored_and_counted() -> None:
    frame = _frame(
        {
            "t": "credit",
            "id": 1,
            "items": 2,
            "bytes": 3,
            "x": None,
            "bin": [{"path": ["x"], "size": 4}],
        },
        b"abcd",
    )
    assert decode(frame) == Credit(1, 2, 3)


async def test_a_session_refuses_bad_frames_and_goes_on() -> None:
    manager = tether.RpcManager()
    manager.register_impl(Numbers, NumbersImpl())
    client_end, server_end = stream_pair()
    peer = Peer(client_end)
    with trio.fail_after(5):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(serve_rpc_session, manager, server_end)
            await peer.hello()
            for obj in (
                {**CALL, "id": None, "bin": [{"path": ["id"], "size": 1}]},
                {**CALL, "bin": [{"path": ["ctx", "authorization"], "size": 1}]},
                {**CALL, "bin": [{"path": ["args", 0], "size": 1}]},
            ):
                await client_end.send_message(BinaryMessage(orjson.dumps(obj), (b"k",)))
                refusal = await peer.receive()
                assert type(refusal) is Error
                assert refusal.error.code == "bad-request"
            await peer.send(_call(5, "add", [2, 2]))
            assert (await peer.receive()).value == 4  # type: ignore[union-attr]
            nursery.cancel_scope.cancel()
