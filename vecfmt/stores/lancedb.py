"""LanceDB (embedded, Arrow-native): the default store that needs no server.

URI: ``lancedb://PATH?table=NAME`` where PATH is the database folder (relative, absolute, or an
object-store URI LanceDB understands). Options:

- ``table`` (required): the table name.
- ``vector``: the primary vector column (default: ``vector`` if present, else the first vector column).
- ``id``: the id column (default ``id``).
- ``metric``: cosine | dot | euclidean | hamming, for tables vecfmt did not create (default cosine).
- ``namespace_column``: the column that holds namespaces (default ``namespace`` when present).
- ``index`` (import): ``auto`` (default: an IVF_PQ index on ``vector`` once the table holds
  ``index_min_rows`` rows, 100,000 by default), ``none``, or a LanceDB index type (``ivf_pq``,
  ``ivf_hnsw_sq``, ...) built whatever the size; ``num_partitions`` and ``num_sub_vectors`` are passed
  to LanceDB (its own defaults otherwise). A table with an index already is only brought up to date.
  The exporter's ``search()`` takes the index's knobs for one search (``nprobes``, ``refine_factor``; ``ef``
  for IVF_HNSW types; ``search_knobs()``), which ``vecfmt tune`` sweeps.

A table vecfmt creates holds ``id``, ``vector`` (the dump's ``values``), one column per further named
vector (named after it), ``sparse_values``, ``metadata`` (JSON text), ``document`` and, when the dump has
non-default namespaces, ``namespace``. The dump's vector definitions, model and source are kept in the
table's schema metadata under ``vecfmt``, so an export gives back the same manifest fields. Columns of
foreign tables that are not vectors are folded into the JSON metadata by the rules of
``vecfmt.metadata``; a NULL namespace exports as the default namespace ``""``.

Ids are unique within a namespace: ``upsert`` merges on (namespace, id) when the table has namespaces.

Imports commit in pieces of ``COMMIT_ROWS`` rows (each an atomic Lance commit, in the dump's order). Each
piece streams into one ``add`` running on a thread of its own, which Lance encodes and writes while the
core reads the next batches from the dump, and becomes one Lance fragment of the size Lance itself writes;
``finish()`` then compacts what small fragments are left (a last piece), without pruning any version.
A table the import creates (or stages) holds only its commits: each must be the version right after the
previous one, else another writer is at work and the import stops. After each commit the tag
``vecfmt-import`` points at it (the progress record; deleted once the import is done), and ``resume``
goes on only when that tag is the table's latest version, so the rows it skips are exactly this dump's.

``replace`` never touches the old table while loading: the rows go into a staged table beside it
(``<table>-vecfmt-staging``) and ``finish()`` swaps them in. LanceDB OSS cannot rename a table, so the
swap is an overwrite of the old table with the staged rows: one Lance commit, atomic for readers (they
see every old row or every new one), at the cost of writing the rows a second time; then the staged
table is dropped. The old rows stay readable in the table's earlier versions until they are cleaned up
(``optimize(cleanup_older_than=...)``). A dump that turns out broken (checksum, bad row) drops the
staged table and leaves the old one as it was; an interruption keeps the staged table for ``resume``, and
a new ``replace`` drops a staged table it finds. Details: docs/lancedb.md.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import queue
import re
import threading
import uuid
from collections.abc import Callable, Iterator
from datetime import timedelta
from typing import IO, Any
from urllib.parse import unquote, urlsplit

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from vecfmt import metadata
from vecfmt.errors import StoreError, first_line
from vecfmt.manifest import EmbeddingModel, Manifest, Source, VectorSpec
from vecfmt.schema import (
    DOCUMENT,
    ID,
    METADATA,
    SPARSE_VALUES,
    VALUES,
    check_metric,
    is_vector_type,
    same_type,
    vector_column,
)
from vecfmt.storage import redact, scrub, secrets_of
from vecfmt.stores.base import Chunk, Description, IfExists, KnobInfo, Slice, StoreURI, require_sdk

SCHEME = "lancedb"
# Index after import: "auto" builds IVF_PQ from INDEX_MIN_ROWS rows on (LanceDB's docs: below about 100,000
# rows a flat scan is fast enough and exact); or a named LanceDB index type, or none.
INDEX_TYPES = {"auto": "", "none": "", "ivf_pq": "IvfPq", "ivf_flat": "IvfFlat", "ivf_sq": "IvfSq",
               "ivf_hnsw_sq": "IvfHnswSq", "ivf_hnsw_pq": "IvfHnswPq", "ivf_hnsw_flat": "IvfHnswFlat"}  # lancedb.index
INDEX_MIN_ROWS = 100_000
PRIMARY_COLUMN = "vector"  # LanceDB's default vector column: search() finds it without being told
NAMESPACE_COLUMN = "namespace"
SCHEMA_KEY = b"vecfmt"
# canonical metric -> LanceDB distance_type
DISTANCE_TYPES = {"cosine": "cosine", "dot": "dot", "euclidean": "l2", "hamming": "hamming"}
# An import commits once this much is buffered: few, large fragments and versions, bounded memory.
# Lance's own rows per data file (its default max_rows_per_file): a piece this size needs no compaction,
# and a resume repeats at most this much work (seconds of it)
COMMIT_ROWS = 1024 * 1024
STAGING_SUFFIX = "-vecfmt-staging"
# optimize() prunes versions older than this; vecfmt compacts only and never prunes a user's history.
KEEP_VERSIONS = timedelta(days=100 * 365)
# The progress record of an import: a tag on the version of its last commit (a tag adds no version).
PROGRESS_TAG = "vecfmt-import"
# Lance errors end with the Rust source locations of the driver's build: of no use to a user.
_RUST_LOCATION = re.compile(r",?\s*/\S+\.rs:\d+:\d+")


def _connect(uri: StoreURI) -> Any:
    uri.check_options({"table", "vector", "id", "metric", "namespace_column",  # the options this module reads
                       "index", "index_min_rows", "num_partitions", "num_sub_vectors"})
    lancedb = require_sdk("lancedb", SCHEME)
    if not uri.location:
        raise StoreError(f"{uri} names no database folder (lancedb://PATH?table=NAME)")
    try:
        return lancedb.connect(uri.location)
    except Exception as exc:
        # An object-store location may carry credentials: never show them, nor the driver's echo of them.
        problem = scrub(first_line(exc), secrets_of(uri.location))
        raise StoreError(f"cannot open LanceDB database {redact(uri.location)}: {problem}") from None


def _table_names(db: Any) -> list[str]:
    return list(db.list_tables().tables)


def _identity(uri: StoreURI, table: str) -> tuple[str, str, str]:
    """The table's identity however its folder is spelled (``./db``, ``/abs/db``, ``db/../db``,
    ``file:///abs/db``, a trailing ``/``)."""
    return (SCHEME, _resolved(uri.location), table)


