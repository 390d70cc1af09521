"""``vecfmt verify SOURCE TARGET``: did a migration keep every row, and does search still find the same?

Each side is a dump or a store. One streaming pass over each side checks completeness: rows per
namespace, ids missing, extra or duplicated, and an exact comparison of vectors, metadata and documents
for a uniform sample of rows (or for all of them). Then query vectors drawn from the same sample are run
top-k against both sides and against the exact answer computed by brute force from the source's data.

Memory: the ids of one namespace per side (about 60 bytes an id), plus three 8-byte digests per compared
row, plus the query vectors; never the vectors of the data."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field
from decimal import Decimal
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from vecfmt.errors import InvalidDataError, StoreError
from vecfmt.manifest import Manifest
from vecfmt.ops.adopt import float_vectors
from vecfmt.progress import RowProgress
from vecfmt.quality.groundtruth import SUPPORTED, TopK, exact_top_k
from vecfmt.quality.sides import DumpSide, Side, open_side
from vecfmt.reader import Dump
from vecfmt.schema import DOCUMENT, ID, METADATA, SPARSE_VALUES, is_vector_type, vector_digests, vectors_numpy
from vecfmt.storage import resolve
from vecfmt.writer import repeated_values

DEFAULT_SAMPLE = 2_000
DEFAULT_QUERIES = 100
DEFAULT_K = 10
EXAMPLES = 5
_NO_VALUE = np.uint64(0)  # the digest of a null metadata or document
_NULL_VECTOR = np.uint64(0x9E3779B97F4A7C15)  # of a null vector (any fixed value no bits are likely to give)


@dataclass
class NamespaceCheck:
    name: str
    rows_source: int = 0
    rows_target: int = 0
    missing: int = 0  # ids in the source that the target lacks
    extra: int = 0  # ids in the target that the source lacks
    duplicates_source: int = 0  # rows beyond the first of their id
    duplicates_target: int = 0
    compared: int = 0  # rows compared exactly (present on both sides)
    vectors_differ: int = 0
    metadata_differ: int = 0
    documents_differ: int = 0
    examples: dict[str, list[str]] = field(default_factory=dict)

    @property
    def complete(self) -> bool:
        return not (self.rows_source != self.rows_target or self.missing or self.extra or self.duplicates_source
                    or self.duplicates_target or self.vectors_differ or self.metadata_differ
                    or self.documents_differ)

    def note(self, kind: str, ids: pa.Array | Sequence[str]) -> None:
        room = EXAMPLES - len(self.examples.get(kind, []))
        if room > 0 and len(ids):
            values = ids.slice(0, room).to_pylist() if isinstance(ids, pa.Array) else list(ids[:room])
            self.examples.setdefault(kind, []).extend(values)


@dataclass
class SearchCheck:
    k: int
    queries: int
    metric: str
    overlap: float  # mean share of the source's top k that the target also returned
    identical: float  # share of queries whose top-k id sets are the same on both sides
    recall_source: float  # mean recall@k against the exact answer
    recall_target: float
    worst_overlap: float
    worst_recall_target: float
    # each query's figure, in the order the queries ran (namespace by namespace): the distribution that
    # the mean and the worst above summarise, for `vecfmt report`'s histogram
    overlap_per_query: list[float] = field(default_factory=list)
    recall_target_per_query: list[float] = field(default_factory=list)


@dataclass
class VerifyReport:
    source: str
    target: str
    sample: int | None  # rows compared exactly per run; None: all (--full)
    namespaces: dict[str, NamespaceCheck]
    search: SearchCheck | None
    problems: list[str] = field(default_factory=list)  # what makes the migration fail, one line each
    min_recall: float | None = None
    min_overlap: float | None = None

    @property
    def passed(self) -> bool:
        return not self.problems

    def to_dict(self) -> dict[str, Any]:
        return {
            "source": self.source,
            "target": self.target,
            "passed": self.passed,
            "problems": self.problems,
            "sample": self.sample,
            "namespaces": {name: {**asdict(ns), "complete": ns.complete} for name, ns in self.namespaces.items()},
            "search": asdict(self.search) if self.search else None,
            "min_recall": self.min_recall,
            "min_overlap": self.min_overlap,
        }


def verify(
    source: str,
    target: str,
    *,
    sample: int = DEFAULT_SAMPLE,
    full: bool = False,
    queries: int = DEFAULT_QUERIES,
    queries_file: str | None = None,
    k: int = DEFAULT_K,
    namespaces: list[str] | None = None,
    min_recall: float | None = None,
    min_overlap: float | None = None,
    seed: int = 0,
    progress: bool | None = None,
) -> VerifyReport:
    """Compare ``target`` with ``source`` (each a dump location or a store URI); see the module doc."""
    if k < 1 or sample < 0 or queries < 0:
        raise InvalidDataError("k must be at least 1, and sample and queries at least 0")
    for name, bound in (("min_recall", min_recall), ("min_overlap", min_overlap)):
        if bound is not None and not 0 <= bound <= 1:
            raise InvalidDataError(f"{name} must be between 0 and 1, not {bound}")
    with open_side(source) as src, open_side(target) as dst:
        searching = queries > 0 or queries_file is not None
        if searching:
            for side in (src, dst):
                if not side.can_search():
                    raise StoreError(f"{side.label} cannot search, so search quality cannot be measured; "
                                     "verify with queries=0 (--queries 0)")
        report = VerifyReport(src.label, dst.label, None if full else sample, {}, None,
                              min_recall=min_recall, min_overlap=min_overlap)
        chosen = _namespaces(src, dst, namespaces, report)
        comparable = _check_definitions(src.manifest, dst.manifest, report)
        rng = np.random.default_rng(seed)
        pool = _QueryPool(queries if queries_file is None else 0, rng)
        total = sum(ns.rows for ns in src.manifest.namespaces + dst.manifest.namespaces if ns.name in chosen)
        with RowProgress("verify", total or None, progress) as bar:
            for n in chosen:  # one namespace at a time: memory holds one namespace's ids per side
                picked = _Sample(None if full else sample, rng)
                source_scan = _scan(src, n, bar, sample=picked, pool=pool)
                kept = picked.ids()
                try:
                    target_scan = _scan(dst, n, bar, kept=None if full else kept)
                except InvalidDataError as exc:  # the target holds what the format refuses: a finding
                    report.problems.append(f"namespace {n!r}: the target holds a row the format refuses: {exc}")
                    continue
                report.namespaces[n] = _compare(n, source_scan, target_scan, kept, picked.digests())
        for ns in report.namespaces.values():
            if not ns.complete:
                report.problems.append(_describe_incomplete(ns))
        if comparable and searching:
            query_set = _load_queries(queries_file, src, chosen) if queries_file else pool.queries()
            report.search = _search_quality(src, dst, query_set, k, report)
        _check_thresholds(report)
        return report


# --- completeness -----------------------------------------------------------------------------------


def _namespaces(src: Side, dst: Side, wanted: list[str] | None, report: VerifyReport) -> list[str]:
    have_src, have_dst = src.namespaces(), dst.namespaces()
    if wanted is not None:
        unknown = [n for n in wanted if n not in have_src]
        if unknown:
            raise InvalidDataError(f"the source has no namespace {unknown[0]!r} (it has {have_src})")
        return list(wanted)
    extra = [n for n in have_dst if n not in have_src]
    if extra:
        report.problems.append(f"the target has namespaces the source lacks: {extra[:EXAMPLES]}")
    return have_src + extra


def _check_definitions(a: Manifest, b: Manifest, report: VerifyReport) -> bool:
    """Dimensions and metric of the primary vector; False when the vectors cannot be compared at all."""
    if a.primary is None or b.primary is None:
        if a.primary is not b.primary:
            report.problems.append("one side has no dense vectors")
        return False
    if a.primary.dimension != b.primary.dimension:
        report.problems.append(f"vectors have {a.primary.dimension} dimensions in the source and "
                               f"{b.primary.dimension} in the target")
        return False
    if a.primary.metric != b.primary.metric:
        report.problems.append(f"the source's metric is {a.primary.metric}, the target's {b.primary.metric}: "
                               "search in the target ranks differently")
    return True


class _Sample:
    """A uniform sample of a namespace's rows without knowing their count: every row draws a random key
    and the rows with the smallest keys are kept (a bottom-k sketch). ``size=None`` keeps every row. Rows
    arrive in parts that are joined only when the sample is trimmed or read, so a full comparison stays
    linear."""

    def __init__(self, size: int | None, rng: np.random.Generator) -> None:
        self.size, self.rng = size, rng
        self.parts: list[tuple[np.ndarray, pa.Array, np.ndarray]] = []  # keys, ids, digests
        self.pending = 0
        self.bound = np.inf  # keys at or above it cannot enter the sample any more

    def offer(self, batch: pa.RecordBatch, keys: np.ndarray) -> None:
        if self.size is not None:
            chosen = np.flatnonzero(keys < self.bound)
            if len(chosen) < len(keys):
                batch, keys = batch.take(pa.array(chosen)), keys[chosen]
            if not len(keys):
                return
        self.parts.append((keys, batch.column(ID).cast(pa.string()), row_digests(batch)))
        self.pending += len(keys)
        if self.size is not None and self.pending > 2 * max(self.size, 1):
            self._join()

    def _join(self) -> tuple[np.ndarray, pa.Array, np.ndarray]:
        """One part of every row kept so far, trimmed to the sample's size."""
        if not self.parts:
            return np.empty(0), pa.array([], pa.string()), np.empty((0, 3), np.uint64)
        keys = np.concatenate([p[0] for p in self.parts])
        ids = pa.concat_arrays([p[1] for p in self.parts])
        digests = np.concatenate([p[2] for p in self.parts])
        if self.size is not None and len(keys) > self.size:
            keep = np.sort(np.argpartition(keys, self.size - 1)[:self.size]) if self.size else np.empty(0, int)
            keys, digests = keys[keep], digests[keep]
            ids = ids.take(pa.array(keep, pa.int64()))
        if self.size is not None and len(keys) == self.size:
            self.bound = keys.max(initial=-np.inf)
        self.parts, self.pending = [(keys, ids, digests)], len(keys)
        return self.parts[0]

    def ids(self) -> pa.Array:
        return self._join()[1]

    def digests(self) -> np.ndarray:
        return self._join()[2]


