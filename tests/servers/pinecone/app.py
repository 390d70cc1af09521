"""The HTTP side of the test Pinecone server: routing, auth, version header, limits, error shapes, faults.

Control plane at ``/indexes...``; each index's data plane at ``/index/<name>/...`` (its ``host``).
Errors: the control plane answers ``{"error": {"code", "message"}, "status"}`` (db_control
``ErrorResponse``), the data plane ``{"code": <gRPC code>, "message", "details": []}`` (db_data
``rpcStatus``); the SDK reads the message from either and raises by status (401 UnauthorizedError,
404 NotFoundError, 409 ConflictError, 413 PayloadTooLargeError, 429 RateLimitError, 5xx ServiceError,
other 4xx ApiError).
"""

from __future__ import annotations

import socket
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

import numpy as np
import orjson

from tests.servers.pinecone import documents as docs
from tests.servers.pinecone.bulk import ImportFailed, ImportJob, read_import
from tests.servers.pinecone.faults import Faults
from tests.servers.pinecone.store import (
    DEFAULT_NAMESPACE,
    ApiError,
    IndexState,
    Record,
    _token,
    _untoken,
    bad_request,
    check_metadata,
    dense_scores,
    id_page,
    matches,
    schema_kind,
    sparse_score,
)
from tests.servers.pinecone.validation import float_array, require, validate

API_VERSIONS = ("2026-07", "2026-04")  # what SDK 10.2 sends, and the version of the published files
MAX_UPSERT_RECORDS = 1000
MAX_REQUEST_BYTES = 2 * 1024 * 1024
MAX_ID_LENGTH = 512
MAX_DIMENSION = 20000
GRPC_CODES = {
    "INVALID_ARGUMENT": 3,
    "DEADLINE_EXCEEDED": 4,
    "NOT_FOUND": 5,
    "ALREADY_EXISTS": 6,
    "PERMISSION_DENIED": 7,
    "RESOURCE_EXHAUSTED": 8,
    "FAILED_PRECONDITION": 9,
    "OUT_OF_RANGE": 11,
    "UNIMPLEMENTED": 12,
    "INTERNAL": 13,
    "UNAVAILABLE": 14,
    "UNAUTHENTICATED": 16,
}
STATUS_CODES = {
    401: "UNAUTHENTICATED",
    404: "NOT_FOUND",
    409: "ALREADY_EXISTS",
    413: "OUT_OF_RANGE",
    429: "RESOURCE_EXHAUSTED",
    500: "INTERNAL",
    502: "UNAVAILABLE",
    503: "UNAVAILABLE",
    504: "DEADLINE_EXCEEDED",
}
NAME_CHARS = set("abcdefghijklmnopqrstuvwxyz0123456789-")


def _dump(obj: Any) -> bytes:
    # orjson writes float32 arrays in their shortest float32 form, as Pinecone's JSON does.
    return orjson.dumps(obj, option=orjson.OPT_SERIALIZE_NUMPY)


