"""Incremental dumps (format 1.1, spec section 6.1): ``export --since``, ``restore`` and ``compact`` of a chain.

A delta holds the rows added or changed since its base, as ordinary part files, and per namespace the ids
it deletes, in ``deletes-NNNNN.parquet`` files; its manifest names the base by URI and by the SHA-256 of
the base's manifest.json bytes. A chain is a full dump followed by deltas, each made against the one
before. Its *resolved state* is what applying them in order gives: a row of a link survives unless a
later link writes or deletes its id.

Memory stays bounded by ids (and 8-byte row digests for an export): no link's vectors are held.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from typing import IO, TypeVar

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from vecfmt.errors import DumpError, InvalidDataError, StoreError, first_line
from vecfmt.manifest import (
    DELTA,
    DELTA_FORMAT_VERSION,
    FULL,
    MANIFEST_NAME,
    BaseRef,
    Digests,
    EmbeddingModel,
    FileEntry,
    Manifest,
    NamespaceEntry,
)
from vecfmt.progress import RowProgress
from vecfmt.reader import Dump
from vecfmt.schema import (
    FORMAT_VERSION,
    ID,
    SPARSE_VALUES,
    is_vector_type,
    namespace_dir,
    vector_digests,
    vectors_numpy,
)
from vecfmt.storage import Location, lock_for_writing, redact, resolve
from vecfmt.stores.base import (
    CHANGE_MARKER,
    ChangeSet,
    ChangeTracking,
    Exporter,
    IfExists,
    Importer,
    open_exporter,
    open_importer,
    with_change_marker,
)
from vecfmt.transfer import DEFAULT_BATCH_SIZE, TransferResult
from vecfmt.writer import (
    DumpWriter,
    ParquetOptions,
    PartWriter,
    check_batch,
    check_unique_ids,
    commit_manifest,
    kept_ids,
    prepare_location,
    sync_folders,
)

# The schema of a delta's deletes files (spec 6.1): the ids it removes from one namespace.
DELETES_SCHEMA = pa.schema([pa.field(ID, pa.string(), nullable=False)])
DELETES_PREFIX = "deletes"  # deletes files are <namespace folder>/deletes-NNNNN.parquet
# A delta's digests files (spec 6.2): each row of its state once applied, by the digest below.
DIGESTS_SCHEMA = pa.schema([pa.field(ID, pa.string(), nullable=False),
                            pa.field("digest", pa.uint64(), nullable=False)])
DIGESTS_PREFIX = "digests"
DIGEST_ALGORITHM = "vecfmt-row-digest-1"  # row_digests; another algorithm gets another name
# A delta's manifest says under extra[FOUND_BY] how its changes were found: {"found_by": BY_MARKER} or
# {"found_by": BY_DIGESTS, "why": the reason the base's change marker could not be used}.
FOUND_BY = "changes"
BY_MARKER, BY_DIGESTS = "change_marker", "row_digests"

# --- row digests ------------------------------------------------------------------------------------

_MIX = np.uint64(0xFF51AFD7ED558CCD)  # MurmurHash3's fmix64 constants
_MIX2 = np.uint64(0xC4CEB9FE1A85EC53)
_NULL = np.uint64(0x9E3779B97F4A7C15)  # the digest of a null value (of any column)
_LENGTH = np.uint64(0xD6E8FEB86659FD93)
_VECTOR_ROWS = 256  # the word mixing is several times faster on blocks that stay in the L2 cache


def _fmix(x: np.ndarray) -> np.ndarray:
    """MurmurHash3's 64-bit finaliser, in place: a bijection that spreads every input bit over the output."""
    with np.errstate(over="ignore"):
        x ^= x >> np.uint64(33)
        x *= _MIX
        x ^= x >> np.uint64(33)
        x *= _MIX2
        x ^= x >> np.uint64(33)
    return x


def _segment_digests(data: np.ndarray, offsets: np.ndarray) -> np.ndarray:
    """A 64-bit digest of each byte run ``data[offsets[i]:offsets[i+1]]``, for all rows at once: every byte
    is mixed with its place in its run (a bijection of the pair, so a change of any one byte always changes
    the run's sum), the mixed bytes summed per run through one cumulative sum (empty runs included), and
    the sum mixed with the run's length."""
    offsets = offsets.astype(np.int64)
    data = data[offsets[0]:offsets[-1]]
    offsets = offsets - offsets[0]
    lengths = np.diff(offsets)
    if data.size:
        place = np.arange(data.size, dtype=np.uint64) - np.repeat(offsets[:-1].astype(np.uint64), lengths)
        mixed = data.astype(np.uint64)
        mixed |= place << np.uint64(8)
        with np.errstate(over="ignore"):  # a lighter bijection per byte; each run's sum gets the full _fmix
            mixed *= _MIX
            mixed ^= mixed >> np.uint64(32)
            mixed *= _MIX2
        sums = np.concatenate(([np.uint64(0)], np.cumsum(mixed, dtype=np.uint64)))
        with np.errstate(over="ignore"):
            totals = sums[offsets[1:]] - sums[offsets[:-1]]
    else:
        totals = np.zeros(len(lengths), dtype=np.uint64)
    with np.errstate(over="ignore"):
        return _fmix(totals + lengths.astype(np.uint64) * _LENGTH)


def _nulls_to(digests: np.ndarray, array: pa.Array) -> np.ndarray:
    if array.null_count:
        digests[~array.is_valid().to_numpy(zero_copy_only=False)] = _NULL
    return digests


def bytes_digests(array: pa.Array) -> np.ndarray:
    """A 64-bit digest of each value of a string or binary array, read from its Arrow buffers (no Python
    object per row); null has a digest of its own, apart from the empty string."""
    if pa.types.is_string_view(array.type) or pa.types.is_binary_view(array.type):
        array = array.cast(pa.large_binary())
    width = np.int64 if pa.types.is_large_string(array.type) or pa.types.is_large_binary(array.type) else np.int32
    buffers = array.buffers()
    offsets = np.frombuffer(buffers[1], dtype=width)[array.offset:array.offset + len(array) + 1]
    data = np.frombuffer(buffers[2], dtype=np.uint8) if buffers[2] is not None else np.zeros(0, np.uint8)
    return _nulls_to(_segment_digests(data, offsets), array)


