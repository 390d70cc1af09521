"""A real Weaviate server for tests, built from source by ``scripts/setup-weaviate.sh`` (``make test`` runs it).

Started per test session on 127.0.0.1 with free ports for everything it opens (HTTP, gRPC, the cluster's
gossip and data ports, Raft and its internal RPC port; the debug/pprof listener off), a temporary data
path, no vectorizer modules, telemetry off, and stopped at the end with no process left behind. One server
allows anonymous access; a second one takes only an API key (``WEAVIATE_TEST_KEY``).

A server that is unavailable fails the tests when ``CI=true`` and skips them (with a warning) otherwise.

Fixtures: ``weaviate_server`` (session, anonymous), ``weaviate_auth_server`` (session, API key), and
``weaviate_factory`` (per test: start private servers, e.g. to kill one; all stopped after the test).
"""

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
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.servers.postgres import unavailable

WEAVIATE_VERSION = "v1.38.11"  # scripts/setup-weaviate.sh's default
WEAVIATE_TEST_KEY = "wv-test-key-7f3a9c"
_ROOT = Path(__file__).resolve().parents[2]


def binary() -> Path:
    """Where scripts/setup-weaviate.sh puts the server (``$VECFMT_WEAVIATE_BIN`` overrides)."""
    if os.environ.get("VECFMT_WEAVIATE_BIN"):
        return Path(os.environ["VECFMT_WEAVIATE_BIN"])
    cache = os.environ.get("VECFMT_CACHE") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache"), "vecfmt")
    return Path(cache) / "weaviate" / WEAVIATE_VERSION / "weaviate-server"


def _free_ports(n: int) -> list[int]:
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


class WeaviateServer:
    """One weaviate-server process; ``kill()`` and ``start()`` again keep its ports and data."""

    def __init__(self, *, api_key: str | None = None) -> None:
        self.bin = binary()
        self.api_key = api_key
        self.base = Path(tempfile.mkdtemp(prefix="vecfmt-weaviate-"))
        (self.base / "owner.pid").write_text(str(os.getpid()))
        self.log = self.base / "server.log"
        self.http, self.grpc, gossip, data, raft, raft_rpc = _free_ports(6)
        self.proc: subprocess.Popen[bytes] | None = None
        self.env = {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(self.base),
            "PERSISTENCE_DATA_PATH": str(self.base / "data"),
            "GRPC_PORT": str(self.grpc),
            "CLUSTER_HOSTNAME": "node1", "CLUSTER_BIND_ADDR": "127.0.0.1", "CLUSTER_ADVERTISE_ADDR": "127.0.0.1",
            "CLUSTER_GOSSIP_BIND_PORT": str(gossip), "CLUSTER_DATA_BIND_PORT": str(data),
            "RAFT_PORT": str(raft), "RAFT_INTERNAL_RPC_PORT": str(raft_rpc), "RAFT_BOOTSTRAP_EXPECT": "1",
            "DEFAULT_VECTORIZER_MODULE": "none", "ENABLE_MODULES": "", "DISABLE_TELEMETRY": "true",
            "API_BASED_MODULES_DISABLED": "true", "GO_PROFILING_DISABLE": "true",
            "PROMETHEUS_MONITORING_ENABLED": "false", "QUERY_DEFAULTS_LIMIT": "25", "LOG_LEVEL": "warning",
        }  # fmt: skip
        if api_key:
            self.env.update({"AUTHENTICATION_ANONYMOUS_ACCESS_ENABLED": "false",
                             "AUTHENTICATION_APIKEY_ENABLED": "true",
                             "AUTHENTICATION_APIKEY_ALLOWED_KEYS": api_key,
                             "AUTHENTICATION_APIKEY_USERS": "vecfmt"})  # fmt: skip
        else:
            self.env["AUTHENTICATION_ANONYMOUS_ACCESS_ENABLED"] = "true"
        _reap_stale(self.base.parent)

    def uri(self, collection: str, **options: Any) -> str:
        extra = "".join(f"&{k}={v}" for k, v in options.items())
        return f"weaviate://127.0.0.1:{self.http}?collection={collection}&grpc_port={self.grpc}{extra}"

    def start(self, timeout: float = 120) -> None:
        if not self.bin.exists():
            raise RuntimeError(f"no Weaviate server at {self.bin}: run scripts/setup-weaviate.sh (make test does)")
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen([str(self.bin), "--host", "127.0.0.1", "--port", str(self.http),
                                          "--scheme", "http"], env=self.env, cwd=self.base, stdin=subprocess.DEVNULL,
                                         stdout=log, stderr=log, start_new_session=True)  # fmt: skip
        (self.base / "server.pid").write_text(str(self.proc.pid))
        deadline = time.monotonic() + timeout
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(f"weaviate-server exited with {self.proc.returncode}:\n{self.tail()}")
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{self.http}/v1/.well-known/ready", timeout=2) as r:
                    if r.status == 200:
                        return
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"weaviate-server not ready after {timeout:.0f}s:\n{self.tail()}")
            time.sleep(0.2)

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
    for base in parent.glob("vecfmt-weaviate-*"):
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


def _started(api_key: str | None = None) -> WeaviateServer:
    server: WeaviateServer | None = None
    error = ""
    try:
        server = WeaviateServer(api_key=api_key)
        server.start()
    except Exception as exc:
        error = f"Weaviate could not start: {exc}"
        if server is not None:
            server.close()
    if error or server is None:  # outside the except block: no chained traceback
        unavailable(error)
    return server


@pytest.fixture(scope="session")
def weaviate_server() -> Iterator[WeaviateServer]:
    """A Weaviate server with anonymous access."""
    server = _started()
    try:
        yield server
    finally:
        server.close()


@pytest.fixture(scope="session")
def weaviate_auth_server() -> Iterator[WeaviateServer]:
    """A Weaviate server that takes only the API key ``WEAVIATE_TEST_KEY``."""
    server = _started(WEAVIATE_TEST_KEY)
    try:
        yield server
    finally:
        server.close()


@pytest.fixture
def weaviate_factory() -> Iterator[Callable[[], WeaviateServer]]:
    """Start private servers (to kill, restart); each is stopped and removed after the test."""
    servers: list[WeaviateServer] = []

    def start() -> WeaviateServer:
        server = _started()
        servers.append(server)
        return server

    try:
        yield start
    finally:
        for server in servers:
            server.close()


@pytest.fixture
def collection_name() -> str:
    """A fresh collection name per test."""
    return f"T{uuid.uuid4().hex[:12]}"
