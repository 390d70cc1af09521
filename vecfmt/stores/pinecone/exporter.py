"""Export: page through ``list`` (ids, sorted), ``fetch`` pages with several requests in flight, and build
canonical Arrow batches from NumPy. Resume tokens name the last pagination token fully handed out."""

from __future__ import annotations

import itertools
import json
from collections import deque
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

import numpy as np
import pyarrow as pa

from vecfmt.errors import InvalidDataError, StoreError
from vecfmt.manifest import Source, VectorSpec
from vecfmt.schema import DOCUMENT, ID, METADATA, SPARSE_TYPE, SPARSE_VALUES, VALUES, vector_column, vectors_array
from vecfmt.stores.base import Chunk, Description, Slice, StoreURI
from vecfmt.stores.pinecone.catalog import (
    FETCH_URL_BUDGET,
    LIST_PAGE,
    IndexInfo,
    describe_index,
    document_namespace,
    metric_from_pinecone,
    vecfmt_namespace,
)
from vecfmt.stores.pinecone.connect import SCHEME, Target, flag, log
from vecfmt.stores.pinecone.search import identity, nearest

Page = tuple[list[str], Any]  # the ids of one page and the token that follows it (None: the last page)


class PineconeExporter:
    """One index, namespace by namespace. Pinecone has no snapshots: records written during an export
    may or may not be in it, and the count check against ``describe_index_stats`` says so."""

    supports_resume = True

    def __init__(self, uri: StoreURI) -> None:
        self.target = t = Target(uri)
        self.strict = flag(uri, "strict")
        self.document_key = uri.option("document_key") or None
        self.prefixes = [p for p in (uri.option("prefixes") or "").split(",") if p] or None
        self._check_prefixes()
        info = describe_index(t)
        assert info is not None
        self.info: IndexInfo = info
        self.ids: list[str] | None = _read_ids(uri) if uri.option("ids_file") else None
        if info.pod and self.ids is None:
            raise StoreError(f"pinecone {t.label} is pod-based, and Pinecone's list (which an export pages "
                             "through) works on serverless indexes only: export with ids_file=FILE (one id a "
                             "line, or a Parquet file with an id column)")
        if self.ids is not None and self.prefixes:
            raise StoreError("pinecone: ids_file and prefixes do not go together (the file says which ids)")
        self.index = t.data_plane(info.host)
        self.pool = ThreadPoolExecutor(t.concurrency, thread_name_prefix="vecfmt-pinecone-fetch")
        self.counts: dict[str, int] = {}
        self.exported: dict[str, int] = {}  # rows per namespace, slices finished in this process
        self.slices_done: dict[str, int] = {}
        self._mapping()

    def _check_prefixes(self) -> None:
        if self.prefixes is None:
            return
        for a, b in itertools.permutations(self.prefixes, 2):
            if b.startswith(a):
                raise StoreError(f"pinecone: prefixes {a!r} and {b!r} overlap (every id starting with {b!r} "
                                 "also starts with {a!r}); give prefixes that split the ids")

    def _mapping(self) -> None:
        """Which fields become which columns (a document index's schema; a vector index's fixed shape)."""
        info = self.info
        option_document = self.target.uri.option("document")
        if info.kind == "vector":
            if option_document:
                raise StoreError("pinecone: the document= option is for document indexes; on a vector index "
                                 "use document_key= (the metadata key that holds the text)")
            self.dense = {VALUES: None} if info.dimension else {}
            self.sparse_field = SPARSE_VALUES if info.sparse else None
            self.document_field = self.document_key
            return
        if self.document_key:
            raise StoreError("pinecone: document_key= is for vector indexes; a document index's text is a "
                             "field: use document=FIELD")
        fields = info.schema.get("fields", {})
        dense = info.dense_fields
        dense.sort(key=lambda item: item[0] != VALUES)  # a field called "values" is the primary one
        self.dense = {}
        self.specs: list[VectorSpec] = []
        for position, (name, spec) in enumerate(dense):
            label = "default" if name == VALUES else name.removeprefix(VALUES + "_")
            column = vector_column(label, position == 0)
            self.dense[column] = name
            self.specs.append(VectorSpec(label, column, int(spec["dimension"]),
                                         metric_from_pinecone(spec.get("metric") or "cosine")))
        sparse = info.sparse_fields
        if len(sparse) > 1:
            raise StoreError(f"pinecone {self.target.label}: {len(sparse)} sparse fields ({', '.join(sparse)}); "
                             "a dump holds one sparse vector")
        self.sparse_field = sparse[0] if sparse else None
        default_doc = DOCUMENT if fields.get(DOCUMENT, {}).get("type") == "string" else None
        self.document_field = option_document or default_doc
        if self.document_field and fields.get(self.document_field, {}).get("type") != "string":
            raise StoreError(f"pinecone {self.target.label}: document={self.document_field!r} is not a string "
                             "field of the index")
        if not self.dense and self.sparse_field is None:
            raise StoreError(f"pinecone {self.target.label}: the index has no vector field to export")

    def identity(self) -> tuple[str, ...]:
        return identity(self.info)

    def describe(self) -> Description:
        t, info = self.target, self.info
        stats = t.call("cannot read the index stats", self.index.describe_index_stats)
        self.counts = {vecfmt_namespace(name): s.vector_count for name, s in stats.namespaces.items()}
        if info.kind == "vector":
            vectors = [VectorSpec("default", VALUES, info.dimension, info.metric)] if info.dimension else []
        else:
            vectors = self.specs
        names = sorted(self.counts) or [""]
        extra = {SCHEME: {"kind": info.kind, "schema": info.schema, "metric": info.metric,
                          "fields": {**{c: f for c, f in self.dense.items() if f}, SPARSE_VALUES: self.sparse_field,
                                     DOCUMENT: self.document_field}}}  # fmt: skip
        return Description(
            source=Source(kind=SCHEME, name=info.name or "", details={
                "kind": info.kind, "deployment": info.deployment.get("deployment_type")}),
            vectors=vectors,
            # Counts are eventually consistent (Pinecone says so): checked here, reported or refused (strict).
            namespaces=dict.fromkeys(names),
            sparse_values=self.sparse_field is not None,
            document=self.document_field is not None,
            extra=extra,
        )

    def slices(self, namespace: str) -> list[Slice]:
        if self.prefixes is None:
            return [Slice(namespace)]
        return [Slice(namespace, prefix) for prefix in self.prefixes]

    # --- reading -----------------------------------------------------------------------------------

    def batches(self, part: Slice, *, batch_size: int, resume: str | None = None) -> Iterator[Chunk]:
        state = json.loads(resume) if resume else {"token": None, "rows": 0, "done": False}
        rows = int(state["rows"])
        window: deque[tuple[Future[pa.RecordBatch | None], Any]] = deque()
        pending: list[pa.RecordBatch] = []
        pending_rows = 0
        token = state["token"]
        pages = iter(()) if state["done"] else self._pages(part, token)
        done = bool(state["done"])
        # Pages in flight: a whole batch's worth beyond the fetch threads, so they keep fetching while
        # the caller writes the previous batch (bounded: at most about two batches of rows held).
        depth = 2 * self.target.concurrency + max(1, batch_size // LIST_PAGE)
        while True:
            page = next(pages, None)
            if page is not None:
                window.append((self.pool.submit(self._fetch, part.namespace, page[0]), page[1]))
            if window and (page is None or len(window) >= depth):
                future, token = window.popleft()
                batch = future.result()
                if batch is not None and batch.num_rows:
                    pending.append(batch)
                    pending_rows += batch.num_rows
                if token is None:
                    done = True
            if pending_rows and (pending_rows >= batch_size or (page is None and not window)):
                rows += pending_rows
                merged = pa.Table.from_batches(pending).combine_chunks().to_batches()[0]
                pending, pending_rows = [], 0
                yield Chunk(merged, json.dumps({"token": token, "rows": rows, "done": done}))
            if page is None and not window:
                break
        self._slice_finished(part.namespace, rows, resumed=resume is not None)

    def _pages(self, part: Slice, token: Any) -> Iterator[Page]:
        if self.ids is not None:
            start = int(token or 0)
            for offset in range(start, len(self.ids), LIST_PAGE):
                end = min(offset + LIST_PAGE, len(self.ids))
                yield self.ids[offset:end], (end if end < len(self.ids) else None)
            return
        if self.info.kind == "document":
            yield from self._document_pages(part, token)
            return
        while True:
            page = self.target.call("cannot list the ids", self.index.list_paginated, namespace=part.namespace,
                                    prefix=part.key, limit=LIST_PAGE, pagination_token=token)  # fmt: skip
            token = page.pagination.next if page.pagination is not None else None
            ids = [item.id for item in page.vectors if item.id is not None]
            yield ids, token
            if token is None:
                return

    def _document_pages(self, part: Slice, token: Any) -> Iterator[Page]:
        docs = self.index.documents
        namespace = document_namespace(part.namespace)

        def one_page(token: Any) -> Any:
            return next(iter(docs.list(namespace=namespace, prefix=part.key, limit=LIST_PAGE,
                                       pagination_token=token).pages()), None)  # fmt: skip

        while True:
            page = self.target.call("cannot list the documents", one_page, token)
            if page is None:
                yield [], None
                return
            token = page.pagination_token
            yield [item.id for item in page.items], token
            if token is None:
                return

    def _fetch(self, namespace: str, ids: list[str]) -> pa.RecordBatch | None:
        """One page of records (several requests when the ids would not fit one URL), in list order."""
        if not ids:
            return None
        if self.info.kind == "document":
            found = self.target.call("cannot fetch documents", self.index.documents.fetch,
                                     namespace=document_namespace(namespace), ids=ids).documents
            records = {key: doc.to_dict() for key, doc in found.items()}
            return self._from_documents([records[i] for i in ids if i in records])
        found = {}
        for group in _url_groups(ids):
            response = self.target.call("cannot fetch vectors", self.index.fetch, ids=group, namespace=namespace)
            found.update(response.vectors)
        return self._from_vectors([found[i] for i in ids if i in found])

    def _from_vectors(self, records: list[Any]) -> pa.RecordBatch:
        # The SDK decodes every record into its own Vector object with Python lists; what follows
        # flattens those lists once per batch into NumPy (no per-row Arrow building).
        ids = [r.id for r in records]
        arrays: dict[str, pa.Array] = {ID: pa.array(ids, pa.string())}
        if self.dense:
            arrays[VALUES] = _dense([r.values for r in records], self.info.dimension or 0, ids, "values")
        if self.sparse_field is not None:
            arrays[SPARSE_VALUES] = _sparse([r.sparse_values for r in records], lambda s: (s.indices, s.values))
        metadata = [r.metadata for r in records]
        documents = _pop_all(metadata, self.document_field) if self.document_field else None
        arrays[METADATA] = _metadata_json(metadata, ids)
        if documents is not None:
            arrays[DOCUMENT] = pa.array(documents, pa.string())
        return pa.RecordBatch.from_pydict(arrays)

    def _from_documents(self, records: list[dict[str, Any]]) -> pa.RecordBatch:
        # Documents come as Python dicts (the SDK's Document objects); columns are gathered once per batch.
        ids = [str(r["_id"]) for r in records]
        arrays: dict[str, pa.Array] = {ID: pa.array(ids, pa.string())}
        taken = {"_id", "_score", *self.dense.values()}
        for spec in self.specs:
            field = self.dense[spec.column]
            arrays[spec.column] = _dense([r.get(field) for r in records], spec.dimension, ids, field)
        if self.sparse_field is not None:
            taken.add(self.sparse_field)
            arrays[SPARSE_VALUES] = _sparse([r.get(self.sparse_field) for r in records],
                                            lambda s: (s["indices"], s["values"]))
        if self.document_field is not None:
            taken.add(self.document_field)
            arrays[DOCUMENT] = pa.array([r.get(self.document_field) for r in records], pa.string())
        rest = [{k: v for k, v in r.items() if k not in taken} or None for r in records]
        arrays[METADATA] = _metadata_json(rest, ids)
        order = [c for c in (ID, *self.dense, SPARSE_VALUES, METADATA, DOCUMENT) if c in arrays]
        return pa.RecordBatch.from_pydict({c: arrays[c] for c in order})

    def _slice_finished(self, namespace: str, rows: int, *, resumed: bool) -> None:
        """Once every slice of a namespace ran here, compare its rows with describe_index_stats."""
        self.exported[namespace] = self.exported.get(namespace, 0) + rows
        self.slices_done[namespace] = self.slices_done.get(namespace, 0) + 1
        if self.slices_done[namespace] < len(self.slices(namespace)) or self.ids is not None:
            return  # an ids_file export reads what the file names, not what the index holds
        if resumed and self.prefixes is not None:
            return  # slices finished before the interruption are not counted here
        expected, got = self.counts.get(namespace, 0), self.exported[namespace]
        if expected == got:
            return
        message = (f"pinecone {self.target.label}, namespace {namespace!r}: exported {got:,} records, "
                   f"describe_index_stats reported {expected:,} (Pinecone's counts are eventually consistent, "
                   "and records written during the export may or may not be in it)")
        if self.strict:
            raise InvalidDataError(f"{message}; strict=true refuses the dump")
        log.warning("%s; re-run the export, or pass strict=true to refuse such a dump", message)

    def search(self, vector: np.ndarray, k: int, *, namespace: str = "") -> list[tuple[str, float]]:
        field = self.dense.get(VALUES)
        return nearest(self.target, self.index, self.info, field, vector, k, namespace)

    def close(self) -> None:
        self.pool.shutdown(wait=True, cancel_futures=True)


def _url_groups(ids: list[str]) -> Iterator[list[str]]:
    """Ids in groups whose query string stays within a URL's reasonable length."""
    group: list[str] = []
    size = 0
    for item in ids:
        cost = len(item) * 3 + 5  # percent-encoded worst case plus "&ids="
        if group and size + cost > FETCH_URL_BUDGET:
            yield group
            group, size = [], 0
        group.append(item)
        size += cost
    if group:
        yield group


def _dense(rows: list[Any], dim: int, ids: list[str], name: str) -> pa.Array:
    lengths = np.fromiter((len(r) if r is not None else 0 for r in rows), dtype=np.int64, count=len(rows))
    bad = np.flatnonzero(lengths != dim)
    if len(bad):
        row = int(bad[0])
        raise InvalidDataError(f"pinecone: record {ids[row]!r} has {lengths[row]} values in {name!r}, "
                               f"the index has {dim} dimensions")
    flat = np.fromiter(itertools.chain.from_iterable(rows), dtype=np.float32, count=len(rows) * dim)
    return vectors_array(flat.reshape(len(rows), dim))


def _sparse(rows: list[Any], parts: Any) -> pa.Array:
    valid = np.array([r is not None for r in rows], dtype=bool)
    pairs = [parts(r) if r is not None else ((), ()) for r in rows]
    lengths = np.fromiter((len(i) for i, _ in pairs), dtype=np.int32, count=len(pairs))
    offsets = pa.array(np.concatenate([[0], np.cumsum(lengths, dtype=np.int32)]), pa.int32())
    total = int(offsets[-1].as_py()) if len(rows) else 0
    indices = np.fromiter(itertools.chain.from_iterable(i for i, _ in pairs), dtype=np.uint32, count=total)
    values = np.fromiter(itertools.chain.from_iterable(v for _, v in pairs), dtype=np.float32, count=total)
    fields = list(SPARSE_TYPE)
    return pa.StructArray.from_arrays(
        [pa.ListArray.from_arrays(offsets, pa.array(indices, pa.uint32())),
         pa.ListArray.from_arrays(offsets, pa.array(values, pa.float32()))],
        fields=fields, mask=pa.array(~valid))  # fmt: skip


def _pop_all(metadata: list[dict[str, Any] | None], key: str) -> list[Any]:
    out = []
    for i, m in enumerate(metadata):
        if m is not None and key in m:
            m = dict(m)
            out.append(m.pop(key))
            metadata[i] = m or None
        else:
            out.append(None)
    return out


def _metadata_json(metadata: list[Any], ids: list[str]) -> pa.Array:
    # json.dumps per record: the SDK hands metadata over as decoded Python dicts.
    out: list[str | None] = []
    for m, record_id in zip(metadata, ids, strict=True):
        try:
            out.append(None if m is None else json.dumps(m, ensure_ascii=False, allow_nan=False))
        except ValueError:
            raise InvalidDataError(f"pinecone: metadata of record {record_id!r} holds NaN or Infinity") from None
    return pa.array(out, pa.string())


def _read_ids(uri: StoreURI) -> list[str]:
    path = uri.option("ids_file") or ""
    try:
        if path.endswith(".parquet"):
            import pyarrow.parquet as pq

            column = uri.option("ids_column") or ID
            table = pq.read_table(path, columns=[column])
            ids = [str(x) for x in table.column(column).to_pylist() if x is not None]
        else:
            with open(path, encoding="utf-8") as f:
                ids = [line.strip() for line in f if line.strip()]
    except (OSError, KeyError, pa.ArrowException) as exc:
        raise StoreError(f"pinecone: cannot read ids_file {path}: {exc}") from None
    return list(dict.fromkeys(ids))  # in the file's order, each id once