def _list_digests(array: pa.ListArray) -> np.ndarray:
    """Digests of the bytes of each list (of fixed-width numbers), as ``bytes_digests`` reads strings."""
    child = array.values.to_numpy(zero_copy_only=False)
    offsets = array.offsets.to_numpy() * child.dtype.itemsize
    return _nulls_to(_segment_digests(child.view(np.uint8), offsets), array)


def _word_weights(width: int) -> np.ndarray:
    """Odd 64-bit weights, one per word of a row: ``_fmix(position + 1) | 1``, a formula, so that digests
    written into a dump today are computed alike by any later vecfmt (schema.vector_digests draws its weights
    from NumPy's random generator, whose streams NumPy does not promise to keep across versions)."""
    return _fmix(np.arange(1, width + 1, dtype=np.uint64)) | np.uint64(1)


def _matrix_digests(matrix: np.ndarray) -> np.ndarray:
    """schema.vector_digests with ``_word_weights``."""
    return vector_digests(matrix, weights=_word_weights)


def _vector_digests(column: pa.Array) -> np.ndarray:
    matrix = vectors_numpy(column)
    out = np.empty(len(column), dtype=np.uint64)
    for start in range(0, len(column), _VECTOR_ROWS):
        out[start:start + _VECTOR_ROWS] = _matrix_digests(matrix[start:start + _VECTOR_ROWS])
    return _nulls_to(out, column)


def row_digests(batch: pa.RecordBatch) -> np.ndarray:
    """A 64-bit digest of each row's content: every column but ``id`` (vectors by their bits, so -0.0 and
    0.0 differ; metadata and documents by their exact text; sparse vectors by indices and values), each
    column's digest folded in by its position. Two rows with equal digests are taken as unchanged: a change
    goes unseen only if it keeps all 64 bits, about once in 1.8e19 changed rows."""
    out = np.zeros(batch.num_rows, dtype=np.uint64)
    for position, (name, column) in enumerate(zip(batch.schema.names, batch.columns, strict=True)):
        if name == ID:
            continue
        if is_vector_type(column.type):
            digests = _vector_digests(column)
        elif name == SPARSE_VALUES:
            digests = _fmix(_list_digests(column.field("indices")) ^ (_list_digests(column.field("values")) * _MIX))
            digests = _nulls_to(digests, column)
        else:
            digests = bytes_digests(column)
        with np.errstate(over="ignore"):
            out = _fmix(out * _LENGTH + digests + np.uint64(position))
    return out


# Rows are digested on these threads while the next batch is read (NumPy releases the GIL in its loops):
# the digests of a 768-dim row cost about as much as reading it.
_DIGESTERS = ThreadPoolExecutor(max_workers=2, thread_name_prefix="vecfmt-digest")
_DIGESTS_AHEAD = 2  # batches digested ahead of the one being compared: memory stays a few batches


def _digested(batches: Iterable[pa.RecordBatch]) -> Iterator[tuple[pa.RecordBatch, np.ndarray]]:
    """Each batch with its ``row_digests``, in order, digested on worker threads a few batches ahead."""
    pending: deque[tuple[pa.RecordBatch, Future[np.ndarray]]] = deque()
    try:
        for batch in batches:
            pending.append((batch, _DIGESTERS.submit(row_digests, batch)))
            if len(pending) > _DIGESTS_AHEAD:
                done, digests = pending.popleft()
                yield done, digests.result()
        while pending:
            done, digests = pending.popleft()
            yield done, digests.result()
    finally:
        for _, digests in pending:
            digests.cancel()


class _IdIndex:
    """Where each of a batch's ids sits in one namespace's ids (-1: absent), built once for all batches:
    the ids' 64-bit digests sorted, looked up with ``searchsorted``, and every hit confirmed on the id
    itself. If two ids of the namespace share a digest (about once in 1e7 namespaces of a billion ids),
    it falls back to Arrow's hash lookup per batch, slower and as exact."""

    def __init__(self, ids: pa.Array) -> None:
        self.ids = ids
        keys = bytes_digests(ids)
        self.order = np.argsort(keys, kind="stable")
        self.keys = keys[self.order]
        self.distinct = not (self.keys[1:] == self.keys[:-1]).any()

    def lookup(self, ids: pa.Array) -> np.ndarray:
        if len(self.ids) == 0:
            return np.full(len(ids), -1, dtype=np.int64)
        if not self.distinct:
            found = pc.index_in(ids, value_set=self.ids)
            return pc.fill_null(found, -1).to_numpy(zero_copy_only=False).astype(np.int64)
        keys = bytes_digests(ids)
        at = np.minimum(np.searchsorted(self.keys, keys), len(self.keys) - 1)
        hit = np.flatnonzero(self.keys[at] == keys)
        found = np.full(len(ids), -1, dtype=np.int64)
        candidates = self.order[at[hit]]
        same = pc.equal(self.ids.take(pa.array(candidates)), ids.take(pa.array(hit)))
        same_mask = same.to_numpy(zero_copy_only=False)
        found[hit[same_mask]] = candidates[same_mask]
        return found


# --- chains -----------------------------------------------------------------------------------------


@dataclass
class Link:
    """One dump of a chain, opened: its URI as given, its manifest and the SHA-256 of its bytes."""

    uri: str
    dump: Dump
    manifest_sha256: str

    @property
    def manifest(self) -> Manifest:
        return self.dump.manifest

    @property
    def shown(self) -> str:
        return redact(self.uri)


def read_manifest(location: Location) -> tuple[bytes, Manifest]:
    """The manifest.json bytes of a full or delta dump, and the manifest they hold."""
    try:
        raw = location.read_bytes(MANIFEST_NAME).to_pybytes()
    except FileNotFoundError:
        if location.is_dir():
            raise DumpError(f"{location.uri} has no {MANIFEST_NAME}: not a complete vecfmt dump "
                            "(an interrupted write leaves none)") from None
        raise DumpError(f"{location.uri} does not exist") from None
    except OSError as exc:
        raise DumpError(f"cannot read {location.uri}/{MANIFEST_NAME}: {first_line(exc)}") from None
    return raw, Manifest.from_json(raw, allow_delta=True)


