"""Import: one collection per namespace, created with the dump's space (or checked against it), records
written with ``add`` in batches of at most the client's ``max_batch_size``, float32 NumPy matrices as they
come from the dump. ``replace`` loads staged collections and swaps them in at the end (``modify(name=)``).
Chroma has no transactions: the rows acknowledged in dump order are kept in a small local state file
(``AcknowledgedWrites``), and a resumed run writes its first records as replacements (same ids), so a
batch that was in flight is harmless."""

from __future__ import annotations

import hashlib
from typing import Any

import numpy as np
import pyarrow as pa

from vecfmt.errors import InvalidDataError, StoreError
from vecfmt.manifest import Manifest
from vecfmt.schema import DOCUMENT, ID, METADATA, VALUES, vectors_numpy
from vecfmt.stores.base import AcknowledgedWrites, IfExists, StoreURI
from vecfmt.stores.chroma.catalog import (
    DOCUMENT_KEY,
    MARKERS,
    NAMESPACE_KEY,
    NAMESPACE_OF,
    RETIRED,
    STAGED,
    check_collection_name,
    collection_for,
    metric_to_space,
    to_chroma,
)
from vecfmt.stores.chroma.connect import SCHEME, Target, log
from vecfmt.stores.chroma.search import dimension_of, identity, nearest, space_of

# How a batch is written: into a collection this run made (add), next to records that must not be
# overwritten (append: refused when an id is there), or replacing records with the same ids (upsert).
ADD, APPEND, UPSERT = "add", "append", "upsert"
HNSW_KEPT = ("ef_construction", "ef_search", "max_neighbors")  # recreated from the dump's extra.chroma


