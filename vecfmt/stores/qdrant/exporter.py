"""Export: ``scroll`` with ``with_vectors=True`` page by page (the next page fetched while the previous one is
converted), one namespace at a time. Resume token: the next page's offset (a point id) as Qdrant returns it.

Slices: a big namespace on a server splits into ranges of point ids. A scroll walks points in id order (integers,
then UUIDs by their bytes: ``ids.point_order``) from ``offset``, which is inclusive and need not name a point;
a range ``[start, end)`` is scrolled from ``start`` and stops at the first id at or past ``end``. The cuts are
quantiles of a random sample of the namespace's ids (``Sample.RANDOM``, Qdrant 1.11), so integer and UUID ids
alike split into slices of about equal size; the first range is open at the start and the last at the end, so
every point is in exactly one, whatever the sample."""

from __future__ import annotations

import bisect
import itertools
import json
import logging
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

import numpy as np
import pyarrow as pa

from vecfmt.errors import InvalidDataError, StoreError
from vecfmt.manifest import Source, VectorSpec
from vecfmt.schema import DOCUMENT, ID, METADATA, SPARSE_TYPE, SPARSE_VALUES, vector_column, vectors_array
from vecfmt.stores.base import Chunk, Description, Slice, StoreURI, slice_count
from vecfmt.stores.qdrant import catalog
from vecfmt.stores.qdrant.catalog import DEFAULT_VECTOR, FROM_QDRANT, UNNAMED, namespace_filter
from vecfmt.stores.qdrant.connect import SCHEME, Target
from vecfmt.stores.qdrant.ids import ID_KEY, NAMESPACE_KEY, point_order, record_id
from vecfmt.stores.qdrant.search import nearest

MAX_NAMESPACES = 100_000
# Ids sampled per slice to place the cuts (the sample is one request without payloads or vectors).
SAMPLES_PER_SLICE = 64
MAX_SAMPLES = 10_000
# Local mode is one process (its folder is locked): a partitioned export's workers could not open it, and one
# process reading ranges one after another only pays more scroll requests (each sorts every id). So it keeps
# one slice per namespace; tests turn this on to read local mode's ranges.
SPLIT_LOCAL = False
log = logging.getLogger("vecfmt.qdrant")
_ENCODER = json.JSONEncoder(ensure_ascii=False, allow_nan=False)  # json.dumps builds one per call otherwise


