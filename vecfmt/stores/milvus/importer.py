"""Import: the collection created from the dump (the source's fields when ``extra.milvus`` has them) or
checked against it, then ``insert`` (``upsert`` for ``if_exists upsert`` and for a resumed run) in batches,
``flush`` at the end. Milvus has no transactions: rows acknowledged in dump order are kept in a small local
state file (``AcknowledgedWrites``), and a resumed run upserts, so rows that were in flight when the last
run stopped are written again harmlessly (same primary keys). ``replace`` loads a staged collection beside
the target and swaps it in by renaming at ``finish()``. A refused import drops the collection it created as
long as none of its rows is acknowledged (``_undone_if_refused``), and on a broken dump (``abort``)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from vecfmt.errors import InvalidDataError, StoreError
from vecfmt.manifest import Manifest, VectorSpec
from vecfmt.schema import DOCUMENT, ID, METADATA, SPARSE_VALUES, vectors_numpy
from vecfmt.stores.base import AcknowledgedWrites, IfExists, StoreURI
from vecfmt.stores.milvus.catalog import (
    DOCUMENT_DESCRIPTION,
    DOCUMENT_MAX_LENGTH,
    METADATA_DESCRIPTION,
    STAGED_DESCRIPTION,
    Collection,
    Field,
    add_field,
    metric_from_milvus,
    metric_to_milvus,
    narrow,
    partition_of,
)
from vecfmt.stores.milvus.connect import SCHEME, Target, check_name, log, sdk
from vecfmt.stores.milvus.search import nearest
from vecfmt.writer import repeated_values

DEFAULT_ID_MAX_LENGTH = 512  # bytes of UTF-8, Milvus's VARCHAR measure
# Vectors per insert request when batch= is not given: few requests (each has a fixed cost), each far below
# the message sizes a Milvus server takes by default (hundreds of MiB; no server runs here to test against).
REQUEST_BYTES = 16 << 20
REQUEST_ROWS_MAX = 10_000
SPARSE_FIELD = "sparse_values"


class MilvusImporter:
    def __init__(self, uri: StoreURI) -> None:
        self.target = t = Target(uri)
        self.id_max_length = uri.bounded_int("id_max_length", DEFAULT_ID_MAX_LENGTH, 1, 65_535)
        self.id_max_given = uri.option("id_max_length") is not None
        self.index_type = (uri.option("index") or "AUTOINDEX").upper()
        self.document_option = uri.option("document")
        self.metadata_option = uri.option("metadata")
        self.vector_option = uri.option("vector")
        self.writes = AcknowledgedWrites(SCHEME, t.concurrency)
        self.source_dump: str | None = None  # set by the core: the dump's ids are checked before writing
        self.name = t.collection  # where rows go: the target, or the staged collection of a replace
        self.staged: str | None = None
        self.created = False  # this run created self.name (abort may drop it)
        self.dropped = False
        self.upsert = False
        self.collection: Collection | None = None
        self.vector_fields: dict[str, Field] = {}  # dump column -> field
        self.scalar_names: set[str] = set()
        self.vector_fields_planned: dict[str, str] = {}  # field -> vector spec name, for a new collection

    def identity(self) -> tuple[str, ...]:
        return self.target.identity()

    # --- prepare -----------------------------------------------------------------------------------

    def prepare(self, manifest: Manifest, *, if_exists: IfExists, resume: bool = False) -> int:
        t = self.target
        for spec in manifest.vectors:
            metric_to_milvus(spec.metric)
        names = manifest.namespace_names()
        for ns in names:
            partition_of(ns)
        saved = manifest.extra.get(SCHEME) if isinstance(manifest.extra.get(SCHEME), dict) else {}
        self.upsert = if_exists == IfExists.UPSERT
        self.writes.track(self.identity(), manifest)
        done = self.writes.saved() if resume else None
        if if_exists == IfExists.REPLACE and t.is_alias(t.collection):
            raise StoreError(f"{t.label} is an alias: replace the collection it names instead")
        existing = t.describe()
        staged = f"{t.collection}_vecfmt_staged"
        if done is not None:  # a resumed run: the same place, if it is still there. A replace resumes only
            # into its staged collection: without it, whatever the target holds is started over (safe, slower).
            self.name = staged if if_exists == IfExists.REPLACE else t.collection
            found = t.describe(self.name)
            if found is not None:
                self.staged = self.name if self.name != t.collection else None
                self.upsert = True  # rows in flight when the last run stopped may be in already
                self._use(found, manifest)
                self._check_ids(manifest)
                log.info("milvus: resuming after %d rows", done)
                return done
        if existing is not None and if_exists != IfExists.REPLACE:  # ids are checked against the key held
            held_pk = Collection.parse(existing, document=None, metadata=None).pk
            if held_pk.type == "VARCHAR":
                self.id_max_length = int(held_pk.params.get("max_length", self.id_max_length))
                self.id_max_given = True
        self._check_ids(manifest, saved)
        if existing is not None and if_exists == IfExists.REPLACE:
            if t.describe(f"{t.collection}_vecfmt_old") is not None:  # every refusal before anything is dropped
                raise StoreError(f"{t.label}: a collection {t.collection}_vecfmt_old exists (left by an interrupted "
                                 "swap?); rename or drop it first")
            self._drop_stale(staged)
            self.name = self.staged = staged
            existing = None
        elif existing is not None:
            held = t.count()
            if if_exists == IfExists.FAIL and held:
                raise StoreError(f"{t.label} already holds {held:,} rows: choose if_exists append, upsert or replace")
        if existing is None:
            self.writes.acknowledged = 0  # nothing of this run yet: a refusal from here on drops what it created
            self._create(manifest, saved)
            existing = t.describe(self.name)
            assert existing is not None
        self._use(existing, manifest)
        self.writes.acknowledged = 0
        self.writes.save()  # before the first batch: a run killed at once still resumes (from 0)
        return 0

    def _drop_stale(self, staged: str) -> None:
        """A staged collection left by an interrupted replace of this target (its name, ``NAME_vecfmt_staged``,
        is the mark: Milvus Lite keeps no collection descriptions) is dropped before staging again."""
        t = self.target
        info = t.describe(staged)
        if info is None:
            return
        if (info.get("description") or "") != STAGED_DESCRIPTION + t.collection:
            # Milvus Lite keeps no descriptions: a collection of that name may be a user's, never dropped
            raise StoreError(f"{t.label}: a collection {staged} exists, and nothing shows vecfmt staged it: resume "
                             "the interrupted replace (--resume), or rename or drop it yourself")
        log.info("milvus: dropping %s, left by an interrupted replace", staged)
        with t.errors("cannot drop the old staged collection"):
            t.client().drop_collection(staged)

    def _check_ids(self, manifest: Manifest, saved: dict[str, Any] | None = None) -> None:
        """Before anything is written: every id fits the primary key, and no id is in two namespaces (Milvus
        keys rows by primary key across partitions). Reads the dump's id columns when the core says where the
        dump is; a copy checks lengths batch by batch instead."""
        if saved:
            pk = next((f for f in saved.get("fields") or [] if f.get("is_primary")), None)
            if pk and pk.get("type") == "VARCHAR" and not self.id_max_given:
                self.id_max_length = max(self.id_max_length, int((pk.get("params") or {}).get("max_length", 0)))
        if not self.source_dump:
            return
        from vecfmt.reader import Dump

        dump = Dump.open(self.source_dump)
        columns = []
        for ns in manifest.namespace_names():
            ids = pa.chunked_array([b.column(ID) for b in dump.batches(ns, columns=[ID], verify=False)], pa.string())
            self._check_lengths(ids)
            columns.append(ids)
        if len(columns) > 1:
            every = pa.chunked_array([c for ids in columns for c in ids.chunks], pa.string())
            twice = repeated_values(every)
            if len(twice):
                raise InvalidDataError(f"milvus: id {twice[0].as_py()!r} is in more than one namespace; "
                                       "Milvus keys rows by primary key across all partitions, so one would replace "
                                       "the other (import the namespaces into separate collections)")

    def _check_lengths(self, ids: pa.ChunkedArray | pa.Array, done: str = "nothing was written") -> None:
        if len(ids) == 0:
            return
        lengths = pc.binary_length(ids)
        longest = pc.max(lengths).as_py() or 0
        if longest > self.id_max_length:
            where = pc.index(lengths, longest).as_py()
            raise InvalidDataError(f"milvus: id {ids[where].as_py()[:60]!r}... is {longest} bytes long; the primary "
                                   f"key holds at most {self.id_max_length} (id_max_length=, up to 65535); {done}")

    def _create(self, manifest: Manifest, saved: dict[str, Any]) -> None:
        """A new collection for the dump: the source's fields when the dump came from Milvus, else vecfmt's:
        a VARCHAR key, one field per vector, the metadata as a JSON field, the document as VARCHAR."""
        t = self.target
        pymilvus = sdk()
        fields, dynamic, sparse_metric = self._plan(manifest, saved)
        description = STAGED_DESCRIPTION + t.collection if self.staged else ""
        schema = pymilvus.MilvusClient.create_schema(auto_id=False, enable_dynamic_field=dynamic,
                                                     description=description)  # fmt: skip
        for f in fields:
            add_field(schema, f)
        index = t.client().prepare_index_params()
        by_name = {spec.name: spec for spec in manifest.vectors}
        for f in fields:
            if f.name in self.vector_fields_planned:
                spec = by_name[self.vector_fields_planned[f.name]]
                index.add_index(f.name, index_type=self.index_type, metric_type=metric_to_milvus(spec.metric))
            elif f.type == "SPARSE_FLOAT_VECTOR":
                index.add_index(f.name, index_type="SPARSE_INVERTED_INDEX", metric_type=sparse_metric)
        log.info("milvus: creating collection %s", self.name)
        with t.errors("cannot create the collection"):
            t.client().create_collection(self.name, schema=schema)
        self.created = True
        with self._undone_if_refused(), t.errors("cannot index the new collection"):
            # Not through create_collection(index_params=): pymilvus then waits for the index by polling with
            # AllocTimestamp, which Milvus Lite lacks, and retries it for about ten seconds. An empty
            # collection's index is ready at once; Lite builds its indexes as it goes.
            t.client().create_index(self.name, index, sync=not t.lite)
            t.client().load_collection(self.name)

    def _plan(self, manifest: Manifest, saved: dict[str, Any]) -> tuple[list[Field], bool, str]:
        old = [Field.from_dict(f) for f in saved.get("fields") or []] if saved else []
        old_by_name = {f.name: f for f in old}
        fields: list[Field] = []
        pk_old = next((f for f in old if f.is_primary), None)
        if pk_old is not None and pk_old.type == "INT64":
            fields.append(Field(pk_old.name, "INT64", is_primary=True))
        else:
            fields.append(Field(pk_old.name if pk_old else "id", "VARCHAR", {"max_length": self.id_max_length},
                                is_primary=True))  # fmt: skip
        self.vector_fields_planned = {}
        converted = saved.get("converted_to_float32") or {} if saved else {}
        for spec in manifest.vectors:
            name = check_name(spec.name, "vector field")
            kind = converted.get(name, "FLOAT_VECTOR") if name in old_by_name else "FLOAT_VECTOR"
            fields.append(Field(name, kind, {"dim": spec.dimension}))
            self.vector_fields_planned[name] = spec.name
        sparse_metric = str(saved.get("sparse_metric") or "IP") if saved else "IP"
        if manifest.sparse_values:
            fields.append(Field(saved.get("sparse_field") or SPARSE_FIELD if saved else SPARSE_FIELD,
                                "SPARSE_FLOAT_VECTOR"))  # fmt: skip
        taken = {f.name for f in fields}
        meta_name = self.metadata_option or (saved.get("metadata_field") if saved else None)
        doc_name = self.document_option or (saved.get("document_field") if saved else None)
        if saved and old:  # the source's scalar fields, as they were
            for name in saved.get("scalar_fields") or []:
                if name in old_by_name and name not in taken:
                    fields.append(old_by_name[name])
                    taken.add(name)
        dynamic = bool(saved.get("enable_dynamic_field")) if saved else False
        if meta_name or not (saved and (dynamic or saved.get("scalar_fields"))):
            meta = check_name(meta_name or "metadata", "metadata field")
            if meta not in taken:
                fields.append(Field(meta, "JSON", nullable=True, description=METADATA_DESCRIPTION))
                taken.add(meta)
        if manifest.document:
            doc = check_name(doc_name or "document", "document field")
            if doc not in taken:
                fields.append(Field(doc, "VARCHAR", {"max_length": DOCUMENT_MAX_LENGTH}, nullable=True,
                                    description=DOCUMENT_DESCRIPTION))  # fmt: skip
        return fields, dynamic, sparse_metric

    def _use(self, found: dict[str, Any], manifest: Manifest) -> None:
        """Check the collection against the dump (refused before anything is written) and map the columns."""
        t = self.target
        c = Collection.parse(found, document=self.document_option, metadata=self.metadata_option)
        self.collection = c
        if c.pk.type == "VARCHAR":
            self.id_max_length = int(c.pk.params.get("max_length", self.id_max_length))
        if c.partition_key is not None and any(manifest.namespace_names()):
            raise StoreError(f"{t.label} has a partition key ({c.partition_key.name!r}): Milvus chooses its "
                             "partitions, so the dump's namespaces have no place; import them one by one elsewhere")
        client = t.client()
        self.vector_fields = {}
        for spec in manifest.vectors:
            f = c.field(spec.name)
            if f is None and spec.column == "values":
                wanted = self.vector_option
                f = c.field(wanted) if wanted else (c.dense[0] if len(c.dense) == 1 else None)
            if f is None or f not in c.dense:
                raise StoreError(f"{t.label} has no vector field for the dump's vector {spec.name!r} (it has "
                                 f"{[x.name for x in c.dense]}; vector= names the field for values)")
            self._check_vector(f, spec)
            self.vector_fields[spec.column] = f
        if manifest.sparse_values and c.sparse is None:
            raise StoreError(f"{t.label} has no sparse vector field for the dump's sparse_values")
        if manifest.document and c.document is None:
            raise StoreError(f"{t.label} has no VARCHAR field for the dump's documents (document= names one)")
        self.scalar_names = {f.name for f in c.scalars}
        if c.partition_key is None:
            with t.errors("cannot create the partitions"):
                held = set(client.list_partitions(self.name))
                for ns in manifest.namespace_names():
                    if partition_of(ns) not in held:
                        client.create_partition(self.name, partition_of(ns))

    def _check_vector(self, f: Field, spec: VectorSpec) -> None:
        t = self.target
        if f.dim != spec.dimension:
            raise StoreError(f"{t.label}: field {f.name!r} holds {f.dim}-dimensional vectors, the dump's "
                             f"{spec.name!r} has {spec.dimension}; nothing was written")
        client = t.client()
        with t.errors("cannot read the indexes"):
            names = client.list_indexes(self.name, field_name=f.name)
            metric = str(client.describe_index(self.name, names[0]).get("metric_type") or "") if names else ""
        if metric and metric_from_milvus(metric, f.name) != spec.metric:
            raise StoreError(f"{t.label}: field {f.name!r} is indexed for {metric_from_milvus(metric, f.name)}, the "
                             f"dump's vectors are {spec.metric}; nothing was written")

    # --- writing -----------------------------------------------------------------------------------

    def write(self, namespace: str, batch: pa.RecordBatch, *, rows_done: int) -> None:
        with self._undone_if_refused():
            self._write(namespace, batch, rows_done)

    def _write(self, namespace: str, batch: pa.RecordBatch, rows_done: int) -> None:
        c = self.collection
        assert c is not None
        t = self.target
        n = batch.num_rows
        ids_column = batch.column(ID)
        ids: list[Any] = ids_column.to_pylist()
        if c.pk.type == "VARCHAR":
            self._check_lengths(ids_column, "nothing of this batch was written")
        else:
            # Only canonical decimal text within int64: int() would also take "00012", "+12", " 7" or "1_000",
            # and several ids would become one key.
            canonical = pc.match_substring_regex(ids_column.cast(pa.string()), r"^-?(0|[1-9][0-9]{0,18})$")
            if not pc.all(canonical).as_py() or any(not -2**63 <= int(x) < 2**63 for x in ids) or "-0" in ids:
                raise InvalidDataError(f"{t.label}: the primary key {c.pk.name!r} is INT64; the dump's ids are not "
                                       "all whole numbers in canonical form within 64 bits") from None
            ids = [int(x) for x in ids]  # per row: the client takes one dict per row below
        # MilvusClient.insert takes one dict per row, so rows are built here (vectors as NumPy row views,
        # which pymilvus packs itself); nothing coarser is offered by the client.
        columns: dict[str, list[Any]] = {c.pk.name: ids}
        for column, f in self.vector_fields.items():
            array = batch.column(column)
            matrix = vectors_numpy(array)
            if array.null_count:  # Milvus Lite 3.2 takes nullable vector fields but gives nulls back as zeros
                row = int(np.flatnonzero(~array.is_valid().to_numpy(zero_copy_only=False))[0])
                raise InvalidDataError(f"{t.label}: row {ids[row]!r} has no {column!r} vector; a Milvus vector field "
                                       "holds a vector in every row")
            columns[f.name] = list(matrix) if f.type == "FLOAT_VECTOR" else narrow(matrix, f.type, f.name)
        if c.sparse is not None and SPARSE_VALUES in batch.schema.names:
            columns[c.sparse.name] = [None if r is None else dict(zip(r["indices"], r["values"], strict=True))
                                      for r in batch.column(SPARSE_VALUES).to_pylist()]  # fmt: skip
        if c.document is not None and DOCUMENT in batch.schema.names:
            docs = batch.column(DOCUMENT)
            if len(docs) and (pc.max(pc.binary_length(docs)).as_py() or 0) > DOCUMENT_MAX_LENGTH:
                raise InvalidDataError(f"{t.label}: a document is longer than {DOCUMENT_MAX_LENGTH} bytes, Milvus's "
                                       "VARCHAR limit")
            columns[c.document.name] = docs.to_pylist()
        extra = self._metadata(batch, ids)
        names = list(columns)
        entities = [dict(zip(names, values, strict=True)) for values in zip(*columns.values(), strict=True)]
        for entity, more in zip(entities, extra, strict=True):
            entity.update(more)
        partition = "" if c.partition_key is not None else partition_of(namespace)
        size = self.request_rows()
        starts = range(0, n, size)
        # The requests before this batch's are waited for, this batch's stay in flight while the core reads and
        # checks the next one (with one worker on Milvus Lite, nothing would overlap otherwise).
        self.writes.drain(t.concurrency - 1)
        for k, start in enumerate(starts):
            self.writes.submit(rows_done if k == len(starts) - 1 else None, self._send, entities[start:start + size],
                               partition)  # fmt: skip

    def request_rows(self) -> int:
        """Rows per insert request: ``batch`` when given, else as many as ``REQUEST_BYTES`` of vectors hold."""
        if self.target.batch is not None:
            return self.target.batch
        width = sum(4 * f.dim for f in self.vector_fields.values()) or 4
        return max(1, min(REQUEST_ROWS_MAX, REQUEST_BYTES // width))

    def _metadata(self, batch: pa.RecordBatch, ids: list[Any]) -> list[dict[str, Any]]:
        """Each row's metadata: keys that are scalar fields go to them, the rest to the metadata JSON field
        (as the dump's own text when nothing is split off: pymilvus sends a str as the JSON it is), else to
        the dynamic field; a key with no place is refused."""
        c = self.collection
        assert c is not None
        texts = batch.column(METADATA).to_pylist()
        meta = c.metadata.name if c.metadata else None
        if meta is not None and not self.scalar_names and not c.dynamic:
            return [{meta: text} for text in texts]
        out: list[dict[str, Any]] = []
        for text, record_id in zip(texts, ids, strict=True):
            value = json.loads(text) if text else {}
            row: dict[str, Any] = {name: value.pop(name, None) for name in self.scalar_names}
            if meta is not None:
                row[meta] = value if value or text else None
            elif value and not c.dynamic:
                raise InvalidDataError(f"{self.target.label}: row {record_id!r}: metadata key {next(iter(value))!r} "
                                       "has no field in the collection, which has no JSON metadata field and no "
                                       "dynamic field")
            else:
                row.update(value)
            out.append(row)
        return out

    def _send(self, entities: list[dict[str, Any]], partition: str) -> None:
        t = self.target
        client = t.client()
        with t.errors("upsert failed" if self.upsert else "insert failed"):
            if self.upsert:
                client.upsert(self.name, entities, partition_name=partition)
            else:
                client.insert(self.name, entities, partition_name=partition)

    def rows_committed(self) -> int | None:
        if self.dropped:
            return 0
        return self.writes.rows_committed()

    def finish(self) -> None:
        t = self.target
        with self._undone_if_refused():
            self.writes.drain(0)
        with t.errors("flush failed"):
            t.client().flush(self.name)
        if self.staged is not None:
            self._swap()
        self.writes.finish()

    def _swap(self) -> None:
        """The staged collection becomes the target: the old one is renamed aside, the staged one takes the name,
        the old one is dropped. Should the second rename fail, the first is undone."""
        t = self.target
        client = t.client()
        aside = f"{t.collection}_vecfmt_old"
        with t.errors("cannot swap the staged collection in"):
            if t.describe() is not None:
                client.rename_collection(t.collection, aside)
                try:
                    client.rename_collection(self.staged, t.collection)
                except Exception:
                    client.rename_collection(aside, t.collection)
                    raise
                client.drop_collection(aside)
            else:
                client.rename_collection(self.staged, t.collection)
        log.info("milvus: replaced %s", t.collection)
        self.name, self.staged = t.collection, None

    def abort(self) -> None:
        """A broken dump: drop what this run created (a replace's staged collection, a new collection), never
        the target as it was, nor a new collection holding more rows than this run wrote (another writer's)."""
        self.writes.abort()
        if self.created and not self.dropped:
            t = self.target
            held = t.count(self.name)
            if held > self.writes.acknowledged:  # another writer found the new collection: its rows stay
                log.warning("milvus: keeping the collection %s this import created: it holds %d rows, more "
                            "than the %d this import wrote", self.name, held, self.writes.acknowledged)
                return
            with t.errors("cannot drop what this import created"):
                t.client().drop_collection(self.name)
            self.dropped = True

    @contextmanager
    def _undone_if_refused(self) -> Iterator[None]:
        """A failure before any row is acknowledged (Milvus refusing a row of the first requests, an index it
        cannot build, an unreachable server) drops the collection this run created, so that a refused import
        leaves nothing behind; the core calls ``abort`` only for a broken dump. Rows acknowledged, or a
        collection this run did not create, are kept for ``--resume``. The original error is raised either way."""
        try:
            yield
        except Exception:
            if self.created and not self.dropped and self.writes.acknowledged == 0:
                try:
                    self.abort()
                except Exception as exc:  # the store may be gone: the original error is the one to tell
                    log.warning("milvus: cannot drop %s after the failure: %s", self.name, exc)
            raise

    def close(self) -> None:
        self.writes.close()
        self.target.close()

    def search(self, vector: np.ndarray, k: int, *, namespace: str = "") -> list[tuple[str, float]]:
        c = self.collection
        if c is None:
            found = self.target.describe()
            if found is None:
                raise StoreError(f"{self.target.label} does not exist")
            c = Collection.parse(found, document=self.document_option, metadata=self.metadata_option)
        field = self.vector_fields.get("values") or (c.field(self.vector_option) if self.vector_option else None)
        field = field or (c.dense[0] if c.dense else None)
        if field is None:
            raise StoreError(f"{self.target.label} has no dense vector to search")
        partitions = None if c.partition_key is not None else [partition_of(namespace)]
        return nearest(self.target, self.name, field.name, c.pk.name, vector, k, partitions)
