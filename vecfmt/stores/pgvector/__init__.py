"""PostgreSQL + pgvector: export with one binary COPY through ADBC, import with binary COPY built by NumPy.

URI::

    pgvector://USER:PASSWORD@HOST:PORT/DBNAME?table=items&schema=public&...

LOCATION (everything between ``://`` and ``?``) becomes the libpq URI ``postgresql://LOCATION``. It may
be partial or empty: libpq fills the rest from the PG* environment variables (PGHOST, PGPORT, PGUSER,
PGPASSWORD, PGDATABASE, PGSSLMODE, ...) and ``~/.pgpass``. libpq connection keywords may also be given
as options, e.g. ``pgvector://?host=/var/run/postgresql&dbname=app&table=items`` for a Unix socket
(``password`` is refused as an option: put it in LOCATION or PGPASSWORD). No password ever appears in
a manifest, a log line or an error message.

Options (all optional except ``table`` or ``query``):

=====================  ===================================================================================
``table``, ``schema``  the table (schema: default the search path / ``current_schema()``)
``query``              export only: any SELECT, run as given in a read-only transaction (instead of table)
``id``                 id column (default: the single-column primary key, else ``id``)
``vector``             dense vector column(s), comma separated, primary first (default: every ``vector``
                       / ``halfvec`` column, in table order; import: ``embedding``)
``sparse``             the ``sparsevec`` column (default: the table's one; import: ``sparse_embedding``)
``metadata``           json/jsonb column (default ``metadata``); ``metadata=`` (empty) for none
``document``           text column (default ``document``)
``namespace_column``   column holding namespaces (export default: ``namespace`` if the table has one;
                       import default: ``namespace``, created only when the dump has namespaces)
``fold``               export: columns folded into the JSON metadata (default: every other column;
                       ``fold=`` (empty) for none)
``metric``             cosine | dot | euclidean | manhattan (export: default from the vector index's
                       operator class, then a vecfmt table comment, else cosine; import: the dump's)
``type``               import: ``vector`` or ``halfvec`` for created dense columns (default: the source's
                       type when the dump came from pgvector, else ``vector``)
``sparse_dim``         import: dimension of a created ``sparsevec`` column (default: from a pgvector dump)
``index``              import: auto | hnsw | ivfflat | none (auto: the source's index when the dump came
                       from pgvector, else hnsw when the dimension allows it)
``m``, ``ef_construction``, ``lists``
                       index parameters (hnsw; ivfflat lists default rows/1000, sqrt(rows) above 1M)
``maintenance_work_mem``, ``workers``
                       for the index build (default ``1GB``, and the server's
                       max_parallel_maintenance_workers but at least 2)
``storage``            import: plain | external | default for created dense columns. Default ``plain``
                       when a row fits a page (vector <= 1900 dims, halfvec <= 3800): vectors stay in the
                       heap instead of TOAST, which loads 1.2-1.4x faster and scans faster
``parallel``           import: loading connections (default 2; batches still commit in dump order)
=====================  ===================================================================================

Type mapping: ``vector(d)`` <-> ``values`` (float32, exact); ``halfvec(d)`` -> float32 exactly, float32 ->
``halfvec`` rounds to nearest half (values beyond +-65504 are refused); ``sparsevec(d)`` <->
``sparse_values`` with 0-based indices (pgvector's binary form and Pinecone's convention; pgvector's
*text* form ``{1:0.5}/d`` is 1-based; explicit zeros are left out on import, pgvector refuses them).
Ids of any type are exported as text (their SQL type is kept in
the manifest's ``extra.pgvector`` and restored on import for text, varchar, smallint, integer, bigint,
uuid). Columns folded into the metadata keep their SQL type there too, and an import of that dump
recreates them (typmods such as ``varchar(20)`` are dropped) and fills them from the JSON.

Import writes each batch with one binary COPY, committed together with a progress row in
``vecfmt_import_progress`` (same schema as the table), so an import killed at any point resumes with
``resume=True`` exactly where it stopped. Upserts go through a temporary staging table and
``INSERT ... ON CONFLICT``. The primary key of a table vecfmt creates, and its vector index, are built
after the load; then the table is analysed. Such a table's comment keeps what its columns cannot say
(vector names, metrics, the embedding model) for a later export.

pgvector has no namespaces: a dump's namespaces go into the ``namespace_column`` (part of the primary
key), and an export with a namespace column gives one namespace per distinct value (NULL is ``""``).
"""

from __future__ import annotations

import json
import logging
import math
import os
import queue
import re
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import psycopg
import pyarrow as pa
import pyarrow.compute as pc
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from vecfmt.errors import InvalidDataError, StoreError
from vecfmt.manifest import EmbeddingModel, Manifest, Source, VectorSpec
from vecfmt.schema import (
    DOCUMENT,
    ID,
    METADATA,
    METRICS,
    SPARSE_VALUES,
    VALUES,
    check_metric,
    vector_column,
    vectors_array,
)
from vecfmt.stores.base import Chunk, Description, IfExists, Slice, StoreURI, require_sdk
from vecfmt.stores.pgvector.copy_binary import (
    COPY_HEADER,
    COPY_TRAILER,
    DENSE_TYPES,
    INT_TYPES,
    MAX_SPARSE_NNZ,
    TEXT_TYPES,
    CopyRows,
    _encode_dense,
    _encode_id,
    check_sparse,
    decode_dense,
    decode_sparse,
    sparse_payload,
)

SCHEME = "pgvector"
log = logging.getLogger("vecfmt.pgvector")

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
DISTANCE_OPERATOR = {"cosine": "<=>", "dot": "<#>", "euclidean": "<->", "manhattan": "<+>"}

ID_TYPES = TEXT_TYPES | set(INT_TYPES) | {"uuid"}
JSON_TYPES = {"json", "jsonb"}

PROGRESS_TABLE = "vecfmt_import_progress"
STAGING_TABLE = "vecfmt_staging"
STAGING_METADATA = "vecfmt_metadata"
DEFAULT_VECTOR_COLUMN = "embedding"
DEFAULT_SPARSE_COLUMN = "sparse_embedding"
DEFAULT_NAMESPACE_COLUMN = "namespace"
DEFAULT_PARALLEL = 2  # loading connections: measured ~10-15% faster than one on 2 cores (PG 15 and 18)


# libpq connection keywords accepted as URI options (password deliberately not)
LIBPQ_OPTIONS = {
    "host", "hostaddr", "port", "user", "dbname", "passfile", "connect_timeout", "sslmode", "sslcert",
    "sslkey", "sslrootcert", "sslcrl", "application_name", "options", "target_session_attrs", "service",
    "gssencmode", "sslnegotiation", "channel_binding", "krbsrvname",
}  # fmt: skip
STORE_OPTIONS = {
    "table", "schema", "query", "id", "vector", "sparse", "metadata", "document", "namespace_column",
    "fold", "metric", "type", "sparse_dim", "index", "m", "ef_construction", "lists",
    "maintenance_work_mem", "workers", "storage", "parallel",
}  # fmt: skip


# --- connection, options and one-line errors ---------------------------------------------------------


class Target:
    """The parsed URI: where to connect (conninfo, kept secret), what to show, and the store options."""

    def __init__(self, uri: StoreURI) -> None:
        self.uri = uri
        self._secrets = _secrets_of(uri.location)
        unknown = sorted(set(uri.options) - LIBPQ_OPTIONS - STORE_OPTIONS - {"password"})
        if unknown:
            raise StoreError(f"pgvector: unknown option {unknown[0]!r} (see docs/pgvector.md)")
        if "password" in uri.options:
            raise StoreError("pgvector: put the password in the URI (USER:PASSWORD@HOST) or in PGPASSWORD, "
                             "not in an option")  # fmt: skip
        if uri.location.split("/", 1)[0].count("@") > 1:
            # libpq would cut the password at its first "@" and send the rest out as part of a host name
            raise StoreError("pgvector: the URI has more than one '@' before the host; write an '@' inside "
                             "the user or password as %40")
        base = f"postgresql://{uri.location}" if uri.location else ""
        params = {k: v for k, v in uri.options.items() if k in LIBPQ_OPTIONS}
        params.setdefault("connect_timeout", "10")
        params.setdefault("application_name", "vecfmt")
        try:
            self.conninfo = make_conninfo(base, **params)
            parts = conninfo_to_dict(self.conninfo)
        except psycopg.Error as exc:
            raise StoreError(f"pgvector: invalid connection string: {self.clean(str(exc))}") from None
        if parts.get("password"):
            self._secrets.append(str(parts["password"]))
        if os.environ.get("PGPASSWORD"):
            self._secrets.append(os.environ["PGPASSWORD"])
        host = parts.get("host") or os.environ.get("PGHOST") or "localhost"
        port = parts.get("port") or os.environ.get("PGPORT") or "5432"
        dbname = parts.get("dbname") or os.environ.get("PGDATABASE") or parts.get("user") or ""
        self.where = f"{dbname}@{host}:{port}"  # for messages: no user, no password
        self.schema = uri.option("schema") or None
        self.table = uri.option("table") or None
        self.query = uri.option("query") or None

    def relation_label(self) -> str:
        if self.table is None:
            return "query"
        return f"{self.schema}.{self.table}" if self.schema else self.table

    def clean(self, text: str) -> str:
        """``text`` as one line with every secret removed."""
        for secret in sorted(set(self._secrets), key=len, reverse=True):
            if secret:
                text = text.replace(secret, "***")
        text = re.sub(r"(password\s*=\s*)('[^']*'|\S+)", r"\1***", text, flags=re.IGNORECASE)
        text = re.sub(r"(://[^:/@\s]*:)[^@\s]*@", r"\1***@", text)
        lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
        # Drop psql-style context (LINE 1: ..., carets, the query echo ADBC appends).
        lines = [ln for ln in lines if not re.match(r"^(LINE \d+:|\^|Query was:|HINT:\s*$)", ln)]
        return " ".join(lines)[:500] or "unknown error"

    def fail(self, doing: str, exc: BaseException) -> StoreError:
        return StoreError(f"pgvector {self.where}: {doing}: {self.clean(_message(exc))}")

    @contextmanager
    def errors(self, doing: str) -> Iterator[None]:
        """Turn driver errors into one-line StoreErrors without secrets (and without their cause chain,
        whose messages could hold the connection string)."""
        try:
            yield
        except (StoreError, InvalidDataError):
            raise
        except psycopg.Error as exc:
            raise self.fail(doing, exc) from None
        except Exception as exc:
            if type(exc).__module__.startswith("adbc_driver"):
                raise self.fail(doing, exc) from None
            raise

    def connect(self, *, autocommit: bool = True) -> psycopg.Connection:
        with self.errors("cannot connect"):
            return psycopg.connect(self.conninfo, autocommit=autocommit)


