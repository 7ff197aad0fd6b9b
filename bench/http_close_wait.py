"""Open file descriptors of an HTTP server under connection churn (CLOSE_WAIT residue).

Run from the repository root::

    .venv/bin/python -m bench.http_close_wait                 # 30 s of churn
    .venv/bin/python -m bench.http_close_wait --seconds 10 --rate 50

The server (`tether.transports.http.serve`, default settings: keep-alive
timeout 75 s) runs in a child process, so that its descriptors can be counted
in /proc/<pid>/fd. The parent opens `--rate` short-lived connections a second
for `--seconds`: each sends `GET /rpc/health`, reads the answer and closes.
Every second it prints the server's open descriptors and how many of its
sockets are in CLOSE_WAIT (the client closed, the server has not), from
/proc/net/tcp. A server that closes a connection at its client's FIN stays
flat; one that waits for the keep-alive timeout grows by `--rate` a second.
Linux only.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys

import trio

_CLOSE_WAIT = "08"


def _serve() -> None:
    """The child: serve on 127.0.0.1, print the port, run until killed."""
    from tether import RpcManager
    from tether.transports import http

    async def main() -> None:
        async with trio.open_nursery() as nursery:
            url = await nursery.start(http.serve, RpcManager(), "127.0.0.1", 0)
            print(url.rsplit(":", 1)[1].split("/")[0], flush=True)

    trio.run(main)


def _open_fds(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def _close_wait(port: int) -> int:
    count = 0
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with open(table) as lines:
            next(lines)
            for line in lines:
                fields = line.split()
                if int(fields[1].rsplit(":", 1)[1], 16) == port and fields[3] == _CLOSE_WAIT:
                    count += 1
    return count


async def _one(port: int) -> None:
    stream = await trio.open_tcp_stream("127.0.0.1", port)
    async with stream:
        await stream.send_all(b"GET /rpc/health HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        received = b""
        while not received.endswith(b"\r\n0\r\n\r\n"):  # the end of the chunked answer
            chunk = await stream.receive_some()
            if not chunk:
                break
            received += chunk


async def _churn(pid: int, port: int, seconds: int, rate: int) -> None:
    print(f"{'s':>3} {'connections':>11} {'open fds':>8} {'CLOSE_WAIT':>10}")
    made = 0
    peak = 0
    async with trio.open_nursery() as nursery:
        for second in range(seconds + 1):
            fds = _open_fds(pid)
            peak = max(peak, fds)
            print(f"{second:>3} {made:>11} {fds:>8} {_close_wait(port):>10}", flush=True)
            if second == seconds:
                break
            for _ in range(rate):
                nursery.start_soon(_one, port)
                made += 1
                await trio.sleep(1 / rate)
    print(f"peak open fds: {peak}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--seconds", type=int, default=30)
    parser.add_argument("--rate", type=int, default=20, help="connections a second")
    parser.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        _serve()
        return
    child = subprocess.Popen(
        [sys.executable, "-m", "bench.http_close_wait", "--serve"],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert child.stdout is not None
        port = int(child.stdout.readline())
        trio.run(_churn, child.pid, port, args.seconds, args.rate)
    finally:
        child.kill()
        child.wait()


if __name__ == "__main__":
    main()
