"""The LanceDB store's URI, connection, table facts, table lock and one-line driver errors."""

from __future__ import annotations

import json
import os
import re
from typing import IO, Any
from urllib.parse import unquote, urlsplit

import pyarrow as pa

from vecfmt.errors import StoreError, first_line
from vecfmt.storage import exclusive_lock, redact, scrub, secrets_of
from vecfmt.stores.base import StoreURI, require_sdk

SCHEME = "lancedb"
PRIMARY_COLUMN = "vector"  # LanceDB's default vector column: search() finds it without being told
NAMESPACE_COLUMN = "namespace"
SCHEMA_KEY = b"vecfmt"
# canonical metric -> LanceDB distance_type
DISTANCE_TYPES = {"cosine": "cosine", "dot": "dot", "euclidean": "l2", "hamming": "hamming"}
# Lance errors end with the Rust source locations of the driver's build: of no use to a user.
_RUST_LOCATION = re.compile(r",?\s*/\S+\.rs:\d+:\d+")


def _connect(uri: StoreURI, *, must_exist: bool = False) -> Any:
    """Open the database; with ``must_exist`` (a reader), a local folder that is not there is an error:
    ``lancedb.connect`` would create it, leaving an empty folder behind a failed export."""
    uri.check_options({"table", "vector", "id", "metric", "namespace_column",  # the options this module reads
                       "index", "index_min_rows", "num_partitions", "num_sub_vectors"})
    lancedb = require_sdk("lancedb", SCHEME)
    if not uri.location:
        raise StoreError(f"{uri} names no database folder (lancedb://PATH?table=NAME)")
    local = _local_path(uri.location)
    if must_exist and local is not None and not os.path.isdir(local):
        raise StoreError(f"LanceDB database folder {redact(uri.location)} does not exist")
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


def _local_path(location: str) -> str | None:
    """A local folder's real path, in every spelling LanceDB opens as that folder (a plain path or a
    ``file://`` URI with no host: LanceDB takes ``file://HOST/...`` for another place); None for any other
    URI."""
    if "://" not in location:
        return os.path.realpath(location)
    parts = urlsplit(location)
    if parts.scheme.lower() == "file" and not parts.netloc:
        return os.path.realpath(unquote(parts.path))
    return None


def _resolved(location: str) -> str:
    """A local folder as its real path; any other URI as written, credentials removed."""
    local = _local_path(location)
    return local if local is not None else redact(location)


def _lance_message(exc: BaseException, secrets: tuple[str, ...] = ()) -> str:
    """A driver error as one short line: its first line without the Rust source locations."""
    return scrub(_RUST_LOCATION.sub("", first_line(exc)), secrets)



def _saved_definitions(schema: pa.Schema) -> dict[str, Any]:
    raw = (schema.metadata or {}).get(SCHEMA_KEY)
    try:
        return json.loads(raw) if raw else {}
    except ValueError:
        return {}


def _in_namespace(column: str, namespace: str) -> str:
    """A LanceDB filter for one namespace (a NULL namespace is the default one, as it is counted);
    the value is a SQL string literal with its quotes doubled."""
    quoted_column = "`" + column.replace("`", "``") + "`"
    equals = f"{quoted_column} = '" + namespace.replace("'", "''") + "'"
    return f"({equals} OR {quoted_column} IS NULL)" if namespace == "" else equals



def _lock_table(location: str, name: str) -> IO[str] | None:
    """An exclusive lock on importing into table ``name`` of a local database folder, held by the open
    file: two imports of one table (two resumes of one interrupted import, say) would both append, and
    Lance rebases appends instead of refusing them. The OS releases a flock when its process ends, so a
    killed import leaves no stale lock. Object stores have no such lock (docs/lancedb.md)."""
    folder = _local_path(location)
    if folder is None:
        return None
    try:
        handle = exclusive_lock(folder, name)
    except OSError as exc:
        raise StoreError(f"cannot open LanceDB database {folder}: {first_line(exc)}") from None
    if handle is None:
        raise StoreError(f"another writer (a vecfmt import) is loading LanceDB table {name!r}; this run changed "
                         "nothing: re-run it once the other is done")
    return handle

