"""Pinecone's facts (metrics, documented limits) and what an index is: vector or document, serverless or
pod-based, its dimension, metric and schema. Record checks run on whole columns before anything is sent."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from vecfmt.errors import InvalidDataError, StoreError
from vecfmt.schema import ID, METADATA, SPARSE_VALUES, vectors_numpy
from vecfmt.stores.base import require_sdk
from vecfmt.stores.pinecone.connect import SCHEME, Target

# canonical <-> Pinecone metric names (spec section 5)
TO_PINECONE = {"cosine": "cosine", "dot": "dotproduct", "euclidean": "euclidean"}
FROM_PINECONE = {v: k for k, v in TO_PINECONE.items()}

# Pinecone's documented limits (docs.pinecone.io, "Limits")
MAX_RECORDS_PER_REQUEST = 1_000
MAX_REQUEST_BYTES = 2 * 1000 * 1000  # "2 MB"; the smaller reading, so both readings hold
MAX_METADATA_BYTES = 40 * 1024
MAX_ID_LENGTH = 512
MAX_DIMENSION = 20_000
LIST_PAGE = 100  # the most ids one `list` page returns
FETCH_URL_BUDGET = 6_000  # bytes of ids per GET /vectors/fetch (the ids travel in the query string)

# A legacy vector index declares only these reserved fields (the SDK's legacy_index_translation).
DENSE_FIELD = "_values"
SPARSE_FIELD = "_sparse_values"
DEFAULT_DOCUMENT_NAMESPACE = "__default__"  # the Documents API has no empty namespace


@dataclass
class IndexInfo:
    name: str
    host: str
    kind: str  # "vector" | "document"
    pod: bool = False
    dimension: int | None = None
    metric: str = "cosine"  # canonical
    sparse: bool = False
    schema: dict[str, Any] = field(default_factory=dict)  # the raw schema ({"fields": {...}})
    deployment: dict[str, Any] = field(default_factory=dict)

    @property
    def dense_fields(self) -> list[tuple[str, dict[str, Any]]]:
        return [(n, f) for n, f in self.schema.get("fields", {}).items() if f.get("type") == "dense_vector"]

    @property
    def sparse_fields(self) -> list[str]:
        return [n for n, f in self.schema.get("fields", {}).items() if f.get("type") == "sparse_vector"]


def describe_index(target: Target, *, required: bool = True) -> IndexInfo | None:
    """The index the URI names, from the control plane (or, with only ``host=``, from its stats)."""
    if not target.name:
        return _from_stats(target)
    msgspec = require_sdk("msgspec", SCHEME)
    pc_ = target.client()
    try:
        model = target.call("cannot describe the index", pc_.indexes.describe, target.name)
    except StoreError as exc:
        if "HTTP 404" in str(exc) and not required:
            return None
        if "HTTP 404" in str(exc):
            raise StoreError(f"pinecone: there is no index {target.name!r} (for an import, pass create=true)") from None
        raise
    schema = msgspec.to_builtins(model.schema)
    deployment = msgspec.to_builtins(model.deployment)
    host = target.host or model.host
    if not host:
        raise StoreError(f"pinecone {target.label}: the index has no host yet (still initializing); try again")
    return _info(target.name, host, schema, deployment)


def _info(name: str, host: str, schema: dict[str, Any], deployment: dict[str, Any]) -> IndexInfo:
    fields = schema.get("fields") or {}
    kind = "vector" if fields and set(fields) <= {DENSE_FIELD, SPARSE_FIELD} else "document"
    info = IndexInfo(name, host, kind, pod=deployment.get("deployment_type") == "pod", schema=schema,
                     deployment=deployment)
    if kind == "vector":
        dense = fields.get(DENSE_FIELD)
        if dense is not None:
            info.dimension = int(dense["dimension"])
            info.metric = metric_from_pinecone(dense.get("metric") or "cosine")
        else:
            info.metric = "dot"  # a sparse-only index scores by dot product
        info.sparse = SPARSE_FIELD in fields or dense is None
    return info


def _from_stats(target: Target) -> IndexInfo:
    assert target.host is not None
    index = target.data_plane(target.host)
    stats = target.call("cannot read the index stats", index.describe_index_stats)
    metric = metric_from_pinecone(stats.metric or "cosine")
    info = IndexInfo("", target.host, "vector", dimension=stats.dimension, metric=metric)
    info.sparse = stats.vector_type == "sparse"
    return info


def metric_from_pinecone(name: str) -> str:
    if name not in FROM_PINECONE:
        raise StoreError(f"pinecone: metric {name!r} has no vecfmt name (known: {sorted(FROM_PINECONE)})")
    return FROM_PINECONE[name]


def metric_to_pinecone(metric: str) -> str:
    if metric not in TO_PINECONE:
        raise StoreError(f"pinecone: Pinecone has no {metric!r} metric (it has cosine, dotproduct, euclidean)")
    return TO_PINECONE[metric]


def document_namespace(namespace: str) -> str:
    return namespace or DEFAULT_DOCUMENT_NAMESPACE


def vecfmt_namespace(name: str) -> str:
    return "" if name == DEFAULT_DOCUMENT_NAMESPACE else name


# --- per-record checks (whole columns at once) ------------------------------------------------------


def check_records(batch: pa.RecordBatch, namespace: str, dense: list[str]) -> np.ndarray:
    """Refuse, naming the first bad record, what Pinecone would refuse mid-import; return each record's
    estimated request size in bytes (for splitting batches into requests)."""
    ids = batch.column(ID)
    n = batch.num_rows

    def refuse(mask: Any, what: str) -> None:
        mask = np.asarray(mask, dtype=bool)
        if mask.any():
            row = int(np.argmax(mask))
            where = f" in namespace {namespace!r}" if namespace else ""
            raise InvalidDataError(f"pinecone: record {ids[row].as_py()!r}{where}: {what}; nothing was sent "
                                   "for this batch")

    lengths = pc.utf8_length(ids).to_numpy(zero_copy_only=False)
    refuse(lengths == 0, "the id is empty")
    refuse(lengths > MAX_ID_LENGTH, f"the id is longer than Pinecone's {MAX_ID_LENGTH} characters")
    refuse(~pc.string_is_ascii(ids).to_numpy(zero_copy_only=False), "the id is not ASCII (Pinecone ids are)")
    refuse(pc.match_substring(ids, "\x00").to_numpy(zero_copy_only=False), "the id holds a NUL character")
    size = np.full(n, 64, dtype=np.int64) + pc.binary_length(ids).to_numpy(zero_copy_only=False)
    if METADATA in batch.schema.names:
        meta = batch.column(METADATA)
        meta_bytes = pc.binary_length(meta).fill_null(0).to_numpy(zero_copy_only=False)
        refuse(meta_bytes > MAX_METADATA_BYTES,
               f"metadata is larger than Pinecone's {MAX_METADATA_BYTES // 1024} KB per record")
        size += meta_bytes
    for column in dense:
        matrix = vectors_numpy(batch.column(column))
        if matrix.shape[1] > MAX_DIMENSION:
            raise InvalidDataError(f"pinecone: vectors of {matrix.shape[1]} dimensions: Pinecone takes at most "
                                   f"{MAX_DIMENSION:,}")
        # Pinecone refuses a dense vector without a non-zero value
        valid = batch.column(column).is_valid().to_numpy(zero_copy_only=False)
        refuse(valid & ~matrix.any(axis=1), f"the dense vector {column!r} is all zeros, which Pinecone refuses")
        size += matrix.shape[1] * 25  # a float32 goes out as the JSON text of a double: up to 24 chars and a comma
    if SPARSE_VALUES in batch.schema.names:
        sparse = batch.column(SPARSE_VALUES)
        nnz = pc.list_value_length(sparse.field("indices")).fill_null(0).to_numpy(zero_copy_only=False)
        size += nnz * 36  # an index (up to 10 digits) and a double, each with its comma
    refuse(size > MAX_REQUEST_BYTES, "the record alone is larger than one 2 MB request")
    return size


def request_slices(sizes: np.ndarray, max_records: int = MAX_RECORDS_PER_REQUEST) -> list[tuple[int, int]]:
    """Split records into (offset, length) requests of at most ``max_records`` and about 2 MB (JSON)."""
    budget = int(MAX_REQUEST_BYTES * 0.9)  # room for the envelope and for estimates that run short
    out: list[tuple[int, int]] = []
    start, n = 0, len(sizes)
    cumulative = np.cumsum(sizes)
    while start < n:
        base = cumulative[start - 1] if start else 0
        fits = int(np.searchsorted(cumulative, base + budget, side="right")) - start
        length = max(1, min(fits, max_records, n - start))
        out.append((start, length))
        start += length
    return out