def _secrets_of(location: str) -> list[str]:
    from urllib.parse import unquote, urlsplit

    try:
        password = urlsplit(f"postgresql://{location}").password
    except ValueError:
        password = None
    if not password:
        # An unparsable LOCATION may still hold user:secret@; take what is between the first ":" and "@".
        match = re.match(r"^[^:@/]*:([^@]*)@", location)
        password = match.group(1) if match else None
    return [password, unquote(password)] if password else []


def _message(exc: BaseException) -> str:
    diag = getattr(exc, "diag", None)
    primary = getattr(diag, "message_primary", None) if diag is not None else None
    if primary:
        detail = getattr(diag, "message_detail", None)
        return f"{primary} ({detail})" if detail else primary
    text = str(exc).strip()
    return text or type(exc).__name__


def _column_list(names: list[str]) -> sql.Composable:
    return sql.SQL(", ").join(sql.Identifier(n) for n in names)


@dataclass
class _Extension:
    schema: str
    version: str

    def type(self, name: str, dimension: int | None = None) -> sql.Composable:
        base = sql.SQL("{}.{}").format(sql.Identifier(self.schema), sql.Identifier(name))
        return base if dimension is None else sql.SQL("{}({})").format(base, sql.Literal(int(dimension)))

    def operator(self, symbol: str) -> sql.Composable:
        return sql.SQL("OPERATOR({}.{})").format(sql.Identifier(self.schema), sql.SQL(symbol))


def _extension(conn: psycopg.Connection) -> _Extension | None:
    row = conn.execute(
        "SELECT n.nspname, e.extversion FROM pg_extension e JOIN pg_namespace n ON n.oid = e.extnamespace "
        "WHERE e.extname = 'vector'"
    ).fetchone()
    return _Extension(row[0], row[1]) if row else None


@dataclass
class _Attribute:
    name: str
    typname: str  # pg_type.typname: vector, halfvec, int8, jsonb, ...
    sql_type: str  # format_type(): "vector(768)", "character varying(20)", ...
    typmod: int
    is_pgvector: bool  # a type of the pgvector extension (not some other "vector")
    not_null: bool = False


def _relation(conn: psycopg.Connection, schema: str | None, table: str) -> tuple[int, str, str] | None:
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


def _attributes(conn: psycopg.Connection, relid: int) -> list[_Attribute]:
    rows = conn.execute(
        "SELECT a.attname, t.typname, format_type(a.atttypid, a.atttypmod), a.atttypmod, "
        "  EXISTS (SELECT 1 FROM pg_depend d JOIN pg_extension e ON e.oid = d.refobjid "
        "          WHERE d.objid = t.oid AND d.deptype = 'e' AND e.extname = 'vector'), a.attnotnull "
        "FROM pg_attribute a JOIN pg_type t ON t.oid = a.atttypid "
        "WHERE a.attrelid = %s AND a.attnum > 0 AND NOT a.attisdropped ORDER BY a.attnum",
        (relid,),
    ).fetchall()
    return [_Attribute(*row) for row in rows]


def _query_attributes(conn: psycopg.Connection, query: sql.Composable) -> list[_Attribute]:
    with conn.cursor() as cur:
        cur.execute(sql.SQL("SELECT * FROM ({}) AS vecfmt_source LIMIT 0").format(query))
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
        out.append(_Attribute(name, row[0], row[1], typmod, row[2]))
    return out


def _primary_key(conn: psycopg.Connection, relid: int) -> list[str]:
    rows = conn.execute(
        "SELECT a.attname FROM pg_index i JOIN pg_attribute a ON a.attrelid = i.indrelid "
        "AND a.attnum = ANY(i.indkey) WHERE i.indrelid = %s AND i.indisprimary ORDER BY a.attnum",
        (relid,),
    ).fetchall()
    return [r[0] for r in rows]


@dataclass
class _Index:
    column: str
    method: str  # hnsw | ivfflat
    opclass: str
    options: dict[str, str]

    @property
    def metric(self) -> str | None:
        suffix = self.opclass.split("_", 1)[1] if "_" in self.opclass else ""
        return METRIC_OF_SUFFIX.get(suffix)


def _vector_indexes(conn: psycopg.Connection, relid: int) -> list[_Index]:
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
        out.append(_Index(column, method, opclass, options))
    return out


COMMENT_KEY = "vecfmt"


def _saved_definitions(conn: psycopg.Connection, relid: int) -> dict[str, Any]:
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


def _split(value: str | None) -> list[str] | None:
    if value is None:
        return None
    return [v.strip() for v in value.split(",") if v.strip()]


# --- export ----------------------------------------------------------------------------------------


@dataclass
class _ExportColumn:
    attr: _Attribute
    dimension: int = 0
    spec: VectorSpec | None = None


