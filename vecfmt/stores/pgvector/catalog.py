"""What the database has: pgvector's types and limits, and catalog queries for relations, their
attributes, primary key, vector indexes and the definitions a vecfmt import saved in a table comment."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import psycopg
from psycopg import sql

from vecfmt.stores.pgvector.copy_binary import INT_TYPES, TEXT_TYPES

# --- pgvector facts ------------------------------------------------------------------------------

SPARSE_TYPE_NAME = "sparsevec"
MAX_DIM = 16_000  # vector/halfvec storage limit (VECTOR_MAX_DIM, HALFVEC_MAX_DIM)
MAX_SPARSE_DIM = 1_000_000_000
INDEX_MAX_DIM = {"vector": 2_000, "halfvec": 4_000}  # hnsw and ivfflat
HNSW_MAX_SPARSE_NNZ = 1_000
PLAIN_STORAGE_MAX_DIM = {"vector": 1_900, "halfvec": 3_800}  # the row still fits in an 8 kB page

# operator-class suffix <-> canonical metric; the class is <type>_<suffix> (vector_cosine_ops, ...)
OPCLASS_SUFFIX = {"cosine": "cosine_ops", "dot": "ip_ops", "euclidean": "l2_ops", "manhattan": "l1_ops"}
METRIC_OF_SUFFIX = {v: k for k, v in OPCLASS_SUFFIX.items()} | {"hamming_ops": "hamming"}

ID_TYPES = TEXT_TYPES | set(INT_TYPES) | {"uuid"}
JSON_TYPES = {"json", "jsonb"}

DEFAULT_VECTOR_COLUMN = "embedding"
DEFAULT_SPARSE_COLUMN = "sparse_embedding"
DEFAULT_NAMESPACE_COLUMN = "namespace"


def column_list(names: list[str]) -> sql.Composable:
    return sql.SQL(", ").join(sql.Identifier(n) for n in names)


@dataclass
class Extension:
    schema: str
    version: str

    def type(self, name: str, dimension: int | None = None) -> sql.Composable:
        base = sql.SQL("{}.{}").format(sql.Identifier(self.schema), sql.Identifier(name))
        return base if dimension is None else sql.SQL("{}({})").format(base, sql.Literal(int(dimension)))

    def operator(self, symbol: str) -> sql.Composable:
        return sql.SQL("OPERATOR({}.{})").format(sql.Identifier(self.schema), sql.SQL(symbol))


def find_extension(conn: psycopg.Connection) -> Extension | None:
    row = conn.execute(
        "SELECT n.nspname, e.extversion FROM pg_extension e JOIN pg_namespace n ON n.oid = e.extnamespace "
        "WHERE e.extname = 'vector'"
    ).fetchone()
    return Extension(row[0], row[1]) if row else None


@dataclass
class Attribute:
    name: str
    typname: str  # pg_type.typname: vector, halfvec, int8, jsonb, ...
    sql_type: str  # format_type(): "vector(768)", "character varying(20)", ...
    typmod: int
    is_pgvector: bool  # a type of the pgvector extension (not some other "vector")
    not_null: bool = False


def find_relation(conn: psycopg.Connection, schema: str | None, table: str) -> tuple[int, str, str] | None:
    """(oid, schema, name) of a table/view by name (in ``schema`` or the search path), or None."""
    if schema is not None:
        row = conn.execute(
            "SELECT c.oid, n.nspname, c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
            "WHERE n.nspname = %s AND c.relname = %s AND c.relkind IN ('r', 'p', 'v', 'm', 'f')",
            (schema, table),
        ).fetchone()
    else:
        row = conn.execute(
            "SELECT c.oid, n.nspname, c.relname FROM unnest(current_schemas(false)) WITH ORDINALITY s(name, pos) "
            "JOIN pg_namespace n ON n.nspname = s.name JOIN pg_class c ON c.relnamespace = n.oid "
            "WHERE c.relname = %s AND c.relkind IN ('r', 'p', 'v', 'm', 'f') ORDER BY s.pos LIMIT 1",
            (table,),
        ).fetchone()
    return (row[0], row[1], row[2]) if row else None


def table_attributes(conn: psycopg.Connection, relid: int) -> list[Attribute]:
    rows = conn.execute(
        "SELECT a.attname, t.typname, format_type(a.atttypid, a.atttypmod), a.atttypmod, "
        "  EXISTS (SELECT 1 FROM pg_depend d JOIN pg_extension e ON e.oid = d.refobjid "
        "          WHERE d.objid = t.oid AND d.deptype = 'e' AND e.extname = 'vector'), a.attnotnull "
        "FROM pg_attribute a JOIN pg_type t ON t.oid = a.atttypid "
        "WHERE a.attrelid = %s AND a.attnum > 0 AND NOT a.attisdropped ORDER BY a.attnum",
        (relid,),
    ).fetchall()
    return [Attribute(*row) for row in rows]


def query_attributes(conn: psycopg.Connection, query: sql.Composable) -> list[Attribute]:
    with conn.cursor() as cur:
        # binary=True: the extended protocol, whose one Parse message refuses a second statement hidden
        # in query= (e.g. "...) s; COMMIT; DELETE ..."); LIMIT 0 returns no rows to decode.
        cur.execute(sql.SQL("SELECT * FROM ({}) AS vecfmt_source LIMIT 0").format(query), binary=True)
        result = cur.pgresult
        assert result is not None and cur.description is not None
        described = [(c.name, result.ftype(i), result.fmod(i)) for i, c in enumerate(cur.description)]
    out = []
    for name, oid, typmod in described:
        row = conn.execute(
            "SELECT t.typname, format_type(t.oid, %s), EXISTS (SELECT 1 FROM pg_depend d "
            "  JOIN pg_extension e ON e.oid = d.refobjid WHERE d.objid = t.oid AND d.deptype = 'e' "
            "  AND e.extname = 'vector') FROM pg_type t WHERE t.oid = %s",
            (typmod, oid),
        ).fetchone()
        assert row is not None
        out.append(Attribute(name, row[0], row[1], typmod, row[2]))
    return out


def primary_key(conn: psycopg.Connection, relid: int) -> list[str]:
    rows = conn.execute(
        "SELECT a.attname FROM pg_index i JOIN pg_attribute a ON a.attrelid = i.indrelid "
        "AND a.attnum = ANY(i.indkey) WHERE i.indrelid = %s AND i.indisprimary ORDER BY a.attnum",
        (relid,),
    ).fetchall()
    return [r[0] for r in rows]


@dataclass
class VectorIndex:
    column: str
    method: str  # hnsw | ivfflat
    opclass: str
    options: dict[str, str]

    @property
    def metric(self) -> str | None:
        suffix = self.opclass.split("_", 1)[1] if "_" in self.opclass else ""
        return METRIC_OF_SUFFIX.get(suffix)


def vector_indexes(conn: psycopg.Connection, relid: int) -> list[VectorIndex]:
    rows = conn.execute(
        "SELECT a.attname, am.amname, opc.opcname, c.reloptions FROM pg_index i "
        "JOIN pg_class c ON c.oid = i.indexrelid JOIN pg_am am ON am.oid = c.relam "
        "JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = i.indkey[0] "
        "JOIN pg_opclass opc ON opc.oid = i.indclass[0] "
        "WHERE i.indrelid = %s AND i.indnatts = 1 AND am.amname IN ('hnsw', 'ivfflat') ORDER BY i.indexrelid",
        (relid,),
    ).fetchall()
    out = []
    for column, method, opclass, reloptions in rows:
        options = dict(o.split("=", 1) for o in (reloptions or []) if "=" in o)
        out.append(VectorIndex(column, method, opclass, options))
    return out


COMMENT_KEY = "vecfmt"


def saved_definitions(conn: psycopg.Connection, relid: int) -> dict[str, Any]:
    """The definitions a vecfmt import keeps in its table's comment (JSON under "vecfmt"), or {}."""
    row = conn.execute("SELECT obj_description(%s, 'pg_class')", (relid,)).fetchone()
    try:
        saved = json.loads(row[0]).get(COMMENT_KEY) if row and row[0] else None
    except (ValueError, AttributeError):
        return {}
    if not isinstance(saved, dict):
        return {}
    model = saved.get("embedding_model")
    if isinstance(model, dict) and not set(model) <= {"name", "provider", "dimension"}:
        saved["embedding_model"] = None
    return saved


def table_identity(conn: psycopg.Connection, scheme: str, schema: str | None, table: str) -> tuple[str, ...]:
    """(scheme, database, schema, table) as the server resolves them, equal however the server is reached
    (host name, address, socket): the cluster's system identifier when this role may read it, else the
    address and port the server answered on. For ``copy`` to tell a table from itself; no secrets."""
    row = conn.execute(
        "SELECT current_database(), coalesce(%s, current_schema()), "
        "coalesce(host(inet_server_addr()), 'local') || ':' || current_setting('port'), "
        "has_function_privilege('pg_control_system()', 'EXECUTE')",
        (schema,),
    ).fetchone()
    server = row[2]
    if row[3]:  # asked only when allowed: a failed query would abort the caller's transaction
        server = f"cluster {conn.execute('SELECT system_identifier FROM pg_control_system()').fetchone()[0]}"
    return (scheme, f"{row[0]}@{server}", str(row[1]), table)