class QdrantExporter:
    """One collection (an alias resolved), namespace by namespace. Qdrant's scroll is no snapshot: points
    written during an export may or may not be in it, and the count check says so."""

    supports_resume = True

    def __init__(self, uri: StoreURI) -> None:
        self.target = Target(uri)
        self.pool = ThreadPoolExecutor(1, thread_name_prefix="vecfmt-qdrant-page")
        try:
            self._open(uri)
        except BaseException:
            self.close()  # the client's own finaliser would print a traceback at exit
            raise

    def _open(self, uri: StoreURI) -> None:
        t = self.target
        if not t.exists_on_disk():  # opening would create an empty storage folder
            raise StoreError(f"{t.label}: there is no Qdrant local storage at {t.path}")
        real, self.alias = t.resolve()
        if real is None:
            raise StoreError(f"{t.label} does not exist")
        self.real = real
        self.collection = c = catalog.read(t, real)
        self.primary = self._primary(uri.option("vector"))
        self.sparse = self._sparse(uri.option("sparse"))
        self.document = uri.option("document") or c.marks.get("document") or None
        # The primary vector first, then the others in the collection's order.
        self.order = ([self.primary] if self.primary is not None else []) + [n for n in c.dense if n != self.primary]
        self.columns = {n: vector_column(n or DEFAULT_VECTOR, i == 0) for i, n in enumerate(self.order)}
        self.namespaced: bool | None = None  # known once the namespaces are counted
        self.counts: dict[str, int | None] = {}

    def identity(self) -> tuple[str, ...]:
        return self.target.identity()

    def _primary(self, wanted: str | None) -> str | None:
        dense = self.collection.dense
        if wanted is not None:
            name = UNNAMED if wanted == DEFAULT_VECTOR and UNNAMED in dense else wanted
            if name not in dense:
                raise StoreError(f"{self.target.label} has no dense vector {wanted!r} (it has "
                                 f"{[n or DEFAULT_VECTOR for n in dense]})")
            return name
        for name in (UNNAMED, DEFAULT_VECTOR):
            if name in dense:
                return name
        return next(iter(dense), None)

    def _sparse(self, wanted: str | None) -> str | None:
        sparse = self.collection.sparse
        if wanted is not None:
            if wanted not in sparse:
                raise StoreError(f"{self.target.label} has no sparse vector {wanted!r} (it has {sorted(sparse)})")
            return wanted
        if len(sparse) > 1:  # a dump has one sparse column: choosing silently would drop the others
            raise StoreError(f"{self.target.label} has several sparse vectors {sorted(sparse)}; a dump holds one: "
                             "choose it with sparse=NAME")
        return next(iter(sparse), None)

    # --- what the collection holds -------------------------------------------------------------------

    def describe(self) -> Description:
        t, c = self.target, self.collection
        if self.primary is None and self.sparse is None:
            raise StoreError(f"{t.label} has no vectors to export")
        counts = self._namespaces()
        vectors = [VectorSpec(n or DEFAULT_VECTOR, self.columns[n], c.dense[n]["size"], self._metric(n))
                   for n in self.order]  # fmt: skip
        extra = {SCHEME: {"collection": self.real, "alias": t.collection if self.alias else None,
                          "dense": c.dense, "unnamed": self.primary == UNNAMED and len(self.order) == 1,
                          "sparse": self.sparse,
                          "sparse_modifier": c.sparse[self.sparse]["modifier"] if self.sparse else None,
                          "document": self.document}}  # fmt: skip
        return Description(
            source=Source(kind=SCHEME, name=t.collection, details={"collection": self.real}),
            vectors=vectors,
            namespaces=counts,
            sparse_values=self.sparse is not None,
            document=self.document is not None,
            extra=extra,
        )

    def _metric(self, name: str) -> str:
        distance = self.collection.dense[name]["distance"]
        if distance not in FROM_QDRANT:
            raise StoreError(f"{self.target.label}: vector {name or DEFAULT_VECTOR!r} uses distance {distance}, "
                             "which the format has no name for")
        return FROM_QDRANT[distance]

    def _namespaces(self) -> dict[str, int | None]:
        """Namespaces and exact counts: the values of the namespace key (facets, which a server answers from
        its keyword index; local mode needs none), and the points without one (the default namespace)."""
        t = self.target
        client = t.client()
        with t.errors("cannot count the points"):
            total = int(client.count(self.real, exact=True).count)
            if self.collection.marks.get("namespaces") is False:  # made by vecfmt, never given namespaces
                self.namespaced = False
                self.counts = {"": total}
                return dict(self.counts)
            default = int(client.count(self.real, count_filter=namespace_filter(""), exact=True).count)
        others: dict[str, int | None] = {}
        if default != total:
            if not t.local and NAMESPACE_KEY not in self.collection.indexed:
                raise StoreError(f"{t.label}: {total - default:,} points hold the payload key {NAMESPACE_KEY} but it "
                                 "has no keyword index, which listing namespaces needs: create one and export again")
            with t.errors("cannot list the namespaces"):
                hits = client.facet(self.real, NAMESPACE_KEY, limit=MAX_NAMESPACES, exact=True).hits
            for hit in hits:
                if not isinstance(hit.value, str) or not hit.value:
                    raise InvalidDataError(f"{t.label}: the payload key {NAMESPACE_KEY} holds {hit.value!r}, "
                                           "which is not a namespace name")
                others[hit.value] = int(hit.count)
            if len(hits) >= MAX_NAMESPACES or default + sum(v or 0 for v in others.values()) != total:
                raise StoreError(f"{t.label}: the namespaces' counts do not add up to the collection's {total:,} "
                                 "points (written to during the export?)")
        self.namespaced = bool(others)
        out: dict[str, int | None] = {"": default} if default or not others else {}
        out.update(sorted(others.items()))
        self.counts = dict(out)
        return out

    def _namespaced(self) -> bool:
        """Whether any point has a namespace (then the default namespace is filtered to those without)."""
        if self.namespaced is None:
            self._namespaces()
        return bool(self.namespaced)

    def slices(self, namespace: str) -> list[Slice]:
        """Ranges of point ids (``{"points": [start, end]}``: an integer or a UUID, the first start and the last
        end None: open), as many as the namespace's size asks for; one slice for a namespace that fits one, in
        local mode (``SPLIT_LOCAL``), or when the server cannot sample."""
        if self.target.local and not SPLIT_LOCAL:
            return [Slice(namespace)]
        if namespace not in self.counts:
            self._namespaces()
        rows = self.counts.get(namespace) or 0
        row_bytes = 64 + sum(4 + 4 * self.collection.dense[n]["size"] for n in self.order)
        count = slice_count(rows, row_bytes)
        if count <= 1:
            return [Slice(namespace)]
        cuts = self._cuts(namespace, count)
        starts: list[int | str | None] = [None, *cuts]
        ends = [*cuts, None]
        return [Slice(namespace, {"points": [start, end]}) for start, end in zip(starts, ends, strict=True)]

    def _cuts(self, namespace: str, count: int) -> list[int | str]:
        """Up to ``count - 1`` point ids, ascending, that cut a random sample of the namespace's ids into
        ``count`` parts of about equal size (fewer when the sample is small or holds few distinct ids)."""
        from qdrant_client import models

        t = self.target
        sample = min(MAX_SAMPLES, count * SAMPLES_PER_SLICE)
        try:
            with t.errors("cannot sample point ids"):
                hits = t.client().query_points(self.real, query=models.SampleQuery(sample=models.Sample.RANDOM),
                                               query_filter=self._filter(namespace), limit=sample,
                                               with_payload=False, with_vectors=False).points  # fmt: skip
        except StoreError as exc:  # a server before 1.11: the namespace is read whole, in one slice
            log.info("%s; namespace %r is exported as one slice", exc, namespace)
            return []
        ids = sorted({h.id for h in hits}, key=point_order)  # one id per point: a per-point key is forced
        picked = {ids[len(ids) * i // count] for i in range(1, count)} - {ids[0]} if ids else set()
        return sorted(picked, key=point_order)

    def _filter(self, namespace: str) -> Any:
        return namespace_filter(namespace) if self._namespaced() or namespace else None

    # --- reading -------------------------------------------------------------------------------------

    def _page(self, query_filter: Any, offset: Any, limit: int) -> tuple[list[Any], Any]:
        t = self.target
        with t.errors("cannot read points"):
            return t.client().scroll(self.real, scroll_filter=query_filter, limit=limit, offset=offset,  # type: ignore[no-any-return]
                                     with_payload=True, with_vectors=True)  # fmt: skip

    def batches(self, part: Slice, *, batch_size: int, resume: str | None = None) -> Iterator[Chunk]:
        start, end = _bounds(part)
        state = json.loads(resume) if resume else {"offset": start, "rows": 0, "done": False}
        if state.get("done"):
            return
        offset, rows = state["offset"], int(state["rows"])
        limit = min(batch_size, self.target.page)
        query_filter = self._filter(part.namespace)
        stop = None if end is None else point_order(end)
        pending: Future[Any] | None = self.pool.submit(self._page, query_filter, offset, limit)
        while pending is not None:
            records, offset = pending.result()
            if stop is not None and (offset is None or point_order(offset) >= stop):
                # The page reaches the slice's end or the namespace's (ids come in order): keep what is before
                # the slice's end, and stop.
                if records and point_order(records[-1].id) >= stop:
                    records = records[:bisect.bisect_left(records, stop, key=lambda r: point_order(r.id))]
                offset = None
            # The next page needs only the offset Qdrant returned: fetch it while this one is converted.
            pending = self.pool.submit(self._page, query_filter, offset, limit) if offset is not None else None
            if not records:
                break
            batch = self._batch(records)
            rows += batch.num_rows
            yield Chunk(batch, json.dumps({"offset": offset, "rows": rows, "done": offset is None}))

    def _batch(self, records: list[Any]) -> pa.RecordBatch:
        # The client hands out one pydantic Record per point, its vectors as Python lists: a per-point loop is
        # forced, so each field is gathered by one comprehension per page and each vector column becomes one
        # NumPy matrix. Only points holding vecfmt's own payload keys (a mapped id, a namespace, the document)
        # are handled one by one.
        point_ids = [r.id for r in records]
        payloads: list[dict[str, Any] | None] = [r.payload for r in records]
        vectors: list[Any] = [r.vector for r in records]
        ids = [str(p) for p in point_ids]  # an integer or UUID point id as text
        documents: list[str | None] = [None] * len(records)
        reserved = {ID_KEY, self.document} - {None}
        if self.namespaced:
            reserved.add(NAMESPACE_KEY)
        for row in [i for i, p in enumerate(payloads) if p and not reserved.isdisjoint(p)]:
            payload = dict(payloads[row])  # type: ignore[arg-type]
            if self.namespaced:
                payload.pop(NAMESPACE_KEY, None)
            ids[row] = record_id(point_ids[row], payload)
            if self.document is not None:
                document = payload.pop(self.document, None)
                if document is not None and not isinstance(document, str):
                    raise InvalidDataError(f"{self.target.label}: point {ids[row]!r}: the document key "
                                           f"{self.document!r} holds a {type(document).__name__}, not text")
                documents[row] = document
            payloads[row] = payload
        encode = _ENCODER.encode
        try:
            metadata = [encode(p) if p else None for p in payloads]
        except ValueError:
            row = next(i for i, p in enumerate(payloads) if p and not _encodes(p))
            raise InvalidDataError(f"{self.target.label}: point {ids[row]!r}: the payload holds NaN or "
                                   "Infinity") from None
        arrays: dict[str, pa.Array] = {ID: pa.array(ids, pa.string())}
        named = any(isinstance(v, dict) for v in vectors)  # a collection with only its unnamed vector: lists
        for name in self.order:
            rows = [v.get(name) if isinstance(v, dict) else None for v in vectors] if named else vectors
            arrays[self.columns[name]] = self._dense(name, rows, ids)
        if self.sparse is not None:
            arrays[SPARSE_VALUES] = _sparse_column([v.get(self.sparse) if isinstance(v, dict) else None
                                                    for v in vectors])  # fmt: skip
        arrays[METADATA] = pa.array(metadata, pa.string())
        if self.document is not None:
            arrays[DOCUMENT] = pa.array(documents, pa.string())
        return pa.RecordBatch.from_pydict(arrays)

    def _dense(self, name: str, rows: list[Any], ids: list[str]) -> pa.Array:
        dim = self.collection.dense[name]["size"]
        missing = rows.count(None)  # a C loop; most pages have every vector
        present = np.fromiter((r is not None for r in rows), dtype=bool, count=len(rows)) if missing else None
        if missing and name == self.primary:
            row = rows.index(None)
            raise InvalidDataError(f"{self.target.label}: point {ids[row]!r} has no vector {name or DEFAULT_VECTOR!r}, "
                                   "the dump's primary vector (choose another with vector=NAME)")
        if missing:
            filler = [0.0] * dim
            rows = [r if r is not None else filler for r in rows]
        try:  # Python floats holding float32 values: the cast to float32 is exact
            matrix = np.array(rows, dtype=np.float32)
        except ValueError:
            matrix = np.zeros((0, 0), dtype=np.float32)
        if matrix.shape != (len(rows), dim):
            row = next(i for i, r in enumerate(rows) if len(r) != dim)
            raise InvalidDataError(f"{self.target.label}: point {ids[row]!r} has {len(rows[row])} values in vector "
                                   f"{name or DEFAULT_VECTOR!r}, the collection {dim}")
        array = vectors_array(matrix)
        if present is None:
            return array
        return pa.FixedSizeListArray.from_arrays(array.values, dim, mask=pa.array(~present))

    def search(self, vector: np.ndarray, k: int, *, namespace: str = "") -> list[tuple[str, float]]:
        if self.primary is None:
            raise StoreError(f"{self.target.label} has no dense vector to search")
        return nearest(self.target, self.real, self.primary, vector, k, namespace, self._namespaced())

    def close(self) -> None:
        self.pool.shutdown(wait=True, cancel_futures=True)
        self.target.close()


def _bounds(part: Slice) -> tuple[int | str | None, int | str | None]:
    """A slice's ``[start, end)`` point ids (None: open); the whole namespace for an unsplit slice."""
    if part.key is None:
        return None, None
    try:
        start, end = part.key["points"]
        for bound in (start, end):
            if bound is not None:
                point_order(bound)  # an integer or a UUID
        return start, end
    except (KeyError, TypeError, ValueError, AttributeError):
        raise StoreError(f"qdrant: {json.dumps(part.key)} is not a slice of this store") from None


def _encodes(payload: dict[str, Any]) -> bool:
    try:
        _ENCODER.encode(payload)
    except ValueError:
        return False
    return True


def _sparse_column(rows: list[Any]) -> pa.Array:
    """Qdrant's SparseVector objects as the dump's struct column (0-based uint32 indices, float32 values),
    each row's indices sorted as the format requires."""
    present = np.fromiter((r is not None for r in rows), dtype=bool, count=len(rows))
    lengths = np.fromiter((len(r.indices) if r is not None else 0 for r in rows), dtype=np.int64, count=len(rows))
    offsets = np.zeros(len(rows) + 1, dtype=np.int32)
    np.cumsum(lengths, out=offsets[1:])
    total = int(offsets[-1])
    indices = np.fromiter((i for r in rows if r is not None for i in r.indices), dtype=np.uint32, count=total)
    values = np.fromiter((v for r in rows if r is not None for v in r.values), dtype=np.float32, count=total)
    steps = np.diff(indices.astype(np.int64))
    inside = np.ones(len(steps), dtype=bool)
    inside[offsets[1:-1][(offsets[1:-1] > 0) & (offsets[1:-1] < len(indices))] - 1] = False  # row boundaries
    if len(steps) and (steps[inside] <= 0).any():
        for start, end in itertools.pairwise(offsets):  # rare: sort the rows that need it
            order = np.argsort(indices[start:end], kind="stable")
            indices[start:end], values[start:end] = indices[start:end][order], values[start:end][order]
    mask = pa.array(~present)
    index_lists = pa.ListArray.from_arrays(pa.array(offsets), pa.array(indices, pa.uint32()))
    value_lists = pa.ListArray.from_arrays(pa.array(offsets), pa.array(values, pa.float32()))
    struct = pa.StructArray.from_arrays([index_lists, value_lists], fields=list(SPARSE_TYPE), mask=mask)
    return struct
