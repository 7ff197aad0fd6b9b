"""Every Python block in README.md and docs/*.md runs, as a reader would paste it.

A doc writer marks a block on the line directly above its opening fence:

- no marker: the block is a program of its own. It runs in a fresh interpreter
  (`python -W error`, from the repository's root) and must exit 0 within
  `TIMEOUT` seconds, so a block that starts a server must also stop it.
- `<!-- continues -->`: the block goes on from the blocks above it in the same
  file. It runs as one program with every earlier block of that file that is
  not a fragment, in order, their top-level `trio.run(...)` statements left out
  (so a continuation that defines its own `main` and ends with `trio.run(main)`
  runs only that one).
- `<!-- fragment -->`: an excerpt that cannot run (`...` standing for code,
  names from elsewhere). It is compiled only, with top-level `await`,
  `async with` and `async for` allowed.

Any other HTML comment directly above a Python block is refused, so a typo in a
marker cannot turn a test off. Every block compiles; a block that serves binds
127.0.0.1 on port 0. The programs keep every block at its own line numbers in
its Markdown file, so a traceback points into the doc (`File "README.md", line 52`).

Besides the blocks: every relative link and anchor in those files resolves,
every repository path they name in backticks exists, and every `json` block
parses. The IPC wire transcripts are checked against the engine in
tests/test_docs_ipc_wire.py, the typing advice with mypy in tests/test_docs_mypy.py.
"""

from __future__ import annotations

import ast
import json
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import NamedTuple

import pytest

import tether

ROOT = Path(__file__).resolve().parent.parent
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
#: Seconds one block's program may take (they take well under one, unloaded).
TIMEOUT = 60
MARKERS = {"fragment", "continues"}

_FENCE = re.compile(r"^(?P<indent>[ \t]*)(?P<fence>```+)(?P<info>[^`]*)$")
_COMMENT = re.compile(r"^\s*<!--\s*(?P<text>.*?)\s*-->\s*$")
_DRIVER = "import sys; exec(compile(sys.stdin.read(), sys.argv[1], 'exec'))"


class Block(NamedTuple):
    """One fenced code block of a Markdown file."""

    path: Path
    line: int  # the 1-based line of the block's first line of code
    language: str
    code: str
    marker: str | None  # "fragment", "continues", or None

    @property
    def filename(self) -> str:
        """The file's name as tracebacks show it: relative to the repository."""
        path = self.path.resolve()
        return str(path.relative_to(ROOT)) if ROOT in path.parents else path.name

    @property
    def name(self) -> str:
        return f"{self.filename}:{self.line}"


def fenced_blocks(path: Path, text: str | None = None) -> list[Block]:
    """Every fenced block of `path` (or of `text`, read as that file).

    Raises:
        ValueError: a fence is never closed, or a Python block has an HTML
            comment above it that is not a known marker.
    """
    lines = (path.read_text(encoding="utf-8") if text is None else text).splitlines()
    blocks: list[Block] = []
    index = 0
    while index < len(lines):
        opening = _FENCE.match(lines[index])
        if opening is None:
            index += 1
            continue
        indent, fence = opening["indent"], opening["fence"]
        language = opening["info"].strip().split(" ")[0]
        end = index + 1
        while end < len(lines) and lines[end].strip() != fence:
            end += 1
        if end == len(lines):
            raise ValueError(f"{path.name}:{index + 1}: the {fence} fence is never closed")
        code = "".join(
            (line[len(indent) :] if line.startswith(indent) else line.lstrip()) + "\n"
            for line in lines[index + 1 : end]
        )
        marker = None
        comment = _COMMENT.match(lines[index - 1]) if index else None
        if comment is not None and language == "python":
            marker = comment["text"]
            if marker not in MARKERS:
                raise ValueError(
                    f"{path.name}:{index}: {lines[index - 1].strip()!r} is not a block marker: "
                    f"use <!-- fragment --> or <!-- continues -->"
                )
        blocks.append(Block(path, index + 2, language, code, marker))
        index = end + 1
    return blocks