class PineconeState:
    """Everything the server holds, and the answer to every request (no HTTP in here)."""

    def __init__(self, api_key: str) -> None:
        self.api_key = api_key
        self.url = ""
        self.lock = threading.RLock()
        self.indexes: dict[str, IndexState] = {}
        self.imports: dict[str, ImportJob] = {}
        self.import_counter = 0
        self.import_delay = 0.3
        self.s3_endpoint: str | None = None
        self.faults = Faults()
        self.log: list[Any] = []
        self.lag: tuple[str, int] | None = None  # ("frozen", 0) or ("requests", K)

    # --- control plane ---

    def create(self, body: dict[str, Any]) -> IndexState:
        validate("control", "CreateIndexRequest", body)
        name = body.get("name") or f"idx-{uuid.uuid4().hex[:8]}"
        require(
            set(name) <= NAME_CHARS and name[0] != "-" and name[-1] != "-",
            "Resource name must be 1-45 characters long, start and end with an alphanumeric character, and"
            " consist only of lower case alphanumeric characters or '-'.",
        )
        fields = body["schema"]["fields"]
        for fname, fdef in fields.items():
            if fdef["type"] == "dense_vector":
                require(
                    "dimension" in fdef and "metric" in fdef,
                    f"Field {fname!r}: a dense_vector field needs dimension and metric",
                )
        require(
            body["deployment"]["deployment_type"] == "managed",
            "This test server runs serverless (managed) indexes only",
            code="UNIMPLEMENTED",
        )
        with self.lock:
            require(name not in self.indexes, f"Resource {name} already exists", 409, "ALREADY_EXISTS")
            ix = IndexState(
                name=name,
                kind=schema_kind(body["schema"]),
                schema=body["schema"],
                deployment=body["deployment"],
                deletion_protection=body.get("deletion_protection", "disabled"),
                tags=body.get("tags"),
            )
            self._apply_lag(ix)
            self.indexes[name] = ix
        return ix

    def get_index(self, name: str) -> IndexState:
        ix = self.indexes.get(name)
        if ix is None:
            raise ApiError(404, "NOT_FOUND", f"Resource {name} not found")
        return ix

    def describe(self, ix: IndexState) -> dict[str, Any]:
        """An IndexModel as SDK 10.2 decodes it (pinecone/models/indexes/index.py)."""
        return {
            "name": ix.name,
            "host": f"{self.url}/index/{ix.name}",
            "status": {"ready": True, "state": "Ready"},
            "schema": ix.schema,
            "deployment": {**ix.deployment, "environment": "test-local"},
            "deletion_protection": ix.deletion_protection,
            "read_capacity": {"mode": "OnDemand", "status": {"state": "Ready"}},
            "tags": ix.tags,
        }

    def control(self, method: str, parts: list[str], body: Any) -> tuple[int, Any]:
        if parts == ["indexes"] and method == "GET":
            return 200, {"indexes": [self.describe(ix) for ix in list(self.indexes.values())]}
        if parts == ["indexes"] and method == "POST":
            return 201, self.describe(self.create(body))
        if len(parts) == 2 and method == "GET":
            return 200, self.describe(self.get_index(parts[1]))
        if len(parts) == 2 and method == "DELETE":
            ix = self.get_index(parts[1])
            require(
                ix.deletion_protection != "enabled",
                "Deletion protection is enabled for this index. Disable deletion protection before retrying.",
                403,
                "FORBIDDEN",
            )
            with self.lock:
                self.indexes.pop(parts[1], None)
            return 202, None
        raise ApiError(404, "NOT_FOUND", f"Not found: {method} /{'/'.join(parts)}")

    # --- stats lag ---

    def _apply_lag(self, ix: IndexState) -> None:
        ix.stats_snapshot = ix.stats_history = None
        if self.lag and self.lag[0] == "frozen":
            ix.stats_snapshot = ix.counts()
        elif self.lag:
            ix.stats_history = deque([ix.counts()], maxlen=self.lag[1] + 1)

    def set_lag(self, lag: tuple[str, int] | None) -> None:
        with self.lock:
            self.lag = lag
            for ix in self.indexes.values():
                with ix.lock:
                    self._apply_lag(ix)

    def stats_counts(self, ix: IndexState) -> dict[str, int]:
        if ix.stats_snapshot is not None:
            return dict(ix.stats_snapshot)
        if ix.stats_history:
            return dict(ix.stats_history[0])
        return ix.counts()

    # --- data plane ---

    def data(
        self, ix: IndexState, method: str, parts: list[str], query: dict[str, list[str]], body: Any
    ) -> tuple[int, Any]:
        route = (method, "/".join(parts))
        vector_routes: dict[tuple[str, str], Callable[..., tuple[int, Any]]] = {
            ("POST", "vectors/upsert"): self.upsert,
            ("GET", "vectors/fetch"): self.fetch,
            ("GET", "vectors/list"): self.list_ids,
            ("POST", "query"): self.query,
            ("POST", "vectors/delete"): self.delete,
            ("POST", "vectors/update"): self.update,
        }
        with ix.lock:
            try:
                if route in vector_routes:
                    require(
                        ix.kind == "vector",
                        f"Index {ix.name} is a document index (it has a schema): use the Documents API"
                        " (/namespaces/{namespace}/documents/...) instead of the vector API",
                        code="FAILED_PRECONDITION",
                    )
                    return vector_routes[route](ix, query, body)
                if parts[:1] == ["namespaces"] and len(parts) == 4 and parts[2] == "documents":
                    require(
                        ix.kind == "document",
                        f"Index {ix.name} is a vector index: the Documents API needs an index created with a"
                        " schema; use the vector API (/vectors/upsert, /query, ...) instead",
                        code="FAILED_PRECONDITION",
                    )
                    return docs.handle(ix, parts[3], parts[1], body)
                if route == ("POST", "describe_index_stats"):
                    validate("data", "DescribeIndexStatsRequest", body)
                    require(
                        not body.get("filter"),
                        "Serverless indexes do not support describe_index_stats with metadata filtering",
                    )
                    return 200, self.stats(ix)
                if parts == ["namespaces"] and method == "GET":
                    return 200, self.list_namespaces(ix, query)
                if parts[:1] == ["namespaces"] and len(parts) == 2:
                    return self.namespace(ix, method, parts[1])
                if parts[:2] == ["bulk", "imports"]:
                    require(
                        ix.kind == "vector",
                        "Bulk import is available for vector indexes only",
                        code="FAILED_PRECONDITION",
                    )
                    return self.bulk(ix, method, parts[2:], query, body)
                raise ApiError(404, "NOT_FOUND", f"Not found: {method} /{'/'.join(parts)}")
            finally:
                if ix.stats_history is not None and route != ("POST", "describe_index_stats"):
                    ix.stats_history.append(ix.counts())

    @staticmethod
    def _ns(name: str | None) -> str:
        return "" if name in (None, DEFAULT_NAMESPACE) else name  # "__default__" names the default namespace

    def upsert(self, ix: IndexState, query: Any, body: Any) -> tuple[int, Any]:
        require(isinstance(body, dict), "Invalid request: body must be a JSON object")
        vectors = body.get("vectors")
        require(
            not isinstance(vectors, list) or len(vectors) <= MAX_UPSERT_RECORDS,
            f"Invalid request: the number of vectors in an upsert request ({len(vectors or [])}) exceeds the"
            f" limit of {MAX_UPSERT_RECORDS}",
        )
        require(not isinstance(vectors, list) or len(vectors) > 0, "Invalid request: vectors must not be empty")
        arrays: list[tuple[np.ndarray | None, np.ndarray | None]] = []
        if isinstance(vectors, list):
            # Vector arrays are type-checked by NumPy (see validation.float_array), the rest by the schema.
            stripped = []
            for i, v in enumerate(vectors):
                if not isinstance(v, dict):
                    stripped.append(v)
                    arrays.append((None, None))
                    continue
                dense = float_array(v["values"], f"vectors/{i}/values") if "values" in v else None
                sv = v.get("sparseValues")
                svals = (
                    float_array(sv.get("values"), f"vectors/{i}/sparseValues/values") if isinstance(sv, dict) else None
                )
                arrays.append((dense, svals))
                stripped.append({**v, "values": [0.0]} if "values" in v else v)
            body = {**body, "vectors": stripped}
        validate("data", "UpsertRequest", body)
        ns = self._ns(body.get("namespace"))
        staged: dict[str, Record] = {}
        for v, (dense, svals) in zip(body["vectors"], arrays, strict=False):
            rid = v["id"]
            if dense is not None and len(dense) == 0:
                dense = None
            if ix.dimension is not None:
                require(dense is not None, f"Vector {rid!r} has no values, which the dense index {ix.name} requires")
                require(
                    len(dense) == ix.dimension,
                    f"Vector dimension {len(dense)} does not match the dimension of the index {ix.dimension}",
                )
            else:
                require(dense is None, f"Sparse index {ix.name} does not accept dense values (vector {rid!r})")
            sparse = None
            if "sparseValues" in v:
                require(
                    ix.accepts_sparse,
                    f"Index {ix.name} does not accept sparse values: it has metric"
                    f" {ix.metric}; sparse values need dotproduct",
                )
                indices = v["sparseValues"]["indices"]
                require(
                    len(indices) == len(svals), f"Sparse values of vector {rid!r}: indices and values differ in length"
                )
                require(len(set(indices)) == len(indices), f"Sparse values of vector {rid!r}: duplicate indices")
                sparse = {"indices": list(indices), "values": svals}
            elif ix.dimension is None:
                raise bad_request(f"Vector {rid!r} has no sparse values, which the sparse index {ix.name} requires")
            meta = check_metadata(v["metadata"], rid) if "metadata" in v else None
            staged[rid] = Record(dense, sparse, meta)
        ix.namespaces.setdefault(ns, {}).update(staged)
        return 200, {"upsertedCount": len(staged)}

    @staticmethod
    def _vector_json(rid: str, rec: Record, values: bool = True, metadata: bool = True) -> dict[str, Any]:
        out: dict[str, Any] = {"id": rid}
        if values:
            out["values"] = rec.values if rec.values is not None else []
            if rec.sparse is not None:
                out["sparseValues"] = rec.sparse
        if metadata and rec.metadata is not None:
            out["metadata"] = rec.metadata
        return out

    def fetch(self, ix: IndexState, query: dict[str, list[str]], body: Any) -> tuple[int, Any]:
        ids = query.get("ids", [])
        require(bool(ids), "Invalid request: ids is required")
        for rid in ids:
            require(
                0 < len(rid) <= MAX_ID_LENGTH and " " not in rid,
                f"Invalid request: id {rid[:80]!r} must be 1-{MAX_ID_LENGTH} characters without spaces",
            )
        ns = self._ns(query.get("namespace", [""])[0])
        rows = ix.namespaces.get(ns, {})
        found = {rid: self._vector_json(rid, rows[rid]) for rid in ids if rid in rows}
        return 200, {"vectors": found, "namespace": ns, "usage": {"readUnits": max(1, len(found) // 10)}}

    @staticmethod
    def _int_param(query: dict[str, list[str]], name: str, default: int, low: int, high: int | None) -> int:
        raw = query.get(name, [None])[0]
        if raw is None:
            return default
        try:
            value = int(raw)
        except ValueError as exc:
            raise bad_request(f"Invalid request: {name} must be an integer") from exc
        require(
            value >= low and (high is None or value <= high),
            f"Invalid request: {name} must be between {low} and {high}",
        )
        return value

    def list_ids(self, ix: IndexState, query: dict[str, list[str]], body: Any) -> tuple[int, Any]:
        limit = self._int_param(query, "limit", 100, 1, 1000)
        prefix = query.get("prefix", [""])[0]
        ns = self._ns(query.get("namespace", [""])[0])
        token = query["paginationToken"][0] if "paginationToken" in query else None
        page, nxt = id_page((rid for rid in ix.namespaces.get(ns, {}) if rid.startswith(prefix)), token, limit)
        out: dict[str, Any] = {"vectors": [{"id": rid} for rid in page], "namespace": ns, "usage": {"readUnits": 1}}
        if nxt:
            out["pagination"] = {"next": nxt}
        return 200, out

    def query(self, ix: IndexState, query: Any, body: Any) -> tuple[int, Any]:
        if isinstance(body, dict) and isinstance(body.get("vector"), list):
            qvec = float_array(body["vector"], "vector")
            body = {**body, "vector": [0.0]}
        else:
            qvec = None
        validate("data", "QueryRequest", body)
        require("topK" in body, "Invalid request: topK is required")
        require(
            sum(k in body for k in ("vector", "id", "sparseVector")) >= 1 and not ("vector" in body and "id" in body),
            "Invalid request: exactly one of vector or id (optionally with sparseVector) is required",
        )
        ns = self._ns(body.get("namespace"))
        rows = ix.namespaces.get(ns, {})
        qsparse = body.get("sparseVector")
        if "id" in body:
            rec = rows.get(body["id"])
            if rec is None:
                return 200, {"matches": [], "namespace": ns, "usage": {"readUnits": 1}}
            qvec, qsparse = rec.values, rec.sparse
        if qvec is not None:
            require(
                ix.dimension is not None and len(qvec) == ix.dimension,
                f"Query vector dimension {len(qvec)} does not match the dimension of the index {ix.dimension}",
            )
        candidates = [(rid, rec) for rid, rec in rows.items() if matches(body.get("filter"), rec.metadata)]
        scores = np.zeros(len(candidates))
        if qvec is not None and candidates:
            matrix = np.stack([rec.values for _, rec in candidates])
            scores = dense_scores(matrix, qvec, ix.metric)
        if qsparse:
            scores = scores + np.array([sparse_score(rec.sparse, qsparse) for _, rec in candidates])
        order = np.argsort(-scores, kind="stable")[: body["topK"]]
        out = []
        for i in order:
            rid, rec = candidates[i]
            score = float(scores[i])
            item = {"id": rid, "score": np.float32(-score if ix.metric == "euclidean" else score)}
            item.update(
                {
                    k: v
                    for k, v in self._vector_json(
                        rid, rec, body.get("includeValues", False), body.get("includeMetadata", False)
                    ).items()
                    if k != "id"
                }
            )
            out.append(item)
        return 200, {"matches": out, "namespace": ns, "usage": {"readUnits": 5}}

    def delete(self, ix: IndexState, query: Any, body: Any) -> tuple[int, Any]:
        validate("data", "DeleteRequest", body)
        ns = self._ns(body.get("namespace"))
        ids, every, filt = body.get("ids"), body.get("deleteAll", False), body.get("filter")
        require(
            sum(bool(x) for x in (ids, every, filt)) == 1,
            "Invalid request: exactly one of ids, deleteAll or filter is required",
        )
        require(ids is None or len(ids) <= 1000, "Invalid request: at most 1000 ids per delete request")
        rows = ix.namespaces.get(ns, {})
        if every:
            rows.clear()
        elif ids:
            for rid in ids:
                rows.pop(rid, None)
        else:
            for rid in [rid for rid, rec in rows.items() if matches(filt, rec.metadata)]:
                del rows[rid]
        if not rows:
            ix.namespaces.pop(ns, None)
        return 200, {}

    def update(self, ix: IndexState, query: Any, body: Any) -> tuple[int, Any]:
        validate("data", "UpdateRequest", body)
        require("id" in body, "Invalid request: id is required (updates by filter are not served by this test server)")
        ns = self._ns(body.get("namespace"))
        rec = ix.namespaces.get(ns, {}).get(body["id"])
        if rec is None:
            return 200, {"matchedRecords": 0}
        values = float_array(body["values"], "values") if "values" in body else rec.values
        require(
            values is None or len(values) == ix.dimension,
            f"Vector dimension {len(values) if values is not None else 0} does not match the dimension of the"
            f" index {ix.dimension}",
        )
        sparse = rec.sparse
        if "sparseValues" in body:
            sparse = {
                "indices": body["sparseValues"]["indices"],
                "values": float_array(body["sparseValues"]["values"], "sparseValues/values"),
            }
        meta = rec.metadata
        if "setMetadata" in body:
            meta = check_metadata({**(meta or {}), **body["setMetadata"]}, body["id"])
        ix.namespaces[ns][body["id"]] = Record(values, sparse, meta)
        return 200, {"matchedRecords": 1}

    def stats(self, ix: IndexState) -> dict[str, Any]:
        counts = self.stats_counts(ix)
        out: dict[str, Any] = {
            "namespaces": {(ns or DEFAULT_NAMESPACE): {"vectorCount": n} for ns, n in sorted(counts.items()) if n},
            "indexFullness": 0.0,
            "totalVectorCount": sum(counts.values()),
            "metric": ix.metric,
            "vectorType": "dense" if ix.dimension is not None or ix.kind == "document" else "sparse",
        }
        if ix.dimension is not None:
            out["dimension"] = ix.dimension
        return out

    def list_namespaces(self, ix: IndexState, query: dict[str, list[str]]) -> dict[str, Any]:
        limit = self._int_param(query, "limit", 100, 1, 100)
        prefix = query.get("prefix", [""])[0]
        after = _untoken(query["paginationToken"][0]) if "paginationToken" in query else None
        counts = self.stats_counts(ix)
        names = sorted(n for n in ((ns or DEFAULT_NAMESPACE) for ns, c in counts.items() if c) if n.startswith(prefix))
        total = len(names)
        if after is not None:
            names = [n for n in names if n > after]
        page = names[:limit]
        raw = {(ns or DEFAULT_NAMESPACE): c for ns, c in counts.items()}
        # record_count is an int64, which Pinecone's JSON sends as a string (the SDK decodes it leniently).
        out: dict[str, Any] = {
            "namespaces": [{"name": n, "record_count": str(raw[n])} for n in page],
            "total_count": total,
        }
        if len(names) > limit:
            out["pagination"] = {"next": _token(page[-1])}
        return out

    def namespace(self, ix: IndexState, method: str, name: str) -> tuple[int, Any]:
        ns = self._ns(name) if ix.kind == "vector" else name
        rows = ix.namespaces.get(ns)
        if method == "GET":
            if not rows and not (ix.kind == "vector" and ns == ""):
                raise ApiError(404, "NOT_FOUND", f"Namespace {name} not found")
            return 200, {"name": name, "record_count": str(len(rows or {}))}
        if method == "DELETE":
            if rows is None:
                raise ApiError(404, "NOT_FOUND", f"Namespace {name} not found")
            ix.namespaces.pop(ns, None)
            return 202, {}
        raise ApiError(404, "NOT_FOUND", f"Not found: {method} /namespaces/{name}")

    # --- bulk imports ---

    def bulk(
        self, ix: IndexState, method: str, rest: list[str], query: dict[str, list[str]], body: Any
    ) -> tuple[int, Any]:
        jobs = [j for j in self.imports.values() if j.index == ix.name]
        if not rest and method == "POST":
            validate("data", "StartImportRequest", body)
            mode = (body.get("errorMode") or {}).get("onError", "continue")
            require(mode in ("continue", "abort"), "Invalid request: errorMode.onError must be 'abort' or 'continue'")
            scheme = urlsplit(body["uri"]).scheme
            require(scheme in ("s3", "gs", "https", "file", ""), f"Invalid request: unsupported URI {body['uri']!r}")
            with self.lock:
                self.import_counter += 1
                job = ImportJob(id=str(self.import_counter), uri=body["uri"], index=ix.name, error_mode=mode)
                self.imports[job.id] = job
            job.timer = threading.Timer(self.import_delay, self._run_import, args=(job,))
            job.timer.daemon = True
            job.timer.start()
            return 200, {"id": job.id}
        if not rest and method == "GET":
            limit = self._int_param(query, "limit", 100, 1, 100)
            start = int(_untoken(query["paginationToken"][0])) if "paginationToken" in query else 0
            page = jobs[start : start + limit]
            out: dict[str, Any] = {"data": [j.to_json(self.import_delay) for j in page]}
            if start + limit < len(jobs):
                out["pagination"] = {"next": _token(str(start + limit))}
            return 200, out
        job = self.imports.get(rest[0]) if len(rest) == 1 else None
        if job is None or job.index != ix.name:
            raise ApiError(404, "NOT_FOUND", f"Import {rest[0] if rest else ''} not found")
        if method == "GET":
            return 200, job.to_json(self.import_delay)
        if method == "DELETE":
            if job.status in ("Pending", "InProgress"):
                if job.timer:
                    job.timer.cancel()
                job.status, job.finished_at = "Cancelled", _iso_now()
            return 200, {}
        raise ApiError(404, "NOT_FOUND", f"Not found: {method} /bulk/imports/{rest[0]}")

    def _run_import(self, job: ImportJob) -> None:
        ix = self.indexes.get(job.index)
        if ix is None or job.status == "Cancelled":
            return
        with ix.lock:
            if job.status == "Cancelled":
                return
            try:
                staged = read_import(job, ix, self.s3_endpoint)
            except ImportFailed as exc:
                job.status, job.error, job.records_imported = "Failed", str(exc), 0
            except Exception as exc:  # an unreadable URI is the import's failure, not the server's
                job.status, job.error, job.records_imported = "Failed", f"{type(exc).__name__}: {exc}", 0
            else:
                for ns, rows in staged.items():
                    ix.namespaces.setdefault(ns, {}).update(rows)
                job.status, job.records_imported = "Completed", sum(len(r) for r in staged.values())
            job.finished_at = _iso_now()


def _iso_now() -> str:
    from tests.servers.pinecone.bulk import _now

    return _now()


class Handler(BaseHTTPRequestHandler):
    # Headers and body go out as two writes: without TCP_NODELAY every small answer would wait ~40 ms for
    # the client's delayed ACK, a stall of this server that Pinecone does not have.
    disable_nagle_algorithm = True
    protocol_version = "HTTP/1.1"  # keep-alive, as the SDK's httpx pool expects
    state: PineconeState  # set on the subclass the server builds

    def log_message(self, format: str, *args: Any) -> None:  # quiet
        pass

    def do_GET(self) -> None:
        self._serve("GET")

    def do_POST(self) -> None:
        self._serve("POST")

    def do_DELETE(self) -> None:
        self._serve("DELETE")

    def do_PATCH(self) -> None:
        self._serve("PATCH")

    def _serve(self, method: str) -> None:
        from tests.servers.pinecone import LoggedRequest

        state = self.state
        split = urlsplit(self.path)
        parts = [unquote(p) for p in split.path.split("/")[1:] if p != ""]
        index = parts[1] if parts[:1] == ["index"] and len(parts) > 1 else None
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        plane = "data" if index is not None else "control"
        fault = state.faults.take(method, split.path)
        if fault is not None and fault.kind == "reset":
            # Closed before anything is processed or answered (the SDK's transport retries this one).
            state.log.append(LoggedRequest(method, split.path, 0, index))
            self.connection.shutdown(socket.SHUT_RDWR)
            self.close_connection = True
            return
        status, payload, extra = 500, None, {}
        try:
            if fault is not None and isinstance(fault.kind, int):
                extra = {"Retry-After": f"{fault.retry_after:g}"} if fault.retry_after is not None else {}
                raise ApiError(fault.kind, STATUS_CODES.get(fault.kind, "UNKNOWN"), f"Injected fault: {fault.kind}")
            if fault is not None and fault.kind == "slow":
                time.sleep(fault.delay)
            self._check_headers()
            require(
                length <= MAX_REQUEST_BYTES,
                f"Request size {length / 1024 / 1024:.1f}MB exceeds the maximum supported size of 2MB",
                413,
                "OUT_OF_RANGE",
            )
            body: Any = None
            if raw:
                try:
                    body = orjson.loads(raw)
                except orjson.JSONDecodeError as exc:
                    raise bad_request(f"Invalid request: body is not valid JSON: {exc}") from exc
            elif method == "POST":
                body = {}
            query = parse_qs(split.query, keep_blank_values=True)
            if index is not None:
                status, payload = state.data(state.get_index(index), method, parts[2:], query, body)
            else:
                status, payload = state.control(method, parts, body)
        except ApiError as err:
            status = err.status
            if plane == "control":
                payload = {"error": {"code": err.code, "message": err.message}, "status": err.status}
            else:
                payload = {"code": GRPC_CODES.get(err.code, 2), "message": err.message, "details": []}
        except Exception as exc:  # a server bug: answer 500 like the service would, keep serving
            status, payload = (
                500,
                {"code": 13, "message": f"Internal error: {type(exc).__name__}: {exc}", "details": []},
            )
        data = b"" if payload is None else _dump(payload)
        dropped = fault is not None and fault.kind == "drop"
        state.log.append(LoggedRequest(method, split.path, 0 if dropped else status, index))
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.send_header("x-pinecone-request-id", uuid.uuid4().hex)
        for name, value in extra.items():
            self.send_header(name, value)
        self.end_headers()
        if dropped:
            # Half the body, then a hard close: the client sees the connection die mid-response.
            self.wfile.write(data[: len(data) // 2])
            self.wfile.flush()
            self.connection.shutdown(socket.SHUT_RDWR)
            self.close_connection = True
            return
        self.wfile.write(data)

    def _check_headers(self) -> None:
        if self.headers.get("Api-Key") != self.state.api_key:
            raise ApiError(
                401,
                "UNAUTHENTICATED",
                "Invalid API Key"
                if self.headers.get("Api-Key")
                else "API key is missing or invalid for the environment. Check that the correct environment"
                " is specified.",
            )
        version = self.headers.get("X-Pinecone-Api-Version")
        require(
            version in API_VERSIONS,
            f"Missing or unsupported X-Pinecone-Api-Version header {version!r}: supported {', '.join(API_VERSIONS)}",
        )


class Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True


def start(state: PineconeState) -> tuple[Server, threading.Thread]:
    handler = type("BoundHandler", (Handler,), {"state": state})
    server = Server(("127.0.0.1", 0), handler)
    state.url = f"http://127.0.0.1:{server.server_address[1]}"
    thread = threading.Thread(target=server.serve_forever, name="pinecone-test-server", daemon=True)
    thread.start()
    return server, thread
