"""Export: one table (or query) in one snapshot, read with binary COPY through ADBC and decoded by NumPy."""

from __future__ import annotations

import hashlib
import queue
import threading
from collections.abc import Callable, Iterator
from contextlib import suppress
from dataclasses import dataclass
from typing import Any

import numpy as np
import psycopg
import pyarrow as pa
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict

from vecfmt.errors import InvalidDataError, StoreError
from vecfmt.manifest import EmbeddingModel, Source, VectorSpec
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
from vecfmt.stores.base import ChangeSet, Chunk, Description, KnobInfo, Slice, StoreURI, require_sdk, slice_count
from vecfmt.stores.pgvector import changes
from vecfmt.stores.pgvector.catalog import (
    DEFAULT_NAMESPACE_COLUMN,
    JSON_TYPES,
    SPARSE_TYPE_NAME,
    Attribute,
    find_extension,
    find_relation,
    primary_key,
    query_attributes,
    saved_definitions,
    table_attributes,
    table_identity,
    vector_indexes,
)
from vecfmt.stores.pgvector.connect import SCHEME, Target, comma_list, driver_message, log
from vecfmt.stores.pgvector.copy_binary import DENSE_TYPES, TEXT_TYPES, decode_dense, decode_sparse
from vecfmt.stores.pgvector.plan import table_changes
from vecfmt.stores.pgvector.search import (
    IndexTrial,
    checked_settings,
    explain_nearest,
    index_knobs,
    knob_method,
    nearest,
    plan_methods,
)

# Namespace column types whose values equal exactly what their text form reads back as: filtered with
# a plain "=", which an index serves. (Integers' text form is never '', so "" is just NULL for them.)
TEXT_NAMESPACE_TYPES = {"text", "varchar"}
INDEXABLE_NAMESPACE_TYPES = TEXT_NAMESPACE_TYPES | {"int2", "int4", "int8"}

# TID range scans (a WHERE on ctid reads only those pages) came with PostgreSQL 14; before, every slice
# would scan the whole table.
TID_RANGE_SCAN_VERSION = 140000
# Relation kinds with one heap whose ctid pages can be split: tables and materialized views (a view, a
# partitioned table's parent or a foreign table has no pages of its own).
HEAP_RELKINDS = {"r", "m"}