class _QueryPool:
    """Query vectors drawn uniformly from the source's rows across namespaces (the ``count`` rows with
    the smallest random keys), with their namespace."""

    def __init__(self, count: int, rng: np.random.Generator) -> None:
        self.count, self.rng = count, rng
        self.rows: list[tuple[float, str, np.ndarray]] = []

    def offer(self, namespace: str, batch: pa.RecordBatch, keys: np.ndarray, column: str | None) -> None:
        if not self.count or column is None:
            return
        if len(self.rows) >= self.count:
            candidates = np.flatnonzero(keys < self.rows[-1][0])
        else:
            candidates = np.argsort(keys)[:self.count]
        if not len(candidates):
            return
        matrix = vectors_numpy(batch.column(column).take(pa.array(candidates)))
        # at most ``count`` rows per batch: a loop over candidates, not over the batch
        for key, row in zip(keys[candidates], matrix, strict=True):
            self.rows.append((float(key), namespace, row.copy()))
        self.rows.sort(key=lambda r: r[0])
        del self.rows[self.count:]

    def queries(self) -> list[tuple[str, np.ndarray]]:
        return [(ns, vector) for _, ns, vector in self.rows]


@dataclass
class _Scan:
    rows: int
    ids: pa.ChunkedArray
    kept_ids: pa.Array | None = None  # (target) the rows whose id the source sampled, in scan order
    kept_digests: np.ndarray | None = None


