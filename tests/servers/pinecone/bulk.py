"""Bulk imports: the server really reads the Parquet files under the URI, the way Pinecone's importer does.

Rules (Pinecone's documentation, see ../shared/reference/README.md): the URI is a folder holding one
subfolder per namespace (``__default__`` for the default one); only ``.parquet`` files are read, other
files and extra columns are ignored; ``id`` STRING and ``values`` LIST<FLOAT> are required,
``sparse_values`` STRUCT<indices, values> and ``metadata`` STRING (a JSON object, may be NULL) optional;
the target namespaces must not exist yet (the default one must be empty); ``error_mode`` ``continue``
skips bad records, ``abort`` fails the import and writes nothing.
"""

from __future__ import annotations

import datetime as dt
import json
import threading
import time
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

import numpy as np
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from tests.servers.pinecone.store import IndexState, Record

DEFAULT_FOLDER = "__default__"


def _now() -> str:
    return dt.datetime.now(dt.timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


@dataclass
class ImportJob:
    id: str
    uri: str
    index: str
    error_mode: str  # "continue" | "abort"
    started: float = field(default_factory=time.monotonic)
    created_at: str = field(default_factory=_now)
    status: str = "Pending"
    finished_at: str | None = None
    records_imported: int | None = None
    error: str | None = None
    timer: threading.Timer | None = None

    def to_json(self, delay: float) -> dict[str, Any]:
        body: dict[str, Any] = {"id": self.id, "uri": self.uri, "status": self.status, "createdAt": self.created_at}
        if self.status in ("Pending", "InProgress"):
            share = min(1.0, (time.monotonic() - self.started) / delay) if delay > 0 else 1.0
            if share >= 0.5 and self.status == "Pending":
                self.status = body["status"] = "InProgress"  # visible progress for pollers
            body["percentComplete"] = round(90.0 * share, 1)
            body["recordsImported"] = 0
        else:
            body["percentComplete"] = 100.0 if self.status == "Completed" else 0.0
            body["recordsImported"] = self.records_imported or 0
            body["finishedAt"] = self.finished_at
            if self.error:
                body["error"] = self.error
        return body


def filesystem(uri: str, s3_endpoint: str | None) -> tuple[pafs.FileSystem, str]:
    """A filesystem and root path for ``uri``: a local path, ``file://`` or ``s3://`` (moto in tests)."""
    parts = urlsplit(uri)
    if parts.scheme == "s3":
        if s3_endpoint:
            return pafs.S3FileSystem(endpoint_override=s3_endpoint), f"{parts.netloc}{parts.path}".rstrip("/")
        return pafs.FileSystem.from_uri(uri.rstrip("/"))
    if parts.scheme in ("", "file"):
        return pafs.LocalFileSystem(), (parts.path if parts.scheme else uri).rstrip("/")
    raise ValueError(f"Unsupported import URI scheme {parts.scheme!r}: use s3://, gs:// or an Azure https:// URI")


class ImportFailed(Exception):
    pass


def read_import(job: ImportJob, index: IndexState, s3_endpoint: str | None) -> dict[str, dict[str, Record]]:
    """Every record the import would write, by namespace; raises ImportFailed (abort mode, or unreadable URI)."""
    fs, root = filesystem(job.uri, s3_endpoint)
    try:
        entries = fs.get_file_info(pafs.FileSelector(root, recursive=False))
    except (FileNotFoundError, OSError) as exc:
        raise ImportFailed(f"Unable to list import URI {job.uri}: {exc}") from exc
    folders = sorted((e for e in entries if e.type == pafs.FileType.Directory), key=lambda e: e.path)
    if not folders:
        raise ImportFailed(f"No namespace folders found under {job.uri}")
    out: dict[str, dict[str, Record]] = {}
    for folder in folders:
        name = folder.base_name
        namespace = "" if name == DEFAULT_FOLDER else name
        if index.namespaces.get(namespace):
            raise ImportFailed(f"Namespace {name!r} already exists in index {index.name}: imports need new namespaces")
        files = sorted(
            f.path
            for f in fs.get_file_info(pafs.FileSelector(folder.path, recursive=True))
            if f.type == pafs.FileType.File and f.path.endswith(".parquet")
        )
        rows: dict[str, Record] = {}
        for path in files:
            try:
                table = pq.read_table(path, filesystem=fs)
                _records(table, index, rows, job.error_mode)
            except ImportFailed:
                raise
            except Exception as exc:
                if job.error_mode == "abort":
                    raise ImportFailed(f"Failed to read {path}: {exc}") from exc
        if rows:
            out[namespace] = rows
    return out


def _records(table: Any, index: IndexState, rows: dict[str, Record], error_mode: str) -> None:
    names = table.column_names
    for required in ("id", "values"):
        if required not in names:
            raise ValueError(f"Missing required column {required!r}")
    ids = table.column("id").to_pylist()
    values = table.column("values").to_pylist()
    sparse = table.column("sparse_values").to_pylist() if "sparse_values" in names else [None] * len(ids)
    metadata = table.column("metadata").to_pylist() if "metadata" in names else [None] * len(ids)
    for i, rid in enumerate(ids):
        try:
            rows[rid] = _record(rid, values[i], sparse[i], metadata[i], index)
        except ValueError as exc:
            if error_mode == "abort":
                raise ImportFailed(f"Record {rid!r}: {exc}") from exc


def _record(rid: Any, values: Any, sparse: Any, metadata: Any, index: IndexState) -> Record:
    if not isinstance(rid, str) or not rid or len(rid) > 512:
        raise ValueError("id must be a non-empty string of at most 512 characters")
    vec = None
    if values is not None and len(values) > 0:
        vec = np.asarray(values, dtype=np.float32)
        if len(vec) != index.dimension:
            raise ValueError(f"Vector dimension {len(vec)} does not match the dimension of the index {index.dimension}")
    elif index.dimension is not None:
        raise ValueError("values are required by a dense index")
    sv = None
    if sparse is not None and sparse.get("indices"):
        sv = {"indices": [int(i) for i in sparse["indices"]], "values": np.asarray(sparse["values"], dtype=np.float32)}
    meta = None
    if metadata is not None:
        meta = json.loads(metadata)
        if not isinstance(meta, dict):
            raise ValueError("metadata must be a JSON object")
    return Record(vec, sv, meta)
