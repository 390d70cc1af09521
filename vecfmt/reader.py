"""Reading dumps: manifest first, then Parquet files streamed as record batches, checked on the way.

A dump without a manifest is incomplete and refused. By default every file's size, SHA-256, row count
and schema are checked as it is read; the checksum runs in a thread beside the Parquet decoding, and
no batch of a file is handed out before its checksum has matched.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor

import numpy as np
import pyarrow as pa
import pyarrow.dataset as pads
import pyarrow.parquet as pq

from vecfmt.errors import DumpError
from vecfmt.manifest import MANIFEST_NAME, FileEntry, Manifest
from vecfmt.schema import is_vector_type, same_type, vectors_numpy
from vecfmt.storage import Location, resolve

_hasher = ThreadPoolExecutor(max_workers=1, thread_name_prefix="vecfmt-sha256")
_prefetcher = ThreadPoolExecutor(max_workers=1, thread_name_prefix="vecfmt-prefetch")


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
            raise DumpError(f"cannot read {location.uri}/{MANIFEST_NAME}: {_line(exc)}") from None
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
        sizes = self.location.sizes()
        problems = []
        for entry in self.manifest.files:
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
        for entry, fetched in self._prefetched(self.files(namespace), verify):
            yield from self.file_batches(entry, columns=columns, batch_size=batch_size, verify=verify,
                                         fetched=fetched)

    def scan(
        self, *, columns: Sequence[str] | None = None, batch_size: int | None = None, verify: bool = True
    ) -> Iterator[tuple[str, pa.RecordBatch]]:
        """Every row of the dump as ``(namespace, batch)`` pairs, in manifest order."""
        for entry, fetched in self._prefetched(self.manifest.files, verify):
            for batch in self.file_batches(entry, columns=columns, batch_size=batch_size, verify=verify,
                                           fetched=fetched):
                yield entry.namespace, batch

    def _prefetched(
        self, entries: Sequence[FileEntry], verify: bool
    ) -> Iterator[tuple[FileEntry, Future[tuple[pa.Buffer, str]] | None]]:
        """Each file with, from the second on, its bytes and SHA-256 fetched in the background while the
        one before is decoded (the pipeline that keeps verification off the critical path)."""
        ahead: Future[tuple[pa.Buffer, str]] | None = None
        for i, entry in enumerate(entries):
            fetched = ahead
            ahead = None
            if verify and i + 1 < len(entries):
                ahead = _prefetcher.submit(self._read_and_hash, entries[i + 1])
            yield entry, fetched

    def _read_and_hash(self, entry: FileEntry) -> tuple[pa.Buffer, str]:
        buffer = self.location.read_bytes(entry.path)
        return buffer, _sha256(buffer) if buffer.size == entry.bytes else ""

    def table(self, namespace: str | None = None, *, columns: Sequence[str] | None = None) -> pa.Table:
        schema = self.schema if columns is None else pa.schema([self.schema.field(c) for c in columns])
        return pa.Table.from_batches(list(self.batches(namespace, columns=columns)), schema=schema)

    def file_batches(
        self,
        entry: FileEntry,
        *,
        columns: Sequence[str] | None = None,
        batch_size: int | None = None,
        verify: bool = True,
        fetched: Future[tuple[pa.Buffer, str]] | None = None,
    ) -> Iterator[pa.RecordBatch]:
        """The batches of one file, row group by row group. Unless ``fetched`` (bytes and checksum read
        ahead) is given, the checksum thread runs beside the decoding of the first row group."""
        checksum: Future[str] | None = None
        try:
            if verify:
                if fetched is not None:
                    buffer, digest = fetched.result()
                    checksum = Future()
                    checksum.set_result(digest)
                else:
                    buffer = self.location.read_bytes(entry.path)
                if buffer.size != entry.bytes:
                    raise DumpError(
                        f"{entry.path} is {buffer.size} bytes, the manifest says {entry.bytes} "
                        "(truncated or altered)"
                    )
                if checksum is None:
                    checksum = _hasher.submit(_sha256, buffer)
                parquet = pq.ParquetFile(pa.BufferReader(buffer))
            else:
                parquet = pq.ParquetFile(self.location.fs.open_input_file(self.location.path(entry.path)))
        except FileNotFoundError:
            raise DumpError(f"{entry.path} is listed in the manifest but missing") from None
        except (pa.ArrowInvalid, OSError) as exc:
            self._await_checksum(entry, checksum)
            raise DumpError(f"{entry.path} is not readable Parquet: {_line(exc)}") from None
        self._check_file_schema(entry, parquet, checksum)
        wanted = list(columns) if columns is not None else None
        for group in range(parquet.num_row_groups):
            try:
                table = parquet.read_row_group(group, columns=wanted)
            except (pa.ArrowInvalid, OSError) as exc:
                self._await_checksum(entry, checksum)
                raise DumpError(f"{entry.path} is corrupt: {_line(exc)}") from None
            if checksum is not None:
                self._await_checksum(entry, checksum)
                checksum = None
            yield from table.to_batches(max_chunksize=batch_size)

    def _check_file_schema(self, entry: FileEntry, parquet: pq.ParquetFile, checksum: Future[str] | None) -> None:
        rows = parquet.metadata.num_rows
        if rows != entry.rows:
            self._await_checksum(entry, checksum)
            raise DumpError(f"{entry.path} holds {rows} rows, the manifest says {entry.rows}")
        schema = parquet.schema_arrow
        for field in self.schema:
            index = schema.get_field_index(field.name)
            if index < 0:
                self._await_checksum(entry, checksum)
                raise DumpError(f"{entry.path} has no column {field.name!r}")
            found = schema.field(index).type
            if not same_type(found, field.type):
                self._await_checksum(entry, checksum)
                if is_vector_type(field.type) and is_vector_type(found):
                    raise DumpError(f"{entry.path} column {field.name!r} has {found.list_size} dimensions, "
                                    f"the manifest says {field.type.list_size}")
                raise DumpError(f"{entry.path} column {field.name!r} is {found}, the manifest says {field.type}")

    @staticmethod
    def _await_checksum(entry: FileEntry, checksum: Future[str] | None) -> None:
        """A checksum mismatch explains any other failure best, so it is reported first."""
        if checksum is not None and checksum.result() != entry.sha256:
            raise DumpError(f"{entry.path} is corrupt: its SHA-256 differs from the manifest's")

    # --- helpers for users ----------------------------------------------------------------------

    def vectors(self, batch: pa.RecordBatch | pa.Table, name: str | None = None) -> np.ndarray:
        """The ``(n, dim)`` float32 NumPy view of a batch's vectors, sharing the Arrow buffer."""
        return vectors_numpy(batch.column(self.manifest.vector(name).column))

    def dataset(self, namespace: str | None = None) -> pads.Dataset:
        """The dump (or one namespace) as a ``pyarrow.dataset`` for DuckDB, polars and friends."""
        paths = [self.location.path(f.path) for f in self.files(namespace)]
        return pads.dataset(paths, schema=self.schema, format="parquet", filesystem=self.location.fs)


def open_dump(uri: str, *, check_files: bool = True) -> Dump:
    return Dump.open(uri, check_files=check_files)


def _line(exc: BaseException) -> str:
    text = str(exc).strip() or type(exc).__name__
    return text.splitlines()[0]
