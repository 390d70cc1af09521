"""Writing dumps: a stream of Arrow record batches in, Parquet part files and a manifest out.

Memory stays bounded by one row group per namespace being written, whatever the dump size. Each file's
SHA-256 is computed while its bytes stream out. Several independent ``PartWriter``s (threads,
processes, machines) can write into one dump; ``commit_manifest`` then makes the dump complete.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
from collections.abc import Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from vecfmt.errors import DumpError, InvalidDataError, first_line
from vecfmt.manifest import (
    MANIFEST_NAME,
    EmbeddingModel,
    FileEntry,
    Manifest,
    Source,
    VectorSpec,
    check_manifest_schema,
)
from vecfmt.metadata import fold
from vecfmt.schema import (
    DOCUMENT,
    ID,
    METADATA,
    NAMED_VECTOR_PREFIX,
    NAN_OR_INFINITY,
    NESTED_TOO_DEEPLY,
    SPARSE_VALUES,
    VALUES,
    check_metric,
    conform,
    first_non_finite,
    is_vector_type,
    malformed_sparse_rows,
    namespace_dir,
    null_component_rows,
    parse_metadata_json,
    scan_json_value,
)
from vecfmt.storage import HashingSink, Location, lock_for_writing, resolve

MiB = 1024 * 1024
# Beside the manifest while an export runs with checkpoints; removed once the manifest is written.
EXPORT_STATE = "vecfmt-export-state.json"
JOB_STATE = "vecfmt-export-job.json"  # a partitioned export's state (vecfmt/parallel/export.py)
# What a manifest or export state may list (spec/manifest.schema.json): the only files --overwrite deletes.
_DUMP_FILE = re.compile(r"^[^/.][^/]*/[^/]+\.parquet$")
# What DumpWriter names its own part files: an interrupted export's later ones are not in its state.
_OWN_PART = re.compile(r"^[^/.][^/]*/part-\d{5}\.parquet$")


@dataclass(frozen=True)
class ParquetOptions:
    """How part files are encoded. The defaults are measured in spec/vecfmt-v1.md section 6."""

    compression: str = "zstd"
    compression_level: int | None = 1
    byte_stream_split: bool = True  # for vector columns: floats compress only once their bytes are split
    row_group_bytes: int = 64 * MiB  # of Arrow data; small store pages are buffered up to this
    # of Arrow data: one row group a file, so that a reader fetches and hashes the next file while it
    # decodes this one (benchmarks/format.py), and memory stays bounded by a few files
    max_file_bytes: int = 64 * MiB
    max_file_rows: int | None = None

    def writer_kwargs(self, schema: pa.Schema) -> dict[str, Any]:
        vector_columns = [f.name for f in schema if is_vector_type(f.type)]
        kwargs: dict[str, Any] = {
            "compression": self.compression,
            "compression_level": self.compression_level if self.compression != "none" else None,
            # Dictionary encoding and min/max statistics only pay off on the scalar columns.
            "use_dictionary": [c for c in (METADATA, DOCUMENT) if c in schema.names],
            "write_statistics": [ID],
        }
        if self.byte_stream_split and vector_columns:
            kwargs["use_byte_stream_split"] = [f"{c}.list.element" for c in vector_columns]
        return kwargs


# Threads that encode, compress, hash and sync row groups for every PartWriter of the process: one file
# each at a time (Arrow's Parquet writer uses one core per file), as many as the cores, from 2 (measured
# here: reading and encoding overlap even on one core) to 4 (each holds a row group in memory).
ENCODING_THREADS = min(4, max(2, os.cpu_count() or 2))
_parquet_threads = ThreadPoolExecutor(max_workers=ENCODING_THREADS, thread_name_prefix="vecfmt-parquet")


@dataclass
class _OpenFile:
    """A part file being written: touched only by the job in flight for it (jobs of one file run in turn)."""

    index: int
    path: str
    writer: pq.ParquetWriter | None = None
    sink: HashingSink | None = None
    rows: int = 0


class PartWriter:
    """Writes the rows of one namespace into ``<root>/<namespace dir>/<prefix>-NNNNN.parquet`` files.

    Batches must already have the dump's schema (see ``DumpWriter``, which checks them). ``close``
    returns the finished files' entries for the manifest.

    Row groups are encoded, compressed, hashed and synced on background threads while the caller reads
    the next rows from its source; both sides mostly release the GIL (Arrow, zstd, hashlib, the stores'
    native readers), so an export takes about the longer of reading and writing instead of their sum.
    Up to ``ENCODING_THREADS`` row groups are in flight, of different files (a file's row groups are
    written in order). ``files`` is complete after ``close``, ``roll(wait=True)`` or ``wait``; an error
    on a thread is raised by the next of these calls, or the next that hands over work."""

    def __init__(
        self,
        location: Location,
        namespace: str,
        schema: pa.Schema,
        options: ParquetOptions | None = None,
        prefix: str = "part",
        files: list[FileEntry] | None = None,
        align_files_to_batches: bool = False,
    ) -> None:
        self.location = location
        self.namespace = namespace
        self.schema = schema
        self.options = options or ParquetOptions()
        self.prefix = prefix
        # Finished files, in the order they were begun (an export being resumed starts with those of the
        # interrupted run).
        self.files: list[FileEntry] = list(files or [])
        # Close files only between batches, so that every finished file ends where a store's page ends
        # and an export can checkpoint there (file limits become soft by up to one batch).
        self.align_files_to_batches = align_files_to_batches
        self._pending: list[pa.RecordBatch] = []
        self._pending_bytes = 0
        self._pending_rows = 0
        # The file row groups go to next, and what has been handed over for it.
        self._current: _OpenFile | None = None
        self._file_rows = 0
        self._file_arrow_bytes = 0
        self._files_begun = len(self.files)
        self._made: list[_OpenFile] = []  # every file begun here, to remove on abort
        self._in_flight: list[tuple[_OpenFile, Future[None]]] = []
        self._finished: dict[int, FileEntry] = {}  # by the threads, moved into ``files`` by ``wait``
        self._kwargs = self.options.writer_kwargs(schema)

    @property
    def files_closed(self) -> int:
        """Files finished, or handed over to be finished (``files`` may lag until ``wait``)."""
        return self._files_begun - (1 if self._current is not None else 0)

    def write(self, batch: pa.RecordBatch) -> None:
        """Buffer rows into row groups of about ``row_group_bytes``: big batches are sliced (zero-copy),
        small store pages are gathered, so row groups do not mirror how the source paged its rows."""
        if batch.num_rows == 0:
            return
        row_bytes = max(1, batch.nbytes // batch.num_rows)
        offset = 0
        while offset < batch.num_rows:
            room = -(-(self.options.row_group_bytes - self._pending_bytes) // row_bytes)
            if self.options.max_file_rows is not None and not self.align_files_to_batches:
                room = min(room, self.options.max_file_rows - self._file_rows - self._pending_rows)
            piece = batch.slice(offset, max(1, room))
            offset += piece.num_rows
            self._pending.append(piece)
            self._pending_rows += piece.num_rows
            self._pending_bytes += piece.num_rows * row_bytes
            if piece.num_rows >= room:
                self._flush_row_group()
        if self.align_files_to_batches and self._file_full(self._pending_rows, self._pending_bytes):
            self.roll()

    def roll(self, wait: bool = False) -> None:
        """Finish the open file, pending rows included; with ``wait``, return once it is in ``files``."""
        if self._pending:
            self._flush_row_group(close_file=True)
        elif self._current is not None:
            self._hand_over(self._current, None, close_file=True)
            self._end_current()
        if wait:
            self.wait()

    def close(self) -> list[FileEntry]:
        self.roll(wait=True)
        return self.files

    def wait(self) -> None:
        """Return once everything handed over is written, raising the first error of a thread."""
        while self._in_flight:
            self._wait_oldest()
        for index in sorted(self._finished):
            self.files.append(self._finished.pop(index))

    def abandon(self) -> None:
        """Close and remove the open file only; finished files stay for a resumed export."""
        self._settle()
        self._remove(keep={entry.path for entry in self.files})

    def abort(self) -> None:
        """Close and remove every file this writer made."""
        self._settle()
        self._remove(keep=set())

    def _remove(self, keep: set[str]) -> None:
        self._pending, self._pending_bytes, self._pending_rows = [], 0, 0
        self._end_current()
        for made in self._made:  # a file whose job failed may still be open
            with contextlib.suppress(Exception):
                if made.writer is not None:
                    made.writer.close()
            with contextlib.suppress(Exception):
                if made.sink is not None:
                    made.sink.close()
        for path in ({entry.path for entry in self.files} | {made.path for made in self._made}) - keep:
            with contextlib.suppress(OSError):
                self.location.delete(path)
        self._made = []
        self.files = [entry for entry in self.files if entry.path in keep]

    def _settle(self) -> None:
        """Let the work in flight end (it cannot be interrupted inside Arrow), ignoring its errors: the
        caller is already failing or abandoning the files. Finished files are moved into ``files``."""
        while True:
            try:
                self.wait()
                return
            except Exception:
                self._in_flight.pop(0)

    def _end_current(self) -> None:
        self._current = None
        self._file_rows = self._file_arrow_bytes = 0

    def _flush_row_group(self, close_file: bool = False) -> None:
        if not self._pending:
            return
        table = pa.Table.from_batches(self._pending, schema=self.schema)
        self._pending, self._pending_bytes, self._pending_rows = [], 0, 0
        if self._current is None:
            folder = namespace_dir(self.namespace)
            path = f"{folder}/{self.prefix}-{self._files_begun:05d}.parquet"
            self._current = _OpenFile(self._files_begun, path)
            self._made.append(self._current)
            self._files_begun += 1
        self._file_rows += table.num_rows
        self._file_arrow_bytes += table.nbytes
        if not self.align_files_to_batches and self._file_full(lookahead=True):
            close_file = True
        self._hand_over(self._current, table, close_file=close_file)
        if close_file:
            self._end_current()

    def _hand_over(self, file: _OpenFile, table: pa.Table | None, *, close_file: bool) -> None:
        """Give a thread the next row group of ``file``: at most ``ENCODING_THREADS`` in flight (memory stays
        bounded by those and the one being gathered), and never two of one file at once."""
        while self._in_flight and (
            len(self._in_flight) >= ENCODING_THREADS or any(f is file for f, _ in self._in_flight)
        ):
            self._wait_oldest()
        job = _parquet_threads.submit(self._write_on_thread, file, table, close_file)
        self._in_flight.append((file, job))

    def _wait_oldest(self) -> None:
        self._in_flight[0][1].result()  # kept until it succeeds: abort() must still wait for it after a Ctrl-C
        self._in_flight.pop(0)

    def _write_on_thread(self, file: _OpenFile, table: pa.Table | None, close_file: bool) -> None:
        if table is not None:
            if file.writer is None:
                self.location.makedirs(namespace_dir(self.namespace))
                out = self.location.fs.open_output_stream(self.location.path(file.path))
                file.sink = HashingSink(out)
                file.writer = pq.ParquetWriter(file.sink, self.schema, **self._kwargs)
            file.writer.write_table(table, row_group_size=table.num_rows)
            file.rows += table.num_rows
        if close_file and file.writer is not None and file.sink is not None:
            file.writer.close()
            file.sink.close()
            self.location.sync(file.path)  # on disk before any manifest or checkpoint lists it
            entry = FileEntry(file.path, self.namespace, file.rows, file.sink.bytes, file.sink.hexdigest())
            file.writer = file.sink = None
            self._finished[file.index] = entry

    def _file_full(self, more_rows: int = 0, more_bytes: int = 0, *, lookahead: bool = False) -> bool:
        """Rows or bytes reached their limits; with ``lookahead``, bytes count as full when one more row
        group would take the file past ``max_file_bytes`` (so 64 MiB files hold one 64 MiB row group)."""
        size = self._file_arrow_bytes + more_bytes
        if lookahead:
            bytes_full = size + self.options.row_group_bytes > self.options.max_file_bytes
        else:
            bytes_full = size >= self.options.max_file_bytes
        limit_rows = self.options.max_file_rows
        return bytes_full or (limit_rows is not None and self._file_rows + more_rows >= limit_rows)


@dataclass
class _Namespace:
    part: PartWriter
    ids: list[pa.Array] = field(default_factory=list)
    rows: int = 0


class DumpWriter:
    """Writes a whole dump: one or more namespaces, then the manifest, last and atomically.

    Use as a context manager; the manifest is written on a clean exit and nothing is when an error
    escapes (the part files written so far are removed). Every batch is checked on the way in:
    vector dimensions, NaN/inf, null ids, and at the end duplicate ids within each namespace."""

    def __init__(
        self,
        uri: str,
        *,
        vectors: list[VectorSpec] | None = None,
        metric: str = "cosine",
        model: EmbeddingModel | None = None,
        source: Source | None = None,
        sparse_values: bool | None = None,
        document: bool | None = None,
        extra: dict[str, Any] | None = None,
        overwrite: bool = False,
        options: ParquetOptions | None = None,
        check_ids: bool = True,
        resumable: bool = False,
        fold_columns: bool = False,
    ) -> None:
        self.location = resolve(uri)
        # Columns the format does not know are refused, or with ``fold_columns`` kept as keys of each row's
        # metadata object (their Arrow types recorded in ``extra["folded_columns"]``); never dropped.
        self.fold_columns = fold_columns
        self.metric = check_metric(metric)
        self.options = options or ParquetOptions()
        self.check_ids = check_ids
        self._template = Manifest(
            vectors=list(vectors) if vectors else [],
            embedding_model=model,
            source=source,
            sparse_values=bool(sparse_values),
            document=bool(document),
            extra=dict(extra or {}),
        )
        self._explicit_columns = vectors is not None, sparse_values is not None, document is not None
        self._schema: pa.Schema | None = None
        self._namespaces: dict[str, _Namespace] = {}
        self.manifest: Manifest | None = None
        # With ``resumable``, part files end where the source's batches end, ``checkpoint`` records them
        # with the source's position, and an interrupted export continues from the last checkpoint.
        self.resumable = resumable
        self.cursor: dict[str, Any] | None = None
        self._lock = lock_for_writing(self.location)  # released by close() and abort()
        try:
            if resumable and self.location.exists(EXPORT_STATE) and not self.location.exists(MANIFEST_NAME):
                self._restore()
            else:
                prepare_location(self.location, overwrite)  # nothing to resume: never delete files unasked
        except BaseException:
            self._unlock()
            raise

    @property
    def rows_written(self) -> int:
        return sum(ns.rows for ns in self._namespaces.values())

    def rows_by_namespace(self) -> dict[str, int]:
        return {name: ns.rows for name, ns in self._namespaces.items()}

    def write(
        self, data: pa.RecordBatch | pa.Table | pa.RecordBatchReader | Iterable[pa.RecordBatch],
        namespace: str = "",
    ) -> None:
        if isinstance(data, (pa.Table, pa.RecordBatch, pa.RecordBatchReader)):
            if self._schema is None:
                self._schema = self._settle_schema(data.schema)  # so that even an empty table defines the dump
            self._unknown_columns(data.schema)
        for batch in _batches(data):
            self.write_batch(batch, namespace)

    def write_batch(self, batch: pa.RecordBatch, namespace: str = "") -> None:
        if self._schema is None:
            self._schema = self._settle_schema(batch.schema)
        unknown = self._unknown_columns(batch.schema)
        if unknown:
            batch = fold_into_metadata(batch, unknown)
        batch = check_batch(batch, self._schema, self._template.vectors)
        ns = self._namespaces.get(namespace)
        if ns is None:
            part = PartWriter(self.location, namespace, self._schema, self.options,
                              align_files_to_batches=self.resumable)
            ns = self._namespaces[namespace] = _Namespace(part)
        if self.check_ids:
            ns.ids.append(kept_ids(batch))
        ns.part.write(batch)
        ns.rows += batch.num_rows

    def _unknown_columns(self, schema: pa.Schema) -> list[str]:
        """The columns of ``schema`` this dump has no place for: refused, or recorded to be folded."""
        assert self._schema is not None
        unknown = [name for name in schema.names if name not in self._schema.names]
        if unknown and not self.fold_columns:
            listed = ", ".join(repr(n) for n in unknown)
            raise InvalidDataError(
                f"column{'s' if len(unknown) > 1 else ''} {listed} {'are' if len(unknown) > 1 else 'is'} not part "
                f"of this dump (its columns: {', '.join(self._schema.names)}); rename (e.g. to 'document') "
                "or drop them, or pass fold_columns=True to keep them in each row's metadata"
            )
        folded = self._template.extra.setdefault("folded_columns", {}) if unknown else {}
        for name in unknown:
            folded.setdefault(name, str(schema.field(name).type))
        return unknown

    def close(self) -> Manifest:
        """Finish every part file, check ids, and commit the manifest."""
        if self.manifest is not None:
            return self.manifest
        files: list[FileEntry] = []
        for namespace, ns in self._namespaces.items():
            if self.check_ids:
                check_unique_ids(pa.chunked_array(ns.ids, pa.string()), namespace)
                ns.ids = []
            files.extend(ns.part.close())
        self.manifest = commit_manifest(self.location, self._template, files, check_files=False)
        if self.resumable and self.location.exists(EXPORT_STATE):
            self.location.delete(EXPORT_STATE)
        self._unlock()
        return self.manifest

    def abort(self) -> None:
        """Remove what was written; a resumable writer keeps the files of its last checkpoint."""
        try:
            for ns in self._namespaces.values():
                if self.resumable:
                    ns.part.abandon()
                else:
                    ns.part.abort()
        finally:
            self._unlock()

    def _unlock(self) -> None:
        if self._lock is not None:
            self._lock.close()
            self._lock = None

    @property
    def files_finished(self) -> int:
        return sum(ns.part.files_closed for ns in self._namespaces.values())

    def checkpoint(self, cursor: dict[str, Any]) -> None:
        """Finish every open file, then record the finished files with ``cursor`` (the source's position
        right after the last row written) so that an interrupted export can continue from here."""
        for ns in self._namespaces.values():
            ns.part.roll(wait=True)
        files = [f for ns in self._namespaces.values() for f in ns.part.files]
        sync_folders(self.location, files)
        state = {
            "definition": self._definition(),
            "files": [asdict(f) for f in files],
            "cursor": cursor,
        }
        self.location.write_atomic(EXPORT_STATE, json.dumps(state).encode())
        self.cursor = cursor

    def _definition(self) -> dict[str, Any]:
        t = self._template
        return {"vectors": [asdict(v) for v in t.vectors], "sparse_values": t.sparse_values, "document": t.document}

    def _restore(self) -> None:
        """Take up an interrupted export: keep the files of its last checkpoint, drop anything later."""
        state = json.loads(self.location.read_bytes(EXPORT_STATE).to_pybytes())
        if state["definition"] != self._definition():
            raise DumpError(f"{self.location.uri}: the source's vectors or columns changed since the "
                            "interrupted export; start again with overwrite")
        files = [FileEntry(**f) for f in state["files"]]
        sizes = self.location.sizes()
        for f in files:
            if sizes.get(f.path) != f.bytes or self.location.sha256(f.path) != f.sha256:
                raise DumpError(f"cannot resume: {f.path} is missing or changed since the checkpoint")
        kept = {f.path for f in files}
        for relative in sizes:
            if relative not in kept and _OWN_PART.match(relative):  # what this writer names its files
                self.location.delete(relative)  # written after the last checkpoint
        self._schema = self._template.arrow_schema()
        for namespace in dict.fromkeys(f.namespace for f in files):
            finished = [f for f in files if f.namespace == namespace]
            part = PartWriter(self.location, namespace, self._schema, self.options, files=finished,
                              align_files_to_batches=True)
            self._namespaces[namespace] = _Namespace(part, rows=sum(f.rows for f in finished))
        for f in files:
            ns = self._namespaces[f.namespace]
            if self.check_ids:
                ids = pq.read_table(self.location.path(f.path), columns=[ID], filesystem=self.location.fs)
                ns.ids.extend(ids.column(ID).chunks)
        self.cursor = state["cursor"]

    def __enter__(self) -> DumpWriter:
        return self

    def __exit__(self, exc_type: object, exc: object, tb: object) -> None:
        if exc_type is None:
            try:
                self.close()
            except BaseException:
                self.abort()
                raise
        else:
            self.abort()

    def _settle_schema(self, schema: pa.Schema) -> pa.Schema:
        """Fix the dump's columns from the first batch, unless they were given explicitly."""
        t = self._template
        given_vectors, given_sparse, given_document = self._explicit_columns
        if not given_vectors:
            t.vectors = infer_vectors(schema, self.metric)
        if not given_sparse:
            t.sparse_values = SPARSE_VALUES in schema.names
        if not given_document:
            t.document = DOCUMENT in schema.names
        if ID not in schema.names:
            raise InvalidDataError("the data has no 'id' column")
        return t.arrow_schema()


