"""Export: each partition (namespace) read in primary-key order, ``page`` rows a query, each query asking for
the rows after the last key handed out (``pk > last``, as pymilvus's ``query_iterator`` does internally, with the
key quoted properly: the iterator pastes a VARCHAR key between double quotes unescaped, so an id holding ``"``
breaks it). The resume token is that last key. Vectors become one NumPy matrix per page.

Slices: a big namespace on a server splits into primary-key ranges, ``pk >= start and pk < end`` added to each
page's filter (keys as literals: integers through ``int``, strings through ``connect.literal``). The cuts are
the keys at equal row counts of the namespace, read in key order from a scan of the key field alone (pages of
16,384 keys); the first range is open at the start and the last at the end, so every row is in exactly one,
whatever was written since the scan."""

from __future__ import annotations

import json
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

import numpy as np
import pyarrow as pa

from vecfmt.errors import InvalidDataError, StoreError
from vecfmt.manifest import Source, VectorSpec
from vecfmt.metadata import dumps
from vecfmt.schema import DOCUMENT, ID, METADATA, SPARSE_TYPE, SPARSE_VALUES, vector_column, vectors_array
from vecfmt.stores.base import Chunk, Description, Slice, StoreURI, slice_count
from vecfmt.stores.milvus.catalog import (
    DEFAULT_PARTITION,
    Collection,
    dense_matrix,
    metric_from_milvus,
    namespace_of,
    partition_of,
)
from vecfmt.stores.milvus.connect import MAX_QUERY_ROWS, SCHEME, Target, literal
from vecfmt.stores.milvus.search import nearest

# Vectors per query answer, at most, so that an answer stays far below the result sizes a Milvus server
# returns by default (no server runs here to test against); 10,000 rows of 768 dimensions are 29 MiB.
PAGE_BYTES = 64 << 20
# Milvus Lite runs in one process (its folder is locked): a partitioned export's workers could not open it, and
# one process reading ranges one after another only pays more queries (each gathers the partition's rows). So
# it keeps one slice per namespace; tests turn this on to read Milvus Lite's ranges.
SPLIT_LOCAL = False


