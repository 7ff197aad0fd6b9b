"""Serving the browser editor: the IPC backend, the page, its module and the client.

`serve` runs tether's HTTP server with the IPC editor's backend and three
static mounts, all on one origin; `build_page` compiles the page's TypeScript
with the client package's own compiler.
"""

from __future__ import annotations

import functools
import shutil
import subprocess
from pathlib import Path

import trio

from tether.transports import http

from ..ipc_editor.backend import make_backend

__all__ = [
    "BUILD",
    "CLIENT_DIST",
    "HERE",
    "ROOT",
    "SITE",
    "STUBS",
    "build_page",
    "serve",
    "static_mounts",
]

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent.parent
#: The page's HTML, served at `/`.
SITE = HERE / "site"
#: The page's compiled module (`build_page` writes it; not committed), served at `/app`.
BUILD = HERE / "build"
#: The generated stubs (committed): `tether codegen typescript examples.ipc_editor.interface`.
STUBS = HERE / "src" / "editor_stubs.ts"
#: The TypeScript client, built by `make ts`, served at `/client`.
CLIENT = ROOT / "clients" / "typescript"
CLIENT_DIST = CLIENT / "dist"
#: The client's pinned compiler, installed by `npm ci` in `clients/typescript`.
TSC = CLIENT / "node_modules" / "typescript" / "bin" / "tsc"


def static_mounts() -> dict[str, Path]:
    """What the server serves besides the backend: URL prefix -> folder.

    Raises:
        FileNotFoundError: The client or the page is not built yet; the
            message says which command builds it.
    """
    if not (CLIENT_DIST / "index.js").is_file():
        raise FileNotFoundError(
            f"the TypeScript client is not built: {CLIENT_DIST} has no index.js; "
            "run `make ts` (or `cd clients/typescript && npm ci && npm run build`)"
        )
    if not (BUILD / "editor.js").is_file():
        raise FileNotFoundError(
            f"the page is not built: {BUILD} has no editor.js; run `make demo-browser`, "
            "or `python -m examples.browser_editor --build`"
        )
    return {"/": SITE, "/app": BUILD, "/client": CLIENT_DIST}


def build_page(*, timeout: float = 120.0) -> None:
    """Compile the page's TypeScript (`src/`) into `build/`, type-checking it against the client.

    Raises:
        FileNotFoundError: node, the compiler or the built client is missing.
        RuntimeError: tsc found errors (its output is in the message).
    """
    node = shutil.which("node")
    if node is None:
        raise FileNotFoundError("node is not on PATH: install Node.js 20 or later")
    if not TSC.is_file():
        raise FileNotFoundError(
            f"no TypeScript compiler at {TSC}: run `cd {CLIENT} && npm ci` (or `make ts`)"
        )
    if not (CLIENT_DIST / "index.d.ts").is_file():
        raise FileNotFoundError(
            f"the page type-checks against the built client, and {CLIENT_DIST} has no "
            "index.d.ts: run `make ts`"
        )
    done = subprocess.run(
        [node, str(TSC), "-p", str(HERE / "tsconfig.json")],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    if done.returncode != 0:
        raise RuntimeError(f"tsc could not build the page:\n{done.stdout}{done.stderr}")


async def serve(
    host: str = "127.0.0.1",
    port: int = 0,
    *,
    task_status: trio.TaskStatus[str] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Serve the editor's backend and page on `host:port` until cancelled.

    `task_status.started` gets the page's URL (`http://host:port/`).
    """
    serving = functools.partial(
        http.serve, None, host, port, ipc=make_backend(), static=static_mounts()
    )
    async with trio.open_nursery() as nursery:
        rpc_url: str = await nursery.start(serving)
        # http.serve reports its RPC prefix (http://host:port/rpc); the page is at the root.
        task_status.started(rpc_url.removesuffix("/rpc") + "/")