def infer_vectors(schema: pa.Schema, metric: str) -> list[VectorSpec]:
    """Vector definitions from column names: ``values`` is the primary vector, ``values_NAME`` others."""
    specs = []
    for f in schema:
        if f.name != VALUES and not f.name.startswith(NAMED_VECTOR_PREFIX):
            continue
        t = f.type
        if pa.types.is_fixed_size_list(t):
            dimension = t.list_size
        else:
            raise InvalidDataError(
                f"column {f.name!r} must be fixed_size_list<float32>[dim] to infer its dimension "
                f"(it is {t}); pass vectors=[VectorSpec(...)] to cast a variable-length list"
            )
        name = "default" if f.name == VALUES else f.name[len(NAMED_VECTOR_PREFIX):]
        specs.append(VectorSpec(name=name, column=f.name, dimension=dimension, metric=metric))
    specs.sort(key=lambda s: s.column != VALUES)
    if not specs and SPARSE_VALUES not in schema.names:
        raise InvalidDataError("the data has neither a 'values' vector column nor 'sparse_values'")
    if specs and specs[0].column != VALUES:
        raise InvalidDataError(f"named vectors ({specs[0].column!r}, ...) need a primary vector in 'values'")
    return specs


def check_batch(batch: pa.RecordBatch, schema: pa.Schema, vectors: list[VectorSpec]) -> pa.RecordBatch:
    """Conform a batch to the dump schema and reject what the format forbids."""
    batch = conform(batch, schema)
    ids = batch.column(ID)
    if ids.null_count:
        raise InvalidDataError(f"id is null in row {pc.index(pc.is_null(ids), True).as_py()} of a batch")
    for spec in vectors:
        column = batch.column(spec.column)
        if spec.column == VALUES and column.null_count:
            row = pc.index(pc.is_null(column), True).as_py()
            raise InvalidDataError(f"vector {spec.name!r} is null for id {ids[row].as_py()!r}")
        holes = null_component_rows(column)
        if holes.any():
            raise InvalidDataError(
                f"vector {spec.name!r} has a null component for id {ids[int(np.argmax(holes))].as_py()!r}"
            )
        row = first_non_finite(column)
        if row is not None:
            raise InvalidDataError(f"vector {spec.name!r} holds NaN or inf for id {ids[row].as_py()!r}")
    bad = first_bad_metadata(batch.column(METADATA))
    if bad is not None:
        row, why = bad
        raise InvalidDataError(f"metadata of id {ids[row].as_py()!r} {why}")
    if SPARSE_VALUES in batch.schema.names:
        bad = malformed_sparse_rows(batch.column(SPARSE_VALUES))
        if bad.any():
            raise InvalidDataError(
                f"sparse_values malformed for id {ids[int(np.argmax(bad))].as_py()!r} (indices and values must "
                "have equal lengths, indices strictly increase, values be finite)"
            )
    return batch