def python_blocks(path: Path, text: str | None = None) -> list[Block]:
    return [block for block in fenced_blocks(path, text) if block.language == "python"]


def all_python_blocks() -> list[Block]:
    return [block for path in DOCS for block in python_blocks(path)]


def compile_block(block: Block) -> None:
    """Compile a block at its own lines; fragments may await at the top level."""
    flags = ast.PyCF_ALLOW_TOP_LEVEL_AWAIT if block.marker == "fragment" else 0
    compile(_at_own_lines([block]), block.filename, "exec", flags=flags)


def _at_own_lines(blocks: list[Block]) -> str:
    """The blocks' code, each at its own line numbers in their (one) Markdown file."""
    out: list[str] = []
    for block in blocks:
        out += ["\n"] * (block.line - 1 - len(out))
        out += block.code.splitlines(keepends=True)
    return "".join(out)


def _without_trio_run(block: Block) -> Block:
    """`block` with its top-level `trio.run(...)` statements blanked (lines kept)."""
    lines = block.code.splitlines(keepends=True)
    for node in ast.parse(block.code).body:
        if (
            isinstance(node, ast.Expr)
            and isinstance(node.value, ast.Call)
            and ast.unparse(node.value.func) == "trio.run"
        ):
            end = node.end_lineno or node.lineno
            lines[node.lineno - 1 : end] = ["\n"] * (end - node.lineno + 1)
    return block._replace(code="".join(lines))


def program_of(block: Block, blocks: list[Block]) -> str:
    """The program that runs `block`: itself, or its file's blocks up to it (continues).

    Args:
        block: A block that is not a fragment.
        blocks: Every Python block of its file, in order.
    """
    assert block.marker != "fragment"
    if block.marker is None:
        return _at_own_lines([block])
    earlier = [b for b in blocks[: blocks.index(block)] if b.marker != "fragment"]
    if not earlier:
        raise ValueError(f"{block.name} is marked <!-- continues --> but nothing runs above it")
    return _at_own_lines([*map(_without_trio_run, earlier), block])


def run_program(
    program: str, filename: str, timeout: float = TIMEOUT
) -> subprocess.CompletedProcess[str]:
    """Run `program` in a fresh interpreter, with this tether, warnings as errors.

    Raises:
        subprocess.TimeoutExpired: it ran for `timeout` seconds (it was killed).
    """
    env = dict(os.environ)
    # The child imports the tether under test, even where another is installed.
    source = str(Path(tether.__file__).resolve().parent.parent)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [source, env.get("PYTHONPATH")]))
    return subprocess.run(
        [sys.executable, "-W", "error", "-c", _DRIVER, filename],
        input=program,
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=ROOT,
        env=env,
        check=False,
    )


_RUNS: dict[Block, subprocess.CompletedProcess[str]] = {}


def run_block(block: Block) -> subprocess.CompletedProcess[str]:
    """Run a block's program once per test session; return how it went."""
    if block not in _RUNS:
        program = program_of(block, python_blocks(block.path))
        _RUNS[block] = run_program(program, block.filename)
    return _RUNS[block]


def _runnable() -> Iterator[object]:
    for block in all_python_blocks():
        if block.marker != "fragment":
            yield pytest.param(block, id=block.name)


# -- every block -------------------------------------------------------------------------


@pytest.mark.parametrize("block", [pytest.param(b, id=b.name) for b in all_python_blocks()])
def test_every_python_block_compiles(block: Block) -> None:
    compile_block(block)


@pytest.mark.parametrize("block", list(_runnable()))
def test_every_block_runs(block: Block) -> None:
    result = run_block(block)
    assert result.returncode == 0, (
        f"{block.name} failed (a block that cannot run is marked <!-- fragment -->, one "
        f"that goes on from the blocks above it <!-- continues -->: see this test's "
        f"docstring):\n{result.stderr}"
    )


