"""Import planning: which table column each dump column goes to, with what type, checked against
pgvector's limits before anything is written; and the indexes to build after the load."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

import psycopg
from psycopg import sql

from vecfmt.errors import InvalidDataError, StoreError
from vecfmt.manifest import Manifest
from vecfmt.schema import DOCUMENT, ID, METADATA, SPARSE_VALUES, VALUES, check_metric
from vecfmt.stores.pgvector.catalog import (
    COMMENT_KEY,
    DEFAULT_NAMESPACE_COLUMN,
    DEFAULT_SPARSE_COLUMN,
    DEFAULT_VECTOR_COLUMN,
    ID_TYPES,
    INDEX_MAX_DIM,
    JSON_TYPES,
    MAX_DIM,
    MAX_SPARSE_DIM,
    OPCLASS_SUFFIX,
    SPARSE_TYPE_NAME,
    Attribute,
    primary_key,
    table_attributes,
)
from vecfmt.stores.pgvector.connect import SCHEME, Target, comma_list, log
from vecfmt.stores.pgvector.copy_binary import DENSE_TYPES, TEXT_TYPES

STAGING_METADATA = "vecfmt_metadata"  # the staging table's JSON column when the table keeps none


@dataclass
class Dest:
    """One column of the target table that a dump column goes to, and how its values are encoded."""

    name: str
    source: str  # dump column: id, values, values_x, sparse_values, metadata, document, or "" (namespace)
    typname: str  # vector, halfvec, sparsevec, text, int8, uuid, jsonb, ...
    dimension: int = 0


@dataclass
class Plan:
    schema: str
    table: str
    id: Dest
    dense: list[Dest]
    sparse: Dest | None
    metadata: Dest | None
    document: Dest | None
    namespace: Dest | None
    folded: list[tuple[str, str]] = field(default_factory=list)  # (column, SQL type) filled from metadata
    metrics: dict[str, str] = field(default_factory=dict)  # dest column -> metric
    metadata_in_table: bool = True  # False: the JSON only feeds the folded columns (staging column)

    @property
    def relation(self) -> sql.Composable:
        return sql.Identifier(self.schema, self.table)

    @property
    def label(self) -> str:
        return f"{self.schema}.{self.table}"

    def loaded(self) -> list[Dest]:
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
            self.metadata = Dest(STAGING_METADATA, METADATA, "jsonb")
            self.metadata_in_table = False


def source_shape(manifest: Manifest) -> dict[str, Any]:
    """The shape recorded by a pgvector export (column names, SQL types), to recreate the table."""
    if manifest.source is None or manifest.source.kind != SCHEME:
        return {}
    shape = manifest.extra.get(SCHEME)
    return shape if isinstance(shape, dict) else {}


def plan_new(target: Target, conn: psycopg.Connection, manifest: Manifest, schema: str) -> Plan:
    """A table this import creates: names and types from the options, else from a pgvector export."""
    t, options = target, target.uri.options
    shape = source_shape(manifest)
    id_shape = shape.get("id") or {}
    id_type = id_shape.get("type") if id_shape.get("type") in ID_TYPES else "text"
    id_dest = Dest(options.get("id") or id_shape.get("column") or ID, ID, id_type)
    vector_names = comma_list(options.get("vector")) or []
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
        dense.append(Dest(name, spec.column, typname, spec.dimension))
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
        sparse = Dest(options.get("sparse") or recorded.get("column") or DEFAULT_SPARSE_COLUMN, SPARSE_VALUES,
                      SPARSE_TYPE_NAME, int(dimension))  # fmt: skip
    folded = [(c["name"], c["type"]) for c in shape.get("folded_columns") or []
              if isinstance(c, dict) and "name" in c and "type" in c]  # fmt: skip
    if "metadata" in options:
        metadata_name = options["metadata"] or None
    elif shape:
        metadata_name = shape.get("metadata_column")  # None: the source table had no JSON column
    else:
        metadata_name = METADATA
    metadata = Dest(metadata_name, METADATA, "jsonb") if metadata_name else None
    document = None
    if manifest.document:
        document = Dest(options.get("document") or shape.get("document_column") or DOCUMENT, DOCUMENT, "text")
    namespace = None
    if _namespaced(t, manifest):
        namespace = Dest(options.get("namespace_column") or shape.get("namespace_column")
                         or DEFAULT_NAMESPACE_COLUMN, "", "text")  # fmt: skip
    plan = Plan(schema, t.table, id_dest, dense, sparse, metadata, document, namespace)  # type: ignore[arg-type]
    plan.folded = _resolve_folded(conn, folded, plan)
    plan.carry_folded_metadata()
    _check_plan(t, plan, manifest)
    return plan


def _namespaced(target: Target, manifest: Manifest) -> bool:
    if "namespace_column" in target.uri.options:
        return bool(target.uri.options["namespace_column"])
    return any(ns.name != "" for ns in manifest.namespaces)


def _resolve_folded(conn: psycopg.Connection, folded: list[tuple[str, str]], plan: Plan) -> list[tuple[str, str]]:
    """Folded columns' SQL types as this server names them. The type text comes from a manifest, so it
    is only ever passed as a value (to_regtype), and the name used in DDL is the server's own."""
    taken = {d.name for d in plan.loaded()}
    out = []
    for name, type_text in folded:
        if name in taken:
            continue
        row = conn.execute("SELECT format_type(to_regtype(%s), NULL)", (type_text,)).fetchone()
        if row is None or row[0] is None:
            log.warning("pgvector: folded column %r has unknown type %r; it stays in the metadata", name, type_text)
            continue
        out.append((name, row[0]))
    return out


