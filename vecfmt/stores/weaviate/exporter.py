"""Export: every tenant (or the collection) through the cursor API (``after`` the last UUID) over gRPC,
one page fetched while the previous one is converted. Vectors arrive as float32 bytes and are joined into
one NumPy matrix per page; properties become metadata. Resume token: the last UUID handed out.

Slices: a big tenant splits into ranges of the UUID space. Weaviate's cursor walks a shard's objects bucket,
keyed by the UUID's 16 bytes, in byte order (the order of the canonical lowercase text), and ``after`` need
not name an object: it seeks to the first key above it (``Shard.cursorObjectList``: ``Seek``, then one step
on an exact match). So a range ``[start, end)`` is read from ``after = start - 1`` and stops at the first UUID
at or past ``end``; the first range is open at the start and the last at the end, so every UUID there can be
is in exactly one range."""

from __future__ import annotations

import bisect
import json
import uuid
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

import numpy as np
import pyarrow as pa

from vecfmt.errors import InvalidDataError, StoreError
from vecfmt.manifest import Source, VectorSpec
from vecfmt.schema import DOCUMENT, ID, METADATA, vector_column, vectors_array
from vecfmt.stores.base import Chunk, Description, Slice, StoreURI, slice_count
from vecfmt.stores.weaviate import schema
from vecfmt.stores.weaviate.catalog import decode, namespace_of, tenant_of
from vecfmt.stores.weaviate.connect import SCHEME, Target, proto
from vecfmt.stores.weaviate.search import identity, nearest

UUID_SPACE = 1 << 128


