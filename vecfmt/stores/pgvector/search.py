"""Nearest-neighbour search by pgvector's own distance operators (for verification and tuning)."""

from __future__ import annotations

from typing import Any

import numpy as np
import psycopg
from psycopg import sql

from vecfmt.errors import StoreError
from vecfmt.stores.pgvector.catalog import Extension

DISTANCE_OPERATOR = {"cosine": "<=>", "dot": "<#>", "euclidean": "<->", "manhattan": "<+>"}


def nearest(
    conn: psycopg.Connection,
    ext: Extension,
    relation: sql.Composable,
    id_column: str,
    vector_column_name: str,
    typname: str,
    metric: str,
    vector: np.ndarray,
    k: int,
    namespace: tuple[str, str] | None,
) -> list[tuple[str, float]]:
    """The ``k`` nearest ids by pgvector's own distance (cosine distance, negative inner product,
    L2 or L1), through the index when there is one."""
    if metric not in DISTANCE_OPERATOR:
        raise StoreError(f"pgvector cannot search by {metric}")
    literal = "[" + ",".join(repr(float(x)) for x in np.asarray(vector, np.float32).ravel()) + "]"
    distance = sql.SQL("{} {} %s::{}").format(sql.Identifier(vector_column_name),
                                            ext.operator(DISTANCE_OPERATOR[metric]), ext.type(typname))  # fmt: skip
    where = sql.SQL("")
    params: list[Any] = [literal]
    if namespace is not None and namespace[1] == "":
        # The default namespace holds NULL and '' alike, as the exporter files them.
        where = sql.SQL(" WHERE ({0} IS NULL OR {0}::text = '')").format(sql.Identifier(namespace[0]))
    elif namespace is not None:
        where = sql.SQL(" WHERE {} = %s").format(sql.Identifier(namespace[0]))
        params.append(namespace[1])
    params.append(int(k))
    query = sql.SQL("SELECT {}::text, {} AS distance FROM {}{} ORDER BY distance LIMIT %s").format(
        sql.Identifier(id_column), distance, relation, where)
    with conn.transaction():
        conn.execute("SELECT set_config('hnsw.ef_search', %s, true)", (str(max(40, min(1000, int(k)))),))
        rows = conn.execute(query, params).fetchall()
    return [(r[0], float(r[1])) for r in rows]