def _resolved(location: str) -> str:
    """A local folder as its real path, in every spelling LanceDB opens as that folder (a plain path or a
    ``file://`` URI with no host: LanceDB takes ``file://HOST/...`` for another place); any other URI as
    written, credentials removed."""
    if "://" not in location:
        return os.path.realpath(location)
    parts = urlsplit(location)
    if parts.scheme.lower() == "file" and not parts.netloc:
        return os.path.realpath(unquote(parts.path))
    return redact(location)


def _lance_message(exc: BaseException, secrets: tuple[str, ...] = ()) -> str:
    """A driver error as one short line: its first line without the Rust source locations."""
    return scrub(_RUST_LOCATION.sub("", first_line(exc)), secrets)


class LanceDBExporter:
    supports_resume = True  # tokens name a table version and an offset in it

    def __init__(self, uri: StoreURI) -> None:
        self.uri = uri
        self.name = uri.require("table")
        db = _connect(uri)
        if self.name not in _table_names(db):
            raise StoreError(f"LanceDB table {self.name!r} does not exist in {redact(uri.location)}")
        self.table = db.open_table(self.name)
        self.table.checkout(self.table.version)  # one consistent version for the whole export
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
        names = self.table.search().select([self.namespace_column]).limit(None).to_arrow()
        counts = pc.value_counts(names.column(0).fill_null(""))
        found = dict(zip(counts.field("values").to_pylist(), counts.field("counts").to_pylist(), strict=True))
        return dict(sorted(found.items()))  # a stable order: resumed exports rely on it

    def slices(self, namespace: str) -> list[Slice]:
        return [Slice(namespace)]

    def batches(self, part: Slice, *, batch_size: int, resume: str | None = None) -> Iterator[Chunk]:
        """Scan one table version; the resume token is that version and the rows read so far."""
        position = json.loads(resume) if resume else {"version": self.table.version, "offset": 0}
        if position["version"] != self.table.version:
            self.table.checkout(position["version"])
        query = self.table.search()
        if self.namespace_column is not None:
            query = query.where(_in_namespace(self.namespace_column, part.namespace))
        columns = [f.name for f in self.schema if f.name != self.namespace_column]
        offset = position["offset"]
        query = query.select(columns).limit(None)
        for batch in (query.offset(offset) if offset else query).to_batches(batch_size):
            offset += batch.num_rows
            yield Chunk(self._canonical(batch), json.dumps({"version": position["version"], "offset": offset}))

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


