"""``vecfmt validate``: every problem of a dump, each named with its file and row."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from vecfmt.errors import DumpError
from vecfmt.manifest import MANIFEST_NAME, FileEntry
from vecfmt.ops.incremental import (
    DELETES_SCHEMA,
    DIGESTS_SCHEMA,
    Link,
    digests_problems,
    follow_chain,
    load_listed_file,
    open_chain,
    read_manifest,
    resolve_chain,
)
from vecfmt.reader import Dump
from vecfmt.schema import (
    ID,
    METADATA,
    NAN_OR_INFINITY,
    NESTED_TOO_DEEPLY,
    SPARSE_VALUES,
    malformed_sparse_rows,
    non_finite_rows,
    null_component_rows,
    parse_metadata_json,
)
from vecfmt.storage import redact, resolve
from vecfmt.writer import repeated_values

MAX_ROWS_PER_PROBLEM = 5  # rows named per kind of problem and file; the count says how many in all


@dataclass(frozen=True)
class Problem:
    file: str | None  # relative to the dump root; None for the dump as a whole
    row: int | None  # row number inside the file, from 0
    message: str

    def __str__(self) -> str:
        where = self.file or "dump"
        if self.row is not None:
            where += f" row {self.row}"
        return f"{where}: {self.message}"


def validate_dump(uri: str) -> list[Problem]:
    """Check the manifest (JSON Schema, version, counts), every file's size, checksum, Parquet schema and
    row count, and every row: null or duplicate ids, NaN/inf, metadata that is not a JSON object,
    malformed sparse vectors. A delta's deletes files are checked alike (size, checksum, schema, rows),
    and their ids: unique per namespace, none also written by the delta. An empty list means the dump is
    valid. Raises DumpError when there is nothing to check at ``uri`` (or the URI itself is refused)."""
    location = resolve(uri)
    try:
        dump = Dump(location, read_manifest(location)[1])
    except DumpError as exc:
        if not location.is_dir():
            raise  # nothing there to check is no invalid dump: the check could not run
        return [Problem(MANIFEST_NAME, None, str(exc))]
    problems = [Problem(entry.path, None, message) for entry, message in dump.size_problems()]
    problems.extend(_unlisted_parquet(uri, dump))
    broken = {p.file for p in problems}
    for namespace in dump.namespaces:
        seen_ids: list[tuple[FileEntry, pa.ChunkedArray]] = []
        for entry in dump.files(namespace):
            if entry.path in broken:
                continue
            ids, found = _check_file(dump, entry)
            problems.extend(found)
            if ids is not None:
                seen_ids.append((entry, ids))
        problems.extend(_duplicate_ids(namespace, seen_ids))
        problems.extend(_check_deletes(dump, namespace, broken, seen_ids))
        problems.extend(_check_digests(dump, namespace, broken))
    return problems


def validate_dumps(uris: list[str], followed: list[str] | None = None) -> list[Problem]:
    """What ``vecfmt validate`` checks: one dump, or a chain given in order. A delta given alone is checked
    with its chain, its bases followed through the URIs its manifest records (as ``export --since`` follows
    them): a delta is only as good as its bases, and one whose base is gone or changed cannot be restored.
    ``followed``, when given, receives the URIs of the chain so followed, full dump first."""
    if len(uris) != 1:
        return validate_chain(uris)
    problems = validate_dump(uris[0])
    if problems or not read_manifest(resolve(uris[0]))[1].is_delta:
        return problems
    try:
        links = follow_chain(uris[0])
    except DumpError as exc:
        return [Problem(None, None, f"base missing or changed, so this delta cannot be restored: {exc}")]
    bases = [link.uri for link in links[:-1]]
    if followed is not None:
        followed.extend(redact(link.uri) for link in links)
    return _each_dump(bases) or _links(links)


def validate_chain(uris: list[str]) -> list[Problem]:
    """Check a chain (a full dump, then its deltas in order): every dump as ``validate_dump`` does (each
    problem's file prefixed by its dump's URI), then the links (each delta's base is the dump before it,
    by its manifest's SHA-256) and that each delta adds up on the state before it (its deleted ids were
    there, the rows it says it leaves), and the row digests the newest delta records against those of the
    chain's rows (the next ``export --since`` trusts them). Raises DumpError when a dump is not there at
    all."""
    problems = _each_dump(uris)
    if problems:
        return problems
    try:
        links = open_chain(uris)
    except DumpError as exc:
        return [Problem(None, None, str(exc))]
    return _links(links)


def _each_dump(uris: list[str]) -> list[Problem]:
    """``validate_dump`` of each, every problem's file prefixed by its dump's URI."""
    problems = []
    for uri in uris:
        shown = redact(uri)
        problems.extend(Problem(f"{shown}/{p.file}" if p.file else shown, p.row, p.message)
                        for p in validate_dump(uri))
    return problems


def _links(links: list[Link]) -> list[Problem]:
    """That each delta of an opened chain adds up, and the newest delta's digests."""
    try:
        resolve_chain(links)
    except DumpError as exc:
        return [Problem(None, None, str(exc))]
    return [Problem(None, None, message) for message in digests_problems(links)]


