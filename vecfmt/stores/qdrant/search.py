"""``search()`` through ``query_points`` on either side, giving back the dump's ids."""

from __future__ import annotations

import numpy as np

from vecfmt.stores.qdrant.catalog import namespace_filter
from vecfmt.stores.qdrant.connect import Target
from vecfmt.stores.qdrant.ids import ID_KEY, record_id


def nearest(target: Target, collection: str, using: str, vector: np.ndarray, k: int, namespace: str,
            namespaced: bool) -> list[tuple[str, float]]:  # fmt: skip
    """The ``k`` nearest points with Qdrant's scores (cosine and dot: similarity, larger is nearer; Euclid and
    Manhattan: distance, smaller is nearer). ``namespaced``: the collection holds namespaces, so the default
    namespace is filtered to the points without one."""
    query_filter = namespace_filter(namespace) if namespace or namespaced else None
    with target.errors("search failed"):
        found = target.client().query_points(
            collection, query=np.asarray(vector, dtype=np.float32).tolist(), using=using or None,
            query_filter=query_filter, limit=k, with_payload=[ID_KEY], with_vectors=False,
        )  # fmt: skip
    return [(record_id(p.id, dict(p.payload or {})), float(p.score)) for p in found.points]