class LanceDBImporter:
    def __init__(self, uri: StoreURI) -> None:
        self.uri = uri
        self.name = uri.require("table")
        self.staging_name = self.name + STAGING_SUFFIX
        self.db = _connect(uri)
        self.index_type = (uri.option("index", "auto") or "auto").lower()
        if self.index_type not in INDEX_TYPES:
            raise StoreError(f"lancedb: option index must be one of {', '.join(INDEX_TYPES)}, not {self.index_type!r}")
        self.index_min_rows = uri.bounded_int("index_min_rows", INDEX_MIN_ROWS, 1, 2**62)
        self.num_partitions = uri.int_option("num_partitions")
        self.num_sub_vectors = uri.int_option("num_sub_vectors")
        self.table: Any = None
        self.staged = False  # loading a replace beside the old table: swap at finish()
        self.renames: dict[str, str] = {}
        self.namespaced = False
        self.upsert = False
        self.metric = "cosine"
        self.piece: _StreamedCommit | None = None  # the commit being written, not yet made
        self.created = False  # this run created the table itself (not staged, not resumed)
        self.lock: IO[str] | None = None  # held from prepare() to close(): one import of a table at a time
        self.resumable = False  # an import of a dump (a copy cannot resume)
        self.rows_written = 0  # the dump's rows once everything written so far is committed
        self.rows_done = 0  # ... once the last commit is
        # A table this import created or staged holds its commits only: ``version`` is the table's version
        # after the last of them and ``stamp`` that version's commit time, ``run`` the token its schema
        # metadata holds (a table dropped and made again by another writer reaches the same version numbers).
        self.tracked = False
        self.version = 0
        self.stamp: Any = None
        self.run = ""
        self.conflict = False  # another writer changed the table: a resume cannot help
        self.loaded = False  # finish() has every row in and compacted

    def identity(self) -> tuple[str, str, str]:
        return _identity(self.uri, self.name)

    def prepare(self, manifest: Manifest, *, if_exists: IfExists, resume: bool = False) -> int:
        self.lock = _lock_table(self.uri.location, self.name)
        self.renames = {v.column: PRIMARY_COLUMN if v.column == VALUES else v.name for v in manifest.vectors}
        self.namespaced = any(ns.name != "" for ns in manifest.namespaces)
        self.metric = manifest.primary.metric if manifest.primary else "cosine"
        tables = _table_names(self.db)
        exists = self.name in tables
        identity = manifest.identity() if manifest.files else None
        self.resumable = identity is not None
        self._check_index_options(manifest)
        if resume and (exists or self.staging_name in tables):
            return self._resume(identity, tables)
        if exists and if_exists == IfExists.FAIL:
            raise StoreError(f"LanceDB table {self.name!r} already exists (choose if_exists append, "
                             "upsert or replace)")
        if exists and if_exists in (IfExists.APPEND, IfExists.UPSERT):
            table = self.db.open_table(self.name)
            self.namespaced = self.namespaced or NAMESPACE_COLUMN in table.schema.names
            _check_compatible(table.schema, self._schema(manifest), self.name)
            self.table = table
            self.upsert = if_exists == IfExists.UPSERT
            return 0
        self.run = uuid.uuid4().hex
        meta = {"import_of": identity, "run": self.run, **_definitions(manifest, self.renames)}
        if exists:  # replace: load beside the old table, which stays as it is until finish()
            self._drop_leftover_staging(tables)
            meta["staging_for"] = self.name
        schema = self._schema(manifest).with_metadata({SCHEMA_KEY: json.dumps(meta).encode()})
        creating = self.staging_name if exists else self.name
        try:
            self.table = self.db.create_table(creating, schema=schema)
        except Exception as exc:
            if creating in _table_names(self.db):  # made by a concurrent import since the listing above
                self.conflict = True
                raise StoreError(f"another writer created LanceDB table {creating!r} while this import was "
                                 f"starting; {self.name!r} is unchanged: re-run the import once the other "
                                 "writer is done") from None
            raise StoreError(f"cannot create LanceDB table {self.name!r}: {self._message(exc)}") from None
        self.staged, self.created = exists, not exists
        self.tracked, self.version = True, self.table.version
        with self._other_writers("start loading"):
            self.stamp = _stamp(self.table, self.version)
            self._record_progress(self.version)  # no rows yet; without a record a resume takes rows as finished
        return 0

    def _resume(self, identity: str | None, tables: list[str]) -> int:
        """Continue this dump's import: a staged replace first, else the table itself. Each commit is
        atomic and in dump order, and the table holds this import's commits only; its progress record
        (a tag on the version of its last commit) must be the table's latest version, so the rows it
        holds are exactly the rows to skip."""
        for name, staged in ((self.staging_name, True), (self.name, False)):
            if name not in tables:
                continue
            table = self.db.open_table(name)
            saved = _saved_definitions(table.schema)
            if identity is not None and saved.get("import_of") == identity and (
                    not staged or saved.get("staging_for") == self.name):
                self._check_as_left(table)
                self.table, self.staged = table, staged
                self.tracked, self.version, self.run = True, table.version, saved.get("run", "")
                self.stamp = _stamp(table, self.version)
                self.namespaced = NAMESPACE_COLUMN in table.schema.names
                self.rows_done = self.rows_written = table.count_rows()
                return self.rows_done
        raise StoreError(f"LanceDB table {self.name!r} was not started by an import of this dump; cannot resume")

    def _check_as_left(self, table: Any) -> None:
        """Refuse a resume unless the table is exactly as the interrupted import left it."""
        recorded = table.tags.list().get(PROGRESS_TAG)
        latest = table.version
        if recorded is None:  # stopped as it created the table, or finished (its record deleted)
            if table.count_rows() == 0:
                return
            raise StoreError(f"LanceDB table {self.name!r} holds rows but no interrupted import of this dump "
                             "recorded them (the import finished); nothing to resume: re-run without --resume "
                             "(if_exists replace to load it again)")
        if recorded["version"] != latest:
            raise StoreError(f"LanceDB table {self.name!r} changed since the interrupted import (it recorded version "
                             f"{recorded['version']}, the table is at version {latest}: another writer, or the "
                             "import was stopped between a commit and its record), so which rows to skip is "
                             "unknown; re-run without --resume (if_exists replace)")

    def _drop_leftover_staging(self, tables: list[str]) -> None:
        """A staged table an interrupted replace left; dropped only when vecfmt staged it."""
        if self.staging_name not in tables:
            return
        try:
            saved = _saved_definitions(self.db.open_table(self.staging_name).schema)
        except Exception:  # dropped since the listing: a concurrent replace is done with it
            if self.staging_name not in _table_names(self.db):
                return
            raise
        if saved.get("staging_for") != self.name:
            raise StoreError(f"LanceDB table {self.staging_name!r} exists and was not staged by vecfmt; "
                             f"rename or drop it to replace {self.name!r}")
        try:
            self.db.drop_table(self.staging_name)
        except Exception:  # a concurrent replace is loading into it (Lance: "Directory not empty")
            self.conflict = True
            raise StoreError(f"another writer changed LanceDB table {self.staging_name!r} while this replace "
                             f"dropped it (a replace running at the same time?); {self.name!r} is unchanged: "
                             "re-run the import once the other writer is done") from None

    def _schema(self, manifest: Manifest) -> pa.Schema:
        fields = []
        for field in manifest.arrow_schema():
            name = self.renames.get(field.name, field.name)
            fields.append(pa.field(name, field.type, nullable=field.name != ID))
        if self.namespaced:
            fields.append(pa.field(NAMESPACE_COLUMN, pa.string(), nullable=False))
        return pa.schema(fields)

    def write(self, namespace: str, batch: pa.RecordBatch, *, rows_done: int) -> None:
        batch = batch.rename_columns([self.renames.get(n, n) for n in batch.schema.names])
        if self.namespaced:
            batch = batch.append_column(NAMESPACE_COLUMN, pa.repeat(pa.scalar(namespace), batch.num_rows))
        try:  # the table's column order, nullability and metadata; the types are the dump's (prepare checked)
            batch = batch.select(self.table.schema.names).cast(self.table.schema)
        except (pa.ArrowInvalid, ValueError) as exc:  # a null where the table's column allows none
            raise StoreError(f"rows of the dump do not fit LanceDB table {self.name!r}: {first_line(exc)}") from None
        if self.piece is None:
            self.piece = _StreamedCommit(self._start_commit, self.table.schema)
        try:
            self.piece.put(batch)
        except Exception as exc:  # Lance stopped writing the piece
            self.piece = None
            raise self._write_failed(exc) from None
        self.rows_written = rows_done
        if self.piece.rows >= COMMIT_ROWS:
            self._commit()

    def _start_commit(self, reader: pa.RecordBatchReader) -> int:
        """One Lance commit of the batches ``reader`` yields (run on the piece's thread)."""
        if self.upsert:  # ids are unique within a namespace only
            keys = [NAMESPACE_COLUMN, ID] if self.namespaced else [ID]
            merge = self.table.merge_insert(keys).when_matched_update_all().when_not_matched_insert_all()
            return merge.execute(reader).version
        return self.table.add(reader).version

    def _commit(self) -> None:
        """Make the commit of everything written since the last one."""
        if self.piece is None:
            return
        piece = self.piece
        interrupted = False
        try:
            piece.end()  # interrupted before it is handed the end, the piece is close()'s to cancel
            self.piece = None
            while True:  # Lance may be committing: a Ctrl-C waits for it, so that the record below is made
                try:
                    version = piece.wait()
                    break
                except KeyboardInterrupt:
                    interrupted = True
        except Exception as exc:
            raise self._write_failed(exc) from None
        self._record_commit(version)
        if interrupted:
            raise KeyboardInterrupt

    def _record_commit(self, version: int) -> None:
        if self.tracked:
            with self._other_writers("record the progress of"):
                stamps = _stamps(self.table)
                # Lance rebased our commit over another writer's, or the table was dropped and made again
                if version != self.version + 1 or stamps.get(self.version) != self.stamp:
                    raise self._conflict()
                self.version, self.stamp = version, stamps.get(version)
                self._record_progress(version)
        self.rows_done = self.rows_written

    def _write_failed(self, exc: Exception) -> StoreError:
        if self.tracked and self._changed():
            return self._conflict()
        return StoreError(f"cannot write to LanceDB table {self.name!r}: {self._message(exc)}")

    @contextlib.contextmanager
    def _other_writers(self, doing: str) -> Iterator[None]:
        """Lance errors while another writer drops or rewrites the table (its files vanish under this
        import: "Not found: ...manifest") are that writer's doing, and one clear line."""
        try:
            yield
        except StoreError:
            raise
        except Exception as exc:
            if self._changed():
                raise self._conflict() from None
            raise StoreError(f"cannot {doing} LanceDB table {self.table.name!r}: {self._message(exc)}") from None

    def _record_progress(self, version: int) -> None:
        """Point the progress tag at this import's last commit (what ``resume`` checks the table against)."""
        tags = self.table.tags
        if PROGRESS_TAG in tags.list():
            tags.update(PROGRESS_TAG, version)
        else:
            tags.create(PROGRESS_TAG, version)

    def _changed(self) -> bool:
        """The table this import loads is no longer as its last commit left it (another writer)."""
        try:
            now = self.db.open_table(self.table.name)
            return (now.version != self.version or _saved_definitions(now.schema).get("run", "") != self.run
                    or _stamp(now, self.version) != self.stamp)
        except Exception:
            return True  # dropped

    def _conflict(self) -> StoreError:
        self.conflict = True
        return StoreError(f"another writer changed LanceDB table {self.table.name!r} while this import was "
                          f"loading it; nothing more was written to {self.name!r}: re-run the import once the "
                          "other writer is done")

    def _message(self, exc: BaseException) -> str:
        return _lance_message(exc, secrets_of(self.uri.location))

    def rows_committed(self) -> int | None:
        """The dump's rows in the table (what ``resume`` skips); None for a copy or when another writer
        changed the table (a resume would refuse)."""
        return self.rows_done if self.resumable and not self.conflict and not self.loaded else None

    def finish(self) -> None:
        self._commit()
        if self.staged:
            self._swap()
        elif self.tracked:
            with self._other_writers("finish loading"):
                self._drop_progress(self.table)  # done: nothing to resume, and a tag would pin its version
        # Compact the small fragments the load left; a huge cleanup age keeps every earlier version.
        try:
            self.table.optimize(cleanup_older_than=KEEP_VERSIONS)
        except Exception as exc:  # the rows are in; only the compaction failed (e.g. another writer's commit)
            raise StoreError(f"LanceDB table {self.name!r} holds every row of the import, but compacting it "
                             f"failed: {self._message(exc)}") from None
        self.loaded = True  # every row is in: an index failure from here is not for ``resume`` to mend
        self._build_index()

    def _check_index_options(self, manifest: Manifest) -> None:
        """Index options LanceDB would refuse only after every row is in: refused before the first."""
        dims = manifest.primary.dimension if manifest.primary else 0
        for key, value in (("num_partitions", self.num_partitions), ("num_sub_vectors", self.num_sub_vectors)):
            if value is not None and value < 1:
                raise StoreError(f"lancedb: option {key} must be at least 1, not {value}")
        if self.num_sub_vectors is not None and dims and dims % self.num_sub_vectors:
            raise StoreError(f"lancedb: option num_sub_vectors must divide the vectors' {dims} dimensions, "
                             f"not {self.num_sub_vectors}")

    def _build_index(self) -> None:
        """A vector index on the primary column once the table is large enough to need one (below
        ``index_min_rows`` a flat scan is fast and exact); a table that has one already was brought up
        to date by ``optimize()``."""
        kind = self.index_type
        if kind == "none" or PRIMARY_COLUMN not in self.table.schema.names:
            return
        if any(PRIMARY_COLUMN in index.columns for index in self.table.list_indices()):
            return
        if kind == "auto":
            if self.table.count_rows() < self.index_min_rows:
                return
            kind = "ivf_pq"
        config_class = getattr(require_sdk("lancedb.index", SCHEME), INDEX_TYPES[kind])
        settings: dict[str, Any] = {"distance_type": DISTANCE_TYPES.get(self.metric, "l2")}
        if self.num_partitions is not None:
            settings["num_partitions"] = self.num_partitions
        if self.num_sub_vectors is not None and "PQ" in INDEX_TYPES[kind].upper():
            settings["num_sub_vectors"] = self.num_sub_vectors
        try:
            self.table.create_index(PRIMARY_COLUMN, config=config_class(**settings))
        except Exception as exc:
            raise StoreError(f"LanceDB table {self.name!r} holds every row of the import, but building its "
                             f"{kind.upper()} index failed: {self._message(exc)}; the table is complete and "
                             "searchable without it (build one with LanceDB's create_index)") from None

    def _swap(self) -> None:
        """The staged rows replace the old table's in one overwrite commit, then the staged table goes.
        The rows are read at this import's last commit, once the staged table is checked to hold this
        import's commits and nothing else, so the table never receives another writer's rows."""
        staged = self.table
        with self._other_writers("read the staged rows of"):
            if self._changed() or staged.count_rows() != self.rows_done:
                raise self._conflict()
            staged.checkout(self.version)  # what a later commit by anyone else cannot change
            rows = staged.search().limit(None).to_batches()
        try:
            self.table = self.db.create_table(self.name, rows, mode="overwrite")
        except Exception as exc:
            if "conflict" in str(exc).lower() or self._changed():
                raise self._conflict() from None
            raise StoreError(f"cannot swap the staged rows into LanceDB table {self.name!r} (it is "
                             f"unchanged; resume to try again): {self._message(exc)}") from None
        # The swap is done; what follows tidies up, and fails only when another writer got there first.
        with contextlib.suppress(Exception):
            self._drop_progress(self.table)  # left by an interrupted import the replace took over
        with contextlib.suppress(Exception):  # another replace dropped it already: the swap is done all the same
            self.db.drop_table(self.staging_name)
        self.staged = False

    @staticmethod
    def _drop_progress(table: Any) -> None:
        if PROGRESS_TAG in table.tags.list():
            table.tags.delete(PROGRESS_TAG)

    def abort(self) -> None:
        """The dump is broken: drop the staged table (the old one was never touched), or the table this
        run created while it holds none of the dump's rows; rows of earlier commits stay, and are said."""
        self._cancel()
        if self.staged:
            self.rows_done = 0  # none of the dump's rows is in the target (rows_committed)
        # after a conflict the staged table may be another replace's, or the new table another writer's
        if self.conflict:
            return
        if self.staged and self.staging_name in _table_names(self.db):
            self.db.drop_table(self.staging_name)
        elif self.created and self.rows_done == 0 and not self._changed():
            self.db.drop_table(self.name)
            self.created = False
        self.staged = False

    def _cancel(self) -> None:
        if self.piece is not None:
            piece, self.piece = self.piece, None
            piece.cancel()

    def close(self) -> None:
        self._cancel()  # an error stopped the import: the piece in progress is not committed
        if self.lock is not None:
            self.lock.close()  # releases the flock
            self.lock = None

    def search(self, vector: np.ndarray, k: int, *, namespace: str = "") -> list[tuple[str, float]]:
        return _search(self.table, PRIMARY_COLUMN, ID, self.metric,
                       NAMESPACE_COLUMN if self.namespaced else None, vector, k, namespace)


