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
    ``delay`` seconds), or ``"drop"`` (the connection closes mid-response, after the status line
    and part of the body). ``fraction`` (0..1, seeded) hits that share of matching requests
    instead, ``times`` then caps the total (``None``: no cap). ``Fault.hits`` counts what it did.
``clear_faults()``
``lag_stats(on=True, *, requests=None)``: ``describe_index_stats`` and ``list_namespaces`` report
    counts as they were when lag was switched on (``requests=None``) or as of ``requests`` data
    requests ago; ``settle()`` catches them up (and keeps lagging from there), ``lag_stats(False)``
    stops.
``request_log``: list of :class:`LoggedRequest` ``(method, path, status, index)``, in arrival order
    (faulted ones included, ``status=0`` for a dropped connection); ``clear_log()``.
``import_delay``: seconds a bulk import stays ``Pending``/``InProgress`` before it runs (default 0.3).
``reset()``: delete every index and import, clear faults, lag and the log.
``client(**kw) -> pinecone.Pinecone``, ``index(name) -> pinecone.Index``: SDK clients for this server.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import pytest


@dataclass(frozen=True)
class Record:
    """One stored vector record: what a test asserts on."""

    values: np.ndarray | None  # float32, exactly as upserted
    sparse: dict[str, Any] | None  # {"indices": list[int], "values": np.ndarray float32}
    metadata: dict[str, Any] | None


@dataclass(frozen=True)
class LoggedRequest:
    method: str
    path: str  # as sent, without the query string
    status: int  # 0: the connection was dropped
    index: str | None  # the index a data-plane request addressed


@dataclass
class Fault:
    kind: int | str  # an HTTP status, "slow" or "drop"
    times: int | None = 1
    path_contains: str | None = None
    method: str | None = None
    retry_after: float | None = None
    delay: float = 0.5
    fraction: float | None = None
    seed: int = 0
    hits: int = 0


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

    url: str
    api_key: str
    request_log: list[LoggedRequest]
    import_delay: float

    def create_index(self, name: str, dimension: int | None = None, metric: str = "cosine", *,
                     sparse: bool = False, kind: str = "vector",
                     schema: dict[str, Any] | None = None) -> str:  # fmt: skip
        raise NotImplementedError

    def delete_index(self, name: str) -> None:
        raise NotImplementedError

    def index_names(self) -> list[str]:
        raise NotImplementedError

    def records(self, index: str, namespace: str = "") -> dict[str, Record]:
        raise NotImplementedError

    def documents(self, index: str, namespace: str) -> dict[str, dict[str, Any]]:
        raise NotImplementedError

    def namespaces(self, index: str) -> list[str]:
        raise NotImplementedError

    def inject(self, kind: int | str, times: int | None = 1, *, path_contains: str | None = None,
               method: str | None = None, retry_after: float | None = None, delay: float = 0.5,
               fraction: float | None = None, seed: int = 0) -> Fault:  # fmt: skip
        raise NotImplementedError

    def clear_faults(self) -> None:
        raise NotImplementedError

    def lag_stats(self, on: bool = True, *, requests: int | None = None) -> None:
        raise NotImplementedError

    def settle(self) -> None:
        raise NotImplementedError

    def clear_log(self) -> None:
        raise NotImplementedError

    def reset(self) -> None:
        raise NotImplementedError

    def client(self, **kwargs: Any) -> Any:
        raise NotImplementedError

    def index(self, name: str) -> Any:
        raise NotImplementedError


@pytest.fixture(scope="session")
def pinecone_server() -> Iterator[PineconeServer]:
    raise NotImplementedError


@pytest.fixture
def make_pinecone_index(pinecone_server: PineconeServer) -> Iterator[Callable[..., PineconeIndex]]:
    raise NotImplementedError


@pytest.fixture
def pinecone_index(make_pinecone_index: Callable[..., PineconeIndex]) -> PineconeIndex:
    return make_pinecone_index(dimension=8)


def unique_name(prefix: str = "t") -> str:
    """A valid Pinecone index name (lowercase alphanumerics and hyphens, at most 45 chars)."""
    return f"{prefix}-{uuid.uuid4().hex[:12]}"
