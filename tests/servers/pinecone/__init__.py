"""A strict local stand-in for Pinecone's REST API, for tests with the real ``pinecone`` SDK (10.2).

No Pinecone server can run here, so this one speaks the API the way the service does: request
bodies validated against Pinecone's published OpenAPI files (``../shared/reference/pinecone-api/``,
loaded at test time, never copied into the project), the documented service limits, the real error
shapes and status codes, and response shapes taken from the SDK's own 2026-07 models (it decodes
strictly). Control plane and data plane share one base URL; an index's ``host`` is
``<url>/index/<name>`` (the SDK keeps a host's path and appends ``/vectors/upsert`` etc. to it).

Fixtures
--------
``pinecone_server`` (session): a running :class:`PineconeServer`.
``pinecone_index`` (per test): a fresh, uniquely named serverless vector index, dense, dimension 8,
    cosine (a :class:`PineconeIndex`); faults, stats lag and the request log are cleared before and
    after the test, and the index is deleted after it.
``make_pinecone_index`` (per test): a factory with :meth:`PineconeServer.create_index`'s arguments
    (the name is made unique unless given), for other dimensions, metrics, sparse or document indexes.

Connecting the SDK::

    pc = pinecone.Pinecone(api_key=server.api_key, host=server.url)   # control plane
    idx = pc.index(host=pinecone_index.host)                          # or pc.index(name=...)
    # or server.client() / server.index(name) for the same thing

Test API (:class:`PineconeServer`)
----------------------------------
``url``, ``api_key``
``create_index(name, dimension=None, metric="cosine", *, sparse=False, kind="vector", schema=None)
    -> host``: ``kind="vector"`` makes a legacy vector index (dense ``_values`` field of
    ``dimension``; ``sparse=True`` also accepts sparse values; ``dimension=None`` with ``sparse=True``
    is a sparse-only index); ``kind="document"`` takes ``schema`` (``{"fields": {...}}`` as the SDK
    sends it) and serves only the Documents API.
``delete_index(name)``, ``index_names()``
``records(index, namespace="") -> dict[id, Record]``: ``Record(values: np.ndarray float32 | None,
    sparse: {"indices": [...], "values": np.ndarray float32} | None, metadata: dict | None)``,
    values exactly as upserted (float32, bit for bit).
``documents(index, namespace) -> dict[_id, dict]``: stored documents (vector fields as float32 arrays).
``namespaces(index) -> list[str]``
``inject(kind, times=1, *, path_contains=None, method=None, retry_after=None, delay=0.5,
    fraction=None, seed=0) -> Fault``: the next ``times`` requests whose path contains
    ``path_contains`` (and method, if given) fail: ``kind`` is an HTTP status (429, 500, 503, ...;
    429 carries ``Retry-After: retry_after`` when given), ``"slow"`` (answer normally after
    ``delay`` seconds), ``"reset"`` (the connection closes before the request is processed: the
    SDK's transport retries it) or ``"drop"`` (the request IS processed, then the connection closes
    mid-response, after the headers and half the body: SDK 10.2 does NOT retry this, it raises
    ``PineconeConnectionError``, so a caller's own retry repeats a write that already happened).
    ``fraction`` (0..1, seeded) hits that share of matching requests instead, ``times`` then caps
    the total (``None``: no cap). ``Fault.hits`` counts what it did. Retry-related SDK facts: it
    retries 408/429/500/502/503/504 and connection errors 3 times (decorrelated jitter from 0.25 s,
    honouring ``Retry-After``), then raises ``RateLimitError`` / ``ServiceError``.
    SDK 10.2 also keeps a process-wide retry budget per host (retries stop while failures outweigh
    successes); the index fixtures refill it before each test.
``clear_faults()``
``lag_stats(on=True, *, requests=None)``: ``describe_index_stats`` and ``list_namespaces`` report
    counts as they were when lag was switched on (``requests=None``), or without the effects of
    the last ``requests`` data requests to that index (stats calls themselves not counted);
    ``settle()`` catches them up (and keeps lagging from there), ``lag_stats(False)`` stops.
Namespaces: ``describe_index_stats`` and ``list_namespaces`` name the default namespace
    ``__default__`` (as Pinecone's 2025+ APIs do); data requests accept ``""``, no namespace, or
    ``"__default__"`` for it. ``list_namespaces`` sends ``record_count`` as a string (an int64 in
    protobuf JSON), which the SDK decodes to an int.
Documents API: ``dense_vector`` and ``sparse_vector`` ``score_by`` clauses are served (exact);
    text/query_string/embed clauses are refused with a 400 that says so.
``request_log``: list of :class:`LoggedRequest` ``(method, path, status, index)``, in arrival order
    (faulted ones included, ``status=0`` for a dropped connection); ``clear_log()``.
``import_delay``: seconds a bulk import stays ``Pending``/``InProgress`` before it runs (default 0.3).
``reset()``: delete every index and import, clear faults, lag and the log.
``client(**kw) -> pinecone.Pinecone``, ``index(name) -> pinecone.Index``: SDK clients for this server.
"""