def first_bad_metadata(metadata: pa.Array) -> tuple[int, str] | None:
    """The first row whose metadata text is not a JSON object (RFC 8259: no NaN or Infinity), and why.

    Texts not starting with ``{`` are refused without parsing (a whole-column scan); the others need a
    full parse to be sure, one row at a time as Python's parser works (about 1.5 µs for a typical
    150-byte object)."""
    if metadata.null_count == len(metadata):
        return None
    odd = pc.fill_null(pc.invert(pc.match_substring_regex(metadata, r"^[ \t\n\r]*\{")), False)
    first_odd = pc.index(odd, True).as_py() if pc.any(odd).as_py() else len(metadata)
    # rows before the first odd one are the only ones that may hold an earlier culprit
    texts = metadata.slice(0, first_odd).to_pylist()
    if _all_plain_objects(texts):
        texts = []
    for row, text in enumerate(texts):
        if text is None:
            continue
        try:
            parse_metadata_json(text)  # starts with "{": an object once it parses
        except ValueError as exc:
            return row, _why(text, str(exc))
    if first_odd < len(metadata):
        return first_odd, _why(metadata[first_odd].as_py(), "")
    return None


def _all_plain_objects(texts: list[str | None]) -> bool:
    """The common case in one pass: every text (each starting with "{") is one JSON object with nothing
    after it. Calls the json module's C scanner directly, a third of ``json.loads``'s per-call cost; any
    doubt (an error, trailing whitespace) leaves it to the row-by-row parse, which says why."""
    try:
        for text in texts:  # a loop, not a generator: StopIteration inside one becomes a RuntimeError
            if text is not None and scan_json_value(text, 0)[1] != len(text):
                return False
    except (ValueError, StopIteration, RecursionError):
        return False
    return True


