"""In-memory indexes of the test Pinecone server: records, documents, metadata filters, brute-force search."""

from __future__ import annotations

import base64
import heapq
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any

import numpy as np

# Reserved schema field names of a legacy vector index (the SDK's legacy_index_translation).
DENSE_FIELD = "_values"
SPARSE_FIELD = "_sparse_values"
METRICS = ("cosine", "euclidean", "dotproduct")


class ApiError(Exception):
    """An error answer: HTTP status, canonical code name (``INVALID_ARGUMENT``, ...) and message."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status, self.code, self.message = status, code, message


def bad_request(message: str) -> ApiError:
    return ApiError(400, "INVALID_ARGUMENT", message)


# Pagination tokens are opaque to clients; these carry the last id (or offset) a page returned.
def _token(value: str) -> str:
    return base64.urlsafe_b64encode(value.encode()).decode()


def _untoken(token: str) -> str:
    try:
        return base64.urlsafe_b64decode(token.encode()).decode()
    except (ValueError, UnicodeDecodeError) as exc:
        raise bad_request("Invalid pagination token") from exc


@dataclass(frozen=True)
class Record:
    """One stored vector record: what a test asserts on."""

    values: np.ndarray | None  # float32, exactly as upserted
    sparse: dict[str, Any] | None  # {"indices": list[int], "values": np.ndarray float32}
    metadata: dict[str, Any] | None


@dataclass
class IndexState:
    name: str
    kind: str  # "vector" | "document"
    schema: dict[str, Any]  # {"fields": {...}} as the SDK's IndexSchema encodes it
    deployment: dict[str, Any]
    deletion_protection: str = "disabled"
    tags: dict[str, str] | None = None
    # namespace -> id -> Record (vector index) or dict (document index)
    namespaces: dict[str, dict[str, Any]] = field(default_factory=dict)
    lock: threading.RLock = field(default_factory=threading.RLock)
    created: float = field(default_factory=time.time)
    # Stats lag: frozen counts, or counts as of K data requests ago.
    stats_snapshot: dict[str, int] | None = None
    stats_history: deque[dict[str, int]] | None = None

    @property
    def dense(self) -> dict[str, Any] | None:
        return self.schema["fields"].get(DENSE_FIELD) if self.kind == "vector" else None

    @property
    def dimension(self) -> int | None:
        dense = self.dense
        return dense["dimension"] if dense else None

    @property
    def metric(self) -> str:
        dense = self.dense
        return dense["metric"] if dense else "dotproduct"

    @property
    def accepts_sparse(self) -> bool:
        # A legacy dense index takes sparse values alongside (hybrid) only with dotproduct.
        return SPARSE_FIELD in self.schema["fields"] or self.metric == "dotproduct"

    def counts(self) -> dict[str, int]:
        return {ns: len(rows) for ns, rows in self.namespaces.items() if rows}


def schema_kind(schema: dict[str, Any]) -> str:
    """A schema of only the reserved vector fields is a legacy vector index; anything else is a document index."""
    names = set(schema.get("fields", {}))
    return "vector" if names and names <= {DENSE_FIELD, SPARSE_FIELD} else "document"


def vector_schema(dimension: int | None, metric: str, sparse: bool) -> dict[str, Any]:
    fields: dict[str, Any] = {}
    if dimension is not None:
        fields[DENSE_FIELD] = {"type": "dense_vector", "dimension": dimension, "metric": metric}
    if sparse or dimension is None:
        fields[SPARSE_FIELD] = {"type": "sparse_vector"}
    return {"fields": fields}


# --- metadata filters (Pinecone's filter language, the operators documented for metadata) ---

_COMPARE = {
    "$eq": lambda a, b: a == b,
    "$ne": lambda a, b: a != b,
    "$gt": lambda a, b: _num(a) and a > b,
    "$gte": lambda a, b: _num(a) and a >= b,
    "$lt": lambda a, b: _num(a) and a < b,
    "$lte": lambda a, b: _num(a) and a <= b,
    "$in": lambda a, b: a in b,
    "$nin": lambda a, b: a not in b,
}


def _num(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def matches(filter_: dict[str, Any] | None, metadata: dict[str, Any] | None) -> bool:
    """Whether ``metadata`` satisfies ``filter_`` ($eq/$ne/$gt(e)/$lt(e)/$in/$nin/$exists/$and/$or)."""
    if not filter_:
        return True
    meta = metadata or {}
    for key, cond in filter_.items():
        if key == "$and":
            if not all(matches(sub, meta) for sub in cond):
                return False
        elif key == "$or":
            if not any(matches(sub, meta) for sub in cond):
                return False
        elif key.startswith("$"):
            raise bad_request(f"Unsupported filter operator {key!r} at the top level")
        else:
            ops = cond if isinstance(cond, dict) else {"$eq": cond}
            for op, operand in ops.items():
                if op == "$exists":
                    if (key in meta) != bool(operand):
                        return False
                    continue
                if op not in _COMPARE:
                    raise bad_request(f"Unsupported filter operator {op!r} for field {key!r}")
                if key not in meta:
                    if op in ("$ne", "$nin"):
                        continue
                    return False
                value = meta[key]
                values = value if isinstance(value, list) else [value]  # a list matches if any item does
                hit = any(_COMPARE[op](v, operand) for v in values)
                if op in ("$ne", "$nin"):
                    hit = all(_COMPARE[op](v, operand) for v in values)
                if not hit:
                    return False
    return True


# --- scoring (exact brute force, the index's metric) ---


def dense_scores(matrix: np.ndarray, query: np.ndarray, metric: str) -> np.ndarray:
    """Scores of each row of ``matrix`` against ``query``; higher is better, as Pinecone reports them."""
    m = matrix.astype(np.float64, copy=False)
    q = query.astype(np.float64, copy=False)
    if metric == "dotproduct":
        return m @ q
    if metric == "euclidean":
        # Pinecone reports the squared distance for euclidean; lower is closer.
        return -(((m - q) ** 2).sum(axis=1))
    norms = np.linalg.norm(m, axis=1) * np.linalg.norm(q)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(norms > 0, (m @ q) / norms, 0.0)


def sparse_score(a: dict[str, Any] | None, b: dict[str, Any] | None) -> float:
    if not a or not b:
        return 0.0
    weights = dict(zip(a["indices"], np.asarray(a["values"], dtype=np.float64).tolist(), strict=False))
    return float(sum(weights.get(i, 0.0) * float(v) for i, v in zip(b["indices"], b["values"], strict=False)))


METADATA_MAX_BYTES = 40 * 1024
DEFAULT_NAMESPACE = "__default__"


def check_metadata(metadata: Any, rid: str) -> dict[str, Any]:
    """Pinecone's metadata rules: a flat JSON object of strings, numbers, booleans and lists of strings, <= 40 KB."""
    import orjson

    if not isinstance(metadata, dict):
        raise bad_request(f"Metadata of vector {rid!r} must be a JSON object")
    size = len(orjson.dumps(metadata))
    if size > METADATA_MAX_BYTES:
        raise bad_request(
            f"Metadata size is {size} bytes, which exceeds the limit of {METADATA_MAX_BYTES} bytes per vector"
            f" (id {rid!r})"
        )
    for key, value in metadata.items():
        flat = isinstance(value, (str, bool, int, float)) or (
            isinstance(value, list) and all(isinstance(v, str) for v in value)
        )
        if not flat:
            raise bad_request(
                f"Metadata value for field {key!r} of vector {rid!r} must be a string, number, boolean or list of"
                f" strings, got {type(value).__name__}"
            )
    return metadata


def id_page(ids: Any, token: str | None, limit: int) -> tuple[list[str], str | None]:
    """One page of ``ids`` in bytewise ("C" collation) order after ``token``, and the next page's token."""
    # Code point order of str is the bytewise order of their UTF-8; the ids after the token are filtered in C
    # and only the page is ordered (heapq), so a page costs O(n), not a sort of the whole namespace.
    after = _untoken(token) if token is not None else None
    candidates = filter(after.__lt__, ids) if after is not None else ids
    page = heapq.nsmallest(limit + 1, candidates)
    return page[:limit], (_token(page[limit - 1]) if len(page) > limit else None)
