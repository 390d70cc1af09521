"""The store plugin interface and the registry of URI schemes.

A store module maps canonical record batches to and from one store; it never imports another store
module, and the core never imports a store SDK. Stores are found by URI scheme through the Python
entry point group ``vecfmt.stores``, so a third party adds one without touching vecfmt::

    [project.entry-points."vecfmt.stores"]
    mystore = "mypackage.vecfmt_mystore"      # a module defining open_exporter / open_importer

Store URIs share one grammar (spec section 8)::

    SCHEME://LOCATION?key=value&key=value

LOCATION is everything between ``://`` and ``?``, taken verbatim (a path, ``host:port/db``, an index
name); options are URL query parameters. Secrets come from the environment or the LOCATION's userinfo
and are never written to a manifest, a log line or an error message.
"""

from __future__ import annotations

import hashlib
import importlib
import json
import math
import os
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from enum import Enum
from importlib.metadata import entry_points
from pathlib import Path
from types import ModuleType
from typing import Any, Protocol, runtime_checkable
from urllib.parse import parse_qsl

import numpy as np
import pyarrow as pa

from vecfmt.errors import InvalidDataError, StoreError
from vecfmt.manifest import EmbeddingModel, FileEntry, Manifest, Source, VectorSpec
from vecfmt.storage import redact, split_userinfo, userinfo_secrets

ENTRY_POINT_GROUP = "vecfmt.stores"


@dataclass(frozen=True)
class StoreURI:
    scheme: str
    location: str  # verbatim, userinfo included
    options: dict[str, str]
    raw: str = field(repr=False)
    userinfo: str | None = field(default=None, repr=False)  # USER[:PASSWORD] as written, before the host

    @classmethod
    def parse(cls, uri: str) -> StoreURI:
        scheme, sep, rest = uri.partition("://")
        if not sep or not scheme:
            raise StoreError(f"not a store URI (expected SCHEME://LOCATION?options): {redact(uri)}")
        # The userinfo first: a password may hold "?", "#" or "/", which must not start options or a path.
        userinfo, after = split_userinfo(rest)
        host_location, _, query = after.partition("?")
        location = host_location if userinfo is None else f"{userinfo}@{host_location}"
        try:
            options = dict(parse_qsl(query, keep_blank_values=True, strict_parsing=bool(query)))
        except ValueError:
            raise StoreError(f"cannot parse the options of {redact(uri)}") from None
        return cls(scheme.lower(), location, options, uri, userinfo)

    @property
    def host_location(self) -> str:
        """LOCATION without its userinfo."""
        return self.location if self.userinfo is None else self.location[len(self.userinfo) + 1:]

    @property
    def secrets(self) -> tuple[str, ...]:
        """The password in every form it may take in text (as written, decoded, encoded): what
        ``redact`` and a store's error cleaning remove."""
        return userinfo_secrets(self.userinfo)

    def __str__(self) -> str:
        return redact(self.raw, self.secrets)

    def __repr__(self) -> str:
        return f"StoreURI({str(self)!r})"

    def check_options(self, known: Iterable[str], *, see: str = "") -> None:
        """Refuse an option the store does not read, so a typo is an error rather than a silent default."""
        known = set(known)
        unknown = sorted(set(self.options) - known)
        if unknown:
            hint = f"see {see}" if see else f"known: {', '.join(sorted(known))}"
            raise StoreError(f"{self.scheme}: unknown option {unknown[0]!r} ({hint})")

    def option(self, key: str, default: str | None = None) -> str | None:
        return self.options.get(key, default)

    def require(self, key: str) -> str:
        value = self.options.get(key)
        if not value:
            raise StoreError(f"{self} needs the option {key}=... (e.g. {self.scheme}://...?{key}=NAME)")
        return value

    def int_option(self, key: str, default: int | None = None) -> int | None:
        value = self.options.get(key)
        if value is None:
            return default
        try:
            return int(value)
        except ValueError:
            raise StoreError(f"option {key} of {self} must be a whole number, not {value!r}") from None

    def bounded_int(self, key: str, default: int, low: int, high: int) -> int:
        """A whole-number option within ``low``..``high`` (its default when absent)."""
        value = self.int_option(key, default)
        assert value is not None
        if not low <= value <= high:
            raise StoreError(f"{self.scheme}: option {key} must be between {low} and {high}, not {value}")
        return value


