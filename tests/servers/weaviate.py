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

import os
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.servers.process import ServerProcess, free_ports, private_servers, started

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


class WeaviateServer(ServerProcess):
    """One weaviate-server process; ``kill()`` and ``start()`` again keep its ports and data."""

    name = "weaviate-server"
    prefix = "vecfmt-weaviate-"

    def __init__(self, *, api_key: str | None = None) -> None:
        super().__init__()
        self.bin = binary()
        self.api_key = api_key
        self.http, self.grpc, gossip, data, raft, raft_rpc = free_ports(6)
        self.env.update({
            "PERSISTENCE_DATA_PATH": str(self.base / "data"),
            "GRPC_PORT": str(self.grpc),
            "CLUSTER_HOSTNAME": "node1", "CLUSTER_BIND_ADDR": "127.0.0.1", "CLUSTER_ADVERTISE_ADDR": "127.0.0.1",
            "CLUSTER_GOSSIP_BIND_PORT": str(gossip), "CLUSTER_DATA_BIND_PORT": str(data),
            "RAFT_PORT": str(raft), "RAFT_INTERNAL_RPC_PORT": str(raft_rpc), "RAFT_BOOTSTRAP_EXPECT": "1",
            "DEFAULT_VECTORIZER_MODULE": "none", "ENABLE_MODULES": "", "DISABLE_TELEMETRY": "true",
            "API_BASED_MODULES_DISABLED": "true", "GO_PROFILING_DISABLE": "true",
            "PROMETHEUS_MONITORING_ENABLED": "false", "QUERY_DEFAULTS_LIMIT": "25", "LOG_LEVEL": "warning",
        })  # fmt: skip
        if api_key:
            self.env.update({"AUTHENTICATION_ANONYMOUS_ACCESS_ENABLED": "false",
                             "AUTHENTICATION_APIKEY_ENABLED": "true",
                             "AUTHENTICATION_APIKEY_ALLOWED_KEYS": api_key,
                             "AUTHENTICATION_APIKEY_USERS": "vecfmt"})  # fmt: skip
        else:
            self.env["AUTHENTICATION_ANONYMOUS_ACCESS_ENABLED"] = "true"

    def uri(self, collection: str, **options: Any) -> str:
        extra = "".join(f"&{k}={v}" for k, v in options.items())
        return f"weaviate://127.0.0.1:{self.http}?collection={collection}&grpc_port={self.grpc}{extra}"

    def command(self) -> list[str]:
        return [str(self.bin), "--host", "127.0.0.1", "--port", str(self.http), "--scheme", "http"]

    def ready_url(self) -> str:
        return f"http://127.0.0.1:{self.http}/v1/.well-known/ready"

    def start(self, timeout: float = 120) -> None:
        if not self.bin.exists():
            raise RuntimeError(f"no Weaviate server at {self.bin}: run scripts/setup-weaviate.sh (make test does)")
        super().start(timeout)


def _started(api_key: str | None = None) -> WeaviateServer:
    return started(lambda: WeaviateServer(api_key=api_key), "Weaviate")


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
    with private_servers(WeaviateServer, "Weaviate") as start:
        yield start


@pytest.fixture
def collection_name() -> str:
    """A fresh collection name per test."""
    return f"T{uuid.uuid4().hex[:12]}"