def _check_plan(target: Target, plan: Plan, manifest: Manifest) -> None:
    """pgvector's limits, said before anything is written."""
    names = [d.name for d in plan.loaded()] + [n for n, _ in plan.folded]
    duplicates = {n for n in names if names.count(n) > 1}
    if duplicates:
        raise StoreError(f"pgvector {target.where}: two dump columns map to the table column "
                         f"{sorted(duplicates)[0]!r}")  # fmt: skip
    for dest in plan.dense:
        if dest.dimension > MAX_DIM:
            raise InvalidDataError(
                f"vector {dest.source!r} has {dest.dimension} dimensions; pgvector stores at most {MAX_DIM}"
            )
    metric = target.uri.option("metric")
    for spec in manifest.vectors:
        dest = next(d for d in plan.dense if d.source == spec.column)
        plan.metrics[dest.name] = check_metric(metric) if metric else spec.metric
    if plan.sparse is not None:
        plan.metrics[plan.sparse.name] = check_metric(metric) if metric else (
            manifest.primary.metric if manifest.primary else "dot")


def plan_existing(target: Target, conn: psycopg.Connection, manifest: Manifest, schema: str, relid: int) -> Plan:
    """Map the dump onto a table that exists (append, upsert, resume), checking types and dimensions."""
    t, options = target, target.uri.options
    attrs = {a.name: a for a in table_attributes(conn, relid)}
    label = f"{schema}.{t.table}"
    shape = source_shape(manifest)

    def column(option: str, *candidates: str | None, required: bool = True) -> Attribute | None:
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

    pk = primary_key(conn, relid)
    id_attr = column("id", (shape.get("id") or {}).get("column"), pk[0] if len(pk) == 1 else None, ID)
    assert id_attr is not None
    if id_attr.typname not in ID_TYPES:
        raise StoreError(f"pgvector {t.where}: id column {id_attr.name!r} is {id_attr.sql_type}; vecfmt "
                         "writes ids into text, varchar, smallint, integer, bigint or uuid")  # fmt: skip
    id_dest = Dest(id_attr.name, ID, id_attr.typname)
    dense_attrs = [a for a in attrs.values() if a.is_pgvector and a.typname in DENSE_TYPES]
    vector_names = comma_list(options.get("vector")) or []
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
        dense.append(Dest(attr.name, spec.column, attr.typname, spec.dimension))
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
        sparse = Dest(attr.name, SPARSE_VALUES, SPARSE_TYPE_NAME, int(dimension))
    metadata = None
    meta_attr = column("metadata", shape.get("metadata_column"), METADATA, required=False)
    if meta_attr is not None:
        if meta_attr.typname not in JSON_TYPES | TEXT_TYPES:
            raise StoreError(f"pgvector {t.where}: metadata column {meta_attr.name!r} is {meta_attr.sql_type}, "
                             "not jsonb, json or text")  # fmt: skip
        metadata = Dest(meta_attr.name, METADATA, meta_attr.typname)
    document = None
    if manifest.document:
        doc_attr = column("document", shape.get("document_column"), DOCUMENT, required=False)
        if doc_attr is not None:
            if doc_attr.typname not in TEXT_TYPES:
                raise StoreError(f"pgvector {t.where}: document column {doc_attr.name!r} is {doc_attr.sql_type}")
            document = Dest(doc_attr.name, DOCUMENT, doc_attr.typname)
    namespace = None
    ns_attr = column("namespace_column", shape.get("namespace_column"), DEFAULT_NAMESPACE_COLUMN, required=False)
    if _namespaced(t, manifest) and ns_attr is None:
        raise StoreError(
            f"pgvector {t.where}: the dump has namespaces but table {label} has no column "
            f"{DEFAULT_NAMESPACE_COLUMN!r} for them; name one with namespace_column=COLUMN"
        )
    if ns_attr is not None:
        if ns_attr.typname not in TEXT_TYPES:
            raise StoreError(f"pgvector {t.where}: namespace column {ns_attr.name!r} is {ns_attr.sql_type}")
        namespace = Dest(ns_attr.name, "", ns_attr.typname)
    plan = Plan(schema, t.table, id_dest, dense, sparse, metadata, document, namespace)  # type: ignore[arg-type]
    folded = [(c["name"], attrs[c["name"]].sql_type) for c in shape.get("folded_columns") or []
              if isinstance(c, dict) and c.get("name") in attrs]  # fmt: skip
    taken = {d.name for d in plan.loaded()}
    plan.folded = [(n, ty) for n, ty in folded if n not in taken]
    plan.carry_folded_metadata()
    _check_plan(t, plan, manifest)
    return plan


