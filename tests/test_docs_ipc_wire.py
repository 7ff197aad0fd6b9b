"""docs/ipc.md's wire transcripts, played against the real backend.

Each `->` line of a transcript is sent as written (hand-written JSON, never
encoded by tether) to `tether.runtime.serve_ipc_session` over an in-process
stream pair; each `<-` line must match the next message the backend sends:
the same keys, the same values of the same JSON types, except that a string
holding `…` in the doc matches any string that starts with the text before it.
The channels are the doc's own declarations; the handlers do what the doc says
they do.
"""

from __future__ import annotations

import json
import sys
import types
from typing import Any

import pytest
import trio
from test_docs import ROOT, fenced_blocks, program_of, python_blocks

import tether
from tether.runtime import ConnectionClosed, MessageStream, serve_ipc_session
from tether.transports.memory import stream_pair

IPC_MD = ROOT / "docs" / "ipc.md"
TIMEOUT = 10  # the cap of every test (virtual seconds: the clock jumps)


def transcripts() -> list[list[str]]:
    """The `->`/`<-` transcripts of docs/ipc.md, as lists of lines."""
    return [
        block.code.splitlines()
        for block in fenced_blocks(IPC_MD)
        if block.language == "text" and block.code.startswith("-> ")
    ]


def doc_channels(monkeypatch: pytest.MonkeyPatch) -> types.ModuleType:
    """docs/ipc.md's declarations, run up to the wire section's block, as a module."""
    blocks = python_blocks(IPC_MD)
    [last] = [b for b in blocks if "class ElementsIpc" in b.code]
    module = types.ModuleType("ipc_md")
    monkeypatch.setitem(sys.modules, module.__name__, module)
    exec(compile(program_of(last, blocks), "docs/ipc.md", "exec"), module.__dict__)
    return module


def matches(doc: Any, got: Any, where: str = "") -> list[str]:
    """Where `got` differs from the doc's `doc`; empty when it matches."""
    if isinstance(doc, str) and "…" in doc:
        prefix = doc.partition("…")[0]
        if isinstance(got, str) and got.startswith(prefix):
            return []
        return [f"{where}: {got!r} does not start with {prefix!r}"]
    if isinstance(doc, dict) and isinstance(got, dict):
        if doc.keys() != got.keys():
            return [f"{where}: keys {sorted(got)}, the doc has {sorted(doc)}"]
        return [m for key in doc for m in matches(doc[key], got[key], f"{where}.{key}")]
    if isinstance(doc, list) and isinstance(got, list) and len(doc) == len(got):
        return [
            m
            for i, (d, g) in enumerate(zip(doc, got, strict=True))
            for m in matches(d, g, f"{where}[{i}]")
        ]
    if type(doc) is type(got) and doc == got:
        return []
    return [f"{where}: {got!r}, the doc says {doc!r}"]


def make_backend(doc: types.ModuleType, cancelled: list[str]) -> tether.BackendIpc:
    """The handlers docs/ipc.md's transcript describes, on the doc's channels."""
    Placement = doc.Placement

    class Editor(tether.IpcHandler, doc.EditorIpc):  # type: ignore[misc,name-defined]
        """`move_element` notifies before it answers; `validate_all` works for a long time."""

        def __init__(self) -> None:
            self.placements: dict[str, Any] = {}

        async def move_element(self, element_id: str, dx: float, dy: float) -> Any:
            old = self.placements.get(element_id, Placement(0.0, 0.0))
            new = self.placements[element_id] = Placement(old.x + dx, old.y + dy)
            await tether.current_session().notifier(doc.EditorEvents).element_moved(element_id, new)
            return new

        async def validate_all(self) -> int:
            events = tether.current_session().notifier(doc.EditorEvents)
            await events.progress("validate", 0, len(self.placements))
            try:
                await trio.sleep_forever()
            finally:
                cancelled.append(tether.current_context().activity_id)  # type: ignore[union-attr]
            return len(self.placements)

    class Elements(tether.IpcHandler, doc.ElementsIpc):  # type: ignore[misc,name-defined]
        """Asks the frontend's EditorPrompts.confirm first, and answers what it said."""

        async def delete_element(self, element_id: str) -> bool:
            prompts = tether.current_session().proxy(doc.EditorPrompts)
            return await prompts.confirm(f"delete {element_id}?")

    backend = tether.BackendIpc()
    backend.register(Editor)
    backend.register(Elements)
    return backend


