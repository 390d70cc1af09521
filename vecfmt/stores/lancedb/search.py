"""Search in a LanceDB table, and the knobs of its vector index (shared by the exporter and the importer)."""

from __future__ import annotations

from typing import Any

import numpy as np

from vecfmt.errors import StoreError
from vecfmt.stores.base import KnobInfo
from vecfmt.stores.lancedb.connect import DISTANCE_TYPES, _in_namespace

# Search-time knobs of an IVF index (and of HNSW within IVF): LanceDB's query builder methods of these names.
SEARCH_KNOBS = {
    "nprobes": KnobInfo("nprobes", (1, 2, 4, 8, 16, 32, 64, 128, 256), 20, 1, 65536,
                        "IVF partitions searched: more finds more true neighbours, each search is slower"),
    "refine_factor": KnobInfo("refine_factor", (1, 2, 5, 10, 20, 50), 0, 1, 1000,
                              "candidates re-ranked by exact distance, as a multiple of k (unset: none): more "
                              "undoes more quantisation error, each search reads more vectors"),
    "ef": KnobInfo("ef", (10, 20, 40, 80, 160, 320, 640, 1000), 0, 1, 100000,
                   "HNSW candidates per partition (unset: 1.5 x k): more finds more, each search is slower"),
}  # fmt: skip


def _checked_settings(knobs: dict[str, KnobInfo], settings: dict[str, Any], table: str) -> dict[str, int]:
    out = {}
    for name, value in settings.items():
        info = knobs.get(name)
        if info is None:
            have = ", ".join(knobs) or "none: the vector column has no IVF index"
            raise StoreError(f"LanceDB table {table!r} has no search setting {name!r} (it has: {have})")
        if isinstance(value, bool) or not isinstance(value, int | np.integer) or not info.low <= value <= info.high:
            raise StoreError(f"lancedb: search setting {name} must be a whole number between {info.low} and "
                             f"{info.high}, not {value!r}")  # fmt: skip
        out[name] = int(value)
    return out


def _search(table: Any, vector_column: str, id_column: str, metric: str, namespace_column: str | None,
            vector: np.ndarray, k: int, namespace: str, settings: dict[str, int] | None = None,
            ) -> list[tuple[str, float]]:  # fmt: skip
    """The ``k`` nearest ids and their distances, within ``namespace`` when the table has several;
    ``settings`` name query builder methods (``SEARCH_KNOBS``), checked."""
    query = (table.search(np.asarray(vector, np.float32), vector_column_name=vector_column)
             .distance_type(DISTANCE_TYPES.get(metric, "l2")).select([id_column, "_distance"]).limit(k))
    for name, value in (settings or {}).items():
        query = getattr(query, name)(value)
    if namespace_column is not None:
        query = query.where(_in_namespace(namespace_column, namespace))
    result = query.to_arrow()
    return list(zip(result.column(id_column).to_pylist(), result.column("_distance").to_pylist(), strict=True))