@dataclass
class Description:
    """What an exporter knows up front; becomes the dump's manifest (minus the files)."""

    source: Source
    vectors: list[VectorSpec]
    namespaces: dict[str, int | None]  # name -> row count, None when the store cannot count cheaply
    sparse_values: bool = False
    document: bool = False
    embedding_model: EmbeddingModel | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def manifest_template(self) -> Manifest:
        return Manifest(
            vectors=list(self.vectors),
            sparse_values=self.sparse_values,
            document=self.document,
            embedding_model=self.embedding_model,
            source=self.source,
            extra=dict(self.extra),
        )

    @property
    def total_rows(self) -> int | None:
        counts = list(self.namespaces.values())
        return None if any(c is None for c in counts) else sum(counts)  # type: ignore[misc]


# A slice holds about one part file's worth of exported data (ParquetOptions' max_file_bytes), so that a
# partitioned export's partitions write full files, and a namespace of more than SLICE_ROWS rows splits into
# at least rows / SLICE_ROWS slices (up to SPREAD_SLICES), so that smaller ones too spread over a machine's
# workers. Every store that splits uses this rule (stores import no other store, so it lives here).
SLICE_BYTES = 64 << 20
SLICE_ROWS = 10_000
SPREAD_SLICES = 16


def slice_count(rows: int, row_bytes: float) -> int:
    """How many slices a namespace of ``rows`` rows of about ``row_bytes`` bytes each splits into (<= 1: one)."""
    return max(math.ceil(rows * row_bytes / SLICE_BYTES), min(SPREAD_SLICES, rows // SLICE_ROWS))


@dataclass(frozen=True)
class Slice:
    """An independent part of a namespace that can be read on its own (in parallel, on other
    machines). ``key`` is the store's own description of the part, JSON-serialisable."""

    namespace: str
    key: Any = None


@dataclass(frozen=True)
class Chunk:
    """One batch from an exporter and the token that resumes the export right after it."""

    batch: pa.RecordBatch
    resume_token: str | None = None


class IfExists(str, Enum):
    FAIL = "fail"
    APPEND = "append"
    REPLACE = "replace"
    UPSERT = "upsert"


@runtime_checkable
class Exporter(Protocol):
    """Optional members (read with ``supports_resume`` and ``store_identity`` below):

    - ``supports_resume: bool`` (default False): ``batches`` gives resume tokens, so an export can
      checkpoint and continue after an interruption; without it an export refuses ``resume``.
    - ``identity() -> tuple[str, ...]``: the store object this reads, resolved (scheme, absolute
      location, table; no secrets), equal for every spelling of the same table. ``copy`` refuses to
      read and write one table when both sides have it."""

    def describe(self) -> Description:
        """Vectors (dims, metric), namespaces and counts, model, source: what the manifest needs."""
        ...

    def slices(self, namespace: str) -> list[Slice]:
        """Independent parts of a namespace; ``[Slice(namespace)]`` when the store cannot split."""
        ...

    def batches(self, part: Slice, *, batch_size: int, resume: str | None = None) -> Iterator[Chunk]:
        """Canonical record batches of one slice, starting after ``resume`` when given."""
        ...

    def close(self) -> None: ...


@runtime_checkable
class Importer(Protocol):
    """Optional members: ``identity()`` as on ``Exporter``; ``source_dump: str | None``, which an import
    sets to the dump's URI (None when importing only some namespaces) for a store that can load the dump's
    files itself (Pinecone's bulk import); ``abort()``, called when the import failed
    for a reason a resume cannot cure (a broken dump, a failed copy): remove what this run staged
    (e.g. a replace's staged table), never data the target held before; ``rows_committed() -> int | None``,
    called after a failure: how many of the dump's rows are committed (what ``resume`` skips; loading is
    stopped first so the count is final), None when the store cannot tell or resume. The core then ends the
    error with that count and the ``--resume`` command. An importer that loads one dump with several
    workers also has the members of ``PartitionedImporter``."""

    def prepare(self, manifest: Manifest, *, if_exists: IfExists, resume: bool = False) -> int:
        """Make the target ready for the dump's rows (create, check dims/metric, clear on replace).

        Returns how many rows of this same dump an earlier, interrupted run already committed (in the
        dump's order), so the caller skips them; 0 for a fresh import. A store that can commit its
        progress together with the data (one transaction) does so; one that cannot must make
        re-writing rows harmless (upsert by id)."""
        ...

    def write(self, namespace: str, batch: pa.RecordBatch, *, rows_done: int) -> None:
        """Write one canonical batch. ``rows_done`` counts the dump's rows committed once this batch is."""
        ...

    def finish(self) -> None:
        """Flush, build indexes, analyse."""
        ...

    def close(self) -> None: ...


@runtime_checkable
class PartitionedImporter(Importer, Protocol):
    """Optional: an importer that loads one dump with several workers (``vecfmt.parallel.import_partitioned``).
    One importer, the coordinator's, prepares the target once and finishes it once; each worker's own
    importer attaches to the prepared target and loads whole files, in any order and at the same time.
    Progress is per file and kept by the store, committed with the file's rows, so that a file is in the
    target once or not at all and a resumed import loads only the files not in it."""

    def prepare_partitioned(self, manifest: Manifest, *, if_exists: IfExists, resume: bool = False) -> None:
        """Coordinator: as ``prepare`` (create or check the target, ``if_exists``, take the import's lock
        until ``close``), leaving in the store what ``attach`` needs to find (which table, that it is this
        dump's, that its files load in any order). With ``resume``, take up an interrupted import of this
        dump that was prepared so; one prepared by ``prepare`` (rows in dump order) is refused, and the
        other way round."""
        ...

    def files_loaded(self) -> dict[str, int]:
        """Coordinator: the dump's files committed into the target by this import (or by the interrupted
        run it resumes): path -> rows."""
        ...

    def attach(self, manifest: Manifest) -> None:
        """Worker: write into the target the coordinator prepared for this dump; create nothing, take no
        import lock. A target not prepared for this dump is a ``StoreError``."""
        ...

    def load_file(self, entry: FileEntry, batches: Iterable[pa.RecordBatch], first_row: int) -> bool:
        """Worker: load one file's (checked) batches and record the file as loaded, atomically. A file
        already recorded is not loaded again (False, ``batches`` not read): a retry of a worker that died
        while it committed. ``first_row`` is the dump's row number of the file's first row, for messages."""
        ...


@runtime_checkable
class Searchable(Protocol):
    def search(self, vector: np.ndarray, k: int, *, namespace: str = "") -> list[tuple[str, float]]:
        """The ``k`` nearest ids to ``vector`` with the store's own scores (for verification, tuning)."""
        ...


@dataclass(frozen=True)
class KnobInfo:
    """One search-time setting of a store (see ``Tunable``): the values worth sweeping, ascending from
    the cheapest; the bounds any value must keep to; the value a search gets when it is not set; and
    what it trades (recall for latency)."""

    setting: str  # the store's own name for it, e.g. "hnsw.ef_search"
    values: tuple[int, ...]
    default: int
    low: int
    high: int
    trades: str
    below_k_truncates: bool = False  # a value below k returns fewer than k results (HNSW ef_search)


@runtime_checkable
class Tunable(Protocol):
    """Optional, on the object that has ``search`` (``Searchable``): search-time knobs that trade recall
    for speed. ``search_knobs()`` returns name -> ``KnobInfo`` ({} when the store's current index has
    none, e.g. an exact scan); ``search(..., **settings)`` runs one search with ``name=value`` settings,
    for that search only (a name not in ``search_knobs()`` or a value outside its bounds: ``StoreError``).
    The search must then go through the index the knob belongs to, so that a sweep measures it.

    Optionally also ``uses_index(vector, k, *, namespace="", **settings) -> bool``: whether such a search
    reads the index the one knob given tunes (a planner may choose another plan at some values); and
    ``index_trial(namespace) -> context manager of a Tunable`` with ``check(**params)`` and
    ``build(**params)``: a private copy of one namespace's ids and vectors on which indexes with other
    build parameters (pgvector: ``m``, ``ef_construction``) are built and searched; it never touches the
    store's own data or indexes, and everything it created is gone when the context exits."""

    def search_knobs(self) -> dict[str, KnobInfo]: ...

    def search(self, vector: np.ndarray, k: int, *, namespace: str = "", **settings: int) -> list[tuple[str, float]]:
        ...


# The key of a manifest's ``extra`` under which an export records its ``ChangeTracking.change_marker()``.
CHANGE_MARKER = "change_marker"


@runtime_checkable
class ChangeSet(Protocol):
    """What ``ChangeTracking.changes_since`` gives: both read in the exporter's one snapshot."""

    def batches(self, namespace: str, *, batch_size: int) -> Iterator[Chunk]:
        """Canonical batches of the namespace's rows written since the marker: every such row, and maybe rows
        that did not change (writing one again is harmless), never a row the namespace no longer holds."""
        ...

    def ids(self, namespace: str) -> pa.Array:
        """Every id the namespace holds now (string), read alone: what tells the deletes."""
        ...


@runtime_checkable
class ChangeTracking(Protocol):
    """Optional, on an ``Exporter``: a store's own marker of what changed, which lets ``export --since`` read
    only the rows written since its base instead of digesting every row (spec 6.3).

    ``change_marker()`` is a JSON-able token of the snapshot this exporter reads (None when the store cannot
    give one, e.g. no permission), which an export records in its manifest's ``extra[CHANGE_MARKER]``.
    ``changes_since(marker)`` is the ``ChangeSet`` since a marker an export of this store kind recorded, or,
    when the marker cannot be proven to cover every change (another table or server, too old, other export
    options), the reason as one line: the delta then compares row digests instead."""

    def change_marker(self) -> dict[str, Any] | None: ...

    def changes_since(self, marker: dict[str, Any]) -> ChangeSet | str: ...


def with_change_marker(exporter: Exporter, extra: dict[str, Any]) -> dict[str, Any]:
    """``extra`` with the exporter's ``ChangeTracking.change_marker()`` under ``CHANGE_MARKER``, when it gives one
    (an export records it so that the next ``export --since`` can read only what changed since)."""
    marker = exporter.change_marker() if isinstance(exporter, ChangeTracking) else None
    return extra if marker is None else {**extra, CHANGE_MARKER: marker}


def supports_resume(exporter: Exporter) -> bool:
    return bool(getattr(exporter, "supports_resume", False))


def store_identity(side: Exporter | Importer) -> tuple[str, ...] | None:
    """The resolved identity of the table a store module reads or writes, when it can tell."""
    identity = getattr(side, "identity", None)
    return tuple(identity()) if callable(identity) else None


# --- registry -------------------------------------------------------------------------------------


def store_module(scheme: str) -> ModuleType:
    """The module registered for ``scheme`` in the ``vecfmt.stores`` entry point group."""
    found = {ep.name: ep for ep in entry_points(group=ENTRY_POINT_GROUP)}
    if scheme not in found:
        known = ", ".join(sorted(found)) or "none"
        raise StoreError(f"no store is registered for {scheme}:// (known: {known})")
    target = found[scheme].value.split(":")[0]
    try:
        return importlib.import_module(target)
    except ImportError as exc:
        missing = exc.name or "a dependency"
        if missing.split(".")[0] == target.split(".")[0]:
            raise  # a broken store module (or vecfmt itself), not a missing SDK: a bug to show as one
        raise StoreError(
            f"the {scheme} store needs {missing}, which is not installed: pip install 'vecfmt[{scheme}]'"
        ) from None


def open_exporter(uri: str) -> Exporter:
    parsed = StoreURI.parse(uri)
    return store_module(parsed.scheme).open_exporter(parsed)


def open_importer(uri: str) -> Importer:
    parsed = StoreURI.parse(uri)
    return store_module(parsed.scheme).open_importer(parsed)


def is_store_uri(uri: str) -> bool:
    """True when ``uri``'s scheme names a registered store (as opposed to a dump location)."""
    scheme, sep, _ = uri.partition("://")
    return bool(sep) and scheme.lower() in {ep.name for ep in entry_points(group=ENTRY_POINT_GROUP)}


def raised_by(*packages: str) -> Callable[[BaseException], bool]:
    """True for an exception whose class comes from one of these top-level packages."""
    return lambda exc: type(exc).__module__.split(".")[0] in packages


@contextmanager
def sdk_errors(
    from_sdk: Callable[[BaseException], bool], fail: Callable[[BaseException], StoreError]
) -> Iterator[None]:
    """A store client's errors (``from_sdk``) become the store's one-line StoreError (``fail``), without
    their chain; vecfmt's own errors and bugs pass through as they are."""
    try:
        yield
    except (StoreError, InvalidDataError):
        raise
    except Exception as exc:
        if from_sdk(exc):
            raise fail(exc) from None
        raise


def require_sdk(module: str, scheme: str) -> ModuleType:
    """Import a store's SDK, or say which extra installs it."""
    try:
        return importlib.import_module(module)
    except ImportError:
        raise StoreError(
            f"the {scheme} store needs the {module} package: pip install 'vecfmt[{scheme}]'"
        ) from None


class AcknowledgedWrites:
    """Writes for a store without transactions, where writing a record again is harmless (upsert by id):
    requests run on a thread pool with several in flight and are acknowledged in dump order, and the rows
    acknowledged are kept in a small local state file (one per target and dump, replaced atomically), so
    a resumed import skips them and sends again at most what was in flight when the run stopped."""

    def __init__(self, scheme: str, workers: int, state_dir: str | None = None) -> None:
        base = os.environ.get("XDG_STATE_HOME") or os.path.join(os.path.expanduser("~"), ".local", "state")
        root = os.environ.get("VECFMT_STATE_DIR") or os.path.join(base, "vecfmt")
        self.state_dir = Path(state_dir or os.path.join(root, scheme))
        self.pool = ThreadPoolExecutor(workers, thread_name_prefix=f"vecfmt-{scheme}-write")
        self.inflight: deque[tuple[Future[Any], int | None]] = deque()
        self.path: Path | None = None  # None: a copy (no dump, nothing to resume)
        self.target: list[Any] = []
        self.acknowledged = 0
        self.forgotten = False  # abort(): a broken dump has nothing to resume, so no state is written again

    def track(self, target: Iterable[Any], manifest: Manifest) -> None:
        """Keep the progress of importing ``manifest``'s dump into ``target`` (the importer's identity)."""
        if not manifest.files:
            return
        self.target = list(target)
        key = hashlib.sha256(json.dumps([self.target, manifest.identity()]).encode()).hexdigest()
        self.path = self.state_dir / f"import-{key[:32]}.json"

    def saved(self) -> int | None:
        """The rows an interrupted run of this import acknowledged, or None when there is no such run."""
        if self.path is None or not self.path.exists():
            return None
        self.acknowledged = int(json.loads(self.path.read_text())["rows_done"])
        return self.acknowledged

    def save(self) -> None:
        if self.path is None or self.forgotten:
            return
        self.state_dir.mkdir(parents=True, exist_ok=True)
        temp = self.path.with_suffix(f".tmp-{os.getpid()}")
        temp.write_text(json.dumps({"target": self.target, "rows_done": self.acknowledged}))
        os.replace(temp, self.path)

    def submit(self, rows_done: int | None, fn: Any, *args: Any, **kwargs: Any) -> None:
        """Run ``fn`` on the pool; once it and every earlier request succeeded, ``rows_done`` rows of the
        dump are acknowledged (None for a request that does not end a batch)."""
        self.inflight.append((self.pool.submit(fn, *args, **kwargs), rows_done))

    def drain(self, keep: int) -> None:
        """Wait for the oldest requests until at most ``keep`` are in flight; record progress in order."""
        advanced = False
        while len(self.inflight) > keep:
            future, rows_done = self.inflight.popleft()
            future.result()  # a failure (after the store's retries) ends the import here; resume continues it
            if rows_done is not None:
                self.acknowledged = rows_done
                advanced = True
        if advanced:
            self.save()

    def settle(self) -> None:
        """Stop after a failure: wait for every request in flight (rows that passed every check; cancelling
        the queued ones would leave a batch sent in several requests half in) and acknowledge in dump order
        those that ended well, so that the count told is final (a request left running may land its rows
        after the count was told)."""
        in_order = True
        while self.inflight:
            future, rows_done = self.inflight.popleft()
            in_order = in_order and future.exception() is None  # waits for it
            if in_order and rows_done is not None:
                self.acknowledged = rows_done

    def rows_committed(self) -> int | None:
        """After a failure: the rows acknowledged in dump order (what a resume skips); None for a copy."""
        if self.path is None:
            return None
        self.settle()
        self.save()
        return self.acknowledged

    def finish(self) -> None:
        self.drain(0)
        if self.path is not None and self.path.exists():
            self.path.unlink()  # complete: nothing left to resume

    def abort(self) -> None:
        """A broken dump: nothing to resume, so forget the progress (records already written stay, and
        ``acknowledged`` counts them)."""
        self.settle()
        self.forgotten = True
        if self.path is not None and self.path.exists():
            self.path.unlink()

    def close(self) -> None:
        self.pool.shutdown(wait=True, cancel_futures=True)
