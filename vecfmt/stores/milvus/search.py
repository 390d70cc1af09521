"""``search()`` through ``client.search`` on one vector field, within a namespace's partition."""

from __future__ import annotations

from typing import Any

import numpy as np

from vecfmt.stores.milvus.connect import Target


def nearest(target: Target, collection: str, field: str, pk: str, vector: np.ndarray, k: int,
            partitions: list[str] | None) -> list[tuple[str, float]]:  # fmt: skip
    """The ``k`` nearest rows as (id, Milvus's distance): for COSINE and IP a similarity (larger is nearer),
    for L2 the squared distance (smaller is nearer)."""
    target.load(collection)
    query: Any = [np.asarray(vector, dtype=np.float32)]
    with target.errors("search failed"):
        found = target.client().search(collection, data=query, limit=k, anns_field=field, partition_names=partitions,
                                       output_fields=[pk])  # fmt: skip
    return [(str(hit["id"]), float(hit["distance"])) for hit in found[0]]