class PgvectorExporter:
    """One table (or query) in one consistent snapshot: a REPEATABLE READ transaction exports its
    snapshot, and every COPY (one per namespace) runs in it, so counts and rows agree."""

    def __init__(self, uri: StoreURI) -> None:
        self.target = Target(uri)
        t = self.target
        if (t.table is None) == (t.query is None):
            raise StoreError(f"pgvector {t.where} needs exactly one of table=NAME or query=SELECT...")
        self._adbc: Any = None
        self.conn = t.connect(autocommit=False)
        try:
            with t.errors("cannot read the source"):
                self._open_snapshot()
                self._inspect()
        except BaseException:
            self.close()
            raise

    def _open_snapshot(self) -> None:
        self.conn.isolation_level = psycopg.IsolationLevel.REPEATABLE_READ
        self.conn.read_only = True
        self.ext = _extension(self.conn)
        try:
            self.snapshot: str | None = self.conn.execute("SELECT pg_export_snapshot()").fetchone()[0]
        except psycopg.Error as exc:  # e.g. on some poolers; one COPY per namespace is still consistent
            log.warning("pgvector: cannot export a snapshot (%s); each namespace is read on its own",
                        self.target.clean(_message(exc)))  # fmt: skip
            self.conn.rollback()
            self.snapshot = None

    def _inspect(self) -> None:
        t, options = self.target, self.target.uri.options
        self.relid: int | None = None
        if t.table is not None:
            found = _relation(self.conn, t.schema, t.table)
            if found is None:
                raise StoreError(f"pgvector {t.where}: table {t.relation_label()!r} does not exist")
            self.relid, self.schema, self.table = found
            self.source_sql: sql.Composable = sql.Identifier(self.schema, self.table)
            attrs = _attributes(self.conn, self.relid)
            pk = _primary_key(self.conn, self.relid)
            indexes = _vector_indexes(self.conn, self.relid)
        else:
            self.schema, self.table = "", ""
            self.source_sql = sql.SQL("({}) AS vecfmt_source").format(sql.SQL(t.query))  # type: ignore[arg-type]
            attrs = _query_attributes(self.conn, sql.SQL(t.query))  # type: ignore[arg-type]
            pk, indexes = [], []
        self.attrs = {a.name: a for a in attrs}
        self.indexes = indexes

        def pick(option: str, default: str | None, allowed: Callable[[_Attribute], bool], what: str) -> str | None:
            """The column an option names (checked), else ``default`` when it exists and fits."""
            explicit = option in options
            name = options[option] if explicit else default
            if not name:
                return None
            attr = self.attrs.get(name)
            if attr is None and explicit:
                raise StoreError(f"pgvector {t.where}: {t.relation_label()} has no column {name!r} ({option}=)")
            if attr is not None and not allowed(attr):
                if explicit:
                    raise StoreError(f"pgvector {t.where}: column {name!r} is {attr.sql_type}, not {what}")
                return None  # e.g. a text column called metadata: folded like any other column
            return name if attr is not None else None

        self.id_column = pick("id", pk[0] if len(pk) == 1 else "id", lambda a: True, "an id")
        if self.id_column is None:
            raise StoreError(f"pgvector {t.where}: cannot tell the id column of {t.relation_label()}; pass id=COLUMN")

        def is_dense(a: _Attribute) -> bool:
            return a.is_pgvector and a.typname in DENSE_TYPES

        wanted = _split(options.get("vector"))
        dense = wanted if wanted is not None else [a.name for a in attrs if is_dense(a)]
        for name in dense:
            if name not in self.attrs:
                raise StoreError(f"pgvector {t.where}: {t.relation_label()} has no column {name!r} (vector=)")
            if not is_dense(self.attrs[name]):
                raise StoreError(f"pgvector {t.where}: column {name!r} is {self.attrs[name].sql_type}, "
                                 "not vector or halfvec")  # fmt: skip
        sparse_default = next((a.name for a in attrs if a.is_pgvector and a.typname == SPARSE_TYPE_NAME), None)
        self.sparse_column = pick("sparse", sparse_default, lambda a: a.is_pgvector and a.typname == SPARSE_TYPE_NAME,
                                  "sparsevec")  # fmt: skip
        if not dense and self.sparse_column is None:
            raise StoreError(f"pgvector {t.where}: {t.relation_label()} has no vector, halfvec or sparsevec column")
        self.metadata_column = pick("metadata", "metadata", lambda a: a.typname in JSON_TYPES, "json or jsonb")
        self.document_column = pick("document", "document", lambda a: a.typname in TEXT_TYPES, "text")
        self.namespace_column = pick("namespace_column", DEFAULT_NAMESPACE_COLUMN, lambda a: True, "a namespace")
        taken = {self.id_column, *dense, self.sparse_column, self.metadata_column, self.document_column,
                 self.namespace_column}  # fmt: skip
        fold = _split(options.get("fold"))
        if fold is None:
            fold = [a.name for a in attrs if a.name not in taken]
        for name in fold:
            if name not in self.attrs or name in taken:
                raise StoreError(f"pgvector {t.where}: cannot fold column {name!r} into the metadata (fold=)")
        self.folded = [self.attrs[n] for n in fold]

        explicit_metric = options.get("metric")
        if explicit_metric:
            check_metric(explicit_metric)
        # What a vecfmt import wrote into the table's comment: metrics (for columns with no index to say
        # it), vector names, the embedding model.
        self.saved = _saved_definitions(self.conn, self.relid) if self.relid is not None else {}
        saved_vectors = {v.get("column"): v for v in self.saved.get("vectors", []) if isinstance(v, dict)}
        self.dense: list[_ExportColumn] = []
        for position, name in enumerate(dense):
            attr = self.attrs[name]
            dimension = attr.typmod if attr.typmod > 0 else self._sample_dimension(name)
            index = next((i for i in indexes if i.column == name and i.metric), None)
            saved = saved_vectors.get(name, {})
            saved_metric = saved.get("metric") if saved.get("metric") in METRICS else None
            metric = explicit_metric or (index.metric if index else None) or saved_metric or "cosine"
            spec_name = "default" if position == 0 else (saved.get("name") or name)
            spec = VectorSpec(spec_name, vector_column(spec_name, position == 0), dimension, metric)
            self.dense.append(_ExportColumn(attr, dimension, spec))
        self.sparse_dimension = 0
        if self.sparse_column is not None:
            attr = self.attrs[self.sparse_column]
            self.sparse_dimension = attr.typmod if attr.typmod > 0 else self._sample_dimension(self.sparse_column)

    def _sample_dimension(self, column: str) -> int:
        """A column without typmod (``vector`` rather than ``vector(768)``): the first row's dimension;
        rows that differ are refused as they come."""
        row = self.conn.execute(
            sql.SQL("SELECT {}::text FROM {} WHERE {} IS NOT NULL LIMIT 1").format(
                sql.Identifier(column), self.source_sql, sql.Identifier(column))
        ).fetchone()  # fmt: skip
        if row is None:
            return 1
        text = row[0]
        if text.startswith("{"):
            return int(text.rsplit("/", 1)[1])
        return text.count(",") + 1

    def describe(self) -> Description:
        t = self.target
        with t.errors("cannot count the rows"):
            namespaces = self._namespaces()
        server = self.conn.info.server_version
        details: dict[str, Any] = {
            "database": conninfo_to_dict(t.conninfo).get("dbname") or self.conn.info.dbname,
            "server_version": f"{server // 10000}.{server % 10000}",
            "pgvector_version": self.ext.version if self.ext else None,
        }
        model = self.saved.get("embedding_model")
        return Description(
            source=Source(kind=SCHEME, name=f"{self.schema}.{self.table}" if self.table else "query",
                          details=details),
            embedding_model=EmbeddingModel(**model) if isinstance(model, dict) else None,
            vectors=[c.spec for c in self.dense if c.spec is not None],
            namespaces=namespaces,
            sparse_values=self.sparse_column is not None,
            document=self.document_column is not None,
            extra={SCHEME: self._shape()},
        )  # fmt: skip

    def _shape(self) -> dict[str, Any]:
        """What an import needs to recreate this table: column names and SQL types, indexes."""
        return {
            "table": self.table or None,
            "id": {"column": self.id_column, "type": self.attrs[self.id_column].typname},
            "vectors": {c.spec.column: {"column": c.attr.name, "type": c.attr.typname}
                        for c in self.dense if c.spec is not None},
            "sparse": None if self.sparse_column is None else
            {"column": self.sparse_column, "dimension": self.sparse_dimension},
            "metadata_column": self.metadata_column,
            "document_column": self.document_column,
            "namespace_column": self.namespace_column,
            "folded_columns": [{"name": a.name, "type": a.sql_type} for a in self.folded],
            "indexes": [{"column": i.column, "method": i.method, "opclass": i.opclass, "options": i.options}
                        for i in self.indexes],
        }  # fmt: skip

    def _namespaces(self) -> dict[str, int | None]:
        if self.namespace_column is None:
            if self.relid is None:
                return {"": None}  # a query: counting it would run it twice
            row = self.conn.execute(sql.SQL("SELECT count(*) FROM {}").format(self.source_sql)).fetchone()
            return {"": int(row[0])}
        rows = self.conn.execute(
            sql.SQL("SELECT coalesce({}::text, '') AS ns, count(*) FROM {} GROUP BY 1 ORDER BY 1").format(
                sql.Identifier(self.namespace_column), self.source_sql)
        ).fetchall()  # fmt: skip
        return {ns: int(count) for ns, count in rows} or {"": 0}

    def slices(self, namespace: str) -> list[Slice]:
        return [Slice(namespace)]

    def _select(self, namespace: str) -> sql.Composable:
        columns: list[sql.Composable] = [sql.SQL("{}::text").format(sql.Identifier(self.id_column))]
        columns += [sql.Identifier(c.attr.name) for c in self.dense]
        if self.sparse_column is not None:
            columns.append(sql.Identifier(self.sparse_column))
        columns.append(self._metadata_sql())
        if self.document_column is not None:
            columns.append(sql.SQL("{}::text").format(sql.Identifier(self.document_column)))
        query = sql.SQL("SELECT {} FROM {}").format(sql.SQL(", ").join(columns), self.source_sql)
        if self.namespace_column is not None:
            # The namespace value came from this database; Literal quotes it (never str formatting).
            query = sql.SQL("{} WHERE coalesce({}::text, '') = {}").format(
                query, sql.Identifier(self.namespace_column), sql.Literal(namespace))
        return query

    def _metadata_sql(self) -> sql.Composable:
        own = None if self.metadata_column is None else sql.Identifier(self.metadata_column)
        if not self.folded:
            return sql.SQL("NULL::text") if own is None else sql.SQL("{}::text").format(own)
        # jsonb_build_object takes at most 100 arguments: 50 columns per call, joined with ||.
        objects = []
        for start in range(0, len(self.folded), 50):
            pairs = [sql.SQL("{}, {}").format(sql.Literal(a.name), sql.Identifier(a.name))
                     for a in self.folded[start:start + 50]]
            objects.append(sql.SQL("jsonb_build_object({})").format(sql.SQL(", ").join(pairs)))
        folded = sql.SQL(" || ").join(objects)
        if own is None:
            return sql.SQL("({})::text").format(folded)
        # A metadata value that is not an object goes under its column's name, so merging never fails.
        return sql.SQL(
            "(CASE WHEN {own} IS NULL THEN '{{}}'::jsonb WHEN jsonb_typeof({own}::jsonb) = 'object' "
            "THEN {own}::jsonb ELSE jsonb_build_object({name}, {own}) END || {folded})::text"
        ).format(own=own, name=sql.Literal(self.metadata_column), folded=folded)

    def _adbc_connection(self) -> Any:
        if self._adbc is None:
            dbapi = require_sdk("adbc_driver_postgresql.dbapi", SCHEME)
            with self.target.errors("cannot connect"):
                self._adbc = dbapi.connect(self.target.conninfo)  # not autocommit: one transaction
                with self._adbc.cursor() as cur:
                    cur.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
                    if self.snapshot is not None:
                        # The id comes from pg_export_snapshot(); Literal quotes it anyway.
                        cur.execute(sql.SQL("SET TRANSACTION SNAPSHOT {}").format(
                            sql.Literal(self.snapshot)).as_string(self.conn))  # fmt: skip
        return self._adbc

    def batches(self, part: Slice, *, batch_size: int, resume: str | None = None) -> Iterator[Chunk]:
        t = self.target
        query = self._select(part.namespace).as_string(self.conn)
        row_bytes = 64 + sum(4 + c.dimension * 4 for c in self.dense)
        hint = int(min(64 << 20, max(1 << 20, batch_size * row_bytes)))
        conn = self._adbc_connection()
        with t.errors("cannot read the rows"):
            cursor = conn.cursor()
            cursor.adbc_statement.set_options(**{"adbc.postgresql.batch_size_hint_bytes": str(hint)})
            cursor.execute(query)
            reader = cursor.fetch_record_batch()
        try:
            for batch in _prefetched(reader, t, self._canonical):
                yield Chunk(batch)
        finally:
            with t.errors("cannot finish reading"):
                reader.close()
                cursor.close()

    def _canonical(self, batch: pa.RecordBatch) -> pa.RecordBatch:
        ids = batch.column(0)
        if ids.null_count:
            raise InvalidDataError(f"column {self.id_column!r} is NULL in some rows; every row needs an id")
        # A column imported from ADBC keeps its whole batch's memory alive (one C Data Interface release for
        # all of it), and writers keep every id until the end to check uniqueness: hand over an own copy.
        arrays: list[pa.Array] = [pa.concat_arrays([ids.cast(pa.string())])]
        names = [ID]
        for i, column in enumerate(self.dense, start=1):
            assert column.spec is not None
            matrix, valid = decode_dense(batch.column(i), column.dimension, column.attr.typname, ids, column.attr.name)
            if valid is not None and column.spec.column == VALUES:
                row = int(np.argmin(valid))
                raise InvalidDataError(
                    f"column {column.attr.name!r} is NULL for id {ids[row].as_py()!r}; the primary vector is "
                    f"required (export with query=SELECT ... WHERE {column.attr.name} IS NOT NULL)"
                )
            vectors = vectors_array(matrix)
            if valid is not None:
                vectors = pa.FixedSizeListArray.from_arrays(vectors.values, column.dimension, mask=pa.array(~valid))
            arrays.append(vectors)
            names.append(column.spec.column)
        position = 1 + len(self.dense)
        if self.sparse_column is not None:
            arrays.append(decode_sparse(batch.column(position), ids, self.sparse_column))
            names.append(SPARSE_VALUES)
            position += 1
        arrays.append(_plain(batch.column(position)).cast(pa.string()))
        names.append(METADATA)
        if self.document_column is not None:
            arrays.append(_plain(batch.column(position + 1)).cast(pa.string()))
            names.append(DOCUMENT)
        return pa.RecordBatch.from_arrays(arrays, names=names)

    def search(self, vector: np.ndarray, k: int, *, namespace: str = "") -> list[tuple[str, float]]:
        if not self.dense or self.relid is None or self.ext is None:
            raise StoreError("pgvector: search needs a table with a dense vector column")
        column = self.dense[0]
        assert column.spec is not None
        ns = (self.namespace_column, namespace) if self.namespace_column else None
        with self.target.errors("search failed"), self.target.connect() as conn:
            return _search(conn, self.ext, sql.Identifier(self.schema, self.table), self.id_column,
                           column.attr.name, column.attr.typname, column.spec.metric, vector, k, ns)  # fmt: skip

    def close(self) -> None:
        if self._adbc is not None:
            with suppress(Exception):  # closing after an error: nothing left to save
                self._adbc.close()
            self._adbc = None
        if not self.conn.closed:
            self.conn.close()