def _why(text: str, problem: str) -> str:
    if problem in (NAN_OR_INFINITY, NESTED_TOO_DEEPLY):
        return problem.removeprefix("metadata ")
    shown = text if len(text) <= 40 else text[:40] + "..."
    return f"is not a JSON object: {shown!r}"


def fold_into_metadata(batch: pa.RecordBatch, names: list[str]) -> pa.RecordBatch:
    """Move the columns ``names`` into each row's metadata object, by the rules store modules follow
    (spec 3.4.1, ``vecfmt.metadata.fold``: a folded key wins, nulls are left out)."""
    own = batch.column(METADATA) if METADATA in batch.schema.names else None
    metadata = fold(batch.column(ID), own, METADATA, batch.select(names))
    kept = [name for name in batch.schema.names if name not in names and name != METADATA]
    return pa.RecordBatch.from_arrays([*(batch.column(n) for n in kept), metadata], names=[*kept, METADATA])


def kept_ids(batch: pa.RecordBatch) -> pa.Array:
    """A copy of the batch's ids, to keep for the duplicate check: the column itself can keep the whole
    batch alive (a batch from a store's native reader, Lance's, is released as one), which held every
    vector of an export in memory until the end."""
    return pa.concat_arrays([batch.column(ID)])


def repeated_values(values: pa.ChunkedArray | pa.Array) -> pa.Array:
    """The values that occur more than once, in order of first occurrence (a null counts as one value); empty
    when none does. First ``unique``, which on a million string ids is 1.7-3.5x faster than ``count_distinct``
    (pyarrow 26): every export and delta checks its ids, and they are nearly always distinct."""
    if len(values) == 0 or len(pc.unique(values)) == len(values):
        return pa.array([], values.type)
    counts = pc.value_counts(values)
    return counts.filter(pc.greater(counts.field("counts"), 1)).field("values")