@dataclass
class _ExportColumn:
    attr: Attribute
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
        self._counts: dict[str, int | None] | None = None  # rows per namespace, once counted
        self._spans: dict[str, tuple[int, int]] | None = None  # namespace -> its first and last page, once split
        self._search_conn: psycopg.Connection | None = None
        self._marker: dict[str, Any] | str | None = None  # change_marker(), or why there is none; None: not yet
        self.conn = t.connect(autocommit=False, read_only=True)
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
        self.ext = find_extension(self.conn)
        try:
            self.snapshot: str | None = self.conn.execute("SELECT pg_export_snapshot()").fetchone()[0]
        except psycopg.Error as exc:  # e.g. on some poolers; one COPY per namespace is still consistent
            log.warning("pgvector: cannot export a snapshot (%s); each namespace is read on its own",
                        self.target.clean(driver_message(exc)))  # fmt: skip
            self.conn.rollback()
            self.snapshot = None

    def _inspect(self) -> None:
        t, options = self.target, self.target.uri.options
        self.relid: int | None = None
        if t.table is not None:
            found = find_relation(self.conn, t.schema, t.table)
            if found is None:
                raise StoreError(f"pgvector {t.where}: table {t.relation_label()!r} does not exist")
            self.relid, self.schema, self.table = found
            self.source_sql: sql.Composable = sql.Identifier(self.schema, self.table)
            attrs = table_attributes(self.conn, self.relid)
            pk = primary_key(self.conn, self.relid)
            indexes = vector_indexes(self.conn, self.relid)
        else:
            self.schema, self.table = "", ""
            self.source_sql = sql.SQL("({}) AS vecfmt_source").format(sql.SQL(t.query))  # type: ignore[arg-type]
            attrs = query_attributes(self.conn, sql.SQL(t.query))  # type: ignore[arg-type]
            pk, indexes = [], []
        self.attrs = {a.name: a for a in attrs}
        self.indexes = indexes

        def pick(option: str, default: str | None, allowed: Callable[[Attribute], bool], what: str) -> str | None:
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

        def is_dense(a: Attribute) -> bool:
            return a.is_pgvector and a.typname in DENSE_TYPES

        wanted = comma_list(options.get("vector"))
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
        fold = comma_list(options.get("fold"))
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
        self.saved = saved_definitions(self.conn, self.relid) if self.relid is not None else {}
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

    def identity(self) -> tuple[str, ...]:
        """The table this reads, as the server resolves it (a query: its text's digest in place of a table)."""
        with self.target.errors("cannot resolve the source table"):
            if self.table:
                return table_identity(self.conn, SCHEME, self.schema, self.table)
            digest = hashlib.sha256((self.target.query or "").encode()).hexdigest()[:16]
            return (*table_identity(self.conn, SCHEME, None, "")[:2], "query", digest)

    def change_counts(self) -> list[int] | None:
        """What a partitioned export records at plan time to tell, on resume, that the table changed since
        (vecfmt/parallel/export.py): the server's counts of rows inserted, updated and deleted."""
        with self.target.errors("cannot read the table's statistics"):
            return table_changes(self.conn, self.relid)

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
        self._counts = self._count_namespaces()  # slices() sizes itself from them
        return self._counts

    def _count_namespaces(self) -> dict[str, int | None]:
        if self.namespace_column is None:
            if self.relid is None:
                return {"": None}  # a query: counting it would run it twice
            row = self.conn.execute(sql.SQL("SELECT count(*) FROM {}").format(self.source_sql)).fetchone()
            return {"": int(row[0])}
        # The namespace column alone: an index holding it (the primary key vecfmt creates) can serve the count
        # without reading the table's pages (a delta by change marker needs nothing more).
        rows = self.conn.execute(
            sql.SQL("SELECT coalesce({}::text, '') AS ns, count(*) FROM {} GROUP BY 1 ORDER BY 1").format(
                sql.Identifier(self.namespace_column), self.source_sql)
        ).fetchall()  # fmt: skip
        return {row[0]: int(row[1]) for row in rows} or {"": 0}

    def _span(self, namespace: str, pages: int) -> tuple[int, int]:
        """The first and last page of a namespace's rows, so that its slices split the pages they are on (a
        table loaded namespace by namespace keeps them apart): one pass over the table finds them for every
        namespace, the first time one is split."""
        if self.namespace_column is None:
            return 0, pages - 1
        if self._spans is None:
            with self.target.errors("cannot find the namespaces' pages"):
                rows = self.conn.execute(sql.SQL(
                    "SELECT coalesce({}::text, '') AS ns, (min(ctid)::text::point)[0]::bigint, "
                    "(max(ctid)::text::point)[0]::bigint FROM {} GROUP BY 1").format(
                        sql.Identifier(self.namespace_column), self.source_sql)).fetchall()  # fmt: skip
            self._spans = {row[0]: (int(row[1]), int(row[2])) for row in rows}
        return self._spans.get(namespace, (0, pages - 1))

    def slices(self, namespace: str) -> list[Slice]:
        """Ranges of the table's pages (``{"pages": [first, end]}``, end None for the last: open, so no
        row can fall outside every slice), each read by a TID range scan: two workers read their own
        pages through their own connections, never with OFFSET. A namespace's slices split the pages its
        rows are on. One slice for a query, a view, a partitioned or foreign table, a server before
        PostgreSQL 14, or a namespace that fits one."""
        pages, table_bytes = self._heap_size()
        if pages is None:
            return [Slice(namespace)]
        if self._counts is None:
            with self.target.errors("cannot count the rows"):
                self._namespaces()
        counts = self._counts or {}
        rows = counts.get(namespace) or 0
        total = sum(c or 0 for c in counts.values())
        row_bytes = max(self._row_bytes(), table_bytes / max(1, total))  # metadata and documents count too
        count = slice_count(rows, row_bytes)
        if count <= 1:
            return [Slice(namespace)]
        first, last = self._span(namespace, pages)
        span = last + 1 - first
        count = min(count, span)
        if count <= 1:
            return [Slice(namespace)]
        # Open at both ends (from page 0, to the end), so that no row is outside every slice.
        bounds = [0] + [first + span * i // count for i in range(1, count)] + [None]
        return [Slice(namespace, {"pages": [bounds[i], bounds[i + 1]]}) for i in range(count)]

    def _heap_size(self) -> tuple[int | None, int]:
        """The table's pages (None when it cannot be split by ctid) and its bytes with TOAST."""
        if self.relid is None or self.conn.info.server_version < TID_RANGE_SCAN_VERSION:
            return None, 0
        with self.target.errors("cannot size the table"):
            relkind, pages, table_bytes = self.conn.execute(
                "SELECT relkind, pg_relation_size(oid) / current_setting('block_size')::bigint, pg_table_size(oid) "
                "FROM pg_class WHERE oid = %s", (self.relid,)).fetchone()  # fmt: skip
        return (int(pages) if relkind in HEAP_RELKINDS else None), int(table_bytes)

    def _row_bytes(self) -> int:
        """About how many bytes one row takes as Arrow (its vectors and a little more)."""
        return 64 + sum(4 + c.dimension * 4 for c in self.dense)

    def shared_snapshot(self) -> str | None:
        """The snapshot this exporter reads in (``pg_export_snapshot``), so that other exporters of the
        table (a partitioned export's workers, ``use_snapshot``) read exactly the same rows while this one
        stays open; None when the server cannot export one."""
        return self.snapshot

    def use_snapshot(self, snapshot: str) -> None:
        """Read every later batch in another exporter's snapshot (``shared_snapshot``), which must stay
        open until the reading is done."""
        if self._adbc is not None:
            with suppress(Exception):  # a fresh connection sets the snapshot as its first statement
                self._adbc.close()
            self._adbc = None
        self.snapshot = snapshot
        self._marker = "it reads another exporter's snapshot"  # which this one's marker would not describe

    def change_marker(self) -> dict[str, Any] | None:
        """``ChangeTracking``: the marker of the snapshot this exporter reads (changes.py), taken once."""
        if self._marker is None:
            self._marker = changes.snapshot_marker(self)
        return self._marker if isinstance(self._marker, dict) else None

    def changes_since(self, marker: dict[str, Any]) -> ChangeSet | str:
        """``ChangeTracking``: the rows written since ``marker``'s snapshot, or why it cannot tell (changes.py)."""
        self.change_marker()
        assert self._marker is not None
        return changes.changes_since(self, marker, self._marker)

    def select_sql(self, namespace: str, pages: list[int | None] | None = None,
                   condition: sql.Composable | None = None) -> sql.Composable:
        """The SELECT that one namespace's COPY runs (public so that its plan can be checked), for a slice's
        ``pages`` ([first, end), end None for the rest of the table) when given, of the rows that meet
        ``condition`` when given."""
        columns: list[sql.Composable] = [sql.SQL("{}::text").format(sql.Identifier(self.id_column))]
        columns += [sql.Identifier(c.attr.name) for c in self.dense]
        if self.sparse_column is not None:
            columns.append(sql.Identifier(self.sparse_column))
        columns.append(self._metadata_sql())
        if self.document_column is not None:
            columns.append(sql.SQL("{}::text").format(sql.Identifier(self.document_column)))
        query = sql.SQL("SELECT {} FROM {}").format(sql.SQL(", ").join(columns), self.source_sql)
        conditions: list[sql.Composable] = []
        if self.namespace_column is not None:
            conditions.append(self._namespace_filter(namespace))
        if pages is not None:
            first, end = pages
            # Page numbers as tid literals ('(page,0)'): whole numbers, quoted by Literal all the same.
            conditions.append(sql.SQL("ctid >= {}::tid").format(sql.Literal(f"({int(first)},0)")))
            if end is not None:
                conditions.append(sql.SQL("ctid < {}::tid").format(sql.Literal(f"({int(end)},0)")))
        if condition is not None:
            conditions.append(condition)
        if conditions:
            query = sql.SQL("{} WHERE {}").format(query, sql.SQL(" AND ").join(conditions))
        return query

    def ids_sql(self, namespace: str) -> sql.Composable:
        """The ids of one namespace, alone, as ``select_sql`` gives them."""
        query = sql.SQL("SELECT {}::text FROM {}").format(sql.Identifier(self.id_column), self.source_sql)
        if self.namespace_column is None:
            return query
        return sql.SQL("{} WHERE {}").format(query, self._namespace_filter(namespace))

    def _namespace_filter(self, namespace: str) -> sql.Composable:
        """Rows of ``namespace`` as describe() groups them (by text form, NULL and '' both ""). The
        namespace came from this database; Literal quotes it (never str formatting)."""
        column = sql.Identifier(self.namespace_column)
        typname = self.attrs[self.namespace_column].typname
        if typname not in INDEXABLE_NAMESPACE_TYPES:
            # No exact way back from the text form (numeric 1.0 = 1.00, citext): compare text, scanning.
            return sql.SQL("coalesce({}::text, '') = {}").format(column, sql.Literal(namespace))
        # A plain comparison on the column, so an index on it serves each namespace instead of every
        # namespace scanning the whole table.
        if namespace == "":
            empty = sql.SQL(" OR {} = ''").format(column) if typname in TEXT_NAMESPACE_TYPES else sql.SQL("")
            return sql.SQL("({} IS NULL{})").format(column, empty)
        return sql.SQL("{} = {}").format(column, sql.Literal(namespace))

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
                # not autocommit: one transaction; read-only for the session, as the inspecting connection
                self._adbc = dbapi.connect(self.target.conninfo_for(read_only=True))
                with self._adbc.cursor() as cur:
                    cur.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
                    if self.snapshot is not None:
                        # The id comes from pg_export_snapshot(); Literal quotes it anyway.
                        cur.execute(sql.SQL("SET TRANSACTION SNAPSHOT {}").format(
                            sql.Literal(self.snapshot)).as_string(self.conn))  # fmt: skip
        return self._adbc

    def batches(self, part: Slice, *, batch_size: int, resume: str | None = None) -> Iterator[Chunk]:
        pages = part.key.get("pages") if isinstance(part.key, dict) else None
        yield from self.read(self.select_sql(part.namespace, pages), batch_size=batch_size)

    def read(self, select: sql.Composable, *, batch_size: int) -> Iterator[Chunk]:
        """The canonical batches of a ``select_sql`` query, read in this exporter's snapshot."""
        t = self.target
        query = select.as_string(self.conn)
        hint = int(min(64 << 20, max(1 << 20, batch_size * self._row_bytes())))
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

    def _searched(self) -> _ExportColumn:
        if not self.dense or self.relid is None or self.ext is None:
            raise StoreError("pgvector: search needs a table with a dense vector column")
        column = self.dense[0]
        assert column.spec is not None
        return column

    def search_knobs(self) -> dict[str, KnobInfo]:
        """The search-time knobs of the primary vector's index (``Tunable``): ``ef_search`` for HNSW,
        ``probes`` for IVFFlat, none for a column without an index for its metric (searched exactly)."""
        column = self._searched()
        assert column.spec is not None
        return index_knobs(self.indexes, column.attr.name, column.spec.metric)

    def _search_args(self, namespace: str, settings: dict[str, int]) -> tuple[Any, ...]:
        column = self._searched()
        assert column.spec is not None and self.ext is not None
        checked = checked_settings(self.search_knobs(), settings, self.target.relation_label()) if settings else []
        ns = (self.namespace_column, namespace) if self.namespace_column else None
        return (self.ext, sql.Identifier(self.schema, self.table), self.id_column, column.attr.name,
                column.attr.typname, column.spec.metric), ns, checked  # fmt: skip

    def _search_connection(self) -> psycopg.Connection:
        """One read-only session for every search (not one per search: tuning times searches)."""
        if self._search_conn is None or self._search_conn.closed:
            self._search_conn = self.target.connect(read_only=True)
        return self._search_conn

    def search(self, vector: np.ndarray, k: int, *, namespace: str = "", **settings: int) -> list[tuple[str, float]]:
        """The ``k`` nearest ids; ``settings`` (``ef_search=``, ``probes=``; ``search_knobs()``) apply to this
        search only, in its transaction, with sequential scans off so that the index they tune serves it."""
        args, ns, checked = self._search_args(namespace, settings)
        with self.target.errors("search failed"):
            return nearest(self._search_connection(), *args, vector, k, ns, checked)

    def explain_search(self, vector: np.ndarray, k: int, *, namespace: str = "", **settings: int) -> str:
        """The plan (EXPLAIN) of ``search`` with the same arguments: which index serves it."""
        args, ns, checked = self._search_args(namespace, settings)
        with self.target.errors("cannot explain the search"):
            return explain_nearest(self._search_connection(), *args, vector, k, ns, checked)

    def uses_index(self, vector: np.ndarray, k: int, *, namespace: str = "", **settings: int) -> bool:
        """Whether ``search`` with these settings (one knob) reads the index that knob tunes. It may not: in a
        small namespace PostgreSQL reads the rows through another index (the primary key) and sorts them
        exactly, and the knob then changes nothing."""
        args, ns, checked = self._search_args(namespace, settings)
        with self.target.errors("cannot explain the search"):
            assert self.relid is not None
            return knob_method(settings) in plan_methods(self._search_connection(), self.relid, *args, vector, k, ns,
                                                         checked)  # fmt: skip

    def index_trial(self, namespace: str = "") -> IndexTrial:
        """A private copy of ``namespace``'s ids and primary vectors in a temporary table, on which HNSW
        indexes with other ``m`` / ``ef_construction`` are built (``build``) and searched; a context manager.
        The table and its indexes are only read; the copy is gone when the trial closes or its session ends."""
        column = self._searched()
        assert column.spec is not None and self.ext is not None
        where = sql.SQL("")
        if self.namespace_column is not None:
            where = sql.SQL(" WHERE {}").format(self._namespace_filter(namespace))
        return IndexTrial(self.target, self.ext, sql.Identifier(self.schema, self.table), where, self.id_column,
                          column.attr.name, column.attr.typname, column.dimension, column.spec.metric)  # fmt: skip

    def close(self) -> None:
        if self._search_conn is not None and not self._search_conn.closed:
            self._search_conn.close()
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