def _plain(column: pa.Array) -> pa.Array:
    """The storage of an extension array (ADBC marks json as ``arrow.json``)."""
    return column.storage if isinstance(column, pa.ExtensionArray) else column


_DONE = object()


def _prefetched(
    reader: Any, target: Target, convert: Callable[[pa.RecordBatch], pa.RecordBatch]
) -> Iterator[pa.RecordBatch]:
    """Batches read and converted by a worker thread, up to two ahead, so PostgreSQL, ADBC and the
    NumPy decoding produce the next batches while the caller writes Parquet (all release the GIL)."""
    handoff: queue.Queue[Any] = queue.Queue(maxsize=2)
    stop = threading.Event()

    def work() -> None:
        try:
            for raw in reader:
                batch = convert(raw)
                while not stop.is_set():
                    try:
                        handoff.put(batch, timeout=0.1)
                        break
                    except queue.Full:
                        continue
                if stop.is_set():
                    return
            handoff.put(_DONE)
        except BaseException as exc:  # handed to the consumer
            handoff.put(exc)

    worker = threading.Thread(target=work, name="vecfmt-pgvector-read", daemon=True)
    worker.start()
    try:
        while True:
            item = handoff.get()
            if item is _DONE:
                return
            if isinstance(item, BaseException):
                with target.errors("cannot read the rows"):
                    raise item  # an InvalidDataError from convert passes through unchanged
            yield item
    finally:
        stop.set()
        while worker.is_alive():
            with suppress(queue.Empty):
                handoff.get(timeout=0.1)
        worker.join()


# --- import ----------------------------------------------------------------------------------------


@dataclass
class _Dest:
    """One column of the target table that a dump column goes to, and how its values are encoded."""

    name: str
    source: str  # dump column: id, values, values_x, sparse_values, metadata, document, or "" (namespace)
    typname: str  # vector, halfvec, sparsevec, text, int8, uuid, jsonb, ...
    dimension: int = 0


@dataclass
class _Plan:
    schema: str
    table: str
    id: _Dest
    dense: list[_Dest]
    sparse: _Dest | None
    metadata: _Dest | None
    document: _Dest | None
    namespace: _Dest | None
    folded: list[tuple[str, str]] = field(default_factory=list)  # (column, SQL type) filled from metadata
    metrics: dict[str, str] = field(default_factory=dict)  # dest column -> metric
    metadata_in_table: bool = True  # False: the JSON only feeds the folded columns (staging column)

    @property
    def relation(self) -> sql.Composable:
        return sql.Identifier(self.schema, self.table)

    @property
    def label(self) -> str:
        return f"{self.schema}.{self.table}"

    def loaded(self) -> list[_Dest]:
        """Columns COPY fills, in COPY order (the namespace last: it is constant per batch)."""
        out = [*self.dense, self.id]
        out += [d for d in (self.sparse, self.metadata, self.document, self.namespace) if d is not None]
        return out

    def key(self) -> list[str]:
        return [self.namespace.name, self.id.name] if self.namespace else [self.id.name]

    def in_table(self) -> list[str]:
        """Names of the loaded columns the table has (all but a metadata column kept only for staging)."""
        return [d.name for d in self.loaded() if d is not self.metadata or self.metadata_in_table]

    def carry_folded_metadata(self) -> None:
        """Folded columns are filled from the JSON, so it is loaded even when the table keeps none."""
        if self.folded and self.metadata is None:
            self.metadata = _Dest(STAGING_METADATA, METADATA, "jsonb")
            self.metadata_in_table = False


