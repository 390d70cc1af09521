"""Nearest-neighbour search by pgvector's own distance operators (for verification and tuning), the
search-time knobs of its indexes (HNSW ``hnsw.ef_search``, IVFFlat ``ivfflat.probes``), and index trials:
HNSW indexes with other build parameters on a private copy, for ``vecfmt tune`` to compare."""

from __future__ import annotations

import re
from contextlib import suppress
from typing import Any

import numpy as np
import psycopg
from psycopg import sql

from vecfmt.errors import StoreError
from vecfmt.stores.base import KnobInfo
from vecfmt.stores.pgvector.catalog import OPCLASS_SUFFIX, Extension, VectorIndex
from vecfmt.stores.pgvector.connect import Target

DISTANCE_OPERATOR = {"cosine": "<=>", "dot": "<#>", "euclidean": "<->", "manhattan": "<+>"}

# pgvector's bounds for its settings (hnsw.c, ivfflat.c) and its defaults
EF_SEARCH = KnobInfo(
    setting="hnsw.ef_search", values=(10, 20, 40, 80, 160, 320, 640, 1000), default=40, low=1, high=1000,
    trades="HNSW candidate list size per search: higher finds more true neighbours, each search is slower",
    below_k_truncates=True,
)  # fmt: skip
MAX_PROBES = 32768
HNSW_BUILD_BOUNDS = {"m": (2, 100), "ef_construction": (4, 1000)}


def index_knobs(indexes: list[VectorIndex], column: str, metric: str) -> dict[str, KnobInfo]:
    """The knobs of the indexes that can serve a search of ``column`` by ``metric`` (an index built for
    another metric cannot: a knob would then tune nothing)."""
    knobs: dict[str, KnobInfo] = {}
    for index in indexes:
        if index.column != column or index.metric != metric:
            continue
        if index.method == "hnsw":
            knobs.setdefault("ef_search", EF_SEARCH)
        elif index.method == "ivfflat" and "probes" not in knobs:
            lists = int(index.options.get("lists", "100"))
            values = sorted({min(lists, 1 << i) for i in range(16)})
            knobs["probes"] = KnobInfo(
                setting="ivfflat.probes", values=tuple(values), default=1, low=1, high=max(1, min(lists, MAX_PROBES)),
                trades=f"IVFFlat lists scanned per search (of {lists}): more finds more true neighbours, each "
                       "search is slower",
            )  # fmt: skip
    return knobs


def checked_settings(knobs: dict[str, KnobInfo], settings: dict[str, Any], what: str) -> list[tuple[str, int]]:
    """``settings`` (knob name -> value) as (server setting, whole number), each checked against its knob:
    only these numbers, never user text, reach the server."""
    out = []
    for name, value in settings.items():
        info = knobs.get(name)
        if info is None:
            have = ", ".join(sorted(knobs)) or "none: its vector column has no HNSW or IVFFlat index for this metric"
            raise StoreError(f"pgvector: {what} has no search setting {name!r} (it has: {have})")
        if isinstance(value, bool) or not isinstance(value, int | np.integer):
            raise StoreError(f"pgvector: search setting {name} must be a whole number, not {value!r}")
        if not info.low <= int(value) <= info.high:
            raise StoreError(f"pgvector: search setting {name} must be between {info.low} and {info.high}, not {value}")
        out.append((info.setting, int(value)))
    return out


def _search_sql(
    ext: Extension, relation: sql.Composable, id_column: str, vector_column_name: str, typname: str, metric: str,
    vector: np.ndarray, k: int, namespace: tuple[str, str] | None,
) -> tuple[sql.Composable, list[Any]]:  # fmt: skip
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
    return query, params


def _apply_settings(conn: psycopg.Connection, k: int, settings: list[tuple[str, int]]) -> None:
    """Inside the search's transaction (``set_config(..., true)`` is ``SET LOCAL``): the knobs given, else
    ef_search of at least k (an HNSW scan returns at most ef_search rows). With a knob set, sequential
    scans are off for this transaction: a knob is set to measure its index, and a planner that chose to
    scan a small table exactly would report perfect recall for every value."""
    values = dict(settings)
    values.setdefault("hnsw.ef_search", max(40, min(1000, int(k))))
    for name, value in values.items():
        conn.execute("SELECT set_config(%s, %s, true)", (name, str(int(value))))
    if settings:
        conn.execute("SELECT set_config('enable_seqscan', 'off', true)")


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
    settings: list[tuple[str, int]] | None = None,
) -> list[tuple[str, float]]:
    """The ``k`` nearest ids by pgvector's own distance (cosine distance, negative inner product,
    L2 or L1), through the index when there is one; ``settings`` from ``checked_settings``."""
    query, params = _search_sql(ext, relation, id_column, vector_column_name, typname, metric, vector, k, namespace)
    with conn.transaction():
        _apply_settings(conn, k, settings or [])
        rows = conn.execute(query, params).fetchall()
    return [(r[0], float(r[1])) for r in rows]


