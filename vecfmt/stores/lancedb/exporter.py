"""The LanceDB ``Exporter``: one pinned table version, read as canonical batches."""

from __future__ import annotations

import json
from collections.abc import Iterator

import numpy as np
import pyarrow as pa

from vecfmt import metadata
from vecfmt.errors import StoreError
from vecfmt.manifest import EmbeddingModel, Source, VectorSpec
from vecfmt.schema import DOCUMENT, ID, METADATA, SPARSE_VALUES, check_metric, vector_column
from vecfmt.storage import redact, secrets_of
from vecfmt.stores.base import Chunk, Description, KnobInfo, Slice, StoreURI, slice_count
from vecfmt.stores.lancedb.connect import (
    NAMESPACE_COLUMN,
    PRIMARY_COLUMN,
    SCHEME,
    _connect,
    _identity,
    _in_namespace,
    _lance_message,
    _saved_definitions,
    _table_names,
)
from vecfmt.stores.lancedb.search import SEARCH_KNOBS, _checked_settings, _search
from vecfmt.stores.lancedb.slices import address_filter, namespace_rows, plan_ranges, scan_layout


class LanceDBExporter:
    supports_resume = True  # tokens name a table version and an offset in it

    def __init__(self, uri: StoreURI) -> None:
        self.uri = uri
        self.name = uri.require("table")
        db = _connect(uri, must_exist=True)
        if self.name not in _table_names(db):
            raise StoreError(f"LanceDB table {self.name!r} does not exist in {redact(uri.location)}")
        self.table = db.open_table(self.name)
        self.table.checkout(self.table.version)  # one consistent version for the whole export
        self.version: int = self.table.version  # ... which the slices name, for the workers that read them
        self.resumed_version: int | None = None  # an interrupted export's version, read from its resume on
        self._layout: pa.Table | None = None  # where each namespace's rows are (slices.py)
        self.schema: pa.Schema = self.table.schema
        self.saved = _saved_definitions(self.schema)
        self.id_column = uri.option("id", ID) or ID
        if self.id_column not in self.schema.names:
            raise StoreError(f"LanceDB table {self.name!r} has no id column {self.id_column!r}")
        self.vectors = self._vector_columns()  # lance column -> VectorSpec
        ns_default = NAMESPACE_COLUMN if NAMESPACE_COLUMN in self.schema.names else None
        self.namespace_column = uri.option("namespace_column", ns_default)
        # metadata is JSON text; a metadata column of another type is folded like any other column
        own = self.schema.field(METADATA).type if METADATA in self.schema.names else None
        self.own_metadata = own is not None and (pa.types.is_string(own) or pa.types.is_large_string(own))
        known = {self.id_column, *self.vectors, SPARSE_VALUES, DOCUMENT, self.namespace_column}
        if self.own_metadata:
            known.add(METADATA)
        self.folded = [f for f in self.schema if f.name not in known]

    def identity(self) -> tuple[str, str, str]:
        return _identity(self.uri, self.name)

    def search(self, vector: np.ndarray, k: int, *, namespace: str = "", **settings: int) -> list[tuple[str, float]]:
        """The ``k`` nearest ids; ``settings`` (``search_knobs()``: ``nprobes``, ``refine_factor``, ``ef``)
        apply to this search only."""
        primary = next(iter(self.vectors), None)
        if primary is None:
            raise StoreError(f"LanceDB table {self.name!r} has no dense vector to search")
        checked = _checked_settings(self.search_knobs(), settings, self.name) if settings else {}
        return _search(self.table, primary, self.id_column, self.vectors[primary].metric, self.namespace_column,
                       vector, k, namespace, checked)

    def search_knobs(self) -> dict[str, KnobInfo]:
        """The knobs of the primary vector's index: IVF indexes ``nprobes`` and ``refine_factor``, HNSW ones
        also ``ef``; none without an index (a flat, exact scan)."""
        primary = next(iter(self.vectors), None)
        kinds = [i.index_type.upper() for i in self.table.list_indices() if primary in i.columns]
        kinds = [kind for kind in kinds if kind.startswith("IVF")]
        if not kinds:
            return {}
        knobs = dict(SEARCH_KNOBS)
        if not any("HNSW" in kind for kind in kinds):
            del knobs["ef"]
        return knobs

    def _vector_columns(self) -> dict[str, VectorSpec]:
        candidates = [f for f in self.schema if pa.types.is_fixed_size_list(f.type)
                      and pa.types.is_floating(f.type.value_type)]
        if not candidates and SPARSE_VALUES not in self.schema.names:
            raise StoreError(f"LanceDB table {self.name!r} has no vector column")
        wanted = self.uri.option("vector")
        names = [f.name for f in candidates]
        primary = wanted or (PRIMARY_COLUMN if PRIMARY_COLUMN in names else names[0] if names else None)
        if primary is not None and primary not in names:
            raise StoreError(f"LanceDB table {self.name!r} has no vector column {primary!r}")
        saved = {v["lance_column"]: v for v in self.saved.get("vectors", [])}
        default_metric = check_metric(self.uri.option("metric", "cosine") or "cosine")
        specs: dict[str, VectorSpec] = {}
        for f in sorted(candidates, key=lambda f: f.name != primary):
            is_primary = f.name == primary
            info = saved.get(f.name, {})
            name = info.get("name") or ("default" if is_primary else f.name)
            specs[f.name] = VectorSpec(
                name=name,
                column=vector_column(name, is_primary),
                dimension=f.type.list_size,
                metric=self.uri.option("metric") or info.get("metric") or default_metric,
            )
        return specs

    def describe(self) -> Description:
        model = self.saved.get("embedding_model")
        return Description(
            source=Source(kind=SCHEME, name=self.name),
            vectors=list(self.vectors.values()),
            namespaces=self._namespaces(),
            sparse_values=SPARSE_VALUES in self.schema.names,
            document=DOCUMENT in self.schema.names,
            embedding_model=EmbeddingModel(**model) if model else None,
            extra={"lancedb": {"folded_columns": {f.name: str(f.type) for f in self.folded}}}
            if self.folded else {},
        )

    def _namespaces(self) -> dict[str, int | None]:
        if self.namespace_column is None:
            return {"": self.table.count_rows()}
        found = namespace_rows(self._rows_layout())  # one scan gives the counts and the slices
        return dict(sorted(found.items()))  # a stable order: resumed exports rely on it

    def _rows_layout(self) -> pa.Table:
        if self._layout is None:
            self._layout = scan_layout(self.table.search(), self.namespace_column)
        return self._layout

    def slices(self, namespace: str) -> list[Slice]:
        """Ranges of row addresses (``{"version": V, "from": [fragment, offset], "to": ...}``, open at
        both ends), each read at the version this exporter planned on, also by a partitioned export's
        workers: every slice reads one snapshot. A namespace too small to split is one slice keyed by the
        version alone, so that a worker reads it at that version too."""
        if self.namespace_column is None:
            rows = self.table.count_rows()
        else:
            rows = namespace_rows(self._rows_layout()).get(namespace, 0)
        count = slice_count(rows, self._row_bytes())
        ranges = plan_ranges(self._rows_layout(), namespace, count) if count > 1 else []
        if len(ranges) <= 1:
            return [Slice(namespace, {"version": self.version})]
        return [Slice(namespace, {"version": self.version, "from": start, "to": end}) for start, end in ranges]

    def _row_bytes(self) -> int:
        """About how many bytes one row takes as Arrow (its vectors and a little more)."""
        return 64 + sum(4 + spec.dimension * 4 for spec in self.vectors.values())

    def batches(self, part: Slice, *, batch_size: int, resume: str | None = None) -> Iterator[Chunk]:
        """Scan one slice of one table version; the resume token is that version, the slice's range and the
        rows of it read so far. A resumed export reads the interrupted one's version from then on, in
        every slice, so it ends with exactly the rows the interrupted one would have."""
        key = part.key or {}
        bounds = {"from": key["from"], "to": key["to"]} if "from" in key else {}
        position = json.loads(resume) if resume else None
        if position is not None:
            if {name: position[name] for name in ("from", "to") if name in position} != bounds:
                raise StoreError(f"LanceDB table {self.name!r} splits namespace {part.namespace!r} otherwise than "
                                 "when the export was interrupted (the table changed since); export again without "
                                 "resume")  # fmt: skip
            self.resumed_version = position["version"]
        version = self.resumed_version if self.resumed_version is not None else key.get("version", self.version)
        self._checkout(version)
        where = [] if self.namespace_column is None else [_in_namespace(self.namespace_column, part.namespace)]
        if "from" in key and (rows := address_filter(key["from"], key["to"])) is not None:
            where.append(rows)
        query = self.table.search()
        if where:
            query = query.where(" AND ".join(f"({term})" for term in where))
        columns = [f.name for f in self.schema if f.name != self.namespace_column]
        offset = position["offset"] if position else 0
        query = query.select(columns).limit(None)
        for batch in (query.offset(offset) if offset else query).to_batches(batch_size):
            offset += batch.num_rows
            yield Chunk(self._canonical(batch), json.dumps({"version": version, **bounds, "offset": offset}))

    def _checkout(self, version: int) -> None:
        """Read ``version`` (a worker's exporter opens the latest, the slices name the planned one), which
        must have the columns this exporter described."""
        if version == self.table.version:
            return
        try:
            self.table.checkout(version)
        except Exception as exc:
            problem = _lance_message(exc, secrets_of(self.uri.location))
            raise StoreError(f"cannot read version {version} of LanceDB table {self.name!r}, which this export "
                             f"reads (cleaned up since?): {problem}") from None
        if not self.table.schema.equals(self.schema, check_metadata=True):
            raise StoreError(f"LanceDB table {self.name!r} has other columns in version {version}, which this "
                             f"export reads, than in version {self.version}; export again")

    def _canonical(self, batch: pa.RecordBatch) -> pa.RecordBatch:
        ids = _as_string(batch.column(self.id_column))
        arrays: dict[str, pa.Array] = {ID: ids}
        for lance_column, spec in self.vectors.items():
            arrays[spec.column] = batch.column(lance_column)
        if SPARSE_VALUES in batch.schema.names:
            arrays[SPARSE_VALUES] = batch.column(SPARSE_VALUES)
        arrays[METADATA] = self._metadata(batch, ids)
        if DOCUMENT in batch.schema.names:
            arrays[DOCUMENT] = batch.column(DOCUMENT)
        return pa.RecordBatch.from_pydict(arrays)

    def _metadata(self, batch: pa.RecordBatch, ids: pa.Array) -> pa.Array:
        own = batch.column(METADATA) if self.own_metadata else None
        if self.folded:
            return metadata.fold(ids, own, METADATA, batch.select([f.name for f in self.folded]))
        if own is None:
            return pa.nulls(batch.num_rows, pa.string())
        return metadata.as_objects(own, METADATA, ids)

    def close(self) -> None:
        pass


def _as_string(ids: pa.Array) -> pa.Array:
    return ids if pa.types.is_string(ids.type) else ids.cast(pa.string())
