"""``search()`` through ``query`` (vector indexes) or the Documents API's ``search`` (document indexes),
and the index's identity (what ``copy`` compares to refuse reading and writing one index)."""

from __future__ import annotations

from typing import Any

import numpy as np

from vecfmt.errors import StoreError
from vecfmt.stores.pinecone.catalog import IndexInfo, document_namespace
from vecfmt.stores.pinecone.connect import SCHEME, Target


def identity(info: IndexInfo) -> tuple[str, ...]:
    return (SCHEME, info.host.rstrip("/"), info.name)


def nearest(target: Target, index: Any, info: IndexInfo, field: str | None, vector: np.ndarray, k: int,
            namespace: str) -> list[tuple[str, float]]:  # fmt: skip
    values = np.asarray(vector, dtype=np.float32).tolist()
    if info.kind == "vector":
        if not info.dimension:
            raise StoreError(f"pinecone {target.label}: a sparse-only index has no dense vector to search with")
        response = target.call("search failed", index.query, vector=values, top_k=k, namespace=namespace)
        return [(m.id, float(m.score)) for m in response.matches]
    if field is None:
        raise StoreError(f"pinecone {target.label}: the index has no dense vector field to search")
    clause = {"type": "dense_vector", "field": field, "values": values}
    response = target.call("search failed", index.documents.search, namespace=document_namespace(namespace),
                           score_by=[clause], top_k=k, include_fields=[])  # fmt: skip
    return [(doc.id, float(doc.score or 0.0)) for doc in response.matches]
