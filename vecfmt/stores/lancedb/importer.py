"""The LanceDB ``Importer``: streamed commits in dump order, resume by a progress tag, replace by a staged
table, an index after the load."""

from __future__ import annotations

import contextlib
import json
import queue
import sys
import threading
import uuid
from collections.abc import Callable, Iterator
from datetime import timedelta
from typing import IO, Any

import numpy as np
import pyarrow as pa

from vecfmt.errors import StoreError, first_line
from vecfmt.manifest import Manifest
from vecfmt.schema import ID, VALUES, is_vector_type, same_type
from vecfmt.storage import secrets_of
from vecfmt.stores.base import IfExists, StoreURI, require_sdk
from vecfmt.stores.lancedb.connect import (
    DISTANCE_TYPES,
    NAMESPACE_COLUMN,
    PRIMARY_COLUMN,
    SCHEMA_KEY,
    SCHEME,
    _connect,
    _identity,
    _lance_message,
    _lock_table,
    _saved_definitions,
    _table_names,
)
from vecfmt.stores.lancedb.search import _search

# Index after import: "auto" builds IVF_PQ from INDEX_MIN_ROWS rows on (LanceDB's docs: below about 100,000
# rows a flat scan is fast enough and exact); or a named LanceDB index type, or none.
INDEX_TYPES = {"auto": "", "none": "", "ivf_pq": "IvfPq", "ivf_flat": "IvfFlat", "ivf_sq": "IvfSq",
               "ivf_hnsw_sq": "IvfHnswSq", "ivf_hnsw_pq": "IvfHnswPq", "ivf_hnsw_flat": "IvfHnswFlat"}  # lancedb.index
INDEX_MIN_ROWS = 100_000
STAGING_SUFFIX = "-vecfmt-staging"
# optimize() prunes versions older than this; vecfmt compacts only and never prunes a user's history.
KEEP_VERSIONS = timedelta(days=100 * 365)
# The progress record of an import: a tag on the version of its last commit (a tag adds no version).
PROGRESS_TAG = "vecfmt-import"


def _commit_rows() -> int:
    """``COMMIT_ROWS`` as the package holds it now (the setting lives on ``vecfmt.stores.lancedb``)."""
    return sys.modules[__package__].COMMIT_ROWS


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
        if self.piece.rows >= _commit_rows():
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

