"""Reading dumps: manifest first, then Parquet files streamed as record batches, checked on the way.

A dump without a manifest is incomplete and refused. By default every file's size, SHA-256, row count
and schema are checked before any of its rows is decoded. Files are loaded by worker threads a few at
a time (hashlib and Parquet decoding release the GIL), so checking costs little wall time.
"""

from __future__ import annotations

import hashlib
import os
from collections import deque
from collections.abc import Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as pads
import pyarrow.parquet as pq

from vecfmt.errors import DumpError, first_line
from vecfmt.manifest import MANIFEST_NAME, FileEntry, Manifest
from vecfmt.schema import is_vector_type, same_type, vectors_numpy
from vecfmt.storage import Location, resolve

# Threads that fetch, hash and decode files: as many as the cores, at least 2 (measured on 2 cores) and at
# most 8 (each holds a file in memory). Files in flight: one more than the threads, so that they stay
# busy while the consumer works on the one before.
LOADER_THREADS = min(8, max(2, os.cpu_count() or 2))
READ_AHEAD = LOADER_THREADS + 1
_loader = ThreadPoolExecutor(max_workers=LOADER_THREADS, thread_name_prefix="vecfmt-read")


def _sha256(buffer: pa.Buffer) -> str:
    return hashlib.sha256(memoryview(buffer)).hexdigest()  # hashlib releases the GIL on large buffers