def open_link(uri: str) -> Link:
    """Open a full or delta dump (every listed file must exist with its size) and hash its manifest."""
    location = resolve(uri)
    try:
        raw, manifest = read_manifest(location)
    except DumpError as exc:
        message = str(exc)
        raise DumpError(message if message.startswith(location.uri) else f"{location.uri}: {message}") from None
    dump = Dump(location, manifest)
    for entry, problem in dump.size_problems():
        raise DumpError(f"{location.uri}: {entry.path} {problem}")
    return Link(uri, dump, hashlib.sha256(raw).hexdigest())


def open_chain(uris: Sequence[str]) -> list[Link]:
    """Open a chain given in order (a full dump, then its deltas) and check every link (``check_links``)."""
    if not uris:
        raise DumpError("no dumps given: a chain is a full dump followed by its deltas, in order")
    links = [open_link(uri) for uri in uris]
    check_links(links)
    return links


def follow_chain(uri: str) -> list[Link]:
    """The chain that ends with the dump at ``uri``: its bases opened at the URIs their deltas record, back
    to a full dump, each checked against the SHA-256 its delta records."""
    links = [open_link(uri)]
    seen = {links[0].manifest_sha256}
    while links[0].manifest.is_delta:
        delta = links[0]
        base = delta.manifest.base
        assert base is not None
        try:
            link = open_link(base.uri)
        except DumpError as exc:
            raise DumpError(f"{delta.shown} is a delta of {base.uri}, which cannot be opened ({exc}); give the "
                            "whole chain, full dump first") from None
        if link.manifest_sha256 in seen:  # a chain of any length is followed; a loop is not
            raise DumpError(f"the chain of bases loops at {link.shown}: {delta.shown} is based on it, a dump already "
                            "met on the way, so the chain never reaches a full dump")
        seen.add(link.manifest_sha256)
        links.insert(0, link)
    check_links(links)
    return links


def check_links(links: Sequence[Link]) -> None:
    """Refuse a broken chain with one line: a delta without its base, a full dump after the first link,
    a delta whose base is not the link before it (missing, changed since, or given later), or links whose
    vectors or columns differ."""
    by_sha: dict[str, int] = {}
    for n, link in enumerate(links):
        if link.manifest_sha256 in by_sha:
            raise DumpError(f"{link.shown} is given twice (as dump {by_sha[link.manifest_sha256] + 1} and {n + 1} of "
                            "the chain): give each dump once, full dump first, then the deltas in order")
        by_sha[link.manifest_sha256] = n
    first = links[0]
    if first.manifest.is_delta:
        base = first.manifest.base
        assert base is not None
        if base.manifest_sha256 in by_sha:
            later = links[by_sha[base.manifest_sha256]]
            raise DumpError(f"deltas out of order: {first.shown} is based on {later.shown}, which is given after it")
        raise DumpError(f"{first.shown} is a delta given without its base ({base.uri}, made {base.created_at}): a "
                        "chain starts with its full dump, then the deltas in order")
    for n, link in enumerate(links[1:], start=1):
        before = links[n - 1]
        if not link.manifest.is_delta:
            raise DumpError(f"{link.shown} is a full dump, not a delta of {before.shown}: a chain has one full dump, "
                            "first")
        base = link.manifest.base
        assert base is not None
        if base.manifest_sha256 != before.manifest_sha256:
            at = by_sha.get(base.manifest_sha256)
            if at is not None and at > n:
                raise DumpError(f"deltas out of order: {link.shown} is based on {links[at].shown}, which is given "
                                "after it")
            if at is not None:
                raise DumpError(f"{link.shown} is based on {links[at].shown}, not on {before.shown} given right "
                                "before it: a chain lists each delta right after its base")
            if _same_place(base.uri, before.uri):
                raise DumpError(f"{link.shown} was made against a base at {base.uri} whose manifest's SHA-256 was "
                                f"{base.manifest_sha256[:12]}..., and the dump there now is another "
                                f"({before.manifest_sha256[:12]}...): the chain is broken")
            raise DumpError(f"a missing link: {link.shown} is based on {base.uri} (made {base.created_at}), which is "
                            f"not {before.shown} given before it")
        difference = definition_difference(link.manifest, before.manifest)
        if difference:
            raise DumpError(f"{link.shown} has other vectors or columns than its base {before.shown}: {difference}")


def _place(location: Location) -> tuple[str, str]:
    """Where a location is, however it is spelled: a local folder by its real path (symlinks and ``..``
    resolved), an object store's by its path with ``/./``, ``//`` and trailing ``/`` collapsed."""
    if location.local:
        return location.fs.type_name, os.path.realpath(location.root)
    parts = [part for part in location.root.split("/") if part not in ("", ".")]
    return location.fs.type_name, "/".join(parts)


def _same_place(a: str, b: str) -> bool:
    try:
        return _place(resolve(a)) == _place(resolve(b))
    except DumpError:
        return False


def _overlap(first: tuple[str, str], second: tuple[str, str]) -> str | None:
    """How two places overlap: "is", "is inside" (first within second), "contains", or None."""
    if first[0] != second[0]:
        return None
    a, b = first[1].rstrip("/"), second[1].rstrip("/")
    if a == b:
        return "is"
    if a.startswith(f"{b}/") or not b:
        return "is inside"
    if b.startswith(f"{a}/") or not a:
        return "contains"
    return None


def definition_difference(new: Manifest, old: Manifest) -> str | None:
    """Which field of the vectors or columns differs between two manifests (``new`` first), or None."""
    new_vectors, old_vectors = {v.name: v for v in new.vectors}, {v.name: v for v in old.vectors}
    if list(new_vectors) != list(old_vectors):
        return f"vectors {list(new_vectors)} here, {list(old_vectors)} in the base"
    for name, vector in new_vectors.items():
        for what in ("dimension", "metric", "column"):
            here, there = getattr(vector, what), getattr(old_vectors[name], what)
            if here != there:
                return f"vector {name!r} has {what} {here} here, {there} in the base"
    for what in ("sparse_values", "document"):
        here, there = getattr(new, what), getattr(old, what)
        if here != there:
            return f"{what} {'present' if here else 'absent'} here, {'present' if there else 'absent'} in the base"
    return None


