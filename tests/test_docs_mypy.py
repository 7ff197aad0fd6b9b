"""The README's typing advice holds: `mypy --strict` is clean on code that follows it.

A user module declares an RPC interface, IPC channels and their impls the way
the README says (operations with `...` bodies, and the module's
`# mypy: disable-error-code="empty-body"`), and calls them through
`get_client` and `proxy`. mypy --strict must find nothing in it, nor in the
README's quickstart and IPC sample as written. Two variants show that the check
can fail: the advice the README used to give (`@abc.abstractmethod` on every
operation) makes each `get_client`/`proxy` a `type-abstract` error, and a
result used as the wrong type is an error, so the clients are typed, not `Any`.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

from test_docs import ROOT, python_blocks

import tether

USER_MODULE = """\
# mypy: disable-error-code="empty-body"
import attrs
import trio

import tether
from tether.transports import memory


@attrs.frozen
class Robot:
    name: str
    x: float


class RobotsRpc(tether.RpcInterface):
    interface_name = "Robots"
    interface_version = "1.0.0"

    async def count_robots(self, kind: str) -> int: ...
    async def robot(self, name: str) -> Robot: ...


class RobotsImpl(RobotsRpc):
    async def count_robots(self, kind: str) -> int:
        return 3

    async def robot(self, name: str) -> Robot:
        return Robot(name, 0.0)


class MoverIpc(tether.IpcInterface):
    channel_name = "mover"
    version = "1.0.0"

    async def move(self, name: str, dx: float) -> Robot: ...


class MovedEvents(tether.NotificationInterface):
    channel_name = "moved"

    async def moved(self, robot: Robot) -> None: ...


class AskIpc(tether.IpcInterface):
    channel_name = "ask"
    version = "1.0.0"

    async def confirm(self, question: str) -> bool: ...


class MoverHandler(tether.IpcHandler, MoverIpc):
    async def move(self, name: str, dx: float) -> Robot:
        session = tether.current_session()
        if not await session.proxy(AskIpc).confirm(f"move {name}?"):
            return Robot(name, 0.0)
        robot = Robot(name, dx)
        await session.notifier(MovedEvents).moved(robot)
        return robot


class Asker(tether.IpcHandler, AskIpc):
    async def confirm(self, question: str) -> bool:
        return True


class View(tether.NotificationHandler, MovedEvents):
    async def moved(self, robot: Robot) -> None:
        print(robot.name, robot.x)


manager = tether.RpcManager()
manager.register_impl(RobotsRpc, RobotsImpl)
backend_ipc = tether.BackendIpc()
backend_ipc.register(MoverHandler)


async def main() -> None:
    async with memory.connect(manager, interfaces=[RobotsRpc]) as backend:
        robots = backend.get_client(RobotsRpc)
        count: int = await robots.count_robots("arm")
        robot: Robot = await robots.robot("r1")
        frontend = tether.RpcManager()
        frontend.initialize_client([RobotsRpc], backend)
        routed: int = await frontend.get_client(RobotsRpc).count_robots("arm")
        print(count, robot.name, routed)
    async with memory.connect_ipc(backend_ipc, channels=[MoverIpc]) as frontend_ipc:
        frontend_ipc.register(Asker)
        frontend_ipc.add_notification_handler(View())
        mover = frontend_ipc.proxy(MoverIpc)
        moved: Robot = await mover.move("r1", 1.5)
        print(moved.x)


trio.run(main)
"""

_ERROR = re.compile(r"^(?P<file>[\w.]+):(?P<line>\d+): error: (?P<message>.*)\[(?P<code>[\w-]+)\]$")


def abstract_variant(module: str) -> str:
    """`module` with the advice the README used to give: abstract operations, no pragma."""
    module = module.replace('# mypy: disable-error-code="empty-body"', "import abc")
    return re.sub(
        r"^(    async def .*: \.\.\.)$", r"    @abc.abstractmethod\n\1", module, flags=re.M
    )


def mistyped_variant(module: str) -> str:
    """`module` with a client's result used as the wrong type."""
    return module.replace("count: int = await", "count: str = await")


def run_mypy(tmp_path: Path, modules: dict[str, str]) -> dict[str, list[tuple[int, str, str]]]:
    """mypy --strict on `modules` (name -> source); the errors of each: (line, code, message)."""
    for name, source in modules.items():
        (tmp_path / f"{name}.py").write_text(source)
    env = dict(os.environ)
    # The tether under test, even where another one is installed.
    env["MYPYPATH"] = str(Path(tether.__file__).resolve().parent.parent)
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "mypy",
            "--strict",
            "--no-color-output",
            "--cache-dir",
            str(tmp_path / ".mypy_cache"),
            *(f"{name}.py" for name in modules),
        ],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=tmp_path,  # none of the repository's configuration
        env=env,
        check=False,
    )
    errors: dict[str, list[tuple[int, str, str]]] = {name: [] for name in modules}
    for line in result.stdout.splitlines():
        match = _ERROR.match(line)
        if match is not None:
            name = match["file"].removesuffix(".py")
            errors[name].append((int(match["line"]), match["code"], match["message"].strip()))
    # Exit 1 means errors were found, and then they must be ones this parser read.
    found = any(errors.values())
    assert result.returncode == (1 if found else 0), result.stdout + result.stderr
    return errors


def test_the_typing_advice_is_clean_and_its_opposite_is_not(tmp_path: Path) -> None:
    readme = python_blocks(ROOT / "README.md")
    [quickstart] = [
        b
        for b in readme
        if "memory.connect(" in b.code
        and b.marker is None
        and "tether.Stream[" not in b.code
        and "RetryPolicy" not in b.code
    ]
    [ipc_sample] = [b for b in readme if "memory.connect_ipc(backend_ipc" in b.code]
    [streams_sample] = [b for b in readme if "tether.open_stream(" in b.code]
    abstract = abstract_variant(USER_MODULE)
    errors = run_mypy(
        tmp_path,
        {
            "user": USER_MODULE,
            "readme_quickstart": quickstart.code,
            "readme_ipc": ipc_sample.code,
            "readme_streams": streams_sample.code,
            "abstract": abstract,
            "mistyped": mistyped_variant(USER_MODULE),
        },
    )
    # The advice: clean, and so are the README's samples as pasted.
    assert errors["user"] == []
    assert errors["readme_quickstart"] == []
    assert errors["readme_ipc"] == []
    assert errors["readme_streams"] == []
    # The old advice: every class handed where a type[T] is expected is refused.
    lines = abstract.splitlines()
    refused = {line for line, code, _ in errors["abstract"] if code == "type-abstract"}
    calls = {
        number
        for number, text in enumerate(lines, 1)
        if re.search(r"\.(get_client|proxy|notifier|register_impl)\(", text)
    }
    assert calls, abstract
    assert calls <= refused, errors["abstract"]
    # The clients are typed: a result used as the wrong type is caught.
    assert [(code, "str") for _, code, message in errors["mistyped"] if "str" in message] == [
        ("assignment", "str")
    ], errors["mistyped"]


def test_the_readme_gives_the_advice_that_is_checked() -> None:
    text = " ".join((ROOT / "README.md").read_text().split())  # lines wrapped anywhere
    assert 'Put `# mypy: disable-error-code="empty-body"` at the top' in text
    assert "Do not make operations `@abc.abstractmethod`" in text
    # The module checked above follows it: nothing abstract, the pragma on top.
    assert USER_MODULE.startswith('# mypy: disable-error-code="empty-body"\n')
    assert "abstractmethod" not in USER_MODULE