def explain_nearest(
    conn: psycopg.Connection, ext: Extension, relation: sql.Composable, id_column: str, vector_column_name: str,
    typname: str, metric: str, vector: np.ndarray, k: int, namespace: tuple[str, str] | None,
    settings: list[tuple[str, int]] | None = None,
) -> str:  # fmt: skip
    """The plan ``nearest`` runs with the same settings (EXPLAIN, not run): which index serves it."""
    query, params = _search_sql(ext, relation, id_column, vector_column_name, typname, metric, vector, k, namespace)
    with conn.transaction():
        _apply_settings(conn, k, settings or [])
        rows = conn.execute(sql.SQL("EXPLAIN {}").format(query), params).fetchall()
    return "\n".join(r[0] for r in rows)


KNOB_METHOD = {"ef_search": "hnsw", "probes": "ivfflat"}


def plan_methods(
    conn: psycopg.Connection, relid: int, ext: Extension, relation: sql.Composable, id_column: str,
    vector_column_name: str, typname: str, metric: str, vector: np.ndarray, k: int,
    namespace: tuple[str, str] | None, settings: list[tuple[str, int]] | None = None,
) -> set[str]:  # fmt: skip
    """The access methods (hnsw, ivfflat, btree, ...) of the table's indexes that the plan of ``nearest``
    with these settings reads (EXPLAIN, not run)."""
    query, params = _search_sql(ext, relation, id_column, vector_column_name, typname, metric, vector, k, namespace)
    with conn.transaction():
        _apply_settings(conn, k, settings or [])
        plan = conn.execute(sql.SQL("EXPLAIN (FORMAT JSON) {}").format(query), params).fetchone()[0]
    names: set[str] = set()

    def walk(node: Any) -> None:
        if isinstance(node, dict):
            if isinstance(node.get("Index Name"), str):
                names.add(node["Index Name"])
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    walk(plan)
    rows = conn.execute(
        "SELECT am.amname FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid JOIN pg_am am ON am.oid = c.relam "
        "WHERE i.indrelid = %s AND c.relname = ANY(%s)", (relid, sorted(names))).fetchall()  # fmt: skip
    return {r[0] for r in rows}


def knob_method(settings: dict[str, Any]) -> str:
    """The index method the settings tune (one knob at a time)."""
    methods = {KNOB_METHOD[name] for name in settings if name in KNOB_METHOD}
    if len(methods) != 1:
        raise StoreError("pgvector: say which index to check with one search setting (ef_search= or probes=)")
    return methods.pop()


TRIAL_TABLE = "vecfmt_tune"