def _target_location(links: Sequence[Link], uri: str, what: str, *, refuse_later_deltas: bool = False) -> Location:
    """The location to write at ``uri``, refused (whatever overwrite says) when it is a dump of the chain
    however spelled (a symlink, ``..``, ``//``), lies inside one or holds one; with ``refuse_later_deltas``
    also when it holds a delta based on a link (a compact whose OUT was forgotten would take the last delta
    for OUT and replace its changes)."""
    location = resolve(uri)
    place = _place(location)
    for link in links:
        overlap = _overlap(place, _place(link.dump.location))
        if overlap == "is":
            raise DumpError(f"{location.uri} is {link.shown}, a dump of the chain: write the {what} elsewhere")
        if overlap is not None:
            raise DumpError(f"{location.uri} {overlap} {link.shown}, a dump of the chain: write the {what} "
                            "elsewhere")
    held: Manifest | None = None
    if refuse_later_deltas and location.exists(MANIFEST_NAME):
        with contextlib.suppress(DumpError):  # an unreadable manifest is prepare_location's to refuse
            held = read_manifest(location)[1]
    by_sha = {link.manifest_sha256: link for link in links}
    if held is not None and held.base is not None and held.base.manifest_sha256 in by_sha:
        raise DumpError(f"{location.uri} holds a delta of {by_sha[held.base.manifest_sha256].shown}, a dump of the "
                        f"chain: it is not replaced (is it a link you meant to give?); write the {what} elsewhere")
    return location


# --- the resolved state -----------------------------------------------------------------------------


@dataclass
class _Step:
    link: Link
    keep: np.ndarray | None  # the link's rows of the namespace (in file order) that survive; None: all


@dataclass
class _Namespace:
    name: str
    steps: list[_Step] = field(default_factory=list)
    ids: pa.Array = field(default_factory=lambda: pa.array([], pa.string()))  # of the resolved state

    @property
    def rows(self) -> int:
        return len(self.ids)


def _ids(dump: Dump, entries: list[FileEntry]) -> pa.Array:
    """The id column of these part files, read alone and without hashing the files (their rows are checked
    against their SHA-256 when they are streamed, before any is handed out)."""
    chunks = [c for entry in entries for c in dump.load_file(entry, columns=[ID], verify=False).column(ID).chunks]
    return pa.chunked_array(chunks, pa.string()).combine_chunks()


def _deleted_ids(dump: Dump, entries: list[FileEntry]) -> pa.Array:
    """The ids of these deletes files, each checked against its SHA-256 (they are read only here)."""
    chunks = [c for entry in entries for c in load_listed_file(dump, entry, DELETES_SCHEMA).column(ID).chunks]
    return pa.chunked_array(chunks, pa.string()).combine_chunks()


def load_listed_file(dump: Dump, entry: FileEntry, schema: pa.Schema, *, verify: bool = True) -> pa.Table:
    """A deletes or digests file (``schema``: DELETES_SCHEMA or DIGESTS_SCHEMA), checked like a part file
    (size, SHA-256 before decoding, rows, schema)."""
    reader = Dump(dump.location, dump.manifest)
    reader.schema = schema  # the reader checks files against this schema
    return reader.load_file(entry, verify=verify)


def _stored_digests(link: Link, namespace: _Namespace) -> tuple[pa.Array, np.ndarray] | None:
    """The digests a link recorded of its state's rows in a namespace, when it has them, of this
    algorithm, and they are of exactly the rows the chain resolves to (same count, every id in the state)."""
    m = link.manifest
    if m.digests is None or m.digests.algorithm != DIGEST_ALGORITHM:
        return None
    with _naming(link):
        tables = [load_listed_file(link.dump, entry, DIGESTS_SCHEMA) for entry in m.digests_of(namespace.name)]
    table = pa.concat_tables(tables) if tables else DIGESTS_SCHEMA.empty_table()
    ids = table.column(ID).combine_chunks()
    if len(ids) != namespace.rows or not pc.all(pc.is_in(ids, value_set=namespace.ids)).as_py():
        raise DumpError(f"{link.shown}: the digests of namespace {namespace.name!r} are not of its rows")
    check_unique_ids(ids, namespace.name)
    return ids, table.column("digest").to_numpy()


@contextlib.contextmanager
def _naming(link: Link) -> Iterator[None]:
    """Errors raised while reading a link's files name the link: every link has a __default__/part-00000.parquet."""
    try:
        yield
    except DumpError as exc:
        message = str(exc)
        if message.startswith((link.shown, link.dump.location.uri)):
            raise
        raise DumpError(f"{link.shown}: {message}") from None


def _check_unique_in_link(link: Link, ids: pa.Array, name: str) -> None:
    """Ids repeated within one link: its id columns are read without their files' SHA-256 (checked when rows
    are streamed), and a dump is written with unique ids, so the likely cause is a corrupt file."""
    try:
        check_unique_ids(ids, name)
    except InvalidDataError as exc:
        raise DumpError(f"{link.shown}: {exc}: this dump's files may be corrupt; run `vecfmt validate` on the "
                        "chain (every dump of it, full dump first)") from None