@pytest.mark.parametrize("block", list(_runnable()))
def test_servers_in_blocks_bind_loopback_port_zero(block: Block) -> None:
    """A block that serves binds 127.0.0.1 on port 0: CI stays on loopback, ports never clash."""
    for host, port in served_addresses(block.code):
        assert (host, port) == ("127.0.0.1", 0), f"{block.name} serves on {host}:{port}"


def served_addresses(code: str) -> list[tuple[object, object]]:
    """(host, port) of every `x.serve` a program calls or hands to `nursery.start`/`partial`.

    The serve functions take `(manager, host, port, ...)`; an argument that is
    not a literal is returned as its source text, and fails the check above.
    """
    found: list[tuple[object, object]] = []
    for node in ast.walk(ast.parse(code)):
        if not isinstance(node, ast.Call):
            continue
        if _is_serve(node.func):
            args = node.args
        elif node.args and _is_serve(node.args[0]):
            args = node.args[1:]
        else:
            continue
        keywords = {k.arg: k.value for k in node.keywords}
        host = keywords.get("host", args[1] if len(args) > 1 else None)
        port = keywords.get("port", args[2] if len(args) > 2 else None)
        found.append((_literal(host), _literal(port)))
    return found


def _is_serve(node: ast.expr) -> bool:
    # `local.serve` binds a Unix socket (no host, no port): nothing to check.
    local = (
        isinstance(node, ast.Attribute)
        and isinstance(node.value, ast.Name)
        and (node.value.id == "local")
    )
    return isinstance(node, ast.Attribute) and node.attr == "serve" and not local


def _literal(node: ast.expr | None) -> object:
    if node is None:
        return "(default)"
    try:
        return ast.literal_eval(node)
    except ValueError:
        return ast.unparse(node)


def test_no_python_block_hides_under_another_name() -> None:
    """Only ```python blocks are run: a `py` or `python3` block would escape the test."""
    hidden = [
        block.name
        for path in DOCS
        for block in fenced_blocks(path)
        if block.language in {"py", "python3", "py3", "pycon"}
    ]
    assert hidden == []


@pytest.mark.parametrize(
    "block",
    [pytest.param(b, id=b.name) for p in DOCS for b in fenced_blocks(p) if b.language == "json"],
)
def test_every_json_block_parses(block: Block) -> None:
    json.loads(block.code)


# -- what the README's samples print -------------------------------------------------------


def readme_block(containing: str) -> Block:
    [block] = [b for b in python_blocks(ROOT / "README.md") if containing in b.code]
    return block


def test_quickstart_runs_as_pasted() -> None:
    quickstart = python_blocks(ROOT / "README.md")[0]
    assert quickstart.marker is None
    assert "trio.run(main)" in quickstart.code
    result = run_block(quickstart)
    assert result.returncode == 0, result.stderr
    assert re.search(r"counted robots in activity [0-9a-f-]{36}", result.stdout)


def test_ipc_sample_runs_as_pasted() -> None:
    sample = readme_block("memory.connect_ipc(backend_ipc")
    assert sample.marker is None
    result = run_block(sample)
    assert result.returncode == 0, result.stderr
    # The notification reached the frontend carrying the ActivityId of the action that caused it.
    called = re.search(r"^moved 0x20 in activity ([0-9a-f-]{36})$", result.stdout, re.MULTILINE)
    notified = re.search(
        r"^0x20 moved to Placement\(x=1\.5, y=0\.0\) in activity ([0-9a-f-]{36})$",
        result.stdout,
        re.MULTILINE,
    )
    assert called is not None, result.stdout
    assert notified is not None, result.stdout
    assert called.group(1) == notified.group(1)


def test_http_main_runs_with_the_quickstart() -> None:
    sample = readme_block("http.serve")
    assert sample.marker == "continues"
    result = run_block(sample)
    assert result.returncode == 0, result.stderr
    assert re.search(r"^counted robots over http://127\.0\.0\.1:\d+/rpc$", result.stdout, re.M)
    # Only the sample's own main ran: the quickstart's trio.run(main) was left out.
    assert "counted robots in activity" not in result.stdout


