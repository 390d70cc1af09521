"""Import: every record checked before anything of its batch is sent, then upserts split by Pinecone's
limits with several requests in flight. Upserts are idempotent (by id), so a resumed import rewrites at
most the requests that were in flight; the rows acknowledged in dump order are kept in a small local
state file, which is what ``resume`` reads."""

from __future__ import annotations

import json
from typing import Any

import numpy as np
import pyarrow as pa

from vecfmt.errors import InvalidDataError, StoreError
from vecfmt.manifest import Manifest
from vecfmt.schema import DOCUMENT, ID, METADATA, SPARSE_VALUES, VALUES, vectors_numpy
from vecfmt.stores.base import AcknowledgedWrites, IfExists, StoreURI
from vecfmt.stores.pinecone import bulk
from vecfmt.stores.pinecone.catalog import (
    DENSE_FIELD,
    MAX_DIMENSION,
    SPARSE_FIELD,
    IndexInfo,
    check_records,
    describe_index,
    document_namespace,
    metric_to_pinecone,
    request_slices,
    vecfmt_namespace,
)
from vecfmt.stores.pinecone.connect import SCHEME, Target, flag, log
from vecfmt.stores.pinecone.search import identity, nearest


class PineconeImporter:
    def __init__(self, uri: StoreURI) -> None:
        self.target = t = Target(uri)
        self.create = flag(uri, "create")
        self.cloud = uri.option("cloud") or "aws"
        self.region = uri.option("region") or "us-east-1"
        self.kind = uri.option("kind") or None
        if self.kind not in (None, "vector", "document"):
            raise StoreError(f"pinecone: kind must be vector or document, not {self.kind!r}")
        self.bulk = flag(uri, "bulk")
        self.error_mode = uri.option("error_mode") or "abort"
        if self.error_mode not in ("abort", "continue"):
            raise StoreError(f"pinecone: error_mode must be abort or continue, not {self.error_mode!r}")
        self.document_key = uri.option("document_key") or None
        self.document_option = uri.option("document") or None
        if not self.create and any(uri.option(k) for k in ("cloud", "region", "kind")):
            raise StoreError("pinecone: cloud=, region= and kind= apply only with create=true")
        if not self.bulk and uri.option("error_mode"):
            raise StoreError("pinecone: error_mode= applies only to the bulk route (bulk=true)")
        self.info: IndexInfo | None = describe_index(t, required=False)
        self.source_dump: str | None = None  # set by vecfmt's import: the bulk route reads the dump itself
        self.index: Any = None
        self.writes = AcknowledgedWrites(SCHEME, t.concurrency, uri.option("state_dir"))
        self.fields: dict[str, str] = {}  # dump column -> document field

    def identity(self) -> tuple[str, ...]:
        if self.info is not None:
            return identity(self.info)
        return (SCHEME, self.target.host or "", self.target.name)

    # --- prepare -----------------------------------------------------------------------------------

    def prepare(self, manifest: Manifest, *, if_exists: IfExists, resume: bool = False) -> int:
        t = self.target
        for spec in manifest.vectors:
            if spec.dimension > MAX_DIMENSION:
                raise InvalidDataError(f"pinecone: vector {spec.name!r} has {spec.dimension:,} dimensions; Pinecone "
                                       f"takes at most {MAX_DIMENSION:,}")
            metric_to_pinecone(spec.metric)
        created = False
        if self.info is None:
            if not self.create:
                raise StoreError(f"pinecone {t.label} does not exist: pass create=true (with cloud= and region=) "
                                 "to create a serverless index from the dump")
            self._create(manifest)
            created = True
        elif self.create and self.kind and self.kind != self.info.kind:
            raise StoreError(f"pinecone {t.label} exists and is a {self.info.kind} index, not kind={self.kind}")
        info = self.info
        assert info is not None
        self._check(manifest, info)
        self.index = t.data_plane(info.host)
        if self.bulk:
            return bulk.run(self, manifest, if_exists)
        self.writes.track(self.identity(), manifest)  # a dump's import (a copy has no files and cannot resume)
        if resume and (done := self.writes.saved()) is not None:
            log.info("pinecone: resuming after %d rows", done)
            return done
        if not created:
            self._clear_or_refuse(manifest, if_exists)
        self.writes.save()  # before the first upsert: a run killed at once still resumes (from 0)
        return 0

    def _create(self, manifest: Manifest) -> None:
        t = self.target
        if not t.name:
            raise StoreError("pinecone: create=true needs the index name (pinecone://INDEX_NAME?create=true)")
        saved = manifest.extra.get(SCHEME, {}) if isinstance(manifest.extra.get(SCHEME), dict) else {}
        kind = self.kind or ("document" if saved.get("kind") == "document" else "vector")
        if kind == "vector":
            fields: dict[str, Any] = {}
            if manifest.primary is not None:
                fields[DENSE_FIELD] = {"type": "dense_vector", "dimension": manifest.primary.dimension,
                                       "metric": metric_to_pinecone(manifest.primary.metric)}
            if manifest.sparse_values:
                fields[SPARSE_FIELD] = {"type": "sparse_vector"}
            schema = {"fields": fields}
        else:
            schema = saved.get("schema") if saved.get("kind") == "document" else None
            schema = schema or self._document_schema(manifest)
        deployment = {"deployment_type": "managed", "cloud": self.cloud, "region": self.region}
        log.info("pinecone: creating %s index %r in %s/%s", kind, t.name, self.cloud, self.region)
        t.call("cannot create the index", t.client().indexes.create, name=t.name, schema=schema,
               deployment=deployment)  # fmt: skip
        self.info = describe_index(t)

    def _document_schema(self, manifest: Manifest) -> dict[str, Any]:
        fields: dict[str, Any] = {}
        for spec in manifest.vectors:
            fields[spec.column] = {"type": "dense_vector", "dimension": spec.dimension,
                                   "metric": metric_to_pinecone(spec.metric)}
        if manifest.sparse_values:
            fields[SPARSE_VALUES] = {"type": "sparse_vector"}
        if manifest.document:
            fields[self.document_option or DOCUMENT] = {"type": "string", "full_text_search": {}}
        return {"fields": fields}

    def _check(self, manifest: Manifest, info: IndexInfo) -> None:
        """The dump must fit the index as it is: refused before anything is written."""
        t = self.target
        if info.kind == "vector":
            if self.document_option:
                raise StoreError("pinecone: document= is for document indexes; on a vector index use document_key=")
            named = [v.name for v in manifest.vectors[1:]]
            if named:
                raise StoreError(f"pinecone {t.label} is a vector index with one dense vector; the dump also has "
                                 f"named vectors {named}: import into a document index (create=true&kind=document)")
            if manifest.document and not self.document_key:
                raise StoreError(f"pinecone {t.label} is a vector index, which has no place for the dump's document "
                                 "column: pass document_key=KEY to keep each text in the metadata under KEY")
            primary = manifest.primary
            if primary is None and info.dimension:
                raise StoreError(f"pinecone {t.label} is a dense index; the dump has sparse vectors only")
            if primary is not None:
                if not info.dimension:
                    raise StoreError(f"pinecone {t.label} is a sparse-only index; the dump has dense vectors")
                if info.dimension != primary.dimension:
                    raise StoreError(f"pinecone {t.label} has dimension {info.dimension}, the dump "
                                     f"{primary.dimension}; nothing was written")
                if info.metric != primary.metric:
                    raise StoreError(f"pinecone {t.label} uses metric {metric_to_pinecone(info.metric)}, the dump "
                                     f"{primary.metric}; nothing was written")
            if manifest.sparse_values and not info.sparse:
                raise StoreError(f"pinecone {t.label} takes no sparse values; the dump has them")
            return
        if self.document_key:
            raise StoreError("pinecone: document_key= is for vector indexes; a document index keeps text in a field "
                             "(document=FIELD)")
        schema_fields = info.schema.get("fields", {})
        saved = manifest.extra.get(SCHEME, {}) if isinstance(manifest.extra.get(SCHEME), dict) else {}
        recorded = saved.get("fields", {}) if saved.get("kind") == "document" else {}
        for spec in manifest.vectors:
            name = recorded.get(spec.column) or spec.column
            field = schema_fields.get(name, {})
            if field.get("type") != "dense_vector" or int(field.get("dimension", -1)) != spec.dimension:
                raise StoreError(f"pinecone {t.label}: the dump's vector {spec.name!r} ({spec.dimension} dims) "
                                 f"needs a dense_vector field {name!r} of that dimension; the index has "
                                 f"{sorted(schema_fields)}")
            self.fields[spec.column] = name
        if manifest.sparse_values:
            sparse = recorded.get(SPARSE_VALUES) or next(iter(info.sparse_fields), None)
            if sparse is None or schema_fields.get(sparse, {}).get("type") != "sparse_vector":
                raise StoreError(f"pinecone {t.label}: the dump has sparse values, the index no sparse_vector field")
            self.fields[SPARSE_VALUES] = sparse
        if manifest.document:
            self.fields[DOCUMENT] = self.document_option or recorded.get(DOCUMENT) or DOCUMENT

    def _clear_or_refuse(self, manifest: Manifest, if_exists: IfExists) -> None:
        t = self.target
        stats = t.call("cannot read the index stats", self.index.describe_index_stats)
        held = {vecfmt_namespace(n): s.vector_count for n, s in stats.namespaces.items() if s.vector_count}
        ours = [ns.name for ns in manifest.namespaces if ns.name in held]
        if not ours:
            return
        if if_exists == IfExists.FAIL:
            raise StoreError(f"pinecone {t.label} already holds records in namespace(s) {ours}: choose if_exists "
                             "upsert (append is the same on Pinecone: records are written by id) or replace")
        if if_exists == IfExists.REPLACE:  # only the dump's namespaces, nothing else of the index
            # Pinecone cannot load beside a namespace and swap it in: a replace deletes first, so a failed
            # import would leave the namespace without its old records. Only when the user says so.
            if not flag(t.uri, "replace_deletes_first"):
                raise StoreError(f"pinecone {t.label}: replace would delete the records of namespace(s) {ours} "
                                 "before loading (Pinecone cannot load beside them and swap), so a failed import "
                                 "loses them: export them first, then pass replace_deletes_first=true; or use "
                                 "if_exists upsert")
            for namespace in ours:
                log.info("pinecone: replace: deleting the records of namespace %r", namespace)
                if self.info is not None and self.info.kind == "document":
                    t.call("cannot clear the namespace", self.index.documents.delete,
                           namespace=document_namespace(namespace), delete_all=True)  # fmt: skip
                else:
                    t.call("cannot clear the namespace", self.index.delete, delete_all=True, namespace=namespace)

    # --- writing -----------------------------------------------------------------------------------

    def write(self, namespace: str, batch: pa.RecordBatch, *, rows_done: int) -> None:
        assert self.info is not None
        dense = [c for c in batch.schema.names if c == VALUES or c.startswith(VALUES + "_")]
        sizes = check_records(batch, namespace, dense)
        vector = self.info.kind == "vector"
        # Every record of the batch is checked (limits, metadata) before any of it is sent. A vector
        # index's records are then built per request in the pool's threads: the Python floats the SDK
        # takes come into being while other requests are in flight, not for the whole batch at once
        # while the server waits (and only a request's worth of them is alive per thread).
        metadata = _metadata_objects(batch, batch.column(ID).to_pylist(), flat=True) if vector else None
        records = None if vector else self._document_records(batch)
        requests = request_slices(sizes)
        for i, (start, length) in enumerate(requests):
            last = rows_done if i == len(requests) - 1 else None
            if metadata is not None:
                self.writes.submit(last, self._upsert_vectors, namespace, batch.slice(start, length),
                                   metadata[start:start + length])  # fmt: skip
            else:
                assert records is not None
                self.writes.submit(last, self.target.call, "upsert failed", self.index.documents.upsert,
                                   documents=records[start:start + length],
                                   namespace=document_namespace(namespace))  # fmt: skip
        # The requests of this batch stay queued while the next one is read and checked.
        self.writes.drain(len(requests) + 2 * self.target.concurrency)

    def _upsert_vectors(self, namespace: str, batch: pa.RecordBatch, metadata: list[dict[str, Any] | None]) -> Any:
        records = self._vector_records(batch, metadata)
        return self.target.call("upsert failed", self.index.upsert, vectors=records, namespace=namespace)

    def _vector_records(self, batch: pa.RecordBatch, metadata: list[dict[str, Any] | None]) -> list[dict[str, Any]]:
        # The SDK takes one dict (or Vector) per record and encodes the request body itself: the per-record
        # objects are its interface. Vectors leave NumPy as nested lists in one C call per request.
        ids = batch.column(ID).to_pylist()
        names = batch.schema.names
        values = vectors_numpy(batch.column(VALUES)).tolist() if VALUES in names else None
        sparse = batch.column(SPARSE_VALUES).to_pylist() if SPARSE_VALUES in names else None
        documents = batch.column(DOCUMENT).to_pylist() if DOCUMENT in names else None
        records = []
        for i, record_id in enumerate(ids):
            record: dict[str, Any] = {"id": record_id}
            if values is not None:
                record["values"] = values[i]
            if sparse is not None and sparse[i] is not None:
                record["sparse_values"] = sparse[i]
            meta = metadata[i]
            if documents is not None and documents[i] is not None:
                assert self.document_key is not None
                meta = {**(meta or {}), self.document_key: documents[i]}
            if meta is not None:
                record["metadata"] = meta
            records.append(record)
        return records

    def _document_records(self, batch: pa.RecordBatch) -> list[dict[str, Any]]:
        ids = batch.column(ID).to_pylist()
        metadata = _metadata_objects(batch, ids)
        columns = {self.fields[c]: (vectors_numpy(batch.column(c)).tolist() if c.startswith(VALUES)
                                    else batch.column(c).to_pylist())
                   for c in batch.schema.names if c in self.fields}  # fmt: skip
        valid = {self.fields[c]: batch.column(c).is_valid().to_numpy(zero_copy_only=False)
                 for c in batch.schema.names if c in self.fields}  # fmt: skip
        records = []
        for i, record_id in enumerate(ids):
            record: dict[str, Any] = {"_id": record_id}
            for field, column in columns.items():
                if valid[field][i]:
                    record[field] = column[i]
            for key, value in (metadata[i] or {}).items():
                if key in record or key.startswith("_"):
                    raise InvalidDataError(f"pinecone: record {record_id!r}: metadata key {key!r} collides with a "
                                           "field of the document index (or a reserved _ name)")
                record[key] = value
            records.append(record)
        return records

    def rows_committed(self) -> int | None:
        return self.writes.rows_committed()

    def finish(self) -> None:
        self.writes.finish()

    def abort(self) -> None:
        self.writes.abort()

    def close(self) -> None:
        self.writes.close()

    def search(self, vector: np.ndarray, k: int, *, namespace: str = "") -> list[tuple[str, float]]:
        assert self.info is not None
        if self.index is None:
            self.index = self.target.data_plane(self.info.host)
        field = self.fields.get(VALUES) or (VALUES if self.info.kind == "document" else None)
        return nearest(self.target, self.index, self.info, field, vector, k, namespace)


def _metadata_objects(batch: pa.RecordBatch, ids: list[str], *, flat: bool = False) -> list[dict[str, Any] | None]:
    # json.loads per record: the SDK wants each record's metadata as a dict. ``flat``: a vector index's
    # metadata values (Pinecone's rule, checked here so that one bad record is named before any is sent).
    out: list[dict[str, Any] | None] = []
    for text, record_id in zip(batch.column(METADATA).to_pylist(), ids, strict=True):
        if text is None or text == "":
            out.append(None)
            continue
        try:
            value = json.loads(text)
        except ValueError:
            value = None
        if not isinstance(value, dict):
            raise InvalidDataError(f"pinecone: record {record_id!r}: metadata is not a JSON object")
        if flat:
            for key, item in value.items():
                if not _metadata_value(item):
                    raise InvalidDataError(
                        f"pinecone: record {record_id!r}: metadata key {key!r} holds {json.dumps(item)[:60]}; "
                        "Pinecone takes strings, numbers, booleans and lists of strings (no objects, no null)")
        out.append(value)
    return out


def _metadata_value(item: Any) -> bool:
    if isinstance(item, (str, bool, int, float)):
        return True
    return isinstance(item, list) and all(isinstance(x, str) for x in item)