def resolve_chain(links: Sequence[Link]) -> list[_Namespace]:
    """What applying the chain gives, per namespace, from the id columns alone: which rows of each link
    survive, and how many rows there are. Checks on the way that every delta adds up: its deleted ids were
    in the state before it, no id is both deleted and written, ids are unique, and the state has the rows
    the delta's manifest says it leaves."""
    names: list[str] = []
    for link in links:
        names.extend(n for n in link.manifest.namespace_names() if n not in names)
    resolved = []
    for name in names:
        namespace = _Namespace(name)
        state = pa.array([], pa.string())
        written: list[pa.Array] = []  # per link: the ids it writes
        touched: list[pa.Array] = []  # per link: the ids it writes or deletes
        for link in links:
            m = link.manifest
            listed = {ns.name: ns for ns in m.namespaces}
            with _naming(link):
                ids = _ids(link.dump, m.files_of(name)) if name in listed else pa.array([], pa.string())
                _check_unique_in_link(link, ids, name)
            if not m.is_delta:
                state, deleted = ids, pa.array([], pa.string())
            else:
                if name not in listed:
                    if len(state):
                        raise DumpError(f"{link.shown} does not list namespace {name!r}, which its base holds: "
                                        "the chain does not add up")
                    written.append(ids)
                    touched.append(ids)
                    continue
                with _naming(link):
                    deleted = _deleted_ids(link.dump, m.deletes_of(name))
                    _check_unique_in_link(link, deleted, name)
                # Where each id of the state is among the link's written then deleted ids, by one probe of the
                # state against them (a hash of the link's few ids, not of the whole state): -1 if not.
                where = pc.fill_null(pc.index_in(state, value_set=pa.concat_arrays([ids, deleted])), -1).to_numpy()
                _check_delta(link, name, ids, deleted, state, where, listed[name].rows_after)
                state = pa.concat_arrays([state.filter(pa.array(where < 0)), ids])
            written.append(ids)
            touched.append(pa.concat_arrays([ids, deleted]))
        later = pa.array([], pa.string())
        for n in range(len(links) - 1, -1, -1):  # each link's rows survive unless a later link touches them
            ids = written[n]
            if len(ids):
                keep = None if not len(later) else pc.invert(pc.is_in(ids, value_set=later)).to_numpy(
                    zero_copy_only=False)
                if keep is None or keep.any():
                    namespace.steps.insert(0, _Step(links[n], keep))
            later = pa.concat_arrays([later, touched[n]])
        namespace.ids = state
        if namespace.rows:
            resolved.append(namespace)
    return resolved


def _check_delta(link: Link, name: str, ids: pa.Array, deleted: pa.Array, state: pa.Array, where: np.ndarray,
                 rows_after: int | None) -> None:
    """``where``: for each id of the state, its index among ``ids`` then ``deleted``, or -1 (all three unique)."""
    both = pc.is_in(deleted, value_set=ids)
    if pc.any(both).as_py():
        example = deleted.filter(both)[0].as_py()
        raise DumpError(f"{link.shown}: id {example!r} of namespace {name!r} is both deleted and written")
    replaced = int(np.count_nonzero((where >= 0) & (where < len(ids))))
    if int(np.count_nonzero(where >= len(ids))) != len(deleted):
        absent = pc.invert(pc.is_in(deleted, value_set=state))  # which: only to name one
        example = deleted.filter(absent)[0].as_py()
        raise DumpError(f"{link.shown} deletes id {example!r} of namespace {name!r}, which its base does not hold: "
                        "the chain is broken")
    after = len(state) - len(deleted) - replaced + len(ids)
    if after != rows_after:
        says = "nothing" if rows_after is None else f"{rows_after:,}"
        raise DumpError(f"{link.shown}: namespace {name!r} has {after:,} rows once applied, its manifest says "
                        f"{says}: the chain does not add up")


def _resolved_batches(namespace: _Namespace, *, columns: Sequence[str] | None = None,
                      batch_size: int | None = None) -> Iterator[pa.RecordBatch]:
    """The rows of a namespace's resolved state, link after link (each file checked against its SHA-256
    before its rows are handed out), without the rows later links replace or delete."""
    for step in namespace.steps:
        position = 0
        files = step.link.manifest.files_of(namespace.name)
        with _naming(step.link):
            for _, batch in step.link.dump.stream(files, columns=columns, batch_size=batch_size):
                if step.keep is not None:
                    keep = step.keep[position:position + batch.num_rows]
                    position += batch.num_rows
                    if not keep.all():
                        batch = batch.filter(pa.array(keep))
                if batch.num_rows:
                    yield batch


def _full_template(m: Manifest, namespaces: list[_Namespace]) -> Manifest:
    """The manifest of the chain's resolved state as a full dump (no files): what an importer prepares for."""
    return replace(m, kind=FULL, base=None, deletes=[], files=[], format_version=FORMAT_VERSION,
                   namespaces=[NamespaceEntry(ns.name, namespace_dir(ns.name), ns.rows) for ns in namespaces])


# --- export --since ---------------------------------------------------------------------------------