class IndexTrial:
    """One namespace's ids and vectors copied into a temporary table of a session of its own, where HNSW
    indexes with other build parameters are built and searched: the source table and its indexes are only
    read. A temporary table belongs to its session: it is dropped on ``close``, and by the server when
    the session ends in any other way (a killed client), so a trial never leaves anything behind.

    The copy (made by the first ``build``) costs what the rows weigh (server side, no Python); its pages
    live in the session's ``temp_buffers`` (set to ``maintenance_work_mem``, default 1GB, before the copy),
    not in shared buffers, so latencies compare among trials better than against the table's own index."""

    def __init__(self, target: Target, ext: Extension, source: sql.Composable, where: sql.Composable,
                 id_column: str, column: str, typname: str, dimension: int, metric: str) -> None:  # fmt: skip
        if metric not in OPCLASS_SUFFIX:
            raise StoreError(f"pgvector cannot index {metric}")
        self.target, self.ext, self.typname, self.metric = target, ext, typname, metric
        self.relation = sql.Identifier("pg_temp", TRIAL_TABLE)
        self.params: dict[str, int] = {}
        memory = target.uri.option("maintenance_work_mem", "1GB") or "1GB"
        if not re.fullmatch(r"\d+\s*(kB|MB|GB|TB)?", memory):
            raise StoreError(f"pgvector {target.where}: maintenance_work_mem must look like 512MB or 2GB, "
                             f"not {memory!r}")  # fmt: skip
        self.copied = False
        # The copy is made by the first build, so that a caller can check every build first.
        self._copy_statements: list[sql.Composable] = [
            sql.SQL("SELECT set_config('temp_buffers', {}, false)").format(sql.Literal(memory)),
            sql.SQL("SELECT set_config('maintenance_work_mem', {}, false)").format(sql.Literal(memory)),
            sql.SQL("CREATE TEMPORARY TABLE {} (id text, v {})").format(self.relation, ext.type(typname, dimension)),
            sql.SQL("INSERT INTO {} SELECT {}::text, {} FROM {}{}").format(
                self.relation, sql.Identifier(id_column), sql.Identifier(column), source, where),
            sql.SQL("ANALYZE {}").format(self.relation),  # autovacuum never sees temporary tables
        ]  # fmt: skip
        self.conn = target.connect()  # read-write: a read-only session cannot create even a temporary table

    def _copy(self) -> None:
        with self.target.errors("cannot copy the vectors for an index trial"):
            for statement in self._copy_statements:
                self.conn.execute(statement)
        self.copied = True

    @staticmethod
    def check(**params: int) -> dict[str, int]:
        """The build parameters ``build`` would use (``m``, ``ef_construction``; pgvector's defaults 16 and 64
        for the one not given), or a StoreError naming the one pgvector would refuse."""
        for name, value in params.items():
            if name not in HNSW_BUILD_BOUNDS:
                raise StoreError(f"pgvector: an index trial takes m and ef_construction, not {name!r}")
            low, high = HNSW_BUILD_BOUNDS[name]
            if isinstance(value, bool) or not isinstance(value, int | np.integer) or not low <= value <= high:
                raise StoreError(f"pgvector: {name} must be a whole number between {low} and {high}, not {value!r}")
        chosen = {"m": int(params.get("m", 16)), "ef_construction": int(params.get("ef_construction", 64))}
        if chosen["ef_construction"] < 2 * chosen["m"]:
            raise StoreError(f"pgvector: ef_construction must be at least twice m (m={chosen['m']}, "
                             f"ef_construction={chosen['ef_construction']})")  # fmt: skip
        return chosen

    def build(self, **params: int) -> None:
        """(Re)build the trial's HNSW index with ``params`` (see ``check``)."""
        chosen = self.check(**params)
        if not self.copied:
            self._copy()
        opclass = sql.Identifier(self.ext.schema, f"{self.typname}_{OPCLASS_SUFFIX[self.metric]}")
        with self.target.errors("cannot build the trial index"):
            name = f"{TRIAL_TABLE}_idx"
            self.conn.execute(sql.SQL("DROP INDEX IF EXISTS {}").format(sql.Identifier("pg_temp", name)))
            self.conn.execute(sql.SQL("CREATE INDEX {} ON {} USING hnsw (v {}) WITH (m = {}, ef_construction = {})")
                              .format(sql.Identifier(name), self.relation, opclass, sql.Literal(chosen["m"]),
                                      sql.Literal(chosen["ef_construction"])))  # fmt: skip
        self.params = chosen

    def search_knobs(self) -> dict[str, KnobInfo]:
        return {"ef_search": EF_SEARCH} if self.params else {}

    def search(self, vector: np.ndarray, k: int, *, namespace: str = "", **settings: int) -> list[tuple[str, float]]:
        """``namespace`` is ignored: the copy holds the one namespace it was made of."""
        checked = checked_settings(self.search_knobs(), settings, "the index trial")
        with self.target.errors("search failed"):
            return nearest(self.conn, self.ext, self.relation, "id", "v", self.typname, self.metric, vector, k,
                           None, checked)  # fmt: skip

    def uses_index(self, vector: np.ndarray, k: int, *, namespace: str = "", **settings: int) -> bool:
        """Whether ``search`` with these settings reads the trial's index."""
        checked = checked_settings(self.search_knobs(), settings, "the index trial")
        with self.target.errors("cannot explain the search"):
            relid = self.conn.execute("SELECT %s::regclass::oid", (self.relation.as_string(self.conn),)).fetchone()[0]
            used = plan_methods(self.conn, relid, self.ext, self.relation, "id", "v", self.typname, self.metric,
                                vector, k, None, checked)  # fmt: skip
            return knob_method(settings) in used

    def close(self) -> None:
        if not self.conn.closed:
            if not self.conn.broken:
                with suppress(psycopg.Error):  # the session ends next, and its temporary table with it
                    self.conn.execute(sql.SQL("DROP TABLE IF EXISTS {}").format(self.relation))
            self.conn.close()

    def __enter__(self) -> IndexTrial:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
