"""A real Chroma server for tests: ``chroma run`` from the installed ``chromadb`` package (its Rust server).

Started once per test session on 127.0.0.1 with a free port and a temporary data path, ready once its
heartbeat answers, and stopped at the end with no process left behind (servers of killed sessions are
reaped by the next one). A server that cannot start fails the tests when ``CI=true`` and skips them (with
a warning) otherwise.

Fixtures: ``chroma_server`` (session) and ``chroma_factory`` (per test: private servers, e.g. to kill one).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.servers.postgres import unavailable


def executable() -> Path:
    """The ``chroma`` command installed beside this Python (``$VECFMT_CHROMA_BIN`` overrides)."""
    if os.environ.get("VECFMT_CHROMA_BIN"):
        return Path(os.environ["VECFMT_CHROMA_BIN"])
    return Path(sys.executable).parent / "chroma"


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class ChromaServer:
    """One ``chroma run`` process; ``kill()`` and ``start()`` again keep its port and data."""

    def __init__(self) -> None:
        self.bin = executable()
        self.base = Path(tempfile.mkdtemp(prefix="vecfmt-chroma-"))
        (self.base / "owner.pid").write_text(str(os.getpid()))
        self.log = self.base / "server.log"
        self.port = _free_port()
        self.proc: subprocess.Popen[bytes] | None = None
        self.env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(self.base),
                    "ANONYMIZED_TELEMETRY": "False", "RUST_LOG": "warn", "NO_COLOR": "1"}  # fmt: skip
        _reap_stale(self.base.parent)

    def uri(self, collection: str, **options: Any) -> str:
        extra = "".join(f"&{k}={v}" for k, v in options.items())
        return f"chroma://127.0.0.1:{self.port}?collection={collection}{extra}"

    def start(self, timeout: float = 60) -> None:
        if not self.bin.exists():
            raise RuntimeError(f"no chroma command at {self.bin}: pip install 'vecfmt[chroma]'")
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen([str(self.bin), "run", "--path", str(self.base / "data"), "--host",
                                          "127.0.0.1", "--port", str(self.port)], env=self.env, cwd=self.base,
                                         stdin=subprocess.DEVNULL, stdout=log, stderr=log,
                                         start_new_session=True)  # fmt: skip
        (self.base / "server.pid").write_text(str(self.proc.pid))
        deadline = time.monotonic() + timeout
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(f"chroma run exited with {self.proc.returncode}:\n{self.tail()}")
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/api/v2/heartbeat", timeout=2) as r:
                    if r.status == 200:
                        return
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"chroma run not ready after {timeout:.0f}s:\n{self.tail()}")
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


def _reap_stale(parent: Path) -> None:
    """Stop servers left behind by test sessions that were killed."""
    for base in parent.glob("vecfmt-chroma-*"):
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


def _started() -> ChromaServer:
    server: ChromaServer | None = None
    error = ""
    try:
        server = ChromaServer()
        server.start()
    except Exception as exc:
        error = f"Chroma could not start: {exc}"
        if server is not None:
            server.close()
    if error or server is None:  # outside the except block: no chained traceback
        unavailable(error)
    return server


@pytest.fixture(scope="session")
def chroma_server() -> Iterator[ChromaServer]:
    server = _started()
    try:
        yield server
    finally:
        server.close()


@pytest.fixture
def chroma_factory() -> Iterator[Callable[[], ChromaServer]]:
    """Start private servers (to kill, restart); each is stopped and removed after the test."""
    servers: list[ChromaServer] = []

    def start() -> ChromaServer:
        server = _started()
        servers.append(server)
        return server

    try:
        yield start
    finally:
        for server in servers:
            server.close()


@pytest.fixture
def chroma_collection() -> str:
    """A fresh collection name per test."""
    return f"t{uuid.uuid4().hex[:12]}"
