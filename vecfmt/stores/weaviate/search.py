"""``search()`` through ``near_vector`` (the client's query API), and the collection's identity (what
``copy`` compares to refuse reading and writing one collection)."""

from __future__ import annotations

import numpy as np

from vecfmt.stores.weaviate.catalog import tenant_of
from vecfmt.stores.weaviate.connect import SCHEME, Target


def identity(target: Target) -> tuple[str, ...]:
    return (SCHEME, f"{target.host.lower()}:{target.port}", target.collection)


def nearest(target: Target, multi_tenant: bool, vector_name: str, id_property: str | None, vector: np.ndarray,
            k: int, namespace: str) -> list[tuple[str, float]]:  # fmt: skip
    """The ``k`` nearest objects by the store's distance (smaller is nearer), as the dump's ids."""
    from weaviate.classes.query import MetadataQuery

    handle = target.client().collections.use(target.collection)
    if multi_tenant:
        handle = handle.with_tenant(tenant_of(namespace))
    with target.errors("search failed"):
        found = handle.query.near_vector(
            near_vector=np.asarray(vector, dtype=np.float32).tolist(), limit=k,
            target_vector=vector_name or None, return_metadata=MetadataQuery(distance=True),
            return_properties=[id_property] if id_property else [],
        )  # fmt: skip
    out = []
    for o in found.objects:
        original = o.properties.get(id_property) if id_property else None
        out.append((original if isinstance(original, str) else str(o.uuid), float(o.metadata.distance or 0.0)))
    return out