def _lock_table(location: str, name: str) -> IO[str] | None:
    """An exclusive lock on importing into table ``name`` of a local database folder, held by the open
    file: two imports of one table (two resumes of one interrupted import, say) would both append, and
    Lance rebases appends instead of refusing them. The OS releases a flock when its process ends, so a
    killed import leaves no stale lock. Object stores have no such lock (docs/lancedb.md)."""
    parts = urlsplit(location)
    if parts.scheme not in ("", "file"):
        return None
    folder = unquote(parts.path) if parts.scheme == "file" else location
    try:
        os.makedirs(folder, exist_ok=True)
        handle = open(os.path.join(folder, f".{name}.vecfmt-lock"), "a")  # noqa: SIM115 (held until close())
    except OSError as exc:
        raise StoreError(f"cannot open LanceDB database {folder}: {first_line(exc)}") from None
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.close()
        raise StoreError(f"another writer (a vecfmt import) is loading LanceDB table {name!r}; this run changed "
                         "nothing: re-run it once the other is done") from None
    return handle


class _Cancelled(Exception):
    """Raised into Lance's read of a piece that must not be committed."""


_END = object()


class _StreamedCommit:
    """One Lance commit fed a batch at a time: ``start`` (``add`` or ``merge_insert``) runs on a thread of
    its own over a reader whose batches come from ``put``, so Lance encodes and writes while the caller
    reads on. A piece is committed by ``finish`` only; ``cancel`` (or an error) makes the reader raise,
    and Lance then commits nothing."""

    def __init__(self, start: Callable[[pa.RecordBatchReader], int], schema: pa.Schema) -> None:
        self.rows = 0
        self.queue: queue.Queue[Any] = queue.Queue(maxsize=2)
        self.version: int | None = None
        self.error: BaseException | None = None
        reader = pa.RecordBatchReader.from_batches(schema, self._batches())
        self.thread = threading.Thread(target=self._run, args=(start, reader), name="vecfmt-lance", daemon=True)
        self.thread.start()

    def _batches(self) -> Iterator[pa.RecordBatch]:
        while (item := self.queue.get()) is not _END:
            if isinstance(item, BaseException):
                raise item
            yield item

    def _run(self, start: Callable[[pa.RecordBatchReader], int], reader: pa.RecordBatchReader) -> None:
        try:
            self.version = start(reader)
        except BaseException as exc:  # handed to the caller by put/finish
            self.error = exc

    def _hand(self, item: Any) -> None:
        while self.thread.is_alive():
            try:
                self.queue.put(item, timeout=0.2)
                return
            except queue.Full:
                continue
        raise self.error or RuntimeError("Lance stopped reading before the end of the data")

    def put(self, batch: pa.RecordBatch) -> None:
        self._hand(batch)
        self.rows += batch.num_rows

    def finish(self) -> int:
        self.end()
        return self.wait()

    def end(self) -> None:
        """No more batches: Lance commits what it has read."""
        self._hand(_END)

    def wait(self) -> int:
        """The version of the commit, once made."""
        self.thread.join()
        if self.error is not None or self.version is None:
            raise self.error or RuntimeError("Lance returned no version")
        return self.version

    def cancel(self) -> None:
        with contextlib.suppress(Exception):
            self._hand(_Cancelled())
        self.thread.join()


