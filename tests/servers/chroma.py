"""A real Chroma server for tests: ``chroma run`` from the installed ``chromadb`` package (its Rust server).

Started once per test session on 127.0.0.1 with a free port and a temporary data path, ready once its
heartbeat answers, and stopped at the end with no process left behind (servers of killed sessions are
reaped by the next one). A server that cannot start fails the tests when ``CI=true`` and skips them (with
a warning) otherwise.

Fixtures: ``chroma_server`` (session) and ``chroma_factory`` (per test: private servers, e.g. to kill one).
"""

from __future__ import annotations

import os
import sys
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.servers.process import ServerProcess, free_ports, private_servers, started


def executable() -> Path:
    """The ``chroma`` command installed beside this Python (``$VECFMT_CHROMA_BIN`` overrides)."""
    if os.environ.get("VECFMT_CHROMA_BIN"):
        return Path(os.environ["VECFMT_CHROMA_BIN"])
    return Path(sys.executable).parent / "chroma"


class ChromaServer(ServerProcess):
    """One ``chroma run`` process; ``kill()`` and ``start()`` again keep its port and data."""

    name = "chroma run"
    prefix = "vecfmt-chroma-"

    def __init__(self) -> None:
        super().__init__()
        self.bin = executable()
        (self.port,) = free_ports(1)
        self.env.update({"ANONYMIZED_TELEMETRY": "False", "RUST_LOG": "warn", "NO_COLOR": "1"})

    def uri(self, collection: str, **options: Any) -> str:
        extra = "".join(f"&{k}={v}" for k, v in options.items())
        return f"chroma://127.0.0.1:{self.port}?collection={collection}{extra}"

    def command(self) -> list[str]:
        return [str(self.bin), "run", "--path", str(self.base / "data"), "--host", "127.0.0.1", "--port",
                str(self.port)]

    def ready_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/api/v2/heartbeat"

    def start(self, timeout: float = 60) -> None:
        if not self.bin.exists():
            raise RuntimeError(f"no chroma command at {self.bin}: pip install 'vecfmt[chroma]'")
        super().start(timeout)


@pytest.fixture(scope="session")
def chroma_server() -> Iterator[ChromaServer]:
    server = started(ChromaServer, "Chroma")
    try:
        yield server
    finally:
        server.close()


@pytest.fixture
def chroma_factory() -> Iterator[Callable[[], ChromaServer]]:
    """Start private servers (to kill, restart); each is stopped and removed after the test."""
    with private_servers(ChromaServer, "Chroma") as start:
        yield start


@pytest.fixture
def chroma_collection() -> str:
    """A fresh collection name per test."""
    return f"t{uuid.uuid4().hex[:12]}"