def test_websocket_main_runs_with_the_quickstart() -> None:
    sample = readme_block("websocket.serve")
    assert sample.marker == "continues"
    result = run_block(sample)
    assert result.returncode == 0, result.stderr
    assert re.search(r"^counted robots over ws://127\.0\.0\.1:\d+/$", result.stdout, re.M)


# -- the conformance suite as docs/transports.md sets it up ------------------------------------


def test_the_conformance_snippet_passes_under_pytest_as_configured(tmp_path: Path) -> None:
    """The test module and the pytest configuration docs/transports.md shows, run by pytest."""
    blocks = fenced_blocks(ROOT / "docs" / "transports.md")
    [module] = [b for b in blocks if "RpcConformance" in b.code and b.language == "python"]
    [config] = [b for b in blocks if b.language == "toml"]
    assert module.marker is None
    (tmp_path / "test_my_transport.py").write_text(module.code)
    (tmp_path / "pyproject.toml").write_text(config.code)
    env = dict(os.environ)
    source = str(Path(tether.__file__).resolve().parent.parent)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [source, env.get("PYTHONPATH")]))
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-W", "error"],
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
        cwd=tmp_path,
        env=env,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    passed = re.search(r"(\d+) passed", result.stdout)
    assert passed is not None, result.stdout
    assert int(passed[1]) >= 20  # the whole suite ran, not a stray test
    assert "skipped" not in result.stdout


# -- the test itself fails when a block breaks -----------------------------------------------


def test_a_broken_block_fails_and_the_traceback_points_into_the_doc() -> None:
    quickstart = python_blocks(ROOT / "README.md")[0]
    broken = quickstart._replace(code=quickstart.code.replace("== 3", "== 4"))
    assert broken.code != quickstart.code
    result = run_program(program_of(broken, [broken]), "README.md")
    assert result.returncode != 0
    assert "AssertionError" in result.stderr
    # The assert's line in README.md, not in some temporary file.
    line = quickstart.line + quickstart.code.splitlines().index(
        next(text for text in quickstart.code.splitlines() if "== 3" in text)
    )
    assert f'File "README.md", line {line}' in result.stderr


def test_a_continuation_fails_when_a_block_it_continues_breaks() -> None:
    sample = readme_block("http.serve")
    blocks = python_blocks(ROOT / "README.md")
    quickstart = blocks[0]
    broken_quickstart = quickstart._replace(code=quickstart.code.replace("return 3", "return 4"))
    blocks[0] = broken_quickstart
    result = run_program(program_of(sample, blocks), "README.md")
    assert result.returncode != 0
    assert "AssertionError" in result.stderr


def test_a_block_that_never_stops_its_server_fails() -> None:
    """What a block that forgets `nursery.cancel_scope.cancel()` does: it runs out of time."""
    program = (
        "import trio\n"
        "import tether\n"
        "from tether.transports import http\n"
        "\n"
        "async def main() -> None:\n"
        "    async with trio.open_nursery() as nursery:\n"
        "        await nursery.start(http.serve, tether.RpcManager(), '127.0.0.1', 0)\n"
        "\n"
        "trio.run(main)\n"
    )
    assert served_addresses(program) == [("127.0.0.1", 0)]
    with pytest.raises(subprocess.TimeoutExpired):
        run_program(program, "doc.md", timeout=2)  # killed when it expires


def test_markers_are_read_and_typos_refused(tmp_path: Path) -> None:
    doc = tmp_path / "doc.md"
    text = (
        "```python\nx = 1\n```\n\n"
        "<!-- fragment -->\n```python\nawait trio.sleep(x)\n```\n\n"
        "<!-- continues -->\n```python\nassert x == 1\n```\n"
    )
    [first, fragment, continuation] = python_blocks(doc, text)
    assert (first.marker, fragment.marker, continuation.marker) == (None, "fragment", "continues")
    assert (first.line, fragment.line, continuation.line) == (2, 7, 12)
    assert program_of(continuation, [first, fragment, continuation]) == (
        "\nx = 1\n" + "\n" * 9 + "assert x == 1\n"
    )
    # A fragment compiles with top-level await; the same line in a program does not.
    compile_block(fragment)
    with pytest.raises(SyntaxError):
        compile_block(fragment._replace(marker=None))
    with pytest.raises(ValueError, match="not a block marker"):
        python_blocks(doc, "<!-- fragmnet -->\n```python\nx = 1\n```\n")
    with pytest.raises(ValueError, match="nothing runs above it"):
        program_of(continuation, [fragment, continuation])