class WeaviateExporter:
    """One collection, tenant by tenant. Weaviate has no snapshots: objects written during an export may
    or may not be in it, and the count check against the collection's aggregate says so."""

    supports_resume = True

    def __init__(self, uri: StoreURI) -> None:
        self.target = t = Target(uri)
        found = schema.read(t)
        if found is None:
            raise StoreError(f"{t.label} does not exist")
        self.collection = found
        self.primary = schema.primary_vector(found, uri.option("vector"))
        self.document = schema.document_property(found, uri.option("document"))
        self.id_property = schema.id_property(found, uri.option("id_property"))
        self.tenants = schema.tenants(t) if found.multi_tenant else []
        self.pool = ThreadPoolExecutor(1, thread_name_prefix="vecfmt-weaviate-page")
        self.dims: dict[str, int] = {}
        self.counts: dict[str, int] = {}
        # The primary vector first, then the others in the collection's order.
        self.order = [self.primary, *(n for n in found.vectors if n != self.primary)]
        self.columns = {name: vector_column(name or "default", i == 0) for i, name in enumerate(self.order)}

    def identity(self) -> tuple[str, ...]:
        return identity(self.target)

    def describe(self) -> Description:
        c = self.collection
        names = [namespace_of(x) for x in self.tenants] if c.multi_tenant else [""]
        counts = {n: self._count(n) for n in names}
        self.counts.update(counts)
        self._dimensions([n for n in names if counts[n]])
        vectors = [VectorSpec(name or "default", self.columns[name], self.dims[name], c.vectors[name])
                   for name in self.order]  # fmt: skip
        extra = {SCHEME: {"collection": c.definition, "primary": self.primary or "default",
                          "id_property": self.id_property, "document_property": self.document}}  # fmt: skip
        return Description(
            source=Source(kind=SCHEME, name=c.name, details={"multi_tenant": c.multi_tenant}),
            vectors=vectors,
            namespaces=counts,
            document=self.document is not None,
            extra=extra,
        )

    def _count(self, namespace: str) -> int:
        t = self.target
        with t.errors("cannot count the objects"):
            handle = t.client().collections.use(t.collection)
            if self.collection.multi_tenant:
                handle = handle.with_tenant(tenant_of(namespace))
            return int(handle.aggregate.over_all(total_count=True).total_count or 0)

    def _dimensions(self, namespaces: list[str]) -> None:
        """Weaviate's definition has no dimensions: read them off the first objects that have each vector."""
        for namespace in namespaces:
            for result in self._page(namespace, None, 100).results:
                for name, vector in self._vectors(result).items():
                    self.dims.setdefault(name, len(vector) // 4)
            if len(self.dims) == len(self.order):
                break
        missing = [n or "default" for n in self.order if n not in self.dims]
        if missing:
            raise StoreError(f"{self.target.label}: no object holds the vector(s) {missing}, so their dimension is "
                             "unknown; nothing to export")

    def slices(self, namespace: str) -> list[Slice]:
        """Equal ranges of the UUID space (``{"uuids": [start, end]}``, canonical text, the first start and the
        last end None: open), as many as the tenant's size asks for; one slice for a tenant that fits one.
        UUIDs Weaviate makes (v4) and vecfmt's (v5) are spread evenly; ids crowded into one part of the space
        (sequential UUIDs) give uneven slices, never a missed or doubled object."""
        rows = self.counts[namespace] if namespace in self.counts else self._count(namespace)
        row_bytes = 64 + sum(4 + 4 * dim for dim in self.dims.values())
        count = slice_count(rows, row_bytes)
        if count <= 1:
            return [Slice(namespace)]
        starts: list[str | None] = [None, *(str(uuid.UUID(int=UUID_SPACE * i // count)) for i in range(1, count))]
        ends = [*starts[1:], None]
        return [Slice(namespace, {"uuids": [start, end]}) for start, end in zip(starts, ends, strict=True)]

    # --- reading -----------------------------------------------------------------------------------

    def _page(self, namespace: str, after: str | None, limit: int) -> Any:
        t = self.target
        _, _, _, search_get_pb2, _ = proto()
        named = [n for n in self.order if n]
        request = search_get_pb2.SearchRequest(
            collection=t.collection, tenant=tenant_of(namespace) if self.collection.multi_tenant else "",
            limit=limit, after=after or "",
            metadata=search_get_pb2.MetadataRequest(uuid=True, vector=schema.LEGACY in self.order, vectors=named),
            properties=search_get_pb2.PropertiesRequest(return_all_nonref_properties=True),
            uses_123_api=True, uses_125_api=True, uses_127_api=True,
        )  # fmt: skip
        return t.rpc("cannot read objects", t.stub().Search, request)

    def _vectors(self, result: Any) -> dict[str, bytes]:
        meta = result.metadata
        out = {v.name: v.vector_bytes for v in meta.vectors if v.vector_bytes}
        if meta.vector_bytes:
            out[schema.LEGACY] = meta.vector_bytes
        return out

    def batches(self, part: Slice, *, batch_size: int, resume: str | None = None) -> Iterator[Chunk]:
        if len(self.dims) < len(self.order):  # a partitioned export's worker reads without describe()
            others = [namespace_of(x) for x in self.tenants] if self.collection.multi_tenant else []
            self._dimensions([part.namespace, *(n for n in others if n != part.namespace)])
        start, end = _bounds(part)
        state = json.loads(resume) if resume else {"after": _before(start), "rows": 0}
        after, rows = state["after"], int(state["rows"])
        limit = min(batch_size, self.target.page)
        pending: Future[Any] | None = self.pool.submit(self._page, part.namespace, after, limit)
        while pending is not None:
            reply = pending.result()
            results = reply.results
            more = len(results) == limit
            if end is not None and results and uuid.UUID(results[-1].metadata.id).int >= end:
                # The page runs past the slice's end (ids come in order): keep what is before it, and stop.
                results = results[:bisect.bisect_left(results, end, key=lambda r: uuid.UUID(r.metadata.id).int)]
                more = False
            if not results:
                break
            after = results[-1].metadata.id
            # The next page needs only the last UUID: fetch it while this one is converted.
            pending = self.pool.submit(self._page, part.namespace, after, limit) if more else None
            batch = self._batch(results)
            rows += batch.num_rows
            yield Chunk(batch, json.dumps({"after": after, "rows": rows}))

    def _batch(self, results: Any) -> pa.RecordBatch:
        # The reply holds one protobuf object per row; ids, vector bytes and properties are gathered once per
        # page, and each vector column becomes one NumPy buffer (no per-float Python objects).
        n = len(results)
        uuids = [r.metadata.id for r in results]
        vectors = [self._vectors(r) for r in results]
        metadata: list[str | None] = []
        documents: list[str | None] = []
        ids: list[str] = []
        order = self.collection.props
        for record_uuid, r in zip(uuids, results, strict=True):
            values = decode(r.properties.non_ref_props, order)
            original = values.pop(self.id_property, None) if self.id_property else None
            ids.append(original if isinstance(original, str) else record_uuid)
            if self.document is not None:
                documents.append(values.pop(self.document, None))
            try:
                metadata.append(json.dumps(values, ensure_ascii=False, allow_nan=False) if values else None)
            except ValueError:
                raise InvalidDataError(f"weaviate: object {record_uuid}: a property holds NaN or Infinity") from None
        arrays: dict[str, pa.Array] = {ID: pa.array(ids, pa.string())}
        for name in self.order:
            arrays[self.columns[name]] = self._column(name, vectors, uuids, required=name == self.primary)
        arrays[METADATA] = pa.array(metadata, pa.string())
        if self.document is not None:
            arrays[DOCUMENT] = pa.array(documents, pa.string())
        assert all(len(a) == n for a in arrays.values())
        return pa.RecordBatch.from_pydict(arrays)

    def _column(self, name: str, vectors: list[dict[str, bytes]], uuids: list[str], *, required: bool) -> pa.Array:
        dim = self.dims[name]
        size = dim * 4
        parts = [v.get(name, b"") for v in vectors]
        lengths = np.fromiter((len(p) for p in parts), dtype=np.int64, count=len(parts))
        present = lengths > 0
        bad = np.flatnonzero(present & (lengths != size) | (~present if required else False))
        if len(bad):
            row = int(bad[0])
            got = int(lengths[row]) // 4
            raise InvalidDataError(f"{self.target.label}: object {uuids[row]} has {got} values in vector "
                                   f"{name or 'default'!r}, others have {dim}; a dump holds one dimension per vector")
        zeros = bytes(size)
        flat = np.frombuffer(b"".join(p or zeros for p in parts), dtype="<f4").astype(np.float32, copy=False)
        array = vectors_array(flat.reshape(len(parts), dim))
        if present.all():
            return array
        return pa.FixedSizeListArray.from_arrays(array.values, dim, mask=pa.array(~present))

    def search(self, vector: np.ndarray, k: int, *, namespace: str = "") -> list[tuple[str, float]]:
        return nearest(self.target, self.collection.multi_tenant, self.primary, self.id_property, vector, k, namespace)

    def close(self) -> None:
        self.pool.shutdown(wait=True, cancel_futures=True)
        self.target.close()


def _bounds(part: Slice) -> tuple[int | None, int | None]:
    """A slice's ``[start, end)`` as 128-bit integers (None: open); the whole space for an unsplit slice."""
    if part.key is None:
        return None, None
    try:
        start, end = part.key["uuids"]
        return (None if start is None else uuid.UUID(start).int), (None if end is None else uuid.UUID(end).int)
    except (KeyError, TypeError, ValueError):
        raise StoreError(f"weaviate: {json.dumps(part.key)} is not a slice of this store") from None


def _before(start: int | None) -> str | None:
    """The cursor's ``after`` that reads from ``start`` on (the UUID just below it; None: from the first)."""
    return None if not start else str(uuid.UUID(int=start - 1))
