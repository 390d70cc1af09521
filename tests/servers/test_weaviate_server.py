"""The Weaviate test server itself: built from source, listening on loopback only, ready, asking for the
API key when it should, and leaving no process behind."""

from __future__ import annotations

import json
import os
import socket
import urllib.error
import urllib.request

import pytest

from tests.servers.weaviate import WEAVIATE_TEST_KEY, WEAVIATE_VERSION, WeaviateServer, binary


def _get(port: int, path: str, key: str | None = None) -> tuple[int, dict]:
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    request = urllib.request.Request(f"http://127.0.0.1:{port}{path}", headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            body = response.read()
            return response.status, json.loads(body) if body else {}
    except urllib.error.HTTPError as exc:
        return exc.code, {}


def test_server_is_the_built_version_and_ready(weaviate_server):
    assert binary().exists()
    status, meta = _get(weaviate_server.http, "/v1/meta")
    assert status == 200 and meta["version"] == WEAVIATE_VERSION.lstrip("v")
    assert meta.get("modules") in ({}, None)  # no vectorizer modules
    assert _get(weaviate_server.http, "/v1/.well-known/ready")[0] == 200


def test_server_listens_on_loopback_only(weaviate_server):
    for port in (weaviate_server.http, weaviate_server.grpc):
        with socket.create_connection(("127.0.0.1", port), timeout=5):
            pass
    with open("/proc/net/tcp") as f:
        listening = f.read().splitlines()[1:]
    ours = {weaviate_server.http, weaviate_server.grpc}
    for line in listening:
        local, state = line.split()[1], line.split()[3]
        address, port = local.split(":")
        if state == "0A" and int(port, 16) in ours:  # LISTEN
            assert address == "0100007F", line  # 127.0.0.1


def test_auth_server_asks_for_the_key(weaviate_auth_server):
    assert _get(weaviate_auth_server.http, "/v1/schema")[0] == 401
    assert _get(weaviate_auth_server.http, "/v1/schema", WEAVIATE_TEST_KEY)[0] == 200


def test_a_closed_server_leaves_no_process():
    if not binary().exists():
        pytest.skip("no Weaviate binary (scripts/setup-weaviate.sh)")
    server = WeaviateServer()
    server.start()
    pid = server.proc.pid
    server.close()
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)
    assert not server.base.exists()