def _check_digests(dump: Dump, namespace: str, broken: set[str | None]) -> list[Problem]:
    """Digests files of one namespace: each checked against the manifest, their ids unique."""
    problems, seen = [], []
    for entry in dump.manifest.digests_of(namespace):
        if entry.path in broken:
            continue
        try:
            seen.append((entry, load_listed_file(dump, entry, DIGESTS_SCHEMA).column(ID)))
        except DumpError as exc:
            problems.append(Problem(entry.path, None, str(exc).removeprefix(f"{entry.path} ")))
    return [*problems, *_duplicate_ids(namespace, seen)]


def _check_deletes(dump: Dump, namespace: str, broken: set[str | None],
                   written: list[tuple[FileEntry, pa.ChunkedArray]]) -> list[Problem]:
    """A delta's deletes files of one namespace: each checked against the manifest (size, SHA-256, rows,
    schema); their ids unique, and none also among the rows the delta writes."""
    problems, seen = [], []
    for entry in dump.manifest.deletes_of(namespace):
        if entry.path in broken:
            continue
        try:
            ids = load_listed_file(dump, entry, DELETES_SCHEMA).column(ID)
        except DumpError as exc:
            problems.append(Problem(entry.path, None, str(exc).removeprefix(f"{entry.path} ")))
            continue
        seen.append((entry, ids))
        also_written = pa.chunked_array([c for _, col in written for c in col.chunks], pa.string())
        rows = np.flatnonzero(pc.is_in(ids, value_set=also_written).to_numpy(zero_copy_only=False))
        for row in rows[:MAX_ROWS_PER_PROBLEM]:
            problems.append(Problem(entry.path, int(row), f"id {ids[int(row)].as_py()!r} is deleted and also written "
                                                          f"by this delta in namespace {namespace!r}"))
    return [*problems, *_duplicate_ids(namespace, seen)]


def _unlisted_parquet(uri: str, dump: Dump) -> list[Problem]:
    """``.parquet`` files in the dump's folders that the manifest does not list: vecfmt readers ignore
    them (spec 2), but Pinecone's bulk import reads every one, so the dump would not arrive as it is."""
    listed = {entry.path for entry in [*dump.manifest.files, *dump.manifest.deletes, *dump.manifest.digest_files]}
    return [Problem(path, None, "a .parquet file the manifest does not list: vecfmt readers ignore it, Pinecone's "
                                "bulk import would import it; remove it")
            for path in resolve(uri).listdir()
            if path.count("/") == 1 and path.endswith(".parquet") and path not in listed]  # fmt: skip


