"""Exact nearest neighbours by brute force: the ground truth that recall is measured against.

The data streams past the queries in chunks; each chunk costs one matrix product (BLAS, all cores) and
one comparison against every query's current k-th best score. Only the few entries that beat it are
merged, so after the first chunks the top-k upkeep is nearly free. Memory: one score block of at most
``SCORE_BYTES`` plus the ids, whatever the data's size."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np
import pyarrow as pa

from vecfmt.errors import InvalidDataError

SCORE_BYTES = 128 << 20  # one (queries x rows) float32 block
# Metrics whose scores are matrix products. Manhattan and hamming have no such form.
SUPPORTED = ("cosine", "dot", "euclidean")


@dataclass
class TopK:
    ids: list[list[str]]  # per query, best first
    scores: np.ndarray  # (queries, k) float32 similarity, higher is closer (euclidean: minus the distance)


def normalized(matrix: np.ndarray) -> np.ndarray:
    """Rows scaled to unit length (zero rows stay zero), for cosine."""
    norms = np.linalg.norm(matrix, axis=1, keepdims=True)
    return matrix / np.where(norms > 0, norms, 1).astype(matrix.dtype)


def exact_top_k(
    chunks: Iterable[tuple[Sequence[str] | pa.Array, np.ndarray]], queries: np.ndarray, k: int, metric: str
) -> TopK:
    """The ``k`` closest rows to each query under ``metric``, over ``chunks`` of (ids, float32 matrix).
    Ties go to the row seen first. Fewer than ``k`` rows in all: the missing places hold id "" and -inf."""
    if metric not in SUPPORTED:
        raise InvalidDataError(f"exact search supports the metrics {', '.join(SUPPORTED)}, not {metric!r}")
    if k < 1:
        raise InvalidDataError(f"k must be at least 1, not {k}")
    q = np.ascontiguousarray(queries, dtype=np.float32)
    if q.ndim != 2:
        raise InvalidDataError("queries must be a matrix (one query vector per row)")
    if metric == "cosine":
        q = normalized(q)
    elif metric == "euclidean":
        q = q * 2  # score' = 2 q.x - |x|^2 orders rows as -|q - x|^2 does; converted at the end
    nq = len(q)
    best_scores = np.full((nq, k), -np.inf, dtype=np.float32)
    best_rows = np.full((nq, k), -1, dtype=np.int64)
    id_parts: list[pa.Array] = []
    seen = 0
    step = max(1, SCORE_BYTES // (4 * max(nq, 1)))
    for ids, matrix in chunks:
        ids = ids if isinstance(ids, pa.Array) else pa.array(ids, pa.string())
        if len(ids) != len(matrix):
            raise InvalidDataError(f"{len(ids)} ids for {len(matrix)} vectors")
        if matrix.ndim != 2 or matrix.shape[1] != q.shape[1]:
            raise InvalidDataError(f"vectors of {matrix.shape[-1]} dimensions against queries of {q.shape[1]}")
        id_parts.append(ids)
        for start in range(0, len(matrix), step):
            block = np.ascontiguousarray(matrix[start:start + step], dtype=np.float32)
            if metric == "cosine":
                block = normalized(block)
            scores = q @ block.T
            if metric == "euclidean":
                scores -= np.einsum("ij,ij->i", block, block)[None, :]
            best_scores, best_rows = _merge(best_scores, best_rows, scores, seen + start, k)
        seen += len(matrix)
    if metric == "euclidean":
        squared = np.einsum("ij,ij->i", queries.astype(np.float32), queries.astype(np.float32))[:, None] - best_scores
        best_scores = np.where(np.isfinite(best_scores), -np.sqrt(np.maximum(squared, 0)), -np.inf)
    all_ids = pa.concat_arrays([a.cast(pa.string()) for a in id_parts]) if id_parts else pa.array([], pa.string())
    found = best_rows >= 0
    names = np.full(best_rows.shape, "", dtype=object)
    names[found] = np.asarray(all_ids.take(pa.array(best_rows[found])).to_pylist(), dtype=object)
    return TopK(ids=names.tolist(), scores=best_scores.astype(np.float32))


def _merge(
    best_scores: np.ndarray, best_rows: np.ndarray, scores: np.ndarray, offset: int, k: int
) -> tuple[np.ndarray, np.ndarray]:
    """Fold one (queries x rows) score block into each query's sorted top k."""
    nq, n = scores.shape
    kth = best_scores[:, -1]
    if np.isneginf(kth).any() or n <= k:  # the first block: partition instead of testing every entry
        take = min(k, n)
        cols = np.argpartition(-scores, take - 1, axis=1)[:, :take] if n > take else np.tile(np.arange(n), (nq, 1))
        qi = np.repeat(np.arange(nq), take)
        cols = cols.ravel()
    else:
        qi, cols = np.nonzero(scores > kth[:, None])  # strictly better: a tie keeps the earlier row
        if qi.size == 0:
            return best_scores, best_rows
    candidate_scores = scores[qi, cols]
    all_q = np.concatenate([np.repeat(np.arange(nq), k), qi])
    all_scores = np.concatenate([best_scores.ravel(), candidate_scores])
    all_rows = np.concatenate([best_rows.ravel(), cols.astype(np.int64) + offset])
    # Empty places (row -1, -inf) sort last; among equal scores the earlier row wins.
    order = np.lexsort((np.where(all_rows < 0, np.iinfo(np.int64).max, all_rows), -all_scores, all_q))
    grouped_q = all_q[order]
    counts = np.bincount(grouped_q, minlength=nq)
    rank = np.arange(len(order)) - np.repeat(np.cumsum(counts) - counts, counts)
    keep = order[rank < k]
    return all_scores[keep].reshape(nq, k), all_rows[keep].reshape(nq, k)


def recall_at_k(found: Sequence[Sequence[str]], truth: TopK, k: int) -> np.ndarray:
    """Per query: the share of the true top ``k`` that ``found`` returned (places the data could not
    fill, when it has fewer than ``k`` rows, are not counted)."""
    recalls = np.empty(len(truth.ids), dtype=np.float64)
    # One set per query: the lists are k long, so this loop is over queries, not rows.
    for i, (got, expected) in enumerate(zip(found, truth.ids, strict=True)):
        wanted = {e for e in expected[:k] if e}
        recalls[i] = len(wanted.intersection(got[:k])) / len(wanted) if wanted else 1.0
    return recalls