class Dump:
    """An open, complete dump: its manifest and its files."""

    def __init__(self, location: Location, manifest: Manifest) -> None:
        self.location = location
        self.manifest = manifest
        self.schema = manifest.arrow_schema()

    @classmethod
    def open(cls, uri: str, *, check_files: bool = True) -> Dump:
        """Open the dump at ``uri``. With ``check_files`` every listed file must exist with its size."""
        location = resolve(uri)
        try:
            raw = location.read_bytes(MANIFEST_NAME)
        except FileNotFoundError:
            if location.is_dir():
                raise DumpError(
                    f"{location.uri} has no {MANIFEST_NAME}: not a complete vecfmt dump "
                    "(an interrupted write leaves none)"
                ) from None
            raise DumpError(f"{location.uri} does not exist") from None
        except OSError as exc:
            raise DumpError(f"cannot read {location.uri}/{MANIFEST_NAME}: {first_line(exc)}") from None
        manifest = Manifest.from_json(raw.to_pybytes())
        dump = cls(location, manifest)
        if check_files:
            dump.check_sizes()
        return dump

    @property
    def uri(self) -> str:
        return self.location.uri

    @property
    def namespaces(self) -> list[str]:
        return self.manifest.namespace_names()

    def check_sizes(self) -> None:
        """Every listed file exists with the size the manifest says (one listing, cheap on S3 too)."""
        for entry, problem in self.size_problems():
            raise DumpError(f"{entry.path}: {problem}")

    def size_problems(self) -> list[tuple[FileEntry, str]]:
        """Listed files missing or of another size: part files, and a delta's deletes and digests files."""
        sizes = self.location.sizes()
        problems = []
        for entry in [*self.manifest.files, *self.manifest.deletes, *self.manifest.digest_files]:
            size = sizes.get(entry.path)
            if size is None:
                problems.append((entry, "listed in the manifest but missing"))
            elif size != entry.bytes:
                problems.append((entry, f"is {size} bytes, the manifest says {entry.bytes} (truncated or altered)"))
        return problems

    # --- reading ------------------------------------------------------------------------------

    def files(self, namespace: str | None = None) -> list[FileEntry]:
        if namespace is None:
            return list(self.manifest.files)
        if namespace not in self.namespaces:
            raise DumpError(f"the dump has no namespace {namespace!r} (it has {self.namespaces})")
        return self.manifest.files_of(namespace)

    def batches(
        self,
        namespace: str | None = None,
        *,
        columns: Sequence[str] | None = None,
        batch_size: int | None = None,
        verify: bool = True,
    ) -> Iterator[pa.RecordBatch]:
        """Stream the rows of one namespace (or of all, in manifest order, when None)."""
        for _, batch in self.stream(self.files(namespace), columns=columns, batch_size=batch_size, verify=verify):
            yield batch

    def scan(
        self, *, columns: Sequence[str] | None = None, batch_size: int | None = None, verify: bool = True
    ) -> Iterator[tuple[str, pa.RecordBatch]]:
        """Every row of the dump as ``(namespace, batch)`` pairs, in manifest order."""
        for entry, batch in self.stream(self.manifest.files, columns=columns, batch_size=batch_size, verify=verify):
            yield entry.namespace, batch

    def schema_of(self, columns: Sequence[str] | None = None) -> pa.Schema:
        """The dump's schema, or the part of it that ``columns`` select."""
        return self.schema if columns is None else pa.schema([self.schema.field(c) for c in columns])

    def table(self, namespace: str | None = None, *, columns: Sequence[str] | None = None) -> pa.Table:
        return pa.Table.from_batches(list(self.batches(namespace, columns=columns)), schema=self.schema_of(columns))

    def file_batches(
        self,
        entry: FileEntry,
        *,
        columns: Sequence[str] | None = None,
        batch_size: int | None = None,
        verify: bool = True,
        conform: bool = True,
    ) -> Iterator[pa.RecordBatch]:
        """The batches of one file, checked (see ``load_file``)."""
        table = self.load_file(entry, columns=columns, verify=verify, conform=conform)
        yield from table.to_batches(max_chunksize=batch_size)

    def stream(
        self,
        entries: Sequence[FileEntry],
        *,
        columns: Sequence[str] | None = None,
        batch_size: int | None = None,
        verify: bool = True,
    ) -> Iterator[tuple[FileEntry, pa.RecordBatch]]:
        """The batches of these files, in their order, with the file each comes from. Files are loaded
        (read, hashed, decoded) by worker threads, READ_AHEAD at a time: they decode in parallel like a
        multi-threaded read_table, while memory stays bounded by a few files (64 MiB each by default)."""
        pending: deque[tuple[FileEntry, Future[pa.Table]]] = deque()
        upcoming = iter(entries)
        try:
            while True:
                while len(pending) < READ_AHEAD and (entry := next(upcoming, None)) is not None:
                    pending.append((entry, _loader.submit(self.load_file, entry, columns=columns, verify=verify)))
                if not pending:
                    return
                entry, loading = pending.popleft()
                for batch in loading.result().to_batches(max_chunksize=batch_size):
                    yield entry, batch
        finally:
            for _, loading in pending:
                loading.cancel()

    def load_file(
        self, entry: FileEntry, *, columns: Sequence[str] | None = None, verify: bool = True, conform: bool = True
    ) -> pa.Table:
        """One whole file, after checking it against the manifest: size, SHA-256 (before any row is
        decoded, with ``verify``), row count and schema. With ``conform`` it comes in the manifest's exact
        schema (another tool's list child names and nullability are cast away; a null where the format
        forbids one is refused); without, as stored (``validate`` reports such rows itself)."""
        path = self.location.path(entry.path)
        try:
            if verify:
                buffer = self.location.read_bytes(entry.path)
                if buffer.size != entry.bytes:
                    raise DumpError(f"{entry.path} is {buffer.size} bytes, the manifest says {entry.bytes} "
                                    "(truncated or altered)")
                if _sha256(buffer) != entry.sha256:
                    raise DumpError(f"{entry.path} is corrupt: its SHA-256 differs from the manifest's")
                parquet = pq.ParquetFile(pa.BufferReader(buffer))
            else:
                parquet = pq.ParquetFile(self.location.fs.open_input_file(path))
            self._check_file_schema(entry, parquet)
            wanted = self.schema_of(columns)
            table = parquet.read(columns=wanted.names, use_threads=False)  # in the manifest's order
            return table if not conform or table.schema == wanted else _conform(entry, table, wanted)
        except FileNotFoundError:
            raise DumpError(f"{entry.path} is listed in the manifest but missing") from None
        except (pa.ArrowInvalid, OSError) as exc:
            raise DumpError(f"{entry.path} is not readable Parquet: {first_line(exc)}") from None

    def _check_file_schema(self, entry: FileEntry, parquet: pq.ParquetFile) -> None:
        rows = parquet.metadata.num_rows
        if rows != entry.rows:
            raise DumpError(f"{entry.path} holds {rows} rows, the manifest says {entry.rows}")
        schema = parquet.schema_arrow
        # exactly the manifest's columns (spec 7.2): an extra one may be data the manifest does not vouch for
        extra = [name for name in schema.names if name not in self.schema.names]
        if extra:
            raise DumpError(f"{entry.path} has a column {extra[0]!r} the manifest does not list")
        for field in self.schema:
            index = schema.get_field_index(field.name)
            if index < 0:
                raise DumpError(f"{entry.path} has no column {field.name!r}")
            found = schema.field(index).type
            if not same_type(found, field.type):
                if is_vector_type(field.type) and is_vector_type(found):
                    raise DumpError(f"{entry.path} column {field.name!r} has {found.list_size} dimensions, "
                                    f"the manifest says {field.type.list_size}")
                raise DumpError(f"{entry.path} column {field.name!r} is {found}, the manifest says {field.type}")
        if schema.names != self.schema.names:
            raise DumpError(f"{entry.path} has its columns in another order than the manifest's: "
                            f"{', '.join(schema.names)}")

    # --- helpers for users ----------------------------------------------------------------------

    def vectors(self, batch: pa.RecordBatch | pa.Table, name: str | None = None) -> np.ndarray:
        """The ``(n, dim)`` float32 NumPy view of a batch's vectors, sharing the Arrow buffer."""
        return vectors_numpy(batch.column(self.manifest.vector(name).column))

    def matrix(self, namespace: str | None = None, name: str | None = None, *, verify: bool = True) -> np.ndarray:
        """All vectors of a namespace (or of the dump) as one ``(n, dim)`` float32 array, filled batch by
        batch as the files stream past (n is known from the manifest, so nothing is concatenated)."""
        spec = self.manifest.vector(name)
        rows = sum(f.rows for f in self.files(namespace))
        out = np.empty((rows, spec.dimension), dtype=np.float32)
        position = 0
        for batch in self.batches(namespace, columns=[spec.column], verify=verify):
            out[position:position + batch.num_rows] = vectors_numpy(batch.column(0))
            position += batch.num_rows
        return out

    def dataset(self, namespace: str | None = None) -> pads.Dataset:
        """The dump (or one namespace) as a ``pyarrow.dataset`` for DuckDB, polars and friends."""
        paths = [self.location.path(f.path) for f in self.files(namespace)]
        return pads.dataset(paths, schema=self.schema, format="parquet", filesystem=self.location.fs)


def _conform(entry: FileEntry, table: pa.Table, schema: pa.Schema) -> pa.Table:
    """A file's table in the dump's schema: the types are the same by meaning (checked before), so the
    cast only renames list children and tightens nullability; a null the format forbids is refused."""
    for field in schema:
        column = table.column(field.name)
        if not field.nullable and column.null_count:
            row = pc.index(pc.is_null(column), True).as_py()
            raise DumpError(f"{entry.path} row {row}: {field.name} is null")
    return table.cast(schema)


def open_dump(uri: str, *, check_files: bool = True) -> Dump:
    return Dump.open(uri, check_files=check_files)