def _check_file(dump: Dump, entry: FileEntry) -> tuple[pa.ChunkedArray | None, list[Problem]]:
    problems: list[Problem] = []
    ids: list[pa.Array] = []
    offset = 0
    try:
        for batch in dump.file_batches(entry, conform=False):  # null ids are reported row by row below
            problems.extend(_check_rows(dump, entry, batch, offset))
            ids.append(batch.column(ID))
            offset += batch.num_rows
    except DumpError as exc:
        message = str(exc)
        prefix = f"{entry.path} "
        return None, [*problems, Problem(entry.path, None, message.removeprefix(prefix))]
    return pa.chunked_array(ids, pa.string()), problems


def _check_rows(dump: Dump, entry: FileEntry, batch: pa.RecordBatch, offset: int) -> list[Problem]:
    out: list[Problem] = []

    def report(mask: np.ndarray, what: str, *, with_id: bool = True) -> None:
        rows = np.flatnonzero(mask)
        if len(rows) == 0:
            return
        for row in rows[:MAX_ROWS_PER_PROBLEM]:
            ident = f" (id {batch.column(ID)[int(row)].as_py()!r})" if with_id else ""
            out.append(Problem(entry.path, offset + int(row), f"{what}{ident}"))
        if len(rows) > MAX_ROWS_PER_PROBLEM:
            out.append(Problem(entry.path, None, f"{len(rows)} rows in all: {what}"))

    report(batch.column(ID).is_null().to_numpy(zero_copy_only=False), "id is null", with_id=False)
    for spec in dump.manifest.vectors:
        column = batch.column(spec.column)
        valid = column.is_valid().to_numpy(zero_copy_only=False)
        if spec.column == "values":
            report(~valid, f"vector {spec.name!r} is null")
        report(null_component_rows(column), f"vector {spec.name!r} has a null component")
        report(non_finite_rows(column), f"vector {spec.name!r} holds NaN or inf")
    for what, mask in _bad_json(batch.column(METADATA)).items():
        report(mask, what)
    if dump.manifest.sparse_values:
        report(malformed_sparse_rows(batch.column(SPARSE_VALUES)),
               "sparse_values malformed (lengths differ, indices not increasing, or values not finite)")
    return out


NOT_AN_OBJECT = "metadata is not a JSON object"


def _bad_json(column: pa.Array) -> dict[str, np.ndarray]:
    """A mask of bad rows per kind of problem, kinds ordered by their first bad row."""
    masks: dict[str, np.ndarray] = {}
    for i, text in enumerate(column.to_pylist()):  # JSON has to be parsed row by row
        if text is None:
            continue
        try:
            what = None if isinstance(parse_metadata_json(text), dict) else NOT_AN_OBJECT
        except ValueError as exc:  # NaN/Infinity and deep nesting are named; anything else is broken JSON
            what = str(exc) if str(exc) in (NAN_OR_INFINITY, NESTED_TOO_DEEPLY) else NOT_AN_OBJECT
        if what is not None:
            masks.setdefault(what, np.zeros(len(column), dtype=bool))[i] = True
    return dict(sorted(masks.items(), key=lambda kv: int(np.argmax(kv[1]))))


def _duplicate_ids(namespace: str, seen: list[tuple[FileEntry, pa.ChunkedArray]]) -> list[Problem]:
    if not seen:
        return []
    # null ids are reported row by row already; they are not duplicates of each other
    ids = pa.chunked_array([c for _, col in seen for c in col.chunks], pa.string()).drop_null()
    dupes = repeated_values(ids)
    if not len(dupes):
        return []
    problems = []
    for entry, column in seen:
        rows = np.flatnonzero(pc.is_in(column, value_set=dupes).to_numpy(zero_copy_only=False))
        for row in rows[:MAX_ROWS_PER_PROBLEM]:
            ident = column[int(row)].as_py()
            problems.append(Problem(entry.path, int(row), f"duplicate id {ident!r} in namespace {namespace!r}"))
    problems.append(Problem(None, None, f"{len(dupes)} ids occur more than once in namespace {namespace!r}"))
    return problems