from __future__ import annotations

import threading
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import pytest

from tests.servers.pinecone.faults import Fault
from tests.servers.pinecone.store import Record, vector_schema

__all__ = ["Fault", "LoggedRequest", "PineconeIndex", "PineconeServer", "Record"]
API_KEY = "pc-test-key-5f3a"


@dataclass(frozen=True)
class LoggedRequest:
    method: str
    path: str  # as sent, without the query string
    status: int  # 0: the connection was dropped
    index: str | None  # the index a data-plane request addressed


@dataclass(frozen=True)
class PineconeIndex:
    """What ``pinecone_index`` / ``make_pinecone_index`` give a test."""

    name: str
    host: str
    dimension: int | None
    metric: str
    server: PineconeServer


class PineconeServer:
    """See the module docstring."""

    def __init__(self, api_key: str = API_KEY) -> None:
        from tests.servers.pinecone.app import PineconeState, start

        self._state = PineconeState(api_key)
        self._httpd, self._thread = start(self._state)
        self.url: str = self._state.url
        self.api_key: str = api_key

    def close(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()

    @property
    def request_log(self) -> list[LoggedRequest]:
        return self._state.log

    @property
    def import_delay(self) -> float:
        return self._state.import_delay

    @import_delay.setter
    def import_delay(self, seconds: float) -> None:
        self._state.import_delay = seconds

    @property
    def s3_endpoint(self) -> str | None:
        """Endpoint for ``s3://`` import URIs; ``None`` uses AWS_ENDPOINT_URL_S3 (set by ``s3_server``)."""
        return self._state.s3_endpoint

    @s3_endpoint.setter
    def s3_endpoint(self, endpoint: str | None) -> None:
        self._state.s3_endpoint = endpoint

    def create_index(
        self,
        name: str,
        dimension: int | None = None,
        metric: str = "cosine",
        *,
        sparse: bool = False,
        kind: str = "vector",
        schema: dict[str, Any] | None = None,
    ) -> str:
        if kind == "vector":
            if schema is None:
                if dimension is None and not sparse:
                    raise ValueError("a vector index needs a dimension, or sparse=True")
                schema = vector_schema(dimension, metric, sparse)
        elif kind != "document" or schema is None:
            raise ValueError("kind is 'vector' or 'document'; a document index needs a schema")
        body = {
            "name": name,
            "schema": schema,
            "deployment": {"deployment_type": "managed", "cloud": "aws", "region": "us-east-1"},
        }
        ix = self._state.create(body)
        if ix.kind != kind:
            self._state.indexes.pop(name, None)
            raise ValueError(f"schema makes a {ix.kind} index, not a {kind} one")
        return self._state.describe(ix)["host"]

    def delete_index(self, name: str) -> None:
        self._state.indexes.pop(name, None)

    def index_names(self) -> list[str]:
        return sorted(self._state.indexes)

    def records(self, index: str, namespace: str = "") -> dict[str, Record]:
        ix = self._state.get_index(index)
        with ix.lock:
            return dict(ix.namespaces.get(self._state._ns(namespace), {}))

    def documents(self, index: str, namespace: str) -> dict[str, dict[str, Any]]:
        ix = self._state.get_index(index)
        with ix.lock:
            return dict(ix.namespaces.get(namespace, {}))

    def namespaces(self, index: str) -> list[str]:
        ix = self._state.get_index(index)
        with ix.lock:
            return sorted(ns for ns, rows in ix.namespaces.items() if rows)

    def inject(
        self,
        kind: int | str,
        times: int | None = 1,
        *,
        path_contains: str | None = None,
        method: str | None = None,
        retry_after: float | None = None,
        delay: float = 0.5,
        fraction: float | None = None,
        seed: int = 0,
    ) -> Fault:
        return self._state.faults.add(Fault(kind, times, path_contains, method, retry_after, delay, fraction, seed))

    def clear_faults(self) -> None:
        self._state.faults.clear()

    def lag_stats(self, on: bool = True, *, requests: int | None = None) -> None:
        self._state.set_lag(None if not on else ("frozen", 0) if requests is None else ("requests", requests))

    def settle(self) -> None:
        self._state.set_lag(self._state.lag)

    def clear_log(self) -> None:
        self._state.log.clear()

    def reset(self) -> None:
        with self._state.lock:
            for job in self._state.imports.values():
                if job.timer:
                    job.timer.cancel()
            self._state.imports.clear()
            self._state.indexes.clear()
        self.clear_faults()
        self.lag_stats(False)
        self.clear_log()
        self.import_delay = 0.3

    def client(self, **kwargs: Any) -> Any:
        import pinecone

        return pinecone.Pinecone(**{"api_key": self.api_key, "host": self.url, **kwargs})

    def index(self, name: str) -> Any:
        return self.client().index(host=f"{self.url}/index/{name}")


@pytest.fixture(scope="session")
def pinecone_server() -> Iterator[PineconeServer]:
    """The test Pinecone server; fails (CI=true) or skips when Pinecone's API files are not beside the clone."""
    from tests.servers.pinecone.validation import load_spec, spec_dir
    from tests.servers.postgres import unavailable

    try:
        load_spec("data"), load_spec("control")
    except OSError as exc:
        unavailable(f"Pinecone's OpenAPI files are not at {spec_dir()} (../shared/reference beside the clone): {exc}")
    server = PineconeServer()
    try:
        yield server
    finally:
        server.close()


_lock = threading.Lock()


@pytest.fixture
def make_pinecone_index(pinecone_server: PineconeServer) -> Iterator[Callable[..., PineconeIndex]]:
    """Factory: ``make_pinecone_index(dimension=8, metric="cosine", *, name=None, sparse=False, kind="vector",
    schema=None)`` -> a fresh :class:`PineconeIndex`; deleted after the test, faults/lag/log cleared."""
    made: list[str] = []
    _reset_sdk_retry_budget()
    pinecone_server.clear_faults()
    pinecone_server.lag_stats(False)
    pinecone_server.clear_log()

    def make(
        dimension: int | None = None,
        metric: str = "cosine",
        *,
        name: str | None = None,
        sparse: bool = False,
        kind: str = "vector",
        schema: dict[str, Any] | None = None,
    ) -> PineconeIndex:
        name = name or unique_name()
        host = pinecone_server.create_index(name, dimension, metric, sparse=sparse, kind=kind, schema=schema)
        made.append(name)
        return PineconeIndex(name, host, dimension, metric, pinecone_server)

    yield make
    pinecone_server.clear_faults()
    pinecone_server.lag_stats(False)
    for name in made:
        pinecone_server.delete_index(name)


def _reset_sdk_retry_budget() -> None:
    """SDK 10.2 keeps a process-wide retry budget per host (gRFC A6: retries stop once failures outweigh
    successes); every index here is on 127.0.0.1, so one test's injected faults would starve the next
    test's retries. Each test starts with a full budget."""
    try:
        from pinecone._internal.http_client import get_budget_registry

        get_budget_registry()._reset()
    except (ImportError, AttributeError):  # another SDK version: nothing to reset
        pass


@pytest.fixture
def pinecone_index(make_pinecone_index: Callable[..., PineconeIndex]) -> PineconeIndex:
    """A fresh dense serverless index: dimension 8, cosine."""
    return make_pinecone_index(dimension=8)


def unique_name(prefix: str = "t") -> str:
    """A valid Pinecone index name (lowercase alphanumerics and hyphens, at most 45 chars)."""
    return f"{prefix}-{uuid.uuid4().hex[:12]}"