def _scan(side: Side, namespace: str, bar: RowProgress, *, sample: _Sample | None = None,
          pool: _QueryPool | None = None, kept: pa.Array | None = None) -> _Scan:
    """One pass over a namespace: every id; the source offers its rows to the sample and the query pool,
    the target keeps the digests of the rows whose ids the source sampled (of every row when ``kept`` is
    None: a full comparison, where a set lookup per batch would cost as much as the ids themselves)."""
    vector_column = side.manifest.primary.column if side.manifest.primary else None
    ids: list[pa.Array] = []
    kept_ids: list[pa.Array] = []
    kept_digests: list[np.ndarray] = []
    lookup = pc.SetLookupOptions(kept) if kept is not None and sample is None else None
    for batch in side.batches(namespace):
        batch_ids = batch.column(ID).cast(pa.string())
        ids.append(batch_ids)
        if sample is not None:
            keys = sample.rng.random(batch.num_rows)
            sample.offer(batch, keys)
            if pool is not None:
                pool.offer(namespace, batch, keys, vector_column)
        else:
            picked = batch if lookup is None else batch.filter(pc.is_in(batch_ids, options=lookup))
            if picked.num_rows:
                kept_ids.append(picked.column(ID).cast(pa.string()))
                kept_digests.append(row_digests(picked))
        bar.advance(batch.num_rows)
    chunked = pa.chunked_array(ids, pa.string())
    return _Scan(
        len(chunked), chunked,
        pa.concat_arrays(kept_ids) if kept_ids else pa.array([], pa.string()),
        np.concatenate(kept_digests) if kept_digests else np.empty((0, 3), np.uint64),
    )


