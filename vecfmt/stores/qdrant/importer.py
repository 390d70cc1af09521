"""Import: the collection created from the dump (or checked against it), then ``upsert`` requests of ``batch``
points with ``concurrency`` in flight (local mode: one writer thread, which converts nothing: the next batch is
built while it writes). Writes are upserts by point id, and the id rule makes point ids deterministic, so a
resumed import rewrites at most the requests in flight; the rows acknowledged in dump order are kept in a
small local state file (``base.AcknowledgedWrites``), which is what ``resume`` reads.

``replace`` loads into a staged collection beside the old one and swaps an alias at ``finish()``."""

from __future__ import annotations

import hashlib
import json
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import numpy as np
import pyarrow as pa

from vecfmt.errors import InvalidDataError, StoreError
from vecfmt.manifest import Manifest
from vecfmt.schema import DOCUMENT, ID, METADATA, SPARSE_VALUES, parse_metadata_json, vectors_numpy
from vecfmt.stores.base import AcknowledgedWrites, IfExists, StoreURI
from vecfmt.stores.qdrant import catalog
from vecfmt.stores.qdrant.catalog import DEFAULT_DOCUMENT, DEFAULT_SPARSE, UNNAMED, metric_to_qdrant
from vecfmt.stores.qdrant.connect import SCHEME, Target, check_name, log
from vecfmt.stores.qdrant.ids import ID_KEY, NAMESPACE_KEY, point_id
from vecfmt.stores.qdrant.search import nearest

STAGED = "-vecfmt-replace-"  # a staged collection is NAME + STAGED + 12 hex digits (of the target and dump)