async def play(stream: MessageStream, transcript: list[str]) -> None:
    """Send every `->` line as written; check every `<-` against what comes."""
    for number, line in enumerate(transcript, 1):
        direction, _, text = line.partition(" ")
        if direction == "->":
            await stream.send_message(text.encode())
            continue
        assert direction == "<-", f"line {number}: {line!r} is neither -> nor <-"
        got = json.loads(await stream.receive_message())
        assert matches(json.loads(text), got) == [], f"line {number}: got {got}"


def test_the_transcripts_show_every_message_and_field() -> None:
    """What a client in another language needs: every message, and where the context goes."""
    session, refusal = transcripts()
    messages = [json.loads(line[3:]) for line in session if not line.endswith("nonsense")]
    sent = {m["t"] for m in messages}
    assert sent >= {"hello", "welcome", "invoke", "notify", "result", "error", "cancel"}
    hello = messages[0]
    assert hello["mode"] == "ipc"
    invokes = [m for m in messages if m["t"] == "invoke"]
    assert any("activity_id" in m and "timeout_ms" in m for m in invokes)
    assert all("ctx" not in m for m in messages)  # unlike RPC's call
    assert any(m["t"] == "notify" and "activity_id" in m for m in messages)
    assert any(m["t"] == "error" and "activity_id" in m["error"] for m in messages)
    # A backend-initiated invoke, answered by the frontend.
    assert any(line.startswith("<- ") and '"t":"invoke"' in line for line in session)
    assert any(line.startswith("-> ") and '"t":"result"' in line for line in session)
    assert refusal[0].startswith("-> ")
    assert '"t":"error"' in refusal[-1]


async def test_the_session_transcript_is_what_the_backend_says(
    monkeypatch: pytest.MonkeyPatch, autojump_clock: trio.abc.Clock
) -> None:
    session, _ = transcripts()
    cancelled: list[str] = []
    backend = make_backend(doc_channels(monkeypatch), cancelled)
    frontend, backend_end = stream_pair()
    with trio.fail_after(TIMEOUT):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(serve_ipc_session, backend, backend_end)
            await play(frontend, session)
            await frontend.aclose()
    # The cancelled invoke and the one past its deadline were both stopped, with
    # their ActivityIds; nobody answered the cancelled one (the transcript says so).
    assert cancelled == ["a2", "a3"]
    assert backend.sessions == ()


async def test_the_refused_hello_is_what_the_backend_says_and_ends_the_connection(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    _, refusal = transcripts()
    backend = make_backend(doc_channels(monkeypatch), [])
    frontend, backend_end = stream_pair()
    with trio.fail_after(TIMEOUT):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(serve_ipc_session, backend, backend_end)
            await play(frontend, refusal)
            with pytest.raises(ConnectionClosed):
                await frontend.receive_message()
    assert backend.sessions == ()


async def test_a_transcript_that_says_otherwise_fails(
    monkeypatch: pytest.MonkeyPatch, autojump_clock: trio.abc.Clock
) -> None:
    """The check can fail: the doc's answer to invoke 1 with another value."""
    session, _ = transcripts()
    wrong = [line.replace('"value":{"x":1.5', '"value":{"x":2.5') for line in session]
    assert wrong != session
    backend = make_backend(doc_channels(monkeypatch), [])
    frontend, backend_end = stream_pair()
    with trio.fail_after(TIMEOUT):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(serve_ipc_session, backend, backend_end)
            with pytest.raises(AssertionError, match=r"value\.x: 1\.5, the doc says 2\.5"):
                await play(frontend, wrong)
            await frontend.aclose()


def test_matching_rules() -> None:
    assert matches({"a": [1, "x…"]}, {"a": [1, "xyz"]}) == []
    assert matches({"a": 0.0}, {"a": 0}) != []  # a float is not an int
    assert matches({"a": True}, {"a": 1}) != []
    assert matches({"a": 1}, {"a": 1, "b": 2}) != []  # no extra keys
    assert matches("ab…", "ac") != []
    assert matches([1], [1, 2]) != []