def row_digests(batch: pa.RecordBatch) -> np.ndarray:
    """(rows, 3) uint64: a digest of the vectors (every dense and sparse column), of the metadata (its
    JSON value, not its spelling: key order and spacing differ between stores) and of the document."""
    n = batch.num_rows
    out = np.zeros((n, 3), dtype=np.uint64)
    for position, name in enumerate(batch.schema.names):
        column = batch.column(position)
        if is_vector_type(column.type):
            out[:, 0] += _vector_digest(column) * np.uint64(2 * position + 1)
        elif name == SPARSE_VALUES:  # a list of structs: no vectorised digest, one text per row
            out[:, 0] += _hash_texts([None if v is None else repr(v) for v in column.to_pylist()])
    if METADATA in batch.schema.names:
        texts = batch.column(METADATA).to_pylist()
        # JSON has no vectorised canonical form: one parse per compared row (sampled rows unless --full)
        out[:, 1] = _hash_texts([None if t is None else _json_value(t) for t in texts])
    if DOCUMENT in batch.schema.names:
        out[:, 2] = _hash_texts(batch.column(DOCUMENT).to_pylist())
    return out


def _json_value(text: str) -> str:
    """One spelling per JSON value: keys sorted, numbers by their value (JSON has one number type, and
    stores respell them: PostgreSQL's jsonb writes 1e2 as 100 and -0.0 as 0). Text that is not JSON
    stands for itself."""
    try:
        value = json.loads(text, parse_float=Decimal, parse_int=Decimal, parse_constant=_no_constant)
    except (ValueError, RecursionError):
        return "\0" + text
    return _spell(value)


def _no_constant(name: str) -> Any:
    raise ValueError(name)  # NaN and Infinity are not JSON


def _spell(value: Any) -> str:
    if isinstance(value, dict):
        return "{" + ",".join(json.dumps(k) + ":" + _spell(v) for k, v in sorted(value.items())) + "}"
    if isinstance(value, list):
        return "[" + ",".join(_spell(v) for v in value) + "]"
    if isinstance(value, Decimal):
        return "0" if value.is_zero() else str(value.normalize())
    return json.dumps(value, ensure_ascii=False)




def _vector_digest(column: pa.Array) -> np.ndarray:
    """``vector_digests`` of each row's bits: any change to a component changes it (-0.0 and 0.0 differ,
    as their bits do), and changes in two components cannot cancel out as in a plain weighted sum."""
    digest = vector_digests(vectors_numpy(column))
    if column.null_count:  # a null vector (a named vector a row lacks): whatever lies under it does not count
        digest[~column.is_valid().to_numpy(zero_copy_only=False)] = _NULL_VECTOR
    return digest


def _hash_texts(texts: Sequence[str | None]) -> np.ndarray:
    """One 8-byte BLAKE2 digest per text (a per-row loop: there is no vectorised string hash in Arrow)."""
    return np.fromiter(
        (_NO_VALUE if t is None else int.from_bytes(hashlib.blake2b(t.encode(), digest_size=8).digest(), "little")
         for t in texts), dtype=np.uint64, count=len(texts))