class QdrantImporter:
    def __init__(self, uri: StoreURI) -> None:
        self.target = t = Target(uri)
        self.document_option = uri.option("document")
        self.sparse_option = uri.option("sparse")
        self.writes = AcknowledgedWrites(SCHEME, t.concurrency)
        self.kept_points: dict[str, tuple[str, str]] = {}  # UUID ids used as they are -> (namespace, id)
        self.mapped_points: dict[str, tuple[str, str]] = {}  # UUIDs made from ids -> (namespace, id)
        self.into: str | None = None  # the collection written (a replace's staged one)
        self.staged = False
        self.created = False  # this run created self.into: abort() may drop it, nothing else
        self.dropped = False  # abort() dropped it: none of the dump's rows is in the target
        self.names: dict[str, str] = {}  # dump column -> Qdrant vector name ("" unnamed)
        self.sparse: str | None = None
        self.document: str | None = None
        self.namespaced = False

    def identity(self) -> tuple[str, ...]:
        return self.target.identity()

    # --- prepare -------------------------------------------------------------------------------------

    def prepare(self, manifest: Manifest, *, if_exists: IfExists, resume: bool = False) -> int:
        t = self.target
        for spec in manifest.vectors:
            metric_to_qdrant(spec.metric)
        saved = manifest.extra.get(SCHEME) if isinstance(manifest.extra.get(SCHEME), dict) else {}
        self.sparse = (self.sparse_option or saved.get("sparse") or DEFAULT_SPARSE) if manifest.sparse_values else None
        if self.sparse is not None:
            check_name(self.sparse, "sparse vector name")
        if manifest.document:
            self.document = self.document_option or saved.get("document") or DEFAULT_DOCUMENT
        self.namespaced = any(ns.name for ns in manifest.namespaces)
        # Progress is keyed on the URI's collection name, not on what it resolves to: a replace moves the alias.
        self.writes.track((SCHEME, t.where, t.collection), manifest)
        done = self.writes.saved() if resume else None
        real, _ = t.resolve()
        staged_name = check_name(f"{t.collection}{STAGED}{self._key(manifest)}", "staged collection")
        staged_real, _ = t.resolve(staged_name)
        existing: str | None
        if done is not None and staged_real is not None:  # an interrupted replace (whatever if_exists says now)
            self.staged, self.into, existing = True, staged_name, staged_real
        elif done is not None and real is not None:  # an interrupted import into the collection itself
            self.into, existing = real, real
        elif if_exists == IfExists.REPLACE and real is not None:  # beside the old data, swapped in at finish()
            done = None
            if staged_real is not None:  # left by an earlier replace of this dump that failed: vecfmt's own
                log.info("qdrant: dropping the staged collection %s of an earlier replace", staged_name)
                self._drop(staged_name)
            self.staged, self.into, existing = True, staged_name, None
        else:
            done = None
            if real is not None:
                self._refuse(real, if_exists)
            self.into, existing = real or t.collection, real
        if existing is None:
            self.names = catalog.dense_names(manifest)
            log.info("qdrant: creating collection %s", self.into)
            catalog.create(t, self.into, manifest, self.names, self.sparse, self.document)
            self.created = True  # after the request: a create refused (the name taken meanwhile) drops nothing
            if self.namespaced and not t.local:  # local mode has no payload indexes
                catalog.index_namespaces(t, self.into)
        else:
            self._check(catalog.read(t, existing), manifest)
        if done is not None:
            log.info("qdrant: resuming after %d rows", done)
            return done
        self.writes.acknowledged = 0
        self.writes.save()  # before the first batch: a run killed at once still resumes (from 0)
        return 0

    def _key(self, manifest: Manifest) -> str:
        if not manifest.files:  # a copy: nothing to resume, so a name of its own
            return uuid.uuid4().hex[:12]
        text = json.dumps([SCHEME, self.target.where, self.target.collection, manifest.identity()])
        return hashlib.sha256(text.encode()).hexdigest()[:12]

    def _refuse(self, real: str, if_exists: IfExists) -> None:
        t = self.target
        if if_exists == IfExists.FAIL:
            with t.errors("cannot count the points"):
                held = int(t.client().count(real, exact=True).count)
            if held:
                raise StoreError(f"{t.label} already holds {held:,} points: choose if_exists upsert (append is the "
                                 "same on Qdrant: points are written by id) or replace")

    def _check(self, c: catalog.Collection, manifest: Manifest) -> None:
        """The dump must fit the collection as it is: refused before anything is written."""
        t = self.target
        held = {n or catalog.DEFAULT_VECTOR: n for n in c.dense}
        for spec in manifest.vectors:
            name = held.get(spec.name)
            if name is None and spec.column == "values" and list(c.dense) == [UNNAMED]:
                name = UNNAMED  # the dump's primary vector into a collection's single unnamed one
            if name is None:
                raise StoreError(f"{t.label} has no vector {spec.name!r} (it has {sorted(held)}); nothing was written")
            have = c.dense[name]
            if have["distance"] != metric_to_qdrant(spec.metric):
                raise StoreError(f"{t.label}: vector {spec.name!r} uses distance {have['distance']}, the dump "
                                 f"{spec.metric}; nothing was written")
            if have["size"] != spec.dimension:
                raise StoreError(f"{t.label}: vector {spec.name!r} holds {have['size']}-dimensional vectors, the "
                                 f"dump's have {spec.dimension}; nothing was written")
            self.names[spec.column] = name
        if self.sparse is not None and self.sparse not in c.sparse:
            if self.sparse_option is None and len(c.sparse) == 1:
                self.sparse = next(iter(c.sparse))
            else:
                raise StoreError(f"{t.label} has no sparse vector {self.sparse!r} (it has {sorted(c.sparse)}); "
                                 "nothing was written")
        if self.document is not None and self.document_option is None and c.marks.get("document"):
            self.document = c.marks["document"]
        if self.namespaced:
            catalog.mark_namespaced(t, c)
            if not t.local and NAMESPACE_KEY not in c.indexed:
                catalog.index_namespaces(t, c.name)

    def _drop(self, name: str) -> None:
        with self.target.errors(f"cannot delete the collection {name!r}"):
            self.target.client().delete_collection(name)

    # --- writing -------------------------------------------------------------------------------------

    def write(self, namespace: str, batch: pa.RecordBatch, *, rows_done: int) -> None:
        with self._undone_if_refused():
            self._write(namespace, batch, rows_done)

    def _write(self, namespace: str, batch: pa.RecordBatch, rows_done: int) -> None:
        t = self.target
        ids = batch.column(ID).to_pylist()
        payloads = self._payloads(batch, ids, namespace)  # every row checked before any of the batch is sent
        points = [point_id(i, namespace) for i in ids]
        self._check_collisions(points, ids, namespace)
        for (_, mapped), record, payload in zip(points, ids, payloads, strict=True):
            if mapped:
                payload[ID_KEY] = record
        # Points are built one request at a time, while the previous request is written: only the requests
        # in flight hold Python floats (a whole 10,000 x 768 batch of them would take ~250 MB).
        n = batch.num_rows
        for start in range(0, n, t.batch):
            end = min(n, start + t.batch)
            structs = self._points(batch.slice(start, end - start), points[start:end], payloads[start:end])
            self.writes.submit(rows_done if end == n else None, self._upsert, structs, ids[start], ids[end - 1],
                               namespace)  # fmt: skip
            self.writes.drain(2 * t.concurrency - 1)

    def _check_collisions(self, points: list[tuple[int | str, bool]], ids: list[str], namespace: str) -> None:
        """A UUID id kept as it is could equal another row's mapped UUID (``uuid5`` of its id, or of its
        namespace and id): one point would silently replace the other. The point ids of this import are
        remembered (a set of strings, ~100 bytes a row) to refuse that before the batch is sent; rows an
        interrupted run wrote before a resume are not in it."""
        for (point, mapped), record in zip(points, ids, strict=True):  # per row: the client takes per-row ids
            if not isinstance(point, str):
                continue
            mine, theirs = (self.mapped_points, self.kept_points) if mapped else (self.kept_points, self.mapped_points)
            other = theirs.get(point)
            if other is not None:
                raise InvalidDataError(
                    f"ids {record!r} (namespace {namespace!r}) and {other[1]!r} (namespace {other[0]!r}) are the "
                    f"same Qdrant point {point} under vecfmt's id rule (docs/qdrant.md); rename one of them")
            mine[point] = (namespace, record)

    def _points(self, part: pa.RecordBatch, points: list[tuple[int | str, bool]],
                payloads: list[dict[str, Any]]) -> list[Any]:  # fmt: skip
        from qdrant_client import models

        # Each dense column once through NumPy's tolist (one C call per request); the client takes per-point
        # Python lists (and, locally, builds one PointStruct per point whatever it is given).
        dense: dict[str, list[Any]] = {}
        for column, name in self.names.items():
            array = part.column(column)
            rows: list[Any] = vectors_numpy(array).tolist()
            if array.null_count:
                valid = array.is_valid().to_numpy(zero_copy_only=False)
                rows = [r if ok else None for r, ok in zip(rows, valid, strict=True)]
            dense[name] = rows
        sparse = _sparse_rows(part.column(SPARSE_VALUES), models) if self.sparse is not None else None
        vectors: list[Any]
        if list(dense) == [UNNAMED] and sparse is None and None not in dense[UNNAMED]:
            vectors = dense[UNNAMED]  # a plain dump: each point's vector is its list, as the client takes it
        else:  # one dict per point: no columnar form takes null vectors
            vectors = []
            for i in range(part.num_rows):
                vector: dict[str, Any] = {name: rows[i] for name, rows in dense.items() if rows[i] is not None}
                if sparse is not None and sparse[i] is not None:
                    vector[self.sparse] = sparse[i]  # type: ignore[index]
                vectors.append(vector[UNNAMED] if list(vector) == [UNNAMED] else vector)
        # model_construct: the values are checked already (format checks, then here); validating each float
        # again in pydantic would cost more than the conversion. One PointStruct per point: the client's form.
        construct = models.PointStruct.model_construct
        return [construct(id=point, vector=vector, payload=payload)
                for (point, _), vector, payload in zip(points, vectors, payloads, strict=True)]  # fmt: skip

    def _payloads(self, batch: pa.RecordBatch, ids: list[str], namespace: str) -> list[dict[str, Any]]:
        """Each row's metadata as a dict (json.loads per row: the client wants per-point payloads), with the
        document and namespace under their keys; vecfmt's own keys in metadata are refused."""
        reserved = catalog.reserved_keys(self.document)
        out = [parse_metadata_json(text) if text else {} for text in batch.column(METADATA).to_pylist()]
        bad = next((i for i, value in enumerate(out) if not isinstance(value, dict) or not reserved.isdisjoint(value)),
                   None)  # fmt: skip
        if bad is not None:
            if not isinstance(out[bad], dict):
                raise InvalidDataError(f"qdrant: point {ids[bad]!r}: metadata is not a JSON object")
            clash = sorted(reserved.intersection(out[bad]))[0]
            raise InvalidDataError(f"qdrant: point {ids[bad]!r}: metadata key {clash!r} is where vecfmt keeps the "
                                   "id, namespace or document (document= names another document key)")
        if self.document and DOCUMENT in batch.schema.names:
            for value, document in zip(out, batch.column(DOCUMENT).to_pylist(), strict=True):
                if document is not None:
                    value[self.document] = document
        if namespace:
            for value in out:
                value[NAMESPACE_KEY] = namespace
        return out

    def _upsert(self, points: list[Any], first: str, last: str, namespace: str) -> None:
        t = self.target
        where = f" (namespace {namespace!r}, ids {first!r}..{last!r})" if namespace else f" (ids {first!r}..{last!r})"
        with t.errors(f"upsert failed{where}"):
            t.client().upsert(self.into, points=points, wait=True)

    def rows_committed(self) -> int | None:
        if self.dropped:
            return 0  # what this run created is gone (a replace's staged collection): the target is as it was
        return self.writes.rows_committed()

    def finish(self) -> None:
        with self._undone_if_refused():
            self.writes.drain(0)
        if self.staged:
            self._swap()
        self.writes.finish()

    def _swap(self) -> None:
        """Point the URI's name at the staged collection: an alias switched in one request when the name is an
        alias already; a plain collection is deleted first and the name becomes an alias (the only moment the
        name resolves to nothing). The old collection goes once no alias points at it."""
        from qdrant_client import models

        t = self.target
        assert self.into is not None
        real, is_alias = t.resolve()
        ops: list[Any] = []
        if is_alias:
            ops.append(models.DeleteAliasOperation(delete_alias=models.DeleteAlias(alias_name=t.collection)))
        elif real is not None:
            log.info("qdrant: replace: deleting collection %s, which becomes an alias", real)
            self._drop(real)
        ops.append(models.CreateAliasOperation(create_alias=models.CreateAlias(collection_name=self.into,
                                                                               alias_name=t.collection)))
        with t.errors(f"cannot point the alias {t.collection!r} at {self.into!r} (the new data is there)"):
            t.client().update_collection_aliases(change_aliases_operations=ops)
        if is_alias and real is not None and real != self.into:
            others = [a for a, c in t.aliases().items() if c == real]
            if others:
                log.info("qdrant: replace: keeping %s, which aliases %s still name", real, others)
            else:
                self._drop(real)

    def abort(self) -> None:
        """A broken dump (or a failed copy): nothing to resume. Drop the collection this run created, which
        holds only this run's points (kept if it holds more points than this run wrote: another writer's), and
        a replace's staged collection (vecfmt's own, also when a resumed run found it); a collection that existed
        before (append, upsert, a resumed import's) keeps its points, and what this run wrote there stays."""
        self.writes.abort()  # running requests end (and count, in order) before their collection goes
        if (self.created or self.staged) and self.into is not None and not self.dropped:
            held = int(self.target.client().count(self.into, exact=True).count)
            if held > self.writes.acknowledged:  # another writer found the new collection: its points stay
                log.warning("qdrant: keeping the collection %s this import created: it holds %d points, more "
                            "than the %d this import wrote", self.into, held, self.writes.acknowledged)
                return
            log.info("qdrant: dropping the collection %s, which this import created", self.into)
            self._drop(self.into)
            self.dropped = True

    @contextmanager
    def _undone_if_refused(self) -> Iterator[None]:
        """A failure before any row is acknowledged (Qdrant refusing a point of the first requests, a server
        gone) drops the collection this run created, so that a refused import leaves nothing behind (the core
        calls ``abort`` only for a broken dump); once rows are acknowledged they are kept for ``--resume``.
        The original error is raised either way."""
        try:
            yield
        except Exception:
            if (self.created or self.staged) and not self.dropped and self.writes.acknowledged == 0:
                try:
                    self.abort()
                except Exception as exc:  # the store may be gone: the original error is the one to tell
                    log.warning("qdrant: cannot drop %s after the failure: %s", self.into, exc)
            raise

    def close(self) -> None:
        self.writes.close()
        self.target.close()

    def search(self, vector: np.ndarray, k: int, *, namespace: str = "") -> list[tuple[str, float]]:
        assert self.into is not None, "search after prepare"
        using = self.names.get("values", UNNAMED)
        return nearest(self.target, self.into, using, vector, k, namespace, self.namespaced)


def _sparse_rows(column: pa.Array, models: Any) -> list[Any]:
    """The dump's sparse struct as the client's SparseVector objects (one per row: the client takes no
    columnar form); indices and values leave Arrow once per batch."""
    column = column.combine_chunks() if isinstance(column, pa.ChunkedArray) else column
    valid = column.is_valid().to_numpy(zero_copy_only=False)
    indices, values = column.flatten()  # the struct's slice offset applied
    offsets = indices.offsets.to_numpy()
    flat_i = indices.flatten().to_numpy(zero_copy_only=False).tolist()
    flat_v = values.flatten().to_numpy(zero_copy_only=False).tolist()
    base = int(offsets[0])
    out: list[Any] = []
    for row in range(len(column)):
        if not valid[row]:
            out.append(None)
            continue
        a, b = int(offsets[row]) - base, int(offsets[row + 1]) - base
        out.append(models.SparseVector.model_construct(indices=flat_i[a:b], values=flat_v[a:b]))
    return out