def export_delta(
    source: str,
    dump_uri: str,
    since: str | Sequence[str],
    *,
    model: EmbeddingModel | None = None,
    batch_size: int = DEFAULT_BATCH_SIZE,
    overwrite: bool = False,
    options: ParquetOptions | None = None,
    progress: bool | None = None,
) -> Manifest:
    """Export only what changed in a store since a dump: a delta at ``dump_uri`` (format 1.1).

    ``since`` is the base dump (if it is itself a delta, its chain is followed through the bases its
    manifests record) or the whole chain in order, full dump first. When the store has a change marker
    (``ChangeTracking``) and the base recorded one it accepts, only the rows written since are read (spec
    6.3); otherwise every row of the store is read and its content digest (``row_digests``) compared with
    the resolved state's. Either way the rows written are checked as a full export checks them (dimensions,
    NaN/inf, metadata, duplicate ids), and per namespace the ids the state holds and the store no longer
    does are deleted. ``extra[FOUND_BY]`` of the manifest says which way was taken, and ``extra[CHANGE_MARKER]``
    holds the store's marker of this export when it gives one. Nothing is written over the chain's own
    dumps; an export that fails or is interrupted leaves no manifest."""
    links = follow_chain(since) if isinstance(since, str) else open_chain(since)
    base = links[-1]
    location = _target_location(links, dump_uri, "delta")
    # One writer per folder (as DumpWriter): two runs would delete each other's files and commit a manifest
    # over files that are gone. Held until the manifest is committed, released on failure too.
    lock = lock_for_writing(location)
    # The chain's ids are read and checked on a thread while the store is opened and described (the store's
    # work happens on the server); a broken chain is said first all the same, an interrupt at once.
    resolving = _on_daemon_thread(resolve_chain, links)
    try:
        exporter = open_exporter(source)
    except Exception:
        _release(lock)
        resolving.result()
        raise
    except BaseException:
        _release(lock)
        raise
    writers = _Writers(location, options)
    try:
        desc = exporter.describe()
        template = desc.manifest_template()
        if model is not None:
            template.embedding_model = model
        difference = definition_difference(template, base.manifest)
        if difference:
            raise InvalidDataError(f"the source's vectors or columns differ from those of {base.shown} ({difference}): "
                                   "a delta cannot change them; take a full export")
        schema = template.arrow_schema()
        changes = _changes_since(exporter, base)
        template.extra = with_change_marker(exporter, template.extra)
        if isinstance(changes, str):
            template.extra[FOUND_BY] = {"found_by": BY_DIGESTS, "why": changes}
        else:
            template.extra[FOUND_BY] = {"found_by": BY_MARKER}
        state = {ns.name: ns for ns in resolving.result()}
        _prepare(location, overwrite)
        entries: list[NamespaceEntry] = []
        # by marker only the changed rows are read, how many is not known ahead
        with RowProgress("export", None if not isinstance(changes, str) else desc.total_rows, progress) as bar:
            for name in desc.namespaces:
                if isinstance(changes, str):
                    rows, deleted = _export_namespace(exporter, name, base, state.pop(name, None), template,
                                                      schema, location, writers, batch_size, bar)
                else:
                    rows, deleted = _export_changes(exporter, changes, name, state.pop(name, None), template,
                                                    schema, writers, batch_size, bar)
                expected = desc.namespaces[name]
                if expected is not None and rows != expected:
                    raise InvalidDataError(f"namespace {name!r}: the store reported {expected:,} rows but {rows:,} "
                                           "were exported; the dump is not written")
                if rows or deleted:
                    entries.append(NamespaceEntry(name, namespace_dir(name), 0, deleted, rows))
            for name, dropped in state.items():  # namespaces the store no longer has: all their ids go
                writers.of(DELETES_PREFIX, name, DELETES_SCHEMA).write(
                    pa.RecordBatch.from_arrays([dropped.ids], schema=DELETES_SCHEMA))
                entries.append(NamespaceEntry(name, namespace_dir(name), 0, dropped.rows, 0))
        template.kind, template.format_version = DELTA, DELTA_FORMAT_VERSION
        template.base = BaseRef(redact(base.uri), base.manifest_sha256, base.manifest.created_at, base.manifest.kind)
        template.namespaces = entries
        files = writers.close("part")
        template.deletes = writers.close(DELETES_PREFIX)
        # By marker no digests: they need every row (a later delta by digests computes them from the chain).
        by_digests = isinstance(changes, str)
        template.digests = Digests(DIGEST_ALGORITHM, writers.close(DIGESTS_PREFIX)) if by_digests else None
        # on disk before the manifest vouches for them (spec 7.1); commit_manifest syncs the part files' folders
        sync_folders(location, [*template.deletes, *template.digest_files])
        return commit_manifest(location, template, files)
    except BaseException as exc:
        writers.abort()
        if isinstance(exc, Exception):
            resolving.result()  # a broken chain is said rather than what it may have caused
        raise
    finally:
        exporter.close()
        _release(lock)


T = TypeVar("T")


def _on_daemon_thread(function: Callable[..., T], *args: object) -> Future[T]:
    """``function(*args)`` on a daemon thread: an interrupted run exits without waiting for it to finish (a
    pool's threads are joined when the interpreter exits)."""
    future: Future[T] = Future()

    def run() -> None:
        future.set_running_or_notify_cancel()
        try:
            future.set_result(function(*args))
        except BaseException as exc:  # handed to whoever waits for it
            future.set_exception(exc)

    threading.Thread(target=run, name="vecfmt-chain", daemon=True).start()
    return future


def _release(lock: IO[str] | None) -> None:
    if lock is not None:
        lock.close()


def _changes_since(exporter: Exporter, base: Link) -> ChangeSet | str:
    """The store's changes since the base's snapshot by the change marker the base recorded, or why not."""
    if not isinstance(exporter, ChangeTracking):
        return "the store has no change marker"
    marker = base.manifest.extra.get(CHANGE_MARKER)
    if marker is None:
        return f"{base.shown} records no change marker"
    return exporter.changes_since(marker)


def _export_changes(exporter: Exporter, changes: ChangeSet, name: str, base: _Namespace | None, template: Manifest,
                    schema: pa.Schema, writers: _Writers, batch_size: int, bar: RowProgress) -> tuple[int, int]:
    """One namespace by the store's change marker: the rows written since the base (all of them in a namespace
    the base does not hold), and the ids of the resolved state the store no longer holds; returns (rows the
    namespace holds, ids deleted)."""
    # The ids first (both are read in one snapshot): they are compared with the base's on a thread while the
    # store scans for the changed rows, a scan of every row that keeps this process waiting.
    ids = changes.ids(name)
    base_ids = pa.array([], pa.string()) if base is None else base.ids
    compared = _DIGESTERS.submit(_among, ids, base_ids)
    if base is None:
        batches = checked_batches(exporter, name, schema, template, batch_size)
    else:
        batches = (check_batch(chunk.batch, schema, template.vectors)
                   for chunk in changes.batches(name, batch_size=batch_size))
    written: list[pa.Array] = []
    for batch in batches:
        written.append(kept_ids(batch))
        writers.of("part", name, schema).write(batch)
        bar.advance(batch.num_rows)
    unique, (kept,) = compared.result()
    if not unique:
        check_unique_ids(ids, name)  # raises, naming the duplicates
    written_ids = pa.chunked_array(written, pa.string()).combine_chunks()
    check_unique_ids(written_ids, name)
    # All three unique, so counts tell the sets apart, each by a hash of the few written ids (not of all the ids
    # again): written is among ids, and every id the base lacks was written (a row added since is never missed).
    if len(written_ids) and pc.sum(pc.is_in(ids, value_set=written_ids)).as_py() != len(written_ids):
        raise StoreError(f"namespace {name!r}: rows written since the base are not among the ids the store "
                         "holds; the dump is not written")
    rewritten = (pc.sum(pc.is_in(base_ids, value_set=written_ids)).as_py() or 0) if len(written_ids) else 0
    if len(written_ids) - rewritten != len(ids) - int(np.count_nonzero(kept)):
        raise StoreError(f"namespace {name!r}: {len(ids) - int(np.count_nonzero(kept)):,} ids the base does not hold "
                         f"are in the store, but only {len(written_ids) - rewritten:,} of them were read as written "
                         "since; the dump is not written (take a full export)")
    gone = base_ids.filter(pa.array(~kept))
    if len(gone):
        deletes = pa.RecordBatch.from_arrays([gone], schema=DELETES_SCHEMA)
        writers.of(DELETES_PREFIX, name, DELETES_SCHEMA).write(deletes)
    return len(ids), len(gone)