def check_unique_ids(ids: pa.ChunkedArray | pa.Array, namespace: str) -> None:
    dupes = repeated_values(ids)
    if not len(dupes):
        return
    shown = ", ".join(repr(v) for v in dupes.slice(0, 3).to_pylist())
    more = f" and {len(dupes) - 3} more" if len(dupes) > 3 else ""
    raise InvalidDataError(f"duplicate ids in namespace {namespace!r}: {shown}{more}")


def prepare_location(location: Location, overwrite: bool) -> None:
    """Refuse to write over an existing dump unless asked to. When asked, delete only what the old
    manifest (or an interrupted export's state) lists, the old manifest first so that the old dump is
    never mistaken for the new one; a folder holding neither is not a dump and is never emptied."""
    existing = location.listdir()
    if not existing:
        location.makedirs()
        return
    has_manifest, has_state = MANIFEST_NAME in existing, EXPORT_STATE in existing
    if not (has_manifest or has_state):
        raise DumpError(f"{location.uri} holds files but no manifest (not a vecfmt dump, or the leftovers of an "
                        "interrupted write): not deleting them; remove them yourself or choose another folder")
    if not overwrite:
        what = "a dump" if has_manifest else "an interrupted export (pass resume to continue it)"
        raise DumpError(f"{location.uri} already holds {what}; pass overwrite to replace it")
    listed = {path for name in (MANIFEST_NAME, EXPORT_STATE) if name in existing
              for path in _listed_files(location, name)}
    if has_state:  # files written after the last checkpoint, as a resume would delete them (no strays left)
        listed |= {path for path in existing if _OWN_PART.match(path)}
    if has_manifest:
        location.delete(MANIFEST_NAME)
    for relative in sorted(listed & set(existing)):
        location.delete(relative)
    if has_state:
        location.delete(EXPORT_STATE)
    location.makedirs()