def open_exporter(uri: StoreURI) -> LanceDBExporter:
    return LanceDBExporter(uri)


def open_importer(uri: StoreURI) -> LanceDBImporter:
    return LanceDBImporter(uri)


def _definitions(manifest: Manifest, renames: dict[str, str]) -> dict[str, Any]:
    model = manifest.embedding_model
    return {
        "vectors": [{"name": v.name, "lance_column": renames[v.column], "metric": v.metric}
                    for v in manifest.vectors],
        "embedding_model": None if model is None else model.__dict__,
    }


def _stamps(table: Any) -> dict[int, Any]:
    """Each version's commit time: tells a version this import made from a same-numbered one of a table
    another writer dropped and made again."""
    return {v["version"]: v["timestamp"] for v in table.list_versions()}


def _stamp(table: Any, version: int) -> Any:
    return _stamps(table).get(version)


def _saved_definitions(schema: pa.Schema) -> dict[str, Any]:
    raw = (schema.metadata or {}).get(SCHEMA_KEY)
    try:
        return json.loads(raw) if raw else {}
    except ValueError:
        return {}


def _check_compatible(existing: pa.Schema, wanted: pa.Schema, name: str) -> None:
    """An append or upsert writes the dump's columns as they are: the table must have exactly those, of
    the same types (a cast would turn id "007" into 7 in an integer column, and merge "1" with "01")."""
    for field in wanted:
        index = existing.get_field_index(field.name)
        if index < 0:
            raise StoreError(f"LanceDB table {name!r} has no column {field.name!r}")
        have = existing.field(index).type
        if is_vector_type(field.type):
            if not same_type(have, field.type):
                floats = pa.types.is_fixed_size_list(have) and have.value_type == pa.float32()
                shape = f"has {have.list_size} dimensions" if floats else f"is {have}"
                raise StoreError(f"LanceDB table {name!r} column {field.name!r} {shape}, the dump has "
                                 f"{field.type.list_size} float32 dimensions")
        elif not have.equals(field.type):
            raise StoreError(f"LanceDB table {name!r} column {field.name!r} is {have}, the dump's is {field.type}: "
                             "import into another table, or replace this one")
    extra = [n for n in existing.names if wanted.get_field_index(n) < 0]
    if extra:
        raise StoreError(f"LanceDB table {name!r} has columns the dump does not ({', '.join(map(repr, extra))}): "
                         "import into another table, or replace this one")


