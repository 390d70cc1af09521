"""``vecfmt diff A B``: ids only in A or B, vectors changed beyond a tolerance, metadata changed.

Rows are matched by id within each namespace. A's namespace is held in memory (ids, vectors, metadata:
about 3 GB for a million 768-dim rows); B streams past it in batches."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from vecfmt.errors import DumpError, InvalidDataError
from vecfmt.manifest import Manifest
from vecfmt.reader import Dump
from vecfmt.schema import DOCUMENT, ID, METADATA, parse_metadata_json, vectors_numpy
from vecfmt.storage import redact, resolve
from vecfmt.writer import check_unique_ids

EXAMPLES = 5

DIFF_SCHEMA = pa.schema([
    pa.field("namespace", pa.string(), nullable=False),
    pa.field("id", pa.string(), nullable=False),
    pa.field("change", pa.string(), nullable=False),  # only_in_a | only_in_b | changed
    pa.field("vector_changed", pa.bool_()),
    pa.field("metadata_changed", pa.bool_()),
    pa.field("document_changed", pa.bool_()),
    pa.field("max_abs_diff", pa.float32()),
    pa.field("cosine_similarity", pa.float64()),
])


@dataclass
class NamespaceDiff:
    rows_a: int = 0
    rows_b: int = 0
    only_in_a: int = 0
    only_in_b: int = 0
    vectors_changed: int = 0
    metadata_changed: int = 0
    documents_changed: int = 0
    max_abs_diff: float = 0.0
    min_cosine_similarity: float = 1.0
    examples: dict[str, list[str]] = field(default_factory=dict)

    @property
    def identical(self) -> bool:
        return not (self.only_in_a or self.only_in_b or self.vectors_changed
                    or self.metadata_changed or self.documents_changed)

    def note(self, kind: str, ids: pa.Array) -> None:
        room = EXAMPLES - len(self.examples.get(kind, []))
        if room > 0 and len(ids):
            self.examples.setdefault(kind, []).extend(ids.slice(0, room).to_pylist())


@dataclass
class DiffResult:
    a: str
    b: str
    tolerance: float
    namespaces: dict[str, NamespaceDiff]
    # columns (document, sparse_values, named vectors) one dump has and the other lacks: data lost or added
    columns_only_in_a: list[str] = field(default_factory=list)
    columns_only_in_b: list[str] = field(default_factory=list)

    @property
    def identical(self) -> bool:
        return (not self.columns_only_in_a and not self.columns_only_in_b
                and all(ns.identical for ns in self.namespaces.values()))

    def to_dict(self) -> dict[str, Any]:
        totals = {k: sum(getattr(ns, k) for ns in self.namespaces.values())
                  for k in ("rows_a", "rows_b", "only_in_a", "only_in_b", "vectors_changed",
                            "metadata_changed", "documents_changed")}
        values = list(self.namespaces.values())
        totals["max_abs_diff"] = max((ns.max_abs_diff for ns in values), default=0.0)
        totals["min_cosine_similarity"] = min((ns.min_cosine_similarity for ns in values), default=1.0)
        return {
            "a": self.a,
            "b": self.b,
            "tolerance": self.tolerance,
            "identical": self.identical,
            "columns_only_in_a": self.columns_only_in_a,
            "columns_only_in_b": self.columns_only_in_b,
            "totals": totals,
            "namespaces": {name: {**ns.__dict__, "identical": ns.identical}
                           for name, ns in self.namespaces.items()},
        }


def diff_dumps(
    a_uri: str,
    b_uri: str,
    *,
    tolerance: float = 0.0,
    vector: str | None = None,
    output: str | None = None,
    batch_size: int = 65_536,
) -> DiffResult:
    """Compare two dumps row by row (matched by id): one vector (the primary unless ``vector`` names
    another), the metadata (as JSON values, types kept: ``1``, ``1.0`` and ``true`` differ, so do ``0`` and
    ``-0.0``) and the documents (a dump without them counts as all null). A column one dump has and the
    other lacks is a difference; the contents of sparse and other named vectors are not compared.
    ``tolerance`` is the largest absolute difference of any vector component still counted as
    unchanged. ``output`` writes every differing row as Parquet. Ids must be unique on both sides."""
    a, b = _open_side(a_uri, "A"), _open_side(b_uri, "B")
    column_a, column_b = _vector_columns(a.manifest, b.manifest, vector)
    result = DiffResult(a.uri, b.uri, tolerance, {},
                        columns_only_in_a=[c for c in a.schema.names if c not in b.schema.names],
                        columns_only_in_b=[c for c in b.schema.names if c not in a.schema.names])
    writer = _open_output(output)
    try:
        for namespace in sorted(set(a.namespaces) | set(b.namespaces)):
            result.namespaces[namespace] = _diff_namespace(
                a, b, namespace, column_a, column_b, tolerance, batch_size, writer
            )
    finally:
        if writer is not None:
            writer.close()
    return result


def _open_side(uri: str, side: str) -> Dump:
    """One dump to compare; a delta is refused naming which argument it is (the reader's line does not)."""
    try:
        return Dump.open(uri)
    except DumpError as exc:
        if "this is a delta dump" not in str(exc):
            raise
        raise DumpError(f"diff compares whole dumps, and {side} ({redact(uri)}) is a delta: {exc}") from None


def _vector_columns(a: Manifest, b: Manifest, name: str | None) -> tuple[str | None, str | None]:
    if not a.vectors or not b.vectors:
        return None, None
    va, vb = a.vector(name), b.vector(name)
    if va.dimension != vb.dimension:
        raise InvalidDataError(
            f"cannot compare vectors: A's {va.name!r} has {va.dimension} dims, B's {vb.name!r} {vb.dimension}"
        )
    return va.column, vb.column


def _load_a(
    dump: Dump, namespace: str, column: str | None, extra: list[str], batch_size: int
) -> tuple[pa.Table, np.ndarray | None]:
    """A's ids, metadata (and documents) as one table, and its vectors copied into one matrix as the
    batches stream past, so the peak is the matrix plus one batch."""
    names = [ID, METADATA, *extra]
    if namespace not in dump.namespaces:
        return pa.table({n: pa.array([], pa.string()) for n in names}), None
    rows = sum(f.rows for f in dump.files(namespace))
    matrix = None
    if column is not None:
        matrix = np.empty((rows, dump.manifest.vector(column).dimension), dtype=np.float32)
    parts, position = [], 0
    for batch in dump.batches(namespace, columns=[*names, *([column] if column else [])], batch_size=batch_size):
        if matrix is not None:
            matrix[position:position + batch.num_rows] = vectors_numpy(batch.column(column))
        position += batch.num_rows
        parts.append(batch.select(names))
    return pa.Table.from_batches(parts, schema=dump.schema_of(names)).combine_chunks(), matrix


def _diff_namespace(
    a: Dump, b: Dump, namespace: str, column_a: str | None, column_b: str | None,
    tolerance: float, batch_size: int, writer: pq.ParquetWriter | None,
) -> NamespaceDiff:
    out = NamespaceDiff()
    with_document = a.manifest.document or b.manifest.document  # one side without them lost them all
    table_a, matrix_a = _load_a(a, namespace, column_a, [DOCUMENT] if a.manifest.document else [], batch_size)
    ids_a = table_a.column(ID)
    check_unique_ids(ids_a, namespace)
    out.rows_a = len(table_a)
    seen_in_b = np.zeros(len(table_a), dtype=bool)

    cols_b = [ID, *([column_b] if column_b else []), METADATA, *([DOCUMENT] if b.manifest.document else [])]
    present = namespace in b.namespaces
    # One hash table of A's ids for all of B (building it per batch would dominate the run).
    ids_b = [x.column(ID) for x in b.batches(namespace, columns=[ID], verify=False)] if present else []
    check_unique_ids(pa.chunked_array(ids_b, pa.string()), namespace)
    index_all = pc.index_in(pa.chunked_array(ids_b, pa.string()), value_set=ids_a).combine_chunks()
    offset = 0
    for batch in b.batches(namespace, columns=cols_b, batch_size=batch_size) if present else []:
        out.rows_b += batch.num_rows
        index = index_all.slice(offset, batch.num_rows)
        offset += batch.num_rows
        matched = index.is_valid()
        new = batch.column(ID).filter(pc.invert(matched))
        out.only_in_b += len(new)
        out.note("only_in_b", new)
        _write(writer, namespace, new, "only_in_b")
        if not pc.any(matched).as_py():
            continue
        both = batch.filter(matched)
        rows_a = index.filter(matched).to_numpy(zero_copy_only=False)
        seen_in_b[rows_a] = True
        _compare(out, namespace, both, table_a.take(pa.array(rows_a)), matrix_a, rows_a,
                 column_b, tolerance, with_document, writer)
    gone = ids_a.filter(pa.array(~seen_in_b)).combine_chunks()
    out.only_in_a = len(gone)
    out.note("only_in_a", gone)
    _write(writer, namespace, gone, "only_in_a")
    return out


def _compare(
    out: NamespaceDiff, namespace: str, b: pa.RecordBatch, a: pa.Table, matrix_a: np.ndarray | None,
    rows_a: np.ndarray, column_b: str | None, tolerance: float, with_document: bool,
    writer: pq.ParquetWriter | None,
) -> None:
    n = b.num_rows
    vector_changed = np.zeros(n, dtype=bool)
    max_abs = np.zeros(n, dtype=np.float32)
    cosine = np.ones(n, dtype=np.float64)
    if matrix_a is not None and column_b is not None:
        va = matrix_a[rows_a]
        vb = vectors_numpy(b.column(column_b))
        max_abs = np.abs(va - vb).max(axis=1) if va.shape[1] else max_abs
        vector_changed = max_abs > tolerance
        moved = np.flatnonzero(max_abs > 0)  # identical vectors have cosine 1; skip their arithmetic
        va, vb = va[moved], vb[moved]
        dot = np.einsum("ij,ij->i", va, vb, dtype=np.float64)
        norms = np.sqrt(np.einsum("ij,ij->i", va, va, dtype=np.float64)
                        * np.einsum("ij,ij->i", vb, vb, dtype=np.float64))
        with np.errstate(invalid="ignore", divide="ignore"):
            cosine[moved] = np.where(norms > 0, dot / norms, 1.0)
        out.max_abs_diff = max(out.max_abs_diff, float(max_abs.max(initial=0.0)))
        out.min_cosine_similarity = min(out.min_cosine_similarity, float(cosine.min(initial=1.0)))
    metadata_changed = _json_differs(a.column(METADATA), b.column(METADATA))
    document_changed = (
        ~_equal(_column_or_nulls(a, DOCUMENT), _column_or_nulls(b, DOCUMENT)) if with_document
        else np.zeros(n, dtype=bool)
    )
    ids = b.column(ID)
    for kind, mask, counter in (("vectors_changed", vector_changed, "vectors_changed"),
                                ("metadata_changed", metadata_changed, "metadata_changed"),
                                ("documents_changed", document_changed, "documents_changed")):
        setattr(out, counter, getattr(out, counter) + int(mask.sum()))
        out.note(kind, ids.filter(pa.array(mask)))
    changed = vector_changed | metadata_changed | document_changed
    if writer is not None and changed.any():
        keep = pa.array(changed)
        writer.write_table(pa.table({
            "namespace": pa.repeat(pa.scalar(namespace), int(changed.sum())),
            "id": ids.filter(keep),
            "change": pa.repeat(pa.scalar("changed"), int(changed.sum())),
            "vector_changed": pa.array(vector_changed[changed]),
            "metadata_changed": pa.array(metadata_changed[changed]),
            "document_changed": pa.array(document_changed[changed]),
            "max_abs_diff": pa.array(max_abs[changed], pa.float32()),
            "cosine_similarity": pa.array(cosine[changed], pa.float64()),
        }, schema=DIFF_SCHEMA))


def _column_or_nulls(data: pa.Table | pa.RecordBatch, name: str) -> pa.Array | pa.ChunkedArray:
    return data.column(name) if name in data.schema.names else pa.nulls(data.num_rows, pa.string())


def _equal(x: pa.ChunkedArray | pa.Array, y: pa.Array) -> np.ndarray:
    """Null-aware equality: two nulls are equal, a null and a value are not."""
    same = pc.equal(x, y)
    both_null = pc.and_(pc.is_null(x), pc.is_null(y))
    return pc.or_kleene(pc.fill_null(same, False), both_null).to_numpy(zero_copy_only=False)


def _json_differs(a: pa.ChunkedArray | pa.Array, b: pa.Array) -> np.ndarray:
    """Metadata differs when the JSON values differ; equal texts are not parsed at all."""
    differs = ~_equal(a, b)
    if differs.any():
        texts_a = pc.take(a, pa.array(np.flatnonzero(differs))).to_pylist()
        texts_b = pc.take(b, pa.array(np.flatnonzero(differs))).to_pylist()
        for pos, ta, tb in zip(np.flatnonzero(differs), texts_a, texts_b, strict=True):
            if ta is not None and tb is not None:  # a null beside a text differs; only texts are parsed
                ca = _canonical(ta)
                differs[pos] = ca is None or ca != _canonical(tb)
    return differs


def _canonical(text: str) -> str | None:
    """One spelling per JSON value that keeps its types: keys sorted, one number format (``1``, ``1.0``,
    ``-0.0`` and ``true`` stay distinct, where Python's ``==`` says ``1 == 1.0 == True`` and ``0 == -0.0``).
    None when the text cannot be parsed: such a row, whose texts already differ, differs."""
    try:
        return json.dumps(parse_metadata_json(text), sort_keys=True, ensure_ascii=False, separators=(",", ":"))
    except (ValueError, RecursionError):
        return None


def _open_output(output: str | None) -> pq.ParquetWriter | None:
    if output is None:
        return None
    location = resolve(output)
    return pq.ParquetWriter(location.root, DIFF_SCHEMA, filesystem=location.fs, compression="zstd")


def _write(writer: pq.ParquetWriter | None, namespace: str, ids: pa.Array | pa.ChunkedArray, change: str) -> None:
    if writer is None or len(ids) == 0:
        return
    n = len(ids)
    writer.write_table(pa.table({
        "namespace": pa.repeat(pa.scalar(namespace), n),
        "id": ids,
        "change": pa.repeat(pa.scalar(change), n),
        "vector_changed": pa.nulls(n, pa.bool_()),
        "metadata_changed": pa.nulls(n, pa.bool_()),
        "document_changed": pa.nulls(n, pa.bool_()),
        "max_abs_diff": pa.nulls(n, pa.float32()),
        "cosine_similarity": pa.nulls(n, pa.float64()),
    }, schema=DIFF_SCHEMA))