class PgvectorImporter:
    def __init__(self, uri: StoreURI) -> None:
        self.target = Target(uri)
        if self.target.table is None:
            raise StoreError(f"pgvector {self.target.where} needs the option table=NAME")
        if self.target.query is not None:
            raise StoreError(f"pgvector {self.target.where}: query= is for exports only")
        self.conn: psycopg.Connection | None = None
        self.plan: _Plan | None = None
        self.ext: _Extension | None = None
        self.identity: str | None = None
        self.staging = False  # upsert or folded columns: COPY into a temp table, then INSERT ... SELECT
        self.upsert = False
        self.pending: dict[str, Any] = {}  # work left for finish(): primary key, indexes
        self._loader: _Loader | None = None
        self._extra_conns: list[psycopg.Connection] = []
        self._created = False
        self._committed = 0  # batches committed by this run
        self._resumed_from = 0
        self._progress_written = False  # by this run: only then is the progress row ours to delete
        self._finished = False

    # -- prepare --

    def prepare(self, manifest: Manifest, *, if_exists: IfExists, resume: bool = False) -> int:
        t = self.target
        self.conn = t.connect()
        conn = self.conn
        self.identity = _dump_identity(manifest)
        with t.errors("cannot prepare the import"):
            self.ext = self._ensure_extension()
            schema = t.schema or conn.execute("SELECT current_schema()").fetchone()[0]
            if schema is None:
                raise StoreError(f"pgvector {t.where}: no schema to create the table in; pass schema=NAME")
            found = _relation(conn, schema, t.table)  # type: ignore[arg-type]
            progress = self._progress(schema)
            if progress is not None and progress["dump"] != self.identity:
                progress = None  # another dump's (or a copy's): not ours to resume
            if resume and found is not None and progress is not None:
                self.pending = progress["pending"]
                self.plan = self._plan_existing(manifest, schema, found[0])
                self._start()
                self._resumed_from = int(progress["rows"])
                log.info("pgvector: resuming the import into %s after %d rows", self.plan.label, progress["rows"])
                return int(progress["rows"])
            if resume and found is not None and self.identity is not None:
                raise StoreError(
                    f"pgvector {t.where}: nothing to resume: table {schema}.{t.table} is not being loaded from "
                    "this dump (its import finished, or was of another dump); run without resume"
                )
            if found is not None and if_exists == IfExists.FAIL:
                interrupted = "" if progress is None or self.identity is None else (
                    f"; an interrupted import of this dump committed {progress['rows']:,} rows: resume it")
                raise StoreError(
                    f"pgvector {t.where}: table {schema}.{t.table} already exists (choose if_exists append, "
                    f"upsert or replace){interrupted}"
                )
            if found is not None and if_exists in (IfExists.APPEND, IfExists.UPSERT):
                self.plan = self._plan_existing(manifest, schema, found[0])
                self.upsert = if_exists == IfExists.UPSERT
                if self.upsert:
                    self._check_unique_key(found[0])
                self.pending = {"upsert": self.upsert}
                with conn.transaction():
                    self._save_progress(0)
            else:
                self.plan = self._plan_new(manifest, schema)
                self._comment = _definitions_comment(manifest, self.plan)
                self.pending = {"primary_key": True, "indexes": self._index_requests(manifest)}
                with conn.transaction():
                    if found is not None:
                        conn.execute(sql.SQL("DROP TABLE {}").format(self.plan.relation))
                    self._create_table()
                    self._save_progress(0)
                self._created = found is None  # dropped again if the import fails before its first commit
            self._start()
        return 0

    def _ensure_extension(self) -> _Extension:
        assert self.conn is not None
        ext = _extension(self.conn)
        if ext is not None:
            return ext
        available = self.conn.execute("SELECT 1 FROM pg_available_extensions WHERE name = 'vector'").fetchone()
        if available is None:
            raise StoreError(f"pgvector {self.target.where}: the pgvector extension is not installed on the server")
        try:
            self.conn.execute("CREATE EXTENSION IF NOT EXISTS vector")
        except psycopg.errors.InsufficientPrivilege:
            raise StoreError(
                f"pgvector {self.target.where}: not allowed to create the pgvector extension; ask an "
                "administrator to run CREATE EXTENSION vector in this database"
            ) from None
        ext = _extension(self.conn)
        assert ext is not None
        return ext

    def _progress(self, schema: str) -> dict[str, Any] | None:
        assert self.conn is not None
        self.progress_table = sql.Identifier(schema, PROGRESS_TABLE)
        if _relation(self.conn, schema, PROGRESS_TABLE) is None:
            return None
        row = self.conn.execute(
            sql.SQL("SELECT dump, rows_done, pending FROM {} WHERE target = %s").format(self.progress_table),
            (f"{schema}.{self.target.table}",),
        ).fetchone()
        return None if row is None else {"dump": row[0], "rows": row[1], "pending": row[2]}

    def _save_progress(self, rows_done: int) -> None:
        """Record (in the caller's transaction) that ``rows_done`` rows of this dump are committed."""
        assert self.conn is not None and self.plan is not None
        self.conn.execute(sql.SQL(
            "CREATE TABLE IF NOT EXISTS {} (target text PRIMARY KEY, dump text, rows_done bigint NOT NULL, "
            "pending jsonb NOT NULL DEFAULT '{{}}', updated_at timestamptz NOT NULL DEFAULT now())"
        ).format(self.progress_table))  # fmt: skip
        self.conn.execute(
            sql.SQL(
                "INSERT INTO {} (target, dump, rows_done, pending) VALUES (%s, %s, %s, %s) ON CONFLICT (target) "
                "DO UPDATE SET dump = EXCLUDED.dump, rows_done = EXCLUDED.rows_done, pending = EXCLUDED.pending, "
                "updated_at = now()"
            ).format(self.progress_table),
            (self.plan.label, self.identity, rows_done, psycopg.types.json.Jsonb(self.pending)),
        )
        self._progress_written = True

    def _source_shape(self, manifest: Manifest) -> dict[str, Any]:
        """The shape recorded by a pgvector export (column names, SQL types), to recreate the table."""
        if manifest.source is None or manifest.source.kind != SCHEME:
            return {}
        shape = manifest.extra.get(SCHEME)
        return shape if isinstance(shape, dict) else {}

    def _plan_new(self, manifest: Manifest, schema: str) -> _Plan:
        t, options = self.target, self.target.uri.options
        shape = self._source_shape(manifest)
        id_shape = shape.get("id") or {}
        id_type = id_shape.get("type") if id_shape.get("type") in ID_TYPES else "text"
        id_dest = _Dest(options.get("id") or id_shape.get("column") or ID, ID, id_type)
        vector_names = _split(options.get("vector")) or []
        wanted_type = options.get("type")
        if wanted_type is not None and wanted_type not in DENSE_TYPES:
            raise StoreError(f"pgvector {t.where}: type must be vector or halfvec, not {wanted_type!r}")
        dense = []
        for position, spec in enumerate(manifest.vectors):
            recorded = (shape.get("vectors") or {}).get(spec.column) or {}
            if position < len(vector_names):
                name = vector_names[position]
            else:
                name = recorded.get("column") or (DEFAULT_VECTOR_COLUMN if spec.column == VALUES else spec.name)
            typname = wanted_type or (recorded.get("type") if recorded.get("type") in DENSE_TYPES else "vector")
            dense.append(_Dest(name, spec.column, typname, spec.dimension))
        sparse = None
        if manifest.sparse_values:
            recorded = shape.get("sparse") or {}
            dimension = t.uri.int_option("sparse_dim") or recorded.get("dimension")
            if not dimension:
                raise StoreError(
                    f"pgvector {t.where}: the dump has sparse vectors but no sparse dimension; pass sparse_dim=N "
                    "(the vocabulary size: every index must be below it)"
                )
            if not 1 <= dimension <= MAX_SPARSE_DIM:
                raise InvalidDataError(f"sparse_dim {dimension} is outside pgvector's 1..{MAX_SPARSE_DIM}")
            sparse = _Dest(options.get("sparse") or recorded.get("column") or DEFAULT_SPARSE_COLUMN, SPARSE_VALUES,
                           SPARSE_TYPE_NAME, int(dimension))  # fmt: skip
        folded = [(c["name"], c["type"]) for c in shape.get("folded_columns") or []
                  if isinstance(c, dict) and "name" in c and "type" in c]  # fmt: skip
        if "metadata" in options:
            metadata_name = options["metadata"] or None
        elif shape:
            metadata_name = shape.get("metadata_column")  # None: the source table had no JSON column
        else:
            metadata_name = METADATA
        metadata = _Dest(metadata_name, METADATA, "jsonb") if metadata_name else None
        document = None
        if manifest.document:
            document = _Dest(options.get("document") or shape.get("document_column") or DOCUMENT, DOCUMENT, "text")
        namespace = None
        if self._namespaced(manifest):
            namespace = _Dest(options.get("namespace_column") or shape.get("namespace_column")
                              or DEFAULT_NAMESPACE_COLUMN, "", "text")  # fmt: skip
        plan = _Plan(schema, t.table, id_dest, dense, sparse, metadata, document, namespace)  # type: ignore[arg-type]
        plan.folded = self._resolve_folded(folded, plan)
        plan.carry_folded_metadata()
        self._check_plan(plan, manifest)
        return plan

    def _namespaced(self, manifest: Manifest) -> bool:
        if "namespace_column" in self.target.uri.options:
            return bool(self.target.uri.options["namespace_column"])
        return any(ns.name != "" for ns in manifest.namespaces)

    def _resolve_folded(self, folded: list[tuple[str, str]], plan: _Plan) -> list[tuple[str, str]]:
        """Folded columns' SQL types as this server names them. The type text comes from a manifest, so it
        is only ever passed as a value (to_regtype), and the name used in DDL is the server's own."""
        assert self.conn is not None
        taken = {d.name for d in plan.loaded()}
        out = []
        for name, type_text in folded:
            if name in taken:
                continue
            row = self.conn.execute("SELECT format_type(to_regtype(%s), NULL)", (type_text,)).fetchone()
            if row is None or row[0] is None:
                log.warning("pgvector: folded column %r has unknown type %r; it stays in the metadata", name, type_text)
                continue
            out.append((name, row[0]))
        return out

    def _check_plan(self, plan: _Plan, manifest: Manifest) -> None:
        """pgvector's limits, said before anything is written."""
        names = [d.name for d in plan.loaded()] + [n for n, _ in plan.folded]
        duplicates = {n for n in names if names.count(n) > 1}
        if duplicates:
            raise StoreError(f"pgvector {self.target.where}: two dump columns map to the table column "
                             f"{sorted(duplicates)[0]!r}")  # fmt: skip
        for dest in plan.dense:
            if dest.dimension > MAX_DIM:
                raise InvalidDataError(
                    f"vector {dest.source!r} has {dest.dimension} dimensions; pgvector stores at most {MAX_DIM}"
                )
        metric = self.target.uri.option("metric")
        for spec in manifest.vectors:
            dest = next(d for d in plan.dense if d.source == spec.column)
            plan.metrics[dest.name] = check_metric(metric) if metric else spec.metric
        if plan.sparse is not None:
            plan.metrics[plan.sparse.name] = check_metric(metric) if metric else (
                manifest.primary.metric if manifest.primary else "dot")

    def _plan_existing(self, manifest: Manifest, schema: str, relid: int) -> _Plan:
        """Map the dump onto a table that exists (append, upsert, resume), checking types and dimensions."""
        assert self.conn is not None
        t, options = self.target, self.target.uri.options
        attrs = {a.name: a for a in _attributes(self.conn, relid)}
        label = f"{schema}.{t.table}"
        shape = self._source_shape(manifest)

        def column(option: str, *candidates: str | None, required: bool = True) -> _Attribute | None:
            if option in options:
                name = options[option]
                if not name:
                    return None
                if name not in attrs:
                    raise StoreError(f"pgvector {t.where}: table {label} has no column {name!r} ({option}=)")
                return attrs[name]
            for name in candidates:
                if name and name in attrs:
                    return attrs[name]
            if required:
                raise StoreError(f"pgvector {t.where}: table {label} has no column {candidates[0]!r}; "
                                 f"name it with {option}=COLUMN")  # fmt: skip
            return None

        pk = _primary_key(self.conn, relid)
        id_attr = column("id", (shape.get("id") or {}).get("column"), pk[0] if len(pk) == 1 else None, ID)
        assert id_attr is not None
        if id_attr.typname not in ID_TYPES:
            raise StoreError(f"pgvector {t.where}: id column {id_attr.name!r} is {id_attr.sql_type}; vecfmt "
                             "writes ids into text, varchar, smallint, integer, bigint or uuid")  # fmt: skip
        id_dest = _Dest(id_attr.name, ID, id_attr.typname)
        dense_attrs = [a for a in attrs.values() if a.is_pgvector and a.typname in DENSE_TYPES]
        vector_names = _split(options.get("vector")) or []
        dense = []
        for position, spec in enumerate(manifest.vectors):
            recorded = ((shape.get("vectors") or {}).get(spec.column) or {}).get("column")
            if position < len(vector_names):
                candidates = [vector_names[position]]
            elif spec.column == VALUES:
                only = dense_attrs[0].name if len(dense_attrs) == 1 else None
                candidates = [recorded, DEFAULT_VECTOR_COLUMN, only]
            else:
                candidates = [recorded, spec.name]
            attr = next((attrs[c] for c in candidates if c and c in attrs), None)
            if attr is None:
                raise StoreError(f"pgvector {t.where}: table {label} has no column for vector {spec.name!r}; "
                                 "name it with vector=COLUMN[,COLUMN...]")  # fmt: skip
            if not (attr.is_pgvector and attr.typname in DENSE_TYPES):
                raise StoreError(f"pgvector {t.where}: column {attr.name!r} of {label} is {attr.sql_type}, "
                                 "not vector or halfvec")  # fmt: skip
            if attr.typmod > 0 and attr.typmod != spec.dimension:
                raise InvalidDataError(
                    f"vector {spec.name!r} has {spec.dimension} dimensions but column {attr.name!r} of {label} "
                    f"is {attr.sql_type}"
                )
            dense.append(_Dest(attr.name, spec.column, attr.typname, spec.dimension))
        sparse = None
        if manifest.sparse_values:
            recorded = (shape.get("sparse") or {}).get("column")
            only = [a.name for a in attrs.values() if a.is_pgvector and a.typname == SPARSE_TYPE_NAME]
            attr = column("sparse", recorded, DEFAULT_SPARSE_COLUMN, only[0] if len(only) == 1 else None)
            assert attr is not None
            if not (attr.is_pgvector and attr.typname == SPARSE_TYPE_NAME):
                raise StoreError(f"pgvector {t.where}: column {attr.name!r} of {label} is {attr.sql_type}, "
                                 "not sparsevec")  # fmt: skip
            dimension = attr.typmod if attr.typmod > 0 else (
                t.uri.int_option("sparse_dim") or (shape.get("sparse") or {}).get("dimension"))
            if not dimension:
                raise StoreError(f"pgvector {t.where}: column {attr.name!r} has no fixed dimension; pass sparse_dim=N")
            sparse = _Dest(attr.name, SPARSE_VALUES, SPARSE_TYPE_NAME, int(dimension))
        metadata = None
        meta_attr = column("metadata", shape.get("metadata_column"), METADATA, required=False)
        if meta_attr is not None:
            if meta_attr.typname not in JSON_TYPES | TEXT_TYPES:
                raise StoreError(f"pgvector {t.where}: metadata column {meta_attr.name!r} is {meta_attr.sql_type}, "
                                 "not jsonb, json or text")  # fmt: skip
            metadata = _Dest(meta_attr.name, METADATA, meta_attr.typname)
        document = None
        if manifest.document:
            doc_attr = column("document", shape.get("document_column"), DOCUMENT, required=False)
            if doc_attr is not None:
                if doc_attr.typname not in TEXT_TYPES:
                    raise StoreError(f"pgvector {t.where}: document column {doc_attr.name!r} is {doc_attr.sql_type}")
                document = _Dest(doc_attr.name, DOCUMENT, doc_attr.typname)
        namespace = None
        ns_attr = column("namespace_column", shape.get("namespace_column"), DEFAULT_NAMESPACE_COLUMN, required=False)
        if self._namespaced(manifest) and ns_attr is None:
            raise StoreError(
                f"pgvector {t.where}: the dump has namespaces but table {label} has no column "
                f"{DEFAULT_NAMESPACE_COLUMN!r} for them; name one with namespace_column=COLUMN"
            )
        if ns_attr is not None:
            if ns_attr.typname not in TEXT_TYPES:
                raise StoreError(f"pgvector {t.where}: namespace column {ns_attr.name!r} is {ns_attr.sql_type}")
            namespace = _Dest(ns_attr.name, "", ns_attr.typname)
        plan = _Plan(schema, t.table, id_dest, dense, sparse, metadata, document, namespace)  # type: ignore[arg-type]
        folded = [(c["name"], attrs[c["name"]].sql_type) for c in shape.get("folded_columns") or []
                  if isinstance(c, dict) and c.get("name") in attrs]  # fmt: skip
        taken = {d.name for d in plan.loaded()}
        plan.folded = [(n, ty) for n, ty in folded if n not in taken]
        plan.carry_folded_metadata()
        self._check_plan(plan, manifest)
        return plan

    def _check_unique_key(self, relid: int) -> None:
        assert self.conn is not None and self.plan is not None
        row = self.conn.execute(
            "SELECT 1 FROM pg_index i WHERE i.indrelid = %s AND i.indisunique AND i.indpred IS NULL "
            "AND i.indexprs IS NULL AND (SELECT array_agg(a.attname::text ORDER BY a.attname) FROM pg_attribute a "
            "  WHERE a.attrelid = i.indrelid AND a.attnum = ANY(i.indkey)) = %s",
            (relid, sorted(self.plan.key())),
        ).fetchone()
        if row is None:
            raise StoreError(
                f"pgvector {self.target.where}: upsert needs a primary key or unique index on "
                f"({', '.join(self.plan.key())}) of {self.plan.label}"
            )

    def _index_requests(self, manifest: Manifest) -> list[dict[str, Any]]:
        """The indexes finish() builds on a table this import creates, checked against pgvector's limits
        now, before any row is written. ``index=auto`` rebuilds a pgvector source's own indexes (none if
        it had none), and otherwise puts HNSW on the primary vector when its dimension allows."""
        assert self.plan is not None
        plan, uri = self.plan, self.target.uri
        method = uri.option("index", "auto") or "auto"
        if method not in ("auto", "hnsw", "ivfflat", "none"):
            raise StoreError(f"pgvector {self.target.where}: index must be auto, hnsw, ivfflat or none, not {method!r}")
        if method == "none":
            return []
        shape = self._source_shape(manifest)
        chosen: list[tuple[_Dest, dict[str, Any]]] = []  # (column, the source's index or {})
        if method == "auto" and shape:
            saved = {i.get("column"): i for i in shape.get("indexes") or [] if isinstance(i, dict)}
            for dest in [*plan.dense, *([plan.sparse] if plan.sparse else [])]:
                if dest.source == SPARSE_VALUES:
                    source_column = (shape.get("sparse") or {}).get("column")
                else:
                    source_column = ((shape.get("vectors") or {}).get(dest.source) or {}).get("column")
                if saved.get(source_column, {}).get("method") in ("hnsw", "ivfflat"):
                    chosen.append((dest, saved[source_column]))
        else:
            first = plan.dense[0] if plan.dense else plan.sparse
            if first is not None:
                chosen.append((first, {}))
        requests = []
        for dest, saved in chosen:
            kind = saved.get("method") or ("hnsw" if method == "auto" else method)
            metric = plan.metrics.get(dest.name, "cosine")
            limit = INDEX_MAX_DIM.get(dest.typname)
            if limit is not None and dest.dimension > limit:
                if method == "auto":
                    log.warning("pgvector: no index on %s: %s indexes support up to %d dimensions",
                                dest.name, dest.typname, limit)  # fmt: skip
                    continue
                raise InvalidDataError(
                    f"{kind} indexes on {dest.typname} support up to {limit} dimensions; vector {dest.source!r} "
                    f"has {dest.dimension} (use index=none, or type=halfvec for up to {INDEX_MAX_DIM['halfvec']})"
                )
            if metric not in OPCLASS_SUFFIX:
                raise InvalidDataError(f"pgvector indexes {dest.typname} by cosine, dot, euclidean or manhattan, "
                                       f"not {metric}; use index=none")  # fmt: skip
            if kind == "ivfflat" and (metric == "manhattan" or dest.typname == SPARSE_TYPE_NAME):
                raise InvalidDataError(f"ivfflat does not index {dest.typname} by {metric}; use index=hnsw")
            options: dict[str, int] = {}
            for key in ("m", "ef_construction") if kind == "hnsw" else ("lists",):
                value = uri.int_option(key)
                recorded = str((saved.get("options") or {}).get(key, ""))
                if value is None and recorded.isdigit():
                    value = int(recorded)
                if value is not None:
                    options[key] = value
            requests.append({"column": dest.name, "method": kind,
                             "opclass": f"{dest.typname}_{OPCLASS_SUFFIX[metric]}", "options": options})  # fmt: skip
        return requests

    def _create_table(self) -> None:
        assert self.conn is not None and self.plan is not None and self.ext is not None
        plan, ext = self.plan, self.ext
        id_type = {"text": "text", "varchar": "varchar", "bpchar": "text", "int2": "smallint",
                   "int4": "integer", "int8": "bigint", "uuid": "uuid"}[plan.id.typname]  # fmt: skip
        columns = [sql.SQL("{} {} NOT NULL").format(sql.Identifier(plan.id.name), sql.SQL(id_type))]
        if plan.namespace is not None:
            columns.append(sql.SQL("{} text NOT NULL DEFAULT ''").format(sql.Identifier(plan.namespace.name)))
        for dest in plan.dense:
            null = sql.SQL(" NOT NULL") if dest.source == VALUES else sql.SQL("")
            columns.append(sql.SQL("{} {}{}").format(sql.Identifier(dest.name), ext.type(dest.typname, dest.dimension),
                                                     null))  # fmt: skip
        if plan.sparse is not None:
            columns.append(sql.SQL("{} {}").format(sql.Identifier(plan.sparse.name),
                                                   ext.type(SPARSE_TYPE_NAME, plan.sparse.dimension)))  # fmt: skip
        if plan.metadata is not None and plan.metadata_in_table:
            columns.append(sql.SQL("{} jsonb").format(sql.Identifier(plan.metadata.name)))
        if plan.document is not None:
            columns.append(sql.SQL("{} text").format(sql.Identifier(plan.document.name)))
        for name, type_name in plan.folded:
            columns.append(sql.SQL("{} {}").format(sql.Identifier(name), sql.SQL(type_name)))  # server-made name
        self.conn.execute(sql.SQL("CREATE TABLE {} ({})").format(plan.relation, sql.SQL(", ").join(columns)))
        # COMMENT takes no parameters; Literal quotes the JSON (a manifest's text) as one string constant.
        self.conn.execute(sql.SQL("COMMENT ON TABLE {} IS {}").format(plan.relation, sql.Literal(self._comment)))
        storage = self.target.uri.option("storage", "auto") or "auto"
        if storage not in ("auto", "plain", "external", "default"):
            raise StoreError(f"pgvector {self.target.where}: storage must be plain, external or default, "
                             f"not {storage!r}")  # fmt: skip
        for dest in plan.dense:
            # Inline vectors (no TOAST) load ~1.4x faster and scan faster, as long as a row fits a page.
            plain = storage == "plain" or (storage == "auto" and dest.dimension <= PLAIN_STORAGE_MAX_DIM[dest.typname])
            if plain:
                self.conn.execute(sql.SQL("ALTER TABLE {} ALTER COLUMN {} SET STORAGE PLAIN").format(
                    plan.relation, sql.Identifier(dest.name)))  # fmt: skip

    # -- write --

    def _start(self) -> None:
        assert self.plan is not None and self.conn is not None
        plan, uri = self.plan, self.target.uri
        self.upsert = bool(self.pending.get("upsert", self.upsert))
        self.staging = self.upsert or bool(plan.folded)
        parallel = uri.int_option("parallel", DEFAULT_PARALLEL) or DEFAULT_PARALLEL
        if not 1 <= parallel <= 16:
            raise StoreError(f"pgvector {self.target.where}: parallel must be between 1 and 16, not {parallel}")
        self._extra_conns = [self.target.connect() for _ in range(parallel - 1)]
        connections = [self.conn, *self._extra_conns]
        names = [d.name for d in plan.loaded()]
        if self.staging:
            staging = sql.Identifier(STAGING_TABLE)
            for conn in connections:  # a temporary table belongs to one session
                conn.execute(sql.SQL("DROP TABLE IF EXISTS {}").format(staging))
                conn.execute(sql.SQL(
                    "CREATE TEMP TABLE {} ON COMMIT DELETE ROWS AS SELECT {} FROM {} WITH NO DATA"
                ).format(staging, _column_list(plan.in_table()), plan.relation))  # fmt: skip
                if not plan.metadata_in_table:
                    conn.execute(sql.SQL("ALTER TABLE {} ADD COLUMN {} jsonb").format(
                        staging, sql.Identifier(STAGING_METADATA)))  # fmt: skip
            self.copy_sql = sql.SQL("COPY {} ({}) FROM STDIN (FORMAT binary)").format(staging, _column_list(names))
            self.insert_sql = self._staging_insert()
        else:
            self.copy_sql = sql.SQL("COPY {} ({}) FROM STDIN (FORMAT binary)").format(
                plan.relation, _column_list(names))
        self._loader = _Loader(connections, self.target)

    def _close_extra(self) -> None:
        for conn in self._extra_conns:
            with suppress(Exception):
                conn.close()
        self._extra_conns = []

    def _staging_insert(self) -> sql.Composable:
        """Staging rows into the table: folded columns filled from the JSON (which loses their keys),
        and ON CONFLICT for upserts."""
        assert self.plan is not None
        plan = self.plan
        targets = plan.in_table()
        values: list[sql.Composable] = [sql.SQL("s.{}").format(sql.Identifier(n)) for n in targets]
        source = sql.SQL("{} s").format(sql.Identifier(STAGING_TABLE))
        if plan.folded:
            assert plan.metadata is not None
            keys = [name for name, _ in plan.folded]
            meta = sql.SQL("s.{}").format(sql.Identifier(plan.metadata.name))
            if plan.metadata_in_table:
                # What is left of the JSON once the folded keys are out; an empty object is NULL again.
                values[targets.index(plan.metadata.name)] = sql.SQL("nullif({}::jsonb - {}::text[], '{{}}')").format(
                    meta, sql.Literal(keys))
            targets = targets + keys
            values += [sql.SQL("r.{}").format(sql.Identifier(k)) for k in keys]
            source = sql.SQL("{} CROSS JOIN LATERAL jsonb_populate_record(NULL::{}, {}::jsonb) r").format(
                source, plan.relation, meta)
        query = sql.SQL("INSERT INTO {} ({}) SELECT {} FROM {}").format(
            plan.relation, _column_list(targets), sql.SQL(", ").join(values), source)
        if self.upsert:
            key = plan.key()
            updates = [sql.SQL("{0} = EXCLUDED.{0}").format(sql.Identifier(n)) for n in targets if n not in key]
            action = sql.SQL("UPDATE SET {}").format(sql.SQL(", ").join(updates)) if updates else sql.SQL("NOTHING")
            query = sql.SQL("{} ON CONFLICT ({}) DO {}").format(query, _column_list(key), action)
        return query

    def write(self, namespace: str, batch: pa.RecordBatch, *, rows_done: int) -> None:
        if self.plan is None or self._loader is None:
            raise StoreError("pgvector: write() before prepare()")
        plan = self.plan
        if plan.namespace is None and namespace != "":
            raise StoreError(
                f"pgvector: rows of namespace {namespace!r} but table {plan.label} keeps no namespaces; "
                f"pass namespace_column=COLUMN to keep them in a column"
            )
        if batch.num_rows == 0:
            return
        payload = self.encode(batch, namespace)
        self._loader.submit(self._job(payload, rows_done), sum(len(p) for p in payload))

    def encode(self, batch: pa.RecordBatch, namespace: str = "") -> list[pa.Buffer | bytes]:
        """The binary COPY stream of one batch: header, rows, trailer."""
        assert self.plan is not None
        plan = self.plan
        n = batch.num_rows
        ids = batch.column(ID)
        loaded = plan.loaded()
        # With folded columns and no metadata column, the staging table still needs the JSON: see _start.
        rows = CopyRows(n, len(loaded))
        for dest in loaded:
            if dest.source == ID:
                _encode_id(rows, ids, dest.typname, dest.name)
            elif dest.typname in DENSE_TYPES:
                _encode_dense(rows, batch.column(dest.source), dest.typname, ids, dest.source, dest.name)
            elif dest.typname == SPARSE_TYPE_NAME:
                column = batch.column(SPARSE_VALUES)
                indexed = any(r["column"] == dest.name for r in self.pending.get("indexes") or [])
                check_sparse(column, dest.dimension, ids, HNSW_MAX_SPARSE_NNZ if indexed else MAX_SPARSE_NNZ)
                rows.variable(sparse_payload(column, dest.dimension))
            elif dest.source == METADATA:
                metadata = batch.column(METADATA).cast(pa.large_binary())
                if dest.typname == "jsonb":  # jsonb's binary form is a version byte, then the text
                    metadata = pc.binary_join_element_wise(
                        pa.scalar(b"\x01", pa.large_binary()), metadata, pa.scalar(b"", pa.large_binary()))
                rows.variable(metadata)
            elif dest.source == DOCUMENT:
                rows.variable(batch.column(DOCUMENT))
            else:  # the namespace: the same bytes in every row
                encoded = namespace.encode()
                if encoded:
                    rows.field(np.dtype(f"S{len(encoded)}"), encoded)
                else:
                    rows.fixed(np.dtype(">i4"), 0)  # an empty string: length 0, no bytes
        return [COPY_HEADER, rows.build(), COPY_TRAILER]

    def _job(self, payload: list[pa.Buffer | bytes], rows_done: int) -> Job:
        def load(conn: psycopg.Connection, my_turn: Callable[[], None]) -> None:
            with conn.transaction(), conn.cursor() as cur:
                with cur.copy(self.copy_sql) as copy:
                    for part in payload:
                        copy.write(part)
                if self.staging:
                    cur.execute(self.insert_sql)  # the staging rows go at commit (ON COMMIT DELETE ROWS)
                my_turn()  # the previous batch has committed: commits stay in dump order
                if self.identity is not None:
                    cur.execute(
                        sql.SQL("UPDATE {} SET rows_done = %s, updated_at = now() WHERE target = %s").format(
                            self.progress_table),
                        (rows_done, self.plan.label),  # type: ignore[union-attr]
                    )

        return load

    # -- finish --

    def finish(self) -> None:
        if self._loader is not None:
            loader, self._loader = self._loader, None
            try:
                loader.close()  # every batch committed, or the first error
            finally:
                self._committed = loader.committed
        self._close_extra()
        if self.conn is None or self.plan is None:
            return
        t, plan, conn = self.target, self.plan, self.conn
        with t.errors("cannot finish the import"):
            if self.pending.get("primary_key"):
                with (t.errors(f"cannot add the primary key ({', '.join(plan.key())}) to {plan.label}"),
                      _phase("primary key", plan.label)):  # fmt: skip
                    self._add_primary_key()
                self.pending["primary_key"] = False
                with conn.transaction():
                    self._save_progress_pending()
            requests = self.pending.get("indexes") or []
            if requests:
                self._build_indexes(requests)
            with _phase("analyze", plan.label):
                conn.execute(sql.SQL("ANALYZE {}").format(plan.relation))
            self._drop_progress()
        self._finished = True

    def _add_primary_key(self) -> None:
        assert self.conn is not None and self.plan is not None
        exists = self.conn.execute(
            "SELECT 1 FROM pg_index WHERE indrelid = %s::regclass AND indisprimary",
            (self.plan.relation.as_string(self.conn),),
        ).fetchone()
        if exists is None:
            self.conn.execute(sql.SQL("ALTER TABLE {} ADD PRIMARY KEY ({})").format(
                self.plan.relation, _column_list(self.plan.key())))  # fmt: skip

    def _save_progress_pending(self) -> None:
        assert self.conn is not None and self.plan is not None
        self.conn.execute(
            sql.SQL("UPDATE {} SET pending = %s WHERE target = %s").format(self.progress_table),
            (psycopg.types.json.Jsonb(self.pending), self.plan.label),
        )

    def _build_indexes(self, requests: list[dict[str, Any]]) -> None:
        assert self.conn is not None and self.plan is not None
        conn, plan, uri = self.conn, self.plan, self.target.uri
        memory = uri.option("maintenance_work_mem", "1GB") or "1GB"
        if not re.fullmatch(r"\d+\s*(kB|MB|GB|TB)?", memory):
            raise StoreError(f"pgvector {self.target.where}: maintenance_work_mem must look like 512MB or 2GB, "
                             f"not {memory!r}")  # fmt: skip
        workers = uri.int_option("workers")
        if workers is None:
            current = conn.execute("SHOW max_parallel_maintenance_workers").fetchone()[0]
            workers = max(2, int(current))
        rows = conn.execute(sql.SQL("SELECT count(*) FROM {}").format(plan.relation)).fetchone()[0]
        conn.execute("SELECT set_config('maintenance_work_mem', %s, false)", (memory,))
        conn.execute("SELECT set_config('max_parallel_maintenance_workers', %s, false)", (str(workers),))
        for request in requests:
            options = dict(request.get("options") or {})
            if request["method"] == "ivfflat" and "lists" not in options:
                options["lists"] = max(1, rows // 1000 if rows <= 1_000_000 else int(math.sqrt(rows)))
            name = f"{plan.table}_{request['column']}_{request['method']}_idx"[:63]
            with_sql = sql.SQL("")
            if options:
                with_sql = sql.SQL(" WITH ({})").format(sql.SQL(", ").join(
                    sql.SQL("{} = {}").format(sql.Identifier(k), sql.Literal(int(v))) for k, v in options.items()))
            statement = sql.SQL("CREATE INDEX IF NOT EXISTS {} ON {} USING {} ({} {}){}").format(
                sql.Identifier(name), plan.relation, sql.Identifier(request["method"]),
                sql.Identifier(request["column"]), sql.Identifier(self.ext.schema, request["opclass"]),  # type: ignore[union-attr]
                with_sql)  # fmt: skip
            with _phase("index", f"{request['method']} {request['opclass']} on {plan.label}.{request['column']}"):
                try:
                    conn.execute(statement)
                except psycopg.errors.DiskFull:  # parallel builds need /dev/shm; build alone instead
                    conn.execute("SET max_parallel_maintenance_workers = 0")
                    conn.execute(statement)
        conn.execute("RESET maintenance_work_mem")
        conn.execute("RESET max_parallel_maintenance_workers")

    def _drop_progress(self) -> None:
        assert self.conn is not None and self.plan is not None
        with self.conn.transaction():
            self.conn.execute(sql.SQL("LOCK TABLE {} IN SHARE ROW EXCLUSIVE MODE").format(self.progress_table))
            self.conn.execute(sql.SQL("DELETE FROM {} WHERE target = %s").format(self.progress_table),
                              (self.plan.label,))  # fmt: skip
            left = self.conn.execute(sql.SQL("SELECT count(*) FROM {}").format(self.progress_table)).fetchone()[0]
            if left == 0:
                self.conn.execute(sql.SQL("DROP TABLE {}").format(self.progress_table))

    def search(self, vector: np.ndarray, k: int, *, namespace: str = "") -> list[tuple[str, float]]:
        if self.conn is None or self.plan is None or not self.plan.dense or self.ext is None:
            raise StoreError("pgvector: search needs a prepared import with a dense vector")
        plan = self.plan
        dest = plan.dense[0]
        ns = (plan.namespace.name, namespace) if plan.namespace else None
        with self.target.errors("search failed"):
            return _search(self.conn, self.ext, plan.relation, plan.id.name, dest.name, dest.typname,
                           plan.metrics.get(dest.name, "cosine"), vector, k, ns)  # fmt: skip

    def close(self) -> None:
        if self._loader is not None:
            self._loader.abort()
            self._committed = self._loader.committed
            self._loader = None
        self._close_extra()
        if self.conn is not None and not self.conn.closed:
            if self.plan is not None and not self._finished and self._committed == 0 and self._resumed_from == 0:
                self._leave_no_trace()
            self.conn.close()

    def _leave_no_trace(self) -> None:
        """An import that failed before its first commit leaves nothing behind: no progress row, and not
        even the table when it made it."""
        assert self.conn is not None and self.plan is not None
        if self._created:
            with suppress(psycopg.Error), self.conn.transaction():
                self.conn.execute(sql.SQL("DROP TABLE IF EXISTS {}").format(self.plan.relation))
        if self._progress_written:
            with suppress(psycopg.Error):
                self._drop_progress()


@contextmanager
def _phase(phase: str, what: str) -> Iterator[None]:
    """Log how long a step after the load took (``extra`` carries phase and seconds, for benchmarks)."""
    started = time.perf_counter()
    yield
    seconds = time.perf_counter() - started
    log.info("pgvector: %s of %s took %.2fs", phase, what, seconds, extra={"phase": phase, "seconds": seconds})


def _definitions_comment(manifest: Manifest, plan: _Plan) -> str:
    """The table comment of a table vecfmt creates: what the columns cannot say (metric, names, model)."""
    columns = {d.source: d.name for d in plan.dense}
    model = manifest.embedding_model
    definitions = {
        "vectors": [{"column": columns[v.column], "name": v.name, "metric": plan.metrics.get(columns[v.column])}
                    for v in manifest.vectors],
        "embedding_model": None if model is None else {"name": model.name, "provider": model.provider,
                                                       "dimension": model.dimension},
    }  # fmt: skip
    return json.dumps({COMMENT_KEY: definitions}, ensure_ascii=False)


def _dump_identity(manifest: Manifest) -> str | None:
    """What tells this dump from any other (the core's digest of its creation time and files' checksums);
    None for a store-to-store copy, which has no files."""
    return manifest.identity() if manifest.files else None


class _Aborted(Exception):
    """Another batch failed: this one must not commit (commits stay in dump order)."""


Job = Callable[[psycopg.Connection, Callable[[], None]], None]


class _Loader:
    """Loads batches on worker threads, one connection each, so the next batches are read and encoded
    while PostgreSQL loads these, and several backends load at once. Batches may COPY concurrently but
    commit strictly in dump order (each waits for its predecessor before writing its progress row), so
    what is committed is always a prefix of the dump: an import killed at any point resumes exactly.

    The dump reader decodes a row group (~64 MB) at a time, in bursts, so up to ``max_bytes`` of encoded
    batches may wait: enough to keep PostgreSQL busy through a burst (64 MB loaded as fast as 96 and
    160 MB did), and a bound on memory."""

    def __init__(self, connections: list[psycopg.Connection], target: Target, max_bytes: int = 64 << 20) -> None:
        self.target = target
        self.max_bytes = max_bytes
        self._jobs: list[tuple[int, Job, int]] = []  # (sequence, job, bytes), oldest first
        self._queued_bytes = 0  # waiting or running
        self._submitted = 0
        self._committed = 0  # jobs committed, in order
        self._closing = False
        self._changed = threading.Condition()
        self._error: BaseException | None = None
        self._threads = [threading.Thread(target=self._run, args=(conn,), name=f"vecfmt-pgvector-copy-{i}", daemon=True)
                         for i, conn in enumerate(connections)]  # fmt: skip
        for thread in self._threads:
            thread.start()

    def _run(self, conn: psycopg.Connection) -> None:
        while True:
            with self._changed:
                while not self._jobs and not self._closing:
                    self._changed.wait()
                if not self._jobs:
                    return
                sequence, job, size = self._jobs.pop(0)

            def my_turn(sequence: int = sequence) -> None:
                with self._changed:
                    while self._committed < sequence and self._error is None:
                        self._changed.wait()
                    if self._error is not None:
                        raise _Aborted

            try:
                if self._error is not None:
                    raise _Aborted
                with self.target.errors("cannot load a batch"):
                    job(conn, my_turn)
            except _Aborted:
                pass
            except BaseException as exc:  # handed to the caller
                with self._changed:
                    self._error = self._error or exc
            with self._changed:
                if self._error is None:
                    self._committed = sequence + 1
                self._queued_bytes -= size
                self._changed.notify_all()

    @property
    def committed(self) -> int:
        return self._committed

    def _raise(self) -> None:
        if self._error is not None:
            raise self._error

    def submit(self, job: Job, size: int) -> None:
        with self._changed:
            while self._queued_bytes and self._queued_bytes + size > self.max_bytes and self._error is None:
                self._changed.wait()
            self._raise()
            self._jobs.append((self._submitted, job, size))
            self._submitted += 1
            self._queued_bytes += size
            self._changed.notify_all()

    def close(self) -> None:
        """Wait for every batch; raise the first error."""
        with self._changed:
            self._closing = True
            self._changed.notify_all()
        for thread in self._threads:
            thread.join()
        self._raise()

    def abort(self) -> None:
        with self._changed:
            self._error = self._error or StoreError("import aborted")
            self._jobs.clear()
        with suppress(BaseException):
            self.close()


def _search(
    conn: psycopg.Connection,
    ext: _Extension,
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
    if namespace is not None:
        where = sql.SQL(" WHERE {} = %s").format(sql.Identifier(namespace[0]))
        params.append(namespace[1])
    params.append(int(k))
    query = sql.SQL("SELECT {}::text, {} AS distance FROM {}{} ORDER BY distance LIMIT %s").format(
        sql.Identifier(id_column), distance, relation, where)
    with conn.transaction():
        conn.execute("SELECT set_config('hnsw.ef_search', %s, true)", (str(max(40, min(1000, int(k)))),))
        rows = conn.execute(query, params).fetchall()
    return [(r[0], float(r[1])) for r in rows]


def open_exporter(uri: StoreURI) -> PgvectorExporter:
    return PgvectorExporter(uri)


def open_importer(uri: StoreURI) -> PgvectorImporter:
    return PgvectorImporter(uri)