def _listed_files(location: Location, name: str) -> list[str]:
    """The data files an old manifest or export state lists, read leniently (any version), so that
    overwrite deletes them and nothing else."""
    try:
        document = json.loads(location.read_bytes(name).to_pybytes())
        # A delta (format 1.1) also lists its deletes and row digests files.
        listed = [*document["files"], *document.get("deletes", []), *(document.get("digests") or {}).get("files", [])]
        paths = [entry["path"] for entry in listed]
    except (ValueError, KeyError, TypeError) as exc:
        raise DumpError(f"{location.uri}/{name} is unreadable ({first_line(exc)}), so which files belong to the "
                        "old dump is unknown: not deleting anything; remove it yourself") from None
    return [p for p in paths if isinstance(p, str) and _DUMP_FILE.match(p)]


def sync_folders(location: Location, files: list[FileEntry]) -> None:
    """Make the files' folder entries durable (the files themselves were synced as they closed), then
    the root's: what must hold before a manifest or checkpoint vouches for them (spec 7.1)."""
    for folder in sorted({f.path.rpartition("/")[0] for f in files} - {""}):
        location.sync(folder)
    location.sync()


def commit_manifest(
    location: Location | str,
    template: Manifest,
    files: list[FileEntry],
    *,
    check_files: bool = True,
    check_ids: bool = False,
) -> Manifest:
    """Make a dump complete: write ``manifest.json`` listing ``files`` (from one or many PartWriters).

    With ``check_files`` each file's size is confirmed first (cheap); with ``check_ids`` the id columns
    are read back to prove ids unique per namespace across all parts."""
    if isinstance(location, str):
        location = resolve(location)
    paths = [f.path for f in files]
    if len(set(paths)) != len(paths):
        raise DumpError("two part writers produced the same file name; give each a distinct prefix")
    if check_files:
        for f in files:
            size = location.size(f.path)
            if size != f.bytes:
                raise DumpError(f"part file {f.path} is missing or its size differs from its writer's report")
    manifest = template.with_files(files)
    if check_ids:
        for namespace in manifest.namespace_names():
            ids = [
                pq.read_table(location.path(f.path), columns=[ID], filesystem=location.fs).column(ID)
                for f in manifest.files_of(namespace)
            ]
            check_unique_ids(pa.chunked_array([c for col in ids for c in col.chunks], pa.string()), namespace)
    check_manifest_schema(manifest.to_dict())
    sync_folders(location, files)
    location.write_atomic(MANIFEST_NAME, manifest.to_json().encode())
    return manifest


def write_dump(
    uri: str,
    data: pa.Table | pa.RecordBatch | pa.RecordBatchReader | Iterable[pa.RecordBatch],
    *,
    namespace: str = "",
    metric: str = "cosine",
    model: EmbeddingModel | None = None,
    source: Source | None = None,
    vectors: list[VectorSpec] | None = None,
    overwrite: bool = False,
    options: ParquetOptions | None = None,
    fold_columns: bool = False,
) -> Manifest:
    """Write ``data`` (one namespace) as a complete dump at ``uri`` and return its manifest. Columns the
    format does not know are refused, or with ``fold_columns`` kept in each row's metadata."""
    with DumpWriter(
        uri, metric=metric, model=model, source=source, vectors=vectors, overwrite=overwrite, options=options,
        fold_columns=fold_columns,
    ) as writer:
        writer.write(data, namespace)
    assert writer.manifest is not None
    return writer.manifest


def _batches(
    data: pa.RecordBatch | pa.Table | pa.RecordBatchReader | Iterable[pa.RecordBatch],
) -> Iterator[pa.RecordBatch]:
    if isinstance(data, pa.RecordBatch):
        yield data
    elif isinstance(data, pa.Table):
        yield from data.to_batches()
    else:
        yield from data
