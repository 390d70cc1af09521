"""The Documents API (2026-07) of a document index: ``/namespaces/{ns}/documents/list|fetch|upsert|search|delete``.

Request and response shapes follow SDK 10.2's own models (``pinecone/models/documents/``,
``pinecone/_internal/adapters/documents_adapter.py``), since the 2026-04 files predate this API.
Documents are checked against the index schema's typed fields; fields the schema does not declare
are metadata (flat values, as for vector metadata). Search serves ``dense_vector`` and
``sparse_vector`` clauses (exact, brute force); the text clauses need Pinecone's analyzers and are
refused with a 400 that says so.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from tests.servers.pinecone.store import (
    ApiError,
    IndexState,
    bad_request,
    check_metadata,
    dense_scores,
    id_page,
    matches,
)
from tests.servers.pinecone.validation import float_array, require, validate

_SCALAR_TYPES: dict[str, tuple[type, ...]] = {
    "string": (str,),
    "integer": (int,),
    "float": (int, float),
    "boolean": (bool,),
}


def handle(ix: IndexState, op: str, namespace: str, body: Any) -> tuple[int, Any]:
    require(bool(namespace.strip()), "Invalid request: namespace must be a non-empty string")
    ops = {"upsert": upsert, "fetch": fetch, "list": list_ids, "search": search, "delete": delete}
    if op not in ops:
        raise ApiError(404, "NOT_FOUND", f"Not found: /namespaces/{namespace}/documents/{op}")
    return ops[op](ix, namespace, body)


def _check_document(ix: IndexState, doc: dict[str, Any]) -> dict[str, Any]:
    fields = ix.schema["fields"]
    did = doc["_id"]
    out: dict[str, Any] = {"_id": did}
    metadata: dict[str, Any] = {}
    for name, value in doc.items():
        if name == "_id":
            continue
        spec = fields.get(name)
        kind = spec["type"] if spec else None
        where = f"document {did!r}, field {name!r}"
        if kind == "dense_vector":
            vec = float_array(value, where)
            require(
                len(vec) == spec["dimension"],
                f"Vector dimension {len(vec)} does not match the dimension {spec['dimension']} of field {name!r}"
                f" (document {did!r})",
            )
            out[name] = vec
        elif kind == "sparse_vector":
            require(
                isinstance(value, dict) and set(value) == {"indices", "values"},
                f"Invalid request: {where}: a sparse_vector needs exactly indices and values",
            )
            vals = float_array(value["values"], where)
            require(
                len(value["indices"]) == len(vals), f"Invalid request: {where}: indices and values differ in length"
            )
            out[name] = {"indices": [int(i) for i in value["indices"]], "values": vals}
        elif kind in _SCALAR_TYPES:
            ok = isinstance(value, _SCALAR_TYPES[kind]) and not (kind != "boolean" and isinstance(value, bool))
            require(ok, f"Invalid request: {where} must be of type {kind}")
            out[name] = value
        elif kind == "string_list":
            require(
                isinstance(value, list) and all(isinstance(v, str) for v in value),
                f"Invalid request: {where} must be a list of strings",
            )
            out[name] = value
        elif kind is not None:
            raise bad_request(f"Invalid request: {where}: fields of type {kind} are not served by this test server")
        else:
            metadata[name] = value
    for name, spec in fields.items():
        if spec["type"] == "dense_vector":
            require(name in out, f"Invalid request: document {did!r} is missing the dense_vector field {name!r}")
    if metadata:
        out.update(check_metadata(metadata, did))
    return out


def upsert(ix: IndexState, ns: str, body: Any) -> tuple[int, Any]:
    docs = body.get("documents") if isinstance(body, dict) else None
    require(
        not isinstance(docs, list) or len(docs) <= 1000,
        f"Invalid request: the number of documents in an upsert request ({len(docs or [])}) exceeds the limit of 1000",
    )
    # Vector fields are type-checked by _check_document (NumPy), the envelope and ids by the schema.
    validate(
        "data",
        "UpsertDocumentsRequest",
        {"documents": [{"_id": d.get("_id")} if isinstance(d, dict) else d for d in docs or []]}
        if docs is not None
        else body,
    )
    staged = {d["_id"]: _check_document(ix, d) for d in docs}
    ix.namespaces.setdefault(ns, {}).update(staged)
    return 200, {"upserted_count": len(staged)}


def _project(doc: dict[str, Any], include: list[str] | None) -> dict[str, Any]:
    if include is None or "*" in include:
        return dict(doc)
    return {"_id": doc["_id"], **{k: doc[k] for k in include if k in doc}}


def _metadata(ix: IndexState, doc: dict[str, Any]) -> dict[str, Any]:
    vector_fields = {n for n, s in ix.schema["fields"].items() if s["type"] in ("dense_vector", "sparse_vector")}
    return {k: v for k, v in doc.items() if k not in vector_fields and k != "_id"}


def fetch(ix: IndexState, ns: str, body: Any) -> tuple[int, Any]:
    validate("data", "FetchDocumentsRequest", body)
    ids, filt = body.get("ids"), body.get("filter")
    require((ids is None) != (filt is None), "Invalid request: exactly one of ids or filter is required")
    require(filt is None or bool(filt), "Invalid request: filter must not be empty")
    require("pagination_token" not in body or filt is not None, "Invalid request: pagination_token needs a filter")
    rows = ix.namespaces.get(ns, {})
    include = body.get("include_fields") or None  # fetch: omitted, [] and ["*"] all mean every field
    out: dict[str, Any] = {"namespace": ns, "usage": {"read_units": 1}}
    if ids is not None:
        out["documents"] = {i: _project(rows[i], include) for i in ids if i in rows}
        return 200, out
    limit = body.get("limit", 100)
    hits = (i for i, d in rows.items() if matches(filt, _metadata(ix, d)))
    page, nxt = id_page(hits, body.get("pagination_token"), limit)
    out["documents"] = {i: _project(rows[i], include) for i in page}
    if nxt:
        out["pagination"] = {"next": nxt}
    return 200, out


def list_ids(ix: IndexState, ns: str, body: Any) -> tuple[int, Any]:
    validate("data", "ListDocumentsRequest", body)
    limit, prefix = body.get("limit", 100), body.get("prefix", "")
    ids = (i for i in ix.namespaces.get(ns, {}) if i.startswith(prefix))
    page, nxt = id_page(ids, body.get("pagination_token"), limit)
    out: dict[str, Any] = {"documents": [{"_id": i} for i in page], "namespace": ns, "usage": {"read_units": 1}}
    if nxt:
        out["pagination"] = {"next": nxt}
    return 200, out


def search(ix: IndexState, ns: str, body: Any) -> tuple[int, Any]:
    validate("data", "SearchDocumentsRequest", body)
    clauses = body["score_by"]
    require(
        len(clauses) == 1 and clauses[0]["type"] in ("dense_vector", "sparse_vector"),
        "Invalid request: this test server serves one dense_vector or sparse_vector score_by clause; text,"
        " query_string and embedding clauses need Pinecone's analyzers and models",
    )
    clause = clauses[0]
    names = clause.get("fields") or ([clause["field"]] if clause.get("field") else None)
    candidates = [n for n, s in ix.schema["fields"].items() if s["type"] == clause["type"]]
    require(
        bool(names) or len(candidates) == 1,
        f"Invalid request: score_by needs field: the schema has {len(candidates)} {clause['type']} fields",
    )
    field = (names or candidates)[0]
    spec = ix.schema["fields"].get(field)
    require(
        spec is not None and spec["type"] == clause["type"],
        f"Invalid request: field {field!r} is not a {clause['type']} field of the schema",
    )
    rows = [d for d in ix.namespaces.get(ns, {}).values() if matches(body.get("filter"), _metadata(ix, d))]
    rows = [d for d in rows if field in d]
    if clause["type"] == "dense_vector":
        query = float_array(clause.get("values"), "score_by/0/values")
        require(
            len(query) == spec["dimension"],
            f"Query vector dimension {len(query)} does not match the dimension {spec['dimension']} of field {field!r}",
        )
        scores = dense_scores(np.stack([d[field] for d in rows]), query, spec["metric"]) if rows else np.zeros(0)
    else:
        sv = clause.get("sparse_values") or {}
        weights = dict(zip(sv.get("indices", []), sv.get("values", []), strict=False))
        scores = np.array(
            [
                sum(
                    weights.get(i, 0.0) * float(v)
                    for i, v in zip(d[field]["indices"], d[field]["values"], strict=False)
                )
                for d in rows
            ]
        )
    order = np.argsort(-scores, kind="stable")[: body["top_k"]]
    include = body.get("include_fields") or []  # search: omitted and [] mean only _id and _score
    matches_out = []
    for i in order:
        score = float(scores[i])
        if clause["type"] == "dense_vector" and spec["metric"] == "euclidean":
            score = -score
        doc = _project(rows[i], include) if include else {"_id": rows[i]["_id"]}
        matches_out.append({**doc, "_score": np.float32(score)})
    return 200, {"matches": matches_out, "namespace": ns, "usage": {"read_units": 1}}


def delete(ix: IndexState, ns: str, body: Any) -> tuple[int, Any]:
    validate("data", "DeleteDocumentsRequest", body)
    ids, filt, every = body.get("ids"), body.get("filter"), body.get("delete_all", False)
    require(
        sum(bool(x) for x in (ids, filt, every)) == 1,
        "Invalid request: exactly one of ids, filter or delete_all is required",
    )
    rows = ix.namespaces.get(ns, {})
    if every:
        gone = list(rows)
    elif ids:
        gone = [i for i in ids if i in rows]
    else:
        gone = [i for i, d in rows.items() if matches(filt, _metadata(ix, d))]
    for i in gone:
        del rows[i]
    if not rows:
        ix.namespaces.pop(ns, None)
    return 200, {}