class MilvusExporter:
    """One collection, partition by partition. Each page is read at Strong consistency; rows written during
    an export may or may not be in it, and the count check against ``count(*)`` says so."""

    supports_resume = True

    def __init__(self, uri: StoreURI) -> None:
        self.target = Target(uri)
        self.pool = ThreadPoolExecutor(1, thread_name_prefix="vecfmt-milvus-page")
        try:
            self._open(uri)
        except BaseException:
            self.close()  # Milvus Lite holds its folder's lock until released
            raise

    def _open(self, uri: StoreURI) -> None:
        t = self.target
        found = t.describe()
        if found is None:
            raise StoreError(f"{t.label} does not exist")
        self.collection = c = Collection.parse(found, document=uri.option("document"), metadata=uri.option("metadata"))
        wanted = uri.option("vector")
        if wanted is not None and not any(f.name == wanted for f in c.dense):
            raise StoreError(f"{t.label} has no dense vector field {wanted!r} (it has {[f.name for f in c.dense]})")
        self.primary = next((f for f in c.dense if f.name == wanted), c.dense[0] if c.dense else None)
        if self.primary is None and c.sparse is None:
            raise StoreError(f"{t.label} has no vector field to export")
        self.order = [self.primary, *(f for f in c.dense if f is not self.primary)] if self.primary else []
        self.columns = {f.name: vector_column(f.name, i == 0) for i, f in enumerate(self.order)}
        t.load()
        self.partitions: list[str] = []
        self.counts: dict[str, int | None] = {}

    def identity(self) -> tuple[str, ...]:
        return self.target.identity()

    def describe(self) -> Description:
        t, c = self.target, self.collection
        metrics = self._metrics()
        vectors = [VectorSpec(f.name, self.columns[f.name], f.dim, metrics[f.name]) for f in self.order]
        counts = self._counts()
        converted = {f.name: f.type for f in self.order if f.type != "FLOAT_VECTOR"}
        extra = {SCHEME: {
            "collection": c.name,
            "fields": [f.to_dict() for f in c.fields],
            "enable_dynamic_field": c.dynamic,
            "primary_key": c.pk.name,
            "primary_vector": self.primary.name if self.primary else None,
            "sparse_field": c.sparse.name if c.sparse else None,
            "sparse_metric": metrics.get(c.sparse.name) if c.sparse else None,
            "document_field": c.document.name if c.document else None,
            "metadata_field": c.metadata.name if c.metadata else None,
            "scalar_fields": [f.name for f in c.scalars],
            "converted_to_float32": converted,  # FLOAT16/BFLOAT16 fields, widened exactly
            "partition_key": c.partition_key.name if c.partition_key else None,
        }}  # fmt: skip
        return Description(
            source=Source(kind=SCHEME, name=c.name, details={"lite": t.lite}),
            vectors=vectors,
            namespaces=counts,
            sparse_values=c.sparse is not None,
            document=c.document is not None,
            extra=extra,
        )

    def _metrics(self) -> dict[str, Any]:
        t, c = self.target, self.collection
        client = t.client()
        out: dict[str, Any] = {}
        with t.errors("cannot read the indexes"):
            for f in [*self.order, *([c.sparse] if c.sparse else [])]:
                names = client.list_indexes(c.name, field_name=f.name)
                if not names:
                    raise StoreError(f"{t.label}: vector field {f.name!r} has no index, so its metric is unknown")
                metric = str(client.describe_index(c.name, names[0]).get("metric_type") or "")
                out[f.name] = metric if f is c.sparse else metric_from_milvus(metric, f.name)
        return out

    def _counts(self) -> dict[str, int | None]:
        """Rows per partition. A collection with a partition key spreads rows over partitions itself: it is one
        namespace. Per-partition counts come from the statistics, which may count deleted rows until a
        compaction: when they do not add up to ``count(*)`` they are reported as unknown (no check)."""
        t, c = self.target, self.collection
        total = t.count()
        if c.partition_key is not None:
            self.partitions = []
            self.counts = {"": total}
            return dict(self.counts)
        client = t.client()
        with t.errors("cannot list the partitions"):
            names = list(client.list_partitions(c.name))
            stats = {p: int(client.get_partition_stats(c.name, p).get("row_count", 0)) for p in names}
        self.partitions = [p for p in names if stats[p] or (p == DEFAULT_PARTITION and len(names) == 1)]
        for p in self.partitions:
            partition_of(namespace_of(p))  # a partition called like no namespace would be is refused here
        if not self.partitions:
            self.partitions = [DEFAULT_PARTITION]
        counted = sum(stats[p] for p in self.partitions)
        known = counted == total
        self.counts = {namespace_of(p): (stats[p] if known else None) for p in self.partitions}
        return dict(self.counts)

    def slices(self, namespace: str) -> list[Slice]:
        """Primary-key ranges (``{"pk": [start, end]}``: keys of the field's type, the first start and the last
        end None: open), as many as the namespace's size asks for; one slice for a namespace that fits one, or
        on Milvus Lite (``SPLIT_LOCAL``)."""
        if self.target.lite and not SPLIT_LOCAL:
            return [Slice(namespace)]
        if namespace not in self.counts:
            self._counts()
        rows = self.counts.get(namespace)
        if rows is None:  # the statistics count deleted rows: the collection's count bounds the namespace's
            rows = self.target.count()
        row_bytes = 64 + sum(4 + 4 * f.dim for f in self.order)
        count = slice_count(rows, row_bytes)
        if count <= 1:
            return [Slice(namespace)]
        cuts = self._cuts(namespace, sorted({rows * i // count for i in range(1, count)} - {0}))
        starts: list[Any] = [None, *cuts]
        ends = [*cuts, None]
        return [Slice(namespace, {"pk": [start, end]}) for start, end in zip(starts, ends, strict=True)]

    def _cuts(self, namespace: str, positions: list[int]) -> list[Any]:
        """The keys at these row positions of the namespace in key order (fewer when it holds fewer rows now),
        read from the key field alone, ``MAX_QUERY_ROWS`` keys a query."""
        t, c = self.target, self.collection
        pk = c.pk.name
        partitions = None if c.partition_key is not None else [partition_of(namespace)]
        cuts: list[Any] = []
        after, seen = None, 0
        wanted = iter(positions)
        position = next(wanted, None)
        while position is not None:
            with t.errors("cannot read the primary keys"):
                page = t.client().query(c.name, filter=self._where(after, None, None), output_fields=[pk],
                                        limit=MAX_QUERY_ROWS, partition_names=partitions, iterator="True",
                                        reduce_stop_for_best="True")  # fmt: skip
            while position is not None and position < seen + len(page):
                cuts.append(page[position - seen][pk])
                position = next(wanted, None)
            if len(page) < MAX_QUERY_ROWS:
                break
            seen += len(page)
            after = page[-1][pk]
        return cuts

    def _where(self, after: Any, start: Any, end: Any) -> str:
        """A page's filter: the keys after the last one handed out (else from the slice's start), before the
        slice's end."""
        pk = self.collection.pk.name
        terms = [f"{pk} > {self._literal(after)}" if after is not None else
                 f"{pk} >= {self._literal(start)}" if start is not None else ""]  # fmt: skip
        if end is not None:
            terms.append(f"{pk} < {self._literal(end)}")
        return " and ".join(term for term in terms if term)

    def _literal(self, key: Any) -> str:
        """A primary key as an expression literal: never text pasted into the filter as it is."""
        return literal(key) if self.collection.pk.type == "VARCHAR" else str(int(key))

    def _bounds(self, part: Slice) -> tuple[Any, Any]:
        """A slice's ``[start, end)`` keys (None: open), checked to be of the key field's type."""
        if part.key is None:
            return None, None
        kind = str if self.collection.pk.type == "VARCHAR" else int
        key = part.key.get("pk") if isinstance(part.key, dict) else None
        if not (isinstance(key, list) and len(key) == 2 and all(b is None or type(b) is kind for b in key)):
            raise StoreError(f"{self.target.label}: {json.dumps(part.key)} is not a slice of this collection")
        return key[0], key[1]

    # --- reading -----------------------------------------------------------------------------------

    def _page(self, namespace: str, after: Any, bounds: tuple[Any, Any],
              limit: int) -> tuple[list[dict[str, Any]], dict[str, np.ndarray]]:  # fmt: skip
        """One page: its rows (dicts) and the FLOAT_VECTOR fields read as whole matrices when pymilvus lets
        them be (``columnar``); a field without a matrix is in the rows."""
        t, c = self.target, self.collection
        where = self._where(after, *bounds)
        partitions = None if c.partition_key is not None else [partition_of(namespace)]
        with t.errors("cannot read rows"):
            # iterator=True and reduce_stop_for_best: Milvus returns the first ``limit`` rows in key order
            # (what query_iterator asks for); without them a limited query's rows come in no defined order.
            # strict_float32: should rows be materialised, each FLOAT_VECTOR is a slice of one NumPy array
            # per page rather than a list of Python floats.
            page = t.client().query(c.name, filter=where, output_fields=["*"], limit=limit,
                                    partition_names=partitions, iterator="True",
                                    reduce_stop_for_best="True", strict_float32=True)  # fmt: skip
            return columnar(page) or (list(page), {})

    def batches(self, part: Slice, *, batch_size: int, resume: str | None = None) -> Iterator[Chunk]:
        bounds = self._bounds(part)
        state = json.loads(resume) if resume else {"after": None, "rows": 0}
        after, rows = state["after"], int(state["rows"])
        limit = self.page_rows(batch_size)
        pk = self.collection.pk.name
        pending: Future[Any] | None = self.pool.submit(self._page, part.namespace, after, bounds, limit)
        while pending is not None:
            page, matrices = pending.result()
            if not page:
                break
            after = page[-1][pk]
            # The next page needs only the last key: fetch it while this one is converted.
            pending = self.pool.submit(self._page, part.namespace, after, bounds, limit) if len(page) == limit else None
            batch = self._batch(page, matrices)
            rows += batch.num_rows
            yield Chunk(batch, json.dumps({"after": after, "rows": rows}))

    def page_rows(self, batch_size: int) -> int:
        """Rows a query asks for: ``page`` when given, else as many as the core's batch holds within
        ``PAGE_BYTES`` of vectors. Each query of Milvus Lite gathers every row of the partition before it
        picks the page (a cost per query that grows with the collection), so pages are as large as is safe."""
        if self.target.page is not None:
            return min(batch_size, self.target.page)
        width = sum(4 * f.dim for f in self.order) or 4
        return max(1, min(batch_size, MAX_QUERY_ROWS, PAGE_BYTES // width))

    def _batch(self, page: list[dict[str, Any]], matrices: dict[str, np.ndarray]) -> pa.RecordBatch:
        # Vector fields come as one float32 matrix per page (``columnar``), or else from the rows (NumPy slices
        # of the page's array, bytes for FLOAT16/BFLOAT16), stacked once per page; ids and metadata are per-row
        # Python values in pymilvus's result, so they are gathered per row (JSON has no columnar encoder).
        c = self.collection
        pk = c.pk.name
        ids = [str(r[pk]) for r in page]
        arrays: dict[str, pa.Array] = {ID: pa.array(ids, pa.string())}
        for f in self.order:
            given = matrices.get(f.name)
            matrix, mask = (given, None) if given is not None else dense_matrix([r.get(f.name) for r in page],
                                                                                f.type, f.dim)  # fmt: skip
            if mask is not None and f is self.primary:
                row = ids[int(np.flatnonzero(mask)[0])]
                raise InvalidDataError(f"{self.target.label}: row {row!r} has no {f.name!r} vector, which is the "
                                       "dump's primary vector (vector= to pick another)")
            array = vectors_array(matrix)
            if mask is not None:
                array = pa.FixedSizeListArray.from_arrays(array.values, f.dim, mask=pa.array(mask))
            arrays[self.columns[f.name]] = array
        if c.sparse is not None:
            arrays[SPARSE_VALUES] = sparse_array([r.get(c.sparse.name) for r in page])
        known = {f.name for f in c.fields}
        metadata: list[str | None] = []
        for record_id, r in zip(ids, page, strict=True):
            own = r.get(c.metadata.name) if c.metadata else None
            values: dict[str, Any] = dict(own) if isinstance(own, dict) else {}
            if own is not None and not isinstance(own, dict):
                values[c.metadata.name] = own  # type: ignore[union-attr]
            for f in c.scalars:
                if r.get(f.name) is not None:
                    values[f.name] = r[f.name]
            if c.dynamic:
                values.update((k, v) for k, v in r.items() if k not in known and k != "$meta")
            try:
                metadata.append(dumps(values) if values or own is not None else None)
            except (TypeError, ValueError):
                raise InvalidDataError(f"{self.target.label}: row {record_id!r}: a value holds NaN, Infinity or a "
                                       "type JSON cannot hold") from None
        arrays[METADATA] = pa.array(metadata, pa.string())
        if c.document is not None:
            arrays[DOCUMENT] = pa.array([r.get(c.document.name) for r in page], pa.string())
        return pa.RecordBatch.from_pydict(arrays)

    def search(self, vector: np.ndarray, k: int, *, namespace: str = "") -> list[tuple[str, float]]:
        if self.primary is None:
            raise StoreError(f"{self.target.label} has no dense vector to search")
        partitions = None if self.collection.partition_key is not None else [partition_of(namespace)]
        return nearest(self.target, self.collection.name, self.primary.name, self.collection.pk.name, vector, k,
                       partitions)  # fmt: skip

    def close(self) -> None:
        self.pool.shutdown(wait=True, cancel_futures=True)
        self.target.close()


def columnar(page: Any) -> tuple[list[dict[str, Any]], dict[str, np.ndarray]] | None:
    """A query result read by column: pymilvus decodes the scalar fields of every row when the answer arrives,
    and each other field per row when that row is first read (a slice per vector, ~100 us a row). Here each
    non-null FLOAT_VECTOR field becomes one matrix straight from the answer's packed float32 bytes, and JSON
    fields are decoded by pymilvus's own per-cell decoder (the same values a row would hold). None when the
    result is not the one this was written against (pymilvus's ``HybridExtraList``) or holds another lazily
    decoded field (sparse, float16, arrays, the dynamic field): then the rows are read as pymilvus gives them."""
    fields = getattr(page, "_lazy_field_data", None)
    if not isinstance(page, list) or not isinstance(fields, list):
        return None
    try:
        from pymilvus import DataType
        from pymilvus.client.field_data_extractors import decode_cell
    except ImportError:
        return None
    rows: list[dict[str, Any]] = list(list.__iter__(page))  # the eagerly decoded fields, rows not materialised
    if any("_original_idx" in row for row in rows[:1]):
        return None
    matrices: dict[str, np.ndarray] = {}
    decoded: dict[str, list[Any]] = {}
    for data in fields:
        if data.type == DataType.FLOAT_VECTOR and not len(data.valid_data):
            matrix = packed_float32(data.vectors.float_vector, len(rows), int(data.vectors.dim))
            if matrix is None:
                return None
            matrices[data.field_name] = matrix
        elif data.type == DataType.JSON and not data.is_dynamic:
            # per row: JSON is decoded one cell at a time, as pymilvus decodes it
            decoded[data.field_name] = [decode_cell(data, i) for i in range(len(rows))]
        else:
            return None
    for name, values in decoded.items():
        for row, value in zip(rows, values, strict=True):
            row[name] = value
    return rows, matrices


def packed_float32(vectors: Any, rows: int, dim: int) -> np.ndarray | None:
    """A protobuf ``FloatArray`` (pymilvus's FLOAT_VECTOR payload) as a (rows, dim) float32 matrix, exactly.
    Its serialised form is one packed field: tag 0x0A, the byte length as a varint, then the values as
    little-endian float32, which NumPy reads as they are (iterating the field instead costs ~0.3 us a value).
    None when the payload is not that shape."""
    raw = vectors.SerializeToString()
    if rows * dim == 0:
        return np.zeros((rows, dim), dtype=np.float32) if not raw else None
    if not raw or raw[0] != 0x0A:
        return None
    length, shift, at = 0, 0, 1
    while at < len(raw):  # the varint: 7 bits a byte, low bits first
        byte = raw[at]
        length |= (byte & 0x7F) << shift
        at += 1
        shift += 7
        if not byte & 0x80:
            break
    if length != rows * dim * 4 or len(raw) != at + length:
        return None
    return np.frombuffer(raw, dtype="<f4", offset=at).astype(np.float32, copy=False).reshape(rows, dim)


def sparse_array(rows: list[Any]) -> pa.Array:
    """Sparse rows as pymilvus gives them ({index: value} dicts, one per row) as the dump's struct column,
    indices ascending; float32 values are exact (Milvus stores float32)."""
    indices: list[list[int] | None] = []
    values: list[list[float] | None] = []
    for row in rows:
        if row is None:
            indices.append(None)
            values.append(None)
            continue
        items = sorted((int(k), float(v)) for k, v in dict(row).items())
        indices.append([k for k, _ in items])
        values.append([v for _, v in items])
    mask = pa.array([i is None for i in indices])
    idx = pa.array([i or [] for i in indices], pa.list_(pa.uint32()))
    val = pa.array([v or [] for v in values], pa.list_(pa.float32()))
    return pa.StructArray.from_arrays([idx, val], fields=list(SPARSE_TYPE), mask=mask)
