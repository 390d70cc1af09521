"""``vecfmt validate``: every problem of a dump, each named with its file and row."""

from __future__ import annotations

import json
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from vecfmt.errors import DumpError
from vecfmt.manifest import MANIFEST_NAME, FileEntry
from vecfmt.reader import Dump
from vecfmt.schema import ID, METADATA, SPARSE_VALUES, malformed_sparse_rows, non_finite_rows, null_component_rows

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
    malformed sparse vectors. An empty list means the dump is valid."""
    try:
        dump = Dump.open(uri, check_files=False)
    except DumpError as exc:
        return [Problem(MANIFEST_NAME, None, str(exc))]
    problems = [Problem(entry.path, None, message) for entry, message in dump.size_problems()]
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
    return problems


def _check_file(dump: Dump, entry: FileEntry) -> tuple[pa.ChunkedArray | None, list[Problem]]:
    problems: list[Problem] = []
    ids: list[pa.Array] = []
    offset = 0
    try:
        for batch in dump.file_batches(entry):
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

    def report(mask: np.ndarray, what: str) -> None:
        rows = np.flatnonzero(mask)
        if len(rows) == 0:
            return
        for row in rows[:MAX_ROWS_PER_PROBLEM]:
            ident = batch.column(ID)[int(row)].as_py()
            out.append(Problem(entry.path, offset + int(row), f"{what} (id {ident!r})"))
        if len(rows) > MAX_ROWS_PER_PROBLEM:
            out.append(Problem(entry.path, None, f"{len(rows)} rows in all: {what}"))

    report(batch.column(ID).is_null().to_numpy(zero_copy_only=False), "id is null")
    for spec in dump.manifest.vectors:
        column = batch.column(spec.column)
        valid = column.is_valid().to_numpy(zero_copy_only=False)
        if spec.column == "values":
            report(~valid, f"vector {spec.name!r} is null")
        report(null_component_rows(column), f"vector {spec.name!r} has a null component")
        report(non_finite_rows(column), f"vector {spec.name!r} holds NaN or inf")
    report(_bad_json(batch.column(METADATA)), "metadata is not a JSON object")
    if dump.manifest.sparse_values:
        report(malformed_sparse_rows(batch.column(SPARSE_VALUES)),
               "sparse_values malformed (lengths differ, indices not increasing, or values not finite)")
    return out


def _bad_json(column: pa.Array) -> np.ndarray:
    bad = np.zeros(len(column), dtype=bool)
    for i, text in enumerate(column.to_pylist()):  # JSON has to be parsed row by row
        if text is None:
            continue
        try:
            bad[i] = not isinstance(json.loads(text), dict)
        except ValueError:
            bad[i] = True
    return bad


def _duplicate_ids(namespace: str, seen: list[tuple[FileEntry, pa.ChunkedArray]]) -> list[Problem]:
    if not seen:
        return []
    ids = pa.chunked_array([c for _, col in seen for c in col.chunks], pa.string())
    if pc.count_distinct(ids).as_py() == len(ids):
        return []
    counts = pc.value_counts(ids)
    dupes = counts.filter(pc.greater(counts.field("counts"), 1)).field("values")
    problems = []
    for entry, column in seen:
        rows = np.flatnonzero(pc.is_in(column, value_set=dupes).to_numpy(zero_copy_only=False))
        for row in rows[:MAX_ROWS_PER_PROBLEM]:
            ident = column[int(row)].as_py()
            problems.append(Problem(entry.path, int(row), f"duplicate id {ident!r} in namespace {namespace!r}"))
    problems.append(Problem(None, None, f"{len(dupes)} ids occur more than once in namespace {namespace!r}"))
    return problems
