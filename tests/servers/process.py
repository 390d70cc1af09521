"""A real server process the tests start and stop (Weaviate, Chroma): the parts they share.

Each server gets a temporary folder of its own (``owner.pid``: the test session; ``server.pid``; the log),
runs in a process group of its own so that stopping it stops its children, is ready once an HTTP URL
answers 200, and is stopped at the end. Servers of test sessions that were killed are reaped by the next
session that starts one of the same kind."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TypeVar

from tests.servers.postgres import unavailable


def free_ports(n: int) -> list[int]:
    socks = []
    try:
        for _ in range(n):  # all held open at once, so the n ports differ
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sock.bind(("127.0.0.1", 0))
            socks.append(sock)
        return [int(s.getsockname()[1]) for s in socks]
    finally:
        for sock in socks:
            sock.close()


class ServerProcess:
    """One server process; ``kill()`` and ``start()`` again keep its folder (its ports and data)."""

    name = "server"  # for messages
    prefix = "vecfmt-server-"  # of its temporary folder

    def __init__(self) -> None:
        self.base = Path(tempfile.mkdtemp(prefix=self.prefix))
        (self.base / "owner.pid").write_text(str(os.getpid()))
        self.log = self.base / "server.log"
        self.proc: subprocess.Popen[bytes] | None = None
        self.env: dict[str, str] = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(self.base)}
        reap_stale(self.base.parent, self.prefix)

    def command(self) -> list[str]:
        raise NotImplementedError

    def ready_url(self) -> str:
        raise NotImplementedError

    def start(self, timeout: float = 60) -> None:
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen(self.command(), env=self.env, cwd=self.base, stdin=subprocess.DEVNULL,
                                         stdout=log, stderr=log, start_new_session=True)  # fmt: skip
        (self.base / "server.pid").write_text(str(self.proc.pid))
        deadline = time.monotonic() + timeout
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.name} exited with {self.proc.returncode}:\n{self.tail()}")
            try:
                with urllib.request.urlopen(self.ready_url(), timeout=2) as answer:
                    if answer.status == 200:
                        return
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"{self.name} not ready after {timeout:.0f}s:\n{self.tail()}")
            time.sleep(0.1)

    def kill(self) -> None:
        """SIGKILL, as the OOM killer would end it."""
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=30)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(timeout=30)

    def close(self) -> None:
        self.stop()
        shutil.rmtree(self.base, ignore_errors=True)

    def tail(self) -> str:
        return self.log.read_text(errors="replace")[-3000:] if self.log.exists() else ""


def reap_stale(parent: Path, prefix: str) -> None:
    """Stop servers left behind by test sessions that were killed."""
    for base in parent.glob(f"{prefix}*"):
        try:
            owner = int((base / "owner.pid").read_text())
            os.kill(owner, 0)
            continue  # its session is still running
        except ProcessLookupError:
            pass
        except (OSError, ValueError):
            continue
        with contextlib.suppress(OSError, ValueError):
            os.killpg(int((base / "server.pid").read_text()), signal.SIGKILL)
        shutil.rmtree(base, ignore_errors=True)


Server = TypeVar("Server", bound=ServerProcess)


def started(make: Callable[[], Server], what: str) -> Server:
    """A started server, or (it could not start) the tests fail under CI=true and skip otherwise."""
    server: Server | None = None
    error = ""
    try:
        server = make()
        server.start()
    except Exception as exc:
        error = f"{what} could not start: {exc}"
        if server is not None:
            server.close()
    if error or server is None:  # outside the except block: no chained traceback
        unavailable(error)
    return server


@contextlib.contextmanager
def private_servers(make: Callable[[], Server], what: str) -> Iterator[Callable[[], Server]]:
    """A factory of servers for one test (to kill, restart); each is stopped and removed after it."""
    servers: list[Server] = []

    def start() -> Server:
        server = started(make, what)
        servers.append(server)
        return server

    try:
        yield start
    finally:
        for server in servers:
            server.close()