def _compare(name: str, src: _Scan, dst: _Scan, sampled: pa.Array, src_digests: np.ndarray) -> NamespaceCheck:
    check = NamespaceCheck(name, rows_source=src.rows, rows_target=dst.rows)
    src_ids, dst_ids = src.ids, dst.ids
    unique_src, unique_dst = pc.unique(src_ids), pc.unique(dst_ids)
    check.duplicates_source = src.rows - len(unique_src)
    check.duplicates_target = dst.rows - len(unique_dst)
    if check.duplicates_target:
        check.note("duplicated_in_target", repeated_values(dst_ids))
    if check.duplicates_source:
        check.note("duplicated_in_source", repeated_values(src_ids))
    missing = unique_src.filter(pc.invert(pc.is_in(unique_src, value_set=unique_dst)))
    extra = unique_dst.filter(pc.invert(pc.is_in(unique_dst, value_set=unique_src)))
    check.missing, check.extra = len(missing), len(extra)
    check.note("missing", missing)
    check.note("extra", extra)
    # The sampled rows: each source row against the target's first row of the same id.
    assert dst.kept_ids is not None and dst.kept_digests is not None
    where = pc.index_in(sampled, value_set=dst.kept_ids)
    present = where.is_valid().to_numpy(zero_copy_only=False)
    positions = pc.fill_null(where, 0).to_numpy(zero_copy_only=False)[present].astype(np.int64)
    ours, theirs = src_digests[present], dst.kept_digests[positions]
    check.compared = int(present.sum())
    compared_ids = sampled.filter(pa.array(present))
    for column, kind, counter in ((0, "vectors_differ", "vectors_differ"), (1, "metadata_differ", "metadata_differ"),
                                  (2, "documents_differ", "documents_differ")):
        differs = ours[:, column] != theirs[:, column]
        setattr(check, counter, int(differs.sum()))
        check.note(kind, compared_ids.filter(pa.array(differs)))
    return check


def _describe_incomplete(ns: NamespaceCheck) -> str:
    parts = []
    if ns.rows_source != ns.rows_target:
        parts.append(f"{ns.rows_source:,} rows in the source, {ns.rows_target:,} in the target")
    for kind, count in (("missing", ns.missing), ("extra", ns.extra),
                        ("duplicated_in_target", ns.duplicates_target),
                        ("duplicated_in_source", ns.duplicates_source),
                        ("vectors_differ", ns.vectors_differ), ("metadata_differ", ns.metadata_differ),
                        ("documents_differ", ns.documents_differ)):
        if count:
            shown = ", ".join(repr(i) for i in ns.examples.get(kind, [])[:3])
            parts.append(f"{count:,} {kind.replace('_', ' ')} (e.g. {shown})")
    return f"namespace {ns.name!r}: " + "; ".join(parts)


# --- search quality ---------------------------------------------------------------------------------


def _load_queries(path: str, src: Side, chosen: list[str]) -> list[tuple[str, np.ndarray]]:
    """Query vectors from a dump, or from a Parquet file with a vector column (``values`` or the first
    float list column) and optionally a ``namespace`` column; texts (a ``text`` or ``document`` column
    and no vectors) are embedded with the source's model."""
    location = resolve(path)
    if location.exists("manifest.json"):
        dump = Dump.open(path)
        column = dump.manifest.primary.column if dump.manifest.primary else None
        if column is None:
            raise InvalidDataError(f"{path}: the query dump has no dense vectors")
        return [(ns, row) for ns, batch in dump.scan(columns=[column]) for row in vectors_numpy(batch.column(0))
                if ns in chosen] or _none_in(path, chosen)
    try:
        table = pq.read_table(location.root, filesystem=location.fs)
    except (OSError, pa.ArrowInvalid) as exc:
        raise InvalidDataError(f"cannot read queries from {path}: {str(exc).splitlines()[0]}") from None
    namespaces = (table.column("namespace").to_pylist() if "namespace" in table.column_names
                  else [chosen[0] if chosen else ""] * table.num_rows)
    vectors = _query_vectors(table, src, path)
    return [(ns, row) for ns, row in zip(namespaces, vectors, strict=True) if ns in chosen] or _none_in(path, chosen)


def _none_in(path: str, chosen: list[str]) -> list[tuple[str, np.ndarray]]:
    raise InvalidDataError(f"{path} holds no queries for the namespaces compared ({chosen})")