def _among(ids: pa.Array, *others: pa.Array) -> tuple[bool, list[np.ndarray]]:
    """Whether ``ids`` are unique, and for each of ``others`` which of its values are among ``ids``, in one hash
    pass over them all (a dictionary encoding: equal values get one code), where a uniqueness check and a
    membership test per array would each hash every id again."""
    codes = pc.dictionary_encode(pa.concat_arrays([ids, *others])).indices.to_numpy(zero_copy_only=False)
    present = np.zeros(int(codes.max()) + 1 if len(codes) else 0, dtype=bool)
    present[codes[:len(ids)]] = True
    unique = int(np.count_nonzero(present)) == len(ids)
    found, start = [], len(ids)
    for other in others:
        found.append(present[codes[start:start + len(other)]])
        start += len(other)
    return unique, found


def digests_problems(links: Sequence[Link]) -> list[str]:
    """Where the digests the newest link records differ from those of the chain's rows, recomputed (what
    ``validate`` of a chain checks: the next ``export --since`` trusts them)."""
    newest = links[-1]
    if newest.manifest.digests is None or newest.manifest.digests.algorithm != DIGEST_ALGORITHM:
        return []
    problems = []
    for namespace in resolve_chain(links):
        try:
            stored = _stored_digests(newest, namespace)
        except DumpError as exc:
            problems.append(str(exc))
            continue
        assert stored is not None
        ids_parts, digest_parts = [], []
        for batch, digests in _digested(_resolved_batches(namespace)):
            ids_parts.append(kept_ids(batch))
            digest_parts.append(digests)
        computed_ids = pa.chunked_array(ids_parts, pa.string()).combine_chunks()
        at = pc.index_in(computed_ids, value_set=stored[0]).to_numpy(zero_copy_only=False)
        differ = int(np.count_nonzero(stored[1][at.astype(np.int64)] != np.concatenate(digest_parts)))
        if differ:
            problems.append(f"{newest.shown}: {differ:,} row digests of namespace {namespace.name!r} differ from "
                            "those of the chain's rows")
    return problems


def _base_digests(link: Link, base: _Namespace | None) -> tuple[pa.Array, np.ndarray]:
    """Ids and row digests of a namespace's resolved state: those the base recorded when it has them (a
    delta made by vecfmt), else computed from every row of the chain (each file's SHA-256 checked)."""
    if base is None:
        return pa.array([], pa.string()), np.zeros(0, np.uint64)
    stored = _stored_digests(link, base)
    if stored is not None:
        return stored
    ids_parts, digest_parts = [], []
    for batch, digests in _digested(_resolved_batches(base)):
        ids_parts.append(kept_ids(batch))
        digest_parts.append(digests)
    return pa.chunked_array(ids_parts, pa.string()).combine_chunks(), np.concatenate(digest_parts)


def _export_namespace(exporter: Exporter, name: str, base_link: Link, base: _Namespace | None, template: Manifest,
                      schema: pa.Schema, location: Location, writers: _Writers, batch_size: int,
                      bar: RowProgress) -> tuple[int, int]:
    """Compare one namespace of the store with the resolved state's; returns (rows read, ids deleted)."""
    base_ids, base_digests = _base_digests(base_link, base)
    index = _IdIndex(base_ids)
    seen = np.zeros(len(base_ids), dtype=bool)
    source_ids: list[pa.Array] = []
    source_digests: list[np.ndarray] = []
    rows = 0
    for batch, digests in _digested(checked_batches(exporter, name, schema, template, batch_size)):
        source_ids.append(kept_ids(batch))  # a copy: the column keeps a Lance batch alive
        source_digests.append(digests)
        rows += batch.num_rows
        at = index.lookup(batch.column(ID))
        known = at >= 0
        seen[at[known]] = True
        changed = ~known
        changed[known] = digests[known] != base_digests[at[known]]
        if changed.any():
            writers.of("part", name, schema).write(batch if changed.all() else batch.filter(pa.array(changed)))
        bar.advance(batch.num_rows)
    ids = pa.chunked_array(source_ids, pa.string()).combine_chunks()
    check_unique_ids(ids, name)
    gone = base_ids.filter(pa.array(~seen))
    if len(gone):
        gone_batch = pa.RecordBatch.from_arrays([gone], schema=DELETES_SCHEMA)
        writers.of(DELETES_PREFIX, name, DELETES_SCHEMA).write(gone_batch)
    if rows:  # the state once the delta is applied is the store's rows: what the next delta compares with
        digests = pa.array(np.concatenate(source_digests), pa.uint64())
        writers.of(DIGESTS_PREFIX, name, DIGESTS_SCHEMA).write(
            pa.RecordBatch.from_arrays([ids, digests], schema=DIGESTS_SCHEMA))
    return rows, len(gone)


def checked_batches(exporter: Exporter, name: str, schema: pa.Schema, template: Manifest,
             batch_size: int) -> Iterator[pa.RecordBatch]:
    """The store's batches of one namespace, checked as a full export checks them."""
    for part in exporter.slices(name):
        for chunk in exporter.batches(part, batch_size=batch_size):
            yield check_batch(chunk.batch, schema, template.vectors)


@dataclass
class _Writers:
    """A delta's PartWriters: part files, deletes files and digests files, per namespace."""

    location: Location
    options: ParquetOptions | None
    open: dict[tuple[str, str], PartWriter] = field(default_factory=dict)

    def of(self, prefix: str, namespace: str, schema: pa.Schema) -> PartWriter:
        key = (prefix, namespace)
        if key not in self.open:
            self.open[key] = PartWriter(self.location, namespace, schema, self.options, prefix=prefix)
        return self.open[key]

    def close(self, prefix: str) -> list[FileEntry]:
        files = [f for (kind, _), writer in self.open.items() if kind == prefix for f in writer.close()]
        return sorted(files, key=lambda f: f.path)

    def abort(self) -> None:
        for writer in self.open.values():
            writer.abort()