class ChromaImporter:
    def __init__(self, uri: StoreURI) -> None:
        self.target = t = Target(uri)
        self.writes = AcknowledgedWrites(SCHEME, t.concurrency)
        self.names: dict[str, str] = {}  # namespace -> the collection its rows end in
        self.handles: dict[str, Any] = {}  # namespace -> the collection written now (staged on replace)
        self.staged: dict[str, str] = {}  # namespace -> staged collection name (replace)
        self.created: dict[str, str] = {}  # collection name -> id, of each collection this run created
        self.wrote_existing = False  # a batch went into a collection that was there before this run
        self.nothing_left = False  # abort() dropped every collection this run wrote into
        self.finished = False
        self.mode = ADD
        self.batch = t.batch
        self.document = False

    def identity(self) -> tuple[str, ...]:
        return identity(self.target)

    # --- prepare -----------------------------------------------------------------------------------

    def prepare(self, manifest: Manifest, *, if_exists: IfExists, resume: bool = False) -> int:
        t = self.target
        if manifest.primary is None or manifest.sparse_values:
            raise StoreError(f"{t.label}: Chroma holds dense vectors only; the dump has sparse values")
        if len(manifest.vectors) > 1:
            others = [v.name for v in manifest.vectors if v.column != VALUES]
            raise StoreError(f"{t.label}: a Chroma record holds one vector; the dump also has {others}: export "
                             "without them or import into a store with named vectors")
        space = metric_to_space(manifest.primary.metric)
        dim = manifest.primary.dimension
        self.document = manifest.document
        self.names = {ns.name: collection_for(t.collection, ns.name) for ns in manifest.namespaces}
        self.batch = min(t.batch, t.max_batch())
        self.writes.track(self.identity(), manifest)
        done = self.writes.saved() if resume else None
        replace = if_exists == IfExists.REPLACE
        # Staged names are fixed by target and dump, so that a resumed replace finds its staged rows.
        key = hashlib.sha256(repr((self.identity(), manifest.identity())).encode()).hexdigest()[:8]
        staged = {ns: check_collection_name(f"{name}{STAGED}{key}") for ns, name in self.names.items()}
        if replace:
            self.staged = staged
            if done is not None and any(t.get(s) is None for s in staged.values()):
                done = None  # the staged collections are gone (swapped in, or dropped): start over
        elif done is not None and any(t.get(s) is not None for s in staged.values()):
            raise StoreError(f"{t.label}: the interrupted import of this dump was a replace (its rows are staged "
                             "beside the collection): resume it with --if-exists replace")
        resuming = done is not None
        existing: dict[str, Any] = {}
        for ns, name in ({} if replace else self.names).items():  # every check before anything is created
            found = t.get(name)
            if found is None:
                continue
            self._check(found, space, dim)
            if if_exists == IfExists.FAIL and not resuming and self._count(found):
                raise StoreError(f"{t.label}: collection {name!r} already holds records: choose if_exists append "
                                 "(refuses ids it holds), upsert (replaces them) or replace")
            existing[ns] = found
        try:
            for ns, name in self.names.items():
                if not replace:
                    self.handles[ns] = existing[ns] if ns in existing else self._create(name, ns, manifest, space)
                    continue
                staged_name = self.staged[ns]
                if not resuming and t.get(staged_name) is not None:
                    self._drop(staged_name)  # left by an earlier failed replace of this very dump: vecfmt's own
                found = t.get(staged_name)
                self.handles[ns] = self._create(staged_name, ns, manifest, space) if found is None else found
        except BaseException:
            self._drop_empty_created()  # a collection made before a later one failed: not left behind
            raise
        self.mode = {IfExists.APPEND: APPEND, IfExists.UPSERT: UPSERT}.get(if_exists, ADD)
        if resuming:
            assert done is not None
            log.info("chroma: resuming after %d rows", done)
            self.mode = UPSERT  # the batches in flight when the run stopped may be in already
            return done
        self.writes.acknowledged = 0
        self.writes.save()  # before the first batch: a run killed at once still resumes (from 0)
        return 0

    def _create(self, name: str, namespace: str, manifest: Manifest, space: str) -> Any:
        t = self.target
        saved = manifest.extra.get(SCHEME) if isinstance(manifest.extra.get(SCHEME), dict) else {}
        hnsw = ((saved.get("configuration") or {}).get("hnsw") or {}) if isinstance(saved, dict) else {}
        config = {"hnsw": {"space": space, **{k: hnsw[k] for k in HNSW_KEPT if isinstance(hnsw.get(k), int)}}}
        metadata = {k: v for k, v in (saved.get("metadata") or {}).items()
                    if not k.startswith("hnsw:") and k not in MARKERS}  # fmt: skip
        metadata[DOCUMENT_KEY] = manifest.document
        if namespace:
            metadata.update({NAMESPACE_OF: t.collection, NAMESPACE_KEY: namespace})
        log.info("chroma: creating collection %s (%s)", name, space)
        with t.errors(f"cannot create the collection {name!r}"):
            collection = t.client().create_collection(name, configuration=config, metadata=metadata,
                                                      embedding_function=None)  # fmt: skip
        self.created[name] = str(collection.id)
        return collection

    def _check(self, collection: Any, space: str, dim: int) -> None:
        """The dump must fit the collection as it is: refused before anything is written."""
        t = self.target
        held = space_of(collection)
        if held != space:
            raise StoreError(f"{t.label}: collection {collection.name!r} uses the space {held}, the dump's metric "
                             f"needs {space}; nothing was written")
        held_dim = dimension_of(t, collection)
        if held_dim is not None and held_dim != dim:
            raise StoreError(f"{t.label}: collection {collection.name!r} holds {held_dim}-dimensional vectors, the "
                             f"dump's have {dim}; nothing was written")

    def _count(self, collection: Any) -> int:
        with self.target.errors(f"cannot count the records of {collection.name!r}"):
            return int(collection.count())

    def _drop(self, name: str) -> None:
        with self.target.errors(f"cannot delete the collection {name!r}"):
            self.target.client().delete_collection(name)

    # --- writing -----------------------------------------------------------------------------------

    def write(self, namespace: str, batch: pa.RecordBatch, *, rows_done: int) -> None:
        collection = self.handles[namespace]
        if namespace not in self.staged and collection.name not in self.created:
            self.wrote_existing = True  # abort() then keeps what this run wrote (the target changed anyway)
        ids = batch.column(ID).to_pylist()
        if "" in ids:
            raise InvalidDataError(f"{self.target.label}: a record id is the empty string, which Chroma does not take")
        vectors = vectors_numpy(batch.column(VALUES))  # (n, dim) float32, a view of the dump's buffer
        # Chroma takes metadata only as one dict per record.
        metadatas = [to_chroma(m, i) for m, i in zip(batch.column(METADATA).to_pylist(), ids, strict=True)]
        documents = batch.column(DOCUMENT).to_pylist() if DOCUMENT in batch.schema.names else None
        if documents is not None and all(d is None for d in documents):
            documents = None
        starts = range(0, len(ids), self.batch)
        for n, start in enumerate(starts):
            end = start + self.batch
            self.writes.submit(rows_done if n == len(starts) - 1 else None, self._send, collection,
                               ids[start:end], vectors[start:end], metadatas[start:end],
                               None if documents is None else documents[start:end])  # fmt: skip
        self.writes.drain(2 * self.target.concurrency)

    def _send(self, collection: Any, ids: list[str], vectors: np.ndarray, metadatas: list[Any],
              documents: list[str | None] | None) -> None:  # fmt: skip
        t = self.target
        where = f"collection {collection.name!r}"
        if self.mode != ADD:
            with t.errors(f"cannot look up ids in {where}"):
                held = collection.get(ids=ids, include=[])["ids"]
            if held and self.mode == APPEND:
                raise StoreError(f"{t.label}: {where} already holds the id {held[0]!r} (and {len(held) - 1} more of "
                                 "this batch); append adds records only: choose upsert to replace them")
            if held:  # Chroma's upsert merges metadata keys: the old records go first, so the new ones are whole
                with t.errors(f"cannot replace records in {where}"):
                    collection.delete(ids=held)
        # Chroma's add ignores ids it already holds: only the lookup above makes upsert and append exact.
        with t.errors(f"cannot add records to {where}"):
            collection.add(ids=ids, embeddings=vectors, metadatas=_or_none(metadatas), documents=documents)

    def rows_committed(self) -> int | None:
        if self.nothing_left:
            return 0  # abort() dropped every collection this run wrote into: the target is as it was
        return self.writes.rows_committed()

    def finish(self) -> None:
        self.writes.finish()
        for ns, staged in self.staged.items():
            self._swap(staged, self.names[ns])
        self.staged = {}
        self.finished = True

    def _swap(self, staged: str, name: str) -> None:
        """The staged collection takes the name; the old one is renamed aside first, and dropped last."""
        t = self.target
        old = t.get(name)
        retired = f"{name}{RETIRED}{hashlib.sha256(staged.encode()).hexdigest()[:8]}"
        with t.errors(f"cannot swap {staged!r} in for {name!r}"):
            if old is not None:
                old.modify(name=retired)
            t.client().get_collection(staged, embedding_function=None).modify(name=name)
        if old is not None:
            log.info("chroma: replace: deleting the old collection %s", name)
            self._drop(retired)

    def abort(self) -> None:
        """A broken dump: nothing to resume. Once the writes have stopped, drop what a replace staged and the
        collections this run created (they hold only this run's records), so the target is as it was; but
        when records also went into a collection that was there before (append, upsert), the target has
        changed anyway and a new collection keeps its records too (the error counts them), unless empty."""
        self.writes.abort()  # running requests end (and count, in order) before their collection goes
        try:
            for staged in self.staged.values():  # vecfmt's own, also when a resumed run found them
                if self.target.get(staged) is not None:
                    self._drop(staged)
            self.staged = {}
            self._drop_created(only_empty=self.wrote_existing)
            self.nothing_left = not self.wrote_existing
        except StoreError as exc:  # the error that ended the import is the one line shown
            log.info("chroma: could not drop what this import created: %s", exc)

    def _drop_created(self, *, only_empty: bool) -> None:
        """Drop the collections this run created (the very ones: same name and id), or only the empty ones."""
        t = self.target
        for name, made in list(self.created.items()):
            found = t.get(name)
            if found is not None and str(found.id) == made and not (only_empty and self._count(found)):
                log.info("chroma: dropping the collection %s, which this import created", name)
                self._drop(name)
            del self.created[name]

    def _drop_empty_created(self) -> None:
        """After a failure: drop the collections this run created that are still empty."""
        try:
            self._drop_created(only_empty=True)
        except StoreError as exc:  # e.g. the server is gone: the error that ended the import is the one line shown
            log.info("chroma: could not drop the empty collections this import created: %s", exc)

    def close(self) -> None:
        try:
            self.writes.close()  # waits for the requests still running
            if not self.finished and not self.writes.acknowledged:  # failed before its first commit
                self._drop_empty_created()  # an empty collection is no progress to resume from
        finally:
            self.target.close()

    def search(self, vector: np.ndarray, k: int, *, namespace: str = "") -> list[tuple[str, float]]:
        collection = self.handles.get(namespace)
        if collection is None or namespace in self.staged:
            collection = self.target.get(collection_for(self.target.collection, namespace))
        return nearest(self.target, collection, vector, k)


def _or_none(metadatas: list[Any]) -> list[Any] | None:
    return None if all(m is None for m in metadatas) else metadatas
