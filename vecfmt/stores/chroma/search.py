"""``search()`` through ``collection.query`` (both sides share it), what a collection is (space, dimension),
and the identity ``copy`` compares to refuse reading and writing one collection."""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from vecfmt.errors import StoreError
from vecfmt.stores.chroma.catalog import DEFAULT_SPACE
from vecfmt.stores.chroma.connect import SCHEME, Target


def identity(target: Target) -> tuple[str, ...]:
    where = str(target.path) if target.path is not None else f"{target.host.lower()}:{target.port}"
    return (SCHEME, where, target.tenant, target.database, target.collection)


def space_of(collection: Any) -> str:
    """The collection's distance space: its configuration (Chroma 1.x), else the legacy ``hnsw:space``."""
    config = getattr(collection, "configuration_json", None) or {}
    for index in ("hnsw", "spann"):
        space = (config.get(index) or {}).get("space") if isinstance(config, dict) else None
        if space:
            return str(space)
    return str((collection.metadata or {}).get("hnsw:space") or DEFAULT_SPACE)


def dimension_of(target: Target, collection: Any) -> int | None:
    """The dimension Chroma fixed at the collection's first record; None while it is empty."""
    dim = getattr(getattr(collection, "_model", None), "dimension", None)
    if dim:
        return int(dim)
    with target.errors("cannot read a record"):
        found = collection.get(limit=1, include=["embeddings"])
    embeddings = found.get("embeddings")
    if embeddings is None or len(embeddings) == 0:
        return None
    return len(embeddings[0])


def nearest(target: Target, collection: Any, vector: np.ndarray, k: int) -> list[tuple[str, float]]:
    """The ``k`` nearest records by Chroma's distance (smaller is nearer: squared L2, 1 - cosine, 1 - dot)."""
    if collection is None:
        raise StoreError(f"{target.label}: no collection to search")
    query = np.ascontiguousarray(vector, dtype=np.float32).reshape(1, -1)
    with target.errors("search failed"):
        found = collection.query(query_embeddings=query, n_results=k, include=["distances"])
    ids = found["ids"][0]
    distances = found["distances"][0] if found.get("distances") else [0.0] * len(ids)
    # None: a distance that overflowed float32 (Chroma sends NaN as null)
    return [(str(i), math.nan if d is None else float(d)) for i, d in zip(ids, distances, strict=True)]