def _query_vectors(table: pa.Table, src: Side, path: str) -> np.ndarray:
    dims = src.manifest.primary.dimension if src.manifest.primary else None
    rows = pa.array([f"row {i}" for i in range(table.num_rows)], pa.string())  # what errors name
    for field_ in table.schema:
        if field_.name == "values" or _is_float_list(field_.type):
            column = table.column(field_.name).combine_chunks()
            if not _is_float_list(column.type):
                raise InvalidDataError(f"{path}: column {field_.name!r} is {column.type}, not float vectors")
            matrix = vectors_numpy(float_vectors(column, rows, field_.name, dims))
            bad = np.flatnonzero(~np.isfinite(matrix).all(axis=1))
            if len(bad):
                raise InvalidDataError(f"{path}: query in row {int(bad[0])} is not finite (NaN or infinity)")
            return matrix
    text_column = next((c for c in ("text", "document") if c in table.column_names), None)
    if text_column is None:
        raise InvalidDataError(f"{path} has no vector column (values, or a float list) and no text column")
    model = src.manifest.embedding_model
    if model is None or not model.name:
        raise InvalidDataError(f"{path} holds texts, but the source records no embedding model to embed them "
                               "with; give query vectors instead")
    from vecfmt.embed import open_embedder  # only when texts must be embedded

    embedder = open_embedder(model.name, model.provider, dimensions=dims)
    return np.asarray(embedder.embed(table.column(text_column).to_pylist()), np.float32)


def _is_float_list(t: pa.DataType) -> bool:
    return (pa.types.is_list(t) or pa.types.is_large_list(t) or pa.types.is_fixed_size_list(t)) and \
        pa.types.is_floating(t.value_type)


def _search_quality(src: Side, dst: Side, queries: list[tuple[str, np.ndarray]], k: int,
                    report: VerifyReport) -> SearchCheck | None:
    """The exact answer always comes from the source's rows; a store answers with its own search, a dump
    by exact search over its own rows. A returned id counts as correct when it is in the exact top k or
    its exact score ties the k-th best (data with repeated vectors has many equally right answers)."""
    assert src.manifest.primary is not None
    metric = src.manifest.primary.metric
    if metric not in SUPPORTED:
        report.problems.append(f"search quality not measured: exact search supports {', '.join(SUPPORTED)}, "
                               f"the source's metric is {metric}")
        return None
    overlaps: list[float] = []
    identical: list[bool] = []
    recall_src: list[np.ndarray] = []
    recall_dst: list[np.ndarray] = []
    by_namespace: dict[str, list[np.ndarray]] = {}
    for ns, vector in queries:
        by_namespace.setdefault(ns, []).append(vector)
    for ns, vectors in by_namespace.items():
        rows = report.namespaces[ns].rows_source if ns in report.namespaces else 0
        if rows == 0:
            continue
        depth = min(k, rows)  # k beyond the rows would only allocate places nothing can fill
        matrix = np.stack(vectors).astype(np.float32)
        truth = exact_top_k(_vectors_of(src, ns), matrix, depth, metric)
        found_src = truth.ids if src.is_dump else _store_results(src, matrix, depth, ns)
        found_dst = (exact_top_k(_vectors_of(dst, ns), matrix, depth, metric).ids if dst.is_dump
                     else _store_results(dst, matrix, depth, ns))
        found_src = [[i for i in ids if i] for ids in found_src]
        found_dst = [[i for i in ids if i] for ids in found_dst]
        ties = _ties(src, ns, matrix, truth, metric, found_src + found_dst)
        recall_src.append(_recall(found_src, truth, ties, depth))
        recall_dst.append(_recall(found_dst, truth, ties, depth))
        # per query (k ids each), not per row
        for a, b in zip(found_src, found_dst, strict=True):
            overlaps.append(len(set(a[:depth]) & set(b[:depth])) / depth)
            identical.append(set(a[:depth]) == set(b[:depth]))
    if not overlaps:
        return None
    r_src, r_dst = np.concatenate(recall_src), np.concatenate(recall_dst)
    return SearchCheck(k=k, queries=len(overlaps), metric=metric, overlap=float(np.mean(overlaps)),
                       identical=float(np.mean(identical)), recall_source=float(r_src.mean()),
                       recall_target=float(r_dst.mean()), worst_overlap=float(np.min(overlaps)),
                       worst_recall_target=float(r_dst.min()), overlap_per_query=overlaps,
                       recall_target_per_query=r_dst.tolist())