def _as_string(ids: pa.Array) -> pa.Array:
    return ids if pa.types.is_string(ids.type) else ids.cast(pa.string())


# Search-time knobs of an IVF index (and of HNSW within IVF): LanceDB's query builder methods of these names.
SEARCH_KNOBS = {
    "nprobes": KnobInfo("nprobes", (1, 2, 4, 8, 16, 32, 64, 128, 256), 20, 1, 65536,
                        "IVF partitions searched: more finds more true neighbours, each search is slower"),
    "refine_factor": KnobInfo("refine_factor", (1, 2, 5, 10, 20, 50), 0, 1, 1000,
                              "candidates re-ranked by exact distance, as a multiple of k (unset: none): more "
                              "undoes more quantisation error, each search reads more vectors"),
    "ef": KnobInfo("ef", (10, 20, 40, 80, 160, 320, 640, 1000), 0, 1, 100000,
                   "HNSW candidates per partition (unset: 1.5 x k): more finds more, each search is slower"),
}  # fmt: skip


def _checked_settings(knobs: dict[str, KnobInfo], settings: dict[str, Any], table: str) -> dict[str, int]:
    out = {}
    for name, value in settings.items():
        info = knobs.get(name)
        if info is None:
            have = ", ".join(knobs) or "none: the vector column has no IVF index"
            raise StoreError(f"LanceDB table {table!r} has no search setting {name!r} (it has: {have})")
        if isinstance(value, bool) or not isinstance(value, int | np.integer) or not info.low <= value <= info.high:
            raise StoreError(f"lancedb: search setting {name} must be a whole number between {info.low} and "
                             f"{info.high}, not {value!r}")  # fmt: skip
        out[name] = int(value)
    return out