def _prepare(location: Location, overwrite: bool) -> None:
    """``prepare_location``, and with ``overwrite`` over an old delta also its deletes and digests files, which
    prepare_location does not know (it deletes what the old manifest lists under ``files``), after the
    old manifest is gone, as the spec's order wants."""
    old_deletes: list[str] = []
    if overwrite and location.exists(MANIFEST_NAME):
        with contextlib.suppress(DumpError, OSError, ValueError, KeyError, TypeError):
            old = Manifest.from_json(location.read_bytes(MANIFEST_NAME).to_pybytes(), allow_delta=True)
            old_deletes = [f.path for f in [*old.deletes, *old.digest_files]]
    prepare_location(location, overwrite)
    for path in old_deletes:
        with contextlib.suppress(FileNotFoundError):
            location.delete(path)


# --- restore and compact ----------------------------------------------------------------------------


def restore(
    chain: Sequence[str],
    target: str,
    *,
    if_exists: IfExists | str = IfExists.FAIL,
    batch_size: int = DEFAULT_BATCH_SIZE,
    progress: bool | None = None,
) -> TransferResult:
    """Apply a chain (a full dump, then its deltas in order) to a store through its normal importer: the
    resolved state's rows, each link's rows less those later links replace or delete, checked as an
    import checks them. Before anything is written the chain is checked whole: its links (by manifest
    SHA-256), every file's size, the deletes files' SHA-256, unique ids, and that each delta adds up; each
    part file's SHA-256 is checked as it is read, before any of its rows is written. A chain with deletes is
    refused with ``if_exists`` append or upsert (importers cannot delete: the target would keep those ids)."""
    started = time.perf_counter()
    links = open_chain(chain)
    if_exists = IfExists(if_exists)
    _refuse_deletes_into_existing(links, if_exists)
    namespaces = resolve_chain(links)
    template = _full_template(links[-1].manifest, namespaces)
    importer = open_importer(target)
    if hasattr(importer, "source_dump"):  # a store that loads a dump's files itself must not: rows are filtered
        importer.source_dump = None
    moved = 0
    try:
        try:
            importer.prepare(template, if_exists=if_exists, resume=False)
            schema = template.arrow_schema()
            with RowProgress("restore", template.total_rows, progress) as bar:
                for namespace in namespaces:
                    for batch in _resolved_batches(namespace, batch_size=batch_size):
                        batch = check_batch(batch, schema, template.vectors)  # NaN/inf even in a hand-made dump
                        moved += batch.num_rows
                        importer.write(namespace.name, batch, rows_done=moved)
                        bar.advance(batch.num_rows)
                importer.finish()
        except BaseException as exc:
            _abort(importer)  # a restore does not resume: what it staged is of no use
            if isinstance(exc, StoreError):  # the importer's advice (append, upsert, resume) is an import's
                raise StoreError(_restore_refusal(str(exc))) from None
            raise
    finally:
        importer.close()
    return TransferResult(moved, 0, time.perf_counter() - started, [ns.name for ns in namespaces])


def _refuse_deletes_into_existing(links: Sequence[Link], if_exists: IfExists) -> None:
    """A restore writes the resolved state's rows through the importer, which cannot delete by (namespace,
    id): appended or upserted into a table that holds the rows, the ids and namespaces the chain deletes would
    stay. Such a chain restores into a new target, or with replace."""
    if if_exists not in (IfExists.APPEND, IfExists.UPSERT):
        return
    for link in links:
        m = link.manifest
        if m.is_delta and (m.deletes or any(ns.deleted for ns in m.namespaces)):
            deleted = sum(ns.deleted or 0 for ns in m.namespaces)
            raise InvalidDataError(f"{link.shown} deletes {deleted:,} ids, which a restore with if_exists "
                                   f"{if_exists.value} would leave in the target (importers add rows, they do not "
                                   "delete them): restore a chain with deletes into a new target or with if_exists "
                                   "replace; nothing was written")


# The importers' refusals of an existing target suggest what an import may do (append, upsert, resume);
# a restore writes a filtered chain and never resumes: it is run again with replace.
_IMPORT_ADVICE = re.compile(r"[\s;:,(]*(?:\(?choose if_exists|an interrupted import|resume (?:it|that import)|"
                            r"run without resume)", re.IGNORECASE)


def _restore_refusal(message: str) -> str:
    """An importer's refusal as a restore's: without advice on append, upsert or resume, which a restore
    cannot follow, and saying to re-run it with if_exists replace when the target exists."""
    cut = _IMPORT_ADVICE.search(message)
    if cut is None and "resume" not in message.lower():
        return message
    head = message[:cut.start()] if cut is not None else message.split(";")[0]
    return (f"{head.rstrip(' .;:,(')}: a restore does not resume; re-run it with if_exists replace to write the "
            "chain over it (or restore into a new target)")


def _abort(importer: Importer) -> None:
    abort = getattr(importer, "abort", None)  # optional (stores/base.py)
    if callable(abort):
        with contextlib.suppress(StoreError):
            abort()


def compact(
    chain: Sequence[str],
    out: str,
    *,
    overwrite: bool = False,
    options: ParquetOptions | None = None,
    progress: bool | None = None,
) -> Manifest:
    """Fold a chain into one full dump at ``out``: the resolved state, written and checked as any dump
    (format 1.0, the newest link's vectors, source, model and extra)."""
    links = open_chain(chain)
    namespaces = resolve_chain(links)
    _target_location(links, out, "compacted dump", refuse_later_deltas=True)
    m = links[-1].manifest
    # How the newest delta found its changes is not a fact of the state; its change marker is (of its snapshot).
    extra = {key: value for key, value in m.extra.items() if key != FOUND_BY}
    with (
        DumpWriter(out, vectors=m.vectors, sparse_values=m.sparse_values, document=m.document,
                   model=m.embedding_model, source=m.source, extra=extra, overwrite=overwrite,
                   options=options) as writer,
        RowProgress("compact", sum(ns.rows for ns in namespaces), progress) as bar,
    ):
        for namespace in namespaces:
            for batch in _resolved_batches(namespace):
                writer.write_batch(batch, namespace.name)
                bar.advance(batch.num_rows)
        written = writer.rows_by_namespace()
        for namespace in namespaces:
            if written.get(namespace.name, 0) != namespace.rows:  # cannot happen unless a file changed mid-way
                raise DumpError(f"namespace {namespace.name!r}: {written.get(namespace.name, 0):,} rows written, "
                                f"the chain resolves to {namespace.rows:,}")
    assert writer.manifest is not None
    return writer.manifest