def check_unique_key(target: Target, conn: psycopg.Connection, plan: Plan, relid: int) -> None:
    """Upsert needs ON CONFLICT, which needs a unique index on exactly the key."""
    row = conn.execute(
        "SELECT 1 FROM pg_index i WHERE i.indrelid = %s AND i.indisunique AND i.indpred IS NULL "
        "AND i.indexprs IS NULL AND (SELECT array_agg(a.attname::text ORDER BY a.attname) FROM pg_attribute a "
        "  WHERE a.attrelid = i.indrelid AND a.attnum = ANY(i.indkey)) = %s",
        (relid, sorted(plan.key())),
    ).fetchone()
    if row is None:
        raise StoreError(
            f"pgvector {target.where}: upsert needs a primary key or unique index on "
            f"({', '.join(plan.key())}) of {plan.label}"
        )


def index_requests(target: Target, plan: Plan, manifest: Manifest) -> list[dict[str, Any]]:
    """The indexes finish() builds on a table this import creates, checked against pgvector's limits
    now, before any row is written. ``index=auto`` rebuilds a pgvector source's own indexes (none if
    it had none), and otherwise puts HNSW on the primary vector when its dimension allows."""
    uri = target.uri
    method = uri.option("index", "auto") or "auto"
    if method not in ("auto", "hnsw", "ivfflat", "none"):
        raise StoreError(f"pgvector {target.where}: index must be auto, hnsw, ivfflat or none, not {method!r}")
    if method == "none":
        return []
    shape = source_shape(manifest)
    chosen: list[tuple[Dest, dict[str, Any]]] = []  # (column, the source's index or {})
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


def definitions_comment(manifest: Manifest, plan: Plan) -> str:
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


def table_changes(conn: psycopg.Connection, relid: int | None) -> list[int] | None:
    """The rows inserted, updated and deleted in a table as the server counts them (``pg_stat_user_tables``):
    read without a scan, and different once any row of the table changed, so that a partitioned export
    resumed later can tell the table changed in between (an updated row moves to another page, so to
    another partition: it would be read by a partition done and again by one not done). None for a query
    source or a relation without statistics. A session's counts are published when its transaction ends
    (within about a second); a reset of the statistics reads as a change."""
    if relid is None:
        return None
    row = conn.execute("SELECT n_tup_ins, n_tup_upd, n_tup_del FROM pg_stat_user_tables WHERE relid = %s",
                       (relid,)).fetchone()  # fmt: skip
    return None if row is None else [int(value) for value in row]