def _search(table: Any, vector_column: str, id_column: str, metric: str, namespace_column: str | None,
            vector: np.ndarray, k: int, namespace: str, settings: dict[str, int] | None = None,
            ) -> list[tuple[str, float]]:  # fmt: skip
    """The ``k`` nearest ids and their distances, within ``namespace`` when the table has several;
    ``settings`` name query builder methods (``SEARCH_KNOBS``), checked."""
    query = (table.search(np.asarray(vector, np.float32), vector_column_name=vector_column)
             .distance_type(DISTANCE_TYPES.get(metric, "l2")).select([id_column, "_distance"]).limit(k))
    for name, value in (settings or {}).items():
        query = getattr(query, name)(value)
    if namespace_column is not None:
        query = query.where(_in_namespace(namespace_column, namespace))
    result = query.to_arrow()
    return list(zip(result.column(id_column).to_pylist(), result.column("_distance").to_pylist(), strict=True))


def _in_namespace(column: str, namespace: str) -> str:
    """A LanceDB filter for one namespace (a NULL namespace is the default one, as it is counted);
    the value is a SQL string literal with its quotes doubled."""
    quoted_column = "`" + column.replace("`", "``") + "`"
    equals = f"{quoted_column} = '" + namespace.replace("'", "''") + "'"
    return f"({equals} OR {quoted_column} IS NULL)" if namespace == "" else equals