def _ties(side: Side, namespace: str, queries: np.ndarray, truth: TopK, metric: str,
          found: list[list[str]]) -> list[set[str]]:
    """Per query, the returned ids outside the exact top k whose exact score ties its k-th best. Their
    vectors are read from the source in one more pass, only when such ids exist."""
    nq = len(queries)
    outside = [set(ids) - set(truth.ids[i % nq]) for i, ids in enumerate(found)]
    wanted = set().union(*outside) if outside else set()
    tied: list[set[str]] = [set() for _ in range(nq)]
    if not wanted:
        return tied
    lookup = pa.array(sorted(wanted), pa.string())
    vectors: dict[str, np.ndarray] = {}
    for ids, matrix in _vectors_of(side, namespace):
        hit = np.flatnonzero(pc.is_in(ids.cast(pa.string()), value_set=lookup).to_numpy(zero_copy_only=False))
        # only the few returned ids outside the top k: a loop over them, not over the rows
        for row in hit:
            vectors[ids[int(row)].as_py()] = matrix[row]
    kth = truth.scores[:, -1].astype(np.float64)
    for i, extra in enumerate(outside):
        query = i % nq
        for ident in extra:
            vector = vectors.get(ident)
            if vector is not None and _score(queries[query], vector, metric) >= kth[query] - _slack(kth[query]):
                tied[query].add(ident)
    return tied


def _score(query: np.ndarray, vector: np.ndarray, metric: str) -> float:
    q, v = query.astype(np.float64), vector.astype(np.float64)
    if metric == "dot":
        return float(q @ v)
    if metric == "euclidean":
        return -float(np.linalg.norm(q - v))
    norms = np.linalg.norm(q) * np.linalg.norm(v)
    return float(q @ v / norms) if norms else 0.0


def _slack(score: float) -> float:
    """How far a float32 exact score may sit from the float64 one of the same pair."""
    return 1e-5 * max(1.0, abs(score))


def _recall(found: list[list[str]], truth: TopK, ties: list[set[str]], k: int) -> np.ndarray:
    nq = len(truth.ids)
    out = np.empty(len(found), dtype=np.float64)
    for i, got in enumerate(found):  # per query
        expected = {e for e in truth.ids[i % nq][:k] if e}
        right = expected.union(ties[i % nq])
        out[i] = min(1.0, len(right.intersection(got[:k])) / len(expected)) if expected else 1.0
    return out


def _vectors_of(side: Side, namespace: str) -> Iterator[tuple[pa.Array, np.ndarray]]:
    assert side.manifest.primary is not None
    column = side.manifest.primary.column
    if isinstance(side, DumpSide):
        if namespace not in side.dump.namespaces:
            return
        for batch in side.dump.batches(namespace, columns=[ID, column]):
            yield batch.column(0), vectors_numpy(batch.column(1))
        return
    for batch in side.batches(namespace):
        yield batch.column(ID), vectors_numpy(batch.column(column))


def _store_results(side: Side, matrix: np.ndarray, k: int, namespace: str) -> list[list[str]]:
    # the store's client takes one query per request
    return [side.search(vector, k, namespace) for vector in matrix]


def _check_thresholds(report: VerifyReport) -> None:
    search = report.search
    if search is None:
        for name, bound in (("min_recall", report.min_recall), ("min_overlap", report.min_overlap)):
            if bound is not None:
                report.problems.append(f"{name} {bound} was asked, but search quality was not measured")
        return
    if report.min_recall is not None and search.recall_target < report.min_recall:
        report.problems.append(f"recall@{search.k} of the target is {search.recall_target:.4f}, below "
                               f"{report.min_recall}")
    if report.min_overlap is not None and search.overlap < report.min_overlap:
        report.problems.append(f"overlap@{search.k} between source and target is {search.overlap:.4f}, below "
                               f"{report.min_overlap}")