def test_served_addresses_are_found_in_every_form() -> None:
    code = (
        "nursery.start(http.serve, manager, '127.0.0.1', 0)\n"
        "functools.partial(websocket.serve, manager, '0.0.0.0', 8000, ipc=backend_ipc)\n"
        "http.serve(manager, host=HOST, port=0)\n"
    )
    assert served_addresses(code) == [("127.0.0.1", 0), ("0.0.0.0", 8000), ("HOST", 0)]


# -- links and names -------------------------------------------------------------------------

_LINK = re.compile(r"(?<!!)\[[^\]]*\]\((?P<target>[^)\s]+)\)")
_PATH = re.compile(r"`(?P<path>(?:[\w.-]+/)+[\w.-]+\.(?:py|md|toml))`")
_MD_NAME = re.compile(r"(?<![\w/.-])(?P<name>(?:[\w.-]+/)*[\w-]+\.md)\b")


def _slug(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped, spaces to dashes."""
    text = re.sub(r"[`*]|<[^>]+>", "", heading).strip().lower()
    return re.sub(r"[^\w\- ]", "", text).replace(" ", "-")


def _anchors(path: Path) -> set[str]:
    text = path.read_text(encoding="utf-8")
    # Headings inside code blocks are not headings.
    text = re.sub(r"^```.*?^```", "", text, flags=re.M | re.S)
    return {_slug(m[1]) for m in re.finditer(r"^#{1,6}\s+(.*)$", text, flags=re.M)}


@pytest.mark.parametrize("doc", DOCS, ids=lambda p: p.name)
def test_every_link_resolves(doc: Path) -> None:
    broken = []
    for match in _LINK.finditer(doc.read_text(encoding="utf-8")):
        target = match["target"]
        if re.match(r"[a-z]+:", target):  # https:, mailto:
            continue
        file, _, anchor = target.partition("#")
        resolved = (doc.parent / file).resolve() if file else doc
        if not resolved.is_file() or ROOT not in resolved.parents:
            broken.append(f"{target}: no such file in the repository")
        elif anchor and anchor not in _anchors(resolved):
            broken.append(f"{target}: no heading #{anchor} in {resolved.name}")
    assert broken == []


@pytest.mark.parametrize("doc", DOCS, ids=lambda p: p.name)
def test_every_file_named_is_in_the_repository(doc: Path) -> None:
    """A reader has the repository, not the maintainers' notes (DESIGN.md is not in it)."""
    text = doc.read_text(encoding="utf-8")
    missing = [
        match["path"]
        for match in _PATH.finditer(text)
        if not any((base / match["path"]).exists() for base in (ROOT, ROOT / "src", doc.parent))
    ]
    missing += [
        match["name"]
        for match in _MD_NAME.finditer(text)
        if not any((base / match["name"]).exists() for base in (ROOT, ROOT / "docs", doc.parent))
    ]
    assert missing == []


def test_slugs_follow_github() -> None:
    assert _slug("The codec") == "the-codec"
    assert _slug("WebSocket (`bench.websocket`)") == "websocket-benchwebsocket"
    assert _slug("Handshake and versions") == "handshake-and-versions"
    assert _slug("HTTP (`bench.http`, `bench.http_clients`)") == "http-benchhttp-benchhttp_clients"


def test_security_sample_refuses_a_wrong_credential() -> None:
    """The README's IPC authorization sample opens a session with the right
    credential and is refused, with `Unauthorized`, with a wrong one."""
    sample = readme_block("secure_ipc")
    assert sample.marker == "continues"
    result = run_block(sample)
    assert result.returncode == 0, result.stderr
    assert "refused: " in result.stdout
